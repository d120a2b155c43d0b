//! Isolation and recovery of device stacks other than network adapters, installed from their INFs
//! into a scratch root and run in driver hosts of their own, talked to through the manager's
//! client I/O proxy: a guest fault in an IOCTL (nullderef.sys), a spin at DISPATCH_LEVEL (the
//! watchdog) and at PASSIVE_LEVEL (the CPU limit), the verifier's bug checks for a pool overrun
//! and a double completion (sins.sys), a panic of the host code (fault injection), and SIGKILL of an idle PnP stack with its filter
//! (filter.inf). Each is reported (driver, guest address, registers, guest backtrace, last kernel
//! calls; or the signal), the request and the old handles fail with STATUS_DEVICE_DOES_NOT_EXIST,
//! the stack is restarted and a reopen works, while another stack in a driver host of its own
//! and the registry are untouched. The drivers' registry writes (regtest.sys: Zw*Key,
//! RtlWriteRegistryValue, IoOpenDeviceRegistryKey, device interfaces) reach the manager's store.

#[path = "common/regtest.rs"]
mod regtest;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use loader::host::{DeviceIo, DriverFile, HostError};
use loader::inf::Arch;
use loader::install::start::{self, HostSetup};
use loader::install::{InstallOptions, Root};
use loader::isolate::{IsolatedStack, IsolationConfig, ServiceImage, Stack};
use loader::registry::windows::service_key;
use loader::registry::{RegValue, RegistryStore};
use ntoskrnl::status::{STATUS_DEVICE_DOES_NOT_EXIST, STATUS_SUCCESS};

const ARCHES: [Arch; 2] = [Arch::X86, Arch::Amd64];

const IOCTL_ICA_PING: u32 = 0x0022_2804;
const IOCTL_ICA_NULL_DEREF: u32 = 0x0022_2C00;
const IOCTL_ICA_SPIN: u32 = 0x0022_2C04;
const IOCTL_ICA_SPIN_RAISED: u32 = 0x0022_2C08;
const IOCTL_ICA_REVERSE: u32 = 0x0022_2000;
const IOCTL_ICA_ADD: u32 = 0x0022_2400;
const IOCTL_ICA_SIN_OVERRUN: u32 = 0x0022_3414;
const IOCTL_ICA_SIN_LEAK_POOL: u32 = 0x0022_3428;
const IOCTL_ICA_SIN_DOUBLE_COMPLETE: u32 = 0x0022_3434;

fn drivers_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/drivers")
}

fn arch_name(arch: Arch) -> &'static str {
    if arch == Arch::X86 {
        "x86"
    } else {
        "x64"
    }
}

fn config() -> IsolationConfig {
    let mut cfg = IsolationConfig::new(env!("CARGO_BIN_EXE_ica-load").into());
    cfg.args = vec!["--log".into(), "off".into()];
    cfg.reply_timeout = Duration::from_secs(20);
    cfg
}

/// A scratch root with the INFs installed (not started).
struct Installed {
    root: Root,
    store: RegistryStore,
    _dir: tempfile::TempDir,
}

fn install(arch: Arch, infs: &[&str]) -> Installed {
    let dir = tempfile::tempdir().unwrap();
    let root = Root::new(dir.path());
    for inf in infs {
        let opts = InstallOptions {
            arch,
            dry_run: false,
            pci: Some(Vec::new()),
        };
        let prepared = loader::install::prepare(&root, &drivers_dir().join(inf), &opts)
            .unwrap_or_else(|e| panic!("{inf}: {e}"));
        loader::install::install(&root, prepared, false).unwrap_or_else(|e| panic!("{inf}: {e}"));
    }
    let store = root.open_registry().unwrap();
    Installed {
        root,
        store,
        _dir: dir,
    }
}

impl Installed {
    /// Legacy services `names` in a driver host of their own.
    fn services(&self, arch: Arch, names: &[&str], cfg: IsolationConfig) -> IsolatedStack {
        self.services_watched(arch, names, cfg, ntoskrnl::Watchdog::default())
    }

    fn services_watched(
        &self,
        arch: Arch,
        names: &[&str],
        cfg: IsolationConfig,
        watchdog: ntoskrnl::Watchdog,
    ) -> IsolatedStack {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let stack = start::services_stack(&self.root, &self.store, &names).unwrap();
        self.start(arch, stack, cfg, watchdog)
    }

    fn start(
        &self,
        arch: Arch,
        stack: Stack,
        cfg: IsolationConfig,
        watchdog: ntoskrnl::Watchdog,
    ) -> IsolatedStack {
        let setup = HostSetup {
            arch,
            // Tests run drivers under the verifier.
            verifier: true,
        };
        let (mut params, registry) =
            start::isolated_stack_params(&self.store, setup, stack).unwrap();
        params.watchdog = watchdog;
        IsolatedStack::start(params, registry, cfg).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Every key and value of the store.
    fn registry(&self) -> loader::registry::store::Snapshot {
        self.store.snapshot(r"\Registry").unwrap()
    }
}

fn open(io: &mut dyn DeviceIo, path: &str) -> u32 {
    io.open(path)
        .unwrap_or_else(|e| panic!("open {path}: {e}"))
        .unwrap_or_else(|st| panic!("open {path}: {st:#x}"))
}

fn ping(io: &mut dyn DeviceIo, h: u32) {
    let r = io.ioctl(h, IOCTL_ICA_PING, &[], &[]).unwrap();
    assert_eq!(r.status, STATUS_SUCCESS);
}

/// ioctl.sys, the other stack: a round trip through its IOCTL_ICA_REVERSE.
fn reverse(io: &mut dyn DeviceIo, h: u32) {
    let r = io.ioctl(h, IOCTL_ICA_REVERSE, b"abc", &[0; 3]).unwrap();
    assert_eq!(
        (r.status, r.output.as_slice()),
        (STATUS_SUCCESS, &b"cba"[..])
    );
}

/// What a request that killed the driver host returns.
fn host_failed(r: Result<ntoskrnl::io::IoResult, HostError>) -> String {
    match r {
        Err(HostError::HostFailed { status, cause }) => {
            assert_eq!(status, STATUS_DEVICE_DOES_NOT_EXIST);
            cause
        }
        other => panic!("the request must fail with the driver host: {other:?}"),
    }
}

/// Sends `code` to `device` of `stack` to make its driver host fail; checks the client's error,
/// the report (`expect`, and the driver's frames), the old handle, the restart and a reopen, and
/// that `other` (another stack with its handle) and the registry did not notice. Returns the
/// report.
fn fail_and_recover(
    name: &str,
    stack: &mut IsolatedStack,
    device: &str,
    code: u32,
    expect: &[&str],
    other: (&mut IsolatedStack, u32),
    installed: &Installed,
) -> String {
    let (other, other_handle) = other;
    let other_pid = other.host_pid();
    let registry = installed.registry();
    let h = open(stack, device);
    ping(stack, h);
    let pid = stack.host_pid().unwrap();
    let asked = Instant::now();
    let cause = host_failed(stack.ioctl(h, code, &[], &[0; 4]));
    let answered = asked.elapsed();
    assert!(
        cause.contains(&format!(
            "IOCTL {code:#010x} on handle {h} failed: driver host (pid {pid})"
        )),
        "{name}: {cause}"
    );
    assert_eq!(stack.recoveries().len(), 1, "{name}");
    let r = stack.recoveries()[0].clone();
    for needle in expect
        .iter()
        .chain(&["1 client requests failed, 1 open handles are gone"])
    {
        assert!(
            r.report.contains(needle),
            "{name}: no {needle:?} in\n{}",
            r.report
        );
    }
    let recover = r.recover.unwrap_or_else(|| panic!("{name}: not restarted"));
    eprintln!(
        "{name}: detected in {:.1?}, restarted in {recover:.1?}, the client's error after {answered:.1?}",
        r.detect
    );
    // The old handle is gone for good; a reopen reaches the new driver host.
    let stale = host_failed(stack.ioctl(h, IOCTL_ICA_PING, &[], &[]));
    assert!(
        stale.contains("was opened on a driver host that is gone"),
        "{name}: {stale}"
    );
    assert!(matches!(stack.close(h), Err(HostError::HostFailed { .. })));
    assert!(matches!(stack.close(h), Err(HostError::InvalidHandle(_))));
    assert_ne!(stack.host_pid(), Some(pid), "{name}: a new driver host");
    let h = open(stack, device);
    ping(stack, h);
    assert_eq!(stack.close(h).unwrap(), STATUS_SUCCESS);
    // The other stack and the registry did not notice.
    assert_eq!(other.host_pid(), other_pid, "{name}: the other driver host");
    reverse(other, other_handle);
    assert!(other.recoveries().is_empty());
    assert_eq!(installed.registry(), registry, "{name}: the registry");
    r.report
}

#[test]
fn a_guest_fault_in_an_ioctl_is_reported_and_the_stack_restarts() {
    for arch in ARCHES {
        let name = format!("nullderef {}", arch_name(arch));
        let i = install(arch, &["nullderef.inf", "ioctl.inf"]);
        let mut stack = i.services(arch, &["IcaNull"], config());
        assert!(
            stack.started()[0]
                .contains("IcaNull: nullderef.sys loaded, DriverEntry returned STATUS_SUCCESS"),
            "{:?}",
            stack.started()
        );
        let mut other = i.services(arch, &["IcaIoctl"], config());
        let oh = open(&mut other, r"\\.\IcaIoctl");
        let register = if arch == Arch::X86 { "eax=" } else { "rax=" };
        let report = fail_and_recover(
            &name,
            &mut stack,
            r"\\.\IcaNull",
            IOCTL_ICA_NULL_DEREF,
            &[
                "failed: guest fault in nullderef.sys+0x",
                "page fault: read at 0x0",
                register,
                "guest backtrace:",
                "#1 nullderef.sys+0x",
                "#2 nullderef.sys+0x",
                "last kernel calls",
            ],
            (&mut other, oh),
            &i,
        );
        if arch == Arch::Amd64 {
            eprintln!("{report}");
        }
        assert_eq!(other.close(oh).unwrap(), STATUS_SUCCESS);
        for s in [stack, other] {
            let (lines, findings) = s.stop().unwrap();
            assert!(findings.is_empty(), "{name}: {findings:?}");
            assert!(
                lines.iter().any(|l| l.ends_with("DriverUnload done")),
                "{lines:?}"
            );
        }
    }
}

#[test]
fn a_host_side_panic_is_reported_and_the_stack_restarts() {
    // A bug in ICA's own code, not the driver's: the driver host panics before nullderef.sys
    // sees IOCTL_ICA_ADD (fault injection); one architecture is enough for host code.
    let arch = Arch::Amd64;
    let i = install(arch, &["nullderef.inf", "ioctl.inf"]);
    let mut other = i.services(arch, &["IcaIoctl"], config());
    let oh = open(&mut other, r"\\.\IcaIoctl");
    let mut cfg = config();
    cfg.env = vec![(
        loader::isolate::INJECT_PANIC_IOCTL.into(),
        format!("{IOCTL_ICA_ADD:#x}"),
    )];
    let mut stack = i.services(arch, &["IcaNull"], cfg);
    fail_and_recover(
        "host-side panic",
        &mut stack,
        r"\\.\IcaNull",
        IOCTL_ICA_ADD,
        &[
            "driver host panicked (host-side bug): ICA_INJECT_PANIC_IOCTL asked for a panic at IOCTL 0x00222400",
            "last kernel calls",
        ],
        (&mut other, oh),
        &i,
    );
    let (_, findings) = stack.stop().unwrap();
    assert!(findings.is_empty(), "{findings:?}");
    other.stop().unwrap();
}

#[test]
fn spins_are_stopped_by_the_watchdog_and_the_cpu_limit() {
    for arch in ARCHES {
        let i = install(arch, &["nullderef.inf", "ioctl.inf"]);
        let mut other = i.services(arch, &["IcaIoctl"], config());
        let oh = open(&mut other, r"\\.\IcaIoctl");

        let name = format!("spin at DISPATCH_LEVEL {}", arch_name(arch));
        let watchdog = ntoskrnl::Watchdog {
            call: Some(Duration::from_secs(10)),
            raised: Some(Duration::from_millis(300)),
        };
        let mut stack = i.services_watched(arch, &["IcaNull"], config(), watchdog);
        fail_and_recover(
            &name,
            &mut stack,
            r"\\.\IcaNull",
            IOCTL_ICA_SPIN_RAISED,
            &[
                "failed: guest fault in nullderef.sys+0x",
                "watchdog: spun at IRQL 2",
                "#0 nullderef.sys+0x",
            ],
            (&mut other, oh),
            &i,
        );
        stack.stop().unwrap();

        // At PASSIVE_LEVEL with no watchdog for the whole call: the CPU limit ends it.
        let name = format!("spin at PASSIVE_LEVEL {}", arch_name(arch));
        let mut cfg = config();
        cfg.cpu_limit = Some(Duration::from_secs(1));
        let watchdog = ntoskrnl::Watchdog {
            call: None,
            raised: Some(Duration::from_secs(2)),
        };
        let mut stack = i.services_watched(arch, &["IcaNull"], cfg, watchdog);
        fail_and_recover(
            &name,
            &mut stack,
            r"\\.\IcaNull",
            IOCTL_ICA_SPIN,
            &["nullderef.sys failed: CPU limit exceeded (1 s of CPU time; killed by SIGXCPU)"],
            (&mut other, oh),
            &i,
        );
        stack.stop().unwrap();
        other.stop().unwrap();
    }
}

#[test]
fn verifier_bug_checks_are_reported_and_the_stack_restarts() {
    for arch in ARCHES {
        let i = install(arch, &["sins.inf", "ioctl.inf"]);
        // DriverEntry wrote Sins = 1 into its service key, through the manager.
        assert_eq!(
            i.store.value(&service_key("IcaSins"), "Sins").unwrap(),
            None,
            "not started yet"
        );
        let mut stack = i.services(arch, &["IcaSins"], config());
        assert_eq!(
            i.store.value(&service_key("IcaSins"), "Sins").unwrap(),
            Some(RegValue::dword(1)),
            "the driver's write reached the store"
        );
        assert!(stack.registry_writes() >= 1);
        let mut other = i.services(arch, &["IcaIoctl"], config());
        let oh = open(&mut other, r"\\.\IcaIoctl");
        for (sin, expect) in [
            (
                IOCTL_ICA_SIN_OVERRUN,
                ["pool-overrun by sins.sys", "(SinOverrun+0x"],
            ),
            (
                IOCTL_ICA_SIN_DOUBLE_COMPLETE,
                ["irp-double-completion by sins.sys", "bug check 0x44"],
            ),
        ] {
            let name = format!("sins {sin:#x} {}", arch_name(arch));
            let mut stack = i.services(arch, &["IcaSins"], config());
            fail_and_recover(
                &name,
                &mut stack,
                r"\\.\IcaSins",
                sin,
                &expect,
                (&mut other, oh),
                &i,
            );
            let (_, findings) = stack.stop().unwrap();
            assert!(findings.is_empty(), "{name}: {findings:?}");
        }
        // A leak is not fatal: the driver goes on, and the stop reports it.
        let h = open(&mut stack, r"\\.\IcaSins");
        let r = stack.ioctl(h, IOCTL_ICA_SIN_LEAK_POOL, &[], &[]).unwrap();
        assert_eq!(r.status, STATUS_SUCCESS);
        ping(&mut stack, h);
        stack.close(h).unwrap();
        let (_, findings) = stack.stop().unwrap();
        assert!(
            findings.iter().any(|f| f.contains("pool-leak by sins.sys")),
            "{findings:?}"
        );
        assert!(other.recoveries().is_empty());
        other.stop().unwrap();
    }
}

#[test]
fn sigkill_of_an_idle_pnp_stack_with_a_filter_is_recovered() {
    for arch in ARCHES {
        let name = format!("filter.inf {}", arch_name(arch));
        let i = install(arch, &["filter.inf"]);
        let stack = start::device_stack(&i.root, &i.store, r"ROOT\ICAFUNCTION\0000").unwrap();
        let mut stack = i.start(arch, stack, config(), ntoskrnl::Watchdog::default());
        let add = |s: &mut IsolatedStack, h: u32| {
            let r = s
                .ioctl(h, IOCTL_ICA_ADD, &41u32.to_le_bytes(), &[0; 4])
                .unwrap();
            assert_eq!(r.status, STATUS_SUCCESS);
            u32::from_le_bytes(r.output[..4].try_into().unwrap())
        };
        let h = open(&mut stack, r"\\.\IcaFunction");
        assert_eq!(add(&mut stack, h), 41 + 1001, "{name}: through the filter");
        let pid = stack.host_pid().unwrap();
        // SAFETY: kill(2) of our own child process.
        assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGKILL) }, 0);
        let killed = Instant::now();
        while stack.recoveries().is_empty() {
            assert!(
                killed.elapsed() < Duration::from_secs(5),
                "{name}: not noticed"
            );
            stack.supervise().unwrap();
            std::thread::sleep(Duration::from_millis(1));
        }
        let noticed = killed.elapsed();
        let r = stack.recoveries()[0].clone();
        assert!(
            r.report.contains(&format!(
                "driver host (pid {pid}) of function.sys, filter.sys was killed by signal 9 (SIGKILL) without a report"
            )),
            "{name}: {}",
            r.report
        );
        assert!(
            r.report
                .contains("while idle; 0 client requests failed, 1 open handles are gone"),
            "{}",
            r.report
        );
        eprintln!(
            "{name}: SIGKILL noticed after {noticed:.1?}, restarted in {:.1?}",
            r.recover.unwrap_or_default()
        );
        assert!(
            stack
                .started()
                .iter()
                .any(|l| l == "IcaFilter: AddDevice returned STATUS_SUCCESS"),
            "the stack was built again: {:?}",
            stack.started()
        );
        assert!(matches!(
            stack.ioctl(h, IOCTL_ICA_ADD, &[0; 4], &[0; 4]),
            Err(HostError::HostFailed { .. })
        ));
        let h = open(&mut stack, r"\\.\IcaFunction");
        assert_eq!(add(&mut stack, h), 41 + 1001, "{name}: after the restart");
        stack.close(h).unwrap();
        let (lines, findings) = stack.stop().unwrap();
        assert!(findings.is_empty(), "{findings:?}");
        assert!(
            lines
                .iter()
                .any(|l| l.contains(r"device ROOT\ICAFUNCTION\0000 removed")),
            "{lines:?}"
        );
    }
}

#[test]
fn registry_writes_of_isolated_drivers_reach_the_store() {
    for arch in ARCHES {
        let name = format!("regtest {}", arch_name(arch));
        let i = install(arch, &[]);
        regtest::install(&i.store);
        let file = drivers_dir()
            .join("bin")
            .join(arch_name(arch))
            .join("regtest.sys");
        let stack = Stack::Device {
            instance: regtest::INSTANCE.into(),
            drivers: vec![ServiceImage {
                service: "regtest".into(),
                file: DriverFile::read(&file).unwrap(),
            }],
        };
        let mut stack = i.start(arch, stack, config(), ntoskrnl::Watchdog::default());
        let h = open(&mut stack, r"\\.\IcaRegtest");
        for code in [regtest::SELFTEST, regtest::REG_PNP_RESULT] {
            let r = stack.ioctl(h, code, &[], &[0; 128]).unwrap();
            assert_eq!(r.status, STATUS_SUCCESS, "{name}");
            regtest::check_result(&format!("{name} {code:#x}"), &r.output, "");
        }
        stack.close(h).unwrap();
        let writes = stack.registry_writes();
        eprintln!("{name}: {writes} registry writes forwarded to the manager");
        assert!(writes >= 10, "{name}: {writes}");

        // What the driver wrote is in the manager's store.
        regtest::assert_driver_writes(&i.store, 1);
        let (_, findings) = stack.stop().unwrap();
        assert!(findings.is_empty(), "{name}: {findings:?}");
        // The removal disabled the interface, through the manager too.
        regtest::assert_driver_writes(&i.store, 0);
    }
}

#[test]
fn a_crash_loop_of_a_stack_hits_the_restart_limit() {
    let i = install(Arch::Amd64, &["nullderef.inf"]);
    let mut cfg = config();
    cfg.max_restarts = 2;
    let mut stack = i.services(Arch::Amd64, &["IcaNull"], cfg);
    for round in 0..3 {
        let h = open(&mut stack, r"\\.\IcaNull");
        let cause = host_failed(stack.ioctl(h, IOCTL_ICA_NULL_DEREF, &[], &[0; 4]));
        assert!(
            cause.contains("guest fault in nullderef.sys+0x"),
            "round {round}: {cause}"
        );
    }
    assert_eq!(
        stack.recoveries().len(),
        3,
        "the first failure and 2 restarts"
    );
    assert_eq!(stack.host_pid(), None, "down for good");
    let e = stack.open(r"\\.\IcaNull").unwrap_err().to_string();
    assert!(
        e.contains(
            "nullderef.sys: restart limit reached (2 restarts within 60s); the stack stays down"
        ),
        "{e}"
    );
    assert!(matches!(
        stack.supervise(),
        Err(HostError::HostFailed { .. })
    ));
    let (lines, findings) = stack.stop().unwrap();
    assert!(
        lines.is_empty() && findings.is_empty(),
        "nothing runs to stop"
    );
}
