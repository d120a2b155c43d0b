//! The lexical layer: an INF's text as sections of lines of fields, with `%strkey%` tokens
//! replaced from `[Strings]` (locale variants first) and `%N%` DIRIDs kept symbolic.
//!
//! Rules (as Windows' INF parser applies them):
//! - sections start with `[name]`; names are case-insensitive; a section that appears several
//!   times is one section with the lines of all its parts, in file order; lines before the first
//!   section are ignored (with a warning);
//! - `;` starts a comment outside double quotes; a `\` as the last character of a line (outside
//!   quotes, before any comment) continues the line on the next one;
//! - a line is `key = value, value, ...` (split at the first `=` outside quotes; the key is one
//!   token) or a bare `value, value, ...` list; fields are split at `,` outside quotes;
//! - `"..."` quotes a part of a field (keeping `,` `;` `=` and spaces); `""` inside quotes is one
//!   `"`; unquoted parts are trimmed of spaces and tabs at the field's ends;
//! - in `[Strings]` sections the whole right-hand side is the value (commas included), quoted
//!   values may run over several lines, and values are not substituted again;
//! - `%key%` is replaced by the string of `key` (case-insensitive) from `[Strings.LLLL]` for the
//!   chosen locale, then `[Strings.00PP]` (its primary language), then `[Strings]`; `%%` is a
//!   literal `%`; `%N%` with a number is a DIRID; an undefined key stays as written (warning);
//! - a Ctrl-Z character ends the file (old DOS editors).

use std::collections::HashMap;
use std::sync::Arc;

use super::decode::{decode, Encoding};
use super::dirid::DirId;
use super::error::{InfError, InfWarning, Origin};

/// Options of the lexical layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParseOptions {
    /// The Windows LANGID whose `[Strings.LLLL]` section is preferred (default 0x0409, en-US).
    pub locale: u16,
}

impl Default for ParseOptions {
    fn default() -> Self {
        ParseOptions { locale: 0x0409 }
    }
}

/// A part of a field after substitution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    Text(String),
    DirId(DirId),
}

/// One field of a line: the text after quote removal, trimming and substitution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    pieces: Vec<Piece>,
    text: String,
    quoted: bool,
}

impl Field {
    /// A field holding plain text.
    pub fn literal(text: &str) -> Field {
        let pieces = if text.is_empty() {
            vec![]
        } else {
            vec![Piece::Text(text.to_string())]
        };
        Field {
            pieces,
            text: text.to_string(),
            quoted: false,
        }
    }

    fn from_pieces(pieces: Vec<Piece>, quoted: bool) -> Field {
        let mut text = String::new();
        for p in &pieces {
            match p {
                Piece::Text(t) => text.push_str(t),
                Piece::DirId(d) => text.push_str(&d.to_string()),
            }
        }
        Field {
            pieces,
            text,
            quoted,
        }
    }

    /// The text; DIRIDs appear as `%N%`, a `%%` of the source as `%`.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The text with DIRIDs kept apart.
    pub fn pieces(&self) -> &[Piece] {
        &self.pieces
    }

    /// Whether any part of the field was in double quotes.
    pub fn is_quoted(&self) -> bool {
        self.quoted
    }

    pub fn is_empty(&self) -> bool {
        self.text.is_empty()
    }

    /// Whether the field contains a `%N%` DIRID.
    pub fn has_dirid(&self) -> bool {
        self.pieces.iter().any(|p| matches!(p, Piece::DirId(_)))
    }
}

/// One logical line: an optional key and its value fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub origin: Origin,
    key: Option<Field>,
    fields: Vec<Field>,
}

impl Line {
    /// The key left of `=`, if the line has one.
    pub fn key(&self) -> Option<&Field> {
        self.key.as_ref()
    }

    /// The key's text, if the line has one.
    pub fn key_text(&self) -> Option<&str> {
        self.key.as_ref().map(Field::text)
    }

    /// Whether the line's key is `name` (case-insensitive).
    pub fn is_key(&self, name: &str) -> bool {
        self.key_text()
            .is_some_and(|k| k.eq_ignore_ascii_case(name))
    }

    /// The value fields (right of `=`, or the whole line without a key).
    pub fn fields(&self) -> &[Field] {
        &self.fields
    }

    /// Value field `i` (0-based), if present.
    pub fn field(&self, i: usize) -> Option<&Field> {
        self.fields.get(i)
    }

    /// The text of value field `i`; an absent field reads as empty, like an empty one.
    pub fn text(&self, i: usize) -> &str {
        self.fields.get(i).map(Field::text).unwrap_or("")
    }

    /// An error at this line.
    pub fn error(&self, message: impl Into<String>) -> InfError {
        self.origin.error(message)
    }

    /// A warning at this line.
    pub fn warning(&self, message: impl Into<String>) -> InfWarning {
        self.origin.warning(message)
    }
}

/// A section: its name as first written, where it first appears, and the lines of all its parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    pub name: String,
    pub origin: Origin,
    pub lines: Vec<Line>,
}

impl Section {
    /// The lines whose key is `name` (case-insensitive), in order.
    pub fn entries<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Line> + 'a {
        self.lines.iter().filter(move |l| l.is_key(name))
    }

    /// The first line whose key is `name`.
    pub fn entry(&self, name: &str) -> Option<&Line> {
        self.lines.iter().find(|l| l.is_key(name))
    }
}

/// A lexically parsed INF file.
#[derive(Debug, Clone)]
pub struct InfFile {
    name: Arc<str>,
    encoding: Encoding,
    sections: Vec<Section>,
    index: HashMap<String, usize>,
    strings: HashMap<String, String>,
    warnings: Vec<InfWarning>,
    options: ParseOptions,
}

impl InfFile {
    /// Parse `bytes` (any encoding) with the default options; `name` is used in messages and
    /// is typically the path the INF was read from.
    pub fn parse(name: &str, bytes: &[u8]) -> Result<InfFile, InfError> {
        Self::parse_with(name, bytes, &ParseOptions::default())
    }

    /// Parse with explicit options (locale).
    pub fn parse_with(
        name: &str,
        bytes: &[u8],
        options: &ParseOptions,
    ) -> Result<InfFile, InfError> {
        let (text, encoding) = decode(bytes);
        let name: Arc<str> = Arc::from(name);
        let raw = lex(&name, &text)?;
        Ok(build(name, encoding, raw, *options))
    }

    /// The name given to `parse`.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub(crate) fn name_arc(&self) -> &Arc<str> {
        &self.name
    }

    pub fn encoding(&self) -> Encoding {
        self.encoding
    }

    pub fn options(&self) -> &ParseOptions {
        &self.options
    }

    /// A section by name (case-insensitive).
    pub fn section(&self, name: &str) -> Option<&Section> {
        self.index
            .get(&name.to_lowercase())
            .map(|&i| &self.sections[i])
    }

    pub fn has_section(&self, name: &str) -> bool {
        self.index.contains_key(&name.to_lowercase())
    }

    /// All sections, in order of first appearance.
    pub fn sections(&self) -> &[Section] {
        &self.sections
    }

    /// The string of a `[Strings]` key for the chosen locale (case-insensitive key).
    pub fn string(&self, key: &str) -> Option<&str> {
        self.strings.get(&key.to_lowercase()).map(String::as_str)
    }

    /// Warnings of the lexical layer (undefined `%strkey%`, lines outside sections ...).
    pub fn warnings(&self) -> &[InfWarning] {
        &self.warnings
    }

    /// An error about the whole file (reported at line 1).
    pub fn file_error(&self, message: impl Into<String>) -> InfError {
        Origin::new(&self.name, 1).error(message)
    }
}

// ---------------------------------------------------------------------------------------------
// Lexing: text -> headers and token lines.

#[derive(Debug, Clone)]
enum Tok {
    Seg { quoted: bool, text: String },
    Comma,
    Eq,
}

#[derive(Debug)]
struct RawLine {
    line: u32,
    toks: Vec<Tok>,
}

#[derive(Debug)]
enum RawItem {
    Header { name: String, line: u32 },
    Line(RawLine),
    Warning(InfWarning),
}

fn is_blank(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\x0b' | '\x0c' | '\0')
}

fn is_strings_section(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    lower == "strings" || lower.starts_with("strings.")
}

fn lex(file: &Arc<str>, text: &str) -> Result<Vec<RawItem>, InfError> {
    let text = match text.find('\u{1A}') {
        Some(end) => &text[..end],
        None => text,
    };
    let chars: Vec<char> = text.chars().collect();
    let n = chars.len();
    let mut items = Vec::new();
    let mut i = 0usize;
    let mut line_no: u32 = 1;
    let mut pending: Option<RawLine> = None; // a logical line continued with `\`
    let mut in_strings = false;

    // Consume one line terminator at `i` (CRLF, LF or CR), if any.
    fn newline(chars: &[char], i: &mut usize, line_no: &mut u32) {
        if *i < chars.len() && chars[*i] == '\r' {
            *i += 1;
            if *i < chars.len() && chars[*i] == '\n' {
                *i += 1;
            }
            *line_no = line_no.saturating_add(1);
        } else if *i < chars.len() && chars[*i] == '\n' {
            *i += 1;
            *line_no = line_no.saturating_add(1);
        }
    }
    let at_eol = |i: usize| i >= n || chars[i] == '\r' || chars[i] == '\n';

    while i < n {
        let phys_line = line_no;
        if pending.is_none() {
            let mut j = i;
            while j < n && is_blank(chars[j]) {
                j += 1;
            }
            if j < n && chars[j] == '[' {
                let mut k = j + 1;
                while !at_eol(k) && chars[k] != ']' {
                    k += 1;
                }
                if at_eol(k) {
                    return Err(Origin::new(file, phys_line)
                        .error("unterminated section name: `[` without `]`"));
                }
                let name: String = chars[j + 1..k].iter().collect();
                let name = name.trim_matches(is_blank).to_string();
                if name.is_empty() {
                    return Err(Origin::new(file, phys_line).error("empty section name `[]`"));
                }
                let mut r = k + 1;
                while !at_eol(r) && is_blank(chars[r]) {
                    r += 1;
                }
                if !at_eol(r) && chars[r] != ';' {
                    items
                        .push(RawItem::Warning(Origin::new(file, phys_line).warning(
                            format!("text after section header [{name}] ignored"),
                        )));
                }
                while !at_eol(r) {
                    r += 1;
                }
                in_strings = is_strings_section(&name);
                items.push(RawItem::Header {
                    name,
                    line: phys_line,
                });
                i = r;
                newline(&chars, &mut i, &mut line_no);
                continue;
            }
        }

        let (start_line, mut toks) = match pending.take() {
            Some(p) => (p.line, p.toks),
            None => (phys_line, Vec::new()),
        };
        let mut seg = String::new();
        let flush = |seg: &mut String, toks: &mut Vec<Tok>| {
            if !seg.is_empty() {
                toks.push(Tok::Seg {
                    quoted: false,
                    text: std::mem::take(seg),
                });
            }
        };
        while !at_eol(i) {
            let c = chars[i];
            match c {
                ';' => {
                    while !at_eol(i) {
                        i += 1;
                    }
                }
                '"' => {
                    flush(&mut seg, &mut toks);
                    let quote_line = line_no;
                    let mut buf = String::new();
                    i += 1;
                    loop {
                        if i >= n {
                            return Err(Origin::new(file, quote_line)
                                .error("unterminated quoted string: `\"` without closing `\"`"));
                        }
                        let q = chars[i];
                        if q == '"' {
                            if i + 1 < n && chars[i + 1] == '"' {
                                buf.push('"');
                                i += 2;
                            } else {
                                i += 1;
                                break;
                            }
                        } else if q == '\r' || q == '\n' {
                            if !in_strings {
                                return Err(Origin::new(file, quote_line).error(
                                    "unterminated quoted string: `\"` without closing `\"` on the same line",
                                ));
                            }
                            // [Strings] values may be quoted over several lines.
                            newline(&chars, &mut i, &mut line_no);
                            buf.push('\n');
                        } else {
                            buf.push(q);
                            i += 1;
                        }
                    }
                    toks.push(Tok::Seg {
                        quoted: true,
                        text: buf,
                    });
                }
                ',' => {
                    flush(&mut seg, &mut toks);
                    toks.push(Tok::Comma);
                    i += 1;
                }
                '=' => {
                    flush(&mut seg, &mut toks);
                    toks.push(Tok::Eq);
                    i += 1;
                }
                _ => {
                    seg.push(c);
                    i += 1;
                }
            }
        }
        flush(&mut seg, &mut toks);

        // A `\` ending the line (outside quotes, before any comment) continues it.
        let mut continued = false;
        if let Some(Tok::Seg {
            quoted: false,
            text,
        }) = toks.last_mut()
        {
            let trimmed = text.trim_end_matches(is_blank);
            if let Some(without) = trimmed.strip_suffix('\\') {
                let len = without.len();
                text.truncate(len);
                continued = true;
                if text.is_empty() {
                    toks.pop();
                }
            }
        }
        if continued {
            pending = Some(RawLine {
                line: start_line,
                toks,
            });
        } else if !is_blank_line(&toks) {
            items.push(RawItem::Line(RawLine {
                line: start_line,
                toks,
            }));
        }
        newline(&chars, &mut i, &mut line_no);
    }
    if let Some(p) = pending {
        if !is_blank_line(&p.toks) {
            items.push(RawItem::Line(p));
        }
    }
    Ok(items)
}

fn is_blank_line(toks: &[Tok]) -> bool {
    toks.iter()
        .all(|t| matches!(t, Tok::Seg { quoted: false, text } if text.chars().all(is_blank)))
}

// ---------------------------------------------------------------------------------------------
// Building: token lines -> sections of fields, with string substitution.

/// A field's segments before substitution.
type RawField = Vec<(bool, String)>;

/// Split a token list into the key (before the first `=`) and the value fields.
fn split_line(toks: Vec<Tok>) -> (Option<RawField>, Vec<RawField>) {
    let eq = toks.iter().position(|t| matches!(t, Tok::Eq));
    let (key_toks, value_toks) = match eq {
        Some(p) => {
            let mut toks = toks;
            let value = toks.split_off(p + 1);
            toks.pop();
            (Some(toks), value)
        }
        None => (None, toks),
    };
    let key = key_toks.map(|k| {
        k.into_iter()
            .map(|t| match t {
                Tok::Seg { quoted, text } => (quoted, text),
                Tok::Comma => (false, ",".to_string()),
                Tok::Eq => (false, "=".to_string()),
            })
            .collect::<RawField>()
    });
    let mut fields = Vec::new();
    if !is_blank_line(&value_toks) {
        let mut cur: RawField = Vec::new();
        for t in value_toks {
            match t {
                Tok::Seg { quoted, text } => cur.push((quoted, text)),
                Tok::Eq => cur.push((false, "=".to_string())),
                Tok::Comma => fields.push(std::mem::take(&mut cur)),
            }
        }
        fields.push(cur);
    }
    (key, fields)
}

/// Trim the unquoted ends of a field (after joining adjacent unquoted parts, which a line
/// continuation can leave apart).
fn trim_field(raw: RawField) -> RawField {
    let mut f: RawField = Vec::with_capacity(raw.len());
    for (quoted, text) in raw {
        match f.last_mut() {
            Some((false, prev)) if !quoted => prev.push_str(&text),
            _ => f.push((quoted, text)),
        }
    }
    if let Some((false, t)) = f.first_mut() {
        *t = t.trim_start_matches(is_blank).to_string();
    }
    if let Some((false, t)) = f.last_mut() {
        *t = t.trim_end_matches(is_blank).to_string();
    }
    f
}

/// A `[Strings]` value: the whole right-hand side as one string.
fn strings_value(fields: Vec<RawField>) -> String {
    let mut joined: RawField = Vec::new();
    for (i, f) in fields.into_iter().enumerate() {
        if i > 0 {
            joined.push((false, ",".to_string()));
        }
        joined.extend(f);
    }
    trim_field(joined).into_iter().map(|(_, t)| t).collect()
}

struct Substituter<'a> {
    strings: &'a HashMap<String, String>,
    warnings: &'a mut Vec<InfWarning>,
}

impl Substituter<'_> {
    fn field(&mut self, raw: RawField, origin: &Origin) -> Field {
        let raw = trim_field(raw);
        let quoted = raw.iter().any(|(q, _)| *q);
        let mut pieces = Vec::new();
        let mut buf = String::new();
        for (_, text) in &raw {
            self.substitute(text, origin, &mut buf, &mut pieces);
        }
        if !buf.is_empty() {
            pieces.push(Piece::Text(buf));
        }
        Field::from_pieces(pieces, quoted)
    }

    fn substitute(
        &mut self,
        text: &str,
        origin: &Origin,
        buf: &mut String,
        pieces: &mut Vec<Piece>,
    ) {
        let chars: Vec<char> = text.chars().collect();
        let mut i = 0;
        while i < chars.len() {
            let c = chars[i];
            if c != '%' {
                buf.push(c);
                i += 1;
                continue;
            }
            if chars.get(i + 1) == Some(&'%') {
                buf.push('%');
                i += 2;
                continue;
            }
            let Some(close) = chars[i + 1..]
                .iter()
                .position(|&c| c == '%')
                .map(|p| p + i + 1)
            else {
                buf.push('%');
                i += 1;
                continue;
            };
            let key: String = chars[i + 1..close].iter().collect();
            if key.chars().any(|c| c.is_whitespace()) {
                // "100% of ..." : a percent sign, not a token.
                buf.push('%');
                i += 1;
                continue;
            }
            if let Some(v) = self.strings.get(&key.to_lowercase()) {
                buf.push_str(v);
            } else if key.bytes().all(|b| b.is_ascii_digit()) {
                match key.parse::<i32>() {
                    Ok(n) => {
                        if !buf.is_empty() {
                            pieces.push(Piece::Text(std::mem::take(buf)));
                        }
                        pieces.push(Piece::DirId(DirId(n)));
                    }
                    Err(_) => {
                        self.warnings
                            .push(origin.warning(format!("DIRID %{key}% out of range")));
                        buf.push_str(&format!("%{key}%"));
                    }
                }
            } else {
                self.warnings
                    .push(origin.warning(format!("undefined string key %{key}% left as is")));
                buf.push_str(&format!("%{key}%"));
            }
            i = close + 1;
        }
    }
}

fn build(name: Arc<str>, encoding: Encoding, raw: Vec<RawItem>, options: ParseOptions) -> InfFile {
    let mut warnings = Vec::new();
    // Group raw lines by section.
    let mut sections: Vec<(String, u32, Vec<RawLine>)> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    let mut current: Option<usize> = None;
    for item in raw {
        match item {
            RawItem::Warning(w) => warnings.push(w),
            RawItem::Header { name: sec, line } => {
                let key = sec.to_lowercase();
                let idx = *index.entry(key).or_insert_with(|| {
                    sections.push((sec, line, Vec::new()));
                    sections.len() - 1
                });
                current = Some(idx);
            }
            RawItem::Line(l) => match current {
                Some(idx) => sections[idx].2.push(l),
                None => warnings
                    .push(Origin::new(&name, l.line).warning("line outside any section ignored")),
            },
        }
    }

    // The string table for the locale: most specific section first, first definition wins.
    let locale = options.locale;
    let chain = [
        format!("strings.{locale:04x}"),
        format!("strings.{:04x}", locale & 0x3ff),
        "strings".to_string(),
    ];
    let mut strings: HashMap<String, String> = HashMap::new();
    for sec_name in chain.iter() {
        let Some(&idx) = index.get(sec_name) else {
            continue;
        };
        for l in &sections[idx].2 {
            let (key, fields) = split_line(l.toks.clone());
            let Some(key) = key else { continue };
            let key = strings_value(vec![key]).to_lowercase();
            strings.entry(key).or_insert_with(|| strings_value(fields));
        }
    }

    let mut out_sections = Vec::with_capacity(sections.len());
    for (sec_name, line, lines) in sections {
        let strings_sec = is_strings_section(&sec_name);
        let mut out_lines = Vec::with_capacity(lines.len());
        for l in lines {
            let origin = Origin::new(&name, l.line);
            let (key, fields) = split_line(l.toks);
            if strings_sec {
                let Some(key) = key else {
                    warnings.push(
                        origin.warning(format!("line without `key =` in [{sec_name}] ignored")),
                    );
                    continue;
                };
                out_lines.push(Line {
                    key: Some(Field::literal(&strings_value(vec![key]))),
                    fields: vec![Field::literal(&strings_value(fields))],
                    origin,
                });
                continue;
            }
            let mut sub = Substituter {
                strings: &strings,
                warnings: &mut warnings,
            };
            let key = key.map(|k| sub.field(k, &origin));
            let fields = fields.into_iter().map(|f| sub.field(f, &origin)).collect();
            out_lines.push(Line {
                origin,
                key,
                fields,
            });
        }
        out_sections.push(Section {
            origin: Origin::new(&name, line),
            name: sec_name,
            lines: out_lines,
        });
    }
    InfFile {
        name,
        encoding,
        sections: out_sections,
        index,
        strings,
        warnings,
        options,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> InfFile {
        InfFile::parse("t.inf", s.as_bytes()).unwrap()
    }

    #[test]
    fn basics() {
        let f = parse("[A]\nk = \"x, y\" , z ; c\n a,,\"\"\"q\"\"\" \n[a]\nlast\n");
        let s = f.section("A").unwrap();
        assert_eq!(s.lines.len(), 3);
        assert_eq!(s.lines[0].key_text(), Some("k"));
        assert_eq!(s.lines[0].text(0), "x, y");
        assert_eq!(s.lines[0].text(1), "z");
        assert_eq!(s.lines[1].fields().len(), 3);
        assert_eq!(s.lines[1].text(2), "\"q\"");
        assert_eq!(s.lines[2].origin.line, 5);
    }

    #[test]
    fn continuation_and_strings() {
        let f = parse("[S]\nk = a,\\\n   b ; x\nd=%12%\\%n%%%\n[Strings]\nN = \"v;1\"\n");
        let s = f.section("s").unwrap();
        assert_eq!(s.lines[0].text(1), "b");
        assert_eq!(s.lines[0].origin.line, 2);
        assert_eq!(s.lines[1].text(0), "%12%\\v;1%");
        assert_eq!(
            s.lines[1].field(0).unwrap().pieces()[0],
            Piece::DirId(DirId(12))
        );
    }
}
