/*
 * netvirt_ndis6.sys - an NDIS 6.0 deserialized virtual (hardware-less)
 * miniport for ICA's tests, root-enumerated as Root\ICA_NETVIRT.
 *
 * It behaves like a NIC with a loopback plug.  Every NET_BUFFER_LIST it is
 * asked to send is cloned (NdisAllocateCloneNetBufferList: the clone
 * describes the sender's data, nothing is copied; the driver sets the
 * clone's ParentNetBufferList and counts the parent's ChildRefCount) and the
 * clone goes onto "the wire" (at most WIRE_SLOTS clones); the send NBL stays
 * pending until its clone is done.  A timer object (1 ms, relative) then
 * carries the wire to the receive side: a one-NB clone of a frame of at least
 * COPY_BREAK bytes that the packet filter accepts is indicated itself
 * (zero-copy; NdisCopyReceiveNetBufferListInfo gives it the sender's receive
 * information), and its sender completes when NDIS returns it; smaller
 * frames (and the NBs of multi-NB clones) are copied with
 * NdisCopyFromNetBufferToNetBuffer into RX_NBLS preallocated receive NBLs,
 * and the clone is freed (NdisFreeCloneNetBufferList) and its sender
 * completed at once.  Receives go up in chains of up to RX_BATCH
 * (NDIS_RECEIVE_FLAGS_RESOURCES when fewer than RX_RESERVE receive NBLs are
 * left: the chain is the driver's again when the call returns).  Frames wait
 * on the wire while no receive NBL is free; ReturnNetBufferLists restarts the
 * timer for them.  A sent frame longer than 1514 bytes (or shorter than an
 * Ethernet header) completes its NBL with NDIS_STATUS_INVALID_LENGTH;
 * CancelSend aborts the sends still on the wire.
 *
 * The same timer completes, asynchronously, the one OID this driver pends
 * (a set of OID_GEN_CURRENT_LOOKAHEAD: NDIS_STATUS_PENDING, then
 * NdisMOidRequestComplete).  The initial link-up (NDIS_STATUS_LINK_STATE) is
 * indicated from an NDIS I/O work item (NdisAllocateIoWorkItem /
 * NdisQueueIoWorkItem, PASSIVE_LEVEL) queued at initialization; HaltEx waits
 * for it (an NDIS event) before NdisFreeIoWorkItem.  Initialization also asks
 * NDIS about the processors (NdisGroupActiveProcessorCount,
 * NdisProcessorNumberToIndex, NdisGetRssProcessorInformation, the too-short
 * buffer first).  OID_ICA_NETVIRT_DIAG reports what the work item saw, the
 * processor answers and the clone/copy receive counts.
 *
 * MAC: NetworkAddress from the registry, else 02:49:43:41:00:01 ("ICA").
 * One spin lock (Lock) guards the adapter; it is never held across a call
 * into NDIS that can call back into the driver.
 */
#include "ndis6.h"

#define NV_TAG 0x3656764Eu /* 'NvV6' in a pool dump */

#define WIRE_SLOTS 32 /* clones on the wire at most */
#define COPY_BREAK 256 /* frames shorter than this are copied, longer ones lent as clones */
#define RX_NBLS 16
#define RX_BUF_LEN 1536u
#define RX_BATCH 8   /* NBLs chained into one indication at most */
#define RX_RESERVE 2 /* below this many free NBLs, lend them for the call only */
#define WIRE_DELAY (-10000) /* 1 ms, in 100 ns units; negative: relative */

#define ETH_HEADER 14
#define ETH_MAX_FRAME 1514
#define ETH_MTU (ETH_MAX_FRAME - ETH_HEADER)
#define MAX_MCAST 32
#define LINK_SPEED 1000000000ull /* bits per second */

/* Hooks a variant built from this file defines (netcrash_ndis6.c); empty here.
 * NV_CONFIG_HOOK runs with the adapter's configuration open, NV_SEND_HOOK once
 * per sent NBL with the adapter's spin lock held, NV_TIMER_HOOK when the
 * timer (a DPC) starts. */
#ifndef NV_CONFIG_HOOK
#define NV_CONFIG_HOOK(cfg)
#endif
#ifndef NV_SEND_HOOK
#define NV_SEND_HOOK()
#endif
#ifndef NV_TIMER_HOOK
#define NV_TIMER_HOOK()
#endif

/* Private query: NV_DIAG. */
#define OID_ICA_NETVIRT_DIAG 0xFF494302u

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

/* Frame kinds, by destination address: the index into NV_COUNTS. */
enum { KIND_DIRECTED, KIND_MULTICAST, KIND_BROADCAST, KINDS };

typedef struct _NV_COUNTS {
    ULONG64 Frames[KINDS], Bytes[KINDS];
} NV_COUNTS;

/* NDIS 6 adapter states: Paused after initialization and after MiniportPause
 * completes, Running after MiniportRestart. */
typedef enum { NvPaused, NvRunning, NvPausing } NV_STATE;

/* OID_ICA_NETVIRT_DIAG (the same layout on x86 and x64). */
typedef struct _NV_DIAG {
    ULONG64 Cloned;          /* frames indicated as clones of the NBLs sent */
    ULONG64 Copied;          /* frames copied into receive NBLs */
    ULONG WorkItemRuns;      /* the link-state work item ran ... */
    ULONG WorkItemIrql;      /* ... at this IRQL ... */
    ULONG WorkItemHandleOk;  /* ... and got its own NdisIoWorkItemHandle */
    ULONG ActiveProcessors;  /* NdisGroupActiveProcessorCount(ALL_PROCESSOR_GROUPS) */
    ULONG Group0Processors;  /* NdisGroupActiveProcessorCount(0) */
    ULONG Index0, Index1;    /* NdisProcessorNumberToIndex of processors 0 and 1 of group 0 */
    ULONG RssShortStatus;    /* NdisGetRssProcessorInformation without a buffer ... */
    ULONG RssSizeNeeded;     /* ... and the size it asked for */
    ULONG RssStatus;         /* with a buffer of that size: */
    ULONG RssRevision, RssSize, RssMaxProcessors, RssArrayOffset, RssCount, RssEntrySize;
    ULONG RssFirstGroup, RssFirstNumber; /* the first NDIS_RSS_PROCESSOR */
} NV_DIAG;

typedef struct _NV_ADAPTER {
    NDIS_HANDLE Handle; /* MiniportAdapterHandle */
    NDIS_HANDLE RxPool, ClonePool, Timer, WorkItem;
    BOOLEAN LockAllocated;
    BOOLEAN WorkQueued; /* WorkDone is set when the work item has run */
    NDIS_EVENT WorkDone;

    NDIS_SPIN_LOCK Lock;
    NV_STATE State;
    BOOLEAN TimerArmed;  /* the timer is set and has not run yet */
    PNDIS_OID_REQUEST PendingOid; /* the lookahead set the timer completes */
    ULONG PendingLookahead;

    /* The wire: WireCount clones linked through Next from WireHead; WireNb is
     * the next NB of WireHead to carry over (copied NBs are passed). */
    PNET_BUFFER_LIST WireHead, WireTail;
    PNET_BUFFER WireNb;
    ULONG WireCount;
    ULONG ClonesOut; /* clones indicated and not yet returned */

    PUCHAR RxBufs;
    PMDL RxMdl[RX_NBLS];
    PNET_BUFFER_LIST RxNbl[RX_NBLS];
    ULONG RxFree[RX_NBLS];
    ULONG RxFreeCount;

    UCHAR PermanentAddress[6], CurrentAddress[6];
    UCHAR McList[MAX_MCAST][6];
    ULONG McCount;
    ULONG PacketFilter, Lookahead;

    NV_COUNTS Xmit, Rcv;
    ULONG64 XmitError, XmitDiscards, RcvNoBuffer, RcvDiscards;
    NV_DIAG Diag;
} NV_ADAPTER, *PNV_ADAPTER;

static NDIS_HANDLE NvDriverHandle;

static const UCHAR NvDefaultAddress[6] = {0x02, 0x49, 0x43, 0x41, 0x00, 0x01};

static const NDIS_OID NvSupportedOids[] = {
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
    OID_802_3_XMIT_MORE_COLLISIONS, OID_ICA_NETVIRT_DIAG,
};

static const char NvDescription[] = "ICA virtual loopback NDIS 6.0 test miniport";

/* Receive NBLs keep their index in RxNbl in MiniportReserved[0]. */
static ULONG NvRxIndex(PNET_BUFFER_LIST nbl)
{
    return (ULONG)(ULONG_PTR)NET_BUFFER_LIST_MINIPORT_RESERVED(nbl)[0];
}

static void NvLock(PNV_ADAPTER a, BOOLEAN dispatch)
{
    if (dispatch)
        NdisDprAcquireSpinLock(&a->Lock);
    else
        NdisAcquireSpinLock(&a->Lock);
}

static void NvUnlock(PNV_ADAPTER a, BOOLEAN dispatch)
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

/* The packet filter, applied to a frame arriving from the wire.  Under Lock. */
static BOOLEAN NvAccept(PNV_ADAPTER a, const UCHAR *dst)
{
    ULONG f = a->PacketFilter;

    if (f & NDIS_PACKET_TYPE_PROMISCUOUS)
        return TRUE;
    switch (FrameKind(dst)) {
    case KIND_BROADCAST:
        return (f & NDIS_PACKET_TYPE_BROADCAST) != 0;
    case KIND_MULTICAST:
        if (f & NDIS_PACKET_TYPE_ALL_MULTICAST)
            return TRUE;
        if (f & NDIS_PACKET_TYPE_MULTICAST)
            for (ULONG i = 0; i < a->McCount; i++)
                if (NdisEqualMemory(a->McList[i], dst, 6))
                    return TRUE;
        return FALSE;
    default:
        return (f & NDIS_PACKET_TYPE_DIRECTED) && NdisEqualMemory(a->CurrentAddress, dst, 6);
    }
}

/* Run the timer WIRE_DELAY from now unless it is already set.  Under Lock. */
static void NvArmTimer(PNV_ADAPTER a)
{
    LARGE_INTEGER due;

    if (a->TimerArmed)
        return;
    a->TimerArmed = TRUE;
    due.QuadPart = WIRE_DELAY;
    NdisSetTimerObject(a->Timer, due, 0, NULL);
}

static void NvFillLinkState(PNDIS_LINK_STATE ls)
{
    NdisZeroMemory(ls, sizeof(*ls));
    ls->Header.Type = NDIS_OBJECT_TYPE_DEFAULT;
    ls->Header.Revision = NDIS_LINK_STATE_REVISION_1;
    ls->Header.Size = NDIS_SIZEOF_LINK_STATE_REVISION_1;
    ls->MediaConnectState = MediaConnectStateConnected; /* the plug never comes out */
    ls->MediaDuplexState = MediaDuplexStateFull;
    ls->XmitLinkSpeed = ls->RcvLinkSpeed = LINK_SPEED;
    ls->PauseFunctions = NdisPauseFunctionsUnsupported;
}

static void NvIndicateLinkState(PNV_ADAPTER a)
{
    NDIS_LINK_STATE ls;
    NDIS_STATUS_INDICATION ind;

    NvFillLinkState(&ls);
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

/* ---- Send ---- */

/* Copy the first max bytes of the data of one NET_BUFFER (DataLength bytes
 * from CurrentMdl at CurrentMdlOffset) to dst; 0 if an MDL cannot be mapped. */
static ULONG NvCopyNb(PNET_BUFFER nb, PUCHAR dst, ULONG max)
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

/* Append nbl to the chain whose tail link is *tail. */
static void NvAppend(PNET_BUFFER_LIST nbl, PNET_BUFFER_LIST **tail)
{
    NET_BUFFER_LIST_NEXT_NBL(nbl) = NULL;
    **tail = nbl;
    *tail = &NET_BUFFER_LIST_NEXT_NBL(nbl);
}

/* A clone is done (delivered, returned or dropped): free it; its sender
 * completes when it was the last child.  Under Lock. */
static void NvFinishClone(PNET_BUFFER_LIST clone, PNET_BUFFER_LIST **done)
{
    PNET_BUFFER_LIST parent = clone->ParentNetBufferList;

    NdisFreeCloneNetBufferList(clone, 0);
    if (--parent->ChildRefCount == 0)
        NvAppend(parent, done);
}

/* Put an NBL on the wire as a clone (Xmit counts its NBs); the NBL is
 * pending until the clone is done.  Under Lock. */
static NDIS_STATUS NvTransmit(PNV_ADAPTER a, PNET_BUFFER_LIST nbl)
{
    PNET_BUFFER nb;
    PNET_BUFFER_LIST clone, *tail;

    if (!NET_BUFFER_LIST_FIRST_NB(nbl))
        return NDIS_STATUS_INVALID_PACKET;
    for (nb = NET_BUFFER_LIST_FIRST_NB(nbl); nb; nb = NET_BUFFER_NEXT_NB(nb))
        if (NET_BUFFER_DATA_LENGTH(nb) < ETH_HEADER || NET_BUFFER_DATA_LENGTH(nb) > ETH_MAX_FRAME)
            return NDIS_STATUS_INVALID_LENGTH;
    if (a->WireCount == WIRE_SLOTS) {
        /* Sent, but the far end has nowhere to put it. */
        for (nb = NET_BUFFER_LIST_FIRST_NB(nbl); nb; nb = NET_BUFFER_NEXT_NB(nb))
            a->RcvNoBuffer++;
        return NDIS_STATUS_SUCCESS;
    }
    clone = NdisAllocateCloneNetBufferList(nbl, a->ClonePool, NULL, 0);
    if (!clone) {
        a->XmitError++;
        return NDIS_STATUS_RESOURCES;
    }
    clone->ParentNetBufferList = nbl;
    nbl->ChildRefCount++;
    clone->SourceHandle = a->Handle;
    for (nb = NET_BUFFER_LIST_FIRST_NB(clone); nb; nb = NET_BUFFER_NEXT_NB(nb)) {
        UCHAR dst[6] = {0};
        ULONG kind = NvCopyNb(nb, dst, 6) == 6 ? FrameKind(dst) : KIND_DIRECTED;

        a->Xmit.Frames[kind]++;
        a->Xmit.Bytes[kind] += NET_BUFFER_DATA_LENGTH(nb);
    }
    tail = a->WireTail ? &NET_BUFFER_LIST_NEXT_NBL(a->WireTail) : &a->WireHead;
    NvAppend(clone, &tail);
    if (!a->WireNb)
        a->WireNb = NET_BUFFER_LIST_FIRST_NB(clone);
    a->WireTail = clone;
    a->WireCount++;
    return NDIS_STATUS_PENDING;
}

/* Take the head clone off the wire.  Under Lock. */
static PNET_BUFFER_LIST NvWirePop(PNV_ADAPTER a)
{
    PNET_BUFFER_LIST clone = a->WireHead;

    a->WireHead = NET_BUFFER_LIST_NEXT_NBL(clone);
    if (!a->WireHead)
        a->WireTail = NULL;
    a->WireNb = a->WireHead ? NET_BUFFER_LIST_FIRST_NB(a->WireHead) : NULL;
    a->WireCount--;
    NET_BUFFER_LIST_NEXT_NBL(clone) = NULL;
    return clone;
}

/* NBLs go onto the wire; those that cannot complete at once. */
static VOID NTAPI NvSendNetBufferLists(NDIS_HANDLE Context, PNET_BUFFER_LIST Nbls,
                                       NDIS_PORT_NUMBER PortNumber, ULONG SendFlags)
{
    PNV_ADAPTER a = Context;
    BOOLEAN dispatch = NDIS_TEST_SEND_AT_DISPATCH_LEVEL(SendFlags);
    PNET_BUFFER_LIST nbl, next, done = NULL, *doneTail = &done;

    (void)PortNumber; /* only the default port exists */
    NvLock(a, dispatch);
    for (nbl = Nbls; nbl; nbl = next) {
        NDIS_STATUS status;

        NV_SEND_HOOK();
        status = a->State == NvRunning ? NvTransmit(a, nbl) : NDIS_STATUS_PAUSED;

        next = NET_BUFFER_LIST_NEXT_NBL(nbl);
        if (status == NDIS_STATUS_PENDING) {
            NET_BUFFER_LIST_STATUS(nbl) = NDIS_STATUS_SUCCESS;
            continue;
        }
        if (status == NDIS_STATUS_INVALID_LENGTH || status == NDIS_STATUS_INVALID_PACKET)
            a->XmitDiscards++;
        NET_BUFFER_LIST_STATUS(nbl) = status;
        NvAppend(nbl, &doneTail);
    }
    if (a->WireCount)
        NvArmTimer(a);
    NvUnlock(a, dispatch);
    if (done)
        NdisMSendNetBufferListsComplete(a->Handle, done,
                                        dispatch ? NDIS_SEND_COMPLETE_FLAGS_DISPATCH_LEVEL : 0);
}

/* Sends still on the wire that carry CancelId complete as aborted (not the
 * head clone once some of its NBs went over). */
static VOID NTAPI NvCancelSend(NDIS_HANDLE Context, PVOID CancelId)
{
    PNV_ADAPTER a = Context;
    PNET_BUFFER_LIST done = NULL, *doneTail = &done, keep = NULL, *keepTail = &keep;
    PNET_BUFFER_LIST clone, next;
    BOOLEAN headStarted;

    NdisAcquireSpinLock(&a->Lock);
    headStarted = a->WireHead && a->WireNb != NET_BUFFER_LIST_FIRST_NB(a->WireHead);
    a->WireTail = NULL;
    a->WireCount = 0;
    for (clone = a->WireHead; clone; clone = next) {
        next = NET_BUFFER_LIST_NEXT_NBL(clone);
        if ((clone == a->WireHead && headStarted) ||
            NDIS_GET_NET_BUFFER_LIST_CANCEL_ID(clone->ParentNetBufferList) != CancelId) {
            NvAppend(clone, &keepTail);
            a->WireTail = clone;
            a->WireCount++;
        } else {
            NET_BUFFER_LIST_STATUS(clone->ParentNetBufferList) = NDIS_STATUS_SEND_ABORTED;
            NvFinishClone(clone, &doneTail);
        }
    }
    if (!headStarted)
        a->WireNb = keep ? NET_BUFFER_LIST_FIRST_NB(keep) : NULL;
    a->WireHead = keep;
    NdisReleaseSpinLock(&a->Lock);
    if (done)
        NdisMSendNetBufferListsComplete(a->Handle, done,
                                        KeGetCurrentIrql() == DISPATCH_LEVEL
                                            ? NDIS_SEND_COMPLETE_FLAGS_DISPATCH_LEVEL
                                            : 0);
}

/* ---- Receive ---- */

/* Finish a pending MiniportPause once every receive NBL and clone is back. */
static void NvCheckPauseDone(PNV_ADAPTER a, BOOLEAN dispatch)
{
    BOOLEAN complete = FALSE;

    NvLock(a, dispatch);
    if (a->State == NvPausing && a->RxFreeCount == RX_NBLS && !a->ClonesOut) {
        a->State = NvPaused;
        complete = TRUE;
    }
    NvUnlock(a, dispatch);
    if (complete)
        NdisMPauseComplete(a->Handle);
}

/* The next frame on the wire onto *chain (counted in *count): the head clone
 * itself (a one-NB frame of COPY_BREAK bytes or more), or a copy of the next
 * NB in a receive NBL; frames the filter rejects are passed over.  FALSE when
 * nothing more can go now (the wire is empty, or a copy needs a receive NBL
 * and none is free).  Under Lock (DISPATCH_LEVEL). */
static BOOLEAN NvCarryOne(PNV_ADAPTER a, PNET_BUFFER_LIST **chain, ULONG *count,
                          PNET_BUFFER_LIST **done)
{
    PNET_BUFFER_LIST clone = a->WireHead, parent, rx;
    PNET_BUFFER nb = a->WireNb, rxNb;
    ULONG len, copied, i, kind;
    UCHAR dst[6] = {0};

    if (!clone)
        return FALSE;
    parent = clone->ParentNetBufferList;
    if (a->State != NvRunning) {
        a->RcvDiscards++; /* NDIS 6: nothing is indicated unless Running */
        NvFinishClone(NvWirePop(a), done);
        return TRUE;
    }
    len = NET_BUFFER_DATA_LENGTH(nb);
    kind = NvCopyNb(nb, dst, 6) == 6 ? FrameKind(dst) : KIND_DIRECTED;
    if (!NvAccept(a, dst)) {
        /* Not for us: filtered without a count, as a NIC does. */
    } else if (!NET_BUFFER_NEXT_NB(nb) && nb == NET_BUFFER_LIST_FIRST_NB(clone) &&
               len >= COPY_BREAK) {
        /* Lend the clone itself: the sender's buffers go up. */
        NvWirePop(a);
        NET_BUFFER_LIST_STATUS(clone) = NDIS_STATUS_SUCCESS;
        NdisCopyReceiveNetBufferListInfo(clone, parent);
        NvAppend(clone, chain);
        (*count)++;
        a->ClonesOut++;
        a->Diag.Cloned++;
        a->Rcv.Frames[kind]++;
        a->Rcv.Bytes[kind] += len;
        return TRUE;
    } else {
        if (!a->RxFreeCount)
            return FALSE; /* stays on the wire until NBLs come back */
        i = a->RxFree[--a->RxFreeCount];
        rx = a->RxNbl[i];
        rxNb = NET_BUFFER_LIST_FIRST_NB(rx);
        if (NdisCopyFromNetBufferToNetBuffer(rxNb, 0, len, nb, 0, &copied) != NDIS_STATUS_SUCCESS ||
            copied != len) {
            a->RxFree[a->RxFreeCount++] = i;
            a->RcvDiscards++;
        } else {
            NET_BUFFER_DATA_LENGTH(rxNb) = copied;
            NET_BUFFER_LIST_STATUS(rx) = NDIS_STATUS_SUCCESS;
            NdisCopyReceiveNetBufferListInfo(rx, parent);
            NvAppend(rx, chain);
            (*count)++;
            a->Diag.Copied++;
            a->Rcv.Frames[kind]++;
            a->Rcv.Bytes[kind] += len;
        }
    }
    /* This NB is over: on to the next, or the clone is done. */
    a->WireNb = NET_BUFFER_NEXT_NB(nb);
    if (!a->WireNb)
        NvFinishClone(NvWirePop(a), done);
    return TRUE;
}

/* Give back what an indication lent for the call only.  Under Lock. */
static void NvReclaim(PNV_ADAPTER a, PNET_BUFFER_LIST nbl, PNET_BUFFER_LIST **done)
{
    if (nbl->ParentNetBufferList) {
        a->ClonesOut--;
        NvFinishClone(nbl, done);
    } else {
        a->RxFree[a->RxFreeCount++] = NvRxIndex(nbl);
    }
}

/* Carry the frames on the wire to the receive side (DISPATCH_LEVEL). */
static void NvDeliver(PNV_ADAPTER a)
{
    BOOLEAN more = TRUE;
    PNET_BUFFER_LIST done = NULL, *doneTail = &done;

    while (more) {
        PNET_BUFFER_LIST head = NULL, *tail = &head, nbl, next;
        ULONG count = 0;
        BOOLEAN lend = FALSE;

        NdisDprAcquireSpinLock(&a->Lock);
        while (count < RX_BATCH && !lend && (more = NvCarryOne(a, &tail, &count, &doneTail)))
            lend = a->RxFreeCount < RX_RESERVE;
        NdisDprReleaseSpinLock(&a->Lock);
        if (!count)
            break;
        NdisMIndicateReceiveNetBufferLists(a->Handle, head, NDIS_DEFAULT_PORT_NUMBER, count,
                                           NDIS_RECEIVE_FLAGS_DISPATCH_LEVEL |
                                               (lend ? NDIS_RECEIVE_FLAGS_RESOURCES : 0));
        if (lend) {
            /* Lent for the call only: they are ours again. */
            NdisDprAcquireSpinLock(&a->Lock);
            for (nbl = head; nbl; nbl = next) {
                next = NET_BUFFER_LIST_NEXT_NBL(nbl);
                NvReclaim(a, nbl, &doneTail);
            }
            NdisDprReleaseSpinLock(&a->Lock);
        }
    }
    if (done)
        NdisMSendNetBufferListsComplete(a->Handle, done, NDIS_SEND_COMPLETE_FLAGS_DISPATCH_LEVEL);
}

static VOID NTAPI NvReturnNetBufferLists(NDIS_HANDLE Context, PNET_BUFFER_LIST Nbls,
                                         ULONG ReturnFlags)
{
    PNV_ADAPTER a = Context;
    BOOLEAN dispatch = NDIS_TEST_RETURN_AT_DISPATCH_LEVEL(ReturnFlags);
    PNET_BUFFER_LIST nbl, next, done = NULL, *doneTail = &done;

    NvLock(a, dispatch);
    for (nbl = Nbls; nbl; nbl = next) {
        next = NET_BUFFER_LIST_NEXT_NBL(nbl);
        NvReclaim(a, nbl, &doneTail);
    }
    if (a->WireCount) /* frames waited for these NBLs */
        NvArmTimer(a);
    NvUnlock(a, dispatch);
    if (done)
        NdisMSendNetBufferListsComplete(a->Handle, done,
                                        dispatch ? NDIS_SEND_COMPLETE_FLAGS_DISPATCH_LEVEL : 0);
    NvCheckPauseDone(a, dispatch);
}

/* The timer (DISPATCH_LEVEL): pending OID, wire. */
static VOID NTAPI NvTimer(PVOID SystemSpecific1, PVOID Context, PVOID SystemSpecific2,
                          PVOID SystemSpecific3)
{
    PNV_ADAPTER a = Context;
    PNDIS_OID_REQUEST oid;

    (void)SystemSpecific1;
    (void)SystemSpecific2;
    (void)SystemSpecific3;
    NV_TIMER_HOOK();
    NdisDprAcquireSpinLock(&a->Lock);
    a->TimerArmed = FALSE;
    oid = a->PendingOid;
    a->PendingOid = NULL;
    if (oid)
        a->Lookahead = a->PendingLookahead;
    NdisDprReleaseSpinLock(&a->Lock);

    if (oid) {
        oid->DATA.SET_INFORMATION.BytesRead = sizeof(ULONG);
        NdisMOidRequestComplete(a->Handle, oid, NDIS_STATUS_SUCCESS);
    }
    NvDeliver(a);
}

/* The link-state work item (PASSIVE_LEVEL): the initial link-up. */
static VOID NTAPI NvLinkWork(PVOID WorkItemContext, NDIS_HANDLE NdisIoWorkItemHandle)
{
    PNV_ADAPTER a = WorkItemContext;

    a->Diag.WorkItemIrql = KeGetCurrentIrql();
    a->Diag.WorkItemHandleOk = NdisIoWorkItemHandle == a->WorkItem;
    a->Diag.WorkItemRuns++;
    NvIndicateLinkState(a);
    NdisSetEvent(&a->WorkDone);
}

/* What NDIS says about the processors (one receive queue per RSS processor
 * would follow from it; a loopback has one). */
static void NvQueryProcessors(PNV_ADAPTER a)
{
    NV_DIAG *d = &a->Diag;
    PROCESSOR_NUMBER pn;
    SIZE_T size = 0;
    PNDIS_RSS_PROCESSOR_INFO info;

    d->ActiveProcessors = NdisGroupActiveProcessorCount(ALL_PROCESSOR_GROUPS);
    d->Group0Processors = NdisGroupActiveProcessorCount(0);
    NdisZeroMemory(&pn, sizeof(pn));
    d->Index0 = NdisProcessorNumberToIndex(pn);
    pn.Number = 1;
    d->Index1 = NdisProcessorNumberToIndex(pn);
    d->RssShortStatus = NdisGetRssProcessorInformation(a->Handle, NULL, &size);
    d->RssSizeNeeded = (ULONG)size;
    if (d->RssShortStatus != NDIS_STATUS_BUFFER_TOO_SHORT || size < sizeof(*info))
        return;
    info = NdisAllocateMemoryWithTagPriority(a->Handle, (UINT)size, NV_TAG, NormalPoolPriority);
    if (!info)
        return;
    d->RssStatus = NdisGetRssProcessorInformation(a->Handle, info, &size);
    if (d->RssStatus == NDIS_STATUS_SUCCESS) {
        d->RssRevision = info->Header.Revision;
        d->RssSize = info->Header.Size;
        d->RssMaxProcessors = info->MaxNumRssProcessors;
        d->RssArrayOffset = info->RssProcessorArrayOffset;
        d->RssCount = info->RssProcessorCount;
        d->RssEntrySize = info->RssProcessorEntrySize;
        if (info->RssProcessorCount &&
            info->RssProcessorArrayOffset + sizeof(NDIS_RSS_PROCESSOR) <= size) {
            PNDIS_RSS_PROCESSOR p =
                (PNDIS_RSS_PROCESSOR)((PUCHAR)info + info->RssProcessorArrayOffset);
            d->RssFirstGroup = p->ProcNum.Group;
            d->RssFirstNumber = p->ProcNum.Number;
        }
    }
    NdisFreeMemory(info, 0, 0);
}

/* ---- Initialization and teardown ---- */

static void NvFreeAll(PNV_ADAPTER a)
{
    if (a->WorkItem) {
        if (a->WorkQueued)
            NdisWaitEvent(&a->WorkDone, 0); /* it may not run after this */
        NdisFreeIoWorkItem(a->WorkItem);
    }
    if (a->Timer)
        NdisFreeTimerObject(a->Timer);
    for (int i = 0; i < RX_NBLS; i++) {
        if (a->RxNbl[i])
            NdisFreeNetBufferList(a->RxNbl[i]);
        if (a->RxMdl[i])
            NdisFreeMdl(a->RxMdl[i]);
    }
    if (a->RxPool)
        NdisFreeNetBufferListPool(a->RxPool);
    if (a->ClonePool)
        NdisFreeNetBufferListPool(a->ClonePool);
    if (a->RxBufs)
        NdisFreeMemory(a->RxBufs, 0, 0);
    if (a->LockAllocated)
        NdisFreeSpinLock(&a->Lock);
    NdisFreeMemory(a, 0, 0);
}

static NDIS_STATUS NvSetRegistrationAttributes(PNV_ADAPTER a)
{
    NDIS_MINIPORT_ADAPTER_REGISTRATION_ATTRIBUTES reg;

    NdisZeroMemory(&reg, sizeof(reg));
    reg.Header.Type = NDIS_OBJECT_TYPE_MINIPORT_ADAPTER_REGISTRATION_ATTRIBUTES;
    reg.Header.Revision = NDIS_MINIPORT_ADAPTER_REGISTRATION_ATTRIBUTES_REVISION_1;
    reg.Header.Size = NDIS_SIZEOF_MINIPORT_ADAPTER_REGISTRATION_ATTRIBUTES_REVISION_1;
    reg.MiniportAdapterContext = a;
    reg.AttributeFlags = NDIS_MINIPORT_ATTRIBUTES_NO_HALT_ON_SUSPEND;
    reg.CheckForHangTimeInSeconds = 0; /* no CheckForHangEx: nothing can hang */
    reg.InterfaceType = NdisInterfaceInternal;
    return NdisMSetMiniportAttributes(a->Handle, (PNDIS_MINIPORT_ADAPTER_ATTRIBUTES)&reg);
}

static NDIS_STATUS NvSetGeneralAttributes(PNV_ADAPTER a)
{
    NDIS_MINIPORT_ADAPTER_GENERAL_ATTRIBUTES gen;

    NdisZeroMemory(&gen, sizeof(gen));
    gen.Header.Type = NDIS_OBJECT_TYPE_MINIPORT_ADAPTER_GENERAL_ATTRIBUTES;
    gen.Header.Revision = NDIS_MINIPORT_ADAPTER_GENERAL_ATTRIBUTES_REVISION_1;
    gen.Header.Size = NDIS_SIZEOF_MINIPORT_ADAPTER_GENERAL_ATTRIBUTES_REVISION_1;
    gen.MediaType = NdisMedium802_3;
    gen.PhysicalMediumType = NdisPhysicalMediumUnspecified;
    gen.MtuSize = ETH_MTU;
    gen.MaxXmitLinkSpeed = gen.XmitLinkSpeed = LINK_SPEED;
    gen.MaxRcvLinkSpeed = gen.RcvLinkSpeed = LINK_SPEED;
    gen.MediaConnectState = MediaConnectStateConnected;
    gen.MediaDuplexState = MediaDuplexStateFull;
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
    gen.IfConnectorPresent = FALSE; /* virtual */
    gen.SupportedStatistics = STATS_SUPPORTED;
    gen.SupportedPauseFunctions = NdisPauseFunctionsUnsupported;
    gen.SupportedOidList = (PNDIS_OID)NvSupportedOids;
    gen.SupportedOidListLength = sizeof(NvSupportedOids);
    return NdisMSetMiniportAttributes(a->Handle, (PNDIS_MINIPORT_ADAPTER_ATTRIBUTES)&gen);
}

/* NetworkAddress from the adapter's registry key. */
static void NvReadConfig(PNV_ADAPTER a)
{
    NDIS_CONFIGURATION_OBJECT obj;
    NDIS_STATUS status;
    NDIS_HANDLE cfg;
    PVOID addr;
    UINT len;

    NdisZeroMemory(&obj, sizeof(obj));
    obj.Header.Type = NDIS_OBJECT_TYPE_CONFIGURATION_OBJECT;
    obj.Header.Revision = NDIS_CONFIGURATION_OBJECT_REVISION_1;
    obj.Header.Size = NDIS_SIZEOF_CONFIGURATION_OBJECT_REVISION_1;
    obj.NdisHandle = a->Handle;
    if (NdisOpenConfigurationEx(&obj, &cfg) != NDIS_STATUS_SUCCESS)
        return;
    NdisReadNetworkAddress(&status, &addr, &len, cfg);
    if (status == NDIS_STATUS_SUCCESS && len == 6 && !(((PUCHAR)addr)[0] & 1)) {
        PUCHAR p = addr;
        if (p[0] | p[1] | p[2] | p[3] | p[4] | p[5])
            NdisMoveMemory(a->CurrentAddress, p, 6);
    }
    NV_CONFIG_HOOK(cfg);
    NdisCloseConfiguration(cfg);
}

/* RX_NBLS receive NBLs, each with one NB over one MDL of a 1536-byte slot,
 * and the pool of clones. */
static NDIS_STATUS NvAllocateReceives(PNV_ADAPTER a)
{
    NET_BUFFER_LIST_POOL_PARAMETERS pp;

    a->RxBufs = NdisAllocateMemoryWithTagPriority(a->Handle, RX_NBLS * RX_BUF_LEN, NV_TAG,
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
    pp.PoolTag = NV_TAG;
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
        NET_BUFFER_LIST_MINIPORT_RESERVED(a->RxNbl[i])[0] = (PVOID)(ULONG_PTR)i;
        a->RxFree[a->RxFreeCount++] = i;
    }
    /* Clones come from a pool of bare NBLs (NDIS adds their NBs). */
    pp.fAllocateNetBuffer = FALSE;
    a->ClonePool = NdisAllocateNetBufferListPool(a->Handle, &pp);
    return a->ClonePool ? NDIS_STATUS_SUCCESS : NDIS_STATUS_RESOURCES;
}

static NDIS_STATUS NvAllocateTimer(PNV_ADAPTER a)
{
    NDIS_TIMER_CHARACTERISTICS tc;

    NdisZeroMemory(&tc, sizeof(tc));
    tc.Header.Type = NDIS_OBJECT_TYPE_TIMER_CHARACTERISTICS;
    tc.Header.Revision = NDIS_TIMER_CHARACTERISTICS_REVISION_1;
    tc.Header.Size = NDIS_SIZEOF_TIMER_CHARACTERISTICS_REVISION_1;
    tc.AllocationTag = NV_TAG;
    tc.TimerFunction = NvTimer;
    tc.FunctionContext = a;
    return NdisAllocateTimerObject(a->Handle, &tc, &a->Timer);
}

static NDIS_STATUS NTAPI NvInitializeEx(NDIS_HANDLE MiniportAdapterHandle,
                                        NDIS_HANDLE MiniportDriverContext,
                                        PNDIS_MINIPORT_INIT_PARAMETERS Params)
{
    PNV_ADAPTER a;
    NDIS_STATUS status;

    (void)MiniportDriverContext;
    (void)Params; /* no resources: nothing in AllocatedResources to look at */
    a = NdisAllocateMemoryWithTagPriority(MiniportAdapterHandle, sizeof(*a), NV_TAG,
                                          NormalPoolPriority);
    if (!a)
        return NDIS_STATUS_RESOURCES;
    NdisZeroMemory(a, sizeof(*a));
    a->Handle = MiniportAdapterHandle;
    a->State = NvPaused;
    a->Lookahead = ETH_MTU;
    a->PacketFilter = NDIS_PACKET_TYPE_DIRECTED | NDIS_PACKET_TYPE_BROADCAST;
    NdisMoveMemory(a->PermanentAddress, NvDefaultAddress, 6);
    NdisMoveMemory(a->CurrentAddress, NvDefaultAddress, 6);
    NdisAllocateSpinLock(&a->Lock);
    a->LockAllocated = TRUE;

    status = NvSetRegistrationAttributes(a);
    if (status != NDIS_STATUS_SUCCESS)
        goto fail;
    NvReadConfig(a);
    NvQueryProcessors(a);
    status = NvAllocateReceives(a);
    if (status != NDIS_STATUS_SUCCESS)
        goto fail;
    status = NvAllocateTimer(a);
    if (status != NDIS_STATUS_SUCCESS) {
        a->Timer = NULL;
        goto fail;
    }
    status = NvSetGeneralAttributes(a);
    if (status != NDIS_STATUS_SUCCESS)
        goto fail;

    /* The link-up indication follows from a work item, once initialization is over. */
    NdisInitializeEvent(&a->WorkDone);
    a->WorkItem = NdisAllocateIoWorkItem(MiniportAdapterHandle);
    if (!a->WorkItem) {
        status = NDIS_STATUS_RESOURCES;
        goto fail;
    }
    a->WorkQueued = TRUE;
    NdisQueueIoWorkItem(a->WorkItem, NvLinkWork, a);
    DbgPrint("netvirt_ndis6: up, mac %02x:%02x:%02x:%02x:%02x:%02x\n", a->CurrentAddress[0],
             a->CurrentAddress[1], a->CurrentAddress[2], a->CurrentAddress[3],
             a->CurrentAddress[4], a->CurrentAddress[5]);
    return NDIS_STATUS_SUCCESS;

fail:
    NvFreeAll(a);
    return status;
}

/* NDIS pauses the adapter and completes its OID requests before halting it;
 * NvFreeAll waits for the work item if it has not run. */
static VOID NTAPI NvHaltEx(NDIS_HANDLE Context, NDIS_HALT_ACTION HaltAction)
{
    PNV_ADAPTER a = Context;

    DbgPrint("netvirt_ndis6: halt (action %u)\n", HaltAction);
    NdisCancelTimerObject(a->Timer);
    KeFlushQueuedDpcs(); /* a timer function that already started has returned */
    NvFreeAll(a);
}

/* No hardware to quiet. */
static VOID NTAPI NvShutdownEx(NDIS_HANDLE Context, NDIS_SHUTDOWN_ACTION ShutdownAction)
{
    (void)Context;
    (void)ShutdownAction;
}

/* Frames still on the wire are lost (their sends complete); pending until the
 * receive NBLs and the clones lent are back. */
static NDIS_STATUS NTAPI NvPause(NDIS_HANDLE Context, PNDIS_MINIPORT_PAUSE_PARAMETERS Params)
{
    PNV_ADAPTER a = Context;
    NDIS_STATUS status = NDIS_STATUS_SUCCESS;
    PNET_BUFFER_LIST done = NULL, *doneTail = &done;

    (void)Params;
    NdisAcquireSpinLock(&a->Lock);
    while (a->WireHead) {
        a->RcvDiscards++;
        NvFinishClone(NvWirePop(a), &doneTail);
    }
    if (a->RxFreeCount != RX_NBLS || a->ClonesOut) {
        a->State = NvPausing;
        status = NDIS_STATUS_PENDING;
    } else {
        a->State = NvPaused;
    }
    NdisReleaseSpinLock(&a->Lock);
    if (done)
        NdisMSendNetBufferListsComplete(a->Handle, done, 0);
    return status;
}

static NDIS_STATUS NTAPI NvRestart(NDIS_HANDLE Context, PNDIS_MINIPORT_RESTART_PARAMETERS Params)
{
    PNV_ADAPTER a = Context;

    (void)Params;
    NdisAcquireSpinLock(&a->Lock);
    a->State = NvRunning;
    NdisReleaseSpinLock(&a->Lock);
    return NDIS_STATUS_SUCCESS;
}

static VOID NTAPI NvDevicePnPEventNotify(NDIS_HANDLE Context, PNET_DEVICE_PNP_EVENT Event)
{
    (void)Context;
    DbgPrint("netvirt_ndis6: PnP event %u\n", Event->DevicePnPEvent);
}

/* The pending lookahead set, if it is the one named, completes as aborted. */
static VOID NTAPI NvCancelOidRequest(NDIS_HANDLE Context, PVOID RequestId)
{
    PNV_ADAPTER a = Context;
    PNDIS_OID_REQUEST oid = NULL;

    NdisAcquireSpinLock(&a->Lock);
    if (a->PendingOid && a->PendingOid->RequestId == RequestId) {
        oid = a->PendingOid;
        a->PendingOid = NULL;
    }
    NdisReleaseSpinLock(&a->Lock);
    if (oid)
        NdisMOidRequestComplete(a->Handle, oid, NDIS_STATUS_REQUEST_ABORTED);
}

/* ---- OIDs ---- */

static void NvFillStatistics(PNV_ADAPTER a, PNDIS_STATISTICS_INFO s)
{
    NdisZeroMemory(s, sizeof(*s));
    s->Header.Type = NDIS_OBJECT_TYPE_DEFAULT;
    s->Header.Revision = NDIS_STATISTICS_INFO_REVISION_1;
    s->Header.Size = NDIS_SIZEOF_STATISTICS_INFO_REVISION_1;
    s->SupportedStatistics = STATS_VALID;
    NdisAcquireSpinLock(&a->Lock);
    s->ifInDiscards = a->RcvNoBuffer + a->RcvDiscards;
    s->ifInErrors = 0; /* a loopback wire does not corrupt frames */
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

static NDIS_STATUS NvQuery(PNV_ADAPTER a, PNDIS_OID_REQUEST r)
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
        NV_DIAG diag;
    } v;
    const void *src = &v;
    ULONG len = sizeof(ULONG);
    BOOLEAN counter = FALSE; /* ULONG64, or ULONG if that is all the buffer holds */

    v.u64 = 0;
    switch (oid) {
    case OID_ICA_NETVIRT_DIAG:
        NdisAcquireSpinLock(&a->Lock);
        v.diag = a->Diag;
        NdisReleaseSpinLock(&a->Lock);
        len = sizeof(v.diag);
        break;
    case OID_GEN_SUPPORTED_LIST:
        src = NvSupportedOids;
        len = sizeof(NvSupportedOids);
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
        v.phys = NdisPhysicalMediumUnspecified;
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
        v.ul = (ULONG)(LINK_SPEED / 100);
        break;
    case OID_GEN_TRANSMIT_BUFFER_SPACE:
        v.ul = WIRE_SLOTS * ETH_MAX_FRAME;
        break;
    case OID_GEN_RECEIVE_BUFFER_SPACE:
        v.ul = RX_NBLS * RX_BUF_LEN;
        break;
    case OID_GEN_MEDIA_CONNECT_STATUS:
        v.ul = NdisMediaStateConnected;
        break;
    case OID_GEN_MAXIMUM_SEND_PACKETS:
        v.ul = WIRE_SLOTS;
        break;
    case OID_GEN_VENDOR_ID: /* no OUI of its own: the locally administered 02:49:43 */
        v.ul = a->PermanentAddress[0] | (ULONG)a->PermanentAddress[1] << 8 |
               (ULONG)a->PermanentAddress[2] << 16;
        break;
    case OID_GEN_VENDOR_DESCRIPTION:
        src = NvDescription;
        len = sizeof(NvDescription);
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
        NV_COUNTS *c = oid == OID_GEN_XMIT_OK ? &a->Xmit : &a->Rcv;
        NdisAcquireSpinLock(&a->Lock);
        if (oid == OID_GEN_XMIT_OK || oid == OID_GEN_RCV_OK)
            v.u64 = c->Frames[KIND_DIRECTED] + c->Frames[KIND_MULTICAST] +
                    c->Frames[KIND_BROADCAST];
        else if (oid == OID_GEN_XMIT_ERROR)
            v.u64 = a->XmitError;
        else if (oid == OID_GEN_RCV_NO_BUFFER)
            v.u64 = a->RcvNoBuffer;
        /* OID_GEN_RCV_ERROR: always 0 */
        NdisReleaseSpinLock(&a->Lock);
        counter = TRUE;
        break;
    }
    case OID_GEN_STATISTICS:
        NvFillStatistics(a, &v.stats);
        len = sizeof(v.stats);
        break;
    case OID_GEN_LINK_STATE:
        NvFillLinkState(&v.link);
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

static NDIS_STATUS NvSet(PNV_ADAPTER a, PNDIS_OID_REQUEST r)
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
        NdisReleaseSpinLock(&a->Lock);
        return NDIS_STATUS_SUCCESS;
    case OID_GEN_CURRENT_LOOKAHEAD:
        /* Validated now, applied and completed by the timer. */
        if (bufLen < sizeof(ULONG)) {
            r->DATA.SET_INFORMATION.BytesNeeded = sizeof(ULONG);
            return NDIS_STATUS_INVALID_LENGTH;
        }
        NdisMoveMemory(&ul, buf, sizeof(ul));
        if (ul > ETH_MTU)
            return NDIS_STATUS_INVALID_DATA;
        NdisAcquireSpinLock(&a->Lock);
        a->PendingOid = r;
        a->PendingLookahead = ul;
        NvArmTimer(a);
        NdisReleaseSpinLock(&a->Lock);
        return NDIS_STATUS_PENDING;
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
        NdisReleaseSpinLock(&a->Lock);
        r->DATA.SET_INFORMATION.BytesRead = bufLen;
        return NDIS_STATUS_SUCCESS;
    default:
        return NDIS_STATUS_NOT_SUPPORTED;
    }
}

static NDIS_STATUS NTAPI NvOidRequest(NDIS_HANDLE Context, PNDIS_OID_REQUEST Request)
{
    switch (Request->RequestType) {
    case NdisRequestQueryInformation:
    case NdisRequestQueryStatistics:
        return NvQuery(Context, Request);
    case NdisRequestSetInformation:
        return NvSet(Context, Request);
    default:
        return NDIS_STATUS_NOT_SUPPORTED;
    }
}

/* ---- Driver ---- */

static VOID NTAPI NvUnload(PDRIVER_OBJECT DriverObject)
{
    (void)DriverObject;
    NdisMDeregisterMiniportDriver(NvDriverHandle);
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
    c.InitializeHandlerEx = NvInitializeEx;
    c.HaltHandlerEx = NvHaltEx;
    c.UnloadHandler = NvUnload;
    c.PauseHandler = NvPause;
    c.RestartHandler = NvRestart;
    c.OidRequestHandler = NvOidRequest;
    c.SendNetBufferListsHandler = NvSendNetBufferLists;
    c.ReturnNetBufferListsHandler = NvReturnNetBufferLists;
    c.CancelSendHandler = NvCancelSend;
    /* A virtual miniport cannot hang: no CheckForHangEx, no ResetEx. */
    c.DevicePnPEventNotifyHandler = NvDevicePnPEventNotify;
    c.ShutdownHandlerEx = NvShutdownEx;
    c.CancelOidRequestHandler = NvCancelOidRequest;

    return NdisMRegisterMiniportDriver(DriverObject, RegistryPath, NULL, &c, &NvDriverHandle);
}
