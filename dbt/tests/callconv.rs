//! Host side of thunk calls and host -> guest calls for every calling convention.
mod common;

use common::*;
use dbt::iced_x86::code_asm::*;
use dbt::{Arch, CallConv, Exit, Reg};

/// Runs guest code that calls thunk 3 and returns what the thunk returned; `check` sees the thunk's
/// arguments and returns the value to hand back.
fn through_thunk(
    arch: Arch,
    conv: CallConv,
    slots: usize,
    build: impl FnOnce(&mut CodeAssembler, u64) -> Result<(), dbt::iced_x86::IcedError>,
    ret: u64,
) -> (Vec<u64>, dbt::Machine) {
    let mut m = machine(arch);
    let t = m.thunk_address(3);
    let code = load(&mut m, |a| build(a, t));
    m.prepare_guest_call(code, CallConv::Cdecl, &[]).unwrap();
    let mut seen = Vec::new();
    loop {
        match m.run_limited(100_000) {
            Some(Exit::Thunk(3)) => {
                seen = m.host_call_args(conv, slots).unwrap();
                m.host_call_return(conv, slots, ret).unwrap();
            }
            Some(Exit::HostReturn) => break,
            other => panic!("{other:?}"),
        }
    }
    (seen, m)
}

#[test]
fn x86_stdcall_cdecl_fastcall() {
    // stdcall f(1, 2, 3): callee pops; esp must be balanced afterwards (checked via esi).
    let (args, m) = through_thunk(
        Arch::X86,
        CallConv::Stdcall,
        3,
        |a, t| {
            a.mov(esi, esp)?;
            a.push(3)?;
            a.push(2)?;
            a.push(1)?;
            a.mov(eax, t as u32)?;
            a.call(eax)?;
            a.sub(esi, esp)?;
            a.ret()
        },
        0x55,
    );
    assert_eq!(args, vec![1, 2, 3]);
    assert_eq!(m.cpu.reg(Reg::Rsi), 0);
    assert_eq!(m.cpu.reg(Reg::Rax), 0x55);

    let (args, m) = through_thunk(
        Arch::X86,
        CallConv::Cdecl,
        2,
        |a, t| {
            a.mov(esi, esp)?;
            a.push(20)?;
            a.push(10)?;
            a.mov(eax, t as u32)?;
            a.call(eax)?;
            a.add(esp, 8)?;
            a.sub(esi, esp)?;
            a.ret()
        },
        0x1_0000_0002,
    );
    assert_eq!(args, vec![10, 20]);
    assert_eq!(m.cpu.reg(Reg::Rsi), 0);
    // 64-bit return on x86: edx:eax
    assert_eq!(m.cpu.reg(Reg::Rax), 2);
    assert_eq!(m.cpu.reg(Reg::Rdx), 1);
    assert_eq!(m.return_value(), 0x1_0000_0002);

    let (args, m) = through_thunk(
        Arch::X86,
        CallConv::Fastcall,
        4,
        |a, t| {
            a.mov(esi, esp)?;
            a.push(40)?;
            a.push(30)?;
            a.mov(ecx, 10u32)?;
            a.mov(edx, 20u32)?;
            a.mov(eax, t as u32)?;
            a.call(eax)?;
            a.sub(esi, esp)?;
            a.ret()
        },
        7,
    );
    assert_eq!(args, vec![10, 20, 30, 40]);
    assert_eq!(m.cpu.reg(Reg::Rsi), 0);
}

#[test]
fn x64_win64_with_stack_args() {
    let (args, m) = through_thunk(
        Arch::X64,
        CallConv::Win64,
        6,
        |a, t| {
            a.mov(rsi, rsp)?;
            a.sub(rsp, 56)?;
            a.mov(qword_ptr(rsp + 32), 5)?;
            a.mov(qword_ptr(rsp + 40), 6)?;
            a.mov(ecx, 1u32)?;
            a.mov(edx, 2u32)?;
            a.mov(r8d, 3u32)?;
            a.mov(r9d, 4u32)?;
            a.mov(rax, t)?;
            a.call(rax)?;
            a.add(rsp, 56)?;
            a.sub(rsi, rsp)?;
            a.ret()
        },
        0x1234_5678_9abc_def0,
    );
    assert_eq!(args, vec![1, 2, 3, 4, 5, 6]);
    assert_eq!(m.cpu.reg(Reg::Rsi), 0);
    assert_eq!(m.return_value(), 0x1234_5678_9abc_def0);
}

#[test]
fn prepare_guest_call_all_conventions() {
    // x64: sum of 6 args, alignment checked inside the guest: (rsp + 8) % 16 at entry
    let mut m = machine(Arch::X64);
    let code = load(&mut m, |a| {
        a.lea(r10, ptr(rsp + 8))?;
        a.and(r10, 15)?;
        a.mov(rax, rcx)?;
        a.add(rax, rdx)?;
        a.add(rax, r8)?;
        a.add(rax, r9)?;
        a.add(rax, qword_ptr(rsp + 40))?;
        a.add(rax, qword_ptr(rsp + 48))?;
        a.ret()
    });
    for sp_skew in 0..4u64 {
        let top = m.cpu.reg(Reg::Rsp);
        m.cpu.set_reg(Reg::Rsp, top - sp_skew * 8);
        m.prepare_guest_call(code, CallConv::Win64, &[1, 2, 3, 4, 5, 600])
            .unwrap();
        assert_eq!((m.cpu.reg(Reg::Rsp) + 8) % 16, 0);
        assert_eq!(
            m.run_limited(1000).map(|e| matches!(e, Exit::HostReturn)),
            Some(true)
        );
        assert_eq!(m.return_value(), 615);
        assert_eq!(m.cpu.reg(Reg::R10), 0);
        m.cpu.set_reg(Reg::Rsp, top);
    }

    // x86 stdcall (callee pops with ret 8), cdecl, fastcall
    let mut m = machine(Arch::X86);
    let std = load(&mut m, |a| {
        a.mov(eax, dword_ptr(esp + 4))?;
        a.sub(eax, dword_ptr(esp + 8))?;
        a.ret_1(8)
    });
    m.prepare_guest_call(std, CallConv::Stdcall, &[50, 8])
        .unwrap();
    assert_eq!((m.cpu.reg(Reg::Rsp) + 4) % 16, 0);
    finish(&mut m);
    assert_eq!(m.return_value() & 0xffff_ffff, 42);

    let fast = load(&mut m, |a| {
        a.mov(eax, ecx)?;
        a.sub(eax, edx)?;
        a.add(eax, dword_ptr(esp + 4))?;
        a.xor(edx, edx)?;
        a.ret_1(4)
    });
    m.prepare_guest_call(fast, CallConv::Fastcall, &[100, 1, 10])
        .unwrap();
    finish(&mut m);
    assert_eq!(m.return_value(), 109);

    let cdecl = load(&mut m, |a| {
        a.mov(eax, 0xffff_ffffu32)?;
        a.mov(edx, dword_ptr(esp + 4))?;
        a.ret()
    });
    m.prepare_guest_call(cdecl, CallConv::Cdecl, &[7]).unwrap();
    finish(&mut m);
    assert_eq!(m.return_value(), 0x7_ffff_ffff);
}
