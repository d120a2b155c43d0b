//! End to end through a real NDIS miniport binary: Linux in namespace A talks through the TAP
//! "ica-up" (the adapter as Linux sees it) -> the bridge -> MiniportSendPackets (NDIS 5.1) or
//! MiniportSendNetBufferLists (NDIS 6) -> the RTL8139
//! model -> its wire, the TAP "ica-wire" in namespace B; replies come back through DMA, the
//! interrupt, the DPC and the receive indication. ARP, ICMP echo and a verified 10 MB TCP
//! transfer, then a cable pull and replug that must reach the interface's carrier, for the x86-32
//! and the x64 build of the driver; the NDIS 5.1 one also deserialized, with lookahead receives
//! whose MiniportTransferData pends and pended OID requests. Needs root (network namespaces and
//! TAPs); skips with the reason otherwise.

use std::net::SocketAddrV4;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use dbt::Arch;
use host_linux::net::Bridge;
use host_linux::rtl8139::Rtl8139;
use ica_tests::netns::{self, tcp_transfer, E2e, E2eConfig, B_ADDR, TCP_PORT, UP_TAP};
use ica_tests::nic::{adapter_key, rtl_diag};
use ica_tests::{driver_path, host, ARCHES};
use loader::net::NetAdapter;

const MAC: [u8; 6] = [0x02, 0x1C, 0xA0, 0x00, 0x81, 0x39];
const TCP_BYTES: u64 = 10 << 20;
/// rtl8139_ndis5.sys deserialized, with NdisMEthIndicateReceive whose MiniportTransferData
/// pends, and pended OID requests.
const NDIS5_DESERIALIZED_LOOKAHEAD: &[(&str, &str)] = &[
    ("Deserialize", "1"),
    ("ReceiveIndication", "2"),
    ("PendOids", "1"),
];
/// The lookahead set for it: less than an ICMP echo or a TCP segment, so that those arrive
/// through MiniportTransferData.
const LOOKAHEAD: u32 = 32;

/// The run through `driver`, configured by `params` in its adapter key (none: its defaults).
fn ping_and_tcp(arch: Arch, driver: &str, params: &[(&str, &str)]) {
    let mut name = format!("{driver} {}", arch.name());
    for (param, value) in params {
        name += &format!(" {param}={value}");
    }
    let E2e { up, wire, a, b } = E2e::new(&E2eConfig {
        nic_mac: MAC,
        mtu: 1500,
        link_up: true,
    })
    .unwrap_or_else(|e| panic!("{name}: {e}"));
    let wake = vec![wire.as_raw_fd()];
    let dev = Box::new(Rtl8139::new(MAC, Box::new(wire)));
    let cable = dev.cable();
    let mut h = host(arch);
    let key = (!params.is_empty()).then(|| adapter_key(&mut h, params, &[]));
    let mut nic = NetAdapter::start(h, &driver_path(arch, driver), dev, key.as_deref(), wake)
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    if !params.is_empty() {
        let lookahead = LOOKAHEAD.to_le_bytes();
        let r = nic
            .set(ndis::miniport::OID_GEN_CURRENT_LOOKAHEAD, &lookahead)
            .unwrap();
        assert_eq!(r.status, ndis::NDIS_STATUS_SUCCESS, "{name}");
    }
    let info = nic.info().unwrap();
    assert_eq!(info.current_address, MAC, "{name}");
    assert!(info.link_up, "{name}");
    let mut bridge = Bridge::new(nic, up);

    // ARP resolution and ICMP echo: every echo crosses the send path, every reply the receive
    // path.
    let ping = a.ping(B_ADDR, 5, Duration::from_secs(2));
    assert!(
        bridge
            .run_until(Duration::from_secs(15), |_| ping.is_finished())
            .unwrap(),
        "{name}: ping did not finish"
    );
    let report = ping.join().unwrap();
    assert_eq!(report.received, 5, "{name}: {report:?}");
    assert_eq!(report.duplicates, 0, "{name}");

    // 10 MB of TCP, verified byte for byte on the far side.
    let started = Instant::now();
    let job = tcp_transfer(
        &b,
        SocketAddrV4::new(B_ADDR, TCP_PORT),
        &a,
        TCP_BYTES,
        Duration::from_secs(120),
    );
    assert!(
        bridge
            .run_until(Duration::from_secs(125), |_| job.is_finished())
            .unwrap(),
        "{name}: TCP transfer did not finish"
    );
    let t = job.join().unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(t.bytes, TCP_BYTES, "{name}");
    let elapsed = started.elapsed();
    let stats = bridge.stats();
    eprintln!(
        "{name}: 10 MB over TCP in {elapsed:.2?} ({:.1} Mbit/s); bridge {} frames down, {} up",
        TCP_BYTES as f64 * 8.0 / elapsed.as_secs_f64() / 1e6,
        stats.frames_down,
        stats.frames_up
    );
    // Pulling the cable reaches the Linux interface's carrier through the driver's
    // NDIS_STATUS_MEDIA_DISCONNECT (NDIS 6: NDIS_STATUS_LINK_STATE), and replugging brings it back.
    for connected in [false, true] {
        cable.plug(connected);
        let seen = bridge
            .run_until(Duration::from_secs(5), |_| {
                a.carrier(UP_TAP).ok() == Some(connected)
            })
            .unwrap();
        assert!(seen, "{name}: carrier did not become {connected}");
    }
    let (mut nic, _up, _) = bridge.into_parts();
    let info = nic.info().unwrap();
    assert!(info.xmit_ok >= 7000, "{name}: {info:?}");
    assert!(info.rcv_ok >= 100, "{name}: {info:?}");
    if !params.is_empty() {
        let d = rtl_diag(&mut nic);
        assert!(d.transfers_pended >= 100, "{name}: {d:?}");
        assert!(d.oids_pended >= 4, "{name}: {d:?}");
    }
    let findings = nic.stop().unwrap();
    assert!(findings.is_empty(), "{name}: {findings:?}");
    drop((a, b));
}

#[test]
fn arp_icmp_and_10mb_tcp_through_the_ndis5_miniport() {
    if let Some(why) = netns::skip_reason() {
        eprintln!("skipping: {why}");
        return;
    }
    for arch in ARCHES {
        ping_and_tcp(arch, "rtl8139_ndis5", &[]);
    }
}

#[test]
fn arp_icmp_and_10mb_tcp_through_the_deserialized_ndis5_miniport_with_pended_transfers() {
    if let Some(why) = netns::skip_reason() {
        eprintln!("skipping: {why}");
        return;
    }
    for arch in ARCHES {
        ping_and_tcp(arch, "rtl8139_ndis5", NDIS5_DESERIALIZED_LOOKAHEAD);
    }
}

#[test]
fn arp_icmp_and_10mb_tcp_through_the_ndis6_miniport() {
    if let Some(why) = netns::skip_reason() {
        eprintln!("skipping: {why}");
        return;
    }
    for arch in ARCHES {
        ping_and_tcp(arch, "rtl8139_ndis6", &[]);
    }
}
