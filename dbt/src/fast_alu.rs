//! Specialised integer arithmetic handlers: the two-operand ALU group (optionally fused with the
//! conditional branch after it), inc/dec, neg/not, shifts by an immediate, imul and one-operand
//! mul/imul.
//!
//! Each handler is generic over the operation, the operand size `S` (bytes) and the operand form
//! (see [`crate::op::form`]), so the compiler folds masks, size checks and flag kinds. Status flags
//! are recorded only if `Op::flags_live`. Memory accesses take the fast path of [`GuestMemory`]
//! and fall back to the generic handler (before any state changed) when it does not apply.
//!
//! [`GuestMemory`]: crate::GuestMemory

use crate::cpu::Reg;
use crate::fault::ExecResult;
use crate::flags::{cond_fixed, eval_cond, pzs, sext, size_mask, FlagOp, CF, OF, STATUS, ZF};
use crate::machine::Machine;
use crate::op::{ea, form, load_or_generic, next, run_generic, store_or_generic, Cursor, Op};

/// Two-operand ALU operations (`OP` of [`alu`]).
pub(crate) mod alu_op {
    /// add.
    pub(crate) const ADD: u8 = 0;
    /// or.
    pub(crate) const OR: u8 = 1;
    /// adc.
    pub(crate) const ADC: u8 = 2;
    /// sbb.
    pub(crate) const SBB: u8 = 3;
    /// and.
    pub(crate) const AND: u8 = 4;
    /// sub.
    pub(crate) const SUB: u8 = 5;
    /// xor.
    pub(crate) const XOR: u8 = 6;
    /// cmp.
    pub(crate) const CMP: u8 = 7;
    /// test.
    pub(crate) const TEST: u8 = 8;
}

use alu_op::*;

/// The ALU group: add, or, adc, sbb, and, sub, xor, cmp, test. With `BRANCH` the op also stands for
/// the following jcc (condition `op.cc`, target `op.target`); adc and sbb are never fused.
pub(crate) fn alu<const S: u32, const OP: u8, const FORM: u8, const BRANCH: bool, const A: u8>(
    m: &mut Machine,
    op: Cursor<'_>,
) -> ExecResult {
    let (a, b, res, fop) = match alu_core::<S, OP, FORM, A>(m, op) {
        Ok(v) => v,
        Err(generic) => return generic,
    };
    if BRANCH && eval_cond(fop, S, a, b, res, op.cc) {
        m.cpu.rip = op.target;
    }
    next(m, op)
}

/// An ALU op in register form (`RR` or `RI`) fused with the following jcc on the condition `CC`
/// (see [`crate::flags::cc`]; not P or NP), to `op.target`.
pub(crate) fn alu_jcc<const S: u32, const OP: u8, const FORM: u8, const CC: u8>(
    m: &mut Machine,
    op: Cursor<'_>,
) -> ExecResult {
    let (a, b, res, fop) = match alu_core::<S, OP, FORM, { ea::D }>(m, op) {
        Ok(v) => v,
        Err(generic) => return generic,
    };
    if cond_fixed(fop, S, a, b, res, CC) {
        m.cpu.rip = op.target;
    }
    next(m, op)
}

/// The ALU operation itself: its operands, result (written back unless cmp/test) and flag kind,
/// with the flags recorded if live; `Err` with the result of [`run_generic`] if a memory access
/// missed the fast path.
#[inline(always)]
fn alu_core<const S: u32, const OP: u8, const FORM: u8, const A: u8>(
    m: &mut Machine,
    op: Cursor<'_>,
) -> Result<(u64, u64, u64, FlagOp), ExecResult> {
    let mask = size_mask(S);
    let addr = if FORM >= form::RM {
        m.addr::<A>(&op)
    } else {
        0
    };
    let load = |m: &Machine| m.mem.load_fast(addr, S);
    let (a, b) = match FORM {
        form::RR => (m.reg(op.dst) & mask, m.reg(op.src) & mask),
        form::RI => (m.reg(op.dst) & mask, op.imm),
        form::RM => match load(m) {
            Some(v) => (m.reg(op.dst) & mask, v),
            None => return Err(run_generic(m, op)),
        },
        form::MR => match load(m) {
            Some(v) => (v, m.reg(op.src) & mask),
            None => return Err(run_generic(m, op)),
        },
        _ => match load(m) {
            Some(v) => (v, op.imm),
            None => return Err(run_generic(m, op)),
        },
    };
    let (res, fop) = match OP {
        ADD => (a.wrapping_add(b) & mask, FlagOp::Add),
        ADC if m.cpu.flags.carry() => (a.wrapping_add(b).wrapping_add(1) & mask, FlagOp::Adc1),
        ADC => (a.wrapping_add(b) & mask, FlagOp::Add),
        SUB | CMP => (a.wrapping_sub(b) & mask, FlagOp::Sub),
        SBB if m.cpu.flags.carry() => (a.wrapping_sub(b).wrapping_sub(1) & mask, FlagOp::Sbb1),
        SBB => (a.wrapping_sub(b) & mask, FlagOp::Sub),
        AND | TEST => (a & b, FlagOp::Logic),
        OR => (a | b, FlagOp::Logic),
        _ => (a ^ b, FlagOp::Logic),
    };
    if OP != CMP && OP != TEST {
        if FORM == form::MR || FORM == form::MI {
            if !m.mem.store_fast(addr, S, res) {
                return Err(run_generic(m, op));
            }
        } else {
            m.set_reg::<S>(op.dst, res);
        }
    }
    if op.flags_live {
        if fop == FlagOp::Logic {
            m.cpu.flags.set_logic(S, res);
        } else {
            m.cpu.flags.record(fop, S, a, b, res);
        }
    }
    Ok((a, b, res, fop))
}

/// Reads the register `op.dst` or the memory operand of a one-operand instruction (`MEM`), or
/// returns [`crate::op::run_generic`] from the caller if the load's fast path does not apply.
macro_rules! read_rm {
    ($m:expr, $op:expr, $mem:expr, $addr:expr, $size:expr) => {
        if $mem {
            load_or_generic!($m, $op, $addr, $size)
        } else {
            $m.reg($op.dst) & size_mask($size)
        }
    };
}

/// Writes the register `op.dst` or the memory operand of a one-operand instruction (`MEM`), or
/// returns [`crate::op::run_generic`] from the caller if the store's fast path does not apply.
macro_rules! write_rm {
    ($m:expr, $op:expr, $mem:expr, $addr:expr, $size:expr, $v:expr) => {
        if $mem {
            store_or_generic!($m, $op, $addr, $size, $v);
        } else {
            $m.set_reg::<$size>($op.dst, $v);
        }
    };
}

/// inc/dec of a register or memory operand (CF preserved when it is live); with `BRANCH` fused with
/// the following jcc, whose condition does not read CF.
pub(crate) fn incdec<
    const S: u32,
    const DEC: bool,
    const MEM: bool,
    const BRANCH: bool,
    const A: u8,
>(
    m: &mut Machine,
    op: Cursor<'_>,
) -> ExecResult {
    let addr = if MEM { m.addr::<A>(&op) } else { 0 };
    let a = read_rm!(m, op, MEM, addr, S);
    let res = if DEC {
        a.wrapping_sub(1)
    } else {
        a.wrapping_add(1)
    } & size_mask(S);
    write_rm!(m, op, MEM, addr, S, res);
    let fop = incdec_flags::<S, DEC>(m, &op, res);
    if BRANCH && eval_cond(fop, S, a, 1, res, op.cc) {
        m.cpu.rip = op.target;
    }
    next(m, op)
}

/// inc/dec of register `op.dst` fused with the following jcc on the condition `CC` (see
/// [`crate::flags::cc`]; one that does not read CF, not P or NP), to `op.target`.
pub(crate) fn incdec_jcc<const S: u32, const DEC: bool, const CC: u8>(
    m: &mut Machine,
    op: Cursor<'_>,
) -> ExecResult {
    let a = m.reg(op.dst) & size_mask(S);
    let res = if DEC {
        a.wrapping_sub(1)
    } else {
        a.wrapping_add(1)
    } & size_mask(S);
    m.set_reg::<S>(op.dst, res);
    let fop = incdec_flags::<S, DEC>(m, &op, res);
    if cond_fixed(fop, S, a, 1, res, CC) {
        m.cpu.rip = op.target;
    }
    next(m, op)
}

/// Records the flags of inc/dec with result `res` if they are live; returns the flag kind.
#[inline(always)]
fn incdec_flags<const S: u32, const DEC: bool>(m: &mut Machine, op: &Op, res: u64) -> FlagOp {
    let fop = if DEC { FlagOp::Dec } else { FlagOp::Inc };
    if op.flags_live {
        if op.keep_carry {
            m.cpu.flags.set_incdec(fop, S, res);
        } else {
            m.cpu.flags.set_incdec_carry_dead(fop, S, res);
        }
    }
    fop
}

/// neg (flags of `0 - a`) and not (no flags) of a register or memory operand.
pub(crate) fn neg_not<const S: u32, const NEG: bool, const MEM: bool, const A: u8>(
    m: &mut Machine,
    op: Cursor<'_>,
) -> ExecResult {
    let addr = if MEM { m.addr::<A>(&op) } else { 0 };
    let a = read_rm!(m, op, MEM, addr, S);
    let res = if NEG { 0u64.wrapping_sub(a) } else { !a } & size_mask(S);
    write_rm!(m, op, MEM, addr, S, res);
    if NEG && op.flags_live {
        m.cpu.flags.record(FlagOp::Sub, S, 0, a, res);
    }
    next(m, op)
}

/// Shift kinds of [`shift_imm`].
pub(crate) mod shift_op {
    /// shl/sal.
    pub(crate) const SHL: u8 = 0;
    /// shr.
    pub(crate) const SHR: u8 = 1;
    /// sar.
    pub(crate) const SAR: u8 = 2;
}

/// shl/shr/sar by an immediate count that is non-zero after masking (`op.imm`).
pub(crate) fn shift_imm<const S: u32, const KIND: u8, const MEM: bool, const A: u8>(
    m: &mut Machine,
    op: Cursor<'_>,
) -> ExecResult {
    let c = op.imm;
    let addr = if MEM { m.addr::<A>(&op) } else { 0 };
    let a = read_rm!(m, op, MEM, addr, S);
    let (res, fop) = match KIND {
        shift_op::SHL => (a << c, FlagOp::Shl),
        shift_op::SHR => (a >> c, FlagOp::Shr),
        _ => ((sext(a, S) >> c) as u64, FlagOp::Sar),
    };
    let res = res & size_mask(S);
    write_rm!(m, op, MEM, addr, S, res);
    if op.flags_live {
        m.cpu.flags.record(fop, S, a, c, res);
    }
    next(m, op)
}

/// Two- and three-operand imul: `RR`/`RM` multiply the destination by a register/memory source,
/// `RI`/`MI` multiply a register/memory source by `op.imm`.
pub(crate) fn imul<const S: u32, const FORM: u8, const A: u8>(
    m: &mut Machine,
    op: Cursor<'_>,
) -> ExecResult {
    let mask = size_mask(S);
    let (a, b) = match FORM {
        form::RR => (m.reg(op.dst), m.reg(op.src)),
        form::RM => (m.reg(op.dst), load_or_generic!(m, op, m.addr::<A>(&op), S)),
        form::RI => (m.reg(op.src), op.imm),
        _ => (load_or_generic!(m, op, m.addr::<A>(&op), S), op.imm),
    };
    let p = sext(a & mask, S) as i128 * sext(b & mask, S) as i128;
    let lo = p as u64 & mask;
    m.set_reg::<S>(op.dst, lo);
    if op.flags_live {
        let mut f = pzs(lo, S) & !ZF;
        if p != sext(lo, S) as i128 {
            f |= CF | OF;
        }
        m.cpu.flags.update(STATUS, f);
    }
    next(m, op)
}

/// One-operand mul/imul (`SIGNED`) of 4 or 8 bytes: rdx:rax = rax * the register `op.src` or the
/// memory operand (`MEM`).
pub(crate) fn mul_wide<const S: u32, const SIGNED: bool, const MEM: bool, const A: u8>(
    m: &mut Machine,
    op: Cursor<'_>,
) -> ExecResult {
    let mask = size_mask(S);
    let src = if MEM {
        load_or_generic!(m, op, m.addr::<A>(&op), S)
    } else {
        m.reg(op.src) & mask
    };
    let acc = m.reg(Reg::Rax) & mask;
    let (lo, hi, overflow) = if SIGNED {
        let p = sext(acc, S) as i128 * sext(src, S) as i128;
        let lo = p as u64 & mask;
        (lo, (p >> (S * 8)) as u64 & mask, p != sext(lo, S) as i128)
    } else {
        let p = acc as u128 * src as u128;
        let hi = (p >> (S * 8)) as u64 & mask;
        (p as u64 & mask, hi, hi != 0)
    };
    m.set_reg::<S>(Reg::Rax, lo);
    m.set_reg::<S>(Reg::Rdx, hi);
    if op.flags_live {
        let mut f = pzs(lo, S) & !ZF;
        if overflow {
            f |= CF | OF;
        }
        m.cpu.flags.update(STATUS, f);
    }
    next(m, op)
}
