//! NDIS spin locks (NDIS_SPIN_LOCK = { KSPIN_LOCK SpinLock; KIRQL OldIrql; }) on the ntoskrnl
//! spin-lock model, and the NDIS clock helpers.

use ntoskrnl::export::Export;
use ntoskrnl::{export_table, ke, KResult, Kernel};

/// Offset of NDIS_SPIN_LOCK.OldIrql.
fn old_irql_offset(k: &Kernel) -> u64 {
    crate::layout(k).spin_lock_old_irql
}

/// NdisAllocateSpinLock(SpinLock): initializes the KSPIN_LOCK.
pub fn allocate_spin_lock(k: &mut Kernel, lock: u64) -> KResult<()> {
    ke::initialize_spin_lock(k, lock)?;
    let at = lock + old_irql_offset(k);
    k.m.mem.write_u8(at, 0)?;
    Ok(())
}

/// NdisFreeSpinLock(SpinLock): nothing to release.
pub fn free_spin_lock(_k: &mut Kernel, _lock: u64) -> KResult<()> {
    Ok(())
}

/// NdisAcquireSpinLock(SpinLock): raises to DISPATCH_LEVEL, saving the old IRQL in OldIrql.
pub fn acquire_spin_lock(k: &mut Kernel, lock: u64) -> KResult<()> {
    let old = ke::acquire_spin_lock(k, lock)?;
    let at = lock + old_irql_offset(k);
    k.m.mem.write_u8(at, old)?;
    Ok(())
}

/// NdisReleaseSpinLock(SpinLock): releases and returns to the IRQL saved in OldIrql.
pub fn release_spin_lock(k: &mut Kernel, lock: u64) -> KResult<()> {
    let old = k.m.mem.read_u8(lock + old_irql_offset(k))?;
    ke::release_spin_lock(k, lock, old)
}

/// NdisDprAcquireSpinLock(SpinLock): the caller runs at DISPATCH_LEVEL already.
pub fn dpr_acquire_spin_lock(k: &mut Kernel, lock: u64) -> KResult<()> {
    ke::acquire_spin_lock_at_dpc_level(k, lock)
}

/// NdisDprReleaseSpinLock(SpinLock).
pub fn dpr_release_spin_lock(k: &mut Kernel, lock: u64) -> KResult<()> {
    ke::release_spin_lock_from_dpc_level(k, lock)
}

pub(crate) static EXPORTS: &[Export] = export_table![
    stdcall NdisAllocateSpinLock => allocate_spin_lock(spin_lock: u64);
    stdcall NdisFreeSpinLock => free_spin_lock(spin_lock: u64);
    stdcall NdisAcquireSpinLock => acquire_spin_lock(spin_lock: u64);
    stdcall NdisReleaseSpinLock => release_spin_lock(spin_lock: u64);
    stdcall NdisDprAcquireSpinLock => dpr_acquire_spin_lock(spin_lock: u64);
    stdcall NdisDprReleaseSpinLock => dpr_release_spin_lock(spin_lock: u64);
    stdcall NdisStallExecution => ke::stall_execution_processor(microseconds_to_stall: u32);
    stdcall NdisGetCurrentSystemTime => ke::query_system_time(current_time: u64);
];
