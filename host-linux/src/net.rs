//! The host loop of a network adapter: frames Linux sends on the upper edge (a TAP) go to a guest
//! miniport's send path; what the miniport indicates (received frames, link changes) goes back to
//! the upper edge. The miniport is anything implementing [`NetMiniport`] (the NDIS runtime for NDIS
//! 5 and 6 adapters, or a plain Rust fake in tests); the upper edge is anything implementing
//! [`UpperEdge`] ([`TapPort`], or the in-process [`QueueUpper`] for tests without root).
//!
//! ```text
//!  Linux stack <-> TapPort (upper edge) <-> Bridge <-> NetMiniport (guest) <-> device model <-> wire
//! ```
//!
//! "Down" is Linux -> miniport (send), "up" is miniport -> Linux (receive indications).

use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::tap::{TapError, TapPort};

/// A network adapter driven by a guest miniport, as the host loop sees it.
pub trait NetMiniport {
    /// Hands frames (whole Ethernet frames, no FCS) to the miniport's send path. Takes frames
    /// from the front of `frames` while the miniport accepts them; frames left in the queue are
    /// retried on a later call (back-pressure, never dropped silently).
    fn send(&mut self, frames: &mut VecDeque<Vec<u8>>) -> Result<(), NetError>;
    /// Does pending work: polls the device model(s), delivers interrupts (ISR + DPC), runs due
    /// timers and work items; pushes what the miniport indicated onto `events`.
    fn service(&mut self, events: &mut Vec<NetEvent>) -> Result<(), NetError>;
    /// The latest time service() must be called again (the next guest timer), if any.
    fn next_deadline(&self) -> Option<Instant>;
    /// File descriptors whose readability means service() has work (e.g. a TAP used as the
    /// device model's wire).
    fn wake_fds(&self) -> Vec<RawFd>;
}

impl<M: NetMiniport + ?Sized> NetMiniport for &mut M {
    fn send(&mut self, frames: &mut VecDeque<Vec<u8>>) -> Result<(), NetError> {
        (**self).send(frames)
    }
    fn service(&mut self, events: &mut Vec<NetEvent>) -> Result<(), NetError> {
        (**self).service(events)
    }
    fn next_deadline(&self) -> Option<Instant> {
        (**self).next_deadline()
    }
    fn wake_fds(&self) -> Vec<RawFd> {
        (**self).wake_fds()
    }
}

impl<M: NetMiniport + ?Sized> NetMiniport for Box<M> {
    fn send(&mut self, frames: &mut VecDeque<Vec<u8>>) -> Result<(), NetError> {
        (**self).send(frames)
    }
    fn service(&mut self, events: &mut Vec<NetEvent>) -> Result<(), NetError> {
        (**self).service(events)
    }
    fn next_deadline(&self) -> Option<Instant> {
        (**self).next_deadline()
    }
    fn wake_fds(&self) -> Vec<RawFd> {
        (**self).wake_fds()
    }
}

/// What a miniport indicated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetEvent {
    /// A received frame (whole Ethernet frame, no FCS).
    Receive(Vec<u8>),
    /// Media connect (`true`) or disconnect (`false`).
    Link(bool),
}

/// A failure of the guest side (its message is the driver host's full report).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetError {
    pub message: String,
}

impl NetError {
    pub fn new(message: impl Into<String>) -> NetError {
        NetError {
            message: message.into(),
        }
    }
}

impl fmt::Display for NetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for NetError {}

/// The interface Linux sees: frames Linux transmits come out of it, frames the adapter received
/// go into it, and it shows the adapter's link state as its carrier.
pub trait UpperEdge {
    /// The next frame Linux sent, without blocking; `Ok(None)` when none is pending.
    fn recv_frame(&mut self) -> io::Result<Option<Vec<u8>>>;
    /// Hands a received frame to Linux.
    fn send_frame(&mut self, frame: &[u8]) -> io::Result<()>;
    /// Shows the adapter's link state.
    fn set_carrier(&mut self, up: bool) -> io::Result<()>;
    /// A descriptor readable when [`recv_frame`](Self::recv_frame) has a frame, if any.
    fn poll_fd(&self) -> Option<RawFd>;
}

fn tap_io(e: TapError) -> io::Error {
    io::Error::new(e.source.kind(), e.to_string())
}

impl UpperEdge for TapPort {
    fn recv_frame(&mut self) -> io::Result<Option<Vec<u8>>> {
        self.try_recv().map_err(tap_io)
    }
    fn send_frame(&mut self, frame: &[u8]) -> io::Result<()> {
        self.try_send(frame).map_err(tap_io)
    }
    fn set_carrier(&mut self, up: bool) -> io::Result<()> {
        TapPort::set_carrier(self, up).map_err(tap_io)
    }
    fn poll_fd(&self) -> Option<RawFd> {
        Some(self.as_raw_fd())
    }
}

impl<U: UpperEdge + ?Sized> UpperEdge for &mut U {
    fn recv_frame(&mut self) -> io::Result<Option<Vec<u8>>> {
        (**self).recv_frame()
    }
    fn send_frame(&mut self, frame: &[u8]) -> io::Result<()> {
        (**self).send_frame(frame)
    }
    fn set_carrier(&mut self, up: bool) -> io::Result<()> {
        (**self).set_carrier(up)
    }
    fn poll_fd(&self) -> Option<RawFd> {
        (**self).poll_fd()
    }
}

/// What the upper edge should show before the first indication: the adapter's address and MTU
/// (from OID queries: `OID_802_3_CURRENT_ADDRESS`, `OID_GEN_MAXIMUM_FRAME_SIZE`) and its link
/// state (`OID_GEN_MEDIA_CONNECT_STATUS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpperSetup {
    pub mac: [u8; 6],
    pub mtu: u32,
    pub link_up: bool,
}

/// Sets a TAP's MAC and MTU, its carrier to `link_up`, and brings it up. The `SIOCSIF*` ioctls act
/// in the caller's network namespace, so call this while the TAP is in it (a TAP in another
/// namespace is configured with `ip -n NS link set ...`; `ica_tests::netns` does that).
pub fn setup_tap(tap: &TapPort, setup: &UpperSetup) -> Result<(), TapError> {
    tap.set_mac(setup.mac)?;
    tap.set_mtu(setup.mtu)?;
    tap.set_carrier(setup.link_up)?;
    tap.set_up(true)
}

#[derive(Debug, Default)]
struct UpperQueues {
    /// Frames "Linux" sent, waiting for the bridge.
    down: VecDeque<Vec<u8>>,
    /// Frames the bridge delivered.
    up: VecDeque<Vec<u8>>,
    carrier: Option<bool>,
    carrier_changes: u64,
}

#[derive(Debug)]
struct UpperShared {
    q: Mutex<UpperQueues>,
    /// Readable while `down` is not empty.
    event: Option<OwnedFd>,
}

impl UpperShared {
    fn lock(&self) -> MutexGuard<'_, UpperQueues> {
        self.q.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn signal(&self, on: bool) {
        let Some(fd) = &self.event else { return };
        if on {
            let one: u64 = 1;
            // SAFETY: writes 8 bytes from a live u64 to an eventfd we own.
            unsafe { libc::write(fd.as_raw_fd(), &one as *const u64 as *const libc::c_void, 8) };
        } else {
            let mut v: u64 = 0;
            // SAFETY: reads 8 bytes into a live u64 from a non-blocking eventfd we own.
            unsafe { libc::read(fd.as_raw_fd(), &mut v as *mut u64 as *mut libc::c_void, 8) };
        }
    }
}

/// An in-process upper edge: the test plays Linux through a [`QueueUpperHandle`]. Its poll fd is
/// an eventfd readable while injected frames wait, so a bridge on another thread wakes up.
#[derive(Debug)]
pub struct QueueUpper {
    shared: Arc<UpperShared>,
}

/// The "Linux" end of a [`QueueUpper`].
#[derive(Debug, Clone)]
pub struct QueueUpperHandle {
    shared: Arc<UpperShared>,
}

impl QueueUpper {
    /// An upper edge and the handle the test keeps.
    pub fn new() -> (QueueUpper, QueueUpperHandle) {
        // SAFETY: plain eventfd(2) call; the result is checked before being wrapped.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        // SAFETY: `fd` is a fresh descriptor owned by nobody else.
        let event = (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd) });
        let shared = Arc::new(UpperShared {
            q: Mutex::default(),
            event,
        });
        (
            QueueUpper {
                shared: shared.clone(),
            },
            QueueUpperHandle { shared },
        )
    }
}

impl UpperEdge for QueueUpper {
    fn recv_frame(&mut self) -> io::Result<Option<Vec<u8>>> {
        let mut q = self.shared.lock();
        let f = q.down.pop_front();
        if f.is_some() && q.down.is_empty() {
            self.shared.signal(false);
        }
        Ok(f)
    }
    fn send_frame(&mut self, frame: &[u8]) -> io::Result<()> {
        self.shared.lock().up.push_back(frame.to_vec());
        Ok(())
    }
    fn set_carrier(&mut self, up: bool) -> io::Result<()> {
        let mut q = self.shared.lock();
        if q.carrier != Some(up) {
            q.carrier_changes += 1;
        }
        q.carrier = Some(up);
        Ok(())
    }
    fn poll_fd(&self) -> Option<RawFd> {
        self.shared.event.as_ref().map(|f| f.as_raw_fd())
    }
}

impl QueueUpperHandle {
    /// Queues a frame as if Linux had sent it.
    pub fn inject(&self, frame: &[u8]) {
        let mut q = self.shared.lock();
        q.down.push_back(frame.to_vec());
        if q.down.len() == 1 {
            self.shared.signal(true);
        }
    }

    /// The oldest frame the bridge delivered to "Linux".
    pub fn take_delivered(&self) -> Option<Vec<u8>> {
        self.shared.lock().up.pop_front()
    }

    /// Frames injected and not yet taken by the bridge.
    pub fn pending_inject(&self) -> usize {
        self.shared.lock().down.len()
    }

    /// Delivered frames not yet taken.
    pub fn delivered_len(&self) -> usize {
        self.shared.lock().up.len()
    }

    /// The carrier last set (`None`: never set).
    pub fn carrier(&self) -> Option<bool> {
        self.shared.lock().carrier
    }

    /// How often the carrier changed.
    pub fn carrier_changes(&self) -> u64 {
        self.shared.lock().carrier_changes
    }
}

/// Why the bridge stopped.
#[derive(Debug)]
pub enum BridgeError {
    /// The miniport failed (guest fault, bug check ...).
    Guest(NetError),
    /// The upper edge could not be read or polled.
    Upper(io::Error),
}

impl fmt::Display for BridgeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BridgeError::Guest(e) => write!(f, "miniport failed: {e}"),
            BridgeError::Upper(e) => write!(f, "upper edge failed: {e}"),
        }
    }
}

impl std::error::Error for BridgeError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            BridgeError::Guest(e) => Some(e),
            BridgeError::Upper(e) => Some(e),
        }
    }
}

impl From<NetError> for BridgeError {
    fn from(e: NetError) -> Self {
        BridgeError::Guest(e)
    }
}

/// Tuning of the loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BridgeConfig {
    /// Frames read from the upper edge per iteration at most.
    pub batch: usize,
    /// The upper edge is not read while this many frames wait for the miniport (they wait in the
    /// upper edge's own queue instead: a TAP's queue, then its qdisc).
    pub max_pending: usize,
    /// Longest sleep in poll(2) when the miniport names no earlier deadline.
    pub poll_cap: Duration,
    /// Sleep before offering refused frames again when nothing else wakes the loop.
    pub retry_interval: Duration,
}

impl Default for BridgeConfig {
    fn default() -> Self {
        BridgeConfig {
            batch: 64,
            max_pending: 256,
            poll_cap: Duration::from_millis(50),
            retry_interval: Duration::from_millis(1),
        }
    }
}

/// Counters of a [`Bridge`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BridgeStats {
    /// Frames read from the upper edge (Linux sent them).
    pub frames_read: u64,
    /// Frames the miniport accepted (down: Linux -> miniport).
    pub frames_down: u64,
    pub bytes_down: u64,
    /// Receive indications written to the upper edge (up: miniport -> Linux).
    pub frames_up: u64,
    pub bytes_up: u64,
    /// Receive indications the upper edge refused (e.g. a TAP that is down answers EIO).
    pub up_drops: u64,
    /// send() calls offering frames an earlier call left in the queue.
    pub send_retries: u64,
    /// Link events.
    pub link_events: u64,
    /// Link events that changed the link state (the first one always does).
    pub link_changes: u64,
    /// Carrier updates the upper edge refused.
    pub carrier_errors: u64,
    /// The link state last indicated.
    pub link: Option<bool>,
    /// Loop iterations, and those that slept in poll(2).
    pub iterations: u64,
    pub polls: u64,
}

/// Connects a [`NetMiniport`] to an [`UpperEdge`]. Single-threaded: the miniport (which may be
/// neither `Send` nor `Sync`) is driven on the thread that runs the bridge.
pub struct Bridge<M: NetMiniport, U: UpperEdge> {
    miniport: M,
    upper: U,
    config: BridgeConfig,
    /// Frames read from the upper edge the miniport has not taken yet.
    pending: VecDeque<Vec<u8>>,
    /// Bytes in `pending`.
    pending_bytes: usize,
    /// The last send() left frames behind.
    refused: bool,
    events: Vec<NetEvent>,
    /// The last iteration moved something: look for more work before sleeping.
    busy: bool,
    stats: BridgeStats,
}

impl<M: NetMiniport, U: UpperEdge> Bridge<M, U> {
    pub fn new(miniport: M, upper: U) -> Self {
        Bridge::with_config(miniport, upper, BridgeConfig::default())
    }

    pub fn with_config(miniport: M, upper: U, config: BridgeConfig) -> Self {
        Bridge {
            miniport,
            upper,
            config: BridgeConfig {
                batch: config.batch.max(1),
                max_pending: config.max_pending.max(1),
                ..config
            },
            pending: VecDeque::new(),
            pending_bytes: 0,
            refused: false,
            events: Vec::new(),
            busy: true,
            stats: BridgeStats::default(),
        }
    }

    pub fn stats(&self) -> BridgeStats {
        self.stats
    }

    /// Frames read from the upper edge and still waiting for the miniport.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    pub fn miniport(&self) -> &M {
        &self.miniport
    }

    pub fn miniport_mut(&mut self) -> &mut M {
        &mut self.miniport
    }

    pub fn upper(&self) -> &U {
        &self.upper
    }

    pub fn upper_mut(&mut self) -> &mut U {
        &mut self.upper
    }

    /// The miniport, the upper edge and the frames the miniport never took.
    pub fn into_parts(self) -> (M, U, VecDeque<Vec<u8>>) {
        (self.miniport, self.upper, self.pending)
    }

    /// How long the next iteration may sleep, given at most `max_wait`.
    fn wait_time(&self, max_wait: Duration) -> Duration {
        if self.busy {
            return Duration::ZERO;
        }
        let mut wait = max_wait.min(self.config.poll_cap);
        if !self.pending.is_empty() {
            wait = wait.min(self.config.retry_interval);
        }
        if let Some(d) = self.miniport.next_deadline() {
            wait = wait.min(d.saturating_duration_since(Instant::now()));
        }
        wait
    }

    /// Sleeps in poll(2) until the upper edge or a wake fd is readable or `wait` passed.
    fn sleep(&mut self, wait: Duration) -> Result<(), BridgeError> {
        let mut fds: Vec<libc::pollfd> = Vec::with_capacity(4);
        if self.pending.len() < self.config.max_pending {
            if let Some(fd) = self.upper.poll_fd() {
                fds.push(libc::pollfd {
                    fd,
                    events: libc::POLLIN,
                    revents: 0,
                });
            }
        }
        for fd in self.miniport.wake_fds() {
            fds.push(libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            });
        }
        // Round up so a deadline 0.3 ms away does not turn into a busy loop of 0 ms polls.
        let ms = wait.as_micros().div_ceil(1000).min(i32::MAX as u128) as libc::c_int;
        self.stats.polls += 1;
        // SAFETY: `fds` is a live array of `fds.len()` pollfd structures.
        let rc = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
        if rc < 0 {
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(BridgeError::Upper(e));
            }
        }
        Ok(())
    }

    /// Offers the pending frames to the miniport.
    fn offer(&mut self) -> Result<bool, BridgeError> {
        if self.pending.is_empty() {
            return Ok(false);
        }
        if self.refused {
            self.stats.send_retries += 1;
        }
        let before = self.pending.len();
        self.miniport.send(&mut self.pending)?;
        let taken = before.saturating_sub(self.pending.len());
        if taken > 0 {
            // Only the (usually empty) rest is summed: the taken frames are gone.
            let left: usize = self.pending.iter().map(Vec::len).sum();
            self.stats.frames_down += taken as u64;
            self.stats.bytes_down += self.pending_bytes.saturating_sub(left) as u64;
            self.pending_bytes = left;
        }
        self.refused = !self.pending.is_empty();
        Ok(taken > 0)
    }

    /// One iteration: sleep (at most `max_wait`, and not at all if the last iteration moved
    /// something), read the upper edge, send, service, deliver the indications. Returns whether
    /// anything moved.
    pub fn step(&mut self, max_wait: Duration) -> Result<bool, BridgeError> {
        self.stats.iterations += 1;
        let wait = self.wait_time(max_wait);
        if !self.busy {
            self.sleep(wait)?;
        }
        let mut progress = false;

        let mut n = 0;
        while n < self.config.batch && self.pending.len() < self.config.max_pending {
            match self.upper.recv_frame().map_err(BridgeError::Upper)? {
                Some(f) => {
                    self.pending_bytes += f.len();
                    self.pending.push_back(f);
                    n += 1;
                }
                None => break,
            }
        }
        self.stats.frames_read += n as u64;
        progress |= n > 0;

        progress |= self.offer()?;

        self.miniport.service(&mut self.events)?;
        let mut events = std::mem::take(&mut self.events);
        progress |= !events.is_empty();
        for ev in events.drain(..) {
            match ev {
                NetEvent::Receive(f) => match self.upper.send_frame(&f) {
                    Ok(()) => {
                        self.stats.frames_up += 1;
                        self.stats.bytes_up += f.len() as u64;
                    }
                    Err(e) => {
                        self.stats.up_drops += 1;
                        tracing::debug!(len = f.len(), "upper edge refused a frame: {e}");
                    }
                },
                NetEvent::Link(up) => {
                    self.stats.link_events += 1;
                    if self.stats.link != Some(up) {
                        self.stats.link_changes += 1;
                    }
                    self.stats.link = Some(up);
                    if let Err(e) = self.upper.set_carrier(up) {
                        self.stats.carrier_errors += 1;
                        tracing::warn!(
                            "cannot set the carrier {}: {e}",
                            if up { "on" } else { "off" }
                        );
                    }
                }
            }
        }
        self.events = events;

        // Servicing may have completed sends (freed descriptors): offer what is left once more.
        if self.refused {
            progress |= self.offer()?;
        }
        self.busy = progress;
        Ok(progress)
    }

    /// Runs until `stop` is set (checked at least every `poll_cap`).
    pub fn run(&mut self, stop: &AtomicBool) -> Result<(), BridgeError> {
        while !stop.load(Ordering::Relaxed) {
            self.step(self.config.poll_cap)?;
        }
        Ok(())
    }

    /// Runs for `duration`.
    pub fn run_for(&mut self, duration: Duration) -> Result<(), BridgeError> {
        let end = Instant::now() + duration;
        loop {
            let now = Instant::now();
            if now >= end {
                return Ok(());
            }
            self.step(end - now)?;
        }
    }

    /// Runs until `done` (called after every iteration, so at least every 10 ms) says so, or
    /// `timeout` passed. Returns whether `done` did.
    pub fn run_until(
        &mut self,
        timeout: Duration,
        mut done: impl FnMut(&Self) -> bool,
    ) -> Result<bool, BridgeError> {
        let end = Instant::now() + timeout;
        loop {
            if done(self) {
                return Ok(true);
            }
            let now = Instant::now();
            if now >= end {
                return Ok(false);
            }
            self.step((end - now).min(Duration::from_millis(10)))?;
        }
    }
}

/// Runs a bridge until `stop` is set, on a thread that owns it; for `Send` miniports.
pub fn spawn_bridge<M, U>(
    mut bridge: Bridge<M, U>,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<(Bridge<M, U>, Result<(), BridgeError>)>
where
    M: NetMiniport + Send + 'static,
    U: UpperEdge + Send + 'static,
{
    std::thread::spawn(move || {
        let r = bridge.run(&stop);
        (bridge, r)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Echoes every frame back as a receive; accepts `per_call` frames per send() call.
    struct Echo {
        per_call: usize,
        queued: VecDeque<Vec<u8>>,
        link: Option<bool>,
    }

    impl NetMiniport for Echo {
        fn send(&mut self, frames: &mut VecDeque<Vec<u8>>) -> Result<(), NetError> {
            for _ in 0..self.per_call {
                match frames.pop_front() {
                    Some(f) => self.queued.push_back(f),
                    None => break,
                }
            }
            Ok(())
        }
        fn service(&mut self, events: &mut Vec<NetEvent>) -> Result<(), NetError> {
            if let Some(up) = self.link.take() {
                events.push(NetEvent::Link(up));
            }
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

    #[test]
    fn queue_upper_round_trip_and_back_pressure() {
        let (upper, h) = QueueUpper::new();
        let echo = Echo {
            per_call: 1,
            queued: VecDeque::new(),
            link: Some(true),
        };
        let mut b = Bridge::new(echo, upper);
        for i in 0..10u8 {
            h.inject(&[i; 60]);
        }
        let ok = b
            .run_until(Duration::from_secs(2), |b| b.stats().frames_up == 10)
            .unwrap();
        assert!(ok, "{:?}", b.stats());
        let got: Vec<u8> = std::iter::from_fn(|| h.take_delivered())
            .map(|f| f[0])
            .collect();
        assert_eq!(got, (0..10).collect::<Vec<_>>());
        let s = b.stats();
        assert_eq!((s.frames_read, s.frames_down), (10, 10));
        assert!(s.send_retries > 0);
        assert_eq!(h.carrier(), Some(true));
        assert_eq!(s.link_changes, 1);
    }

    #[test]
    fn errors_stop_the_loop_with_the_guest_report() {
        struct Broken;
        impl NetMiniport for Broken {
            fn send(&mut self, _: &mut VecDeque<Vec<u8>>) -> Result<(), NetError> {
                Ok(())
            }
            fn service(&mut self, _: &mut Vec<NetEvent>) -> Result<(), NetError> {
                Err(NetError::new("guest fault at 0x1000"))
            }
            fn next_deadline(&self) -> Option<Instant> {
                None
            }
            fn wake_fds(&self) -> Vec<RawFd> {
                Vec::new()
            }
        }
        let (upper, _h) = QueueUpper::new();
        let mut b = Bridge::new(Broken, upper);
        let e = b.run_for(Duration::from_millis(10)).unwrap_err();
        assert!(matches!(&e, BridgeError::Guest(n) if n.message.contains("0x1000")));
        assert!(e.to_string().contains("guest fault"));
    }
}
