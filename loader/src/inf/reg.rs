//! Registry operations of AddReg and DelReg sections.
//!
//! `AddReg`: `reg-root, [subkey], [value-entry-name], [flags], [value[, value...]]`
//! `DelReg`: `reg-root, subkey, [value-entry-name], [flags], [value]`

use std::fmt;

use super::error::{InfError, InfWarning};
use super::model::parse_int;
use super::syntax::Line;

/// Value is binary (low bit of the type part of the flags).
pub const FLG_ADDREG_BINVALUETYPE: u32 = 0x0000_0001;
/// Do not replace an existing value.
pub const FLG_ADDREG_NOCLOBBER: u32 = 0x0000_0002;
/// Delete the value (AddReg).
pub const FLG_ADDREG_DELVAL: u32 = 0x0000_0004;
/// Append to a REG_MULTI_SZ (if the string is not there yet).
pub const FLG_ADDREG_APPEND: u32 = 0x0000_0008;
/// Create the key only; ignore the value.
pub const FLG_ADDREG_KEYONLY: u32 = 0x0000_0010;
/// Only replace a value that exists.
pub const FLG_ADDREG_OVERWRITEONLY: u32 = 0x0000_0020;
/// Use the 64-bit registry view.
pub const FLG_ADDREG_64BITKEY: u32 = 0x0000_1000;
/// Key only, shared meaning in AddReg and DelReg.
pub const FLG_ADDREG_KEYONLY_COMMON: u32 = 0x0000_2000;
/// Use the 32-bit registry view.
pub const FLG_ADDREG_32BITKEY: u32 = 0x0000_4000;
/// Marks a DelReg-specific flag.
pub const FLG_ADDREG_DELREG_BIT: u32 = 0x0000_8000;
/// The bits that select the value type.
pub const FLG_ADDREG_TYPE_MASK: u32 = 0xFFFF_0000 | FLG_ADDREG_BINVALUETYPE;
pub const FLG_ADDREG_TYPE_SZ: u32 = 0x0000_0000;
pub const FLG_ADDREG_TYPE_MULTI_SZ: u32 = 0x0001_0000;
pub const FLG_ADDREG_TYPE_EXPAND_SZ: u32 = 0x0002_0000;
pub const FLG_ADDREG_TYPE_BINARY: u32 = 0x0000_0001;
pub const FLG_ADDREG_TYPE_DWORD: u32 = 0x0001_0001;
pub const FLG_ADDREG_TYPE_NONE: u32 = 0x0002_0001;
/// DelReg: remove one string from a REG_MULTI_SZ value.
pub const FLG_DELREG_MULTI_SZ_DELSTRING: u32 =
    FLG_ADDREG_TYPE_MULTI_SZ | FLG_ADDREG_DELREG_BIT | 0x0000_0002;

pub const REG_NONE: u32 = 0;
pub const REG_SZ: u32 = 1;
pub const REG_EXPAND_SZ: u32 = 2;
pub const REG_BINARY: u32 = 3;
pub const REG_DWORD: u32 = 4;
pub const REG_MULTI_SZ: u32 = 7;
pub const REG_QWORD: u32 = 11;

/// The root of a registry entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RegRoot {
    /// Relative: the key the context gives (see [`HkrBase`]).
    Hkr,
    Hklm,
    Hkcu,
    Hkcr,
    Hku,
}

impl RegRoot {
    pub fn parse(s: &str) -> Option<RegRoot> {
        Some(match s.to_ascii_uppercase().as_str() {
            "HKR" => RegRoot::Hkr,
            "HKLM" | "HKEY_LOCAL_MACHINE" => RegRoot::Hklm,
            "HKCU" | "HKEY_CURRENT_USER" => RegRoot::Hkcu,
            "HKCR" | "HKEY_CLASSES_ROOT" => RegRoot::Hkcr,
            "HKU" | "HKEY_USERS" => RegRoot::Hku,
            _ => return None,
        })
    }
}

impl fmt::Display for RegRoot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RegRoot::Hkr => "HKR",
            RegRoot::Hklm => "HKLM",
            RegRoot::Hkcu => "HKCU",
            RegRoot::Hkcr => "HKCR",
            RegRoot::Hku => "HKU",
        })
    }
}

/// What `HKR` means where an AddReg/DelReg section is used.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum HkrBase {
    /// DDInstall: the device's software (driver) key, `...\Control\Class\{guid}\NNNN`.
    DriverKey,
    /// DDInstall.HW: the device's hardware key (`...\Enum\<instance>`; the installer decides
    /// whether ordinary values go to its `Device Parameters` subkey, UpperFilters/LowerFilters
    /// belong to the instance key itself).
    DeviceKey,
    /// A service-install section: `HKLM\SYSTEM\CurrentControlSet\Services\<name>`.
    ServiceKey(String),
    /// An event-log-install section: `...\Services\EventLog\<log>\<source>`.
    EventLogKey { log: String, source: String },
    /// ClassInstall32: the class key `...\Control\Class\{guid}`.
    ClassKey,
    /// DefaultInstall and other sections where HKR has no defined meaning.
    Unspecified,
}

/// Typed registry data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegData {
    Sz(String),
    ExpandSz(String),
    MultiSz(Vec<String>),
    Dword(u32),
    /// REG_BINARY, REG_NONE or another type given as `(type << 16) | 1` (e.g. REG_QWORD).
    Binary {
        reg_type: u32,
        data: Vec<u8>,
    },
}

impl RegData {
    /// The REG_* type number.
    pub fn reg_type(&self) -> u32 {
        match self {
            RegData::Sz(_) => REG_SZ,
            RegData::ExpandSz(_) => REG_EXPAND_SZ,
            RegData::MultiSz(_) => REG_MULTI_SZ,
            RegData::Dword(_) => REG_DWORD,
            RegData::Binary { reg_type, .. } => *reg_type,
        }
    }

    /// The data as a number: a DWORD, a numeric string, or 4 binary bytes.
    pub fn as_u32(&self) -> Option<u32> {
        match self {
            RegData::Dword(v) => Some(*v),
            RegData::Sz(s) | RegData::ExpandSz(s) => parse_int(s),
            RegData::Binary { data, .. } if data.len() == 4 => {
                Some(u32::from_le_bytes([data[0], data[1], data[2], data[3]]))
            }
            _ => None,
        }
    }

    /// The data as a string (REG_SZ / REG_EXPAND_SZ).
    pub fn as_str(&self) -> Option<&str> {
        match self {
            RegData::Sz(s) | RegData::ExpandSz(s) => Some(s),
            _ => None,
        }
    }
}

/// What a registry operation does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegAction {
    /// Create the key (and its parents) if missing.
    CreateKey,
    /// Set a value (empty name: the key's default value). Honour the flags
    /// (NOCLOBBER, APPEND, OVERWRITEONLY).
    SetValue {
        name: String,
        data: RegData,
    },
    DeleteValue {
        name: String,
    },
    /// Delete the key with its subkeys.
    DeleteKey,
    /// Remove `string` from the REG_MULTI_SZ value `name`.
    DeleteMultiSzString {
        name: String,
        string: String,
    },
}

/// One registry operation, in the order the installer must apply them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegOp {
    pub root: RegRoot,
    /// What HKR means for this operation (meaningful only when `root` is HKR).
    pub hkr: HkrBase,
    pub subkey: String,
    pub action: RegAction,
    /// The flags field as written (FLG_ADDREG_* / FLG_DELREG_*).
    pub flags: u32,
    pub origin: super::error::Origin,
}

impl RegOp {
    pub fn noclobber(&self) -> bool {
        self.flags & FLG_ADDREG_NOCLOBBER != 0 && matches!(self.action, RegAction::SetValue { .. })
    }

    pub fn append(&self) -> bool {
        self.flags & FLG_ADDREG_APPEND != 0 && matches!(self.action, RegAction::SetValue { .. })
    }

    pub fn overwrite_only(&self) -> bool {
        self.flags & FLG_ADDREG_OVERWRITEONLY != 0
            && matches!(self.action, RegAction::SetValue { .. })
    }

    /// The value name the operation touches, if any.
    pub fn value_name(&self) -> Option<&str> {
        match &self.action {
            RegAction::SetValue { name, .. }
            | RegAction::DeleteValue { name }
            | RegAction::DeleteMultiSzString { name, .. } => Some(name),
            _ => None,
        }
    }
}

fn reject_key(line: &Line, what: &str) -> Result<(), InfError> {
    if line.key().is_some() {
        return Err(line.error(format!(
            "unexpected `=` in {what} entry (quote the text that contains it)"
        )));
    }
    Ok(())
}

fn root_of(line: &Line) -> Result<RegRoot, InfError> {
    let r = line.text(0);
    if r.is_empty() {
        return Err(
            line.error("registry entry has no root (expected HKR, HKLM, HKCU, HKCR or HKU)")
        );
    }
    RegRoot::parse(r).ok_or_else(|| {
        line.error(format!(
            "unknown registry root `{r}` (expected HKR, HKLM, HKCU, HKCR or HKU)"
        ))
    })
}

fn flags_of(line: &Line, what: &str) -> Result<u32, InfError> {
    let f = line.text(3);
    if f.is_empty() {
        return Ok(0);
    }
    parse_int(f).ok_or_else(|| {
        line.error(format!(
            "bad {what} flags `{f}` (expected a number such as 0x00010001)"
        ))
    })
}

fn hex_byte(line: &Line, s: &str) -> Result<u8, InfError> {
    let t = s
        .strip_prefix("0x")
        .or_else(|| s.strip_prefix("0X"))
        .unwrap_or(s);
    if t.is_empty() || t.len() > 2 || !t.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(line.error(format!("bad hex byte `{s}` in binary registry data")));
    }
    u8::from_str_radix(t, 16)
        .map_err(|_| line.error(format!("bad hex byte `{s}` in binary registry data")))
}

/// Parse one line of an AddReg section.
pub fn parse_addreg(
    line: &Line,
    hkr: &HkrBase,
    warnings: &mut Vec<InfWarning>,
) -> Result<RegOp, InfError> {
    reject_key(line, "AddReg")?;
    let root = root_of(line)?;
    let subkey = line.text(1).to_string();
    let name = line.text(2).to_string();
    let flags = flags_of(line, "AddReg")?;
    let values: Vec<&str> = line.fields().iter().skip(4).map(|f| f.text()).collect();
    let op = |action| RegOp {
        root,
        hkr: hkr.clone(),
        subkey: subkey.clone(),
        action,
        flags,
        origin: line.origin.clone(),
    };

    if flags & FLG_ADDREG_DELVAL != 0 {
        return Ok(op(RegAction::DeleteValue { name }));
    }
    if flags & (FLG_ADDREG_KEYONLY | FLG_ADDREG_KEYONLY_COMMON) != 0 || line.fields().len() <= 2 {
        return Ok(op(RegAction::CreateKey));
    }
    let ty = flags & FLG_ADDREG_TYPE_MASK;
    let data = match ty {
        FLG_ADDREG_TYPE_SZ | FLG_ADDREG_TYPE_EXPAND_SZ => {
            if values.len() > 1 {
                warnings.push(line.warning(format!(
                    "{} extra field(s) after a string value ignored",
                    values.len() - 1
                )));
            }
            let s = values.first().copied().unwrap_or("").to_string();
            if ty == FLG_ADDREG_TYPE_SZ {
                RegData::Sz(s)
            } else {
                RegData::ExpandSz(s)
            }
        }
        FLG_ADDREG_TYPE_MULTI_SZ => RegData::MultiSz(
            values
                .iter()
                .filter(|s| !s.is_empty())
                .map(|s| s.to_string())
                .collect(),
        ),
        FLG_ADDREG_TYPE_DWORD => match values.len() {
            0 => {
                warnings
                    .push(line.warning(format!("REG_DWORD value `{name}` has no data; 0 written")));
                RegData::Dword(0)
            }
            1 => {
                let v = values[0];
                RegData::Dword(parse_int(v).ok_or_else(|| line.error(format!("bad DWORD value `{v}` for `{name}` (expected decimal or 0x hex, at most 0xFFFFFFFF)")))?)
            }
            4 => {
                let mut b = [0u8; 4];
                for (i, v) in values.iter().enumerate() {
                    b[i] = hex_byte(line, v)?;
                }
                RegData::Dword(u32::from_le_bytes(b))
            }
            n => {
                return Err(line.error(format!(
                "bad DWORD value for `{name}`: {n} fields (expected one number or four hex bytes)"
            )))
            }
        },
        t if t & FLG_ADDREG_BINVALUETYPE != 0 => {
            let reg_type = match t {
                FLG_ADDREG_TYPE_BINARY => REG_BINARY,
                FLG_ADDREG_TYPE_NONE => REG_NONE,
                other => other >> 16,
            };
            let mut data = Vec::with_capacity(values.len());
            for v in values.iter().filter(|v| !v.is_empty()) {
                data.push(hex_byte(line, v)?);
            }
            RegData::Binary { reg_type, data }
        }
        other => {
            return Err(line.error(format!(
                "unknown registry value type 0x{other:08X} in AddReg flags 0x{flags:08X}"
            )))
        }
    };
    if flags & FLG_ADDREG_APPEND != 0 && !matches!(data, RegData::MultiSz(_)) {
        warnings
            .push(line.warning("FLG_ADDREG_APPEND applies only to REG_MULTI_SZ values; ignored"));
    }
    Ok(op(RegAction::SetValue { name, data }))
}

/// Parse one line of a DelReg section.
pub fn parse_delreg(line: &Line, hkr: &HkrBase) -> Result<RegOp, InfError> {
    reject_key(line, "DelReg")?;
    let root = root_of(line)?;
    let subkey = line.text(1).to_string();
    let name = line.text(2).to_string();
    let flags = flags_of(line, "DelReg")?;
    let action = if flags & FLG_ADDREG_KEYONLY_COMMON != 0 {
        RegAction::DeleteKey
    } else if flags & FLG_DELREG_MULTI_SZ_DELSTRING == FLG_DELREG_MULTI_SZ_DELSTRING {
        let string = line.text(4).to_string();
        if string.is_empty() {
            return Err(line.error(format!(
                "DelReg of a string from REG_MULTI_SZ `{name}` names no string"
            )));
        }
        RegAction::DeleteMultiSzString { name, string }
    } else if name.is_empty() {
        RegAction::DeleteKey
    } else {
        RegAction::DeleteValue { name }
    };
    Ok(RegOp {
        root,
        hkr: hkr.clone(),
        subkey,
        action,
        flags,
        origin: line.origin.clone(),
    })
}
