//! Guest CPU state: architecture, general purpose and SSE registers, lazy flags, shadow call stack.

use iced_x86::Register;

use crate::flags::Flags;

/// Guest architecture.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Arch {
    /// x86-32 protected mode, flat segments.
    X86,
    /// x64 long mode.
    X64,
}

impl Arch {
    /// Size of a guest pointer in bytes (4 or 8).
    pub fn ptr_size(self) -> u64 {
        match self {
            Arch::X86 => 4,
            Arch::X64 => 8,
        }
    }

    /// Short name: `"x86"` or `"x64"`.
    pub fn name(self) -> &'static str {
        match self {
            Arch::X86 => "x86",
            Arch::X64 => "x64",
        }
    }

    /// Decoder bitness (32 or 64).
    pub fn bitness(self) -> u32 {
        match self {
            Arch::X86 => 32,
            Arch::X64 => 64,
        }
    }

    /// Mask applied to guest addresses and the stack pointer.
    #[inline(always)]
    pub(crate) fn addr_mask(self) -> u64 {
        match self {
            Arch::X86 => 0xffff_ffff,
            Arch::X64 => u64::MAX,
        }
    }
}

/// General purpose register index into [`Cpu::regs`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reg {
    /// rax / eax (return value).
    Rax = 0,
    /// rcx / ecx (first argument of Win64 and fastcall).
    Rcx,
    /// rdx / edx (second argument of Win64 and fastcall, high half of x86 64-bit returns).
    Rdx,
    /// rbx / ebx.
    Rbx,
    /// rsp / esp (stack pointer).
    Rsp,
    /// rbp / ebp (frame pointer).
    Rbp,
    /// rsi / esi.
    Rsi,
    /// rdi / edi.
    Rdi,
    /// r8 (third Win64 argument).
    R8,
    /// r9 (fourth Win64 argument).
    R9,
    /// r10.
    R10,
    /// r11.
    R11,
    /// r12.
    R12,
    /// r13.
    R13,
    /// r14.
    R14,
    /// r15.
    R15,
}

impl Reg {
    /// All registers by index.
    const ALL: [Reg; 16] = [
        Reg::Rax,
        Reg::Rcx,
        Reg::Rdx,
        Reg::Rbx,
        Reg::Rsp,
        Reg::Rbp,
        Reg::Rsi,
        Reg::Rdi,
        Reg::R8,
        Reg::R9,
        Reg::R10,
        Reg::R11,
        Reg::R12,
        Reg::R13,
        Reg::R14,
        Reg::R15,
    ];

    /// The register with index `i` in [`Cpu::regs`], if `i < 16`.
    pub(crate) fn from_index(i: u32) -> Option<Reg> {
        Reg::ALL.get(i as usize).copied()
    }
}

/// One entry of the shadow call stack: a return address and the stack slot holding it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Frame {
    pub(crate) ret: u64,
    pub(crate) slot: u64,
}

/// Longest shadow call stack kept; older entries are dropped.
const SHADOW_MAX: usize = 4096;

/// Guest CPU state.
#[derive(Clone, Debug)]
pub struct Cpu {
    /// General purpose registers, indexed by [`Reg`] (on X86 only the low 32 bits are used).
    pub regs: [u64; 16],
    /// Instruction pointer.
    pub rip: u64,
    /// SSE registers.
    pub xmm: [u128; 16],
    /// FS segment base (`fs:` overrides add it).
    pub fs_base: u64,
    /// GS segment base (`gs:` overrides add it).
    pub gs_base: u64,
    /// Task priority register (the x64 IRQL), accessed by `mov cr8`.
    pub cr8: u64,
    pub(crate) flags: Flags,
    pub(crate) shadow: Vec<Frame>,
}

impl Default for Cpu {
    fn default() -> Self {
        Cpu::new()
    }
}

impl Cpu {
    /// A CPU with zeroed registers and EFLAGS = 0x202 (IF set).
    pub fn new() -> Cpu {
        Cpu {
            regs: [0; 16],
            rip: 0,
            xmm: [0; 16],
            fs_base: 0,
            gs_base: 0,
            cr8: 0,
            flags: Flags::default(),
            shadow: Vec::new(),
        }
    }

    /// Materialized EFLAGS (IF is bit 9, DF bit 10, bit 1 always set).
    pub fn flags(&self) -> u64 {
        self.flags.get()
    }

    /// Replaces EFLAGS (reserved bits are normalized).
    pub fn set_flags(&mut self, v: u64) {
        self.flags.set_all(v);
    }

    /// Reads a general purpose register.
    pub fn reg(&self, r: Reg) -> u64 {
        self.regs[r as usize]
    }

    /// Writes a general purpose register.
    pub fn set_reg(&mut self, r: Reg, v: u64) {
        self.regs[r as usize] = v;
    }

    /// Reads a GPR of any width (zero-extended). Non-GPRs read as zero.
    #[inline(always)]
    pub(crate) fn gpr(&self, r: Register) -> u64 {
        let v = r as usize;
        match v {
            1..=4 => self.regs[v - 1] & 0xff,
            5..=8 => (self.regs[v - 5] >> 8) & 0xff,
            9..=20 => self.regs[v - 5] & 0xff,
            21..=36 => self.regs[v - 21] & 0xffff,
            37..=52 => self.regs[v - 37] & 0xffff_ffff,
            53..=68 => self.regs[v - 53],
            _ => 0,
        }
    }

    /// Writes a GPR of any width with x86 semantics (8/16-bit writes merge, 32-bit writes zero-extend).
    #[inline(always)]
    pub(crate) fn set_gpr(&mut self, r: Register, val: u64) {
        let v = r as usize;
        match v {
            1..=4 => self.regs[v - 1] = (self.regs[v - 1] & !0xff) | (val & 0xff),
            5..=8 => self.regs[v - 5] = (self.regs[v - 5] & !0xff00) | ((val & 0xff) << 8),
            9..=20 => self.regs[v - 5] = (self.regs[v - 5] & !0xff) | (val & 0xff),
            21..=36 => self.regs[v - 21] = (self.regs[v - 21] & !0xffff) | (val & 0xffff),
            37..=52 => self.regs[v - 37] = val & 0xffff_ffff,
            53..=68 => self.regs[v - 53] = val,
            _ => {}
        }
    }

    /// Records a call: `ret` was pushed at stack slot `slot`.
    pub(crate) fn shadow_push(&mut self, ret: u64, slot: u64) {
        if self.shadow.len() >= SHADOW_MAX {
            self.shadow.drain(..SHADOW_MAX / 2);
        }
        self.shadow.push(Frame { ret, slot });
    }

    /// Records a return through stack slot `slot`: drops stale entries below it, then the matching one.
    pub(crate) fn shadow_pop(&mut self, slot: u64) {
        while let Some(top) = self.shadow.last() {
            if top.slot < slot {
                self.shadow.pop();
            } else {
                if top.slot == slot {
                    self.shadow.pop();
                }
                break;
            }
        }
    }
}

/// Index of an XMM register, if `r` is one.
#[inline(always)]
pub(crate) fn xmm_index(r: Register) -> Option<usize> {
    let v = (r as usize).wrapping_sub(Register::XMM0 as usize);
    (v < 16).then_some(v)
}

/// Whether `r` is a 32-bit GPR (EAX..R15D).
#[inline(always)]
pub(crate) fn is_gpr32(r: Register) -> bool {
    (r as usize).wrapping_sub(Register::EAX as usize) < 16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_registers() {
        let mut c = Cpu::new();
        c.regs[0] = 0x1122_3344_5566_7788;
        assert_eq!(c.gpr(Register::AH), 0x77);
        assert_eq!(c.gpr(Register::AX), 0x7788);
        c.set_gpr(Register::AH, 0xaa);
        c.set_gpr(Register::AL, 0xbb);
        assert_eq!(c.regs[0], 0x1122_3344_5566_aabb);
        c.set_gpr(Register::EAX, 0xffff_ffff_0000_0001);
        assert_eq!(c.regs[0], 1);
        c.regs[6] = 0x1234;
        assert_eq!(c.gpr(Register::SIL), 0x34);
        c.set_gpr(Register::R15L, 0x12);
        assert_eq!(c.regs[15], 0x12);
        assert_eq!(c.flags(), 0x202);
    }
}
