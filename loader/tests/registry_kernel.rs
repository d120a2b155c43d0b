//! The kernel registry API end to end: regtest.sys (x86 and x64) runs its in-driver checks of the
//! Zw*Key services, RtlQueryRegistryValues, RtlWriteRegistryValue and the PnP registry services
//! against the persistent store, and the host then finds what the driver wrote in the store.

#[path = "common/regtest.rs"]
mod regtest;

use std::path::{Path, PathBuf};

use dbt::Arch;
use loader::registry::windows::{enum_key, service_key};
use loader::registry::{RegValue, RegistryStore};
use loader::DriverHost;
use ntoskrnl::dbg::DebugLog;
use regtest::{INSTANCE, INTERFACE, REG_PNP_RESULT, SELFTEST};

fn driver(arch: Arch) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/drivers/bin")
        .join(arch.name())
        .join("regtest.sys")
}

fn check_result(host: &mut DriverHost, what: &str, out: &[u8]) {
    let log = host.k.extension::<DebugLog>().lines.join("\n");
    let passed = regtest::check_result(what, out, &format!("driver output:\n{log}"));
    eprintln!("{what}: {passed} checks passed");
}

fn run(arch: Arch) {
    let dir = std::env::temp_dir().join(format!(
        "ica-registry-kernel-{}-{}",
        std::process::id(),
        arch.name()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    let store = RegistryStore::open(&dir).expect("open store");
    regtest::install(&store);

    let mut host = DriverHost::new(arch).expect("host").with_registry(&store);
    let drv = host.load_driver(&driver(arch)).expect("load regtest.sys");
    let pdo = host
        .build_stack("ICA_REGTEST", &[&drv])
        .expect("build the device stack");
    let handle = host
        .open(r"\\.\IcaRegtest")
        .expect("open")
        .expect("IRP_MJ_CREATE");
    let out = host
        .ioctl(handle, SELFTEST, &[], &[0; 128])
        .expect("selftest");
    assert_eq!(out.status, 0, "IOCTL_ICA_SELFTEST status");
    check_result(&mut host, "registry selftest", &out.output);
    let out = host
        .ioctl(handle, REG_PNP_RESULT, &[], &[0; 128])
        .expect("pnp result");
    check_result(&mut host, "PnP registry checks", &out.output);

    assert_eq!(
        host.k
            .extension::<ntoskrnl::pnp::PnpManager>()
            .children
            .get(&pdo),
        Some(&vec![]),
        "IoInvalidateDeviceRelations: BusRelations queried, no children"
    );
    // What the driver wrote is in the store.
    regtest::assert_driver_writes(&store, 1);
    let link = format!(r"\\?\ROOT#ICA_REGTEST#0000#{INTERFACE}");
    assert_eq!(
        host.k.io.resolve(&link),
        Some(pdo),
        "the interface is enabled"
    );

    host.close(handle).expect("close");
    host.remove_stack(pdo).expect("remove");
    assert_eq!(host.k.io.resolve(&link), None, "disabled at removal");
    regtest::assert_driver_writes(&store, 0);
    // The checks REMOVE made: the removal notification, unregistering, WMI deregistration.
    let handle = host
        .open(r"\\.\IcaRegtest")
        .expect("open")
        .expect("IRP_MJ_CREATE");
    let out = host
        .ioctl(handle, REG_PNP_RESULT, &[], &[0; 128])
        .expect("pnp result");
    check_result(&mut host, "PnP checks after REMOVE", &out.output);
    host.close(handle).expect("close");
    assert_eq!(
        host.k
            .extension::<ntoskrnl::pnp::Notifications>()
            .registered(),
        0,
        "the driver unregistered its notification"
    );
    host.unload_driver(&drv).expect("unload");
    assert_eq!(
        ntoskrnl::registry::open_handles(&mut host.k),
        0,
        "no key handle leaked"
    );
    drop(host);
    drop(store);

    // Persistent: a new process (here: a new open) sees it all.
    let reopened = RegistryStore::open(&dir).expect("reopen");
    let host_check = format!(r"{}\Parameters\HostCheck", service_key("regtest"));
    assert_eq!(
        reopened.value(&host_check, "Answer").unwrap(),
        Some(RegValue::dword(42))
    );
    assert!(reopened.key_exists(&enum_key(INSTANCE)).unwrap());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn regtest_x86() {
    run(Arch::X86);
}

#[test]
fn regtest_x64() {
    run(Arch::X64);
}
