//! String instructions (rep prefixes, direction flag, faults mid-way) and stack instructions.
mod common;

use common::*;
use dbt::iced_x86::code_asm::*;
use dbt::{Arch, CallConv, Exit, FaultKind, Prot, Reg};

#[test]
fn rep_movs_stos_forward_and_backward() {
    for arch in [Arch::X86, Arch::X64] {
        let mut m = machine(arch);
        let d = data(&mut m, 0x4000);
        let src: Vec<u8> = (0..200u8).collect();
        m.mem.write_bytes(d, &src).unwrap();
        let code = load(&mut m, |a| {
            if arch == Arch::X64 {
                a.mov(rsi, d)?;
                a.lea(rdi, ptr(rsi + 0x1000))?;
                a.mov(ecx, 50u32)?;
                a.rep().movsd()?;
                a.mov(eax, 0xabu32)?;
                a.mov(ecx, 16u32)?;
                a.mov(rdi, d + 0x2000)?;
                a.rep().stosb()?;
                // backward copy of 8 qwords
                a.std()?;
                a.mov(rsi, d + 56)?;
                a.mov(rdi, d + 0x3000 + 56)?;
                a.mov(ecx, 8u32)?;
                a.rep().movsq()?;
                a.cld()?;
            } else {
                a.mov(esi, d as u32)?;
                a.lea(edi, ptr(esi + 0x1000))?;
                a.mov(ecx, 50u32)?;
                a.rep().movsd()?;
                a.mov(eax, 0xabu32)?;
                a.mov(ecx, 16u32)?;
                a.mov(edi, (d + 0x2000) as u32)?;
                a.rep().stosb()?;
                a.std()?;
                a.mov(esi, (d + 60) as u32)?;
                a.mov(edi, (d + 0x3000 + 60) as u32)?;
                a.mov(ecx, 16u32)?;
                a.rep().movsd()?;
                a.cld()?;
            }
            a.ret()
        });
        call(&mut m, code);
        assert_eq!(m.mem.read_vec(d + 0x1000, 200).unwrap(), src);
        assert_eq!(
            m.mem.read_vec(d + 0x2000, 17).unwrap(),
            [vec![0xab; 16], vec![0]].concat()
        );
        assert_eq!(m.mem.read_vec(d + 0x3000, 64).unwrap(), src[..64].to_vec());
        assert_eq!(m.cpu.reg(Reg::Rcx), 0);
        assert_eq!(m.cpu.flags() & 0x400, 0);
    }
}

#[test]
fn overlapping_movsb_replicates_pattern() {
    let mut m = machine(Arch::X64);
    let d = data(&mut m, 0x1000);
    m.mem.write_bytes(d, b"ab").unwrap();
    let code = load(&mut m, |a| {
        a.mov(rsi, d)?;
        a.lea(rdi, ptr(rsi + 2))?;
        a.mov(ecx, 8u32)?;
        a.rep().movsb()?;
        a.ret()
    });
    call(&mut m, code);
    assert_eq!(m.mem.read_vec(d, 10).unwrap(), b"ababababab".to_vec());
}

#[test]
fn repne_scasb_strlen_and_repe_cmpsb() {
    for arch in [Arch::X86, Arch::X64] {
        let mut m = machine(arch);
        let d = data(&mut m, 0x1000);
        m.mem.write_bytes(d, b"hello world\0").unwrap();
        m.mem.write_bytes(d + 0x100, b"hello there\0").unwrap();
        let code = load(&mut m, |a| {
            if arch == Arch::X64 {
                a.mov(rdi, d)?;
                a.mov(rsi, d + 0x100)?;
            } else {
                a.mov(edi, d as u32)?;
                a.mov(esi, (d + 0x100) as u32)?;
            }
            a.mov(ebp, edi)?;
            a.xor(eax, eax)?;
            a.mov(ecx, -1i32)?;
            a.repne().scasb()?;
            a.not(ecx)?;
            a.dec(ecx)?;
            a.mov(ebx, ecx)?; // strlen
            if arch == Arch::X64 {
                a.mov(rdi, d)?;
            } else {
                a.mov(edi, ebp)?;
            }
            a.mov(ecx, 12u32)?;
            a.repe().cmpsb()?;
            a.setb(dl)?; // [rsi] 't' < [rdi] 'w' => below
            a.seta(dh)?;
            a.ret()
        });
        call(&mut m, code);
        assert_eq!(m.cpu.reg(Reg::Rbx), 11);
        assert_eq!(m.cpu.reg(Reg::Rcx), 12 - 7);
        assert_eq!(m.cpu.reg(Reg::Rdx) & 0xffff, 0x0001);
        assert_eq!(m.cpu.reg(Reg::Rsi), d + 0x107);
    }
}

#[test]
fn lodsw_and_fault_mid_rep() {
    let mut m = machine(Arch::X64);
    let d = data(&mut m, 0x1000);
    m.mem.write_u16(d + 2, 0xbeef).unwrap();
    let code = load(&mut m, |a| {
        a.mov(rsi, d + 2)?;
        a.lodsw()?;
        a.mov(rdi, d + 0x1000 - 8)?; // 8 bytes left in the page, then unmapped
        a.mov(ecx, 5u32)?;
        a.rep().stosd()?;
        a.ret()
    });
    m.prepare_guest_call(code, CallConv::Cdecl, &[]).unwrap();
    match m.run() {
        Exit::Fault(f) => {
            assert_eq!(
                f.kind,
                FaultKind::PageFault {
                    addr: d + 0x1000,
                    write: true
                }
            );
            assert_eq!(f.regs[Reg::Rcx as usize], 3);
            assert_eq!(f.regs[Reg::Rdi as usize], d + 0x1000);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(m.cpu.reg(Reg::Rax) & 0xffff, 0xbeef);
    assert_eq!(
        m.mem.read_u64(d + 0x1000 - 8).unwrap(),
        0x0000_beef_0000_beef
    );
}

#[test]
fn push_pop_flags_enter_leave() {
    for arch in [Arch::X86, Arch::X64] {
        let m = run(
            arch,
            |_| {},
            |a| {
                if arch == Arch::X64 {
                    a.mov(rbx, rsp)?;
                    a.push(-2)?;
                    a.pop(rax)?;
                    a.stc()?;
                    a.pushfq()?;
                    a.pop(rcx)?;
                    a.push(0x8d5)?; // all status flags
                    a.popfq()?;
                    a.setc(dl)?;
                    a.seto(dh)?;
                    a.enter(32, 0)?;
                    a.mov(qword_ptr(rbp - 8), rbp)?;
                    a.leave()?;
                    a.sub(rbx, rsp)?;
                    a.push(qword_ptr(rsp - 8))?; // push memory
                    a.pop(rsi)?;
                } else {
                    a.mov(ebx, esp)?;
                    a.push(-2)?;
                    a.pop(eax)?;
                    a.stc()?;
                    a.pushfd()?;
                    a.pop(ecx)?;
                    a.push(0x8d5)?;
                    a.popfd()?;
                    a.setc(dl)?;
                    a.seto(dh)?;
                    a.enter(32, 0)?;
                    a.mov(dword_ptr(ebp - 4), ebp)?;
                    a.leave()?;
                    a.sub(ebx, esp)?;
                    a.pushad()?;
                    a.mov(edi, 5u32)?;
                    a.popad()?;
                    a.push(dword_ptr(esp - 4))?;
                    a.pop(esi)?;
                }
                a.ret()
            },
        );
        let full = if arch == Arch::X64 {
            u64::MAX
        } else {
            0xffff_ffff
        };
        assert_eq!(m.cpu.reg(Reg::Rax), full - 1);
        assert_eq!(m.cpu.reg(Reg::Rcx) & 0xfff, 0x203);
        assert_eq!(m.cpu.reg(Reg::Rdx) & 0xffff, 0x0101);
        assert_eq!(m.cpu.reg(Reg::Rbx), 0);
        assert_eq!(m.cpu.reg(Reg::Rdi), 0);
        assert_eq!(m.cpu.flags() & STATUS, ZF | PF);
    }
}

#[test]
fn pop_to_memory_uses_incremented_rsp() {
    let m = run(
        Arch::X64,
        |_| {},
        |a| {
            a.push(0x77)?;
            a.push(0x66)?;
            a.pop(qword_ptr(rsp))?; // overwrites the 0x77 slot with 0x66
            a.pop(rax)?;
            a.ret()
        },
    );
    assert_eq!(m.cpu.reg(Reg::Rax), 0x66);
}

#[test]
fn guest_write_to_readonly_via_string_op() {
    let mut m = machine(Arch::X86);
    let ro = m.mem.alloc(0x1000, Prot::READ).unwrap();
    let code = load(&mut m, |a| {
        a.mov(edi, ro as u32)?;
        a.mov(ecx, 4u32)?;
        a.rep().stosd()?;
        a.ret()
    });
    m.prepare_guest_call(code, CallConv::Cdecl, &[]).unwrap();
    match m.run() {
        Exit::Fault(f) => assert_eq!(
            f.kind,
            FaultKind::PageFault {
                addr: ro,
                write: true
            }
        ),
        other => panic!("{other:?}"),
    }
}
