//! The INFs of the project's test drivers (tests/drivers/*.inf) parse, and their install plans
//! name the right service, binary, hardware ID, start type and filter registration, on both
//! architectures, with source files that exist.

use std::path::{Path, PathBuf};

use loader::inf::{
    Arch, DirId, DirResolver, HkrBase, Inf, InstallPlan, NoIncludes, ParseOptions, PlanKind,
    RegAction, RegData, RegRoot, TargetOs,
};

fn drivers_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/drivers")
}

fn open(name: &str) -> Inf {
    let path = drivers_dir().join(name);
    Inf::open(&path, &ParseOptions::default()).unwrap_or_else(|e| panic!("{e}"))
}

fn targets() -> [TargetOs; 4] {
    [
        TargetOs::windows10(Arch::Amd64),
        TargetOs::windows10(Arch::X86),
        TargetOs::windows_xp(Arch::X86),
        TargetOs::windows7(Arch::Amd64),
    ]
}

fn bin_dir(arch: Arch) -> &'static str {
    match arch {
        Arch::X86 => "bin/x86",
        _ => "bin/x64",
    }
}

/// Every file of the plan exists where the plan says, relative to its INF's directory.
fn check_files(plan: &InstallPlan, expect: &[&str]) {
    let names: Vec<&str> = plan.files.iter().map(|f| f.dest_name.as_str()).collect();
    assert_eq!(names, expect, "{plan}");
    for f in &plan.files {
        assert_eq!(f.dest_dir, DirId::DRIVERS, "{plan}");
        assert_eq!(
            f.source_path,
            format!("{}/{}", bin_dir(plan.target.arch), f.source_name)
        );
        let base = Path::new(&f.source_inf).parent().unwrap();
        assert!(
            base.join(&f.source_path).is_file(),
            "{} missing",
            f.source_path
        );
    }
}

fn assert_no_warnings(plan: &InstallPlan) {
    assert!(
        plan.warnings.is_empty(),
        "unexpected warnings: {:#?}",
        plan.warnings
    );
}

#[test]
fn legacy_drivers_install_as_demand_start_services() {
    for (inf_name, service) in [
        ("ioctl.inf", "IcaIoctl"),
        ("unknownimport.inf", "IcaUnknown"),
        ("nullderef.inf", "IcaNull"),
        ("norelocs.inf", "IcaNoRelocs"),
        ("sins.inf", "IcaSins"),
    ] {
        let inf = open(inf_name);
        assert_eq!(inf.version().signature, "$Windows NT$");
        assert!(inf.version().is_class("System"));
        assert_eq!(
            inf.version().class_guid.unwrap().to_string(),
            "{4D36E97D-E325-11CE-BFC1-08002BE10318}"
        );
        assert_eq!(
            inf.version().driver_ver.unwrap().version,
            Some([1, 0, 0, 0])
        );
        let sys = inf_name.replace(".inf", ".sys");
        assert_eq!(
            inf.version().catalog_file(Arch::Amd64),
            Some(format!("ica_{}", inf_name.replace(".inf", ".cat")).as_str())
        );
        assert!(!inf.has_manufacturer());
        for target in targets() {
            let plan = inf
                .plan_default_install(&target, &NoIncludes)
                .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(plan.kind, PlanKind::DefaultInstall);
            assert_eq!(
                plan.install_section,
                format!("DefaultInstall.NT{}", target.arch)
            );
            check_files(&plan, &[sys.as_str()]);
            assert_eq!(plan.services.len(), 1);
            let s = &plan.services[0];
            assert_eq!(s.name, service);
            assert_eq!((s.service_type, s.start_type, s.error_control), (1, 3, 1));
            assert_eq!(s.binary.dir, Some(DirId::DRIVERS));
            assert_eq!(s.binary.path, sys);
            assert_eq!(
                s.binary.system_root_path(),
                Some(format!("\\SystemRoot\\System32\\drivers\\{sys}"))
            );
            let dv = plan.version.driver_ver.unwrap();
            assert_eq!(
                (dv.date_string(), dv.version_string().unwrap()),
                ("1-1-2025".to_string(), "1.0.0.0".to_string())
            );
            assert!(s.display_name.as_deref().unwrap().starts_with("ICA "));
            assert_eq!(plan.function_service, None);
            assert!(plan.registry.is_empty());
            assert_no_warnings(&plan);
        }
        // A legacy INF installs no device.
        assert!(inf.manufacturers().is_err());
    }
}

#[test]
fn function_driver_installs_for_root_icafunction() {
    let inf = open("function.inf");
    for target in targets() {
        let models = inf.models(&target).unwrap();
        assert_eq!(models.len(), 1);
        assert_eq!(
            models[0].models_section,
            format!("IcaModels.NT{}", target.arch)
        );
        let plan = inf
            .plan_for_hardware_id("root\\icafunction", &target, &NoIncludes)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(plan.hardware_id(), Some("ROOT\\IcaFunction"));
        assert_eq!(plan.install_section, "IcaFunction_Install.NT");
        assert_eq!(plan.function_service.as_deref(), Some("IcaFunction"));
        check_files(&plan, &["function.sys"]);
        let s = plan.service("IcaFunction").unwrap();
        assert_eq!((s.service_type, s.start_type, s.error_control), (1, 3, 1));
        assert_eq!(s.binary.to_string(), "%12%\\function.sys");
        assert_eq!(s.flags, 2);
        assert!(plan.upper_filters.is_empty());
        assert_no_warnings(&plan);
    }
}

#[test]
fn filter_inf_stacks_filter_above_function_driver() {
    let path = drivers_dir().join("filter.inf");
    let inf = open("filter.inf");
    let resolver = DirResolver::beside(&path);
    for target in targets() {
        let plan = inf
            .plan_for_hardware_id("ROOT\\IcaFunction", &target, &resolver)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(plan.included.len(), 1);
        assert!(plan.included[0].ends_with("function.inf"));
        // function.sys comes through Needs from function.inf, filter.sys from filter.inf.
        check_files(&plan, &["function.sys", "filter.sys"]);
        assert!(plan.files[0].source_inf.ends_with("function.inf"));
        assert_eq!(plan.function_service.as_deref(), Some("IcaFunction"));
        let names: Vec<&str> = plan.services.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["IcaFunction", "IcaFilter"]);
        let f = plan.service("IcaFilter").unwrap();
        assert_eq!((f.service_type, f.start_type, f.flags), (1, 3, 0));
        assert_eq!(f.binary.to_string(), "%12%\\filter.sys");
        assert_eq!(plan.upper_filters, ["IcaFilter"]);
        let op = &plan.registry[0];
        assert_eq!(
            (op.root, &op.hkr, op.subkey.as_str()),
            (RegRoot::Hkr, &HkrBase::DeviceKey, "")
        );
        assert_eq!(
            op.action,
            RegAction::SetValue {
                name: "UpperFilters".into(),
                data: RegData::MultiSz(vec!["IcaFilter".into()])
            }
        );
        assert_no_warnings(&plan);
    }
}

#[test]
fn filter_inf_without_its_include_installs_nothing() {
    let inf = open("filter.inf");
    let e = inf
        .plan_for_hardware_id(
            "ROOT\\IcaFunction",
            &TargetOs::windows10(Arch::Amd64),
            &NoIncludes,
        )
        .unwrap_err();
    assert!(e.file.ends_with("filter.inf"));
    let text = std::fs::read_to_string(drivers_dir().join("filter.inf")).unwrap();
    let needs_line = text.lines().position(|l| l.starts_with("Needs ")).unwrap() as u32 + 1;
    assert_eq!(e.line, needs_line, "{e}");
    assert!(e.message.contains("IcaFunction_Install.NT"), "{e}");
}

#[test]
fn every_test_driver_has_an_inf() {
    for name in [
        "ioctl",
        "function",
        "filter",
        "unknownimport",
        "nullderef",
        "norelocs",
    ] {
        let dir = drivers_dir();
        assert!(dir.join(format!("{name}.c")).is_file(), "{name}.c");
        assert!(
            dir.join(format!("{name}.inf")).is_file(),
            "{name}.c has no .inf"
        );
    }
}
