//! Install plans: what installing a device (or a DefaultInstall) from an INF does, resolved
//! into files to copy, registry operations in order, and services to add, for the installer
//! to execute. Building a plan validates everything it needs: any error means nothing is
//! installed.

use std::fmt;
use std::path::{Path, PathBuf};

use super::dirid::{DirId, InfPath};
use super::error::{InfError, InfWarning, Origin};
use super::model::{parse_int, Inf, Model, Version};
use super::net::{gather, NetInfo, SimRegistry};
use super::reg::{
    parse_addreg, parse_delreg, HkrBase, RegAction, RegData, RegOp, RegRoot, FLG_ADDREG_TYPE_DWORD,
};
use super::syntax::{InfFile, Line, Section};
use super::target::TargetOs;

/// An INF found for an `Include=` entry.
#[derive(Debug, Clone)]
pub struct IncludedInf {
    /// Its name or path: used in messages, and its directory is the source root of its files.
    pub name: String,
    pub bytes: Vec<u8>,
}

/// Finds the INFs named by `Include=` (on Windows: in `%SystemRoot%\INF`).
pub trait IncludeResolver {
    /// The INF called `name` (a file name such as `machine.inf`), if there is one.
    fn load(&self, name: &str) -> Option<IncludedInf>;
}

impl<F: Fn(&str) -> Option<IncludedInf>> IncludeResolver for F {
    fn load(&self, name: &str) -> Option<IncludedInf> {
        self(name)
    }
}

/// A resolver that finds nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoIncludes;

impl IncludeResolver for NoIncludes {
    fn load(&self, _name: &str) -> Option<IncludedInf> {
        None
    }
}

/// A resolver that looks in directories, matching file names case-insensitively.
#[derive(Debug, Clone, Default)]
pub struct DirResolver {
    pub dirs: Vec<PathBuf>,
}

impl DirResolver {
    pub fn new(dirs: Vec<PathBuf>) -> DirResolver {
        DirResolver { dirs }
    }

    /// Look beside an INF (its own directory).
    pub fn beside(inf: &Path) -> DirResolver {
        let dir = inf
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        DirResolver { dirs: vec![dir] }
    }
}

impl IncludeResolver for DirResolver {
    fn load(&self, name: &str) -> Option<IncludedInf> {
        for dir in &self.dirs {
            let Ok(entries) = std::fs::read_dir(dir) else {
                continue;
            };
            for e in entries.flatten() {
                if e.file_name().to_string_lossy().eq_ignore_ascii_case(name) {
                    let path = e.path();
                    if let Ok(bytes) = std::fs::read(&path) {
                        return Some(IncludedInf {
                            name: path.display().to_string(),
                            bytes,
                        });
                    }
                }
            }
        }
        None
    }
}

/// `COPYFLG_NO_OVERWRITE`: never replace an existing file.
pub const COPYFLG_NO_OVERWRITE: u32 = 0x10;
/// `SPSVCINST_ASSOCSERVICE`: the service is the device's function driver.
pub const SPSVCINST_ASSOCSERVICE: u32 = 0x2;
/// `SERVICE_KERNEL_DRIVER`.
pub const SERVICE_KERNEL_DRIVER: u32 = 0x1;
/// `SERVICE_FILE_SYSTEM_DRIVER`.
pub const SERVICE_FILE_SYSTEM_DRIVER: u32 = 0x2;
/// Start types.
pub const SERVICE_BOOT_START: u32 = 0;
pub const SERVICE_SYSTEM_START: u32 = 1;
pub const SERVICE_AUTO_START: u32 = 2;
pub const SERVICE_DEMAND_START: u32 = 3;
pub const SERVICE_DISABLED: u32 = 4;

/// One file to copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileCopy {
    /// The INF (name as given/resolved) whose directory the source path is relative to.
    pub source_inf: String,
    /// The source file's name on the source disk.
    pub source_name: String,
    /// Path relative to the INF's directory, `/`-separated (disk path + subdir + name).
    pub source_path: String,
    pub disk_id: u32,
    pub disk_description: String,
    pub dest_dir: DirId,
    /// Subdirectory of `dest_dir` (`\`-separated, may be empty).
    pub dest_subdir: String,
    pub dest_name: String,
    /// COPYFLG_* flags.
    pub flags: u32,
    pub origin: Origin,
}

/// An event log source registered by `AddService`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventLogInstall {
    /// `System`, `Security` or `Application`.
    pub log: String,
    pub source: String,
}

/// A service to create (`AddService` and its service-install section).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceInstall {
    pub name: String,
    /// SPSVCINST_* flags.
    pub flags: u32,
    pub display_name: Option<String>,
    pub description: Option<String>,
    pub service_type: u32,
    pub start_type: u32,
    pub error_control: u32,
    pub binary: InfPath,
    pub load_order_group: Option<String>,
    pub dependencies: Vec<String>,
    pub start_name: Option<String>,
    pub security: Option<String>,
    pub event_log: Option<EventLogInstall>,
    pub origin: Origin,
}

/// KMDF requirements from a `DDInstall.Wdf` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KmdfService {
    pub service: String,
    pub library_version: Option<String>,
}

/// What is installed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlanKind {
    /// A device, through the chosen model.
    Device(Model),
    /// The `[DefaultInstall]` section (legacy, non-PnP drivers).
    DefaultInstall,
}

/// Everything an install does, in the order to do it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstallPlan {
    /// The main INF's name.
    pub inf: String,
    /// INFs pulled in by `Include=` (names as resolved).
    pub included: Vec<String>,
    pub version: Version,
    pub target: TargetOs,
    pub kind: PlanKind,
    /// The install section actually used (with its decoration, e.g. `Foo_Install.NTamd64`).
    pub install_section: String,
    pub files: Vec<FileCopy>,
    /// Registry operations in order: ClassInstall32 (HKR = class key, for a class that is not
    /// installed yet), DDInstall (HKR = driver key), DDInstall.HW (HKR = device key), then each
    /// service's and event log's (HKR = service / event log key: create the service first).
    pub registry: Vec<RegOp>,
    pub services: Vec<ServiceInstall>,
    /// Services removed by `DelService` (name).
    pub deleted_services: Vec<String>,
    /// The service flagged SPSVCINST_ASSOCSERVICE: the device's function driver.
    pub function_service: Option<String>,
    /// `AddService = ,2`: the device runs without a function driver (raw).
    pub null_driver: bool,
    /// UpperFilters / LowerFilters of the device key after the plan's operations.
    pub upper_filters: Vec<String>,
    pub lower_filters: Vec<String>,
    pub characteristics: Option<u32>,
    pub bus_type: Option<u32>,
    /// Net class information (Net class INFs only).
    pub net: Option<NetInfo>,
    pub kmdf: Vec<KmdfService>,
    pub warnings: Vec<InfWarning>,
}

impl InstallPlan {
    /// The service called `name` (case-insensitive).
    pub fn service(&self, name: &str) -> Option<&ServiceInstall> {
        self.services
            .iter()
            .find(|s| s.name.eq_ignore_ascii_case(name))
    }

    /// The model installed (device plans).
    pub fn model(&self) -> Option<&Model> {
        match &self.kind {
            PlanKind::Device(m) => Some(m),
            PlanKind::DefaultInstall => None,
        }
    }

    /// The model's hardware ID (device plans).
    pub fn hardware_id(&self) -> Option<&str> {
        self.model().and_then(|m| m.hardware_id.as_deref())
    }
}

impl fmt::Display for InstallPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "install [{}] from {} for {} Windows {}.{}",
            self.install_section, self.inf, self.target.arch, self.target.major, self.target.minor
        )?;
        if let Some(m) = self.model() {
            writeln!(
                f,
                "  device: {} ({})",
                m.description,
                m.hardware_id.as_deref().unwrap_or("no hardware ID")
            )?;
        }
        for c in &self.files {
            writeln!(
                f,
                "  copy {} -> {}\\{}{}",
                c.source_path,
                c.dest_dir,
                if c.dest_subdir.is_empty() {
                    String::new()
                } else {
                    format!("{}\\", c.dest_subdir)
                },
                c.dest_name
            )?;
        }
        for r in &self.registry {
            writeln!(
                f,
                "  reg {} {:?} {}\\{} {:?}",
                r.origin, r.hkr, r.root, r.subkey, r.action
            )?;
        }
        for s in &self.services {
            writeln!(
                f,
                "  service {} type {} start {} error {} binary {}",
                s.name, s.service_type, s.start_type, s.error_control, s.binary
            )?;
        }
        Ok(())
    }
}

/// Where an install-like section is used: decides HKR and which directives are valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    DdInstall,
    Hw,
    Services,
    DefaultInstall,
    ClassInstall,
    Wdf,
}

impl Kind {
    fn hkr(self) -> HkrBase {
        match self {
            Kind::DdInstall => HkrBase::DriverKey,
            Kind::Hw => HkrBase::DeviceKey,
            Kind::ClassInstall => HkrBase::ClassKey,
            Kind::Services | Kind::DefaultInstall | Kind::Wdf => HkrBase::Unspecified,
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Kind::DdInstall => "DDInstall",
            Kind::Hw => "DDInstall.HW",
            Kind::Services => "DDInstall.Services",
            Kind::DefaultInstall => "DefaultInstall",
            Kind::ClassInstall => "ClassInstall32",
            Kind::Wdf => "DDInstall.Wdf",
        }
    }
}

/// Directives Windows knows that ICA's plans do not carry out (ignored with a warning).
const UNSUPPORTED: &[&str] = &[
    "delfiles",
    "renfiles",
    "bitreg",
    "updateinis",
    "updateinifields",
    "ini2reg",
    "profileitems",
    "registerdlls",
    "unregisterdlls",
    "addproperty",
    "delproperty",
    "addinterface",
    "addcomponent",
    "addsoftware",
    "addeventprovider",
    "addpowersetting",
    "copyinf",
    "logconfig",
];
/// Directives that do not affect an install plan (ignored silently).
const NO_EFFECT: &[&str] = &[
    "driverver",
    "reboot",
    "restart",
    "featurescore",
    "excludefromselect",
];

const MAX_DEPTH: u32 = 8;

/// Net class keywords a DDInstall section may give as directives (`*IfType = 6`, Windows 8 and
/// later, NetAdapterCx): written as REG_DWORD values of the driver key.
fn is_net_keyword(directive: &str) -> bool {
    directive.starts_with('*') || directive == "numberofnetworkinterfaces"
}

struct Planner<'a> {
    main: &'a InfFile,
    extra: Vec<InfFile>,
    resolver: &'a dyn IncludeResolver,
    target: TargetOs,
    files: Vec<FileCopy>,
    registry: Vec<RegOp>,
    service_registry: Vec<RegOp>,
    services: Vec<ServiceInstall>,
    deleted_services: Vec<String>,
    function_service: Option<String>,
    null_driver: bool,
    characteristics: Option<u32>,
    bus_type: Option<u32>,
    kmdf: Vec<KmdfService>,
    warnings: Vec<InfWarning>,
    /// (inf index, lowercase section) of the sections being processed, against Needs cycles.
    active: Vec<(usize, String)>,
}

impl<'a> Planner<'a> {
    fn new(inf: &'a Inf, target: &TargetOs, resolver: &'a dyn IncludeResolver) -> Planner<'a> {
        Planner {
            main: inf.file(),
            extra: Vec::new(),
            resolver,
            target: *target,
            files: Vec::new(),
            registry: Vec::new(),
            service_registry: Vec::new(),
            services: Vec::new(),
            deleted_services: Vec::new(),
            function_service: None,
            null_driver: false,
            characteristics: None,
            bus_type: None,
            kmdf: Vec::new(),
            warnings: inf.warnings().to_vec(),
            active: Vec::new(),
        }
    }

    fn inf(&self, idx: usize) -> &InfFile {
        if idx == 0 {
            self.main
        } else {
            &self.extra[idx - 1]
        }
    }

    fn inf_count(&self) -> usize {
        1 + self.extra.len()
    }

    /// A section by name: in INF `from` first, then in every loaded INF.
    fn find_section(&self, from: usize, name: &str) -> Option<(usize, Section)> {
        if let Some(s) = self.inf(from).section(name) {
            return Some((from, s.clone()));
        }
        (0..self.inf_count()).find_map(|i| self.inf(i).section(name).map(|s| (i, s.clone())))
    }

    fn include(&mut self, line: &Line, name: &str) -> Result<(), InfError> {
        let file = name.rsplit(['\\', '/']).next().unwrap_or(name).to_string();
        let main_file = self.main.name().rsplit(['\\', '/']).next().unwrap_or("");
        if file.eq_ignore_ascii_case(main_file) {
            return Ok(());
        }
        let loaded = self.extra.iter().any(|f| {
            f.name()
                .rsplit(['\\', '/'])
                .next()
                .unwrap_or("")
                .eq_ignore_ascii_case(&file)
        });
        if loaded {
            return Ok(());
        }
        match self.resolver.load(&file) {
            Some(found) => {
                let parsed = InfFile::parse_with(&found.name, &found.bytes, self.main.options())?;
                self.warnings.extend(parsed.warnings().iter().cloned());
                self.extra.push(parsed);
            }
            None => self
                .warnings
                .push(line.warning(format!("Include file `{file}` not found"))),
        }
        Ok(())
    }

    /// Process an install-like section and the sections it `Needs`.
    fn process(
        &mut self,
        inf: usize,
        name: &str,
        kind: Kind,
        depth: u32,
        from: &Origin,
    ) -> Result<(), InfError> {
        if depth > MAX_DEPTH {
            return Err(from.error(format!(
                "Include/Needs nested more than {MAX_DEPTH} deep at [{name}]"
            )));
        }
        let sec =
            self.inf(inf).section(name).cloned().ok_or_else(|| {
                from.error(format!("{} section [{name}] not found", kind.describe()))
            })?;
        let key = (inf, name.to_lowercase());
        if self.active.contains(&key) {
            self.warnings
                .push(from.warning(format!("section [{name}] needs itself; cycle ignored")));
            return Ok(());
        }
        self.active.push(key);
        let r = self.process_lines(inf, &sec, kind, depth);
        self.active.pop();
        r
    }

    fn process_lines(
        &mut self,
        inf: usize,
        sec: &Section,
        kind: Kind,
        depth: u32,
    ) -> Result<(), InfError> {
        for l in sec.entries("Include") {
            for f in l.fields() {
                if !f.is_empty() {
                    self.include(l, f.text())?;
                }
            }
        }
        for l in sec.entries("Needs") {
            for f in l.fields() {
                if f.is_empty() {
                    continue;
                }
                let needed = f.text();
                let found = self.find_section(inf, needed);
                let Some((ninf, _)) = found else {
                    return Err(l.error(format!(
                        "Needs section [{needed}] not found in this INF or its Include files"
                    )));
                };
                self.process(ninf, needed, kind, depth + 1, &l.origin)?;
            }
        }
        let mut addregs = Vec::new();
        let mut delregs = Vec::new();
        for l in &sec.lines {
            let Some(directive) = l.key_text() else {
                self.warnings.push(l.warning(format!(
                    "line without a directive in [{}] ignored",
                    sec.name
                )));
                continue;
            };
            let d = directive.to_ascii_lowercase();
            let valid = match kind {
                Kind::DdInstall => {
                    matches!(
                        d.as_str(),
                        "copyfiles" | "addreg" | "delreg" | "characteristics" | "bustype"
                    ) || is_net_keyword(&d)
                }
                Kind::DefaultInstall | Kind::ClassInstall => {
                    matches!(d.as_str(), "copyfiles" | "addreg" | "delreg")
                }
                Kind::Hw => matches!(d.as_str(), "addreg" | "delreg"),
                Kind::Services => matches!(d.as_str(), "addservice" | "delservice"),
                Kind::Wdf => matches!(
                    d.as_str(),
                    "kmdfservice"
                        | "umdfservice"
                        | "umdfserviceorder"
                        | "kmdfservicewakeconfig"
                        | "umdfkernelmodeclientpolicy"
                ),
            };
            match d.as_str() {
                "include" | "needs" => {}
                _ if NO_EFFECT.contains(&d.as_str()) => {}
                _ if UNSUPPORTED.contains(&d.as_str()) => self
                    .warnings
                    .push(l.warning(format!("directive {directive} is not supported; ignored"))),
                _ if !valid => self.warnings.push(l.warning(format!(
                    "unknown directive {directive} in {} section [{}] ignored",
                    kind.describe(),
                    sec.name
                ))),
                "copyfiles" => self.copy_files(inf, l)?,
                "addreg" => addregs.push(l),
                "delreg" => delregs.push(l),
                "characteristics" | "bustype" => {
                    let v = parse_int(l.text(0)).ok_or_else(|| {
                        l.error(format!(
                            "bad {directive} value `{}` (expected a number)",
                            l.text(0)
                        ))
                    })?;
                    if d == "characteristics" {
                        self.characteristics = Some(v);
                    } else {
                        self.bus_type = Some(v);
                    }
                }
                _ if is_net_keyword(&d) => {
                    let v = parse_int(l.text(0)).ok_or_else(|| {
                        l.error(format!(
                            "bad {directive} value `{}` (expected a number)",
                            l.text(0)
                        ))
                    })?;
                    self.registry.push(RegOp {
                        root: RegRoot::Hkr,
                        hkr: HkrBase::DriverKey,
                        subkey: String::new(),
                        action: RegAction::SetValue {
                            name: directive.to_string(),
                            data: RegData::Dword(v),
                        },
                        flags: FLG_ADDREG_TYPE_DWORD,
                        origin: l.origin.clone(),
                    });
                }
                "addservice" => self.add_service(inf, l)?,
                "delservice" => {
                    if !l.text(0).is_empty() {
                        self.deleted_services.push(l.text(0).to_string());
                    }
                }
                "kmdfservice" => self.kmdf_service(inf, l)?,
                _ => self
                    .warnings
                    .push(l.warning(format!("directive {directive} is not supported; ignored"))),
            }
        }
        let hkr = kind.hkr();
        for l in delregs {
            self.reg_sections(inf, l, &hkr, false, false)?;
        }
        for l in addregs {
            self.reg_sections(inf, l, &hkr, true, false)?;
        }
        Ok(())
    }

    /// Process the AddReg (or DelReg) sections a directive line lists.
    fn reg_sections(
        &mut self,
        inf: usize,
        l: &Line,
        hkr: &HkrBase,
        add: bool,
        service: bool,
    ) -> Result<(), InfError> {
        for f in l.fields() {
            if f.is_empty() {
                continue;
            }
            let what = if add { "AddReg" } else { "DelReg" };
            let (_, sec) = self
                .find_section(inf, f.text())
                .ok_or_else(|| l.error(format!("{what} section [{}] not found", f.text())))?;
            for rl in &sec.lines {
                let op = if add {
                    parse_addreg(rl, hkr, &mut self.warnings)?
                } else {
                    parse_delreg(rl, hkr)?
                };
                if op.root == RegRoot::Hkr && *hkr == HkrBase::Unspecified {
                    self.warnings.push(rl.warning("HKR has no meaning in this section; the entry is kept with HkrBase::Unspecified"));
                }
                if service {
                    self.service_registry.push(op);
                } else {
                    self.registry.push(op);
                }
            }
        }
        Ok(())
    }

    fn dest_dir(&self, inf: usize, section: Option<&str>) -> Result<(DirId, String), InfError> {
        let file = self.inf(inf);
        let dd = file.section("DestinationDirs");
        let line = dd.and_then(|s| {
            section
                .and_then(|name| s.entry(name))
                .or_else(|| s.entry("DefaultDestDir"))
        });
        let Some(line) = line else {
            return Ok((DirId::SYSTEM32, String::new()));
        };
        let t = line.text(0);
        let id = parse_int(t).ok_or_else(|| {
            line.error(format!(
                "bad DIRID `{t}` in [DestinationDirs] (expected a number such as 12)"
            ))
        })?;
        Ok((DirId(id as i32), line.text(1).to_string()))
    }

    fn copy_files(&mut self, inf: usize, l: &Line) -> Result<(), InfError> {
        for f in l.fields() {
            let entry = f.text();
            if entry.is_empty() {
                continue;
            }
            if let Some(file) = entry.strip_prefix('@') {
                let file = file.trim();
                if file.is_empty() {
                    return Err(l.error("CopyFiles=@ names no file"));
                }
                let (dir, sub) = self.dest_dir(inf, None)?;
                if !self.has_dest_entry(inf, None) {
                    self.warnings.push(l.warning(
                        "no DefaultDestDir in [DestinationDirs]; copying to DIRID 11 (System32)",
                    ));
                }
                self.add_file(inf, file, file, dir, sub, 0, &l.origin)?;
                continue;
            }
            let (sinf, sec) = self
                .find_section(inf, entry)
                .ok_or_else(|| l.error(format!("CopyFiles section [{entry}] not found")))?;
            let (dir, sub) = self.dest_dir(sinf, Some(&sec.name))?;
            if !self.has_dest_entry(sinf, Some(&sec.name)) {
                self.warnings.push(l.warning(format!("no [DestinationDirs] entry for [{}] and no DefaultDestDir; copying to DIRID 11 (System32)", sec.name)));
            }
            for fl in &sec.lines {
                if fl.key().is_some() {
                    self.warnings.push(fl.warning(format!(
                        "`=` in file-list section [{}] entry; line ignored",
                        sec.name
                    )));
                    continue;
                }
                let dest = fl.text(0);
                if dest.is_empty() {
                    self.warnings.push(
                        fl.warning("file-list entry without a destination file name ignored"),
                    );
                    continue;
                }
                let src = if fl.text(1).is_empty() {
                    dest
                } else {
                    fl.text(1)
                };
                let flags = match fl.text(3) {
                    "" => 0,
                    t => parse_int(t).ok_or_else(|| fl.error(format!("bad copy flags `{t}`")))?,
                };
                self.add_file(sinf, src, dest, dir, sub.clone(), flags, &fl.origin)?;
            }
        }
        Ok(())
    }

    fn has_dest_entry(&self, inf: usize, section: Option<&str>) -> bool {
        self.inf(inf).section("DestinationDirs").is_some_and(|s| {
            section.is_some_and(|n| s.entry(n).is_some()) || s.entry("DefaultDestDir").is_some()
        })
    }

    /// The line of `name` in `[base.arch]` or `[base]`.
    fn decorated_entry(&self, inf: usize, base: &str, key: &str) -> Option<Line> {
        let file = self.inf(inf);
        let decorated = format!("{base}.{}", self.target.arch.inf_name());
        for sec in [decorated.as_str(), base] {
            if let Some(s) = file.section(sec) {
                if let Some(l) = s.entry(key) {
                    return Some(l.clone());
                }
            }
        }
        None
    }

    #[allow(clippy::too_many_arguments)]
    fn add_file(
        &mut self,
        inf: usize,
        src: &str,
        dest: &str,
        dir: DirId,
        sub: String,
        flags: u32,
        origin: &Origin,
    ) -> Result<(), InfError> {
        let arch = self.target.arch.inf_name();
        let Some(sdf) = self.decorated_entry(inf, "SourceDisksFiles", src) else {
            if inf != 0 {
                self.warnings.push(origin.warning(format!("file `{src}` of included INF {} is not in its [SourceDisksFiles]; assumed present", self.inf(inf).name())));
                return Ok(());
            }
            return Err(origin.error(format!(
                "file `{src}` is not listed in [SourceDisksFiles.{arch}] or [SourceDisksFiles]"
            )));
        };
        let disk_text = sdf.text(0);
        let disk_id = parse_int(disk_text).ok_or_else(|| {
            sdf.error(format!(
                "bad disk id `{disk_text}` for `{src}` (expected a number)"
            ))
        })?;
        let file = self.inf(inf);
        let decorated = format!("SourceDisksNames.{arch}");
        let disk = [decorated.as_str(), "SourceDisksNames"]
            .iter()
            .filter_map(|s| file.section(s))
            .find_map(|s| s.lines.iter().find(|l| l.key_text().and_then(parse_int) == Some(disk_id)).cloned())
            .ok_or_else(|| sdf.error(format!("disk {disk_id} of `{src}` is not listed in [SourceDisksNames.{arch}] or [SourceDisksNames]")))?;
        let mut path = String::new();
        for part in [disk.text(3), sdf.text(1), src] {
            for comp in part
                .split(['\\', '/'])
                .filter(|c| !c.is_empty() && *c != ".")
            {
                if !path.is_empty() {
                    path.push('/');
                }
                path.push_str(comp);
            }
        }
        self.files.push(FileCopy {
            source_inf: file.name().to_string(),
            source_name: src.to_string(),
            source_path: path,
            disk_id,
            disk_description: disk.text(0).to_string(),
            dest_dir: dir,
            dest_subdir: sub,
            dest_name: dest.to_string(),
            flags,
            origin: origin.clone(),
        });
        Ok(())
    }

    fn add_service(&mut self, inf: usize, l: &Line) -> Result<(), InfError> {
        let name = l.text(0).to_string();
        let flags = match l.text(1) {
            "" => 0,
            t => parse_int(t).ok_or_else(|| l.error(format!("bad AddService flags `{t}`")))?,
        };
        if name.is_empty() {
            if flags & SPSVCINST_ASSOCSERVICE != 0 {
                self.null_driver = true;
                return Ok(());
            }
            return Err(l.error("AddService names no service"));
        }
        let sec_name = l.text(2);
        if sec_name.is_empty() {
            return Err(l.error(format!(
                "AddService for `{name}` names no service-install section"
            )));
        }
        let (sinf, sec) = self.find_section(inf, sec_name).ok_or_else(|| {
            l.error(format!(
                "service-install section [{sec_name}] of `{name}` not found"
            ))
        })?;
        let need = |key: &str| -> Result<&Line, InfError> {
            sec.entry(key).ok_or_else(|| {
                sec.origin.error(format!(
                    "service-install section [{}] has no {key}",
                    sec.name
                ))
            })
        };
        let num = |key: &str, max: u32| -> Result<u32, InfError> {
            let line = need(key)?;
            let t = line.text(0);
            match parse_int(t) {
                Some(v) if v <= max => Ok(v),
                _ => Err(line.error(format!(
                    "bad {key} `{t}` (expected a number from 0 to {max:#x})"
                ))),
            }
        };
        let service_type = num("ServiceType", u32::MAX)?;
        let start_type = num("StartType", 4)?;
        let error_control = num("ErrorControl", 3)?;
        let bin_line = need("ServiceBinary")?;
        let binary = match bin_line.field(0) {
            Some(f) if !f.is_empty() => InfPath::from_field(f),
            _ => return Err(bin_line.error("empty ServiceBinary")),
        };
        let opt = |key: &str| {
            sec.entry(key)
                .map(|l| l.text(0).to_string())
                .filter(|s| !s.is_empty())
        };
        let dependencies = sec
            .entries("Dependencies")
            .flat_map(|l| l.fields().iter().map(|f| f.text().to_string()))
            .filter(|s| !s.is_empty())
            .collect();
        let hkr = HkrBase::ServiceKey(name.clone());
        for rl in sec.entries("DelReg") {
            self.reg_sections(sinf, rl, &hkr, false, true)?;
        }
        for rl in sec.entries("AddReg") {
            self.reg_sections(sinf, rl, &hkr, true, true)?;
        }
        for rl in &sec.lines {
            let known = [
                "servicetype",
                "starttype",
                "errorcontrol",
                "servicebinary",
                "displayname",
                "description",
                "loadordergroup",
                "dependencies",
                "startname",
                "security",
                "addreg",
                "delreg",
                "bitreg",
                "addtrigger",
                "servicesidtype",
                "delayedautostart",
                "tag",
            ];
            match rl.key_text() {
                Some(k) if known.contains(&k.to_ascii_lowercase().as_str()) => {}
                Some(k) => self.warnings.push(rl.warning(format!(
                    "unknown entry {k} in service-install section [{}] ignored",
                    sec.name
                ))),
                None => self.warnings.push(rl.warning(format!(
                    "line without a key in service-install section [{}] ignored",
                    sec.name
                ))),
            }
        }
        let event_log = match l.text(3) {
            "" => None,
            el_name => {
                let (einf, esec) = self.find_section(inf, el_name).ok_or_else(|| {
                    l.error(format!(
                        "event-log-install section [{el_name}] of `{name}` not found"
                    ))
                })?;
                let log = match l.text(4) {
                    "" => "System".to_string(),
                    t => t.to_string(),
                };
                let source = match l.text(5) {
                    "" => name.clone(),
                    t => t.to_string(),
                };
                let ehkr = HkrBase::EventLogKey {
                    log: log.clone(),
                    source: source.clone(),
                };
                for rl in esec.entries("DelReg") {
                    self.reg_sections(einf, rl, &ehkr, false, true)?;
                }
                for rl in esec.entries("AddReg") {
                    self.reg_sections(einf, rl, &ehkr, true, true)?;
                }
                Some(EventLogInstall { log, source })
            }
        };
        if flags & SPSVCINST_ASSOCSERVICE != 0 {
            match &self.function_service {
                Some(other) if !other.eq_ignore_ascii_case(&name) => {
                    return Err(l.error(format!("two function drivers: `{other}` and `{name}` are both flagged SPSVCINST_ASSOCSERVICE (0x2)")));
                }
                _ => self.function_service = Some(name.clone()),
            }
        }
        let service = ServiceInstall {
            display_name: opt("DisplayName"),
            description: opt("Description"),
            load_order_group: opt("LoadOrderGroup"),
            start_name: opt("StartName"),
            security: opt("Security"),
            name,
            flags,
            service_type,
            start_type,
            error_control,
            binary,
            dependencies,
            event_log,
            origin: l.origin.clone(),
        };
        // A later AddService of the same name replaces the earlier one.
        self.services
            .retain(|s| !s.name.eq_ignore_ascii_case(&service.name));
        self.services.push(service);
        Ok(())
    }

    fn kmdf_service(&mut self, inf: usize, l: &Line) -> Result<(), InfError> {
        let service = l.text(0).to_string();
        let sec_name = l.text(1);
        let library_version = if sec_name.is_empty() {
            None
        } else {
            let (_, sec) = self
                .find_section(inf, sec_name)
                .ok_or_else(|| l.error(format!("KMDF section [{sec_name}] not found")))?;
            sec.entry("KmdfLibraryVersion")
                .map(|l| l.text(0).to_string())
        };
        self.kmdf.push(KmdfService {
            service,
            library_version,
        });
        Ok(())
    }

    fn finish(
        self,
        inf: &Inf,
        kind: PlanKind,
        install_section: String,
    ) -> Result<InstallPlan, InfError> {
        let mut registry = self.registry;
        registry.extend(self.service_registry);
        let device = SimRegistry::from_ops(registry.iter(), &HkrBase::DeviceKey);
        let upper_filters = device.string_list("", "UpperFilters");
        let lower_filters = device.string_list("", "LowerFilters");
        let mut warnings = self.warnings;
        for s in &self.services {
            let file = s.binary.file_name();
            if !self
                .files
                .iter()
                .any(|f| f.dest_name.eq_ignore_ascii_case(file))
            {
                warnings.push(s.origin.warning(format!(
                    "ServiceBinary {} of `{}` is not copied by this install",
                    s.binary, s.name
                )));
            }
        }
        let net = if inf.version().is_class("Net") {
            let origin = match &kind {
                PlanKind::Device(m) => m.origin.clone(),
                PlanKind::DefaultInstall => inf.version().origin.clone(),
            };
            let Some(ch) = self.characteristics else {
                return Err(origin.error(format!(
                    "Net class install section [{install_section}] has no Characteristics"
                )));
            };
            Some(gather(&registry, ch, self.bus_type))
        } else {
            None
        };
        Ok(InstallPlan {
            inf: inf.name().to_string(),
            included: self.extra.iter().map(|f| f.name().to_string()).collect(),
            version: inf.version().clone(),
            target: self.target,
            kind,
            install_section,
            files: self.files,
            registry,
            services: self.services,
            deleted_services: self.deleted_services,
            function_service: self.function_service,
            null_driver: self.null_driver,
            upper_filters,
            lower_filters,
            characteristics: self.characteristics,
            bus_type: self.bus_type,
            net,
            kmdf: self.kmdf,
            warnings,
        })
    }
}

impl Inf {
    /// The decorated name of an install section: `name.NTamd64` (for the target's
    /// architecture), else `name.NT`, else `name`; None if none exists.
    pub fn install_section_for(&self, name: &str, target: &TargetOs) -> Option<String> {
        let candidates = [
            format!("{name}.{}", target.platform_extension()),
            format!("{name}.NT"),
            name.to_string(),
        ];
        candidates
            .into_iter()
            .find(|c| self.file().has_section(c))
            .map(|c| self.file().section(&c).map(|s| s.name.clone()).unwrap_or(c))
    }

    /// The DefaultInstall section for `target` (decorated as install sections are), if any.
    pub fn default_install_section(&self, target: &TargetOs) -> Option<String> {
        self.install_section_for("DefaultInstall", target)
    }

    /// The plan for installing a device through `model` (from [`Inf::models`] or
    /// [`Inf::match_device`]).
    pub fn plan_for_model(
        &self,
        model: &Model,
        target: &TargetOs,
        resolver: &dyn IncludeResolver,
    ) -> Result<InstallPlan, InfError> {
        let section = self
            .install_section_for(&model.install_section, target)
            .ok_or_else(|| {
                model.origin.error(format!(
                    "install section [{0}] of `{1}` not found (tried [{0}.{2}], [{0}.NT], [{0}])",
                    model.install_section,
                    model.description,
                    target.platform_extension()
                ))
            })?;
        let mut p = Planner::new(self, target, resolver);
        if let Some(ci) = self.install_section_for("ClassInstall32", target) {
            p.process(0, &ci, Kind::ClassInstall, 0, &model.origin)?;
        }
        p.process(0, &section, Kind::DdInstall, 0, &model.origin)?;
        for (suffix, kind) in [
            ("HW", Kind::Hw),
            ("Services", Kind::Services),
            ("Wdf", Kind::Wdf),
        ] {
            let sub = format!("{section}.{suffix}");
            if self.file().has_section(&sub) {
                p.process(0, &sub, kind, 0, &model.origin)?;
            }
        }
        for suffix in [
            "CoInstallers",
            "Interfaces",
            "LogConfigOverride",
            "FilterPropertyDefaults",
        ] {
            let sub = format!("{section}.{suffix}");
            if let Some(s) = self.file().section(&sub) {
                p.warnings.push(
                    s.origin
                        .warning(format!("[{sub}] is not supported; ignored")),
                );
            }
        }
        if p.function_service.is_none() && !p.null_driver {
            return Err(model.origin.error(format!(
                "no function driver for `{}`: [{section}.Services] has no AddService flagged SPSVCINST_ASSOCSERVICE (0x2)",
                model.description
            )));
        }
        p.finish(self, PlanKind::Device(model.clone()), section)
    }

    /// The plan for the model whose hardware ID (or compatible ID) is `id`.
    pub fn plan_for_hardware_id(
        &self,
        id: &str,
        target: &TargetOs,
        resolver: &dyn IncludeResolver,
    ) -> Result<InstallPlan, InfError> {
        let m = self.match_device(&[id], &[], target)?.ok_or_else(|| {
            let origin = self
                .file()
                .section("Manufacturer")
                .map(|s| s.origin.clone())
                .unwrap_or_else(|| Origin::new(self.file().name_arc(), 1));
            origin.error(format!(
                "no model for hardware ID `{id}` on {}",
                target.arch
            ))
        })?;
        self.plan_for_model(&m.model, target, resolver)
    }

    /// The plan for `[DefaultInstall]` (decorated) and its `.Services`: legacy drivers.
    pub fn plan_default_install(
        &self,
        target: &TargetOs,
        resolver: &dyn IncludeResolver,
    ) -> Result<InstallPlan, InfError> {
        let section = self.default_install_section(target).ok_or_else(|| {
            self.file().file_error(format!(
                "no [DefaultInstall.{}], [DefaultInstall.NT] or [DefaultInstall] section",
                target.platform_extension()
            ))
        })?;
        let origin = self
            .file()
            .section(&section)
            .map(|s| s.origin.clone())
            .unwrap_or_else(|| Origin::new(self.file().name_arc(), 1));
        let mut p = Planner::new(self, target, resolver);
        p.process(0, &section, Kind::DefaultInstall, 0, &origin)?;
        let sub = format!("{section}.Services");
        if self.file().has_section(&sub) {
            p.process(0, &sub, Kind::Services, 0, &origin)?;
        }
        p.finish(self, PlanKind::DefaultInstall, section)
    }
}
