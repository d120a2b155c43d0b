//! Arithmetic flags, shifts, multiplication and division, in both modes.
mod common;

use common::*;
use dbt::iced_x86::code_asm::*;
use dbt::{Arch, FaultKind, Reg};

fn flags_after(
    arch: Arch,
    a_val: u64,
    b_val: u64,
    cf_in: bool,
    op: fn(&mut CodeAssembler) -> Result<(), dbt::iced_x86::IcedError>,
) -> (u64, u64) {
    let m = run(
        arch,
        |m| {
            m.cpu.set_reg(Reg::Rax, a_val);
            m.cpu.set_reg(Reg::Rbx, b_val);
            m.cpu.set_flags(if cf_in { 0x203 } else { 0x202 });
        },
        |a| {
            op(a)?;
            a.ret()
        },
    );
    (m.cpu.reg(Reg::Rax), m.cpu.flags() & STATUS)
}

#[test]
fn add_sub_edges_32bit_mode() {
    let add = |a: &mut CodeAssembler| a.add(eax, ebx);
    assert_eq!(
        flags_after(Arch::X86, 0x7fff_ffff, 1, false, add),
        (0x8000_0000, OF | SF | AF | PF)
    );
    assert_eq!(
        flags_after(Arch::X86, 0xffff_ffff, 1, false, add),
        (0, CF | ZF | AF | PF)
    );
    let sub = |a: &mut CodeAssembler| a.sub(eax, ebx);
    assert_eq!(
        flags_after(Arch::X86, 0x8000_0000, 1, false, sub),
        (0x7fff_ffff, OF | AF | PF)
    );
    assert_eq!(
        flags_after(Arch::X86, 0, 1, false, sub),
        (0xffff_ffff, CF | SF | AF | PF)
    );
    let adc = |a: &mut CodeAssembler| a.adc(eax, ebx);
    assert_eq!(
        flags_after(Arch::X86, 0xffff_ffff, 0, true, adc),
        (0, CF | ZF | AF | PF)
    );
    assert_eq!(
        flags_after(Arch::X86, 0x7fff_fffe, 1, true, adc),
        (0x8000_0000, OF | SF | AF | PF)
    );
    let sbb = |a: &mut CodeAssembler| a.sbb(eax, ebx);
    assert_eq!(
        flags_after(Arch::X86, 0, 0, true, sbb),
        (0xffff_ffff, CF | SF | AF | PF)
    );
    assert_eq!(flags_after(Arch::X86, 5, 4, true, sbb), (0, ZF | PF));
    let sbb8 = |a: &mut CodeAssembler| a.sbb(al, bl);
    assert_eq!(
        flags_after(Arch::X86, 0x80, 0x7f, true, sbb8),
        (0, ZF | PF | OF | AF)
    );
}

#[test]
fn inc_dec_preserve_carry() {
    let inc = |a: &mut CodeAssembler| {
        a.stc()?;
        a.inc(eax)
    };
    assert_eq!(
        flags_after(Arch::X64, 0x7fff_ffff, 0, false, inc),
        (0x8000_0000, CF | OF | SF | AF | PF)
    );
    let dec = |a: &mut CodeAssembler| {
        a.add(ebx, ebx)?; // CF from this add survives dec
        a.dec(al)
    };
    assert_eq!(
        flags_after(Arch::X86, 0x80, 0x8000_0000, false, dec),
        (0x7f, CF | OF | AF)
    );
    let dec64 = |a: &mut CodeAssembler| a.dec(rax);
    assert_eq!(flags_after(Arch::X64, 1, 0, true, dec64), (0, CF | ZF | PF));
}

#[test]
fn shifts_and_rotates() {
    let shl = |a: &mut CodeAssembler| a.shl(eax, 1u32);
    assert_eq!(
        flags_after(Arch::X86, 0x8000_0001, 0, false, shl),
        (2, CF | OF)
    );
    let sar = |a: &mut CodeAssembler| {
        a.mov(cl, 36u32)?; // masked to 4
        a.sar(eax, cl)
    };
    assert_eq!(
        flags_after(Arch::X86, 0x8000_0018, 0, false, sar),
        (0xf800_0001, CF | SF)
    );
    let zero = |a: &mut CodeAssembler| {
        a.stc()?;
        a.mov(cl, 32u32)?; // masked to 0: flags untouched
        a.shr(eax, cl)
    };
    assert_eq!(flags_after(Arch::X86, 5, 0, false, zero), (5, CF));
    let rcl = |a: &mut CodeAssembler| a.rcl(al, 1u32);
    assert_eq!(flags_after(Arch::X64, 0x80, 0, true, rcl), (1, CF | OF));
    let ror = |a: &mut CodeAssembler| a.ror(rax, 4u32);
    assert_eq!(
        flags_after(Arch::X64, 0x1f, 0, false, ror).0,
        0xf000_0000_0000_0001
    );
    let shld = |a: &mut CodeAssembler| a.shld(eax, ebx, 8u32);
    assert_eq!(
        flags_after(Arch::X86, 0x1122_3344, 0xaabb_ccdd, false, shld).0,
        0x2233_44aa
    );
    let shrd = |a: &mut CodeAssembler| a.shrd(rax, rbx, 60u32);
    assert_eq!(flags_after(Arch::X64, 0x10, 0xabc, false, shrd).0, 0xabc0);
}

#[test]
fn mul_div() {
    let m = run(
        Arch::X86,
        |m| {
            m.cpu.set_reg(Reg::Rax, 0xffff_ffff);
            m.cpu.set_reg(Reg::Rbx, 0xffff_ffff);
        },
        |a| {
            a.mul(ebx)?;
            a.mov(esi, eax)?;
            a.mov(edi, edx)?;
            a.mov(eax, 100u32)?;
            a.cdq()?;
            a.mov(ecx, -7i32)?;
            a.idiv(ecx)?;
            a.imul_3(ebp, eax, 3i32)?;
            a.ret()
        },
    );
    assert_eq!(m.cpu.reg(Reg::Rsi), 1);
    assert_eq!(m.cpu.reg(Reg::Rdi), 0xffff_fffe);
    assert_eq!(m.cpu.reg(Reg::Rax), (-14i32) as u32 as u64);
    assert_eq!(m.cpu.reg(Reg::Rdx), 2);
    assert_eq!(m.cpu.reg(Reg::Rbp), (-42i32) as u32 as u64);

    let m = run(
        Arch::X64,
        |m| {
            m.cpu.set_reg(Reg::Rax, 0);
            m.cpu.set_reg(Reg::Rdx, 1);
            m.cpu.set_reg(Reg::Rbx, 2);
        },
        |a| {
            a.div(rbx)?;
            a.ret()
        },
    );
    assert_eq!(m.cpu.reg(Reg::Rax), 1 << 63);
    assert_eq!(m.cpu.reg(Reg::Rdx), 0);
}

#[test]
fn divide_errors() {
    for arch in [Arch::X86, Arch::X64] {
        let (_, f) = run_fault(
            arch,
            |m| m.cpu.set_reg(Reg::Rbx, 0),
            |a| {
                a.mov(eax, 1u32)?;
                a.div(ebx)?;
                a.ret()
            },
        );
        assert_eq!(f.kind, FaultKind::DivideError);
        let (m, f) = run_fault(
            arch,
            |m| m.cpu.set_reg(Reg::Rbx, 1),
            |a| {
                a.mov(edx, 1u32)?;
                a.div(ebx)?; // quotient overflow
                a.ret()
            },
        );
        assert_eq!(f.kind, FaultKind::DivideError);
        assert_eq!(f.rip, m.cpu.rip);
        let (_, f) = run_fault(
            arch,
            |_| {},
            |a| {
                a.mov(ax, 0x8000u32)?;
                a.cwd()?;
                a.mov(bx, -1i32)?;
                a.idiv(bx)?;
                a.ret()
            },
        );
        assert_eq!(f.kind, FaultKind::DivideError);
    }
}

#[test]
fn memory_operands_and_addressing() {
    for arch in [Arch::X86, Arch::X64] {
        let mut m = machine(arch);
        let d = data(&mut m, 0x1000);
        m.mem.write_u32(d + 0x10, 40).unwrap();
        let code = load(&mut m, |a| {
            if arch == Arch::X64 {
                a.mov(rsi, d)?;
                a.add(dword_ptr(rsi + 0x10), 2)?;
                a.mov(ecx, 4u32)?;
                a.add(dword_ptr(rsi + rcx * 4), 5)?;
                a.mov(eax, dword_ptr(rsi + rcx * 4))?;
                a.inc(qword_ptr(rsi + 0x20))?;
                a.not(byte_ptr(rsi + 0x28))?;
                a.neg(word_ptr(rsi + 0x30))?;
                a.movzx(ebx, byte_ptr(rsi + 0x28))?;
                a.movsx(rdx, word_ptr(rsi + 0x30))?;
                a.xchg(qword_ptr(rsi + 0x38), rdx)?;
            } else {
                a.mov(esi, d as u32)?;
                a.add(dword_ptr(esi + 0x10), 2)?;
                a.mov(ecx, 4u32)?;
                a.add(dword_ptr(esi + ecx * 4), 5)?;
                a.mov(eax, dword_ptr(esi + ecx * 4))?;
                a.inc(dword_ptr(esi + 0x20))?;
                a.not(byte_ptr(esi + 0x28))?;
                a.neg(word_ptr(esi + 0x30))?;
                a.movzx(ebx, byte_ptr(esi + 0x28))?;
                a.movsx(edx, word_ptr(esi + 0x30))?;
                a.xchg(dword_ptr(esi + 0x38), edx)?;
            }
            a.ret()
        });
        m.mem.write_u16(d + 0x30, 1).unwrap();
        call(&mut m, code);
        assert_eq!(m.cpu.reg(Reg::Rax), 47);
        assert_eq!(m.mem.read_u32(d + 0x20).unwrap(), 1);
        assert_eq!(m.cpu.reg(Reg::Rbx), 0xff);
        assert_eq!(m.mem.read_u16(d + 0x30).unwrap(), 0xffff);
        assert_eq!(m.cpu.reg(Reg::Rdx), 0);
        let full = if arch == Arch::X64 {
            u64::MAX
        } else {
            0xffff_ffff
        };
        assert_eq!(m.mem.read_ptr(arch, d + 0x38).unwrap(), full);
    }
}

#[test]
fn rip_relative_and_moffs() {
    let mut m = machine(Arch::X64);
    let code = load(&mut m, |a| {
        let mut val = a.create_label();
        a.mov(rax, qword_ptr(val))?;
        a.lea(rbx, ptr(val))?;
        a.ret()?;
        a.set_label(&mut val)?;
        a.dq(&[0x1122_3344_5566_7788])
    });
    call(&mut m, code);
    assert_eq!(m.cpu.reg(Reg::Rax), 0x1122_3344_5566_7788);
    assert!(m.cpu.reg(Reg::Rbx) > code && m.cpu.reg(Reg::Rbx) < code + 0x40);

    let mut m = machine(Arch::X86);
    let d = data(&mut m, 0x1000);
    m.mem.write_u32(d, 0xdead_beef).unwrap();
    // mov eax, [moffs32]; mov [moffs32+4], eax
    let mut bytes = vec![0xa1];
    bytes.extend_from_slice(&(d as u32).to_le_bytes());
    bytes.push(0xa3);
    bytes.extend_from_slice(&((d + 4) as u32).to_le_bytes());
    bytes.push(0xc3);
    let code = load(&mut m, |a| a.db(&bytes));
    call(&mut m, code);
    assert_eq!(m.mem.read_u32(d + 4).unwrap(), 0xdead_beef);
}

#[test]
fn bit_ops_memory() {
    let mut m = machine(Arch::X64);
    let d = data(&mut m, 0x1000);
    let code = load(&mut m, |a| {
        a.mov(rsi, d + 0x100)?;
        a.mov(rax, -1i64)?; // bit -1 => byte 0xff of the previous qword
        a.bts(qword_ptr(rsi), rax)?;
        a.mov(eax, 70u32)?;
        a.bts(dword_ptr(rsi), eax)?; // dword at +8, bit 6
        a.bt(dword_ptr(rsi), 3)?;
        a.setb(cl)?;
        a.btc(dword_ptr(rsi), 3)?;
        a.bt(dword_ptr(rsi), 3)?;
        a.setb(dl)?;
        a.ret()
    });
    call(&mut m, code);
    assert_eq!(m.mem.read_u8(d + 0xff).unwrap(), 0x80);
    assert_eq!(m.mem.read_u32(d + 0x108).unwrap(), 0x40);
    assert_eq!(m.cpu.reg(Reg::Rcx) & 0xff, 0);
    assert_eq!(m.cpu.reg(Reg::Rdx) & 0xff, 1);
}

#[test]
fn cmpxchg_family() {
    let mut m = machine(Arch::X86);
    let d = data(&mut m, 0x1000);
    m.mem.write_u64(d, 0x1111_1111_2222_2222).unwrap();
    let code = load(&mut m, |a| {
        a.mov(esi, d as u32)?;
        a.mov(eax, 0x2222_2222u32)?;
        a.mov(edx, 0x1111_1111u32)?;
        a.mov(ebx, 0x4444_4444u32)?;
        a.mov(ecx, 0x3333_3333u32)?;
        a.cmpxchg8b(qword_ptr(esi))?;
        a.setz(byte_ptr(esi + 8))?;
        a.cmpxchg8b(qword_ptr(esi))?; // fails: loads edx:eax
        a.setz(byte_ptr(esi + 9))?;
        a.mov(ecx, 5u32)?;
        a.xadd(dword_ptr(esi + 12), ecx)?;
        a.xadd(dword_ptr(esi + 12), ecx)?;
        a.ret()
    });
    call(&mut m, code);
    assert_eq!(m.mem.read_u64(d).unwrap(), 0x3333_3333_4444_4444);
    assert_eq!(m.mem.read_u8(d + 8).unwrap(), 1);
    assert_eq!(m.mem.read_u8(d + 9).unwrap(), 0);
    assert_eq!(m.cpu.reg(Reg::Rax), 0x4444_4444);
    assert_eq!(m.cpu.reg(Reg::Rdx), 0x3333_3333);
    assert_eq!(m.mem.read_u32(d + 12).unwrap(), 5);
    assert_eq!(m.cpu.reg(Reg::Rcx), 5);

    let mut m = machine(Arch::X64);
    let d = data(&mut m, 0x1000);
    m.mem.write_u64(d + 16, 7).unwrap();
    let code = load(&mut m, |a| {
        a.mov(rsi, d + 16)?;
        a.mov(eax, 7u32)?;
        a.xor(edx, edx)?;
        a.mov(ebx, 9u32)?;
        a.mov(ecx, 10u32)?;
        a.cmpxchg16b(xmmword_ptr(rsi))?;
        a.setz(r8b)?;
        a.mov(eax, 1u32)?;
        a.mov(r9d, 2u32)?;
        a.cmpxchg(qword_ptr(rsi), r9)?; // fails: rax = 9
        a.ret()
    });
    call(&mut m, code);
    assert_eq!(m.mem.read_u64(d + 16).unwrap(), 9);
    assert_eq!(m.mem.read_u64(d + 24).unwrap(), 10);
    assert_eq!(m.cpu.reg(Reg::R8) & 0xff, 1);
    assert_eq!(m.cpu.reg(Reg::Rax), 9);
    let (_, f) = run_fault(
        Arch::X64,
        |_| {},
        |a| {
            a.mov(rsi, rsp)?;
            a.or(rsi, 8)?;
            a.cmpxchg16b(xmmword_ptr(rsi))?;
            a.ret()
        },
    );
    assert!(matches!(f.kind, FaultKind::GeneralProtection(_)));
}
