//! The kernel registry API end to end: regtest.sys (x86 and x64) runs its in-driver checks of the
//! Zw*Key services, RtlQueryRegistryValues, RtlWriteRegistryValue and the PnP registry services
//! against the persistent store, and the host then finds what the driver wrote in the store.

use std::path::{Path, PathBuf};

use dbt::Arch;
use loader::registry::windows::{
    device_parameters_key, enum_key, service_key, DeviceInstance, DriverKey, Service,
};
use loader::registry::{RegValue, RegistryStore};
use loader::DriverHost;
use ntoskrnl::dbg::DebugLog;

const SELFTEST: u32 = 0x0022_2010;
const REG_PNP_RESULT: u32 = 0x0022_3000;
/// GUID_DEVCLASS_SYSTEM.
const SYSTEM_CLASS: &str = "{4D36E97D-E325-11CE-BFC1-08002BE10318}";
/// The interface class regtest.sys registers.
const INTERFACE: &str = "{8C6D1A3E-2F4B-4C5E-9A1B-3C4D5E6F7081}";
const INSTANCE: &str = r"ROOT\ICA_REGTEST\0000";

fn driver(arch: Arch) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/drivers/bin")
        .join(arch.name())
        .join("regtest.sys")
}

/// Installs regtest the way the installer does: its service, a driver key with an AddReg value,
/// and the device instance pointing at both.
fn install(store: &RegistryStore) {
    store
        .write(|b| {
            b.write_service(&Service::kernel_driver("regtest", "regtest.sys"))?;
            b.write_class_key(SYSTEM_CLASS, "System", "System devices")?;
            let driver = b.new_driver_key(SYSTEM_CLASS)?;
            let key = b.write_driver_key(
                &driver,
                &DriverKey {
                    driver_desc: "ICA registry test".into(),
                    matching_device_id: Some(r"root\ica_regtest".into()),
                    ..DriverKey::default()
                },
            )?;
            b.set_value(&key, "NetworkAddress", &RegValue::sz("02AABBCCDDEE"))?;
            b.write_device_instance(&DeviceInstance {
                instance_id: INSTANCE.into(),
                hardware_ids: vec![r"Root\ICA_REGTEST".into()],
                device_desc: "ICA registry test device".into(),
                class: Some("System".into()),
                class_guid: Some(SYSTEM_CLASS.into()),
                service: Some("regtest".into()),
                driver: Some(driver),
                ..DeviceInstance::default()
            })?;
            Ok(())
        })
        .expect("install regtest");
}

fn check_result(host: &mut DriverHost, what: &str, out: &[u8]) {
    assert_eq!(out.len(), 128, "{what}: ICA_SELFTEST_RESULT");
    let passed = u32::from_le_bytes(out[0..4].try_into().unwrap());
    let failed = u32::from_le_bytes(out[4..8].try_into().unwrap());
    let text = &out[8..];
    let first = String::from_utf8_lossy(&text[..text.iter().position(|&b| b == 0).unwrap_or(0)])
        .into_owned();
    let log = host.k.extension::<DebugLog>().lines.join("\n");
    assert_eq!(
        failed, 0,
        "{what}: {failed} checks failed, first: {first}\ndriver output:\n{log}"
    );
    assert!(passed >= 10, "{what}: only {passed} checks ran");
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
    install(&store);

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

    // What the driver wrote is in the store.
    let params = format!(r"{}\Parameters", service_key("regtest"));
    let host_check = format!(r"{params}\HostCheck");
    assert_eq!(
        store.value(&host_check, "answer").unwrap(),
        Some(RegValue::dword(42))
    );
    assert_eq!(
        store.value(&host_check, "FromDriver").unwrap(),
        Some(RegValue::sz("hello from regtest"))
    );
    assert_eq!(
        store.value(&params, "Speed").unwrap(),
        Some(RegValue::dword(200))
    );
    assert_eq!(
        store.value(&params, "Blob").unwrap(),
        None,
        "deleted by the driver"
    );
    assert_eq!(
        store.subkeys(&params).unwrap(),
        ["alpha", "Beta", "Created", "HostCheck"]
    );
    assert_eq!(
        store
            .value(&device_parameters_key(INSTANCE), "FromAddDevice")
            .unwrap(),
        Some(RegValue::dword(1))
    );
    let interface_key = format!(
        r"\Registry\Machine\System\CurrentControlSet\Control\DeviceClasses\{INTERFACE}\##?#ROOT#ICA_REGTEST#0000#{INTERFACE}"
    );
    assert_eq!(
        store.value(&interface_key, "DeviceInstance").unwrap(),
        Some(RegValue::sz(INSTANCE))
    );
    assert_eq!(
        store
            .value(&format!(r"{interface_key}\#\Control"), "Linked")
            .unwrap(),
        Some(RegValue::dword(1))
    );
    let link = format!(r"\\?\ROOT#ICA_REGTEST#0000#{INTERFACE}");
    assert_eq!(
        host.k.io.resolve(&link),
        Some(pdo),
        "the interface is enabled"
    );

    host.close(handle).expect("close");
    host.remove_stack(pdo).expect("remove");
    assert_eq!(host.k.io.resolve(&link), None, "disabled at removal");
    assert_eq!(
        store
            .value(&format!(r"{interface_key}\#\Control"), "Linked")
            .unwrap(),
        Some(RegValue::dword(0))
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
