//! netvirt_ndis6.sys (an NDIS 6.0 virtual miniport: a NIC with a loopback plug) through the
//! NDIS 6 path without any device, on x86-32 and x64: NdisOpenConfigurationEx on the adapter's
//! key, NBL pools, an NDIS I/O work item that indicates link-up at PASSIVE_LEVEL, the processor
//! queries, a timer object (NdisAllocateTimerObject / NdisSetTimerObject) that carries sent
//! frames back as NBL receive chains (large ones as clones of the sent NBLs, small ones copied
//! with NdisCopyFromNetBufferToNetBuffer) and completes a pended OID set with
//! NdisMOidRequestComplete; a malformed send; a malformed NBL chain from the driver is a clean
//! error; HaltEx (NdisCancelTimerObject, KeFlushQueuedDpcs, NdisFreeTimerObject,
//! NdisFreeIoWorkItem) and unload with nothing leaked.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use dbt::Arch;
use host_linux::net::{NetEvent, NetMiniport};
use ica_tests::nic::{frame, received, NblBuilder};
use ica_tests::{driver_path, host, ARCHES};
use loader::net::NetAdapter;
use ndis::nbl::{self, SendLayout};
use ntoskrnl::registry::{self, RegValue};
use ntoskrnl::{ex, KernelError};

/// The MAC the driver uses without a NetworkAddress.
const DEFAULT_MAC: [u8; 6] = [0x02, 0x49, 0x43, 0x41, 0x00, 0x01];
const PEER: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x00, 0x01];
/// OID_GEN_CURRENT_LOOKAHEAD: the set netvirt pends and completes from its timer.
const OID_GEN_CURRENT_LOOKAHEAD: u32 = 0x0001_010F;
/// NDIS_STATUS_INVALID_LENGTH.
const NDIS_STATUS_INVALID_LENGTH: u32 = 0xC001_0014;
/// The driver's private query: NV_DIAG.
const OID_ICA_NETVIRT_DIAG: u32 = 0xFF49_4302;
/// Frames shorter than this are copied into receive NBLs; longer ones go up as clones.
const COPY_BREAK: usize = 256;

/// NV_DIAG (netvirt_ndis6.c): what the driver saw.
#[derive(Debug, PartialEq, Eq)]
struct Diag {
    cloned: u64,
    copied: u64,
    /// WorkItemRuns, WorkItemIrql, WorkItemHandleOk, ActiveProcessors, Group0Processors, Index0,
    /// Index1, RssShortStatus, RssSizeNeeded, RssStatus, RssRevision, RssSize, RssMaxProcessors,
    /// RssArrayOffset, RssCount, RssEntrySize, RssFirstGroup, RssFirstNumber.
    words: Vec<u32>,
}

fn diag(nic: &mut NetAdapter) -> Diag {
    let r = nic.query(OID_ICA_NETVIRT_DIAG, 88).expect("query");
    assert_eq!(r.status, ndis::NDIS_STATUS_SUCCESS);
    assert_eq!(r.data.len(), 88);
    let q = |o: usize| u64::from_le_bytes(r.data[o..o + 8].try_into().unwrap());
    Diag {
        cloned: q(0),
        copied: q(8),
        words: r.data[16..]
            .chunks(4)
            .map(|c| u32::from_le_bytes(c.try_into().unwrap()))
            .collect(),
    }
}

fn start(arch: Arch) -> NetAdapter {
    NetAdapter::start_virtual(host(arch), &driver_path(arch, "netvirt_ndis6"), None)
        .unwrap_or_else(|e| panic!("{}: {e}", arch.name()))
}

/// Services the adapter, sleeping until its next timer, until `done` holds for what it
/// indicated (or two seconds pass); returns everything it indicated.
fn service_until(nic: &mut NetAdapter, done: impl Fn(&[NetEvent]) -> bool) -> Vec<NetEvent> {
    let end = Instant::now() + Duration::from_secs(2);
    let mut events = Vec::new();
    while Instant::now() < end {
        nic.service(&mut events).expect("service");
        if done(&events) {
            break;
        }
        let nap = nic
            .next_deadline()
            .map_or(Duration::from_millis(1), |d| {
                d.saturating_duration_since(Instant::now())
            })
            .min(Duration::from_millis(5));
        std::thread::sleep(nap);
    }
    events
}

/// Sends `frames` (in one call: NBL chains) and waits for `expect` of them to come back.
fn loop_back(nic: &mut NetAdapter, frames: &[Vec<u8>], expect: usize) -> Vec<Vec<u8>> {
    let mut queue: VecDeque<Vec<u8>> = frames.iter().cloned().collect();
    nic.send(&mut queue).expect("send");
    assert!(queue.is_empty(), "every frame was taken");
    received(&service_until(nic, |e| received(e).len() >= expect))
}

fn stop_clean(arch: Arch, nic: NetAdapter) {
    let findings = nic.stop().expect("halt");
    assert!(findings.is_empty(), "{}: {findings:?}", arch.name());
}

#[test]
fn link_up_arrives_from_a_passive_work_item_and_oids_answer() {
    for arch in ARCHES {
        let mut nic = start(arch);
        let events = service_until(&mut nic, |e| e.contains(&NetEvent::Link(true)));
        assert!(
            events.contains(&NetEvent::Link(true)),
            "{}: link-up indicated by the work item: {events:?}",
            arch.name()
        );
        let d = diag(&mut nic);
        assert_eq!(
            d.words[..3],
            [1, 0, 1],
            "{}: the work item ran once, at PASSIVE_LEVEL, with its own handle",
            arch.name()
        );
        let info = nic.info().expect("info");
        assert_eq!(info.permanent_address, DEFAULT_MAC, "{}", arch.name());
        assert_eq!(info.current_address, DEFAULT_MAC, "{}", arch.name());
        assert!(info.link_up);
        assert_eq!(info.mtu, 1500);
        assert_eq!(info.link_speed, 1_000_000_000);
        assert_eq!(
            info.description,
            "ICA virtual loopback NDIS 6.0 test miniport"
        );
        stop_clean(arch, nic);
    }
}

#[test]
fn network_address_comes_from_the_adapter_key() {
    for arch in ARCHES {
        let mut h = host(arch);
        let key = r"\Registry\Machine\System\CurrentControlSet\Control\Class\{4D36E972-E325-11CE-BFC1-08002BE10318}\0007";
        let b = registry::backend(&mut h.k);
        b.create_key_path(key).unwrap();
        b.set_value(key, "NetworkAddress", &RegValue::sz("0200C0FFEE01"))
            .unwrap();
        let mut nic = NetAdapter::start_virtual(h, &driver_path(arch, "netvirt_ndis6"), Some(key))
            .unwrap_or_else(|e| panic!("{}: {e}", arch.name()));
        let info = nic.info().unwrap();
        assert_eq!(info.permanent_address, DEFAULT_MAC, "{}", arch.name());
        assert_eq!(
            info.current_address,
            [0x02, 0x00, 0xC0, 0xFF, 0xEE, 0x01],
            "{}",
            arch.name()
        );
        stop_clean(arch, nic);
    }
}

#[test]
fn frames_sent_come_back_as_receives_through_the_timer() {
    for arch in ARCHES {
        let mut nic = start(arch);
        // 20 frames in one call: a chain of 16 NBLs and one of 4; they come back in receive
        // chains of up to 8 NBLs, more than the driver's 16 receive NBLs in all.
        let mut frames: Vec<Vec<u8>> = (0..20)
            .map(|i| frame(DEFAULT_MAC, PEER, 46 + 50 * i, i as u8))
            .collect();
        frames[7] = frame([0xFF; 6], PEER, 100, 0x77);
        let got = loop_back(&mut nic, &frames, frames.len());
        assert_eq!(got, frames, "{}", arch.name());
        let again: Vec<Vec<u8>> = (0..20)
            .map(|i| frame(DEFAULT_MAC, PEER, 1000 - 40 * i, 0x80 + i as u8))
            .collect();
        assert_eq!(loop_back(&mut nic, &again, again.len()), again);
        // The packet filter drops a frame for another station.
        let other = frame([0x02, 9, 9, 9, 9, 9], PEER, 60, 1);
        let mine = frame(DEFAULT_MAC, PEER, 60, 2);
        assert_eq!(
            loop_back(&mut nic, &[other, mine.clone()], 1),
            vec![mine],
            "{}",
            arch.name()
        );
        let stats = nic.stats();
        assert_eq!(stats.sends, 42, "{}: {stats:?}", arch.name());
        assert_eq!(stats.sends_ok, 42, "{}: {stats:?}", arch.name());
        assert_eq!(stats.receives, 41, "{}: {stats:?}", arch.name());
        assert!(
            stats.indications < stats.receives,
            "{}: receives came in NBL chains: {stats:?}",
            arch.name()
        );
        assert!(
            stats.returns > 16,
            "{}: NBLs recycled: {stats:?}",
            arch.name()
        );
        let info = nic.info().unwrap();
        assert_eq!((info.xmit_ok, info.rcv_ok), (42, 41), "{}", arch.name());
        stop_clean(arch, nic);
    }
}

#[test]
fn frames_loop_back_through_clones_and_copies_in_every_send_layout() {
    for arch in ARCHES {
        let mut nic = start(arch);
        let mut sent = 0;
        for layout in [
            SendLayout::Contiguous,
            SendLayout::Offset(3),
            SendLayout::SplitHeader,
        ] {
            ndis::nbl::set_send_layout(&mut nic.host.k, nic.adapter, layout).unwrap();
            let before = diag(&mut nic);
            // Around COPY_BREAK, and a broadcast; more than the 16 receive NBLs in all.
            let mut frames: Vec<Vec<u8>> = (0..18)
                .map(|i| frame(DEFAULT_MAC, PEER, 30 + 80 * i, 0x20 + i as u8))
                .collect();
            frames[5] = frame([0xFF; 6], PEER, COPY_BREAK - 14, 0x55);
            let got = loop_back(&mut nic, &frames, frames.len());
            assert_eq!(got.len(), frames.len(), "{} {layout:?}", arch.name());
            for (i, (g, f)) in got.iter().zip(&frames).enumerate() {
                let differ = g.iter().zip(f).position(|(a, b)| a != b);
                assert!(
                    g == f,
                    "{} {layout:?}: frame {i} of {} bytes came back with {} bytes, first difference at {differ:?}",
                    arch.name(),
                    f.len(),
                    g.len()
                );
            }
            let large = frames.iter().filter(|f| f.len() >= COPY_BREAK).count() as u64;
            let after = diag(&mut nic);
            assert_eq!(
                (after.cloned - before.cloned, after.copied - before.copied),
                (large, frames.len() as u64 - large),
                "{} {layout:?}: large frames went up as clones, small ones as copies",
                arch.name()
            );
            sent += frames.len() as u64;
        }
        // Sends complete once their clones are back: all of them by now.
        let stats = nic.stats();
        assert_eq!(stats.sends_ok, sent, "{}: {stats:?}", arch.name());
        let k = &mut nic.host.k;
        let state = k.extension::<ndis::NdisState>();
        let clones: usize = state
            .nbl_pools
            .values()
            .flat_map(|p| p.allocated.values())
            .filter(|e| matches!(e, ndis::nbl::PoolNbl::Clone { .. }))
            .count();
        assert_eq!(clones, 0, "{}: every clone freed", arch.name());
        stop_clean(arch, nic);
    }
}

#[test]
fn processor_queries_see_one_processor_with_the_windows_rss_layout() {
    const BUFFER_TOO_SHORT: u32 = 0xC001_0016;
    for arch in ARCHES {
        let mut nic = start(arch);
        let d = diag(&mut nic);
        // ActiveProcessors, Group0Processors, Index0, Index1, then NdisGetRssProcessorInformation:
        // too short (48 bytes needed), then success: revision 2 of 40 bytes, 1 processor, the
        // array at 40 with 8-byte entries, its first processor 0 of group 0.
        assert_eq!(
            d.words[3..],
            [
                1,
                1,
                0,
                u32::MAX,
                BUFFER_TOO_SHORT,
                48,
                0,
                2,
                40,
                1,
                40,
                1,
                8,
                0,
                0
            ],
            "{}",
            arch.name()
        );
        // The same from the host, byte by byte (the layout Windows drivers see on both
        // architectures).
        let k = &mut nic.host.k;
        let info = ex::allocate(k, 64, u32::from_le_bytes(*b"Test"), "test".into()).unwrap();
        let size = ex::allocate(k, 8, u32::from_le_bytes(*b"Test"), "test".into()).unwrap();
        k.write_ptr(size, 47).unwrap();
        let rss = ndis::sync::get_rss_processor_information;
        assert_eq!(rss(k, nic.adapter, info, size).unwrap(), BUFFER_TOO_SHORT);
        assert_eq!(k.read_ptr(size).unwrap(), 48);
        k.m.mem.fill(info, 0xEE, 64).unwrap();
        assert_eq!(
            rss(k, nic.adapter, info, size).unwrap(),
            ndis::NDIS_STATUS_SUCCESS
        );
        let bytes = k.m.mem.read_vec(info, 49).unwrap();
        let mut want = vec![0xB1, 2, 40, 0]; // Header: RSS_PROCESSOR_INFO, revision 2, 40 bytes
        want.extend(0u32.to_le_bytes()); // Flags
        want.extend([0, 0, 0, 0]); // RssBaseProcessor {Group 0, Number 0}
        want.extend(1u32.to_le_bytes()); // MaxNumRssProcessors
        want.extend([0, 0, 0, 0]); // PreferredNumaNode, padding
        want.extend(40u32.to_le_bytes()); // RssProcessorArrayOffset
        want.extend(1u32.to_le_bytes()); // RssProcessorCount
        want.extend(8u32.to_le_bytes()); // RssProcessorEntrySize
        want.extend([0, 0, 0, 0]); // RssMaxProcessor
        want.extend(1u32.to_le_bytes()); // RssProfile: NdisRssProfileClosest
        want.extend([0; 8]); // NDIS_RSS_PROCESSOR {ProcNum {0, 0}, PreferenceIndex 0}
        want.push(0xEE); // nothing written past the 48 bytes
        assert_eq!(bytes, want, "{}", arch.name());
        // Bad input is a clean status.
        let bad = ndis::NDIS_STATUS_INVALID_PARAMETER;
        assert_eq!(rss(k, 0xBAD0, info, size).unwrap(), bad);
        assert_eq!(rss(k, nic.adapter, info, 0).unwrap(), bad);
        assert_eq!(rss(k, nic.adapter, info, 0x10).unwrap(), bad);
        ex::free(k, info, None).unwrap();
        ex::free(k, size, None).unwrap();
        stop_clean(arch, nic);
    }
}

#[test]
fn work_item_misuse_is_caught() {
    for arch in ARCHES {
        let mut nic = start(arch);
        let k = &mut nic.host.k;
        assert_eq!(ndis::workitem::allocate_io_work_item(k, 0xBAD0).unwrap(), 0);
        assert_eq!(ndis::workitem::allocate_io_work_item(k, 0).unwrap(), 0);
        ndis::workitem::queue_io_work_item(k, 0, 0x1000, 0).unwrap();
        ndis::workitem::free_io_work_item(k, 0).unwrap();
        let err = ndis::workitem::queue_io_work_item(k, 0xBAD0, 0x1000, 0).unwrap_err();
        assert!(
            matches!(err, KernelError::BugCheck { code: 0xE4, .. }),
            "{}: {err}",
            arch.name()
        );
        // One for the adapter: queued twice, or freed while queued, is WORKER_INVALID too.
        let item = ndis::workitem::allocate_io_work_item(k, nic.adapter).unwrap();
        assert_ne!(item, 0);
        // A routine of two arguments that does nothing with a NULL first one.
        let routine = k.bind_import("ndis.sys", "NdisCopyReceiveNetBufferListInfo");
        ndis::workitem::queue_io_work_item(k, item, routine, 0).unwrap();
        let err = ndis::workitem::queue_io_work_item(k, item, routine, 0).unwrap_err();
        assert!(
            matches!(err, KernelError::BugCheck { code: 0xE4, .. }),
            "{err}"
        );
        let err = ndis::workitem::free_io_work_item(k, item).unwrap_err();
        assert!(
            matches!(err, KernelError::BugCheck { code: 0xE4, .. }),
            "{err}"
        );
        ntoskrnl::workitem::run_work_items(k).unwrap();
        assert!(!k.ke.work.is_queued(item), "{}: it ran", arch.name());
        ndis::workitem::free_io_work_item(k, item).unwrap();
        stop_clean(arch, nic);
    }
}

#[test]
fn a_pended_oid_set_completes_through_ndis_m_oid_request_complete() {
    for arch in ARCHES {
        let mut nic = start(arch);
        let k = &mut nic.host.k;
        let r = ndis::miniport::set(
            k,
            nic.adapter,
            OID_GEN_CURRENT_LOOKAHEAD,
            &256u32.to_le_bytes(),
        )
        .unwrap();
        assert!(r.is_none(), "{}: the set pends", arch.name());
        assert_eq!(ndis::miniport::completed_request(k, nic.adapter), None);
        let end = Instant::now() + Duration::from_secs(2);
        let done = loop {
            let k = &mut nic.host.k;
            ndis::miniport::periodic(k, nic.adapter).unwrap();
            if let Some(r) = ndis::miniport::completed_request(k, nic.adapter) {
                break r;
            }
            assert!(Instant::now() < end, "{}: never completed", arch.name());
            std::thread::sleep(Duration::from_millis(1));
        };
        assert_eq!(done.status, ndis::NDIS_STATUS_SUCCESS, "{}", arch.name());
        assert_eq!(done.bytes_read, 4);
        let r = nic.query(OID_GEN_CURRENT_LOOKAHEAD, 4).unwrap();
        assert_eq!(r.data, 256u32.to_le_bytes());
        // The host's own request path waits for the completion.
        let r = nic
            .set(OID_GEN_CURRENT_LOOKAHEAD, &512u32.to_le_bytes())
            .unwrap();
        assert_eq!(r.status, ndis::NDIS_STATUS_SUCCESS);
        assert_eq!(
            nic.query(OID_GEN_CURRENT_LOOKAHEAD, 4).unwrap().data,
            512u32.to_le_bytes()
        );
        // Validated before it pends: too large is an immediate failure.
        let r = nic
            .set(OID_GEN_CURRENT_LOOKAHEAD, &4000u32.to_le_bytes())
            .unwrap();
        assert_eq!(
            r.status,
            0xC001_0015,
            "{}: NDIS_STATUS_INVALID_DATA",
            arch.name()
        );
        stop_clean(arch, nic);
    }
}

#[test]
fn an_oversized_frame_fails_with_invalid_length_and_the_host_keeps_running() {
    for arch in ARCHES {
        let mut nic = start(arch);
        let big = frame(DEFAULT_MAC, PEER, 1600 - 14, 1);
        let small = frame(DEFAULT_MAC, PEER, 50, 2);
        let got = loop_back(&mut nic, &[big, small.clone()], 1);
        assert_eq!(got, vec![small.clone()], "{}", arch.name());
        let stats = nic.stats();
        assert_eq!(stats.sends_failed, 1, "{}: {stats:?}", arch.name());
        assert_eq!(stats.last_send_failure, Some(NDIS_STATUS_INVALID_LENGTH));
        assert_eq!(
            loop_back(&mut nic, std::slice::from_ref(&small), 1),
            vec![small]
        );
        stop_clean(arch, nic);
    }
}

#[test]
fn malformed_nbl_chains_from_the_driver_are_clean_errors() {
    for arch in ARCHES {
        let mut nic = start(arch);
        let k = &mut nic.host.k;
        let mut b = NblBuilder::default();
        let payload: Vec<u8> = (0..64u8).collect();
        let m1 = b.mdl(k, &payload);
        let m2 = b.mdl(k, &payload[..32]);
        // Two MDLs chained: an NB may span them.
        k.write_ptr(m1 + k.layout.mdl_next, m2).unwrap();
        let good1 = b.nbl(k, m1, 96);
        let good2 = b.nbl(k, m2, 32);
        b.link(k, good1, good2);
        let ok = nbl::read_received(k, good1, 2)
            .unwrap()
            .expect("well formed");
        let mut spanning = payload.clone();
        spanning.extend_from_slice(&payload[..32]);
        assert_eq!(
            ok,
            vec![
                (good1, vec![spanning]),
                (good2, vec![payload[..32].to_vec()])
            ]
        );

        // More NBLs than NumberOfNetBufferLists.
        let e = nbl::read_received(k, good1, 1).unwrap().unwrap_err();
        assert!(e.contains("more than 1"), "{e}");
        // Fewer.
        let e = nbl::read_received(k, good1, 3).unwrap().unwrap_err();
        assert!(e.contains("holds 2"), "{e}");
        // A cycle.
        let cycle = b.nbl(k, m2, 16);
        b.link(k, cycle, cycle);
        let e = nbl::read_received(k, cycle, 4).unwrap().unwrap_err();
        assert!(e.contains("cycle"), "{e}");
        // DataLength past the end of the MDL chain.
        let long = b.nbl(k, m2, 33);
        let e = nbl::read_received(k, long, 1).unwrap().unwrap_err();
        assert!(e.contains("DataLength 33"), "{e}");

        // Through the export: a bug check naming the adapter, nothing indicated.
        let before = ndis::miniport::stats(k, nic.adapter).unwrap();
        let err = nbl::indicate_receive(k, nic.adapter, cycle, 0, 1, 0).unwrap_err();
        let text = err.to_string();
        assert!(
            matches!(err, KernelError::BugCheck { code: 0x7C, .. }),
            "{text}"
        );
        assert!(
            text.contains("netvirt_ndis6") && text.contains("malformed NBL chain"),
            "{text}"
        );
        let err = nbl::indicate_receive(k, nic.adapter, long, 0, 1, 0).unwrap_err();
        assert!(err.to_string().contains("MDL chain"), "{err}");
        // Completing a send that is not in flight is one too.
        let err = nbl::send_complete(k, nic.adapter, good2, 0).unwrap_err();
        assert!(err.to_string().contains("not a send in progress"), "{err}");
        assert_eq!(ndis::miniport::stats(k, nic.adapter).unwrap(), before);
        b.free(k);

        // The host keeps running: traffic still flows and the adapter halts cleanly.
        let f = frame(DEFAULT_MAC, PEER, 70, 3);
        assert_eq!(
            loop_back(&mut nic, std::slice::from_ref(&f), 1),
            vec![f],
            "{}",
            arch.name()
        );
        stop_clean(arch, nic);
    }
}

#[test]
fn halt_and_unload_leave_nothing_behind() {
    for arch in ARCHES {
        let mut nic = start(arch);
        let f = frame(DEFAULT_MAC, PEER, 200, 5);
        assert_eq!(loop_back(&mut nic, std::slice::from_ref(&f), 1), vec![f]);
        // Leave a frame on the wire and the timer armed: HaltEx cancels it.
        let mut queue = VecDeque::from([frame(DEFAULT_MAC, PEER, 300, 6)]);
        nic.send(&mut queue).unwrap();
        let image = "netvirt_ndis6.sys";
        let k = &mut nic.host.k;
        assert!(k.extension::<ndis::NdisState>().timers.len() == 1);
        let findings = ndis::miniport::halt(k, nic.adapter).expect("halt");
        assert!(findings.is_empty(), "{}: {findings:?}", arch.name());
        nic.host.unload_driver(&nic.driver).expect("unload");
        let k = &mut nic.host.k;
        assert_eq!(k.pool.bytes_owned_by(image), 0, "{}", arch.name());
        assert_eq!(k.ke.timers.armed(), 0, "{}", arch.name());
        let state = k.extension::<ndis::NdisState>();
        assert!(state.timers.is_empty() && state.nbl_pools.is_empty());
        assert!(state.adapters.is_empty() && state.drivers.is_empty());
    }
}
