//! `.reg` files, the REGEDIT5 text format: export writes "Windows Registry Editor Version 5.00"
//! in UTF-16LE with a BOM, as regedit does; import reads that, UTF-8 or ANSI (Windows-1252) text,
//! and the older "REGEDIT4" (whose `hex(2)`/`hex(7)` data is ANSI).
//!
//! ```text
//! Windows Registry Editor Version 5.00
//!
//! [HKEY_LOCAL_MACHINE\SYSTEM\CurrentControlSet\Services\e1000]
//! "Type"=dword:00000001
//! "ImagePath"=hex(2):5c,00,53,00,...   (REG_EXPAND_SZ as UTF-16LE bytes)
//! @="default value"
//! "Gone"=-                              (deletes the value)
//!
//! [-HKEY_LOCAL_MACHINE\SOFTWARE\Old]    (deletes the key and its subkeys)
//! ```
//!
//! Strings escape `\` and `"` with a backslash; long hex data continues on the next line after a
//! trailing `\`. Errors name the file and line. An import is one transaction.

use std::path::Path;

use ntoskrnl::registry::{path_components, reg_type, units_of, RegError, RegResult, RegValue};
use ntoskrnl::rtl::ansi_to_unicode;

use super::store::{ReadView, RegistryStore, WriteBatch};

/// First line of a REGEDIT5 file.
pub const HEADER5: &str = "Windows Registry Editor Version 5.00";
/// First line of a REGEDIT4 file.
pub const HEADER4: &str = "REGEDIT4";

/// Root key names of `.reg` files and the NT paths they stand for.
const ROOT_KEYS: &[(&str, &str)] = &[
    ("HKEY_LOCAL_MACHINE", r"\Registry\Machine"),
    ("HKLM", r"\Registry\Machine"),
    ("HKEY_USERS", r"\Registry\User"),
    ("HKU", r"\Registry\User"),
    ("HKEY_CURRENT_USER", r"\Registry\User\.Default"),
    ("HKCU", r"\Registry\User\.Default"),
    ("HKEY_CLASSES_ROOT", r"\Registry\Machine\Software\Classes"),
    ("HKCR", r"\Registry\Machine\Software\Classes"),
    (
        "HKEY_CURRENT_CONFIG",
        r"\Registry\Machine\System\CurrentControlSet\Hardware Profiles\Current",
    ),
    (
        "HKCC",
        r"\Registry\Machine\System\CurrentControlSet\Hardware Profiles\Current",
    ),
];

/// The NT path of a `.reg` key name (`HKEY_LOCAL_MACHINE\SOFTWARE\X` -> `\Registry\Machine\SOFTWARE\X`).
pub fn hkey_to_nt(name: &str) -> Option<String> {
    let (root, rest) = match name.split_once('\\') {
        Some((r, rest)) => (r, rest),
        None => (name, ""),
    };
    let (_, nt) = ROOT_KEYS
        .iter()
        .find(|(h, _)| h.eq_ignore_ascii_case(root))?;
    let rest = rest.trim_end_matches('\\');
    Some(if rest.is_empty() {
        nt.to_string()
    } else {
        format!(r"{nt}\{rest}")
    })
}

/// Why a `.reg` file could not be imported.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegFileError {
    /// The text is not valid `.reg` syntax.
    #[error("{file}:{line}: {message}")]
    Syntax {
        /// The file.
        file: String,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// The file could not be read or written.
    #[error("{file}: {message}")]
    Io {
        /// The file.
        file: String,
        /// What failed.
        message: String,
    },
    /// The store refused an operation (nothing of the file was applied).
    #[error("{file}: {error}")]
    Registry {
        /// The file.
        file: String,
        /// The store's error.
        error: RegError,
    },
}

/// One change a `.reg` file asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegOp {
    /// `[-key]`: delete the key and its subkeys.
    DeleteKey(String),
    /// `[key]`: create the key (and its ancestors).
    CreateKey(String),
    /// `"name"=data`.
    SetValue {
        /// NT path of the key.
        key: String,
        /// Value name (`""` for `@`).
        name: String,
        /// The value.
        value: RegValue,
    },
    /// `"name"=-`.
    DeleteValue {
        /// NT path of the key.
        key: String,
        /// Value name.
        name: String,
    },
}

/// What an import did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ImportSummary {
    /// `[key]` sections.
    pub keys: usize,
    /// Values set.
    pub values: usize,
    /// `[-key]` sections that deleted something.
    pub deleted_keys: usize,
    /// `=-` lines that deleted something.
    pub deleted_values: usize,
}

/// The text of a `.reg` file: UTF-16 with a BOM (or LE without one), UTF-8, else Windows-1252.
pub fn decode_text(bytes: &[u8]) -> String {
    let utf16 = |b: &[u8], be: bool| {
        let units: Vec<u16> = b
            .chunks_exact(2)
            .map(|c| {
                if be {
                    u16::from_be_bytes([c[0], c[1]])
                } else {
                    u16::from_le_bytes([c[0], c[1]])
                }
            })
            .collect();
        String::from_utf16_lossy(&units)
    };
    if let Some(rest) = bytes.strip_prefix(&[0xFF, 0xFE]) {
        utf16(rest, false)
    } else if let Some(rest) = bytes.strip_prefix(&[0xFE, 0xFF]) {
        utf16(rest, true)
    } else if let Some(rest) = bytes.strip_prefix(&[0xEF, 0xBB, 0xBF]) {
        String::from_utf8_lossy(rest).into_owned()
    } else if bytes.len() >= 2 && bytes[0] != 0 && bytes[1] == 0 {
        utf16(bytes, false)
    } else if let Ok(s) = std::str::from_utf8(bytes) {
        s.to_string()
    } else {
        let units: Vec<u16> = bytes.iter().map(|&b| ansi_to_unicode(b)).collect();
        String::from_utf16_lossy(&units)
    }
}

struct Parser<'a> {
    file: &'a str,
    line: usize,
}

impl Parser<'_> {
    fn err<T>(&self, message: impl Into<String>) -> Result<T, RegFileError> {
        Err(RegFileError::Syntax {
            file: self.file.to_string(),
            line: self.line,
            message: message.into(),
        })
    }

    /// A quoted string starting at `s[0] == '"'`: the unescaped text and the rest after it.
    fn quoted<'s>(&self, s: &'s str) -> Result<(String, &'s str), RegFileError> {
        let mut out = String::new();
        let mut chars = s.char_indices().skip(1);
        while let Some((i, c)) = chars.next() {
            match c {
                '"' => return Ok((out, &s[i + 1..])),
                '\\' => match chars.next() {
                    Some((_, e @ ('\\' | '"'))) => out.push(e),
                    Some((_, other)) => {
                        out.push('\\');
                        out.push(other);
                    }
                    None => out.push('\\'),
                },
                c => out.push(c),
            }
        }
        self.err("unterminated string (missing closing \")")
    }

    fn hex_bytes(&self, s: &str) -> Result<Vec<u8>, RegFileError> {
        let s = s.trim();
        if s.is_empty() {
            return Ok(Vec::new());
        }
        let items: Vec<&str> = s.split(',').map(str::trim).collect();
        let mut out = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            if item.is_empty() && i == items.len() - 1 {
                break;
            }
            match u8::from_str_radix(item, 16) {
                Ok(b) if item.len() <= 2 => out.push(b),
                _ => return self.err(format!("{item:?} is not a hex byte")),
            }
        }
        Ok(out)
    }

    /// The data after `=`: None for `-` (delete).
    fn data(&self, s: &str, regedit4: bool) -> Result<Option<RegValue>, RegFileError> {
        let s = s.trim();
        if s == "-" {
            return Ok(None);
        }
        if s.starts_with('"') {
            let (text, rest) = self.quoted(s)?;
            let rest = rest.trim();
            if !rest.is_empty() && !rest.starts_with(';') {
                return self.err(format!("unexpected {rest:?} after the string"));
            }
            return Ok(Some(RegValue::sz(&text)));
        }
        let lower = s.to_ascii_lowercase();
        if let Some(digits) = lower.strip_prefix("dword:") {
            let digits = digits.trim();
            return match u32::from_str_radix(digits, 16) {
                Ok(v) if !digits.is_empty() && digits.len() <= 8 => Ok(Some(RegValue::dword(v))),
                _ => self.err(format!(
                    "dword:{digits} is not a 32-bit hex number (up to 8 digits)"
                )),
            };
        }
        let (kind, bytes) = if let Some(rest) = lower.strip_prefix("hex:") {
            (reg_type::BINARY, rest)
        } else if let Some(rest) = lower.strip_prefix("hex(") {
            let Some((t, bytes)) = rest.split_once("):") else {
                return self.err("hex( must be followed by a type and \"):\"");
            };
            match u32::from_str_radix(t.trim(), 16) {
                Ok(k) => (k, bytes),
                Err(_) => return self.err(format!("hex({t}) is not a hex type number")),
            }
        } else {
            return self.err(format!(
                "unknown value data {s:?} (expected \"string\", dword:, hex:, hex(N): or -)"
            ));
        };
        let mut data = self.hex_bytes(bytes)?;
        if regedit4 && matches!(kind, reg_type::EXPAND_SZ | reg_type::MULTI_SZ) {
            data = data
                .iter()
                .flat_map(|&b| ansi_to_unicode(b).to_le_bytes())
                .collect();
        }
        Ok(Some(RegValue::new(kind, data)))
    }
}

/// Parses a `.reg` file into the changes it asks for. `file` names it in errors.
pub fn parse(bytes: &[u8], file: &str) -> Result<Vec<RegOp>, RegFileError> {
    let text = decode_text(bytes);
    let mut p = Parser { file, line: 1 };
    let physical: Vec<&str> = text
        .split('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .collect();
    let mut ops = Vec::new();
    let mut header: Option<bool> = None;
    // (current key, deleted section)
    let mut section: Option<(String, bool)> = None;
    let mut i = 0;
    while i < physical.len() {
        p.line = i + 1;
        let mut line = physical[i].trim().to_string();
        i += 1;
        // Continuation: a trailing backslash joins the next line.
        while !line.starts_with('[') && line.ends_with('\\') && i < physical.len() {
            line.pop();
            line.push_str(physical[i].trim());
            i += 1;
        }
        if line.is_empty() || line.starts_with(';') {
            continue;
        }
        let Some(regedit4) = header else {
            header = Some(match line.as_str() {
                HEADER5 => false,
                HEADER4 => true,
                _ => {
                    return p.err(format!(
                        "not a .reg file: the first line must be {HEADER5:?} or {HEADER4:?}"
                    ))
                }
            });
            continue;
        };
        if let Some(inner) = line.strip_prefix('[') {
            let Some(end) = inner.rfind(']') else {
                return p.err("key name without closing ]");
            };
            // Everything between `[` (or `[-`) and the last `]` is the name, spaces included: key
            // names may begin or end with spaces, and the export writes them so.
            let (delete, name) = match inner[..end].strip_prefix('-') {
                Some(n) => (true, n),
                None => (false, &inner[..end]),
            };
            let Some(path) = hkey_to_nt(name) else {
                return p.err(format!(
                    "{name:?} does not start with a root key (HKEY_LOCAL_MACHINE, HKEY_USERS, ...)"
                ));
            };
            if let Err(e) = path_components(&path) {
                return p.err(format!("invalid key name {name:?}: {e}"));
            }
            ops.push(if delete {
                RegOp::DeleteKey(path.clone())
            } else {
                RegOp::CreateKey(path.clone())
            });
            section = Some((path, delete));
            continue;
        }
        let (name, rest) = if let Some(rest) = line.strip_prefix('@') {
            (String::new(), rest)
        } else if line.starts_with('"') {
            p.quoted(&line)?
        } else {
            return p.err(format!(
                "expected [key], \"name\"=value or @=value, not {line:?}"
            ));
        };
        let Some(data) = rest.trim_start().strip_prefix('=') else {
            return p.err("expected = after the value name");
        };
        let value = p.data(data, regedit4)?;
        let Some((key, deleted)) = &section else {
            return p.err("value before the first [key]");
        };
        if *deleted {
            return p.err("value in a [-key] section (the key is being deleted)");
        }
        ops.push(match value {
            Some(value) => RegOp::SetValue {
                key: key.clone(),
                name,
                value,
            },
            None => RegOp::DeleteValue {
                key: key.clone(),
                name,
            },
        });
    }
    if header.is_none() {
        p.line = 1;
        return p.err("empty file (no \"Windows Registry Editor Version 5.00\" line)");
    }
    Ok(ops)
}

/// Applies parsed changes in a batch.
pub fn apply(b: &mut WriteBatch<'_>, ops: &[RegOp]) -> RegResult<ImportSummary> {
    let mut s = ImportSummary::default();
    for op in ops {
        match op {
            RegOp::DeleteKey(path) => {
                if b.delete_tree(path)? {
                    s.deleted_keys += 1;
                }
            }
            RegOp::CreateKey(path) => {
                b.create_key(path)?;
                s.keys += 1;
            }
            RegOp::SetValue { key, name, value } => {
                b.set_value(key, name, value)?;
                s.values += 1;
            }
            RegOp::DeleteValue { key, name } => {
                if b.key_exists(key)? && b.delete_value(key, name)? {
                    s.deleted_values += 1;
                }
            }
        }
    }
    Ok(s)
}

// ---------------------------------------------------------------------------------------------
// Export

fn escape(s: &str) -> String {
    s.replace('\\', r"\\").replace('"', "\\\"")
}

/// A REG_SZ that regedit can write as a quoted string: terminated once, no NULs or line breaks.
fn plain_string(v: &RegValue) -> Option<String> {
    if v.kind != reg_type::SZ || !v.data.len().is_multiple_of(2) {
        return None;
    }
    let units = units_of(&v.data);
    let (&last, body) = units.split_last()?;
    if last != 0 || body.contains(&0) {
        return None;
    }
    let text = String::from_utf16(body).ok()?;
    (!text.contains(['\r', '\n'])).then_some(text)
}

/// One value line (with continuation lines), without the final line break.
fn value_line(name: &str, v: &RegValue) -> String {
    let mut out = if name.is_empty() {
        "@=".to_string()
    } else {
        format!("\"{}\"=", escape(name))
    };
    if let Some(text) = plain_string(v) {
        out.push_str(&format!("\"{}\"", escape(&text)));
        return out;
    }
    if v.kind == reg_type::DWORD && v.data.len() == 4 {
        out.push_str(&format!("dword:{:08x}", v.as_dword().unwrap_or(0)));
        return out;
    }
    if v.kind == reg_type::BINARY {
        out.push_str("hex:");
    } else {
        out.push_str(&format!("hex({:x}):", v.kind));
    }
    // regedit wraps hex data so lines stay within 80 columns.
    let mut column = out.len();
    for (i, b) in v.data.iter().enumerate() {
        out.push_str(&format!("{b:02x}"));
        column += 2;
        if i + 1 < v.data.len() {
            out.push(',');
            column += 1;
            if column > 76 {
                out.push_str("\\\r\n  ");
                column = 2;
            }
        }
    }
    out
}

fn export_key(view: &ReadView, path: &str, display: &str, out: &mut String) -> RegResult<()> {
    out.push_str(&format!("[{display}]\r\n"));
    for (name, v) in view.values(path)? {
        out.push_str(&value_line(&name, &v));
        out.push_str("\r\n");
    }
    out.push_str("\r\n");
    for child in view.subkeys(path)? {
        export_key(
            view,
            &format!(r"{path}\{child}"),
            &format!(r"{display}\{child}"),
            out,
        )?;
    }
    Ok(())
}

/// The `.reg` text (header included, CRLF line ends) of the key `path` and everything below it.
/// `\Registry` exports both hives.
pub fn export_text(view: &ReadView, path: &str) -> RegResult<String> {
    let comps = path_components(path)?;
    let mut out = format!("{HEADER5}\r\n\r\n");
    let tops: Vec<(String, String)> = if comps.len() == 1 {
        vec![
            (r"\Registry\Machine".into(), "HKEY_LOCAL_MACHINE".into()),
            (r"\Registry\User".into(), "HKEY_USERS".into()),
        ]
    } else {
        let hive = if comps[1].eq_ignore_ascii_case("machine") {
            "HKEY_LOCAL_MACHINE"
        } else if comps[1].eq_ignore_ascii_case("user") {
            "HKEY_USERS"
        } else {
            return Err(RegError::NotFound(path.to_string()));
        };
        // The stored names of the components, as regedit shows them.
        let mut display = hive.to_string();
        let mut at = format!(r"\{}\{}", comps[0], comps[1]);
        view.key_info(&at)?;
        for c in &comps[2..] {
            at = format!(r"{at}\{c}");
            display = format!(r"{display}\{}", view.key_info(&at)?.name);
        }
        vec![(at, display)]
    };
    for (at, display) in tops {
        export_key(view, &at, &display, &mut out)?;
    }
    Ok(out)
}

/// Text as UTF-16LE with a byte-order mark (what regedit writes).
pub fn encode_utf16(text: &str) -> Vec<u8> {
    [0xFF, 0xFE]
        .into_iter()
        .chain(text.encode_utf16().flat_map(u16::to_le_bytes))
        .collect()
}

impl RegistryStore {
    /// Imports `.reg` file contents as one transaction (all of it or, on any error, nothing).
    /// `file` names the source in errors.
    pub fn import_reg(&self, bytes: &[u8], file: &str) -> Result<ImportSummary, RegFileError> {
        let ops = parse(bytes, file)?;
        self.write(|b| apply(b, &ops))
            .map_err(|error| RegFileError::Registry {
                file: file.to_string(),
                error,
            })
    }

    /// Imports a `.reg` file.
    pub fn import_reg_file(&self, path: &Path) -> Result<ImportSummary, RegFileError> {
        let file = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|e| RegFileError::Io {
            file: file.clone(),
            message: format!("cannot read: {e}"),
        })?;
        self.import_reg(&bytes, &file)
    }

    /// The `.reg` file (UTF-16LE with BOM) of a key and everything below it.
    pub fn export_reg(&self, path: &str) -> RegResult<Vec<u8>> {
        Ok(encode_utf16(&self.read(|v| export_text(v, path))?))
    }

    /// Writes the `.reg` file of a key to `out`.
    pub fn export_reg_file(&self, path: &str, out: &Path) -> Result<(), RegFileError> {
        let file = out.display().to_string();
        let bytes = self
            .export_reg(path)
            .map_err(|error| RegFileError::Registry {
                file: file.clone(),
                error,
            })?;
        std::fs::write(out, bytes).map_err(|e| RegFileError::Io {
            file,
            message: format!("cannot write: {e}"),
        })
    }
}
