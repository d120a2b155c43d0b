//! Shared helpers for the dbt integration tests: assemble a snippet, load it, run it.
#![allow(dead_code)]

use dbt::iced_x86::code_asm::CodeAssembler;
use dbt::iced_x86::IcedError;
use dbt::{Arch, CallConv, Exit, Machine, Prot};

/// Stack size given to every test machine.
pub const STACK: u64 = 0x10000;

/// A machine with a 64 KiB stack.
pub fn machine(arch: Arch) -> Machine {
    let mut m = Machine::new(arch);
    m.setup_stack(STACK).expect("stack");
    m
}

/// Assembles `build` for `arch` at a fresh read-only code region; returns its address.
pub fn load(
    m: &mut Machine,
    build: impl FnOnce(&mut CodeAssembler) -> Result<(), IcedError>,
) -> u64 {
    let bits = if m.arch() == Arch::X86 { 32 } else { 64 };
    let mut a = CodeAssembler::new(bits).expect("assembler");
    build(&mut a).expect("assemble snippet");
    let addr = m
        .mem
        .alloc(0x10000, Prot::READ | Prot::EXEC)
        .expect("code region");
    let bytes = a.assemble(addr).expect("assemble");
    m.mem.write_bytes(addr, &bytes).expect("write code");
    addr
}

/// Allocates a zeroed read/write data region.
pub fn data(m: &mut Machine, len: u64) -> u64 {
    m.mem
        .alloc(len, Prot::READ | Prot::WRITE)
        .expect("data region")
}

/// Calls `code` as a cdecl function with no arguments and runs to the host return.
pub fn call(m: &mut Machine, code: u64) {
    m.prepare_guest_call(code, CallConv::Cdecl, &[])
        .expect("prepare");
    finish(m);
}

/// Runs until the host return; panics on anything else.
pub fn finish(m: &mut Machine) {
    match m.run_limited(10_000_000) {
        Some(Exit::HostReturn) => {}
        Some(Exit::Fault(f)) => panic!("unexpected fault:\n{f}"),
        other => panic!("unexpected exit {other:?}"),
    }
}

/// Assembles, loads and runs a snippet (which must end with `ret`), with `init` applied to the
/// machine right before running (after the call frame is set up).
pub fn run(
    arch: Arch,
    init: impl FnOnce(&mut Machine),
    build: impl FnOnce(&mut CodeAssembler) -> Result<(), IcedError>,
) -> Machine {
    let mut m = machine(arch);
    let code = load(&mut m, build);
    m.prepare_guest_call(code, CallConv::Cdecl, &[])
        .expect("prepare");
    init(&mut m);
    finish(&mut m);
    m
}

/// Runs a snippet expected to fault; returns the machine and the fault.
pub fn run_fault(
    arch: Arch,
    init: impl FnOnce(&mut Machine),
    build: impl FnOnce(&mut CodeAssembler) -> Result<(), IcedError>,
) -> (Machine, dbt::GuestFault) {
    let mut m = machine(arch);
    let code = load(&mut m, build);
    m.prepare_guest_call(code, CallConv::Cdecl, &[])
        .expect("prepare");
    init(&mut m);
    match m.run_limited(10_000_000) {
        Some(Exit::Fault(f)) => (m, f),
        other => panic!("expected a fault, got {other:?}"),
    }
}

/// Status flag bits.
pub const CF: u64 = 1;
pub const PF: u64 = 4;
pub const AF: u64 = 0x10;
pub const ZF: u64 = 0x40;
pub const SF: u64 = 0x80;
pub const OF: u64 = 0x800;
pub const STATUS: u64 = CF | PF | AF | ZF | SF | OF;
