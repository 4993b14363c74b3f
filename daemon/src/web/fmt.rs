//! Numbers, dates and text for the page: Chinese forms by default, English with `lang=en`.

use chrono::{Datelike, NaiveDate};

/// The page's language: the documents' (`?lang=en` for English).
pub use crate::reports::labels::Lang;

/// Digits with a thousands separator: `1234567.891` with 1 decimal is `1,234,567.9`.
fn grouped(v: f64, decimals: usize) -> String {
    let s = format!("{:.*}", decimals, v.abs());
    let (int, frac) = s.split_once('.').map_or((s.as_str(), None), |(i, f)| (i, Some(f)));
    let mut out = String::new();
    for (i, c) in int.chars().enumerate() {
        if i > 0 && (int.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if let Some(f) = frac {
        out.push('.');
        out.push_str(f);
    }
    if v < 0.0 && out.chars().any(|c| c.is_ascii_digit() && c != '0') {
        out.insert(0, '-');
    }
    out
}

/// A quantity as people read it. Chinese: from 10 000 on in 万 (10^4) and from 10^8 in 亿, two
/// decimals (`123456` -> `12.35万`); below, grouped with `decimals`. English: grouped digits.
pub fn num(lang: Lang, v: f64, decimals: usize) -> String {
    if !v.is_finite() {
        return "—".into();
    }
    match lang {
        Lang::Zh if v.abs() >= 1e8 => format!("{}亿", grouped(v / 1e8, 2)),
        Lang::Zh if v.abs() >= 1e4 => format!("{}万", grouped(v / 1e4, 2)),
        _ => grouped(v, decimals),
    }
}

/// An optional quantity (`—` when there is none).
pub fn opt(lang: Lang, v: Option<f64>, decimals: usize) -> String {
    v.map_or_else(|| "—".into(), |v| num(lang, v, decimals))
}

/// A change in percent with its sign: `+3.2%`, `-0.5%`.
pub fn pct(v: Option<f64>) -> String {
    match v {
        Some(x) if x.is_finite() => format!("{}{:.1}%", if x > 0.0 { "+" } else { "" }, x),
        _ => "—".into(),
    }
}

/// The change of `now` against `before`, percent (none when `before` is zero).
pub fn change(now: f64, before: f64) -> Option<f64> {
    (before.abs() > 1e-9).then(|| (now - before) / before * 100.0)
}

/// A day: `2026年3月5日` or `2026-03-05`.
pub fn date(lang: Lang, d: NaiveDate) -> String {
    match lang {
        Lang::Zh => format!("{}年{}月{}日", d.year(), d.month(), d.day()),
        Lang::En => d.format("%Y-%m-%d").to_string(),
    }
}

/// A month's short name: `3月` or `Mar`.
pub fn month(lang: Lang, m: u32) -> String {
    const EN: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    match lang {
        Lang::Zh => format!("{m}月"),
        Lang::En => EN[usize::try_from(m.clamp(1, 12) - 1).unwrap_or(0)].to_string(),
    }
}

/// HTML-escapes text.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Percent-encodes a URL component (everything but unreserved characters).
pub fn url_encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// JSON for a `<script>` block: `</` cannot close it.
pub fn script_json(v: &serde_json::Value) -> String {
    v.to_string().replace("</", "<\\/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_in_each_language() {
        // (lang, value, decimals, shown): 万 = 10^4, 亿 = 10^8, two decimals rounded half away.
        for (lang, v, d, want) in [
            (Lang::Zh, 0.0, 1, "0.0"),
            (Lang::Zh, 9_999.4, 0, "9,999"),
            (Lang::Zh, 12_345.0, 0, "1.23万"), // 12345 / 10^4 = 1.2345 -> 1.23
            (Lang::Zh, 123_456.0, 0, "12.35万"), // 12.3456 -> 12.35
            (Lang::Zh, 250_000_000.0, 0, "2.50亿"),
            (Lang::Zh, -56_789.0, 0, "-5.68万"),
            (Lang::En, 1_234_567.891, 1, "1,234,567.9"),
            (Lang::En, 999.0, 0, "999"),
            (Lang::En, -1_000.0, 0, "-1,000"),
            (Lang::En, -0.01, 1, "0.0"),
            (Lang::En, f64::NAN, 1, "—"),
        ] {
            assert_eq!(num(lang, v, d), want, "{lang:?} {v}");
        }
    }

    #[test]
    fn dates_changes_and_escapes() {
        let d = NaiveDate::from_ymd_opt(2026, 3, 5).unwrap();
        assert_eq!(date(Lang::Zh, d), "2026年3月5日");
        assert_eq!(date(Lang::En, d), "2026-03-05");
        assert_eq!(month(Lang::Zh, 12), "12月");
        assert_eq!(month(Lang::En, 1), "Jan");
        // 110 against 100: +10 %; against 0: none.
        assert_eq!(pct(change(110.0, 100.0)), "+10.0%");
        assert_eq!(pct(change(95.0, 100.0)), "-5.0%");
        assert_eq!(pct(change(1.0, 0.0)), "—");
        assert_eq!(esc("<a href=\"x\">&'"), "&lt;a href=&quot;x&quot;&gt;&amp;&#39;");
        assert_eq!(url_encode("/meters/a b?x=1"), "%2Fmeters%2Fa%20b%3Fx%3D1");
        assert_eq!(script_json(&serde_json::json!("</script>")), "\"<\\/script>\"");
    }
}
