//! Shifts and rotates: shl/sal, shr, sar, rol, ror, rcl, rcr, shld, shrd.

use iced_x86::{Instruction, Mnemonic};

use crate::fault::ExecResult;
use crate::flags::{pzs, sext, sign_bit, size_mask, FlagOp, CF, OF, STATUS};
use crate::machine::Machine;
use crate::operand::Loc;

/// Shift count of operand `n`, masked like hardware (5 bits, 6 for 64-bit operands).
fn count(
    m: &mut Machine,
    i: &Instruction,
    n: u32,
    size: u32,
) -> Result<u32, crate::fault::Exception> {
    let c = m.read_op(i, n, 1)?;
    Ok((c & if size == 8 { 0x3f } else { 0x1f }) as u32)
}

/// A zero shift count changes no flags and no memory, but a 32-bit register destination is still
/// written (and so zero-extended).
fn unchanged(m: &mut Machine, loc: Loc, size: u32, v: u64) -> ExecResult {
    if let Loc::Reg(_) = loc {
        m.write_loc(loc, size, v)?;
    }
    Ok(())
}

/// shl/sal, shr, sar (flags are lazy).
pub(crate) fn shift(m: &mut Machine, i: &Instruction) -> ExecResult {
    let size = m.op_size(i, 0);
    let c = count(m, i, 1, size)?;
    let loc = m.loc(i, 0);
    let a = m.read_loc(loc, size)?;
    if c == 0 {
        return unchanged(m, loc, size, a);
    }
    let mask = size_mask(size);
    let (res, op) = match i.mnemonic() {
        Mnemonic::Shr => (if c as u64 >= 64 { 0 } else { a >> c }, FlagOp::Shr),
        Mnemonic::Sar => ((sext(a, size) >> c.min(63)) as u64, FlagOp::Sar),
        _ => (((a as u128) << c) as u64, FlagOp::Shl),
    };
    let res = res & mask;
    m.write_loc(loc, size, res)?;
    m.cpu.flags.set(op, size, a, c as u64, res);
    Ok(())
}

/// rol, ror, rcl, rcr (only CF and OF change).
pub(crate) fn rotate(m: &mut Machine, i: &Instruction) -> ExecResult {
    let size = m.op_size(i, 0).clamp(1, 8);
    let bits = size * 8;
    let raw = count(m, i, 1, size)?;
    let loc = m.loc(i, 0);
    let a = m.read_loc(loc, size)?;
    if raw == 0 {
        return unchanged(m, loc, size, a);
    }
    let mask = size_mask(size);
    let sign = sign_bit(size);
    let msb = |v: u64| v & sign != 0;
    let (res, cf, of) = match i.mnemonic() {
        Mnemonic::Rol | Mnemonic::Ror => {
            let c = raw % bits;
            let res = if c == 0 {
                a
            } else if i.mnemonic() == Mnemonic::Rol {
                ((a << c) | (a >> (bits - c))) & mask
            } else {
                ((a >> c) | (a << (bits - c))) & mask
            };
            // Intel computes OF from the first one-bit step for every count.
            if i.mnemonic() == Mnemonic::Rol {
                (res, res & 1 != 0, msb(a ^ (a << 1)))
            } else {
                (res, msb(res), msb(a) ^ (a & 1 != 0))
            }
        }
        _ => {
            let c = if bits < 32 { raw % (bits + 1) } else { raw };
            if c == 0 {
                return unchanged(m, loc, size, a);
            }
            let width = bits + 1;
            let wmask = (1u128 << width) - 1;
            let carry_in = m.cpu.flags.carry() as u128;
            let v = (carry_in << bits) | a as u128;
            let r = if i.mnemonic() == Mnemonic::Rcl {
                ((v << c) | (v >> (width - c))) & wmask
            } else {
                ((v >> c) | (v << (width - c))) & wmask
            };
            let res = r as u64 & mask;
            let cf = (r >> bits) & 1 != 0;
            if i.mnemonic() == Mnemonic::Rcl {
                (res, cf, msb(a ^ (a << 1)))
            } else {
                (res, cf, msb(a) ^ (carry_in != 0))
            }
        }
    };
    m.write_loc(loc, size, res)?;
    let bits = (if cf { CF } else { 0 }) | (if of { OF } else { 0 });
    m.cpu.flags.update(CF | OF, bits);
    Ok(())
}

/// shld / shrd.
pub(crate) fn shift_double(m: &mut Machine, i: &Instruction) -> ExecResult {
    let size = m.op_size(i, 0);
    let bits = size * 8;
    let c = count(m, i, 2, size)?;
    let loc = m.loc(i, 0);
    let dst = m.read_loc(loc, size)?;
    if c == 0 {
        return unchanged(m, loc, size, dst);
    }
    let src = m.cpu.gpr(i.op1_register());
    let mask = size_mask(size);
    let shld = i.mnemonic() == Mnemonic::Shld;
    let (res, cf) = if bits <= 16 {
        // Counts above the operand width shift in dst:src:dst again, like Intel hardware.
        let v = (dst as u128) << (2 * bits) | (src as u128) << bits | dst as u128;
        if shld {
            let shifted = v << c;
            (
                (shifted >> (2 * bits)) as u64 & mask,
                (shifted >> (3 * bits)) & 1 != 0,
            )
        } else {
            ((v >> c) as u64 & mask, (v >> (c - 1)) & 1 != 0)
        }
    } else if shld {
        (
            ((dst << c) | (src >> (bits - c))) & mask,
            (dst >> (bits - c)) & 1 != 0,
        )
    } else {
        (
            ((dst >> c) | (src << (bits - c))) & mask,
            (dst >> (c - 1)) & 1 != 0,
        )
    };
    m.write_loc(loc, size, res)?;
    let mut f = pzs(res, size);
    if cf {
        f |= CF;
    }
    // OF as for the first one-bit step (what Intel reports for every count).
    let first = if shld {
        dst ^ (dst << 1)
    } else {
        dst ^ (src << (bits - 1))
    };
    if first & sign_bit(size) != 0 {
        f |= OF;
    }
    m.cpu.flags.update(STATUS, f);
    Ok(())
}
