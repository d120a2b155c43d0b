//! Privileged/system instructions (port I/O, cpuid, rdtsc, cli/sti, cr8, fs:/gs:) and SSE data ops.
mod common;

use std::sync::{Arc, Mutex};

use common::*;
use dbt::iced_x86::code_asm::*;
use dbt::iced_x86::{Decoder, DecoderOptions};
use dbt::{is_supported, Arch, PortIo, Reg};

#[derive(Default)]
struct Log(Vec<(char, u16, u8, u32)>);

struct Ports(Arc<Mutex<Log>>);

impl PortIo for Ports {
    fn port_read(&mut self, port: u16, size: u8) -> u32 {
        self.0.lock().unwrap().0.push(('r', port, size, 0));
        0x1234_5600 | port as u32 & 0xff
    }
    fn port_write(&mut self, port: u16, size: u8, value: u32) {
        self.0.lock().unwrap().0.push(('w', port, size, value));
    }
}

#[test]
fn port_io_hook() {
    for arch in [Arch::X86, Arch::X64] {
        let log = Arc::new(Mutex::new(Log::default()));
        let mut m = machine(arch);
        m.set_port_io(Box::new(Ports(log.clone())));
        let code = load(&mut m, |a| {
            a.mov(eax, 0xaabb_ccddu32)?;
            a.out(0x80u32, al)?;
            a.mov(dx, 0xcf8u32)?;
            a.out(dx, eax)?;
            a.out(dx, ax)?;
            a.in_(eax, dx)?;
            a.mov(ebx, eax)?;
            a.in_(al, 0x61u32)?;
            a.ret()
        });
        call(&mut m, code);
        let l = log.lock().unwrap();
        assert_eq!(
            l.0,
            vec![
                ('w', 0x80, 1, 0xdd),
                ('w', 0xcf8, 4, 0xaabb_ccdd),
                ('w', 0xcf8, 2, 0xccdd),
                ('r', 0xcf8, 4, 0),
                ('r', 0x61, 1, 0)
            ]
        );
        assert_eq!(m.cpu.reg(Reg::Rbx), 0x1234_56f8);
        assert_eq!(m.cpu.reg(Reg::Rax), 0x1234_5661);
    }
    // default: reads all ones, writes ignored
    let m = run(
        Arch::X86,
        |_| {},
        |a| {
            a.xor(eax, eax)?;
            a.in_(ax, 0x60u32)?;
            a.ret()
        },
    );
    assert_eq!(m.cpu.reg(Reg::Rax), 0xffff);
}

#[test]
fn cpuid_and_rdtsc() {
    let m = run(
        Arch::X64,
        |_| {},
        |a| {
            a.xor(eax, eax)?;
            a.cpuid()?;
            a.mov(r8d, eax)?;
            a.mov(r9d, ebx)?;
            a.mov(r10d, edx)?;
            a.mov(r11d, ecx)?;
            a.mov(eax, 1u32)?;
            a.cpuid()?;
            a.mov(r12d, edx)?;
            a.mov(r13d, ecx)?;
            a.rdtsc()?;
            a.shl(rdx, 32)?;
            a.or(rax, rdx)?;
            a.mov(r14, rax)?;
            a.nop()?;
            a.rdtsc()?;
            a.shl(rdx, 32)?;
            a.or(rax, rdx)?;
            a.sub(rax, r14)?;
            a.ret()
        },
    );
    let vendor: Vec<u8> = [Reg::R9, Reg::R10, Reg::R11]
        .iter()
        .flat_map(|r| (m.cpu.reg(*r) as u32).to_le_bytes())
        .collect();
    assert_eq!(vendor, b"GenuineIntel");
    assert_eq!(m.cpu.reg(Reg::R8), 1);
    assert_eq!(m.cpu.reg(Reg::R12) & (3 << 25), 3 << 25); // SSE, SSE2
    assert_eq!(m.cpu.reg(Reg::R13) & (1 << 31), 0); // no hypervisor
    assert!(m.cpu.reg(Reg::Rax) > 0 && m.cpu.reg(Reg::Rax) < 1 << 20);
}

#[test]
fn cli_sti_cr8() {
    let m = run(
        Arch::X64,
        |_| {},
        |a| {
            a.cli()?;
            a.pushfq()?;
            a.pop(rbx)?;
            a.sti()?;
            a.mov(eax, 2u32)?;
            a.mov(cr8, rax)?;
            a.mov(rcx, cr8)?;
            a.ret()
        },
    );
    assert_eq!(m.cpu.reg(Reg::Rbx) & 0x200, 0);
    assert_eq!(m.cpu.flags() & 0x200, 0x200);
    assert_eq!(m.cpu.cr8, 2);
    assert_eq!(m.cpu.reg(Reg::Rcx), 2);
}

#[test]
fn fs_gs_segment_reads() {
    let mut m = machine(Arch::X86);
    let pcr = data(&mut m, 0x1000);
    m.mem.write_u32(pcr + 0x124, 0xcafe).unwrap();
    let code = load(&mut m, |a| {
        a.mov(eax, dword_ptr(0x124).fs())?;
        a.mov(ecx, 0x10u32)?;
        a.mov(dword_ptr(ecx + 0x200).fs(), eax)?;
        a.ret()
    });
    m.cpu.fs_base = pcr;
    call(&mut m, code);
    assert_eq!(m.cpu.reg(Reg::Rax), 0xcafe);
    assert_eq!(m.mem.read_u32(pcr + 0x210).unwrap(), 0xcafe);

    let mut m = machine(Arch::X64);
    let pcr = data(&mut m, 0x1000);
    m.mem.write_u64(pcr + 0x188, 0x1122_3344_5566_7788).unwrap();
    let code = load(&mut m, |a| {
        a.mov(rax, qword_ptr(0x188).gs())?;
        a.lea(rbx, qword_ptr(0x188).gs())?; // lea ignores the segment base
        a.ret()
    });
    m.cpu.gs_base = pcr;
    call(&mut m, code);
    assert_eq!(m.cpu.reg(Reg::Rax), 0x1122_3344_5566_7788);
    assert_eq!(m.cpu.reg(Reg::Rbx), 0x188);
}

#[test]
fn sse_moves_and_integer_ops() {
    let mut m = machine(Arch::X64);
    let d = data(&mut m, 0x1000);
    let src: Vec<u8> = (1..=32u8).collect();
    m.mem.write_bytes(d, &src).unwrap();
    let code = load(&mut m, |a| {
        a.mov(rsi, d)?;
        a.movdqu(xmm0, xmmword_ptr(rsi + 1))?;
        a.movups(xmmword_ptr(rsi + 0x101), xmm0)?;
        a.pxor(xmm1, xmm1)?;
        a.movaps(xmmword_ptr(rsi + 0x200), xmm1)?;
        a.movdqa(xmm2, xmmword_ptr(rsi))?;
        a.paddb(xmm2, xmm2)?;
        a.movdqa(xmmword_ptr(rsi + 0x300), xmm2)?;
        a.mov(eax, 0x8000_00ffu32)?;
        a.movd(xmm3, eax)?;
        a.pshufd(xmm3, xmm3, 0)?;
        a.movq(rbx, xmm3)?;
        a.pcmpeqb(xmm4, xmm4)?;
        a.pmovmskb(ecx, xmm4)?;
        a.movq(xmm5, qword_ptr(rsi))?;
        a.punpcklbw(xmm5, xmm1)?;
        a.movdqa(xmmword_ptr(rsi + 0x310), xmm5)?;
        a.movdqa(xmm6, xmmword_ptr(rsi))?;
        a.psrldq(xmm6, 15)?;
        a.movq(rdx, xmm6)?;
        a.movdqa(xmm7, xmmword_ptr(rsi))?;
        a.psllq(xmm7, 8)?;
        a.psrad(xmm3, 31)?;
        a.movd(r8d, xmm3)?;
        a.movhps(xmm1, qword_ptr(rsi + 8))?;
        a.movhlps(xmm0, xmm1)?;
        a.movq(r9, xmm0)?;
        a.movss(xmm8, dword_ptr(rsi + 4))?;
        a.movsd_2(qword_ptr(rsi + 0x320), xmm8)?;
        a.shufps(xmm7, xmm7, 0x1b)?;
        a.movups(xmmword_ptr(rsi + 0x330), xmm7)?;
        a.ret()
    });
    call(&mut m, code);
    assert_eq!(m.mem.read_vec(d + 0x101, 16).unwrap(), src[1..17].to_vec());
    assert_eq!(m.mem.read_vec(d + 0x200, 16).unwrap(), vec![0; 16]);
    let doubled: Vec<u8> = src[..16].iter().map(|b| b * 2).collect();
    assert_eq!(m.mem.read_vec(d + 0x300, 16).unwrap(), doubled);
    assert_eq!(m.cpu.reg(Reg::Rbx), 0x8000_00ff_8000_00ff);
    assert_eq!(m.cpu.reg(Reg::Rcx), 0xffff);
    let unpacked: Vec<u8> = src[..8].iter().flat_map(|b| [*b, 0]).collect();
    assert_eq!(m.mem.read_vec(d + 0x310, 16).unwrap(), unpacked);
    assert_eq!(m.cpu.reg(Reg::Rdx), 16);
    assert_eq!(m.cpu.reg(Reg::R8), 0xffff_ffff);
    assert_eq!(
        m.cpu.reg(Reg::R9),
        u64::from_le_bytes(src[8..16].try_into().unwrap())
    );
    assert_eq!(
        m.mem.read_u64(d + 0x320).unwrap(),
        u32::from_le_bytes(src[4..8].try_into().unwrap()) as u64
    );
    let q0 = u64::from_le_bytes(src[0..8].try_into().unwrap()) << 8;
    let q1 = u64::from_le_bytes(src[8..16].try_into().unwrap()) << 8;
    let lanes = [q0 as u32, (q0 >> 32) as u32, q1 as u32, (q1 >> 32) as u32];
    let expect: Vec<u8> = [lanes[3], lanes[2], lanes[1], lanes[0]]
        .iter()
        .flat_map(|l| l.to_le_bytes())
        .collect();
    assert_eq!(m.mem.read_vec(d + 0x330, 16).unwrap(), expect);
}

#[test]
fn sse_alignment_fault() {
    let (_, f) = run_fault(
        Arch::X64,
        |_| {},
        |a| {
            a.mov(rsi, rsp)?;
            a.or(rsi, 4)?;
            a.movaps(xmm0, xmmword_ptr(rsi))?;
            a.ret()
        },
    );
    assert!(matches!(f.kind, dbt::FaultKind::GeneralProtection(ref s) if s.contains("misaligned")));
}

#[test]
fn is_supported_matches_executor() {
    let mut a = CodeAssembler::new(64).unwrap();
    a.add(rax, rbx).unwrap();
    a.fld(dword_ptr(rsp)).unwrap();
    a.movdqa(xmm0, xmm1).unwrap();
    a.paddb(mm0, mm1).unwrap();
    a.mov(rax, cr0).unwrap();
    a.mov(rax, cr8).unwrap();
    a.vpxor(xmm0, xmm1, xmm2).unwrap();
    let bytes = a.assemble(0x1000).unwrap();
    let got: Vec<bool> = Decoder::with_ip(64, &bytes, 0x1000, DecoderOptions::NONE)
        .into_iter()
        .map(|i| is_supported(&i))
        .collect();
    assert_eq!(got, vec![true, false, true, false, false, true, false]);
}

#[test]
fn xlat_sahf_lahf_bswap_x86() {
    let mut m = machine(Arch::X86);
    let d = data(&mut m, 0x1000);
    m.mem.write_bytes(d, &[10, 11, 12, 13, 14]).unwrap();
    let code = load(&mut m, |a| {
        a.mov(ebx, d as u32)?;
        a.mov(eax, 3u32)?;
        a.xlatb()?;
        a.mov(esi, eax)?;
        a.mov(ah, 0xd5u32)?;
        a.sahf()?;
        a.setc(cl)?;
        a.lahf()?;
        a.mov(edi, 0x1122_3344u32)?;
        a.bswap(edi)?;
        a.ret()
    });
    call(&mut m, code);
    assert_eq!(m.cpu.reg(Reg::Rsi), 13);
    assert_eq!(m.cpu.reg(Reg::Rcx) & 0xff, 1);
    assert_eq!((m.cpu.reg(Reg::Rax) >> 8) & 0xff, 0xd7);
    assert_eq!(m.cpu.reg(Reg::Rdi), 0x4433_2211);
}

#[test]
fn nops_hints_and_movabs() {
    let mut m = machine(Arch::X64);
    let d = data(&mut m, 0x1000);
    m.mem.write_u64(d + 8, 0x0102_0304_0506_0708).unwrap();
    let mut bytes = vec![
        0x90, // nop
        0x66, 0x90, // xchg ax, ax
        0x0f, 0x1f, 0x00, // nop dword [rax]
        0x66, 0x2e, 0x0f, 0x1f, 0x84, 0x00, 0x00, 0x00, 0x00, 0x00, // nop word cs:[rax+rax+0]
        0xf3, 0x0f, 0x1e, 0xfa, // endbr64
        0xf3, 0x90, // pause
        0x0f, 0xae, 0xe8, // lfence
        0x0f, 0x18, 0x08, // prefetcht0 [rax]
        0x48, 0xa1, // mov rax, [moffs64]
    ];
    bytes.extend_from_slice(&(d + 8).to_le_bytes());
    bytes.push(0xc3);
    let code = load(&mut m, |a| a.db(&bytes));
    call(&mut m, code);
    assert_eq!(m.cpu.reg(Reg::Rax), 0x0102_0304_0506_0708);
    let listing: Vec<bool> = Decoder::with_ip(64, &bytes, 0, DecoderOptions::NONE)
        .into_iter()
        .map(|i| is_supported(&i))
        .collect();
    assert!(listing.iter().all(|s| *s));
}
