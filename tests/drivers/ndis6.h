/*
 * ndis6.h - NDIS 6.0 miniport definitions for ICA's mingw-w64 test drivers.
 *
 * mingw-w64's <ndis.h> has almost nothing of NDIS 6 (no NET_BUFFER_LIST, no
 * MiniportXxxEx handlers, no NdisMRegisterMiniportDriver) and its NDIS 6
 * mode (NDIS60_MINIPORT) does not compile: every NDIS 6 section leans on
 * NDIS 5 types that mode hides.  So this header includes <ndis.h> in its
 * NDIS 5.1 miniport mode with NDIS_SUPPORT_NDIS6 forced on, which brings in
 * what mingw already gets right (the NDIS_STATUS_* codes including the NDIS 6
 * ones, NDIS_OBJECT_HEADER and the NDIS_OBJECT_TYPE_* values, NDIS_STATISTICS_INFO,
 * NDIS_LINK_STATE, NDIS_PORT_NUMBER, NET_LUID, the OID_* values, the NET_IF_*
 * enums, NDIS_RESOURCE_LIST, the configuration API) and then declares the
 * NDIS 6.0 miniport interface itself.
 *
 * Provenance: written for ICA from public documentation, not copied from any
 * header (WDK, ReactOS, Wine or other).  Field order, types, revision numbers
 * and constant values come from the Microsoft Learn DDI reference pages of each
 * structure and function (and the "Compact 2013" NDIS 6 pages, which show the
 * DECLSPEC_ALIGN(MEMORY_ALLOCATION_ALIGNMENT) on the NET_BUFFER(_LIST) reserved
 * arrays that the current pages leave out); the structure sizes and offsets
 * asserted at the end come from published symbol (PDB) dumps of Windows'
 * ndis.sys for x86 and x64 and from the documented NDIS_SIZEOF_*_REVISION_1
 * definitions (RTL_SIZEOF_THROUGH_FIELD of the last revision-1 member).  The
 * x86 stdcall argument byte counts of every function declared here match
 * mingw-w64's libndis.a import library.
 *
 * Only NDIS 6.0 (revision 1) layouts are declared: later revisions append
 * members, and a 6.0 miniport never reads past its revision-1 size.  The one
 * variable-size structure is NET_BUFFER_LIST, whose NetBufferListInfo array
 * has MaxNetBufferListInfo = 11 entries in NDIS 6.0 (NDIS 6.1 added two more,
 * later versions more); ndis.sys allocates the array of the running system,
 * which is at least as long.
 *
 * Calling convention: every handler and every ndis.sys export is stdcall on
 * x86 (the WDK compiles kernel code with /Gz); NTAPI says so here.
 *
 * Build with -DNDIS_MINIPORT_DRIVER (see build.sh); do not define
 * NDIS60_MINIPORT (that selects mingw's broken NDIS 6 mode).
 */
#ifndef ICA_NDIS6_H
#define ICA_NDIS6_H

#if defined(NDIS60_MINIPORT) || defined(NDIS61_MINIPORT) || defined(NDIS620_MINIPORT)
#error "ndis6.h provides NDIS 6.0 itself; NDIS6x_MINIPORT selects mingw's incomplete NDIS 6 mode"
#endif

/* ---- Prologue: mingw's <ndis.h> around its gaps (no system header is edited) ----
 *
 * 1. NDIS 5.1 miniport mode (the mode in which mingw's ndis.h compiles), with
 *    NDIS_SUPPORT_NDIS6 forced on so its NDIS 6 status codes and
 *    NdisRequestMethod are defined.
 * 2. ndis.h includes the user-mode <ntddndis.h>, which defines
 *    enum _NDIS_REQUEST_TYPE too; ntddndis.h is included first with its copy
 *    renamed away (its include guard then skips the second inclusion).
 * 3. ntddndis.h and ndis.h both define NDIS_PROTOCOL_ID_MASK/MAX.
 * 4. ndis.h's NdisMWanIndicateReceiveComplete prototype lacks a comma.
 * 5. <netpnp.h> (included by ndis.h) declares NDIS_DEVICE_PNP_EVENT with the
 *    wrong values (its own FIXME); it is renamed away and declared correctly
 *    below.
 * (1-4 are the same fixes as ndis51_fix.h, which cannot be reused because it
 * includes ndis.h itself without NDIS_SUPPORT_NDIS6.)
 */
#ifndef NDIS_MINIPORT_DRIVER
#define NDIS_MINIPORT_DRIVER 1
#endif
#define NDIS51_MINIPORT 1
#define NDIS_SUPPORT_NDIS6 1

#include <ntddk.h>

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
#define NdisRequestMethod IcaUm_NdisRequestMethod
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
#undef NdisRequestMethod
#undef NDIS_PROTOCOL_ID_MASK
#undef NDIS_PROTOCOL_ID_MAX

#define NdisMWanIndicateReceiveComplete(...) IcaNdisMWanIndicateReceiveComplete_unused(void)

#define _NDIS_DEVICE_PNP_EVENT _ICA_MINGW_NDIS_DEVICE_PNP_EVENT
#define NDIS_DEVICE_PNP_EVENT ICA_MINGW_NDIS_DEVICE_PNP_EVENT
#define PNDIS_DEVICE_PNP_EVENT ICA_MINGW_PNDIS_DEVICE_PNP_EVENT
#define NdisDevicePnPEventSurpriseRemoved IcaMingw_NdisDevicePnPEventSurpriseRemoved
#define NdisDevicePnPEventPowerProfileChanged IcaMingw_NdisDevicePnPEventPowerProfileChanged
#define NdisDevicePnPEventMaximum IcaMingw_NdisDevicePnPEventMaximum

#include <ndis.h>

#undef NdisMWanIndicateReceiveComplete
#undef _NDIS_DEVICE_PNP_EVENT
#undef NDIS_DEVICE_PNP_EVENT
#undef PNDIS_DEVICE_PNP_EVENT
#undef NdisDevicePnPEventSurpriseRemoved
#undef NdisDevicePnPEventPowerProfileChanged
#undef NdisDevicePnPEventMaximum

/* ntddndis.h defines NDIS_LINK_SPEED_UNKNOWN as this, which mingw's ifdef.h lacks. */
#ifndef NET_IF_LINK_SPEED_UNKNOWN
#define NET_IF_LINK_SPEED_UNKNOWN ((ULONG64)-1)
#endif

/* ndis.h set these from NDIS51_MINIPORT; a user of this header is a 6.0 miniport. */
#undef NDIS_MINIPORT_MAJOR_VERSION
#undef NDIS_MINIPORT_MINOR_VERSION
#define NDIS_MINIPORT_MAJOR_VERSION 6
#define NDIS_MINIPORT_MINOR_VERSION 0

/*
 * Spin locks: mingw's ndis.h turns these into inline Ke* calls; an NDIS 6
 * driver built with the WDK imports them from ndis.sys, so they are declared
 * as the ndis.sys exports they are.
 */
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

/* ======================================================================
 * Object headers, revisions, sizes
 * ====================================================================== */

/* NDIS_OBJECT_HEADER and the NDIS_OBJECT_TYPE_* values come from ntddndis.h. */

#define NDIS_MINIPORT_DRIVER_CHARACTERISTICS_REVISION_1 1
#define NDIS_MINIPORT_INIT_PARAMETERS_REVISION_1 1
#define NDIS_MINIPORT_ADAPTER_REGISTRATION_ATTRIBUTES_REVISION_1 1
#define NDIS_MINIPORT_ADAPTER_GENERAL_ATTRIBUTES_REVISION_1 1
#define NDIS_MINIPORT_PAUSE_PARAMETERS_REVISION_1 1
#define NDIS_MINIPORT_RESTART_PARAMETERS_REVISION_1 1
#define NDIS_OID_REQUEST_REVISION_1 1
#define NDIS_STATUS_INDICATION_REVISION_1 1
#define NDIS_MINIPORT_INTERRUPT_REVISION_1 1
#define NDIS_TIMER_CHARACTERISTICS_REVISION_1 1
#define NET_BUFFER_LIST_POOL_PARAMETERS_REVISION_1 1
#define NDIS_CONFIGURATION_OBJECT_REVISION_1 1
#define NDIS_SG_DMA_DESCRIPTION_REVISION_1 1
#define NET_DEVICE_PNP_EVENT_REVISION_1 1

/* ======================================================================
 * NET_BUFFER, NET_BUFFER_LIST
 * ====================================================================== */

typedef struct _NET_BUFFER NET_BUFFER, *PNET_BUFFER;
typedef struct _NET_BUFFER_LIST NET_BUFFER_LIST, *PNET_BUFFER_LIST;
typedef struct _NET_BUFFER_LIST_CONTEXT NET_BUFFER_LIST_CONTEXT, *PNET_BUFFER_LIST_CONTEXT;

/* DataLength is also readable as a SIZE_T (so it is pointer-aligned on x64). */
typedef union _NET_BUFFER_DATA_LENGTH {
    ULONG DataLength;
    SIZE_T stDataLength;
} NET_BUFFER_DATA_LENGTH, *PNET_BUFFER_DATA_LENGTH;

typedef struct _NET_BUFFER_DATA {
    PNET_BUFFER Next;       /* next NET_BUFFER of the same NET_BUFFER_LIST */
    PMDL CurrentMdl;        /* first MDL holding used data */
    ULONG CurrentMdlOffset; /* where the used data starts in CurrentMdl */
    NET_BUFFER_DATA_LENGTH NbDataLength; /* bytes of used data */
    PMDL MdlChain;          /* first MDL of the whole chain */
    ULONG DataOffset;       /* bytes of unused (back-fill) space before the data */
} NET_BUFFER_DATA, *PNET_BUFFER_DATA;

typedef union _NET_BUFFER_HEADER {
    NET_BUFFER_DATA NetBufferData;
    SLIST_HEADER Link;
} NET_BUFFER_HEADER, *PNET_BUFFER_HEADER;

struct _NET_BUFFER {
    /* The NET_BUFFER_DATA members, reachable directly (anonymous) or as
     * NetBufferHeader.NetBufferData; Link is NDIS's. */
    union {
        struct {
            PNET_BUFFER Next;
            PMDL CurrentMdl;
            ULONG CurrentMdlOffset;
            union {
                ULONG DataLength;
                SIZE_T stDataLength;
            };
            PMDL MdlChain;
            ULONG DataOffset;
        };
        SLIST_HEADER Link;
        NET_BUFFER_HEADER NetBufferHeader;
    };
    USHORT ChecksumBias; /* bytes to skip when computing a checksum (TCP/IP) */
    USHORT Reserved;
    NDIS_HANDLE NdisPoolHandle;
    DECLSPEC_ALIGN(MEMORY_ALLOCATION_ALIGNMENT) PVOID NdisReserved[2];
    DECLSPEC_ALIGN(MEMORY_ALLOCATION_ALIGNMENT) PVOID ProtocolReserved[6];
    DECLSPEC_ALIGN(MEMORY_ALLOCATION_ALIGNMENT) PVOID MiniportReserved[4];
    NDIS_PHYSICAL_ADDRESS DataPhysicalAddress; /* "NdisReserved1" in NDIS 6.0 */
};

struct _NET_BUFFER_LIST_CONTEXT {
    PNET_BUFFER_LIST_CONTEXT Next;
    USHORT Size;   /* bytes of context space, used and unused */
    USHORT Offset; /* start of the used space (= unused bytes) */
    DECLSPEC_ALIGN(MEMORY_ALLOCATION_ALIGNMENT) UCHAR ContextData[];
};

/* Indices of NET_BUFFER_LIST.NetBufferListInfo (NDIS 6.0 set). */
typedef enum _NDIS_NET_BUFFER_LIST_INFO {
    TcpIpChecksumNetBufferListInfo,
    TcpOffloadBytesTransferred = TcpIpChecksumNetBufferListInfo,
    IPsecOffloadV1NetBufferListInfo,
    TcpLargeSendNetBufferListInfo,
    TcpReceiveNoPush = TcpLargeSendNetBufferListInfo,
    ClassificationHandleNetBufferListInfo,
    Ieee8021QNetBufferListInfo,
    NetBufferListCancelId,
    MediaSpecificInformation,
    NetBufferListFrameType,
    NetBufferListProtocolId = NetBufferListFrameType,
    NetBufferListHashValue,
    NetBufferListHashInfo,
    WfpNetBufferListInfo,
    MaxNetBufferListInfo /* 11 */
} NDIS_NET_BUFFER_LIST_INFO, *PNDIS_NET_BUFFER_LIST_INFO;

typedef struct _NET_BUFFER_LIST_DATA {
    PNET_BUFFER_LIST Next;      /* next NET_BUFFER_LIST of a chain */
    PNET_BUFFER FirstNetBuffer; /* first NET_BUFFER of this list */
} NET_BUFFER_LIST_DATA, *PNET_BUFFER_LIST_DATA;

typedef union _NET_BUFFER_LIST_HEADER {
    NET_BUFFER_LIST_DATA NetBufferListData;
    SLIST_HEADER Link;
} NET_BUFFER_LIST_HEADER, *PNET_BUFFER_LIST_HEADER;

struct _NET_BUFFER_LIST {
    union {
        struct {
            PNET_BUFFER_LIST Next;
            PNET_BUFFER FirstNetBuffer;
        };
        SLIST_HEADER Link;
        NET_BUFFER_LIST_HEADER NetBufferListHeader;
    };
    PNET_BUFFER_LIST_CONTEXT Context;
    PNET_BUFFER_LIST ParentNetBufferList; /* set on clones/fragments */
    NDIS_HANDLE NdisPoolHandle;
    DECLSPEC_ALIGN(MEMORY_ALLOCATION_ALIGNMENT) PVOID NdisReserved[2];
    DECLSPEC_ALIGN(MEMORY_ALLOCATION_ALIGNMENT) PVOID ProtocolReserved[4];
    DECLSPEC_ALIGN(MEMORY_ALLOCATION_ALIGNMENT) PVOID MiniportReserved[2];
    PVOID Scratch;
    NDIS_HANDLE SourceHandle; /* a miniport sets its MiniportAdapterHandle here on receive */
    ULONG NblFlags;
    LONG ChildRefCount;
    ULONG Flags;
    union {
        NDIS_STATUS Status; /* completion status of a send, set by the miniport */
        ULONG NdisReserved2;
    };
    PVOID NetBufferListInfo[MaxNetBufferListInfo];
};

/* Accessors (the documented macros). */
#define NET_BUFFER_LIST_NEXT_NBL(_NBL) ((_NBL)->Next)
#define NET_BUFFER_LIST_FIRST_NB(_NBL) ((_NBL)->FirstNetBuffer)
#define NET_BUFFER_LIST_STATUS(_NBL) ((_NBL)->Status)
#define NET_BUFFER_LIST_MINIPORT_RESERVED(_NBL) ((_NBL)->MiniportReserved)
#define NET_BUFFER_LIST_INFO(_NBL, _Id) ((_NBL)->NetBufferListInfo[(_Id)])
#define NDIS_GET_NET_BUFFER_LIST_CANCEL_ID(_NBL) (NET_BUFFER_LIST_INFO((_NBL), NetBufferListCancelId))
#define NET_BUFFER_NEXT_NB(_NB) ((_NB)->Next)
#define NET_BUFFER_FIRST_MDL(_NB) ((_NB)->MdlChain)
#define NET_BUFFER_CURRENT_MDL(_NB) ((_NB)->CurrentMdl)
#define NET_BUFFER_CURRENT_MDL_OFFSET(_NB) ((_NB)->CurrentMdlOffset)
#define NET_BUFFER_DATA_LENGTH(_NB) ((_NB)->DataLength)
#define NET_BUFFER_DATA_OFFSET(_NB) ((_NB)->DataOffset)
#define NET_BUFFER_MINIPORT_RESERVED(_NB) ((_NB)->MiniportReserved)

/* MDL helpers of NDIS 6 (macros over the Mm ones). */
#define NdisQueryMdl(_Mdl, _VirtualAddress, _Length, _Priority)                         \
    do {                                                                                \
        if (ARGUMENT_PRESENT(_VirtualAddress))                                          \
            *(PVOID *)(_VirtualAddress) = MmGetSystemAddressForMdlSafe((_Mdl), (_Priority)); \
        *(_Length) = MmGetMdlByteCount(_Mdl);                                           \
    } while (0)
#define NdisGetNextMdl(_CurrentMdl, _NextMdl) (*(_NextMdl) = (_CurrentMdl)->Next)

/* ---- Send / receive / return flags ---- */
#define NDIS_SEND_FLAGS_DISPATCH_LEVEL 0x00000001
#define NDIS_SEND_FLAGS_CHECK_FOR_LOOPBACK 0x00000002
#define NDIS_TEST_SEND_AT_DISPATCH_LEVEL(_Flags) (((_Flags) & NDIS_SEND_FLAGS_DISPATCH_LEVEL) != 0)

#define NDIS_SEND_COMPLETE_FLAGS_DISPATCH_LEVEL 0x00000001

#define NDIS_RECEIVE_FLAGS_DISPATCH_LEVEL 0x00000001
#define NDIS_RECEIVE_FLAGS_RESOURCES 0x00000002 /* NBLs are lent for the call only */
#define NDIS_RECEIVE_FLAGS_SINGLE_ETHER_TYPE 0x00000100
#define NDIS_RECEIVE_FLAGS_SINGLE_VLAN 0x00000200
#define NDIS_RECEIVE_FLAGS_PERFECT_FILTERED 0x00000400

#define NDIS_RETURN_FLAGS_DISPATCH_LEVEL 0x00000001
#define NDIS_TEST_RETURN_AT_DISPATCH_LEVEL(_Flags) (((_Flags) & NDIS_RETURN_FLAGS_DISPATCH_LEVEL) != 0)

/* ---- NET_BUFFER_LIST pools ---- */
typedef struct _NET_BUFFER_LIST_POOL_PARAMETERS {
    NDIS_OBJECT_HEADER Header; /* DEFAULT, NET_BUFFER_LIST_POOL_PARAMETERS_REVISION_1 */
    UCHAR ProtocolId;          /* NDIS_PROTOCOL_ID_DEFAULT for a miniport */
    BOOLEAN fAllocateNetBuffer; /* TRUE: each NBL comes with one NET_BUFFER */
    USHORT ContextSize;        /* preallocated NET_BUFFER_LIST_CONTEXT bytes */
    ULONG PoolTag;
    ULONG DataSize;            /* 0: the caller supplies MDLs */
} NET_BUFFER_LIST_POOL_PARAMETERS, *PNET_BUFFER_LIST_POOL_PARAMETERS;
#define NDIS_SIZEOF_NET_BUFFER_LIST_POOL_PARAMETERS_REVISION_1 \
    RTL_SIZEOF_THROUGH_FIELD(NET_BUFFER_LIST_POOL_PARAMETERS, DataSize)

/* ======================================================================
 * Miniport driver characteristics and handlers
 * ====================================================================== */

typedef enum _NDIS_HALT_ACTION {
    NdisHaltDeviceDisabled,
    NdisHaltDeviceInstanceDeInitialized,
    NdisHaltDevicePoweredDown,
    NdisHaltDeviceSurpriseRemoved,
    NdisHaltDeviceFailed,
    NdisHaltDeviceInitializationFailed,
    NdisHaltDeviceStopped
} NDIS_HALT_ACTION, *PNDIS_HALT_ACTION;

typedef enum _NDIS_SHUTDOWN_ACTION {
    NdisShutdownPowerOff,
    NdisShutdownBugCheck
} NDIS_SHUTDOWN_ACTION, *PNDIS_SHUTDOWN_ACTION;

typedef enum _NDIS_DEVICE_PNP_EVENT {
    NdisDevicePnPEventQueryRemoved,
    NdisDevicePnPEventRemoved,
    NdisDevicePnPEventSurpriseRemoved,
    NdisDevicePnPEventQueryStopped,
    NdisDevicePnPEventStopped,
    NdisDevicePnPEventPowerProfileChanged,
    NdisDevicePnPEventMaximum
} NDIS_DEVICE_PNP_EVENT, *PNDIS_DEVICE_PNP_EVENT;

/* InformationBuffer of NdisDevicePnPEventPowerProfileChanged: a ULONG. */
#define NdisPowerProfileBattery 0
#define NdisPowerProfileAcOnline 1

typedef struct _NET_DEVICE_PNP_EVENT {
    NDIS_OBJECT_HEADER Header; /* DEFAULT, NET_DEVICE_PNP_EVENT_REVISION_1 */
    NDIS_PORT_NUMBER PortNumber;
    NDIS_DEVICE_PNP_EVENT DevicePnPEvent;
    PVOID InformationBuffer;
    ULONG InformationBufferLength;
    UCHAR NdisReserved[2 * sizeof(PVOID)];
} NET_DEVICE_PNP_EVENT, *PNET_DEVICE_PNP_EVENT;

/* What NDIS passes to MiniportInitializeEx. */
typedef struct _NDIS_MINIPORT_INIT_PARAMETERS {
    NDIS_OBJECT_HEADER Header; /* MINIPORT_INIT_PARAMETERS, revision 1 */
    ULONG Flags;
    PNDIS_RESOURCE_LIST AllocatedResources; /* translated CM_PARTIAL_RESOURCE_LIST, or NULL */
    NDIS_HANDLE IMDeviceInstanceContext;    /* intermediate drivers only */
    NDIS_HANDLE MiniportAddDeviceContext;   /* from MiniportAddDevice, if any */
    NET_IFINDEX IfIndex;
    NET_LUID NetLuid;
    PNDIS_PORT_AUTHENTICATION_PARAMETERS DefaultPortAuthStates;
    PNDIS_PCI_DEVICE_CUSTOM_PROPERTIES PciDeviceCustomProperties;
} NDIS_MINIPORT_INIT_PARAMETERS, *PNDIS_MINIPORT_INIT_PARAMETERS;
#define NDIS_SIZEOF_MINIPORT_INIT_PARAMETER_REVISION_1 \
    RTL_SIZEOF_THROUGH_FIELD(NDIS_MINIPORT_INIT_PARAMETERS, PciDeviceCustomProperties)

/* MiniportPause: PauseReason bits. */
#define NDIS_PAUSE_NDIS_INTERNAL 0x00000001
#define NDIS_PAUSE_LOW_POWER 0x00000002
#define NDIS_PAUSE_BIND_PROTOCOL 0x00000004
#define NDIS_PAUSE_UNBIND_PROTOCOL 0x00000008
#define NDIS_PAUSE_ATTACH_FILTER 0x00000010
#define NDIS_PAUSE_DETACH_FILTER 0x00000020
#define NDIS_PAUSE_FILTER_RESTART_STACK 0x00000040
#define NDIS_PAUSE_MINIPORT_DEVICE_REMOVE 0x00000080

typedef struct _NDIS_MINIPORT_PAUSE_PARAMETERS {
    NDIS_OBJECT_HEADER Header; /* DEFAULT, revision 1 */
    ULONG Flags;
    ULONG PauseReason;
} NDIS_MINIPORT_PAUSE_PARAMETERS, *PNDIS_MINIPORT_PAUSE_PARAMETERS;
#define NDIS_SIZEOF_MINIPORT_PAUSE_PARAMETERS_REVISION_1 \
    RTL_SIZEOF_THROUGH_FIELD(NDIS_MINIPORT_PAUSE_PARAMETERS, PauseReason)

/* Restart attributes are a chain of OID/data records; this driver set does not read them. */
typedef struct _NDIS_RESTART_ATTRIBUTES NDIS_RESTART_ATTRIBUTES, *PNDIS_RESTART_ATTRIBUTES;

typedef struct _NDIS_MINIPORT_RESTART_PARAMETERS {
    NDIS_OBJECT_HEADER Header; /* DEFAULT, revision 1 */
    PNDIS_RESTART_ATTRIBUTES RestartAttributes;
    ULONG Flags;
} NDIS_MINIPORT_RESTART_PARAMETERS, *PNDIS_MINIPORT_RESTART_PARAMETERS;
#define NDIS_SIZEOF_MINIPORT_RESTART_PARAMETERS_REVISION_1 \
    RTL_SIZEOF_THROUGH_FIELD(NDIS_MINIPORT_RESTART_PARAMETERS, Flags)

/* ---- OID requests ---- */
#define NDIS_OID_REQUEST_NDIS_RESERVED_SIZE 16

typedef struct _NDIS_OID_REQUEST {
    NDIS_OBJECT_HEADER Header; /* OID_REQUEST (0x96), revision 1 */
    NDIS_REQUEST_TYPE RequestType;
    NDIS_PORT_NUMBER PortNumber;
    UINT Timeout;        /* seconds; 0 = no timeout */
    PVOID RequestId;     /* what MiniportCancelOidRequest names */
    NDIS_HANDLE RequestHandle;
    union _REQUEST_DATA {
        struct _QUERY {
            NDIS_OID Oid;
            PVOID InformationBuffer;
            UINT InformationBufferLength;
            UINT BytesWritten;
            UINT BytesNeeded;
        } QUERY_INFORMATION;
        struct _SET {
            NDIS_OID Oid;
            PVOID InformationBuffer;
            UINT InformationBufferLength;
            UINT BytesRead;
            UINT BytesNeeded;
        } SET_INFORMATION;
        struct _METHOD {
            NDIS_OID Oid;
            PVOID InformationBuffer;
            ULONG InputBufferLength;
            ULONG OutputBufferLength;
            ULONG MethodId;
            UINT BytesWritten;
            UINT BytesRead;
            UINT BytesNeeded;
        } METHOD_INFORMATION;
    } DATA;
    UCHAR NdisReserved[NDIS_OID_REQUEST_NDIS_RESERVED_SIZE * sizeof(PVOID)];
    UCHAR MiniportReserved[2 * sizeof(PVOID)];
    UCHAR SourceReserved[2 * sizeof(PVOID)];
    UCHAR SupportedRevision;
    UCHAR Reserved1;
    USHORT Reserved2;
} NDIS_OID_REQUEST, *PNDIS_OID_REQUEST;
#define NDIS_SIZEOF_OID_REQUEST_REVISION_1 RTL_SIZEOF_THROUGH_FIELD(NDIS_OID_REQUEST, Reserved2)

/* ---- Handler types (stdcall on x86) ---- */
typedef NDIS_STATUS(NTAPI SET_OPTIONS)(NDIS_HANDLE NdisDriverHandle, NDIS_HANDLE DriverContext);
typedef SET_OPTIONS *SET_OPTIONS_HANDLER;

typedef NDIS_STATUS(NTAPI MINIPORT_INITIALIZE)(NDIS_HANDLE NdisMiniportHandle,
                                               NDIS_HANDLE MiniportDriverContext,
                                               PNDIS_MINIPORT_INIT_PARAMETERS MiniportInitParameters);
typedef MINIPORT_INITIALIZE *MINIPORT_INITIALIZE_HANDLER;

typedef VOID(NTAPI MINIPORT_HALT)(NDIS_HANDLE MiniportAdapterContext, NDIS_HALT_ACTION HaltAction);
typedef MINIPORT_HALT *MINIPORT_HALT_HANDLER;

typedef VOID(NTAPI MINIPORT_UNLOAD)(PDRIVER_OBJECT DriverObject);
typedef MINIPORT_UNLOAD *MINIPORT_DRIVER_UNLOAD;

typedef NDIS_STATUS(NTAPI MINIPORT_PAUSE)(NDIS_HANDLE MiniportAdapterContext,
                                          PNDIS_MINIPORT_PAUSE_PARAMETERS PauseParameters);
typedef MINIPORT_PAUSE *MINIPORT_PAUSE_HANDLER;

typedef NDIS_STATUS(NTAPI MINIPORT_RESTART)(NDIS_HANDLE MiniportAdapterContext,
                                            PNDIS_MINIPORT_RESTART_PARAMETERS RestartParameters);
typedef MINIPORT_RESTART *MINIPORT_RESTART_HANDLER;

typedef NDIS_STATUS(NTAPI MINIPORT_OID_REQUEST)(NDIS_HANDLE MiniportAdapterContext,
                                                PNDIS_OID_REQUEST OidRequest);
typedef MINIPORT_OID_REQUEST *MINIPORT_OID_REQUEST_HANDLER;

typedef VOID(NTAPI MINIPORT_SEND_NET_BUFFER_LISTS)(NDIS_HANDLE MiniportAdapterContext,
                                                   PNET_BUFFER_LIST NetBufferList,
                                                   NDIS_PORT_NUMBER PortNumber, ULONG SendFlags);
typedef MINIPORT_SEND_NET_BUFFER_LISTS *MINIPORT_SEND_NET_BUFFER_LISTS_HANDLER;

typedef VOID(NTAPI MINIPORT_RETURN_NET_BUFFER_LISTS)(NDIS_HANDLE MiniportAdapterContext,
                                                     PNET_BUFFER_LIST NetBufferLists,
                                                     ULONG ReturnFlags);
typedef MINIPORT_RETURN_NET_BUFFER_LISTS *MINIPORT_RETURN_NET_BUFFER_LISTS_HANDLER;

typedef VOID(NTAPI MINIPORT_CANCEL_SEND)(NDIS_HANDLE MiniportAdapterContext, PVOID CancelId);
typedef MINIPORT_CANCEL_SEND *MINIPORT_CANCEL_SEND_HANDLER;

typedef BOOLEAN(NTAPI MINIPORT_CHECK_FOR_HANG)(NDIS_HANDLE MiniportAdapterContext);
typedef MINIPORT_CHECK_FOR_HANG *MINIPORT_CHECK_FOR_HANG_HANDLER;

typedef NDIS_STATUS(NTAPI MINIPORT_RESET)(NDIS_HANDLE MiniportAdapterContext,
                                          PBOOLEAN AddressingReset);
typedef MINIPORT_RESET *MINIPORT_RESET_HANDLER;

typedef VOID(NTAPI MINIPORT_DEVICE_PNP_EVENT_NOTIFY)(NDIS_HANDLE MiniportAdapterContext,
                                                     PNET_DEVICE_PNP_EVENT NetDevicePnPEvent);
typedef MINIPORT_DEVICE_PNP_EVENT_NOTIFY *MINIPORT_DEVICE_PNP_EVENT_NOTIFY_HANDLER;

typedef VOID(NTAPI MINIPORT_SHUTDOWN)(NDIS_HANDLE MiniportAdapterContext,
                                      NDIS_SHUTDOWN_ACTION ShutdownAction);
typedef MINIPORT_SHUTDOWN *MINIPORT_SHUTDOWN_HANDLER;

typedef VOID(NTAPI MINIPORT_CANCEL_OID_REQUEST)(NDIS_HANDLE MiniportAdapterContext, PVOID RequestId);
typedef MINIPORT_CANCEL_OID_REQUEST *MINIPORT_CANCEL_OID_REQUEST_HANDLER;

typedef struct _NDIS_MINIPORT_DRIVER_CHARACTERISTICS {
    NDIS_OBJECT_HEADER Header; /* MINIPORT_DRIVER_CHARACTERISTICS (0x8A), revision 1 */
    UCHAR MajorNdisVersion;    /* 6 */
    UCHAR MinorNdisVersion;    /* 0 */
    UCHAR MajorDriverVersion;
    UCHAR MinorDriverVersion;
    ULONG Flags;               /* NDIS_INTERMEDIATE_DRIVER, NDIS_WDM_DRIVER */
    SET_OPTIONS_HANDLER SetOptionsHandler;
    MINIPORT_INITIALIZE_HANDLER InitializeHandlerEx;
    MINIPORT_HALT_HANDLER HaltHandlerEx;
    MINIPORT_DRIVER_UNLOAD UnloadHandler;
    MINIPORT_PAUSE_HANDLER PauseHandler;
    MINIPORT_RESTART_HANDLER RestartHandler;
    MINIPORT_OID_REQUEST_HANDLER OidRequestHandler;
    MINIPORT_SEND_NET_BUFFER_LISTS_HANDLER SendNetBufferListsHandler;
    MINIPORT_RETURN_NET_BUFFER_LISTS_HANDLER ReturnNetBufferListsHandler;
    MINIPORT_CANCEL_SEND_HANDLER CancelSendHandler;
    MINIPORT_CHECK_FOR_HANG_HANDLER CheckForHangHandlerEx; /* NULL for virtual miniports */
    MINIPORT_RESET_HANDLER ResetHandlerEx;                  /* NULL for virtual miniports */
    MINIPORT_DEVICE_PNP_EVENT_NOTIFY_HANDLER DevicePnPEventNotifyHandler;
    MINIPORT_SHUTDOWN_HANDLER ShutdownHandlerEx;
    MINIPORT_CANCEL_OID_REQUEST_HANDLER CancelOidRequestHandler;
} NDIS_MINIPORT_DRIVER_CHARACTERISTICS, *PNDIS_MINIPORT_DRIVER_CHARACTERISTICS;
#define NDIS_SIZEOF_MINIPORT_DRIVER_CHARACTERISTICS_REVISION_1 \
    RTL_SIZEOF_THROUGH_FIELD(NDIS_MINIPORT_DRIVER_CHARACTERISTICS, CancelOidRequestHandler)

#define NDIS_INTERMEDIATE_DRIVER 0x00000001
#define NDIS_WDM_DRIVER 0x00000002

/* ======================================================================
 * Adapter attributes (NdisMSetMiniportAttributes)
 * ====================================================================== */

#define NDIS_MINIPORT_ATTRIBUTES_HARDWARE_DEVICE 0x00000001
#define NDIS_MINIPORT_ATTRIBUTES_NDIS_WDM 0x00000002
#define NDIS_MINIPORT_ATTRIBUTES_SURPRISE_REMOVE_OK 0x00000004
#define NDIS_MINIPORT_ATTRIBUTES_NOT_CO_NDIS 0x00000008
#define NDIS_MINIPORT_ATTRIBUTES_DO_NOT_BIND_TO_ALL_CO 0x00000010
#define NDIS_MINIPORT_ATTRIBUTES_NO_HALT_ON_SUSPEND 0x00000020
#define NDIS_MINIPORT_ATTRIBUTES_BUS_MASTER 0x00000040
#define NDIS_MINIPORT_ATTRIBUTES_CONTROLS_DEFAULT_PORT 0x00000080

/* Must be the first attributes a miniport sets: it names the adapter context. */
typedef struct _NDIS_MINIPORT_ADAPTER_REGISTRATION_ATTRIBUTES {
    NDIS_OBJECT_HEADER Header; /* MINIPORT_ADAPTER_REGISTRATION_ATTRIBUTES (0x9E), revision 1 */
    NDIS_HANDLE MiniportAdapterContext;
    ULONG AttributeFlags;      /* NDIS_MINIPORT_ATTRIBUTES_* */
    UINT CheckForHangTimeInSeconds; /* 0: NDIS default (2 s) */
    NDIS_INTERFACE_TYPE InterfaceType;
} NDIS_MINIPORT_ADAPTER_REGISTRATION_ATTRIBUTES, *PNDIS_MINIPORT_ADAPTER_REGISTRATION_ATTRIBUTES;
#define NDIS_SIZEOF_MINIPORT_ADAPTER_REGISTRATION_ATTRIBUTES_REVISION_1 \
    RTL_SIZEOF_THROUGH_FIELD(NDIS_MINIPORT_ADAPTER_REGISTRATION_ATTRIBUTES, InterfaceType)

/* The NDIS 6.0 (revision 1) general attributes; revision 2 (6.20) appends
 * PowerManagementCapabilitiesEx. */
typedef struct _NDIS_MINIPORT_ADAPTER_GENERAL_ATTRIBUTES {
    NDIS_OBJECT_HEADER Header; /* MINIPORT_ADAPTER_GENERAL_ATTRIBUTES (0x9F), revision 1 */
    ULONG Flags;
    NDIS_MEDIUM MediaType;
    NDIS_PHYSICAL_MEDIUM PhysicalMediumType;
    ULONG MtuSize;             /* bytes of payload, without the link header */
    ULONG64 MaxXmitLinkSpeed;  /* bits per second */
    ULONG64 XmitLinkSpeed;
    ULONG64 MaxRcvLinkSpeed;
    ULONG64 RcvLinkSpeed;
    NDIS_MEDIA_CONNECT_STATE MediaConnectState;
    NDIS_MEDIA_DUPLEX_STATE MediaDuplexState;
    ULONG LookaheadSize;
    PNDIS_PNP_CAPABILITIES PowerManagementCapabilities; /* NULL: not PM aware */
    ULONG MacOptions;
    ULONG SupportedPacketFilters;
    ULONG MaxMulticastListSize;
    USHORT MacAddressLength;
    UCHAR PermanentMacAddress[NDIS_MAX_PHYS_ADDRESS_LENGTH]; /* 32 */
    UCHAR CurrentMacAddress[NDIS_MAX_PHYS_ADDRESS_LENGTH];
    PNDIS_RECEIVE_SCALE_CAPABILITIES RecvScaleCapabilities; /* NULL: no RSS */
    NET_IF_ACCESS_TYPE AccessType;
    NET_IF_DIRECTION_TYPE DirectionType;
    NET_IF_CONNECTION_TYPE ConnectionType;
    NET_IFTYPE IfType;         /* IANA ifType, IF_TYPE_ETHERNET_CSMACD = 6 */
    BOOLEAN IfConnectorPresent; /* TRUE for a physical adapter */
    ULONG SupportedStatistics; /* NDIS_STATISTICS_*_SUPPORTED */
    ULONG SupportedPauseFunctions; /* NDIS_SUPPORTED_PAUSE_FUNCTIONS */
    ULONG DataBackFillSize;
    ULONG ContextBackFillSize;
    PNDIS_OID SupportedOidList;
    ULONG SupportedOidListLength; /* bytes */
    ULONG AutoNegotiationFlags; /* NDIS_LINK_STATE_*_AUTO_NEGOTIATED */
} NDIS_MINIPORT_ADAPTER_GENERAL_ATTRIBUTES, *PNDIS_MINIPORT_ADAPTER_GENERAL_ATTRIBUTES;
#define NDIS_SIZEOF_MINIPORT_ADAPTER_GENERAL_ATTRIBUTES_REVISION_1 \
    RTL_SIZEOF_THROUGH_FIELD(NDIS_MINIPORT_ADAPTER_GENERAL_ATTRIBUTES, AutoNegotiationFlags)

/* SupportedStatistics bits. */
#define NDIS_STATISTICS_XMIT_OK_SUPPORTED 0x00000001
#define NDIS_STATISTICS_RCV_OK_SUPPORTED 0x00000002
#define NDIS_STATISTICS_XMIT_ERROR_SUPPORTED 0x00000004
#define NDIS_STATISTICS_RCV_ERROR_SUPPORTED 0x00000008
#define NDIS_STATISTICS_RCV_NO_BUFFER_SUPPORTED 0x00000010
#define NDIS_STATISTICS_DIRECTED_BYTES_XMIT_SUPPORTED 0x00000020
#define NDIS_STATISTICS_DIRECTED_FRAMES_XMIT_SUPPORTED 0x00000040
#define NDIS_STATISTICS_MULTICAST_BYTES_XMIT_SUPPORTED 0x00000080
#define NDIS_STATISTICS_MULTICAST_FRAMES_XMIT_SUPPORTED 0x00000100
#define NDIS_STATISTICS_BROADCAST_BYTES_XMIT_SUPPORTED 0x00000200
#define NDIS_STATISTICS_BROADCAST_FRAMES_XMIT_SUPPORTED 0x00000400
#define NDIS_STATISTICS_DIRECTED_BYTES_RCV_SUPPORTED 0x00000800
#define NDIS_STATISTICS_DIRECTED_FRAMES_RCV_SUPPORTED 0x00001000
#define NDIS_STATISTICS_MULTICAST_BYTES_RCV_SUPPORTED 0x00002000
#define NDIS_STATISTICS_MULTICAST_FRAMES_RCV_SUPPORTED 0x00004000
#define NDIS_STATISTICS_BROADCAST_BYTES_RCV_SUPPORTED 0x00008000
#define NDIS_STATISTICS_BROADCAST_FRAMES_RCV_SUPPORTED 0x00010000
#define NDIS_STATISTICS_RCV_CRC_ERROR_SUPPORTED 0x00020000
#define NDIS_STATISTICS_TRANSMIT_QUEUE_LENGTH_SUPPORTED 0x00040000
#define NDIS_STATISTICS_BYTES_RCV_SUPPORTED 0x00080000
#define NDIS_STATISTICS_BYTES_XMIT_SUPPORTED 0x00100000
#define NDIS_STATISTICS_RCV_DISCARDS_SUPPORTED 0x00200000
#define NDIS_STATISTICS_GEN_STATISTICS_SUPPORTED 0x00400000
#define NDIS_STATISTICS_XMIT_DISCARDS_SUPPORTED 0x08000000

/* The argument of NdisMSetMiniportAttributes: NDIS tells the kinds apart by
 * Header.Type.  Only the two kinds a 6.0 Ethernet miniport must set are
 * declared (the others - add-device, offload, native 802.11 - are not used
 * here), so sizeof this union is not the WDK's; nobody copies it by value. */
typedef union _NDIS_MINIPORT_ADAPTER_ATTRIBUTES {
    NDIS_MINIPORT_ADAPTER_REGISTRATION_ATTRIBUTES RegistrationAttributes;
    NDIS_MINIPORT_ADAPTER_GENERAL_ATTRIBUTES GeneralAttributes;
} NDIS_MINIPORT_ADAPTER_ATTRIBUTES, *PNDIS_MINIPORT_ADAPTER_ATTRIBUTES;

/* ======================================================================
 * Status indications
 * ====================================================================== */

/* NDIS_STATUS_LINK_STATE (0x40010017) and NDIS_LINK_STATE come from mingw. */
typedef struct _NDIS_STATUS_INDICATION {
    NDIS_OBJECT_HEADER Header; /* STATUS_INDICATION (0x98), revision 1 */
    NDIS_HANDLE SourceHandle;  /* the MiniportAdapterHandle */
    NDIS_PORT_NUMBER PortNumber;
    NDIS_STATUS StatusCode;
    ULONG Flags;
    NDIS_HANDLE DestinationHandle;
    PVOID RequestId;
    PVOID StatusBuffer;
    ULONG StatusBufferSize;
    GUID Guid;
    PVOID NdisReserved[4];
} NDIS_STATUS_INDICATION, *PNDIS_STATUS_INDICATION;
#define NDIS_SIZEOF_STATUS_INDICATION_REVISION_1 \
    RTL_SIZEOF_THROUGH_FIELD(NDIS_STATUS_INDICATION, NdisReserved)

/* ======================================================================
 * Interrupts
 * ====================================================================== */

/* Line-based: return TRUE if the NIC interrupted; set *QueueDefaultInterruptDpc
 * to run MiniportInterruptDpc on this processor (TargetProcessors: others). */
typedef BOOLEAN(NTAPI MINIPORT_ISR)(NDIS_HANDLE MiniportInterruptContext,
                                    PBOOLEAN QueueDefaultInterruptDpc, PULONG TargetProcessors);
typedef MINIPORT_ISR *MINIPORT_ISR_HANDLER;

/* NdisReserved1 became ReceiveThrottleParameters in NDIS 6.20. */
typedef VOID(NTAPI MINIPORT_INTERRUPT_DPC)(NDIS_HANDLE MiniportInterruptContext,
                                           PVOID MiniportDpcContext, PVOID NdisReserved1,
                                           PVOID NdisReserved2);
typedef MINIPORT_INTERRUPT_DPC *MINIPORT_INTERRUPT_DPC_HANDLER;

typedef VOID(NTAPI MINIPORT_DISABLE_INTERRUPT)(NDIS_HANDLE MiniportInterruptContext);
typedef MINIPORT_DISABLE_INTERRUPT *MINIPORT_DISABLE_INTERRUPT_HANDLER;

typedef VOID(NTAPI MINIPORT_ENABLE_INTERRUPT)(NDIS_HANDLE MiniportInterruptContext);
typedef MINIPORT_ENABLE_INTERRUPT *MINIPORT_ENABLE_INTERRUPT_HANDLER;

typedef BOOLEAN(NTAPI MINIPORT_MESSAGE_INTERRUPT)(NDIS_HANDLE MiniportInterruptContext,
                                                  ULONG MessageId,
                                                  PBOOLEAN QueueDefaultInterruptDpc,
                                                  PULONG TargetProcessors);
typedef MINIPORT_MESSAGE_INTERRUPT *MINIPORT_MSI_ISR_HANDLER;

typedef VOID(NTAPI MINIPORT_MESSAGE_INTERRUPT_DPC)(NDIS_HANDLE MiniportInterruptContext,
                                                   ULONG MessageId, PVOID MiniportDpcContext,
                                                   PVOID NdisReserved1, PVOID NdisReserved2);
typedef MINIPORT_MESSAGE_INTERRUPT_DPC *MINIPORT_MSI_INTERRUPT_DPC_HANDLER;

typedef VOID(NTAPI MINIPORT_DISABLE_MESSAGE_INTERRUPT)(NDIS_HANDLE MiniportInterruptContext,
                                                       ULONG MessageId);
typedef MINIPORT_DISABLE_MESSAGE_INTERRUPT *MINIPORT_DISABLE_MSI_INTERRUPT_HANDLER;

typedef VOID(NTAPI MINIPORT_ENABLE_MESSAGE_INTERRUPT)(NDIS_HANDLE MiniportInterruptContext,
                                                      ULONG MessageId);
typedef MINIPORT_ENABLE_MESSAGE_INTERRUPT *MINIPORT_ENABLE_MSI_INTERRUPT_HANDLER;

/* Runs at the interrupt's DIRQL, serialized with the ISR. */
typedef BOOLEAN(NTAPI MINIPORT_SYNCHRONIZE_INTERRUPT)(NDIS_HANDLE SynchronizeContext);
typedef MINIPORT_SYNCHRONIZE_INTERRUPT *MINIPORT_SYNCHRONIZE_INTERRUPT_HANDLER;

typedef enum _NDIS_INTERRUPT_TYPE {
    NDIS_CONNECT_LINE_BASED = 1,
    NDIS_CONNECT_MESSAGE_BASED
} NDIS_INTERRUPT_TYPE, *PNDIS_INTERRUPT_TYPE;

typedef struct _NDIS_MINIPORT_INTERRUPT_CHARACTERISTICS {
    NDIS_OBJECT_HEADER Header; /* MINIPORT_INTERRUPT (0x84), NDIS_MINIPORT_INTERRUPT_REVISION_1 */
    MINIPORT_ISR_HANDLER InterruptHandler;
    MINIPORT_INTERRUPT_DPC_HANDLER InterruptDpcHandler;
    MINIPORT_DISABLE_INTERRUPT_HANDLER DisableInterruptHandler;
    MINIPORT_ENABLE_INTERRUPT_HANDLER EnableInterruptHandler;
    BOOLEAN MsiSupported;
    BOOLEAN MsiSyncWithAllMessages;
    MINIPORT_MSI_ISR_HANDLER MessageInterruptHandler;
    MINIPORT_MSI_INTERRUPT_DPC_HANDLER MessageInterruptDpcHandler;
    MINIPORT_DISABLE_MSI_INTERRUPT_HANDLER DisableMessageInterruptHandler;
    MINIPORT_ENABLE_MSI_INTERRUPT_HANDLER EnableMessageInterruptHandler;
    NDIS_INTERRUPT_TYPE InterruptType;           /* out: what NDIS connected */
    PIO_INTERRUPT_MESSAGE_INFO MessageInfoTable; /* out: MSI only */
} NDIS_MINIPORT_INTERRUPT_CHARACTERISTICS, *PNDIS_MINIPORT_INTERRUPT_CHARACTERISTICS;
#define NDIS_SIZEOF_MINIPORT_INTERRUPT_CHARACTERISTICS_REVISION_1 \
    RTL_SIZEOF_THROUGH_FIELD(NDIS_MINIPORT_INTERRUPT_CHARACTERISTICS, MessageInfoTable)

/* ======================================================================
 * Scatter/gather DMA registration (required before NdisMAllocateSharedMemory)
 * ====================================================================== */

typedef VOID(NTAPI MINIPORT_PROCESS_SG_LIST)(PDEVICE_OBJECT pDO, PVOID Reserved,
                                             PSCATTER_GATHER_LIST pSGL, PVOID Context);
typedef MINIPORT_PROCESS_SG_LIST *MINIPORT_PROCESS_SG_LIST_HANDLER;

typedef VOID(NTAPI MINIPORT_ALLOCATE_SHARED_MEM_COMPLETE)(NDIS_HANDLE MiniportAdapterContext,
                                                          PVOID VirtualAddress,
                                                          PNDIS_PHYSICAL_ADDRESS PhysicalAddress,
                                                          ULONG Length, PVOID Context);
typedef MINIPORT_ALLOCATE_SHARED_MEM_COMPLETE *MINIPORT_ALLOCATE_SHARED_MEM_COMPLETE_HANDLER;

#define NDIS_SG_DMA_64_BIT_ADDRESS 0x00000001 /* Flags; clear: 32-bit addresses */

typedef struct _NDIS_SG_DMA_DESCRIPTION {
    NDIS_OBJECT_HEADER Header; /* SG_DMA_DESCRIPTION (0x83), revision 1 */
    ULONG Flags;
    ULONG MaximumPhysicalMapping; /* largest buffer mapped at once */
    MINIPORT_PROCESS_SG_LIST_HANDLER ProcessSGListHandler;
    MINIPORT_ALLOCATE_SHARED_MEM_COMPLETE_HANDLER SharedMemAllocateCompleteHandler;
    ULONG ScatterGatherListSize; /* out */
} NDIS_SG_DMA_DESCRIPTION, *PNDIS_SG_DMA_DESCRIPTION;
#define NDIS_SIZEOF_SG_DMA_DESCRIPTION_REVISION_1 \
    RTL_SIZEOF_THROUGH_FIELD(NDIS_SG_DMA_DESCRIPTION, ScatterGatherListSize)

/* ======================================================================
 * Timers, configuration, bus data
 * ====================================================================== */

/* TimerFunction is an NDIS_TIMER_FUNCTION (mingw's PNDIS_TIMER_FUNCTION):
 * (SystemSpecific1, FunctionContext, SystemSpecific2, SystemSpecific3),
 * called at DISPATCH_LEVEL. */
typedef struct _NDIS_TIMER_CHARACTERISTICS {
    NDIS_OBJECT_HEADER Header; /* TIMER_CHARACTERISTICS (0x97), revision 1 */
    ULONG AllocationTag;
    PNDIS_TIMER_FUNCTION TimerFunction;
    PVOID FunctionContext;
} NDIS_TIMER_CHARACTERISTICS, *PNDIS_TIMER_CHARACTERISTICS;
#define NDIS_SIZEOF_TIMER_CHARACTERISTICS_REVISION_1 \
    RTL_SIZEOF_THROUGH_FIELD(NDIS_TIMER_CHARACTERISTICS, FunctionContext)

#define NDIS_CONFIG_FLAG_FILTER_INSTANCE_CONFIGURATION 0x00000001

typedef struct _NDIS_CONFIGURATION_OBJECT {
    NDIS_OBJECT_HEADER Header; /* CONFIGURATION_OBJECT (0xA9), revision 1 */
    NDIS_HANDLE NdisHandle;    /* the MiniportAdapterHandle: opens the adapter's key */
    ULONG Flags;
} NDIS_CONFIGURATION_OBJECT, *PNDIS_CONFIGURATION_OBJECT;
#define NDIS_SIZEOF_CONFIGURATION_OBJECT_REVISION_1 \
    RTL_SIZEOF_THROUGH_FIELD(NDIS_CONFIGURATION_OBJECT, Flags)

/* NdisMGetBusData / NdisMSetBusData: which space. */
#define PCI_WHICHSPACE_CONFIG 0x0
#define PCI_WHICHSPACE_ROM 0x52696350

/* ======================================================================
 * ndis.sys exports (NDIS 6.0)
 * ====================================================================== */

NDISAPI NDIS_STATUS NTAPI NdisMRegisterMiniportDriver(
    PDRIVER_OBJECT DriverObject, PUNICODE_STRING RegistryPath, NDIS_HANDLE MiniportDriverContext,
    PNDIS_MINIPORT_DRIVER_CHARACTERISTICS MiniportDriverCharacteristics,
    PNDIS_HANDLE NdisMiniportDriverHandle);
NDISAPI VOID NTAPI NdisMDeregisterMiniportDriver(NDIS_HANDLE NdisMiniportDriverHandle);

NDISAPI NDIS_STATUS NTAPI NdisMSetMiniportAttributes(
    NDIS_HANDLE NdisMiniportHandle, PNDIS_MINIPORT_ADAPTER_ATTRIBUTES MiniportAttributes);

NDISAPI VOID NTAPI NdisMPauseComplete(NDIS_HANDLE MiniportAdapterHandle);
NDISAPI VOID NTAPI NdisMRestartComplete(NDIS_HANDLE MiniportAdapterHandle, NDIS_STATUS Status);
NDISAPI VOID NTAPI NdisMOidRequestComplete(NDIS_HANDLE MiniportAdapterHandle,
                                          PNDIS_OID_REQUEST OidRequest, NDIS_STATUS Status);
NDISAPI VOID NTAPI NdisMIndicateStatusEx(NDIS_HANDLE MiniportAdapterHandle,
                                        PNDIS_STATUS_INDICATION StatusIndication);

NDISAPI NDIS_HANDLE NTAPI NdisAllocateNetBufferListPool(
    NDIS_HANDLE NdisHandle, PNET_BUFFER_LIST_POOL_PARAMETERS Parameters);
NDISAPI VOID NTAPI NdisFreeNetBufferListPool(NDIS_HANDLE PoolHandle);
NDISAPI PNET_BUFFER_LIST NTAPI NdisAllocateNetBufferAndNetBufferList(
    NDIS_HANDLE PoolHandle, USHORT ContextSize, USHORT ContextBackFill, PMDL MdlChain,
    ULONG DataOffset, SIZE_T DataLength);
NDISAPI VOID NTAPI NdisFreeNetBufferList(PNET_BUFFER_LIST NetBufferList);
NDISAPI PMDL NTAPI NdisAllocateMdl(NDIS_HANDLE NdisHandle, PVOID VirtualAddress, UINT Length);
NDISAPI VOID NTAPI NdisFreeMdl(PMDL Mdl);

NDISAPI VOID NTAPI NdisMIndicateReceiveNetBufferLists(
    NDIS_HANDLE MiniportAdapterHandle, PNET_BUFFER_LIST NetBufferLists,
    NDIS_PORT_NUMBER PortNumber, ULONG NumberOfNetBufferLists, ULONG ReceiveFlags);
NDISAPI VOID NTAPI NdisMSendNetBufferListsComplete(NDIS_HANDLE MiniportAdapterHandle,
                                                  PNET_BUFFER_LIST NetBufferLists,
                                                  ULONG SendCompleteFlags);

NDISAPI NDIS_STATUS NTAPI NdisOpenConfigurationEx(PNDIS_CONFIGURATION_OBJECT ConfigObject,
                                                 PNDIS_HANDLE ConfigurationHandle);

NDISAPI NDIS_STATUS NTAPI NdisMRegisterInterruptEx(
    NDIS_HANDLE MiniportAdapterHandle, NDIS_HANDLE MiniportInterruptContext,
    PNDIS_MINIPORT_INTERRUPT_CHARACTERISTICS MiniportInterruptCharacteristics,
    PNDIS_HANDLE NdisInterruptHandle);
NDISAPI VOID NTAPI NdisMDeregisterInterruptEx(NDIS_HANDLE NdisInterruptHandle);
NDISAPI BOOLEAN NTAPI NdisMSynchronizeWithInterruptEx(
    NDIS_HANDLE NdisInterruptHandle, ULONG MessageId,
    MINIPORT_SYNCHRONIZE_INTERRUPT_HANDLER SynchronizeFunction, PVOID SynchronizeContext);

NDISAPI NDIS_STATUS NTAPI NdisMRegisterScatterGatherDma(NDIS_HANDLE MiniportAdapterHandle,
                                                       PNDIS_SG_DMA_DESCRIPTION DmaDescription,
                                                       PNDIS_HANDLE NdisMiniportDmaHandle);
NDISAPI VOID NTAPI NdisMDeregisterScatterGatherDma(NDIS_HANDLE NdisMiniportDmaHandle);

NDISAPI ULONG NTAPI NdisMGetBusData(NDIS_HANDLE NdisMiniportHandle, ULONG WhichSpace,
                                    ULONG Offset, PVOID Buffer, ULONG Length);

/* Free with NdisFreeMemory(VirtualAddress, 0, 0) (NdisFreeMemoryWithTagPriority is 6.20). */
NDISAPI PVOID NTAPI NdisAllocateMemoryWithTagPriority(NDIS_HANDLE NdisHandle, UINT Length,
                                                      ULONG Tag, EX_POOL_PRIORITY Priority);

NDISAPI NDIS_STATUS NTAPI NdisAllocateTimerObject(NDIS_HANDLE NdisHandle,
                                                 PNDIS_TIMER_CHARACTERISTICS TimerCharacteristics,
                                                 PNDIS_HANDLE pTimerObject);
/* DueTime: 100 ns units, negative = relative.  Returns TRUE if the timer was already queued. */
NDISAPI BOOLEAN NTAPI NdisSetTimerObject(NDIS_HANDLE TimerObject, LARGE_INTEGER DueTime,
                                         LONG MillisecondsPeriod, PVOID FunctionContext);
/* Returns TRUE if the timer was queued (its function will not run). */
NDISAPI BOOLEAN NTAPI NdisCancelTimerObject(NDIS_HANDLE TimerObject);
NDISAPI VOID NTAPI NdisFreeTimerObject(NDIS_HANDLE TimerObject);

/* ---- Clones and copies of NET_BUFFER(_LIST)s ----
 * A clone describes the original's data (from the start of each NB's used
 * data) without copying it and has no NET_BUFFER_LIST_CONTEXT.  NDIS leaves
 * ParentNetBufferList NULL and ChildRefCount 0: the caller maintains them
 * (sets the clone's parent, counts the parent's children).  Free a clone with
 * NdisFreeCloneNetBufferList and the same flags. */
#define NDIS_CLONE_FLAGS_RESERVED 0x00000001
#define NDIS_CLONE_FLAGS_USE_ORIGINAL_MDLS 0x00000002 /* share the MDL chain, build none */

NDISAPI PNET_BUFFER_LIST NTAPI NdisAllocateCloneNetBufferList(
    PNET_BUFFER_LIST OriginalNetBufferList, NDIS_HANDLE NetBufferListPoolHandle,
    NDIS_HANDLE NetBufferPoolHandle, ULONG AllocateCloneFlags);
NDISAPI VOID NTAPI NdisFreeCloneNetBufferList(PNET_BUFFER_LIST CloneNetBufferList,
                                              ULONG FreeCloneFlags);
/* Offsets count from the start of each NB's used data.  The destination's
 * MDLs bound the copy; its NB fields are not changed (the caller sets
 * DataLength afterwards).  *BytesCopied may be less than BytesToCopy. */
NDISAPI NDIS_STATUS NTAPI NdisCopyFromNetBufferToNetBuffer(PNET_BUFFER Destination,
                                                           ULONG DestinationOffset,
                                                           ULONG BytesToCopy, PNET_BUFFER Source,
                                                           ULONG SourceOffset, PULONG BytesCopied);
/* Copies the receive-side NetBufferListInfo entries (checksum, IPsec, no-push,
 * 802.1Q, media-specific, frame type, hash value and info). */
NDISAPI VOID NTAPI NdisCopyReceiveNetBufferListInfo(PNET_BUFFER_LIST DestNetBufferList,
                                                    PNET_BUFFER_LIST SrcNetBufferList);

/* ---- Scatter/gather lists (after NdisMRegisterScatterGatherDma) ----
 * The list covers the NB's data from the start of CurrentMdl: its first
 * CurrentMdlOffset bytes precede the data.  MiniportProcessSGList gets it at
 * DISPATCH_LEVEL, possibly before the call returns; a too small (or NULL)
 * ScatterGatherListBuffer makes NDIS use storage of its own. */
#define NDIS_SG_LIST_WRITE_TO_DEVICE 0x000000001

NDISAPI NDIS_STATUS NTAPI NdisMAllocateNetBufferSGList(NDIS_HANDLE NdisMiniportDmaHandle,
                                                       PNET_BUFFER NetBuffer, PVOID Context,
                                                       ULONG Flags, PVOID ScatterGatherListBuffer,
                                                       ULONG ScatterGatherListBufferSize);
NDISAPI VOID NTAPI NdisMFreeNetBufferSGList(NDIS_HANDLE NdisMiniportDmaHandle,
                                            PSCATTER_GATHER_LIST pSGL, PNET_BUFFER NetBuffer);

/* ---- Interrupt DPCs on request ----
 * MiniportInterruptDPC(Context, MiniportDpcContext, ...) runs at
 * DISPATCH_LEVEL on each processor named; the result names the processors a
 * DPC was queued for (not those that already had one queued).  MessageId is 0
 * for a line-based interrupt.  NdisMQueueDpcEx is the NDIS 6.20 form. */
NDISAPI ULONG NTAPI NdisMQueueDpc(NDIS_HANDLE NdisInterruptHandle, ULONG MessageId,
                                  ULONG TargetProcessors, PVOID MiniportDpcContext);
NDISAPI KAFFINITY NTAPI NdisMQueueDpcEx(NDIS_HANDLE NdisInterruptHandle, ULONG MessageId,
                                        PGROUP_AFFINITY TargetProcessors,
                                        PVOID MiniportDpcContext);

/* ---- NDIS I/O work items: the routine runs at PASSIVE_LEVEL in a system
 * worker thread.  NdisObjectHandle: e.g. the MiniportAdapterHandle. ---- */
typedef VOID(NTAPI NDIS_IO_WORKITEM_FUNCTION)(PVOID WorkItemContext,
                                              NDIS_HANDLE NdisIoWorkItemHandle);
typedef NDIS_IO_WORKITEM_FUNCTION *NDIS_IO_WORKITEM_ROUTINE;

NDISAPI NDIS_HANDLE NTAPI NdisAllocateIoWorkItem(NDIS_HANDLE NdisObjectHandle);
NDISAPI VOID NTAPI NdisQueueIoWorkItem(NDIS_HANDLE NdisIoWorkItemHandle,
                                       NDIS_IO_WORKITEM_ROUTINE Routine, PVOID WorkItemContext);
NDISAPI VOID NTAPI NdisFreeIoWorkItem(NDIS_HANDLE NdisIoWorkItemHandle);

/* ---- Processors (NDIS 6.20) ----
 * mingw's ntddndis.h declares the RSS structures only for NDIS 6.20 and later,
 * a mode in which it does not compile here: declared from the documentation of
 * NDIS_RSS_PROCESSOR_INFO (revision 2 = NDIS 6.30 appends RssMaxProcessor and
 * RssProfile) and NDIS_RSS_PROCESSOR. */
#ifndef NDIS_OBJECT_TYPE_RSS_PROCESSOR_INFO
#define NDIS_OBJECT_TYPE_RSS_PROCESSOR_INFO 0xB1
#endif
#define NDIS_RSS_PROCESSOR_INFO_REVISION_1 1
#define NDIS_RSS_PROCESSOR_INFO_REVISION_2 2

typedef struct _NDIS_RSS_PROCESSOR {
    PROCESSOR_NUMBER ProcNum;
    USHORT PreferenceIndex; /* lower: closer (NUMA distance) */
    USHORT Reserved;
} NDIS_RSS_PROCESSOR, *PNDIS_RSS_PROCESSOR;
#define NDIS_SIZEOF_RSS_PROCESSOR_REVISION_1 \
    RTL_SIZEOF_THROUGH_FIELD(NDIS_RSS_PROCESSOR, PreferenceIndex)

typedef enum _NDIS_RSS_PROFILE {
    NdisRssProfileClosest = 1,
    NdisRssProfileClosestStatic,
    NdisRssProfileNuma,
    NdisRssProfileNumaStatic,
    NdisRssProfileConservative,
    NdisRssProfileMaximum
} NDIS_RSS_PROFILE, *PNDIS_RSS_PROFILE;

typedef struct _NDIS_RSS_PROCESSOR_INFO {
    NDIS_OBJECT_HEADER Header; /* RSS_PROCESSOR_INFO (0xB1), revision 1 or 2 */
    ULONG Flags;
    PROCESSOR_NUMBER RssBaseProcessor;
    ULONG MaxNumRssProcessors;
    USHORT PreferredNumaNode;
    ULONG RssProcessorArrayOffset; /* from the start of this structure */
    ULONG RssProcessorCount;
    ULONG RssProcessorEntrySize;
    PROCESSOR_NUMBER RssMaxProcessor; /* revision 2 */
    NDIS_RSS_PROFILE RssProfile;      /* revision 2 (reserved) */
} NDIS_RSS_PROCESSOR_INFO, *PNDIS_RSS_PROCESSOR_INFO;
#define NDIS_SIZEOF_RSS_PROCESSOR_INFO_REVISION_1 \
    RTL_SIZEOF_THROUGH_FIELD(NDIS_RSS_PROCESSOR_INFO, RssProcessorEntrySize)
#define NDIS_SIZEOF_RSS_PROCESSOR_INFO_REVISION_2 \
    RTL_SIZEOF_THROUGH_FIELD(NDIS_RSS_PROCESSOR_INFO, RssProfile)

/* Group: a processor group or ALL_PROCESSOR_GROUPS. */
NDISAPI ULONG NTAPI NdisGroupActiveProcessorCount(USHORT Group);
/* The system-wide index of a processor; INVALID_PROCESSOR_INDEX if there is none. */
NDISAPI ULONG NTAPI NdisProcessorNumberToIndex(PROCESSOR_NUMBER ProcNum);
/* *Size: in, the buffer's size; out, the bytes written, or those needed
 * (NDIS_STATUS_BUFFER_TOO_SHORT). */
NDISAPI NDIS_STATUS NTAPI NdisGetRssProcessorInformation(NDIS_HANDLE NdisHandle,
                                                         PNDIS_RSS_PROCESSOR_INFO RssProcessorInfo,
                                                         PSIZE_T Size);
#ifndef INVALID_PROCESSOR_INDEX
#define INVALID_PROCESSOR_INDEX 0xFFFFFFFF
#endif

/* ======================================================================
 * Layout checks: offsets and sizes of Windows' own definitions
 * (symbol dumps of ndis.sys, x86 and x64) and documented revision-1 sizes.
 * ====================================================================== */
#define ICA_NDIS6_OFFSET(t, f, x86, x64) \
    _Static_assert(FIELD_OFFSET(t, f) == (sizeof(PVOID) == 8 ? (x64) : (x86)), #t "." #f)
#define ICA_NDIS6_SIZE(what, x86, x64) \
    _Static_assert((what) == (sizeof(PVOID) == 8 ? (x64) : (x86)), #what)

ICA_NDIS6_OFFSET(NET_BUFFER_LIST, FirstNetBuffer, 0x04, 0x08);
ICA_NDIS6_OFFSET(NET_BUFFER_LIST, Context, 0x08, 0x10);
ICA_NDIS6_OFFSET(NET_BUFFER_LIST, ParentNetBufferList, 0x0c, 0x18);
ICA_NDIS6_OFFSET(NET_BUFFER_LIST, NdisPoolHandle, 0x10, 0x20);
ICA_NDIS6_OFFSET(NET_BUFFER_LIST, NdisReserved, 0x18, 0x30);
ICA_NDIS6_OFFSET(NET_BUFFER_LIST, ProtocolReserved, 0x20, 0x40);
ICA_NDIS6_OFFSET(NET_BUFFER_LIST, MiniportReserved, 0x30, 0x60);
ICA_NDIS6_OFFSET(NET_BUFFER_LIST, Scratch, 0x38, 0x70);
ICA_NDIS6_OFFSET(NET_BUFFER_LIST, SourceHandle, 0x3c, 0x78);
ICA_NDIS6_OFFSET(NET_BUFFER_LIST, NblFlags, 0x40, 0x80);
ICA_NDIS6_OFFSET(NET_BUFFER_LIST, ChildRefCount, 0x44, 0x84);
ICA_NDIS6_OFFSET(NET_BUFFER_LIST, Flags, 0x48, 0x88);
ICA_NDIS6_OFFSET(NET_BUFFER_LIST, Status, 0x4c, 0x8c);
ICA_NDIS6_OFFSET(NET_BUFFER_LIST, NetBufferListInfo, 0x50, 0x90);
/* 0x50 + 11 * 4 rounded up to 8; 0x90 + 11 * 8 rounded up to 16. */
ICA_NDIS6_SIZE(sizeof(NET_BUFFER_LIST), 0x80, 0xf0);

ICA_NDIS6_OFFSET(NET_BUFFER, CurrentMdl, 0x04, 0x08);
ICA_NDIS6_OFFSET(NET_BUFFER, CurrentMdlOffset, 0x08, 0x10);
ICA_NDIS6_OFFSET(NET_BUFFER, DataLength, 0x0c, 0x18);
ICA_NDIS6_OFFSET(NET_BUFFER, MdlChain, 0x10, 0x20);
ICA_NDIS6_OFFSET(NET_BUFFER, DataOffset, 0x14, 0x28);
ICA_NDIS6_OFFSET(NET_BUFFER, ChecksumBias, 0x18, 0x30);
ICA_NDIS6_OFFSET(NET_BUFFER, NdisPoolHandle, 0x1c, 0x38);
ICA_NDIS6_OFFSET(NET_BUFFER, NdisReserved, 0x20, 0x40);
ICA_NDIS6_OFFSET(NET_BUFFER, ProtocolReserved, 0x28, 0x50);
ICA_NDIS6_OFFSET(NET_BUFFER, MiniportReserved, 0x40, 0x80);
ICA_NDIS6_OFFSET(NET_BUFFER, DataPhysicalAddress, 0x50, 0xa0);
ICA_NDIS6_SIZE(sizeof(NET_BUFFER), 0x58, 0xb0);

ICA_NDIS6_OFFSET(NDIS_MINIPORT_DRIVER_CHARACTERISTICS, SetOptionsHandler, 0x0c, 0x10);
ICA_NDIS6_OFFSET(NDIS_MINIPORT_DRIVER_CHARACTERISTICS, SendNetBufferListsHandler, 0x28, 0x48);
ICA_NDIS6_OFFSET(NDIS_MINIPORT_DRIVER_CHARACTERISTICS, CancelOidRequestHandler, 0x44, 0x80);
ICA_NDIS6_SIZE(NDIS_SIZEOF_MINIPORT_DRIVER_CHARACTERISTICS_REVISION_1, 0x48, 0x88);

ICA_NDIS6_OFFSET(NDIS_MINIPORT_ADAPTER_GENERAL_ATTRIBUTES, MaxXmitLinkSpeed, 0x18, 0x18);
ICA_NDIS6_OFFSET(NDIS_MINIPORT_ADAPTER_GENERAL_ATTRIBUTES, PowerManagementCapabilities, 0x44, 0x48);
ICA_NDIS6_OFFSET(NDIS_MINIPORT_ADAPTER_GENERAL_ATTRIBUTES, MacAddressLength, 0x54, 0x5c);
ICA_NDIS6_OFFSET(NDIS_MINIPORT_ADAPTER_GENERAL_ATTRIBUTES, CurrentMacAddress, 0x76, 0x7e);
ICA_NDIS6_OFFSET(NDIS_MINIPORT_ADAPTER_GENERAL_ATTRIBUTES, RecvScaleCapabilities, 0x98, 0xa0);
ICA_NDIS6_OFFSET(NDIS_MINIPORT_ADAPTER_GENERAL_ATTRIBUTES, IfType, 0xa8, 0xb4);
ICA_NDIS6_OFFSET(NDIS_MINIPORT_ADAPTER_GENERAL_ATTRIBUTES, SupportedOidList, 0xbc, 0xc8);
ICA_NDIS6_OFFSET(NDIS_MINIPORT_ADAPTER_GENERAL_ATTRIBUTES, AutoNegotiationFlags, 0xc4, 0xd4);
ICA_NDIS6_SIZE(NDIS_SIZEOF_MINIPORT_ADAPTER_GENERAL_ATTRIBUTES_REVISION_1, 0xc8, 0xd8);

ICA_NDIS6_OFFSET(NDIS_STATUS_INDICATION, Guid, 0x24, 0x3c);
ICA_NDIS6_SIZE(sizeof(NDIS_STATUS_INDICATION), 0x44, 0x70);

ICA_NDIS6_OFFSET(NDIS_MINIPORT_INTERRUPT_CHARACTERISTICS, MsiSupported, 0x14, 0x28);
ICA_NDIS6_OFFSET(NDIS_MINIPORT_INTERRUPT_CHARACTERISTICS, MessageInterruptHandler, 0x18, 0x30);
ICA_NDIS6_OFFSET(NDIS_MINIPORT_INTERRUPT_CHARACTERISTICS, InterruptType, 0x28, 0x50);
ICA_NDIS6_SIZE(sizeof(NDIS_MINIPORT_INTERRUPT_CHARACTERISTICS), 0x30, 0x60);

ICA_NDIS6_OFFSET(NDIS_TIMER_CHARACTERISTICS, TimerFunction, 0x08, 0x08);
ICA_NDIS6_SIZE(sizeof(NDIS_TIMER_CHARACTERISTICS), 0x10, 0x18);

ICA_NDIS6_OFFSET(NDIS_OID_REQUEST, DATA.QUERY_INFORMATION.Oid, 0x18, 0x20);
ICA_NDIS6_OFFSET(NDIS_OID_REQUEST, NdisReserved, 0x38, 0x48);
ICA_NDIS6_SIZE(NDIS_SIZEOF_OID_REQUEST_REVISION_1, 0x8c, 0xec);

ICA_NDIS6_SIZE(sizeof(NDIS_OBJECT_HEADER), 4, 4);
ICA_NDIS6_SIZE(NDIS_SIZEOF_STATISTICS_INFO_REVISION_1, 0x98, 0x98);
ICA_NDIS6_SIZE(NDIS_SIZEOF_LINK_STATE_REVISION_1, 0x28, 0x28);

/* The RSS sizes follow from the documented member list (mingw's ntddndis.h
 * declares the same members); the SG list from mingw's wdm.h. */
ICA_NDIS6_SIZE(NDIS_SIZEOF_RSS_PROCESSOR_INFO_REVISION_1, 0x20, 0x20);
ICA_NDIS6_SIZE(NDIS_SIZEOF_RSS_PROCESSOR_INFO_REVISION_2, 0x28, 0x28);
ICA_NDIS6_SIZE(sizeof(NDIS_RSS_PROCESSOR), 8, 8);
ICA_NDIS6_OFFSET(SCATTER_GATHER_LIST, Elements, 0x08, 0x10);
ICA_NDIS6_SIZE(sizeof(SCATTER_GATHER_ELEMENT), 0x10, 0x18);

#undef ICA_NDIS6_OFFSET
#undef ICA_NDIS6_SIZE

#endif /* ICA_NDIS6_H */
