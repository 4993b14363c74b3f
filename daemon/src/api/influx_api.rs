//! The endpoints InfluxDB clients call before they write: `GET|HEAD /ping`, `GET /health`, and
//! on `/query` the two statements Telegraf and the v1 client send at start (`CREATE DATABASE`,
//! `SHOW DATABASES`), answered as no-ops in InfluxDB's shapes. Everything written through
//! `/write` and `/api/v2/write` goes to the one store whatever its `db` or `bucket`, so there is
//! no database to create or list.
//!
//! Shapes, from InfluxDB's documentation: `/ping` answers 204 with the headers
//! `X-Influxdb-Build` and `X-Influxdb-Version` (v1 and v2 "Ping" API; `?verbose=true`: 200 with
//! `{"version"}`); `/health` the v2 health check `{"name", "message", "status": "pass"|"fail",
//! "checks", "version", "commit"}`, 503 when failing; `/query` (v1 "Query" API) `{"results":
//! [{"statement_id": N, ...}]}`, and 400 `{"error"}` for a query it cannot run.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::{ApiError, Shared};

/// energyd's version, in the place where InfluxDB puts its own.
const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Adds InfluxDB's version headers (`X-Influxdb-Build: energyd`, `X-Influxdb-Version`).
fn with_version(mut r: Response) -> Response {
    let h = r.headers_mut();
    h.insert("x-influxdb-build", HeaderValue::from_static("energyd"));
    h.insert("x-influxdb-version", HeaderValue::from_static(VERSION));
    r
}

/// `GET|HEAD /ping[?verbose=true]`: open, as InfluxDB's.
pub(super) async fn ping(Query(p): Query<HashMap<String, String>>) -> Response {
    if p.get("verbose").is_some_and(|v| v == "true") {
        return with_version((StatusCode::OK, Json(serde_json::json!({ "version": VERSION }))).into_response());
    }
    with_version(StatusCode::NO_CONTENT.into_response())
}

/// `GET /health`: open, as InfluxDB 2's; `pass` when the store answers a read.
pub(super) async fn health(State(s): State<Shared>) -> Response {
    let store = s.store.read(|c| c.query_row("SELECT 1", [], |r| r.get::<_, i64>(0))).await;
    let (status, state, message) = match store {
        Ok(_) => (StatusCode::OK, "pass", "ready for queries and writes".to_string()),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, "fail", format!("the store does not answer: {e}")),
    };
    let body = serde_json::json!({ "name": "energyd", "message": message, "status": state, "checks": [], "version": VERSION, "commit": "" });
    with_version((status, Json(body)).into_response())
}

/// A statement `/query` answers.
#[derive(Debug, PartialEq)]
enum Statement {
    CreateDatabase(String),
    ShowDatabases,
}

/// Splits an InfluxQL query at the `;` outside quotes.
fn split_statements(q: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut start, mut quote, mut escaped) = (0, None, false);
    for (i, c) in q.char_indices() {
        match (quote, c) {
            (Some(_), '\\') if !escaped => {
                escaped = true;
                continue;
            }
            (Some(qc), c) if c == qc && !escaped => quote = None,
            (None, '"' | '\'') => quote = Some(c),
            (None, ';') => {
                out.push(&q[start..i]);
                start = i + 1;
            }
            _ => {}
        }
        escaped = false;
    }
    out.push(&q[start..]);
    out.into_iter().map(str::trim).filter(|s| !s.is_empty()).collect()
}

/// Reads an InfluxQL identifier (bare, or in double quotes with `\"` and `\\`); returns it and
/// the rest.
fn identifier(s: &str) -> Option<(String, &str)> {
    if let Some(rest) = s.strip_prefix('"') {
        let mut out = String::new();
        let mut chars = rest.char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => out.push(chars.next()?.1),
                '"' => return (!out.is_empty()).then(|| (out, &rest[i + 1..])),
                c => out.push(c),
            }
        }
        return None;
    }
    let end = s.find(|c: char| !(c.is_alphanumeric() || c == '_')).unwrap_or(s.len());
    let name = &s[..end];
    (!name.is_empty() && !name.starts_with(|c: char| c.is_ascii_digit())).then(|| (name.to_string(), &s[end..]))
}

/// Strips a keyword (any case) and the white space after it.
fn keyword<'a>(s: &'a str, word: &str) -> Option<&'a str> {
    let head = s.get(..word.len())?;
    let rest = &s[word.len()..];
    (head.eq_ignore_ascii_case(word) && (rest.is_empty() || rest.starts_with(char::is_whitespace) || rest.starts_with('"'))).then(|| rest.trim_start())
}

/// Why `/query` cannot answer a statement.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum StatementError {
    #[error("`{0}`: expected a database name after CREATE DATABASE")]
    NoDatabaseName(String),
    #[error("`{statement}`: unexpected `{rest}` after the database name")]
    Unexpected { statement: String, rest: String },
    #[error(
        "`{0}` is not supported: energyd answers only CREATE DATABASE and SHOW DATABASES on /query (as no-ops, for the start-up checks of Telegraf and InfluxDB clients); read data with GET /api/v1/series or /api/v1/consumption"
    )]
    Unsupported(String),
}

fn statement(s: &str) -> Result<Statement, StatementError> {
    if let Some(rest) = keyword(s, "SHOW").and_then(|r| keyword(r, "DATABASES")) {
        if rest.is_empty() {
            return Ok(Statement::ShowDatabases);
        }
    }
    if let Some(rest) = keyword(s, "CREATE").and_then(|r| keyword(r, "DATABASE")) {
        let (name, rest) = identifier(rest).ok_or_else(|| StatementError::NoDatabaseName(s.to_string()))?;
        // `WITH DURATION ... REPLICATION ... SHARD DURATION ... NAME ...`: retention settings
        // of a database that does not exist here.
        let rest = rest.trim_start();
        if rest.is_empty() || keyword(rest, "WITH").is_some() {
            return Ok(Statement::CreateDatabase(name));
        }
        return Err(StatementError::Unexpected { statement: s.to_string(), rest: rest.to_string() });
    }
    Err(StatementError::Unsupported(s.to_string()))
}

/// `GET|POST /query?q=..` (the query also in an `application/x-www-form-urlencoded` body, as
/// Telegraf sends it): behind the same authentication as `/write`.
pub(super) async fn query(Query(params): Query<HashMap<String, String>>, headers: HeaderMap, body: Bytes) -> Result<Response, ApiError> {
    let form = headers.get("content-type").and_then(|v| v.to_str().ok()).is_some_and(|ct| ct.starts_with("application/x-www-form-urlencoded"));
    let mut q = params.get("q").cloned();
    if form && q.is_none() {
        let text = std::str::from_utf8(&body).map_err(|_| ApiError::bad_request("the form body is not valid UTF-8"))?;
        q = text.split('&').find_map(|pair| pair.strip_prefix("q=")).map(super::auth::percent_decode);
    }
    let Some(q) = q.filter(|q| !q.trim().is_empty()) else {
        return Err(ApiError::bad_request("missing required parameter \"q\""));
    };
    let mut results = Vec::new();
    for (i, text) in split_statements(&q).into_iter().enumerate() {
        let r = match statement(text).map_err(|e| ApiError::bad_request(format!("error parsing query: {e}")))? {
            Statement::CreateDatabase(_) => serde_json::json!({ "statement_id": i }),
            Statement::ShowDatabases => serde_json::json!({ "statement_id": i, "series": [{ "name": "databases", "columns": ["name"] }] }),
        };
        results.push(r);
    }
    Ok(with_version((StatusCode::OK, Json(serde_json::json!({ "results": results }))).into_response()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_telegraf_and_the_v1_client_send() {
        let cases: &[(&str, Result<Vec<Statement>, &str>)] = &[
            // Telegraf's outputs.influxdb, and influxdb-python's create_database.
            (r#"CREATE DATABASE "telegraf""#, Ok(vec![Statement::CreateDatabase("telegraf".into())])),
            (r#"create database "my \"db\"""#, Ok(vec![Statement::CreateDatabase(r#"my "db""#.into())])),
            ("CREATE DATABASE energy WITH DURATION 30d NAME one", Ok(vec![Statement::CreateDatabase("energy".into())])),
            ("SHOW DATABASES", Ok(vec![Statement::ShowDatabases])),
            ("show  databases ; CREATE DATABASE x;", Ok(vec![Statement::ShowDatabases, Statement::CreateDatabase("x".into())])),
            (r#"CREATE DATABASE "a;b""#, Ok(vec![Statement::CreateDatabase("a;b".into())])),
            ("CREATE DATABASE", Err("expected a database name")),
            ("CREATE DATABASE x y", Err("unexpected `y`")),
            ("SELECT * FROM cpu", Err("`SELECT * FROM cpu` is not supported")),
            ("SHOW DATABASES x", Err("is not supported")),
            ("DROP DATABASE x", Err("is not supported")),
        ];
        for (q, want) in cases {
            let got: Result<Vec<Statement>, String> = split_statements(q).into_iter().map(statement).collect::<Result<_, _>>().map_err(|e| e.to_string());
            match (want, got) {
                (Ok(w), Ok(g)) => assert_eq!(&g, w, "{q}"),
                (Err(w), Err(g)) => assert!(g.contains(w), "{q}: {g}"),
                (w, g) => panic!("{q}: want {w:?}, got {g:?}"),
            }
        }
    }
}
