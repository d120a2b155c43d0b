//! Binding an INF to a PCI function (a fixed, fake one): Windows ranking over the function's
//! hardware and compatible IDs picks the model, the install records the binding under
//! `Enum\PCI\...`, and the device starts only when it is a network controller bound to vfio-pci
//! (otherwise the reason says how to bind it).

use std::path::Path;

use host_linux::pci::PciDevice;
use loader::inf::Arch;
use loader::install::{self, start, InstallOptions, Root};
use loader::registry::windows::enum_key;

const INF: &str = r#"
[Version]
Signature   = "$Windows NT$"
Class       = System
ClassGuid   = {4d36e97d-e325-11ce-bfc1-08002be10318}
Provider    = %ICA%
DriverVer   = 01/01/2025,1.0.0.0

[Manufacturer]
%ICA% = Models, NTamd64

[Models.NTamd64]
%Generic% = Generic_Install, PCI\VEN_8086&DEV_100E
%Exact%   = Exact_Install, PCI\VEN_8086&DEV_100E&SUBSYS_001E8086
%Class%   = Class_Install, PCI\VEN_9999&DEV_0001, PCI\CC_0200

[DestinationDirs]
DefaultDestDir = 12

[Generic_Install.NT]
CopyFiles = @ioctl.sys
[Exact_Install.NT]
CopyFiles = @ioctl.sys
[Class_Install.NT]
CopyFiles = @ioctl.sys

[Generic_Install.NT.Services]
AddService = IcaNet, 2, Svc
[Exact_Install.NT.Services]
AddService = IcaNet, 2, Svc
[Class_Install.NT.Services]
AddService = IcaNet, 2, Svc

[Svc]
ServiceType   = 1
StartType     = 3
ErrorControl  = 1
ServiceBinary = %12%\ioctl.sys

[SourceDisksNames]
1 = "disk"
[SourceDisksFiles]
ioctl.sys = 1

[Strings]
ICA = "ICA"
Generic = "generic"
Exact = "exact subsystem"
Class = "any Ethernet controller"
"#;

fn nic(device: u16) -> PciDevice {
    PciDevice {
        address: "0000:00:03.0".into(),
        vendor: 0x8086,
        device,
        subsystem_vendor: 0x8086,
        subsystem_device: 0x001E,
        revision: 2,
        class: 0x020000,
        driver: None,
    }
}

fn setup(dir: &Path) -> std::path::PathBuf {
    let src = dir.join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/drivers/bin/x64/ioctl.sys"),
        src.join("ioctl.sys"),
    )
    .unwrap();
    let inf = src.join("netcard.inf");
    std::fs::write(&inf, INF).unwrap();
    inf
}

#[test]
fn pci_binding_uses_windows_rank() {
    let tmp = tempfile::tempdir().unwrap();
    let inf = setup(tmp.path());
    let root = Root::new(tmp.path().join("root"));
    let opts = InstallOptions {
        arch: Arch::Amd64,
        dry_run: false,
        pci: Some(vec![nic(0x100E)]),
    };
    let p = install::prepare(&root, &inf, &opts).unwrap();
    let b = p.binding.as_ref().unwrap();
    assert_eq!(b.model.install_section, "Exact_Install");
    assert_eq!(b.matched_id, r"PCI\VEN_8086&DEV_100E&SUBSYS_001E8086");
    assert_eq!(b.rank, 0x0100);
    let report = install::install(&root, p, false).unwrap();
    let inst = report.instance_id.clone().unwrap();
    assert_eq!(
        inst,
        r"PCI\VEN_8086&DEV_100E&SUBSYS_001E8086&REV_02\0000_00_03.0"
    );
    // It starts only as a network controller bound to vfio-pci; otherwise it says why.
    let why = start::cannot_start_on(&inst, &[]).unwrap();
    assert!(why.contains("not present on this machine"), "{why}");
    let e1000 = PciDevice {
        driver: Some("e1000".into()),
        ..nic(0x100E)
    };
    let why = start::cannot_start_on(&inst, std::slice::from_ref(&e1000)).unwrap();
    assert!(
        why.contains("0000:00:03.0 is not bound to vfio-pci (driver: e1000); bind it with: "),
        "{why}"
    );
    assert!(
        why.contains("echo 0000:00:03.0 > /sys/bus/pci/devices/0000:00:03.0/driver/unbind"),
        "{why}"
    );
    let unbound = nic(0x100E);
    let why = start::cannot_start_on(&inst, &[unbound]).unwrap();
    assert!(
        why.contains("(no driver)") && !why.contains("unbind"),
        "{why}"
    );
    let vfio = PciDevice {
        driver: Some("vfio-pci".into()),
        ..e1000
    };
    assert_eq!(
        start::cannot_start_on(&inst, std::slice::from_ref(&vfio)),
        None
    );
    let storage = PciDevice {
        class: 0x010802,
        ..vfio
    };
    let why = start::cannot_start_on(&inst, &[storage]).unwrap();
    assert!(why.contains("only network controllers"), "{why}");
    let store = root.open_registry().unwrap();
    let key = enum_key(&inst);
    assert_eq!(
        store
            .value(&key, "Service")
            .unwrap()
            .unwrap()
            .as_str()
            .unwrap(),
        "IcaNet"
    );
    let hw = store
        .value(&key, "HardwareID")
        .unwrap()
        .unwrap()
        .as_multi_sz()
        .unwrap();
    assert_eq!(hw.len(), 5);
    let compat = store
        .value(&key, "CompatibleIDs")
        .unwrap()
        .unwrap()
        .as_multi_sz()
        .unwrap();
    assert_eq!(compat[0], r"PCI\VEN_8086&CC_020000");
}

#[test]
fn compatible_id_match_and_no_match() {
    let tmp = tempfile::tempdir().unwrap();
    let inf = setup(tmp.path());
    let root = Root::new(tmp.path().join("root"));
    // Another Intel NIC: only the class model matches, through a compatible ID (rank 0x3xxx).
    let opts = InstallOptions {
        arch: Arch::Amd64,
        dry_run: false,
        pci: Some(vec![nic(0x10D3)]),
    };
    let p = install::prepare(&root, &inf, &opts).unwrap();
    let b = p.binding.as_ref().unwrap();
    assert_eq!(b.model.install_section, "Class_Install");
    assert_eq!(b.rank >> 12, 3);
    assert_eq!(b.matched_id, r"PCI\CC_0200");
    // No PCI device at all: nothing to bind, nothing written.
    let opts = InstallOptions {
        pci: Some(Vec::new()),
        ..opts
    };
    let err = install::prepare(&root, &inf, &opts)
        .unwrap_err()
        .to_string();
    assert!(err.contains("no device of this host matches"), "{err}");
    assert!(!root.dir.exists());
}
