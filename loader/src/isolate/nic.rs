//! The manager's side of an isolated network adapter: [`IsolatedNic`] is the [`NetMiniport`] the
//! bridge drives; each call is a request to the driver host. It restarts the driver host when it
//! dies.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use host_linux::net::{NetError, NetEvent, NetMiniport};

use super::proto::{self, PathState, Reply, Request, StartParams};
use super::{IsolationConfig, CHANNEL_FD, SUBCOMMAND, WIRE_FD};
use crate::net::NicInfo;

/// Frames offered to the driver host per request at most.
const SEND_BATCH: usize = 64;

/// A running driver-host process and its end of the channel.
struct DriverHostProcess {
    child: Child,
    chan: UnixStream,
}

/// Why a driver host is gone.
#[derive(Debug)]
enum Death {
    /// It reported a failure (guest fault, watchdog, panic, failed start) and exited.
    Failed(String),
    /// It died without a report (a signal such as SIGKILL, or an exit).
    Died(ExitStatus),
    /// It did not answer in time and was killed.
    Hung(Duration),
    /// It answered something that makes no sense, and was killed.
    Protocol(String),
}

/// Moves `fd` to a descriptor number of at least 10 (CLOEXEC), so the dup2s to 3 and 4 cannot
/// clobber each other. Runs between fork and exec: syscalls only.
fn move_high(fd: RawFd) -> io::Result<RawFd> {
    // SAFETY: fcntl on a descriptor the parent keeps open across the spawn.
    let high = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 10) };
    if high < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(high)
}

fn dup_to(fd: RawFd, target: RawFd) -> io::Result<()> {
    // SAFETY: dup2 between descriptors of this (forked) process; the copy is not CLOEXEC.
    if unsafe { libc::dup2(fd, target) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

impl DriverHostProcess {
    /// Starts a driver host with `wire` on [`WIRE_FD`] and asks it to start the adapter.
    fn start(
        cfg: &IsolationConfig,
        params: &StartParams,
        wire: Option<RawFd>,
    ) -> Result<(DriverHostProcess, NicInfo, PathState), Death> {
        let io_death = |e: io::Error| Death::Protocol(format!("cannot start a driver host: {e}"));
        let (chan, theirs) = UnixStream::pair().map_err(io_death)?;
        let theirs_fd = theirs.as_raw_fd();
        let mut cmd = Command::new(&cfg.program);
        cmd.args(&cfg.args).arg(SUBCOMMAND).stdin(Stdio::null());
        // SAFETY: the closure only makes async-signal-safe syscalls (fcntl, dup2, prctl).
        unsafe {
            cmd.pre_exec(move || {
                let chan = move_high(theirs_fd)?;
                let wire = wire.map(move_high).transpose()?;
                dup_to(chan, CHANNEL_FD)?;
                if let Some(w) = wire {
                    dup_to(w, WIRE_FD)?;
                }
                // The driver host does not outlive the manager.
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().map_err(io_death)?;
        drop(theirs);
        let mut host = DriverHostProcess { child, chan };
        let started = host.call(&Request::Start(Box::new(params.clone())), cfg.reply_timeout);
        match started {
            Ok(Reply::Started(info, state)) => Ok((host, info, state)),
            Ok(other) => Err(host.kill(Death::Protocol(format!(
                "answered the start with {other:?}"
            )))),
            Err((d, _)) => Err(d),
        }
    }

    /// One request and its answer; a failure answer or no answer is the driver host's death,
    /// with whether the request reached it (a request that could not be written was not acted
    /// on).
    fn call(&mut self, req: &Request, timeout: Duration) -> Result<Reply, (Death, bool)> {
        let sent = self
            .chan
            .set_read_timeout(Some(timeout))
            .and_then(|()| proto::send_request(&mut self.chan, req));
        let answer = match sent {
            Ok(()) => proto::recv_reply(&mut self.chan),
            Err(_) => return Err((self.exit_status(), false)),
        };
        match answer {
            Ok(Some(Reply::Failed(report))) => {
                let _ = self.child.wait();
                Err((Death::Failed(report), true))
            }
            Ok(Some(reply)) => Ok(reply),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                Err((self.kill(Death::Hung(timeout)), true))
            }
            // The socket closed (or broke): the process is gone or going.
            Ok(None) | Err(_) => Err((self.exit_status(), true)),
        }
    }

    /// Waits for the driver host to end, after its end of the channel closed.
    fn exit_status(&mut self) -> Death {
        match self.child.wait() {
            Ok(status) => Death::Died(status),
            Err(e) => Death::Protocol(format!("cannot wait for it: {e}")),
        }
    }

    fn kill(&mut self, why: Death) -> Death {
        let _ = self.child.kill();
        let _ = self.child.wait();
        why
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for DriverHostProcess {
    fn drop(&mut self) {
        // Not stopped cleanly: do not leave it behind.
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// What happened to one driver host, and how the adapter came back.
#[derive(Debug, Clone)]
pub struct Recovery {
    /// One line: what happened.
    pub cause: String,
    /// The full report: driver, cause, the driver host's own report (guest address, registers,
    /// guest backtrace, last kernel calls) when it could send one, the frames lost.
    pub report: String,
    /// Frames the dead driver host had taken and not completed: counted as lost, never resent.
    pub lost: u64,
    /// From the request during which it failed to the manager knowing.
    pub detect: Duration,
    /// From the manager knowing to the new adapter's start answer (None: not restarted).
    pub recover: Option<Duration>,
}

/// A network adapter whose miniport runs in a driver-host process (see the module
/// documentation of [`super`]).
pub struct IsolatedNic {
    cfg: IsolationConfig,
    params: StartParams,
    /// The device model's wire: passed to every driver host, polled here for wakeups.
    wire: Option<OwnedFd>,
    host: Option<DriverHostProcess>,
    state: PathState,
    /// When the driver host wants to be serviced next.
    deadline: Option<Instant>,
    info: NicInfo,
    /// Events to deliver at the next service() (carrier changes around a restart).
    events: Vec<NetEvent>,
    /// When the current driver host died, while no new one is running.
    down_since: Option<Instant>,
    /// Restart times within the window.
    restarts: VecDeque<Instant>,
    recoveries: Vec<Recovery>,
    lost: u64,
    /// Set when the restart limit was reached: the adapter is gone for good.
    given_up: Option<String>,
}

impl IsolatedNic {
    /// Starts a driver host and the adapter in it; `wire` is the device model's wire (kept here
    /// too, so the manager wakes up when it has input).
    pub fn start(
        params: StartParams,
        wire: Option<OwnedFd>,
        cfg: IsolationConfig,
    ) -> Result<IsolatedNic, String> {
        let raw = wire.as_ref().map(AsRawFd::as_raw_fd);
        let (host, info, state) = DriverHostProcess::start(&cfg, &params, raw)
            .map_err(|d| describe(&params, &d, None))?;
        let mut nic = IsolatedNic {
            cfg,
            params,
            wire,
            host: Some(host),
            state: PathState::default(),
            deadline: None,
            info,
            events: Vec::new(),
            down_since: None,
            restarts: VecDeque::new(),
            recoveries: Vec::new(),
            lost: 0,
            given_up: None,
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
        if self.host.is_none() {
            return Ok(Vec::new());
        }
        match self.call(&Request::Stop, 0)? {
            Ok(Reply::Stopped(findings)) => {
                if let Some(mut h) = self.host.take() {
                    let _ = h.child.wait();
                }
                Ok(findings)
            }
            Ok(other) => Err(NetError::new(format!(
                "driver host answered the stop with {other:?}"
            ))),
            Err(_) => Err(NetError::new("the driver host failed while stopping")),
        }
    }

    /// Every failure so far and how the adapter came back.
    pub fn recoveries(&self) -> &[Recovery] {
        &self.recoveries
    }

    /// Frames lost with dead driver hosts.
    pub fn lost_frames(&self) -> u64 {
        self.lost
    }

    /// The driver host's process id (None while it restarts).
    pub fn host_pid(&self) -> Option<u32> {
        self.host.as_ref().map(DriverHostProcess::pid)
    }

    fn track(&mut self, state: PathState) {
        self.deadline = state.deadline.map(|d| Instant::now() + d);
        self.state = state;
    }

    /// Sends `req`; `Ok(Err(delivered))` if there is no driver host: it died now (`delivered`:
    /// after the request reached it, the `offered` frames with it), or earlier and is not back
    /// yet (`delivered` false).
    fn call(&mut self, req: &Request, offered: usize) -> Result<Result<Reply, bool>, NetError> {
        if let Some(why) = &self.given_up {
            return Err(NetError::new(why.clone()));
        }
        let Some(host) = self.host.as_mut() else {
            return Ok(Err(false));
        };
        let asked = Instant::now();
        match host.call(req, self.cfg.reply_timeout) {
            Ok(reply) => Ok(Ok(reply)),
            Err((death, delivered)) => {
                self.died(death, asked, req, if delivered { offered } else { 0 });
                Ok(Err(delivered))
            }
        }
    }

    /// The driver host died during `req`: report, count the lost frames, take the carrier down.
    fn died(&mut self, death: Death, asked: Instant, req: &Request, offered: usize) {
        let now = Instant::now();
        let pid = self.host.take().map(|h| h.pid()).unwrap_or_default();
        let lost = offered as u64 + self.state.in_flight;
        self.lost += lost;
        let during = match req {
            Request::Send(f) => format!("offering {} frames", f.len()),
            Request::Service => "servicing the adapter".into(),
            Request::Info => "querying the adapter".into(),
            Request::Stop => "stopping the adapter".into(),
            Request::Start(_) => "starting the adapter".into(),
        };
        let mut report = describe(&self.params, &death, Some(pid));
        let _ = writeln!(
            report,
            "while {during}; {lost} frames lost ({offered} offered, {} in flight), none will be resent",
            self.state.in_flight
        );
        let cause = report.lines().next().unwrap_or_default().to_string();
        tracing::error!(target: "ica::isolate", "{report}");
        self.recoveries.push(Recovery {
            cause,
            report,
            lost,
            detect: now.duration_since(asked),
            recover: None,
        });
        self.state = PathState::default();
        self.deadline = None;
        self.events.push(NetEvent::Link(false));
        self.down_since = Some(now);
    }

    /// Starts a new driver host after a death, unless the restart limit is reached.
    fn restart(&mut self) -> Result<(), NetError> {
        let now = Instant::now();
        let window = self.cfg.restart_window;
        while self
            .restarts
            .front()
            .is_some_and(|t| now.duration_since(*t) > window)
        {
            self.restarts.pop_front();
        }
        if self.restarts.len() >= self.cfg.max_restarts {
            let why = format!(
                "{}: restart limit reached ({} restarts within {:?}); the adapter stays down",
                self.params.driver.name, self.cfg.max_restarts, window
            );
            tracing::error!(target: "ica::isolate", "{why}");
            self.given_up = Some(why.clone());
            return Err(NetError::new(why));
        }
        self.restarts.push_back(now);
        let raw = self.wire.as_ref().map(AsRawFd::as_raw_fd);
        match DriverHostProcess::start(&self.cfg, &self.params, raw) {
            Ok((host, info, state)) => {
                let down = self.down_since.take().unwrap_or(now);
                if let Some(r) = self.recoveries.last_mut() {
                    r.recover = Some(down.elapsed());
                }
                tracing::warn!(
                    target: "ica::isolate",
                    "{}: driver host restarted (pid {}), adapter up again after {:?}",
                    self.params.driver.name,
                    host.pid(),
                    down.elapsed()
                );
                self.host = Some(host);
                self.events.push(NetEvent::Link(info.link_up));
                self.info = info;
                self.track(state);
            }
            Err(death) => {
                let report = describe(&self.params, &death, None);
                tracing::error!(target: "ica::isolate", "restart failed: {report}");
                self.recoveries.push(Recovery {
                    cause: report.lines().next().unwrap_or_default().to_string(),
                    report,
                    lost: 0,
                    detect: now.elapsed(),
                    recover: None,
                });
            }
        }
        Ok(())
    }
}

/// The report of a death: driver, what happened, and the driver host's own report if any.
fn describe(params: &StartParams, death: &Death, pid: Option<u32>) -> String {
    let who = match pid {
        Some(pid) => format!("driver host (pid {pid}) of {}", params.driver.name),
        None => format!("driver host of {}", params.driver.name),
    };
    match death {
        Death::Failed(report) => {
            let (first, rest) = report.split_once('\n').unwrap_or((report, ""));
            format!("{who} failed: {first}\n{rest}")
        }
        Death::Died(status) => {
            let how = match (status.signal(), status.code()) {
                (Some(sig), _) => format!("was killed by signal {sig} ({})", signal_name(sig)),
                (None, Some(code)) => format!("exited with status {code}"),
                (None, None) => format!("ended ({status})"),
            };
            format!("{who} {how} without a report\n")
        }
        Death::Hung(t) => format!("{who} did not answer within {t:?} and was killed\n"),
        Death::Protocol(what) => format!("{who}: {what}\n"),
    }
}

fn signal_name(sig: i32) -> &'static str {
    match sig {
        libc::SIGKILL => "SIGKILL",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGABRT => "SIGABRT",
        libc::SIGSYS => "SIGSYS",
        libc::SIGBUS => "SIGBUS",
        libc::SIGTERM => "SIGTERM",
        libc::SIGXCPU => "SIGXCPU",
        _ => "signal",
    }
}

impl NetMiniport for IsolatedNic {
    fn send(&mut self, frames: &mut VecDeque<Vec<u8>>) -> Result<(), NetError> {
        if self.host.is_none() || frames.is_empty() {
            // Restarting: the frames wait (back-pressure).
            return self
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
        if self.host.is_none() {
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
        if self.host.is_none() || !self.events.is_empty() {
            return Some(Instant::now());
        }
        self.deadline
    }

    fn wake_fds(&self) -> Vec<RawFd> {
        self.wire.iter().map(AsRawFd::as_raw_fd).collect()
    }
}
