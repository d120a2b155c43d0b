//! Configuration manager: the registry API drivers call (ZwCreateKey ... ZwClose,
//! RtlQueryRegistryValues, RtlWriteRegistryValue, IoOpenDeviceRegistryKey, IoGetDeviceProperty,
//! IoRegisterDeviceInterface, IoSetDeviceInterfaceState) over a [`RegistryBackend`].
//!
//! The backend is a small trait with paths as NT names (`\Registry\Machine\System\...`) and typed
//! values ([`RegValue`]); this crate ships an in-memory one ([`MemoryRegistry`], the default of every
//! kernel) and the loader installs its persistent, transactional store with [`set_backend`]. Every
//! write a driver makes is one backend call (one committed transaction for the persistent store).
//!
//! Windows semantics kept here: key and value names are case-insensitive and case-preserving (the
//! case folding is [`rtl::upcase`]); subkeys enumerate in case-insensitive sorted order, values in
//! the order they were created; a key with subkeys cannot be deleted (STATUS_CANNOT_DELETE); a
//! deleted key's handles answer STATUS_KEY_DELETED; the `KEY_*_INFORMATION` and
//! `KEY_VALUE_*_INFORMATION` buffers follow the configuration manager's rules for
//! STATUS_BUFFER_TOO_SMALL (smaller than the fixed part: nothing written) and STATUS_BUFFER_OVERFLOW
//! (fixed part and what fits of the rest written), with ResultLength always the size needed.
//!
//! Differences from Windows, on purpose: `ControlSet001` is another name of `CurrentControlSet` (there
//! is one control set); volatile keys (REG_OPTION_VOLATILE) are stored like the others; registry
//! link keys (REG_OPTION_CREATE_LINK) are not supported; access masks are not checked.

use std::collections::{BTreeMap, HashMap};

use crate::crt::{self, CharSize};
use crate::export::Export;
use crate::pnp::PnpManager;
use crate::status::{
    self, NtStatus, STATUS_ACCESS_DENIED, STATUS_BUFFER_OVERFLOW, STATUS_BUFFER_TOO_SMALL,
    STATUS_INVALID_DEVICE_REQUEST, STATUS_INVALID_HANDLE, STATUS_INVALID_PARAMETER,
    STATUS_NOT_SUPPORTED, STATUS_OBJECT_NAME_INVALID, STATUS_OBJECT_NAME_NOT_FOUND, STATUS_SUCCESS,
};
use crate::verifier::irql;
use crate::{ex, export_table, io, rtl, KResult, Kernel};

/// Registry value types (`REG_*`).
pub mod reg_type {
    /// REG_NONE.
    pub const NONE: u32 = 0;
    /// REG_SZ: NUL-terminated UTF-16 string.
    pub const SZ: u32 = 1;
    /// REG_EXPAND_SZ: string with `%VARIABLE%` references.
    pub const EXPAND_SZ: u32 = 2;
    /// REG_BINARY.
    pub const BINARY: u32 = 3;
    /// REG_DWORD: 32-bit little-endian.
    pub const DWORD: u32 = 4;
    /// REG_DWORD_BIG_ENDIAN.
    pub const DWORD_BIG_ENDIAN: u32 = 5;
    /// REG_LINK.
    pub const LINK: u32 = 6;
    /// REG_MULTI_SZ: strings, each NUL-terminated, then an empty one.
    pub const MULTI_SZ: u32 = 7;
    /// REG_RESOURCE_LIST.
    pub const RESOURCE_LIST: u32 = 8;
    /// REG_FULL_RESOURCE_DESCRIPTOR.
    pub const FULL_RESOURCE_DESCRIPTOR: u32 = 9;
    /// REG_RESOURCE_REQUIREMENTS_LIST.
    pub const RESOURCE_REQUIREMENTS_LIST: u32 = 10;
    /// REG_QWORD: 64-bit little-endian.
    pub const QWORD: u32 = 11;
}

/// STATUS_NO_MORE_ENTRIES: enumeration index past the last entry.
pub const STATUS_NO_MORE_ENTRIES: NtStatus = 0x8000_001A;
/// STATUS_CANNOT_DELETE: the key has subkeys (or is a hive root).
pub const STATUS_CANNOT_DELETE: NtStatus = 0xC000_0121;
/// STATUS_KEY_DELETED: the handle's key was deleted.
pub const STATUS_KEY_DELETED: NtStatus = 0xC000_017C;
/// STATUS_OBJECT_PATH_SYNTAX_BAD: a relative name where an absolute one is needed, or the reverse.
pub const STATUS_OBJECT_PATH_SYNTAX_BAD: NtStatus = 0xC000_003B;
/// STATUS_REGISTRY_IO_FAILED: the store could not be read or written.
pub const STATUS_REGISTRY_IO_FAILED: NtStatus = 0xC000_014D;
/// STATUS_OBJECT_NAME_EXISTS (informational): the device interface was already enabled.
pub const STATUS_OBJECT_NAME_EXISTS: NtStatus = 0x4000_0000;
/// STATUS_OBJECT_TYPE_MISMATCH: RTL_QUERY_REGISTRY_TYPECHECK found another type.
pub const STATUS_OBJECT_TYPE_MISMATCH: NtStatus = 0xC000_0024;
/// STATUS_INVALID_PARAMETER_2.
pub const STATUS_INVALID_PARAMETER_2: NtStatus = 0xC000_00F0;

/// ZwCreateKey disposition: the key was created.
pub const REG_CREATED_NEW_KEY: u32 = 1;
/// ZwCreateKey disposition: the key existed.
pub const REG_OPENED_EXISTING_KEY: u32 = 2;
const REG_OPTION_CREATE_LINK: u32 = 2;

/// `\Registry\Machine\System\CurrentControlSet`.
pub const CURRENT_CONTROL_SET: &str = r"\Registry\Machine\System\CurrentControlSet";
/// The device setup class of devices without one (GUID_DEVCLASS_UNKNOWN).
pub const GUID_DEVCLASS_UNKNOWN: &str = "{4D36E97E-E325-11CE-BFC1-08002BE10318}";

/// Keys every registry has (created by both backends, with their ancestors).
pub const SKELETON: &[&str] = &[
    r"\Registry\Machine\Hardware\Description\System",
    r"\Registry\Machine\Hardware\DeviceMap",
    r"\Registry\Machine\Software\Classes",
    r"\Registry\Machine\Software\Microsoft\Windows NT\CurrentVersion",
    r"\Registry\Machine\System\CurrentControlSet\Control\Class",
    r"\Registry\Machine\System\CurrentControlSet\Control\DeviceClasses",
    r"\Registry\Machine\System\CurrentControlSet\Enum\Root",
    r"\Registry\Machine\System\CurrentControlSet\Hardware Profiles\Current",
    r"\Registry\Machine\System\CurrentControlSet\Services",
    r"\Registry\User\.Default",
];

/// The hive roots: they exist from the start and cannot be deleted or added to under `\Registry`.
pub const ROOTS: &[&str] = &[r"\Registry", r"\Registry\Machine", r"\Registry\User"];

// ---------------------------------------------------------------------------------------------
// Values

/// A typed registry value: the `REG_*` type and the raw data, as Windows stores it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RegValue {
    /// `REG_*` type (any 32-bit number is allowed).
    pub kind: u32,
    /// The data bytes.
    pub data: Vec<u8>,
}

fn utf16_bytes(s: &str) -> Vec<u8> {
    s.encode_utf16().flat_map(u16::to_le_bytes).collect()
}

fn utf16z_bytes(s: &str) -> Vec<u8> {
    s.encode_utf16()
        .chain([0])
        .flat_map(u16::to_le_bytes)
        .collect()
}

/// UTF-16 code units of little-endian bytes (an odd last byte is dropped).
pub fn units_of(data: &[u8]) -> Vec<u16> {
    data.chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect()
}

impl RegValue {
    /// A value of any type.
    pub fn new(kind: u32, data: Vec<u8>) -> RegValue {
        RegValue { kind, data }
    }

    /// REG_SZ (with its terminator).
    pub fn sz(s: &str) -> RegValue {
        RegValue::new(reg_type::SZ, utf16z_bytes(s))
    }

    /// REG_EXPAND_SZ (with its terminator).
    pub fn expand_sz(s: &str) -> RegValue {
        RegValue::new(reg_type::EXPAND_SZ, utf16z_bytes(s))
    }

    /// REG_MULTI_SZ: each string terminated, then the empty string that ends the list.
    pub fn multi_sz<S: AsRef<str>>(items: &[S]) -> RegValue {
        let mut data = Vec::new();
        for s in items {
            data.extend(utf16z_bytes(s.as_ref()));
        }
        data.extend([0, 0]);
        RegValue::new(reg_type::MULTI_SZ, data)
    }

    /// REG_DWORD.
    pub fn dword(v: u32) -> RegValue {
        RegValue::new(reg_type::DWORD, v.to_le_bytes().to_vec())
    }

    /// REG_QWORD.
    pub fn qword(v: u64) -> RegValue {
        RegValue::new(reg_type::QWORD, v.to_le_bytes().to_vec())
    }

    /// REG_BINARY.
    pub fn binary(data: &[u8]) -> RegValue {
        RegValue::new(reg_type::BINARY, data.to_vec())
    }

    /// Whether the type is one of the string types (REG_SZ, REG_EXPAND_SZ, REG_MULTI_SZ).
    pub fn is_string_type(kind: u32) -> bool {
        matches!(
            kind,
            reg_type::SZ | reg_type::EXPAND_SZ | reg_type::MULTI_SZ
        )
    }

    /// The text of a REG_SZ / REG_EXPAND_SZ / REG_LINK value, up to its first NUL.
    pub fn as_str(&self) -> Option<String> {
        if !matches!(
            self.kind,
            reg_type::SZ | reg_type::EXPAND_SZ | reg_type::LINK
        ) {
            return None;
        }
        let units = units_of(&self.data);
        let end = units.iter().position(|&u| u == 0).unwrap_or(units.len());
        Some(String::from_utf16_lossy(&units[..end]))
    }

    /// The strings of a REG_MULTI_SZ value (up to the empty string that ends the list).
    pub fn as_multi_sz(&self) -> Option<Vec<String>> {
        if self.kind != reg_type::MULTI_SZ {
            return None;
        }
        let units = units_of(&self.data);
        let mut out = Vec::new();
        for part in units.split(|&u| u == 0) {
            if part.is_empty() {
                break;
            }
            out.push(String::from_utf16_lossy(part));
        }
        Some(out)
    }

    /// A REG_DWORD (or REG_DWORD_BIG_ENDIAN) value.
    pub fn as_dword(&self) -> Option<u32> {
        let bytes: [u8; 4] = self.data.as_slice().try_into().ok()?;
        match self.kind {
            reg_type::DWORD => Some(u32::from_le_bytes(bytes)),
            reg_type::DWORD_BIG_ENDIAN => Some(u32::from_be_bytes(bytes)),
            _ => None,
        }
    }

    /// A REG_QWORD value.
    pub fn as_qword(&self) -> Option<u64> {
        let bytes: [u8; 8] = self.data.as_slice().try_into().ok()?;
        (self.kind == reg_type::QWORD).then(|| u64::from_le_bytes(bytes))
    }
}

// ---------------------------------------------------------------------------------------------
// Keys, errors, the backend trait

/// What a key says about itself (KEY_FULL_INFORMATION plus its own name).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyInfo {
    /// The key's own name (last path component), in the case it was created with.
    pub name: String,
    /// Its class (usually empty).
    pub class: String,
    /// Last write time (FILETIME: 100 ns since 1601).
    pub last_write: u64,
    /// Number of subkeys.
    pub subkeys: u32,
    /// Longest subkey name, in bytes (UTF-16).
    pub max_name_len: u32,
    /// Longest subkey class, in bytes.
    pub max_class_len: u32,
    /// Number of values.
    pub values: u32,
    /// Longest value name, in bytes.
    pub max_value_name_len: u32,
    /// Largest value data, in bytes.
    pub max_value_data_len: u32,
}

/// Bytes of a name in UTF-16.
pub fn utf16_len(s: &str) -> u32 {
    s.encode_utf16().count() as u32 * 2
}

impl KeyInfo {
    /// Assembles the information of a key from its record, its subkeys (name, class) and values.
    pub fn assemble<'a>(
        name: &str,
        class: &str,
        last_write: u64,
        subkeys: impl IntoIterator<Item = (&'a str, &'a str)>,
        values: &[(String, RegValue)],
    ) -> KeyInfo {
        let mut info = KeyInfo {
            name: name.to_string(),
            class: class.to_string(),
            last_write,
            values: values.len() as u32,
            ..KeyInfo::default()
        };
        for (n, c) in subkeys {
            info.subkeys += 1;
            info.max_name_len = info.max_name_len.max(utf16_len(n));
            info.max_class_len = info.max_class_len.max(utf16_len(c));
        }
        for (n, v) in values {
            info.max_value_name_len = info.max_value_name_len.max(utf16_len(n));
            info.max_value_data_len = info.max_value_data_len.max(v.data.len() as u32);
        }
        info
    }
}

/// Why a registry operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegError {
    /// The key (or a parent of it) does not exist.
    #[error("registry key {0} does not exist")]
    NotFound(String),
    /// The key has subkeys, or is a hive root.
    #[error("registry key {0} cannot be deleted (it has subkeys or is a root)")]
    CannotDelete(String),
    /// Keys cannot be created there (directly under `\Registry`).
    #[error("registry key {0} cannot be created")]
    AccessDenied(String),
    /// Not a valid registry path or name.
    #[error("invalid registry name {0:?}")]
    InvalidName(String),
    /// The store failed.
    #[error("registry store: {0}")]
    Storage(String),
}

/// Result of a registry operation.
pub type RegResult<T> = Result<T, RegError>;

impl RegError {
    /// The NTSTATUS a kernel API returns for this error.
    pub fn status(&self) -> NtStatus {
        match self {
            RegError::NotFound(_) => STATUS_OBJECT_NAME_NOT_FOUND,
            RegError::CannotDelete(_) => STATUS_CANNOT_DELETE,
            RegError::AccessDenied(_) => STATUS_ACCESS_DENIED,
            RegError::InvalidName(_) => STATUS_OBJECT_NAME_INVALID,
            RegError::Storage(e) => {
                tracing::error!(target: "ica::registry", "registry store failed: {e}");
                STATUS_REGISTRY_IO_FAILED
            }
        }
    }
}

/// A registry the kernel API works on. Paths are absolute NT names (`\Registry\Machine\...`),
/// matched case-insensitively; names keep the case they were created with.
pub trait RegistryBackend {
    /// Information about an existing key (`NotFound` if it does not exist).
    fn key_info(&self, path: &str) -> RegResult<KeyInfo>;
    /// Creates the key (its parent must exist) with `class`, or opens it if it exists. Returns
    /// whether it was created.
    fn create_key(&mut self, path: &str, class: &str) -> RegResult<bool>;
    /// Deletes a key without subkeys, with its values.
    fn delete_key(&mut self, path: &str) -> RegResult<()>;
    /// The `index`-th subkey in case-insensitive name order, `None` past the last.
    fn enum_key(&self, path: &str, index: u32) -> RegResult<Option<KeyInfo>>;
    /// A value by name (`""` is the default value): its stored name and value, `None` if missing.
    fn query_value(&self, path: &str, name: &str) -> RegResult<Option<(String, RegValue)>>;
    /// Sets a value (replacing one of the same name in place, else appending it).
    fn set_value(&mut self, path: &str, name: &str, value: &RegValue) -> RegResult<()>;
    /// Deletes a value; returns whether it existed.
    fn delete_value(&mut self, path: &str, name: &str) -> RegResult<bool>;
    /// The `index`-th value in creation order, `None` past the last.
    fn enum_value(&self, path: &str, index: u32) -> RegResult<Option<(String, RegValue)>>;

    /// Creates a key and any missing ancestors.
    fn create_key_path(&mut self, path: &str) -> RegResult<()> {
        let comps = path_components(path)?;
        let mut at = String::new();
        for c in comps {
            at.push('\\');
            at.push_str(c);
            if self.key_info(&at).is_err() {
                self.create_key(&at, "")?;
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Names

/// The components of an absolute registry path (`\Registry\Machine\X` -> `Registry`, `Machine`,
/// `X`); one trailing backslash is allowed. Paths outside `\Registry` are `NotFound`.
pub fn path_components(path: &str) -> RegResult<Vec<&str>> {
    let rest = path
        .strip_prefix('\\')
        .ok_or_else(|| RegError::InvalidName(path.to_string()))?;
    let rest = rest.strip_suffix('\\').unwrap_or(rest);
    let comps: Vec<&str> = rest.split('\\').collect();
    if comps.iter().any(|c| c.is_empty() || c.contains('\0')) {
        return Err(RegError::InvalidName(path.to_string()));
    }
    if !comps[0].eq_ignore_ascii_case("registry") {
        return Err(RegError::NotFound(path.to_string()));
    }
    Ok(comps)
}

/// Case folding of a key or value name (Unicode simple upcase per UTF-16 unit, as the NLS table).
pub fn fold_name(name: &str) -> String {
    let units: Vec<u16> = name.encode_utf16().map(rtl::upcase).collect();
    String::from_utf16_lossy(&units)
}

/// Whether two names are equal, case-insensitively.
pub fn names_equal(a: &str, b: &str) -> bool {
    a == b || fold_name(a) == fold_name(b)
}

/// The canonical (folded) form of an absolute path: the lookup key of a registry key.
pub fn canonical_path(path: &str) -> RegResult<String> {
    let comps = path_components(path)?;
    let mut folded: Vec<String> = comps.iter().map(|c| fold_name(c)).collect();
    if folded.len() >= 4
        && folded[1] == "MACHINE"
        && folded[2] == "SYSTEM"
        && folded[3] == "CONTROLSET001"
    {
        folded[3] = "CURRENTCONTROLSET".to_string();
    }
    let mut out = String::new();
    for f in folded {
        out.push('\\');
        out.push_str(&f);
    }
    Ok(out)
}

/// `base\rel` (an empty `rel` is `base` itself).
pub fn join_path(base: &str, rel: &str) -> String {
    let base = base.strip_suffix('\\').unwrap_or(base);
    if rel.is_empty() {
        base.to_string()
    } else {
        format!("{base}\\{rel}")
    }
}

/// The parent path and last component of a path (None for a single component).
pub fn split_parent(path: &str) -> Option<(&str, &str)> {
    let path = path.strip_suffix('\\').unwrap_or(path);
    let i = path.rfind('\\')?;
    if i == 0 {
        return None;
    }
    Some((&path[..i], &path[i + 1..]))
}

/// Whether a canonical path is a hive root.
pub fn is_root(canonical: &str) -> bool {
    matches!(
        canonical,
        r"\REGISTRY" | r"\REGISTRY\MACHINE" | r"\REGISTRY\USER"
    )
}

/// The current time as a FILETIME.
pub fn filetime_now() -> u64 {
    const UNIX_EPOCH_AS_FILETIME: u64 = 116_444_736_000_000_000;
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    UNIX_EPOCH_AS_FILETIME + since.as_secs() * 10_000_000 + u64::from(since.subsec_nanos()) / 100
}

// ---------------------------------------------------------------------------------------------
// The in-memory backend

#[derive(Debug, Clone)]
struct MemKey {
    name: String,
    class: String,
    last_write: u64,
    values: Vec<(String, RegValue)>,
}

/// A registry held in memory (the default of every kernel; lost when the kernel goes).
#[derive(Debug, Clone)]
pub struct MemoryRegistry {
    keys: BTreeMap<String, MemKey>,
}

impl Default for MemoryRegistry {
    fn default() -> Self {
        MemoryRegistry::new()
    }
}

impl MemoryRegistry {
    /// A registry holding the hive roots and the [`SKELETON`] keys.
    pub fn new() -> MemoryRegistry {
        let mut r = MemoryRegistry {
            keys: BTreeMap::new(),
        };
        let now = filetime_now();
        for root in ROOTS {
            let name = root.rsplit('\\').next().unwrap_or(root);
            r.keys.insert(
                fold_name(root),
                MemKey {
                    name: name.to_string(),
                    class: String::new(),
                    last_write: now,
                    values: Vec::new(),
                },
            );
        }
        for path in SKELETON {
            // The skeleton paths are valid by construction.
            let _ = r.create_key_path(path);
        }
        r
    }

    fn get(&self, path: &str) -> RegResult<(String, &MemKey)> {
        let canon = canonical_path(path)?;
        match self.keys.get(&canon) {
            Some(k) => Ok((canon, k)),
            None => Err(RegError::NotFound(path.to_string())),
        }
    }

    fn get_mut(&mut self, path: &str) -> RegResult<&mut MemKey> {
        let canon = canonical_path(path)?;
        self.keys
            .get_mut(&canon)
            .ok_or_else(|| RegError::NotFound(path.to_string()))
    }

    fn children(&self, canon: &str) -> impl Iterator<Item = (&String, &MemKey)> {
        let prefix = format!("{canon}\\");
        let end = format!("{canon}]");
        self.keys
            .range(prefix.clone()..end)
            .filter(move |(c, _)| !c[prefix.len()..].contains('\\'))
    }

    fn info(&self, canon: &str, key: &MemKey) -> KeyInfo {
        KeyInfo::assemble(
            &key.name,
            &key.class,
            key.last_write,
            self.children(canon)
                .map(|(_, k)| (k.name.as_str(), k.class.as_str())),
            &key.values,
        )
    }

    fn touch(&mut self, canon: &str) {
        if let Some(k) = self.keys.get_mut(canon) {
            k.last_write = filetime_now();
        }
    }
}

impl RegistryBackend for MemoryRegistry {
    fn key_info(&self, path: &str) -> RegResult<KeyInfo> {
        let (canon, key) = self.get(path)?;
        Ok(self.info(&canon, key))
    }

    fn create_key(&mut self, path: &str, class: &str) -> RegResult<bool> {
        let canon = canonical_path(path)?;
        if self.keys.contains_key(&canon) {
            return Ok(false);
        }
        let (parent, leaf) =
            split_parent(&canon).ok_or_else(|| RegError::AccessDenied(path.to_string()))?;
        if parent == r"\REGISTRY" {
            return Err(RegError::AccessDenied(path.to_string()));
        }
        if !self.keys.contains_key(parent) {
            return Err(RegError::NotFound(path.to_string()));
        }
        let display = path_components(path)?
            .last()
            .map(|s| s.to_string())
            .unwrap_or_else(|| leaf.to_string());
        let parent = parent.to_string();
        self.keys.insert(
            canon,
            MemKey {
                name: display,
                class: class.to_string(),
                last_write: filetime_now(),
                values: Vec::new(),
            },
        );
        self.touch(&parent);
        Ok(true)
    }

    fn delete_key(&mut self, path: &str) -> RegResult<()> {
        let (canon, _) = self.get(path)?;
        if is_root(&canon) || self.children(&canon).next().is_some() {
            return Err(RegError::CannotDelete(path.to_string()));
        }
        self.keys.remove(&canon);
        if let Some((parent, _)) = split_parent(&canon) {
            let parent = parent.to_string();
            self.touch(&parent);
        }
        Ok(())
    }

    fn enum_key(&self, path: &str, index: u32) -> RegResult<Option<KeyInfo>> {
        let (canon, _) = self.get(path)?;
        Ok(self
            .children(&canon)
            .nth(index as usize)
            .map(|(c, k)| self.info(c, k)))
    }

    fn query_value(&self, path: &str, name: &str) -> RegResult<Option<(String, RegValue)>> {
        let (_, key) = self.get(path)?;
        Ok(key
            .values
            .iter()
            .find(|(n, _)| names_equal(n, name))
            .cloned())
    }

    fn set_value(&mut self, path: &str, name: &str, value: &RegValue) -> RegResult<()> {
        let key = self.get_mut(path)?;
        match key.values.iter_mut().find(|(n, _)| names_equal(n, name)) {
            Some((_, v)) => *v = value.clone(),
            None => key.values.push((name.to_string(), value.clone())),
        }
        key.last_write = filetime_now();
        Ok(())
    }

    fn delete_value(&mut self, path: &str, name: &str) -> RegResult<bool> {
        let key = self.get_mut(path)?;
        let before = key.values.len();
        key.values.retain(|(n, _)| !names_equal(n, name));
        let deleted = key.values.len() != before;
        if deleted {
            key.last_write = filetime_now();
        }
        Ok(deleted)
    }

    fn enum_value(&self, path: &str, index: u32) -> RegResult<Option<(String, RegValue)>> {
        let (_, key) = self.get(path)?;
        Ok(key.values.get(index as usize).cloned())
    }
}

// ---------------------------------------------------------------------------------------------
// Kernel state

#[derive(Debug, Clone)]
struct OpenKey {
    /// The path as opened (case as the driver wrote it).
    path: String,
    /// The key was deleted through some handle.
    deleted: bool,
}

#[derive(Debug, Clone)]
struct Interface {
    pdo: u64,
    /// The symbolic link name as returned to the driver.
    link: String,
    /// The `#` (or `#RefString`) key under the interface key, holding `Control\Linked`.
    key: String,
    /// The interface class GUID, `{XXXXXXXX-...}` in upper case.
    class: String,
    enabled: bool,
}

/// The registry state of a kernel (`k.extension::<Registry>()`): the backend, key handles, the
/// device instance paths of PDOs, registered device interfaces.
#[derive(Default)]
pub struct Registry {
    backend: Option<Box<dyn RegistryBackend>>,
    handles: HashMap<u64, OpenKey>,
    next_handle: u64,
    instances: HashMap<u64, String>,
    interfaces: HashMap<String, Interface>,
}

/// Makes `backend` the registry of this kernel (open key handles keep their paths).
pub fn set_backend(k: &mut Kernel, backend: Box<dyn RegistryBackend>) {
    k.extension::<Registry>().backend = Some(backend);
}

/// The registry of this kernel (an in-memory one unless [`set_backend`] installed another).
pub fn backend(k: &mut Kernel) -> &mut dyn RegistryBackend {
    k.extension::<Registry>()
        .backend
        .get_or_insert_with(|| Box::new(MemoryRegistry::new()))
        .as_mut()
}

/// Number of open key handles (for leak checks).
pub fn open_handles(k: &mut Kernel) -> usize {
    k.extension::<Registry>().handles.len()
}

/// Records the device instance path (`PCI\VEN_8086&DEV_100E\3&...`, `ROOT\NET\0000`) of a PDO.
/// Root PDOs made by [`crate::pnp::create_root_device`] are known without this.
pub fn set_device_instance(k: &mut Kernel, pdo: u64, instance: &str) {
    k.extension::<Registry>()
        .instances
        .insert(pdo, instance.to_string());
}

/// The device instance path of a PDO, if it is one.
pub fn device_instance(k: &mut Kernel, pdo: u64) -> Option<String> {
    if let Some(i) = k.extension::<Registry>().instances.get(&pdo) {
        return Some(i.clone());
    }
    k.extension::<PnpManager>()
        .devices
        .iter()
        .find(|(d, _)| *d == pdo)
        .map(|(_, id)| id.clone())
}

/// `...\CurrentControlSet\Services\<service>`.
pub fn service_path(service: &str) -> String {
    format!(r"{CURRENT_CONTROL_SET}\Services\{service}")
}

/// `...\CurrentControlSet\Enum\<instance>`.
pub fn enum_path(instance: &str) -> String {
    format!(r"{CURRENT_CONTROL_SET}\Enum\{instance}")
}

/// `...\CurrentControlSet\Control\Class\<driver>` for a driver key name `{guid}\NNNN`.
pub fn class_path(driver: &str) -> String {
    format!(r"{CURRENT_CONTROL_SET}\Control\Class\{driver}")
}

/// Makes sure the service key of a driver about to start exists (Windows never starts a driver
/// without one); a missing key gets what `sc create type= kernel` writes: Type 1, Start 3 (demand),
/// ErrorControl 1 and the ImagePath of `image` in `System32\drivers`.
pub fn ensure_service_key(k: &mut Kernel, service: &str, image: &str) {
    let path = service_path(service);
    let b = backend(k);
    if b.key_info(&path).is_ok() {
        return;
    }
    let result = b.create_key_path(&path).and_then(|()| {
        b.set_value(&path, "Type", &RegValue::dword(1))?;
        b.set_value(&path, "Start", &RegValue::dword(3))?;
        b.set_value(&path, "ErrorControl", &RegValue::dword(1))?;
        b.set_value(
            &path,
            "ImagePath",
            &RegValue::expand_sz(&format!(r"\SystemRoot\System32\drivers\{image}")),
        )
    });
    if let Err(e) = result {
        tracing::warn!(target: "ica::registry", "cannot create the service key of {service}: {e}");
    }
}

fn handle_base(k: &Kernel) -> u64 {
    match k.arch() {
        dbt::Arch::X86 => 0x8000_0000,
        dbt::Arch::X64 => 0xFFFF_FFFF_8000_0000,
    }
}

fn new_handle(k: &mut Kernel, path: String) -> u64 {
    let base = handle_base(k);
    let r = k.extension::<Registry>();
    r.next_handle += 1;
    let h = base + r.next_handle * 4;
    r.handles.insert(
        h,
        OpenKey {
            path,
            deleted: false,
        },
    );
    h
}

/// The path of an open key handle, or the status the call returns for it.
fn handle_path(k: &mut Kernel, h: u64) -> Result<String, NtStatus> {
    match k.extension::<Registry>().handles.get(&h) {
        None => Err(STATUS_INVALID_HANDLE),
        Some(o) if o.deleted => Err(STATUS_KEY_DELETED),
        Some(o) => Ok(o.path.clone()),
    }
}

/// The status for a backend error on an open handle: a key that is gone was deleted.
fn handle_error(e: RegError) -> NtStatus {
    match e {
        RegError::NotFound(_) => STATUS_KEY_DELETED,
        other => other.status(),
    }
}

/// Reads an optional UNICODE_STRING (NULL is the empty string).
fn read_name(k: &Kernel, us: u64) -> KResult<String> {
    if us == 0 {
        Ok(String::new())
    } else {
        rtl::read_unicode_string(k, us)
    }
}

/// Reads an optional NUL-terminated wide string.
fn read_wide(k: &Kernel, p: u64) -> KResult<String> {
    if p == 0 {
        Ok(String::new())
    } else {
        Ok(String::from_utf16_lossy(&crt::read_str(
            k,
            p,
            CharSize::Wide,
        )?))
    }
}

fn write_u32_opt(k: &mut Kernel, at: u64, v: u32) -> KResult<()> {
    if at != 0 {
        k.m.mem.write_u32(at, v)?;
    }
    Ok(())
}

/// The absolute path named by OBJECT_ATTRIBUTES (RootDirectory + ObjectName).
fn resolve_object_attributes(k: &mut Kernel, oa: u64) -> KResult<Result<String, NtStatus>> {
    if oa == 0 {
        return Ok(Err(STATUS_INVALID_PARAMETER));
    }
    let l = k.layout;
    let root = k.read_ptr(oa + l.object_attributes_root_directory)?;
    let name_ptr = k.read_ptr(oa + l.object_attributes_object_name)?;
    let name = read_name(k, name_ptr)?;
    let path = if root != 0 {
        let base = match handle_path(k, root) {
            Ok(p) => p,
            Err(s) => return Ok(Err(s)),
        };
        if name.starts_with('\\') {
            return Ok(Err(STATUS_OBJECT_PATH_SYNTAX_BAD));
        }
        join_path(&base, &name)
    } else {
        if !name.starts_with('\\') {
            return Ok(Err(STATUS_OBJECT_PATH_SYNTAX_BAD));
        }
        name
    };
    Ok(match path_components(&path) {
        Ok(_) => Ok(path),
        Err(e) => Err(e.status()),
    })
}

// ---------------------------------------------------------------------------------------------
// Information buffers

/// The image of an information structure: what must fit (`minimum`), what all of it needs
/// (`required`, the ResultLength), and its parts by offset. A part that does not fit is cut
/// (STATUS_BUFFER_OVERFLOW); the gaps between parts are not written.
struct InfoImage {
    minimum: u32,
    required: u32,
    parts: Vec<(u32, Vec<u8>)>,
}

fn put_u32(buf: &mut [u8], at: u64, v: u32) {
    let at = at as usize;
    buf[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

fn put_u64(buf: &mut [u8], at: u64, v: u64) {
    let at = at as usize;
    buf[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

/// Writes an information image into the caller's buffer as the configuration manager does and
/// returns the status; `None` (an information class the call does not have) is
/// STATUS_INVALID_PARAMETER.
fn deliver(
    k: &mut Kernel,
    buffer: u64,
    length: u32,
    result_length: u64,
    image: Option<InfoImage>,
) -> KResult<NtStatus> {
    let Some(image) = image else {
        return Ok(STATUS_INVALID_PARAMETER);
    };
    write_u32_opt(k, result_length, image.required)?;
    if length < image.minimum {
        return Ok(STATUS_BUFFER_TOO_SMALL);
    }
    let mut status = STATUS_SUCCESS;
    for (offset, bytes) in image.parts {
        let room = length.saturating_sub(offset) as usize;
        let n = bytes.len().min(room);
        if n < bytes.len() {
            status = STATUS_BUFFER_OVERFLOW;
        }
        if n > 0 {
            k.m.mem
                .write_bytes(buffer + u64::from(offset), &bytes[..n])?;
        }
    }
    Ok(status)
}

const KEY_VALUE_BASIC_INFORMATION: u32 = 0;
const KEY_VALUE_FULL_INFORMATION: u32 = 1;
const KEY_VALUE_PARTIAL_INFORMATION: u32 = 2;
const KEY_VALUE_FULL_INFORMATION_ALIGN64: u32 = 3;
const KEY_VALUE_PARTIAL_INFORMATION_ALIGN64: u32 = 4;

/// A KEY_VALUE_*_INFORMATION image, or None for an unknown class.
fn value_image(k: &Kernel, class: u32, name: &str, v: &RegValue) -> Option<InfoImage> {
    let l = k.layout;
    let name16 = utf16_bytes(name);
    let nl = name16.len() as u32;
    let dl = v.data.len() as u32;
    Some(match class {
        KEY_VALUE_BASIC_INFORMATION => {
            let min = l.key_value_basic_information_name;
            let mut h = vec![0; min as usize];
            put_u32(&mut h, l.key_value_basic_information_title_index, 0);
            put_u32(&mut h, l.key_value_basic_information_type, v.kind);
            put_u32(&mut h, l.key_value_basic_information_name_length, nl);
            InfoImage {
                minimum: min as u32,
                required: min as u32 + nl,
                parts: vec![(0, h), (min as u32, name16)],
            }
        }
        KEY_VALUE_FULL_INFORMATION | KEY_VALUE_FULL_INFORMATION_ALIGN64 => {
            let min = l.key_value_full_information_name as u32;
            let align = if class == KEY_VALUE_FULL_INFORMATION {
                4
            } else {
                8
            };
            let mut required = min + nl;
            // No data: DataOffset is -1, not 0.
            let mut data_offset = u32::MAX;
            if dl > 0 {
                data_offset = required.div_ceil(align) * align;
                required = data_offset + dl;
            }
            let mut h = vec![0; min as usize];
            put_u32(&mut h, l.key_value_full_information_title_index, 0);
            put_u32(&mut h, l.key_value_full_information_type, v.kind);
            put_u32(
                &mut h,
                l.key_value_full_information_data_offset,
                data_offset,
            );
            put_u32(&mut h, l.key_value_full_information_data_length, dl);
            put_u32(&mut h, l.key_value_full_information_name_length, nl);
            let mut parts = vec![(0, h), (min, name16)];
            if dl > 0 {
                parts.push((data_offset, v.data.clone()));
            }
            InfoImage {
                minimum: min,
                required,
                parts,
            }
        }
        KEY_VALUE_PARTIAL_INFORMATION => {
            let min = l.key_value_partial_information_data as u32;
            let mut h = vec![0; min as usize];
            put_u32(&mut h, l.key_value_partial_information_title_index, 0);
            put_u32(&mut h, l.key_value_partial_information_type, v.kind);
            put_u32(&mut h, l.key_value_partial_information_data_length, dl);
            InfoImage {
                minimum: min,
                required: min + dl,
                parts: vec![(0, h), (min, v.data.clone())],
            }
        }
        KEY_VALUE_PARTIAL_INFORMATION_ALIGN64 => {
            let min = l.key_value_partial_information_align64_data as u32;
            let mut h = vec![0; min as usize];
            put_u32(&mut h, l.key_value_partial_information_align64_type, v.kind);
            put_u32(
                &mut h,
                l.key_value_partial_information_align64_data_length,
                dl,
            );
            InfoImage {
                minimum: min,
                required: min + dl,
                parts: vec![(0, h), (min, v.data.clone())],
            }
        }
        _ => return None,
    })
}

const KEY_BASIC_INFORMATION: u32 = 0;
const KEY_NODE_INFORMATION: u32 = 1;
const KEY_FULL_INFORMATION: u32 = 2;
const KEY_NAME_INFORMATION: u32 = 3;

/// A KEY_*_INFORMATION image (basic, node, full; name with `full_name`), or None.
fn key_image(k: &Kernel, class: u32, info: &KeyInfo, full_name: Option<&str>) -> Option<InfoImage> {
    let l = k.layout;
    let name16 = utf16_bytes(&info.name);
    let nl = name16.len() as u32;
    let class16 = utf16_bytes(&info.class);
    let cl = class16.len() as u32;
    Some(match class {
        KEY_BASIC_INFORMATION => {
            let min = l.key_basic_information_name as u32;
            let mut h = vec![0; min as usize];
            put_u64(
                &mut h,
                l.key_basic_information_last_write_time,
                info.last_write,
            );
            put_u32(&mut h, l.key_basic_information_title_index, 0);
            put_u32(&mut h, l.key_basic_information_name_length, nl);
            InfoImage {
                minimum: min,
                required: min + nl,
                parts: vec![(0, h), (min, name16)],
            }
        }
        KEY_NODE_INFORMATION => {
            let min = l.key_node_information_name as u32;
            // The class goes after the name, 4-aligned; ResultLength does not count the padding.
            let class_offset = if cl > 0 {
                (min + nl).div_ceil(4) * 4
            } else {
                u32::MAX
            };
            let mut h = vec![0; min as usize];
            put_u64(
                &mut h,
                l.key_node_information_last_write_time,
                info.last_write,
            );
            put_u32(&mut h, l.key_node_information_title_index, 0);
            put_u32(&mut h, l.key_node_information_class_offset, class_offset);
            put_u32(&mut h, l.key_node_information_class_length, cl);
            put_u32(&mut h, l.key_node_information_name_length, nl);
            let mut parts = vec![(0, h), (min, name16)];
            if cl > 0 {
                parts.push((class_offset, class16));
            }
            InfoImage {
                minimum: min,
                required: min + nl + cl,
                parts,
            }
        }
        KEY_FULL_INFORMATION => {
            let min = l.key_full_information_class as u32;
            let mut h = vec![0; min as usize];
            put_u64(
                &mut h,
                l.key_full_information_last_write_time,
                info.last_write,
            );
            put_u32(&mut h, l.key_full_information_title_index, 0);
            put_u32(
                &mut h,
                l.key_full_information_class_offset,
                if cl > 0 { min } else { u32::MAX },
            );
            put_u32(&mut h, l.key_full_information_class_length, cl);
            put_u32(&mut h, l.key_full_information_sub_keys, info.subkeys);
            put_u32(
                &mut h,
                l.key_full_information_max_name_len,
                info.max_name_len,
            );
            put_u32(
                &mut h,
                l.key_full_information_max_class_len,
                info.max_class_len,
            );
            put_u32(&mut h, l.key_full_information_values, info.values);
            put_u32(
                &mut h,
                l.key_full_information_max_value_name_len,
                info.max_value_name_len,
            );
            put_u32(
                &mut h,
                l.key_full_information_max_value_data_len,
                info.max_value_data_len,
            );
            InfoImage {
                minimum: min,
                required: min + cl,
                parts: vec![(0, h), (min, class16)],
            }
        }
        KEY_NAME_INFORMATION => {
            // KEY_NAME_INFORMATION { ULONG NameLength; WCHAR Name[1]; }: Name at 4 on both.
            let name16 = utf16_bytes(full_name?);
            let nl = name16.len() as u32;
            InfoImage {
                minimum: 4,
                required: 4 + nl,
                parts: vec![(0, nl.to_le_bytes().to_vec()), (4, name16)],
            }
        }
        _ => return None,
    })
}

/// The full name of a key as ZwQueryKey(KeyNameInformation) reports it: `\REGISTRY\MACHINE\`
/// then the stored names of the components below.
fn full_key_name(b: &dyn RegistryBackend, path: &str) -> RegResult<String> {
    let comps = path_components(path)?;
    let mut out = String::new();
    let mut at = String::new();
    for (i, c) in comps.iter().enumerate() {
        at.push('\\');
        at.push_str(c);
        out.push('\\');
        if i < 2 {
            out.push_str(&c.to_uppercase());
        } else {
            out.push_str(&b.key_info(&at)?.name);
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Zw* key services

/// ZwCreateKey(KeyHandle, DesiredAccess, ObjectAttributes, TitleIndex, Class, CreateOptions,
/// Disposition).
#[allow(clippy::too_many_arguments)]
pub fn zw_create_key(
    k: &mut Kernel,
    key_handle: u64,
    _access: u32,
    oa: u64,
    _title_index: u32,
    class: u64,
    options: u32,
    disposition: u64,
) -> KResult<NtStatus> {
    let path = match resolve_object_attributes(k, oa)? {
        Ok(p) => p,
        Err(s) => return Ok(s),
    };
    if options & REG_OPTION_CREATE_LINK != 0 {
        return Ok(STATUS_NOT_SUPPORTED);
    }
    let class = read_name(k, class)?;
    let created = match backend(k).create_key(&path, &class) {
        Ok(c) => c,
        Err(e) => return Ok(e.status()),
    };
    let h = new_handle(k, path);
    k.write_ptr(key_handle, h)?;
    write_u32_opt(
        k,
        disposition,
        if created {
            REG_CREATED_NEW_KEY
        } else {
            REG_OPENED_EXISTING_KEY
        },
    )?;
    Ok(STATUS_SUCCESS)
}

/// ZwOpenKey(KeyHandle, DesiredAccess, ObjectAttributes).
pub fn zw_open_key(k: &mut Kernel, key_handle: u64, _access: u32, oa: u64) -> KResult<NtStatus> {
    let path = match resolve_object_attributes(k, oa)? {
        Ok(p) => p,
        Err(s) => return Ok(s),
    };
    if let Err(e) = backend(k).key_info(&path) {
        return Ok(e.status());
    }
    let h = new_handle(k, path);
    k.write_ptr(key_handle, h)?;
    Ok(STATUS_SUCCESS)
}

/// ZwOpenKeyEx(KeyHandle, DesiredAccess, ObjectAttributes, OpenOptions).
pub fn zw_open_key_ex(
    k: &mut Kernel,
    key_handle: u64,
    access: u32,
    oa: u64,
    _options: u32,
) -> KResult<NtStatus> {
    zw_open_key(k, key_handle, access, oa)
}

/// ZwQueryValueKey(KeyHandle, ValueName, KeyValueInformationClass, KeyValueInformation, Length,
/// ResultLength).
pub fn zw_query_value_key(
    k: &mut Kernel,
    key_handle: u64,
    value_name: u64,
    class: u32,
    buffer: u64,
    length: u32,
    result_length: u64,
) -> KResult<NtStatus> {
    let path = match handle_path(k, key_handle) {
        Ok(p) => p,
        Err(s) => return Ok(s),
    };
    let name = read_name(k, value_name)?;
    let (stored, value) = match backend(k).query_value(&path, &name) {
        Ok(Some(found)) => found,
        Ok(None) => return Ok(STATUS_OBJECT_NAME_NOT_FOUND),
        Err(e) => return Ok(handle_error(e)),
    };
    deliver(
        k,
        buffer,
        length,
        result_length,
        value_image(k, class, &stored, &value),
    )
}

/// ZwSetValueKey(KeyHandle, ValueName, TitleIndex, Type, Data, DataSize).
pub fn zw_set_value_key(
    k: &mut Kernel,
    key_handle: u64,
    value_name: u64,
    _title_index: u32,
    kind: u32,
    data: u64,
    size: u32,
) -> KResult<NtStatus> {
    let path = match handle_path(k, key_handle) {
        Ok(p) => p,
        Err(s) => return Ok(s),
    };
    let name = read_name(k, value_name)?;
    let bytes = if size > 0 {
        crt::read_guest(k, data, u64::from(size))?
    } else {
        Vec::new()
    };
    Ok(
        match backend(k).set_value(&path, &name, &RegValue::new(kind, bytes)) {
            Ok(()) => STATUS_SUCCESS,
            Err(e) => handle_error(e),
        },
    )
}

/// ZwDeleteValueKey(KeyHandle, ValueName).
pub fn zw_delete_value_key(k: &mut Kernel, key_handle: u64, value_name: u64) -> KResult<NtStatus> {
    let path = match handle_path(k, key_handle) {
        Ok(p) => p,
        Err(s) => return Ok(s),
    };
    let name = read_name(k, value_name)?;
    Ok(match backend(k).delete_value(&path, &name) {
        Ok(true) => STATUS_SUCCESS,
        Ok(false) => STATUS_OBJECT_NAME_NOT_FOUND,
        Err(e) => handle_error(e),
    })
}

/// ZwEnumerateKey(KeyHandle, Index, KeyInformationClass, KeyInformation, Length, ResultLength).
pub fn zw_enumerate_key(
    k: &mut Kernel,
    key_handle: u64,
    index: u32,
    class: u32,
    buffer: u64,
    length: u32,
    result_length: u64,
) -> KResult<NtStatus> {
    let path = match handle_path(k, key_handle) {
        Ok(p) => p,
        Err(s) => return Ok(s),
    };
    if class > KEY_FULL_INFORMATION {
        return Ok(STATUS_INVALID_PARAMETER);
    }
    let info = match backend(k).enum_key(&path, index) {
        Ok(Some(info)) => info,
        Ok(None) => return Ok(STATUS_NO_MORE_ENTRIES),
        Err(e) => return Ok(handle_error(e)),
    };
    deliver(
        k,
        buffer,
        length,
        result_length,
        key_image(k, class, &info, None),
    )
}

/// ZwEnumerateValueKey(KeyHandle, Index, KeyValueInformationClass, KeyValueInformation, Length,
/// ResultLength).
pub fn zw_enumerate_value_key(
    k: &mut Kernel,
    key_handle: u64,
    index: u32,
    class: u32,
    buffer: u64,
    length: u32,
    result_length: u64,
) -> KResult<NtStatus> {
    let path = match handle_path(k, key_handle) {
        Ok(p) => p,
        Err(s) => return Ok(s),
    };
    let (name, value) = match backend(k).enum_value(&path, index) {
        Ok(Some(found)) => found,
        Ok(None) => return Ok(STATUS_NO_MORE_ENTRIES),
        Err(e) => return Ok(handle_error(e)),
    };
    deliver(
        k,
        buffer,
        length,
        result_length,
        value_image(k, class, &name, &value),
    )
}

/// ZwQueryKey(KeyHandle, KeyInformationClass, KeyInformation, Length, ResultLength).
pub fn zw_query_key(
    k: &mut Kernel,
    key_handle: u64,
    class: u32,
    buffer: u64,
    length: u32,
    result_length: u64,
) -> KResult<NtStatus> {
    let path = match handle_path(k, key_handle) {
        Ok(p) => p,
        Err(s) => return Ok(s),
    };
    let b = backend(k);
    let info = match b.key_info(&path) {
        Ok(info) => info,
        Err(e) => return Ok(handle_error(e)),
    };
    let full = if class == KEY_NAME_INFORMATION {
        match full_key_name(b, &path) {
            Ok(n) => Some(n),
            Err(e) => return Ok(handle_error(e)),
        }
    } else {
        None
    };
    deliver(
        k,
        buffer,
        length,
        result_length,
        key_image(k, class, &info, full.as_deref()),
    )
}

/// ZwDeleteKey(KeyHandle): the key must have no subkeys; its handles then answer
/// STATUS_KEY_DELETED (ZwClose still works).
pub fn zw_delete_key(k: &mut Kernel, key_handle: u64) -> KResult<NtStatus> {
    let path = match handle_path(k, key_handle) {
        Ok(p) => p,
        Err(s) => return Ok(s),
    };
    if let Err(e) = backend(k).delete_key(&path) {
        return Ok(handle_error(e));
    }
    let canon = canonical_path(&path).unwrap_or_default();
    for open in k.extension::<Registry>().handles.values_mut() {
        if canonical_path(&open.path).is_ok_and(|c| c == canon) {
            open.deleted = true;
        }
    }
    Ok(STATUS_SUCCESS)
}

/// ZwFlushKey(KeyHandle): every write is already committed.
pub fn zw_flush_key(k: &mut Kernel, key_handle: u64) -> KResult<NtStatus> {
    Ok(match handle_path(k, key_handle) {
        Ok(_) => STATUS_SUCCESS,
        Err(s) => s,
    })
}

/// ZwClose(Handle): closes a key handle (the only kernel handles there are so far).
pub fn zw_close(k: &mut Kernel, handle: u64) -> KResult<NtStatus> {
    Ok(match k.extension::<Registry>().handles.remove(&handle) {
        Some(_) => STATUS_SUCCESS,
        None => STATUS_INVALID_HANDLE,
    })
}

// ---------------------------------------------------------------------------------------------
// Rtl registry helpers

/// RTL_REGISTRY_* relative-to values.
pub mod relative_to {
    /// Path is absolute.
    pub const ABSOLUTE: u32 = 0;
    /// Relative to `...\CurrentControlSet\Services`.
    pub const SERVICES: u32 = 1;
    /// Relative to `...\CurrentControlSet\Control`.
    pub const CONTROL: u32 = 2;
    /// Relative to `\Registry\Machine\Software\Microsoft\Windows NT\CurrentVersion`.
    pub const WINDOWS_NT: u32 = 3;
    /// Relative to `\Registry\Machine\Hardware\DeviceMap`.
    pub const DEVICEMAP: u32 = 4;
    /// Relative to the current user's key (`\Registry\User\.Default` here).
    pub const USER: u32 = 5;
    /// Path is a key handle.
    pub const HANDLE: u32 = 0x4000_0000;
    /// The key is optional.
    pub const OPTIONAL: u32 = 0x8000_0000;
}

/// RTL_QUERY_REGISTRY_* table entry flags.
pub mod query_flags {
    /// Name is a subkey; following entries are for it.
    pub const SUBKEY: u32 = 0x0000_0001;
    /// Back to the key the call named.
    pub const TOPKEY: u32 = 0x0000_0002;
    /// The value must exist.
    pub const REQUIRED: u32 = 0x0000_0004;
    /// Call the routine once, without a value.
    pub const NOVALUE: u32 = 0x0000_0008;
    /// No expansion of REG_EXPAND_SZ, no splitting of REG_MULTI_SZ.
    pub const NOEXPAND: u32 = 0x0000_0010;
    /// Store the value at EntryContext instead of calling a routine.
    pub const DIRECT: u32 = 0x0000_0020;
    /// Delete the value after the routine succeeded.
    pub const DELETE: u32 = 0x0000_0040;
    /// With DIRECT: string values are not wanted.
    pub const NOSTRING: u32 = 0x0000_0080;
    /// With DIRECT: the high byte of DefaultType is the type the value must have.
    pub const TYPECHECK: u32 = 0x0000_0100;
}

/// The absolute path an Rtl registry call names, or its failure status.
fn rtl_key_path(k: &mut Kernel, relative: u32, path: u64) -> KResult<Result<String, NtStatus>> {
    if relative & relative_to::HANDLE != 0 {
        return Ok(handle_path(k, path));
    }
    let rel = relative & !relative_to::OPTIONAL;
    let prefix = match rel {
        relative_to::ABSOLUTE => None,
        relative_to::SERVICES => Some(format!(r"{CURRENT_CONTROL_SET}\Services")),
        relative_to::CONTROL => Some(format!(r"{CURRENT_CONTROL_SET}\Control")),
        relative_to::WINDOWS_NT => {
            Some(r"\Registry\Machine\Software\Microsoft\Windows NT\CurrentVersion".to_string())
        }
        relative_to::DEVICEMAP => Some(r"\Registry\Machine\Hardware\DeviceMap".to_string()),
        relative_to::USER => Some(r"\Registry\User\.Default".to_string()),
        _ => return Ok(Err(STATUS_INVALID_PARAMETER)),
    };
    let text = read_wide(k, path)?;
    let full = match prefix {
        None if !text.starts_with('\\') => return Ok(Err(STATUS_OBJECT_PATH_SYNTAX_BAD)),
        None => text,
        Some(p) => join_path(&p, text.trim_start_matches('\\')),
    };
    Ok(match path_components(&full) {
        Ok(_) => Ok(full),
        Err(e) => Err(e.status()),
    })
}

/// One RTL_QUERY_REGISTRY_TABLE entry.
#[derive(Debug, Clone, Copy)]
struct QueryEntry {
    at: u64,
    routine: u64,
    flags: u32,
    name: u64,
    entry_context: u64,
    default_type: u32,
    default_data: u64,
    default_length: u32,
}

fn read_query_entry(k: &Kernel, at: u64) -> KResult<QueryEntry> {
    let l = k.layout;
    Ok(QueryEntry {
        at,
        routine: k.read_ptr(at + l.rtl_query_registry_table_query_routine)?,
        flags: k.m.mem.read_u32(at + l.rtl_query_registry_table_flags)?,
        name: k.read_ptr(at + l.rtl_query_registry_table_name)?,
        entry_context: k.read_ptr(at + l.rtl_query_registry_table_entry_context)?,
        default_type: k
            .m
            .mem
            .read_u32(at + l.rtl_query_registry_table_default_type)?,
        default_data: k.read_ptr(at + l.rtl_query_registry_table_default_data)?,
        default_length: k
            .m
            .mem
            .read_u32(at + l.rtl_query_registry_table_default_length)?,
    })
}

/// What a query table entry is called with: the name to pass (a guest pointer, or a name to copy
/// into guest memory), the type and the data.
enum QueryName {
    Guest(u64),
    Host(String),
}

/// The environment REG_EXPAND_SZ values expand in when the caller passes none.
const SYSTEM_ENVIRONMENT: &[(&str, &str)] = &[
    ("SystemRoot", r"C:\WINDOWS"),
    ("windir", r"C:\WINDOWS"),
    ("SystemDrive", "C:"),
    ("ProgramFiles", r"C:\Program Files"),
];

/// Reads an environment block (`NAME=VALUE\0 ... \0`) from guest memory.
fn read_environment(k: &Kernel, env: u64) -> KResult<Vec<(String, String)>> {
    if env == 0 {
        return Ok(SYSTEM_ENVIRONMENT
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect());
    }
    let mut out = Vec::new();
    let mut at = env;
    for _ in 0..1024 {
        let units = crt::read_str(k, at, CharSize::Wide)?;
        if units.is_empty() {
            break;
        }
        at += (units.len() as u64 + 1) * 2;
        let text = String::from_utf16_lossy(&units);
        // Entries such as "=C:=C:\" (name starting with '=') are kept whole as names.
        if let Some(eq) = text[1..].find('=').map(|i| i + 1) {
            out.push((text[..eq].to_string(), text[eq + 1..].to_string()));
        }
    }
    Ok(out)
}

/// RtlExpandEnvironmentStrings semantics: `%NAME%` replaced by the variable's value
/// (case-insensitive name); unknown references stay as they are.
pub fn expand_environment(text: &[u16], env: &[(String, String)]) -> Vec<u16> {
    let pct = u16::from(b'%');
    let mut out = Vec::with_capacity(text.len());
    let mut i = 0;
    while i < text.len() {
        if text[i] == pct {
            if let Some(len) = text[i + 1..].iter().position(|&u| u == pct) {
                let name = String::from_utf16_lossy(&text[i + 1..i + 1 + len]);
                if let Some((_, v)) = env.iter().find(|(n, _)| names_equal(n, &name)) {
                    out.extend(v.encode_utf16());
                } else {
                    out.extend_from_slice(&text[i..i + len + 2]);
                }
                i += len + 2;
                continue;
            }
        }
        out.push(text[i]);
        i += 1;
    }
    out
}

/// Guest bytes of a default value: DefaultLength, or for string types the length of the strings
/// (terminators included) when DefaultLength is 0.
fn read_default_data(k: &Kernel, kind: u32, data: u64, length: u32) -> KResult<Vec<u8>> {
    if length > 0 {
        return crt::read_guest(k, data, u64::from(length));
    }
    if data == 0 {
        return Ok(Vec::new());
    }
    let units = match kind {
        reg_type::SZ | reg_type::EXPAND_SZ => crt::str_len(k, data, CharSize::Wide)? + 1,
        reg_type::MULTI_SZ => {
            let mut n = 0;
            loop {
                let len = crt::str_len(k, data + n * 2, CharSize::Wide)?;
                n += len + 1;
                if len == 0 {
                    break;
                }
            }
            n
        }
        _ => 0,
    };
    crt::read_guest(k, data, units * 2)
}

/// Pool tag of the temporaries RtlQueryRegistryValues hands to query routines ('Rqrv').
const TAG_QUERY: u32 = u32::from_le_bytes(*b"Rqrv");

/// RTL_QUERY_REGISTRY_DIRECT: stores a value at EntryContext (UNICODE_STRING for strings, the bytes
/// for up to a ULONG, else a buffer headed by its signed size).
fn query_direct(
    k: &mut Kernel,
    kind: u32,
    data: &[u8],
    dest: u64,
    owner: &str,
) -> KResult<NtStatus> {
    if RegValue::is_string_type(kind) {
        let len = data.len().min(0xFFFF);
        let mut s = rtl::read_counted(k, dest, CharSize::Wide)?;
        if s.buffer == 0 {
            s.buffer = ex::allocate(k, len as u64, rtl_string_tag(), owner.to_string())?;
            s.maximum_length = len as u16;
        } else if len > usize::from(s.maximum_length) {
            return Ok(STATUS_BUFFER_TOO_SMALL);
        }
        k.m.mem.write_bytes(s.buffer, &data[..len])?;
        s.length = (len as u16).saturating_sub(2);
        rtl::write_counted(k, dest, CharSize::Wide, s)?;
    } else if data.len() <= 4 {
        if !data.is_empty() {
            k.m.mem.write_bytes(dest, data)?;
        }
    } else {
        let size = k.m.mem.read_u32(dest)? as i32;
        if size < 0 {
            if (size.unsigned_abs() as usize) < data.len() {
                return Ok(STATUS_BUFFER_TOO_SMALL);
            }
            k.m.mem.write_bytes(dest, data)?;
        } else if (size as usize) < data.len() + 8 {
            return Ok(STATUS_BUFFER_TOO_SMALL);
        } else {
            k.m.mem.write_u32(dest, data.len() as u32)?;
            k.m.mem.write_u32(dest + 4, kind)?;
            k.m.mem.write_bytes(dest + 8, data)?;
        }
    }
    Ok(STATUS_SUCCESS)
}

/// Tag of string buffers Rtl allocates for drivers (freed with RtlFreeUnicodeString).
fn rtl_string_tag() -> u32 {
    u32::from_le_bytes(*b"Ustr")
}

/// Calls an entry's query routine with guest copies of the name and data.
fn call_query_routine(
    k: &mut Kernel,
    e: &QueryEntry,
    name: &QueryName,
    kind: u32,
    data: &[u8],
    context: u64,
) -> KResult<NtStatus> {
    let owner = "ntoskrnl.exe".to_string();
    let (name_ptr, name_block) = match name {
        QueryName::Guest(p) => (*p, None),
        QueryName::Host(n) => {
            let units: Vec<u16> = n.encode_utf16().collect();
            let p = ex::allocate(k, (units.len() as u64 + 1) * 2, TAG_QUERY, owner.clone())?;
            crt::write_str(k, p, CharSize::Wide, &units)?;
            (p, Some(p))
        }
    };
    let data_ptr = ex::allocate(k, data.len().max(2) as u64, TAG_QUERY, owner)?;
    k.m.mem.write_bytes(data_ptr, data)?;
    let result = k.call_guest(
        e.routine,
        &[
            name_ptr,
            u64::from(kind),
            data_ptr,
            data.len() as u64,
            context,
            e.entry_context,
        ],
    );
    ex::free(k, data_ptr, None)?;
    if let Some(p) = name_block {
        ex::free(k, p, None)?;
    }
    Ok(result? as NtStatus)
}

/// RtlpCallQueryRegistryRoutine: one table entry applied to one value (`None`: the value does not
/// exist), with defaults, REG_MULTI_SZ splitting and REG_EXPAND_SZ expansion.
fn apply_query_entry(
    k: &mut Kernel,
    e: &QueryEntry,
    value: Option<(String, RegValue)>,
    context: u64,
    environment: u64,
    owner: &str,
) -> KResult<NtStatus> {
    use query_flags::*;
    let direct = e.flags & DIRECT != 0;
    let default_type = if e.flags & TYPECHECK != 0 {
        e.default_type & 0x00FF_FFFF
    } else {
        e.default_type
    };
    let use_default = match &value {
        None => true,
        Some((_, v)) => v.kind == reg_type::NONE || (v.data.is_empty() && v.kind == default_type),
    };
    let (name, mut kind, mut data) = if use_default {
        if default_type == reg_type::NONE {
            return Ok(if e.flags & REQUIRED != 0 {
                STATUS_OBJECT_NAME_NOT_FOUND
            } else {
                STATUS_SUCCESS
            });
        }
        let data = read_default_data(k, default_type, e.default_data, e.default_length)?;
        (QueryName::Guest(e.name), default_type, data)
    } else {
        let (stored, v) = value.unwrap_or_default();
        let name = if direct {
            QueryName::Guest(e.name)
        } else {
            QueryName::Host(stored)
        };
        let mut data = v.data;
        if v.kind == reg_type::MULTI_SZ {
            // The query adds a terminator, so an unterminated list still ends.
            data.extend([0, 0]);
        }
        (name, v.kind, data)
    };
    if direct {
        if e.flags & TYPECHECK != 0 {
            let expected = e.default_type >> 24;
            if expected != reg_type::NONE && kind != expected {
                return Ok(STATUS_OBJECT_TYPE_MISMATCH);
            }
        } else if e.flags & NOSTRING != 0 && RegValue::is_string_type(kind) {
            return Ok(if e.flags & REQUIRED != 0 {
                STATUS_OBJECT_NAME_NOT_FOUND
            } else {
                STATUS_SUCCESS
            });
        }
    }
    let normalize = |s: NtStatus| {
        if s == STATUS_BUFFER_TOO_SMALL {
            STATUS_SUCCESS
        } else {
            s
        }
    };
    if e.flags & NOEXPAND == 0 {
        if kind == reg_type::MULTI_SZ {
            // One REG_SZ call per string, each with its terminator; the last two units (the empty
            // string ending the list) start no string.
            let units = units_of(&data);
            let end = units.len().saturating_sub(2);
            let mut status = STATUS_SUCCESS;
            let mut s = 0;
            let mut entry_context = e.entry_context;
            while s < end {
                let start = s;
                while s < units.len() && units[s] != 0 {
                    s += 1;
                }
                s = (s + 1).min(units.len());
                let piece: Vec<u8> = units[start..s]
                    .iter()
                    .flat_map(|u| u.to_le_bytes())
                    .collect();
                status = if direct {
                    let st = query_direct(k, reg_type::SZ, &piece, entry_context, owner)?;
                    // Windows moves the table's EntryContext on to the next UNICODE_STRING.
                    entry_context += k.layout.unicode_string_size;
                    let at = e.at + k.layout.rtl_query_registry_table_entry_context;
                    k.write_ptr(at, entry_context)?;
                    st
                } else {
                    call_query_routine(k, e, &name, reg_type::SZ, &piece, context)?
                };
                status = normalize(status);
                if !status::nt_success(status) {
                    break;
                }
            }
            return Ok(status);
        }
        if kind == reg_type::EXPAND_SZ && data.len() >= 2 {
            let units = units_of(&data);
            let body = &units[..units.len() - 1];
            if body.contains(&u16::from(b'%')) {
                let env = read_environment(k, environment)?;
                let text_end = body.iter().position(|&u| u == 0).unwrap_or(body.len());
                let mut expanded = expand_environment(&body[..text_end], &env);
                expanded.push(0);
                data = expanded.iter().flat_map(|u| u.to_le_bytes()).collect();
                kind = reg_type::SZ;
            }
        }
    }
    let status = if direct {
        query_direct(k, kind, &data, e.entry_context, owner)?
    } else {
        call_query_routine(k, e, &name, kind, &data, context)?
    };
    Ok(normalize(status))
}

/// RtlQueryRegistryValues(RelativeTo, Path, QueryTable, Context, Environment).
pub fn rtl_query_registry_values(
    k: &mut Kernel,
    relative: u32,
    path: u64,
    table: u64,
    context: u64,
    environment: u64,
) -> KResult<NtStatus> {
    use query_flags::*;
    let owner = k.caller_image();
    let base = match rtl_key_path(k, relative, path)? {
        Ok(p) => p,
        Err(s) => return Ok(s),
    };
    if let Err(e) = backend(k).key_info(&base) {
        return Ok(if relative & relative_to::HANDLE != 0 {
            handle_error(e)
        } else {
            e.status()
        });
    }
    let mut current = base.clone();
    let mut at = table;
    let mut status = STATUS_SUCCESS;
    loop {
        let e = read_query_entry(k, at)?;
        if e.routine == 0 && e.flags & (SUBKEY | DIRECT) == 0 {
            break;
        }
        if e.flags & DIRECT != 0 && (e.name == 0 || e.flags & SUBKEY != 0 || e.routine != 0) {
            status = STATUS_INVALID_PARAMETER;
            break;
        }
        if e.flags & (TOPKEY | SUBKEY) != 0 {
            current = base.clone();
        }
        let mut enumerate = false;
        if e.flags & SUBKEY != 0 {
            if e.name == 0 {
                status = STATUS_INVALID_PARAMETER;
            } else {
                let sub = join_path(&base, &read_wide(k, e.name)?);
                match backend(k).key_info(&sub) {
                    Ok(_) => {
                        current = sub;
                        enumerate = e.routine != 0;
                        status = STATUS_SUCCESS;
                    }
                    Err(err) => status = err.status(),
                }
            }
        } else if e.name != 0 {
            let name = read_wide(k, e.name)?;
            match backend(k).query_value(&current, &name) {
                Err(err) => status = err.status(),
                Ok(value) => {
                    let found = value.is_some();
                    status = apply_query_entry(k, &e, value, context, environment, &owner)?;
                    if status::nt_success(status) && found && e.flags & DELETE != 0 {
                        let _ = backend(k).delete_value(&current, &name);
                    }
                }
            }
        } else if e.flags & NOVALUE != 0 {
            status = k.call_guest(
                e.routine,
                &[0, u64::from(reg_type::NONE), 0, 0, context, e.entry_context],
            )? as NtStatus;
        } else {
            enumerate = true;
        }
        if enumerate {
            let mut index = 0;
            loop {
                let value = match backend(k).enum_value(&current, index) {
                    Ok(v) => v,
                    Err(err) => {
                        status = err.status();
                        break;
                    }
                };
                let Some((name, v)) = value else {
                    status = if index == 0 && e.flags & REQUIRED != 0 {
                        STATUS_OBJECT_NAME_NOT_FOUND
                    } else {
                        STATUS_SUCCESS
                    };
                    break;
                };
                status = apply_query_entry(
                    k,
                    &e,
                    Some((name.clone(), v)),
                    context,
                    environment,
                    &owner,
                )?;
                if !status::nt_success(status) {
                    break;
                }
                if e.flags & DELETE != 0 && backend(k).delete_value(&current, &name) == Ok(true) {
                    continue;
                }
                index += 1;
            }
        }
        if !status::nt_success(status) {
            break;
        }
        at += k.layout.rtl_query_registry_table_size;
    }
    Ok(status)
}

/// Opens (creating the last component if missing) the key an Rtl write call names.
fn rtl_create_path(k: &mut Kernel, relative: u32, path: u64) -> KResult<Result<String, NtStatus>> {
    let full = match rtl_key_path(k, relative, path)? {
        Ok(p) => p,
        Err(s) => return Ok(Err(s)),
    };
    if relative & relative_to::HANDLE != 0 {
        return Ok(Ok(full));
    }
    Ok(match backend(k).create_key(&full, "") {
        Ok(_) => Ok(full),
        Err(e) => Err(e.status()),
    })
}

/// RtlWriteRegistryValue(RelativeTo, Path, ValueName, ValueType, ValueData, ValueLength).
pub fn rtl_write_registry_value(
    k: &mut Kernel,
    relative: u32,
    path: u64,
    value_name: u64,
    kind: u32,
    data: u64,
    length: u32,
) -> KResult<NtStatus> {
    let key = match rtl_create_path(k, relative, path)? {
        Ok(p) => p,
        Err(s) => return Ok(s),
    };
    let name = read_wide(k, value_name)?;
    let bytes = if length > 0 {
        crt::read_guest(k, data, u64::from(length))?
    } else {
        Vec::new()
    };
    Ok(
        match backend(k).set_value(&key, &name, &RegValue::new(kind, bytes)) {
            Ok(()) => STATUS_SUCCESS,
            Err(e) => handle_error(e),
        },
    )
}

/// RtlDeleteRegistryValue(RelativeTo, Path, ValueName).
pub fn rtl_delete_registry_value(
    k: &mut Kernel,
    relative: u32,
    path: u64,
    value_name: u64,
) -> KResult<NtStatus> {
    let key = match rtl_create_path(k, relative, path)? {
        Ok(p) => p,
        Err(s) => return Ok(s),
    };
    let name = read_wide(k, value_name)?;
    Ok(match backend(k).delete_value(&key, &name) {
        Ok(true) => STATUS_SUCCESS,
        Ok(false) => STATUS_OBJECT_NAME_NOT_FOUND,
        Err(e) => handle_error(e),
    })
}

/// RtlCreateRegistryKey(RelativeTo, Path).
pub fn rtl_create_registry_key(k: &mut Kernel, relative: u32, path: u64) -> KResult<NtStatus> {
    Ok(match rtl_create_path(k, relative, path)? {
        Ok(_) => STATUS_SUCCESS,
        Err(s) => s,
    })
}

/// RtlCheckRegistryKey(RelativeTo, Path).
pub fn rtl_check_registry_key(k: &mut Kernel, relative: u32, path: u64) -> KResult<NtStatus> {
    let key = match rtl_key_path(k, relative, path)? {
        Ok(p) => p,
        Err(s) => return Ok(s),
    };
    Ok(match backend(k).key_info(&key) {
        Ok(_) => STATUS_SUCCESS,
        Err(e) => e.status(),
    })
}

// ---------------------------------------------------------------------------------------------
// Plug and Play: device keys, properties, interfaces

/// PLUGPLAY_REGKEY_DEVICE.
pub const PLUGPLAY_REGKEY_DEVICE: u32 = 1;
/// PLUGPLAY_REGKEY_DRIVER.
pub const PLUGPLAY_REGKEY_DRIVER: u32 = 2;
/// PLUGPLAY_REGKEY_CURRENT_HWPROFILE.
pub const PLUGPLAY_REGKEY_CURRENT_HWPROFILE: u32 = 4;

const HW_PROFILE: &str = r"\Registry\Machine\System\CurrentControlSet\Hardware Profiles\Current\System\CurrentControlSet";

/// The driver key name (`{guid}\NNNN`) of a device instance: its `Driver` value; a device without
/// one gets a new key under its class (or the unknown class), as a null-driver install makes.
fn driver_key_name(b: &mut dyn RegistryBackend, instance: &str) -> RegResult<String> {
    let enum_key = enum_path(instance);
    if let Some(d) = b
        .query_value(&enum_key, "Driver")
        .ok()
        .flatten()
        .and_then(|(_, v)| v.as_str())
    {
        return Ok(d);
    }
    let guid = b
        .query_value(&enum_key, "ClassGUID")
        .ok()
        .flatten()
        .and_then(|(_, v)| v.as_str())
        .unwrap_or_else(|| GUID_DEVCLASS_UNKNOWN.to_string());
    let class_key = class_path(&guid);
    b.create_key_path(&class_key)?;
    let mut used = Vec::new();
    let mut i = 0;
    while let Some(sub) = b.enum_key(&class_key, i)? {
        used.push(sub.name);
        i += 1;
    }
    let n = (0..10000)
        .find(|n| !used.iter().any(|u| u == &format!("{n:04}")))
        .unwrap_or(9999);
    let driver = format!(r"{guid}\{n:04}");
    b.create_key_path(&class_path(&driver))?;
    b.create_key_path(&enum_key)?;
    b.set_value(&enum_key, "Driver", &RegValue::sz(&driver))?;
    Ok(driver)
}

/// IoOpenDeviceRegistryKey(DeviceObject, DevInstKeyType, DesiredAccess, DeviceRegKey).
pub fn io_open_device_registry_key(
    k: &mut Kernel,
    pdo: u64,
    key_type: u32,
    _access: u32,
    out: u64,
) -> KResult<NtStatus> {
    let Some(instance) = device_instance(k, pdo) else {
        return Ok(STATUS_INVALID_DEVICE_REQUEST);
    };
    let hw = key_type & PLUGPLAY_REGKEY_CURRENT_HWPROFILE != 0;
    let b = backend(k);
    let path = match key_type & !PLUGPLAY_REGKEY_CURRENT_HWPROFILE {
        PLUGPLAY_REGKEY_DEVICE => {
            if hw {
                format!(r"{HW_PROFILE}\Enum\{instance}")
            } else {
                format!(r"{}\Device Parameters", enum_path(&instance))
            }
        }
        PLUGPLAY_REGKEY_DRIVER => match driver_key_name(b, &instance) {
            Ok(d) if hw => format!(r"{HW_PROFILE}\Control\Class\{d}"),
            Ok(d) => class_path(&d),
            Err(e) => return Ok(e.status()),
        },
        _ => return Ok(STATUS_INVALID_PARAMETER),
    };
    if let Err(e) = b.create_key_path(&path) {
        return Ok(e.status());
    }
    let h = new_handle(k, path);
    k.write_ptr(out, h)?;
    Ok(STATUS_SUCCESS)
}

/// DRIVER_REGKEY_TYPE values of IoOpenDriverRegistryKey and the subkey of the driver's service key
/// each names.
const DRIVER_REGKEYS: [&str; 3] = [
    // DriverRegKeyParameters
    "Parameters",
    // DriverRegKeyPersistentState: the driver's own mutable state.
    "State",
    // DriverRegKeySharedPersistentState: state shared with other components.
    "SharedState",
];

/// IoOpenDriverRegistryKey(DriverObject, RegKeyType, DesiredAccess, Flags, DriverRegKey): opens
/// (creating it if missing) the Parameters, State or SharedState subkey of the driver's service
/// key. Flags is reserved (must be 0); an unknown type or a driver object the I/O manager did not
/// create is STATUS_INVALID_PARAMETER.
pub fn io_open_driver_registry_key(
    k: &mut Kernel,
    driver_object: u64,
    key_type: u32,
    _access: u32,
    flags: u32,
    out: u64,
) -> KResult<NtStatus> {
    let service =
        k.io.drivers
            .iter()
            .find(|d| d.object == driver_object)
            .map(|d| d.name.clone());
    let (Some(service), Some(subkey), 0) = (service, DRIVER_REGKEYS.get(key_type as usize), flags)
    else {
        return Ok(STATUS_INVALID_PARAMETER);
    };
    let path = format!(r"{}\{subkey}", service_path(&service));
    if let Err(e) = backend(k).create_key_path(&path) {
        return Ok(e.status());
    }
    let h = new_handle(k, path);
    k.write_ptr(out, h)?;
    Ok(STATUS_SUCCESS)
}

/// DEVICE_REGISTRY_PROPERTY values.
pub mod device_property {
    /// DevicePropertyDeviceDescription.
    pub const DEVICE_DESCRIPTION: u32 = 0;
    /// DevicePropertyHardwareID.
    pub const HARDWARE_ID: u32 = 1;
    /// DevicePropertyCompatibleIDs.
    pub const COMPATIBLE_IDS: u32 = 2;
    /// DevicePropertyClassName.
    pub const CLASS_NAME: u32 = 5;
    /// DevicePropertyClassGuid.
    pub const CLASS_GUID: u32 = 6;
    /// DevicePropertyDriverKeyName.
    pub const DRIVER_KEY_NAME: u32 = 7;
    /// DevicePropertyManufacturer.
    pub const MANUFACTURER: u32 = 8;
    /// DevicePropertyFriendlyName.
    pub const FRIENDLY_NAME: u32 = 9;
    /// DevicePropertyLocationInformation.
    pub const LOCATION_INFORMATION: u32 = 10;
    /// DevicePropertyPhysicalDeviceObjectName.
    pub const PHYSICAL_DEVICE_OBJECT_NAME: u32 = 11;
    /// DevicePropertyEnumeratorName.
    pub const ENUMERATOR_NAME: u32 = 15;
    /// DevicePropertyUINumber.
    pub const UI_NUMBER: u32 = 17;
    /// DevicePropertyInstallState.
    pub const INSTALL_STATE: u32 = 18;
    /// DevicePropertyRemovalPolicy.
    pub const REMOVAL_POLICY: u32 = 19;
    /// DevicePropertyContainerID (the last one).
    pub const CONTAINER_ID: u32 = 22;
}

/// The data of a device property, `None` if the device does not have it.
fn device_property_data(
    k: &mut Kernel,
    pdo: u64,
    instance: &str,
    property: u32,
) -> Option<Vec<u8>> {
    use device_property::*;
    let enum_key = enum_path(instance);
    let value_name = match property {
        DEVICE_DESCRIPTION => "DeviceDesc",
        HARDWARE_ID => "HardwareID",
        COMPATIBLE_IDS => "CompatibleIDs",
        CLASS_NAME => "Class",
        CLASS_GUID => "ClassGUID",
        DRIVER_KEY_NAME => "Driver",
        MANUFACTURER => "Mfg",
        FRIENDLY_NAME => "FriendlyName",
        LOCATION_INFORMATION => "LocationInformation",
        UI_NUMBER => "UINumber",
        PHYSICAL_DEVICE_OBJECT_NAME => {
            let name = k.io.devices.get(&pdo).and_then(|d| d.name.clone())?;
            return Some(utf16z_bytes(&name));
        }
        ENUMERATOR_NAME => {
            let enumerator = instance.split('\\').next().unwrap_or(instance);
            return Some(utf16z_bytes(enumerator));
        }
        INSTALL_STATE => {
            // CONFIGFLAG_REINSTALL -> InstallStateNeedsReinstall, CONFIGFLAG_FAILEDINSTALL ->
            // InstallStateFailedInstall, else InstallStateInstalled.
            let flags = backend(k)
                .query_value(&enum_key, "ConfigFlags")
                .ok()
                .flatten()
                .and_then(|(_, v)| v.as_dword())
                .unwrap_or(0);
            let state: u32 = if flags & 0x40 != 0 {
                2
            } else if flags & 0x20 != 0 {
                1
            } else {
                0
            };
            return Some(state.to_le_bytes().to_vec());
        }
        // CM_REMOVAL_POLICY_EXPECT_NO_REMOVAL: root devices do not come and go.
        REMOVAL_POLICY => return Some(1u32.to_le_bytes().to_vec()),
        _ => return None,
    };
    match backend(k).query_value(&enum_key, value_name) {
        Ok(Some((_, v))) => Some(v.data),
        // A root device nobody installed still has its device ID as hardware ID.
        _ if property == HARDWARE_ID => {
            let id = instance.rsplit_once('\\').map_or(instance, |(id, _)| id);
            Some(RegValue::multi_sz(&[id]).data)
        }
        _ => None,
    }
}

/// IoGetDeviceProperty(DeviceObject, DeviceProperty, BufferLength, PropertyBuffer, ResultLength).
pub fn io_get_device_property(
    k: &mut Kernel,
    pdo: u64,
    property: u32,
    length: u32,
    buffer: u64,
    result_length: u64,
) -> KResult<NtStatus> {
    let Some(instance) = device_instance(k, pdo) else {
        return Ok(STATUS_INVALID_DEVICE_REQUEST);
    };
    if property > device_property::CONTAINER_ID {
        return Ok(STATUS_INVALID_PARAMETER_2);
    }
    let Some(data) = device_property_data(k, pdo, &instance, property) else {
        return Ok(STATUS_OBJECT_NAME_NOT_FOUND);
    };
    write_u32_opt(k, result_length, data.len() as u32)?;
    if (length as usize) < data.len() {
        return Ok(STATUS_BUFFER_TOO_SMALL);
    }
    k.m.mem.write_bytes(buffer, &data)?;
    Ok(STATUS_SUCCESS)
}

/// IoRegisterDeviceInterface(PhysicalDeviceObject, InterfaceClassGuid, ReferenceString,
/// SymbolicLinkName): `\??\ROOT#ID#0000#{guid}[\Ref]`, recorded under `Control\DeviceClasses`.
pub fn io_register_device_interface(
    k: &mut Kernel,
    pdo: u64,
    guid: u64,
    reference: u64,
    link_out: u64,
) -> KResult<NtStatus> {
    let Some(instance) = device_instance(k, pdo) else {
        return Ok(STATUS_INVALID_DEVICE_REQUEST);
    };
    let mut bytes = [0u8; 16];
    k.m.mem.read_bytes(guid, &mut bytes)?;
    let guid = rtl::guid_text(&bytes);
    let reference = read_name(k, reference)?;
    let mangled = instance.replace('\\', "#");
    let suffix = if reference.is_empty() {
        String::new()
    } else {
        format!(r"\{reference}")
    };
    let link = format!(r"\??\{mangled}#{guid}{suffix}");
    let interface_key =
        format!(r"{CURRENT_CONTROL_SET}\Control\DeviceClasses\{guid}\##?#{mangled}#{guid}");
    let ref_key = format!(r"{interface_key}\#{reference}");
    let b = backend(k);
    let written = b
        .create_key_path(&ref_key)
        .and_then(|()| b.set_value(&interface_key, "DeviceInstance", &RegValue::sz(&instance)))
        .and_then(|()| {
            b.set_value(
                &ref_key,
                "SymbolicLink",
                &RegValue::sz(&format!(r"\\?\{mangled}#{guid}{suffix}")),
            )
        });
    if let Err(e) = written {
        return Ok(e.status());
    }
    let r = k.extension::<Registry>();
    // Registering again (a new PDO for the same instance) keeps the state, updates the PDO.
    r.interfaces
        .entry(io::normalize_name(&link))
        .and_modify(|i| i.pdo = pdo)
        .or_insert_with(|| Interface {
            pdo,
            link: link.clone(),
            key: ref_key,
            class: guid.clone(),
            enabled: false,
        });
    let owner = k.caller_image();
    let units: Vec<u16> = link.encode_utf16().collect();
    let len = units.len() as u64 * 2;
    let buffer = ex::allocate(k, len + 2, rtl_string_tag(), owner)?;
    crt::write_str(k, buffer, CharSize::Wide, &units)?;
    rtl::write_unicode_string_struct(k, link_out, buffer, len as u16, len as u16 + 2)?;
    Ok(STATUS_SUCCESS)
}

/// IoSetDeviceInterfaceState(SymbolicLinkName, Enable): enabling creates the symbolic link to the
/// PDO (STATUS_OBJECT_NAME_EXISTS if it is enabled already), disabling removes it.
pub fn io_set_device_interface_state(k: &mut Kernel, link: u64, enable: bool) -> KResult<NtStatus> {
    let name = rtl::read_unicode_string(k, link)?;
    let key = io::normalize_name(&name);
    let Some(iface) = k.extension::<Registry>().interfaces.get(&key).cloned() else {
        return Ok(STATUS_OBJECT_NAME_NOT_FOUND);
    };
    if iface.enabled == enable {
        return Ok(if enable {
            STATUS_OBJECT_NAME_EXISTS
        } else {
            STATUS_OBJECT_NAME_NOT_FOUND
        });
    }
    if enable {
        let Some(target) = k.io.devices.get(&iface.pdo).and_then(|d| d.name.clone()) else {
            return Ok(STATUS_INVALID_DEVICE_REQUEST);
        };
        let st = io::add_symbolic_link_by_name(k, &iface.link, &target);
        if !status::nt_success(st) {
            return Ok(st);
        }
    } else {
        io::remove_symbolic_link_by_name(k, &iface.link);
    }
    let control = format!(r"{}\Control", iface.key);
    let b = backend(k);
    let linked = b
        .create_key_path(&control)
        .and_then(|()| b.set_value(&control, "Linked", &RegValue::dword(u32::from(enable))));
    if let Err(e) = linked {
        tracing::warn!(target: "ica::registry", "cannot record the state of {}: {e}", iface.link);
    }
    if let Some(i) = k.extension::<Registry>().interfaces.get_mut(&key) {
        i.enabled = enable;
    }
    crate::pnp::interface_changed(k, &iface.class, &iface.link, enable)?;
    Ok(STATUS_SUCCESS)
}

/// The symbolic links of the enabled device interfaces of class `class` (`{GUID}` text, any case).
pub(crate) fn enabled_interfaces(k: &mut Kernel, class: &str) -> Vec<String> {
    let mut links: Vec<String> = k
        .extension::<Registry>()
        .interfaces
        .values()
        .filter(|i| i.enabled && i.class.eq_ignore_ascii_case(class))
        .map(|i| i.link.clone())
        .collect();
    links.sort();
    links
}

/// The registered interface whose symbolic link is the UNICODE_STRING at `link`.
fn registered_interface(k: &mut Kernel, link: u64) -> KResult<Option<Interface>> {
    let name = rtl::read_unicode_string(k, link)?;
    Ok(k.extension::<Registry>()
        .interfaces
        .get(&io::normalize_name(&name))
        .cloned())
}

/// IoOpenDeviceInterfaceRegistryKey(SymbolicLinkName, DesiredAccess, DeviceInterfaceKey): opens
/// the interface's `Device Parameters` key (under its `#RefString` key in `Control\DeviceClasses`),
/// creating it if missing. An unregistered link is STATUS_OBJECT_NAME_NOT_FOUND.
pub fn io_open_device_interface_registry_key(
    k: &mut Kernel,
    link: u64,
    _access: u32,
    out: u64,
) -> KResult<NtStatus> {
    let Some(iface) = registered_interface(k, link)? else {
        return Ok(STATUS_OBJECT_NAME_NOT_FOUND);
    };
    let path = format!(r"{}\Device Parameters", iface.key);
    if let Err(e) = backend(k).create_key_path(&path) {
        return Ok(e.status());
    }
    let h = new_handle(k, path);
    k.write_ptr(out, h)?;
    Ok(STATUS_SUCCESS)
}

/// STATUS_NOT_FOUND: the property to delete does not exist.
const STATUS_NOT_FOUND: NtStatus = 0xC000_0225;
/// LOCALE_NEUTRAL.
const LOCALE_NEUTRAL: u32 = 0;
/// DEVPROP_TYPE_EMPTY: deletes the property.
const DEVPROP_TYPE_EMPTY: u32 = 0;
/// The registry type of a property value: the DEVPROPTYPE in the low word, 0xFFFF above it.
const DEVPROP_VALUE_TYPE: u32 = 0xFFFF_0000;

/// IoSetDeviceInterfacePropertyData(SymbolicLinkName, PropertyKey, Lcid, Flags, Type, Size,
/// Data): stores the property of a registered interface in its key, at
/// `Properties\{fmtid}\NNNN` (the property ID in four hex digits) as the unnamed value of type
/// 0xFFFF0000 | Type; a NULL Data (or DEVPROP_TYPE_EMPTY) deletes it (STATUS_NOT_FOUND if there
/// is none). Every property persists (the store is persistent; Flags is not needed). Only
/// language-neutral values are kept: another LCID is STATUS_NOT_SUPPORTED.
#[allow(clippy::too_many_arguments)]
pub fn io_set_device_interface_property_data(
    k: &mut Kernel,
    link: u64,
    key: u64,
    lcid: u32,
    _flags: u32,
    kind: u32,
    size: u32,
    data: u64,
) -> KResult<NtStatus> {
    let Some(iface) = registered_interface(k, link)? else {
        return Ok(STATUS_OBJECT_NAME_NOT_FOUND);
    };
    if key == 0 {
        return Ok(STATUS_INVALID_PARAMETER);
    }
    if lcid != LOCALE_NEUTRAL {
        return Ok(STATUS_NOT_SUPPORTED);
    }
    let mut fmtid = [0u8; 16];
    k.m.mem.read_bytes(key, &mut fmtid)?;
    let pid = k.m.mem.read_u32(key + 16)?;
    let path = format!(
        r"{}\Properties\{}\{pid:04X}",
        iface.key,
        rtl::guid_text(&fmtid)
    );
    if data == 0 || kind == DEVPROP_TYPE_EMPTY {
        let deleted = match backend(k).delete_value(&path, "") {
            Ok(deleted) => deleted,
            Err(RegError::NotFound(_)) => false,
            Err(e) => return Ok(e.status()),
        };
        return Ok(if deleted {
            STATUS_SUCCESS
        } else {
            STATUS_NOT_FOUND
        });
    }
    let mut bytes = vec![0u8; size as usize];
    k.m.mem.read_bytes(data, &mut bytes)?;
    let b = backend(k);
    let written = b.create_key_path(&path).and_then(|()| {
        b.set_value(
            &path,
            "",
            &RegValue::new(DEVPROP_VALUE_TYPE | (kind & 0xFFFF), bytes),
        )
    });
    Ok(match written {
        Ok(()) => STATUS_SUCCESS,
        Err(e) => e.status(),
    })
}

pub(crate) static EXPORTS: &[Export] = export_table![
    stdcall ZwCreateKey => zw_create_key(key_handle: u64, desired_access: u32, object_attributes: u64, title_index: u32, class: u64, create_options: u32, disposition: u64) @ irql::ZW_PASSIVE;
    stdcall ZwOpenKey => zw_open_key(key_handle: u64, desired_access: u32, object_attributes: u64) @ irql::ZW_PASSIVE;
    stdcall ZwOpenKeyEx => zw_open_key_ex(key_handle: u64, desired_access: u32, object_attributes: u64, open_options: u32) @ irql::PASSIVE;
    stdcall ZwQueryValueKey => zw_query_value_key(key_handle: u64, value_name: u64, key_value_information_class: u32, key_value_information: u64, length: u32, result_length: u64) @ irql::ZW_PASSIVE;
    stdcall ZwSetValueKey => zw_set_value_key(key_handle: u64, value_name: u64, title_index: u32, value_type: u32, data: u64, data_size: u32) @ irql::ZW_PASSIVE;
    stdcall ZwDeleteValueKey => zw_delete_value_key(key_handle: u64, value_name: u64) @ irql::PASSIVE;
    stdcall ZwEnumerateKey => zw_enumerate_key(key_handle: u64, index: u32, key_information_class: u32, key_information: u64, length: u32, result_length: u64) @ irql::ZW_PASSIVE;
    stdcall ZwEnumerateValueKey => zw_enumerate_value_key(key_handle: u64, index: u32, key_value_information_class: u32, key_value_information: u64, length: u32, result_length: u64) @ irql::ZW_PASSIVE;
    stdcall ZwQueryKey => zw_query_key(key_handle: u64, key_information_class: u32, key_information: u64, length: u32, result_length: u64) @ irql::ZW_PASSIVE;
    stdcall ZwDeleteKey => zw_delete_key(key_handle: u64) @ irql::ZW_PASSIVE;
    stdcall ZwFlushKey => zw_flush_key(key_handle: u64) @ irql::ZW_PASSIVE;
    stdcall ZwClose => zw_close(handle: u64) @ irql::ZW_PASSIVE;
    stdcall RtlQueryRegistryValues => rtl_query_registry_values(relative_to: u32, path: u64, query_table: u64, context: u64, environment: u64) @ irql::PASSIVE;
    stdcall RtlWriteRegistryValue => rtl_write_registry_value(relative_to: u32, path: u64, value_name: u64, value_type: u32, value_data: u64, value_length: u32) @ irql::PASSIVE;
    stdcall RtlDeleteRegistryValue => rtl_delete_registry_value(relative_to: u32, path: u64, value_name: u64) @ irql::RTL_PASSIVE;
    stdcall RtlCreateRegistryKey => rtl_create_registry_key(relative_to: u32, path: u64) @ irql::PASSIVE;
    stdcall RtlCheckRegistryKey => rtl_check_registry_key(relative_to: u32, path: u64) @ irql::PASSIVE;
    stdcall IoOpenDriverRegistryKey => io_open_driver_registry_key(driver_object: u64, reg_key_type: u32, desired_access: u32, flags: u32, driver_reg_key: u64) @ irql::PASSIVE;
    stdcall IoOpenDeviceRegistryKey => io_open_device_registry_key(device_object: u64, dev_inst_key_type: u32, desired_access: u32, device_reg_key: u64) @ irql::PASSIVE;
    stdcall IoGetDeviceProperty => io_get_device_property(device_object: u64, device_property: u32, buffer_length: u32, property_buffer: u64, result_length: u64) @ irql::PASSIVE;
    stdcall IoRegisterDeviceInterface => io_register_device_interface(physical_device_object: u64, interface_class_guid: u64, reference_string: u64, symbolic_link_name: u64) @ irql::IO_PASSIVE3;
    stdcall IoSetDeviceInterfaceState => io_set_device_interface_state(symbolic_link_name: u64, enable: bool) @ irql::IO_PASSIVE1;
    stdcall IoSetDeviceInterfacePropertyData => io_set_device_interface_property_data(symbolic_link_name: u64, property_key: u64, lcid: u32, flags: u32, type_: u32, size: u32, data: u64) @ irql::PASSIVE;
    stdcall IoOpenDeviceInterfaceRegistryKey => io_open_device_interface_registry_key(symbolic_link_name: u64, desired_access: u32, device_interface_key: u64) @ irql::PASSIVE;
];

#[cfg(test)]
mod tests {
    use dbt::Arch;

    use super::*;
    use crate::crt::test_support::Guest;

    const ARCHES: [Arch; 2] = [Arch::X86, Arch::X64];
    const SERVICES: &str = r"\Registry\Machine\System\CurrentControlSet\Services";

    #[test]
    fn memory_backend_is_case_insensitive_and_case_preserving() {
        let mut r = MemoryRegistry::new();
        let key = format!(r"{SERVICES}\IcaTest");
        assert_eq!(r.create_key(&key, ""), Ok(true));
        assert_eq!(r.create_key(&key.to_uppercase(), ""), Ok(false));
        assert_eq!(
            r.key_info(&key.to_lowercase()).map(|i| i.name),
            Ok("IcaTest".to_string())
        );
        r.set_value(&key, "Speed", &RegValue::dword(10)).unwrap();
        r.set_value(&key, "Name", &RegValue::sz("x")).unwrap();
        r.set_value(&key, "SPEED", &RegValue::dword(20)).unwrap();
        assert_eq!(
            r.query_value(&key, "speed"),
            Ok(Some(("Speed".to_string(), RegValue::dword(20)))),
            "replaced in place, first name kept"
        );
        assert_eq!(
            r.enum_value(&key, 0).unwrap().map(|(n, _)| n),
            Some("Speed".to_string())
        );
        assert_eq!(r.delete_value(&key, "NAME"), Ok(true));
        assert_eq!(r.delete_value(&key, "NAME"), Ok(false));
        for name in ["gamma", "Beta", "ALPHA"] {
            r.create_key(&format!(r"{key}\{name}"), "").unwrap();
        }
        let names: Vec<String> = (0..)
            .map_while(|i| r.enum_key(&key, i).unwrap())
            .map(|i| i.name)
            .collect();
        assert_eq!(names, ["ALPHA", "Beta", "gamma"]);
        assert_eq!(r.delete_key(&key), Err(RegError::CannotDelete(key.clone())));
        assert_eq!(
            r.create_key(&format!(r"{key}\missing\child"), ""),
            Err(RegError::NotFound(format!(r"{key}\missing\child")))
        );
        assert!(matches!(
            r.create_key(r"\Registry\NewHive", ""),
            Err(RegError::AccessDenied(_))
        ));
        assert!(matches!(
            r.delete_key(r"\Registry\Machine"),
            Err(RegError::CannotDelete(_))
        ));
        assert!(r
            .key_info(r"\Registry\Machine\System\ControlSet001\Services\IcaTest")
            .is_ok());
    }

    #[test]
    fn environment_expansion() {
        let env = vec![("SystemRoot".to_string(), r"C:\WINDOWS".to_string())];
        let text: Vec<u16> = r"%systemroot%\x %Unknown% 50%".encode_utf16().collect();
        assert_eq!(
            String::from_utf16_lossy(&expand_environment(&text, &env)),
            r"C:\WINDOWS\x %Unknown% 50%"
        );
    }

    fn ustr(g: &mut Guest, s: &str) -> u64 {
        let size = g.k.layout.unicode_string_size as usize;
        let us = g.zeroed(size);
        let buf = g.wstr(s);
        let len = s.encode_utf16().count() as u16 * 2;
        rtl::write_unicode_string_struct(&mut g.k, us, buf, len, len + 2).unwrap();
        us
    }

    fn attributes(g: &mut Guest, root: u64, name: &str) -> u64 {
        let l = g.k.layout;
        let oa = g.zeroed(l.object_attributes_size as usize);
        let name = ustr(g, name);
        g.k.m
            .mem
            .write_u32(oa, l.object_attributes_size as u32)
            .unwrap();
        g.k.write_ptr(oa + l.object_attributes_root_directory, root)
            .unwrap();
        g.k.write_ptr(oa + l.object_attributes_object_name, name)
            .unwrap();
        g.k.m
            .mem
            .write_u32(oa + l.object_attributes_attributes, 0x40)
            .unwrap();
        oa
    }

    fn status(v: KResult<u64>) -> NtStatus {
        v.expect("call") as NtStatus
    }

    #[test]
    fn zw_calls_follow_the_configuration_manager() {
        for arch in ARCHES {
            let mut g = Guest::new(arch);
            let out = g.zeroed(8);
            let disp = g.zeroed(4);
            let oa = attributes(&mut g, 0, &format!(r"{SERVICES}\IcaTest"));
            assert_eq!(
                status(g.call("ZwCreateKey", &[out, 0xF003F, oa, 0, 0, 0, disp])),
                STATUS_SUCCESS
            );
            assert_eq!(g.k.m.mem.read_u32(disp).unwrap(), REG_CREATED_NEW_KEY);
            let h = g.k.read_ptr(out).unwrap();
            let sub = attributes(&mut g, h, "PARAMETERS");
            assert_eq!(
                status(g.call("ZwCreateKey", &[out, 0, sub, 0, 0, 0, disp])),
                STATUS_SUCCESS
            );
            let p = g.k.read_ptr(out).unwrap();
            let oa2 = attributes(&mut g, 0, &format!(r"{SERVICES}\icatest\parameters"));
            assert_eq!(
                status(g.call("ZwCreateKey", &[out, 0, oa2, 0, 0, 0, disp])),
                STATUS_SUCCESS
            );
            assert_eq!(g.k.m.mem.read_u32(disp).unwrap(), REG_OPENED_EXISTING_KEY);
            let p2 = g.k.read_ptr(out).unwrap();

            let name = ustr(&mut g, "Speed");
            let data = g.bytes(&100u32.to_le_bytes());
            assert_eq!(
                status(g.call("ZwSetValueKey", &[p, name, 0, 4, data, 4])),
                STATUS_SUCCESS
            );
            // Partial information: 12 bytes of header + 4 of data.
            let buf = g.zeroed(64);
            let len = g.zeroed(4);
            let lower = ustr(&mut g, "SPEED");
            assert_eq!(
                status(g.call("ZwQueryValueKey", &[p2, lower, 2, buf, 64, len])),
                STATUS_SUCCESS
            );
            assert_eq!(g.k.m.mem.read_u32(len).unwrap(), 16);
            assert_eq!(g.k.m.mem.read_u32(buf + 4).unwrap(), 4);
            assert_eq!(g.k.m.mem.read_u32(buf + 12).unwrap(), 100);
            assert_eq!(
                status(g.call("ZwQueryValueKey", &[p2, lower, 2, buf, 11, len])),
                STATUS_BUFFER_TOO_SMALL
            );
            assert_eq!(g.k.m.mem.read_u32(len).unwrap(), 16);
            assert_eq!(
                status(g.call("ZwQueryValueKey", &[p2, lower, 2, buf, 12, len])),
                STATUS_BUFFER_OVERFLOW
            );
            // Full information: name "Speed" (10 bytes) at 20, data 4-aligned at 32.
            assert_eq!(
                status(g.call("ZwQueryValueKey", &[p2, lower, 1, buf, 64, len])),
                STATUS_SUCCESS
            );
            assert_eq!(g.k.m.mem.read_u32(len).unwrap(), 36);
            assert_eq!(g.k.m.mem.read_u32(buf + 8).unwrap(), 32);
            assert_eq!(g.read_wstr(buf + 20).get(..5), Some("Speed"));
            assert_eq!(g.k.m.mem.read_u32(buf + 32).unwrap(), 100);
            let missing = ustr(&mut g, "Nope");
            assert_eq!(
                status(g.call("ZwQueryValueKey", &[p2, missing, 2, buf, 64, len])),
                STATUS_OBJECT_NAME_NOT_FOUND
            );
            assert_eq!(
                status(g.call("ZwEnumerateValueKey", &[p2, 1, 0, buf, 64, len])),
                STATUS_NO_MORE_ENTRIES
            );

            // The key has a subkey now: it cannot be deleted; the subkey can.
            assert_eq!(status(g.call("ZwDeleteKey", &[h])), STATUS_CANNOT_DELETE);
            assert_eq!(status(g.call("ZwDeleteKey", &[p])), STATUS_SUCCESS);
            assert_eq!(
                status(g.call("ZwQueryValueKey", &[p2, lower, 2, buf, 64, len])),
                STATUS_KEY_DELETED,
                "every handle of a deleted key"
            );
            assert_eq!(
                status(g.call("ZwEnumerateKey", &[h, 0, 0, buf, 64, len])),
                STATUS_NO_MORE_ENTRIES
            );
            for handle in [p, p2, h] {
                assert_eq!(status(g.call("ZwClose", &[handle])), STATUS_SUCCESS);
            }
            assert_eq!(status(g.call("ZwClose", &[h])), STATUS_INVALID_HANDLE);
            assert_eq!(
                status(g.call("ZwQueryValueKey", &[0x1234, lower, 2, buf, 64, len])),
                STATUS_INVALID_HANDLE
            );
            let bad = attributes(&mut g, 0, &format!(r"{SERVICES}\Nope\Deeper"));
            assert_eq!(
                status(g.call("ZwCreateKey", &[out, 0, bad, 0, 0, 0, 0])),
                STATUS_OBJECT_NAME_NOT_FOUND
            );
            let relative = attributes(&mut g, 0, "Relative");
            assert_eq!(
                status(g.call("ZwOpenKey", &[out, 0, relative])),
                STATUS_OBJECT_PATH_SYNTAX_BAD
            );
            assert_eq!(open_handles(&mut g.k), 0);
        }
    }

    #[test]
    fn rtl_query_registry_values_direct() {
        for arch in ARCHES {
            let mut g = Guest::new(arch);
            let key = format!(r"{SERVICES}\IcaTest");
            let b = backend(&mut g.k);
            b.create_key(&key, "").unwrap();
            b.set_value(&key, "Speed", &RegValue::dword(7)).unwrap();
            b.set_value(&key, "Name", &RegValue::sz("Ica")).unwrap();
            b.set_value(&key, "Big", &RegValue::qword(0x1122_3344_5566_7788))
                .unwrap();
            let l = g.k.layout;
            let size = l.rtl_query_registry_table_size as usize;
            let table = g.zeroed(size * 5);
            let speed = g.zeroed(4);
            let name_us = g.zeroed(l.unicode_string_size as usize);
            let missing = g.bytes(&0xAAAA_AAAAu32.to_le_bytes());
            let default = g.bytes(&42u32.to_le_bytes());
            let big = g.bytes(&[0xF0, 0xFF, 0xFF, 0xFF, 0, 0, 0, 0, 0, 0, 0, 0]);
            let entries = [
                ("Speed", speed, 0, 0, 0),
                ("name", name_us, 0, 0, 0),
                ("Missing", missing, 4, default, 4),
                ("Big", big, 0, 0, 0),
            ];
            for (i, (name, ctx, dtype, ddata, dlen)) in entries.into_iter().enumerate() {
                let e = table + (i * size) as u64;
                let n = g.wstr(name);
                g.k.m
                    .mem
                    .write_u32(e + l.rtl_query_registry_table_flags, query_flags::DIRECT)
                    .unwrap();
                g.k.write_ptr(e + l.rtl_query_registry_table_name, n)
                    .unwrap();
                g.k.write_ptr(e + l.rtl_query_registry_table_entry_context, ctx)
                    .unwrap();
                g.k.m
                    .mem
                    .write_u32(e + l.rtl_query_registry_table_default_type, dtype)
                    .unwrap();
                g.k.write_ptr(e + l.rtl_query_registry_table_default_data, ddata)
                    .unwrap();
                g.k.m
                    .mem
                    .write_u32(e + l.rtl_query_registry_table_default_length, dlen)
                    .unwrap();
            }
            let path = g.wstr("IcaTest");
            assert_eq!(
                status(g.call(
                    "RtlQueryRegistryValues",
                    &[u64::from(relative_to::SERVICES), path, table, 0, 0]
                )),
                STATUS_SUCCESS
            );
            assert_eq!(g.k.m.mem.read_u32(speed).unwrap(), 7);
            assert_eq!(rtl::read_unicode_string(&g.k, name_us).unwrap(), "Ica");
            assert_eq!(g.k.m.mem.read_u32(missing).unwrap(), 42);
            assert_eq!(
                g.k.m.mem.read_u64(big).unwrap(),
                0x1122_3344_5566_7788,
                "a negative size asks for the bare data"
            );
            g.call("RtlFreeUnicodeString", &[name_us]).expect("free");

            // A required value that is missing fails the call.
            g.k.m
                .mem
                .write_u32(
                    table + 2 * size as u64 + l.rtl_query_registry_table_flags,
                    query_flags::DIRECT | query_flags::REQUIRED,
                )
                .unwrap();
            g.k.m
                .mem
                .write_u32(
                    table + 2 * size as u64 + l.rtl_query_registry_table_default_type,
                    0,
                )
                .unwrap();
            assert_eq!(
                status(g.call(
                    "RtlQueryRegistryValues",
                    &[u64::from(relative_to::SERVICES), path, table, 0, 0]
                )),
                STATUS_OBJECT_NAME_NOT_FOUND
            );
            let nokey = g.wstr("NoSuchService");
            assert_eq!(
                status(g.call(
                    "RtlQueryRegistryValues",
                    &[u64::from(relative_to::SERVICES), nokey, table, 0, 0]
                )),
                STATUS_OBJECT_NAME_NOT_FOUND
            );
        }
    }
}
