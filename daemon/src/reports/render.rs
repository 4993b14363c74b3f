//! CSV and XLSX from tables. Both are byte-for-byte reproducible: numbers are rounded to four
//! decimals in CSV (XLSX keeps them whole), and the workbook's creation time is the report's
//! `as_of` date, never the clock.

use rust_xlsxwriter::{Color, DocProperties, ExcelDateTime, Format, FormatAlign, FormatBorder, Workbook};

use super::labels::Lang;

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
                    Cell::Num(Some(x)) | Cell::Money(Some(x)) => csv_number(*x),
                    Cell::Int(Some(x)) => x.to_string(),
                    Cell::Num(None) | Cell::Money(None) | Cell::Int(None) => String::new(),
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

/// Columns a text takes on screen: CJK characters count two.
fn display_width(s: &str) -> usize {
    s.chars().map(|c| if (c as u32) >= 0x2E80 { 2 } else { 1 }).sum()
}

/// A cell as it shows in the workbook (to fit the column to it).
fn shown(c: &Cell) -> String {
    match c {
        Cell::Text(s) => s.clone(),
        Cell::Num(Some(x)) => format!("{:.2}", x) + if x.abs() >= 1000.0 { "," } else { "" },
        Cell::Money(Some(x)) => format!("{:.2}", x) + if x.abs() >= 1000.0 { "," } else { "" },
        Cell::Int(Some(x)) => x.to_string(),
        _ => String::new(),
    }
}

/// Escapes `&` for Excel's page header and footer codes.
fn header_text(s: &str) -> String {
    s.replace('&', "&&")
}

/// Why a workbook could not be written.
#[derive(Debug, thiserror::Error)]
pub enum XlsxError {
    #[error("writing the workbook: {0}")]
    Workbook(#[from] rust_xlsxwriter::XlsxError),
    #[error("too many columns")]
    TooManyColumns,
}

/// The tables as a workbook, one sheet each, in the official form: the forms' head lines
/// (merged across the columns) above a bold header row with a fill, the columns' numbers
/// (栏次) where the form has them, numbers as numbers (integers as integers, yuan with two
/// decimals, blank where there is no figure), totals and subtotals bold, borders, columns
/// fitted to their content, the header frozen; printed on A4 (landscape when wide), one page
/// wide, the header repeated on every page, the title at the top and the page number at the
/// bottom of each page.
pub fn xlsx(title: &str, as_of: chrono::NaiveDate, tables: &[Table], lang: Lang) -> Result<Vec<u8>, XlsxError> {
    use chrono::Datelike;
    let e = XlsxError::Workbook;
    let mut wb = Workbook::new();
    let created = ExcelDateTime::from_ymd(u16::try_from(as_of.year()).unwrap_or(2000), as_of.month() as u8, as_of.day() as u8).map_err(e)?;
    wb.set_properties(&DocProperties::new().set_title(title).set_author("energyd").set_creation_datetime(&created));
    let head = Format::new().set_bold().set_background_color(Color::RGB(0xDDE6F0)).set_border(FormatBorder::Thin).set_text_wrap().set_align(FormatAlign::Center).set_align(FormatAlign::VerticalCenter);
    let caption = Format::new().set_bold().set_font_size(14).set_align(FormatAlign::Center);
    let caption_small = Format::new().set_align(FormatAlign::Left);
    let code = Format::new().set_border(FormatBorder::Thin).set_align(FormatAlign::Center).set_font_color(Color::RGB(0x555555));
    let text = Format::new().set_border(FormatBorder::Thin).set_text_wrap().set_align(FormatAlign::Top);
    let blank = Format::new().set_border(FormatBorder::Thin);
    let number = Format::new().set_border(FormatBorder::Thin).set_num_format("#,##0.00##");
    let integer = Format::new().set_border(FormatBorder::Thin).set_num_format("0");
    let yuan = Format::new().set_border(FormatBorder::Thin).set_num_format("#,##0.00");
    let bold = |f: &Format| f.clone().set_bold();
    let footer = match lang {
        Lang::Zh => "&C第 &P 页，共 &N 页".to_string(),
        Lang::En => "&CPage &P of &N".to_string(),
    };
    let mut used = Vec::new();
    for t in tables {
        let name = sheet_name(&t.title, &used);
        used.push(name.clone());
        let ws = wb.add_worksheet();
        ws.set_name(&name).map_err(e)?;
        let ncols = t.headers.len().max(1);
        let last_col = u16::try_from(ncols - 1).map_err(|_| XlsxError::TooManyColumns)?;
        let mut r: u32 = 0;
        for (i, line) in t.caption.iter().enumerate() {
            let f = if i == 0 { &caption } else { &caption_small };
            if last_col > 0 {
                ws.merge_range(r, 0, r, last_col, line, f).map_err(e)?;
            } else {
                ws.write_string_with_format(r, 0, line, f).map_err(e)?;
            }
            if i == 0 {
                ws.set_row_height(r, 24).map_err(e)?;
            }
            r += 1;
        }
        let header_row = r;
        for (c, h) in t.headers.iter().enumerate() {
            let col = u16::try_from(c).map_err(|_| XlsxError::TooManyColumns)?;
            ws.write_string_with_format(r, col, h, &head).map_err(e)?;
        }
        r += 1;
        if !t.column_codes.is_empty() {
            for (c, h) in t.column_codes.iter().enumerate() {
                let col = u16::try_from(c).map_err(|_| XlsxError::TooManyColumns)?;
                ws.write_string_with_format(r, col, h, &code).map_err(e)?;
            }
            r += 1;
        }
        let first_data = r;
        for (i, row) in t.rows.iter().enumerate() {
            let total = t.total_rows.contains(&i);
            let pick = |f: &Format| if total { bold(f) } else { f.clone() };
            for (c, cell) in row.iter().enumerate() {
                let col = u16::try_from(c).map_err(|_| XlsxError::TooManyColumns)?;
                match cell {
                    Cell::Text(s) if !s.is_empty() => {
                        ws.write_string_with_format(r, col, s, &pick(&text)).map_err(e)?;
                    }
                    Cell::Num(Some(x)) => {
                        ws.write_number_with_format(r, col, *x, &pick(&number)).map_err(e)?;
                    }
                    Cell::Money(Some(x)) => {
                        ws.write_number_with_format(r, col, *x, &pick(&yuan)).map_err(e)?;
                    }
                    Cell::Int(Some(x)) => {
                        // Whole numbers of this size are exact in f64.
                        ws.write_number_with_format(r, col, *x as f64, &pick(&integer)).map_err(e)?;
                    }
                    _ => {
                        ws.write_blank(r, col, &blank).map_err(e)?;
                    }
                }
            }
            r += 1;
        }
        r += 1;
        for line in &t.footer {
            ws.write_string_with_format(r, 0, line, &caption_small).map_err(e)?;
            r += 1;
        }
        // Widths fitted to the content: the widest cell, the header counted up to the width
        // at which it wraps onto a second line.
        for c in 0..ncols {
            let col = u16::try_from(c).map_err(|_| XlsxError::TooManyColumns)?;
            let head_w = t.headers.get(c).map_or(0, |h| display_width(h).div_ceil(2).max(display_width(h).min(12)));
            let code_w = t.column_codes.get(c).map_or(0, |h| display_width(h));
            let cells = t.rows.iter().filter_map(|row| row.get(c)).map(|x| display_width(&shown(x))).max().unwrap_or(0);
            let w = head_w.max(code_w).max(cells).clamp(6, 60);
            ws.set_column_width(col, w as f64 + 2.0).map_err(e)?;
        }
        ws.set_freeze_panes(first_data, 0).map_err(e)?;
        ws.set_paper_size(9);
        let width: usize = (0..ncols).map(|c| t.rows.iter().filter_map(|row| row.get(c)).map(|x| display_width(&shown(x))).max().unwrap_or(8).clamp(6, 60)).sum();
        if ncols > 6 || width > 90 {
            ws.set_landscape();
        }
        ws.set_print_fit_to_pages(1, 0);
        ws.set_repeat_rows(header_row, first_data - 1).map_err(e)?;
        ws.set_margins(0.5, 0.5, 0.7, 0.7, 0.3, 0.3);
        ws.set_header(format!("&C&\"-,Bold\"{}", header_text(&format!("{title} · {}", t.title))));
        ws.set_footer(&footer);
        ws.set_print_center_horizontally(true);
    }
    wb.save_to_buffer().map_err(e)
}
