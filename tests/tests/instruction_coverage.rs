//! Every instruction in the committed test drivers' code is one the translator executes: decode
//! each code section linearly (the drivers are compiler output without data in code) and ask the
//! executor's own dispatch table.

use ica_tests::{driver_path, ARCHES};
use iced_x86::{Decoder, DecoderOptions, Mnemonic};

const DRIVERS: [&str; 6] = [
    "ioctl",
    "function",
    "filter",
    "unknownimport",
    "nullderef",
    "norelocs",
];

#[test]
fn every_instruction_of_the_test_drivers_is_supported() {
    let mut unsupported = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for arch in ARCHES {
        for name in DRIVERS {
            let path = driver_path(arch, name);
            let pe = loader::host::read_image(&path).unwrap_or_else(|e| panic!("{e}"));
            let bitness = if arch == dbt::Arch::X64 { 64 } else { 32 };
            for section in pe.sections.iter().filter(|s| s.is_code()) {
                let mut decoder = Decoder::with_ip(
                    bitness,
                    &section.data,
                    section.rva as u64,
                    DecoderOptions::NONE,
                );
                for instr in &mut decoder {
                    if instr.is_invalid() {
                        // Alignment padding past the last function decodes as garbage only at the end.
                        continue;
                    }
                    if instr.mnemonic() == Mnemonic::Int3 {
                        continue;
                    }
                    seen.insert(format!("{:?}", instr.mnemonic()));
                    if !dbt::is_supported(&instr) {
                        unsupported.push(format!(
                            "{}/{name}.sys+{:#x}: {instr}",
                            arch.name(),
                            instr.ip()
                        ));
                    }
                }
            }
        }
    }
    assert!(seen.len() > 40, "decoded a real instruction mix: {seen:?}");
    assert!(
        unsupported.is_empty(),
        "unsupported instructions:\n{}",
        unsupported.join("\n")
    );
}
