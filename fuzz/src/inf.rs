//! INF parser target: both layers (lexing, [Version], models for several targets, device matching,
//! install plans with Include resolution, DefaultInstall) on any bytes. Every outcome must be `Ok`
//! or an `InfError`. The generator builds structured INFs from meaningful pieces so that inputs
//! reach the semantic layer; the INF property test (`fuzz/tests/inf_property.rs`) uses it too.

use std::path::Path;

use loader::inf::{Arch, IncludedInf, Inf, InfFile, ParseOptions, TargetOs};

use crate::mutate::{reencode, Havoc};
use crate::rng::Rng;

/// Characters and tokens with a meaning in INF syntax.
pub const SPECIAL: &[&str] = &[
    "\"",
    "\"\"",
    ",",
    ";",
    "=",
    "\\",
    "\\\n",
    "%",
    "%%",
    "%12%",
    "%-1%",
    "%99999999999%",
    "%Str%",
    "%nope%",
    "[",
    "]",
    "\n",
    "\r\n",
    "\r",
    "\t",
    " ",
    "\0",
    "\x1a",
    "@",
    "0x",
    "0xFFFFFFFF",
    "-2147483649",
    "4294967296",
    "é",
    "\u{FFFD}",
    "\u{10FFFF}",
    "HKR",
    "HKLM",
    "..",
    "NTamd64",
    ".",
    "{",
    "}",
];

/// Section names, real and near-real.
pub const SECTIONS: &[&str] = &[
    "Version",
    "Manufacturer",
    "M",
    "M.NTamd64",
    "M.NTx86",
    "M.NT",
    "M.NTamd64.10.0...16299",
    "I",
    "I.NT",
    "I.NTamd64",
    "I.NT.HW",
    "I.NT.Services",
    "I.NTamd64.Services",
    "I.NT.Wdf",
    "S",
    "R",
    "D",
    "F",
    "W",
    "DefaultInstall",
    "DefaultInstall.Services",
    "DefaultInstall.NTamd64",
    "ClassInstall32",
    "DestinationDirs",
    "SourceDisksNames",
    "SourceDisksNames.amd64",
    "SourceDisksFiles",
    "SourceDisksFiles.x86",
    "Strings",
    "Strings.0407",
    "Strings.0409",
];

/// Keys of the sections above.
pub const KEYS: &[&str] = &[
    "Signature",
    "Class",
    "ClassGuid",
    "Provider",
    "DriverVer",
    "CatalogFile",
    "CatalogFile.NTamd64",
    "PnpLockdown",
    "%Mfg%",
    "%Dev%",
    "CopyFiles",
    "AddReg",
    "DelReg",
    "Include",
    "Needs",
    "AddService",
    "DelService",
    "Characteristics",
    "BusType",
    "ServiceType",
    "StartType",
    "ErrorControl",
    "ServiceBinary",
    "Dependencies",
    "DefaultDestDir",
    "KmdfService",
    "KmdfLibraryVersion",
    "1",
    "2",
    "a.sys",
    "b.sys",
    "Mfg",
    "Dev",
    "Str",
    "Frob",
];

/// Values, well-formed and broken.
pub const VALUES: &[&str] = &[
    "\"$Windows NT$\"",
    "$Chicago$",
    "Net",
    "System",
    "{4d36e97d-e325-11ce-bfc1-08002be10318}",
    "{bad}",
    "01/02/2020,1.2.3.4",
    "13/40/1970,x",
    "M",
    "M,NTamd64,NTx86.5.1,NT",
    "M,NTbogus",
    "I",
    "I,PCI\\VEN_1",
    "I,ROOT\\X,*PNP0501",
    "@a.sys",
    "F",
    "F,W",
    "R",
    "D",
    "S",
    "other.inf",
    "I.NT",
    "Svc,2,S",
    "Svc,0x2,S,L,Application,Src",
    ",2",
    ",0",
    "1",
    "3",
    "0x84",
    "5",
    "99",
    "%12%\\a.sys",
    "%13%\\sub\\b.sys",
    "12",
    "13,sub",
    "-1,C:\\x",
    "16422",
    "\"Disk\",,,\\bin\\x64",
    "1,sub,1234",
    "a.sys,b.sys,,0x10",
    "HKR,,V,0x10001,7",
    "HKR,,V,0x10001,1,2,3,4",
    "HKR,,B,1,de,ad,zz",
    "HKR,Ndi\\params\\P,type,0,enum",
    "HKR,Ndi\\params\\P\\enum,\"0\",0,Zero",
    "HKR,Ndi\\params\\P,default,0,0",
    "HKR,,UpperFilters,0x10008,f",
    "HKLM,S,UpperFilters,0x18002,f",
    "HKR,,*IfType,0x10001,6",
    "HKXX,a,b",
    "HKR",
    "HKR,,,0x30001,01",
    "HKR,,N,0xB0001,01,02",
    "HKR,Sub",
    "HKR,,X,0x2000",
    "%Str%",
    "\"quoted, value; here\"",
    "a\"b\"c",
    "",
];

/// A random INF built from meaningful pieces, so that the semantic layer is reached.
pub fn structured(rng: &mut Rng) -> String {
    let mut out = String::new();
    if rng.chance(80) {
        out.push_str("[Version]\nSignature=\"$Windows NT$\"\n");
        if rng.chance(50) {
            out.push_str("Class=Net\n");
        }
    }
    for _ in 0..rng.below(14) {
        out.push('[');
        out.push_str(rng.pick(SECTIONS));
        out.push_str("]\n");
        for _ in 0..rng.below(6) {
            if rng.chance(85) {
                out.push_str(rng.pick(KEYS));
                out.push_str(" = ");
            }
            for i in 0..1 + rng.below(3) {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(rng.pick(VALUES));
                if rng.chance(5) {
                    out.push_str(rng.pick(SPECIAL));
                }
            }
            if rng.chance(10) {
                out.push_str(" ; comment");
            }
            out.push_str(if rng.chance(20) { "\r\n" } else { "\n" });
        }
    }
    out
}

/// An INF-aware mutation of `bytes`: deletions, syntax tokens, values and section headers
/// inserted, bit flips, truncation, duplicated chunks; then maybe re-encoded.
pub fn mutate(rng: &mut Rng, mut bytes: Vec<u8>) -> Vec<u8> {
    for _ in 0..1 + rng.below(8) {
        let len = bytes.len();
        match rng.below(8) {
            0 if len > 0 => {
                let at = rng.below(len);
                let n = rng.below((len - at).min(40) + 1);
                bytes.drain(at..at + n);
            }
            1 => {
                let at = rng.below(len + 1);
                let s = rng.pick(SPECIAL).as_bytes().to_vec();
                bytes.splice(at..at, s);
            }
            2 if len > 0 => {
                let at = rng.below(len);
                bytes[at] ^= 1 << rng.below(8);
            }
            3 if len > 0 => {
                let at = rng.below(len);
                bytes[at] = rng.next_u64() as u8;
            }
            4 => bytes.truncate(rng.below(len + 1)),
            5 if len > 1 => {
                // Duplicate a chunk (duplicate sections, repeated lines).
                let a = rng.below(len);
                let b = (a + rng.below(200)).min(len);
                let chunk = bytes[a..b].to_vec();
                let at = rng.below(len + 1);
                bytes.splice(at..at, chunk);
            }
            6 => {
                let at = rng.below(len + 1);
                let s = rng.pick(VALUES).as_bytes().to_vec();
                bytes.splice(at..at, s);
            }
            _ => {
                let at = rng.below(len + 1);
                let s = format!("\n[{}]\n", rng.pick(SECTIONS)).into_bytes();
                bytes.splice(at..at, s);
            }
        }
    }
    reencode(rng, bytes)
}

/// Random bytes sprinkled with INF syntax characters.
pub fn random_bytes(rng: &mut Rng) -> Vec<u8> {
    let len = rng.below(600);
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        if rng.chance(30) {
            out.extend_from_slice(rng.pick(SPECIAL).as_bytes());
        } else {
            out.push(rng.next_u64() as u8);
        }
    }
    out
}

/// How far an input got: sections, lines and models looked at, install plans built.
#[derive(Debug, Default, Clone, Copy)]
pub struct Reached {
    /// Sections and models exercised.
    pub work: usize,
    /// Install plans built.
    pub plans: usize,
}

/// Runs every entry point of both layers on `bytes` (`Include=` resolves to `include`); errors are
/// fine, panics are not.
pub fn exercise(bytes: &[u8], include: &[u8]) -> Reached {
    let (mut work, mut plans) = (0, 0);
    for locale in [0x0409u16, 0x0407] {
        let options = ParseOptions { locale };
        let Ok(file) = InfFile::parse_with("fuzz.inf", bytes, &options) else {
            continue;
        };
        work += file.sections().len();
        for s in file.sections() {
            for l in &s.lines {
                let _ = (
                    l.key_text(),
                    l.text(0),
                    l.text(7),
                    l.to_owned().fields().len(),
                );
            }
        }
        let Ok(inf) = Inf::from_file(file) else {
            continue;
        };
        let _ = inf.version().catalog_file(Arch::Amd64);
        let _ = inf.manufacturers();
        let resolver = |name: &str| {
            Some(IncludedInf {
                name: format!("inc/{name}"),
                bytes: include.to_vec(),
            })
        };
        let targets = [
            TargetOs::windows10(Arch::Amd64),
            TargetOs::windows_xp(Arch::X86),
            TargetOs {
                build: 14393,
                product_type: 3,
                suite_mask: 0x10,
                ..TargetOs::windows10(Arch::Amd64)
            },
        ];
        for target in targets {
            if let Ok(models) = inf.models(&target) {
                for m in models.iter().take(4) {
                    work += 1;
                    if let Ok(plan) = inf.plan_for_model(m, &target, &resolver) {
                        plans += 1;
                        let _ = plan.to_string();
                    }
                }
            }
            let _ = inf.match_device(&["PCI\\VEN_1", "ROOT\\X"], &["*PNP0501"], &target);
            let _ = inf.plan_for_hardware_id("ROOT\\X", &target, &resolver);
            if let Ok(plan) = inf.plan_default_install(&target, &resolver) {
                plans += 1;
                let _ = plan.to_string();
            }
        }
    }
    Reached { work, plans }
}

/// The repository's INFs (test drivers and loader fixtures).
pub fn seeds() -> Vec<Vec<u8>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut out = Vec::new();
    for sub in ["tests/drivers", "loader/tests/inf"] {
        let Ok(entries) = std::fs::read_dir(root.join(sub)) else {
            continue;
        };
        let mut paths: Vec<_> = entries.flatten().map(|e| e.path()).collect();
        paths.sort();
        for p in paths {
            if p.extension().is_some_and(|x| x.eq_ignore_ascii_case("inf")) {
                if let Ok(b) = std::fs::read(&p) {
                    out.push(b);
                }
            }
        }
    }
    out
}

const HAVOC: Havoc = Havoc {
    dict: &[
        b"[", b"]", b"=", b",", b"\"", b";", b"%", b"\\\n", b"\r\n", b"\0",
    ],
    max_len: 64 * 1024,
    hot: 0,
};

/// A new input: random bytes, a structured INF (maybe mutated), or `parent` mutated (INF-aware or
/// byte-level, maybe spliced with `other`).
pub fn next_input(rng: &mut Rng, parent: &[u8], other: &[u8]) -> Vec<u8> {
    match rng.below(5) {
        0 => random_bytes(rng),
        1 => structured(rng).into_bytes(),
        2 => {
            let s = structured(rng).into_bytes();
            mutate(rng, s)
        }
        3 => HAVOC.mutate(rng, parent, other),
        _ => mutate(rng, parent.to_vec()),
    }
}

/// The target: `data` as an INF that includes itself. The outcome class is how far it got.
pub fn run(data: &[u8]) -> String {
    let r = exercise(data, data);
    // Words, not numbers: the runner folds numbers out of outcome classes.
    let scale = |n: usize| "+".repeat((usize::BITS - n.leading_zeros()) as usize);
    format!("work {} plans {}", scale(r.work), scale(r.plans.min(15)))
}
