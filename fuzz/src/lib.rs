//! Fuzz targets for the PE loader, the INF parser, the `.reg` importer and the IOCTL path into a
//! test driver, and the bounded mutational runner that drives them in CI (`ica-fuzz`). The same
//! target functions are the libFuzzer targets of `fuzz/libfuzzer` (cargo-fuzz). A target takes
//! any bytes and returns the class of the outcome (for the runner's novelty check); a broken
//! invariant is a panic.

pub mod inf;
pub mod ioctl;
pub mod mutate;
pub mod pe;
pub mod reg;
pub mod rng;
pub mod runner;

use rng::Rng;

/// One fuzz target.
pub struct Target {
    /// Name (also the corpus and artifact directory names).
    pub name: &'static str,
    /// Runs one input; returns its outcome class.
    pub run: fn(&[u8]) -> String,
    /// A new input from a pool input (and another one to splice from).
    pub next_input: fn(&mut Rng, &[u8], &[u8]) -> Vec<u8>,
    /// The seeds the committed corpus started from (`ica-fuzz seed`).
    pub seeds: fn() -> Vec<Vec<u8>>,
}

/// Every target.
pub const TARGETS: [Target; 4] = [
    Target {
        name: "pe",
        run: pe::run,
        next_input: pe::next_input,
        seeds: pe::seeds,
    },
    Target {
        name: "inf",
        run: inf::run,
        next_input: inf::next_input,
        seeds: inf::seeds,
    },
    Target {
        name: "reg",
        run: reg::run,
        next_input: reg::next_input,
        seeds: reg::seeds,
    },
    Target {
        name: "ioctl",
        run: ioctl::run,
        next_input: ioctl::next_input,
        seeds: ioctl::seeds,
    },
];

/// The target called `name`.
pub fn target(name: &str) -> Option<&'static Target> {
    TARGETS.iter().find(|t| t.name == name)
}
