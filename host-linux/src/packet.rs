//! The upper edge of a network device model: where its frames go and come from. A frame is a
//! whole Ethernet frame without the CRC. The in-process port is a pair of queues shared with a
//! [`PortHandle`]; the TAP backend ([`crate::tap::TapPort`]) implements the same trait, and
//! [`LoopbackPort`] is a cable whose far end is its near end (what the card sends, it receives).

use std::collections::VecDeque;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Frames in and out of a device model.
pub trait PacketPort {
    /// The device transmitted `frame`.
    fn send(&mut self, frame: &[u8]);
    /// The next frame for the device to receive, if any.
    fn recv(&mut self) -> Option<Vec<u8>>;
    /// A descriptor that becomes readable when [`recv`](Self::recv) has a frame, for a host loop
    /// to poll(2) on (a TAP's fd). `None` (the default) when frames only appear as a result of
    /// the host's own calls (in-process queues, loopback).
    fn wake_fd(&self) -> Option<RawFd> {
        None
    }
}

#[derive(Debug, Default)]
struct Queues {
    sent: VecDeque<Vec<u8>>,
    inject: VecDeque<Vec<u8>>,
}

/// In-process port: transmitted frames queue up for the host, injected frames wait for the device.
#[derive(Debug, Clone, Default)]
pub struct QueuePort {
    q: Arc<Mutex<Queues>>,
}

/// The host's end of a [`QueuePort`].
#[derive(Debug, Clone)]
pub struct PortHandle {
    q: Arc<Mutex<Queues>>,
}

impl QueuePort {
    /// A port and the handle the host keeps.
    pub fn new() -> (QueuePort, PortHandle) {
        let port = QueuePort::default();
        let handle = PortHandle { q: port.q.clone() };
        (port, handle)
    }
}

impl PacketPort for QueuePort {
    fn send(&mut self, frame: &[u8]) {
        self.q.lock().unwrap().sent.push_back(frame.to_vec());
    }

    fn recv(&mut self) -> Option<Vec<u8>> {
        self.q.lock().unwrap().inject.pop_front()
    }
}

impl PortHandle {
    /// Queues a frame for the device to receive.
    pub fn inject(&self, frame: &[u8]) {
        self.q.lock().unwrap().inject.push_back(frame.to_vec());
    }

    /// Takes the oldest frame the device transmitted.
    pub fn take_sent(&self) -> Option<Vec<u8>> {
        self.q.lock().unwrap().sent.pop_front()
    }

    /// Frames injected but not yet received by the device.
    pub fn pending_inject(&self) -> usize {
        self.q.lock().unwrap().inject.len()
    }
}

/// Frames a [`LoopbackPort`] queues at most; beyond that it drops, like a full FIFO.
pub const LOOPBACK_LIMIT: usize = 1024;

#[derive(Debug, Default)]
struct LoopbackShared {
    looped: AtomicU64,
    dropped: AtomicU64,
}

/// A loopback cable: every frame the device sends comes back as a frame it receives, in order.
/// Frames beyond [`LOOPBACK_LIMIT`] (or the limit given to [`with_limit`](Self::with_limit))
/// waiting to be received are dropped and counted.
#[derive(Debug)]
pub struct LoopbackPort {
    queue: VecDeque<Vec<u8>>,
    limit: usize,
    shared: Arc<LoopbackShared>,
}

/// Counters of a [`LoopbackPort`], readable after the port was boxed into a device model.
#[derive(Debug, Clone)]
pub struct LoopbackCounters {
    shared: Arc<LoopbackShared>,
}

impl Default for LoopbackPort {
    fn default() -> Self {
        LoopbackPort::new()
    }
}

impl LoopbackPort {
    /// A loopback cable queueing up to [`LOOPBACK_LIMIT`] frames.
    pub fn new() -> LoopbackPort {
        LoopbackPort::with_limit(LOOPBACK_LIMIT)
    }

    /// A loopback cable queueing up to `limit` frames (at least one).
    pub fn with_limit(limit: usize) -> LoopbackPort {
        LoopbackPort {
            queue: VecDeque::new(),
            limit: limit.max(1),
            shared: Arc::default(),
        }
    }

    /// A handle on the counters.
    pub fn counters(&self) -> LoopbackCounters {
        LoopbackCounters {
            shared: self.shared.clone(),
        }
    }

    /// Frames sent but not yet received back.
    pub fn pending(&self) -> usize {
        self.queue.len()
    }
}

impl PacketPort for LoopbackPort {
    fn send(&mut self, frame: &[u8]) {
        if self.queue.len() >= self.limit {
            self.shared.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.queue.push_back(frame.to_vec());
    }

    fn recv(&mut self) -> Option<Vec<u8>> {
        let f = self.queue.pop_front()?;
        self.shared.looped.fetch_add(1, Ordering::Relaxed);
        Some(f)
    }
}

impl LoopbackCounters {
    /// Frames that went round (sent, then handed back to the device).
    pub fn looped(&self) -> u64 {
        self.shared.looped.load(Ordering::Relaxed)
    }

    /// Frames dropped because too many were waiting.
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_returns_frames_in_order_and_drops_beyond_the_limit() {
        let mut p = LoopbackPort::with_limit(2);
        let c = p.counters();
        assert_eq!(p.wake_fd(), None);
        assert_eq!(p.recv(), None);
        p.send(&[1]);
        p.send(&[2]);
        p.send(&[3]);
        assert_eq!(p.pending(), 2);
        assert_eq!(c.dropped(), 1);
        assert_eq!(p.recv(), Some(vec![1]));
        p.send(&[4]);
        assert_eq!(p.recv(), Some(vec![2]));
        assert_eq!(p.recv(), Some(vec![4]));
        assert_eq!(p.recv(), None);
        assert_eq!(c.looped(), 3);
    }

    #[test]
    fn loopback_is_a_device_port() {
        // The device models take `Box<dyn PacketPort + Send>`.
        let mut b: Box<dyn PacketPort + Send> = Box::new(LoopbackPort::new());
        b.send(&[9; 60]);
        assert_eq!(b.recv().map(|f| f.len()), Some(60));
    }
}
