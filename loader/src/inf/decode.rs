//! Turning the bytes of an INF into text: UTF-16LE/BE (with a byte-order mark, or LE recognised
//! by its zero high bytes), UTF-8 (with or without BOM), and ANSI files, which are read as UTF-8
//! where they are valid and as Windows-1252 byte by byte where they are not.

/// How the file was encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// UTF-16 little-endian with a BOM (`FF FE`), what `Stampinf`/Visual Studio write.
    Utf16LeBom,
    /// UTF-16 little-endian without a BOM (recognised by zero high bytes of ASCII text).
    Utf16Le,
    /// UTF-16 big-endian with a BOM (`FE FF`).
    Utf16BeBom,
    /// UTF-8 with a BOM (`EF BB BF`).
    Utf8Bom,
    /// Valid UTF-8 (which includes plain ASCII) without a BOM.
    Utf8,
    /// Not valid UTF-8: invalid bytes were read as Windows-1252 (an ANSI file).
    Ansi,
}

/// Decode an INF's bytes. Never fails: undecodable input becomes replacement characters.
pub fn decode(bytes: &[u8]) -> (String, Encoding) {
    if let Some(rest) = bytes.strip_prefix(&[0xFF, 0xFE]) {
        return (utf16(rest, false), Encoding::Utf16LeBom);
    }
    if let Some(rest) = bytes.strip_prefix(&[0xFE, 0xFF]) {
        return (utf16(rest, true), Encoding::Utf16BeBom);
    }
    if let Some(rest) = bytes.strip_prefix(&[0xEF, 0xBB, 0xBF]) {
        let (text, _) = utf8_or_1252(rest);
        return (text, Encoding::Utf8Bom);
    }
    if looks_like_utf16le(bytes) {
        return (utf16(bytes, false), Encoding::Utf16Le);
    }
    let (text, clean) = utf8_or_1252(bytes);
    (
        text,
        if clean {
            Encoding::Utf8
        } else {
            Encoding::Ansi
        },
    )
}

/// ASCII text stored as UTF-16LE without a BOM: every odd byte of the first few characters is 0
/// and the even ones are not.
fn looks_like_utf16le(bytes: &[u8]) -> bool {
    let n = bytes.len().min(64) & !1;
    if n < 4 {
        return false;
    }
    bytes[..n].chunks_exact(2).all(|c| c[1] == 0 && c[0] != 0)
}

fn utf16(bytes: &[u8], big_endian: bool) -> String {
    let units = bytes.chunks_exact(2).map(|c| {
        if big_endian {
            u16::from_be_bytes([c[0], c[1]])
        } else {
            u16::from_le_bytes([c[0], c[1]])
        }
    });
    char::decode_utf16(units)
        .map(|r| r.unwrap_or(char::REPLACEMENT_CHARACTER))
        .collect()
}

/// UTF-8 where valid, Windows-1252 for each invalid byte. Returns whether all of it was UTF-8.
fn utf8_or_1252(mut bytes: &[u8]) -> (String, bool) {
    let mut out = String::with_capacity(bytes.len());
    let mut clean = true;
    loop {
        match std::str::from_utf8(bytes) {
            Ok(s) => {
                out.push_str(s);
                return (out, clean);
            }
            Err(e) => {
                clean = false;
                let good = e.valid_up_to();
                // The prefix was just checked to be valid UTF-8.
                out.push_str(std::str::from_utf8(&bytes[..good]).unwrap_or_default());
                let bad = e.error_len().unwrap_or(bytes.len() - good).max(1);
                for &b in &bytes[good..good + bad] {
                    out.push(cp1252(b));
                }
                bytes = &bytes[good + bad..];
            }
        }
    }
}

/// The Windows-1252 character of a byte (bytes the code page leaves undefined map to the C1
/// control of the same value, as Windows' converter does).
pub fn cp1252(b: u8) -> char {
    const HIGH: [u16; 32] = [
        0x20AC, 0x0081, 0x201A, 0x0192, 0x201E, 0x2026, 0x2020, 0x2021, 0x02C6, 0x2030, 0x0160,
        0x2039, 0x0152, 0x008D, 0x017D, 0x008F, 0x0090, 0x2018, 0x2019, 0x201C, 0x201D, 0x2022,
        0x2013, 0x2014, 0x02DC, 0x2122, 0x0161, 0x203A, 0x0153, 0x009D, 0x017E, 0x0178,
    ];
    match b {
        0x80..=0x9F => char::from_u32(HIGH[(b - 0x80) as usize] as u32).unwrap_or('\u{FFFD}'),
        _ => b as char,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodings() {
        assert_eq!(
            decode(b"[Version]"),
            ("[Version]".to_string(), Encoding::Utf8)
        );
        assert_eq!(decode(b"\xEF\xBB\xBFab").0, "ab");
        let le: Vec<u8> = [0xFF, 0xFE]
            .into_iter()
            .chain("aé".encode_utf16().flat_map(u16::to_le_bytes))
            .collect();
        assert_eq!(decode(&le), ("aé".to_string(), Encoding::Utf16LeBom));
        let nobom: Vec<u8> = "[Ver]".encode_utf16().flat_map(u16::to_le_bytes).collect();
        assert_eq!(decode(&nobom), ("[Ver]".to_string(), Encoding::Utf16Le));
        let be: Vec<u8> = [0xFE, 0xFF]
            .into_iter()
            .chain("x".encode_utf16().flat_map(u16::to_be_bytes))
            .collect();
        assert_eq!(decode(&be).0, "x");
        assert_eq!(decode(b"a\xAEb\x99"), ("a®b™".to_string(), Encoding::Ansi));
        assert_eq!(
            decode(b"\xE2\x82"),
            ("â\u{201A}".to_string(), Encoding::Ansi)
        );
    }
}
