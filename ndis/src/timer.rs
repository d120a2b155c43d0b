//! NDIS timers on the kernel's timers (KTIMER + KDPC, [`ntoskrnl::timer`]): NDIS 5 miniport timers
//! (NdisMInitializeTimer / NdisMSetTimer / NdisMSetPeriodicTimer / NdisMCancelTimer, over the
//! driver's NDIS_MINIPORT_TIMER), NDIS timers (NdisInitializeTimer / NdisSetTimer /
//! NdisCancelTimer, over an NDIS_TIMER) and NDIS 6 timer objects (NdisAllocateTimerObject /
//! NdisSetTimerObject / NdisCancelTimerObject / NdisFreeTimerObject, whose KTIMER and KDPC live in
//! a pool block NDIS allocates, charged to the calling image).
//!
//! Every timer's KDPC runs NDIS's DPC routine, which calls the driver's timer function at
//! DISPATCH_LEVEL as TimerFunction(SystemSpecific1 = the KDPC, FunctionContext, SystemSpecific2,
//! SystemSpecific3) and then does what NDIS does after a DPC: return the packets / NBLs the
//! miniport lent in indications it made from the timer. The timers fire when the host runs the
//! kernel's due timers ([`crate::miniport::periodic`]); [`next_deadline`] says when the next one
//! is due.

use std::time::Instant;

use ntoskrnl::export::{Export, Quad};
use ntoskrnl::{ex, export_table, ke, timer, KResult, Kernel, KernelError};

use crate::ndis6::object_header;
use crate::{NdisState, NdisStatus, NDIS_STATUS_INVALID_PARAMETER, NDIS_STATUS_SUCCESS};

/// NDIS_OBJECT_TYPE_TIMER_CHARACTERISTICS.
const OBJECT_TYPE_TIMER_CHARACTERISTICS: u8 = 0x97;
/// Pool tag of timer objects whose characteristics give none.
const TIMER_TAG: u32 = u32::from_le_bytes(*b"NDtm");
/// 100 ns units per millisecond.
const UNITS_PER_MS: i64 = 10_000;

/// An NDIS timer (keyed in [`NdisState::timers`] by the address of its KDPC).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NdisTimer {
    /// The driver's timer function.
    pub function: u64,
    /// FunctionContext it gets.
    pub context: u64,
    /// NDIS 6: the FunctionContext of the characteristics (NdisSetTimerObject's NULL context).
    pub default_context: u64,
    /// The KTIMER.
    pub ktimer: u64,
    /// The adapter (NdisMInitializeTimer) or NdisHandle (NdisAllocateTimerObject) it belongs to;
    /// 0 for an NDIS_TIMER.
    pub owner: u64,
    /// NDIS 6: the timer object (the pool block NDIS allocated); 0 for NDIS 5 timers.
    pub object: u64,
}

/// When the next armed kernel timer (NDIS timers included) is due, for a host loop to sleep until.
pub fn next_deadline(k: &Kernel) -> Option<Instant> {
    timer::time_until_next_timer(k).map(|d| Instant::now() + d)
}

/// Sets up the KTIMER and KDPC of a timer and records it.
fn init(k: &mut Kernel, ktimer: u64, dpc: u64, record: NdisTimer) -> KResult<()> {
    timer::initialize_timer(k, ktimer)?;
    let routine = k.host_function(&TIMER_DPC[0]);
    ke::initialize_dpc(k, dpc, routine, ktimer)?;
    k.extension::<NdisState>().timers.insert(dpc, record);
    Ok(())
}

/// The timer recorded for `dpc`, or bug check 0x7C naming `call` (a timer NDIS never initialized).
fn timer_of(k: &mut Kernel, dpc: u64, call: &str) -> KResult<NdisTimer> {
    k.extension::<NdisState>()
        .timers
        .get(&dpc)
        .copied()
        .ok_or_else(|| {
            KernelError::bug_check(
                0x7C,
                format!("{call} of a timer that was not initialized (KDPC {dpc:#x})"),
            )
        })
}

/// Arms a timer `ms` milliseconds from now, then every `period_ms` if that is not zero.
fn arm(k: &mut Kernel, dpc: u64, ms: u32, period_ms: u32, call: &str) -> KResult<bool> {
    let t = timer_of(k, dpc, call)?;
    timer::arm_timer(k, t.ktimer, -i64::from(ms) * UNITS_PER_MS, period_ms, dpc)
}

/// Disarms a timer and drops its DPC if that is queued; whether either was pending.
fn cancel(k: &mut Kernel, ktimer: u64, dpc: u64) -> KResult<bool> {
    let armed = timer::cancel_timer(k, ktimer)?;
    let queued = ke::remove_queue_dpc(k, dpc)?;
    Ok(armed || queued)
}

/// NDIS's DPC routine for every NDIS timer (DeferredContext: the KTIMER).
fn timer_dpc(k: &mut Kernel, dpc: u64, _ktimer: u64, arg1: u64, arg2: u64) -> KResult<()> {
    let Some(t) = k.extension::<NdisState>().timers.get(&dpc).copied() else {
        tracing::warn!(target: "ica::ndis", "timer DPC {dpc:#x} fired for a timer NDIS no longer knows");
        return Ok(());
    };
    k.call_guest(t.function, &[dpc, t.context, arg1, arg2])?;
    crate::miniport::return_all(k)
}

/// NdisMInitializeTimer(Timer, MiniportAdapterHandle, TimerFunction, FunctionContext).
pub fn m_initialize_timer(
    k: &mut Kernel,
    t: u64,
    adapter: u64,
    function: u64,
    context: u64,
) -> KResult<()> {
    let l = crate::layout6(k);
    k.write_ptr(t + l.miniport_timer_miniport_timer_function, function)?;
    k.write_ptr(t + l.miniport_timer_miniport_timer_context, context)?;
    k.write_ptr(t + l.miniport_timer_miniport, adapter)?;
    let ktimer = t + l.miniport_timer_timer;
    init(
        k,
        ktimer,
        t + l.miniport_timer_dpc,
        NdisTimer {
            function,
            context,
            default_context: context,
            ktimer,
            owner: adapter,
            object: 0,
        },
    )
}

/// NdisMSetTimer(Timer, MillisecondsToDelay).
pub fn m_set_timer(k: &mut Kernel, t: u64, ms: u32) -> KResult<()> {
    let dpc = t + crate::layout6(k).miniport_timer_dpc;
    arm(k, dpc, ms, 0, "NdisMSetTimer").map(drop)
}

/// NdisMSetPeriodicTimer(Timer, MillisecondPeriod): first expiry one period from now.
pub fn m_set_periodic_timer(k: &mut Kernel, t: u64, ms: u32) -> KResult<()> {
    let dpc = t + crate::layout6(k).miniport_timer_dpc;
    arm(k, dpc, ms, ms, "NdisMSetPeriodicTimer").map(drop)
}

/// NdisMCancelTimer(Timer, TimerCancelled): `*TimerCancelled` = whether it was pending.
pub fn m_cancel_timer(k: &mut Kernel, t: u64, cancelled_out: u64) -> KResult<()> {
    let l = crate::layout6(k);
    let cancelled = cancel(k, t + l.miniport_timer_timer, t + l.miniport_timer_dpc)?;
    Ok(k.m.mem.write_u8(cancelled_out, u8::from(cancelled))?)
}

/// NdisInitializeTimer(Timer, TimerFunction, FunctionContext).
pub fn initialize_timer(k: &mut Kernel, t: u64, function: u64, context: u64) -> KResult<()> {
    let l = crate::layout6(k);
    let ktimer = t + l.timer_timer;
    init(
        k,
        ktimer,
        t + l.timer_dpc,
        NdisTimer {
            function,
            context,
            default_context: context,
            ktimer,
            owner: 0,
            object: 0,
        },
    )
}

/// NdisSetTimer(Timer, MillisecondsToDelay).
pub fn set_timer(k: &mut Kernel, t: u64, ms: u32) -> KResult<()> {
    let dpc = t + crate::layout6(k).timer_dpc;
    arm(k, dpc, ms, 0, "NdisSetTimer").map(drop)
}

/// NdisCancelTimer(Timer, TimerCancelled).
pub fn cancel_timer(k: &mut Kernel, t: u64, cancelled_out: u64) -> KResult<()> {
    let l = crate::layout6(k);
    let cancelled = cancel(k, t + l.timer_timer, t + l.timer_dpc)?;
    Ok(k.m.mem.write_u8(cancelled_out, u8::from(cancelled))?)
}

/// Offset of the KDPC in a timer object (after its KTIMER).
fn object_dpc_offset(k: &Kernel) -> u64 {
    k.layout.ktimer_size.next_multiple_of(16)
}

/// NdisAllocateTimerObject(NdisHandle, TimerCharacteristics, pTimerObject): a timer object in a
/// pool block tagged AllocationTag and charged to the calling image.
pub fn allocate_timer_object(
    k: &mut Kernel,
    handle: u64,
    chars: u64,
    object_out: u64,
) -> KResult<NdisStatus> {
    let l = crate::layout6(k);
    let (kind, _, size) = object_header(k, chars)?;
    if kind != OBJECT_TYPE_TIMER_CHARACTERISTICS
        || size < l.timer_chars_function_context + k.ptr_size()
    {
        tracing::warn!(target: "ica::ndis", "NdisAllocateTimerObject: bad characteristics header (type {kind:#x}, size {size})");
        return Ok(NDIS_STATUS_INVALID_PARAMETER);
    }
    let function = k.read_ptr(chars + l.timer_chars_timer_function)?;
    let context = k.read_ptr(chars + l.timer_chars_function_context)?;
    let tag = match k.m.mem.read_u32(chars + l.timer_chars_allocation_tag)? {
        0 => TIMER_TAG,
        t => t,
    };
    if function == 0 {
        tracing::warn!(target: "ica::ndis", "NdisAllocateTimerObject without a TimerFunction");
        return Ok(NDIS_STATUS_INVALID_PARAMETER);
    }
    let owner = k.caller_image();
    let dpc_at = object_dpc_offset(k);
    let object = ex::allocate(k, dpc_at + k.layout.kdpc_size, tag, owner)?;
    init(
        k,
        object,
        object + dpc_at,
        NdisTimer {
            function,
            context,
            default_context: context,
            ktimer: object,
            owner: handle,
            object,
        },
    )?;
    k.write_ptr(object_out, object)?;
    Ok(NDIS_STATUS_SUCCESS)
}

/// The timer object record of `object`, or bug check 0x7C naming `call`.
fn timer_object(k: &mut Kernel, object: u64, call: &str) -> KResult<(u64, NdisTimer)> {
    let dpc = object + object_dpc_offset(k);
    let t = k
        .extension::<NdisState>()
        .timers
        .get(&dpc)
        .copied()
        .filter(|t| t.object == object && object != 0);
    t.map(|t| (dpc, t)).ok_or_else(|| {
        KernelError::bug_check(
            0x7C,
            format!("{call} of {object:#x}, which is not a timer object (freed?)"),
        )
    })
}

/// NdisSetTimerObject(TimerObject, DueTime, MillisecondsPeriod, FunctionContext) -> TRUE if the
/// timer was already set. DueTime: negative = relative, in 100 ns units; a NULL FunctionContext
/// means the characteristics' one.
pub fn set_timer_object(
    k: &mut Kernel,
    object: u64,
    due: Quad,
    period_ms: i32,
    context: u64,
) -> KResult<bool> {
    let (dpc, t) = timer_object(k, object, "NdisSetTimerObject")?;
    if period_ms < 0 {
        return Err(KernelError::bug_check(
            0x7C,
            format!("NdisSetTimerObject({object:#x}) with negative period {period_ms}"),
        ));
    }
    let context = if context != 0 {
        context
    } else {
        t.default_context
    };
    if let Some(r) = k.extension::<NdisState>().timers.get_mut(&dpc) {
        r.context = context;
    }
    timer::arm_timer(k, object, due.0 as i64, period_ms as u32, dpc)
}

/// NdisCancelTimerObject(TimerObject) -> TRUE if the timer was set (its function will not run).
pub fn cancel_timer_object(k: &mut Kernel, object: u64) -> KResult<bool> {
    let (dpc, _) = timer_object(k, object, "NdisCancelTimerObject")?;
    cancel(k, object, dpc)
}

/// NdisFreeTimerObject(TimerObject): cancels it (a driver should have) and frees it.
pub fn free_timer_object(k: &mut Kernel, object: u64) -> KResult<()> {
    let (dpc, _) = timer_object(k, object, "NdisFreeTimerObject")?;
    if cancel(k, object, dpc)? {
        tracing::warn!(target: "ica::ndis", "NdisFreeTimerObject of {object:#x} while it is set");
    }
    k.extension::<NdisState>().timers.remove(&dpc);
    ex::free(k, object, None)
}

/// The timers of an adapter going away: NDIS 5 timers still set are cancelled, timer objects
/// still allocated are freed; one line per such leftover (a driver bug). `name` names the
/// adapter.
pub(crate) fn release_owned_by(k: &mut Kernel, owner: u64, name: &str) -> KResult<Vec<String>> {
    let timers: Vec<(u64, NdisTimer)> = k
        .extension::<NdisState>()
        .timers
        .iter()
        .filter(|(_, t)| t.owner == owner)
        .map(|(d, t)| (*d, *t))
        .collect();
    let mut out = Vec::new();
    for (dpc, t) in timers {
        let pending = cancel(k, t.ktimer, dpc)?;
        k.extension::<NdisState>().timers.remove(&dpc);
        if t.object != 0 {
            out.push(format!("{name}: timer object {:#x} not freed", t.object));
            ex::free(k, t.object, None)?;
        } else if pending {
            out.push(format!("{name}: timer {:#x} still set", t.ktimer));
        }
    }
    Ok(out)
}

pub(crate) static EXPORTS: &[Export] = export_table![
    stdcall NdisMInitializeTimer => m_initialize_timer(timer: u64, miniport_adapter_handle: u64, timer_function: u64, function_context: u64);
    stdcall NdisMSetTimer => m_set_timer(timer: u64, milliseconds_to_delay: u32);
    stdcall NdisMSetPeriodicTimer => m_set_periodic_timer(timer: u64, millisecond_period: u32);
    stdcall NdisMCancelTimer => m_cancel_timer(timer: u64, timer_cancelled: u64);
    stdcall NdisInitializeTimer => initialize_timer(timer: u64, timer_function: u64, function_context: u64);
    stdcall NdisSetTimer => set_timer(timer: u64, milliseconds_to_delay: u32);
    stdcall NdisCancelTimer => cancel_timer(timer: u64, timer_cancelled: u64);
    stdcall NdisAllocateTimerObject => allocate_timer_object(ndis_handle: u64, timer_characteristics: u64, timer_object: u64);
    stdcall NdisSetTimerObject => set_timer_object(timer_object: u64, due_time: Quad, milliseconds_period: i32, function_context: u64);
    stdcall NdisCancelTimerObject => cancel_timer_object(timer_object: u64);
    stdcall NdisFreeTimerObject => free_timer_object(timer_object: u64);
];

/// NDIS's DPC routine of every NDIS timer (not an export).
static TIMER_DPC: &[Export] = export_table![
    stdcall ndisTimerDpc => timer_dpc(dpc: u64, deferred_context: u64, system_argument1: u64, system_argument2: u64);
];

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::test_support::{block, kernel, ARCHES};

    /// Contexts the test timer function was called with, and the IRQL it ran at.
    #[derive(Default)]
    struct Fired(Vec<(u64, u8)>);

    fn record(k: &mut Kernel, _ss1: u64, context: u64, _ss2: u64, _ss3: u64) -> KResult<()> {
        let irql = ke::current_irql(k);
        k.extension::<Fired>().0.push((context, irql));
        Ok(())
    }

    static TEST_TIMER: &[Export] = export_table![
        stdcall TestTimerFunction => record(system_specific1: u64, function_context: u64, system_specific2: u64, system_specific3: u64);
    ];

    /// Runs due timers after `ms` and returns the contexts fired.
    fn fire_after(k: &mut Kernel, ms: u64) -> Vec<u64> {
        std::thread::sleep(Duration::from_millis(ms));
        ke::run_deferred(k).unwrap();
        std::mem::take(&mut k.extension::<Fired>().0)
            .into_iter()
            .map(|(c, irql)| {
                assert_eq!(
                    irql,
                    ke::DISPATCH_LEVEL,
                    "timer functions run at DISPATCH_LEVEL"
                );
                c
            })
            .collect()
    }

    #[test]
    fn miniport_timers_fire_once_periodically_and_not_after_cancel() {
        for arch in ARCHES {
            let mut k = kernel(arch);
            let function = k.host_function(&TEST_TIMER[0]);
            let l = crate::layout6(&k);
            let t = block(&mut k, l.miniport_timer_size);
            m_initialize_timer(&mut k, t, 0xADA, function, 0xC0).unwrap();
            assert_eq!(k.read_ptr(t + l.miniport_timer_miniport).unwrap(), 0xADA);
            m_set_timer(&mut k, t, 3).unwrap();
            assert!(next_deadline(&k).is_some());
            assert_eq!(fire_after(&mut k, 0), Vec::<u64>::new(), "not due yet");
            assert_eq!(fire_after(&mut k, 10), [0xC0]);
            assert_eq!(next_deadline(&k), None, "a one-shot timer is done");

            m_set_periodic_timer(&mut k, t, 2).unwrap();
            assert_eq!(fire_after(&mut k, 5), [0xC0]);
            assert_eq!(fire_after(&mut k, 5), [0xC0], "and again");
            let out = block(&mut k, 1);
            m_cancel_timer(&mut k, t, out).unwrap();
            assert_eq!(k.m.mem.read_u8(out).unwrap(), 1, "it was set");
            assert_eq!(fire_after(&mut k, 5), Vec::<u64>::new());
            m_cancel_timer(&mut k, t, out).unwrap();
            assert_eq!(k.m.mem.read_u8(out).unwrap(), 0);

            // A timer still set when its adapter goes away is a leftover.
            m_set_timer(&mut k, t, 1000).unwrap();
            let left = release_owned_by(&mut k, 0xADA, "adapter").unwrap();
            assert_eq!(left.len(), 1, "{left:?}");
            assert_eq!(k.ke.timers.armed(), 0);
            // Setting a timer NDIS no longer knows is a driver bug.
            assert!(m_set_timer(&mut k, t, 1).is_err());
        }
    }

    #[test]
    fn ndis_timers_fire_and_cancel() {
        for arch in ARCHES {
            let mut k = kernel(arch);
            let function = k.host_function(&TEST_TIMER[0]);
            let size = crate::layout6(&k).timer_size;
            let t = block(&mut k, size);
            initialize_timer(&mut k, t, function, 0xE0).unwrap();
            set_timer(&mut k, t, 1).unwrap();
            assert_eq!(fire_after(&mut k, 5), [0xE0]);
            set_timer(&mut k, t, 1).unwrap();
            let out = block(&mut k, 1);
            cancel_timer(&mut k, t, out).unwrap();
            assert_eq!(k.m.mem.read_u8(out).unwrap(), 1);
            assert_eq!(fire_after(&mut k, 5), Vec::<u64>::new());
        }
    }

    #[test]
    fn timer_objects_take_the_context_of_the_set_or_their_default() {
        for arch in ARCHES {
            let mut k = kernel(arch);
            let function = k.host_function(&TEST_TIMER[0]);
            let l = crate::layout6(&k);
            let chars = block(&mut k, l.timer_chars_size);
            k.m.mem
                .write_u8(chars + l.object_header_type, 0x97)
                .unwrap();
            k.m.mem
                .write_u8(chars + l.object_header_revision, 1)
                .unwrap();
            k.m.mem
                .write_u16(
                    chars + l.object_header_size_field,
                    l.timer_chars_size as u16,
                )
                .unwrap();
            let tag = u32::from_le_bytes(*b"Tmr6");
            k.m.mem
                .write_u32(chars + l.timer_chars_allocation_tag, tag)
                .unwrap();
            k.write_ptr(chars + l.timer_chars_timer_function, function)
                .unwrap();
            k.write_ptr(chars + l.timer_chars_function_context, 0xD0)
                .unwrap();
            let out = block(&mut k, 8);
            let status = allocate_timer_object(&mut k, 0xADA, chars, out).unwrap();
            assert_eq!(status, NDIS_STATUS_SUCCESS);
            let object = k.read_ptr(out).unwrap();
            assert_eq!(k.pool.tag_usage(tag).blocks, 1, "tagged AllocationTag");

            let relative_1ms = Quad((-10_000i64) as u64);
            assert!(!set_timer_object(&mut k, object, relative_1ms, 0, 0).unwrap());
            assert_eq!(fire_after(&mut k, 5), [0xD0], "the default context");
            set_timer_object(&mut k, object, relative_1ms, 0, 0xD1).unwrap();
            assert!(
                set_timer_object(&mut k, object, relative_1ms, 0, 0xD2).unwrap(),
                "already set"
            );
            assert_eq!(fire_after(&mut k, 5), [0xD2]);
            set_timer_object(&mut k, object, relative_1ms, 0, 0).unwrap();
            assert!(cancel_timer_object(&mut k, object).unwrap());
            assert!(!cancel_timer_object(&mut k, object).unwrap());
            assert_eq!(fire_after(&mut k, 5), Vec::<u64>::new());
            free_timer_object(&mut k, object).unwrap();
            assert_eq!(k.pool.tag_usage(tag).blocks, 0);
            assert!(set_timer_object(&mut k, object, relative_1ms, 0, 0).is_err());

            // Bad characteristics are refused.
            k.m.mem
                .write_u8(chars + l.object_header_type, 0x80)
                .unwrap();
            let status = allocate_timer_object(&mut k, 0xADA, chars, out).unwrap();
            assert_eq!(status, NDIS_STATUS_INVALID_PARAMETER);
            // An object left allocated is reported when its adapter goes away.
            k.m.mem
                .write_u8(chars + l.object_header_type, 0x97)
                .unwrap();
            allocate_timer_object(&mut k, 0xADA, chars, out).unwrap();
            let left = release_owned_by(&mut k, 0xADA, "adapter").unwrap();
            assert_eq!(left.len(), 1, "{left:?}");
            assert_eq!(k.pool.tag_usage(tag).blocks, 0);
        }
    }
}
