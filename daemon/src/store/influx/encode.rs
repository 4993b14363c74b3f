//! Line protocol as written to InfluxDB: one line per (meter, time) with every quantity read at
//! that time as a field, the meter's registry attributes as tags, timestamps in milliseconds.
//!
//! ```text
//! energy,meter=bldg-a-elec,building=bldg-a,carrier=electricity active_energy_import=1234.5,active_power=41.2 1764288000000
//! ```

use energy_wire::Quantity;

/// Escapes a measurement name: commas and spaces (and the escape character itself).
pub fn escape_measurement(s: &str) -> String {
    escape(s, &[',', ' '])
}

/// Escapes a tag key or tag value: commas, equals signs and spaces.
pub fn escape_tag(s: &str) -> String {
    escape(s, &[',', '=', ' '])
}

fn escape(s: &str, special: &[char]) -> String {
    let mut out = String::with_capacity(s.len());
    // A backslash escapes only the element's special characters (InfluxData's reference
    // parser; `eas\\ t` is the tag value `eas\ t`): any other backslash is written as it is,
    // and one before a special character stays a backslash because the escape that follows it
    // starts with another backslash (`a\,` is written `a\\,`).
    for c in s.chars() {
        if special.contains(&c) {
            out.push('\\');
        }
        // Line protocol has no escape for line breaks: a tag value cannot hold one.
        out.push(if c == '\n' || c == '\r' { ' ' } else { c });
    }
    out
}

/// The `,key=value` tag suffix for one meter (keys in sorted order, as InfluxDB stores them;
/// empty values are left out, line protocol has no empty tag value).
pub fn tag_suffix(tags: &[(&str, &str)]) -> String {
    let mut t: Vec<&(&str, &str)> = tags.iter().filter(|(_, v)| !v.is_empty()).collect();
    t.sort_by_key(|(k, _)| *k);
    t.iter().map(|(k, v)| format!(",{}={}", escape_tag(k), escape_tag(v))).collect()
}

/// Builds line protocol, one line per (meter, time): consecutive points of one meter and time
/// become fields of one line.
#[derive(Debug, Default)]
pub struct LineBuilder {
    /// Escaped measurement name.
    measurement: String,
    out: String,
    lines: u64,
    current: Option<(String, i64)>,
    fields: String,
}

impl LineBuilder {
    pub fn new(measurement: &str) -> LineBuilder {
        LineBuilder { measurement: escape_measurement(measurement), ..Default::default() }
    }

    /// Adds one point; `tags` is the meter's tag suffix from [`tag_suffix`] (without `meter`).
    pub fn add(&mut self, meter: &str, tags: &str, q: Quantity, ts: i64, value: f64) {
        let same = self.current.as_ref().is_some_and(|(m, t)| m == meter && *t == ts);
        if !same {
            self.finish_line();
            self.out.push_str(&self.measurement);
            self.out.push_str(",meter=");
            self.out.push_str(&escape_tag(meter));
            self.out.push_str(tags);
            self.current = Some((meter.to_string(), ts));
        } else {
            self.fields.push(',');
        }
        // Quantity names are plain identifiers; `{}` of an f64 is exact and never uses an
        // exponent, and a number without the `i` suffix is a float in line protocol.
        self.fields.push_str(q.name());
        self.fields.push('=');
        self.fields.push_str(&format!("{value}"));
    }

    fn finish_line(&mut self) {
        if let Some((_, ts)) = self.current.take() {
            self.out.push(' ');
            self.out.push_str(&self.fields);
            self.out.push(' ');
            self.out.push_str(&ts.to_string());
            self.out.push('\n');
            self.fields.clear();
            self.lines += 1;
        }
    }

    pub fn is_empty(&self) -> bool {
        self.current.is_none() && self.out.is_empty()
    }

    /// The text so far and its number of lines; the builder is empty afterwards.
    pub fn take(&mut self) -> (String, u64) {
        self.finish_line();
        let lines = std::mem::take(&mut self.lines);
        (std::mem::take(&mut self.out), lines)
    }

    /// Drops everything (the transaction it belonged to was rolled back).
    pub fn clear(&mut self) {
        self.current = None;
        self.fields.clear();
        self.out.clear();
        self.lines = 0;
    }
}

/// Splits line protocol into pieces of at most `max_lines` lines each.
pub fn split_lines(text: &str, max_lines: usize) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut start, mut n) = (0, 0);
    for (i, b) in text.bytes().enumerate() {
        if b == b'\n' {
            n += 1;
            if n >= max_lines.max(1) {
                out.push(&text[start..=i]);
                start = i + 1;
                n = 0;
            }
        }
    }
    if start < text.len() {
        out.push(&text[start..]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (The line protocol parser of ingest reads these values back: see
    /// `daemon/tests/line_protocol_round_trip.rs`.)
    #[test]
    fn tag_values_with_spaces_commas_and_equals_are_escaped() {
        assert_eq!(escape_tag("Bldg A, east=1"), r"Bldg\ A\,\ east\=1");
        // InfluxDB unescapes only `\,`, `\=` and `\ `: a backslash before anything else is
        // itself, so doubling it would store `a\\b`.
        assert_eq!(escape_tag(r"a\b"), r"a\b");
        assert_eq!(escape_tag(r"C:\temp\ x"), r"C:\temp\\ x");
        assert_eq!(escape_measurement("my energy,x=1"), r"my\ energy\,x=1");
        assert_eq!(tag_suffix(&[("carrier", "electricity"), ("building", "Bldg A"), ("agency", "")]), r",building=Bldg\ A,carrier=electricity");
    }

    #[test]
    fn one_line_per_meter_and_time_with_every_quantity_as_field() {
        let mut b = LineBuilder::new("energy");
        let tags = tag_suffix(&[("building", "b 1"), ("carrier", "electricity")]);
        b.add("m1", &tags, Quantity::ActiveEnergyImport, 1000, 1234.5);
        b.add("m1", &tags, Quantity::ActivePower, 1000, 41.25);
        b.add("m1", &tags, Quantity::ActivePower, 2000, 1e21);
        b.add("m2", "", Quantity::WaterVolume, 2000, -0.1);
        let (text, lines) = b.take();
        assert_eq!(lines, 3);
        assert_eq!(
            text,
            "energy,meter=m1,building=b\\ 1,carrier=electricity active_energy_import=1234.5,active_power=41.25 1000\n\
             energy,meter=m1,building=b\\ 1,carrier=electricity active_power=1000000000000000000000 2000\n\
             energy,meter=m2 water_volume=-0.1 2000\n"
        );
        assert!(b.is_empty());
    }

    #[test]
    fn splits_into_requests_of_at_most_n_lines() {
        let text = "a 1\nb 2\nc 3\n";
        assert_eq!(split_lines(text, 2), vec!["a 1\nb 2\n", "c 3\n"]);
        assert_eq!(split_lines(text, 5), vec![text]);
        assert_eq!(split_lines("", 5), Vec::<&str>::new());
    }
}
