//! The Verifier: Driver Verifier's checks for the drivers the kernel runs. Off by default;
//! `ica-load --verifier` turns it on for users, the integration tests' driver host turns it on
//! for every test ([`Verifier::set_enabled`], [`Verifier::set_strict`]).
//!
//! What it checks, and where:
//! - IRQL: every export declares the highest IRQL it may be called at, in its export table
//!   ([`Irql`], `@` in [`export_table!`](crate::export_table)); the thunk dispatcher checks it
//!   before the call.
//! - Spin locks ([`crate::ke`]): acquiring one this processor holds, releasing one nobody holds,
//!   acquiring or releasing at the wrong IRQL, lowering the IRQL below DISPATCH_LEVEL or returning
//!   from a driver callback with a lock still held.
//! - Pool ([`crate::ex`]): a driver's small allocations come from special pool, each block alone
//!   on its page between guard bytes and no-access guard pages; freed blocks stay unmapped for a
//!   while. Overruns and underruns are caught at the access (guard page) or at free and unload
//!   (guard bytes), a use after free at the access, a double free at the second free.
//! - I/O ([`crate::io`]): a second completion of an IRP, a dispatch routine returning
//!   STATUS_PENDING without IoMarkIrpPending, a dispatch routine that changes the IRQL.
//! - Unload ([`crate::pnp::unload_driver`]): pool still allocated (by tag), IRPs, MDLs, work
//!   items, object references, lookaside lists and device objects left behind, timers, DPCs and
//!   work items that would still run the unloaded code.
//!
//! Each problem is a [`Finding`] naming the rule, the driver and the guest call site. A fatal one
//! ends the call path as the bug check Windows raises for it ([`stop`]; with the verifier off the
//! same call gives the plain bug check, if Windows raises one without Driver Verifier); the others
//! are collected ([`note`]) and the driver goes on. Every finding is logged (`ica::verifier`) and
//! kept until taken ([`Verifier::take_findings`]).

use std::collections::BTreeMap;
use std::fmt;

use crate::error::bug_check_name;
use crate::export::Export;
use crate::ke::{current_irql, APC_LEVEL, DISPATCH_LEVEL, PASSIVE_LEVEL};
use crate::{KResult, Kernel, KernelError};

/// What a finding is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rule {
    /// A function called above the highest IRQL it allows.
    Irql,
    /// A dispatch routine returned at another IRQL than it was called at.
    IrqlNotRestored,
    /// A spin lock acquired by the processor that holds it (a deadlock).
    SpinLockAlreadyOwned,
    /// A spin lock released that is not held.
    SpinLockNotOwned,
    /// A spin lock acquired or released at the wrong IRQL.
    SpinLockIrql,
    /// The IRQL dropped below DISPATCH_LEVEL, or a driver callback returned, with a spin lock held.
    SpinLockHeld,
    /// Bytes after the end of a pool block written (or read, at a guard page).
    PoolOverrun,
    /// Bytes before the start of a pool block written (or read, at a guard page).
    PoolUnderrun,
    /// A freed pool block accessed.
    UseAfterFree,
    /// A pool block freed twice.
    DoubleFree,
    /// Something freed that is not a pool block, or with the wrong tag.
    BadFree,
    /// Pool still allocated when the driver unloaded.
    PoolLeak,
    /// IRPs the driver allocated and did not free before unloading.
    IrpLeak,
    /// MDLs the driver allocated and did not free before unloading.
    MdlLeak,
    /// IO_WORKITEMs the driver allocated and did not free before unloading.
    WorkItemLeak,
    /// A device object still there when the driver unloaded.
    DeviceLeak,
    /// Object references the driver took and did not drop before unloading.
    ReferenceLeak,
    /// A lookaside list still live when the driver unloaded (or its memory freed).
    LookasideLeak,
    /// Resources an NDIS miniport did not release (NDIS reclaimed them).
    NdisLeftover,
    /// A timer or DPC still queued that would run the unloaded driver's code.
    TimerPending,
    /// A work item still queued that would run the unloaded driver's code.
    WorkItemPending,
    /// IoCompleteRequest of an IRP already completed.
    IrpDoubleCompletion,
    /// A dispatch routine returned STATUS_PENDING without marking the IRP pending.
    IrpPendingNotMarked,
    /// A PnP notification or WMI registration still in place when the driver unloaded.
    RegistrationLeak,
}

impl Rule {
    /// The rule's name, as findings print it.
    pub fn name(self) -> &'static str {
        match self {
            Rule::Irql => "irql",
            Rule::IrqlNotRestored => "irql-not-restored",
            Rule::SpinLockAlreadyOwned => "spinlock-already-owned",
            Rule::SpinLockNotOwned => "spinlock-not-owned",
            Rule::SpinLockIrql => "spinlock-irql",
            Rule::SpinLockHeld => "spinlock-held",
            Rule::PoolOverrun => "pool-overrun",
            Rule::PoolUnderrun => "pool-underrun",
            Rule::UseAfterFree => "use-after-free",
            Rule::DoubleFree => "double-free",
            Rule::BadFree => "bad-free",
            Rule::PoolLeak => "pool-leak",
            Rule::IrpLeak => "irp-leak",
            Rule::MdlLeak => "mdl-leak",
            Rule::WorkItemLeak => "work-item-leak",
            Rule::DeviceLeak => "device-leak",
            Rule::ReferenceLeak => "reference-leak",
            Rule::LookasideLeak => "lookaside-leak",
            Rule::NdisLeftover => "ndis-leftover",
            Rule::TimerPending => "timer-pending",
            Rule::WorkItemPending => "work-item-pending",
            Rule::IrpDoubleCompletion => "irp-double-completion",
            Rule::IrpPendingNotMarked => "irp-pending-not-marked",
            Rule::RegistrationLeak => "registration-leak",
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A guest code address, located: the image it lies in and the nearest symbol the image exports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallSite {
    /// The guest address.
    pub address: u64,
    /// The image it lies in and its offset from the image base.
    pub module: Option<(String, u64)>,
    /// The nearest symbol the image exports at or before it, and the offset from that symbol.
    pub symbol: Option<(String, u64)>,
}

impl fmt::Display for CallSite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.module {
            Some((image, offset)) => write!(f, "{image}+{offset:#x}")?,
            None => write!(f, "{:#x}", self.address)?,
        }
        if let Some((symbol, offset)) = &self.symbol {
            write!(f, " ({symbol}+{offset:#x})")?;
        }
        Ok(())
    }
}

/// A Windows bug check: its code and four parameters (for 0xC4 and 0xC9 the first says which
/// violation it is).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StopCode {
    /// The bug-check code.
    pub code: u32,
    /// Parameters 1 to 4.
    pub parameters: [u64; 4],
}

impl StopCode {
    /// Bug check `code` with `parameters`.
    pub const fn new(code: u32, parameters: [u64; 4]) -> StopCode {
        StopCode { code, parameters }
    }

    /// Bug check `code` whose first parameter is `param1` (the rest 0).
    pub const fn sub(code: u32, param1: u64) -> StopCode {
        StopCode::new(code, [param1, 0, 0, 0])
    }
}

impl fmt::Display for StopCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [p1, p2, p3, p4] = self.parameters;
        write!(
            f,
            "0x{:X} {} ({p1:#x}, {p2:#x}, {p3:#x}, {p4:#x})",
            self.code,
            bug_check_name(self.code)
        )
    }
}

/// One problem the verifier found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// The rule broken.
    pub rule: Rule,
    /// The driver image that broke it.
    pub driver: String,
    /// Where in the guest: the call into the kernel, the faulting access, the routine, or the
    /// allocation of what leaked.
    pub call_site: Option<CallSite>,
    /// What happened, in words (other call sites involved included).
    pub detail: String,
    /// The bug check Windows raises for it with Driver Verifier on, if there is one.
    pub bug_check: Option<StopCode>,
    /// Whether it ended the call path (else it was collected and the driver went on).
    pub fatal: bool,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} by {}", self.rule, self.driver)?;
        if let Some(site) = &self.call_site {
            write!(f, " at {site}")?;
        }
        write!(f, ": {}", self.detail)?;
        if let Some(check) = &self.bug_check {
            write!(f, " [bug check {check}]")?;
        }
        Ok(())
    }
}

/// A spin lock held, as the verifier saw it taken.
#[derive(Debug, Clone)]
struct HeldLock {
    site: Option<CallSite>,
    /// Host -> guest call depth it was acquired at.
    depth: usize,
}

/// The verifier's state in a kernel (`Kernel::verifier`).
#[derive(Debug, Default)]
pub struct Verifier {
    enabled: bool,
    strict: bool,
    findings: Vec<Finding>,
    locks: BTreeMap<u64, HeldLock>,
}

impl Verifier {
    /// Whether the verifier checks the drivers.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Turns the verifier on or off. Turn it on before loading drivers: pool allocated before comes
    /// from ordinary pool.
    pub fn set_enabled(&mut self, on: bool) {
        self.enabled = on;
    }

    /// In strict mode (the tests') dropping the kernel with findings nobody took is a panic, so an
    /// unexpected finding fails the test that caused it.
    pub fn set_strict(&mut self, strict: bool) {
        self.strict = strict;
    }

    /// The findings so far, oldest first.
    pub fn findings(&self) -> &[Finding] {
        &self.findings
    }

    /// Takes the findings so far.
    pub fn take_findings(&mut self) -> Vec<Finding> {
        std::mem::take(&mut self.findings)
    }
}

impl Drop for Verifier {
    fn drop(&mut self) {
        if self.strict && !self.findings.is_empty() && !std::thread::panicking() {
            let list: Vec<String> = self.findings.iter().map(|f| format!("  {f}")).collect();
            panic!(
                "the verifier found {} problem(s) nobody expected:\n{}",
                self.findings.len(),
                list.join("\n")
            );
        }
    }
}

/// The driver a call site belongs to: its image, else the image that made the current call.
fn driver_of(k: &Kernel, site: Option<&CallSite>) -> String {
    site.and_then(|s| s.module.as_ref().map(|(image, _)| image.clone()))
        .unwrap_or_else(|| k.caller_image())
}

/// Ends the current call path for a violation of `rule` at the current import call (see
/// [`stop_at`]).
pub fn stop(k: &mut Kernel, rule: Rule, check: StopCode, detail: impl Into<String>) -> KernelError {
    let site = k.call_site();
    stop_at(k, rule, check, site, detail)
}

/// Ends the current call path for a violation of `rule` at `site`: with the verifier on, a
/// finding (recorded, and carried by the error); with it off, the plain bug check.
pub fn stop_at(
    k: &mut Kernel,
    rule: Rule,
    check: StopCode,
    site: Option<CallSite>,
    detail: impl Into<String>,
) -> KernelError {
    let detail = detail.into();
    if !k.verifier.enabled {
        return KernelError::bug_check(check.code, detail);
    }
    let finding = Finding {
        rule,
        driver: driver_of(k, site.as_ref()),
        call_site: site,
        detail: detail.clone(),
        bug_check: Some(check),
        fatal: true,
    };
    tracing::error!(target: "ica::verifier", "{finding}");
    k.verifier.findings.push(finding.clone());
    KernelError::BugCheck {
        code: check.code,
        name: bug_check_name(check.code),
        detail,
        finding: Some(Box::new(finding)),
    }
}

/// Records a finding the driver survives (the verifier must be on; nothing happens otherwise).
pub fn note(
    k: &mut Kernel,
    rule: Rule,
    driver: &str,
    site: Option<CallSite>,
    check: Option<StopCode>,
    detail: impl Into<String>,
) {
    if !k.verifier.enabled {
        return;
    }
    let finding = Finding {
        rule,
        driver: driver.to_string(),
        call_site: site,
        detail: detail.into(),
        bug_check: check,
        fatal: false,
    };
    tracing::warn!(target: "ica::verifier", "{finding}");
    k.verifier.findings.push(finding);
}

// ---------------------------------------------------------------------------------------------
// IRQL rules of exports

/// The highest IRQL an export may be called at, declared once in its export table.
#[derive(Debug, Clone, Copy)]
pub enum Irql {
    /// Any IRQL.
    Any,
    /// At most this.
    Max(IrqlLimit),
    /// It depends on the arguments (the raw argument slots of the call); `None` is any IRQL.
    By(fn(&Kernel, &[u64]) -> KResult<Option<IrqlLimit>>),
}

/// An IRQL limit and what breaking it is called on Windows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IrqlLimit {
    /// The highest IRQL allowed.
    pub max: u8,
    /// The DDI compliance rule (or documentation) it comes from.
    pub source: &'static str,
    /// The bug check Driver Verifier raises when it is broken.
    pub check: StopCode,
}

/// The IRQL limits the export tables declare, from Driver Verifier's DDI compliance rules
/// (bug check 0xC4 with the rule's code) and the functions' documented IRQL (0xC4 / 0xE5: "a call
/// was made to a Kernel API at the incorrect IRQL"; 0xE6 for Zw routines).
pub mod irql {
    use super::{Irql, IrqlLimit, StopCode, APC_LEVEL, DISPATCH_LEVEL, PASSIVE_LEVEL};

    const fn limit(max: u8, source: &'static str, code: u32, param1: u64) -> Irql {
        Irql::Max(IrqlLimit {
            max,
            source,
            check: StopCode::sub(code, param1),
        })
    }

    /// IrqlZwPassive: registry Zw routines and ZwClose at PASSIVE_LEVEL.
    pub const ZW_PASSIVE: Irql = limit(PASSIVE_LEVEL, "IrqlZwPassive", 0xC4, 0x2001F);
    /// IrqlIoPassive1: IoCreateDevice, IoSetDeviceInterfaceState at PASSIVE_LEVEL.
    pub const IO_PASSIVE1: Irql = limit(PASSIVE_LEVEL, "IrqlIoPassive1", 0xC4, 0x2000A);
    /// IrqlIoPassive1: IoBuildDeviceIoControlRequest at APC_LEVEL or below.
    pub const IO_PASSIVE1_APC: Irql = limit(APC_LEVEL, "IrqlIoPassive1", 0xC4, 0x2000A);
    /// IrqlIoPassive3: IoDetachDevice, IoRegisterDeviceInterface at PASSIVE_LEVEL.
    pub const IO_PASSIVE3: Irql = limit(PASSIVE_LEVEL, "IrqlIoPassive3", 0xC4, 0x2000C);
    /// IrqlIoPassive4: IoCreateSymbolicLink, IoDeleteSymbolicLink at PASSIVE_LEVEL.
    pub const IO_PASSIVE4: Irql = limit(PASSIVE_LEVEL, "IrqlIoPassive4", 0xC4, 0x2000D);
    /// IrqlIoPassive5: IoIsWdmVersionAvailable at PASSIVE_LEVEL.
    pub const IO_PASSIVE5: Irql = limit(PASSIVE_LEVEL, "IrqlIoPassive5", 0xC4, 0x2000E);
    /// IrqlIoApcLte: IoDeleteDevice at APC_LEVEL or below.
    pub const IO_APC_LTE: Irql = limit(APC_LEVEL, "IrqlIoApcLte", 0xC4, 0x20009);
    /// IrqlKeApcLte1: KeDelayExecutionThread at APC_LEVEL or below.
    pub const KE_APC_LTE1: Irql = limit(APC_LEVEL, "IrqlKeApcLte1", 0xC4, 0x2000F);
    /// IrqlKeDispatchLte: event, timer, mutex and semaphore routines at DISPATCH_LEVEL or below.
    pub const KE_DISPATCH_LTE: Irql = limit(DISPATCH_LEVEL, "IrqlKeDispatchLte", 0xC4, 0x20011);
    /// IrqlRtlPassive: RtlDeleteRegistryValue at PASSIVE_LEVEL.
    pub const RTL_PASSIVE: Irql = limit(PASSIVE_LEVEL, "IrqlRtlPassive", 0xC4, 0x2001E);
    /// KeAcquireSpinLock above DISPATCH_LEVEL (0xC4 / 0x42).
    pub const SPIN_LOCK_ACQUIRE: Irql = limit(DISPATCH_LEVEL, "KeAcquireSpinLock", 0xC4, 0x42);
    /// IoCallDriver above DISPATCH_LEVEL (0xC9 / 0x10).
    pub const CALL_DRIVER: Irql = limit(DISPATCH_LEVEL, "IoCallDriver", 0xC9, 0x10);
    /// IoCompleteRequest above DISPATCH_LEVEL (0xC9 / 0x0E).
    pub const COMPLETE_REQUEST: Irql = limit(DISPATCH_LEVEL, "IoCompleteRequest", 0xC9, 0x0E);
    /// MmProbeAndLockPages above DISPATCH_LEVEL (0xC4 / 0x70).
    pub const PROBE_AND_LOCK: Irql = limit(DISPATCH_LEVEL, "MmProbeAndLockPages", 0xC4, 0x70);
    /// MmMapIoSpace above DISPATCH_LEVEL (0xC4 / 0x73).
    pub const MAP_IO_SPACE: Irql = limit(DISPATCH_LEVEL, "MmMapIoSpace", 0xC4, 0x73);
    /// MmMapLockedPagesSpecifyCache (kernel mode) above DISPATCH_LEVEL (0xC4 / 0x76).
    pub const MAP_LOCKED_PAGES: Irql =
        limit(DISPATCH_LEVEL, "MmMapLockedPagesSpecifyCache", 0xC4, 0x76);
    /// MmUnlockPages above DISPATCH_LEVEL (0xC4 / 0x78).
    pub const UNLOCK_PAGES: Irql = limit(DISPATCH_LEVEL, "MmUnlockPages", 0xC4, 0x78);
    /// MmUnmapLockedPages (kernel mode) above DISPATCH_LEVEL (0xC4 / 0x79).
    pub const UNMAP_LOCKED_PAGES: Irql = limit(DISPATCH_LEVEL, "MmUnmapLockedPages", 0xC4, 0x79);
    /// MmUnmapIoSpace above APC_LEVEL (0xC4 / 0x7B).
    pub const UNMAP_IO_SPACE: Irql = limit(APC_LEVEL, "MmUnmapIoSpace", 0xC4, 0x7B);
    /// Documented PASSIVE_LEVEL only.
    pub const PASSIVE: Irql = limit(PASSIVE_LEVEL, "documented IRQL", 0xC4, 0xE5);
    /// Documented APC_LEVEL or below.
    pub const APC: Irql = limit(APC_LEVEL, "documented IRQL", 0xC4, 0xE5);
    /// Documented DISPATCH_LEVEL or below.
    pub const DISPATCH: Irql = limit(DISPATCH_LEVEL, "documented IRQL", 0xC4, 0xE5);
}

/// The name of an IRQL.
pub fn irql_name(irql: u8) -> String {
    match irql {
        PASSIVE_LEVEL => "PASSIVE_LEVEL".into(),
        APC_LEVEL => "APC_LEVEL".into(),
        DISPATCH_LEVEL => "DISPATCH_LEVEL".into(),
        crate::ke::HIGH_LEVEL => "IRQL 15 (HIGH_LEVEL on x64)".into(),
        31 => "IRQL 31 (HIGH_LEVEL on x86)".into(),
        n => format!("IRQL {n}"),
    }
}

/// Checks the IRQL rule of `export` for a call with `args` (the verifier is on): a call above
/// its limit ends the call path (rule [`Rule::Irql`]).
pub(crate) fn check_irql(k: &mut Kernel, export: &Export, args: &[u64]) -> KResult<()> {
    let limit = match export.irql {
        Irql::Any => return Ok(()),
        Irql::Max(limit) => limit,
        Irql::By(f) => match f(k, args)? {
            Some(limit) => limit,
            None => return Ok(()),
        },
    };
    let irql = current_irql(k);
    if irql <= limit.max {
        return Ok(());
    }
    Err(stop(
        k,
        Rule::Irql,
        limit.check,
        format!(
            "{} called at {}; it may be called at {} or below ({})",
            export.name,
            irql_name(irql),
            irql_name(limit.max),
            limit.source
        ),
    ))
}

// ---------------------------------------------------------------------------------------------
// Spin locks

/// Records that the current call acquired the spin lock at `lock`.
pub(crate) fn lock_acquired(k: &mut Kernel, lock: u64) {
    if k.verifier.enabled {
        let held = HeldLock {
            site: k.call_site(),
            depth: k.guest_depth(),
        };
        k.verifier.locks.insert(lock, held);
    }
}

/// Records that the spin lock at `lock` was released.
pub(crate) fn lock_released(k: &mut Kernel, lock: u64) {
    k.verifier.locks.remove(&lock);
}

/// Forgets the spin locks taken at host -> guest call depth `depth` or deeper: that call path
/// ended in an error, and what it held is no longer the verifier's concern (the lock words stay as
/// the guest left them).
pub(crate) fn abandon_locks(k: &mut Kernel, depth: usize) {
    k.verifier.locks.retain(|_, held| held.depth < depth);
}

/// ` (acquired at SITE)` for a held lock the verifier saw taken, else nothing.
pub(crate) fn lock_holder(k: &Kernel, lock: u64) -> String {
    match k.verifier.locks.get(&lock).and_then(|h| h.site.as_ref()) {
        Some(site) => format!(" (acquired at {site})"),
        None => String::new(),
    }
}

/// The SpinLock DDI compliance rule: locks are released before the IRQL drops and before the
/// routine that took them ends.
const SPIN_LOCK_RULE: StopCode = StopCode::sub(0xC4, 0x40009);

/// Before the IRQL drops to `new`: below DISPATCH_LEVEL no spin lock may be held.
pub(crate) fn check_lower_irql(k: &mut Kernel, new: u8) -> KResult<()> {
    if !k.verifier.enabled || new >= DISPATCH_LEVEL {
        return Ok(());
    }
    let Some((&lock, _)) = k.verifier.locks.iter().next() else {
        return Ok(());
    };
    let holder = lock_holder(k, lock);
    Err(stop(
        k,
        Rule::SpinLockHeld,
        SPIN_LOCK_RULE,
        format!(
            "IRQL lowered to {} while spin lock {lock:#x} is held{holder}",
            irql_name(new)
        ),
    ))
}

/// After the driver routine at `routine`, called at host -> guest depth `depth`, returned: a
/// spin lock it acquired and did not release is a finding (the verifier is on).
pub(crate) fn check_locks_on_return(k: &mut Kernel, routine: u64, depth: usize) -> KResult<()> {
    let Some((&lock, held)) = k.verifier.locks.iter().find(|(_, h)| h.depth == depth) else {
        return Ok(());
    };
    let taken = held
        .site
        .as_ref()
        .map(|s| format!(", acquired at {s}"))
        .unwrap_or_default();
    let site = k.site(routine);
    k.verifier.locks.remove(&lock);
    Err(stop_at(
        k,
        Rule::SpinLockHeld,
        SPIN_LOCK_RULE,
        Some(site.clone()),
        format!("{site} returned holding spin lock {lock:#x}{taken}"),
    ))
}

#[cfg(test)]
mod tests {
    use dbt::Arch;

    use super::*;
    use crate::crt::test_support::Guest;
    use crate::ke::set_irql;
    use crate::MODULE;

    fn irql_check(g: &mut Guest, name: &str, args: &[u64]) -> Option<StopCode> {
        let export = MODULE.find(name).expect("exported");
        let err = check_irql(&mut g.k, export, args).err()?;
        err.finding().and_then(|f| f.bug_check)
    }

    #[test]
    fn irql_limits_come_from_the_export_tables_and_their_arguments() {
        for arch in [Arch::X86, Arch::X64] {
            let mut g = Guest::new(arch);
            g.k.verifier.set_enabled(true);
            let zero = g.bytes(&0u64.to_le_bytes());
            let ten_ms = g.bytes(&(-100_000i64).to_le_bytes());
            set_irql(&mut g.k, DISPATCH_LEVEL).unwrap();
            let wait = |t| [0, 0, 0, 0, t];
            assert_eq!(
                irql_check(&mut g, "KeWaitForSingleObject", &wait(zero)),
                None
            );
            let sub = |s: Option<StopCode>| s.map(|s| (s.code, s.parameters[0]));
            assert_eq!(
                sub(irql_check(&mut g, "KeWaitForSingleObject", &wait(ten_ms))),
                Some((0xC4, 0x122))
            );
            assert_eq!(
                sub(irql_check(&mut g, "KeWaitForSingleObject", &wait(0))),
                Some((0xC4, 0x121))
            );
            assert_eq!(
                sub(irql_check(&mut g, "ZwClose", &[4])),
                Some((0xC4, 0x2001F))
            );
            assert_eq!(
                irql_check(&mut g, "ExAllocatePoolWithTag", &[0, 16, 0]),
                None
            );
            assert_eq!(
                sub(irql_check(&mut g, "ExAllocatePoolWithTag", &[1, 16, 0])),
                Some((0xC4, 0x01))
            );
            assert_eq!(irql_check(&mut g, "KeSetEvent", &[0, 0, 0]), None);
            assert_eq!(
                sub(irql_check(&mut g, "KeSetEvent", &[0, 0, 1])),
                Some((0xC4, 0x20016))
            );
            set_irql(&mut g.k, PASSIVE_LEVEL).unwrap();
            assert_eq!(irql_check(&mut g, "ZwClose", &[4]), None);
            let found = g.k.verifier.take_findings();
            assert_eq!(found.len(), 5);
            assert!(found.iter().all(|f| f.rule == Rule::Irql && f.fatal));
            assert!(found[0]
                .detail
                .contains("KeWaitForSingleObject called at DISPATCH_LEVEL"));
        }
    }

    #[test]
    fn with_the_verifier_off_a_stop_is_the_plain_bug_check_and_nothing_is_noted() {
        let mut g = Guest::new(Arch::X64);
        let err = stop(
            &mut g.k,
            Rule::SpinLockNotOwned,
            StopCode::sub(0x10, 1),
            "x",
        );
        assert!(matches!(
            err,
            KernelError::BugCheck {
                code: 0x10,
                finding: None,
                ..
            }
        ));
        note(&mut g.k, Rule::PoolLeak, "a.sys", None, None, "y");
        assert!(g.k.verifier.findings().is_empty());
        g.k.verifier.set_enabled(true);
        let err = stop(
            &mut g.k,
            Rule::SpinLockNotOwned,
            StopCode::sub(0x10, 1),
            "x",
        );
        assert_eq!(err.finding().map(|f| f.rule), Some(Rule::SpinLockNotOwned));
        note(&mut g.k, Rule::PoolLeak, "a.sys", None, None, "y");
        let found = g.k.verifier.take_findings();
        assert_eq!(
            found.iter().map(|f| (f.rule, f.fatal)).collect::<Vec<_>>(),
            [(Rule::SpinLockNotOwned, true), (Rule::PoolLeak, false)]
        );
    }

    #[test]
    fn a_strict_verifier_fails_when_dropped_with_findings_nobody_took() {
        let dropped = std::panic::catch_unwind(|| {
            let mut g = Guest::new(Arch::X64);
            g.k.verifier.set_enabled(true);
            g.k.verifier.set_strict(true);
            note(&mut g.k, Rule::IrpLeak, "a.sys", None, None, "irp#1");
        });
        let message = dropped.expect_err("panics");
        let text = message
            .downcast_ref::<String>()
            .cloned()
            .unwrap_or_default();
        assert!(text.contains("irp-leak by a.sys: irp#1"), "{text}");
        let mut g = Guest::new(Arch::X64);
        g.k.verifier.set_enabled(true);
        g.k.verifier.set_strict(true);
        note(&mut g.k, Rule::IrpLeak, "a.sys", None, None, "irp#1");
        assert_eq!(g.k.verifier.take_findings().len(), 1);
    }
}
