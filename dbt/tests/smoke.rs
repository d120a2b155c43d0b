mod common;
use common::*;
use dbt::iced_x86::code_asm::*;
use dbt::{Arch, Reg};

#[test]
fn add_x64() {
    let m = run(Arch::X64, |m| m.cpu.set_reg(Reg::Rbx, 7), |a| {
        a.mov(rax, 5u64)?;
        a.add(rax, rbx)?;
        a.ret()
    });
    assert_eq!(m.cpu.reg(Reg::Rax), 12);
}

#[test]
fn add_x86() {
    let m = run(Arch::X86, |m| m.cpu.set_reg(Reg::Rbx, 0xffff_ffff), |a| {
        a.mov(eax, 5u32)?;
        a.add(eax, ebx)?;
        a.ret()
    });
    assert_eq!(m.cpu.reg(Reg::Rax), 4);
    assert_eq!(m.cpu.flags() & CF, CF);
}
