//! Operand access for instruction handlers: effective addresses, register/memory/immediate operands,
//! the stack.

use iced_x86::{Instruction, OpKind, Register};

use crate::cpu::{is_gpr32, Arch};
use crate::fault::{Exception, ExecResult};
use crate::flags::size_mask;
use crate::machine::Machine;

/// A resolved destination: a register or a guest address.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Loc {
    /// A general purpose register of any width.
    Reg(Register),
    /// A guest address.
    Mem(u64),
}

impl Machine {
    /// Offset part of the memory operand's address (no segment base), wrapped to the address size.
    #[inline(always)]
    pub(crate) fn ea_no_segment(&self, i: &Instruction) -> u64 {
        let mut addr = i.memory_displacement64();
        let base = i.memory_base();
        let index = i.memory_index();
        let mut narrow = self.arch() == Arch::X86;
        if base != Register::None && base != Register::RIP && base != Register::EIP {
            addr = addr.wrapping_add(self.cpu.gpr(base));
            narrow |= is_gpr32(base);
        }
        if index != Register::None {
            addr =
                addr.wrapping_add(self.cpu.gpr(index) << (i.memory_index_scale().trailing_zeros()));
            narrow |= is_gpr32(index);
        }
        if narrow {
            addr &= 0xffff_ffff;
        }
        addr
    }

    /// Effective address of the instruction's memory operand (fs:/gs: base included).
    #[inline(always)]
    pub(crate) fn ea(&self, i: &Instruction) -> u64 {
        let addr = self.ea_no_segment(i);
        self.segment_address(i.segment_prefix(), addr)
    }

    /// Adds the base of segment `seg` (only FS and GS have one) to `addr`.
    #[inline(always)]
    pub(crate) fn segment_address(&self, seg: Register, addr: u64) -> u64 {
        let base = match seg {
            Register::FS => self.cpu.fs_base,
            Register::GS => self.cpu.gs_base,
            _ => return addr,
        };
        addr.wrapping_add(base) & self.arch().addr_mask()
    }

    /// Size in bytes of operand `n` (register or memory).
    #[inline(always)]
    pub(crate) fn op_size(&self, i: &Instruction, n: u32) -> u32 {
        match i.op_kind(n) {
            OpKind::Register => i.op_register(n).size() as u32,
            _ => i.memory_size().size() as u32,
        }
    }

    /// Resolves operand `n` as a register or memory location.
    #[inline(always)]
    pub(crate) fn loc(&self, i: &Instruction, n: u32) -> Loc {
        match i.op_kind(n) {
            OpKind::Register => Loc::Reg(i.op_register(n)),
            _ => Loc::Mem(self.ea(i)),
        }
    }

    /// Reads a location.
    #[inline(always)]
    pub(crate) fn read_loc(&mut self, loc: Loc, size: u32) -> Result<u64, Exception> {
        match loc {
            Loc::Reg(r) => Ok(self.cpu.gpr(r)),
            Loc::Mem(a) => Ok(self.load(a, size)?),
        }
    }

    /// Writes a location (guest write: needs a writable page).
    #[inline(always)]
    pub(crate) fn write_loc(&mut self, loc: Loc, size: u32, v: u64) -> ExecResult {
        match loc {
            Loc::Reg(r) => {
                self.cpu.set_gpr(r, v);
                Ok(())
            }
            Loc::Mem(a) => Ok(self.store(a, size, v)?),
        }
    }

    /// Reads operand `n` (register, memory or immediate), masked to `size` bytes.
    #[inline(always)]
    pub(crate) fn read_op(&mut self, i: &Instruction, n: u32, size: u32) -> Result<u64, Exception> {
        match i.op_kind(n) {
            OpKind::Register => Ok(self.cpu.gpr(i.op_register(n))),
            OpKind::Memory => {
                let addr = self.ea(i);
                Ok(self.load(addr, size)?)
            }
            _ => Ok(i.try_immediate(n).unwrap_or(0) & size_mask(size)),
        }
    }

    /// Writes operand `n` (register or memory).
    #[inline(always)]
    pub(crate) fn write_op(&mut self, i: &Instruction, n: u32, size: u32, v: u64) -> ExecResult {
        let loc = self.loc(i, n);
        self.write_loc(loc, size, v)
    }

    /// Current stack pointer.
    #[inline(always)]
    pub(crate) fn sp(&self) -> u64 {
        self.cpu.regs[4]
    }

    /// Sets the stack pointer (wrapped to the address size).
    #[inline(always)]
    pub(crate) fn set_sp(&mut self, v: u64) {
        self.cpu.regs[4] = v & self.arch().addr_mask();
    }

    /// Pushes `size` bytes.
    #[inline(always)]
    pub(crate) fn push(&mut self, v: u64, size: u32) -> ExecResult {
        let sp = self.sp().wrapping_sub(size as u64) & self.arch().addr_mask();
        self.store(sp, size, v)?;
        self.cpu.regs[4] = sp;
        Ok(())
    }

    /// Pops `size` bytes.
    #[inline(always)]
    pub(crate) fn pop(&mut self, size: u32) -> Result<u64, Exception> {
        let sp = self.sp();
        let v = self.load(sp, size)?;
        self.set_sp(sp.wrapping_add(size as u64));
        Ok(v)
    }

    /// Pointer size of the guest in bytes.
    #[inline(always)]
    pub(crate) fn ptr_bytes(&self) -> u32 {
        self.arch().ptr_size() as u32
    }
}
