//! Data movement: mov/movzx/movsx/lea, exchanges and compare-exchanges, conversions, setcc/cmovcc,
//! xlat, sahf/lahf, nops.

use iced_x86::{Instruction, Mnemonic, OpKind, Register};

use crate::fault::{ExecResult, FaultKind};
use crate::flags::{sext, size_mask, FlagOp, AF, CF, PF, SF, ZF};
use crate::machine::Machine;
use crate::operand::Loc;

/// `mov` between GPRs, memory and immediates.
pub(crate) fn mov(m: &mut Machine, i: &Instruction) -> ExecResult {
    let size = m.op_size(i, 0);
    let v = m.read_op(i, 1, size)?;
    m.write_op(i, 0, size, v)
}

/// `movzx`.
pub(crate) fn movzx(m: &mut Machine, i: &Instruction) -> ExecResult {
    let src = m.op_size(i, 1);
    let v = m.read_op(i, 1, src)?;
    m.write_op(i, 0, m.op_size(i, 0), v)
}

/// `movsx` / `movsxd`.
pub(crate) fn movsx(m: &mut Machine, i: &Instruction) -> ExecResult {
    let src = m.op_size(i, 1);
    let dst = m.op_size(i, 0);
    let v = sext(m.read_op(i, 1, src)?, src) as u64 & size_mask(dst);
    m.write_op(i, 0, dst, v)
}

/// `lea` (no segment base, truncated to the destination size).
pub(crate) fn lea(m: &mut Machine, i: &Instruction) -> ExecResult {
    let size = m.op_size(i, 0);
    let v = m.ea_no_segment(i) & size_mask(size);
    m.write_op(i, 0, size, v)
}

/// `xchg`.
pub(crate) fn xchg(m: &mut Machine, i: &Instruction) -> ExecResult {
    let size = m.op_size(i, 0);
    let l0 = m.loc(i, 0);
    let l1 = m.loc(i, 1);
    let a = m.read_loc(l0, size)?;
    let b = m.read_loc(l1, size)?;
    // Write the memory side first so a fault leaves registers untouched.
    if let Loc::Mem(_) = l1 {
        m.write_loc(l1, size, a)?;
        m.write_loc(l0, size, b)
    } else {
        m.write_loc(l0, size, b)?;
        m.write_loc(l1, size, a)
    }
}

/// The accumulator register of an operand size.
fn accumulator(size: u32) -> Register {
    match size {
        1 => Register::AL,
        2 => Register::AX,
        4 => Register::EAX,
        _ => Register::RAX,
    }
}

/// `cmpxchg r/m, r`.
pub(crate) fn cmpxchg(m: &mut Machine, i: &Instruction) -> ExecResult {
    let size = m.op_size(i, 0);
    let loc = m.loc(i, 0);
    let dst = m.read_loc(loc, size)?;
    let src = m.cpu.gpr(i.op1_register());
    let acc_reg = accumulator(size);
    let acc = m.cpu.gpr(acc_reg);
    if acc == dst {
        m.write_loc(loc, size, src)?;
    } else {
        if let Loc::Mem(_) = loc {
            m.write_loc(loc, size, dst)?;
        }
        m.cpu.set_gpr(acc_reg, dst);
    }
    m.cpu
        .flags
        .set(FlagOp::Sub, size, acc, dst, acc.wrapping_sub(dst));
    Ok(())
}

/// `cmpxchg8b m64`.
pub(crate) fn cmpxchg8b(m: &mut Machine, i: &Instruction) -> ExecResult {
    let addr = m.ea(i);
    let v = m.load(addr, 8)?;
    let r = &m.cpu.regs;
    let expected = (r[2] & 0xffff_ffff) << 32 | (r[0] & 0xffff_ffff);
    let equal = v == expected;
    if equal {
        let new = (r[1] & 0xffff_ffff) << 32 | (r[3] & 0xffff_ffff);
        m.store(addr, 8, new)?;
    } else {
        m.store(addr, 8, v)?;
        m.cpu.regs[0] = v & 0xffff_ffff;
        m.cpu.regs[2] = v >> 32;
    }
    m.cpu.flags.update(ZF, if equal { ZF } else { 0 });
    Ok(())
}

/// `cmpxchg16b m128` (16-byte alignment required).
pub(crate) fn cmpxchg16b(m: &mut Machine, i: &Instruction) -> ExecResult {
    let addr = m.ea(i);
    if !addr.is_multiple_of(16) {
        return Err(FaultKind::GeneralProtection(format!(
            "cmpxchg16b on misaligned address 0x{addr:x}"
        ))
        .into());
    }
    let v = m.load_u128(addr)?;
    let r = &m.cpu.regs;
    let expected = (r[2] as u128) << 64 | r[0] as u128;
    let equal = v == expected;
    if equal {
        let new = (r[1] as u128) << 64 | r[3] as u128;
        m.store_u128(addr, new)?;
    } else {
        m.store_u128(addr, v)?;
        m.cpu.regs[0] = v as u64;
        m.cpu.regs[2] = (v >> 64) as u64;
    }
    m.cpu.flags.update(ZF, if equal { ZF } else { 0 });
    Ok(())
}

/// `xadd r/m, r`.
pub(crate) fn xadd(m: &mut Machine, i: &Instruction) -> ExecResult {
    let size = m.op_size(i, 0);
    let loc = m.loc(i, 0);
    let dst = m.read_loc(loc, size)?;
    let src_reg = i.op1_register();
    let src = m.cpu.gpr(src_reg);
    let sum = dst.wrapping_add(src) & size_mask(size);
    if let Loc::Mem(_) = loc {
        m.write_loc(loc, size, sum)?;
        m.cpu.set_gpr(src_reg, dst);
    } else {
        m.cpu.set_gpr(src_reg, dst);
        m.write_loc(loc, size, sum)?;
    }
    m.cpu.flags.set(FlagOp::Add, size, dst, src, sum);
    Ok(())
}

/// `bswap r32/r64` (16-bit form yields zero, like hardware).
pub(crate) fn bswap(m: &mut Machine, i: &Instruction) -> ExecResult {
    let r = i.op0_register();
    let v = m.cpu.gpr(r);
    let res = match r.size() {
        4 => (v as u32).swap_bytes() as u64,
        8 => v.swap_bytes(),
        _ => 0,
    };
    m.cpu.set_gpr(r, res);
    Ok(())
}

/// cbw/cwde/cdqe and cwd/cdq/cqo.
pub(crate) fn convert(m: &mut Machine, i: &Instruction) -> ExecResult {
    let a = m.cpu.regs[0];
    match i.mnemonic() {
        Mnemonic::Cbw => m.cpu.set_gpr(Register::AX, sext(a, 1) as u64),
        Mnemonic::Cwde => m.cpu.set_gpr(Register::EAX, sext(a, 2) as u64),
        Mnemonic::Cdqe => m.cpu.regs[0] = sext(a, 4) as u64,
        Mnemonic::Cwd => m.cpu.set_gpr(Register::DX, (sext(a, 2) >> 16) as u64),
        Mnemonic::Cdq => m.cpu.set_gpr(Register::EDX, (sext(a, 4) >> 32) as u64),
        _ => m.cpu.regs[2] = ((a as i64) >> 63) as u64,
    }
    Ok(())
}

/// `cmovcc` (the source is read, and a 32-bit destination zero-extended, even if the condition fails).
pub(crate) fn cmovcc(m: &mut Machine, i: &Instruction) -> ExecResult {
    let size = m.op_size(i, 0);
    let src = m.read_op(i, 1, size)?;
    let r = i.op0_register();
    let v = if m.cpu.flags.cond(i.condition_code() as u8) {
        src
    } else {
        m.cpu.gpr(r)
    };
    m.cpu.set_gpr(r, v);
    Ok(())
}

/// `setcc`.
pub(crate) fn setcc(m: &mut Machine, i: &Instruction) -> ExecResult {
    let v = m.cpu.flags.cond(i.condition_code() as u8) as u64;
    m.write_op(i, 0, 1, v)
}

/// `xlat`: al = [rbx + al].
pub(crate) fn xlat(m: &mut Machine, i: &Instruction) -> ExecResult {
    let addr = if i.op_count() > 0 && i.op0_kind() == OpKind::Memory {
        m.ea(i)
    } else {
        (m.cpu.regs[3].wrapping_add(m.cpu.regs[0] & 0xff)) & m.arch().addr_mask()
    };
    let v = m.load(addr, 1)?;
    m.cpu.set_gpr(Register::AL, v);
    Ok(())
}

/// `sahf`: SF, ZF, AF, PF, CF from AH.
pub(crate) fn sahf(m: &mut Machine, _i: &Instruction) -> ExecResult {
    let ah = m.cpu.gpr(Register::AH);
    m.cpu.flags.update(SF | ZF | AF | PF | CF, ah);
    Ok(())
}

/// `lahf`: AH from SF, ZF, AF, PF, CF.
pub(crate) fn lahf(m: &mut Machine, _i: &Instruction) -> ExecResult {
    let f = m.cpu.flags() & 0xff;
    m.cpu
        .set_gpr(Register::AH, (f & (SF | ZF | AF | PF | CF)) | 2);
    Ok(())
}

/// Instructions without architectural effect here (nop, pause, endbr, fences, prefetch, cache
/// flushes).
pub(crate) fn nop(_m: &mut Machine, _i: &Instruction) -> ExecResult {
    Ok(())
}
