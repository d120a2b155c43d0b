//! The NDIS 5.1 RTL8139 miniport (x86-32 and x64) driving the RTL8139 model through the VFIO path
//! instead of directly: a `VfioPciDevice` over an `EmulatedVfio`, which presents the model the
//! way vfio-pci presents a real card (BARs at its own firmware addresses, auto-masked INTx, DMA
//! only through the IOMMU mapping of guest memory). MiniportInitialize, sends, receives through
//! interrupts that are unmasked at the end of each, a cable pull, and halt. The same path on real
//! hardware is tested later, on a machine with an IOMMU and a spare card.

use std::collections::VecDeque;

use dbt::Arch;
use host_linux::bus::IO_START;
use host_linux::net::{NetEvent, NetMiniport};
use host_linux::packet::{PortHandle, QueuePort};
use host_linux::rtl8139::{Cable, Rtl8139};
use host_linux::vfio::{EmulatedHandle, EmulatedVfio, VfioPciDevice, FIRMWARE_IO};
use ica_tests::nic::{
    forty_receives_arrive_intact, frame, service, ten_sends_leave_intact, MAC, PEER,
};
use ica_tests::{driver_path, host, ARCHES};
use loader::net::NetAdapter;

const DRIVER: &str = "rtl8139_ndis5";

fn start(arch: Arch) -> (NetAdapter, PortHandle, Cable, EmulatedHandle) {
    let (port, wire) = QueuePort::new();
    let model = Rtl8139::new(MAC, Box::new(port));
    let cable = model.cable();
    let (emulated, handle) = EmulatedVfio::new(Box::new(model));
    let mut dev = VfioPciDevice::with_backend("emulated rtl8139", Box::new(emulated)).unwrap();
    let mut h = host(arch);
    dev.map_guest_memory(&h.k.m.mem.dma_window()).unwrap();
    let nic = NetAdapter::start(
        h,
        &driver_path(arch, DRIVER),
        Box::new(dev),
        None,
        Vec::new(),
    )
    .unwrap_or_else(|e| panic!("{DRIVER} {}: {e}", arch.name()));
    (nic, wire, cable, handle)
}

#[test]
fn the_rtl8139_miniport_runs_on_a_vfio_device() {
    for arch in ARCHES {
        let (mut nic, wire, cable, handle) = start(arch);
        let a = arch.name();
        let info = nic.info().expect("info");
        assert_eq!((info.permanent_address, info.link_up), (MAC, true), "{a}");
        // The driver got the bus's I/O ports; the device kept its own.
        let res = nic.host.pci_bus().with(|b| b.resources(0).unwrap().clone());
        assert_eq!(res.io_base(), Some(IO_START), "{a}");
        assert_eq!(handle.device_config_read(0x10, 4), FIRMWARE_IO as u32 | 1);

        ten_sends_leave_intact(arch, &mut nic, &wire);

        // More frames than the miniport has receive packets; every interrupt is unmasked once
        // the ISR and DPC ran, or the next one would never arrive.
        forty_receives_arrive_intact(arch, &mut nic, &wire, 5);
        let interrupts = nic.stats().interrupts;
        assert!(interrupts >= 8, "{a}: {interrupts} interrupts");
        assert!(handle.unmasks() >= 8, "{a}: {} unmasks", handle.unmasks());
        assert!(handle.iommu_faults().is_empty(), "{a}");

        cable.plug(false);
        assert_eq!(service(&mut nic), vec![NetEvent::Link(false)], "{a}");
        let mut queue = VecDeque::from([frame(PEER, MAC, 60, 1)]);
        nic.send(&mut queue).unwrap();
        service(&mut nic);
        assert!(wire.take_sent().is_none(), "{a}");
        cable.plug(true);
        assert_eq!(service(&mut nic), vec![NetEvent::Link(true)], "{a}");

        let findings = nic.stop().expect("halt");
        assert!(findings.is_empty(), "{a}: {findings:?}");
    }
}
