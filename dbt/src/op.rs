//! Pre-decoded operations, the unit the interpreter executes.
//!
//! Translation turns each guest instruction (or a flag-writing instruction plus the conditional
//! branch after it) into an [`Op`]: a handler plus the operands resolved at decode time (register
//! indices, the parts of the memory operand, the immediate, the branch target). Hot instruction forms
//! get handlers specialised by operation, operand size and operand kinds (`fast_*` modules, chosen in
//! [`crate::select`]); every other instruction runs its generic handler on the iced-x86
//! [`Instruction`] kept in the op.
//!
//! Dispatch is threaded: a handler ends by calling the handler of the next op ([`next`], a tail
//! call), and every block ends with an end op, whose handler goes on with the next block
//! ([`crate::chain`]) or returns to the run loop. Specialised handlers never fail:
//! whenever their fast path does not apply they hand the op to [`run_generic`] before changing any
//! state. That is the only place a block stops early: on a fault (`Err`), or after a store to
//! translated code (`Ok`, with [`GuestMemory::code_written`](crate::GuestMemory) set); either way it
//! records the op's position in [`Machine::stop_pos`].

use std::marker::PhantomData;
use std::ptr::NonNull;

use iced_x86::Instruction;

use crate::chain::{no_links, Links};
use crate::cpu::Reg;
use crate::fault::ExecResult;
use crate::flags::size_mask;
use crate::machine::Machine;

/// Executes an op and, through [`next`], the rest of its block.
pub(crate) type Handler = for<'a> fn(&mut Machine, Cursor<'a>) -> ExecResult;

/// Executes one decoded instruction (the generic handlers of the `exec_*` modules).
pub(crate) type InstrHandler = fn(&mut Machine, &Instruction) -> ExecResult;

/// A pre-decoded operation.
pub(crate) struct Op {
    /// The handler.
    pub(crate) run: Handler,
    /// Immediate operand, masked to the operand size; for `call` the return address; for shifts the
    /// count.
    pub(crate) imm: u64,
    /// Branch target of direct jumps, calls and fused conditional branches.
    pub(crate) target: u64,
    /// Memory operand: displacement (the absolute address for RIP-relative operands; for constant
    /// addresses, see [`ea::D`], already masked with `amask`).
    pub(crate) disp: u64,
    /// Memory operand: address-size mask applied to the effective address.
    pub(crate) amask: u64,
    /// Memory operand of kind [`ea::BI`]: all ones if there is a base register, else zero.
    pub(crate) bmask: u64,
    /// Memory operand: base register (for [`ea::BI`], meaningful only with `bmask`).
    pub(crate) base: Reg,
    /// Memory operand of kind [`ea::BI`]: index register.
    pub(crate) index: Reg,
    /// Memory operand: log2 of the index scale.
    pub(crate) shift: u8,
    /// Destination (or only) register.
    pub(crate) dst: Reg,
    /// Source register.
    pub(crate) src: Reg,
    /// Condition code (see [`crate::flags::cc`]) of jcc, cmovcc, setcc and fused branches.
    pub(crate) cc: u8,
    /// Whether the status flags this op writes can be read later (else they are not recorded).
    pub(crate) flags_live: bool,
    /// inc/dec: whether CF (which they preserve) can be read later.
    pub(crate) keep_carry: bool,
    /// Guest instructions this op stands for (2 for a fused compare and branch, 0 for the end op).
    pub(crate) insns: u8,
    /// Position of the op in its block (blocks have at most 64 instructions).
    pub(crate) pos: u8,
    /// A direct call or jmp in the middle of a block, which continues at its target: it does not
    /// change rip.
    pub(crate) inlined: bool,
    /// Generic handler of `instr` (for a fused op: of its first instruction).
    pub(crate) generic: InstrHandler,
    /// The end op's chain links (see [`crate::chain`]); `None` for other ops.
    pub(crate) links: Option<Box<Links>>,
    /// The decoded instruction (for a fused op: the first one).
    pub(crate) instr: Instruction,
}

impl Op {
    /// An op running `generic` on `instr`.
    pub(crate) fn new(instr: Instruction, generic: InstrHandler) -> Op {
        Op {
            run: run_generic,
            imm: 0,
            target: 0,
            disp: 0,
            amask: u64::MAX,
            bmask: 0,
            base: Reg::Rax,
            index: Reg::Rax,
            shift: 0,
            dst: Reg::Rax,
            src: Reg::Rax,
            cc: 0,
            flags_live: true,
            keep_carry: true,
            insns: 1,
            pos: 0,
            inlined: false,
            generic,
            links: None,
            instr,
        }
    }

    /// The op that ends every block (its handler is [`crate::chain::end`]), for a block starting at
    /// `start` (in `target`), falling through to `end` (in `disp`), with `insns` instructions (in
    /// `imm`).
    fn end(start: u64, end: u64, insns: u64) -> Op {
        Op {
            run: crate::chain::end,
            insns: 0,
            target: start,
            disp: end,
            imm: insns,
            links: Some(no_links()),
            ..Op::new(Instruction::default(), crate::exec_data::nop)
        }
    }
}

/// The ops of a block: the given ops followed by the end op, with their positions set.
pub(crate) struct OpList(Vec<Op>);

impl OpList {
    /// Appends the end op of a block starting at `start` and falling through to `end` to `ops`, and
    /// numbers them.
    pub(crate) fn new(mut ops: Vec<Op>, start: u64, end: u64) -> OpList {
        let insns = ops.iter().map(|o| o.insns as u64).sum();
        ops.push(Op::end(start, end, insns));
        debug_assert!(ops.len() <= u8::MAX as usize);
        for (pos, op) in ops.iter_mut().enumerate() {
            op.pos = pos as u8;
        }
        OpList(ops)
    }

    /// A cursor at the first op.
    #[inline(always)]
    pub(crate) fn cursor(&self) -> Cursor<'_> {
        Cursor {
            op: self.first(),
            ops: PhantomData,
        }
    }

    /// Pointer to the first op, for [`Cursor::from_raw`].
    pub(crate) fn first(&self) -> NonNull<Op> {
        NonNull::from(&self.0[..]).cast()
    }
}

impl std::ops::Deref for OpList {
    type Target = [Op];

    fn deref(&self) -> &[Op] {
        &self.0
    }
}

/// Points at an op of an [`OpList`]; dereferences to the op.
#[derive(Clone, Copy)]
pub(crate) struct Cursor<'a> {
    op: NonNull<Op>,
    ops: PhantomData<&'a OpList>,
}

impl<'a> Cursor<'a> {
    /// A cursor at `first`, from [`OpList::first`].
    ///
    /// # Safety
    /// The op list must still exist, unchanged, for `'a`.
    #[inline(always)]
    pub(crate) unsafe fn from_raw(first: NonNull<Op>) -> Cursor<'a> {
        Cursor {
            op: first,
            ops: PhantomData,
        }
    }

    /// The first op of the list.
    #[inline(always)]
    pub(crate) fn rewind(self) -> Cursor<'a> {
        // SAFETY: `pos` is the op's index in its list, so this is the list's first element.
        Cursor {
            op: unsafe { self.op.sub(self.pos as usize) },
            ops: PhantomData,
        }
    }

    /// The next op of the list; must not be called on the end op.
    #[inline(always)]
    fn step(self) -> Cursor<'a> {
        // SAFETY: an `OpList` always ends with the end op, whose handler is the only one that does
        // not step, so the next element exists. The pointer derives from the whole list, which `'a`
        // keeps borrowed and unchanged.
        Cursor {
            op: unsafe { self.op.add(1) },
            ops: PhantomData,
        }
    }
}

impl std::ops::Deref for Cursor<'_> {
    type Target = Op;

    #[inline(always)]
    fn deref(&self) -> &Op {
        // SAFETY: the pointer is in bounds of the slice borrowed for the cursor's lifetime.
        unsafe { self.op.as_ref() }
    }
}

/// Runs the rest of the block after `op` (call in tail position).
#[inline(always)]
pub(crate) fn next(m: &mut Machine, op: Cursor<'_>) -> ExecResult {
    let n = op.step();
    (n.run)(m, n)
}

/// Executes `op` with the generic handler of its instruction (and, for a fused op, the branch).
pub(crate) fn exec_generic(m: &mut Machine, op: &Op) -> ExecResult {
    let rip = m.cpu.rip;
    (op.generic)(m, &op.instr)?;
    if op.inlined {
        m.cpu.rip = rip;
    }
    if op.insns == 2 && m.cpu.flags.cond(op.cc) {
        m.cpu.rip = op.target;
    }
    Ok(())
}

/// Handler of ops without a specialised form: [`exec_generic`], then the rest of the block unless
/// the op faulted or wrote translated code. Specialised handlers also end up here when their fast
/// path does not apply (a page-crossing, faulting or code-overwriting access); they call it before
/// changing any state, so the op runs exactly once. Never inlined, so that the fast paths stay
/// free of stack frames and reach it by a tail call.
#[inline(never)]
pub(crate) fn run_generic(m: &mut Machine, op: Cursor<'_>) -> ExecResult {
    if let Err(e) = exec_generic(m, &op) {
        m.stop_pos = op.pos;
        return Err(e);
    }
    if m.mem.code_written {
        m.stop_pos = op.pos;
        return Ok(());
    }
    next(m, op)
}

/// `$m.mem.load_fast($addr, $size)`, or returns [`run_generic`] if the fast path does not apply.
macro_rules! load_or_generic {
    ($m:expr, $op:expr, $addr:expr, $size:expr) => {
        match $m.mem.load_fast($addr, $size) {
            Some(v) => v,
            None => return $crate::op::run_generic($m, $op),
        }
    };
}
pub(crate) use load_or_generic;

/// `$m.mem.store_fast($addr, $size, $v)`, or returns [`run_generic`] if the fast path does not
/// apply (nothing was written then).
macro_rules! store_or_generic {
    ($m:expr, $op:expr, $addr:expr, $size:expr, $v:expr) => {
        if !$m.mem.store_fast($addr, $size, $v) {
            return $crate::op::run_generic($m, $op);
        }
    };
}
pub(crate) use store_or_generic;

/// Operand forms of specialised handlers (destination first): register, immediate, memory. The
/// forms from `RM` on have a memory operand.
pub(crate) mod form {
    /// Register, register.
    pub(crate) const RR: u8 = 0;
    /// Register, immediate.
    pub(crate) const RI: u8 = 1;
    /// Register, memory.
    pub(crate) const RM: u8 = 2;
    /// Memory, register.
    pub(crate) const MR: u8 = 3;
    /// Memory, immediate.
    pub(crate) const MI: u8 = 4;
}

/// Kinds of memory operand address: the `A` parameter of handlers with a memory operand.
pub(crate) mod ea {
    /// A constant address (absolute or RIP-relative), already in `disp`.
    pub(crate) const D: u8 = 0;
    /// A base register plus `disp`.
    pub(crate) const B: u8 = 1;
    /// An optional base register (`bmask`), a scaled index register and `disp`.
    pub(crate) const BI: u8 = 2;
}

impl Machine {
    /// Reads register `r` (all 64 bits).
    #[inline(always)]
    pub(crate) fn reg(&self, r: Reg) -> u64 {
        self.cpu.regs[r as usize]
    }

    /// Writes the low `S` bytes of register `r` with x86 semantics: 1- and 2-byte writes merge,
    /// 4-byte writes zero-extend.
    #[inline(always)]
    pub(crate) fn set_reg<const S: u32>(&mut self, r: Reg, v: u64) {
        let slot = &mut self.cpu.regs[r as usize];
        *slot = match S {
            1 | 2 => (*slot & !size_mask(S)) | (v & size_mask(S)),
            4 => v & 0xffff_ffff,
            _ => v,
        };
    }

    /// Effective address of the op's memory operand, whose kind is `A` (see [`ea`]).
    #[inline(always)]
    pub(crate) fn addr<const A: u8>(&self, op: &Op) -> u64 {
        match A {
            ea::D => op.disp,
            ea::B => self.reg(op.base).wrapping_add(op.disp) & op.amask,
            _ => {
                (self.reg(op.base) & op.bmask)
                    .wrapping_add(self.reg(op.index) << op.shift)
                    .wrapping_add(op.disp)
                    & op.amask
            }
        }
    }
}
