//! rtl8139_ndis5.sys (NDIS 5.1, serialized) drives the RTL8139 model through the whole NDIS 5
//! path, on x86-32 and x64: MiniportInitialize with bus resources, port I/O, shared memory and an
//! interrupt; sends through MiniportSendPackets and NdisMSendComplete; receives through the ISR,
//! MiniportHandleInterrupt, NdisMIndicateReceivePacket and MiniportReturnPacket; OID queries and
//! sets; Halt and unload with nothing leaked.

use std::collections::VecDeque;

use dbt::Arch;
use host_linux::net::{NetEvent, NetMiniport};
use host_linux::packet::{PortHandle, QueuePort};
use host_linux::rtl8139::{Cable, Rtl8139};
use ica_tests::{driver_path, host, ARCHES};
use loader::net::{oid, NetAdapter};

const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
const PEER: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x00, 0x01];

fn start(arch: Arch) -> (NetAdapter, PortHandle) {
    let (nic, wire, _) = start_with_cable(arch);
    (nic, wire)
}

fn start_with_cable(arch: Arch) -> (NetAdapter, PortHandle, Cable) {
    let (port, wire) = QueuePort::new();
    let dev = Box::new(Rtl8139::new(MAC, Box::new(port)));
    let cable = dev.cable();
    let nic = NetAdapter::start(
        host(arch),
        &driver_path(arch, "rtl8139_ndis5"),
        dev,
        None,
        Vec::new(),
    )
    .unwrap_or_else(|e| panic!("{}: {e}", arch.name()));
    (nic, wire, cable)
}

/// An Ethernet frame from `src` to `dst` with `len` payload bytes derived from `seed`.
fn frame(dst: [u8; 6], src: [u8; 6], len: usize, seed: u8) -> Vec<u8> {
    let mut f = dst.to_vec();
    f.extend_from_slice(&src);
    f.extend_from_slice(&[0x88, 0xB5]); // local experimental ethertype
    f.extend((0..len).map(|i| (i as u8).wrapping_mul(31) ^ seed));
    f
}

fn service(nic: &mut NetAdapter) -> Vec<NetEvent> {
    let mut events = Vec::new();
    for _ in 0..8 {
        nic.service(&mut events).expect("service");
    }
    events
}

fn received(events: &[NetEvent]) -> Vec<Vec<u8>> {
    events
        .iter()
        .filter_map(|e| match e {
            NetEvent::Receive(f) => Some(f.clone()),
            _ => None,
        })
        .collect()
}

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
        let mut queue: VecDeque<Vec<u8>> = (0..10)
            .map(|i| frame(PEER, MAC, 40 + 137 * i, i as u8))
            .collect();
        let sent: Vec<Vec<u8>> = queue.iter().cloned().collect();
        let mut out = Vec::new();
        for _ in 0..100 {
            nic.send(&mut queue).expect("send");
            service(&mut nic);
            while let Some(f) = wire.take_sent() {
                out.push(f);
            }
            if queue.is_empty() && out.len() == sent.len() {
                break;
            }
        }
        assert_eq!(out.len(), sent.len(), "{}", arch.name());
        for (o, s) in out.iter().zip(&sent) {
            // The miniport pads short frames to the 60-byte minimum.
            assert_eq!(&o[..s.len()], &s[..], "{}", arch.name());
            assert!(o.len() == s.len() || (s.len() < 60 && o.len() == 60));
        }
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
        let (mut nic, wire, cable) = start_with_cable(arch);
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
