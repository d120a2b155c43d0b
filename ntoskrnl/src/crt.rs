//! The C runtime ntoskrnl.exe exports (cdecl on x86): memory and string routines, character classes,
//! number conversion, the printf family (formatting by [`crate::fmt`]), the bounds-checked `_s`
//! variants, `qsort`/`bsearch` (calling the guest's comparator), `rand`/`srand`, and the x86
//! compiler helpers for 64-bit arithmetic.
//!
//! Semantics follow Microsoft's CRT in the "C" locale: character classes and case mapping cover ASCII
//! only, for wide characters too (the Rtl string functions use full Unicode case mapping). The
//! legacy `swprintf`/`_swprintf`/`_vswprintf` take no buffer size, as ntoskrnl's do. Where a
//! bounds-checked function would call the invalid-parameter handler, it returns the documented error
//! (`EINVAL`, `ERANGE`, -1) after emptying the destination.

use std::cmp::Ordering;

use dbt::{Arch, CallConv, FaultKind, Reg, PAGE_SIZE};

use crate::export::{Export, Quad};
use crate::fmt::{self, ArgSource};
use crate::{export_table, KResult, Kernel, KernelError};

/// `errno` values the bounds-checked functions return.
const EINVAL: i32 = 22;
const ERANGE: i32 = 34;
const STRUNCATE: i32 = 80;

/// Narrow (`char`) or wide (`wchar_t`, UTF-16) characters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CharSize {
    /// One byte per character.
    Narrow,
    /// One UTF-16 code unit (two bytes) per character.
    Wide,
}

impl CharSize {
    /// Bytes per character.
    pub fn bytes(self) -> u64 {
        match self {
            CharSize::Narrow => 1,
            CharSize::Wide => 2,
        }
    }
}

/// Bytes from `addr` to the end of its guest page.
fn page_rest(addr: u64) -> u64 {
    PAGE_SIZE - (addr & (PAGE_SIZE - 1))
}

/// Reads `len` guest bytes page by page (the host buffer only grows as far as the guest memory is
/// really there, whatever length the guest claims).
pub fn read_guest(k: &Kernel, addr: u64, len: u64) -> KResult<Vec<u8>> {
    let mut out = Vec::with_capacity(len.min(PAGE_SIZE) as usize);
    let mut done = 0u64;
    while done < len {
        let at = addr.wrapping_add(done);
        let take = page_rest(at).min(len - done);
        let start = out.len();
        out.resize(start + take as usize, 0);
        k.m.mem.read_bytes(at, &mut out[start..])?;
        done += take;
    }
    Ok(out)
}

/// Reads one character.
pub fn read_unit(k: &Kernel, addr: u64, cs: CharSize) -> KResult<u16> {
    Ok(match cs {
        CharSize::Narrow => u16::from(k.m.mem.read_u8(addr)?),
        CharSize::Wide => k.m.mem.read_u16(addr)?,
    })
}

/// Writes one character (narrow: the low byte of `unit`).
pub fn write_unit(k: &mut Kernel, addr: u64, cs: CharSize, unit: u16) -> KResult<()> {
    match cs {
        CharSize::Narrow => k.m.mem.write_u8(addr, unit as u8)?,
        CharSize::Wide => k.m.mem.write_u16(addr, unit)?,
    }
    Ok(())
}

/// Characters before the terminator at `addr`, looking at no more than `max` characters (`max` if
/// there is no terminator among them).
pub fn str_nlen(k: &Kernel, addr: u64, cs: CharSize, max: u64) -> KResult<u64> {
    let unit = cs.bytes();
    let mut n = 0u64;
    while n < max {
        let at = addr.wrapping_add(n * unit);
        let in_page = page_rest(at) / unit;
        if in_page == 0 {
            // A wide character straddling a page boundary.
            if read_unit(k, at, cs)? == 0 {
                return Ok(n);
            }
            n += 1;
            continue;
        }
        let take = in_page.min(max - n);
        let bytes = k.m.mem.read_vec(at, (take * unit) as usize)?;
        let found = match cs {
            CharSize::Narrow => bytes.iter().position(|&b| b == 0),
            CharSize::Wide => bytes.chunks_exact(2).position(|c| c == [0, 0]),
        };
        if let Some(p) = found {
            return Ok(n + p as u64);
        }
        n += take;
    }
    Ok(max)
}

/// Characters before the terminator at `addr`.
pub fn str_len(k: &Kernel, addr: u64, cs: CharSize) -> KResult<u64> {
    str_nlen(k, addr, cs, u64::MAX)
}

/// Reads `count` characters at `addr` as code units (narrow characters widened byte by byte, no
/// code page conversion).
pub fn read_units(k: &Kernel, addr: u64, cs: CharSize, count: u64) -> KResult<Vec<u16>> {
    let bytes = read_guest(k, addr, count.saturating_mul(cs.bytes()))?;
    Ok(match cs {
        CharSize::Narrow => bytes.into_iter().map(u16::from).collect(),
        CharSize::Wide => bytes
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect(),
    })
}

/// Reads the NUL-terminated string at `addr` (terminator excluded) as code units.
pub fn read_str(k: &Kernel, addr: u64, cs: CharSize) -> KResult<Vec<u16>> {
    let len = str_len(k, addr, cs)?;
    read_units(k, addr, cs, len)
}

/// Reads the NUL-terminated narrow string at `addr` as text (ANSI code page).
pub fn read_ansi_text(k: &Kernel, addr: u64) -> KResult<String> {
    let units = read_str(k, addr, CharSize::Narrow)?;
    Ok(crate::rtl::ansi_units_to_string(&units))
}

/// Writes code units at `addr` (narrow: their low bytes), without a terminator.
pub fn write_units(k: &mut Kernel, addr: u64, cs: CharSize, units: &[u16]) -> KResult<()> {
    let bytes: Vec<u8> = match cs {
        CharSize::Narrow => units.iter().map(|&u| u as u8).collect(),
        CharSize::Wide => units.iter().flat_map(|u| u.to_le_bytes()).collect(),
    };
    if !bytes.is_empty() {
        k.m.mem.write_bytes(addr, &bytes)?;
    }
    Ok(())
}

/// Writes code units followed by a NUL terminator.
pub fn write_str(k: &mut Kernel, addr: u64, cs: CharSize, units: &[u16]) -> KResult<()> {
    write_units(k, addr, cs, units)?;
    write_unit(k, addr.wrapping_add(units.len() as u64 * cs.bytes()), cs, 0)
}

/// Guest memmove of `n` bytes (nothing touched when `n` is 0).
pub fn move_memory(k: &mut Kernel, dst: u64, src: u64, n: u64) -> KResult<()> {
    if n != 0 {
        k.m.mem.copy_within(dst, src, n)?;
    }
    Ok(())
}

/// Guest memset of `n` bytes.
pub fn fill_memory(k: &mut Kernel, dst: u64, byte: u8, n: u64) -> KResult<()> {
    if n != 0 {
        k.m.mem.fill(dst, byte, n)?;
    }
    Ok(())
}

/// The first offset below `n` where the guest ranges at `a` and `b` differ, with the two bytes
/// there. Reads page-bounded pieces, so it faults only where a byte-wise compare would.
pub fn mismatch(k: &Kernel, a: u64, b: u64, n: u64) -> KResult<Option<(u64, u8, u8)>> {
    let mut off = 0u64;
    while off < n {
        let (pa, pb) = (a.wrapping_add(off), b.wrapping_add(off));
        let take = page_rest(pa).min(page_rest(pb)).min(n - off);
        let x = k.m.mem.read_vec(pa, take as usize)?;
        let y = k.m.mem.read_vec(pb, take as usize)?;
        if let Some(i) = x.iter().zip(&y).position(|(p, q)| p != q) {
            return Ok(Some((off + i as u64, x[i], y[i])));
        }
        off += take;
    }
    Ok(None)
}

/// Pointer-sized all-ones (`(size_t)-1`, `_TRUNCATE`).
fn size_max(k: &Kernel) -> u64 {
    match k.arch() {
        Arch::X86 => 0xFFFF_FFFF,
        Arch::X64 => u64::MAX,
    }
}

fn sign(o: Ordering) -> i32 {
    match o {
        Ordering::Less => -1,
        Ordering::Equal => 0,
        Ordering::Greater => 1,
    }
}

// ---------------------------------------------------------------------------------------------
// Memory

/// memcpy(dest, src, count) -> dest.
pub fn memcpy(k: &mut Kernel, dest: u64, src: u64, count: u64) -> KResult<u64> {
    move_memory(k, dest, src, count)?;
    Ok(dest)
}

/// memset(dest, c, count) -> dest.
pub fn memset(k: &mut Kernel, dest: u64, c: i32, count: u64) -> KResult<u64> {
    fill_memory(k, dest, c as u8, count)?;
    Ok(dest)
}

/// memcmp(buf1, buf2, count) -> -1, 0 or 1.
pub fn memcmp(k: &mut Kernel, buf1: u64, buf2: u64, count: u64) -> KResult<i32> {
    Ok(match mismatch(k, buf1, buf2, count)? {
        Some((_, x, y)) => sign(x.cmp(&y)),
        None => 0,
    })
}

/// memchr(buf, c, count) -> pointer to the first `c`, or NULL.
pub fn memchr(k: &mut Kernel, buf: u64, c: i32, count: u64) -> KResult<u64> {
    let mut off = 0u64;
    while off < count {
        let at = buf.wrapping_add(off);
        let take = page_rest(at).min(count - off);
        let bytes = k.m.mem.read_vec(at, take as usize)?;
        if let Some(i) = bytes.iter().position(|&b| b == c as u8) {
            return Ok(at + i as u64);
        }
        off += take;
    }
    Ok(0)
}

// ---------------------------------------------------------------------------------------------
// Lengths, comparison

/// strlen / wcslen.
pub fn strlen(k: &mut Kernel, s: u64) -> KResult<u64> {
    str_len(k, s, CharSize::Narrow)
}

/// wcslen.
pub fn wcslen(k: &mut Kernel, s: u64) -> KResult<u64> {
    str_len(k, s, CharSize::Wide)
}

/// strnlen(s, max).
pub fn strnlen(k: &mut Kernel, s: u64, max: u64) -> KResult<u64> {
    str_nlen(k, s, CharSize::Narrow, max)
}

/// wcsnlen(s, max).
pub fn wcsnlen(k: &mut Kernel, s: u64, max: u64) -> KResult<u64> {
    str_nlen(k, s, CharSize::Wide, max)
}

/// ASCII lower case of a code unit ("C" locale).
fn lower(u: u16) -> u16 {
    if (u16::from(b'A')..=u16::from(b'Z')).contains(&u) {
        u + 32
    } else {
        u
    }
}

/// ASCII upper case of a code unit ("C" locale).
fn upper(u: u16) -> u16 {
    if (u16::from(b'a')..=u16::from(b'z')).contains(&u) {
        u - 32
    } else {
        u
    }
}

/// Compares at most `max` characters. Case-sensitive compares return -1/0/1 (as MSVC's strcmp and
/// wcscmp); case-insensitive ones the difference of the lower-cased characters (as `_stricmp`).
fn compare(k: &Kernel, a: u64, b: u64, cs: CharSize, max: u64, fold: bool) -> KResult<i32> {
    let step = cs.bytes();
    for i in 0..max {
        let mut x = read_unit(k, a.wrapping_add(i * step), cs)?;
        let mut y = read_unit(k, b.wrapping_add(i * step), cs)?;
        if fold {
            (x, y) = (lower(x), lower(y));
        }
        if x != y {
            return Ok(if fold {
                i32::from(x) - i32::from(y)
            } else {
                sign(x.cmp(&y))
            });
        }
        if x == 0 {
            break;
        }
    }
    Ok(0)
}

/// strcmp.
pub fn strcmp(k: &mut Kernel, a: u64, b: u64) -> KResult<i32> {
    compare(k, a, b, CharSize::Narrow, u64::MAX, false)
}

/// strncmp.
pub fn strncmp(k: &mut Kernel, a: u64, b: u64, count: u64) -> KResult<i32> {
    compare(k, a, b, CharSize::Narrow, count, false)
}

/// _stricmp.
pub fn stricmp(k: &mut Kernel, a: u64, b: u64) -> KResult<i32> {
    compare(k, a, b, CharSize::Narrow, u64::MAX, true)
}

/// _strnicmp.
pub fn strnicmp(k: &mut Kernel, a: u64, b: u64, count: u64) -> KResult<i32> {
    compare(k, a, b, CharSize::Narrow, count, true)
}

/// wcscmp.
pub fn wcscmp(k: &mut Kernel, a: u64, b: u64) -> KResult<i32> {
    compare(k, a, b, CharSize::Wide, u64::MAX, false)
}

/// wcsncmp.
pub fn wcsncmp(k: &mut Kernel, a: u64, b: u64, count: u64) -> KResult<i32> {
    compare(k, a, b, CharSize::Wide, count, false)
}

/// _wcsicmp.
pub fn wcsicmp(k: &mut Kernel, a: u64, b: u64) -> KResult<i32> {
    compare(k, a, b, CharSize::Wide, u64::MAX, true)
}

/// _wcsnicmp.
pub fn wcsnicmp(k: &mut Kernel, a: u64, b: u64, count: u64) -> KResult<i32> {
    compare(k, a, b, CharSize::Wide, count, true)
}

// ---------------------------------------------------------------------------------------------
// Copy and concatenation

fn copy_str(k: &mut Kernel, dest: u64, src: u64, cs: CharSize) -> KResult<u64> {
    let units = read_str(k, src, cs)?;
    write_str(k, dest, cs, &units)?;
    Ok(dest)
}

/// strncpy semantics: copies at most `count` characters and pads with NULs up to `count`.
fn copy_nstr(k: &mut Kernel, dest: u64, src: u64, count: u64, cs: CharSize) -> KResult<u64> {
    let len = str_nlen(k, src, cs, count)?;
    let units = read_units(k, src, cs, len)?;
    write_units(k, dest, cs, &units)?;
    fill_memory(
        k,
        dest.wrapping_add(len * cs.bytes()),
        0,
        (count - len).saturating_mul(cs.bytes()),
    )?;
    Ok(dest)
}

/// strncat semantics: appends at most `count` characters, always terminated.
fn cat_nstr(k: &mut Kernel, dest: u64, src: u64, count: u64, cs: CharSize) -> KResult<u64> {
    let end = dest.wrapping_add(str_len(k, dest, cs)? * cs.bytes());
    let len = str_nlen(k, src, cs, count)?;
    let units = read_units(k, src, cs, len)?;
    write_str(k, end, cs, &units)?;
    Ok(dest)
}

/// strcpy(dest, src) -> dest.
pub fn strcpy(k: &mut Kernel, dest: u64, src: u64) -> KResult<u64> {
    copy_str(k, dest, src, CharSize::Narrow)
}

/// wcscpy(dest, src) -> dest.
pub fn wcscpy(k: &mut Kernel, dest: u64, src: u64) -> KResult<u64> {
    copy_str(k, dest, src, CharSize::Wide)
}

/// strncpy(dest, src, count) -> dest.
pub fn strncpy(k: &mut Kernel, dest: u64, src: u64, count: u64) -> KResult<u64> {
    copy_nstr(k, dest, src, count, CharSize::Narrow)
}

/// wcsncpy(dest, src, count) -> dest.
pub fn wcsncpy(k: &mut Kernel, dest: u64, src: u64, count: u64) -> KResult<u64> {
    copy_nstr(k, dest, src, count, CharSize::Wide)
}

/// strcat(dest, src) -> dest.
pub fn strcat(k: &mut Kernel, dest: u64, src: u64) -> KResult<u64> {
    cat_nstr(k, dest, src, u64::MAX, CharSize::Narrow)
}

/// wcscat(dest, src) -> dest.
pub fn wcscat(k: &mut Kernel, dest: u64, src: u64) -> KResult<u64> {
    cat_nstr(k, dest, src, u64::MAX, CharSize::Wide)
}

/// strncat(dest, src, count) -> dest.
pub fn strncat(k: &mut Kernel, dest: u64, src: u64, count: u64) -> KResult<u64> {
    cat_nstr(k, dest, src, count, CharSize::Narrow)
}

/// wcsncat(dest, src, count) -> dest.
pub fn wcsncat(k: &mut Kernel, dest: u64, src: u64, count: u64) -> KResult<u64> {
    cat_nstr(k, dest, src, count, CharSize::Wide)
}

// ---------------------------------------------------------------------------------------------
// Search

/// strchr/strrchr semantics: the first (or last) `c`, the terminator included in the search.
fn find_char(k: &Kernel, s: u64, c: u16, cs: CharSize, last: bool) -> KResult<u64> {
    let mut found = 0;
    let mut at = s;
    loop {
        let unit = read_unit(k, at, cs)?;
        if unit == c {
            found = at;
            if !last {
                break;
            }
        }
        if unit == 0 {
            break;
        }
        at = at.wrapping_add(cs.bytes());
    }
    Ok(found)
}

fn find_str(k: &Kernel, haystack: u64, needle: u64, cs: CharSize) -> KResult<u64> {
    let needle = read_str(k, needle, cs)?;
    if needle.is_empty() {
        return Ok(haystack);
    }
    let hay = read_str(k, haystack, cs)?;
    Ok(hay
        .windows(needle.len())
        .position(|w| w == needle.as_slice())
        .map_or(0, |i| haystack.wrapping_add(i as u64 * cs.bytes())))
}

/// strchr(s, c).
pub fn strchr(k: &mut Kernel, s: u64, c: i32) -> KResult<u64> {
    find_char(k, s, u16::from(c as u8), CharSize::Narrow, false)
}

/// strrchr(s, c).
pub fn strrchr(k: &mut Kernel, s: u64, c: i32) -> KResult<u64> {
    find_char(k, s, u16::from(c as u8), CharSize::Narrow, true)
}

/// wcschr(s, c).
pub fn wcschr(k: &mut Kernel, s: u64, c: u16) -> KResult<u64> {
    find_char(k, s, c, CharSize::Wide, false)
}

/// wcsrchr(s, c).
pub fn wcsrchr(k: &mut Kernel, s: u64, c: u16) -> KResult<u64> {
    find_char(k, s, c, CharSize::Wide, true)
}

/// strstr(haystack, needle).
pub fn strstr(k: &mut Kernel, haystack: u64, needle: u64) -> KResult<u64> {
    find_str(k, haystack, needle, CharSize::Narrow)
}

/// wcsstr(haystack, needle).
pub fn wcsstr(k: &mut Kernel, haystack: u64, needle: u64) -> KResult<u64> {
    find_str(k, haystack, needle, CharSize::Wide)
}

/// strspn(s, accept): length of the prefix of `s` made of characters in `accept`.
pub fn strspn(k: &mut Kernel, s: u64, accept: u64) -> KResult<u64> {
    let set = read_str(k, accept, CharSize::Narrow)?;
    let text = read_str(k, s, CharSize::Narrow)?;
    Ok(text.iter().take_while(|c| set.contains(c)).count() as u64)
}

// ---------------------------------------------------------------------------------------------
// Characters ("C" locale)

const CT_UPPER: i32 = 0x1;
const CT_LOWER: i32 = 0x2;
const CT_DIGIT: i32 = 0x4;
const CT_SPACE: i32 = 0x8;
const CT_PUNCT: i32 = 0x10;
const CT_CONTROL: i32 = 0x20;
const CT_BLANK: i32 = 0x40;
const CT_HEX: i32 = 0x80;
const CT_ALPHA: i32 = 0x100;

/// The MSVC ctype mask of `c` in the "C" locale (0 outside ASCII).
fn ctype(c: i32) -> i32 {
    let Ok(b) = u8::try_from(c) else { return 0 };
    match b {
        b'A'..=b'F' => CT_UPPER | CT_HEX | CT_ALPHA,
        b'G'..=b'Z' => CT_UPPER | CT_ALPHA,
        b'a'..=b'f' => CT_LOWER | CT_HEX | CT_ALPHA,
        b'g'..=b'z' => CT_LOWER | CT_ALPHA,
        b'0'..=b'9' => CT_DIGIT | CT_HEX,
        b' ' => CT_SPACE | CT_BLANK,
        0x09..=0x0D => CT_SPACE | CT_CONTROL,
        0x00..=0x1F | 0x7F => CT_CONTROL,
        0x21..=0x7E => CT_PUNCT,
        _ => 0,
    }
}

/// isdigit(c) -> non-zero if a decimal digit.
pub fn isdigit(_k: &mut Kernel, c: i32) -> KResult<i32> {
    Ok(ctype(c) & CT_DIGIT)
}

/// isspace(c).
pub fn isspace(_k: &mut Kernel, c: i32) -> KResult<i32> {
    Ok(ctype(c) & CT_SPACE)
}

/// isxdigit(c).
pub fn isxdigit(_k: &mut Kernel, c: i32) -> KResult<i32> {
    Ok(ctype(c) & CT_HEX)
}

/// isupper(c).
pub fn isupper(_k: &mut Kernel, c: i32) -> KResult<i32> {
    Ok(ctype(c) & CT_UPPER)
}

/// islower(c).
pub fn islower(_k: &mut Kernel, c: i32) -> KResult<i32> {
    Ok(ctype(c) & CT_LOWER)
}

/// isprint(c).
pub fn isprint(_k: &mut Kernel, c: i32) -> KResult<i32> {
    Ok(ctype(c) & (CT_BLANK | CT_PUNCT | CT_ALPHA | CT_DIGIT))
}

/// tolower(c).
pub fn tolower(_k: &mut Kernel, c: i32) -> KResult<i32> {
    Ok(if (i32::from(b'A')..=i32::from(b'Z')).contains(&c) {
        c + 32
    } else {
        c
    })
}

/// toupper(c).
pub fn toupper(_k: &mut Kernel, c: i32) -> KResult<i32> {
    Ok(if (i32::from(b'a')..=i32::from(b'z')).contains(&c) {
        c - 32
    } else {
        c
    })
}

/// towlower(c).
pub fn towlower(_k: &mut Kernel, c: u16) -> KResult<u16> {
    Ok(lower(c))
}

/// towupper(c).
pub fn towupper(_k: &mut Kernel, c: u16) -> KResult<u16> {
    Ok(upper(c))
}

fn map_in_place(k: &mut Kernel, s: u64, cs: CharSize, f: fn(u16) -> u16) -> KResult<u64> {
    let units: Vec<u16> = read_str(k, s, cs)?.into_iter().map(f).collect();
    write_units(k, s, cs, &units)?;
    Ok(s)
}

/// _strupr(s) -> s.
pub fn strupr(k: &mut Kernel, s: u64) -> KResult<u64> {
    map_in_place(k, s, CharSize::Narrow, upper)
}

/// _strlwr(s) -> s.
pub fn strlwr(k: &mut Kernel, s: u64) -> KResult<u64> {
    map_in_place(k, s, CharSize::Narrow, lower)
}

/// _wcsupr(s) -> s.
pub fn wcsupr(k: &mut Kernel, s: u64) -> KResult<u64> {
    map_in_place(k, s, CharSize::Wide, upper)
}

/// _wcslwr(s) -> s.
pub fn wcslwr(k: &mut Kernel, s: u64) -> KResult<u64> {
    map_in_place(k, s, CharSize::Wide, lower)
}

// ---------------------------------------------------------------------------------------------
// Numbers

/// The value of a digit character in bases up to 36.
fn digit_value(u: u16) -> Option<u32> {
    char::from_u32(u32::from(u)).and_then(|c| c.to_digit(36))
}

/// atoi/atol semantics: leading white space, a sign, decimal digits; 32-bit wrap-around.
fn parse_atoi(units: &[u16]) -> i32 {
    let mut it = units
        .iter()
        .copied()
        .skip_while(|&u| ctype(i32::from(u)) & CT_SPACE != 0)
        .peekable();
    let negative = match it.peek().map(|&u| u as u8) {
        Some(b'-') => {
            it.next();
            true
        }
        Some(b'+') => {
            it.next();
            false
        }
        _ => false,
    };
    let mut total: i32 = 0;
    for u in it {
        match digit_value(u) {
            Some(d) if d < 10 => total = total.wrapping_mul(10).wrapping_add(d as i32),
            _ => break,
        }
    }
    if negative {
        total.wrapping_neg()
    } else {
        total
    }
}

/// atoi(s).
pub fn atoi(k: &mut Kernel, s: u64) -> KResult<i32> {
    Ok(parse_atoi(&read_str(k, s, CharSize::Narrow)?))
}

/// _wtoi(s).
pub fn wtoi(k: &mut Kernel, s: u64) -> KResult<i32> {
    Ok(parse_atoi(&read_str(k, s, CharSize::Wide)?))
}

/// strtoul semantics: returns the value and the number of characters consumed (0 if no digits).
/// Overflow gives `u32::MAX`; a minus sign negates the result.
fn parse_strtoul(units: &[u16], base: u32) -> (u32, usize) {
    if base == 1 || base > 36 {
        return (0, 0);
    }
    let at = |i: usize| units.get(i).copied().unwrap_or(0);
    let mut i = units
        .iter()
        .take_while(|&&u| ctype(i32::from(u)) & CT_SPACE != 0)
        .count();
    let negative = at(i) == u16::from(b'-');
    if negative || at(i) == u16::from(b'+') {
        i += 1;
    }
    let has_hex_prefix = at(i) == u16::from(b'0') && matches!(at(i + 1) as u8, b'x' | b'X');
    let hex_digit_follows = digit_value(at(i + 2)).is_some_and(|d| d < 16);
    let base = match base {
        0 if has_hex_prefix => 16,
        0 if at(i) == u16::from(b'0') => 8,
        0 => 10,
        b => b,
    };
    if base == 16 && has_hex_prefix && hex_digit_follows {
        i += 2;
    }
    let start = i;
    let mut value: u64 = 0;
    let mut overflow = false;
    while let Some(d) = digit_value(at(i)).filter(|&d| d < base) {
        value = value * u64::from(base) + u64::from(d);
        if value > u64::from(u32::MAX) {
            overflow = true;
            value = u64::from(u32::MAX);
        }
        i += 1;
    }
    if i == start {
        return (0, 0);
    }
    let value = if overflow {
        u32::MAX
    } else if negative {
        (value as u32).wrapping_neg()
    } else {
        value as u32
    };
    (value, i)
}

/// wcstoul(s, endptr, base).
pub fn wcstoul(k: &mut Kernel, s: u64, endptr: u64, base: i32) -> KResult<u32> {
    let units = read_str(k, s, CharSize::Wide)?;
    let (value, used) = parse_strtoul(&units, base.max(-1) as u32);
    if endptr != 0 {
        k.write_ptr(endptr, s.wrapping_add(2 * used as u64))?;
    }
    Ok(value)
}

/// `_itoa` digits: signed decimal for radix 10, the 32-bit pattern otherwise.
fn itoa_units(value: i32, radix: i32) -> Vec<u16> {
    if !(2..=36).contains(&radix) {
        return Vec::new();
    }
    let radix = radix as u32;
    let negative = radix == 10 && value < 0;
    let mut v = if negative {
        value.unsigned_abs()
    } else {
        value as u32
    };
    let mut digits = Vec::new();
    loop {
        digits.push(char::from_digit(v % radix, radix).map_or(u16::from(b'?'), |c| c as u16));
        v /= radix;
        if v == 0 {
            break;
        }
    }
    if negative {
        digits.push(u16::from(b'-'));
    }
    digits.reverse();
    digits
}

/// _itoa(value, buffer, radix) -> buffer.
pub fn itoa(k: &mut Kernel, value: i32, buffer: u64, radix: i32) -> KResult<u64> {
    write_str(k, buffer, CharSize::Narrow, &itoa_units(value, radix))?;
    Ok(buffer)
}

/// _itow(value, buffer, radix) -> buffer.
pub fn itow(k: &mut Kernel, value: i32, buffer: u64, radix: i32) -> KResult<u64> {
    write_str(k, buffer, CharSize::Wide, &itoa_units(value, radix))?;
    Ok(buffer)
}

// ---------------------------------------------------------------------------------------------
// printf family

/// What a printf-family function stores: how many characters, whether a terminator follows, and
/// the return value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Store {
    chars: u64,
    terminate: bool,
    ret: i32,
}

/// The `_snprintf` rule for `len` characters of output and a buffer of `count` characters: all of
/// them plus a terminator if that fits; exactly `count` without a terminator if the text is exactly
/// `count` long (returns the length); otherwise the first `count`, no terminator, and -1.
fn snprintf_rule(len: u64, count: u64) -> Store {
    match len.cmp(&count) {
        Ordering::Less => Store {
            chars: len,
            terminate: true,
            ret: len as i32,
        },
        Ordering::Equal => Store {
            chars: len,
            terminate: false,
            ret: len as i32,
        },
        Ordering::Greater => Store {
            chars: count,
            terminate: false,
            ret: -1,
        },
    }
}

/// The `_s` rule: `count` is `None` for `sprintf_s` (all or nothing), `Some` for `_snprintf_s`,
/// where `truncate` (`count == _TRUNCATE`) cuts the text to fit. A failure stores only an empty
/// string (`None` for a NULL or empty buffer: nothing at all) and returns -1.
fn secure_rule(len: u64, size: u64, count: Option<u64>, truncate: bool) -> Option<Store> {
    if size == 0 {
        return None;
    }
    let limit = match count {
        Some(c) if !truncate => c,
        _ => size - 1,
    };
    Some(if len <= limit && len < size {
        Store {
            chars: len,
            terminate: true,
            ret: len as i32,
        }
    } else if count.is_some() && limit < size {
        Store {
            chars: limit,
            terminate: true,
            ret: -1,
        }
    } else {
        Store {
            chars: 0,
            terminate: true,
            ret: -1,
        }
    })
}

fn apply_store(
    k: &mut Kernel,
    buffer: u64,
    cs: CharSize,
    text: &[u16],
    store: Store,
) -> KResult<i32> {
    let chars = &text[..(store.chars as usize).min(text.len())];
    if store.terminate {
        write_str(k, buffer, cs, chars)?;
    } else {
        write_units(k, buffer, cs, chars)?;
    }
    Ok(store.ret)
}

/// Stores formatted text as `_snprintf` does (see [`snprintf_rule`]).
pub fn store_counted(
    k: &mut Kernel,
    buffer: u64,
    count: u64,
    cs: CharSize,
    text: &[u16],
) -> KResult<i32> {
    apply_store(k, buffer, cs, text, snprintf_rule(text.len() as u64, count))
}

/// Stores formatted text as the `_s` functions do (see [`secure_rule`]).
fn store_secure(
    k: &mut Kernel,
    buffer: u64,
    size: u64,
    count: Option<u64>,
    cs: CharSize,
    text: &[u16],
) -> KResult<i32> {
    let truncate = count == Some(size_max(k));
    match secure_rule(text.len() as u64, size, count, truncate) {
        Some(store) if buffer != 0 => apply_store(k, buffer, cs, text, store),
        _ => Ok(-1),
    }
}

fn printf_counted(
    k: &mut Kernel,
    buffer: u64,
    count: u64,
    format: u64,
    cs: CharSize,
    args: ArgSource,
) -> KResult<i32> {
    let text = fmt::format_guest(k, format, cs, args)?;
    store_counted(k, buffer, count, cs, &text)
}

fn printf_unbounded(
    k: &mut Kernel,
    buffer: u64,
    format: u64,
    cs: CharSize,
    args: ArgSource,
) -> KResult<i32> {
    let text = fmt::format_guest(k, format, cs, args)?;
    write_str(k, buffer, cs, &text)?;
    Ok(text.len() as i32)
}

fn printf_secure(
    k: &mut Kernel,
    buffer: u64,
    size: u64,
    count: Option<u64>,
    format: u64,
    cs: CharSize,
    args: ArgSource,
) -> KResult<i32> {
    let text = fmt::format_guest(k, format, cs, args)?;
    store_secure(k, buffer, size, count, cs, &text)
}

/// _snprintf(buffer, count, format, ...).
pub fn snprintf(k: &mut Kernel, buffer: u64, count: u64, format: u64) -> KResult<i32> {
    printf_counted(
        k,
        buffer,
        count,
        format,
        CharSize::Narrow,
        ArgSource::Varargs(3),
    )
}

/// _snwprintf(buffer, count, format, ...).
pub fn snwprintf(k: &mut Kernel, buffer: u64, count: u64, format: u64) -> KResult<i32> {
    printf_counted(
        k,
        buffer,
        count,
        format,
        CharSize::Wide,
        ArgSource::Varargs(3),
    )
}

/// _vsnprintf(buffer, count, format, argptr).
pub fn vsnprintf(
    k: &mut Kernel,
    buffer: u64,
    count: u64,
    format: u64,
    argptr: u64,
) -> KResult<i32> {
    printf_counted(
        k,
        buffer,
        count,
        format,
        CharSize::Narrow,
        ArgSource::VaList(argptr),
    )
}

/// _vsnwprintf(buffer, count, format, argptr).
pub fn vsnwprintf(
    k: &mut Kernel,
    buffer: u64,
    count: u64,
    format: u64,
    argptr: u64,
) -> KResult<i32> {
    printf_counted(
        k,
        buffer,
        count,
        format,
        CharSize::Wide,
        ArgSource::VaList(argptr),
    )
}

/// sprintf(buffer, format, ...).
pub fn sprintf(k: &mut Kernel, buffer: u64, format: u64) -> KResult<i32> {
    printf_unbounded(k, buffer, format, CharSize::Narrow, ArgSource::Varargs(2))
}

/// swprintf(buffer, format, ...) and _swprintf: the legacy form without a buffer size.
pub fn swprintf(k: &mut Kernel, buffer: u64, format: u64) -> KResult<i32> {
    printf_unbounded(k, buffer, format, CharSize::Wide, ArgSource::Varargs(2))
}

/// vsprintf(buffer, format, argptr).
pub fn vsprintf(k: &mut Kernel, buffer: u64, format: u64, argptr: u64) -> KResult<i32> {
    printf_unbounded(
        k,
        buffer,
        format,
        CharSize::Narrow,
        ArgSource::VaList(argptr),
    )
}

/// _vswprintf(buffer, format, argptr): the legacy form without a buffer size.
pub fn vswprintf(k: &mut Kernel, buffer: u64, format: u64, argptr: u64) -> KResult<i32> {
    printf_unbounded(k, buffer, format, CharSize::Wide, ArgSource::VaList(argptr))
}

/// sprintf_s(buffer, sizeOfBuffer, format, ...).
pub fn sprintf_s(k: &mut Kernel, buffer: u64, size: u64, format: u64) -> KResult<i32> {
    printf_secure(
        k,
        buffer,
        size,
        None,
        format,
        CharSize::Narrow,
        ArgSource::Varargs(3),
    )
}

/// swprintf_s(buffer, sizeOfBuffer, format, ...).
pub fn swprintf_s(k: &mut Kernel, buffer: u64, size: u64, format: u64) -> KResult<i32> {
    printf_secure(
        k,
        buffer,
        size,
        None,
        format,
        CharSize::Wide,
        ArgSource::Varargs(3),
    )
}

/// vsprintf_s(buffer, sizeOfBuffer, format, argptr).
pub fn vsprintf_s(
    k: &mut Kernel,
    buffer: u64,
    size: u64,
    format: u64,
    argptr: u64,
) -> KResult<i32> {
    printf_secure(
        k,
        buffer,
        size,
        None,
        format,
        CharSize::Narrow,
        ArgSource::VaList(argptr),
    )
}

/// vswprintf_s(buffer, sizeOfBuffer, format, argptr).
pub fn vswprintf_s(
    k: &mut Kernel,
    buffer: u64,
    size: u64,
    format: u64,
    argptr: u64,
) -> KResult<i32> {
    printf_secure(
        k,
        buffer,
        size,
        None,
        format,
        CharSize::Wide,
        ArgSource::VaList(argptr),
    )
}

/// _snprintf_s(buffer, sizeOfBuffer, count, format, ...).
pub fn snprintf_s(k: &mut Kernel, buffer: u64, size: u64, count: u64, format: u64) -> KResult<i32> {
    printf_secure(
        k,
        buffer,
        size,
        Some(count),
        format,
        CharSize::Narrow,
        ArgSource::Varargs(4),
    )
}

/// _snwprintf_s(buffer, sizeOfBuffer, count, format, ...).
pub fn snwprintf_s(
    k: &mut Kernel,
    buffer: u64,
    size: u64,
    count: u64,
    format: u64,
) -> KResult<i32> {
    printf_secure(
        k,
        buffer,
        size,
        Some(count),
        format,
        CharSize::Wide,
        ArgSource::Varargs(4),
    )
}

/// _vsnprintf_s(buffer, sizeOfBuffer, count, format, argptr).
pub fn vsnprintf_s(
    k: &mut Kernel,
    buffer: u64,
    size: u64,
    count: u64,
    format: u64,
    argptr: u64,
) -> KResult<i32> {
    printf_secure(
        k,
        buffer,
        size,
        Some(count),
        format,
        CharSize::Narrow,
        ArgSource::VaList(argptr),
    )
}

/// _vsnwprintf_s(buffer, sizeOfBuffer, count, format, argptr).
pub fn vsnwprintf_s(
    k: &mut Kernel,
    buffer: u64,
    size: u64,
    count: u64,
    format: u64,
    argptr: u64,
) -> KResult<i32> {
    printf_secure(
        k,
        buffer,
        size,
        Some(count),
        format,
        CharSize::Wide,
        ArgSource::VaList(argptr),
    )
}

// ---------------------------------------------------------------------------------------------
// Bounds-checked copies

/// strncpy_s semantics (`count` = `None` for strcpy_s).
fn copy_s(
    k: &mut Kernel,
    dest: u64,
    size: u64,
    src: u64,
    count: Option<u64>,
    cs: CharSize,
) -> KResult<i32> {
    if count == Some(0) && dest == 0 && size == 0 {
        return Ok(0);
    }
    if dest == 0 || size == 0 {
        return Ok(EINVAL);
    }
    if count == Some(0) {
        write_unit(k, dest, cs, 0)?;
        return Ok(0);
    }
    if src == 0 {
        write_unit(k, dest, cs, 0)?;
        return Ok(EINVAL);
    }
    let truncate = count == Some(size_max(k));
    let len = str_nlen(k, src, cs, count.unwrap_or(u64::MAX).min(size))?;
    if len < size {
        let units = read_units(k, src, cs, len)?;
        write_str(k, dest, cs, &units)?;
        return Ok(0);
    }
    if truncate {
        let units = read_units(k, src, cs, size - 1)?;
        write_str(k, dest, cs, &units)?;
        return Ok(STRUNCATE);
    }
    write_unit(k, dest, cs, 0)?;
    Ok(ERANGE)
}

/// strncat_s semantics (`count` = `None` for strcat_s).
fn cat_s(
    k: &mut Kernel,
    dest: u64,
    size: u64,
    src: u64,
    count: Option<u64>,
    cs: CharSize,
) -> KResult<i32> {
    if dest == 0 || size == 0 {
        return Ok(EINVAL);
    }
    if src == 0 && count != Some(0) {
        write_unit(k, dest, cs, 0)?;
        return Ok(EINVAL);
    }
    let used = str_nlen(k, dest, cs, size)?;
    if used == size {
        write_unit(k, dest, cs, 0)?;
        return Ok(EINVAL);
    }
    let end = dest.wrapping_add(used * cs.bytes());
    let avail = size - used;
    let truncate = count == Some(size_max(k));
    let len = if src == 0 {
        0
    } else {
        str_nlen(k, src, cs, count.unwrap_or(u64::MAX).min(avail))?
    };
    if len < avail {
        let units = read_units(k, src, cs, len)?;
        write_str(k, end, cs, &units)?;
        return Ok(0);
    }
    if truncate {
        let units = read_units(k, src, cs, avail - 1)?;
        write_str(k, end, cs, &units)?;
        return Ok(STRUNCATE);
    }
    write_unit(k, dest, cs, 0)?;
    Ok(ERANGE)
}

/// strcpy_s(dest, size, src) -> errno.
pub fn strcpy_s(k: &mut Kernel, dest: u64, size: u64, src: u64) -> KResult<i32> {
    copy_s(k, dest, size, src, None, CharSize::Narrow)
}

/// wcscpy_s(dest, size, src) -> errno.
pub fn wcscpy_s(k: &mut Kernel, dest: u64, size: u64, src: u64) -> KResult<i32> {
    copy_s(k, dest, size, src, None, CharSize::Wide)
}

/// strncpy_s(dest, size, src, count) -> errno.
pub fn strncpy_s(k: &mut Kernel, dest: u64, size: u64, src: u64, count: u64) -> KResult<i32> {
    copy_s(k, dest, size, src, Some(count), CharSize::Narrow)
}

/// wcsncpy_s(dest, size, src, count) -> errno.
pub fn wcsncpy_s(k: &mut Kernel, dest: u64, size: u64, src: u64, count: u64) -> KResult<i32> {
    copy_s(k, dest, size, src, Some(count), CharSize::Wide)
}

/// strcat_s(dest, size, src) -> errno.
pub fn strcat_s(k: &mut Kernel, dest: u64, size: u64, src: u64) -> KResult<i32> {
    cat_s(k, dest, size, src, None, CharSize::Narrow)
}

/// wcscat_s(dest, size, src) -> errno.
pub fn wcscat_s(k: &mut Kernel, dest: u64, size: u64, src: u64) -> KResult<i32> {
    cat_s(k, dest, size, src, None, CharSize::Wide)
}

/// strncat_s(dest, size, src, count) -> errno.
pub fn strncat_s(k: &mut Kernel, dest: u64, size: u64, src: u64, count: u64) -> KResult<i32> {
    cat_s(k, dest, size, src, Some(count), CharSize::Narrow)
}

/// wcsncat_s(dest, size, src, count) -> errno.
pub fn wcsncat_s(k: &mut Kernel, dest: u64, size: u64, src: u64, count: u64) -> KResult<i32> {
    cat_s(k, dest, size, src, Some(count), CharSize::Wide)
}

/// memcpy_s(dest, destSize, src, count) -> errno; on error the destination is zeroed.
pub fn memcpy_s(k: &mut Kernel, dest: u64, dest_size: u64, src: u64, count: u64) -> KResult<i32> {
    if count == 0 {
        return Ok(0);
    }
    if dest == 0 {
        return Ok(EINVAL);
    }
    if src == 0 || dest_size < count {
        fill_memory(k, dest, 0, dest_size)?;
        return Ok(if src == 0 { EINVAL } else { ERANGE });
    }
    move_memory(k, dest, src, count)?;
    Ok(0)
}

/// memmove_s(dest, destSize, src, count) -> errno.
pub fn memmove_s(k: &mut Kernel, dest: u64, dest_size: u64, src: u64, count: u64) -> KResult<i32> {
    if count == 0 {
        return Ok(0);
    }
    if dest == 0 || src == 0 {
        return Ok(EINVAL);
    }
    if dest_size < count {
        return Ok(ERANGE);
    }
    move_memory(k, dest, src, count)?;
    Ok(0)
}

// ---------------------------------------------------------------------------------------------
// qsort / bsearch

/// Calls the guest comparator (cdecl on x86) on two element addresses.
fn call_compare(k: &mut Kernel, compare: u64, a: u64, b: u64) -> KResult<i32> {
    let conv = match k.arch() {
        Arch::X86 => CallConv::Cdecl,
        Arch::X64 => CallConv::Win64,
    };
    Ok(k.call_guest_conv(compare, conv, &[a, b])? as u32 as i32)
}

fn swap_elements(k: &mut Kernel, a: u64, b: u64, width: u64) -> KResult<()> {
    if a == b {
        return Ok(());
    }
    let x = k.m.mem.read_vec(a, width as usize)?;
    let y = k.m.mem.read_vec(b, width as usize)?;
    k.m.mem.write_bytes(a, &y)?;
    k.m.mem.write_bytes(b, &x)?;
    Ok(())
}

/// Restores the max-heap property below `root` in `[0, end)` (elements of `width` bytes at `base`).
fn sift_down(
    k: &mut Kernel,
    base: u64,
    width: u64,
    compare: u64,
    mut root: u64,
    end: u64,
) -> KResult<()> {
    loop {
        let mut child = 2 * root + 1;
        if child >= end {
            return Ok(());
        }
        let at = |i: u64| base.wrapping_add(i * width);
        if child + 1 < end && call_compare(k, compare, at(child), at(child + 1))? < 0 {
            child += 1;
        }
        if call_compare(k, compare, at(root), at(child))? >= 0 {
            return Ok(());
        }
        swap_elements(k, at(root), at(child), width)?;
        root = child;
    }
}

/// qsort(base, num, width, compare): an in-place heap sort in guest memory, calling the guest's
/// comparator with pointers to the elements (as qsort, not stable).
pub fn qsort(k: &mut Kernel, base: u64, num: u64, width: u64, compare: u64) -> KResult<()> {
    if num < 2 || width == 0 {
        return Ok(());
    }
    if num
        .checked_mul(width)
        .is_none_or(|total| !k.m.mem.is_mapped(base, total))
    {
        return Err(KernelError::Mem(dbt::MemFault {
            addr: base,
            write: true,
        }));
    }
    for root in (0..num / 2).rev() {
        sift_down(k, base, width, compare, root, num)?;
    }
    for end in (1..num).rev() {
        swap_elements(k, base, base + end * width, width)?;
        sift_down(k, base, width, compare, 0, end)?;
    }
    Ok(())
}

/// bsearch(key, base, num, width, compare) -> the matching element or NULL.
pub fn bsearch(
    k: &mut Kernel,
    key: u64,
    base: u64,
    num: u64,
    width: u64,
    compare: u64,
) -> KResult<u64> {
    let (mut lo, mut hi) = (0u64, num);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        let element = base.wrapping_add(mid.wrapping_mul(width));
        match call_compare(k, compare, key, element)?.cmp(&0) {
            Ordering::Less => hi = mid,
            Ordering::Greater => lo = mid + 1,
            Ordering::Equal => return Ok(element),
        }
    }
    Ok(0)
}

// ---------------------------------------------------------------------------------------------
// x86 compiler helpers for 64-bit arithmetic (stdcall, results in edx:eax)

fn divide_error(k: &Kernel) -> KernelError {
    KernelError::from(k.m.fault(FaultKind::DivideError))
}

/// _allmul(a, b): 64-bit multiply.
pub fn allmul(_k: &mut Kernel, a: Quad, b: Quad) -> KResult<Quad> {
    Ok(Quad(a.0.wrapping_mul(b.0)))
}

/// _alldiv(a, b): signed 64-bit divide; division by zero is a guest divide error, as in the helper.
pub fn alldiv(k: &mut Kernel, a: Quad, b: Quad) -> KResult<Quad> {
    if b.0 == 0 {
        return Err(divide_error(k));
    }
    Ok(Quad((a.0 as i64).wrapping_div(b.0 as i64) as u64))
}

/// _allrem(a, b): signed 64-bit remainder (sign of the dividend).
pub fn allrem(k: &mut Kernel, a: Quad, b: Quad) -> KResult<Quad> {
    if b.0 == 0 {
        return Err(divide_error(k));
    }
    Ok(Quad((a.0 as i64).wrapping_rem(b.0 as i64) as u64))
}

/// _aulldiv(a, b): unsigned 64-bit divide.
pub fn aulldiv(k: &mut Kernel, a: Quad, b: Quad) -> KResult<Quad> {
    if b.0 == 0 {
        return Err(divide_error(k));
    }
    Ok(Quad(a.0 / b.0))
}

/// _aullrem(a, b): unsigned 64-bit remainder.
pub fn aullrem(k: &mut Kernel, a: Quad, b: Quad) -> KResult<Quad> {
    if b.0 == 0 {
        return Err(divide_error(k));
    }
    Ok(Quad(a.0 % b.0))
}

/// Stores a 64-bit remainder in ebx:ecx (the `_*dvrm` helpers' second result; the thunk return
/// only sets eax, edx and esp).
fn set_remainder(k: &mut Kernel, rem: u64) {
    k.m.cpu.set_reg(Reg::Rcx, rem & 0xFFFF_FFFF);
    k.m.cpu.set_reg(Reg::Rbx, rem >> 32);
}

/// _aulldvrm(a, b): unsigned quotient in edx:eax, remainder in ebx:ecx.
pub fn aulldvrm(k: &mut Kernel, a: Quad, b: Quad) -> KResult<Quad> {
    if b.0 == 0 {
        return Err(divide_error(k));
    }
    set_remainder(k, a.0 % b.0);
    Ok(Quad(a.0 / b.0))
}

/// _alldvrm(a, b): signed quotient in edx:eax, remainder in ebx:ecx.
pub fn alldvrm(k: &mut Kernel, a: Quad, b: Quad) -> KResult<Quad> {
    if b.0 == 0 {
        return Err(divide_error(k));
    }
    let (x, y) = (a.0 as i64, b.0 as i64);
    set_remainder(k, x.wrapping_rem(y) as u64);
    Ok(Quad(x.wrapping_div(y) as u64))
}

/// The register operands of the shift helpers: the value in edx:eax, the count in cl.
fn shift_operands(k: &Kernel) -> (u64, u32) {
    let r = &k.m.cpu.regs;
    let value = (r[Reg::Rdx as usize] & 0xFFFF_FFFF) << 32 | (r[Reg::Rax as usize] & 0xFFFF_FFFF);
    (value, (r[Reg::Rcx as usize] & 0xFF) as u32)
}

/// _allshl: edx:eax << cl (register convention, no stack arguments); counts of 64 or more give 0.
pub fn allshl(k: &mut Kernel) -> KResult<Quad> {
    let (value, count) = shift_operands(k);
    Ok(Quad(value.checked_shl(count).unwrap_or(0)))
}

/// _allshr: edx:eax >> cl, arithmetic; counts of 64 or more give the sign.
pub fn allshr(k: &mut Kernel) -> KResult<Quad> {
    let (value, count) = shift_operands(k);
    Ok(Quad(((value as i64) >> count.min(63)) as u64))
}

/// _aullshr: edx:eax >> cl, logical; counts of 64 or more give 0.
pub fn aullshr(k: &mut Kernel) -> KResult<Quad> {
    let (value, count) = shift_operands(k);
    Ok(Quad(value.checked_shr(count).unwrap_or(0)))
}

/// The state of `rand`: Microsoft's CRT linear congruential generator, seeded with 1.
#[derive(Debug)]
struct RandState(u32);

impl Default for RandState {
    fn default() -> Self {
        RandState(1)
    }
}

/// srand(seed).
pub fn srand(k: &mut Kernel, seed: u32) -> KResult<()> {
    k.extension::<RandState>().0 = seed;
    Ok(())
}

/// rand() -> 0..=RAND_MAX (0x7FFF): `state = state * 214013 + 2531011`, bits 16..31 of it.
pub fn rand(k: &mut Kernel) -> KResult<i32> {
    let state = k.extension::<RandState>();
    state.0 = state.0.wrapping_mul(214_013).wrapping_add(2_531_011);
    Ok(((state.0 >> 16) & 0x7FFF) as i32)
}

pub(crate) static EXPORTS: &[Export] = export_table![
    cdecl memcpy => self::memcpy(dest: u64, src: u64, count: u64);
    cdecl memmove => memcpy(dest: u64, src: u64, count: u64);
    cdecl memset => self::memset(dest: u64, c: i32, count: u64);
    cdecl memcmp => self::memcmp(buf1: u64, buf2: u64, count: u64);
    cdecl memchr => self::memchr(buf: u64, c: i32, count: u64);
    cdecl strlen => self::strlen(s: u64);
    cdecl strnlen => self::strnlen(s: u64, max: u64);
    cdecl wcslen => self::wcslen(s: u64);
    cdecl wcsnlen => self::wcsnlen(s: u64, max: u64);
    cdecl strcmp => self::strcmp(s1: u64, s2: u64);
    cdecl strncmp => self::strncmp(s1: u64, s2: u64, count: u64);
    cdecl _stricmp => stricmp(s1: u64, s2: u64);
    cdecl _strnicmp => strnicmp(s1: u64, s2: u64, count: u64);
    cdecl wcscmp => self::wcscmp(s1: u64, s2: u64);
    cdecl wcsncmp => self::wcsncmp(s1: u64, s2: u64, count: u64);
    cdecl _wcsicmp => wcsicmp(s1: u64, s2: u64);
    cdecl _wcsnicmp => wcsnicmp(s1: u64, s2: u64, count: u64);
    cdecl strcpy => self::strcpy(dest: u64, src: u64);
    cdecl strncpy => self::strncpy(dest: u64, src: u64, count: u64);
    cdecl wcscpy => self::wcscpy(dest: u64, src: u64);
    cdecl wcsncpy => self::wcsncpy(dest: u64, src: u64, count: u64);
    cdecl strcat => self::strcat(dest: u64, src: u64);
    cdecl strncat => self::strncat(dest: u64, src: u64, count: u64);
    cdecl wcscat => self::wcscat(dest: u64, src: u64);
    cdecl wcsncat => self::wcsncat(dest: u64, src: u64, count: u64);
    cdecl strchr => self::strchr(s: u64, c: i32);
    cdecl strrchr => self::strrchr(s: u64, c: i32);
    cdecl strstr => self::strstr(haystack: u64, needle: u64);
    cdecl wcschr => self::wcschr(s: u64, c: u16);
    cdecl wcsrchr => self::wcsrchr(s: u64, c: u16);
    cdecl wcsstr => self::wcsstr(haystack: u64, needle: u64);
    cdecl strspn => self::strspn(s: u64, accept: u64);
    cdecl isdigit => self::isdigit(c: i32);
    cdecl isspace => self::isspace(c: i32);
    cdecl isxdigit => self::isxdigit(c: i32);
    cdecl isupper => self::isupper(c: i32);
    cdecl islower => self::islower(c: i32);
    cdecl isprint => self::isprint(c: i32);
    cdecl tolower => self::tolower(c: i32);
    cdecl toupper => self::toupper(c: i32);
    cdecl towlower => self::towlower(c: u16);
    cdecl towupper => self::towupper(c: u16);
    cdecl _strupr => strupr(s: u64);
    cdecl _strlwr => strlwr(s: u64);
    cdecl _wcsupr => wcsupr(s: u64);
    cdecl _wcslwr => wcslwr(s: u64);
    cdecl atoi => self::atoi(s: u64);
    cdecl atol => atoi(s: u64);
    cdecl _wtoi => wtoi(s: u64);
    cdecl _wtol => wtoi(s: u64);
    cdecl wcstoul => self::wcstoul(s: u64, endptr: u64, base: i32);
    cdecl _itoa => itoa(value: i32, buffer: u64, radix: i32);
    cdecl _itow => itow(value: i32, buffer: u64, radix: i32);
    cdecl _snprintf => snprintf(buffer: u64, count: u64, format: u64);
    cdecl _snwprintf => snwprintf(buffer: u64, count: u64, format: u64);
    cdecl _vsnprintf => vsnprintf(buffer: u64, count: u64, format: u64, argptr: u64);
    cdecl _vsnwprintf => vsnwprintf(buffer: u64, count: u64, format: u64, argptr: u64);
    cdecl sprintf => self::sprintf(buffer: u64, format: u64);
    cdecl swprintf => self::swprintf(buffer: u64, format: u64);
    cdecl _swprintf => swprintf(buffer: u64, format: u64);
    cdecl vsprintf => self::vsprintf(buffer: u64, format: u64, argptr: u64);
    cdecl _vswprintf => vswprintf(buffer: u64, format: u64, argptr: u64);
    cdecl sprintf_s => self::sprintf_s(buffer: u64, size: u64, format: u64);
    cdecl swprintf_s => self::swprintf_s(buffer: u64, size: u64, format: u64);
    cdecl vsprintf_s => self::vsprintf_s(buffer: u64, size: u64, format: u64, argptr: u64);
    cdecl vswprintf_s => self::vswprintf_s(buffer: u64, size: u64, format: u64, argptr: u64);
    cdecl _snprintf_s => snprintf_s(buffer: u64, size: u64, count: u64, format: u64);
    cdecl _snwprintf_s => snwprintf_s(buffer: u64, size: u64, count: u64, format: u64);
    cdecl _vsnprintf_s => vsnprintf_s(buffer: u64, size: u64, count: u64, format: u64, argptr: u64);
    cdecl _vsnwprintf_s => vsnwprintf_s(buffer: u64, size: u64, count: u64, format: u64, argptr: u64);
    cdecl strcpy_s => self::strcpy_s(dest: u64, size: u64, src: u64);
    cdecl wcscpy_s => self::wcscpy_s(dest: u64, size: u64, src: u64);
    cdecl strncpy_s => self::strncpy_s(dest: u64, size: u64, src: u64, count: u64);
    cdecl wcsncpy_s => self::wcsncpy_s(dest: u64, size: u64, src: u64, count: u64);
    cdecl strcat_s => self::strcat_s(dest: u64, size: u64, src: u64);
    cdecl wcscat_s => self::wcscat_s(dest: u64, size: u64, src: u64);
    cdecl strncat_s => self::strncat_s(dest: u64, size: u64, src: u64, count: u64);
    cdecl wcsncat_s => self::wcsncat_s(dest: u64, size: u64, src: u64, count: u64);
    cdecl memcpy_s => self::memcpy_s(dest: u64, dest_size: u64, src: u64, count: u64);
    cdecl memmove_s => self::memmove_s(dest: u64, dest_size: u64, src: u64, count: u64);
    cdecl qsort => self::qsort(base: u64, num: u64, width: u64, compare: u64);
    cdecl bsearch => self::bsearch(key: u64, base: u64, num: u64, width: u64, compare: u64);
    stdcall _allmul => allmul(a: Quad, b: Quad);
    stdcall _alldiv => alldiv(a: Quad, b: Quad);
    stdcall _allrem => allrem(a: Quad, b: Quad);
    stdcall _aulldiv => aulldiv(a: Quad, b: Quad);
    stdcall _aullrem => aullrem(a: Quad, b: Quad);
    stdcall _alldvrm => alldvrm(a: Quad, b: Quad);
    stdcall _aulldvrm => aulldvrm(a: Quad, b: Quad);
    stdcall _allshl => allshl();
    stdcall _allshr => allshr();
    stdcall _aullshr => aullshr();
    cdecl rand => self::rand();
    cdecl srand => self::srand(seed: u32);
];

#[cfg(test)]
mod tests {
    #[test]
    fn rand_is_the_microsoft_crt_generator() {
        let mut g = test_support::Guest::new(dbt::Arch::X64);
        let first: Vec<i32> = (0..4).map(|_| rand(&mut g.k).unwrap()).collect();
        assert_eq!(first, [41, 18467, 6334, 26500], "seed 1 by default");
        srand(&mut g.k, 0).unwrap();
        assert_eq!(rand(&mut g.k).unwrap(), 38);
        assert!((0..1000).all(|_| (0..=0x7FFF).contains(&rand(&mut g.k).unwrap())));
    }

    use super::*;

    fn units(s: &str) -> Vec<u16> {
        s.encode_utf16().collect()
    }

    #[test]
    fn ctype_matches_msvc_masks() {
        assert_eq!(ctype(i32::from(b'a')), 0x182);
        assert_eq!(ctype(i32::from(b'G')), 0x101);
        assert_eq!(ctype(i32::from(b'7')), 0x84);
        assert_eq!(ctype(i32::from(b' ')), 0x48);
        assert_eq!(ctype(i32::from(b'\t')), 0x28);
        assert_eq!(ctype(i32::from(b'!')), 0x10);
        assert_eq!(ctype(0x7F), 0x20);
        assert_eq!(ctype(0xE9), 0);
        assert_eq!(ctype(-1), 0);
    }

    #[test]
    fn atoi_and_strtoul() {
        assert_eq!(parse_atoi(&units("  -123abc")), -123);
        assert_eq!(parse_atoi(&units("+7")), 7);
        assert_eq!(parse_atoi(&units("x1")), 0);
        assert_eq!(parse_atoi(&units("4294967297")), 1);
        assert_eq!(parse_strtoul(&units(" 0x1fz"), 0), (0x1f, 5));
        assert_eq!(parse_strtoul(&units("0x1f"), 16), (0x1f, 4));
        assert_eq!(parse_strtoul(&units("017"), 0), (15, 3));
        assert_eq!(parse_strtoul(&units("-1"), 10), (u32::MAX, 2));
        assert_eq!(parse_strtoul(&units("99999999999"), 10), (u32::MAX, 11));
        assert_eq!(parse_strtoul(&units("zz"), 36), (1295, 2));
        assert_eq!(parse_strtoul(&units("0xg"), 16), (0, 1));
        assert_eq!(parse_strtoul(&units("abc"), 10), (0, 0));
        assert_eq!(parse_strtoul(&units("12"), 1), (0, 0));
    }

    #[test]
    fn itoa_digits() {
        let s = |u: Vec<u16>| String::from_utf16_lossy(&u);
        assert_eq!(s(itoa_units(-42, 10)), "-42");
        assert_eq!(s(itoa_units(-1, 16)), "ffffffff");
        assert_eq!(s(itoa_units(5, 2)), "101");
        assert_eq!(s(itoa_units(0, 10)), "0");
        assert_eq!(s(itoa_units(1, 1)), "");
    }

    #[test]
    fn snprintf_truncation_rule() {
        let rule = |len, count| {
            let s = snprintf_rule(len, count);
            (s.chars, s.terminate, s.ret)
        };
        assert_eq!(rule(3, 10), (3, true, 3));
        assert_eq!(rule(4, 4), (4, false, 4));
        assert_eq!(rule(6, 4), (4, false, -1));
        assert_eq!(rule(0, 0), (0, false, 0));
        assert_eq!(rule(22, 64), (22, true, 22));
    }

    #[test]
    fn secure_printf_rule() {
        let rule = |len, size, count: Option<u64>, truncate| {
            secure_rule(len, size, count, truncate).map(|s| (s.chars, s.terminate, s.ret))
        };
        // sprintf_s: all or an empty string.
        assert_eq!(rule(5, 10, None, false), Some((5, true, 5)));
        assert_eq!(rule(10, 10, None, false), Some((0, true, -1)));
        assert_eq!(rule(1, 0, None, false), None);
        // _snprintf_s with a count.
        assert_eq!(rule(8, 10, Some(5), false), Some((5, true, -1)));
        assert_eq!(rule(5, 10, Some(20), false), Some((5, true, 5)));
        assert_eq!(rule(15, 10, Some(20), false), Some((0, true, -1)));
        // _TRUNCATE.
        assert_eq!(rule(8, 4, Some(u64::MAX), true), Some((3, true, -1)));
        assert_eq!(rule(3, 4, Some(u64::MAX), true), Some((3, true, 3)));
    }

    #[test]
    fn case_mapping_is_ascii_only() {
        assert_eq!(lower(u16::from(b'Q')), u16::from(b'q'));
        assert_eq!(upper(u16::from(b'q')), u16::from(b'Q'));
        assert_eq!(upper(0xE9), 0xE9);
        assert_eq!(lower(0x0130), 0x0130);
    }
}

/// A kernel with a stack and a scratch heap that calls exports through real argument frames, for
/// the tests of the Rtl/CRT/Dbg/Interlocked exports.
#[cfg(test)]
pub(crate) mod test_support {
    use dbt::{Arch, CallConv, Prot, Reg};

    use crate::{KResult, Kernel, MODULE};

    const HEAP: u64 = 0x1_0000;

    /// A kernel plus a bump allocator of guest memory.
    pub(crate) struct Guest {
        pub(crate) k: Kernel,
        next: u64,
        end: u64,
    }

    impl Guest {
        pub(crate) fn new(arch: Arch) -> Guest {
            let mut k = Kernel::new(arch, &[&MODULE]).expect("kernel");
            k.m.setup_stack(0x1_0000).expect("stack");
            let heap =
                k.m.mem
                    .alloc(HEAP, Prot::READ | Prot::WRITE | Prot::EXEC)
                    .expect("heap");
            Guest {
                k,
                next: heap,
                end: heap + HEAP,
            }
        }

        /// Copies `data` into fresh guest memory (16-byte aligned).
        pub(crate) fn bytes(&mut self, data: &[u8]) -> u64 {
            let addr = self.next;
            self.next += (data.len() as u64 + 15) & !15;
            assert!(self.next <= self.end, "test heap exhausted");
            self.k.m.mem.write_bytes(addr, data).expect("write");
            addr
        }

        pub(crate) fn zeroed(&mut self, len: usize) -> u64 {
            self.bytes(&vec![0; len])
        }

        pub(crate) fn cstr(&mut self, s: &str) -> u64 {
            self.bytes(&[s.as_bytes(), &[0]].concat())
        }

        pub(crate) fn wstr(&mut self, s: &str) -> u64 {
            let data: Vec<u8> = s
                .encode_utf16()
                .chain([0])
                .flat_map(u16::to_le_bytes)
                .collect();
            self.bytes(&data)
        }

        /// Guest argument slots as a va_list (x86: 4 bytes each, x64: 8).
        pub(crate) fn va_list(&mut self, slots: &[u64]) -> u64 {
            let size = self.k.ptr_size() as usize;
            let data: Vec<u8> = slots
                .iter()
                .flat_map(|s| s.to_le_bytes()[..size].to_vec())
                .collect();
            self.bytes(&data)
        }

        pub(crate) fn read_cstr(&self, addr: u64) -> String {
            String::from_utf8_lossy(&self.k.m.mem.read_cstr(addr, 4096).expect("read")).into_owned()
        }

        pub(crate) fn read_wstr(&self, addr: u64) -> String {
            String::from_utf16_lossy(&self.k.m.mem.read_wstr(addr, 4096).expect("read"))
        }

        /// A 64-bit argument as slots: two on x86 (low first), one on x64.
        pub(crate) fn quad(&self, v: u64) -> Vec<u64> {
            match self.k.arch() {
                Arch::X86 => vec![v & 0xFFFF_FFFF, v >> 32],
                Arch::X64 => vec![v],
            }
        }

        /// Calls the ntoskrnl export `name` with `args` laid out as the guest passes them (x86: one
        /// 32-bit slot each, fastcall's first two in ecx/edx; x64: rcx, rdx, r8, r9, then the stack),
        /// the way the thunk dispatcher does.
        pub(crate) fn call(&mut self, name: &str, args: &[u64]) -> KResult<u64> {
            let export = MODULE
                .find(name)
                .unwrap_or_else(|| panic!("{name} is not exported"));
            let k = &mut self.k;
            let saved_sp = k.m.cpu.reg(Reg::Rsp);
            let frame = (saved_sp - 0x400) & !15;
            k.write_ptr(frame, 0)?;
            let (conv, slots) = match k.arch() {
                Arch::X86 => {
                    let in_regs = if export.conv == CallConv::Fastcall {
                        args.len().min(2)
                    } else {
                        0
                    };
                    for (r, a) in [Reg::Rcx, Reg::Rdx].into_iter().zip(&args[..in_regs]) {
                        k.m.cpu.set_reg(r, *a);
                    }
                    for (i, a) in args[in_regs..].iter().enumerate() {
                        k.m.mem.write_u32(frame + 4 + 4 * i as u64, *a as u32)?;
                    }
                    (export.conv, export.slots32)
                }
                Arch::X64 => {
                    for (r, a) in [Reg::Rcx, Reg::Rdx, Reg::R8, Reg::R9].into_iter().zip(args) {
                        k.m.cpu.set_reg(r, *a);
                    }
                    for (i, a) in args.iter().enumerate().skip(4) {
                        k.m.mem.write_u64(frame + 40 + 8 * (i as u64 - 4), *a)?;
                    }
                    (CallConv::Win64, export.slots64)
                }
            };
            k.m.cpu.set_reg(Reg::Rsp, frame);
            let result =
                k.m.host_call_args(conv, slots)
                    .map_err(Into::into)
                    .and_then(|raw| (export.func)(k, &raw));
            k.m.cpu.set_reg(Reg::Rsp, saved_sp);
            result
        }
    }
}

#[cfg(test)]
mod kernel_tests {
    use dbt::{Arch, Reg};

    use super::test_support::Guest;
    use crate::KernelError;

    const ARCHES: [Arch; 2] = [Arch::X86, Arch::X64];

    fn as_i32(v: u64) -> i32 {
        v as u32 as i32
    }

    #[test]
    fn snprintf_through_call_frames() {
        for arch in ARCHES {
            let mut g = Guest::new(arch);
            let buf = g.zeroed(64);
            let fmt = g.cstr("%s-%d-%x-%08lx-%c");
            let ab = g.cstr("ab");
            let n = g.call(
                "_snprintf",
                &[
                    buf,
                    64,
                    fmt,
                    ab,
                    (-12i32) as u32 as u64,
                    0xbeef,
                    0x1234,
                    u64::from(b'z'),
                ],
            );
            assert_eq!(n.map(as_i32).ok(), Some(22));
            assert_eq!(g.read_cstr(buf), "ab--12-beef-00001234-z");

            let buf = g.bytes(b"xxxxxxxx");
            let fmt = g.cstr("%s");
            let text = g.cstr("abcdef");
            assert_eq!(
                g.call("_snprintf", &[buf, 4, fmt, text]).map(as_i32).ok(),
                Some(-1)
            );
            assert_eq!(
                g.k.m.mem.read_vec(buf, 5).ok(),
                Some(b"abcdx".to_vec()),
                "cut, not terminated"
            );
            assert_eq!(
                g.call("_snprintf", &[buf, 6, fmt, text]).map(as_i32).ok(),
                Some(6)
            );
            assert_eq!(
                g.k.m.mem.read_vec(buf, 7).ok(),
                Some(b"abcdefx".to_vec()),
                "exact fit, not terminated"
            );

            let wbuf = g.zeroed(64);
            let wfmt = g.wstr("%ws=%d");
            let key = g.wstr("key");
            assert_eq!(
                g.call("_snwprintf", &[wbuf, 32, wfmt, key, (-42i32) as u32 as u64])
                    .map(as_i32)
                    .ok(),
                Some(7)
            );
            assert_eq!(g.read_wstr(wbuf), "key=-42");
        }
    }

    #[test]
    fn va_list_forms() {
        for arch in ARCHES {
            let mut g = Guest::new(arch);
            let buf = g.zeroed(64);
            let fmt = g.cstr("%I64x-%s-%d");
            let s = g.cstr("va");
            let mut slots = g.quad(0x1_0000_0002);
            slots.extend([s, 7]);
            let va = g.va_list(&slots);
            assert_eq!(
                g.call("_vsnprintf", &[buf, 64, fmt, va]).map(as_i32).ok(),
                Some(14)
            );
            assert_eq!(g.read_cstr(buf), "100000002-va-7");
            assert_eq!(
                g.call("vsprintf", &[buf, fmt, va]).map(as_i32).ok(),
                Some(14)
            );

            let wbuf = g.zeroed(64);
            let wfmt = g.wstr("%s|%S");
            let w = g.wstr("wide");
            let va = g.va_list(&[w, s]);
            assert_eq!(
                g.call("_vsnwprintf", &[wbuf, 32, wfmt, va])
                    .map(as_i32)
                    .ok(),
                Some(7)
            );
            assert_eq!(g.read_wstr(wbuf), "wide|va");

            let fmt = g.cstr("%d%d");
            assert_eq!(
                g.call("sprintf", &[buf, fmt, 12, 34]).map(as_i32).ok(),
                Some(4)
            );
            assert_eq!(g.read_cstr(buf), "1234");
            assert_eq!(
                g.call("sprintf_s", &[buf, 4, fmt, 12, 34]).map(as_i32).ok(),
                Some(-1)
            );
            assert_eq!(
                g.read_cstr(buf),
                "",
                "sprintf_s empties the buffer when the text does not fit"
            );
            let truncate = if arch == Arch::X86 {
                0xFFFF_FFFF
            } else {
                u64::MAX
            };
            assert_eq!(
                g.call("_snprintf_s", &[buf, 4, truncate, fmt, 12, 34])
                    .map(as_i32)
                    .ok(),
                Some(-1)
            );
            assert_eq!(g.read_cstr(buf), "123");
        }
    }

    #[test]
    fn string_routines() {
        for arch in ARCHES {
            let mut g = Guest::new(arch);
            let buf = g.bytes(b"xxxxxxxx");
            let ab = g.cstr("ab");
            g.call("strncpy", &[buf, ab, 5]).expect("strncpy");
            assert_eq!(g.k.m.mem.read_vec(buf, 6).ok(), Some(b"ab\0\0\0x".to_vec()));
            let cd = g.cstr("cdef");
            g.call("strncat", &[buf, cd, 2]).expect("strncat");
            assert_eq!(g.read_cstr(buf), "abcd");
            let hay = g.cstr("hello world");
            let needle = g.cstr("o w");
            assert_eq!(g.call("strstr", &[hay, needle]).ok(), Some(hay + 4));
            assert_eq!(
                g.call("strchr", &[hay, 0]).ok(),
                Some(hay + 11),
                "the terminator is found"
            );
            assert_eq!(
                g.call("strrchr", &[hay, u64::from(b'o')]).ok(),
                Some(hay + 7)
            );
            assert_eq!(
                g.call("memchr", &[hay, u64::from(b'w'), 11]).ok(),
                Some(hay + 6)
            );
            assert_eq!(g.call("memchr", &[hay, u64::from(b'w'), 5]).ok(), Some(0));
            let upper = g.cstr("HELLO");
            assert_eq!(g.call("_strnicmp", &[hay, upper, 5]).ok(), Some(0));
            assert!(as_i32(g.call("strcmp", &[upper, hay]).expect("strcmp")) < 0);
            assert_eq!(g.call("memcmp", &[hay, upper, 0]).ok(), Some(0));
            let w1 = g.wstr("ICA Driver");
            let w2 = g.wstr("ica dRIVER");
            assert_eq!(g.call("_wcsicmp", &[w1, w2]).ok(), Some(0));
            assert_eq!(g.call("wcslen", &[w1]).ok(), Some(10));
            let empty = g.wstr("");
            assert_eq!(
                g.call("wcsstr", &[w1, empty]).ok(),
                Some(w1),
                "an empty needle matches at the start"
            );
            let driver = g.wstr("Driver");
            assert_eq!(g.call("wcsstr", &[w1, driver]).ok(), Some(w1 + 8));
            let small = g.zeroed(4);
            assert_eq!(
                g.call("strcpy_s", &[small, 4, hay]).ok(),
                Some(34),
                "ERANGE"
            );
            assert_eq!(g.read_cstr(small), "");
            let truncate = if arch == Arch::X86 {
                0xFFFF_FFFF
            } else {
                u64::MAX
            };
            assert_eq!(
                g.call("strncpy_s", &[small, 4, hay, truncate]).ok(),
                Some(80),
                "STRUNCATE"
            );
            assert_eq!(g.read_cstr(small), "hel");
            let num = g.cstr("  -77x");
            assert_eq!(g.call("atoi", &[num]).map(as_i32).ok(), Some(-77));
            let wnum = g.wstr("0x1Fg");
            let end = g.zeroed(8);
            assert_eq!(g.call("wcstoul", &[wnum, end, 0]).ok(), Some(31));
            assert_eq!(g.k.read_ptr(end).ok(), Some(wnum + 8));
            assert_eq!(
                g.call("_itoa", &[(-5i32) as u32 as u64, buf, 10]).ok(),
                Some(buf)
            );
            assert_eq!(g.read_cstr(buf), "-5");
            assert_eq!(g.call("_strupr", &[hay]).ok(), Some(hay));
            assert_eq!(g.read_cstr(hay), "HELLO WORLD");
            assert!(
                g.call("strlen", &[0x10]).is_err(),
                "a bad pointer is an error, not a panic"
            );
        }
    }

    #[test]
    fn qsort_and_bsearch_call_the_guest_comparator() {
        for arch in ARCHES {
            let mut g = Guest::new(arch);
            // int compare(const int *a, const int *b) { return *a - *b; }
            let code: &[u8] = match arch {
                // mov eax,[esp+4]; mov eax,[eax]; mov ecx,[esp+8]; sub eax,[ecx]; ret
                Arch::X86 => &[
                    0x8B, 0x44, 0x24, 0x04, 0x8B, 0x00, 0x8B, 0x4C, 0x24, 0x08, 0x2B, 0x01, 0xC3,
                ],
                // mov eax,[rcx]; sub eax,[rdx]; ret
                Arch::X64 => &[0x8B, 0x01, 0x2B, 0x02, 0xC3],
            };
            let compare = g.bytes(code);
            let values = [5i32, -3, 9, 0, 7, 7, 1, -8, 2];
            let data: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
            let base = g.bytes(&data);
            g.call("qsort", &[base, values.len() as u64, 4, compare])
                .expect("qsort");
            let sorted: Vec<i32> = (0..values.len() as u64)
                .map(|i| g.k.m.mem.read_u32(base + 4 * i).expect("read") as i32)
                .collect();
            let mut expected = values.to_vec();
            expected.sort();
            assert_eq!(sorted, expected);
            let key = g.bytes(&7i32.to_le_bytes());
            let found = g
                .call("bsearch", &[key, base, values.len() as u64, 4, compare])
                .expect("bsearch");
            assert_eq!(g.k.m.mem.read_u32(found).ok(), Some(7));
            let missing = g.bytes(&4i32.to_le_bytes());
            assert_eq!(
                g.call("bsearch", &[missing, base, values.len() as u64, 4, compare])
                    .ok(),
                Some(0)
            );
        }
    }

    #[test]
    fn x86_64bit_helpers() {
        let mut g = Guest::new(Arch::X86);
        let q = |v: u64| [v & 0xFFFF_FFFF, v >> 32];
        let args = |a: u64, b: u64| [q(a), q(b)].concat();
        assert_eq!(
            g.call("_allmul", &args(0xFFFF_FFF0, 0x1234_5678)).ok(),
            Some(0xFFFF_FFF0u64 * 0x1234_5678)
        );
        assert_eq!(
            g.call("_alldiv", &args((-100i64) as u64, 7)).ok(),
            Some((-14i64) as u64)
        );
        assert_eq!(
            g.call("_allrem", &args((-100i64) as u64, 7)).ok(),
            Some((-2i64) as u64)
        );
        assert_eq!(
            g.call("_aulldiv", &args(u64::MAX, 3)).ok(),
            Some(u64::MAX / 3)
        );
        assert!(
            matches!(g.call("_aullrem", &args(1, 0)), Err(KernelError::Fault(_))),
            "divide error"
        );
        assert_eq!(g.call("_aulldvrm", &args(100, 7)).ok(), Some(14));
        assert_eq!(
            (g.k.m.cpu.reg(Reg::Rcx), g.k.m.cpu.reg(Reg::Rbx)),
            (2, 0),
            "remainder in ebx:ecx"
        );
        let shift = |g: &mut Guest, name: &str, value: u64, count: u64| {
            g.k.m.cpu.set_reg(Reg::Rax, value & 0xFFFF_FFFF);
            g.k.m.cpu.set_reg(Reg::Rdx, value >> 32);
            g.k.m.cpu.set_reg(Reg::Rcx, count);
            g.call(name, &[]).ok()
        };
        assert_eq!(shift(&mut g, "_allshl", 1, 40), Some(1 << 40));
        assert_eq!(shift(&mut g, "_allshl", 1, 64), Some(0));
        assert_eq!(
            shift(&mut g, "_allshr", 0x8000_0000_0000_0000, 63),
            Some(u64::MAX)
        );
        assert_eq!(
            shift(&mut g, "_allshr", 0x8000_0000_0000_0000, 200),
            Some(u64::MAX)
        );
        assert_eq!(
            shift(&mut g, "_aullshr", 0x8000_0000_0000_0000, 63),
            Some(1)
        );
        assert_eq!(
            shift(&mut g, "_aullshr", 0x8000_0000_0000_0000, 0x100),
            Some(0x8000_0000_0000_0000),
            "only cl counts"
        );
    }
}
