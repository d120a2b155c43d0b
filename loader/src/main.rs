//! `ica-load`: the driver manager. Loads Windows kernel drivers into a sandboxed guest and runs them.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use loader::host::{read_image, DeviceIo, DriverFile, DriverHost};
use loader::install::{start, Root};
use loader::isolate::{HostRegistry, IsolatedStack, IsolationConfig, Stack, StartParams};
use loader::registry::RegistryStore;
use loader::HostError;
use ntoskrnl::status;

mod cli;

/// The bundled default: the ioctl test driver (x64), run against the host-side I/O API.
const DEFAULT_DRIVER: &[u8] = include_bytes!("../../tests/drivers/bin/x64/ioctl.sys");
const DEFAULT_DRIVER_NAME: &str = "ioctl.sys";

#[derive(Parser)]
#[command(
    name = "ica-load",
    version,
    about = "Run Windows kernel drivers (.sys, x86-32 and x64) in a sandboxed guest"
)]
struct Cli {
    /// Log level filter (tracing syntax, e.g. `info`, `ica::call=trace`).
    #[arg(long, global = true, default_value = "info")]
    log: String,
    /// Where the registry, driver store and installed files live (default:
    /// $XDG_DATA_HOME/ica, else ~/.local/share/ica).
    #[arg(long, global = true, value_name = "DIR")]
    root: Option<PathBuf>,
    /// Run the drivers under the verifier (Driver Verifier's checks: IRQL, spin locks, special
    /// pool, I/O, leaks at unload); what it finds is reported and fails the command (`run`,
    /// `install`).
    #[arg(long, global = true)]
    verifier: bool,
    /// CPU time (seconds) a confined driver host may use in its life; one that uses it up is
    /// reported ("CPU limit exceeded") and restarted like any failed one. 0: no limit. Default:
    /// none for network adapters (they run as long as the link), 300 for other stacks and `run`.
    #[arg(long, global = true, value_name = "SECONDS")]
    cpu_limit: Option<u64>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Load a driver, run DriverEntry, list what it created, build and tear down a PnP stack if it
    /// has AddDevice, run DriverUnload. Without a file: the bundled ioctl.sys demo.
    Run {
        /// The driver (.sys).
        driver: Option<PathBuf>,
        /// Print execution statistics.
        #[arg(long)]
        stats: bool,
        /// Run the driver in this process instead of a confined driver host (for debugging).
        #[arg(long)]
        in_process: bool,
    },
    /// List a driver's imports and whether each is implemented or bound to a trap.
    Imports {
        /// The driver (.sys).
        driver: PathBuf,
    },
    /// API coverage: exports implemented per module, from the export tables themselves.
    Coverage {
        /// A reference list of functions real drivers import (TSV with module, function and
        /// priority columns, e.g. shared/reference/interfaces.tsv), to count against.
        #[arg(long)]
        reference: Option<PathBuf>,
        /// List the reference functions still missing.
        #[arg(long)]
        missing: bool,
    },
    /// Install a driver from its INF (also: `ica-load DRIVER.inf`): driver store with hashes,
    /// registry, bind to the best-matching device, start, then unload.
    Install {
        /// The INF.
        inf: PathBuf,
        /// Architecture of the driver to install: x64 (default) or x86.
        #[arg(long, default_value = "x64", value_parser = cli::parse_arch)]
        arch: loader::inf::Arch,
        /// Show what would be copied and written; write nothing.
        #[arg(long)]
        dry_run: bool,
        /// After starting, keep the drivers running until Ctrl-C, then unload.
        #[arg(long)]
        keep_running: bool,
        /// Show every registry value written and every package file.
        #[arg(long, short)]
        verbose: bool,
        /// Network adapters: the Linux interface to create (its wire is `<IFNAME>w`).
        #[arg(long, default_value = "ica0")]
        ifname: String,
        /// Run the drivers in this process instead of a confined driver host of their own that
        /// is restarted when it fails (for debugging).
        #[arg(long)]
        in_process: bool,
    },
    /// The devices this host offers drivers, with their hardware and compatible IDs.
    Devices,
    /// Installed driver packages, services and devices.
    List,
    /// Remove an installed package (by INF, package or service name) with its devices, driver
    /// keys, services and files.
    Remove {
        /// INF name (`function.inf`), package name, or service name.
        name: String,
    },
    /// Export or import the registry as a .reg file.
    Reg {
        #[command(subcommand)]
        command: RegCommand,
    },
    /// A driver host (started by ica-load itself, with its channel on fd 3).
    #[command(name = "driver-host", hide = true)]
    DriverHost,
}

#[derive(Subcommand)]
enum RegCommand {
    /// Write KEY (default HKEY_LOCAL_MACHINE) and everything below it to FILE (REGEDIT5, UTF-16).
    Export {
        file: PathBuf,
        /// `HKLM\System\...`, `HKEY_LOCAL_MACHINE\...` or `\Registry\Machine\...`.
        key: Option<String>,
    },
    /// Import a .reg file in one transaction (all or nothing).
    Import { file: PathBuf },
}

fn main() -> ExitCode {
    let cli = Cli::parse_from(cli::rewrite_args(std::env::args_os().collect()));
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&cli.log).unwrap_or_else(|_| "info".into()),
        )
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal())
        .without_time()
        .with_writer(std::io::stderr)
        .init();
    let root = cli.root.map(Root::new).unwrap_or_else(Root::default_root);
    let result = match cli.command {
        Command::Run {
            driver,
            stats,
            in_process,
        } => {
            let isolation = (!in_process).then(|| isolation(&cli.log, cli.cpu_limit, false));
            run(driver.as_deref(), stats, cli.verifier, isolation)
        }
        Command::Imports { driver } => imports(&driver).map_err(|e| e.to_string()),
        Command::Coverage { reference, missing } => {
            coverage(reference.as_deref(), missing).map_err(|e| e.to_string())
        }
        Command::Install {
            inf,
            arch,
            dry_run,
            keep_running,
            verbose,
            ifname,
            in_process,
        } => {
            let isolation = (!in_process).then(|| cli::Isolation {
                nic: isolation(&cli.log, cli.cpu_limit, true),
                stack: isolation(&cli.log, cli.cpu_limit, false),
            });
            cli::install(
                &root,
                &inf,
                arch,
                dry_run,
                keep_running,
                verbose,
                &ifname,
                cli.verifier,
                isolation,
            )
            .map_err(|e| e.to_string())
        }
        Command::Devices => cli::devices(&root).map_err(|e| e.to_string()),
        Command::List => cli::list(&root).map_err(|e| e.to_string()),
        Command::Remove { name } => cli::remove(&root, &name).map_err(|e| e.to_string()),
        Command::Reg { command } => match command {
            RegCommand::Export { file, key } => cli::reg_export(&root, &file, key.as_deref()),
            RegCommand::Import { file } => cli::reg_import(&root, &file),
        }
        .map_err(|e| e.to_string()),
        Command::DriverHost => std::process::exit(loader::isolate::driver_host_main()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// CPU time a driver host of a stack other than a network adapter may use by default: far more
/// than starting, serving and stopping a device takes, and a bound on a driver that loops
/// where the watchdog does not look.
const DEFAULT_STACK_CPU_LIMIT: Duration = Duration::from_secs(300);

/// Driver hosts run this very program (the hidden `driver-host` subcommand) with the same log
/// filter; `cpu_limit` seconds of CPU each (0: unlimited; None: the default for a network adapter
/// (`nic`) or another stack).
fn isolation(log: &str, cpu_limit: Option<u64>, nic: bool) -> IsolationConfig {
    let program = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("/proc/self/exe"));
    let mut cfg = IsolationConfig::new(program);
    cfg.args = vec!["--log".into(), log.into()];
    cfg.cpu_limit = match cpu_limit {
        Some(0) => None,
        Some(s) => Some(Duration::from_secs(s)),
        None => (!nic).then_some(DEFAULT_STACK_CPU_LIMIT),
    };
    cfg
}

fn imports(path: &Path) -> Result<(), HostError> {
    let pe = read_image(path)?;
    let host = DriverHost::new(pe.arch)?;
    let mut missing = 0;
    println!(
        "{} ({}): {} imports",
        path.display(),
        pe.arch.name(),
        pe.imports.len()
    );
    for import in &pe.imports {
        let name = import.name.to_string();
        let implemented = host.k.find_export(&import.module, &name).is_some();
        if !implemented {
            missing += 1;
        }
        println!(
            "  {:<13} {}!{}",
            if implemented { "implemented" } else { "TRAP" },
            import.module,
            name
        );
    }
    println!(
        "{} implemented, {missing} bound to traps",
        pe.imports.len() - missing
    );
    Ok(())
}

fn coverage(reference: Option<&Path>, missing: bool) -> Result<(), HostError> {
    let rows = match reference {
        Some(path) => {
            let file = path.display().to_string();
            let text = std::fs::read_to_string(path).map_err(|e| loader::LoadError {
                file: file.clone(),
                problem: format!("cannot read: {e}"),
            })?;
            Some(
                loader::coverage::parse_reference(&text)
                    .map_err(|problem| loader::LoadError { file, problem })?,
            )
        }
        None => None,
    };
    print!(
        "{}",
        loader::coverage::report(&loader::host::modules(), rows.as_deref(), missing)
    );
    Ok(())
}

/// `run`: DriverEntry, a root device stack built and removed if the driver has AddDevice, the
/// bundled demo's requests, DriverUnload; in a confined driver host of its own (`isolation`),
/// talked to through the manager, or in this process. A one-shot run is not restarted.
fn run(
    driver: Option<&Path>,
    stats: bool,
    verifier: bool,
    isolation: Option<IsolationConfig>,
) -> Result<(), String> {
    let (file, demo) = match driver {
        Some(p) => (DriverFile::read(p).map_err(|e| e.to_string())?, false),
        None => (
            DriverFile {
                name: DEFAULT_DRIVER_NAME.into(),
                bytes: DEFAULT_DRIVER.to_vec(),
            },
            true,
        ),
    };
    // Bad images are rejected here, before any driver host is started; the error names the file
    // as given.
    let arch = file
        .parse()
        .map_err(|e| match driver {
            Some(p) => format!("{}: {}", p.display(), e.problem),
            None => e.to_string(),
        })?
        .arch;
    let stack = Stack::Run(file);
    let mut say = |line: String| println!("{line}");
    let e = |e: HostError| e.to_string();
    let i = |e: loader::install::InstallError| e.to_string();
    let (stats, findings) = match isolation {
        None => {
            let started = Instant::now();
            let host = DriverHost::new(arch).map_err(e)?.with_verifier(verifier);
            let mut running = start::start_stack(host, &stack, &mut say).map_err(i)?;
            if demo {
                demo_requests(&mut running.host).map_err(e)?;
            }
            let stats = stats.then(|| loader::host::stats_lines(&running.host, started.elapsed()));
            (stats, start::stop(running, &mut say).map_err(i)?)
        }
        Some(mut cfg) => {
            cfg.max_restarts = 0;
            let store = RegistryStore::in_memory().map_err(|e| e.to_string())?;
            let keys = start::stack_keys(&store, &stack).map_err(i)?;
            let params = StartParams {
                arch,
                stack,
                registry: Vec::new(),
                watchdog: ntoskrnl::Watchdog::default(),
                verifier,
                files: Vec::new(),
            };
            let mut host = IsolatedStack::start(params, HostRegistry::new(store, keys), cfg)?;
            host.started().iter().cloned().for_each(&mut say);
            say(format!(
                "(driver host pid {}, confined)",
                host.host_pid().unwrap_or_default()
            ));
            if demo {
                demo_requests(&mut host).map_err(e)?;
            }
            let stats = if stats {
                Some(host.stats().map_err(e)?)
            } else {
                None
            };
            let (lines, findings) = host.stop().map_err(e)?;
            lines.into_iter().for_each(&mut say);
            (stats, findings)
        }
    };
    if let Some(lines) = stats {
        println!("statistics:");
        for l in lines {
            println!("  {l}");
        }
    }
    if !findings.is_empty() {
        return Err(loader::host::findings_text(&findings));
    }
    if verifier {
        println!("verifier: no findings");
    }
    Ok(())
}

/// The bundled demo: talk to ioctl.sys the way a Win32 program would.
fn demo_requests(host: &mut dyn DeviceIo) -> Result<(), HostError> {
    const IOCTL_ICA_REVERSE: u32 = 0x0022_2000;
    const IOCTL_ICA_SELFTEST: u32 = 0x0022_2010;
    let handle = match host.open("\\\\.\\IcaIoctl")? {
        Ok(h) => h,
        Err(s) => {
            println!("open \\\\.\\IcaIoctl failed: {}", status::name(s));
            return Ok(());
        }
    };
    let reply = host.ioctl(handle, IOCTL_ICA_REVERSE, b"hello, driver", &[0; 13])?;
    println!(
        "IOCTL_ICA_REVERSE(\"hello, driver\") -> {} \"{}\"",
        status::name(reply.status),
        String::from_utf8_lossy(&reply.output)
    );
    let selftest = host.ioctl(handle, IOCTL_ICA_SELFTEST, &[], &[0; 128])?;
    let word = |at: usize| {
        selftest
            .output
            .get(at..at + 4)
            .and_then(|b| b.try_into().ok())
            .map_or(0, u32::from_le_bytes)
    };
    let (passed, failed) = (word(0), word(4));
    println!("IOCTL_ICA_SELFTEST -> {passed} in-driver checks passed, {failed} failed");
    host.write(handle, b"stored in the driver")?;
    let back = host.read(handle, 64)?;
    println!(
        "WriteFile then ReadFile -> \"{}\"",
        String::from_utf8_lossy(&back.output)
    );
    host.close(handle)?;
    Ok(())
}
