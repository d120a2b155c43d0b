//! The NIC host loop (`host_linux::net::Bridge`) with fake miniports (plain Rust structs):
//!
//! - in process (no root): frames both ways, back-pressure without loss or duplication, carrier
//!   following link indications;
//! - through a real TAP in a namespace: a fake host behind the "card" answers Linux's ARP and
//!   pings, with send back-pressure; the carrier follows link indications;
//! - the end-to-end harness (`ica_tests::netns::E2e`) with a fake that is a patch cable between
//!   the upper TAP and the wire TAP: ARP, ping and a verified 10 MB TCP transfer between the two
//!   namespaces (the time is printed).
//!
//! The namespace tests skip, printing why, when not root or /dev/net/tun is missing.

use std::collections::VecDeque;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

use host_linux::net::{setup_tap, Bridge, NetError, NetEvent, NetMiniport, QueueUpper, UpperSetup};
use host_linux::tap::TapPort;
use ica_tests::netns::{self, inet_checksum, E2e, E2eConfig, Netns};

const NIC_MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];

fn skip(test: &str) -> bool {
    match netns::skip_reason() {
        Some(why) => {
            eprintln!("skipping {test}: {why}");
            true
        }
        None => false,
    }
}

/// A NIC with `slots` transmit descriptors; each service() completes up to `completions` of them
/// and echoes the completed frames back as receives with the MACs swapped. Link indications
/// queued with `link()` are delivered by the next service().
struct EchoNic {
    slots: usize,
    completions: usize,
    in_flight: VecDeque<Vec<u8>>,
    link: VecDeque<bool>,
    send_calls: u64,
}

impl EchoNic {
    fn new(slots: usize, completions: usize) -> EchoNic {
        EchoNic {
            slots,
            completions,
            in_flight: VecDeque::new(),
            link: VecDeque::new(),
            send_calls: 0,
        }
    }
}

impl NetMiniport for EchoNic {
    fn send(&mut self, frames: &mut VecDeque<Vec<u8>>) -> Result<(), NetError> {
        self.send_calls += 1;
        while self.in_flight.len() < self.slots {
            let Some(f) = frames.pop_front() else { break };
            self.in_flight.push_back(f);
        }
        Ok(())
    }

    fn service(&mut self, events: &mut Vec<NetEvent>) -> Result<(), NetError> {
        events.extend(self.link.drain(..).map(NetEvent::Link));
        for _ in 0..self.completions {
            let Some(mut f) = self.in_flight.pop_front() else {
                break;
            };
            let (dst, src) = f.split_at_mut(6);
            dst.swap_with_slice(&mut src[..6]);
            events.push(NetEvent::Receive(f));
        }
        Ok(())
    }

    fn next_deadline(&self) -> Option<Instant> {
        None
    }

    fn wake_fds(&self) -> Vec<RawFd> {
        Vec::new()
    }
}

fn numbered_frame(i: u32) -> Vec<u8> {
    let mut f = vec![0u8; 60 + (i as usize % 1400)];
    f[..6].copy_from_slice(&NIC_MAC);
    f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
    f[12..14].copy_from_slice(&0x88b5u16.to_be_bytes());
    f[14..18].copy_from_slice(&i.to_be_bytes());
    f
}

#[test]
fn in_process_both_ways_back_pressure_and_link() {
    let (upper, linux) = QueueUpper::new();
    // Two descriptors, one completion per service: the miniport refuses most offers.
    let mut bridge = Bridge::new(EchoNic::new(2, 1), upper);
    bridge.miniport_mut().link.push_back(true);
    const N: u32 = 2000;
    for i in 0..N {
        linux.inject(&numbered_frame(i));
    }
    let mut got = Vec::new();
    let ok = bridge
        .run_until(Duration::from_secs(5), |_| {
            while let Some(f) = linux.take_delivered() {
                got.push(f);
            }
            got.len() as u32 == N
        })
        .expect("bridge");
    let s = bridge.stats();
    assert!(ok, "only {} of {N} frames came back: {s:?}", got.len());
    for (i, f) in got.iter().enumerate() {
        let mut want = numbered_frame(i as u32);
        let (d, r) = want.split_at_mut(6);
        d.swap_with_slice(&mut r[..6]);
        assert_eq!(f, &want, "frame {i}: lost, duplicated or reordered");
    }
    assert_eq!(
        (s.frames_read, s.frames_down, s.frames_up),
        (N as u64, N as u64, N as u64)
    );
    let bytes: u64 = (0..N).map(|i| numbered_frame(i).len() as u64).sum();
    assert_eq!((s.bytes_down, s.bytes_up), (bytes, bytes));
    assert!(s.send_retries > 0, "back-pressure never happened: {s:?}");
    assert_eq!(bridge.pending(), 0);
    assert_eq!(linux.carrier(), Some(true));

    // The carrier follows link indications; repeated ones are not changes.
    for up in [false, false, true] {
        bridge.miniport_mut().link.push_back(up);
    }
    bridge.run_for(Duration::from_millis(20)).expect("bridge");
    let s = bridge.stats();
    assert_eq!(linux.carrier(), Some(true));
    assert_eq!(linux.carrier_changes(), 3);
    assert_eq!((s.link_events, s.link_changes, s.link), (4, 3, Some(true)));
    assert_eq!(s.carrier_errors, 0);
}

#[test]
fn in_process_wakes_on_inject_from_another_thread() {
    let (upper, linux) = QueueUpper::new();
    let mut bridge = Bridge::new(EchoNic::new(4, 4), upper);
    // Sleep in poll(2) first (nothing to do), then inject from another thread: the eventfd
    // wakes the bridge well before the 50 ms poll cap.
    bridge.run_for(Duration::from_millis(60)).expect("bridge");
    let t0 = Instant::now();
    let injector = {
        let linux = linux.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(5));
            linux.inject(&numbered_frame(7));
        })
    };
    let ok = bridge
        .run_until(Duration::from_secs(2), |_| linux.delivered_len() == 1)
        .expect("bridge");
    injector.join().expect("injector");
    assert!(ok);
    assert!(
        t0.elapsed() < Duration::from_millis(45),
        "woke after {:?}",
        t0.elapsed()
    );
}

// --- A fake host behind the card, through a real TAP ---------------------------------------

const HOST_IP: Ipv4Addr = Ipv4Addr::new(10, 203, 0, 1);
const FAKE_IP: Ipv4Addr = Ipv4Addr::new(10, 203, 0, 2);
const FAKE_MAC: [u8; 6] = [0x02, 0x1c, 0xa0, 0x55, 0x00, 0x02];

/// A NIC whose wire leads to a host at FAKE_IP that answers ARP and ICMP echo. One transmit
/// descriptor, completed by service(), so Linux's bursts meet back-pressure. Every frame
/// handed to send() is recorded (to check nothing was lost or duplicated).
struct ResponderNic {
    busy: Option<Vec<u8>>,
    link: VecDeque<bool>,
    echo_seqs: Vec<u16>,
    arps: u32,
}

impl ResponderNic {
    fn answer(&mut self, f: &[u8]) -> Option<Vec<u8>> {
        if f.len() < 42 {
            return None;
        }
        let reply_eth = |payload: &[u8], ethertype: u16| {
            let mut r = Vec::with_capacity(14 + payload.len());
            r.extend_from_slice(&f[6..12]);
            r.extend_from_slice(&FAKE_MAC);
            r.extend_from_slice(&ethertype.to_be_bytes());
            r.extend_from_slice(payload);
            r
        };
        match u16::from_be_bytes([f[12], f[13]]) {
            0x0806 if f[20..22] == [0, 1] && f[38..42] == FAKE_IP.octets() => {
                self.arps += 1;
                let mut a = vec![0, 1, 0x08, 0x00, 6, 4, 0, 2];
                a.extend_from_slice(&FAKE_MAC);
                a.extend_from_slice(&FAKE_IP.octets());
                a.extend_from_slice(&f[22..32]); // sender MAC + IP become the target
                Some(reply_eth(&a, 0x0806))
            }
            0x0800 if f[23] == 1 && f[30..34] == FAKE_IP.octets() => {
                let ihl = usize::from(f[14] & 0xf) * 4;
                let ip = &f[14..];
                let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
                let icmp = ip.get(ihl..total)?;
                if icmp.len() < 8 || icmp[0] != 8 {
                    return None;
                }
                self.echo_seqs.push(u16::from_be_bytes([icmp[6], icmp[7]]));
                let mut r_icmp = icmp.to_vec();
                r_icmp[0] = 0;
                r_icmp[2..4].fill(0);
                let c = inet_checksum(&r_icmp);
                r_icmp[2..4].copy_from_slice(&c.to_be_bytes());
                let mut r_ip = ip[..ihl].to_vec();
                r_ip[12..16].copy_from_slice(&FAKE_IP.octets());
                r_ip[16..20].copy_from_slice(&ip[12..16]);
                r_ip[10..12].fill(0);
                let c = inet_checksum(&r_ip);
                r_ip[10..12].copy_from_slice(&c.to_be_bytes());
                r_ip.extend_from_slice(&r_icmp);
                Some(reply_eth(&r_ip, 0x0800))
            }
            _ => None,
        }
    }
}

impl NetMiniport for ResponderNic {
    fn send(&mut self, frames: &mut VecDeque<Vec<u8>>) -> Result<(), NetError> {
        if self.busy.is_none() {
            self.busy = frames.pop_front();
        }
        Ok(())
    }

    fn service(&mut self, events: &mut Vec<NetEvent>) -> Result<(), NetError> {
        events.extend(self.link.drain(..).map(NetEvent::Link));
        if let Some(f) = self.busy.take() {
            if let Some(r) = self.answer(&f) {
                events.push(NetEvent::Receive(r));
            }
        }
        Ok(())
    }

    fn next_deadline(&self) -> Option<Instant> {
        None
    }

    fn wake_fds(&self) -> Vec<RawFd> {
        Vec::new()
    }
}

#[test]
fn tap_in_netns_arp_ping_back_pressure_and_carrier() {
    if skip("tap_in_netns_arp_ping_back_pressure_and_carrier") {
        return;
    }
    let ns = Netns::new("bridge").expect("namespace");
    // setup_tap's ioctls act in the caller's namespace: run it inside.
    let tap = ns
        .run(|| {
            let tap = TapPort::open(Some("ica-up")).map_err(|e| e.to_string())?;
            setup_tap(
                &tap,
                &UpperSetup {
                    mac: NIC_MAC,
                    mtu: 1400,
                    link_up: true,
                },
            )
            .map_err(|e| e.to_string())?;
            Ok(tap)
        })
        .expect("TAP in the namespace");
    let show = ns.link_show("ica-up").expect("link show");
    assert!(show.contains("mtu 1400"), "{show}");
    assert!(show.contains(&netns::mac_string(NIC_MAC)), "{show}");
    assert!(show.contains("UP") && show.contains("LOWER_UP"), "{show}");
    ns.ip(&["addr", "add", &format!("{HOST_IP}/24"), "dev", "ica-up"])
        .expect("address");

    let nic = ResponderNic {
        busy: None,
        link: VecDeque::new(),
        echo_seqs: Vec::new(),
        arps: 0,
    };
    let mut bridge = Bridge::new(nic, tap);

    // 50 pings, one at a time: each needs ARP resolution first, then request and reply.
    let ping = ns.ping(FAKE_IP, 50, Duration::from_secs(2));
    let done = bridge
        .run_until(Duration::from_secs(8), |_| ping.is_finished())
        .expect("bridge");
    assert!(done, "ping did not finish");
    let report = ping.join().expect("ping");
    assert_eq!(
        (report.sent, report.received, report.duplicates),
        (50, 50, 0),
        "{report:?}"
    );
    let nic = bridge.miniport();
    assert!(nic.arps >= 1);
    assert_eq!(
        nic.echo_seqs,
        (0..50).collect::<Vec<u16>>(),
        "each echo reached the card once"
    );
    let s = bridge.stats();
    assert_eq!(s.frames_read, s.frames_down, "{s:?}");
    assert_eq!(bridge.pending(), 0);
    eprintln!(
        "ping through the bridge: avg rtt {:?}; {s:?}",
        report.avg_rtt().unwrap_or_default()
    );

    // A burst: many frames queue in the TAP while the one-descriptor card refuses; all arrive.
    let burst = ns.spawn("udp burst", || {
        let s = std::net::UdpSocket::bind((HOST_IP, 0)).map_err(|e| e.to_string())?;
        for i in 0..300u32 {
            s.send_to(&i.to_be_bytes(), (FAKE_IP, 9))
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    });
    let before = bridge.stats();
    let ok = bridge
        .run_until(Duration::from_secs(5), |b| {
            burst.is_finished()
                && b.stats().frames_down - before.frames_down >= 300
                // A frame Linux sent meanwhile (IPv6 neighbour discovery) may still be held.
                && b.pending() == 0
        })
        .expect("bridge");
    burst.join().expect("burst");
    let s = bridge.stats();
    assert!(ok, "burst did not come through: {s:?}");
    assert!(
        s.send_retries > before.send_retries,
        "no back-pressure: {s:?}"
    );
    assert_eq!(s.frames_read, s.frames_down);

    // Carrier follows link indications.
    for up in [false, true] {
        bridge.miniport_mut().link.push_back(up);
        bridge.run_for(Duration::from_millis(10)).expect("bridge");
        assert_eq!(ns.carrier("ica-up").expect("carrier"), up);
    }
    let s = bridge.stats();
    assert_eq!((s.link_changes, s.carrier_errors), (2, 0));
}

// --- The end-to-end harness with a patch cable -----------------------------------------------

/// A "card" that is a patch cable: frames sent go out on the wire TAP unchanged; frames on the
/// wire come back as receive indications. Accepts at most `per_call` frames per send() call.
struct PatchCable {
    wire: TapPort,
    per_call: usize,
    wire_drops: u64,
}

impl NetMiniport for PatchCable {
    fn send(&mut self, frames: &mut VecDeque<Vec<u8>>) -> Result<(), NetError> {
        for _ in 0..self.per_call {
            let Some(f) = frames.pop_front() else { break };
            if self.wire.try_send(&f).is_err() {
                self.wire_drops += 1;
            }
        }
        Ok(())
    }

    fn service(&mut self, events: &mut Vec<NetEvent>) -> Result<(), NetError> {
        for _ in 0..64 {
            match self.wire.try_recv() {
                Ok(Some(f)) => events.push(NetEvent::Receive(f)),
                Ok(None) => break,
                Err(e) => return Err(NetError::new(e.to_string())),
            }
        }
        Ok(())
    }

    fn next_deadline(&self) -> Option<Instant> {
        None
    }

    fn wake_fds(&self) -> Vec<RawFd> {
        vec![self.wire.as_raw_fd()]
    }
}

fn patch_cable_e2e(per_call: usize, mbytes: u64) {
    let e2e = E2e::new(&E2eConfig {
        nic_mac: NIC_MAC,
        ..E2eConfig::default()
    })
    .expect("namespaces");
    let cable = PatchCable {
        wire: e2e.wire,
        per_call,
        wire_drops: 0,
    };
    let mut bridge = Bridge::new(cable, e2e.up);

    let ping = e2e_ping(&e2e.a);
    let done = bridge
        .run_until(Duration::from_secs(5), |_| ping.is_finished())
        .expect("bridge");
    assert!(done, "ping did not finish");
    let report = ping.join().expect("ping");
    assert_eq!((report.received, report.duplicates), (5, 0), "{report:?}");
    let neigh = e2e
        .a
        .ip(&["neigh", "show", "dev", netns::UP_TAP])
        .expect("neigh");
    assert!(
        neigh.contains(&netns::mac_string(netns::PEER_MAC)),
        "A resolved B's MAC through the cable: {neigh}"
    );

    let bytes = mbytes * 1024 * 1024;
    let t0 = Instant::now();
    let job = netns::tcp_transfer(
        &e2e.b,
        std::net::SocketAddrV4::new(netns::B_ADDR, netns::TCP_PORT),
        &e2e.a,
        bytes,
        Duration::from_secs(8),
    );
    let done = bridge
        .run_until(Duration::from_secs(9), |_| job.is_finished())
        .expect("bridge");
    assert!(done, "TCP transfer did not finish");
    let t = job.join().expect("TCP transfer");
    assert_eq!(t.bytes, bytes);
    let s = bridge.stats();
    let limit = match per_call {
        usize::MAX => "no send limit".to_string(),
        n => format!("{n} frame(s) per send call"),
    };
    eprintln!(
        "patch cable ({limit}): {mbytes} MB A->B in {:.1} ms ({:.0} Mbit/s, wall {:.1} ms), \
         crc {:#010x}; ping avg rtt {:?}; bridge {s:?}; wire drops {}",
        t.elapsed.as_secs_f64() * 1e3,
        t.mbit_per_s(),
        t0.elapsed().as_secs_f64() * 1e3,
        t.crc32,
        report.avg_rtt().unwrap_or_default(),
        bridge.miniport().wire_drops,
    );
    assert_eq!(s.frames_read, s.frames_down);
    assert_eq!(s.up_drops, 0);
}

fn e2e_ping(a: &Netns) -> netns::Job<netns::PingReport> {
    a.ping(netns::B_ADDR, 5, Duration::from_secs(2))
}

#[test]
fn e2e_harness_patch_cable_arp_ping_tcp_10mb() {
    if skip("e2e_harness_patch_cable_arp_ping_tcp_10mb") {
        return;
    }
    patch_cable_e2e(usize::MAX, 10);
}

#[test]
fn e2e_harness_patch_cable_with_back_pressure() {
    if skip("e2e_harness_patch_cable_with_back_pressure") {
        return;
    }
    // One frame per send() call: TCP's bursts wait in the bridge and the TAP, none is lost.
    patch_cable_e2e(1, 4);
}

#[test]
fn e2e_harness_cleans_up_after_a_panic() {
    if skip("e2e_harness_cleans_up_after_a_panic") {
        return;
    }
    let names = std::panic::catch_unwind(|| {
        let e2e = E2e::new(&E2eConfig::default()).expect("namespaces");
        let names = (e2e.a.name().to_owned(), e2e.b.name().to_owned());
        assert!(netns::ip(&["netns", "list"])
            .expect("list")
            .contains(&names.0));
        // resume_unwind: a panic without the hook's backtrace noise.
        std::panic::resume_unwind(Box::new(names));
    })
    .expect_err("panicked")
    .downcast::<(String, String)>()
    .expect("names");
    let list = netns::ip(&["netns", "list"]).expect("list");
    assert!(
        !list.contains(&names.0) && !list.contains(&names.1),
        "{list}"
    );
}
