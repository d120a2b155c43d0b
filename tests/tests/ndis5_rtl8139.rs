//! rtl8139_ndis5.sys (NDIS 5.1, serialized) drives the RTL8139 model through the whole NDIS 5
//! path, on x86-32 and x64: MiniportInitialize with bus resources, port I/O, shared memory and an
//! interrupt; sends through MiniportSendPackets and NdisMSendComplete; receives through the ISR,
//! MiniportHandleInterrupt, NdisMIndicateReceivePacket and MiniportReturnPacket; OID queries and
//! sets; link changes; Halt and unload with nothing leaked, 100 times over; a failing
//! MiniportInitialize.

use std::collections::VecDeque;

use dbt::Arch;
use host_linux::bus::PciResources;
use host_linux::device::{Bar, BarKind, ConfigHeader, ConfigSpace, Dma, PciDevice};
use host_linux::net::{NetEvent, NetMiniport};
use host_linux::packet::{PortHandle, QueuePort};
use host_linux::rtl8139::Rtl8139;
use ica_tests::nic::{
    assert_sent, frame, load_and_initialize, one_frame_each_way_then_unload, pool_by_tag, received,
    send_all, service, start_rtl8139, MAC, PEER,
};
use ica_tests::{driver_path, host, ARCHES};
use loader::net::{oid, NetAdapter};

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
        let sent: Vec<Vec<u8>> = (0..10)
            .map(|i| frame(PEER, MAC, 40 + 137 * i, i as u8))
            .collect();
        let out = send_all(&mut nic, &wire, &sent);
        assert_sent(arch, &out, &sent);
        let stats = nic.stats();
        assert_eq!(stats.sends_ok, 10, "{}: {stats:?}", arch.name());
        assert_eq!(stats.sends_failed, 0);
        let info = nic.info().unwrap();
        assert_eq!(info.xmit_ok, 10, "{}", arch.name());
        assert!(nic.stop().unwrap().is_empty());
    }
}

#[test]
fn frames_come_in_through_interrupts_and_indications() {
    for arch in ARCHES {
        let (mut nic, wire) = start(arch);
        // More frames than the miniport has receive packets (16): returns must recycle them.
        let frames: Vec<Vec<u8>> = (0..40)
            .map(|i| frame(MAC, PEER, 46 + 35 * i, 0x40 + i as u8))
            .collect();
        let mut got = Vec::new();
        for chunk in frames.chunks(5) {
            for f in chunk {
                wire.inject(f);
            }
            got.extend(received(&service(&mut nic)));
        }
        assert_eq!(got.len(), frames.len(), "{}", arch.name());
        assert_eq!(got, frames, "{}", arch.name());
        // Broadcast passes the default filter; a frame for another station does not.
        wire.inject(&frame([0xFF; 6], PEER, 50, 1));
        wire.inject(&frame([0x02, 9, 9, 9, 9, 9], PEER, 50, 2));
        let got = received(&service(&mut nic));
        assert_eq!(got.len(), 1, "{}", arch.name());
        assert_eq!(got[0][..6], [0xFF; 6]);
        let stats = nic.stats();
        assert_eq!(stats.receives, 41, "{}", arch.name());
        assert!(stats.returns >= 30, "{}: {stats:?}", arch.name());
        assert!(stats.interrupts > 0);
        assert_eq!(nic.info().unwrap().rcv_ok, 41);
        assert!(nic.stop().unwrap().is_empty());
    }
}

#[test]
fn unsupported_oid_and_short_buffers_are_clean_errors() {
    for arch in ARCHES {
        let (mut nic, _wire) = start(arch);
        let r = nic.query(0x00FF_FFFF, 64).unwrap();
        assert_eq!(r.status, ndis::miniport::NDIS_STATUS_NOT_SUPPORTED);
        let r = nic.query(oid::P802_3_CURRENT_ADDRESS, 2).unwrap();
        assert_eq!(r.status, ndis::miniport::NDIS_STATUS_BUFFER_TOO_SHORT);
        assert_eq!(r.bytes_needed, 6);
        let r = nic.set(oid::GEN_CURRENT_PACKET_FILTER, &[1]).unwrap();
        assert_eq!(r.status, ndis::miniport::NDIS_STATUS_INVALID_LENGTH);
        // A multicast list is accepted and read back.
        let list = [0x01, 0x00, 0x5E, 0x00, 0x00, 0xFB];
        let r = nic.set(oid::P802_3_MULTICAST_LIST, &list).unwrap();
        assert_eq!(r.status, ndis::NDIS_STATUS_SUCCESS);
        assert_eq!(r.bytes_read, 6);
        let r = nic.query(oid::P802_3_MULTICAST_LIST, 64).unwrap();
        assert_eq!(r.data, list);
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
        reload_cycle(&mut h, arch, &res, &wire);
        let baseline = pool_by_tag(&h.k);
        let mapped = h.k.images.len();
        for _ in 0..100 {
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
