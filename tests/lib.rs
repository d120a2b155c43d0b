//! Shared helpers for the integration tests: where the committed test drivers are, the IOCTL codes
//! they understand (mirroring `drivers/common.h`), and rendering of IRP traces for snapshots.

use std::path::PathBuf;

use dbt::Arch;
use loader::DriverHost;
use ntoskrnl::io::IrpEvent;

pub mod netns;
pub mod nic;

/// Both architectures every driver test runs on.
pub const ARCHES: [Arch; 2] = [Arch::X86, Arch::X64];

/// IOCTL codes of the test drivers (`tests/drivers/common.h`).
pub mod ioctl {
    /// ioctl.sys, METHOD_BUFFERED: output = input reversed.
    pub const REVERSE: u32 = 0x0022_2000;
    /// ioctl.sys, METHOD_IN_DIRECT: Information = count of bytes in the MDL buffer equal to input[0].
    pub const COUNT: u32 = 0x0022_2005;
    /// ioctl.sys, METHOD_OUT_DIRECT: fills the MDL buffer with (seed + i * 7) as bytes.
    pub const FILL: u32 = 0x0022_200A;
    /// ioctl.sys, METHOD_NEITHER: two ULONGs in, their 64-bit product out.
    pub const MULTIPLY: u32 = 0x0022_200F;
    /// ioctl.sys, METHOD_BUFFERED: in-driver self test, ICA_SELFTEST_RESULT out.
    pub const SELFTEST: u32 = 0x0022_2010;
    /// function.sys: ULONG x -> x + 1000 (x + 1001 through filter.sys).
    pub const ADD: u32 = 0x0022_2400;
    /// unknownimport.sys: calls an import nobody implements.
    pub const CALL_UNKNOWN: u32 = 0x0022_2800;
    /// unknownimport.sys and nullderef.sys: succeeds, does nothing.
    pub const PING: u32 = 0x0022_2804;
    /// nullderef.sys: reads through a NULL pointer.
    pub const NULL_DEREF: u32 = 0x0022_2C00;
}

/// IOCTL codes of sins.sys, one sin each (`tests/drivers/common.h`; the function committing it in
/// the comment).
pub mod sin {
    /// SinWaitAtDispatch: KeWaitForSingleObject with a 10 ms timeout at DISPATCH_LEVEL.
    pub const WAIT_AT_DISPATCH: u32 = 0x0022_3400;
    /// SinPassiveAtDispatch: ZwClose under a spin lock.
    pub const PASSIVE_AT_DISPATCH: u32 = 0x0022_3404;
    /// SinReleaseNotHeld: releases a spin lock nobody holds.
    pub const RELEASE_NOT_HELD: u32 = 0x0022_3408;
    /// SinAcquireTwice: acquires the spin lock it holds.
    pub const ACQUIRE_TWICE: u32 = 0x0022_340C;
    /// SinReturnHoldingLock: the dispatch routine returns with a spin lock held.
    pub const RETURN_HOLDING_LOCK: u32 = 0x0022_3410;
    /// SinOverrun: writes 4 bytes past a 20-byte block, then frees it.
    pub const OVERRUN: u32 = 0x0022_3414;
    /// SinUnderrun: writes before the start of a block, then frees it.
    pub const UNDERRUN: u32 = 0x0022_3418;
    /// SinOverrunPage: reads 64 bytes past the end of a block.
    pub const OVERRUN_PAGE: u32 = 0x0022_341C;
    /// SinUseAfterFree: reads a block after freeing it.
    pub const USE_AFTER_FREE: u32 = 0x0022_3420;
    /// SinDoubleFree: frees a block twice.
    pub const DOUBLE_FREE: u32 = 0x0022_3424;
    /// SinLeakPool: a 100-byte block with tag 'Leak', never freed.
    pub const LEAK_POOL: u32 = 0x0022_3428;
    /// SinLeakIrp: IoAllocateIrp, never freed.
    pub const LEAK_IRP: u32 = 0x0022_342C;
    /// SinLeakMdl: IoAllocateMdl, never freed.
    pub const LEAK_MDL: u32 = 0x0022_3430;
    /// SinDoubleComplete: IoCompleteRequest twice.
    pub const DOUBLE_COMPLETE: u32 = 0x0022_3434;
    /// SinPendingUnmarked: STATUS_PENDING without IoMarkIrpPending (a timer DPC completes it).
    pub const PENDING_UNMARKED: u32 = 0x0022_3438;
    /// SinCompleteAtHigh: IoCompleteRequest at HIGH_LEVEL.
    pub const COMPLETE_AT_HIGH: u32 = 0x0022_343C;
    /// SinTimerAtUnload: a timer with its DPC (SinUnloadTimerDpc) in the driver, left set.
    pub const TIMER_AT_UNLOAD: u32 = 0x0022_3440;
    /// SinLeakReference: IoGetAttachedDeviceReference without ObDereferenceObject.
    pub const LEAK_REFERENCE: u32 = 0x0022_3444;
}

/// Path of a committed test driver binary.
pub fn driver_path(arch: Arch, name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("drivers/bin")
        .join(arch.name())
        .join(format!("{name}.sys"))
}

/// A fresh driver host for `arch`, with the verifier on and strict: a finding the test did not
/// take (`h.k.verifier.take_findings()`) fails it when the host is dropped.
pub fn host(arch: Arch) -> DriverHost {
    match DriverHost::new(arch) {
        Ok(mut h) => {
            h.k.verifier.set_enabled(true);
            h.k.verifier.set_strict(true);
            h
        }
        Err(e) => panic!("cannot create a {} driver host: {e}", arch.name()),
    }
}

/// The IRP trace as snapshot text, one event per line.
pub fn render_trace(events: &[IrpEvent]) -> String {
    events.iter().map(|e| format!("{e}\n")).collect()
}
