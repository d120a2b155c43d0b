//! Kernel core: IRQL, spinlocks, dispatcher objects (events, mutexes, semaphores) and waits, DPCs,
//! and the clocks drivers read.
//!
//! There is one processor and one kernel thread. A wait that is not yet satisfied runs the deferred
//! work that could satisfy it (queued DPCs), then sleeps out a finite timeout; an infinite wait that
//! nothing can satisfy is reported as a deadlock instead of hanging the host.

use std::collections::VecDeque;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use dbt::{Arch, Prot};

use crate::export::{Export, Quad};
use crate::status::{STATUS_SUCCESS, STATUS_TIMEOUT};
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
const TIMER_NOTIFICATION: u8 = 8;
const TIMER_SYNCHRONIZATION: u8 = 9;

/// Performance counter frequency reported to drivers (10 MHz, as modern Windows).
pub const PERFORMANCE_FREQUENCY: u64 = 10_000_000;
/// Seconds between 1601-01-01 (Windows epoch) and 1970-01-01.
const EPOCH_DIFFERENCE_SECS: u64 = 11_644_473_600;
/// Where KUSER_SHARED_DATA lives (x64 drivers read the clocks from it inline).
const SHARED_USER_DATA_X64: u64 = 0xFFFF_F780_0000_0000;
const SHARED_USER_DATA_X86: u64 = 0xFFDF_0000;

/// Dispatcher state: deferred procedure calls waiting to run, the boot clock.
#[derive(Debug)]
pub struct Dispatcher {
    boot: Instant,
    dpcs: VecDeque<u64>,
    shared_user_data: Option<u64>,
}

impl Dispatcher {
    /// A dispatcher booted now.
    pub fn new() -> Self {
        Dispatcher {
            boot: Instant::now(),
            dpcs: VecDeque::new(),
            shared_user_data: None,
        }
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
    let ticks = interrupt / 156_250;
    for (offset, value) in [(0x08, interrupt), (0x14, system), (0x320, ticks)] {
        k.m.mem.write_u32(base + offset, value as u32)?;
        k.m.mem.write_u32(base + offset + 4, (value >> 32) as u32)?;
        k.m.mem.write_u32(base + offset + 8, (value >> 32) as u32)?;
    }
    Ok(())
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

/// KfLowerIrql(NewIrql). Lowering to a higher level is a bug check.
pub fn lower_irql(k: &mut Kernel, new: u8) -> KResult<()> {
    let old = current_irql(k);
    if new > old {
        return Err(KernelError::bug_check(
            0x09,
            format!("KeLowerIrql to {new} above the current IRQL {old}"),
        ));
    }
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
        return Err(KernelError::bug_check(
            0x0F,
            format!("spinlock {lock:#x} acquired again while held (deadlock on this processor)"),
        ));
    }
    k.write_ptr(lock, SPINLOCK_HELD)
}

fn drop_lock(k: &mut Kernel, lock: u64) -> KResult<()> {
    if k.read_ptr(lock)? & SPINLOCK_HELD == 0 {
        return Err(KernelError::bug_check(
            0x10,
            format!("spinlock {lock:#x} released but not held"),
        ));
    }
    k.write_ptr(lock, 0)
}

/// KfAcquireSpinLock / KeAcquireSpinLockRaiseToDpc -> old IRQL.
pub fn acquire_spin_lock(k: &mut Kernel, lock: u64) -> KResult<u8> {
    let old = raise_irql(k, DISPATCH_LEVEL)?;
    take_lock(k, lock)?;
    Ok(old)
}

/// KfReleaseSpinLock / KeReleaseSpinLock(SpinLock, NewIrql).
pub fn release_spin_lock(k: &mut Kernel, lock: u64, new_irql: u8) -> KResult<()> {
    drop_lock(k, lock)?;
    lower_irql(k, new_irql)
}

/// KeAcquireSpinLockAtDpcLevel: the caller is already at DISPATCH_LEVEL.
pub fn acquire_spin_lock_at_dpc_level(k: &mut Kernel, lock: u64) -> KResult<()> {
    let irql = current_irql(k);
    if irql < DISPATCH_LEVEL {
        return Err(KernelError::bug_check(
            0xC4,
            format!("KeAcquireSpinLockAtDpcLevel at IRQL {irql} (must be DISPATCH_LEVEL)"),
        ));
    }
    take_lock(k, lock)
}

/// KeReleaseSpinLockFromDpcLevel.
pub fn release_spin_lock_from_dpc_level(k: &mut Kernel, lock: u64) -> KResult<()> {
    drop_lock(k, lock)
}

// ---------------------------------------------------------------------------------------------
// Dispatcher objects

fn header_type(k: &Kernel, obj: u64) -> KResult<u8> {
    Ok(k.m.mem.read_u8(obj + k.layout.dispatcher_header_type)?)
}

fn signal_state(k: &Kernel, obj: u64) -> KResult<i32> {
    Ok(k.m
        .mem
        .read_u32(obj + k.layout.dispatcher_header_signal_state)? as i32)
}

fn set_signal_state(k: &mut Kernel, obj: u64, state: i32) -> KResult<()> {
    Ok(k.m
        .mem
        .write_u32(obj + k.layout.dispatcher_header_signal_state, state as u32)?)
}

fn init_header(k: &mut Kernel, obj: u64, kind: u8, size: u64, state: i32) -> KResult<()> {
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

/// KeWaitForSingleObject(Object, WaitReason, WaitMode, Alertable, Timeout).
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
        return Err(KernelError::bug_check(
            0x0A,
            format!("KeWaitForSingleObject at IRQL {irql} with a non-zero timeout (waits need IRQL < DISPATCH_LEVEL)"),
        ));
    }
    let deadline = limit.map(|d| Instant::now() + d);
    loop {
        if try_satisfy(k, object)? {
            return Ok(STATUS_SUCCESS);
        }
        if run_dpcs(k)? {
            continue;
        }
        match deadline {
            None => {
                return Err(KernelError::Deadlock(format!(
                    "KeWaitForSingleObject({object:#x}) without timeout, and nothing left to run can signal it"
                )))
            }
            Some(deadline) => {
                let now = Instant::now();
                if now >= deadline {
                    return Ok(STATUS_TIMEOUT);
                }
                std::thread::sleep(deadline - now);
            }
        }
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
    run_dpcs(k)?;
    std::thread::sleep(duration);
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
    Ok(156_250)
}

/// KeQueryTickCount(TickCount) (the function form; x64 reads KUSER_SHARED_DATA inline).
pub fn query_tick_count(k: &mut Kernel, out: u64) -> KResult<()> {
    let ticks = k.ke.interrupt_time() / 156_250;
    k.m.mem.write_u64(out, ticks)?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// DPCs

/// KeInitializeDpc(Dpc, DeferredRoutine, DeferredContext).
pub fn initialize_dpc(k: &mut Kernel, dpc: u64, routine: u64, context: u64) -> KResult<()> {
    let l = k.layout;
    k.m.mem.fill(dpc, 0, l.kdpc_size)?;
    // KDPC.Type = DpcObject (0x13).
    k.m.mem.write_u8(dpc, 0x13)?;
    k.write_ptr(dpc + l.kdpc_deferred_routine, routine)?;
    k.write_ptr(dpc + l.kdpc_deferred_context, context)
}

/// KeInsertQueueDpc(Dpc, SystemArgument1, SystemArgument2) -> FALSE if already queued.
pub fn insert_queue_dpc(k: &mut Kernel, dpc: u64, arg1: u64, arg2: u64) -> KResult<bool> {
    if k.ke.dpcs.contains(&dpc) {
        return Ok(false);
    }
    let l = k.layout;
    k.write_ptr(dpc + l.kdpc_system_argument1, arg1)?;
    k.write_ptr(dpc + l.kdpc_system_argument2, arg2)?;
    k.ke.dpcs.push_back(dpc);
    if current_irql(k) < DISPATCH_LEVEL {
        run_dpcs(k)?;
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

pub(crate) static EXPORTS: &[Export] = export_table![
    stdcall KeGetCurrentIrql => get_current_irql();
    stdcall KeRaiseIrqlToDpcLevel => raise_irql_to_dpc_level();
    stdcall KeInitializeSpinLock => initialize_spin_lock(spin_lock: u64);
    stdcall KeAcquireSpinLockRaiseToDpc => acquire_spin_lock(spin_lock: u64);
    stdcall KeReleaseSpinLock => release_spin_lock(spin_lock: u64, new_irql: u8);
    stdcall KeAcquireSpinLockAtDpcLevel => acquire_spin_lock_at_dpc_level(spin_lock: u64);
    stdcall KeReleaseSpinLockFromDpcLevel => release_spin_lock_from_dpc_level(spin_lock: u64);
    fastcall KefAcquireSpinLockAtDpcLevel => acquire_spin_lock_at_dpc_level(spin_lock: u64);
    fastcall KefReleaseSpinLockFromDpcLevel => release_spin_lock_from_dpc_level(spin_lock: u64);
    stdcall KeInitializeEvent => initialize_event(event: u64, event_type: u32, state: bool);
    stdcall KeSetEvent => set_event(event: u64, increment: i32, wait: bool);
    stdcall KeResetEvent => reset_event(event: u64);
    stdcall KeClearEvent => clear_event(event: u64);
    stdcall KeReadStateEvent => read_state_event(event: u64);
    stdcall KeInitializeMutex => initialize_mutex(mutex: u64, level: u32);
    stdcall KeReleaseMutex => release_mutex(mutex: u64, wait: bool);
    stdcall KeReadStateMutex => read_state_mutex(mutex: u64);
    stdcall KeInitializeSemaphore => initialize_semaphore(semaphore: u64, count: i32, limit: i32);
    stdcall KeReleaseSemaphore => release_semaphore(semaphore: u64, increment: i32, adjustment: i32, wait: bool);
    stdcall KeReadStateSemaphore => read_state_semaphore(semaphore: u64);
    stdcall KeWaitForSingleObject => wait_for_single_object(object: u64, wait_reason: u32, wait_mode: u8, alertable: bool, timeout: u64);
    stdcall KeWaitForMutexObject => wait_for_single_object(mutex: u64, wait_reason: u32, wait_mode: u8, alertable: bool, timeout: u64);
    stdcall KeDelayExecutionThread => delay_execution_thread(wait_mode: u8, alertable: bool, interval: u64);
    stdcall KeQuerySystemTime => query_system_time(current_time: u64);
    stdcall KeQueryInterruptTime => query_interrupt_time();
    stdcall KeQueryTimeIncrement => query_time_increment();
    stdcall KeQueryTickCount => query_tick_count(tick_count: u64);
    stdcall KeInitializeDpc => initialize_dpc(dpc: u64, deferred_routine: u64, deferred_context: u64);
    stdcall KeInsertQueueDpc => insert_queue_dpc(dpc: u64, system_argument1: u64, system_argument2: u64);
    stdcall KeRemoveQueueDpc => remove_queue_dpc(dpc: u64);
];
