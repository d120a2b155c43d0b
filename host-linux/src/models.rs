//! Software device models the host can plug in where the machine has no such hardware: each is
//! offered to the installer as a PCI function (with the IDs the real chip reports) and built on
//! demand with the wire it is connected to.

use crate::device::PciDevice as PciFunction;
use crate::packet::PacketPort;
use crate::pci::PciDevice;
use crate::rtl8139::{self, Rtl8139};

/// The sysfs-style address prefix of model functions (`ica-model:rtl8139`); no real PCI address
/// contains it.
pub const ADDRESS_PREFIX: &str = "ica-model:";

/// Every model, as the PCI function the installer sees.
pub fn catalog() -> Vec<PciDevice> {
    vec![PciDevice {
        address: format!("{ADDRESS_PREFIX}rtl8139"),
        vendor: rtl8139::VENDOR_REALTEK,
        device: rtl8139::DEVICE_RTL8139,
        subsystem_vendor: rtl8139::VENDOR_REALTEK,
        subsystem_device: rtl8139::DEVICE_RTL8139,
        revision: rtl8139::REVISION,
        class: 0x02_00_00,
        driver: Some("ICA software model".into()),
    }]
}

/// The model name of a catalog function (`rtl8139`), None for real hardware.
pub fn model_name(d: &PciDevice) -> Option<&str> {
    d.address.strip_prefix(ADDRESS_PREFIX)
}

/// Builds the model `name` with factory MAC `mac`, its wire connected to `port`.
pub fn build(
    name: &str,
    mac: [u8; 6],
    port: Box<dyn PacketPort + Send>,
) -> Option<Box<dyn PciFunction>> {
    match name {
        "rtl8139" => Some(Box::new(Rtl8139::new(mac, port))),
        _ => None,
    }
}
