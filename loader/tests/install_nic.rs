//! `ica-load rtl8139_ndis5.inf` (and `rtl8139_ndis6.inf`) through the real binary: the INF binds
//! to the RTL8139 software model, the NDIS miniport is initialized on it, the CLI shows what the
//! OIDs report (address, link, MTU, counters), and with `--keep-running` a Linux interface carries
//! the adapter's address and link until SIGINT. `ica-load netvirt_ndis6.inf` starts a virtual
//! (root-enumerated) miniport whose interface loops frames back.

use std::io::{BufRead, BufReader, Lines};
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

fn inf(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/drivers")
        .join(name)
        .display()
        .to_string()
}

fn ica(root: &Path, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_ica-load"))
        .arg("--root")
        .arg(root)
        .args(args)
        .output()
        .expect("ica-load runs");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(
        out.status.success(),
        "ica-load {args:?} failed:\n{stdout}\n{stderr}"
    );
    stdout
}

/// An interface name unique to this test process.
fn ifname(tag: &str) -> String {
    format!("ica{tag}{}", std::process::id() % 100_000)
}

#[test]
fn installing_the_inf_starts_the_miniport_on_the_software_model() {
    for (file, adapter) in [
        ("rtl8139_ndis5.inf", "ICA RTL8139 NDIS 5.1 test miniport"),
        ("rtl8139_ndis6.inf", "ICA RTL8139 NDIS 6.0 test miniport"),
    ] {
        for arch in ["x86", "x64"] {
            let root = tempfile::tempdir().unwrap();
            let name = ifname("i");
            let out = ica(
                root.path(),
                &[&inf(file), "--arch", arch, "--ifname", &name],
            );
            assert!(out.contains("ica-model_rtl8139"), "{file} {arch}: {out}");
            assert!(
                out.contains("loaded on the rtl8139 model, MiniportInitialize succeeded"),
                "{file} {arch}: {out}"
            );
            assert!(out.contains(&format!("adapter   {adapter}")), "{out}");
            assert!(
                out.contains("address   02:1c:a0:00:81:39 (permanent 02:1c:a0:00:81:39)"),
                "{out}"
            );
            assert!(out.contains("link      up, 100 Mbit/s, MTU 1500"), "{out}");
            assert!(out.contains("nothing leaked"), "{out}");
        }
    }
}

/// FNV-1a, rtl8139_ndis5.sys's firmware checksum.
fn fnv1a(data: &[u8]) -> u32 {
    data.iter().fold(2_166_136_261u32, |h, &b| {
        (h ^ u32::from(b)).wrapping_mul(16_777_619)
    })
}

#[test]
fn the_ndis5_miniport_loads_the_firmware_its_inf_copies_in_a_confined_driver_host() {
    let fw = std::fs::read(inf("firmware/rtl8139fw.bin")).unwrap();
    for arch in ["x86", "x64"] {
        for mode in [None, Some("--in-process")] {
            let root = tempfile::tempdir().unwrap();
            let name = ifname("f");
            let mut args = vec![inf("rtl8139_ndis5.inf"), "--arch".into(), arch.into()];
            args.extend(["--ifname".into(), name]);
            args.extend(mode.map(String::from));
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let out = ica(root.path(), &args);
            let what = format!("{arch} {mode:?}");
            assert!(
                out.contains("MiniportInitialize succeeded"),
                "{what}: {out}"
            );
            assert!(
                out.contains(r"%12%\rtl8139fw.bin"),
                "{what}: the INF copies the firmware: {out}"
            );
            // The driver wrote the length and checksum of what NdisOpenFile gave it into its
            // driver key (from the driver host: a write forwarded to the manager's registry).
            let store = loader::registry::RegistryStore::open(root.path()).unwrap();
            let instance = loader::registry::windows::enum_key(
                r"PCI\VEN_10EC&DEV_8139&SUBSYS_813910EC&REV_10\ica-model_rtl8139",
            );
            let driver = store.value(&instance, "Driver").unwrap().unwrap();
            let key = loader::registry::windows::driver_key(&driver.as_str().unwrap());
            let dword = |name: &str| store.value(&key, name).unwrap().and_then(|v| v.as_dword());
            assert_eq!(dword("FirmwareLength"), Some(fw.len() as u32), "{what}");
            assert_eq!(dword("FirmwareChecksum"), Some(fnv1a(&fw)), "{what}");
        }
    }
}

#[test]
fn a_virtual_miniport_starts_on_its_root_device() {
    for arch in ["x86", "x64"] {
        let root = tempfile::tempdir().unwrap();
        let name = ifname("v");
        let out = ica(
            root.path(),
            &[&inf("netvirt_ndis6.inf"), "--arch", arch, "--ifname", &name],
        );
        assert!(out.contains("ROOT\\ICA_NETVIRT\\0000"), "{arch}: {out}");
        assert!(
            out.contains("loaded as a virtual adapter, MiniportInitialize succeeded"),
            "{arch}: {out}"
        );
        assert!(
            out.contains("address   02:49:43:41:00:01 (permanent 02:49:43:41:00:01)"),
            "{arch}: {out}"
        );
        assert!(out.contains("MTU 1500"), "{arch}: {out}");
        assert!(out.contains("nothing leaked"), "{arch}: {out}");
    }
}

fn sysfs(ifname: &str, attr: &str) -> Option<String> {
    std::fs::read_to_string(format!("/sys/class/net/{ifname}/{attr}"))
        .ok()
        .map(|s| s.trim().to_string())
}

/// Whether TAP interfaces can be created here (root and /dev/net/tun).
fn can_create_taps() -> bool {
    // SAFETY: geteuid has no preconditions.
    (unsafe { libc::geteuid() }) == 0 && Path::new("/dev/net/tun").exists()
}

/// `ica-load --root ROOT ARGS` running in the background, its output read up to "Running".
struct KeptRunning {
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
    /// The lines printed up to and including "Running; ...".
    started: Vec<String>,
}

impl KeptRunning {
    fn spawn(root: &Path, args: &[&str]) -> KeptRunning {
        let mut child = Command::new(env!("CARGO_BIN_EXE_ica-load"))
            .arg("--root")
            .arg(root)
            .args(args)
            .arg("--keep-running")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut started = Vec::new();
        for line in lines.by_ref() {
            let line = line.unwrap();
            started.push(line.clone());
            if line.starts_with("Running") {
                break;
            }
        }
        KeptRunning {
            child,
            lines,
            started,
        }
    }

    /// Sends SIGINT, waits for a successful exit and returns the rest of the output.
    fn interrupt(mut self) -> Vec<String> {
        // SAFETY: sends SIGINT to our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let deadline = Instant::now() + Duration::from_secs(20);
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            assert!(Instant::now() < deadline, "ica-load did not stop on SIGINT");
            std::thread::sleep(Duration::from_millis(20));
        };
        let rest: Vec<String> = self.lines.map_while(Result::ok).collect();
        assert!(status.success(), "{rest:?}");
        assert!(rest.iter().any(|l| l.contains("bridged")), "{rest:?}");
        assert!(
            rest.iter().any(|l| l.contains("nothing leaked")),
            "{rest:?}"
        );
        rest
    }
}

#[test]
fn keep_running_brings_up_a_linux_interface_until_sigint() {
    if !can_create_taps() {
        eprintln!("skipping: creating TAP interfaces needs root and /dev/net/tun");
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let name = ifname("k");
    let run = KeptRunning::spawn(root.path(), &[&inf("rtl8139_ndis5.inf"), "--ifname", &name]);
    assert!(
        run.started
            .iter()
            .any(|l| l.contains(&format!("interface {name} is up"))),
        "{:?}",
        run.started
    );
    assert_eq!(
        sysfs(&name, "address").as_deref(),
        Some("02:1c:a0:00:81:39")
    );
    assert_eq!(sysfs(&name, "mtu").as_deref(), Some("1500"));
    assert_eq!(sysfs(&name, "carrier").as_deref(), Some("1"));
    assert!(sysfs(&format!("{name}w"), "address").is_some(), "wire TAP");
    run.interrupt();
    assert!(sysfs(&name, "address").is_none(), "the interface goes away");
}

/// A local experimental EtherType for the test's frames.
const ETHERTYPE: u16 = 0x88B5;

/// A packet socket on interface `ifname` for [`ETHERTYPE`] frames.
struct PacketSocket {
    fd: i32,
    addr: libc::sockaddr_ll,
}

impl PacketSocket {
    fn open(ifname: &str) -> PacketSocket {
        let cname = std::ffi::CString::new(ifname).unwrap();
        // SAFETY: plain socket calls; the address and timeout outlive the calls that read them.
        unsafe {
            let index = libc::if_nametoindex(cname.as_ptr());
            assert!(index != 0, "no interface {ifname}");
            let proto = ETHERTYPE.to_be();
            let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, proto as i32);
            assert!(fd >= 0, "packet socket");
            let mut addr: libc::sockaddr_ll = std::mem::zeroed();
            addr.sll_family = libc::AF_PACKET as u16;
            addr.sll_protocol = proto;
            addr.sll_ifindex = index as i32;
            addr.sll_halen = 6;
            let len = std::mem::size_of::<libc::sockaddr_ll>() as u32;
            assert_eq!(
                libc::bind(fd, (&addr as *const libc::sockaddr_ll).cast(), len),
                0
            );
            let timeout = libc::timeval {
                tv_sec: 0,
                tv_usec: 200_000,
            };
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&timeout as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as u32,
            );
            PacketSocket { fd, addr }
        }
    }

    /// Sends `frame` out of the interface.
    fn send(&self, frame: &[u8]) {
        // SAFETY: the frame and address outlive the call.
        let n = unsafe {
            libc::sendto(
                self.fd,
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&self.addr as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        assert_eq!(n, frame.len() as isize, "sendto");
    }

    /// The next frame the interface received (not one it sent), if one arrives within 200 ms.
    fn receive(&self) -> Option<Vec<u8>> {
        let mut buf = vec![0u8; 2048];
        loop {
            // SAFETY: buf and from are valid for the lengths passed.
            let (n, from) = unsafe {
                let mut from: libc::sockaddr_ll = std::mem::zeroed();
                let mut len = std::mem::size_of::<libc::sockaddr_ll>() as u32;
                let n = libc::recvfrom(
                    self.fd,
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    0,
                    (&mut from as *mut libc::sockaddr_ll).cast(),
                    &mut len,
                );
                (n, from)
            };
            if n < 0 {
                return None;
            }
            if from.sll_pkttype != libc::PACKET_OUTGOING {
                return Some(buf[..n as usize].to_vec());
            }
        }
    }
}

impl Drop for PacketSocket {
    fn drop(&mut self) {
        // SAFETY: closes the socket this value owns.
        unsafe { libc::close(self.fd) };
    }
}

#[test]
fn a_virtual_miniport_loops_frames_back_to_its_linux_interface() {
    if !can_create_taps() {
        eprintln!("skipping: creating TAP interfaces needs root and /dev/net/tun");
        return;
    }
    const FRAMES: u8 = 20;
    let root = tempfile::tempdir().unwrap();
    let name = ifname("l");
    let run = KeptRunning::spawn(root.path(), &[&inf("netvirt_ndis6.inf"), "--ifname", &name]);
    assert!(
        run.started
            .iter()
            .any(|l| l.contains(&format!("interface {name} is up (the adapter)"))),
        "{:?}",
        run.started
    );
    assert_eq!(
        sysfs(&name, "address").as_deref(),
        Some("02:49:43:41:00:01")
    );
    // Every frame Linux sends goes through MiniportSendNetBufferLists and comes back up, intact,
    // through the driver's receive indication.
    let socket = PacketSocket::open(&name);
    let frames = broadcast_frames(FRAMES);
    let back = send_and_collect(&socket, &frames, frames.len());
    assert_eq!(back, frames, "frames looped back through the driver");
    let rest = run.interrupt();
    assert!(
        rest.iter().any(|l| l.contains("counters  sent")),
        "{rest:?}"
    );
}

/// `count` broadcast frames of the test's EtherType, each with its own 100-byte payload.
fn broadcast_frames(count: u8) -> Vec<Vec<u8>> {
    (0..count)
        .map(|n| {
            let mut f = vec![0xFFu8; 6];
            f.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x42]);
            f.extend_from_slice(&ETHERTYPE.to_be_bytes());
            f.extend((0..100u8).map(|i| i ^ n));
            f
        })
        .collect()
}

/// Sends `frames` on `socket` and collects what comes back until `want` frames arrived or 10 s
/// passed.
fn send_and_collect(socket: &PacketSocket, frames: &[Vec<u8>], want: usize) -> Vec<Vec<u8>> {
    let mut back = Vec::new();
    for f in frames {
        socket.send(f);
        back.extend(socket.receive());
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while back.len() < want && Instant::now() < deadline {
        back.extend(socket.receive());
    }
    back
}

#[test]
fn a_crashing_miniport_is_restarted_behind_the_same_interface() {
    if !can_create_taps() {
        eprintln!("skipping: creating TAP interfaces needs root and /dev/net/tun");
        return;
    }
    const FRAMES: u8 = 40;
    let root = tempfile::tempdir().unwrap();
    let name = ifname("c");
    // netcrash_ndis6.inf: a NULL write in the send path at the 21st frame.
    let run = KeptRunning::spawn(
        root.path(),
        &[&inf("netcrash_ndis6.inf"), "--ifname", &name],
    );
    assert!(
        run.started.iter().any(|l| l.contains("driver host pid")),
        "{:?}",
        run.started
    );
    let index = sysfs(&name, "ifindex");
    let socket = PacketSocket::open(&name);
    let frames = broadcast_frames(FRAMES);
    let back = send_and_collect(&socket, &frames, frames.len() - 2);
    // The frame that crashed a driver host is lost (the driver counts Linux's own IPv6 frames
    // too, so its 21st frame may be an earlier one of ours, and a second crash may come), and
    // Linux drops what it sends while the carrier is down for a restart; every other frame comes
    // back once, in order, through the same interface.
    let mut rest_of_frames = frames.iter();
    for f in &back {
        assert!(
            rest_of_frames.any(|g| g == f),
            "a frame came back twice or out of order"
        );
    }
    assert_eq!(
        sysfs(&name, "ifindex"),
        index,
        "the interface stayed in place"
    );
    // Up again (a late crash may have it down for a restart right now).
    let deadline = Instant::now() + Duration::from_secs(5);
    while sysfs(&name, "carrier").as_deref() != Some("1") {
        assert!(Instant::now() < deadline, "the carrier stays down");
        std::thread::sleep(Duration::from_millis(10));
    }
    let rest = run.interrupt();
    let failures: usize = rest
        .iter()
        .find_map(|l| l.strip_prefix("  restarts  "))
        .and_then(|l| l.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no restarts line: {rest:?}"));
    assert!((1..=3).contains(&failures), "{rest:?}");
    assert!(
        back.len() >= frames.len() - 2 * failures,
        "{} came back: {rest:?}",
        back.len()
    );
    let recoveries: Vec<&String> = rest
        .iter()
        .filter(|l| l.starts_with("  recovery  driver host (pid"))
        .collect();
    assert_eq!(recoveries.len(), failures, "{rest:?}");
    for r in recoveries {
        assert!(
            r.contains("of netcrash_ndis6.sys failed: guest fault in netcrash_ndis6.sys+0x"),
            "{r}"
        );
    }
    // The manager's registry is intact.
    let list = ica(root.path(), &["list"]);
    assert!(list.contains("netcrash_ndis6.inf"), "{list}");
}
