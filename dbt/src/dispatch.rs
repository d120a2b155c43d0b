//! Instruction dispatch: the single table mapping a decoded instruction to its handler. The executor
//! and [`is_supported`] both use it, so they cannot disagree.

use iced_x86::{Code, FastFormatter, Instruction, Mnemonic, OpKind, Register};

use crate::fault::{ExecResult, FaultKind};
use crate::machine::Machine;
use crate::op::InstrHandler;
use crate::{
    exec_alu, exec_bits, exec_control, exec_data, exec_muldiv, exec_shift, exec_sse, exec_stack,
};
use crate::{exec_string, exec_system};

/// Whether the interpreter implements `instr` (same decision as the executor's dispatch).
pub fn is_supported(instr: &Instruction) -> bool {
    handler_for(instr).is_some()
}

/// Handler of an instruction the interpreter does not implement: faults with its bytes and text.
pub(crate) fn unsupported(m: &mut Machine, i: &Instruction) -> ExecResult {
    let bytes = m.mem.read_vec(i.ip(), i.len()).unwrap_or_default();
    let mut text = String::new();
    FastFormatter::new().format(i, &mut text);
    Err(FaultKind::Unsupported { bytes, text }.into())
}

/// Whether every operand is of a kind the handlers understand: GPRs, XMM registers, memory with
/// 32/64-bit addressing, immediates and 32/64-bit near branches.
fn operands_ok(i: &Instruction) -> bool {
    (0..i.op_count()).all(|n| match i.op_kind(n) {
        OpKind::Register => {
            let r = i.op_register(n);
            r.is_gpr() || r.is_xmm()
        }
        OpKind::Memory => {
            let small = |r: Register| r != Register::None && r.is_gpr16();
            !small(i.memory_base()) && !small(i.memory_index()) && !i.is_vsib()
        }
        OpKind::NearBranch32 | OpKind::NearBranch64 => true,
        OpKind::MemorySegESI | OpKind::MemorySegRSI | OpKind::MemoryESEDI | OpKind::MemoryESRDI => {
            true
        }
        OpKind::Immediate8
        | OpKind::Immediate8_2nd
        | OpKind::Immediate16
        | OpKind::Immediate32
        | OpKind::Immediate64
        | OpKind::Immediate8to16
        | OpKind::Immediate8to32
        | OpKind::Immediate8to64
        | OpKind::Immediate32to64 => true,
        _ => false,
    })
}

/// The handler of `i`, or `None` if it is not supported.
pub(crate) fn handler_for(i: &Instruction) -> Option<InstrHandler> {
    use Mnemonic as M;
    let mn = i.mnemonic();
    if mn == M::Mov && (i.op0_register() == Register::CR8 || i.op1_register() == Register::CR8) {
        return Some(exec_system::mov_cr8);
    }
    if !operands_ok(i) || i.is_jmp_far_indirect() || i.is_call_far_indirect() {
        return None;
    }
    let h: InstrHandler = match mn {
        M::Mov => exec_data::mov,
        M::Movzx => exec_data::movzx,
        M::Movsx | M::Movsxd => exec_data::movsx,
        M::Lea => exec_data::lea,
        M::Xchg => exec_data::xchg,
        M::Cmpxchg => exec_data::cmpxchg,
        M::Cmpxchg8b => exec_data::cmpxchg8b,
        M::Cmpxchg16b => exec_data::cmpxchg16b,
        M::Xadd => exec_data::xadd,
        M::Bswap => exec_data::bswap,
        M::Cbw | M::Cwde | M::Cdqe | M::Cwd | M::Cdq | M::Cqo => exec_data::convert,
        M::Xlatb => exec_data::xlat,
        M::Sahf => exec_data::sahf,
        M::Lahf => exec_data::lahf,
        M::Nop
        | M::Pause
        | M::Endbr32
        | M::Endbr64
        | M::Lfence
        | M::Mfence
        | M::Sfence
        | M::Prefetchnta
        | M::Prefetcht0
        | M::Prefetcht1
        | M::Prefetcht2
        | M::Prefetchw
        | M::Clflush
        | M::Clflushopt
        | M::Wbinvd => exec_data::nop,
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
        | M::Cmovs => exec_data::cmovcc,
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
        | M::Sets => exec_data::setcc,

        M::Add => exec_alu::add,
        M::Adc => exec_alu::adc,
        M::Sub => exec_alu::sub,
        M::Sbb => exec_alu::sbb,
        M::And => exec_alu::and,
        M::Or => exec_alu::or,
        M::Xor => exec_alu::xor,
        M::Cmp => exec_alu::cmp,
        M::Test => exec_alu::test,
        M::Not => exec_alu::not,
        M::Neg => exec_alu::neg,
        M::Inc => exec_alu::inc,
        M::Dec => exec_alu::dec,

        M::Mul => exec_muldiv::mul,
        M::Imul => exec_muldiv::imul,
        M::Div => exec_muldiv::div,
        M::Idiv => exec_muldiv::idiv,

        M::Shl | M::Sal | M::Shr | M::Sar => exec_shift::shift,
        M::Rol | M::Ror | M::Rcl | M::Rcr => exec_shift::rotate,
        M::Shld | M::Shrd => exec_shift::shift_double,

        M::Bt | M::Bts | M::Btr | M::Btc => exec_bits::bit_test,
        M::Bsf | M::Bsr => exec_bits::bit_scan,
        M::Lzcnt | M::Tzcnt => exec_bits::count_zeros,
        M::Popcnt => exec_bits::popcnt,

        M::Jmp => exec_control::jmp,
        M::Call => exec_control::call,
        M::Ret => exec_control::ret,
        M::Ja
        | M::Jae
        | M::Jb
        | M::Jbe
        | M::Je
        | M::Jg
        | M::Jge
        | M::Jl
        | M::Jle
        | M::Jne
        | M::Jno
        | M::Jnp
        | M::Jns
        | M::Jo
        | M::Jp
        | M::Js => exec_control::jcc,
        M::Loop | M::Loope | M::Loopne => exec_control::loop_,
        M::Jcxz | M::Jecxz | M::Jrcxz => exec_control::jcxz,

        M::Push => exec_stack::push,
        M::Pop => exec_stack::pop,
        M::Pushf | M::Pushfd | M::Pushfq => exec_stack::pushf,
        M::Popf | M::Popfd | M::Popfq => exec_stack::popf,
        M::Leave => exec_stack::leave,
        M::Enter => exec_stack::enter,
        M::Pushad => exec_stack::pushad,
        M::Popad => exec_stack::popad,

        M::Movsd if i.code() == Code::Movsd_m32_m32 => exec_string::string,
        M::Cmpsd if i.code() == Code::Cmpsd_m32_m32 => exec_string::string,
        M::Movsb
        | M::Movsw
        | M::Movsq
        | M::Stosb
        | M::Stosw
        | M::Stosd
        | M::Stosq
        | M::Lodsb
        | M::Lodsw
        | M::Lodsd
        | M::Lodsq
        | M::Cmpsb
        | M::Cmpsw
        | M::Cmpsq
        | M::Scasb
        | M::Scasw
        | M::Scasd
        | M::Scasq => exec_string::string,

        M::Cpuid => exec_system::cpuid,
        M::Rdtsc | M::Rdtscp => exec_system::rdtsc,
        M::In => exec_system::port_in,
        M::Out => exec_system::port_out,
        M::Cli | M::Sti | M::Clc | M::Stc | M::Cmc | M::Cld | M::Std => exec_system::flag_bit,
        M::Int3 => exec_system::int3,
        M::Int => exec_system::int_n,
        M::Ud2 | M::Ud0 | M::Ud1 => exec_system::ud2,
        M::Hlt => exec_system::hlt,

        M::Movd | M::Movq => exec_sse::movd_movq,
        M::Movdqa
        | M::Movdqu
        | M::Movaps
        | M::Movups
        | M::Movapd
        | M::Movupd
        | M::Movntdq
        | M::Movntps
        | M::Movntpd => exec_sse::mov128,
        M::Movnti => exec_sse::movnti,
        M::Movss
        | M::Movsd
        | M::Movhps
        | M::Movlps
        | M::Movhpd
        | M::Movlpd
        | M::Movhlps
        | M::Movlhps => exec_sse::partial_move,
        M::Pxor
        | M::Xorps
        | M::Xorpd
        | M::Por
        | M::Orps
        | M::Orpd
        | M::Pand
        | M::Andps
        | M::Andpd
        | M::Pandn
        | M::Andnps
        | M::Andnpd => exec_sse::logic,
        M::Paddb
        | M::Paddw
        | M::Paddd
        | M::Paddq
        | M::Psubb
        | M::Psubw
        | M::Psubd
        | M::Psubq
        | M::Pcmpeqb
        | M::Pcmpeqw
        | M::Pcmpeqd
        | M::Pcmpgtb
        | M::Pcmpgtw
        | M::Pcmpgtd => exec_sse::arith,
        M::Pminub
        | M::Pmaxub
        | M::Pminsw
        | M::Pmaxsw
        | M::Pavgb
        | M::Pavgw
        | M::Paddusb
        | M::Paddusw
        | M::Psubusb
        | M::Psubusw
        | M::Paddsb
        | M::Paddsw
        | M::Psubsb
        | M::Psubsw
        | M::Pmullw
        | M::Pmulhw
        | M::Pmulhuw
        | M::Pmuludq
        | M::Pmaddwd
        | M::Psadbw
        | M::Packsswb
        | M::Packuswb
        | M::Packssdw => exec_sse::arith_ext,
        M::Pmovmskb | M::Movmskps | M::Movmskpd => exec_sse::movemask,
        M::Punpcklbw
        | M::Punpckhbw
        | M::Punpcklwd
        | M::Punpckhwd
        | M::Punpckldq
        | M::Punpckhdq
        | M::Punpcklqdq
        | M::Punpckhqdq
        | M::Unpcklps
        | M::Unpckhps
        | M::Unpcklpd
        | M::Unpckhpd => exec_sse::unpack,
        M::Pshufd | M::Pshuflw | M::Pshufhw | M::Shufps | M::Shufpd => exec_sse::shuffle,
        M::Psrldq | M::Pslldq => exec_sse::byte_shift,
        M::Pinsrw | M::Pextrw => exec_sse::word_insert_extract,
        M::Psrlw | M::Psrld | M::Psrlq | M::Psllw | M::Pslld | M::Psllq | M::Psraw | M::Psrad => {
            exec_sse::lane_shift
        }
        _ => return None,
    };
    Some(h)
}
