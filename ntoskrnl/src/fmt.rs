//! The printf engine behind DbgPrint*, the `_snprintf`/`sprintf`/`swprintf` family and their `va_list`
//! forms, narrow and wide, with the semantics of Microsoft's C runtime.
//!
//! Supported: flags `- + space # 0`; width and precision (also `*`); length modifiers `h hh l ll L I I32 I64
//! j q t w z`; conversions `d i u o x X c C s S p n e E f F g G a A Z %`.
//!
//! * `%s` is a narrow string in narrow functions and a wide one in wide functions, `%S` the opposite;
//!   `h` forces narrow, `l`/`w` wide (`%hs`, `%ls`, `%ws`; likewise for `%c`/`%C`). Narrow text in
//!   wide output and wide text in narrow output are converted through the ANSI code page (1252).
//! * `%Z` prints an `ANSI_STRING*`, `%wZ`/`%lZ` a `UNICODE_STRING*` (exactly `Length` bytes).
//! * A NULL string pointer (or a counted string with a NULL buffer) prints `(null)`.
//! * `%p` prints the pointer as upper-case hex, zero-padded to the pointer width (8 or 16 digits).
//! * The `0` flag pads strings and characters with zeros too, as MSVC does; a precision turns it off for
//!   integers.
//! * `%n` is refused: its pointer argument is consumed and nothing is written.
//! * Floating point (`%e %f %g` and upper-case forms) is formatted from the raw IEEE bits with correct
//!   rounding, in the modern (UCRT) style: two-digit exponents (`1.500000e+02`), `inf`/`nan`. `%a`/`%A`
//!   consume the argument and print the conversion text literally.
//! * An unknown conversion prints its text (from `%` to the conversion character) literally.
//!
//! The engine is independent of the kernel: it pulls arguments and guest memory through a
//! [`FormatHost`]; [`format_guest`] binds it to the current import call or a guest `va_list`.

use crate::crt::{self, CharSize};
use crate::rtl::{self, ansi_to_unicode, unicode_to_ansi};
use crate::{KResult, Kernel};

/// Largest width or precision honoured (bigger values are clamped, so a hostile format cannot make
/// the host allocate without bound).
const MAX_FIELD: usize = 1 << 16;
/// Longest string argument read when no precision bounds it.
const MAX_STRING: usize = 1 << 20;

/// What the format engine needs from its surroundings: argument slots and guest memory.
pub trait FormatHost {
    /// Guest pointer size in bytes (4 or 8); also the argument slot size.
    fn ptr_size(&self) -> u64;
    /// The next argument slot (4 bytes on x86, 8 on x64; 64-bit values on x86 take two slots).
    fn next_slot(&mut self) -> KResult<u64>;
    /// Reads a guest byte.
    fn read_u8(&self, addr: u64) -> KResult<u8>;
    /// Reads a guest UTF-16 code unit.
    fn read_u16(&self, addr: u64) -> KResult<u16>;
    /// Reads the `Length` (in bytes) and `Buffer` of an `ANSI_STRING` (`wide` = false) or a
    /// `UNICODE_STRING` (`wide` = true) at `addr`.
    fn counted_string(&self, addr: u64, wide: bool) -> KResult<(u16, u64)>;
}

/// Where the variable arguments of a printf-style call come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArgSource {
    /// The variadic arguments of the import call being served, starting at argument slot `first`
    /// (counted from the function's first parameter).
    Varargs(usize),
    /// A guest `va_list`: a pointer to the first argument slot (x86: 4-byte slots, x64: 8-byte slots).
    VaList(u64),
}

/// [`FormatHost`] over a [`Kernel`] and an [`ArgSource`].
struct KernelHost<'a> {
    k: &'a Kernel,
    src: ArgSource,
}

impl FormatHost for KernelHost<'_> {
    fn ptr_size(&self) -> u64 {
        self.k.ptr_size()
    }

    fn next_slot(&mut self) -> KResult<u64> {
        match &mut self.src {
            ArgSource::Varargs(index) => {
                let value = self.k.vararg(*index)?;
                *index += 1;
                Ok(value)
            }
            ArgSource::VaList(ptr) => {
                let value = self.k.read_ptr(*ptr)?;
                *ptr = ptr.wrapping_add(self.k.ptr_size());
                Ok(value)
            }
        }
    }

    fn read_u8(&self, addr: u64) -> KResult<u8> {
        Ok(self.k.m.mem.read_u8(addr)?)
    }

    fn read_u16(&self, addr: u64) -> KResult<u16> {
        Ok(self.k.m.mem.read_u16(addr)?)
    }

    fn counted_string(&self, addr: u64, wide: bool) -> KResult<(u16, u64)> {
        let cs = if wide {
            CharSize::Wide
        } else {
            CharSize::Narrow
        };
        let s = rtl::read_counted(self.k, addr, cs)?;
        Ok((s.length, s.buffer))
    }
}

/// Formats the guest format string at `format_string` (narrow or wide per `cs`) with arguments from `args`.
/// Returns the output as code units: bytes of the ANSI code page for narrow output, UTF-16 for wide.
pub fn format_guest(
    k: &Kernel,
    format_string: u64,
    cs: CharSize,
    args: ArgSource,
) -> KResult<Vec<u16>> {
    let fmt = crt::read_str(k, format_string, cs)?;
    let mut host = KernelHost { k, src: args };
    format(&mut host, &fmt, cs == CharSize::Wide)
}

/// Formats a narrow guest format string into ANSI bytes.
pub fn format_narrow(k: &Kernel, format_string: u64, args: ArgSource) -> KResult<Vec<u8>> {
    let units = format_guest(k, format_string, CharSize::Narrow, args)?;
    Ok(units.into_iter().map(|u| u as u8).collect())
}

/// Formats a wide guest format string into UTF-16.
pub fn format_wide(k: &Kernel, format_string: u64, args: ArgSource) -> KResult<Vec<u16>> {
    format_guest(k, format_string, CharSize::Wide, args)
}

/// Length modifier of a conversion.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Size {
    /// None given: `int`, or the function's own character width for strings.
    #[default]
    Default,
    /// `hh`: char.
    Char,
    /// `h`: short, or narrow characters.
    Short,
    /// `l` or `w`: long (32-bit on Windows), or wide characters.
    Long,
    /// `ll`, `I64`, `j`, `q`, `L`: 64-bit.
    LongLong,
    /// `I`, `z`, `t`: pointer-sized.
    Ptr,
    /// `I32`: 32-bit.
    Int32,
}

/// One parsed conversion specification.
#[derive(Debug, Clone, Copy, Default)]
struct Spec {
    left: bool,
    plus: bool,
    space: bool,
    alt: bool,
    zero: bool,
    width: usize,
    precision: Option<usize>,
    size: Size,
}

/// The ASCII character of a format unit (non-ASCII units never match a directive character).
fn ascii(unit: u16) -> char {
    if unit < 0x80 {
        unit as u8 as char
    } else {
        '\u{FFFD}'
    }
}

fn push_str(out: &mut Vec<u16>, s: &str) {
    out.extend(s.bytes().map(u16::from));
}

/// Formats `fmt` (code units: bytes for narrow functions, UTF-16 for wide ones). `wide` selects the
/// wide-function meaning of `%s`/`%c` and the output encoding.
pub fn format(host: &mut impl FormatHost, fmt: &[u16], wide: bool) -> KResult<Vec<u16>> {
    let mut out = Vec::with_capacity(fmt.len() + 16);
    let mut i = 0;
    while i < fmt.len() {
        let unit = fmt[i];
        if ascii(unit) != '%' {
            out.push(unit);
            i += 1;
            continue;
        }
        let start = i;
        i += 1;
        let mut spec = Spec::default();
        while let Some(&u) = fmt.get(i) {
            match ascii(u) {
                '-' => spec.left = true,
                '+' => spec.plus = true,
                ' ' => spec.space = true,
                '#' => spec.alt = true,
                '0' => spec.zero = true,
                _ => break,
            }
            i += 1;
        }
        if fmt.get(i).map(|&u| ascii(u)) == Some('*') {
            i += 1;
            let w = host.next_slot()? as u32 as i32;
            if w < 0 {
                spec.left = true;
            }
            spec.width = (w.unsigned_abs() as usize).min(MAX_FIELD);
        } else {
            spec.width = parse_number(fmt, &mut i);
        }
        if fmt.get(i).map(|&u| ascii(u)) == Some('.') {
            i += 1;
            if fmt.get(i).map(|&u| ascii(u)) == Some('*') {
                i += 1;
                let p = host.next_slot()? as u32 as i32;
                spec.precision = (p >= 0).then(|| (p as usize).min(MAX_FIELD));
            } else {
                spec.precision = Some(parse_number(fmt, &mut i));
            }
        }
        spec.size = parse_size(fmt, &mut i);
        let Some(&conv) = fmt.get(i) else {
            // An incomplete directive at the end of the format prints nothing.
            break;
        };
        i += 1;
        convert(host, &mut out, &spec, ascii(conv), wide, &fmt[start..i])?;
    }
    Ok(out)
}

/// Parses a decimal field (clamped to [`MAX_FIELD`]).
fn parse_number(fmt: &[u16], i: &mut usize) -> usize {
    let mut n = 0usize;
    while let Some(d) = fmt.get(*i).and_then(|&u| ascii(u).to_digit(10)) {
        n = (n * 10 + d as usize).min(MAX_FIELD);
        *i += 1;
    }
    n
}

fn parse_size(fmt: &[u16], i: &mut usize) -> Size {
    let at = |n: usize| fmt.get(n).map(|&u| ascii(u));
    let (size, len) = match at(*i) {
        Some('h') if at(*i + 1) == Some('h') => (Size::Char, 2),
        Some('h') => (Size::Short, 1),
        Some('l') if at(*i + 1) == Some('l') => (Size::LongLong, 2),
        Some('l') | Some('w') => (Size::Long, 1),
        Some('L') | Some('j') | Some('q') => (Size::LongLong, 1),
        Some('z') | Some('t') => (Size::Ptr, 1),
        Some('I') if at(*i + 1) == Some('6') && at(*i + 2) == Some('4') => (Size::LongLong, 3),
        Some('I') if at(*i + 1) == Some('3') && at(*i + 2) == Some('2') => (Size::Int32, 3),
        Some('I') => (Size::Ptr, 1),
        _ => (Size::Default, 0),
    };
    *i += len;
    size
}

/// A 64-bit argument: two slots on x86 (low half first), one on x64.
fn arg64(host: &mut impl FormatHost) -> KResult<u64> {
    if host.ptr_size() == 4 {
        let lo = host.next_slot()? & 0xFFFF_FFFF;
        let hi = host.next_slot()? & 0xFFFF_FFFF;
        Ok(lo | (hi << 32))
    } else {
        host.next_slot()
    }
}

/// An integer argument of the given size: its raw bits and their width.
fn int_arg(host: &mut impl FormatHost, size: Size) -> KResult<(u64, u32)> {
    Ok(match size {
        Size::LongLong => (arg64(host)?, 64),
        Size::Ptr if host.ptr_size() == 8 => (host.next_slot()?, 64),
        Size::Short => (host.next_slot()?, 16),
        Size::Char => (host.next_slot()?, 8),
        _ => (host.next_slot()?, 32),
    })
}

/// Pads `prefix` + `body` to the field width: left-justified, zero-filled after the prefix (when
/// `zero_ok`), or right-justified with spaces.
fn pad_field(out: &mut Vec<u16>, spec: &Spec, prefix: &[u16], body: &[u16], zero_ok: bool) {
    let pad = spec.width.saturating_sub(prefix.len() + body.len());
    let space = u16::from(b' ');
    if spec.left {
        out.extend_from_slice(prefix);
        out.extend_from_slice(body);
        out.extend(std::iter::repeat_n(space, pad));
    } else if spec.zero && zero_ok {
        out.extend_from_slice(prefix);
        out.extend(std::iter::repeat_n(u16::from(b'0'), pad));
        out.extend_from_slice(body);
    } else {
        out.extend(std::iter::repeat_n(space, pad));
        out.extend_from_slice(prefix);
        out.extend_from_slice(body);
    }
}

/// Renders an integer conversion (`d i u o x X p`).
fn render_int(out: &mut Vec<u16>, spec: &Spec, magnitude: u64, negative: bool, conv: char) {
    let (base, upper, signed) = match conv {
        'd' | 'i' => (10, false, true),
        'o' => (8, false, false),
        'x' => (16, false, false),
        'X' | 'p' => (16, true, false),
        _ => (10, false, false),
    };
    let mut digits: Vec<u16> = Vec::new();
    if magnitude != 0 || spec.precision != Some(0) {
        let mut v = magnitude;
        loop {
            let d = (v % base) as u8;
            let c = match d {
                0..=9 => b'0' + d,
                _ if upper => b'A' + d - 10,
                _ => b'a' + d - 10,
            };
            digits.push(u16::from(c));
            v /= base;
            if v == 0 {
                break;
            }
        }
    }
    if let Some(p) = spec.precision {
        while digits.len() < p {
            digits.push(u16::from(b'0'));
        }
    }
    if conv == 'o' && spec.alt && digits.last() != Some(&u16::from(b'0')) {
        digits.push(u16::from(b'0'));
    }
    digits.reverse();
    let mut prefix = Vec::new();
    if signed {
        if negative {
            prefix.push(u16::from(b'-'));
        } else if spec.plus {
            prefix.push(u16::from(b'+'));
        } else if spec.space {
            prefix.push(u16::from(b' '));
        }
    }
    if spec.alt && magnitude != 0 && matches!(conv, 'x' | 'X' | 'p') {
        push_str(&mut prefix, if upper { "0X" } else { "0x" });
    }
    pad_field(out, spec, &prefix, &digits, spec.precision.is_none());
}

/// Converts text read in one width to the output width of the function.
fn to_output(units: Vec<u16>, source_wide: bool, wide: bool) -> Vec<u16> {
    match (source_wide, wide) {
        (true, false) => units
            .into_iter()
            .map(|u| u16::from(unicode_to_ansi(u)))
            .collect(),
        (false, true) => units
            .into_iter()
            .map(|u| ansi_to_unicode(u as u8))
            .collect(),
        _ => units,
    }
}

/// Reads a NUL-terminated string of at most `limit` characters.
fn read_string(host: &impl FormatHost, addr: u64, wide: bool, limit: usize) -> KResult<Vec<u16>> {
    let mut units = Vec::new();
    let step = if wide { 2 } else { 1 };
    while units.len() < limit {
        let at = addr.wrapping_add(units.len() as u64 * step);
        let unit = if wide {
            host.read_u16(at)?
        } else {
            u16::from(host.read_u8(at)?)
        };
        if unit == 0 {
            break;
        }
        units.push(unit);
    }
    Ok(units)
}

/// `(null)`, cut to `limit` characters.
fn null_text(limit: usize) -> Vec<u16> {
    "(null)".bytes().take(limit).map(u16::from).collect()
}

/// Whether a `%s`/`%c`/`%Z` argument is wide: `l`/`w` say wide, `h` narrow, otherwise the upper-case
/// conversion is the opposite of the function's width.
fn is_wide_arg(size: Size, upper_conv: bool, wide: bool) -> bool {
    match size {
        Size::Long => true,
        Size::Short | Size::Char => false,
        _ => upper_conv != wide,
    }
}

fn convert(
    host: &mut impl FormatHost,
    out: &mut Vec<u16>,
    spec: &Spec,
    conv: char,
    wide: bool,
    directive: &[u16],
) -> KResult<()> {
    match conv {
        'd' | 'i' => {
            let (raw, bits) = int_arg(host, spec.size)?;
            let shift = 64 - bits;
            let value = ((raw << shift) as i64) >> shift;
            render_int(out, spec, value.unsigned_abs(), value < 0, conv);
        }
        'u' | 'o' | 'x' | 'X' => {
            let (raw, bits) = int_arg(host, spec.size)?;
            let value = if bits == 64 {
                raw
            } else {
                raw & ((1u64 << bits) - 1)
            };
            render_int(out, spec, value, false, conv);
        }
        'p' => {
            let ptr_size = host.ptr_size();
            let raw = host.next_slot()?;
            let value = if ptr_size == 4 {
                raw & 0xFFFF_FFFF
            } else {
                raw
            };
            let spec = Spec {
                precision: Some(2 * ptr_size as usize),
                ..*spec
            };
            render_int(out, &spec, value, false, 'p');
        }
        'c' | 'C' => {
            let raw = host.next_slot()?;
            let unit = if is_wide_arg(spec.size, conv == 'C', wide) {
                to_output(vec![raw as u16], true, wide)
            } else {
                to_output(vec![u16::from(raw as u8)], false, wide)
            };
            pad_field(out, spec, &[], &unit, true);
        }
        's' | 'S' => {
            let source_wide = is_wide_arg(spec.size, conv == 'S', wide);
            let ptr = host.next_slot()?;
            let limit = spec.precision.unwrap_or(MAX_STRING).min(MAX_STRING);
            let text = if ptr == 0 {
                null_text(limit)
            } else {
                to_output(
                    read_string(host, ptr, source_wide, limit)?,
                    source_wide,
                    wide,
                )
            };
            pad_field(out, spec, &[], &text, true);
        }
        'Z' => {
            let source_wide = spec.size == Size::Long;
            let ptr = host.next_slot()?;
            let limit = spec.precision.unwrap_or(MAX_STRING).min(MAX_STRING);
            let (length, buffer) = if ptr == 0 {
                (0, 0)
            } else {
                host.counted_string(ptr, source_wide)?
            };
            let text = if buffer == 0 {
                null_text(limit)
            } else {
                let step = if source_wide { 2 } else { 1 };
                let count = (usize::from(length) / step as usize).min(limit);
                let mut units = Vec::with_capacity(count);
                for n in 0..count as u64 {
                    let at = buffer.wrapping_add(n * step);
                    units.push(if source_wide {
                        host.read_u16(at)?
                    } else {
                        u16::from(host.read_u8(at)?)
                    });
                }
                to_output(units, source_wide, wide)
            };
            pad_field(out, spec, &[], &text, true);
        }
        'n' => {
            // Refused: writing through a guest pointer from a format string is an exploit primitive.
            host.next_slot()?;
        }
        'e' | 'E' | 'f' | 'F' | 'g' | 'G' => {
            let value = f64::from_bits(arg64(host)?);
            let (body, finite) = float_text(value, conv, spec);
            let mut prefix = Vec::new();
            if value.is_sign_negative() && !value.is_nan() {
                prefix.push(u16::from(b'-'));
            } else if spec.plus {
                prefix.push(u16::from(b'+'));
            } else if spec.space {
                prefix.push(u16::from(b' '));
            }
            let body: Vec<u16> = body.bytes().map(u16::from).collect();
            pad_field(out, spec, &prefix, &body, finite);
        }
        'a' | 'A' => {
            arg64(host)?;
            out.extend_from_slice(directive);
        }
        '%' => out.push(u16::from(b'%')),
        _ => out.extend_from_slice(directive),
    }
    Ok(())
}

/// The digits of a floating-point conversion (without sign), and whether the value is finite.
fn float_text(value: f64, conv: char, spec: &Spec) -> (String, bool) {
    let upper = conv.is_ascii_uppercase();
    let v = value.abs();
    if !v.is_finite() {
        let text = if v.is_nan() { "nan" } else { "inf" };
        return (
            if upper {
                text.to_ascii_uppercase()
            } else {
                text.to_string()
            },
            false,
        );
    }
    let precision = spec.precision.unwrap_or(6);
    let text = match conv.to_ascii_lowercase() {
        'f' => fixed(v, precision, spec.alt),
        'e' => exponential(v, precision, upper, spec.alt),
        _ => {
            let p = precision.max(1);
            let exp = if v == 0.0 {
                0
            } else {
                decimal_exponent(v, p - 1)
            };
            let mut text = if exp < -4 || exp >= p as i32 {
                exponential(v, p - 1, upper, spec.alt)
            } else {
                fixed(v, (p as i32 - 1 - exp).max(0) as usize, spec.alt)
            };
            if !spec.alt {
                strip_fraction_zeros(&mut text);
            }
            text
        }
    };
    (text, true)
}

/// `%f` digits of a non-negative finite value.
fn fixed(v: f64, precision: usize, alt: bool) -> String {
    let mut text = format!("{v:.precision$}");
    if alt && precision == 0 {
        text.push('.');
    }
    text
}

/// The decimal exponent `v` has when printed in `%e` style with `precision` fraction digits.
fn decimal_exponent(v: f64, precision: usize) -> i32 {
    let text = format!("{v:.precision$e}");
    text.split_once('e')
        .and_then(|(_, e)| e.parse().ok())
        .unwrap_or(0)
}

/// `%e` digits of a non-negative finite value: `d.ddde+XX`.
fn exponential(v: f64, precision: usize, upper: bool, alt: bool) -> String {
    let text = format!("{v:.precision$e}");
    let (mantissa, exp) = text.split_once('e').unwrap_or((text.as_str(), "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let mut out = mantissa.to_string();
    if alt && precision == 0 {
        out.push('.');
    }
    out.push(if upper { 'E' } else { 'e' });
    out.push(if exp < 0 { '-' } else { '+' });
    out.push_str(&format!("{:02}", exp.unsigned_abs()));
    out
}

/// `%g` without `#`: drops trailing zeros of the fraction (and a bare decimal point).
fn strip_fraction_zeros(text: &mut String) {
    let (mantissa, rest) = match text.find(['e', 'E']) {
        Some(at) => text.split_at(at),
        None => (text.as_str(), ""),
    };
    if !mantissa.contains('.') {
        return;
    }
    let trimmed = mantissa.trim_end_matches('0').trim_end_matches('.');
    *text = format!("{trimmed}{rest}");
}

#[cfg(test)]
mod tests {
    use super::*;
    use dbt::{GuestMemory, Prot};

    const BASE: u64 = 0x8000_0000;

    /// A format host over a small guest window and a list of argument slots.
    struct TestHost {
        mem: GuestMemory,
        ptr_size: u64,
        slots: Vec<u64>,
        next: usize,
        at: u64,
    }

    impl TestHost {
        fn new(ptr_size: u64) -> Self {
            let mut mem = GuestMemory::new(BASE, 0x10_0000);
            mem.map(BASE + 0x1000, 0x4000, Prot::READ | Prot::WRITE)
                .expect("map");
            TestHost {
                mem,
                ptr_size,
                slots: Vec::new(),
                next: 0,
                at: BASE + 0x1000,
            }
        }

        fn bytes(&mut self, data: &[u8]) -> u64 {
            let addr = self.at;
            self.mem.write_bytes(addr, data).expect("write");
            self.at += (data.len() as u64 + 15) & !15;
            addr
        }

        fn cstr(&mut self, s: &str) -> u64 {
            let mut data = s.as_bytes().to_vec();
            data.push(0);
            self.bytes(&data)
        }

        fn wstr(&mut self, s: &str) -> u64 {
            let data: Vec<u8> = s
                .encode_utf16()
                .chain([0])
                .flat_map(u16::to_le_bytes)
                .collect();
            self.bytes(&data)
        }

        /// A counted string header (Length, MaximumLength, Buffer at the pointer-size offset).
        fn counted(&mut self, buffer: u64, length: u16) -> u64 {
            let mut data = vec![0u8; 2 * self.ptr_size as usize];
            data[0..2].copy_from_slice(&length.to_le_bytes());
            data[2..4].copy_from_slice(&length.to_le_bytes());
            let p = self.ptr_size as usize;
            data[p..2 * p].copy_from_slice(&buffer.to_le_bytes()[..p]);
            self.bytes(&data)
        }

        fn arg(&mut self, v: u64) -> &mut Self {
            self.slots.push(v);
            self
        }

        fn arg64(&mut self, v: u64) -> &mut Self {
            if self.ptr_size == 4 {
                self.slots.push(v & 0xFFFF_FFFF);
                self.slots.push(v >> 32);
            } else {
                self.slots.push(v);
            }
            self
        }

        fn run(&mut self, fmt: &str) -> String {
            self.next = 0;
            let units: Vec<u16> = fmt.bytes().map(u16::from).collect();
            let out = format(self, &units, false).expect("format");
            out.iter().map(|&u| u as u8 as char).collect()
        }

        fn run_wide(&mut self, fmt: &str) -> String {
            self.next = 0;
            let units: Vec<u16> = fmt.encode_utf16().collect();
            let out = format(self, &units, true).expect("format");
            String::from_utf16_lossy(&out)
        }
    }

    impl FormatHost for TestHost {
        fn ptr_size(&self) -> u64 {
            self.ptr_size
        }
        fn next_slot(&mut self) -> KResult<u64> {
            let v = self.slots.get(self.next).copied().unwrap_or(0);
            self.next += 1;
            Ok(if self.ptr_size == 4 {
                v & 0xFFFF_FFFF
            } else {
                v
            })
        }
        fn read_u8(&self, addr: u64) -> KResult<u8> {
            Ok(self.mem.read_u8(addr)?)
        }
        fn read_u16(&self, addr: u64) -> KResult<u16> {
            Ok(self.mem.read_u16(addr)?)
        }
        fn counted_string(&self, addr: u64, _wide: bool) -> KResult<(u16, u64)> {
            let len = self.mem.read_u16(addr)?;
            let buf = if self.ptr_size == 4 {
                u64::from(self.mem.read_u32(addr + 4)?)
            } else {
                self.mem.read_u64(addr + 8)?
            };
            Ok((len, buf))
        }
    }

    fn neg(v: i64) -> u64 {
        v as u64
    }

    #[test]
    fn selftest_line_both_arches() {
        for ptr in [4, 8] {
            let mut h = TestHost::new(ptr);
            let ab = h.cstr("ab");
            h.arg(ab)
                .arg(neg(-12))
                .arg(0xbeef)
                .arg(0x1234)
                .arg(u64::from(b'z'));
            assert_eq!(h.run("%s-%d-%x-%08lx-%c"), "ab--12-beef-00001234-z");
        }
    }

    #[test]
    fn integers() {
        let mut h = TestHost::new(4);
        h.arg(42).arg(neg(-7)).arg(5);
        assert_eq!(h.run("[%-6d|%+d|% d]"), "[42    |-7| 5]");
        h.slots.clear();
        h.arg(255).arg(255).arg(8).arg(0).arg(0);
        assert_eq!(h.run("%#x %#X %#o %#x %#o"), "0xff 0XFF 010 0 0");
        h.slots.clear();
        h.arg(42).arg(42).arg(0).arg(neg(-42));
        assert_eq!(h.run("%.5d|%08.3d|%.0d|%05d"), "00042|     042||-0042");
        h.slots.clear();
        h.arg(0xFFFF_FFFF).arg(0x1_0000_FFFF).arg(0x1FF);
        assert_eq!(h.run("%u %hd %hhu"), "4294967295 -1 255");
        h.slots.clear();
        h.arg(8).arg(3).arg(1).arg(neg(-4)).arg(7);
        assert_eq!(h.run("%*.*d|%*d|"), "     001|7   |");
        h.slots.clear();
        h.arg(0xFFFF_FFFF);
        assert_eq!(h.run("%d %x"), "-1 0");
    }

    #[test]
    fn sixty_four_bit_and_pointers() {
        let mut h = TestHost::new(4);
        h.arg64(0x1234_5678_9abc_def0).arg(7);
        assert_eq!(h.run("%I64x %d"), "123456789abcdef0 7");
        h.slots.clear();
        h.arg64(neg(-5)).arg64(u64::MAX);
        assert_eq!(h.run("%lld %llu"), "-5 18446744073709551615");
        h.slots.clear();
        h.arg(0xdead_beef).arg(0x10);
        assert_eq!(h.run("%p %Ix"), "DEADBEEF 10");
        let mut h = TestHost::new(8);
        h.arg(0xffff_f880_0000_1234)
            .arg(0x1_0000_0000)
            .arg(0x1_0000_0001);
        assert_eq!(h.run("%p %Ix %I32x"), "FFFFF88000001234 100000000 1");
        h.slots.clear();
        h.arg64(0x1234_5678_9abc_def0).arg(neg(-1));
        assert_eq!(h.run("%I64X %zd"), "123456789ABCDEF0 -1");
    }

    #[test]
    fn strings_and_chars() {
        let mut h = TestHost::new(4);
        let s = h.cstr("abcdef");
        let w = h.wstr("wide");
        h.arg(s).arg(s).arg(s).arg(0);
        assert_eq!(
            h.run("[%5.2s][%-8s][%08.3s][%s]"),
            "[   ab][abcdef  ][00000abc][(null)]"
        );
        h.slots.clear();
        h.arg(w).arg(w).arg(w).arg(0);
        assert_eq!(h.run("%S %ws %ls %.3S"), "wide wide wide (nu");
        h.slots.clear();
        h.arg(u64::from(b'x')).arg(0x20AC).arg(0x20AC);
        assert_eq!(h.run("%3c|%C|%lc"), "  x|\u{80}|\u{80}");
        h.slots.clear();
        h.arg(s).arg(w).arg(w).arg(s).arg(0x41).arg(0x42);
        assert_eq!(
            h.run_wide("%S|%s|%ws|%hs|%c|%C"),
            "abcdef|wide|wide|abcdef|A|B"
        );
    }

    #[test]
    fn counted_strings() {
        for ptr in [4, 8] {
            let mut h = TestHost::new(ptr);
            let text = h.cstr("Hello, world");
            let ansi = h.counted(text, 5);
            let wtext = h.wstr("\\Device\\Ica\0tail");
            let uni = h.counted(wtext, 22);
            let null_buf = h.counted(0, 0);
            h.arg(ansi).arg(uni).arg(uni).arg(0).arg(null_buf);
            assert_eq!(
                h.run("%Z|%wZ|%.3wZ|%wZ|%Z"),
                "Hello|\\Device\\Ica|\\De|(null)|(null)"
            );
            h.slots.clear();
            h.arg(uni);
            assert_eq!(h.run_wide("<%-13wZ>"), "<\\Device\\Ica  >");
        }
    }

    #[test]
    fn percent_n_unknown_and_incomplete() {
        let mut h = TestHost::new(4);
        h.arg(0x1234).arg(5);
        assert_eq!(h.run("a%nb%d%%%y%"), "ab5%%y");
    }

    #[test]
    fn floats() {
        let mut h = TestHost::new(4);
        h.arg64(1.5f64.to_bits())
            .arg64(150.0f64.to_bits())
            .arg64((-0.000123456f64).to_bits());
        assert_eq!(h.run("%f %e %g"), "1.500000 1.500000e+02 -0.000123456");
        h.slots.clear();
        h.arg64(100000.0f64.to_bits())
            .arg64(1e6f64.to_bits())
            .arg64(1e-5f64.to_bits())
            .arg64(0.0f64.to_bits());
        assert_eq!(h.run("%g %g %G %g"), "100000 1e+06 1E-05 0");
        h.slots.clear();
        h.arg64(3.25159f64.to_bits())
            .arg64(2.5f64.to_bits())
            .arg64(f64::INFINITY.to_bits())
            .arg64(f64::NAN.to_bits());
        assert_eq!(h.run("%08.2f|%+.0f|%5f|%F"), "00003.25|+2|  inf|NAN");
        h.slots.clear();
        h.arg64(2.0f64.to_bits()).arg64(0.5f64.to_bits());
        assert_eq!(h.run("%#.0f %#g %a"), "2. 0.500000 %a");
    }

    #[test]
    fn wide_output_and_width_star_clamp() {
        let mut h = TestHost::new(8);
        let key = h.wstr("key");
        h.arg(key).arg(neg(-42));
        assert_eq!(h.run_wide("%ws=%d"), "key=-42");
        h.slots.clear();
        h.arg(0x7FFF_FFFF).arg(1);
        assert_eq!(h.run("%*d").len(), MAX_FIELD);
    }

    #[test]
    fn bad_pointer_is_an_error() {
        let mut h = TestHost::new(4);
        h.arg(0x1234);
        let units: Vec<u16> = "%s".bytes().map(u16::from).collect();
        assert!(format(&mut h, &units, false).is_err());
    }
}
