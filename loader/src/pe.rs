//! Reading a driver's PE file into a neutral description (headers, sections, relocations, imports),
//! for PE32 (x86-32) and PE32+ (x64) alike. Headers are validated here so that a bad file gets an
//! error naming the offset and the problem; pelite walks the tables.

use std::fmt;

use dbt::Arch;

/// Why a file is not a loadable driver image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeError {
    /// The problem, naming the offset where it applies.
    pub problem: String,
}

impl fmt::Display for PeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.problem)
    }
}

fn err<T>(problem: impl Into<String>) -> Result<T, PeError> {
    Err(PeError {
        problem: problem.into(),
    })
}

/// One section of the image.
#[derive(Debug, Clone)]
pub struct Section {
    /// Name, e.g. `.text`.
    pub name: String,
    /// RVA of the section.
    pub rva: u32,
    /// Size in memory.
    pub virtual_size: u32,
    /// Bytes from the file (may be shorter than `virtual_size`; the rest is zero).
    pub data: Vec<u8>,
    /// IMAGE_SCN_* characteristics.
    pub characteristics: u32,
}

impl Section {
    /// Contains code (IMAGE_SCN_CNT_CODE or IMAGE_SCN_MEM_EXECUTE).
    pub fn is_code(&self) -> bool {
        self.characteristics & (0x0000_0020 | 0x2000_0000) != 0
    }

    /// Writable (IMAGE_SCN_MEM_WRITE).
    pub fn is_writable(&self) -> bool {
        self.characteristics & 0x8000_0000 != 0
    }
}

/// What an import refers to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImportName {
    /// By name.
    Name(String),
    /// By ordinal.
    Ordinal(u16),
}

impl fmt::Display for ImportName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ImportName::Name(n) => f.write_str(n),
            ImportName::Ordinal(o) => write!(f, "#{o}"),
        }
    }
}

/// One imported function and the IAT slot to patch.
#[derive(Debug, Clone)]
pub struct Import {
    /// Module file name as written in the image.
    pub module: String,
    /// Function.
    pub name: ImportName,
    /// RVA of its IAT slot.
    pub iat_rva: u32,
}

/// A parsed driver image.
#[derive(Debug, Clone)]
pub struct PeImage {
    /// Guest architecture the image is for.
    pub arch: Arch,
    /// Preferred base address.
    pub image_base: u64,
    /// SizeOfImage.
    pub size_of_image: u32,
    /// SizeOfHeaders.
    pub size_of_headers: u32,
    /// RVA of the entry point (DriverEntry).
    pub entry_rva: u32,
    /// IMAGE_FILE_RELOCS_STRIPPED: the image can only live at its preferred base.
    pub relocs_stripped: bool,
    /// The file's headers (mapped at the image base).
    pub headers: Vec<u8>,
    /// Sections.
    pub sections: Vec<Section>,
    /// Base relocations: (rva, type).
    pub relocations: Vec<(u32, u8)>,
    /// Imports in IAT order.
    pub imports: Vec<Import>,
    /// Exports by name: (name, RVA); forwarders are left out.
    pub exports: Vec<(String, u32)>,
}

const IMAGE_FILE_MACHINE_I386: u16 = 0x014c;
const IMAGE_FILE_MACHINE_AMD64: u16 = 0x8664;
const IMAGE_FILE_RELOCS_STRIPPED: u16 = 0x0001;
const IMAGE_FILE_DLL: u16 = 0x2000;
const IMAGE_SUBSYSTEM_NATIVE: u16 = 1;

fn machine_name(machine: u16) -> String {
    match machine {
        0xAA64 => "ARM64".into(),
        0x01c4 => "ARM (Thumb-2)".into(),
        0x0200 => "IA-64".into(),
        0x0ebc => "EFI byte code".into(),
        other => format!("{other:#06x}"),
    }
}

fn subsystem_name(subsystem: u16) -> String {
    match subsystem {
        2 => "Windows GUI".into(),
        3 => "Windows console".into(),
        10..=13 => "EFI".into(),
        other => format!("{other}"),
    }
}

fn u16_at(b: &[u8], off: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(off..off + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(off..off + 4)?.try_into().ok()?))
}

/// Validates the DOS, NT and optional headers, returning (arch, NT headers offset).
fn check_headers(bytes: &[u8]) -> Result<Arch, PeError> {
    if bytes.len() < 64 {
        return err(format!(
            "truncated: {} bytes is too short for a DOS header (64 bytes)",
            bytes.len()
        ));
    }
    if &bytes[0..2] != b"MZ" {
        return err("not a PE file: no 'MZ' signature at offset 0");
    }
    let nt = u32_at(bytes, 0x3c).unwrap_or(0) as usize;
    match bytes.get(nt..nt + 4) {
        Some(b"PE\0\0") => {}
        Some(_) => {
            return err(format!(
                "not a PE file: no 'PE' signature at offset {nt:#x} (e_lfanew)"
            ))
        }
        None => {
            return err(format!(
                "truncated: e_lfanew points to {nt:#x}, past the end of the file"
            ))
        }
    }
    let machine = u16_at(bytes, nt + 4).ok_or_else(|| PeError {
        problem: format!("truncated file header at {:#x}", nt + 4),
    })?;
    let arch = match machine {
        IMAGE_FILE_MACHINE_I386 => Arch::X86,
        IMAGE_FILE_MACHINE_AMD64 => Arch::X64,
        other => {
            return err(format!(
                "unsupported machine {} at offset {:#x}: only x86-32 (0x014c) and x64 (0x8664) drivers run here",
                machine_name(other),
                nt + 4
            ))
        }
    };
    let characteristics = u16_at(bytes, nt + 22).unwrap_or(0);
    let opt = nt + 24;
    let magic = u16_at(bytes, opt).ok_or_else(|| PeError {
        problem: format!("truncated: no optional header at {opt:#x}"),
    })?;
    let (expected, kind) = match arch {
        Arch::X86 => (0x10b, "PE32"),
        Arch::X64 => (0x20b, "PE32+"),
    };
    if magic != expected {
        return err(format!(
            "corrupt optional header at {opt:#x}: magic {magic:#x} does not match a {kind} image for machine {}",
            machine_name(machine)
        ));
    }
    let subsystem_off = opt + 68;
    let subsystem = u16_at(bytes, subsystem_off).ok_or_else(|| PeError {
        problem: format!("truncated optional header at {opt:#x}"),
    })?;
    if subsystem != IMAGE_SUBSYSTEM_NATIVE {
        let what = if characteristics & IMAGE_FILE_DLL != 0 {
            "DLL"
        } else {
            "program"
        };
        return err(format!(
            "not a kernel driver: subsystem {} at offset {subsystem_off:#x} (a user-mode {what}; drivers are native, subsystem 1)",
            subsystem_name(subsystem)
        ));
    }
    let sections = u16_at(bytes, nt + 6).unwrap_or(0) as usize;
    let opt_size = u16_at(bytes, nt + 20).unwrap_or(0) as usize;
    if !opt_size.is_multiple_of(4) {
        // pelite reads the section table in place, as 4-aligned structures.
        return err(format!(
            "corrupt file header at {:#x}: SizeOfOptionalHeader {opt_size:#x} is not a multiple of 4",
            nt + 4
        ));
    }
    let table = opt + opt_size;
    if table + sections * 40 > bytes.len() {
        return err(format!(
            "truncated: the section table at {table:#x} ({sections} sections) extends past the end of the file ({:#x} bytes)",
            bytes.len()
        ));
    }
    // pelite checks the alignment of a table by its RVA, then reads it at its file offset: a
    // section whose file offset and RVA are aligned differently would have it read misaligned
    // structures. Real images align both to at least 8 (FileAlignment, SectionAlignment).
    for i in 0..sections {
        let at = table + i * 40;
        let (rva, raw_size, raw_ptr) = (
            u32_at(bytes, at + 12).unwrap_or(0),
            u32_at(bytes, at + 16).unwrap_or(0),
            u32_at(bytes, at + 20).unwrap_or(0),
        );
        if raw_size != 0 && !raw_ptr.wrapping_sub(rva).is_multiple_of(8) {
            return err(format!(
                "corrupt section header at {at:#x}: file offset {raw_ptr:#x} and RVA {rva:#x} are not aligned alike (their difference must be a multiple of 8)"
            ));
        }
    }
    let entry = u32_at(bytes, opt + 16).unwrap_or(0);
    if entry == 0 {
        return err(format!(
            "no entry point: AddressOfEntryPoint at offset {:#x} is 0",
            opt + 16
        ));
    }
    Ok(arch)
}

fn pelite_problem(what: &str, e: pelite::Error) -> PeError {
    let problem = match e {
        pelite::Error::Bounds => {
            format!("truncated or corrupt {what}: it extends past the end of the file")
        }
        other => format!("corrupt {what}: {other}"),
    };
    PeError { problem }
}

/// The (RVA, type) entries of a base relocation directory, walked the way the Windows loader
/// does: block after block until a block of size 0 or the end (pelite's walk loops forever on a
/// SizeOfBlock near 4 GiB). IMAGE_REL_BASED_ABSOLUTE padding entries are left out.
fn relocation_entries(dir: &[u8]) -> Result<Vec<(u32, u8)>, PeError> {
    let mut out = Vec::new();
    let mut at = 0;
    while let (Some(page), Some(size)) = (u32_at(dir, at), u32_at(dir, at + 4)) {
        if size == 0 {
            break;
        }
        let size = size as usize;
        if size < 8 || size > dir.len() - at {
            return err(format!(
                "corrupt relocation block at directory offset {at:#x}: SizeOfBlock {size:#x} (at least 8, at most the {:#x} bytes left)",
                dir.len() - at
            ));
        }
        for word in dir[at + 8..at + size].chunks_exact(2) {
            let word = u16::from_le_bytes([word[0], word[1]]);
            let kind = (word >> 12) as u8;
            if kind != 0 {
                out.push((page.wrapping_add(u32::from(word & 0xfff)), kind));
            }
        }
        at += size;
    }
    Ok(out)
}

macro_rules! describe_image {
    ($module:ident, $pe:expr, $arch:expr, $bytes:expr) => {{
        use pelite::$module::Pe as _;
        let pe = $pe;
        let opt = pe.optional_header();
        let file = pe.file_header();
        let mut sections = Vec::new();
        for s in pe.section_headers() {
            let name = s.name().map(|n| n.to_string()).unwrap_or_else(|_| String::from_utf8_lossy(&s.Name).into_owned());
            let start = s.PointerToRawData as usize;
            let len = s.SizeOfRawData.min(s.VirtualSize.max(s.SizeOfRawData)) as usize;
            let data = if len == 0 {
                Vec::new()
            } else {
                match $bytes.get(start..start + len) {
                    Some(d) => d.to_vec(),
                    None => {
                        return err(format!(
                            "truncated: section {name} claims file bytes {start:#x}..{:#x}, past the end of the file ({:#x} bytes)",
                            start + len,
                            $bytes.len()
                        ))
                    }
                }
            };
            if s.VirtualAddress as u64 + s.VirtualSize.max(s.SizeOfRawData) as u64 > opt.SizeOfImage as u64 {
                return err(format!("corrupt section {name}: it extends past SizeOfImage {:#x}", opt.SizeOfImage));
            }
            sections.push(Section {
                name,
                rva: s.VirtualAddress,
                virtual_size: s.VirtualSize.max(s.SizeOfRawData),
                data,
                characteristics: s.Characteristics,
            });
        }
        let mut relocations = Vec::new();
        match pe.base_relocs() {
            Ok(relocs) => relocations = relocation_entries(relocs.image())?,
            Err(pelite::Error::Null) => {}
            Err(e) => return Err(pelite_problem("relocation directory", e)),
        }
        let mut imports = Vec::new();
        match pe.imports() {
            Ok(list) => {
                for desc in list {
                    let module = desc.dll_name().map_err(|e| pelite_problem("import module name", e))?.to_string();
                    let iat_start = desc.image().FirstThunk;
                    let names = desc.int().map_err(|e| pelite_problem(&format!("import name table of {module}"), e))?;
                    for (i, name) in names.enumerate() {
                        let name = match name.map_err(|e| pelite_problem(&format!("import of {module}"), e))? {
                            pelite::$module::imports::Import::ByName { name, .. } => ImportName::Name(name.to_string()),
                            pelite::$module::imports::Import::ByOrdinal { ord } => ImportName::Ordinal(ord),
                        };
                        let slot = std::mem::size_of::<pelite::$module::Va>() as u32;
                        imports.push(Import { module: module.clone(), name, iat_rva: iat_start + i as u32 * slot });
                    }
                }
            }
            Err(pelite::Error::Null) => {}
            Err(e) => return Err(pelite_problem("import directory", e)),
        }
        let mut exports = Vec::new();
        match pe.exports().and_then(|e| e.by()) {
            Ok(by) => {
                for (name, export) in by.iter_names() {
                    let name = name.map_err(|e| pelite_problem("export name", e))?;
                    if let Ok(pelite::$module::exports::Export::Symbol(&rva)) = export {
                        exports.push((name.to_string(), rva));
                    }
                }
            }
            Err(pelite::Error::Null) => {}
            Err(e) => return Err(pelite_problem("export directory", e)),
        }
        let headers_len = (opt.SizeOfHeaders as usize).min($bytes.len());
        PeImage {
            arch: $arch,
            image_base: opt.ImageBase as u64,
            size_of_image: opt.SizeOfImage,
            size_of_headers: opt.SizeOfHeaders,
            entry_rva: opt.AddressOfEntryPoint,
            relocs_stripped: file.Characteristics & IMAGE_FILE_RELOCS_STRIPPED != 0,
            headers: $bytes[..headers_len].to_vec(),
            sections,
            relocations,
            imports,
            exports,
        }
    }};
}

/// Parses a driver image from its file bytes.
pub fn parse(bytes: &[u8]) -> Result<PeImage, PeError> {
    let arch = check_headers(bytes)?;
    let image = match arch {
        Arch::X86 => {
            let pe = pelite::pe32::PeFile::from_bytes(bytes)
                .map_err(|e| pelite_problem("PE headers", e))?;
            describe_image!(pe32, pe, arch, bytes)
        }
        Arch::X64 => {
            let pe = pelite::pe64::PeFile::from_bytes(bytes)
                .map_err(|e| pelite_problem("PE headers", e))?;
            describe_image!(pe64, pe, arch, bytes)
        }
    };
    if image.entry_rva >= image.size_of_image {
        return err(format!(
            "corrupt entry point: AddressOfEntryPoint {:#x} lies outside the image (SizeOfImage {:#x})",
            image.entry_rva, image.size_of_image
        ));
    }
    Ok(image)
}
