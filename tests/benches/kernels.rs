//! Translator benchmark: driver-like integer kernels (`benches/kernels/kernels.c`) run natively,
//! under qemu-user and under this translator in the same run, with slowdown ratios vs native.
//!
//!     cargo bench -p ica-tests --bench kernels
//!
//! Needs gcc (with gcc-multilib for `-m32`), mingw-w64 and qemu-user (`qemu-x86_64`, `qemu-i386`).
//! See `benches/README.md` for what the kernels model and how to read the table.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use dbt::{Arch, CallConv};
use loader::DriverHost;

/// The kernels, by the name `native` takes; the PE export is `kernel_<name>`.
const KERNELS: [&str; 3] = ["checksum", "mix", "ring"];
/// Native time per measured run that the iteration count is calibrated to.
const NATIVE_TARGET: Duration = Duration::from_millis(30);
/// Runs per runner; the best (shortest) one counts.
const NATIVE_RUNS: usize = 3;
const QEMU_RUNS: usize = 3;
const DBT_RUNS: usize = 2;
/// A translator run longer than this is not repeated (keeps the whole run to a few minutes even
/// when the translator is very slow).
const DBT_REPEAT_LIMIT: Duration = Duration::from_secs(8);

/// One measured run: the kernel's checksum and the time it took.
#[derive(Clone, Copy)]
struct Run {
    checksum: u32,
    time: Duration,
}

/// The best of several runs, or the first checksum that disagreed with the others.
fn best(runs: &[Run]) -> Result<Run, String> {
    let first = runs[0];
    if let Some(bad) = runs.iter().find(|r| r.checksum != first.checksum) {
        return Err(format!(
            "runs of the same runner disagree: {:#010x} vs {:#010x}",
            first.checksum, bad.checksum
        ));
    }
    Ok(runs.iter().copied().min_by_key(|r| r.time).unwrap_or(first))
}

fn qemu_for(arch: Arch) -> &'static str {
    match arch {
        Arch::X86 => "qemu-i386",
        Arch::X64 => "qemu-x86_64",
    }
}

/// Runs the ELF runner (`native KERNEL ITERATIONS`, maybe under qemu) once.
fn run_elf(qemu: Option<&str>, elf: &Path, kernel: &str, iterations: u32) -> Result<Run, String> {
    let mut cmd = match qemu {
        Some(q) => {
            let mut c = Command::new(q);
            c.arg(elf);
            c
        }
        None => Command::new(elf),
    };
    let shown = format!(
        "{}{} {kernel} {iterations}",
        qemu.map(|q| format!("{q} ")).unwrap_or_default(),
        elf.display()
    );
    let out = cmd
        .arg(kernel)
        .arg(iterations.to_string())
        .output()
        .map_err(|e| format!("cannot run {shown}: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(format!(
            "{shown} failed ({}): {}{}",
            out.status,
            stdout.trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let mut fields = stdout.split_whitespace().map(str::parse::<u64>);
    match (fields.next(), fields.next()) {
        (Some(Ok(checksum)), Some(Ok(ns))) => Ok(Run {
            checksum: checksum as u32,
            time: Duration::from_nanos(ns),
        }),
        _ => Err(format!(
            "{shown}: expected \"<checksum> <nanoseconds>\", got {stdout:?}"
        )),
    }
}

fn run_elf_best(
    qemu: Option<&str>,
    elf: &Path,
    kernel: &str,
    iterations: u32,
    runs: usize,
) -> Result<Run, String> {
    let runs = (0..runs)
        .map(|_| run_elf(qemu, elf, kernel, iterations))
        .collect::<Result<Vec<_>, _>>()?;
    best(&runs)
}

/// An iteration count that makes the native run take about [`NATIVE_TARGET`].
fn calibrate(elf: &Path, kernel: &str) -> Result<u32, String> {
    let mut iterations: u32 = 100;
    loop {
        let run = run_elf_best(None, elf, kernel, iterations, 2)?;
        if run.time >= Duration::from_millis(4) || iterations >= 1 << 28 {
            let scale = NATIVE_TARGET.as_secs_f64() / run.time.as_secs_f64().max(1e-9);
            return Ok(((iterations as f64 * scale).round() as u32).max(1));
        }
        iterations *= 8;
    }
}

/// The translator side: one driver host per architecture with the kernels image mapped.
struct Translator {
    host: DriverHost,
    base: u64,
    exports: Vec<(String, u32)>,
}

impl Translator {
    fn new(arch: Arch, image: &Path) -> Result<Translator, String> {
        let mut host = DriverHost::new(arch).map_err(|e| e.to_string())?;
        let loaded = host.load_image(image).map_err(|e| e.to_string())?;
        let exports = loader::host::read_image(image)
            .map_err(|e| e.to_string())?
            .exports;
        Ok(Translator {
            host,
            base: loaded.base,
            exports,
        })
    }

    /// Runs `kernel_<kernel>(iterations)` once: the run and the guest instructions it executed.
    fn run(&mut self, kernel: &str, iterations: u32) -> Result<(Run, u64), String> {
        let name = format!("kernel_{kernel}");
        let rva = self
            .exports
            .iter()
            .find(|(n, _)| *n == name || n.strip_prefix('_') == Some(name.as_str()))
            .map(|&(_, rva)| rva)
            .ok_or_else(|| format!("kernels.sys does not export {name}"))?;
        let k = &mut self.host.k;
        let before = k.m.stats.instructions;
        let start = Instant::now();
        let result = k.call_guest_conv(
            self.base + rva as u64,
            CallConv::Cdecl,
            &[iterations as u64],
        );
        let time = start.elapsed();
        let instructions = k.m.stats.instructions - before;
        match result {
            Ok(value) => Ok((
                Run {
                    checksum: value as u32,
                    time,
                },
                instructions,
            )),
            Err(e) => Err(format!(
                "{name} faulted under the translator:\n{}",
                self.host.k.report(&e)
            )),
        }
    }
}

/// `target/` of the workspace (the parent of cargo's per-target temporary directory).
fn target_dir() -> PathBuf {
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    tmp.parent().unwrap_or(tmp).to_path_buf()
}

/// First line of `tool --version`, or an error naming the missing tool.
fn tool_version(tool: &str, package: &str) -> Result<String, String> {
    let missing = || format!("{tool} not found; install it with: apt-get install {package}");
    let out = Command::new(tool)
        .arg("--version")
        .output()
        .map_err(|_| missing())?;
    if !out.status.success() {
        return Err(missing());
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .unwrap_or("")
        .to_string())
}

fn build_kernels(out: &Path) -> Result<String, String> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/kernels/build.sh");
    let status = Command::new("sh")
        .arg(&script)
        .arg(out)
        .status()
        .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
    if !status.success() {
        return Err(format!(
            "building the kernels failed ({status}); {} says which tool is missing",
            script.display()
        ));
    }
    std::fs::read_to_string(out.join("compilers.txt"))
        .map_err(|e| format!("{}: {e}", out.join("compilers.txt").display()))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn bench() -> Result<Vec<String>, String> {
    if cfg!(debug_assertions) {
        println!(
            "WARNING: this benchmark was built without optimisations (debug profile); the \
             translator numbers are meaningless. Run `cargo bench -p ica-tests --bench kernels`."
        );
    }
    let out = target_dir().join("bench-kernels");
    let compilers = build_kernels(&out)?;
    let qemu = [
        tool_version("qemu-x86_64", "qemu-user")?,
        tool_version("qemu-i386", "qemu-user")?,
    ];
    print!("{compilers}");
    println!("qemu-user:   {} (and qemu-i386)", qemu[0]);
    println!(
        "translator:  dbt interpreter ({} profile); iterations calibrated to ~{} ms native; \
         best of {NATIVE_RUNS} native, {QEMU_RUNS} qemu, {DBT_RUNS} dbt runs",
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        },
        NATIVE_TARGET.as_millis()
    );
    println!();
    println!(
        "{:<4} {:<8} {:>9} {:>10} {:>9} {:>10} {:>9} {:>10} {:>12} {:>8} {:>8}",
        "arch",
        "kernel",
        "iters",
        "native_ms",
        "qemu_ms",
        "dbt_ms",
        "qemu/nat",
        "dbt/nat",
        "guest_insns",
        "ns/insn",
        "checksum"
    );
    let mut problems = Vec::new();
    for arch in [Arch::X86, Arch::X64] {
        let dir = out.join(arch.name());
        let elf = dir.join("native");
        let mut dbt = Translator::new(arch, &dir.join("kernels.sys"))?;
        for kernel in KERNELS {
            let iterations = calibrate(&elf, kernel)?;
            let native = run_elf_best(None, &elf, kernel, iterations, NATIVE_RUNS)?;
            let qemu = run_elf_best(Some(qemu_for(arch)), &elf, kernel, iterations, QEMU_RUNS)?;
            let mut runs = Vec::new();
            let mut instructions = 0;
            for _ in 0..DBT_RUNS {
                let (run, n) = dbt.run(kernel, iterations)?;
                runs.push(run);
                instructions = n;
                if run.time > DBT_REPEAT_LIMIT {
                    break;
                }
            }
            let translated =
                best(&runs).map_err(|e| format!("{} {kernel}: translator {e}", arch.name()))?;
            let mut note = String::new();
            for (runner, run) in [("qemu", qemu), ("dbt", translated)] {
                if run.checksum != native.checksum {
                    let problem = format!(
                        "CHECKSUM MISMATCH {} {kernel} ({iterations} iterations): native {:#010x}, {runner} {:#010x}",
                        arch.name(),
                        native.checksum,
                        run.checksum
                    );
                    note = format!("  <- {runner} MISMATCH {:#010x}", run.checksum);
                    problems.push(problem);
                }
            }
            println!(
                "{:<4} {:<8} {:>9} {:>10.1} {:>9.1} {:>10.1} {:>9.2}x {:>9.2}x {:>12} {:>8.2} {:#010x}{note}",
                arch.name(),
                kernel,
                iterations,
                ms(native.time),
                ms(qemu.time),
                ms(translated.time),
                qemu.time.as_secs_f64() / native.time.as_secs_f64(),
                translated.time.as_secs_f64() / native.time.as_secs_f64(),
                instructions,
                translated.time.as_secs_f64() * 1e9 / instructions.max(1) as f64,
                native.checksum,
            );
        }
    }
    Ok(problems)
}

fn main() -> ExitCode {
    let start = Instant::now();
    match bench() {
        Ok(problems) if problems.is_empty() => {
            println!("\ntotal {:.1} s", start.elapsed().as_secs_f64());
            ExitCode::SUCCESS
        }
        Ok(problems) => {
            eprintln!();
            for p in &problems {
                eprintln!("error: {p}");
            }
            eprintln!(
                "error: the runners computed different results: a translator (or qemu) bug, \
                 the timings above do not count"
            );
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
