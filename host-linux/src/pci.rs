//! PCI devices the Linux host has, read from sysfs (`/sys/bus/pci/devices/*`): the numbers that
//! identify each function (vendor, device, subsystem, revision, class) and its address. Only
//! Linux facts live here; the Windows hardware IDs built from them are the loader's business.

use std::fs;
use std::path::{Path, PathBuf};

/// Where Linux lists PCI functions.
pub const SYSFS_PCI_DEVICES: &str = "/sys/bus/pci/devices";

/// One PCI function as sysfs describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PciDevice {
    /// The sysfs name: `DDDD:BB:DD.F`.
    pub address: String,
    pub vendor: u16,
    pub device: u16,
    pub subsystem_vendor: u16,
    pub subsystem_device: u16,
    pub revision: u8,
    /// Base class, subclass and programming interface (`0x020000` for an Ethernet controller).
    pub class: u32,
    /// The Linux driver bound to it (`e1000`, `vfio-pci`), if any.
    pub driver: Option<String>,
}

impl PciDevice {
    /// Base class (`0x02`: network controller).
    pub fn base_class(&self) -> u8 {
        (self.class >> 16) as u8
    }

    /// Subclass (`0x00`: Ethernet).
    pub fn subclass(&self) -> u8 {
        (self.class >> 8) as u8
    }

    /// Programming interface.
    pub fn prog_if(&self) -> u8 {
        self.class as u8
    }

    /// Reads one function's directory (`/sys/bus/pci/devices/0000:00:03.0`); None if a required
    /// attribute is missing or unreadable.
    pub fn read(dir: &Path) -> Option<PciDevice> {
        let num = |name: &str| -> Option<u32> {
            let text = fs::read_to_string(dir.join(name)).ok()?;
            parse_hex(&text)
        };
        Some(PciDevice {
            address: dir.file_name()?.to_string_lossy().into_owned(),
            vendor: num("vendor")? as u16,
            device: num("device")? as u16,
            subsystem_vendor: num("subsystem_vendor").unwrap_or(0) as u16,
            subsystem_device: num("subsystem_device").unwrap_or(0) as u16,
            revision: num("revision").unwrap_or(0) as u8,
            class: num("class")? & 0x00FF_FFFF,
            driver: fs::read_link(dir.join("driver"))
                .ok()
                .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned())),
        })
    }
}

/// Parses a sysfs number (`0x8086\n`).
pub fn parse_hex(text: &str) -> Option<u32> {
    let t = text.trim();
    let t = t
        .strip_prefix("0x")
        .or_else(|| t.strip_prefix("0X"))
        .unwrap_or(t);
    u32::from_str_radix(t, 16).ok()
}

/// Every PCI function under `root` (normally [`SYSFS_PCI_DEVICES`]), sorted by address; empty if
/// the directory does not exist (no PCI bus, or sysfs not mounted).
pub fn scan_dir(root: &Path) -> Vec<PciDevice> {
    let Ok(entries) = fs::read_dir(root) else {
        return Vec::new();
    };
    let mut dirs: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    dirs.sort();
    dirs.iter().filter_map(|d| PciDevice::read(d)).collect()
}

/// The host's PCI functions.
pub fn scan() -> Vec<PciDevice> {
    scan_dir(Path::new(SYSFS_PCI_DEVICES))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_fake_sysfs_tree() {
        let root = std::env::temp_dir().join(format!("ica-pci-test-{}", std::process::id()));
        let dev = root.join("0000:00:03.0");
        fs::create_dir_all(&dev).unwrap();
        for (name, value) in [
            ("vendor", "0x8086\n"),
            ("device", "0x100e\n"),
            ("subsystem_vendor", "0x8086\n"),
            ("subsystem_device", "0x001e\n"),
            ("revision", "0x02\n"),
            ("class", "0x020000\n"),
        ] {
            fs::write(dev.join(name), value).unwrap();
        }
        fs::create_dir_all(root.join("broken")).unwrap();
        let found = scan_dir(&root);
        fs::remove_dir_all(&root).unwrap();
        assert_eq!(found.len(), 1);
        let d = &found[0];
        assert_eq!(d.address, "0000:00:03.0");
        assert_eq!((d.vendor, d.device), (0x8086, 0x100E));
        assert_eq!((d.subsystem_vendor, d.subsystem_device), (0x8086, 0x001E));
        assert_eq!(d.revision, 2);
        assert_eq!((d.base_class(), d.subclass(), d.prog_if()), (2, 0, 0));
        assert!(scan_dir(Path::new("/nonexistent/ica")).is_empty());
    }
}
