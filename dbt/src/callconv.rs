//! Calling conventions: the host side of thunk calls (reading arguments, returning) and host -> guest
//! calls.
//!
//! "Slots" are 32-bit stack slots on X86 (a 64-bit argument takes two) and 64-bit slots on X64.

use crate::cpu::{Arch, Reg};
use crate::machine::Machine;
use crate::memory::MemFault;

/// Calling convention of a function crossing the host/guest boundary.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CallConv {
    /// X86: arguments on the stack, callee pops them.
    Stdcall,
    /// X86: arguments on the stack, caller pops them.
    Cdecl,
    /// X86: first two slots in ecx, edx, the rest on the stack, callee pops the stack part.
    Fastcall,
    /// Microsoft x64 convention (the only one on X64; treated like cdecl on X86).
    Win64,
}

impl Machine {
    /// Reads `slots` arguments of a call that just reached a thunk (rsp points to the return address).
    ///
    /// X86 stdcall/cdecl: `[esp+4+4i]`; fastcall: ecx, edx, then `[esp+4+4(i-2)]`;
    /// X64 (conv ignored): rcx, rdx, r8, r9, then `[rsp+8+32+8(i-4)]`.
    pub fn host_call_args(&self, conv: CallConv, slots: usize) -> Result<Vec<u64>, MemFault> {
        let sp = self.cpu.reg(Reg::Rsp);
        let r = &self.cpu.regs;
        match self.arch() {
            Arch::X64 => (0..slots)
                .map(|i| match i {
                    0 => Ok(r[Reg::Rcx as usize]),
                    1 => Ok(r[Reg::Rdx as usize]),
                    2 => Ok(r[Reg::R8 as usize]),
                    3 => Ok(r[Reg::R9 as usize]),
                    _ => self.mem.read_u64(sp.wrapping_add(40 + 8 * (i as u64 - 4))),
                })
                .collect(),
            Arch::X86 => (0..slots)
                .map(|i| {
                    let k = if conv == CallConv::Fastcall {
                        match i {
                            0 => return Ok(r[Reg::Rcx as usize] & 0xffff_ffff),
                            1 => return Ok(r[Reg::Rdx as usize] & 0xffff_ffff),
                            _ => i - 2,
                        }
                    } else {
                        i
                    };
                    let addr = sp.wrapping_add(4 + 4 * k as u64) & 0xffff_ffff;
                    self.mem.read_u32(addr).map(u64::from)
                })
                .collect(),
        }
    }

    /// Completes a thunk call: sets the return value (X86: eax = low 32 bits, edx = high 32 bits),
    /// pops the return address into rip and, for X86 stdcall/fastcall, the callee-popped arguments.
    pub fn host_call_return(
        &mut self,
        conv: CallConv,
        slots: usize,
        ret: u64,
    ) -> Result<(), MemFault> {
        let sp = self.cpu.reg(Reg::Rsp);
        match self.arch() {
            Arch::X64 => {
                let ra = self.mem.read_u64(sp)?;
                self.cpu.set_reg(Reg::Rax, ret);
                self.cpu.set_reg(Reg::Rsp, sp.wrapping_add(8));
                self.cpu.rip = ra;
            }
            Arch::X86 => {
                let ra = self.mem.read_u32(sp)? as u64;
                let popped = match conv {
                    CallConv::Stdcall => 4 * slots as u64,
                    CallConv::Fastcall => 4 * slots.saturating_sub(2) as u64,
                    CallConv::Cdecl | CallConv::Win64 => 0,
                };
                self.cpu.set_reg(Reg::Rax, ret & 0xffff_ffff);
                self.cpu.set_reg(Reg::Rdx, ret >> 32);
                self.cpu
                    .set_reg(Reg::Rsp, sp.wrapping_add(4 + popped) & 0xffff_ffff);
                self.cpu.rip = ra;
            }
        }
        self.cpu.shadow_pop(sp);
        Ok(())
    }

    /// Sets up a host -> guest call of `func`: arguments per `conv` (X86: one 32-bit slot per element
    /// of `args`; X64: rcx, rdx, r8, r9, stack arguments and 32 bytes of shadow space), the stack aligned
    /// so that at entry `(rsp + ptr_size) % 16 == 0`, [`host_return_address`](Self::host_return_address)
    /// pushed as return address, and rip = `func`. Run with [`run`](Self::run) until
    /// [`Exit::HostReturn`](crate::Exit::HostReturn).
    pub fn prepare_guest_call(
        &mut self,
        func: u64,
        conv: CallConv,
        args: &[u64],
    ) -> Result<(), MemFault> {
        let sp = self.cpu.reg(Reg::Rsp);
        let ret = self.host_return_address();
        match self.arch() {
            Arch::X64 => {
                let on_stack = args.get(4..).unwrap_or(&[]);
                let start = sp.wrapping_sub(32 + 8 * on_stack.len() as u64) & !15;
                for (k, a) in on_stack.iter().enumerate() {
                    self.mem
                        .write_u64(start.wrapping_add(32 + 8 * k as u64), *a)?;
                }
                let slot = start.wrapping_sub(8);
                self.mem.write_u64(slot, ret)?;
                self.cpu.set_reg(Reg::Rsp, slot);
                for (k, r) in [Reg::Rcx, Reg::Rdx, Reg::R8, Reg::R9]
                    .into_iter()
                    .enumerate()
                {
                    if let Some(a) = args.get(k) {
                        self.cpu.set_reg(r, *a);
                    }
                }
            }
            Arch::X86 => {
                let split = if conv == CallConv::Fastcall {
                    args.len().min(2)
                } else {
                    0
                };
                let (in_regs, on_stack) = args.split_at(split);
                let start = sp.wrapping_sub(4 * on_stack.len() as u64) & !15 & 0xffff_ffff;
                for (k, a) in on_stack.iter().enumerate() {
                    self.mem
                        .write_u32(start.wrapping_add(4 * k as u64) & 0xffff_ffff, *a as u32)?;
                }
                let slot = start.wrapping_sub(4) & 0xffff_ffff;
                self.mem.write_u32(slot, ret as u32)?;
                self.cpu.set_reg(Reg::Rsp, slot);
                for (k, r) in [Reg::Rcx, Reg::Rdx].into_iter().enumerate() {
                    if let Some(a) = in_regs.get(k) {
                        self.cpu.set_reg(r, *a & 0xffff_ffff);
                    }
                }
            }
        }
        self.cpu.rip = func;
        Ok(())
    }

    /// Return value of a finished guest call: rax on X64, edx:eax on X86.
    pub fn return_value(&self) -> u64 {
        match self.arch() {
            Arch::X64 => self.cpu.reg(Reg::Rax),
            Arch::X86 => {
                (self.cpu.reg(Reg::Rdx) & 0xffff_ffff) << 32
                    | (self.cpu.reg(Reg::Rax) & 0xffff_ffff)
            }
        }
    }
}
