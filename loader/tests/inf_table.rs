//! Table test of real-world INF syntax and semantics quirks: each case is a small INF and the
//! lexical or semantic result (or the `file:line` error) it must give. All cases run; failures
//! are reported together by name.

use std::panic::{catch_unwind, AssertUnwindSafe};

use loader::inf::{
    Arch, DirId, Encoding, HkrBase, IncludedInf, Inf, InfError, InfFile, InstallPlan, NdiParamType,
    NoIncludes, ParseOptions, Piece, RegAction, RegData, RegRoot, TargetOs,
};

const NAME: &str = "t.inf";

fn lex(text: &str) -> InfFile {
    InfFile::parse(NAME, text.as_bytes()).unwrap_or_else(|e| panic!("{e}"))
}

fn fields(f: &InfFile, section: &str, line: usize) -> Vec<String> {
    let s = f
        .section(section)
        .unwrap_or_else(|| panic!("no [{section}]"));
    s.lines[line]
        .fields()
        .iter()
        .map(|f| f.text().to_string())
        .collect()
}

fn win10() -> TargetOs {
    TargetOs::windows10(Arch::Amd64)
}

/// A complete device INF; cases add lines to its sections by repeating headers (sections merge).
const BASE: &str = r#"[Version]
Signature="$Windows NT$"
Class=System
ClassGuid={4d36e97d-e325-11ce-bfc1-08002be10318}
Provider=%Mfg%
DriverVer=05/06/2021,1.2.3.4

[Manufacturer]
%Mfg%=Models,NTx86,NTamd64

[Models.NTx86]
%Dev%=Dev_Install,PCI\VEN_1234&DEV_5678

[Models.NTamd64]
%Dev%=Dev_Install,PCI\VEN_1234&DEV_5678

[Dev_Install.NT]
CopyFiles=@dev.sys

[Dev_Install.NT.Services]
AddService=Dev,2,Dev_Svc

[Dev_Svc]
ServiceType=1
StartType=3
ErrorControl=1
ServiceBinary=%12%\dev.sys

[DestinationDirs]
DefaultDestDir=12

[SourceDisksNames]
1=%Disk%

[SourceDisksFiles]
dev.sys=1

[Strings]
Mfg="Contoso"
Dev="Contoso Device"
Disk="Disk 1"
"#;

fn with_base(extra: &str) -> String {
    format!("{BASE}{extra}")
}

fn plan_of(text: &str) -> Result<InstallPlan, InfError> {
    plan_for(text, &win10())
}

fn plan_for(text: &str, target: &TargetOs) -> Result<InstallPlan, InfError> {
    let inf = Inf::parse(NAME, text.as_bytes())?;
    inf.plan_for_hardware_id("PCI\\VEN_1234&DEV_5678", target, &NoIncludes)
}

fn plan(text: &str) -> InstallPlan {
    plan_of(text).unwrap_or_else(|e| panic!("{e}"))
}

/// The 1-based line of the first line containing `needle`.
fn line_of(text: &str, needle: &str) -> u32 {
    text.lines()
        .position(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("`{needle}` not in text")) as u32
        + 1
}

/// `result` is an error at the line containing `needle`, whose message contains `words`.
fn expect_error<T: std::fmt::Debug>(
    result: Result<T, InfError>,
    text: &str,
    needle: &str,
    words: &str,
) {
    let e = result.expect_err("expected an error");
    let line = line_of(text, needle);
    assert_eq!(e.file, NAME);
    assert_eq!(e.line, line, "wrong line: {e}");
    assert!(
        e.to_string().starts_with(&format!("{NAME}:{line}: ")),
        "{e}"
    );
    assert!(
        e.message.contains(words),
        "message `{}` lacks `{words}`",
        e.message
    );
}

fn set_value<'a>(plan: &'a InstallPlan, name: &str) -> &'a RegData {
    plan.registry
        .iter()
        .find_map(|op| match &op.action {
            RegAction::SetValue { name: n, data } if n == name => Some(data),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no value {name} in {plan}"))
}

type Case = (&'static str, fn());

const CASES: &[Case] = &[
    // ---------------------------------------------------------------- lexical layer
    ("quoted comma stays in the field", || {
        let f = lex("[S]\nk = \"a,b\", c\n");
        assert_eq!(fields(&f, "S", 0), ["a,b", "c"]);
    }),
    ("quoted semicolon is not a comment", || {
        let f = lex("[S]\nk = \"a;b\" ; a real comment, with a comma\n");
        assert_eq!(fields(&f, "S", 0), ["a;b"]);
    }),
    ("doubled quote inside quotes is one quote", || {
        let f = lex("[S]\nk = \"say \"\"hi\"\"\"\n");
        assert_eq!(fields(&f, "S", 0), ["say \"hi\""]);
    }),
    ("triple quotes give a quoted value", || {
        let f = lex("[S]\nk = \"\"\"x\"\"\"\n");
        assert_eq!(fields(&f, "S", 0), ["\"x\""]);
    }),
    (
        "quoted and unquoted parts join, quoted spaces kept, unquoted ends trimmed",
        || {
            let f = lex("[S]\nk = ab\"c d\"ef , \" x \" ,\t y z \t\n");
            assert_eq!(fields(&f, "S", 0), ["abc def", " x ", "y z"]);
            assert!(f.section("S").unwrap().lines[0]
                .field(1)
                .unwrap()
                .is_quoted());
        },
    ),
    (
        "backslash continues a line, also before a comment; line number is the first",
        || {
            let f = lex("[S]\nCopyFiles = a,\\\n   b, \\ ; comment\n   c\nnext = 1\n");
            let s = f.section("S").unwrap();
            assert_eq!(fields(&f, "S", 0), ["a", "b", "c"]);
            assert_eq!(s.lines[0].origin.line, 2);
            assert_eq!(s.lines[1].origin.line, 5);
        },
    ),
    ("backslash inside a line is a path separator", || {
        let f = lex("[S]\np = C:\\dir\\file.sys\nq = 2\n");
        assert_eq!(fields(&f, "S", 0), ["C:\\dir\\file.sys"]);
        assert_eq!(fields(&f, "S", 1), ["2"]);
    }),
    ("comment at line end and comment-only lines", || {
        let f = lex(
            "; header comment\n[S] ; after header\n; whole line\nk = v ; comment, \"quoted\"\n",
        );
        assert_eq!(f.section("S").unwrap().lines.len(), 1);
        assert_eq!(fields(&f, "S", 0), ["v"]);
        assert!(f.warnings().is_empty(), "{:?}", f.warnings());
    }),
    ("UTF-16LE with BOM", || {
        let text = "[Version]\r\nSignature=\"$Windows NT$\"\r\n[S]\r\nk=%n%\r\n[Strings]\r\nn=\"Gerät ™\"\r\n";
        let bytes: Vec<u8> = [0xFF, 0xFE]
            .into_iter()
            .chain(text.encode_utf16().flat_map(u16::to_le_bytes))
            .collect();
        let f = InfFile::parse(NAME, &bytes).unwrap();
        assert_eq!(f.encoding(), Encoding::Utf16LeBom);
        assert_eq!(fields(&f, "S", 0), ["Gerät ™"]);
        assert_eq!(f.section("S").unwrap().lines[0].origin.line, 4);
    }),
    ("UTF-8 with BOM", || {
        let f = InfFile::parse(NAME, b"\xEF\xBB\xBF[S]\nk=\xC3\xA9\n").unwrap();
        assert_eq!(f.encoding(), Encoding::Utf8Bom);
        assert_eq!(fields(&f, "S", 0), ["é"]);
    }),
    ("ANSI (Windows-1252) bytes", || {
        let f = InfFile::parse(NAME, b"[S]\nk=\"Contoso\xAE Adapter \x96 Gigabit\"\n").unwrap();
        assert_eq!(f.encoding(), Encoding::Ansi);
        assert_eq!(fields(&f, "S", 0), ["Contoso® Adapter – Gigabit"]);
    }),
    ("CRLF, LF and CR line ends give the same lines", || {
        let lf = "[S]\na=1\n\nb=2, \\\n3\n";
        for text in [
            lf.to_string(),
            lf.replace('\n', "\r\n"),
            lf.replace('\n', "\r"),
        ] {
            let f = lex(&text);
            let s = f.section("S").unwrap();
            assert_eq!(s.lines.len(), 2);
            assert_eq!(fields(&f, "S", 1), ["2", "3"]);
            assert_eq!((s.lines[0].origin.line, s.lines[1].origin.line), (2, 4));
        }
    }),
    (
        "empty fields are kept, missing trailing fields read as empty",
        || {
            let f = lex("[S]\nHKR,,,0x10001,\n,\nk =\n");
            let s = f.section("S").unwrap();
            assert_eq!(fields(&f, "S", 0), ["HKR", "", "", "0x10001", ""]);
            assert_eq!(fields(&f, "S", 1), ["", ""]);
            assert_eq!(s.lines[2].fields().len(), 0);
            assert_eq!(s.lines[0].text(9), "");
            assert!(s.lines[0].field(9).is_none());
        },
    ),
    (
        "%strings% in keys and values, case-insensitive keys",
        || {
            let f = lex("[S]\n%MFG% = %models%, NT%ARCH%\n[strings]\nmfg = \"Fabrikam, Inc.\"\nMODELS = Fab\nArch=amd64\n");
            let l = &f.section("s").unwrap().lines[0];
            assert_eq!(l.key_text(), Some("Fabrikam, Inc."));
            assert_eq!(fields(&f, "S", 0), ["Fab", "NTamd64"]);
        },
    ),
    (
        "locale string sections: exact LANGID, primary language, then [Strings] per key",
        || {
            let text = "[S]\nk=%a%,%b%\n[Strings]\na=A-en\nb=B-en\n[Strings.0407]\na=A-de\n[Strings.0009]\nb=B-neutral-en\n";
            let de = InfFile::parse_with(NAME, text.as_bytes(), &ParseOptions { locale: 0x0407 })
                .unwrap();
            assert_eq!(fields(&de, "S", 0), ["A-de", "B-en"]);
            let gb = InfFile::parse_with(NAME, text.as_bytes(), &ParseOptions { locale: 0x0809 })
                .unwrap();
            assert_eq!(fields(&gb, "S", 0), ["A-en", "B-neutral-en"]);
            let us = lex(text);
            assert_eq!(fields(&us, "S", 0), ["A-en", "B-neutral-en"]);
        },
    ),
    (
        "duplicate sections merge in file order, names case-insensitive",
        || {
            let f = lex("[Files]\na.sys\n[Other]\nx=1\n[FILES]\nb.sys\n[files]\nc.sys\n");
            let s = f.section("fIlEs").unwrap();
            assert_eq!(s.name, "Files");
            let names: Vec<&str> = s.lines.iter().map(|l| l.text(0)).collect();
            assert_eq!(names, ["a.sys", "b.sys", "c.sys"]);
            assert_eq!(f.sections().len(), 2);
        },
    ),
    ("%% is a literal percent; lone percents stay", || {
        let f = lex("[S]\nk = \"100%% sure\", 50% off, %%SystemRoot%%\\x\n");
        assert_eq!(
            fields(&f, "S", 0),
            ["100% sure", "50% off", "%SystemRoot%\\x"]
        );
        assert!(f.section("S").unwrap().lines[0]
            .fields()
            .iter()
            .all(|f| !f.has_dirid()));
    }),
    ("DIRIDs stay symbolic", || {
        let f = lex("[S]\na = %10%\\inf\\x.inf\nb = %01%\nc = %16422%\\Contoso\\tool.exe\n");
        let s = f.section("S").unwrap();
        assert_eq!(
            s.lines[0].field(0).unwrap().pieces(),
            [
                Piece::DirId(DirId::WINDOWS),
                Piece::Text("\\inf\\x.inf".into())
            ]
        );
        assert_eq!(
            s.lines[1].field(0).unwrap().pieces(),
            [Piece::DirId(DirId::SOURCE)]
        );
        assert_eq!(s.lines[2].text(0), "%16422%\\Contoso\\tool.exe");
        assert_eq!(
            s.lines[2].field(0).unwrap().pieces()[0],
            Piece::DirId(DirId::PROGRAM_FILES)
        );
    }),
    (
        "[Strings] values keep commas and are not substituted again",
        || {
            let f = lex("[S]\nk=%Desc%,%Raw%\n[Strings]\nDesc = Contoso, Inc. (R) adapter\nRaw = \"%Desc% %12%\"\n");
            assert_eq!(
                fields(&f, "S", 0),
                ["Contoso, Inc. (R) adapter", "%Desc% %12%"]
            );
        },
    ),
    ("quoted [Strings] value over several lines", || {
        let f =
            lex("[Strings]\nLong = \"first part\nsecond part\"\nNext = n\n[S]\nk=%Long%,%Next%\n");
        assert_eq!(fields(&f, "S", 0), ["first part\nsecond part", "n"]);
        assert_eq!(f.section("S").unwrap().lines[0].origin.line, 6);
    }),
    ("Ctrl-Z ends the file", || {
        let f = lex("[S]\nk=1\n\x1a[T]\ngarbage \"\n");
        assert!(f.section("T").is_none());
        assert_eq!(fields(&f, "S", 0), ["1"]);
    }),
    (
        "lines before the first section and undefined strings are warnings",
        || {
            let f = lex("stray line\n[S]\nk=%Nope%\n");
            assert_eq!(fields(&f, "S", 0), ["%Nope%"]);
            let w: Vec<String> = f.warnings().iter().map(|w| w.to_string()).collect();
            assert_eq!(w.len(), 2, "{w:?}");
            assert!(w[0].starts_with("t.inf:1: warning: line outside"));
            assert!(w[1].starts_with("t.inf:3: warning: undefined string key %Nope%"));
        },
    ),
    ("an = inside quotes does not make a key", || {
        let f = lex("[S]\n\"a=b\",c\nkey = x=y\n");
        let s = f.section("S").unwrap();
        assert_eq!(s.lines[0].key(), None);
        assert_eq!(fields(&f, "S", 0), ["a=b", "c"]);
        assert_eq!(s.lines[1].key_text(), Some("key"));
        assert_eq!(fields(&f, "S", 1), ["x=y"]);
    }),
    // ---------------------------------------------------------------- semantic layer
    ("[Version] fields", || {
        let inf = Inf::parse(
            NAME,
            with_base(
                "[Version]\nCatalogFile=all.cat\nCatalogFile.NTamd64=x64.cat\nPnpLockdown=1\n",
            )
            .as_bytes(),
        )
        .unwrap();
        let v = inf.version();
        assert_eq!(v.provider.as_deref(), Some("Contoso"));
        assert_eq!(v.class.as_deref(), Some("System"));
        assert_eq!(
            v.class_guid.unwrap().to_string(),
            "{4D36E97D-E325-11CE-BFC1-08002BE10318}"
        );
        let dv = v.driver_ver.unwrap();
        assert_eq!(
            (dv.month, dv.day, dv.year, dv.version),
            (5, 6, 2021, Some([1, 2, 3, 4]))
        );
        assert_eq!(v.catalog_file(Arch::Amd64), Some("x64.cat"));
        assert_eq!(v.catalog_file(Arch::X86), Some("all.cat"));
        assert_eq!(v.pnp_lockdown, Some(1));
    }),
    (
        "Models: NTamd64 chosen over NT on x64, NT used on x86",
        || {
            let text = BASE
                .replace("%Mfg%=Models,NTx86,NTamd64", "%Mfg%=Models,NT,NTamd64")
                .replace("[Models.NTx86]", "[Models.NT]");
            let inf = Inf::parse(NAME, text.as_bytes()).unwrap();
            assert_eq!(
                inf.models(&win10()).unwrap()[0].models_section,
                "Models.NTamd64"
            );
            assert_eq!(
                inf.models(&TargetOs::windows10(Arch::X86)).unwrap()[0].models_section,
                "Models.NT"
            );
        },
    ),
    ("OS-version decorations: most specific that applies", || {
        let text = "[Version]\nSignature=\"$Windows NT$\"\n[Manufacturer]\nM=Mod,NTamd64,NTamd64.10.0...16299,NTx86.5.1,NTx86.6.0\n\
                    [Mod.NTamd64]\nold=I,A\n[Mod.NTamd64.10.0...16299]\nnew=I,B\n[Mod.NTx86.5.1]\nxp=I,C\n[Mod.NTx86.6.0]\nvista=I,D\n";
        let inf = Inf::parse(NAME, text.as_bytes()).unwrap();
        let pick = |t: TargetOs| inf.models(&t).unwrap()[0].description.clone();
        assert_eq!(pick(win10()), "new");
        assert_eq!(
            pick(TargetOs {
                build: 14393,
                ..win10()
            }),
            "old"
        );
        assert_eq!(pick(TargetOs::windows_xp(Arch::X86)), "xp");
        assert_eq!(pick(TargetOs::windows7(Arch::X86)), "vista");
        let e = inf
            .models(&TargetOs {
                major: 5,
                minor: 0,
                build: 2195,
                ..TargetOs::windows_xp(Arch::X86)
            })
            .unwrap_err();
        assert_eq!(e.line, 4, "{e}");
    }),
    (
        "product-type decoration applies only to that product",
        || {
            let text = "[Version]\nSignature=\"$Windows NT$\"\n[Manufacturer]\nM=Mod,NTamd64,NTamd64.6.3.3\n[Mod.NTamd64]\nws=I,A\n[Mod.NTamd64.6.3.3]\nserver=I,A\n";
            let inf = Inf::parse(NAME, text.as_bytes()).unwrap();
            assert_eq!(inf.models(&win10()).unwrap()[0].description, "ws");
            assert_eq!(
                inf.models(&TargetOs {
                    product_type: 3,
                    ..win10()
                })
                .unwrap()[0]
                    .description,
                "server"
            );
        },
    ),
    (
        "DDInstall decoration: .NTamd64 over .NT over undecorated",
        || {
            let text = with_base("[Dev_Install.NTamd64]\nCopyFiles=@dev.sys\n[Dev_Install.NTamd64.Services]\nAddService=Dev,2,Dev_Svc\n[Dev_Install]\nx=1\n");
            assert_eq!(plan(&text).install_section, "Dev_Install.NTamd64");
            assert_eq!(
                plan_for(&text, &TargetOs::windows10(Arch::X86))
                    .unwrap()
                    .install_section,
                "Dev_Install.NT"
            );
        },
    ),
    (
        "undecorated Models: accepted on x86, refused on x64",
        || {
            let text = BASE
                .replace("%Mfg%=Models,NTx86,NTamd64", "%Mfg%=Models")
                .replace("[Models.NTx86]", "[Models]");
            assert!(plan_for(&text, &TargetOs::windows_xp(Arch::X86)).is_ok());
            expect_error(
                plan_of(&text),
                &text,
                "%Mfg%=Models",
                "requires an NTamd64 decoration",
            );
        },
    ),
    (
        "AddReg value types: SZ, EXPAND_SZ, MULTI_SZ, DWORD, BINARY, NONE, QWORD",
        || {
            let p = plan(&with_base(concat!(
            "[Dev_Install.NT]\nAddReg=R\n[R]\n",
            "HKR,,Sz,,\"a, b\"\nHKR,,Exp,0x00020000,%%SystemRoot%%\\x\nHKR,,Multi,0x00010000,one,\"two,2\",,three\n",
            "HKR,,DwHex,0x00010001,0xFFFFFFFF\nHKR,,DwDec,0x00010001,42\nHKR,,DwNeg,0x00010001,-1\nHKR,,DwBytes,0x00010001,01,02,00,00\n",
            "HKR,,Bin,1,de,AD,0x0f,7\nHKR,,None,0x00020001\nHKR,,Q,0x000B0001,01,00,00,00,00,00,00,00\n",
        )));
            assert_eq!(set_value(&p, "Sz"), &RegData::Sz("a, b".into()));
            assert_eq!(
                set_value(&p, "Exp"),
                &RegData::ExpandSz("%SystemRoot%\\x".into())
            );
            assert_eq!(
                set_value(&p, "Multi"),
                &RegData::MultiSz(vec!["one".into(), "two,2".into(), "three".into()])
            );
            assert_eq!(set_value(&p, "DwHex"), &RegData::Dword(0xFFFF_FFFF));
            assert_eq!(set_value(&p, "DwDec"), &RegData::Dword(42));
            assert_eq!(set_value(&p, "DwNeg"), &RegData::Dword(0xFFFF_FFFF));
            assert_eq!(set_value(&p, "DwBytes"), &RegData::Dword(0x0201));
            assert_eq!(
                set_value(&p, "Bin"),
                &RegData::Binary {
                    reg_type: 3,
                    data: vec![0xDE, 0xAD, 0x0F, 0x07]
                }
            );
            assert_eq!(
                set_value(&p, "None"),
                &RegData::Binary {
                    reg_type: 0,
                    data: vec![]
                }
            );
            assert_eq!(set_value(&p, "Q").reg_type(), 11);
        },
    ),
    (
        "AddReg flags: NOCLOBBER, APPEND, DELVAL, KEYONLY, key-only lines",
        || {
            let p = plan(&with_base(
            "[Dev_Install.NT]\nAddReg=R\n[R]\nHKR,,Keep,0x00000002,\"default\"\nHKR,,List,0x00010008,extra\nHKR,,Gone,4\nHKR,Sub,,0x10\nHKR,Ndi\\params\\X\n",
        ));
            let ops = &p.registry;
            assert!(ops[0].noclobber());
            assert!(ops[1].append());
            assert_eq!(
                ops[2].action,
                RegAction::DeleteValue {
                    name: "Gone".into()
                }
            );
            assert_eq!(ops[3].action, RegAction::CreateKey);
            assert_eq!(
                (ops[4].subkey.as_str(), &ops[4].action),
                ("Ndi\\params\\X", &RegAction::CreateKey)
            );
        },
    ),
    (
        "DelReg: key, value, string from a MULTI_SZ; DelReg runs before AddReg",
        || {
            let p = plan(&with_base(
            "[Dev_Install.NT]\nAddReg=A\nDelReg=D\n[A]\nHKR,,New,,1\n[D]\nHKR,Old\nHKR,,OldValue\nHKLM,System\\CurrentControlSet\\Control\\Class\\{4d36e97d-e325-11ce-bfc1-08002be10318},UpperFilters,0x00018002,OldFilter\n",
        ));
            let acts: Vec<&RegAction> = p.registry.iter().map(|o| &o.action).collect();
            assert_eq!(acts[0], &RegAction::DeleteKey);
            assert_eq!(
                acts[1],
                &RegAction::DeleteValue {
                    name: "OldValue".into()
                }
            );
            assert_eq!(
                acts[2],
                &RegAction::DeleteMultiSzString {
                    name: "UpperFilters".into(),
                    string: "OldFilter".into()
                }
            );
            assert_eq!(p.registry[2].root, RegRoot::Hklm);
            assert!(matches!(acts[3], RegAction::SetValue { .. }));
        },
    ),
    (
        "HKR means the driver key, device key, service key or event log key by context",
        || {
            let base = BASE.replace(
                "AddService=Dev,2,Dev_Svc",
                "AddService=Dev,2,Dev_Svc,Dev_Log",
            );
            let p = plan(&format!(
            "{base}{}",
            concat!(
                "[Dev_Install.NT]\nAddReg=Drv\n[Drv]\nHKR,,A,,1\nHKLM,Software\\Contoso,B,,2\n",
                "[Dev_Install.NT.HW]\nAddReg=Hw\n[Hw]\nHKR,,LowerFilters,0x10000,Low\n",
                "[Dev_Svc]\nAddReg=Svc\n[Svc]\nHKR,Parameters,C,0x10001,3\n",
                "[Dev_Log]\nAddReg=Log\n[Log]\nHKR,,EventMessageFile,0x20000,%%SystemRoot%%\\System32\\IoLogMsg.dll\n",
            )
        ));
            assert_eq!(p.registry.len(), 5, "{p}");
            assert_eq!(p.services[0].event_log.as_ref().unwrap().log, "System");
            let bases: Vec<(RegRoot, HkrBase)> =
                p.registry.iter().map(|o| (o.root, o.hkr.clone())).collect();
            assert_eq!(bases[0], (RegRoot::Hkr, HkrBase::DriverKey));
            assert_eq!(bases[1].0, RegRoot::Hklm);
            assert_eq!(bases[2], (RegRoot::Hkr, HkrBase::DeviceKey));
            assert_eq!(bases[3], (RegRoot::Hkr, HkrBase::ServiceKey("Dev".into())));
            assert_eq!(
                bases[4],
                (
                    RegRoot::Hkr,
                    HkrBase::EventLogKey {
                        log: "System".into(),
                        source: "Dev".into()
                    }
                )
            );
            assert_eq!(p.lower_filters, ["Low"]);
        },
    ),
    (
        "Include/Needs pull sections (with their own strings) from another INF",
        || {
            let other = "[Version]\nSignature=\"$Windows NT$\"\n[Base_Install]\nAddReg=BaseReg\n[BaseReg]\nHKR,,FromBase,,%S%\n[Strings]\nS=\"base string\"\n";
            let text = with_base("[Dev_Install.NT]\nInclude=BASE.INF\nNeeds=Base_Install\nAddReg=Own\n[Own]\nHKR,,Own,,1\n");
            let inf = Inf::parse(NAME, text.as_bytes()).unwrap();
            let resolver = |name: &str| {
                name.eq_ignore_ascii_case("base.inf").then(|| IncludedInf {
                    name: "base.inf".into(),
                    bytes: other.as_bytes().to_vec(),
                })
            };
            let p = inf
                .plan_for_hardware_id("PCI\\VEN_1234&DEV_5678", &win10(), &resolver)
                .unwrap();
            assert_eq!(p.included, ["base.inf"]);
            assert_eq!(
                set_value(&p, "FromBase"),
                &RegData::Sz("base string".into())
            );
            assert_eq!(p.registry[0].origin.file.as_ref(), "base.inf");
            assert_eq!(p.registry[1].value_name(), Some("Own"));
        },
    ),
    (
        "CopyFiles: @file and file-list sections with DestinationDirs, decorated SourceDisks*",
        || {
            let p = plan(&with_base(concat!(
                "[Dev_Install.NT]\nCopyFiles=Drv.Files, Tools.Files\n",
                "[Drv.Files]\nnew.sys,old_name.sys,,0x10\n[Tools.Files]\ntool.exe\n",
                "[DestinationDirs]\nDrv.Files=13\nTools.Files=16422,\"Contoso\\Tools\"\n",
                "[SourceDisksNames.amd64]\n2=\"x64 disk\",,,\\x64\n",
                "[SourceDisksFiles.amd64]\nold_name.sys=2,drivers\ntool.exe=2\n",
            )));
            let f: Vec<(String, DirId, String, String)> = p
                .files
                .iter()
                .map(|f| {
                    (
                        f.source_path.clone(),
                        f.dest_dir,
                        f.dest_subdir.clone(),
                        f.dest_name.clone(),
                    )
                })
                .collect();
            assert_eq!(
                f[0],
                (
                    "dev.sys".into(),
                    DirId::DRIVERS,
                    "".into(),
                    "dev.sys".into()
                )
            );
            assert_eq!(
                f[1],
                (
                    "x64/drivers/old_name.sys".into(),
                    DirId::DRIVER_STORE,
                    "".into(),
                    "new.sys".into()
                )
            );
            assert_eq!(p.files[1].flags, 0x10);
            assert_eq!(p.files[1].disk_description, "x64 disk");
            assert_eq!(
                f[2],
                (
                    "x64/tool.exe".into(),
                    DirId::PROGRAM_FILES,
                    "Contoso\\Tools".into(),
                    "tool.exe".into()
                )
            );
        },
    ),
    ("AddService fields", || {
        let p = plan(&with_base(concat!(
            "[Dev_Svc]\nDisplayName=%Dev%\nDescription=\"A, description\"\nLoadOrderGroup=NDIS\nDependencies=+NDIS,Tcpip\n",
            "StartType=0\n", // a later entry does not override the first
        )));
        let s = p.service("dev").unwrap();
        assert_eq!(s.display_name.as_deref(), Some("Contoso Device"));
        assert_eq!(s.description.as_deref(), Some("A, description"));
        assert_eq!(s.load_order_group.as_deref(), Some("NDIS"));
        assert_eq!(s.dependencies, ["+NDIS", "Tcpip"]);
        assert_eq!((s.service_type, s.start_type, s.error_control), (1, 3, 1));
        assert_eq!(
            (s.binary.dir, s.binary.path.as_str()),
            (Some(DirId::DRIVERS), "dev.sys")
        );
        assert_eq!(p.function_service.as_deref(), Some("Dev"));
    }),
    (
        "Net class: Characteristics, BusType, *IfType and Ndi\\params with enum",
        || {
            let text = BASE.replace("Class=System", "Class=Net") + concat!(
            "[Dev_Install.NT]\nCharacteristics=0x84\nBusType=5\nAddReg=Ndi.Reg, Params.Reg\n",
            "[Ndi.Reg]\nHKR,,*IfType,0x00010001,6\nHKR,,*MediaType,0x00010001,0\nHKR,,*PhysicalMediaType,0x00010001,14\n",
            "HKR,Ndi,Service,0,\"Dev\"\nHKR,Ndi\\Interfaces,UpperRange,0,\"ndis5\"\nHKR,Ndi\\Interfaces,LowerRange,0,\"ethernet\"\n",
            "[Params.Reg]\nHKR,Ndi\\params\\*SpeedDuplex,ParamDesc,0,%Speed%\nHKR,Ndi\\params\\*SpeedDuplex,default,0,\"0\"\n",
            "HKR,Ndi\\params\\*SpeedDuplex,type,0,\"enum\"\nHKR,Ndi\\params\\*SpeedDuplex\\enum,\"0\",0,%Auto%\n",
            "HKR,Ndi\\params\\*SpeedDuplex\\enum,\"4\",0,\"100 Mbps Full Duplex\"\n",
            "HKR,Ndi\\Params\\MTU,ParamDesc,0,\"MTU\"\nHKR,Ndi\\Params\\MTU,type,0,\"int\"\nHKR,Ndi\\Params\\MTU,min,0,\"576\"\n",
            "HKR,Ndi\\Params\\MTU,max,0,\"0x2400\"\nHKR,Ndi\\Params\\MTU,default,0,\"1500\"\nHKR,,MTU,0,\"9000\"\n",
            "[Strings]\nSpeed=\"Speed & Duplex\"\nAuto=\"Auto Negotiation\"\n",
        );
            let p = plan(&text);
            let net = p.net.as_ref().expect("net info");
            assert_eq!((net.characteristics, net.bus_type), (0x84, Some(5)));
            assert_eq!(
                (net.if_type, net.media_type, net.physical_media_type),
                (Some(6), Some(0), Some(14))
            );
            assert_eq!(net.ndi_service.as_deref(), Some("Dev"));
            assert_eq!(
                (net.upper_range.as_deref(), net.lower_range.as_deref()),
                (Some("ndis5"), Some("ethernet"))
            );
            let sd = &net.params[0];
            assert_eq!(sd.keyword, "*SpeedDuplex");
            assert_eq!(sd.description.as_deref(), Some("Speed & Duplex"));
            assert_eq!(sd.kind, Some(NdiParamType::Enum));
            assert_eq!(sd.default.as_deref(), Some("0"));
            let en: Vec<(&str, &str)> = sd
                .enum_values
                .iter()
                .map(|e| (e.value.as_str(), e.description.as_str()))
                .collect();
            assert_eq!(
                en,
                [("0", "Auto Negotiation"), ("4", "100 Mbps Full Duplex")]
            );
            let mtu = &net.params[1];
            assert_eq!(
                (mtu.keyword.as_str(), mtu.kind.clone(), mtu.min, mtu.max),
                ("MTU", Some(NdiParamType::Int), Some(576), Some(0x2400))
            );
            assert_eq!(mtu.effective_value().as_deref(), Some("9000"));
        },
    ),
    (
        "device matching ranks hardware IDs before compatible IDs",
        || {
            let text = with_base("[Models.NTamd64]\n%Dev%=Dev_Install,PCI\\VEN_1234&DEV_5678&SUBSYS_00011234\nGeneric=Dev_Install,PCI\\CC_0200,PCI\\VEN_1234\n");
            let inf = Inf::parse(NAME, text.as_bytes()).unwrap();
            let m = inf
                .match_device(
                    &[
                        "PCI\\VEN_1234&DEV_5678&SUBSYS_00011234",
                        "PCI\\VEN_1234&DEV_5678",
                    ],
                    &["PCI\\CC_0200"],
                    &win10(),
                )
                .unwrap()
                .unwrap();
            assert_eq!(
                (m.model.hardware_id.as_deref(), m.rank),
                (Some("PCI\\VEN_1234&DEV_5678&SUBSYS_00011234"), 0)
            );
            let m = inf
                .match_device(
                    &["PCI\\VEN_1234&DEV_9999"],
                    &["PCI\\CC_0200", "PCI\\VEN_1234"],
                    &win10(),
                )
                .unwrap()
                .unwrap();
            assert_eq!(
                (m.model.description.as_str(), m.rank >= 0x2000),
                ("Generic", true)
            );
            assert!(inf
                .match_device(&["USB\\VID_0000"], &[], &win10())
                .unwrap()
                .is_none());
            assert_eq!(
                inf.models(&win10()).unwrap()[2].compatible_ids,
                ["PCI\\VEN_1234"]
            );
        },
    ),
    (
        "AddService=,2 installs a device without a function driver",
        || {
            let text = BASE.replace("AddService=Dev,2,Dev_Svc", "AddService=,2");
            let p = plan(&text);
            assert!(p.null_driver && p.services.is_empty() && p.function_service.is_none());
        },
    ),
    ("DefaultInstall for a legacy driver", || {
        let text = "[Version]\nSignature=\"$CHICAGO$\"\n[DefaultInstall]\nCopyFiles=@legacy.sys\n[DefaultInstall.Services]\nAddService=Legacy,,Svc\n\
                    [Svc]\nServiceType=1\nStartType=2\nErrorControl=0\nServiceBinary=%12%\\legacy.sys\n[DestinationDirs]\nDefaultDestDir=12\n\
                    [SourceDisksNames]\n1=d\n[SourceDisksFiles]\nlegacy.sys=1\n";
        let inf = Inf::parse(NAME, text.as_bytes()).unwrap();
        let p = inf
            .plan_default_install(&TargetOs::windows_xp(Arch::X86), &NoIncludes)
            .unwrap();
        assert_eq!(p.install_section, "DefaultInstall");
        assert_eq!(p.services[0].start_type, 2);
        assert_eq!(p.function_service, None);
    }),
    ("unknown directives are warnings, not errors", || {
        let p = plan(&with_base(
            "[Dev_Install.NT]\nFrobnicate=1\nDelFiles=Old.Files\nDriverVer=01/01/2020,1.0\n",
        ));
        let w: Vec<String> = p.warnings.iter().map(|w| w.to_string()).collect();
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(w[0].contains("unknown directive Frobnicate"));
        assert!(w[1].contains("DelFiles is not supported"));
    }),
    // ---------------------------------------------------------------- errors name file:line
    ("error: bad DWORD", || {
        let text = with_base("[Dev_Install.NT]\nAddReg=R\n[R]\nHKR,,Speed,0x00010001,fast\n");
        expect_error(
            plan_of(&text),
            &text,
            "HKR,,Speed",
            "bad DWORD value `fast`",
        );
    }),
    ("error: DWORD out of range", || {
        let text = with_base("[Dev_Install.NT]\nAddReg=R\n[R]\nHKR,,Big,0x00010001,4294967296\n");
        expect_error(plan_of(&text), &text, "HKR,,Big", "bad DWORD");
    }),
    ("error: bad hex byte in BINARY", || {
        let text = with_base("[Dev_Install.NT]\nAddReg=R\n[R]\nHKR,,Bin,1,00,1G\n");
        expect_error(plan_of(&text), &text, "HKR,,Bin", "bad hex byte `1G`");
    }),
    ("error: unknown registry root", || {
        let text = with_base("[Dev_Install.NT]\nAddReg=R\n[R]\nHKXX,Sub,V,,1\n");
        expect_error(
            plan_of(&text),
            &text,
            "HKXX",
            "unknown registry root `HKXX`",
        );
    }),
    ("error: bad AddReg flags", || {
        let text = with_base("[Dev_Install.NT]\nAddReg=R\n[R]\nHKR,,V,0xZZ,1\n");
        expect_error(plan_of(&text), &text, "HKR,,V,0xZZ", "bad AddReg flags");
    }),
    ("error: AddReg section missing", || {
        let text = with_base("[Dev_Install.NT]\nAddReg=Nowhere.Reg\n");
        expect_error(
            plan_of(&text),
            &text,
            "AddReg=Nowhere.Reg",
            "AddReg section [Nowhere.Reg] not found",
        );
    }),
    ("error: Models section missing", || {
        let text = BASE.replace("[Models.NTamd64]", "[Other.NTamd64]");
        expect_error(
            plan_of(&text),
            &text,
            "%Mfg%=Models",
            "Models section [Models.NTamd64]",
        );
    }),
    ("error: install section missing", || {
        let text = BASE.replace("[Dev_Install.NT]", "[Dev_Install.NTia64]");
        let e = plan_of(&text).unwrap_err();
        assert_eq!(e.line, line_of(&text, "[Models.NTamd64]") + 1, "{e}");
        assert!(e.message.contains("install section [Dev_Install]"), "{e}");
    }),
    ("error: unterminated quote", || {
        let text = with_base("[Dev_Install.NT]\nAddReg=R\n[R]\nHKR,,Name,,\"unterminated\n");
        expect_error(
            plan_of(&text),
            &text,
            "\"unterminated",
            "unterminated quoted string",
        );
    }),
    ("error: unterminated section name", || {
        let text = with_base("[Broken\nx=1\n");
        expect_error(
            plan_of(&text),
            &text,
            "[Broken",
            "unterminated section name",
        );
    }),
    ("error: file not in SourceDisksFiles", || {
        let text = with_base("[Dev_Install.NT]\nCopyFiles=@missing.sys\n");
        expect_error(
            plan_of(&text),
            &text,
            "@missing.sys",
            "`missing.sys` is not listed in [SourceDisksFiles.amd64]",
        );
    }),
    ("error: disk not in SourceDisksNames", || {
        let text =
            with_base("[SourceDisksFiles]\nother.sys=7\n[Dev_Install.NT]\nCopyFiles=@other.sys\n");
        expect_error(plan_of(&text), &text, "other.sys=7", "disk 7");
    }),
    ("error: service-install section without StartType", || {
        let text = BASE.replace("StartType=3\n", "");
        expect_error(plan_of(&text), &text, "[Dev_Svc]", "has no StartType");
    }),
    ("error: bad StartType value", || {
        let text = BASE.replace("StartType=3", "StartType=9");
        expect_error(plan_of(&text), &text, "StartType=9", "bad StartType `9`");
    }),
    ("error: no function driver", || {
        let text = BASE.replace("AddService=Dev,2,Dev_Svc", "AddService=Dev,0,Dev_Svc");
        let e = plan_of(&text).unwrap_err();
        assert_eq!(e.line, line_of(&text, "[Models.NTamd64]") + 1, "{e}");
        assert!(e.message.contains("SPSVCINST_ASSOCSERVICE"), "{e}");
    }),
    ("error: Needs section not found", || {
        let text = with_base("[Dev_Install.NT]\nInclude=machine.inf\nNeeds=PCI_DRV\n");
        expect_error(
            plan_of(&text),
            &text,
            "Needs=PCI_DRV",
            "Needs section [PCI_DRV] not found",
        );
    }),
    ("error: Net class without Characteristics", || {
        let text = BASE.replace("Class=System", "Class=Net");
        let e = plan_of(&text).unwrap_err();
        assert_eq!(e.line, line_of(&text, "[Models.NTamd64]") + 1, "{e}");
        assert!(e.message.contains("no Characteristics"), "{e}");
    }),
    (
        "error: missing or unknown Signature, missing [Version]",
        || {
            let bad = "[Version]\nSignature=\"$Windows 3.1$\"\n";
            expect_error(
                Inf::parse(NAME, bad.as_bytes()),
                bad,
                "Signature",
                "unknown Signature",
            );
            let none = "; nothing\n[Strings]\n";
            let e = Inf::parse(NAME, none.as_bytes()).unwrap_err();
            assert_eq!(e.to_string(), "t.inf:1: no [Version] section");
        },
    ),
    ("error: bad ClassGuid and DriverVer", || {
        let g = "[Version]\nSignature=\"$Windows NT$\"\nClassGuid={4d36e97d-e325-11ce-bfc1}\n";
        expect_error(
            Inf::parse(NAME, g.as_bytes()),
            g,
            "ClassGuid",
            "bad ClassGuid",
        );
        let d = "[Version]\nSignature=\"$Windows NT$\"\nDriverVer=13/01/2020,1.0\n";
        expect_error(
            Inf::parse(NAME, d.as_bytes()),
            d,
            "DriverVer",
            "bad DriverVer date",
        );
    }),
    ("error: bad TargetOS decoration", || {
        let text = BASE.replace("%Mfg%=Models,NTx86,NTamd64", "%Mfg%=Models,NTx86,NTmips");
        expect_error(
            plan_of(&text),
            &text,
            "%Mfg%=Models",
            "bad TargetOS decoration `NTmips`",
        );
    }),
];

#[test]
fn inf_syntax_table() {
    assert!(CASES.len() >= 30, "only {} cases", CASES.len());
    let mut failures = Vec::new();
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    for (name, case) in CASES {
        if let Err(e) = catch_unwind(AssertUnwindSafe(case)) {
            let msg = e
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            failures.push(format!("{name}: {msg}"));
        }
    }
    std::panic::set_hook(hook);
    println!("{} INF table cases, {} failed", CASES.len(), failures.len());
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        CASES.len(),
        failures.join("\n")
    );
}
