//! `[[upstream]]`: energyd reports its buildings' item-coded consumption to the data centre
//! above it, in the same national protocol, as a collector would (issue 21): identity check
//! (as a lower centre: its division code as building id), heartbeats, reports of each settled
//! period (`interval_minutes`: 60, hourly statistics, or 15, raw quarter hours), and a durable
//! outbox resent after an outage (as `continuous`).
//!
//! What is sent: per building with a `national_id` and per energy item code of its meters, a
//! cumulative counter: 0 at the first period reported, then the previous value plus the
//! period's consumption (the same computation as `GET /api/v1/consumption?building=..&
//! interval=hour` or `interval=15min`, items). The upper centre stores it like any collector's
//! counter (its `[[meter]]` with `collector` = the building's national id, `collector_meter` =
//! the item code), so its consumption per building and item code equals this centre's.
//!
//! The outbox (`<data_dir>/upstream-<name>.sqlite`): the counters reached, the counters sent
//! per period end of the restating window, and one row per message, written in one transaction
//! (SQLite, synchronous FULL) before anything is sent; a row is deleted when the upper centre
//! acknowledged it. A restart or a broken link resends what is left, in order. Late data: a
//! period is reported `settle_minutes` after its end; a period of the last `restate_hours`
//! whose consumption changed later is queued again with its new counters (and the later ones
//! with them), which the upper centre stores in place of the old values: see
//! docs/national-protocol.md.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeZone};
use chrono_tz::Tz;
use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use super::crypto::Aes;
use super::frame::{self, Frame, FrameSpec};
use super::xml::{self, Body, Common, Data, DataOp, FunctionValue, HeartBeat, IdValidate, Message, MeterValues};
use crate::accounting::engine::Engine;
use crate::accounting::query::{self as aq, Subject};
use crate::registry::Registry;
use crate::store::Store;
use crate::time::Interval;

const HOUR_MS: i64 = 3_600_000;

/// A building's national id and, per energy item code, its consumption per hour.
pub type BuildingHours = (String, Vec<(String, Vec<f64>)>);

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// A name for logs, metrics and the outbox file.
    pub name: String,
    /// The upper centre's collector port, `host:port`.
    pub address: String,
    #[serde(default = "guideline")]
    pub framing: String,
    #[serde(default)]
    pub frame: Option<FrameSpec>,
    /// This centre's administrative division code (2 to 6 digits): its identity above, the
    /// prefix of the buildings it reports, and the start of its daily files' names.
    pub centre_id: String,
    /// The key the upper centre gave this one (TOML: `key`, optional `aes_key`, `aes_iv`,
    /// `padding`), mode 0600.
    pub key_file: PathBuf,
    /// Minutes per report: 60 (hourly statistics, the default) or 15 (raw quarter hours).
    #[serde(default = "sixty")]
    pub interval_minutes: u32,
    /// A period is reported this long after its end (late readings).
    #[serde(default)]
    pub settle_minutes: u32,
    /// How far back (hours before the last period reported) a period whose consumption changed
    /// later is reported again with its new value; 0: never.
    #[serde(default = "forty_eight")]
    pub restate_hours: u32,
    /// How often (seconds) that window is computed again: it reads `restate_hours` of every
    /// building's consumption, so not at every tick.
    #[serde(default = "three_hundred")]
    pub restate_every_s: u64,
    /// The first day reported (`YYYY-MM-DD`, local); default: the day the outbox is made.
    #[serde(default)]
    pub start: Option<String>,
    #[serde(default = "thirty")]
    pub heartbeat_s: u64,
    /// Where to write the daily files `<centre_id><YYYYMMDD>Build.xml` / `Energy.xml`; off when
    /// absent.
    #[serde(default)]
    pub files_dir: Option<PathBuf>,
}

fn guideline() -> String {
    "guideline".into()
}
fn sixty() -> u32 {
    60
}
fn three_hundred() -> u64 {
    300
}
fn forty_eight() -> u32 {
    48
}
fn thirty() -> u64 {
    30
}

/// The secret of an upstream link.
#[derive(Debug, Clone)]
pub struct UpKey {
    pub key: String,
    pub aes: Option<Aes>,
}

/// The report intervals a link may use, in minutes.
pub const ALLOWED_INTERVALS: [u32; 2] = [15, 60];
/// The longest look-back for restated periods (31 days).
pub const MAX_RESTATE_HOURS: u32 = 744;

impl UpstreamConfig {
    /// Milliseconds per reported period.
    pub fn period_ms(&self) -> i64 {
        i64::from(self.interval_minutes) * 60_000
    }

    /// The consumption query's interval for the reported periods.
    pub fn interval(&self) -> Interval {
        if self.interval_minutes == 15 {
            Interval::Quarter
        } else {
            Interval::Hour
        }
    }

    pub fn resolve(&mut self, base: &Path) {
        for f in [Some(&mut self.key_file), self.files_dir.as_mut()].into_iter().flatten() {
            if f.is_relative() {
                *f = base.join(&*f);
            }
        }
    }

    pub fn frame_spec(&self) -> Result<FrameSpec, String> {
        let spec = match &self.frame {
            Some(f) => f.clone(),
            None => FrameSpec::preset(&self.framing).ok_or_else(|| format!("upstream `{}`: framing `{}` is not a preset ({})", self.name, self.framing, FrameSpec::PRESETS.join(", ")))?,
        };
        spec.check().map_err(|e| format!("upstream `{}`: frame: {e}", self.name))?;
        Ok(spec)
    }

    pub fn key(&self) -> Result<UpKey, String> {
        use std::os::unix::fs::PermissionsExt as _;
        let at = format!("upstream `{}`: key_file {}", self.name, self.key_file.display());
        let meta = std::fs::metadata(&self.key_file).map_err(|e| format!("{at}: {e}"))?;
        if meta.permissions().mode() & 0o077 != 0 {
            return Err(format!("{at}: lets others read the key; chmod 600 it"));
        }
        let text = std::fs::read_to_string(&self.key_file).map_err(|e| format!("{at}: {e}"))?;
        let f: super::config::SecretEntry = toml::from_str(&text).map_err(|e| format!("{at}: {e}"))?;
        let mut problems = Vec::new();
        let aes = f.aes(&at, &mut problems);
        if f.key.is_empty() {
            problems.push(format!("{at}: an empty key"));
        }
        if !problems.is_empty() {
            return Err(problems.join("; "));
        }
        Ok(UpKey { key: f.key, aes })
    }

    pub fn problems(&self) -> Vec<String> {
        let mut e = Vec::new();
        if self.name.is_empty() || !self.name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
            e.push(format!("upstream `{}`: name must be letters, digits, - or _", self.name));
        }
        if !(2..=6).contains(&self.centre_id.len()) || !self.centre_id.bytes().all(|b| b.is_ascii_digit()) {
            e.push(format!("upstream `{}`: centre_id must be an administrative division code of 2 to 6 digits", self.name));
        }
        if !ALLOWED_INTERVALS.contains(&self.interval_minutes) {
            e.push(format!("upstream `{}`: interval_minutes = {} is not allowed; it must be 15 (raw quarter hours) or 60 (hourly statistics)", self.name, self.interval_minutes));
        }
        if self.restate_every_s == 0 {
            e.push(format!("upstream `{}`: restate_every_s must be at least 1", self.name));
        }
        if self.restate_hours > MAX_RESTATE_HOURS {
            e.push(format!("upstream `{}`: restate_hours = {} is more than {MAX_RESTATE_HOURS}", self.name, self.restate_hours));
        }
        if let Some(s) = &self.start {
            if crate::time::parse_date(s).is_none() {
                e.push(format!("upstream `{}`: start `{s}` is not a date YYYY-MM-DD", self.name));
            }
        }
        if let Err(x) = self.frame_spec() {
            e.push(x);
        }
        if let Err(x) = self.key() {
            e.push(x);
        }
        e
    }
}

/// One message waiting in the outbox.
#[derive(Debug, Clone, PartialEq)]
pub struct Pending {
    pub seq: i64,
    pub building: String,
    pub hour_ms: i64,
    /// (item code, counter value).
    pub values: Vec<(String, f64)>,
}

/// The durable outbox of one upstream link.
pub struct Outbox {
    conn: Connection,
}

impl Outbox {
    pub fn open(path: &Path) -> rusqlite::Result<Outbox> {
        let conn = Connection::open(path)?;
        conn.execute_batch(
            "PRAGMA journal_mode = DELETE; PRAGMA synchronous = FULL;
             CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v INTEGER NOT NULL);
             CREATE TABLE IF NOT EXISTS counters (building TEXT NOT NULL, code TEXT NOT NULL, value REAL NOT NULL, PRIMARY KEY (building, code));
             CREATE TABLE IF NOT EXISTS outbox (seq INTEGER PRIMARY KEY AUTOINCREMENT, building TEXT NOT NULL, hour_ms INTEGER NOT NULL, body TEXT NOT NULL);
             CREATE TABLE IF NOT EXISTS sent (building TEXT NOT NULL, period_ms INTEGER NOT NULL, body TEXT NOT NULL, PRIMARY KEY (building, period_ms));",
        )?;
        Ok(Outbox { conn })
    }

    /// The end of the last hour reported (the origin before the first).
    pub fn reported_until(&self) -> rusqlite::Result<Option<i64>> {
        self.conn.query_row("SELECT v FROM meta WHERE k = 'until'", [], |r| r.get(0)).optional()
    }

    /// Records the periods `[from, until)` of `period_ms` each: `hours[b][code]` the
    /// consumption per period; the counters move on and one message per building and period
    /// end is queued, in one transaction (each also kept in `sent`, for restating). A building
    /// or code seen for the first time starts at 0 at `from` (queued too, so that the upper
    /// centre has the counter's start).
    pub fn record(&mut self, from: i64, until: i64, period_ms: i64, hours: &[BuildingHours]) -> rusqlite::Result<usize> {
        let tx = self.conn.transaction()?;
        let mut queued = 0;
        for (building, codes) in hours {
            let mut origin: Vec<(String, f64)> = Vec::new();
            let mut counters: Vec<(String, f64)> = Vec::new();
            for (code, _) in codes {
                let v: Option<f64> = tx.query_row("SELECT value FROM counters WHERE building = ?1 AND code = ?2", params![building, code], |r| r.get(0)).optional()?;
                if v.is_none() {
                    origin.push((code.clone(), 0.0));
                }
                counters.push((code.clone(), v.unwrap_or(0.0)));
            }
            if !origin.is_empty() {
                tx.execute("INSERT INTO outbox (building, hour_ms, body) VALUES (?1, ?2, ?3)", params![building, from, encode_values(&origin)])?;
                if origin.len() == counters.len() {
                    tx.execute("INSERT OR REPLACE INTO sent (building, period_ms, body) VALUES (?1, ?2, ?3)", params![building, from, encode_values(&origin)])?;
                }
                queued += 1;
            }
            let n = codes.first().map_or(0, |(_, p)| p.len());
            for h in 0..n {
                for (i, (_, periods)) in codes.iter().enumerate() {
                    counters[i].1 += periods.get(h).copied().unwrap_or(0.0);
                }
                let at = from + (h as i64 + 1) * period_ms;
                let body = encode_values(&counters);
                tx.execute("INSERT INTO outbox (building, hour_ms, body) VALUES (?1, ?2, ?3)", params![building, at, body])?;
                tx.execute("INSERT OR REPLACE INTO sent (building, period_ms, body) VALUES (?1, ?2, ?3)", params![building, at, body])?;
                queued += 1;
            }
            for (code, v) in &counters {
                tx.execute("INSERT INTO counters (building, code, value) VALUES (?1, ?2, ?3) ON CONFLICT (building, code) DO UPDATE SET value = excluded.value", params![building, code, v])?;
            }
        }
        tx.execute("INSERT INTO meta (k, v) VALUES ('until', ?1) ON CONFLICT (k) DO UPDATE SET v = excluded.v", params![until])?;
        tx.commit()?;
        Ok(queued)
    }

    /// Restates the periods `[from, from + n * period_ms)` already recorded: `periods[b][code]`
    /// their consumption as computed now. From the counters sent at `from` or the first period
    /// end sent after it (the baseline),
    /// each period end's counters are computed again; where they differ from what was sent,
    /// the period is queued again with its new counters (the same building and time: the
    /// upper centre replaces its value). A building without a baseline, or whose codes are not
    /// the baseline's, is left alone (it is reported on from its next period as usual). The
    /// counters go on from the new last value. Returns the messages queued.
    pub fn restate(&mut self, from: i64, period_ms: i64, periods: &[BuildingHours]) -> rusqlite::Result<usize> {
        let tx = self.conn.transaction()?;
        let mut queued = 0;
        for (building, codes) in periods {
            let sent_at = |at: i64| -> rusqlite::Result<Option<Vec<(String, f64)>>> {
                Ok(tx.query_row("SELECT body FROM sent WHERE building = ?1 AND period_ms = ?2", params![building, at], |r| r.get::<_, String>(0)).optional()?.map(|b| decode_values(&b)))
            };
            // The baseline: the first period end sent in the window (a link younger than the
            // window has none at `from`).
            let first: Option<i64> = tx.query_row("SELECT min(period_ms) FROM sent WHERE building = ?1 AND period_ms >= ?2", params![building, from], |r| r.get(0))?;
            let Some(first) = first else { continue };
            let skip = usize::try_from((first - from) / period_ms).unwrap_or(usize::MAX);
            let Some(mut counters) = sent_at(first)? else { continue };
            if counters.len() != codes.len() || counters.iter().zip(codes).any(|((a, _), (b, _))| a != b) {
                continue;
            }
            let n = codes.first().map_or(0, |(_, p)| p.len());
            let (mut changed, mut whole) = (false, true);
            for h in skip..n {
                for (i, (_, p)) in codes.iter().enumerate() {
                    counters[i].1 += p.get(h).copied().unwrap_or(0.0);
                }
                let at = from + (h as i64 + 1) * period_ms;
                let Some(before) = sent_at(at)? else {
                    whole = false;
                    break;
                };
                if before.len() == counters.len() && before.iter().zip(&counters).all(|((c1, a), (c2, b))| c1 == c2 && same(*a, *b)) {
                    continue;
                }
                let body = encode_values(&counters);
                tx.execute("INSERT INTO outbox (building, hour_ms, body) VALUES (?1, ?2, ?3)", params![building, at, body])?;
                tx.execute("UPDATE sent SET body = ?3 WHERE building = ?1 AND period_ms = ?2", params![building, at, body])?;
                queued += 1;
                changed = true;
            }
            if changed && whole {
                for (code, v) in &counters {
                    tx.execute("UPDATE counters SET value = ?3 WHERE building = ?1 AND code = ?2", params![building, code, v])?;
                }
            }
        }
        tx.commit()?;
        Ok(queued)
    }

    /// Forgets the counters sent for periods before `before` (beyond the restating window).
    pub fn forget_sent(&self, before: i64) -> rusqlite::Result<()> {
        self.conn.execute("DELETE FROM sent WHERE period_ms < ?1", params![before]).map(|_| ())
    }

    /// The first `limit` messages waiting, oldest first.
    pub fn pending(&self, limit: usize) -> rusqlite::Result<Vec<Pending>> {
        let mut st = self.conn.prepare("SELECT seq, building, hour_ms, body FROM outbox ORDER BY seq LIMIT ?1")?;
        let rows = st.query_map(params![limit as i64], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?, r.get::<_, i64>(2)?, r.get::<_, String>(3)?)))?;
        let mut out = Vec::new();
        for r in rows {
            let (seq, building, hour_ms, body) = r?;
            out.push(Pending { seq, building, hour_ms, values: decode_values(&body) });
        }
        Ok(out)
    }

    pub fn count(&self) -> rusqlite::Result<i64> {
        self.conn.query_row("SELECT count(*) FROM outbox", [], |r| r.get(0))
    }

    /// The oldest hour waiting.
    pub fn oldest(&self) -> rusqlite::Result<Option<i64>> {
        self.conn.query_row("SELECT min(hour_ms) FROM outbox", [], |r| r.get(0))
    }

    /// The last local day whose daily files were written (as days since the epoch).
    pub fn files_day(&self) -> rusqlite::Result<Option<i64>> {
        self.conn.query_row("SELECT v FROM meta WHERE k = 'files_day'", [], |r| r.get(0)).optional()
    }

    pub fn set_files_day(&self, day: i64) -> rusqlite::Result<()> {
        self.conn.execute("INSERT INTO meta (k, v) VALUES ('files_day', ?1) ON CONFLICT (k) DO UPDATE SET v = excluded.v", params![day]).map(|_| ())
    }

    pub fn done(&self, seq: i64) -> rusqlite::Result<()> {
        self.conn.execute("DELETE FROM outbox WHERE seq = ?1", params![seq]).map(|_| ())
    }
}

/// `code=value;code=value` (values as Rust prints f64: shortest text that reads back exactly).
fn encode_values(v: &[(String, f64)]) -> String {
    v.iter().map(|(c, x)| format!("{c}={x}")).collect::<Vec<_>>().join(";")
}

/// Two counter values equal but for rounding (a recomputation adds in another order): within
/// a millionth of a unit or a billionth of the value.
fn same(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-6_f64.max(a.abs().max(b.abs()) * 1e-9)
}

fn decode_values(s: &str) -> Vec<(String, f64)> {
    s.split(';').filter_map(|p| p.split_once('=')).filter_map(|(c, v)| Some((c.to_string(), v.parse().ok()?))).collect()
}

/// The report message of a pending row.
pub fn message(centre: &str, p: &Pending, tz: Tz, continuous: bool) -> Message {
    let time = tz.timestamp_millis_opt(p.hour_ms).single().map(|t| t.format(super::session::TIME_FORMAT).to_string()).unwrap_or_default();
    let op = if continuous { DataOp::Continuous } else { DataOp::Report };
    Message {
        common: Common { building_id: p.building.clone(), gateway_id: centre.to_string(), kind: op.as_str().to_string() },
        body: Body::Data(Data {
            operation: Some(op),
            sequence: Some(p.seq.to_string()),
            parser: Some("yes".into()),
            time: Some(time),
            total: Some(1),
            current: Some(1),
            meters: p
                .values
                .iter()
                .map(|(code, v)| MeterValues { id: code.clone(), name: None, functions: vec![FunctionValue { id: "1".into(), coding: Some(code.clone()), error: None, value: format!("{v}") }] })
                .collect(),
            ..Data::default()
        }),
    }
}

/// The daily files of the data-centre guide (2009 software guide, shared reference): `Build.xml`
/// (the buildings reported) and `Energy.xml` (their hourly consumption by item code), UTF-8.
pub fn daily_files(centre: &str, day: chrono::NaiveDate, reg: &Registry, hours: &[BuildingHours], tz: Tz) -> (String, String, String, String) {
    let esc = |s: &str| quick_xml::escape::escape(s).into_owned();
    let date = day.format("%Y%m%d").to_string();
    let head = |kind: &str| format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<root><common><centre_id>{}</centre_id><date>{date}</date><type>{kind}</type></common>", esc(centre));
    let mut build = head("build");
    for b in reg.file.buildings.iter().filter(|b| b.national_id.as_deref().is_some_and(|n| hours.iter().any(|(h, _)| h == n))) {
        build.push_str(&format!(
            "<building id=\"{}\" name=\"{}\" floor_area=\"{}\" type=\"{}\"/>",
            esc(b.national_id.as_deref().unwrap_or("")),
            esc(&b.name),
            b.floor_area,
            b.national_id.as_deref().and_then(|n| n.get(6..7)).unwrap_or("")
        ));
    }
    build.push_str("</root>\n");
    let start = crate::time::day_start(tz, day);
    let mut energy = head("energy");
    for (building, codes) in hours {
        energy.push_str(&format!("<building id=\"{}\">", esc(building)));
        for (code, periods) in codes {
            energy.push_str(&format!("<energy_item code=\"{}\" total=\"{}\">", esc(code), periods.iter().sum::<f64>()));
            for (h, v) in periods.iter().enumerate() {
                let t = (start + chrono::Duration::hours(h as i64)).format(super::session::TIME_FORMAT);
                energy.push_str(&format!("<hour time=\"{t}\">{v}</hour>"));
            }
            energy.push_str("</energy_item>");
        }
        energy.push_str("</building>");
    }
    energy.push_str("</root>\n");
    (format!("{centre}{date}Build.xml"), build, format!("{centre}{date}Energy.xml"), energy)
}

/// Writes a file whole or not at all: a temporary file, synced, renamed, the directory synced.
fn write_atomic(dir: &Path, name: &str, text: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(".{name}.tmp"));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, dir.join(name))?;
    std::fs::File::open(dir)?.sync_all()
}

/// The handles an upstream link needs.
pub struct UpParts {
    pub store: Store,
    pub registry: Arc<Registry>,
    pub engine: Arc<Engine>,
    pub tz: Tz,
    pub data_dir: PathBuf,
    pub metrics: prometheus::Registry,
}

/// Runs one link until `cancel`.
pub async fn run(cfg: UpstreamConfig, parts: UpParts, cancel: CancellationToken) {
    let link = match Link::new(cfg, parts) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!("upstream link not started: {e}");
            return;
        }
    };
    link.run(cancel).await;
}

struct Link {
    cfg: UpstreamConfig,
    spec: FrameSpec,
    key: UpKey,
    p: UpParts,
    outbox: Arc<std::sync::Mutex<Outbox>>,
    pending: prometheus::IntGauge,
    lag: prometheus::Gauge,
    sent: prometheus::IntCounter,
    restated: prometheus::IntCounter,
    /// When the restating window was last computed (at most every `restate_every_s`).
    last_restate: std::sync::Mutex<Option<std::time::Instant>>,
}

impl Link {
    fn new(cfg: UpstreamConfig, p: UpParts) -> Result<Link, String> {
        let spec = cfg.frame_spec()?;
        let key = cfg.key()?;
        let path = p.data_dir.join(format!("upstream-{}.sqlite", cfg.name));
        let outbox = Outbox::open(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let label = |n: &str, h: &str| prometheus::Opts::new(n, h).const_label("upstream", cfg.name.clone());
        let pending = prometheus::IntGauge::with_opts(label("energyd_upstream_pending", "Messages in the upstream outbox")).map_err(|e| e.to_string())?;
        let lag = prometheus::Gauge::with_opts(label("energyd_upstream_lag_seconds", "Age of the oldest hour waiting in the upstream outbox (0 when empty)")).map_err(|e| e.to_string())?;
        let sent = prometheus::IntCounter::with_opts(label("energyd_upstream_sent_total", "Upstream messages acknowledged by the upper centre")).map_err(|e| e.to_string())?;
        let _ = p.metrics.register(Box::new(pending.clone()));
        let _ = p.metrics.register(Box::new(lag.clone()));
        let restated = prometheus::IntCounter::with_opts(label("energyd_upstream_restated_total", "Periods queued again because their consumption changed after they were reported")).map_err(|e| e.to_string())?;
        let _ = p.metrics.register(Box::new(sent.clone()));
        let _ = p.metrics.register(Box::new(restated.clone()));
        Ok(Link { cfg, spec, key, p, outbox: Arc::new(std::sync::Mutex::new(outbox)), pending, lag, sent, restated, last_restate: std::sync::Mutex::new(None) })
    }

    async fn blocking<R: Send + 'static>(&self, f: impl FnOnce(&mut Outbox) -> rusqlite::Result<R> + Send + 'static) -> Result<R, String> {
        let o = self.outbox.clone();
        tokio::task::spawn_blocking(move || f(&mut o.lock().unwrap_or_else(|e| e.into_inner())).map_err(|e| e.to_string())).await.map_err(|e| e.to_string())?
    }

    /// Queues the settled periods not yet recorded, then the restated ones.
    async fn produce(&self) -> Result<usize, String> {
        let period = self.cfg.period_ms();
        let now = chrono::Utc::now().timestamp_millis();
        let settled = now - i64::from(self.cfg.settle_minutes) * 60_000;
        let last_end = settled.div_euclid(period) * period;
        let from = match self.blocking(|o| o.reported_until()).await? {
            Some(u) => u,
            None => {
                let day = self.cfg.start.as_deref().and_then(crate::time::parse_date).unwrap_or_else(|| crate::time::today(self.p.tz));
                crate::time::day_start(self.p.tz, day).timestamp_millis().div_euclid(period) * period
            }
        };
        let mut queued = 0;
        if last_end > from {
            // At most a month (hours) or two days (quarter hours) per pass, so that a long
            // outage catches up in steps.
            let span = if period < HOUR_MS { 2 * 24 * HOUR_MS } else { 31 * 24 * HOUR_MS };
            let until = last_end.min(from + span);
            let periods = self.hours(self.at(from)?, self.at(until)?, self.cfg.interval()).await?;
            queued += self.blocking(move |o| o.record(from, until, period, &periods)).await?;
        }
        queued += self.restate().await?;
        Ok(queued)
    }

    fn at(&self, ms: i64) -> Result<DateTime<Tz>, String> {
        self.p.tz.timestamp_millis_opt(ms).single().ok_or_else(|| format!("time {ms} out of range"))
    }

    /// Reports again the periods of the last `restate_hours` whose consumption changed since
    /// they were sent (late readings, a collector's backlog): the window is computed again
    /// each pass and compared with what was sent.
    async fn restate(&self) -> Result<usize, String> {
        {
            let mut last = self.last_restate.lock().unwrap_or_else(|e| e.into_inner());
            if last.is_some_and(|t| t.elapsed() < Duration::from_secs(self.cfg.restate_every_s)) {
                return Ok(0);
            }
            *last = Some(std::time::Instant::now());
        }
        let period = self.cfg.period_ms();
        let Some(until) = self.blocking(|o| o.reported_until()).await? else { return Ok(0) };
        let window = i64::from(self.cfg.restate_hours) * HOUR_MS;
        let from = (until - window).div_euclid(period) * period;
        self.blocking(move |o| o.forget_sent(from)).await?;
        if window == 0 || from >= until {
            return Ok(0);
        }
        let periods = self.hours(self.at(from)?, self.at(until)?, self.cfg.interval()).await?;
        let n = self.blocking(move |o| o.restate(from, period, &periods)).await?;
        if n > 0 {
            self.restated.inc_by(n as u64);
            tracing::info!(upstream = %self.cfg.name, restated = n, "upstream: periods whose consumption changed are reported again");
        }
        Ok(n)
    }

    /// Per building with a national id: its item codes' consumption per period of `interval`
    /// in `[from, to)`.
    async fn hours(&self, from: DateTime<Tz>, to: DateTime<Tz>, interval: Interval) -> Result<Vec<BuildingHours>, String> {
        let reg = &self.p.registry;
        let events = self.p.engine.events_by_meter();
        let n = crate::time::boundaries(from, to, interval, aq::MAX_PERIODS).map_or(0, |b| b.len().saturating_sub(1));
        let mut out = Vec::new();
        for b in &reg.file.buildings {
            let Some(nid) = &b.national_id else { continue };
            if !nid.starts_with(&self.cfg.centre_id) {
                continue;
            }
            let scope = aq::scope_meters(reg, Subject::Building(&b.id), None, None).map_err(|e| e.to_string())?;
            let mut codes: Vec<String> = scope.iter().filter_map(|x| x.meter.item_code.clone()).collect();
            codes.sort();
            codes.dedup();
            if codes.is_empty() {
                continue;
            }
            let c = aq::consumption(&self.p.store, reg, &events, Subject::Building(&b.id), &scope, (None, None), (from, to), interval).await.map_err(|e| e.to_string())?;
            let items = c.item_periods();
            let per_code: Vec<(String, Vec<f64>)> = codes.into_iter().map(|code| {
                let periods = items.iter().find(|(c, _)| *c == code).map(|(_, p)| p.clone()).unwrap_or_else(|| vec![0.0; n]);
                (code, periods)
            }).collect();
            out.push((nid.clone(), per_code));
        }
        Ok(out)
    }

    /// Writes the daily files of every whole local day reported and not yet written.
    async fn files(&self) -> Result<(), String> {
        let Some(dir) = self.cfg.files_dir.clone() else { return Ok(()) };
        let Some(until) = self.blocking(|o| o.reported_until()).await? else { return Ok(()) };
        let tz = self.p.tz;
        let Some(until_day) = tz.timestamp_millis_opt(until).single().map(|t| t.date_naive()) else { return Ok(()) };
        let epoch = chrono::NaiveDate::from_ymd_opt(1970, 1, 1).unwrap_or_default();
        let first = match self.blocking(|o| o.files_day()).await? {
            Some(d) => epoch + chrono::Duration::days(d + 1),
            None => self.cfg.start.as_deref().and_then(crate::time::parse_date).unwrap_or(until_day),
        };
        let mut day = first;
        // Days whose end is reported: the day before `until`'s day, and `until`'s own if
        // `until` is its midnight.
        while crate::time::day_start(tz, day + chrono::Duration::days(1)).timestamp_millis() <= until {
            let (f, t) = (crate::time::day_start(tz, day), crate::time::day_start(tz, day + chrono::Duration::days(1)));
            let hours = self.hours(f, t, Interval::Hour).await?;
            let (bn, b, en, e) = daily_files(&self.cfg.centre_id, day, &self.p.registry, &hours, tz);
            let d2 = dir.clone();
            tokio::task::spawn_blocking(move || write_atomic(&d2, &bn, &b).and_then(|()| write_atomic(&d2, &en, &e))).await.map_err(|e| e.to_string())?.map_err(|e| format!("daily files in {}: {e}", dir.display()))?;
            let n = (day - epoch).num_days();
            self.blocking(move |o| o.set_files_day(n)).await?;
            day += chrono::Duration::days(1);
        }
        Ok(())
    }

    async fn run(self, cancel: CancellationToken) {
        let mut backoff = Duration::from_millis(500);
        loop {
            if cancel.is_cancelled() {
                return;
            }
            if let Err(e) = self.produce().await {
                tracing::warn!(upstream = %self.cfg.name, "upstream: the hours could not be queued: {e}");
            }
            if let Err(e) = self.files().await {
                tracing::warn!(upstream = %self.cfg.name, "upstream: daily files: {e}");
            }
            self.update_gauges().await;
            match self.session(&cancel).await {
                Ok(()) => backoff = Duration::from_millis(500),
                Err(e) => {
                    tracing::warn!(upstream = %self.cfg.name, "upstream link: {e}; retrying in {backoff:?}");
                    tokio::select! {
                        () = cancel.cancelled() => return,
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
            }
        }
    }

    async fn update_gauges(&self) {
        if let Ok((n, oldest)) = self.blocking(|o| Ok((o.count()?, o.oldest()?))).await {
            self.pending.set(n);
            let now = chrono::Utc::now().timestamp_millis();
            self.lag.set(oldest.map_or(0.0, |h| ((now - h) as f64 / 1000.0).max(0.0)));
        }
    }

    /// One connection: identity, then the outbox drained and heartbeats, new hours queued as
    /// they settle, until an error or `cancel`.
    async fn session(&self, cancel: &CancellationToken) -> Result<(), String> {
        let tcp = tokio::time::timeout(Duration::from_secs(10), tokio::net::TcpStream::connect(&self.cfg.address)).await.map_err(|_| format!("connecting to {} timed out", self.cfg.address))?.map_err(|e| format!("connecting to {}: {e}", self.cfg.address))?;
        let _ = tcp.set_nodelay(true);
        let mut c = Conn { s: tcp, buf: Vec::new(), spec: &self.spec, aes: self.key.aes.clone(), seq: 0 };
        let common = Common { building_id: self.cfg.centre_id.clone(), gateway_id: self.cfg.centre_id.clone(), kind: "id_validate".into() };
        c.send(&Message { common: common.clone(), body: Body::IdValidate(IdValidate::Request) }).await?;
        let seq = match c.recv().await?.body {
            Body::IdValidate(IdValidate::Sequence(s)) => s,
            other => return Err(format!("expected a sequence, got {other:?}")),
        };
        c.send(&Message { common: common.clone(), body: Body::IdValidate(IdValidate::Md5(super::crypto::identity_md5(&self.key.key, &seq))) }).await?;
        match c.recv().await?.body {
            Body::IdValidate(IdValidate::Result(true)) => tracing::info!(upstream = %self.cfg.name, "upstream identity check passed"),
            Body::IdValidate(IdValidate::Result(false)) => return Err("the upper centre refused this centre's identity (wrong key?)".into()),
            other => return Err(format!("expected a result, got {other:?}")),
        }
        let mut last_beat = std::time::Instant::now();
        let mut tick = tokio::time::interval(Duration::from_secs(2));
        loop {
            let batch = self.blocking(|o| o.pending(256)).await?;
            let now = chrono::Utc::now().timestamp_millis();
            for p in &batch {
                let m = message(&self.cfg.centre_id, p, self.p.tz, p.hour_ms < now - 2 * self.cfg.period_ms().max(HOUR_MS));
                c.send(&m).await?;
                match c.recv().await?.body {
                    Body::Data(Data { operation: Some(DataOp::ReportAck | DataOp::ContinuousAck), sequence, ack, .. }) if sequence.as_deref() == Some(&p.seq.to_string()) && ack.as_deref() != Some("fail") => {}
                    other => return Err(format!("message {} not acknowledged: {other:?}", p.seq)),
                }
                let seq = p.seq;
                self.blocking(move |o| o.done(seq)).await?;
                self.sent.inc();
            }
            if !batch.is_empty() {
                self.update_gauges().await;
                continue;
            }
            if last_beat.elapsed() >= Duration::from_secs(self.cfg.heartbeat_s.max(1)) {
                c.send(&Message { common: Common { kind: "heart_beat".into(), ..common.clone() }, body: Body::HeartBeat(HeartBeat::Notify) }).await?;
                match c.recv().await?.body {
                    Body::HeartBeat(HeartBeat::Time(_)) => {}
                    other => return Err(format!("heartbeat not answered: {other:?}")),
                }
                last_beat = std::time::Instant::now();
            }
            tokio::select! {
                () = cancel.cancelled() => return Ok(()),
                _ = tick.tick() => {}
            }
            self.produce().await?;
            if let Err(e) = self.files().await {
                tracing::warn!(upstream = %self.cfg.name, "upstream: daily files: {e}");
            }
            self.update_gauges().await;
        }
    }
}

struct Conn<'a> {
    s: tokio::net::TcpStream,
    buf: Vec<u8>,
    spec: &'a FrameSpec,
    aes: Option<Aes>,
    seq: u32,
}

impl Conn<'_> {
    async fn send(&mut self, m: &Message) -> Result<(), String> {
        let x = xml::write(m);
        let payload = match &self.aes {
            Some(a) => a.encrypt(&x),
            None => x,
        };
        self.seq = self.seq.wrapping_add(1);
        let b = frame::encode(self.spec, &Frame { type_byte: 1, sequence: self.seq, payload });
        self.s.write_all(&b).await.map_err(|e| format!("sending: {e}"))
    }

    async fn recv(&mut self) -> Result<Message, String> {
        loop {
            if let Some((f, used)) = frame::decode(self.spec, &self.buf, xml::MAX_MESSAGE_BYTES).map_err(|e| e.to_string())? {
                self.buf.drain(..used);
                let plain = match &self.aes {
                    Some(a) => a.decrypt(&f.payload).map_err(|e| e.to_string())?,
                    None => f.payload,
                };
                return xml::parse(&plain).map_err(|e| e.to_string());
            }
            let mut chunk = [0u8; 8192];
            let n = tokio::time::timeout(Duration::from_secs(60), self.s.read(&mut chunk)).await.map_err(|_| "no answer within 60 s".to_string())?.map_err(|e| format!("reading: {e}"))?;
            if n == 0 {
                return Err("the upper centre closed the connection".into());
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outbox_counters_by_hand() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("o.sqlite");
        let mut o = Outbox::open(&p).unwrap();
        assert_eq!(o.reported_until().unwrap(), None);
        // Building X, two hours from t0: lighting 1.5 then 2.0, HVAC 0 then 4.25.
        let t0 = 1_767_225_600_000;
        let hours = vec![("110101A001".to_string(), vec![("01A00".to_string(), vec![1.5, 2.0]), ("01B00".to_string(), vec![0.0, 4.25])])];
        assert_eq!(o.record(t0, t0 + 2 * HOUR_MS, HOUR_MS, &hours).unwrap(), 3);
        let p1 = o.pending(10).unwrap();
        // The origin at 0, then the counters: 1.5 / 0, then 3.5 / 4.25.
        let vals: Vec<(i64, Vec<(String, f64)>)> = p1.iter().map(|p| (p.hour_ms - t0, p.values.clone())).collect();
        assert_eq!(
            vals,
            vec![
                (0, vec![("01A00".into(), 0.0), ("01B00".into(), 0.0)]),
                (HOUR_MS, vec![("01A00".into(), 1.5), ("01B00".into(), 0.0)]),
                (2 * HOUR_MS, vec![("01A00".into(), 3.5), ("01B00".into(), 4.25)]),
            ]
        );
        o.done(p1[0].seq).unwrap();
        drop(o);
        // Reopened: the rest waits, the counters go on from 3.5 / 4.25 (no new origin).
        let mut o = Outbox::open(&p).unwrap();
        assert_eq!(o.reported_until().unwrap(), Some(t0 + 2 * HOUR_MS));
        assert_eq!(o.count().unwrap(), 2);
        let next = vec![("110101A001".to_string(), vec![("01A00".to_string(), vec![0.5]), ("01B00".to_string(), vec![1.0])])];
        assert_eq!(o.record(t0 + 2 * HOUR_MS, t0 + 3 * HOUR_MS, HOUR_MS, &next).unwrap(), 1);
        let last = o.pending(10).unwrap().pop().unwrap();
        assert_eq!(last.values, vec![("01A00".to_string(), 4.0), ("01B00".to_string(), 5.25)]);
        assert_eq!(o.oldest().unwrap(), Some(t0 + HOUR_MS));
        // The message: building id, the centre as gateway, the time in the zone, a meter per code.
        let m = message("110101", &last, "Asia/Shanghai".parse().unwrap(), true);
        let x = String::from_utf8(xml::write(&m)).unwrap();
        assert!(x.contains("<building_id>110101A001</building_id>") && x.contains("operation=\"continuous\"") && x.contains("<time>20260101110000</time>"), "{x}");
        assert!(x.contains("<meter id=\"01B00\"><function id=\"1\" coding=\"01B00\">5.25</function></meter>"), "{x}");
    }

    #[test]
    fn upstream_quarter_hours_and_restated_periods_by_hand() {
        let dir = tempfile::tempdir().unwrap();
        let mut o = Outbox::open(&dir.path().join("o.sqlite")).unwrap();
        let q = 15 * 60_000;
        let t0 = 1_767_225_600_000;
        // Three quarter hours of lighting: 1, 2, 3 -> counters 0 (origin), 1, 3, 6.
        let b = |v: Vec<f64>| vec![("110101A001".to_string(), vec![("01A00".to_string(), v)])];
        assert_eq!(o.record(t0, t0 + 3 * q, q, &b(vec![1.0, 2.0, 3.0])).unwrap(), 4);
        let times: Vec<i64> = o.pending(10).unwrap().iter().map(|p| (p.hour_ms - t0) / q).collect();
        assert_eq!(times, vec![0, 1, 2, 3]);
        for p in o.pending(10).unwrap() {
            o.done(p.seq).unwrap();
        }
        // Nothing changed: nothing restated.
        assert_eq!(o.restate(t0, q, &b(vec![1.0, 2.0, 3.0])).unwrap(), 0);
        // A late reading adds 0.5 to the second quarter: the counters at its end and after
        // move, 3 -> 3.5 and 6 -> 6.5; the first (1) stays.
        assert_eq!(o.restate(t0, q, &b(vec![1.0, 2.5, 3.0])).unwrap(), 2);
        let again: Vec<(i64, f64)> = o.pending(10).unwrap().iter().map(|p| ((p.hour_ms - t0) / q, p.values[0].1)).collect();
        assert_eq!(again, vec![(2, 3.5), (3, 6.5)]);
        // The next quarter goes on from 6.5 (+1 = 7.5); a restating window that starts before
        // the first period sent (t0 - 2q) takes the first one sent as its baseline.
        o.record(t0 + 3 * q, t0 + 4 * q, q, &b(vec![1.0])).unwrap();
        assert_eq!(o.pending(10).unwrap().last().unwrap().values[0].1, 7.5);
        assert_eq!(o.restate(t0 - 2 * q, q, &b(vec![0.0, 0.0, 1.0, 2.5, 3.0, 1.0])).unwrap(), 0);
        // Forgotten beyond the window: no baseline, nothing restated.
        o.forget_sent(t0 + 10 * q).unwrap();
        assert_eq!(o.restate(t0, q, &b(vec![9.0, 9.0, 9.0, 9.0])).unwrap(), 0);
    }

    #[test]
    fn upstream_interval_must_be_15_or_60() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("k.toml");
        std::fs::write(&key, "key = \"s\"\n").unwrap();
        std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
        let cfg = |m: u32| UpstreamConfig { name: "city".into(), address: "127.0.0.1:1".into(), framing: guideline(), frame: None, centre_id: "110101".into(), key_file: key.clone(), interval_minutes: m, settle_minutes: 0, restate_hours: 48, restate_every_s: 300, start: None, heartbeat_s: 30, files_dir: None };
        assert!(cfg(15).problems().is_empty(), "{:?}", cfg(15).problems());
        assert!(cfg(60).problems().is_empty());
        let p = cfg(30).problems();
        assert!(p.len() == 1 && p[0].contains("interval_minutes = 30") && p[0].contains("15") && p[0].contains("60"), "{p:?}");
        assert_eq!((cfg(15).period_ms(), cfg(15).interval()), (900_000, Interval::Quarter));
    }

    #[test]
    fn daily_files_by_hand() {
        let reg = Registry::parse("[[agency]]\nid = \"a\"\nname = \"A\"\nlevel = \"county\"\n[[building]]\nid = \"b\"\nname = \"一号楼\"\nnational_id = \"110101A001\"\nfloor_area = 100\noccupants = [{ agency = \"a\", share = 1.0 }]\n").unwrap();
        let day = chrono::NaiveDate::from_ymd_opt(2026, 12, 5).unwrap();
        let mut periods = vec![0.0; 24];
        periods[1] = 2.5;
        periods[23] = 1.0;
        let hours = vec![("110101A001".to_string(), vec![("01A00".to_string(), periods)])];
        let (bn, b, en, e) = daily_files("110101", day, &reg, &hours, "Asia/Shanghai".parse().unwrap());
        assert_eq!((bn.as_str(), en.as_str()), ("11010120261205Build.xml", "11010120261205Energy.xml"));
        assert!(b.contains("<building id=\"110101A001\" name=\"一号楼\" floor_area=\"100\" type=\"A\"/>"), "{b}");
        // The total 3.5 = 2.5 + 1.0; the second hour starts at 01:00 local.
        assert!(e.contains("<energy_item code=\"01A00\" total=\"3.5\">") && e.contains("<hour time=\"20261205010000\">2.5</hour>") && e.contains("<hour time=\"20261205230000\">1</hour>"), "{e}");
    }
}
