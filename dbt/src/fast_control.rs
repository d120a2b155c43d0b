//! Specialised control transfer and stack handlers: jmp, jcc, call, ret, push, pop.
//!
//! `P` is the pointer size in bytes (4 on X86, 8 on X64), so it also gives the stack pointer's
//! width. Calls and returns maintain the shadow
//! call stack like the generic handlers. Memory accesses that miss the fast path re-run the op with
//! its generic handler.

use crate::fault::ExecResult;
use crate::flags::size_mask;
use crate::machine::Machine;
use crate::op::{load_or_generic, next, store_or_generic, Cursor};

/// Direct jmp to `op.target`.
pub(crate) fn jmp(m: &mut Machine, op: Cursor<'_>) -> ExecResult {
    m.cpu.rip = op.target;
    next(m, op)
}

/// jcc to `op.target` on condition `op.cc` (the fall-through rip is already set).
pub(crate) fn jcc(m: &mut Machine, op: Cursor<'_>) -> ExecResult {
    if m.cpu.flags.cond(op.cc) {
        m.cpu.rip = op.target;
    }
    next(m, op)
}

/// jcc to `op.target` on the condition `CC`, with the flags from a writer of kind `K` (see
/// [`crate::flags::writer`]) earlier in the block.
pub(crate) fn jcc_known<const K: u8, const CC: u8>(m: &mut Machine, op: Cursor<'_>) -> ExecResult {
    if m.cpu.flags.cond_known::<K, CC>() {
        m.cpu.rip = op.target;
    }
    next(m, op)
}

/// Indirect jmp through register `op.src` or the memory operand.
pub(crate) fn jmp_indirect<const P: u32, const MEM: bool, const A: u8>(
    m: &mut Machine,
    op: Cursor<'_>,
) -> ExecResult {
    m.cpu.rip = if MEM {
        load_or_generic!(m, op, m.addr::<A>(&op), P)
    } else {
        m.reg(op.src) & size_mask(P)
    };
    next(m, op)
}

/// Pushes `v`, or returns [`crate::op::run_generic`] from the caller if the store's fast path does
/// not apply.
macro_rules! push_or_generic {
    ($m:expr, $op:expr, $v:expr, $size:expr) => {
        let sp = $m.sp().wrapping_sub($size as u64) & size_mask($size);
        store_or_generic!($m, $op, sp, $size, $v);
        $m.cpu.regs[4] = sp;
    };
}

/// Pushes the return address `op.imm`, records the call and continues at `target`.
#[inline(always)]
fn call_to<const P: u32>(m: &mut Machine, op: Cursor<'_>, target: u64) -> ExecResult {
    push_or_generic!(m, op, op.imm, P);
    let slot = m.sp();
    m.cpu.shadow_push(op.imm, slot);
    m.cpu.rip = target;
    next(m, op)
}

/// Direct call to `op.target`.
pub(crate) fn call<const P: u32>(m: &mut Machine, op: Cursor<'_>) -> ExecResult {
    call_to::<P>(m, op, op.target)
}

/// Direct call in the middle of a block, which continues with the callee: pushes the return
/// address and records the call.
pub(crate) fn call_inlined<const P: u32>(m: &mut Machine, op: Cursor<'_>) -> ExecResult {
    push_or_generic!(m, op, op.imm, P);
    let slot = m.sp();
    m.cpu.shadow_push(op.imm, slot);
    next(m, op)
}

/// Indirect call through register `op.src` or the memory operand.
pub(crate) fn call_indirect<const P: u32, const MEM: bool, const A: u8>(
    m: &mut Machine,
    op: Cursor<'_>,
) -> ExecResult {
    let target = if MEM {
        load_or_generic!(m, op, m.addr::<A>(&op), P)
    } else {
        m.reg(op.src) & size_mask(P)
    };
    call_to::<P>(m, op, target)
}

/// ret, releasing `op.imm` more bytes of arguments.
pub(crate) fn ret<const P: u32>(m: &mut Machine, op: Cursor<'_>) -> ExecResult {
    let slot = m.sp();
    let target = load_or_generic!(m, op, slot, P);
    m.cpu.regs[4] = slot.wrapping_add(P as u64).wrapping_add(op.imm) & size_mask(P);
    m.cpu.shadow_pop(slot);
    m.cpu.rip = target;
    next(m, op)
}

/// push of register `op.src`.
pub(crate) fn push_reg<const P: u32>(m: &mut Machine, op: Cursor<'_>) -> ExecResult {
    let v = m.reg(op.src) & size_mask(P);
    push_or_generic!(m, op, v, P);
    next(m, op)
}

/// push of the immediate `op.imm`.
pub(crate) fn push_imm<const P: u32>(m: &mut Machine, op: Cursor<'_>) -> ExecResult {
    push_or_generic!(m, op, op.imm, P);
    next(m, op)
}

/// pop into register `op.dst`.
pub(crate) fn pop_reg<const P: u32>(m: &mut Machine, op: Cursor<'_>) -> ExecResult {
    let sp = m.sp();
    let v = load_or_generic!(m, op, sp, P);
    m.cpu.regs[4] = sp.wrapping_add(P as u64) & size_mask(P);
    m.set_reg::<P>(op.dst, v);
    next(m, op)
}
