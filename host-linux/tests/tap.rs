//! The TAP upper edge against a real Linux network stack, isolated in a throwaway network
//! namespace: ARP and ICMP echo through the port, and the carrier following `set_carrier`.
//! Skips (with a reason) when not root or when /dev/net/tun is missing.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use host_linux::packet::PacketPort;
use host_linux::tap::TapPort;

const FAKE_MAC: [u8; 6] = [0x02, 0x1c, 0xa0, 0x00, 0x00, 0x02];
const FAKE_IP: [u8; 4] = [10, 77, 0, 2];
const TAP_IP: [u8; 4] = [10, 77, 0, 1];

fn ip(args: &[&str]) -> Result<String, String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip {args:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "ip {args:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Deletes the namespace (and with it the TAP moved there) however the test ends.
struct Netns(String);

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = ip(&["netns", "del", &self.0]);
    }
}

fn csum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn eth(dst: [u8; 6], ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(14 + payload.len());
    f.extend_from_slice(&dst);
    f.extend_from_slice(&FAKE_MAC);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

fn arp_request() -> Vec<u8> {
    let mut a = vec![0, 1, 0x08, 0x00, 6, 4, 0, 1];
    a.extend_from_slice(&FAKE_MAC);
    a.extend_from_slice(&FAKE_IP);
    a.extend_from_slice(&[0; 6]);
    a.extend_from_slice(&TAP_IP);
    eth([0xff; 6], 0x0806, &a)
}

fn echo_request(dst_mac: [u8; 6], id: u16, seq: u16, payload: &[u8]) -> Vec<u8> {
    let mut icmp = vec![8, 0, 0, 0];
    icmp.extend_from_slice(&id.to_be_bytes());
    icmp.extend_from_slice(&seq.to_be_bytes());
    icmp.extend_from_slice(payload);
    let c = csum(&icmp);
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    let total = (20 + icmp.len()) as u16;
    let mut ip = vec![0x45, 0];
    ip.extend_from_slice(&total.to_be_bytes());
    ip.extend_from_slice(&[0x12, 0x34, 0x40, 0x00, 64, 1, 0, 0]);
    ip.extend_from_slice(&FAKE_IP);
    ip.extend_from_slice(&TAP_IP);
    let c = csum(&ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    ip.extend_from_slice(&icmp);
    eth(dst_mac, 0x0800, &ip)
}

/// Polls the port for up to 2 s for a frame `pick` accepts; other traffic (IPv6 chatter) is skipped.
fn wait_for<T>(tap: &mut TapPort, mut pick: impl FnMut(&[u8]) -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        match tap.recv() {
            Some(f) => {
                if let Some(v) = pick(&f) {
                    return Some(v);
                }
            }
            None => std::thread::sleep(Duration::from_millis(5)),
        }
    }
    None
}

#[test]
fn tap_arp_icmp_and_carrier_in_netns() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipping TAP test: not root");
        return;
    }
    if !Path::new("/dev/net/tun").exists() {
        eprintln!("skipping TAP test: /dev/net/tun is absent");
        return;
    }
    let pid = std::process::id();
    let ns = Netns(format!("ica-tap-test-{pid}"));
    ip(&["netns", "add", &ns.0]).expect("create namespace");

    let requested = format!("icatap{}", pid % 100_000);
    let mut tap = TapPort::open(Some(&requested)).expect("open TAP");
    assert_eq!(tap.name(), requested);
    let name = tap.name().to_owned();
    assert_eq!(tap.recv(), None, "nothing pending on a fresh TAP");

    // Helpers via ioctl, while the interface is still in our namespace.
    tap.set_mtu(1400).expect("set MTU");
    assert_eq!(tap.mtu().expect("get MTU"), 1400);
    let tap_mac = [0x02, 0x1c, 0xa0, 0x00, 0x00, 0x01];
    tap.set_mac(tap_mac).expect("set MAC");
    tap.set_up(true).expect("set up");
    tap.set_up(false).expect("set down");

    // Into the namespace; the fd stays valid.
    ip(&["link", "set", &name, "netns", &ns.0]).expect("move TAP");
    ip(&["-n", &ns.0, "addr", "add", "10.77.0.1/24", "dev", &name]).expect("address");
    ip(&["-n", &ns.0, "link", "set", &name, "up"]).expect("link up");

    // ARP: who has 10.77.0.1? tell 10.77.0.2.
    tap.send(&arp_request());
    let mac = wait_for(&mut tap, |f| {
        (f.len() >= 42
            && f[12..14] == [0x08, 0x06]
            && f[20..22] == [0, 2]
            && f[28..32] == TAP_IP
            && f[38..42] == FAKE_IP
            && f[0..6] == FAKE_MAC)
            .then(|| <[u8; 6]>::try_from(&f[22..28]).unwrap())
    })
    .expect("ARP reply within 2 s");
    assert_eq!(mac, tap_mac, "ARP reply carries the MAC set via ioctl");

    // ICMP echo.
    let payload: Vec<u8> = (0..48u8).collect();
    tap.send(&echo_request(mac, 0x1ca0, 7, &payload));
    let reply = wait_for(&mut tap, |f| {
        (f.len() >= 42
            && f[12..14] == [0x08, 0x00]
            && f[23] == 1
            && f[26..30] == TAP_IP
            && f[30..34] == FAKE_IP
            && f[34] == 0)
            .then(|| f.to_vec())
    })
    .expect("ICMP echo reply within 2 s");
    let ihl = usize::from(reply[14] & 0xf) * 4;
    assert_eq!(csum(&reply[14..14 + ihl]), 0, "IPv4 header checksum");
    let icmp = &reply[14 + ihl..];
    assert_eq!(csum(icmp), 0, "ICMP checksum");
    assert_eq!(&icmp[4..6], &0x1ca0u16.to_be_bytes(), "id");
    assert_eq!(&icmp[6..8], &7u16.to_be_bytes(), "seq");
    assert_eq!(&icmp[8..], &payload[..], "payload");

    // Carrier follows set_carrier.
    let show = || ip(&["-n", &ns.0, "link", "show", &name]).expect("link show");
    tap.set_carrier(false).expect("carrier off");
    let s = show();
    assert!(
        s.contains("NO-CARRIER") || s.contains("LOWER_DOWN"),
        "carrier off not visible: {s}"
    );
    tap.set_carrier(true).expect("carrier on");
    let s = show();
    assert!(!s.contains("NO-CARRIER"), "carrier still off: {s}");
    assert!(s.contains("LOWER_UP"), "carrier on not visible: {s}");
}

#[test]
fn open_errors_name_the_step() {
    let err = TapPort::open(Some("this-name-is-far-too-long")).unwrap_err();
    assert_eq!(err.step, "check interface name");
    assert!(err.to_string().contains("check interface name"));
}
