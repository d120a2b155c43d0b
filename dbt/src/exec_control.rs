//! Control transfer: jmp, jcc, call, ret, loop/loope/loopne, jcxz/jecxz/jrcxz. Calls and returns
//! maintain the shadow call stack used for guest backtraces.

use iced_x86::{Instruction, Mnemonic, OpKind};

use crate::fault::{Exception, ExecResult};
use crate::flags::ZF;
use crate::machine::Machine;

/// Target of a near branch: relative, or read from a register/memory operand.
#[inline(always)]
fn target(m: &mut Machine, i: &Instruction) -> Result<u64, Exception> {
    match i.op0_kind() {
        OpKind::NearBranch16 | OpKind::NearBranch32 | OpKind::NearBranch64 => {
            Ok(i.near_branch_target())
        }
        _ => {
            let size = m.op_size(i, 0);
            m.read_op(i, 0, size)
        }
    }
}

/// `jmp` (near: relative, register or memory).
pub(crate) fn jmp(m: &mut Machine, i: &Instruction) -> ExecResult {
    m.cpu.rip = target(m, i)?;
    Ok(())
}

/// `jcc`.
pub(crate) fn jcc(m: &mut Machine, i: &Instruction) -> ExecResult {
    if m.cpu.flags.cond(i.condition_code() as u8) {
        m.cpu.rip = i.near_branch_target();
    }
    Ok(())
}

/// `call` (near: relative, register or memory).
pub(crate) fn call(m: &mut Machine, i: &Instruction) -> ExecResult {
    let t = target(m, i)?;
    let size = (-i.stack_pointer_increment()) as u32;
    m.push(i.next_ip(), size)?;
    let slot = m.sp();
    m.cpu.shadow_push(i.next_ip(), slot);
    m.cpu.rip = t;
    Ok(())
}

/// `ret` / `ret imm16`.
pub(crate) fn ret(m: &mut Machine, i: &Instruction) -> ExecResult {
    let extra = if i.op_count() > 0 {
        i.immediate16() as u64
    } else {
        0
    };
    let size = match i.code() {
        iced_x86::Code::Retnw | iced_x86::Code::Retnw_imm16 => 2,
        _ => m.ptr_bytes(),
    };
    let slot = m.sp();
    let t = m.pop(size)?;
    let sp = m.sp();
    m.set_sp(sp.wrapping_add(extra));
    m.cpu.shadow_pop(slot);
    m.cpu.rip = t;
    Ok(())
}

/// Count register of a loop/jcxz instruction by address size, as (register value, mask).
fn counter(m: &Machine, i: &Instruction) -> (u64, u64) {
    use iced_x86::Code as C;
    let mask = match i.code() {
        C::Jcxz_rel8_16
        | C::Jcxz_rel8_32
        | C::Loop_rel8_16_CX
        | C::Loop_rel8_32_CX
        | C::Loope_rel8_16_CX
        | C::Loope_rel8_32_CX
        | C::Loopne_rel8_16_CX
        | C::Loopne_rel8_32_CX => 0xffff,
        C::Jrcxz_rel8_16
        | C::Jrcxz_rel8_64
        | C::Loop_rel8_16_RCX
        | C::Loop_rel8_64_RCX
        | C::Loope_rel8_16_RCX
        | C::Loope_rel8_64_RCX
        | C::Loopne_rel8_16_RCX
        | C::Loopne_rel8_64_RCX => u64::MAX,
        _ => 0xffff_ffff,
    };
    (m.cpu.regs[1] & mask, mask)
}

/// loop / loope / loopne: decrement the counter, branch while non-zero (and ZF condition).
pub(crate) fn loop_(m: &mut Machine, i: &Instruction) -> ExecResult {
    let (c, mask) = counter(m, i);
    let c = c.wrapping_sub(1) & mask;
    // A 32-bit count register write zero-extends (loop with ecx in 64-bit code); cx merges.
    m.cpu.regs[1] = if mask == 0xffff {
        (m.cpu.regs[1] & !mask) | c
    } else {
        c
    };
    let zf = m.cpu.flags.test(ZF);
    let take = c != 0
        && match i.mnemonic() {
            Mnemonic::Loope => zf,
            Mnemonic::Loopne => !zf,
            _ => true,
        };
    if take {
        m.cpu.rip = i.near_branch_target();
    }
    Ok(())
}

/// jcxz / jecxz / jrcxz.
pub(crate) fn jcxz(m: &mut Machine, i: &Instruction) -> ExecResult {
    if counter(m, i).0 == 0 {
        m.cpu.rip = i.near_branch_target();
    }
    Ok(())
}
