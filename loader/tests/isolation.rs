//! Isolation and recovery of a network adapter: `netcrash_ndis6.sys` (the loopback miniport that
//! misbehaves on purpose) runs in a driver host of its own, bridged to an in-process upper edge.
//! Each misbehaviour (a NULL write in the send path, a spin at DISPATCH_LEVEL there, a NULL write
//! in the receive timer DPC) and a SIGKILL of the driver host is caught, reported (driver, guest
//! address inside the driver, registers, guest backtrace, last kernel calls) and recovered from:
//! frames keep flowing through the same upper edge, the frames the dead host had are counted
//! lost, none is delivered twice, the carrier goes down during the restart and up after it. A
//! driver host that stops answering is killed and replaced; a driver that fails on every frame
//! hits the restart limit.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use host_linux::net::{Bridge, BridgeError, QueueUpper, QueueUpperHandle};
use loader::host::DriverFile;
use loader::isolate::{Backend, IsolatedNic, IsolationConfig, StartParams};
use ntoskrnl::registry::{service_path, RegValue};

const ARCHES: [dbt::Arch; 2] = [dbt::Arch::X86, dbt::Arch::X64];
/// netvirt_ndis6's default address (directed frames to it pass its filter).
const NIC_MAC: [u8; 6] = [0x02, 0x49, 0x43, 0x41, 0x00, 0x01];
const DRIVER: &str = "netcrash_ndis6.sys";

/// Misbehave values (see tests/drivers/netcrash_ndis6.c).
const SEND_FAULT: u32 = 1;
const DISPATCH_SPIN: u32 = 2;
const DPC_FAULT: u32 = 3;
const BEHAVE: u32 = 0;

fn driver(arch: dbt::Arch) -> DriverFile {
    let dir = if arch == dbt::Arch::X86 { "x86" } else { "x64" };
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/drivers/bin")
        .join(dir)
        .join(DRIVER);
    DriverFile::read(&path).unwrap_or_else(|e| panic!("{e}"))
}

fn params(arch: dbt::Arch, misbehave: u32, after: u32) -> StartParams {
    let key = format!(r"{}\Parameters", service_path("netcrash_ndis6"));
    StartParams {
        arch,
        driver: driver(arch),
        config_key: Some(key.clone()),
        registry: vec![(
            key,
            vec![
                ("Misbehave".into(), RegValue::dword(misbehave)),
                ("MisbehaveAfter".into(), RegValue::dword(after)),
            ],
        )],
        backend: Backend::Virtual,
        watchdog: ntoskrnl::Watchdog {
            call: Some(Duration::from_secs(10)),
            raised: Some(Duration::from_millis(300)),
        },
        // Tests run drivers under the verifier.
        verifier: true,
    }
}

fn config() -> IsolationConfig {
    let mut cfg = IsolationConfig::new(env!("CARGO_BIN_EXE_ica-load").into());
    cfg.args = vec!["--log".into(), "off".into()];
    cfg.reply_timeout = Duration::from_secs(10);
    cfg
}

/// A 60-byte frame to the adapter carrying `seq`.
fn frame(seq: u32) -> Vec<u8> {
    let mut f = NIC_MAC.to_vec();
    f.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x99, 0x88, 0xB5]);
    f.extend_from_slice(&seq.to_be_bytes());
    f.resize(60, 0xA5);
    f
}

fn seq_of(f: &[u8]) -> u32 {
    u32::from_be_bytes([f[14], f[15], f[16], f[17]])
}

/// The test's view of the traffic.
#[derive(Default)]
struct Traffic {
    next: u32,
    delivered: Vec<u32>,
}

impl Traffic {
    /// Injects `n` frames and runs the bridge until each was delivered or counted lost.
    fn chunk(&mut self, b: &mut Bridge<IsolatedNic, QueueUpper>, h: &QueueUpperHandle, n: u32) {
        for _ in 0..n {
            h.inject(&frame(self.next));
            self.next += 1;
        }
        let want = u64::from(self.next);
        let delivered = &mut self.delivered;
        let done = b
            .run_until(Duration::from_secs(20), |b| {
                while let Some(f) = h.take_delivered() {
                    delivered.push(seq_of(&f));
                }
                delivered.len() as u64 + b.miniport().lost_frames() >= want
                    && b.miniport().host_pid().is_some()
            })
            .unwrap_or_else(|e| panic!("bridge stopped: {e}"));
        assert!(done, "frames neither delivered nor lost: {:?}", b.stats());
    }

    /// Every injected frame delivered once or counted lost, in order.
    fn check(&self, lost: u64) {
        let unique: BTreeSet<u32> = self.delivered.iter().copied().collect();
        assert_eq!(unique.len(), self.delivered.len(), "no duplicates");
        let mut sorted = self.delivered.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, self.delivered, "delivered in order");
        assert_eq!(
            self.delivered.len() as u64 + lost,
            u64::from(self.next),
            "each frame delivered or counted lost"
        );
    }
}

/// Runs `misbehave` after 10 frames, checks the report with `expect`, and that frames flow after
/// the restart; prints the times and, for x64, the report.
fn crash_and_recover(arch: dbt::Arch, misbehave: u32, expect: &[&str]) {
    let name = format!("{DRIVER} {} misbehave {misbehave}", arch.name());
    let nic = IsolatedNic::start(params(arch, misbehave, 10), None, config())
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    let first_pid = nic.host_pid();
    let (upper, h) = QueueUpper::new();
    let mut b = Bridge::new(nic, upper);
    let mut t = Traffic::default();
    // 10 frames flow; the 11th sets the driver off.
    t.chunk(&mut b, &h, 5);
    t.chunk(&mut b, &h, 5);
    assert!(b.miniport().recoveries().is_empty(), "{name}");
    t.chunk(&mut b, &h, 5);
    assert_eq!(b.miniport().recoveries().len(), 1, "{name}: one failure");
    // The new driver host carries frames through the same upper edge.
    t.chunk(&mut b, &h, 5);
    t.chunk(&mut b, &h, 4);
    let nic = b.miniport();
    let r = &nic.recoveries()[0];
    let recover = r.recover.unwrap_or_else(|| panic!("{name}: not restarted"));
    eprintln!(
        "{name}: detected in {:.1?}, recovered in {recover:.1?}, {} frames lost",
        r.detect, r.lost
    );
    if arch == dbt::Arch::X64 {
        eprintln!("{}", r.report);
    }
    for needle in expect.iter().chain(&[
        "driver host (pid ",
        DRIVER,
        "guest backtrace:",
        "#1 netcrash_ndis6.sys+0x",
        "#2 netcrash_ndis6.sys+0x",
        "last kernel calls",
        "none will be resent",
    ]) {
        assert!(
            r.report.contains(needle),
            "{name}: no {needle:?} in\n{}",
            r.report
        );
    }
    let register = if arch == dbt::Arch::X64 {
        "rax="
    } else {
        "eax="
    };
    assert!(
        r.report.contains(register),
        "{name}: registers\n{}",
        r.report
    );
    assert_ne!(nic.host_pid(), first_pid, "{name}: a new driver host");
    assert!(r.lost <= 5 + 5, "{name}: lost {}", r.lost);
    t.check(nic.lost_frames());
    assert_eq!(
        h.carrier_changes(),
        3,
        "{name}: carrier up, down for the restart, up"
    );
    assert_eq!(h.carrier(), Some(true));
    let (nic, _, _) = b.into_parts();
    let findings = nic.stop().unwrap_or_else(|e| panic!("{name}: {e}"));
    assert!(findings.is_empty(), "{name}: {findings:?}");
}

#[test]
fn send_path_fault_is_reported_and_the_adapter_restarts() {
    for arch in ARCHES {
        crash_and_recover(
            arch,
            SEND_FAULT,
            &[
                "failed: guest fault in netcrash_ndis6.sys+0x",
                "page fault: write at 0x0",
            ],
        );
    }
}

#[test]
fn dispatch_level_spin_is_stopped_by_the_watchdog_and_the_adapter_restarts() {
    for arch in ARCHES {
        crash_and_recover(
            arch,
            DISPATCH_SPIN,
            &[
                "failed: guest fault in netcrash_ndis6.sys+0x",
                "watchdog: spun at IRQL 2",
            ],
        );
    }
}

#[test]
fn timer_dpc_fault_is_reported_and_the_adapter_restarts() {
    for arch in ARCHES {
        crash_and_recover(arch, DPC_FAULT, &["page fault: write at 0x0"]);
    }
}

#[test]
fn sigkill_of_the_driver_host_is_recovered() {
    for arch in ARCHES {
        let name = format!("SIGKILL {}", arch.name());
        let nic = IsolatedNic::start(params(arch, BEHAVE, 0), None, config()).unwrap();
        let (upper, h) = QueueUpper::new();
        let mut b = Bridge::new(nic, upper);
        let mut t = Traffic::default();
        t.chunk(&mut b, &h, 5);
        let pid = b.miniport().host_pid().unwrap();
        // SAFETY: kill(2) of our own child process.
        assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGKILL) }, 0);
        let killed = Instant::now();
        // Once it is gone (a zombie), frames offered to it cannot reach it: none is lost.
        while !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap()
            .contains(") Z ")
        {
            assert!(
                killed.elapsed() < Duration::from_secs(5),
                "{name}: not dead"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        t.chunk(&mut b, &h, 5);
        let back = killed.elapsed();
        let nic = b.miniport();
        assert_eq!(nic.recoveries().len(), 1, "{name}");
        let r = &nic.recoveries()[0];
        assert!(
            r.report
                .contains("was killed by signal 9 (SIGKILL) without a report"),
            "{name}: {}",
            r.report
        );
        assert!(r.report.contains(DRIVER), "{name}: {}", r.report);
        eprintln!(
            "{name}: killed -> frames flowing again in {back:.1?} (restart {:.1?}), {} frames lost",
            r.recover.unwrap_or_default(),
            r.lost
        );
        assert_eq!(r.lost, 0, "{name}: nothing was in flight");
        t.check(nic.lost_frames());
        assert_eq!(t.delivered.len(), 10, "{name}");
        let (nic, _, _) = b.into_parts();
        assert!(nic.stop().unwrap().is_empty(), "{name}");
    }
}

#[test]
fn a_crash_loop_hits_the_restart_limit() {
    let mut cfg = config();
    cfg.max_restarts = 3;
    let nic = IsolatedNic::start(params(dbt::Arch::X64, SEND_FAULT, 0), None, cfg).unwrap();
    let (upper, h) = QueueUpper::new();
    let mut b = Bridge::new(nic, upper);
    let mut err = None;
    for seq in 0..20 {
        h.inject(&frame(seq));
        if let Err(e) = b.run_for(Duration::from_millis(200)) {
            err = Some(e);
            break;
        }
    }
    let Some(BridgeError::Guest(e)) = err else {
        panic!("the bridge kept going: {err:?}");
    };
    assert!(
        e.message
            .contains("netcrash_ndis6.sys: restart limit reached (3 restarts within 60s)"),
        "{e}"
    );
    let nic = b.miniport();
    assert_eq!(
        nic.recoveries().len(),
        4,
        "the first failure and 3 restarts"
    );
    assert_eq!(nic.host_pid(), None);
    assert_eq!(h.carrier(), Some(false), "the carrier stays down");
}

#[test]
fn a_driver_host_that_stops_answering_is_killed_and_replaced() {
    let mut cfg = config();
    cfg.reply_timeout = Duration::from_millis(500);
    let nic = IsolatedNic::start(params(dbt::Arch::X64, BEHAVE, 0), None, cfg).unwrap();
    let (upper, h) = QueueUpper::new();
    let mut b = Bridge::new(nic, upper);
    let mut t = Traffic::default();
    t.chunk(&mut b, &h, 5);
    let pid = b.miniport().host_pid().unwrap();
    // SAFETY: kill(2) of our own child process: it stops, as a host stuck outside guest code
    // would.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGSTOP) }, 0);
    t.chunk(&mut b, &h, 5);
    let nic = b.miniport();
    assert_eq!(nic.recoveries().len(), 1);
    let r = &nic.recoveries()[0];
    assert!(
        r.report
            .contains("did not answer within 500ms and was killed"),
        "{}",
        r.report
    );
    assert!(r.detect >= Duration::from_millis(500), "{:?}", r.detect);
    assert_ne!(nic.host_pid(), Some(pid));
    t.check(nic.lost_frames());
}
