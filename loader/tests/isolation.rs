//! Isolation and recovery of a network adapter: `netcrash_ndis6.sys` (the loopback miniport that
//! misbehaves on purpose) runs in a driver host of its own, bridged to an in-process upper edge.
//! Each misbehaviour (a NULL write in the send path, a spin at DISPATCH_LEVEL there, a NULL write
//! in the receive timer DPC) and a SIGKILL of the driver host is caught, reported (driver, guest
//! address inside the driver, registers, guest backtrace, last kernel calls) and recovered from:
//! frames keep flowing through the same upper edge, the frames the dead host had are counted
//! lost, none is delivered twice, the carrier goes down during the restart and up after it. A
//! driver host that stops answering is killed and replaced; a driver that fails on every frame
//! hits the restart limit. `rtlcrash_ndis6.sys` faults in its ISR on the RTL8139 model, whose
//! wire is a socket the test plays the network on: the adapter comes back and frames flow both
//! ways again.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use host_linux::net::{Bridge, BridgeError, QueueUpper, QueueUpperHandle};
use loader::host::DriverFile;
use loader::isolate::{Backend, HostRegistry, IsolatedNic, IsolationConfig, Stack, StartParams};
use loader::registry::RegistryStore;
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

fn driver(arch: dbt::Arch, file: &str) -> DriverFile {
    let dir = if arch == dbt::Arch::X86 { "x86" } else { "x64" };
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/drivers/bin")
        .join(dir)
        .join(file);
    DriverFile::read(&path).unwrap_or_else(|e| panic!("{e}"))
}

/// A misbehaving miniport `file` on `backend`, configured from its Parameters key (Misbehave,
/// MisbehaveAfter) in an in-memory store the test keeps.
fn misbehaving(
    arch: dbt::Arch,
    file: &str,
    backend: Backend,
    misbehave: u32,
    after: u32,
) -> (StartParams, HostRegistry, RegistryStore, String) {
    let driver = driver(arch, file);
    let service = driver.service();
    let key = format!(r"{}\Parameters", service_path(&service));
    let store = RegistryStore::in_memory().unwrap();
    store
        .write(|b| {
            b.set_value(&key, "Misbehave", &RegValue::dword(misbehave))?;
            b.set_value(&key, "MisbehaveAfter", &RegValue::dword(after))
        })
        .unwrap();
    let params = StartParams {
        arch,
        stack: Stack::Nic {
            driver,
            config_key: Some(key.clone()),
            backend,
        },
        registry: Vec::new(),
        watchdog: ntoskrnl::Watchdog {
            call: Some(Duration::from_secs(10)),
            raised: Some(Duration::from_millis(300)),
        },
        // Tests run drivers under the verifier.
        verifier: true,
        files: Vec::new(),
    };
    let registry = HostRegistry::new(store.clone(), vec![service_path(&service)]);
    (params, registry, store, key)
}

/// netcrash_ndis6.sys, a virtual adapter, told to misbehave.
fn netcrash(arch: dbt::Arch, misbehave: u32, after: u32) -> IsolatedNic {
    netcrash_with(arch, misbehave, after, config())
}

fn netcrash_with(arch: dbt::Arch, misbehave: u32, after: u32, cfg: IsolationConfig) -> IsolatedNic {
    let (params, registry, _, _) = misbehaving(arch, DRIVER, Backend::Virtual, misbehave, after);
    IsolatedNic::start(params, registry, None, cfg)
        .unwrap_or_else(|e| panic!("{DRIVER} {}: {e}", arch.name()))
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
    let nic = netcrash(arch, misbehave, 10);
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
        let nic = netcrash(arch, BEHAVE, 0);
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
    let nic = netcrash_with(dbt::Arch::X64, SEND_FAULT, 0, cfg);
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
    let nic = netcrash_with(dbt::Arch::X64, BEHAVE, 0, cfg);
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

/// MisbehaveAfter of rtlcrash_ndis6.sys: the ISR faults at the 13th interrupt it claims.
const ISR_AFTER: u32 = 12;

/// A broadcast frame from the wire's side carrying `seq`.
fn wire_frame(seq: u32) -> Vec<u8> {
    let mut f = vec![0xFF; 6];
    f.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x77, 0x88, 0xB5]);
    f.extend_from_slice(&seq.to_be_bytes());
    f.resize(60, 0x5A);
    f
}

#[test]
fn isr_fault_on_the_rtl8139_model_is_reported_and_frames_flow_again() {
    use std::os::fd::OwnedFd;
    use std::os::unix::net::UnixDatagram;

    for arch in ARCHES {
        let name = format!("rtlcrash_ndis6 {}", arch.name());
        // The model's wire: one frame per datagram, like a TAP; the test is the network.
        let (theirs, net) = UnixDatagram::pair().unwrap();
        net.set_nonblocking(true).unwrap();
        let backend = Backend::Model {
            model: "rtl8139".into(),
            mac: loader::install::start::MODEL_MAC,
            wire: true,
        };
        let (params, registry, store, key) =
            misbehaving(arch, "rtlcrash_ndis6.sys", backend, 1, ISR_AFTER);
        let nic = IsolatedNic::start(params, registry, Some(OwnedFd::from(theirs)), config())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        // The running driver host has read its configuration; the next one reads the store
        // again and behaves.
        store
            .write(|b| b.set_value(&key, "Misbehave", &RegValue::dword(BEHAVE)))
            .unwrap();
        let first = nic.host_pid();
        let (upper, h) = QueueUpper::new();
        let mut b = Bridge::new(nic, upper);
        let (mut up_seq, mut wire_seq) = (0u32, 0u32);
        let mut on_wire = Vec::new();
        let mut delivered = Vec::new();
        // Rounds of 4 frames each way (an interrupt or more each) until the ISR faulted and the
        // new driver host carried two rounds.
        let mut rounds_after = 0;
        for _ in 0..40 {
            for _ in 0..4 {
                h.inject(&frame(up_seq));
                up_seq += 1;
                net.send(&wire_frame(wire_seq)).unwrap();
                wire_seq += 1;
            }
            let failed_before = !b.miniport().recoveries().is_empty();
            let (want_up, want_wire) = (delivered.len() + 4, on_wire.len() + 4);
            b.run_until(Duration::from_secs(5), |b| {
                while let Some(f) = h.take_delivered() {
                    delivered.push(seq_of(&f));
                }
                let mut buf = [0u8; 2048];
                while let Ok(n) = net.recv(&mut buf) {
                    on_wire.push(seq_of(&buf[..n]));
                }
                let restarted = b.miniport().host_pid().is_some();
                restarted
                    && ((delivered.len() >= want_up && on_wire.len() >= want_wire)
                        || b.miniport().recoveries().len() > usize::from(failed_before))
            })
            .unwrap_or_else(|e| panic!("{name}: bridge stopped: {e}"));
            if failed_before {
                rounds_after += 1;
                if rounds_after == 2 {
                    break;
                }
            }
        }
        let nic = b.miniport();
        assert_eq!(nic.recoveries().len(), 1, "{name}: one failure");
        assert_ne!(nic.host_pid(), first, "{name}: a new driver host");
        let r = &nic.recoveries()[0];
        eprintln!(
            "{name}: ISR fault detected in {:.1?}, recovered in {:.1?}, {} frames lost",
            r.detect,
            r.recover.unwrap_or_default(),
            r.lost
        );
        if arch == dbt::Arch::X64 {
            eprintln!("{}", r.report);
        }
        for needle in [
            "driver host (pid ",
            "rtlcrash_ndis6.sys failed: guest fault in rtlcrash_ndis6.sys+0x",
            "page fault: write at 0x0",
            "guest backtrace:",
            "#1 rtlcrash_ndis6.sys+0x",
            "last kernel calls",
        ] {
            assert!(
                r.report.contains(needle),
                "{name}: no {needle:?} in\n{}",
                r.report
            );
        }
        // Both ways, the frames of the last two rounds went through the new driver host, each
        // once and in order.
        for (dir, seqs, sent) in [("up", &delivered, up_seq), ("wire", &on_wire, wire_seq)] {
            let tail: Vec<u32> = (sent - 8..sent).collect();
            assert!(seqs.ends_with(&tail), "{name} {dir}: {seqs:?}");
            let unique: BTreeSet<u32> = seqs.iter().copied().collect();
            assert_eq!(
                unique.len(),
                seqs.len(),
                "{name} {dir}: duplicates in {seqs:?}"
            );
        }
        let (nic, _, _) = b.into_parts();
        let findings = nic.stop().unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(findings.is_empty(), "{name}: {findings:?}");
    }
}
