//! The persistent registry store: Windows naming rules, typed values, enumeration order, delete
//! semantics, transactions, persistence, and the installer's keys.

use std::path::PathBuf;

use loader::registry::windows::{addreg, addreg_value, DeviceInstance, DriverKey, Service};
use loader::registry::{reg_type, RegError, RegValue, RegistryStore};
use ntoskrnl::registry::RegistryBackend;

const SOFTWARE: &str = r"\Registry\Machine\Software";

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ica-registry-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn store(name: &str) -> RegistryStore {
    RegistryStore::open(&scratch(name)).expect("open store")
}

#[test]
fn names_are_case_insensitive_and_keep_their_case() {
    let s = store("case");
    let key = format!(r"{SOFTWARE}\IcaVendor\MyDriver");
    s.write(|b| {
        assert!(b.create_key(&key)?);
        assert!(
            !b.create_key(&key.to_uppercase())?,
            "same key in other case"
        );
        b.set_value(&key, "LinkSpeed", &RegValue::dword(100))?;
        b.set_value(&key, "LINKSPEED", &RegValue::dword(1000))
    })
    .unwrap();
    let lower = key.to_lowercase();
    assert!(s.key_exists(&lower).unwrap());
    assert_eq!(s.key_info(&lower).unwrap().name, "MyDriver");
    assert_eq!(
        s.subkeys(&format!(r"{SOFTWARE}\icavendor")).unwrap(),
        ["MyDriver"]
    );
    assert_eq!(
        s.values(&lower).unwrap(),
        [("LinkSpeed".to_string(), RegValue::dword(1000))],
        "replaced in place under the first name"
    );
    assert_eq!(
        s.value(&key, "linkspeed").unwrap(),
        Some(RegValue::dword(1000))
    );
    assert!(
        s.key_exists(r"\Registry\Machine\System\ControlSet001\Services")
            .unwrap(),
        "ControlSet001 is CurrentControlSet"
    );
}

#[test]
fn typed_values_round_trip() {
    let s = store("types");
    let key = format!(r"{SOFTWARE}\Types");
    let values = vec![
        ("".to_string(), RegValue::sz("default value")),
        ("Sz".to_string(), RegValue::sz("Grüße, \"quoted\" \\ back")),
        (
            "Expand".to_string(),
            RegValue::expand_sz(r"%SystemRoot%\system32"),
        ),
        (
            "Multi".to_string(),
            RegValue::multi_sz(&["one", "", "three"]),
        ),
        ("Dword".to_string(), RegValue::dword(0xDEAD_BEEF)),
        ("Qword".to_string(), RegValue::qword(0x0102_0304_0506_0708)),
        ("Binary".to_string(), RegValue::binary(&[0, 1, 2, 255])),
        ("Empty".to_string(), RegValue::binary(&[])),
        ("None".to_string(), RegValue::new(reg_type::NONE, vec![9])),
        ("Odd".to_string(), RegValue::new(0x1234_5678, vec![1, 2, 3])),
    ];
    s.write(|b| {
        for (n, v) in &values {
            b.set_value(&key, n, v)?;
        }
        Ok(())
    })
    .unwrap();
    assert_eq!(
        s.values(&key).unwrap(),
        values,
        "creation order, exact bytes"
    );
    let v = s.value(&key, "multi").unwrap().unwrap();
    assert_eq!(
        v.as_multi_sz().unwrap(),
        ["one"],
        "the empty string ends the list"
    );
    assert_eq!(
        s.value(&key, "DWORD").unwrap().unwrap().as_dword(),
        Some(0xDEAD_BEEF)
    );
    assert_eq!(
        s.value(&key, "qword").unwrap().unwrap().as_qword(),
        Some(0x0102_0304_0506_0708)
    );
    assert_eq!(
        s.value(&key, "expand")
            .unwrap()
            .unwrap()
            .as_str()
            .as_deref(),
        Some(r"%SystemRoot%\system32")
    );
}

#[test]
fn subkeys_enumerate_sorted_case_insensitively() {
    let s = store("order");
    let key = format!(r"{SOFTWARE}\Order");
    s.write(|b| {
        for name in ["delta", "Charlie", "ALPHA", "bravo", "_under", "10", "9"] {
            b.create_key(&format!(r"{key}\{name}"))?;
        }
        Ok(())
    })
    .unwrap();
    assert_eq!(
        s.subkeys(&key).unwrap(),
        ["10", "9", "ALPHA", "bravo", "Charlie", "delta", "_under"]
    );
    let mut backend = s.backend();
    let names: Vec<String> = (0..)
        .map_while(|i| backend.enum_key(&key, i).unwrap())
        .map(|i| i.name)
        .collect();
    assert_eq!(names, s.subkeys(&key).unwrap());
    let info = backend.key_info(&key).unwrap();
    assert_eq!((info.subkeys, info.max_name_len), (7, 14));
    backend.set_value(&key, "V", &RegValue::dword(1)).unwrap();
    assert_eq!(
        backend.set_value(&format!(r"{key}\missing"), "V", &RegValue::dword(1)),
        Err(RegError::NotFound(format!(r"{key}\missing"))),
        "the kernel never creates keys by setting values"
    );
}

#[test]
fn delete_follows_windows() {
    let s = store("delete");
    let key = format!(r"{SOFTWARE}\Del");
    s.write(|b| {
        b.set_value(
            &format!(r"{key}\Child\Grandchild"),
            "x",
            &RegValue::dword(1),
        )?;
        b.set_value(&key, "keep", &RegValue::dword(2))
    })
    .unwrap();
    let mut backend = s.backend();
    assert_eq!(
        backend.delete_key(&key),
        Err(RegError::CannotDelete(key.clone())),
        "a key with subkeys cannot be deleted"
    );
    assert!(matches!(
        backend.delete_key(r"\Registry\Machine"),
        Err(RegError::CannotDelete(_))
    ));
    assert_eq!(backend.delete_value(&key, "KEEP"), Ok(true));
    assert_eq!(backend.delete_value(&key, "keep"), Ok(false));
    assert_eq!(
        backend.delete_key(&format!(r"{key}\child\grandchild")),
        Ok(())
    );
    assert_eq!(
        s.subkeys(&format!(r"{key}\Child")).unwrap(),
        Vec::<String>::new()
    );
    assert_eq!(s.write(|b| b.delete_tree(&key)), Ok(true));
    assert!(!s.key_exists(&key).unwrap());
    assert_eq!(s.write(|b| b.delete_tree(&key)), Ok(false));
    // Skeleton keys and their ancestors stay (a store gets them back whenever it is opened).
    for kept in [
        r"\Registry\User\.Default",
        r"\Registry\Machine\System",
        r"\Registry\Machine\SYSTEM\CurrentControlSet\Services",
        r"\Registry\Machine",
    ] {
        assert_eq!(
            s.write(|b| b.delete_tree(kept)),
            Err(RegError::CannotDelete(kept.to_string()))
        );
        assert!(s.key_exists(kept).unwrap());
    }
    assert!(matches!(
        backend.create_key(r"\Registry\Hive", ""),
        Err(RegError::AccessDenied(_))
    ));
}

#[test]
fn a_failed_batch_changes_nothing_and_commits_persist() {
    let dir = scratch("txn");
    let key = format!(r"{SOFTWARE}\Txn");
    {
        let s = RegistryStore::open(&dir).unwrap();
        s.write(|b| b.set_value(&key, "a", &RegValue::dword(1)))
            .unwrap();
        let failed = s.write(|b| {
            b.set_value(&key, "a", &RegValue::dword(2))?;
            b.set_value(&format!(r"{key}\New"), "b", &RegValue::dword(3))?;
            b.delete_key(&key) // has a subkey now: fails, so the whole batch is discarded
        });
        assert!(matches!(failed, Err(RegError::CannotDelete(_))));
        assert_eq!(s.value(&key, "a").unwrap(), Some(RegValue::dword(1)));
        assert!(!s.key_exists(&format!(r"{key}\New")).unwrap());
    }
    let reopened = RegistryStore::open(&dir).unwrap();
    assert_eq!(reopened.value(&key, "a").unwrap(), Some(RegValue::dword(1)));
    assert!(reopened.path().ends_with("registry.redb"));
}

#[test]
fn installer_writes_the_keys_windows_writes() {
    let s = store("install");
    let class = "{4d36e972-e325-11ce-bfc1-08002be10318}";
    let (driver, instance) = s
        .write(|b| {
            b.write_service(&Service {
                display_name: Some("Intel(R) PRO/1000".into()),
                load_order_group: Some("NDIS".into()),
                ..Service::kernel_driver("e1000", "e1000.sys")
            })?;
            b.write_class_key(class, "Net", "Network adapters")?;
            let first = b.new_driver_key(class)?;
            let driver = b.new_driver_key(class)?;
            assert_ne!(first, driver);
            let key = b.write_driver_key(
                &driver,
                &DriverKey {
                    driver_desc: "Intel PRO/1000 MT".into(),
                    matching_device_id: Some(r"pci\ven_8086&dev_100e".into()),
                    ..DriverKey::default()
                },
            )?;
            b.apply_addreg(&key, "", "*SpeedDuplex", 0, &["0".into()])?;
            b.apply_addreg(
                &key,
                r"Ndi\params\*SpeedDuplex",
                "default",
                0,
                &["0".into()],
            )?;
            b.apply_addreg(&key, "", "BusType", addreg::TYPE_DWORD, &["5".into()])?;
            b.apply_addreg(&key, "", "*SpeedDuplex", addreg::NOCLOBBER, &["9".into()])?;
            let instance = b.new_device_instance_id(r"PCI\VEN_8086&DEV_100E")?;
            b.write_device_instance(&DeviceInstance {
                instance_id: instance.clone(),
                hardware_ids: vec![r"PCI\VEN_8086&DEV_100E".into()],
                device_desc: "Intel PRO/1000 MT".into(),
                class: Some("Net".into()),
                class_guid: Some(class.into()),
                service: Some("e1000".into()),
                driver: Some(driver.clone()),
                ..DeviceInstance::default()
            })?;
            Ok((driver, instance))
        })
        .unwrap();
    assert_eq!(driver, r"{4D36E972-E325-11CE-BFC1-08002BE10318}\0001");
    assert_eq!(instance, r"PCI\VEN_8086&DEV_100E\0000");
    let ccs = r"\Registry\Machine\System\CurrentControlSet";
    let svc = format!(r"{ccs}\Services\e1000");
    assert_eq!(s.value(&svc, "Start").unwrap(), Some(RegValue::dword(3)));
    assert_eq!(
        s.value(&svc, "ImagePath").unwrap(),
        Some(RegValue::expand_sz(
            r"\SystemRoot\System32\drivers\e1000.sys"
        ))
    );
    let drv = format!(r"{ccs}\Control\Class\{driver}");
    assert_eq!(
        s.value(&drv, "*SpeedDuplex").unwrap(),
        Some(RegValue::sz("0"))
    );
    assert_eq!(s.value(&drv, "BusType").unwrap(), Some(RegValue::dword(5)));
    assert!(s
        .key_exists(&format!(r"{drv}\Ndi\Params\*SpeedDuplex"))
        .unwrap());
    let dev = format!(r"{ccs}\Enum\{instance}");
    assert_eq!(
        s.value(&dev, "Driver").unwrap().and_then(|v| v.as_str()),
        Some(driver)
    );
    assert_eq!(
        s.value(&dev, "ClassGUID")
            .unwrap()
            .and_then(|v| v.as_str())
            .as_deref(),
        Some("{4D36E972-E325-11CE-BFC1-08002BE10318}")
    );
    assert!(s.key_exists(&format!(r"{dev}\Device Parameters")).unwrap());
}

#[test]
fn addreg_types() {
    let v = |flags, items: &[&str]| {
        addreg_value(
            flags,
            &items.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        )
    };
    assert_eq!(v(0, &["x"]), Ok(RegValue::sz("x")));
    assert_eq!(
        v(addreg::TYPE_MULTI_SZ, &["a", "b"]),
        Ok(RegValue::multi_sz(&["a", "b"]))
    );
    assert_eq!(
        v(addreg::TYPE_EXPAND_SZ, &["%x%"]),
        Ok(RegValue::expand_sz("%x%"))
    );
    assert_eq!(v(addreg::TYPE_DWORD, &["0x10"]), Ok(RegValue::dword(16)));
    assert_eq!(
        v(addreg::TYPE_DWORD, &["01", "02", "00", "00"]),
        Ok(RegValue::dword(0x201))
    );
    assert_eq!(
        v(addreg::BINVALUETYPE, &["de", "ad"]),
        Ok(RegValue::binary(&[0xDE, 0xAD]))
    );
    assert!(v(addreg::BINVALUETYPE, &["xyz"]).is_err());
}
