//! Random bytes executed as guest code must never panic the host: every outcome is an exit.
mod common;

use dbt::iced_x86::{Decoder, DecoderOptions};
use dbt::{is_supported, Arch, CallConv, Exit, Prot, Reg};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn random_code_never_panics() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for arch in [Arch::X86, Arch::X64] {
        let mut m = common::machine(arch);
        let code = m
            .mem
            .alloc(0x2000, Prot::READ | Prot::WRITE | Prot::EXEC)
            .expect("code");
        let dataa = m.mem.alloc(0x4000, Prot::READ | Prot::WRITE).expect("data");
        let stack_top = m.cpu.reg(Reg::Rsp);
        let mut faults = 0;
        for round in 0..20000 {
            let bytes: Vec<u8> = (0..96).map(|_| rng.next() as u8).collect();
            m.mem.write_bytes(code, &bytes).expect("write");
            m.invalidate_code(code, 0x2000);
            m.cpu.set_reg(Reg::Rsp, stack_top);
            m.prepare_guest_call(code, CallConv::Cdecl, &[])
                .expect("prepare");
            for r in 0..16 {
                if r != Reg::Rsp as usize {
                    let v = rng.next();
                    m.cpu.regs[r] = match v % 4 {
                        0 => dataa + (v >> 8) % 0x4000,
                        1 => v >> 56,
                        _ => v,
                    };
                    if arch == Arch::X86 {
                        m.cpu.regs[r] &= 0xffff_ffff;
                    }
                }
            }
            m.cpu.set_flags(rng.next());
            m.cpu.fs_base = if round % 2 == 0 { dataa } else { 0 };
            m.cpu.gs_base = dataa;
            if let Some(Exit::Fault(f)) = m.run_limited(500) {
                faults += 1;
                let _ = f.to_string();
            }
            // Every decoded instruction is either supported or not, without panicking.
            let bitness = if arch == Arch::X86 { 32 } else { 64 };
            for i in Decoder::with_ip(bitness, &bytes, code, DecoderOptions::NONE) {
                let _ = is_supported(&i);
            }
        }
        assert!(faults > 100);
        println!(
            "{arch:?}: {faults} faults, {} instructions",
            m.stats.instructions
        );
    }
}

/// Streams of supported, non-branching instructions picked from random bytes, run with registers
/// pointing into mapped memory: exercises the handlers themselves with hostile operands.
#[test]
fn random_supported_instructions_never_panic() {
    use dbt::iced_x86::FlowControl;
    let mut rng = Rng(0x1234_5678_9abc_def1);
    for arch in [Arch::X86, Arch::X64] {
        let bitness = if arch == Arch::X86 { 32 } else { 64 };
        let mut m = common::machine(arch);
        let code = m.mem.alloc(0x2000, Prot::READ | Prot::EXEC).expect("code");
        let dataa = m
            .mem
            .alloc(0x10000, Prot::READ | Prot::WRITE)
            .expect("data");
        let stack_top = m.cpu.reg(Reg::Rsp);
        let mut executed = 0;
        for _ in 0..10000 {
            let mut blob = Vec::new();
            let mut count = 0;
            while count < 24 {
                let raw: Vec<u8> = (0..16).map(|_| rng.next() as u8).collect();
                let mut d = Decoder::with_ip(bitness, &raw, 0, DecoderOptions::NONE);
                let i = d.decode();
                if i.is_invalid() || !is_supported(&i) || i.flow_control() != FlowControl::Next {
                    continue;
                }
                // keep memory operands near the data region: no huge displacements
                let far = i.memory_displacement64() > 0x100
                    && i.memory_displacement64() < u64::MAX - 0x100;
                if far && (0..i.op_count()).any(|n| i.op_kind(n) == dbt::iced_x86::OpKind::Memory) {
                    continue;
                }
                blob.extend_from_slice(&raw[..i.len()]);
                count += 1;
            }
            blob.push(0xc3);
            m.mem.write_bytes(code, &blob).expect("write");
            m.invalidate_code(code, 0x2000);
            m.cpu.set_reg(Reg::Rsp, stack_top);
            m.prepare_guest_call(code, CallConv::Cdecl, &[])
                .expect("prepare");
            for r in 0..16 {
                if r != Reg::Rsp as usize {
                    let v = rng.next();
                    m.cpu.regs[r] = match v % 10 {
                        0 => v >> (v % 64),
                        1..=4 => dataa + 0x8000 + (v >> 8) % 0x100,
                        _ => (v >> 8) % 0x100,
                    };
                }
            }
            for x in m.cpu.xmm.iter_mut() {
                *x = (rng.next() as u128) << 64 | rng.next() as u128;
            }
            m.cpu.set_flags(rng.next() & !0x400);
            m.cpu.fs_base = dataa;
            m.cpu.gs_base = dataa;
            let before = m.stats.instructions;
            if let Some(Exit::Fault(f)) = m.run_limited(10_000) {
                let _ = f.to_string();
            }
            executed += m.stats.instructions - before;
        }
        println!("{arch:?}: {executed} instructions executed");
        assert!(executed > 10_000);
    }
}
