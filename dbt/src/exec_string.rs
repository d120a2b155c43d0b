//! String instructions: movs, stos, lods, cmps, scas (b/w/d/q) with rep/repe/repne and the direction
//! flag. Interrupted by a fault, rsi/rdi/rcx reflect the elements already done, like hardware.

use iced_x86::{Instruction, Mnemonic, OpKind, Register};

use crate::fault::ExecResult;
use crate::flags::{size_mask, FlagOp, DF, ZF};
use crate::machine::Machine;

/// The five string operations.
#[derive(Clone, Copy, PartialEq, Eq)]
enum StrOp {
    Movs,
    Stos,
    Lods,
    Cmps,
    Scas,
}

/// Address-size mask of a string instruction (from its implicit memory operands).
fn addr_mask(i: &Instruction) -> u64 {
    for n in 0..i.op_count() {
        match i.op_kind(n) {
            OpKind::MemorySegESI | OpKind::MemoryESEDI => return 0xffff_ffff,
            OpKind::MemorySegSI | OpKind::MemoryESDI => return 0xffff,
            OpKind::MemorySegRSI | OpKind::MemoryESRDI => return u64::MAX,
            _ => {}
        }
    }
    u64::MAX
}

/// Accumulator register of an element size.
fn acc(elem: u32) -> Register {
    match elem {
        1 => Register::AL,
        2 => Register::AX,
        4 => Register::EAX,
        _ => Register::RAX,
    }
}

/// Executes a string instruction (with or without a repeat prefix).
pub(crate) fn string(m: &mut Machine, i: &Instruction) -> ExecResult {
    use Mnemonic as M;
    let op = match i.mnemonic() {
        M::Movsb | M::Movsw | M::Movsd | M::Movsq => StrOp::Movs,
        M::Stosb | M::Stosw | M::Stosd | M::Stosq => StrOp::Stos,
        M::Lodsb | M::Lodsw | M::Lodsd | M::Lodsq => StrOp::Lods,
        M::Cmpsb | M::Cmpsw | M::Cmpsd | M::Cmpsq => StrOp::Cmps,
        _ => StrOp::Scas,
    };
    let elem = i.memory_size().size() as u32;
    let amask = addr_mask(i);
    let compare = matches!(op, StrOp::Cmps | StrOp::Scas);
    let rep = i.has_rep_prefix() || i.has_repne_prefix();
    // For cmps/scas: F3 = repe (stop when ZF=0), F2 = repne (stop when ZF=1).
    let stop_on_zf = i.has_repne_prefix();
    let back = m.cpu.flags.test(DF);
    let step = if back {
        (elem as u64).wrapping_neg()
    } else {
        elem as u64
    };
    let seg = i.segment_prefix();
    let aacc = acc(elem);

    if rep && !back && matches!(op, StrOp::Movs | StrOp::Stos) && bulk(m, op, elem, amask, seg) {
        return Ok(());
    }
    loop {
        let count = m.cpu.regs[1] & amask;
        if rep && count == 0 {
            break;
        }
        let rsi = m.cpu.regs[6] & amask;
        let rdi = m.cpu.regs[7] & amask;
        let src = m.segment_address(seg, rsi);
        match op {
            StrOp::Movs => {
                let v = m.load(src, elem)?;
                m.store(rdi, elem, v)?;
            }
            StrOp::Stos => {
                let v = m.cpu.gpr(aacc);
                m.store(rdi, elem, v)?;
            }
            StrOp::Lods => {
                let v = m.load(src, elem)?;
                m.cpu.set_gpr(aacc, v);
            }
            StrOp::Cmps => {
                let a = m.load(src, elem)?;
                let b = m.load(rdi, elem)?;
                m.cpu.flags.set(FlagOp::Sub, elem, a, b, a.wrapping_sub(b));
            }
            StrOp::Scas => {
                let a = m.cpu.gpr(aacc);
                let b = m.load(rdi, elem)?;
                m.cpu.flags.set(FlagOp::Sub, elem, a, b, a.wrapping_sub(b));
            }
        }
        if matches!(op, StrOp::Movs | StrOp::Lods | StrOp::Cmps) {
            set_masked(m, 6, rsi.wrapping_add(step), amask);
        }
        if op != StrOp::Lods {
            set_masked(m, 7, rdi.wrapping_add(step), amask);
        }
        if !rep {
            break;
        }
        set_masked(m, 1, count.wrapping_sub(1), amask);
        if compare && m.cpu.flags.test(ZF) == stop_on_zf {
            break;
        }
    }
    Ok(())
}

/// Writes the low address-size part of register `r`.
fn set_masked(m: &mut Machine, r: usize, v: u64, amask: u64) {
    m.cpu.regs[r] = if amask == 0xffff {
        (m.cpu.regs[r] & !0xffff) | (v & 0xffff)
    } else {
        v & amask
    };
}

/// Forward `rep movs`/`rep stos` as one bulk copy/fill when every page is accessible and the copy
/// does not overlap in a way element-wise copying would observe. Returns false to fall back.
fn bulk(m: &mut Machine, op: StrOp, elem: u32, amask: u64, seg: Register) -> bool {
    let count = m.cpu.regs[1] & amask;
    let Some(len) = count.checked_mul(elem as u64) else {
        return false;
    };
    let rsi = m.cpu.regs[6] & amask;
    let rdi = m.cpu.regs[7] & amask;
    if count == 0 {
        return true;
    }
    if rdi.checked_add(len).is_none_or(|e| e > amask) {
        return false;
    }
    match op {
        StrOp::Movs => {
            let src = m.segment_address(seg, rsi);
            if rsi.checked_add(len).is_none_or(|e| e > amask) {
                return false;
            }
            // Element-wise forward copying reads bytes it already wrote when dst lies inside (src, src+len).
            if rdi > src && rdi < src.wrapping_add(len) {
                return false;
            }
            if m.mem.guest_copy(rdi, src, len).is_err() {
                return false;
            }
            set_masked(m, 6, rsi + len, amask);
        }
        _ => {
            let v = m.cpu.gpr(acc(elem)) & size_mask(elem);
            if m.mem.guest_fill(rdi, v, elem, len).is_err() {
                return false;
            }
        }
    }
    set_masked(m, 7, rdi + len, amask);
    set_masked(m, 1, 0, amask);
    true
}
