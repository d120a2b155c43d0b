//! Mapping a parsed driver image into guest memory: sections, protections, base relocations, and
//! import binding against the module export tables (unknown imports bind to named traps).

use dbt::Prot;
use ntoskrnl::{Kernel, LoadedImage};

use crate::pe::{ImportName, PeImage};

const PAGE: u64 = 0x1000;
const IMAGE_REL_BASED_ABSOLUTE: u8 = 0;
const IMAGE_REL_BASED_HIGHLOW: u8 = 3;
const IMAGE_REL_BASED_DIR64: u8 = 10;

/// Maps `pe` (named `name`) into the kernel's guest memory and binds its imports.
pub fn map_image(k: &mut Kernel, name: &str, pe: &PeImage) -> Result<LoadedImage, String> {
    let size = (pe.size_of_image as u64).div_ceil(PAGE) * PAGE;
    let rw = Prot::READ | Prot::WRITE;
    let base =
        k.m.mem
            .alloc_at_or_near(pe.image_base, size, rw)
            .map_err(|e| format!("no room for the {size:#x}-byte image in guest memory: {e}"))?;
    if base != pe.image_base && pe.relocs_stripped {
        let _ = k.m.mem.free(base);
        return Err(format!(
            "relocations are stripped and the preferred base {:#x} is not available",
            pe.image_base
        ));
    }
    let mapped = copy_and_relocate(k, base, pe)
        .and_then(|()| protect_sections(k, base, pe))
        .and_then(|()| bind_imports(k, base, pe));
    if let Err(e) = mapped {
        let _ = k.m.mem.free(base);
        return Err(e);
    }
    k.m.invalidate_code(base, size);
    let mut symbols: Vec<(u64, String)> = pe
        .exports
        .iter()
        .map(|(name, rva)| (u64::from(*rva), name.clone()))
        .collect();
    symbols.sort();
    let image = LoadedImage {
        name: name.to_string(),
        base,
        size,
        entry: base + pe.entry_rva as u64,
        symbols,
    };
    k.images.push(image.clone());
    Ok(image)
}

fn copy_and_relocate(k: &mut Kernel, base: u64, pe: &PeImage) -> Result<(), String> {
    k.m.mem
        .write_bytes(base, &pe.headers)
        .map_err(|e| format!("writing headers: {e}"))?;
    for s in &pe.sections {
        k.m.mem
            .write_bytes(base + s.rva as u64, &s.data)
            .map_err(|e| format!("section {} at RVA {:#x}: {e}", s.name, s.rva))?;
    }
    let delta = base.wrapping_sub(pe.image_base);
    for &(rva, kind) in &pe.relocations {
        let at = base + rva as u64;
        let fixed = match kind {
            IMAGE_REL_BASED_ABSOLUTE => Ok(()),
            IMAGE_REL_BASED_HIGHLOW => {
                k.m.mem
                    .read_u32(at)
                    .and_then(|v| k.m.mem.write_u32(at, v.wrapping_add(delta as u32)))
            }
            IMAGE_REL_BASED_DIR64 => {
                k.m.mem
                    .read_u64(at)
                    .and_then(|v| k.m.mem.write_u64(at, v.wrapping_add(delta)))
            }
            other => {
                return Err(format!(
                    "unsupported base relocation type {other} at RVA {rva:#x}"
                ))
            }
        };
        fixed.map_err(|e| {
            format!("base relocation at RVA {rva:#x} points outside the image: {e}")
        })?;
    }
    Ok(())
}

fn bind_imports(k: &mut Kernel, base: u64, pe: &PeImage) -> Result<(), String> {
    for import in &pe.imports {
        let name = match &import.name {
            ImportName::Name(n) => n.clone(),
            ImportName::Ordinal(o) => format!("#{o}"),
        };
        let thunk = k.bind_import(&import.module, &name);
        k.write_ptr(base + import.iat_rva as u64, thunk)
            .map_err(|e| {
                format!(
                    "import {}!{name}: IAT slot at RVA {:#x} is not in the image: {e}",
                    import.module, import.iat_rva
                )
            })?;
    }
    Ok(())
}

fn protect_sections(k: &mut Kernel, base: u64, pe: &PeImage) -> Result<(), String> {
    let headers = (pe.size_of_headers as u64).div_ceil(PAGE) * PAGE;
    k.m.mem
        .protect(base, headers.max(PAGE), Prot::READ)
        .map_err(|e| format!("protecting headers: {e}"))?;
    for s in &pe.sections {
        let len = (s.virtual_size as u64).div_ceil(PAGE) * PAGE;
        if len == 0 {
            continue;
        }
        let mut prot = Prot::READ;
        if s.is_code() {
            prot |= Prot::EXEC;
        }
        if s.is_writable() {
            prot |= Prot::WRITE;
        }
        k.m.mem
            .protect(base + s.rva as u64, len, prot)
            .map_err(|e| format!("protecting section {}: {e}", s.name))?;
    }
    Ok(())
}
