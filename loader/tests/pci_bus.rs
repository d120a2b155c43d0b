//! `DriverHost::attach_pci_device`: the bus becomes the machine's port I/O and the assigned
//! resources come back for the NDIS layer to report.

use dbt::Arch;
use host_linux::bus::{IO_START, IRQ_LINES};
use host_linux::packet::QueuePort;
use host_linux::rtl8139::{Rtl8139, IDR0};
use loader::host::DriverHost;

const MAC: [u8; 6] = [0x02, 0x11, 0x22, 0x33, 0x44, 0x55];

#[test]
fn attached_devices_get_ports_and_irqs_and_answer_port_io() {
    for arch in [Arch::X86, Arch::X64] {
        let mut h = DriverHost::new(arch).expect("host");
        let nic = |mac| Box::new(Rtl8139::new(mac, Box::new(QueuePort::new().0)));
        let a = h.attach_pci_device(nic(MAC));
        let mut mac2 = MAC;
        mac2[5] = 0x66;
        let b = h.attach_pci_device(nic(mac2));
        assert_eq!(a.io_base(), Some(IO_START));
        assert_eq!(b.io_base(), Some(IO_START + 0x100));
        assert_eq!((a.irq, b.irq), (IRQ_LINES[0], IRQ_LINES[1]));
        assert_ne!(a.mmio_ranges().next(), b.mmio_ranges().next());
        assert_eq!(h.k.m.port_read(IO_START + IDR0 + 5, 1), 0x55);
        assert_eq!(h.k.m.port_read(IO_START + 0x100 + IDR0 + 5, 1), 0x66);
        assert_eq!(h.k.m.port_read(IO_START + 0x200, 1), 0xFF);
        assert!(h.poll_pci().is_empty());
        assert_eq!(h.pci_bus().with(|bus| bus.len()), 2);
    }
}
