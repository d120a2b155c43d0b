//! Bit operations: bt/bts/btr/btc, bsf/bsr, lzcnt/tzcnt, popcnt.

use iced_x86::{Instruction, Mnemonic, OpKind};

use crate::fault::ExecResult;
use crate::flags::{pzs, sext, size_mask, CF, PF, STATUS, ZF};
use crate::machine::Machine;
use crate::operand::Loc;

/// bt, bts, btr, btc: CF = selected bit, then set/reset/complement it.
pub(crate) fn bit_test(m: &mut Machine, i: &Instruction) -> ExecResult {
    let size = m.op_size(i, 0);
    let bits = size as u64 * 8;
    let offset = m.read_op(i, 1, size)?;
    let mut loc = m.loc(i, 0);
    let bit = if let (Loc::Mem(addr), OpKind::Register) = (loc, i.op1_kind()) {
        // A register bit offset addresses memory beyond the operand (signed).
        let signed = sext(offset, size);
        let chunk = signed.div_euclid(bits as i64);
        loc = Loc::Mem(addr.wrapping_add((chunk * size as i64) as u64) & m.arch().addr_mask());
        signed.rem_euclid(bits as i64) as u64
    } else {
        offset & (bits - 1)
    };
    let v = m.read_loc(loc, size)?;
    let set = (v >> bit) & 1 != 0;
    let new = match i.mnemonic() {
        Mnemonic::Bts => Some(v | 1 << bit),
        Mnemonic::Btr => Some(v & !(1 << bit)),
        Mnemonic::Btc => Some(v ^ 1 << bit),
        _ => None,
    };
    if let Some(n) = new {
        m.write_loc(loc, size, n)?;
    }
    m.cpu.flags.update(CF, if set { CF } else { 0 });
    Ok(())
}

/// bsf / bsr: ZF = source is zero (destination unchanged then); PF from the index, other status flags
/// clear (as Intel hardware leaves the undefined ones).
pub(crate) fn bit_scan(m: &mut Machine, i: &Instruction) -> ExecResult {
    let size = m.op_size(i, 0);
    let src = m.read_op(i, 1, size)? & size_mask(size);
    if src == 0 {
        m.cpu.flags.update(STATUS, ZF | PF);
        return Ok(());
    }
    let idx = if i.mnemonic() == Mnemonic::Bsf {
        src.trailing_zeros()
    } else {
        63 - src.leading_zeros()
    };
    m.cpu.set_gpr(i.op0_register(), idx as u64);
    m.cpu.flags.update(STATUS, pzs(idx as u64, 1) & PF);
    Ok(())
}

/// lzcnt / tzcnt: CF = source is zero, ZF = result is zero, other status flags clear.
pub(crate) fn count_zeros(m: &mut Machine, i: &Instruction) -> ExecResult {
    let size = m.op_size(i, 0);
    let bits = size * 8;
    let src = m.read_op(i, 1, size)? & size_mask(size);
    let n = if src == 0 {
        bits
    } else if i.mnemonic() == Mnemonic::Tzcnt {
        src.trailing_zeros()
    } else {
        src.leading_zeros() - (64 - bits)
    };
    m.cpu.set_gpr(i.op0_register(), n as u64);
    let f = (if src == 0 { CF } else { 0 }) | (if n == 0 { ZF } else { 0 });
    m.cpu.flags.update(STATUS, f);
    Ok(())
}

/// popcnt: ZF = source is zero, other status flags cleared.
pub(crate) fn popcnt(m: &mut Machine, i: &Instruction) -> ExecResult {
    let size = m.op_size(i, 0);
    let src = m.read_op(i, 1, size)? & size_mask(size);
    m.cpu.set_gpr(i.op0_register(), src.count_ones() as u64);
    m.cpu.flags.update(STATUS, if src == 0 { ZF } else { 0 });
    Ok(())
}
