//! Self-modifying code: guest code that overwrites instructions it already executed (or is about
//! to execute in the same block) must run the new bytes, as the CPU does. Every store form a driver
//! could use is covered: a plain mov, a locked RMW, rep movs/stos (the translator's bulk path), and
//! a store into the very block that is running.
mod common;

use common::*;
use dbt::iced_x86::code_asm::*;
use dbt::iced_x86::{BlockEncoderOptions, IcedError};
use dbt::{Arch, CallConv, Exit, Machine, Prot, Reg};

/// Labels whose addresses the code stores to. The code loads a label's address into ebp/rbp
/// (`lea rbp, [rip + label]` on x64; on x86 `mov ebp, imm32` with the address known from a first
/// assembly pass, whose encoding has a fixed size) and then addresses `[rbp + off]`.
struct Labels {
    arch: Arch,
    list: Vec<CodeLabel>,
    addrs: Vec<u64>,
}

impl Labels {
    /// A new label (index `n` in creation order).
    fn create(&mut self, a: &mut CodeAssembler) -> CodeLabel {
        let l = a.create_label();
        self.list.push(l);
        l
    }

    /// Places label `n` at the next instruction.
    fn set(&mut self, a: &mut CodeAssembler, n: usize) -> Result<(), IcedError> {
        a.set_label(&mut self.list[n])
    }

    /// Loads the address of label `n` into ebp/rbp.
    fn load(&self, a: &mut CodeAssembler, n: usize) -> Result<(), IcedError> {
        match self.arch {
            Arch::X64 => a.lea(rbp, ptr(self.list[n])),
            Arch::X86 => a.mov(ebp, self.addrs.get(n).copied().unwrap_or(0) as u32),
        }
    }

    /// `[rbp + off]` (loaded with [`Labels::load`]).
    fn at(&self, off: i32) -> AsmMemoryOperand {
        match self.arch {
            Arch::X64 => ptr(rbp + off),
            Arch::X86 => ptr(ebp + off),
        }
    }
}

/// Assembles `build` into a read/write/execute region (the guest patches it), puts `data` 4 KiB
/// after its start and calls it.
fn run_rwx(
    arch: Arch,
    data: &[u8],
    build: impl Fn(&mut CodeAssembler, &mut Labels, u64) -> Result<(), IcedError>,
) -> Machine {
    let mut m = machine(arch);
    let code = m
        .mem
        .alloc(0x2000, Prot::READ | Prot::WRITE | Prot::EXEC)
        .expect("code region");
    let mut addrs = Vec::new();
    let mut bytes = Vec::new();
    for pass in 0..2 {
        let mut a = CodeAssembler::new(arch.bitness()).expect("assembler");
        let mut labels = Labels {
            arch,
            list: Vec::new(),
            addrs: addrs.clone(),
        };
        build(&mut a, &mut labels, code).expect("assemble snippet");
        let r = a
            .assemble_options(code, BlockEncoderOptions::RETURN_NEW_INSTRUCTION_OFFSETS)
            .expect("assemble");
        let found: Vec<u64> = labels
            .list
            .iter()
            .map(|l| r.label_ip(l).expect("label address"))
            .collect();
        if pass == 1 {
            assert_eq!(found, addrs, "label addresses moved between passes");
        }
        addrs = found;
        bytes = r.inner.code_buffer;
    }
    assert!(bytes.len() <= 0x1000);
    m.mem.write_bytes(code, &bytes).expect("write code");
    m.mem.write_bytes(code + 0x1000, data).expect("write data");
    m.prepare_guest_call(code, CallConv::Cdecl, &[])
        .expect("prepare");
    match m.run_limited(1_000_000) {
        Some(Exit::HostReturn) => m,
        other => panic!("{}: unexpected exit {other:?}", arch.name()),
    }
}

/// The second pass through a block runs the bytes stored over it after the first pass.
#[test]
fn patched_block_runs_new_code() {
    for arch in [Arch::X86, Arch::X64] {
        let m = run_rwx(arch, &[], |a, l, _| {
            let patched = l.create(a);
            let mut done = a.create_label();
            a.xor(ecx, ecx)?;
            a.xor(edx, edx)?;
            l.set(a, 0)?;
            a.mov(eax, 1u32)?; // b8 01 00 00 00: the immediate is byte 1
            a.add(edx, eax)?;
            a.test(ecx, ecx)?;
            a.jnz(done)?;
            a.inc(ecx)?;
            l.load(a, 0)?;
            a.mov(byte_ptr(l.at(1)), 7u32)?;
            a.jmp(patched)?;
            a.set_label(&mut done)?;
            a.ret()
        });
        assert_eq!(m.cpu.reg(Reg::Rax), 7, "{}: new immediate", arch.name());
        assert_eq!(m.cpu.reg(Reg::Rdx), 8, "{}: old then new", arch.name());
    }
}

/// A loop that rewrites its own immediate on every iteration.
#[test]
fn code_patched_every_iteration() {
    for arch in [Arch::X86, Arch::X64] {
        let m = run_rwx(arch, &[], |a, l, _| {
            let top = l.create(a);
            a.xor(edx, edx)?;
            a.mov(ecx, 100u32)?;
            l.set(a, 0)?;
            a.mov(eax, 0u32)?;
            a.add(edx, eax)?;
            l.load(a, 0)?;
            a.mov(dword_ptr(l.at(1)), ecx)?;
            a.dec(ecx)?;
            a.jnz(top)?;
            a.ret()
        });
        // Iteration k (1-based) adds the count stored by iteration k-1: 0 + 100 + 99 + ... + 2.
        assert_eq!(
            m.cpu.reg(Reg::Rdx),
            (2..=100).sum::<u64>(),
            "{}",
            arch.name()
        );
    }
}

/// A store to an instruction later in the running block (already decoded with it) takes effect.
#[test]
fn store_into_the_running_block() {
    for arch in [Arch::X86, Arch::X64] {
        let m = run_rwx(arch, &[], |a, l, _| {
            l.create(a);
            a.mov(ebx, 5u32)?;
            l.load(a, 0)?;
            a.mov(dword_ptr(l.at(1)), 42u32)?;
            a.add(ebx, 1)?;
            l.set(a, 0)?;
            a.mov(eax, 1u32)?;
            a.add(eax, ebx)?;
            a.ret()
        });
        assert_eq!(m.cpu.reg(Reg::Rax), 48, "{}", arch.name());
    }
}

/// Locked read-modify-write and xchg stores into code.
#[test]
fn locked_and_exchange_stores_into_code() {
    for arch in [Arch::X86, Arch::X64] {
        let m = run_rwx(arch, &[], |a, l, _| {
            let body = l.create(a);
            let mut done = a.create_label();
            a.xor(ecx, ecx)?;
            l.set(a, 0)?;
            a.mov(eax, 10u32)?;
            a.test(ecx, ecx)?;
            a.jnz(done)?;
            a.inc(ecx)?;
            a.mov(edx, 5u32)?;
            l.load(a, 0)?;
            a.lock().add(dword_ptr(l.at(1)), edx)?; // 10 -> 15
            a.mov(edx, 0u32)?;
            a.xchg(byte_ptr(l.at(2)), dl)?; // byte 2 is 0 already: a store of the same value
            a.jmp(body)?;
            a.set_label(&mut done)?;
            a.ret()
        });
        assert_eq!(m.cpu.reg(Reg::Rax), 15, "{}", arch.name());
    }
}

/// New code copied over old code with rep movsb (the translator's bulk copy) and rep stosb.
#[test]
fn string_stores_into_code() {
    for arch in [Arch::X86, Arch::X64] {
        // Replacement for `target`: mov eax, 0x1234; nop (6 bytes, like `mov eax, imm32; nop`).
        let new_code: [u8; 6] = [0xb8, 0x34, 0x12, 0x00, 0x00, 0x90];
        let m = run_rwx(arch, &new_code, |a, l, base| {
            let target = l.create(a);
            let mut again = a.create_label();
            let mut done = a.create_label();
            a.xor(ebx, ebx)?;
            l.set(a, 0)?;
            a.mov(eax, 1u32)?;
            a.nop()?;
            a.test(ebx, ebx)?;
            a.jnz(done)?;
            a.inc(ebx)?;
            // Copy new_code (stored in the data half of the region) over `target`.
            let data = base + 0x1000;
            match arch {
                Arch::X86 => {
                    a.mov(esi, data as u32)?;
                    l.load(a, 0)?;
                    a.mov(edi, ebp)?;
                    a.mov(ecx, 6u32)?;
                }
                Arch::X64 => {
                    a.mov(rsi, data)?;
                    l.load(a, 0)?;
                    a.mov(rdi, rbp)?;
                    a.mov(ecx, 6u32)?;
                }
            }
            a.cld()?;
            a.rep().movsb()?;
            a.jmp(target)?;
            a.set_label(&mut done)?;
            // Second patch: rep stosb over the immediate's third byte makes it 0x00ff1234.
            a.test(ebx, 2)?;
            a.jnz(again)?;
            a.or(ebx, 2)?;
            match arch {
                Arch::X86 => a.lea(edi, l.at(3))?,
                Arch::X64 => a.lea(rdi, l.at(3))?,
            }
            a.mov(al, 0xffu32)?;
            a.mov(ecx, 1u32)?;
            a.rep().stosb()?;
            a.jmp(target)?;
            a.set_label(&mut again)?;
            a.ret()?;
            a.db(&[0xcc; 16])
        });
        assert_eq!(
            m.cpu.reg(Reg::Rax) & 0xffff_ffff,
            0x00ff_1234,
            "{}",
            arch.name()
        );
    }
}
