//! PE loader target: any bytes as a driver image, what `DriverHost::load_image` does on a fresh
//! kernel of the image's architecture: parse, map, relocate, protect, bind the imports. A failed
//! load must leave guest memory and the loaded-module list as they were; a mapped image must lie
//! in mapped memory, and unmapping it must free everything the load took.

use std::path::Path;

use loader::{image, pe, DriverHost};

use crate::mutate::Havoc;
use crate::rng::Rng;

/// The committed test drivers of both architectures, whole and truncated (inside the headers,
/// the section table and the sections).
pub fn seeds() -> Vec<Vec<u8>> {
    let bin = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/drivers/bin");
    let mut out = Vec::new();
    for arch in ["x86", "x64"] {
        let Ok(entries) = std::fs::read_dir(bin.join(arch)) else {
            continue;
        };
        let mut paths: Vec<_> = entries.flatten().map(|e| e.path()).collect();
        paths.sort();
        for image in paths.iter().filter_map(|p| std::fs::read(p).ok()) {
            for cut in [0x40, 0x100, 0x200, 0x400, image.len() / 2, image.len() - 1] {
                out.push(image[..cut.min(image.len())].to_vec());
            }
            out.push(image);
        }
    }
    out
}

const HAVOC: Havoc = Havoc {
    dict: &[
        b"MZ",
        b"PE\0\0",
        b"\x4c\x01",
        b"\x64\x86",
        b"\x0b\x01",
        b"\x0b\x02",
        b".text\0\0\0",
        b".reloc\0\0",
        b"ntoskrnl.exe\0",
        b"HAL.dll\0",
        b"NDIS.SYS\0",
        b"IoCreateDevice\0",
    ],
    max_len: 256 * 1024,
    // DOS, NT and optional headers and the section table.
    hot: 0x400,
};

/// A new input: `parent` mutated (byte-level, biased to the headers), maybe spliced with `other`.
pub fn next_input(rng: &mut Rng, parent: &[u8], other: &[u8]) -> Vec<u8> {
    HAVOC.mutate(rng, parent, other)
}

fn regions(h: &DriverHost) -> Vec<(u64, u64)> {
    h.k.m.mem.regions().collect()
}

/// The target. The outcome class is the error (or "mapped" and the architecture).
pub fn run(data: &[u8]) -> String {
    let pe = match pe::parse(data) {
        Ok(pe) => pe,
        Err(e) => return format!("parse: {}", e.problem),
    };
    let mut h = DriverHost::new(pe.arch).unwrap_or_else(|e| panic!("fresh driver host: {e}"));
    let before = regions(&h);
    let loaded = h.k.images.len();
    match image::map_image(&mut h.k, "fuzz.sys", &pe) {
        Err(problem) => {
            assert_eq!(
                regions(&h),
                before,
                "a failed load ({problem}) leaves guest memory as it was"
            );
            assert_eq!(h.k.images.len(), loaded, "a failed load lists no image");
            format!("map: {problem}")
        }
        Ok(img) => {
            assert_eq!(h.k.images.len(), loaded + 1, "the image is listed");
            assert!(
                h.k.m.mem.is_mapped(img.base, img.size),
                "the image {:#x}+{:#x} is mapped",
                img.base,
                img.size
            );
            assert!(
                (img.base..img.base + img.size).contains(&img.entry),
                "the entry point lies in the image"
            );
            h.k.images.pop();
            h.k.m.invalidate_code(img.base, img.size);
            h.k.m
                .mem
                .free(img.base)
                .unwrap_or_else(|e| panic!("unmapping the image: {e}"));
            assert_eq!(regions(&h), before, "unmapping frees all the load took");
            format!("mapped {}", pe.arch.name())
        }
    }
}
