//! The installer killed with SIGKILL at random points, many times: the registry is always found in
//! the old state (nothing of the package) or the new state (all of it), never in between.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use loader::registry::windows::{enum_key, service_key};
use loader::registry::RegistryStore;

fn filter_inf() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/drivers/filter.inf")
        .display()
        .to_string()
}

fn installer(root: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ica-load"));
    cmd.arg("--root")
        .arg(root)
        .arg(filter_inf())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    cmd
}

/// Which of the package's keys exist: services of both drivers, the device instance, its filter.
fn installed_keys(root: &Path) -> Vec<bool> {
    if !root.join("registry.redb").exists() {
        return vec![false; 4];
    }
    // A driver host the killed installer had just forked holds the store's file (and its lock)
    // until it execs or its parent-death signal ends it: give it a moment.
    let deadline = Instant::now() + Duration::from_secs(5);
    let store = loop {
        match RegistryStore::open(root) {
            Ok(store) => break store,
            Err(e) if Instant::now() >= deadline => panic!("the store opens after SIGKILL: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    };
    let device = enum_key(r"ROOT\ICAFUNCTION\0000");
    vec![
        store.key_exists(&service_key("IcaFunction")).unwrap(),
        store.key_exists(&service_key("IcaFilter")).unwrap(),
        store.key_exists(&device).unwrap(),
        store
            .value(&device, "UpperFilters")
            .unwrap_or(None)
            .is_some(),
    ]
}

#[test]
fn killing_the_installer_leaves_the_registry_old_or_new() {
    let kills: u32 = std::env::var("ICA_CRASH_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30);
    // How long a whole install takes here, to spread the kills over it.
    let calibrate = tempfile::tempdir().unwrap();
    let started = Instant::now();
    assert!(installer(calibrate.path()).status().unwrap().success());
    let full = started.elapsed();
    assert_eq!(
        installed_keys(calibrate.path()),
        vec![true; 4],
        "a finished install writes every key"
    );

    let mut seed = std::env::var("ICA_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .subsec_nanos() as u64
        });
    println!("seed {seed} (ICA_CRASH_SEED), full install {full:?}");
    let (mut old, mut new) = (0, 0);
    for kill in 0..kills {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let delay = Duration::from_nanos((seed >> 33) % (full.as_nanos() as u64 * 12 / 10).max(1));
        let root = tempfile::tempdir().unwrap();
        let mut child = installer(root.path()).spawn().unwrap();
        std::thread::sleep(delay);
        let _ = child.kill();
        let _ = child.wait();
        let keys = installed_keys(root.path());
        if keys.iter().all(|k| *k) {
            new += 1;
        } else if keys.iter().all(|k| !*k) {
            old += 1;
        } else {
            panic!("kill {kill} after {delay:?} (seed {seed}) left a partial registry: {keys:?}");
        }
    }
    println!("{kills} kills: {old} found the old state, {new} the new state");
}
