//! Rtl strings and memory: UNICODE_STRING / ANSI_STRING (STRING) handling with the exact per-arch
//! layout, conversions through the ANSI code page, integer and GUID conversion, Rtl*Memory, RtlAssert,
//! RTL_BITMAP bitmaps, byte swaps and RtlHashUnicodeString.
//!
//! The ANSI code page is Windows-1252 (characters it cannot represent become `?`); case-insensitive
//! comparisons upcase with Unicode simple case mapping, standing in for the NLS upcase table. Strings
//! the caller asks to be allocated (`AllocateDestinationString`) come from pool charged to the calling
//! driver, to be released with RtlFreeUnicodeString / RtlFreeAnsiString.

use crate::crt::{self, CharSize};
use crate::export::{Export, Quad};
use crate::status::{
    NtStatus, STATUS_BUFFER_OVERFLOW, STATUS_BUFFER_TOO_SMALL, STATUS_INVALID_PARAMETER,
    STATUS_SUCCESS,
};
use crate::{dbg, ex, export_table, KResult, Kernel, KernelError};

const STATUS_ACCESS_VIOLATION: NtStatus = 0xC000_0005;
const STATUS_NAME_TOO_LONG: NtStatus = 0xC000_0106;
const STATUS_INVALID_PARAMETER_2: NtStatus = 0xC000_00F0;

/// Pool tag of Rtl-allocated UNICODE_STRING buffers ("Ustr").
const TAG_UNICODE: u32 = u32::from_le_bytes(*b"Ustr");
/// Pool tag of Rtl-allocated ANSI_STRING buffers ("Astr").
const TAG_ANSI: u32 = u32::from_le_bytes(*b"Astr");

/// Longest UNICODE_STRING Length RtlInitUnicodeString produces (MAXUSHORT rounded down to whole
/// characters, minus the terminator).
const MAX_UNICODE_LENGTH: u64 = 0xFFFC;
/// Longest ANSI_STRING Length RtlInitAnsiString produces.
const MAX_ANSI_LENGTH: u64 = 0xFFFE;

/// Windows-1252 characters 0x80..=0x9F (the rest of the page is Latin-1).
const CP1252_HIGH: [u16; 32] = [
    0x20AC, 0x0081, 0x201A, 0x0192, 0x201E, 0x2026, 0x2020, 0x2021, 0x02C6, 0x2030, 0x0160, 0x2039,
    0x0152, 0x008D, 0x017D, 0x008F, 0x0090, 0x2018, 0x2019, 0x201C, 0x201D, 0x2022, 0x2013, 0x2014,
    0x02DC, 0x2122, 0x0161, 0x203A, 0x0153, 0x009D, 0x017E, 0x0178,
];

/// The UTF-16 code unit of an ANSI (Windows-1252) byte.
pub fn ansi_to_unicode(b: u8) -> u16 {
    match b {
        0x80..=0x9F => CP1252_HIGH[usize::from(b - 0x80)],
        _ => u16::from(b),
    }
}

/// The ANSI (Windows-1252) byte of a UTF-16 code unit; `?` if the code page lacks it.
pub fn unicode_to_ansi(u: u16) -> u8 {
    match u {
        0..=0x7F | 0xA0..=0xFF => u as u8,
        _ => CP1252_HIGH
            .iter()
            .position(|&c| c == u)
            .map_or(b'?', |i| 0x80 + i as u8),
    }
}

/// Text of ANSI code units (bytes held in `u16`s, as the narrow string readers return them).
pub fn ansi_units_to_string(units: &[u16]) -> String {
    let wide: Vec<u16> = units.iter().map(|&u| ansi_to_unicode(u as u8)).collect();
    String::from_utf16_lossy(&wide)
}

/// Simple Unicode case mapping of one code unit (unchanged where the mapping is not one BMP character).
fn map_case(u: u16, up: bool) -> u16 {
    if u < 0x80 {
        let b = u as u8;
        return u16::from(if up {
            b.to_ascii_uppercase()
        } else {
            b.to_ascii_lowercase()
        });
    }
    let Some(c) = char::from_u32(u32::from(u)) else {
        return u;
    };
    let mut mapped: Vec<char> = if up {
        c.to_uppercase().collect()
    } else {
        c.to_lowercase().collect()
    };
    match (mapped.pop(), mapped.is_empty()) {
        (Some(m), true) => u16::try_from(u32::from(m)).unwrap_or(u),
        _ => u,
    }
}

/// RtlUpcaseUnicodeChar semantics.
pub fn upcase(u: u16) -> u16 {
    map_case(u, true)
}

/// RtlDowncaseUnicodeChar semantics.
pub fn downcase(u: u16) -> u16 {
    map_case(u, false)
}

/// RtlUpperChar semantics: upcases through the ANSI code page (unchanged if the upper-case letter is
/// not in it).
pub fn upper_ansi(b: u8) -> u8 {
    let up = upcase(ansi_to_unicode(b));
    match unicode_to_ansi(up) {
        b'?' if up != u16::from(b'?') => b,
        out => out,
    }
}

/// The header of a counted string (UNICODE_STRING, ANSI_STRING, STRING).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CountedString {
    /// Length in bytes, without a terminator.
    pub length: u16,
    /// Buffer size in bytes.
    pub maximum_length: u16,
    /// Guest address of the characters.
    pub buffer: u64,
}

fn buffer_offset(k: &Kernel, cs: CharSize) -> u64 {
    match cs {
        CharSize::Narrow => k.layout.ansi_string_buffer,
        CharSize::Wide => k.layout.unicode_string_buffer,
    }
}

/// Reads the counted string header at `s` (`Wide`: UNICODE_STRING, `Narrow`: ANSI_STRING).
pub fn read_counted(k: &Kernel, s: u64, cs: CharSize) -> KResult<CountedString> {
    let l = k.layout;
    Ok(CountedString {
        length: k.m.mem.read_u16(s + l.unicode_string_length)?,
        maximum_length: k.m.mem.read_u16(s + l.unicode_string_maximum_length)?,
        buffer: k.read_ptr(s + buffer_offset(k, cs))?,
    })
}

/// Writes the counted string header at `s`.
pub fn write_counted(k: &mut Kernel, s: u64, cs: CharSize, v: CountedString) -> KResult<()> {
    let l = k.layout;
    k.m.mem.write_u16(s + l.unicode_string_length, v.length)?;
    k.m.mem
        .write_u16(s + l.unicode_string_maximum_length, v.maximum_length)?;
    let at = s + buffer_offset(k, cs);
    k.write_ptr(at, v.buffer)
}

/// Writes a UNICODE_STRING header at `us`.
pub fn write_unicode_string_struct(
    k: &mut Kernel,
    us: u64,
    buffer: u64,
    len_bytes: u16,
    max_bytes: u16,
) -> KResult<()> {
    write_counted(
        k,
        us,
        CharSize::Wide,
        CountedString {
            length: len_bytes,
            maximum_length: max_bytes,
            buffer,
        },
    )
}

/// The characters of a counted string (`Length` bytes; none read when it is 0).
pub fn counted_units(k: &Kernel, s: &CountedString, cs: CharSize) -> KResult<Vec<u16>> {
    let count = u64::from(s.length) / cs.bytes();
    if count == 0 {
        return Ok(Vec::new());
    }
    crt::read_units(k, s.buffer, cs, count)
}

/// The UTF-16 code units of the UNICODE_STRING at `us`.
pub fn read_unicode_units(k: &Kernel, us: u64) -> KResult<Vec<u16>> {
    let s = read_counted(k, us, CharSize::Wide)?;
    counted_units(k, &s, CharSize::Wide)
}

/// The text of the UNICODE_STRING at `us` (invalid UTF-16 replaced).
pub fn read_unicode_string(k: &Kernel, us: u64) -> KResult<String> {
    Ok(String::from_utf16_lossy(&read_unicode_units(k, us)?))
}

/// The text of the ANSI_STRING at `s`.
pub fn read_ansi_string(k: &Kernel, s: u64) -> KResult<String> {
    let header = read_counted(k, s, CharSize::Narrow)?;
    Ok(ansi_units_to_string(&counted_units(
        k,
        &header,
        CharSize::Narrow,
    )?))
}

/// Allocates (from pool owned by ntoskrnl) a UNICODE_STRING followed by its NUL-terminated buffer
/// holding `text`; returns the address of the UNICODE_STRING.
pub fn alloc_unicode_string(k: &mut Kernel, text: &str, tag: u32) -> KResult<u64> {
    let units: Vec<u16> = text.encode_utf16().collect();
    let len_bytes = units.len() as u64 * 2;
    if len_bytes > MAX_UNICODE_LENGTH {
        return Err(KernelError::Unsupported(format!(
            "string of {} characters is too long for a UNICODE_STRING",
            units.len()
        )));
    }
    let header = k.layout.unicode_string_size;
    let us = ex::allocate(k, header + len_bytes + 2, tag, "ntoskrnl".into())?;
    let buffer = us + header;
    crt::write_str(k, buffer, CharSize::Wide, &units)?;
    write_unicode_string_struct(k, us, buffer, len_bytes as u16, len_bytes as u16 + 2)?;
    Ok(us)
}

/// Pool for a string buffer a driver asked Rtl to allocate (charged to the calling driver).
fn allocate_buffer(k: &mut Kernel, bytes: u64, cs: CharSize) -> KResult<u64> {
    let tag = match cs {
        CharSize::Narrow => TAG_ANSI,
        CharSize::Wide => TAG_UNICODE,
    };
    let owner = k.caller_image();
    ex::allocate(k, bytes, tag, owner)
}

// ---------------------------------------------------------------------------------------------
// Initialization

/// Points the counted string at `dest` at the NUL-terminated `source` (Length capped at `cap`).
/// Returns whether the string was longer than the cap.
fn init_counted(k: &mut Kernel, dest: u64, source: u64, cs: CharSize, cap: u64) -> KResult<bool> {
    if source == 0 {
        write_counted(k, dest, cs, CountedString::default())?;
        return Ok(false);
    }
    let unit = cs.bytes();
    // Looking one character past the cap is enough to know whether it was exceeded.
    let len = crt::str_nlen(k, source, cs, cap / unit + 1)? * unit;
    let length = len.min(cap) as u16;
    let value = CountedString {
        length,
        maximum_length: length + unit as u16,
        buffer: source,
    };
    write_counted(k, dest, cs, value)?;
    Ok(len > cap)
}

/// RtlInitUnicodeString(DestinationString, SourceString).
pub fn init_unicode_string(k: &mut Kernel, dest: u64, source: u64) -> KResult<()> {
    init_counted(k, dest, source, CharSize::Wide, MAX_UNICODE_LENGTH).map(drop)
}

/// RtlInitAnsiString / RtlInitString(DestinationString, SourceString).
pub fn init_ansi_string(k: &mut Kernel, dest: u64, source: u64) -> KResult<()> {
    init_counted(k, dest, source, CharSize::Narrow, MAX_ANSI_LENGTH).map(drop)
}

fn init_ex(k: &mut Kernel, dest: u64, source: u64, cs: CharSize, cap: u64) -> KResult<NtStatus> {
    if init_counted(k, dest, source, cs, cap)? {
        write_counted(
            k,
            dest,
            cs,
            CountedString {
                buffer: source,
                ..CountedString::default()
            },
        )?;
        return Ok(STATUS_NAME_TOO_LONG);
    }
    Ok(STATUS_SUCCESS)
}

/// RtlInitUnicodeStringEx(DestinationString, SourceString) -> STATUS_NAME_TOO_LONG past 0xFFFC bytes.
pub fn init_unicode_string_ex(k: &mut Kernel, dest: u64, source: u64) -> KResult<NtStatus> {
    init_ex(k, dest, source, CharSize::Wide, MAX_UNICODE_LENGTH)
}

/// RtlInitAnsiStringEx(DestinationString, SourceString).
pub fn init_ansi_string_ex(k: &mut Kernel, dest: u64, source: u64) -> KResult<NtStatus> {
    init_ex(k, dest, source, CharSize::Narrow, MAX_ANSI_LENGTH)
}

/// RtlCreateUnicodeString(DestinationString, SourceString) -> TRUE if allocated.
pub fn create_unicode_string(k: &mut Kernel, dest: u64, source: u64) -> KResult<bool> {
    let units = crt::read_str(k, source, CharSize::Wide)?;
    let bytes = units.len() as u64 * 2;
    if bytes > MAX_UNICODE_LENGTH {
        return Ok(false);
    }
    let buffer = allocate_buffer(k, bytes + 2, CharSize::Wide)?;
    crt::write_str(k, buffer, CharSize::Wide, &units)?;
    write_unicode_string_struct(k, dest, buffer, bytes as u16, bytes as u16 + 2)?;
    Ok(true)
}

/// RTL_DUPLICATE_UNICODE_STRING_NULL_TERMINATE.
const DUPLICATE_NULL_TERMINATE: u32 = 1;
/// RTL_DUPLICATE_UNICODE_STRING_ALLOCATE_NULL_STRING.
const DUPLICATE_ALLOCATE_NULL_STRING: u32 = 2;

/// RtlDuplicateUnicodeString(Flags, StringIn, StringOut).
pub fn duplicate_unicode_string(
    k: &mut Kernel,
    flags: u32,
    source: u64,
    dest: u64,
) -> KResult<NtStatus> {
    if source == 0 || dest == 0 || flags > 3 || flags == DUPLICATE_ALLOCATE_NULL_STRING {
        return Ok(STATUS_INVALID_PARAMETER);
    }
    let src = read_counted(k, source, CharSize::Wide)?;
    if src.length > src.maximum_length
        || (src.length == 0 && src.maximum_length > 0 && src.buffer == 0)
    {
        return Ok(STATUS_INVALID_PARAMETER);
    }
    if src.length == 0 && flags != DUPLICATE_NULL_TERMINATE | DUPLICATE_ALLOCATE_NULL_STRING {
        write_counted(k, dest, CharSize::Wide, CountedString::default())?;
        return Ok(STATUS_SUCCESS);
    }
    let terminate = flags & DUPLICATE_NULL_TERMINATE != 0;
    let max = u64::from(src.length) + if terminate { 2 } else { 0 };
    if max > 0xFFFF {
        return Ok(STATUS_NAME_TOO_LONG);
    }
    let units = counted_units(k, &src, CharSize::Wide)?;
    let buffer = allocate_buffer(k, max, CharSize::Wide)?;
    if terminate {
        crt::write_str(k, buffer, CharSize::Wide, &units)?;
    } else {
        crt::write_units(k, buffer, CharSize::Wide, &units)?;
    }
    write_unicode_string_struct(k, dest, buffer, src.length, max as u16)?;
    Ok(STATUS_SUCCESS)
}

// ---------------------------------------------------------------------------------------------
// Copy, append

/// RtlCopyUnicodeString / RtlCopyString semantics: copies what fits in the destination,
/// NUL-terminating when there is room (a NULL source empties the destination).
fn copy_counted(k: &mut Kernel, dest: u64, source: u64, cs: CharSize) -> KResult<()> {
    let mut d = read_counted(k, dest, cs)?;
    if source == 0 {
        d.length = 0;
        return write_counted(k, dest, cs, d);
    }
    let s = read_counted(k, source, cs)?;
    let unit = cs.bytes() as u16;
    let n = s.length.min(d.maximum_length) / unit * unit;
    crt::move_memory(k, d.buffer, s.buffer, u64::from(n))?;
    d.length = n;
    if n < d.maximum_length && d.maximum_length - n >= unit {
        crt::write_unit(k, d.buffer + u64::from(n), cs, 0)?;
    }
    write_counted(k, dest, cs, d)
}

/// RtlCopyUnicodeString(DestinationString, SourceString).
pub fn copy_unicode_string(k: &mut Kernel, dest: u64, source: u64) -> KResult<()> {
    copy_counted(k, dest, source, CharSize::Wide)
}

/// RtlCopyString(DestinationString, SourceString).
pub fn copy_string(k: &mut Kernel, dest: u64, source: u64) -> KResult<()> {
    copy_counted(k, dest, source, CharSize::Narrow)
}

/// Appends `bytes` bytes at `src` to the counted string at `dest`; STATUS_BUFFER_TOO_SMALL (and no
/// change) if they do not fit. `terminate` adds a NUL when there is room left.
fn append(
    k: &mut Kernel,
    dest: u64,
    cs: CharSize,
    src: u64,
    bytes: u64,
    terminate: bool,
) -> KResult<NtStatus> {
    let mut d = read_counted(k, dest, cs)?;
    let total = u64::from(d.length) + bytes;
    if total > u64::from(d.maximum_length) {
        return Ok(STATUS_BUFFER_TOO_SMALL);
    }
    crt::move_memory(k, d.buffer + u64::from(d.length), src, bytes)?;
    d.length = total as u16;
    if terminate && total + cs.bytes() <= u64::from(d.maximum_length) {
        crt::write_unit(k, d.buffer + total, cs, 0)?;
    }
    write_counted(k, dest, cs, d)?;
    Ok(STATUS_SUCCESS)
}

/// RtlAppendUnicodeToString(Destination, Source): appends a NUL-terminated wide string.
pub fn append_unicode_to_string(k: &mut Kernel, dest: u64, source: u64) -> KResult<NtStatus> {
    if source == 0 {
        return Ok(STATUS_SUCCESS);
    }
    let bytes = crt::str_len(k, source, CharSize::Wide)? * 2;
    append(k, dest, CharSize::Wide, source, bytes, true)
}

/// RtlAppendUnicodeStringToString(Destination, Source).
pub fn append_unicode_string_to_string(
    k: &mut Kernel,
    dest: u64,
    source: u64,
) -> KResult<NtStatus> {
    let s = read_counted(k, source, CharSize::Wide)?;
    if s.length == 0 {
        return Ok(STATUS_SUCCESS);
    }
    append(k, dest, CharSize::Wide, s.buffer, u64::from(s.length), true)
}

/// RtlAppendStringToString(Destination, Source) (no terminator added).
pub fn append_string_to_string(k: &mut Kernel, dest: u64, source: u64) -> KResult<NtStatus> {
    let s = read_counted(k, source, CharSize::Narrow)?;
    if s.length == 0 {
        return Ok(STATUS_SUCCESS);
    }
    append(
        k,
        dest,
        CharSize::Narrow,
        s.buffer,
        u64::from(s.length),
        false,
    )
}

/// RtlAppendAsciizToString(Destination, Source) (no terminator added).
pub fn append_asciiz_to_string(k: &mut Kernel, dest: u64, source: u64) -> KResult<NtStatus> {
    if source == 0 {
        return Ok(STATUS_SUCCESS);
    }
    let bytes = crt::str_len(k, source, CharSize::Narrow)?;
    append(k, dest, CharSize::Narrow, source, bytes, false)
}

// ---------------------------------------------------------------------------------------------
// Comparison

/// Case folding of a character of the given width (Unicode upcase, or ANSI upcase).
fn fold(u: u16, cs: CharSize) -> u16 {
    match cs {
        CharSize::Wide => upcase(u),
        CharSize::Narrow => u16::from(upper_ansi(u as u8)),
    }
}

/// RtlCompareUnicodeString semantics on code units: the difference of the first differing
/// characters (upcased if `insensitive`), else the difference of the byte lengths.
fn compare_units(a: &[u16], b: &[u16], cs: CharSize, insensitive: bool) -> i32 {
    for (&x, &y) in a.iter().zip(b) {
        let (x, y) = if insensitive {
            (fold(x, cs), fold(y, cs))
        } else {
            (x, y)
        };
        if x != y {
            return i32::from(x) - i32::from(y);
        }
    }
    let bytes = |n: usize| n as i32 * cs.bytes() as i32;
    bytes(a.len()) - bytes(b.len())
}

fn read_both(k: &Kernel, s1: u64, s2: u64, cs: CharSize) -> KResult<(Vec<u16>, Vec<u16>)> {
    let a = read_counted(k, s1, cs)?;
    let b = read_counted(k, s2, cs)?;
    Ok((counted_units(k, &a, cs)?, counted_units(k, &b, cs)?))
}

/// RtlCompareUnicodeString(String1, String2, CaseInSensitive).
pub fn compare_unicode_string(k: &mut Kernel, s1: u64, s2: u64, insensitive: bool) -> KResult<i32> {
    let (a, b) = read_both(k, s1, s2, CharSize::Wide)?;
    Ok(compare_units(&a, &b, CharSize::Wide, insensitive))
}

/// RtlCompareString(String1, String2, CaseInSensitive).
pub fn compare_string(k: &mut Kernel, s1: u64, s2: u64, insensitive: bool) -> KResult<i32> {
    let (a, b) = read_both(k, s1, s2, CharSize::Narrow)?;
    Ok(compare_units(&a, &b, CharSize::Narrow, insensitive))
}

/// RtlEqualUnicodeString(String1, String2, CaseInSensitive).
pub fn equal_unicode_string(k: &mut Kernel, s1: u64, s2: u64, insensitive: bool) -> KResult<bool> {
    let (a, b) = read_both(k, s1, s2, CharSize::Wide)?;
    Ok(a.len() == b.len() && compare_units(&a, &b, CharSize::Wide, insensitive) == 0)
}

/// RtlEqualString(String1, String2, CaseInSensitive).
pub fn equal_string(k: &mut Kernel, s1: u64, s2: u64, insensitive: bool) -> KResult<bool> {
    let (a, b) = read_both(k, s1, s2, CharSize::Narrow)?;
    Ok(a.len() == b.len() && compare_units(&a, &b, CharSize::Narrow, insensitive) == 0)
}

/// RtlPrefixUnicodeString(String1, String2, CaseInSensitive): whether String1 is a prefix of String2.
pub fn prefix_unicode_string(k: &mut Kernel, s1: u64, s2: u64, insensitive: bool) -> KResult<bool> {
    let (a, b) = read_both(k, s1, s2, CharSize::Wide)?;
    Ok(a.len() <= b.len() && compare_units(&a, &b[..a.len()], CharSize::Wide, insensitive) == 0)
}

/// RtlPrefixString(String1, String2, CaseInSensitive).
pub fn prefix_string(k: &mut Kernel, s1: u64, s2: u64, insensitive: bool) -> KResult<bool> {
    let (a, b) = read_both(k, s1, s2, CharSize::Narrow)?;
    Ok(a.len() <= b.len() && compare_units(&a, &b[..a.len()], CharSize::Narrow, insensitive) == 0)
}

// ---------------------------------------------------------------------------------------------
// Case

/// RtlUpcaseUnicodeChar(SourceCharacter).
pub fn upcase_unicode_char(_k: &mut Kernel, c: u16) -> KResult<u16> {
    Ok(upcase(c))
}

/// RtlDowncaseUnicodeChar(SourceCharacter).
pub fn downcase_unicode_char(_k: &mut Kernel, c: u16) -> KResult<u16> {
    Ok(downcase(c))
}

/// RtlUpperChar(Character).
pub fn upper_char(_k: &mut Kernel, c: u8) -> KResult<u8> {
    Ok(upper_ansi(c))
}

/// RtlUpcaseUnicodeString / RtlDowncaseUnicodeString semantics: the allocated buffer holds exactly
/// `Length` bytes (no terminator); a caller buffer must hold `Length` bytes.
fn change_case(
    k: &mut Kernel,
    dest: u64,
    source: u64,
    allocate: bool,
    up: bool,
) -> KResult<NtStatus> {
    let s = read_counted(k, source, CharSize::Wide)?;
    let units: Vec<u16> = counted_units(k, &s, CharSize::Wide)?
        .into_iter()
        .map(|u| map_case(u, up))
        .collect();
    let mut d = if allocate {
        let buffer = allocate_buffer(k, u64::from(s.length), CharSize::Wide)?;
        CountedString {
            length: 0,
            maximum_length: s.length,
            buffer,
        }
    } else {
        let d = read_counted(k, dest, CharSize::Wide)?;
        if s.length > d.maximum_length {
            return Ok(STATUS_BUFFER_OVERFLOW);
        }
        d
    };
    crt::write_units(k, d.buffer, CharSize::Wide, &units)?;
    d.length = s.length;
    write_counted(k, dest, CharSize::Wide, d)?;
    Ok(STATUS_SUCCESS)
}

/// RtlUpcaseUnicodeString(DestinationString, SourceString, AllocateDestinationString).
pub fn upcase_unicode_string(
    k: &mut Kernel,
    dest: u64,
    source: u64,
    allocate: bool,
) -> KResult<NtStatus> {
    change_case(k, dest, source, allocate, true)
}

/// RtlDowncaseUnicodeString(DestinationString, SourceString, AllocateDestinationString).
pub fn downcase_unicode_string(
    k: &mut Kernel,
    dest: u64,
    source: u64,
    allocate: bool,
) -> KResult<NtStatus> {
    change_case(k, dest, source, allocate, false)
}

/// RtlUpperString(DestinationString, SourceString): copies what fits, upcased.
pub fn upper_string(k: &mut Kernel, dest: u64, source: u64) -> KResult<()> {
    let s = read_counted(k, source, CharSize::Narrow)?;
    let mut d = read_counted(k, dest, CharSize::Narrow)?;
    let n = s.length.min(d.maximum_length);
    let units = crt::read_units(k, s.buffer, CharSize::Narrow, u64::from(n))?;
    let upper: Vec<u16> = units
        .into_iter()
        .map(|u| u16::from(upper_ansi(u as u8)))
        .collect();
    crt::write_units(k, d.buffer, CharSize::Narrow, &upper)?;
    d.length = n;
    write_counted(k, dest, CharSize::Narrow, d)
}

// ---------------------------------------------------------------------------------------------
// ANSI <-> Unicode

/// RtlAnsiStringToUnicodeString(DestinationString, SourceString, AllocateDestinationString).
pub fn ansi_string_to_unicode_string(
    k: &mut Kernel,
    dest: u64,
    source: u64,
    allocate: bool,
) -> KResult<NtStatus> {
    let s = read_counted(k, source, CharSize::Narrow)?;
    let size = (u64::from(s.length) + 1) * 2;
    if size > 0xFFFF {
        return Ok(STATUS_INVALID_PARAMETER_2);
    }
    let length = (size - 2) as u16;
    let units: Vec<u16> = counted_units(k, &s, CharSize::Narrow)?
        .into_iter()
        .map(|u| ansi_to_unicode(u as u8))
        .collect();
    let (buffer, maximum_length) = if allocate {
        (allocate_buffer(k, size, CharSize::Wide)?, size as u16)
    } else {
        let d = read_counted(k, dest, CharSize::Wide)?;
        if length >= d.maximum_length {
            return Ok(STATUS_BUFFER_OVERFLOW);
        }
        (d.buffer, d.maximum_length)
    };
    crt::write_str(k, buffer, CharSize::Wide, &units)?;
    write_counted(
        k,
        dest,
        CharSize::Wide,
        CountedString {
            length,
            maximum_length,
            buffer,
        },
    )?;
    Ok(STATUS_SUCCESS)
}

/// RtlUnicodeStringToAnsiString(DestinationString, SourceString, AllocateDestinationString): a
/// caller buffer that is too small receives what fits (terminated) and STATUS_BUFFER_OVERFLOW.
pub fn unicode_string_to_ansi_string(
    k: &mut Kernel,
    dest: u64,
    source: u64,
    allocate: bool,
) -> KResult<NtStatus> {
    let s = read_counted(k, source, CharSize::Wide)?;
    let size = u64::from(s.length) / 2 + 1;
    if size > 0xFFFF {
        return Ok(STATUS_INVALID_PARAMETER_2);
    }
    let mut units: Vec<u16> = counted_units(k, &s, CharSize::Wide)?
        .into_iter()
        .map(|u| u16::from(unicode_to_ansi(u)))
        .collect();
    let mut status = STATUS_SUCCESS;
    let d = if allocate {
        let buffer = allocate_buffer(k, size, CharSize::Narrow)?;
        CountedString {
            length: 0,
            maximum_length: size as u16,
            buffer,
        }
    } else {
        let d = read_counted(k, dest, CharSize::Narrow)?;
        if units.len() >= usize::from(d.maximum_length) {
            if d.maximum_length == 0 {
                return Ok(STATUS_BUFFER_OVERFLOW);
            }
            status = STATUS_BUFFER_OVERFLOW;
            units.truncate(usize::from(d.maximum_length) - 1);
        }
        d
    };
    crt::write_str(k, d.buffer, CharSize::Narrow, &units)?;
    write_counted(
        k,
        dest,
        CharSize::Narrow,
        CountedString {
            length: units.len() as u16,
            ..d
        },
    )?;
    Ok(status)
}

/// RtlxAnsiStringToUnicodeSize / RtlAnsiStringToUnicodeSize(AnsiString): bytes needed, terminator
/// included.
pub fn ansi_string_to_unicode_size(k: &mut Kernel, s: u64) -> KResult<u32> {
    let s = read_counted(k, s, CharSize::Narrow)?;
    Ok((u32::from(s.length) + 1) * 2)
}

/// RtlxUnicodeStringToAnsiSize / RtlUnicodeStringToAnsiSize(UnicodeString).
pub fn unicode_string_to_ansi_size(k: &mut Kernel, s: u64) -> KResult<u32> {
    let s = read_counted(k, s, CharSize::Wide)?;
    Ok(u32::from(s.length) / 2 + 1)
}

fn free_counted(k: &mut Kernel, s: u64, cs: CharSize) -> KResult<()> {
    let header = read_counted(k, s, cs)?;
    if header.buffer != 0 {
        ex::free(k, header.buffer, None)?;
        write_counted(k, s, cs, CountedString::default())?;
    }
    Ok(())
}

/// RtlFreeUnicodeString(UnicodeString): frees a buffer Rtl allocated and empties the string.
pub fn free_unicode_string(k: &mut Kernel, s: u64) -> KResult<()> {
    free_counted(k, s, CharSize::Wide)
}

/// RtlFreeAnsiString(AnsiString).
pub fn free_ansi_string(k: &mut Kernel, s: u64) -> KResult<()> {
    free_counted(k, s, CharSize::Narrow)
}

// ---------------------------------------------------------------------------------------------
// Integers

/// RtlUnicodeStringToInteger / RtlCharToInteger parsing: characters up to the space are skipped, a
/// sign, with base 0 a `0b`/`0o`/`0x` prefix (else decimal), then digits until the first that does
/// not belong to the base; 32-bit wrap-around. Err for an unsupported base.
fn parse_rtl_integer(units: &[u16], base: u32) -> Result<u32, NtStatus> {
    let mut it = units
        .iter()
        .copied()
        .skip_while(|&u| u <= u16::from(b' '))
        .peekable();
    let mut negative = false;
    if let Some(&sign) = it.peek() {
        if sign == u16::from(b'-') || sign == u16::from(b'+') {
            negative = sign == u16::from(b'-');
            it.next();
        }
    }
    let rest: Vec<u16> = it.collect();
    let (base, digits) = match base {
        0 => match rest.as_slice() {
            [z, p, tail @ ..] if *z == u16::from(b'0') => match *p as u8 {
                b'b' => (2, tail),
                b'o' => (8, tail),
                b'x' => (16, tail),
                _ => (10, rest.as_slice()),
            },
            _ => (10, rest.as_slice()),
        },
        2 | 8 | 10 | 16 => (base, rest.as_slice()),
        _ => return Err(STATUS_INVALID_PARAMETER),
    };
    let mut total: u32 = 0;
    for &u in digits {
        match char::from_u32(u32::from(u)).and_then(|c| c.to_digit(36)) {
            Some(d) if d < base => total = total.wrapping_mul(base).wrapping_add(d),
            _ => break,
        }
    }
    Ok(if negative {
        total.wrapping_neg()
    } else {
        total
    })
}

fn store_integer(k: &mut Kernel, units: &[u16], base: u32, value: u64) -> KResult<NtStatus> {
    match parse_rtl_integer(units, base) {
        Err(status) => Ok(status),
        Ok(_) if value == 0 => Ok(STATUS_ACCESS_VIOLATION),
        Ok(v) => {
            k.m.mem.write_u32(value, v)?;
            Ok(STATUS_SUCCESS)
        }
    }
}

/// RtlUnicodeStringToInteger(String, Base, Value).
pub fn unicode_string_to_integer(
    k: &mut Kernel,
    s: u64,
    base: u32,
    value: u64,
) -> KResult<NtStatus> {
    let units = read_unicode_units(k, s)?;
    store_integer(k, &units, base, value)
}

/// RtlCharToInteger(String, Base, Value).
pub fn char_to_integer(k: &mut Kernel, s: u64, base: u32, value: u64) -> KResult<NtStatus> {
    let units = crt::read_str(k, s, CharSize::Narrow)?;
    store_integer(k, &units, base, value)
}

/// Digits of `value` in `base` (0 = 10; upper-case letters), or Err for an unsupported base.
fn integer_digits(value: u32, base: u32) -> Result<Vec<u16>, NtStatus> {
    let base = if base == 0 { 10 } else { base };
    if !matches!(base, 2 | 8 | 10 | 16) {
        return Err(STATUS_INVALID_PARAMETER);
    }
    let mut digits = Vec::new();
    let mut v = value;
    loop {
        let d = char::from_digit(v % base, base).map_or(b'?', |c| c.to_ascii_uppercase() as u8);
        digits.push(u16::from(d));
        v /= base;
        if v == 0 {
            break;
        }
    }
    digits.reverse();
    Ok(digits)
}

/// RtlIntegerToUnicodeString(Value, Base, String): STATUS_BUFFER_OVERFLOW unless the digits and a
/// terminator fit.
pub fn integer_to_unicode_string(
    k: &mut Kernel,
    value: u32,
    base: u32,
    s: u64,
) -> KResult<NtStatus> {
    let digits = match integer_digits(value, base) {
        Ok(d) => d,
        Err(status) => return Ok(status),
    };
    let mut d = read_counted(k, s, CharSize::Wide)?;
    let length = digits.len() as u16 * 2;
    if length >= d.maximum_length {
        return Ok(STATUS_BUFFER_OVERFLOW);
    }
    crt::write_str(k, d.buffer, CharSize::Wide, &digits)?;
    d.length = length;
    write_counted(k, s, CharSize::Wide, d)?;
    Ok(STATUS_SUCCESS)
}

/// RtlIntegerToChar(Value, Base, OutputLength, String): the terminator is written only if there is
/// room for it.
pub fn integer_to_char(
    k: &mut Kernel,
    value: u32,
    base: u32,
    length: i32,
    s: u64,
) -> KResult<NtStatus> {
    let digits = match integer_digits(value, base) {
        Ok(d) => d,
        Err(status) => return Ok(status),
    };
    let len = digits.len() as i64;
    if len > i64::from(length) {
        return Ok(STATUS_BUFFER_OVERFLOW);
    }
    if s == 0 {
        return Ok(STATUS_ACCESS_VIOLATION);
    }
    if len == i64::from(length) {
        crt::write_units(k, s, CharSize::Narrow, &digits)?;
    } else {
        crt::write_str(k, s, CharSize::Narrow, &digits)?;
    }
    Ok(STATUS_SUCCESS)
}

// ---------------------------------------------------------------------------------------------
// Memory

/// RtlCompareMemory(Source1, Source2, Length) -> number of leading bytes that match.
pub fn compare_memory(k: &mut Kernel, s1: u64, s2: u64, length: u64) -> KResult<u64> {
    Ok(crt::mismatch(k, s1, s2, length)?.map_or(length, |(at, _, _)| at))
}

/// RtlCompareMemoryUlong(Source, Length, Pattern) -> bytes matching the pattern (whole ULONGs).
pub fn compare_memory_ulong(
    k: &mut Kernel,
    source: u64,
    length: u64,
    pattern: u32,
) -> KResult<u64> {
    let mut n = 0;
    while n + 4 <= length {
        if k.m.mem.read_u32(source + n)? != pattern {
            break;
        }
        n += 4;
    }
    Ok(n)
}

/// RtlFillMemory(Destination, Length, Fill).
pub fn fill_memory(k: &mut Kernel, dest: u64, length: u64, fill: u8) -> KResult<()> {
    crt::fill_memory(k, dest, fill, length)
}

/// RtlFillMemoryUlong(Destination, Length, Pattern): Length / 4 ULONGs.
pub fn fill_memory_ulong(k: &mut Kernel, dest: u64, length: u64, pattern: u32) -> KResult<()> {
    let count = length / 4;
    if count == 0 {
        return Ok(());
    }
    if !k.m.mem.is_mapped(dest, count * 4) {
        return Err(KernelError::Mem(dbt::MemFault {
            addr: dest,
            write: true,
        }));
    }
    for i in 0..count {
        k.m.mem.write_u32(dest + 4 * i, pattern)?;
    }
    Ok(())
}

/// RtlZeroMemory(Destination, Length).
pub fn zero_memory(k: &mut Kernel, dest: u64, length: u64) -> KResult<()> {
    crt::fill_memory(k, dest, 0, length)
}

/// RtlMoveMemory / RtlCopyMemory(Destination, Source, Length).
pub fn move_memory(k: &mut Kernel, dest: u64, source: u64, length: u64) -> KResult<()> {
    crt::move_memory(k, dest, source, length)
}

// ---------------------------------------------------------------------------------------------
// GUIDs

/// Parses `{xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx}` into the 16 bytes of a GUID as laid out in memory.
fn parse_guid(units: &[u16]) -> Option<[u8; 16]> {
    let text: String = char::decode_utf16(units.iter().copied())
        .collect::<Result<_, _>>()
        .ok()?;
    let inner = text.strip_prefix('{')?.strip_suffix('}')?;
    let groups: Vec<&str> = inner.split('-').collect();
    let lengths = [8, 4, 4, 4, 12];
    if groups.len() != 5
        || groups
            .iter()
            .zip(lengths)
            .any(|(g, n)| g.len() != n || !g.bytes().all(|b| b.is_ascii_hexdigit()))
    {
        return None;
    }
    let mut out = [0u8; 16];
    out[0..4].copy_from_slice(&u32::from_str_radix(groups[0], 16).ok()?.to_le_bytes());
    out[4..6].copy_from_slice(&u16::from_str_radix(groups[1], 16).ok()?.to_le_bytes());
    out[6..8].copy_from_slice(&u16::from_str_radix(groups[2], 16).ok()?.to_le_bytes());
    let tail = format!("{}{}", groups[3], groups[4]);
    for (i, byte) in out[8..].iter_mut().enumerate() {
        *byte = u8::from_str_radix(tail.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// The registry form of a GUID (upper-case hex, with braces).
pub fn guid_text(g: &[u8; 16]) -> String {
    let d1 = u32::from_le_bytes([g[0], g[1], g[2], g[3]]);
    let d2 = u16::from_le_bytes([g[4], g[5]]);
    let d3 = u16::from_le_bytes([g[6], g[7]]);
    let tail: String = g[10..].iter().map(|b| format!("{b:02X}")).collect();
    format!(
        "{{{d1:08X}-{d2:04X}-{d3:04X}-{:02X}{:02X}-{tail}}}",
        g[8], g[9]
    )
}

/// RtlGUIDFromString(GuidString, Guid).
pub fn guid_from_string(k: &mut Kernel, s: u64, guid: u64) -> KResult<NtStatus> {
    let units = read_unicode_units(k, s)?;
    match parse_guid(&units) {
        Some(bytes) => {
            k.m.mem.write_bytes(guid, &bytes)?;
            Ok(STATUS_SUCCESS)
        }
        None => Ok(STATUS_INVALID_PARAMETER),
    }
}

/// RtlStringFromGUID(Guid, GuidString): allocates the string (free with RtlFreeUnicodeString).
pub fn string_from_guid(k: &mut Kernel, guid: u64, s: u64) -> KResult<NtStatus> {
    let mut bytes = [0u8; 16];
    k.m.mem.read_bytes(guid, &mut bytes)?;
    let units: Vec<u16> = guid_text(&bytes).encode_utf16().collect();
    let length = units.len() as u64 * 2;
    let buffer = allocate_buffer(k, length + 2, CharSize::Wide)?;
    crt::write_str(k, buffer, CharSize::Wide, &units)?;
    write_unicode_string_struct(k, s, buffer, length as u16, length as u16 + 2)?;
    Ok(STATUS_SUCCESS)
}

// ---------------------------------------------------------------------------------------------
// Assertions

/// RtlAssert(FailedAssertion, FileName, LineNumber, Message): prints what a checked kernel prints,
/// then ends the call path as the unhandled STATUS_ASSERTION_FAILURE it raises
/// (KMODE_EXCEPTION_NOT_HANDLED).
pub fn assert(k: &mut Kernel, failed: u64, file: u64, line: u32, message: u64) -> KResult<()> {
    let text = |k: &Kernel, p: u64| {
        if p == 0 {
            Ok(String::new())
        } else {
            crt::read_ansi_text(k, p)
        }
    };
    let expr = text(k, failed)?;
    let file = text(k, file)?;
    let message = text(k, message)?;
    let report =
        format!("*** Assertion failed: {message}{expr}\n***   Source File: {file}, line {line}");
    dbg::print(k, &report);
    Err(KernelError::bug_check(
        0x1E,
        format!(
            "RtlAssert: assertion failed (STATUS_ASSERTION_FAILURE): {message}{expr} at {file}:{line}"
        ),
    ))
}

// ---------------------------------------------------------------------------------------------
// Bitmaps (RTL_BITMAP: ULONG SizeOfBitMap, then the PULONG Buffer at the pointer's alignment)

/// Returned by the bitmap searches when no run is found.
const NO_BIT_INDEX: u32 = 0xFFFF_FFFF;

/// An RTL_BITMAP as the driver initialized it: `size` bits at `buffer`, bit `i` being bit `i % 8`
/// of byte `i / 8` (the ULONGs of the buffer, little-endian).
struct BitMap {
    size: u32,
    buffer: u64,
}

impl BitMap {
    fn read(k: &Kernel, header: u64) -> KResult<BitMap> {
        Ok(BitMap {
            size: k.m.mem.read_u32(header)?,
            buffer: k.read_ptr(header + k.ptr_size())?,
        })
    }

    /// The bytes holding bits `start..start + len`, and the address of the first.
    fn bytes(&self, k: &Kernel, start: u32, len: u32) -> KResult<(u64, Vec<u8>)> {
        let first = u64::from(start / 8);
        let end = (u64::from(start) + u64::from(len)).div_ceil(8);
        let addr = self.buffer.wrapping_add(first);
        if !k.m.mem.is_mapped(addr, end - first) {
            return Err(KernelError::Mem(dbt::MemFault { addr, write: false }));
        }
        Ok((addr, k.m.mem.read_vec(addr, (end - first) as usize)?))
    }

    /// Every bit of the bitmap, in order.
    fn bits(&self, k: &Kernel) -> KResult<Vec<bool>> {
        let (_, bytes) = self.bytes(k, 0, self.size)?;
        Ok((0..self.size as usize)
            .map(|i| bytes[i / 8] & (1 << (i % 8)) != 0)
            .collect())
    }

    /// Sets (or clears) bits `start..start + len`.
    fn fill(&self, k: &mut Kernel, start: u32, len: u32, value: bool) -> KResult<()> {
        if len == 0 {
            return Ok(());
        }
        let (addr, mut bytes) = self.bytes(k, start, len)?;
        let base = u64::from(start / 8 * 8);
        for i in u64::from(start)..u64::from(start) + u64::from(len) {
            let (byte, bit) = (((i - base) / 8) as usize, (i % 8) as u8);
            if value {
                bytes[byte] |= 1 << bit;
            } else {
                bytes[byte] &= !(1 << bit);
            }
        }
        Ok(k.m.mem.write_bytes(addr, &bytes)?)
    }

    /// Whether bits `start..start + len` are all `value` (FALSE for an empty or out-of-range run).
    fn all(&self, k: &Kernel, start: u32, len: u32, value: bool) -> KResult<bool> {
        if len == 0 || u64::from(start) + u64::from(len) > u64::from(self.size) {
            return Ok(false);
        }
        let (_, bytes) = self.bytes(k, start, len)?;
        let base = start / 8 * 8;
        Ok((start..start + len)
            .all(|i| (bytes[((i - base) / 8) as usize] & (1 << (i % 8)) != 0) == value))
    }

    /// The first run of `count` clear bits starting at or after `hint`, else the first one
    /// starting before it (the search wraps once); [`NO_BIT_INDEX`] if there is none. A `hint`
    /// past the end starts at 0; a zero `count` finds the hint rounded down to a byte, as the
    /// Windows implementation does.
    fn find_clear(&self, k: &Kernel, count: u32, hint: u32) -> KResult<u32> {
        if count > self.size {
            return Ok(NO_BIT_INDEX);
        }
        let hint = if hint >= self.size { 0 } else { hint };
        if count == 0 {
            return Ok(hint & !7);
        }
        let bits = self.bits(k)?;
        let fits = |at: u32| !bits[at as usize..(at + count) as usize].iter().any(|&b| b);
        let last = self.size - count;
        Ok((hint..=last)
            .chain(0..hint.min(last + 1))
            .find(|&at| fits(at))
            .unwrap_or(NO_BIT_INDEX))
    }
}

/// RtlInitializeBitMap(BitMapHeader, BitMapBuffer, SizeOfBitMap): the bits are left as they are.
pub fn initialize_bit_map(k: &mut Kernel, header: u64, buffer: u64, size: u32) -> KResult<()> {
    k.m.mem.write_u32(header, size)?;
    k.write_ptr(header + k.ptr_size(), buffer)
}

/// RtlSetBit(BitMapHeader, BitNumber).
pub fn set_bit(k: &mut Kernel, header: u64, bit: u32) -> KResult<()> {
    BitMap::read(k, header)?.fill(k, bit, 1, true)
}

/// RtlClearBit(BitMapHeader, BitNumber).
pub fn clear_bit(k: &mut Kernel, header: u64, bit: u32) -> KResult<()> {
    BitMap::read(k, header)?.fill(k, bit, 1, false)
}

/// RtlTestBit(BitMapHeader, BitNumber) -> whether the bit is set.
pub fn test_bit(k: &mut Kernel, header: u64, bit: u32) -> KResult<bool> {
    let map = BitMap::read(k, header)?;
    let (_, bytes) = map.bytes(k, bit, 1)?;
    Ok(bytes[0] & (1 << (bit % 8)) != 0)
}

/// RtlSetBits(BitMapHeader, StartingIndex, NumberToSet).
pub fn set_bits(k: &mut Kernel, header: u64, start: u32, count: u32) -> KResult<()> {
    BitMap::read(k, header)?.fill(k, start, count, true)
}

/// RtlClearBits(BitMapHeader, StartingIndex, NumberToClear).
pub fn clear_bits(k: &mut Kernel, header: u64, start: u32, count: u32) -> KResult<()> {
    BitMap::read(k, header)?.fill(k, start, count, false)
}

/// RtlSetAllBits(BitMapHeader): every ULONG of the buffer (the bits past the size too).
pub fn set_all_bits(k: &mut Kernel, header: u64) -> KResult<()> {
    let map = BitMap::read(k, header)?;
    crt::fill_memory(k, map.buffer, 0xFF, u64::from(map.size.div_ceil(32)) * 4)
}

/// RtlClearAllBits(BitMapHeader): every ULONG of the buffer.
pub fn clear_all_bits(k: &mut Kernel, header: u64) -> KResult<()> {
    let map = BitMap::read(k, header)?;
    crt::fill_memory(k, map.buffer, 0, u64::from(map.size.div_ceil(32)) * 4)
}

/// RtlAreBitsSet(BitMapHeader, StartingIndex, Length).
pub fn are_bits_set(k: &mut Kernel, header: u64, start: u32, length: u32) -> KResult<bool> {
    BitMap::read(k, header)?.all(k, start, length, true)
}

/// RtlAreBitsClear(BitMapHeader, StartingIndex, Length).
pub fn are_bits_clear(k: &mut Kernel, header: u64, start: u32, length: u32) -> KResult<bool> {
    BitMap::read(k, header)?.all(k, start, length, false)
}

/// RtlNumberOfSetBits(BitMapHeader) -> set bits among the first SizeOfBitMap.
pub fn number_of_set_bits(k: &mut Kernel, header: u64) -> KResult<u32> {
    let map = BitMap::read(k, header)?;
    Ok(map.bits(k)?.iter().filter(|&&b| b).count() as u32)
}

/// RtlFindClearBits(BitMapHeader, NumberToFind, HintIndex) -> start of a clear run, or 0xFFFFFFFF.
pub fn find_clear_bits(k: &mut Kernel, header: u64, count: u32, hint: u32) -> KResult<u32> {
    BitMap::read(k, header)?.find_clear(k, count, hint)
}

/// RtlFindClearBitsAndSet(BitMapHeader, NumberToFind, HintIndex): RtlFindClearBits, then sets the
/// run it found.
pub fn find_clear_bits_and_set(k: &mut Kernel, header: u64, count: u32, hint: u32) -> KResult<u32> {
    let map = BitMap::read(k, header)?;
    let at = map.find_clear(k, count, hint)?;
    if at != NO_BIT_INDEX {
        map.fill(k, at, count, true)?;
    }
    Ok(at)
}

/// RtlFindLeastSignificantBit(Set) -> index of the lowest set bit, -1 for 0.
pub fn find_least_significant_bit(_k: &mut Kernel, set: Quad) -> KResult<i32> {
    Ok(if set.0 == 0 {
        -1
    } else {
        set.0.trailing_zeros() as i32
    })
}

// ---------------------------------------------------------------------------------------------
// Byte swaps, hashing, large integers

/// RtlUlongByteSwap(Source) (fastcall; an intrinsic on x64).
pub fn ulong_byte_swap(_k: &mut Kernel, source: u32) -> KResult<u32> {
    Ok(source.swap_bytes())
}

/// RtlUshortByteSwap(Source) (fastcall; an intrinsic on x64).
pub fn ushort_byte_swap(_k: &mut Kernel, source: u16) -> KResult<u16> {
    Ok(source.swap_bytes())
}

/// HASH_STRING_ALGORITHM_DEFAULT.
const HASH_STRING_ALGORITHM_DEFAULT: u32 = 0;
/// HASH_STRING_ALGORITHM_X65599.
const HASH_STRING_ALGORITHM_X65599: u32 = 1;

/// The X65599 hash of UTF-16 units: `hash = hash * 65599 + unit`, upcasing first when asked.
fn hash_x65599(units: &[u16], insensitive: bool) -> u32 {
    units.iter().fold(0u32, |hash, &u| {
        let u = if insensitive { upcase(u) } else { u };
        hash.wrapping_mul(65599).wrapping_add(u32::from(u))
    })
}

/// RtlHashUnicodeString(String, CaseInSensitive, HashAlgorithm, HashValue): X65599 (the default);
/// STATUS_INVALID_PARAMETER for another algorithm or a NULL String or HashValue.
pub fn hash_unicode_string(
    k: &mut Kernel,
    string: u64,
    insensitive: bool,
    algorithm: u32,
    hash_value: u64,
) -> KResult<NtStatus> {
    if string == 0
        || hash_value == 0
        || !matches!(
            algorithm,
            HASH_STRING_ALGORITHM_DEFAULT | HASH_STRING_ALGORITHM_X65599
        )
    {
        return Ok(STATUS_INVALID_PARAMETER);
    }
    let units = read_unicode_units(k, string)?;
    k.m.mem
        .write_u32(hash_value, hash_x65599(&units, insensitive))?;
    Ok(STATUS_SUCCESS)
}

/// RtlConvertLongToLargeInteger(SignedInteger) -> the LONG sign-extended to a LARGE_INTEGER
/// (returned in edx:eax; an x86 export, an inline function on x64).
pub fn convert_long_to_large_integer(_k: &mut Kernel, value: i32) -> KResult<Quad> {
    Ok(Quad(value as i64 as u64))
}

pub(crate) static EXPORTS: &[Export] = export_table![
    [x86] stdcall RtlConvertLongToLargeInteger => convert_long_to_large_integer(signed_integer: i32);
    stdcall RtlInitUnicodeString => init_unicode_string(destination_string: u64, source_string: u64);
    stdcall RtlInitUnicodeStringEx => init_unicode_string_ex(destination_string: u64, source_string: u64);
    stdcall RtlInitAnsiString => init_ansi_string(destination_string: u64, source_string: u64);
    stdcall RtlInitAnsiStringEx => init_ansi_string_ex(destination_string: u64, source_string: u64);
    stdcall RtlInitString => init_ansi_string(destination_string: u64, source_string: u64);
    stdcall RtlCreateUnicodeString => create_unicode_string(destination_string: u64, source_string: u64);
    stdcall RtlDuplicateUnicodeString => duplicate_unicode_string(flags: u32, string_in: u64, string_out: u64);
    stdcall RtlCopyUnicodeString => copy_unicode_string(destination_string: u64, source_string: u64);
    stdcall RtlCopyString => copy_string(destination_string: u64, source_string: u64);
    stdcall RtlAppendUnicodeToString => append_unicode_to_string(destination: u64, source: u64);
    stdcall RtlAppendUnicodeStringToString => append_unicode_string_to_string(destination: u64, source: u64);
    stdcall RtlAppendStringToString => append_string_to_string(destination: u64, source: u64);
    stdcall RtlAppendAsciizToString => append_asciiz_to_string(destination: u64, source: u64);
    stdcall RtlCompareUnicodeString => compare_unicode_string(string1: u64, string2: u64, case_in_sensitive: bool);
    stdcall RtlEqualUnicodeString => equal_unicode_string(string1: u64, string2: u64, case_in_sensitive: bool);
    stdcall RtlPrefixUnicodeString => prefix_unicode_string(string1: u64, string2: u64, case_in_sensitive: bool);
    stdcall RtlCompareString => compare_string(string1: u64, string2: u64, case_in_sensitive: bool);
    stdcall RtlEqualString => equal_string(string1: u64, string2: u64, case_in_sensitive: bool);
    stdcall RtlPrefixString => prefix_string(string1: u64, string2: u64, case_in_sensitive: bool);
    stdcall RtlUpcaseUnicodeChar => upcase_unicode_char(source_character: u16);
    stdcall RtlDowncaseUnicodeChar => downcase_unicode_char(source_character: u16);
    stdcall RtlUpperChar => upper_char(character: u8);
    stdcall RtlUpcaseUnicodeString => upcase_unicode_string(destination_string: u64, source_string: u64, allocate_destination_string: bool);
    stdcall RtlDowncaseUnicodeString => downcase_unicode_string(destination_string: u64, source_string: u64, allocate_destination_string: bool);
    stdcall RtlUpperString => upper_string(destination_string: u64, source_string: u64);
    stdcall RtlAnsiStringToUnicodeString => ansi_string_to_unicode_string(destination_string: u64, source_string: u64, allocate_destination_string: bool);
    stdcall RtlUnicodeStringToAnsiString => unicode_string_to_ansi_string(destination_string: u64, source_string: u64, allocate_destination_string: bool);
    stdcall RtlAnsiStringToUnicodeSize => ansi_string_to_unicode_size(ansi_string: u64);
    stdcall RtlxAnsiStringToUnicodeSize => ansi_string_to_unicode_size(ansi_string: u64);
    stdcall RtlUnicodeStringToAnsiSize => unicode_string_to_ansi_size(unicode_string: u64);
    stdcall RtlxUnicodeStringToAnsiSize => unicode_string_to_ansi_size(unicode_string: u64);
    stdcall RtlFreeUnicodeString => free_unicode_string(unicode_string: u64);
    stdcall RtlFreeAnsiString => free_ansi_string(ansi_string: u64);
    stdcall RtlUnicodeStringToInteger => unicode_string_to_integer(string: u64, base: u32, value: u64);
    stdcall RtlCharToInteger => char_to_integer(string: u64, base: u32, value: u64);
    stdcall RtlIntegerToUnicodeString => integer_to_unicode_string(value: u32, base: u32, string: u64);
    stdcall RtlIntegerToChar => integer_to_char(value: u32, base: u32, output_length: i32, string: u64);
    stdcall RtlCompareMemory => compare_memory(source1: u64, source2: u64, length: u64);
    stdcall RtlCompareMemoryUlong => compare_memory_ulong(source: u64, length: u64, pattern: u32);
    stdcall RtlFillMemory => fill_memory(destination: u64, length: u64, fill: u8);
    stdcall RtlFillMemoryUlong => fill_memory_ulong(destination: u64, length: u64, pattern: u32);
    stdcall RtlZeroMemory => zero_memory(destination: u64, length: u64);
    stdcall RtlMoveMemory => move_memory(destination: u64, source: u64, length: u64);
    stdcall RtlCopyMemory => move_memory(destination: u64, source: u64, length: u64);
    stdcall RtlGUIDFromString => guid_from_string(guid_string: u64, guid: u64);
    stdcall RtlStringFromGUID => string_from_guid(guid: u64, guid_string: u64);
    stdcall RtlAssert => assert(failed_assertion: u64, file_name: u64, line_number: u32, message: u64);
    stdcall RtlInitializeBitMap => initialize_bit_map(bit_map_header: u64, bit_map_buffer: u64, size_of_bit_map: u32);
    stdcall RtlSetBit => set_bit(bit_map_header: u64, bit_number: u32);
    stdcall RtlClearBit => clear_bit(bit_map_header: u64, bit_number: u32);
    stdcall RtlTestBit => test_bit(bit_map_header: u64, bit_number: u32);
    stdcall RtlSetBits => set_bits(bit_map_header: u64, starting_index: u32, number_to_set: u32);
    stdcall RtlClearBits => clear_bits(bit_map_header: u64, starting_index: u32, number_to_clear: u32);
    stdcall RtlSetAllBits => set_all_bits(bit_map_header: u64);
    stdcall RtlClearAllBits => clear_all_bits(bit_map_header: u64);
    stdcall RtlAreBitsSet => are_bits_set(bit_map_header: u64, starting_index: u32, length: u32);
    stdcall RtlAreBitsClear => are_bits_clear(bit_map_header: u64, starting_index: u32, length: u32);
    stdcall RtlNumberOfSetBits => number_of_set_bits(bit_map_header: u64);
    stdcall RtlFindClearBits => find_clear_bits(bit_map_header: u64, number_to_find: u32, hint_index: u32);
    stdcall RtlFindClearBitsAndSet => find_clear_bits_and_set(bit_map_header: u64, number_to_find: u32, hint_index: u32);
    stdcall RtlFindLeastSignificantBit => find_least_significant_bit(set: Quad);
    [x86] fastcall RtlUlongByteSwap => ulong_byte_swap(source: u32);
    [x86] fastcall RtlUshortByteSwap => ushort_byte_swap(source: u16);
    stdcall RtlHashUnicodeString => hash_unicode_string(string: u64, case_in_sensitive: bool, hash_algorithm: u32, hash_value: u64);
];

#[cfg(test)]
mod tests {
    use super::*;

    fn units(s: &str) -> Vec<u16> {
        s.encode_utf16().collect()
    }

    #[test]
    fn code_page_round_trip() {
        for b in 0..=255u8 {
            assert_eq!(unicode_to_ansi(ansi_to_unicode(b)), b, "byte {b:#x}");
        }
        assert_eq!(ansi_to_unicode(0x80), 0x20AC);
        assert_eq!(unicode_to_ansi(0x4E2D), b'?');
        assert_eq!(ansi_units_to_string(&[0x48, 0x80, 0xE9]), "H\u{20AC}\u{E9}");
    }

    #[test]
    fn case_mapping() {
        assert_eq!(upcase(u16::from(b'a')), u16::from(b'A'));
        assert_eq!(upcase(0xE9), 0xC9);
        assert_eq!(upcase(0xFF), 0x178);
        assert_eq!(
            upcase(0xDF),
            0xDF,
            "sharp s has no single upper-case character"
        );
        assert_eq!(
            downcase(0x0130),
            0x0130,
            "dotted I lower-cases to two characters"
        );
        assert_eq!(downcase(0x3A3), 0x3C3);
        assert_eq!(upper_ansi(0xE0), 0xC0);
        assert_eq!(upper_ansi(0xFF), 0x9F);
        assert_eq!(
            upper_ansi(0xB5),
            0xB5,
            "micro sign's capital is not in the code page"
        );
    }

    #[test]
    fn compare_semantics() {
        let w = CharSize::Wide;
        assert_eq!(
            compare_units(&units("IcaTest"), &units("ICATEST"), w, true),
            0
        );
        assert!(compare_units(&units("IcaTest"), &units("ICATEST"), w, false) > 0);
        assert_eq!(compare_units(&units("abc"), &units("abd"), w, false), -1);
        assert_eq!(
            compare_units(&units("ab"), &units("abc"), w, false),
            -2,
            "length difference in bytes"
        );
        assert_eq!(
            compare_units(&units("abc"), &units("ab"), CharSize::Narrow, false),
            1
        );
        assert_eq!(
            compare_units(&units("\u{e9}t\u{e9}"), &units("\u{c9}T\u{c9}"), w, true),
            0
        );
        assert_eq!(compare_units(&[0xE9], &[0xC9], CharSize::Narrow, true), 0);
    }

    #[test]
    fn integer_parsing() {
        assert_eq!(parse_rtl_integer(&units("  123"), 0), Ok(123));
        assert_eq!(
            parse_rtl_integer(&units("-10"), 10),
            Ok(10u32.wrapping_neg())
        );
        assert_eq!(parse_rtl_integer(&units("0x1F"), 0), Ok(31));
        assert_eq!(parse_rtl_integer(&units("0b101"), 0), Ok(5));
        assert_eq!(parse_rtl_integer(&units("0o17"), 0), Ok(15));
        assert_eq!(
            parse_rtl_integer(&units("0X1F"), 0),
            Ok(0),
            "prefixes are lower-case only"
        );
        assert_eq!(parse_rtl_integer(&units("ff"), 16), Ok(255));
        assert_eq!(parse_rtl_integer(&units("12z"), 10), Ok(12));
        assert_eq!(parse_rtl_integer(&units(""), 10), Ok(0));
        assert_eq!(parse_rtl_integer(&units("\t+7"), 10), Ok(7));
        assert_eq!(parse_rtl_integer(&units("4294967297"), 10), Ok(1));
        assert_eq!(
            parse_rtl_integer(&units("1"), 7),
            Err(STATUS_INVALID_PARAMETER)
        );
    }

    #[test]
    fn integer_formatting() {
        let text = |v, b| integer_digits(v, b).map(|d| String::from_utf16_lossy(&d));
        assert_eq!(text(255, 16), Ok("FF".to_string()));
        assert_eq!(text(0, 0), Ok("0".to_string()));
        assert_eq!(text(u32::MAX, 10), Ok("4294967295".to_string()));
        assert_eq!(text(5, 2), Ok("101".to_string()));
        assert_eq!(text(5, 3), Err(STATUS_INVALID_PARAMETER));
    }

    #[test]
    fn guid_round_trip() {
        let s = "{4D36E972-E325-11CE-BFC1-08002BE10318}";
        let bytes = parse_guid(&units(s)).expect("valid GUID");
        assert_eq!(&bytes[..4], &[0x72, 0xE9, 0x36, 0x4D]);
        assert_eq!(bytes[8..10], [0xBF, 0xC1]);
        assert_eq!(guid_text(&bytes), s);
        assert_eq!(parse_guid(&units(&s.to_lowercase())), Some(bytes));
        assert_eq!(
            parse_guid(&units("4D36E972-E325-11CE-BFC1-08002BE10318")),
            None
        );
        assert_eq!(
            parse_guid(&units("{4D36E972-E325-11CE-BFC1-08002BE1031}")),
            None
        );
        assert_eq!(
            parse_guid(&units("{4D36E972-E325-11CE-BFC1-08002BE1031G}")),
            None
        );
        assert_eq!(
            parse_guid(&units("{4D36E972+E325-11CE-BFC1-08002BE10318}")),
            None
        );
    }
}

#[cfg(test)]
mod kernel_tests {
    use dbt::Arch;

    use super::*;
    use crate::crt::test_support::Guest;
    use crate::dbg::DebugLog;

    const ARCHES: [Arch; 2] = [Arch::X86, Arch::X64];

    fn header(g: &Guest, s: u64, cs: CharSize) -> CountedString {
        read_counted(&g.k, s, cs).expect("header")
    }

    #[test]
    fn unicode_strings_as_the_selftest_uses_them() {
        for arch in ARCHES {
            let mut g = Guest::new(arch);
            let size = g.k.layout.unicode_string_size as usize;
            let (a, b, c) = (g.zeroed(size), g.zeroed(size), g.zeroed(size));
            let text = g.wstr("IcaTest");
            g.call("RtlInitUnicodeString", &[a, text]).expect("init");
            assert_eq!(
                header(&g, a, CharSize::Wide),
                CountedString {
                    length: 14,
                    maximum_length: 16,
                    buffer: text
                }
            );
            g.call("RtlInitUnicodeString", &[c, 0]).expect("init NULL");
            assert_eq!(header(&g, c, CharSize::Wide), CountedString::default());
            let upper = g.wstr("ICATEST");
            g.call("RtlInitUnicodeString", &[b, upper]).expect("init");
            assert_eq!(g.call("RtlCompareUnicodeString", &[a, b, 1]).ok(), Some(0));
            assert!(
                (g.call("RtlCompareUnicodeString", &[a, b, 0])
                    .expect("compare") as u32 as i32)
                    > 0
            );
            assert_eq!(g.call("RtlEqualUnicodeString", &[a, b, 1]).ok(), Some(1));
            assert_eq!(g.call("RtlEqualUnicodeString", &[a, b, 0]).ok(), Some(0));

            let storage = g.zeroed(20);
            write_unicode_string_struct(&mut g.k, c, storage, 0, 20).expect("header");
            g.call("RtlCopyUnicodeString", &[c, a]).expect("copy");
            assert_eq!(
                read_unicode_string(&g.k, c).ok().as_deref(),
                Some("IcaTest")
            );
            let suffix = g.wstr("-42");
            assert_eq!(
                g.call("RtlAppendUnicodeToString", &[c, suffix]).ok(),
                Some(u64::from(STATUS_SUCCESS))
            );
            assert_eq!(
                read_unicode_string(&g.k, c).ok().as_deref(),
                Some("IcaTest-42")
            );
            assert_eq!(header(&g, c, CharSize::Wide).length, 20);
            let more = g.wstr("xyz");
            assert_eq!(
                g.call("RtlAppendUnicodeToString", &[c, more]).ok(),
                Some(u64::from(STATUS_BUFFER_TOO_SMALL))
            );
            assert_eq!(
                header(&g, c, CharSize::Wide).length,
                20,
                "unchanged on overflow"
            );
            assert_eq!(g.call("RtlPrefixUnicodeString", &[b, c, 1]).ok(), Some(1));

            let up = g.zeroed(size);
            assert_eq!(
                g.call("RtlUpcaseUnicodeString", &[up, a, 1]).ok(),
                Some(u64::from(STATUS_SUCCESS))
            );
            assert_eq!(
                read_unicode_string(&g.k, up).ok().as_deref(),
                Some("ICATEST")
            );
            g.call("RtlFreeUnicodeString", &[up]).expect("free");
        }
    }

    #[test]
    fn ansi_conversions_allocate_and_truncate() {
        for arch in ARCHES {
            let mut g = Guest::new(arch);
            let baseline = g.k.pool.live_bytes();
            let size = g.k.layout.unicode_string_size as usize;
            let (ansi, uni) = (g.zeroed(size), g.zeroed(size));
            let hello = g.cstr("Hello");
            g.call("RtlInitAnsiString", &[ansi, hello]).expect("init");
            assert_eq!(
                header(&g, ansi, CharSize::Narrow),
                CountedString {
                    length: 5,
                    maximum_length: 6,
                    buffer: hello
                }
            );
            assert_eq!(
                g.call("RtlAnsiStringToUnicodeString", &[uni, ansi, 1]).ok(),
                Some(u64::from(STATUS_SUCCESS))
            );
            let h = header(&g, uni, CharSize::Wide);
            assert_eq!((h.length, h.maximum_length), (10, 12));
            assert_eq!(g.read_wstr(h.buffer), "Hello");
            assert!(g.k.pool.live_bytes() > baseline);
            g.call("RtlFreeUnicodeString", &[uni]).expect("free");
            assert_eq!(header(&g, uni, CharSize::Wide), CountedString::default());
            assert_eq!(
                g.k.pool.live_bytes(),
                baseline,
                "the buffer went back to the pool"
            );

            let text = g.wstr("IcaTest");
            g.call("RtlInitUnicodeString", &[uni, text]).expect("init");
            let storage = g.bytes(b"xxxxxxxxxx");
            write_counted(
                &mut g.k,
                ansi,
                CharSize::Narrow,
                CountedString {
                    length: 0,
                    maximum_length: 8,
                    buffer: storage,
                },
            )
            .expect("header");
            assert_eq!(
                g.call("RtlUnicodeStringToAnsiString", &[ansi, uni, 0]).ok(),
                Some(u64::from(STATUS_SUCCESS))
            );
            assert_eq!(
                (
                    header(&g, ansi, CharSize::Narrow).length,
                    g.read_cstr(storage)
                ),
                (7, "IcaTest".to_string())
            );
            write_counted(
                &mut g.k,
                ansi,
                CharSize::Narrow,
                CountedString {
                    length: 0,
                    maximum_length: 4,
                    buffer: storage,
                },
            )
            .expect("header");
            assert_eq!(
                g.call("RtlUnicodeStringToAnsiString", &[ansi, uni, 0]).ok(),
                Some(u64::from(STATUS_BUFFER_OVERFLOW))
            );
            assert_eq!(
                (
                    header(&g, ansi, CharSize::Narrow).length,
                    g.read_cstr(storage)
                ),
                (3, "Ica".to_string())
            );

            let not_pool = g.zeroed(16);
            write_unicode_string_struct(&mut g.k, uni, not_pool, 0, 16).expect("header");
            assert!(
                matches!(
                    g.call("RtlFreeUnicodeString", &[uni]),
                    Err(KernelError::BugCheck { code: 0xC2, .. })
                ),
                "freeing a buffer Rtl did not allocate is BAD_POOL_CALLER"
            );
        }
    }

    #[test]
    fn host_helpers_integers_guids_memory() {
        for arch in ARCHES {
            let mut g = Guest::new(arch);
            let us = alloc_unicode_string(
                &mut g.k,
                "\\Registry\\Machine\\Ica",
                u32::from_le_bytes(*b"Test"),
            )
            .expect("alloc");
            assert_eq!(
                read_unicode_string(&g.k, us).ok().as_deref(),
                Some("\\Registry\\Machine\\Ica")
            );
            let h = header(&g, us, CharSize::Wide);
            assert_eq!(
                (h.length, h.maximum_length, h.buffer),
                (42, 44, us + g.k.layout.unicode_string_size)
            );

            let size = g.k.layout.unicode_string_size as usize;
            let s = g.zeroed(size);
            let digits = g.zeroed(8);
            write_unicode_string_struct(&mut g.k, s, digits, 0, 8).expect("header");
            assert_eq!(
                g.call("RtlIntegerToUnicodeString", &[255, 16, s]).ok(),
                Some(u64::from(STATUS_SUCCESS))
            );
            assert_eq!(read_unicode_string(&g.k, s).ok().as_deref(), Some("FF"));
            assert_eq!(
                g.call("RtlIntegerToUnicodeString", &[1234, 10, s]).ok(),
                Some(u64::from(STATUS_BUFFER_OVERFLOW))
            );
            let value = g.zeroed(4);
            assert_eq!(
                g.call("RtlUnicodeStringToInteger", &[s, 16, value]).ok(),
                Some(u64::from(STATUS_SUCCESS))
            );
            assert_eq!(g.k.m.mem.read_u32(value).ok(), Some(255));
            let text = g.cstr(" -0x10");
            assert_eq!(
                g.call("RtlCharToInteger", &[text, 0, value]).ok(),
                Some(u64::from(STATUS_SUCCESS))
            );
            assert_eq!(g.k.m.mem.read_u32(value).ok(), Some(16u32.wrapping_neg()));
            assert_eq!(
                g.call("RtlCharToInteger", &[text, 0, 0]).ok(),
                Some(u64::from(STATUS_ACCESS_VIOLATION))
            );

            let guid = g.bytes(&[
                0x72, 0xE9, 0x36, 0x4D, 0x25, 0xE3, 0xCE, 0x11, 0xBF, 0xC1, 0x08, 0x00, 0x2B, 0xE1,
                0x03, 0x18,
            ]);
            assert_eq!(
                g.call("RtlStringFromGUID", &[guid, s]).ok(),
                Some(u64::from(STATUS_SUCCESS))
            );
            assert_eq!(
                read_unicode_string(&g.k, s).ok().as_deref(),
                Some("{4D36E972-E325-11CE-BFC1-08002BE10318}")
            );
            let back = g.zeroed(16);
            assert_eq!(
                g.call("RtlGUIDFromString", &[s, back]).ok(),
                Some(u64::from(STATUS_SUCCESS))
            );
            assert_eq!(
                g.k.m.mem.read_vec(back, 16).ok(),
                g.k.m.mem.read_vec(guid, 16).ok()
            );
            g.call("RtlFreeUnicodeString", &[s]).expect("free");

            let a = g.bytes(b"abcdefgh");
            let b = g.bytes(b"abcdXfgh");
            assert_eq!(g.call("RtlCompareMemory", &[a, b, 8]).ok(), Some(4));
            g.call("RtlFillMemory", &[b, 3, u64::from(b'z')])
                .expect("fill");
            g.call("RtlMoveMemory", &[a + 1, a, 4]).expect("move");
            assert_eq!(g.k.m.mem.read_vec(a, 8).ok(), Some(b"aabcdfgh".to_vec()));
            assert_eq!(g.k.m.mem.read_vec(b, 4).ok(), Some(b"zzzd".to_vec()));
        }
    }

    #[test]
    fn rtl_assert_reports_and_stops() {
        let mut g = Guest::new(Arch::X86);
        let expr = g.cstr("p != NULL");
        let file = g.cstr("ioctl.c");
        let err = g
            .call("RtlAssert", &[expr, file, 42, 0])
            .expect_err("assertion");
        assert!(
            matches!(err, KernelError::BugCheck { code: 0x1E, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("p != NULL at ioctl.c:42"), "{err}");
        let log = &g.k.extension::<DebugLog>().lines;
        assert_eq!(
            log.first().map(String::as_str),
            Some("host: *** Assertion failed: p != NULL")
        );
    }

    #[test]
    fn bitmap_edges() {
        use crate::crt::test_support::Guest;
        for arch in [dbt::Arch::X86, dbt::Arch::X64] {
            let mut g = Guest::new(arch);
            let buffer = g.bytes(&[0xFF; 8]);
            let header = g.zeroed(16);
            initialize_bit_map(&mut g.k, header, buffer, 12).unwrap();
            clear_all_bits(&mut g.k, header).unwrap();
            assert_eq!(
                g.k.m.mem.read_u32(buffer + 4).unwrap(),
                0xFFFF_FFFF,
                "one ULONG covers 12 bits"
            );
            let k = &mut g.k;
            assert_eq!(
                find_clear_bits(k, header, 0, 11).unwrap(),
                8,
                "zero bits: the hint's byte"
            );
            assert_eq!(
                find_clear_bits(k, header, 0, 40).unwrap(),
                0,
                "a hint past the end is 0"
            );
            assert_eq!(
                find_clear_bits(k, header, 12, 5).unwrap(),
                0,
                "the whole bitmap"
            );
            assert_eq!(find_clear_bits(k, header, 13, 0).unwrap(), NO_BIT_INDEX);
            set_bits(k, header, 2, 9).unwrap();
            assert_eq!(
                k.m.mem.read_u16(buffer).unwrap(),
                0x07FC,
                "bits 2..=10, across a byte"
            );
            assert_eq!(
                find_clear_bits(k, header, 3, 2).unwrap(),
                NO_BIT_INDEX,
                "no run wraps"
            );
            assert_eq!(
                find_clear_bits(k, header, 1, 3).unwrap(),
                11,
                "from the hint first"
            );
            assert_eq!(find_clear_bits_and_set(k, header, 2, 5).unwrap(), 0);
            assert_eq!(number_of_set_bits(k, header).unwrap(), 11);
            assert!(
                !are_bits_clear(k, header, 11, 0).unwrap(),
                "an empty run is FALSE"
            );
            assert!(are_bits_clear(k, header, 11, 1).unwrap());
            assert!(
                !are_bits_set(k, header, 0, 13).unwrap(),
                "past the end is FALSE"
            );
            assert!(
                set_bits(k, header, u32::MAX - 3, u32::MAX).is_err(),
                "a range past the buffer is a guest memory fault, not a host panic"
            );
            clear_bits(k, header, 0, 11).unwrap();
            assert_eq!(number_of_set_bits(k, header).unwrap(), 0);
        }
    }

    #[test]
    fn least_significant_bit_and_hash() {
        let w = |s: &str| s.encode_utf16().collect::<Vec<u16>>();
        let mut g = crate::crt::test_support::Guest::new(dbt::Arch::X86);
        let k = &mut g.k;
        assert_eq!(find_least_significant_bit(k, Quad(0)).unwrap(), -1);
        assert_eq!(find_least_significant_bit(k, Quad(1 << 40)).unwrap(), 40);
        assert_eq!(hash_x65599(&w(""), true), 0);
        assert_eq!(hash_x65599(&w("\u{e9}"), true), 0xC9, "full Unicode upcase");
        assert_eq!(
            hash_x65599(&w("IcaTest"), true),
            hash_x65599(&w("ICATEST"), false)
        );
        let h = g.zeroed(4);
        assert_eq!(
            hash_unicode_string(&mut g.k, 0, false, 0, h).unwrap(),
            STATUS_INVALID_PARAMETER
        );
    }
}
