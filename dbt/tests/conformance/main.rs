//! Differential conformance tests of the translator against the host CPU.
//!
//! The same instruction sequences run natively (x64 in a forked child process; x86-32 in the
//! compatibility-mode code segment of a forked 64-bit child) and under dbt, from the same registers,
//! flags, XMM registers and memory; registers, defined flags, memory and the raised exception must
//! match. See `harness.rs` for the worlds, `native.rs` for native execution, `specs.rs`, `custom.rs`
//! and `drivers.rs` for the case lists and `table.rs` for `dbt/CONFORMANCE.md`.
//!
//! Environment: `DBT_CONFORMANCE_SEED` (random operands; printed on failure),
//! `DBT_CONFORMANCE_SOAK=N` (N times the cases), `DBT_CONFORMANCE_FILTER=<substring of a spec name>`,
//! `DBT_CONFORMANCE_STRICT=1` (compare undefined flags too), `ICA_UPDATE_CONFORMANCE=1` (rewrite
//! the table).
#![cfg(all(target_arch = "x86_64", target_os = "linux"))]

mod custom;
mod drivers;
mod guest;
mod harness;
mod native;
mod run;
mod specs;
mod table;

use std::collections::BTreeMap;
use std::sync::OnceLock;

use dbt::Arch;

use crate::drivers::Skipped;
use crate::specs::{Group, Spec};

/// All specs of one architecture, and what is not run.
struct Lists {
    specs: Vec<Spec>,
    unsupported: Vec<(String, String)>,
    skipped: BTreeMap<Skipped, usize>,
}

fn lists(arch: Arch) -> &'static Lists {
    static X86: OnceLock<Lists> = OnceLock::new();
    static X64: OnceLock<Lists> = OnceLock::new();
    let make = |arch: Arch| {
        let (mut specs, unsupported) = specs::catalogue_specs_only(arch);
        specs.extend(custom::specs(arch));
        let (driver_specs, skipped) = drivers::scan(arch);
        specs.extend(driver_specs);
        Lists {
            specs,
            unsupported,
            skipped,
        }
    };
    match arch {
        Arch::X86 => X86.get_or_init(|| make(Arch::X86)),
        Arch::X64 => X64.get_or_init(|| make(Arch::X64)),
    }
}

fn run_group(arch: Arch, group: Group) {
    let specs: Vec<&Spec> = lists(arch)
        .specs
        .iter()
        .filter(|s| s.group == group)
        .collect();
    run::run_specs(arch, &format!("{group:?}"), &specs);
}

#[test]
fn x86_integer() {
    run_group(Arch::X86, Group::Integer);
}

#[test]
fn x64_integer() {
    run_group(Arch::X64, Group::Integer);
}

#[test]
fn x86_data() {
    run_group(Arch::X86, Group::Data);
}

#[test]
fn x64_data() {
    run_group(Arch::X64, Group::Data);
}

#[test]
fn x86_string_stack() {
    run_group(Arch::X86, Group::StringStack);
}

#[test]
fn x64_string_stack() {
    run_group(Arch::X64, Group::StringStack);
}

#[test]
fn x86_sse() {
    run_group(Arch::X86, Group::Sse);
}

#[test]
fn x64_sse() {
    run_group(Arch::X64, Group::Sse);
}

#[test]
fn x86_control() {
    run_group(Arch::X86, Group::Control);
}

#[test]
fn x64_control() {
    run_group(Arch::X64, Group::Control);
}

#[test]
fn x86_drivers() {
    run_group(Arch::X86, Group::Drivers);
}

#[test]
fn x64_drivers() {
    run_group(Arch::X64, Group::Drivers);
}

/// `dbt/CONFORMANCE.md` is generated from the same lists the tests above run.
#[test]
fn conformance_table() {
    let (x86, x64) = (lists(Arch::X86), lists(Arch::X64));
    let inputs = table::Inputs {
        specs: x86.specs.iter().chain(x64.specs.iter()).collect(),
        unsupported: x86
            .unsupported
            .iter()
            .chain(x64.unsupported.iter())
            .cloned()
            .collect(),
        skipped: vec![(Arch::X86, &x86.skipped), (Arch::X64, &x64.skipped)],
    };
    let text = table::render(&inputs);
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("CONFORMANCE.md");
    if std::env::var("ICA_UPDATE_CONFORMANCE").is_ok_and(|v| v == "1") {
        std::fs::write(&path, &text).expect("write CONFORMANCE.md");
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == text,
        "{} is stale: regenerate it with `ICA_UPDATE_CONFORMANCE=1 cargo test -p dbt --test \
         conformance conformance_table`",
        path.display()
    );
}

/// The oracle is not vacuous: native faults are caught and classified, and `diff` notices a
/// difference in each compared part of the state.
#[test]
fn harness_self_check() {
    use harness::{diff, encode, guest_base, Case, Exc, Norm, Rng, Val};
    use iced_x86::{Code, Instruction, MemoryOperand, Register};
    for arch in [Arch::X86, Arch::X64] {
        let (ax, bx, cx) = match arch {
            Arch::X86 => (Register::EAX, Register::EBX, Register::ECX),
            Arch::X64 => (Register::RAX, Register::RBX, Register::RCX),
        };
        let (load, div) = match arch {
            Arch::X86 => (Code::Mov_r32_rm32, Code::Div_rm32),
            Arch::X64 => (Code::Mov_r64_rm64, Code::Div_rm64),
        };
        let mut rng = Rng::new(7);
        let mut cases = Vec::new();
        // A load from the guard page after the data region.
        let mut c = Case::random(arch, &mut rng);
        c.regs[3] = Val::Data(harness::DATA_LEN as i64 + 8);
        c.instrs = vec![Instruction::with2(load, ax, MemoryOperand::with_base(bx)).unwrap()];
        cases.push(c);
        // A division by zero.
        let mut c = Case::random(arch, &mut rng);
        c.regs[1] = Val::Raw(0);
        c.instrs = vec![Instruction::with1(div, cx).unwrap()];
        cases.push(c);
        // An ordinary load.
        let mut c = Case::random(arch, &mut rng);
        c.regs[3] = Val::Data(0x100);
        c.instrs = vec![Instruction::with2(load, ax, MemoryOperand::with_base(bx)).unwrap()];
        cases.push(c);
        let ncases: Vec<native::NativeCase> = cases.iter().map(run::native_case).collect();
        let wrapper = native::wrapper(arch);
        let out = native::run(arch, &wrapper, &ncases);
        let mut guest = guest::Guest::new(arch);
        let g = guest_base(arch);
        let gcode: Vec<Vec<u8>> = cases
            .iter()
            .map(|c| encode(c, g, guest.exit()).unwrap())
            .collect();
        let n: Vec<harness::Outcome> = out.into_iter().map(|o| o.unwrap()).collect();
        let page = Norm::Rel(harness::DATA_OFF + harness::DATA_LEN as u64 + 8);
        assert_eq!(
            n[0].exc,
            Exc::Page {
                addr: page,
                write: false
            },
            "{}",
            arch.name()
        );
        assert_eq!(n[1].exc, Exc::Divide, "{}", arch.name());
        assert_eq!(n[2].exc, Exc::None, "{}", arch.name());
        let expect = u64::from_le_bytes(cases[2].data[0x100..0x108].try_into().unwrap())
            & harness::reg_mask(arch);
        assert_eq!(n[2].regs[0] & harness::reg_mask(arch), expect);
        for k in 0..3 {
            let gout = guest.run(&cases[k], &gcode[k]);
            let d = diff(&cases[k], &gcode[k], &n[k], &gout, false);
            assert!(d.is_empty(), "{} case {k} should agree: {d:?}", arch.name());
            // Every compared part of the state is noticed when it differs.
            let mut bad = gout.clone();
            bad.regs[2] ^= 1;
            assert!(!diff(&cases[k], &gcode[k], &n[k], &bad, false).is_empty());
            let mut bad = gout.clone();
            bad.xmm[1] ^= 1 << 100;
            assert!(!diff(&cases[k], &gcode[k], &n[k], &bad, false).is_empty());
            let mut bad = gout.clone();
            bad.data[0x123] ^= 0x10;
            assert!(!diff(&cases[k], &gcode[k], &n[k], &bad, false).is_empty());
            let mut bad = gout.clone();
            bad.stack[0x456] ^= 0x10;
            assert!(!diff(&cases[k], &gcode[k], &n[k], &bad, false).is_empty());
            let mut bad = gout.clone();
            bad.exc = Exc::GeneralProtection;
            assert!(!diff(&cases[k], &gcode[k], &n[k], &bad, false).is_empty());
        }
        let gout = guest.run(&cases[2], &gcode[2]);
        let mut bad = gout.clone();
        bad.flags ^= harness::CF;
        assert!(!diff(&cases[2], &gcode[2], &n[2], &bad, false).is_empty());

        // A case that kills the native child (exit system call) loses only itself.
        let mut exit = Case::random(arch, &mut rng);
        exit.regs[0] = Val::Raw(match arch {
            Arch::X86 => 1,   // exit (int 0x80)
            Arch::X64 => 231, // exit_group
        });
        exit.regs[3] = Val::Raw(0);
        exit.regs[7] = Val::Raw(0);
        exit.instrs = vec![match arch {
            Arch::X86 => Instruction::with1(Code::Int_imm8, 0x80u32).unwrap(),
            Arch::X64 => Instruction::with(Code::Syscall),
        }];
        let batch = [cases[2].clone(), exit, cases[2].clone()];
        let ncases: Vec<native::NativeCase> = batch.iter().map(run::native_case).collect();
        let out = native::run(arch, &wrapper, &ncases);
        assert!(out[0].is_ok() && out[2].is_ok(), "{}", arch.name());
        let err = out[1].as_ref().expect_err("the exit case has no outcome");
        assert!(err.contains("exited"), "{}: {err}", arch.name());
    }
}
