//! `ica-load INF` end to end, through the real binary, each test in its own `--root`: the driver
//! store with hashes, the registry keys, the device stack started and unloaded, `list`, `remove`,
//! reinstall, legacy services, a bad INF that installs nothing, `--dry-run`, `devices`, a driver
//! host killed while `--keep-running` and restarted.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use loader::install::package::{read_manifest, sha256_file};
use loader::registry::windows::{enum_key, service_key};
use loader::registry::RegistryStore;

fn drivers_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/drivers")
}

fn inf(name: &str) -> String {
    drivers_dir().join(name).display().to_string()
}

fn ica(root: &Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ica-load"))
        .arg("--root")
        .arg(root)
        .args(args)
        .output()
        .expect("ica-load runs");
    let r = (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(!r.2.contains("panicked"), "no panic: {}", r.2);
    r
}

fn ok(root: &Path, args: &[&str]) -> String {
    let (ok, out, err) = ica(root, args);
    assert!(ok, "ica-load {args:?} failed:\n{out}\n{err}");
    out
}

/// The package directories in the driver store.
fn packages(root: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(root.join("driverstore"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

fn check_package(dir: &Path, expect: &[&str]) {
    let manifest = read_manifest(dir).unwrap();
    for name in expect {
        assert!(
            manifest.iter().any(|(_, p)| p.ends_with(name)),
            "{name} in {manifest:?}"
        );
    }
    for (hash, rel) in &manifest {
        assert_eq!(&sha256_file(&dir.join(rel)).unwrap(), hash, "{rel}");
    }
    let inf_name = manifest[0].1.clone();
    let inf_hash = &manifest[0].0;
    let dir_name = dir.file_name().unwrap().to_string_lossy().into_owned();
    assert!(dir_name.starts_with(&format!("{inf_name}_")), "{dir_name}");
    assert!(
        dir_name.ends_with(&inf_hash[..16]),
        "{dir_name} vs {inf_hash}"
    );
}

fn pnp_pair(arch_args: &[&str], arch_dir: &str, store_arch: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let mut args = vec![inf("function.inf")];
    args.extend(arch_args.iter().map(|s| s.to_string()));
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = ok(root, &a);
    assert!(out.contains(r"ROOT\ICAFUNCTION\0000"), "{out}");
    assert!(
        out.contains("IcaFunction: AddDevice returned STATUS_SUCCESS"),
        "{out}"
    );
    assert!(out.contains("IRP_MN_START_DEVICE: STATUS_SUCCESS"), "{out}");
    assert!(out.contains("IcaFunction: DriverUnload done"), "{out}");
    assert!(out.contains("unloaded cleanly"), "{out}");

    let mut args = vec![inf("filter.inf")];
    args.extend(arch_args.iter().map(|s| s.to_string()));
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = ok(root, &a);
    assert!(out.contains("installed device, driver replaced"), "{out}");
    assert!(
        out.contains("IcaFunction: AddDevice returned STATUS_SUCCESS"),
        "{out}"
    );
    assert!(
        out.contains("IcaFilter: AddDevice returned STATUS_SUCCESS"),
        "{out}"
    );
    let fa = out.find("IcaFunction: AddDevice").unwrap();
    let fi = out.find("IcaFilter: AddDevice").unwrap();
    assert!(
        fa < fi,
        "function driver first, then the upper filter:\n{out}"
    );
    assert!(out.contains("IRP_MN_START_DEVICE: STATUS_SUCCESS"), "{out}");
    assert!(out.contains("IcaFilter: DriverUnload done"), "{out}");
    assert!(out.contains("unloaded cleanly"), "{out}");

    // Driver store: two packages with correct hashes.
    let pk = packages(root);
    assert_eq!(pk.len(), 2, "{pk:?}");
    for p in &pk {
        assert!(
            p.to_string_lossy().contains(&format!("_{store_arch}_")),
            "{p:?}"
        );
    }
    check_package(
        &pk[0],
        &["filter.inf", "function.inf", "filter.sys", "function.sys"],
    );
    check_package(&pk[1], &["function.inf", "function.sys"]);
    let installed = root.join("windows/system32/drivers/filter.sys");
    assert_eq!(
        sha256_file(&installed).unwrap(),
        sha256_file(&drivers_dir().join("bin").join(arch_dir).join("filter.sys")).unwrap()
    );

    // Registry.
    {
        let store = RegistryStore::open(root).unwrap();
        let inst = enum_key(r"ROOT\ICAFUNCTION\0000");
        assert!(store.key_exists(&service_key("IcaFunction")).unwrap());
        assert!(store.key_exists(&service_key("IcaFilter")).unwrap());
        let upper = store.value(&inst, "UpperFilters").unwrap().unwrap();
        assert_eq!(upper.as_multi_sz().unwrap(), ["IcaFilter"]);
        let svc = store.value(&inst, "Service").unwrap().unwrap();
        assert_eq!(svc.as_str().unwrap(), "IcaFunction");
        let driver = store
            .value(&inst, "Driver")
            .unwrap()
            .unwrap()
            .as_str()
            .unwrap();
        let dkey = loader::registry::windows::driver_key(&driver);
        assert!(store.value(&dkey, "DriverDesc").unwrap().is_some());
        assert_eq!(
            store
                .value(&dkey, "MatchingDeviceId")
                .unwrap()
                .unwrap()
                .as_str()
                .unwrap(),
            r"root\icafunction"
        );
        let hw = store.value(&inst, "HardwareID").unwrap().unwrap();
        assert_eq!(hw.as_multi_sz().unwrap(), [r"ROOT\IcaFunction"]);
    }

    // A second install of the same INF reuses the package and the device.
    let out = ok(root, &a);
    assert!(
        out.contains("already in the store, hashes verified"),
        "{out}"
    );
    assert!(out.contains("rewritten in place"), "{out}");
    assert!(out.contains(r"ROOT\ICAFUNCTION\0000"), "{out}");
    assert!(!out.contains(r"ROOT\ICAFUNCTION\0001"), "{out}");
    assert_eq!(packages(root).len(), 2);

    let list = ok(root, &["list"]);
    assert!(
        list.contains("IcaFunction") && list.contains("IcaFilter"),
        "{list}"
    );
    assert!(list.contains(r"ROOT\ICAFUNCTION\0000"), "{list}");
    assert!(list.contains("upper filters IcaFilter"), "{list}");
    assert!(
        list.contains("function.inf_") && list.contains("filter.inf_"),
        "{list}"
    );

    // Remove both: everything goes.
    let out = ok(root, &["remove", "filter.inf"]);
    assert!(out.contains(r"ROOT\ICAFUNCTION\0000"), "{out}");
    ok(root, &["remove", "IcaFunction"]);
    assert!(packages(root).is_empty(), "{:?}", packages(root));
    assert!(!root.join("windows/system32/drivers/function.sys").exists());
    assert!(!root.join("windows/system32/drivers/filter.sys").exists());
    let store = RegistryStore::open(root).unwrap();
    assert!(!store.key_exists(&service_key("IcaFunction")).unwrap());
    assert!(!store.key_exists(&service_key("IcaFilter")).unwrap());
    assert!(!store
        .key_exists(&enum_key(r"ROOT\ICAFUNCTION\0000"))
        .unwrap());
    drop(store);
    let list = ok(root, &["list"]);
    assert!(list.contains("Driver packages (0)"), "{list}");
    let (okr, _, err) = ica(root, &["remove", "IcaFunction"]);
    assert!(!okr && err.contains("IcaFunction"), "{err}");
}

#[test]
fn function_and_filter_x64() {
    pnp_pair(&[], "x64", "amd64");
}

#[test]
fn function_and_filter_x86() {
    pnp_pair(&["--arch", "x86"], "x86", "x86");
}

#[test]
fn install_subcommand_form() {
    let tmp = tempfile::tempdir().unwrap();
    let out = ok(
        tmp.path(),
        &["install", "--arch", "x64", &inf("function.inf")],
    );
    assert!(out.contains("unloaded cleanly"), "{out}");
}

#[test]
fn legacy_ioctl_runs_driver_entry() {
    for arch in ["x64", "x86"] {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        let out = ok(root, &[&inf("ioctl.inf"), "--arch", arch]);
        assert!(out.contains("legacy"), "{out}");
        assert!(out.contains("IcaIoctl: "), "{out}");
        assert!(out.contains("DriverEntry returned STATUS_SUCCESS"), "{out}");
        assert!(out.contains(r"device \Device\IcaIoctl"), "{out}");
        assert!(out.contains("IcaIoctl: DriverUnload done"), "{out}");
        let store = RegistryStore::open(root).unwrap();
        let image = store
            .value(&service_key("IcaIoctl"), "ImagePath")
            .unwrap()
            .unwrap();
        assert_eq!(
            image.as_str().unwrap(),
            r"\SystemRoot\System32\drivers\ioctl.sys"
        );
        assert!(root.join("windows/system32/drivers/ioctl.sys").exists());
    }
}

#[test]
fn bad_inf_installs_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    ok(&root, &[&inf("ioctl.inf")]);
    let src = tmp.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    let text = std::fs::read_to_string(drivers_dir().join("function.inf")).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let n = lines
        .iter()
        .position(|l| l.starts_with("AddService"))
        .unwrap();
    let broken: Vec<String> = lines
        .iter()
        .enumerate()
        .map(|(i, l)| {
            if i == n {
                "AddService = IcaFunction, notanumber, IcaFunction_Service_Inst".to_string()
            } else {
                l.to_string()
            }
        })
        .collect();
    let bad = src.join("function.inf");
    std::fs::write(&bad, broken.join("\n")).unwrap();

    let before = tmp.path().join("before.reg");
    ok(&root, &["reg", "export", before.to_str().unwrap()]);
    let store_before = packages(&root);
    let (okr, out, err) = ica(&root, &[bad.to_str().unwrap()]);
    assert!(!okr, "a bad INF must fail: {out}");
    let line = err.lines().find(|l| l.starts_with("error:")).unwrap_or("");
    assert!(
        line.contains(&format!("{}:{}:", bad.display(), n + 1)),
        "names file:line: {err}"
    );
    let after = tmp.path().join("after.reg");
    ok(&root, &["reg", "export", after.to_str().unwrap()]);
    assert_eq!(
        std::fs::read(&before).unwrap(),
        std::fs::read(&after).unwrap()
    );
    assert_eq!(store_before, packages(&root));
    assert!(!root.join("windows/system32/drivers/function.sys").exists());

    // A missing source file is also caught before anything is written.
    let lonely = tmp.path().join("lonely");
    std::fs::create_dir_all(&lonely).unwrap();
    std::fs::copy(
        drivers_dir().join("function.inf"),
        lonely.join("function.inf"),
    )
    .unwrap();
    let (okr, _, err) = ica(&root, &[lonely.join("function.inf").to_str().unwrap()]);
    assert!(!okr && err.contains("function.sys"), "{err}");
    ok(&root, &["reg", "export", after.to_str().unwrap()]);
    assert_eq!(
        std::fs::read(&before).unwrap(),
        std::fs::read(&after).unwrap()
    );
}

#[test]
fn dry_run_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("fresh");
    let out = ok(&root, &["--dry-run", &inf("filter.inf")]);
    assert!(out.contains("would copy"), "{out}");
    assert!(out.contains(r"%12%\filter.sys"), "{out}");
    assert!(out.contains(r"Services\IcaFilter"), "{out}");
    assert!(out.contains("UpperFilters"), "{out}");
    assert!(out.contains("Nothing was written"), "{out}");
    assert!(!root.exists(), "the root must not even be created");

    // Also with an existing installation.
    ok(&root, &[&inf("function.inf")]);
    let before = tmp.path().join("b.reg");
    ok(&root, &["reg", "export", before.to_str().unwrap()]);
    let out = ok(&root, &[&inf("filter.inf"), "--dry-run"]);
    assert!(out.contains(r"ROOT\ICAFUNCTION\0000"), "{out}");
    let after = tmp.path().join("a.reg");
    ok(&root, &["reg", "export", after.to_str().unwrap()]);
    assert_eq!(
        std::fs::read(&before).unwrap(),
        std::fs::read(&after).unwrap()
    );
    assert_eq!(packages(&root).len(), 1);
    assert!(!root.join("windows/system32/drivers/filter.sys").exists());
}

#[test]
fn devices_lists_root_and_pci() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    ok(root, &[&inf("function.inf")]);
    let out = ok(root, &["devices"]);
    assert!(
        out.contains("Root-enumerated devices (1 installed)"),
        "{out}"
    );
    assert!(out.contains(r"ROOT\ICAFUNCTION\0000"), "{out}");
    if Path::new("/sys/bus/pci/devices").exists() && !host_pci_empty() {
        let ok_ids = out.lines().any(|l| {
            l.trim_start().starts_with(r"hardware IDs:   PCI\VEN_")
                && l.contains("&SUBSYS_")
                && l.contains("&REV_")
                && l.contains("&CC_")
        });
        assert!(ok_ids, "{out}");
        assert!(out.contains(r"compatible IDs: PCI\VEN_"), "{out}");
    }
}

fn host_pci_empty() -> bool {
    host_linux::pci::scan().is_empty()
}

#[test]
fn reg_export_and_import_round_trip() {
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("a");
    ok(&a, &[&inf("ioctl.inf")]);
    let file = tmp.path().join("svc.reg");
    ok(
        &a,
        &[
            "reg",
            "export",
            file.to_str().unwrap(),
            r"HKLM\System\CurrentControlSet\Services\IcaIoctl",
        ],
    );
    let b = tmp.path().join("b");
    let out = ok(&b, &["reg", "import", file.to_str().unwrap()]);
    assert!(out.contains("Imported"), "{out}");
    let store = RegistryStore::open(&b).unwrap();
    assert!(store.key_exists(&service_key("IcaIoctl")).unwrap());
}

#[test]
fn a_killed_driver_host_is_restarted_while_kept_running() {
    let root = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_ica-load"))
        .arg("--root")
        .arg(root.path())
        .args([&inf("filter.inf"), "--keep-running"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut pid = None;
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Some(rest) = line.trim().strip_prefix("(driver host pid ") {
            pid = rest.split(',').next().and_then(|p| p.parse::<i32>().ok());
        }
        if line.starts_with("Running") {
            break;
        }
    }
    let pid = pid.expect("the driver host's pid is printed");
    // SAFETY: kill(2) of the driver host, a child of our child.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    // The manager notices and reaps it.
    let deadline = Instant::now() + Duration::from_secs(10);
    while Path::new(&format!("/proc/{pid}")).exists() {
        assert!(
            Instant::now() < deadline,
            "the dead driver host was not noticed"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    // SAFETY: SIGINT to our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let status = child.wait().unwrap();
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    assert!(status.success(), "{rest:?}");
    let recovery = format!(
        "  recovery  driver host (pid {pid}) of function.sys, filter.sys was killed by signal 9 \
         (SIGKILL) without a report (detected in "
    );
    assert!(
        rest.iter()
            .any(|l| l.starts_with(&recovery) && l.contains("restarted in")),
        "{rest:?}"
    );
    assert!(
        rest.iter()
            .any(|l| l == "Done: filter.inf installed, started and unloaded cleanly."),
        "the new driver host unloaded the stack: {rest:?}"
    );
}
