//! The manager's side of an isolated device stack (a root-enumerated device with its filters,
//! legacy services, or a `run`): [`IsolatedStack`] is the client I/O API ([`DeviceIo`]) over
//! the driver host. Client handles are the manager's own, each tied to the driver host it was
//! opened on: when that one fails, the request that was running and every later request on its
//! handles fail with [`HostError::HostFailed`], the manager restarts the stack at once, and a
//! reopen reaches the new driver host.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use ntoskrnl::io::IoResult;
use ntoskrnl::status::{NtStatus, STATUS_DEVICE_DOES_NOT_EXIST};

use super::proto::{PathState, Reply, Request, Stack, StartParams};
use super::registry::HostRegistry;
use super::supervisor::{Failure, Recovery, Supervisor};
use super::IsolationConfig;
use crate::host::{DeviceIo, HostError};

/// Longest sleep of [`IsolatedStack::supervise_until`] between checks of its stop condition.
const SUPERVISE_SLICE: Duration = Duration::from_millis(100);

/// A client handle: the driver host it belongs to (its generation) and that host's handle.
#[derive(Debug, Clone)]
struct Handle {
    generation: u64,
    host: u32,
    path: String,
}

/// A device stack whose drivers run in a driver-host process (see the module documentation).
pub struct IsolatedStack {
    sup: Supervisor,
    /// What the latest start said, one line each.
    started: Vec<String>,
    /// The driver host now running is the `generation`-th; handles of earlier ones are gone.
    generation: u64,
    /// Why each earlier generation ended (one line).
    ended: HashMap<u64, String>,
    handles: HashMap<u32, Handle>,
    next_handle: u32,
    /// When the driver host wants to run deferred work (its next guest timer).
    deadline: Option<Instant>,
}

fn host_failed(cause: impl Into<String>) -> HostError {
    HostError::HostFailed {
        status: STATUS_DEVICE_DOES_NOT_EXIST,
        cause: cause.into(),
    }
}

/// The lines and timer of a start answer.
fn started(reply: Reply) -> Result<(Vec<String>, PathState), String> {
    match reply {
        Reply::StackStarted(lines, state) => Ok((lines, state)),
        other => Err(format!("the driver host answered the start with {other:?}")),
    }
}

impl IsolatedStack {
    /// Starts a driver host and `params.stack` (a device, services or a `run`) in it; its drivers
    /// read and write `registry`.
    pub fn start(
        params: StartParams,
        registry: HostRegistry,
        cfg: IsolationConfig,
    ) -> Result<IsolatedStack, String> {
        if matches!(params.stack, Stack::Nic { .. }) {
            return Err(format!(
                "{} is a network adapter (see IsolatedNic)",
                params.stack.names()
            ));
        }
        let (sup, reply) = Supervisor::start(cfg, params, registry, None)?;
        let (lines, state) = started(reply)?;
        let mut stack = IsolatedStack {
            sup,
            started: lines,
            generation: 0,
            ended: HashMap::new(),
            handles: HashMap::new(),
            next_handle: 0,
            deadline: None,
        };
        stack.track(state);
        Ok(stack)
    }

    /// What the latest start of the stack did (drivers loaded, AddDevice, START, devices and
    /// links made), one line each.
    pub fn started(&self) -> &[String] {
        &self.started
    }

    /// Every failure so far and how the stack came back.
    pub fn recoveries(&self) -> &[Recovery] {
        &self.sup.recoveries
    }

    /// The driver host's process id (None while the stack is down).
    pub fn host_pid(&self) -> Option<u32> {
        self.sup.pid()
    }

    /// Registry writes of the drivers the manager applied to the store so far.
    pub fn registry_writes(&self) -> u64 {
        self.sup.registry.writes()
    }

    fn track(&mut self, state: PathState) {
        self.deadline = state.deadline.map(|d| Instant::now() + d);
    }

    /// The driver host died `during` something (`lost`: the client requests that failed with
    /// it): record it, forget its handles, restart the stack. Returns the cause.
    fn died(&mut self, f: &Failure, pid: u32, during: &str, lost: u64) -> String {
        let open = self
            .handles
            .values()
            .filter(|h| h.generation == self.generation)
            .count();
        let note =
            format!("{lost} client requests failed, {open} open handles are gone (clients reopen)");
        let cause = self.sup.record(f, pid, during, lost, &note).cause.clone();
        self.ended.insert(self.generation, cause.clone());
        self.deadline = None;
        self.restart();
        cause
    }

    /// Starts a new driver host (a failed start or the restart limit is logged and reported to
    /// the next request).
    fn restart(&mut self) {
        if let Ok(Some(reply)) = self.sup.restart() {
            match started(reply) {
                Ok((lines, state)) => {
                    self.generation += 1;
                    self.started = lines;
                    self.track(state);
                }
                Err(e) => tracing::error!(target: "ica::isolate", "{e}"),
            }
        }
    }

    /// One request to the driver host; `during` names it for a report.
    fn request(&mut self, req: &Request, during: &str) -> Result<Reply, HostError> {
        if self.sup.pid().is_none() && self.sup.given_up.is_none() {
            // The last restart failed: try again.
            self.restart();
        }
        let pid = self.sup.pid().unwrap_or_default();
        match self.sup.call(req).map_err(host_failed)? {
            Some(Ok(reply)) => Ok(reply),
            Some(Err(f)) => {
                let lost = u64::from(f.delivered);
                let cause = self.died(&f, pid, during, lost);
                Err(host_failed(format!("{during} failed: {cause}")))
            }
            None => Err(host_failed(format!(
                "{during}: the stack is down ({})",
                self.recoveries()
                    .last()
                    .map_or("no driver host", |r| r.cause.as_str())
            ))),
        }
    }

    /// The driver host's handle behind a client handle of the running driver host.
    fn host_handle(&self, handle: u32) -> Result<u32, HostError> {
        let h = self
            .handles
            .get(&handle)
            .ok_or(HostError::InvalidHandle(handle))?;
        if h.generation == self.generation && self.sup.pid().is_some() {
            return Ok(h.host);
        }
        let cause = self
            .ended
            .get(&h.generation)
            .map_or("the driver host failed", String::as_str);
        Err(host_failed(format!(
            "handle {handle} ({}) was opened on a driver host that is gone: {cause}; reopen the device",
            h.path
        )))
    }

    fn io(&mut self, req: &Request, during: &str) -> Result<IoResult, HostError> {
        match self.request(req, during)? {
            Reply::Io(r) => Ok(r),
            other => Err(host_failed(format!(
                "the driver host answered {during} with {other:?}"
            ))),
        }
    }

    /// Runs the driver host's deferred work (DPCs, due timers, work items) if its next timer is
    /// due, and restarts it if it died while idle.
    pub fn supervise(&mut self) -> Result<(), HostError> {
        let pid = self.sup.pid().unwrap_or_default();
        if let Some(f) = self.sup.idle_death() {
            self.died(&f, pid, "idle", 0);
            return Ok(());
        }
        if self.sup.pid().is_none() {
            if let Some(why) = &self.sup.given_up {
                return Err(host_failed(why.clone()));
            }
            self.restart();
            return Ok(());
        }
        if self.deadline.is_some_and(|d| d <= Instant::now()) {
            if let Reply::Events(_, state) =
                self.request(&Request::Service, "running deferred work")?
            {
                self.track(state);
            }
        }
        Ok(())
    }

    /// Keeps the stack running until `stop` says so: sleeps until the driver host's next timer,
    /// its death or a slice of 100 ms, then [`supervise`](Self::supervise)s it. Fails when the
    /// stack is down for good.
    pub fn supervise_until(&mut self, stop: &dyn Fn() -> bool) -> Result<(), HostError> {
        while !stop() {
            let wait = self
                .deadline
                .map_or(SUPERVISE_SLICE, |d| {
                    d.saturating_duration_since(Instant::now())
                })
                .min(SUPERVISE_SLICE);
            if let Some(fd) = self.sup.channel_fd() {
                let mut p = libc::pollfd {
                    fd,
                    events: libc::POLLIN,
                    revents: 0,
                };
                // SAFETY: poll on one pollfd we own.
                unsafe { libc::poll(&mut p, 1, wait.as_millis() as libc::c_int) };
            } else {
                std::thread::sleep(wait);
            }
            // A driver host that fails while being serviced is restarted; only the end of the
            // stack ends supervision.
            match self.supervise() {
                Err(HostError::HostFailed { .. }) if self.sup.given_up.is_none() => {}
                other => other?,
            }
        }
        Ok(())
    }

    /// Execution statistics of the driver host, one line each.
    pub fn stats(&mut self) -> Result<Vec<String>, HostError> {
        match self.request(&Request::Stats, "reading statistics")? {
            Reply::Stats(lines) => Ok(lines),
            other => Err(host_failed(format!(
                "the driver host answered a statistics request with {other:?}"
            ))),
        }
    }

    /// Stops the stack (device removed, drivers unloaded) and ends the driver host: what the stop
    /// did and what the verifier found, one line each. Nothing runs while the stack is down.
    pub fn stop(mut self) -> Result<(Vec<String>, Vec<String>), HostError> {
        match self.sup.stop().map_err(host_failed)? {
            None => Ok((Vec::new(), Vec::new())),
            Some(Reply::Stopped { lines, findings }) => Ok((lines, findings)),
            Some(other) => Err(host_failed(format!(
                "the driver host answered the stop with {other:?}"
            ))),
        }
    }
}

impl DeviceIo for IsolatedStack {
    fn open(&mut self, path: &str) -> Result<Result<u32, NtStatus>, HostError> {
        match self.request(&Request::Open(path.into()), &format!("opening {path}"))? {
            Reply::Opened(Ok(host)) => {
                self.next_handle += 4;
                let handle = self.next_handle;
                self.handles.insert(
                    handle,
                    Handle {
                        generation: self.generation,
                        host,
                        path: path.into(),
                    },
                );
                Ok(Ok(handle))
            }
            Reply::Opened(Err(st)) => Ok(Err(st)),
            other => Err(host_failed(format!(
                "the driver host answered an open with {other:?}"
            ))),
        }
    }

    fn ioctl(
        &mut self,
        handle: u32,
        code: u32,
        input: &[u8],
        output: &[u8],
    ) -> Result<IoResult, HostError> {
        let req = Request::Ioctl {
            handle: self.host_handle(handle)?,
            code,
            input: input.to_vec(),
            output: output.to_vec(),
        };
        self.io(&req, &format!("IOCTL {code:#010x} on handle {handle}"))
    }

    fn read(&mut self, handle: u32, len: usize) -> Result<IoResult, HostError> {
        let req = Request::Read {
            handle: self.host_handle(handle)?,
            len: u32::try_from(len).unwrap_or(u32::MAX),
        };
        self.io(&req, &format!("reading handle {handle}"))
    }

    fn write(&mut self, handle: u32, data: &[u8]) -> Result<IoResult, HostError> {
        let req = Request::Write {
            handle: self.host_handle(handle)?,
            data: data.to_vec(),
        };
        self.io(&req, &format!("writing handle {handle}"))
    }

    /// Closes a handle; the handle is gone afterwards even when this fails (its driver host
    /// failed: [`HostError::HostFailed`]).
    fn close(&mut self, handle: u32) -> Result<NtStatus, HostError> {
        let host = self.host_handle(handle);
        if !matches!(host, Err(HostError::InvalidHandle(_))) {
            self.handles.remove(&handle);
        }
        match self.request(&Request::Close(host?), &format!("closing handle {handle}"))? {
            Reply::Closed(st) => Ok(st),
            other => Err(host_failed(format!(
                "the driver host answered a close with {other:?}"
            ))),
        }
    }
}
