/*
 * rtlcrash_ndis6.sys - rtl8139_ndis6.sys (the NDIS 6.0 miniport for the
 * RTL8139, compiled from its source) whose ISR faults on purpose, for ICA's
 * isolation and recovery tests: a fault on a real interrupt path.  Two values
 * of the adapter's registry key choose when:
 *
 *   Misbehave       0  behave (a plain RTL8139 miniport)
 *                   1  write through a NULL pointer in the ISR
 *                      (RtlIsr -> RcIsr -> MbCrash, at DIRQL)
 *   MisbehaveAfter  how many interrupts the ISR claims before it does (0: the
 *                   first one already)
 */
#include "ndis6.h"
#include "misbehave.h"

static ULONG RcInterrupts;

static void RcIsr(void);

#define RTL_CONFIG_HOOK(cfg) MbReadConfig(cfg, "rtlcrash", "interrupts")
#define RTL_ISR_HOOK() RcIsr()

#include "rtl8139_ndis6.c"

static __attribute__((noinline, noipa)) void RcIsr(void)
{
    if (RcInterrupts++ < MbAfter)
        return;
    if (MbMode == 1)
        MbCrash();
}
