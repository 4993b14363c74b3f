//! InfluxDB as the second storage backend: the HTTP client for writes (line protocol, v1 and v2
//! APIs) and InfluxQL reads, and the line-protocol encoding of the schema
//! (docs/configuration.md, "Storage backends"). The forwarder that drains the spool into it is
//! [`super::forward`].
//!
//! The embedded store stays the durable log: a point is acknowledged once committed locally
//! (with its line protocol in table `outbox`, the spool, in the same transaction). The
//! forwarder sends the spool in order and deletes rows once the database has answered 2xx.
//! A resend after a lost answer writes the same (measurement, tags, field, time) again, which
//! InfluxDB and VictoriaMetrics store once (last write wins), so every point is there once.

pub mod encode;
pub mod influxql;

use std::time::{Duration, Instant};

use energy_wire::Quantity;

use super::config::{InfluxApi, InfluxConfig, SecretError};
use crate::metrics::Metrics;


/// Why a write failed.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// Worth retrying: the database is down, slow, overloaded, or misconfigured (auth, missing
    /// database) in a way an operator fixes without losing the data.
    #[error("{0}")]
    Retry(String),
    /// The database refused the data itself (400, 413): resending it cannot succeed.
    #[error("{0}")]
    Rejected(String),
}

/// Why the client could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// The token or password could not be read.
    #[error("{0}")]
    Secret(#[from] SecretError),
    #[error("cannot build the InfluxDB client: {0}")]
    Client(String),
}

/// Why a query failed.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// `storage.influxdb.url` does not make a request URL.
    #[error("storage.influxdb.url `{url}`: {reason}")]
    Url { url: String, reason: String },
    #[error("InfluxDB at {url} unreachable: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("reading the InfluxDB answer: {0}")]
    Read(String),
    /// An answer that is not a success (its body parsed).
    #[error("InfluxDB answered HTTP {0}")]
    Status(reqwest::StatusCode),
    /// An answer whose body is not a result (an error of the query, garbage).
    #[error("InfluxDB answered HTTP {status}: {reason}")]
    Answer { status: reqwest::StatusCode, reason: String },
    #[error("aggregate `{0}` is not supported")]
    Unsupported(String),
}

/// A client of one InfluxDB (or compatible) server. The token and password are held here and
/// never logged.
pub struct Influx {
    client: reqwest::Client,
    cfg: InfluxConfig,
    token: Option<String>,
    password: Option<String>,
    metrics: Metrics,
}

impl std::fmt::Debug for Influx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Influx").field("url", &self.cfg.url).field("api", &self.cfg.api).finish_non_exhaustive()
    }
}

impl Influx {
    pub fn new(cfg: InfluxConfig, metrics: Metrics) -> Result<Influx, SetupError> {
        let token = cfg.token()?;
        let password = cfg.password()?;
        let client = reqwest::Client::builder()
            .timeout(Duration::from_millis(cfg.timeout_ms))
            .connect_timeout(Duration::from_millis(cfg.timeout_ms.min(5000)))
            .build()
            .map_err(|e| SetupError::Client(e.to_string()))?;
        Ok(Influx { client, cfg, token, password, metrics })
    }

    pub fn config(&self) -> &InfluxConfig {
        &self.cfg
    }

    fn url(&self, path: &str, params: &[(&str, &str)]) -> Result<reqwest::Url, QueryError> {
        let base = format!("{}{path}", self.cfg.url.trim_end_matches('/'));
        reqwest::Url::parse_with_params(&base, params).map_err(|e| QueryError::Url { url: self.cfg.url.clone(), reason: e.to_string() })
    }

    fn auth(&self, rb: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match (&self.token, &self.cfg.username) {
            (Some(t), _) => rb.header(reqwest::header::AUTHORIZATION, format!("Token {t}")),
            (None, Some(u)) => rb.basic_auth(u, self.password.as_ref()),
            (None, None) => rb,
        }
    }

    /// Writes line protocol (timestamps in ms); Ok on 2xx.
    pub async fn write(&self, body: &str) -> Result<(), WriteError> {
        let started = Instant::now();
        let r = self.write_once(body).await;
        self.metrics.forward_write_seconds.observe(started.elapsed().as_secs_f64());
        r
    }

    async fn write_once(&self, body: &str) -> Result<(), WriteError> {
        let mut rb = match self.cfg.api {
            InfluxApi::V1 => {
                let mut q: Vec<(&str, &str)> = vec![("db", self.cfg.database.as_deref().unwrap_or_default()), ("precision", "ms")];
                if let Some(rp) = &self.cfg.retention_policy {
                    q.push(("rp", rp));
                }
                self.client.post(self.url("/write", &q).map_err(|e| WriteError::Retry(e.to_string()))?)
            }
            InfluxApi::V2 => {
                let q = [("org", self.cfg.org.as_deref().unwrap_or_default()), ("bucket", self.cfg.bucket.as_deref().unwrap_or_default()), ("precision", "ms")];
                self.client.post(self.url("/api/v2/write", &q).map_err(|e| WriteError::Retry(e.to_string()))?)
            }
        };
        rb = self.auth(rb).header(reqwest::header::CONTENT_TYPE, "text/plain; charset=utf-8");
        rb = if self.cfg.gzip {
            use std::io::Write as _;
            let mut enc = flate2::write::GzEncoder::new(Vec::with_capacity(body.len() / 4), flate2::Compression::fast());
            let gz = enc.write_all(body.as_bytes()).and_then(|()| enc.finish()).map_err(|e| WriteError::Retry(format!("gzip: {e}")))?;
            rb.header(reqwest::header::CONTENT_ENCODING, "gzip").body(gz)
        } else {
            rb.body(body.to_string())
        };
        let resp = rb.send().await.map_err(|e| {
            let kind = if e.is_timeout() { "timeout" } else { "connect" };
            self.metrics.forward_errors.with_label_values(&[kind]).inc();
            WriteError::Retry(format!("{kind}: {}", without_url(&e)))
        })?;
        let status = resp.status();
        if status.is_success() {
            return Ok(());
        }
        let text = resp.text().await.unwrap_or_default();
        let text = text.trim();
        let msg = format!("HTTP {status}: {}", &text[..text.len().min(500)]);
        if status == reqwest::StatusCode::BAD_REQUEST || status == reqwest::StatusCode::PAYLOAD_TOO_LARGE {
            self.metrics.forward_errors.with_label_values(&["rejected"]).inc();
            Err(WriteError::Rejected(msg))
        } else {
            self.metrics.forward_errors.with_label_values(&["status"]).inc();
            Err(WriteError::Retry(msg))
        }
    }

    /// Runs InfluxQL statements (separated by `;`) against the configured database; the rows of
    /// each statement.
    pub async fn query(&self, q: &str) -> Result<Vec<Vec<(i64, f64)>>, QueryError> {
        let db = self.cfg.database.as_deref().unwrap_or_default();
        let mut params = vec![("db", db), ("q", q), ("epoch", "ms")];
        if let Some(rp) = &self.cfg.retention_policy {
            params.push(("rp", rp));
        }
        let rb = self.auth(self.client.get(self.url("/query", &params)?));
        let resp = rb.send().await.map_err(|e| QueryError::Unreachable { url: self.cfg.url.clone(), reason: without_url(&e) })?;
        let status = resp.status();
        let body = resp.bytes().await.map_err(|e| QueryError::Read(without_url(&e)))?;
        match influxql::parse_results(&body) {
            Ok(r) if status.is_success() => Ok(r),
            Ok(_) => Err(QueryError::Status(status)),
            Err(reason) => Err(QueryError::Answer { status, reason }),
        }
    }

    fn from(&self) -> String {
        influxql::ident(&self.cfg.measurement)
    }

    /// Raw readings of one series in `[from, to)`.
    pub async fn points(&self, meter: &str, q: Quantity, from: i64, to: i64) -> Result<Vec<(i64, f64)>, QueryError> {
        let stmt = format!("SELECT {} FROM {} {}", influxql::ident(q.name()), self.from(), influxql::where_meter(meter, from, to));
        Ok(self.query(&stmt).await?.into_iter().next().unwrap_or_default())
    }

    /// Readings covering `[from, to)`: the last before, those inside, the first at or after `to`.
    pub async fn counter_window(&self, meter: &str, q: Quantity, from: i64, to: i64) -> Result<Vec<(i64, f64)>, QueryError> {
        let (f, m) = (influxql::ident(q.name()), influxql::literal(meter));
        let stmt = format!(
            "SELECT last({f}) FROM {src} WHERE \"meter\" = {m} AND time < {from}ms; \
             SELECT {f} FROM {src} {w}; \
             SELECT first({f}) FROM {src} WHERE \"meter\" = {m} AND time >= {to}ms",
            src = self.from(),
            w = influxql::where_meter(meter, from, to)
        );
        Ok(self.query(&stmt).await?.into_iter().flatten().collect())
    }

    /// `agg` of one series per `step` ms, buckets starting at `from`; empty buckets left out.
    pub async fn aggregate(&self, meter: &str, q: Quantity, from: i64, to: i64, step: i64, agg: &str) -> Result<Vec<(i64, f64)>, QueryError> {
        let func = influxql::function(agg).ok_or_else(|| QueryError::Unsupported(agg.to_string()))?;
        let stmt = format!(
            "SELECT {func}({}) FROM {} {} GROUP BY time({step}ms, {}ms) fill(none)",
            influxql::ident(q.name()),
            self.from(),
            influxql::where_meter(meter, from, to),
            from.rem_euclid(step)
        );
        Ok(self.query(&stmt).await?.into_iter().next().unwrap_or_default())
    }
}

/// A reqwest error without its URL (which holds no secret here, but keeps messages short).
fn without_url(e: &reqwest::Error) -> String {
    let mut s = e.to_string();
    if let Some(u) = e.url() {
        s = s.replace(&format!(" for url ({u})"), "");
    }
    let mut src = std::error::Error::source(e);
    while let Some(x) = src {
        s.push_str(": ");
        s.push_str(&x.to_string());
        src = x.source();
    }
    s
}
