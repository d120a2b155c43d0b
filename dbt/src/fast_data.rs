//! Specialised data movement handlers: mov, movzx/movsx/movsxd, lea, cmovcc, setcc, nop.
//!
//! Generic over the operand size `S` (bytes) and the operand form (see [`crate::op::form`]). Memory
//! accesses that miss the fast path re-run the op with its generic handler.

use crate::fault::ExecResult;
use crate::flags::{sext, size_mask};
use crate::machine::Machine;
use crate::op::{form, load_or_generic, next, store_or_generic, Cursor};

/// mov in the forms register/immediate/memory to register and register/immediate to memory.
pub(crate) fn mov<const S: u32, const FORM: u8, const A: u8>(
    m: &mut Machine,
    op: Cursor<'_>,
) -> ExecResult {
    match FORM {
        form::RR => {
            let v = m.reg(op.src);
            m.set_reg::<S>(op.dst, v);
        }
        form::RI => m.set_reg::<S>(op.dst, op.imm),
        form::RM => {
            let v = load_or_generic!(m, op, m.addr::<A>(&op), S);
            m.set_reg::<S>(op.dst, v);
        }
        form::MR => {
            let v = m.reg(op.src) & size_mask(S);
            store_or_generic!(m, op, m.addr::<A>(&op), S, v);
        }
        _ => store_or_generic!(m, op, m.addr::<A>(&op), S, op.imm),
    }
    next(m, op)
}

/// movzx/movsx/movsxd: `SRC`-byte register or memory source, extended into a `DST`-byte register.
pub(crate) fn extend<
    const SRC: u32,
    const DST: u32,
    const SIGNED: bool,
    const MEM: bool,
    const A: u8,
>(
    m: &mut Machine,
    op: Cursor<'_>,
) -> ExecResult {
    let v = if MEM {
        load_or_generic!(m, op, m.addr::<A>(&op), SRC)
    } else {
        m.reg(op.src) & size_mask(SRC)
    };
    let v = if SIGNED {
        sext(v, SRC) as u64 & size_mask(DST)
    } else {
        v
    };
    m.set_reg::<DST>(op.dst, v);
    next(m, op)
}

/// lea (the address truncated to the destination size).
pub(crate) fn lea<const S: u32, const A: u8>(m: &mut Machine, op: Cursor<'_>) -> ExecResult {
    let v = m.addr::<A>(&op) & size_mask(S);
    m.set_reg::<S>(op.dst, v);
    next(m, op)
}

/// cmovcc from a register or memory (the source is read, and a 4-byte destination zero-extended,
/// whether or not the condition holds).
pub(crate) fn cmov<const S: u32, const MEM: bool, const A: u8>(
    m: &mut Machine,
    op: Cursor<'_>,
) -> ExecResult {
    let src = if MEM {
        load_or_generic!(m, op, m.addr::<A>(&op), S)
    } else {
        m.reg(op.src)
    };
    let v = if m.cpu.flags.cond(op.cc) {
        src
    } else {
        m.reg(op.dst)
    };
    m.set_reg::<S>(op.dst, v);
    next(m, op)
}

/// cmovcc between registers on the condition `CC`, with the flags from a writer of kind `K` (see
/// [`crate::flags::writer`]) earlier in the block.
pub(crate) fn cmov_known<const S: u32, const K: u8, const CC: u8>(
    m: &mut Machine,
    op: Cursor<'_>,
) -> ExecResult {
    let r = if m.cpu.flags.cond_known::<K, CC>() {
        op.src
    } else {
        op.dst
    };
    let v = m.reg(r);
    m.set_reg::<S>(op.dst, v);
    next(m, op)
}

/// setcc into a byte register on the condition `CC`, with the flags from a writer of kind `K` (see
/// [`crate::flags::writer`]) earlier in the block.
pub(crate) fn setcc_known<const K: u8, const CC: u8>(
    m: &mut Machine,
    op: Cursor<'_>,
) -> ExecResult {
    let v = m.cpu.flags.cond_known::<K, CC>() as u64;
    m.set_reg::<1>(op.dst, v);
    next(m, op)
}

/// setcc into a byte register or memory.
pub(crate) fn setcc<const MEM: bool, const A: u8>(m: &mut Machine, op: Cursor<'_>) -> ExecResult {
    let v = m.cpu.flags.cond(op.cc) as u64;
    if MEM {
        store_or_generic!(m, op, m.addr::<A>(&op), 1, v);
    } else {
        m.set_reg::<1>(op.dst, v);
    }
    next(m, op)
}

/// Instructions without architectural effect.
pub(crate) fn nop(m: &mut Machine, op: Cursor<'_>) -> ExecResult {
    next(m, op)
}
