//! Processes and threads: the processor control region (KPCR), the one kernel thread drivers run on,
//! the System process, and the Ps/Ke queries about them.

use dbt::{Arch, Prot};

use crate::export::Export;
use crate::{export_table, KResult, Kernel};

/// Guest addresses of the per-processor and per-thread structures drivers may reach.
#[derive(Debug, Default, Clone)]
pub struct ProcessState {
    /// The processor control region (fs base on x86, gs base on x64).
    pub kpcr: u64,
    /// The current (only) kernel thread object.
    pub thread: u64,
    /// The System process object.
    pub process: u64,
}

/// Process id of the System process, where driver code runs.
pub const SYSTEM_PROCESS_ID: u64 = 4;
/// Thread id of the kernel thread drivers run on.
pub const SYSTEM_THREAD_ID: u64 = 8;

/// Lays out KPCR, KTHREAD and EPROCESS and points fs/gs at the KPCR.
pub(crate) fn init(k: &mut Kernel) -> KResult<()> {
    let page = k.m.mem.alloc(3 * 0x1000, Prot::READ | Prot::WRITE)?;
    let (kpcr, thread, process) = (page, page + 0x1000, page + 0x2000);
    match k.arch() {
        Arch::X86 => {
            // KPCR.SelfPcr (0x1c), KPCR.Prcb (0x20) -> PrcbData (0x120), PrcbData.CurrentThread (0x124).
            k.write_ptr(kpcr + 0x1c, kpcr)?;
            k.write_ptr(kpcr + 0x20, kpcr + 0x120)?;
            k.write_ptr(kpcr + 0x124, thread)?;
            // KTHREAD.ApcState.Process (0x44 in XP's layout).
            k.write_ptr(thread + 0x44, process)?;
            k.m.cpu.fs_base = kpcr;
        }
        Arch::X64 => {
            // KPCR.Self (0x18), KPCR.CurrentPrcb (0x20) -> Prcb (0x180), Prcb.CurrentThread (0x188).
            k.write_ptr(kpcr + 0x18, kpcr)?;
            k.write_ptr(kpcr + 0x20, kpcr + 0x180)?;
            k.write_ptr(kpcr + 0x188, thread)?;
            k.write_ptr(thread + 0xb8, process)?;
            k.m.cpu.gs_base = kpcr;
        }
    }
    k.ps = ProcessState {
        kpcr,
        thread,
        process,
    };
    Ok(())
}

/// IoGetCurrentProcess / PsGetCurrentProcess: the System process.
pub fn get_current_process(k: &mut Kernel) -> KResult<u64> {
    Ok(k.ps.process)
}

/// KeGetCurrentThread / PsGetCurrentThread.
pub fn get_current_thread(k: &mut Kernel) -> KResult<u64> {
    Ok(k.ps.thread)
}

/// PsGetCurrentProcessId.
pub fn get_current_process_id(_k: &mut Kernel) -> KResult<u64> {
    Ok(SYSTEM_PROCESS_ID)
}

/// PsGetCurrentThreadId.
pub fn get_current_thread_id(_k: &mut Kernel) -> KResult<u64> {
    Ok(SYSTEM_THREAD_ID)
}

pub(crate) static EXPORTS: &[Export] = export_table![
    stdcall IoGetCurrentProcess => get_current_process();
    stdcall PsGetCurrentProcess => get_current_process();
    stdcall PsGetCurrentThread => get_current_thread();
    stdcall KeGetCurrentThread => get_current_thread();
    stdcall PsGetCurrentProcessId => get_current_process_id();
    stdcall PsGetCurrentThreadId => get_current_thread_id();
];
