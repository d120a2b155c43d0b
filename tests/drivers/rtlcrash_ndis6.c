/*
 * rtlcrash_ndis6.sys - rtl8139_ndis6.sys (the NDIS 6.0 miniport for the
 * RTL8139, compiled from its source) whose ISR faults on purpose, for ICA's
 * isolation and recovery tests: a fault on a real interrupt path.  Two values
 * of the adapter's registry key choose when:
 *
 *   Misbehave       0  behave (a plain RTL8139 miniport)
 *                   1  write through a NULL pointer in the ISR
 *                      (RtlIsr -> RcIsr -> RcCrash, at DIRQL)
 *   MisbehaveAfter  how many interrupts the ISR claims before it does (0: the
 *                   first one already)
 */
#include "ndis6.h"

static ULONG RcMode, RcAfter, RcInterrupts;

static void RcReadConfig(NDIS_HANDLE cfg);
static void RcIsr(void);

#define RTL_CONFIG_HOOK(cfg) RcReadConfig(cfg)
#define RTL_ISR_HOOK() RcIsr()

#include "rtl8139_ndis6.c"

static ULONG RcReadInteger(NDIS_HANDLE cfg, PCWSTR name)
{
    NDIS_STATUS status;
    NDIS_STRING kw;
    PNDIS_CONFIGURATION_PARAMETER param;

    NdisInitUnicodeString(&kw, name);
    NdisReadConfiguration(&status, &param, cfg, &kw, NdisParameterInteger);
    return status == NDIS_STATUS_SUCCESS ? param->ParameterData.IntegerData : 0;
}

static void RcReadConfig(NDIS_HANDLE cfg)
{
    RcMode = RcReadInteger(cfg, L"Misbehave");
    RcAfter = RcReadInteger(cfg, L"MisbehaveAfter");
    DbgPrint("rtlcrash: Misbehave %lu after %lu interrupts\n", RcMode, RcAfter);
}

static __attribute__((noinline, noipa)) void RcCrash(void)
{
    volatile ULONG *volatile p = NULL;

    *p = 0xDEAD;
}

static __attribute__((noinline, noipa)) void RcIsr(void)
{
    if (RcInterrupts++ < RcAfter)
        return;
    if (RcMode == 1)
        RcCrash();
}
