//! `ica-fuzz`: runs the fuzz targets for a bounded time over their committed corpus (CI runs
//! `ica-fuzz run`), reproduces findings, and writes the seed inputs of a corpus.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Duration;

use clap::{Parser, Subcommand};
use ica_fuzz::runner::{self, Options, EXIT_CRASH, EXIT_HANG};
use ica_fuzz::{target, Target, TARGETS};

#[derive(Parser)]
#[command(about = "Fuzz targets of ICA: pe, inf, reg, ioctl")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(clap::Args, Clone)]
struct RunArgs {
    /// Seconds per target (the corpus is always replayed whole).
    #[arg(long, default_value_t = 25.0)]
    secs: f64,
    /// Seed of the mutations.
    #[arg(long, default_value_t = 0x1CA_F022)]
    seed: u64,
    /// Milliseconds one input may run before it is a hang.
    #[arg(long, default_value_t = 10_000)]
    timeout_ms: u64,
}

#[derive(Subcommand)]
enum Cmd {
    /// Fuzz each target (default: all) in a worker process; exit 1 on any crash or hang.
    Run {
        /// Targets.
        targets: Vec<String>,
        #[command(flatten)]
        args: RunArgs,
    },
    /// One target in this process (what `run` starts).
    #[command(hide = true)]
    Worker {
        target: String,
        #[command(flatten)]
        args: RunArgs,
    },
    /// Run inputs once each and print their outcome class (a crash panics with its message).
    Repro { target: String, files: Vec<PathBuf> },
    /// Write a target's seed inputs into its corpus directory.
    Seed { targets: Vec<String> },
}

fn dir(kind: &str, t: &Target) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(kind)
        .join(t.name)
}

fn options(t: &Target, a: &RunArgs) -> Options {
    Options {
        secs: a.secs,
        seed: a.seed,
        timeout: Duration::from_millis(a.timeout_ms),
        corpus: dir("corpus", t),
        artifacts: dir("artifacts", t),
    }
}

fn targets(names: &[String]) -> Result<Vec<&'static Target>, String> {
    if names.is_empty() {
        return Ok(TARGETS.iter().collect());
    }
    names
        .iter()
        .map(|n| target(n).ok_or_else(|| format!("no target {n:?} (pe, inf, reg, ioctl)")))
        .collect()
}

/// How to replay a saved input; a small one is printed too (hex), so that a CI log is enough.
fn repro_hint(t: &Target, path: &Path) -> String {
    let mut hint = format!(
        "reproduce with: cargo run -p ica-fuzz -- repro {} {}",
        t.name,
        path.display()
    );
    if let Ok(bytes) = std::fs::read(path) {
        if bytes.len() <= 4096 {
            let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            hint.push_str(&format!(
                "\n{} bytes (hex; `xxd -r -p` writes them back):\n{hex}",
                bytes.len()
            ));
        }
    }
    hint
}

/// Runs each target in a child process, so that an input that kills the process is caught too.
fn run(ts: &[&Target], args: &RunArgs) -> Result<bool, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find myself: {e}"))?;
    let mut clean = true;
    for t in ts {
        let status = Command::new(&exe)
            .args(["worker", t.name, "--secs", &args.secs.to_string()])
            .args(["--seed", &args.seed.to_string()])
            .args(["--timeout-ms", &args.timeout_ms.to_string()])
            .status()
            .map_err(|e| format!("cannot start the {} worker: {e}", t.name))?;
        match status.code() {
            Some(0) => {}
            Some(EXIT_CRASH | EXIT_HANG) => clean = false,
            _ => {
                clean = false;
                let artifacts = dir("artifacts", t);
                match runner::save_current(&artifacts, "crash") {
                    Ok(path) => eprintln!(
                        "CRASH in {}: the worker died ({status}); input saved as {}; {}",
                        t.name,
                        path.display(),
                        repro_hint(t, &path)
                    ),
                    Err(e) => eprintln!(
                        "CRASH in {}: the worker died ({status}) (input not saved: {e})",
                        t.name
                    ),
                }
            }
        }
    }
    Ok(clean)
}

fn worker(t: &Target, args: &RunArgs) -> i32 {
    let o = options(t, args);
    match runner::fuzz(t, &o) {
        Ok(r) => {
            let secs = r.elapsed.as_secs_f64();
            println!(
                "{}: {} execs in {secs:.1} s ({:.0}/s), corpus {}, {} outcome classes, {} clean guest faults; no crash, no hang",
                t.name,
                r.execs,
                r.execs as f64 / secs,
                r.corpus,
                r.classes,
                r.faults
            );
            0
        }
        Err(c) => {
            eprintln!(
                "CRASH in {}: input saved as {}; {}",
                t.name,
                c.artifact.display(),
                repro_hint(t, &c.artifact)
            );
            EXIT_CRASH
        }
    }
}

fn seed(ts: &[&Target]) -> Result<(), String> {
    for t in ts {
        let corpus = dir("corpus", t);
        std::fs::create_dir_all(&corpus).map_err(|e| format!("{}: {e}", corpus.display()))?;
        let seeds = (t.seeds)();
        for s in &seeds {
            let path = corpus.join(runner::digest(s));
            std::fs::write(&path, s).map_err(|e| format!("{}: {e}", path.display()))?;
        }
        println!(
            "{}: {} seeds written to {}",
            t.name,
            seeds.len(),
            corpus.display()
        );
    }
    Ok(())
}

fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Cmd::Run {
            targets: names,
            args,
        } => targets(&names)
            .and_then(|ts| run(&ts, &args))
            .map(|clean| if clean { 0 } else { 1 }),
        Cmd::Worker { target: name, args } => targets(&[name]).map(|ts| worker(ts[0], &args)),
        Cmd::Repro {
            target: name,
            files,
        } => targets(&[name]).and_then(|ts| {
            for f in &files {
                let bytes = std::fs::read(f).map_err(|e| format!("{}: {e}", f.display()))?;
                println!("{}: {}", f.display(), (ts[0].run)(&bytes));
            }
            Ok(0)
        }),
        Cmd::Seed { targets: names } => targets(&names).and_then(|ts| seed(&ts)).map(|()| 0),
    };
    match result {
        Ok(code) => ExitCode::from(code as u8),
        Err(e) => {
            eprintln!("ica-fuzz: {e}");
            ExitCode::from(2)
        }
    }
}
