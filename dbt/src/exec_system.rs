//! System and privileged instructions: cpuid, rdtsc, in/out, cli/sti, mov cr8, flag bit instructions,
//! and the instructions that stop the guest (int3, int n, ud2, hlt).

use iced_x86::{Instruction, Mnemonic, OpKind, Register};

use crate::fault::{ExecResult, FaultKind};
use crate::flags::{CF, DF, IF};
use crate::machine::Machine;

/// Signature "GenuineIntel" as (ebx, edx, ecx).
const VENDOR: (u32, u32, u32) = (0x756e_6547, 0x4965_6e69, 0x6c65_746e);
/// Leaf 1 EDX: FPU, TSC, CX8, CMOV, SSE, SSE2.
const LEAF1_EDX: u32 = 1 | 1 << 4 | 1 << 8 | 1 << 15 | 1 << 25 | 1 << 26;
/// Leaf 1 ECX: CMPXCHG16B, POPCNT (no hypervisor bit).
const LEAF1_ECX: u32 = 1 << 13 | 1 << 23;
/// Leaf 1 EAX: family 6, model 0x3a, stepping 9.
const LEAF1_EAX: u32 = 0x0003_06a9;

/// `cpuid`: a plain GenuineIntel CPU with SSE/SSE2, max basic leaf 1.
pub(crate) fn cpuid(m: &mut Machine, _i: &Instruction) -> ExecResult {
    let leaf = m.cpu.regs[0] as u32;
    let (a, b, c, d) = match leaf {
        0 => (1, VENDOR.0, VENDOR.2, VENDOR.1),
        1 => (LEAF1_EAX, 0x0001_0800, LEAF1_ECX, LEAF1_EDX),
        0x8000_0000 => (0x8000_0001, 0, 0, 0),
        0x8000_0001 => {
            // LAHF in long mode; NX, SYSCALL and long mode on x64.
            let edx = if m.arch() == crate::Arch::X64 {
                1 << 11 | 1 << 20 | 1 << 29
            } else {
                1 << 20
            };
            (0, 0, 1, edx)
        }
        _ => (0, 0, 0, 0),
    };
    m.cpu.regs[0] = a as u64;
    m.cpu.regs[3] = b as u64;
    m.cpu.regs[1] = c as u64;
    m.cpu.regs[2] = d as u64;
    Ok(())
}

/// `rdtsc` / `rdtscp`: a counter derived from retired instructions (deterministic and monotonic).
pub(crate) fn rdtsc(m: &mut Machine, i: &Instruction) -> ExecResult {
    m.tsc += 1;
    let t = (m.tsc + m.retired()).wrapping_mul(4);
    m.cpu.regs[0] = t & 0xffff_ffff;
    m.cpu.regs[2] = t >> 32;
    if i.mnemonic() == Mnemonic::Rdtscp {
        m.cpu.regs[1] = 0;
    }
    Ok(())
}

/// `in al/ax/eax, imm8|dx`.
pub(crate) fn port_in(m: &mut Machine, i: &Instruction) -> ExecResult {
    let r = i.op0_register();
    let size = r.size() as u8;
    let port = port_of(m, i, 1);
    let v = m.port_read(port, size);
    m.cpu.set_gpr(r, v as u64);
    Ok(())
}

/// `out imm8|dx, al/ax/eax`.
pub(crate) fn port_out(m: &mut Machine, i: &Instruction) -> ExecResult {
    let r = i.op1_register();
    let size = r.size() as u8;
    let port = port_of(m, i, 0);
    let v = m.cpu.gpr(r) as u32;
    m.port_write(port, size, v);
    Ok(())
}

/// Port number from operand `n`: an 8-bit immediate or DX.
fn port_of(m: &Machine, i: &Instruction, n: u32) -> u16 {
    match i.op_kind(n) {
        OpKind::Register => m.cpu.gpr(Register::DX) as u16,
        _ => i.try_immediate(n).unwrap_or(0) as u16,
    }
}

/// cli, sti, clc, stc, cmc, cld, std.
pub(crate) fn flag_bit(m: &mut Machine, i: &Instruction) -> ExecResult {
    let f = &mut m.cpu.flags;
    match i.mnemonic() {
        Mnemonic::Cli => f.update(IF, 0),
        Mnemonic::Sti => f.update(IF, IF),
        Mnemonic::Clc => f.update(CF, 0),
        Mnemonic::Stc => f.update(CF, CF),
        Mnemonic::Cmc => {
            let c = f.carry();
            f.update(CF, if c { 0 } else { CF });
        }
        Mnemonic::Cld => f.update(DF, 0),
        _ => f.update(DF, DF),
    }
    Ok(())
}

/// `mov reg, cr8` / `mov cr8, reg` (the task priority register; only CR8 is supported).
pub(crate) fn mov_cr8(m: &mut Machine, i: &Instruction) -> ExecResult {
    if i.op0_register() == Register::CR8 {
        m.cpu.cr8 = m.cpu.gpr(i.op1_register()) & 0xf;
    } else {
        let v = m.cpu.cr8;
        m.cpu.set_gpr(i.op0_register(), v);
    }
    Ok(())
}

/// `int3`.
pub(crate) fn int3(_m: &mut Machine, _i: &Instruction) -> ExecResult {
    Err(FaultKind::Breakpoint.into())
}

/// `int imm8`: 3 is a breakpoint, 0x29 a fast-fail, 0x2c an assertion failure.
pub(crate) fn int_n(m: &mut Machine, i: &Instruction) -> ExecResult {
    let vector = i.immediate8();
    let kind = match vector {
        3 => FaultKind::Breakpoint,
        0x29 => FaultKind::GeneralProtection(format!(
            "fast fail (int 0x29), code {}",
            m.cpu.regs[1] & 0xffff_ffff
        )),
        0x2c => FaultKind::GeneralProtection("assertion failure (int 0x2c)".to_string()),
        v => FaultKind::GeneralProtection(format!("software interrupt int 0x{v:x}")),
    };
    Err(kind.into())
}

/// `ud2`.
pub(crate) fn ud2(m: &mut Machine, i: &Instruction) -> ExecResult {
    let bytes = m.mem.read_vec(i.ip(), i.len()).unwrap_or_default();
    Err(FaultKind::InvalidOpcode { bytes }.into())
}

/// `hlt`.
pub(crate) fn hlt(_m: &mut Machine, _i: &Instruction) -> ExecResult {
    Err(FaultKind::Halt.into())
}
