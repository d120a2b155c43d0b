//! End to end through an isolated adapter: the RTL8139 NDIS 6 miniport runs in a driver host of
//! its own on the model, its wire the TAP "ica-wire" in namespace B; the manager (this test) keeps
//! the upper TAP "ica-up" in namespace A and the bridge. Pings flow, the driver host fails in the
//! middle of them (killed with SIGKILL; or rtlcrash_ndis6.sys, the same miniport, faults in its
//! ISR), the manager restarts it on the same wire while the interface stays in place, the pings
//! go on, and a verified 10 MB TCP transfer runs over the new driver host. Prints the time to
//! detect and to recover and the frames lost. Needs root (network namespaces and TAPs); skips
//! with the reason otherwise.

// The namespace harness of the ica-tests crate (this test needs the ica-load binary, which only
// the loader's own tests can name); it uses part of it.
#[allow(dead_code)]
#[path = "../../tests/netns.rs"]
mod netns;

use std::net::SocketAddrV4;
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use host_linux::net::Bridge;
use loader::host::DriverFile;
use loader::install::start::MODEL_MAC;
use loader::isolate::{Backend, HostRegistry, IsolatedNic, IsolationConfig, Stack, StartParams};
use loader::registry::RegistryStore;
use netns::{tcp_transfer, E2e, E2eConfig, B_ADDR, TCP_PORT, UP_TAP};
use ntoskrnl::registry::{service_path, RegValue};

/// The verified transfer after the recovery (the same size as tests/tests/ndis_e2e.rs, whose
/// in-process throughput it can be compared with).
const TCP_BYTES: u64 = 10 << 20;

/// How the driver host fails.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Failure {
    /// The test kills it with SIGKILL after 10 frames up.
    Sigkill,
    /// rtlcrash_ndis6.sys faults in its ISR at its 21st interrupt.
    IsrFault,
}

/// The miniport and its registry: rtlcrash_ndis6.sys is told to fault in its first driver host
/// only (the store says behave by the time the manager restarts it).
fn params(arch: dbt::Arch, failure: Failure) -> (StartParams, HostRegistry, RegistryStore, String) {
    let dir = if arch == dbt::Arch::X86 { "x86" } else { "x64" };
    let file = match failure {
        Failure::Sigkill => "rtl8139_ndis6.sys",
        Failure::IsrFault => "rtlcrash_ndis6.sys",
    };
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/drivers/bin")
        .join(dir)
        .join(file);
    let driver = DriverFile::read(&path).unwrap_or_else(|e| panic!("{e}"));
    let service = service_path(&driver.service());
    let key = format!(r"{service}\Parameters");
    let store = RegistryStore::in_memory().unwrap();
    store
        .write(|b| {
            b.set_value(&key, "Misbehave", &RegValue::dword(1))?;
            b.set_value(&key, "MisbehaveAfter", &RegValue::dword(20))
        })
        .unwrap();
    let params = StartParams {
        arch,
        stack: Stack::Nic {
            driver,
            config_key: Some(key.clone()),
            backend: Backend::Model {
                model: "rtl8139".into(),
                mac: MODEL_MAC,
                wire: true,
            },
        },
        registry: Vec::new(),
        watchdog: ntoskrnl::Watchdog::default(),
        // Tests run drivers under the verifier.
        verifier: true,
        files: Vec::new(),
    };
    (
        params,
        HostRegistry::new(store.clone(), vec![service]),
        store,
        key,
    )
}

fn failed_and_recovered(arch: dbt::Arch, failure: Failure) {
    let how = match failure {
        Failure::Sigkill => "SIGKILL",
        Failure::IsrFault => "ISR fault",
    };
    let name = format!("rtl8139 NDIS 6 {} isolated, {how}", arch.name());
    let E2e { up, wire, a, b } = E2e::new(&E2eConfig {
        nic_mac: MODEL_MAC,
        mtu: 1500,
        link_up: true,
    })
    .unwrap_or_else(|e| panic!("{name}: {e}"));
    let wire_fd = wire.as_fd().try_clone_to_owned().unwrap();
    let mut cfg = IsolationConfig::new(env!("CARGO_BIN_EXE_ica-load").into());
    cfg.args = vec!["--log".into(), "off".into()];
    let (params, registry, store, key) = params(arch, failure);
    let nic = IsolatedNic::start(params, registry, Some(wire_fd), cfg)
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    store
        .write(|b| b.set_value(&key, "Misbehave", &RegValue::dword(0)))
        .unwrap();
    let mut bridge = Bridge::new(nic, up);

    // 30 echoes, one every ~100 ms at most; the driver host dies after about 10 frames up.
    let ping = a.ping(B_ADDR, 30, Duration::from_millis(300));
    let first = bridge.miniport().host_pid().unwrap();
    let failed_at = match failure {
        Failure::Sigkill => {
            assert!(bridge
                .run_until(Duration::from_secs(10), |b| b.stats().frames_up >= 10)
                .unwrap());
            // SAFETY: kill(2) of our own child process.
            assert_eq!(unsafe { libc::kill(first as i32, libc::SIGKILL) }, 0);
            Instant::now()
        }
        Failure::IsrFault => {
            assert!(
                bridge
                    .run_until(Duration::from_secs(10), |b| b.miniport().host_pid()
                        != Some(first))
                    .unwrap(),
                "{name}: the ISR did not fault"
            );
            // When the request that found it dead was made.
            let r = &bridge.miniport().recoveries()[0];
            Instant::now() - r.detect
        }
    };
    let mut detected = None;
    let back = bridge
        .run_until(Duration::from_secs(10), |b| {
            let nic = b.miniport();
            if detected.is_none() && !nic.recoveries().is_empty() {
                detected = Some(failed_at.elapsed());
            }
            nic.host_pid().is_some_and(|p| p != first) && a.carrier(UP_TAP).ok() == Some(true)
        })
        .unwrap();
    assert!(back, "{name}: no new driver host");
    let back_at = failed_at.elapsed();
    assert!(
        bridge
            .run_until(Duration::from_secs(30), |_| ping.is_finished())
            .unwrap(),
        "{name}: ping did not finish"
    );
    let report = ping.join().unwrap();
    assert_eq!(report.duplicates, 0, "{name}: {report:?}");
    assert!(report.received >= 25, "{name}: {report:?}");

    // A verified TCP transfer through the new driver host.
    let job = tcp_transfer(
        &b,
        SocketAddrV4::new(B_ADDR, TCP_PORT),
        &a,
        TCP_BYTES,
        Duration::from_secs(60),
    );
    assert!(
        bridge
            .run_until(Duration::from_secs(65), |_| job.is_finished())
            .unwrap(),
        "{name}: TCP transfer did not finish"
    );
    let t = job.join().unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(t.bytes, TCP_BYTES, "{name}");

    let (nic, _up, _) = bridge.into_parts();
    let r = &nic.recoveries()[0];
    assert_eq!(nic.recoveries().len(), 1, "{name}");
    let expect = match failure {
        Failure::Sigkill => "killed by signal 9 (SIGKILL)",
        Failure::IsrFault => "failed: guest fault in rtlcrash_ndis6.sys+0x",
    };
    assert!(r.report.contains(expect), "{name}: {}", r.report);
    eprintln!(
        "{name}: detected after {:.1?}, restarted in {:.1?}, frames flowing and carrier up \
         {back_at:.1?} after the failure; {} frames lost, {} of 30 echoes answered, 0 duplicates; \
         then 10 MB over TCP in {:.2?} ({:.0} Mbit/s)",
        detected.unwrap_or_default(),
        r.recover.unwrap_or_default(),
        r.lost,
        report.received,
        t.elapsed,
        t.mbit_per_s()
    );
    assert!(nic.stop().unwrap().is_empty(), "{name}");
    drop((a, b));
}

#[test]
fn sigkill_of_the_driver_host_keeps_the_interface_and_traffic_recovers() {
    if let Some(why) = netns::skip_reason() {
        eprintln!("skipping: {why}");
        return;
    }
    for arch in [dbt::Arch::X86, dbt::Arch::X64] {
        failed_and_recovered(arch, Failure::Sigkill);
    }
}

#[test]
fn isr_fault_keeps_the_interface_and_traffic_recovers() {
    if let Some(why) = netns::skip_reason() {
        eprintln!("skipping: {why}");
        return;
    }
    for arch in [dbt::Arch::X86, dbt::Arch::X64] {
        failed_and_recovered(arch, Failure::IsrFault);
    }
}
