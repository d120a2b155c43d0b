//! The upper edge of a network device model: where its frames go and come from. A frame is a
//! whole Ethernet frame without the CRC. The in-process port is a pair of queues shared with a
//! [`PortHandle`]; a TAP backend will implement the same trait.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

/// Frames in and out of a device model.
pub trait PacketPort {
    /// The device transmitted `frame`.
    fn send(&mut self, frame: &[u8]);
    /// The next frame for the device to receive, if any.
    fn recv(&mut self) -> Option<Vec<u8>>;
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
