//! `ica-load`: the driver manager. Loads Windows kernel drivers into a sandboxed guest and runs them.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use clap::{Parser, Subcommand};
use loader::host::{read_image, DriverHost};
use loader::install::Root;
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
        /// This process is the confined driver host of a `run` (set by ica-load itself).
        #[arg(long, hide = true)]
        confined: bool,
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
        /// Run the network adapter's miniport in this process instead of a confined driver
        /// host of its own that is restarted when it fails (for debugging).
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
            confined,
        } => {
            if in_process || confined {
                run(driver.as_deref(), stats, confined, cli.verifier).map_err(|e| e.to_string())
            } else {
                run_isolated(&cli.log, driver.as_deref(), stats, cli.verifier)
            }
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
            let isolation = (!in_process).then(|| isolation(&cli.log));
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

/// Driver hosts run this very program (the hidden `driver-host` subcommand) with the same log
/// filter.
fn isolation(log: &str) -> loader::isolate::IsolationConfig {
    let program = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("/proc/self/exe"));
    let mut cfg = loader::isolate::IsolationConfig::new(program);
    cfg.args = vec!["--log".into(), log.into()];
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

/// Writes the bundled driver to a temporary file so it loads like any other.
fn bundled_driver() -> Result<PathBuf, HostError> {
    let dir = std::env::temp_dir().join(format!("ica-load-{}", std::process::id()));
    let path = dir.join(DEFAULT_DRIVER_NAME);
    std::fs::create_dir_all(&dir)
        .and_then(|()| std::fs::write(&path, DEFAULT_DRIVER))
        .map_err(|e| loader::LoadError {
            file: path.display().to_string(),
            problem: format!("cannot write: {e}"),
        })?;
    Ok(path)
}

/// `run` in a confined driver host of its own: this program again with `--confined`, its output
/// going where ours goes. A driver failure is reported by the driver host; a death without a
/// report (a signal) by us.
fn run_isolated(
    log: &str,
    driver: Option<&Path>,
    stats: bool,
    verifier: bool,
) -> Result<(), String> {
    let cfg = isolation(log);
    let mut cmd = std::process::Command::new(&cfg.program);
    cmd.args(&cfg.args).arg("run").arg("--confined");
    if let Some(d) = driver {
        // Bad images are rejected here, before any process is started.
        read_image(d).map_err(|e| e.to_string())?;
        cmd.arg(d);
    }
    if stats {
        cmd.arg("--stats");
    }
    if verifier {
        cmd.arg("--verifier");
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot start a driver host: {e}"))?;
    let pid = child.id();
    let status = child
        .wait()
        .map_err(|e| format!("cannot wait for the driver host: {e}"))?;
    use std::os::unix::process::ExitStatusExt;
    match (status.success(), status.signal()) {
        (true, _) => Ok(()),
        (false, Some(sig)) => Err(format!(
            "the driver host (pid {pid}) was killed by signal {sig} without a report"
        )),
        (false, None) => Err(format!(
            "the driver host (pid {pid}) failed ({status}); its report is above"
        )),
    }
}

fn run(
    driver: Option<&Path>,
    stats: bool,
    confined: bool,
    verifier: bool,
) -> Result<(), HostError> {
    let (path, demo) = match driver {
        Some(p) => (p.to_path_buf(), false),
        None => (bundled_driver()?, true),
    };
    let started = Instant::now();
    let file = loader::host::DriverFile::read(&path)?;
    let pe = read_image(&path)?;
    let mut host = DriverHost::new(pe.arch)?.with_verifier(verifier);
    if confined {
        loader::isolate::confine().map_err(|e| loader::LoadError {
            file: path.display().to_string(),
            problem: format!("cannot confine the driver host: {e}"),
        })?;
    }
    let driver = host.load_driver_file(&file)?;
    println!(
        "{}: DriverEntry returned STATUS_SUCCESS ({} driver)",
        path.display(),
        pe.arch.name()
    );
    print_objects(&host);
    let ext = host
        .k
        .read_ptr(driver.object + host.k.layout.driver_object_driver_extension)
        .unwrap_or(0);
    let add_device = host
        .k
        .read_ptr(ext + host.k.layout.driver_extension_add_device)
        .unwrap_or(0);
    if add_device != 0 {
        let pdo = host.build_stack(&driver.service, &[&driver])?;
        println!("PnP: AddDevice and IRP_MN_START_DEVICE succeeded on a root-enumerated device");
        print_objects(&host);
        let query = host.remove_stack(pdo)?;
        println!(
            "PnP: device removed (IRP_MN_QUERY_REMOVE_DEVICE: {})",
            status::name(query)
        );
    }
    if demo {
        demo_requests(&mut host)?;
    }
    host.unload_driver(&driver)?;
    println!(
        "DriverUnload done; pool still allocated by the driver: {} bytes",
        host.k.pool.bytes_owned_by(&image_name(&path))
    );
    if stats {
        print_stats(&host, started.elapsed());
    }
    let findings = host.k.verifier.take_findings();
    if !findings.is_empty() {
        return Err(HostError::Findings(findings));
    }
    if verifier {
        println!("verifier: no findings");
    }
    Ok(())
}

fn image_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn print_objects(host: &DriverHost) {
    let mut devices: Vec<_> = host
        .k
        .io
        .devices
        .values()
        .filter_map(|d| d.name.clone().map(|n| (n, d.driver)))
        .collect();
    devices.sort();
    for (name, driver) in devices {
        let owner = host
            .k
            .io
            .driver(driver)
            .map(|d| d.image.clone())
            .unwrap_or_default();
        println!("  device {name} ({owner})");
    }
    for (link, target) in host.k.io.symbolic_links() {
        println!("  symbolic link {link} -> {target}");
    }
}

/// The bundled demo: talk to ioctl.sys the way a Win32 program would.
fn demo_requests(host: &mut DriverHost) -> Result<(), HostError> {
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
    let passed = u32::from_le_bytes(selftest.output[0..4].try_into().unwrap_or_default());
    let failed = u32::from_le_bytes(selftest.output[4..8].try_into().unwrap_or_default());
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

fn print_stats(host: &DriverHost, wall: std::time::Duration) {
    let s = &host.k.m.stats;
    let hs = &host.k.stats;
    let hit_rate = if s.block_lookups > 0 {
        100.0 * s.block_cache_hits as f64 / s.block_lookups as f64
    } else {
        0.0
    };
    println!("statistics:");
    println!("  guest instructions executed: {}", s.instructions);
    println!(
        "  blocks translated: {}, block cache hit rate {hit_rate:.1}%",
        s.blocks_translated
    );
    println!(
        "  import calls served: {}, host -> guest calls: {}",
        hs.host_calls, hs.guest_calls
    );
    println!(
        "  wall time {:.3} ms: guest code {:.3} ms, host services {:.3} ms",
        wall.as_secs_f64() * 1e3,
        hs.guest_nanos as f64 / 1e6,
        hs.host_nanos as f64 / 1e6
    );
}
