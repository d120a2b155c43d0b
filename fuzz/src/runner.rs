//! The bounded mutational runner: replays a target's corpus, then mutates pool inputs until the
//! time is up. Each input runs under a watchdog (an input still running after the timeout is a
//! hang) and `catch_unwind` (a panic is a crash); the input about to run is kept in a file so that
//! one that kills the process (abort, stack overflow) is not lost either. Inputs with a new outcome
//! class join the pool. Deterministic for a given seed, apart from where the time runs out.

use std::collections::HashSet;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::rng::Rng;
use crate::Target;

/// Exit status of a worker that found a crash (a panic).
pub const EXIT_CRASH: i32 = 1;
/// Exit status of a worker that found a hang.
pub const EXIT_HANG: i32 = 3;
/// Most inputs kept in the pool (corpus included).
const POOL_CAP: usize = 2048;

/// How to run a target.
#[derive(Debug, Clone)]
pub struct Options {
    /// Time for the whole run (replaying the corpus always completes).
    pub secs: f64,
    /// Seed of the mutations.
    pub seed: u64,
    /// Time one input may take before it is a hang.
    pub timeout: Duration,
    /// The corpus directory (one input per file).
    pub corpus: PathBuf,
    /// Where findings are written.
    pub artifacts: PathBuf,
}

/// What a run did.
#[derive(Debug, Clone)]
pub struct Report {
    /// Inputs run (corpus replay included).
    pub execs: u64,
    /// Corpus inputs.
    pub corpus: usize,
    /// Distinct outcome classes seen.
    pub classes: usize,
    /// Inputs whose outcome class says the guest faulted (reported cleanly).
    pub faults: u64,
    /// Wall time.
    pub elapsed: Duration,
}

/// A crash found by [`fuzz`].
#[derive(Debug, Clone)]
pub struct Crash {
    /// The saved input.
    pub artifact: PathBuf,
}

/// The corpus inputs, in file name order.
pub fn load_corpus(dir: &Path) -> std::io::Result<Vec<Vec<u8>>> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    paths.retain(|p| p.is_file());
    paths.sort();
    paths.iter().map(std::fs::read).collect()
}

/// FNV-1a of the input: the artifact and corpus file names.
pub fn digest(bytes: &[u8]) -> String {
    let h = bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    });
    format!("{h:016x}")
}

/// Where the input being run is kept while it runs.
pub fn current_path(artifacts: &Path) -> PathBuf {
    artifacts.join(".current")
}

/// Copies the input in `artifacts/.current` to `artifacts/KIND-DIGEST` and returns that path.
pub fn save_current(artifacts: &Path, kind: &str) -> std::io::Result<PathBuf> {
    let bytes = std::fs::read(current_path(artifacts))?;
    let path = artifacts.join(format!("{kind}-{}", digest(&bytes)));
    std::fs::write(&path, &bytes)?;
    Ok(path)
}

/// An outcome class with numbers (offsets, lengths, line numbers) and quoted input text folded,
/// so that classes stay few.
fn class(label: &str) -> String {
    let mut out = String::new();
    let mut in_number = false;
    let (mut in_quote, mut escaped) = (false, false);
    for c in label.chars().take(160) {
        if in_quote {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => in_quote = false,
                _ => {}
            }
            continue;
        }
        if c == '"' {
            in_quote = true;
            out.push_str("\"…\"");
            continue;
        }
        if c.is_ascii_digit() && !in_number && !out.ends_with(|p: char| p.is_alphanumeric()) {
            in_number = true;
            out.push('#');
        } else if in_number && (c.is_ascii_alphanumeric() || c == '_') {
            continue;
        } else {
            in_number = false;
            out.push(c);
        }
    }
    out
}

/// A thread that ends the process when one input runs longer than `timeout`, saving the input as
/// a hang. `started` holds the start of the running input in milliseconds since `epoch` plus one
/// (0: nothing running).
fn watchdog(started: Arc<AtomicU64>, epoch: Instant, timeout: Duration, artifacts: PathBuf) {
    std::thread::spawn(move || loop {
        std::thread::sleep(Duration::from_millis(50));
        let at = started.load(Ordering::SeqCst);
        if at == 0 {
            continue;
        }
        let running = epoch
            .elapsed()
            .saturating_sub(Duration::from_millis(at - 1));
        if running > timeout {
            match save_current(&artifacts, "hang") {
                Ok(path) => eprintln!(
                    "HANG: an input ran for more than {timeout:?}; saved as {}",
                    path.display()
                ),
                Err(e) => {
                    eprintln!("HANG: an input ran for more than {timeout:?} (not saved: {e})")
                }
            }
            std::process::exit(EXIT_HANG);
        }
    });
}

/// Runs `target` as `options` say, in this process; a hang ends the process ([`EXIT_HANG`]).
pub fn fuzz(target: &Target, options: &Options) -> Result<Report, Crash> {
    let corpus = load_corpus(&options.corpus)
        .unwrap_or_else(|e| panic!("cannot read the corpus {}: {e}", options.corpus.display()));
    assert!(
        !corpus.is_empty(),
        "the corpus {} is empty",
        options.corpus.display()
    );
    std::fs::create_dir_all(&options.artifacts)
        .unwrap_or_else(|e| panic!("cannot create {}: {e}", options.artifacts.display()));
    let current = File::create(current_path(&options.artifacts))
        .unwrap_or_else(|e| panic!("cannot create the current-input file: {e}"));
    let epoch = Instant::now();
    let started = Arc::new(AtomicU64::new(0));
    watchdog(
        started.clone(),
        epoch,
        options.timeout,
        options.artifacts.clone(),
    );

    let deadline = epoch + Duration::from_secs_f64(options.secs);
    let mut rng = Rng::new(options.seed);
    let mut pool = corpus.clone();
    let mut classes = HashSet::new();
    let (mut execs, mut faults) = (0u64, 0u64);
    let mut replay = corpus.into_iter();
    let corpus_len = pool.len();
    loop {
        let input = match replay.next() {
            Some(input) => input,
            None if Instant::now() >= deadline => break,
            None => {
                let parent = &pool[rng.below(pool.len())];
                let other = &pool[rng.below(pool.len())];
                (target.next_input)(&mut rng, parent, other)
            }
        };
        current
            .set_len(0)
            .and_then(|()| current.write_all_at(&input, 0))
            .unwrap_or_else(|e| panic!("cannot write the current-input file: {e}"));
        started.store(epoch.elapsed().as_millis() as u64 + 1, Ordering::SeqCst);
        let outcome = catch_unwind(AssertUnwindSafe(|| (target.run)(&input)));
        started.store(0, Ordering::SeqCst);
        execs += 1;
        let label = match outcome {
            Ok(label) => label,
            Err(_) => {
                let artifact = save_current(&options.artifacts, "crash")
                    .unwrap_or_else(|e| panic!("cannot save the crash: {e}"));
                return Err(Crash { artifact });
            }
        };
        if label.starts_with("fault") {
            faults += 1;
        }
        if classes.insert(class(&label)) && execs as usize > corpus_len {
            if pool.len() < POOL_CAP {
                pool.push(input);
            } else {
                let i = corpus_len + rng.below(POOL_CAP - corpus_len);
                pool[i] = input;
            }
        }
    }
    Ok(Report {
        execs,
        corpus: corpus_len,
        classes: classes.len(),
        faults,
        elapsed: epoch.elapsed(),
    })
}

#[cfg(test)]
mod tests {
    use super::class;

    #[test]
    fn classes_fold_numbers_but_not_names() {
        assert_eq!(
            class("truncated: e_lfanew points to 0x3c, past 64 bytes"),
            "truncated: e_lfanew points to #, past # bytes"
        );
        assert_eq!(class("fuzz.inf:12: bad"), "fuzz.inf:#: bad");
        assert_eq!(class("hex(7) in utf16"), "hex(#) in utf16");
        assert_eq!(
            class(r#"error: unknown value data "x\"y" at 3"#),
            r#"error: unknown value data "…" at #"#
        );
    }
}
