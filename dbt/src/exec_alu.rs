//! Integer arithmetic and logic: add, sub, adc, sbb, and, or, xor, cmp, test, not, neg, inc, dec.

use iced_x86::Instruction;

use crate::fault::ExecResult;
use crate::flags::{size_mask, FlagOp};
use crate::machine::Machine;

/// Two-operand ALU operations.
#[derive(Clone, Copy, PartialEq, Eq)]
enum BinOp {
    Add,
    Adc,
    Sub,
    Sbb,
    And,
    Or,
    Xor,
    Cmp,
    Test,
}

#[inline(always)]
fn binop(m: &mut Machine, i: &Instruction, op: BinOp) -> ExecResult {
    let size = m.op_size(i, 0);
    let loc = m.loc(i, 0);
    let a = m.read_loc(loc, size)?;
    let b = m.read_op(i, 1, size)? & size_mask(size);
    let mask = size_mask(size);
    let (res, fop) = match op {
        BinOp::Add => (a.wrapping_add(b), FlagOp::Add),
        BinOp::Adc => {
            if m.cpu.flags.carry() {
                (a.wrapping_add(b).wrapping_add(1), FlagOp::Adc1)
            } else {
                (a.wrapping_add(b), FlagOp::Add)
            }
        }
        BinOp::Sub | BinOp::Cmp => (a.wrapping_sub(b), FlagOp::Sub),
        BinOp::Sbb => {
            if m.cpu.flags.carry() {
                (a.wrapping_sub(b).wrapping_sub(1), FlagOp::Sbb1)
            } else {
                (a.wrapping_sub(b), FlagOp::Sub)
            }
        }
        BinOp::And | BinOp::Test => (a & b, FlagOp::Logic),
        BinOp::Or => (a | b, FlagOp::Logic),
        BinOp::Xor => (a ^ b, FlagOp::Logic),
    };
    let res = res & mask;
    if op != BinOp::Cmp && op != BinOp::Test {
        m.write_loc(loc, size, res)?;
    }
    if fop == FlagOp::Logic {
        m.cpu.flags.set_logic(size, res);
    } else {
        m.cpu.flags.set(fop, size, a, b, res);
    }
    Ok(())
}

/// `add`.
pub(crate) fn add(m: &mut Machine, i: &Instruction) -> ExecResult {
    binop(m, i, BinOp::Add)
}

/// `adc`.
pub(crate) fn adc(m: &mut Machine, i: &Instruction) -> ExecResult {
    binop(m, i, BinOp::Adc)
}

/// `sub`.
pub(crate) fn sub(m: &mut Machine, i: &Instruction) -> ExecResult {
    binop(m, i, BinOp::Sub)
}

/// `sbb`.
pub(crate) fn sbb(m: &mut Machine, i: &Instruction) -> ExecResult {
    binop(m, i, BinOp::Sbb)
}

/// `and`.
pub(crate) fn and(m: &mut Machine, i: &Instruction) -> ExecResult {
    binop(m, i, BinOp::And)
}

/// `or`.
pub(crate) fn or(m: &mut Machine, i: &Instruction) -> ExecResult {
    binop(m, i, BinOp::Or)
}

/// `xor`.
pub(crate) fn xor(m: &mut Machine, i: &Instruction) -> ExecResult {
    binop(m, i, BinOp::Xor)
}

/// `cmp`.
pub(crate) fn cmp(m: &mut Machine, i: &Instruction) -> ExecResult {
    binop(m, i, BinOp::Cmp)
}

/// `test`.
pub(crate) fn test(m: &mut Machine, i: &Instruction) -> ExecResult {
    binop(m, i, BinOp::Test)
}

/// `not` (no flags).
pub(crate) fn not(m: &mut Machine, i: &Instruction) -> ExecResult {
    let size = m.op_size(i, 0);
    let loc = m.loc(i, 0);
    let a = m.read_loc(loc, size)?;
    m.write_loc(loc, size, !a & size_mask(size))
}

/// `neg`: flags of `0 - a`.
pub(crate) fn neg(m: &mut Machine, i: &Instruction) -> ExecResult {
    let size = m.op_size(i, 0);
    let loc = m.loc(i, 0);
    let a = m.read_loc(loc, size)?;
    let res = 0u64.wrapping_sub(a) & size_mask(size);
    m.write_loc(loc, size, res)?;
    m.cpu.flags.set(FlagOp::Sub, size, 0, a, res);
    Ok(())
}

/// `inc` (CF preserved).
pub(crate) fn inc(m: &mut Machine, i: &Instruction) -> ExecResult {
    let size = m.op_size(i, 0);
    let loc = m.loc(i, 0);
    let res = m.read_loc(loc, size)?.wrapping_add(1) & size_mask(size);
    m.write_loc(loc, size, res)?;
    m.cpu.flags.set_incdec(FlagOp::Inc, size, res);
    Ok(())
}

/// `dec` (CF preserved).
pub(crate) fn dec(m: &mut Machine, i: &Instruction) -> ExecResult {
    let size = m.op_size(i, 0);
    let loc = m.loc(i, 0);
    let res = m.read_loc(loc, size)?.wrapping_sub(1) & size_mask(size);
    m.write_loc(loc, size, res)?;
    m.cpu.flags.set_incdec(FlagOp::Dec, size, res);
    Ok(())
}
