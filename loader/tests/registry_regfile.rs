//! REGEDIT5 `.reg` files: export -> import round trips, the syntax regedit writes and reads, and
//! errors that name the file and line.

use std::path::PathBuf;

use loader::registry::reg_file::{decode_text, parse, RegOp};
use loader::registry::{reg_type, RegFileError, RegValue, RegistryStore};

fn store(name: &str) -> RegistryStore {
    let dir = std::env::temp_dir().join(format!("ica-regfile-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    RegistryStore::open(&dir).expect("open store")
}

const KEY: &str = r"\Registry\Machine\Software\IcaExport";

fn sample(s: &RegistryStore) {
    s.write(|b| {
        b.set_value(KEY, "", &RegValue::sz("default"))?;
        b.set_value(KEY, "Quote\"And\\Slash", &RegValue::sz(r#"C:\path "x""#))?;
        b.set_value(KEY, "Dword", &RegValue::dword(0x0012_ABCD))?;
        b.set_value(KEY, "Qword", &RegValue::qword(u64::MAX - 1))?;
        b.set_value(KEY, "Expand", &RegValue::expand_sz(r"%SystemRoot%\x"))?;
        b.set_value(
            KEY,
            "Multi",
            &RegValue::multi_sz(&["a", "Ü", "long string"]),
        )?;
        b.set_value(
            KEY,
            "Long",
            &RegValue::binary(&(0..=255).collect::<Vec<u8>>()),
        )?;
        b.set_value(KEY, "Empty", &RegValue::binary(&[]))?;
        b.set_value(
            KEY,
            "NoTerminator",
            &RegValue::new(reg_type::SZ, vec![b'a', 0]),
        )?;
        b.set_value(KEY, "Newline", &RegValue::sz("two\nlines"))?;
        b.set_value(
            KEY,
            "ShortDword",
            &RegValue::new(reg_type::DWORD, vec![1, 2]),
        )?;
        b.set_value(KEY, "Custom", &RegValue::new(0x1234, vec![7]))?;
        b.set_value(&format!(r"{KEY}\Sub Key\Deeper"), "x", &RegValue::dword(1))?;
        b.create_key(&format!(r"{KEY}\aEmpty"))?;
        Ok(())
    })
    .unwrap();
}

#[test]
fn export_then_import_round_trips() {
    let a = store("a");
    sample(&a);
    let exported = a.export_reg(KEY).unwrap();
    assert_eq!(&exported[..2], &[0xFF, 0xFE], "UTF-16LE with BOM");
    let text = decode_text(&exported);
    assert!(text.starts_with("Windows Registry Editor Version 5.00\r\n\r\n"));
    assert!(text.contains("[HKEY_LOCAL_MACHINE\\Software\\IcaExport]\r\n@=\"default\"\r\n"));
    assert!(
        text.contains(r#""Quote\"And\\Slash"="C:\\path \"x\"""#),
        "{text}"
    );
    assert!(text.contains("\"Dword\"=dword:0012abcd\r\n"));
    assert!(text.contains("\"Qword\"=hex(b):fe,ff,ff,ff,ff,ff,ff,ff\r\n"));
    assert!(text.contains("\"Empty\"=hex:\r\n"));
    assert!(
        text.contains("\"NoTerminator\"=hex(1):61,00\r\n"),
        "not a plain string"
    );
    assert!(text.contains("\"Custom\"=hex(1234):07\r\n"));
    assert!(
        text.lines().all(|l| l.len() <= 80),
        "hex data wraps at 80 columns"
    );
    assert!(
        text.find("[HKEY_LOCAL_MACHINE\\Software\\IcaExport\\aEmpty]")
            < text.find("[HKEY_LOCAL_MACHINE\\Software\\IcaExport\\Sub Key]"),
        "subkeys in order"
    );

    let b = store("b");
    let summary = b.import_reg(&exported, "export.reg").unwrap();
    assert_eq!(summary.keys, 4);
    assert_eq!(summary.values, 13);
    assert_eq!(b.values(KEY).unwrap(), a.values(KEY).unwrap());
    assert_eq!(b.export_reg(KEY).unwrap(), exported, "stable");
}

#[test]
fn import_understands_what_regedit_writes() {
    let s = store("syntax");
    s.write(|b| {
        b.set_value(&format!(r"{KEY}\Old\Child"), "x", &RegValue::dword(1))?;
        b.set_value(KEY, "Stale", &RegValue::dword(1))
    })
    .unwrap();
    let text = "Windows Registry Editor Version 5.00\r\n\
        \r\n\
        ; a comment\r\n\
        [-HKEY_LOCAL_MACHINE\\Software\\IcaExport\\Old]\r\n\
        \r\n\
        [HKEY_LOCAL_MACHINE\\Software\\IcaExport]\r\n\
        \"Stale\"=-\r\n\
        \"Bin\"=hex:01,02,\\\r\n\
        \x20 03,04\r\n\
        \"Multi\"=hex(7):61,00,00,00,62,00,00,00,00,00\r\n\
        @=\"dflt\"\r\n\
        \"Max\"=dword:ffffffff\r\n\
        [HKLM\\Software\\IcaExport\\Short]\r\n";
    let summary = s.import_reg(text.as_bytes(), "utf8.reg").unwrap();
    assert_eq!((summary.deleted_keys, summary.deleted_values), (1, 1));
    assert!(!s.key_exists(&format!(r"{KEY}\Old")).unwrap());
    assert!(s.key_exists(&format!(r"{KEY}\Short")).unwrap());
    assert_eq!(
        s.value(KEY, "bin").unwrap(),
        Some(RegValue::binary(&[1, 2, 3, 4]))
    );
    assert_eq!(
        s.value(KEY, "multi").unwrap(),
        Some(RegValue::multi_sz(&["a", "b"]))
    );
    assert_eq!(s.value(KEY, "").unwrap(), Some(RegValue::sz("dflt")));
    assert_eq!(
        s.value(KEY, "Max").unwrap(),
        Some(RegValue::dword(u32::MAX))
    );
    assert_eq!(s.value(KEY, "Stale").unwrap(), None);
}

#[test]
fn regedit4_and_ansi_files() {
    let s = store("r4");
    // REGEDIT4: ANSI text (0xE9 is é in Windows-1252) and ANSI bytes in hex(2).
    let mut bytes =
        b"REGEDIT4\r\n\r\n[HKEY_CURRENT_USER\\Software\\Ica]\r\n\"Name\"=\"caf".to_vec();
    bytes.push(0xE9);
    bytes.extend(b"\"\r\n\"Path\"=hex(2):25,77,69,6e,64,69,72,25,00\r\n");
    s.import_reg(&bytes, "old.reg").unwrap();
    let key = r"\Registry\User\.Default\Software\Ica";
    assert_eq!(s.value(key, "name").unwrap(), Some(RegValue::sz("café")));
    assert_eq!(
        s.value(key, "path").unwrap(),
        Some(RegValue::expand_sz("%windir%"))
    );
}

fn syntax_error(text: &str) -> (usize, String) {
    match parse(text.as_bytes(), "bad.reg") {
        Err(RegFileError::Syntax {
            file,
            line,
            message,
        }) => {
            assert_eq!(file, "bad.reg");
            let shown = RegFileError::Syntax {
                file,
                line,
                message: message.clone(),
            }
            .to_string();
            assert!(shown.starts_with(&format!("bad.reg:{line}: ")), "{shown}");
            (line, message)
        }
        other => panic!("expected a syntax error for {text:?}, got {other:?}"),
    }
}

#[test]
fn errors_name_the_line() {
    const H: &str = "Windows Registry Editor Version 5.00\n\n";
    assert_eq!(syntax_error("hello\n").0, 1);
    assert_eq!(syntax_error("").0, 1);
    let (line, msg) = syntax_error(&format!("{H}[HKLM\\Software\\X]\n\"a\"=dword:123456789\n"));
    assert_eq!(line, 4);
    assert!(msg.contains("dword"), "{msg}");
    let (line, msg) = syntax_error(&format!("{H}\"a\"=\"b\"\n"));
    assert_eq!(line, 3);
    assert!(msg.contains("before the first [key]"), "{msg}");
    assert_eq!(syntax_error(&format!("{H}[HKEY_NOWHERE\\X]\n")).0, 3);
    assert_eq!(syntax_error(&format!("{H}[HKLM\\Software\\X\n")).0, 3);
    let (line, _) = syntax_error(&format!(
        "{H}[HKLM\\Software\\X]\n\"a\"=hex:01,\\\n  zz\n\"b\"=1\n"
    ));
    assert_eq!(line, 4, "a continued line reports where it starts");
    assert_eq!(
        syntax_error(&format!("{H}[HKLM\\Software\\X]\n\"a\"=\"open\n")).0,
        4
    );
    assert_eq!(
        syntax_error(&format!("{H}[HKLM\\Software\\X]\n\"a\"=hex(zz):00\n")).0,
        4
    );
    assert_eq!(
        syntax_error(&format!("{H}[HKLM\\Software\\X]\nname=1\n")).0,
        4
    );
    assert_eq!(
        syntax_error(&format!("{H}[-HKLM\\Software\\X]\n\"a\"=-\n")).0,
        4
    );
}

#[test]
fn a_bad_file_changes_nothing() {
    let s = store("atomic");
    let text = "Windows Registry Editor Version 5.00\n\n[HKLM\\Software\\IcaAtomic]\n\"a\"=dword:1\n[HKLM\\Software\\IcaAtomic\\X]\n\"b\"=oops\n";
    assert!(matches!(
        s.import_reg(text.as_bytes(), "bad.reg"),
        Err(RegFileError::Syntax { line: 6, .. })
    ));
    assert!(!s
        .key_exists(r"\Registry\Machine\Software\IcaAtomic")
        .unwrap());
    let ops = parse(text.replace("oops", "-").as_bytes(), "ok.reg").unwrap();
    assert_eq!(
        ops[0],
        RegOp::CreateKey(r"\Registry\Machine\Software\IcaAtomic".into())
    );
}

#[test]
fn files_on_disk() {
    let s = store("disk");
    sample(&s);
    let path: PathBuf =
        std::env::temp_dir().join(format!("ica-regfile-{}.reg", std::process::id()));
    s.export_reg_file(KEY, &path).unwrap();
    let t = store("disk2");
    t.import_reg_file(&path).unwrap();
    assert_eq!(t.values(KEY).unwrap(), s.values(KEY).unwrap());
    let missing = path.with_extension("missing");
    let err = t.import_reg_file(&missing).unwrap_err().to_string();
    assert!(err.contains(&missing.display().to_string()), "{err}");
    let _ = std::fs::remove_file(path);
}

#[test]
fn key_names_with_edge_spaces_round_trip() {
    // Found by fuzzing (`fuzz/`, target `reg`): the importer trimmed the text between the
    // brackets, so a key whose last component is a space was exported as `[...\ ]` and imported
    // back as its parent.
    let s = store("spaces");
    let text = "Windows Registry Editor Version 5.00\r\n\r\n\
        [HKEY_LOCAL_MACHINE\\Software\\IcaSpaces\\ ]\r\n\
        \"V\"=dword:00000001\r\n\r\n\
        [HKEY_LOCAL_MACHINE\\Software\\IcaSpaces\\trailing ]\r\n";
    s.import_reg(text.as_bytes(), "spaces.reg").unwrap();
    let key = r"\Registry\Machine\Software\IcaSpaces";
    assert_eq!(
        s.value(&format!(r"{key}\ "), "V").unwrap(),
        Some(RegValue::dword(1))
    );
    assert_eq!(s.value(key, "V").unwrap(), None, "not the parent's value");
    assert!(s.key_exists(&format!(r"{key}\trailing ")).unwrap());
    let exported = s.export_reg(key).unwrap();
    let copy = store("spaces-copy");
    copy.import_reg(&exported, "export.reg").unwrap();
    assert_eq!(copy.export_reg(key).unwrap(), exported);
}

#[test]
fn deleting_a_root_key_fails_and_changes_nothing() {
    // Found by fuzzing (`fuzz/`, target `reg`): `[-HKEY_CURRENT_USER]` deleted
    // `\Registry\User\.Default`, which the store recreates empty whenever it is opened.
    let s = store("delroot");
    let key = r"\Registry\User\.Default\Software\Ica";
    s.write(|b| b.set_value(key, "v", &RegValue::dword(1)))
        .unwrap();
    for text in [
        "[-HKEY_CURRENT_USER]",
        "[-HKEY_LOCAL_MACHINE\\SYSTEM]",
        "[-HKEY_USERS]",
    ] {
        let file =
            format!("Windows Registry Editor Version 5.00\r\n\r\n[HKCU\\New]\r\n\r\n{text}\r\n");
        let err = s.import_reg(file.as_bytes(), "root.reg").unwrap_err();
        assert!(
            matches!(
                err,
                RegFileError::Registry {
                    error: loader::registry::RegError::CannotDelete(_),
                    ..
                }
            ),
            "{text}: {err}"
        );
        assert_eq!(s.value(key, "v").unwrap(), Some(RegValue::dword(1)));
        assert!(!s.key_exists(r"\Registry\User\.Default\New").unwrap());
    }
}
