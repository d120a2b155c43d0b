//! NDIS synchronization and system services on the ntoskrnl models: spin locks
//! (NDIS_SPIN_LOCK = { KSPIN_LOCK SpinLock; KIRQL OldIrql; }), read/write locks (one processor:
//! acquiring raises to DISPATCH_LEVEL and the lock state keeps the old IRQL), events
//! (NDIS_EVENT = { KEVENT Event; }), interlocked helpers, sleeping and the clocks, the version
//! query and the processors: there is one, processor 0 of group 0 (NdisSystemProcessorCount, and
//! the NDIS 6.20 processor-group and RSS queries).

use std::time::Duration;

use ntoskrnl::export::Export;
use ntoskrnl::verifier::irql;
use ntoskrnl::{ex, export_table, interlocked, ke, KResult, Kernel, KernelError};

use crate::resources::NDIS_STATUS_BUFFER_TOO_SHORT;
use crate::{NdisStatus, NDIS_STATUS_INVALID_PARAMETER, NDIS_STATUS_SUCCESS};

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
    stdcall NdisAcquireSpinLock => acquire_spin_lock(spin_lock: u64) @ irql::SPIN_LOCK_ACQUIRE;
    stdcall NdisReleaseSpinLock => release_spin_lock(spin_lock: u64);
    stdcall NdisDprAcquireSpinLock => dpr_acquire_spin_lock(spin_lock: u64);
    stdcall NdisDprReleaseSpinLock => dpr_release_spin_lock(spin_lock: u64);
    stdcall NdisInitializeReadWriteLock => initialize_read_write_lock(lock: u64);
    stdcall NdisAcquireReadWriteLock => acquire_read_write_lock(lock: u64, write: bool, lock_state: u64);
    stdcall NdisDprAcquireReadWriteLock => dpr_acquire_read_write_lock(lock: u64, write: bool, lock_state: u64);
    stdcall NdisReleaseReadWriteLock => release_read_write_lock(lock: u64, lock_state: u64);
    stdcall NdisDprReleaseReadWriteLock => dpr_release_read_write_lock(lock: u64, lock_state: u64);
    stdcall NdisAllocateRWLock => allocate_rw_lock(ndis_handle: u64);
    stdcall NdisFreeRWLock => free_rw_lock(lock: u64);
    stdcall NdisAcquireRWLockRead => acquire_rw_lock(lock: u64, lock_state: u64, flags: u8);
    stdcall NdisAcquireRWLockWrite => acquire_rw_lock(lock: u64, lock_state: u64, flags: u8);
    stdcall NdisReleaseRWLock => release_rw_lock(lock: u64, lock_state: u64);
    stdcall NdisInitializeEvent => initialize_event(event: u64);
    stdcall NdisSetEvent => set_event(event: u64);
    stdcall NdisResetEvent => reset_event(event: u64);
    stdcall NdisWaitEvent => wait_event(event: u64, ms_to_wait: u32) @ irql::PASSIVE;
    stdcall NdisInterlockedIncrement => interlocked::increment(addend: u64);
    stdcall NdisInterlockedDecrement => interlocked::decrement(addend: u64);
    stdcall NdisInterlockedInsertHeadList => interlocked_insert_head_list(list_head: u64, list_entry: u64, spin_lock: u64);
    stdcall NdisInterlockedInsertTailList => interlocked_insert_tail_list(list_head: u64, list_entry: u64, spin_lock: u64);
    stdcall NdisInterlockedRemoveHeadList => interlocked_remove_head_list(list_head: u64, spin_lock: u64);
    stdcall NdisMSleep => sleep(microseconds_to_sleep: u32) @ irql::PASSIVE;
    stdcall NdisGetSystemUpTime => get_system_up_time(system_up_time: u64);
    stdcall NdisGetVersion => get_version();
    stdcall NdisSystemProcessorCount => system_processor_count();
    stdcall NdisGetCurrentProcessorCounts => get_current_processor_counts(idle_count: u64, kernel_and_user: u64, index: u64);
    stdcall NdisGroupActiveProcessorCount => group_active_processor_count(group: u16);
    stdcall NdisProcessorNumberToIndex => processor_number_to_index(proc_num: u32);
    stdcall NdisGetRssProcessorInformation => get_rss_processor_information(ndis_handle: u64, rss_processor_info: u64, size: u64);
    stdcall NdisStallExecution => ke::stall_execution_processor(microseconds_to_stall: u32);
    stdcall NdisGetCurrentSystemTime => ke::query_system_time(current_time: u64);
];

/// NdisInitializeReadWriteLock(Lock): the lock itself holds no state on one processor.
pub fn initialize_read_write_lock(k: &mut Kernel, lock: u64) -> KResult<()> {
    let size = k.ptr_size() * 2;
    Ok(k.m.mem.fill(lock, 0, size)?)
}

/// LOCK_STATE = { USHORT LockState; KIRQL OldIrql; }: the old IRQL is at offset 2.
const LOCK_STATE_OLD_IRQL: u64 = 2;

/// NdisAcquireReadWriteLock(Lock, fWrite, LockState): raises to DISPATCH_LEVEL.
pub fn acquire_read_write_lock(k: &mut Kernel, _lock: u64, write: bool, state: u64) -> KResult<()> {
    let old = ke::raise_irql(k, ke::DISPATCH_LEVEL)?;
    k.m.mem.write_u16(state, if write { 2 } else { 1 })?;
    Ok(k.m.mem.write_u8(state + LOCK_STATE_OLD_IRQL, old)?)
}

/// NdisDprAcquireReadWriteLock(Lock, fWrite, LockState): caller is at DISPATCH_LEVEL already.
pub fn dpr_acquire_read_write_lock(
    k: &mut Kernel,
    _lock: u64,
    write: bool,
    state: u64,
) -> KResult<()> {
    k.m.mem.write_u16(state, if write { 2 } else { 1 })?;
    let irql = ke::current_irql(k);
    Ok(k.m.mem.write_u8(state + LOCK_STATE_OLD_IRQL, irql)?)
}

/// NdisReleaseReadWriteLock(Lock, LockState): back to the IRQL of the acquire.
pub fn release_read_write_lock(k: &mut Kernel, _lock: u64, state: u64) -> KResult<()> {
    let old = k.m.mem.read_u8(state + LOCK_STATE_OLD_IRQL)?;
    k.m.mem.write_u16(state, 0)?;
    ke::lower_irql(k, old)
}

/// NdisDprReleaseReadWriteLock(Lock, LockState).
pub fn dpr_release_read_write_lock(k: &mut Kernel, _lock: u64, state: u64) -> KResult<()> {
    Ok(k.m.mem.write_u16(state, 0)?)
}

/// Pool tag of NDIS_RW_LOCK_EX objects.
const RW_LOCK_TAG: u32 = u32::from_le_bytes(*b"NDrw");

/// NdisAllocateRWLock(NdisHandle) -> PNDIS_RW_LOCK_EX (opaque to the driver).
pub fn allocate_rw_lock(k: &mut Kernel, _handle: u64) -> KResult<u64> {
    let owner = k.caller_image();
    ex::allocate(k, 16, RW_LOCK_TAG, owner)
}

/// NdisFreeRWLock(Lock).
pub fn free_rw_lock(k: &mut Kernel, lock: u64) -> KResult<()> {
    ex::free(k, lock, Some(RW_LOCK_TAG))
}

/// LOCK_STATE_EX = { KIRQL OldIrql; UCHAR LockState; UCHAR Flags; }.
const NDIS_RWL_AT_DISPATCH_LEVEL: u8 = 1;

/// NdisAcquireRWLockRead / NdisAcquireRWLockWrite(Lock, LockState, Flags).
pub fn acquire_rw_lock(k: &mut Kernel, _lock: u64, state: u64, flags: u8) -> KResult<()> {
    let old = if flags & NDIS_RWL_AT_DISPATCH_LEVEL != 0 {
        ke::current_irql(k)
    } else {
        ke::raise_irql(k, ke::DISPATCH_LEVEL)?
    };
    k.m.mem.write_u8(state, old)?;
    k.m.mem.write_u8(state + 1, 1)?;
    Ok(k.m.mem.write_u8(state + 2, flags)?)
}

/// NdisReleaseRWLock(Lock, LockState).
pub fn release_rw_lock(k: &mut Kernel, _lock: u64, state: u64) -> KResult<()> {
    let old = k.m.mem.read_u8(state)?;
    let flags = k.m.mem.read_u8(state + 2)?;
    k.m.mem.write_u8(state + 1, 0)?;
    if flags & NDIS_RWL_AT_DISPATCH_LEVEL != 0 {
        return Ok(());
    }
    ke::lower_irql(k, old)
}

/// NdisInitializeEvent(Event): a notification event, not signaled.
pub fn initialize_event(k: &mut Kernel, event: u64) -> KResult<()> {
    ke::initialize_event(k, event, 0, false)
}

/// NdisSetEvent(Event).
pub fn set_event(k: &mut Kernel, event: u64) -> KResult<()> {
    ke::set_event(k, event, 0, false).map(drop)
}

/// NdisResetEvent(Event).
pub fn reset_event(k: &mut Kernel, event: u64) -> KResult<()> {
    ke::reset_event(k, event).map(drop)
}

/// NdisWaitEvent(Event, MsToWait) -> TRUE if signaled (0 ms: wait forever).
pub fn wait_event(k: &mut Kernel, event: u64, ms: u32) -> KResult<bool> {
    let timeout = if ms == 0 {
        0
    } else {
        let t = ex::allocate(k, 8, u32::from_le_bytes(*b"NDwt"), crate::NDIS_OWNER.into())?;
        k.m.mem.write_u64(t, (-(i64::from(ms) * 10_000)) as u64)?;
        t
    };
    let r = ke::wait_for_single_object(k, event, 0, 0, false, timeout);
    if timeout != 0 {
        ex::free(k, timeout, None)?;
    }
    Ok(r? == 0)
}

/// The KSPIN_LOCK inside an NDIS_SPIN_LOCK.
fn spin_lock_of(k: &Kernel, ndis_lock: u64) -> u64 {
    ndis_lock + crate::layout(k).spin_lock_spin_lock
}

/// NdisInterlockedInsertHeadList(ListHead, ListEntry, SpinLock) -> previous first entry.
pub fn interlocked_insert_head_list(
    k: &mut Kernel,
    head: u64,
    entry: u64,
    lock: u64,
) -> KResult<u64> {
    let lock = spin_lock_of(k, lock);
    interlocked::ex_insert_head_list(k, head, entry, lock)
}

/// NdisInterlockedInsertTailList(ListHead, ListEntry, SpinLock) -> previous last entry.
pub fn interlocked_insert_tail_list(
    k: &mut Kernel,
    head: u64,
    entry: u64,
    lock: u64,
) -> KResult<u64> {
    let lock = spin_lock_of(k, lock);
    interlocked::ex_insert_tail_list(k, head, entry, lock)
}

/// NdisInterlockedRemoveHeadList(ListHead, SpinLock) -> the removed entry or NULL.
pub fn interlocked_remove_head_list(k: &mut Kernel, head: u64, lock: u64) -> KResult<u64> {
    let lock = spin_lock_of(k, lock);
    interlocked::ex_remove_head_list(k, head, lock)
}

/// NdisMSleep(MicrosecondsToSleep): PASSIVE_LEVEL only (Windows bug-checks above it).
pub fn sleep(k: &mut Kernel, micros: u32) -> KResult<()> {
    let irql = ke::current_irql(k);
    if irql > ke::PASSIVE_LEVEL {
        return Err(KernelError::bug_check(
            0x4A,
            format!("NdisMSleep at IRQL {irql} (PASSIVE_LEVEL only)"),
        ));
    }
    std::thread::sleep(Duration::from_micros(u64::from(micros)));
    Ok(())
}

/// NdisGetSystemUpTime(SystemUpTime): milliseconds since boot (kernel creation).
pub fn get_system_up_time(k: &mut Kernel, out: u64) -> KResult<()> {
    let ms = k.ke.interrupt_time() / 10_000;
    Ok(k.m.mem.write_u32(out, ms as u32)?)
}

/// NDIS 5.1 and 6.0 as NdisGetVersion encodes them (major in the high word).
const NDIS_VERSION_51: u32 = 0x0005_0001;
const NDIS_VERSION_60: u32 = 0x0006_0000;

/// The NDIS version the calling driver sees: 6.0 for a driver that registered an NDIS 6 miniport,
/// 5.1 for everyone else.
pub fn version_for_caller(k: &mut Kernel) -> u32 {
    let image = k.caller_image();
    if crate::ndis6::is_ndis6_image(k, &image) {
        NDIS_VERSION_60
    } else {
        NDIS_VERSION_51
    }
}

/// NdisGetVersion(): the NDIS version this host implements for the caller (see
/// [`version_for_caller`]).
pub fn get_version(k: &mut Kernel) -> KResult<u32> {
    Ok(version_for_caller(k))
}

/// NdisSystemProcessorCount(): the guest has one processor.
pub fn system_processor_count(_k: &mut Kernel) -> KResult<u8> {
    Ok(1)
}

/// NdisGetCurrentProcessorCounts(pIdleCount, pKernelAndUser, pIndex): the one processor's idle
/// and busy clock ticks since boot (busy: the time spent running the drivers and serving their
/// calls) and its index, 0.
pub fn get_current_processor_counts(
    k: &mut Kernel,
    idle_out: u64,
    busy_out: u64,
    index_out: u64,
) -> KResult<()> {
    let increment = u64::from(ke::query_time_increment(k)?);
    let total = k.ke.interrupt_time() / increment;
    let busy = (k.stats.guest_nanos + k.stats.host_nanos) / 100 / increment;
    k.m.mem
        .write_u32(idle_out, total.saturating_sub(busy) as u32)?;
    k.m.mem.write_u32(busy_out, busy as u32)?;
    Ok(k.m.mem.write_u32(index_out, 0)?)
}

/// ALL_PROCESSOR_GROUPS.
const ALL_PROCESSOR_GROUPS: u16 = 0xFFFF;
/// INVALID_PROCESSOR_INDEX.
const INVALID_PROCESSOR_INDEX: u32 = 0xFFFF_FFFF;
/// NDIS_OBJECT_TYPE_RSS_PROCESSOR_INFO.
const OBJECT_TYPE_RSS_PROCESSOR_INFO: u8 = 0xB1;
/// NDIS_RSS_PROCESSOR_INFO_REVISION_2 (NDIS 6.30: with RssMaxProcessor and RssProfile).
const RSS_PROCESSOR_INFO_REVISION_2: u8 = 2;
/// NdisRssProfileClosest (NDIS_RSS_PROFILE), the default RSS profile; the member is reserved.
const RSS_PROFILE_CLOSEST: u32 = 1;

/// NdisGroupActiveProcessorCount(Group): 1 for group 0 and ALL_PROCESSOR_GROUPS, else 0.
pub fn group_active_processor_count(_k: &mut Kernel, group: u16) -> KResult<u32> {
    Ok(u32::from(group == 0 || group == ALL_PROCESSOR_GROUPS))
}

/// NdisProcessorNumberToIndex(ProcNum) -> the processor's system-wide index: 0 for processor 0 of
/// group 0, INVALID_PROCESSOR_INDEX for any other. PROCESSOR_NUMBER is passed by value.
pub fn processor_number_to_index(k: &mut Kernel, number: u32) -> KResult<u32> {
    let l = crate::layout6(k);
    let field = |offset: u64, bytes: u64| (number >> (offset * 8)) & ((1u32 << (bytes * 8)) - 1);
    let group = field(l.processor_number_group, 2);
    let processor = field(l.processor_number_number, 1);
    Ok(if group == 0 && processor == 0 {
        0
    } else {
        INVALID_PROCESSOR_INDEX
    })
}

/// NdisGetRssProcessorInformation(NdisHandle, RssProcessorInfo, Size): an NDIS_RSS_PROCESSOR_INFO
/// (revision 2) followed by its one NDIS_RSS_PROCESSOR (processor 0 of group 0), and in *Size the
/// bytes written; NDIS_STATUS_BUFFER_TOO_SHORT with the bytes needed in *Size when the buffer is
/// NULL or smaller. NDIS_STATUS_INVALID_PARAMETER for a handle that is not an adapter's or a NULL
/// or bad Size.
pub fn get_rss_processor_information(
    k: &mut Kernel,
    handle: u64,
    info: u64,
    size: u64,
) -> KResult<NdisStatus> {
    const CALL: &str = "NdisGetRssProcessorInformation";
    if crate::miniport::adapter_mut(k, handle).is_none() || size == 0 {
        tracing::warn!(target: "ica::ndis", "{CALL}({handle:#x}, size at {size:#x}): not an adapter handle, or no Size");
        return Ok(NDIS_STATUS_INVALID_PARAMETER);
    }
    let fill = |k: &mut Kernel| -> KResult<NdisStatus> {
        let l = crate::layout6(k);
        let array = l.rss_processor_info_size;
        let needed = array + l.rss_processor_size;
        let given = k.read_ptr(size)?;
        k.write_ptr(size, needed)?;
        if info == 0 || given < needed {
            return Ok(NDIS_STATUS_BUFFER_TOO_SHORT);
        }
        k.m.mem.fill(info, 0, needed)?;
        k.m.mem
            .write_u8(info + l.object_header_type, OBJECT_TYPE_RSS_PROCESSOR_INFO)?;
        k.m.mem.write_u8(
            info + l.object_header_revision,
            RSS_PROCESSOR_INFO_REVISION_2,
        )?;
        k.m.mem
            .write_u16(info + l.object_header_size_field, array as u16)?;
        // RssBaseProcessor, RssMaxProcessor and the entry's ProcNum stay {0, 0}, as zeroed.
        k.m.mem
            .write_u32(info + l.rss_processor_info_max_num_rss_processors, 1)?;
        k.m.mem.write_u32(
            info + l.rss_processor_info_rss_processor_array_offset,
            array as u32,
        )?;
        k.m.mem
            .write_u32(info + l.rss_processor_info_rss_processor_count, 1)?;
        k.m.mem.write_u32(
            info + l.rss_processor_info_rss_processor_entry_size,
            l.rss_processor_size as u32,
        )?;
        k.m.mem
            .write_u32(info + l.rss_processor_info_rss_profile, RSS_PROFILE_CLOSEST)?;
        Ok(NDIS_STATUS_SUCCESS)
    };
    crate::nbl::no_fault(CALL, NDIS_STATUS_INVALID_PARAMETER, fill(k))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{kernel, ARCHES};

    #[test]
    fn one_processor_in_group_zero() {
        for arch in ARCHES {
            let mut k = kernel(arch);
            assert_eq!(group_active_processor_count(&mut k, 0).unwrap(), 1);
            assert_eq!(
                group_active_processor_count(&mut k, ALL_PROCESSOR_GROUPS).unwrap(),
                1
            );
            assert_eq!(group_active_processor_count(&mut k, 1).unwrap(), 0);
            // PROCESSOR_NUMBER by value: Group in the low 16 bits, Number in the next byte.
            assert_eq!(processor_number_to_index(&mut k, 0).unwrap(), 0);
            assert_eq!(
                processor_number_to_index(&mut k, 0x0001_0000).unwrap(),
                INVALID_PROCESSOR_INDEX
            );
            assert_eq!(
                processor_number_to_index(&mut k, 0x0000_0001).unwrap(),
                INVALID_PROCESSOR_INDEX
            );
            // Reserved (the top byte) does not matter.
            assert_eq!(processor_number_to_index(&mut k, 0xAB00_0000).unwrap(), 0);
            // Not an adapter: a clean status.
            assert_eq!(
                get_rss_processor_information(&mut k, 0xADA, 0, 0x100).unwrap(),
                NDIS_STATUS_INVALID_PARAMETER
            );
        }
    }
}
