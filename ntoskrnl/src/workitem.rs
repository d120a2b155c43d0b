//! Work items: IO_WORKITEMs (IoAllocateWorkItem / IoInitializeWorkItem, IoQueueWorkItem[Ex],
//! IoFreeWorkItem / IoUninitializeWorkItem) and executive WORK_QUEUE_ITEMs (ExQueueWorkItem).
//!
//! There are no system worker threads: queued items run in queue order, one after the other, at
//! PASSIVE_LEVEL, when the host calls [`run_work_items`] (the driver-host loop, when idle) and whenever
//! a wait or delay of the guest would otherwise block ([`crate::ke::block_until`]), so a driver that
//! waits for an event its own work item sets makes progress instead of deadlocking. Items queued by a
//! running item run in the same call, up to [`MAX_WORK_ITEMS_PER_CALL`].
//!
//! What is queued is host state ([`WorkQueue`]): routine and arguments are taken when the item is
//! queued, so a routine may free its own item (the usual pattern). Queuing an item that is still
//! queued, freeing or uninitializing one that is queued, and a routine that returns at raised IRQL are
//! bug checks, as Driver Verifier reports them.
//!
//! IO_WORKITEM is opaque to drivers; ours is a WORK_QUEUE_ITEM followed by the routine, the I/O object
//! (device or driver object), the context and a type word, pointer-sized fields ([`io_workitem_size`]).

use std::collections::{HashMap, VecDeque};

use crate::export::Export;
use crate::ke::{current_irql, DISPATCH_LEVEL, PASSIVE_LEVEL};
use crate::verifier::{self, irql, Rule, StopCode};
use crate::{ex, export_table, KResult, Kernel, KernelError};

/// Most work items one [`run_work_items`] call runs (items that keep queuing themselves would
/// otherwise never let it return); the rest stay queued for the next call.
pub const MAX_WORK_ITEMS_PER_CALL: usize = 10_000;

/// Pool tag of IoAllocateWorkItem blocks ('IoWI').
pub const IO_WORKITEM_TAG: u32 = u32::from_le_bytes(*b"IoWI");

/// Which kind of item a queue entry came from (for messages and the WORK_QUEUE_ITEM bookkeeping).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkKind {
    /// IoQueueWorkItem: routine(IoObject, Context).
    Io,
    /// IoQueueWorkItemEx: routine(IoObject, Context, IoWorkItem).
    IoEx,
    /// ExQueueWorkItem: routine(Parameter).
    Ex,
    /// Queued by another module crate through [`queue_work`] (e.g. NDIS work items).
    Host,
}

/// One queued work item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedWork {
    /// Guest address identifying the item (IO_WORKITEM, WORK_QUEUE_ITEM, ...); queuing the same
    /// non-zero address twice is a bug check while the first is still queued.
    pub item: u64,
    /// Guest routine to call (stdcall on x86).
    pub routine: u64,
    /// Its arguments.
    pub args: Vec<u64>,
    /// Where it came from.
    pub kind: WorkKind,
}

/// An IO_WORKITEM the driver holds.
#[derive(Debug, Clone, Copy)]
struct IoItem {
    /// The device (or driver) object it was allocated or initialized for.
    io_object: u64,
}

/// The work queue and the IO_WORKITEMs drivers own.
#[derive(Debug, Default)]
pub struct WorkQueue {
    queue: VecDeque<QueuedWork>,
    io_items: HashMap<u64, IoItem>,
    ran: u64,
}

impl WorkQueue {
    /// Items queued and not yet run.
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// Whether the item at `item` is queued.
    pub fn is_queued(&self, item: u64) -> bool {
        item != 0 && self.queue.iter().any(|w| w.item == item)
    }

    /// Work items run so far.
    pub fn ran(&self) -> u64 {
        self.ran
    }

    /// IO_WORKITEMs allocated or initialized and not yet freed or uninitialized.
    pub fn live_io_workitems(&self) -> usize {
        self.io_items.len()
    }

    /// Whether `item` is an IO_WORKITEM allocated or initialized and not yet freed.
    pub fn is_io_workitem(&self, item: u64) -> bool {
        self.io_items.contains_key(&item)
    }
}

fn bug_check_worker(detail: String) -> KernelError {
    KernelError::bug_check(0xE4, detail)
}

/// Queues a work item (any module crate may queue guest routines this way). Queuing an item that is
/// still queued is bug check 0xE4 (WORKER_INVALID).
pub fn queue_work(k: &mut Kernel, work: QueuedWork) -> KResult<()> {
    if k.ke.work.is_queued(work.item) {
        return Err(bug_check_worker(format!(
            "work item {:#x} queued again while it is still queued",
            work.item
        )));
    }
    k.ke.work.queue.push_back(work);
    Ok(())
}

/// Runs queued work items at PASSIVE_LEVEL, in order, including items they queue, up to
/// [`MAX_WORK_ITEMS_PER_CALL`]; returns how many ran. Does nothing at DISPATCH_LEVEL or above (work
/// items need a thread; the caller must wait until the IRQL drops). A routine that returns at an IRQL
/// other than PASSIVE_LEVEL is bug check 0xE1 (WORKER_THREAD_RETURNED_AT_BAD_IRQL).
pub fn run_work_items(k: &mut Kernel) -> KResult<usize> {
    let old = current_irql(k);
    if old >= DISPATCH_LEVEL {
        return Ok(0);
    }
    let mut ran = 0;
    while let Some(work) = k.ke.work.queue.pop_front() {
        if ran == MAX_WORK_ITEMS_PER_CALL {
            tracing::warn!(target: "ica::ke", "{MAX_WORK_ITEMS_PER_CALL} work items ran in one call; the rest stay queued");
            k.ke.work.queue.push_front(work);
            break;
        }
        if work.kind == WorkKind::Ex {
            // Dequeued: List.Flink is NULL again, so the routine may queue the item once more.
            let list = work.item + k.layout.work_queue_item_list;
            k.write_ptr(list, 0)?;
        }
        // A worker thread starts at PASSIVE_LEVEL whatever the waiting thread's IRQL.
        k.m.cpu.cr8 = PASSIVE_LEVEL as u64;
        let result = k.call_guest(work.routine, &work.args);
        let after = current_irql(k);
        k.m.cpu.cr8 = old as u64;
        result?;
        k.ke.work.ran += 1;
        ran += 1;
        if after != PASSIVE_LEVEL {
            return Err(KernelError::bug_check(
                0xE1,
                format!(
                    "work item routine {} returned at IRQL {after} (must return at PASSIVE_LEVEL)",
                    k.symbolize(work.routine)
                ),
            ));
        }
    }
    Ok(ran)
}

/// Pool-free check ([`crate::ke::check_free`]): a queued item in `[addr, end)` is bug check 0xE4;
/// IO_WORKITEMs there are forgotten.
pub(crate) fn check_free(k: &mut Kernel, addr: u64, end: u64) -> KResult<()> {
    let inside = |a: u64| a >= addr && a < end;
    if let Some(w) = k.ke.work.queue.iter().find(|w| inside(w.item)) {
        return Err(bug_check_worker(format!(
            "memory at {addr:#x} freed while it holds the queued work item {:#x}",
            w.item
        )));
    }
    k.ke.work.io_items.retain(|&a, _| !inside(a));
    Ok(())
}

/// Unload check: a queued work item whose routine lies in the unloading image `[start, end)`
/// would run code that is gone: bug check 0xCE, a verifier finding naming the routine.
pub(crate) fn check_unload(k: &mut Kernel, driver: &str, start: u64, end: u64) -> KResult<()> {
    let pending =
        k.ke.work
            .queue
            .iter()
            .find(|w| w.routine >= start && w.routine < end)
            .map(|w| (w.item, w.routine));
    if let Some((item, routine)) = pending {
        let site = k.site(routine);
        return Err(verifier::stop_at(
            k,
            Rule::WorkItemPending,
            StopCode::new(0xCE, [routine, 0, 0, 0]),
            Some(site.clone()),
            format!("driver {driver} unloaded with work item {item:#x} ({site}) still queued"),
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// IO_WORKITEM

/// Size of our IO_WORKITEM: a WORK_QUEUE_ITEM, then Routine, IoObject, Context and Type, each
/// pointer-sized.
pub fn io_workitem_size(k: &Kernel) -> u64 {
    k.layout.work_queue_item_size + 4 * k.ptr_size()
}

fn io_field(k: &Kernel, item: u64, index: u64) -> u64 {
    item + k.layout.work_queue_item_size + index * k.ptr_size()
}

const FIELD_ROUTINE: u64 = 0;
const FIELD_IO_OBJECT: u64 = 1;
const FIELD_CONTEXT: u64 = 2;

fn init_io_workitem(k: &mut Kernel, item: u64, io_object: u64) -> KResult<()> {
    let size = io_workitem_size(k);
    k.m.mem.fill(item, 0, size)?;
    k.write_ptr(io_field(k, item, FIELD_IO_OBJECT), io_object)?;
    k.ke.work.io_items.insert(item, IoItem { io_object });
    Ok(())
}

/// IoSizeofWorkItem -> bytes a driver allocates for IoInitializeWorkItem.
pub fn sizeof_work_item(k: &mut Kernel) -> KResult<u32> {
    Ok(io_workitem_size(k) as u32)
}

/// IoAllocateWorkItem(DeviceObject) -> an IO_WORKITEM from pool (tag 'IoWI'), owned by the calling
/// driver's image, so the leak check at unload finds one it did not free.
pub fn allocate_work_item(k: &mut Kernel, device: u64) -> KResult<u64> {
    if device == 0 {
        return Err(KernelError::bug_check(
            0xC4,
            "IoAllocateWorkItem with a NULL device object",
        ));
    }
    let owner = k.caller_image();
    let size = io_workitem_size(k);
    let item = ex::allocate(k, size, IO_WORKITEM_TAG, owner)?;
    init_io_workitem(k, item, device)?;
    Ok(item)
}

/// IoInitializeWorkItem(IoObject, IoWorkItem): an IO_WORKITEM in memory the driver allocated
/// (IoSizeofWorkItem bytes).
pub fn initialize_work_item(k: &mut Kernel, io_object: u64, item: u64) -> KResult<()> {
    if k.ke.work.is_queued(item) {
        return Err(bug_check_worker(format!(
            "IoInitializeWorkItem of {item:#x}, which is queued"
        )));
    }
    init_io_workitem(k, item, io_object)
}

fn forget_io_workitem(k: &mut Kernel, item: u64, what: &str) -> KResult<()> {
    if k.ke.work.is_queued(item) {
        return Err(bug_check_worker(format!(
            "{what} of work item {item:#x} while it is queued"
        )));
    }
    if k.ke.work.io_items.remove(&item).is_none() {
        return Err(bug_check_worker(format!(
            "{what} of {item:#x}, which is not an IO_WORKITEM (never allocated or initialized, or already freed)"
        )));
    }
    Ok(())
}

/// IoFreeWorkItem(IoWorkItem). Freeing a queued item is bug check 0xE4.
pub fn free_work_item(k: &mut Kernel, item: u64) -> KResult<()> {
    forget_io_workitem(k, item, "IoFreeWorkItem")?;
    ex::free(k, item, Some(IO_WORKITEM_TAG))
}

/// IoUninitializeWorkItem(IoWorkItem). Uninitializing a queued item is bug check 0xE4.
pub fn uninitialize_work_item(k: &mut Kernel, item: u64) -> KResult<()> {
    forget_io_workitem(k, item, "IoUninitializeWorkItem")
}

fn queue_io(k: &mut Kernel, item: u64, routine: u64, context: u64, kind: WorkKind) -> KResult<()> {
    let Some(io) = k.ke.work.io_items.get(&item).copied() else {
        return Err(bug_check_worker(format!(
            "IoQueueWorkItem of {item:#x}, which is not an IO_WORKITEM (IoAllocateWorkItem or IoInitializeWorkItem it first)"
        )));
    };
    k.write_ptr(io_field(k, item, FIELD_ROUTINE), routine)?;
    k.write_ptr(io_field(k, item, FIELD_CONTEXT), context)?;
    let args = match kind {
        WorkKind::IoEx => vec![io.io_object, context, item],
        _ => vec![io.io_object, context],
    };
    queue_work(
        k,
        QueuedWork {
            item,
            routine,
            args,
            kind,
        },
    )
}

/// IoQueueWorkItem(IoWorkItem, WorkerRoutine, QueueType, Context): WorkerRoutine(DeviceObject,
/// Context) runs later at PASSIVE_LEVEL. All queue types share one queue.
pub fn queue_work_item(
    k: &mut Kernel,
    item: u64,
    routine: u64,
    _queue_type: u32,
    context: u64,
) -> KResult<()> {
    queue_io(k, item, routine, context, WorkKind::Io)
}

/// IoQueueWorkItemEx(IoWorkItem, WorkerRoutine, QueueType, Context): WorkerRoutine(IoObject,
/// Context, IoWorkItem).
pub fn queue_work_item_ex(
    k: &mut Kernel,
    item: u64,
    routine: u64,
    _queue_type: u32,
    context: u64,
) -> KResult<()> {
    queue_io(k, item, routine, context, WorkKind::IoEx)
}

// ---------------------------------------------------------------------------------------------
// WORK_QUEUE_ITEM

/// ExQueueWorkItem(WorkItem, QueueType): WorkItem->WorkerRoutine(WorkItem->Parameter) runs later at
/// PASSIVE_LEVEL (the WORK_QUEUE_ITEM is set up by the ExInitializeWorkItem macro).
pub fn ex_queue_work_item(k: &mut Kernel, item: u64, _queue_type: u32) -> KResult<()> {
    let l = k.layout;
    let routine = k.read_ptr(item + l.work_queue_item_worker_routine)?;
    let parameter = k.read_ptr(item + l.work_queue_item_parameter)?;
    if routine == 0 {
        return Err(bug_check_worker(format!(
            "ExQueueWorkItem of {item:#x} without a WorkerRoutine (ExInitializeWorkItem it first)"
        )));
    }
    queue_work(
        k,
        QueuedWork {
            item,
            routine,
            args: vec![parameter],
            kind: WorkKind::Ex,
        },
    )?;
    // Queued: List.Flink is non-NULL until a worker picks it up.
    k.write_ptr(item + l.work_queue_item_list, item)
}

pub(crate) static EXPORTS: &[Export] = export_table![
    stdcall IoSizeofWorkItem => sizeof_work_item();
    stdcall IoAllocateWorkItem => allocate_work_item(device_object: u64) @ irql::DISPATCH;
    stdcall IoFreeWorkItem => free_work_item(io_work_item: u64) @ irql::DISPATCH;
    stdcall IoInitializeWorkItem => initialize_work_item(io_object: u64, io_work_item: u64);
    stdcall IoUninitializeWorkItem => uninitialize_work_item(io_work_item: u64);
    stdcall IoQueueWorkItem => queue_work_item(io_work_item: u64, worker_routine: u64, queue_type: u32, context: u64) @ irql::DISPATCH;
    stdcall IoQueueWorkItemEx => queue_work_item_ex(io_work_item: u64, worker_routine: u64, queue_type: u32, context: u64) @ irql::DISPATCH;
    stdcall ExQueueWorkItem => ex_queue_work_item(work_item: u64, queue_type: u32) @ irql::DISPATCH;
];

#[cfg(test)]
mod tests {
    use dbt::Arch;

    use super::*;
    use crate::crt::test_support::Guest;

    const ARCHES: [Arch; 2] = [Arch::X86, Arch::X64];

    /// What the test routines saw: (first argument, IRQL).
    #[derive(Default)]
    struct Ran(Vec<(u64, u8)>);

    /// routine(Parameter): records it.
    fn worker(k: &mut Kernel, parameter: u64) -> KResult<()> {
        let irql = current_irql(k);
        k.extension::<Ran>().0.push((parameter, irql));
        Ok(())
    }

    /// routine(Parameter) where Parameter is its own WORK_QUEUE_ITEM: records it and queues the
    /// item again until it has run three times.
    fn requeue_worker(k: &mut Kernel, item: u64) -> KResult<()> {
        let irql = current_irql(k);
        let ran = &mut k.extension::<Ran>().0;
        ran.push((item, irql));
        if ran.iter().filter(|&&(p, _)| p == item).count() < 3 {
            ex_queue_work_item(k, item, 1)?;
        }
        Ok(())
    }

    fn raise_and_return(k: &mut Kernel, _parameter: u64) -> KResult<()> {
        k.m.cpu.cr8 = DISPATCH_LEVEL as u64;
        Ok(())
    }

    static ROUTINES: &[Export] = export_table![
        stdcall TestWorker => worker(parameter: u64);
        stdcall TestRequeueWorker => requeue_worker(parameter: u64);
        stdcall TestRaiseAndReturn => raise_and_return(parameter: u64);
    ];

    fn ran(g: &mut Guest) -> Vec<(u64, u8)> {
        std::mem::take(&mut g.k.extension::<Ran>().0)
    }

    fn work_queue_item(g: &mut Guest, routine: u64, parameter: u64) -> u64 {
        let l = g.k.layout;
        let item = g.zeroed(l.work_queue_item_size as usize);
        g.k.write_ptr(item + l.work_queue_item_worker_routine, routine)
            .unwrap();
        g.k.write_ptr(item + l.work_queue_item_parameter, parameter)
            .unwrap();
        item
    }

    #[test]
    fn work_items_run_in_order_at_passive_level_including_requeued_ones() {
        for arch in ARCHES {
            let mut g = Guest::new(arch);
            let plain = g.k.host_function(&ROUTINES[0]);
            let requeue = g.k.host_function(&ROUTINES[1]);
            let a = work_queue_item(&mut g, plain, 0x1111);
            ex_queue_work_item(&mut g.k, a, 1).unwrap();
            let err = ex_queue_work_item(&mut g.k, a, 1).unwrap_err();
            assert!(
                matches!(err, KernelError::BugCheck { code: 0xE4, .. }),
                "{err}"
            );
            let b = g.zeroed(g.k.layout.work_queue_item_size as usize);
            let l = g.k.layout;
            g.k.write_ptr(b + l.work_queue_item_worker_routine, requeue)
                .unwrap();
            g.k.write_ptr(b + l.work_queue_item_parameter, b).unwrap();
            ex_queue_work_item(&mut g.k, b, 1).unwrap();
            assert_ne!(g.k.read_ptr(b + l.work_queue_item_list).unwrap(), 0);
            assert_eq!(g.k.ke.work.queued(), 2);

            // Not at DISPATCH_LEVEL.
            crate::ke::set_irql(&mut g.k, DISPATCH_LEVEL).unwrap();
            assert_eq!(run_work_items(&mut g.k).unwrap(), 0);
            // From APC_LEVEL the routines still run at PASSIVE_LEVEL, and the IRQL comes back.
            crate::ke::set_irql(&mut g.k, 1).unwrap();
            assert_eq!(run_work_items(&mut g.k).unwrap(), 4);
            assert_eq!(current_irql(&g.k), 1);
            crate::ke::set_irql(&mut g.k, 0).unwrap();
            assert_eq!(ran(&mut g), [(0x1111, 0), (b, 0), (b, 0), (b, 0)]);
            assert_eq!(g.k.read_ptr(b + l.work_queue_item_list).unwrap(), 0);
            assert_eq!(g.k.ke.work.queued(), 0);
            assert_eq!(g.k.ke.work.ran(), 4);
        }
    }

    #[test]
    fn io_workitems_are_pool_owned_and_checked() {
        for arch in ARCHES {
            let mut g = Guest::new(arch);
            let plain = g.k.host_function(&ROUTINES[0]);
            let device = 0xD000;
            let item = allocate_work_item(&mut g.k, device).unwrap();
            assert_eq!(g.k.pool.tag_usage(IO_WORKITEM_TAG).blocks, 1);
            assert_eq!(
                g.k.pool.bytes_owned_by("host"),
                io_workitem_size(&g.k),
                "owned by the caller's image"
            );
            queue_work_item(&mut g.k, item, plain, 1, 0xC0).unwrap();
            let err = free_work_item(&mut g.k, item).unwrap_err();
            assert!(
                matches!(err, KernelError::BugCheck { code: 0xE4, .. }),
                "{err}"
            );
            let err = ex::free(&mut g.k, item, None).unwrap_err();
            assert!(
                matches!(err, KernelError::BugCheck { code: 0xE4, .. }),
                "{err}"
            );
            assert_eq!(run_work_items(&mut g.k).unwrap(), 1);
            assert_eq!(ran(&mut g), [(device, 0)]);
            free_work_item(&mut g.k, item).unwrap();
            assert_eq!(g.k.pool.tag_usage(IO_WORKITEM_TAG).blocks, 0);
            assert_eq!(g.k.ke.work.live_io_workitems(), 0);
            assert!(free_work_item(&mut g.k, item).is_err(), "double free");
            assert!(queue_work_item(&mut g.k, item, plain, 1, 0).is_err());

            let raise = g.k.host_function(&ROUTINES[2]);
            let bad = work_queue_item(&mut g, raise, 0);
            ex_queue_work_item(&mut g.k, bad, 1).unwrap();
            let err = run_work_items(&mut g.k).unwrap_err();
            assert!(
                matches!(err, KernelError::BugCheck { code: 0xE1, .. }),
                "{err}"
            );
            assert_eq!(current_irql(&g.k), 0, "the worker's IRQL does not leak");
        }
    }

    #[test]
    fn a_wait_runs_the_work_item_that_satisfies_it() {
        for arch in ARCHES {
            let mut g = Guest::new(arch);
            let event = g.zeroed(g.k.layout.kevent_size as usize);
            crate::ke::initialize_event(&mut g.k, event, 0, false).unwrap();
            // The "routine" is KeSetEvent's own thunk: KeSetEvent(Event, Increment, Wait).
            let set_event = g.k.bind_import("ntoskrnl.exe", "KeSetEvent");
            queue_work(
                &mut g.k,
                QueuedWork {
                    item: 0,
                    routine: set_event,
                    args: vec![event, 0, 0],
                    kind: WorkKind::Host,
                },
            )
            .unwrap();
            assert_eq!(
                crate::ke::wait_for_single_object(&mut g.k, event, 0, 0, false, 0).unwrap(),
                crate::status::STATUS_SUCCESS
            );
            assert_eq!(g.k.ke.work.ran(), 1);
        }
    }
}
