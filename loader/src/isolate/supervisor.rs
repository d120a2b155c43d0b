//! The manager's hold on a driver stack that runs in driver-host processes: starting one (this
//! program again, with the hidden subcommand, its channel and wire on fixed descriptors, its CPU
//! limit and priority), one request and its answer (applying the registry writes the drivers
//! make meanwhile), telling how a driver host died, and restarting it within the restart limit,
//! with a report of each failure. [`IsolatedNic`](super::IsolatedNic) and
//! [`IsolatedStack`](super::IsolatedStack) add what their kind of stack loses and how its clients
//! see a failure.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::proto::{self, Reply, Request, StartParams};
use super::registry::HostRegistry;
use super::{IsolationConfig, CHANNEL_FD, SUBCOMMAND, WIRE_FD};

/// Exit code of a forked driver host whose manager died before it could exec.
const EXIT_ORPHANED: i32 = 3;

/// A running driver-host process and its end of the channel.
pub(super) struct DriverHostProcess {
    child: Child,
    chan: UnixStream,
}

/// Why a driver host is gone.
#[derive(Debug)]
pub(super) enum Death {
    /// It reported a failure (guest fault, watchdog, panic, failed start) and exited.
    Failed(String),
    /// It died without a report (a signal such as SIGKILL or SIGXCPU, or an exit).
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

/// RLIMIT_CPU of a driver host with a CPU budget of `limit`: SIGXCPU (which ends it) when the
/// budget is used up, SIGKILL a second later should it survive that.
fn cpu_rlimit(limit: Duration) -> libc::rlimit {
    let soft = limit.as_secs_f64().ceil().max(1.0) as libc::rlim_t;
    libc::rlimit {
        rlim_cur: soft,
        rlim_max: soft + 1,
    }
}

/// The nice value of a driver host: the manager's plus `increment`, at most 19.
fn host_nice(increment: i32) -> libc::c_int {
    // SAFETY: getpriority has no preconditions (-1 is both an error and a valid value; either
    // way the result is clamped).
    let mine = unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) };
    (mine + increment).clamp(-20, 19)
}

impl DriverHostProcess {
    /// Starts a driver host with `wire` on [`WIRE_FD`] and asks it to start the stack; returns
    /// its answer ([`Reply::Started`] or [`Reply::StackStarted`]).
    fn start(
        cfg: &IsolationConfig,
        params: &StartParams,
        wire: Option<RawFd>,
        registry: &mut HostRegistry,
    ) -> Result<(DriverHostProcess, Reply), Death> {
        let io_death = |e: io::Error| Death::Protocol(format!("cannot start a driver host: {e}"));
        let (chan, theirs) = UnixStream::pair().map_err(io_death)?;
        let theirs_fd = theirs.as_raw_fd();
        let cpu = cfg.cpu_limit.map(cpu_rlimit);
        let nice = host_nice(cfg.nice);
        let manager = std::process::id() as libc::pid_t;
        let mut cmd = Command::new(&cfg.program);
        cmd.args(&cfg.args)
            .arg(SUBCOMMAND)
            .envs(cfg.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null());
        // SAFETY: the closure only makes async-signal-safe syscalls (fcntl, dup2, prctl,
        // setrlimit, setpriority) on values prepared before the fork.
        unsafe {
            cmd.pre_exec(move || {
                let chan = move_high(theirs_fd)?;
                let wire = wire.map(move_high).transpose()?;
                dup_to(chan, CHANNEL_FD)?;
                if let Some(w) = wire {
                    dup_to(w, WIRE_FD)?;
                }
                // The driver host does not outlive the manager (nor start if the manager died
                // before the parent-death signal was armed).
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                    return Err(io::Error::last_os_error());
                }
                if libc::getppid() != manager {
                    libc::_exit(EXIT_ORPHANED);
                }
                if let Some(lim) = &cpu {
                    if libc::setrlimit(libc::RLIMIT_CPU, lim) != 0 {
                        return Err(io::Error::last_os_error());
                    }
                }
                if libc::setpriority(libc::PRIO_PROCESS, 0, nice) != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().map_err(io_death)?;
        drop(theirs);
        let mut host = DriverHostProcess { child, chan };
        let start = Request::Start(Box::new(params.clone()));
        match host.call(&start, cfg.reply_timeout, registry) {
            Ok(reply @ (Reply::Started(..) | Reply::StackStarted(..))) => Ok((host, reply)),
            Ok(other) => Err(host.kill(Death::Protocol(format!(
                "answered the start with {other:?}"
            )))),
            Err((d, _)) => Err(d),
        }
    }

    /// One request and its answer, applying the registry writes the driver host forwards
    /// meanwhile; a failure answer or no answer is the driver host's death, with whether the
    /// request reached it (a request that could not be written was not acted on).
    fn call(
        &mut self,
        req: &Request,
        timeout: Duration,
        registry: &mut HostRegistry,
    ) -> Result<Reply, (Death, bool)> {
        let sent = self
            .chan
            .set_read_timeout(Some(timeout))
            .and_then(|()| proto::send_request(&mut self.chan, req));
        if sent.is_err() {
            return Err((self.exit_status(), false));
        }
        loop {
            match proto::recv_reply(&mut self.chan) {
                Ok(Some(Reply::RegistryWrite(w))) => {
                    let done = Request::RegistryDone(registry.apply(&w));
                    if proto::send_request(&mut self.chan, &done).is_err() {
                        return Err((self.exit_status(), true));
                    }
                }
                Ok(Some(Reply::Failed(report))) => {
                    let _ = self.child.wait();
                    return Err((Death::Failed(report), true));
                }
                Ok(Some(reply)) => return Ok(reply),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return Err((self.kill(Death::Hung(timeout)), true))
                }
                // The socket closed (or broke): the process is gone or going.
                Ok(None) | Err(_) => return Err((self.exit_status(), true)),
            }
        }
    }

    /// Whether the driver host died while no request was running (it says nothing unasked: its
    /// channel being readable means it closed, or is broken).
    fn idle_death(&mut self) -> Option<Death> {
        let mut fd = libc::pollfd {
            fd: self.chan.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: poll on one pollfd we own, without waiting.
        let n = unsafe { libc::poll(&mut fd, 1, 0) };
        if n <= 0 {
            return None;
        }
        match proto::recv_reply(&mut self.chan) {
            Ok(Some(other)) => Some(self.kill(Death::Protocol(format!("said {other:?} unasked")))),
            Ok(None) | Err(_) => Some(self.exit_status()),
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

    pub(super) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The descriptor that becomes readable when the driver host dies while idle.
    fn channel_fd(&self) -> RawFd {
        self.chan.as_raw_fd()
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

/// What happened to one driver host, and how the stack came back.
#[derive(Debug, Clone)]
pub struct Recovery {
    /// One line: what happened.
    pub cause: String,
    /// The full report: drivers, cause, the driver host's own report (guest address, registers,
    /// guest backtrace, last kernel calls) when it could send one, what was lost.
    pub report: String,
    /// What the dead driver host had taken and not completed: frames of a network adapter
    /// (never resent), client requests of a device stack (failed).
    pub lost: u64,
    /// From the request during which it failed to the manager knowing.
    pub detect: Duration,
    /// From the manager knowing to the new driver host's start answer (None: not restarted).
    pub recover: Option<Duration>,
}

/// A request to the driver host that found it dead.
pub(super) struct Failure {
    pub death: Death,
    /// When the request was made.
    pub asked: Instant,
    /// Whether the request reached the driver host before it died.
    pub delivered: bool,
}

/// A driver stack running in driver-host processes, one at a time: the running one, and the
/// accounting of those that failed.
pub(super) struct Supervisor {
    pub cfg: IsolationConfig,
    /// The start message; its registry is read anew at every start.
    params: StartParams,
    pub registry: HostRegistry,
    /// The device model's wire: passed to every driver host.
    pub wire: Option<OwnedFd>,
    host: Option<DriverHostProcess>,
    /// Restart times within the window.
    restarts: VecDeque<Instant>,
    pub recoveries: Vec<Recovery>,
    /// Set when the restart limit was reached: the stack is down for good.
    pub given_up: Option<String>,
    /// When the current driver host died, while no new one is running.
    down_since: Option<Instant>,
}

impl Supervisor {
    /// Starts the first driver host; returns its start answer.
    pub fn start(
        cfg: IsolationConfig,
        params: StartParams,
        registry: HostRegistry,
        wire: Option<OwnedFd>,
    ) -> Result<(Supervisor, Reply), String> {
        let mut sup = Supervisor {
            cfg,
            params,
            registry,
            wire,
            host: None,
            restarts: VecDeque::new(),
            recoveries: Vec::new(),
            given_up: None,
            down_since: None,
        };
        let reply = sup.spawn().map_err(|d| sup.describe(&d, None))?;
        Ok((sup, reply))
    }

    /// The driver files, for messages.
    pub fn drivers(&self) -> String {
        self.params.stack.names()
    }

    fn spawn(&mut self) -> Result<Reply, Death> {
        self.params.registry = self
            .registry
            .snapshot()
            .map_err(|e| Death::Protocol(format!("cannot read the registry for it: {e}")))?;
        let wire = self.wire.as_ref().map(AsRawFd::as_raw_fd);
        let (host, reply) =
            DriverHostProcess::start(&self.cfg, &self.params, wire, &mut self.registry)?;
        self.host = Some(host);
        Ok(reply)
    }

    /// The running driver host's process id (None while it is down).
    pub fn pid(&self) -> Option<u32> {
        self.host.as_ref().map(DriverHostProcess::pid)
    }

    /// The running driver host's channel (None while it is down): readable when it dies idle.
    pub fn channel_fd(&self) -> Option<RawFd> {
        self.host.as_ref().map(DriverHostProcess::channel_fd)
    }

    /// Sends `req` to the running driver host: its answer, or how it died now (the driver host is
    /// gone; record it with [`record`](Self::record)); None when no driver host is running.
    /// Fails once the stack is down for good.
    pub fn call(&mut self, req: &Request) -> Result<Option<Result<Reply, Failure>>, String> {
        if let Some(why) = &self.given_up {
            return Err(why.clone());
        }
        let Some(host) = self.host.as_mut() else {
            return Ok(None);
        };
        let asked = Instant::now();
        Ok(Some(
            match host.call(req, self.cfg.reply_timeout, &mut self.registry) {
                Ok(reply) => Ok(reply),
                Err((death, delivered)) => {
                    self.host = None;
                    Err(Failure {
                        death,
                        asked,
                        delivered,
                    })
                }
            },
        ))
    }

    /// Whether the running driver host died while idle (it is gone then; record it).
    pub fn idle_death(&mut self) -> Option<Failure> {
        let death = self.host.as_mut()?.idle_death()?;
        self.host = None;
        Some(Failure {
            death,
            asked: Instant::now(),
            delivered: false,
        })
    }

    /// Records the death of driver host `pid` in `f` while `during` (a request, or idling):
    /// logs the report (with `note` appended) and returns it; `lost` is what went with it.
    pub fn record(
        &mut self,
        f: &Failure,
        pid: u32,
        during: &str,
        lost: u64,
        note: &str,
    ) -> &Recovery {
        let now = Instant::now();
        let mut report = self.describe(&f.death, Some(pid));
        let _ = writeln!(report, "while {during}; {note}");
        tracing::error!(target: "ica::isolate", "{report}");
        self.recoveries.push(Recovery {
            cause: report.lines().next().unwrap_or_default().to_string(),
            report,
            lost,
            detect: now.duration_since(f.asked),
            recover: None,
        });
        self.down_since = Some(now);
        &self.recoveries[self.recoveries.len() - 1]
    }

    /// Starts a new driver host after a death, unless the restart limit is reached (then the
    /// stack is down for good: the reason). Returns its start answer, or None if it failed to
    /// start (recorded; the next call tries again).
    pub fn restart(&mut self) -> Result<Option<Reply>, String> {
        if let Some(why) = &self.given_up {
            return Err(why.clone());
        }
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
            let why = if self.cfg.max_restarts == 0 {
                format!("{}: the driver host failed; no restarts", self.drivers())
            } else {
                format!(
                    "{}: restart limit reached ({} restarts within {window:?}); the stack stays down",
                    self.drivers(),
                    self.cfg.max_restarts
                )
            };
            tracing::error!(target: "ica::isolate", "{why}");
            self.given_up = Some(why.clone());
            return Err(why);
        }
        self.restarts.push_back(now);
        match self.spawn() {
            Ok(reply) => {
                let down = self.down_since.take().unwrap_or(now);
                if let Some(r) = self.recoveries.last_mut() {
                    r.recover = Some(down.elapsed());
                }
                tracing::warn!(
                    target: "ica::isolate",
                    "{}: driver host restarted (pid {}), up again after {:?}",
                    self.drivers(),
                    self.pid().unwrap_or_default(),
                    down.elapsed()
                );
                Ok(Some(reply))
            }
            Err(death) => {
                let report = self.describe(&death, None);
                tracing::error!(target: "ica::isolate", "restart failed: {report}");
                self.recoveries.push(Recovery {
                    cause: report.lines().next().unwrap_or_default().to_string(),
                    report,
                    lost: 0,
                    detect: now.elapsed(),
                    recover: None,
                });
                Ok(None)
            }
        }
    }

    /// Stops the running driver host: its answer to [`Request::Stop`] (None when none runs);
    /// it has exited when this returns.
    pub fn stop(&mut self) -> Result<Option<Reply>, String> {
        if self.host.is_none() {
            return Ok(None);
        }
        let Some(answer) = self.call(&Request::Stop)? else {
            return Ok(None);
        };
        match answer {
            Ok(reply) => {
                if let Some(mut h) = self.host.take() {
                    let _ = h.child.wait();
                }
                Ok(Some(reply))
            }
            Err(f) => Err(self.describe(&f.death, None)),
        }
    }

    /// The report of a death: drivers, what happened, and the driver host's own report if any.
    pub fn describe(&self, death: &Death, pid: Option<u32>) -> String {
        let drivers = self.drivers();
        let who = match pid {
            Some(pid) => format!("driver host (pid {pid}) of {drivers}"),
            None => format!("driver host of {drivers}"),
        };
        match death {
            Death::Failed(report) => {
                let (first, rest) = report.split_once('\n').unwrap_or((report, ""));
                format!("{who} failed: {first}\n{rest}")
            }
            Death::Died(status) => match (status.signal(), status.code()) {
                (Some(libc::SIGXCPU), _) => format!(
                    "{who} failed: CPU limit exceeded ({} s of CPU time; killed by SIGXCPU)\n",
                    self.cfg.cpu_limit.map(cpu_rlimit).map_or(0, |l| l.rlim_cur)
                ),
                (Some(sig), _) => format!(
                    "{who} was killed by signal {sig} ({}) without a report\n",
                    signal_name(sig)
                ),
                (None, Some(code)) => format!("{who} exited with status {code} without a report\n"),
                (None, None) => format!("{who} ended ({status}) without a report\n"),
            },
            Death::Hung(t) => format!("{who} did not answer within {t:?} and was killed\n"),
            Death::Protocol(what) => format!("{who}: {what}\n"),
        }
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
        _ => "signal",
    }
}
