//! The driver-manager commands of `ica-load`: install from an INF, devices, list, remove, reg.

use std::ffi::OsString;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use loader::inf::Arch;
use loader::install::devices::{self, Bus};
use loader::install::installer::{record_start, CopyOutcome};
use loader::install::manage::{self, start_type_name};
use loader::install::package::Stored;
use loader::install::start::HostSetup;
use loader::install::{self, start, InstallError, InstallOptions, Root};
use loader::isolate::{IsolatedStack, IsolationConfig, Recovery, Stack};
use loader::registry::reg_file::hkey_to_nt;

mod nic;

/// Subcommand names: an INF given first is `install INF` unless it names one of these.
const SUBCOMMANDS: &[&str] = &[
    "run",
    "imports",
    "coverage",
    "install",
    "devices",
    "list",
    "remove",
    "reg",
    "help",
    loader::isolate::SUBCOMMAND,
];

/// Global options that take a value (skipped when looking for the first positional argument).
const VALUE_OPTIONS: &[&str] = &["--root", "--log", "--arch", "--ifname"];

/// `ica-load [opts] netcard.inf ...` -> `ica-load install [opts] netcard.inf ...`.
pub fn rewrite_args(mut args: Vec<OsString>) -> Vec<OsString> {
    let mut i = 1;
    while i < args.len() {
        let a = args[i].to_string_lossy().into_owned();
        if a == "--" {
            break;
        }
        if a.starts_with('-') {
            if VALUE_OPTIONS.contains(&a.as_str()) {
                i += 1;
            }
            i += 1;
            continue;
        }
        if a.to_ascii_lowercase().ends_with(".inf") && !SUBCOMMANDS.contains(&a.as_str()) {
            args.insert(1, OsString::from("install"));
        }
        break;
    }
    args
}

/// Parses `--arch`.
pub fn parse_arch(s: &str) -> Result<Arch, String> {
    match s.to_ascii_lowercase().as_str() {
        "x64" | "amd64" | "x86_64" | "x86-64" => Ok(Arch::Amd64),
        "x86" | "i386" | "i686" | "x86-32" => Ok(Arch::X86),
        other => Err(format!("unknown architecture `{other}` (x64 or x86)")),
    }
}

fn arch_label(a: Arch) -> &'static str {
    match a {
        Arch::X86 => "x86",
        _ => "x64",
    }
}

/// Blocks until SIGINT or SIGTERM.
/// Blocks SIGINT and SIGTERM for every thread created from now on (and this one), so that they
/// wait for [`wait_for_stop_signal`] instead of killing the process, and returns their set.
fn block_stop_signals() -> libc::sigset_t {
    // SAFETY: plain libc signal-mask calls on a locally owned sigset_t.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}

/// Waits until one of the signals in `set` (blocked by [`block_stop_signals`]) arrives.
fn wait_for_stop_signal(set: libc::sigset_t) {
    let mut sig = 0;
    // SAFETY: waits on a valid signal set.
    unsafe { libc::sigwait(&set, &mut sig) };
}

/// How driver hosts are run: for a network adapter, and for any other stack.
pub struct Isolation {
    pub nic: IsolationConfig,
    pub stack: IsolationConfig,
}

/// Sets `stop` on SIGINT or SIGTERM (which are blocked for every thread from now on).
fn stop_on_signal(stop: Arc<AtomicBool>) {
    let signals = block_stop_signals();
    std::thread::spawn(move || {
        wait_for_stop_signal(signals);
        stop.store(true, Ordering::SeqCst);
    });
}

/// Prints what the driver hosts went through; `lost` names what a dead one loses.
fn print_recoveries(recoveries: &[Recovery], lost: &str) {
    for r in recoveries {
        let recover = r.recover.map_or("not restarted".to_string(), |d| {
            format!("restarted in {d:.2?}")
        });
        println!(
            "  recovery  {} (detected in {:.2?}, {recover}, {} {lost} lost)",
            r.cause, r.detect, r.lost
        );
    }
}

/// `ica-load install INF` (`verifier`: run the started drivers under the verifier; `isolation`:
/// run the drivers in confined driver hosts, None: in this process).
#[allow(clippy::too_many_arguments)]
pub fn install(
    root: &Root,
    inf: &Path,
    arch: Arch,
    dry_run: bool,
    keep_running: bool,
    verbose: bool,
    ifname: &str,
    verifier: bool,
    isolation: Option<Isolation>,
) -> Result<(), InstallError> {
    let opts = InstallOptions {
        arch,
        dry_run,
        pci: None,
    };
    let prepared = install::prepare(root, inf, &opts)?;
    for w in &prepared.plan.warnings {
        eprintln!("{w}");
    }
    let report = install::install(root, prepared, dry_run)?;
    let p = &report.prepared;
    let verb = if dry_run {
        "Dry run: would install"
    } else {
        "Installing"
    };
    println!(
        "{verb} {} ({}) into {}",
        p.inf_name,
        arch_label(p.arch),
        root.dir.display()
    );
    match &p.binding {
        Some(b) => {
            let inst = report.instance_id.as_deref().unwrap_or("?");
            let what = match (b.device.installed, b.device.bus) {
                (true, _) => "installed device, driver replaced",
                (false, Bus::Pci) => "PCI device",
                (false, Bus::Root) => "new root-enumerated device",
            };
            println!("  device    {inst} ({what}): {}", b.model.description);
            println!(
                "            matched {}: {} (rank {:#06x}), section [{}]",
                b.matched_id,
                b.rank_text(),
                b.rank,
                p.plan.install_section
            );
        }
        None => println!(
            "  legacy    non-PnP driver, [{}]: services only, no device",
            p.plan.install_section
        ),
    }
    let stored = match report.stored {
        Some(Stored::Created) => "created",
        Some(Stored::AlreadyPresent) => "already in the store, hashes verified",
        None => "would be created",
    };
    println!(
        "  package   {} ({stored}; {} files)",
        p.package_dir.display(),
        p.files.len()
    );
    if dry_run || verbose {
        for f in &p.files {
            println!(
                "              {}  {} ({} bytes)",
                &f.sha256[..16],
                f.rel,
                f.size
            );
        }
    }
    for (c, outcome) in &report.copied {
        let how = match outcome {
            CopyOutcome::Copied => "copied   ",
            CopyOutcome::Replaced => "replaced ",
            CopyOutcome::Unchanged => "unchanged",
            CopyOutcome::KeptExisting => "kept     ",
            CopyOutcome::WouldCopy => "would copy",
        };
        println!("  {how} {} -> {} ({})", c.rel, c.inf_dest, c.dest.display());
    }
    let changed_keys = report
        .registry_changes
        .iter()
        .filter(|l| !l.starts_with(' '))
        .count();
    println!(
        "  registry  {changed_keys} keys {} in one transaction{}",
        if dry_run { "would change" } else { "changed" },
        if report.reinstalled {
            " (package was installed: rewritten in place)"
        } else {
            ""
        }
    );
    for line in &report.registry_changes {
        if dry_run || verbose || !line.starts_with(' ') {
            println!("    {line}");
        }
    }
    for s in &p.services {
        println!(
            "  service   {} ({}, start {}): ImagePath {}",
            s.name,
            if s.service_type == 1 {
                "kernel driver"
            } else {
                "driver"
            },
            start_type_name(Some(s.start_type)),
            s.image_path
        );
    }
    if dry_run {
        println!("Nothing was written (--dry-run).");
        return Ok(());
    }
    let store = root.open_registry()?;
    let mut say = |line: String| println!("  {line}");
    let setup = HostSetup {
        arch: p.arch,
        verifier,
    };
    let running = match (&p.binding, &report.instance_id) {
        (Some(_), Some(inst)) => {
            if let Some(why) = start::cannot_start(inst) {
                let state = format!("not started: {why}");
                println!("Installed. {inst}: {state}");
                record_start(&store, &p.package_name, &state)?;
                return Ok(());
            }
            // A Net-class device is an NDIS miniport: on its software model or its vfio-pci
            // function, or virtual if root-enumerated.
            let on_pci = start::model_for_instance(inst).is_some()
                || start::vfio_function_for_instance(inst).is_some();
            let virtual_nic = p.plan.net.is_some() && start::is_root_device(inst);
            if on_pci || virtual_nic {
                let cfg = isolation.map(|i| i.nic);
                let r = nic::run(root, &store, setup, inst, ifname, keep_running, cfg);
                let state = match &r {
                    Ok(()) => "started, then unloaded cleanly".to_string(),
                    Err(e) => format!("failed: {}", first_line(&e.to_string())),
                };
                record_start(&store, &p.package_name, &state)?;
                return r;
            }
            println!("Starting {inst}");
            match isolation {
                Some(i) => start::device_stack(root, &store, inst)
                    .map(|stack| Running::Isolated(Box::new((stack, i.stack)))),
                None => start::start_device(root, &store, setup, inst, &mut say)
                    .map(|r| Running::InProcess(Box::new(r))),
            }
        }
        _ => {
            let names: Vec<String> = p
                .services
                .iter()
                .filter(|s| matches!(s.service_type, 1 | 2))
                .map(|s| s.name.clone())
                .collect();
            if names.is_empty() {
                println!("Installed (no kernel service to start).");
                return Ok(());
            }
            println!("Starting service {}", names.join(", "));
            match isolation {
                Some(i) => start::services_stack(root, &store, &names)
                    .map(|stack| Running::Isolated(Box::new((stack, i.stack)))),
                None => start::start_services(root, &store, setup, &names, &mut say)
                    .map(|r| Running::InProcess(Box::new(r))),
            }
        }
    };
    let failed = |e: &dyn std::fmt::Display| {
        let state = format!("start failed: {}", first_line(&e.to_string()));
        let _ = record_start(&store, &p.package_name, &state);
        InstallError::Other(format!("installed, but the start failed: {e}"))
    };
    let running = match running {
        Ok(Running::Isolated(isolated)) => {
            let (stack, cfg) = *isolated;
            let (params, registry) = start::isolated_stack_params(&store, setup, stack)?;
            let host = IsolatedStack::start(params, registry, cfg).map_err(|e| failed(&e))?;
            for l in host.started() {
                say(l.clone());
            }
            say(format!(
                "(driver host pid {}, confined)",
                host.host_pid().unwrap_or_default()
            ));
            Started::Isolated(Box::new(host))
        }
        Ok(Running::InProcess(r)) => {
            for o in start::objects(&r.host) {
                say(o);
            }
            Started::InProcess(r)
        }
        Err(e) => return Err(failed(&e)),
    };
    println!("Started.");
    let stopped = match running {
        Started::InProcess(r) => {
            if keep_running {
                let signals = block_stop_signals();
                println!("Running; press Ctrl-C to unload.");
                wait_for_stop_signal(signals);
            }
            println!("Unloading");
            start::stop(*r, &mut |l| println!("  {l}"))
        }
        Started::Isolated(mut host) => {
            let mut kept = Ok(());
            if keep_running {
                // Signals are blocked before anyone is told to send one.
                let stop = Arc::new(AtomicBool::new(false));
                stop_on_signal(stop.clone());
                println!("Running; press Ctrl-C to unload.");
                kept = host.supervise_until(&|| stop.load(Ordering::SeqCst));
                print_recoveries(host.recoveries(), "requests");
            }
            println!("Unloading");
            kept.and_then(|()| host.stop())
                .map(|(lines, findings)| {
                    lines.iter().for_each(|l| println!("  {l}"));
                    findings
                })
                .map_err(|e| InstallError::Other(e.to_string()))
        }
    };
    let stopped = stopped.and_then(|findings| {
        if findings.is_empty() {
            Ok(())
        } else {
            Err(InstallError::Other(loader::host::findings_text(&findings)))
        }
    });
    match stopped {
        Ok(()) => {
            record_start(&store, &p.package_name, "started, then unloaded cleanly")?;
            println!(
                "Done: {} installed, started and unloaded cleanly.",
                p.inf_name
            );
            Ok(())
        }
        Err(e) => {
            let state = format!("unload failed: {}", first_line(&e.to_string()));
            let _ = record_start(&store, &p.package_name, &state);
            Err(InstallError::Other(format!(
                "installed and started, but unloading failed: {e}"
            )))
        }
    }
}

/// A stack to start: in this process (started already) or in a driver host of its own.
enum Running {
    InProcess(Box<start::Running>),
    Isolated(Box<(Stack, IsolationConfig)>),
}

/// A started stack.
enum Started {
    InProcess(Box<start::Running>),
    Isolated(Box<IsolatedStack>),
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or("")
}

/// `ica-load devices`.
pub fn devices(root: &Root) -> Result<(), InstallError> {
    let store = root.existing_registry()?;
    let installed = match &store {
        Some(s) => devices::installed_devices(s)?,
        None => Vec::new(),
    };
    let roots: Vec<_> = installed.iter().filter(|d| d.bus == Bus::Root).collect();
    println!("Root-enumerated devices ({} installed):", roots.len());
    for d in &roots {
        println!(
            "  {:<28} {:<24} service {:<14} {}",
            d.instance_id.as_deref().unwrap_or("?"),
            d.hardware_ids.first().map(String::as_str).unwrap_or("-"),
            d.service.as_deref().unwrap_or("-"),
            d.description
        );
    }
    println!("  (installing an INF whose models name a ROOT\\... hardware ID creates that device)");
    println!("Software device models (an INF for their IDs installs onto them, and they start):");
    for m in host_linux::models::catalog() {
        let d = devices::pci_device(&m);
        println!(
            "  {}  {}",
            d.instance_id.as_deref().unwrap_or("?"),
            devices::pci_class_name(m.class)
        );
        println!("    hardware IDs:   {}", d.hardware_ids.join("  "));
    }
    let pci = host_linux::pci::scan();
    if !Path::new(host_linux::pci::SYSFS_PCI_DEVICES).exists() {
        println!(
            "PCI devices: none ({} does not exist)",
            host_linux::pci::SYSFS_PCI_DEVICES
        );
        return Ok(());
    }
    println!(
        "PCI devices ({} in {}; a network controller bound to vfio-pci starts through VFIO):",
        pci.len(),
        host_linux::pci::SYSFS_PCI_DEVICES
    );
    for p in &pci {
        let d = devices::pci_device(p);
        let bound = installed
            .iter()
            .find(|i| i.instance_id == d.instance_id)
            .and_then(|i| i.service.clone());
        let vfio = if p.driver.as_deref() == Some(host_linux::vfio::VFIO_DRIVER) {
            " [vfio-pci]"
        } else {
            ""
        };
        println!(
            "  {}{vfio}{}",
            d.description,
            bound
                .map(|s| format!(" [installed: {s}]"))
                .unwrap_or_default()
        );
        println!("    hardware IDs:   {}", d.hardware_ids.join("  "));
        println!("    compatible IDs: {}", d.compatible_ids.join("  "));
    }
    Ok(())
}

/// `ica-load list`.
pub fn list(root: &Root) -> Result<(), InstallError> {
    let Some(store) = root.existing_registry()? else {
        println!("Nothing installed under {}.", root.dir.display());
        return Ok(());
    };
    let packages = manage::packages(&store)?;
    println!("Driver packages ({}):", packages.len());
    for p in &packages {
        println!(
            "  {}  [{} {}{}]",
            p.name,
            p.kind,
            p.arch,
            p.version
                .as_ref()
                .map(|v| format!(", version {v}"))
                .unwrap_or_default()
        );
        println!("    from {}", p.source_path);
        if !p.devices.is_empty() {
            println!("    devices: {}", p.devices.join(", "));
        }
        println!(
            "    state: installed, not running ({})",
            p.last_start.as_deref().unwrap_or("never started")
        );
    }
    let services = manage::services(&store)?;
    println!("Services ({}):", services.len());
    for s in &services {
        let owners: Vec<&str> = packages
            .iter()
            .filter(|p| p.services.iter().any(|x| x.eq_ignore_ascii_case(&s.name)))
            .map(|p| p.inf_name.as_str())
            .collect();
        println!(
            "  {:<16} start {:<7} {}  ({})",
            s.name,
            start_type_name(s.start),
            s.image_path.as_deref().unwrap_or("-"),
            if owners.is_empty() {
                "no package".to_string()
            } else {
                owners.join(", ")
            }
        );
    }
    let devs = manage::installed(&store)?;
    println!("Devices ({}):", devs.len());
    for d in &devs {
        println!(
            "  {:<28} {:<24} service {}{}{}",
            d.device.instance_id.as_deref().unwrap_or("?"),
            d.device
                .hardware_ids
                .first()
                .map(String::as_str)
                .unwrap_or("-"),
            d.device.service.as_deref().unwrap_or("-"),
            if d.upper_filters.is_empty() {
                String::new()
            } else {
                format!(", upper filters {}", d.upper_filters.join(","))
            },
            if d.lower_filters.is_empty() {
                String::new()
            } else {
                format!(", lower filters {}", d.lower_filters.join(","))
            },
        );
    }
    Ok(())
}

/// `ica-load remove NAME`.
pub fn remove(root: &Root, name: &str) -> Result<(), InstallError> {
    let r = manage::remove(root, name)?;
    if r.packages.is_empty() {
        println!(
            "Removed service {} (it belonged to no package).",
            r.services.join(", ")
        );
        return Ok(());
    }
    println!(
        "Removed {} in one registry transaction:",
        r.packages.join(", ")
    );
    for d in &r.devices {
        println!("  device      {d}");
    }
    for d in &r.driver_keys {
        println!("  driver key  {d}");
    }
    for s in &r.services {
        println!("  service     {s}");
    }
    for s in &r.kept_services {
        println!("  kept service {s} (another package uses it)");
    }
    for f in &r.files {
        println!("  file        {}", f.display());
    }
    for d in &r.store_dirs {
        println!("  package     {}", d.display());
    }
    Ok(())
}

/// The NT path of a key given as `HKLM\...`, `HKEY_LOCAL_MACHINE\...` or `\Registry\...`.
fn key_path(key: &str) -> Result<String, InstallError> {
    if key.starts_with('\\') {
        return Ok(key.to_string());
    }
    hkey_to_nt(key).ok_or_else(|| {
        InstallError::Other(format!(
            "unknown root key in `{key}` (HKEY_LOCAL_MACHINE, HKLM, HKEY_USERS, ... or \\Registry\\...)"
        ))
    })
}

/// `ica-load reg export FILE [KEY]`.
pub fn reg_export(root: &Root, file: &Path, key: Option<&str>) -> Result<(), InstallError> {
    let store = root.open_registry()?;
    let path = key_path(key.unwrap_or("HKEY_LOCAL_MACHINE"))?;
    store
        .export_reg_file(&path, file)
        .map_err(|e| InstallError::Other(e.to_string()))?;
    println!(
        "Exported {} to {}",
        install::short_key(&path),
        file.display()
    );
    Ok(())
}

/// `ica-load reg import FILE`.
pub fn reg_import(root: &Root, file: &Path) -> Result<(), InstallError> {
    let store = root.open_registry()?;
    let summary = store
        .import_reg_file(file)
        .map_err(|e| InstallError::Other(e.to_string()))?;
    println!(
        "Imported {} in one transaction: {} keys, {} values set, {} keys and {} values deleted",
        file.display(),
        summary.keys,
        summary.values,
        summary.deleted_keys,
        summary.deleted_values
    );
    Ok(())
}
