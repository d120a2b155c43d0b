//! Loading: an image with an empty relocation directory runs wherever it is mapped; relocated
//! images run away from their preferred base; DriverEntry and DriverUnload both run.

use ica_tests::{driver_path, host, ARCHES};
use ntoskrnl::dbg::DebugLog;

#[test]
fn image_without_relocations_runs_away_from_its_preferred_base() {
    for arch in ARCHES {
        let path = driver_path(arch, "norelocs");
        let pe = loader::host::read_image(&path).unwrap_or_else(|e| panic!("{e}"));
        if arch == dbt::Arch::X64 {
            assert!(
                pe.relocations.is_empty(),
                "the x64 build has an empty relocation directory"
            );
        } else {
            assert!(!pe.relocations.is_empty(), "the x86 build is relocated");
        }
        let mut h = host(arch);
        let driver = h.load_driver(&path).unwrap_or_else(|e| panic!("{e}"));
        let image =
            h.k.images
                .iter()
                .find(|i| i.name == "norelocs.sys")
                .unwrap()
                .clone();
        assert_ne!(
            image.base, pe.image_base,
            "mapped away from the preferred base {:#x}",
            pe.image_base
        );
        h.unload_driver(&driver).unwrap_or_else(|e| panic!("{e}"));
        let log = &h.k.extension::<DebugLog>().lines;
        assert_eq!(
            log,
            &[
                "norelocs.sys: norelocs: DriverEntry, 0 unloads so far",
                "norelocs.sys: norelocs: DriverUnload"
            ],
            "DbgPrint output of both routines, with the format arguments applied"
        );
    }
}
