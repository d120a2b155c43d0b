//! Network namespaces for tests that need a real Linux network stack: throwaway namespaces
//! (deleted on drop, also when a test panics), TAP interfaces created inside them, work run inside
//! them on dedicated threads (`setns(2)`), a pure-Rust ping (raw ICMP socket) and a verified TCP
//! transfer, so no tools beyond iproute2 are needed.
//!
//! The end-to-end layout for a NIC driver ([`E2e`]):
//!
//! ```text
//!  namespace A                                             namespace B
//!  10.201.0.1 "ica-up" ==fd==> Bridge -> miniport -> device model ==fd==> "ica-wire" 10.201.0.2
//!             (upper edge)     (host-linux::net)         (wire port)       (the peer's network)
//! ```
//!
//! Traffic from A to B crosses the driver's send path; B's answer crosses its receive path.
//!
//! Everything here needs root (or CAP_SYS_ADMIN + CAP_NET_ADMIN) and `/dev/net/tun`; tests call
//! [`skip_reason`] first and return early with the printed reason when it is `Some`.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{mpsc, Once};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use host_linux::tap::TapPort;

/// Name prefix of every namespace this harness creates.
const PREFIX: &str = "icans";
const NETNS_DIR: &str = "/run/netns";

/// Why namespace tests cannot run here, if they cannot.
pub fn skip_reason() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not root (needs CAP_SYS_ADMIN and CAP_NET_ADMIN)".into());
    }
    if !Path::new("/dev/net/tun").exists() {
        return Some("/dev/net/tun is absent (load the tun module)".into());
    }
    if let Err(e) = Command::new("ip").arg("-V").output() {
        return Some(format!("iproute2's `ip` cannot run: {e}"));
    }
    None
}

/// Runs `ip ARGS` and returns its stdout, or an error with its stderr.
pub fn ip(args: &[&str]) -> Result<String, String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip {}: {e}", args.join(" ")))?;
    if !out.status.success() {
        return Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Formats a MAC the way iproute2 takes it.
pub fn mac_string(mac: [u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Deletes namespaces a killed earlier run of this harness left behind (their pid is gone).
fn remove_stale() {
    let Ok(dir) = std::fs::read_dir(NETNS_DIR) else {
        return;
    };
    for entry in dir.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let parts: Vec<&str> = name.split('-').collect();
        if parts.len() < 4 || parts[0] != PREFIX {
            continue;
        }
        let Ok(pid) = parts[parts.len() - 2].parse::<libc::pid_t>() else {
            continue;
        };
        // SAFETY: kill with signal 0 only checks whether the process exists.
        let gone = unsafe { libc::kill(pid, 0) } != 0
            && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH);
        if gone {
            let _ = ip(&["netns", "del", &name]);
        }
    }
}

/// Moves the calling thread into the namespace bound at `path`.
fn enter(path: &Path) -> Result<(), String> {
    let f = File::open(path).map_err(|e| format!("open {}: {e}", path.display()))?;
    // SAFETY: setns on a descriptor we hold open; affects only the calling thread's namespace.
    if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(format!(
            "setns {}: {}",
            path.display(),
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

/// Work running on its own thread (usually inside a namespace), so the caller's thread stays free
/// to drive a bridge (whose miniport need not be `Send`).
pub struct Job<T> {
    what: String,
    handle: Result<JoinHandle<Result<T, String>>, String>,
}

impl<T: Send + 'static> Job<T> {
    /// Runs `f` on a new thread, in the namespace bound at `netns` if given.
    fn spawn(
        what: &str,
        netns: Option<PathBuf>,
        f: impl FnOnce() -> Result<T, String> + Send + 'static,
    ) -> Job<T> {
        let handle = std::thread::Builder::new()
            .name(what.chars().take(15).collect())
            .spawn(move || {
                if let Some(p) = netns {
                    enter(&p)?;
                }
                f()
            })
            .map_err(|e| format!("cannot start a thread: {e}"));
        Job {
            what: what.to_owned(),
            handle,
        }
    }
}

impl<T> Job<T> {
    /// Whether the work is done (successfully or not); [`join`](Self::join) will not block.
    pub fn is_finished(&self) -> bool {
        self.handle.as_ref().map_or(true, |h| h.is_finished())
    }

    /// Waits for the result. A panic in the job becomes an error naming the job.
    pub fn join(self) -> Result<T, String> {
        let what = self.what;
        let h = self.handle.map_err(|e| format!("{what}: {e}"))?;
        match h.join() {
            Ok(r) => r.map_err(|e| format!("{what}: {e}")),
            Err(p) => {
                let msg = p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                Err(format!("{what} panicked: {msg}"))
            }
        }
    }
}

/// How to set up a TAP created with [`Netns::create_tap`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TapConfig {
    pub mac: Option<[u8; 6]>,
    pub mtu: Option<u32>,
    /// IPv4 address and prefix length.
    pub addr: Option<(Ipv4Addr, u8)>,
    /// Carrier (the link state the far side shows).
    pub carrier: bool,
    /// Bring the interface up.
    pub up: bool,
    /// No IPv6 link-local address (`addrgenmode none`): no router solicitations, DAD or MLD
    /// chatter in counted traffic.
    pub quiet_ipv6: bool,
}

impl Default for TapConfig {
    fn default() -> Self {
        TapConfig {
            mac: None,
            mtu: None,
            addr: None,
            carrier: true,
            up: true,
            quiet_ipv6: true,
        }
    }
}

static COUNTER: AtomicU32 = AtomicU32::new(0);
static CLEANUP: Once = Once::new();

/// A named network namespace (`ip netns add`), deleted on drop. Interfaces created in it vanish
/// with their TAP fd (or with the namespace, whichever goes last).
#[derive(Debug)]
pub struct Netns {
    name: String,
    path: PathBuf,
}

impl Netns {
    /// A fresh namespace named `icans-TAG-PID-N` with its loopback up.
    pub fn new(tag: &str) -> Result<Netns, String> {
        CLEANUP.call_once(remove_stale);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("{PREFIX}-{tag}-{}-{n}", std::process::id());
        ip(&["netns", "add", &name])?;
        let ns = Netns {
            path: Path::new(NETNS_DIR).join(&name),
            name,
        };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `/run/netns/NAME`, for `setns(2)`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `ip -n NAME ARGS`.
    pub fn ip(&self, args: &[&str]) -> Result<String, String> {
        let mut all = vec!["-n", &self.name];
        all.extend_from_slice(args);
        ip(&all)
    }

    /// Runs a program inside the namespace (`ip netns exec NAME PROGRAM ARGS`) and returns its
    /// stdout; a failure returns its stderr.
    pub fn exec(&self, program: &str, args: &[&str]) -> Result<String, String> {
        let mut all = vec!["netns", "exec", &self.name, program];
        all.extend_from_slice(args);
        ip(&all)
    }

    /// Runs `f` on a thread inside the namespace.
    pub fn spawn<T: Send + 'static>(
        &self,
        what: &str,
        f: impl FnOnce() -> Result<T, String> + Send + 'static,
    ) -> Job<T> {
        Job::spawn(what, Some(self.path.clone()), f)
    }

    /// Runs `f` inside the namespace and waits for it.
    pub fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> Result<T, String> + Send + 'static,
    ) -> Result<T, String> {
        self.spawn(&format!("in {}", self.name), f).join()
    }

    /// Creates a TAP named `name` inside the namespace (no clash with names elsewhere) and sets it
    /// up as `cfg` says. The returned port's fd works from any thread and namespace.
    pub fn create_tap(&self, name: &str, cfg: &TapConfig) -> Result<TapPort, String> {
        let owned = name.to_owned();
        let tap = self.run(move || TapPort::open(Some(&owned)).map_err(|e| e.to_string()))?;
        let dev = tap.name().to_owned();
        if let Some(mac) = cfg.mac {
            self.ip(&["link", "set", "dev", &dev, "address", &mac_string(mac)])?;
        }
        if let Some(mtu) = cfg.mtu {
            self.ip(&["link", "set", "dev", &dev, "mtu", &mtu.to_string()])?;
        }
        if cfg.quiet_ipv6 {
            // Best effort: fails harmlessly where IPv6 is disabled.
            let _ = self.ip(&["link", "set", "dev", &dev, "addrgenmode", "none"]);
        }
        if let Some((addr, len)) = cfg.addr {
            self.ip(&["addr", "add", &format!("{addr}/{len}"), "dev", &dev])?;
        }
        tap.set_carrier(cfg.carrier).map_err(|e| e.to_string())?;
        if cfg.up {
            self.ip(&["link", "set", "dev", &dev, "up"])?;
        }
        Ok(tap)
    }

    /// `ip -o link show dev DEV` inside the namespace.
    pub fn link_show(&self, dev: &str) -> Result<String, String> {
        self.ip(&["-o", "link", "show", "dev", dev])
    }

    /// Whether `dev` (an interface that is up) has its carrier: `LOWER_UP`, which follows
    /// `TUNSETCARRIER` at once (`NO-CARRIER` follows the operational state, updated later).
    pub fn carrier(&self, dev: &str) -> Result<bool, String> {
        let s = self.link_show(dev)?;
        let flags = s
            .split_once('<')
            .and_then(|(_, r)| r.split_once('>'))
            .map(|(f, _)| f.to_owned())
            .ok_or_else(|| format!("no flags in {s:?}"))?;
        Ok(flags.split(',').any(|f| f == "LOWER_UP"))
    }

    /// Pings `dst` from inside the namespace `count` times (one echo at a time, each waiting up
    /// to `per_reply` for its answer), with a pure-Rust raw ICMP socket.
    pub fn ping(&self, dst: Ipv4Addr, count: u16, per_reply: Duration) -> Job<PingReport> {
        self.spawn(&format!("ping {dst}"), move || {
            ping_blocking(dst, count, per_reply)
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Err(e) = ip(&["netns", "del", &self.name]) {
            eprintln!("warning: cannot delete namespace {}: {e}", self.name);
        }
    }
}

/// Result of [`Netns::ping`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PingReport {
    pub sent: u16,
    pub received: u16,
    /// Replies to an echo already answered (or answered after its wait ended).
    pub duplicates: u16,
    /// Round-trip times of the answered echoes.
    pub rtts: Vec<Duration>,
}

impl PingReport {
    pub fn avg_rtt(&self) -> Option<Duration> {
        let n = u32::try_from(self.rtts.len()).ok().filter(|&n| n > 0)?;
        Some(self.rtts.iter().sum::<Duration>() / n)
    }
}

/// RFC 1071 checksum.
pub fn inet_checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn raw_icmp_socket() -> Result<OwnedFd, String> {
    // SAFETY: plain socket(2) call; the result is checked before being wrapped.
    let fd = unsafe {
        libc::socket(
            libc::AF_INET,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::IPPROTO_ICMP,
        )
    };
    if fd < 0 {
        return Err(format!(
            "raw ICMP socket: {}",
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: a fresh descriptor owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn sockaddr_in(addr: Ipv4Addr) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(addr.octets()),
        },
        sin_zero: [0; 8],
    }
}

fn ping_blocking(dst: Ipv4Addr, count: u16, per_reply: Duration) -> Result<PingReport, String> {
    let sock = raw_icmp_socket()?;
    let id = (std::process::id() as u16) ^ (COUNTER.fetch_add(1, Ordering::Relaxed) as u16);
    let to = sockaddr_in(dst);
    let mut report = PingReport::default();
    let mut answered = vec![false; usize::from(count)];
    let mut buf = [0u8; 2048];
    for seq in 0..count {
        let mut icmp = vec![8, 0, 0, 0];
        icmp.extend_from_slice(&id.to_be_bytes());
        icmp.extend_from_slice(&seq.to_be_bytes());
        icmp.extend((0..56u8).map(|i| i.wrapping_mul(7)));
        let c = inet_checksum(&icmp);
        icmp[2..4].copy_from_slice(&c.to_be_bytes());
        let sent_at = Instant::now();
        // SAFETY: `icmp` and `to` are live for the call; the lengths are theirs.
        let rc = unsafe {
            libc::sendto(
                sock.as_raw_fd(),
                icmp.as_ptr() as *const libc::c_void,
                icmp.len(),
                0,
                &to as *const libc::sockaddr_in as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(format!("sendto {dst}: {}", std::io::Error::last_os_error()));
        }
        report.sent += 1;
        let end = sent_at + per_reply;
        while !answered[usize::from(seq)] {
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            let mut pfd = libc::pollfd {
                fd: sock.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            let ms = left.as_millis().clamp(1, 60_000) as libc::c_int;
            // SAFETY: one live pollfd.
            if unsafe { libc::poll(&mut pfd, 1, ms) } <= 0 {
                continue;
            }
            // SAFETY: `buf` is live and writable for its length.
            let n = unsafe {
                libc::recv(
                    sock.as_raw_fd(),
                    buf.as_mut_ptr() as *mut libc::c_void,
                    buf.len(),
                    libc::MSG_DONTWAIT,
                )
            };
            let Ok(n) = usize::try_from(n) else { continue };
            let pkt = &buf[..n];
            if n < 20 {
                continue;
            }
            let ihl = usize::from(pkt[0] & 0xf) * 4;
            if n < ihl + 8 || pkt[12..16] != dst.octets() {
                continue;
            }
            let reply = &pkt[ihl..];
            if reply[0] != 0 || reply[4..6] != id.to_be_bytes() || inet_checksum(reply) != 0 {
                continue;
            }
            let rseq = u16::from_be_bytes([reply[6], reply[7]]);
            match answered.get_mut(usize::from(rseq)) {
                Some(a) if !*a && rseq == seq => {
                    *a = true;
                    report.received += 1;
                    report.rtts.push(sent_at.elapsed());
                }
                Some(_) => report.duplicates += 1,
                None => {}
            }
        }
    }
    Ok(report)
}

/// Result of [`tcp_transfer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransferReport {
    /// Bytes the server received, all verified against the pattern the client sent.
    pub bytes: u64,
    /// From the client's connect to the server's acknowledgement of the last byte.
    pub elapsed: Duration,
    /// CRC-32 of the received bytes (equal to the client's).
    pub crc32: u32,
}

impl TransferReport {
    pub fn mbit_per_s(&self) -> f64 {
        self.bytes as f64 * 8.0 / self.elapsed.as_secs_f64().max(1e-9) / 1e6
    }
}

/// Byte `i` of the transfer pattern: a hash of the 8-byte word it belongs to, so a shifted,
/// repeated or lost segment never matches.
fn pattern_byte(i: u64) -> u8 {
    let mut z = (i / 8).wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z >> (8 * (i % 8))) as u8
}

fn fill_pattern(offset: u64, buf: &mut [u8]) {
    for (k, b) in buf.iter_mut().enumerate() {
        *b = pattern_byte(offset + k as u64);
    }
}

/// CRC-32 (IEEE), table driven.
#[derive(Clone)]
pub struct Crc32 {
    table: [u32; 256],
    crc: u32,
}

impl Default for Crc32 {
    fn default() -> Self {
        Crc32::new()
    }
}

impl Crc32 {
    pub fn new() -> Crc32 {
        let mut table = [0u32; 256];
        for (i, t) in table.iter_mut().enumerate() {
            let mut c = i as u32;
            for _ in 0..8 {
                c = if c & 1 != 0 {
                    (c >> 1) ^ 0xEDB8_8320
                } else {
                    c >> 1
                };
            }
            *t = c;
        }
        Crc32 {
            table,
            crc: 0xFFFF_FFFF,
        }
    }

    pub fn update(&mut self, data: &[u8]) {
        for &b in data {
            self.crc = self.table[((self.crc ^ u32::from(b)) & 0xff) as usize] ^ (self.crc >> 8);
        }
    }

    pub fn value(&self) -> u32 {
        !self.crc
    }
}

/// Server side: accepts one connection, verifies every byte against the pattern, acknowledges
/// with the byte count (u64 BE) and CRC-32 (u32 BE).
fn tcp_server(listener: TcpListener, bytes: u64, deadline: Instant) -> Result<(u64, u32), String> {
    listener
        .set_nonblocking(true)
        .map_err(|e| format!("listener: {e}"))?;
    let mut stream = loop {
        match listener.accept() {
            Ok((s, _)) => break s,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if Instant::now() >= deadline {
                    return Err("no connection before the deadline".into());
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            Err(e) => return Err(format!("accept: {e}")),
        }
    };
    stream
        .set_nonblocking(false)
        .map_err(|e| format!("server socket: {e}"))?;
    let left = deadline.saturating_duration_since(Instant::now());
    stream
        .set_read_timeout(Some(left.max(Duration::from_millis(1))))
        .map_err(|e| format!("server socket: {e}"))?;
    let mut crc = Crc32::new();
    let mut got: u64 = 0;
    let mut buf = vec![0u8; 256 * 1024];
    let mut want = vec![0u8; buf.len()];
    loop {
        let n = match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(format!("server read after {got} bytes: {e}")),
        };
        if got + n as u64 > bytes {
            return Err(format!("server got more than {bytes} bytes"));
        }
        fill_pattern(got, &mut want[..n]);
        if let Some(k) = (0..n).find(|&k| buf[k] != want[k]) {
            return Err(format!(
                "data mismatch at byte {}: got {:#04x}, want {:#04x}",
                got + k as u64,
                buf[k],
                want[k]
            ));
        }
        crc.update(&buf[..n]);
        got += n as u64;
        if Instant::now() >= deadline {
            return Err(format!("deadline passed after {got} of {bytes} bytes"));
        }
    }
    if got != bytes {
        return Err(format!("server got {got} of {bytes} bytes"));
    }
    let mut ack = got.to_be_bytes().to_vec();
    ack.extend_from_slice(&crc.value().to_be_bytes());
    stream
        .write_all(&ack)
        .map_err(|e| format!("server ack: {e}"))?;
    Ok((got, crc.value()))
}

/// Client side: connects, sends `bytes` of the pattern, waits for the acknowledgement.
fn tcp_client(to: SocketAddrV4, bytes: u64, deadline: Instant) -> Result<(Duration, u32), String> {
    let left = deadline.saturating_duration_since(Instant::now());
    let start = Instant::now();
    let mut s = TcpStream::connect_timeout(&SocketAddr::V4(to), left.max(Duration::from_millis(1)))
        .map_err(|e| format!("connect {to}: {e}"))?;
    let left = deadline.saturating_duration_since(Instant::now());
    s.set_write_timeout(Some(left.max(Duration::from_millis(1))))
        .and_then(|_| s.set_read_timeout(Some(left.max(Duration::from_millis(1)))))
        .map_err(|e| format!("client socket: {e}"))?;
    let mut crc = Crc32::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut sent = 0u64;
    while sent < bytes {
        let n = (bytes - sent).min(buf.len() as u64) as usize;
        fill_pattern(sent, &mut buf[..n]);
        s.write_all(&buf[..n])
            .map_err(|e| format!("client write after {sent} bytes: {e}"))?;
        crc.update(&buf[..n]);
        sent += n as u64;
    }
    s.shutdown(Shutdown::Write)
        .map_err(|e| format!("client shutdown: {e}"))?;
    let mut ack = [0u8; 12];
    s.read_exact(&mut ack)
        .map_err(|e| format!("client waiting for the ack: {e}"))?;
    let elapsed = start.elapsed();
    let acked = u64::from_be_bytes(ack[..8].try_into().unwrap_or_default());
    let acked_crc = u32::from_be_bytes(ack[8..].try_into().unwrap_or_default());
    if acked != bytes || acked_crc != crc.value() {
        return Err(format!(
            "server acknowledged {acked} bytes, CRC {acked_crc:#010x}; sent {bytes}, CRC {:#010x}",
            crc.value()
        ));
    }
    Ok((elapsed, crc.value()))
}

/// Sends `bytes` over one TCP connection from a client in `client` to a server listening on
/// `server_addr` in `server` and verifies every byte (the pattern, then CRC-32 on both ends).
/// The whole exchange must end within `timeout`.
pub fn tcp_transfer(
    server: &Netns,
    server_addr: SocketAddrV4,
    client: &Netns,
    bytes: u64,
    timeout: Duration,
) -> Job<TransferReport> {
    let deadline = Instant::now() + timeout;
    let (ready_tx, ready_rx) = mpsc::channel::<Result<(), String>>();
    let server_job = server.spawn("tcp server", move || {
        let listener = match TcpListener::bind(server_addr) {
            Ok(l) => l,
            Err(e) => {
                let msg = format!("bind {server_addr}: {e}");
                let _ = ready_tx.send(Err(msg.clone()));
                return Err(msg);
            }
        };
        let _ = ready_tx.send(Ok(()));
        tcp_server(listener, bytes, deadline)
    });
    let client_path = client.path.clone();
    Job::spawn("tcp transfer", None, move || {
        let ready = ready_rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .map_err(|_| "the server did not start".to_string());
        let client_result = match ready {
            Ok(Ok(())) => Job::spawn("tcp client", Some(client_path), move || {
                tcp_client(server_addr, bytes, deadline)
            })
            .join(),
            Ok(Err(e)) | Err(e) => Err(e),
        };
        let server_result = server_job.join();
        let (elapsed, client_crc) = client_result?;
        let (got, crc32) = server_result?;
        if crc32 != client_crc {
            return Err(format!(
                "CRC differs: client {client_crc:#010x}, server {crc32:#010x}"
            ));
        }
        Ok(TransferReport {
            bytes: got,
            elapsed,
            crc32,
        })
    })
}

/// The upper-edge TAP's name (namespace A).
pub const UP_TAP: &str = "ica-up";
/// The wire TAP's name (namespace B).
pub const WIRE_TAP: &str = "ica-wire";
/// Addresses of the two ends.
pub const A_ADDR: Ipv4Addr = Ipv4Addr::new(10, 201, 0, 1);
pub const B_ADDR: Ipv4Addr = Ipv4Addr::new(10, 201, 0, 2);
pub const PREFIX_LEN: u8 = 24;
/// The peer's (namespace B's) MAC.
pub const PEER_MAC: [u8; 6] = [0x02, 0x1c, 0xa0, 0x77, 0x00, 0x02];
/// TCP port of [`E2e::tcp_a_to_b`]'s server.
pub const TCP_PORT: u16 = 5201;

/// What the driver reports about itself (from OID queries).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct E2eConfig {
    /// The NIC's current address; the upper TAP takes it, so frames Linux sends carry it as
    /// source and the card's address filter accepts the answers.
    pub nic_mac: [u8; 6],
    /// MTU of both TAPs.
    pub mtu: u32,
    /// Initial carrier of the upper TAP (media connect status).
    pub link_up: bool,
}

impl Default for E2eConfig {
    fn default() -> Self {
        E2eConfig {
            nic_mac: [0x52, 0x54, 0x00, 0x12, 0x34, 0x56],
            mtu: 1500,
            link_up: true,
        }
    }
}

/// Two namespaces for a NIC driver's end-to-end test: A holds [`UP_TAP`] (the driver's upper
/// edge, at [`A_ADDR`]), B holds [`WIRE_TAP`] (the device model's wire, at [`B_ADDR`]). Take
/// `up` and `wire` out (`let up = e2e.up;` is a partial move; the namespaces stay) and keep `a`
/// and `b` alive for the test's duration. Dropping deletes the namespaces; the interfaces go
/// when their fds close.
pub struct E2e {
    /// The upper edge: give it to the bridge.
    pub up: TapPort,
    /// The wire: give it to the device model as its `PacketPort`.
    pub wire: TapPort,
    pub a: Netns,
    pub b: Netns,
}

impl E2e {
    pub fn new(cfg: &E2eConfig) -> Result<E2e, String> {
        let a = Netns::new("a")?;
        let b = Netns::new("b")?;
        let up = a.create_tap(
            UP_TAP,
            &TapConfig {
                mac: Some(cfg.nic_mac),
                mtu: Some(cfg.mtu),
                addr: Some((A_ADDR, PREFIX_LEN)),
                carrier: cfg.link_up,
                ..TapConfig::default()
            },
        )?;
        let wire = b.create_tap(
            WIRE_TAP,
            &TapConfig {
                mac: Some(PEER_MAC),
                mtu: Some(cfg.mtu),
                addr: Some((B_ADDR, PREFIX_LEN)),
                ..TapConfig::default()
            },
        )?;
        Ok(E2e { up, wire, a, b })
    }

    /// Pings B from A (the echo crosses the driver's send path, the reply its receive path).
    pub fn ping_b_from_a(&self, count: u16) -> Job<PingReport> {
        self.a.ping(B_ADDR, count, Duration::from_secs(2))
    }

    /// Sends `bytes` from A to a server in B over TCP, verified.
    pub fn tcp_a_to_b(&self, bytes: u64, timeout: Duration) -> Job<TransferReport> {
        tcp_transfer(
            &self.b,
            SocketAddrV4::new(B_ADDR, TCP_PORT),
            &self.a,
            bytes,
            timeout,
        )
    }

    /// Whether A sees the upper TAP's carrier.
    pub fn up_carrier(&self) -> Result<bool, String> {
        self.a.carrier(UP_TAP)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pattern_and_crc() {
        let mut a = vec![0u8; 100];
        fill_pattern(0, &mut a);
        let mut b = vec![0u8; 60];
        fill_pattern(40, &mut b);
        assert_eq!(&a[40..], &b[..]);
        let mut c = Crc32::new();
        c.update(b"123456789");
        assert_eq!(c.value(), 0xCBF4_3926);
    }
}
