//! `ica-load rtl8139_ndis5.inf` through the real binary: the INF binds to the RTL8139 software
//! model, the NDIS miniport is initialized on it, the CLI shows what the OIDs report (address,
//! link, MTU, counters), and with `--keep-running` a Linux interface carries the adapter's
//! address and link until SIGINT.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn inf() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/drivers/rtl8139_ndis5.inf")
        .display()
        .to_string()
}

fn ica(root: &Path, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_ica-load"))
        .arg("--root")
        .arg(root)
        .args(args)
        .output()
        .expect("ica-load runs");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(
        out.status.success(),
        "ica-load {args:?} failed:\n{stdout}\n{stderr}"
    );
    stdout
}

/// An interface name unique to this test process.
fn ifname(tag: &str) -> String {
    format!("ica{tag}{}", std::process::id() % 100_000)
}

#[test]
fn installing_the_inf_starts_the_miniport_on_the_software_model() {
    for arch in ["x86", "x64"] {
        let root = tempfile::tempdir().unwrap();
        let name = ifname("i");
        let out = ica(root.path(), &[&inf(), "--arch", arch, "--ifname", &name]);
        assert!(out.contains("ica-model_rtl8139"), "{arch}: {out}");
        assert!(
            out.contains("MiniportInitialize succeeded"),
            "{arch}: {out}"
        );
        assert!(
            out.contains("adapter   ICA RTL8139 NDIS 5.1 test miniport"),
            "{out}"
        );
        assert!(
            out.contains("address   02:1c:a0:00:81:39 (permanent 02:1c:a0:00:81:39)"),
            "{out}"
        );
        assert!(out.contains("link      up, 100 Mbit/s, MTU 1500"), "{out}");
        assert!(out.contains("nothing leaked"), "{out}");
    }
}

fn sysfs(ifname: &str, attr: &str) -> Option<String> {
    std::fs::read_to_string(format!("/sys/class/net/{ifname}/{attr}"))
        .ok()
        .map(|s| s.trim().to_string())
}

#[test]
fn keep_running_brings_up_a_linux_interface_until_sigint() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 || !Path::new("/dev/net/tun").exists() {
        eprintln!("skipping: creating TAP interfaces needs root and /dev/net/tun");
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let name = ifname("k");
    let mut child = Command::new(env!("CARGO_BIN_EXE_ica-load"))
        .arg("--root")
        .arg(root.path())
        .args([&inf(), "--keep-running", "--ifname", &name])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        seen.push(line.clone());
        if line.starts_with("Running") {
            break;
        }
    }
    assert!(
        seen.iter()
            .any(|l| l.contains(&format!("interface {name} is up"))),
        "{seen:?}"
    );
    assert_eq!(
        sysfs(&name, "address").as_deref(),
        Some("02:1c:a0:00:81:39")
    );
    assert_eq!(sysfs(&name, "mtu").as_deref(), Some("1500"));
    assert_eq!(sysfs(&name, "carrier").as_deref(), Some("1"));
    assert!(sysfs(&format!("{name}w"), "address").is_some(), "wire TAP");

    // SAFETY: sends SIGINT to our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "ica-load did not stop on SIGINT");
        std::thread::sleep(Duration::from_millis(20));
    };
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    assert!(status.success(), "{rest:?}");
    assert!(rest.iter().any(|l| l.contains("bridged")), "{rest:?}");
    assert!(
        rest.iter().any(|l| l.contains("nothing leaked")),
        "{rest:?}"
    );
    assert!(sysfs(&name, "address").is_none(), "the interface goes away");
}
