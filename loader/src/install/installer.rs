//! INF -> installed package. [`prepare`] does every check (parse, device match, install plan,
//! source files and their hashes, destinations) and writes nothing; [`install`] puts the package
//! into the driver store, copies its files to their destinations and writes the registry in one
//! transaction. A bad INF fails in [`prepare`], so it installs nothing.

use std::path::{Path, PathBuf};

use host_linux::pci::PciDevice;

use crate::inf::{
    Arch, DirId, DirResolver, HkrBase, Inf, InstallPlan, Model, ParseOptions, RegAction, RegData,
    RegOp, RegRoot, TargetOs,
};
use crate::registry::reg_file::hkey_to_nt;
use crate::registry::windows::{
    class_key, device_parameters_key, driver_key, enum_key, service_key, DeviceInstance, DriverKey,
    Service,
};
use crate::registry::{RegError, RegResult, RegValue, RegistryStore, WriteBatch};

use super::devices::{self, Bus, HostDevice};
use super::package::{self, PackageFile, Stored};
use super::{diff, InstallError, Root, DRIVER_STORE_NT, PACKAGES_KEY};

/// How to install.
#[derive(Debug, Clone)]
pub struct InstallOptions {
    /// The architecture of the driver to install (the host is x64; x86 runs 32-bit drivers).
    pub arch: Arch,
    /// Show what would be copied and written, write nothing.
    pub dry_run: bool,
    /// The host's PCI functions (None: scan sysfs, plus the software device models).
    pub pci: Option<Vec<PciDevice>>,
}

impl Default for InstallOptions {
    fn default() -> Self {
        InstallOptions {
            arch: Arch::Amd64,
            dry_run: false,
            pci: None,
        }
    }
}

/// The device an INF binds to and why.
#[derive(Debug, Clone)]
pub struct Binding {
    pub device: HostDevice,
    pub model: Model,
    /// Windows rank (lower is better).
    pub rank: u32,
    /// The device's ID that matched the model.
    pub matched_id: String,
}

impl Binding {
    /// How the match came about, as Windows' rank classes say it.
    pub fn rank_text(&self) -> &'static str {
        match self.rank >> 12 {
            0 => "hardware ID matches the model's hardware ID",
            1 => "hardware ID matches a compatible ID of the model",
            2 => "compatible ID matches the model's hardware ID",
            _ => "compatible ID matches a compatible ID of the model",
        }
    }
}

/// One file to copy to its destination.
#[derive(Debug, Clone)]
pub struct DestCopy {
    /// The file inside the package.
    pub rel: String,
    /// Where it goes.
    pub dest: PathBuf,
    /// The destination as the INF says it (`%12%\function.sys`).
    pub inf_dest: String,
    pub sha256: String,
    /// COPYFLG_NO_OVERWRITE.
    pub no_overwrite: bool,
}

/// An install with every check done and nothing written yet.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub inf_path: PathBuf,
    /// The INF's file name (`function.inf`).
    pub inf_name: String,
    pub arch: Arch,
    pub plan: InstallPlan,
    /// The device it binds to (None for a `[DefaultInstall]` legacy driver).
    pub binding: Option<Binding>,
    pub package_name: String,
    pub package_dir: PathBuf,
    /// The package's files (INFs first), with their hashes.
    pub files: Vec<PackageFile>,
    pub copies: Vec<DestCopy>,
    /// The services with their ImagePath.
    pub services: Vec<Service>,
    /// Class GUID in registry form (device installs).
    pub class_guid: Option<String>,
}

fn guid_text(g: &crate::inf::Guid) -> String {
    g.to_string().to_ascii_uppercase()
}

/// Reads, parses and checks an install; writes nothing.
pub fn prepare(
    root: &Root,
    inf_path: &Path,
    opts: &InstallOptions,
) -> Result<Prepared, InstallError> {
    let inf = Inf::open(inf_path, &ParseOptions::default())?;
    let target = TargetOs::windows10(opts.arch);
    let resolver = DirResolver::beside(inf_path);
    let inf_name = inf_path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "driver.inf".into());
    let (plan, binding) = if inf.has_manufacturer() {
        let binding = choose_device(root, &inf, &target, opts)?;
        let plan = inf.plan_for_model(&binding.model, &target, &resolver)?;
        (plan, Some(binding))
    } else {
        (inf.plan_default_install(&target, &resolver)?, None)
    };
    let class_guid = match (&binding, &plan.version.class_guid) {
        (None, _) => None,
        (Some(_), Some(g)) => Some(guid_text(g)),
        (Some(_), None) => {
            return Err(InstallError::Inf(plan.version.origin.error(
                "[Version] has no ClassGuid: a device INF needs its setup class",
            )))
        }
    };

    let inf_bytes = std::fs::read(inf_path)
        .map_err(|e| InstallError::file(inf_path, format!("cannot read: {e}")))?;
    let inf_hash = package::sha256_hex(&inf_bytes);
    let package_name = package::package_name(&inf_name, opts.arch.inf_name(), &inf_hash);
    let package_dir = root.driver_store().join(&package_name);

    let mut files = vec![PackageFile {
        rel: inf_name.clone(),
        source: inf_path.to_path_buf(),
        sha256: inf_hash,
        size: inf_bytes.len() as u64,
    }];
    let add_file = |files: &mut Vec<PackageFile>, rel: String, source: PathBuf| {
        if files.iter().any(|f| f.rel.eq_ignore_ascii_case(&rel)) {
            return Ok(());
        }
        let bytes = std::fs::read(&source)
            .map_err(|e| InstallError::file(&source, format!("cannot read: {e}")))?;
        files.push(PackageFile {
            rel,
            sha256: package::sha256_hex(&bytes),
            size: bytes.len() as u64,
            source,
        });
        Ok::<(), InstallError>(())
    };
    for included in &plan.included {
        let p = PathBuf::from(included);
        let rel = p
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| included.clone());
        add_file(&mut files, rel, p)?;
    }
    let main_dir = inf_path.parent().map(Path::to_path_buf).unwrap_or_default();
    let mut copies = Vec::new();
    for fc in &plan.files {
        let dir = Path::new(&fc.source_inf)
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| main_dir.clone());
        let source = super::find_ci(&dir, &fc.source_path);
        if !source.is_file() {
            return Err(InstallError::Inf(fc.origin.error(format!(
                "source file `{}` not found (looked for {})",
                fc.source_name,
                source.display()
            ))));
        }
        let rel = fc.source_path.clone();
        add_file(&mut files, rel.clone(), source)?;
        let sha256 = files
            .iter()
            .find(|f| f.rel.eq_ignore_ascii_case(&rel))
            .map(|f| f.sha256.clone())
            .unwrap_or_default();
        let mut dest = root.dirid_path(fc.dest_dir, &package_dir).ok_or_else(|| {
            InstallError::Inf(fc.origin.error(format!(
                "destination directory {} ({}) is not supported by ICA",
                fc.dest_dir,
                fc.dest_dir.describe().unwrap_or("unknown DIRID")
            )))
        })?;
        for c in fc.dest_subdir.split('\\').filter(|c| !c.is_empty()) {
            dest.push(c);
        }
        dest.push(&fc.dest_name);
        let inf_dest = if fc.dest_subdir.is_empty() {
            format!("{}\\{}", fc.dest_dir, fc.dest_name)
        } else {
            format!("{}\\{}\\{}", fc.dest_dir, fc.dest_subdir, fc.dest_name)
        };
        copies.push(DestCopy {
            rel,
            dest,
            inf_dest,
            sha256,
            no_overwrite: fc.flags & crate::inf::install::COPYFLG_NO_OVERWRITE != 0,
        });
    }

    let mut services = Vec::new();
    for s in &plan.services {
        let image_path = match s.binary.dir {
            Some(DirId::DRIVER_STORE) => {
                format!("{DRIVER_STORE_NT}\\{package_name}\\{}", s.binary.path)
            }
            Some(_) => s.binary.system_root_path().ok_or_else(|| {
                InstallError::Inf(s.origin.error(format!(
                    "ServiceBinary {} is not under %SystemRoot% or the driver store",
                    s.binary
                )))
            })?,
            None => s.binary.path.clone(),
        };
        services.push(Service {
            name: s.name.clone(),
            display_name: s.display_name.clone(),
            service_type: s.service_type,
            start_type: s.start_type,
            error_control: s.error_control,
            image_path,
            load_order_group: s.load_order_group.clone(),
            dependencies: s.dependencies.clone(),
            description: s.description.clone(),
        });
    }
    Ok(Prepared {
        inf_path: inf_path.to_path_buf(),
        inf_name,
        arch: opts.arch,
        plan,
        binding,
        package_name,
        package_dir,
        files,
        copies,
        services,
        class_guid,
    })
}

/// The best (device, model) pair over what the host offers, ranked as Windows does; ties go to an
/// installed device, then a PCI function, then a new root device.
fn choose_device(
    root: &Root,
    inf: &Inf,
    target: &TargetOs,
    opts: &InstallOptions,
) -> Result<Binding, InstallError> {
    let models = inf.models(target)?;
    let store = root.existing_registry()?;
    let pci = match &opts.pci {
        Some(p) => p.clone(),
        None => {
            let mut pci = host_linux::pci::scan();
            pci.extend(host_linux::models::catalog());
            pci
        }
    };
    let mut offered = devices::host_devices(store.as_ref(), &pci)?;
    for m in &models {
        let Some(id) = &m.hardware_id else { continue };
        let is_root = id.len() > 5 && id[..5].eq_ignore_ascii_case("ROOT\\");
        let exists = offered.iter().any(|d| {
            d.bus == Bus::Root && d.hardware_ids.iter().any(|h| h.eq_ignore_ascii_case(id))
        });
        if is_root && !exists {
            offered.push(devices::new_root_device(id, &m.description));
        }
    }
    let mut best: Option<(u32, u8, Binding)> = None;
    for d in offered {
        let hw: Vec<&str> = d.hardware_ids.iter().map(String::as_str).collect();
        let compat: Vec<&str> = d.compatible_ids.iter().map(String::as_str).collect();
        let Some(m) = inf.match_device(&hw, &compat, target)? else {
            continue;
        };
        let order = if d.installed {
            0
        } else if d.bus == Bus::Pci {
            1
        } else {
            2
        };
        if best
            .as_ref()
            .is_some_and(|(r, o, _)| (*r, *o) <= (m.rank, order))
        {
            continue;
        }
        let matched_id = hw
            .iter()
            .chain(compat.iter())
            .find(|id| m.model.matches(id))
            .map(|s| s.to_string())
            .unwrap_or_default();
        best = Some((
            m.rank,
            order,
            Binding {
                device: d,
                model: m.model,
                rank: m.rank,
                matched_id,
            },
        ));
    }
    best.map(|(_, _, b)| b).ok_or_else(|| {
        let ids: Vec<String> = models
            .iter()
            .filter_map(|m| m.hardware_id.clone())
            .collect();
        InstallError::Other(format!(
            "{}: no device of this host matches the INF's models for {} ({}); `ica-load devices` lists what the host offers",
            inf.name(),
            target.arch.inf_name(),
            if ids.is_empty() { "none".to_string() } else { ids.join(", ") }
        ))
    })
}

/// What happened to one file copied to its destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyOutcome {
    Copied,
    /// Replaced a file that was there.
    Replaced,
    /// Already there with the same hash.
    Unchanged,
    /// COPYFLG_NO_OVERWRITE and a file was there.
    KeptExisting,
    /// Dry run.
    WouldCopy,
}

/// The result of [`install`].
#[derive(Debug, Clone)]
pub struct InstallReport {
    pub prepared: Prepared,
    /// What the driver store did (None in a dry run).
    pub stored: Option<Stored>,
    pub copied: Vec<(DestCopy, CopyOutcome)>,
    /// The registry changes, readable (`+ key`, `    value = data`).
    pub registry_changes: Vec<String>,
    /// The device instance bound (device installs).
    pub instance_id: Option<String>,
    /// The driver key `{guid}\NNNN` (device installs).
    pub driver_key: Option<String>,
    /// The package was installed before (this install replaced it in place).
    pub reinstalled: bool,
    pub dry_run: bool,
}

/// Installs a prepared package: driver store, destination files, then the registry in one
/// transaction (on a registry failure the files this install created are removed again).
pub fn install(
    root: &Root,
    prepared: Prepared,
    dry_run: bool,
) -> Result<InstallReport, InstallError> {
    if dry_run {
        return dry_run_install(root, prepared);
    }
    let stored = package::store(&prepared.package_dir, &prepared.files)?;
    let mut copied = Vec::new();
    let mut created: Vec<PathBuf> = Vec::new();
    let result = (|| {
        for c in &prepared.copies {
            let existed = c.dest.exists();
            let outcome = if existed && c.no_overwrite {
                CopyOutcome::KeptExisting
            } else if existed && package::sha256_file(&c.dest).ok().as_deref() == Some(&c.sha256) {
                CopyOutcome::Unchanged
            } else {
                package::copy_verified(&prepared.package_dir.join(&c.rel), &c.dest, &c.sha256)?;
                if existed {
                    CopyOutcome::Replaced
                } else {
                    created.push(c.dest.clone());
                    CopyOutcome::Copied
                }
            };
            copied.push((c.clone(), outcome));
        }
        let store = root.open_registry()?;
        write_registry(&store, &prepared)
    })();
    match result {
        Ok((changes, instance_id, driver_key, reinstalled)) => Ok(InstallReport {
            prepared,
            stored: Some(stored),
            copied,
            registry_changes: changes,
            instance_id,
            driver_key,
            reinstalled,
            dry_run: false,
        }),
        Err(e) => {
            for f in created {
                let _ = std::fs::remove_file(f);
            }
            if stored == Stored::Created {
                let _ = std::fs::remove_dir_all(&prepared.package_dir);
            }
            Err(e)
        }
    }
}

type Written = (Vec<String>, Option<String>, Option<String>, bool);

fn write_registry(store: &RegistryStore, p: &Prepared) -> Result<Written, InstallError> {
    let before = diff::snapshot(store)?;
    let pkg_key = format!(r"{PACKAGES_KEY}\{}", p.package_name);
    let reinstalled = store.key_exists(&pkg_key)?;
    let (instance, driver) = store.write(|b| apply(b, p))?;
    let after = diff::snapshot(store)?;
    Ok((
        diff::describe(&before, &after),
        instance,
        driver,
        reinstalled,
    ))
}

fn dry_run_install(root: &Root, prepared: Prepared) -> Result<InstallReport, InstallError> {
    let scratch = std::env::temp_dir().join(format!(
        "ica-dry-run-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    ));
    let result = (|| {
        std::fs::create_dir_all(&scratch)
            .map_err(|e| InstallError::file(&scratch, format!("cannot create: {e}")))?;
        if root.registry_file().exists() {
            std::fs::copy(root.registry_file(), scratch.join("registry.redb")).map_err(|e| {
                InstallError::file(&root.registry_file(), format!("cannot read: {e}"))
            })?;
        }
        let store = RegistryStore::open(&scratch)?;
        write_registry(&store, &prepared)
    })();
    let _ = std::fs::remove_dir_all(&scratch);
    let (changes, instance_id, driver_key, reinstalled) = result?;
    let copied = prepared
        .copies
        .iter()
        .map(|c| (c.clone(), CopyOutcome::WouldCopy))
        .collect();
    Ok(InstallReport {
        prepared,
        stored: None,
        copied,
        registry_changes: changes,
        instance_id,
        driver_key,
        reinstalled,
        dry_run: true,
    })
}

/// Where an operation's HKR points.
struct Hkr {
    driver_key: Option<String>,
    instance: Option<String>,
    class_key: Option<String>,
}

/// Device properties that live in the instance key itself, not in `Device Parameters`.
const DEVICE_PROPERTIES: &[&str] = &[
    "UpperFilters",
    "LowerFilters",
    "Security",
    "DeviceType",
    "Exclusive",
    "DeviceCharacteristics",
    "FriendlyName",
    "LocationInformation",
];

fn op_key(op: &RegOp, hkr: &Hkr) -> Option<String> {
    let base = match op.root {
        RegRoot::Hkr => match &op.hkr {
            HkrBase::DriverKey => hkr.driver_key.clone()?,
            HkrBase::DeviceKey => {
                let inst = hkr.instance.as_ref()?;
                let is_property = op.subkey.is_empty()
                    && op.value_name().is_some_and(|n| {
                        DEVICE_PROPERTIES.iter().any(|p| p.eq_ignore_ascii_case(n))
                    });
                if is_property {
                    enum_key(inst)
                } else {
                    device_parameters_key(inst)
                }
            }
            HkrBase::ServiceKey(name) => service_key(name),
            HkrBase::EventLogKey { log, source } => {
                format!(r"{}\{log}\{source}", service_key("EventLog"))
            }
            HkrBase::ClassKey => hkr.class_key.clone()?,
            HkrBase::Unspecified => return None,
        },
        RegRoot::Hklm => hkey_to_nt("HKLM")?,
        RegRoot::Hkcu => hkey_to_nt("HKCU")?,
        RegRoot::Hkcr => hkey_to_nt("HKCR")?,
        RegRoot::Hku => hkey_to_nt("HKU")?,
    };
    Some(ntoskrnl::registry::join_path(&base, &op.subkey))
}

fn reg_value(data: &RegData) -> RegValue {
    match data {
        RegData::Sz(s) => RegValue::sz(s),
        RegData::ExpandSz(s) => RegValue::expand_sz(s),
        RegData::MultiSz(v) => RegValue::multi_sz(v),
        RegData::Dword(d) => RegValue::dword(*d),
        RegData::Binary { reg_type, data } => RegValue::new(*reg_type, data.clone()),
    }
}

fn apply_op(b: &mut WriteBatch<'_>, op: &RegOp, hkr: &Hkr) -> RegResult<()> {
    let Some(key) = op_key(op, hkr) else {
        tracing::warn!(target: "ica::install", "{}:{}: HKR has no meaning here; line skipped", op.origin.file, op.origin.line);
        return Ok(());
    };
    match &op.action {
        RegAction::CreateKey => {
            b.create_key(&key)?;
        }
        RegAction::SetValue { name, data } => {
            let existing = if b.key_exists(&key)? {
                b.value(&key, name)?
            } else {
                None
            };
            if (op.noclobber() && existing.is_some()) || (op.overwrite_only() && existing.is_none())
            {
                return Ok(());
            }
            let mut value = reg_value(data);
            if op.append() {
                let mut strings = existing.and_then(|v| v.as_multi_sz()).unwrap_or_default();
                for s in value.as_multi_sz().unwrap_or_default() {
                    if !strings.iter().any(|e| e.eq_ignore_ascii_case(&s)) {
                        strings.push(s);
                    }
                }
                value = RegValue::multi_sz(&strings);
            }
            b.create_key(&key)?;
            b.set_value(&key, name, &value)?;
        }
        RegAction::DeleteValue { name } => {
            if b.key_exists(&key)? {
                b.delete_value(&key, name)?;
            }
        }
        RegAction::DeleteKey => {
            b.delete_tree(&key)?;
        }
        RegAction::DeleteMultiSzString { name, string } => {
            if b.key_exists(&key)? {
                if let Some(v) = b.value(&key, name)?.and_then(|v| v.as_multi_sz()) {
                    let kept: Vec<String> = v
                        .into_iter()
                        .filter(|s| !s.eq_ignore_ascii_case(string))
                        .collect();
                    b.set_value(&key, name, &RegValue::multi_sz(&kept))?;
                }
            }
        }
    }
    Ok(())
}

fn multi(b: &WriteBatch<'_>, key: &str, name: &str) -> RegResult<Vec<String>> {
    Ok(b.value(key, name)?
        .and_then(|v| v.as_multi_sz())
        .unwrap_or_default())
}

/// The registry part of an install, as one transaction.
fn apply(b: &mut WriteBatch<'_>, p: &Prepared) -> RegResult<(Option<String>, Option<String>)> {
    for s in &p.plan.deleted_services {
        b.delete_tree(&service_key(s))?;
    }
    for s in &p.services {
        b.write_service(s)?;
    }
    let pkg_key = format!(r"{PACKAGES_KEY}\{}", p.package_name);
    let mut hkr = Hkr {
        driver_key: None,
        instance: None,
        class_key: None,
    };
    let mut bound = (None, None);
    if let (Some(binding), Some(guid)) = (&p.binding, &p.class_guid) {
        let class = p
            .plan
            .version
            .class
            .clone()
            .unwrap_or_else(|| "Unknown".into());
        let ckey = class_key(guid);
        if !b.key_exists(&ckey)? {
            b.write_class_key(guid, &class, &class)?;
        }
        let instance = match &binding.device.instance_id {
            Some(id) => id.clone(),
            None => {
                let hw = binding
                    .device
                    .hardware_ids
                    .first()
                    .cloned()
                    .unwrap_or_default();
                b.new_device_instance_id(&devices::root_device_id(&hw))?
            }
        };
        let ekey = enum_key(&instance);
        if b.key_exists(&ekey)? {
            if let Some(old) = b.value(&ekey, "Driver")?.and_then(|v| v.as_str()) {
                b.delete_tree(&driver_key(&old))?;
            }
            for name in ["UpperFilters", "LowerFilters", "Service", "Driver"] {
                b.delete_value(&ekey, name)?;
            }
        }
        let driver = b.new_driver_key(guid)?;
        let dkey = b.write_driver_key(
            &driver,
            &DriverKey {
                driver_desc: binding.model.description.clone(),
                provider_name: p.plan.version.provider.clone(),
                driver_version: p
                    .plan
                    .version
                    .driver_ver
                    .as_ref()
                    .and_then(|v| v.version_string()),
                driver_date: p.plan.version.driver_ver.as_ref().map(|v| v.date_string()),
                matching_device_id: Some(binding.matched_id.to_ascii_lowercase()),
                inf_path: Some(p.inf_name.clone()),
                inf_section: Some(p.plan.install_section.clone()),
            },
        )?;
        b.write_device_instance(&DeviceInstance {
            instance_id: instance.clone(),
            hardware_ids: binding.device.hardware_ids.clone(),
            compatible_ids: binding.device.compatible_ids.clone(),
            device_desc: binding.model.description.clone(),
            mfg: Some(binding.model.manufacturer.clone()),
            friendly_name: None,
            class: Some(class),
            class_guid: Some(guid.clone()),
            service: p.plan.function_service.clone(),
            driver: Some(driver.clone()),
            upper_filters: p.plan.upper_filters.clone(),
            lower_filters: p.plan.lower_filters.clone(),
            config_flags: 0,
        })?;
        // The device now belongs to this package only.
        if b.key_exists(PACKAGES_KEY)? {
            for other in b.subkeys(PACKAGES_KEY)? {
                if other.eq_ignore_ascii_case(&p.package_name) {
                    continue;
                }
                let okey = format!(r"{PACKAGES_KEY}\{other}");
                let devs = multi(b, &okey, "Devices")?;
                if devs.iter().any(|d| d.eq_ignore_ascii_case(&instance)) {
                    let kept: Vec<&String> = devs
                        .iter()
                        .filter(|d| !d.eq_ignore_ascii_case(&instance))
                        .collect();
                    b.set_value(&okey, "Devices", &RegValue::multi_sz(&kept))?;
                    let dks: Vec<String> = multi(b, &okey, "DriverKeys")?
                        .into_iter()
                        .filter(|d| !d.eq_ignore_ascii_case(&driver))
                        .collect();
                    b.set_value(&okey, "DriverKeys", &RegValue::multi_sz(&dks))?;
                }
            }
        }
        hkr = Hkr {
            driver_key: Some(dkey),
            instance: Some(instance.clone()),
            class_key: Some(ckey),
        };
        bound = (Some(instance), Some(driver));
    }
    for op in &p.plan.registry {
        apply_op(b, op, &hkr)?;
    }
    // The package record (Windows: DriverDatabase\DriverPackages).
    if b.key_exists(&pkg_key)? {
        b.delete_tree(&pkg_key)?;
    }
    b.create_key(&pkg_key)?;
    let sz = |s: &str| RegValue::sz(s);
    b.set_value(&pkg_key, "InfName", &sz(&p.inf_name))?;
    let source = std::fs::canonicalize(&p.inf_path).unwrap_or_else(|_| p.inf_path.clone());
    b.set_value(&pkg_key, "SourcePath", &sz(&source.display().to_string()))?;
    b.set_value(&pkg_key, "Architecture", &sz(p.arch.inf_name()))?;
    b.set_value(
        &pkg_key,
        "StorePath",
        &sz(&p.package_dir.display().to_string()),
    )?;
    if let Some(v) = &p.plan.version.provider {
        b.set_value(&pkg_key, "Provider", &sz(v))?;
    }
    if let Some(v) = p
        .plan
        .version
        .driver_ver
        .as_ref()
        .and_then(|v| v.version_string())
    {
        b.set_value(&pkg_key, "Version", &sz(&v))?;
    }
    let names: Vec<&str> = p.services.iter().map(|s| s.name.as_str()).collect();
    b.set_value(&pkg_key, "Services", &RegValue::multi_sz(&names))?;
    let files: Vec<String> = p
        .copies
        .iter()
        .map(|c| c.dest.display().to_string())
        .collect();
    b.set_value(&pkg_key, "Files", &RegValue::multi_sz(&files))?;
    let devs: Vec<String> = bound.0.iter().cloned().collect();
    b.set_value(&pkg_key, "Devices", &RegValue::multi_sz(&devs))?;
    let dks: Vec<String> = bound.1.iter().cloned().collect();
    b.set_value(&pkg_key, "DriverKeys", &RegValue::multi_sz(&dks))?;
    b.set_value(
        &pkg_key,
        "Kind",
        &sz(if p.binding.is_some() {
            "device"
        } else {
            "legacy"
        }),
    )?;
    Ok(bound)
}

/// Records how the last start went (`LastStart` of the package record); best effort.
pub fn record_start(store: &RegistryStore, package: &str, state: &str) -> Result<(), InstallError> {
    let key = format!(r"{PACKAGES_KEY}\{package}");
    store.write(|b| {
        if b.key_exists(&key)? {
            b.set_value(&key, "LastStart", &RegValue::sz(state))?;
        }
        Ok::<(), RegError>(())
    })?;
    Ok(())
}
