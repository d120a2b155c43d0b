//! `ica-load` as a user meets it: bad files get one clear line naming the file and the problem, a
//! non-zero exit and no panic; good drivers run and list what they created.

use std::path::{Path, PathBuf};
use std::process::Command;

fn driver(arch: &str, name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/drivers/bin")
        .join(arch)
        .join(format!("{name}.sys"))
}

fn ica_load(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ica-load"))
        .args(args)
        .output()
        .expect("ica-load runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Writes `bytes` to a scratch file named `name` and returns its path.
fn scratch(name: &str, bytes: &[u8]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ica-cli-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

/// The good x64 driver with `patch` applied at the offset it returns (relative to the NT headers).
fn patched(name: &str, patch: impl Fn(&mut Vec<u8>, usize)) -> PathBuf {
    let mut bytes = std::fs::read(driver("x64", "nullderef")).unwrap();
    let nt = u32::from_le_bytes(bytes[0x3c..0x40].try_into().unwrap()) as usize;
    patch(&mut bytes, nt);
    scratch(name, &bytes)
}

fn assert_rejected(path: &Path, expected: &str) {
    let (ok, _, stderr) = ica_load(&["run", path.to_str().unwrap()]);
    assert!(!ok, "{} must be rejected", path.display());
    assert!(!stderr.contains("panicked"), "no panic: {stderr}");
    let line = stderr
        .lines()
        .find(|l| l.starts_with("error:"))
        .unwrap_or_else(|| panic!("an error line: {stderr}"));
    assert!(
        line.contains(&path.display().to_string()),
        "the error names the file: {line}"
    );
    assert!(
        line.contains(expected),
        "the error says {expected:?}: {line}"
    );
}

#[test]
fn malformed_and_foreign_images_are_rejected_with_a_clear_error() {
    assert_rejected(&scratch("empty.sys", b""), "too short for a DOS header");
    assert_rejected(
        &scratch("text.sys", &[b'x'; 200]),
        "no 'MZ' signature at offset 0",
    );
    let good = std::fs::read(driver("x64", "nullderef")).unwrap();
    assert_rejected(
        &scratch("truncated.sys", &good[..0x300]),
        "past the end of the file",
    );
    assert_rejected(
        &patched("arm64.sys", |b, nt| {
            b[nt + 4..nt + 6].copy_from_slice(&0xAA64u16.to_le_bytes())
        }),
        "unsupported machine ARM64",
    );
    assert_rejected(
        &patched("gui.sys", |b, nt| {
            b[nt + 24 + 68..nt + 24 + 70].copy_from_slice(&2u16.to_le_bytes())
        }),
        "not a kernel driver: subsystem Windows GUI",
    );
    assert_rejected(
        &patched("noentry.sys", |b, nt| {
            b[nt + 24 + 16..nt + 24 + 20].copy_from_slice(&0u32.to_le_bytes())
        }),
        "no entry point",
    );
    assert_rejected(
        &patched("badpe.sys", |b, nt| b[nt..nt + 2].copy_from_slice(b"XX")),
        "no 'PE' signature",
    );
    let (ok, _, stderr) = ica_load(&["run", "/nonexistent/driver.sys"]);
    assert!(
        !ok && stderr.contains("/nonexistent/driver.sys: cannot read"),
        "{stderr}"
    );
}

#[test]
fn run_lists_devices_and_links_and_unloads() {
    for arch in ["x86", "x64"] {
        let (ok, stdout, stderr) = ica_load(&[
            "run",
            driver(arch, "nullderef").to_str().unwrap(),
            "--stats",
        ]);
        assert!(ok, "{stderr}");
        assert!(
            stdout.contains("DriverEntry returned STATUS_SUCCESS"),
            "{stdout}"
        );
        assert!(
            stdout.contains("device \\Device\\IcaNull (nullderef.sys)"),
            "{stdout}"
        );
        assert!(
            stdout.contains("symbolic link \\DosDevices\\IcaNull -> \\Device\\IcaNull"),
            "{stdout}"
        );
        assert!(stdout.contains("DriverUnload done"), "{stdout}");
        assert!(stdout.contains("guest instructions executed:"), "{stdout}");
    }
}

#[test]
fn imports_lists_traps_by_name() {
    let (ok, stdout, stderr) =
        ica_load(&["imports", driver("x86", "unknownimport").to_str().unwrap()]);
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("TRAP          ntoskrnl.exe!FsRtlIsNameInExpression"),
        "{stdout}"
    );
    assert!(
        stdout.contains("implemented   ntoskrnl.exe!IoCreateDevice"),
        "{stdout}"
    );
}

#[test]
fn the_bundled_default_runs_without_arguments() {
    let (ok, stdout, stderr) = ica_load(&["run"]);
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("IOCTL_ICA_REVERSE(\"hello, driver\") -> STATUS_SUCCESS \"revird ,olleh\""),
        "{stdout}"
    );
    assert!(
        stdout.contains("failed 0") || stdout.contains(" 0 failed"),
        "{stdout}"
    );
}

#[test]
fn verifier_runs_the_demo_and_a_clean_driver_without_findings() {
    let (ok, stdout, stderr) = ica_load(&["--verifier", "run"]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains(" 0 failed"), "{stdout}");
    assert!(stdout.contains("verifier: no findings"), "{stdout}");
    for arch in ["x86", "x64"] {
        let sins = driver(arch, "sins");
        let (ok, stdout, stderr) = ica_load(&["run", "--verifier", sins.to_str().unwrap()]);
        assert!(ok, "{stderr}");
        assert!(stdout.contains("verifier: no findings"), "{stdout}");
    }
}

#[test]
fn coverage_counts_ndis5_macros_through_the_miniport_block() {
    let reference = scratch(
        "interfaces.tsv",
        b"module\tfunction\tcategory\tpriority\txp_export\n\
          ndis.sys\tNdisMEthIndicateReceive\tndis\tP1\tmacro->block\n\
          ndis.sys\tNdisMIndicateStatus\tndis\tP1\tmacro->block(also exported)\n\
          ndis.sys\tNdisMFddiIndicateReceive\tndis\tP1\tmacro->block\n\
          ndis.sys\tNdisMMapIoSpace\tndis\tP0\tyes\n\
          ntoskrnl.exe\tExInitializeNPagedLookasideList\tmemory\tP0\tyes\n",
    );
    let (ok, stdout, stderr) = ica_load(&[
        "coverage",
        "--reference",
        reference.to_str().unwrap(),
        "--missing",
    ]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("ndis.sys      P1: 2/3"), "{stdout}");
    assert!(
        stdout.contains("missing: NdisMFddiIndicateReceive"),
        "{stdout}"
    );
    assert!(stdout.contains("ndis.sys      P0: 1/1"), "{stdout}");
    assert!(stdout.contains("ntoskrnl.exe  P0: 1/1"), "{stdout}");
    assert!(
        stdout.contains("  NdisMEthIndicateReceive -> EthRxIndicateHandler (P1)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("  NdisMIndicateStatus -> StatusHandler (P1)"),
        "{stdout}"
    );
}
