//! The keys Windows writes when it installs a driver, as [`WriteBatch`] operations for the
//! installer. One install is one batch (one transaction):
//!
//! ```no_run
//! # use loader::registry::{RegistryStore, windows::*, RegValue};
//! # fn main() -> Result<(), loader::registry::RegError> {
//! let store = RegistryStore::open_default()?;
//! store.write(|b| {
//!     b.write_service(&Service::kernel_driver("e1000", "e1000.sys"))?;
//!     let class = "{4D36E972-E325-11CE-BFC1-08002BE10318}";
//!     b.write_class_key(class, "Net", "Network adapters")?;
//!     let driver = b.new_driver_key(class)?; // "{4D36E972-...}\0000"
//!     let driver_key = b.write_driver_key(&driver, &DriverKey { driver_desc: "Intel PRO/1000".into(), ..Default::default() })?;
//!     b.set_value(&driver_key, "NetworkAddress", &RegValue::sz(""))?; // INF AddReg, HKR = driver_key
//!     let instance = b.new_device_instance_id(r"ROOT\NET")?; // "ROOT\NET\0000"
//!     b.write_device_instance(&DeviceInstance {
//!         instance_id: instance,
//!         hardware_ids: vec!["PCI\\VEN_8086&DEV_100E".into()],
//!         service: Some("e1000".into()),
//!         class_guid: Some(class.into()),
//!         driver: Some(driver),
//!         ..Default::default()
//!     })?;
//!     Ok(())
//! })?;
//! # Ok(()) }
//! ```

use ntoskrnl::registry::{self as reg, reg_type, RegError, RegResult, RegValue};

use super::WriteBatch;

/// SERVICE_KERNEL_DRIVER.
pub const SERVICE_KERNEL_DRIVER: u32 = 1;
/// SERVICE_BOOT_START.
pub const SERVICE_BOOT_START: u32 = 0;
/// SERVICE_SYSTEM_START.
pub const SERVICE_SYSTEM_START: u32 = 1;
/// SERVICE_AUTO_START.
pub const SERVICE_AUTO_START: u32 = 2;
/// SERVICE_DEMAND_START.
pub const SERVICE_DEMAND_START: u32 = 3;
/// SERVICE_ERROR_NORMAL.
pub const SERVICE_ERROR_NORMAL: u32 = 1;

/// `\Registry\Machine\System\CurrentControlSet\Services\<name>`.
pub fn service_key(name: &str) -> String {
    reg::service_path(name)
}

/// `...\Control\Class\{guid}` (the class key).
pub fn class_key(class_guid: &str) -> String {
    reg::class_path(class_guid)
}

/// `...\Control\Class\{guid}\NNNN` for a driver key name `{guid}\NNNN`.
pub fn driver_key(driver: &str) -> String {
    reg::class_path(driver)
}

/// `...\Enum\<bus>\<id>\<instance>`.
pub fn enum_key(instance_id: &str) -> String {
    reg::enum_path(instance_id)
}

/// `...\Enum\<bus>\<id>\<instance>\Device Parameters`.
pub fn device_parameters_key(instance_id: &str) -> String {
    format!(r"{}\Device Parameters", reg::enum_path(instance_id))
}

/// The registry form of a GUID: braces, upper case (`{4D36E972-E325-11CE-BFC1-08002BE10318}`);
/// accepts it with or without braces, in any case.
pub fn normalize_guid(guid: &str) -> RegResult<String> {
    let g = guid.trim();
    let inner = g
        .strip_prefix('{')
        .and_then(|s| s.strip_suffix('}'))
        .unwrap_or(g);
    let groups: Vec<&str> = inner.split('-').collect();
    let lengths = [8, 4, 4, 4, 12];
    if groups.len() != 5
        || groups
            .iter()
            .zip(lengths)
            .any(|(p, n)| p.len() != n || !p.bytes().all(|b| b.is_ascii_hexdigit()))
    {
        return Err(RegError::InvalidName(guid.to_string()));
    }
    Ok(format!("{{{}}}", inner.to_ascii_uppercase()))
}

/// A service (`Services\<name>`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Service {
    /// Service name (the key name).
    pub name: String,
    /// DisplayName.
    pub display_name: Option<String>,
    /// Type (SERVICE_KERNEL_DRIVER).
    pub service_type: u32,
    /// Start (SERVICE_DEMAND_START ...).
    pub start_type: u32,
    /// ErrorControl.
    pub error_control: u32,
    /// ImagePath (REG_EXPAND_SZ), e.g. `\SystemRoot\System32\drivers\x.sys`.
    pub image_path: String,
    /// Group.
    pub load_order_group: Option<String>,
    /// DependOnService.
    pub dependencies: Vec<String>,
    /// Description.
    pub description: Option<String>,
}

impl Service {
    /// A demand-start kernel driver whose image is `System32\drivers\<image_file>`.
    pub fn kernel_driver(name: &str, image_file: &str) -> Service {
        Service {
            name: name.to_string(),
            service_type: SERVICE_KERNEL_DRIVER,
            start_type: SERVICE_DEMAND_START,
            error_control: SERVICE_ERROR_NORMAL,
            image_path: format!(r"\SystemRoot\System32\drivers\{image_file}"),
            ..Service::default()
        }
    }
}

/// The standard values of a driver key (what the class installer writes besides AddReg).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DriverKey {
    /// DriverDesc (NDIS and Device Manager show it).
    pub driver_desc: String,
    /// ProviderName.
    pub provider_name: Option<String>,
    /// DriverVersion (`1.2.3.4`).
    pub driver_version: Option<String>,
    /// DriverDate (`mm-dd-yyyy`).
    pub driver_date: Option<String>,
    /// MatchingDeviceId: the hardware or compatible ID the INF matched.
    pub matching_device_id: Option<String>,
    /// InfPath (`oem0.inf`).
    pub inf_path: Option<String>,
    /// InfSection (the DDInstall section).
    pub inf_section: Option<String>,
}

/// A device instance (`Enum\<bus>\<id>\<instance>`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DeviceInstance {
    /// Instance ID, e.g. `ROOT\NET\0000` or `PCI\VEN_8086&DEV_100E\3&1&0`.
    pub instance_id: String,
    /// HardwareID (REG_MULTI_SZ).
    pub hardware_ids: Vec<String>,
    /// CompatibleIDs (REG_MULTI_SZ).
    pub compatible_ids: Vec<String>,
    /// DeviceDesc.
    pub device_desc: String,
    /// Mfg.
    pub mfg: Option<String>,
    /// FriendlyName.
    pub friendly_name: Option<String>,
    /// Class (the setup class name, `Net`).
    pub class: Option<String>,
    /// ClassGUID.
    pub class_guid: Option<String>,
    /// Service (the function driver).
    pub service: Option<String>,
    /// Driver: the driver key name `{guid}\NNNN`.
    pub driver: Option<String>,
    /// UpperFilters.
    pub upper_filters: Vec<String>,
    /// LowerFilters.
    pub lower_filters: Vec<String>,
    /// ConfigFlags.
    pub config_flags: u32,
}

/// The lowest free four-digit instance number among `names`.
fn lowest_free(names: &[String]) -> RegResult<String> {
    (0..10_000)
        .map(|n| format!("{n:04}"))
        .find(|s| !names.iter().any(|u| u.eq_ignore_ascii_case(s)))
        .ok_or_else(|| RegError::Storage("no free four-digit key number left".into()))
}

impl WriteBatch<'_> {
    fn set_opt_sz(&mut self, path: &str, name: &str, v: &Option<String>) -> RegResult<()> {
        match v {
            Some(s) => self.set_value(path, name, &RegValue::sz(s)),
            None => Ok(()),
        }
    }

    /// Writes `Services\<name>` (Type, Start, ErrorControl, ImagePath and the optional values);
    /// returns the key path.
    pub fn write_service(&mut self, s: &Service) -> RegResult<String> {
        let key = service_key(&s.name);
        self.create_key(&key)?;
        self.set_value(&key, "Type", &RegValue::dword(s.service_type))?;
        self.set_value(&key, "Start", &RegValue::dword(s.start_type))?;
        self.set_value(&key, "ErrorControl", &RegValue::dword(s.error_control))?;
        self.set_value(&key, "ImagePath", &RegValue::expand_sz(&s.image_path))?;
        self.set_opt_sz(&key, "DisplayName", &s.display_name)?;
        self.set_opt_sz(&key, "Group", &s.load_order_group)?;
        self.set_opt_sz(&key, "Description", &s.description)?;
        if !s.dependencies.is_empty() {
            self.set_value(
                &key,
                "DependOnService",
                &RegValue::multi_sz(&s.dependencies),
            )?;
        }
        Ok(key)
    }

    /// Writes the class key `Control\Class\{guid}` with its `Class` name and description (the
    /// default value); returns its path.
    pub fn write_class_key(
        &mut self,
        class_guid: &str,
        name: &str,
        desc: &str,
    ) -> RegResult<String> {
        let key = class_key(&normalize_guid(class_guid)?);
        self.set_value(&key, "Class", &RegValue::sz(name))?;
        self.set_value(&key, "", &RegValue::sz(desc))?;
        Ok(key)
    }

    /// Creates the next free driver key `Control\Class\{guid}\NNNN`; returns its name
    /// `{GUID}\NNNN` (the device's `Driver` value).
    pub fn new_driver_key(&mut self, class_guid: &str) -> RegResult<String> {
        let guid = normalize_guid(class_guid)?;
        let key = class_key(&guid);
        self.create_key(&key)?;
        let n = lowest_free(&self.subkeys(&key)?)?;
        let name = format!(r"{guid}\{n}");
        self.create_key(&driver_key(&name))?;
        Ok(name)
    }

    /// Writes the standard values of a driver key (`{guid}\NNNN`); returns its path, the HKR of
    /// the INF's AddReg lines for the driver.
    pub fn write_driver_key(&mut self, driver: &str, d: &DriverKey) -> RegResult<String> {
        let key = driver_key(driver);
        self.create_key(&key)?;
        self.set_value(&key, "DriverDesc", &RegValue::sz(&d.driver_desc))?;
        self.set_opt_sz(&key, "ProviderName", &d.provider_name)?;
        self.set_opt_sz(&key, "DriverVersion", &d.driver_version)?;
        self.set_opt_sz(&key, "DriverDate", &d.driver_date)?;
        self.set_opt_sz(&key, "MatchingDeviceId", &d.matching_device_id)?;
        self.set_opt_sz(&key, "InfPath", &d.inf_path)?;
        self.set_opt_sz(&key, "InfSection", &d.inf_section)?;
        Ok(key)
    }

    /// The next free instance ID of a device ID: `ROOT\NET` -> `ROOT\NET\0000`.
    pub fn new_device_instance_id(&mut self, device_id: &str) -> RegResult<String> {
        let key = enum_key(device_id);
        let used = if self.key_exists(&key)? {
            self.subkeys(&key)?
        } else {
            Vec::new()
        };
        Ok(format!(r"{device_id}\{}", lowest_free(&used)?))
    }

    /// Writes a device instance key with its values and an empty `Device Parameters` subkey;
    /// returns the key path.
    pub fn write_device_instance(&mut self, d: &DeviceInstance) -> RegResult<String> {
        let key = enum_key(&d.instance_id);
        self.create_key(&key)?;
        if !d.hardware_ids.is_empty() {
            self.set_value(&key, "HardwareID", &RegValue::multi_sz(&d.hardware_ids))?;
        }
        if !d.compatible_ids.is_empty() {
            self.set_value(
                &key,
                "CompatibleIDs",
                &RegValue::multi_sz(&d.compatible_ids),
            )?;
        }
        self.set_value(&key, "DeviceDesc", &RegValue::sz(&d.device_desc))?;
        self.set_opt_sz(&key, "Mfg", &d.mfg)?;
        self.set_opt_sz(&key, "FriendlyName", &d.friendly_name)?;
        self.set_opt_sz(&key, "Class", &d.class)?;
        if let Some(g) = &d.class_guid {
            self.set_value(&key, "ClassGUID", &RegValue::sz(&normalize_guid(g)?))?;
        }
        self.set_opt_sz(&key, "Service", &d.service)?;
        self.set_opt_sz(&key, "Driver", &d.driver)?;
        if !d.upper_filters.is_empty() {
            self.set_value(&key, "UpperFilters", &RegValue::multi_sz(&d.upper_filters))?;
        }
        if !d.lower_filters.is_empty() {
            self.set_value(&key, "LowerFilters", &RegValue::multi_sz(&d.lower_filters))?;
        }
        self.set_value(&key, "ConfigFlags", &RegValue::dword(d.config_flags))?;
        self.create_key(&device_parameters_key(&d.instance_id))?;
        Ok(key)
    }

    /// Applies one INF AddReg line (`HKR,subkey,name,flags,value...`) below `root` (the HKR),
    /// with the FLG_ADDREG_* semantics: NOCLOBBER, DELVAL, APPEND (to a REG_MULTI_SZ), KEYONLY,
    /// OVERWRITEONLY and the type flags.
    pub fn apply_addreg(
        &mut self,
        root: &str,
        subkey: &str,
        name: &str,
        flags: u32,
        items: &[String],
    ) -> RegResult<()> {
        let key = reg::join_path(root, subkey);
        if flags & addreg::DELVAL != 0 {
            if self.key_exists(&key)? {
                self.delete_value(&key, name)?;
            }
            return Ok(());
        }
        self.create_key(&key)?;
        if flags & addreg::KEYONLY != 0 {
            return Ok(());
        }
        let existing = self.value(&key, name)?;
        if (flags & addreg::NOCLOBBER != 0 && existing.is_some())
            || (flags & addreg::OVERWRITEONLY != 0 && existing.is_none())
        {
            return Ok(());
        }
        let mut value = addreg_value(flags, items)
            .map_err(|e| RegError::InvalidName(format!("{name}: {e}")))?;
        if flags & addreg::APPEND != 0 {
            let mut strings = existing.and_then(|v| v.as_multi_sz()).unwrap_or_default();
            for s in value.as_multi_sz().unwrap_or_default() {
                if !strings.iter().any(|e| e.eq_ignore_ascii_case(&s)) {
                    strings.push(s);
                }
            }
            value = RegValue::multi_sz(&strings);
        }
        self.set_value(&key, name, &value)
    }
}

/// FLG_ADDREG_* flags of INF AddReg lines.
pub mod addreg {
    /// FLG_ADDREG_BINVALUETYPE: the value is binary (bytes as hex items).
    pub const BINVALUETYPE: u32 = 0x0000_0001;
    /// FLG_ADDREG_NOCLOBBER: keep an existing value.
    pub const NOCLOBBER: u32 = 0x0000_0002;
    /// FLG_ADDREG_DELVAL: delete the value.
    pub const DELVAL: u32 = 0x0000_0004;
    /// FLG_ADDREG_APPEND: append to a REG_MULTI_SZ.
    pub const APPEND: u32 = 0x0000_0008;
    /// FLG_ADDREG_KEYONLY: create the key only.
    pub const KEYONLY: u32 = 0x0000_0010;
    /// FLG_ADDREG_OVERWRITEONLY: only replace an existing value.
    pub const OVERWRITEONLY: u32 = 0x0000_0020;
    /// FLG_ADDREG_TYPE_MULTI_SZ.
    pub const TYPE_MULTI_SZ: u32 = 0x0001_0000;
    /// FLG_ADDREG_TYPE_EXPAND_SZ.
    pub const TYPE_EXPAND_SZ: u32 = 0x0002_0000;
    /// FLG_ADDREG_TYPE_DWORD (binary type flag + 0x10000).
    pub const TYPE_DWORD: u32 = 0x0001_0001;
    /// FLG_ADDREG_TYPE_NONE.
    pub const TYPE_NONE: u32 = 0x0002_0001;
    /// Mask of the type bits.
    pub const TYPE_MASK: u32 = 0xFFFF_0000 | BINVALUETYPE;
}

fn parse_number(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let parsed = match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => t.parse::<u64>(),
    };
    parsed.map_err(|_| format!("{t:?} is not a number"))
}

/// The value an INF AddReg line describes: the type from the flags (REG_SZ without type flags;
/// with FLG_ADDREG_BINVALUETYPE the high word is the REG_* type and the items are hex bytes,
/// except REG_DWORD given as one number).
pub fn addreg_value(flags: u32, items: &[String]) -> Result<RegValue, String> {
    let first = items.first().map(String::as_str).unwrap_or("");
    match flags & addreg::TYPE_MASK {
        0 => Ok(RegValue::sz(first)),
        addreg::TYPE_MULTI_SZ => Ok(RegValue::multi_sz(items)),
        addreg::TYPE_EXPAND_SZ => Ok(RegValue::expand_sz(first)),
        addreg::TYPE_NONE => Ok(RegValue::new(reg_type::NONE, Vec::new())),
        f if f & addreg::BINVALUETYPE != 0 => {
            // 0x00010001 is REG_DWORD (not type 1), 0x00000001 REG_BINARY; otherwise the high
            // word is the type.
            let kind = match f {
                addreg::TYPE_DWORD => reg_type::DWORD,
                addreg::BINVALUETYPE => reg_type::BINARY,
                _ => f >> 16,
            };
            if kind == reg_type::DWORD && items.len() == 1 {
                let v = parse_number(first)?;
                let v = u32::try_from(v).map_err(|_| format!("{v} does not fit a DWORD"))?;
                return Ok(RegValue::dword(v));
            }
            let bytes = items
                .iter()
                .map(|b| {
                    let t = b.trim();
                    let t = t
                        .strip_prefix("0x")
                        .or_else(|| t.strip_prefix("0X"))
                        .unwrap_or(t);
                    u8::from_str_radix(t, 16).map_err(|_| format!("{b:?} is not a hex byte"))
                })
                .collect::<Result<Vec<u8>, String>>()?;
            Ok(RegValue::new(kind, bytes))
        }
        other => Err(format!("unknown AddReg type flags {other:#x}")),
    }
}
