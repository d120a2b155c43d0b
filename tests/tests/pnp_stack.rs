//! function.sys + filter.sys: a PnP stack of two separate drivers on a root-enumerated PDO, built
//! with AddDevice and IRP_MN_START_DEVICE, used through the filter's completion routine, and torn
//! down with QUERY_REMOVE / REMOVE_DEVICE.

use ica_tests::{driver_path, host, ioctl, render_trace, ARCHES};
use ntoskrnl::io::IrpEvent;
use ntoskrnl::status::STATUS_SUCCESS;

fn run(arch: dbt::Arch) -> String {
    let mut h = host(arch);
    let baseline = h.k.pool.live_bytes();
    let function = h
        .load_driver(&driver_path(arch, "function"))
        .unwrap_or_else(|e| panic!("{e}"));
    let filter = h
        .load_driver(&driver_path(arch, "filter"))
        .unwrap_or_else(|e| panic!("{e}"));
    let pdo = h
        .build_stack("IcaPair", &[&function, &filter])
        .unwrap_or_else(|e| panic!("{e}"));

    let handle = h
        .open("\\\\.\\IcaFunction")
        .unwrap()
        .expect("open through the filter");
    let r = h
        .ioctl(handle, ioctl::ADD, &41u32.to_le_bytes(), &[0; 4])
        .unwrap();
    assert_eq!((r.status, r.information), (STATUS_SUCCESS, 4));
    assert_eq!(
        u32::from_le_bytes(r.output[..4].try_into().unwrap()),
        41 + 1000 + 1,
        "function added 1000, filter's completion routine 1"
    );
    assert_eq!(h.close(handle).unwrap(), STATUS_SUCCESS);

    assert_eq!(h.remove_stack(pdo).unwrap(), STATUS_SUCCESS);
    h.unload_driver(&filter).unwrap_or_else(|e| panic!("{e}"));
    h.unload_driver(&function).unwrap_or_else(|e| panic!("{e}"));
    for image in ["function.sys", "filter.sys"] {
        assert_eq!(h.k.pool.bytes_owned_by(image), 0, "{image} freed its pool");
    }
    assert!(h.k.io.devices.is_empty(), "every device object was deleted");
    assert_eq!(h.k.io.live_irps(), 0);
    let trace = h.k.io.take_trace();
    assert!(
        trace.iter().any(
            |e| matches!(e, IrpEvent::CompletionRoutine { driver, .. } if driver == "filter.sys")
        ),
        "the filter's completion routine ran"
    );
    assert_eq!(
        h.k.pool.live_bytes(),
        baseline,
        "the PDO and every I/O manager allocation are gone"
    );
    render_trace(&trace)
}

#[test]
fn filter_over_function_stack_flows_match_on_both_architectures() {
    let [x86, x64] = ARCHES.map(run);
    insta::assert_snapshot!("pnp_stack_x86", x86);
    insta::assert_snapshot!("pnp_stack_x64", x64);
    assert_eq!(x86, x64);
}
