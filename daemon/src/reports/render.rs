//! CSV and XLSX from tables. Both are byte-for-byte reproducible: numbers are rounded to four
//! decimals in CSV (XLSX keeps them whole), and the workbook's creation time is the report's
//! `as_of` date, never the clock.

use rust_xlsxwriter::{Color, DocProperties, ExcelDateTime, Format, FormatBorder, Workbook};

use super::tables::{Cell, Table};

/// A number in CSV: rounded to four decimals, shortest form.
pub fn csv_number(x: f64) -> String {
    let r = (x * 10_000.0).round() / 10_000.0;
    if r == 0.0 {
        "0".into()
    } else {
        format!("{r}")
    }
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// One table as CSV (RFC 4180, CRLF line ends, UTF-8 with a byte-order mark so that
/// spreadsheet programs read the Chinese headers right).
pub fn csv(t: &Table) -> Vec<u8> {
    let mut out = String::from("\u{feff}");
    let line = |cells: Vec<String>| cells.join(",") + "\r\n";
    out.push_str(&line(t.headers.iter().map(|h| csv_field(h)).collect()));
    for r in &t.rows {
        out.push_str(&line(
            r.iter()
                .map(|c| match c {
                    Cell::Text(s) => csv_field(s),
                    Cell::Num(Some(x)) => csv_number(*x),
                    Cell::Num(None) => String::new(),
                })
                .collect(),
        ));
    }
    out.into_bytes()
}

/// A sheet name Excel accepts: at most 31 characters, none of `[]:*?/\`.
fn sheet_name(s: &str, used: &[String]) -> String {
    let mut n: String = s.chars().filter(|c| !"[]:*?/\\".contains(*c)).take(28).collect();
    if n.is_empty() {
        n = "sheet".into();
    }
    let mut out = n.clone();
    let mut i = 2;
    while used.contains(&out) {
        out = format!("{n}{i}");
        i += 1;
    }
    out
}

/// The tables as a workbook, one sheet each: a bold header row with a fill, numbers as
/// numbers, the header frozen.
pub fn xlsx(title: &str, as_of: chrono::NaiveDate, tables: &[Table]) -> Result<Vec<u8>, String> {
    use chrono::Datelike;
    let e = |e: rust_xlsxwriter::XlsxError| format!("writing the workbook: {e}");
    let mut wb = Workbook::new();
    let created = ExcelDateTime::from_ymd(u16::try_from(as_of.year()).unwrap_or(2000), as_of.month() as u8, as_of.day() as u8).map_err(e)?;
    wb.set_properties(&DocProperties::new().set_title(title).set_author("energyd").set_creation_datetime(&created));
    let head = Format::new().set_bold().set_background_color(Color::RGB(0xDDE6F0)).set_border(FormatBorder::Thin).set_text_wrap();
    let number = Format::new().set_num_format("#,##0.00##");
    let mut used = Vec::new();
    for t in tables {
        let name = sheet_name(&t.title, &used);
        used.push(name.clone());
        let ws = wb.add_worksheet();
        ws.set_name(&name).map_err(e)?;
        for (c, h) in t.headers.iter().enumerate() {
            let col = u16::try_from(c).map_err(|_| "too many columns".to_string())?;
            ws.write_string_with_format(0, col, h, &head).map_err(e)?;
            ws.set_column_width(col, 16).map_err(e)?;
        }
        for (r, row) in t.rows.iter().enumerate() {
            let r = u32::try_from(r + 1).map_err(|_| "too many rows".to_string())?;
            for (c, cell) in row.iter().enumerate() {
                let col = u16::try_from(c).map_err(|_| "too many columns".to_string())?;
                match cell {
                    Cell::Text(s) if !s.is_empty() => {
                        ws.write_string(r, col, s).map_err(e)?;
                    }
                    Cell::Num(Some(x)) => {
                        ws.write_number_with_format(r, col, *x, &number).map_err(e)?;
                    }
                    _ => {}
                }
            }
        }
        ws.set_freeze_panes(1, 0).map_err(e)?;
    }
    wb.save_to_buffer().map_err(e)
}
