//! Drivers that go wrong: an import nobody implements and a NULL dereference inside an IOCTL. The
//! host reports what happened (the import's name; the faulting address, registers and a guest
//! backtrace), the failing request ends, and the driver host keeps serving requests.

use ica_tests::{driver_path, host, ioctl, render_trace, ARCHES};
use loader::HostError;
use ntoskrnl::status::STATUS_SUCCESS;
use ntoskrnl::KernelError;

#[test]
fn unimplemented_import_fails_the_call_path_and_names_the_function() {
    let mut flows = Vec::new();
    for arch in ARCHES {
        let mut h = host(arch);
        let driver = h
            .load_driver(&driver_path(arch, "unknownimport"))
            .unwrap_or_else(|e| panic!("{e}"));
        let trap =
            h.k.bindings()
                .iter()
                .find(|b| b.name == "FsRtlIsNameInExpression")
                .expect("the import is bound to a named trap at load time");
        assert!(trap.export.is_none());
        let handle = h.open("\\\\.\\IcaUnknown").unwrap().unwrap();
        let err = h
            .ioctl(handle, ioctl::CALL_UNKNOWN, &[], &[])
            .expect_err("the trap fails the IOCTL");
        let HostError::Kernel {
            error: KernelError::Unimplemented { import, caller },
            report,
        } = err
        else {
            panic!("expected an unimplemented-import error, got {err}");
        };
        assert_eq!(import, "ntoskrnl.exe!FsRtlIsNameInExpression");
        assert!(
            h.k.image_at(caller)
                .is_some_and(|i| i.name == "unknownimport.sys"),
            "caller is inside the driver"
        );
        assert!(
            report.contains("ntoskrnl.exe!FsRtlIsNameInExpression from unknownimport.sys+0x"),
            "{report}"
        );
        let ping = h.ioctl(handle, ioctl::PING, &[], &[]).unwrap();
        assert_eq!(
            ping.status, STATUS_SUCCESS,
            "the host and driver keep running after the trap"
        );
        h.close(handle).unwrap();
        h.unload_driver(&driver).unwrap_or_else(|e| panic!("{e}"));
        flows.push(render_trace(&h.k.io.take_trace()));
    }
    insta::assert_snapshot!("unknownimport_x86", flows[0]);
    insta::assert_snapshot!("unknownimport_x64", flows[1]);
    assert_eq!(flows[0], flows[1], "x86-32 and x64 flows match");
}

#[test]
fn null_dereference_is_a_reported_guest_fault_and_the_host_keeps_running() {
    let mut flows = Vec::new();
    for arch in ARCHES {
        let mut h = host(arch);
        let driver = h
            .load_driver(&driver_path(arch, "nullderef"))
            .unwrap_or_else(|e| panic!("{e}"));
        let handle = h.open("\\\\.\\IcaNull").unwrap().unwrap();
        let err = h
            .ioctl(handle, ioctl::NULL_DEREF, &[], &[0; 4])
            .expect_err("the NULL read faults");
        let HostError::Kernel {
            error: KernelError::Fault(fault),
            report,
        } = err
        else {
            panic!("expected a guest fault, got {err}");
        };
        assert!(
            matches!(
                fault.kind,
                dbt::FaultKind::PageFault {
                    addr: 0,
                    write: false
                }
            ),
            "{:?}",
            fault.kind
        );
        assert!(
            h.k.image_at(fault.rip)
                .is_some_and(|i| i.name == "nullderef.sys"),
            "fault rip inside the driver"
        );
        let frames_in_driver = fault
            .backtrace
            .iter()
            .filter(|a| h.k.image_at(**a).is_some_and(|i| i.name == "nullderef.sys"))
            .count();
        assert!(
            frames_in_driver >= 3,
            "backtrace: helper, handler, dispatch routine: {report}"
        );
        for needle in [
            "guest fault in nullderef.sys+0x",
            "guest backtrace:",
            "#1 nullderef.sys+0x",
        ] {
            assert!(
                report.contains(needle),
                "report lacks {needle:?}:\n{report}"
            );
        }
        let register = if arch == dbt::Arch::X64 { "rax" } else { "eax" };
        assert!(
            report.contains(register),
            "report shows registers:\n{report}"
        );
        let ping = h.ioctl(handle, ioctl::PING, &[], &[]).unwrap();
        assert_eq!(
            ping.status, STATUS_SUCCESS,
            "the driver host keeps serving requests after the fault"
        );
        h.close(handle).unwrap();
        h.unload_driver(&driver).unwrap_or_else(|e| panic!("{e}"));
        flows.push(render_trace(&h.k.io.take_trace()));
    }
    insta::assert_snapshot!("nullderef_x86", flows[0]);
    insta::assert_snapshot!("nullderef_x64", flows[1]);
    assert_eq!(flows[0], flows[1], "x86-32 and x64 flows match");
}
