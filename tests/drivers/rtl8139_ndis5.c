/*
 * rtl8139_ndis5.sys - an NDIS 5.1 miniport for the Realtek RTL8139(C) Fast
 * Ethernet controller, written from the datasheet for ICA's tests
 * (host-linux/src/rtl8139.rs is the device model it runs against).
 *
 * Register access through I/O ports (BAR0, the default) or memory-mapped
 * (BAR1 mapped with NdisMMapIoSpace) as the `IoMode` parameter says (0 / 1;
 * when the adapter's key lacks it, the default of its Ndi\params\IoMode
 * subkey, found by walking Ndi\params with NdisOpenConfigurationKeyByName /
 * ByIndex).  A 32K+16 receive ring with WRAP=1 (frames past the end are
 * written linearly into the 1536-byte tail), four 2K transmit buffers in
 * shared memory.  A send whose packet is one 4-byte-aligned, physically
 * contiguous buffer of at least the minimum frame goes out from where it is
 * (zero copy: NdisMStartBufferPhysicalMapping on the descriptor's map
 * register gives the address programmed into TSAD); any other is copied into
 * the descriptor's transmit buffer.  Per-send bookkeeping comes from a
 * nonpaged lookaside list.  Sends complete with NdisMSendComplete (after
 * NdisMCompleteBufferPhysicalMapping) when the chip reports TOK/TER.
 *
 * `Deserialize` = 1 makes it a deserialized miniport (NDIS_ATTRIBUTE_DESERIALIZE):
 * sends that find all four descriptors busy wait in its own queue (linked
 * through MiniportReserved) and go out from the interrupt DPC as descriptors
 * free up; every packet completes through NdisMSendComplete.  Serialized
 * (the default), it hands such packets back with NDIS_STATUS_RESOURCES and
 * leaves the queueing to NDIS.  Either way one spin lock guards the transmit
 * state, the send queue, the receive buffers and the filter registers, and
 * no NDIS indication or completion is made holding it.
 *
 * `ReceiveIndication` chooses the receive path: 0 (the default) copies each
 * frame out of the ring into one of RX_PACKETS preallocated packets,
 * indicated with NdisMIndicateReceivePacket (ReturnPacket puts them back);
 * 1 indicates the header and a lookahead of the current lookahead size
 * (OID_GEN_CURRENT_LOOKAHEAD) straight from the ring with
 * NdisMEthIndicateReceive, and MiniportTransferData copies the rest out of
 * the ring at once; 2 does the same, but MiniportTransferData pends and a
 * timer copies the data and calls NdisMTransferDataComplete, the ring
 * holding the frame (and further indications waiting) until then.
 * NdisMEthIndicateReceiveComplete follows each run of indications.
 *
 * `PendOids` = 1 pends queries of OID_GEN_LINK_SPEED and
 * OID_GEN_MEDIA_CONNECT_STATUS and sets of OID_GEN_CURRENT_PACKET_FILTER and
 * OID_GEN_CURRENT_LOOKAHEAD (NDIS_STATUS_PENDING once the buffer is known to
 * be large enough) and answers them from a timer with
 * NdisMQueryInformationComplete / NdisMSetInformationComplete.
 *
 * The private OID_ICA_RTL_DIAG reports the configuration as read and the
 * counters of each of these paths.
 *
 * `Firmware` (a file name) makes MiniportInitialize load that file the way
 * NDISwrapper-era WLAN drivers load theirs (NdisOpenFile, relative to
 * system32\drivers; NdisMapFile; NdisUnmapFile; NdisCloseFile), write its
 * length and FNV-1a checksum back into the adapter's configuration
 * (FirmwareLength, FirmwareChecksum; NdisWriteConfiguration) and report them
 * in the diag; a file that cannot be loaded is an error log entry
 * (NdisWriteErrorLogEntry) and fails MiniportInitialize with the status.
 * Initialize also reads its PCI IDs (NdisImmediateReadPciSlotInformation),
 * calls NdisGetVersion through NdisGetRoutineAddress, takes its instance name
 * (NdisMQueryAdapterInstanceName) and schedules an NDIS 5 work item
 * (NdisScheduleWorkItem) and a shared-memory block
 * (NdisMAllocateSharedMemoryAsync, completed through AllocateCompleteHandler)
 * that Halt waits for. The first adapter registers a
 * control device, \Device\IcaRtl8139 (\DosDevices\IcaRtl8139), that answers
 * IOCTL_ICA_RTL_DIAG with the diag (NdisMRegisterDevice; Halt deregisters
 * it).
 */
#include "ndis51_fix.h"

#define RTL_TAG 0x39384352u    /* 'RC89' in a pool dump */
#define RTL_TX_TAG 0x78544352u /* 'RCTx': per-send contexts (lookaside list) */

/* Vendor-specific (0xFF......) query: an RTL_DIAG. */
#define OID_ICA_RTL_DIAG 0xFF813901u
/* The same RTL_DIAG from the control device (\\.\IcaRtl8139). */
/* Vendor-specific set: the adapter declares itself unrecoverable (NdisMRemoveMiniport). */
#define OID_ICA_RTL_REMOVE 0xFF813902u
#define IOCTL_ICA_RTL_DIAG CTL_CODE(FILE_DEVICE_NETWORK, 0x800, METHOD_BUFFERED, FILE_ANY_ACCESS)

/* IoMode values. */
#define RTL_IO_PORT 0
#define RTL_IO_MEMORY 1

/* ReceiveIndication values. */
#define RTL_RX_PACKETS 0        /* NdisMIndicateReceivePacket */
#define RTL_RX_LOOKAHEAD 1      /* NdisMEthIndicateReceive, MiniportTransferData copies at once */
#define RTL_RX_LOOKAHEAD_PEND 2 /* ... MiniportTransferData pends, a timer completes it */

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

#define RX_ROK 0x0001

#define RX_RING_LEN 32768u
#define RX_ALLOC_LEN (RX_RING_LEN + 16 + 1536)
#define TX_DESCS 4
#define TX_BUF_LEN 2048u
#define RX_PACKETS 16
#define RX_BUF_LEN 1536u

#define REG_SPAN 0x80 /* registers the driver uses, in either BAR */

#define ETH_HEADER 14
#define ETH_MAX_FRAME 1514
#define ETH_MIN_FRAME 60
#define MAX_MCAST 32

#define SUPPORTED_FILTERS                                                                     \
    (NDIS_PACKET_TYPE_DIRECTED | NDIS_PACKET_TYPE_MULTICAST | NDIS_PACKET_TYPE_ALL_MULTICAST | \
     NDIS_PACKET_TYPE_BROADCAST | NDIS_PACKET_TYPE_PROMISCUOUS)

/* What the host learns through OID_ICA_RTL_DIAG. */
typedef struct _RTL_DIAG {
    ULONG IoMode;            /* RTL_IO_PORT or RTL_IO_MEMORY */
    ULONG NdiParams;         /* subkeys of Ndi\params seen */
    ULONG ZeroCopySends;     /* sent from the packet's own buffer */
    ULONG CopiedSends;       /* copied into a transmit buffer */
    ULONG TxContextAllocs;   /* lookaside TotalAllocates */
    ULONG TxContextMisses;   /* lookaside AllocateMisses */
    ULONG TxContextFrees;    /* lookaside TotalFrees */
    ULONG Deserialized;      /* the Deserialize parameter as used (0 / 1) */
    ULONG ReceiveIndication; /* RTL_RX_* */
    ULONG PendOids;          /* the PendOids parameter as used (0 / 1) */
    ULONG SendsRefused;      /* serialized: handed back with NDIS_STATUS_RESOURCES */
    ULONG SendsWaited;       /* deserialized: queued until a descriptor was free */
    ULONG LookaheadIndications; /* NdisMEthIndicateReceive calls */
    ULONG ShortLookaheads;   /* ... whose lookahead was less than the frame's data */
    ULONG Transfers;         /* MiniportTransferData calls answered at once */
    ULONG TransfersPended;   /* ... completed later with NdisMTransferDataComplete */
    ULONG OidsPended;        /* requests completed with NdisMQuery/SetInformationComplete */
    ULONG FirmwareLength;    /* bytes of the Firmware file (0: none loaded) */
    ULONG FirmwareChecksum;  /* its FNV-1a */
    ULONG PciId;             /* device << 16 | vendor, NdisImmediateReadPciSlotInformation */
    ULONG NdisVersion;       /* NdisGetVersion, called through NdisGetRoutineAddress */
    ULONG InstanceNameLength; /* bytes of NdisMQueryAdapterInstanceName's name */
    ULONG WorkItemsRun;      /* NdisScheduleWorkItem routines that ran */
    ULONG AsyncSharedLength; /* NdisMAllocateSharedMemoryAsync's block, once completed */
} RTL_DIAG;

/* One send in flight (from the lookaside list). */
typedef struct _RTL_TX_CONTEXT {
    PNDIS_PACKET Packet;
    PNDIS_BUFFER Mapped; /* zero copy: the buffer the descriptor's map register maps */
} RTL_TX_CONTEXT, *PRTL_TX_CONTEXT;

/* Packets chained through the first pointer of their MiniportReserved (ours while we own them). */
#define RTL_PACKET_NEXT(p) (*(PNDIS_PACKET *)(p)->MiniportReserved)

typedef struct _RTL_PACKET_LIST {
    PNDIS_PACKET Head, Tail;
} RTL_PACKET_LIST, *PRTL_PACKET_LIST;

/* The frame being indicated with NdisMEthIndicateReceive: its MiniportReceiveContext. */
typedef struct _RTL_RX_FRAME {
    PUCHAR Data;  /* past the Ethernet header, in the ring; NULL when no frame is current */
    UINT Length;  /* bytes of data (the PacketSize indicated) */
    UINT Record;  /* the ring record's length field (frame + CRC) */
} RTL_RX_FRAME, *PRTL_RX_FRAME;

/* A MiniportTransferData that pended. */
typedef struct _RTL_TRANSFER {
    PNDIS_PACKET Packet;
    UINT Offset, Bytes;
} RTL_TRANSFER;
#define RTL_MAX_TRANSFERS 4

/* A request that pended (PendOids). */
typedef struct _RTL_PENDED_OID {
    BOOLEAN Query;
    NDIS_OID Oid;
    PVOID Buffer;
    ULONG Length;
    PULONG Done;   /* BytesWritten / BytesRead */
    PULONG Needed; /* BytesNeeded */
} RTL_PENDED_OID;

typedef struct _RTL_ADAPTER {
    NDIS_HANDLE Handle;
    ULONG IoMode, RxIndication;
    BOOLEAN Deserialized, PendOids;
    ULONG_PTR IoBase;      /* port I/O */
    PUCHAR Mmio;           /* memory-mapped registers */
    UINT PortStart, PortLength;
    NDIS_PHYSICAL_ADDRESS MemStart;
    UINT MemLength;
    UINT IrqLevel, IrqVector;
    BOOLEAN PortsRegistered, InterruptRegistered, MapRegsAllocated, LookasideReady;
    NDIS_MINIPORT_INTERRUPT Interrupt;
    NDIS_SPIN_LOCK Lock;

    PUCHAR RxRing;
    NDIS_PHYSICAL_ADDRESS RxRingPa;
    ULONG RxOffset;
    BOOLEAN RxWalking;     /* a context is walking the ring */
    RTL_RX_FRAME RxFrame;
    RTL_TRANSFER Pending[RTL_MAX_TRANSFERS];
    ULONG PendingCount;    /* pended transfers from RxFrame; the ring walk waits for them */
    NDIS_MINIPORT_TIMER RxTimer;

    PUCHAR TxBufs;
    NDIS_PHYSICAL_ADDRESS TxBufsPa;
    PRTL_TX_CONTEXT Tx[TX_DESCS];
    ULONG TxCur, TxDirty, TxBusy;
    NPAGED_LOOKASIDE_LIST TxLookaside;
    RTL_PACKET_LIST SendQueue; /* deserialized: waiting for a descriptor */

    NDIS_HANDLE PacketPool, BufferPool;
    PUCHAR RxBufs;
    PNDIS_PACKET RxPacket[RX_PACKETS];
    PNDIS_BUFFER RxBuffer[RX_PACKETS];
    ULONG RxFree[RX_PACKETS];
    ULONG RxFreeCount;

    RTL_PENDED_OID PendedOid;
    BOOLEAN OidPending;
    NDIS_MINIPORT_TIMER OidTimer;

    UCHAR PermanentAddress[6], CurrentAddress[6], ConfigAddress[6];
    BOOLEAN HaveConfigAddress;
    UCHAR McList[MAX_MCAST][6];
    ULONG McCount;
    ULONG PacketFilter, Lookahead, SpeedDuplex;
    BOOLEAN LinkUp;

    ULONG XmitOk, XmitError, RcvOk, RcvError, RcvNoBuffer;
    ULONG NdiParams, ZeroCopySends, CopiedSends, SendsRefused, SendsWaited;
    ULONG LookaheadIndications, ShortLookaheads, Transfers, TransfersPended, OidsPended;
    ULONG FirmwareLength, FirmwareChecksum, PciId, NdisVersion, InstanceNameLength;
    NDIS_WORK_ITEM WorkItem;
    NDIS_EVENT WorkItemDone;
    BOOLEAN WorkItemScheduled;
    LONG WorkItemsRun;
    NDIS_HANDLE ControlDevice; /* NdisMRegisterDevice, the first adapter's */
    /* NdisMAllocateSharedMemoryAsync: pending until AllocateComplete signals AsyncDone. */
    BOOLEAN AsyncPending;
    NDIS_EVENT AsyncDone;
    PVOID AsyncShared;
    NDIS_PHYSICAL_ADDRESS AsyncSharedPa;
    ULONG AsyncSharedLength;
} RTL_ADAPTER, *PRTL_ADAPTER;

static NDIS_HANDLE RtlWrapper;
static PRTL_ADAPTER RtlControlAdapter; /* the adapter behind the control device */
static void RtlFillDiag(PRTL_ADAPTER a, RTL_DIAG *d);

static const NDIS_OID RtlSupportedOids[] = {
    OID_GEN_SUPPORTED_LIST, OID_GEN_HARDWARE_STATUS, OID_GEN_MEDIA_SUPPORTED,
    OID_GEN_MEDIA_IN_USE, OID_GEN_MAXIMUM_LOOKAHEAD, OID_GEN_MAXIMUM_FRAME_SIZE,
    OID_GEN_LINK_SPEED, OID_GEN_TRANSMIT_BUFFER_SPACE, OID_GEN_RECEIVE_BUFFER_SPACE,
    OID_GEN_TRANSMIT_BLOCK_SIZE, OID_GEN_RECEIVE_BLOCK_SIZE, OID_GEN_VENDOR_ID,
    OID_GEN_VENDOR_DESCRIPTION, OID_GEN_VENDOR_DRIVER_VERSION, OID_GEN_CURRENT_PACKET_FILTER,
    OID_GEN_CURRENT_LOOKAHEAD, OID_GEN_DRIVER_VERSION, OID_GEN_MAXIMUM_TOTAL_SIZE,
    OID_GEN_MAC_OPTIONS, OID_GEN_MEDIA_CONNECT_STATUS, OID_GEN_MAXIMUM_SEND_PACKETS,
    OID_GEN_XMIT_OK, OID_GEN_RCV_OK, OID_GEN_XMIT_ERROR, OID_GEN_RCV_ERROR,
    OID_GEN_RCV_NO_BUFFER, OID_802_3_PERMANENT_ADDRESS, OID_802_3_CURRENT_ADDRESS,
    OID_802_3_MULTICAST_LIST, OID_802_3_MAXIMUM_LIST_SIZE, OID_802_3_RCV_ERROR_ALIGNMENT,
    OID_802_3_XMIT_ONE_COLLISION, OID_802_3_XMIT_MORE_COLLISIONS, OID_ICA_RTL_DIAG,
};

static const char RtlDescription[] = "ICA RTL8139 NDIS 5.1 test miniport";

static VOID NTAPI RtlRxTimer(PVOID SystemSpecific1, PVOID Context, PVOID SystemSpecific2,
                             PVOID SystemSpecific3);
static VOID NTAPI RtlOidTimer(PVOID SystemSpecific1, PVOID Context, PVOID SystemSpecific2,
                              PVOID SystemSpecific3);
static NDIS_STATUS RtlQuery(PRTL_ADAPTER a, NDIS_OID Oid, PVOID Buffer, ULONG BufferLength,
                            PULONG BytesWritten, PULONG BytesNeeded);
static NDIS_STATUS RtlSet(PRTL_ADAPTER a, NDIS_OID Oid, PVOID Buffer, ULONG BufferLength,
                          PULONG BytesRead, PULONG BytesNeeded);

/* Register access: the memory-mapped registers once mapped, else the I/O port range. */
static UCHAR Rd8(PRTL_ADAPTER a, ULONG r)
{
    UCHAR v;
    if (a->Mmio)
        NdisReadRegisterUchar((volatile UCHAR *)(a->Mmio + r), &v);
    else
        NdisRawReadPortUchar(a->IoBase + r, &v);
    return v;
}
static USHORT Rd16(PRTL_ADAPTER a, ULONG r)
{
    USHORT v;
    if (a->Mmio)
        NdisReadRegisterUshort((volatile USHORT *)(a->Mmio + r), &v);
    else
        NdisRawReadPortUshort(a->IoBase + r, &v);
    return v;
}
static ULONG Rd32(PRTL_ADAPTER a, ULONG r)
{
    ULONG v;
    if (a->Mmio)
        NdisReadRegisterUlong((volatile ULONG *)(a->Mmio + r), &v);
    else
        NdisRawReadPortUlong(a->IoBase + r, &v);
    return v;
}
static void Wr8(PRTL_ADAPTER a, ULONG r, UCHAR v)
{
    if (a->Mmio)
        NdisWriteRegisterUchar((PUCHAR)(a->Mmio + r), v);
    else
        NdisRawWritePortUchar(a->IoBase + r, v);
}
static void Wr16(PRTL_ADAPTER a, ULONG r, USHORT v)
{
    if (a->Mmio)
        NdisWriteRegisterUshort((PUSHORT)(a->Mmio + r), v);
    else
        NdisRawWritePortUshort(a->IoBase + r, v);
}
static void Wr32(PRTL_ADAPTER a, ULONG r, ULONG v)
{
    if (a->Mmio)
        NdisWriteRegisterUlong((PULONG)(a->Mmio + r), v);
    else
        NdisRawWritePortUlong(a->IoBase + r, v);
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

/* Soft reset, then bring the chip up: station address, ring, TX, filter, IMR, RE|TE. */
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

    Wr8(a, R_CR, CR_RE | CR_TE);
    Wr32(a, R_RBSTART, NdisGetPhysicalAddressLow(a->RxRingPa));
    a->RxOffset = 0;
    Wr16(a, R_CAPR, (USHORT)(0 - 16));
    /* TSADn is set per send (the transmit buffer, or the packet's own for zero copy). */
    a->TxCur = a->TxDirty = a->TxBusy = 0;
    Wr32(a, R_TCR, TCR_IFG_STD | TCR_MXDMA_2048);
    RtlApplyFilter(a);
    Wr32(a, R_MPC, 0);
    Wr16(a, R_ISR, 0xFFFF);
    Wr16(a, R_IMR, INT_MASK);
    a->LinkUp = RtlLinkUp(a);
    return TRUE;
}

static void RtlFreeAll(PRTL_ADAPTER a)
{
    int i;

    if (a->LookasideReady)
        NdisDeleteNPagedLookasideList(&a->TxLookaside);
    if (a->InterruptRegistered)
        NdisMDeregisterInterrupt(&a->Interrupt);
    for (i = 0; i < RX_PACKETS; i++) {
        if (a->RxBuffer[i])
            NdisFreeBuffer(a->RxBuffer[i]);
        if (a->RxPacket[i])
            NdisFreePacket(a->RxPacket[i]);
    }
    if (a->BufferPool)
        NdisFreeBufferPool(a->BufferPool);
    if (a->PacketPool)
        NdisFreePacketPool(a->PacketPool);
    if (a->RxBufs)
        NdisFreeMemory(a->RxBufs, RX_PACKETS * RX_BUF_LEN, 0);
    if (a->TxBufs)
        NdisMFreeSharedMemory(a->Handle, TX_DESCS * TX_BUF_LEN, FALSE, a->TxBufs, a->TxBufsPa);
    if (a->RxRing)
        NdisMFreeSharedMemory(a->Handle, RX_ALLOC_LEN, FALSE, a->RxRing, a->RxRingPa);
    if (a->MapRegsAllocated)
        NdisMFreeMapRegisters(a->Handle);
    if (a->PortsRegistered)
        NdisMDeregisterIoPortRange(a->Handle, a->PortStart, a->PortLength, (PVOID)a->IoBase);
    if (a->Mmio)
        NdisMUnmapIoSpace(a->Handle, a->Mmio, a->MemLength);
    NdisFreeSpinLock(&a->Lock);
    NdisFreeMemory(a, sizeof(*a), 0);
}

/* An integer value of the configuration key `cfg`: TRUE with it in *value if present. */
static BOOLEAN RtlReadInt(NDIS_HANDLE cfg, PCWSTR name, PULONG value)
{
    NDIS_STATUS status;
    NDIS_STRING kw;
    PNDIS_CONFIGURATION_PARAMETER param;

    NdisInitUnicodeString(&kw, name);
    NdisReadConfiguration(&status, &param, cfg, &kw, NdisParameterInteger);
    if (status != NDIS_STATUS_SUCCESS)
        return FALSE;
    *value = param->ParameterData.IntegerData;
    return TRUE;
}

/*
 * The parameters the INF advertises under Ndi\params, one subkey each: count
 * them and, when the adapter's key has no IoMode value, take the IoMode
 * subkey's `default`.
 */
static void RtlReadParamDefaults(PRTL_ADAPTER a, NDIS_HANDLE cfg, BOOLEAN wantIoMode)
{
    NDIS_STATUS status;
    NDIS_HANDLE ndi, params, sub;
    NDIS_STRING kw, name, iomode;
    ULONG i;

    NdisInitUnicodeString(&kw, L"Ndi");
    NdisOpenConfigurationKeyByName(&status, cfg, &kw, &ndi);
    if (status != NDIS_STATUS_SUCCESS)
        return;
    NdisInitUnicodeString(&kw, L"params");
    NdisOpenConfigurationKeyByName(&status, ndi, &kw, &params);
    if (status == NDIS_STATUS_SUCCESS) {
        NdisInitUnicodeString(&iomode, L"IoMode");
        for (i = 0; i < 64; i++) {
            NdisOpenConfigurationKeyByIndex(&status, params, i, &name, &sub);
            if (status != NDIS_STATUS_SUCCESS)
                break;
            a->NdiParams++;
            if (wantIoMode && NdisEqualUnicodeString(&name, &iomode, TRUE))
                RtlReadInt(sub, L"default", &a->IoMode);
            NdisCloseConfiguration(sub);
        }
        NdisCloseConfiguration(params);
    }
    NdisCloseConfiguration(ndi);
}

/* Writes an integer value into the configuration key `cfg`. */
static NDIS_STATUS RtlWriteInt(NDIS_HANDLE cfg, PUCHAR name, ULONG value)
{
    NDIS_STATUS status;
    NDIS_STRING kw;
    NDIS_CONFIGURATION_PARAMETER param;

    NdisInitializeString(&kw, name);
    if (!kw.Buffer)
        return NDIS_STATUS_RESOURCES;
    NdisZeroMemory(&param, sizeof(param));
    param.ParameterType = NdisParameterInteger;
    param.ParameterData.IntegerData = value;
    NdisWriteConfiguration(&status, cfg, &kw, &param);
    NdisFreeString(kw);
    return status;
}

/*
 * Loads the firmware file `name` (relative to system32\drivers): its length
 * and FNV-1a go into the adapter and back into the configuration key.
 */
static NDIS_STATUS RtlLoadFirmware(PRTL_ADAPTER a, NDIS_HANDLE cfg, PNDIS_STRING name)
{
    NDIS_STATUS status;
    NDIS_HANDLE file;
    UINT length, i;
    PUCHAR data;
    ULONG hash = 2166136261u;
    NDIS_PHYSICAL_ADDRESS highest = NDIS_PHYSICAL_ADDRESS_CONST(-1, -1);
    ANSI_STRING ansi;
    CHAR text[64];

    ansi.Buffer = text;
    ansi.Length = 0;
    ansi.MaximumLength = sizeof(text);
    NdisUnicodeStringToAnsiString(&ansi, name);

    NdisOpenFile(&status, &file, &length, name, highest);
    if (status != NDIS_STATUS_SUCCESS) {
        DbgPrint("rtl8139_ndis5: firmware %Z: NdisOpenFile status %x\n", &ansi, status);
        NdisWriteErrorLogEntry(a->Handle, NDIS_ERROR_CODE_DRIVER_FAILURE, 2, 0x46570001u, status);
        return status;
    }
    NdisMapFile(&status, (PVOID *)&data, file);
    if (status == NDIS_STATUS_SUCCESS) {
        for (i = 0; i < length; i++)
            hash = (hash ^ data[i]) * 16777619u;
        NdisUnmapFile(file);
    }
    NdisCloseFile(file);
    if (status != NDIS_STATUS_SUCCESS) {
        NdisWriteErrorLogEntry(a->Handle, NDIS_ERROR_CODE_DRIVER_FAILURE, 2, 0x46570002u, status);
        return status;
    }
    a->FirmwareLength = length;
    a->FirmwareChecksum = hash;
    DbgPrint("rtl8139_ndis5: firmware %Z: %u bytes, fnv1a %08x\n", &ansi, length, hash);
    status = RtlWriteInt(cfg, (PUCHAR) "FirmwareLength", length);
    if (status == NDIS_STATUS_SUCCESS)
        status = RtlWriteInt(cfg, (PUCHAR) "FirmwareChecksum", hash);
    return status;
}

static NDIS_STATUS RtlReadConfig(PRTL_ADAPTER a, NDIS_HANDLE WrapperConfigurationContext)
{
    PNDIS_CONFIGURATION_PARAMETER fw;
    NDIS_STRING kw;
    NDIS_STATUS status;
    NDIS_HANDLE cfg;
    PVOID addr;
    UINT len;
    BOOLEAN haveIoMode;
    ULONG v;

    a->IoMode = RTL_IO_PORT;
    NdisOpenConfiguration(&status, &cfg, WrapperConfigurationContext);
    if (status != NDIS_STATUS_SUCCESS)
        return NDIS_STATUS_SUCCESS;
    RtlReadInt(cfg, L"*SpeedDuplex", &a->SpeedDuplex);
    haveIoMode = RtlReadInt(cfg, L"IoMode", &a->IoMode);
    RtlReadParamDefaults(a, cfg, !haveIoMode);
    if (a->IoMode != RTL_IO_MEMORY)
        a->IoMode = RTL_IO_PORT;
    a->Deserialized = RtlReadInt(cfg, L"Deserialize", &v) && v == 1;
    if (RtlReadInt(cfg, L"ReceiveIndication", &v) && v <= RTL_RX_LOOKAHEAD_PEND)
        a->RxIndication = v;
    a->PendOids = RtlReadInt(cfg, L"PendOids", &v) && v == 1;
    NdisReadNetworkAddress(&status, &addr, &len, cfg);
    if (status == NDIS_STATUS_SUCCESS && len == 6 && !(((PUCHAR)addr)[0] & 1)) {
        PUCHAR p = addr;
        if (p[0] | p[1] | p[2] | p[3] | p[4] | p[5]) {
            NdisMoveMemory(a->ConfigAddress, p, 6);
            a->HaveConfigAddress = TRUE;
        }
    }
    status = NDIS_STATUS_SUCCESS;
    NdisInitUnicodeString(&kw, L"Firmware");
    NdisReadConfiguration(&status, &fw, cfg, &kw, NdisParameterString);
    if (status == NDIS_STATUS_SUCCESS && fw->ParameterType == NdisParameterString &&
        fw->ParameterData.StringData.Length)
        status = RtlLoadFirmware(a, cfg, &fw->ParameterData.StringData);
    else
        status = NDIS_STATUS_SUCCESS;
    NdisCloseConfiguration(cfg);
    return status;
}

/* The NDIS 5 work item Initialize schedules: counts itself, wakes Halt. */
static VOID RtlWorkItem(PNDIS_WORK_ITEM WorkItem, PVOID Context)
{
    PRTL_ADAPTER a = Context;

    if (WorkItem == &a->WorkItem)
        NdisInterlockedIncrement(&a->WorkItemsRun);
    NdisSetEvent(&a->WorkItemDone);
}

/* MiniportAllocateComplete: the block NdisMAllocateSharedMemoryAsync promised. */
static VOID NTAPI RtlAllocateComplete(NDIS_HANDLE Context, PVOID VirtualAddress,
                                      PNDIS_PHYSICAL_ADDRESS PhysicalAddress, ULONG Length,
                                      PVOID AllocationContext)
{
    PRTL_ADAPTER a = Context;

    if (AllocationContext == &a->AsyncShared && VirtualAddress) {
        a->AsyncShared = VirtualAddress;
        a->AsyncSharedPa = *PhysicalAddress;
        a->AsyncSharedLength = Length;
    }
    NdisSetEvent(&a->AsyncDone);
}

/* The control device's dispatch: create / close, and IOCTL_ICA_RTL_DIAG. */
static NTSTATUS NTAPI RtlControlDispatch(PDEVICE_OBJECT DeviceObject, PIRP Irp)
{
    PIO_STACK_LOCATION sl = IoGetCurrentIrpStackLocation(Irp);
    NTSTATUS status = STATUS_SUCCESS;
    ULONG_PTR info = 0;

    (void)DeviceObject;
    if (sl->MajorFunction == IRP_MJ_DEVICE_CONTROL) {
        if (sl->Parameters.DeviceIoControl.IoControlCode != IOCTL_ICA_RTL_DIAG || !RtlControlAdapter)
            status = STATUS_INVALID_DEVICE_REQUEST;
        else if (sl->Parameters.DeviceIoControl.OutputBufferLength < sizeof(RTL_DIAG))
            status = STATUS_BUFFER_TOO_SMALL;
        else {
            RtlFillDiag(RtlControlAdapter, Irp->AssociatedIrp.SystemBuffer);
            info = sizeof(RTL_DIAG);
        }
    }
    Irp->IoStatus.Status = status;
    Irp->IoStatus.Information = info;
    IoCompleteRequest(Irp, IO_NO_INCREMENT);
    return status;
}

static void RtlRegisterControlDevice(PRTL_ADAPTER a)
{
    PDRIVER_DISPATCH dispatch[IRP_MJ_MAXIMUM_FUNCTION + 1];
    NDIS_STRING name, link;
    PDEVICE_OBJECT device;
    UINT i;

    if (RtlControlAdapter)
        return;
    for (i = 0; i <= IRP_MJ_MAXIMUM_FUNCTION; i++)
        dispatch[i] = NULL;
    dispatch[IRP_MJ_CREATE] = RtlControlDispatch;
    dispatch[IRP_MJ_CLEANUP] = RtlControlDispatch;
    dispatch[IRP_MJ_CLOSE] = RtlControlDispatch;
    dispatch[IRP_MJ_DEVICE_CONTROL] = RtlControlDispatch;
    NdisInitUnicodeString(&name, L"\\Device\\IcaRtl8139");
    NdisInitUnicodeString(&link, L"\\DosDevices\\IcaRtl8139");
    if (NdisMRegisterDevice(RtlWrapper, &name, &link, dispatch, &device, &a->ControlDevice) ==
        NDIS_STATUS_SUCCESS)
        RtlControlAdapter = a;
    else
        a->ControlDevice = NULL;
}

/* What Initialize learns from NDIS besides the configuration. */
static void RtlQueryNdis(PRTL_ADAPTER a, NDIS_HANDLE WrapperConfigurationContext)
{
    NDIS_STRING name;
    UINT (NTAPI *getVersion)(VOID);
    ULONG idle, busy, index = 99;

    if (NdisImmediateReadPciSlotInformation(WrapperConfigurationContext, 0, 0, &a->PciId, 4) != 4)
        a->PciId = 0;
    NdisInitUnicodeString(&name, L"NdisGetVersion");
    getVersion = (UINT (NTAPI *)(VOID))NdisGetRoutineAddress(&name);
    if (getVersion)
        a->NdisVersion = getVersion();
    NdisInitUnicodeString(&name, L"NdisNoSuchRoutine");
    if (NdisGetRoutineAddress(&name))
        a->NdisVersion = 0;
    if (NdisMQueryAdapterInstanceName(&name, a->Handle) == NDIS_STATUS_SUCCESS) {
        a->InstanceNameLength = name.Length;
        NdisFreeString(name);
    }
    NdisGetCurrentProcessorCounts(&idle, &busy, &index);
    if (index != 0)
        a->NdisVersion = 0;
}

static NDIS_STATUS RtlQueryResources(PRTL_ADAPTER a, NDIS_HANDLE WrapperConfigurationContext)
{
    union {
        NDIS_RESOURCE_LIST list;
        UCHAR raw[512];
    } res;
    UINT size = sizeof(res);
    NDIS_STATUS status;
    BOOLEAN port = FALSE, mem = FALSE, irq = FALSE;

    NdisMQueryAdapterResources(&status, WrapperConfigurationContext, &res.list, &size);
    if (status != NDIS_STATUS_SUCCESS)
        return status;
    for (ULONG i = 0; i < res.list.Count; i++) {
        PCM_PARTIAL_RESOURCE_DESCRIPTOR d = &res.list.PartialDescriptors[i];
        if (d->Type == CmResourceTypePort && !port) {
            a->PortStart = d->u.Port.Start.LowPart;
            a->PortLength = d->u.Port.Length;
            port = TRUE;
        } else if (d->Type == CmResourceTypeMemory && !mem) {
            a->MemStart = d->u.Memory.Start;
            a->MemLength = d->u.Memory.Length;
            mem = TRUE;
        } else if (d->Type == CmResourceTypeInterrupt && !irq) {
            a->IrqLevel = d->u.Interrupt.Level;
            a->IrqVector = d->u.Interrupt.Vector;
            irq = TRUE;
        }
    }
    if (!irq)
        return NDIS_STATUS_RESOURCE_CONFLICT;
    if (a->IoMode == RTL_IO_MEMORY ? !mem || a->MemLength < REG_SPAN
                                   : !port || a->PortLength < REG_SPAN)
        return NDIS_STATUS_RESOURCE_CONFLICT;
    return NDIS_STATUS_SUCCESS;
}

static NDIS_STATUS NTAPI RtlInitialize(PNDIS_STATUS OpenErrorStatus, PUINT SelectedMediumIndex,
                                       PNDIS_MEDIUM MediumArray, UINT MediumArraySize,
                                       NDIS_HANDLE MiniportAdapterHandle,
                                       NDIS_HANDLE WrapperConfigurationContext)
{
    PRTL_ADAPTER a;
    NDIS_STATUS status;
    PVOID io;
    UINT i;

    *OpenErrorStatus = NDIS_STATUS_SUCCESS;
    for (i = 0; i < MediumArraySize; i++)
        if (MediumArray[i] == NdisMedium802_3)
            break;
    if (i == MediumArraySize)
        return NDIS_STATUS_UNSUPPORTED_MEDIA;
    *SelectedMediumIndex = i;

    status = NdisAllocateMemoryWithTag((PVOID *)&a, sizeof(*a), RTL_TAG);
    if (status != NDIS_STATUS_SUCCESS)
        return status;
    NdisZeroMemory(a, sizeof(*a));
    a->Handle = MiniportAdapterHandle;
    NdisAllocateSpinLock(&a->Lock);
    a->Lookahead = ETH_MAX_FRAME - ETH_HEADER;
    a->PacketFilter = NDIS_PACKET_TYPE_DIRECTED | NDIS_PACKET_TYPE_BROADCAST;

    status = RtlReadConfig(a, WrapperConfigurationContext);
    if (status != NDIS_STATUS_SUCCESS)
        goto fail;
    RtlQueryNdis(a, WrapperConfigurationContext);
    status = RtlQueryResources(a, WrapperConfigurationContext);
    if (status != NDIS_STATUS_SUCCESS)
        goto fail;

    NdisMSetAttributesEx(MiniportAdapterHandle, a, 0,
                         NDIS_ATTRIBUTE_BUS_MASTER |
                             (a->Deserialized ? NDIS_ATTRIBUTE_DESERIALIZE : 0),
                         NdisInterfacePci);
    NdisMInitializeTimer(&a->RxTimer, MiniportAdapterHandle, RtlRxTimer, a);
    NdisMInitializeTimer(&a->OidTimer, MiniportAdapterHandle, RtlOidTimer, a);

    if (a->IoMode == RTL_IO_MEMORY) {
        status = NdisMMapIoSpace(&io, MiniportAdapterHandle, a->MemStart, a->MemLength);
        if (status != NDIS_STATUS_SUCCESS)
            goto fail;
        a->Mmio = io;
    } else {
        status = NdisMRegisterIoPortRange(&io, MiniportAdapterHandle, a->PortStart,
                                          a->PortLength);
        if (status != NDIS_STATUS_SUCCESS)
            goto fail;
        a->IoBase = (ULONG_PTR)io;
        a->PortsRegistered = TRUE;
    }

    /* The factory address, unless the configuration overrides it. */
    for (i = 0; i < 6; i++)
        a->PermanentAddress[i] = Rd8(a, R_IDR0 + i);
    NdisMoveMemory(a->CurrentAddress,
                   a->HaveConfigAddress ? a->ConfigAddress : a->PermanentAddress, 6);

    /* One map register per transmit descriptor (zero-copy sends). */
    status = NdisMAllocateMapRegisters(MiniportAdapterHandle, 0, NDIS_DMA_32BITS, TX_DESCS,
                                       TX_BUF_LEN);
    if (status != NDIS_STATUS_SUCCESS)
        goto fail;
    a->MapRegsAllocated = TRUE;
    NdisInitializeNPagedLookasideList(&a->TxLookaside, NULL, NULL, 0, sizeof(RTL_TX_CONTEXT),
                                      RTL_TX_TAG, 0);
    a->LookasideReady = TRUE;

    status = NDIS_STATUS_RESOURCES;
    NdisMAllocateSharedMemory(MiniportAdapterHandle, RX_ALLOC_LEN, FALSE, (PVOID *)&a->RxRing,
                              &a->RxRingPa);
    if (!a->RxRing)
        goto fail;
    NdisMAllocateSharedMemory(MiniportAdapterHandle, TX_DESCS * TX_BUF_LEN, FALSE,
                              (PVOID *)&a->TxBufs, &a->TxBufsPa);
    if (!a->TxBufs)
        goto fail;

    if (NdisAllocateMemoryWithTag((PVOID *)&a->RxBufs, RX_PACKETS * RX_BUF_LEN, RTL_TAG) !=
        NDIS_STATUS_SUCCESS)
        goto fail;
    NdisAllocatePacketPool(&status, &a->PacketPool, RX_PACKETS, PROTOCOL_RESERVED_SIZE_IN_PACKET);
    if (status != NDIS_STATUS_SUCCESS)
        goto fail;
    NdisAllocateBufferPool(&status, &a->BufferPool, RX_PACKETS);
    if (status != NDIS_STATUS_SUCCESS)
        goto fail;
    for (i = 0; i < RX_PACKETS; i++) {
        NdisAllocatePacket(&status, &a->RxPacket[i], a->PacketPool);
        if (status != NDIS_STATUS_SUCCESS)
            goto fail;
        NdisAllocateBuffer(&status, &a->RxBuffer[i], a->BufferPool, a->RxBufs + i * RX_BUF_LEN,
                           RX_BUF_LEN);
        if (status != NDIS_STATUS_SUCCESS)
            goto fail;
        NdisChainBufferAtFront(a->RxPacket[i], a->RxBuffer[i]);
        *(ULONG_PTR *)a->RxPacket[i]->MiniportReserved = i;
        NDIS_SET_PACKET_HEADER_SIZE(a->RxPacket[i], ETH_HEADER);
        a->RxFree[a->RxFreeCount++] = i;
    }

    if (!RtlHwInit(a)) {
        status = NDIS_STATUS_HARD_ERRORS;
        goto fail;
    }

    status = NdisMRegisterInterrupt(&a->Interrupt, MiniportAdapterHandle, a->IrqVector,
                                    a->IrqLevel, TRUE, TRUE, NdisInterruptLevelSensitive);
    if (status != NDIS_STATUS_SUCCESS) {
        Wr16(a, R_IMR, 0);
        Wr8(a, R_CR, 0);
        goto fail;
    }
    a->InterruptRegistered = TRUE;
    NdisInitializeEvent(&a->WorkItemDone);
    NdisInitializeWorkItem(&a->WorkItem, RtlWorkItem, a);
    a->WorkItemScheduled = NdisScheduleWorkItem(&a->WorkItem) == NDIS_STATUS_SUCCESS;
    RtlRegisterControlDevice(a);
    NdisInitializeEvent(&a->AsyncDone);
    a->AsyncPending = NdisMAllocateSharedMemoryAsync(MiniportAdapterHandle, 256, FALSE,
                                                     &a->AsyncShared) == NDIS_STATUS_PENDING;
    DbgPrint("rtl8139_ndis5: up, %s %x irq %u mac %02x:%02x:%02x:%02x:%02x:%02x link %u\n",
             a->Mmio ? "mmio" : "io",
             a->Mmio ? NdisGetPhysicalAddressLow(a->MemStart) : a->PortStart, a->IrqVector, a->CurrentAddress[0], a->CurrentAddress[1],
             a->CurrentAddress[2], a->CurrentAddress[3], a->CurrentAddress[4],
             a->CurrentAddress[5], a->LinkUp);
    return NDIS_STATUS_SUCCESS;

fail:
    RtlFreeAll(a);
    return status;
}

/* Appends `p` (a packet we own) to `list`. */
static void RtlListAppend(PRTL_PACKET_LIST list, PNDIS_PACKET p)
{
    RTL_PACKET_NEXT(p) = NULL;
    if (list->Tail)
        RTL_PACKET_NEXT(list->Tail) = p;
    else
        list->Head = p;
    list->Tail = p;
}

/* Takes the first packet off `list` (NULL when it is empty). */
static PNDIS_PACKET RtlListPop(PRTL_PACKET_LIST list)
{
    PNDIS_PACKET p = list->Head;

    if (p) {
        list->Head = RTL_PACKET_NEXT(p);
        if (!list->Head)
            list->Tail = NULL;
    }
    return p;
}

/*
 * Descriptor n's send is over (lock held): release its map register, recycle
 * the context, and put the packet on `done` with `status`.
 */
static void RtlRetireSend(PRTL_ADAPTER a, ULONG n, NDIS_STATUS status, PRTL_PACKET_LIST done)
{
    PRTL_TX_CONTEXT ctx = a->Tx[n];

    a->Tx[n] = NULL;
    if (ctx->Mapped)
        NdisMCompleteBufferPhysicalMapping(a->Handle, ctx->Mapped, n);
    NDIS_SET_PACKET_STATUS(ctx->Packet, status);
    RtlListAppend(done, ctx->Packet);
    NdisFreeToNPagedLookasideList(&a->TxLookaside, ctx);
}

/* Completes the packets on `done` with the status each carries (lock not held). */
static void RtlCompleteSends(PRTL_ADAPTER a, PRTL_PACKET_LIST done)
{
    PNDIS_PACKET p;

    while ((p = RtlListPop(done)) != NULL)
        NdisMSendComplete(a->Handle, p, NDIS_GET_PACKET_STATUS(p));
}

/* Every send the driver holds, on the chip or queued, onto `done` with `status` (lock held). */
static void RtlAbortSends(PRTL_ADAPTER a, NDIS_STATUS status, PRTL_PACKET_LIST done)
{
    PNDIS_PACKET p;

    for (ULONG i = 0; i < TX_DESCS; i++)
        if (a->Tx[i])
            RtlRetireSend(a, i, status, done);
    while ((p = RtlListPop(&a->SendQueue)) != NULL) {
        NDIS_SET_PACKET_STATUS(p, status);
        RtlListAppend(done, p);
    }
}

/* Steps the ring past the record whose length field is `len` (frame + CRC). */
static void RtlAdvanceRx(PRTL_ADAPTER a, UINT len)
{
    a->RxOffset = (a->RxOffset + len + 4 + 3) & ~3u;
    a->RxOffset %= RX_RING_LEN;
    Wr16(a, R_CAPR, (USHORT)(a->RxOffset - 16));
}

/* Copies `len` bytes from `src` into the buffers of `Packet`; the bytes that fitted. */
static UINT RtlCopyToPacket(PNDIS_PACKET Packet, const UCHAR *src, UINT len)
{
    PNDIS_BUFFER buf;
    UINT copied = 0;

    NdisQueryPacket(Packet, NULL, NULL, &buf, NULL);
    while (buf && copied < len) {
        PVOID va;
        UINT n;

        NdisQueryBufferSafe(buf, &va, &n, NormalPagePriority);
        if (!va)
            break;
        if (n > len - copied)
            n = len - copied;
        NdisMoveMemory(va, src + copied, n);
        copied += n;
        NdisGetNextBuffer(buf, &buf);
    }
    return copied;
}

/*
 * Completes the pended transfers from the current frame, with its data
 * (`status` NDIS_STATUS_SUCCESS) or failed with `status`, and steps the ring
 * past the frame; at DISPATCH_LEVEL, with no context walking the ring.
 */
static void RtlFinishTransfers(PRTL_ADAPTER a, NDIS_STATUS status)
{
    ULONG n = a->PendingCount;

    if (!n)
        return;
    for (ULONG i = 0; i < n; i++) {
        RTL_TRANSFER *t = &a->Pending[i];
        UINT done = 0;

        if (status == NDIS_STATUS_SUCCESS)
            done = RtlCopyToPacket(t->Packet, a->RxFrame.Data + t->Offset, t->Bytes);
        NdisMTransferDataComplete(a->Handle, t->Packet, status, done);
    }
    RtlAdvanceRx(a, a->RxFrame.Record);
    a->RxFrame.Data = NULL;
    NdisDprAcquireSpinLock(&a->Lock);
    a->PendingCount = 0;
    NdisDprReleaseSpinLock(&a->Lock);
}

/* Answers the pended request, or fails it with NDIS_STATUS_REQUEST_ABORTED. */
static void RtlCompletePendedOid(PRTL_ADAPTER a, BOOLEAN abort)
{
    RTL_PENDED_OID r = a->PendedOid;
    NDIS_STATUS s;

    if (!a->OidPending)
        return;
    a->OidPending = FALSE;
    a->OidsPended++;
    if (abort) {
        *r.Done = 0;
        *r.Needed = 0;
        s = NDIS_STATUS_REQUEST_ABORTED;
    } else if (r.Query) {
        s = RtlQuery(a, r.Oid, r.Buffer, r.Length, r.Done, r.Needed);
    } else {
        s = RtlSet(a, r.Oid, r.Buffer, r.Length, r.Done, r.Needed);
    }
    if (r.Query)
        NdisMQueryInformationComplete(a->Handle, s);
    else
        NdisMSetInformationComplete(a->Handle, s);
}

static VOID NTAPI RtlHalt(NDIS_HANDLE Context)
{
    PRTL_ADAPTER a = Context;
    RTL_PACKET_LIST done = {NULL, NULL};
    BOOLEAN cancelled;
    KIRQL old;

    Wr16(a, R_IMR, 0);
    Wr8(a, R_CR, 0);
    Wr16(a, R_ISR, 0xFFFF);
    NdisMCancelTimer(&a->RxTimer, &cancelled);
    NdisMCancelTimer(&a->OidTimer, &cancelled);
    /* Nothing the driver holds outlives Halt: transfers, the request and sends fail. */
    KeRaiseIrql(DISPATCH_LEVEL, &old);
    RtlFinishTransfers(a, NDIS_STATUS_FAILURE);
    KeLowerIrql(old);
    RtlCompletePendedOid(a, TRUE);
    NdisAcquireSpinLock(&a->Lock);
    RtlAbortSends(a, NDIS_STATUS_FAILURE, &done);
    NdisReleaseSpinLock(&a->Lock);
    RtlCompleteSends(a, &done);
    /* The work item Initialize scheduled may not have run yet: it uses `a`. */
    if (a->WorkItemScheduled)
        NdisWaitEvent(&a->WorkItemDone, 0);
    if (a->AsyncPending)
        NdisWaitEvent(&a->AsyncDone, 0);
    if (a->AsyncSharedLength)
        NdisMFreeSharedMemory(a->Handle, a->AsyncSharedLength, FALSE, a->AsyncShared,
                              a->AsyncSharedPa);
    if (a->ControlDevice) {
        NdisMDeregisterDevice(a->ControlDevice);
        RtlControlAdapter = NULL;
    }
    RtlFreeAll(a);
}

static VOID NTAPI RtlShutdown(PVOID Context)
{
    PRTL_ADAPTER a = Context;

    Wr16(a, R_IMR, 0);
    Wr8(a, R_CR, CR_RST);
}

static BOOLEAN NTAPI RtlCheckForHang(NDIS_HANDLE Context)
{
    (void)Context;
    return FALSE;
}

/* At DISPATCH_LEVEL: the ring starts over, so pended transfers and held sends are aborted. */
static NDIS_STATUS NTAPI RtlReset(PBOOLEAN AddressingReset, NDIS_HANDLE Context)
{
    PRTL_ADAPTER a = Context;
    RTL_PACKET_LIST done = {NULL, NULL};
    BOOLEAN ok;

    Wr16(a, R_IMR, 0);
    RtlFinishTransfers(a, NDIS_STATUS_REQUEST_ABORTED);
    NdisDprAcquireSpinLock(&a->Lock);
    RtlAbortSends(a, NDIS_STATUS_REQUEST_ABORTED, &done);
    ok = RtlHwInit(a);
    NdisDprReleaseSpinLock(&a->Lock);
    RtlCompleteSends(a, &done);
    *AddressingReset = FALSE; /* filter and multicast list are reprogrammed here */
    return ok ? NDIS_STATUS_SUCCESS : NDIS_STATUS_HARD_ERRORS;
}

/*
 * Zero copy: a packet that is one buffer of at least the minimum frame (the
 * chip does not pad), 4-byte aligned (TSAD must be) and physically contiguous
 * below 4 GiB is DMA'd from where it is, through descriptor n's map register.
 * TRUE with its bus address in *pa; FALSE (nothing left mapped) otherwise.
 */
static BOOLEAN RtlMapForDevice(PRTL_ADAPTER a, ULONG n, PNDIS_BUFFER buf, UINT count,
                               UINT total, PULONG pa)
{
    NDIS_PHYSICAL_ADDRESS_UNIT units[2]; /* a frame spans at most two pages */
    UINT nunits = 0;
    PVOID va;
    UINT len;

    if (count != 1 || total < ETH_MIN_FRAME)
        return FALSE;
    NdisQueryBufferSafe(buf, &va, &len, NormalPagePriority);
    if (!va || len < total || ((ULONG_PTR)va & 3))
        return FALSE;
    NdisMStartBufferPhysicalMapping(a->Handle, buf, n, TRUE, units, &nunits);
    if (nunits == 1 && units[0].PhysicalAddress.HighPart == 0 && units[0].Length >= total &&
        !(units[0].PhysicalAddress.LowPart & 3)) {
        *pa = units[0].PhysicalAddress.LowPart;
        return TRUE;
    }
    if (nunits)
        NdisMCompleteBufferPhysicalMapping(a->Handle, buf, n);
    return FALSE;
}

/* Copy a packet into descriptor n's transmit buffer; the length to send, 0 on failure. */
static UINT RtlCopyForDevice(PRTL_ADAPTER a, ULONG n, PNDIS_BUFFER buf, UINT total)
{
    PUCHAR dst = a->TxBufs + n * TX_BUF_LEN;
    UINT copied = 0;

    while (buf) {
        PVOID va;
        UINT len;
        NdisQueryBufferSafe(buf, &va, &len, NormalPagePriority);
        if (!va)
            return 0;
        if (len > total - copied)
            len = total - copied;
        NdisMoveMemory(dst + copied, va, len);
        copied += len;
        NdisGetNextBuffer(buf, &buf);
    }
    if (copied < ETH_MIN_FRAME) {
        NdisZeroMemory(dst + copied, ETH_MIN_FRAME - copied);
        copied = ETH_MIN_FRAME;
    }
    return copied;
}

/*
 * Hands `Packet` to the next descriptor (lock held, one free), zero copy if it
 * can be: NDIS_STATUS_PENDING once the chip has it, NDIS_STATUS_RESOURCES when
 * it cannot be started now, another failure for a packet that cannot be sent.
 */
static NDIS_STATUS RtlStartSend(PRTL_ADAPTER a, PNDIS_PACKET Packet)
{
    PNDIS_BUFFER buf;
    UINT total, count, length;
    PRTL_TX_CONTEXT ctx;
    ULONG n, pa;

    NdisQueryPacket(Packet, NULL, &count, &buf, &total);
    if (total < ETH_HEADER || total > ETH_MAX_FRAME)
        return NDIS_STATUS_INVALID_PACKET;
    ctx = NdisAllocateFromNPagedLookasideList(&a->TxLookaside);
    if (!ctx)
        return NDIS_STATUS_RESOURCES;
    n = a->TxCur;
    ctx->Packet = Packet;
    ctx->Mapped = NULL;
    if (RtlMapForDevice(a, n, buf, count, total, &pa)) {
        ctx->Mapped = buf;
        length = total;
        a->ZeroCopySends++;
    } else {
        length = RtlCopyForDevice(a, n, buf, total);
        if (!length) {
            NdisFreeToNPagedLookasideList(&a->TxLookaside, ctx);
            return NDIS_STATUS_RESOURCES;
        }
        pa = NdisGetPhysicalAddressLow(a->TxBufsPa) + n * TX_BUF_LEN;
        a->CopiedSends++;
    }
    a->Tx[n] = ctx;
    a->TxCur = (n + 1) % TX_DESCS;
    a->TxBusy++;
    Wr32(a, R_TSAD0 + 4 * n, pa);
    /* Writing the size with OWN clear starts the transmission. */
    Wr32(a, R_TSD0 + 4 * n, TSD_ERTXTH | length);
    return NDIS_STATUS_PENDING;
}

/*
 * Deserialized: starts queued packets while descriptors are free (lock held);
 * those that cannot be sent go to `done`.  `waited`: called as descriptors
 * free up, so every packet started waited in the queue.
 */
static void RtlStartQueued(PRTL_ADAPTER a, PRTL_PACKET_LIST done, BOOLEAN waited)
{
    while (a->SendQueue.Head && a->TxBusy < TX_DESCS) {
        PNDIS_PACKET p = RtlListPop(&a->SendQueue);
        NDIS_STATUS s = RtlStartSend(a, p);

        if (s == NDIS_STATUS_PENDING) {
            if (waited)
                a->SendsWaited++;
        } else {
            a->XmitError++;
            NDIS_SET_PACKET_STATUS(p, s);
            RtlListAppend(done, p);
        }
    }
}

static VOID NTAPI RtlSendPackets(NDIS_HANDLE Context, PPNDIS_PACKET Packets, UINT Count)
{
    PRTL_ADAPTER a = Context;
    RTL_PACKET_LIST done = {NULL, NULL};
    BOOLEAN refuse = FALSE;

    NdisAcquireSpinLock(&a->Lock);
    for (UINT i = 0; i < Count; i++) {
        PNDIS_PACKET p = Packets[i];
        NDIS_STATUS s;

        if (a->Deserialized) {
            /* Ours until NdisMSendComplete: queued, started below as descriptors allow. */
            NDIS_SET_PACKET_STATUS(p, NDIS_STATUS_PENDING);
            RtlListAppend(&a->SendQueue, p);
            continue;
        }
        /*
         * Serialized: the status hands the packet back unless it is PENDING;
         * NDIS requeues the first RESOURCES and every packet after it.
         */
        s = refuse || a->TxBusy == TX_DESCS ? NDIS_STATUS_RESOURCES : RtlStartSend(a, p);
        if (s == NDIS_STATUS_RESOURCES) {
            refuse = TRUE;
            a->SendsRefused++;
        } else if (s != NDIS_STATUS_PENDING) {
            a->XmitError++;
        }
        NDIS_SET_PACKET_STATUS(p, s);
    }
    RtlStartQueued(a, &done, FALSE);
    NdisReleaseSpinLock(&a->Lock);
    RtlCompleteSends(a, &done);
}

/*
 * Retires the descriptors the chip has finished with (OWN set with TOK or
 * TABT), starts what waits for them, and completes the sends.
 */
static void RtlTxDone(PRTL_ADAPTER a)
{
    RTL_PACKET_LIST done = {NULL, NULL};

    NdisDprAcquireSpinLock(&a->Lock);
    while (a->TxBusy) {
        ULONG n = a->TxDirty;
        ULONG tsd = Rd32(a, R_TSD0 + 4 * n);
        NDIS_STATUS s;

        if (!(tsd & TSD_OWN) || !(tsd & (TSD_TOK | TSD_TABT)))
            break;
        if (tsd & TSD_TOK) {
            a->XmitOk++;
            s = NDIS_STATUS_SUCCESS;
        } else {
            a->XmitError++;
            s = NDIS_STATUS_FAILURE;
        }
        a->TxDirty = (n + 1) % TX_DESCS;
        a->TxBusy--;
        if (a->Tx[n])
            RtlRetireSend(a, n, s, &done);
    }
    RtlStartQueued(a, &done, TRUE);
    NdisDprReleaseSpinLock(&a->Lock);
    RtlCompleteSends(a, &done);
}

/*
 * ReceiveIndication 0: the frame copied into a free receive packet and
 * indicated with NdisMIndicateReceivePacket.
 */
static void RtlIndicatePacket(PRTL_ADAPTER a, const UCHAR *frame, UINT flen)
{
    PNDIS_PACKET p;
    ULONG i;
    BOOLEAN low;

    NdisDprAcquireSpinLock(&a->Lock);
    if (a->RxFreeCount == 0) {
        a->RcvNoBuffer++;
        NdisDprReleaseSpinLock(&a->Lock);
        return;
    }
    i = a->RxFree[--a->RxFreeCount];
    low = a->RxFreeCount < 2;
    a->RcvOk++;
    NdisDprReleaseSpinLock(&a->Lock);

    p = a->RxPacket[i];
    NdisMoveMemory(a->RxBufs + i * RX_BUF_LEN, frame, flen);
    NdisAdjustBufferLength(a->RxBuffer[i], flen);
    NdisRecalculatePacketCounts(p);
    /* Keep a reserve: the last packets are lent only for the call. */
    NDIS_SET_PACKET_STATUS(p, low ? NDIS_STATUS_RESOURCES : NDIS_STATUS_SUCCESS);
    NdisMIndicateReceivePacket(a->Handle, &p, 1);
    if (NDIS_GET_PACKET_STATUS(p) != NDIS_STATUS_PENDING) {
        NdisDprAcquireSpinLock(&a->Lock);
        a->RxFree[a->RxFreeCount++] = i;
        NdisDprReleaseSpinLock(&a->Lock);
    }
}

/*
 * ReceiveIndication 1 and 2: the header and a lookahead of the current
 * lookahead size (or the whole frame, if smaller) straight from the ring; the
 * frame stays current while transfers from it are pending.
 */
static void RtlIndicateLookahead(PRTL_ADAPTER a, PUCHAR frame, UINT flen, UINT record)
{
    UINT data = flen - ETH_HEADER;
    UINT look = data < a->Lookahead ? data : a->Lookahead;

    a->RxFrame.Data = frame + ETH_HEADER;
    a->RxFrame.Length = data;
    a->RxFrame.Record = record;
    a->RcvOk++;
    a->LookaheadIndications++;
    if (look < data)
        a->ShortLookaheads++;
    /* The macro passes HeaderBuffer as the (PCHAR) destination address too. */
    NdisMEthIndicateReceive(a->Handle, &a->RxFrame, (PVOID)frame, ETH_HEADER, frame + ETH_HEADER,
                            look, data);
    if (!a->PendingCount)
        a->RxFrame.Data = NULL;
}

/*
 * Walks the receive ring from RxOffset to the chip's write pointer,
 * indicating each frame; at DISPATCH_LEVEL, from the interrupt DPC or the
 * transfer timer.  One context walks at a time, and none while pended
 * transfers hold the current frame: the walk that pended them arms the
 * transfer timer, which completes them, steps past the frame and walks on.
 */
static void RtlRxDone(PRTL_ADAPTER a)
{
    BOOLEAN indicated = FALSE, pended;
    int budget = 64;

    NdisDprAcquireSpinLock(&a->Lock);
    if (a->RxWalking || a->PendingCount) {
        NdisDprReleaseSpinLock(&a->Lock);
        return;
    }
    a->RxWalking = TRUE;
    NdisDprReleaseSpinLock(&a->Lock);

    while (!(Rd8(a, R_CR) & CR_BUFE) && budget-- > 0) {
        PUCHAR rec = a->RxRing + a->RxOffset;
        USHORT status = rec[0] | rec[1] << 8;
        USHORT len = rec[2] | rec[3] << 8;

        if (!(status & RX_ROK) || len < ETH_HEADER + 4 || len > ETH_MAX_FRAME + 4) {
            /* A bad header: the ring is out of sync, restart the receiver. */
            NdisDprAcquireSpinLock(&a->Lock);
            a->RcvError++;
            Wr8(a, R_CR, CR_TE);
            Wr8(a, R_CR, CR_RE | CR_TE);
            Wr32(a, R_RBSTART, NdisGetPhysicalAddressLow(a->RxRingPa));
            RtlApplyFilter(a);
            a->RxOffset = 0;
            Wr16(a, R_CAPR, (USHORT)(0 - 16));
            NdisDprReleaseSpinLock(&a->Lock);
            break;
        }
        /* WRAP=1: a record that crosses the end continues linearly past it. */
        if (a->RxIndication == RTL_RX_PACKETS) {
            RtlIndicatePacket(a, rec + 4, len - 4);
        } else {
            RtlIndicateLookahead(a, rec + 4, len - 4, len);
            indicated = TRUE;
            if (a->PendingCount)
                break;
        }
        RtlAdvanceRx(a, len);
    }
    if (indicated)
        NdisMEthIndicateReceiveComplete(a->Handle);
    NdisDprAcquireSpinLock(&a->Lock);
    a->RxWalking = FALSE;
    pended = a->PendingCount != 0;
    NdisDprReleaseSpinLock(&a->Lock);
    if (pended)
        NdisMSetTimer(&a->RxTimer, 0);
}

/* The transfer timer: the pended transfers done (as a DMA engine would), the walk goes on. */
static VOID NTAPI RtlRxTimer(PVOID SystemSpecific1, PVOID Context, PVOID SystemSpecific2,
                             PVOID SystemSpecific3)
{
    PRTL_ADAPTER a = Context;

    (void)SystemSpecific1;
    (void)SystemSpecific2;
    (void)SystemSpecific3;
    RtlFinishTransfers(a, NDIS_STATUS_SUCCESS);
    RtlRxDone(a);
}

/*
 * Copies data of the frame being indicated (MiniportReceiveContext) from
 * ByteOffset past its header; ReceiveIndication 2 pends the copy for the
 * transfer timer.
 */
static NDIS_STATUS NTAPI RtlTransferData(PNDIS_PACKET Packet, PUINT BytesTransferred,
                                         NDIS_HANDLE Context, NDIS_HANDLE ReceiveContext,
                                         UINT ByteOffset, UINT BytesToTransfer)
{
    PRTL_ADAPTER a = Context;
    PRTL_RX_FRAME f = ReceiveContext;
    RTL_TRANSFER *t;

    *BytesTransferred = 0;
    if (f != &a->RxFrame || !f->Data || ByteOffset > f->Length)
        return NDIS_STATUS_FAILURE;
    if (BytesToTransfer > f->Length - ByteOffset)
        BytesToTransfer = f->Length - ByteOffset;
    if (a->RxIndication != RTL_RX_LOOKAHEAD_PEND) {
        *BytesTransferred = RtlCopyToPacket(Packet, f->Data + ByteOffset, BytesToTransfer);
        a->Transfers++;
        return NDIS_STATUS_SUCCESS;
    }
    if (a->PendingCount == RTL_MAX_TRANSFERS)
        return NDIS_STATUS_RESOURCES;
    t = &a->Pending[a->PendingCount];
    t->Packet = Packet;
    t->Offset = ByteOffset;
    t->Bytes = BytesToTransfer;
    NdisDprAcquireSpinLock(&a->Lock);
    a->PendingCount++;
    NdisDprReleaseSpinLock(&a->Lock);
    a->TransfersPended++;
    return NDIS_STATUS_PENDING;
}

static VOID NTAPI RtlReturnPacket(NDIS_HANDLE Context, PNDIS_PACKET Packet)
{
    PRTL_ADAPTER a = Context;
    ULONG i = (ULONG)*(ULONG_PTR *)Packet->MiniportReserved;

    NdisAdjustBufferLength(a->RxBuffer[i], RX_BUF_LEN);
    NdisDprAcquireSpinLock(&a->Lock);
    a->RxFree[a->RxFreeCount++] = i;
    NdisDprReleaseSpinLock(&a->Lock);
}

static VOID NTAPI RtlIsr(PBOOLEAN InterruptRecognized, PBOOLEAN QueueHandleInterrupt,
                         NDIS_HANDLE Context)
{
    PRTL_ADAPTER a = Context;
    USHORT isr = Rd16(a, R_ISR);

    if (!(isr & INT_MASK) || isr == 0xFFFF) {
        *InterruptRecognized = FALSE;
        *QueueHandleInterrupt = FALSE;
        return;
    }
    Wr16(a, R_IMR, 0); /* masked until HandleInterrupt has run */
    *InterruptRecognized = TRUE;
    *QueueHandleInterrupt = TRUE;
}

static VOID NTAPI RtlHandleInterrupt(NDIS_HANDLE Context)
{
    PRTL_ADAPTER a = Context;
    USHORT isr;

    while ((isr = Rd16(a, R_ISR) & INT_MASK) != 0) {
        Wr16(a, R_ISR, isr);
        if (isr & (INT_TOK | INT_TER))
            RtlTxDone(a);
        if (isr & (INT_ROK | INT_RER | INT_RXOVW | INT_FOVW)) {
            if (isr & (INT_RER | INT_RXOVW | INT_FOVW))
                a->RcvError++;
            RtlRxDone(a);
        }
        if (isr & INT_LINKCHG) {
            BOOLEAN up = RtlLinkUp(a);
            if (up != a->LinkUp) {
                a->LinkUp = up;
                NdisMIndicateStatus(a->Handle,
                                    up ? NDIS_STATUS_MEDIA_CONNECT : NDIS_STATUS_MEDIA_DISCONNECT,
                                    NULL, 0);
                NdisMIndicateStatusComplete(a->Handle);
            }
        }
    }
    Wr16(a, R_IMR, INT_MASK);
}

/* Answers a query (at once, or from the OID timer). */
/* The counters OID_ICA_RTL_DIAG and IOCTL_ICA_RTL_DIAG report. */
static void RtlFillDiag(PRTL_ADAPTER a, RTL_DIAG *d)
{
    d->IoMode = a->IoMode;
    d->NdiParams = a->NdiParams;
    d->ZeroCopySends = a->ZeroCopySends;
    d->CopiedSends = a->CopiedSends;
    d->TxContextAllocs = a->TxLookaside.L.TotalAllocates;
    d->TxContextMisses = a->TxLookaside.L.AllocateMisses;
    d->TxContextFrees = a->TxLookaside.L.TotalFrees;
    d->Deserialized = a->Deserialized;
    d->ReceiveIndication = a->RxIndication;
    d->PendOids = a->PendOids;
    d->SendsRefused = a->SendsRefused;
    d->SendsWaited = a->SendsWaited;
    d->LookaheadIndications = a->LookaheadIndications;
    d->ShortLookaheads = a->ShortLookaheads;
    d->Transfers = a->Transfers;
    d->TransfersPended = a->TransfersPended;
    d->OidsPended = a->OidsPended;
    d->FirmwareLength = a->FirmwareLength;
    d->FirmwareChecksum = a->FirmwareChecksum;
    d->PciId = a->PciId;
    d->NdisVersion = a->NdisVersion;
    d->InstanceNameLength = a->InstanceNameLength;
    d->WorkItemsRun = a->WorkItemsRun;
    d->AsyncSharedLength = a->AsyncSharedLength;
}

static NDIS_STATUS RtlQuery(PRTL_ADAPTER a, NDIS_OID Oid, PVOID Buffer, ULONG BufferLength,
                            PULONG BytesWritten, PULONG BytesNeeded)
{
    ULONG ul = 0;
    USHORT us;
    NDIS_HARDWARE_STATUS hw = NdisHardwareStatusReady;
    NDIS_MEDIUM medium = NdisMedium802_3;
    RTL_DIAG diag;
    const void *src = &ul;
    ULONG len = sizeof(ul);

    switch (Oid) {
    case OID_GEN_SUPPORTED_LIST:
        src = RtlSupportedOids;
        len = sizeof(RtlSupportedOids);
        break;
    case OID_GEN_HARDWARE_STATUS:
        src = &hw;
        len = sizeof(hw);
        break;
    case OID_GEN_MEDIA_SUPPORTED:
    case OID_GEN_MEDIA_IN_USE:
        src = &medium;
        len = sizeof(medium);
        break;
    case OID_GEN_MAXIMUM_LOOKAHEAD:
    case OID_GEN_MAXIMUM_FRAME_SIZE:
        ul = ETH_MAX_FRAME - ETH_HEADER;
        break;
    case OID_GEN_CURRENT_LOOKAHEAD:
        ul = a->Lookahead;
        break;
    case OID_GEN_MAXIMUM_TOTAL_SIZE:
    case OID_GEN_TRANSMIT_BLOCK_SIZE:
    case OID_GEN_RECEIVE_BLOCK_SIZE:
        ul = ETH_MAX_FRAME;
        break;
    case OID_GEN_LINK_SPEED: /* in 100 bit/s */
        ul = (Rd8(a, R_MSR) & MSR_SPEED_10) ? 100000 : 1000000;
        break;
    case OID_GEN_TRANSMIT_BUFFER_SPACE:
        ul = TX_DESCS * TX_BUF_LEN;
        break;
    case OID_GEN_RECEIVE_BUFFER_SPACE:
        ul = RX_RING_LEN;
        break;
    case OID_GEN_MEDIA_CONNECT_STATUS:
        a->LinkUp = RtlLinkUp(a);
        ul = a->LinkUp ? NdisMediaStateConnected : NdisMediaStateDisconnected;
        break;
    case OID_GEN_MAXIMUM_SEND_PACKETS:
        ul = TX_DESCS;
        break;
    case OID_GEN_VENDOR_ID:
        ul = a->PermanentAddress[0] | (ULONG)a->PermanentAddress[1] << 8 |
             (ULONG)a->PermanentAddress[2] << 16;
        break;
    case OID_GEN_VENDOR_DESCRIPTION:
        src = RtlDescription;
        len = sizeof(RtlDescription);
        break;
    case OID_GEN_VENDOR_DRIVER_VERSION:
        ul = 0x00010000;
        break;
    case OID_GEN_DRIVER_VERSION:
        us = 0x0501;
        src = &us;
        len = sizeof(us);
        break;
    case OID_GEN_CURRENT_PACKET_FILTER:
        ul = a->PacketFilter;
        break;
    case OID_GEN_MAC_OPTIONS:
        ul = NDIS_MAC_OPTION_COPY_LOOKAHEAD_DATA | NDIS_MAC_OPTION_NO_LOOPBACK |
             (a->RxIndication == RTL_RX_LOOKAHEAD_PEND ? 0 : NDIS_MAC_OPTION_TRANSFERS_NOT_PEND);
        break;
    case OID_GEN_XMIT_OK:
        ul = a->XmitOk;
        break;
    case OID_GEN_RCV_OK:
        ul = a->RcvOk;
        break;
    case OID_GEN_XMIT_ERROR:
        ul = a->XmitError;
        break;
    case OID_GEN_RCV_ERROR:
        ul = a->RcvError + (Rd32(a, R_MPC) & 0xFFFFFF);
        break;
    case OID_GEN_RCV_NO_BUFFER:
        ul = a->RcvNoBuffer;
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
        ul = MAX_MCAST;
        break;
    case OID_802_3_RCV_ERROR_ALIGNMENT:
    case OID_802_3_XMIT_ONE_COLLISION:
    case OID_802_3_XMIT_MORE_COLLISIONS:
        ul = 0;
        break;
    case OID_ICA_RTL_DIAG:
        RtlFillDiag(a, &diag);
        src = &diag;
        len = sizeof(diag);
        break;
    default:
        *BytesWritten = 0;
        *BytesNeeded = 0;
        return NDIS_STATUS_NOT_SUPPORTED;
    }
    if (len > BufferLength) {
        *BytesWritten = 0;
        *BytesNeeded = len;
        return NDIS_STATUS_BUFFER_TOO_SHORT;
    }
    NdisMoveMemory(Buffer, src, len);
    *BytesWritten = len;
    *BytesNeeded = 0;
    return NDIS_STATUS_SUCCESS;
}

/* Carries out a set (at once, or from the OID timer). */
static NDIS_STATUS RtlSet(PRTL_ADAPTER a, NDIS_OID Oid, PVOID Buffer, ULONG BufferLength,
                          PULONG BytesRead, PULONG BytesNeeded)
{
    ULONG ul;

    *BytesRead = 0;
    *BytesNeeded = 0;
    switch (Oid) {
    case OID_ICA_RTL_REMOVE:
        return NdisMRemoveMiniport(a->Handle);
    case OID_GEN_CURRENT_PACKET_FILTER:
        if (BufferLength < sizeof(ULONG)) {
            *BytesNeeded = sizeof(ULONG);
            return NDIS_STATUS_INVALID_LENGTH;
        }
        NdisMoveMemory(&ul, Buffer, sizeof(ul));
        *BytesRead = sizeof(ULONG);
        if (ul & ~SUPPORTED_FILTERS)
            return NDIS_STATUS_NOT_SUPPORTED;
        NdisAcquireSpinLock(&a->Lock);
        a->PacketFilter = ul;
        RtlApplyFilter(a);
        NdisReleaseSpinLock(&a->Lock);
        return NDIS_STATUS_SUCCESS;
    case OID_GEN_CURRENT_LOOKAHEAD:
        if (BufferLength < sizeof(ULONG)) {
            *BytesNeeded = sizeof(ULONG);
            return NDIS_STATUS_INVALID_LENGTH;
        }
        NdisMoveMemory(&ul, Buffer, sizeof(ul));
        *BytesRead = sizeof(ULONG);
        if (ul > ETH_MAX_FRAME - ETH_HEADER)
            return NDIS_STATUS_INVALID_DATA;
        a->Lookahead = ul;
        return NDIS_STATUS_SUCCESS;
    case OID_802_3_MULTICAST_LIST:
        if (BufferLength % 6)
            return NDIS_STATUS_INVALID_LENGTH;
        if (BufferLength / 6 > MAX_MCAST) {
            *BytesNeeded = MAX_MCAST * 6;
            return NDIS_STATUS_MULTICAST_FULL;
        }
        NdisAcquireSpinLock(&a->Lock);
        NdisMoveMemory(a->McList, Buffer, BufferLength);
        a->McCount = BufferLength / 6;
        RtlApplyFilter(a);
        NdisReleaseSpinLock(&a->Lock);
        *BytesRead = BufferLength;
        return NDIS_STATUS_SUCCESS;
    default:
        return NDIS_STATUS_NOT_SUPPORTED;
    }
}

/* PendOids: whether a query (or set) of `Oid` is answered from the OID timer. */
static BOOLEAN RtlPends(PRTL_ADAPTER a, BOOLEAN query, NDIS_OID Oid)
{
    if (!a->PendOids)
        return FALSE;
    if (query)
        return Oid == OID_GEN_LINK_SPEED || Oid == OID_GEN_MEDIA_CONNECT_STATUS;
    return Oid == OID_GEN_CURRENT_PACKET_FILTER || Oid == OID_GEN_CURRENT_LOOKAHEAD;
}

/*
 * Pends a request of an OID that RtlPends names (all take a ULONG): a buffer
 * too small fails at once; otherwise the OID timer answers it.
 */
static NDIS_STATUS RtlPend(PRTL_ADAPTER a, BOOLEAN query, NDIS_OID Oid, PVOID Buffer,
                           ULONG BufferLength, PULONG Done, PULONG Needed)
{
    *Done = 0;
    if (BufferLength < sizeof(ULONG)) {
        *Needed = sizeof(ULONG);
        return query ? NDIS_STATUS_BUFFER_TOO_SHORT : NDIS_STATUS_INVALID_LENGTH;
    }
    *Needed = 0;
    a->PendedOid.Query = query;
    a->PendedOid.Oid = Oid;
    a->PendedOid.Buffer = Buffer;
    a->PendedOid.Length = BufferLength;
    a->PendedOid.Done = Done;
    a->PendedOid.Needed = Needed;
    a->OidPending = TRUE;
    NdisMSetTimer(&a->OidTimer, 1);
    return NDIS_STATUS_PENDING;
}

static NDIS_STATUS NTAPI RtlQueryInformation(NDIS_HANDLE Context, NDIS_OID Oid, PVOID Buffer,
                                             ULONG BufferLength, PULONG BytesWritten,
                                             PULONG BytesNeeded)
{
    PRTL_ADAPTER a = Context;

    if (RtlPends(a, TRUE, Oid))
        return RtlPend(a, TRUE, Oid, Buffer, BufferLength, BytesWritten, BytesNeeded);
    return RtlQuery(a, Oid, Buffer, BufferLength, BytesWritten, BytesNeeded);
}

static NDIS_STATUS NTAPI RtlSetInformation(NDIS_HANDLE Context, NDIS_OID Oid, PVOID Buffer,
                                           ULONG BufferLength, PULONG BytesRead,
                                           PULONG BytesNeeded)
{
    PRTL_ADAPTER a = Context;

    if (RtlPends(a, FALSE, Oid))
        return RtlPend(a, FALSE, Oid, Buffer, BufferLength, BytesRead, BytesNeeded);
    return RtlSet(a, Oid, Buffer, BufferLength, BytesRead, BytesNeeded);
}

/* The OID timer: answers the pended request. */
static VOID NTAPI RtlOidTimer(PVOID SystemSpecific1, PVOID Context, PVOID SystemSpecific2,
                              PVOID SystemSpecific3)
{
    (void)SystemSpecific1;
    (void)SystemSpecific2;
    (void)SystemSpecific3;
    RtlCompletePendedOid(Context, FALSE);
}

NTSTATUS NTAPI DriverEntry(PDRIVER_OBJECT DriverObject, PUNICODE_STRING RegistryPath)
{
    NDIS51_MINIPORT_CHARACTERISTICS c;
    NDIS_STATUS status;

    NdisMInitializeWrapper(&RtlWrapper, DriverObject, RegistryPath, NULL);
    if (!RtlWrapper)
        return STATUS_UNSUCCESSFUL;

    NdisZeroMemory(&c, sizeof(c));
    c.MajorNdisVersion = 5;
    c.MinorNdisVersion = 1;
    c.InitializeHandler = RtlInitialize;
    c.HaltHandler = RtlHalt;
    c.QueryInformationHandler = RtlQueryInformation;
    c.SetInformationHandler = RtlSetInformation;
    c.ResetHandler = RtlReset;
    c.CheckForHangHandler = RtlCheckForHang;
    c.ISRHandler = RtlIsr;
    c.HandleInterruptHandler = RtlHandleInterrupt;
    c.SendPacketsHandler = RtlSendPackets;
    c.ReturnPacketHandler = RtlReturnPacket;
    c.TransferDataHandler = RtlTransferData;
    c.AdapterShutdownHandler = RtlShutdown;
    c.AllocateCompleteHandler = RtlAllocateComplete;

    status = NdisMRegisterMiniport(RtlWrapper, (PNDIS_MINIPORT_CHARACTERISTICS)&c, sizeof(c));
    if (status != NDIS_STATUS_SUCCESS) {
        NdisTerminateWrapper(RtlWrapper, NULL);
        return status;
    }
    return STATUS_SUCCESS;
}
