//! rtl8139_ndis6.sys (NDIS 6.0, deserialized) drives the RTL8139 model through the whole NDIS 6
//! path, on x86-32 and x64: NdisMRegisterMiniportDriver, MiniportInitializeEx with
//! AllocatedResources, registration and general attributes, port I/O, scatter/gather DMA
//! registration and shared memory, an NBL receive pool and NdisMRegisterInterruptEx, then
//! MiniportRestart; sends as NBL chains through MiniportSendNetBufferLists, scatter/gather lists
//! (NdisMAllocateNetBufferSGList, MiniportProcessSGList: zero-copy when the chip can read the NB
//! in place, a copy otherwise; NdisMFreeNetBufferSGList) and NdisMSendNetBufferListsComplete;
//! receives through MiniportInterrupt, NdisMQueueDpc, MiniportInterruptDPC,
//! NdisMIndicateReceiveNetBufferLists and MiniportReturnNetBufferLists; NDIS_OID_REQUESTs; link
//! changes as NDIS_STATUS_LINK_STATE; pause and restart; HaltEx and unload with nothing leaked.

use std::collections::VecDeque;

use dbt::Arch;
use host_linux::bus::PciResources;
use host_linux::net::{NetEvent, NetMiniport};
use host_linux::packet::{PortHandle, QueuePort};
use host_linux::rtl8139::Rtl8139;
use ica_tests::nic::{
    assert_sent, bad_oids_are_clean_errors_and_multicast_reads_back,
    default_filter_and_receive_counters, forty_receives_arrive_intact, frame, load_and_initialize,
    one_frame_each_way_then_unload, pool_by_tag, received, send_all, service, start_rtl8139,
    ten_sends_leave_intact, NblBuilder, MAC, PEER,
};
use ica_tests::{host, ARCHES};
use loader::net::{oid, NetAdapter};
use ndis::nbl::SendLayout;
use ndis::{NdisState, RunState, NDIS_STATUS_INVALID_PARAMETER, NDIS_STATUS_RESOURCES};

const DRIVER: &str = "rtl8139_ndis6";
/// The driver's private query: RTL_TX_PATHS (three ULONG64s).
const OID_ICA_RTL8139_TX_PATHS: u32 = 0xFF49_4301;

/// What the driver counted: (zero-copy sends, copied sends, DPCs run with the MiniportDpcContext
/// of NdisMQueueDpc / NdisMQueueDpcEx).
fn tx_paths(nic: &mut NetAdapter) -> (u64, u64, u64) {
    let r = nic.query(OID_ICA_RTL8139_TX_PATHS, 24).expect("query");
    assert_eq!(r.status, ndis::NDIS_STATUS_SUCCESS);
    let at = |o: usize| u64::from_le_bytes(r.data[o..o + 8].try_into().unwrap());
    (at(0), at(8), at(16))
}

/// Scatter/gather lists the driver has not freed.
fn sg_lists_out(nic: &mut NetAdapter) -> usize {
    let a = &nic.host.k.extension::<NdisState>().adapters[&nic.adapter];
    a.sg_dma.as_ref().map_or(0, |d| d.lists.len())
}

fn start(arch: Arch) -> (NetAdapter, PortHandle) {
    let (nic, wire, _) = start_rtl8139(arch, DRIVER);
    (nic, wire)
}

/// Asserts that halting and unloading leave nothing behind, and that no NBL pool is left.
fn stop_clean(arch: Arch, nic: NetAdapter) {
    let findings = nic.stop().expect("halt");
    assert!(findings.is_empty(), "{}: {findings:?}", arch.name());
}

#[test]
fn initialize_reports_mac_link_and_mtu_through_oids() {
    for arch in ARCHES {
        let (mut nic, _wire) = start(arch);
        assert_eq!(
            ndis::miniport::run_state(&mut nic.host.k, nic.adapter),
            Some(RunState::Running),
            "{}: initialized and restarted",
            arch.name()
        );
        let info = nic.info().expect("info");
        assert_eq!(info.permanent_address, MAC, "{}", arch.name());
        assert_eq!(info.current_address, MAC, "{}", arch.name());
        assert!(info.link_up, "{}", arch.name());
        assert_eq!(info.mtu, 1500, "{}", arch.name());
        assert_eq!(info.link_speed, 100_000_000, "{}", arch.name());
        assert_eq!(info.description, "ICA RTL8139 NDIS 6.0 test miniport");
        stop_clean(arch, nic);
    }
}

#[test]
fn frames_go_out_through_the_driver_and_the_device() {
    for arch in ARCHES {
        let (mut nic, wire) = start(arch);
        ten_sends_leave_intact(arch, &mut nic, &wire);
        stop_clean(arch, nic);
    }
}

#[test]
fn frames_come_in_through_interrupts_and_nbl_indications() {
    for arch in ARCHES {
        let (mut nic, wire) = start(arch);
        forty_receives_arrive_intact(arch, &mut nic, &wire, 10);
        default_filter_and_receive_counters(arch, &mut nic, &wire);
        stop_clean(arch, nic);
    }
}

#[test]
fn unsupported_oid_and_short_buffers_are_clean_errors() {
    for arch in ARCHES {
        let (mut nic, _wire) = start(arch);
        bad_oids_are_clean_errors_and_multicast_reads_back(&mut nic);
        // NDIS 6: the miniport says how many bytes a packet filter takes.
        let r = nic.set(oid::GEN_CURRENT_PACKET_FILTER, &[1]).unwrap();
        assert_eq!(r.bytes_needed, 4);
        stop_clean(arch, nic);
    }
}

#[test]
fn cable_pull_and_replug_are_indicated_as_link_state() {
    for arch in ARCHES {
        let (mut nic, _wire, cable) = start_rtl8139(arch, DRIVER);
        cable.plug(false);
        let events = service(&mut nic);
        assert_eq!(events, vec![NetEvent::Link(false)], "{}", arch.name());
        assert!(!nic.info().unwrap().link_up);
        cable.plug(true);
        let events = service(&mut nic);
        assert_eq!(events, vec![NetEvent::Link(true)], "{}", arch.name());
        assert!(nic.info().unwrap().link_up);
        stop_clean(arch, nic);
    }
}

#[test]
fn pause_stops_traffic_and_restart_resumes_it() {
    for arch in ARCHES {
        let (mut nic, wire) = start(arch);
        // Receive NBLs still held by the host come back before MiniportPause, so it completes.
        wire.inject(&frame(MAC, PEER, 100, 7));
        assert_eq!(received(&service(&mut nic)).len(), 1, "{}", arch.name());
        let status = ndis::miniport::pause(&mut nic.host.k, nic.adapter).unwrap();
        assert_eq!(status, ndis::NDIS_STATUS_SUCCESS, "{}", arch.name());
        assert_eq!(
            ndis::miniport::run_state(&mut nic.host.k, nic.adapter),
            Some(RunState::Paused)
        );
        // Paused: frames wait in the host's queue, frames from the wire are not indicated.
        let mut queue = VecDeque::from([frame(PEER, MAC, 80, 1)]);
        nic.send(&mut queue).unwrap();
        assert_eq!(
            queue.len(),
            1,
            "{}: a paused adapter takes no sends",
            arch.name()
        );
        wire.inject(&frame(MAC, PEER, 90, 2));
        assert!(received(&service(&mut nic)).is_empty(), "{}", arch.name());
        // Restarted: the queued frame goes out and traffic flows both ways again.
        let status = ndis::miniport::restart(&mut nic.host.k, nic.adapter).unwrap();
        assert_eq!(status, ndis::NDIS_STATUS_SUCCESS, "{}", arch.name());
        let out = send_all(&mut nic, &wire, &Vec::from(queue));
        assert_eq!(out.len(), 1, "{}", arch.name());
        let again = frame(MAC, PEER, 120, 3);
        wire.inject(&again);
        assert_eq!(received(&service(&mut nic)), vec![again], "{}", arch.name());
        stop_clean(arch, nic);
    }
}

#[test]
fn halt_and_unload_leave_no_pool_behind() {
    for arch in ARCHES {
        let (mut nic, wire) = start(arch);
        let out = send_all(&mut nic, &wire, &[frame(PEER, MAC, 64, 9)]);
        assert_eq!(out.len(), 1);
        wire.inject(&frame(MAC, PEER, 64, 10));
        assert_eq!(received(&service(&mut nic)).len(), 1);
        let image = "rtl8139_ndis6.sys";
        let k = &mut nic.host.k;
        assert!(
            k.pool.bytes_owned_by(image) > 0,
            "the adapter owns pool while it runs"
        );
        assert_eq!(k.extension::<ndis::NdisState>().nbl_pools.len(), 1);
        let findings = ndis::miniport::halt(k, nic.adapter).expect("halt");
        assert!(findings.is_empty(), "{}: {findings:?}", arch.name());
        nic.host.unload_driver(&nic.driver).expect("unload");
        let k = &mut nic.host.k;
        assert_eq!(k.pool.bytes_owned_by(image), 0, "{}", arch.name());
        let state = k.extension::<ndis::NdisState>();
        assert!(state.nbl_pools.is_empty(), "{}", arch.name());
        assert!(state.adapters.is_empty() && state.interrupts.is_empty());
        assert!(
            state.drivers.is_empty(),
            "{}: the driver deregistered",
            arch.name()
        );
    }
}

#[test]
fn reset_reinitializes_the_chip_and_shutdown_quiets_it() {
    for arch in ARCHES {
        let (mut nic, wire) = start(arch);
        let (_, _, dpcs) = tx_paths(&mut nic);
        let status = ndis::miniport::reset(&mut nic.host.k, nic.adapter).unwrap();
        assert_eq!(
            status,
            ndis::NDIS_STATUS_SUCCESS,
            "{}: MiniportResetEx",
            arch.name()
        );
        assert_eq!(
            tx_paths(&mut nic).2,
            dpcs + 1,
            "{}: ResetEx ran its DPC through NdisMQueueDpcEx",
            arch.name()
        );
        let f = frame(PEER, MAC, 100, 1);
        assert_sent(
            arch,
            &send_all(&mut nic, &wire, std::slice::from_ref(&f)),
            &[f],
        );
        let g = frame(MAC, PEER, 100, 2);
        wire.inject(&g);
        assert_eq!(received(&service(&mut nic)), vec![g], "{}", arch.name());
        ndis::miniport::shutdown(&mut nic.host.k, nic.adapter).unwrap();
        stop_clean(arch, nic);
    }
}

#[test]
fn sends_go_zero_copy_when_the_scatter_gather_list_allows_and_are_copied_otherwise() {
    for arch in ARCHES {
        let (mut nic, wire) = start(arch);
        let (_, _, dpcs) = tx_paths(&mut nic);
        // (layout, frames, how many the chip reads in place)
        let rounds: [(SendLayout, Vec<Vec<u8>>, u64); 4] = [
            // One aligned element: in place, except the 40-byte frame the chip cannot pad.
            (
                SendLayout::Contiguous,
                vec![
                    frame(PEER, MAC, 986, 1),
                    frame(PEER, MAC, 46, 2),
                    frame(PEER, MAC, 26, 3),
                    frame([0xFF; 6], MAC, 300, 4),
                ],
                3,
            ),
            // The data 2 bytes into the element: not 4-byte aligned, copied.
            (
                SendLayout::Offset(2),
                vec![frame(PEER, MAC, 986, 5), frame(PEER, MAC, 500, 6)],
                0,
            ),
            // 4 bytes in: aligned again (the list starts at CurrentMdl, the driver skips the
            // CurrentMdlOffset), in place.
            (
                SendLayout::Offset(4),
                vec![frame(PEER, MAC, 986, 7), frame(PEER, MAC, 100, 8)],
                2,
            ),
            // Header and payload in two buffers: two elements, copied.
            (
                SendLayout::SplitHeader,
                vec![frame(PEER, MAC, 1500, 9), frame(PEER, MAC, 300, 10)],
                0,
            ),
        ];
        let (mut zero_copy, mut copied) = (0, 0);
        for (layout, frames, in_place) in rounds {
            ndis::nbl::set_send_layout(&mut nic.host.k, nic.adapter, layout).unwrap();
            let out = send_all(&mut nic, &wire, &frames);
            assert_sent(arch, &out, &frames);
            zero_copy += in_place;
            copied += frames.len() as u64 - in_place;
            let (z, c, _) = tx_paths(&mut nic);
            assert_eq!((z, c), (zero_copy, copied), "{} {layout:?}", arch.name());
            assert_eq!(
                sg_lists_out(&mut nic),
                0,
                "{}: every list freed",
                arch.name()
            );
        }
        let (_, _, dpcs_after) = tx_paths(&mut nic);
        assert!(
            dpcs_after > dpcs,
            "{}: TOK interrupts ran the DPC the ISR queued with NdisMQueueDpc",
            arch.name()
        );
        let stats = nic.stats();
        assert_eq!(stats.sends_ok, 10, "{}: {stats:?}", arch.name());
        assert_eq!(nic.info().unwrap().xmit_ok, 10);
        stop_clean(arch, nic);
    }
}

#[test]
fn scatter_gather_and_dpc_misuse_are_clean_errors() {
    for arch in ARCHES {
        let (mut nic, wire) = start(arch);
        let (_, _, dpcs) = tx_paths(&mut nic);
        let k = &mut nic.host.k;
        let a = &k.extension::<NdisState>().adapters[&nic.adapter];
        let (dma, interrupt, context) = (
            a.sg_dma.as_ref().unwrap().handle,
            a.interrupt.unwrap(),
            a.context,
        );
        let mut b = NblBuilder::default();
        let data = vec![0x5A; 3000];
        let mdl = b.mdl(k, &data[..100]);
        let past_mdls = b.nb(k, mdl, 101);
        let big_mdl = b.mdl(k, &data);
        let too_big = b.nb(k, big_mdl, 3000);
        let fine = b.nb(k, mdl, 100);
        let sg = |k: &mut ntoskrnl::Kernel, dma: u64, nb: u64| {
            ndis::resources::allocate_net_buffer_sg_list(k, dma, nb, 0, 1, 0, 0).unwrap()
        };
        assert_eq!(
            sg(k, 0xBAD0, fine),
            NDIS_STATUS_INVALID_PARAMETER,
            "{}",
            arch.name()
        );
        assert_eq!(sg(k, dma, 0), NDIS_STATUS_INVALID_PARAMETER);
        assert_eq!(
            sg(k, dma, 0x10),
            NDIS_STATUS_INVALID_PARAMETER,
            "a bad NB pointer"
        );
        assert_eq!(sg(k, dma, past_mdls), NDIS_STATUS_INVALID_PARAMETER);
        assert_eq!(
            sg(k, dma, too_big),
            NDIS_STATUS_RESOURCES,
            "over MaximumPhysicalMapping"
        );
        // A list freed that was never handed out is reported when the adapter halts.
        ndis::resources::free_net_buffer_sg_list(k, dma, 0x1234, fine).unwrap();
        b.free(k);

        // NdisMQueueDpc(Ex): only processor 0 of group 0 exists; an unknown handle queues nothing.
        let q = ndis::interrupt::queue_dpc;
        assert_eq!(q(k, 0xBAD0, 0, 1, context).unwrap(), 0);
        assert_eq!(q(k, interrupt, 0, 2, context).unwrap(), 0, "processor 1");
        let affinity = {
            let l = ndis::layout6(k);
            let g = ntoskrnl::ex::allocate(k, 32, 0x7473_6554, "test".into()).unwrap();
            k.write_ptr(g + l.group_affinity_mask, 1).unwrap();
            (g, l.group_affinity_group)
        };
        k.m.mem.write_u16(affinity.0 + affinity.1, 1).unwrap();
        let qx = ndis::interrupt::queue_dpc_ex;
        assert_eq!(
            qx(k, interrupt, 0, affinity.0, context).unwrap(),
            0,
            "group 1"
        );
        assert_eq!(qx(k, interrupt, 0, 0, context).unwrap(), 0, "no affinity");
        assert_eq!(
            qx(k, interrupt, 0, 0x10, context).unwrap(),
            0,
            "a bad affinity pointer"
        );
        k.m.mem.write_u16(affinity.0 + affinity.1, 0).unwrap();
        // Queued at PASSIVE_LEVEL, the DPC runs at once, with the context given.
        assert_eq!(qx(k, interrupt, 0, affinity.0, context).unwrap(), 1);
        assert_eq!(q(k, interrupt, 0, 1, context).unwrap(), 1);
        ntoskrnl::ex::free(k, affinity.0, None).unwrap();
        assert_eq!(tx_paths(&mut nic).2, dpcs + 2, "{}", arch.name());

        // The driver never saw the bad calls: traffic flows.
        let f = frame(PEER, MAC, 200, 1);
        assert_sent(
            arch,
            &send_all(&mut nic, &wire, std::slice::from_ref(&f)),
            &[f],
        );
        let g = frame(MAC, PEER, 200, 2);
        wire.inject(&g);
        assert_eq!(received(&service(&mut nic)), vec![g], "{}", arch.name());
        let findings = nic.stop().expect("halt");
        assert_eq!(findings.len(), 1, "{}: {findings:?}", arch.name());
        assert!(
            findings[0].contains("not a scatter/gather list in use"),
            "{findings:?}"
        );
    }
}

/// One load / failed initialize / initialize / one frame each way / halt / unload cycle on a
/// device already on the bus.
fn reload_cycle(h: &mut loader::DriverHost, arch: Arch, res: &PciResources, wire: &PortHandle) {
    // Without PCI configuration access the vendor/device check fails the initialization.
    let (driver, failed) = load_and_initialize(h, arch, DRIVER, res, None);
    assert_eq!(failed, Err(0xC001_0006), "NDIS_STATUS_ADAPTER_NOT_FOUND");
    h.unload_driver(&driver).unwrap();
    let (driver, a) = load_and_initialize(h, arch, DRIVER, res, Some(Box::new(IdsOnly)));
    let a = a.expect("MiniportInitializeEx");
    one_frame_each_way_then_unload(h, &driver, a, wire);
}

/// PCI configuration space that only has the RTL8139's vendor and device IDs.
struct IdsOnly;

impl ndis::BusConfig for IdsOnly {
    fn read(&mut self, offset: u32, buf: &mut [u8]) -> usize {
        let ids = [0xEC, 0x10, 0x39, 0x81];
        let n = buf.len().min(4usize.saturating_sub(offset as usize));
        buf[..n].copy_from_slice(&ids[offset as usize..offset as usize + n]);
        n
    }

    fn write(&mut self, _offset: u32, _data: &[u8]) -> usize {
        0
    }
}

#[test]
fn unloading_and_reloading_100_times_leaks_nothing() {
    for arch in ARCHES {
        let mut h = host(arch);
        let (port, wire) = QueuePort::new();
        let res = h.attach_pci_device(Box::new(Rtl8139::new(MAC, Box::new(port))));
        reload_cycle(&mut h, arch, &res, &wire);
        let baseline = pool_by_tag(&h.k);
        let mapped = h.k.images.len();
        for _ in 0..100 {
            reload_cycle(&mut h, arch, &res, &wire);
        }
        assert_eq!(pool_by_tag(&h.k), baseline, "{}", arch.name());
        assert_eq!(h.k.images.len(), mapped, "{}: images unmapped", arch.name());
        assert_eq!(h.k.pool.bytes_owned_by("rtl8139_ndis6.sys"), 0);
    }
}
