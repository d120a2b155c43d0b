/*
 * The knobs of the test miniports that misbehave on purpose (netcrash_ndis6,
 * rtlcrash_ndis6): two values of the adapter's registry key, read at
 * initialize, and a fault the compiler cannot optimize away.
 *
 *   Misbehave       what to do (0: behave; the driver defines the others)
 *   MisbehaveAfter  how many events (frames, interrupts) pass before it does
 */
#ifndef ICA_MISBEHAVE_H
#define ICA_MISBEHAVE_H

static ULONG MbMode, MbAfter;

static ULONG MbReadInteger(NDIS_HANDLE cfg, PCWSTR name)
{
    NDIS_STATUS status;
    NDIS_STRING kw;
    PNDIS_CONFIGURATION_PARAMETER param;

    NdisInitUnicodeString(&kw, name);
    NdisReadConfiguration(&status, &param, cfg, &kw, NdisParameterInteger);
    return status == NDIS_STATUS_SUCCESS ? param->ParameterData.IntegerData : 0;
}

/* Reads Misbehave and MisbehaveAfter; logs them as "DRIVER: Misbehave M after N EVENTS". */
static void MbReadConfig(NDIS_HANDLE cfg, const char *driver, const char *events)
{
    MbMode = MbReadInteger(cfg, L"Misbehave");
    MbAfter = MbReadInteger(cfg, L"MisbehaveAfter");
    DbgPrint("%s: Misbehave %lu after %lu %s\n", driver, MbMode, MbAfter, events);
}

/* Writes through a NULL pointer: a guest page fault in its own frame. */
static __attribute__((noinline, noipa)) void MbCrash(void)
{
    volatile ULONG *volatile p = NULL;

    *p = 0xDEAD;
}

#endif
