//! The driver host: started by the manager with the socket on [`CHANNEL_FD`] (and the model's wire
//! on [`WIRE_FD`]), it reads the start parameters, builds the kernel, the registry snapshot
//! (whose writes it forwards to the manager) and the device, confines itself, then starts the
//! stack and serves requests until told to stop. A failure of a driver (or a panic of the host
//! code) is answered with the full report, and the process exits: the manager decides what comes
//! next.

use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::panic::{self, AssertUnwindSafe};
use std::time::Instant;

use host_linux::net::NetMiniport;
use host_linux::packet::{PacketPort, QueuePort};
use host_linux::tap::TapPort;
use ntoskrnl::KernelError;

use super::proto::{self, Backend, PathState, Reply, Request, Stack, StartParams};
use super::registry::ForwardedRegistry;
use super::{CHANNEL_FD, INJECT_PANIC_IOCTL, WIRE_FD};
use crate::install::start::{self, Running};
use crate::net::NetAdapter;
use crate::{DriverHost, HostError};

/// Exit codes of the driver host.
const EXIT_STOPPED: i32 = 0;
const EXIT_FAILED: i32 = 1;
const EXIT_PROTOCOL: i32 = 2;

/// Whether `fd` is open.
fn fd_open(fd: i32) -> bool {
    // SAFETY: F_GETFD only inspects the descriptor table.
    unsafe { libc::fcntl(fd, libc::F_GETFD) >= 0 }
}

/// What a driver host runs.
enum Hosted {
    Nic(Box<NetAdapter>),
    /// A device stack, services or a `run`, started at `since`.
    Stack {
        run: Box<Running>,
        since: Instant,
    },
}

impl Hosted {
    fn host(&self) -> &DriverHost {
        match self {
            Hosted::Nic(nic) => &nic.host,
            Hosted::Stack { run, .. } => &run.host,
        }
    }
}

/// Runs the driver host; returns the process exit code.
pub fn driver_host_main() -> i32 {
    if !fd_open(CHANNEL_FD) {
        eprintln!("driver-host is started by ica-load itself (no channel on fd {CHANNEL_FD})");
        return EXIT_PROTOCOL;
    }
    // SAFETY: the manager put our end of the socketpair on CHANNEL_FD, and nothing else owns it.
    let mut chan = UnixStream::from(unsafe { OwnedFd::from_raw_fd(CHANNEL_FD) });
    let params = match proto::recv_request(&mut chan) {
        Ok(Some(Request::Start(p))) => p,
        Ok(_) | Err(_) => return EXIT_PROTOCOL,
    };
    let (hosted, started) = match start(&params, &chan) {
        Ok(started) => started,
        Err(report) => {
            let _ = proto::send_reply(&mut chan, &Reply::Failed(report));
            return EXIT_FAILED;
        }
    };
    if proto::send_reply(&mut chan, &started).is_err() {
        return EXIT_FAILED;
    }
    serve(&mut chan, hosted)
}

/// Builds the driver host from `p` (its registry forwarding writes over `chan`), confines the
/// process and starts the stack; returns it with its start answer.
fn start(p: &StartParams, chan: &UnixStream) -> Result<(Hosted, Reply), String> {
    let since = Instant::now();
    let mut host = DriverHost::new(p.arch)
        .map_err(|e| e.to_string())?
        .with_verifier(p.verifier);
    host.k.watchdog = p.watchdog;
    let forwarded = chan
        .try_clone()
        .map_err(|e| format!("cannot share the channel with the registry: {e}"))
        .and_then(|c| {
            ForwardedRegistry::new(&p.registry, c).map_err(|e| format!("registry snapshot: {e}"))
        })?;
    ntoskrnl::registry::set_backend(&mut host.k, Box::new(forwarded));
    for (path, bytes) in &p.files {
        ndis::file::provide_file(&mut host.k, path, bytes.clone());
    }
    let device = match &p.stack {
        Stack::Nic {
            backend: Backend::Model { model, mac, wire },
            ..
        } => {
            let port: Box<dyn PacketPort + Send> = if *wire {
                if !fd_open(WIRE_FD) {
                    return Err(format!("no wire on fd {WIRE_FD}"));
                }
                // SAFETY: the manager put the wire on WIRE_FD for us alone.
                let fd = unsafe { OwnedFd::from_raw_fd(WIRE_FD) };
                Box::new(TapPort::from_fd(fd, "wire").map_err(|e| e.to_string())?)
            } else {
                Box::new(QueuePort::new().0)
            };
            Some(
                host_linux::models::build(model, *mac, port)
                    .ok_or_else(|| format!("no software model named {model}"))?,
            )
        }
        _ => None,
    };
    super::confine().map_err(|e| format!("cannot confine the driver host: {e}"))?;
    match &p.stack {
        Stack::Nic {
            driver, config_key, ..
        } => {
            let mut nic =
                NetAdapter::start_file(host, driver, device, config_key.as_deref(), Vec::new())
                    .map_err(|e| e.to_string())?;
            let info = nic.info().map_err(|e| e.to_string())?;
            let state = nic_state(&mut nic);
            Ok((Hosted::Nic(Box::new(nic)), Reply::Started(info, state)))
        }
        stack => {
            let mut lines = Vec::new();
            let run = start::start_stack(host, stack, &mut |l| lines.push(l))
                .map_err(|e| e.to_string())?;
            let state = stack_state(&run.host);
            let hosted = Hosted::Stack {
                run: Box::new(run),
                since,
            };
            Ok((hosted, Reply::StackStarted(lines, state)))
        }
    }
}

/// Frames the miniport took and has not completed, and the next guest timer.
fn nic_state(nic: &mut NetAdapter) -> PathState {
    let s = nic.stats();
    PathState {
        in_flight: s
            .sends
            .saturating_sub(s.sends_ok + s.sends_failed + s.sends_requeued),
        deadline: nic
            .next_deadline()
            .map(|d| d.saturating_duration_since(Instant::now())),
    }
}

/// A stack's next guest timer.
fn stack_state(host: &DriverHost) -> PathState {
    PathState {
        in_flight: 0,
        deadline: ntoskrnl::timer::time_until_next_timer(&host.k),
    }
}

/// Answers one request (not Stop) to a network adapter.
fn handle_nic(nic: &mut NetAdapter, req: Request) -> Result<Reply, String> {
    let e = |e: host_linux::net::NetError| e.message;
    Ok(match req {
        Request::Send(frames) => {
            let mut q = std::collections::VecDeque::from(frames);
            let offered = q.len();
            nic.send(&mut q).map_err(e)?;
            Reply::Sent((offered - q.len()) as u32, nic_state(nic))
        }
        Request::Service => {
            let mut events = Vec::new();
            nic.service(&mut events).map_err(e)?;
            Reply::Events(events, nic_state(nic))
        }
        Request::Info => Reply::Info(nic.info().map_err(|e| e.to_string())?, nic_state(nic)),
        other => return Err(format!("a network adapter does not answer {other:?}")),
    })
}

/// Answers one request (not Stop) to a device stack: the client I/O API, deferred work,
/// statistics.
fn handle_stack(run: &mut Running, since: Instant, req: Request) -> Result<Reply, HostError> {
    let host = &mut run.host;
    Ok(match req {
        Request::Open(path) => Reply::Opened(host.open(&path)?),
        Request::Ioctl {
            handle,
            code,
            input,
            output,
        } => Reply::Io(host.ioctl(handle, code, &input, &output)?),
        Request::Read { handle, len } => Reply::Io(host.read(handle, len as usize)?),
        Request::Write { handle, data } => Reply::Io(host.write(handle, &data)?),
        Request::Close(handle) => Reply::Closed(host.close(handle)?),
        Request::Service => {
            ntoskrnl::ke::run_deferred(&mut host.k).map_err(|e| host.fail(e))?;
            Reply::Events(Vec::new(), stack_state(host))
        }
        Request::Stats => Reply::Stats(crate::host::stats_lines(host, since.elapsed())),
        other => {
            return Err(HostError::Kernel {
                report: format!("a device stack does not answer {other:?}"),
                error: KernelError::Unsupported("unexpected request".into()),
            })
        }
    })
}

/// The report of a panic in host code: the message and the last kernel calls.
fn panic_report(host: &DriverHost, payload: Box<dyn std::any::Any + Send>) -> String {
    let msg = payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "(no message)".into());
    host.k.report(&KernelError::Unsupported(format!(
        "driver host panicked (host-side bug): {msg}"
    )))
}

/// Stops what runs: halts the adapter, or removes the device and unloads the drivers.
fn stop(hosted: Hosted) -> Reply {
    match hosted {
        Hosted::Nic(nic) => match nic.stop() {
            Ok(findings) => Reply::Stopped {
                lines: Vec::new(),
                findings,
            },
            Err(e) => Reply::Failed(e.to_string()),
        },
        Hosted::Stack { run, .. } => {
            let mut lines = Vec::new();
            match start::stop(*run, &mut |l| lines.push(l)) {
                Ok(findings) => Reply::Stopped { lines, findings },
                Err(e) => Reply::Failed(e.to_string()),
            }
        }
    }
}

/// The IOCTL code [`INJECT_PANIC_IOCTL`] names, if set.
fn injected_panic_ioctl() -> Option<u32> {
    let v = std::env::var(INJECT_PANIC_IOCTL).ok()?;
    match v.strip_prefix("0x") {
        Some(hex) => u32::from_str_radix(hex, 16).ok(),
        None => v.parse().ok(),
    }
}

fn serve(chan: &mut UnixStream, mut hosted: Hosted) -> i32 {
    let inject_panic = injected_panic_ioctl();
    loop {
        let req = match proto::recv_request(chan) {
            Ok(Some(r)) => r,
            // The manager is gone: nobody to serve.
            Ok(None) => return EXIT_STOPPED,
            Err(_) => return EXIT_PROTOCOL,
        };
        if req == Request::Stop {
            let _ = proto::send_reply(chan, &stop(hosted));
            return EXIT_STOPPED;
        }
        let answer = panic::catch_unwind(AssertUnwindSafe(|| {
            if let Request::Ioctl { code, .. } = &req {
                if inject_panic == Some(*code) {
                    panic!("{INJECT_PANIC_IOCTL} asked for a panic at IOCTL {code:#010x}");
                }
            }
            match &mut hosted {
                Hosted::Nic(nic) => handle_nic(nic, req),
                Hosted::Stack { run, since } => {
                    handle_stack(run, *since, req).map_err(|e| e.to_string())
                }
            }
        }));
        let reply = match answer {
            Ok(Ok(reply)) => reply,
            Ok(Err(report)) => Reply::Failed(report),
            Err(payload) => Reply::Failed(panic_report(hosted.host(), payload)),
        };
        let failed = matches!(reply, Reply::Failed(_));
        if proto::send_reply(chan, &reply).is_err() || failed {
            return EXIT_FAILED;
        }
    }
}
