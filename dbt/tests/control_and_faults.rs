//! Branches, calls, the shadow call stack, thunks, faults and their reports.
mod common;

use common::*;
use dbt::iced_x86::code_asm::*;
use dbt::{Arch, CallConv, Exit, FaultKind, Prot, Reg};

#[test]
fn loops_and_conditions() {
    for arch in [Arch::X86, Arch::X64] {
        let m = run(
            arch,
            |_| {},
            |a| {
                let mut top = a.create_label();
                let mut skip = a.create_label();
                a.xor(eax, eax)?;
                a.mov(ecx, 10u32)?;
                a.set_label(&mut top)?;
                a.add(eax, ecx)?;
                a.dec(ecx)?;
                a.jnz(top)?;
                a.cmp(eax, 55)?;
                a.jne(skip)?;
                a.mov(ebx, 1u32)?;
                a.set_label(&mut skip)?;
                a.mov(ecx, 3u32)?;
                let mut l2 = a.create_label();
                a.set_label(&mut l2)?;
                a.inc(edx)?;
                a.loop_(l2)?;
                let mut z = a.create_label();
                if arch == Arch::X64 {
                    a.jrcxz(z)?;
                } else {
                    a.jecxz(z)?;
                }
                a.mov(esi, 99u32)?;
                a.set_label(&mut z)?;
                a.ret()
            },
        );
        assert_eq!(m.cpu.reg(Reg::Rax), 55);
        assert_eq!(m.cpu.reg(Reg::Rbx), 1);
        assert_eq!(m.cpu.reg(Reg::Rdx), 3);
        assert_eq!(m.cpu.reg(Reg::Rsi), 0);
    }
}

#[test]
fn all_conditions_setcc_cmov() {
    // After cmp 1, 2 (below, less, not equal, sign, parity of 0xff).
    let m = run(
        Arch::X64,
        |_| {},
        |a| {
            a.mov(eax, 1u32)?;
            a.cmp(eax, 2)?;
            for (k, r) in [al, bl, cl, dl, sil, dil, r8b, r9b].into_iter().enumerate() {
                match k {
                    0 => a.setb(r)?,
                    1 => a.setbe(r)?,
                    2 => a.setl(r)?,
                    3 => a.setle(r)?,
                    4 => a.sets(r)?,
                    5 => a.setp(r)?,
                    6 => a.setne(r)?,
                    _ => a.seto(r)?,
                }
            }
            a.mov(r10, 77u64)?;
            a.mov(r11, 5u64)?;
            a.cmovg(r11, r10)?;
            a.mov(r12, 5u64)?;
            a.cmovl(r12, r10)?;
            a.mov(r13, 0xffff_ffff_0000_0005u64)?;
            a.cmovg(r13d, r10d)?; // not taken but still zero-extends
            a.ret()
        },
    );
    let low = |r: Reg| m.cpu.reg(r) & 0xff;
    assert_eq!(
        [
            low(Reg::Rax),
            low(Reg::Rbx),
            low(Reg::Rcx),
            low(Reg::Rdx),
            low(Reg::Rsi),
            low(Reg::Rdi),
            low(Reg::R8),
            low(Reg::R9)
        ],
        [1, 1, 1, 1, 1, 1, 1, 0]
    );
    assert_eq!(m.cpu.reg(Reg::R11), 5);
    assert_eq!(m.cpu.reg(Reg::R12), 77);
    assert_eq!(m.cpu.reg(Reg::R13), 5);
}

#[test]
fn calls_indirect_and_ret_imm() {
    for arch in [Arch::X86, Arch::X64] {
        let mut m = machine(arch);
        let d = data(&mut m, 0x1000);
        let g = load(&mut m, |a| {
            a.add(ebx, 100)?;
            a.ret()
        });
        let code = load(&mut m, |a| {
            let mut f = a.create_label();
            let mut after = a.create_label();
            if arch == Arch::X64 {
                a.mov(rax, g)?;
                a.mov(rsi, d)?;
                a.mov(qword_ptr(rsi), rax)?;
                a.call(f)?;
                a.call(qword_ptr(rsi))?;
                a.call(rax)?;
                a.jmp(after)?;
            } else {
                a.mov(eax, g as u32)?;
                a.mov(esi, d as u32)?;
                a.mov(dword_ptr(esi), eax)?;
                a.call(f)?;
                a.call(dword_ptr(esi))?;
                a.call(eax)?;
                a.jmp(after)?;
            }
            a.set_label(&mut f)?;
            a.add(ebx, 1)?;
            a.ret()?;
            a.set_label(&mut after)?;
            a.ret()
        });
        let sp_before = m.cpu.reg(Reg::Rsp);
        m.prepare_guest_call(code, CallConv::Cdecl, &[]).unwrap();
        let entry_sp = m.cpu.reg(Reg::Rsp);
        finish(&mut m);
        assert!(entry_sp < sp_before);
        assert_eq!(m.cpu.reg(Reg::Rbx), 201);
        // the guest's ret popped the return address: back where the call frame started
        assert_eq!(m.cpu.reg(Reg::Rsp), entry_sp + arch.ptr_size());
        assert!(m.cpu.clone().flags() & 0x2 != 0);
    }
}

#[test]
fn stdcall_ret_imm16_pops_args() {
    let m = run(
        Arch::X86,
        |_| {},
        |a| {
            let mut f = a.create_label();
            let mut done = a.create_label();
            a.mov(edi, esp)?;
            a.push(7)?;
            a.push(8)?;
            a.call(f)?;
            a.sub(edi, esp)?;
            a.jmp(done)?;
            a.set_label(&mut f)?;
            a.mov(eax, dword_ptr(esp + 4))?;
            a.add(eax, dword_ptr(esp + 8))?;
            a.ret_1(8)?;
            a.set_label(&mut done)?;
            a.ret()
        },
    );
    assert_eq!(m.cpu.reg(Reg::Rax), 15);
    assert_eq!(m.cpu.reg(Reg::Rdi), 0);
}

#[test]
fn null_read_fault_report_and_backtrace() {
    for arch in [Arch::X86, Arch::X64] {
        let mut m = machine(arch);
        let code = load(&mut m, |a| {
            let mut f1 = a.create_label();
            let mut f2 = a.create_label();
            a.call(f1)?;
            a.ret()?;
            a.set_label(&mut f1)?;
            if arch == Arch::X64 {
                a.push(rbp)?;
                a.call(f2)?;
                a.pop(rbp)?;
            } else {
                a.push(ebp)?;
                a.call(f2)?;
                a.pop(ebp)?;
            }
            a.ret()?;
            a.set_label(&mut f2)?;
            a.mov(ecx, 0x1234u32)?;
            if arch == Arch::X64 {
                a.xor(eax, eax)?;
                a.mov(rax, qword_ptr(rax))?;
            } else {
                a.xor(eax, eax)?;
                a.mov(eax, dword_ptr(eax))?;
            }
            a.ret()
        });
        m.prepare_guest_call(code, CallConv::Cdecl, &[]).unwrap();
        let f = match m.run() {
            Exit::Fault(f) => f,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            f.kind,
            FaultKind::PageFault {
                addr: 0,
                write: false
            }
        );
        assert_eq!(f.regs[Reg::Rcx as usize], 0x1234);
        assert_eq!(f.backtrace.len(), 3, "{f}");
        assert_eq!(f.backtrace[0], f.rip);
        assert!(f.backtrace[1] > code && f.backtrace[2] == code + 5);
        let text = f.to_string();
        assert!(text.contains("page fault: read at 0x0"), "{text}");
        let reg_name = if arch == Arch::X64 {
            "rcx=0000000000001234"
        } else {
            "ecx=00001234"
        };
        assert!(text.contains(reg_name), "{text}");
        assert!(text.contains(&format!("{:x}", f.rip)), "{text}");
        assert!(
            text.contains(&format!(
                "#2 0x{:0w$x}",
                f.backtrace[2],
                w = if arch == Arch::X64 { 16 } else { 8 }
            )),
            "{text}"
        );
        assert_eq!(m.backtrace(), f.backtrace);
    }
}

#[test]
fn write_to_readonly_page_faults() {
    for arch in [Arch::X86, Arch::X64] {
        let mut m = machine(arch);
        let ro = m.mem.alloc(0x1000, Prot::READ).unwrap();
        m.mem.write_u32(ro, 5).unwrap(); // the host may write read-only pages
        let code = load(&mut m, |a| {
            if arch == Arch::X64 {
                a.mov(rsi, ro)?;
                a.mov(eax, dword_ptr(rsi))?;
                a.mov(dword_ptr(rsi + 4), eax)?;
            } else {
                a.mov(esi, ro as u32)?;
                a.mov(eax, dword_ptr(esi))?;
                a.mov(dword_ptr(esi + 4), eax)?;
            }
            a.ret()
        });
        m.prepare_guest_call(code, CallConv::Cdecl, &[]).unwrap();
        match m.run() {
            Exit::Fault(f) => {
                assert_eq!(
                    f.kind,
                    FaultKind::PageFault {
                        addr: ro + 4,
                        write: true
                    }
                );
                assert_eq!(f.regs[0], 5);
                assert!(f.to_string().contains("write at"));
            }
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn stack_overflow_and_outside_window_fault() {
    let (_, f) = run_fault(
        Arch::X64,
        |m| m.cpu.set_reg(Reg::Rsi, 0x1000),
        |a| {
            a.mov(rax, qword_ptr(rsi))?;
            a.ret()
        },
    );
    assert_eq!(
        f.kind,
        FaultKind::PageFault {
            addr: 0x1000,
            write: false
        }
    );
    let (_, f) = run_fault(
        Arch::X86,
        |_| {},
        |a| {
            let mut l = a.create_label();
            a.set_label(&mut l)?;
            a.push(eax)?;
            a.jmp(l)
        },
    );
    assert!(matches!(f.kind, FaultKind::PageFault { write: true, .. }));
}

#[test]
fn invalid_unsupported_breakpoint_halt() {
    let (_, f) = run_fault(Arch::X64, |_| {}, |a| a.ud2());
    assert_eq!(
        f.kind,
        FaultKind::InvalidOpcode {
            bytes: vec![0x0f, 0x0b]
        }
    );
    let (_, f) = run_fault(Arch::X64, |_| {}, |a| a.db(&[0x06])); // push es: invalid in 64-bit mode
    assert!(matches!(f.kind, FaultKind::InvalidOpcode { .. }));
    let (_, f) = run_fault(Arch::X64, |_| {}, |a| a.fld(dword_ptr(rsp)));
    match &f.kind {
        FaultKind::Unsupported { bytes, text } => {
            assert_eq!(bytes, &vec![0xd9, 0x04, 0x24]);
            assert!(text.contains("fld"), "{text}");
        }
        k => panic!("{k:?}"),
    }
    let (_, f) = run_fault(Arch::X86, |_| {}, |a| a.int3());
    assert_eq!(f.kind, FaultKind::Breakpoint);
    let (_, f) = run_fault(Arch::X86, |_| {}, |a| a.hlt());
    assert_eq!(f.kind, FaultKind::Halt);
    let (_, f) = run_fault(Arch::X64, |m| m.cpu.set_reg(Reg::Rcx, 7), |a| a.int(0x29));
    assert!(
        matches!(&f.kind, FaultKind::GeneralProtection(s) if s.contains("fast fail") && s.contains('7'))
    );
    let (_, f) = run_fault(Arch::X64, |_| {}, |a| a.int(0x2c));
    assert!(matches!(&f.kind, FaultKind::GeneralProtection(s) if s.contains("assert")));
}

#[test]
fn thunks_host_calls_and_reentrancy() {
    // Guest f(x) = thunk0(x) + 1; thunk 0 calls guest g(x) = 2x re-entrantly.
    let mut m = machine(Arch::X64);
    let t0 = m.thunk_address(0);
    let mut g_addr = 0;
    let code = load(&mut m, |a| {
        let mut g = a.create_label();
        a.sub(rsp, 40)?;
        a.mov(rax, t0)?;
        a.call(rax)?;
        a.add(rax, 1)?;
        a.add(rsp, 40)?;
        a.ret()?;
        a.set_label(&mut g)?;
        a.lea(rax, ptr(rcx + rcx))?;
        a.ret()
    });
    // find g: the lea after the first ret
    for off in 0..64u64 {
        if m.mem.read_vec(code + off, 4).unwrap() == [0x48, 0x8d, 0x04, 0x09] {
            g_addr = code + off;
        }
    }
    assert_ne!(g_addr, 0);
    m.prepare_guest_call(code, CallConv::Win64, &[20]).unwrap();
    let result = loop {
        match m.run() {
            Exit::Thunk(0) => {
                let args = m.host_call_args(CallConv::Win64, 1).unwrap();
                let saved = m.cpu.clone();
                m.prepare_guest_call(g_addr, CallConv::Win64, &[args[0]])
                    .unwrap();
                assert_eq!((m.cpu.reg(Reg::Rsp) + 8) % 16, 0);
                match m.run() {
                    Exit::HostReturn => {}
                    other => panic!("{other:?}"),
                }
                let v = m.return_value();
                m.cpu = saved;
                m.host_call_return(CallConv::Win64, 1, v).unwrap();
            }
            Exit::HostReturn => break m.return_value(),
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(result, 41);
    assert!(m.stats.instructions > 5);
    assert!(m.stats.block_cache_hits + m.stats.blocks_translated == m.stats.block_lookups);
}

#[test]
fn invalidate_code_after_patch() {
    let mut m = machine(Arch::X64);
    let code = load(&mut m, |a| {
        a.mov(eax, 1u32)?;
        a.ret()
    });
    call(&mut m, code);
    assert_eq!(m.cpu.reg(Reg::Rax), 1);
    m.mem.write_u32(code + 1, 2).unwrap();
    call(&mut m, code);
    assert_eq!(m.cpu.reg(Reg::Rax), 1, "stale block still cached");
    m.invalidate_code(code + 1, 4);
    call(&mut m, code);
    assert_eq!(m.cpu.reg(Reg::Rax), 2);
}

#[test]
fn run_limited_budget() {
    let mut m = machine(Arch::X86);
    let code = load(&mut m, |a| {
        let mut l = a.create_label();
        a.set_label(&mut l)?;
        a.inc(eax)?;
        a.jmp(l)
    });
    m.prepare_guest_call(code, CallConv::Cdecl, &[]).unwrap();
    assert!(m.run_limited(1001).is_none());
    assert_eq!(m.cpu.reg(Reg::Rax), 501);
    assert_eq!(m.stats.instructions, 1001);
}
