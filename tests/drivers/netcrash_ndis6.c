/*
 * netcrash_ndis6.sys - netvirt_ndis6.sys (the NDIS 6.0 virtual loopback
 * miniport, compiled from its source) that misbehaves on purpose, for ICA's
 * isolation and recovery tests.  Two values of the adapter's registry key
 * choose how:
 *
 *   Misbehave       0  behave (a plain loopback NIC)
 *                   1  write through a NULL pointer in the send path
 *                      (MiniportSendNetBufferLists -> NcSend -> NcCrash)
 *                   2  spin forever at DISPATCH_LEVEL in the send path,
 *                      holding the adapter's spin lock
 *                   3  write through a NULL pointer in the timer DPC that
 *                      carries frames to the receive side (NvTimer -> NcCrash)
 *   MisbehaveAfter  how many NBLs the send path takes before it does (0: the
 *                   first one already)
 */
#include "ndis6.h"

static ULONG NcMode, NcAfter, NcSent;
static volatile ULONG NcSpins;

static void NcReadConfig(NDIS_HANDLE cfg);
static void NcSend(void);
static void NcTimer(void);

#define NV_CONFIG_HOOK(cfg) NcReadConfig(cfg)
#define NV_SEND_HOOK() NcSend()
#define NV_TIMER_HOOK() NcTimer()

#include "netvirt_ndis6.c"

static ULONG NcReadInteger(NDIS_HANDLE cfg, PCWSTR name)
{
    NDIS_STATUS status;
    NDIS_STRING kw;
    PNDIS_CONFIGURATION_PARAMETER param;

    NdisInitUnicodeString(&kw, name);
    NdisReadConfiguration(&status, &param, cfg, &kw, NdisParameterInteger);
    return status == NDIS_STATUS_SUCCESS ? param->ParameterData.IntegerData : 0;
}

static void NcReadConfig(NDIS_HANDLE cfg)
{
    NcMode = NcReadInteger(cfg, L"Misbehave");
    NcAfter = NcReadInteger(cfg, L"MisbehaveAfter");
    DbgPrint("netcrash: Misbehave %lu after %lu frames\n", NcMode, NcAfter);
}

static __attribute__((noinline, noipa)) void NcCrash(void)
{
    volatile ULONG *volatile p = NULL;

    *p = 0xDEAD;
}

static __attribute__((noinline, noipa)) void NcSpin(void)
{
    for (;;)
        NcSpins++;
}

static __attribute__((noinline, noipa)) void NcSend(void)
{
    if (NcSent++ < NcAfter)
        return;
    if (NcMode == 1)
        NcCrash();
    else if (NcMode == 2)
        NcSpin();
}

static __attribute__((noinline, noipa)) void NcTimer(void)
{
    if (NcMode == 3 && NcSent > NcAfter)
        NcCrash();
}
