//! Monthly readings of meters read by hand (no gateway in the registry): a form per agency and
//! month, an XLSX template to fill in, and its import. Every reading is a `reading` event at the
//! start of the next month, recorded through the API's service ([`record_event`]): checked,
//! stored as the counter's reading at that time, written to the event log and audited; the
//! role rule is the API's (engineer or admin).
//!
//! The template is written with rust_xlsxwriter (as the reports are) and read back with
//! calamine: both are already in the build (calamine was the reports' test reader), so an import
//! adds no dependency, and calamine reads what spreadsheet programs write (shared strings,
//! inline strings, numbers stored as text), which a hand-made zip+XML reader would have to
//! relearn.

use std::collections::HashMap;
use std::fmt::Write as _;

use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Redirect, Response};
use chrono::{Datelike, NaiveDate};
use serde_json::json;

use super::fmt::{self, esc, Lang};
use super::{Viewer, WebShared};
use crate::api::accounting::record_event;
use crate::api::ApiError;
use crate::auth::Role;
use crate::registry::{Meter, Registry};

/// The header of the template's sheet, in this order.
pub const COLUMNS: [&str; 6] = ["meter", "name", "carrier", "unit", "month", "reading"];

/// An agency's meters read by hand: physical meters serving it, without a gateway.
pub fn hand_read<'a>(reg: &'a Registry, agency: &str) -> Vec<&'a Meter> {
    reg.meters_of_agency(agency).into_iter().map(|(m, _)| m).filter(|m| !m.is_virtual() && m.gateway.is_none()).collect()
}

/// A month `YYYY-MM`.
pub fn parse_month(s: &str) -> Result<NaiveDate, String> {
    NaiveDate::parse_from_str(&format!("{}-01", s.trim()), "%Y-%m-%d").map_err(|_| format!("month `{s}` is not a month such as 2026-03"))
}

/// The time of a month's reading: the start of the next month (a date: local midnight).
pub fn reading_time(month: NaiveDate) -> String {
    month.checked_add_months(chrono::Months::new(1)).unwrap_or(month).to_string()
}

/// One reading to record.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub meter: String,
    pub month: NaiveDate,
    pub value: f64,
}

/// The readings of a filled-in template's cells (text of each cell, rows in order, the header
/// first); rows without a reading are skipped. Every problem is named with its row number as a
/// spreadsheet shows it (the header is row 1).
pub fn rows_of(cells: &[Vec<String>], allowed: &[&str]) -> Result<Vec<Row>, Vec<String>> {
    let mut errors = Vec::new();
    let Some(head) = cells.first() else { return Err(vec!["the sheet is empty".into()]) };
    let col = |name: &str| head.iter().position(|h| h.trim() == name);
    let (Some(cm), Some(cmonth), Some(cv)) = (col("meter"), col("month"), col("reading")) else {
        return Err(vec![format!("row 1 must name the columns {}", COLUMNS.join(", "))]);
    };
    let mut out = Vec::new();
    for (i, r) in cells.iter().enumerate().skip(1) {
        let cell = |c: usize| r.get(c).map_or("", |s| s.trim());
        let (meter, month, value) = (cell(cm), cell(cmonth), cell(cv));
        if value.is_empty() {
            continue;
        }
        let n = i + 1;
        if !allowed.contains(&meter) {
            errors.push(format!("row {n}: meter `{meter}` is not one of this agency's meters read by hand"));
            continue;
        }
        let month = match parse_month(month) {
            Ok(m) => m,
            Err(e) => {
                errors.push(format!("row {n}: {e}"));
                continue;
            }
        };
        match value.parse::<f64>() {
            Ok(v) if v.is_finite() && v >= 0.0 => out.push(Row { meter: meter.to_string(), month, value: v }),
            _ => errors.push(format!("row {n}: reading `{value}` is not a number 0 or more")),
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

fn check(viewer: &Viewer, reg: &Registry, agency: &str) -> Result<(), ApiError> {
    viewer.principal.require_agency(reg, agency)?;
    reg.agency(agency).ok_or_else(|| ApiError::not_found(format!("agency `{agency}` is not in the registry")))?;
    Ok(())
}

fn month_of(p: &HashMap<String, String>, today: NaiveDate) -> Result<NaiveDate, ApiError> {
    match p.get("month") {
        Some(m) => parse_month(m).map_err(ApiError::bad_request),
        // Default: last month (its reading is due at the start of this one).
        None => Ok(NaiveDate::from_ymd_opt(today.year(), today.month(), 1).and_then(|d| d.checked_sub_months(chrono::Months::new(1))).unwrap_or(today)),
    }
}

/// `GET /agencies/{id}/readings?month=YYYY-MM`: the form (and the template and import).
pub(super) async fn form(State(w): State<WebShared>, viewer: Viewer, Path(id): Path<String>, Query(p): Query<HashMap<String, String>>) -> Result<Response, ApiError> {
    let reg = w.app.registry.clone();
    check(&viewer, &reg, &id)?;
    let lang = Lang::of(&p);
    let t = |zh, en| lang.t(zh, en);
    let month = month_of(&p, crate::time::today(w.app.tz))?;
    let meters = hand_read(&reg, &id);
    let may = viewer.principal.require_role(Role::Engineer).is_ok();
    let ym = month.format("%Y-%m").to_string();
    let mut body = format!("<section class=\"readings\"><form method=\"get\"><label>{}<input type=\"month\" name=\"month\" value=\"{ym}\"></label><button type=\"submit\">{}</button></form>", t("月份", "Month"), t("查看", "Show"));
    if let Some(done) = p.get("done") {
        let _ = write!(body, "<p class=\"done\" role=\"status\">{}</p>", esc(done));
    }
    if meters.is_empty() {
        let _ = write!(body, "<p>{}</p></section>", t("本单位没有人工抄读的计量表。", "This agency has no meters read by hand."));
    } else {
        let events = w.app.engine.event_records(None);
        let at = reading_time(month);
        let _ = write!(
            body,
            "<form method=\"post\" action=\"/agencies/{idq}/readings\" class=\"readings\"><input type=\"hidden\" name=\"csrf\" value=\"{csrf}\"><input type=\"hidden\" name=\"month\" value=\"{ym}\"><table><thead><tr><th>{}</th><th>{}</th><th>{}</th><th>{} {}</th><th>{}</th></tr></thead><tbody>",
            t("计量表", "Meter"),
            t("品种", "Carrier"),
            t("单位", "Unit"),
            t("月末读数", "Reading at the end of"),
            esc(&ym),
            t("已记录", "Recorded"),
            idq = esc(&fmt::url_encode(&id)),
            csrf = esc(viewer.csrf.as_deref().unwrap_or("")),
        );
        for m in &meters {
            let recorded = events
                .iter()
                .filter(|e| e.meter == m.id && e.time.starts_with(&at))
                .filter_map(|e| match e.kind {
                    crate::registry::EventKind::Reading { value, quantity: None } => Some(value),
                    _ => None,
                })
                .last();
            let _ = write!(
                body,
                "<tr data-meter=\"{}\"><td>{}</td><td>{}</td><td>{}</td><td><input name=\"reading.{}\" type=\"number\" step=\"any\" min=\"0\"{}></td><td class=\"n\">{}</td></tr>",
                esc(&m.id),
                esc(m.name.as_deref().unwrap_or(&m.id)),
                esc(&crate::reports::labels::carrier(if lang == Lang::En { crate::reports::Lang::En } else { crate::reports::Lang::Zh }, m.carrier)),
                m.counter().unit(),
                esc(&m.id),
                if may { "" } else { " disabled" },
                recorded.map_or_else(String::new, |v| fmt::num(lang, v, 2)),
            );
        }
        body.push_str("</tbody></table>");
        if may {
            let _ = write!(body, "<button type=\"submit\">{}</button>", t("保存读数", "Save readings"));
        }
        body.push_str("</form>");
        let _ = write!(
            body,
            "<p><a href=\"/agencies/{idq}/readings.xlsx?month={ym}\">{}</a></p>",
            t("下载Excel模板", "Download the XLSX template"),
            idq = esc(&fmt::url_encode(&id))
        );
        if may {
            let _ = write!(
                body,
                "<form class=\"import\" data-import=\"/agencies/{idq}/readings.xlsx\"><label>{}<input type=\"file\" name=\"file\" accept=\".xlsx\"></label><button type=\"submit\">{}</button><output></output></form>",
                t("导入已填写的模板", "Import a filled-in template"),
                t("导入", "Import"),
                idq = esc(&fmt::url_encode(&id))
            );
        }
        body.push_str("</section>");
    }
    let name = reg.agency(&id).map_or(id.clone(), |a| a.name.clone());
    Ok(super::pages::frame(&w, viewer, &p, &format!("/agencies/{}/readings", fmt::url_encode(&id)), &format!("{name} — {}", t("月度抄表", "Monthly readings")), &id, &body)?.into_response())
}

async fn record_rows(w: &WebShared, viewer: &Viewer, rows: &[Row], lang: Lang) -> Result<usize, ApiError> {
    for r in rows {
        let ym = r.month.format("%Y-%m").to_string();
        let ev = json!({
            "kind": "reading", "time": reading_time(r.month), "value": r.value,
            "by": viewer.principal.name, "reason": format!("{} {ym}", lang.t("月度抄表", "monthly reading")),
        });
        record_event(&w.app, &viewer.principal, &r.meter, ev).await.map_err(|e| ApiError { status: e.status, message: format!("meter `{}`, {ym}: {}", r.meter, e.message) })?;
    }
    Ok(rows.len())
}

/// `POST /agencies/{id}/readings` (the form).
pub(super) async fn save(State(w): State<WebShared>, viewer: Viewer, Path(id): Path<String>, Query(p): Query<HashMap<String, String>>, body: axum::body::Bytes) -> Result<Response, ApiError> {
    let reg = w.app.registry.clone();
    check(&viewer, &reg, &id)?;
    let form: HashMap<String, String> = super::login::parse_form(&body)?;
    viewer.check_csrf(form.get("csrf").map(String::as_str))?;
    viewer.principal.require_role(Role::Engineer)?;
    let lang = Lang::of(&p);
    let month = form.get("month").map(String::as_str).unwrap_or("");
    let allowed: Vec<&str> = hand_read(&reg, &id).iter().map(|m| m.id.as_str()).collect();
    let mut cells = vec![COLUMNS.iter().map(|c| c.to_string()).collect::<Vec<_>>()];
    for (k, v) in &form {
        if let Some(meter) = k.strip_prefix("reading.") {
            cells.push(vec![meter.to_string(), String::new(), String::new(), String::new(), month.to_string(), v.clone()]);
        }
    }
    let rows = rows_of(&cells, &allowed).map_err(|e| ApiError::bad_request(e.join("; ")))?;
    let n = record_rows(&w, &viewer, &rows, lang).await?;
    let done = format!("{} {n}", lang.t("已记录读数：", "Readings recorded:"));
    Ok(Redirect::to(&format!("/agencies/{}/readings?month={month}{}&done={}", fmt::url_encode(&id), if lang == Lang::En { "&lang=en" } else { "" }, fmt::url_encode(&done))).into_response())
}

/// `GET /agencies/{id}/readings.xlsx?month=YYYY-MM`: the template, one row per meter read by hand.
pub(super) async fn template(State(w): State<WebShared>, viewer: Viewer, Path(id): Path<String>, Query(p): Query<HashMap<String, String>>) -> Result<Response, ApiError> {
    let reg = w.app.registry.clone();
    check(&viewer, &reg, &id)?;
    let month = month_of(&p, crate::time::today(w.app.tz))?.format("%Y-%m").to_string();
    let bytes = template_bytes(&hand_read(&reg, &id), &month).map_err(|e| ApiError::internal("writing the template", e))?;
    let name = format!("attachment; filename=\"readings-{id}-{month}.xlsx\"");
    Ok(([(header::CONTENT_TYPE, "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet".to_string()), (header::CONTENT_DISPOSITION, name)], bytes).into_response())
}

/// The template's bytes.
pub fn template_bytes(meters: &[&Meter], month: &str) -> Result<Vec<u8>, rust_xlsxwriter::XlsxError> {
    let mut wb = rust_xlsxwriter::Workbook::new();
    let ws = wb.add_worksheet();
    ws.set_name("readings")?;
    for (c, h) in COLUMNS.iter().enumerate() {
        ws.write_string(0, u16::try_from(c).unwrap_or(0), *h)?;
    }
    for (i, m) in meters.iter().enumerate() {
        let r = u32::try_from(i + 1).unwrap_or(u32::MAX);
        ws.write_string(r, 0, &m.id)?;
        ws.write_string(r, 1, m.name.as_deref().unwrap_or(""))?;
        ws.write_string(r, 2, m.carrier.as_str())?;
        ws.write_string(r, 3, m.counter().unit())?;
        ws.write_string(r, 4, month)?;
    }
    ws.set_column_width(0, 24)?;
    ws.set_column_width(1, 24)?;
    wb.save_to_buffer()
}

/// The cells of an uploaded workbook's first sheet as text.
pub fn cells_of(bytes: &[u8]) -> Result<Vec<Vec<String>>, String> {
    use calamine::{Data, Reader, Xlsx};
    let mut wb: Xlsx<_> = Xlsx::new(std::io::Cursor::new(bytes.to_vec())).map_err(|e| format!("not an XLSX workbook: {e}"))?;
    let first = wb.sheet_names().first().cloned().ok_or("the workbook has no sheet")?;
    let range = wb.worksheet_range(&first).map_err(|e| format!("sheet `{first}`: {e}"))?;
    Ok(range
        .rows()
        .map(|r| {
            r.iter()
                .map(|c| match c {
                    Data::Empty => String::new(),
                    Data::String(s) => s.clone(),
                    Data::Float(f) => f.to_string(),
                    Data::Int(i) => i.to_string(),
                    other => other.to_string(),
                })
                .collect()
        })
        .collect())
}

/// `POST /agencies/{id}/readings.xlsx` (the workbook as the body, the CSRF token in
/// `X-CSRF-Token`): records every filled-in reading, or none when any row is wrong.
pub(super) async fn import(State(w): State<WebShared>, viewer: Viewer, Path(id): Path<String>, Query(p): Query<HashMap<String, String>>, headers: axum::http::HeaderMap, body: axum::body::Bytes) -> Result<Response, ApiError> {
    let reg = w.app.registry.clone();
    check(&viewer, &reg, &id)?;
    viewer.check_csrf(headers.get("x-csrf-token").and_then(|v| v.to_str().ok()))?;
    viewer.principal.require_role(Role::Engineer)?;
    let cells = cells_of(&body).map_err(ApiError::bad_request)?;
    let allowed: Vec<&str> = hand_read(&reg, &id).iter().map(|m| m.id.as_str()).collect();
    let rows = rows_of(&cells, &allowed).map_err(|e| ApiError::bad_request(e.join("; ")))?;
    let n = record_rows(&w, &viewer, &rows, Lang::of(&p)).await?;
    Ok(axum::Json(json!({ "recorded": n })).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cells(rows: &[&[&str]]) -> Vec<Vec<String>> {
        rows.iter().map(|r| r.iter().map(|c| c.to_string()).collect()).collect()
    }

    #[test]
    fn template_rows_are_read_and_checked() {
        let head: &[&str] = &COLUMNS;
        let ok = cells(&[head, &["w1", "", "water", "m³", "2026-02", "123.5"], &["w2", "", "water", "m³", "2026-02", ""]]);
        let rows = rows_of(&ok, &["w1", "w2"]).unwrap();
        // The empty reading of w2 is skipped; w1's reading is at 1 March (the end of February).
        assert_eq!(rows, vec![Row { meter: "w1".into(), month: NaiveDate::from_ymd_opt(2026, 2, 1).unwrap(), value: 123.5 }]);
        assert_eq!(reading_time(rows[0].month), "2026-03-01");
        assert_eq!(reading_time(NaiveDate::from_ymd_opt(2026, 12, 1).unwrap()), "2027-01-01");
        let bad = cells(&[head, &["zz", "", "", "", "2026-02", "1"], &["w1", "", "", "", "2026-13", "1"], &["w1", "", "", "", "2026-02", "-4"], &["w1", "", "", "", "2026-02", "abc"]]);
        let e = rows_of(&bad, &["w1"]).unwrap_err();
        assert_eq!(e.len(), 4, "{e:?}");
        assert!(e[0].starts_with("row 2: meter `zz`") && e[1].starts_with("row 3: month `2026-13`") && e[2].contains("`-4`") && e[3].starts_with("row 5"), "{e:?}");
        assert!(rows_of(&cells(&[&["a", "b"]]), &[]).unwrap_err()[0].contains("row 1 must name"));
    }

    #[test]
    fn the_template_reads_back() {
        let reg = Registry::parse("[[agency]]\nid = \"a\"\nname = \"A\"\nlevel = \"city\"\n[[building]]\nid = \"b\"\nname = \"B\"\nfloor_area = 1.0\noccupants = [ { agency = \"a\", share = 1.0 } ]\n[[meter]]\nid = \"w1\"\nname = \"水表\"\nbuilding = \"b\"\ncarrier = \"water\"\n[[meter]]\nid = \"e1\"\nbuilding = \"b\"\ncarrier = \"electricity\"\ngateway = \"gw\"\n").unwrap();
        let meters = hand_read(&reg, "a");
        assert_eq!(meters.iter().map(|m| m.id.as_str()).collect::<Vec<_>>(), ["w1"], "e1 has a gateway");
        let bytes = template_bytes(&meters, "2026-02").unwrap();
        let c = cells_of(&bytes).unwrap();
        assert_eq!(c[0], COLUMNS.map(String::from).to_vec());
        assert_eq!(c[1][..5], ["w1", "水表", "water", "m³", "2026-02"].map(String::from));
        assert!(cells_of(b"not a zip").unwrap_err().contains("not an XLSX"));
    }
}
