//! NIC data path benchmark: packets per second and CPU time per packet through the host loop, for
//! 64- and 1500-byte frames, against the machine's limit (a plain TAP-to-TAP forwarder), with
//! ratios to that baseline.
//!
//!     cargo bench -p ica-tests --bench net
//!
//! Needs root and /dev/net/tun (it prints why and exits successfully otherwise). Everything runs
//! in throwaway network namespaces.
//!
//! How a row is measured, on one thread, in rounds: inject a batch of `BATCH` frames by writing
//! them to an AF_PACKET socket bound to a TAP (Linux transmits them on it, synchronously, so they
//! wait in the TAP's queue), then run the loop under test until it has finished the batch. The
//! CPU time of both halves is taken separately with CLOCK_THREAD_CPUTIME_ID. One thread and full
//! batches keep the numbers steady on a small shared machine: no cross-thread wake-ups, no idle
//! loop. The loops:
//!
//! - `tap->tap`: a minimal read(2)/write(2) loop forwards each frame to a second TAP (Linux
//!   receives and drops it: broadcast, unknown ethertype). The machine's limit.
//! - `bridge+echo`: `host_linux::net::Bridge` with a Rust miniport that hands every frame back
//!   as a receive indication, written back into the same TAP. The bridge's own cost.
//! - rows added in [`miniport_rows`]: `Bridge` over a real `NetMiniport` (e.g. the NDIS runtime
//!   with an RTL8139 model on a `LoopbackPort`), measured by [`measure_miniport`].
//!
//! Columns:
//!
//! - `frames`: frames that finished the path in the measured second (`lost`: injected but not
//!   finished, e.g. rejected by a receive filter).
//! - `fwd us/pkt`: CPU time (user + system) of the loop under test per finished frame, and
//!   `fwd pps` = 1 / that: what the loop sustains on one CPU when frames are waiting.
//! - `inj us/pkt`: Linux's transmit path into the TAP per frame (the same for every row).
//! - `pps`: finished frames per second of wall time, injection included (one CPU does both).
//! - `proc us/pkt`: CLOCK_PROCESS_CPUTIME_ID per finished frame.
//! - `pps/base`, `cpu/base`: `fwd pps` and `fwd us/pkt` relative to `tap->tap` at that size.

use std::collections::VecDeque;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use dbt::Arch;
use host_linux::net::{Bridge, BridgeConfig, NetError, NetEvent, NetMiniport};
use host_linux::packet::LoopbackPort;
use host_linux::rtl8139::Rtl8139;
use ica_tests::netns::{skip_reason, Netns, TapConfig};
use loader::net::NetAdapter;

/// Frame sizes measured (whole frames without FCS; the 64-byte one is 68 on the wire).
const FRAME_SIZES: [usize; 2] = [64, 1500];
/// Unmeasured run before each measurement (caches, page faults).
const WARMUP: Duration = Duration::from_millis(200);
/// Measured run per row.
const RUN: Duration = Duration::from_secs(1);
/// Frames injected per round (well below a TAP's queue of 500).
const BATCH: u64 = 64;
/// A loop that finishes nothing for this long gives up on the rest of its batch.
const STALL: Duration = Duration::from_millis(20);
/// Local experimental ethertype: Linux drops it without a protocol handler.
const ETHERTYPE: u16 = 0x88b5;
const GEN_MAC: [u8; 6] = [0x02, 0x1c, 0xa0, 0xbe, 0x00, 0x01];
const IN_TAP: &str = "ica-in";
const OUT_TAP: &str = "ica-out";
const UP_TAP: &str = "ica-up";

/// What one row measured.
#[derive(Debug, Clone, Copy)]
struct Measurement {
    injected: u64,
    frames: u64,
    wall: Duration,
    inject_cpu: Duration,
    forward_cpu: Duration,
    process_cpu: Duration,
}

fn per_frame_us(d: Duration, frames: u64) -> f64 {
    d.as_secs_f64() * 1e6 / frames.max(1) as f64
}

impl Measurement {
    fn forward_us(&self) -> f64 {
        per_frame_us(self.forward_cpu, self.frames)
    }
    fn forward_pps(&self) -> f64 {
        1e6 / self.forward_us()
    }
    fn inject_us(&self) -> f64 {
        per_frame_us(self.inject_cpu, self.injected)
    }
    fn pps(&self) -> f64 {
        self.frames as f64 / self.wall.as_secs_f64()
    }
    fn process_us(&self) -> f64 {
        per_frame_us(self.process_cpu, self.frames)
    }
}

fn timespec(clock: libc::clockid_t) -> Duration {
    // SAFETY: clock_gettime fills the zeroed struct we pass.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: `ts` is live and writable.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// CPU time of the calling thread.
fn thread_cpu() -> Duration {
    timespec(libc::CLOCK_THREAD_CPUTIME_ID)
}

/// CPU time of the whole process.
fn process_cpu() -> Duration {
    timespec(libc::CLOCK_PROCESS_CPUTIME_ID)
}

fn frame(len: usize) -> Vec<u8> {
    let mut f = vec![0u8; len.max(14)];
    f[..6].copy_from_slice(&[0xff; 6]);
    f[6..12].copy_from_slice(&GEN_MAC);
    f[12..14].copy_from_slice(&ETHERTYPE.to_be_bytes());
    for (i, b) in f[14..].iter_mut().enumerate() {
        *b = i as u8;
    }
    f
}

/// Makes Linux transmit frames on a TAP: an AF_PACKET socket bound to it.
struct Injector {
    sock: OwnedFd,
    frame: Vec<u8>,
}

impl Injector {
    /// A send-only packet socket bound to `dev` in `ns`, sending `len`-byte frames.
    fn new(ns: &Netns, dev: &str, len: usize) -> Result<Injector, String> {
        let dev = dev.to_owned();
        let sock = ns.run(move || {
            let cname = std::ffi::CString::new(dev.clone()).map_err(|e| e.to_string())?;
            // SAFETY: a NUL-terminated name.
            let ifindex = unsafe { libc::if_nametoindex(cname.as_ptr()) };
            if ifindex == 0 {
                return Err(format!("no interface {dev}"));
            }
            // Protocol 0: the socket receives nothing.
            // SAFETY: plain socket(2) call; checked below.
            let fd =
                unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
            if fd < 0 {
                return Err(format!(
                    "AF_PACKET socket: {}",
                    std::io::Error::last_os_error()
                ));
            }
            // SAFETY: a fresh descriptor owned by nobody else.
            let sock = unsafe { OwnedFd::from_raw_fd(fd) };
            // SAFETY: sockaddr_ll is plain data; zero is a valid start.
            let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            sll.sll_family = libc::AF_PACKET as u16;
            sll.sll_ifindex = ifindex as i32;
            // SAFETY: `sll` is live; the length is its size.
            let rc = unsafe {
                libc::bind(
                    sock.as_raw_fd(),
                    &sll as *const libc::sockaddr_ll as *const libc::sockaddr,
                    std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
                )
            };
            if rc != 0 {
                return Err(format!(
                    "bind to {dev}: {}",
                    std::io::Error::last_os_error()
                ));
            }
            Ok(sock)
        })?;
        Ok(Injector {
            sock,
            frame: frame(len),
        })
    }

    fn send(&self, n: u64) -> Result<(), String> {
        for _ in 0..n {
            // SAFETY: the frame is live for its length.
            let rc = unsafe {
                libc::write(
                    self.sock.as_raw_fd(),
                    self.frame.as_ptr() as *const libc::c_void,
                    self.frame.len(),
                )
            };
            if rc < 0 {
                return Err(format!("inject: {}", std::io::Error::last_os_error()));
            }
        }
        Ok(())
    }
}

/// Rounds of "inject `BATCH`, `forward(BATCH)`" for `WARMUP`, then measured for `RUN`.
/// `forward(n)` runs the loop under test until `n` more frames finished (or it stalls) and
/// returns how many did.
fn measure(
    inj: &Injector,
    mut forward: impl FnMut(u64) -> Result<u64, String>,
) -> Result<Measurement, String> {
    let warm_end = Instant::now() + WARMUP;
    while Instant::now() < warm_end {
        inj.send(BATCH)?;
        forward(BATCH)?;
    }
    let mut m = Measurement {
        injected: 0,
        frames: 0,
        wall: Duration::ZERO,
        inject_cpu: Duration::ZERO,
        forward_cpu: Duration::ZERO,
        process_cpu: Duration::ZERO,
    };
    let (t0, p0) = (Instant::now(), process_cpu());
    while t0.elapsed() < RUN {
        let c0 = thread_cpu();
        inj.send(BATCH)?;
        let c1 = thread_cpu();
        let n = forward(BATCH)?;
        let c2 = thread_cpu();
        m.injected += BATCH;
        m.frames += n;
        m.inject_cpu += c1 - c0;
        m.forward_cpu += c2 - c1;
    }
    m.wall = t0.elapsed();
    m.process_cpu = process_cpu().saturating_sub(p0);
    if m.frames == 0 {
        return Err(format!("no frames came through ({} injected)", m.injected));
    }
    Ok(m)
}

/// The machine's limit: read(2) from one TAP, write(2) to another, nothing else.
fn plain_forwarder(len: usize) -> Result<Measurement, String> {
    let ns = Netns::new("bench")?;
    let input = ns.create_tap(IN_TAP, &TapConfig::default())?;
    let output = ns.create_tap(OUT_TAP, &TapConfig::default())?;
    let inj = Injector::new(&ns, IN_TAP, len)?;
    let (rfd, wfd) = (input.as_raw_fd(), output.as_raw_fd());
    let mut buf = vec![0u8; 65_536];
    measure(&inj, |want| {
        let mut done = 0;
        let mut last = Instant::now();
        while done < want {
            // SAFETY: `buf` is live and writable for its length.
            let n = unsafe { libc::read(rfd, buf.as_mut_ptr() as *mut libc::c_void, buf.len()) };
            if n < 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() != std::io::ErrorKind::WouldBlock {
                    return Err(format!("read: {e}"));
                }
                if last.elapsed() > STALL {
                    break;
                }
                continue;
            }
            // SAFETY: the first `n` bytes of `buf` were just read.
            let w = unsafe { libc::write(wfd, buf.as_ptr() as *const libc::c_void, n as usize) };
            if w < 0 {
                return Err(format!("write: {}", std::io::Error::last_os_error()));
            }
            done += 1;
            last = Instant::now();
        }
        Ok(done)
    })
}

/// Hands every frame straight back as a receive indication: the bridge's own cost.
#[derive(Default)]
struct EchoMiniport {
    queued: VecDeque<Vec<u8>>,
}

impl NetMiniport for EchoMiniport {
    fn send(&mut self, frames: &mut VecDeque<Vec<u8>>) -> Result<(), NetError> {
        self.queued.append(frames);
        Ok(())
    }
    fn service(&mut self, events: &mut Vec<NetEvent>) -> Result<(), NetError> {
        events.extend(self.queued.drain(..).map(NetEvent::Receive));
        Ok(())
    }
    fn next_deadline(&self) -> Option<Instant> {
        None
    }
    fn wake_fds(&self) -> Vec<RawFd> {
        Vec::new()
    }
}

/// Packets per second and CPU per packet of "TAP -> miniport -> ... -> miniport receive -> TAP":
/// frames Linux transmits on a fresh upper TAP go through a [`Bridge`] into `miniport`; what it
/// indicates back is written into the same TAP. The miniport must hand back every frame it sends
/// (a `LoopbackPort` wire); frames are broadcast (`ff:ff:ff:ff:ff:ff`), ethertype 0x88b5, so an
/// address filter accepting broadcast passes them. Counted: receive indications delivered.
fn measure_miniport(miniport: &mut dyn NetMiniport, len: usize) -> Result<Measurement, String> {
    let ns = Netns::new("bench")?;
    let up = ns.create_tap(UP_TAP, &TapConfig::default())?;
    let inj = Injector::new(&ns, UP_TAP, len)?;
    let mut bridge = Bridge::with_config(miniport, up, BridgeConfig::default());
    let m = measure(&inj, |want| {
        let target = bridge.stats().frames_up + want;
        let mut last = Instant::now();
        while bridge.stats().frames_up < target {
            if bridge.step(Duration::ZERO).map_err(|e| e.to_string())? {
                last = Instant::now();
            } else if last.elapsed() > STALL {
                break;
            }
        }
        Ok(want - target.saturating_sub(bridge.stats().frames_up))
    })?;
    let s = bridge.stats();
    if s.up_drops > 0 {
        eprintln!(
            "  note: {} indications could not be written to the TAP",
            s.up_drops
        );
    }
    Ok(m)
}

/// Miniports measured with [`measure_miniport`]: a name and a constructor.
type MakeMiniport = Box<dyn Fn() -> Result<Box<dyn NetMiniport>, String>>;

/// A real NDIS miniport binary on the RTL8139 model whose wire is a loopback cable: every frame
/// the bridge hands it is sent by the driver, comes back through the model's receive DMA, the
/// interrupt and the receive indication, and goes back up.
fn ndis_loopback(arch: Arch, driver: &'static str) -> MakeMiniport {
    Box::new(move || {
        let dev = Box::new(Rtl8139::new(NDIS_MAC, Box::new(LoopbackPort::new())));
        // Measured as users run it: without the verifier (special pool costs pages per block).
        let host = loader::DriverHost::new(arch).map_err(|e| e.to_string())?;
        let nic = NetAdapter::start(
            host,
            &ica_tests::driver_path(arch, driver),
            dev,
            None,
            Vec::new(),
        )
        .map_err(|e| e.to_string())?;
        Ok(Box::new(nic) as Box<dyn NetMiniport>)
    })
}

/// Station address of the benchmarked adapters.
const NDIS_MAC: [u8; 6] = [0x02, 0x1C, 0xA0, 0x00, 0x81, 0x39];

fn miniport_rows() -> Vec<(&'static str, MakeMiniport)> {
    vec![
        (
            "bridge+echo",
            Box::new(|| Ok(Box::new(EchoMiniport::default()) as Box<dyn NetMiniport>)),
        ),
        (
            "ndis5 rtl8139 x86",
            ndis_loopback(Arch::X86, "rtl8139_ndis5"),
        ),
        (
            "ndis5 rtl8139 x64",
            ndis_loopback(Arch::X64, "rtl8139_ndis5"),
        ),
        (
            "ndis6 rtl8139 x86",
            ndis_loopback(Arch::X86, "rtl8139_ndis6"),
        ),
        (
            "ndis6 rtl8139 x64",
            ndis_loopback(Arch::X64, "rtl8139_ndis6"),
        ),
    ]
}

fn print_row(name: &str, len: usize, m: &Measurement, base: &Measurement) {
    println!(
        "{name:<24} {len:>5} {:>8} {:>5} {:>10.2} {:>9.0} {:>10.2} {:>9.0} {:>11.2} {:>8.2}x {:>8.2}x",
        m.frames,
        m.injected - m.frames.min(m.injected),
        m.forward_us(),
        m.forward_pps(),
        m.inject_us(),
        m.pps(),
        m.process_us(),
        m.forward_pps() / base.forward_pps(),
        m.forward_us() / base.forward_us(),
    );
}

fn run() -> Result<(), String> {
    println!(
        "{:<24} {:>5} {:>8} {:>5} {:>10} {:>9} {:>10} {:>9} {:>11} {:>9} {:>9}",
        "path",
        "bytes",
        "frames",
        "lost",
        "fwd us/pkt",
        "fwd pps",
        "inj us/pkt",
        "pps",
        "proc us/pkt",
        "pps/base",
        "cpu/base"
    );
    for len in FRAME_SIZES {
        let base = plain_forwarder(len).map_err(|e| format!("tap->tap, {len} bytes: {e}"))?;
        print_row("tap->tap", len, &base, &base);
        for (name, make) in miniport_rows() {
            let mut mp = make().map_err(|e| format!("{name}: {e}"))?;
            let m = measure_miniport(mp.as_mut(), len)
                .map_err(|e| format!("{name}, {len} bytes: {e}"))?;
            print_row(name, len, &m, &base);
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    // `cargo bench` passes --bench; `cargo test --all-targets` runs bench targets without it.
    if !std::env::args().any(|a| a == "--bench") {
        println!("net benchmark: not run (use `cargo bench -p ica-tests --bench net`)");
        return ExitCode::SUCCESS;
    }
    if let Some(why) = skip_reason() {
        println!("net benchmark skipped: {why}");
        return ExitCode::SUCCESS;
    }
    if cfg!(debug_assertions) {
        println!("warning: built without optimisations; the numbers mean little");
    }
    println!(
        "NIC host loop: {} s per row after {} ms warm-up, rounds of {BATCH} frames, one thread",
        RUN.as_secs_f64(),
        WARMUP.as_millis()
    );
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
