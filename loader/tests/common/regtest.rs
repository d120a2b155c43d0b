//! regtest.sys as the installer would set it up, and the checks of what its in-driver tests
//! write, shared by the in-process (registry_kernel.rs) and the isolated (isolation_stack.rs)
//! registry tests.

use loader::registry::windows::{
    device_parameters_key, service_key, DeviceInstance, DriverKey, Service,
};
use loader::registry::{RegValue, RegistryStore};

/// GUID_DEVCLASS_SYSTEM.
const SYSTEM_CLASS: &str = "{4D36E97D-E325-11CE-BFC1-08002BE10318}";
/// The interface class regtest.sys registers.
pub const INTERFACE: &str = "{8C6D1A3E-2F4B-4C5E-9A1B-3C4D5E6F7081}";
/// regtest's root device instance.
pub const INSTANCE: &str = r"ROOT\ICA_REGTEST\0000";
/// IOCTL_ICA_SELFTEST: the driver's registry checks.
pub const SELFTEST: u32 = 0x0022_2010;
/// IOCTL_ICA_REG_PNP_RESULT: the checks its AddDevice and START ran.
pub const REG_PNP_RESULT: u32 = 0x0022_3000;

/// Installs regtest the way the installer does: its service, a driver key with an AddReg value,
/// and the device instance pointing at both.
pub fn install(store: &RegistryStore) {
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

/// Checks an ICA_SELFTEST_RESULT (passed, failed, first failure) of `what`: none failed and at
/// least 10 ran; `context` is shown with a failure. Returns how many passed.
pub fn check_result(what: &str, out: &[u8], context: &str) -> u32 {
    assert_eq!(out.len(), 128, "{what}: ICA_SELFTEST_RESULT");
    let passed = u32::from_le_bytes(out[0..4].try_into().unwrap());
    let failed = u32::from_le_bytes(out[4..8].try_into().unwrap());
    let text = &out[8..];
    let first = String::from_utf8_lossy(&text[..text.iter().position(|&b| b == 0).unwrap_or(0)]);
    assert_eq!(
        failed, 0,
        "{what}: {failed} checks failed, first: {first}\n{context}"
    );
    assert!(passed >= 10, "{what}: only {passed} checks ran");
    passed
}

/// The device interface's registry key.
pub fn interface_key() -> String {
    format!(
        r"\Registry\Machine\System\CurrentControlSet\Control\DeviceClasses\{INTERFACE}\##?#ROOT#ICA_REGTEST#0000#{INTERFACE}"
    )
}

/// Asserts that `store` holds what regtest's checks wrote: the service's Parameters (values
/// written, one deleted, subkeys created), the device's FromAddDevice, and the device interface
/// with its `Linked` state, the FromInterface value in its `Device Parameters` and its property.
pub fn assert_driver_writes(store: &RegistryStore, linked: u32) {
    let params = format!(r"{}\Parameters", service_key("regtest"));
    let host_check = format!(r"{params}\HostCheck");
    let value = |key: &str, name: &str| store.value(key, name).unwrap();
    assert_eq!(value(&host_check, "answer"), Some(RegValue::dword(42)));
    assert_eq!(
        value(&host_check, "FromDriver"),
        Some(RegValue::sz("hello from regtest"))
    );
    assert_eq!(value(&params, "Speed"), Some(RegValue::dword(200)));
    assert_eq!(value(&params, "Blob"), None, "deleted by the driver");
    assert_eq!(
        store.subkeys(&params).unwrap(),
        ["alpha", "Beta", "Created", "HostCheck"]
    );
    assert_eq!(
        value(&device_parameters_key(INSTANCE), "FromAddDevice"),
        Some(RegValue::dword(1))
    );
    let interface = interface_key();
    assert_eq!(
        value(&interface, "DeviceInstance"),
        Some(RegValue::sz(INSTANCE))
    );
    assert_eq!(
        value(&format!(r"{interface}\#\Control"), "Linked"),
        Some(RegValue::dword(linked))
    );
    assert_eq!(
        value(
            &format!(r"{interface}\#\Device Parameters"),
            "FromInterface"
        ),
        Some(RegValue::dword(7)),
        "IoOpenDeviceInterfaceRegistryKey"
    );
    assert_eq!(
        value(&format!(r"{interface}\#\Properties\{INTERFACE}\0002"), ""),
        Some(RegValue::new(0xFFFF_0007, 0x1234u32.to_le_bytes().to_vec())),
        "IoSetDeviceInterfacePropertyData: DEVPROP_TYPE_UINT32"
    );
}
