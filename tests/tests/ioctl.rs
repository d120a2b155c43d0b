//! ioctl.sys: a WDM driver driven through every transfer method, read/write, an in-driver self test
//! of the kernel services (timers, DPCs and work items included), and a clean unload, on x86-32 and
//! x64 with identical IRP flows.

use ica_tests::{driver_path, host, ioctl, render_trace, ARCHES};
use ntoskrnl::status::{self, STATUS_INVALID_DEVICE_REQUEST, STATUS_SUCCESS};
use ntoskrnl::{registry, workitem};

fn run(arch: dbt::Arch) -> String {
    let mut h = host(arch);
    let baseline = h.k.pool.live_bytes();
    let driver = h
        .load_driver(&driver_path(arch, "ioctl"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        h.k.io.resolve("\\\\.\\IcaIoctl").is_some(),
        "DriverEntry created \\Device\\IcaIoctl behind \\DosDevices\\IcaIoctl"
    );
    let handle = h
        .open("\\\\.\\IcaIoctl")
        .unwrap()
        .expect("IRP_MJ_CREATE succeeds");

    let r = h.ioctl(handle, ioctl::REVERSE, b"abcdef", &[0; 6]).unwrap();
    assert_eq!(
        (r.status, r.information, r.output.as_slice()),
        (STATUS_SUCCESS, 6, &b"fedcba"[..])
    );
    let r = h.ioctl(handle, ioctl::REVERSE, b"abcdef", &[0; 3]).unwrap();
    assert_eq!(r.status, status::STATUS_BUFFER_TOO_SMALL);

    let direct: Vec<u8> = b"a-b-c-d-e-f-".to_vec();
    let r = h.ioctl(handle, ioctl::COUNT, b"-", &direct).unwrap();
    assert_eq!(
        (r.status, r.information),
        (STATUS_SUCCESS, 6),
        "IN_DIRECT: the driver counted the '-' in the MDL buffer"
    );

    let r = h
        .ioctl(handle, ioctl::FILL, &5u32.to_le_bytes(), &[0; 300])
        .unwrap();
    let expected: Vec<u8> = (0..300u32).map(|i| (5 + i * 7) as u8).collect();
    assert_eq!((r.status, r.information), (STATUS_SUCCESS, 300));
    assert_eq!(
        r.output, expected,
        "OUT_DIRECT: the driver filled the MDL buffer"
    );

    let mut factors = 0xFFFF_FFF0u32.to_le_bytes().to_vec();
    factors.extend_from_slice(&0x1234_5678u32.to_le_bytes());
    let r = h.ioctl(handle, ioctl::MULTIPLY, &factors, &[0; 8]).unwrap();
    assert_eq!((r.status, r.information), (STATUS_SUCCESS, 8));
    assert_eq!(
        u64::from_le_bytes(r.output[..8].try_into().unwrap()),
        0xFFFF_FFF0u64 * 0x1234_5678
    );

    let r = h.ioctl(handle, ioctl::SELFTEST, &[], &[0; 128]).unwrap();
    assert_eq!(r.status, STATUS_SUCCESS);
    let passed = u32::from_le_bytes(r.output[0..4].try_into().unwrap());
    let failed = u32::from_le_bytes(r.output[4..8].try_into().unwrap());
    let first = String::from_utf8_lossy(&r.output[8..])
        .trim_end_matches('\0')
        .to_string();
    assert_eq!(
        failed,
        0,
        "{} in-driver check(s) failed on {}, first: {first}",
        failed,
        arch.name()
    );
    assert!(passed >= 100, "the self test ran its checks ({passed})");
    // The timer and work-item checks left nothing behind.
    assert_eq!(h.k.ke.timers.armed(), 0, "no timer left armed");
    assert!(
        h.k.ke.timers.fired() >= 8,
        "the self test's timers fired ({})",
        h.k.ke.timers.fired()
    );
    assert_eq!(h.k.ke.work.queued(), 0, "no work item left queued");
    assert_eq!(h.k.ke.work.ran(), 5, "every queued work item ran once");
    // The lookaside checks allocated through the lists and deleted them: nothing cached is left.
    let lookaside = h.k.pool.tag_usage(u32::from_le_bytes(*b"IcLk"));
    assert!(
        lookaside.allocations >= 8 && lookaside.blocks == 0,
        "lookaside entries freed: {lookaside:?}"
    );
    assert!(h
        .k
        .extension::<ntoskrnl::lookaside::Lookasides>()
        .lists
        .is_empty());
    let io_workitems = h.k.pool.tag_usage(workitem::IO_WORKITEM_TAG);
    assert_eq!(
        (io_workitems.allocations, io_workitems.blocks),
        (1, 0),
        "IoAllocateWorkItem's block was freed by IoFreeWorkItem"
    );

    // The EX_TIMER checks: one timer allocated from the driver's pool, deleted (block freed).
    let ex_timers = h.k.pool.tag_usage(u32::from_le_bytes(*b"ExTm"));
    assert_eq!(
        (ex_timers.allocations, ex_timers.blocks),
        (1, 0),
        "ExAllocateTimer's block was freed by ExDeleteTimer"
    );
    // IoOpenDriverRegistryKey created the State key under the service key, with the value written.
    let state = format!(r"{}\State", registry::service_path("ioctl"));
    let value = registry::backend(&mut h.k)
        .query_value(&state, "IcaState")
        .unwrap()
        .map(|(_, v)| v.as_dword());
    assert_eq!(value, Some(Some(0x1CA)), "{state} holds IcaState");
    assert!(registry::backend(&mut h.k)
        .key_info(&format!(r"{}\Parameters", registry::service_path("ioctl")))
        .is_ok());
    // x86: KeQueryTickCount read the KeTickCount variable inline, and hal.dll's stdcall KeLowerIrql
    // and KeReleaseSpinLock were called; x64 has none of these imports.
    let calls = |module: &str, name: &str| {
        h.k.bindings()
            .iter()
            .find(|b| b.module == module && b.name == name)
            .map(|b| b.calls)
    };
    let x86 = arch == dbt::Arch::X86;
    assert_eq!(calls("hal.dll", "KeLowerIrql"), x86.then_some(1));
    assert_eq!(calls("hal.dll", "KeReleaseSpinLock"), x86.then_some(1));
    // Fast mutexes: x86 drivers import them from hal.dll (fastcall), x64 ones from ntoskrnl.exe.
    let fast_mutexes = if x86 { "hal.dll" } else { "ntoskrnl.exe" };
    assert_eq!(calls(fast_mutexes, "ExAcquireFastMutex"), Some(1));
    assert_eq!(calls(fast_mutexes, "ExTryToAcquireFastMutex"), Some(2));
    // The P2 checks: multiple-object waits, the CRT generator, x86's fastcall byte swaps.
    assert_eq!(calls("ntoskrnl.exe", "KeWaitForMultipleObjects"), Some(5));
    assert_eq!(calls("ntoskrnl.exe", "rand"), Some(4));
    assert_eq!(calls("ntoskrnl.exe", "RtlUlongByteSwap"), x86.then_some(1));
    assert_eq!(calls("ntoskrnl.exe", "IoCancelIrp"), Some(3));
    assert_eq!(
        calls("ntoskrnl.exe", "IoReleaseCancelSpinLock"),
        Some(2),
        "the cancel routine and the self test each released the cancel spin lock"
    );
    // IoAllocateDriverObjectExtension's block lives until the driver object goes (checked below).
    let extensions = h.k.pool.tag_usage(u32::from_le_bytes(*b"IoDe"));
    assert_eq!(
        (extensions.allocations, extensions.blocks),
        (1, 1),
        "one driver object extension (the duplicate was refused)"
    );
    assert_eq!(
        calls("ntoskrnl.exe", "KeTickCount"),
        None,
        "a data import binds to the variable, not to a thunk"
    );

    let w = h.write(handle, b"kept by the driver").unwrap();
    assert_eq!((w.status, w.information), (STATUS_SUCCESS, 18));
    let r = h.read(handle, 64).unwrap();
    assert_eq!(r.output, b"kept by the driver");

    let r = h.ioctl(handle, 0x0022_3FFF, &[], &[]).unwrap();
    assert_eq!(r.status, STATUS_INVALID_DEVICE_REQUEST);
    assert_eq!(h.close(handle).unwrap(), STATUS_SUCCESS);
    h.unload_driver(&driver).unwrap_or_else(|e| panic!("{e}"));

    assert_eq!(
        h.k.pool.bytes_owned_by("ioctl.sys"),
        0,
        "the driver freed its pool"
    );
    assert_eq!(
        h.k.pool.live_bytes(),
        baseline,
        "no I/O manager allocation outlives the driver"
    );
    assert_eq!(
        h.k.pool.tag_usage(u32::from_le_bytes(*b"IoDe")).blocks,
        0,
        "the driver object extension was freed with the driver object"
    );
    assert_eq!(h.k.io.live_irps(), 0);
    assert!(
        h.k.io.resolve("\\\\.\\IcaIoctl").is_none(),
        "unload removed the device and its link"
    );
    render_trace(&h.k.io.take_trace())
}

#[test]
fn ioctl_driver_flows_match_on_both_architectures() {
    let [x86, x64] = ARCHES.map(run);
    insta::assert_snapshot!("ioctl_x86", x86);
    insta::assert_snapshot!("ioctl_x64", x64);
    assert_eq!(
        x86, x64,
        "x86-32 and x64 builds of the same driver produce the same IRP flow"
    );
}
