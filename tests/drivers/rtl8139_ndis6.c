/*
 * rtl8139_ndis6.sys - an NDIS 6.0 deserialized miniport for the Realtek
 * RTL8139(C) Fast Ethernet controller, written from the datasheet for ICA's
 * tests (host-linux/src/rtl8139.rs is the device model it runs against; the
 * hardware programming is the same as rtl8139_ndis5.c).
 *
 * I/O-port register access (BAR0), a 32K+16 receive ring with WRAP=1 (frames
 * past the end are written linearly into the 1536-byte tail), four 2K
 * transmit buffers in shared memory.
 *
 * Send: NBLs wait in a software queue while all four descriptors are busy
 * and are fed to the chip as TOK/TER frees descriptors.  Each NET_BUFFER that
 * gets a descriptor is mapped with NdisMAllocateNetBufferSGList; in
 * MiniportProcessSGList a frame whose list is one element with a 4-byte
 * aligned address (the chip's TSAD requirement) and at least the 60-byte
 * minimum (the chip does not pad) is sent in place: TSAD is pointed at the
 * NB's data (zero-copy).  Any other frame is copied into the descriptor's
 * transmit buffer (and padded).  The list is freed
 * (NdisMFreeNetBufferSGList) when the descriptor completes; an NBL completes
 * (NdisMSendNetBufferListsComplete) when the chip is done with its last NB.
 * Zero-copy and copied sends are counted (OID_ICA_RTL8139_TX_PATHS).
 * Interrupts: the ISR masks the chip and queues its DPC with NdisMQueueDpc
 * (the adapter as MiniportDpcContext); ResetEx queues it with NdisMQueueDpcEx
 * to pick up what arrived while the chip was reinitialized.
 * Receive: the interrupt DPC copies frames out of the ring into RX_NBLS
 * preallocated NBLs (one MDL over a 1536-byte slot each) and indicates them
 * in chains of up to RX_BATCH; ReturnNetBufferLists puts them back.  When
 * fewer than RX_RESERVE NBLs are left the chain is indicated with
 * NDIS_RECEIVE_FLAGS_RESOURCES and reclaimed as soon as the call returns.
 *
 * One spin lock (Lock) guards the adapter state, the send queue, the
 * descriptors, the receive ring and the free-NBL list; it is never held
 * across a call into NDIS that can call back into the driver.
 */
#include "ndis6.h"

#define RTL_TAG 0x36384352u /* 'RC86' in a pool dump */

/* Hooks a variant built from this file defines (rtlcrash_ndis6.c); empty here.
 * RTL_CONFIG_HOOK runs with the adapter's configuration open, RTL_ISR_HOOK
 * in the ISR once per interrupt the adapter claims (at DIRQL). */
#ifndef RTL_CONFIG_HOOK
#define RTL_CONFIG_HOOK(cfg)
#endif
#ifndef RTL_ISR_HOOK
#define RTL_ISR_HOOK()
#endif

/* Registers. */
#define R_IDR0 0x00
#define R_MAR0 0x08
#define R_TSD0 0x10
#define R_TSAD0 0x20
#define R_RBSTART 0x30
#define R_CR 0x37
#define R_CAPR 0x38
#define R_IMR 0x3C
#define R_ISR 0x3E
#define R_TCR 0x40
#define R_RCR 0x44
#define R_MPC 0x4C
#define R_9346CR 0x50
#define R_CONFIG1 0x52
#define R_MSR 0x58
#define R_BMCR 0x62

#define CR_BUFE 0x01
#define CR_TE 0x04
#define CR_RE 0x08
#define CR_RST 0x10

#define INT_ROK 0x0001
#define INT_RER 0x0002
#define INT_TOK 0x0004
#define INT_TER 0x0008
#define INT_RXOVW 0x0010
#define INT_LINKCHG 0x0020
#define INT_FOVW 0x0040
#define INT_SERR 0x8000
#define INT_MASK (INT_ROK | INT_RER | INT_TOK | INT_TER | INT_RXOVW | INT_LINKCHG | INT_FOVW | INT_SERR)

#define TSD_OWN 0x00002000u
#define TSD_TOK 0x00008000u
#define TSD_TABT 0x40000000u
#define TSD_ERTXTH (8u << 16) /* early TX threshold: 256 bytes */

#define RCR_AAP 0x01u
#define RCR_APM 0x02u
#define RCR_AM 0x04u
#define RCR_AB 0x08u
#define RCR_WRAP 0x80u
#define RCR_MXDMA_UNLIMITED (7u << 8)
#define RCR_RBLEN_32K (2u << 11)
#define RCR_RXFTH_NONE (7u << 13)
#define RCR_BASE (RCR_RBLEN_32K | RCR_WRAP | RCR_MXDMA_UNLIMITED | RCR_RXFTH_NONE)

#define TCR_IFG_STD (3u << 24)
#define TCR_MXDMA_2048 (7u << 8)

#define MSR_LINKB 0x04
#define MSR_SPEED_10 0x08

#define BMCR_FULL_DUPLEX 0x0100

#define RX_ROK 0x0001

#define RX_RING_LEN 32768u
#define RX_ALLOC_LEN (RX_RING_LEN + 16 + 1536)
#define TX_DESCS 4
#define TX_BUF_LEN 2048u
#define RX_NBLS 16
#define RX_BUF_LEN 1536u
#define RX_BATCH 8   /* NBLs chained into one indication at most */
#define RX_RESERVE 2 /* below this many free NBLs, lend them for the call only */

#define ETH_HEADER 14
#define ETH_MAX_FRAME 1514
#define ETH_MIN_FRAME 60
#define ETH_MTU (ETH_MAX_FRAME - ETH_HEADER)
#define MAX_MCAST 32

/* Private query: RTL_TX_PATHS, the send and DPC counters. */
#define OID_ICA_RTL8139_TX_PATHS 0xFF494301u

#define SPEED_100M 100000000ull
#define SPEED_10M 10000000ull

#define SUPPORTED_FILTERS                                                                     \
    (NDIS_PACKET_TYPE_DIRECTED | NDIS_PACKET_TYPE_MULTICAST | NDIS_PACKET_TYPE_ALL_MULTICAST | \
     NDIS_PACKET_TYPE_BROADCAST | NDIS_PACKET_TYPE_PROMISCUOUS)

/* What OID_GEN_STATISTICS reports (NDIS_STATISTICS_INFO.SupportedStatistics) ... */
#define STATS_VALID                                                                        \
    (NDIS_STATISTICS_FLAGS_VALID_DIRECTED_FRAMES_RCV |                                     \
     NDIS_STATISTICS_FLAGS_VALID_MULTICAST_FRAMES_RCV |                                    \
     NDIS_STATISTICS_FLAGS_VALID_BROADCAST_FRAMES_RCV | NDIS_STATISTICS_FLAGS_VALID_BYTES_RCV | \
     NDIS_STATISTICS_FLAGS_VALID_RCV_DISCARDS | NDIS_STATISTICS_FLAGS_VALID_RCV_ERROR |      \
     NDIS_STATISTICS_FLAGS_VALID_DIRECTED_FRAMES_XMIT |                                    \
     NDIS_STATISTICS_FLAGS_VALID_MULTICAST_FRAMES_XMIT |                                   \
     NDIS_STATISTICS_FLAGS_VALID_BROADCAST_FRAMES_XMIT | NDIS_STATISTICS_FLAGS_VALID_BYTES_XMIT | \
     NDIS_STATISTICS_FLAGS_VALID_XMIT_ERROR | NDIS_STATISTICS_FLAGS_VALID_XMIT_DISCARDS |    \
     NDIS_STATISTICS_FLAGS_VALID_DIRECTED_BYTES_RCV |                                      \
     NDIS_STATISTICS_FLAGS_VALID_MULTICAST_BYTES_RCV |                                     \
     NDIS_STATISTICS_FLAGS_VALID_BROADCAST_BYTES_RCV |                                     \
     NDIS_STATISTICS_FLAGS_VALID_DIRECTED_BYTES_XMIT |                                     \
     NDIS_STATISTICS_FLAGS_VALID_MULTICAST_BYTES_XMIT |                                    \
     NDIS_STATISTICS_FLAGS_VALID_BROADCAST_BYTES_XMIT)

/* ... and the same set as general-attributes SupportedStatistics bits. */
#define STATS_SUPPORTED                                                                      \
    (NDIS_STATISTICS_XMIT_OK_SUPPORTED | NDIS_STATISTICS_RCV_OK_SUPPORTED |                  \
     NDIS_STATISTICS_XMIT_ERROR_SUPPORTED | NDIS_STATISTICS_RCV_ERROR_SUPPORTED |            \
     NDIS_STATISTICS_RCV_NO_BUFFER_SUPPORTED | NDIS_STATISTICS_DIRECTED_BYTES_XMIT_SUPPORTED | \
     NDIS_STATISTICS_DIRECTED_FRAMES_XMIT_SUPPORTED |                                        \
     NDIS_STATISTICS_MULTICAST_BYTES_XMIT_SUPPORTED |                                        \
     NDIS_STATISTICS_MULTICAST_FRAMES_XMIT_SUPPORTED |                                       \
     NDIS_STATISTICS_BROADCAST_BYTES_XMIT_SUPPORTED |                                        \
     NDIS_STATISTICS_BROADCAST_FRAMES_XMIT_SUPPORTED |                                       \
     NDIS_STATISTICS_DIRECTED_BYTES_RCV_SUPPORTED | NDIS_STATISTICS_DIRECTED_FRAMES_RCV_SUPPORTED | \
     NDIS_STATISTICS_MULTICAST_BYTES_RCV_SUPPORTED |                                         \
     NDIS_STATISTICS_MULTICAST_FRAMES_RCV_SUPPORTED |                                        \
     NDIS_STATISTICS_BROADCAST_BYTES_RCV_SUPPORTED |                                         \
     NDIS_STATISTICS_BROADCAST_FRAMES_RCV_SUPPORTED | NDIS_STATISTICS_BYTES_RCV_SUPPORTED |   \
     NDIS_STATISTICS_BYTES_XMIT_SUPPORTED | NDIS_STATISTICS_RCV_DISCARDS_SUPPORTED |          \
     NDIS_STATISTICS_GEN_STATISTICS_SUPPORTED | NDIS_STATISTICS_XMIT_DISCARDS_SUPPORTED)

/* Frame kinds, by destination address: the index into RTL_COUNTS. */
enum { KIND_DIRECTED, KIND_MULTICAST, KIND_BROADCAST, KINDS };

typedef struct _RTL_COUNTS {
    ULONG64 Frames[KINDS], Bytes[KINDS];
} RTL_COUNTS;

/* NDIS 6 adapter states: Paused after initialization and after MiniportPause
 * completes, Running after MiniportRestart. */
typedef enum { RtlPaused, RtlRunning, RtlPausing } RTL_STATE;

/* A transmit descriptor: free, reserved for an NB whose scatter/gather list
 * is being built, given to the chip, or failed to start (retired without the
 * chip). */
typedef enum { TxFree, TxMapping, TxHw, TxFailed } RTL_TX_STATE;

/* The MiniportProcessSGList context of a descriptor. */
typedef struct _RTL_TX_SLOT {
    struct _RTL_ADAPTER *Adapter;
    ULONG Index;
} RTL_TX_SLOT, *PRTL_TX_SLOT;

/* OID_ICA_RTL8139_TX_PATHS. */
typedef struct _RTL_TX_PATHS {
    ULONG64 ZeroCopy;   /* frames the chip read from the NB's own memory */
    ULONG64 Copied;     /* frames copied into a transmit buffer */
    ULONG64 QueuedDpcs; /* DPCs run with the MiniportDpcContext of NdisMQueueDpc(Ex) */
} RTL_TX_PATHS;

typedef struct _RTL_ADAPTER {
    NDIS_HANDLE Handle; /* MiniportAdapterHandle */
    NDIS_HANDLE InterruptHandle, DmaHandle, RxPool;
    ULONG_PTR IoBase;
    UINT PortStart, PortLength;
    BOOLEAN PortsRegistered, LockAllocated;
    BOOLEAN IntrDisabled; /* set at DIRQL by RtlSyncMask: the DPC must not unmask */
    BOOLEAN Removed;      /* surprise-removed: the registers are gone */

    NDIS_SPIN_LOCK Lock;
    RTL_STATE State;

    PUCHAR RxRing;
    NDIS_PHYSICAL_ADDRESS RxRingPa;
    ULONG RxOffset;
    PUCHAR TxBufs;
    NDIS_PHYSICAL_ADDRESS TxBufsPa;
    PNET_BUFFER_LIST TxNbl[TX_DESCS]; /* owner of each descriptor in flight */
    PNET_BUFFER TxNb[TX_DESCS];
    PSCATTER_GATHER_LIST TxSgl[TX_DESCS]; /* freed when the descriptor completes */
    RTL_TX_STATE TxState[TX_DESCS];
    RTL_TX_SLOT TxSlot[TX_DESCS];
    PUCHAR SgBufs; /* TX_DESCS lists of SgListSize bytes */
    ULONG SgListSize;
    RTL_TX_PATHS Paths;
    ULONG TxKind[TX_DESCS], TxLen[TX_DESCS]; /* counted when the chip reports TOK */
    ULONG TxCur, TxDirty, TxBusy;
    ULONG TxDone, TxDoneAtCheck, HungChecks; /* CheckForHangEx watchdog */

    /* NBLs not yet fully handed to the chip, linked through NBL->Next;
     * SendNb is the next NB of SendHead to transmit. */
    PNET_BUFFER_LIST SendHead, SendTail;
    PNET_BUFFER SendNb;

    PUCHAR RxBufs;
    PMDL RxMdl[RX_NBLS];
    PNET_BUFFER_LIST RxNbl[RX_NBLS];
    ULONG RxFree[RX_NBLS];
    ULONG RxFreeCount;

    UCHAR PermanentAddress[6], CurrentAddress[6];
    UCHAR McList[MAX_MCAST][6];
    ULONG McCount;
    ULONG PacketFilter, Lookahead, SpeedDuplex;
    BOOLEAN LinkUp;

    RTL_COUNTS Xmit, Rcv;
    ULONG64 XmitError, XmitDiscards, RcvError, RcvNoBuffer, RcvDiscards;
} RTL_ADAPTER, *PRTL_ADAPTER;

/* Per-NBL bookkeeping in MiniportReserved[0]: on send, the number of its NBs
 * the chip has not finished; on receive, the NBL's index in RxNbl. */
static ULONG_PTR NblWord(PNET_BUFFER_LIST nbl)
{
    return (ULONG_PTR)NET_BUFFER_LIST_MINIPORT_RESERVED(nbl)[0];
}
static void SetNblWord(PNET_BUFFER_LIST nbl, ULONG_PTR v)
{
    NET_BUFFER_LIST_MINIPORT_RESERVED(nbl)[0] = (PVOID)v;
}

static NDIS_HANDLE RtlDriverHandle;

static const NDIS_OID RtlSupportedOids[] = {
    OID_GEN_SUPPORTED_LIST, OID_GEN_HARDWARE_STATUS, OID_GEN_MEDIA_SUPPORTED,
    OID_GEN_MEDIA_IN_USE, OID_GEN_PHYSICAL_MEDIUM, OID_GEN_MAXIMUM_LOOKAHEAD,
    OID_GEN_MAXIMUM_FRAME_SIZE, OID_GEN_LINK_SPEED, OID_GEN_TRANSMIT_BUFFER_SPACE,
    OID_GEN_RECEIVE_BUFFER_SPACE, OID_GEN_TRANSMIT_BLOCK_SIZE, OID_GEN_RECEIVE_BLOCK_SIZE,
    OID_GEN_VENDOR_ID, OID_GEN_VENDOR_DESCRIPTION, OID_GEN_VENDOR_DRIVER_VERSION,
    OID_GEN_CURRENT_PACKET_FILTER, OID_GEN_CURRENT_LOOKAHEAD, OID_GEN_DRIVER_VERSION,
    OID_GEN_MAXIMUM_TOTAL_SIZE, OID_GEN_MAC_OPTIONS, OID_GEN_MEDIA_CONNECT_STATUS,
    OID_GEN_MAXIMUM_SEND_PACKETS, OID_GEN_XMIT_OK, OID_GEN_RCV_OK, OID_GEN_XMIT_ERROR,
    OID_GEN_RCV_ERROR, OID_GEN_RCV_NO_BUFFER, OID_GEN_STATISTICS, OID_GEN_LINK_STATE,
    OID_802_3_PERMANENT_ADDRESS, OID_802_3_CURRENT_ADDRESS, OID_802_3_MULTICAST_LIST,
    OID_802_3_MAXIMUM_LIST_SIZE, OID_802_3_RCV_ERROR_ALIGNMENT, OID_802_3_XMIT_ONE_COLLISION,
    OID_802_3_XMIT_MORE_COLLISIONS, OID_ICA_RTL8139_TX_PATHS,
};

static const char RtlDescription[] = "ICA RTL8139 NDIS 6.0 test miniport";

/* Register access through the mapped I/O port range. */
static UCHAR Rd8(PRTL_ADAPTER a, ULONG r)
{
    UCHAR v;
    NdisRawReadPortUchar(a->IoBase + r, &v);
    return v;
}
static USHORT Rd16(PRTL_ADAPTER a, ULONG r)
{
    USHORT v;
    NdisRawReadPortUshort(a->IoBase + r, &v);
    return v;
}
static ULONG Rd32(PRTL_ADAPTER a, ULONG r)
{
    ULONG v;
    NdisRawReadPortUlong(a->IoBase + r, &v);
    return v;
}
static void Wr8(PRTL_ADAPTER a, ULONG r, UCHAR v) { NdisRawWritePortUchar(a->IoBase + r, v); }
static void Wr16(PRTL_ADAPTER a, ULONG r, USHORT v) { NdisRawWritePortUshort(a->IoBase + r, v); }
static void Wr32(PRTL_ADAPTER a, ULONG r, ULONG v) { NdisRawWritePortUlong(a->IoBase + r, v); }

static void RtlLock(PRTL_ADAPTER a, BOOLEAN dispatch)
{
    if (dispatch)
        NdisDprAcquireSpinLock(&a->Lock);
    else
        NdisAcquireSpinLock(&a->Lock);
}

static void RtlUnlock(PRTL_ADAPTER a, BOOLEAN dispatch)
{
    if (dispatch)
        NdisDprReleaseSpinLock(&a->Lock);
    else
        NdisReleaseSpinLock(&a->Lock);
}

static ULONG FrameKind(const UCHAR *dst)
{
    if ((dst[0] & dst[1] & dst[2] & dst[3] & dst[4] & dst[5]) == 0xFF)
        return KIND_BROADCAST;
    return (dst[0] & 1) ? KIND_MULTICAST : KIND_DIRECTED;
}

/* Top six bits of the big-endian Ethernet CRC: the MAR bit of a multicast address. */
static ULONG McBucket(const UCHAR *addr)
{
    ULONG crc = 0xFFFFFFFFu;
    for (int i = 0; i < 6; i++) {
        UCHAR b = addr[i];
        for (int j = 0; j < 8; j++) {
            ULONG carry = ((crc >> 31) ^ b) & 1;
            crc <<= 1;
            b >>= 1;
            if (carry)
                crc ^= 0x04C11DB7u;
        }
    }
    return crc >> 26;
}

static BOOLEAN RtlLinkUp(PRTL_ADAPTER a) { return (Rd8(a, R_MSR) & MSR_LINKB) == 0; }

static ULONG64 RtlLinkSpeed(PRTL_ADAPTER a)
{
    if (!a->LinkUp)
        return NDIS_LINK_SPEED_UNKNOWN;
    return (Rd8(a, R_MSR) & MSR_SPEED_10) ? SPEED_10M : SPEED_100M;
}

static void RtlFillLinkState(PRTL_ADAPTER a, PNDIS_LINK_STATE ls)
{
    NdisZeroMemory(ls, sizeof(*ls));
    ls->Header.Type = NDIS_OBJECT_TYPE_DEFAULT;
    ls->Header.Revision = NDIS_LINK_STATE_REVISION_1;
    ls->Header.Size = NDIS_SIZEOF_LINK_STATE_REVISION_1;
    ls->MediaConnectState = a->LinkUp ? MediaConnectStateConnected : MediaConnectStateDisconnected;
    if (a->LinkUp)
        ls->MediaDuplexState = (Rd16(a, R_BMCR) & BMCR_FULL_DUPLEX) ? MediaDuplexStateFull
                                                                    : MediaDuplexStateHalf;
    else
        ls->MediaDuplexState = MediaDuplexStateUnknown;
    ls->XmitLinkSpeed = ls->RcvLinkSpeed = RtlLinkSpeed(a);
    ls->PauseFunctions = NdisPauseFunctionsUnsupported;
    ls->AutoNegotiationFlags = NDIS_LINK_STATE_XMIT_LINK_SPEED_AUTO_NEGOTIATED |
                               NDIS_LINK_STATE_RCV_LINK_SPEED_AUTO_NEGOTIATED |
                               NDIS_LINK_STATE_DUPLEX_AUTO_NEGOTIATED;
}

/* NDIS_STATUS_LINK_STATE with the current NDIS_LINK_STATE (<= DISPATCH_LEVEL). */
static void RtlIndicateLinkState(PRTL_ADAPTER a)
{
    NDIS_LINK_STATE ls;
    NDIS_STATUS_INDICATION ind;

    RtlFillLinkState(a, &ls);
    NdisZeroMemory(&ind, sizeof(ind));
    ind.Header.Type = NDIS_OBJECT_TYPE_STATUS_INDICATION;
    ind.Header.Revision = NDIS_STATUS_INDICATION_REVISION_1;
    ind.Header.Size = NDIS_SIZEOF_STATUS_INDICATION_REVISION_1;
    ind.SourceHandle = a->Handle;
    ind.PortNumber = NDIS_DEFAULT_PORT_NUMBER;
    ind.StatusCode = NDIS_STATUS_LINK_STATE;
    ind.StatusBuffer = &ls;
    ind.StatusBufferSize = sizeof(ls);
    NdisMIndicateStatusEx(a->Handle, &ind);
}

/* Program RCR and MAR0-7 from the packet filter and the multicast list. */
static void RtlApplyFilter(PRTL_ADAPTER a)
{
    ULONG rcr = RCR_BASE, mar[2] = {0, 0};
    ULONG f = a->PacketFilter;

    if (f & NDIS_PACKET_TYPE_DIRECTED)
        rcr |= RCR_APM;
    if (f & NDIS_PACKET_TYPE_BROADCAST)
        rcr |= RCR_AB;
    if (f & (NDIS_PACKET_TYPE_ALL_MULTICAST | NDIS_PACKET_TYPE_PROMISCUOUS)) {
        rcr |= RCR_AM;
        mar[0] = mar[1] = 0xFFFFFFFFu;
    } else if (f & NDIS_PACKET_TYPE_MULTICAST) {
        rcr |= RCR_AM;
        for (ULONG i = 0; i < a->McCount; i++) {
            ULONG bit = McBucket(a->McList[i]);
            mar[bit >> 5] |= 1u << (bit & 31);
        }
    }
    if (f & NDIS_PACKET_TYPE_PROMISCUOUS)
        rcr |= RCR_AAP | RCR_APM | RCR_AB;
    Wr32(a, R_MAR0, mar[0]);
    Wr32(a, R_MAR0 + 4, mar[1]);
    Wr32(a, R_RCR, rcr);
}

/* Receiver back to the start of the ring (after a reset or a corrupt record). */
static void RtlRxRestart(PRTL_ADAPTER a)
{
    Wr8(a, R_CR, CR_TE);
    Wr8(a, R_CR, CR_RE | CR_TE);
    Wr32(a, R_RBSTART, NdisGetPhysicalAddressLow(a->RxRingPa));
    RtlApplyFilter(a);
    a->RxOffset = 0;
    Wr16(a, R_CAPR, (USHORT)(0 - 16));
}

/* Soft reset, then bring the chip up (interrupts stay masked): station
 * address, ring, TX, filter, RE|TE. */
static BOOLEAN RtlHwInit(PRTL_ADAPTER a)
{
    int i;

    Wr16(a, R_IMR, 0);
    Wr8(a, R_CR, CR_RST);
    for (i = 0; i < 1000 && (Rd8(a, R_CR) & CR_RST); i++)
        NdisStallExecution(10);
    if (i == 1000)
        return FALSE;

    /* Station address: IDR0-5, written with 32-bit accesses while unlocked. */
    Wr8(a, R_9346CR, 0xC0);
    Wr8(a, R_CONFIG1, 0); /* power on, LWAKE active high */
    Wr32(a, R_IDR0, a->CurrentAddress[0] | (ULONG)a->CurrentAddress[1] << 8 |
                        (ULONG)a->CurrentAddress[2] << 16 | (ULONG)a->CurrentAddress[3] << 24);
    Wr32(a, R_IDR0 + 4, a->CurrentAddress[4] | (ULONG)a->CurrentAddress[5] << 8);
    Wr8(a, R_9346CR, 0);

    RtlRxRestart(a);
    for (i = 0; i < TX_DESCS; i++)
        Wr32(a, R_TSAD0 + 4 * i, NdisGetPhysicalAddressLow(a->TxBufsPa) + i * TX_BUF_LEN);
    a->TxCur = a->TxDirty = a->TxBusy = 0;
    Wr32(a, R_TCR, TCR_IFG_STD | TCR_MXDMA_2048);
    Wr32(a, R_MPC, 0);
    Wr16(a, R_ISR, 0xFFFF);
    a->LinkUp = RtlLinkUp(a);
    return TRUE;
}

/* Interrupt mask changes that must not interleave with the ISR, run at
 * DIRQL by NdisMSynchronizeWithInterruptEx.  Mask: keep interrupts off (halt,
 * reset) even against the DPC's unmask; Unmask: back on after init/reset;
 * DpcUnmask: the DPC's re-enable, unless masked meanwhile. */
static BOOLEAN NTAPI RtlSyncMask(NDIS_HANDLE Context)
{
    PRTL_ADAPTER a = Context;

    a->IntrDisabled = TRUE;
    Wr16(a, R_IMR, 0);
    return TRUE;
}

static BOOLEAN NTAPI RtlSyncUnmask(NDIS_HANDLE Context)
{
    PRTL_ADAPTER a = Context;

    a->IntrDisabled = FALSE;
    Wr16(a, R_IMR, INT_MASK);
    return TRUE;
}

static BOOLEAN NTAPI RtlSyncDpcUnmask(NDIS_HANDLE Context)
{
    PRTL_ADAPTER a = Context;

    if (!a->IntrDisabled)
        Wr16(a, R_IMR, INT_MASK);
    return TRUE;
}

/* ---- Send ---- */

/* Copy the first max bytes of the data of one NET_BUFFER (DataLength bytes
 * from CurrentMdl at CurrentMdlOffset) to dst; 0 if an MDL cannot be mapped. */
static ULONG RtlCopyNb(PNET_BUFFER nb, PUCHAR dst, ULONG max)
{
    PMDL mdl = NET_BUFFER_CURRENT_MDL(nb);
    ULONG offset = NET_BUFFER_CURRENT_MDL_OFFSET(nb);
    ULONG left = NET_BUFFER_DATA_LENGTH(nb), copied = 0;

    if (left > max)
        left = max;
    while (left && mdl) {
        PUCHAR va;
        ULONG len;

        NdisQueryMdl(mdl, &va, &len, NormalPagePriority);
        if (!va)
            return 0;
        if (len > offset) {
            len -= offset;
            if (len > left)
                len = left;
            NdisMoveMemory(dst + copied, va + offset, len);
            copied += len;
            left -= len;
            offset = 0;
        } else {
            offset -= len;
        }
        NdisGetNextMdl(mdl, &mdl);
    }
    return left ? 0 : copied;
}

/* One NB of an NBL is finished (sent, failed or aborted); append the NBL to
 * *done when it was the last.  Under Lock. */
static void RtlNbFinished(PNET_BUFFER_LIST nbl, NDIS_STATUS status, PNET_BUFFER_LIST **done)
{
    if (status != NDIS_STATUS_SUCCESS)
        NET_BUFFER_LIST_STATUS(nbl) = status;
    SetNblWord(nbl, NblWord(nbl) - 1);
    if (NblWord(nbl) == 0) {
        NET_BUFFER_LIST_NEXT_NBL(nbl) = NULL;
        **done = nbl;
        *done = &NET_BUFFER_LIST_NEXT_NBL(nbl);
    }
}

/* Start descriptor n, reserved for TxNb[n]: in place when its scatter/gather
 * list allows (one element, 4-byte aligned, a full-size frame), else from a
 * copy in the transmit buffer.  A frame that cannot be read fails the
 * descriptor (TxDone retires it).  Under Lock. */
static void RtlStartTx(PRTL_ADAPTER a, ULONG n, PSCATTER_GATHER_LIST sgl)
{
    PNET_BUFFER nb = a->TxNb[n];
    ULONG len = NET_BUFFER_DATA_LENGTH(nb);
    ULONG offset = NET_BUFFER_CURRENT_MDL_OFFSET(nb); /* the list starts at CurrentMdl */
    UCHAR dst[6];
    ULONG pa;

    a->TxSgl[n] = sgl;
    if (sgl && sgl->NumberOfElements == 1 && len >= ETH_MIN_FRAME &&
        sgl->Elements[0].Length >= offset + len && sgl->Elements[0].Address.HighPart == 0 &&
        ((sgl->Elements[0].Address.LowPart + offset) & 3) == 0 && RtlCopyNb(nb, dst, 6) == 6) {
        pa = sgl->Elements[0].Address.LowPart + offset;
        a->TxKind[n] = FrameKind(dst);
        a->Paths.ZeroCopy++;
    } else {
        PUCHAR buf = a->TxBufs + n * TX_BUF_LEN;

        len = RtlCopyNb(nb, buf, TX_BUF_LEN);
        if (!len) {
            a->XmitError++;
            a->TxState[n] = TxFailed;
            return;
        }
        a->TxKind[n] = FrameKind(buf);
        if (len < ETH_MIN_FRAME)
            NdisZeroMemory(buf + len, ETH_MIN_FRAME - len);
        pa = NdisGetPhysicalAddressLow(a->TxBufsPa) + n * TX_BUF_LEN;
        a->Paths.Copied++;
    }
    a->TxLen[n] = len;
    a->TxState[n] = TxHw;
    Wr32(a, R_TSAD0 + 4 * n, pa);
    /* Writing the size with OWN clear starts the transmission. */
    Wr32(a, R_TSD0 + 4 * n, TSD_ERTXTH | (len < ETH_MIN_FRAME ? ETH_MIN_FRAME : len));
}

/* The scatter/gather list of a descriptor's NB (DISPATCH_LEVEL). */
static VOID NTAPI RtlProcessSgList(PDEVICE_OBJECT Pdo, PVOID Reserved, PSCATTER_GATHER_LIST Sgl,
                                   PVOID Context)
{
    PRTL_TX_SLOT slot = Context;
    PRTL_ADAPTER a = slot->Adapter;

    (void)Pdo;
    (void)Reserved;
    NdisDprAcquireSpinLock(&a->Lock);
    RtlStartTx(a, slot->Index, Sgl);
    NdisDprReleaseSpinLock(&a->Lock);
}

/* Reserve free descriptors for queued NBs, in order; the indices go to
 * slots.  Under Lock. */
static ULONG RtlReserveSends(PRTL_ADAPTER a, ULONG *slots)
{
    ULONG count = 0;

    while (a->TxBusy < TX_DESCS && a->SendHead) {
        PNET_BUFFER_LIST nbl = a->SendHead;
        ULONG n = a->TxCur;

        a->TxNbl[n] = nbl;
        a->TxNb[n] = a->SendNb;
        a->TxSgl[n] = NULL;
        a->TxState[n] = TxMapping;
        a->TxCur = (n + 1) % TX_DESCS;
        a->TxBusy++;
        slots[count++] = n;
        /* Advance the queue past this NB. */
        a->SendNb = NET_BUFFER_NEXT_NB(a->SendNb);
        if (!a->SendNb) {
            a->SendHead = NET_BUFFER_LIST_NEXT_NBL(nbl);
            if (!a->SendHead)
                a->SendTail = NULL;
            else
                a->SendNb = NET_BUFFER_LIST_FIRST_NB(a->SendHead);
        }
    }
    return count;
}

static void RtlTxDone(PRTL_ADAPTER a, PNET_BUFFER_LIST **done);

/* Feed queued NBs to free descriptors: reserve them under Lock, then map each
 * NB (its MiniportProcessSGList starts the descriptor; without a list the
 * frame is copied), then retire descriptors that failed to start.  Called
 * without Lock; NdisMAllocateNetBufferSGList runs at DISPATCH_LEVEL. */
static void RtlKickSends(PRTL_ADAPTER a, BOOLEAN dispatch, PNET_BUFFER_LIST **done)
{
    ULONG slots[TX_DESCS], count;
    KIRQL old = DISPATCH_LEVEL;

    if (!dispatch)
        KeRaiseIrql(DISPATCH_LEVEL, &old);
    NdisDprAcquireSpinLock(&a->Lock);
    count = RtlReserveSends(a, slots);
    NdisDprReleaseSpinLock(&a->Lock);
    for (ULONG i = 0; i < count; i++) {
        ULONG n = slots[i];
        NDIS_STATUS status = NdisMAllocateNetBufferSGList(
            a->DmaHandle, a->TxNb[n], &a->TxSlot[n], NDIS_SG_LIST_WRITE_TO_DEVICE,
            a->SgBufs + n * a->SgListSize, a->SgListSize);

        if (status != NDIS_STATUS_SUCCESS) {
            NdisDprAcquireSpinLock(&a->Lock);
            RtlStartTx(a, n, NULL);
            NdisDprReleaseSpinLock(&a->Lock);
        }
    }
    if (count) {
        NdisDprAcquireSpinLock(&a->Lock);
        RtlTxDone(a, done);
        NdisDprReleaseSpinLock(&a->Lock);
    }
    if (!dispatch)
        KeLowerIrql(old);
}

/* NDIS_STATUS_SUCCESS and the NB count if every NB is a valid Ethernet frame. */
static NDIS_STATUS RtlCheckNbl(PNET_BUFFER_LIST nbl, ULONG *count)
{
    PNET_BUFFER nb;

    *count = 0;
    for (nb = NET_BUFFER_LIST_FIRST_NB(nbl); nb; nb = NET_BUFFER_NEXT_NB(nb)) {
        if (NET_BUFFER_DATA_LENGTH(nb) < ETH_HEADER || NET_BUFFER_DATA_LENGTH(nb) > ETH_MAX_FRAME)
            return NDIS_STATUS_INVALID_LENGTH;
        (*count)++;
    }
    return *count ? NDIS_STATUS_SUCCESS : NDIS_STATUS_INVALID_PACKET;
}

static VOID NTAPI RtlSendNetBufferLists(NDIS_HANDLE Context, PNET_BUFFER_LIST Nbls,
                                        NDIS_PORT_NUMBER PortNumber, ULONG SendFlags)
{
    PRTL_ADAPTER a = Context;
    BOOLEAN dispatch = NDIS_TEST_SEND_AT_DISPATCH_LEVEL(SendFlags);
    PNET_BUFFER_LIST nbl, next, done = NULL, *doneTail = &done;

    (void)PortNumber; /* only the default port exists */
    RtlLock(a, dispatch);
    for (nbl = Nbls; nbl; nbl = next) {
        ULONG count = 0;
        NDIS_STATUS status = a->State == RtlRunning ? RtlCheckNbl(nbl, &count) : NDIS_STATUS_PAUSED;

        next = NET_BUFFER_LIST_NEXT_NBL(nbl);
        NET_BUFFER_LIST_NEXT_NBL(nbl) = NULL;
        NET_BUFFER_LIST_STATUS(nbl) = status;
        if (status != NDIS_STATUS_SUCCESS) {
            if (status != NDIS_STATUS_PAUSED)
                a->XmitDiscards++;
            *doneTail = nbl;
            doneTail = &NET_BUFFER_LIST_NEXT_NBL(nbl);
            continue;
        }
        SetNblWord(nbl, count);
        if (a->SendTail) {
            NET_BUFFER_LIST_NEXT_NBL(a->SendTail) = nbl;
        } else {
            a->SendHead = nbl;
            a->SendNb = NET_BUFFER_LIST_FIRST_NB(nbl);
        }
        a->SendTail = nbl;
    }
    RtlUnlock(a, dispatch);
    RtlKickSends(a, dispatch, &doneTail);
    if (done)
        NdisMSendNetBufferListsComplete(a->Handle, done,
                                        dispatch ? NDIS_SEND_COMPLETE_FLAGS_DISPATCH_LEVEL : 0);
}

/* Complete with NDIS_STATUS_SEND_ABORTED the queued NBLs that carry CancelId,
 * except a head NBL of which some NBs already reached the chip. */
static VOID NTAPI RtlCancelSend(NDIS_HANDLE Context, PVOID CancelId)
{
    PRTL_ADAPTER a = Context;
    PNET_BUFFER_LIST done = NULL, *doneTail = &done, keep = NULL, *keepTail = &keep;
    PNET_BUFFER_LIST head, nbl, next;
    BOOLEAN headStarted;

    NdisAcquireSpinLock(&a->Lock);
    head = a->SendHead;
    headStarted = head && a->SendNb != NET_BUFFER_LIST_FIRST_NB(head);
    a->SendTail = NULL;
    for (nbl = head; nbl; nbl = next) {
        next = NET_BUFFER_LIST_NEXT_NBL(nbl);
        NET_BUFFER_LIST_NEXT_NBL(nbl) = NULL;
        if ((nbl == head && headStarted) || NDIS_GET_NET_BUFFER_LIST_CANCEL_ID(nbl) != CancelId) {
            *keepTail = nbl;
            keepTail = &NET_BUFFER_LIST_NEXT_NBL(nbl);
            a->SendTail = nbl;
        } else {
            NET_BUFFER_LIST_STATUS(nbl) = NDIS_STATUS_SEND_ABORTED;
            *doneTail = nbl;
            doneTail = &NET_BUFFER_LIST_NEXT_NBL(nbl);
        }
    }
    a->SendHead = keep;
    if (!headStarted)
        a->SendNb = keep ? NET_BUFFER_LIST_FIRST_NB(keep) : NULL;
    NdisReleaseSpinLock(&a->Lock);
    if (done)
        NdisMSendNetBufferListsComplete(a->Handle, done,
                                        KeGetCurrentIrql() == DISPATCH_LEVEL
                                            ? NDIS_SEND_COMPLETE_FLAGS_DISPATCH_LEVEL
                                            : 0);
}

/* Retire, in order, the descriptors the chip has finished with (OWN set with
 * TOK or TABT) and those that failed to start; free their scatter/gather
 * lists.  Under Lock. */
static void RtlTxDone(PRTL_ADAPTER a, PNET_BUFFER_LIST **done)
{
    while (a->TxBusy) {
        ULONG n = a->TxDirty;
        PNET_BUFFER_LIST nbl = a->TxNbl[n];
        NDIS_STATUS status = NDIS_STATUS_RESOURCES; /* TxFailed: the frame was unreadable */

        if (a->TxState[n] == TxMapping)
            break;
        if (a->TxState[n] == TxHw) {
            ULONG tsd = Rd32(a, R_TSD0 + 4 * n);

            if (!(tsd & TSD_OWN) || !(tsd & (TSD_TOK | TSD_TABT)))
                break;
            if (tsd & TSD_TOK) {
                a->Xmit.Frames[a->TxKind[n]]++;
                a->Xmit.Bytes[a->TxKind[n]] += a->TxLen[n];
                status = NDIS_STATUS_SUCCESS;
            } else {
                a->XmitError++;
                status = NDIS_STATUS_FAILURE;
            }
        }
        if (a->TxSgl[n])
            NdisMFreeNetBufferSGList(a->DmaHandle, a->TxSgl[n], a->TxNb[n]);
        a->TxSgl[n] = NULL;
        a->TxNbl[n] = NULL;
        a->TxNb[n] = NULL;
        a->TxState[n] = TxFree;
        a->TxDirty = (n + 1) % TX_DESCS;
        a->TxBusy--;
        a->TxDone++;
        RtlNbFinished(nbl, status, done);
    }
}

/* Finish a pending MiniportPause once nothing is outstanding. */
static void RtlCheckPauseDone(PRTL_ADAPTER a, BOOLEAN dispatch)
{
    BOOLEAN complete = FALSE;

    RtlLock(a, dispatch);
    if (a->State == RtlPausing && !a->TxBusy && !a->SendHead && a->RxFreeCount == RX_NBLS) {
        a->State = RtlPaused;
        complete = TRUE;
    }
    RtlUnlock(a, dispatch);
    if (complete)
        NdisMPauseComplete(a->Handle);
}

/* ---- Receive ---- */

/* Walk the receive ring from RxOffset to the chip's write pointer, indicating
 * the frames in chains of up to RX_BATCH NBLs.  DPC (DISPATCH_LEVEL). */
static void RtlRxDone(PRTL_ADAPTER a)
{
    int budget = 64;
    BOOLEAN more = TRUE;

    while (more) {
        PNET_BUFFER_LIST head = NULL, *tail = &head;
        ULONG taken[RX_BATCH], count = 0;
        BOOLEAN lend = FALSE;

        NdisDprAcquireSpinLock(&a->Lock);
        while ((more = !(Rd8(a, R_CR) & CR_BUFE) && budget > 0) && count < RX_BATCH && !lend) {
            PUCHAR rec = a->RxRing + a->RxOffset;
            USHORT status = rec[0] | rec[1] << 8;
            USHORT len = rec[2] | rec[3] << 8;
            ULONG flen = len - 4;

            budget--;
            if (!(status & RX_ROK) || len < ETH_HEADER + 4 || len > ETH_MAX_FRAME + 4) {
                /* A bad header: the ring is out of sync, restart the receiver. */
                a->RcvError++;
                RtlRxRestart(a);
                budget = 0; /* what follows is resynchronized on the next interrupt */
                continue;
            }
            if (a->State != RtlRunning) {
                a->RcvDiscards++; /* NDIS 6: nothing is indicated unless Running */
            } else if (a->RxFreeCount == 0) {
                a->RcvNoBuffer++;
            } else {
                ULONG i = a->RxFree[--a->RxFreeCount];
                PNET_BUFFER_LIST nbl = a->RxNbl[i];
                ULONG kind = FrameKind(rec + 4);

                /* WRAP=1: a record that crosses the end continues linearly past it. */
                NdisMoveMemory(a->RxBufs + i * RX_BUF_LEN, rec + 4, flen);
                NET_BUFFER_DATA_LENGTH(NET_BUFFER_LIST_FIRST_NB(nbl)) = flen;
                NET_BUFFER_LIST_STATUS(nbl) = NDIS_STATUS_SUCCESS;
                NET_BUFFER_LIST_NEXT_NBL(nbl) = NULL;
                *tail = nbl;
                tail = &NET_BUFFER_LIST_NEXT_NBL(nbl);
                taken[count++] = i;
                a->Rcv.Frames[kind]++;
                a->Rcv.Bytes[kind] += flen;
                lend = a->RxFreeCount < RX_RESERVE;
            }
            a->RxOffset = (a->RxOffset + len + 4 + 3) & ~3u;
            a->RxOffset %= RX_RING_LEN;
            Wr16(a, R_CAPR, (USHORT)(a->RxOffset - 16));
        }
        NdisDprReleaseSpinLock(&a->Lock);
        if (!count)
            break;
        NdisMIndicateReceiveNetBufferLists(a->Handle, head, NDIS_DEFAULT_PORT_NUMBER, count,
                                           NDIS_RECEIVE_FLAGS_DISPATCH_LEVEL |
                                               (lend ? NDIS_RECEIVE_FLAGS_RESOURCES : 0));
        if (lend) {
            /* Lent for the call only: they are ours again. */
            NdisDprAcquireSpinLock(&a->Lock);
            for (ULONG k = 0; k < count; k++)
                a->RxFree[a->RxFreeCount++] = taken[k];
            NdisDprReleaseSpinLock(&a->Lock);
        }
    }
}

static VOID NTAPI RtlReturnNetBufferLists(NDIS_HANDLE Context, PNET_BUFFER_LIST Nbls,
                                          ULONG ReturnFlags)
{
    PRTL_ADAPTER a = Context;
    BOOLEAN dispatch = NDIS_TEST_RETURN_AT_DISPATCH_LEVEL(ReturnFlags);
    PNET_BUFFER_LIST nbl, next;

    RtlLock(a, dispatch);
    for (nbl = Nbls; nbl; nbl = next) {
        next = NET_BUFFER_LIST_NEXT_NBL(nbl);
        NET_BUFFER_LIST_NEXT_NBL(nbl) = NULL;
        a->RxFree[a->RxFreeCount++] = (ULONG)NblWord(nbl);
    }
    RtlUnlock(a, dispatch);
    RtlCheckPauseDone(a, dispatch);
}

/* ---- Interrupt ---- */

static BOOLEAN NTAPI RtlIsr(NDIS_HANDLE Context, PBOOLEAN QueueDefaultInterruptDpc,
                            PULONG TargetProcessors)
{
    PRTL_ADAPTER a = Context;
    USHORT isr = Rd16(a, R_ISR);

    *TargetProcessors = 0;
    if (!(isr & INT_MASK) || isr == 0xFFFF) {
        *QueueDefaultInterruptDpc = FALSE;
        return FALSE;
    }
    RTL_ISR_HOOK();
    Wr16(a, R_IMR, 0); /* masked until the DPC has run */
    /* The DPC on this processor (bit 0), told which adapter it serves. */
    *QueueDefaultInterruptDpc = FALSE;
    NdisMQueueDpc(a->InterruptHandle, 0, 1, a);
    return TRUE;
}

static VOID NTAPI RtlInterruptDpc(NDIS_HANDLE Context, PVOID MiniportDpcContext,
                                  PVOID NdisReserved1, PVOID NdisReserved2)
{
    PRTL_ADAPTER a = Context;
    PNET_BUFFER_LIST done = NULL, *doneTail = &done;
    USHORT isr;

    (void)NdisReserved1;
    (void)NdisReserved2;
    if (MiniportDpcContext == a) {
        NdisDprAcquireSpinLock(&a->Lock);
        a->Paths.QueuedDpcs++;
        NdisDprReleaseSpinLock(&a->Lock);
    }
    while ((isr = Rd16(a, R_ISR) & INT_MASK) != 0) {
        Wr16(a, R_ISR, isr);
        if (isr & (INT_TOK | INT_TER)) {
            NdisDprAcquireSpinLock(&a->Lock);
            RtlTxDone(a, &doneTail);
            NdisDprReleaseSpinLock(&a->Lock);
            RtlKickSends(a, TRUE, &doneTail);
        }
        if (isr & (INT_ROK | INT_RER | INT_RXOVW | INT_FOVW)) {
            if (isr & (INT_RER | INT_RXOVW | INT_FOVW)) {
                NdisDprAcquireSpinLock(&a->Lock);
                a->RcvError++;
                NdisDprReleaseSpinLock(&a->Lock);
            }
            RtlRxDone(a);
        }
        if (isr & INT_LINKCHG) {
            BOOLEAN up = RtlLinkUp(a);
            if (up != a->LinkUp) {
                a->LinkUp = up;
                RtlIndicateLinkState(a);
            }
        }
    }
    if (done)
        NdisMSendNetBufferListsComplete(a->Handle, done, NDIS_SEND_COMPLETE_FLAGS_DISPATCH_LEVEL);
    RtlCheckPauseDone(a, TRUE);
    NdisMSynchronizeWithInterruptEx(a->InterruptHandle, 0, RtlSyncDpcUnmask, a);
}

static VOID NTAPI RtlDisableInterrupt(NDIS_HANDLE Context)
{
    PRTL_ADAPTER a = Context;

    Wr16(a, R_IMR, 0);
}

static VOID NTAPI RtlEnableInterrupt(NDIS_HANDLE Context)
{
    PRTL_ADAPTER a = Context;

    if (!a->IntrDisabled)
        Wr16(a, R_IMR, INT_MASK);
}

/* ---- Initialization and teardown ---- */

static void RtlFreeAll(PRTL_ADAPTER a)
{
    if (a->InterruptHandle)
        NdisMDeregisterInterruptEx(a->InterruptHandle);
    for (int i = 0; i < RX_NBLS; i++) {
        if (a->RxNbl[i])
            NdisFreeNetBufferList(a->RxNbl[i]);
        if (a->RxMdl[i])
            NdisFreeMdl(a->RxMdl[i]);
    }
    if (a->RxPool)
        NdisFreeNetBufferListPool(a->RxPool);
    if (a->RxBufs)
        NdisFreeMemory(a->RxBufs, 0, 0);
    if (a->SgBufs)
        NdisFreeMemory(a->SgBufs, 0, 0);
    if (a->TxBufs)
        NdisMFreeSharedMemory(a->Handle, TX_DESCS * TX_BUF_LEN, FALSE, a->TxBufs, a->TxBufsPa);
    if (a->RxRing)
        NdisMFreeSharedMemory(a->Handle, RX_ALLOC_LEN, FALSE, a->RxRing, a->RxRingPa);
    if (a->DmaHandle)
        NdisMDeregisterScatterGatherDma(a->DmaHandle);
    if (a->PortsRegistered)
        NdisMDeregisterIoPortRange(a->Handle, a->PortStart, a->PortLength, (PVOID)a->IoBase);
    if (a->LockAllocated)
        NdisFreeSpinLock(&a->Lock);
    NdisFreeMemory(a, 0, 0);
}

static NDIS_STATUS RtlSetRegistrationAttributes(PRTL_ADAPTER a)
{
    NDIS_MINIPORT_ADAPTER_REGISTRATION_ATTRIBUTES reg;

    NdisZeroMemory(&reg, sizeof(reg));
    reg.Header.Type = NDIS_OBJECT_TYPE_MINIPORT_ADAPTER_REGISTRATION_ATTRIBUTES;
    reg.Header.Revision = NDIS_MINIPORT_ADAPTER_REGISTRATION_ATTRIBUTES_REVISION_1;
    reg.Header.Size = NDIS_SIZEOF_MINIPORT_ADAPTER_REGISTRATION_ATTRIBUTES_REVISION_1;
    reg.MiniportAdapterContext = a;
    reg.AttributeFlags = NDIS_MINIPORT_ATTRIBUTES_HARDWARE_DEVICE | NDIS_MINIPORT_ATTRIBUTES_BUS_MASTER;
    reg.CheckForHangTimeInSeconds = 0; /* NDIS default */
    reg.InterfaceType = NdisInterfacePci;
    return NdisMSetMiniportAttributes(a->Handle, (PNDIS_MINIPORT_ADAPTER_ATTRIBUTES)&reg);
}

static NDIS_STATUS RtlSetGeneralAttributes(PRTL_ADAPTER a)
{
    NDIS_MINIPORT_ADAPTER_GENERAL_ATTRIBUTES gen;
    NDIS_LINK_STATE ls;

    RtlFillLinkState(a, &ls);
    NdisZeroMemory(&gen, sizeof(gen));
    gen.Header.Type = NDIS_OBJECT_TYPE_MINIPORT_ADAPTER_GENERAL_ATTRIBUTES;
    gen.Header.Revision = NDIS_MINIPORT_ADAPTER_GENERAL_ATTRIBUTES_REVISION_1;
    gen.Header.Size = NDIS_SIZEOF_MINIPORT_ADAPTER_GENERAL_ATTRIBUTES_REVISION_1;
    gen.MediaType = NdisMedium802_3;
    gen.PhysicalMediumType = NdisPhysicalMedium802_3;
    gen.MtuSize = ETH_MTU;
    gen.MaxXmitLinkSpeed = gen.MaxRcvLinkSpeed = SPEED_100M;
    gen.XmitLinkSpeed = ls.XmitLinkSpeed;
    gen.RcvLinkSpeed = ls.RcvLinkSpeed;
    gen.MediaConnectState = ls.MediaConnectState;
    gen.MediaDuplexState = ls.MediaDuplexState;
    gen.LookaheadSize = a->Lookahead;
    gen.MacOptions = NDIS_MAC_OPTION_COPY_LOOKAHEAD_DATA | NDIS_MAC_OPTION_TRANSFERS_NOT_PEND |
                     NDIS_MAC_OPTION_NO_LOOPBACK;
    gen.SupportedPacketFilters = SUPPORTED_FILTERS;
    gen.MaxMulticastListSize = MAX_MCAST;
    gen.MacAddressLength = 6;
    NdisMoveMemory(gen.PermanentMacAddress, a->PermanentAddress, 6);
    NdisMoveMemory(gen.CurrentMacAddress, a->CurrentAddress, 6);
    gen.AccessType = NET_IF_ACCESS_BROADCAST;
    gen.DirectionType = NET_IF_DIRECTION_SENDRECEIVE;
    gen.ConnectionType = NET_IF_CONNECTION_DEDICATED;
    gen.IfType = IF_TYPE_ETHERNET_CSMACD;
    gen.IfConnectorPresent = TRUE;
    gen.SupportedStatistics = STATS_SUPPORTED;
    gen.SupportedPauseFunctions = NdisPauseFunctionsUnsupported;
    gen.SupportedOidList = (PNDIS_OID)RtlSupportedOids;
    gen.SupportedOidListLength = sizeof(RtlSupportedOids);
    gen.AutoNegotiationFlags = ls.AutoNegotiationFlags;
    return NdisMSetMiniportAttributes(a->Handle, (PNDIS_MINIPORT_ADAPTER_ATTRIBUTES)&gen);
}

/* The PCI vendor and device ID in configuration space must be 10EC:8139. */
static NDIS_STATUS RtlCheckPciId(PRTL_ADAPTER a)
{
    USHORT ids[2];

    if (NdisMGetBusData(a->Handle, PCI_WHICHSPACE_CONFIG, 0, ids, sizeof(ids)) != sizeof(ids))
        return NDIS_STATUS_ADAPTER_NOT_FOUND;
    if (ids[0] != 0x10EC || ids[1] != 0x8139) {
        DbgPrint("rtl8139_ndis6: PCI %04x:%04x is not an RTL8139\n", ids[0], ids[1]);
        return NDIS_STATUS_ADAPTER_NOT_FOUND;
    }
    return NDIS_STATUS_SUCCESS;
}

/* *SpeedDuplex and NetworkAddress from the adapter's registry key. */
static void RtlReadConfig(PRTL_ADAPTER a)
{
    NDIS_CONFIGURATION_OBJECT obj;
    NDIS_STATUS status;
    NDIS_HANDLE cfg;
    NDIS_STRING kw;
    PNDIS_CONFIGURATION_PARAMETER param;
    PVOID addr;
    UINT len;

    NdisZeroMemory(&obj, sizeof(obj));
    obj.Header.Type = NDIS_OBJECT_TYPE_CONFIGURATION_OBJECT;
    obj.Header.Revision = NDIS_CONFIGURATION_OBJECT_REVISION_1;
    obj.Header.Size = NDIS_SIZEOF_CONFIGURATION_OBJECT_REVISION_1;
    obj.NdisHandle = a->Handle;
    if (NdisOpenConfigurationEx(&obj, &cfg) != NDIS_STATUS_SUCCESS)
        return;
    NdisInitUnicodeString(&kw, L"*SpeedDuplex");
    NdisReadConfiguration(&status, &param, cfg, &kw, NdisParameterInteger);
    if (status == NDIS_STATUS_SUCCESS)
        a->SpeedDuplex = param->ParameterData.IntegerData;
    NdisReadNetworkAddress(&status, &addr, &len, cfg);
    if (status == NDIS_STATUS_SUCCESS && len == 6 && !(((PUCHAR)addr)[0] & 1)) {
        PUCHAR p = addr;
        if (p[0] | p[1] | p[2] | p[3] | p[4] | p[5])
            NdisMoveMemory(a->CurrentAddress, p, 6);
    }
    RTL_CONFIG_HOOK(cfg);
    NdisCloseConfiguration(cfg);
}

/* The first I/O port range (BAR0, at least 128 ports) and an interrupt. */
static NDIS_STATUS RtlFindResources(PRTL_ADAPTER a, PNDIS_RESOURCE_LIST res)
{
    BOOLEAN port = FALSE, irq = FALSE;

    if (!res)
        return NDIS_STATUS_RESOURCE_CONFLICT;
    for (ULONG i = 0; i < res->Count; i++) {
        PCM_PARTIAL_RESOURCE_DESCRIPTOR d = &res->PartialDescriptors[i];
        if (d->Type == CmResourceTypePort && !port) {
            a->PortStart = d->u.Port.Start.LowPart;
            a->PortLength = d->u.Port.Length;
            port = TRUE;
        } else if (d->Type == CmResourceTypeInterrupt) {
            irq = TRUE; /* NdisMRegisterInterruptEx connects it */
        }
    }
    if (!port || !irq || a->PortLength < 0x80)
        return NDIS_STATUS_RESOURCE_CONFLICT;
    return NDIS_STATUS_SUCCESS;
}

static NDIS_STATUS RtlAllocateDma(PRTL_ADAPTER a)
{
    NDIS_SG_DMA_DESCRIPTION dma;
    NDIS_STATUS status;

    NdisZeroMemory(&dma, sizeof(dma));
    dma.Header.Type = NDIS_OBJECT_TYPE_SG_DMA_DESCRIPTION;
    dma.Header.Revision = NDIS_SG_DMA_DESCRIPTION_REVISION_1;
    dma.Header.Size = NDIS_SIZEOF_SG_DMA_DESCRIPTION_REVISION_1;
    dma.Flags = 0; /* 32-bit addresses */
    dma.MaximumPhysicalMapping = TX_BUF_LEN;
    dma.ProcessSGListHandler = RtlProcessSgList;
    status = NdisMRegisterScatterGatherDma(a->Handle, &dma, &a->DmaHandle);
    if (status != NDIS_STATUS_SUCCESS)
        return status;
    /* A list of the size NDIS recommends for each descriptor. */
    a->SgListSize = dma.ScatterGatherListSize;
    a->SgBufs = NdisAllocateMemoryWithTagPriority(a->Handle, TX_DESCS * a->SgListSize, RTL_TAG,
                                                  NormalPoolPriority);
    if (!a->SgBufs)
        return NDIS_STATUS_RESOURCES;
    for (ULONG i = 0; i < TX_DESCS; i++) {
        a->TxSlot[i].Adapter = a;
        a->TxSlot[i].Index = i;
    }
    NdisMAllocateSharedMemory(a->Handle, RX_ALLOC_LEN, FALSE, (PVOID *)&a->RxRing, &a->RxRingPa);
    if (!a->RxRing)
        return NDIS_STATUS_RESOURCES;
    NdisMAllocateSharedMemory(a->Handle, TX_DESCS * TX_BUF_LEN, FALSE, (PVOID *)&a->TxBufs,
                              &a->TxBufsPa);
    return a->TxBufs ? NDIS_STATUS_SUCCESS : NDIS_STATUS_RESOURCES;
}

/* RX_NBLS receive NBLs, each with one NB over one MDL of a 1536-byte slot. */
static NDIS_STATUS RtlAllocateReceives(PRTL_ADAPTER a)
{
    NET_BUFFER_LIST_POOL_PARAMETERS pp;

    a->RxBufs = NdisAllocateMemoryWithTagPriority(a->Handle, RX_NBLS * RX_BUF_LEN, RTL_TAG,
                                                  NormalPoolPriority);
    if (!a->RxBufs)
        return NDIS_STATUS_RESOURCES;
    NdisZeroMemory(&pp, sizeof(pp));
    pp.Header.Type = NDIS_OBJECT_TYPE_DEFAULT;
    pp.Header.Revision = NET_BUFFER_LIST_POOL_PARAMETERS_REVISION_1;
    pp.Header.Size = NDIS_SIZEOF_NET_BUFFER_LIST_POOL_PARAMETERS_REVISION_1;
    pp.ProtocolId = NDIS_PROTOCOL_ID_DEFAULT;
    pp.fAllocateNetBuffer = TRUE;
    pp.ContextSize = 0;
    pp.PoolTag = RTL_TAG;
    pp.DataSize = 0;
    a->RxPool = NdisAllocateNetBufferListPool(a->Handle, &pp);
    if (!a->RxPool)
        return NDIS_STATUS_RESOURCES;
    for (ULONG i = 0; i < RX_NBLS; i++) {
        a->RxMdl[i] = NdisAllocateMdl(a->Handle, a->RxBufs + i * RX_BUF_LEN, RX_BUF_LEN);
        if (!a->RxMdl[i])
            return NDIS_STATUS_RESOURCES;
        a->RxNbl[i] = NdisAllocateNetBufferAndNetBufferList(a->RxPool, 0, 0, a->RxMdl[i], 0,
                                                            RX_BUF_LEN);
        if (!a->RxNbl[i])
            return NDIS_STATUS_RESOURCES;
        a->RxNbl[i]->SourceHandle = a->Handle;
        SetNblWord(a->RxNbl[i], i);
        a->RxFree[a->RxFreeCount++] = i;
    }
    return NDIS_STATUS_SUCCESS;
}

static NDIS_STATUS RtlRegisterInterrupt(PRTL_ADAPTER a)
{
    NDIS_MINIPORT_INTERRUPT_CHARACTERISTICS ic;

    NdisZeroMemory(&ic, sizeof(ic));
    ic.Header.Type = NDIS_OBJECT_TYPE_MINIPORT_INTERRUPT;
    ic.Header.Revision = NDIS_MINIPORT_INTERRUPT_REVISION_1;
    ic.Header.Size = NDIS_SIZEOF_MINIPORT_INTERRUPT_CHARACTERISTICS_REVISION_1;
    ic.InterruptHandler = RtlIsr;
    ic.InterruptDpcHandler = RtlInterruptDpc;
    ic.DisableInterruptHandler = RtlDisableInterrupt;
    ic.EnableInterruptHandler = RtlEnableInterrupt;
    ic.MsiSupported = FALSE; /* the RTL8139 has no MSI capability: line-based only */
    return NdisMRegisterInterruptEx(a->Handle, a, &ic, &a->InterruptHandle);
}

static NDIS_STATUS NTAPI RtlInitializeEx(NDIS_HANDLE MiniportAdapterHandle,
                                         NDIS_HANDLE MiniportDriverContext,
                                         PNDIS_MINIPORT_INIT_PARAMETERS Params)
{
    PRTL_ADAPTER a;
    NDIS_STATUS status;
    PVOID io;

    (void)MiniportDriverContext;
    a = NdisAllocateMemoryWithTagPriority(MiniportAdapterHandle, sizeof(*a), RTL_TAG,
                                          NormalPoolPriority);
    if (!a)
        return NDIS_STATUS_RESOURCES;
    NdisZeroMemory(a, sizeof(*a));
    a->Handle = MiniportAdapterHandle;
    a->State = RtlPaused;
    a->Lookahead = ETH_MTU;
    a->PacketFilter = NDIS_PACKET_TYPE_DIRECTED | NDIS_PACKET_TYPE_BROADCAST;
    NdisAllocateSpinLock(&a->Lock);
    a->LockAllocated = TRUE;

    status = RtlSetRegistrationAttributes(a);
    if (status != NDIS_STATUS_SUCCESS)
        goto fail;
    status = RtlCheckPciId(a);
    if (status != NDIS_STATUS_SUCCESS)
        goto fail;
    status = RtlFindResources(a, Params->AllocatedResources);
    if (status != NDIS_STATUS_SUCCESS)
        goto fail;
    status = NdisMRegisterIoPortRange(&io, MiniportAdapterHandle, a->PortStart, a->PortLength);
    if (status != NDIS_STATUS_SUCCESS)
        goto fail;
    a->IoBase = (ULONG_PTR)io;
    a->PortsRegistered = TRUE;

    /* The factory address, before the configuration may override it. */
    for (int i = 0; i < 6; i++)
        a->PermanentAddress[i] = Rd8(a, R_IDR0 + i);
    NdisMoveMemory(a->CurrentAddress, a->PermanentAddress, 6);
    RtlReadConfig(a);

    status = RtlAllocateDma(a);
    if (status != NDIS_STATUS_SUCCESS)
        goto fail;
    status = RtlAllocateReceives(a);
    if (status != NDIS_STATUS_SUCCESS)
        goto fail;
    if (!RtlHwInit(a)) {
        status = NDIS_STATUS_HARD_ERRORS;
        goto fail;
    }
    status = RtlSetGeneralAttributes(a);
    if (status != NDIS_STATUS_SUCCESS)
        goto fail;
    status = RtlRegisterInterrupt(a);
    if (status != NDIS_STATUS_SUCCESS) {
        a->InterruptHandle = NULL;
        Wr8(a, R_CR, 0);
        goto fail;
    }
    NdisMSynchronizeWithInterruptEx(a->InterruptHandle, 0, RtlSyncUnmask, a);
    /* *SpeedDuplex is reported, not applied: only 0 (autonegotiation) is offered. */
    DbgPrint("rtl8139_ndis6: up, io %x mac %02x:%02x:%02x:%02x:%02x:%02x link %u "
             "*SpeedDuplex %u\n",
             a->PortStart, a->CurrentAddress[0], a->CurrentAddress[1], a->CurrentAddress[2],
             a->CurrentAddress[3], a->CurrentAddress[4], a->CurrentAddress[5], a->LinkUp,
             a->SpeedDuplex);
    return NDIS_STATUS_SUCCESS;

fail:
    RtlFreeAll(a);
    return status;
}

/* NDIS pauses the adapter before halting it: no send or receive is outstanding. */
static VOID NTAPI RtlHaltEx(NDIS_HANDLE Context, NDIS_HALT_ACTION HaltAction)
{
    PRTL_ADAPTER a = Context;

    DbgPrint("rtl8139_ndis6: halt (action %u)\n", HaltAction);
    NdisMSynchronizeWithInterruptEx(a->InterruptHandle, 0, RtlSyncMask, a);
    NdisMDeregisterInterruptEx(a->InterruptHandle); /* waits for a running DPC */
    a->InterruptHandle = NULL;
    if (!a->Removed) {
        Wr8(a, R_CR, 0);
        Wr16(a, R_ISR, 0xFFFF);
    }
    RtlFreeAll(a);
}

static VOID NTAPI RtlShutdownEx(NDIS_HANDLE Context, NDIS_SHUTDOWN_ACTION ShutdownAction)
{
    PRTL_ADAPTER a = Context;

    /* May run at high IRQL on a bug check: registers only, no locks. */
    (void)ShutdownAction;
    if (a->Removed)
        return;
    Wr16(a, R_IMR, 0);
    Wr8(a, R_CR, CR_RST);
}

static NDIS_STATUS NTAPI RtlPause(NDIS_HANDLE Context, PNDIS_MINIPORT_PAUSE_PARAMETERS Params)
{
    PRTL_ADAPTER a = Context;
    NDIS_STATUS status = NDIS_STATUS_SUCCESS;

    (void)Params;
    NdisAcquireSpinLock(&a->Lock);
    /* Queued sends still go out; receives stop being indicated now. */
    if (a->TxBusy || a->SendHead || a->RxFreeCount != RX_NBLS) {
        a->State = RtlPausing; /* NdisMPauseComplete when the last one is done */
        status = NDIS_STATUS_PENDING;
    } else {
        a->State = RtlPaused;
    }
    NdisReleaseSpinLock(&a->Lock);
    return status;
}

static NDIS_STATUS NTAPI RtlRestart(NDIS_HANDLE Context, PNDIS_MINIPORT_RESTART_PARAMETERS Params)
{
    PRTL_ADAPTER a = Context;

    (void)Params;
    NdisAcquireSpinLock(&a->Lock);
    a->State = RtlRunning;
    NdisReleaseSpinLock(&a->Lock);
    return NDIS_STATUS_SUCCESS;
}

/* Hung if descriptors stay busy without one completing for two checks in a row. */
static BOOLEAN NTAPI RtlCheckForHangEx(NDIS_HANDLE Context)
{
    PRTL_ADAPTER a = Context;
    BOOLEAN hung;

    NdisAcquireSpinLock(&a->Lock);
    if (a->TxBusy && a->TxDone == a->TxDoneAtCheck)
        a->HungChecks++;
    else
        a->HungChecks = 0;
    a->TxDoneAtCheck = a->TxDone;
    hung = a->HungChecks >= 2;
    NdisReleaseSpinLock(&a->Lock);
    return hung;
}

/* Reset the chip: descriptors in flight are lost (their NBLs complete with
 * NDIS_STATUS_REQUEST_ABORTED), queued sends go out afterwards. */
static NDIS_STATUS NTAPI RtlResetEx(NDIS_HANDLE Context, PBOOLEAN AddressingReset)
{
    PRTL_ADAPTER a = Context;
    PNET_BUFFER_LIST done = NULL, *doneTail = &done;
    BOOLEAN ok;

    GROUP_AFFINITY target;

    NdisMSynchronizeWithInterruptEx(a->InterruptHandle, 0, RtlSyncMask, a);
    NdisAcquireSpinLock(&a->Lock);
    for (ULONG i = 0; i < TX_DESCS; i++)
        if (a->TxNbl[i]) {
            a->XmitError++;
            if (a->TxSgl[i])
                NdisMFreeNetBufferSGList(a->DmaHandle, a->TxSgl[i], a->TxNb[i]);
            RtlNbFinished(a->TxNbl[i], NDIS_STATUS_REQUEST_ABORTED, &doneTail);
            a->TxNbl[i] = NULL;
            a->TxNb[i] = NULL;
            a->TxSgl[i] = NULL;
            a->TxState[i] = TxFree;
        }
    a->HungChecks = 0;
    ok = RtlHwInit(a);
    NdisReleaseSpinLock(&a->Lock);
    if (ok)
        RtlKickSends(a, FALSE, &doneTail);
    if (done)
        NdisMSendNetBufferListsComplete(a->Handle, done,
                                        KeGetCurrentIrql() == DISPATCH_LEVEL
                                            ? NDIS_SEND_COMPLETE_FLAGS_DISPATCH_LEVEL
                                            : 0);
    NdisMSynchronizeWithInterruptEx(a->InterruptHandle, 0, RtlSyncUnmask, a);
    /* Whatever arrived while the chip was masked: run the DPC on processor 0 now. */
    NdisZeroMemory(&target, sizeof(target));
    target.Mask = 1;
    NdisMQueueDpcEx(a->InterruptHandle, 0, &target, a);
    *AddressingReset = FALSE; /* filter and multicast list are reprogrammed here */
    return ok ? NDIS_STATUS_SUCCESS : NDIS_STATUS_HARD_ERRORS;
}

static VOID NTAPI RtlDevicePnPEventNotify(NDIS_HANDLE Context, PNET_DEVICE_PNP_EVENT Event)
{
    PRTL_ADAPTER a = Context;

    DbgPrint("rtl8139_ndis6: PnP event %u\n", Event->DevicePnPEvent);
    if (Event->DevicePnPEvent == NdisDevicePnPEventSurpriseRemoved)
        a->Removed = TRUE;
}

/* Every OID request completes synchronously: none is ever pending to cancel. */
static VOID NTAPI RtlCancelOidRequest(NDIS_HANDLE Context, PVOID RequestId)
{
    (void)Context;
    (void)RequestId;
}

/* ---- OIDs ---- */

static void RtlFillStatistics(PRTL_ADAPTER a, PNDIS_STATISTICS_INFO s)
{
    ULONG missed = Rd32(a, R_MPC) & 0xFFFFFF; /* frames lost to a full ring */

    NdisZeroMemory(s, sizeof(*s));
    s->Header.Type = NDIS_OBJECT_TYPE_DEFAULT;
    s->Header.Revision = NDIS_STATISTICS_INFO_REVISION_1;
    s->Header.Size = NDIS_SIZEOF_STATISTICS_INFO_REVISION_1;
    s->SupportedStatistics = STATS_VALID;
    NdisAcquireSpinLock(&a->Lock);
    s->ifInDiscards = a->RcvNoBuffer + a->RcvDiscards + missed;
    s->ifInErrors = a->RcvError;
    s->ifHCInUcastPkts = a->Rcv.Frames[KIND_DIRECTED];
    s->ifHCInMulticastPkts = a->Rcv.Frames[KIND_MULTICAST];
    s->ifHCInBroadcastPkts = a->Rcv.Frames[KIND_BROADCAST];
    s->ifHCInUcastOctets = a->Rcv.Bytes[KIND_DIRECTED];
    s->ifHCInMulticastOctets = a->Rcv.Bytes[KIND_MULTICAST];
    s->ifHCInBroadcastOctets = a->Rcv.Bytes[KIND_BROADCAST];
    s->ifHCOutUcastPkts = a->Xmit.Frames[KIND_DIRECTED];
    s->ifHCOutMulticastPkts = a->Xmit.Frames[KIND_MULTICAST];
    s->ifHCOutBroadcastPkts = a->Xmit.Frames[KIND_BROADCAST];
    s->ifHCOutUcastOctets = a->Xmit.Bytes[KIND_DIRECTED];
    s->ifHCOutMulticastOctets = a->Xmit.Bytes[KIND_MULTICAST];
    s->ifHCOutBroadcastOctets = a->Xmit.Bytes[KIND_BROADCAST];
    s->ifOutErrors = a->XmitError;
    s->ifOutDiscards = a->XmitDiscards;
    NdisReleaseSpinLock(&a->Lock);
    s->ifHCInOctets = s->ifHCInUcastOctets + s->ifHCInMulticastOctets + s->ifHCInBroadcastOctets;
    s->ifHCOutOctets =
        s->ifHCOutUcastOctets + s->ifHCOutMulticastOctets + s->ifHCOutBroadcastOctets;
}

static NDIS_STATUS RtlQuery(PRTL_ADAPTER a, PNDIS_OID_REQUEST r)
{
    NDIS_OID oid = r->DATA.QUERY_INFORMATION.Oid;
    ULONG bufLen = r->DATA.QUERY_INFORMATION.InformationBufferLength;
    union {
        ULONG ul;
        ULONG64 u64;
        USHORT us;
        NDIS_HARDWARE_STATUS hw;
        NDIS_MEDIUM medium;
        NDIS_PHYSICAL_MEDIUM phys;
        NDIS_STATISTICS_INFO stats;
        NDIS_LINK_STATE link;
        RTL_TX_PATHS paths;
    } v;
    const void *src = &v;
    ULONG len = sizeof(ULONG);
    BOOLEAN counter = FALSE; /* ULONG64, or ULONG if that is all the buffer holds */

    v.u64 = 0;
    switch (oid) {
    case OID_ICA_RTL8139_TX_PATHS:
        NdisAcquireSpinLock(&a->Lock);
        v.paths = a->Paths;
        NdisReleaseSpinLock(&a->Lock);
        len = sizeof(v.paths);
        break;
    case OID_GEN_SUPPORTED_LIST:
        src = RtlSupportedOids;
        len = sizeof(RtlSupportedOids);
        break;
    case OID_GEN_HARDWARE_STATUS:
        v.hw = NdisHardwareStatusReady;
        len = sizeof(v.hw);
        break;
    case OID_GEN_MEDIA_SUPPORTED:
    case OID_GEN_MEDIA_IN_USE:
        v.medium = NdisMedium802_3;
        len = sizeof(v.medium);
        break;
    case OID_GEN_PHYSICAL_MEDIUM:
        v.phys = NdisPhysicalMedium802_3;
        len = sizeof(v.phys);
        break;
    case OID_GEN_MAXIMUM_LOOKAHEAD:
    case OID_GEN_MAXIMUM_FRAME_SIZE:
        v.ul = ETH_MTU;
        break;
    case OID_GEN_CURRENT_LOOKAHEAD:
        v.ul = a->Lookahead;
        break;
    case OID_GEN_MAXIMUM_TOTAL_SIZE:
    case OID_GEN_TRANSMIT_BLOCK_SIZE:
    case OID_GEN_RECEIVE_BLOCK_SIZE:
        v.ul = ETH_MAX_FRAME;
        break;
    case OID_GEN_LINK_SPEED: /* in 100 bit/s */
        v.ul = a->LinkUp ? (ULONG)(RtlLinkSpeed(a) / 100) : 0;
        break;
    case OID_GEN_TRANSMIT_BUFFER_SPACE:
        v.ul = TX_DESCS * TX_BUF_LEN;
        break;
    case OID_GEN_RECEIVE_BUFFER_SPACE:
        v.ul = RX_RING_LEN;
        break;
    case OID_GEN_MEDIA_CONNECT_STATUS:
        v.ul = a->LinkUp ? NdisMediaStateConnected : NdisMediaStateDisconnected;
        break;
    case OID_GEN_MAXIMUM_SEND_PACKETS:
        v.ul = TX_DESCS;
        break;
    case OID_GEN_VENDOR_ID:
        v.ul = a->PermanentAddress[0] | (ULONG)a->PermanentAddress[1] << 8 |
               (ULONG)a->PermanentAddress[2] << 16;
        break;
    case OID_GEN_VENDOR_DESCRIPTION:
        src = RtlDescription;
        len = sizeof(RtlDescription);
        break;
    case OID_GEN_VENDOR_DRIVER_VERSION:
        v.ul = 0x00010000;
        break;
    case OID_GEN_DRIVER_VERSION:
        v.us = 0x0600;
        len = sizeof(v.us);
        break;
    case OID_GEN_CURRENT_PACKET_FILTER:
        v.ul = a->PacketFilter;
        break;
    case OID_GEN_MAC_OPTIONS:
        v.ul = NDIS_MAC_OPTION_COPY_LOOKAHEAD_DATA | NDIS_MAC_OPTION_TRANSFERS_NOT_PEND |
               NDIS_MAC_OPTION_NO_LOOPBACK;
        break;
    case OID_GEN_XMIT_OK:
    case OID_GEN_RCV_OK:
    case OID_GEN_XMIT_ERROR:
    case OID_GEN_RCV_ERROR:
    case OID_GEN_RCV_NO_BUFFER: {
        RTL_COUNTS *c = oid == OID_GEN_XMIT_OK ? &a->Xmit : &a->Rcv;
        NdisAcquireSpinLock(&a->Lock);
        if (oid == OID_GEN_XMIT_OK || oid == OID_GEN_RCV_OK)
            v.u64 = c->Frames[KIND_DIRECTED] + c->Frames[KIND_MULTICAST] +
                    c->Frames[KIND_BROADCAST];
        else if (oid == OID_GEN_XMIT_ERROR)
            v.u64 = a->XmitError;
        else if (oid == OID_GEN_RCV_ERROR)
            v.u64 = a->RcvError;
        else
            v.u64 = a->RcvNoBuffer;
        NdisReleaseSpinLock(&a->Lock);
        counter = TRUE;
        break;
    }
    case OID_GEN_STATISTICS:
        RtlFillStatistics(a, &v.stats);
        len = sizeof(v.stats);
        break;
    case OID_GEN_LINK_STATE:
        RtlFillLinkState(a, &v.link);
        len = sizeof(v.link);
        break;
    case OID_802_3_PERMANENT_ADDRESS:
        src = a->PermanentAddress;
        len = 6;
        break;
    case OID_802_3_CURRENT_ADDRESS:
        src = a->CurrentAddress;
        len = 6;
        break;
    case OID_802_3_MULTICAST_LIST:
        src = a->McList;
        len = a->McCount * 6;
        break;
    case OID_802_3_MAXIMUM_LIST_SIZE:
        v.ul = MAX_MCAST;
        break;
    case OID_802_3_RCV_ERROR_ALIGNMENT:
    case OID_802_3_XMIT_ONE_COLLISION:
    case OID_802_3_XMIT_MORE_COLLISIONS:
        v.ul = 0;
        break;
    default:
        r->DATA.QUERY_INFORMATION.BytesWritten = 0;
        r->DATA.QUERY_INFORMATION.BytesNeeded = 0;
        return NDIS_STATUS_NOT_SUPPORTED;
    }
    if (counter) {
        /* Statistics counters are 64-bit when the buffer has room for it. */
        if (bufLen >= sizeof(ULONG64)) {
            len = sizeof(ULONG64);
        } else {
            v.ul = (ULONG)v.u64;
            len = sizeof(ULONG);
        }
    }
    if (len > bufLen) {
        r->DATA.QUERY_INFORMATION.BytesWritten = 0;
        r->DATA.QUERY_INFORMATION.BytesNeeded = counter ? sizeof(ULONG64) : len;
        return NDIS_STATUS_BUFFER_TOO_SHORT;
    }
    NdisMoveMemory(r->DATA.QUERY_INFORMATION.InformationBuffer, src, len);
    r->DATA.QUERY_INFORMATION.BytesWritten = len;
    r->DATA.QUERY_INFORMATION.BytesNeeded = 0;
    return NDIS_STATUS_SUCCESS;
}

static NDIS_STATUS RtlSet(PRTL_ADAPTER a, PNDIS_OID_REQUEST r)
{
    PVOID buf = r->DATA.SET_INFORMATION.InformationBuffer;
    ULONG bufLen = r->DATA.SET_INFORMATION.InformationBufferLength;
    ULONG ul;

    r->DATA.SET_INFORMATION.BytesRead = 0;
    r->DATA.SET_INFORMATION.BytesNeeded = 0;
    switch (r->DATA.SET_INFORMATION.Oid) {
    case OID_GEN_CURRENT_PACKET_FILTER:
        if (bufLen < sizeof(ULONG)) {
            r->DATA.SET_INFORMATION.BytesNeeded = sizeof(ULONG);
            return NDIS_STATUS_INVALID_LENGTH;
        }
        NdisMoveMemory(&ul, buf, sizeof(ul));
        r->DATA.SET_INFORMATION.BytesRead = sizeof(ULONG);
        if (ul & ~SUPPORTED_FILTERS)
            return NDIS_STATUS_NOT_SUPPORTED;
        NdisAcquireSpinLock(&a->Lock);
        a->PacketFilter = ul;
        RtlApplyFilter(a);
        NdisReleaseSpinLock(&a->Lock);
        return NDIS_STATUS_SUCCESS;
    case OID_GEN_CURRENT_LOOKAHEAD:
        if (bufLen < sizeof(ULONG)) {
            r->DATA.SET_INFORMATION.BytesNeeded = sizeof(ULONG);
            return NDIS_STATUS_INVALID_LENGTH;
        }
        NdisMoveMemory(&ul, buf, sizeof(ul));
        r->DATA.SET_INFORMATION.BytesRead = sizeof(ULONG);
        if (ul > ETH_MTU)
            return NDIS_STATUS_INVALID_DATA;
        a->Lookahead = ul;
        return NDIS_STATUS_SUCCESS;
    case OID_802_3_MULTICAST_LIST:
        if (bufLen % 6)
            return NDIS_STATUS_INVALID_LENGTH;
        if (bufLen / 6 > MAX_MCAST) {
            r->DATA.SET_INFORMATION.BytesNeeded = MAX_MCAST * 6;
            return NDIS_STATUS_MULTICAST_FULL;
        }
        NdisAcquireSpinLock(&a->Lock);
        NdisMoveMemory(a->McList, buf, bufLen);
        a->McCount = bufLen / 6;
        RtlApplyFilter(a);
        NdisReleaseSpinLock(&a->Lock);
        r->DATA.SET_INFORMATION.BytesRead = bufLen;
        return NDIS_STATUS_SUCCESS;
    default:
        return NDIS_STATUS_NOT_SUPPORTED;
    }
}

static NDIS_STATUS NTAPI RtlOidRequest(NDIS_HANDLE Context, PNDIS_OID_REQUEST Request)
{
    switch (Request->RequestType) {
    case NdisRequestQueryInformation:
    case NdisRequestQueryStatistics:
        return RtlQuery(Context, Request);
    case NdisRequestSetInformation:
        return RtlSet(Context, Request);
    default:
        return NDIS_STATUS_NOT_SUPPORTED;
    }
}

/* ---- Driver ---- */

static VOID NTAPI RtlUnload(PDRIVER_OBJECT DriverObject)
{
    (void)DriverObject;
    NdisMDeregisterMiniportDriver(RtlDriverHandle);
}

NTSTATUS NTAPI DriverEntry(PDRIVER_OBJECT DriverObject, PUNICODE_STRING RegistryPath)
{
    NDIS_MINIPORT_DRIVER_CHARACTERISTICS c;

    NdisZeroMemory(&c, sizeof(c));
    c.Header.Type = NDIS_OBJECT_TYPE_MINIPORT_DRIVER_CHARACTERISTICS;
    c.Header.Revision = NDIS_MINIPORT_DRIVER_CHARACTERISTICS_REVISION_1;
    c.Header.Size = NDIS_SIZEOF_MINIPORT_DRIVER_CHARACTERISTICS_REVISION_1;
    c.MajorNdisVersion = NDIS_MINIPORT_MAJOR_VERSION;
    c.MinorNdisVersion = NDIS_MINIPORT_MINOR_VERSION;
    c.MajorDriverVersion = 1;
    c.MinorDriverVersion = 0;
    c.InitializeHandlerEx = RtlInitializeEx;
    c.HaltHandlerEx = RtlHaltEx;
    c.UnloadHandler = RtlUnload;
    c.PauseHandler = RtlPause;
    c.RestartHandler = RtlRestart;
    c.OidRequestHandler = RtlOidRequest;
    c.SendNetBufferListsHandler = RtlSendNetBufferLists;
    c.ReturnNetBufferListsHandler = RtlReturnNetBufferLists;
    c.CancelSendHandler = RtlCancelSend;
    c.CheckForHangHandlerEx = RtlCheckForHangEx;
    c.ResetHandlerEx = RtlResetEx;
    c.DevicePnPEventNotifyHandler = RtlDevicePnPEventNotify;
    c.ShutdownHandlerEx = RtlShutdownEx;
    c.CancelOidRequestHandler = RtlCancelOidRequest;

    return NdisMRegisterMiniportDriver(DriverObject, RegistryPath, NULL, &c, &RtlDriverHandle);
}
