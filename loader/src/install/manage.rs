//! `ica-load list` and `ica-load remove`: the installed packages, services and devices, from the
//! registry; removing a package with its devices, driver keys, services and files.

use std::path::PathBuf;

use crate::registry::windows::{driver_key, enum_key, service_key};
use crate::registry::{RegValue, RegistryStore};

use super::devices::{self, HostDevice};
use super::{InstallError, Root, PACKAGES_KEY};

/// A package as the registry records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackageRecord {
    pub name: String,
    pub inf_name: String,
    pub source_path: String,
    pub store_path: String,
    pub arch: String,
    pub version: Option<String>,
    pub kind: String,
    pub services: Vec<String>,
    pub files: Vec<String>,
    pub devices: Vec<String>,
    pub driver_keys: Vec<String>,
    pub last_start: Option<String>,
}

/// Every recorded package.
pub fn packages(store: &RegistryStore) -> Result<Vec<PackageRecord>, InstallError> {
    if !store.key_exists(PACKAGES_KEY)? {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for name in store.subkeys(PACKAGES_KEY)? {
        let key = format!(r"{PACKAGES_KEY}\{name}");
        let sz = |n: &str| -> Result<Option<String>, InstallError> {
            Ok(store.value(&key, n)?.and_then(|v| v.as_str()))
        };
        let multi = |n: &str| -> Result<Vec<String>, InstallError> {
            Ok(store
                .value(&key, n)?
                .and_then(|v| v.as_multi_sz())
                .unwrap_or_default())
        };
        out.push(PackageRecord {
            inf_name: sz("InfName")?.unwrap_or_default(),
            source_path: sz("SourcePath")?.unwrap_or_default(),
            store_path: sz("StorePath")?.unwrap_or_default(),
            arch: sz("Architecture")?.unwrap_or_default(),
            version: sz("Version")?,
            kind: sz("Kind")?.unwrap_or_default(),
            services: multi("Services")?,
            files: multi("Files")?,
            devices: multi("Devices")?,
            driver_keys: multi("DriverKeys")?,
            last_start: sz("LastStart")?,
            name,
        });
    }
    Ok(out)
}

/// A service key's summary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceRecord {
    pub name: String,
    pub start: Option<u32>,
    pub image_path: Option<String>,
    pub display_name: Option<String>,
}

/// The start type's name.
pub fn start_type_name(start: Option<u32>) -> &'static str {
    match start {
        Some(0) => "boot",
        Some(1) => "system",
        Some(2) => "auto",
        Some(3) => "demand",
        Some(4) => "disabled",
        _ => "?",
    }
}

/// A service by name, if its key exists.
pub fn service(store: &RegistryStore, name: &str) -> Result<Option<ServiceRecord>, InstallError> {
    let key = service_key(name);
    if !store.key_exists(&key)? {
        return Ok(None);
    }
    Ok(Some(ServiceRecord {
        name: store.key_info(&key)?.name,
        start: store.value(&key, "Start")?.and_then(|v| v.as_dword()),
        image_path: store.value(&key, "ImagePath")?.and_then(|v| v.as_str()),
        display_name: store.value(&key, "DisplayName")?.and_then(|v| v.as_str()),
    }))
}

/// Every kernel-driver service (Type 1 or 2).
pub fn services(store: &RegistryStore) -> Result<Vec<ServiceRecord>, InstallError> {
    let root = service_key("");
    let root = root.trim_end_matches('\\');
    let mut out = Vec::new();
    for name in store.subkeys(root)? {
        let key = service_key(&name);
        let ty = store.value(&key, "Type")?.and_then(|v| v.as_dword());
        if matches!(ty, Some(1) | Some(2)) {
            if let Some(s) = service(store, &name)? {
                out.push(s);
            }
        }
    }
    Ok(out)
}

/// Installed devices with their filters and driver key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceRecord {
    pub device: HostDevice,
    pub upper_filters: Vec<String>,
    pub lower_filters: Vec<String>,
    pub driver: Option<String>,
}

pub fn installed(store: &RegistryStore) -> Result<Vec<DeviceRecord>, InstallError> {
    let mut out = Vec::new();
    for d in devices::installed_devices(store)? {
        let key = enum_key(d.instance_id.as_deref().unwrap_or_default());
        let multi = |n: &str| -> Result<Vec<String>, InstallError> {
            Ok(store
                .value(&key, n)?
                .and_then(|v| v.as_multi_sz())
                .unwrap_or_default())
        };
        out.push(DeviceRecord {
            upper_filters: multi("UpperFilters")?,
            lower_filters: multi("LowerFilters")?,
            driver: store.value(&key, "Driver")?.and_then(|v| v.as_str()),
            device: d,
        });
    }
    Ok(out)
}

/// What [`remove`] did.
#[derive(Debug, Clone, Default)]
pub struct RemoveReport {
    pub packages: Vec<String>,
    pub devices: Vec<String>,
    pub driver_keys: Vec<String>,
    pub services: Vec<String>,
    /// Services of the package kept because another package uses them.
    pub kept_services: Vec<String>,
    pub files: Vec<PathBuf>,
    pub store_dirs: Vec<PathBuf>,
}

fn eq(a: &str, b: &str) -> bool {
    a.eq_ignore_ascii_case(b)
}

/// Removes the package(s) called `name` (package directory name, INF name with or without
/// `.inf`, or the name of one of their services): their device instances, driver keys, services
/// no other package uses and package records in one registry transaction, then (after it
/// commits) their installed files and driver-store directories. A service no package owns is
/// removed on its own.
pub fn remove(root: &Root, name: &str) -> Result<RemoveReport, InstallError> {
    let Some(store) = root.existing_registry()? else {
        return Err(InstallError::Other(format!(
            "nothing is installed under {} (no registry there)",
            root.dir.display()
        )));
    };
    let all = packages(&store)?;
    let stem = name
        .strip_suffix(".inf")
        .or_else(|| name.strip_suffix(".INF"))
        .unwrap_or(name);
    let (targets, others): (Vec<_>, Vec<_>) = all.into_iter().partition(|p| {
        eq(&p.name, name)
            || eq(&p.inf_name, name)
            || eq(&p.inf_name, &format!("{stem}.inf"))
            || p.services.iter().any(|s| eq(s, name))
    });
    let mut report = RemoveReport::default();
    if targets.is_empty() {
        if service(&store, name)?.is_some() {
            store.write(|b| b.delete_tree(&service_key(name)).map(|_| ()))?;
            report.services.push(name.to_string());
            return Ok(report);
        }
        return Err(InstallError::Other(format!(
            "no installed package, INF or service called {name} (`ica-load list` shows what is installed)"
        )));
    }
    for p in &targets {
        report.packages.push(p.name.clone());
        report.devices.extend(p.devices.iter().cloned());
        report.driver_keys.extend(p.driver_keys.iter().cloned());
        for s in &p.services {
            let shared = others.iter().any(|o| o.services.iter().any(|x| eq(x, s)));
            let list = if shared {
                &mut report.kept_services
            } else {
                &mut report.services
            };
            if !list.iter().any(|x| eq(x, s)) {
                list.push(s.clone());
            }
        }
        for f in &p.files {
            if !others.iter().any(|o| o.files.iter().any(|x| x == f)) {
                report.files.push(PathBuf::from(f));
            }
        }
        if !p.store_path.is_empty() {
            report.store_dirs.push(PathBuf::from(&p.store_path));
        }
    }
    store.write(|b| {
        for inst in &report.devices {
            let key = enum_key(inst);
            if let Some(d) = b
                .value(&key, "Driver")
                .ok()
                .flatten()
                .and_then(|v| v.as_str())
            {
                b.delete_tree(&driver_key(&d))?;
            }
            b.delete_tree(&key)?;
            // Drop the device-ID key when its last instance is gone.
            if let Some((parent, _)) = inst.rsplit_once('\\') {
                let pkey = enum_key(parent);
                if b.key_exists(&pkey)? && b.subkeys(&pkey)?.is_empty() {
                    b.delete_key(&pkey)?;
                }
            }
        }
        for d in &report.driver_keys {
            b.delete_tree(&driver_key(d))?;
        }
        for s in &report.services {
            b.delete_tree(&service_key(s))?;
        }
        for p in &report.packages {
            b.delete_tree(&format!(r"{PACKAGES_KEY}\{p}"))?;
        }
        Ok(())
    })?;
    for f in &report.files {
        let _ = std::fs::remove_file(f);
    }
    let store_root = root.driver_store();
    for d in &report.store_dirs {
        // Only ever delete inside this root's driver store.
        if d.parent() == Some(store_root.as_path()) {
            let _ = std::fs::remove_dir_all(d);
        }
    }
    Ok(report)
}

/// A `REG_MULTI_SZ` of strings (helper for callers building records).
pub fn multi_sz(items: &[String]) -> RegValue {
    RegValue::multi_sz(items)
}
