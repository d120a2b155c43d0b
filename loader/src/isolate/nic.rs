//! The manager's side of an isolated network adapter: [`IsolatedNic`] is the [`NetMiniport`] the
//! bridge drives; each call is a request to the driver host. It restarts the driver host when it
//! dies, counting the frames the dead one had as lost.

use std::collections::VecDeque;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::Instant;

use host_linux::net::{NetError, NetEvent, NetMiniport};

use super::proto::{PathState, Reply, Request, Stack, StartParams};
use super::registry::HostRegistry;
use super::supervisor::{Failure, Recovery, Supervisor};
use super::IsolationConfig;
use crate::net::NicInfo;

/// Frames offered to the driver host per request at most.
const SEND_BATCH: usize = 64;

/// A network adapter whose miniport runs in a driver-host process (see the module
/// documentation of [`super`]).
pub struct IsolatedNic {
    sup: Supervisor,
    state: PathState,
    /// When the driver host wants to be serviced next.
    deadline: Option<Instant>,
    info: NicInfo,
    /// Events to deliver at the next service() (carrier changes around a restart).
    events: Vec<NetEvent>,
    lost: u64,
}

/// The adapter facts of a start answer.
fn started(reply: Reply) -> Result<(NicInfo, PathState), String> {
    match reply {
        Reply::Started(info, state) => Ok((info, state)),
        other => Err(format!("the driver host answered the start with {other:?}")),
    }
}

impl IsolatedNic {
    /// Starts a driver host and the adapter in it (`params.stack` is a [`Stack::Nic`]; its
    /// drivers read and write `registry`); `wire` is the device model's wire (kept here too, so
    /// the manager wakes up when it has input).
    pub fn start(
        params: StartParams,
        registry: HostRegistry,
        wire: Option<OwnedFd>,
        cfg: IsolationConfig,
    ) -> Result<IsolatedNic, String> {
        if !matches!(params.stack, Stack::Nic { .. }) {
            return Err(format!("{} is not a network adapter", params.stack.names()));
        }
        let (sup, reply) = Supervisor::start(cfg, params, registry, wire)?;
        let (info, state) = started(reply)?;
        let mut nic = IsolatedNic {
            sup,
            state: PathState::default(),
            deadline: None,
            info,
            events: Vec::new(),
            lost: 0,
        };
        nic.track(state);
        Ok(nic)
    }

    /// The adapter's OID facts: asked from the driver host, or the last known while it restarts.
    pub fn info(&mut self) -> Result<NicInfo, NetError> {
        if let Ok(Reply::Info(info, state)) = self.call(&Request::Info, 0)? {
            self.info = info;
            self.track(state);
        }
        Ok(self.info.clone())
    }

    /// Halts the adapter and ends the driver host; returns what the driver failed to release.
    /// Between a failure and the restart there is nothing to halt: the dead driver host took
    /// everything with it.
    pub fn stop(mut self) -> Result<Vec<String>, NetError> {
        match self.sup.stop().map_err(NetError::new)? {
            None => Ok(Vec::new()),
            Some(Reply::Stopped { findings, .. }) => Ok(findings),
            Some(other) => Err(NetError::new(format!(
                "driver host answered the stop with {other:?}"
            ))),
        }
    }

    /// Every failure so far and how the adapter came back.
    pub fn recoveries(&self) -> &[Recovery] {
        &self.sup.recoveries
    }

    /// Frames lost with dead driver hosts.
    pub fn lost_frames(&self) -> u64 {
        self.lost
    }

    /// The driver host's process id (None while it restarts).
    pub fn host_pid(&self) -> Option<u32> {
        self.sup.pid()
    }

    fn track(&mut self, state: PathState) {
        self.deadline = state.deadline.map(|d| Instant::now() + d);
        self.state = state;
    }

    /// Sends `req`; `Ok(Err(delivered))` if there is no driver host: it died now (`delivered`:
    /// after the request reached it, the `offered` frames with it), or earlier and is not back
    /// yet (`delivered` false).
    fn call(&mut self, req: &Request, offered: usize) -> Result<Result<Reply, bool>, NetError> {
        let pid = self.sup.pid().unwrap_or_default();
        match self.sup.call(req).map_err(NetError::new)? {
            None => Ok(Err(false)),
            Some(Ok(reply)) => Ok(Ok(reply)),
            Some(Err(f)) => {
                self.died(&f, pid, req, if f.delivered { offered } else { 0 });
                Ok(Err(f.delivered))
            }
        }
    }

    /// The driver host died during `req`: report, count the lost frames, take the carrier down.
    fn died(&mut self, f: &Failure, pid: u32, req: &Request, offered: usize) {
        let lost = offered as u64 + self.state.in_flight;
        self.lost += lost;
        let during = match req {
            Request::Send(f) => format!("offering {} frames", f.len()),
            Request::Service => "servicing the adapter".into(),
            Request::Info => "querying the adapter".into(),
            Request::Stop => "stopping the adapter".into(),
            _ => "talking to the adapter".into(),
        };
        let note = format!(
            "{lost} frames lost ({offered} offered, {} in flight), none will be resent",
            self.state.in_flight
        );
        self.sup.record(f, pid, &during, lost, &note);
        self.state = PathState::default();
        self.deadline = None;
        self.events.push(NetEvent::Link(false));
    }

    /// Starts a new driver host after a death, unless the restart limit is reached.
    fn restart(&mut self) -> Result<(), NetError> {
        let Some(reply) = self.sup.restart().map_err(NetError::new)? else {
            return Ok(());
        };
        match started(reply) {
            Ok((info, state)) => {
                self.events.push(NetEvent::Link(info.link_up));
                self.info = info;
                self.track(state);
                Ok(())
            }
            Err(e) => Err(NetError::new(e)),
        }
    }
}

impl NetMiniport for IsolatedNic {
    fn send(&mut self, frames: &mut VecDeque<Vec<u8>>) -> Result<(), NetError> {
        if self.sup.pid().is_none() || frames.is_empty() {
            // Restarting: the frames wait (back-pressure).
            return self
                .sup
                .given_up
                .as_ref()
                .map_or(Ok(()), |w| Err(NetError::new(w.clone())));
        }
        let n = frames.len().min(SEND_BATCH);
        let batch: Vec<Vec<u8>> = frames.drain(..n).collect();
        let mut req = Request::Send(batch);
        let answer = self.call(&req, n)?;
        let Request::Send(batch) = &mut req else {
            return Ok(());
        };
        match answer {
            Ok(Reply::Sent(taken, state)) => {
                self.track(state);
                // Refused frames go back to the front, in order.
                for f in batch.drain((taken as usize).min(batch.len())..).rev() {
                    frames.push_front(f);
                }
                Ok(())
            }
            // Dead before it read them: they wait for the next driver host.
            Err(false) => {
                for f in batch.drain(..).rev() {
                    frames.push_front(f);
                }
                Ok(())
            }
            // Dead after it got them: counted lost, never offered again.
            Err(true) => Ok(()),
            Ok(other) => Err(NetError::new(format!(
                "driver host answered a send with {other:?}"
            ))),
        }
    }

    fn service(&mut self, events: &mut Vec<NetEvent>) -> Result<(), NetError> {
        if !self.events.is_empty() {
            // The carrier change goes out before the restart, so Linux sees the link down while
            // the adapter restarts.
            events.append(&mut self.events);
            return Ok(());
        }
        if self.sup.pid().is_none() {
            self.restart()?;
            events.append(&mut self.events);
            return Ok(());
        }
        match self.call(&Request::Service, 0)? {
            Ok(Reply::Events(evs, state)) => {
                self.track(state);
                events.extend(evs);
            }
            Err(_) => events.append(&mut self.events),
            Ok(other) => {
                return Err(NetError::new(format!(
                    "driver host answered a service request with {other:?}"
                )))
            }
        }
        Ok(())
    }

    fn next_deadline(&self) -> Option<Instant> {
        if self.sup.pid().is_none() || !self.events.is_empty() {
            return Some(Instant::now());
        }
        self.deadline
    }

    fn wake_fds(&self) -> Vec<RawFd> {
        self.sup.wire.iter().map(AsRawFd::as_raw_fd).collect()
    }
}
