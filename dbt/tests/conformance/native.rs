//! Native execution of cases on the host CPU, in forked child processes.
//!
//! The parent prepares everything (encoded snippets, initial states, memory images) before forking;
//! the child only copies bytes and makes system calls (no allocation: the test process has other
//! threads, whose locks a forked child must not touch). The child maps the world's regions at fixed
//! addresses, runs the cases one after the other and writes each result into a shared mapping.
//!
//! A fault (SIGSEGV, SIGFPE, ...) is caught by a handler on an alternate stack: it records the signal,
//! the trap number, the error code, the faulting address and all registers from the signal context,
//! then resumes at a recovery stub that returns to the child's loop. A child that dies anyway loses
//! only the case it was running: the parent restarts a child at the next case.
//!
//! x86-32 snippets run in the compatibility-mode code segment (selector 0x23) of the 64-bit child:
//! the wrapper far-returns into 32-bit code below 4 GiB, which far-returns to selector 0x33 at the end.
//! FS and GS there are LDT selectors (modify_ldt) whose base is the data region, like a PCR.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use dbt::Arch;
use iced_x86::code_asm::*;
use iced_x86::IcedError;

use crate::harness::{
    native_base, norm, Exc, Outcome, CODE_LEN, CODE_OFF, DATA_LEN, DATA_OFF, STACK_LEN, STACK_OFF,
};

/// Offset of the wrapper code page from the native base.
pub const WRAP_OFF: u64 = 0x40_0000;
/// Offset of the state page (register exchange; its top half is the x86 scratch stack).
pub const STATE_OFF: u64 = 0x50_0000;

/// Wrapper entry (64-bit code).
const ENTRY: u64 = 0;
/// 32-bit part of the x86 entry.
const ENTRY32: u64 = 0x200;
/// Epilogue the snippet jumps to (32-bit code on x86).
pub const EPILOGUE: u64 = 0x400;
/// Recovery stub after a fault (64-bit code; also the x86 exit back to 64-bit mode).
const RECOVER: u64 = 0x600;

/// Register exchange block at the state page.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct NState {
    pub regs: [u64; 16],
    pub flags: u64,
    pub xmm: [[u64; 2]; 16],
    pub saved_rsp: u64,
    pub saved_fs: u64,
    pub sig: u64,
    pub addr: u64,
    pub rip: u64,
    pub err: u64,
    pub trapno: u64,
}

const O_FLAGS: i32 = 128;
const O_XMM: i32 = 136;
const O_SAVED_RSP: i32 = 392;
const O_SAVED_FS: i32 = 400;

/// What the child hands back per case.
#[repr(C)]
struct NResult {
    state: NState,
    data: [u8; DATA_LEN],
    stack: [u8; STACK_LEN],
}

/// One case, ready to run natively.
pub struct NativeCase<'a> {
    pub code: Vec<u8>,
    pub init: NState,
    pub data: &'a [u8],
    pub stack: &'a [u8],
}

/// Address of the epilogue snippets jump to at their end.
pub fn epilogue(arch: Arch) -> u64 {
    native_base(arch) + WRAP_OFF + EPILOGUE
}

/// Assembles the wrapper page of `arch` (entry, epilogue, recovery stub at fixed offsets).
pub fn wrapper(arch: Arch) -> Vec<u8> {
    let base = native_base(arch);
    let w = base + WRAP_OFF;
    let state = base + STATE_OFF;
    let mut page = vec![0xccu8; 0x1000];
    let mut put =
        |off: u64, bits: u32, build: &dyn Fn(&mut CodeAssembler) -> Result<(), IcedError>| {
            let mut a = CodeAssembler::new(bits).expect("assembler");
            build(&mut a).expect("wrapper code");
            let bytes = a.assemble(w + off).expect("assemble wrapper");
            assert!(bytes.len() <= 0x200, "wrapper piece too long");
            page[off as usize..off as usize + bytes.len()].copy_from_slice(&bytes);
        };
    let gprs64 = [
        rax, rcx, rdx, rbx, rsp, rbp, rsi, rdi, r8, r9, r10, r11, r12, r13, r14, r15,
    ];
    let xmms = [
        xmm0, xmm1, xmm2, xmm3, xmm4, xmm5, xmm6, xmm7, xmm8, xmm9, xmm10, xmm11, xmm12, xmm13,
        xmm14, xmm15,
    ];
    let code = base + CODE_OFF;
    match arch {
        Arch::X64 => {
            put(ENTRY, 64, &|a| {
                for r in [rbx, rbp, r12, r13, r14, r15] {
                    a.push(r)?;
                }
                a.mov(rax, state)?;
                a.mov(qword_ptr(rax + O_SAVED_RSP), rsp)?;
                for (k, x) in xmms.iter().enumerate() {
                    a.movdqu(*x, xmmword_ptr(rax + O_XMM + 16 * k as i32))?;
                }
                a.push(qword_ptr(rax + O_FLAGS))?;
                a.popfq()?;
                for (k, r) in gprs64.iter().enumerate() {
                    if k != 0 && k != 4 {
                        a.mov(*r, qword_ptr(rax + 8 * k as i32))?;
                    }
                }
                a.mov(rsp, qword_ptr(rax + 32))?;
                a.mov(rax, qword_ptr(rax))?;
                a.jmp(code)
            });
            put(EPILOGUE, 64, &|a| {
                a.add_instruction(iced_x86::Instruction::with2(
                    iced_x86::Code::Mov_moffs64_RAX,
                    iced_x86::MemoryOperand::with_displ(state, 8),
                    iced_x86::Register::RAX,
                )?)?;
                a.mov(rax, state)?;
                for (k, r) in gprs64.iter().enumerate() {
                    if k != 0 {
                        a.mov(qword_ptr(rax + 8 * k as i32), *r)?;
                    }
                }
                a.mov(rsp, qword_ptr(rax + O_SAVED_RSP))?;
                a.pushfq()?;
                a.pop(qword_ptr(rax + O_FLAGS))?;
                for (k, x) in xmms.iter().enumerate() {
                    a.movdqu(xmmword_ptr(rax + O_XMM + 16 * k as i32), *x)?;
                }
                a.cld()?;
                for r in [r15, r14, r13, r12, rbp, rbx] {
                    a.pop(r)?;
                }
                a.ret()
            });
            put(RECOVER, 64, &|a| {
                a.mov(rax, state)?;
                a.mov(rsp, qword_ptr(rax + O_SAVED_RSP))?;
                a.cld()?;
                for r in [r15, r14, r13, r12, rbp, rbx] {
                    a.pop(r)?;
                }
                a.ret()
            });
        }
        Arch::X86 => {
            let gprs32 = [eax, ecx, edx, ebx, esp, ebp, esi, edi];
            let scratch = (state + 0x1000) as u32;
            put(ENTRY, 64, &|a| {
                for r in [rbx, rbp, r12, r13, r14, r15] {
                    a.push(r)?;
                }
                a.mov(eax, state as u32)?;
                a.mov(qword_ptr(rax + O_SAVED_RSP), rsp)?;
                a.push(0x23)?;
                a.mov(ecx, (w + ENTRY32) as u32)?;
                a.push(rcx)?;
                a.add_instruction(iced_x86::Instruction::with(iced_x86::Code::Retfq))
            });
            put(ENTRY32, 32, &|a| {
                a.mov(ax, 0x2b)?;
                a.mov(ds, ax)?;
                a.mov(es, ax)?;
                a.mov(ax, 0x07)?;
                a.mov(fs, ax)?;
                a.mov(ax, 0x0f)?;
                a.mov(gs, ax)?;
                a.mov(eax, state as u32)?;
                for (k, x) in xmms.iter().take(8).enumerate() {
                    a.movdqu(*x, xmmword_ptr(eax + O_XMM + 16 * k as i32))?;
                }
                a.mov(esp, scratch)?;
                a.push(dword_ptr(eax + O_FLAGS))?;
                a.popfd()?;
                for (k, r) in gprs32.iter().enumerate() {
                    if k != 0 && k != 4 {
                        a.mov(*r, dword_ptr(eax + 8 * k as i32))?;
                    }
                }
                a.mov(esp, dword_ptr(eax + 32))?;
                a.mov(eax, dword_ptr(eax))?;
                a.jmp(code)
            });
            put(EPILOGUE, 32, &|a| {
                for (k, r) in gprs32.iter().enumerate() {
                    a.mov(dword_ptr(state + 8 * k as u64), *r)?;
                    a.mov(dword_ptr(state + 8 * k as u64 + 4), 0)?;
                }
                a.mov(esp, scratch)?;
                a.pushfd()?;
                a.pop(dword_ptr(state + O_FLAGS as u64))?;
                for (k, x) in xmms.iter().take(8).enumerate() {
                    a.movdqu(xmmword_ptr(state + (O_XMM + 16 * k as i32) as u64), *x)?;
                }
                a.cld()?;
                a.push(0x33)?;
                a.push((w + RECOVER) as u32)?;
                a.retf()
            });
            put(RECOVER, 64, &|a| {
                // Back in 64-bit mode: null data selectors, then the libc TLS base in FS again.
                a.xor(eax, eax)?;
                a.mov(ds, ax)?;
                a.mov(es, ax)?;
                a.mov(fs, ax)?;
                a.mov(gs, ax)?;
                a.mov(edx, state as u32)?;
                a.mov(rsi, qword_ptr(rdx + O_SAVED_FS))?;
                a.mov(edi, 0x1002)?; // ARCH_SET_FS
                a.mov(eax, 158)?; // SYS_arch_prctl
                a.syscall()?;
                a.mov(eax, state as u32)?;
                a.mov(rsp, qword_ptr(rax + O_SAVED_RSP))?;
                a.cld()?;
                for r in [r15, r14, r13, r12, rbp, rbx] {
                    a.pop(r)?;
                }
                a.ret()
            });
        }
    }
    page
}

// State of the child process, read by the signal handler.
static STATE_ADDR: AtomicU64 = AtomicU64::new(0);
static RECOVER_ADDR: AtomicU64 = AtomicU64::new(0);
static ACTIVE: AtomicBool = AtomicBool::new(false);

/// Fault handler of the child: records the fault and resumes at the recovery stub.
extern "C" fn on_fault(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: called by the kernel with a valid siginfo and ucontext; the state page is mapped while
    // ACTIVE is set. No allocation, no TLS (FS may hold the guest's LDT selector here).
    unsafe {
        if !ACTIVE.swap(false, Ordering::SeqCst) {
            libc::signal(sig, libc::SIG_DFL);
            return;
        }
        let st = STATE_ADDR.load(Ordering::SeqCst) as *mut NState;
        let uc = ctx as *mut libc::ucontext_t;
        let g = &mut (*uc).uc_mcontext.gregs;
        let idx = [
            libc::REG_RAX,
            libc::REG_RCX,
            libc::REG_RDX,
            libc::REG_RBX,
            libc::REG_RSP,
            libc::REG_RBP,
            libc::REG_RSI,
            libc::REG_RDI,
            libc::REG_R8,
            libc::REG_R9,
            libc::REG_R10,
            libc::REG_R11,
            libc::REG_R12,
            libc::REG_R13,
            libc::REG_R14,
            libc::REG_R15,
        ];
        for (k, i) in idx.iter().enumerate() {
            (*st).regs[k] = g[*i as usize] as u64;
        }
        (*st).flags = g[libc::REG_EFL as usize] as u64;
        (*st).sig = sig as u64;
        (*st).addr = (*info).si_addr() as u64;
        (*st).rip = g[libc::REG_RIP as usize] as u64;
        (*st).err = g[libc::REG_ERR as usize] as u64;
        (*st).trapno = g[libc::REG_TRAPNO as usize] as u64;
        let fp = (*uc).uc_mcontext.fpregs;
        if !fp.is_null() {
            for k in 0..16 {
                let e = (*fp)._xmm[k].element;
                (*st).xmm[k] = [
                    e[0] as u64 | (e[1] as u64) << 32,
                    e[2] as u64 | (e[3] as u64) << 32,
                ];
            }
        }
        g[libc::REG_RIP as usize] = RECOVER_ADDR.load(Ordering::SeqCst) as i64;
        g[libc::REG_RSP as usize] = (*st).saved_rsp as i64;
        g[libc::REG_EFL as usize] &= !(0x400 | 0x100 | 0x4_0000);
        let csgsfs = g[libc::REG_CSGSFS as usize];
        g[libc::REG_CSGSFS as usize] = (csgsfs & !0xffff) | 0x33;
    }
}

/// Exit codes of a child that could not set up its world.
const EXIT_MAP: i32 = 71;
const EXIT_ALTSTACK: i32 = 72;
const EXIT_SIGACTION: i32 = 73;
const EXIT_ARCH_PRCTL: i32 = 74;
const EXIT_LDT: i32 = 75;

/// Maps `len` bytes at exactly `addr`.
unsafe fn map_fixed(addr: u64, len: usize, prot: libc::c_int) -> bool {
    let p = libc::mmap(
        addr as *mut libc::c_void,
        len,
        prot,
        libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE,
        -1,
        0,
    );
    p as u64 == addr
}

/// linux `struct user_desc` for modify_ldt.
#[repr(C)]
struct UserDesc {
    entry_number: u32,
    base_addr: u32,
    limit: u32,
    flags: u32,
}

/// Body of the child: sets up the world, runs `cases[start..]`, never returns.
unsafe fn child(
    arch: Arch,
    wrapper: &[u8],
    cases: &[NativeCase],
    start: usize,
    progress: &AtomicU64,
    results: *mut NResult,
) -> ! {
    libc::alarm(60);
    let base = native_base(arch);
    let rwx = libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC;
    let rw = libc::PROT_READ | libc::PROT_WRITE;
    let ok = map_fixed(base + CODE_OFF, CODE_LEN, rwx)
        && map_fixed(base + DATA_OFF, DATA_LEN, rw)
        && map_fixed(base + STACK_OFF, STACK_LEN, rw)
        && map_fixed(base + WRAP_OFF, 0x1000, rwx)
        && map_fixed(base + STATE_OFF, 0x1000, rw);
    if !ok {
        libc::_exit(EXIT_MAP);
    }
    std::ptr::copy_nonoverlapping(wrapper.as_ptr(), (base + WRAP_OFF) as *mut u8, 0x1000);
    let alt = libc::mmap(
        std::ptr::null_mut(),
        0x10000,
        rw,
        libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
        -1,
        0,
    );
    if alt == libc::MAP_FAILED {
        libc::_exit(EXIT_ALTSTACK);
    }
    let alt_stack = libc::stack_t {
        ss_sp: alt,
        ss_flags: 0,
        ss_size: 0x10000,
    };
    if libc::sigaltstack(&alt_stack, std::ptr::null_mut()) != 0 {
        libc::_exit(EXIT_ALTSTACK);
    }
    for sig in [
        libc::SIGSEGV,
        libc::SIGBUS,
        libc::SIGFPE,
        libc::SIGILL,
        libc::SIGTRAP,
    ] {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_fault as *const () as usize;
        sa.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
        libc::sigemptyset(&mut sa.sa_mask);
        if libc::sigaction(sig, &sa, std::ptr::null_mut()) != 0 {
            libc::_exit(EXIT_SIGACTION);
        }
    }
    let data_base = base + DATA_OFF;
    let mut saved_fs = 0u64;
    match arch {
        Arch::X64 => {
            if libc::syscall(libc::SYS_arch_prctl, 0x1001, data_base) != 0 {
                libc::_exit(EXIT_ARCH_PRCTL);
            }
        }
        Arch::X86 => {
            for entry in 0..2 {
                let d = UserDesc {
                    entry_number: entry,
                    base_addr: data_base as u32,
                    limit: 0xfffff,
                    // seg_32bit | limit_in_pages | useable
                    flags: 1 | 1 << 4 | 1 << 6,
                };
                if libc::syscall(
                    libc::SYS_modify_ldt,
                    1,
                    &d as *const UserDesc,
                    std::mem::size_of::<UserDesc>(),
                ) != 0
                {
                    libc::_exit(EXIT_LDT);
                }
            }
            if libc::syscall(libc::SYS_arch_prctl, 0x1003, &mut saved_fs as *mut u64) != 0 {
                libc::_exit(EXIT_ARCH_PRCTL);
            }
        }
    }
    let st = (base + STATE_OFF) as *mut NState;
    STATE_ADDR.store(st as u64, Ordering::SeqCst);
    RECOVER_ADDR.store(base + WRAP_OFF + RECOVER, Ordering::SeqCst);
    let entry: extern "C" fn() = std::mem::transmute((base + WRAP_OFF + ENTRY) as *const u8);
    for (k, c) in cases.iter().enumerate().skip(start) {
        std::ptr::copy_nonoverlapping(c.code.as_ptr(), (base + CODE_OFF) as *mut u8, c.code.len());
        std::ptr::copy_nonoverlapping(c.data.as_ptr(), (base + DATA_OFF) as *mut u8, DATA_LEN);
        std::ptr::copy_nonoverlapping(c.stack.as_ptr(), (base + STACK_OFF) as *mut u8, STACK_LEN);
        *st = c.init;
        (*st).saved_fs = saved_fs;
        (*st).sig = 0;
        ACTIVE.store(true, Ordering::SeqCst);
        entry();
        ACTIVE.store(false, Ordering::SeqCst);
        let r = results.add(k);
        (*r).state = *st;
        std::ptr::copy_nonoverlapping(
            (base + DATA_OFF) as *const u8,
            (*r).data.as_mut_ptr(),
            DATA_LEN,
        );
        std::ptr::copy_nonoverlapping(
            (base + STACK_OFF) as *const u8,
            (*r).stack.as_mut_ptr(),
            STACK_LEN,
        );
        progress.store(k as u64 + 1, Ordering::SeqCst);
    }
    libc::_exit(0)
}

/// Runs `cases` natively; per case the outcome or why the child died running it.
pub fn run(arch: Arch, wrapper: &[u8], cases: &[NativeCase]) -> Vec<Result<Outcome, String>> {
    let n = cases.len();
    if n == 0 {
        return Vec::new();
    }
    for c in cases {
        assert!(c.code.len() <= CODE_LEN);
        assert_eq!(c.data.len(), DATA_LEN);
        assert_eq!(c.stack.len(), STACK_LEN);
    }
    let header = 64usize;
    let bytes = header + n * std::mem::size_of::<NResult>();
    // SAFETY: a fresh shared anonymous mapping, checked; unmapped at the end of this function.
    let shm = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            bytes,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    assert_ne!(shm, libc::MAP_FAILED, "shared result mapping");
    // SAFETY: the header lies in the mapping and is suitably aligned.
    let progress = unsafe { &*(shm as *const AtomicU64) };
    // SAFETY: results follow the header inside the mapping.
    let results = unsafe { (shm as *mut u8).add(header) as *mut NResult };
    let mut out: Vec<Option<Result<Outcome, String>>> = (0..n).map(|_| None).collect();
    let mut start = 0;
    while start < n {
        progress.store(start as u64, Ordering::SeqCst);
        // SAFETY: the child only runs `child`, which neither allocates nor returns.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            // SAFETY: see `child`.
            unsafe { child(arch, wrapper, cases, start, progress, results) }
        }
        let mut status = 0;
        // SAFETY: waiting for our own child.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        if libc::WIFEXITED(status) {
            match libc::WEXITSTATUS(status) {
                EXIT_MAP => panic!(
                    "cannot map the native test regions at {:#x} (address in use?)",
                    native_base(arch)
                ),
                EXIT_ALTSTACK => panic!("native child: sigaltstack failed"),
                EXIT_SIGACTION => panic!("native child: sigaction failed"),
                EXIT_ARCH_PRCTL => panic!("native child: arch_prctl (FS/GS base) failed"),
                EXIT_LDT => panic!(
                    "native child: modify_ldt failed; x86-32 cases need it for their fs:/gs: \
                     segments (is the syscall blocked by a seccomp profile?)"
                ),
                _ => {}
            }
        }
        let done = (progress.load(Ordering::SeqCst) as usize).min(n);
        for (k, slot) in out.iter_mut().enumerate().take(done).skip(start) {
            // SAFETY: the child completed result k before publishing progress k+1.
            let r = unsafe { &*results.add(k) };
            *slot = Some(Ok(outcome(arch, r)));
        }
        if done < n {
            let why = if libc::WIFSIGNALED(status) {
                format!("native child killed by signal {}", libc::WTERMSIG(status))
            } else {
                format!("native child exited with status {status:#x}")
            };
            out[done] = Some(Err(why));
        }
        start = done + 1;
    }
    // SAFETY: our own mapping, no longer referenced.
    unsafe { libc::munmap(shm, bytes) };
    out.into_iter()
        .map(|o| o.unwrap_or_else(|| Err("not run".into())))
        .collect()
}

/// Converts a child result into an [`Outcome`].
fn outcome(arch: Arch, r: &NResult) -> Outcome {
    let s = &r.state;
    let base = native_base(arch);
    let exc = match s.sig as i32 {
        0 => Exc::None,
        libc::SIGFPE if s.trapno == 0 => Exc::Divide,
        libc::SIGSEGV if s.trapno == 14 => Exc::Page {
            addr: norm(arch, s.addr, base),
            write: s.err & 2 != 0,
        },
        libc::SIGSEGV if s.trapno == 13 => Exc::GeneralProtection,
        libc::SIGILL if s.trapno == 6 => Exc::InvalidOpcode,
        sig => Exc::Other(format!("signal {sig}, trap {}", s.trapno)),
    };
    let mut xmm = [0u128; 16];
    for (k, x) in xmm.iter_mut().enumerate() {
        *x = (s.xmm[k][1] as u128) << 64 | s.xmm[k][0] as u128;
    }
    Outcome {
        regs: s.regs,
        flags: s.flags,
        xmm,
        rip: s.rip,
        exc,
        data: r.data.to_vec(),
        stack: r.stack.to_vec(),
    }
}
