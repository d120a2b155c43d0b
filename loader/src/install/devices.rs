//! The devices the host offers a driver: PCI functions (from Linux sysfs, with the hardware and
//! compatible IDs Windows' PCI bus driver would report, most specific first) and root-enumerated
//! software devices (already installed ones from `Enum\ROOT`, and any `ROOT\...` ID an INF's
//! models name, which an install creates as devcon does).

use host_linux::pci::PciDevice;

use crate::registry::windows::enum_key;
use crate::registry::RegistryStore;

use super::InstallError;

/// Which bus a device is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Bus {
    Root,
    Pci,
}

/// A device a driver can be bound to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostDevice {
    pub bus: Bus,
    /// The device instance ID: known for installed devices and PCI functions; None for a root
    /// device an install would create.
    pub instance_id: Option<String>,
    /// Hardware IDs, most specific first.
    pub hardware_ids: Vec<String>,
    /// Compatible IDs, most specific first.
    pub compatible_ids: Vec<String>,
    /// What it is (the installed DeviceDesc, or the PCI address and class).
    pub description: String,
    /// Installed: has an `Enum` key in the registry.
    pub installed: bool,
    /// The function driver's service, if installed.
    pub service: Option<String>,
    /// The sysfs facts of a PCI function.
    pub pci: Option<PciDevice>,
}

/// `PCI\VEN_vvvv&DEV_dddd`.
fn pci_ven_dev(d: &PciDevice) -> String {
    format!("PCI\\VEN_{:04X}&DEV_{:04X}", d.vendor, d.device)
}

/// The hardware IDs Windows gives a PCI function, most specific first:
/// `PCI\VEN_8086&DEV_100E&SUBSYS_001E8086&REV_02`, `...&SUBSYS_001E8086`, `...&CC_020000`,
/// `...&CC_0200`, `PCI\VEN_8086&DEV_100E`.
pub fn pci_hardware_ids(d: &PciDevice) -> Vec<String> {
    let vd = pci_ven_dev(d);
    let subsys = format!(
        "SUBSYS_{:04X}{:04X}",
        d.subsystem_device, d.subsystem_vendor
    );
    vec![
        format!("{vd}&{subsys}&REV_{:02X}", d.revision),
        format!("{vd}&{subsys}"),
        format!("{vd}&CC_{:06X}", d.class),
        format!("{vd}&CC_{:04X}", d.class >> 8),
        vd,
    ]
}

/// The compatible IDs of a PCI function: `PCI\VEN_8086&CC_020000`, `PCI\VEN_8086&CC_0200`,
/// `PCI\VEN_8086`, `PCI\CC_020000`, `PCI\CC_0200`.
pub fn pci_compatible_ids(d: &PciDevice) -> Vec<String> {
    let v = format!("PCI\\VEN_{:04X}", d.vendor);
    vec![
        format!("{v}&CC_{:06X}", d.class),
        format!("{v}&CC_{:04X}", d.class >> 8),
        v,
        format!("PCI\\CC_{:06X}", d.class),
        format!("PCI\\CC_{:04X}", d.class >> 8),
    ]
}

/// The device instance ID ICA gives a PCI function: its most specific hardware ID's device part
/// and the sysfs address (`PCI\VEN_8086&DEV_100E&SUBSYS_001E8086&REV_02\0000_00_03.0`).
pub fn pci_instance_id(d: &PciDevice) -> String {
    format!(
        "{}&SUBSYS_{:04X}{:04X}&REV_{:02X}\\{}",
        pci_ven_dev(d),
        d.subsystem_device,
        d.subsystem_vendor,
        d.revision,
        d.address.replace(':', "_")
    )
}

/// A readable name of a PCI class (base class, subclass).
pub fn pci_class_name(class: u32) -> &'static str {
    match class >> 8 {
        0x0100 => "SCSI controller",
        0x0101 => "IDE controller",
        0x0106 => "SATA controller",
        0x0108 => "NVMe controller",
        0x0200 => "Ethernet controller",
        0x0280 => "network controller",
        0x0300 => "VGA controller",
        0x0380 => "display controller",
        0x0401 => "audio device",
        0x0403 => "HD audio controller",
        0x0600 => "host bridge",
        0x0601 => "ISA bridge",
        0x0604 => "PCI bridge",
        0x0680 => "bridge",
        0x0c03 => "USB controller",
        0x0c05 => "SMBus controller",
        0x0d80 | 0x0280..=0x02ff => "wireless controller",
        _ => match class >> 16 {
            0x01 => "storage controller",
            0x02 => "network controller",
            0x03 => "display controller",
            0x04 => "multimedia device",
            0x06 => "bridge",
            0x0c => "serial bus controller",
            _ => "device",
        },
    }
}

/// A PCI function as a [`HostDevice`].
pub fn pci_device(d: &PciDevice) -> HostDevice {
    HostDevice {
        bus: Bus::Pci,
        instance_id: Some(pci_instance_id(d)),
        hardware_ids: pci_hardware_ids(d),
        compatible_ids: pci_compatible_ids(d),
        description: format!(
            "{} {}{}",
            d.address,
            pci_class_name(d.class),
            d.driver
                .as_ref()
                .map(|l| format!(" (Linux driver: {l})"))
                .unwrap_or_default()
        ),
        installed: false,
        service: None,
        pci: Some(d.clone()),
    }
}

/// Device instances recorded in the registry (`Enum\<bus>\<id>\<instance>`) on the ROOT and PCI
/// buses.
pub fn installed_devices(store: &RegistryStore) -> Result<Vec<HostDevice>, InstallError> {
    let mut out = Vec::new();
    for (bus_name, bus) in [("ROOT", Bus::Root), ("PCI", Bus::Pci)] {
        let bus_key = enum_key(bus_name);
        if !store.key_exists(&bus_key)? {
            continue;
        }
        for id in store.subkeys(&bus_key)? {
            let id_key = format!(r"{bus_key}\{id}");
            for inst in store.subkeys(&id_key)? {
                let instance_id = format!(r"{bus_name}\{id}\{inst}");
                let key = enum_key(&instance_id);
                let multi = |name: &str| -> Result<Vec<String>, InstallError> {
                    Ok(store
                        .value(&key, name)?
                        .and_then(|v| v.as_multi_sz())
                        .unwrap_or_default())
                };
                let sz = |name: &str| -> Result<Option<String>, InstallError> {
                    Ok(store.value(&key, name)?.and_then(|v| v.as_str()))
                };
                out.push(HostDevice {
                    bus,
                    hardware_ids: multi("HardwareID")?,
                    compatible_ids: multi("CompatibleIDs")?,
                    description: sz("DeviceDesc")?.unwrap_or_default(),
                    service: sz("Service")?,
                    instance_id: Some(instance_id),
                    installed: true,
                    pci: None,
                });
            }
        }
    }
    Ok(out)
}

/// Everything the host offers: installed devices (from the registry, if there is one), then the
/// PCI functions of this machine not installed yet.
pub fn host_devices(
    store: Option<&RegistryStore>,
    pci: &[PciDevice],
) -> Result<Vec<HostDevice>, InstallError> {
    let mut out = match store {
        Some(s) => installed_devices(s)?,
        None => Vec::new(),
    };
    for d in pci {
        let dev = pci_device(d);
        match out.iter_mut().find(|o| {
            o.instance_id.as_deref().map(str::to_ascii_uppercase)
                == dev.instance_id.as_deref().map(str::to_ascii_uppercase)
        }) {
            Some(o) => o.pci = Some(d.clone()),
            None => out.push(dev),
        }
    }
    Ok(out)
}

/// A root-enumerated device an install would create for the hardware ID `id` (`ROOT\IcaFunction`).
pub fn new_root_device(id: &str, description: &str) -> HostDevice {
    HostDevice {
        bus: Bus::Root,
        instance_id: None,
        hardware_ids: vec![id.to_string()],
        compatible_ids: Vec::new(),
        description: description.to_string(),
        installed: false,
        service: None,
        pci: None,
    }
}

/// The device ID (`ROOT\ICAFUNCTION`) of a new root device with hardware ID `id`.
pub fn root_device_id(id: &str) -> String {
    id.to_ascii_uppercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e1000() -> PciDevice {
        PciDevice {
            address: "0000:00:03.0".into(),
            vendor: 0x8086,
            device: 0x100E,
            subsystem_vendor: 0x8086,
            subsystem_device: 0x001E,
            revision: 2,
            class: 0x020000,
            driver: Some("e1000".into()),
        }
    }

    #[test]
    fn pci_ids_in_windows_order() {
        assert_eq!(
            pci_hardware_ids(&e1000()),
            [
                r"PCI\VEN_8086&DEV_100E&SUBSYS_001E8086&REV_02",
                r"PCI\VEN_8086&DEV_100E&SUBSYS_001E8086",
                r"PCI\VEN_8086&DEV_100E&CC_020000",
                r"PCI\VEN_8086&DEV_100E&CC_0200",
                r"PCI\VEN_8086&DEV_100E",
            ]
        );
        assert_eq!(
            pci_compatible_ids(&e1000()),
            [
                r"PCI\VEN_8086&CC_020000",
                r"PCI\VEN_8086&CC_0200",
                r"PCI\VEN_8086",
                r"PCI\CC_020000",
                r"PCI\CC_0200",
            ]
        );
        assert_eq!(
            pci_instance_id(&e1000()),
            r"PCI\VEN_8086&DEV_100E&SUBSYS_001E8086&REV_02\0000_00_03.0"
        );
        let d = pci_device(&e1000());
        assert!(d.description.contains("Ethernet controller"));
    }

    #[test]
    fn pci_ids_pad_hex_upper_case() {
        let d = PciDevice {
            vendor: 0x10ec,
            device: 0x8139,
            subsystem_vendor: 0x1af4,
            subsystem_device: 0x1100,
            revision: 0x20,
            class: 0x040300,
            ..e1000()
        };
        assert_eq!(
            pci_hardware_ids(&d)[0],
            r"PCI\VEN_10EC&DEV_8139&SUBSYS_11001AF4&REV_20"
        );
        assert_eq!(pci_compatible_ids(&d)[4], r"PCI\CC_0403");
    }
}
