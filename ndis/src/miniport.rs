//! NDIS 5 adapters: the NDIS_MINIPORT_BLOCK a miniport gets as its adapter handle, the adapter
//! lifecycle (MiniportInitialize, CheckForHang, Reset, Halt, Shutdown), the send path, receive and
//! status indications, and OID requests.
//!
//! The NDIS 5 indication macros (NdisMSendComplete, NdisMIndicateReceivePacket,
//! NdisMEthIndicateReceive, NdisMIndicateStatus, NdisMQueryInformationComplete ...) call through
//! function-pointer fields of the block; [`initialize`] points those fields at host functions, the
//! same functions ndis.sys exports under the macros' names.
//!
//! The host drives an adapter with [`initialize`], [`send`], [`interrupt::deliver`](crate::interrupt::deliver),
//! [`query`] / [`set`], [`periodic`] and [`halt`], and collects what the miniport indicated with
//! [`take_events`]. Received packets are copied out at once; packets the miniport lent with
//! NDIS_STATUS_SUCCESS are returned through MiniportReturnPacket after the indicating DPC, the way
//! a protocol that retained them would.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use ntoskrnl::export::Export;
use ntoskrnl::{ex, export_table, ke, KResult, Kernel, KernelError};

use crate::packet::{self, new_buffer, new_packet};
use crate::resources::{BusConfig, Resource};
use crate::wrapper::{Handler, MiniportCharacteristics};
use crate::{
    NdisState, NdisStatus, NDIS_OWNER, NDIS_STATUS_FAILURE, NDIS_STATUS_RESOURCES,
    NDIS_STATUS_SUCCESS,
};

/// NDIS_STATUS_PENDING.
pub const NDIS_STATUS_PENDING: NdisStatus = 0x0000_0103;
/// NDIS_STATUS_MEDIA_CONNECT.
pub const NDIS_STATUS_MEDIA_CONNECT: NdisStatus = 0x4001_000B;
/// NDIS_STATUS_MEDIA_DISCONNECT.
pub const NDIS_STATUS_MEDIA_DISCONNECT: NdisStatus = 0x4001_000C;
/// NDIS_STATUS_NOT_SUPPORTED.
pub const NDIS_STATUS_NOT_SUPPORTED: NdisStatus = 0xC000_00BB;
/// NDIS_STATUS_INVALID_LENGTH.
pub const NDIS_STATUS_INVALID_LENGTH: NdisStatus = 0xC001_0014;
/// NDIS_STATUS_BUFFER_TOO_SHORT.
pub const NDIS_STATUS_BUFFER_TOO_SHORT: NdisStatus = 0xC001_0016;
/// NDIS_STATUS_UNSUPPORTED_MEDIA.
pub const NDIS_STATUS_UNSUPPORTED_MEDIA: NdisStatus = 0xC001_001B;

/// NDIS_ATTRIBUTE_BUS_MASTER.
pub const NDIS_ATTRIBUTE_BUS_MASTER: u32 = 0x0000_0008;
/// NDIS_ATTRIBUTE_DESERIALIZE.
pub const NDIS_ATTRIBUTE_DESERIALIZE: u32 = 0x0000_0020;

/// NdisMedium802_3.
const NDIS_MEDIUM_802_3: u32 = 0;
/// CheckForHang period when the miniport does not set one (seconds).
const DEFAULT_CHECK_FOR_HANG_SECONDS: u32 = 2;
/// Bytes of each NDIS-owned send buffer: the largest frame NDIS hands a miniport.
pub const SEND_BUFFER_BYTES: u32 = 2048;
/// Packets handed to MiniportSendPackets per call.
const SEND_BATCH: usize = 16;
/// NDIS-owned send packets an adapter may have outstanding.
const MAX_OUTSTANDING_SENDS: usize = 256;
/// Ethernet header bytes (NDIS_SET_PACKET_HEADER_SIZE of sends).
const ETH_HEADER: u32 = 14;
/// Bytes of an adapter's scratch page (out-parameters, packet arrays, the medium array).
const SCRATCH_BYTES: u64 = 0x1000;
/// Scratch offsets.
const SCRATCH_OUT0: u64 = 0;
const SCRATCH_OUT1: u64 = 8;
const SCRATCH_MEDIUM: u64 = 16;
const SCRATCH_ISR_FLAGS: u64 = 24;
const SCRATCH_PACKETS: u64 = 64;

/// Shared memory handed out by NdisMAllocateSharedMemory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SharedMemory {
    /// Length the miniport asked for.
    pub length: u32,
    /// Its bus (guest-physical) address.
    pub pa: u64,
}

/// Something a miniport indicated, for the host's upper edge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdapterEvent {
    /// A received frame (whole Ethernet frame, no FCS).
    Receive(Vec<u8>),
    /// Media connect (true) or disconnect (false).
    Link(bool),
    /// Any other status indication (NDIS_STATUS code).
    Status(NdisStatus),
}

/// The outcome of an OID request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestResult {
    /// Final NDIS_STATUS.
    pub status: NdisStatus,
    /// Query: the bytes written. Set: empty.
    pub data: Vec<u8>,
    /// BytesNeeded the miniport reported.
    pub bytes_needed: u32,
    /// Set: BytesRead.
    pub bytes_read: u32,
}

/// A request in progress (the miniport returned NDIS_STATUS_PENDING).
#[derive(Debug, Clone, Copy)]
struct PendingRequest {
    query: bool,
    buffer: u64,
    len: u32,
}

/// Counters of an adapter's data path.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AdapterStats {
    /// Frames handed to the miniport's send path.
    pub sends: u64,
    /// Sends completed with NDIS_STATUS_SUCCESS.
    pub sends_ok: u64,
    /// Sends completed with a failure status.
    pub sends_failed: u64,
    /// Sends the miniport refused for lack of resources (requeued, not lost).
    pub sends_requeued: u64,
    /// Frames indicated as received.
    pub receives: u64,
    /// Packets returned to the miniport through MiniportReturnPacket.
    pub returns: u64,
    /// Interrupts delivered to the ISR.
    pub interrupts: u64,
}

/// An NDIS-owned send packet: descriptor, its one buffer and the buffer's memory.
#[derive(Debug, Clone, Copy)]
struct SendSlot {
    packet: u64,
    buffer: u64,
    data: u64,
}

/// The host record of an adapter (keyed by its NDIS_MINIPORT_BLOCK address, the adapter handle).
pub struct Adapter {
    /// Name for reports (the device instance or service).
    pub name: String,
    /// The wrapper the miniport registered with.
    pub wrapper: u64,
    /// The NDIS_MINIPORT_BLOCK (MiniportAdapterHandle).
    pub block: u64,
    /// MiniportAdapterContext (from NdisMSetAttributes[Ex]).
    pub context: u64,
    /// The registered characteristics.
    pub chars: MiniportCharacteristics,
    /// NDIS_ATTRIBUTE_* flags.
    pub attribute_flags: u32,
    /// NDIS_INTERFACE_TYPE.
    pub interface_type: u32,
    /// CheckForHang period.
    pub check_for_hang_seconds: u32,
    /// Resources the bus assigned.
    pub resources: Vec<Resource>,
    /// PCI configuration access, if the adapter sits on a bus.
    pub bus: Option<Box<dyn BusConfig>>,
    /// Registered I/O port ranges (first port, count).
    pub port_ranges: Vec<(u32, u32)>,
    /// Shared memory by virtual address.
    pub shared_memory: BTreeMap<u64, SharedMemory>,
    /// Map registers allocated (0: none).
    pub map_registers: u32,
    /// NdisMInitializeScatterGatherDma was called.
    pub scatter_gather: bool,
    /// The registered NDIS_MINIPORT_INTERRUPT, if any.
    pub interrupt: Option<u64>,
    /// (handler, context) of NdisMRegisterAdapterShutdownHandler.
    pub shutdown_handler: Option<(u64, u64)>,
    /// Counters.
    pub stats: AdapterStats,
    scratch: u64,
    config_context: u64,
    free_sends: Vec<SendSlot>,
    outstanding: HashMap<u64, SendSlot>,
    /// Packets lent by the miniport, to return after the indicating DPC.
    to_return: Vec<u64>,
    /// Frames whose data is still being transferred (MiniportTransferData pending): packet ->
    /// (slot, header + lookahead bytes).
    transfers: HashMap<u64, (SendSlot, Vec<u8>)>,
    events: VecDeque<AdapterEvent>,
    pending_request: Option<PendingRequest>,
    completed_request: Option<RequestResult>,
    reset_in_progress: bool,
    next_check_for_hang: Instant,
}

impl Adapter {
    /// Whether the miniport is deserialized (completes every send itself).
    pub fn deserialized(&self) -> bool {
        self.attribute_flags & NDIS_ATTRIBUTE_DESERIALIZE != 0
    }

    /// Two BOOLEANs for the ISR's InterruptRecognized and QueueMiniportHandleInterrupt.
    pub(crate) fn isr_flags(&self) -> u64 {
        self.scratch + SCRATCH_ISR_FLAGS
    }
}

/// The adapter behind a MiniportAdapterHandle.
pub fn adapter_mut(k: &mut Kernel, handle: u64) -> Option<&mut Adapter> {
    k.extension::<NdisState>().adapters.get_mut(&handle)
}

fn adapter(k: &mut Kernel, handle: u64) -> KResult<&mut Adapter> {
    adapter_mut(k, handle).ok_or_else(|| {
        KernelError::bug_check(0x7C, format!("{handle:#x} is not an NDIS adapter handle"))
    })
}

/// Runs `f` at DISPATCH_LEVEL (the IRQL NDIS calls a serialized miniport's send, request,
/// interrupt-DPC and timer handlers at), restoring the IRQL afterwards.
pub fn at_dispatch<T>(k: &mut Kernel, f: impl FnOnce(&mut Kernel) -> KResult<T>) -> KResult<T> {
    let old = ke::current_irql(k);
    k.m.cpu.cr8 = u64::from(ke::DISPATCH_LEVEL.max(old));
    let r = f(k);
    k.m.cpu.cr8 = u64::from(old);
    r
}

/// What the host knows about the adapter it is about to initialize.
pub struct AdapterSetup {
    /// Name for reports (device instance).
    pub name: String,
    /// Registry key NdisOpenConfiguration reads for this adapter (absolute path).
    pub config_key: String,
    /// Resources the bus assigned.
    pub resources: Vec<Resource>,
    /// PCI configuration access.
    pub bus: Option<Box<dyn BusConfig>>,
}

/// Names of the block's handler fields -> the host function each points at.
fn block_handlers(l: &crate::NdisLayout) -> [(u64, &'static str); 11] {
    [
        (
            l.miniport_block_packet_indicate_handler,
            "PacketIndicateHandler",
        ),
        (l.miniport_block_send_complete_handler, "NdisMSendComplete"),
        (
            l.miniport_block_send_resources_handler,
            "NdisMSendResourcesAvailable",
        ),
        (
            l.miniport_block_reset_complete_handler,
            "NdisMResetComplete",
        ),
        (
            l.miniport_block_eth_rx_indicate_handler,
            "EthRxIndicateHandler",
        ),
        (
            l.miniport_block_eth_rx_complete_handler,
            "EthRxCompleteHandler",
        ),
        (l.miniport_block_status_handler, "NdisMIndicateStatus"),
        (
            l.miniport_block_status_complete_handler,
            "NdisMIndicateStatusComplete",
        ),
        (
            l.miniport_block_td_complete_handler,
            "NdisMTransferDataComplete",
        ),
        (
            l.miniport_block_query_complete_handler,
            "NdisMQueryInformationComplete",
        ),
        (
            l.miniport_block_set_complete_handler,
            "NdisMSetInformationComplete",
        ),
    ]
}

fn handler_export(name: &str) -> &'static Export {
    EXPORTS
        .iter()
        .chain(BLOCK_ONLY.iter())
        .find(|e| e.name == name)
        .expect("every block handler is declared in EXPORTS or BLOCK_ONLY")
}

/// Creates the adapter of a registered NDIS 5 miniport and runs MiniportInitialize (medium:
/// 802.3). `Ok(Err(status))` when the miniport (or NDIS) failed the initialization; everything
/// NDIS allocated is released then.
pub fn initialize(
    k: &mut Kernel,
    wrapper: u64,
    setup: AdapterSetup,
) -> KResult<Result<u64, NdisStatus>> {
    let Some(chars) = crate::wrapper(k, wrapper).and_then(|w| w.miniport) else {
        tracing::warn!(target: "ica::ndis", "{}: no miniport registered with wrapper {wrapper:#x}", setup.name);
        return Ok(Err(NDIS_STATUS_FAILURE));
    };
    let l = crate::layout(k);
    let block = ex::allocate(
        k,
        l.miniport_block_size,
        u32::from_le_bytes(*b"NDmb"),
        NDIS_OWNER.into(),
    )?;
    for (field, name) in block_handlers(l) {
        let f = k.host_function(handler_export(name));
        k.write_ptr(block + field, f)?;
    }
    // The miniport passes EthDB back to EthRxIndicateHandler: it names the adapter.
    k.write_ptr(block + l.miniport_block_eth_db, block)?;
    k.m.mem
        .write_u32(block + l.miniport_block_media_type, NDIS_MEDIUM_802_3)?;
    let scratch = ex::allocate(
        k,
        SCRATCH_BYTES,
        u32::from_le_bytes(*b"NDsc"),
        NDIS_OWNER.into(),
    )?;
    let config_context = crate::config::configuration_context_for_key(k, &setup.config_key)?;
    if let Some(c) = k
        .extension::<NdisState>()
        .config_contexts
        .get_mut(&config_context)
    {
        c.adapter = Some(block);
    }
    let record = Adapter {
        name: setup.name,
        wrapper,
        block,
        context: 0,
        chars: chars.clone(),
        attribute_flags: 0,
        interface_type: 0,
        check_for_hang_seconds: DEFAULT_CHECK_FOR_HANG_SECONDS,
        resources: setup.resources,
        bus: setup.bus,
        port_ranges: Vec::new(),
        shared_memory: BTreeMap::new(),
        map_registers: 0,
        scatter_gather: false,
        interrupt: None,
        shutdown_handler: None,
        stats: AdapterStats::default(),
        scratch,
        config_context,
        free_sends: Vec::new(),
        outstanding: HashMap::new(),
        to_return: Vec::new(),
        transfers: HashMap::new(),
        events: VecDeque::new(),
        pending_request: None,
        completed_request: None,
        reset_in_progress: false,
        next_check_for_hang: Instant::now(),
    };
    k.extension::<NdisState>().adapters.insert(block, record);

    k.m.mem
        .write_u32(scratch + SCRATCH_MEDIUM, NDIS_MEDIUM_802_3)?;
    let init = chars.handler(Handler::Initialize);
    let status = k.call_guest(
        init,
        &[
            scratch + SCRATCH_OUT0,
            scratch + SCRATCH_OUT1,
            scratch + SCRATCH_MEDIUM,
            1,
            block,
            config_context,
        ],
    )? as NdisStatus;
    if status != NDIS_STATUS_SUCCESS {
        let leftovers = release(k, block)?;
        for l in leftovers {
            tracing::warn!(target: "ica::ndis", "after a failed MiniportInitialize: {l}");
        }
        return Ok(Err(status));
    }
    let selected = k.m.mem.read_u32(scratch + SCRATCH_OUT1)?;
    if selected != 0 {
        tracing::warn!(target: "ica::ndis", "MiniportInitialize selected medium index {selected} of a 1-entry array");
    }
    let a = adapter(k, block)?;
    a.next_check_for_hang =
        Instant::now() + Duration::from_secs(u64::from(a.check_for_hang_seconds));
    Ok(Ok(block))
}

/// Frees what NDIS allocated for an adapter and what the miniport left behind; returns a line
/// per leftover (each one a miniport bug: it should have released it in Halt or on failure).
fn release(k: &mut Kernel, block: u64) -> KResult<Vec<String>> {
    let Some(a) = k.extension::<NdisState>().adapters.remove(&block) else {
        return Ok(Vec::new());
    };
    let mut leftovers = Vec::new();
    if let Some(i) = a.interrupt {
        leftovers.push(format!("{}: interrupt {i:#x} still registered", a.name));
        k.extension::<NdisState>().interrupts.remove(&i);
    }
    for (first, count) in &a.port_ranges {
        leftovers.push(format!(
            "{}: I/O ports {first:#x}+{count:#x} still registered",
            a.name
        ));
    }
    for (va, m) in &a.shared_memory {
        leftovers.push(format!(
            "{}: {} bytes of shared memory at {va:#x} not freed",
            a.name, m.length
        ));
        ex::free(k, *va, None)?;
    }
    if a.map_registers != 0 {
        leftovers.push(format!("{}: map registers not freed", a.name));
    }
    let slots = a
        .free_sends
        .iter()
        .chain(a.outstanding.values())
        .chain(a.transfers.values().map(|(s, _)| s))
        .copied()
        .collect::<Vec<_>>();
    for s in slots {
        free_slot(k, s)?;
    }
    if k.extension::<NdisState>()
        .config_contexts
        .remove(&a.config_context)
        .is_some()
    {
        ex::free(k, a.config_context, None)?;
    }
    ex::free(k, a.scratch, None)?;
    ex::free(k, block, None)?;
    Ok(leftovers)
}

fn free_slot(k: &mut Kernel, s: SendSlot) -> KResult<()> {
    ex::free(k, s.packet, None)?;
    ntoskrnl::mm::free_mdl(k, s.buffer)?;
    ex::free(k, s.data, None)
}

/// A send slot for `frame` (a free one, or a new one while under the outstanding limit).
fn take_slot(k: &mut Kernel, block: u64, frame: &[u8]) -> KResult<Option<SendSlot>> {
    let a = adapter(k, block)?;
    let slot = match a.free_sends.pop() {
        Some(s) => s,
        None if a.outstanding.len() + a.transfers.len() < MAX_OUTSTANDING_SENDS => {
            let data = ex::allocate(
                k,
                u64::from(SEND_BUFFER_BYTES),
                u32::from_le_bytes(*b"NDsb"),
                NDIS_OWNER.into(),
            )?;
            let buffer = new_buffer(k, data, SEND_BUFFER_BYTES)?;
            let packet = new_packet(k, 0, 0, NDIS_OWNER.into())?;
            SendSlot {
                packet,
                buffer,
                data,
            }
        }
        None => return Ok(None),
    };
    k.m.mem.write_bytes(slot.data, frame)?;
    packet::adjust_buffer_length(k, slot.buffer, frame.len() as u32)?;
    packet::set_single_buffer(k, slot.packet, slot.buffer)?;
    packet::set_packet_status(k, slot.packet, NDIS_STATUS_SUCCESS)?;
    packet::set_packet_header_size(k, slot.packet, ETH_HEADER)?;
    Ok(Some(slot))
}

/// Hands frames from the front of `frames` to the miniport (MiniportSendPackets, or MiniportSend
/// for an NDIS 3 style miniport) at DISPATCH_LEVEL. Frames the miniport refuses for lack of
/// resources go back to the front of the queue, in order, to be retried later; a frame larger
/// than [`SEND_BUFFER_BYTES`] is dropped and counted as a failed send.
pub fn send(k: &mut Kernel, block: u64, frames: &mut VecDeque<Vec<u8>>) -> KResult<()> {
    let chars = adapter(k, block)?.chars.clone();
    let send_packets = chars.handler(Handler::SendPackets);
    let send_one = chars.handler(Handler::Send);
    while !frames.is_empty() {
        let mut batch: Vec<(SendSlot, Vec<u8>)> = Vec::new();
        while batch.len() < SEND_BATCH {
            let Some(frame) = frames.pop_front() else {
                break;
            };
            if frame.len() > SEND_BUFFER_BYTES as usize {
                tracing::warn!(target: "ica::ndis", "dropping a {}-byte frame (larger than {SEND_BUFFER_BYTES})", frame.len());
                adapter(k, block)?.stats.sends_failed += 1;
                continue;
            }
            match take_slot(k, block, &frame)? {
                Some(slot) => batch.push((slot, frame)),
                None => {
                    frames.push_front(frame);
                    break;
                }
            }
        }
        if batch.is_empty() {
            break;
        }
        let a = adapter(k, block)?;
        let context = a.context;
        let scratch = a.scratch;
        a.stats.sends += batch.len() as u64;
        for (slot, _) in &batch {
            a.outstanding.insert(slot.packet, *slot);
        }
        let statuses: Vec<NdisStatus> = if send_packets != 0 {
            for (i, (slot, _)) in batch.iter().enumerate() {
                k.write_ptr(
                    scratch + SCRATCH_PACKETS + i as u64 * k.ptr_size(),
                    slot.packet,
                )?;
            }
            at_dispatch(k, |k| {
                k.call_guest(
                    send_packets,
                    &[context, scratch + SCRATCH_PACKETS, batch.len() as u64],
                )
            })?;
            let mut v = Vec::new();
            for (slot, _) in &batch {
                v.push(packet::packet_status(k, slot.packet)?);
            }
            v
        } else {
            let mut v = Vec::new();
            for (slot, _) in &batch {
                let s = at_dispatch(k, |k| k.call_guest(send_one, &[context, slot.packet, 0]))?;
                v.push(s as NdisStatus);
            }
            v
        };
        let deserialized = adapter(k, block)?.deserialized();
        let mut refused = Vec::new();
        for ((slot, frame), status) in batch.into_iter().zip(statuses) {
            // Completed during the call through NdisMSendComplete, or still the miniport's.
            if deserialized || status == NDIS_STATUS_PENDING {
                continue;
            }
            let a = adapter(k, block)?;
            if a.outstanding.remove(&slot.packet).is_none() {
                continue;
            }
            a.free_sends.push(slot);
            if status == NDIS_STATUS_RESOURCES {
                a.stats.sends_requeued += 1;
                a.stats.sends -= 1;
                refused.push(frame);
            } else if status == NDIS_STATUS_SUCCESS {
                a.stats.sends_ok += 1;
            } else {
                a.stats.sends_failed += 1;
            }
        }
        if !refused.is_empty() {
            for frame in refused.into_iter().rev() {
                frames.push_front(frame);
            }
            break;
        }
    }
    return_packets(k, block)
}

/// Returns the packets the miniport lent in indications (MiniportReturnPacket at
/// DISPATCH_LEVEL).
pub fn return_packets(k: &mut Kernel, block: u64) -> KResult<()> {
    let a = adapter(k, block)?;
    if a.to_return.is_empty() {
        return Ok(());
    }
    let packets = std::mem::take(&mut a.to_return);
    let context = a.context;
    a.stats.returns += packets.len() as u64;
    let handler = a.chars.handler(Handler::ReturnPacket);
    at_dispatch(k, |k| {
        for p in packets {
            k.call_guest(handler, &[context, p])?;
        }
        Ok(())
    })
}

/// What NDIS does after a miniport's interrupt DPC: return lent packets.
pub fn after_dpc(k: &mut Kernel, block: u64) -> KResult<()> {
    adapter(k, block)?.stats.interrupts += 1;
    return_packets(k, block)
}

/// Everything the miniport indicated since the last call.
pub fn take_events(k: &mut Kernel, block: u64) -> Vec<AdapterEvent> {
    adapter_mut(k, block)
        .map(|a| a.events.drain(..).collect())
        .unwrap_or_default()
}

/// The adapter's counters.
pub fn stats(k: &mut Kernel, block: u64) -> Option<AdapterStats> {
    adapter_mut(k, block).map(|a| a.stats)
}

/// Issues an OID request (MiniportQueryInformation with a `len`-byte buffer, or
/// MiniportSetInformation with `data`) at DISPATCH_LEVEL. `None` if the miniport pended it: the
/// result arrives through its completion and [`completed_request`] hands it out.
fn request(
    k: &mut Kernel,
    block: u64,
    query: bool,
    oid: u32,
    len: u32,
    data: &[u8],
) -> KResult<Option<RequestResult>> {
    let a = adapter(k, block)?;
    if a.pending_request.is_some() {
        return Err(KernelError::bug_check(
            0x7C,
            format!("{}: an OID request is already pending", a.name),
        ));
    }
    let context = a.context;
    let scratch = a.scratch;
    let handler = a.chars.handler(if query {
        Handler::QueryInformation
    } else {
        Handler::SetInformation
    });
    let buffer = ex::allocate(
        k,
        u64::from(len.max(1)),
        u32::from_le_bytes(*b"NDrq"),
        NDIS_OWNER.into(),
    )?;
    k.m.mem.write_bytes(buffer, data)?;
    k.m.mem.write_u64(scratch + SCRATCH_OUT0, 0)?;
    k.m.mem.write_u64(scratch + SCRATCH_OUT1, 0)?;
    let status = at_dispatch(k, |k| {
        k.call_guest(
            handler,
            &[
                context,
                u64::from(oid),
                buffer,
                u64::from(len),
                scratch + SCRATCH_OUT0,
                scratch + SCRATCH_OUT1,
            ],
        )
    })? as NdisStatus;
    if status == NDIS_STATUS_PENDING {
        adapter(k, block)?.pending_request = Some(PendingRequest { query, buffer, len });
        return Ok(None);
    }
    finish_request(k, block, PendingRequest { query, buffer, len }, status).map(Some)
}

fn finish_request(
    k: &mut Kernel,
    block: u64,
    req: PendingRequest,
    status: NdisStatus,
) -> KResult<RequestResult> {
    let scratch = adapter(k, block)?.scratch;
    let done = k.m.mem.read_u32(scratch + SCRATCH_OUT0)?;
    let needed = k.m.mem.read_u32(scratch + SCRATCH_OUT1)?;
    let data = if req.query && status == NDIS_STATUS_SUCCESS {
        k.m.mem.read_vec(req.buffer, done.min(req.len) as usize)?
    } else {
        Vec::new()
    };
    ex::free(k, req.buffer, None)?;
    Ok(RequestResult {
        status,
        data,
        bytes_needed: needed,
        bytes_read: if req.query { 0 } else { done },
    })
}

/// OID query with a `len`-byte buffer; `None` while pending (see [`completed_request`]).
pub fn query(k: &mut Kernel, block: u64, oid: u32, len: u32) -> KResult<Option<RequestResult>> {
    request(k, block, true, oid, len, &[])
}

/// OID set; `None` while pending (see [`completed_request`]).
pub fn set(k: &mut Kernel, block: u64, oid: u32, data: &[u8]) -> KResult<Option<RequestResult>> {
    request(k, block, false, oid, data.len() as u32, data)
}

/// The result of a request the miniport had pended, once it completed it.
pub fn completed_request(k: &mut Kernel, block: u64) -> Option<RequestResult> {
    adapter_mut(k, block).and_then(|a| a.completed_request.take())
}

/// Runs MiniportCheckForHang when its period has elapsed, and MiniportReset if it reports a
/// hang; returns when it is next due.
pub fn periodic(k: &mut Kernel, block: u64) -> KResult<Instant> {
    let a = adapter(k, block)?;
    let now = Instant::now();
    if now < a.next_check_for_hang {
        return Ok(a.next_check_for_hang);
    }
    a.next_check_for_hang = now + Duration::from_secs(u64::from(a.check_for_hang_seconds));
    let due = a.next_check_for_hang;
    let (context, check) = (a.context, a.chars.handler(Handler::CheckForHang));
    if check != 0 && !a.reset_in_progress {
        let hung = at_dispatch(k, |k| k.call_guest(check, &[context]))? as u8 != 0;
        if hung {
            tracing::warn!(target: "ica::ndis", "{}: MiniportCheckForHang reported a hang; resetting", adapter(k, block)?.name);
            reset(k, block)?;
        }
    }
    return_packets(k, block)?;
    Ok(due)
}

/// Resets the adapter (MiniportReset); returns the status, NDIS_STATUS_PENDING until
/// NdisMResetComplete if the miniport pends it.
pub fn reset(k: &mut Kernel, block: u64) -> KResult<NdisStatus> {
    let a = adapter(k, block)?;
    let (context, handler, scratch) = (a.context, a.chars.handler(Handler::Reset), a.scratch);
    if handler == 0 {
        return Ok(NDIS_STATUS_NOT_SUPPORTED);
    }
    a.reset_in_progress = true;
    let status = at_dispatch(k, |k| {
        k.call_guest(handler, &[scratch + SCRATCH_OUT0, context])
    })? as NdisStatus;
    if status != NDIS_STATUS_PENDING {
        adapter(k, block)?.reset_in_progress = false;
    }
    Ok(status)
}

/// Halts the adapter (MiniportHalt at PASSIVE_LEVEL) and frees it; returns what the miniport
/// failed to release (each a driver bug, already freed by NDIS).
pub fn halt(k: &mut Kernel, block: u64) -> KResult<Vec<String>> {
    let a = adapter(k, block)?;
    let (context, handler) = (a.context, a.chars.handler(Handler::Halt));
    k.call_guest(handler, &[context])?;
    return_packets(k, block)?;
    release(k, block)
}

/// Runs the shutdown handler (NdisMRegisterAdapterShutdownHandler or the 5.1 characteristics'
/// AdapterShutdownHandler), as at system shutdown.
pub fn shutdown(k: &mut Kernel, block: u64) -> KResult<()> {
    let a = adapter(k, block)?;
    let (handler, context) = match a.shutdown_handler {
        Some(h) => h,
        None => (a.chars.handler(Handler::AdapterShutdown), a.context),
    };
    if handler != 0 {
        k.call_guest(handler, &[context])?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The block's handlers (called by the miniport through the NDIS 5 macros).

/// NdisMSendComplete(MiniportAdapterHandle, Packet, Status).
pub fn send_complete(k: &mut Kernel, block: u64, packet: u64, status: NdisStatus) -> KResult<()> {
    let a = adapter(k, block)?;
    let Some(slot) = a.outstanding.remove(&packet) else {
        return Err(KernelError::bug_check(
            0x7C,
            format!(
                "{}: NdisMSendComplete of packet {packet:#x}, which is not a send in progress (completed twice?)",
                a.name
            ),
        ));
    };
    a.free_sends.push(slot);
    if status == NDIS_STATUS_SUCCESS {
        a.stats.sends_ok += 1;
    } else {
        a.stats.sends_failed += 1;
    }
    Ok(())
}

/// NdisMSendResourcesAvailable(MiniportAdapterHandle): the host retries queued sends anyway.
pub fn send_resources_available(_k: &mut Kernel, _block: u64) -> KResult<()> {
    Ok(())
}

/// NdisMResetComplete(MiniportAdapterHandle, Status, AddressingReset).
pub fn reset_complete(
    k: &mut Kernel,
    block: u64,
    status: NdisStatus,
    _addressing_reset: bool,
) -> KResult<()> {
    let a = adapter(k, block)?;
    a.reset_in_progress = false;
    if status != NDIS_STATUS_SUCCESS {
        tracing::warn!(target: "ica::ndis", "{}: reset completed with {status:#x}", a.name);
    }
    Ok(())
}

/// The block's PacketIndicateHandler (NdisMIndicateReceivePacket): copies every packet out;
/// packets lent with NDIS_STATUS_SUCCESS are marked pending and returned after the DPC, packets
/// indicated with NDIS_STATUS_RESOURCES stay the miniport's.
pub fn indicate_receive_packet(
    k: &mut Kernel,
    block: u64,
    packets: u64,
    count: u32,
) -> KResult<()> {
    let has_return = adapter(k, block)?.chars.handler(Handler::ReturnPacket) != 0;
    for i in 0..u64::from(count) {
        let p = k.read_ptr(packets + i * k.ptr_size())?;
        let status = packet::packet_status(k, p)?;
        let frame = packet::packet_bytes(k, p)?;
        let keep = status != NDIS_STATUS_RESOURCES && has_return;
        if keep {
            packet::set_packet_status(k, p, NDIS_STATUS_PENDING)?;
        }
        let a = adapter(k, block)?;
        a.stats.receives += 1;
        a.events.push_back(AdapterEvent::Receive(frame));
        if keep {
            a.to_return.push(p);
        }
    }
    Ok(())
}

/// The block's EthRxIndicateHandler (NdisMEthIndicateReceive): header plus lookahead; when the
/// lookahead is short of the packet, the rest comes from MiniportTransferData.
#[allow(clippy::too_many_arguments)]
pub fn eth_indicate_receive(
    k: &mut Kernel,
    filter: u64,
    receive_context: u64,
    _address: u64,
    header: u64,
    header_size: u32,
    lookahead: u64,
    lookahead_size: u32,
    packet_size: u32,
) -> KResult<()> {
    let block = filter;
    let mut frame = k.m.mem.read_vec(header, header_size as usize)?;
    frame.extend(k.m.mem.read_vec(lookahead, lookahead_size as usize)?);
    if lookahead_size >= packet_size {
        let a = adapter(k, block)?;
        a.stats.receives += 1;
        a.events.push_back(AdapterEvent::Receive(frame));
        return Ok(());
    }
    let rest = packet_size - lookahead_size;
    let a = adapter(k, block)?;
    let (context, transfer, scratch) =
        (a.context, a.chars.handler(Handler::TransferData), a.scratch);
    if transfer == 0 || rest > SEND_BUFFER_BYTES {
        tracing::warn!(target: "ica::ndis", "{}: partial receive indication the host cannot complete", a.name);
        return Ok(());
    }
    let Some(slot) = take_slot(k, block, &vec![0; rest as usize])? else {
        return Ok(());
    };
    let status = k.call_guest(
        transfer,
        &[
            slot.packet,
            scratch + SCRATCH_OUT0,
            context,
            receive_context,
            u64::from(lookahead_size),
            u64::from(rest),
        ],
    )? as NdisStatus;
    if status == NDIS_STATUS_PENDING {
        adapter(k, block)?
            .transfers
            .insert(slot.packet, (slot, frame));
        return Ok(());
    }
    let done = k.m.mem.read_u32(scratch + SCRATCH_OUT0)?;
    finish_transfer(k, block, slot, frame, status, done)
}

fn finish_transfer(
    k: &mut Kernel,
    block: u64,
    slot: SendSlot,
    mut frame: Vec<u8>,
    status: NdisStatus,
    transferred: u32,
) -> KResult<()> {
    if status == NDIS_STATUS_SUCCESS {
        frame.extend(
            k.m.mem
                .read_vec(slot.data, transferred.min(SEND_BUFFER_BYTES) as usize)?,
        );
    }
    let a = adapter(k, block)?;
    a.free_sends.push(slot);
    if status == NDIS_STATUS_SUCCESS {
        a.stats.receives += 1;
        a.events.push_back(AdapterEvent::Receive(frame));
    }
    Ok(())
}

/// NdisMTransferDataComplete(MiniportAdapterHandle, Packet, Status, BytesTransferred).
pub fn transfer_data_complete(
    k: &mut Kernel,
    block: u64,
    packet: u64,
    status: NdisStatus,
    transferred: u32,
) -> KResult<()> {
    let Some((slot, frame)) = adapter(k, block)?.transfers.remove(&packet) else {
        return Err(KernelError::bug_check(
            0x7C,
            format!(
                "NdisMTransferDataComplete of packet {packet:#x}, which has no transfer pending"
            ),
        ));
    };
    finish_transfer(k, block, slot, frame, status, transferred)
}

/// The block's EthRxCompleteHandler (NdisMEthIndicateReceiveComplete).
pub fn eth_indicate_receive_complete(_k: &mut Kernel, _filter: u64) -> KResult<()> {
    Ok(())
}

/// NdisMIndicateStatus(MiniportAdapterHandle, GeneralStatus, StatusBuffer, StatusBufferSize).
pub fn indicate_status(
    k: &mut Kernel,
    block: u64,
    status: NdisStatus,
    _buffer: u64,
    _size: u32,
) -> KResult<()> {
    let event = match status {
        NDIS_STATUS_MEDIA_CONNECT => AdapterEvent::Link(true),
        NDIS_STATUS_MEDIA_DISCONNECT => AdapterEvent::Link(false),
        other => AdapterEvent::Status(other),
    };
    adapter(k, block)?.events.push_back(event);
    Ok(())
}

/// NdisMIndicateStatusComplete(MiniportAdapterHandle).
pub fn indicate_status_complete(_k: &mut Kernel, _block: u64) -> KResult<()> {
    Ok(())
}

fn request_complete(k: &mut Kernel, block: u64, status: NdisStatus, query: bool) -> KResult<()> {
    let a = adapter(k, block)?;
    let Some(req) = a.pending_request.filter(|r| r.query == query) else {
        return Err(KernelError::bug_check(
            0x7C,
            format!(
                "{}: {} completed, but no such request is pending",
                a.name,
                if query {
                    "NdisMQueryInformationComplete"
                } else {
                    "NdisMSetInformationComplete"
                }
            ),
        ));
    };
    a.pending_request = None;
    let result = finish_request(k, block, req, status)?;
    adapter(k, block)?.completed_request = Some(result);
    Ok(())
}

/// NdisMQueryInformationComplete(MiniportAdapterHandle, Status).
pub fn query_information_complete(k: &mut Kernel, block: u64, status: NdisStatus) -> KResult<()> {
    request_complete(k, block, status, true)
}

/// NdisMSetInformationComplete(MiniportAdapterHandle, Status).
pub fn set_information_complete(k: &mut Kernel, block: u64, status: NdisStatus) -> KResult<()> {
    request_complete(k, block, status, false)
}

pub(crate) static EXPORTS: &[Export] = export_table![
    stdcall NdisMSendComplete => send_complete(miniport_adapter_handle: u64, packet: u64, status: u32);
    stdcall NdisMSendResourcesAvailable => send_resources_available(miniport_adapter_handle: u64);
    stdcall NdisMResetComplete => reset_complete(miniport_adapter_handle: u64, status: u32, addressing_reset: bool);
    stdcall NdisMTransferDataComplete => transfer_data_complete(miniport_adapter_handle: u64, packet: u64, status: u32, bytes_transferred: u32);
    stdcall NdisMIndicateStatus => indicate_status(miniport_adapter_handle: u64, general_status: u32, status_buffer: u64, status_buffer_size: u32);
    stdcall NdisMIndicateStatusComplete => indicate_status_complete(miniport_adapter_handle: u64);
    stdcall NdisMQueryInformationComplete => query_information_complete(miniport_adapter_handle: u64, status: u32);
    stdcall NdisMSetInformationComplete => set_information_complete(miniport_adapter_handle: u64, status: u32);
];

/// Block handlers with no ndis.sys export of their own (the macros are their only way in).
static BLOCK_ONLY: &[Export] = export_table![
    stdcall PacketIndicateHandler => indicate_receive_packet(miniport: u64, packet_array: u64, number_of_packets: u32);
    stdcall EthRxIndicateHandler => eth_indicate_receive(filter: u64, mac_receive_context: u64, address: u64, header_buffer: u64, header_buffer_size: u32, lookahead_buffer: u64, lookahead_buffer_size: u32, packet_size: u32);
    stdcall EthRxCompleteHandler => eth_indicate_receive_complete(filter: u64);
];
