//! Status-flag liveness, computed when a block is translated.
//!
//! A flag-writing op needs to record its operands for the lazy flags only if one of the flags it
//! writes can be read before every path overwrites it. The analysis runs backwards over the block;
//! what is live at the block's end comes from a short look-ahead into its direct successors (the
//! fall-through and branch target): flags that a successor reads before writing them, plus every flag
//! still unwritten when the look-ahead stops at a control transfer or gives up.
//!
//! Flags are only ever treated as overwritten by instructions that always write them (a shift by
//! `cl` may leave them alone, `rep cmps` with a zero count too). Instructions that stop the guest
//! (int3, ud2, hlt, int n, unsupported ones) and div/idiv (divide errors) read them all, so the
//! fault reports of those show exact flags. What a dead flag holds after an elided record is
//! unspecified; only a page fault (or a budget exit) between the elided writer and the instruction
//! that overwrites the flag can observe it, in the [`crate::GuestFault`] or `Cpu::flags` it reports.

use iced_x86::{Decoder, DecoderOptions, FlowControl, Instruction, Mnemonic, OpKind, RflagsBits};

use crate::cpu::Arch;
use crate::dispatch::handler_for;
use crate::flags::{AF, CF, OF, PF, SF, STATUS, ZF};
use crate::memory::GuestMemory;

/// Most instructions the look-ahead into a successor decodes.
const LOOKAHEAD_INSTRS: usize = 16;
/// Most bytes the look-ahead into a successor reads.
const LOOKAHEAD_BYTES: usize = 16 * 15;

/// How an instruction uses the status flags (EFLAGS bit positions).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct FlagUse {
    /// Flags it may read.
    pub(crate) read: u64,
    /// Flags it may change.
    pub(crate) write: u64,
    /// Flags it always overwrites (the old values can no longer be read).
    pub(crate) kill: u64,
}

/// Converts iced's `RflagsBits` to EFLAGS positions (status flags only).
fn eflags(bits: u32) -> u64 {
    let map = [
        (RflagsBits::OF, OF),
        (RflagsBits::SF, SF),
        (RflagsBits::ZF, ZF),
        (RflagsBits::AF, AF),
        (RflagsBits::CF, CF),
        (RflagsBits::PF, PF),
    ];
    map.iter()
        .filter(|(iced, _)| bits & iced != 0)
        .fold(0, |acc, (_, ef)| acc | ef)
}

/// Whether a shift or rotate leaves the flags alone for some executions (count in `cl`, a zero
/// immediate count, or a rotate through carry whose count can reduce to zero).
fn variable_count(i: &Instruction) -> bool {
    use Mnemonic as M;
    let count_op = match i.mnemonic() {
        M::Shl | M::Sal | M::Shr | M::Sar | M::Rol | M::Ror => 1,
        M::Shld | M::Shrd => 2,
        M::Rcl | M::Rcr => return true,
        _ => return false,
    };
    if i.op_count() <= count_op || i.op_kind(count_op) != OpKind::Immediate8 {
        // The implicit count-of-one forms (d0/d1) have no count operand.
        return i.op_count() > count_op;
    }
    let size = match i.op0_kind() {
        OpKind::Register => i.op0_register().size(),
        _ => i.memory_size().size(),
    };
    let mask = if size == 8 { 0x3f } else { 0x1f };
    i.immediate8() & mask == 0
}

/// Flag use of one instruction.
pub(crate) fn flag_use(i: &Instruction) -> FlagUse {
    use Mnemonic as M;
    let stops = matches!(
        i.mnemonic(),
        M::Int3 | M::Int | M::Int1 | M::Into | M::Ud0 | M::Ud1 | M::Ud2 | M::Hlt | M::Div | M::Idiv
    ) || handler_for(i).is_none();
    if stops {
        return FlagUse {
            read: STATUS,
            write: 0,
            kill: 0,
        };
    }
    let write = eflags(i.rflags_modified());
    let conditional = variable_count(i) || i.has_rep_prefix() || i.has_repne_prefix();
    FlagUse {
        read: eflags(i.rflags_read()),
        write,
        kill: if conditional { 0 } else { write },
    }
}

/// Flags live after each instruction of `instrs`, given those live after the last one.
pub(crate) fn live_after(instrs: &[Instruction], live_out: u64) -> Vec<u64> {
    let mut out = vec![0; instrs.len()];
    let mut live = live_out;
    for (k, i) in instrs.iter().enumerate().rev() {
        out[k] = live;
        let u = flag_use(i);
        live = (live & !u.kill) | u.read;
    }
    out
}

/// Flags live on entry to the code at `addr`, found by decoding ahead (through direct calls and
/// jumps) until every flag has been overwritten or another control transfer; pushes the byte ranges
/// it read onto `deps`.
pub(crate) fn live_in(mem: &GuestMemory, arch: Arch, addr: u64, deps: &mut Vec<(u64, u64)>) -> u64 {
    let (mut live, mut killed) = (0, 0);
    let mut budget = LOOKAHEAD_INSTRS;
    let mut pc = Some(addr);
    while let Some(start) = pc.take() {
        let bytes = mem.readable_slice(start, LOOKAHEAD_BYTES);
        let mut decoder = Decoder::with_ip(arch.bitness(), bytes, start, DecoderOptions::NONE);
        let mut end = start;
        while budget > 0 && decoder.can_decode() {
            budget -= 1;
            let i = decoder.decode();
            if i.is_invalid() {
                break;
            }
            end = i.next_ip();
            let u = flag_use(&i);
            live |= u.read & !killed;
            killed |= u.kill;
            if killed == STATUS {
                break;
            }
            if i.flow_control() != FlowControl::Next {
                if i.is_call_near() || i.is_jmp_short_or_near() {
                    pc = Some(i.near_branch_target());
                }
                break;
            }
        }
        if end > start {
            deps.push((start, end));
        }
    }
    live | (STATUS & !killed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use iced_x86::code_asm::*;

    fn decode(bits: u32, build: impl FnOnce(&mut CodeAssembler)) -> Vec<Instruction> {
        let mut a = CodeAssembler::new(bits).unwrap();
        build(&mut a);
        let bytes = a.assemble(0x1000).unwrap();
        Decoder::with_ip(bits, &bytes, 0x1000, DecoderOptions::NONE)
            .into_iter()
            .collect()
    }

    #[test]
    fn kills_and_reads() {
        let is = decode(64, |a| {
            a.add(eax, ebx).unwrap();
            a.shl(eax, cl).unwrap();
            a.shl(eax, 0).unwrap();
            a.shr(eax, 3).unwrap();
            a.inc(ecx).unwrap();
            a.adc(eax, 1).unwrap();
            a.rep().cmpsb().unwrap();
            a.int3().unwrap();
        });
        let u: Vec<FlagUse> = is.iter().map(flag_use).collect();
        assert_eq!(u[0].kill, STATUS);
        assert_eq!(u[1].kill, 0);
        assert_ne!(u[1].write, 0);
        assert_eq!(u[2].kill, 0);
        assert_eq!(u[3].kill, STATUS);
        assert_eq!(u[4].kill, STATUS & !CF);
        assert_eq!(u[5].read, CF);
        assert_eq!(u[6].kill, 0);
        assert_eq!(u[7].read, STATUS);
    }

    #[test]
    fn backward_pass() {
        let is = decode(32, |a| {
            a.add(eax, ebx).unwrap();
            a.add(esi, 2).unwrap();
            a.dec(ecx).unwrap();
            a.cmp(eax, ebx).unwrap();
            a.jne(0x1000u64).unwrap();
        });
        let live = live_after(&is, 0);
        // add eax: overwritten by add esi before any read.
        assert_eq!(live[0], 0);
        // add esi: CF passes through dec, but cmp overwrites it.
        assert_eq!(live[1], 0);
        assert_eq!(live[2], 0);
        assert_eq!(live[3], ZF);
        assert_eq!(live[4], 0);
    }
}
