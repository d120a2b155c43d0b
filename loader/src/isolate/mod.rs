//! Isolation and recovery: each driver stack (a network adapter, a root-enumerated device with
//! its filters, legacy services, a `run`) runs in its own driver-host process, confined (see
//! [`host_linux::sandbox`]), while the manager (`ica-load`) keeps the registry, the
//! Linux-facing ends (the TAP interface, the device model's wire, the clients of the device I/O
//! API) and the bridge loop. The manager re-executes its own binary with the hidden
//! `driver-host` subcommand; the two talk over a socketpair ([`proto`]: length-prefixed
//! request/reply messages). The driver host reads the registry from a snapshot and forwards the
//! drivers' writes to the manager, which applies them to the store ([`registry`]).
//!
//! ```text
//!  manager: TAP <-> Bridge <-> IsolatedNic ==socket==> driver host: NetAdapter (guest miniport)
//!           registry, wire fd (polled for wakeups)        device model on the wire fd, confined
//!  manager: client <-> IsolatedStack (handles) ==socket==> driver host: device stack / services
//!           registry store <== forwarded writes ==========    registry snapshot
//! ```
//!
//! When the driver host fails (guest fault, watchdog, host-side panic: it sends its report and
//! exits; SIGKILL, SIGXCPU at its CPU limit or any other death: the manager sees the socket close;
//! no answer in time: the manager kills it), the manager logs the report and starts a new driver
//! host with the same parameters and the registry as it is now (`supervisor.rs`). A network
//! adapter counts the frames the dead host had taken and not completed as lost (they are never
//! offered again, so nothing is duplicated) and shows the carrier down, then up. A device
//! stack fails the request that was running and every handle opened before; clients reopen. A
//! restart limit stops a crash loop.

mod child;
mod nic;
pub mod proto;
pub mod registry;
mod stack;
mod supervisor;

use std::os::fd::RawFd;
use std::path::PathBuf;
use std::time::Duration;

pub use child::driver_host_main;
pub use nic::IsolatedNic;
pub use proto::{Backend, ServiceImage, Stack, StartParams};
pub use registry::HostRegistry;
pub use stack::IsolatedStack;
pub use supervisor::Recovery;

/// The hidden `ica-load` subcommand that runs a driver host.
pub const SUBCOMMAND: &str = "driver-host";

/// Fault injection: a driver host whose environment sets this variable to an IOCTL code (decimal
/// or `0x` hex) panics in its own code when asked for that IOCTL, before the driver sees it, so
/// that tests can show a host-side bug is reported and recovered from like a driver's.
pub const INJECT_PANIC_IOCTL: &str = "ICA_INJECT_PANIC_IOCTL";
/// The driver host's end of the socketpair.
pub const CHANNEL_FD: RawFd = 3;
/// The device model's wire (a TAP), when there is one.
pub const WIRE_FD: RawFd = 4;

/// Address space a driver host may map beyond what it has when it confines itself (the guest
/// window is reserved by then: this is for the heap and the block cache).
const ADDRESS_SPACE_SLACK: u64 = 1 << 30;
/// RLIMIT_NOFILE of a confined driver host.
const OPEN_FILES: u64 = 16;

/// Confines this process as a driver host, for the rest of its life (see
/// [`host_linux::sandbox`]): call it after the setup (kernel, image read, device, wire) and
/// before any guest code runs.
pub fn confine() -> std::io::Result<()> {
    let limits = host_linux::sandbox::Limits::current_plus(ADDRESS_SPACE_SLACK, OPEN_FILES)?;
    host_linux::sandbox::Confinement::new(limits).apply()?;
    tracing::debug!(target: "ica::isolate", "driver host confined: {limits:?}");
    Ok(())
}

/// How the manager runs driver hosts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IsolationConfig {
    /// The program to run (`ica-load` itself) and the arguments before [`SUBCOMMAND`] (such as
    /// `--log LEVEL`).
    pub program: PathBuf,
    pub args: Vec<String>,
    /// Environment variables set for the driver host on top of the manager's (such as
    /// `RUST_BACKTRACE`, or [`INJECT_PANIC_IOCTL`] in tests).
    pub env: Vec<(String, String)>,
    /// How long the manager waits for an answer before it kills the driver host as hung (past
    /// the guest watchdog's own limits, which the driver host reports itself).
    pub reply_timeout: Duration,
    /// At most this many restarts within [`restart_window`](Self::restart_window); one more
    /// failure is final.
    pub max_restarts: usize,
    pub restart_window: Duration,
    /// CPU time a driver host may use in its life (RLIMIT_CPU, whole seconds; None:
    /// unlimited). One that uses it up dies of SIGXCPU and is restarted like any failed one.
    pub cpu_limit: Option<Duration>,
    /// How much nicer than the manager driver hosts run (so a spinning driver cannot starve the
    /// manager that supervises it, nor the rest of the machine).
    pub nice: i32,
}

impl IsolationConfig {
    /// Runs `program` with the default limits: 5 restarts within 60 s, 40 s per answer, no CPU
    /// limit, nice +5.
    pub fn new(program: PathBuf) -> IsolationConfig {
        IsolationConfig {
            program,
            args: Vec::new(),
            env: Vec::new(),
            reply_timeout: Duration::from_secs(40),
            max_restarts: 5,
            restart_window: Duration::from_secs(60),
            cpu_limit: None,
            nice: 5,
        }
    }
}
