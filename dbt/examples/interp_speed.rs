//! Quick speed check of the interpreter against the host CPU on three driver-like kernels.
//!
//! `cargo run --release -p dbt --example interp_speed [-- SCALE [KERNEL]]`
//!
//! Times are the CPU time of the running thread (so other load on the machine matters less), the
//! best of several runs.
//!
//! Each kernel is assembled three times from the same source: x64 for the host (run natively from an
//! executable mapping), x64 and x86 for the guest. Reported: guest instructions, ns per guest
//! instruction and the slowdown against the native x64 run (x86 guests are compared with the same
//! native x64 run; the algorithm and instruction count are the same).
//!
//! * `checksum`: 16-bit ones' complement sum over 1500-byte packets, folded per packet.
//! * `mix`: two 16-bit PCM streams added with saturation into a 4096-sample ring.
//! * `ring`: a 256-entry descriptor ring walk calling a small function for owned descriptors.

use dbt::iced_x86::code_asm::*;
use dbt::iced_x86::IcedError;
use dbt::{Arch, CallConv, Exit, Machine, Prot};

/// Bytes per checksummed packet.
const PACKET: u32 = 1500;
/// Samples mixed per call.
const SAMPLES: u32 = 4096;
/// Descriptors in the ring.
const DESCS: u32 = 256;

/// Register inputs of a kernel: rsi, rdi, rbp, rbx, rcx (pointer-sized guest addresses or counts).
#[derive(Clone, Copy, Default)]
struct Inputs {
    rsi: u64,
    rdi: u64,
    rbp: u64,
    rbx: u64,
    rcx: u64,
}

type Build = fn(&mut CodeAssembler) -> Result<(), IcedError>;

/// Emits the kernels for either bitness; the register arguments name the pointer-sized registers used
/// in addresses.
macro_rules! kernels {
    ($name:ident, $si:ident, $di:ident, $bp:ident, $bx:ident, $dx:ident, $ax:ident) => {
        mod $name {
            use super::*;

            /// rsi = packet, rbx = packets; returns the sum of the folded checksums.
            pub fn checksum(a: &mut CodeAssembler) -> Result<(), IcedError> {
                let mut outer = a.create_label();
                let mut inner = a.create_label();
                a.xor(edi, edi)?;
                a.set_label(&mut outer)?;
                a.mov(ecx, PACKET / 2)?;
                a.xor(eax, eax)?;
                a.set_label(&mut inner)?;
                a.movzx(edx, word_ptr($si))?;
                a.add(eax, edx)?;
                a.add($si, 2)?;
                a.dec(ecx)?;
                a.jnz(inner)?;
                a.mov(edx, eax)?;
                a.shr(edx, 16)?;
                a.and(eax, 0xffff)?;
                a.add(eax, edx)?;
                a.mov(edx, eax)?;
                a.shr(edx, 16)?;
                a.add(eax, edx)?;
                a.not(eax)?;
                a.and(eax, 0xffff)?;
                a.add(edi, eax)?;
                a.sub($si, PACKET as i32)?;
                a.dec(ebx)?;
                a.jnz(outer)?;
                a.mov(eax, edi)?;
                a.ret()
            }

            /// rsi, rdi = 16-bit inputs, rbp = 4096-sample ring, rbx = ring position, rcx = samples.
            pub fn mix(a: &mut CodeAssembler) -> Result<(), IcedError> {
                let mut top = a.create_label();
                let mut not_high = a.create_label();
                let mut not_low = a.create_label();
                a.set_label(&mut top)?;
                a.movsx(eax, word_ptr($si))?;
                a.movsx(edx, word_ptr($di))?;
                a.add(eax, edx)?;
                a.cmp(eax, 32767)?;
                a.jle(not_high)?;
                a.mov(eax, 32767)?;
                a.set_label(&mut not_high)?;
                a.cmp(eax, -32768)?;
                a.jge(not_low)?;
                a.mov(eax, -32768)?;
                a.set_label(&mut not_low)?;
                a.mov(word_ptr($bp + $bx * 2), ax)?;
                a.inc(ebx)?;
                a.and(ebx, SAMPLES - 1)?;
                a.add($si, 2)?;
                a.add($di, 2)?;
                a.dec(ecx)?;
                a.jnz(top)?;
                a.mov(eax, ebx)?;
                a.ret()
            }

            /// rsi = 256 descriptors of 16 bytes {flags, len, buf, 0}, rcx = steps; calls `process`
            /// (argument in rdx) for descriptors with bit 0 set; returns the sum of its results.
            pub fn ring(a: &mut CodeAssembler) -> Result<(), IcedError> {
                let mut top = a.create_label();
                let mut skip = a.create_label();
                let mut process = a.create_label();
                a.xor(edi, edi)?;
                a.xor(ebx, ebx)?;
                a.set_label(&mut top)?;
                a.mov(eax, ebx)?;
                a.shl(eax, 4)?;
                a.lea($dx, $si + $ax)?;
                a.test(dword_ptr($dx), 1)?;
                a.jz(skip)?;
                a.call(process)?;
                a.add(edi, eax)?;
                a.set_label(&mut skip)?;
                a.inc(ebx)?;
                a.and(ebx, DESCS - 1)?;
                a.dec(ecx)?;
                a.jnz(top)?;
                a.mov(eax, edi)?;
                a.ret()?;
                a.set_label(&mut process)?;
                a.push($bx)?;
                a.mov(eax, dword_ptr($dx + 4))?;
                a.mov(ebx, dword_ptr($dx + 8))?;
                a.and(ebx, 0xff)?;
                a.add(eax, ebx)?;
                a.xor(dword_ptr($dx), 2)?;
                a.pop($bx)?;
                a.ret()
            }
        }
    };
}

kernels!(k64, rsi, rdi, rbp, rbx, rdx, rax);
kernels!(k32, esi, edi, ebp, ebx, edx, eax);

/// Deterministic test data.
fn bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut s = seed | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 24) as u8
        })
        .collect()
}

/// Data regions of one kernel: (input register, contents) pairs; counts go in `fixed`.
struct Setup {
    regions: Vec<(usize, Vec<u8>)>,
    fixed: Inputs,
}

/// Inputs of a kernel for `reps` units of work.
fn setup(kernel: &str, reps: u64) -> Setup {
    match kernel {
        "checksum" => Setup {
            regions: vec![(0, bytes(PACKET as usize, 1))],
            fixed: Inputs {
                rbx: reps,
                ..Default::default()
            },
        },
        "mix" => Setup {
            regions: vec![
                (0, bytes(2 * reps as usize, 2)),
                (1, bytes(2 * reps as usize, 3)),
                (2, vec![0; 2 * SAMPLES as usize]),
            ],
            fixed: Inputs {
                rcx: reps,
                ..Default::default()
            },
        },
        _ => {
            let mut descs = bytes(16 * DESCS as usize, 4);
            for d in descs.chunks_mut(16) {
                d[12..16].fill(0);
            }
            Setup {
                regions: vec![(0, descs)],
                fixed: Inputs {
                    rcx: reps,
                    ..Default::default()
                },
            }
        }
    }
}

fn set_input(inp: &mut Inputs, k: usize, v: u64) {
    match k {
        0 => inp.rsi = v,
        1 => inp.rdi = v,
        _ => inp.rbp = v,
    }
}

/// CPU time of the calling thread in seconds.
fn thread_time() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out-pointer for the duration of the call.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

/// Runs of each measurement; the fastest counts.
const RUNS: usize = 5;

/// Host executable mapping running x64 kernels.
struct Native {
    ptr: *mut u8,
    len: usize,
}

impl Native {
    fn new(build: Build) -> Native {
        let len = 0x4000;
        // SAFETY: fresh anonymous mapping, checked for failure.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(ptr, libc::MAP_FAILED);
        let mut a = CodeAssembler::new(64).expect("asm");
        let mut body = a.create_label();
        let mut wrap = |a: &mut CodeAssembler| -> Result<(), IcedError> {
            for r in [rbx, rbp, r12, r13, r14, r15] {
                a.push(r)?;
            }
            a.mov(rax, rdi)?;
            a.mov(rsi, qword_ptr(rax))?;
            a.mov(rdi, qword_ptr(rax + 8))?;
            a.mov(rbp, qword_ptr(rax + 16))?;
            a.mov(rbx, qword_ptr(rax + 24))?;
            a.mov(rcx, qword_ptr(rax + 32))?;
            a.call(body)?;
            for r in [r15, r14, r13, r12, rbp, rbx] {
                a.pop(r)?;
            }
            a.ret()?;
            a.set_label(&mut body)?;
            // Kernels may start with a label of their own; one label per instruction.
            a.nop()?;
            build(a)
        };
        wrap(&mut a).expect("wrapper");
        let code = a.assemble(ptr as u64).expect("assemble");
        assert!(code.len() <= len);
        // SAFETY: the mapping is ours and large enough.
        unsafe { std::ptr::copy_nonoverlapping(code.as_ptr(), ptr.cast::<u8>(), code.len()) };
        Native {
            ptr: ptr.cast(),
            len,
        }
    }

    fn run(&self, inp: &Inputs) -> u64 {
        let args = [inp.rsi, inp.rdi, inp.rbp, inp.rbx, inp.rcx];
        // SAFETY: the wrapper follows the C ABI, saves the callee-saved registers and only touches the
        // buffers described by `inp`, which the caller keeps alive.
        unsafe {
            let f: extern "C" fn(*const u64) -> u64 = std::mem::transmute(self.ptr);
            f(args.as_ptr())
        }
    }
}

impl Drop for Native {
    fn drop(&mut self) {
        // SAFETY: unmapping our own mapping.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

/// Runs the kernel natively; returns (result, seconds).
fn native(build: Build, kernel: &str, reps: u64) -> (u64, f64) {
    let n = Native::new(build);
    let s = setup(kernel, reps);
    let mut bufs: Vec<Vec<u8>> = s.regions.iter().map(|(_, d)| d.clone()).collect();
    let mut inp = s.fixed;
    for ((k, _), b) in s.regions.iter().zip(bufs.iter_mut()) {
        set_input(&mut inp, *k, b.as_mut_ptr() as u64);
    }
    let mut best = (0, f64::MAX);
    for _ in 0..RUNS {
        let t = thread_time();
        let r = n.run(&inp);
        best = (r, best.1.min(thread_time() - t));
    }
    best
}

/// Runs the kernel in the interpreter; returns (result, seconds, guest instructions).
fn guest(arch: Arch, build: Build, kernel: &str, reps: u64) -> (u64, f64, u64) {
    let mut m = Machine::new(arch);
    m.setup_stack(0x10000).expect("stack");
    let mut a = CodeAssembler::new(arch.bitness()).expect("asm");
    build(&mut a).expect("kernel");
    let code = m.mem.alloc(0x4000, Prot::READ | Prot::EXEC).expect("code");
    let bytes = a.assemble(code).expect("assemble");
    m.mem.write_bytes(code, &bytes).expect("write code");
    let s = setup(kernel, reps);
    let mut inp = s.fixed;
    for (k, d) in &s.regions {
        let at = m
            .mem
            .alloc(d.len() as u64, Prot::READ | Prot::WRITE)
            .expect("data");
        m.mem.write_bytes(at, d).expect("data");
        set_input(&mut inp, *k, at);
    }
    let once = |m: &mut Machine| {
        m.prepare_guest_call(code, CallConv::Cdecl, &[])
            .expect("call");
        let r = &mut m.cpu.regs;
        (r[6], r[7], r[5], r[3], r[1]) = (inp.rsi, inp.rdi, inp.rbp, inp.rbx, inp.rcx);
        let before = m.stats.instructions;
        let t = thread_time();
        match m.run() {
            Exit::HostReturn => {}
            other => panic!("{kernel}/{arch:?}: unexpected exit {other:?}"),
        }
        let secs = thread_time() - t;
        let ret = m.cpu.regs[0] & 0xffff_ffff;
        (ret, secs, m.stats.instructions - before)
    };
    (0..RUNS).map(|_| once(&mut m)).fold(
        (0, f64::MAX, 0),
        |best, r| if r.1 < best.1 { r } else { best },
    )
}

fn main() {
    let scale: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1);
    let kernels: [(&str, Build, Build, u64); 3] = [
        ("checksum", k64::checksum, k32::checksum, 2000),
        ("mix", k64::mix, k32::mix, 500_000),
        ("ring", k64::ring, k32::ring, 1_000_000),
    ];
    println!(
        "{:<9} {:>5} {:>11} {:>10} {:>10} {:>8}",
        "kernel", "arch", "guest insns", "native ms", "ns/insn", "ratio"
    );
    let only = std::env::args().nth(2);
    for (name, b64, b32, reps) in kernels {
        if only.as_deref().is_some_and(|k| k != name) {
            continue;
        }
        let reps = reps * scale;
        let (want, nat) = native(b64, name, reps);
        for (arch, build) in [(Arch::X64, b64), (Arch::X86, b32)] {
            let (got, secs, insns) = guest(arch, build, name, reps);
            assert_eq!(got, want & 0xffff_ffff, "{name}/{arch:?} result differs");
            println!(
                "{:<9} {:>5} {:>11} {:>10.3} {:>10.2} {:>7.1}x",
                name,
                arch.name(),
                insns,
                nat * 1e3,
                secs * 1e9 / insns as f64,
                secs / nat
            );
        }
    }
}
