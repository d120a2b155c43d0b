//! Stack instructions: push, pop, pushf/popf, enter, leave, pushad/popad.

use iced_x86::{Code, Instruction};

use crate::fault::ExecResult;
use crate::machine::Machine;

/// `push r/m/imm`.
pub(crate) fn push(m: &mut Machine, i: &Instruction) -> ExecResult {
    let size = (-i.stack_pointer_increment()) as u32;
    let v = m.read_op(i, 0, size)?;
    m.push(v, size)
}

/// `pop r/m` (a memory destination is addressed with the incremented stack pointer).
pub(crate) fn pop(m: &mut Machine, i: &Instruction) -> ExecResult {
    let size = i.stack_pointer_increment() as u32;
    let old = m.sp();
    let v = m.pop(size)?;
    if let Err(e) = m.write_op(i, 0, size, v) {
        m.set_sp(old);
        return Err(e);
    }
    Ok(())
}

/// pushf/pushfd/pushfq (RF and VM read as zero).
pub(crate) fn pushf(m: &mut Machine, i: &Instruction) -> ExecResult {
    let size = (-i.stack_pointer_increment()) as u32;
    let v = m.cpu.flags() & 0x00fc_ffff;
    m.push(v, size)
}

/// popf/popfd/popfq.
pub(crate) fn popf(m: &mut Machine, i: &Instruction) -> ExecResult {
    let size = i.stack_pointer_increment() as u32;
    let v = m.pop(size)?;
    let v = if size == 2 {
        (m.cpu.flags() & !0xffff) | v
    } else {
        v
    };
    m.cpu.set_flags(v);
    Ok(())
}

/// Operand size of enter/leave.
fn frame_size(m: &Machine, i: &Instruction) -> u32 {
    match i.code() {
        Code::Leavew | Code::Enterw_imm16_imm8 => 2,
        _ => m.ptr_bytes(),
    }
}

/// `leave`: rsp = rbp; pop rbp.
pub(crate) fn leave(m: &mut Machine, i: &Instruction) -> ExecResult {
    let size = frame_size(m, i);
    let old = m.sp();
    m.set_sp(m.cpu.regs[5]);
    match m.pop(size) {
        Ok(v) => {
            let r = if size == 2 {
                iced_x86::Register::BP
            } else {
                frame_reg(m)
            };
            m.cpu.set_gpr(r, v);
            Ok(())
        }
        Err(e) => {
            m.set_sp(old);
            Err(e)
        }
    }
}

/// The frame pointer register at pointer width.
fn frame_reg(m: &Machine) -> iced_x86::Register {
    if m.ptr_bytes() == 4 {
        iced_x86::Register::EBP
    } else {
        iced_x86::Register::RBP
    }
}

/// `enter imm16, imm8`.
pub(crate) fn enter(m: &mut Machine, i: &Instruction) -> ExecResult {
    let size = frame_size(m, i);
    let alloc = i.immediate16() as u64;
    let level = (i.immediate8_2nd() % 32) as u64;
    let saved_sp = m.sp();
    let result = (|| {
        let rbp = m.cpu.regs[5];
        m.push(rbp, size)?;
        let frame = m.sp();
        if level > 0 {
            let mut bp = rbp;
            for _ in 1..level {
                bp = bp.wrapping_sub(size as u64) & m.arch().addr_mask();
                let v = m.load(bp, size)?;
                m.push(v, size)?;
            }
            m.push(frame, size)?;
        }
        // Hardware write-checks the final stack pointer (#PF there, before anything is committed);
        // the check is no access, so a (strange) stack on MMIO pages is not touched by it.
        let last = m.sp().wrapping_sub(alloc) & m.arch().addr_mask();
        if m.mem.mmio_address(last).is_none() {
            let v = m
                .mem
                .load(last, size)
                .map_err(|e| crate::memory::MemFault { write: true, ..e })?;
            m.mem.store(last, size, v)?;
        }
        Ok((frame, m.sp()))
    })();
    match result {
        Ok((frame, sp)) => {
            let r = if size == 2 {
                iced_x86::Register::BP
            } else {
                frame_reg(m)
            };
            m.cpu.set_gpr(r, frame);
            m.set_sp(sp.wrapping_sub(alloc));
            Ok(())
        }
        Err(e) => {
            m.set_sp(saved_sp);
            Err(e)
        }
    }
}

/// `pushad` (X86): eax, ecx, edx, ebx, original esp, ebp, esi, edi.
pub(crate) fn pushad(m: &mut Machine, _i: &Instruction) -> ExecResult {
    let sp = m.sp();
    let regs = m.cpu.regs;
    let out: Vec<u64> = (0..8).map(|r| if r == 4 { sp } else { regs[r] }).collect();
    let result = out.iter().try_for_each(|v| m.push(*v, 4));
    if result.is_err() {
        m.set_sp(sp);
    }
    result
}

/// `popad` (X86): the reverse of pushad, the saved esp is skipped.
pub(crate) fn popad(m: &mut Machine, _i: &Instruction) -> ExecResult {
    let sp = m.sp();
    let mut vals = [0u64; 8];
    for k in 0..8 {
        vals[7 - k] = m.load(sp.wrapping_add(4 * k as u64) & 0xffff_ffff, 4)?;
    }
    for (r, v) in vals.iter().enumerate() {
        if r != 4 {
            m.cpu.regs[r] = *v;
        }
    }
    m.set_sp(sp.wrapping_add(32));
    Ok(())
}
