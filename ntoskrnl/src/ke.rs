//! Kernel core: IRQL, spinlocks, dispatcher objects (events, mutexes, semaphores) and waits, fast
//! mutexes, DPCs (importance, target processor), the processor numbering, floating-point state
//! saves, and the clocks drivers read (`KeTickCount`, an exported variable on x86, among them).
//! Timers (KTIMER and EX_TIMER) live in [`crate::timer`], work items in [`crate::workitem`].
//!
//! There is one processor and one kernel thread. A wait that is not yet satisfied runs the deferred
//! work that could satisfy it ([`run_deferred`]: queued DPCs, due timers, queued work items), then
//! sleeps until the earliest armed timer or the wait's timeout, whichever comes first, and looks
//! again; an infinite wait with nothing left to run and no timer armed is reported as a deadlock
//! instead of hanging the host ([`block_until`]).

use std::collections::VecDeque;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use dbt::{Arch, Prot};

use crate::export::{DataExport, Export, Irql, Quad};
use crate::status::{STATUS_INVALID_PARAMETER, STATUS_SUCCESS, STATUS_TIMEOUT};
use crate::timer::{self, Timers};
use crate::verifier::{self, irql, IrqlLimit, Rule, StopCode};
use crate::workitem::{self, WorkQueue};
use crate::{export_table, KResult, Kernel, KernelError};

/// IRQL levels.
pub const PASSIVE_LEVEL: u8 = 0;
/// APC_LEVEL.
pub const APC_LEVEL: u8 = 1;
/// DISPATCH_LEVEL: spinlocks held, DPCs running.
pub const DISPATCH_LEVEL: u8 = 2;
/// HIGH_LEVEL.
pub const HIGH_LEVEL: u8 = 15;

/// Dispatcher object types (DISPATCHER_HEADER.Type).
const EVENT_NOTIFICATION: u8 = 0;
const EVENT_SYNCHRONIZATION: u8 = 1;
const MUTANT: u8 = 2;
const SEMAPHORE: u8 = 5;
/// TimerNotificationObject: stays signaled until set again.
pub(crate) const TIMER_NOTIFICATION: u8 = 8;
/// TimerSynchronizationObject: a satisfied wait resets it.
pub(crate) const TIMER_SYNCHRONIZATION: u8 = 9;

/// KDPC.Type of KeInitializeDpc (DpcObject) and KeInitializeThreadedDpc (ThreadedDpcObject).
pub(crate) const DPC_OBJECT: u8 = 0x13;
pub(crate) const THREADED_DPC_OBJECT: u8 = 0x18;

/// Offset of KUSER_SHARED_DATA.TickCount, a KSYSTEM_TIME (LowPart, High1Time, High2Time).
const SHARED_TICK_COUNT: u64 = 0x320;
/// The clock tick in 100 ns units (15.625 ms, the default Windows timer resolution).
const TIME_INCREMENT: u64 = 156_250;

/// Performance counter frequency reported to drivers (10 MHz, as modern Windows).
pub const PERFORMANCE_FREQUENCY: u64 = 10_000_000;
/// Seconds between 1601-01-01 (Windows epoch) and 1970-01-01.
const EPOCH_DIFFERENCE_SECS: u64 = 11_644_473_600;
/// Where KUSER_SHARED_DATA lives (x64 drivers read the clocks from it inline).
const SHARED_USER_DATA_X64: u64 = 0xFFFF_F780_0000_0000;
const SHARED_USER_DATA_X86: u64 = 0xFFDF_0000;

/// Dispatcher state: deferred procedure calls waiting to run, armed timers, queued work items, the
/// boot clock.
#[derive(Debug)]
pub struct Dispatcher {
    boot: Instant,
    dpcs: VecDeque<u64>,
    shared_user_data: Option<u64>,
    /// Armed kernel timers.
    pub timers: Timers,
    /// Queued work items and the IO_WORKITEMs drivers own.
    pub work: WorkQueue,
    /// Floating-point states saved by KeSaveFloatingPointState and not yet restored, innermost last.
    float_saves: Vec<FloatSave>,
}

/// One KeSaveFloatingPointState not yet matched by KeRestoreFloatingPointState.
#[derive(Debug, Clone)]
struct FloatSave {
    /// The driver's KFLOATING_SAVE.
    area: u64,
    /// The IRQL it was saved at (the restore must be at the same IRQL).
    irql: u8,
    /// Host -> guest call depth it was saved at (the routine must restore it before returning).
    depth: usize,
    /// The SSE registers, the floating-point state the translator models.
    xmm: [u128; 16],
}

impl Dispatcher {
    /// A dispatcher booted now.
    pub fn new() -> Self {
        Dispatcher {
            boot: Instant::now(),
            dpcs: VecDeque::new(),
            shared_user_data: None,
            timers: Timers::default(),
            work: WorkQueue::default(),
            float_saves: Vec::new(),
        }
    }

    /// DPCs queued and not yet run.
    pub fn queued_dpcs(&self) -> usize {
        self.dpcs.len()
    }

    /// 100 ns units since boot.
    pub fn interrupt_time(&self) -> u64 {
        (self.boot.elapsed().as_nanos() / 100) as u64
    }
}

impl Default for Dispatcher {
    fn default() -> Self {
        Self::new()
    }
}

/// Maps KUSER_SHARED_DATA at its architectural address when the guest window holds it.
pub(crate) fn init(k: &mut Kernel) -> KResult<()> {
    let addr = match k.arch() {
        Arch::X86 => SHARED_USER_DATA_X86,
        Arch::X64 => SHARED_USER_DATA_X64,
    };
    if k.m.mem.map(addr, 0x1000, Prot::READ).is_ok() {
        k.ke.shared_user_data = Some(addr);
        update_shared_user_data(k)?;
    }
    Ok(())
}

/// Refreshes the clocks in KUSER_SHARED_DATA (InterruptTime, SystemTime, TickCount).
pub fn update_shared_user_data(k: &mut Kernel) -> KResult<()> {
    let Some(base) = k.ke.shared_user_data else {
        return Ok(());
    };
    let interrupt = k.ke.interrupt_time();
    let system = system_time();
    let ticks = interrupt / TIME_INCREMENT;
    for (offset, value) in [
        (0x08, interrupt),
        (0x14, system),
        (SHARED_TICK_COUNT, ticks),
    ] {
        k.m.mem.write_u32(base + offset, value as u32)?;
        k.m.mem.write_u32(base + offset + 4, (value >> 32) as u32)?;
        k.m.mem.write_u32(base + offset + 8, (value >> 32) as u32)?;
    }
    Ok(())
}

/// ntoskrnl.exe's exported variables: `KeTickCount` (x86 only; x64 drivers read KUSER_SHARED_DATA).
pub(crate) static DATA: &[DataExport] = &[DataExport {
    name: "KeTickCount",
    arch: Some(Arch::X86),
    address: tick_count_address,
}];

/// Guest address of `KeTickCount`, the KSYSTEM_TIME that x86 drivers' `KeQueryTickCount` macro
/// reads inline: the TickCount field of KUSER_SHARED_DATA, which [`update_shared_user_data`] keeps
/// current on every import call (entry and return) and host -> guest call. `None` when
/// KUSER_SHARED_DATA is not mapped.
fn tick_count_address(k: &Kernel) -> Option<u64> {
    k.ke.shared_user_data.map(|base| base + SHARED_TICK_COUNT)
}

/// Current system time in 100 ns units since 1601.
pub fn system_time() -> u64 {
    let since_unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    (since_unix.as_nanos() / 100) as u64 + EPOCH_DIFFERENCE_SECS * 10_000_000
}

// ---------------------------------------------------------------------------------------------
// IRQL

/// The current IRQL (cr8 on both architectures).
pub fn current_irql(k: &Kernel) -> u8 {
    k.m.cpu.cr8 as u8
}

/// Sets the IRQL; dropping below DISPATCH_LEVEL runs queued DPCs first, as Windows does.
pub fn set_irql(k: &mut Kernel, irql: u8) -> KResult<()> {
    k.m.cpu.cr8 = irql as u64;
    if irql < DISPATCH_LEVEL && !k.ke.dpcs.is_empty() {
        run_dpcs(k)?;
    }
    Ok(())
}

/// KeGetCurrentIrql.
pub fn get_current_irql(k: &mut Kernel) -> KResult<u8> {
    Ok(current_irql(k))
}

/// KfRaiseIrql(NewIrql) -> old IRQL. Raising to a lower level is a bug check.
pub fn raise_irql(k: &mut Kernel, new: u8) -> KResult<u8> {
    let old = current_irql(k);
    if new < old {
        return Err(KernelError::bug_check(
            0x09,
            format!("KeRaiseIrql to {new} below the current IRQL {old}"),
        ));
    }
    set_irql(k, new)?;
    Ok(old)
}

/// KfLowerIrql(NewIrql). Lowering to a higher level is a bug check; with the verifier, so is
/// dropping below DISPATCH_LEVEL with a spin lock held.
pub fn lower_irql(k: &mut Kernel, new: u8) -> KResult<()> {
    let old = current_irql(k);
    if new > old {
        return Err(KernelError::bug_check(
            0x09,
            format!("KeLowerIrql to {new} above the current IRQL {old}"),
        ));
    }
    verifier::check_lower_irql(k, new)?;
    set_irql(k, new)
}

/// KeRaiseIrqlToDpcLevel -> old IRQL.
pub fn raise_irql_to_dpc_level(k: &mut Kernel) -> KResult<u8> {
    raise_irql(k, DISPATCH_LEVEL)
}

// ---------------------------------------------------------------------------------------------
// Spinlocks (one processor: a held lock that is acquired again can never be released)

const SPINLOCK_HELD: u64 = 1;

/// KeInitializeSpinLock.
pub fn initialize_spin_lock(k: &mut Kernel, lock: u64) -> KResult<()> {
    k.write_ptr(lock, 0)
}

fn take_lock(k: &mut Kernel, lock: u64) -> KResult<()> {
    if k.read_ptr(lock)? & SPINLOCK_HELD != 0 {
        let holder = verifier::lock_holder(k, lock);
        return Err(verifier::stop(
            k,
            Rule::SpinLockAlreadyOwned,
            StopCode::sub(0x0F, lock),
            format!(
                "spinlock {lock:#x} acquired again while held{holder} (deadlock on this processor)"
            ),
        ));
    }
    k.write_ptr(lock, SPINLOCK_HELD)?;
    verifier::lock_acquired(k, lock);
    Ok(())
}

fn drop_lock(k: &mut Kernel, lock: u64) -> KResult<()> {
    if k.read_ptr(lock)? & SPINLOCK_HELD == 0 {
        return Err(verifier::stop(
            k,
            Rule::SpinLockNotOwned,
            StopCode::sub(0x10, lock),
            format!("spinlock {lock:#x} released but not held"),
        ));
    }
    k.write_ptr(lock, 0)?;
    verifier::lock_released(k, lock);
    Ok(())
}

/// A spin-lock routine called at the wrong IRQL (0xC4 with `param1`, the verifier's code for it).
fn lock_irql(k: &mut Kernel, lock: u64, param1: u64, detail: String) -> KernelError {
    let irql = u64::from(current_irql(k));
    verifier::stop(
        k,
        Rule::SpinLockIrql,
        StopCode::new(0xC4, [param1, irql, lock, 0]),
        detail,
    )
}

/// KfAcquireSpinLock / KeAcquireSpinLockRaiseToDpc -> old IRQL.
pub fn acquire_spin_lock(k: &mut Kernel, lock: u64) -> KResult<u8> {
    let old = raise_irql(k, DISPATCH_LEVEL)?;
    take_lock(k, lock)?;
    Ok(old)
}

/// KfReleaseSpinLock / KeReleaseSpinLock(SpinLock, NewIrql). With the verifier, releasing at an
/// IRQL other than DISPATCH_LEVEL is 0xC4 / 0x32.
pub fn release_spin_lock(k: &mut Kernel, lock: u64, new_irql: u8) -> KResult<()> {
    let irql = current_irql(k);
    if k.verifier.enabled() && irql != DISPATCH_LEVEL {
        let detail = format!(
            "KeReleaseSpinLock of {lock:#x} at {} (must be DISPATCH_LEVEL)",
            verifier::irql_name(irql)
        );
        return Err(lock_irql(k, lock, 0x32, detail));
    }
    drop_lock(k, lock)?;
    lower_irql(k, new_irql)
}

/// KeAcquireSpinLockAtDpcLevel: the caller is already at DISPATCH_LEVEL (else 0xC4 / 0x40).
pub fn acquire_spin_lock_at_dpc_level(k: &mut Kernel, lock: u64) -> KResult<()> {
    let irql = current_irql(k);
    if irql < DISPATCH_LEVEL {
        let detail = format!("KeAcquireSpinLockAtDpcLevel at IRQL {irql} (must be DISPATCH_LEVEL)");
        return Err(lock_irql(k, lock, 0x40, detail));
    }
    take_lock(k, lock)
}

/// KeTryToAcquireSpinLockAtDpcLevel (fastcall) -> TRUE if it took the lock, FALSE if the lock is
/// held (on this one processor, by the caller itself). Below DISPATCH_LEVEL it is 0xC4 / 0x40, as
/// for KeAcquireSpinLockAtDpcLevel.
pub fn try_to_acquire_spin_lock_at_dpc_level(k: &mut Kernel, lock: u64) -> KResult<bool> {
    let irql = current_irql(k);
    if irql < DISPATCH_LEVEL {
        let detail =
            format!("KeTryToAcquireSpinLockAtDpcLevel at IRQL {irql} (must be DISPATCH_LEVEL)");
        return Err(lock_irql(k, lock, 0x40, detail));
    }
    if k.read_ptr(lock)? & SPINLOCK_HELD != 0 {
        return Ok(false);
    }
    take_lock(k, lock)?;
    Ok(true)
}

/// KeReleaseSpinLockFromDpcLevel. With the verifier, below DISPATCH_LEVEL is 0xC4 / 0x41.
pub fn release_spin_lock_from_dpc_level(k: &mut Kernel, lock: u64) -> KResult<()> {
    let irql = current_irql(k);
    if k.verifier.enabled() && irql < DISPATCH_LEVEL {
        let detail =
            format!("KeReleaseSpinLockFromDpcLevel at IRQL {irql} (must be DISPATCH_LEVEL)");
        return Err(lock_irql(k, lock, 0x41, detail));
    }
    drop_lock(k, lock)
}

// ---------------------------------------------------------------------------------------------
// Dispatcher objects

pub(crate) fn header_type(k: &Kernel, obj: u64) -> KResult<u8> {
    Ok(k.m.mem.read_u8(obj + k.layout.dispatcher_header_type)?)
}

pub(crate) fn signal_state(k: &Kernel, obj: u64) -> KResult<i32> {
    Ok(k.m
        .mem
        .read_u32(obj + k.layout.dispatcher_header_signal_state)? as i32)
}

pub(crate) fn set_signal_state(k: &mut Kernel, obj: u64, state: i32) -> KResult<()> {
    Ok(k.m
        .mem
        .write_u32(obj + k.layout.dispatcher_header_signal_state, state as u32)?)
}

pub(crate) fn init_header(
    k: &mut Kernel,
    obj: u64,
    kind: u8,
    size: u64,
    state: i32,
) -> KResult<()> {
    let l = k.layout;
    k.m.mem.write_u8(obj + l.dispatcher_header_type, kind)?;
    // Size is in 32-bit units, at offset 2 of the header.
    k.m.mem.write_u8(obj + 2, (size / 4) as u8)?;
    set_signal_state(k, obj, state)?;
    let list = obj + l.dispatcher_header_wait_list_head;
    k.write_ptr(list, list)?;
    let ptr = k.ptr_size();
    k.write_ptr(list + ptr, list)
}

/// KeInitializeEvent(Event, Type, State).
pub fn initialize_event(k: &mut Kernel, event: u64, kind: u32, state: bool) -> KResult<()> {
    let kind = if kind == 0 {
        EVENT_NOTIFICATION
    } else {
        EVENT_SYNCHRONIZATION
    };
    init_header(k, event, kind, k.layout.kevent_size, state as i32)
}

/// KeSetEvent(Event, Increment, Wait) -> previous state.
pub fn set_event(k: &mut Kernel, event: u64, _increment: i32, _wait: bool) -> KResult<i32> {
    let previous = signal_state(k, event)?;
    set_signal_state(k, event, 1)?;
    Ok(previous)
}

/// KeResetEvent(Event) -> previous state.
pub fn reset_event(k: &mut Kernel, event: u64) -> KResult<i32> {
    let previous = signal_state(k, event)?;
    set_signal_state(k, event, 0)?;
    Ok(previous)
}

/// KeClearEvent(Event).
pub fn clear_event(k: &mut Kernel, event: u64) -> KResult<()> {
    set_signal_state(k, event, 0)
}

/// KeReadStateEvent(Event).
pub fn read_state_event(k: &mut Kernel, event: u64) -> KResult<i32> {
    signal_state(k, event)
}

/// KeInitializeMutex(Mutex, Level).
pub fn initialize_mutex(k: &mut Kernel, mutex: u64, _level: u32) -> KResult<()> {
    init_header(k, mutex, MUTANT, k.layout.kmutex_size, 1)?;
    k.write_ptr(mutex + k.layout.kmutex_owner_thread, 0)
}

/// KeReleaseMutex(Mutex, Wait) -> previous signal state.
pub fn release_mutex(k: &mut Kernel, mutex: u64, _wait: bool) -> KResult<i32> {
    let previous = signal_state(k, mutex)?;
    if previous >= 1 {
        return Err(KernelError::bug_check(
            0x0,
            format!("KeReleaseMutex of {mutex:#x}, which is not held"),
        ));
    }
    set_signal_state(k, mutex, previous + 1)?;
    if previous + 1 == 1 {
        k.write_ptr(mutex + k.layout.kmutex_owner_thread, 0)?;
    }
    Ok(previous)
}

/// KeReadStateMutex.
pub fn read_state_mutex(k: &mut Kernel, mutex: u64) -> KResult<i32> {
    signal_state(k, mutex)
}

/// FAST_MUTEX.Count bit that is set while the mutex is free (FM_LOCK_BIT; ExInitializeFastMutex,
/// an inline function, stores it).
const FM_LOCK_BIT: u32 = 1;

/// Offsets of FAST_MUTEX.Owner and FAST_MUTEX.OldIrql (Count, Owner, Contention, KEVENT Event,
/// OldIrql).
fn fast_mutex_fields(k: &Kernel) -> (u64, u64) {
    match k.arch() {
        Arch::X86 => (4, 28),
        Arch::X64 => (8, 48),
    }
}

/// Takes a free fast mutex for the current thread: clears FM_LOCK_BIT, records the owner and the
/// IRQL to return to, raises to APC_LEVEL. `false` (nothing changed) if it is held.
fn take_fast_mutex(k: &mut Kernel, mutex: u64) -> KResult<bool> {
    let count = k.m.mem.read_u32(mutex)?;
    if count & FM_LOCK_BIT == 0 {
        return Ok(false);
    }
    let (owner, old_irql) = fast_mutex_fields(k);
    let old = raise_irql(k, APC_LEVEL)?;
    k.m.mem.write_u32(mutex, count & !FM_LOCK_BIT)?;
    let thread = k.ps.thread;
    k.write_ptr(mutex + owner, thread)?;
    k.m.mem.write_u32(mutex + old_irql, old as u32)?;
    Ok(true)
}

/// ExAcquireFastMutex(FastMutex): at APC_LEVEL or below; returns at APC_LEVEL owning the mutex.
/// There is one thread, so a mutex that is already held (by it) can never be acquired: a deadlock.
pub fn acquire_fast_mutex(k: &mut Kernel, mutex: u64) -> KResult<()> {
    if take_fast_mutex(k, mutex)? {
        return Ok(());
    }
    let owner = k.read_ptr(mutex + fast_mutex_fields(k).0)?;
    Err(KernelError::Deadlock(format!(
        "ExAcquireFastMutex({mutex:#x}) on a fast mutex already held by thread {owner:#x} (fast mutexes are not recursive)"
    )))
}

/// ExTryToAcquireFastMutex(FastMutex) -> TRUE if it was free and is now owned (at APC_LEVEL).
pub fn try_to_acquire_fast_mutex(k: &mut Kernel, mutex: u64) -> KResult<bool> {
    take_fast_mutex(k, mutex)
}

/// ExReleaseFastMutex(FastMutex): frees it and returns to the IRQL it was acquired at. Releasing a
/// fast mutex that is not held, or above APC_LEVEL, is a driver bug (bug check 0xC4 as Driver
/// Verifier reports it).
pub fn release_fast_mutex(k: &mut Kernel, mutex: u64) -> KResult<()> {
    let count = k.m.mem.read_u32(mutex)?;
    if count & FM_LOCK_BIT != 0 {
        return Err(KernelError::bug_check(
            0xC4,
            format!("ExReleaseFastMutex({mutex:#x}) on a fast mutex that is not held"),
        ));
    }
    let (owner, old_irql) = fast_mutex_fields(k);
    let old = k.m.mem.read_u32(mutex + old_irql)? as u8;
    k.write_ptr(mutex + owner, 0)?;
    k.m.mem.write_u32(mutex, count | FM_LOCK_BIT)?;
    lower_irql(k, old)
}

/// KeInitializeSemaphore(Semaphore, Count, Limit).
pub fn initialize_semaphore(k: &mut Kernel, sem: u64, count: i32, limit: i32) -> KResult<()> {
    init_header(k, sem, SEMAPHORE, k.layout.ksemaphore_size, count)?;
    Ok(k.m
        .mem
        .write_u32(sem + k.layout.ksemaphore_limit, limit as u32)?)
}

/// KeReleaseSemaphore(Semaphore, Increment, Adjustment, Wait) -> previous count.
pub fn release_semaphore(
    k: &mut Kernel,
    sem: u64,
    _increment: i32,
    adjustment: i32,
    _wait: bool,
) -> KResult<i32> {
    let previous = signal_state(k, sem)?;
    let limit = k.m.mem.read_u32(sem + k.layout.ksemaphore_limit)? as i32;
    let next = previous.saturating_add(adjustment);
    if adjustment < 0 || next > limit {
        return Err(KernelError::bug_check(
            0x0,
            format!("KeReleaseSemaphore of {sem:#x} by {adjustment} exceeds its limit {limit} (STATUS_SEMAPHORE_LIMIT_EXCEEDED)"),
        ));
    }
    set_signal_state(k, sem, next)?;
    Ok(previous)
}

/// KeReadStateSemaphore.
pub fn read_state_semaphore(k: &mut Kernel, sem: u64) -> KResult<i32> {
    signal_state(k, sem)
}

/// If `obj` is signaled, satisfies the wait (consuming the signal where the type says so).
fn try_satisfy(k: &mut Kernel, obj: u64) -> KResult<bool> {
    let kind = header_type(k, obj)?;
    let state = signal_state(k, obj)?;
    match kind {
        EVENT_NOTIFICATION | TIMER_NOTIFICATION => Ok(state > 0),
        EVENT_SYNCHRONIZATION | TIMER_SYNCHRONIZATION | SEMAPHORE => {
            if state > 0 {
                set_signal_state(k, obj, state - 1)?;
            }
            Ok(state > 0)
        }
        MUTANT => {
            // One thread: the owner may always re-acquire.
            set_signal_state(k, obj, state - 1)?;
            let thread = k.ps.thread;
            k.write_ptr(obj + k.layout.kmutex_owner_thread, thread)?;
            Ok(true)
        }
        other => Err(KernelError::Unsupported(format!(
            "wait on dispatcher object {obj:#x} of unsupported type {other}"
        ))),
    }
}

/// Whether a wait on `obj` would be satisfied now, without satisfying it.
fn is_signaled(k: &Kernel, obj: u64) -> KResult<bool> {
    match header_type(k, obj)? {
        // One thread: the owner may always re-acquire.
        MUTANT => Ok(true),
        EVENT_NOTIFICATION
        | TIMER_NOTIFICATION
        | EVENT_SYNCHRONIZATION
        | TIMER_SYNCHRONIZATION
        | SEMAPHORE => Ok(signal_state(k, obj)? > 0),
        other => Err(KernelError::Unsupported(format!(
            "wait on dispatcher object {obj:#x} of unsupported type {other}"
        ))),
    }
}

/// A timeout as given to Ke waits: `None` = infinite.
fn read_timeout(k: &Kernel, timeout: u64) -> KResult<Option<Duration>> {
    if timeout == 0 {
        return Ok(None);
    }
    let lo = k.m.mem.read_u32(timeout)? as u64;
    let hi = k.m.mem.read_u32(timeout + 4)? as u64;
    let value = (lo | (hi << 32)) as i64;
    let hundreds = if value < 0 {
        value.unsigned_abs()
    } else {
        (value as u64).saturating_sub(system_time())
    };
    Ok(Some(Duration::from_nanos(hundreds.saturating_mul(100))))
}

/// KeWaitForSingleObject(Object, WaitReason, WaitMode, Alertable, Timeout). At DISPATCH_LEVEL
/// or above a wait that would block is bug check 0x0A (the verifier stops any wait with a non-zero
/// timeout there before the call, by its IRQL rule).
pub fn wait_for_single_object(
    k: &mut Kernel,
    object: u64,
    _reason: u32,
    _mode: u8,
    _alertable: bool,
    timeout: u64,
) -> KResult<u32> {
    let limit = read_timeout(k, timeout)?;
    let irql = current_irql(k);
    if irql >= DISPATCH_LEVEL && limit != Some(Duration::ZERO) {
        if try_satisfy(k, object)? {
            return Ok(STATUS_SUCCESS);
        }
        return Err(KernelError::bug_check(
            0x0A,
            format!("KeWaitForSingleObject at IRQL {irql} with a non-zero timeout would block (waits need IRQL < DISPATCH_LEVEL)"),
        ));
    }
    let deadline = limit.map(|d| Instant::now() + d);
    let satisfied = block_until(k, deadline, &mut |k| try_satisfy(k, object), &|| {
        format!("KeWaitForSingleObject({object:#x}) without timeout")
    })?;
    Ok(if satisfied {
        STATUS_SUCCESS
    } else {
        STATUS_TIMEOUT
    })
}

/// WAIT_TYPE WaitAll.
const WAIT_ALL: u32 = 0;
/// WAIT_TYPE WaitAny.
const WAIT_ANY: u32 = 1;
/// THREAD_WAIT_OBJECTS: objects a wait may name without a WaitBlockArray.
const THREAD_WAIT_OBJECTS: u32 = 3;
/// MAXIMUM_WAIT_OBJECTS.
const MAXIMUM_WAIT_OBJECTS: u32 = 64;
/// STATUS_WAIT_0 (STATUS_SUCCESS): WaitAny returns it plus the index of the object that satisfied it.
const STATUS_WAIT_0: u32 = 0;

/// Satisfies a KeWaitForMultipleObjects wait if it can be now: the index of the object for
/// WaitAny (the first signaled one, in array order), 0 for WaitAll (all signaled: all satisfied).
fn try_satisfy_multiple(k: &mut Kernel, objects: &[u64], wait_all: bool) -> KResult<Option<u32>> {
    if wait_all {
        for &obj in objects {
            if !is_signaled(k, obj)? {
                return Ok(None);
            }
        }
        for &obj in objects {
            try_satisfy(k, obj)?;
        }
        return Ok(Some(0));
    }
    for (i, &obj) in objects.iter().enumerate() {
        if try_satisfy(k, obj)? {
            return Ok(Some(i as u32));
        }
    }
    Ok(None)
}

/// KeWaitForMultipleObjects(Count, Object, WaitType, WaitReason, WaitMode, Alertable, Timeout,
/// WaitBlockArray) -> STATUS_WAIT_0 + index of the satisfying object (WaitAny), STATUS_SUCCESS
/// (WaitAll) or STATUS_TIMEOUT. More than MAXIMUM_WAIT_OBJECTS objects, or more than
/// THREAD_WAIT_OBJECTS without a WaitBlockArray, is bug check 0x0C; the IRQL rules are
/// KeWaitForSingleObject's.
#[allow(clippy::too_many_arguments)]
pub fn wait_for_multiple_objects(
    k: &mut Kernel,
    count: u32,
    object: u64,
    wait_type: u32,
    _reason: u32,
    _mode: u8,
    _alertable: bool,
    timeout: u64,
    wait_block_array: u64,
) -> KResult<u32> {
    if count > MAXIMUM_WAIT_OBJECTS || (count > THREAD_WAIT_OBJECTS && wait_block_array == 0) {
        return Err(KernelError::bug_check(
            0x0C,
            format!("KeWaitForMultipleObjects on {count} objects (MAXIMUM_WAIT_OBJECTS_EXCEEDED: at most {THREAD_WAIT_OBJECTS} without a WaitBlockArray, {MAXIMUM_WAIT_OBJECTS} with one)"),
        ));
    }
    let wait_all = match wait_type {
        WAIT_ALL => true,
        WAIT_ANY => false,
        other => {
            return Err(KernelError::bug_check(
                0x05,
                format!(
                    "KeWaitForMultipleObjects with WaitType {other} (neither WaitAll nor WaitAny)"
                ),
            ))
        }
    };
    let objects = (0..u64::from(count))
        .map(|i| k.read_ptr(object + i * k.ptr_size()))
        .collect::<KResult<Vec<u64>>>()?;
    let limit = read_timeout(k, timeout)?;
    let irql = current_irql(k);
    let mut found = None;
    if irql >= DISPATCH_LEVEL && limit != Some(Duration::ZERO) {
        if let Some(i) = try_satisfy_multiple(k, &objects, wait_all)? {
            return Ok(STATUS_WAIT_0 + i);
        }
        return Err(KernelError::bug_check(
            0x0A,
            format!("KeWaitForMultipleObjects at IRQL {irql} with a non-zero timeout would block (waits need IRQL < DISPATCH_LEVEL)"),
        ));
    }
    let deadline = limit.map(|d| Instant::now() + d);
    let mut ready = |k: &mut Kernel| {
        found = try_satisfy_multiple(k, &objects, wait_all)?;
        Ok(found.is_some())
    };
    block_until(k, deadline, &mut ready, &|| {
        format!(
            "KeWaitForMultipleObjects({} of {objects:x?}) without timeout",
            if wait_all { "all" } else { "any" }
        )
    })?;
    Ok(found.map_or(STATUS_TIMEOUT, |i| STATUS_WAIT_0 + i))
}

/// IRQL rule of the Ke waits (Timeout is the fifth argument): above DISPATCH_LEVEL never
/// (0xC4 / 0x120); at DISPATCH_LEVEL only with a zero timeout (0xC4 / 0x121 without a timeout,
/// 0x122 with a non-zero one).
fn wait_irql(k: &Kernel, args: &[u64]) -> KResult<Option<IrqlLimit>> {
    wait_irql_with_timeout(k, args.get(4).copied().unwrap_or(0))
}

/// KeWaitForMultipleObjects' IRQL rule: [`wait_irql`]'s, with Timeout the seventh argument.
fn wait_multiple_irql(k: &Kernel, args: &[u64]) -> KResult<Option<IrqlLimit>> {
    wait_irql_with_timeout(k, args.get(6).copied().unwrap_or(0))
}

fn wait_irql_with_timeout(k: &Kernel, timeout: u64) -> KResult<Option<IrqlLimit>> {
    let (max, param1) = if current_irql(k) > DISPATCH_LEVEL {
        (DISPATCH_LEVEL, 0x120)
    } else if timeout == 0 {
        (APC_LEVEL, 0x121)
    } else if read_timeout(k, timeout)? != Some(Duration::ZERO) {
        (APC_LEVEL, 0x122)
    } else {
        (DISPATCH_LEVEL, 0x120)
    };
    Ok(Some(IrqlLimit {
        max,
        source: "KeWaitForSingleObject",
        check: StopCode::sub(0xC4, param1),
    }))
}

/// IRQL rule of KeSetEvent (IrqlKeSetEvent): DISPATCH_LEVEL or below, APC_LEVEL or below when Wait
/// (the third argument) is TRUE.
fn set_event_irql(_k: &Kernel, args: &[u64]) -> KResult<Option<IrqlLimit>> {
    let wait = args.get(2).copied().unwrap_or(0) as u8 != 0;
    Ok(Some(IrqlLimit {
        max: if wait { APC_LEVEL } else { DISPATCH_LEVEL },
        source: "IrqlKeSetEvent",
        check: StopCode::sub(0xC4, 0x20016),
    }))
}

/// Runs the deferred work that could satisfy a waiter: queued DPCs, and below DISPATCH_LEVEL also
/// due timers (their DPCs included) and queued work items. Returns whether anything ran.
pub fn run_deferred(k: &mut Kernel) -> KResult<bool> {
    let mut ran = run_dpcs(k)?;
    if current_irql(k) < DISPATCH_LEVEL {
        ran |= timer::run_due_timers(k)? > 0;
        ran |= workitem::run_work_items(k)? > 0;
    }
    Ok(ran)
}

/// Blocks the (only) kernel thread until `ready` holds or `deadline` passes (`None`: no timeout),
/// running deferred work ([`run_deferred`]) between looks and sleeping, when nothing ran, until the
/// earliest armed timer is due or the deadline, whichever is first. Returns whether `ready` held.
///
/// With no deadline, no deferred work left and no timer armed, nothing can ever make `ready` hold:
/// that is a [`KernelError::Deadlock`] naming `what` (a wait that a timer will satisfy is not a
/// deadlock; it sleeps until the timer fires). At DISPATCH_LEVEL and above (only a zero-timeout
/// poll is legal there) timers and work items cannot run on this processor: only queued DPCs run.
pub fn block_until(
    k: &mut Kernel,
    deadline: Option<Instant>,
    ready: &mut dyn FnMut(&mut Kernel) -> KResult<bool>,
    what: &dyn Fn() -> String,
) -> KResult<bool> {
    loop {
        if ready(k)? {
            return Ok(true);
        }
        let ran = run_deferred(k)?;
        let now = Instant::now();
        let left = deadline.map(|d| d.saturating_duration_since(now));
        if left == Some(Duration::ZERO) {
            // One last look if the deferred work just ran could have satisfied it.
            return if ran { ready(k) } else { Ok(false) };
        }
        if ran {
            continue;
        }
        let next_timer = if current_irql(k) < DISPATCH_LEVEL {
            timer::time_until_next_timer(k)
        } else {
            None
        };
        let nap = match (left, next_timer) {
            (None, None) => {
                return Err(KernelError::Deadlock(format!(
                    "{}, and nothing left to run can satisfy it (no DPC or work item queued, no timer armed)",
                    what()
                )))
            }
            (Some(a), Some(b)) => a.min(b),
            (Some(a), None) | (None, Some(a)) => a,
        };
        std::thread::sleep(nap);
    }
}

/// KeDelayExecutionThread(WaitMode, Alertable, Interval).
pub fn delay_execution_thread(
    k: &mut Kernel,
    _mode: u8,
    _alertable: bool,
    interval: u64,
) -> KResult<u32> {
    let duration = read_timeout(k, interval)?.unwrap_or(Duration::ZERO);
    // Timers that fall due and work items queued meanwhile run during the delay, as they would on
    // other processors and threads.
    let deadline = Instant::now() + duration;
    block_until(k, Some(deadline), &mut |_| Ok(false), &|| {
        "KeDelayExecutionThread".to_string()
    })?;
    Ok(STATUS_SUCCESS)
}

/// KeStallExecutionProcessor(MicroSeconds).
pub fn stall_execution_processor(_k: &mut Kernel, micros: u32) -> KResult<()> {
    let end = Instant::now() + Duration::from_micros(micros as u64);
    while Instant::now() < end {
        std::hint::spin_loop();
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Clocks

/// KeQuerySystemTime(CurrentTime).
pub fn query_system_time(k: &mut Kernel, out: u64) -> KResult<()> {
    k.m.mem.write_u64(out, system_time())?;
    Ok(())
}

/// KeQueryPerformanceCounter(PerformanceFrequency) -> counter.
pub fn query_performance_counter(k: &mut Kernel, frequency: u64) -> KResult<Quad> {
    if frequency != 0 {
        k.m.mem.write_u64(frequency, PERFORMANCE_FREQUENCY)?;
    }
    Ok(Quad(k.ke.interrupt_time()))
}

/// KeQueryInterruptTime -> 100 ns units since boot.
pub fn query_interrupt_time(k: &mut Kernel) -> KResult<Quad> {
    Ok(Quad(k.ke.interrupt_time()))
}

/// KeQueryTimeIncrement -> the clock tick in 100 ns units.
pub fn query_time_increment(_k: &mut Kernel) -> KResult<u32> {
    Ok(TIME_INCREMENT as u32)
}

/// KeQueryTickCount(TickCount) (the function form; x64 reads KUSER_SHARED_DATA inline).
pub fn query_tick_count(k: &mut Kernel, out: u64) -> KResult<()> {
    let ticks = k.ke.interrupt_time() / TIME_INCREMENT;
    k.m.mem.write_u64(out, ticks)?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Processors: one, in group 0.

/// Active processors (one, number 0 of group 0).
const ACTIVE_PROCESSORS: u32 = 1;
/// ALL_PROCESSOR_GROUPS.
const ALL_PROCESSOR_GROUPS: u16 = 0xFFFF;

/// MAXIMUM_PROCESSORS: 32 on x86, 64 on x64.
fn maximum_processors(k: &Kernel) -> u32 {
    match k.arch() {
        Arch::X86 => 32,
        Arch::X64 => 64,
    }
}

/// KeQueryActiveProcessorCountEx(GroupNumber) -> active processors in the group (all groups for
/// ALL_PROCESSOR_GROUPS); 0 for a group that does not exist.
pub fn query_active_processor_count_ex(_k: &mut Kernel, group: u16) -> KResult<u32> {
    Ok(match group {
        0 | ALL_PROCESSOR_GROUPS => ACTIVE_PROCESSORS,
        _ => 0,
    })
}

/// KeGetCurrentProcessorNumberEx(ProcNumber) -> the system-wide processor index (0); fills the
/// PROCESSOR_NUMBER (Group, Number, Reserved) when it is not NULL.
pub fn get_current_processor_number_ex(k: &mut Kernel, proc_number: u64) -> KResult<u32> {
    if proc_number != 0 {
        k.m.mem.write_u32(proc_number, 0)?;
    }
    Ok(0)
}

/// INVALID_PROCESSOR_INDEX.
const INVALID_PROCESSOR_INDEX: u32 = 0xFFFF_FFFF;

/// KeGetProcessorIndexFromNumber(ProcNumber) -> the system-wide index of the processor a
/// PROCESSOR_NUMBER (Group, Number, Reserved) names, INVALID_PROCESSOR_INDEX for none.
pub fn get_processor_index_from_number(k: &mut Kernel, proc_number: u64) -> KResult<u32> {
    let group = k.m.mem.read_u16(proc_number)?;
    let number = k.m.mem.read_u8(proc_number + 2)?;
    Ok(if group == 0 && u32::from(number) < ACTIVE_PROCESSORS {
        u32::from(number)
    } else {
        INVALID_PROCESSOR_INDEX
    })
}

/// KeGetProcessorNumberFromIndex(ProcIndex, ProcNumber) -> STATUS_INVALID_PARAMETER for an index
/// past the active processors; else fills the PROCESSOR_NUMBER (group 0, Reserved 0).
pub fn get_processor_number_from_index(
    k: &mut Kernel,
    index: u32,
    proc_number: u64,
) -> KResult<u32> {
    if index >= ACTIVE_PROCESSORS {
        return Ok(STATUS_INVALID_PARAMETER);
    }
    k.m.mem.write_u16(proc_number, 0)?;
    k.m.mem.write_u8(proc_number + 2, index as u8)?;
    k.m.mem.write_u8(proc_number + 3, 0)?;
    Ok(STATUS_SUCCESS)
}

// ---------------------------------------------------------------------------------------------
// DPC watchdog and thread priority

/// KeQueryDpcWatchdogInformation(WatchdogInformation): KDPC_WATCHDOG_INFORMATION from the kernel's
/// watchdog ([`crate::Watchdog::raised`], the longest stretch at DISPATCH_LEVEL or above, limits a
/// single DPC and the cumulative time alike): the limits in clock ticks (0: no limit), the counts
/// the ticks left before the current stretch at DISPATCH_LEVEL times out (the full limit below
/// DISPATCH_LEVEL, where they mean nothing), Reserved 0.
pub fn query_dpc_watchdog_information(k: &mut Kernel, info: u64) -> KResult<u32> {
    let tick = Duration::from_nanos(TIME_INCREMENT * 100);
    let ticks = |d: Duration| (d.as_nanos() / tick.as_nanos()).min(u128::from(u32::MAX)) as u32;
    let limit = k.watchdog.raised.map_or(0, ticks);
    let left = match (k.watchdog.raised, k.raised_for()) {
        (Some(max), Some(spent)) => ticks(max.saturating_sub(spent)),
        _ => limit,
    };
    for (i, v) in [limit, left, limit, left, 0].into_iter().enumerate() {
        k.m.mem.write_u32(info + 4 * i as u64, v)?;
    }
    Ok(STATUS_SUCCESS)
}

/// The priority a kernel thread starts with (the System process's base priority).
const DEFAULT_THREAD_PRIORITY: i32 = 8;

/// The priorities KeSetPriorityThread gave threads (by KTHREAD address).
#[derive(Debug, Default)]
struct ThreadPriorities(std::collections::HashMap<u64, i32>);

/// KeSetPriorityThread(Thread, Priority) -> the thread's previous priority.
pub fn set_priority_thread(k: &mut Kernel, thread: u64, priority: i32) -> KResult<i32> {
    let old = k.extension::<ThreadPriorities>().0.insert(thread, priority);
    Ok(old.unwrap_or(DEFAULT_THREAD_PRIORITY))
}

// ---------------------------------------------------------------------------------------------
// Floating-point state

/// KeSaveFloatingPointState(FloatSave): saves the floating-point state (the SSE registers; the
/// translator models no x87 unit, so its control word is always the reset value 0x27F) for the
/// matching KeRestoreFloatingPointState. Saves nest; each must be restored at its own IRQL.
pub fn save_floating_point_state(k: &mut Kernel, area: u64) -> KResult<u32> {
    if k.arch() == Arch::X86 {
        // KFLOATING_SAVE: ControlWord, StatusWord, Error/Data offsets and selectors, Cr0NpxState.
        k.m.mem.fill(area, 0, 32)?;
        k.m.mem.write_u32(area, 0x27F)?;
    }
    let irql = current_irql(k);
    if let Some(outer) = k.ke.float_saves.last().filter(|o| o.irql > irql) {
        return Err(KernelError::bug_check(
            0xE7,
            format!(
                "KeSaveFloatingPointState({area:#x}) at IRQL {irql} nested in the state {:#x} saved at IRQL {} (nested saves must not be at a lower IRQL)",
                outer.area, outer.irql
            ),
        ));
    }
    k.ke.float_saves.push(FloatSave {
        area,
        irql,
        depth: k.guest_depth(),
        xmm: k.m.cpu.xmm,
    });
    Ok(STATUS_SUCCESS)
}

/// KeRestoreFloatingPointState(FloatSave): restores what the innermost KeSaveFloatingPointState
/// saved. Restoring a state that is not the innermost saved one, or at another IRQL than it was
/// saved at, is bug check 0xE7 (INVALID_FLOATING_POINT_STATE) as on Windows.
pub fn restore_floating_point_state(k: &mut Kernel, area: u64) -> KResult<u32> {
    let irql = current_irql(k);
    let Some(save) = k.ke.float_saves.last() else {
        return Err(KernelError::bug_check(
            0xE7,
            format!("KeRestoreFloatingPointState({area:#x}) without a KeSaveFloatingPointState"),
        ));
    };
    if save.area != area {
        return Err(KernelError::bug_check(
            0xE7,
            format!(
                "KeRestoreFloatingPointState({area:#x}), but the innermost saved state is {:#x} (saves and restores must nest)",
                save.area
            ),
        ));
    }
    if save.irql != irql {
        return Err(KernelError::bug_check(
            0xE7,
            format!(
                "KeRestoreFloatingPointState({area:#x}) at IRQL {irql}, saved at IRQL {} (parameter 1 = 1)",
                save.irql
            ),
        ));
    }
    let save = k.ke.float_saves.pop().expect("checked above");
    k.m.cpu.xmm = save.xmm;
    Ok(STATUS_SUCCESS)
}

/// A host -> guest call at `depth` into `routine` returned: floating-point states it saved and did
/// not restore are dropped, and reported as bug check 0xE7 (a routine must restore what it saved
/// before it returns).
pub(crate) fn float_saves_on_return(k: &mut Kernel, routine: u64, depth: usize) -> KResult<()> {
    let Some(pos) = k.ke.float_saves.iter().position(|s| s.depth >= depth) else {
        return Ok(());
    };
    let area = k.ke.float_saves[pos].area;
    k.ke.float_saves.truncate(pos);
    let site = k.site(routine);
    Err(KernelError::bug_check(
        0xE7,
        format!("{site} returned without KeRestoreFloatingPointState({area:#x})"),
    ))
}

// ---------------------------------------------------------------------------------------------
// DPCs

/// KeInitializeDpc(Dpc, DeferredRoutine, DeferredContext).
pub fn initialize_dpc(k: &mut Kernel, dpc: u64, routine: u64, context: u64) -> KResult<()> {
    let l = k.layout;
    k.m.mem.fill(dpc, 0, l.kdpc_size)?;
    k.m.mem.write_u8(dpc, DPC_OBJECT)?;
    k.m.mem.write_u8(dpc + KDPC_IMPORTANCE, MEDIUM_IMPORTANCE)?;
    k.write_ptr(dpc + l.kdpc_deferred_routine, routine)?;
    k.write_ptr(dpc + l.kdpc_deferred_context, context)
}

/// `offsetof(KDPC, Importance)` and `offsetof(KDPC, Number)` (UCHAR Type, UCHAR Importance,
/// USHORT Number on both architectures).
const KDPC_IMPORTANCE: u64 = 1;
const KDPC_NUMBER: u64 = 2;
/// KDPC_IMPORTANCE values: LowImportance, MediumImportance (KeInitializeDpc's), HighImportance,
/// MediumHighImportance.
const MEDIUM_IMPORTANCE: u8 = 1;
const HIGH_IMPORTANCE: u8 = 2;
const MEDIUM_HIGH_IMPORTANCE: u8 = 3;

/// KeSetImportanceDpc(Dpc, Importance): where KeInsertQueueDpc queues it (HighImportance at the
/// head of the queue, the others at the tail).
pub fn set_importance_dpc(k: &mut Kernel, dpc: u64, importance: u32) -> KResult<()> {
    if importance > MEDIUM_HIGH_IMPORTANCE as u32 {
        return Err(KernelError::bug_check(
            0xC4,
            format!("KeSetImportanceDpc({dpc:#x}) with unknown importance {importance}"),
        ));
    }
    Ok(k.m.mem.write_u8(dpc + KDPC_IMPORTANCE, importance as u8)?)
}

/// Stores the target processor of a DPC in KDPC.Number as Windows does (the processor index plus
/// MAXIMUM_PROCESSORS, so that 0 still means "any processor").
fn set_dpc_target(k: &mut Kernel, dpc: u64, index: u32) -> KResult<()> {
    let maximum = maximum_processors(k);
    Ok(k.m
        .mem
        .write_u16(dpc + KDPC_NUMBER, (index + maximum) as u16)?)
}

/// KeSetTargetProcessorDpc(Dpc, Number): the DPC runs on processor `Number`. Targeting a processor
/// the system does not have is a driver bug (the DPC would never run).
pub fn set_target_processor_dpc(k: &mut Kernel, dpc: u64, number: u8) -> KResult<()> {
    if number as u32 >= ACTIVE_PROCESSORS {
        return Err(KernelError::bug_check(
            0xC4,
            format!("KeSetTargetProcessorDpc({dpc:#x}) targets processor {number}, but there are {ACTIVE_PROCESSORS}"),
        ));
    }
    set_dpc_target(k, dpc, number as u32)
}

/// KeSetTargetProcessorDpcEx(Dpc, ProcNumber) -> STATUS_INVALID_PARAMETER for a PROCESSOR_NUMBER
/// naming no active processor (or with Reserved set), else STATUS_SUCCESS.
pub fn set_target_processor_dpc_ex(k: &mut Kernel, dpc: u64, proc_number: u64) -> KResult<u32> {
    let group = k.m.mem.read_u16(proc_number)?;
    let number = k.m.mem.read_u8(proc_number + 2)?;
    let reserved = k.m.mem.read_u8(proc_number + 3)?;
    if group != 0 || number as u32 >= ACTIVE_PROCESSORS || reserved != 0 {
        return Ok(STATUS_INVALID_PARAMETER);
    }
    set_dpc_target(k, dpc, number as u32)?;
    Ok(STATUS_SUCCESS)
}

/// KeInsertQueueDpc(Dpc, SystemArgument1, SystemArgument2) -> FALSE if already queued.
pub fn insert_queue_dpc(k: &mut Kernel, dpc: u64, arg1: u64, arg2: u64) -> KResult<bool> {
    let queued = queue_dpc(k, dpc, arg1, arg2)?;
    if queued && current_irql(k) < DISPATCH_LEVEL {
        run_dpcs(k)?;
    }
    Ok(queued)
}

/// Queues a DPC without running it (it runs when the IRQL drops below DISPATCH_LEVEL or at the next
/// [`run_dpcs`]); FALSE if it was already queued.
pub(crate) fn queue_dpc(k: &mut Kernel, dpc: u64, arg1: u64, arg2: u64) -> KResult<bool> {
    if k.ke.dpcs.contains(&dpc) {
        return Ok(false);
    }
    let l = k.layout;
    k.write_ptr(dpc + l.kdpc_system_argument1, arg1)?;
    k.write_ptr(dpc + l.kdpc_system_argument2, arg2)?;
    // KeSetImportanceDpc: a HighImportance DPC goes to the head of the queue.
    if k.m.mem.read_u8(dpc + KDPC_IMPORTANCE)? == HIGH_IMPORTANCE {
        k.ke.dpcs.push_front(dpc);
    } else {
        k.ke.dpcs.push_back(dpc);
    }
    Ok(true)
}

/// KeRemoveQueueDpc(Dpc) -> TRUE if it was queued.
pub fn remove_queue_dpc(k: &mut Kernel, dpc: u64) -> KResult<bool> {
    let before = k.ke.dpcs.len();
    k.ke.dpcs.retain(|&d| d != dpc);
    Ok(k.ke.dpcs.len() != before)
}

/// Runs queued DPCs at DISPATCH_LEVEL; returns whether any ran.
pub fn run_dpcs(k: &mut Kernel) -> KResult<bool> {
    let mut ran = false;
    while let Some(dpc) = k.ke.dpcs.pop_front() {
        let l = k.layout;
        let routine = k.read_ptr(dpc + l.kdpc_deferred_routine)?;
        let context = k.read_ptr(dpc + l.kdpc_deferred_context)?;
        let a1 = k.read_ptr(dpc + l.kdpc_system_argument1)?;
        let a2 = k.read_ptr(dpc + l.kdpc_system_argument2)?;
        let old = current_irql(k);
        k.m.cpu.cr8 = DISPATCH_LEVEL as u64;
        let result = k.call_guest(routine, &[dpc, context, a1, a2]);
        k.m.cpu.cr8 = old as u64;
        result?;
        ran = true;
    }
    Ok(ran)
}

/// Checks that a block of guest memory about to be freed holds no kernel object still in use: an
/// armed timer or a queued DPC is bug check 0xC7 (TIMER_OR_DPC_INVALID), a queued work item 0xE4
/// (WORKER_INVALID), a live lookaside list 0xC4, as Driver Verifier reports them. IO_WORKITEMs in
/// the block are forgotten.
pub(crate) fn check_free(k: &mut Kernel, addr: u64, len: u64) -> KResult<()> {
    let end = addr.saturating_add(len.max(1));
    let inside = |a: u64| a >= addr && a < end;
    if let Some(t) = k.ke.timers.armed_timers().find(|&t| inside(t)) {
        return Err(KernelError::bug_check(
            0xC7,
            format!("memory at {addr:#x} freed while it holds the armed timer {t:#x} (KeCancelTimer it first)"),
        ));
    }
    if let Some(&d) = k.ke.dpcs.iter().find(|&&d| inside(d)) {
        return Err(KernelError::bug_check(
            0xC7,
            format!("memory at {addr:#x} freed while it holds the queued DPC {d:#x}"),
        ));
    }
    workitem::check_free(k, addr, end)?;
    crate::lookaside::check_free(k, addr, end)
}

/// Unload check: a queued DPC in the unloading image `[start, end)`, or whose routine is there,
/// would run code that is gone: bug check 0xCE; then the armed timers ([`timer::check_unload`]).
pub(crate) fn check_unload(k: &mut Kernel, driver: &str, start: u64, end: u64) -> KResult<()> {
    let inside = |a: u64| a >= start && a < end;
    let dpcs: Vec<u64> = k.ke.dpcs.iter().copied().collect();
    for dpc in dpcs {
        let routine = k.read_ptr(dpc + k.layout.kdpc_deferred_routine)?;
        if inside(dpc) || inside(routine) {
            let site = k.site(routine);
            return Err(verifier::stop_at(
                k,
                Rule::TimerPending,
                StopCode::new(0xCE, [routine, 0, 0, 0]),
                Some(site.clone()),
                format!("driver {driver} unloaded with DPC {dpc:#x} ({site}) still queued"),
            ));
        }
    }
    timer::check_unload(k, driver, start, end)
}

/// KeFlushQueuedDpcs(): returns once every queued DPC has run (callers are at PASSIVE_LEVEL).
pub fn flush_queued_dpcs(k: &mut Kernel) -> KResult<()> {
    run_dpcs(k).map(drop)
}

pub(crate) static EXPORTS: &[Export] = export_table![
    stdcall KeGetCurrentIrql => get_current_irql();
    stdcall KeFlushQueuedDpcs => flush_queued_dpcs() @ irql::PASSIVE;
    stdcall KeRaiseIrqlToDpcLevel => raise_irql_to_dpc_level() @ irql::KE_DISPATCH_LTE;
    stdcall KeInitializeSpinLock => initialize_spin_lock(spin_lock: u64);
    stdcall KeAcquireSpinLockRaiseToDpc => acquire_spin_lock(spin_lock: u64) @ irql::SPIN_LOCK_ACQUIRE;
    stdcall KeReleaseSpinLock => release_spin_lock(spin_lock: u64, new_irql: u8);
    stdcall KeAcquireSpinLockAtDpcLevel => acquire_spin_lock_at_dpc_level(spin_lock: u64);
    stdcall KeReleaseSpinLockFromDpcLevel => release_spin_lock_from_dpc_level(spin_lock: u64);
    fastcall KefAcquireSpinLockAtDpcLevel => acquire_spin_lock_at_dpc_level(spin_lock: u64);
    fastcall KefReleaseSpinLockFromDpcLevel => release_spin_lock_from_dpc_level(spin_lock: u64);
    stdcall KeInitializeEvent => initialize_event(event: u64, event_type: u32, state: bool);
    stdcall KeSetEvent => set_event(event: u64, increment: i32, wait: bool) @ Irql::By(set_event_irql);
    stdcall KeResetEvent => reset_event(event: u64) @ irql::KE_DISPATCH_LTE;
    stdcall KeClearEvent => clear_event(event: u64) @ irql::KE_DISPATCH_LTE;
    stdcall KeReadStateEvent => read_state_event(event: u64) @ irql::KE_DISPATCH_LTE;
    stdcall KeInitializeMutex => initialize_mutex(mutex: u64, level: u32);
    stdcall KeReleaseMutex => release_mutex(mutex: u64, wait: bool) @ irql::KE_DISPATCH_LTE;
    stdcall KeReadStateMutex => read_state_mutex(mutex: u64);
    stdcall KeInitializeSemaphore => initialize_semaphore(semaphore: u64, count: i32, limit: i32) @ irql::KE_DISPATCH_LTE;
    stdcall KeReleaseSemaphore => release_semaphore(semaphore: u64, increment: i32, adjustment: i32, wait: bool);
    stdcall KeReadStateSemaphore => read_state_semaphore(semaphore: u64);
    stdcall KeWaitForSingleObject => wait_for_single_object(object: u64, wait_reason: u32, wait_mode: u8, alertable: bool, timeout: u64) @ Irql::By(wait_irql);
    stdcall KeWaitForMutexObject => wait_for_single_object(mutex: u64, wait_reason: u32, wait_mode: u8, alertable: bool, timeout: u64) @ Irql::By(wait_irql);
    stdcall KeDelayExecutionThread => delay_execution_thread(wait_mode: u8, alertable: bool, interval: u64) @ irql::KE_APC_LTE1;
    stdcall KeQuerySystemTime => query_system_time(current_time: u64);
    stdcall KeQueryInterruptTime => query_interrupt_time();
    stdcall KeQueryTimeIncrement => query_time_increment();
    stdcall KeQueryTickCount => query_tick_count(tick_count: u64);
    stdcall KeInitializeDpc => initialize_dpc(dpc: u64, deferred_routine: u64, deferred_context: u64);
    stdcall KeInsertQueueDpc => insert_queue_dpc(dpc: u64, system_argument1: u64, system_argument2: u64);
    stdcall KeRemoveQueueDpc => remove_queue_dpc(dpc: u64);
    fastcall ExAcquireFastMutex => acquire_fast_mutex(fast_mutex: u64) @ irql::APC;
    fastcall ExReleaseFastMutex => release_fast_mutex(fast_mutex: u64) @ irql::APC;
    fastcall ExTryToAcquireFastMutex => try_to_acquire_fast_mutex(fast_mutex: u64) @ irql::APC;
    stdcall KeSetImportanceDpc => set_importance_dpc(dpc: u64, importance: u32);
    stdcall KeSetTargetProcessorDpc => set_target_processor_dpc(dpc: u64, number: u8);
    stdcall KeSetTargetProcessorDpcEx => set_target_processor_dpc_ex(dpc: u64, proc_number: u64);
    stdcall KeQueryActiveProcessorCountEx => query_active_processor_count_ex(group_number: u16);
    stdcall KeGetCurrentProcessorNumberEx => get_current_processor_number_ex(proc_number: u64);
    fastcall KeTryToAcquireSpinLockAtDpcLevel => try_to_acquire_spin_lock_at_dpc_level(spin_lock: u64);
    stdcall KeWaitForMultipleObjects => wait_for_multiple_objects(count: u32, object: u64, wait_type: u32, wait_reason: u32, wait_mode: u8, alertable: bool, timeout: u64, wait_block_array: u64) @ Irql::By(wait_multiple_irql);
    stdcall KeGetProcessorIndexFromNumber => get_processor_index_from_number(proc_number: u64);
    stdcall KeGetProcessorNumberFromIndex => get_processor_number_from_index(proc_index: u32, proc_number: u64);
    stdcall KeQueryDpcWatchdogInformation => query_dpc_watchdog_information(watchdog_information: u64) @ irql::KE_DISPATCH_LTE;
    stdcall KeSetPriorityThread => set_priority_thread(thread: u64, priority: i32) @ irql::KE_DISPATCH_LTE;
    stdcall KeSaveFloatingPointState => save_floating_point_state(float_save: u64) @ irql::KE_DISPATCH_LTE;
    stdcall KeRestoreFloatingPointState => restore_floating_point_state(float_save: u64) @ irql::KE_DISPATCH_LTE;
];

#[cfg(test)]
mod tests {
    use dbt::Arch;

    use super::*;
    use crate::crt::test_support::Guest;

    #[test]
    fn ke_tick_count_data_export_is_the_shared_tick_count() {
        for arch in [Arch::X86, Arch::X64] {
            let mut g = Guest::new(arch);
            let addr = tick_count_address(&g.k).expect("KUSER_SHARED_DATA is mapped");
            let bound = g.k.bind_import("NTOSKRNL.EXE", "KeTickCount");
            if arch == Arch::X86 {
                assert_eq!(bound, addr, "x86 binds the variable itself");
            } else {
                assert_ne!(bound, addr, "x64 ntoskrnl has no KeTickCount: a trap");
            }
            std::thread::sleep(Duration::from_millis(20));
            update_shared_user_data(&mut g.k).unwrap();
            let low = g.k.m.mem.read_u32(addr).unwrap() as u64;
            let high1 = g.k.m.mem.read_u32(addr + 4).unwrap() as u64;
            let high2 = g.k.m.mem.read_u32(addr + 8).unwrap() as u64;
            assert_eq!(
                high1, high2,
                "KSYSTEM_TIME: High1Time == High2Time when stable"
            );
            let ticks = low | (high1 << 32);
            assert!(ticks >= 1, "20 ms is at least one 15.6 ms tick");
            assert!(ticks <= g.k.ke.interrupt_time() / TIME_INCREMENT);
        }
    }

    #[test]
    fn wait_for_multiple_objects_rules() {
        for arch in [Arch::X86, Arch::X64] {
            let mut g = Guest::new(arch);
            let events: Vec<u64> = (0..5).map(|_| g.zeroed(32)).collect();
            for (i, &e) in events.iter().enumerate() {
                initialize_event(&mut g.k, e, (i % 2) as u32, false).unwrap();
            }
            let size = g.k.ptr_size() as usize;
            let array: Vec<u8> = events
                .iter()
                .flat_map(|e| e.to_le_bytes()[..size].to_vec())
                .collect();
            let objects = g.bytes(&array);
            let zero = g.bytes(&0u64.to_le_bytes());
            let blocks = g.zeroed(0x200);
            let code = |r: KResult<u32>| match r {
                Err(KernelError::BugCheck { code, .. }) => code,
                other => panic!("expected a bug check, got {other:?}"),
            };
            let k = &mut g.k;
            assert_eq!(
                code(wait_for_multiple_objects(
                    k, 4, objects, WAIT_ANY, 0, 0, false, zero, 0
                )),
                0x0C,
                "four objects need a WaitBlockArray"
            );
            assert_eq!(
                code(wait_for_multiple_objects(
                    k, 65, objects, WAIT_ANY, 0, 0, false, zero, blocks
                )),
                0x0C
            );
            assert_eq!(
                wait_for_multiple_objects(k, 5, objects, WAIT_ANY, 0, 0, false, zero, blocks)
                    .unwrap(),
                STATUS_TIMEOUT
            );
            set_event(k, events[3], 0, false).unwrap();
            set_event(k, events[4], 0, false).unwrap();
            assert_eq!(
                wait_for_multiple_objects(k, 5, objects, WAIT_ANY, 0, 0, false, zero, blocks)
                    .unwrap(),
                STATUS_WAIT_0 + 3,
                "the first signaled object, in array order"
            );
            assert_eq!(read_state_event(k, events[3]).unwrap(), 0, "auto-reset");
            // At DISPATCH_LEVEL an unsatisfiable wait with a timeout would block: 0x0A.
            set_irql(k, DISPATCH_LEVEL).unwrap();
            let ten_ms = g.bytes(&(-100_000i64).to_le_bytes());
            let k = &mut g.k;
            assert_eq!(
                code(wait_for_multiple_objects(
                    k, 2, objects, WAIT_ALL, 0, 0, false, ten_ms, 0
                )),
                0x0A
            );
            assert_eq!(
                wait_for_multiple_objects(
                    k,
                    1,
                    objects + 4 * size as u64,
                    WAIT_ALL,
                    0,
                    0,
                    false,
                    ten_ms,
                    0
                )
                .unwrap(),
                STATUS_SUCCESS,
                "a satisfiable wait does not block"
            );
        }
    }

    #[test]
    fn try_to_acquire_and_watchdog_information() {
        let mut g = Guest::new(Arch::X64);
        let lock = g.zeroed(8);
        let info = g.bytes(&[0xCC; 20]);
        g.k.watchdog.raised = Some(Duration::from_secs(2));
        assert!(
            try_to_acquire_spin_lock_at_dpc_level(&mut g.k, lock).is_err(),
            "below DISPATCH_LEVEL: 0xC4"
        );
        query_dpc_watchdog_information(&mut g.k, info).unwrap();
        let read = |g: &Guest, i: u64| g.k.m.mem.read_u32(info + 4 * i).unwrap();
        assert_eq!(
            [
                read(&g, 0),
                read(&g, 1),
                read(&g, 2),
                read(&g, 3),
                read(&g, 4)
            ],
            [128, 128, 128, 128, 0]
        );
        set_irql(&mut g.k, DISPATCH_LEVEL).unwrap();
        assert!(try_to_acquire_spin_lock_at_dpc_level(&mut g.k, lock).unwrap());
        assert!(!try_to_acquire_spin_lock_at_dpc_level(&mut g.k, lock).unwrap());
        g.k.watchdog.raised = None;
        query_dpc_watchdog_information(&mut g.k, info).unwrap();
        assert_eq!([read(&g, 0), read(&g, 2)], [0, 0], "no limit");
        let t = g.k.ps.thread;
        assert_eq!(
            set_priority_thread(&mut g.k, t, 15).unwrap(),
            DEFAULT_THREAD_PRIORITY
        );
        assert_eq!(set_priority_thread(&mut g.k, t, 3).unwrap(), 15);
    }

    #[test]
    fn a_zero_timeout_poll_at_dispatch_level_neither_sleeps_nor_runs_timers() {
        for arch in [Arch::X86, Arch::X64] {
            let mut g = Guest::new(arch);
            let t = g.zeroed(g.k.layout.ktimer_size as usize);
            timer::initialize_timer(&mut g.k, t).unwrap();
            timer::set_timer(&mut g.k, t, Quad(1), 0).unwrap();
            let zero = g.bytes(&0u64.to_le_bytes());
            set_irql(&mut g.k, DISPATCH_LEVEL).unwrap();
            assert_eq!(
                wait_for_single_object(&mut g.k, t, 0, 0, false, zero).unwrap(),
                STATUS_TIMEOUT
            );
            set_irql(&mut g.k, PASSIVE_LEVEL).unwrap();
            assert_eq!(
                wait_for_single_object(&mut g.k, t, 0, 0, false, zero).unwrap(),
                STATUS_SUCCESS,
                "below DISPATCH_LEVEL the due timer fires during the poll"
            );
        }
    }

    #[test]
    fn floating_point_saves_nest_at_their_irql() {
        for arch in [Arch::X86, Arch::X64] {
            let mut g = Guest::new(arch);
            let (outer, inner) = (g.zeroed(32), g.zeroed(32));
            g.k.m.cpu.xmm[3] = 0x1234;
            assert_eq!(
                save_floating_point_state(&mut g.k, outer).unwrap(),
                STATUS_SUCCESS
            );
            g.k.m.cpu.xmm[3] = 0x5678;
            let err = restore_floating_point_state(&mut g.k, inner).unwrap_err();
            assert!(err.to_string().contains("innermost saved state"), "{err}");
            set_irql(&mut g.k, DISPATCH_LEVEL).unwrap();
            let err = restore_floating_point_state(&mut g.k, outer).unwrap_err();
            assert!(
                err.to_string().contains("INVALID_FLOATING_POINT_STATE"),
                "{err}"
            );
            assert!(
                err.to_string().contains("at IRQL 2, saved at IRQL 0"),
                "{err}"
            );
            set_irql(&mut g.k, PASSIVE_LEVEL).unwrap();
            assert_eq!(
                restore_floating_point_state(&mut g.k, outer).unwrap(),
                STATUS_SUCCESS
            );
            assert_eq!(g.k.m.cpu.xmm[3], 0x1234, "the saved state is back");
            assert!(
                restore_floating_point_state(&mut g.k, outer).is_err(),
                "restored twice"
            );
            if arch == Arch::X86 {
                assert_eq!(g.k.m.mem.read_u32(outer).unwrap(), 0x27F, "ControlWord");
            }
            set_irql(&mut g.k, DISPATCH_LEVEL).unwrap();
            save_floating_point_state(&mut g.k, outer).unwrap();
            set_irql(&mut g.k, APC_LEVEL).unwrap();
            let err = save_floating_point_state(&mut g.k, inner).unwrap_err();
            assert!(
                err.to_string().contains("must not be at a lower IRQL"),
                "{err}"
            );
            set_irql(&mut g.k, DISPATCH_LEVEL).unwrap();
            restore_floating_point_state(&mut g.k, outer).unwrap();
            set_irql(&mut g.k, PASSIVE_LEVEL).unwrap();

            // A routine that returns with its state still saved.
            let routine = g.k.host_function(&SAVE_ONLY[0]);
            let err = g.k.call_guest(routine, &[outer]).unwrap_err();
            assert!(
                err.to_string()
                    .contains("returned without KeRestoreFloatingPointState"),
                "{err}"
            );
            assert!(
                g.k.ke.float_saves.is_empty(),
                "the abandoned save is dropped"
            );
        }
    }

    static SAVE_ONLY: &[Export] = export_table![
        stdcall SaveOnly => save_floating_point_state(float_save: u64);
    ];

    /// DPC contexts in the order they ran.
    #[derive(Default)]
    struct Ran(Vec<u64>);

    fn record(k: &mut Kernel, _dpc: u64, context: u64, _a1: u64, _a2: u64) -> KResult<()> {
        k.extension::<Ran>().0.push(context);
        Ok(())
    }

    static RECORD: &[Export] = export_table![
        stdcall RecordDpc => record(dpc: u64, context: u64, system_argument1: u64, system_argument2: u64);
    ];

    #[test]
    fn high_importance_dpcs_run_first_and_targets_are_checked() {
        for arch in [Arch::X86, Arch::X64] {
            let mut g = Guest::new(arch);
            let routine = g.k.host_function(&RECORD[0]);
            let size = g.k.layout.kdpc_size as usize;
            let dpcs: Vec<u64> = (1..=3).map(|_| g.zeroed(size)).collect();
            for (i, &d) in dpcs.iter().enumerate() {
                initialize_dpc(&mut g.k, d, routine, i as u64 + 1).unwrap();
            }
            assert_eq!(g.k.m.mem.read_u8(dpcs[0] + 1).unwrap(), MEDIUM_IMPORTANCE);
            set_importance_dpc(&mut g.k, dpcs[2], HIGH_IMPORTANCE as u32).unwrap();
            assert!(set_importance_dpc(&mut g.k, dpcs[2], 9).is_err());
            set_irql(&mut g.k, DISPATCH_LEVEL).unwrap();
            for &d in &dpcs {
                assert!(insert_queue_dpc(&mut g.k, d, 0, 0).unwrap());
            }
            set_irql(&mut g.k, PASSIVE_LEVEL).unwrap();
            assert_eq!(g.k.extension::<Ran>().0, [3, 1, 2]);

            set_target_processor_dpc(&mut g.k, dpcs[0], 0).unwrap();
            let maximum = if arch == Arch::X86 { 32 } else { 64 };
            assert_eq!(g.k.m.mem.read_u16(dpcs[0] + 2).unwrap(), maximum);
            let err = set_target_processor_dpc(&mut g.k, dpcs[0], 3).unwrap_err();
            assert!(err.to_string().contains("targets processor 3"), "{err}");
            let pn = g.bytes(&[1, 0, 0, 0]);
            assert_eq!(
                set_target_processor_dpc_ex(&mut g.k, dpcs[0], pn).unwrap(),
                STATUS_INVALID_PARAMETER,
                "group 1 does not exist"
            );
        }
    }
}
