//! hal.dll: the hardware abstraction layer entry points drivers import. On x86 the IRQL and
//! spinlock primitives live here (fastcall); port I/O, stalls and the performance counter on both.
//! Implementations of shared kernel mechanisms come from `ntoskrnl`.

use ntoskrnl::export::Export;
use ntoskrnl::verifier::irql;
use ntoskrnl::{export_table, ke, KResult, Kernel, Module};

mod port;

/// hal.dll as drivers import it.
pub static MODULE: Module = Module {
    name: "hal.dll",
    tables: &[IRQL, port::EXPORTS, CLOCK],
    data: &[],
};

static IRQL: &[Export] = export_table![
    stdcall KeGetCurrentIrql => ke::get_current_irql();
    fastcall KfRaiseIrql => ke::raise_irql(new_irql: u8);
    fastcall KfLowerIrql => ke::lower_irql(new_irql: u8);
    stdcall KeRaiseIrqlToDpcLevel => ke::raise_irql_to_dpc_level() @ irql::KE_DISPATCH_LTE;
    stdcall KeRaiseIrqlToSynchLevel => raise_irql_to_synch_level();
    fastcall KfAcquireSpinLock => ke::acquire_spin_lock(spin_lock: u64) @ irql::SPIN_LOCK_ACQUIRE;
    fastcall KfReleaseSpinLock => ke::release_spin_lock(spin_lock: u64, new_irql: u8);
    fastcall KeAcquireSpinLockRaiseToSynch => acquire_spin_lock_raise_to_synch(spin_lock: u64);
    // The pre-fastcall entry points x86 hal.dll still exports for old binaries (on x64 the IRQL
    // is cr8, written inline, and spin locks are ntoskrnl's).
    [x86] stdcall KeLowerIrql => ke::lower_irql(new_irql: u8);
    [x86] stdcall KeReleaseSpinLock => ke::release_spin_lock(spin_lock: u64, new_irql: u8);
    // Fast mutexes raise the IRQL, so x86 hal.dll exports them too (forwarded to ntoskrnl.exe,
    // which exports them on both architectures, since Windows 8).
    [x86] fastcall ExAcquireFastMutex => ke::acquire_fast_mutex(fast_mutex: u64) @ irql::APC;
    [x86] fastcall ExReleaseFastMutex => ke::release_fast_mutex(fast_mutex: u64) @ irql::APC;
    [x86] fastcall ExTryToAcquireFastMutex => ke::try_to_acquire_fast_mutex(fast_mutex: u64) @ irql::APC;
];

static CLOCK: &[Export] = export_table![
    stdcall KeStallExecutionProcessor => ke::stall_execution_processor(micro_seconds: u32);
    stdcall KeQueryPerformanceCounter => ke::query_performance_counter(performance_frequency: u64);
];

/// SYNCH_LEVEL on a uniprocessor x86 (DISPATCH_LEVEL there; 12 on multiprocessor x64 systems).
const SYNCH_LEVEL: u8 = ke::DISPATCH_LEVEL;

fn raise_irql_to_synch_level(k: &mut Kernel) -> KResult<u8> {
    ke::raise_irql(k, SYNCH_LEVEL)
}

fn acquire_spin_lock_raise_to_synch(k: &mut Kernel, lock: u64) -> KResult<u8> {
    let old = ke::raise_irql(k, SYNCH_LEVEL)?;
    ke::acquire_spin_lock_at_dpc_level(k, lock)?;
    Ok(old)
}

#[cfg(test)]
mod tests {
    use ntoskrnl::dbt::Arch;
    use ntoskrnl::Kernel;

    #[test]
    fn x86_only_entry_points_bind_on_x86_only() {
        for arch in [Arch::X86, Arch::X64] {
            let k = Kernel::new(arch, &[&ntoskrnl::MODULE, &super::MODULE]).unwrap();
            for name in ["KeLowerIrql", "KeReleaseSpinLock", "ExAcquireFastMutex"] {
                assert_eq!(
                    k.find_export("HAL.DLL", name).is_some(),
                    arch == Arch::X86,
                    "hal.dll!{name} on {}",
                    arch.name()
                );
            }
            assert!(k
                .find_export("ntoskrnl.exe", "ExAcquireFastMutex")
                .is_some());
        }
    }
}
