//! Differential tests against the host CPU (x86-64 hosts only): register-only instructions run natively
//! and in the interpreter from the same random states must leave identical registers and defined flags.
#![cfg(target_arch = "x86_64")]

mod common;

use dbt::iced_x86::code_asm::*;
use dbt::iced_x86::{Decoder, DecoderOptions, IcedError, RflagsBits};
use dbt::{Arch, CallConv, Exit, FaultKind};

type Build = Box<dyn Fn(&mut CodeAssembler) -> Result<(), IcedError>>;

/// Register file exchanged with the native wrapper: rax..r15 (rsp unused) and rflags.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct State {
    regs: [u64; 16],
    flags: u64,
    xmm: [[u64; 2]; 8],
}

/// Host executable buffer holding wrapper + snippet.
struct Native {
    ptr: *mut u8,
    len: usize,
}

impl Native {
    fn new(len: usize) -> Native {
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
        Native {
            ptr: ptr.cast(),
            len,
        }
    }

    /// Builds `wrapper(state)`: loads all registers but rsp and the flags from `state`, runs the
    /// snippet, stores them back.
    fn run(&self, snippet: &Build, state: &mut State) {
        let mut a = CodeAssembler::new(64).expect("asm");
        let mut saved = a.create_label();
        let mut tmp = a.create_label();
        let gprs = [
            rax, rcx, rdx, rbx, rsp, rbp, rsi, rdi, r8, r9, r10, r11, r12, r13, r14, r15,
        ];
        let mut body = |a: &mut CodeAssembler| -> Result<(), IcedError> {
            for r in [rbx, rbp, r12, r13, r14, r15] {
                a.push(r)?;
            }
            a.mov(qword_ptr(saved), rdi)?;
            a.push(qword_ptr(rdi + 128))?;
            a.popfq()?;
            for (k, r) in gprs.iter().enumerate() {
                if k != 4 && k != 7 {
                    a.mov(*r, qword_ptr(rdi + 8 * k as i32))?;
                }
            }
            for (k, x) in [xmm0, xmm1, xmm2, xmm3, xmm4, xmm5, xmm6, xmm7]
                .into_iter()
                .enumerate()
            {
                a.movdqu(x, xmmword_ptr(rdi + 136 + 16 * k as i32))?;
            }
            a.mov(rdi, qword_ptr(rdi + 56))?;
            snippet(a)?;
            a.mov(qword_ptr(tmp), rdi)?;
            a.mov(rdi, qword_ptr(saved))?;
            for (k, r) in gprs.iter().enumerate() {
                if k != 4 && k != 7 {
                    a.mov(qword_ptr(rdi + 8 * k as i32), *r)?;
                }
            }
            a.pushfq()?;
            a.pop(qword_ptr(rdi + 128))?;
            for (k, x) in [xmm0, xmm1, xmm2, xmm3, xmm4, xmm5, xmm6, xmm7]
                .into_iter()
                .enumerate()
            {
                a.movdqu(xmmword_ptr(rdi + 136 + 16 * k as i32), x)?;
            }
            a.mov(rax, qword_ptr(tmp))?;
            a.mov(qword_ptr(rdi + 56), rax)?;
            a.cld()?;
            for r in [r15, r14, r13, r12, rbp, rbx] {
                a.pop(r)?;
            }
            a.ret()?;
            a.set_label(&mut saved)?;
            a.dq(&[0])?;
            a.set_label(&mut tmp)?;
            a.dq(&[0])
        };
        body(&mut a).expect("wrapper");
        let bytes = a.assemble(self.ptr as u64).expect("assemble wrapper");
        assert!(bytes.len() <= self.len);
        // SAFETY: the buffer is ours and large enough; the wrapper follows the C ABI and preserves all
        // callee-saved registers; snippets are register-only and leave rsp alone.
        unsafe {
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.ptr, bytes.len());
            let f: extern "C" fn(*mut State) = std::mem::transmute(self.ptr);
            f(state);
        }
    }
}

impl Drop for Native {
    fn drop(&mut self) {
        // SAFETY: unmapping our own mapping.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

/// Status flags undefined after the snippet (EFLAGS layout).
fn undefined_flags(snippet: &Build) -> u64 {
    let mut a = CodeAssembler::new(64).expect("asm");
    snippet(&mut a).expect("snippet");
    let bytes = a.assemble(0x1000).expect("assemble");
    let mut mask = 0u64;
    for i in Decoder::with_ip(64, &bytes, 0x1000, DecoderOptions::NONE) {
        let u = i.rflags_undefined();
        for (iced, ef) in [
            (RflagsBits::OF, 0x800),
            (RflagsBits::SF, 0x80),
            (RflagsBits::ZF, 0x40),
            (RflagsBits::AF, 0x10),
            (RflagsBits::CF, 0x1),
            (RflagsBits::PF, 0x4),
        ] {
            if u & iced != 0 {
                mask |= ef;
            }
        }
    }
    mask
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn value(&mut self) -> u64 {
        const EDGES: [u64; 16] = [
            0,
            1,
            2,
            0x7f,
            0x80,
            0xff,
            0x7fff,
            0x8000,
            0xffff,
            0x7fff_ffff,
            0x8000_0000,
            0xffff_ffff,
            0x7fff_ffff_ffff_ffff,
            0x8000_0000_0000_0000,
            u64::MAX,
            0x1_0000_0000,
        ];
        match self.next() % 4 {
            0 => EDGES[(self.next() % 16) as usize],
            1 => EDGES[(self.next() % 16) as usize] ^ (self.next() & 0xff),
            _ => self.next(),
        }
    }

    fn count(&mut self) -> u64 {
        const COUNTS: [u64; 14] = [0, 1, 2, 3, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63];
        if self.next().is_multiple_of(2) {
            COUNTS[(self.next() % 14) as usize]
        } else {
            self.next() & 0xff
        }
    }
}

const FLAG_BITS: u64 = 0x8d5;

/// Runs `snippet` natively and interpreted from `iterations` random states and compares.
fn check(name: &str, snippet: Build, iterations: usize) {
    let native = Native::new(0x4000);
    let undefined = undefined_flags(&snippet);
    let mut m = common::machine(Arch::X64);
    let code = common::load(&mut m, |a| {
        snippet(a)?;
        a.ret()
    });
    let mut rng = Rng(0x1234_5678_9abc_def1 ^ (name.len() as u64 * 0x9e37_79b9));
    for iter in 0..iterations {
        let mut st = State {
            regs: [0; 16],
            flags: 0x202 | (rng.next() & FLAG_BITS),
            xmm: [[0; 2]; 8],
        };
        for (k, r) in st.regs.iter_mut().enumerate() {
            *r = if k == 1 { rng.count() } else { rng.value() };
        }
        for x in st.xmm.iter_mut() {
            *x = [rng.value(), rng.value()];
        }
        let before = st;
        m.prepare_guest_call(code, CallConv::Cdecl, &[])
            .expect("prepare");
        let stack = m.cpu.regs[4];
        m.cpu.regs = st.regs;
        m.cpu.regs[4] = stack;
        m.cpu.set_flags(st.flags);
        for (k, x) in st.xmm.iter().enumerate() {
            m.cpu.xmm[k] = (x[1] as u128) << 64 | x[0] as u128;
        }
        let exit = m.run_limited(1000);
        native.run(&snippet, &mut st);
        match exit {
            Some(Exit::HostReturn) => {}
            other => panic!("{name} #{iter}: interpreter exit {other:?} from {before:x?}"),
        }
        let mut got = m.cpu.regs;
        got[4] = 0;
        st.regs[4] = 0;
        let mask = if std::env::var("STRICT").is_ok() {
            FLAG_BITS
        } else {
            FLAG_BITS & !undefined
        };
        assert_eq!(
            got, st.regs,
            "{name} #{iter}: registers differ, input {before:x?}"
        );
        assert_eq!(
            m.cpu.flags() & mask,
            st.flags & mask,
            "{name} #{iter}: flags differ (native {:#x}, dbt {:#x}), input {before:x?}",
            st.flags,
            m.cpu.flags()
        );
    }
}

macro_rules! cases {
    ($($name:literal => |$a:ident| $body:expr;)*) => {
        vec![$(($name, Box::new(|$a: &mut CodeAssembler| -> Result<(), IcedError> { $body }) as Build)),*]
    };
}

fn run_all(list: Vec<(&'static str, Build)>) {
    for (name, b) in list {
        check(name, b, 300);
    }
}

#[test]
fn diff_alu() {
    run_all(cases! {
        "add8" => |a| a.add(al, bl);
        "add16" => |a| a.add(ax, bx);
        "add32" => |a| a.add(eax, ebx);
        "add64" => |a| a.add(rax, rbx);
        "add64i" => |a| a.add(rax, -5i32);
        "adc8" => |a| a.adc(al, bl);
        "adc16" => |a| a.adc(ax, bx);
        "adc32" => |a| a.adc(eax, ebx);
        "adc64" => |a| a.adc(rax, rbx);
        "sub8" => |a| a.sub(al, bl);
        "sub16" => |a| a.sub(ax, bx);
        "sub32" => |a| a.sub(eax, ebx);
        "sub64" => |a| a.sub(rax, rbx);
        "sbb8" => |a| a.sbb(al, bl);
        "sbb16" => |a| a.sbb(ax, bx);
        "sbb32" => |a| a.sbb(eax, ebx);
        "sbb64" => |a| a.sbb(rax, rbx);
        "and32" => |a| a.and(eax, ebx);
        "or16" => |a| a.or(ax, bx);
        "xor64" => |a| a.xor(rax, rbx);
        "xor8h" => |a| a.xor(ah, bh);
        "cmp8" => |a| a.cmp(al, bl);
        "cmp32" => |a| a.cmp(eax, ebx);
        "cmp64" => |a| a.cmp(rax, rbx);
        "test16" => |a| a.test(ax, bx);
        "inc8" => |a| a.inc(al);
        "inc32" => |a| a.inc(eax);
        "dec16" => |a| a.dec(ax);
        "dec64" => |a| a.dec(rax);
        "neg8" => |a| a.neg(al);
        "neg64" => |a| a.neg(rax);
        "not32" => |a| a.not(eax);
        "adc_chain" => |a| { a.add(eax, ebx)?; a.adc(edx, esi)?; a.sbb(r8d, r9d) };
        "inc_keeps_cf" => |a| { a.sub(eax, ebx)?; a.inc(ecx)?; a.setb(dl) };
    });
}

#[test]
fn diff_shifts() {
    run_all(cases! {
        "shl8cl" => |a| a.shl(al, cl);
        "shl16cl" => |a| a.shl(ax, cl);
        "shl32cl" => |a| a.shl(eax, cl);
        "shl64cl" => |a| a.shl(rax, cl);
        "shr8cl" => |a| a.shr(al, cl);
        "shr32cl" => |a| a.shr(eax, cl);
        "shr64cl" => |a| a.shr(rax, cl);
        "sar8cl" => |a| a.sar(al, cl);
        "sar16cl" => |a| a.sar(ax, cl);
        "sar64cl" => |a| a.sar(rax, cl);
        "shl32_1" => |a| a.shl(eax, 1u32);
        "shr16_1" => |a| a.shr(ax, 1u32);
        "sar32_1" => |a| a.sar(eax, 1u32);
        "shl64_7" => |a| a.shl(rax, 7u32);
        "rol8cl" => |a| a.rol(al, cl);
        "rol32cl" => |a| a.rol(eax, cl);
        "ror16cl" => |a| a.ror(ax, cl);
        "ror64cl" => |a| a.ror(rax, cl);
        "rol32_1" => |a| a.rol(eax, 1u32);
        "ror8_1" => |a| a.ror(al, 1u32);
        "rcl8cl" => |a| a.rcl(al, cl);
        "rcl16cl" => |a| a.rcl(ax, cl);
        "rcl32cl" => |a| a.rcl(eax, cl);
        "rcr8cl" => |a| a.rcr(al, cl);
        "rcr32cl" => |a| a.rcr(eax, cl);
        "rcr64cl" => |a| a.rcr(rax, cl);
        "rcl64_1" => |a| a.rcl(rax, 1u32);
        "rcr16_1" => |a| a.rcr(ax, 1u32);
        "shld32cl" => |a| a.shld(eax, ebx, cl);
        "shld64cl" => |a| a.shld(rax, rbx, cl);
        "shrd32cl" => |a| a.shrd(eax, ebx, cl);
        "shrd64cl" => |a| a.shrd(rax, rbx, cl);
        "shld16_5" => |a| a.shld(ax, bx, 5u32);
        "shld16cl" => |a| a.shld(ax, bx, cl);
        "shrd16cl" => |a| a.shrd(ax, bx, cl);
        "shrd16_3" => |a| a.shrd(ax, bx, 3u32);
    });
}

#[test]
fn diff_muldiv_bits() {
    run_all(cases! {
        "mul8" => |a| a.mul(bl);
        "mul16" => |a| a.mul(bx);
        "mul32" => |a| a.mul(ebx);
        "mul64" => |a| a.mul(rbx);
        "imul8" => |a| a.imul(bl);
        "imul32" => |a| a.imul(ebx);
        "imul64" => |a| a.imul(rbx);
        "imul2_16" => |a| a.imul_2(ax, bx);
        "imul2_32" => |a| a.imul_2(eax, ebx);
        "imul2_64" => |a| a.imul_2(rax, rbx);
        "imul3_32" => |a| a.imul_3(eax, ebx, -3i32);
        "imul3_64" => |a| a.imul_3(rax, rbx, 100_000i32);
        "bt32" => |a| a.bt(eax, ebx);
        "bts64" => |a| a.bts(rax, rbx);
        "btr16" => |a| a.btr(ax, bx);
        "btc32i" => |a| a.btc(eax, 37u32);
        "bsf32" => |a| a.bsf(eax, ebx);
        "bsr64" => |a| a.bsr(rax, rbx);
        "bsf16" => |a| a.bsf(ax, bx);
        "lzcnt32" => |a| a.lzcnt(eax, ebx);
        "lzcnt16" => |a| a.lzcnt(ax, bx);
        "tzcnt64" => |a| a.tzcnt(rax, rbx);
        "popcnt32" => |a| a.popcnt(eax, ebx);
        "popcnt64" => |a| a.popcnt(rax, rbx);
        "bswap32" => |a| a.bswap(eax);
        "bswap64" => |a| a.bswap(rbx);
    });
}

#[test]
fn diff_data() {
    run_all(cases! {
        "cmova" => |a| a.cmova(eax, ebx);
        "cmovl" => |a| a.cmovl(rax, rbx);
        "cmovle16" => |a| a.cmovle(ax, bx);
        "cmovp" => |a| a.cmovp(eax, ebx);
        "cmovo" => |a| a.cmovo(rax, rbx);
        "set_all" => |a| {
            a.cmp(rsi, rdi)?;
            a.seta(al)?; a.setae(ah)?; a.setb(bl)?; a.setbe(bh)?; a.sete(cl)?; a.setne(ch)?;
            a.setg(dl)?; a.setge(dh)?; a.setl(r8b)?; a.setle(r9b)?; a.sets(r10b)?; a.setns(r11b)?;
            a.seto(r12b)?; a.setno(r13b)?; a.setp(r14b)?; a.setnp(r15b)
        };
        "set_after_add8" => |a| {
            a.add(sil, dil)?;
            a.seta(al)?; a.setb(bl)?; a.setg(dl)?; a.setl(r8b)?; a.setle(r9b)?; a.seto(r12b)?; a.setp(r14b)
        };
        "set_after_dec" => |a| {
            a.dec(esi)?;
            a.seta(al)?; a.setb(bl)?; a.setg(dl)?; a.setl(r8b)?; a.setle(r9b)?; a.seto(r12b)?; a.setp(r14b)
        };
        "set_after_test" => |a| {
            a.test(rsi, rdi)?;
            a.seta(al)?; a.setbe(bl)?; a.setg(dl)?; a.setl(r8b)?; a.setle(r9b)?; a.seto(r12b)?; a.setp(r14b)
        };
        "set_after_shl" => |a| {
            a.shl(esi, cl)?;
            a.seta(al)?; a.setb(bl)?; a.setg(dl)?; a.setl(r8b)?; a.sete(r9b)?; a.setp(r14b)
        };
        "xadd32" => |a| a.xadd(eax, ebx);
        "xadd8" => |a| a.xadd(al, bl);
        "cmpxchg32" => |a| a.cmpxchg(ecx, ebx);
        "cmpxchg64" => |a| a.cmpxchg(rcx, rbx);
        "cmpxchg8eq" => |a| { a.mov(ecx, eax)?; a.cmpxchg(cl, bl) };
        "xchg16" => |a| a.xchg(ax, bx);
        "xchg32" => |a| a.xchg(ecx, ebx);
        "cbw" => |a| a.cbw();
        "cwde" => |a| a.cwde();
        "cdqe" => |a| a.cdqe();
        "cwd" => |a| a.cwd();
        "cdq" => |a| a.cdq();
        "cqo" => |a| a.cqo();
        "movsx8" => |a| a.movsx(eax, bl);
        "movsx16_64" => |a| a.movsx(rax, bx);
        "movsxd" => |a| a.movsxd(rax, ebx);
        "movzx8h" => |a| a.movzx(eax, bh);
        "lea" => |a| a.lea(eax, ptr(rbx + rcx * 4 - 8));
        "lea64" => |a| a.lea(rax, ptr(rbx + rsi * 8 + 0x1000));
        "sahf_lahf" => |a| { a.sahf()?; a.cmc()?; a.lahf() };
        "mov8h" => |a| { a.mov(ah, bl)?; a.mov(ch, dh) };
        "mov32_zext" => |a| a.mov(eax, ebx);
    });
}

/// Division: interpreted results match native ones; inputs that would fault natively must fault with
/// a divide error in the interpreter.
#[test]
fn diff_div() {
    let list = cases! {
        "div8" => |a| a.div(bl);
        "div16" => |a| a.div(bx);
        "div32" => |a| a.div(ebx);
        "div64" => |a| a.div(rbx);
        "idiv8" => |a| a.idiv(bl);
        "idiv16" => |a| a.idiv(bx);
        "idiv32" => |a| a.idiv(ebx);
        "idiv64" => |a| a.idiv(rbx);
    };
    for (name, snippet) in list {
        let size: u32 = name
            .trim_start_matches(|c: char| c.is_alphabetic())
            .parse::<u32>()
            .unwrap_or(8)
            / 8;
        let signed = name.starts_with('i');
        let native = Native::new(0x4000);
        let mut m = common::machine(Arch::X64);
        let code = common::load(&mut m, |a| {
            snippet(a)?;
            a.ret()
        });
        let mut rng = Rng(77);
        for iter in 0..400 {
            let mut st = State {
                regs: [0; 16],
                flags: 0x202,
                xmm: [[0; 2]; 8],
            };
            for r in st.regs.iter_mut() {
                *r = rng.value();
            }
            if iter % 3 == 0 {
                st.regs[2] = if rng.next().is_multiple_of(2) {
                    0
                } else {
                    u64::MAX
                };
            }
            let bits = size * 8;
            let mask = if bits == 64 {
                u64::MAX
            } else {
                (1u64 << bits) - 1
            };
            let divisor = st.regs[3] & mask;
            let (hi, lo) = if size == 1 {
                ((st.regs[0] >> 8) & 0xff, st.regs[0] & 0xff)
            } else {
                (st.regs[2] & mask, st.regs[0] & mask)
            };
            let dividend = ((hi as u128) << bits) | lo as u128;
            let faults = if divisor == 0 {
                true
            } else if signed {
                let sh = 128 - 2 * bits;
                let n = ((dividend << sh) as i128) >> sh;
                let d = ((divisor as u128) << (128 - bits)) as i128 >> (128 - bits);
                match n.checked_div(d) {
                    Some(q) => q < -(1i128 << (bits - 1)) || q >= (1i128 << (bits - 1)),
                    None => true,
                }
            } else {
                dividend / divisor as u128 > mask as u128
            };
            m.prepare_guest_call(code, CallConv::Cdecl, &[])
                .expect("prepare");
            let stack = m.cpu.regs[4];
            m.cpu.regs = st.regs;
            m.cpu.regs[4] = stack;
            m.cpu.set_flags(st.flags);
            let exit = m.run_limited(1000);
            if faults {
                match exit {
                    Some(Exit::Fault(f)) => assert_eq!(f.kind, FaultKind::DivideError, "{name}"),
                    other => panic!("{name} #{iter}: expected divide error, got {other:?}"),
                }
                continue;
            }
            assert!(
                matches!(exit, Some(Exit::HostReturn)),
                "{name} #{iter}: {exit:?}"
            );
            native.run(&snippet, &mut st);
            let mut got = m.cpu.regs;
            got[4] = 0;
            st.regs[4] = 0;
            assert_eq!(got, st.regs, "{name} #{iter}");
        }
    }
}

#[test]
fn diff_sse() {
    run_all(cases! {
        "pxor" => |a| a.pxor(xmm0, xmm1);
        "por" => |a| a.por(xmm2, xmm3);
        "pand" => |a| a.pand(xmm0, xmm7);
        "pandn" => |a| a.pandn(xmm4, xmm5);
        "xorps" => |a| a.xorps(xmm1, xmm2);
        "andps" => |a| a.andps(xmm1, xmm2);
        "andnps" => |a| a.andnps(xmm1, xmm2);
        "orpd" => |a| a.orpd(xmm1, xmm2);
        "xorpd" => |a| a.xorpd(xmm6, xmm2);
        "paddb" => |a| a.paddb(xmm0, xmm1);
        "paddw" => |a| a.paddw(xmm0, xmm1);
        "paddd" => |a| a.paddd(xmm0, xmm1);
        "paddq" => |a| a.paddq(xmm0, xmm1);
        "psubb" => |a| a.psubb(xmm0, xmm1);
        "psubw" => |a| a.psubw(xmm0, xmm1);
        "psubd" => |a| a.psubd(xmm0, xmm1);
        "psubq" => |a| a.psubq(xmm0, xmm1);
        "pcmpeqb" => |a| { a.movdqa(xmm2, xmm1)?; a.pinsrw(xmm2, eax, 3)?; a.pcmpeqb(xmm1, xmm2) };
        "pcmpeqw" => |a| a.pcmpeqw(xmm0, xmm0);
        "pcmpeqd" => |a| { a.movdqa(xmm3, xmm0)?; a.psrldq(xmm3, 4)?; a.pcmpeqd(xmm3, xmm0) };
        "pcmpgtb" => |a| a.pcmpgtb(xmm0, xmm1);
        "pcmpgtw" => |a| a.pcmpgtw(xmm0, xmm1);
        "pcmpgtd" => |a| a.pcmpgtd(xmm0, xmm1);
        "pmovmskb" => |a| a.pmovmskb(eax, xmm1);
        "movmskps" => |a| a.movmskps(ecx, xmm2);
        "movmskpd" => |a| a.movmskpd(r9d, xmm3);
        "punpcklbw" => |a| a.punpcklbw(xmm0, xmm1);
        "punpckhbw" => |a| a.punpckhbw(xmm0, xmm1);
        "punpcklwd" => |a| a.punpcklwd(xmm0, xmm1);
        "punpckhwd" => |a| a.punpckhwd(xmm0, xmm1);
        "punpckldq" => |a| a.punpckldq(xmm0, xmm1);
        "punpckhdq" => |a| a.punpckhdq(xmm0, xmm1);
        "punpcklqdq" => |a| a.punpcklqdq(xmm0, xmm1);
        "punpckhqdq" => |a| a.punpckhqdq(xmm0, xmm1);
        "unpcklps" => |a| a.unpcklps(xmm0, xmm1);
        "unpckhps" => |a| a.unpckhps(xmm0, xmm1);
        "unpcklpd" => |a| a.unpcklpd(xmm0, xmm1);
        "unpckhpd" => |a| a.unpckhpd(xmm0, xmm1);
        "pshufd" => |a| a.pshufd(xmm0, xmm1, 0x1b);
        "pshufd2" => |a| a.pshufd(xmm0, xmm0, 0xe1);
        "pshuflw" => |a| a.pshuflw(xmm0, xmm1, 0x4e);
        "pshufhw" => |a| a.pshufhw(xmm0, xmm1, 0x93);
        "shufps" => |a| a.shufps(xmm0, xmm1, 0x72);
        "psrldq" => |a| { a.psrldq(xmm0, 3)?; a.psrldq(xmm1, 16) };
        "pslldq" => |a| { a.pslldq(xmm0, 5)?; a.pslldq(xmm1, 15) };
        "psrl_imm" => |a| { a.psrlw(xmm0, 3)?; a.psrld(xmm1, 31)?; a.psrlq(xmm2, 63)?; a.psrlq(xmm3, 64)?; a.psrlw(xmm4, 16) };
        "psll_imm" => |a| { a.psllw(xmm0, 1)?; a.pslld(xmm1, 17)?; a.psllq(xmm2, 33)?; a.pslld(xmm3, 32) };
        "psra_imm" => |a| { a.psraw(xmm0, 3)?; a.psrad(xmm1, 31)?; a.psraw(xmm2, 40)?; a.psrad(xmm3, 0) };
        "psrl_xmm" => |a| { a.movd(xmm7, ecx)?; a.psrlq(xmm0, xmm7)?; a.psrld(xmm1, xmm7)?; a.psraw(xmm2, xmm7)?; a.psllw(xmm3, xmm7) };
        "movd" => |a| { a.movd(eax, xmm1)?; a.movd(xmm2, ebx) };
        "movq" => |a| { a.movq(rax, xmm1)?; a.movq(xmm2, rbx)?; a.movq(xmm3, xmm4) };
        "movss" => |a| a.movss(xmm0, xmm1);
        "movsd" => |a| a.movsd_2(xmm0, xmm1);
        "movhlps" => |a| a.movhlps(xmm0, xmm1);
        "movlhps" => |a| a.movlhps(xmm0, xmm1);
        "pminub" => |a| a.pminub(xmm0, xmm1);
        "pmaxub" => |a| a.pmaxub(xmm0, xmm1);
        "pminsw" => |a| a.pminsw(xmm0, xmm1);
        "pmaxsw" => |a| a.pmaxsw(xmm0, xmm1);
        "pavgb" => |a| a.pavgb(xmm0, xmm1);
        "pavgw" => |a| a.pavgw(xmm0, xmm1);
        "paddusb" => |a| a.paddusb(xmm0, xmm1);
        "paddusw" => |a| a.paddusw(xmm0, xmm1);
        "psubusb" => |a| a.psubusb(xmm0, xmm1);
        "psubusw" => |a| a.psubusw(xmm0, xmm1);
        "paddsb" => |a| a.paddsb(xmm0, xmm1);
        "paddsw" => |a| a.paddsw(xmm0, xmm1);
        "psubsb" => |a| a.psubsb(xmm0, xmm1);
        "psubsw" => |a| a.psubsw(xmm0, xmm1);
        "pmullw" => |a| a.pmullw(xmm0, xmm1);
        "pmulhw" => |a| a.pmulhw(xmm0, xmm1);
        "pmulhuw" => |a| a.pmulhuw(xmm0, xmm1);
        "pmuludq" => |a| a.pmuludq(xmm0, xmm1);
        "pmaddwd" => |a| a.pmaddwd(xmm0, xmm1);
        "psadbw" => |a| a.psadbw(xmm0, xmm1);
        "packsswb" => |a| a.packsswb(xmm0, xmm1);
        "packuswb" => |a| a.packuswb(xmm0, xmm1);
        "packssdw" => |a| a.packssdw(xmm0, xmm1);
        "movaps" => |a| { a.movaps(xmm0, xmm1)?; a.movdqa(xmm2, xmm3)?; a.movupd(xmm4, xmm5) };
    });
}
