//! InfluxQL statements for the series API and the parsing of `/query` answers
//! (`epoch=ms`: times are integers in milliseconds).
//!
//! An answer is `{"results":[{"statement_id":0,"series":[{"name":..,"columns":["time",".."],
//! "values":[[t,v],..]}]},..]}`; a statement that failed has `"error"` instead of `"series"`
//! (for example `database not found: x`), a request that failed as a whole has a top-level
//! `"error"`, and a result cut short by the server's row limit has `"partial": true`.

use serde_json::Value;

/// An identifier in double quotes.
pub fn ident(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// A string literal in single quotes.
pub fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// `WHERE "meter" = '..' AND time >= ..ms AND time < ..ms`.
pub fn where_meter(meter: &str, from: i64, to: i64) -> String {
    format!("WHERE \"meter\" = {} AND time >= {from}ms AND time < {to}ms", literal(meter))
}

/// The InfluxQL function for an `agg` of the series API.
pub fn function(agg: &str) -> Option<&'static str> {
    Some(match agg {
        "mean" => "mean",
        "min" => "min",
        "max" => "max",
        "last" => "last",
        "first" => "first",
        "sum" => "sum",
        "count" => "count",
        _ => return None,
    })
}

/// The rows (time, value) of each statement, in statement order; rows whose value is null
/// (empty buckets, other fields' times) are left out. Any statement error, a top-level error or
/// a partial result is an error naming it.
pub fn parse_results(body: &[u8]) -> Result<Vec<Vec<(i64, f64)>>, String> {
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("answer is not JSON ({e}): {}", snippet(body)))?;
    if let Some(e) = v.get("error").and_then(Value::as_str) {
        return Err(e.to_string());
    }
    let results = v.get("results").and_then(Value::as_array).ok_or_else(|| format!("answer has no `results`: {}", snippet(body)))?;
    let mut out = Vec::with_capacity(results.len());
    for (i, r) in results.iter().enumerate() {
        if let Some(e) = r.get("error").and_then(Value::as_str) {
            return Err(format!("statement {i}: {e}"));
        }
        if r.get("partial").and_then(Value::as_bool) == Some(true) {
            return Err(format!("statement {i}: partial result (the server's max-row-limit cut it short); ask for a narrower range or a step"));
        }
        let mut rows = Vec::new();
        for s in r.get("series").and_then(Value::as_array).map_or(&[][..], Vec::as_slice) {
            let cols = s.get("columns").and_then(Value::as_array).map_or(0, Vec::len);
            if cols < 2 {
                return Err(format!("statement {i}: expected columns time and a value, got {cols}"));
            }
            for row in s.get("values").and_then(Value::as_array).map_or(&[][..], Vec::as_slice) {
                let (Some(t), Some(val)) = (row.get(0), row.get(1)) else { continue };
                let Some(t) = t.as_i64() else {
                    return Err(format!("statement {i}: time `{t}` is not in milliseconds (epoch=ms)"));
                };
                if let Some(x) = val.as_f64() {
                    rows.push((t, x));
                }
            }
        }
        out.push(rows);
    }
    Ok(out)
}

fn snippet(b: &[u8]) -> String {
    String::from_utf8_lossy(&b[..b.len().min(200)]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_of_each_statement_nulls_left_out() {
        let body = br#"{"results":[
            {"statement_id":0,"series":[{"name":"energy","columns":["time","active_power"],"values":[[1000,41.5],[2000,null],[3000,7]]}]},
            {"statement_id":1}
        ]}"#;
        assert_eq!(parse_results(body).unwrap(), vec![vec![(1000, 41.5), (3000, 7.0)], vec![]]);
    }

    #[test]
    fn database_not_found_is_an_error_naming_it() {
        let body = br#"{"results":[{"statement_id":0,"error":"database not found: energy"}]}"#;
        let e = parse_results(body).unwrap_err();
        assert!(e.contains("database not found: energy"), "{e}");
    }

    #[test]
    fn an_error_in_a_later_statement_fails_the_query() {
        let body = br#"{"results":[{"statement_id":0,"series":[{"name":"energy","columns":["time","x"],"values":[[1,1]]}]},{"statement_id":1,"error":"shard is closed"}]}"#;
        assert!(parse_results(body).unwrap_err().contains("statement 1: shard is closed"));
    }

    #[test]
    fn partial_results_and_top_level_errors_and_garbage_are_errors() {
        let partial = br#"{"results":[{"statement_id":0,"partial":true,"series":[{"name":"energy","columns":["time","x"],"values":[[1,1]]}]}]}"#;
        assert!(parse_results(partial).unwrap_err().contains("partial result"));
        let top = br#"{"error":"error parsing query: found EOF, expected FROM at line 1, char 9"}"#;
        assert!(parse_results(top).unwrap_err().contains("error parsing query"));
        assert!(parse_results(b"<html>bad gateway</html>").unwrap_err().contains("not JSON"));
        assert!(parse_results(br#"{"foo":1}"#).unwrap_err().contains("no `results`"));
        let rfc = br#"{"results":[{"statement_id":0,"series":[{"name":"energy","columns":["time","x"],"values":[["2026-01-01T00:00:00Z",1]]}]}]}"#;
        assert!(parse_results(rfc).unwrap_err().contains("epoch=ms"));
    }

    #[test]
    fn identifiers_and_literals_are_quoted() {
        assert_eq!(ident(r#"a"b"#), r#""a\"b""#);
        assert_eq!(literal("it's"), r"'it\'s'");
        assert_eq!(where_meter("m-1", 5, 9), "WHERE \"meter\" = 'm-1' AND time >= 5ms AND time < 9ms");
        assert_eq!(function("mean"), Some("mean"));
        assert_eq!(function("median"), None);
    }
}
