//! InfluxDB line protocol, read exactly as InfluxData's reference parser reads it.
//!
//! `measurement[,tag=value...] field=value[,field=value...] [timestamp]`
//!
//! The rules below are those of InfluxData's reference decoder, the Go package
//! `github.com/influxdata/line-protocol/v2/lineprotocol` (`decoder.go`, its grammar
//! `line-protocol.ebnf`, and its test corpus `lineprotocol/testdata/corpus.json`), and of the
//! line-protocol reference in InfluxDB's documentation ("Line protocol", section "Special
//! characters"). No code is taken from there; the rules are restated here:
//!
//! - Lines end at `\n` (an optional `\r` before it is part of the line end). Leading spaces
//!   (only the space character) are skipped; a line that is then empty, or starts with `#`, is
//!   skipped (a comment may not hold a control character; a tab there makes the line invalid).
//!   Any other control character (tab, `\v`, `\f`, a lone `\r`) where a line starts is an error.
//! - Measurement: any byte but `,`, space and control characters; `\,` and `\ ` are escapes.
//! - Tag keys, tag values and field keys: any byte but `,`, `=`, space and control characters;
//!   `\,`, `\=` and `\ ` are escapes.
//! - Everywhere, a backslash before any other byte is an ordinary character and stays. So
//!   `eas\\ t` is `eas\` followed by the escape `\ `: the tag value `eas\ t`.
//! - One or more spaces separate the tags from the fields and the fields from the timestamp;
//!   spaces after the timestamp (or the fields) are allowed. Nothing else is white space: a tab
//!   after a value makes the value invalid.
//! - Field values: a string in double quotes (any byte but an unescaped `"`, a line break
//!   included; escapes `\\`, `\"`, `\n`, `\r`, `\t`); booleans `t T true True TRUE f F false
//!   False FALSE`; integers `-?[0-9]+i`, unsigned integers `[0-9]+u`; floats with an optional
//!   `-`, digits with an optional fraction (`1`, `1.`, `.5`) and exponent (`1e5`, `1E-5`,
//!   `1e+5`). No leading `+`, no `inf` or `nan`, nothing out of range.
//! - Timestamp: `-?[0-9]+`, an i64, in the write's precision.
//! - Names and string values must be valid UTF-8; a line that holds invalid UTF-8 is invalid,
//!   and only that line.
//! - A tag key may appear once per line (InfluxDB refuses duplicate tags; the reference
//!   corpus counts such a line as an error).
//! - After an error, the line is abandoned up to the next `\n` after the point where the error
//!   was found; a string value that holds a line break therefore keeps its line together.

use std::borrow::Cow;

/// A field's value.
#[derive(Debug, Clone, PartialEq)]
pub enum FieldValue {
    Float(f64),
    Int(i64),
    UInt(u64),
    Bool(bool),
    Str(String),
}

/// One parsed line. Names without escapes borrow from the body (no copy).
#[derive(Debug, Clone, PartialEq)]
pub struct Line<'a> {
    pub measurement: Cow<'a, str>,
    pub tags: Vec<(Cow<'a, str>, Cow<'a, str>)>,
    pub fields: Vec<(Cow<'a, str>, FieldValue)>,
    pub timestamp: Option<i64>,
}

/// Timestamp precision of a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precision {
    Nanoseconds,
    Microseconds,
    Milliseconds,
    Seconds,
    Minutes,
    Hours,
}

/// A `precision` parameter that names no precision.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown precision `{0}` (use ns, us, ms, s, m or h; n and u as InfluxDB 1.x)")]
pub struct UnknownPrecision(pub String);

impl Precision {
    /// The same names on `/write` and `/api/v2/write`: InfluxDB 2's `ns`, `us`, `ms`, `s` and
    /// InfluxDB 1.x's `n`, `u` (and `µ`), `ms`, `s`, `m`, `h` (InfluxDB 1.x documents `m` and
    /// `h` on `/write`; InfluxDB 2 does not have them). Empty: nanoseconds, as both.
    pub fn parse(s: &str) -> Result<Precision, UnknownPrecision> {
        Ok(match s {
            "" | "ns" | "n" => Precision::Nanoseconds,
            "us" | "u" | "µ" | "µs" => Precision::Microseconds,
            "ms" => Precision::Milliseconds,
            "s" => Precision::Seconds,
            "m" => Precision::Minutes,
            "h" => Precision::Hours,
            other => return Err(UnknownPrecision(other.to_string())),
        })
    }

    /// Converts a timestamp in this precision to milliseconds, the store's resolution:
    /// nanoseconds and microseconds are truncated (towards the past), overflow is refused.
    pub fn to_millis(self, ts: i64) -> Option<i64> {
        match self {
            Precision::Nanoseconds => Some(ts.div_euclid(1_000_000)),
            Precision::Microseconds => Some(ts.div_euclid(1_000)),
            Precision::Milliseconds => Some(ts),
            Precision::Seconds => ts.checked_mul(1_000),
            Precision::Minutes => ts.checked_mul(60_000),
            Precision::Hours => ts.checked_mul(3_600_000),
        }
    }
}

/// Byte classes: which bytes may stand unescaped in which element.
const MEAS: u8 = 1;
/// Tag keys, tag values, field keys.
const KEY: u8 = 2;
/// Unquoted field values (numbers, booleans): all but `,`, space, `\r`, `\n`.
const VALUE: u8 = 4;
/// Comments: all but control characters.
const COMMENT: u8 = 8;

static CLASS: [u8; 256] = classes();

const fn classes() -> [u8; 256] {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        let c = i as u8;
        let control = c < 0x20 || c == 0x7f;
        let mut k = 0;
        if !control && c != b',' && c != b' ' {
            k |= MEAS;
            if c != b'=' {
                k |= KEY;
            }
        }
        if c != b',' && c != b' ' && c != b'\r' && c != b'\n' {
            k |= VALUE;
        }
        if !control {
            k |= COMMENT;
        }
        t[i] = k;
        i += 1;
    }
    t
}

/// Whether `\` + `c` is an escape in an element of class `kind` (measurement: `,` and space;
/// keys and tag values: `,`, `=` and space).
fn escapable(kind: u8, c: u8) -> bool {
    c == b',' || c == b' ' || (kind == KEY && c == b'=')
}

/// A byte as an error message shows it.
fn show(c: u8) -> String {
    match c {
        b'\t' => "a tab".into(),
        b'\r' => "`\\r`".into(),
        b'\n' => "a line break".into(),
        b' ' => "a space".into(),
        0x0b => "`\\v`".into(),
        0x0c => "`\\f`".into(),
        0x21..=0x7e => format!("`{}`", c as char),
        _ => format!("byte 0x{c:02x}"),
    }
}

/// Why the parser refused a line: what it found and at which column.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SyntaxError(pub String);

/// An error and where the parser stood when it found it (the line is abandoned from there up
/// to the next `\n`).
struct Fail {
    at: usize,
    msg: String,
}

struct Parser<'a> {
    b: &'a [u8],
    i: usize,
    /// Where the line's first physical line starts (for columns).
    line_start: usize,
    /// Line breaks inside string values of this line.
    breaks: usize,
}

impl<'a> Parser<'a> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    /// 1-based byte column of `at` in its physical line.
    fn col(&self, at: usize) -> usize {
        let from = self.b[self.line_start..at].iter().rposition(|&c| c == b'\n').map_or(self.line_start, |n| self.line_start + n + 1);
        at - from + 1
    }

    fn fail<T>(&self, msg: impl Into<String>) -> Result<T, Fail> {
        Err(Fail { at: self.i, msg: format!("{} (column {})", msg.into(), self.col(self.i)) })
    }

    fn skip_spaces(&mut self) {
        while self.peek() == Some(b' ') {
            self.i += 1;
        }
    }

    /// Consumes a line end (`\n`, `\r\n`, or `\r` or nothing at the end of the body).
    fn eol(&mut self) -> bool {
        match self.peek() {
            None => true,
            Some(b'\n') => {
                self.i += 1;
                true
            }
            Some(b'\r') => match self.b.get(self.i + 1) {
                None => {
                    self.i += 1;
                    true
                }
                Some(b'\n') => {
                    self.i += 2;
                    true
                }
                Some(_) => false,
            },
            Some(_) => false,
        }
    }

    /// Reads a measurement, key or tag value up to the first byte outside `kind` that is not
    /// escaped; borrowed from the body when it holds no escape.
    fn token(&mut self, kind: u8, what: &str) -> Result<Cow<'a, str>, Fail> {
        let b = self.b;
        let start = self.i;
        let mut i = start;
        let mut escaped = false;
        while let Some(&c) = b.get(i) {
            if c == b'\\' {
                match b.get(i + 1) {
                    Some(&n) if escapable(kind, n) => {
                        escaped = true;
                        i += 2;
                    }
                    // A backslash before anything else (or at the end) is itself.
                    _ => i += 1,
                }
                continue;
            }
            if CLASS[c as usize] & kind == 0 {
                break;
            }
            i += 1;
        }
        self.i = i;
        let raw = &b[start..i];
        let text = if escaped {
            let mut out = Vec::with_capacity(raw.len());
            let mut j = 0;
            while j < raw.len() {
                if raw[j] == b'\\' && raw.get(j + 1).is_some_and(|&n| escapable(kind, n)) {
                    out.push(raw[j + 1]);
                    j += 2;
                } else {
                    out.push(raw[j]);
                    j += 1;
                }
            }
            String::from_utf8(out).map(Cow::Owned).ok()
        } else {
            std::str::from_utf8(raw).map(Cow::Borrowed).ok()
        };
        match text {
            Some(t) => Ok(t),
            None => self.fail(format!("invalid UTF-8 in the {what} `{}`", String::from_utf8_lossy(raw))),
        }
    }

    /// Reads a quoted string value; `self.i` is at the opening quote.
    fn string(&mut self, key: &str) -> Result<FieldValue, Fail> {
        let b = self.b;
        let start = self.i + 1;
        let mut i = start;
        let mut escaped = false;
        loop {
            match b.get(i) {
                None => {
                    self.i = i;
                    return self.fail(format!("the string value of field `{key}` has no closing `\"`"));
                }
                Some(b'"') => break,
                Some(b'\\') => {
                    if matches!(b.get(i + 1), Some(b'\\' | b'"' | b'n' | b'r' | b't')) {
                        escaped = true;
                        i += 2;
                    } else {
                        i += 1;
                    }
                }
                Some(b'\n') => {
                    self.breaks += 1;
                    i += 1;
                }
                Some(_) => i += 1,
            }
        }
        self.i = i + 1;
        let raw = &b[start..i];
        let bytes = if escaped {
            let mut out = Vec::with_capacity(raw.len());
            let mut j = 0;
            while j < raw.len() {
                let c = raw[j];
                let unescaped = match (c, raw.get(j + 1)) {
                    (b'\\', Some(b'\\')) => Some(b'\\'),
                    (b'\\', Some(b'"')) => Some(b'"'),
                    (b'\\', Some(b'n')) => Some(b'\n'),
                    (b'\\', Some(b'r')) => Some(b'\r'),
                    (b'\\', Some(b't')) => Some(b'\t'),
                    _ => None,
                };
                match unescaped {
                    Some(u) => {
                        out.push(u);
                        j += 2;
                    }
                    None => {
                        out.push(c);
                        j += 1;
                    }
                }
            }
            out
        } else {
            raw.to_vec()
        };
        match String::from_utf8(bytes) {
            Ok(s) => Ok(FieldValue::Str(s)),
            Err(_) => self.fail(format!("invalid UTF-8 in the string value of field `{key}`")),
        }
    }

    /// Bytes of class `kind` from here.
    fn take(&mut self, kind: u8) -> &'a [u8] {
        let b = self.b;
        let start = self.i;
        let n = b[start..].iter().position(|&c| CLASS[c as usize] & kind == 0).unwrap_or(b.len() - start);
        self.i = start + n;
        &b[start..start + n]
    }

    /// One line from `self.i` (at its first byte that is not a space).
    fn line(&mut self) -> Result<Line<'a>, Fail> {
        let measurement = self.token(MEAS, "measurement")?;
        if measurement.is_empty() {
            return match self.peek() {
                None => self.fail("missing measurement"),
                Some(c) => self.fail(format!("invalid character {} at the start of the measurement", show(c))),
            };
        }
        let mut tags: Vec<(Cow<'a, str>, Cow<'a, str>)> = Vec::new();
        while self.peek() == Some(b',') {
            self.i += 1;
            let key = self.token(KEY, "tag key")?;
            if key.is_empty() {
                return match self.peek() {
                    None => self.fail("expected a tag key after `,`, found the end of the line"),
                    Some(b'=') => self.fail("empty tag key"),
                    Some(c) => self.fail(format!("expected a tag key after `,`, found {}", show(c))),
                };
            }
            match self.peek() {
                Some(b'=') => self.i += 1,
                None => return self.fail(format!("expected `=` after tag key `{key}`, found the end of the line")),
                Some(c) => return self.fail(format!("expected `=` after tag key `{key}`, found {}", show(c))),
            }
            let value = self.token(KEY, "tag value")?;
            if value.is_empty() {
                return self.fail(format!("missing value for tag key `{key}`"));
            }
            if tags.iter().any(|(k, _)| *k == key) {
                return self.fail(format!("duplicate tag key `{key}`: a tag may appear once per line"));
            }
            tags.push((key, value));
        }
        match self.peek() {
            Some(b' ') => self.skip_spaces(),
            None => return self.fail("no fields: a line is `measurement[,tag=value...] field=value[,field=value...] [timestamp]`"),
            Some(c) => {
                let after = match tags.last() {
                    Some((k, _)) => format!("the value of tag `{k}`"),
                    None => "the measurement".into(),
                };
                return self.fail(format!("unexpected {} after {after} (escape `,`, `=` and spaces in names with a backslash)", show(c)));
            }
        }
        let mut fields = Vec::new();
        loop {
            let key = self.token(KEY, "field key")?;
            if key.is_empty() {
                return match self.peek() {
                    None => self.fail("missing field key at the end of the line"),
                    Some(c) => self.fail(format!("invalid character {} at the start of a field key", show(c))),
                };
            }
            match self.peek() {
                Some(b'=') => self.i += 1,
                None => return self.fail(format!("expected `=` after field key `{key}`, found the end of the line")),
                Some(c) => return self.fail(format!("expected `=` after field key `{key}`, found {}", show(c))),
            }
            let value = match self.peek() {
                None | Some(b' ' | b',') => return self.fail(format!("missing value for field `{key}`")),
                Some(b'"') => self.string(&key)?,
                Some(b't' | b'T' | b'f' | b'F') => {
                    let raw = self.take(VALUE);
                    match raw {
                        b"t" | b"T" | b"true" | b"True" | b"TRUE" => FieldValue::Bool(true),
                        b"f" | b"F" | b"false" | b"False" | b"FALSE" => FieldValue::Bool(false),
                        _ => return self.fail(format!("field `{key}`: invalid boolean `{}`", String::from_utf8_lossy(raw))),
                    }
                }
                Some(b'-' | b'.' | b'0'..=b'9') => {
                    let raw = self.take(VALUE);
                    match number(raw) {
                        Ok(v) => v,
                        Err(e) => return self.fail(format!("field `{key}`: {e}")),
                    }
                }
                Some(_) => {
                    let raw = self.take(VALUE);
                    return self.fail(format!(
                        "field `{key}`: `{}` is no value (a number starts with a digit, `-` or `.`; a string is in double quotes)",
                        String::from_utf8_lossy(raw)
                    ));
                }
            };
            fields.push((key, value));
            match self.peek() {
                None => return Ok(Line { measurement, tags, fields, timestamp: None }),
                Some(b',') => self.i += 1,
                Some(b' ' | b'\r' | b'\n') => break,
                Some(c) => return self.fail(format!("unexpected {} after the value of field `{}`", show(c), fields[fields.len() - 1].0)),
            }
        }
        self.skip_spaces();
        if self.eol() {
            return Ok(Line { measurement, tags, fields, timestamp: None });
        }
        let raw = self.take_time();
        if self.peek().is_some_and(|c| !matches!(c, b' ' | b'\r' | b'\n')) {
            let rest = &self.b[self.i..];
            let rest = &rest[..rest.iter().position(|&c| c == b'\r' || c == b'\n').unwrap_or(rest.len())];
            return self.fail(format!("invalid timestamp `{}{}`", String::from_utf8_lossy(raw), String::from_utf8_lossy(rest)));
        }
        let timestamp = if raw.is_empty() {
            None
        } else {
            match std::str::from_utf8(raw).ok().and_then(|s| s.parse::<i64>().ok()) {
                Some(t) => Some(t),
                None => return self.fail(format!("invalid timestamp `{}` (a whole number of the write's precision, within 64 bits)", String::from_utf8_lossy(raw))),
            }
        };
        self.skip_spaces();
        if !self.eol() {
            return self.fail("unexpected text after the timestamp");
        }
        Ok(Line { measurement, tags, fields, timestamp })
    }

    /// `-` and digits from here.
    fn take_time(&mut self) -> &'a [u8] {
        let b = self.b;
        let start = self.i;
        let n = b[start..].iter().position(|c| !(c.is_ascii_digit() || *c == b'-')).unwrap_or(b.len() - start);
        self.i = start + n;
        &b[start..start + n]
    }
}

/// A number: `-?digits i` (integer), `digits u` (unsigned), else a float.
fn number(raw: &[u8]) -> Result<FieldValue, String> {
    let bad = |what: &str| format!("invalid {what} `{}`", String::from_utf8_lossy(raw));
    let s = std::str::from_utf8(raw).map_err(|_| bad("number"))?;
    // Rust's integer parsers take a leading `+`; the reference does not. The caller saw `-`,
    // `.` or a digit first, so a `+` can only follow a `-`, which both refuse.
    if let Some(n) = s.strip_suffix('i') {
        return n.parse::<i64>().map(FieldValue::Int).map_err(|_| bad("integer (`-?[0-9]+i`, 64 bits)"));
    }
    if let Some(n) = s.strip_suffix('u') {
        return n.parse::<u64>().map(FieldValue::UInt).map_err(|_| bad("unsigned integer (`[0-9]+u`, 64 bits)"));
    }
    // Rust's float parser also takes `inf`, `infinity` and `nan` (after a `-` here): they parse
    // to non-finite values, refused below as the reference refuses them.
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() => Ok(FieldValue::Float(v)),
        Ok(_) => Err(format!("number `{s}` is not finite")),
        Err(_) => Err(bad("number")),
    }
}

/// One line of a body, as [`entries`] gives it.
#[derive(Debug)]
pub struct Entry<'a> {
    /// 1-based number of the physical line it starts on.
    pub line: usize,
    /// Its bytes, without the line end (several physical lines when a string value holds a
    /// line break).
    pub text: &'a [u8],
    pub parsed: Result<Line<'a>, SyntaxError>,
}

/// The lines of a body, blank lines and comments skipped.
pub struct Entries<'a> {
    b: &'a [u8],
    i: usize,
    line: usize,
}

/// Iterates over the lines of a line-protocol body; each is a point or an error.
pub fn entries(body: &[u8]) -> Entries<'_> {
    Entries { b: body, i: 0, line: 1 }
}

impl<'a> Entries<'a> {
    /// Abandons the line from `at` to its end; returns the end of its text.
    fn recover(&mut self, at: usize) -> usize {
        match self.b[at..].iter().position(|&c| c == b'\n') {
            Some(n) => {
                self.i = at + n + 1;
                self.line += 1;
                at + n
            }
            None => {
                self.i = self.b.len();
                self.b.len()
            }
        }
    }
}

impl<'a> Iterator for Entries<'a> {
    type Item = Entry<'a>;

    fn next(&mut self) -> Option<Entry<'a>> {
        let b = self.b;
        let line_start = loop {
            let line_start = self.i;
            while b.get(self.i) == Some(&b' ') {
                self.i += 1;
            }
            match b.get(self.i) {
                None => return None,
                Some(b'\n') => {
                    self.i += 1;
                    self.line += 1;
                }
                Some(b'\r') if b.get(self.i + 1) == Some(&b'\n') => {
                    self.i += 2;
                    self.line += 1;
                }
                Some(b'\r') if self.i + 1 == b.len() => {
                    self.i += 1;
                    return None;
                }
                Some(b'#') => {
                    let n = b[self.i..].iter().position(|&c| CLASS[c as usize] & COMMENT == 0).unwrap_or(b.len() - self.i);
                    let mut p = Parser { b, i: self.i + n, line_start, breaks: 0 };
                    if p.eol() {
                        if b[self.i + n..p.i].contains(&b'\n') {
                            self.line += 1;
                        }
                        self.i = p.i;
                        continue;
                    }
                    let msg = format!("a comment may not hold {} (column {})", show(b[p.i]), p.col(p.i));
                    let line = self.line;
                    let end = self.recover(p.i);
                    return Some(Entry { line, text: &b[line_start..end], parsed: Err(SyntaxError(msg)) });
                }
                Some(_) => break line_start,
            }
        };
        let line = self.line;
        let mut p = Parser { b, i: self.i, line_start, breaks: 0 };
        let parsed = p.line();
        self.line += p.breaks;
        match parsed {
            Ok(l) => {
                let mut end = p.i;
                if end > line_start && b[end - 1] == b'\n' {
                    self.line += 1;
                    end -= 1;
                }
                if end > line_start && b[end - 1] == b'\r' {
                    end -= 1;
                }
                self.i = p.i;
                Some(Entry { line, text: &b[line_start..end], parsed: Ok(l) })
            }
            Err(f) => {
                let end = self.recover(f.at);
                let end = if end > line_start && b[end - 1] == b'\r' { end - 1 } else { end };
                Some(Entry { line, text: &b[line_start..end], parsed: Err(SyntaxError(f.msg)) })
            }
        }
    }
}

/// Parses one line (without its line end). `Ok(None)` for a blank or comment line; an error
/// if the text holds more than one line.
pub fn parse_line(line: &str) -> Result<Option<Line<'_>>, SyntaxError> {
    let mut it = entries(line.as_bytes());
    let Some(first) = it.next() else { return Ok(None) };
    if it.next().is_some() {
        return Err(SyntaxError("more than one line".into()));
    }
    first.parsed.map(Some)
}

/// Appends `s` with a backslash before each byte of `special`. `None` when the result would not
/// read back as `s`: empty, a control character, or a trailing backslash (line protocol has no
/// way to write one before a separator).
fn push_escaped(out: &mut String, s: &str, special: &[u8]) -> Option<()> {
    if s.is_empty() || s.ends_with('\\') || s.bytes().any(|c| c < 0x20 || c == 0x7f) {
        return None;
    }
    for c in s.chars() {
        if c.is_ascii() && special.contains(&(c as u8)) {
            out.push('\\');
        }
        out.push(c);
    }
    Some(())
}

impl Line<'_> {
    /// The line in line protocol, escaped so that it parses back to the same line; `None` if
    /// some name cannot be written (see [`push_escaped`]), or the measurement starts with `#`.
    pub fn to_text(&self) -> Option<String> {
        let mut out = String::new();
        if self.measurement.starts_with('#') || self.fields.is_empty() {
            return None;
        }
        push_escaped(&mut out, &self.measurement, b", ")?;
        for (k, v) in &self.tags {
            out.push(',');
            push_escaped(&mut out, k, b",= ")?;
            out.push('=');
            push_escaped(&mut out, v, b",= ")?;
        }
        for (i, (k, v)) in self.fields.iter().enumerate() {
            out.push(if i == 0 { ' ' } else { ',' });
            push_escaped(&mut out, k, b",= ")?;
            out.push('=');
            match v {
                FieldValue::Float(f) if f.is_finite() => out.push_str(&format!("{f:?}")),
                FieldValue::Float(_) => return None,
                FieldValue::Int(n) => out.push_str(&format!("{n}i")),
                FieldValue::UInt(n) => out.push_str(&format!("{n}u")),
                FieldValue::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
                FieldValue::Str(s) => {
                    out.push('"');
                    for c in s.chars() {
                        match c {
                            '\\' => out.push_str("\\\\"),
                            '"' => out.push_str("\\\""),
                            '\n' => out.push_str("\\n"),
                            '\r' => out.push_str("\\r"),
                            c => out.push(c),
                        }
                    }
                    out.push('"');
                }
            }
        }
        if let Some(t) = self.timestamp {
            out.push_str(&format!(" {t}"));
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use FieldValue::{Bool, Float, Int, Str, UInt};

    /// What a line should give: a point, or an error whose message holds the text.
    #[derive(Debug)]
    enum Want {
        Point(&'static str, Vec<(&'static str, &'static str)>, Vec<(&'static str, FieldValue)>, Option<i64>),
        Error(&'static str),
    }
    use Want::{Error, Point};

    /// A body and what each of its lines gives, with the line's number.
    type Case = (&'static [u8], Vec<(usize, Want)>);

    fn pt(m: &'static str, tags: &[(&'static str, &'static str)], fields: Vec<(&'static str, FieldValue)>, ts: Option<i64>) -> Want {
        Point(m, tags.to_vec(), fields, ts)
    }

    fn check(body: &[u8], want: &[(usize, Want)]) {
        let got: Vec<Entry> = entries(body).collect();
        let shown = String::from_utf8_lossy(body);
        assert_eq!(got.len(), want.len(), "{shown:?}: {got:?}");
        for (g, (line, w)) in got.iter().zip(want) {
            assert_eq!(g.line, *line, "{shown:?}: line of {g:?}");
            match (w, &g.parsed) {
                (Point(m, tags, fields, ts), Ok(l)) => {
                    assert_eq!(l.measurement, *m, "{shown:?}");
                    let t: Vec<(&str, &str)> = l.tags.iter().map(|(k, v)| (&**k, &**v)).collect();
                    assert_eq!(&t, tags, "{shown:?}");
                    let f: Vec<(&str, FieldValue)> = l.fields.iter().map(|(k, v)| (&**k, v.clone())).collect();
                    assert_eq!(&f, fields, "{shown:?}");
                    assert_eq!(l.timestamp, *ts, "{shown:?}");
                }
                (Error(e), Err(SyntaxError(msg))) => assert!(msg.contains(e), "{shown:?}: `{msg}` should say `{e}`"),
                (w, g) => panic!("{shown:?}: want {w:?}, got {g:?}"),
            }
        }
    }

    /// Every case with the result InfluxData's reference decoder gives (line-protocol
    /// `lineprotocol/decoder.go` and its grammar `line-protocol.ebnf`; InfluxDB's "Line protocol"
    /// reference, sections "Data types and format", "Quotes" and "Special characters"). Bodies
    /// of one line unless they show their line ends.
    #[test]
    fn the_reference_rules_element_by_element() {
        let f1 = || vec![("f", Float(1.0))];
        let cases: Vec<Case> = vec![
            // Escapes per element: measurement `\,` `\ ` (and `=` is plain there); keys and tag
            // values `\,` `\=` `\ `; a backslash before anything else stays.
            (br"m\ e\,a\=s,t=1 f=1", vec![(1, pt(r"m e,a\=s", &[("t", "1")], f1(), None))]),
            (b"m=x f=1", vec![(1, pt("m=x", &[], f1(), None))]),
            (br#"m\"x f=1"#, vec![(1, pt(r#"m\"x"#, &[], f1(), None))]),
            (br"m,t\ k\,e\=y=v f=1", vec![(1, pt("m", &[("t k,e=y", "v")], f1(), None))]),
            (br"m,t=v\ a\,l\=ue f=1", vec![(1, pt("m", &[("t", "v a,l=ue")], f1(), None))]),
            (br"m f\ k\,e\=y=1", vec![(1, pt("m", &[], vec![("f k,e=y", Float(1.0))], None))]),
            // InfluxDB's own test: `\\ ` is a backslash, then the escaped space.
            (br"cpu,regions=eas\\ t value=1.0", vec![(1, pt("cpu", &[("regions", r"eas\ t")], vec![("value", Float(1.0))], None))]),
            // What influxdb-client (v2) writes for the tag value `C:\temp\ x`.
            (br"m,path=C:\temp\\ x f=1", vec![(1, pt("m", &[("path", r"C:\temp\ x")], f1(), None))]),
            (br"m,t=a\b\\c f=1", vec![(1, pt("m", &[("t", r"a\b\\c")], f1(), None))]),
            (b"m\xc3\xa9,\xc3\xbc=\xc3\xb6 f=1", vec![(1, pt("mé", &[("ü", "ö")], f1(), None))]),
            // `loc=a=b`: an `=` must be escaped in a tag value.
            (b"m,loc=a=b f=1", vec![(1, Error("unexpected `=` after the value of tag `loc`"))]),
            (br"m,loc=a\=b f=1", vec![(1, pt("m", &[("loc", "a=b")], f1(), None))]),
            // Quoting: strings in double quotes with `\"`, `\\`, `\n`, `\r`, `\t`; `,` `=` and
            // spaces plain; other backslashes stay.
            (br#"m s="a \"q\" \\ b",t="x,y z=1",u="",v="a\,b""#, vec![(1, pt("m", &[], vec![("s", Str(r#"a "q" \ b"#.into())), ("t", Str("x,y z=1".into())), ("u", Str(String::new())), ("v", Str(r"a\,b".into()))], None))]),
            (br#"m s="l1\nl2\tx\r""#, vec![(1, pt("m", &[], vec![("s", Str("l1\nl2\tx\r".into()))], None))]),
            (b"m s=\"open", vec![(1, Error("no closing `\"`"))]),
            (b"m s=abc", vec![(1, Error("`abc` is no value"))]),
            // A literal line break inside a string value: one line, not two.
            (b"e,meter=m1 s=\"a\ne,meter=m1 active_power=2\" 1\nm f=1", vec![(1, pt("e", &[("meter", "m1")], vec![("s", Str("a\ne,meter=m1 active_power=2".into()))], Some(1))), (3, pt("m", &[], f1(), None))]),
            (b"m s=\"a\nb\" bad\nm f=1", vec![(1, Error("invalid timestamp `bad`")), (3, pt("m", &[], f1(), None))]),
            // An unterminated string runs to the end of the body: one bad line.
            (b"m s=\"open\nm f=1\nm f=2", vec![(1, Error("no closing"))]),
            // White space: one or more spaces between the sections, spaces before the line and
            // after it; nothing else is white space.
            (b"m  f=1", vec![(1, pt("m", &[], f1(), None))]),
            (b"   m,t=1   f=1,g=2    2   ", vec![(1, pt("m", &[("t", "1")], vec![("f", Float(1.0)), ("g", Float(2.0))], Some(2)))]),
            (b"\tm f=1", vec![(1, Error("invalid character a tab at the start of the measurement"))]),
            (b"m\tf=1", vec![(1, Error("unexpected a tab after the measurement"))]),
            (b"m f=1\t", vec![(1, Error("invalid number `1\t`"))]),
            (b"m f=1 5\t", vec![(1, Error("invalid timestamp"))]),
            (b"m f=1, g=2", vec![(1, Error("invalid character a space at the start of a field key"))]),
            (b"m, f=1", vec![(1, Error("expected a tag key after `,`, found a space"))]),
            (b"\t", vec![(1, Error("a tab"))]),
            (b"\x0b", vec![(1, Error("`\\v`"))]),
            (b"\x0c\n", vec![(1, Error("`\\f`"))]),
            (b"   ", vec![]),
            // Signs: `-` only, never `+` (but `+` in an exponent).
            (b"m a=-1,b=-1i,c=-0.5,d=-.5", vec![(1, pt("m", &[], vec![("a", Float(-1.0)), ("b", Int(-1)), ("c", Float(-0.5)), ("d", Float(-0.5))], None))]),
            (b"m f=+1", vec![(1, Error("`+1` is no value"))]),
            (b"m f=+1i", vec![(1, Error("`+1i` is no value"))]),
            (b"m f=-+1", vec![(1, Error("invalid number"))]),
            (b"m f=-1u", vec![(1, Error("invalid unsigned integer"))]),
            (b"m f=-", vec![(1, Error("invalid number `-`"))]),
            (b"m f=1 -5", vec![(1, pt("m", &[], f1(), Some(-5)))]),
            (b"m f=1 +5", vec![(1, Error("invalid timestamp `+5`"))]),
            // Integer `i` and unsigned `u` suffixes, to the limits of 64 bits.
            (b"m a=1i,b=1u,c=9223372036854775807i,d=-9223372036854775808i,e=18446744073709551615u", vec![(1, pt("m", &[], vec![("a", Int(1)), ("b", UInt(1)), ("c", Int(i64::MAX)), ("d", Int(i64::MIN)), ("e", UInt(u64::MAX))], None))]),
            (b"m f=9223372036854775808i", vec![(1, Error("invalid integer"))]),
            (b"m f=18446744073709551616u", vec![(1, Error("invalid unsigned integer"))]),
            (b"m f=1.5i", vec![(1, Error("invalid integer"))]),
            (b"m f=1I", vec![(1, Error("invalid number `1I`"))]),
            (b"m f=1iu", vec![(1, Error("invalid unsigned integer"))]),
            // Floats: fraction and exponent forms; never infinite or NaN.
            (b"m a=1e5,b=1E5,c=1e+5,d=1e-5,e=-1.5E3,f=.5,g=1.,h=.5e1,i=0.1", vec![(1, pt("m", &[], vec![("a", Float(1e5)), ("b", Float(1e5)), ("c", Float(1e5)), ("d", Float(1e-5)), ("e", Float(-1500.0)), ("f", Float(0.5)), ("g", Float(1.0)), ("h", Float(5.0)), ("i", Float(0.1))], None))]),
            (b"m f=1e", vec![(1, Error("invalid number `1e`"))]),
            (b"m f=e5", vec![(1, Error("`e5` is no value"))]),
            (b"m f=.", vec![(1, Error("invalid number `.`"))]),
            (b"m f=1e999", vec![(1, Error("not finite"))]),
            (b"m f=-inf", vec![(1, Error("not finite"))]),
            (b"m f=inf", vec![(1, Error("`inf` is no value"))]),
            (b"m f=NaN", vec![(1, Error("`NaN` is no value"))]),
            (b"m f=1_000", vec![(1, Error("invalid number"))]),
            // Booleans: the ten spellings.
            (b"m a=t,b=T,c=true,d=True,e=TRUE,f=f,g=F,h=false,i=False,j=FALSE", vec![(1, pt("m", &[], vec![("a", Bool(true)), ("b", Bool(true)), ("c", Bool(true)), ("d", Bool(true)), ("e", Bool(true)), ("f", Bool(false)), ("g", Bool(false)), ("h", Bool(false)), ("i", Bool(false)), ("j", Bool(false))], None))]),
            (b"m f=tRUE", vec![(1, Error("invalid boolean `tRUE`"))]),
            // Timestamps: `-?[0-9]+` within 64 bits, then only spaces.
            (b"m f=1 1764288000000000000", vec![(1, pt("m", &[], f1(), Some(1_764_288_000_000_000_000)))]),
            (b"m f=1 9223372036854775808", vec![(1, Error("invalid timestamp `9223372036854775808`"))]),
            (b"m f=1 12a", vec![(1, Error("invalid timestamp `12a`"))]),
            (b"m f=1 1 2", vec![(1, Error("unexpected text after the timestamp"))]),
            (b"m f=1 1-2", vec![(1, Error("invalid timestamp `1-2`"))]),
            // Comments and blank lines; a comment may not hold a control character.
            (b"# c\n\n   \n  # indented\nm f=1\n#\tbad\nm f=2\n# \xff is not checked", vec![(5, pt("m", &[], f1(), None)), (6, Error("a comment may not hold a tab")), (7, pt("m", &[], vec![("f", Float(2.0))], None))]),
            // CRLF line ends; a lone `\r` is no line end (except at the very end).
            (b"m f=1\r\nm f=2 5\r\n\r\nm,t=x f=3 \r\n", vec![(1, pt("m", &[], f1(), None)), (2, pt("m", &[], vec![("f", Float(2.0))], Some(5))), (4, pt("m", &[("t", "x")], vec![("f", Float(3.0))], None))]),
            (b"m f=1\rm f=2\nm f=3\r", vec![(1, Error("unexpected text after the timestamp")), (2, pt("m", &[], vec![("f", Float(3.0))], None))]),
            (b"m,t=x\r\nm f=1", vec![(1, Error("unexpected `\\r` after the value of tag `t`")), (2, pt("m", &[], f1(), None))]),
            // Duplicate tag keys are refused; duplicate field keys are not.
            (b"m,meter=a,meter=b f=1", vec![(1, Error("duplicate tag key `meter`"))]),
            (b"m,a=1,b=1,a=1 f=1", vec![(1, Error("duplicate tag key `a`"))]),
            (br"m,a\ b=1,a\ b=2 f=1", vec![(1, Error("duplicate tag key `a b`"))]),
            (b"m f=1,f=2", vec![(1, pt("m", &[], vec![("f", Float(1.0)), ("f", Float(2.0))], None))]),
            // Invalid UTF-8 in each element refuses that line only.
            (b"m\xff f=1", vec![(1, Error("invalid UTF-8 in the measurement"))]),
            (b"m,\xff=1 f=1", vec![(1, Error("invalid UTF-8 in the tag key"))]),
            (b"m,t=\xc3 f=1", vec![(1, Error("invalid UTF-8 in the tag value"))]),
            (b"m \xff=1", vec![(1, Error("invalid UTF-8 in the field key"))]),
            (b"m s=\"\xff\xfe\"", vec![(1, Error("invalid UTF-8 in the string value of field `s`"))]),
            (b"m f=1\xff", vec![(1, Error("invalid number"))]),
            (b"m f=1 \xff", vec![(1, Error("invalid timestamp"))]),
            (b"m f=1\nm,t=\xff f=2\nm f=3", vec![(1, pt("m", &[], f1(), None)), (2, Error("invalid UTF-8 in the tag value")), (3, pt("m", &[], vec![("f", Float(3.0))], None))]),
            // Missing parts.
            (b"m", vec![(1, Error("no fields"))]),
            (b"m,t=1", vec![(1, Error("no fields"))]),
            (b"m f=", vec![(1, Error("missing value for field `f`"))]),
            (b"m f", vec![(1, Error("expected `=` after field key `f`"))]),
            (b",t=1 f=1", vec![(1, Error("invalid character `,` at the start of the measurement"))]),
            (b"m,=1 f=1", vec![(1, Error("empty tag key"))]),
            (b"m,t f=1", vec![(1, Error("expected `=` after tag key `t`, found a space"))]),
            (b"m,t= f=1", vec![(1, Error("missing value for tag key `t`"))]),
            (b"m =1", vec![(1, Error("invalid character `=` at the start of a field key"))]),
            (b"m f=1,", vec![(1, Error("missing field key"))]),
            (b"m f=\"a\"x", vec![(1, Error("unexpected `x` after the value of field `f`"))]),
        ];
        for (body, want) in &cases {
            check(body, want);
        }
    }

    #[test]
    fn every_precision_to_milliseconds() {
        // (precision parameter, timestamp, milliseconds). 1_764_288_000 s is 2025-11-28T00:00Z,
        // = 29_404_800 min (/60) = 490_080 h (/3600). Nanoseconds and microseconds are cut to
        // the millisecond towards the past: ...000_001_000 ns is 1 µs after the whole
        // millisecond and gives that millisecond; -1 ns gives -1 ms.
        let cases: &[(&str, i64, Option<i64>)] = &[
            ("", 1_764_288_000_123_456_789, Some(1_764_288_000_123)),
            ("ns", 1_764_288_000_123_456_789, Some(1_764_288_000_123)),
            ("n", 1_764_288_000_000_001_000, Some(1_764_288_000_000)),
            ("ns", -1, Some(-1)),
            ("us", 1_764_288_000_123_456, Some(1_764_288_000_123)),
            ("u", 1_764_288_000_000_001, Some(1_764_288_000_000)),
            ("µ", 1_500_000, Some(1_500)),
            ("ms", 1_764_288_000_123, Some(1_764_288_000_123)),
            ("s", 1_764_288_000, Some(1_764_288_000_000)),
            ("s", i64::MAX, None),
            // m and h: InfluxDB 1.x's /write precisions, taken on both endpoints.
            ("m", 29_404_800, Some(1_764_288_000_000)),
            ("h", 490_080, Some(1_764_288_000_000)),
            ("h", i64::MAX / 1000, None),
        ];
        for &(name, ts, want) in cases {
            assert_eq!(Precision::parse(name).unwrap().to_millis(ts), want, "precision {name:?}, {ts}");
        }
        for bad in ["x", "sec", "NS", "rfc3339"] {
            let e = Precision::parse(bad).unwrap_err().to_string();
            assert!(e.contains(&format!("unknown precision `{bad}`")), "{e}");
        }
    }

    #[test]
    fn parse_line_takes_one_line() {
        assert_eq!(parse_line("").unwrap(), None);
        assert_eq!(parse_line("# comment").unwrap(), None);
        assert!(parse_line("m f=1").unwrap().is_some());
        assert_eq!(parse_line("m f=1\nm f=2").unwrap_err().to_string(), "more than one line");
    }

    #[test]
    fn what_is_read_writes_back_to_the_same_line() {
        let bodies: &[&[u8]] = &[br#"m\ e\,a\=s,t\ k=v\=1\\ x f\,k=1.5,s="a\\\"q\n",i=-3i,u=7u,b=t 1764288000000000000"#, br"cpu,regions=eas\\ t value=1.0", b"m\xc3\xa9 f=1e21,g=-0.0,h=1e-7"];
        for body in bodies {
            let l = entries(body).next().unwrap().parsed.unwrap();
            let text = l.to_text().unwrap();
            let again = parse_line(&text).unwrap().unwrap();
            assert_eq!(again, l, "{text}");
        }
        // A name that line protocol cannot carry.
        let l = Line { measurement: r"m\".into(), tags: vec![], fields: vec![("f".into(), Float(1.0))], timestamp: None };
        assert_eq!(l.to_text(), None);
    }

    proptest! {
        #[test]
        fn never_panics(s in proptest::collection::vec(any::<u8>(), 0..120)) {
            for e in entries(&s) {
                if let Ok(l) = e.parsed {
                    let text = l.to_text().expect("an accepted line can be written back");
                    prop_assert_eq!(parse_line(&text).unwrap().unwrap(), l);
                }
            }
        }

        #[test]
        fn round_trips_simple_lines(
            meas in "[a-z][a-z0-9_]{0,10}",
            meter in "[a-z0-9-]{1,10}",
            v in -1e9f64..1e9,
            ts in 0i64..2_000_000_000_000_000_000,
        ) {
            let line = format!("{meas},meter={meter} active_power={v:?} {ts}");
            let l = parse_line(&line).unwrap().unwrap();
            prop_assert_eq!(l.measurement, meas);
            prop_assert_eq!(&l.tags[0].1, &meter);
            prop_assert_eq!(l.fields[0].1.clone(), FieldValue::Float(v));
            prop_assert_eq!(l.timestamp, Some(ts));
        }
    }
}
