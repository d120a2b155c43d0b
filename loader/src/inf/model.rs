//! The semantic view of an INF: `[Version]`, `[Manufacturer]` with TargetOS decorations, the
//! Models sections they choose, and matching a device's IDs against the models.

use std::fmt;
use std::path::Path;

use super::error::{InfError, InfWarning, Origin};
use super::syntax::{InfFile, Line, ParseOptions};
use super::target::{Arch, Decoration, TargetOs};

/// Parse an INF integer: decimal (optionally negative, wrapping like a C `ULONG`) or `0x` hex.
pub fn parse_int(s: &str) -> Option<u32> {
    let s = s.trim();
    if let Some(hex) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        if hex.is_empty() || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        return u32::from_str_radix(hex, 16).ok();
    }
    if let Some(neg) = s.strip_prefix('-') {
        if neg.is_empty() || !neg.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let v: i64 = neg.parse().ok()?;
        if v > i32::MAX as i64 + 1 {
            return None;
        }
        return Some((-v) as i32 as u32);
    }
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse::<u32>().ok()
}

/// A GUID as `{xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Guid {
    pub data1: u32,
    pub data2: u16,
    pub data3: u16,
    pub data4: [u8; 8],
}

impl Guid {
    /// Parse the braced form (case-insensitive hex).
    pub fn parse(s: &str) -> Option<Guid> {
        let s = s.trim();
        let inner = s.strip_prefix('{')?.strip_suffix('}')?;
        let parts: Vec<&str> = inner.split('-').collect();
        let lens = [8, 4, 4, 4, 12];
        if parts.len() != 5
            || parts
                .iter()
                .zip(lens)
                .any(|(p, l)| p.len() != l || !p.bytes().all(|b| b.is_ascii_hexdigit()))
        {
            return None;
        }
        let hex = |s: &str| u64::from_str_radix(s, 16).ok();
        let d4a = hex(parts[3])? as u16;
        let d4b = hex(parts[4])?;
        let mut data4 = [0u8; 8];
        data4[..2].copy_from_slice(&d4a.to_be_bytes());
        data4[2..].copy_from_slice(&d4b.to_be_bytes()[2..]);
        Some(Guid {
            data1: hex(parts[0])? as u32,
            data2: hex(parts[1])? as u16,
            data3: hex(parts[2])? as u16,
            data4,
        })
    }
}

impl fmt::Display for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = &self.data4;
        write!(
            f,
            "{{{:08X}-{:04X}-{:04X}-{:02X}{:02X}-{:02X}{:02X}{:02X}{:02X}{:02X}{:02X}}}",
            self.data1, self.data2, self.data3, d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]
        )
    }
}

/// `DriverVer = mm/dd/yyyy[,w.x.y.z]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DriverVer {
    pub month: u32,
    pub day: u32,
    pub year: u32,
    pub version: Option<[u16; 4]>,
}

impl DriverVer {
    /// The date as Windows stores it in the driver key's `DriverDate` (`m-d-yyyy`).
    pub fn date_string(&self) -> String {
        format!("{}-{}-{}", self.month, self.day, self.year)
    }

    /// The version as `w.x.y.z` (`DriverVersion`), if the INF gives one.
    pub fn version_string(&self) -> Option<String> {
        self.version
            .map(|v| format!("{}.{}.{}.{}", v[0], v[1], v[2], v[3]))
    }

    pub fn parse(line: &Line) -> Result<DriverVer, InfError> {
        let date = line.text(0);
        let bad = || line.error(format!("bad DriverVer date `{date}` (expected mm/dd/yyyy)"));
        let parts: Vec<&str> = date.split(['/', '-']).collect();
        if parts.len() != 3 {
            return Err(bad());
        }
        let num = |s: &str| -> Option<u32> {
            if s.is_empty() || s.len() > 4 || !s.bytes().all(|b| b.is_ascii_digit()) {
                None
            } else {
                s.parse().ok()
            }
        };
        let (month, day, year) = (
            num(parts[0]).ok_or_else(bad)?,
            num(parts[1]).ok_or_else(bad)?,
            num(parts[2]).ok_or_else(bad)?,
        );
        if !(1..=12).contains(&month) || !(1..=31).contains(&day) || year < 1980 {
            return Err(bad());
        }
        let vtext = line.text(1);
        let version = if vtext.is_empty() {
            None
        } else {
            let mut v = [0u16; 4];
            let comps: Vec<&str> = vtext.split('.').collect();
            if comps.len() > 4 {
                return Err(line.error(format!(
                    "bad DriverVer version `{vtext}` (expected w.x.y.z)"
                )));
            }
            for (i, c) in comps.iter().enumerate() {
                v[i] = c.trim().parse().map_err(|_| {
                    line.error(format!(
                        "bad DriverVer version `{vtext}` (expected w.x.y.z, each 0-65535)"
                    ))
                })?;
            }
            Some(v)
        };
        Ok(DriverVer {
            month,
            day,
            year,
            version,
        })
    }
}

/// The `[Version]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    /// `$Windows NT$`, `$Chicago$` or `$Windows 95$` (as written).
    pub signature: String,
    pub class: Option<String>,
    pub class_guid: Option<Guid>,
    pub provider: Option<String>,
    pub driver_ver: Option<DriverVer>,
    /// `CatalogFile[.decoration]` entries: (decoration text lowercased, e.g. "ntamd64" or "", file).
    pub catalog_files: Vec<(String, String)>,
    pub layout_file: Option<String>,
    pub pnp_lockdown: Option<u32>,
    pub origin: Origin,
}

impl Version {
    /// Parse `[Version]`; a missing section or signature is an error.
    pub fn parse(inf: &InfFile) -> Result<Version, InfError> {
        let sec = inf
            .section("Version")
            .ok_or_else(|| inf.file_error("no [Version] section"))?;
        let sig_line = sec
            .entry("Signature")
            .ok_or_else(|| sec.origin.error("[Version] has no Signature entry"))?;
        let signature = sig_line.text(0).to_string();
        let known = ["$windows nt$", "$chicago$", "$windows 95$"];
        if !known.contains(&signature.to_ascii_lowercase().as_str()) {
            return Err(sig_line.error(format!(
                "unknown Signature `{signature}` (expected \"$Windows NT$\", \"$Chicago$\" or \"$Windows 95$\")"
            )));
        }
        let get = |k: &str| {
            sec.entry(k)
                .map(|l| l.text(0).to_string())
                .filter(|s| !s.is_empty())
        };
        let class_guid = match sec.entry("ClassGuid") {
            Some(l) => Some(
                Guid::parse(l.text(0))
                    .ok_or_else(|| l.error(format!("bad ClassGuid `{}`", l.text(0))))?,
            ),
            None => None,
        };
        let driver_ver = match sec.entry("DriverVer") {
            Some(l) => Some(DriverVer::parse(l)?),
            None => None,
        };
        let pnp_lockdown = match sec.entry("PnpLockdown") {
            Some(l) => Some(
                parse_int(l.text(0))
                    .ok_or_else(|| l.error(format!("bad PnpLockdown value `{}`", l.text(0))))?,
            ),
            None => None,
        };
        let mut catalog_files = Vec::new();
        for l in &sec.lines {
            let Some(k) = l.key_text() else { continue };
            let lower = k.to_ascii_lowercase();
            if lower == "catalogfile" {
                catalog_files.push((String::new(), l.text(0).to_string()));
            } else if let Some(dec) = lower.strip_prefix("catalogfile.") {
                catalog_files.push((dec.to_string(), l.text(0).to_string()));
            }
        }
        Ok(Version {
            signature,
            class: get("Class"),
            class_guid,
            provider: get("Provider"),
            driver_ver,
            catalog_files,
            layout_file: get("LayoutFile"),
            pnp_lockdown,
            origin: sec.origin.clone(),
        })
    }

    /// The catalog file for an architecture: `CatalogFile.NTamd64`, else `.NT`, else undecorated.
    pub fn catalog_file(&self, arch: Arch) -> Option<&str> {
        let platform = format!("nt{}", arch.inf_name());
        for want in [platform.as_str(), "nt", ""] {
            if let Some((_, f)) = self.catalog_files.iter().find(|(d, _)| d == want) {
                return Some(f);
            }
        }
        None
    }

    /// Whether the class is `name` (case-insensitive).
    pub fn is_class(&self, name: &str) -> bool {
        self.class
            .as_deref()
            .is_some_and(|c| c.eq_ignore_ascii_case(name))
    }
}

/// One `[Manufacturer]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manufacturer {
    pub name: String,
    /// The undecorated Models section name.
    pub models_section: String,
    pub decorations: Vec<Decoration>,
    pub origin: Origin,
}

impl Manufacturer {
    /// The Models section to use for `target`: the most specific decoration that applies, else
    /// the undecorated section (accepted only for x86: 64-bit Windows requires a decoration).
    pub fn models_section_for(&self, target: &TargetOs) -> Result<String, InfError> {
        let best = self
            .decorations
            .iter()
            .filter(|d| d.applies_to(target))
            .max_by_key(|d| d.rank());
        if let Some(d) = best {
            return Ok(format!("{}.{}", self.models_section, d.text));
        }
        if !self.decorations.is_empty() {
            let list: Vec<&str> = self.decorations.iter().map(|d| d.text.as_str()).collect();
            return Err(self.origin.error(format!(
                "manufacturer {} has no Models section for {} Windows {}.{} (build {}): decorations are {}",
                self.name,
                target.arch,
                target.major,
                target.minor,
                target.build,
                list.join(", ")
            )));
        }
        if target.arch != Arch::X86 {
            return Err(self.origin.error(format!(
                "manufacturer {} has only an undecorated Models section; {} Windows requires an NT{} decoration",
                self.name, target.arch, target.arch
            )));
        }
        Ok(self.models_section.clone())
    }
}

/// One line of a Models section: a device the INF installs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Model {
    pub manufacturer: String,
    /// The (decorated) Models section it was found in.
    pub models_section: String,
    pub description: String,
    /// The DDInstall section name as written (undecorated).
    pub install_section: String,
    pub hardware_id: Option<String>,
    pub compatible_ids: Vec<String>,
    pub origin: Origin,
}

impl Model {
    /// Whether this model lists `id` as hardware or compatible ID (case-insensitive).
    pub fn matches(&self, id: &str) -> bool {
        self.hardware_id
            .iter()
            .chain(&self.compatible_ids)
            .any(|h| h.eq_ignore_ascii_case(id))
    }
}

/// The result of matching a device against an INF: the model and its rank (lower is better,
/// as Windows ranks: 0x0000-0x0FFF the device's hardware ID matched the model's hardware ID,
/// 0x1000- the device's hardware ID matched a compatible ID of the model, 0x2000- a
/// compatible ID of the device matched the model's hardware ID, 0x3000- compatible vs compatible).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceMatch {
    pub model: Model,
    pub rank: u32,
}

/// A parsed INF with its validated `[Version]`: the entry point of the semantic layer.
#[derive(Debug, Clone)]
pub struct Inf {
    file: InfFile,
    version: Version,
}

impl Inf {
    /// Parse an INF (lexical layer, default locale, then `[Version]`).
    pub fn parse(name: &str, bytes: &[u8]) -> Result<Inf, InfError> {
        Self::from_file(InfFile::parse(name, bytes)?)
    }

    /// Parse with explicit options (locale).
    pub fn parse_with(name: &str, bytes: &[u8], options: &ParseOptions) -> Result<Inf, InfError> {
        Self::from_file(InfFile::parse_with(name, bytes, options)?)
    }

    /// Read and parse an INF file; `path` is used as the file name in messages.
    pub fn open(path: &Path, options: &ParseOptions) -> Result<Inf, InfError> {
        let name = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|e| InfError {
            file: name.clone(),
            line: 1,
            message: format!("cannot read: {e}"),
        })?;
        Self::parse_with(&name, &bytes, options)
    }

    /// Wrap a lexically parsed file, checking `[Version]`.
    pub fn from_file(file: InfFile) -> Result<Inf, InfError> {
        let version = Version::parse(&file)?;
        Ok(Inf { file, version })
    }

    pub fn file(&self) -> &InfFile {
        &self.file
    }

    pub fn name(&self) -> &str {
        self.file.name()
    }

    pub fn version(&self) -> &Version {
        &self.version
    }

    /// Warnings of the lexical layer.
    pub fn warnings(&self) -> &[InfWarning] {
        self.file.warnings()
    }

    /// Whether the INF installs devices (has a `[Manufacturer]` section).
    pub fn has_manufacturer(&self) -> bool {
        self.file.has_section("Manufacturer")
    }

    /// The `[Manufacturer]` entries.
    pub fn manufacturers(&self) -> Result<Vec<Manufacturer>, InfError> {
        let sec = self
            .file
            .section("Manufacturer")
            .ok_or_else(|| self.file.file_error("no [Manufacturer] section"))?;
        let mut out = Vec::new();
        for l in &sec.lines {
            let models = l.text(0);
            if models.is_empty() {
                return Err(l.error("Manufacturer entry names no Models section"));
            }
            let name = l.key_text().unwrap_or(models).to_string();
            let mut decorations = Vec::new();
            for f in &l.fields()[1..] {
                if f.is_empty() {
                    continue;
                }
                match Decoration::parse(f.text()) {
                    Some(d) => decorations.push(d),
                    None => return Err(l.error(format!("bad TargetOS decoration `{}` (expected NT[arch][.major[.minor[.product[.suite[.build]]]]])", f.text()))),
                }
            }
            out.push(Manufacturer {
                name,
                models_section: models.to_string(),
                decorations,
                origin: l.origin.clone(),
            });
        }
        Ok(out)
    }

    /// All models the INF offers for `target`, manufacturer by manufacturer, in file order.
    pub fn models(&self, target: &TargetOs) -> Result<Vec<Model>, InfError> {
        let mut out = Vec::new();
        for m in self.manufacturers()? {
            let section_name = m.models_section_for(target)?;
            let sec = self.file.section(&section_name).ok_or_else(|| {
                m.origin.error(format!(
                    "Models section [{section_name}] of manufacturer {} not found",
                    m.name
                ))
            })?;
            for l in &sec.lines {
                let install = l.text(0);
                if install.is_empty() {
                    return Err(l.error("Models entry names no install section"));
                }
                let description = l.key_text().unwrap_or("").to_string();
                let hardware_id = Some(l.text(1).to_string()).filter(|s| !s.is_empty());
                let compatible_ids = l
                    .fields()
                    .iter()
                    .skip(2)
                    .map(|f| f.text().to_string())
                    .filter(|s| !s.is_empty())
                    .collect();
                out.push(Model {
                    manufacturer: m.name.clone(),
                    models_section: sec.name.clone(),
                    description,
                    install_section: install.to_string(),
                    hardware_id,
                    compatible_ids,
                    origin: l.origin.clone(),
                });
            }
        }
        Ok(out)
    }

    /// The best model for a device with these hardware IDs and compatible IDs (each most
    /// specific first), ranked as Windows does; None if nothing matches.
    pub fn match_device(
        &self,
        hardware_ids: &[&str],
        compatible_ids: &[&str],
        target: &TargetOs,
    ) -> Result<Option<DeviceMatch>, InfError> {
        let mut best: Option<DeviceMatch> = None;
        for model in self.models(target)? {
            let inf_ids: Vec<(bool, &str)> = model
                .hardware_id
                .iter()
                .map(|h| (true, h.as_str()))
                .chain(model.compatible_ids.iter().map(|c| (false, c.as_str())))
                .collect();
            let dev_ids = hardware_ids
                .iter()
                .map(|h| (true, *h))
                .chain(compatible_ids.iter().map(|c| (false, *c)));
            let mut rank = None;
            for (di, (dev_hw, dev_id)) in dev_ids.enumerate() {
                for (ii, (inf_hw, inf_id)) in inf_ids.iter().enumerate() {
                    if !dev_id.eq_ignore_ascii_case(inf_id) {
                        continue;
                    }
                    let class = match (dev_hw, inf_hw) {
                        (true, true) => 0,
                        (true, false) => 1,
                        (false, true) => 2,
                        (false, false) => 3,
                    };
                    let r = class * 0x1000 + (di.min(15) as u32) * 0x100 + ii.min(255) as u32;
                    rank = Some(rank.map_or(r, |x: u32| x.min(r)));
                }
            }
            if let Some(r) = rank {
                if best.as_ref().is_none_or(|b| r < b.rank) {
                    best = Some(DeviceMatch { model, rank: r });
                }
            }
        }
        Ok(best)
    }
}
