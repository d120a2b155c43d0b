//! Multiplication and division: mul, imul (1/2/3 operands), div, idiv.

use iced_x86::{Instruction, Register};

use crate::fault::{ExecResult, FaultKind};
use crate::flags::{pzs, sext, size_mask, CF, OF, STATUS, ZF};
use crate::machine::Machine;

/// Low and high halves registers of the implicit accumulator pair for a size.
fn pair(size: u32) -> (Register, Register) {
    match size {
        1 => (Register::AL, Register::AH),
        2 => (Register::AX, Register::DX),
        4 => (Register::EAX, Register::EDX),
        _ => (Register::RAX, Register::RDX),
    }
}

/// Writes a double-width product or dividend into the accumulator pair.
fn write_pair(m: &mut Machine, size: u32, lo: u64, hi: u64) {
    if size == 1 {
        m.cpu.set_gpr(Register::AX, (lo & 0xff) | (hi & 0xff) << 8);
    } else {
        let (l, h) = pair(size);
        m.cpu.set_gpr(l, lo);
        m.cpu.set_gpr(h, hi);
    }
}

/// Reads the double-width accumulator pair as an unsigned 128-bit value.
fn read_pair(m: &Machine, size: u32) -> u128 {
    if size == 1 {
        return m.cpu.gpr(Register::AX) as u128;
    }
    let (l, h) = pair(size);
    (m.cpu.gpr(h) as u128) << (size * 8) | m.cpu.gpr(l) as u128
}

/// Flags after a multiplication: CF = OF = overflow; SF and PF from the low result, ZF and AF clear
/// (the architecturally undefined flags as Intel hardware sets them).
fn set_mul_flags(m: &mut Machine, lo: u64, size: u32, overflow: bool) {
    let mut f = pzs(lo, size) & !ZF;
    if overflow {
        f |= CF | OF;
    }
    m.cpu.flags.update(STATUS, f);
}

/// `mul r/m`: unsigned accumulator * source.
pub(crate) fn mul(m: &mut Machine, i: &Instruction) -> ExecResult {
    let size = m.op_size(i, 0);
    let src = m.read_op(i, 0, size)?;
    let acc = m.cpu.gpr(pair(size).0);
    let bits = size * 8;
    let p = acc as u128 * src as u128;
    let lo = p as u64 & size_mask(size);
    let hi = (p >> bits) as u64 & size_mask(size);
    write_pair(m, size, lo, hi);
    set_mul_flags(m, lo, size, hi != 0);
    Ok(())
}

/// `imul` in its one-, two- and three-operand forms.
pub(crate) fn imul(m: &mut Machine, i: &Instruction) -> ExecResult {
    let size = m.op_size(i, 0);
    let bits = size * 8;
    if i.op_count() == 1 {
        let src = sext(m.read_op(i, 0, size)?, size) as i128;
        let acc = sext(m.cpu.gpr(pair(size).0), size) as i128;
        let p = acc * src;
        let lo = p as u64 & size_mask(size);
        let hi = (p >> bits) as u64 & size_mask(size);
        write_pair(m, size, lo, hi);
        set_mul_flags(m, lo, size, p != sext(lo, size) as i128);
        return Ok(());
    }
    let (a, b) = if i.op_count() == 2 {
        (m.read_op(i, 0, size)?, m.read_op(i, 1, size)?)
    } else {
        (m.read_op(i, 1, size)?, m.read_op(i, 2, size)?)
    };
    let p = sext(a, size) as i128 * sext(b, size) as i128;
    let lo = p as u64 & size_mask(size);
    m.cpu.set_gpr(i.op0_register(), lo);
    set_mul_flags(m, lo, size, p != sext(lo, size) as i128);
    Ok(())
}

/// `div r/m`: unsigned double-width accumulator / source.
pub(crate) fn div(m: &mut Machine, i: &Instruction) -> ExecResult {
    let size = m.op_size(i, 0);
    let src = m.read_op(i, 0, size)? as u128;
    if src == 0 {
        return Err(FaultKind::DivideError.into());
    }
    let dividend = read_pair(m, size);
    let q = dividend / src;
    let r = dividend % src;
    if q > size_mask(size) as u128 {
        return Err(FaultKind::DivideError.into());
    }
    write_pair(m, size, q as u64, r as u64);
    Ok(())
}

/// `idiv r/m`: signed double-width accumulator / source.
pub(crate) fn idiv(m: &mut Machine, i: &Instruction) -> ExecResult {
    let size = m.op_size(i, 0);
    let bits = size * 8;
    let src = sext(m.read_op(i, 0, size)?, size) as i128;
    if src == 0 {
        return Err(FaultKind::DivideError.into());
    }
    let raw = read_pair(m, size);
    // Sign-extend the 2*bits-wide dividend to 128 bits.
    let shift = 128 - 2 * bits;
    let dividend = ((raw << shift) as i128) >> shift;
    let (Some(q), Some(r)) = (dividend.checked_div(src), dividend.checked_rem(src)) else {
        return Err(FaultKind::DivideError.into());
    };
    let min = -(1i128 << (bits - 1));
    let max = (1i128 << (bits - 1)) - 1;
    if q < min || q > max {
        return Err(FaultKind::DivideError.into());
    }
    write_pair(
        m,
        size,
        q as u64 & size_mask(size),
        r as u64 & size_mask(size),
    );
    Ok(())
}
