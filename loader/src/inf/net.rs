//! Net class (NDIS) information gathered from an install plan's registry operations: the
//! `*IfType`, `*MediaType`, `*PhysicalMediaType` values of the driver key, the `Ndi` key
//! (Service, Interfaces\UpperRange/LowerRange) and the advanced properties under
//! `Ndi\params\<keyword>` with their `enum` subkeys.

use super::reg::{HkrBase, RegAction, RegData, RegOp, RegRoot};

/// The type of an advanced property (`Ndi\params\<keyword>\type`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NdiParamType {
    Int,
    Long,
    Word,
    Dword,
    Enum,
    Edit,
    /// Anything else, as written (lowercase).
    Other(String),
}

impl NdiParamType {
    fn parse(s: &str) -> NdiParamType {
        match s.to_ascii_lowercase().as_str() {
            "int" => NdiParamType::Int,
            "long" => NdiParamType::Long,
            "word" => NdiParamType::Word,
            "dword" => NdiParamType::Dword,
            "enum" => NdiParamType::Enum,
            "edit" => NdiParamType::Edit,
            other => NdiParamType::Other(other.to_string()),
        }
    }
}

/// One value of an enum property: the data written when chosen, and its description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NdiEnumValue {
    pub value: String,
    pub description: String,
}

/// An advanced property of a network adapter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NdiParam {
    /// The keyword (subkey name under `Ndi\params`, also the value name the driver reads).
    pub keyword: String,
    pub description: Option<String>,
    /// The declared type (None if the INF gives no `type`).
    pub kind: Option<NdiParamType>,
    /// The `default` value as written (for enums, one of the enum values).
    pub default: Option<String>,
    pub min: Option<i64>,
    pub max: Option<i64>,
    pub step: Option<i64>,
    /// 10 or 16 for numeric types.
    pub base: Option<u32>,
    /// `optional = 1`: the value may be absent.
    pub optional: bool,
    pub enum_values: Vec<NdiEnumValue>,
    /// The value the INF writes directly under the driver key with the keyword as name, if any.
    pub value: Option<RegData>,
}

impl NdiParam {
    /// The value the driver sees: the one written under the driver key, else the default.
    pub fn effective_value(&self) -> Option<String> {
        match &self.value {
            Some(RegData::Sz(s)) | Some(RegData::ExpandSz(s)) => Some(s.clone()),
            Some(RegData::Dword(d)) => Some(d.to_string()),
            _ => self.default.clone(),
        }
    }
}

/// What a Net-class INF says about the adapter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetInfo {
    /// `Characteristics` (NCF_* flags; required for the Net class).
    pub characteristics: u32,
    pub bus_type: Option<u32>,
    pub if_type: Option<u32>,
    pub media_type: Option<u32>,
    pub physical_media_type: Option<u32>,
    /// `HKR,Ndi,Service`.
    pub ndi_service: Option<String>,
    /// `HKR,Ndi\Interfaces,UpperRange` / `LowerRange`.
    pub upper_range: Option<String>,
    pub lower_range: Option<String>,
    pub params: Vec<NdiParam>,
}

/// NCF_VIRTUAL.
pub const NCF_VIRTUAL: u32 = 0x1;
/// NCF_SOFTWARE_ENUMERATED.
pub const NCF_SOFTWARE_ENUMERATED: u32 = 0x2;
/// NCF_PHYSICAL.
pub const NCF_PHYSICAL: u32 = 0x4;
/// NCF_HIDDEN.
pub const NCF_HIDDEN: u32 = 0x8;
/// NCF_NO_SERVICE.
pub const NCF_NO_SERVICE: u32 = 0x10;
/// NCF_NOT_USER_REMOVABLE.
pub const NCF_NOT_USER_REMOVABLE: u32 = 0x20;
/// NCF_HAS_UI.
pub const NCF_HAS_UI: u32 = 0x80;
/// NCF_FILTER.
pub const NCF_FILTER: u32 = 0x400;

/// A simulated registry: keys (normalized lowercase path) with their values in write order.
#[derive(Debug, Default, Clone)]
pub(crate) struct SimRegistry {
    keys: Vec<(String, Vec<(String, RegData)>)>,
}

fn norm(path: &str) -> String {
    path.split('\\')
        .filter(|c| !c.is_empty())
        .collect::<Vec<_>>()
        .join("\\")
        .to_lowercase()
}

impl SimRegistry {
    /// Apply the HKR operations of one context.
    pub(crate) fn from_ops<'a>(
        ops: impl Iterator<Item = &'a RegOp>,
        base: &HkrBase,
    ) -> SimRegistry {
        let mut sim = SimRegistry::default();
        for op in ops.filter(|o| o.root == RegRoot::Hkr && &o.hkr == base) {
            sim.apply(op);
        }
        sim
    }

    fn key_mut(&mut self, path: &str) -> &mut Vec<(String, RegData)> {
        let idx = match self.keys.iter().position(|(k, _)| k == path) {
            Some(i) => i,
            None => {
                self.keys.push((path.to_string(), Vec::new()));
                self.keys.len() - 1
            }
        };
        &mut self.keys[idx].1
    }

    fn apply(&mut self, op: &RegOp) {
        let path = norm(&op.subkey);
        match &op.action {
            RegAction::CreateKey => {
                self.key_mut(&path);
            }
            RegAction::SetValue { name, data } => {
                let (noclobber, append, overwrite_only) =
                    (op.noclobber(), op.append(), op.overwrite_only());
                let values = self.key_mut(&path);
                let existing = values
                    .iter()
                    .position(|(n, _)| n.eq_ignore_ascii_case(name));
                match existing {
                    Some(_) if noclobber => {}
                    None if overwrite_only => {}
                    Some(i) => {
                        if let (true, RegData::MultiSz(old), RegData::MultiSz(new)) =
                            (append, &mut values[i].1, data)
                        {
                            for s in new {
                                if !old.iter().any(|o| o.eq_ignore_ascii_case(s)) {
                                    old.push(s.clone());
                                }
                            }
                        } else {
                            values[i].1 = data.clone();
                        }
                    }
                    None => values.push((name.clone(), data.clone())),
                }
            }
            RegAction::DeleteValue { name } => {
                if let Some((_, values)) = self.keys.iter_mut().find(|(k, _)| *k == path) {
                    values.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
                }
            }
            RegAction::DeleteKey => {
                let prefix = format!("{path}\\");
                self.keys
                    .retain(|(k, _)| !(*k == path || k.starts_with(&prefix) || path.is_empty()));
            }
            RegAction::DeleteMultiSzString { name, string } => {
                if let Some((_, values)) = self.keys.iter_mut().find(|(k, _)| *k == path) {
                    for (n, d) in values.iter_mut() {
                        if let (true, RegData::MultiSz(list)) = (n.eq_ignore_ascii_case(name), d) {
                            list.retain(|s| !s.eq_ignore_ascii_case(string));
                        }
                    }
                }
            }
        }
    }

    pub(crate) fn value(&self, path: &str, name: &str) -> Option<&RegData> {
        let path = norm(path);
        self.keys
            .iter()
            .find(|(k, _)| *k == path)
            .and_then(|(_, v)| {
                v.iter()
                    .find(|(n, _)| n.eq_ignore_ascii_case(name))
                    .map(|(_, d)| d)
            })
    }

    fn values(&self, path: &str) -> &[(String, RegData)] {
        let path = norm(path);
        self.keys
            .iter()
            .find(|(k, _)| *k == path)
            .map(|(_, v)| v.as_slice())
            .unwrap_or(&[])
    }

    /// The names of direct subkeys of `path`, in order of creation, with their original case
    /// taken from `ops`.
    fn subkeys(&self, path: &str) -> Vec<String> {
        let prefix = format!("{}\\", norm(path));
        let mut out: Vec<String> = Vec::new();
        for (k, _) in &self.keys {
            if let Some(rest) = k.strip_prefix(&prefix) {
                let first = rest.split('\\').next().unwrap_or("");
                if !first.is_empty() && !out.iter().any(|o| o == first) {
                    out.push(first.to_string());
                }
            }
        }
        out
    }

    /// A REG_MULTI_SZ (or REG_SZ) value as a list.
    pub(crate) fn string_list(&self, path: &str, name: &str) -> Vec<String> {
        match self.value(path, name) {
            Some(RegData::MultiSz(l)) => l.clone(),
            Some(RegData::Sz(s)) if !s.is_empty() => vec![s.clone()],
            _ => Vec::new(),
        }
    }
}

fn parse_i64(s: &str) -> Option<i64> {
    let s = s.trim();
    if let Some(h) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        return i64::from_str_radix(h, 16).ok();
    }
    s.parse().ok()
}

/// Gather the Net class information from the plan's driver-key operations.
pub(crate) fn gather(ops: &[RegOp], characteristics: u32, bus_type: Option<u32>) -> NetInfo {
    let sim = SimRegistry::from_ops(ops.iter(), &HkrBase::DriverKey);
    let num = |name: &str| sim.value("", name).and_then(RegData::as_u32);
    let string = |path: &str, name: &str| {
        sim.value(path, name)
            .and_then(RegData::as_str)
            .map(str::to_string)
    };
    // Keyword names keep the case of the first operation that created them.
    let original_case = |lower: &str| -> String {
        ops.iter()
            .filter(|o| o.root == RegRoot::Hkr && o.hkr == HkrBase::DriverKey)
            .find_map(|o| {
                let comps: Vec<&str> = o.subkey.split('\\').filter(|c| !c.is_empty()).collect();
                (comps.len() >= 3
                    && comps[0].eq_ignore_ascii_case("ndi")
                    && comps[1].eq_ignore_ascii_case("params")
                    && comps[2].to_lowercase() == lower)
                    .then(|| comps[2].to_string())
            })
            .unwrap_or_else(|| lower.to_string())
    };
    let mut params = Vec::new();
    for kw in sim.subkeys("Ndi\\params") {
        let key = format!("Ndi\\params\\{kw}");
        let keyword = original_case(&kw);
        let get = |name: &str| string(&key, name);
        let enum_values = sim
            .values(&format!("{key}\\enum"))
            .iter()
            .map(|(v, d)| NdiEnumValue {
                value: v.clone(),
                description: d.as_str().unwrap_or("").to_string(),
            })
            .collect();
        params.push(NdiParam {
            description: get("ParamDesc"),
            kind: get("type").map(|t| NdiParamType::parse(&t)),
            default: get("default"),
            min: get("min").and_then(|s| parse_i64(&s)),
            max: get("max").and_then(|s| parse_i64(&s)),
            step: get("step").and_then(|s| parse_i64(&s)),
            base: get("base").and_then(|s| super::model::parse_int(&s)),
            optional: get("optional").is_some_and(|s| s.trim() == "1"),
            enum_values,
            value: sim.value("", &keyword).cloned(),
            keyword,
        });
    }
    NetInfo {
        characteristics,
        bus_type,
        if_type: num("*IfType"),
        media_type: num("*MediaType"),
        physical_media_type: num("*PhysicalMediaType"),
        ndi_service: string("Ndi", "Service"),
        upper_range: string("Ndi\\Interfaces", "UpperRange"),
        lower_range: string("Ndi\\Interfaces", "LowerRange"),
        params,
    }
}
