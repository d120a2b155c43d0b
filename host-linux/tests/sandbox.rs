//! The driver-host confinement really confines: a forked child that applied it cannot open a file
//! or map executable memory, and still does I/O on descriptors it holds; an unconfined child can
//! open the same file.

use std::ffi::CString;

use host_linux::sandbox::{Confinement, Limits};

/// Exit codes of the child.
const OPENED: i32 = 10;
const OPEN_EPERM: i32 = 11;
const OPEN_OTHER_ERROR: i32 = 12;
const CONFINE_FAILED: i32 = 13;
const EXEC_MAP_ALLOWED: i32 = 14;
const PIPE_FAILED: i32 = 15;

/// Forks a child that (if `confine`) applies `c`, writes a byte to `pipe`, tries to map an
/// executable page (confined only) and opens `/etc/passwd`; returns its exit code. The child only
/// makes syscalls (nothing is allocated after the fork).
fn child_outcome(c: &Confinement, confine: bool) -> i32 {
    let path = CString::new("/etc/passwd").unwrap();
    let mut pipe = [0i32; 2];
    // SAFETY: pipe(2) into a live two-element array.
    assert_eq!(unsafe { libc::pipe(pipe.as_mut_ptr()) }, 0);
    // SAFETY: the child runs only async-signal-safe syscalls and _exit.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        // SAFETY (whole block): syscalls on live buffers in the forked child, which then exits.
        unsafe {
            if confine && c.apply().is_err() {
                libc::_exit(CONFINE_FAILED);
            }
            if libc::write(pipe[1], b"x".as_ptr() as *const libc::c_void, 1) != 1 {
                libc::_exit(PIPE_FAILED);
            }
            if confine {
                let p = libc::mmap(
                    std::ptr::null_mut(),
                    4096,
                    libc::PROT_READ | libc::PROT_EXEC,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                );
                if p != libc::MAP_FAILED {
                    libc::_exit(EXEC_MAP_ALLOWED);
                }
            }
            let fd = libc::open(path.as_ptr(), libc::O_RDONLY);
            if fd >= 0 {
                libc::_exit(OPENED);
            }
            let errno = *libc::__errno_location();
            libc::_exit(if errno == libc::EPERM {
                OPEN_EPERM
            } else {
                OPEN_OTHER_ERROR
            });
        }
    }
    let mut status = 0;
    // SAFETY: waits for our own child.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    let mut byte = 0u8;
    // SAFETY: reads one byte into a live u8; closes our pipe ends.
    let n = unsafe {
        let n = libc::read(pipe[0], &mut byte as *mut u8 as *mut libc::c_void, 1);
        libc::close(pipe[0]);
        libc::close(pipe[1]);
        n
    };
    assert!(libc::WIFEXITED(status), "child died: status {status:#x}");
    let code = libc::WEXITSTATUS(status);
    if code != CONFINE_FAILED {
        assert_eq!((n, byte), (1, b'x'), "the child wrote to its pipe");
    }
    code
}

#[test]
fn confined_process_cannot_open_files_or_map_code() {
    let c = Confinement::new(Limits::current_plus(512 << 20, 64).unwrap());
    assert_eq!(
        child_outcome(&c, false),
        OPENED,
        "unconfined: open succeeds"
    );
    assert_eq!(
        child_outcome(&c, true),
        OPEN_EPERM,
        "confined: I/O on held fds works, PROT_EXEC mappings and open(2) fail with EPERM"
    );
}
