//! `.reg` importer target: any bytes imported into a scratch store (in memory) that already holds
//! some keys. An import is all or nothing: after a failed one the store is exactly as before. After
//! a successful one, the store's export must import into a fresh store and export the same again
//! (export -> import -> export is stable).

use loader::registry::reg_file::decode_text;
use loader::registry::{RegFileError, RegistryStore};

use crate::mutate::{reencode, Havoc};
use crate::rng::Rng;

/// What the scratch store holds before each input: keys and values for the input to delete,
/// overwrite and export again.
const BASE: &str = "Windows Registry Editor Version 5.00\r\n\r\n\
    [HKEY_LOCAL_MACHINE\\SOFTWARE\\Ica]\r\n\
    @=\"default\"\r\n\
    \"Path\"=\"C:\\\\Windows\"\r\n\
    \"Count\"=dword:00000007\r\n\
    \"Multi\"=hex(7):61,00,00,00,62,00,00,00,00,00\r\n\r\n\
    [HKEY_LOCAL_MACHINE\\SOFTWARE\\Ica\\Sub Key]\r\n\
    \"Bin\"=hex:01,02,03\r\n\r\n\
    [HKEY_LOCAL_MACHINE\\SYSTEM\\CurrentControlSet\\Services\\ica]\r\n\
    \"Type\"=dword:00000001\r\n\
    \"ImagePath\"=hex(2):5c,00,3f,00,00,00\r\n\r\n\
    [HKEY_USERS\\.DEFAULT\\Software\\Ica]\r\n\
    \"Name\"=\"user\"\r\n";

const HEADERS: &[&str] = &[
    "Windows Registry Editor Version 5.00",
    "REGEDIT4",
    "Windows Registry Editor Version 4.00",
    "",
];

const ROOTS: &[&str] = &[
    "HKEY_LOCAL_MACHINE",
    "HKLM",
    "HKEY_USERS",
    "HKU",
    "HKEY_CURRENT_USER",
    "HKCU",
    "HKEY_CLASSES_ROOT",
    "HKCC",
    "HKEY_BOGUS",
    "",
];

const COMPONENTS: &[&str] = &[
    "SOFTWARE",
    "Software",
    "Ica",
    "ica",
    "Sub Key",
    "SYSTEM",
    "CurrentControlSet",
    "Services",
    ".DEFAULT",
    "Über",
    "a]b",
    "-x",
    " ",
    "",
    "..",
    "\\",
];

const NAMES: &[&str] = &[
    "@",
    "\"Path\"",
    "\"Count\"",
    "\"Multi\"",
    "\"New\"",
    "\"new\"",
    "\"quote\\\"d\"",
    "\"back\\\\slash\"",
    "\"\"",
    "\"unterminated",
    "Bare",
];

const STRINGS: &[&str] = &[
    "",
    "text",
    "C:\\\\",
    "\\\\",
    "\\\"",
    "\\",
    "é",
    "a;b",
    "\t",
    "%SystemRoot%",
];

const DATA: &[&str] = &[
    "-",
    "dword:00000000",
    "dword:ffffffff",
    "dword:1",
    "dword:123456789",
    "dword:",
    "dword:xyz",
    "hex:",
    "hex:01,02,ff",
    "hex:01,\\\r\n  02",
    "hex:1,,2",
    "hex:100",
    "hex(2):25,00,00,00",
    "hex(7):61,00,00,00,00,00",
    "hex(b):01,00,00,00,00,00,00,00",
    "hex(0):",
    "hex(1):41",
    "hex(ffffffff):00",
    "hex(100000000):00",
    "hex(zz):00",
    "hex(4",
];

/// The base file and a few structured files from a fixed seed (the committed corpus adds real
/// exports).
pub fn seeds() -> Vec<Vec<u8>> {
    let mut rng = Rng::new(0x4E6);
    let mut out = vec![BASE.as_bytes().to_vec()];
    out.extend((0..8).map(|_| structured(&mut rng).into_bytes()));
    out
}

/// A random `.reg` file built from meaningful pieces (headers, key paths, value lines).
pub fn structured(rng: &mut Rng) -> String {
    let eol = if rng.chance(80) { "\r\n" } else { "\n" };
    let mut out = format!("{}{eol}{eol}", rng.pick(HEADERS));
    for _ in 0..rng.below(6) {
        out.push('[');
        if rng.chance(15) {
            out.push('-');
        }
        out.push_str(rng.pick(ROOTS));
        for _ in 0..rng.below(4) {
            out.push('\\');
            out.push_str(rng.pick(COMPONENTS));
        }
        out.push(']');
        out.push_str(eol);
        for _ in 0..rng.below(5) {
            out.push_str(rng.pick(NAMES));
            out.push('=');
            if rng.chance(40) {
                out.push('"');
                for _ in 0..rng.below(3) {
                    out.push_str(rng.pick(STRINGS));
                }
                out.push('"');
            } else {
                out.push_str(rng.pick(DATA));
            }
            if rng.chance(5) {
                out.push_str(" ; comment");
            }
            out.push_str(eol);
        }
        if rng.chance(70) {
            out.push_str(eol);
        }
    }
    out
}

const HAVOC: Havoc = Havoc {
    dict: &[
        b"[",
        b"]",
        b"[-",
        b"\\",
        b"\\\r\n",
        b"\"",
        b"=",
        b"=-",
        b"@=",
        b"dword:",
        b"hex:",
        b"hex(2):",
        b"hex(7):",
        b",",
        b";",
        b"\r\n",
        b"HKEY_LOCAL_MACHINE\\",
        b"REGEDIT4\r\n",
    ],
    max_len: 64 * 1024,
    hot: 0,
};

/// A new input: a structured file, or `parent` mutated (maybe spliced with `other`); maybe
/// re-encoded (UTF-16, BOMs).
pub fn next_input(rng: &mut Rng, parent: &[u8], other: &[u8]) -> Vec<u8> {
    let bytes = if rng.chance(30) {
        structured(rng).into_bytes()
    } else {
        HAVOC.mutate(rng, parent, other)
    };
    reencode(rng, bytes)
}

fn scratch() -> RegistryStore {
    let store = RegistryStore::in_memory().unwrap_or_else(|e| panic!("in-memory store: {e}"));
    store
        .import_reg(BASE.as_bytes(), "base.reg")
        .unwrap_or_else(|e| panic!("base import: {e}"));
    store
}

fn export(store: &RegistryStore) -> Vec<u8> {
    store
        .export_reg(r"\Registry")
        .unwrap_or_else(|e| panic!("export: {e}"))
}

/// The first line where two exports differ, for the failure message.
fn first_difference(a: &[u8], b: &[u8]) -> String {
    let (a, b) = (decode_text(a), decode_text(b));
    let (mut la, mut lb) = (a.lines(), b.lines());
    for n in 1.. {
        match (la.next(), lb.next()) {
            (None, None) => break,
            (x, y) if x != y => return format!("line {n}: {x:?} became {y:?}"),
            _ => {}
        }
    }
    "no difference".into()
}

/// The target. The outcome class is the error, or what the import did.
pub fn run(data: &[u8]) -> String {
    let store = scratch();
    let before = export(&store);
    match store.import_reg(data, "fuzz.reg") {
        Err(e) => {
            let after = export(&store);
            assert!(
                after == before,
                "a failed import ({e}) changed the store: {}",
                first_difference(&before, &after)
            );
            match e {
                // Debug quotes the key path, which the runner folds out of the class.
                RegFileError::Registry { error, .. } => format!("error: {error:?}"),
                other => format!("error: {other}"),
            }
        }
        Ok(s) => {
            let exported = export(&store);
            let copy = RegistryStore::in_memory().unwrap_or_else(|e| panic!("store: {e}"));
            if let Err(e) = copy.import_reg(&exported, "export.reg") {
                panic!("the export of the imported file does not import: {e}");
            }
            let again = export(&copy);
            assert!(
                again == exported,
                "export -> import -> export is not stable: {}",
                first_difference(&exported, &again)
            );
            format!(
                "ok keys {} values {} deleted keys {} deleted values {}",
                s.keys.min(3),
                s.values.min(3),
                s.deleted_keys.min(3),
                s.deleted_values.min(3)
            )
        }
    }
}
