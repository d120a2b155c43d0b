//! rtl8139_ndis5.sys (NDIS 5.1) drives the RTL8139 model through the whole NDIS 5 path, on x86-32
//! and x64: MiniportInitialize with bus resources, port I/O or memory-mapped registers
//! (NdisMMapIoSpace, chosen by the `IoMode` parameter or its Ndi\params default found through
//! NdisOpenConfigurationKeyByName / ByIndex), shared memory, map registers and an interrupt;
//! sends through MiniportSendPackets, zero copy through NdisMStartBufferPhysicalMapping or
//! copied, with per-send contexts from a lookaside list, and NdisMSendComplete; receives through
//! the ISR, MiniportHandleInterrupt, NdisMIndicateReceivePacket and MiniportReturnPacket; OID
//! queries and sets; link changes; Halt and unload with nothing leaked, 100 times over; a failing
//! MiniportInitialize. Then every combination of its `Deserialize`, `ReceiveIndication` and
//! `PendOids` parameters: serialized (NDIS requeues what it hands back with
//! NDIS_STATUS_RESOURCES) or deserialized (its own send queue, every packet completed once);
//! receives as packets or as NdisMEthIndicateReceive lookaheads with MiniportTransferData at once
//! or pended (NdisMTransferDataComplete); OID requests answered at once or pended
//! (NdisMQuery/SetInformationComplete from a timer) while traffic flows; Halt with all of them
//! outstanding, and Reset aborting them before traffic resumes.

use std::collections::VecDeque;

use dbt::Arch;
use host_linux::bus::PciResources;
use host_linux::device::{Bar, BarKind, ConfigHeader, ConfigSpace, Dma, PciDevice};
use host_linux::net::{NetEvent, NetMiniport};
use host_linux::packet::{PortHandle, QueuePort};
use host_linux::rtl8139::Rtl8139;
use ica_tests::nic::{
    adapter_key, assert_sent, bad_oids_are_clean_errors_and_multicast_reads_back,
    default_filter_and_receive_counters, drain_sends, forty_receives_arrive_intact, frame,
    load_and_initialize, one_frame_each_way_then_unload, pool_by_tag, received, rtl_diag, send_all,
    service, start_probed_rtl8139, start_rtl8139, start_rtl8139_in, ten_sends_leave_intact, MAC,
    PEER,
};
use ica_tests::{driver_path, host, ARCHES};
use loader::net::{oid, NetAdapter};
use ntoskrnl::registry::{self, RegValue};

fn start(arch: Arch) -> (NetAdapter, PortHandle) {
    let (nic, wire, _) = start_rtl8139(arch, DRIVER);
    (nic, wire)
}

const DRIVER: &str = "rtl8139_ndis5";

#[test]
fn initialize_reports_mac_link_and_mtu_through_oids() {
    for arch in ARCHES {
        let (mut nic, _wire) = start(arch);
        let info = nic.info().expect("info");
        assert_eq!(info.permanent_address, MAC, "{}", arch.name());
        assert_eq!(info.current_address, MAC, "{}", arch.name());
        assert!(info.link_up, "{}", arch.name());
        assert_eq!(info.mtu, 1500, "{}", arch.name());
        assert_eq!(info.link_speed, 100_000_000, "{}", arch.name());
        assert_eq!(info.description, "ICA RTL8139 NDIS 5.1 test miniport");
        let findings = nic.stop().expect("halt");
        assert!(findings.is_empty(), "{}: {findings:?}", arch.name());
    }
}

#[test]
fn frames_go_out_through_the_driver_and_the_device() {
    for arch in ARCHES {
        let (mut nic, wire) = start(arch);
        ten_sends_leave_intact(arch, &mut nic, &wire);
        assert!(nic.stop().unwrap().is_empty());
    }
}

#[test]
fn frames_come_in_through_interrupts_and_indications() {
    for arch in ARCHES {
        let (mut nic, wire) = start(arch);
        forty_receives_arrive_intact(arch, &mut nic, &wire, 5);
        default_filter_and_receive_counters(arch, &mut nic, &wire);
        assert!(nic.stop().unwrap().is_empty());
    }
}

#[test]
fn unsupported_oid_and_short_buffers_are_clean_errors() {
    for arch in ARCHES {
        let (mut nic, _wire) = start(arch);
        bad_oids_are_clean_errors_and_multicast_reads_back(&mut nic);
        assert!(nic.stop().unwrap().is_empty());
    }
}

#[test]
fn cable_pull_and_replug_are_indicated_as_media_disconnect_and_connect() {
    for arch in ARCHES {
        let (mut nic, wire, cable) = start_rtl8139(arch, DRIVER);
        cable.plug(false);
        let events = service(&mut nic);
        assert_eq!(events, vec![NetEvent::Link(false)], "{}", arch.name());
        assert!(!nic.info().unwrap().link_up);
        // Sends without link complete (the frame goes nowhere) and nothing is received.
        let mut queue = VecDeque::from([frame(PEER, MAC, 60, 1)]);
        nic.send(&mut queue).unwrap();
        service(&mut nic);
        assert!(wire.take_sent().is_none());
        cable.plug(true);
        let events = service(&mut nic);
        assert_eq!(events, vec![NetEvent::Link(true)], "{}", arch.name());
        assert!(nic.info().unwrap().link_up);
        assert!(nic.stop().unwrap().is_empty());
    }
}

/// Its pool tag of per-send contexts ('RCTx').
const TX_CONTEXT_TAG: &str = "RCTx";

/// How the register access mode is configured.
#[derive(Debug, Clone, Copy)]
enum IoConfig {
    /// Nothing configured: port I/O.
    Default,
    /// `IoMode` = "1" in the adapter's key.
    MemoryValue,
    /// No `IoMode` value; `Ndi\params\IoMode` default "1" (and another parameter).
    MemoryByNdiDefault,
    /// `IoMode` = "0" in the key wins over an Ndi\params default of "1".
    PortValueOverNdiDefault,
}

impl IoConfig {
    const ALL: [IoConfig; 4] = [
        IoConfig::Default,
        IoConfig::MemoryValue,
        IoConfig::MemoryByNdiDefault,
        IoConfig::PortValueOverNdiDefault,
    ];

    /// The driver's expected IoMode and count of Ndi\params subkeys.
    fn expected(self) -> (u32, u32) {
        match self {
            IoConfig::Default => (0, 0),
            IoConfig::MemoryValue => (1, 0),
            IoConfig::MemoryByNdiDefault => (1, 2),
            IoConfig::PortValueOverNdiDefault => (0, 2),
        }
    }

    /// Starts the probed adapter configured this way.
    fn start(
        self,
        arch: Arch,
    ) -> (
        NetAdapter,
        PortHandle,
        std::sync::Arc<std::sync::Mutex<ica_tests::nic::ProbeLog>>,
    ) {
        let mut h = host(arch);
        let ndi = [("IoMode", "1"), ("*SpeedDuplex", "0")];
        let key = match self {
            IoConfig::Default => None,
            IoConfig::MemoryValue => Some(adapter_key(&mut h, &[("IoMode", "1")], &[])),
            IoConfig::MemoryByNdiDefault => Some(adapter_key(&mut h, &[], &ndi)),
            IoConfig::PortValueOverNdiDefault => {
                Some(adapter_key(&mut h, &[("IoMode", "0")], &ndi))
            }
        };
        start_probed_rtl8139(h, arch, DRIVER, key.as_deref())
    }
}

#[test]
fn port_and_memory_mapped_registers_both_move_frames_intact_both_ways() {
    for arch in ARCHES {
        for config in IoConfig::ALL {
            let what = format!("{} {config:?}", arch.name());
            let (mut nic, wire, probe) = config.start(arch);
            let (mode, params) = config.expected();
            let d = rtl_diag(&mut nic);
            assert_eq!((d.io_mode, d.ndi_params), (mode, params), "{what}");
            let a = ndis::miniport::adapter_mut(&mut nic.host.k, nic.adapter).unwrap();
            let bar1 = a.resources.iter().find_map(|r| match *r {
                ndis::Resource::Memory { start, length } => Some((start, length)),
                _ => None,
            });
            if mode == 1 {
                assert!(a.port_ranges.is_empty(), "{what}");
                let mapped: Vec<(u64, u32)> = a.io_mappings.values().copied().collect();
                assert_eq!(mapped, vec![bar1.unwrap()], "{what}: BAR1 mapped");
            } else {
                assert_eq!(a.port_ranges.len(), 1, "{what}");
                assert!(a.io_mappings.is_empty(), "{what}");
            }

            let sent: Vec<Vec<u8>> = (0..10)
                .map(|i| frame(PEER, MAC, 20 + 149 * i, i as u8))
                .collect();
            let out = send_all(&mut nic, &wire, &sent);
            assert_sent(arch, &out, &sent);
            let frames: Vec<Vec<u8>> = (0..20)
                .map(|i| frame(MAC, PEER, 46 + 70 * i, 0x60 + i as u8))
                .collect();
            let mut got = Vec::new();
            for chunk in frames.chunks(4) {
                for f in chunk {
                    wire.inject(f);
                }
                got.extend(received(&service(&mut nic)));
            }
            assert_eq!(got, frames, "{what}");

            // Every register access went to the BAR of the configured mode.
            let log = probe.lock().unwrap().clone();
            let (used, unused) = if mode == 1 { (1, 0) } else { (0, 1) };
            assert!(
                log.bar_accesses.get(&used).copied().unwrap_or(0) > 100,
                "{what}: {log:?}"
            );
            assert_eq!(log.bar_accesses.get(&unused), None, "{what}: {log:?}");
            let findings = nic.stop().unwrap();
            assert!(findings.is_empty(), "{what}: {findings:?}");
        }
    }
}

#[test]
fn large_single_buffer_sends_go_out_zero_copy_short_ones_copied() {
    for arch in ARCHES {
        for config in [IoConfig::Default, IoConfig::MemoryValue] {
            let what = format!("{} {config:?}", arch.name());
            let (mut nic, wire, probe) = config.start(arch);
            // Frames under the 60-byte minimum are copied (the chip does not pad); the others
            // are one 16-byte-aligned NDIS buffer each: zero copy.
            let lengths = [0, 40, 45, 46, 47, 100, 500, 1000, 1500, 5, 46, 300];
            let sent: Vec<Vec<u8>> = lengths
                .iter()
                .enumerate()
                .map(|(i, &n)| frame(PEER, MAC, n, 0xA0 + i as u8))
                .collect();
            let short = sent.iter().filter(|f| f.len() < 60).count() as u32;
            let long = sent.len() as u32 - short;
            let out = send_all(&mut nic, &wire, &sent);
            assert_sent(arch, &out, &sent);
            let d = rtl_diag(&mut nic);
            assert_eq!(
                (d.zero_copy_sends, d.copied_sends),
                (long, short),
                "{what}: {d:?}"
            );

            // The device read zero-copy frames from the packets' own buffers, copied ones from
            // the driver's transmit buffers (its shared memory).
            let a = ndis::miniport::adapter_mut(&mut nic.host.k, nic.adapter).unwrap();
            let shared: Vec<(u64, u64)> = a
                .shared_memory
                .values()
                .map(|m| (m.pa, m.pa + u64::from(m.length)))
                .collect();
            let reads = probe.lock().unwrap().dma_reads.clone();
            assert_eq!(reads.len(), sent.len(), "{what}: {reads:x?}");
            let from_shared = reads
                .iter()
                .filter(|(pa, _)| shared.iter().any(|(lo, hi)| pa >= lo && pa < hi))
                .count() as u32;
            assert_eq!(from_shared, short, "{what}: {reads:x?}");
            assert!(
                a.physical_mappings.is_empty(),
                "{what}: map registers released at completion"
            );

            // Every send took a context from the lookaside list and gave it back; misses are
            // bounded by the four descriptors in flight, the rest came from the list.
            assert_eq!(d.context_allocs, sent.len() as u32, "{what}: {d:?}");
            assert_eq!(d.context_frees, sent.len() as u32, "{what}: {d:?}");
            assert!((1..=4).contains(&d.context_misses), "{what}: {d:?}");
            let cached = pool_by_tag(&nic.host.k)
                .get(TX_CONTEXT_TAG)
                .map(|&(blocks, _)| blocks)
                .unwrap_or(0);
            assert!(
                (1..=4).contains(&cached),
                "{what}: {cached} cached contexts"
            );
            // Halt deletes the list: its cached contexts are freed (stop reports leaks).
            let findings = nic.stop().unwrap();
            assert!(findings.is_empty(), "{what}: {findings:?}");
        }
    }
}

/// ReceiveIndication: how the driver indicates receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rx {
    /// NdisMIndicateReceivePacket.
    Packets = 0,
    /// NdisMEthIndicateReceive; MiniportTransferData copies the rest at once.
    Lookahead = 1,
    /// NdisMEthIndicateReceive; MiniportTransferData pends, NdisMTransferDataComplete follows.
    LookaheadPended = 2,
}

/// Which NDIS 5.1 paths the driver takes: its Deserialize, ReceiveIndication and PendOids
/// parameters.
#[derive(Debug, Clone, Copy)]
struct Paths {
    deserialize: bool,
    rx: Rx,
    pend_oids: bool,
}

impl Paths {
    /// Every combination.
    fn all() -> Vec<Paths> {
        let mut all = Vec::new();
        for deserialize in [false, true] {
            for rx in [Rx::Packets, Rx::Lookahead, Rx::LookaheadPended] {
                for pend_oids in [false, true] {
                    all.push(Paths {
                        deserialize,
                        rx,
                        pend_oids,
                    });
                }
            }
        }
        all
    }

    /// The adapter started with these parameters in its key.
    fn start(self, arch: Arch) -> (NetAdapter, PortHandle) {
        let mut h = host(arch);
        let rx = (self.rx as u32).to_string();
        let values = [
            ("Deserialize", if self.deserialize { "1" } else { "0" }),
            ("ReceiveIndication", rx.as_str()),
            ("PendOids", if self.pend_oids { "1" } else { "0" }),
        ];
        let key = adapter_key(&mut h, &values, &[]);
        let (nic, wire, _) = start_rtl8139_in(h, arch, DRIVER, Some(&key));
        (nic, wire)
    }
}

/// NDIS_STATUS_REQUEST_ABORTED.
const NDIS_STATUS_REQUEST_ABORTED: u32 = 0xC001_000C;
/// The lookahead the tests' protocol asks for (OID_GEN_CURRENT_LOOKAHEAD).
const LOOKAHEAD: u32 = 128;
/// OID_GEN_MAC_OPTIONS and its NDIS_MAC_OPTION_TRANSFERS_NOT_PEND bit.
const OID_GEN_MAC_OPTIONS: u32 = 0x0001_0113;
const MAC_OPTION_TRANSFERS_NOT_PEND: u32 = 0x04;
/// Payload lengths of the test frames: the shortest and the longest Ethernet frame, and around
/// the lookahead.
const LENGTHS: [usize; 12] = [46, 47, 100, 127, 128, 129, 200, 511, 1000, 1498, 1499, 1500];

/// Sets the protocol's lookahead.
fn set_lookahead(nic: &mut NetAdapter, what: &str) {
    let r = nic
        .set(
            ndis::miniport::OID_GEN_CURRENT_LOOKAHEAD,
            &LOOKAHEAD.to_le_bytes(),
        )
        .unwrap();
    assert_eq!(r.status, ndis::NDIS_STATUS_SUCCESS, "{what}");
    assert_eq!(r.bytes_read, 4, "{what}");
}

fn one_configuration_moves_frames_both_ways(arch: Arch, paths: Paths) {
    let what = format!("{} {paths:?}", arch.name());
    let (mut nic, wire) = paths.start(arch);
    set_lookahead(&mut nic, &what);
    let info = nic.info().unwrap();
    assert_eq!(info.current_address, MAC, "{what}");
    assert!(info.link_up, "{what}");
    assert_eq!(info.link_speed, 100_000_000, "{what}");
    assert_eq!(info.mtu, 1500, "{what}");
    let r = nic
        .query(ndis::miniport::OID_GEN_CURRENT_LOOKAHEAD, 4)
        .unwrap();
    assert_eq!(r.data, LOOKAHEAD.to_le_bytes(), "{what}");
    let options = nic.query(OID_GEN_MAC_OPTIONS, 4).unwrap().data;
    let options = u32::from_le_bytes(options.try_into().unwrap());
    assert_eq!(
        options & MAC_OPTION_TRANSFERS_NOT_PEND != 0,
        paths.rx != Rx::LookaheadPended,
        "{what}: {options:#x}"
    );

    let n = LENGTHS.len() as u32;
    let sent: Vec<Vec<u8>> = LENGTHS
        .iter()
        .enumerate()
        .map(|(i, &len)| frame(PEER, MAC, len, 0x10 + i as u8))
        .collect();
    let out = send_all(&mut nic, &wire, &sent);
    assert_sent(arch, &out, &sent);
    let incoming: Vec<Vec<u8>> = LENGTHS
        .iter()
        .enumerate()
        .map(|(i, &len)| frame(MAC, PEER, len, 0x80 + i as u8))
        .collect();
    let mut got = Vec::new();
    for chunk in incoming.chunks(5) {
        for f in chunk {
            wire.inject(f);
        }
        got.extend(received(&service(&mut nic)));
    }
    assert_eq!(got, incoming, "{what}: intact and in order");

    let stats = nic.stats();
    assert_eq!(
        (stats.sends_ok, stats.sends_failed, stats.receives),
        (u64::from(n), 0, u64::from(n)),
        "{what}: {stats:?}"
    );
    let d = rtl_diag(&mut nic);
    let expected = (
        u32::from(paths.deserialize),
        paths.rx as u32,
        u32::from(paths.pend_oids),
    );
    assert_eq!(
        (d.deserialized, d.receive_indication, d.pend_oids),
        expected,
        "{what}"
    );
    let long = LENGTHS.iter().filter(|&&l| l > LOOKAHEAD as usize).count() as u32;
    let (indications, short, at_once, pended) = match paths.rx {
        Rx::Packets => (0, 0, 0, 0),
        Rx::Lookahead => (n, long, long, 0),
        Rx::LookaheadPended => (n, long, 0, long),
    };
    assert_eq!(
        (
            d.lookahead_indications,
            d.short_lookaheads,
            d.transfers,
            d.transfers_pended
        ),
        (indications, short, at_once, pended),
        "{what}: {d:?}"
    );
    // Pended: the packet filter set at start, the lookahead set, and info()'s link state and
    // speed queries.
    assert_eq!(d.oids_pended, if paths.pend_oids { 4 } else { 0 }, "{what}");
    if paths.deserialize {
        assert_eq!(d.sends_refused, 0, "{what}");
    } else {
        assert_eq!(d.sends_waited, 0, "{what}");
    }
    let info = nic.info().unwrap();
    assert_eq!((info.xmit_ok, info.rcv_ok), (u64::from(n), u64::from(n)));
    let findings = nic.stop().unwrap();
    assert!(findings.is_empty(), "{what}: {findings:?}");
}

#[test]
fn every_configuration_moves_frames_intact_both_ways_serialized() {
    for arch in ARCHES {
        for paths in Paths::all().into_iter().filter(|p| !p.deserialize) {
            one_configuration_moves_frames_both_ways(arch, paths);
        }
    }
}

#[test]
fn every_configuration_moves_frames_intact_both_ways_deserialized() {
    for arch in ARCHES {
        for paths in Paths::all().into_iter().filter(|p| p.deserialize) {
            one_configuration_moves_frames_both_ways(arch, paths);
        }
    }
}

#[test]
fn more_sends_than_descriptors_wait_in_the_deserialized_miniport_or_come_back_to_ndis() {
    for arch in ARCHES {
        for deserialize in [false, true] {
            let paths = Paths {
                deserialize,
                rx: Rx::Packets,
                pend_oids: false,
            };
            let what = format!("{} {paths:?}", arch.name());
            let (mut nic, wire) = paths.start(arch);
            let sent: Vec<Vec<u8>> = (0..40)
                .map(|i| frame(PEER, MAC, 46 + 37 * i, i as u8))
                .collect();
            // One call: MiniportSendPackets gets 16, 16 and 8 packets; the chip has 4 descriptors.
            let mut queue: VecDeque<Vec<u8>> = sent.iter().cloned().collect();
            nic.send(&mut queue).unwrap();
            let stats = nic.stats();
            if deserialize {
                assert!(queue.is_empty(), "{what}: the miniport took them all");
                assert_eq!(stats.sends_requeued, 0, "{what}");
            } else {
                assert_eq!(queue.len(), 36, "{what}: 12 handed back, 24 not sent yet");
                assert_eq!(stats.sends_requeued, 12, "{what}");
            }
            let out = drain_sends(&mut nic, &wire, &mut queue, sent.len());
            assert_sent(arch, &out, &sent);
            let stats = nic.stats();
            assert_eq!(
                (stats.sends_ok, stats.sends_failed),
                (40, 0),
                "{what}: {stats:?}"
            );
            let d = rtl_diag(&mut nic);
            if deserialize {
                // Four went out at once; the others waited and left from the interrupt DPC.
                assert_eq!((d.sends_waited, d.sends_refused), (36, 0), "{what}");
            } else {
                assert_eq!(d.sends_waited, 0, "{what}");
                assert_eq!(u64::from(d.sends_refused), stats.sends_requeued, "{what}");
            }
            assert_eq!(nic.info().unwrap().xmit_ok, 40, "{what}");
            // Completed exactly once each: no stray completion, none outstanding.
            let findings = nic.stop().unwrap();
            assert!(findings.is_empty(), "{what}: {findings:?}");
        }
    }
}

/// Leaves the deserialized, pended-transfer miniport holding a received frame whose transfer is
/// pended (its interrupt and DPC ran, the transfer timer did not) and 12 sends, 4 on the chip
/// (not yet transmitted) and 8 in its queue.
fn hold_a_transfer_and_sends(nic: &mut NetAdapter, wire: &PortHandle, what: &str) {
    wire.inject(&frame(MAC, PEER, 1000, 7));
    let mut delivered = false;
    for _ in 0..4 {
        for line in nic.host.poll_pci() {
            delivered |= ndis::interrupt::deliver(&mut nic.host.k, line).unwrap();
        }
    }
    assert!(delivered, "{what}");
    assert!(
        ndis::miniport::take_events(&mut nic.host.k, nic.adapter).is_empty(),
        "{what}: the frame waits for its transfer"
    );
    assert_eq!(rtl_diag(nic).transfers_pended, 1, "{what}");
    let mut queue: VecDeque<Vec<u8>> = (0..12).map(|i| frame(PEER, MAC, 300, i as u8)).collect();
    nic.send(&mut queue).unwrap();
    assert!(queue.is_empty(), "{what}");
}

#[test]
fn reset_aborts_what_the_deserialized_miniport_holds_and_traffic_resumes() {
    for arch in ARCHES {
        let paths = Paths {
            deserialize: true,
            rx: Rx::LookaheadPended,
            pend_oids: false,
        };
        let what = format!("{} {paths:?}", arch.name());
        let (mut nic, wire) = paths.start(arch);
        set_lookahead(&mut nic, &what);
        hold_a_transfer_and_sends(&mut nic, &wire, &what);
        let status = ndis::miniport::reset(&mut nic.host.k, nic.adapter).unwrap();
        assert_eq!(status, ndis::NDIS_STATUS_SUCCESS, "{what}");
        // Every send completed once, aborted; the pended transfer failed, its frame dropped.
        let stats = nic.stats();
        assert_eq!(
            (stats.sends_ok, stats.sends_failed, stats.last_send_failure),
            (0, 12, Some(NDIS_STATUS_REQUEST_ABORTED)),
            "{what}: {stats:?}"
        );
        assert_eq!(stats.receives, 0, "{what}");
        assert!(received(&service(&mut nic)).is_empty(), "{what}");
        assert!(wire.take_sent().is_none(), "{what}: the chip sent nothing");
        let sent: Vec<Vec<u8>> = (0..6)
            .map(|i| frame(PEER, MAC, 46 + 290 * i, 0x20 + i as u8))
            .collect();
        let out = send_all(&mut nic, &wire, &sent);
        assert_sent(arch, &out, &sent);
        let incoming: Vec<Vec<u8>> = (0..6)
            .map(|i| frame(MAC, PEER, 1500 - 290 * i, 0x30 + i as u8))
            .collect();
        for f in &incoming {
            wire.inject(f);
        }
        assert_eq!(received(&service(&mut nic)), incoming, "{what}");
        let findings = nic.stop().unwrap();
        assert!(findings.is_empty(), "{what}: {findings:?}");
    }
}

#[test]
fn halt_completes_what_the_deserialized_miniport_still_holds() {
    for arch in ARCHES {
        let paths = Paths {
            deserialize: true,
            rx: Rx::LookaheadPended,
            pend_oids: true,
        };
        let what = format!("{} {paths:?}", arch.name());
        let (mut nic, wire) = paths.start(arch);
        set_lookahead(&mut nic, &what);
        // A frame whose transfer is pended, sends on the chip and in the driver's queue, and a
        // pended query.
        hold_a_transfer_and_sends(&mut nic, &wire, &what);
        let r = ndis::miniport::query(&mut nic.host.k, nic.adapter, oid::GEN_LINK_SPEED, 4);
        assert!(r.unwrap().is_none(), "{what}: the query pends");
        // Halt fails them all: no send, transfer or request is left without its completion.
        let findings = nic.stop().unwrap();
        assert!(findings.is_empty(), "{what}: {findings:?}");
    }
}

#[test]
fn traffic_flows_while_an_oid_request_is_pended() {
    for arch in ARCHES {
        for deserialize in [false, true] {
            let paths = Paths {
                deserialize,
                rx: if deserialize {
                    Rx::LookaheadPended
                } else {
                    Rx::Lookahead
                },
                pend_oids: true,
            };
            let what = format!("{} {paths:?}", arch.name());
            let (mut nic, wire) = paths.start(arch);
            set_lookahead(&mut nic, &what);
            let r = ndis::miniport::query(&mut nic.host.k, nic.adapter, oid::GEN_LINK_SPEED, 4);
            assert!(r.unwrap().is_none(), "{what}: the query pends");
            let sent: Vec<Vec<u8>> = (0..6)
                .map(|i| frame(PEER, MAC, 100 + 250 * i, i as u8))
                .collect();
            let out = send_all(&mut nic, &wire, &sent);
            assert_sent(arch, &out, &sent);
            let incoming: Vec<Vec<u8>> = (0..6)
                .map(|i| frame(MAC, PEER, 1400 - 250 * i, 0x40 + i as u8))
                .collect();
            for f in &incoming {
                wire.inject(f);
            }
            let mut got = received(&service(&mut nic));
            let done = loop {
                if let Some(r) = ndis::miniport::completed_request(&mut nic.host.k, nic.adapter) {
                    break r;
                }
                std::thread::sleep(std::time::Duration::from_millis(1));
                got.extend(received(&service(&mut nic)));
            };
            assert_eq!(got, incoming, "{what}");
            assert_eq!(done.status, ndis::NDIS_STATUS_SUCCESS, "{what}");
            assert_eq!(done.data, 1_000_000u32.to_le_bytes(), "{what}: 100 Mbit/s");

            // Frames that arrive while the host waits for a pended answer are not lost: the next
            // service hands them out.
            let more: Vec<Vec<u8>> = (0..3)
                .map(|i| frame(MAC, PEER, 700, 0x60 + i as u8))
                .collect();
            for f in &more {
                wire.inject(f);
            }
            let r = nic.query(oid::GEN_LINK_SPEED, 4).unwrap();
            assert_eq!(r.data, 1_000_000u32.to_le_bytes(), "{what}");
            assert_eq!(received(&service(&mut nic)), more, "{what}");
            let findings = nic.stop().unwrap();
            assert!(findings.is_empty(), "{what}: {findings:?}");
        }
    }
}

/// One load / initialize / one frame each way / halt / unload cycle on a device already on the
/// bus.
fn reload_cycle(h: &mut loader::DriverHost, arch: Arch, res: &PciResources, wire: &PortHandle) {
    let (driver, a) = load_and_initialize(h, arch, DRIVER, res, None);
    let a = a.expect("MiniportInitialize");
    one_frame_each_way_then_unload(h, &driver, a, wire);
}

#[test]
fn unloading_and_reloading_100_times_leaks_nothing() {
    for arch in ARCHES {
        let mut h = host(arch);
        let (port, wire) = QueuePort::new();
        let res = h.attach_pci_device(Box::new(Rtl8139::new(MAC, Box::new(port))));
        // Port I/O and memory-mapped registers in turn (IoMode in the Parameters key).
        let params = format!(r"{}\Parameters", registry::service_path(DRIVER));
        registry::backend(&mut h.k)
            .create_key_path(&params)
            .unwrap();
        let set_mode = |h: &mut loader::DriverHost, mode: usize| {
            let v = RegValue::sz(&mode.to_string());
            registry::backend(&mut h.k)
                .set_value(&params, "IoMode", &v)
                .unwrap();
        };
        for mode in [0, 1] {
            set_mode(&mut h, mode);
            reload_cycle(&mut h, arch, &res, &wire);
        }
        let baseline = pool_by_tag(&h.k);
        let mapped = h.k.images.len();
        for i in 0..100 {
            set_mode(&mut h, i % 2);
            reload_cycle(&mut h, arch, &res, &wire);
        }
        assert_eq!(pool_by_tag(&h.k), baseline, "{}", arch.name());
        assert_eq!(h.k.images.len(), mapped, "{}: images unmapped", arch.name());
        assert_eq!(h.k.pool.bytes_owned_by("rtl8139_ndis5.sys"), 0);
    }
}

/// A PCI function with a 16-port I/O BAR: too small for the RTL8139 miniport, which fails
/// MiniportInitialize with NDIS_STATUS_RESOURCE_CONFLICT.
struct TinyDevice(ConfigSpace);

impl PciDevice for TinyDevice {
    fn config_read(&mut self, offset: u16, size: u8) -> u32 {
        self.0.read(offset, size)
    }
    fn config_write(&mut self, offset: u16, size: u8, value: u32) {
        self.0.write(offset, size, value)
    }
    fn bars(&self) -> Vec<Bar> {
        self.0.bars()
    }
    fn bar_read(&mut self, _bar: usize, _offset: u64, _size: u8) -> u64 {
        0
    }
    fn bar_write(&mut self, _bar: usize, _offset: u64, _size: u8, _value: u64) {}
    fn interrupt_pending(&self) -> bool {
        false
    }
    fn poll(&mut self, _dma: &mut dyn Dma) {}
}

#[test]
fn failing_initialize_is_a_clean_error_and_nothing_is_left_behind() {
    for arch in ARCHES {
        let mut config = ConfigSpace::new(ConfigHeader {
            vendor: 0x10EC,
            device: 0x8139,
            class: 0x02_00_00,
            revision: 0,
            subsystem_vendor: 0,
            subsystem: 0,
            interrupt_pin: 1,
        });
        config.add_bar(Bar {
            index: 0,
            kind: BarKind::Io,
            size: 16,
        });
        let err = match NetAdapter::start(
            host(arch),
            &driver_path(arch, "rtl8139_ndis5"),
            Box::new(TinyDevice(config)),
            None,
            Vec::new(),
        ) {
            Ok(_) => panic!("{}: initialize must fail", arch.name()),
            Err(e) => e.to_string(),
        };
        assert!(err.contains("MiniportInitialize failed"), "{err}");
        assert!(err.contains("C001001E"), "names the status: {err}");
        // The process is fine: a real adapter starts right after.
        let (nic, _wire) = start(arch);
        assert!(nic.stop().unwrap().is_empty());
    }
}

/// The firmware file rtl8139_ndis5.inf ships (beside the driver, in system32\drivers).
const FIRMWARE: &str = "rtl8139fw.bin";

fn firmware() -> Vec<u8> {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("drivers/firmware/rtl8139fw.bin");
    std::fs::read(path).expect("tests/drivers/firmware/rtl8139fw.bin")
}

/// FNV-1a, the driver's firmware checksum.
fn fnv1a(data: &[u8]) -> u32 {
    data.iter().fold(2_166_136_261u32, |h, &b| {
        (h ^ u32::from(b)).wrapping_mul(16_777_619)
    })
}

/// A driver host whose rtl8139_ndis5 Parameters key names `Firmware` = `name`.
fn host_with_firmware_parameter(arch: Arch, name: &str) -> (loader::DriverHost, String) {
    let mut h = host(arch);
    let params = format!(r"{}\Parameters", registry::service_path(DRIVER));
    let reg = registry::backend(&mut h.k);
    reg.create_key_path(&params).unwrap();
    reg.set_value(&params, "Firmware", &RegValue::sz(name))
        .unwrap();
    (h, params)
}

#[test]
fn firmware_is_loaded_from_system32_drivers_and_its_checksum_written_back() {
    let fw = firmware();
    for arch in ARCHES {
        let (mut h, params) = host_with_firmware_parameter(arch, FIRMWARE);
        let path = format!("{}{}", ndis::file::FILE_DIRECTORY, FIRMWARE.to_uppercase());
        ndis::file::provide_file(&mut h.k, &path, fw.clone());
        let (mut nic, _wire, _) = start_rtl8139_in(h, arch, DRIVER, None);
        let d = rtl_diag(&mut nic);
        assert_eq!(
            (d.firmware_length, d.firmware_checksum),
            (fw.len() as u32, fnv1a(&fw)),
            "{}",
            arch.name()
        );
        // NdisWriteConfiguration wrote both into the key the driver read (REG_DWORD).
        let reg = registry::backend(&mut nic.host.k);
        let value = |name: &str| {
            reg.query_value(&params, name)
                .unwrap()
                .and_then(|(_, v)| v.as_dword())
        };
        assert_eq!(value("FirmwareLength"), Some(fw.len() as u32));
        assert_eq!(value("FirmwareChecksum"), Some(fnv1a(&fw)));
        // The file is closed, its pool freed, once MiniportInitialize is done.
        assert!(nic
            .host
            .k
            .extension::<ndis::NdisState>()
            .files
            .open
            .is_empty());
        // What else Initialize learned from NDIS.
        assert_eq!(d.pci_id, 0x8139_10EC, "{}", arch.name());
        assert_eq!(
            d.ndis_version, 0x0005_0001,
            "NdisGetRoutineAddress(NdisGetVersion)"
        );
        assert!(d.instance_name_length > 0, "{}", arch.name());
        // The NDIS 5 work item runs at PASSIVE_LEVEL once the host services the adapter.
        service(&mut nic);
        let d = rtl_diag(&mut nic);
        assert_eq!(d.work_items_run, 1, "{}", arch.name());
        // So does NdisMAllocateSharedMemoryAsync's MiniportAllocateComplete.
        assert_eq!(d.async_shared_length, 256, "{}", arch.name());
        assert!(ndis::miniport::error_log(&mut nic.host.k).is_empty());
        let findings = nic.stop().expect("halt");
        assert!(findings.is_empty(), "{}: {findings:?}", arch.name());
    }
}

#[test]
fn a_missing_firmware_file_fails_initialize_with_file_not_found_and_an_error_log_entry() {
    for arch in ARCHES {
        let (mut h, params) = host_with_firmware_parameter(arch, "missing.bin");
        // Another file is there; only the one asked for counts.
        ndis::file::provide_file(
            &mut h.k,
            &format!("{}{FIRMWARE}", ndis::file::FILE_DIRECTORY),
            firmware(),
        );
        let (port, _wire) = QueuePort::new();
        let res = h.attach_pci_device(Box::new(Rtl8139::new(MAC, Box::new(port))));
        let (driver, a) = load_and_initialize(&mut h, arch, DRIVER, &res, None);
        assert_eq!(
            a,
            Err(ndis::file::NDIS_STATUS_FILE_NOT_FOUND),
            "{}",
            arch.name()
        );
        let log = ndis::miniport::error_log(&mut h.k);
        assert_eq!(log.len(), 1, "{log:?}");
        assert_eq!(log[0].driver, "rtl8139_ndis5.sys");
        // NDIS_ERROR_CODE_DRIVER_FAILURE with the driver's two values: where, and the status.
        assert_eq!(log[0].code, 0xC000_138D);
        assert_eq!(
            log[0].values,
            [0x4657_0001, ndis::file::NDIS_STATUS_FILE_NOT_FOUND]
        );
        let written = registry::backend(&mut h.k).query_value(&params, "FirmwareChecksum");
        assert!(written.unwrap().is_none());
        h.unload_driver(&driver).unwrap();
        assert_eq!(
            h.k.pool.bytes_owned_by("rtl8139_ndis5.sys"),
            0,
            "{}",
            arch.name()
        );
    }
}

/// CTL_CODE(FILE_DEVICE_NETWORK, 0x800, METHOD_BUFFERED, FILE_ANY_ACCESS): rtl8139_ndis5's diag
/// through its control device.
const IOCTL_ICA_RTL_DIAG: u32 = 0x0012_2000;

#[test]
fn the_control_device_answers_an_ioctl_through_its_link_and_name() {
    for arch in ARCHES {
        let (mut nic, _wire) = start(arch);
        let oid = rtl_diag(&mut nic);
        let h = &mut nic.host;
        let handle = h
            .open(r"\\.\IcaRtl8139")
            .unwrap()
            .expect("open by its link");
        let r = h.ioctl(handle, IOCTL_ICA_RTL_DIAG, &[], &[0; 128]).unwrap();
        assert_eq!(r.status, 0, "{}", arch.name());
        assert_eq!(r.output.len(), 96, "{}", arch.name());
        let pci_id = u32::from_le_bytes(r.output[76..80].try_into().unwrap());
        assert_eq!(pci_id, oid.pci_id, "the same diag as the OID's");
        // A short buffer and an unknown code are the driver's answers; a major function it
        // gave no routine is the I/O manager's.
        let short = h.ioctl(handle, IOCTL_ICA_RTL_DIAG, &[], &[0; 8]).unwrap();
        assert_eq!(short.status, 0xC000_0023, "STATUS_BUFFER_TOO_SMALL");
        let unknown = h
            .ioctl(handle, IOCTL_ICA_RTL_DIAG + 4, &[], &[0; 8])
            .unwrap();
        assert_eq!(unknown.status, 0xC000_0010, "STATUS_INVALID_DEVICE_REQUEST");
        let read = h.read(handle, 16).unwrap();
        assert_eq!(read.status, 0xC000_0010, "no IRP_MJ_READ routine");
        assert_eq!(h.close(handle).unwrap(), 0);
        assert!(
            h.open(r"\Device\IcaRtl8139").unwrap().is_ok(),
            "by its name"
        );
        assert!(nic.stop().unwrap().is_empty(), "{}", arch.name());
    }
}

/// rtl8139_ndis5's private set that makes it call NdisMRemoveMiniport.
const OID_ICA_RTL_REMOVE: u32 = 0xFF81_3902;

#[test]
fn a_miniport_that_removes_its_adapter_is_reported_and_halted_cleanly() {
    for arch in ARCHES {
        let (mut nic, _wire) = start(arch);
        let r = nic.set(OID_ICA_RTL_REMOVE, &[0; 4]).unwrap();
        assert_eq!(r.status, ndis::NDIS_STATUS_SUCCESS, "{}", arch.name());
        let mut events = Vec::new();
        let err = NetMiniport::service(&mut nic, &mut events).unwrap_err();
        assert!(
            err.message.contains("NdisMRemoveMiniport"),
            "{}",
            err.message
        );
        // The caller removes it: Halt, unload, nothing left behind.
        let findings = nic.stop().expect("halt");
        assert!(findings.is_empty(), "{}: {findings:?}", arch.name());
    }
}
