//! [`VfioPciDevice`] over an [`EmulatedVfio`] RTL8139 on the bus: virtual BARs, register access,
//! INTx masking and unmasking, DMA confined to the IOMMU window; and the errors of opening real
//! functions, against fake sysfs and `/dev/vfio` trees (and this machine's own sysfs, read only).

use std::fs;
use std::os::unix::fs::symlink;
use std::path::PathBuf;

use super::*;
use crate::bus::{GuestDma, PciBus, IO_START, MMIO_START};
use crate::device::{BarKind, CMD_BUS_MASTER, CMD_MEMORY};
use crate::packet::{PortHandle, QueuePort};
use crate::rtl8139::{self, Cable, Rtl8139};

const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];

/// An RTL8139 behind an emulated VFIO device: the device, the test's view of the emulation,
/// the wire and the cable.
fn rtl8139() -> (VfioPciDevice, EmulatedHandle, PortHandle, Cable) {
    let (port, wire) = QueuePort::new();
    let model = Rtl8139::new(MAC, Box::new(port));
    let cable = model.cable();
    let (emu, handle) = EmulatedVfio::new(Box::new(model));
    let dev = VfioPciDevice::with_backend("emulated rtl8139", Box::new(emu)).unwrap();
    (dev, handle, wire, cable)
}

#[test]
fn the_guest_programs_virtual_bars_and_reaches_the_registers_through_them() {
    let (dev, handle, _wire, _cable) = rtl8139();
    let bars = dev.bars();
    assert_eq!(
        bars.iter()
            .map(|b| (b.index, b.kind, b.size))
            .collect::<Vec<_>>(),
        vec![(0, BarKind::Io, 256), (1, BarKind::Mmio, 256)]
    );
    let mut bus = PciBus::new();
    let res = bus.attach(Box::new(dev));
    assert_eq!(res.io_base(), Some(IO_START));
    assert_eq!(
        res.mmio_ranges().collect::<Vec<_>>(),
        vec![(MMIO_START, 256)]
    );
    // The guest sees the bus's addresses; the device keeps the ones its firmware gave it.
    assert_eq!(bus.config_read(0, 0x10, 4), u32::from(IO_START) | 1);
    assert_eq!(bus.config_read(0, 0x14, 4), MMIO_START as u32);
    assert_eq!(handle.device_config_read(0x10, 4), FIRMWARE_IO as u32 | 1);
    assert_eq!(handle.device_config_read(0x14, 4), FIRMWARE_MMIO as u32);
    // Sizing answers the real size mask and does not reach the device either.
    bus.config_write(0, 0x14, 4, 0xFFFF_FFFF);
    assert_eq!(bus.config_read(0, 0x14, 4), 0xFFFF_FF00);
    assert_eq!(handle.device_config_read(0x14, 4), FIRMWARE_MMIO as u32);
    bus.config_write(0, 0x14, 4, MMIO_START as u32);
    // No ROM is offered; identity, command and interrupt pin come from the device.
    assert_eq!(bus.config_read(0, 0x30, 4), 0);
    assert_eq!(bus.config_read(0, 0x00, 4), 0x8139_10EC);
    assert_eq!(bus.config_read(0, 0x3D, 1), 1);
    // The interrupt line the bus assigned is the guest's; the device's own stays untouched.
    assert_eq!(bus.config_read(0, 0x3C, 1), res.irq);
    assert_eq!(handle.device_config_read(0x3C, 1), 0);
    // Registers through the I/O BAR and the memory BAR, at the guest-side addresses.
    for (i, b) in MAC.iter().enumerate() {
        assert_eq!(bus.io_read(IO_START + i as u16, 1), u32::from(*b));
        assert_eq!(bus.mmio_read(MMIO_START + i as u64, 1), u64::from(*b));
    }
    assert_eq!(
        bus.io_read(IO_START + rtl8139::TCR, 4),
        rtl8139::TCR_HWVER_8139C
    );
    bus.mmio_write(MMIO_START + u64::from(rtl8139::MAR0), 4, 0xA5A5_5A5A);
    assert_eq!(bus.io_read(IO_START + rtl8139::MAR0, 4), 0xA5A5_5A5A);
    // Beyond the BAR: nothing decodes it.
    assert_eq!(bus.mmio_read(MMIO_START + 256, 4), 0xFFFF_FFFF);
    // Bus mastering stays off while guest memory is not mapped for DMA.
    assert_ne!(bus.config_read(0, 0x04, 2) as u16 & CMD_MEMORY, 0);
    assert_eq!(
        handle.device_config_read(0x04, 2) as u16 & CMD_BUS_MASTER,
        0
    );
}

#[test]
fn intx_is_masked_when_it_fires_and_unmasked_at_the_end_of_the_interrupt() {
    let (mut dev, handle, _wire, cable) = rtl8139();
    let mut mem = dbt::GuestMemory::new(0x8000_0000, 1 << 20);
    dev.map_guest_memory(&mem.dma_window()).unwrap();
    let mut bus = PciBus::new();
    let irq = bus.attach(Box::new(dev)).irq;
    let isr = IO_START + rtl8139::ISR;
    bus.io_write(IO_START + rtl8139::IMR, 2, u32::from(rtl8139::INT_LINKCHG));
    assert!(bus.poll(&mut GuestDma::new(&mut mem)).is_empty());
    cable.plug(false);
    assert_eq!(bus.poll(&mut GuestDma::new(&mut mem)), vec![irq]);
    // The ISR acknowledges in the device, the cable comes back meanwhile: the line is masked, so
    // the host sees one interrupt until the guest is done with it.
    bus.io_write(isr, 2, u32::from(rtl8139::INT_LINKCHG));
    cable.plug(true);
    assert_eq!(bus.poll(&mut GuestDma::new(&mut mem)), vec![irq]);
    assert_eq!(handle.unmasks(), 0);
    // End of interrupt: unmasked, and the device, still asserting, fires again.
    bus.end_of_interrupt(irq);
    assert_eq!(handle.unmasks(), 1);
    assert_eq!(bus.asserted_irqs(), vec![irq]);
    bus.io_write(isr, 2, u32::from(rtl8139::INT_LINKCHG));
    bus.end_of_interrupt(irq);
    assert_eq!(handle.unmasks(), 2);
    assert!(bus.poll(&mut GuestDma::new(&mut mem)).is_empty());
    // Nothing pending: nothing to unmask; another line is none of its business.
    bus.end_of_interrupt(irq);
    bus.end_of_interrupt(irq + 1);
    assert_eq!(handle.unmasks(), 2);
}

/// Hands a `len`-byte frame at guest-physical `addr` to transmit descriptor 0.
fn transmit(bus: &mut PciBus, addr: u64, len: u32) {
    bus.io_write(IO_START + rtl8139::CR, 1, u32::from(rtl8139::CR_TE));
    bus.io_write(IO_START + rtl8139::TSAD0, 4, addr as u32);
    bus.io_write(IO_START + rtl8139::TSD0, 4, len);
}

#[test]
fn device_dma_reaches_guest_memory_only_through_the_iommu_window() {
    let frame: Vec<u8> = (0..60u8).collect();
    let mut mem = dbt::GuestMemory::new(0x8000_0000, 1 << 20);
    mem.map(0x8001_0000, 0x1000, dbt::Prot::READ | dbt::Prot::WRITE)
        .unwrap();
    mem.write_bytes(0x8001_0000, &frame).unwrap();
    let phys = mem.virt_to_phys(0x8001_0000).unwrap();

    // Not mapped: the IOMMU refuses the device's reads and nothing goes out.
    let (dev, handle, wire, _cable) = rtl8139();
    let mut bus = PciBus::new();
    bus.attach(Box::new(dev));
    transmit(&mut bus, phys, 60);
    bus.poll(&mut GuestDma::new(&mut mem));
    assert_eq!(handle.iommu_faults().len(), 1);
    assert!(wire.take_sent().is_none());

    // Mapped: the frame is read at its guest-physical address; an address outside the window
    // faults.
    let (mut dev, handle, wire, _cable) = rtl8139();
    let window = mem.dma_window();
    dev.map_guest_memory(&window).unwrap();
    assert_eq!(handle.dma_window(), Some((dbt::PHYS_BASE, 1 << 20)));
    let mut bus = PciBus::new();
    bus.attach(Box::new(dev));
    assert_ne!(
        handle.device_config_read(0x04, 2) as u16 & CMD_BUS_MASTER,
        0
    );
    transmit(&mut bus, phys, 60);
    bus.poll(&mut GuestDma::new(&mut mem));
    assert_eq!(wire.take_sent(), Some(frame));
    assert!(handle.iommu_faults().is_empty());
    transmit(&mut bus, 0x1000, 60);
    bus.poll(&mut GuestDma::new(&mut mem));
    assert_eq!(handle.iommu_faults().len(), 1);
    assert!(wire.take_sent().is_none());
}

/// A fake sysfs and /dev tree: `/sys/bus/pci/devices/<address>` bound to `driver` (None: no
/// driver) in IOMMU group 12 (None: no group), and a `/dev/vfio` holding `dev_files`.
struct Tree {
    root: PathBuf,
    paths: Paths,
}

impl Tree {
    fn new(
        tag: &str,
        address: &str,
        driver: Option<&str>,
        group: bool,
        dev_files: &[&str],
    ) -> Tree {
        let root = std::env::temp_dir().join(format!("ica-vfio-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        let devices = root.join("sys/bus/pci/devices");
        let drivers = root.join("sys/bus/pci/drivers");
        let groups = root.join("sys/kernel/iommu_groups");
        let dev = devices.join(address);
        fs::create_dir_all(&dev).unwrap();
        if let Some(d) = driver {
            fs::create_dir_all(drivers.join(d)).unwrap();
            symlink(drivers.join(d), dev.join("driver")).unwrap();
        }
        if group {
            fs::create_dir_all(groups.join("12/devices")).unwrap();
            symlink(&dev, groups.join("12/devices").join(address)).unwrap();
            symlink(groups.join("12"), dev.join("iommu_group")).unwrap();
        }
        let dev_vfio = root.join("dev/vfio");
        if !dev_files.is_empty() {
            fs::create_dir_all(&dev_vfio).unwrap();
            for f in dev_files {
                fs::write(dev_vfio.join(f), b"").unwrap();
            }
        }
        Tree {
            paths: Paths {
                sysfs_pci: devices,
                dev_vfio,
            },
            root,
        }
    }

    fn open(&self, address: &str) -> String {
        VfioPciDevice::open_with(&self.paths, address)
            .map(|_| ())
            .expect_err("opened a fake device")
            .to_string()
    }
}

impl Drop for Tree {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.root);
    }
}

#[test]
fn opening_explains_what_is_missing() {
    const A: &str = "0000:03:00.0";
    let t = Tree::new("unbound", A, Some("r8169"), true, &[]);
    let e = t.open(A);
    assert!(
        e.starts_with("0000:03:00.0: not bound to vfio-pci (driver: r8169); bind it with: "),
        "{e}"
    );
    assert!(
        e.contains("echo 0000:03:00.0 > /sys/bus/pci/devices/0000:03:00.0/driver/unbind"),
        "{e}"
    );
    assert!(
        e.contains("echo vfio-pci > /sys/bus/pci/devices/0000:03:00.0/driver_override"),
        "{e}"
    );
    assert!(
        e.contains("echo 0000:03:00.0 > /sys/bus/pci/drivers_probe"),
        "{e}"
    );
    let e = t.open("0000:04:00.0");
    assert!(e.starts_with("0000:04:00.0: no such PCI function"), "{e}");
    let e = t.open("04:00.0");
    assert!(e.starts_with("04:00.0: not a PCI address"), "{e}");

    let t = Tree::new("nodriver", A, None, true, &[]);
    let e = t.open(A);
    assert!(e.contains("not bound to vfio-pci (no driver)"), "{e}");
    assert!(!e.contains("unbind"), "{e}");

    let t = Tree::new("nogroup", A, Some(VFIO_DRIVER), false, &[]);
    let e = t.open(A);
    assert!(e.starts_with("0000:03:00.0: has no IOMMU group"), "{e}");
    assert!(e.contains("intel_iommu=on"), "{e}");

    let t = Tree::new("nodev", A, Some(VFIO_DRIVER), true, &[]);
    let e = t.open(A);
    let container = t.paths.dev_vfio.join("vfio");
    assert_eq!(
        e,
        format!(
            "{}: does not exist (the VFIO container device; load the driver: modprobe vfio-pci)",
            container.display()
        )
    );

    // Something that is not the VFIO container answers no VFIO ioctl.
    let t = Tree::new("notvfio", A, Some(VFIO_DRIVER), true, &["vfio", "12"]);
    let e = t.open(A);
    let container = t.paths.dev_vfio.join("vfio");
    assert!(
        e.starts_with(&format!("{}: VFIO_GET_API_VERSION: ", container.display())),
        "{e}"
    );
}

#[test]
fn this_machines_functions_not_bound_to_vfio_pci_are_refused_untouched() {
    let paths = Paths::system();
    let Some(d) = crate::pci::scan()
        .into_iter()
        .find(|d| d.driver.as_deref() != Some(VFIO_DRIVER))
    else {
        eprintln!("skipped: no PCI function outside vfio-pci on this machine");
        return;
    };
    let e = VfioPciDevice::open_with(&paths, &d.address)
        .map(|_| ())
        .unwrap_err()
        .to_string();
    let driver = d
        .driver
        .as_deref()
        .map_or("no driver".to_string(), |l| format!("driver: {l}"));
    assert!(
        e.starts_with(&format!("{}: not bound to vfio-pci ({driver})", d.address)),
        "{e}"
    );
}
