//! Kernel timers (KTIMER): one-shot and periodic, notification and synchronization, each with an
//! optional DPC, fired from the interrupt-time clock ([`Dispatcher::interrupt_time`], real monotonic
//! host time), and the EX_TIMERs of ExAllocateTimer built on them.
//!
//! The KTIMER in guest memory carries what drivers and waits look at: the dispatcher header (its
//! signal state is what KeWaitForSingleObject and KeReadStateTimer see), DueTime (interrupt time of
//! the next expiration), Dpc and Period. Which timers are armed is host state ([`Timers`]), keyed by
//! the KTIMER's address, so nothing the guest writes can corrupt the queue: a timer is touched only
//! between KeSetTimer and its expiration or KeCancelTimer, freeing pool that holds an armed timer is
//! bug check 0xC7 (see [`crate::ke::check_free`]), and a timer whose memory was reused for something
//! else by the time it fires is reported the same way instead of being written to.
//!
//! Nothing interrupts guest code: timers fire when the host calls [`run_due_timers`] (the driver-host
//! loop, using [`next_timer_deadline`] to sleep until the next one) and while the guest waits or
//! delays ([`crate::ke::block_until`] sleeps until the earliest armed timer, fires it, and looks again).
//!
//! [`Dispatcher::interrupt_time`]: crate::ke::Dispatcher::interrupt_time

use std::collections::BTreeMap;
use std::time::Duration;

use crate::export::{Export, Quad};
use crate::ke::{
    self, current_irql, DISPATCH_LEVEL, DPC_OBJECT, THREADED_DPC_OBJECT, TIMER_NOTIFICATION,
    TIMER_SYNCHRONIZATION,
};
use crate::verifier::{self, irql, Rule, StopCode};
use crate::{export_table, KResult, Kernel, KernelError};

/// TIMER_TYPE values of KeInitializeTimerEx.
pub const NOTIFICATION_TIMER: u32 = 0;
/// SynchronizationTimer.
pub const SYNCHRONIZATION_TIMER: u32 = 1;

/// 100 ns units per millisecond (KeSetTimerEx's Period is in milliseconds).
const UNITS_PER_MS: u64 = 10_000;

/// One armed timer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Armed {
    /// Interrupt time (100 ns units since boot) of the next expiration.
    due: u64,
    /// Period in 100 ns units, 0 for a one-shot timer.
    period: u64,
    /// KDPC to queue on expiration, or 0.
    dpc: u64,
    /// Order of arming, to break ties between equal due times.
    seq: u64,
}

/// The timer queue: armed KTIMERs by guest address.
#[derive(Debug, Default)]
pub struct Timers {
    armed: BTreeMap<u64, Armed>,
    next_seq: u64,
    fired: u64,
    /// EX_TIMERs from ExAllocateTimer, by guest address.
    ex: BTreeMap<u64, ExTimer>,
}

impl Timers {
    /// Number of armed timers.
    pub fn armed(&self) -> usize {
        self.armed.len()
    }

    /// Whether the KTIMER at `timer` is armed.
    pub fn is_armed(&self, timer: u64) -> bool {
        self.armed.contains_key(&timer)
    }

    /// Guest addresses of the armed timers.
    pub fn armed_timers(&self) -> impl Iterator<Item = u64> + '_ {
        self.armed.keys().copied()
    }

    /// Expirations so far (a periodic timer counts once per period).
    pub fn fired(&self) -> u64 {
        self.fired
    }

    /// Interrupt time of the earliest armed timer.
    pub fn next_deadline(&self) -> Option<u64> {
        self.armed.values().map(|a| a.due).min()
    }
}

/// Interrupt time of the earliest armed timer (100 ns units since boot, the clock of
/// [`crate::ke::Dispatcher::interrupt_time`]), or `None` when no timer is armed.
pub fn next_timer_deadline(k: &Kernel) -> Option<u64> {
    k.ke.timers.next_deadline()
}

/// How long until the earliest armed timer is due (zero if it is already due), or `None` when no
/// timer is armed: what a host loop that has nothing else to do may sleep.
pub fn time_until_next_timer(k: &Kernel) -> Option<Duration> {
    let due = next_timer_deadline(k)?;
    let now = k.ke.interrupt_time();
    Some(Duration::from_nanos(
        due.saturating_sub(now).saturating_mul(100),
    ))
}

/// Fires every armed timer whose due time has passed, earliest first: sets its signal state, queues
/// its DPC (SystemArgument1/2 = low/high part of the system time, as Windows passes them) and re-arms
/// it one period from now if it is periodic, else takes it off the queue. The DPCs then run at
/// DISPATCH_LEVEL if the caller is below it (else they stay queued until the IRQL drops). Returns how
/// many timers fired.
pub fn run_due_timers(k: &mut Kernel) -> KResult<usize> {
    let now = k.ke.interrupt_time();
    let mut due: Vec<(u64, u64, u64)> =
        k.ke.timers
            .armed
            .iter()
            .filter(|(_, a)| a.due <= now)
            .map(|(&t, a)| (a.due, a.seq, t))
            .collect();
    if due.is_empty() {
        return Ok(0);
    }
    due.sort_unstable();
    let l = k.layout;
    let system = ke::system_time();
    for &(_, _, timer) in &due {
        let Some(armed) = k.ke.timers.armed.get(&timer).copied() else {
            continue;
        };
        if armed.period > 0 {
            let next = now + armed.period;
            if let Some(a) = k.ke.timers.armed.get_mut(&timer) {
                a.due = next;
            }
        } else {
            k.ke.timers.armed.remove(&timer);
        }
        k.ke.timers.fired += 1;
        let kind = ke::header_type(k, timer)?;
        if kind != TIMER_NOTIFICATION && kind != TIMER_SYNCHRONIZATION {
            k.ke.timers.armed.remove(&timer);
            return Err(KernelError::bug_check(
                0xC7,
                format!("armed timer {timer:#x} fired, but its memory no longer holds a KTIMER (type {kind}): freed or reused without KeCancelTimer"),
            ));
        }
        ke::set_signal_state(k, timer, 1)?;
        if armed.period > 0 {
            k.m.mem
                .write_u64(timer + l.ktimer_due_time, now + armed.period)?;
        }
        if armed.dpc != 0 {
            let dpc_type = k.m.mem.read_u8(armed.dpc)?;
            if dpc_type != DPC_OBJECT && dpc_type != THREADED_DPC_OBJECT {
                k.ke.timers.armed.remove(&timer);
                return Err(KernelError::bug_check(
                    0xC7,
                    format!("timer {timer:#x} fired, but its DPC {:#x} is no longer a KDPC (type {dpc_type:#x})", armed.dpc),
                ));
            }
            ke::queue_dpc(k, armed.dpc, system & 0xFFFF_FFFF, system >> 32)?;
        }
    }
    if current_irql(k) < DISPATCH_LEVEL {
        ke::run_dpcs(k)?;
    }
    Ok(due.len())
}

/// Unload check: a timer still armed that lies in the unloading image `[start, end)` or whose DPC
/// (or its routine) does would run code or touch memory that is gone: bug check 0xCE
/// (DRIVER_UNLOADED_WITHOUT_CANCELLING_PENDING_OPERATIONS), a verifier finding naming the routine.
pub(crate) fn check_unload(k: &mut Kernel, driver: &str, start: u64, end: u64) -> KResult<()> {
    let inside = |a: u64| a >= start && a < end;
    let armed: Vec<(u64, u64)> = k.ke.timers.armed.iter().map(|(&t, a)| (t, a.dpc)).collect();
    for (timer, dpc) in armed {
        let routine = if dpc != 0 {
            k.read_ptr(dpc + k.layout.kdpc_deferred_routine)?
        } else {
            0
        };
        if inside(timer) || inside(dpc) || inside(routine) {
            let site = (routine != 0).then(|| k.site(routine));
            let detail = format!(
                "driver {driver} unloaded with timer {timer:#x} still set (its DPC routine {}); KeCancelTimer it in DriverUnload",
                site.as_ref().map(|s| s.to_string()).unwrap_or_else(|| "none".into())
            );
            return Err(verifier::stop_at(
                k,
                Rule::TimerPending,
                StopCode::new(0xCE, [routine, 0, 0, 0]),
                site,
                detail,
            ));
        }
    }
    Ok(())
}

/// Drops `timer` from the queue; whether it was armed.
fn disarm(k: &mut Kernel, timer: u64) -> bool {
    k.ke.timers.armed.remove(&timer).is_some()
}

/// KeInitializeTimer(Timer): a notification timer, not signaled, not armed.
pub fn initialize_timer(k: &mut Kernel, timer: u64) -> KResult<()> {
    initialize_timer_ex(k, timer, NOTIFICATION_TIMER)
}

/// KeInitializeTimerEx(Timer, Type): NotificationTimer (0) or SynchronizationTimer (1). Initializing
/// a timer that is still armed drops the pending expiration (the memory is a new timer now).
pub fn initialize_timer_ex(k: &mut Kernel, timer: u64, kind: u32) -> KResult<()> {
    let l = k.layout;
    let header_kind = match kind {
        NOTIFICATION_TIMER => TIMER_NOTIFICATION,
        SYNCHRONIZATION_TIMER => TIMER_SYNCHRONIZATION,
        other => {
            return Err(KernelError::bug_check(
                0xC4,
                format!("KeInitializeTimerEx({timer:#x}) with unknown timer type {other}"),
            ))
        }
    };
    disarm(k, timer);
    ke::init_header(k, timer, header_kind, l.ktimer_size, 0)?;
    k.m.mem.write_u64(timer + l.ktimer_due_time, 0)?;
    let entry = timer + l.ktimer_timer_list_entry;
    k.write_ptr(entry, 0)?;
    k.write_ptr(entry + k.ptr_size(), 0)?;
    k.write_ptr(timer + l.ktimer_dpc, 0)?;
    k.m.mem.write_u32(timer + l.ktimer_period, 0)?;
    Ok(())
}

/// Converts a KeSetTimer DueTime (negative: relative, in 100 ns units; positive: absolute system
/// time) to the interrupt time it falls due at. A time in the past is due now.
fn due_interrupt_time(k: &Kernel, due_time: i64) -> u64 {
    let now = k.ke.interrupt_time();
    if due_time < 0 {
        now.saturating_add(due_time.unsigned_abs())
    } else {
        now.saturating_add((due_time as u64).saturating_sub(ke::system_time()))
    }
}

/// Arms `timer` to expire at `due_time` (KeSetTimer encoding), then every `period_ms` milliseconds if
/// non-zero, queuing `dpc` (if non-zero) on each expiration. Clears the signal state. Returns TRUE if
/// the timer was already armed (it is re-armed with the new parameters).
pub fn arm_timer(
    k: &mut Kernel,
    timer: u64,
    due_time: i64,
    period_ms: u32,
    dpc: u64,
) -> KResult<bool> {
    arm_timer_units(k, timer, due_time, period_ms as u64 * UNITS_PER_MS, dpc)
}

/// [`arm_timer`] with the period in 100 ns units (KTIMER.Period shows it in whole milliseconds).
fn arm_timer_units(
    k: &mut Kernel,
    timer: u64,
    due_time: i64,
    period: u64,
    dpc: u64,
) -> KResult<bool> {
    let l = k.layout;
    let kind = ke::header_type(k, timer)?;
    if kind != TIMER_NOTIFICATION && kind != TIMER_SYNCHRONIZATION {
        return Err(KernelError::bug_check(
            0xC4,
            format!("KeSetTimer on {timer:#x}, which is not an initialized KTIMER (type {kind}; KeInitializeTimer it first)"),
        ));
    }
    let due = due_interrupt_time(k, due_time);
    let seq = k.ke.timers.next_seq;
    k.ke.timers.next_seq += 1;
    let was_armed =
        k.ke.timers
            .armed
            .insert(
                timer,
                Armed {
                    due,
                    period,
                    dpc,
                    seq,
                },
            )
            .is_some();
    ke::set_signal_state(k, timer, 0)?;
    k.m.mem.write_u64(timer + l.ktimer_due_time, due)?;
    k.write_ptr(timer + l.ktimer_dpc, dpc)?;
    k.m.mem
        .write_u32(timer + l.ktimer_period, (period / UNITS_PER_MS) as u32)?;
    Ok(was_armed)
}

/// KeSetTimer(Timer, DueTime, Dpc) -> TRUE if the timer was already armed.
pub fn set_timer(k: &mut Kernel, timer: u64, due_time: Quad, dpc: u64) -> KResult<bool> {
    arm_timer(k, timer, due_time.0 as i64, 0, dpc)
}

/// KeSetTimerEx(Timer, DueTime, Period, Dpc) -> TRUE if the timer was already armed. Period is in
/// milliseconds; 0 is a one-shot timer. A negative period is a driver bug (it is a LONG in the
/// prototype, but must not be negative).
pub fn set_timer_ex(
    k: &mut Kernel,
    timer: u64,
    due_time: Quad,
    period: i32,
    dpc: u64,
) -> KResult<bool> {
    if period < 0 {
        return Err(KernelError::bug_check(
            0xC4,
            format!("KeSetTimerEx({timer:#x}) with negative period {period}"),
        ));
    }
    arm_timer(k, timer, due_time.0 as i64, period as u32, dpc)
}

/// KeSetCoalescableTimer(Timer, DueTime, Period, TolerableDelay, Dpc) -> TRUE if already armed.
/// Expirations are never coalesced here: the timer fires at its due time.
pub fn set_coalescable_timer(
    k: &mut Kernel,
    timer: u64,
    due_time: Quad,
    period: u32,
    _tolerable_delay: u32,
    dpc: u64,
) -> KResult<bool> {
    arm_timer(k, timer, due_time.0 as i64, period, dpc)
}

/// KeCancelTimer(Timer) -> TRUE if the timer was armed. The signal state is left alone, and a DPC
/// the timer already queued still runs (as on Windows; KeRemoveQueueDpc removes it).
pub fn cancel_timer(k: &mut Kernel, timer: u64) -> KResult<bool> {
    Ok(disarm(k, timer))
}

/// KeReadStateTimer(Timer) -> whether it is signaled (expired since it was last set).
pub fn read_state_timer(k: &mut Kernel, timer: u64) -> KResult<bool> {
    Ok(ke::signal_state(k, timer)? != 0)
}

// ---------------------------------------------------------------------------------------------
// EX_TIMER (ExAllocateTimer, Windows 8.1): a KTIMER and a KDPC in a pool block the driver owns,
// whose DPC routine (a host function) calls the driver's ExTimerCallback at DISPATCH_LEVEL.

/// ExAllocateTimer attributes: EX_TIMER_HIGH_RESOLUTION (expirations at the requested time, not
/// rounded to the clock tick: every timer here is) and EX_TIMER_NO_WAKE (never wakes the system
/// from a low-power state: there is none here).
pub const EX_TIMER_HIGH_RESOLUTION: u32 = 0x4;
/// EX_TIMER_NO_WAKE.
pub const EX_TIMER_NO_WAKE: u32 = 0x8;
/// EX_TIMER_NOTIFICATION: a notification KTIMER underneath (else a synchronization one).
pub const EX_TIMER_NOTIFICATION: u32 = 1 << 31;
/// Pool tag of EX_TIMER blocks.
const EX_TIMER_TAG: u32 = u32::from_le_bytes(*b"ExTm");
/// Largest ExSetTimer period (MAXLONG, in 100 ns units).
const EX_TIMER_MAX_PERIOD: i64 = i32::MAX as i64;

/// Host state of one EX_TIMER.
#[derive(Debug, Clone, Copy)]
struct ExTimer {
    callback: u64,
    context: u64,
    /// ExDeleteTimer(Cancel = FALSE) on a set timer: delete it after its next expiration, then call
    /// this EXT_DELETE_CALLBACK (routine, context) if any.
    delete_after_expiry: Option<(u64, u64)>,
}

/// The KTIMER of an EX_TIMER block (at its start) and its KDPC (after it).
fn ex_timer_dpc(k: &Kernel, timer: u64) -> u64 {
    timer + k.layout.ktimer_size
}

/// The EX_TIMER `timer` names, or bug check 0xC4 for anything ExAllocateTimer did not return (or
/// ExDeleteTimer already deleted).
fn ex_timer(k: &Kernel, timer: u64, function: &str) -> KResult<ExTimer> {
    k.ke.timers.ex.get(&timer).copied().ok_or_else(|| {
        KernelError::bug_check(
            0xC4,
            format!(
                "{function}({timer:#x}): not a timer from ExAllocateTimer (or already deleted)"
            ),
        )
    })
}

/// ExAllocateTimer(Callback, CallbackContext, Attributes) -> a new EX_TIMER (nonpaged pool charged
/// to the driver: one never deleted is a leak at unload), or NULL for unknown attribute bits.
pub fn allocate_ex_timer(
    k: &mut Kernel,
    callback: u64,
    context: u64,
    attributes: u32,
) -> KResult<u64> {
    if attributes & !(EX_TIMER_HIGH_RESOLUTION | EX_TIMER_NO_WAKE | EX_TIMER_NOTIFICATION) != 0 {
        return Ok(0);
    }
    let owner = k.caller_image();
    let size = k.layout.ktimer_size + k.layout.kdpc_size;
    let timer = crate::ex::allocate(k, size, EX_TIMER_TAG, owner)?;
    let kind = if attributes & EX_TIMER_NOTIFICATION != 0 {
        NOTIFICATION_TIMER
    } else {
        SYNCHRONIZATION_TIMER
    };
    initialize_timer_ex(k, timer, kind)?;
    let routine = k.host_function(&EX_TIMER_DPC[0]);
    let dpc = ex_timer_dpc(k, timer);
    ke::initialize_dpc(k, dpc, routine, timer)?;
    k.ke.timers.ex.insert(
        timer,
        ExTimer {
            callback,
            context,
            delete_after_expiry: None,
        },
    );
    Ok(timer)
}

/// ExSetTimer(Timer, DueTime, Period, Parameters) -> TRUE if the timer was already set (it is
/// re-armed). DueTime is KeSetTimer's encoding, Period (0: one-shot) in 100 ns units up to MAXLONG.
pub fn set_ex_timer(
    k: &mut Kernel,
    timer: u64,
    due_time: Quad,
    period: Quad,
    _parameters: u64,
) -> KResult<bool> {
    let t = ex_timer(k, timer, "ExSetTimer")?;
    let period = period.0 as i64;
    if !(0..=EX_TIMER_MAX_PERIOD).contains(&period) || t.delete_after_expiry.is_some() {
        return Err(KernelError::bug_check(
            0xC4,
            format!("ExSetTimer({timer:#x}) with period {period} (0..=MAXLONG) or on a timer being deleted"),
        ));
    }
    let dpc = ex_timer_dpc(k, timer);
    arm_timer_units(k, timer, due_time.0 as i64, period as u64, dpc)
}

/// ExCancelTimer(Timer, Parameters) -> TRUE if the timer was set. A callback already queued still
/// runs, as on Windows.
pub fn cancel_ex_timer(k: &mut Kernel, timer: u64, _parameters: u64) -> KResult<bool> {
    ex_timer(k, timer, "ExCancelTimer")?;
    Ok(disarm(k, timer))
}

/// ExDeleteTimer(Timer, Cancel, Wait, Parameters) -> TRUE if Cancel is TRUE and the timer was set.
/// With Cancel the timer is disarmed and deleted now; without it a set timer is deleted after its
/// next expiration. Wait without Cancel is a bug check; Wait from the timer's own callback would
/// wait for itself (and the IRQL check rejects it at DISPATCH_LEVEL). Once the timer is deleted the
/// EXT_DELETE_PARAMETERS DeleteCallback (if any) is called with its DeleteContext.
pub fn delete_ex_timer(
    k: &mut Kernel,
    timer: u64,
    cancel: bool,
    wait: bool,
    parameters: u64,
) -> KResult<bool> {
    ex_timer(k, timer, "ExDeleteTimer")?;
    if wait && !cancel {
        return Err(KernelError::bug_check(
            0xC4,
            format!("ExDeleteTimer({timer:#x}) with Wait but not Cancel"),
        ));
    }
    // EXT_DELETE_PARAMETERS: ULONG Version, ULONG Reserved, DeleteCallback, DeleteContext.
    let delete_callback = if parameters != 0 {
        let p = k.ptr_size();
        (k.read_ptr(parameters + 8)?, k.read_ptr(parameters + 8 + p)?)
    } else {
        (0, 0)
    };
    let dpc = ex_timer_dpc(k, timer);
    if !cancel && k.ke.timers.is_armed(timer) {
        if let Some(e) = k.ke.timers.ex.get_mut(&timer) {
            e.delete_after_expiry = Some(delete_callback);
        }
        // A periodic timer expires once more, then goes.
        if let Some(a) = k.ke.timers.armed.get_mut(&timer) {
            a.period = 0;
        }
        return Ok(false);
    }
    let canceled = cancel && disarm(k, timer);
    // A callback already queued (not running) does not run after the timer is gone.
    ke::remove_queue_dpc(k, dpc)?;
    free_ex_timer(k, timer, delete_callback)?;
    Ok(canceled)
}

/// Frees an EX_TIMER block, then calls its EXT_DELETE_CALLBACK (routine, context) if any.
fn free_ex_timer(k: &mut Kernel, timer: u64, (routine, context): (u64, u64)) -> KResult<()> {
    k.ke.timers.ex.remove(&timer);
    crate::ex::free(k, timer, Some(EX_TIMER_TAG))?;
    if routine != 0 {
        k.call_guest(routine, &[context])?;
    }
    Ok(())
}

/// The DPC routine of every EX_TIMER: calls the driver's ExTimerCallback(Timer, Context) (at
/// DISPATCH_LEVEL, where DPCs run), then finishes a deletion ExDeleteTimer deferred to this
/// expiration.
fn run_ex_timer(k: &mut Kernel, _dpc: u64, timer: u64, _arg1: u64, _arg2: u64) -> KResult<()> {
    let Some(t) = k.ke.timers.ex.get(&timer).copied() else {
        return Ok(());
    };
    k.call_guest(t.callback, &[timer, t.context])?;
    // The callback may have deleted the timer itself (ExDeleteTimer without Wait).
    let pending =
        k.ke.timers
            .ex
            .get(&timer)
            .and_then(|t| t.delete_after_expiry);
    if let Some(delete_callback) = pending {
        if !k.ke.timers.is_armed(timer) {
            free_ex_timer(k, timer, delete_callback)?;
        }
    }
    Ok(())
}

static EX_TIMER_DPC: &[Export] = export_table![
    stdcall ExTimerDpc => run_ex_timer(dpc: u64, timer: u64, system_argument1: u64, system_argument2: u64);
];

/// ExDeleteTimer's documented IRQL: at most DISPATCH_LEVEL, at most APC_LEVEL with Wait (the third
/// argument).
fn delete_ex_timer_irql(_k: &Kernel, args: &[u64]) -> KResult<Option<verifier::IrqlLimit>> {
    let wait = args.get(2).is_some_and(|&w| w as u8 != 0);
    Ok(Some(verifier::IrqlLimit {
        max: if wait { ke::APC_LEVEL } else { DISPATCH_LEVEL },
        source: "ExDeleteTimer",
        check: StopCode::sub(0xC4, 0xE5),
    }))
}

pub(crate) static EXPORTS: &[Export] = export_table![
    stdcall ExAllocateTimer => allocate_ex_timer(callback: u64, callback_context: u64, attributes: u32) @ irql::KE_DISPATCH_LTE;
    stdcall ExSetTimer => set_ex_timer(timer: u64, due_time: Quad, period: Quad, parameters: u64) @ irql::KE_DISPATCH_LTE;
    stdcall ExCancelTimer => cancel_ex_timer(timer: u64, parameters: u64) @ irql::KE_DISPATCH_LTE;
    stdcall ExDeleteTimer => delete_ex_timer(timer: u64, cancel: bool, wait: bool, parameters: u64) @ crate::export::Irql::By(delete_ex_timer_irql);
    stdcall KeInitializeTimer => initialize_timer(timer: u64) @ irql::KE_DISPATCH_LTE;
    stdcall KeInitializeTimerEx => initialize_timer_ex(timer: u64, timer_type: u32) @ irql::KE_DISPATCH_LTE;
    stdcall KeSetTimer => set_timer(timer: u64, due_time: Quad, dpc: u64) @ irql::KE_DISPATCH_LTE;
    stdcall KeSetTimerEx => set_timer_ex(timer: u64, due_time: Quad, period: i32, dpc: u64) @ irql::KE_DISPATCH_LTE;
    stdcall KeSetCoalescableTimer => set_coalescable_timer(timer: u64, due_time: Quad, period: u32, tolerable_delay: u32, dpc: u64) @ irql::DISPATCH;
    stdcall KeCancelTimer => cancel_timer(timer: u64) @ irql::KE_DISPATCH_LTE;
    stdcall KeReadStateTimer => read_state_timer(timer: u64) @ irql::KE_DISPATCH_LTE;
];

#[cfg(test)]
mod tests {
    use std::thread::sleep;
    use std::time::Duration;

    use dbt::Arch;

    use super::*;
    use crate::crt::test_support::Guest;
    use crate::ke::{initialize_dpc, wait_for_single_object};
    use crate::status::{STATUS_SUCCESS, STATUS_TIMEOUT};

    const ARCHES: [Arch; 2] = [Arch::X86, Arch::X64];
    const MS: i64 = 10_000;

    /// DPC contexts in the order the DPCs ran, with the IRQL they ran at.
    #[derive(Default)]
    struct Fired(Vec<(u64, u8)>);

    fn record_dpc(k: &mut Kernel, _dpc: u64, context: u64, _a1: u64, _a2: u64) -> KResult<()> {
        let irql = current_irql(k);
        k.extension::<Fired>().0.push((context, irql));
        Ok(())
    }

    static TEST_DPC: &[Export] = export_table![
        stdcall TestDpc => record_dpc(dpc: u64, context: u64, system_argument1: u64, system_argument2: u64);
    ];

    fn fired(g: &mut Guest) -> Vec<u64> {
        std::mem::take(&mut g.k.extension::<Fired>().0)
            .into_iter()
            .map(|(c, irql)| {
                assert_eq!(irql, DISPATCH_LEVEL, "timer DPCs run at DISPATCH_LEVEL");
                c
            })
            .collect()
    }

    /// A KTIMER (initialized) and a KDPC whose routine records `context`.
    fn timer_with_dpc(g: &mut Guest, context: u64) -> (u64, u64) {
        let timer = g.zeroed(g.k.layout.ktimer_size as usize);
        let dpc = g.zeroed(g.k.layout.kdpc_size as usize);
        initialize_timer(&mut g.k, timer).expect("KeInitializeTimer");
        let routine = g.k.host_function(&TEST_DPC[0]);
        initialize_dpc(&mut g.k, dpc, routine, context).expect("KeInitializeDpc");
        (timer, dpc)
    }

    fn rel(ms: i64) -> Quad {
        Quad((-ms * MS) as u64)
    }

    #[test]
    fn due_timers_fire_earliest_first_and_the_deadline_follows() {
        for arch in ARCHES {
            let mut g = Guest::new(arch);
            assert_eq!(next_timer_deadline(&g.k), None);
            assert_eq!(time_until_next_timer(&g.k), None);
            let (a, da) = timer_with_dpc(&mut g, 0xA);
            let (b, db) = timer_with_dpc(&mut g, 0xB);
            let (c, dc) = timer_with_dpc(&mut g, 0xC);
            let start = g.k.ke.interrupt_time();
            assert!(!set_timer(&mut g.k, a, rel(30), da).unwrap());
            assert!(!set_timer(&mut g.k, b, rel(10), db).unwrap());
            assert!(!set_timer(&mut g.k, c, rel(20), dc).unwrap());
            let next = next_timer_deadline(&g.k).expect("armed");
            assert!(
                next >= start + 10 * MS as u64 && next < start + 20 * MS as u64,
                "the 10 ms timer is next"
            );
            assert!(time_until_next_timer(&g.k).unwrap() <= Duration::from_millis(10));
            assert_eq!(run_due_timers(&mut g.k).unwrap(), 0, "nothing due yet");
            assert!(!read_state_timer(&mut g.k, b).unwrap());

            sleep(Duration::from_millis(15));
            assert_eq!(run_due_timers(&mut g.k).unwrap(), 1);
            assert_eq!(fired(&mut g), [0xB]);
            assert!(read_state_timer(&mut g.k, b).unwrap());
            assert!(
                !g.k.ke.timers.is_armed(b),
                "a one-shot timer leaves the queue"
            );
            let next = next_timer_deadline(&g.k).expect("two left");
            assert!(next >= start + 20 * MS as u64 && next < start + 30 * MS as u64);

            sleep(Duration::from_millis(20));
            assert_eq!(run_due_timers(&mut g.k).unwrap(), 2);
            assert_eq!(fired(&mut g), [0xC, 0xA], "earliest due first");
            assert_eq!(next_timer_deadline(&g.k), None);
            assert_eq!(g.k.ke.timers.fired(), 3);
        }
    }

    #[test]
    fn timers_due_together_fire_in_arming_order() {
        for arch in ARCHES {
            let mut g = Guest::new(arch);
            let timers: Vec<_> = (1..=4).map(|i| timer_with_dpc(&mut g, i)).collect();
            // Absolute due time 1 (1601): long past, due now.
            for &(t, d) in timers.iter().rev() {
                set_timer(&mut g.k, t, Quad(1), d).unwrap();
            }
            assert_eq!(time_until_next_timer(&g.k), Some(Duration::ZERO));
            assert_eq!(run_due_timers(&mut g.k).unwrap(), 4);
            assert_eq!(fired(&mut g), [4, 3, 2, 1]);
        }
    }

    #[test]
    fn set_again_rearms_and_cancel_reports_whether_armed() {
        for arch in ARCHES {
            let mut g = Guest::new(arch);
            let (t, d) = timer_with_dpc(&mut g, 7);
            assert!(!cancel_timer(&mut g.k, t).unwrap(), "never set");
            assert!(!set_timer(&mut g.k, t, rel(10_000), 0).unwrap());
            let far = next_timer_deadline(&g.k).unwrap();
            assert!(
                set_timer(&mut g.k, t, rel(1), d).unwrap(),
                "TRUE: it was armed"
            );
            let near = next_timer_deadline(&g.k).unwrap();
            assert!(near < far, "re-armed with the new due time");
            assert_eq!(g.k.ke.timers.armed(), 1, "one entry per timer");
            let l = g.k.layout;
            assert_eq!(g.k.m.mem.read_u64(t + l.ktimer_due_time).unwrap(), near);
            assert_eq!(g.k.read_ptr(t + l.ktimer_dpc).unwrap(), d);
            sleep(Duration::from_millis(2));
            assert_eq!(run_due_timers(&mut g.k).unwrap(), 1);
            assert_eq!(fired(&mut g), [7], "the DPC of the last KeSetTimer");
            assert!(!cancel_timer(&mut g.k, t).unwrap(), "expired");

            // Setting clears the signal state; cancelling leaves it alone.
            assert!(read_state_timer(&mut g.k, t).unwrap());
            set_timer(&mut g.k, t, rel(10_000), 0).unwrap();
            assert!(!read_state_timer(&mut g.k, t).unwrap());
            assert!(cancel_timer(&mut g.k, t).unwrap());
            assert!(!cancel_timer(&mut g.k, t).unwrap());
            assert_eq!(next_timer_deadline(&g.k), None);

            // Re-initializing an armed timer drops it from the queue.
            set_timer(&mut g.k, t, rel(10_000), 0).unwrap();
            initialize_timer_ex(&mut g.k, t, SYNCHRONIZATION_TIMER).unwrap();
            assert_eq!(next_timer_deadline(&g.k), None);
        }
    }

    #[test]
    fn periodic_timers_rearm_until_cancelled() {
        for arch in ARCHES {
            let mut g = Guest::new(arch);
            let (t, d) = timer_with_dpc(&mut g, 9);
            assert!(!set_timer_ex(&mut g.k, t, rel(1), 2, d).unwrap());
            for round in 1..=3 {
                sleep(Duration::from_millis(3));
                let now = g.k.ke.interrupt_time();
                assert_eq!(run_due_timers(&mut g.k).unwrap(), 1, "round {round}");
                assert!(g.k.ke.timers.is_armed(t), "still armed after round {round}");
                let next = next_timer_deadline(&g.k).unwrap();
                assert!(
                    next > now && next <= g.k.ke.interrupt_time() + 2 * MS as u64,
                    "next expiration one period from now"
                );
                assert_eq!(
                    g.k.m.mem.read_u64(t + g.k.layout.ktimer_due_time).unwrap(),
                    next
                );
            }
            assert_eq!(fired(&mut g), [9, 9, 9]);
            assert!(cancel_timer(&mut g.k, t).unwrap());
            assert_eq!(next_timer_deadline(&g.k), None);
            assert!(set_timer_ex(&mut g.k, t, rel(1), -1, d).is_err());
        }
    }

    #[test]
    fn dpcs_of_timers_fired_at_dispatch_level_wait_for_the_irql_to_drop() {
        for arch in ARCHES {
            let mut g = Guest::new(arch);
            let (t, d) = timer_with_dpc(&mut g, 5);
            set_timer(&mut g.k, t, Quad(1), d).unwrap();
            ke::set_irql(&mut g.k, DISPATCH_LEVEL).unwrap();
            assert_eq!(run_due_timers(&mut g.k).unwrap(), 1);
            assert!(fired(&mut g).is_empty());
            assert_eq!(g.k.ke.queued_dpcs(), 1);
            ke::set_irql(&mut g.k, 0).unwrap();
            assert_eq!(fired(&mut g), [5]);
        }
    }

    #[test]
    fn waits_on_timers_sleep_until_they_fire_instead_of_deadlocking() {
        for arch in ARCHES {
            let mut g = Guest::new(arch);
            let (t, d) = timer_with_dpc(&mut g, 1);
            set_timer(&mut g.k, t, rel(3), d).unwrap();
            let started = std::time::Instant::now();
            assert_eq!(
                wait_for_single_object(&mut g.k, t, 0, 0, false, 0).unwrap(),
                STATUS_SUCCESS
            );
            assert!(started.elapsed() >= Duration::from_millis(2));
            assert_eq!(fired(&mut g), [1]);

            // A finite wait shorter than the timer times out and leaves it armed.
            let timeout = g.bytes(&(-2 * MS).to_le_bytes());
            set_timer(&mut g.k, t, rel(10_000), 0).unwrap();
            assert_eq!(
                wait_for_single_object(&mut g.k, t, 0, 0, false, timeout).unwrap(),
                STATUS_TIMEOUT
            );
            assert!(cancel_timer(&mut g.k, t).unwrap());

            // Nothing armed: an infinite wait on an unsignaled timer is a deadlock.
            initialize_timer(&mut g.k, t).unwrap();
            let err = wait_for_single_object(&mut g.k, t, 0, 0, false, 0).unwrap_err();
            assert!(matches!(err, KernelError::Deadlock(_)), "{err}");
        }
    }

    #[test]
    fn freeing_or_reusing_an_armed_timer_is_a_bug_check() {
        for arch in ARCHES {
            let mut g = Guest::new(arch);
            let size = g.k.layout.ktimer_size;
            let block = crate::ex::allocate(&mut g.k, size, 0x656D_6954, "t.sys".into()).unwrap();
            initialize_timer(&mut g.k, block).unwrap();
            set_timer(&mut g.k, block, rel(10_000), 0).unwrap();
            let err = crate::ex::free(&mut g.k, block, None).unwrap_err();
            assert!(
                matches!(err, KernelError::BugCheck { code: 0xC7, .. }),
                "{err}"
            );
            assert!(cancel_timer(&mut g.k, block).unwrap());
            crate::ex::free(&mut g.k, block, None).expect("free after KeCancelTimer");

            // Memory that held an armed timer was overwritten: the expiration is reported, not
            // written into whatever lives there now, and the timer is gone from the queue.
            let (t, d) = timer_with_dpc(&mut g, 3);
            set_timer(&mut g.k, t, Quad(1), d).unwrap();
            g.k.m.mem.fill(t, 0x5A, size).unwrap();
            let err = run_due_timers(&mut g.k).unwrap_err();
            assert!(
                matches!(err, KernelError::BugCheck { code: 0xC7, .. }),
                "{err}"
            );
            assert_eq!(g.k.ke.timers.armed(), 0);
            assert!(fired(&mut g).is_empty());

            // KeSetTimer on memory KeInitializeTimer never saw.
            let raw = g.zeroed(size as usize);
            assert!(set_timer(&mut g.k, raw, rel(1), 0).is_err());
        }
    }

    /// EX_TIMER callbacks (timer, context) and delete callbacks (context) in the order they ran.
    #[derive(Default)]
    struct ExFired(Vec<(u64, u64, u8)>);

    fn record_ex_timer(k: &mut Kernel, timer: u64, context: u64) -> KResult<()> {
        let irql = current_irql(k);
        k.extension::<ExFired>().0.push((timer, context, irql));
        Ok(())
    }

    fn record_delete(k: &mut Kernel, context: u64) -> KResult<()> {
        let irql = current_irql(k);
        k.extension::<ExFired>().0.push((0, context, irql));
        Ok(())
    }

    static EX_CALLBACKS: &[Export] = export_table![
        stdcall TestExTimer => record_ex_timer(timer: u64, context: u64);
        stdcall TestExDelete => record_delete(context: u64);
    ];

    /// EXT_DELETE_PARAMETERS naming the recording delete callback with `context`.
    fn delete_parameters(g: &mut Guest, context: u64) -> u64 {
        let routine = g.k.host_function(&EX_CALLBACKS[1]);
        let p = g.zeroed(32);
        let ptr = g.k.ptr_size();
        g.k.write_ptr(p + 8, routine).unwrap();
        g.k.write_ptr(p + 8 + ptr, context).unwrap();
        p
    }

    #[test]
    fn ex_delete_timer_without_cancel_deletes_after_the_next_expiration() {
        for arch in ARCHES {
            let mut g = Guest::new(arch);
            let callback = g.k.host_function(&EX_CALLBACKS[0]);
            let t = allocate_ex_timer(&mut g.k, callback, 0x77, EX_TIMER_HIGH_RESOLUTION).unwrap();
            assert_ne!(t, 0);
            assert!(!set_ex_timer(&mut g.k, t, rel(5), Quad(5 * MS as u64), 0).unwrap());
            let params = delete_parameters(&mut g, 0xDE1);
            assert!(
                !delete_ex_timer(&mut g.k, t, false, false, params).unwrap(),
                "without Cancel ExDeleteTimer returns FALSE"
            );
            assert!(g.k.ke.timers.is_armed(t), "the set timer still expires");
            sleep(Duration::from_millis(8));
            assert_eq!(run_due_timers(&mut g.k).unwrap(), 1);
            assert_eq!(
                std::mem::take(&mut g.k.extension::<ExFired>().0),
                [(t, 0x77, DISPATCH_LEVEL), (0, 0xDE1, DISPATCH_LEVEL)],
                "the last callback, then the delete callback"
            );
            assert!(
                !g.k.ke.timers.is_armed(t),
                "a periodic timer does not re-arm"
            );
            assert_eq!(g.k.pool.tag_usage(EX_TIMER_TAG).blocks, 0, "block freed");
            let err = set_ex_timer(&mut g.k, t, rel(1), Quad(0), 0).unwrap_err();
            assert!(
                err.to_string().contains("not a timer from ExAllocateTimer"),
                "{err}"
            );
        }
    }

    #[test]
    fn ex_timer_misuse_is_reported() {
        for arch in ARCHES {
            let mut g = Guest::new(arch);
            let callback = g.k.host_function(&EX_CALLBACKS[0]);
            assert_eq!(allocate_ex_timer(&mut g.k, callback, 0, 0x10).unwrap(), 0);
            let t = allocate_ex_timer(&mut g.k, callback, 0, 0).unwrap();
            let err = set_ex_timer(&mut g.k, t, rel(1), Quad(-1i64 as u64), 0).unwrap_err();
            assert!(err.to_string().contains("period -1"), "{err}");
            let err = delete_ex_timer(&mut g.k, t, false, true, 0).unwrap_err();
            assert!(err.to_string().contains("Wait but not Cancel"), "{err}");
            // A queued (expired, not yet run) callback does not run after a cancelling delete.
            assert!(!set_ex_timer(&mut g.k, t, rel(1), Quad(0), 0).unwrap());
            sleep(Duration::from_millis(3));
            ke::set_irql(&mut g.k, DISPATCH_LEVEL).unwrap();
            assert_eq!(run_due_timers(&mut g.k).unwrap(), 1);
            assert!(!delete_ex_timer(&mut g.k, t, true, false, 0).unwrap());
            ke::set_irql(&mut g.k, ke::PASSIVE_LEVEL).unwrap();
            assert!(g.k.extension::<ExFired>().0.is_empty());
            assert_eq!(g.k.ke.queued_dpcs(), 0);
        }
    }
}
