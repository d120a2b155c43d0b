//! The kernel context: the guest machine plus every piece of personality state, import bindings,
//! the thunk dispatcher and host -> guest calls.

use std::any::{Any, TypeId};
use std::collections::{HashMap, VecDeque};
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use dbt::{Arch, CallConv, Exit, FaultKind, Machine};

use crate::export::{Export, Module};
use crate::verifier::{self, CallSite, Verifier};
use crate::{ex, io, ke, ps, KResult, KernelError, Layout};

/// A driver image mapped into guest memory (the kernel's loaded-module list).
#[derive(Debug, Clone)]
pub struct LoadedImage {
    /// File name, e.g. `ioctl.sys`.
    pub name: String,
    /// Guest base address.
    pub base: u64,
    /// Size of the mapped image.
    pub size: u64,
    /// Guest address of the entry point (DriverEntry).
    pub entry: u64,
    /// The functions the image exports: (offset from the base, name), by offset.
    pub symbols: Vec<(u64, String)>,
}

/// What one import thunk is bound to.
#[derive(Debug)]
pub struct Binding {
    /// Module file name as the driver imported it (lower case).
    pub module: String,
    /// Function name (or `#ordinal`).
    pub name: String,
    /// The implementation, or `None` for a named trap.
    pub export: Option<&'static Export>,
    /// How often the guest called it.
    pub calls: u64,
}

impl Binding {
    /// `module!name`.
    pub fn qualified(&self) -> String {
        format!("{}!{}", self.module, self.name)
    }
}

/// One entry of the recent-call ring kept for fault reports.
#[derive(Debug, Clone)]
struct RecentCall {
    thunk: u32,
    caller: u64,
}

const RECENT_CALLS: usize = 16;

/// Counters of host-side work, for `--stats`.
#[derive(Debug, Default, Clone)]
pub struct HostStats {
    /// Import calls dispatched to host functions.
    pub host_calls: u64,
    /// Host -> guest calls made.
    pub guest_calls: u64,
    /// Wall time spent in host functions serving imports, in nanoseconds (nested guest calls excluded).
    pub host_nanos: u64,
    /// Wall time spent executing guest code, in nanoseconds.
    pub guest_nanos: u64,
}

/// How long a host -> guest call may run before the kernel stops the guest and reports where it
/// was (a driver spinning forever): measured from the outermost host -> guest call, and, at
/// DISPATCH_LEVEL or above, from when the guest was first seen at that IRQL. Checked every
/// [`WATCHDOG_SLICE`] guest instructions and at every import call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Watchdog {
    /// Limit of one outermost host -> guest call at any IRQL (`None`: unlimited).
    pub call: Option<Duration>,
    /// Limit of a stretch at DISPATCH_LEVEL or above (`None`: unlimited).
    pub raised: Option<Duration>,
}

impl Default for Watchdog {
    fn default() -> Self {
        Watchdog {
            call: Some(Duration::from_secs(30)),
            raised: Some(Duration::from_secs(2)),
        }
    }
}

/// Guest instructions run between two watchdog checks (a few milliseconds of guest code).
pub const WATCHDOG_SLICE: u64 = 1 << 20;

/// DISPATCH_LEVEL.
const DISPATCH_LEVEL: u64 = 2;

/// The watchdog's clocks.
#[derive(Debug, Default)]
struct WatchdogClock {
    /// When the outermost host -> guest call started.
    call_started: Option<Instant>,
    /// When the guest was first seen at DISPATCH_LEVEL or above in this stretch.
    raised_since: Option<Instant>,
}

/// The whole kernel: guest machine, loaded images, and the state of every subsystem.
pub struct Kernel {
    /// The guest CPU and memory.
    pub m: Machine,
    /// Windows structure layouts for this architecture.
    pub layout: &'static Layout,
    modules: Vec<&'static Module>,
    bindings: Vec<Binding>,
    binding_index: HashMap<(String, String), u32>,
    recent: VecDeque<RecentCall>,
    /// Mapped driver images.
    pub images: Vec<LoadedImage>,
    /// Executive pool.
    pub pool: ex::Pool,
    /// I/O manager state: drivers, devices, names, IRPs, the IRP trace.
    pub io: io::IoManager,
    /// Dispatcher state: deferred work, timers, clocks.
    pub ke: ke::Dispatcher,
    /// Processor control region, current thread and process.
    pub ps: ps::ProcessState,
    /// Host-side counters.
    pub stats: HostStats,
    /// The verifier's switch, findings and state.
    pub verifier: Verifier,
    /// Images whose code the host called into, innermost last (attributes tail-called imports).
    guest_entries: Vec<u64>,
    /// Return addresses of the import calls being served, innermost last.
    callers: Vec<u64>,
    extensions: HashMap<TypeId, Box<dyn Any>>,
    /// Time limits of host -> guest calls.
    pub watchdog: Watchdog,
    clock: WatchdogClock,
}

/// How deep host -> guest -> host calls may nest before we call it runaway recursion.
const MAX_GUEST_CALL_DEPTH: usize = 64;

impl Kernel {
    /// A fresh kernel for `arch`, serving the exports of `modules` (ntoskrnl first).
    pub fn new(arch: Arch, modules: &[&'static Module]) -> KResult<Kernel> {
        let m = Machine::new(arch);
        let layout = match arch {
            Arch::X86 => &crate::layout::X86,
            Arch::X64 => &crate::layout::X64,
        };
        let mut k = Kernel {
            m,
            layout,
            modules: modules.to_vec(),
            bindings: Vec::new(),
            binding_index: HashMap::new(),
            recent: VecDeque::with_capacity(RECENT_CALLS),
            images: Vec::new(),
            pool: ex::Pool::default(),
            io: io::IoManager::default(),
            ke: ke::Dispatcher::new(),
            ps: ps::ProcessState::default(),
            stats: HostStats::default(),
            verifier: Verifier::default(),
            guest_entries: Vec::new(),
            callers: Vec::new(),
            extensions: HashMap::new(),
            watchdog: Watchdog::default(),
            clock: WatchdogClock::default(),
        };
        ps::init(&mut k)?;
        io::init(&mut k)?;
        crate::pnp::init(&mut k)?;
        Ok(k)
    }

    /// The guest architecture.
    pub fn arch(&self) -> Arch {
        self.m.arch()
    }

    /// Guest pointer size in bytes.
    pub fn ptr_size(&self) -> u64 {
        self.m.arch().ptr_size()
    }

    /// The modules this kernel serves.
    pub fn modules(&self) -> &[&'static Module] {
        &self.modules
    }

    /// The module with this file name (case-insensitive).
    fn module(&self, module: &str) -> Option<&'static Module> {
        self.modules
            .iter()
            .copied()
            .find(|m| m.name.eq_ignore_ascii_case(module))
    }

    /// Looks up a function export by module file name (case-insensitive) and function name, as the
    /// real module exports it on this kernel's architecture.
    pub fn find_export(&self, module: &str, name: &str) -> Option<&'static Export> {
        self.module(module)
            .and_then(|m| m.find_on(self.arch(), name))
    }

    /// Binds `module!name` to a thunk and returns the thunk's guest address. Unknown functions bind to
    /// a named trap. Binding the same function twice returns the same thunk. A data export
    /// (`ntoskrnl.exe!KeTickCount` on x86) binds to the address of its data instead.
    pub fn bind_import(&mut self, module: &str, name: &str) -> u64 {
        let data = self
            .module(module)
            .and_then(|m| m.find_data_on(self.arch(), name));
        if let Some(addr) = data.and_then(|d| (d.address)(self)) {
            return addr;
        }
        let key = (module.to_ascii_lowercase(), name.to_string());
        if let Some(&i) = self.binding_index.get(&key) {
            return self.m.thunk_address(i);
        }
        let export = self.find_export(module, name);
        let index = self.bindings.len() as u32;
        self.bindings.push(Binding {
            module: key.0.clone(),
            name: key.1.clone(),
            export,
            calls: 0,
        });
        self.binding_index.insert(key, index);
        self.m.thunk_address(index)
    }

    /// Guest address of a host function that is not a Windows export (e.g. the dispatch routine of a
    /// host-owned driver); it is listed under the pseudo-module `ica`.
    pub fn host_function(&mut self, export: &'static Export) -> u64 {
        let key = ("ica".to_string(), export.name.to_string());
        if let Some(&i) = self.binding_index.get(&key) {
            return self.m.thunk_address(i);
        }
        let index = self.bindings.len() as u32;
        self.bindings.push(Binding {
            module: key.0.clone(),
            name: key.1.clone(),
            export: Some(export),
            calls: 0,
        });
        self.binding_index.insert(key, index);
        self.m.thunk_address(index)
    }

    /// All bindings made so far (thunk index order).
    pub fn bindings(&self) -> &[Binding] {
        &self.bindings
    }

    /// Per-module state of a module crate (created on first use).
    pub fn extension<T: Any + Default>(&mut self) -> &mut T {
        self.extensions
            .entry(TypeId::of::<T>())
            .or_insert_with(|| Box::new(T::default()))
            .downcast_mut::<T>()
            .expect("extension map is keyed by TypeId")
    }

    /// Calls a guest function with the default convention for driver callbacks (stdcall on x86).
    pub fn call_guest(&mut self, func: u64, args: &[u64]) -> KResult<u64> {
        self.call_guest_conv(func, CallConv::Stdcall, args)
    }

    /// Calls a guest function and runs it to completion, serving its imports; re-entrant. The CPU
    /// state is restored afterwards, so the caller (maybe a thunk in the middle of a guest call) goes
    /// on where it was.
    pub fn call_guest_conv(&mut self, func: u64, conv: CallConv, args: &[u64]) -> KResult<u64> {
        if self.guest_entries.len() >= MAX_GUEST_CALL_DEPTH {
            return Err(KernelError::Unsupported(format!(
                "host -> guest calls nested deeper than {MAX_GUEST_CALL_DEPTH} (runaway recursion calling {})",
                self.symbolize(func)
            )));
        }
        let saved = self.m.cpu.clone();
        ke::update_shared_user_data(self)?;
        self.m.prepare_guest_call(func, conv, args)?;
        if self.guest_entries.is_empty() {
            self.clock = WatchdogClock {
                call_started: Some(Instant::now()),
                raised_since: None,
            };
        }
        self.guest_entries.push(func);
        self.stats.guest_calls += 1;
        let result = loop {
            let started = Instant::now();
            let exit = self.m.run_limited(WATCHDOG_SLICE);
            let now = Instant::now();
            self.stats.guest_nanos += now.duration_since(started).as_nanos() as u64;
            if let Err(e) = self.watchdog_check(now) {
                break Err(e);
            }
            match exit {
                None => {}
                Some(Exit::Thunk(i)) => {
                    let (guest_before, host_before) =
                        (self.stats.guest_nanos, self.stats.host_nanos);
                    let started = Instant::now();
                    let served = self.dispatch_thunk(i);
                    // Exclusive host time: what nested guest calls (and their own imports) took is
                    // already counted where it belongs.
                    let nested = (self.stats.guest_nanos - guest_before)
                        + (self.stats.host_nanos - host_before);
                    self.stats.host_nanos +=
                        (started.elapsed().as_nanos() as u64).saturating_sub(nested);
                    if let Err(e) = served {
                        break Err(e);
                    }
                }
                Some(Exit::HostReturn) => break Ok(self.m.return_value()),
                Some(Exit::Fault(f)) => break Err(self.guest_fault(f)),
            }
        };
        let depth = self.guest_entries.len();
        let result = match result {
            Ok(v) if self.verifier.enabled() => {
                verifier::check_locks_on_return(self, func, depth).map(|()| v)
            }
            other => other,
        };
        let result = match (result, ke::float_saves_on_return(self, func, depth)) {
            (Ok(v), checked) => checked.map(|()| v),
            (Err(e), _) => Err(e),
        };
        if result.is_err() {
            verifier::abandon_locks(self, depth);
        }
        self.guest_entries.pop();
        if self.guest_entries.is_empty() {
            self.clock = WatchdogClock::default();
        }
        let irql = self.m.cpu.cr8;
        self.m.cpu = saved;
        if result.is_ok() {
            // IRQL is kernel state, not a register the call should roll back.
            self.m.cpu.cr8 = irql;
        }
        result
    }

    /// How long the guest has been at DISPATCH_LEVEL or above in this stretch, as the watchdog
    /// measures it (`None` below DISPATCH_LEVEL).
    pub fn raised_for(&self) -> Option<Duration> {
        if self.m.cpu.cr8 < DISPATCH_LEVEL {
            return None;
        }
        Some(
            self.clock
                .raised_since
                .map_or(Duration::ZERO, |s| s.elapsed()),
        )
    }

    /// Stops the guest (a [`FaultKind::Watchdog`] fault at its current instruction) if it ran past
    /// a [`Watchdog`] limit.
    fn watchdog_check(&mut self, now: Instant) -> KResult<()> {
        let irql = self.m.cpu.cr8;
        if irql < DISPATCH_LEVEL {
            self.clock.raised_since = None;
        } else if self.clock.raised_since.is_none() {
            self.clock.raised_since = Some(now);
        }
        let over = |since: Option<Instant>, limit: Option<Duration>| match (since, limit) {
            (Some(s), Some(l)) => now.duration_since(s) > l,
            _ => false,
        };
        let what = if over(self.clock.raised_since, self.watchdog.raised) {
            format!(
                "spun at IRQL {irql} for more than {:?} without returning",
                self.watchdog.raised.unwrap_or_default()
            )
        } else if over(self.clock.call_started, self.watchdog.call) {
            format!(
                "a call from the host ran for more than {:?} (IRQL {irql})",
                self.watchdog.call.unwrap_or_default()
            )
        } else {
            return Ok(());
        };
        Err(KernelError::Fault(Box::new(
            self.m.fault(FaultKind::Watchdog(what)),
        )))
    }

    /// Serves one import call: reads the arguments, runs the host function, returns to the guest.
    fn dispatch_thunk(&mut self, index: u32) -> KResult<()> {
        // x64 drivers read the clocks from KUSER_SHARED_DATA inline; keep them current.
        ke::update_shared_user_data(self)?;
        let caller = self
            .m
            .mem
            .read_ptr(self.arch(), self.m.cpu.regs[4])
            .unwrap_or(0);
        let Some(binding) = self.bindings.get_mut(index as usize) else {
            return Err(KernelError::Unsupported(format!(
                "jump into unassigned thunk {index}"
            )));
        };
        binding.calls += 1;
        let export = binding.export;
        if self.recent.len() == RECENT_CALLS {
            self.recent.pop_front();
        }
        self.recent.push_back(RecentCall {
            thunk: index,
            caller,
        });
        let Some(export) = export else {
            let import = self.bindings[index as usize].qualified();
            tracing::error!(target: "ica::trap", "{import} called from {}", self.symbolize(caller));
            return Err(KernelError::Unimplemented { import, caller });
        };
        let (conv, slots) = match self.arch() {
            Arch::X86 => (export.conv, export.slots32),
            Arch::X64 => (CallConv::Win64, export.slots64),
        };
        let args = self.m.host_call_args(conv, slots)?;
        self.callers.push(caller);
        let ret = self.serve(export, &args, caller);
        self.callers.pop();
        let ret = ret?;
        self.stats.host_calls += 1;
        // The call may have taken a while (a stall, a wait): the guest reads the clocks next.
        ke::update_shared_user_data(self)?;
        self.m.host_call_return(conv, slots, ret)?;
        Ok(())
    }

    /// Runs the host function of an import call with its arguments (the call is on `callers`).
    fn serve(&mut self, export: &'static Export, args: &[u64], caller: u64) -> KResult<u64> {
        if self.verifier.enabled() {
            verifier::check_irql(self, export, args)?;
        }
        if tracing::enabled!(target: "ica::call", tracing::Level::TRACE) {
            let mut text = String::new();
            for (i, name) in export.params.iter().enumerate() {
                let v = args.get(i).copied().unwrap_or(0);
                let _ = write!(text, "{}{name}={v:#x}", if i > 0 { ", " } else { "" });
            }
            tracing::trace!(target: "ica::call", "{}({text}) from {}", export.name, self.symbolize(caller));
        }
        (export.func)(self, args).map_err(|e| match e {
            KernelError::Mem(fault) => {
                if let Some(found) = ex::special_pool_fault(self, fault.addr, fault.write, None) {
                    return found;
                }
                KernelError::BadPointer {
                    function: export.name,
                    fault,
                    at: Box::new(self.m.fault(FaultKind::PageFault {
                        addr: fault.addr,
                        write: fault.write,
                    })),
                }
            }
            other => other,
        })
    }

    /// The error for a guest fault: the verifier's finding if the access hit special pool (a guard
    /// page or a freed block), else the fault itself.
    fn guest_fault(&mut self, f: dbt::GuestFault) -> KernelError {
        if let FaultKind::PageFault { addr, write } = f.kind {
            if let Some(found) = ex::special_pool_fault(self, addr, write, Some(f.rip)) {
                return found;
            }
        }
        KernelError::Fault(Box::new(f))
    }

    /// Reads argument slot `index` of the import call being served (for variadic functions, whose
    /// table entry declares only the fixed parameters). x86 variadic functions are cdecl.
    pub fn vararg(&self, index: usize) -> KResult<u64> {
        let conv = match self.arch() {
            Arch::X86 => CallConv::Cdecl,
            Arch::X64 => CallConv::Win64,
        };
        let args = self.m.host_call_args(conv, index + 1)?;
        Ok(args.get(index).copied().unwrap_or(0))
    }

    /// `image.sys+0x1234 (Symbol+0x10)`, `ntoskrnl.exe!Name` for thunks, or plain hex.
    pub fn symbolize(&self, addr: u64) -> String {
        if self.image_at(addr).is_none() {
            for (i, b) in self.bindings.iter().enumerate() {
                if self.m.thunk_address(i as u32) == addr {
                    return b.qualified();
                }
            }
        }
        self.site(addr).to_string()
    }

    /// Locates a guest code address: its image and the nearest symbol the image exports.
    pub fn site(&self, addr: u64) -> CallSite {
        let image = self.image_at(addr);
        let module = image.map(|i| (i.name.clone(), addr - i.base));
        let symbol = image.and_then(|i| {
            let offset = addr - i.base;
            let at = i.symbols.partition_point(|(o, _)| *o <= offset);
            at.checked_sub(1)
                .map(|s| (i.symbols[s].1.clone(), offset - i.symbols[s].0))
        });
        CallSite {
            address: addr,
            module,
            symbol,
        }
    }

    /// Where the driver made the import call being served: its return address, or (for a tail
    /// call, whose return address is the host's) the guest function the host called last. None
    /// outside an import call.
    pub fn call_site(&self) -> Option<CallSite> {
        let caller = *self.callers.last()?;
        let addr = if self.image_at(caller).is_some() {
            caller
        } else {
            self.guest_entries
                .last()
                .copied()
                .filter(|&f| self.image_at(f).is_some())
                .unwrap_or(caller)
        };
        Some(self.site(addr))
    }

    /// How deeply host -> guest calls are nested now.
    pub fn guest_depth(&self) -> usize {
        self.guest_entries.len()
    }

    /// A multi-line report of an error: what happened, registers and a symbolized guest backtrace,
    /// and the last import calls.
    pub fn report(&self, err: &KernelError) -> String {
        let mut out = String::new();
        let fault = match err {
            KernelError::Fault(f) => Some(f.as_ref()),
            KernelError::BadPointer { at, .. } => Some(at.as_ref()),
            _ => None,
        };
        match err {
            KernelError::Unimplemented { import, caller } => {
                let _ = writeln!(
                    out,
                    "driver called unimplemented import {import} from {}",
                    self.symbolize(*caller)
                );
            }
            KernelError::Fault(f) => {
                let _ = writeln!(out, "guest fault in {}: {}", self.symbolize(f.rip), f.kind);
            }
            other => {
                let _ = writeln!(out, "{other}");
            }
        }
        if let Some(f) = err.finding() {
            let _ = writeln!(out, "verifier: {f}");
        }
        if let Some(f) = fault {
            let _ = writeln!(out, "{f}");
            let _ = writeln!(out, "guest backtrace:");
            for (depth, addr) in f.backtrace.iter().enumerate() {
                let _ = writeln!(out, "  #{depth} {}", self.symbolize(*addr));
            }
        }
        if !self.recent.is_empty() {
            let _ = writeln!(out, "last kernel calls (oldest first):");
            for c in &self.recent {
                let name = self
                    .bindings
                    .get(c.thunk as usize)
                    .map(Binding::qualified)
                    .unwrap_or_default();
                let _ = writeln!(out, "  {name} from {}", self.symbolize(c.caller));
            }
        }
        out
    }

    /// The image containing `addr`, if any.
    pub fn image_at(&self, addr: u64) -> Option<&LoadedImage> {
        self.images
            .iter()
            .find(|i| addr >= i.base && addr < i.base + i.size)
    }

    /// Name of the driver image whose code made the current import call: from the return address,
    /// or (for a tail call, whose return address is the host's) from the guest function the host
    /// called last.
    pub fn caller_image(&self) -> String {
        let caller = self
            .m
            .mem
            .read_ptr(self.arch(), self.m.cpu.regs[4])
            .unwrap_or(0);
        self.image_at(caller)
            .or_else(|| self.guest_entries.last().and_then(|&f| self.image_at(f)))
            .map(|i| i.name.clone())
            .unwrap_or_else(|| "host".to_string())
    }
}

impl Kernel {
    /// Reads a guest pointer-sized value.
    pub fn read_ptr(&self, addr: u64) -> KResult<u64> {
        Ok(self.m.mem.read_ptr(self.arch(), addr)?)
    }

    /// Writes a guest pointer-sized value.
    pub fn write_ptr(&mut self, addr: u64, value: u64) -> KResult<()> {
        let arch = self.arch();
        Ok(self.m.mem.write_ptr(arch, addr, value)?)
    }
}
