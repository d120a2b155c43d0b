//! Corrupt driver images found by fuzzing (`fuzz/`, target `pe`): each must be refused with an
//! error naming the problem, never crash the host.

use std::path::PathBuf;

use dbt::Arch;
use loader::{image, pe, DriverHost};

fn driver(arch: &str, name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/drivers/bin")
        .join(arch)
        .join(format!("{name}.sys"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

/// File offset of `rva`.
fn file_offset(image: &[u8], rva: u32) -> usize {
    let nt = u32_at(image, 0x3c) as usize;
    let count = u16::from_le_bytes([image[nt + 6], image[nt + 7]]) as usize;
    let opt_size = u16::from_le_bytes([image[nt + 20], image[nt + 21]]) as usize;
    let table = nt + 24 + opt_size;
    (0..count)
        .map(|i| table + i * 40)
        .find_map(|at| {
            let (va, size, raw) = (
                u32_at(image, at + 12),
                u32_at(image, at + 8),
                u32_at(image, at + 20),
            );
            (va..va + size)
                .contains(&rva)
                .then(|| (raw + rva - va) as usize)
        })
        .unwrap_or_else(|| panic!("RVA {rva:#x} is in no section"))
}

/// Offset of the section header called `name`.
fn section_header(image: &[u8], name: &str) -> usize {
    let nt = u32_at(image, 0x3c) as usize;
    let count = u16::from_le_bytes([image[nt + 6], image[nt + 7]]) as usize;
    let opt_size = u16::from_le_bytes([image[nt + 20], image[nt + 21]]) as usize;
    let table = nt + 24 + opt_size;
    (0..count)
        .map(|i| table + i * 40)
        .find(|&at| image[at..at + 8].starts_with(name.as_bytes()))
        .unwrap_or_else(|| panic!("no {name} section"))
}

#[test]
fn section_whose_file_offset_and_rva_align_differently_is_refused() {
    // pelite checked the relocation directory's alignment by RVA and read it at a file offset 3
    // bytes off: a debug assertion in pelite (a misaligned read in release builds).
    for arch in ["x86", "x64"] {
        let mut image = driver(arch, "ioctl");
        let reloc = section_header(&image, ".reloc");
        let raw = u32_at(&image, reloc + 20) - 1;
        image[reloc + 20..reloc + 24].copy_from_slice(&raw.to_le_bytes());
        let e = pe::parse(&image).expect_err("a misaligned section is refused");
        assert!(
            e.problem.contains("are not aligned alike"),
            "{arch}: {}",
            e.problem
        );
    }
}

#[test]
fn optional_header_size_that_misaligns_the_section_table_is_refused() {
    // pelite builds the section table slice at the end of the optional header without checking
    // its alignment: an odd SizeOfOptionalHeader aborted the process (misaligned slice).
    for arch in ["x86", "x64"] {
        let mut image = driver(arch, "ioctl");
        let nt = u32_at(&image, 0x3c) as usize;
        let size = u16::from_le_bytes([image[nt + 20], image[nt + 21]]) + 2;
        image[nt + 20..nt + 22].copy_from_slice(&size.to_le_bytes());
        let e = pe::parse(&image).expect_err("a misaligned section table is refused");
        assert!(
            e.problem.contains("is not a multiple of 4"),
            "{arch}: {}",
            e.problem
        );
    }
}

#[test]
fn a_failed_import_binding_unmaps_the_image() {
    // An import whose IAT slot lies outside the image failed the load but left the image's
    // guest memory allocated (found by the pe fuzz target's "a failed load leaves guest memory as
    // it was" check).
    for arch in [Arch::X86, Arch::X64] {
        let mut image = driver(arch.name(), "ioctl");
        let nt = u32_at(&image, 0x3c) as usize;
        let directories = nt + 24 + if arch == Arch::X86 { 96 } else { 112 };
        let imports = file_offset(&image, u32_at(&image, directories + 8));
        // IMAGE_IMPORT_DESCRIPTOR.FirstThunk of the first imported module: 16 MiB out.
        image[imports + 16..imports + 20].copy_from_slice(&0x0100_0000u32.to_le_bytes());
        let pe = pe::parse(&image).expect("the headers and tables parse");
        let mut h = DriverHost::new(arch).unwrap_or_else(|e| panic!("{e}"));
        let before: Vec<_> = h.k.m.mem.regions().collect();
        let e = image::map_image(&mut h.k, "ioctl.sys", &pe).expect_err("the IAT slot is outside");
        assert!(
            e.contains("IAT slot at RVA 0x1000000 is not in the image"),
            "{e}"
        );
        assert_eq!(
            h.k.m.mem.regions().collect::<Vec<_>>(),
            before,
            "nothing stays mapped"
        );
        assert!(h.k.images.is_empty());
    }
}

#[test]
fn relocation_block_size_near_4_gib_is_refused_not_looped_on() {
    // pelite's relocation walk rounds SizeOfBlock up to 4 with wrapping arithmetic: 0xFFFFFFFF
    // became a step of 0 and the load never finished (found by the pe fuzz target's watchdog).
    for arch in ["x86", "x64"] {
        let mut image = driver(arch, "ioctl");
        let reloc = section_header(&image, ".reloc");
        let block = u32_at(&image, reloc + 20) as usize;
        image[block + 4..block + 8].copy_from_slice(&u32::MAX.to_le_bytes());
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || tx.send(pe::parse(&image).map(|_| ())));
        let parsed = rx
            .recv_timeout(std::time::Duration::from_secs(10))
            .unwrap_or_else(|_| panic!("{arch}: parsing did not finish"));
        let e = parsed.expect_err("the block is bigger than the directory");
        assert!(
            e.problem.contains("SizeOfBlock 0xffffffff"),
            "{arch}: {}",
            e.problem
        );
    }
}
