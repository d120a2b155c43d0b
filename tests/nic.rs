//! Helpers of the NIC driver tests: test frames, an adapter on the RTL8139 model with an
//! in-process wire (optionally watched by a [`Probed`] wrapper) and an adapter key to configure
//! it, servicing and collecting what the miniport indicated, pool accounting, and
//! NET_BUFFER_LISTs built by hand.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};

use dbt::Arch;
use host_linux::bus::PciResources;
use host_linux::device::{Bar, Dma, DmaError, PciDevice};
use host_linux::net::{NetEvent, NetMiniport};
use host_linux::packet::{PortHandle, QueuePort};
use host_linux::rtl8139::{Cable, Rtl8139};
use loader::net::{oid, NetAdapter};
use loader::DriverHost;
use ntoskrnl::pnp::Driver;
use ntoskrnl::registry::{self, RegValue};
use ntoskrnl::{ex, mm, Kernel};

use crate::{driver_path, host};

/// Factory address of the RTL8139 model in these tests.
pub const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
/// Another station on the wire.
pub const PEER: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x00, 0x01];

/// An Ethernet frame from `src` to `dst` with `len` payload bytes derived from `seed`.
pub fn frame(dst: [u8; 6], src: [u8; 6], len: usize, seed: u8) -> Vec<u8> {
    let mut f = dst.to_vec();
    f.extend_from_slice(&src);
    f.extend_from_slice(&[0x88, 0xB5]); // local experimental ethertype
    f.extend((0..len).map(|i| (i as u8).wrapping_mul(31) ^ seed));
    f
}

/// The miniport `driver` started on an RTL8139 model whose wire is an in-process port; returns
/// the adapter, the wire's host end and the model's cable.
pub fn start_rtl8139(arch: Arch, driver: &str) -> (NetAdapter, PortHandle, Cable) {
    start_rtl8139_in(host(arch), arch, driver, None)
}

/// [`start_rtl8139`] in `h`, the configuration read from `config_key` (the service's Parameters
/// key if `None`).
pub fn start_rtl8139_in(
    h: DriverHost,
    arch: Arch,
    driver: &str,
    config_key: Option<&str>,
) -> (NetAdapter, PortHandle, Cable) {
    let (port, wire) = QueuePort::new();
    let dev = Box::new(Rtl8139::new(MAC, Box::new(port)));
    let cable = dev.cable();
    let nic = NetAdapter::start(h, &driver_path(arch, driver), dev, config_key, Vec::new())
        .unwrap_or_else(|e| panic!("{driver} {}: {e}", arch.name()));
    (nic, wire, cable)
}

/// What a [`Probed`] device saw.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ProbeLog {
    /// Register accesses (reads and writes) per BAR number.
    pub bar_accesses: BTreeMap<usize, u64>,
    /// Bus addresses and lengths the device read by DMA, in order.
    pub dma_reads: Vec<(u64, usize)>,
}

/// A PCI device that records, for the test, which BARs the driver touches and where the device
/// reads memory by DMA; otherwise it is the device it wraps.
pub struct Probed<D> {
    inner: D,
    log: Arc<Mutex<ProbeLog>>,
}

impl<D: PciDevice> Probed<D> {
    /// Wraps `inner`; the log is shared with the caller.
    pub fn new(inner: D) -> (Probed<D>, Arc<Mutex<ProbeLog>>) {
        let log = Arc::new(Mutex::new(ProbeLog::default()));
        let probed = Probed {
            inner,
            log: log.clone(),
        };
        (probed, log)
    }

    fn count(&self, bar: usize) {
        *self
            .log
            .lock()
            .unwrap()
            .bar_accesses
            .entry(bar)
            .or_default() += 1;
    }
}

/// The device's DMA, with its reads recorded.
struct RecordingDma<'a> {
    inner: &'a mut dyn Dma,
    log: &'a Mutex<ProbeLog>,
}

impl Dma for RecordingDma<'_> {
    fn read(&mut self, addr: u64, buf: &mut [u8]) -> Result<(), DmaError> {
        self.log.lock().unwrap().dma_reads.push((addr, buf.len()));
        self.inner.read(addr, buf)
    }

    fn write(&mut self, addr: u64, data: &[u8]) -> Result<(), DmaError> {
        self.inner.write(addr, data)
    }
}

impl<D: PciDevice> PciDevice for Probed<D> {
    fn config_read(&mut self, offset: u16, size: u8) -> u32 {
        self.inner.config_read(offset, size)
    }
    fn config_write(&mut self, offset: u16, size: u8, value: u32) {
        self.inner.config_write(offset, size, value)
    }
    fn bars(&self) -> Vec<Bar> {
        self.inner.bars()
    }
    fn bar_read(&mut self, bar: usize, offset: u64, size: u8) -> u64 {
        self.count(bar);
        self.inner.bar_read(bar, offset, size)
    }
    fn bar_write(&mut self, bar: usize, offset: u64, size: u8, value: u64) {
        self.count(bar);
        self.inner.bar_write(bar, offset, size, value)
    }
    fn interrupt_pending(&self) -> bool {
        self.inner.interrupt_pending()
    }
    fn poll(&mut self, dma: &mut dyn Dma) {
        let log = self.log.clone();
        let mut dma = RecordingDma {
            inner: dma,
            log: &log,
        };
        self.inner.poll(&mut dma)
    }
}

/// The miniport `driver` started in `h` on a [`Probed`] RTL8139 model with an in-process wire,
/// its configuration read from `config_key` (the service's Parameters key if `None`); returns the
/// adapter, the wire's host end and the probe's log.
pub fn start_probed_rtl8139(
    h: DriverHost,
    arch: Arch,
    driver: &str,
    config_key: Option<&str>,
) -> (NetAdapter, PortHandle, Arc<Mutex<ProbeLog>>) {
    let (port, wire) = QueuePort::new();
    let (dev, log) = Probed::new(Rtl8139::new(MAC, Box::new(port)));
    let nic = NetAdapter::start(
        h,
        &driver_path(arch, driver),
        Box::new(dev),
        config_key,
        Vec::new(),
    )
    .unwrap_or_else(|e| panic!("{driver} {}: {e}", arch.name()));
    (nic, wire, log)
}

/// An adapter key (as the installer makes one) holding `values`, and `Ndi\params\<name>` subkeys
/// with a `default` for each of `defaults`.
pub fn adapter_key(
    h: &mut DriverHost,
    values: &[(&str, &str)],
    defaults: &[(&str, &str)],
) -> String {
    let key = r"\Registry\Machine\System\CurrentControlSet\Control\Class\{4D36E972-E325-11CE-BFC1-08002BE10318}\0001";
    let b = registry::backend(&mut h.k);
    b.create_key_path(key).unwrap();
    for (name, value) in values {
        b.set_value(key, name, &RegValue::sz(value)).unwrap();
    }
    for (name, value) in defaults {
        let sub = format!(r"{key}\Ndi\params\{name}");
        b.create_key_path(&sub).unwrap();
        b.set_value(&sub, "default", &RegValue::sz(value)).unwrap();
    }
    key.to_string()
}

/// rtl8139_ndis5.sys's private OID_ICA_RTL_DIAG.
pub const OID_ICA_RTL_DIAG: u32 = 0xFF81_3901;

/// What rtl8139_ndis5.sys reports through OID_ICA_RTL_DIAG (17 ULONGs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtlDiag {
    pub io_mode: u32,
    pub ndi_params: u32,
    pub zero_copy_sends: u32,
    pub copied_sends: u32,
    pub context_allocs: u32,
    pub context_misses: u32,
    pub context_frees: u32,
    /// The Deserialize, ReceiveIndication and PendOids parameters as the driver uses them.
    pub deserialized: u32,
    pub receive_indication: u32,
    pub pend_oids: u32,
    /// Serialized: packets handed back with NDIS_STATUS_RESOURCES.
    pub sends_refused: u32,
    /// Deserialized: packets that waited in the driver's queue for a descriptor.
    pub sends_waited: u32,
    /// NdisMEthIndicateReceive calls, and those with less than the whole frame.
    pub lookahead_indications: u32,
    pub short_lookaheads: u32,
    /// MiniportTransferData answered at once / pended and completed with
    /// NdisMTransferDataComplete.
    pub transfers: u32,
    pub transfers_pended: u32,
    /// Requests answered with NdisMQueryInformationComplete / NdisMSetInformationComplete.
    pub oids_pended: u32,
    /// Length and FNV-1a of the `Firmware` file loaded (0, 0: none).
    pub firmware_length: u32,
    pub firmware_checksum: u32,
    /// Device << 16 | vendor, read with NdisImmediateReadPciSlotInformation.
    pub pci_id: u32,
    /// NdisGetVersion, called through NdisGetRoutineAddress.
    pub ndis_version: u32,
    /// Bytes of NdisMQueryAdapterInstanceName's name.
    pub instance_name_length: u32,
    /// NdisScheduleWorkItem routines that ran.
    pub work_items_run: u32,
    /// Length of the NdisMAllocateSharedMemoryAsync block once completed.
    pub async_shared_length: u32,
}

/// Queries rtl8139_ndis5.sys's OID_ICA_RTL_DIAG.
pub fn rtl_diag(nic: &mut NetAdapter) -> RtlDiag {
    let r = nic.query(OID_ICA_RTL_DIAG, 128).unwrap();
    assert_eq!(r.status, ndis::NDIS_STATUS_SUCCESS);
    assert_eq!(r.data.len(), 96);
    let f = |i: usize| u32::from_le_bytes(r.data[4 * i..4 * i + 4].try_into().unwrap());
    RtlDiag {
        io_mode: f(0),
        ndi_params: f(1),
        zero_copy_sends: f(2),
        copied_sends: f(3),
        context_allocs: f(4),
        context_misses: f(5),
        context_frees: f(6),
        deserialized: f(7),
        receive_indication: f(8),
        pend_oids: f(9),
        sends_refused: f(10),
        sends_waited: f(11),
        lookahead_indications: f(12),
        short_lookaheads: f(13),
        transfers: f(14),
        transfers_pended: f(15),
        oids_pended: f(16),
        firmware_length: f(17),
        firmware_checksum: f(18),
        pci_id: f(19),
        ndis_version: f(20),
        instance_name_length: f(21),
        work_items_run: f(22),
        async_shared_length: f(23),
    }
}

/// Services the adapter a few rounds; returns what it indicated.
pub fn service(nic: &mut NetAdapter) -> Vec<NetEvent> {
    let mut events = Vec::new();
    for _ in 0..8 {
        nic.service(&mut events).expect("service");
    }
    events
}

/// The received frames among `events`.
pub fn received(events: &[NetEvent]) -> Vec<Vec<u8>> {
    events
        .iter()
        .filter_map(|e| match e {
            NetEvent::Receive(f) => Some(f.clone()),
            _ => None,
        })
        .collect()
}

/// Sends `frames` and collects what reaches the wire.
pub fn send_all(nic: &mut NetAdapter, wire: &PortHandle, frames: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let mut queue: VecDeque<Vec<u8>> = frames.iter().cloned().collect();
    drain_sends(nic, wire, &mut queue, frames.len())
}

/// Sends what `queue` holds, servicing the adapter, until it is empty and `count` frames reached
/// the wire (or a hundred rounds passed); returns what reached the wire.
pub fn drain_sends(
    nic: &mut NetAdapter,
    wire: &PortHandle,
    queue: &mut VecDeque<Vec<u8>>,
    count: usize,
) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for _ in 0..100 {
        nic.send(queue).expect("send");
        service(nic);
        while let Some(f) = wire.take_sent() {
            out.push(f);
        }
        if queue.is_empty() && out.len() >= count {
            break;
        }
    }
    out
}

/// `out` (what reached the wire) is `sent`, short frames padded to the 60-byte minimum.
pub fn assert_sent(arch: Arch, out: &[Vec<u8>], sent: &[Vec<u8>]) {
    assert_eq!(out.len(), sent.len(), "{}", arch.name());
    for (o, s) in out.iter().zip(sent) {
        assert_eq!(&o[..s.len()], &s[..], "{}", arch.name());
        assert!(o.len() == s.len() || (s.len() < 60 && o.len() == 60));
    }
}

/// Sends ten frames of 40 to 1273 bytes through the driver and asserts that they leave the
/// device intact (short ones padded) and that both the host and the driver's OIDs count ten.
pub fn ten_sends_leave_intact(arch: Arch, nic: &mut NetAdapter, wire: &PortHandle) {
    let sent: Vec<Vec<u8>> = (0..10)
        .map(|i| frame(PEER, MAC, 40 + 137 * i, i as u8))
        .collect();
    let out = send_all(nic, wire, &sent);
    assert_sent(arch, &out, &sent);
    let stats = nic.stats();
    assert_eq!(stats.sends_ok, 10, "{}: {stats:?}", arch.name());
    assert_eq!(stats.sends_failed, 0, "{}", arch.name());
    assert_eq!(nic.info().unwrap().xmit_ok, 10, "{}", arch.name());
}

/// Injects 40 frames of 46 to 1411 bytes for the adapter (more than any test miniport has receive
/// packets, so returns must recycle them), `chunk` at a time with a service call after each, and
/// asserts that they come up through the driver intact and in order.
pub fn forty_receives_arrive_intact(
    arch: Arch,
    nic: &mut NetAdapter,
    wire: &PortHandle,
    chunk: usize,
) {
    let frames: Vec<Vec<u8>> = (0..40)
        .map(|i| frame(MAC, PEER, 46 + 35 * i, 0x40 + i as u8))
        .collect();
    let mut got = Vec::new();
    for c in frames.chunks(chunk) {
        for f in c {
            wire.inject(f);
        }
        got.extend(received(&service(nic)));
    }
    assert_eq!(got.len(), frames.len(), "{}", arch.name());
    assert_eq!(got, frames, "{}", arch.name());
}

/// After [`forty_receives_arrive_intact`]: a broadcast passes the default packet filter, a frame
/// for another station does not, and host and driver count 41 receives, most packets returned.
pub fn default_filter_and_receive_counters(arch: Arch, nic: &mut NetAdapter, wire: &PortHandle) {
    wire.inject(&frame([0xFF; 6], PEER, 50, 1));
    wire.inject(&frame([0x02, 9, 9, 9, 9, 9], PEER, 50, 2));
    let got = received(&service(nic));
    assert_eq!(got.len(), 1, "{}", arch.name());
    assert_eq!(got[0][..6], [0xFF; 6]);
    let stats = nic.stats();
    assert_eq!(stats.receives, 41, "{}", arch.name());
    assert!(stats.returns >= 30, "{}: {stats:?}", arch.name());
    assert!(stats.interrupts > 0);
    assert_eq!(nic.info().unwrap().rcv_ok, 41);
}

/// An unsupported OID, a short query buffer and a short set buffer are clean errors (with the
/// bytes needed where the miniport says), and a multicast list is accepted and read back.
pub fn bad_oids_are_clean_errors_and_multicast_reads_back(nic: &mut NetAdapter) {
    let r = nic.query(0x00FF_FFFF, 64).unwrap();
    assert_eq!(r.status, ndis::miniport::NDIS_STATUS_NOT_SUPPORTED);
    let r = nic.query(oid::P802_3_CURRENT_ADDRESS, 2).unwrap();
    assert_eq!(r.status, ndis::miniport::NDIS_STATUS_BUFFER_TOO_SHORT);
    assert_eq!(r.bytes_needed, 6);
    let r = nic.set(oid::GEN_CURRENT_PACKET_FILTER, &[1]).unwrap();
    assert_eq!(r.status, ndis::miniport::NDIS_STATUS_INVALID_LENGTH);
    let list = [0x01, 0x00, 0x5E, 0x00, 0x00, 0xFB];
    let r = nic.set(oid::P802_3_MULTICAST_LIST, &list).unwrap();
    assert_eq!(r.status, ndis::NDIS_STATUS_SUCCESS);
    assert_eq!(r.bytes_read, 6);
    let r = nic.query(oid::P802_3_MULTICAST_LIST, 64).unwrap();
    assert_eq!(r.data, list);
}

/// Live pool blocks and bytes per tag.
pub fn pool_by_tag(k: &ntoskrnl::Kernel) -> BTreeMap<String, (u64, u64)> {
    let mut m = BTreeMap::new();
    for (_, b) in k.pool.blocks() {
        let e = m.entry(ntoskrnl::ex::tag_text(b.tag)).or_insert((0, 0));
        e.0 += 1;
        e.1 += b.size;
    }
    m
}

/// Loads `driver` into `h` and initializes an adapter on the device with resources `res`
/// (configuration from the service's Parameters key); `Err` carries the failing status.
pub fn load_and_initialize(
    h: &mut DriverHost,
    arch: Arch,
    driver: &str,
    res: &PciResources,
    bus: Option<Box<dyn ndis::BusConfig>>,
) -> (Driver, Result<u64, ndis::NdisStatus>) {
    let d = h.load_driver(&driver_path(arch, driver)).unwrap();
    let m = ndis::registered_miniport(&mut h.k, d.object).expect("miniport registered");
    let setup = ndis::AdapterSetup {
        name: format!("{driver} (reload)"),
        config_key: format!(r"{}\Parameters", m.registry_path),
        resources: loader::net::pci_resources(res),
        bus,
    };
    let a = ndis::miniport::initialize(&mut h.k, m.handle, setup).unwrap();
    (d, a)
}

/// One frame out and one in through adapter `a`, delivering interrupts by hand; then halt (with
/// nothing left behind) and unload.
pub fn one_frame_each_way_then_unload(
    h: &mut DriverHost,
    driver: &Driver,
    a: u64,
    wire: &PortHandle,
) {
    let mut queue = VecDeque::from([frame(PEER, MAC, 100, 3)]);
    ndis::miniport::send(&mut h.k, a, &mut queue).unwrap();
    wire.inject(&frame(MAC, PEER, 100, 4));
    for _ in 0..4 {
        for line in h.poll_pci() {
            ndis::interrupt::deliver(&mut h.k, line).unwrap();
        }
    }
    assert!(wire.take_sent().is_some());
    let events = ndis::miniport::take_events(&mut h.k, a);
    assert!(
        matches!(events.as_slice(), [ndis::AdapterEvent::Receive(_)]),
        "{events:?}"
    );
    assert_eq!(
        ndis::miniport::halt(&mut h.k, a).unwrap(),
        Vec::<String>::new()
    );
    h.unload_driver(driver).unwrap();
}

/// Builds NET_BUFFER_LISTs in guest memory for tests that hand NDIS malformed or hand-made ones;
/// [`NblBuilder::free`] releases everything it allocated.
#[derive(Default)]
pub struct NblBuilder {
    blocks: Vec<u64>,
}

impl NblBuilder {
    /// `size` zeroed bytes of guest memory.
    pub fn block(&mut self, k: &mut Kernel, size: u64) -> u64 {
        let b = ex::allocate(k, size, u32::from_le_bytes(*b"Test"), "test".into()).unwrap();
        self.blocks.push(b);
        b
    }

    /// An MDL over `data` (copied into guest memory).
    pub fn mdl(&mut self, k: &mut Kernel, data: &[u8]) -> u64 {
        let va = self.block(k, data.len() as u64);
        k.m.mem.write_bytes(va, data).unwrap();
        let mdl = mm::create_mdl_for_buffer(k, va, data.len() as u64).unwrap();
        self.blocks.push(mdl);
        mdl
    }

    /// An NBL with one NET_BUFFER of `length` bytes at the start of `mdl`'s chain.
    pub fn nbl(&mut self, k: &mut Kernel, mdl: u64, length: u32) -> u64 {
        let l = ndis::layout6(k);
        let nbl = self.block(k, l.nbl_size);
        let nb = self.block(k, l.nb_size);
        k.write_ptr(nbl + l.nbl_first_net_buffer, nb).unwrap();
        k.write_ptr(nb + l.nb_mdl_chain, mdl).unwrap();
        k.write_ptr(nb + l.nb_current_mdl, mdl).unwrap();
        k.m.mem.write_u32(nb + l.nb_data_length, length).unwrap();
        nbl
    }

    /// The NET_BUFFER of a new [`NblBuilder::nbl`].
    pub fn nb(&mut self, k: &mut Kernel, mdl: u64, length: u32) -> u64 {
        let nbl = self.nbl(k, mdl, length);
        k.read_ptr(nbl + ndis::layout6(k).nbl_first_net_buffer)
            .unwrap()
    }

    /// Links `to` after `from` (NET_BUFFER_LIST.Next).
    pub fn link(&self, k: &mut Kernel, from: u64, to: u64) {
        let l = ndis::layout6(k);
        k.write_ptr(from + l.nbl_next, to).unwrap();
    }

    /// Frees everything built.
    pub fn free(self, k: &mut Kernel) {
        for b in self.blocks.into_iter().rev() {
            ex::free(k, b, None).unwrap();
        }
    }
}
