//! Guest faults: what went wrong, with the full CPU picture for the report.

use std::fmt;

use crate::cpu::Arch;
use crate::memory::MemFault;

/// Why the guest stopped abnormally.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FaultKind {
    /// Access to an unmapped page, a protection violation or an address outside the guest window.
    PageFault {
        /// Faulting address.
        addr: u64,
        /// Whether the access was a write.
        write: bool,
    },
    /// Undecodable bytes or `ud2`.
    InvalidOpcode {
        /// Instruction bytes.
        bytes: Vec<u8>,
    },
    /// A valid instruction the interpreter does not implement.
    Unsupported {
        /// Instruction bytes.
        bytes: Vec<u8>,
        /// Disassembly.
        text: String,
    },
    /// Division by zero or quotient overflow.
    DivideError,
    /// `int3`.
    Breakpoint,
    /// `hlt`.
    Halt,
    /// General protection fault (misaligned SSE access, fast-fail, assertion, ...).
    GeneralProtection(String),
    /// The host stopped the guest: it ran past a deadline without returning (the text says which).
    Watchdog(String),
}

impl From<MemFault> for FaultKind {
    fn from(f: MemFault) -> Self {
        FaultKind::PageFault {
            addr: f.addr,
            write: f.write,
        }
    }
}

fn hex_bytes(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FaultKind::PageFault { addr, write } => {
                let kind = if *write { "write" } else { "read" };
                write!(f, "page fault: {kind} at 0x{addr:x}")
            }
            FaultKind::InvalidOpcode { bytes } => {
                write!(f, "invalid opcode [{}]", hex_bytes(bytes))
            }
            FaultKind::Unsupported { bytes, text } => {
                write!(f, "unsupported instruction `{text}` [{}]", hex_bytes(bytes))
            }
            FaultKind::DivideError => write!(f, "divide error"),
            FaultKind::Breakpoint => write!(f, "breakpoint (int3)"),
            FaultKind::Halt => write!(f, "hlt executed"),
            FaultKind::GeneralProtection(msg) => write!(f, "general protection: {msg}"),
            FaultKind::Watchdog(msg) => write!(f, "watchdog: {msg}"),
        }
    }
}

/// A guest fault with registers, flags and the guest backtrace at the faulting instruction.
#[derive(Debug, Clone)]
pub struct GuestFault {
    /// What happened.
    pub kind: FaultKind,
    /// Address of the faulting instruction.
    pub rip: u64,
    /// Guest architecture.
    pub arch: Arch,
    /// General purpose registers (index = [`crate::Reg`]).
    pub regs: [u64; 16],
    /// EFLAGS.
    pub flags: u64,
    /// Guest call chain, innermost first (starts with `rip`).
    pub backtrace: Vec<u64>,
}

/// Register names in display order with their index in `regs`.
const X86_NAMES: [(&str, usize); 8] = [
    ("eax", 0),
    ("ebx", 3),
    ("ecx", 1),
    ("edx", 2),
    ("esi", 6),
    ("edi", 7),
    ("ebp", 5),
    ("esp", 4),
];
const X64_NAMES: [(&str, usize); 16] = [
    ("rax", 0),
    ("rbx", 3),
    ("rcx", 1),
    ("rdx", 2),
    ("rsi", 6),
    ("rdi", 7),
    ("rbp", 5),
    ("rsp", 4),
    ("r8", 8),
    ("r9", 9),
    ("r10", 10),
    ("r11", 11),
    ("r12", 12),
    ("r13", 13),
    ("r14", 14),
    ("r15", 15),
];

impl fmt::Display for GuestFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "guest fault ({}): {}", self.arch.name(), self.kind)?;
        let (names, width, per_line): (&[(&str, usize)], usize, usize) = match self.arch {
            Arch::X86 => (&X86_NAMES, 8, 4),
            Arch::X64 => (&X64_NAMES, 16, 4),
        };
        let ip = if self.arch == Arch::X86 { "eip" } else { "rip" };
        writeln!(f, "  {ip}={:0width$x} eflags={:08x}", self.rip, self.flags)?;
        for line in names.chunks(per_line) {
            let parts: Vec<String> = line
                .iter()
                .map(|(n, i)| format!("{n:>3}={:0width$x}", self.regs[*i]))
                .collect();
            writeln!(f, "  {}", parts.join(" "))?;
        }
        writeln!(f, "  backtrace:")?;
        for (n, a) in self.backtrace.iter().enumerate() {
            writeln!(f, "    #{n} 0x{a:0width$x}")?;
        }
        Ok(())
    }
}

impl std::error::Error for GuestFault {}

/// A page fault on the read of a read-modify-write instruction (`add [m], r`, `lock xadd`, `xchg`)
/// is reported as a write access, as hardware does (it makes the first access with write intent).
#[cold]
pub(crate) fn rmw_as_write(
    kind: FaultKind,
    mem: &crate::memory::GuestMemory,
    arch: Arch,
    rip: u64,
) -> FaultKind {
    use iced_x86::{Decoder, DecoderOptions, InstructionInfoFactory, OpAccess};
    let FaultKind::PageFault { addr, write: false } = kind else {
        return kind;
    };
    let instr = Decoder::with_ip(
        arch.bitness(),
        mem.readable_slice(rip, 15),
        rip,
        DecoderOptions::NONE,
    )
    .decode();
    if instr.is_invalid() {
        return kind;
    }
    let mut factory = InstructionInfoFactory::new();
    let rmw = factory
        .info(&instr)
        .used_memory()
        .iter()
        .any(|m| matches!(m.access(), OpAccess::ReadWrite | OpAccess::ReadCondWrite));
    FaultKind::PageFault { addr, write: rmw }
}

/// Error type of instruction handlers: a boxed [`FaultKind`] (pointer-sized, so `Result<(), Exception>`
/// is returned in a register on the hot path).
#[derive(Debug)]
pub(crate) struct Exception(pub(crate) Box<FaultKind>);

impl From<MemFault> for Exception {
    #[cold]
    fn from(f: MemFault) -> Self {
        Exception(Box::new(f.into()))
    }
}

impl From<FaultKind> for Exception {
    #[cold]
    fn from(k: FaultKind) -> Self {
        Exception(Box::new(k))
    }
}

/// Result of executing one instruction.
pub(crate) type ExecResult = Result<(), Exception>;
