//! Choosing the op for a decoded instruction: a specialised handler for hot instruction forms
//! (operands resolved into the [`Op`]), the generic handler for everything else, and the fusion of a
//! flag-writing instruction with the conditional branch after it.
//!
//! Only instructions the generic dispatch table supports are specialised, so [`crate::is_supported`]
//! and the executor decide from the same table. A specialised handler must behave exactly like the
//! generic one, except that it skips recording status flags nobody reads (see [`crate::liveness`]).

use iced_x86::{Code, Instruction, Mnemonic, OpKind, Register};

use crate::cpu::{Arch, Reg};
use crate::dispatch::{handler_for, unsupported};
use crate::fast_alu::{
    alu, alu_jcc, alu_op, imul, incdec, incdec_jcc, mul_wide, neg_not, shift_imm, shift_op,
};
use crate::fast_control::{
    call, call_indirect, call_inlined, jcc, jcc_known, jmp, jmp_indirect, pop_reg, push_imm,
    push_reg, ret,
};
use crate::fast_data::{cmov, cmov_known, extend, lea, mov, nop, setcc, setcc_known};
use crate::flags::{cc, cond_reads_carry, size_mask, writer, CF};
use crate::liveness::flag_use;
use crate::op::{ea, form, Handler, Op};

/// A general purpose register operand without the high-byte registers (AH..BH): register and size.
fn gpr(r: Register) -> Option<(Reg, u32)> {
    let v = r as u32;
    let at = |first: Register| v.wrapping_sub(first as u32);
    let (index, size) = if at(Register::AL) < 4 {
        (at(Register::AL), 1)
    } else if at(Register::SPL) < 12 {
        (at(Register::SPL) + 4, 1)
    } else if at(Register::AX) < 16 {
        (at(Register::AX), 2)
    } else if at(Register::EAX) < 16 {
        (at(Register::EAX), 4)
    } else if at(Register::RAX) < 16 {
        (at(Register::RAX), 8)
    } else {
        return None;
    };
    Some((Reg::from_index(index)?, size))
}

/// An operand as the specialised handlers see it.
#[derive(Clone, Copy)]
enum Opnd {
    /// Register and size.
    Reg(Reg, u32),
    /// Memory operand of this size (resolved by [`memory`]).
    Mem(u32),
    /// Immediate, sign-extended to 64 bits as iced reports it.
    Imm(u64),
}

/// Operand `n`, if it is of a kind the specialised handlers take.
fn operand(i: &Instruction, n: u32) -> Option<Opnd> {
    match i.op_kind(n) {
        OpKind::Register => gpr(i.op_register(n)).map(|(r, s)| Opnd::Reg(r, s)),
        OpKind::Memory => Some(Opnd::Mem(i.memory_size().size() as u32)),
        OpKind::Immediate8
        | OpKind::Immediate16
        | OpKind::Immediate32
        | OpKind::Immediate64
        | OpKind::Immediate8to16
        | OpKind::Immediate8to32
        | OpKind::Immediate8to64
        | OpKind::Immediate32to64 => i.try_immediate(n).ok().map(Opnd::Imm),
        _ => None,
    }
}

/// Resolves the memory operand into `op` (as `Machine::ea` computes it) and returns its kind (see
/// [`ea`]); `None` for operands with an FS/GS segment base, which stay with the generic handlers.
fn memory(i: &Instruction, arch: Arch, op: &mut Op) -> Option<u8> {
    if matches!(i.segment_prefix(), Register::FS | Register::GS) {
        return None;
    }
    let mut narrow = arch == Arch::X86;
    let mut kind = ea::D;
    op.disp = i.memory_displacement64();
    let base = i.memory_base();
    if base != Register::None && base != Register::RIP && base != Register::EIP {
        let (b, size) = gpr(base).filter(|&(_, s)| s >= 4)?;
        op.base = b;
        op.bmask = u64::MAX;
        narrow |= size == 4;
        kind = ea::B;
    }
    let index = i.memory_index();
    if index != Register::None {
        let (x, size) = gpr(index).filter(|&(_, s)| s >= 4)?;
        op.index = x;
        op.shift = i.memory_index_scale().trailing_zeros() as u8;
        narrow |= size == 4;
        kind = ea::BI;
    }
    op.amask = if narrow { 0xffff_ffff } else { u64::MAX };
    if kind == ea::D {
        op.disp &= op.amask;
    }
    Some(kind)
}

/// Whether `s` is an operand size the sized handlers take.
fn sized(s: u32) -> bool {
    matches!(s, 1 | 2 | 4 | 8)
}

/// Picks a handler generic over the operand size: `$f` is instantiated with the size (`_`) as its
/// first const parameter.
macro_rules! by_size {
    ($size:expr, $f:ident < _ $(, $rest:tt)* >) => {
        match $size {
            1 => $f::<1 $(, $rest)*> as Handler,
            2 => $f::<2 $(, $rest)*> as Handler,
            4 => $f::<4 $(, $rest)*> as Handler,
            _ => $f::<8 $(, $rest)*> as Handler,
        }
    };
}

/// Picks a handler generic over the address kind (see [`ea`]), its last const parameter: `$f` is
/// instantiated with the kind appended to the given parameters.
macro_rules! by_ea {
    ($kind:expr, $f:ident < $($p:tt),* >) => {
        match $kind {
            ea::D => $f::<$($p,)* { ea::D }> as Handler,
            ea::B => $f::<$($p,)* { ea::B }> as Handler,
            _ => $f::<$($p,)* { ea::BI }> as Handler,
        }
    };
}

/// [`by_size!`] for handlers that only take 4- and 8-byte operands.
macro_rules! by_size48 {
    ($size:expr, $f:ident < _ $(, $rest:tt)* >) => {
        match $size {
            4 => $f::<4 $(, $rest)*> as Handler,
            _ => $f::<8 $(, $rest)*> as Handler,
        }
    };
}

/// [`by_size48!`] and [`by_ea!`] together.
macro_rules! by_size48_ea {
    ($size:expr, $kind:expr, $f:ident < _ $(, $rest:tt)* >) => {
        match $size {
            4 => by_ea!($kind, $f<4 $(, $rest)*>),
            _ => by_ea!($kind, $f<8 $(, $rest)*>),
        }
    };
}

/// Picks a handler generic over a condition code known at compile time (see [`cc`]), its last
/// const parameter; P and NP are not instantiated (callers use the dynamic form for them).
macro_rules! by_cc {
    ($code:expr, $f:ident < $($p:tt),* >) => {{
        debug_assert!(fixed_cc($code));
        match $code {
            cc::O => $f::<$($p,)* { cc::O }> as Handler,
            cc::NO => $f::<$($p,)* { cc::NO }> as Handler,
            cc::B => $f::<$($p,)* { cc::B }> as Handler,
            cc::AE => $f::<$($p,)* { cc::AE }> as Handler,
            cc::E => $f::<$($p,)* { cc::E }> as Handler,
            cc::NE => $f::<$($p,)* { cc::NE }> as Handler,
            cc::BE => $f::<$($p,)* { cc::BE }> as Handler,
            cc::A => $f::<$($p,)* { cc::A }> as Handler,
            cc::S => $f::<$($p,)* { cc::S }> as Handler,
            cc::NS => $f::<$($p,)* { cc::NS }> as Handler,
            cc::L => $f::<$($p,)* { cc::L }> as Handler,
            cc::GE => $f::<$($p,)* { cc::GE }> as Handler,
            cc::LE => $f::<$($p,)* { cc::LE }> as Handler,
            _ => $f::<$($p,)* { cc::G }> as Handler,
        }
    }};
}

/// Whether a fused branch on `code` gets a handler with the condition fixed at compile time (all
/// but the parity conditions).
fn fixed_cc(code: u8) -> bool {
    (cc::O..=cc::G).contains(&code) && code != cc::P && code != cc::NP
}

/// The writer kind a reader of condition `code` can rely on: `writer`, if the condition is one the
/// `*_known` handlers are instantiated for.
fn known(writer: Option<u8>, code: u8) -> Option<u8> {
    writer.filter(|_| fixed_cc(code))
}

/// [`by_size!`] and [`by_ea!`] together.
macro_rules! by_size_ea {
    ($size:expr, $kind:expr, $f:ident < _ $(, $rest:tt)* >) => {
        match $size {
            1 => by_ea!($kind, $f<1 $(, $rest)*>),
            2 => by_ea!($kind, $f<2 $(, $rest)*>),
            4 => by_ea!($kind, $f<4 $(, $rest)*>),
            _ => by_ea!($kind, $f<8 $(, $rest)*>),
        }
    };
}

/// The kind of flag writer `i` is, if a later reader can rely on it (see [`writer`]).
pub(crate) fn known_writer(i: &Instruction) -> Option<u8> {
    use Mnemonic as M;
    match i.mnemonic() {
        M::Add => Some(writer::ADD),
        M::Sub | M::Cmp | M::Neg => Some(writer::SUB),
        M::And | M::Or | M::Xor | M::Test => Some(writer::LOGIC),
        _ => None,
    }
}

/// The op for `i`, given the status flags live after it; `inlined` for a direct call or jmp in the
/// middle of a block (which continues at its target); `writer` the kind of the last flag writer
/// before `i` in the block, if known (see [`known_writer`]).
pub(crate) fn select(
    i: &Instruction,
    arch: Arch,
    live_after: u64,
    inlined: bool,
    writer: Option<u8>,
) -> Op {
    let Some(generic) = handler_for(i) else {
        return Op::new(*i, unsupported);
    };
    let mut op = Op::new(*i, generic);
    op.flags_live = flag_use(i).write & live_after != 0;
    op.keep_carry = live_after & CF != 0;
    op.inlined = inlined;
    let run = if inlined {
        inlined_form(i, arch, &mut op)
    } else {
        specialise(i, arch, &mut op, writer)
    };
    if let Some(run) = run {
        op.run = run;
    }
    op
}

/// A direct call or jmp the block continues through: the jmp does nothing, the call pushes.
fn inlined_form(i: &Instruction, arch: Arch, op: &mut Op) -> Option<Handler> {
    let p = arch.ptr_size() as u32;
    match i.mnemonic() {
        Mnemonic::Jmp => Some(nop),
        Mnemonic::Call if i.stack_pointer_increment() == -(p as i32) => {
            op.imm = i.next_ip();
            Some(if p == 4 {
                call_inlined::<4>
            } else {
                call_inlined::<8>
            })
        }
        _ => None,
    }
}

/// One op for the flag-writing `i` and the conditional branch `j` after it, if that form is fused;
/// `live_after` is what is live after `j`.
pub(crate) fn fuse(i: &Instruction, j: &Instruction, arch: Arch, live_after: u64) -> Option<Op> {
    use Mnemonic as M;
    if !j.is_jcc_short_or_near() || handler_for(j).is_none() {
        return None;
    }
    let generic = handler_for(i)?;
    let code = j.condition_code() as u8;
    let mut op = Op::new(*i, generic);
    let run = match i.mnemonic() {
        M::Add => alu_form(i, arch, &mut op, alu_op::ADD, Some(code)),
        M::Sub => alu_form(i, arch, &mut op, alu_op::SUB, Some(code)),
        M::And => alu_form(i, arch, &mut op, alu_op::AND, Some(code)),
        M::Or => alu_form(i, arch, &mut op, alu_op::OR, Some(code)),
        M::Xor => alu_form(i, arch, &mut op, alu_op::XOR, Some(code)),
        M::Cmp => alu_form(i, arch, &mut op, alu_op::CMP, Some(code)),
        M::Test => alu_form(i, arch, &mut op, alu_op::TEST, Some(code)),
        M::Inc | M::Dec if !cond_reads_carry(code) => incdec_form(i, arch, &mut op, Some(code)),
        _ => None,
    }?;
    op.run = run;
    op.cc = code;
    op.target = j.near_branch_target();
    op.insns = 2;
    op.flags_live = flag_use(i).write & live_after != 0;
    op.keep_carry = live_after & CF != 0;
    Some(op)
}

/// The specialised handler for `i` with its operands filled into `op`, if there is one; `writer` as
/// for [`select`].
fn specialise(i: &Instruction, arch: Arch, op: &mut Op, writer: Option<u8>) -> Option<Handler> {
    use Mnemonic as M;
    let p = arch.ptr_size() as u32;
    match i.mnemonic() {
        M::Add => alu_form(i, arch, op, alu_op::ADD, None),
        M::Or => alu_form(i, arch, op, alu_op::OR, None),
        M::Adc => alu_form(i, arch, op, alu_op::ADC, None),
        M::Sbb => alu_form(i, arch, op, alu_op::SBB, None),
        M::And => alu_form(i, arch, op, alu_op::AND, None),
        M::Sub => alu_form(i, arch, op, alu_op::SUB, None),
        M::Xor => alu_form(i, arch, op, alu_op::XOR, None),
        M::Cmp => alu_form(i, arch, op, alu_op::CMP, None),
        M::Test => alu_form(i, arch, op, alu_op::TEST, None),
        M::Inc | M::Dec => incdec_form(i, arch, op, None),
        M::Neg | M::Not => neg_not_form(i, arch, op),
        M::Shl | M::Sal | M::Shr | M::Sar => shift_form(i, arch, op),
        M::Imul | M::Mul if i.op_count() == 1 => mul_wide_form(i, arch, op),
        M::Imul => imul_form(i, arch, op),
        M::Mov => mov_form(i, arch, op),
        M::Movzx | M::Movsx | M::Movsxd => extend_form(i, arch, op),
        M::Lea => lea_form(i, arch, op),
        M::Nop | M::Pause | M::Endbr32 | M::Endbr64 => Some(nop as Handler),
        M::Cmova
        | M::Cmovae
        | M::Cmovb
        | M::Cmovbe
        | M::Cmove
        | M::Cmovg
        | M::Cmovge
        | M::Cmovl
        | M::Cmovle
        | M::Cmovne
        | M::Cmovno
        | M::Cmovnp
        | M::Cmovns
        | M::Cmovo
        | M::Cmovp
        | M::Cmovs => cmov_form(i, arch, op, writer),
        M::Seta
        | M::Setae
        | M::Setb
        | M::Setbe
        | M::Sete
        | M::Setg
        | M::Setge
        | M::Setl
        | M::Setle
        | M::Setne
        | M::Setno
        | M::Setnp
        | M::Setns
        | M::Seto
        | M::Setp
        | M::Sets => setcc_form(i, arch, op, writer),
        _ if i.is_jcc_short_or_near() => {
            op.cc = i.condition_code() as u8;
            op.target = i.near_branch_target();
            Some(match known(writer, op.cc) {
                Some(writer::ADD) => by_cc!(op.cc, jcc_known<{ writer::ADD }>),
                Some(writer::SUB) => by_cc!(op.cc, jcc_known<{ writer::SUB }>),
                Some(_) => by_cc!(op.cc, jcc_known<{ writer::LOGIC }>),
                None => jcc,
            })
        }
        M::Jmp => branch_form(i, arch, op, p, false),
        M::Call => branch_form(i, arch, op, p, true),
        M::Ret => ret_form(i, op, p),
        M::Push => push_form(i, op, p),
        M::Pop => match operand(i, 0)? {
            Opnd::Reg(r, s) if s == p && i.stack_pointer_increment() == p as i32 => {
                op.dst = r;
                Some(if p == 4 { pop_reg::<4> } else { pop_reg::<8> })
            }
            _ => None,
        },
        _ => None,
    }
}

/// Classifies a two-operand instruction (`dst, src`) of one operand size into its form (register,
/// immediate or memory on each side), filling in `op`: (form, size, effective-address kind).
fn two_operand_form(i: &Instruction, arch: Arch, op: &mut Op) -> Option<(u8, u32, u8)> {
    Some(match (operand(i, 0)?, operand(i, 1)?) {
        (Opnd::Reg(d, s), Opnd::Reg(r, s2)) if s == s2 => {
            (op.dst, op.src) = (d, r);
            (form::RR, s, ea::D)
        }
        (Opnd::Reg(d, s), Opnd::Imm(v)) => {
            (op.dst, op.imm) = (d, v & size_mask(s));
            (form::RI, s, ea::D)
        }
        (Opnd::Reg(d, s), Opnd::Mem(ms)) if s == ms => {
            op.dst = d;
            (form::RM, s, memory(i, arch, op)?)
        }
        (Opnd::Mem(s), Opnd::Reg(r, s2)) if s == s2 => {
            op.src = r;
            (form::MR, s, memory(i, arch, op)?)
        }
        (Opnd::Mem(s), Opnd::Imm(v)) if sized(s) => {
            op.imm = v & size_mask(s);
            (form::MI, s, memory(i, arch, op)?)
        }
        _ => return None,
    })
}

/// The ALU group (`kind` from [`alu_op`]), fused with a jcc on condition `branch` if there is one
/// (with the condition fixed at compile time for 4- and 8-byte register forms).
fn alu_form(
    i: &Instruction,
    arch: Arch,
    op: &mut Op,
    kind: u8,
    branch: Option<u8>,
) -> Option<Handler> {
    let (f, size, a) = two_operand_form(i, arch, op)?;
    macro_rules! forms {
        ($k:tt, $b:tt) => {
            match f {
                form::RR => by_size!(size, alu<_, $k, { form::RR }, $b, { ea::D }>),
                form::RI => by_size!(size, alu<_, $k, { form::RI }, $b, { ea::D }>),
                form::RM => by_size_ea!(size, a, alu<_, $k, { form::RM }, $b>),
                form::MR => by_size_ea!(size, a, alu<_, $k, { form::MR }, $b>),
                _ => by_size_ea!(size, a, alu<_, $k, { form::MI }, $b>),
            }
        };
    }
    macro_rules! fused {
        ($k:tt) => {
            match branch {
                None => forms!($k, false),
                Some(code) if fixed_cc(code) && matches!(size, 4 | 8) && f == form::RR => {
                    match size {
                        4 => by_cc!(code, alu_jcc<4, $k, { form::RR }>),
                        _ => by_cc!(code, alu_jcc<8, $k, { form::RR }>),
                    }
                }
                Some(code) if fixed_cc(code) && matches!(size, 4 | 8) && f == form::RI => {
                    match size {
                        4 => by_cc!(code, alu_jcc<4, $k, { form::RI }>),
                        _ => by_cc!(code, alu_jcc<8, $k, { form::RI }>),
                    }
                }
                Some(_) => forms!($k, true),
            }
        };
    }
    Some(match kind {
        alu_op::ADD => fused!({ alu_op::ADD }),
        alu_op::OR => fused!({ alu_op::OR }),
        alu_op::ADC => forms!({ alu_op::ADC }, false),
        alu_op::SBB => forms!({ alu_op::SBB }, false),
        alu_op::AND => fused!({ alu_op::AND }),
        alu_op::SUB => fused!({ alu_op::SUB }),
        alu_op::XOR => fused!({ alu_op::XOR }),
        alu_op::CMP => fused!({ alu_op::CMP }),
        _ => fused!({ alu_op::TEST }),
    })
}

/// A register or sized memory operand 0; returns its size and, for memory, the address kind.
fn rm0(i: &Instruction, arch: Arch, op: &mut Op) -> Option<(u32, Option<u8>)> {
    match operand(i, 0)? {
        Opnd::Reg(r, s) => {
            op.dst = r;
            Some((s, None))
        }
        Opnd::Mem(s) if sized(s) => Some((s, Some(memory(i, arch, op)?))),
        _ => None,
    }
}

/// inc/dec, fused with a jcc on condition `branch` if there is one (with the condition fixed at
/// compile time for 4- and 8-byte registers).
fn incdec_form(i: &Instruction, arch: Arch, op: &mut Op, branch: Option<u8>) -> Option<Handler> {
    let (size, mem) = rm0(i, arch, op)?;
    let dec = i.mnemonic() == Mnemonic::Dec;
    if let (Some(code), None, 4 | 8) = (branch, mem, size) {
        if fixed_cc(code) {
            return Some(match (dec, size) {
                (false, 4) => by_cc!(code, incdec_jcc<4, false>),
                (false, _) => by_cc!(code, incdec_jcc<8, false>),
                (true, 4) => by_cc!(code, incdec_jcc<4, true>),
                (true, _) => by_cc!(code, incdec_jcc<8, true>),
            });
        }
    }
    Some(match (dec, mem, branch.is_some()) {
        (false, None, false) => by_size!(size, incdec<_, false, false, false, { ea::D }>),
        (false, Some(a), false) => by_size_ea!(size, a, incdec<_, false, true, false>),
        (true, None, false) => by_size!(size, incdec<_, true, false, false, { ea::D }>),
        (true, Some(a), false) => by_size_ea!(size, a, incdec<_, true, true, false>),
        (false, None, true) => by_size!(size, incdec<_, false, false, true, { ea::D }>),
        (false, Some(a), true) => by_size_ea!(size, a, incdec<_, false, true, true>),
        (true, None, true) => by_size!(size, incdec<_, true, false, true, { ea::D }>),
        (true, Some(a), true) => by_size_ea!(size, a, incdec<_, true, true, true>),
    })
}

/// neg/not.
fn neg_not_form(i: &Instruction, arch: Arch, op: &mut Op) -> Option<Handler> {
    let (size, mem) = rm0(i, arch, op)?;
    let neg = i.mnemonic() == Mnemonic::Neg;
    Some(match (neg, mem) {
        (true, None) => by_size!(size, neg_not<_, true, false, { ea::D }>),
        (true, Some(a)) => by_size_ea!(size, a, neg_not<_, true, true>),
        (false, None) => by_size!(size, neg_not<_, false, false, { ea::D }>),
        (false, Some(a)) => by_size_ea!(size, a, neg_not<_, false, true>),
    })
}

/// shl/sal/shr/sar by an immediate count that is non-zero after masking.
fn shift_form(i: &Instruction, arch: Arch, op: &mut Op) -> Option<Handler> {
    if i.op_count() != 2 || i.op1_kind() != OpKind::Immediate8 {
        return None;
    }
    let (size, mem) = rm0(i, arch, op)?;
    op.imm = (i.immediate8() & if size == 8 { 0x3f } else { 0x1f }) as u64;
    if op.imm == 0 {
        return None;
    }
    macro_rules! kinds {
        ($k:tt) => {
            match mem {
                None => by_size!(size, shift_imm<_, $k, false, { ea::D }>),
                Some(a) => by_size_ea!(size, a, shift_imm<_, $k, true>),
            }
        };
    }
    Some(match i.mnemonic() {
        Mnemonic::Shr => kinds!({ shift_op::SHR }),
        Mnemonic::Sar => kinds!({ shift_op::SAR }),
        _ => kinds!({ shift_op::SHL }),
    })
}

/// One-operand mul/imul with a 4- or 8-byte register or memory operand.
fn mul_wide_form(i: &Instruction, arch: Arch, op: &mut Op) -> Option<Handler> {
    let (size, mem) = match operand(i, 0)? {
        Opnd::Reg(r, s) => {
            op.src = r;
            (s, None)
        }
        Opnd::Mem(s) => (s, Some(memory(i, arch, op)?)),
        Opnd::Imm(_) => return None,
    };
    if size < 4 {
        return None;
    }
    let signed = i.mnemonic() == Mnemonic::Imul;
    Some(match (signed, mem) {
        (false, None) => by_size48!(size, mul_wide<_, false, false, { ea::D }>),
        (false, Some(a)) => by_size48_ea!(size, a, mul_wide<_, false, true>),
        (true, None) => by_size48!(size, mul_wide<_, true, false, { ea::D }>),
        (true, Some(a)) => by_size48_ea!(size, a, mul_wide<_, true, true>),
    })
}

/// Two- and three-operand imul with 4- or 8-byte operands.
fn imul_form(i: &Instruction, arch: Arch, op: &mut Op) -> Option<Handler> {
    let Opnd::Reg(d, size) = operand(i, 0)? else {
        return None;
    };
    if size < 4 {
        return None;
    }
    op.dst = d;
    let (f, a) = match (i.op_count(), operand(i, 1)?) {
        (2, Opnd::Reg(s, s2)) if s2 == size => {
            op.src = s;
            (form::RR, ea::D)
        }
        (2, Opnd::Mem(s)) if s == size => (form::RM, memory(i, arch, op)?),
        (3, src) => {
            let Opnd::Imm(v) = operand(i, 2)? else {
                return None;
            };
            op.imm = v & size_mask(size);
            match src {
                Opnd::Reg(s, s2) if s2 == size => {
                    op.src = s;
                    (form::RI, ea::D)
                }
                Opnd::Mem(s) if s == size => (form::MI, memory(i, arch, op)?),
                _ => return None,
            }
        }
        _ => return None,
    };
    Some(match f {
        form::RR => by_size48!(size, imul<_, { form::RR }, { ea::D }>),
        form::RM => by_size48_ea!(size, a, imul<_, { form::RM }>),
        form::RI => by_size48!(size, imul<_, { form::RI }, { ea::D }>),
        _ => by_size48_ea!(size, a, imul<_, { form::MI }>),
    })
}

/// mov between general purpose registers, memory and immediates.
fn mov_form(i: &Instruction, arch: Arch, op: &mut Op) -> Option<Handler> {
    let (f, size, a) = two_operand_form(i, arch, op)?;
    Some(match f {
        form::RR => by_size!(size, mov<_, { form::RR }, { ea::D }>),
        form::RI => by_size!(size, mov<_, { form::RI }, { ea::D }>),
        form::RM => by_size_ea!(size, a, mov<_, { form::RM }>),
        form::MR => by_size_ea!(size, a, mov<_, { form::MR }>),
        _ => by_size_ea!(size, a, mov<_, { form::MI }>),
    })
}

/// movzx/movsx/movsxd into a 4- or 8-byte register.
fn extend_form(i: &Instruction, arch: Arch, op: &mut Op) -> Option<Handler> {
    let Opnd::Reg(d, dst) = operand(i, 0)? else {
        return None;
    };
    op.dst = d;
    let (src, mem) = match operand(i, 1)? {
        Opnd::Reg(r, s) => {
            op.src = r;
            (s, None)
        }
        Opnd::Mem(s) => (s, Some(memory(i, arch, op)?)),
        Opnd::Imm(_) => return None,
    };
    let signed = i.mnemonic() != Mnemonic::Movzx;
    macro_rules! pick {
        ($s:literal, $d:literal) => {
            match (signed, mem) {
                (false, None) => extend::<$s, $d, false, false, { ea::D }> as Handler,
                (false, Some(a)) => by_ea!(a, extend<$s, $d, false, true>),
                (true, None) => extend::<$s, $d, true, false, { ea::D }> as Handler,
                (true, Some(a)) => by_ea!(a, extend<$s, $d, true, true>),
            }
        };
    }
    Some(match (src, dst) {
        (1, 4) => pick!(1, 4),
        (1, 8) => pick!(1, 8),
        (2, 4) => pick!(2, 4),
        (2, 8) => pick!(2, 8),
        (4, 8) if signed => pick!(4, 8),
        _ => return None,
    })
}

/// lea into a 4- or 8-byte register.
fn lea_form(i: &Instruction, arch: Arch, op: &mut Op) -> Option<Handler> {
    let Opnd::Reg(d, size) = operand(i, 0)? else {
        return None;
    };
    let a = memory(i, arch, op)?;
    op.dst = d;
    match size {
        4 => Some(by_ea!(a, lea<4>)),
        8 => Some(by_ea!(a, lea<8>)),
        _ => None,
    }
}

/// cmovcc with 4- or 8-byte operands.
fn cmov_form(i: &Instruction, arch: Arch, op: &mut Op, writer: Option<u8>) -> Option<Handler> {
    let Opnd::Reg(d, size) = operand(i, 0)? else {
        return None;
    };
    op.dst = d;
    op.cc = i.condition_code() as u8;
    let mem = match operand(i, 1)? {
        Opnd::Reg(r, s) if s == size => {
            op.src = r;
            None
        }
        Opnd::Mem(s) if s == size => Some(memory(i, arch, op)?),
        _ => return None,
    };
    macro_rules! known {
        ($s:literal) => {
            match known(writer, op.cc) {
                Some(writer::ADD) => by_cc!(op.cc, cmov_known<$s, { writer::ADD }>),
                Some(writer::SUB) => by_cc!(op.cc, cmov_known<$s, { writer::SUB }>),
                Some(_) => by_cc!(op.cc, cmov_known<$s, { writer::LOGIC }>),
                None => cmov::<$s, false, { ea::D }>,
            }
        };
    }
    Some(match (size, mem) {
        (4, None) => known!(4),
        (8, None) => known!(8),
        (4, Some(a)) => by_ea!(a, cmov<4, true>),
        (8, Some(a)) => by_ea!(a, cmov<8, true>),
        _ => return None,
    })
}

/// setcc into a byte register or memory; `writer` as for [`select`].
fn setcc_form(i: &Instruction, arch: Arch, op: &mut Op, writer: Option<u8>) -> Option<Handler> {
    op.cc = i.condition_code() as u8;
    match rm0(i, arch, op)? {
        (1, None) => Some(match known(writer, op.cc) {
            Some(writer::ADD) => by_cc!(op.cc, setcc_known<{ writer::ADD }>),
            Some(writer::SUB) => by_cc!(op.cc, setcc_known<{ writer::SUB }>),
            Some(_) => by_cc!(op.cc, setcc_known<{ writer::LOGIC }>),
            None => setcc::<false, { ea::D }>,
        }),
        (1, Some(a)) => Some(by_ea!(a, setcc<true>)),
        _ => None,
    }
}

/// jmp or call (`is_call`): direct, or through a pointer-sized register or memory operand.
fn branch_form(i: &Instruction, arch: Arch, op: &mut Op, p: u32, is_call: bool) -> Option<Handler> {
    if is_call {
        if i.stack_pointer_increment() != -(p as i32) {
            return None;
        }
        op.imm = i.next_ip();
    }
    let mem = match i.op0_kind() {
        OpKind::NearBranch32 | OpKind::NearBranch64 => {
            op.target = i.near_branch_target();
            return Some(match (is_call, p) {
                (false, _) => jmp as Handler,
                (true, 4) => call::<4>,
                (true, _) => call::<8>,
            });
        }
        OpKind::Register => match gpr(i.op0_register())? {
            (r, s) if s == p => {
                op.src = r;
                None
            }
            _ => return None,
        },
        OpKind::Memory if i.memory_size().size() as u32 == p => Some(memory(i, arch, op)?),
        _ => return None,
    };
    Some(match (is_call, p, mem) {
        (false, 4, None) => jmp_indirect::<4, false, { ea::D }>,
        (false, 4, Some(a)) => by_ea!(a, jmp_indirect<4, true>),
        (false, _, None) => jmp_indirect::<8, false, { ea::D }>,
        (false, _, Some(a)) => by_ea!(a, jmp_indirect<8, true>),
        (true, 4, None) => call_indirect::<4, false, { ea::D }>,
        (true, 4, Some(a)) => by_ea!(a, call_indirect<4, true>),
        (true, _, None) => call_indirect::<8, false, { ea::D }>,
        (true, _, Some(a)) => by_ea!(a, call_indirect<8, true>),
    })
}

/// ret / ret imm16 with the pointer-sized return address.
fn ret_form(i: &Instruction, op: &mut Op, p: u32) -> Option<Handler> {
    match i.code() {
        Code::Retnd | Code::Retnq => op.imm = 0,
        Code::Retnd_imm16 | Code::Retnq_imm16 => op.imm = i.immediate16() as u64,
        _ => return None,
    }
    match (i.code(), p) {
        (Code::Retnd | Code::Retnd_imm16, 4) => Some(ret::<4>),
        (Code::Retnq | Code::Retnq_imm16, 8) => Some(ret::<8>),
        _ => None,
    }
}

/// push of a pointer-sized register or immediate.
fn push_form(i: &Instruction, op: &mut Op, p: u32) -> Option<Handler> {
    if i.stack_pointer_increment() != -(p as i32) {
        return None;
    }
    match (operand(i, 0)?, p) {
        (Opnd::Reg(r, 4), 4) => {
            op.src = r;
            Some(push_reg::<4>)
        }
        (Opnd::Reg(r, 8), 8) => {
            op.src = r;
            Some(push_reg::<8>)
        }
        (Opnd::Imm(v), _) => {
            op.imm = v & size_mask(p);
            Some(if p == 4 { push_imm::<4> } else { push_imm::<8> })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    //! Every specialised, fused, chained or known-writer op must behave like the generic handlers.
    //! Random programs run twice: normally, and single-stepped (`run_limited(1)` runs each block's
    //! ops with their generic handlers); registers, flags and memory must agree.

    use iced_x86::code_asm::*;

    use crate::{Arch, CallConv, Exit, Machine, Prot};

    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }

        fn value(&mut self) -> u64 {
            const EDGES: [u64; 8] = [0, 1, 0x7f, 0x80, 0xffff, 0x7fff_ffff, 0x8000_0000, u64::MAX];
            match self.below(3) {
                0 => EDGES[self.below(8) as usize],
                _ => self.next(),
            }
        }
    }

    /// Emits one random instruction (or a short group: a jcc over an instruction, push/pop).
    /// `rbx`/`ebx` points into a read/write buffer and is never written.
    fn emit(a: &mut CodeAssembler, r: &mut Rng, x64: bool) -> Result<(), IcedError> {
        let r32 = [eax, ecx, edx, esi, edi];
        let b8 = [al, cl, dl];
        let r16 = [ax, cx, dx, si, di];
        let g = |r: &mut Rng| r32[r.below(5) as usize];
        let mem = |r: &mut Rng| {
            let off = (r.below(16) as i32 - 8) * 4 + (r.below(4) == 0) as i32;
            if x64 {
                dword_ptr(rbx + off)
            } else {
                dword_ptr(ebx + off)
            }
        };
        let imm = |r: &mut Rng| r.value() as u32 as i32;
        match r.below(22) {
            0 => a.mov(g(r), imm(r) as u32),
            1 | 2 => {
                let (d, s) = (g(r), g(r));
                match r.below(9) {
                    0 => a.add(d, s),
                    1 => a.sub(d, s),
                    2 => a.and(d, s),
                    3 => a.or(d, s),
                    4 => a.xor(d, s),
                    5 => a.cmp(d, s),
                    6 => a.test(d, s),
                    7 => a.adc(d, s),
                    _ => a.sbb(d, s),
                }
            }
            3 => {
                let (d, v) = (g(r), imm(r));
                match r.below(8) {
                    0 => a.add(d, v),
                    1 => a.sub(d, v),
                    2 => a.and(d, v),
                    3 => a.or(d, v),
                    4 => a.xor(d, v),
                    5 => a.cmp(d, v),
                    6 => a.adc(d, v),
                    _ => a.test(d, v),
                }
            }
            4 => {
                let (d, s) = (b8[r.below(3) as usize], b8[r.below(3) as usize]);
                match r.below(3) {
                    0 => a.add(d, s),
                    1 => a.cmp(d, s),
                    _ => a.test(d, s),
                }
            }
            5 => a.add(r16[r.below(5) as usize], imm(r) & 0xffff),
            6 => match r.below(4) {
                0 => a.inc(g(r)),
                1 => a.dec(g(r)),
                2 => a.neg(g(r)),
                _ => a.not(g(r)),
            },
            7 => {
                let c = r.below(33) as u32;
                match r.below(3) {
                    0 => a.shl(g(r), c),
                    1 => a.shr(g(r), c),
                    _ => a.sar(g(r), c),
                }
            }
            8 => match r.below(4) {
                0 => a.imul_2(g(r), g(r)),
                1 => a.imul_3(g(r), g(r), imm(r)),
                2 => a.mul(g(r)),
                _ => a.imul(g(r)),
            },
            9 => match r.below(3) {
                0 => a.movzx(g(r), b8[r.below(3) as usize]),
                1 => a.movsx(g(r), r16[r.below(5) as usize]),
                _ => a.mov(g(r), g(r)),
            },
            10 if x64 => a.lea(g(r), qword_ptr(rsi + rdi * 4 + 0x10)),
            10 => a.lea(g(r), dword_ptr(esi + edi * 4 + 0x10)),
            11 => {
                let d = b8[r.below(3) as usize];
                match r.below(4) {
                    0 => a.sete(d),
                    1 => a.setl(d),
                    2 => a.setb(d),
                    _ => a.setg(d),
                }
            }
            12 => {
                let (d, s) = (g(r), g(r));
                match r.below(5) {
                    0 => a.cmove(d, s),
                    1 => a.cmovne(d, s),
                    2 => a.cmovl(d, s),
                    3 => a.cmova(d, s),
                    _ => a.cmovs(d, s),
                }
            }
            13..=15 => {
                let mut over = a.create_label();
                match r.below(8) {
                    0 => a.je(over)?,
                    1 => a.jne(over)?,
                    2 => a.jl(over)?,
                    3 => a.jge(over)?,
                    4 => a.jb(over)?,
                    5 => a.ja(over)?,
                    6 => a.js(over)?,
                    _ => a.jo(over)?,
                }
                a.add(g(r), 1)?;
                a.set_label(&mut over)?;
                a.nop()
            }
            16 => a.mov(mem(r), g(r)),
            17 => a.mov(g(r), mem(r)),
            18 => match r.below(3) {
                0 => a.add(mem(r), imm(r)),
                1 => a.cmp(mem(r), g(r)),
                _ => a.inc(mem(r)),
            },
            19 if x64 => {
                let (d, s) = (
                    [rax, rcx, rdx, r8, r9][r.below(5) as usize],
                    [rsi, rdi, r10][r.below(3) as usize],
                );
                match r.below(4) {
                    0 => a.add(d, s),
                    1 => a.sub(d, s),
                    2 => a.cmp(d, s),
                    _ => a.cmovb(d, s),
                }
            }
            20 if x64 => {
                a.push(rsi)?;
                a.pop([rax, rcx, rdx][r.below(3) as usize])
            }
            20 => {
                a.push(esi)?;
                a.pop(g(r))
            }
            _ => a.movsx(g(r), byte_ptr(if x64 { rbx + 3 } else { ebx + 3 })),
        }
    }

    /// Loads code and data into a fresh machine with register values from `seed`.
    fn setup(arch: Arch, code: &[u8], at: u64, data: &[u8], seed: u64) -> Machine {
        let mut m = Machine::new(arch);
        m.setup_stack(0x10000).unwrap();
        let c = m
            .mem
            .alloc_at_or_near(at, 0x4000, Prot::READ | Prot::EXEC)
            .unwrap();
        assert_eq!(c, at);
        m.mem.write_bytes(c, code).unwrap();
        let d = m.mem.alloc(0x1000, Prot::READ | Prot::WRITE).unwrap();
        m.mem.write_bytes(d, data).unwrap();
        m.prepare_guest_call(c, CallConv::Cdecl, &[]).unwrap();
        let mut r = Rng(seed);
        for (k, reg) in m.cpu.regs.iter_mut().enumerate() {
            if k != 4 {
                *reg = if arch == Arch::X86 {
                    r.value() & 0xffff_ffff
                } else {
                    r.value()
                };
            }
        }
        m.cpu.regs[3] = d + 0x100;
        m.cpu.set_flags(r.next() & 0x8d5);
        m
    }

    fn state(m: &Machine) -> ([u64; 16], u64, Vec<u8>) {
        let d = m.cpu.regs[3] - 0x100;
        (m.cpu.regs, m.cpu.flags(), m.mem.read_vec(d, 0x200).unwrap())
    }

    #[test]
    fn specialised_ops_match_generic_handlers() {
        for arch in [Arch::X86, Arch::X64] {
            let mut r = Rng(0x5eed_1234 + arch.bitness() as u64);
            let base = Machine::new(arch).mem.base() + 0x40_0000;
            for case in 0..300 {
                let x64 = arch == Arch::X64;
                let mut a = CodeAssembler::new(arch.bitness()).unwrap();
                let mut func = a.create_label();
                for _ in 0..2 + r.below(16) {
                    match r.below(8) {
                        // A counted loop (ebp is not touched by `emit`).
                        0 => {
                            let mut top = a.create_label();
                            a.mov(ebp, 1 + r.below(5) as u32).unwrap();
                            a.set_label(&mut top).unwrap();
                            for _ in 0..1 + r.below(4) {
                                emit(&mut a, &mut r, x64).unwrap();
                            }
                            a.dec(ebp).unwrap();
                            a.jnz(top).unwrap();
                        }
                        1 => a.call(func).unwrap(),
                        _ => emit(&mut a, &mut r, x64).unwrap(),
                    }
                }
                a.ret().unwrap();
                a.set_label(&mut func).unwrap();
                for _ in 0..1 + r.below(4) {
                    emit(&mut a, &mut r, x64).unwrap();
                }
                a.ret().unwrap();
                let code = a.assemble(base).unwrap();
                let data: Vec<u8> = (0..0x200).map(|_| r.next() as u8).collect();
                let seed = r.next();

                let mut fast = setup(arch, &code, base, &data, seed);
                assert!(matches!(fast.run_limited(100_000), Some(Exit::HostReturn)));
                let mut stepped = setup(arch, &code, base, &data, seed);
                let exit = loop {
                    if let Some(exit) = stepped.run_limited(1) {
                        break exit;
                    }
                };
                assert!(matches!(exit, Exit::HostReturn));
                // Random budgets stop runs inside blocks and chains.
                let mut chunked = setup(arch, &code, base, &data, seed);
                let exit = loop {
                    if let Some(exit) = chunked.run_limited(1 + r.below(7)) {
                        break exit;
                    }
                };
                assert!(matches!(exit, Exit::HostReturn));
                let want = state(&stepped);
                for (m, how) in [(&fast, "run"), (&chunked, "chunked")] {
                    let n = m.stats.instructions;
                    assert_eq!(n, stepped.stats.instructions, "{arch:?} case {case} {how}");
                    let (regs, flags, mem) = state(m);
                    assert_eq!(
                        regs, want.0,
                        "{arch:?} case {case} {how}: registers\n{code:02x?}"
                    );
                    assert_eq!(
                        flags, want.1,
                        "{arch:?} case {case} {how}: flags\n{code:02x?}"
                    );
                    assert_eq!(
                        mem, want.2,
                        "{arch:?} case {case} {how}: memory\n{code:02x?}"
                    );
                }
            }
        }
    }
}
