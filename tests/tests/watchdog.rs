//! The kernel's watchdog, in one process: `netcrash_ndis6.sys` told to spin forever at
//! DISPATCH_LEVEL in its send path (holding its spin lock) is stopped once it has been at that
//! IRQL past the limit, and the failing send reports where it spun (the driver, the guest
//! address, registers and the guest backtrace through the driver's frames).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use host_linux::net::NetMiniport;
use ica_tests::{driver_path, host, ARCHES};
use loader::net::NetAdapter;
use ntoskrnl::registry::{service_path, RegValue};

#[test]
fn a_spin_at_dispatch_level_is_stopped_and_reported() {
    for arch in ARCHES {
        let mut h = host(arch);
        let limit = Duration::from_millis(200);
        h.k.watchdog.raised = Some(limit);
        let key = format!(r"{}\Parameters", service_path("netcrash_ndis6"));
        let reg = ntoskrnl::registry::backend(&mut h.k);
        reg.create_key_path(&key).unwrap();
        // Misbehave 2: spin in the send path, from the first frame on.
        reg.set_value(&key, "Misbehave", &RegValue::dword(2))
            .unwrap();
        let mut nic = NetAdapter::start_virtual(h, &driver_path(arch, "netcrash_ndis6"), None)
            .unwrap_or_else(|e| panic!("{e}"));
        let mut frames = VecDeque::from([vec![0xFF; 60]]);
        let sent = Instant::now();
        let err = nic.send(&mut frames).expect_err("the spin is stopped");
        let detected = sent.elapsed();
        eprintln!("{}: spin stopped after {detected:.1?}", arch.name());
        assert!(detected >= limit, "{detected:?}");
        assert!(detected < limit * 10, "{detected:?}");
        let report = err.message;
        for needle in [
            "guest fault in netcrash_ndis6.sys+0x",
            "watchdog: spun at IRQL 2 for more than 200ms without returning",
            "#0 netcrash_ndis6.sys+0x",
            "#1 netcrash_ndis6.sys+0x",
            "#2 netcrash_ndis6.sys+0x",
            "ndis.sys!NdisAcquireSpinLock from netcrash_ndis6.sys+0x",
        ] {
            assert!(report.contains(needle), "no {needle:?} in\n{report}");
        }
    }
}
