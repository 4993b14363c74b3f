//! The store's sections of the daemon's configuration: `[storage]` (the backend for raw points,
//! InfluxDB, the free-space floor) and `[retention]`. `config.rs` holds them in the aggregate
//! and calls their `problems`. [`StoreOptions`]: what the store is opened with, from them.

use std::path::PathBuf;

use energy_wire::time::HOUR_MS;
use serde::{Deserialize, Serialize};

/// How long each resolution is kept. Points older than the raw retention are refused at ingest
/// and deleted from the store; roll-ups outlive them, so reports of old years still work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionConfig {
    #[serde(default = "default_raw_days")]
    pub raw_days: u32,
    /// 0: forever.
    #[serde(default)]
    pub rollup_days: u32,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig { raw_days: default_raw_days(), rollup_days: 0 }
    }
}

impl RetentionConfig {
    pub fn raw_ms(&self) -> i64 {
        i64::from(self.raw_days) * energy_wire::time::DAY_MS
    }

    /// `None`: kept forever.
    pub fn rollup_ms(&self) -> Option<i64> {
        (self.rollup_days > 0).then(|| i64::from(self.rollup_days) * energy_wire::time::DAY_MS)
    }

    /// Every problem, named by its key.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.raw_days == 0 {
            out.push("retention.raw_days must be at least 1".to_string());
        }
        if self.rollup_days != 0 && self.rollup_days < self.raw_days {
            out.push(format!(
                "retention.rollup_days ({}) is shorter than retention.raw_days ({}); roll-ups must outlive the raw points (0 keeps them forever)",
                self.rollup_days, self.raw_days
            ));
        }
        out
    }
}

/// Three years and a day: a full three-year history is always there.
fn default_raw_days() -> u32 {
    3 * 365 + 1
}

/// `[storage]`: the backend for raw points. The embedded store always stays the durable log and
/// keeps the hourly roll-ups (accounting reads them); with `backend = "influxdb"` every point
/// committed locally is also forwarded to InfluxDB (or a compatible engine) from a bounded spool,
/// and series queries read raw points from there.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    #[serde(default)]
    pub backend: Backend,
    /// Required with `backend = "influxdb"`.
    #[serde(default)]
    pub influxdb: Option<InfluxConfig>,
    /// Under this many free bytes on the data directory's file system the store refuses writes
    /// (507, read-only) until there is this much again; it resumes by itself.
    #[serde(default = "default_min_free_bytes")]
    pub min_free_bytes: u64,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig { backend: Backend::default(), influxdb: None, min_free_bytes: default_min_free_bytes() }
    }
}

fn default_min_free_bytes() -> u64 {
    DEFAULT_MIN_FREE_BYTES
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    #[default]
    Embedded,
    Influxdb,
}

/// Which write API the database speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InfluxApi {
    /// InfluxDB 1.x: `/write?db=&rp=&precision=ms`, optional user name and password.
    #[default]
    V1,
    /// InfluxDB 2.x and 3.x: `/api/v2/write?org=&bucket=&precision=ms` with `Authorization: Token`.
    V2,
}

/// Where series queries read raw points when the InfluxDB backend is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InfluxRead {
    /// InfluxQL over `/query` (InfluxDB 1.x, 2.x through its v1 compatibility API, 3.x).
    #[default]
    Influxql,
    /// The local store (engines without InfluxQL, such as VictoriaMetrics).
    Local,
}

/// `[storage.influxdb]`. The token and password are never logged (its `Debug` hides them); give
/// them through `token_file` / `password_file` or `ENERGYD__STORAGE__INFLUXDB__TOKEN`.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InfluxConfig {
    /// `http://host:8086` (InfluxDB) or `http://host:8428` (VictoriaMetrics).
    pub url: String,
    #[serde(default)]
    pub api: InfluxApi,
    /// v1: the database (and InfluxQL reads for every API).
    #[serde(default)]
    pub database: Option<String>,
    /// v1: the retention policy (the database's default when absent).
    #[serde(default)]
    pub retention_policy: Option<String>,
    /// v2: the organisation and bucket.
    #[serde(default)]
    pub org: Option<String>,
    #[serde(default)]
    pub bucket: Option<String>,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    #[serde(default)]
    pub token: Option<String>,
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    #[serde(default)]
    pub read: InfluxRead,
    /// Most lines (one per meter and time, all its quantities as fields) per write request.
    #[serde(default = "default_batch_lines")]
    pub batch_lines: usize,
    /// A partial batch is sent after waiting this long for more.
    #[serde(default = "default_flush_ms")]
    pub flush_interval_ms: u64,
    /// Per request (writes and queries).
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Retry back-off after a failed write: doubles from `retry_min_ms` up to `retry_max_ms`.
    #[serde(default = "default_retry_min_ms")]
    pub retry_min_ms: u64,
    #[serde(default = "default_retry_max_ms")]
    pub retry_max_ms: u64,
    /// gzip request bodies (`Content-Encoding: gzip`).
    #[serde(default = "default_true")]
    pub gzip: bool,
    /// Bound of the spool (line protocol not yet accepted by the database, kept in the embedded
    /// store). At the bound, ingest answers 503 and gateways keep the data in their queues.
    #[serde(default = "default_max_spool_bytes")]
    pub max_spool_bytes: u64,
    /// Raw points kept in the local store (days). Default: `retention.raw_days`. Roll-ups are kept
    /// per `retention.rollup_days` either way.
    #[serde(default)]
    pub local_raw_days: Option<u32>,
    /// The measurement written and read.
    #[serde(default = "default_measurement")]
    pub measurement: String,
}

impl std::fmt::Debug for InfluxConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hidden = |s: &Option<String>| s.as_ref().map(|_| "<hidden>");
        f.debug_struct("InfluxConfig")
            .field("url", &self.url)
            .field("api", &self.api)
            .field("database", &self.database)
            .field("retention_policy", &self.retention_policy)
            .field("org", &self.org)
            .field("bucket", &self.bucket)
            .field("username", &self.username)
            .field("password", &hidden(&self.password))
            .field("password_file", &self.password_file)
            .field("token", &hidden(&self.token))
            .field("token_file", &self.token_file)
            .field("read", &self.read)
            .field("batch_lines", &self.batch_lines)
            .field("flush_interval_ms", &self.flush_interval_ms)
            .field("timeout_ms", &self.timeout_ms)
            .field("gzip", &self.gzip)
            .field("max_spool_bytes", &self.max_spool_bytes)
            .field("local_raw_days", &self.local_raw_days)
            .field("measurement", &self.measurement)
            .finish_non_exhaustive()
    }
}

impl InfluxConfig {
    /// The token: from `token`, else the first line of `token_file`. Never logged.
    pub fn token(&self) -> Result<Option<String>, SecretError> {
        secret(self.token.as_ref(), self.token_file.as_ref(), "token")
    }
    pub fn password(&self) -> Result<Option<String>, SecretError> {
        secret(self.password.as_ref(), self.password_file.as_ref(), "password")
    }
}

/// Why the token or password (`what`) could not be had.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("storage.influxdb: give either {what} or {what}_file, not both")]
    Both { what: &'static str },
    #[error("storage.influxdb.{what}_file {}: {source}", .file.display())]
    File { what: &'static str, file: PathBuf, source: std::io::Error },
}

fn secret(value: Option<&String>, file: Option<&PathBuf>, what: &'static str) -> Result<Option<String>, SecretError> {
    match (value, file) {
        (Some(_), Some(_)) => Err(SecretError::Both { what }),
        (Some(v), None) => Ok(Some(v.clone())),
        (None, Some(f)) => std::fs::read_to_string(f)
            .map(|s| Some(s.lines().next().unwrap_or_default().trim().to_string()))
            .map_err(|source| SecretError::File { what, file: f.clone(), source }),
        (None, None) => Ok(None),
    }
}

fn default_batch_lines() -> usize {
    5000
}
fn default_flush_ms() -> u64 {
    1000
}
fn default_timeout_ms() -> u64 {
    10_000
}
fn default_retry_min_ms() -> u64 {
    200
}
fn default_retry_max_ms() -> u64 {
    30_000
}
fn default_true() -> bool {
    true
}
fn default_max_spool_bytes() -> u64 {
    1 << 30
}
fn default_measurement() -> String {
    "energy".into()
}

impl StorageConfig {
    /// Every problem, named by its key.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        let Some(i) = &self.influxdb else {
            if self.backend == Backend::Influxdb {
                out.push("storage.backend = \"influxdb\" needs a [storage.influxdb] section with at least `url`".into());
            }
            return out;
        };
        match reqwest::Url::parse(&i.url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") => {}
            _ => out.push(format!("storage.influxdb.url `{}` is not an http:// or https:// URL", i.url)),
        }
        match i.api {
            InfluxApi::V1 => {
                if i.database.as_deref().is_none_or(str::is_empty) {
                    out.push("storage.influxdb.database is needed with api = \"v1\"".into());
                }
            }
            InfluxApi::V2 => {
                if i.bucket.as_deref().is_none_or(str::is_empty) {
                    out.push("storage.influxdb.bucket is needed with api = \"v2\"".into());
                }
                if i.read == InfluxRead::Influxql && i.database.as_deref().is_none_or(str::is_empty) {
                    out.push("storage.influxdb.database (the bucket's v1 name for InfluxQL) is needed with read = \"influxql\"; or set read = \"local\"".into());
                }
            }
        }
        if let Err(e) = i.token() {
            out.push(e.to_string());
        }
        if let Err(e) = i.password() {
            out.push(e.to_string());
        }
        if i.batch_lines == 0 {
            out.push("storage.influxdb.batch_lines must be at least 1".into());
        }
        if i.timeout_ms == 0 {
            out.push("storage.influxdb.timeout_ms must be at least 1".into());
        }
        if i.retry_min_ms == 0 || i.retry_max_ms < i.retry_min_ms {
            out.push("storage.influxdb.retry_min_ms must be at least 1 and at most retry_max_ms".into());
        }
        if i.max_spool_bytes < 1024 {
            out.push("storage.influxdb.max_spool_bytes must be at least 1024".into());
        }
        if i.local_raw_days == Some(0) {
            out.push("storage.influxdb.local_raw_days must be at least 1".into());
        }
        if i.measurement.is_empty() {
            out.push("storage.influxdb.measurement must not be empty".into());
        }
        out
    }

    /// The InfluxDB settings when that backend is on.
    pub fn influx(&self) -> Option<&InfluxConfig> {
        self.influxdb.as_ref().filter(|_| self.backend == Backend::Influxdb)
    }
}

/// Retention applied by the writer: at start and then once an hour it deletes raw points
/// (whole days) and roll-ups (whole hours) older than these. `None` keeps them forever.
#[derive(Debug, Clone, Copy)]
pub struct StoreOptions {
    pub raw_retention_ms: Option<i64>,
    pub rollup_retention_ms: Option<i64>,
    /// Whole UTC days ending more than this long ago are sealed into compressed chunks.
    pub seal_after_ms: i64,
    /// The head is flushed when its oldest point is this old (reads flush it anyway).
    pub head_max_age_ms: u64,
    /// Under this many free bytes on the data directory's file system, writes are refused and
    /// the store is read-only until there is this much again (`storage.min_free_bytes`).
    pub min_free_bytes: u64,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions { raw_retention_ms: None, rollup_retention_ms: None, seal_after_ms: 2 * HOUR_MS, head_max_age_ms: 5_000, min_free_bytes: DEFAULT_MIN_FREE_BYTES }
    }
}

/// `storage.min_free_bytes` by default: 64 MiB, the WAL's size between checkpoints.
pub const DEFAULT_MIN_FREE_BYTES: u64 = 64 << 20;
