/*
 * netcrash_ndis6.sys - netvirt_ndis6.sys (the NDIS 6.0 virtual loopback
 * miniport, compiled from its source) that misbehaves on purpose, for ICA's
 * isolation and recovery tests.  Two values of the adapter's registry key
 * choose how:
 *
 *   Misbehave       0  behave (a plain loopback NIC)
 *                   1  write through a NULL pointer in the send path
 *                      (MiniportSendNetBufferLists -> NcSend -> MbCrash)
 *                   2  spin forever at DISPATCH_LEVEL in the send path,
 *                      holding the adapter's spin lock
 *                   3  write through a NULL pointer in the timer DPC that
 *                      carries frames to the receive side (NvTimer -> MbCrash)
 *   MisbehaveAfter  how many NBLs the send path takes before it does (0: the
 *                   first one already)
 */
#include "ndis6.h"
#include "misbehave.h"

static ULONG NcSent;
static volatile ULONG NcSpins;

static void NcSend(void);
static void NcTimer(void);

#define NV_CONFIG_HOOK(cfg) MbReadConfig(cfg, "netcrash", "frames")
#define NV_SEND_HOOK() NcSend()
#define NV_TIMER_HOOK() NcTimer()

#include "netvirt_ndis6.c"

static __attribute__((noinline, noipa)) void NcSpin(void)
{
    for (;;)
        NcSpins++;
}

static __attribute__((noinline, noipa)) void NcSend(void)
{
    if (NcSent++ < MbAfter)
        return;
    if (MbMode == 1)
        MbCrash();
    else if (MbMode == 2)
        NcSpin();
}

static __attribute__((noinline, noipa)) void NcTimer(void)
{
    if (MbMode == 3 && NcSent > MbAfter)
        MbCrash();
}
