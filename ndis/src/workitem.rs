//! NDIS work items on the kernel's work items ([`ntoskrnl::workitem`]): NDIS 5 NdisScheduleWorkItem
//! of a driver's NDIS_WORK_ITEM, and NDIS I/O work items (NdisAllocateIoWorkItem / NdisQueueIoWorkItem /
//! NdisFreeIoWorkItem) on the
//! kernel's work items ([`ntoskrnl::workitem`]): an NDIS work item is an IO_WORKITEM allocated for
//! the NDIS handle, charged to the calling image; a queued one runs
//! WorkItemRoutine(WorkItemContext, NdisIoWorkItemHandle) at PASSIVE_LEVEL when the kernel runs
//! its work items (the host loop, or a wait that would block). Queuing one that is still queued,
//! freeing one that is queued or not a work item, and a routine that returns at raised IRQL are
//! bug checks, as for IO_WORKITEMs.

use ntoskrnl::export::Export;
use ntoskrnl::workitem::{self, QueuedWork, WorkKind};
use ntoskrnl::{export_table, KResult, Kernel, KernelError};

use crate::{NdisState, NdisStatus, NDIS_STATUS_FAILURE, NDIS_STATUS_SUCCESS};

/// NdisAllocateIoWorkItem(NdisObjectHandle) -> an NDIS_HANDLE for a work item, or NULL when the
/// handle is not a miniport adapter or miniport driver handle.
pub fn allocate_io_work_item(k: &mut Kernel, handle: u64) -> KResult<u64> {
    let state = k.extension::<NdisState>();
    if handle == 0 || !(state.adapters.contains_key(&handle) || state.drivers.contains_key(&handle))
    {
        tracing::warn!(target: "ica::ndis", "NdisAllocateIoWorkItem for {handle:#x}, which is not an NDIS handle");
        return Ok(0);
    }
    workitem::allocate_work_item(k, handle)
}

/// NdisQueueIoWorkItem(NdisIoWorkItemHandle, Routine, WorkItemContext): Routine(WorkItemContext,
/// NdisIoWorkItemHandle) runs later at PASSIVE_LEVEL. A NULL handle queues nothing; a handle that
/// is not a live work item is bug check 0xE4 (WORKER_INVALID).
pub fn queue_io_work_item(k: &mut Kernel, item: u64, routine: u64, context: u64) -> KResult<()> {
    if item == 0 || routine == 0 {
        tracing::warn!(target: "ica::ndis", "NdisQueueIoWorkItem({item:#x}, {routine:#x}): no work item or routine");
        return Ok(());
    }
    if !k.ke.work.is_io_workitem(item) {
        return Err(KernelError::bug_check(
            0xE4,
            format!("NdisQueueIoWorkItem of {item:#x}, which is not a work item (NdisAllocateIoWorkItem it first; freed?)"),
        ));
    }
    workitem::queue_work(
        k,
        QueuedWork {
            item,
            routine,
            args: vec![context, item],
            kind: WorkKind::Host,
        },
    )
}

/// NdisFreeIoWorkItem(NdisIoWorkItemHandle). A NULL handle frees nothing.
pub fn free_io_work_item(k: &mut Kernel, item: u64) -> KResult<()> {
    if item == 0 {
        tracing::warn!(target: "ica::ndis", "NdisFreeIoWorkItem(NULL)");
        return Ok(());
    }
    workitem::free_work_item(k, item)
}

/// NdisScheduleWorkItem(WorkItem) (NDIS 5): WorkItem->Routine(WorkItem, WorkItem->Context) runs
/// later at PASSIVE_LEVEL on a system worker thread, like an I/O work item. The NDIS_WORK_ITEM
/// belongs to the driver (NdisInitializeWorkItem is a header macro filling it); scheduling it
/// again while it is queued is bug check 0xE4.
pub fn schedule_work_item(k: &mut Kernel, item: u64) -> KResult<NdisStatus> {
    if item == 0 {
        return Ok(NDIS_STATUS_FAILURE);
    }
    let context = k.read_ptr(item)?;
    let routine = k.read_ptr(item + k.ptr_size())?;
    if routine == 0 {
        tracing::warn!(target: "ica::ndis", "NdisScheduleWorkItem({item:#x}): no routine");
        return Ok(NDIS_STATUS_FAILURE);
    }
    workitem::queue_work(
        k,
        QueuedWork {
            item,
            routine,
            args: vec![item, context],
            kind: WorkKind::Host,
        },
    )?;
    Ok(NDIS_STATUS_SUCCESS)
}

pub(crate) static EXPORTS: &[Export] = export_table![
    stdcall NdisAllocateIoWorkItem => allocate_io_work_item(ndis_object_handle: u64);
    stdcall NdisQueueIoWorkItem => queue_io_work_item(ndis_io_work_item_handle: u64, routine: u64, work_item_context: u64);
    stdcall NdisFreeIoWorkItem => free_io_work_item(ndis_io_work_item_handle: u64);
    stdcall NdisScheduleWorkItem => schedule_work_item(work_item: u64);
];
