//! End to end through an isolated adapter: the RTL8139 NDIS 6 miniport runs in a driver host of
//! its own on the model, its wire the TAP "ica-wire" in namespace B; the manager (this test) keeps
//! the upper TAP "ica-up" in namespace A and the bridge. Pings flow, the driver host is killed
//! with SIGKILL in the middle of them, the manager restarts it on the same wire while the
//! interface stays in place, the pings go on, and a verified 10 MB TCP transfer runs over the new
//! driver host. Prints the time to detect and to recover and the frames lost. Needs root
//! (network namespaces and TAPs); skips with the reason otherwise.

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
use loader::isolate::{Backend, IsolatedNic, IsolationConfig, StartParams};
use netns::{tcp_transfer, E2e, E2eConfig, B_ADDR, TCP_PORT, UP_TAP};

/// The verified transfer after the recovery (the same size as tests/tests/ndis_e2e.rs, whose
/// in-process throughput it can be compared with).
const TCP_BYTES: u64 = 10 << 20;

fn params(arch: dbt::Arch) -> StartParams {
    let dir = if arch == dbt::Arch::X86 { "x86" } else { "x64" };
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/drivers/bin")
        .join(dir)
        .join("rtl8139_ndis6.sys");
    StartParams {
        arch,
        driver: DriverFile::read(&path).unwrap_or_else(|e| panic!("{e}")),
        config_key: None,
        registry: Vec::new(),
        backend: Backend::Model {
            model: "rtl8139".into(),
            mac: MODEL_MAC,
            wire: true,
        },
        watchdog: ntoskrnl::Watchdog::default(),
        // Tests run drivers under the verifier.
        verifier: true,
    }
}

fn killed_and_recovered(arch: dbt::Arch) {
    let name = format!("rtl8139_ndis6 {} isolated", arch.name());
    let E2e { up, wire, a, b } = E2e::new(&E2eConfig {
        nic_mac: MODEL_MAC,
        mtu: 1500,
        link_up: true,
    })
    .unwrap_or_else(|e| panic!("{name}: {e}"));
    let wire_fd = wire.as_fd().try_clone_to_owned().unwrap();
    let mut cfg = IsolationConfig::new(env!("CARGO_BIN_EXE_ica-load").into());
    cfg.args = vec!["--log".into(), "off".into()];
    let nic = IsolatedNic::start(params(arch), Some(wire_fd), cfg)
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    let mut bridge = Bridge::new(nic, up);

    // 30 echoes, one every ~100 ms at most; the driver host dies after the 8th reply.
    let ping = a.ping(B_ADDR, 30, Duration::from_millis(300));
    let first = bridge.miniport().host_pid().unwrap();
    assert!(bridge
        .run_until(Duration::from_secs(10), |b| b.stats().frames_up >= 10)
        .unwrap());
    // SAFETY: kill(2) of our own child process.
    assert_eq!(unsafe { libc::kill(first as i32, libc::SIGKILL) }, 0);
    let killed = Instant::now();
    let mut detected = None;
    let back = bridge
        .run_until(Duration::from_secs(10), |b| {
            let nic = b.miniport();
            if detected.is_none() && !nic.recoveries().is_empty() {
                detected = Some(killed.elapsed());
            }
            nic.host_pid().is_some_and(|p| p != first) && a.carrier(UP_TAP).ok() == Some(true)
        })
        .unwrap();
    assert!(back, "{name}: no new driver host");
    let back_at = killed.elapsed();
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
    assert!(r.report.contains("SIGKILL"), "{name}: {}", r.report);
    eprintln!(
        "{name}: SIGKILL detected after {:.1?}, restarted in {:.1?}, frames flowing and carrier up \
         {back_at:.1?} after the kill; {} frames lost, {} of 30 echoes answered, 0 duplicates; \
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
        killed_and_recovered(arch);
    }
}
