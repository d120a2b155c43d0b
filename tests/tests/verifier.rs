//! The verifier against sins.sys, a driver that commits one sin per IOCTL. Each sin is caught with
//! its rule and bug check, names the driver and the guest call site inside the function that
//! committed it (resolved through the image's exports); the host keeps running, another driver in
//! the same host and the registry are untouched. With the verifier off the driver behaves as on
//! Windows without Driver Verifier: no finding, or the bug check Windows raises itself.

use dbt::Arch;
use ica_tests::{driver_path, host, ioctl, sin, ARCHES};
use loader::{DriverHost, HostError};
use ntoskrnl::status::STATUS_SUCCESS;
use ntoskrnl::verifier::{Finding, Rule};
use ntoskrnl::{registry, Kernel, KernelError, LoadedImage};

/// When the verifier catches a sin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Caught {
    /// At the call, ending the request with the bug check.
    Fatal,
    /// At the call; the request completes.
    Noted,
    /// At unload; the unload goes on.
    AtUnload,
    /// At unload, failing it with the bug check.
    FatalAtUnload,
}

/// What the sin does with the verifier off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Off {
    /// Nothing visible: the request and the unload succeed.
    Fine,
    /// The request ends with the bug check Windows raises without Driver Verifier.
    BugCheck(u32),
    /// The unload ends with that bug check.
    UnloadBugCheck(u32),
}

struct Sin {
    code: u32,
    /// The exported function the call site lies in.
    function: &'static str,
    rule: Rule,
    /// Bug check code, and (index, value) of a parameter that says which violation it is.
    bug_check: Option<(u32, Option<(usize, u64)>)>,
    caught: Caught,
    /// What the unload then finds because the sin's call path ended before it cleaned up.
    leftovers: &'static [Rule],
    off: Off,
}

const fn sin(
    code: u32,
    function: &'static str,
    rule: Rule,
    bug_check: Option<(u32, Option<(usize, u64)>)>,
    caught: Caught,
    leftovers: &'static [Rule],
    off: Off,
) -> Sin {
    Sin {
        code,
        function,
        rule,
        bug_check,
        caught,
        leftovers,
        off,
    }
}

use Caught::*;

const SINS: &[Sin] = &[
    sin(
        sin::WAIT_AT_DISPATCH,
        "SinWaitAtDispatch",
        Rule::Irql,
        Some((0xC4, Some((0, 0x122)))),
        Fatal,
        &[],
        Off::BugCheck(0x0A),
    ),
    sin(
        sin::PASSIVE_AT_DISPATCH,
        "SinPassiveAtDispatch",
        Rule::Irql,
        Some((0xC4, Some((0, 0x2001F)))),
        Fatal,
        &[],
        Off::Fine,
    ),
    sin(
        sin::RELEASE_NOT_HELD,
        "SinReleaseNotHeld",
        Rule::SpinLockNotOwned,
        Some((0x10, None)),
        Fatal,
        &[],
        Off::BugCheck(0x10),
    ),
    sin(
        sin::ACQUIRE_TWICE,
        "SinAcquireTwice",
        Rule::SpinLockAlreadyOwned,
        Some((0x0F, None)),
        Fatal,
        &[],
        Off::BugCheck(0x0F),
    ),
    sin(
        sin::RETURN_HOLDING_LOCK,
        "SinDeviceControl",
        Rule::SpinLockHeld,
        Some((0xC4, Some((0, 0x40009)))),
        Fatal,
        &[],
        Off::Fine,
    ),
    sin(
        sin::OVERRUN,
        "SinOverrun",
        Rule::PoolOverrun,
        Some((0xC1, Some((3, 0x24)))),
        Fatal,
        &[Rule::PoolOverrun, Rule::PoolLeak],
        Off::Fine,
    ),
    sin(
        sin::UNDERRUN,
        "SinUnderrun",
        Rule::PoolUnderrun,
        Some((0xC1, Some((3, 0x23)))),
        Fatal,
        &[Rule::PoolUnderrun, Rule::PoolLeak],
        Off::Fine,
    ),
    sin(
        sin::OVERRUN_PAGE,
        "SinOverrunPage",
        Rule::PoolOverrun,
        Some((0xD6, None)),
        Fatal,
        &[Rule::PoolLeak],
        Off::Fine,
    ),
    sin(
        sin::USE_AFTER_FREE,
        "SinUseAfterFree",
        Rule::UseAfterFree,
        Some((0xD5, None)),
        Fatal,
        &[],
        Off::Fine,
    ),
    sin(
        sin::DOUBLE_FREE,
        "SinDoubleFree",
        Rule::DoubleFree,
        Some((0xC4, Some((0, 0x13)))),
        Fatal,
        &[],
        Off::BugCheck(0xC2),
    ),
    sin(
        sin::LEAK_POOL,
        "SinLeakPool",
        Rule::PoolLeak,
        Some((0xC4, Some((0, 0x62)))),
        AtUnload,
        &[],
        Off::Fine,
    ),
    sin(
        sin::LEAK_IRP,
        "SinLeakIrp",
        Rule::IrpLeak,
        None,
        AtUnload,
        &[],
        Off::Fine,
    ),
    sin(
        sin::LEAK_MDL,
        "SinLeakMdl",
        Rule::MdlLeak,
        Some((0xC4, Some((0, 0x62)))),
        AtUnload,
        &[],
        Off::Fine,
    ),
    sin(
        sin::LEAK_REFERENCE,
        "SinLeakReference",
        Rule::ReferenceLeak,
        None,
        AtUnload,
        &[],
        Off::Fine,
    ),
    sin(
        sin::DOUBLE_COMPLETE,
        "SinDoubleComplete",
        Rule::IrpDoubleCompletion,
        Some((0x44, None)),
        Fatal,
        &[],
        Off::BugCheck(0x44),
    ),
    sin(
        sin::PENDING_UNMARKED,
        "SinDeviceControl",
        Rule::IrpPendingNotMarked,
        Some((0xC9, Some((0, 0x23D)))),
        Noted,
        &[],
        Off::Fine,
    ),
    sin(
        sin::COMPLETE_AT_HIGH,
        "SinCompleteAtHigh",
        Rule::Irql,
        Some((0xC9, Some((0, 0x0E)))),
        Fatal,
        &[],
        Off::Fine,
    ),
    sin(
        sin::TIMER_AT_UNLOAD,
        "SinUnloadTimerDpc",
        Rule::TimerPending,
        Some((0xCE, None)),
        FatalAtUnload,
        &[],
        Off::UnloadBugCheck(0xCE),
    ),
];

/// Every value under `\Registry\Machine`, one line each, sorted.
fn registry_dump(k: &mut Kernel) -> Vec<String> {
    let mut out = Vec::new();
    let mut keys = vec!["\\Registry\\Machine".to_string()];
    while let Some(path) = keys.pop() {
        let backend = registry::backend(k);
        for i in 0.. {
            match backend.enum_value(&path, i) {
                Ok(Some((name, value))) => out.push(format!("{path}\\{name} = {value:?}")),
                _ => break,
            }
        }
        for i in 0.. {
            match backend.enum_key(&path, i) {
                Ok(Some(info)) => keys.push(format!("{path}\\{}", info.name)),
                _ => break,
            }
        }
    }
    out.sort();
    out
}

/// Checks that `f` reports `s` in sins.sys (mapped as `image`) at a site inside `s.function`.
fn check(f: &Finding, s: &Sin, image: &LoadedImage, fatal: bool) {
    let what = format!("{} ({f})", s.function);
    assert_eq!(f.rule, s.rule, "{what}");
    assert_eq!(f.driver, "sins.sys", "{what}");
    assert_eq!(f.fatal, fatal, "{what}");
    let site = f
        .call_site
        .as_ref()
        .unwrap_or_else(|| panic!("no call site: {what}"));
    let (module, offset) = site.module.clone().unwrap_or_else(|| panic!("{what}"));
    assert_eq!(
        (module.as_str(), site.address),
        ("sins.sys", image.base + offset),
        "{what}"
    );
    let (symbol, into) = site.symbol.clone().unwrap_or_else(|| panic!("{what}"));
    assert_eq!(symbol.split('@').next(), Some(s.function), "{what}");
    let start = image
        .symbols
        .iter()
        .find(|(_, n)| *n == symbol)
        .map(|(o, _)| *o)
        .expect("the symbol is an export");
    let next = image
        .symbols
        .iter()
        .map(|(o, _)| *o)
        .filter(|&o| o > start)
        .min()
        .unwrap_or(image.size);
    assert!(
        start + into < next,
        "the site lies inside {}: {what}",
        s.function
    );
    match (s.bug_check, f.bug_check) {
        (None, None) => {}
        (Some((code, param)), Some(found)) => {
            assert_eq!(found.code, code, "{what}");
            if let Some((i, v)) = param {
                assert_eq!(found.parameters[i], v, "{what}");
            }
        }
        (want, got) => panic!("bug check {want:?}, found {got:?}: {what}"),
    }
}

fn load(h: &mut DriverHost, arch: Arch, name: &str) -> ntoskrnl::pnp::Driver {
    h.load_driver(&driver_path(arch, name))
        .unwrap_or_else(|e| panic!("{e}"))
}

/// The sin with the verifier on (the tests' default), next to ioctl.sys.
fn caught(arch: Arch, s: &Sin) {
    let mut h = host(arch);
    let other = load(&mut h, arch, "ioctl");
    let sins = load(&mut h, arch, "sins");
    let image =
        h.k.images
            .iter()
            .find(|i| i.name == "sins.sys")
            .cloned()
            .expect("mapped");
    let oh = h.open("\\\\.\\IcaIoctl").unwrap().unwrap();
    h.write(oh, b"kept by ioctl.sys").unwrap();
    let sh = h.open("\\\\.\\IcaSins").unwrap().unwrap();
    let before = registry_dump(&mut h.k);
    assert!(
        before.iter().any(|l| l.contains("\\sins\\Sins = ")),
        "DriverEntry wrote its value"
    );

    let r = h.ioctl(sh, s.code, &[], &[]);
    match s.caught {
        Fatal => {
            let err = r.expect_err("the sin ends the request");
            let HostError::Kernel { error, report } = err else {
                panic!("{}: {err}", s.function)
            };
            let f = error
                .finding()
                .cloned()
                .unwrap_or_else(|| panic!("{error}"));
            check(&f, s, &image, true);
            assert!(
                report.contains(&format!("verifier: {}", s.rule)),
                "{report}"
            );
            assert_eq!(h.k.verifier.take_findings(), vec![f]);
        }
        Noted => {
            assert_eq!(r.unwrap().status, STATUS_SUCCESS, "{}", s.function);
            let found = h.k.verifier.take_findings();
            assert_eq!(found.len(), 1, "{found:?}");
            check(&found[0], s, &image, false);
        }
        AtUnload | FatalAtUnload => {
            assert_eq!(r.unwrap().status, STATUS_SUCCESS, "{}", s.function);
            assert_eq!(h.k.verifier.take_findings(), vec![], "{}", s.function);
        }
    }

    // The host goes on: both drivers answer, ioctl.sys kept its data, the registry is as it was.
    assert_eq!(
        h.ioctl(sh, ioctl::PING, &[], &[]).unwrap().status,
        STATUS_SUCCESS
    );
    assert_eq!(h.read(oh, 64).unwrap().output, b"kept by ioctl.sys");
    let r = h.ioctl(oh, ioctl::REVERSE, b"abc", &[0; 3]).unwrap();
    assert_eq!(r.output, b"cba");
    assert_eq!(registry_dump(&mut h.k), before, "{}", s.function);
    h.close(oh).unwrap();
    h.unload_driver(&other).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        h.k.verifier.take_findings(),
        vec![],
        "ioctl.sys unloads clean"
    );

    h.close(sh).unwrap();
    let unloaded = h.unload_driver(&sins);
    let found = h.k.verifier.take_findings();
    match s.caught {
        AtUnload => {
            unloaded.unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(found.len(), 1, "{found:?}");
            check(&found[0], s, &image, false);
        }
        FatalAtUnload => {
            let HostError::Kernel { error, .. } = unloaded.expect_err("the unload fails") else {
                panic!("{}", s.function)
            };
            let f = error
                .finding()
                .cloned()
                .unwrap_or_else(|| panic!("{error}"));
            check(&f, s, &image, true);
            assert_eq!(found, vec![f]);
        }
        Fatal | Noted => {
            unloaded.unwrap_or_else(|e| panic!("{e}"));
            let rules: Vec<Rule> = found.iter().map(|f| f.rule).collect();
            assert_eq!(rules, s.leftovers, "{}: {found:?}", s.function);
            assert!(found.iter().all(|f| f.driver == "sins.sys" && !f.fatal));
        }
    }
}

/// The sin with the verifier off.
fn uncaught(arch: Arch, s: &Sin) {
    let mut h = DriverHost::new(arch).expect("host");
    let sins = load(&mut h, arch, "sins");
    let sh = h.open("\\\\.\\IcaSins").unwrap().unwrap();
    let r = h.ioctl(sh, s.code, &[], &[]);
    match s.off {
        Off::Fine | Off::UnloadBugCheck(_) => {
            assert_eq!(r.unwrap().status, STATUS_SUCCESS, "{}", s.function)
        }
        Off::BugCheck(code) => match r {
            Err(HostError::Kernel {
                error:
                    KernelError::BugCheck {
                        code: c,
                        finding: None,
                        ..
                    },
                ..
            }) => assert_eq!(c, code, "{}", s.function),
            other => panic!(
                "{}: bug check {code:#x} expected, got {other:?}",
                s.function
            ),
        },
    }
    assert_eq!(
        h.ioctl(sh, ioctl::PING, &[], &[]).unwrap().status,
        STATUS_SUCCESS
    );
    h.close(sh).unwrap();
    let unloaded = h.unload_driver(&sins);
    match s.off {
        Off::UnloadBugCheck(code) => match unloaded {
            Err(HostError::Kernel {
                error:
                    KernelError::BugCheck {
                        code: c,
                        finding: None,
                        ..
                    },
                ..
            }) => assert_eq!(c, code),
            other => panic!(
                "{}: bug check {code:#x} at unload expected, got {other:?}",
                s.function
            ),
        },
        _ => unloaded.unwrap_or_else(|e| panic!("{}: {e}", s.function)),
    }
    assert!(h.k.verifier.findings().is_empty());
}

#[test]
fn every_sin_is_caught_with_its_rule_driver_and_call_site() {
    for arch in ARCHES {
        for s in SINS {
            caught(arch, s);
        }
    }
}

#[test]
fn without_the_verifier_the_sins_go_as_on_windows_without_driver_verifier() {
    for arch in ARCHES {
        for s in SINS {
            uncaught(arch, s);
        }
    }
}
