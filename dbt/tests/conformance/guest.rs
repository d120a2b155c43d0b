//! Running cases under the translator.

use dbt::{Arch, Exit, FaultKind, Machine, Prot};

use crate::harness::{
    guest_base, norm, reg_mask, Case, Exc, Outcome, CODE_LEN, CODE_OFF, DATA_LEN, DATA_OFF,
    STACK_LEN, STACK_OFF,
};

/// Instruction budget of one case (string instructions count once however often they repeat).
const BUDGET: u64 = 100_000;

/// A machine with the guest world's regions mapped, reused across cases.
pub struct Guest {
    m: Machine,
    arch: Arch,
}

impl Guest {
    pub fn new(arch: Arch) -> Guest {
        let mut m = Machine::new(arch);
        let base = guest_base(arch);
        let rw = Prot::READ | Prot::WRITE;
        m.mem
            .map(base + CODE_OFF, CODE_LEN as u64, rw | Prot::EXEC)
            .expect("code page");
        m.mem
            .map(base + DATA_OFF, DATA_LEN as u64, rw)
            .expect("data region");
        m.mem
            .map(base + STACK_OFF, STACK_LEN as u64, rw)
            .expect("stack region");
        Guest { m, arch }
    }

    /// Address the snippet jumps to at its end.
    pub fn exit(&self) -> u64 {
        self.m.host_return_address()
    }

    /// Runs `case` whose snippet was encoded as `code` at the guest code page.
    pub fn run(&mut self, case: &Case, code: &[u8]) -> Outcome {
        let base = guest_base(self.arch);
        let m = &mut self.m;
        let code_addr = base + CODE_OFF;
        m.mem.write_bytes(code_addr, code).expect("write code");
        m.invalidate_code(code_addr, CODE_LEN as u64);
        m.mem
            .write_bytes(base + DATA_OFF, &case.data)
            .expect("write data");
        m.mem
            .write_bytes(base + STACK_OFF, &case.stack)
            .expect("write stack");
        for (k, v) in case.regs.iter().enumerate() {
            m.cpu.regs[k] = v.at(self.arch, base);
        }
        m.cpu.set_flags(case.flags);
        m.cpu.xmm = case.xmm;
        m.cpu.fs_base = base + DATA_OFF;
        m.cpu.gs_base = base + DATA_OFF;
        m.cpu.rip = code_addr;
        let exit = m.run_limited(BUDGET);
        let (exc, rip, regs, flags) = match exit {
            Some(Exit::HostReturn) => (Exc::None, m.cpu.rip, m.cpu.regs, m.cpu.flags()),
            Some(Exit::Fault(f)) => (exc_of(self.arch, &f.kind), f.rip, f.regs, f.flags),
            Some(Exit::Thunk(n)) => (
                Exc::Other(format!("thunk exit {n}")),
                m.cpu.rip,
                m.cpu.regs,
                m.cpu.flags(),
            ),
            None => (
                Exc::Other("did not finish within the instruction budget".into()),
                m.cpu.rip,
                m.cpu.regs,
                m.cpu.flags(),
            ),
        };
        let mut regs = regs;
        for r in regs.iter_mut() {
            *r &= reg_mask(self.arch);
        }
        Outcome {
            regs,
            flags,
            xmm: m.cpu.xmm,
            rip,
            exc,
            data: m
                .mem
                .read_vec(base + DATA_OFF, DATA_LEN)
                .expect("read data"),
            stack: m
                .mem
                .read_vec(base + STACK_OFF, STACK_LEN)
                .expect("read stack"),
        }
    }
}

/// The comparable form of a translator fault.
fn exc_of(arch: Arch, k: &FaultKind) -> Exc {
    match k {
        FaultKind::DivideError => Exc::Divide,
        FaultKind::PageFault { addr, write } => Exc::Page {
            addr: norm(arch, *addr, guest_base(arch)),
            write: *write,
        },
        FaultKind::GeneralProtection(_) => Exc::GeneralProtection,
        FaultKind::InvalidOpcode { .. } => Exc::InvalidOpcode,
        other => Exc::Other(other.to_string()),
    }
}
