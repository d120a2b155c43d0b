//! Property test: the INF parser never panics. Arbitrary bytes, mutated real INFs and randomly
//! generated structured INFs (the generator of the `inf` fuzz target) go through both layers
//! (lexing, [Version], models for several targets, device matching, install plans with Include
//! resolution, DefaultInstall); every outcome must be `Ok` or an `InfError`. Bounded in time:
//! `ICA_INF_FUZZ_SECS` (default 3) and `ICA_INF_FUZZ_SEED` to reproduce a run.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

use ica_fuzz::inf::{exercise, next_input, seeds, structured, Reached};
use ica_fuzz::rng::Rng;

#[test]
fn inf_parser_never_panics() {
    let secs: u64 = std::env::var("ICA_INF_FUZZ_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let seed: u64 = std::env::var("ICA_INF_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x1CA_1AF5);
    let mut rng = Rng::new(seed);
    let seeds = seeds();
    assert!(seeds.len() >= 6, "seed INFs not found");
    let deadline = Instant::now() + Duration::from_secs(secs);
    let (mut cases, mut work, mut plans) = (0u64, 0usize, 0usize);
    while Instant::now() < deadline {
        let parent = &seeds[rng.below(seeds.len())];
        let other = &seeds[rng.below(seeds.len())];
        let input = next_input(&mut rng, parent, other);
        let include = if rng.chance(50) {
            structured(&mut rng).into_bytes()
        } else {
            input.clone()
        };
        match catch_unwind(AssertUnwindSafe(|| exercise(&input, &include))) {
            Ok(Reached { work: w, plans: p }) => {
                work += w;
                plans += p;
            }
            Err(_) => panic!(
                "INF parser panicked (seed {seed}, case {cases}) on input:\n{:?}\nwith include:\n{:?}",
                String::from_utf8_lossy(&input),
                String::from_utf8_lossy(&include)
            ),
        }
        cases += 1;
    }
    println!("{cases} fuzz cases, {work} sections/models exercised, {plans} install plans built, no panic");
    assert!(cases > 100, "only {cases} cases ran");
    assert!(
        work > 0 && plans > 0,
        "the generator no longer reaches the semantic layer"
    );
}
