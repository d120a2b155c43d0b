//! What a registry transaction changed, as people read it: a snapshot of the machine hive before
//! and after, compared key by key.

use std::collections::BTreeMap;

use crate::registry::{reg_type, ReadView, RegResult, RegValue, RegistryStore};

use super::short_key;

/// Every key under `\Registry\Machine`: lowercase path -> (path as stored, values).
pub type Snapshot = BTreeMap<String, (String, Vec<(String, RegValue)>)>;

fn walk(v: &ReadView, path: &str, out: &mut Snapshot) -> RegResult<()> {
    out.insert(
        path.to_ascii_lowercase(),
        (path.to_string(), v.values(path)?),
    );
    for sub in v.subkeys(path)? {
        walk(v, &format!(r"{path}\{sub}"), out)?;
    }
    Ok(())
}

/// A snapshot of the machine hive.
pub fn snapshot(store: &RegistryStore) -> RegResult<Snapshot> {
    store.read(|v| {
        let mut out = Snapshot::new();
        walk(v, r"\Registry\Machine", &mut out)?;
        Ok(out)
    })
}

/// A value as a person reads it: `REG_DWORD 0x3`, `REG_SZ "text"`, `REG_MULTI_SZ "a", "b"`.
pub fn show_value(v: &RegValue) -> String {
    match v.kind {
        reg_type::DWORD => format!("REG_DWORD {:#x}", v.as_dword().unwrap_or(0)),
        reg_type::QWORD => format!("REG_QWORD {:#x}", v.as_qword().unwrap_or(0)),
        reg_type::SZ => format!("REG_SZ \"{}\"", v.as_str().unwrap_or_default()),
        reg_type::EXPAND_SZ => format!("REG_EXPAND_SZ \"{}\"", v.as_str().unwrap_or_default()),
        reg_type::MULTI_SZ => format!(
            "REG_MULTI_SZ {}",
            v.as_multi_sz()
                .unwrap_or_default()
                .iter()
                .map(|s| format!("\"{s}\""))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        kind => {
            let hex: Vec<String> = v.data.iter().take(16).map(|b| format!("{b:02x}")).collect();
            let more = if v.data.len() > 16 { " ..." } else { "" };
            let name = if kind == reg_type::BINARY {
                "REG_BINARY".to_string()
            } else {
                format!("type {kind}")
            };
            format!("{name} {}{more}", hex.join(" "))
        }
    }
}

/// The differences between two snapshots as readable lines: `+ key` for a new key followed by
/// its values, `~ key` for a changed key with its new or changed values, `- key` for a removed
/// key, `- value` for a removed value.
pub fn describe(before: &Snapshot, after: &Snapshot) -> Vec<String> {
    let mut out = Vec::new();
    for (k, (path, values)) in after {
        match before.get(k) {
            None => {
                out.push(format!("+ {}", short_key(path)));
                for (n, v) in values {
                    out.push(format!("    {} = {}", show_name(n), show_value(v)));
                }
            }
            Some((_, old)) => {
                let mut lines = Vec::new();
                for (n, v) in values {
                    let prev = old.iter().find(|(o, _)| o.eq_ignore_ascii_case(n));
                    if prev.map(|(_, p)| p) != Some(v) {
                        lines.push(format!("    {} = {}", show_name(n), show_value(v)));
                    }
                }
                for (n, _) in old {
                    if !values.iter().any(|(o, _)| o.eq_ignore_ascii_case(n)) {
                        lines.push(format!("    - {}", show_name(n)));
                    }
                }
                if !lines.is_empty() {
                    out.push(format!("~ {}", short_key(path)));
                    out.extend(lines);
                }
            }
        }
    }
    for (k, (path, _)) in before {
        if !after.contains_key(k) {
            out.push(format!("- {}", short_key(path)));
        }
    }
    out
}

fn show_name(n: &str) -> String {
    if n.is_empty() {
        "(default)".into()
    } else {
        n.to_string()
    }
}
