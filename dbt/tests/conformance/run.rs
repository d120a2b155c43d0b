//! Running specs differentially: generate cases, run them natively and under the translator, compare.

use std::sync::OnceLock;

use dbt::Arch;

use crate::guest::Guest;
use crate::harness::{diff, encode, native_base, Case, Exc, Rng};
use crate::native::{self, NState, NativeCase};
use crate::specs::Spec;

/// Default seed; override with `DBT_CONFORMANCE_SEED`.
pub const DEFAULT_SEED: u64 = 0x1ca_c0de_5eed;

/// Cases per native child.
const CHUNK: usize = 256;

/// Most failures printed per test.
const MAX_REPORTED: usize = 40;

/// Seed of this run (`DBT_CONFORMANCE_SEED`, decimal or 0x-hex).
pub fn seed() -> u64 {
    match std::env::var("DBT_CONFORMANCE_SEED") {
        Ok(s) => {
            let s = s.trim();
            let parsed = match s.strip_prefix("0x") {
                Some(h) => u64::from_str_radix(h, 16),
                None => s.parse(),
            };
            parsed.unwrap_or_else(|_| panic!("bad DBT_CONFORMANCE_SEED {s:?}"))
        }
        Err(_) => DEFAULT_SEED,
    }
}

/// Case multiplier of this run (`DBT_CONFORMANCE_SOAK`, default 1).
pub fn scale() -> usize {
    std::env::var("DBT_CONFORMANCE_SOAK")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(1)
        .max(1)
}

/// Whether undefined flags are compared too (`DBT_CONFORMANCE_STRICT=1`).
pub fn strict() -> bool {
    std::env::var("DBT_CONFORMANCE_STRICT").is_ok_and(|v| v != "0")
}

/// Only specs whose name contains this run (`DBT_CONFORMANCE_FILTER`).
fn filter() -> Option<String> {
    std::env::var("DBT_CONFORMANCE_FILTER").ok()
}

/// Per-spec seed: independent of which other specs run.
pub fn spec_seed(seed: u64, spec: &Spec) -> u64 {
    let mut h = seed ^ 0xcbf2_9ce4_8422_2325;
    for b in spec.name().bytes() {
        h = (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

fn wrapper(arch: Arch) -> &'static [u8] {
    static X86: OnceLock<Vec<u8>> = OnceLock::new();
    static X64: OnceLock<Vec<u8>> = OnceLock::new();
    match arch {
        Arch::X86 => X86.get_or_init(|| native::wrapper(Arch::X86)),
        Arch::X64 => X64.get_or_init(|| native::wrapper(Arch::X64)),
    }
}

/// A generated case with its origin.
struct Item<'a> {
    spec: &'a Spec,
    index: usize,
    case: Case,
}

/// Runs every spec of `specs` (all of one architecture); panics with a report on any difference.
pub fn run_specs(arch: Arch, what: &str, specs: &[&Spec]) {
    let seed = seed();
    let scale = scale();
    let strict = strict();
    let filter = filter();
    let mut items = Vec::new();
    let mut failures = Vec::new();
    let mut total = 0usize;
    let mut tally = Tally::default();
    let mut guest = Guest::new(arch);
    let started = std::time::Instant::now();
    let selected: Vec<&Spec> = specs
        .iter()
        .copied()
        .filter(|s| s.arch == arch)
        .filter(|s| {
            filter
                .as_ref()
                .is_none_or(|f| s.name().contains(f.as_str()))
        })
        .collect();
    for spec in selected {
        let mut rng = Rng::new(spec_seed(seed, spec));
        for index in 0..spec.count * scale {
            match spec.generate(&mut rng) {
                Ok(case) => items.push(Item { spec, index, case }),
                Err(e) => failures.push(format!(
                    "{} #{index}: cannot generate a case: {e}",
                    spec.name()
                )),
            }
            if items.len() >= CHUNK {
                total += items.len();
                run_chunk(arch, &mut guest, &items, strict, &mut failures, &mut tally);
                items.clear();
            }
        }
    }
    total += items.len();
    run_chunk(arch, &mut guest, &items, strict, &mut failures, &mut tally);
    eprintln!(
        "conformance {what} ({}): {total} cases in {:.2?}; native outcomes: {} completed, {} divide \
         errors, {} page faults, {} general protection, {} other",
        arch.name(),
        started.elapsed(),
        tally.none,
        tally.divide,
        tally.page,
        tally.gp,
        tally.other
    );
    if !failures.is_empty() {
        let n = failures.len();
        failures.truncate(MAX_REPORTED);
        panic!(
            "{n} of {total} {what} cases differ on {} (seed {seed:#x}: reproduce with \
             DBT_CONFORMANCE_SEED={seed:#x}, narrow with DBT_CONFORMANCE_FILTER=<spec name>):\n\n{}",
            arch.name(),
            failures.join("\n")
        );
    }
}

/// `case` prepared for native execution.
pub fn native_case(c: &Case) -> NativeCase<'_> {
    let arch = c.arch;
    let nb = native_base(arch);
    let code = encode(c, nb, native::epilogue(arch)).expect("encode native snippet");
    let mut init = NState::default();
    for (k, v) in c.regs.iter().enumerate() {
        init.regs[k] = v.at(arch, nb);
    }
    init.flags = c.flags;
    for (k, x) in c.xmm.iter().enumerate() {
        init.xmm[k] = [*x as u64, (*x >> 64) as u64];
    }
    NativeCase {
        code,
        init,
        data: &c.data,
        stack: &c.stack,
    }
}

/// Native outcomes by kind.
#[derive(Default)]
struct Tally {
    none: usize,
    divide: usize,
    page: usize,
    gp: usize,
    other: usize,
}

fn run_chunk(
    arch: Arch,
    guest: &mut Guest,
    items: &[Item],
    strict: bool,
    failures: &mut Vec<String>,
    tally: &mut Tally,
) {
    if items.is_empty() {
        return;
    }
    let mut ncases = Vec::with_capacity(items.len());
    let mut gcodes = Vec::with_capacity(items.len());
    for it in items {
        let c = &it.case;
        let gcode = encode(c, crate::harness::guest_base(arch), guest.exit())
            .expect("encode guest snippet");
        ncases.push(native_case(c));
        gcodes.push(gcode);
    }
    let natives = native::run(arch, wrapper(arch), &ncases);
    for ((it, native), gcode) in items.iter().zip(natives).zip(&gcodes) {
        let g = guest.run(&it.case, gcode);
        if let Ok(n) = &native {
            match n.exc {
                Exc::None => tally.none += 1,
                Exc::Divide => tally.divide += 1,
                Exc::Page { .. } => tally.page += 1,
                Exc::GeneralProtection => tally.gp += 1,
                Exc::InvalidOpcode | Exc::Other(_) => tally.other += 1,
            }
        }
        let problems = match native {
            Ok(n) => diff(&it.case, gcode, &n, &g, strict),
            Err(e) => vec![e],
        };
        if !problems.is_empty() {
            failures.push(report(it, &problems));
        }
    }
}

fn report(it: &Item, problems: &[String]) -> String {
    let c = &it.case;
    let arch = c.arch;
    let mut s = format!("--- {} #{}\n", it.spec.name(), it.index);
    s.push_str(&c.listing());
    s.push_str("  initial:");
    for (k, v) in c
        .regs
        .iter()
        .enumerate()
        .take(crate::harness::gpr_count(arch))
    {
        s.push_str(&format!(" {}={v:x?}", crate::harness::REG_NAMES[k]));
    }
    s.push_str(&format!(" flags={:#x}\n", c.flags));
    for p in problems {
        s.push_str(&format!("  {p}\n"));
    }
    s
}
