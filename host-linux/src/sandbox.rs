//! Confinement of a driver-host process, applied after its setup and before any guest code runs:
//! resource limits (address space, open files, no core dumps), `PR_SET_NO_NEW_PRIVS`, and a
//! seccomp-BPF filter that allows only what the host layer needs once it is set up (I/O on the
//! descriptors it already holds, memory management, futexes, clocks, signals returning, exit).
//! Everything else fails with `EPERM`: opening files, creating sockets, spawning processes,
//! `ptrace`, mapping or re-protecting memory as executable. A foreign syscall ABI (x32, or i386
//! through `int 0x80`) kills the process.

use std::io;

/// Resource limits of a confined process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// RLIMIT_AS: bytes of address space (the guest window, the block cache, the heap).
    pub address_space: u64,
    /// RLIMIT_NOFILE: highest descriptor number + 1 (no new descriptors can be opened anyway).
    pub open_files: u64,
}

impl Limits {
    /// The address space mapped now plus `slack` bytes, and at most `open_files` descriptors.
    pub fn current_plus(slack: u64, open_files: u64) -> io::Result<Limits> {
        let statm = std::fs::read_to_string("/proc/self/statm")?;
        let pages: u64 = statm
            .split_whitespace()
            .next()
            .and_then(|p| p.parse().ok())
            .ok_or_else(|| io::Error::other(format!("unexpected /proc/self/statm: {statm:?}")))?;
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as u64;
        Ok(Limits {
            address_space: pages * page + slack,
            open_files,
        })
    }
}

// Classic BPF opcodes (linux/filter.h, linux/bpf_common.h).
const BPF_LD_W_ABS: u16 = 0x20; // BPF_LD (0) | BPF_W (0) | BPF_ABS
const BPF_JEQ_K: u16 = 0x05 | 0x10; // BPF_JMP | BPF_JEQ | BPF_K
const BPF_JGE_K: u16 = 0x05 | 0x30; // BPF_JMP | BPF_JGE | BPF_K
const BPF_JSET_K: u16 = 0x05 | 0x40; // BPF_JMP | BPF_JSET | BPF_K
const BPF_RET_K: u16 = 0x06; // BPF_RET | BPF_K

// struct seccomp_data offsets: nr, arch, instruction_pointer, args[6].
const DATA_NR: u32 = 0;
const DATA_ARCH: u32 = 4;
/// Low 32 bits of args[2] (little endian).
const DATA_ARG2_LO: u32 = 16 + 2 * 8;

const AUDIT_ARCH_X86_64: u32 = 0xC000_003E;
/// x32 syscalls have this bit set in their number.
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

const SECCOMP_RET_KILL_PROCESS: u32 = 0x8000_0000;
const SECCOMP_RET_ERRNO: u32 = 0x0005_0000;
const SECCOMP_RET_ALLOW: u32 = 0x7FFF_0000;
const SECCOMP_SET_MODE_FILTER: libc::c_uint = 1;
const SECCOMP_FILTER_FLAG_TSYNC: libc::c_uint = 1;

/// Syscalls a set-up driver host may make, whatever their arguments.
const ALLOWED: &[libc::c_long] = &[
    libc::SYS_read,
    libc::SYS_write,
    libc::SYS_readv,
    libc::SYS_writev,
    libc::SYS_recvfrom,
    libc::SYS_sendto,
    libc::SYS_recvmsg,
    libc::SYS_sendmsg,
    libc::SYS_poll,
    libc::SYS_ppoll,
    libc::SYS_epoll_wait,
    libc::SYS_epoll_pwait,
    libc::SYS_close,
    libc::SYS_munmap,
    libc::SYS_mremap,
    libc::SYS_madvise,
    libc::SYS_brk,
    libc::SYS_futex,
    libc::SYS_clock_gettime,
    libc::SYS_clock_getres,
    libc::SYS_gettimeofday,
    libc::SYS_clock_nanosleep,
    libc::SYS_nanosleep,
    libc::SYS_sched_yield,
    libc::SYS_getpid,
    libc::SYS_gettid,
    libc::SYS_getrandom,
    libc::SYS_rt_sigreturn,
    libc::SYS_rt_sigprocmask,
    libc::SYS_sigaltstack,
    libc::SYS_restart_syscall,
    libc::SYS_exit,
    libc::SYS_exit_group,
];

fn stmt(code: u16, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump(code: u16, k: u32, jt: u8, jf: u8) -> libc::sock_filter {
    libc::sock_filter { code, jt, jf, k }
}

/// The seccomp program (see the module documentation).
fn filter() -> Vec<libc::sock_filter> {
    let eperm = SECCOMP_RET_ERRNO | libc::EPERM as u32;
    let mut p = vec![
        stmt(BPF_LD_W_ABS, DATA_ARCH),
        jump(BPF_JEQ_K, AUDIT_ARCH_X86_64, 1, 0),
        stmt(BPF_RET_K, SECCOMP_RET_KILL_PROCESS),
        stmt(BPF_LD_W_ABS, DATA_NR),
        jump(BPF_JGE_K, X32_SYSCALL_BIT, 0, 1),
        stmt(BPF_RET_K, SECCOMP_RET_KILL_PROCESS),
    ];
    for &nr in ALLOWED {
        p.push(jump(BPF_JEQ_K, nr as u32, 0, 1));
        p.push(stmt(BPF_RET_K, SECCOMP_RET_ALLOW));
    }
    // mmap or mprotect: allowed unless `prot` (the third argument) has PROT_EXEC; anything else
    // falls through to EPERM.
    p.extend([
        jump(BPF_JEQ_K, libc::SYS_mmap as u32, 1, 0),
        jump(BPF_JEQ_K, libc::SYS_mprotect as u32, 0, 3),
        stmt(BPF_LD_W_ABS, DATA_ARG2_LO),
        jump(BPF_JSET_K, libc::PROT_EXEC as u32, 1, 0),
        stmt(BPF_RET_K, SECCOMP_RET_ALLOW),
        stmt(BPF_RET_K, eperm),
    ]);
    p
}

/// A confinement ready to apply: the filter is built beforehand, so [`apply`](Self::apply) only
/// makes syscalls (it may run between `fork` and `exec`, or in a child of a threaded process).
#[derive(Debug, Clone)]
pub struct Confinement {
    limits: Limits,
    filter: Vec<libc::sock_filter>,
}

fn check(rc: libc::c_int, what: &str) -> io::Result<()> {
    if rc != 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(e.kind(), format!("{what}: {e}")));
    }
    Ok(())
}

impl Confinement {
    pub fn new(limits: Limits) -> Confinement {
        Confinement {
            limits,
            filter: filter(),
        }
    }

    /// Confines the calling process (every thread of it) for the rest of its life.
    pub fn apply(&self) -> io::Result<()> {
        let rlimits = [
            (libc::RLIMIT_AS, self.limits.address_space, "RLIMIT_AS"),
            (libc::RLIMIT_NOFILE, self.limits.open_files, "RLIMIT_NOFILE"),
            (libc::RLIMIT_CORE, 0, "RLIMIT_CORE"),
        ];
        for (resource, value, name) in rlimits {
            let lim = libc::rlimit {
                rlim_cur: value,
                rlim_max: value,
            };
            // SAFETY: setrlimit reads a live rlimit structure.
            check(unsafe { libc::setrlimit(resource, &lim) }, name)?;
        }
        // SAFETY: prctl with integer arguments only.
        check(
            unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) },
            "PR_SET_NO_NEW_PRIVS",
        )?;
        // SAFETY: prctl with integer arguments only (no core dumps, no ptrace by other users).
        check(
            unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) },
            "PR_SET_DUMPABLE",
        )?;
        let prog = libc::sock_fprog {
            len: self.filter.len() as libc::c_ushort,
            filter: self.filter.as_ptr() as *mut libc::sock_filter,
        };
        // SAFETY: the kernel copies the program, which `prog` describes and `self` keeps alive
        // for the call; TSYNC applies it to every thread.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                SECCOMP_SET_MODE_FILTER,
                SECCOMP_FILTER_FLAG_TSYNC,
                &prog as *const libc::sock_fprog,
            )
        };
        check(rc as libc::c_int, "seccomp(SECCOMP_SET_MODE_FILTER)")
    }
}
