//! Adapters: the host-facing API of NDIS 5 and NDIS 6 adapters alike ([`initialize`], [`send`],
//! [`query`] / [`set`] / [`completed_request`], [`periodic`], [`reset`], [`pause`] / [`restart`],
//! [`halt`], [`shutdown`], [`take_events`], [`stats`]), which dispatches on the adapter's kind, and
//! the NDIS 5 side: the NDIS_MINIPORT_BLOCK a miniport gets as its adapter handle, the adapter
//! lifecycle (MiniportInitialize, CheckForHang, Reset, Halt, Shutdown), the send path, receive and
//! status indications, and OID requests. The NDIS 6 side lives in [`crate::ndis6`] (lifecycle,
//! OID requests, status) and [`crate::nbl`] (NET_BUFFER_LIST data path).
//!
//! The NDIS 5 indication macros (NdisMSendComplete, NdisMIndicateReceivePacket,
//! NdisMEthIndicateReceive, NdisMIndicateStatus, NdisMQueryInformationComplete ...) call through
//! function-pointer fields of the block; [`initialize`] points those fields at host functions (the
//! same functions ndis.sys exports under the macros' names, where it exports them), as the
//! [`BLOCK_MACROS`] table says.
//!
//! The host drives an adapter with [`initialize`], [`send`], [`interrupt::deliver`](crate::interrupt::deliver),
//! [`query`] / [`set`], [`periodic`] and [`halt`], and collects what the miniport indicated with
//! [`take_events`]. Received packets are copied out at once; packets the miniport lent with
//! NDIS_STATUS_SUCCESS (NDIS 6: NBLs indicated without NDIS_RECEIVE_FLAGS_RESOURCES) are returned
//! through MiniportReturnPacket (MiniportReturnNetBufferLists) after the indicating DPC, the way a
//! protocol that retained them would.
//!
//! NDIS 5 sends of a serialized miniport end with the status it leaves in each packet (those it
//! hands back with NDIS_STATUS_RESOURCES are requeued); a deserialized miniport's end only through
//! NdisMSendComplete. Lookahead indications (NdisMEthIndicateReceive) shorter than the packet are
//! completed through MiniportTransferData, at once or through NdisMTransferDataComplete. Rule
//! breaking NDIS can survive (a second or stray completion, an indication while a transfer is
//! pending, a lookahead short of the one set, sends or transfers never completed) is recorded as
//! a finding and reported by [`halt`], not a bug check.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use ntoskrnl::export::Export;
use ntoskrnl::verifier::{self, Rule};
use ntoskrnl::{ex, export_table, ke, KResult, Kernel, KernelError};

use crate::ndis6::Ndis6;
use crate::packet::{self, new_buffer, new_packet};
use crate::resources::{BusConfig, Resource};
use crate::wrapper::{Handler, MiniportCharacteristics};
use crate::{
    MiniportDriverHandle, NdisState, NdisStatus, NDIS_OWNER, NDIS_STATUS_FAILURE,
    NDIS_STATUS_RESOURCES, NDIS_STATUS_SUCCESS,
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
/// OID_GEN_CURRENT_LOOKAHEAD.
pub const OID_GEN_CURRENT_LOOKAHEAD: u32 = 0x0001_010F;

/// NDIS_ATTRIBUTE_BUS_MASTER.
pub const NDIS_ATTRIBUTE_BUS_MASTER: u32 = 0x0000_0008;
/// NDIS_ATTRIBUTE_DESERIALIZE.
pub const NDIS_ATTRIBUTE_DESERIALIZE: u32 = 0x0000_0020;

/// NdisShutdownPowerOff (NDIS_SHUTDOWN_ACTION).
const NDIS_SHUTDOWN_POWER_OFF: u64 = 0;
/// NdisMedium802_3.
const NDIS_MEDIUM_802_3: u32 = 0;
/// CheckForHang period when the miniport does not set one (seconds).
const DEFAULT_CHECK_FOR_HANG_SECONDS: u32 = 2;
/// Bytes of each NDIS-owned send buffer: the largest frame NDIS hands a miniport.
pub const SEND_BUFFER_BYTES: u32 = 2048;
/// Packets (NBLs) handed to MiniportSendPackets (MiniportSendNetBufferLists) per call.
pub(crate) const SEND_BATCH: usize = 16;
/// NDIS-owned send packets (NBLs) an adapter may have outstanding.
pub(crate) const MAX_OUTSTANDING_SENDS: usize = 256;
/// Ethernet header bytes (NDIS_SET_PACKET_HEADER_SIZE of sends).
const ETH_HEADER: u32 = 14;
/// Bytes of an adapter's scratch page (out-parameters, packet arrays, the medium array, NDIS 6
/// pause and restart parameters).
const SCRATCH_BYTES: u64 = 0x1000;
/// Scratch offsets.
const SCRATCH_OUT0: u64 = 0;
const SCRATCH_OUT1: u64 = 8;
const SCRATCH_MEDIUM: u64 = 16;
const SCRATCH_ISR_FLAGS: u64 = 24;
/// NDIS 5: BytesWritten (BytesRead) and BytesNeeded of the OID request in progress, apart from the
/// other out-parameters: a pended request's stay the miniport's until it completes.
const SCRATCH_REQUEST_DONE: u64 = 32;
const SCRATCH_REQUEST_NEEDED: u64 = 40;
/// NDIS 5: the packet array of MiniportSendPackets. NDIS 6: pause / restart parameters.
pub(crate) const SCRATCH_PACKETS: u64 = 64;

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
    /// The miniport found its adapter unrecoverable and asked NDIS to remove it
    /// (NdisMRemoveMiniport): the host halts it.
    Removed,
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
pub(crate) struct PendingRequest {
    /// Query (true) or set.
    pub(crate) query: bool,
    /// The OID.
    pub(crate) oid: u32,
    /// The InformationBuffer.
    pub(crate) buffer: u64,
    /// Its length.
    pub(crate) len: u32,
    /// NDIS 6: the NDIS_OID_REQUEST (which holds the buffer); NDIS 5: 0.
    pub(crate) request: u64,
}

/// Where an NDIS 6 adapter is in its run-state machine (NDIS 5 adapters are always Running).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunState {
    /// Sends and receives flow.
    Running,
    /// MiniportPause returned NDIS_STATUS_PENDING; NdisMPauseComplete ends it.
    Pausing,
    /// After MiniportInitializeEx and a completed pause: no data path.
    Paused,
    /// MiniportRestart returned NDIS_STATUS_PENDING; NdisMRestartComplete ends it.
    Restarting,
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
    /// The failure status of the last send that failed (NDIS_STATUS_*), if one did.
    pub last_send_failure: Option<NdisStatus>,
    /// Frames indicated as received.
    pub receives: u64,
    /// Receive indications (one may carry several packets / NBLs).
    pub indications: u64,
    /// Packets returned to the miniport through MiniportReturnPacket.
    pub returns: u64,
    /// Interrupts delivered to the ISR.
    pub interrupts: u64,
}

impl AdapterStats {
    /// Counts a send the miniport completed with `status` (not NDIS_STATUS_SUCCESS).
    pub(crate) fn count_send_failure(&mut self, status: NdisStatus) {
        self.sends_failed += 1;
        self.last_send_failure = Some(status);
    }
}

/// An NDIS-owned send packet: descriptor, its one buffer and the buffer's memory.
#[derive(Debug, Clone, Copy)]
struct SendSlot {
    packet: u64,
    buffer: u64,
    data: u64,
}

/// A MiniportTransferData in progress: the packet NDIS gave it and what it is for.
struct Transfer {
    slot: SendSlot,
    /// The header and lookahead already indicated.
    frame: Vec<u8>,
    /// BytesToTransfer.
    requested: u32,
}

/// The NDIS 5 part of an adapter.
pub(crate) struct Ndis5 {
    /// The registered characteristics.
    pub(crate) chars: MiniportCharacteristics,
    config_context: u64,
    /// Packets not in use, reused oldest first (a late second completion of a packet then
    /// rarely finds it sent again).
    free_sends: VecDeque<SendSlot>,
    outstanding: HashMap<u64, SendSlot>,
    /// Packets lent by the miniport, to return after the indicating DPC.
    to_return: Vec<u64>,
    /// Frames whose data is still being transferred (MiniportTransferData pending), by packet.
    transfers: HashMap<u64, Transfer>,
    /// The lookahead a set of OID_GEN_CURRENT_LOOKAHEAD last established, if one did.
    lookahead: Option<u32>,
}

impl Ndis5 {
    fn new(chars: MiniportCharacteristics, config_context: u64) -> Ndis5 {
        Ndis5 {
            chars,
            config_context,
            free_sends: VecDeque::new(),
            outstanding: HashMap::new(),
            to_return: Vec::new(),
            transfers: HashMap::new(),
            lookahead: None,
        }
    }
}

/// What kind of miniport an adapter belongs to, with that kind's state.
pub(crate) enum Kind {
    /// NDIS 5.x (NDIS_MINIPORT_BLOCK, NDIS_PACKETs).
    Ndis5(Box<Ndis5>),
    /// NDIS 6.0 (NET_BUFFER_LISTs, pause/restart).
    Ndis6(Box<Ndis6>),
}

/// The host record of an adapter (keyed by its adapter handle: the NDIS_MINIPORT_BLOCK of an
/// NDIS 5 adapter, an opaque NDIS block for an NDIS 6 one).
pub struct Adapter {
    /// Name for reports (the device instance or service).
    pub name: String,
    /// The adapter handle (MiniportAdapterHandle).
    pub block: u64,
    /// MiniportAdapterContext (NdisMSetAttributesEx; NDIS 6: the registration attributes).
    pub context: u64,
    /// NDIS_ATTRIBUTE_* flags (NDIS 6: NDIS_MINIPORT_ATTRIBUTES_*).
    pub attribute_flags: u32,
    /// NDIS_INTERFACE_TYPE.
    pub interface_type: u32,
    /// CheckForHang period.
    pub check_for_hang_seconds: u32,
    /// Resources the bus assigned.
    pub resources: Vec<Resource>,
    /// PCI configuration access, if the adapter sits on a bus.
    pub bus: Option<Box<dyn BusConfig>>,
    /// The registry key the adapter's configuration is read from (absolute path).
    pub config_key: String,
    /// Registered I/O port ranges (first port, count).
    pub port_ranges: Vec<(u32, u32)>,
    /// Shared memory by virtual address.
    pub shared_memory: BTreeMap<u64, SharedMemory>,
    /// Map registers allocated (0: none).
    pub map_registers: u32,
    /// The MaximumPhysicalMapping of the map registers: most bytes one buffer mapping may span.
    pub max_physical_mapping: u32,
    /// Map registers in use (NdisMStartBufferPhysicalMapping without its
    /// NdisMCompleteBufferPhysicalMapping yet): register index -> the NDIS_BUFFER mapped.
    pub physical_mappings: BTreeMap<u32, u64>,
    /// Device memory mapped with NdisMMapIoSpace: virtual address -> (bus address, length).
    pub io_mappings: BTreeMap<u64, (u64, u32)>,
    /// NdisMInitializeScatterGatherDma was called.
    pub scatter_gather: bool,
    /// The scatter/gather DMA registration (NDIS 6 NdisMRegisterScatterGatherDma), while
    /// registered.
    pub sg_dma: Option<crate::resources::SgDma>,
    /// The registered NDIS_MINIPORT_INTERRUPT, if any.
    pub interrupt: Option<u64>,
    /// The NDIS_RESOURCE_LIST NdisMPciAssignResources handed out (NDIS-owned).
    pub assigned_resources: Option<u64>,
    /// (handler, context) of NdisMRegisterAdapterShutdownHandler.
    pub shutdown_handler: Option<(u64, u64)>,
    /// Counters.
    pub stats: AdapterStats,

    pub(crate) kind: Kind,
    pub(crate) scratch: u64,
    pub(crate) events: VecDeque<AdapterEvent>,
    pub(crate) pending_request: Option<PendingRequest>,
    pub(crate) completed_request: Option<RequestResult>,
    pub(crate) reset_in_progress: bool,
    next_check_for_hang: Instant,
    /// Driver bugs found while the adapter ran (reported by [`halt`]).
    pub(crate) findings: Vec<String>,
}

impl Adapter {
    /// Whether the miniport is deserialized (completes every send itself; every NDIS 6 miniport
    /// is).
    pub fn deserialized(&self) -> bool {
        self.is_ndis6() || self.attribute_flags & NDIS_ATTRIBUTE_DESERIALIZE != 0
    }

    /// Scratch space for the ISR's out-parameters: NDIS 5 InterruptRecognized and
    /// QueueMiniportHandleInterrupt (two BOOLEANs); NDIS 6 QueueDefaultInterruptDpc (a BOOLEAN) and
    /// TargetProcessors (a ULONG at +4).
    pub(crate) fn isr_flags(&self) -> u64 {
        self.scratch + SCRATCH_ISR_FLAGS
    }

    /// Whether this is an NDIS 6 adapter.
    pub fn is_ndis6(&self) -> bool {
        matches!(self.kind, Kind::Ndis6(_))
    }

    /// The NDIS 5 characteristics, if this is an NDIS 5 adapter.
    pub(crate) fn ndis5_chars(&self) -> Option<MiniportCharacteristics> {
        match &self.kind {
            Kind::Ndis5(v) => Some(v.chars.clone()),
            Kind::Ndis6(_) => None,
        }
    }

    /// The NDIS 6 state, if this is an NDIS 6 adapter.
    pub(crate) fn ndis6(&mut self) -> Option<&mut Ndis6> {
        match &mut self.kind {
            Kind::Ndis6(v) => Some(v),
            Kind::Ndis5(_) => None,
        }
    }

    /// Where the adapter is in the NDIS 6 run-state machine (always Running for NDIS 5).
    pub fn run_state(&self) -> RunState {
        match &self.kind {
            Kind::Ndis6(v) => v.state,
            Kind::Ndis5(_) => RunState::Running,
        }
    }

    /// A new adapter record for `block` with nothing registered yet.
    pub(crate) fn new(block: u64, scratch: u64, setup: AdapterSetup, kind: Kind) -> Adapter {
        Adapter {
            name: setup.name,
            block,
            context: 0,
            attribute_flags: 0,
            interface_type: 0,
            check_for_hang_seconds: DEFAULT_CHECK_FOR_HANG_SECONDS,
            resources: setup.resources,
            bus: setup.bus,
            config_key: setup.config_key,
            port_ranges: Vec::new(),
            shared_memory: BTreeMap::new(),
            map_registers: 0,
            max_physical_mapping: 0,
            physical_mappings: BTreeMap::new(),
            io_mappings: BTreeMap::new(),
            scatter_gather: false,
            sg_dma: None,
            interrupt: None,
            assigned_resources: None,
            shutdown_handler: None,
            stats: AdapterStats::default(),
            kind,
            scratch,
            events: VecDeque::new(),
            pending_request: None,
            completed_request: None,
            reset_in_progress: false,
            next_check_for_hang: Instant::now(),
            findings: Vec::new(),
        }
    }

    /// Records a driver bug found while the adapter runs (reported by [`halt`]); NDIS carries on.
    pub(crate) fn finding(&mut self, what: String) {
        tracing::warn!(target: "ica::ndis", "{}: {what}", self.name);
        self.findings.push(format!("{}: {what}", self.name));
    }

    /// Starts the CheckForHang clock (after a successful initialization).
    pub(crate) fn arm_check_for_hang(&mut self) {
        self.next_check_for_hang =
            Instant::now() + Duration::from_secs(u64::from(self.check_for_hang_seconds));
    }
}

/// The adapter behind a MiniportAdapterHandle.
pub fn adapter_mut(k: &mut Kernel, handle: u64) -> Option<&mut Adapter> {
    k.extension::<NdisState>().adapters.get_mut(&handle)
}

/// The adapter behind `handle`, or bug check 0x7C (BUGCODE_NDIS_DRIVER) naming the bad handle.
pub(crate) fn adapter(k: &mut Kernel, handle: u64) -> KResult<&mut Adapter> {
    adapter_mut(k, handle).ok_or_else(|| {
        KernelError::bug_check(0x7C, format!("{handle:#x} is not an NDIS adapter handle"))
    })
}

/// The NDIS 5 part of the adapter behind `handle` (an NDIS 5 call on an NDIS 6 adapter is a
/// driver bug).
fn ndis5(k: &mut Kernel, handle: u64) -> KResult<&mut Ndis5> {
    let a = adapter(k, handle)?;
    match &mut a.kind {
        Kind::Ndis5(v) => Ok(v),
        Kind::Ndis6(_) => Err(KernelError::bug_check(
            0x7C,
            format!("{}: an NDIS 5 call on an NDIS 6 adapter", a.name),
        )),
    }
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
    /// Registry key NdisOpenConfiguration / NdisOpenConfigurationEx reads for this adapter (absolute
    /// path).
    pub config_key: String,
    /// Resources the bus assigned (empty for a virtual adapter).
    pub resources: Vec<Resource>,
    /// PCI configuration access (none for a virtual adapter).
    pub bus: Option<Box<dyn BusConfig>>,
}

/// An NDIS 5 macro that calls through a function-pointer field of the NDIS_MINIPORT_BLOCK (the
/// driver imports nothing for it), the field, and the host function [`initialize`] installs in
/// that field. [`BLOCK_MACROS`] is the one table both the block setup and the API-coverage report
/// read, so what the report calls implemented is what the block holds.
#[derive(Debug)]
pub struct BlockMacro {
    /// The macro, as drivers write it.
    pub name: &'static str,
    /// The NDIS_MINIPORT_BLOCK field it calls through.
    pub field: &'static str,
    /// The field's offset in the block.
    offset: fn(&crate::NdisLayout) -> u64,
    /// Name of the host function installed in the field (an ndis.sys export, or a handler with no
    /// export of its own).
    handler: &'static str,
}

impl BlockMacro {
    /// The field's offset in the block for the layout `l`.
    pub fn offset(&self, l: &crate::NdisLayout) -> u64 {
        (self.offset)(l)
    }

    /// The host function the field holds; `None` if the table names a handler the crate lacks.
    pub fn handler(&self) -> Option<&'static Export> {
        EXPORTS
            .iter()
            .chain(BLOCK_ONLY.iter())
            .find(|e| e.name == self.handler)
    }
}

/// The NDIS 5 macros that call through the block (mingw-w64 `ndis.h`), with what [`initialize`]
/// installs in their fields.
pub static BLOCK_MACROS: &[BlockMacro] = &[
    BlockMacro {
        name: "NdisMIndicateReceivePacket",
        field: "PacketIndicateHandler",
        offset: |l| l.miniport_block_packet_indicate_handler,
        handler: "PacketIndicateHandler",
    },
    BlockMacro {
        name: "NdisMSendComplete",
        field: "SendCompleteHandler",
        offset: |l| l.miniport_block_send_complete_handler,
        handler: "NdisMSendComplete",
    },
    BlockMacro {
        name: "NdisMSendResourcesAvailable",
        field: "SendResourcesHandler",
        offset: |l| l.miniport_block_send_resources_handler,
        handler: "NdisMSendResourcesAvailable",
    },
    BlockMacro {
        name: "NdisMResetComplete",
        field: "ResetCompleteHandler",
        offset: |l| l.miniport_block_reset_complete_handler,
        handler: "NdisMResetComplete",
    },
    BlockMacro {
        name: "NdisMEthIndicateReceive",
        field: "EthRxIndicateHandler",
        offset: |l| l.miniport_block_eth_rx_indicate_handler,
        handler: "EthRxIndicateHandler",
    },
    BlockMacro {
        name: "NdisMEthIndicateReceiveComplete",
        field: "EthRxCompleteHandler",
        offset: |l| l.miniport_block_eth_rx_complete_handler,
        handler: "EthRxCompleteHandler",
    },
    BlockMacro {
        name: "NdisMIndicateStatus",
        field: "StatusHandler",
        offset: |l| l.miniport_block_status_handler,
        handler: "NdisMIndicateStatus",
    },
    BlockMacro {
        name: "NdisMIndicateStatusComplete",
        field: "StatusCompleteHandler",
        offset: |l| l.miniport_block_status_complete_handler,
        handler: "NdisMIndicateStatusComplete",
    },
    BlockMacro {
        name: "NdisMTransferDataComplete",
        field: "TDCompleteHandler",
        offset: |l| l.miniport_block_td_complete_handler,
        handler: "NdisMTransferDataComplete",
    },
    BlockMacro {
        name: "NdisMQueryInformationComplete",
        field: "QueryCompleteHandler",
        offset: |l| l.miniport_block_query_complete_handler,
        handler: "NdisMQueryInformationComplete",
    },
    BlockMacro {
        name: "NdisMSetInformationComplete",
        field: "SetCompleteHandler",
        offset: |l| l.miniport_block_set_complete_handler,
        handler: "NdisMSetInformationComplete",
    },
];

/// The block macro `name` whose handler the crate implements, if any.
pub fn block_macro(name: &str) -> Option<&'static BlockMacro> {
    BLOCK_MACROS
        .iter()
        .find(|m| m.name == name && m.handler().is_some())
}

/// An adapter's scratch page (NDIS-owned).
pub(crate) fn alloc_scratch(k: &mut Kernel) -> KResult<u64> {
    ex::allocate(
        k,
        SCRATCH_BYTES,
        u32::from_le_bytes(*b"NDsc"),
        NDIS_OWNER.into(),
    )
}

/// Creates an adapter of a registered miniport and initializes it: MiniportInitialize (medium
/// 802.3) for NDIS 5; MiniportInitializeEx then MiniportRestart for NDIS 6, so that either kind
/// is ready for traffic when this returns. `Ok(Err(status))` when the miniport (or NDIS) failed
/// the initialization; everything NDIS allocated is released then.
pub fn initialize(
    k: &mut Kernel,
    driver: MiniportDriverHandle,
    setup: AdapterSetup,
) -> KResult<Result<u64, NdisStatus>> {
    match driver {
        MiniportDriverHandle::Ndis5(wrapper) => initialize5(k, wrapper, setup),
        MiniportDriverHandle::Ndis6(handle) => crate::ndis6::initialize(k, handle, setup),
    }
}

fn initialize5(
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
    for m in BLOCK_MACROS {
        let handler = m.handler().ok_or_else(|| {
            KernelError::Unsupported(format!("ndis.sys has no {} for {}", m.handler, m.field))
        })?;
        let f = k.host_function(handler);
        k.write_ptr(block + m.offset(l), f)?;
    }
    // The miniport passes EthDB back to EthRxIndicateHandler: it names the adapter.
    k.write_ptr(block + l.miniport_block_eth_db, block)?;
    k.m.mem
        .write_u32(block + l.miniport_block_media_type, NDIS_MEDIUM_802_3)?;
    let scratch = alloc_scratch(k)?;
    let config_context = crate::config::configuration_context_for_key(k, &setup.config_key)?;
    if let Some(c) = k
        .extension::<NdisState>()
        .config_contexts
        .get_mut(&config_context)
    {
        c.adapter = Some(block);
    }
    let kind = Kind::Ndis5(Box::new(Ndis5::new(chars.clone(), config_context)));
    let record = Adapter::new(block, scratch, setup, kind);
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
    adapter(k, block)?.arm_check_for_hang();
    Ok(Ok(block))
}

/// Frees what NDIS allocated for an adapter and what the miniport left behind; returns a line
/// per leftover and per driver bug recorded while the adapter ran (each a miniport bug: it should
/// have released the thing in Halt or on failure). With the verifier on, each is also a finding
/// ([`Rule::NdisLeftover`]).
pub(crate) fn release(k: &mut Kernel, block: u64) -> KResult<Vec<String>> {
    let Some(mut a) = k.extension::<NdisState>().adapters.remove(&block) else {
        return Ok(Vec::new());
    };
    let halt = match &a.kind {
        Kind::Ndis5(v) => v.chars.handler(Handler::Halt),
        Kind::Ndis6(v) => v.chars.halt,
    };
    let image = k.image_at(halt).map(|i| i.name.clone()).unwrap_or_default();
    let mut leftovers = std::mem::take(&mut a.findings);
    if let Some(req) = a.pending_request {
        leftovers.push(format!("{}: an OID request never completed", a.name));
        if req.request != 0 {
            crate::ndis6::drop_request(k, req)?;
        } else {
            ex::free(k, req.buffer, None)?;
        }
    }
    if let Some(list) = a.assigned_resources {
        ex::free(k, list, None)?;
    }
    if let Some(i) = a.interrupt {
        leftovers.push(format!("{}: interrupt {i:#x} still registered", a.name));
        crate::interrupt::forget(k, i)?;
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
    for (register, buffer) in &a.physical_mappings {
        leftovers.push(format!(
            "{}: map register {register} still maps buffer {buffer:#x} (no NdisMCompleteBufferPhysicalMapping)",
            a.name
        ));
    }
    for (va, (pa, length)) in &a.io_mappings {
        leftovers.push(format!(
            "{}: device memory {pa:#x}+{length:#x} still mapped at {va:#x}",
            a.name
        ));
        ntoskrnl::mm::unmap_io_space(k, *va, u64::from(*length))?;
    }
    if let Some(d) = a.sg_dma.take() {
        leftovers.push(format!(
            "{}: scatter/gather DMA {:#x} still registered",
            a.name, d.handle
        ));
        leftovers.extend(crate::resources::release_sg_dma(k, d, &a.name)?);
    }
    leftovers.extend(crate::timer::release_owned_by(k, block, &a.name)?);
    leftovers.extend(crate::nbl::release_pools_of(k, block, &a.name)?);
    match a.kind {
        Kind::Ndis5(v) => {
            if !v.outstanding.is_empty() {
                leftovers.push(format!(
                    "{}: {} sends never completed (no NdisMSendComplete)",
                    a.name,
                    v.outstanding.len()
                ));
            }
            if !v.transfers.is_empty() {
                leftovers.push(format!(
                    "{}: {} pended MiniportTransferData never completed (no NdisMTransferDataComplete)",
                    a.name,
                    v.transfers.len()
                ));
            }
            let slots = v
                .free_sends
                .iter()
                .chain(v.outstanding.values())
                .chain(v.transfers.values().map(|t| &t.slot))
                .copied()
                .collect::<Vec<_>>();
            for s in slots {
                free_slot(k, s)?;
            }
            if k.extension::<NdisState>()
                .config_contexts
                .remove(&v.config_context)
                .is_some()
            {
                ex::free(k, v.config_context, None)?;
            }
        }
        Kind::Ndis6(v) => crate::nbl::free_send_slots(k, &v.sends)?,
    }
    ex::free(k, a.scratch, None)?;
    ex::free(k, block, None)?;
    for l in &leftovers {
        verifier::note(k, Rule::NdisLeftover, &image, None, None, l.clone());
    }
    Ok(leftovers)
}

fn free_slot(k: &mut Kernel, s: SendSlot) -> KResult<()> {
    ex::free(k, s.packet, None)?;
    ntoskrnl::mm::free_mdl(k, s.buffer)?;
    ex::free(k, s.data, None)
}

/// A send slot for `frame` (a free one, or a new one while under the outstanding limit).
fn take_slot(k: &mut Kernel, block: u64, frame: &[u8]) -> KResult<Option<SendSlot>> {
    let v = ndis5(k, block)?;
    let room = v.outstanding.len() + v.transfers.len() < MAX_OUTSTANDING_SENDS;
    let slot = match v.free_sends.pop_front() {
        Some(s) => s,
        None if room => {
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

/// Hands frames from the front of `frames` to the miniport: NDIS 5 MiniportSendPackets (or
/// MiniportSend for an NDIS 3 style miniport), NDIS 6 MiniportSendNetBufferLists (see the
/// [`nbl`](crate::nbl) module), at DISPATCH_LEVEL. Frames the miniport refuses for lack of resources go
/// back to the front of the queue, in order, to be retried later; a frame larger than
/// [`SEND_BUFFER_BYTES`] is dropped and counted as a failed send.
pub fn send(k: &mut Kernel, block: u64, frames: &mut VecDeque<Vec<u8>>) -> KResult<()> {
    if adapter(k, block)?.ndis6().is_some() {
        return crate::nbl::send(k, block, frames);
    }
    let chars = ndis5(k, block)?.chars.clone();
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
        let v = ndis5(k, block)?;
        for (slot, _) in &batch {
            v.outstanding.insert(slot.packet, *slot);
        }
        // A deserialized miniport completes every packet through NdisMSendComplete, whatever status
        // it leaves in it or returns (and it may have completed it already): still its own.
        let deserialized = adapter(k, block)?.deserialized();
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
                v.push(if deserialized {
                    NDIS_STATUS_PENDING
                } else {
                    packet::packet_status(k, slot.packet)?
                });
            }
            v
        } else {
            let mut v = Vec::new();
            for (slot, _) in &batch {
                let s = at_dispatch(k, |k| k.call_guest(send_one, &[context, slot.packet, 0]))?;
                v.push(if deserialized {
                    NDIS_STATUS_PENDING
                } else {
                    s as NdisStatus
                });
            }
            v
        };
        let mut refused = Vec::new();
        for ((slot, frame), status) in batch.into_iter().zip(statuses) {
            // Still the miniport's (completed through NdisMSendComplete, maybe already).
            if status == NDIS_STATUS_PENDING {
                continue;
            }
            let v = ndis5(k, block)?;
            if v.outstanding.remove(&slot.packet).is_none() {
                adapter(k, block)?.finding(format!(
                    "MiniportSendPackets completed packet {:#x} with NdisMSendComplete and handed it back with status {status:#x} (completed twice)",
                    slot.packet
                ));
                continue;
            }
            v.free_sends.push_back(slot);
            let a = adapter(k, block)?;
            if status == NDIS_STATUS_RESOURCES {
                a.stats.sends_requeued += 1;
                a.stats.sends -= 1;
                refused.push(frame);
            } else if status == NDIS_STATUS_SUCCESS {
                a.stats.sends_ok += 1;
            } else {
                a.stats.count_send_failure(status);
            }
        }
        if !refused.is_empty() {
            for frame in refused.into_iter().rev() {
                frames.push_front(frame);
            }
            break;
        }
    }
    return_received(k, block)
}

/// Returns what the miniport lent in receive indications: NDIS 5 packets through
/// MiniportReturnPacket, NDIS 6 NBLs through MiniportReturnNetBufferLists, at DISPATCH_LEVEL.
pub fn return_received(k: &mut Kernel, block: u64) -> KResult<()> {
    if adapter(k, block)?.ndis6().is_some() {
        return crate::nbl::return_nbls(k, block);
    }
    let v = ndis5(k, block)?;
    if v.to_return.is_empty() {
        return Ok(());
    }
    let packets = std::mem::take(&mut v.to_return);
    let handler = v.chars.handler(Handler::ReturnPacket);
    let a = adapter(k, block)?;
    let context = a.context;
    a.stats.returns += packets.len() as u64;
    at_dispatch(k, |k| {
        for p in packets {
            k.call_guest(handler, &[context, p])?;
        }
        Ok(())
    })
}

/// [`return_received`] for every adapter (after a DPC that is not an adapter's own, such as a
/// timer's).
pub fn return_all(k: &mut Kernel) -> KResult<()> {
    let blocks: Vec<u64> = k
        .extension::<NdisState>()
        .adapters
        .keys()
        .copied()
        .collect();
    for block in blocks {
        return_received(k, block)?;
    }
    Ok(())
}

/// What NDIS does after a miniport's interrupt DPC: return lent packets / NBLs.
pub fn after_dpc(k: &mut Kernel, block: u64) -> KResult<()> {
    adapter(k, block)?.stats.interrupts += 1;
    return_received(k, block)
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

/// Where the adapter is in the NDIS 6 run-state machine (NDIS 5 adapters are always Running);
/// `None` for an unknown handle.
pub fn run_state(k: &mut Kernel, block: u64) -> Option<RunState> {
    adapter_mut(k, block).map(|a| a.run_state())
}

/// Issues an OID request: NDIS 5 MiniportQueryInformation with a `len`-byte buffer or
/// MiniportSetInformation with `data`, at DISPATCH_LEVEL; NDIS 6 an NDIS_OID_REQUEST to
/// MiniportOidRequest (see [`crate::ndis6::request`]). `None` if the miniport pended it: the
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
    if a.ndis6().is_some() {
        return crate::ndis6::request(k, block, query, oid, len, data);
    }
    let context = a.context;
    let scratch = a.scratch;
    let handler = ndis5(k, block)?.chars.handler(if query {
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
    k.m.mem.write_u64(scratch + SCRATCH_REQUEST_DONE, 0)?;
    k.m.mem.write_u64(scratch + SCRATCH_REQUEST_NEEDED, 0)?;
    let status = at_dispatch(k, |k| {
        k.call_guest(
            handler,
            &[
                context,
                u64::from(oid),
                buffer,
                u64::from(len),
                scratch + SCRATCH_REQUEST_DONE,
                scratch + SCRATCH_REQUEST_NEEDED,
            ],
        )
    })? as NdisStatus;
    let req = PendingRequest {
        query,
        oid,
        buffer,
        len,
        request: 0,
    };
    if status == NDIS_STATUS_PENDING {
        adapter(k, block)?.pending_request = Some(req);
        return Ok(None);
    }
    finish_request(k, block, req, status).map(Some)
}

fn finish_request(
    k: &mut Kernel,
    block: u64,
    req: PendingRequest,
    status: NdisStatus,
) -> KResult<RequestResult> {
    let scratch = adapter(k, block)?.scratch;
    let done = k.m.mem.read_u32(scratch + SCRATCH_REQUEST_DONE)?;
    let needed = k.m.mem.read_u32(scratch + SCRATCH_REQUEST_NEEDED)?;
    let data = if req.query && status == NDIS_STATUS_SUCCESS {
        k.m.mem.read_vec(req.buffer, done.min(req.len) as usize)?
    } else {
        Vec::new()
    };
    if !req.query
        && req.oid == OID_GEN_CURRENT_LOOKAHEAD
        && req.len >= 4
        && status == NDIS_STATUS_SUCCESS
    {
        let lookahead = k.m.mem.read_u32(req.buffer)?;
        ndis5(k, block)?.lookahead = Some(lookahead);
    }
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

/// The host loop's periodic work for an adapter: runs the kernel's deferred work (due timers,
/// NDIS timers included, with their DPCs; queued DPCs and work items), MiniportCheckForHang / MiniportCheckForHangEx
/// when its period has elapsed (and the reset handler if it reports a hang), and returns lent
/// packets / NBLs. Returns when CheckForHang is next due ([`crate::timer::next_deadline`] says
/// when the next timer is).
pub fn periodic(k: &mut Kernel, block: u64) -> KResult<Instant> {
    ke::run_deferred(k)?;
    let a = adapter(k, block)?;
    let now = Instant::now();
    if now >= a.next_check_for_hang {
        a.next_check_for_hang = now + Duration::from_secs(u64::from(a.check_for_hang_seconds));
        if !a.reset_in_progress && check_for_hang(k, block)? {
            tracing::warn!(target: "ica::ndis", "{}: the miniport's CheckForHang reported a hang; resetting", adapter(k, block)?.name);
            reset(k, block)?;
        }
    }
    return_received(k, block)?;
    Ok(adapter(k, block)?.next_check_for_hang)
}

/// Runs the miniport's CheckForHang handler, if it has one (NDIS 5 at DISPATCH_LEVEL, NDIS 6
/// CheckForHangEx at PASSIVE_LEVEL); whether it reported a hang.
fn check_for_hang(k: &mut Kernel, block: u64) -> KResult<bool> {
    let a = adapter(k, block)?;
    let context = a.context;
    let (handler, dispatch) = match &a.kind {
        Kind::Ndis5(v) => (v.chars.handler(Handler::CheckForHang), true),
        Kind::Ndis6(v) => (v.chars.check_for_hang, false),
    };
    if handler == 0 {
        return Ok(false);
    }
    let hung = if dispatch {
        at_dispatch(k, |k| k.call_guest(handler, &[context]))?
    } else {
        k.call_guest(handler, &[context])?
    };
    Ok(hung as u8 != 0)
}

/// Resets the adapter (MiniportReset / MiniportResetEx); returns the status,
/// NDIS_STATUS_PENDING until NdisMResetComplete if the miniport pends it.
pub fn reset(k: &mut Kernel, block: u64) -> KResult<NdisStatus> {
    let a = adapter(k, block)?;
    let (context, scratch) = (a.context, a.scratch);
    let (handler, dispatch) = match &a.kind {
        Kind::Ndis5(v) => (v.chars.handler(Handler::Reset), true),
        Kind::Ndis6(v) => (v.chars.reset, false),
    };
    if handler == 0 {
        return Ok(NDIS_STATUS_NOT_SUPPORTED);
    }
    a.reset_in_progress = true;
    k.m.mem.write_u8(scratch + SCRATCH_OUT0, 0)?;
    let status = if dispatch {
        at_dispatch(k, |k| {
            k.call_guest(handler, &[scratch + SCRATCH_OUT0, context])
        })?
    } else {
        k.call_guest(handler, &[context, scratch + SCRATCH_OUT0])?
    } as NdisStatus;
    if status != NDIS_STATUS_PENDING {
        adapter(k, block)?.reset_in_progress = false;
    }
    Ok(status)
}

/// Pauses an NDIS 6 adapter (MiniportPause, after returning the NBLs the host still holds);
/// NDIS_STATUS_PENDING while the miniport has not called NdisMPauseComplete (see [`run_state`]).
/// NDIS_STATUS_NOT_SUPPORTED for an NDIS 5 adapter, which has no paused state.
pub fn pause(k: &mut Kernel, block: u64) -> KResult<NdisStatus> {
    if adapter(k, block)?.ndis6().is_none() {
        return Ok(NDIS_STATUS_NOT_SUPPORTED);
    }
    crate::ndis6::pause(k, block)
}

/// Restarts a paused NDIS 6 adapter (MiniportRestart); NDIS_STATUS_PENDING while the miniport has
/// not called NdisMRestartComplete. NDIS_STATUS_NOT_SUPPORTED for an NDIS 5 adapter.
pub fn restart(k: &mut Kernel, block: u64) -> KResult<NdisStatus> {
    if adapter(k, block)?.ndis6().is_none() {
        return Ok(NDIS_STATUS_NOT_SUPPORTED);
    }
    crate::ndis6::restart(k, block)
}

/// Halts the adapter (NDIS 5 MiniportHalt; NDIS 6 MiniportPause if it is not paused, then
/// MiniportHaltEx; at PASSIVE_LEVEL) and frees it; returns what the miniport failed to release
/// and the driver bugs found while it ran (each already cleaned up by NDIS).
pub fn halt(k: &mut Kernel, block: u64) -> KResult<Vec<String>> {
    let a = adapter(k, block)?;
    let context = a.context;
    let mut findings = Vec::new();
    match &a.kind {
        Kind::Ndis5(v) => {
            let handler = v.chars.handler(Handler::Halt);
            // Protocols give back what they hold before the miniport halts.
            return_received(k, block)?;
            k.call_guest(handler, &[context])?;
        }
        Kind::Ndis6(_) => findings.extend(crate::ndis6::halt(k, block)?),
    }
    findings.extend(release(k, block)?);
    Ok(findings)
}

/// Runs the shutdown handler (NDIS 5: NdisMRegisterAdapterShutdownHandler's or the 5.1
/// characteristics' AdapterShutdownHandler; NDIS 6: MiniportShutdownEx with NdisShutdownPowerOff),
/// as at system shutdown.
pub fn shutdown(k: &mut Kernel, block: u64) -> KResult<()> {
    let a = adapter(k, block)?;
    let (handler, args) = match (&a.kind, a.shutdown_handler) {
        (Kind::Ndis6(v), _) => (v.chars.shutdown, vec![a.context, NDIS_SHUTDOWN_POWER_OFF]),
        (Kind::Ndis5(_), Some((handler, context))) => (handler, vec![context]),
        (Kind::Ndis5(v), None) => (v.chars.handler(Handler::AdapterShutdown), vec![a.context]),
    };
    if handler != 0 {
        k.call_guest(handler, &args)?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The block's handlers (called by the miniport through the NDIS 5 macros).

/// NdisMSendComplete(MiniportAdapterHandle, Packet, Status). A packet that is not a send in
/// progress (completed twice, or never sent) is a finding and otherwise ignored.
pub fn send_complete(k: &mut Kernel, block: u64, packet: u64, status: NdisStatus) -> KResult<()> {
    let v = ndis5(k, block)?;
    let Some(slot) = v.outstanding.remove(&packet) else {
        adapter(k, block)?.finding(format!(
            "NdisMSendComplete of packet {packet:#x}, which is not a send in progress (completed twice?)"
        ));
        return Ok(());
    };
    v.free_sends.push_back(slot);
    let a = adapter(k, block)?;
    if status == NDIS_STATUS_SUCCESS {
        a.stats.sends_ok += 1;
    } else {
        a.stats.count_send_failure(status);
    }
    Ok(())
}

/// NdisMSendResourcesAvailable(MiniportAdapterHandle): the host retries queued sends anyway.
pub fn send_resources_available(_k: &mut Kernel, _block: u64) -> KResult<()> {
    Ok(())
}

/// NdisMResetComplete(MiniportAdapterHandle, Status, AddressingReset) (NDIS 5 and NDIS 6).
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

/// A receive indication while a MiniportTransferData is pending is a finding: the miniport may
/// not indicate again until it completed the transfer.
fn check_no_transfer_pending(k: &mut Kernel, block: u64, what: &str) -> KResult<()> {
    let pending = ndis5(k, block)?.transfers.len();
    if pending != 0 {
        adapter(k, block)?.finding(format!(
            "{what} while {pending} MiniportTransferData are pending (NdisMTransferDataComplete first)"
        ));
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
    check_no_transfer_pending(k, block, "NdisMIndicateReceivePacket")?;
    let has_return = ndis5(k, block)?.chars.handler(Handler::ReturnPacket) != 0;
    adapter(k, block)?.stats.indications += 1;
    for i in 0..u64::from(count) {
        let p = k.read_ptr(packets + i * k.ptr_size())?;
        let status = packet::packet_status(k, p)?;
        let frame = packet::packet_bytes(k, p)?;
        let keep = status != NDIS_STATUS_RESOURCES && has_return;
        if keep {
            packet::set_packet_status(k, p, NDIS_STATUS_PENDING)?;
            ndis5(k, block)?.to_return.push(p);
        }
        let a = adapter(k, block)?;
        a.stats.receives += 1;
        a.events.push_back(AdapterEvent::Receive(frame));
    }
    Ok(())
}

/// The block's EthRxIndicateHandler (NdisMEthIndicateReceive): the header plus a lookahead of
/// the packet's data (PacketSize bytes after the header), valid for the call. When the lookahead
/// is short of the packet, NDIS asks MiniportTransferData (with the MacReceiveContext) for the
/// rest, from ByteOffset = the lookahead's size, into a packet of its own; the frame goes up
/// once that is done, at once or through NdisMTransferDataComplete. Findings: a lookahead
/// shorter than both the current lookahead (OID_GEN_CURRENT_LOOKAHEAD) and the packet, a short
/// lookahead without MiniportTransferData, an indication while a transfer is pending.
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
    // EthDB, which the miniport passes back, is the adapter's block.
    let block = filter;
    check_no_transfer_pending(k, block, "NdisMEthIndicateReceive")?;
    adapter(k, block)?.stats.indications += 1;
    let mut frame = k.m.mem.read_vec(header, header_size as usize)?;
    let look = lookahead_size.min(packet_size);
    frame.extend(k.m.mem.read_vec(lookahead, look as usize)?);
    if look == packet_size {
        let a = adapter(k, block)?;
        a.stats.receives += 1;
        a.events.push_back(AdapterEvent::Receive(frame));
        return Ok(());
    }
    let v = ndis5(k, block)?;
    let transfer = v.chars.handler(Handler::TransferData);
    if let Some(current) = v.lookahead.filter(|&l| look < l) {
        adapter(k, block)?.finding(format!(
            "NdisMEthIndicateReceive with a {look}-byte lookahead of a {packet_size}-byte packet; the current lookahead is {current}"
        ));
    }
    let rest = packet_size - look;
    if transfer == 0 {
        adapter(k, block)?.finding(format!(
            "NdisMEthIndicateReceive of {look} bytes of a {packet_size}-byte packet, and no MiniportTransferData for the rest"
        ));
        return Ok(());
    }
    if rest > SEND_BUFFER_BYTES {
        adapter(k, block)?.finding(format!(
            "NdisMEthIndicateReceive of a {packet_size}-byte packet, larger than any frame; dropped"
        ));
        return Ok(());
    }
    let Some(slot) = take_slot(k, block, &vec![0; rest as usize])? else {
        tracing::warn!(target: "ica::ndis", "{}: no packet free to transfer a received frame into; dropped", adapter(k, block)?.name);
        return Ok(());
    };
    let a = adapter(k, block)?;
    let (context, scratch) = (a.context, a.scratch);
    k.m.mem.write_u32(scratch + SCRATCH_OUT0, 0)?;
    let status = k.call_guest(
        transfer,
        &[
            slot.packet,
            scratch + SCRATCH_OUT0,
            context,
            receive_context,
            u64::from(look),
            u64::from(rest),
        ],
    )? as NdisStatus;
    let t = Transfer {
        slot,
        frame,
        requested: rest,
    };
    if status == NDIS_STATUS_PENDING {
        ndis5(k, block)?.transfers.insert(slot.packet, t);
        return Ok(());
    }
    let done = k.m.mem.read_u32(scratch + SCRATCH_OUT0)?;
    finish_transfer(k, block, t, status, done)
}

/// A transfer is over: with NDIS_STATUS_SUCCESS the frame (the header and lookahead indicated,
/// then the `transferred` bytes in the packet) goes up; the packet is free again. More bytes
/// than were asked for is a finding (only those are taken).
fn finish_transfer(
    k: &mut Kernel,
    block: u64,
    t: Transfer,
    status: NdisStatus,
    transferred: u32,
) -> KResult<()> {
    let Transfer {
        slot,
        mut frame,
        requested,
    } = t;
    if transferred > requested {
        adapter(k, block)?.finding(format!(
            "MiniportTransferData reports {transferred} bytes transferred into packet {:#x}, which asked for {requested}",
            slot.packet
        ));
    }
    if status == NDIS_STATUS_SUCCESS {
        frame.extend(
            k.m.mem
                .read_vec(slot.data, transferred.min(requested) as usize)?,
        );
    }
    ndis5(k, block)?.free_sends.push_back(slot);
    let a = adapter(k, block)?;
    if status == NDIS_STATUS_SUCCESS {
        a.stats.receives += 1;
        a.events.push_back(AdapterEvent::Receive(frame));
    }
    Ok(())
}

/// NdisMTransferDataComplete(MiniportAdapterHandle, Packet, Status, BytesTransferred). A packet
/// with no transfer pending is a finding and otherwise ignored.
pub fn transfer_data_complete(
    k: &mut Kernel,
    block: u64,
    packet: u64,
    status: NdisStatus,
    transferred: u32,
) -> KResult<()> {
    let Some(t) = ndis5(k, block)?.transfers.remove(&packet) else {
        adapter(k, block)?.finding(format!(
            "NdisMTransferDataComplete of packet {packet:#x}, which has no transfer pending"
        ));
        return Ok(());
    };
    finish_transfer(k, block, t, status, transferred)
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

/// NdisMQueryInformationComplete / NdisMSetInformationComplete: finishes the pended request.
/// With no such request pending (none, or the other kind) it is a finding and otherwise ignored.
fn request_complete(k: &mut Kernel, block: u64, status: NdisStatus, query: bool) -> KResult<()> {
    ndis5(k, block)?;
    let a = adapter(k, block)?;
    let Some(req) = a.pending_request.filter(|r| r.query == query) else {
        let call = if query {
            "NdisMQueryInformationComplete"
        } else {
            "NdisMSetInformationComplete"
        };
        let pending = match a.pending_request {
            Some(r) if r.query => format!("the pending request is a query of {:#x}", r.oid),
            Some(r) => format!("the pending request is a set of {:#x}", r.oid),
            None => "no request is pending".to_string(),
        };
        a.finding(format!("{call} with status {status:#x}, but {pending}"));
        return Ok(());
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

/// NdisMQueryAdapterInstanceName(AdapterInstanceName, MiniportHandle): the adapter's name (the
/// host's name for it: its device instance) in a string NDIS allocates for the caller, who frees
/// it with NdisFreeString.
pub fn query_adapter_instance_name(k: &mut Kernel, out: u64, handle: u64) -> KResult<NdisStatus> {
    let Some(name) = adapter_mut(k, handle).map(|a| a.name.clone()) else {
        return Ok(NDIS_STATUS_FAILURE);
    };
    let units: Vec<u16> = name.encode_utf16().chain([0]).collect();
    let Ok(max) = u16::try_from(units.len() * 2) else {
        return Ok(crate::NDIS_STATUS_RESOURCES);
    };
    let owner = k.caller_image();
    let buffer = ex::allocate(k, u64::from(max), u32::from_le_bytes(*b"NDin"), owner)?;
    let bytes: Vec<u8> = units.iter().flat_map(|u| u.to_le_bytes()).collect();
    k.m.mem.write_bytes(buffer, &bytes)?;
    ntoskrnl::rtl::write_unicode_string_struct(k, out, buffer, max - 2, max)?;
    Ok(NDIS_STATUS_SUCCESS)
}

/// NdisMRemoveMiniport(MiniportAdapterHandle): the miniport found the adapter unrecoverable; NDIS
/// removes it (halts it) later, outside the call, as a PnP removal does on Windows: the host sees
/// [`AdapterEvent::Removed`].
pub fn remove_miniport(k: &mut Kernel, handle: u64) -> KResult<NdisStatus> {
    let Some(a) = adapter_mut(k, handle) else {
        tracing::warn!(target: "ica::ndis", "NdisMRemoveMiniport({handle:#x}): not an adapter handle");
        return Ok(NDIS_STATUS_FAILURE);
    };
    tracing::warn!(target: "ica::ndis", "{}: the miniport asked NDIS to remove the adapter (NdisMRemoveMiniport)", a.name);
    a.events.push_back(AdapterEvent::Removed);
    Ok(NDIS_STATUS_SUCCESS)
}

/// NdisWriteErrorLogEntry(NdisAdapterHandle, ErrorCode, NumberOfErrorValues, ...): the entry
/// goes to the log (target `ica::ndis`, warning) with the driver and adapter names, and is kept
/// in the kernel's NDIS error log ([`error_log`]).
pub fn write_error_log_entry(k: &mut Kernel, handle: u64, code: u32, count: u32) -> KResult<()> {
    let mut values = Vec::new();
    for i in 0..count.min(MAX_ERROR_VALUES) {
        values.push(k.vararg(3 + i as usize)? as u32);
    }
    let driver = k.caller_image();
    let adapter = adapter_mut(k, handle)
        .map(|a| a.name.clone())
        .unwrap_or_else(|| format!("{handle:#x} (not an adapter)"));
    tracing::warn!(target: "ica::ndis", "{driver}: {adapter}: error log entry {code:#010x}, values {values:x?}");
    k.extension::<NdisState>().error_log.push(ErrorLogEntry {
        driver,
        adapter,
        code,
        values,
    });
    Ok(())
}

/// Most error values an entry keeps (an ERROR_LOG_ENTRY's dump data is small).
const MAX_ERROR_VALUES: u32 = 16;

/// An NdisWriteErrorLogEntry entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorLogEntry {
    /// The driver image that wrote it.
    pub driver: String,
    /// The adapter's name.
    pub adapter: String,
    /// NDIS_ERROR_CODE.
    pub code: u32,
    /// The error values.
    pub values: Vec<u32>,
}

/// The error log entries miniports wrote, oldest first.
pub fn error_log(k: &mut Kernel) -> Vec<ErrorLogEntry> {
    k.extension::<NdisState>().error_log.clone()
}

pub(crate) static EXPORTS: &[Export] = export_table![
    stdcall NdisMRemoveMiniport => remove_miniport(miniport_adapter_handle: u64);
    stdcall NdisMQueryAdapterInstanceName => query_adapter_instance_name(adapter_instance_name: u64, miniport_handle: u64);
    cdecl NdisWriteErrorLogEntry => write_error_log_entry(ndis_adapter_handle: u64, error_code: u32, number_of_error_values: u32);
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

/// An NDIS 5 adapter record with the given resources and no handlers, for the crate's unit tests
/// of the calls a miniport makes on its adapter handle.
#[cfg(test)]
pub(crate) fn test_adapter(k: &mut Kernel, resources: Vec<Resource>) -> u64 {
    let l = crate::layout(k);
    let block = crate::test_support::block(k, l.miniport_block_size);
    let scratch = alloc_scratch(k).expect("scratch");
    let chars = MiniportCharacteristics {
        major: 5,
        minor: 1,
        handlers: [0; crate::wrapper::HANDLER_COUNT],
    };
    let kind = Kind::Ndis5(Box::new(Ndis5::new(chars, 0)));
    let setup = AdapterSetup {
        name: "test adapter".into(),
        config_key: String::new(),
        resources,
        bus: None,
    };
    let record = Adapter::new(block, scratch, setup, kind);
    k.extension::<NdisState>().adapters.insert(block, record);
    block
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{kernel, ARCHES};

    #[test]
    fn the_block_holds_the_handler_every_block_macro_names() {
        for arch in ARCHES {
            let mut k = kernel(arch);
            let l = crate::layout(&k);
            // MiniportInitialize returns NDIS_STATUS_SUCCESS at once.
            let code =
                k.m.mem
                    .alloc(0x1000, dbt::Prot::READ | dbt::Prot::EXEC)
                    .unwrap();
            let ret: &[u8] = match arch {
                dbt::Arch::X86 => &[0x31, 0xC0, 0xC2, 0x18, 0x00],
                dbt::Arch::X64 => &[0x31, 0xC0, 0xC3],
            };
            k.m.mem.write_bytes(code, ret).unwrap();
            let mut handlers = [0; crate::wrapper::HANDLER_COUNT];
            handlers[Handler::Initialize as usize] = code;
            let wrapper = crate::alloc_handle(&mut k, b"Test").unwrap();
            let w = crate::Wrapper {
                miniport: Some(MiniportCharacteristics {
                    major: 5,
                    minor: 1,
                    handlers,
                }),
                ..Default::default()
            };
            k.extension::<NdisState>().wrappers.insert(wrapper, w);
            let setup = AdapterSetup {
                name: "blocks".into(),
                config_key: r"\Registry\Machine\System\Test".into(),
                resources: Vec::new(),
                bus: None,
            };
            let block = initialize(&mut k, MiniportDriverHandle::Ndis5(wrapper), setup)
                .unwrap()
                .unwrap();
            for m in BLOCK_MACROS {
                let handler = m.handler().unwrap_or_else(|| panic!("{}", m.name));
                let installed = k.read_ptr(block + m.offset(l)).unwrap();
                assert_eq!(installed, k.host_function(handler), "{arch:?} {}", m.name);
                assert_eq!(block_macro(m.name).map(|b| b.field), Some(m.field));
            }
            assert!(block_macro("NdisMTrIndicateReceive").is_none());
            // A macro's call through its field reaches the host: NdisMIndicateStatus.
            let status = BLOCK_MACROS
                .iter()
                .find(|m| m.name == "NdisMIndicateStatus")
                .unwrap();
            let field = k.read_ptr(block + status.offset(l)).unwrap();
            k.call_guest(field, &[block, u64::from(NDIS_STATUS_MEDIA_CONNECT), 0, 0])
                .unwrap();
            assert_eq!(take_events(&mut k, block), vec![AdapterEvent::Link(true)]);
            assert!(release(&mut k, block).unwrap().is_empty());
        }
    }

    /// `findings` has one line per `expected` fragment, in order.
    fn assert_findings(findings: &[String], expected: &[&str]) {
        assert_eq!(findings.len(), expected.len(), "{findings:#?}");
        for (f, e) in findings.iter().zip(expected) {
            assert!(f.contains(e), "{f:?} lacks {e:?}");
        }
    }

    #[test]
    fn stray_completions_are_findings_and_change_nothing() {
        for arch in ARCHES {
            let mut k = kernel(arch);
            let block = test_adapter(&mut k, Vec::new());
            send_complete(&mut k, block, 0x1234, NDIS_STATUS_SUCCESS).unwrap();
            transfer_data_complete(&mut k, block, 0x5678, NDIS_STATUS_SUCCESS, 10).unwrap();
            query_information_complete(&mut k, block, NDIS_STATUS_SUCCESS).unwrap();
            // A set completed while a query is pending leaves the query pending.
            adapter(&mut k, block).unwrap().pending_request = Some(PendingRequest {
                query: true,
                oid: 0x0001_0107,
                buffer: crate::test_support::block(&mut k, 4),
                len: 4,
                request: 0,
            });
            set_information_complete(&mut k, block, NDIS_STATUS_SUCCESS).unwrap();
            assert!(adapter(&mut k, block).unwrap().pending_request.is_some());
            assert_eq!(completed_request(&mut k, block), None);
            let stats = stats(&mut k, block).unwrap();
            assert_eq!((stats.sends_ok, stats.receives), (0, 0));
            assert_findings(
                &release(&mut k, block).unwrap(),
                &[
                    "NdisMSendComplete of packet 0x1234, which is not a send in progress",
                    "NdisMTransferDataComplete of packet 0x5678, which has no transfer pending",
                    "NdisMQueryInformationComplete with status 0x0, but no request is pending",
                    "NdisMSetInformationComplete with status 0x0, but the pending request is a query of 0x10107",
                    "an OID request never completed",
                ],
            );
        }
    }

    #[test]
    fn lookahead_indications_are_checked_against_the_lookahead_and_pending_transfers() {
        for arch in ARCHES {
            let mut k = kernel(arch);
            let block = test_adapter(&mut k, Vec::new());
            let frame: Vec<u8> = (0..300u32).map(|i| i as u8).collect();
            let buf = crate::test_support::block(&mut k, 300);
            k.m.mem.write_bytes(buf, &frame).unwrap();
            let indicate = |k: &mut Kernel, look: u32, size: u32| {
                eth_indicate_receive(k, block, 0, buf, buf, 14, buf + 14, look, size).unwrap()
            };
            // The whole packet in the lookahead (more than the packet: the rest is not the frame's).
            indicate(&mut k, 286, 100);
            assert_eq!(
                take_events(&mut k, block),
                vec![AdapterEvent::Receive(frame[..114].to_vec())]
            );
            // Shorter than the current lookahead, and no MiniportTransferData to fetch the rest.
            ndis5(&mut k, block).unwrap().lookahead = Some(128);
            indicate(&mut k, 64, 286);
            assert!(take_events(&mut k, block).is_empty());
            // A transfer pending: another indication is a finding; its completion brings the frame
            // up with no more than the bytes asked for.
            let slot = take_slot(&mut k, block, &[0; 158]).unwrap().unwrap();
            k.m.mem.write_bytes(slot.data, &frame[142..]).unwrap();
            let t = Transfer {
                slot,
                frame: frame[..142].to_vec(),
                requested: 158,
            };
            ndis5(&mut k, block)
                .unwrap()
                .transfers
                .insert(slot.packet, t);
            indicate(&mut k, 286, 286);
            transfer_data_complete(&mut k, block, slot.packet, NDIS_STATUS_SUCCESS, 200).unwrap();
            let events = take_events(&mut k, block);
            assert_eq!(
                events,
                vec![
                    AdapterEvent::Receive(frame.clone()),
                    AdapterEvent::Receive(frame.clone())
                ]
            );
            assert_findings(
                &release(&mut k, block).unwrap(),
                &[
                    "a 64-byte lookahead of a 286-byte packet; the current lookahead is 128",
                    "64 bytes of a 286-byte packet, and no MiniportTransferData",
                    "NdisMEthIndicateReceive while 1 MiniportTransferData are pending",
                    "reports 200 bytes transferred into packet",
                ],
            );
        }
    }
}
