//! Whole vendor-style INFs (tests/inf/*.inf): a UTF-16 NDIS 6 NIC with OS-build decorations
//! and advanced properties, an ANSI XP-era NDIS 5 INF, a bridge INF that pulls the system's PCI
//! driver through Include/Needs, and a Windows 10 KMDF INF with a custom class.

use std::path::{Path, PathBuf};

use loader::inf::{
    Arch, DirId, DirResolver, Encoding, HkrBase, Inf, InstallPlan, NdiParamType, NoIncludes,
    ParseOptions, RegAction, RegData, TargetOs,
};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/inf")
        .join(name)
}

fn open(name: &str, locale: u16) -> Inf {
    Inf::open(&fixture(name), &ParseOptions { locale }).unwrap_or_else(|e| panic!("{e}"))
}

fn value<'a>(plan: &'a InstallPlan, hkr: &HkrBase, name: &str) -> Option<&'a RegData> {
    plan.registry.iter().rev().find_map(|op| match &op.action {
        RegAction::SetValue { name: n, data } if n == name && &op.hkr == hkr => Some(data),
        _ => None,
    })
}

#[test]
fn contoso_ndis6_nic_utf16() {
    let inf = open("contoso_gbe.inf", 0x0409);
    assert_eq!(inf.file().encoding(), Encoding::Utf16LeBom);
    assert!(inf.version().is_class("net"));
    assert_eq!(inf.version().catalog_file(Arch::Amd64), Some("ctgbe64.cat"));
    assert_eq!(inf.version().catalog_file(Arch::X86), Some("ctgbe32.cat"));

    // Windows 10 1809+: the build-decorated models and the NDIS 6.30 install section.
    let win10 = TargetOs::windows10(Arch::Amd64);
    let m = inf
        .match_device(
            &[
                "PCI\\VEN_1AF4&DEV_7001&SUBSYS_00011AF4",
                "PCI\\VEN_1AF4&DEV_7001",
            ],
            &[],
            &win10,
        )
        .unwrap()
        .unwrap();
    assert_eq!(
        (m.rank, m.model.description.as_str()),
        (0, "Contoso® GbE PCIe Adapter")
    );
    let plan = inf.plan_for_model(&m.model, &win10, &NoIncludes).unwrap();
    assert_eq!(plan.install_section, "CtGbE.ndi.NTamd64");
    assert_eq!(plan.function_service.as_deref(), Some("ctgbe"));
    let svc = plan.service("ctgbe").unwrap();
    assert_eq!(
        (svc.binary.dir, svc.binary.path.as_str()),
        (Some(DirId::DRIVER_STORE), "ctgbe.sys")
    );
    assert_eq!(svc.load_order_group.as_deref(), Some("NDIS"));
    assert_eq!(svc.event_log.as_ref().unwrap().source, "ctgbe");
    let f = &plan.files[0];
    assert_eq!(
        (f.source_path.as_str(), f.dest_dir, f.flags),
        ("x64/ctgbe.sys", DirId::DRIVER_STORE, 0x100)
    );
    let ev = value(
        &plan,
        &HkrBase::EventLogKey {
            log: "System".into(),
            source: "ctgbe".into(),
        },
        "EventMessageFile",
    );
    assert_eq!(
        ev,
        Some(&RegData::ExpandSz(
            "%SystemRoot%\\System32\\netevent.dll;%SystemRoot%\\System32\\drivers\\ctgbe.sys"
                .into()
        ))
    );

    let net = plan.net.as_ref().unwrap();
    assert_eq!((net.characteristics, net.bus_type), (0x84, Some(5)));
    assert_eq!(
        (net.if_type, net.media_type, net.physical_media_type),
        (Some(6), Some(0), Some(14))
    );
    assert_eq!(
        value(&plan, &HkrBase::DriverKey, "*AccessType"),
        Some(&RegData::Dword(2))
    );
    assert_eq!(net.ndi_service.as_deref(), Some("ctgbe"));
    let kws: Vec<&str> = net.params.iter().map(|p| p.keyword.as_str()).collect();
    assert_eq!(
        kws,
        ["*SpeedDuplex", "*JumboPacket", "*RSS", "NetworkAddress"]
    );
    let speed = &net.params[0];
    assert_eq!(speed.enum_values.len(), 6);
    assert_eq!(speed.enum_values[5].description, "1.0 Gbps Full Duplex");
    assert_eq!(speed.effective_value().as_deref(), Some("0"));
    let jumbo = &net.params[1];
    assert_eq!(
        (
            jumbo.kind.clone(),
            jumbo.min,
            jumbo.max,
            jumbo.step,
            jumbo.base
        ),
        (
            Some(NdiParamType::Int),
            Some(1514),
            Some(9014),
            Some(500),
            Some(10)
        )
    );
    let mac = &net.params[3];
    assert_eq!(
        (mac.kind.clone(), mac.optional),
        (Some(NdiParamType::Edit), true)
    );
    assert!(plan.warnings.is_empty(), "{:#?}", plan.warnings);

    // Windows 10 1803 (build 17134) gets the Windows 8.1 section; x86 too, with its own files.
    let old = TargetOs {
        build: 17134,
        ..win10
    };
    let plan = inf
        .plan_for_hardware_id("PCI\\VEN_1AF4&DEV_7001", &old, &NoIncludes)
        .unwrap();
    assert_eq!(
        (
            plan.install_section.as_str(),
            plan.function_service.as_deref()
        ),
        ("CtGbE81.ndi.NTamd64", Some("ctgbe63"))
    );
    assert_eq!(plan.net.as_ref().unwrap().if_type, Some(6));
    let x86 = inf
        .plan_for_hardware_id(
            "PCI\\VEN_1AF4&DEV_7001",
            &TargetOs::windows10(Arch::X86),
            &NoIncludes,
        )
        .unwrap();
    assert_eq!(x86.files[0].source_path, "x86/ctgbe63.sys");
    assert_eq!(x86.files[0].dest_dir, DirId::DRIVERS);
    // Nothing for Windows 7 or arm64.
    assert!(inf.models(&TargetOs::windows7(Arch::Amd64)).is_err());
    assert!(inf.models(&TargetOs::windows10(Arch::Arm64)).is_err());

    // German strings where the INF has them, English elsewhere.
    let de = open("contoso_gbe.inf", 0x0407);
    let plan = de
        .plan_for_hardware_id("PCI\\VEN_1AF4&DEV_7002", &win10, &NoIncludes)
        .unwrap();
    let speed = &plan.net.as_ref().unwrap().params[0];
    assert_eq!(
        speed.description.as_deref(),
        Some("Geschwindigkeit und Duplex")
    );
    assert_eq!(speed.enum_values[0].description, "Automatische Aushandlung");
    assert_eq!(speed.enum_values[1].description, "10 Mbps Half Duplex");
    assert_eq!(
        plan.model().unwrap().compatible_ids,
        ["PCI\\VEN_1AF4&CC_0200"]
    );
}

#[test]
fn fabrikam_xp_ndis5_ansi() {
    let inf = open("fabrikam_xp.inf", 0x0409);
    assert_eq!(inf.file().encoding(), Encoding::Ansi);
    assert_eq!(inf.version().signature, "$Chicago$");
    let xp = TargetOs::windows_xp(Arch::X86);
    let models = inf.models(&xp).unwrap();
    assert_eq!(models.len(), 3);
    assert_eq!(models[0].models_section, "Fab");
    let plan = inf
        .plan_for_hardware_id("pci\\ven_f00d&dev_8138", &xp, &NoIncludes)
        .unwrap();
    assert_eq!(plan.install_section, "fab8139.ndi.NT");
    assert_eq!(
        plan.model().unwrap().description,
        "Fabrikam FE-8138 PCI Fast Ethernet Adapter (rev B)"
    );
    assert_eq!(plan.files.len(), 2);
    assert_eq!(plan.files[0].disk_description, "Fabrikam Driver Disk ©");
    assert_eq!(
        (plan.files[1].dest_dir, plan.files[1].flags),
        (DirId::DRIVERS, 2)
    );
    // DelReg comes first, then the AddReg sections (the continued line lists three).
    assert_eq!(plan.registry[0].action, RegAction::DeleteKey);
    assert_eq!(
        plan.registry[1].action,
        RegAction::DeleteValue {
            name: "OldValue".into()
        }
    );
    assert_eq!(
        value(&plan, &HkrBase::DriverKey, "MagicBytes"),
        Some(&RegData::Binary {
            reg_type: 3,
            data: vec![0x52, 0x54, 0x4C, 0]
        })
    );
    let net = plan.net.as_ref().unwrap();
    assert_eq!(net.if_type, None); // NDIS 5: no *IfType
    let kws: Vec<&str> = net.params.iter().map(|p| p.keyword.as_str()).collect();
    assert_eq!(kws, ["NetworkAddress", "MaxRxBuffers", "DuplexMode"]);
    assert_eq!(
        (net.params[1].min, net.params[1].max),
        (Some(16), Some(256))
    );
    assert_eq!(net.params[2].enum_values.len(), 3);
    let s = plan.service("fab8139").unwrap();
    assert_eq!(
        (s.binary.to_string().as_str(), s.start_type),
        ("%12%\\fab8139.sys", 3)
    );
    // An x86-only, undecorated INF does not install on x64.
    let e = inf.models(&TargetOs::windows_xp(Arch::Amd64)).unwrap_err();
    assert!(e.to_string().contains("fabrikam_xp.inf:16: "), "{e}");
}

#[test]
fn bridge_includes_system_pci_driver() {
    let path = fixture("vendor_bridge.inf");
    let inf = Inf::open(&path, &ParseOptions::default()).unwrap();
    let target = TargetOs::windows10(Arch::Amd64);
    let plan = inf
        .plan_for_hardware_id(
            "PCI\\VEN_ABCD&DEV_0001",
            &target,
            &DirResolver::beside(&path),
        )
        .unwrap();
    assert_eq!(plan.included.len(), 1);
    assert!(plan.included[0].ends_with("ica_machine.inf"));
    // icapci.sys belongs to the system INF (no SourceDisksFiles there): a warning, not a copy.
    let names: Vec<&str> = plan.files.iter().map(|f| f.dest_name.as_str()).collect();
    assert_eq!(names, ["vndfilt.sys"]);
    assert!(
        plan.warnings
            .iter()
            .any(|w| w.message.contains("icapci.sys")),
        "{:#?}",
        plan.warnings
    );
    // Needs sections run first; the bridge's own entries override.
    let drv: Vec<&str> = plan
        .registry
        .iter()
        .filter(|o| o.hkr == HkrBase::DriverKey)
        .filter_map(|o| o.value_name())
        .collect();
    assert_eq!(drv, ["EnumPropPages32", "BridgeMode"]);
    assert_eq!(
        value(&plan, &HkrBase::DeviceKey, "DeviceCharacteristics"),
        Some(&RegData::Dword(0x100))
    );
    assert_eq!(plan.lower_filters, ["vndfilt"]);
    assert_eq!(plan.function_service.as_deref(), Some("icapci"));
    let pci = plan.service("icapci").unwrap();
    assert_eq!(
        (pci.service_type, pci.start_type, pci.error_control),
        (1, 0, 3)
    );
    assert_eq!(pci.load_order_group.as_deref(), Some("Boot Bus Extender"));
    assert_eq!(pci.origin.file.rsplit('/').next(), Some("ica_machine.inf"));
    assert_eq!(plan.service("vndfilt").unwrap().start_type, 0);
    // Without the system INF the install fails at the first Needs.
    let e = inf
        .plan_for_hardware_id("PCI\\VEN_ABCD&DEV_0001", &target, &NoIncludes)
        .unwrap_err();
    assert_eq!(e.line, 24, "{e}");
}

#[test]
fn kmdf_sensor_custom_class() {
    let inf = open("ica_sensor.inf", 0x0407);
    assert_eq!(inf.file().encoding(), Encoding::Utf8Bom);
    assert_eq!(
        inf.version().class_guid.unwrap().to_string(),
        "{5B2E4C1A-9D3F-4E6B-8A71-0C2D3E4F5A6B}"
    );
    let target = TargetOs::windows10(Arch::Amd64);
    let m = inf
        .match_device(&["ACPI\\ICA0001"], &["*ICA0001"], &target)
        .unwrap()
        .unwrap();
    assert_eq!(m.model.description, "ICA-Testsensor");
    let plan = inf.plan_for_model(&m.model, &target, &NoIncludes).unwrap();
    // ClassInstall32 first (HKR = class key), with the German class name.
    assert_eq!(plan.registry[0].hkr, HkrBase::ClassKey);
    assert_eq!(
        value(&plan, &HkrBase::ClassKey, ""),
        Some(&RegData::Sz("ICA-Sensoren".into()))
    );
    assert_eq!(
        value(&plan, &HkrBase::DeviceKey, "SampleRateHz"),
        Some(&RegData::Dword(100))
    );
    assert_eq!(
        value(&plan, &HkrBase::DeviceKey, "Offsets"),
        Some(&RegData::Binary {
            reg_type: 3,
            data: vec![0, 1, 0xFF, 0xFE]
        })
    );
    assert_eq!(
        value(&plan, &HkrBase::DeviceKey, "Axes"),
        Some(&RegData::MultiSz(vec!["X".into(), "Y".into(), "Z".into()]))
    );
    assert_eq!(plan.kmdf.len(), 1);
    assert_eq!(
        (
            plan.kmdf[0].service.as_str(),
            plan.kmdf[0].library_version.as_deref()
        ),
        ("IcaSensor", Some("1.15"))
    );
    assert_eq!(plan.files[0].dest_dir, DirId::DRIVER_STORE);
    assert_eq!(
        plan.service("IcaSensor").unwrap().binary.dir,
        Some(DirId::DRIVER_STORE)
    );
    assert!(
        plan.warnings
            .iter()
            .any(|w| w.message.contains("CoInstallers")),
        "{:#?}",
        plan.warnings
    );
    // Build 16299 is required.
    assert!(inf
        .models(&TargetOs {
            build: 15063,
            ..target
        })
        .is_err());
}
