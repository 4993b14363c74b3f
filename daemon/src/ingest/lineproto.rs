//! InfluxDB line protocol, as Telegraf and InfluxDB clients write it.
//!
//! `measurement[,tag=value...] field=value[,field=value...] [timestamp]`
//!
//! Escapes: in measurements `\,` and `\ `; in tag keys, tag values and field keys `\,`, `\=` and
//! `\ `; string field values are double-quoted with `\"` and `\\`. Integers end in `i`, unsigned
//! integers in `u`; booleans are `t`, `true`, `f`, `false` (any case as InfluxDB accepts).
//! Lines starting with `#` and blank lines are skipped.

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

/// One parsed line. Names without escapes borrow from the line's text (no copy).
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

impl Precision {
    /// Accepts the v2 names (`ns`, `us`, `ms`, `s`) and the v1 names (`n`, `u`, `ms`, `s`, `m`,
    /// `h`).
    pub fn parse(s: &str) -> Result<Precision, String> {
        Ok(match s {
            "" | "ns" | "n" => Precision::Nanoseconds,
            "us" | "u" | "µ" | "µs" => Precision::Microseconds,
            "ms" => Precision::Milliseconds,
            "s" => Precision::Seconds,
            "m" => Precision::Minutes,
            "h" => Precision::Hours,
            other => return Err(format!("unknown precision `{other}` (use ns, us, ms or s)")),
        })
    }

    /// Converts a timestamp in this precision to milliseconds, refusing overflow.
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

struct Cursor<'a> {
    s: &'a str,
    b: &'a [u8],
    i: usize,
}

impl<'a> Cursor<'a> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    /// Reads an identifier up to an unescaped byte in `stops`, unescaping `escapable`.
    fn ident(&mut self, stops: &[u8], escapable: &[u8]) -> Result<Cow<'a, str>, String> {
        // Most identifiers have no escape: borrowed from the line, up to the first stop byte
        // (an ASCII byte, so the slice is whole characters).
        let start = self.i;
        let end = self.b[start..].iter().position(|c| *c == b'\\' || stops.contains(c)).map_or(self.b.len(), |n| start + n);
        if self.b.get(end) != Some(&b'\\') {
            self.i = end;
            return self.s.get(start..end).map(Cow::Borrowed).ok_or_else(|| "invalid UTF-8".to_string());
        }
        let mut out = Vec::new();
        while let Some(c) = self.peek() {
            if c == b'\\' {
                if let Some(&n) = self.b.get(self.i + 1) {
                    if escapable.contains(&n) || n == b'\\' {
                        out.push(n);
                        self.i += 2;
                        continue;
                    }
                }
                out.push(c);
                self.i += 1;
                continue;
            }
            if stops.contains(&c) {
                break;
            }
            out.push(c);
            self.i += 1;
        }
        String::from_utf8(out).map(Cow::Owned).map_err(|_| "invalid UTF-8".to_string())
    }

    fn expect(&mut self, c: u8, what: &str) -> Result<(), String> {
        if self.peek() == Some(c) {
            self.i += 1;
            Ok(())
        } else {
            Err(match self.peek() {
                None => format!("expected {what} at column {}, found end of line", self.i + 1),
                Some(f) => format!("expected {what} at column {}, found `{}`", self.i + 1, f as char),
            })
        }
    }
}

fn field_value(raw: &str) -> Result<FieldValue, String> {
    if raw.is_empty() {
        return Err("missing field value".into());
    }
    if let Some(n) = raw.strip_suffix('i') {
        return n.parse::<i64>().map(FieldValue::Int).map_err(|_| format!("invalid integer `{raw}`"));
    }
    if let Some(n) = raw.strip_suffix('u') {
        return n.parse::<u64>().map(FieldValue::UInt).map_err(|_| format!("invalid unsigned integer `{raw}`"));
    }
    match raw {
        "t" | "T" | "true" | "True" | "TRUE" => return Ok(FieldValue::Bool(true)),
        "f" | "F" | "false" | "False" | "FALSE" => return Ok(FieldValue::Bool(false)),
        _ => {}
    }
    let first = raw.as_bytes()[0];
    if !(first.is_ascii_digit() || matches!(first, b'-' | b'+' | b'.')) {
        return Err(format!("invalid number `{raw}`"));
    }
    match raw.parse::<f64>() {
        Ok(v) if v.is_finite() => Ok(FieldValue::Float(v)),
        Ok(_) => Err(format!("number `{raw}` is not finite")),
        Err(_) => Err(format!("invalid number `{raw}`")),
    }
}

/// Parses one line (without its newline). `Ok(None)` for blank and comment lines.
pub fn parse_line(line: &str) -> Result<Option<Line<'_>>, String> {
    let trimmed = line.trim_start();
    if trimmed.is_empty() || trimmed.starts_with('#') {
        return Ok(None);
    }
    let line = line.trim_end_matches(['\r', ' ', '\t']);
    let mut c = Cursor { s: line, b: line.as_bytes(), i: 0 };
    let measurement = c.ident(b", ", b", ")?;
    if measurement.is_empty() {
        return Err("missing measurement".into());
    }
    let mut tags = Vec::new();
    while c.peek() == Some(b',') {
        c.i += 1;
        let k = c.ident(b",= ", b",= ")?;
        if k.is_empty() {
            return Err(format!("missing tag key at column {}", c.i + 1));
        }
        c.expect(b'=', "`=` after tag key")?;
        let v = c.ident(b", ", b",= ")?;
        if v.is_empty() {
            return Err(format!("missing tag value for `{k}`"));
        }
        tags.push((k, v));
    }
    c.expect(b' ', "a space before the fields")?;
    let mut fields = Vec::new();
    loop {
        let k = c.ident(b",= ", b",= ")?;
        if k.is_empty() {
            return Err(format!("missing field key at column {}", c.i + 1));
        }
        c.expect(b'=', "`=` after field key")?;
        let v = if c.peek() == Some(b'"') {
            c.i += 1;
            let mut s = Vec::new();
            loop {
                match c.peek() {
                    None => return Err(format!("unterminated string value for field `{k}`")),
                    Some(b'\\') if matches!(c.b.get(c.i + 1), Some(b'"') | Some(b'\\')) => {
                        s.push(c.b[c.i + 1]);
                        c.i += 2;
                    }
                    Some(b'"') => {
                        c.i += 1;
                        break;
                    }
                    Some(ch) => {
                        s.push(ch);
                        c.i += 1;
                    }
                }
            }
            FieldValue::Str(String::from_utf8(s).map_err(|_| "invalid UTF-8".to_string())?)
        } else {
            let start = c.i;
            while let Some(ch) = c.peek() {
                if ch == b',' || ch == b' ' {
                    break;
                }
                c.i += 1;
            }
            field_value(&line[start..c.i]).map_err(|e| format!("field `{k}`: {e}"))?
        };
        fields.push((k, v));
        match c.peek() {
            Some(b',') => c.i += 1,
            _ => break,
        }
    }
    let timestamp = if c.peek() == Some(b' ') {
        c.i += 1;
        let rest = line[c.i..].trim();
        if rest.is_empty() {
            None
        } else {
            Some(rest.parse::<i64>().map_err(|_| format!("invalid timestamp `{rest}`"))?)
        }
    } else if c.i < line.len() {
        return Err(format!("unexpected `{}` at column {}", &line[c.i..].chars().next().unwrap_or(' '), c.i + 1));
    } else {
        None
    };
    Ok(Some(Line { measurement, tags, fields, timestamp }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_what_telegraf_writes() {
        let l = parse_line("energy,meter=b1-elec,site=x active_energy_import=1234.5,active_power=42i 1764288000000000000").unwrap().unwrap();
        assert_eq!(l.measurement, "energy");
        assert_eq!(l.tags, vec![("meter".into(), "b1-elec".into()), ("site".into(), "x".into())]);
        assert_eq!(
            l.fields,
            vec![("active_energy_import".into(), FieldValue::Float(1234.5)), ("active_power".into(), FieldValue::Int(42))]
        );
        assert_eq!(l.timestamp, Some(1_764_288_000_000_000_000));
    }

    #[test]
    fn escapes_strings_and_types() {
        let l = parse_line(r#"my\ meas,tag\,k=v\=1\ 2 s="a \"q\" b",u=7u,b=true,f=-1.5e3"#).unwrap().unwrap();
        assert_eq!(l.measurement, "my meas");
        assert_eq!(l.tags, vec![("tag,k".into(), "v=1 2".into())]);
        assert_eq!(l.fields[0], ("s".into(), FieldValue::Str("a \"q\" b".into())));
        assert_eq!(l.fields[1], ("u".into(), FieldValue::UInt(7)));
        assert_eq!(l.fields[2], ("b".into(), FieldValue::Bool(true)));
        assert_eq!(l.fields[3], ("f".into(), FieldValue::Float(-1500.0)));
        assert_eq!(l.timestamp, None);
    }

    #[test]
    fn skips_blank_and_comments() {
        assert_eq!(parse_line("").unwrap(), None);
        assert_eq!(parse_line("   ").unwrap(), None);
        assert_eq!(parse_line("# comment").unwrap(), None);
    }

    #[test]
    fn errors_say_what_is_wrong() {
        let cases = [
            ("m", "expected a space before the fields"),
            ("m,t=1", "expected a space before the fields"),
            ("m f=", "missing field value"),
            ("m f=abc", "invalid number `abc`"),
            ("m f=1x", "invalid number `1x`"),
            ("m f=12ii", "invalid integer"),
            ("m f=\"open", "unterminated string"),
            ("m f=1 notatime", "invalid timestamp `notatime`"),
            (",t=1 f=1", "missing measurement"),
            ("m,=1 f=1", "missing tag key"),
            ("m,t= f=1", "missing tag value"),
            ("m =1", "missing field key"),
            ("m f=1e999", "not finite"),
        ];
        for (line, expected) in cases {
            let e = parse_line(line).unwrap_err();
            assert!(e.contains(expected), "{line}: {e} (expected {expected})");
        }
    }

    #[test]
    fn precisions() {
        assert_eq!(Precision::parse("ns").unwrap().to_millis(1_500_000_000), Some(1500));
        assert_eq!(Precision::parse("u").unwrap().to_millis(1_500_000), Some(1500));
        assert_eq!(Precision::parse("s").unwrap().to_millis(2), Some(2000));
        assert_eq!(Precision::parse("s").unwrap().to_millis(i64::MAX), None);
        assert!(Precision::parse("x").is_err());
    }

    proptest! {
        #[test]
        fn never_panics(s in "\\PC{0,80}") {
            let _ = parse_line(&s);
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
