/*
 * ndis51_fix.h - include instead of <ndis.h>: works around the gaps in
 * mingw-w64's DDK ndis.h for an NDIS 5.1 miniport (no system header is
 * edited).
 *
 * 1. ndis.h includes the user-mode <ntddndis.h>, which also defines
 *    enum _NDIS_REQUEST_TYPE (and its enumerators), then defines it again.
 *    We include ntddndis.h first with its copy renamed away; its include
 *    guard then makes ndis.h's #include a no-op.
 * 2. ntddndis.h and ndis.h both define NDIS_PROTOCOL_ID_MASK/MAX (different
 *    spelling of the same value): -Werror rejects the redefinition.
 * 3. ndis.h's prototype of NdisMWanIndicateReceiveComplete lacks a comma
 *    between its parameters (a syntax error); a function-like macro swallows
 *    that declaration (no WAN miniport uses it here).
 * 4. ndis.h does not declare the NDIS 5 map-register calls
 *    NdisMStartBufferPhysicalMapping / NdisMCompleteBufferPhysicalMapping
 *    (libndis.a has them: stdcall, 24 and 12 bytes of arguments on x86).
 * 5. ndis.h's NdisMTransferDataComplete macro lacks the semicolon after its
 *    call through NDIS_MINIPORT_BLOCK.TDCompleteHandler (a syntax error
 *    wherever it is used); defined again, the same call.
 * 6. The spin-lock calls are ndis.sys imports, as WDK-built miniports import
 *    them, instead of ndis.h's inline Ke* macros.
 * 7. ndis.h does not declare NdisImmediateReadPciSlotInformation, and makes
 *    NdisUnicodeStringToAnsiString / NdisAnsiStringToUnicodeString macros
 *    for the Rtl calls; the ndis.sys exports are declared instead (libndis.a
 *    has them: stdcall, 20 and 8 bytes of arguments on x86).
 * 8. i686 libndis.a names the cdecl NdisWriteErrorLogEntry as if it were
 *    stdcall (`NdisWriteErrorLogEntry@0`); the import is reached under that
 *    name (the DLL import name is the same) and called cdecl.
 */
#ifndef ICA_NDIS51_FIX_H
#define ICA_NDIS51_FIX_H

#ifndef NDIS_MINIPORT_DRIVER
#define NDIS_MINIPORT_DRIVER 1
#endif
#ifndef NDIS51_MINIPORT
#define NDIS51_MINIPORT 1
#endif

#include <ntddk.h>

/* 1 + 2: ntddndis.h first, its NDIS_REQUEST_TYPE renamed. */
typedef int NDIS_STATUS, *PNDIS_STATUS; /* ndis.h repeats it (same type: C11) */
#define _NDIS_REQUEST_TYPE _ICA_UM_NDIS_REQUEST_TYPE
#define NDIS_REQUEST_TYPE ICA_UM_NDIS_REQUEST_TYPE
#define PNDIS_REQUEST_TYPE ICA_UM_PNDIS_REQUEST_TYPE
#define NdisRequestQueryInformation IcaUm_NdisRequestQueryInformation
#define NdisRequestSetInformation IcaUm_NdisRequestSetInformation
#define NdisRequestQueryStatistics IcaUm_NdisRequestQueryStatistics
#define NdisRequestOpen IcaUm_NdisRequestOpen
#define NdisRequestClose IcaUm_NdisRequestClose
#define NdisRequestSend IcaUm_NdisRequestSend
#define NdisRequestTransferData IcaUm_NdisRequestTransferData
#define NdisRequestReset IcaUm_NdisRequestReset
#define NdisRequestGeneric1 IcaUm_NdisRequestGeneric1
#define NdisRequestGeneric2 IcaUm_NdisRequestGeneric2
#define NdisRequestGeneric3 IcaUm_NdisRequestGeneric3
#define NdisRequestGeneric4 IcaUm_NdisRequestGeneric4
#include <ntddndis.h>
#undef _NDIS_REQUEST_TYPE
#undef NDIS_REQUEST_TYPE
#undef PNDIS_REQUEST_TYPE
#undef NdisRequestQueryInformation
#undef NdisRequestSetInformation
#undef NdisRequestQueryStatistics
#undef NdisRequestOpen
#undef NdisRequestClose
#undef NdisRequestSend
#undef NdisRequestTransferData
#undef NdisRequestReset
#undef NdisRequestGeneric1
#undef NdisRequestGeneric2
#undef NdisRequestGeneric3
#undef NdisRequestGeneric4
#undef NDIS_PROTOCOL_ID_MASK
#undef NDIS_PROTOCOL_ID_MAX

/* 3 */
#define NdisMWanIndicateReceiveComplete(...) IcaNdisMWanIndicateReceiveComplete_unused(void)

#include <ndis.h>
#undef NdisMWanIndicateReceiveComplete

/* 7 */
NDISAPI ULONG NTAPI NdisImmediateReadPciSlotInformation(NDIS_HANDLE WrapperConfigurationContext,
                                                        ULONG SlotNumber, ULONG Offset,
                                                        PVOID Buffer, ULONG Length);
#undef NdisUnicodeStringToAnsiString
#undef NdisAnsiStringToUnicodeString
NDISAPI NDIS_STATUS NTAPI NdisUnicodeStringToAnsiString(PANSI_STRING DestinationString,
                                                        PNDIS_STRING SourceString);
NDISAPI NDIS_STATUS NTAPI NdisAnsiStringToUnicodeString(PNDIS_STRING DestinationString,
                                                        PANSI_STRING SourceString);

/* 8 */
#ifdef _X86_
extern VOID(__cdecl *ica_imp_NdisWriteErrorLogEntry)(NDIS_HANDLE, NDIS_ERROR_CODE, ULONG, ...)
    __asm__("__imp__NdisWriteErrorLogEntry@0");
#define NdisWriteErrorLogEntry ica_imp_NdisWriteErrorLogEntry
#endif

/* 4 */
NDISAPI VOID NTAPI NdisMStartBufferPhysicalMapping(NDIS_HANDLE MiniportAdapterHandle,
                                                   PNDIS_BUFFER Buffer, ULONG PhysicalMapRegister,
                                                   BOOLEAN WriteToDevice,
                                                   PNDIS_PHYSICAL_ADDRESS_UNIT PhysicalAddressArray,
                                                   PUINT ArraySize);
NDISAPI VOID NTAPI NdisMCompleteBufferPhysicalMapping(NDIS_HANDLE MiniportAdapterHandle,
                                                      PNDIS_BUFFER Buffer,
                                                      ULONG PhysicalMapRegister);

/* 5 */
#undef NdisMTransferDataComplete
#define NdisMTransferDataComplete(MiniportAdapterHandle, Packet, Status, BytesTransferred)     \
    ((*((PNDIS_MINIPORT_BLOCK)(MiniportAdapterHandle))->TDCompleteHandler)(                   \
        (MiniportAdapterHandle), (Packet), (Status), (BytesTransferred)))

/* 6 */
#undef NdisAllocateSpinLock
#undef NdisFreeSpinLock
#undef NdisAcquireSpinLock
#undef NdisReleaseSpinLock
#undef NdisDprAcquireSpinLock
#undef NdisDprReleaseSpinLock
NDISAPI VOID NTAPI NdisAllocateSpinLock(PNDIS_SPIN_LOCK SpinLock);
NDISAPI VOID NTAPI NdisFreeSpinLock(PNDIS_SPIN_LOCK SpinLock);
NDISAPI VOID NTAPI NdisAcquireSpinLock(PNDIS_SPIN_LOCK SpinLock);
NDISAPI VOID NTAPI NdisReleaseSpinLock(PNDIS_SPIN_LOCK SpinLock);
NDISAPI VOID NTAPI NdisDprAcquireSpinLock(PNDIS_SPIN_LOCK SpinLock);
NDISAPI VOID NTAPI NdisDprReleaseSpinLock(PNDIS_SPIN_LOCK SpinLock);

#endif
