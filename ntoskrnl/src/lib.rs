//! ntoskrnl.exe: the kernel personality every driver links against, and the kernel context
//! ([`Kernel`]) all module crates (hal, ndis, portcls, ks) build on.
//!
//! Subsystems live in their own files (`ex` pool, `lookaside` lookaside lists, `ke` sync and
//! clocks, `timer` kernel timers, `workitem` work items, `io` I/O manager, `pnp`, `mm` MDLs, `ob`
//! object references, `ps` threads/processes, `rtl` strings, `crt` C runtime, `dbg` debug output); each declares its
//! exports next to its code, and [`MODULE`] gathers them. `verifier` is Driver Verifier's checks.

pub use dbt;

pub mod crt;
pub mod dbg;
mod error;
pub mod ex;
pub mod export;
pub mod fmt;
pub mod interlocked;
pub mod io;
pub mod ke;
mod kernel;
pub mod layout;
pub mod lookaside;
pub mod mm;
pub mod ob;
pub mod pnp;
pub mod ps;
pub mod registry;
pub mod rtl;
pub mod status;
mod tables;
pub mod timer;
pub mod verifier;
pub mod wmi;
pub mod workitem;

pub use error::{KResult, KernelError};
pub use export::{DataExport, Export, Module};
pub use kernel::{Binding, HostStats, Kernel, LoadedImage, Watchdog};
pub use layout::Layout;
pub use tables::MODULE;
