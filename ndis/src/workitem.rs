//! NDIS I/O work items (NdisAllocateIoWorkItem / NdisQueueIoWorkItem / NdisFreeIoWorkItem) on the
//! kernel's work items ([`ntoskrnl::workitem`]): an NDIS work item is an IO_WORKITEM allocated for
//! the NDIS handle, charged to the calling image; a queued one runs
//! WorkItemRoutine(WorkItemContext, NdisIoWorkItemHandle) at PASSIVE_LEVEL when the kernel runs
//! its work items (the host loop, or a wait that would block). Queuing one that is still queued,
//! freeing one that is queued or not a work item, and a routine that returns at raised IRQL are
//! bug checks, as for IO_WORKITEMs.

use ntoskrnl::export::Export;
use ntoskrnl::workitem::{self, QueuedWork, WorkKind};
use ntoskrnl::{export_table, KResult, Kernel, KernelError};

use crate::NdisState;

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

pub(crate) static EXPORTS: &[Export] = export_table![
    stdcall NdisAllocateIoWorkItem => allocate_io_work_item(ndis_object_handle: u64);
    stdcall NdisQueueIoWorkItem => queue_io_work_item(ndis_io_work_item_handle: u64, routine: u64, work_item_context: u64);
    stdcall NdisFreeIoWorkItem => free_io_work_item(ndis_io_work_item_handle: u64);
];
