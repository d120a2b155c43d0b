//! The driver host: started by the manager with the socket on [`CHANNEL_FD`] (and the model's wire
//! on [`WIRE_FD`]), it reads the start parameters, builds the kernel, the registry snapshot and
//! the device, confines itself, then starts the adapter and serves requests until told to stop.
//! A failure of the driver (or a panic of the host code) is answered with the full report, and
//! the process exits: the manager decides what comes next.

use std::collections::VecDeque;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::panic::{self, AssertUnwindSafe};

use host_linux::net::NetMiniport;
use host_linux::packet::{PacketPort, QueuePort};
use host_linux::tap::TapPort;
use ntoskrnl::KernelError;

use super::proto::{self, Backend, PathState, Reply, Request, StartParams};
use super::{CHANNEL_FD, WIRE_FD};
use crate::net::NetAdapter;
use crate::DriverHost;

/// Exit codes of the driver host.
const EXIT_STOPPED: i32 = 0;
const EXIT_FAILED: i32 = 1;
const EXIT_PROTOCOL: i32 = 2;

/// Whether `fd` is open.
fn fd_open(fd: i32) -> bool {
    // SAFETY: F_GETFD only inspects the descriptor table.
    unsafe { libc::fcntl(fd, libc::F_GETFD) >= 0 }
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
    let mut nic = match start(&params) {
        Ok(nic) => nic,
        Err(report) => {
            let _ = proto::send_reply(&mut chan, &Reply::Failed(report));
            return EXIT_FAILED;
        }
    };
    let started = nic
        .info()
        .map(|info| Reply::Started(info, path_state(&mut nic)))
        .unwrap_or_else(|e| Reply::Failed(e.to_string()));
    let failed = matches!(started, Reply::Failed(_));
    if proto::send_reply(&mut chan, &started).is_err() || failed {
        return EXIT_FAILED;
    }
    serve(&mut chan, nic)
}

/// Builds the driver host from `p`, confines the process and starts the adapter.
fn start(p: &StartParams) -> Result<NetAdapter, String> {
    let mut host = DriverHost::new(p.arch)
        .map_err(|e| e.to_string())?
        .with_verifier(p.verifier);
    host.k.watchdog = p.watchdog;
    let reg = ntoskrnl::registry::backend(&mut host.k);
    for (key, values) in &p.registry {
        reg.create_key_path(key)
            .and_then(|()| {
                values
                    .iter()
                    .try_for_each(|(n, v)| reg.set_value(key, n, v))
            })
            .map_err(|e| format!("registry snapshot, key {key}: {e}"))?;
    }
    let device = match &p.backend {
        Backend::Virtual => None,
        Backend::Model { model, mac, wire } => {
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
    };
    super::confine().map_err(|e| format!("cannot confine the driver host: {e}"))?;
    NetAdapter::start_file(host, &p.driver, device, p.config_key.as_deref(), Vec::new())
        .map_err(|e| e.to_string())
}

/// Frames the miniport took and has not completed, and the next guest timer.
fn path_state(nic: &mut NetAdapter) -> PathState {
    let s = nic.stats();
    PathState {
        in_flight: s
            .sends
            .saturating_sub(s.sends_ok + s.sends_failed + s.sends_requeued),
        deadline: nic
            .next_deadline()
            .map(|d| d.saturating_duration_since(std::time::Instant::now())),
    }
}

/// Answers one request (not Stop).
fn handle(nic: &mut NetAdapter, req: Request) -> Result<Reply, String> {
    let e = |e: host_linux::net::NetError| e.message;
    Ok(match req {
        Request::Send(frames) => {
            let mut q = VecDeque::from(frames);
            let offered = q.len();
            nic.send(&mut q).map_err(e)?;
            Reply::Sent((offered - q.len()) as u32, path_state(nic))
        }
        Request::Service => {
            let mut events = Vec::new();
            nic.service(&mut events).map_err(e)?;
            Reply::Events(events, path_state(nic))
        }
        Request::Info => Reply::Info(nic.info().map_err(|e| e.to_string())?, path_state(nic)),
        Request::Start(_) | Request::Stop => return Err("unexpected request".into()),
    })
}

/// The report of a panic in host code: the message and the last kernel calls.
fn panic_report(nic: &NetAdapter, payload: Box<dyn std::any::Any + Send>) -> String {
    let msg = payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "(no message)".into());
    nic.host.k.report(&KernelError::Unsupported(format!(
        "driver host panicked (host-side bug): {msg}"
    )))
}

fn serve(chan: &mut UnixStream, mut nic: NetAdapter) -> i32 {
    loop {
        let req = match proto::recv_request(chan) {
            Ok(Some(r)) => r,
            // The manager is gone: nobody to serve.
            Ok(None) => return EXIT_STOPPED,
            Err(_) => return EXIT_PROTOCOL,
        };
        if req == Request::Stop {
            let reply = match nic.stop() {
                Ok(findings) => Reply::Stopped(findings),
                Err(e) => Reply::Failed(e.to_string()),
            };
            let _ = proto::send_reply(chan, &reply);
            return EXIT_STOPPED;
        }
        let reply = match panic::catch_unwind(AssertUnwindSafe(|| handle(&mut nic, req))) {
            Ok(Ok(reply)) => reply,
            Ok(Err(report)) => Reply::Failed(report),
            Err(payload) => Reply::Failed(panic_report(&nic, payload)),
        };
        let failed = matches!(reply, Reply::Failed(_));
        if proto::send_reply(chan, &reply).is_err() || failed {
            return EXIT_FAILED;
        }
    }
}
