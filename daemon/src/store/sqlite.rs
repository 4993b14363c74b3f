use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use energy_wire::{Batch, Quantity};
use rusqlite::{params, Connection, OptionalExtension};
use tokio::sync::oneshot;

use super::chunks::{self, day_of};
use super::codec;
use super::{Point, FORMAT_VERSION};
use crate::accounting::rollup::{hour_of, HourRollup, HOUR_MS};
use crate::metrics::Metrics;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("storage error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("store {path} has format version {found}; this build reads version {FORMAT_VERSION} (and upgrades versions 1 to 6 in place). Use the energyd release that wrote it, or restore a backup made by this version")]
    Version { path: PathBuf, found: String },
    #[error("cannot create data directory {path}: {source}")]
    Dir { path: PathBuf, source: std::io::Error },
    #[error("the store's writer has stopped")]
    Closed,
    #[error("storage task failed: {0}")]
    Task(String),
    #[error("the spool of points waiting for InfluxDB is full ({bytes} bytes, bound {max} bytes): InfluxDB is down or slower than ingest; retry later")]
    SpoolFull { bytes: u64, max: u64 },
    #[error("InfluxDB query failed: {0}")]
    Remote(String),
    /// The disk holding the store is full: the store is read-only until space returns.
    #[error("{0}")]
    DiskFull(String),
}

/// One queue epoch of a gateway, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayEpoch {
    /// `None`: batches without an epoch (gateways and queues from before epochs).
    pub epoch: Option<String>,
    /// When its first and its latest batch were stored (unknown for ranges upgraded from
    /// format version 6).
    pub first_ms: Option<i64>,
    pub last_ms: Option<i64>,
    /// Stored sequence ranges, merged and sorted.
    pub ranges: Vec<(u64, u64)>,
}

/// What one write did.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct WriteOutcome {
    /// Samples stored (batches only).
    pub samples_stored: u64,
    /// Samples dropped because their (gateway, sequence) was already stored.
    pub samples_duplicate: u64,
    /// Points newly written.
    pub points_written: u64,
    /// Points already stored with the same value.
    pub points_unchanged: u64,
    /// Points offered with a value different from the one stored at the same meter, quantity
    /// and time: not applied, kept aside in `conflicts` ([`Conflict`]).
    pub points_conflicting: u64,
    /// The first [`MAX_CONFLICTS_SHOWN`] of them, for the answer.
    #[serde(skip)]
    pub conflicts: Vec<Conflict>,
    /// A correction ([`Embedded::correct`]): what it changed.
    #[serde(skip)]
    pub corrected: Option<Corrected>,
    /// Highest sequence number up to which this gateway's samples are stored without a gap
    /// (batches only).
    pub acked_through: u64,
    /// All stored sequence ranges of the batch's gateway and queue epoch after this write
    /// (batches only).
    #[serde(skip)]
    pub ranges: Vec<(u64, u64)>,
    /// The batch's queue epoch (batches from a queue with one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub epoch: Option<String>,
    /// The batch was the first stored of its (gateway, epoch): a new queue (batches only).
    #[serde(skip)]
    pub new_epoch: bool,
    /// Other epochs of the batch's gateway already stored, when `new_epoch`.
    #[serde(skip)]
    pub earlier_epochs: Vec<String>,
    /// Raw points sealed into compressed chunks ([`Store::compact`] only).
    #[serde(skip_serializing_if = "is_zero")]
    pub points_sealed: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Conflicts listed in one write's answer at most (all are kept in the store).
pub const MAX_CONFLICTS_SHOWN: usize = 100;

/// A value offered by ingest for a (meter, quantity, time) that holds a different stored value.
/// The stored value stays; the offered one is kept aside in table `conflicts` until an engineer's
/// correction settles it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Conflict {
    pub meter: String,
    pub quantity: Quantity,
    /// Milliseconds since the Unix epoch.
    pub ts: i64,
    pub stored: f64,
    pub offered: f64,
    /// Who offered it: `gateway <id>` for batches, `line protocol (token <name>)` and so on.
    pub source: String,
    pub received_ms: i64,
}

/// A conflict as listed for a meter, with its resolution once settled.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ConflictRecord {
    #[serde(flatten)]
    pub conflict: Conflict,
    /// When a correction settled it, and the value it set.
    pub resolved_ms: Option<i64>,
    pub resolved_value: Option<f64>,
    pub resolved_by: Option<String>,
}

/// An engineer's correction of a stored reading.
#[derive(Debug, Clone, PartialEq)]
pub struct Correction {
    pub meter: String,
    pub quantity: Quantity,
    pub ts: i64,
    pub value: f64,
    /// Who corrected it (the event's `by`).
    pub by: String,
}

/// What a correction did.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Corrected {
    /// The value stored at that time before (`None`: no reading was stored there, nothing was
    /// changed).
    pub previous: Option<f64>,
    /// Open conflicts at that (meter, quantity, time) that it settled.
    pub conflicts_resolved: u64,
}

enum WriteOp {
    Batch(Batch),
    /// Points and who sent them (for conflicts).
    Points(Vec<Point>, String),
    /// An engineer's correction: the only write that changes a stored reading.
    Correct(Correction),
    Compact,
    /// (meter, seq) change records to forget.
    ClearDirty(Vec<(String, i64)>),
    /// The spool rows up to this id are in InfluxDB: delete them.
    Forwarded(i64),
    /// Flush the head (a read is waiting for it).
    Flush,
    /// The change records are about to be read: the next write to each bumps its sequence.
    MarksRead,
    /// Tests: stop the writer as a crash would, without flushing the head.
    #[cfg(test)]
    Crash,
}

/// Forwarding to InfluxDB: every point newly written (or replaced) is also written, as line
/// protocol, into table `outbox` in the same transaction; the forwarder sends the rows in id
/// order and deletes them once the database has accepted them.
pub struct Forwarding {
    /// The measurement of every line.
    pub measurement: String,
    /// Per meter, its tag suffix (`,building=..,carrier=..`, escaped); other meters get only
    /// the `meter` tag.
    pub tags: HashMap<String, String>,
    /// At or above this many bytes in the spool, writes are refused ([`StoreError::SpoolFull`]).
    pub max_bytes: u64,
}

/// What the spool holds, shared by the writer, the forwarder and ingest.
#[derive(Debug, Default)]
pub struct Spool {
    pub bytes: std::sync::atomic::AtomicU64,
    pub points: std::sync::atomic::AtomicU64,
    pub max_bytes: u64,
    /// Woken after each commit that added to the spool.
    pub added: tokio::sync::Notify,
}

impl Spool {
    /// Counts what a commit added (+) and removed (-), as (bytes, points); wakes the forwarder
    /// when something was added. Only the writer calls this.
    fn apply(&self, delta: (i64, i64), metrics: &Metrics) {
        use std::sync::atomic::Ordering::Relaxed;
        let bytes = (self.bytes.load(Relaxed) as i64 + delta.0).max(0);
        let points = (self.points.load(Relaxed) as i64 + delta.1).max(0);
        self.bytes.store(bytes as u64, Relaxed);
        self.points.store(points as u64, Relaxed);
        metrics.spool_bytes.set(bytes);
        metrics.spool_points.set(points);
        if delta.0 > 0 {
            self.added.notify_one();
        }
    }
}

/// One spool row: line protocol of the points of one commit.
#[derive(Debug, Clone)]
pub struct SpoolRow {
    pub id: i64,
    pub created_ms: i64,
    pub points: u64,
    pub data: String,
}

/// The writer's side of the spool: the lines of the open transaction.
struct Outbox {
    builder: super::influx::encode::LineBuilder,
    tags: HashMap<String, String>,
    points: u64,
    spool: Arc<Spool>,
}

struct WriteReq {
    op: WriteOp,
    reply: oneshot::Sender<Result<WriteOutcome, String>>,
}

/// Handle to the embedded store; cheap to clone.
#[derive(Clone)]
pub struct Embedded {
    /// Points in the writer's head; a read flushes them first.
    head_points: Arc<std::sync::atomic::AtomicU64>,
    tx: Arc<Mutex<Option<std::sync::mpsc::SyncSender<WriteReq>>>>,
    readers: Arc<Vec<Mutex<Connection>>>,
    next_reader: Arc<std::sync::atomic::AtomicUsize>,
    /// Newest reading time per meter, kept in memory.
    last_seen: Arc<RwLock<HashMap<String, i64>>>,
    path: PathBuf,
    writer: Arc<Mutex<Option<std::thread::JoinHandle<()>>>>,
    /// Set when forwarding to InfluxDB.
    spool: Option<Arc<Spool>>,
    /// Free space, and whether writes are refused for a full disk.
    disk: Arc<super::disk::Disk>,
}

/// The writer's connection. `synchronous = NORMAL`: a commit writes its WAL frames without
/// waiting for the disk; the WAL syncer thread ([`syncer_loop`]) fsyncs the WAL file before
/// anything of the commit is acknowledged, while the writer goes on with the next group.
/// Checkpoints still sync the WAL first and the database file after.
fn configure(conn: &Connection) -> rusqlite::Result<()> {
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "foreign_keys", "OFF")?;
    conn.busy_timeout(std::time::Duration::from_secs(30))?;
    Ok(())
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

/// How often the writer looks for days to seal, and how many chunks one pass writes at most
/// (a pass is one transaction; writes wait for it).
const COMPACT_EVERY: std::time::Duration = std::time::Duration::from_secs(10);
const CHUNKS_PER_PASS: usize = 256;

/// How often the writer applies the retention.
const PRUNE_EVERY: std::time::Duration = std::time::Duration::from_secs(3600);

/// Opens (creating if needed) the store in `dir`, keeping everything forever.
pub(super) fn open(dir: &Path, metrics: Metrics) -> Result<Embedded, StoreError> {
    open_with(dir, metrics, StoreOptions::default())
}

/// Opens (creating if needed) the store in `dir`.
pub(super) fn open_with(dir: &Path, metrics: Metrics, options: StoreOptions) -> Result<Embedded, StoreError> {
    open_forwarding(dir, metrics, options, None)
}

/// Opens (creating if needed) the store in `dir`; with `forwarding`, every point written is also
/// spooled for InfluxDB.
pub fn open_forwarding(dir: &Path, metrics: Metrics, options: StoreOptions, forwarding: Option<Forwarding>) -> Result<Embedded, StoreError> {
    std::fs::create_dir_all(dir).map_err(|source| StoreError::Dir { path: dir.to_path_buf(), source })?;
    let disk = Arc::new(super::disk::Disk::new(dir, options.min_free_bytes, metrics.clone()));
    let path = dir.join("energyd.sqlite");
    let new_store = std::fs::metadata(&path).map_or(true, |m| m.len() == 0);
    let conn = Connection::open(&path)?;
    if new_store {
        // 16 KiB pages: a sealed day's chunk (about a kilobyte) packs 14 to a page instead of 3
        // (4 KiB pages left a fifth of the file empty). Like auto_vacuum, this takes effect on a
        // new store only; an existing one keeps its page size. (Not even asked of an existing
        // store: setting auto_vacuum writes, and fails on a full disk.)
        conn.pragma_update(None, "page_size", 16_384)?;
        // Pages freed by sealing can be given back to the file system.
        conn.pragma_update(None, "auto_vacuum", "INCREMENTAL")?;
    }
    configure(&conn)?;
    // The writer touches one page per series per group: a cache that holds the head's pages
    // (64 MiB) keeps ingest from rereading them.
    conn.pragma_update(None, "cache_size", -65_536)?;
    // Consecutive groups dirty the same pages (the head_log leaf, the roll-up rows): checkpointing
    // every 64 MiB of WAL (4,096 pages of 16 KiB) instead of every 16 MiB copies each of them
    // once instead of many times; after a checkpoint the WAL file is cut back to 64 MiB.
    let page: i64 = conn.query_row("PRAGMA page_size", [], |r| r.get(0))?;
    conn.pragma_update(None, "wal_autocheckpoint", (64 << 20) / page.max(512))?;
    conn.pragma_update(None, "journal_size_limit", 64i64 << 20)?;
    conn.execute_batch("CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);")?;
    let version: Option<String> = conn.query_row("SELECT value FROM meta WHERE key = 'format_version'", [], |r| r.get(0)).optional()?;
    // Refuse an unknown version before touching anything.
    if let Some(found) = version.as_ref().filter(|v| !["1", "2", "3", "4", "5", "6"].contains(&v.as_str()) && **v != FORMAT_VERSION.to_string()) {
        return Err(StoreError::Version { path, found: found.clone() });
    }
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS points(series INTEGER NOT NULL, ts INTEGER NOT NULL, value REAL NOT NULL, PRIMARY KEY(series, ts)) WITHOUT ROWID;
         CREATE TABLE IF NOT EXISTS rollup_hour(series INTEGER NOT NULL, hour INTEGER NOT NULL,
             first_ts INTEGER NOT NULL, first_v REAL NOT NULL, last_ts INTEGER NOT NULL, last_v REAL NOT NULL,
             min REAL NOT NULL, max REAL NOT NULL, sum REAL NOT NULL, count INTEGER NOT NULL,
             PRIMARY KEY(series, hour)) WITHOUT ROWID;
         CREATE TABLE IF NOT EXISTS chunks(series INTEGER NOT NULL, day INTEGER NOT NULL, count INTEGER NOT NULL, data BLOB NOT NULL,
             PRIMARY KEY(series, day));
         CREATE TABLE IF NOT EXISTS segments(id INTEGER PRIMARY KEY, series INTEGER NOT NULL, day INTEGER NOT NULL, count INTEGER NOT NULL, data BLOB NOT NULL);
         CREATE INDEX IF NOT EXISTS segments_series ON segments(series, day, id);
         CREATE TABLE IF NOT EXISTS head_log(id INTEGER PRIMARY KEY, data BLOB NOT NULL);
         CREATE TABLE IF NOT EXISTS rollup_day(series INTEGER NOT NULL, day INTEGER NOT NULL, data BLOB NOT NULL, PRIMARY KEY(series, day)) WITHOUT ROWID;
         CREATE TABLE IF NOT EXISTS dirty_meters(meter TEXT PRIMARY KEY, min_ts INTEGER NOT NULL, seq INTEGER NOT NULL) WITHOUT ROWID;

         CREATE TABLE IF NOT EXISTS outbox(id INTEGER PRIMARY KEY AUTOINCREMENT, created_ms INTEGER NOT NULL, points INTEGER NOT NULL, data TEXT NOT NULL);",
    )?;
    upgrade_catalog(&conn)?;
    upgrade_conflicts(&conn)?;
    upgrade_gateway_epochs(&conn)?;
    match version.as_deref() {
        None => {
            conn.execute("INSERT INTO meta(key, value) VALUES ('format_version', ?1)", params![FORMAT_VERSION.to_string()])?;
        }
        Some("1") => upgrade_from_v1(&conn)?,
        // Version 2 had no record of what changed for the accounting cache: the table above is
        // all it needs (a cache built before is in another file, and a new epoch discards it).
        // Version 3 had no head (`segments`, `head_log`) and no sealed roll-ups (`rollup_day`),
        // all created above and empty; its raw points and hourly rows read as before.
        // Version 4 wrote `head_log` records of plain varints, which this build still reads;
        // version 5's records of differences would be misread by a version 4 build, hence the
        // new number.
        // Version 5 wrote chunks in codec version 2 and roll-ups in version 1 (still read) and
        // had the catalog of names upgraded above.
        // Version 6 had no table of conflicts (created above, empty): a build of version 6 would
        // replace stored readings, hence the new number.
        // Version 6 kept sequence ranges per gateway only: upgraded above to ranges per
        // (gateway, queue epoch), its ranges under the empty epoch of gateways without one.
        Some("2" | "3" | "4" | "5" | "6") => {
            conn.execute("UPDATE meta SET value = ?1 WHERE key = 'format_version'", [FORMAT_VERSION.to_string()])?;
        }
        Some(_) => {}
    }
    // The epoch of the change records: a cache of figures computed from this store is valid only
    // for the epoch it was built in.
    conn.execute("INSERT OR IGNORE INTO meta(key, value) VALUES ('dirty_epoch', lower(hex(randomblob(8))))", [])?;
    // The number of raw points, kept in `meta` by the writer (counted once if absent).
    let count: Option<String> = conn.query_row("SELECT value FROM meta WHERE key = 'point_count'", [], |r| r.get(0)).optional()?;
    if count.is_none() {
        conn.execute("INSERT INTO meta(key, value) SELECT 'point_count', count(*) FROM points", [])?;
    }
    let point_count: i64 = conn.query_row("SELECT CAST(value AS INTEGER) FROM meta WHERE key = 'point_count'", [], |r| r.get(0))?;
    metrics.store_points.set(point_count);
    // Points acknowledged but not flushed before the last stop (a crash): flushed now.
    let head_points = Arc::new(std::sync::atomic::AtomicU64::new(0));
    {
        let mut w = Writer::new(&conn, options, None, head_points.clone(), metrics.clone());
        let n = w.load_head()?;
        let free = disk.look();
        if disk.low(free) {
            disk.set_full(&format!("{} bytes free at start", free.unwrap_or(0)));
        } else if n > 0 {
            tracing::info!(points = n, "flushing the points acknowledged and not yet flushed before the last stop");
            match w.flush_head() {
                Ok(()) => {}
                // They stay in `head_log` (durable); the writer flushes them when space returns.
                Err(e) if super::disk::is_disk_full(&e, disk.look()) => disk.set_full(&e.to_string()),
                Err(e) => return Err(e.into()),
            }
        }
    }
    // Newest reading per meter (index probes and at most one chunk decoded per series).
    let mut last_seen: HashMap<String, i64> = HashMap::new();
    {
        let mut series = conn.prepare("SELECT id, meter FROM series")?;
        let rows: Vec<(i64, String)> = series.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<Result<_, _>>()?;
        for (id, meter) in rows {
            if let Some(ts) = chunks::newest(&conn, id)? {
                let e = last_seen.entry(meter).or_insert(ts);
                *e = (*e).max(ts);
            }
        }
    }
    let mut readers = Vec::new();
    for _ in 0..3 {
        let r = Connection::open_with_flags(&path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX)?;
        r.busy_timeout(std::time::Duration::from_secs(30))?;
        readers.push(Mutex::new(r));
    }
    let last_seen = Arc::new(RwLock::new(last_seen));
    let (tx, rx) = std::sync::mpsc::sync_channel::<WriteReq>(1024);
    let ls = last_seen.clone();
    // What the spool holds (rows left from before a restart are sent first).
    let (spool, outbox) = match forwarding {
        Some(f) => {
            let (bytes, points): (i64, i64) = conn.query_row("SELECT coalesce(sum(length(data)), 0), coalesce(sum(points), 0) FROM outbox", [], |r| Ok((r.get(0)?, r.get(1)?)))?;
            let spool = Spool { bytes: (bytes.max(0) as u64).into(), points: (points.max(0) as u64).into(), max_bytes: f.max_bytes, added: Default::default() };
            metrics.spool_bytes.set(bytes);
            metrics.spool_points.set(points);
            let spool = Arc::new(spool);
            (Some(spool.clone()), Some(Outbox { builder: super::influx::encode::LineBuilder::new(&f.measurement), tags: f.tags, points: 0, spool }))
        }
        None => (None, None),
    };
    let syncer = Syncer::start(dir.join("energyd.sqlite-wal"), metrics.clone()).map_err(|e| StoreError::Task(e.to_string()))?;
    let handle = std::thread::Builder::new()
        .name("store-writer".into())
        .spawn({
            let (head_points, disk) = (head_points.clone(), disk.clone());
            move || writer_loop(conn, rx, ls, metrics, options, outbox, head_points, syncer, disk)
        })
        .map_err(|e| StoreError::Task(e.to_string()))?;
    Ok(Embedded {
        head_points,
        tx: Arc::new(Mutex::new(Some(tx))),
        readers: Arc::new(readers),
        next_reader: Arc::new(std::sync::atomic::AtomicUsize::new(0)),
        last_seen,
        path,
        writer: Arc::new(Mutex::new(Some(handle))),
        spool,
        disk,
    })
}

/// Versions 1 to 5 kept the quantity's name in each series row and in a second index on
/// (meter, quantity): the catalog is rebuilt as [`CATALOG`], with the same series ids, in one
/// transaction (an interrupted upgrade is done again at the next start: the old table is
/// recognised by its `quantity` column of names). A new store just gets the tables.
fn upgrade_catalog(conn: &Connection) -> rusqlite::Result<()> {
    let old: bool = conn.query_row("SELECT count(*) > 0 FROM pragma_table_info('series') WHERE name = 'quantity' AND type = 'TEXT'", [], |r| r.get(0))?;
    if !old {
        return conn.execute_batch(CATALOG);
    }
    tracing::info!("upgrading the store's series catalog to format version {FORMAT_VERSION}");
    let tx = conn.unchecked_transaction()?;
    tx.execute_batch(&format!(
        "ALTER TABLE series RENAME TO series_old;
         {CATALOG}
         INSERT INTO quantities(name, code) SELECT quantity, row_number() OVER (ORDER BY quantity) FROM (SELECT DISTINCT quantity FROM series_old);
         INSERT INTO series(meter, quantity, id) SELECT s.meter, q.code, s.id FROM series_old s JOIN quantities q ON q.name = s.quantity;
         DROP TABLE series_old;"
    ))?;
    tx.commit()
}

/// Format 7: table `conflicts`, the values ingest offered for a (meter, quantity, time) that holds
/// a different stored reading, kept aside with the stored one, who sent them and when, until an
/// engineer's correction settles them (`resolved_*`). At most one open row per offered value
/// (`conflicts_open`). Idempotent: run at every open, it creates what is missing (a version 6
/// store gets the empty table; nothing else changes).
fn upgrade_conflicts(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS conflicts(id INTEGER PRIMARY KEY, meter TEXT NOT NULL, quantity TEXT NOT NULL, ts INTEGER NOT NULL,
             stored REAL NOT NULL, offered REAL NOT NULL, source TEXT NOT NULL, received_ms INTEGER NOT NULL,
             resolved_ms INTEGER, resolved_value REAL, resolved_by TEXT);
         CREATE INDEX IF NOT EXISTS conflicts_meter ON conflicts(meter, ts);
         CREATE UNIQUE INDEX IF NOT EXISTS conflicts_open ON conflicts(meter, quantity, ts, offered) WHERE resolved_ms IS NULL;",
    )
}

/// The conflicts of a meter, oldest first (a quantity whose name this build does not know is
/// skipped).
fn read_conflicts(c: &Connection, meter: &str, limit: usize) -> rusqlite::Result<Vec<ConflictRecord>> {
    let mut st = c.prepare_cached(
        "SELECT quantity, ts, stored, offered, source, received_ms, resolved_ms, resolved_value, resolved_by
         FROM conflicts WHERE meter = ?1 ORDER BY ts, id LIMIT ?2",
    )?;
    let rows = st.query_map(params![meter, limit as i64], |r| {
        let q: String = r.get(0)?;
        Ok((
            q,
            Conflict { meter: meter.to_string(), quantity: Quantity::ActivePower, ts: r.get(1)?, stored: r.get(2)?, offered: r.get(3)?, source: r.get(4)?, received_ms: r.get(5)? },
            r.get::<_, Option<i64>>(6)?,
            r.get::<_, Option<f64>>(7)?,
            r.get::<_, Option<String>>(8)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (q, mut conflict, resolved_ms, resolved_value, resolved_by) = row?;
        let Ok(quantity) = q.parse::<Quantity>() else { continue };
        conflict.quantity = quantity;
        out.push(ConflictRecord { conflict, resolved_ms, resolved_value, resolved_by });
    }
    Ok(out)
}

/// The tables of gateway sequence numbers, per (gateway, queue epoch) since format version 7:
/// `gateway_seq(gateway, epoch, start, end)` (epoch '' for batches without one) and
/// `gateway_epochs(gateway, epoch, first_ms, last_ms)`. A store of version 6 or older has
/// `gateway_seq(gateway, start, end)`: its rows move to the empty epoch, each of its gateways
/// gets a `gateway_epochs` row for that epoch with unknown times, in one transaction (an
/// interrupted upgrade is done again at the next start: the old table is recognised by its
/// missing `epoch` column). A new store just gets the tables.
fn upgrade_gateway_epochs(conn: &Connection) -> rusqlite::Result<()> {
    const TABLES: &str = "CREATE TABLE IF NOT EXISTS gateway_seq(gateway TEXT NOT NULL, epoch TEXT NOT NULL, start INTEGER NOT NULL, end INTEGER NOT NULL, PRIMARY KEY(gateway, epoch, start)) WITHOUT ROWID;
         CREATE TABLE IF NOT EXISTS gateway_epochs(gateway TEXT NOT NULL, epoch TEXT NOT NULL, first_ms INTEGER, last_ms INTEGER, PRIMARY KEY(gateway, epoch)) WITHOUT ROWID;";
    let exists: bool = conn.query_row("SELECT count(*) > 0 FROM sqlite_schema WHERE type = 'table' AND name = 'gateway_seq'", [], |r| r.get(0))?;
    let has_epoch: bool = conn.query_row("SELECT count(*) > 0 FROM pragma_table_info('gateway_seq') WHERE name = 'epoch'", [], |r| r.get(0))?;
    if !exists || has_epoch {
        return conn.execute_batch(TABLES);
    }
    tracing::info!("upgrading the store's gateway sequence ranges to ranges per queue epoch (format version {FORMAT_VERSION})");
    let upgrade = format!(
        "BEGIN;
         ALTER TABLE gateway_seq RENAME TO gateway_seq_old;
         {TABLES}
         INSERT INTO gateway_seq(gateway, epoch, start, end) SELECT gateway, '', start, end FROM gateway_seq_old;
         INSERT OR IGNORE INTO gateway_epochs(gateway, epoch, first_ms, last_ms) SELECT DISTINCT gateway, '', NULL, NULL FROM gateway_seq_old;
         DROP TABLE gateway_seq_old;
         COMMIT;"
    );
    conn.execute_batch(&upgrade).inspect_err(|_| {
        let _ = conn.execute_batch("ROLLBACK");
    })
}

/// Version 1 had no roll-ups: builds them from the raw points, in one transaction with the
/// version change, so that an interrupted upgrade is simply done again at the next start.
fn upgrade_from_v1(conn: &Connection) -> rusqlite::Result<()> {
    tracing::info!("upgrading the store from format version 1 to {FORMAT_VERSION}: building hourly roll-ups");
    let tx = conn.unchecked_transaction()?;
    tx.execute("DELETE FROM rollup_hour", [])?;
    {
        let mut st = tx.prepare("SELECT series, ts, value FROM points ORDER BY series, ts")?;
        let mut rows = st.query([])?;
        let mut cur: Option<(i64, HourRollup)> = None;
        while let Some(r) = rows.next()? {
            let (sid, ts, v): (i64, i64, f64) = (r.get(0)?, r.get(1)?, r.get(2)?);
            let p = HourRollup::of_point(ts, v);
            cur = match cur {
                Some((s, acc)) if s == sid && acc.hour == p.hour => Some((s, acc.merge(&p))),
                Some((s, acc)) => {
                    put_rollup(&tx, s, &acc)?;
                    Some((sid, p))
                }
                None => Some((sid, p)),
            };
        }
        if let Some((s, acc)) = cur {
            put_rollup(&tx, s, &acc)?;
        }
    }
    tx.execute("UPDATE meta SET value = ?1 WHERE key = 'format_version'", [FORMAT_VERSION.to_string()])?;
    tx.commit()
}

const PUT_ROLLUP: &str = "INSERT OR REPLACE INTO rollup_hour(series, hour, first_ts, first_v, last_ts, last_v, min, max, sum, count)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)";

fn put_rollup(conn: &Connection, sid: i64, r: &HourRollup) -> rusqlite::Result<()> {
    put_rollup_with(&mut conn.prepare_cached(PUT_ROLLUP)?, sid, r)
}

/// [`put_rollup`] with the statement prepared by the caller (a flush writes thousands).
fn put_rollup_with(st: &mut rusqlite::CachedStatement<'_>, sid: i64, r: &HourRollup) -> rusqlite::Result<()> {
    st.execute(params![sid, r.hour, r.first_ts, r.first_v, r.last_ts, r.last_v, r.min, r.max, r.sum, r.count as i64])?;
    Ok(())
}

const ROLLUP_COLUMNS: &str = "hour, first_ts, first_v, last_ts, last_v, min, max, sum, count";

fn rollup_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<HourRollup> {
    Ok(HourRollup {
        hour: r.get(0)?,
        first_ts: r.get(1)?,
        first_v: r.get(2)?,
        last_ts: r.get(3)?,
        last_v: r.get(4)?,
        min: r.get(5)?,
        max: r.get(6)?,
        sum: r.get(7)?,
        count: r.get::<_, i64>(8)? as u64,
    })
}

/// What storing one point did.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Put {
    New,
    Unchanged,
    /// A different value is stored (this one): the offered value is kept aside.
    Conflict(f64),
}

/// The head: points acknowledged since the last flush, per series sorted by time, held in memory
/// and made durable by one `head_log` row per group commit. A flush writes them as one segment
/// per series and day and merges their roll-ups, in one transaction that also empties
/// `head_log`; reads flush first, so that they never need to look at the head.
#[derive(Default)]
struct Head {
    /// Per series id (ids are dense, from 1): what the writer knows of it.
    series: Vec<SeriesHead>,
    /// Series with points in the head, each once.
    touched: Vec<i64>,
    points: u64,
    /// When the oldest point still in the head arrived.
    since: Option<Instant>,
    /// The `head_log` record of the open group: (series, time, value) per point.
    log: Vec<u8>,
    /// The series and time of the record's previous point (the record stores differences).
    log_prev: (i64, i64),
}

/// First byte of a `head_log` record whose series and times are differences from the previous
/// point's (zigzag varints; a line's fields share a time and have consecutive series, so both
/// take a byte): 10 bytes a point instead of 16. Records without it (written before) start
/// with a series id, never 0, and hold plain varints.
const HEAD_LOG_DELTAS: u8 = 0;

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

#[derive(Default)]
struct SeriesHead {
    /// (newest reading time in the store and the head, newest in the store), once looked up.
    newest: Option<(i64, i64)>,
    /// The series' points in the head, sorted by time.
    points: Vec<(i64, f64)>,
    /// The last old day written to (a backfill) and when: not sealed while it is being loaded.
    backfill: Option<(i64, Instant)>,
    /// The newest stored readings, kept after a flush: every stored reading at or after
    /// `tail_from` is here, so that a late point in that range (requests answered out of order)
    /// is checked without reading the store.
    tail: Vec<(i64, f64)>,
    tail_from: Option<i64>,
    /// The stored roll-up of the newest hour flushed, so that the next flush merges into it
    /// without reading it back (dropped when a replaced value recomputes that hour).
    last_rollup: Option<HourRollup>,
}

/// Readings kept per series after a flush for checking late points.
const TAIL: usize = 32;

impl Head {
    fn slot(&mut self, sid: i64) -> &mut SeriesHead {
        let i = usize::try_from(sid).unwrap_or(0);
        if i >= self.series.len() {
            self.series.resize_with(i + 1, SeriesHead::default);
        }
        &mut self.series[i]
    }

    fn get_slot(&self, sid: i64) -> Option<&SeriesHead> {
        self.series.get(usize::try_from(sid).ok()?)
    }

    /// Puts a point into the head (a reading already there at that time is replaced).
    fn insert(&mut self, sid: i64, ts: i64, v: f64) {
        let at = locate(&self.slot(sid).points, ts);
        self.put_at(sid, at, ts, v);
    }

    /// Puts a point where [`locate`] found it: `Ok(i)` replaces the reading at `i`, `Err(i)`
    /// inserts there (`Err(len)` appends: the caller knows the point is the series' newest,
    /// and the series' buffer is then only written, not read, which spares a cache miss per
    /// point when thousands of series take turns).
    fn put_at(&mut self, sid: i64, at: Result<usize, usize>, ts: i64, v: f64) {
        let slot = self.slot(sid);
        let first = slot.points.is_empty();
        let pts = &mut slot.points;
        match at {
            Ok(i) => pts[i].1 = v,
            Err(i) if i >= pts.len() => pts.push((ts, v)),
            Err(i) => pts.insert(i, (ts, v)),
        }
        if first {
            self.touched.push(sid);
        }
        self.points += 1;
        self.since.get_or_insert_with(Instant::now);
        if self.log.is_empty() {
            self.log.push(HEAD_LOG_DELTAS);
            self.log_prev = (0, 0);
        }
        put_varint(&mut self.log, zigzag(sid.wrapping_sub(self.log_prev.0)));
        put_varint(&mut self.log, zigzag(ts.wrapping_sub(self.log_prev.1)));
        self.log.extend_from_slice(&v.to_bits().to_le_bytes());
        self.log_prev = (sid, ts);
    }

    /// Where `ts` is (`Ok`) or would go (`Err`) among the series' points in the head, with the
    /// value found.
    fn find(&self, sid: i64, ts: i64) -> (Result<usize, usize>, Option<f64>) {
        let Some(slot) = self.get_slot(sid) else { return (Err(0), None) };
        let at = locate(&slot.points, ts);
        (at, at.ok().map(|i| slot.points[i].1))
    }

    /// Empties the head's points (after a flush); what is known of each series stays.
    fn clear_points(&mut self) {
        for sid in std::mem::take(&mut self.touched) {
            if let Some(slot) = usize::try_from(sid).ok().and_then(|i| self.series.get_mut(i)) {
                // The new tail: the newest of the old tail and the flushed points (distinct
                // readings), covering what both covered.
                let covered = match (slot.tail_from, slot.newest) {
                    (Some(from), _) => Some(from),
                    (None, Some(n)) => Some(n.1.saturating_add(1)),
                    (None, None) => None,
                };
                if let Some(from) = covered {
                    // The newest TAIL of both are among the old tail and the newest TAIL flushed.
                    let old = std::mem::take(&mut slot.tail);
                    let newest = slot.points[slot.points.len().saturating_sub(TAIL)..].to_vec();
                    let mut merged = super::chunks::merge(old, newest);
                    let cut = merged.len().saturating_sub(TAIL);
                    merged.drain(..cut);
                    slot.tail_from = merged.first().map(|p| p.0.max(from));
                    slot.tail = merged;
                }
                if let (Some(n), Some(last)) = (slot.newest.as_mut(), slot.points.last()) {
                    n.1 = n.1.max(last.0);
                }
                slot.points.clear();
                // A backfill may have grown one series' buffer far beyond a flush's share.
                if slot.points.capacity() > 4096 {
                    slot.points.shrink_to(64);
                }
            }
        }
        self.points = 0;
        self.since = None;
    }
}

/// Where `ts` is (`Ok`) or would go (`Err`) in points sorted by time, searched from the newest
/// end (doubling steps, then a binary search): a late point is usually among a series' last
/// few, whose cache lines are the ones touched last.
fn locate(pts: &[(i64, f64)], ts: i64) -> Result<usize, usize> {
    // Invariant: every point from `hi` on is later than `ts`.
    let mut hi = pts.len();
    let mut step = 1;
    loop {
        let lo = hi.saturating_sub(step);
        if lo == 0 || pts[lo].0 <= ts {
            return match pts[lo..hi].binary_search_by_key(&ts, |p| p.0) {
                Ok(i) => Ok(lo + i),
                Err(i) => Err(lo + i),
            };
        }
        hi = lo;
        step *= 2;
    }
}

/// FxHash (a multiply-rotate hash) for the writer's maps, which are looked up several times per
/// point; the default SipHash took a tenth of the writer's time. Keys are series ids and meter
/// ids of authenticated, registered senders, so flooding resistance is not needed here.
#[derive(Default, Clone, Copy)]
struct Fx(u64);

impl Fx {
    fn add(&mut self, w: u64) {
        self.0 = (self.0.rotate_left(5) ^ w).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
}

impl std::hash::Hasher for Fx {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut b = [0u8; 8];
            b.copy_from_slice(c);
            self.add(u64::from_le_bytes(b));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut b = [0u8; 8];
            b[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(b));
        }
    }

    fn write_u8(&mut self, v: u8) {
        self.add(u64::from(v));
    }

    fn write_u64(&mut self, v: u64) {
        self.add(v);
    }

    fn write_usize(&mut self, v: usize) {
        self.add(v as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

type FxMap<K, V> = HashMap<K, V, std::hash::BuildHasherDefault<Fx>>;

fn put_varint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

fn get_varint(b: &[u8], pos: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *b.get(*pos)?;
        *pos += 1;
        v |= u64::from(byte & 0x7f) << shift;
        if byte < 0x80 {
            return Some(v);
        }
    }
    None
}

/// Decodes one `head_log` record into (series, time, value).
fn decode_head_log(b: &[u8]) -> Option<Vec<(i64, i64, f64)>> {
    let mut out = Vec::new();
    let deltas = b.first() == Some(&HEAD_LOG_DELTAS);
    let mut pos = usize::from(deltas);
    let (mut sid, mut ts) = (0i64, 0i64);
    while pos < b.len() {
        let (s, t) = (get_varint(b, &mut pos)?, get_varint(b, &mut pos)?);
        (sid, ts) = if deltas { (sid.wrapping_add(unzigzag(s)), ts.wrapping_add(unzigzag(t))) } else { (s as i64, t as i64) };
        let v = f64::from_bits(u64::from_le_bytes(b.get(pos..pos + 8)?.try_into().ok()?));
        pos += 8;
        out.push((sid, ts, v));
    }
    Some(out)
}

/// The writer's copy of the change records (`dirty_meters`: meter, earliest time written,
/// sequence) with, per record, whether it may have been read since it was last written. A
/// group rewrites a record only when it must: its time is earlier than the record's, or the
/// record may have been read (the sequence then changes, so that clearing what was read keeps
/// the record). Readers announce a read through the writer ([`WriteOp::MarksRead`]) before
/// they look, so a group that skipped a record committed before the read saw the table. One
/// row write per meter per group was a tenth of the writer's time at a thousand meters.
#[derive(Default)]
struct Marks {
    /// `None`: unknown (the table could not be read); every record is then written.
    rows: Option<FxMap<String, (i64, i64, bool)>>,
}

impl Marks {
    fn load(conn: &Connection) -> Marks {
        let rows = (|| -> rusqlite::Result<FxMap<String, (i64, i64, bool)>> {
            let mut st = conn.prepare("SELECT meter, min_ts, seq FROM dirty_meters")?;
            let rows = st.query_map([], |r| Ok((r.get::<_, String>(0)?, (r.get(1)?, r.get(2)?, true))))?;
            rows.collect()
        })();
        match rows {
            Ok(rows) => Marks { rows: Some(rows) },
            Err(e) => {
                tracing::warn!("reading the change records failed ({e}); every write rewrites them");
                Marks { rows: None }
            }
        }
    }

    /// Whether the stored record of `meter` already covers a write at `t`.
    fn covers(&self, meter: &str, t: i64) -> bool {
        matches!(self.rows.as_ref().and_then(|r| r.get(meter)), Some(&(min, _, false)) if min <= t)
    }

    /// The record was written as the upsert does: earliest time kept, sequence bumped.
    fn wrote(&mut self, meter: &str, t: i64) {
        if let Some(rows) = &mut self.rows {
            match rows.get_mut(meter) {
                Some(r) => *r = (r.0.min(t), r.1 + 1, false),
                None => {
                    rows.insert(meter.to_string(), (t, 1, false));
                }
            }
        }
    }

    fn cleared(&mut self, meter: &str, seq: i64) {
        if let Some(rows) = &mut self.rows {
            if rows.get(meter).is_some_and(|r| r.1 == seq) {
                rows.remove(meter);
            }
        }
    }

    fn all_read(&mut self) {
        for r in self.rows.iter_mut().flat_map(|rows| rows.values_mut()) {
            r.2 = true;
        }
    }
}

/// The head is flushed when it holds this many points, or its oldest point is
/// [`StoreOptions::head_max_age_ms`] old, or a read asks for it.
const HEAD_MAX_POINTS: u64 = 2_000_000;

struct Writer<'c> {
    conn: &'c Connection,
    /// Series ids by meter, then by quantity (index `Quantity as usize`; 0: not looked up).
    series: FxMap<String, Vec<i64>>,
    /// The meter of the previous point and its ids: a line's or a sample's values come in a row.
    memo: (String, Vec<i64>),
    /// Address and length of the meter name `memo` was last matched with, valid for the open
    /// group only (its requests, and so their names, live until the group is answered): the
    /// fields of one line share one name, matched without comparing bytes.
    memo_at: (usize, usize),
    /// The id the next new series takes (read from the catalog at the first new series).
    next_series: Option<i64>,
    /// Hours where a stored value was replaced: recomputed from the stored points.
    dirty: HashSet<(i64, i64)>,
    /// The writer's copy of `dirty_meters`.
    marks: Marks,
    head: Head,
    /// Points in the head, shared with readers (a read flushes a non-empty head first).
    head_points: Arc<std::sync::atomic::AtomicU64>,
    /// Stored readings of (series, day) loaded to check late points; emptied at each flush.
    day_cache: HashMap<(i64, i64), Vec<(i64, f64)>>,
    /// When the open group started (one clock read per group, not per point).
    now: Instant,
    /// Points older than this (the start of the newest sealable day) are backfill.
    seal_cutoff: i64,
    /// Forwarding to InfluxDB: the lines of the open transaction.
    outbox: Option<Outbox>,
    head_max_age: std::time::Duration,
    metrics: Metrics,
    /// Who sent the request being applied (kept with the conflicts it causes).
    source: String,
    /// The open group's wall-clock time (ms), for conflicts and corrections.
    now_ms: i64,
    /// The sequence number of the batch sample being applied.
    seq: Option<u64>,
}

/// Most (series, day) readings kept for checking late points; the cache is emptied when full.
const DAY_CACHE: usize = 4096;
/// A day written to within this long is not sealed by the background passes.
const BACKFILL_QUIET: std::time::Duration = std::time::Duration::from_secs(30);

impl<'c> Writer<'c> {
    fn new(conn: &'c Connection, options: StoreOptions, outbox: Option<Outbox>, head_points: Arc<std::sync::atomic::AtomicU64>, metrics: Metrics) -> Writer<'c> {
        Writer {
            conn,
            series: FxMap::default(),
            memo: (String::new(), Vec::new()),
            memo_at: (0, 0),
            next_series: None,
            dirty: HashSet::new(),
            marks: Marks::load(conn),
            head: Head::default(),
            head_points,
            day_cache: HashMap::new(),
            now: Instant::now(),
            seal_cutoff: day_of(chrono::Utc::now().timestamp_millis() - options.seal_after_ms),
            outbox,
            head_max_age: std::time::Duration::from_millis(options.head_max_age_ms),
            metrics,
            source: String::new(),
            now_ms: 0,
            seq: None,
        }
    }

    fn series_id(&mut self, meter: &str, q: Quantity) -> rusqlite::Result<i64> {
        let at = (meter.as_ptr() as usize, meter.len());
        if self.memo_at == at {
            if let Some(&id) = self.memo.1.get(q as usize).filter(|&&id| id != 0) {
                return Ok(id);
            }
        }
        if self.memo.0 == meter {
            self.memo_at = at;
            if let Some(&id) = self.memo.1.get(q as usize).filter(|&&id| id != 0) {
                return Ok(id);
            }
        } else if let Some(ids) = self.series.get(meter) {
            self.memo.0.clear();
            self.memo.0.push_str(meter);
            self.memo.1.clone_from(ids);
            self.memo_at = at;
            if let Some(&id) = ids.get(q as usize).filter(|&&id| id != 0) {
                return Ok(id);
            }
        }
        let id = match series_id(self.conn, meter, q)? {
            Some(id) => id,
            None => {
                let id = match self.next_series {
                    Some(id) => id,
                    None => self.conn.query_row("SELECT coalesce(max(id), 0) + 1 FROM series", [], |r| r.get(0))?,
                };
                self.conn.prepare_cached(ADD_QUANTITY)?.execute([q.name()])?;
                self.conn.prepare_cached(ADD_SERIES)?.execute(params![meter, q.name(), id])?;
                self.next_series = Some(id + 1);
                id
            }
        };
        let ids = self.series.entry(meter.to_string()).or_insert_with(|| vec![0; Quantity::ALL.len()]);
        if let Some(slot) = ids.get_mut(q as usize) {
            *slot = id;
        }
        self.memo.0.clear();
        self.memo.0.push_str(meter);
        self.memo.1.clone_from(ids);
        self.memo_at = at;
        Ok(id)
    }

    fn put(&mut self, meter: &str, q: Quantity, ts: i64, value: f64, out: &mut WriteOutcome) -> rusqlite::Result<()> {
        let sid = self.series_id(meter, q)?;
        if ts < self.seal_cutoff {
            self.head.slot(sid).backfill = Some((day_of(ts), self.now));
        }
        let put = self.put_raw(sid, ts, value)?;
        match put {
            Put::New => {
                out.points_written += 1;
                if let Some(o) = &mut self.outbox {
                    let tags = o.tags.get(meter).map_or("", String::as_str);
                    o.builder.add(meter, tags, q, ts, value);
                    o.points += 1;
                }
            }
            Put::Unchanged => out.points_unchanged += 1,
            Put::Conflict(stored) => self.conflict(meter, q, ts, stored, value, out)?,
        }
        Ok(())
    }

    /// Keeps an offered value aside: a row of `conflicts` in the group's transaction (the same
    /// offer made again while the conflict is open is not added twice).
    #[cold]
    #[inline(never)]
    fn conflict(&mut self, meter: &str, q: Quantity, ts: i64, stored: f64, offered: f64, out: &mut WriteOutcome) -> rusqlite::Result<()> {
        out.points_conflicting += 1;
        let source = match self.seq {
            Some(seq) => format!("{}, sample {seq}", self.source),
            None => self.source.clone(),
        };
        self.conn
            .prepare_cached(
                "INSERT OR IGNORE INTO conflicts(meter, quantity, ts, stored, offered, source, received_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?
            .execute(params![meter, q.name(), ts, stored, offered, source, self.now_ms])?;
        if out.conflicts.len() < MAX_CONFLICTS_SHOWN {
            out.conflicts.push(Conflict { meter: meter.to_string(), quantity: q, ts, stored, offered, source, received_ms: self.now_ms });
        }
        Ok(())
    }

    /// Classifies and stores one point: into the head when it is new; a point whose time holds
    /// a reading already (in the head, the tail kept from the last flush, or the store) is a
    /// duplicate when the value is the same and a conflict otherwise: ingest never replaces a
    /// stored reading (only [`Writer::correct`] does).
    fn put_raw(&mut self, sid: i64, ts: i64, value: f64) -> rusqlite::Result<Put> {
        let (newest, newest_stored) = match self.head.get_slot(sid).and_then(|s| s.newest) {
            Some(n) => n,
            None => self.look_up_newest(sid)?,
        };
        if ts > newest {
            // Later than every point of the series: appended without a search.
            self.head.put_at(sid, Err(usize::MAX), ts, value);
            self.head.slot(sid).newest = Some((ts, newest_stored));
            return Ok(Put::New);
        }
        self.put_late(sid, ts, value, newest_stored)
    }

    /// The newest reading of a series (store and head) and the newest stored, the first time
    /// the writer meets it.
    #[cold]
    #[inline(never)]
    fn look_up_newest(&mut self, sid: i64) -> rusqlite::Result<(i64, i64)> {
        let stored = chunks::newest(self.conn, sid)?.unwrap_or(i64::MIN);
        let slot = self.head.slot(sid);
        let n = (stored.max(slot.points.last().map_or(i64::MIN, |p| p.0)), stored);
        slot.newest = Some(n);
        Ok(n)
    }

    /// [`Self::put_raw`] for a point no later than the series' newest (kept out of the common
    /// path, which it would slow down with its stack frame).
    #[inline(never)]
    fn put_late(&mut self, sid: i64, ts: i64, value: f64, newest_stored: i64) -> rusqlite::Result<Put> {
        let (at, in_head) = self.head.find(sid, ts);
        if let Some(v) = in_head {
            if v.to_bits() == value.to_bits() {
                return Ok(Put::Unchanged);
            }
            return Ok(Put::Conflict(v));
        }
        if ts > newest_stored {
            self.head.put_at(sid, at, ts, value);
            return Ok(Put::New);
        }
        // Older than the newest stored reading: the tail kept from the last flush, else the store.
        if let Some(slot) = self.head.series.get_mut(usize::try_from(sid).unwrap_or(0)) {
            if slot.tail_from.is_some_and(|from| ts >= from) {
                return match slot.tail.binary_search_by_key(&ts, |p| p.0) {
                    Ok(i) if slot.tail[i].1.to_bits() == value.to_bits() => Ok(Put::Unchanged),
                    Ok(i) => Ok(Put::Conflict(slot.tail[i].1)),
                    Err(_) => {
                        self.head.insert(sid, ts, value);
                        Ok(Put::New)
                    }
                };
            }
        }
        let key = (sid, day_of(ts));
        if !self.day_cache.contains_key(&key) {
            if self.day_cache.len() >= DAY_CACHE {
                self.day_cache.clear();
            }
            let day = chunks::read_series(self.conn, sid, key.1, key.1.saturating_add(chunks::DAY_MS))?;
            self.day_cache.insert(key, day);
        }
        let Some(day) = self.day_cache.get_mut(&key) else { return Ok(Put::New) };
        match day.binary_search_by_key(&ts, |p| p.0) {
            Ok(i) if day[i].1.to_bits() == value.to_bits() => Ok(Put::Unchanged),
            Ok(i) => Ok(Put::Conflict(day[i].1)),
            Err(_) => {
                self.head.insert(sid, ts, value);
                Ok(Put::New)
            }
        }
    }

    /// An engineer's correction (the head was flushed before the group): the stored reading at
    /// that time, if any, takes the value; the open conflicts there are settled.
    fn correct(&mut self, c: &Correction, out: &mut WriteOutcome) -> rusqlite::Result<()> {
        let mut previous = None;
        if let Some(sid) = series_id(self.conn, &c.meter, c.quantity)? {
            previous = chunks::read_series(self.conn, sid, c.ts, c.ts.saturating_add(1))?.first().map(|p| p.1);
            if previous.is_some_and(|p| p.to_bits() != c.value.to_bits()) {
                self.replace_stored(sid, c.ts, c.value)?;
                if let Some(o) = &mut self.outbox {
                    let tags = o.tags.get(&c.meter).map_or("", String::as_str);
                    o.builder.add(&c.meter, tags, c.quantity, c.ts, c.value);
                    o.points += 1;
                }
            }
        }
        let resolved = self
            .conn
            .prepare_cached(
                "UPDATE conflicts SET resolved_ms = ?1, resolved_value = ?2, resolved_by = ?3
                 WHERE meter = ?4 AND quantity = ?5 AND ts = ?6 AND resolved_ms IS NULL",
            )?
            .execute(params![self.now_ms, c.value, c.by, c.meter, c.quantity.name(), c.ts])?;
        out.corrected = Some(Corrected { previous, conflicts_resolved: resolved as u64 });
        Ok(())
    }

    /// A corrected value replacing a stored reading: a row of `points` (it wins over segments
    /// and chunks); its hour is rolled up again at the end of the group.
    fn replace_stored(&mut self, sid: i64, ts: i64, value: f64) -> rusqlite::Result<()> {
        self.conn.prepare_cached("INSERT OR REPLACE INTO points(series, ts, value) VALUES (?1, ?2, ?3)")?.execute(params![sid, ts, value])?;
        self.day_cache.remove(&(sid, day_of(ts)));
        self.dirty.insert((sid, hour_of(ts)));
        if let Some(slot) = self.head.series.get_mut(usize::try_from(sid).unwrap_or(0)) {
            // That hour is rolled up again from the store: its remembered roll-up is stale.
            if slot.last_rollup.is_some_and(|r| r.hour == hour_of(ts)) {
                slot.last_rollup = None;
            }
            if let Ok(i) = slot.tail.binary_search_by_key(&ts, |p| p.0) {
                slot.tail[i].1 = value;
            }
        }
        Ok(())
    }

    /// Ends the open group inside its transaction: its `head_log` record, and the hours where a
    /// stored value was replaced rolled up again from the stored points (the head's points are
    /// merged in when it is flushed; they are distinct readings).
    fn finish_group(&mut self) -> rusqlite::Result<()> {
        if !self.head.log.is_empty() {
            self.conn.prepare_cached("INSERT INTO head_log(data) VALUES (?1)")?.execute([&self.head.log])?;
            self.head.log.clear();
        }
        for (sid, hour) in std::mem::take(&mut self.dirty) {
            let pts = chunks::read_series(self.conn, sid, hour, hour + HOUR_MS)?;
            match HourRollup::of_points(&pts) {
                Some(r) => put_rollup(self.conn, sid, &r)?,
                None => {
                    self.conn.prepare_cached("DELETE FROM rollup_hour WHERE series = ?1 AND hour = ?2")?.execute(params![sid, hour])?;
                }
            }
        }
        Ok(())
    }

    /// Whether the head should be flushed now.
    fn head_due(&self) -> bool {
        self.head.points >= HEAD_MAX_POINTS || self.head.since.is_some_and(|t| t.elapsed() >= self.head_max_age)
    }

    /// Writes the head as segments (one per series and day) and merges its roll-ups into the
    /// stored ones, emptying `head_log`, in one transaction. The head is kept if it fails.
    fn flush_head(&mut self) -> rusqlite::Result<()> {
        if self.head.touched.is_empty() {
            self.head.since = None;
            return Ok(());
        }
        let started = Instant::now();
        let tx = self.conn.unchecked_transaction()?;
        let mut newest_rollups = Vec::with_capacity(self.head.touched.len());
        let mut put_segment = self.conn.prepare_cached("INSERT INTO segments(series, day, count, data) VALUES (?1, ?2, ?3, ?4)")?;
        let mut put_rollup = self.conn.prepare_cached(PUT_ROLLUP)?;
        for &sid in &self.head.touched {
            let Some(slot) = self.head.get_slot(sid) else { continue };
            let pts = &slot.points;
            for day in pts.chunk_by(|a, b| day_of(a.0) == day_of(b.0)) {
                put_segment.execute(params![sid, day_of(day[0].0), day.len() as i64, codec::encode(day)])?;
            }
            let mut newest: Option<HourRollup> = None;
            // No reading is stored after this time (when known): hours that start later have
            // no stored roll-up to merge with.
            let stored_until = slot.newest.map(|n| n.1);
            for hour in pts.chunk_by(|a, b| hour_of(a.0) == hour_of(b.0)) {
                let Some(r) = HourRollup::of_points(hour) else { continue };
                let stored = match slot.last_rollup {
                    Some(last) if last.hour == r.hour => Some(last),
                    _ if stored_until.is_some_and(|t| r.hour > t) => None,
                    _ => stored_rollup(self.conn, sid, r.hour)?,
                };
                let merged = match stored {
                    Some(s) => s.merge(&r),
                    None => r,
                };
                put_rollup_with(&mut put_rollup, sid, &merged)?;
                if newest.is_none_or(|n| n.hour < merged.hour) {
                    newest = Some(merged);
                }
            }
            newest_rollups.push((sid, newest));
        }
        drop((put_segment, put_rollup));
        self.conn.execute("DELETE FROM head_log", [])?;
        tx.commit()?;
        for (sid, newest) in newest_rollups {
            let slot = self.head.slot(sid);
            if newest.is_some_and(|n| slot.last_rollup.is_none_or(|l| l.hour <= n.hour)) {
                slot.last_rollup = newest;
            }
        }
        self.head.clear_points();
        self.head_points.store(0, std::sync::atomic::Ordering::Release);
        self.metrics.head_points.set(0);
        self.metrics.store_flush_seconds.observe(started.elapsed().as_secs_f64());
        self.day_cache.clear();
        Ok(())
    }

    /// Loads the head from `head_log` (at the start, or after a failed group): what was
    /// acknowledged and not yet flushed.
    fn load_head(&mut self) -> rusqlite::Result<u64> {
        self.head = Head::default();
        self.day_cache.clear();
        let mut st = self.conn.prepare("SELECT id, data FROM head_log ORDER BY id")?;
        let rows: Vec<(i64, Vec<u8>)> = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<Result<_, _>>()?;
        for (id, data) in rows {
            let Some(points) = decode_head_log(&data) else {
                tracing::error!(row = id, "a head_log record is corrupt; its points are skipped");
                continue;
            };
            for (sid, ts, v) in points {
                self.head.insert(sid, ts, v);
            }
        }
        self.head.log.clear();
        self.head_points.store(self.head.points, std::sync::atomic::Ordering::Release);
        Ok(self.head.points)
    }

    /// One compaction pass in its own transaction: seals up to [`CHUNKS_PER_PASS`] days.
    /// With `all` (asked for), the head is flushed first and days being backfilled are sealed
    /// too; the background passes leave the head to its own flushes.
    fn compact_pass(&mut self, seal_after_ms: i64, all: bool) -> rusqlite::Result<chunks::Compacted> {
        if all {
            self.flush_head()?;
        }
        let cutoff = day_of(chrono::Utc::now().timestamp_millis() - seal_after_ms);
        self.seal_cutoff = cutoff;
        let head = &self.head;
        let busy = |sid: i64, day: i64| !all && head.get_slot(sid).and_then(|s| s.backfill).is_some_and(|(d, t)| d == day && t.elapsed() < BACKFILL_QUIET);
        let tx = self.conn.unchecked_transaction()?;
        let done = chunks::compact(self.conn, cutoff, CHUNKS_PER_PASS, &busy)?;
        tx.commit()?;
        self.day_cache.clear();
        Ok(done)
    }

    /// Stored sequence ranges of a gateway's queue epoch ('' for none), sorted.
    fn ranges(&self, gateway: &str, epoch: &str) -> rusqlite::Result<Vec<(u64, u64)>> {
        let mut st = self.conn.prepare_cached("SELECT start, end FROM gateway_seq WHERE gateway = ?1 AND epoch = ?2 ORDER BY start")?;
        let rows = st.query_map([gateway, epoch], |r| Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64)))?;
        rows.collect()
    }

    fn write_batch(&mut self, b: &Batch, out: &mut WriteOutcome, last: &mut FxMap<String, i64>) -> rusqlite::Result<()> {
        self.source.clear();
        self.source.push_str("gateway ");
        self.source.push_str(&b.gateway);
        let epoch = b.epoch.as_deref().unwrap_or("");
        let mut ranges = self.ranges(&b.gateway, epoch)?;
        let now_ms = chrono::Utc::now().timestamp_millis();
        let known = self
            .conn
            .prepare_cached("UPDATE gateway_epochs SET last_ms = ?3 WHERE gateway = ?1 AND epoch = ?2")?
            .execute(params![b.gateway, epoch, now_ms])?;
        if known == 0 {
            out.earlier_epochs = self
                .conn
                .prepare_cached("SELECT epoch FROM gateway_epochs WHERE gateway = ?1 ORDER BY coalesce(last_ms, 0), epoch")?
                .query_map([&b.gateway], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?;
            out.new_epoch = true;
            self.conn
                .prepare_cached("INSERT INTO gateway_epochs(gateway, epoch, first_ms, last_ms) VALUES (?1, ?2, ?3, ?3)")?
                .execute(params![b.gateway, epoch, now_ms])?;
        }
        out.epoch.clone_from(&b.epoch);
        for (i, s) in b.samples.iter().enumerate() {
            let seq = b.seq + i as u64;
            if ranges.iter().any(|&(a, z)| a <= seq && seq <= z) {
                out.samples_duplicate += 1;
                continue;
            }
            self.seq = Some(seq);
            for (q, v) in &s.v {
                self.put(&s.meter, *q, s.t, *v, out)?;
            }
            let e = last.entry(s.meter.clone()).or_insert(s.t);
            *e = (*e).max(s.t);
            out.samples_stored += 1;
        }
        self.seq = None;
        if !b.samples.is_empty() {
            ranges.push((b.seq, b.last_seq()));
            let merged = merge_ranges(ranges);
            self.conn.prepare_cached("DELETE FROM gateway_seq WHERE gateway = ?1 AND epoch = ?2")?.execute([&b.gateway, epoch])?;
            for &(a, z) in &merged {
                self.conn
                    .prepare_cached("INSERT INTO gateway_seq(gateway, epoch, start, end) VALUES (?1, ?2, ?3, ?4)")?
                    .execute(params![b.gateway, epoch, a as i64, z as i64])?;
            }
            ranges = merged;
        }
        out.acked_through = ranges.first().map_or(0, |r| r.1);
        out.ranges = ranges;
        Ok(())
    }
}

/// Merges overlapping and adjacent ranges; the result is sorted.
pub(crate) fn merge_ranges(mut r: Vec<(u64, u64)>) -> Vec<(u64, u64)> {
    r.sort_unstable();
    let mut out: Vec<(u64, u64)> = Vec::with_capacity(r.len());
    for (a, z) in r {
        match out.last_mut() {
            Some(last) if a <= last.1.saturating_add(1) => last.1 = last.1.max(z),
            _ => out.push((a, z)),
        }
    }
    out
}

/// Deletes raw points and roll-ups older than the retention, whole hours only, in one
/// transaction. Returns the number of raw points deleted.
fn prune(conn: &Connection, options: StoreOptions, now_ms: i64) -> rusqlite::Result<u64> {
    if options.raw_retention_ms.is_none() && options.rollup_retention_ms.is_none() {
        return Ok(0);
    }
    let tx = conn.unchecked_transaction()?;
    let ids: Vec<i64> = tx.prepare("SELECT id FROM series")?.query_map([], |r| r.get(0))?.collect::<Result<_, _>>()?;
    let mut deleted = 0u64;
    for id in ids {
        if let Some(r) = options.raw_retention_ms {
            deleted += tx.prepare_cached("DELETE FROM points WHERE series = ?1 AND ts < ?2")?.execute(params![id, hour_of(now_ms - r)])? as u64;
        }
        if let Some(r) = options.raw_retention_ms {
            // Whole days only: a chunk or segment goes when all of its day is past the retention.
            let before = hour_of(now_ms - r) - chunks::DAY_MS + 1;
            let n: i64 = tx
                .prepare_cached("SELECT coalesce(sum(count), 0) FROM chunks WHERE series = ?1 AND day < ?2")?
                .query_row(params![id, before], |r| r.get(0))?;
            tx.prepare_cached("DELETE FROM chunks WHERE series = ?1 AND day < ?2")?.execute(params![id, before])?;
            deleted += n as u64;
            let n: i64 = tx
                .prepare_cached("SELECT coalesce(sum(count), 0) FROM segments WHERE series = ?1 AND day < ?2")?
                .query_row(params![id, before], |r| r.get(0))?;
            tx.prepare_cached("DELETE FROM segments WHERE series = ?1 AND day < ?2")?.execute(params![id, before])?;
            deleted += n as u64;
        }
        if let Some(r) = options.rollup_retention_ms {
            tx.prepare_cached("DELETE FROM rollup_hour WHERE series = ?1 AND hour < ?2")?.execute(params![id, hour_of(now_ms - r)])?;
            // Sealed roll-ups go by whole days, like chunks.
            tx.prepare_cached("DELETE FROM rollup_day WHERE series = ?1 AND day < ?2")?.execute(params![id, hour_of(now_ms - r) - chunks::DAY_MS + 1])?;
        }
    }
    add_point_count(&tx, -(deleted as i64))?;
    tx.commit()?;
    Ok(deleted)
}

fn add_point_count(conn: &Connection, delta: i64) -> rusqlite::Result<()> {
    if delta != 0 {
        conn.prepare_cached("UPDATE meta SET value = CAST(value AS INTEGER) + ?1 WHERE key = 'point_count'")?.execute([delta])?;
    }
    Ok(())
}

/// An answer waiting for the WAL sync.
type Reply = (oneshot::Sender<Result<WriteOutcome, String>>, Result<WriteOutcome, String>);

/// The writer's WAL syncer: a thread that fsyncs the WAL file and then sends the answers of the
/// groups committed before the sync began, taking every group waiting at once; the writer
/// meanwhile works on the next groups. A failed sync stops writes for good (`failed`): after a
/// failed fsync the kernel may have dropped the pages, so what follows could not be promised
/// durable either.
struct Syncer {
    to_sync: std::sync::mpsc::Sender<Vec<Reply>>,
    thread: std::thread::JoinHandle<()>,
    failed: Arc<Mutex<Option<String>>>,
}

impl Syncer {
    fn start(wal: PathBuf, metrics: Metrics) -> std::io::Result<Syncer> {
        let failed: Arc<Mutex<Option<String>>> = Arc::default();
        let (to_sync, rx) = std::sync::mpsc::channel::<Vec<Reply>>();
        let thread = std::thread::Builder::new().name("store-sync".into()).spawn({
            let failed = failed.clone();
            move || syncer_loop(&wal, &rx, &failed, &metrics)
        })?;
        Ok(Syncer { to_sync, thread, failed })
    }

    /// Answers after the next WAL sync.
    fn answer_when_durable(&self, replies: Vec<Reply>) {
        if let Err(back) = self.to_sync.send(replies) {
            for (reply, _) in back.0 {
                let _ = reply.send(Err("the store's WAL syncer has stopped".into()));
            }
        }
    }

    /// Why writes are refused, after a failed sync.
    fn failure(&self) -> Option<String> {
        self.failed.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Sends the answers still waiting and stops the thread.
    fn stop(self) {
        drop(self.to_sync);
        let _ = self.thread.join();
    }
}

fn syncer_loop(wal: &Path, rx: &std::sync::mpsc::Receiver<Vec<Reply>>, failed: &Mutex<Option<String>>, metrics: &Metrics) {
    let mut file: Option<std::fs::File> = None;
    while let Ok(mut replies) = rx.recv() {
        while let Ok(more) = rx.try_recv() {
            replies.extend(more);
        }
        let started = Instant::now();
        // Any fsync of the file after the commit's frames were written covers them; if the WAL
        // was checkpointed and restarted meanwhile, the checkpoint synced them into the
        // database file first.
        let synced = match &file {
            Some(f) => f.sync_data(),
            None => std::fs::File::open(wal).and_then(|f| {
                f.sync_data()?;
                file = Some(f);
                Ok(())
            }),
        };
        metrics.store_wal_sync_seconds.observe(started.elapsed().as_secs_f64());
        let mut failure = failed.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(e) = synced {
            if failure.is_none() {
                // Even for ENOSPC: unlike a write refused for a full disk (nothing committed), a
                // failed fsync may have lost frames already accepted (ARCHITECTURE.md, "What is
                // durable when").
                let full = if e.kind() == std::io::ErrorKind::StorageFull { "; the disk is full: free space, then restart" } else { "" };
                let msg = format!("syncing the store's WAL file {} failed ({e}): the store refuses writes until energyd is restarted{full}", wal.display());
                tracing::error!("{msg}");
                *failure = Some(msg);
            }
        }
        let failure = failure.clone();
        for (reply, out) in replies {
            let _ = reply.send(match &failure {
                Some(msg) => Err(msg.clone()),
                None => out,
            });
        }
    }
}

/// On a full disk: when there is space again, flushes the head (what was acknowledged before
/// the disk filled, or found in `head_log` at start) and resumes writing. A flush that fails
/// again is rolled back whole, and its WAL frames are written over by the next attempt.
fn try_resume(w: &mut Writer<'_>, disk: &super::disk::Disk) {
    if !disk.enough_to_resume(disk.look()) {
        return;
    }
    match w.flush_head() {
        Ok(()) => disk.set_ok(),
        Err(e) if super::disk::is_disk_full(&e, disk.look()) => tracing::debug!("the head still does not fit: {e}"),
        Err(e) => {
            // Not the disk: writing resumes and the error shows where it belongs.
            tracing::error!("flushing the head failed: {e}");
            disk.set_ok();
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn writer_loop(
    conn: Connection,
    rx: std::sync::mpsc::Receiver<WriteReq>,
    last_seen: Arc<RwLock<HashMap<String, i64>>>,
    metrics: Metrics,
    options: StoreOptions,
    outbox: Option<Outbox>,
    head_points: Arc<std::sync::atomic::AtomicU64>,
    syncer: Syncer,
    disk: Arc<super::disk::Disk>,
) {
    let spool = outbox.as_ref().map(|o| o.spool.clone());
    let mut w = Writer::new(&conn, options, outbox, head_points.clone(), metrics.clone());
    if disk.is_full() {
        // Started on a full disk: what `head_log` holds waits in the head for space.
        if let Err(e) = w.load_head() {
            tracing::error!("loading the head failed: {e}");
        }
    }
    let mut next_disk_look = Instant::now();
    let (dropper, dropped) = std::sync::mpsc::channel::<Vec<WriteOp>>();
    if let Err(e) = std::thread::Builder::new().name("store-free".into()).spawn(move || dropped.into_iter().for_each(drop)) {
        tracing::warn!("no thread to free written groups ({e}); the writer frees them");
    }
    let mut next_prune = Instant::now();
    let mut next_compact = Instant::now();
    loop {
        if disk.is_full() && Instant::now() >= next_disk_look {
            next_disk_look = Instant::now() + super::disk::CHECK_EVERY;
            try_resume(&mut w, &disk);
        }
        // Sealing and the retention write too: not while the disk is full.
        if !disk.is_full() && Instant::now() >= next_compact {
            next_compact = Instant::now() + COMPACT_EVERY;
            match w.compact_pass(options.seal_after_ms, false) {
                Ok(done) => {
                    metrics.points_sealed.inc_by(done.points);
                    if done.chunks as usize >= CHUNKS_PER_PASS {
                        // More to do: another pass right after the next group of writes.
                        next_compact = Instant::now();
                    }
                }
                Err(e) if super::disk::is_disk_full(&e, disk.look()) => disk.set_full(&format!("sealing raw points into chunks: {e}")),
                Err(e) => tracing::error!("sealing raw points into chunks failed: {e}"),
            }
        }
        if !disk.is_full() && Instant::now() >= next_prune {
            let pruned = w.flush_head().and_then(|()| {
                w.day_cache.clear();
                for slot in &mut w.head.series {
                    slot.last_rollup = None;
                }
                prune(&conn, options, chrono::Utc::now().timestamp_millis())
            });
            match pruned {
                Ok(n) => {
                    metrics.points_pruned.inc_by(n);
                    metrics.store_points.sub(n as i64);
                    if n > 0 {
                        tracing::info!(points = n, "raw points older than the retention deleted");
                    }
                }
                Err(e) => tracing::error!("applying the retention failed: {e}"),
            }
            next_prune = Instant::now() + PRUNE_EVERY;
        }
        let mut wake = next_prune.min(next_compact);
        if let Some(t) = w.head.since {
            wake = wake.min(t + w.head_max_age);
        }
        if disk.is_full() {
            wake = wake.min(next_disk_look);
        }
        let first = match rx.recv_timeout(wake.saturating_duration_since(Instant::now())) {
            Ok(r) => r,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                if w.head_due() && !disk.is_full() {
                    match w.flush_head() {
                        Ok(()) => {}
                        Err(e) if super::disk::is_disk_full(&e, disk.look()) => disk.set_full(&format!("flushing the head: {e}")),
                        Err(e) => tracing::error!("flushing the head failed: {e}"),
                    }
                }
                continue;
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
        };
        let mut group = vec![first];
        while group.len() < 256 {
            match rx.try_recv() {
                Ok(r) => group.push(r),
                Err(_) => break,
            }
        }
        // Free space under the floor: read-only before anything is written.
        if !disk.is_full() && Instant::now() >= next_disk_look && group.iter().any(|r| matches!(r.op, WriteOp::Batch(_) | WriteOp::Points(..) | WriteOp::Correct(_))) {
            next_disk_look = Instant::now() + super::disk::CHECK_EVERY;
            let free = disk.look();
            if disk.low(free) {
                disk.set_full(&format!("{} bytes free", free.unwrap_or(0)));
            }
        }
        // The disk full: writes are refused and reads are not held up by a flush (they answer
        // from what is flushed); the rest goes on.
        if disk.is_full() {
            let (refused, rest): (Vec<WriteReq>, Vec<WriteReq>) = group.into_iter().partition(|r| matches!(r.op, WriteOp::Batch(_) | WriteOp::Points(..) | WriteOp::Correct(_) | WriteOp::Flush | WriteOp::Compact));
            for req in refused {
                let answer = if matches!(req.op, WriteOp::Flush) { Ok(WriteOutcome::default()) } else { Err(disk.reason()) };
                let _ = req.reply.send(answer);
            }
            group = rest;
            if group.is_empty() {
                continue;
            }
        }
        // After a failed WAL sync, writes are refused (reads and the rest go on).
        if let Some(msg) = syncer.failure() {
            let (refused, rest): (Vec<WriteReq>, Vec<WriteReq>) = group.into_iter().partition(|r| matches!(r.op, WriteOp::Batch(_) | WriteOp::Points(..) | WriteOp::Correct(_)));
            for req in refused {
                let _ = req.reply.send(Err(msg.clone()));
            }
            group = rest;
            if group.is_empty() {
                continue;
            }
        }
        // The requests of one group were all in flight at once (none was answered before the
        // group began), so any order of them is a valid one: requests of points go in time
        // order, so that a client's concurrent requests that arrived swapped do not take the
        // late-point path (a search per point instead of an append).
        if group.len() > 1 && group.iter().all(|r| matches!(r.op, WriteOp::Points(..))) {
            group.sort_by_key(|r| match &r.op {
                WriteOp::Points(ps, _) => ps.first().map_or(i64::MIN, |p| p.ts),
                _ => i64::MIN,
            });
        }
        let durable = group.iter().any(|r| matches!(r.op, WriteOp::Batch(_) | WriteOp::Points(..) | WriteOp::Correct(_)));
        #[cfg(test)]
        if group.iter().any(|r| matches!(r.op, WriteOp::Crash)) {
            for req in group {
                let _ = req.reply.send(Ok(WriteOutcome::default()));
            }
            return;
        }
        let started = Instant::now();
        w.now = started;
        w.memo_at = (0, 0);
        let mut last: FxMap<String, i64> = FxMap::default();
        // Earliest time per meter in this group, for the accounting cache.
        let mut earliest: FxMap<&str, i64> = FxMap::default();
        for req in &group {
            match &req.op {
                WriteOp::Batch(b) => {
                    for smp in &b.samples {
                        let e = earliest.entry(smp.meter.as_str()).or_insert(smp.t);
                        *e = (*e).min(smp.t);
                    }
                }
                WriteOp::Points(ps, _) => {
                    // Points come in runs of one meter (a line's fields): one lookup per run.
                    for run in ps.chunk_by(|a, b| Arc::ptr_eq(&a.meter, &b.meter) || a.meter == b.meter) {
                        let t = run.iter().map(|p| p.ts).min().unwrap_or(i64::MAX);
                        let e = earliest.entry(&*run[0].meter).or_insert(t);
                        *e = (*e).min(t);
                    }
                }
                WriteOp::Correct(c) => {
                    let e = earliest.entry(c.meter.as_str()).or_insert(c.ts);
                    *e = (*e).min(c.ts);
                }
                WriteOp::Compact | WriteOp::ClearDirty(_) | WriteOp::Forwarded(_) | WriteOp::Flush | WriteOp::MarksRead => {}
                #[cfg(test)]
                WriteOp::Crash => {}
            }
        }
        w.now_ms = chrono::Utc::now().timestamp_millis();
        let corrects = group.iter().any(|r| matches!(r.op, WriteOp::Correct(_)));
        let mut wants_compact = false;
        let wants_flush = group.iter().any(|r| matches!(r.op, WriteOp::Flush));
        // Spool bytes and points added (+) and removed (-) by this group.
        let mut spool_delta = (0i64, 0i64);
        let result = (|| -> rusqlite::Result<Vec<WriteOutcome>> {
            // A correction reads and replaces the stored reading: the head goes to the tables
            // first (its own transaction).
            if corrects {
                w.flush_head()?;
            }
            let tx = conn.unchecked_transaction()?;
            let mut outs = Vec::with_capacity(group.len());
            for req in &group {
                if matches!(req.op, WriteOp::Compact) {
                    wants_compact = true;
                }
                let mut out = WriteOutcome::default();
                // A failed statement fails the whole group's transaction; every request of the
                // group then gets the error and its sender retries (nothing is half-written).
                match &req.op {
                    WriteOp::Batch(b) => w.write_batch(b, &mut out, &mut last)?,
                    WriteOp::Points(ps, source) => {
                        w.source.clone_from(source);
                        for run in ps.chunk_by(|a, b| Arc::ptr_eq(&a.meter, &b.meter) || a.meter == b.meter) {
                            for p in run {
                                w.put(&p.meter, p.quantity, p.ts, p.value, &mut out)?;
                            }
                            let t = run.iter().map(|p| p.ts).max().unwrap_or(i64::MIN);
                            match last.get_mut(&*run[0].meter) {
                                Some(e) => *e = (*e).max(t),
                                None => {
                                    last.insert(run[0].meter.to_string(), t);
                                }
                            }
                        }
                    }
                    WriteOp::Correct(c) => w.correct(c, &mut out)?,
                    WriteOp::Compact | WriteOp::Flush => {}
                    WriteOp::MarksRead => w.marks.all_read(),
                    #[cfg(test)]
                    WriteOp::Crash => {}
                    WriteOp::ClearDirty(marks) => {
                        let mut st = tx.prepare_cached("DELETE FROM dirty_meters WHERE meter = ?1 AND seq = ?2")?;
                        for (m, seq) in marks {
                            st.execute(params![m, seq])?;
                            w.marks.cleared(m, *seq);
                        }
                    }
                    WriteOp::Forwarded(id) => {
                        let (b, p): (i64, i64) = conn
                            .prepare_cached("SELECT coalesce(sum(length(data)), 0), coalesce(sum(points), 0) FROM outbox WHERE id <= ?1")?
                            .query_row([id], |r| Ok((r.get(0)?, r.get(1)?)))?;
                        conn.prepare_cached("DELETE FROM outbox WHERE id <= ?1")?.execute([id])?;
                        spool_delta.0 -= b;
                        spool_delta.1 -= p;
                    }
                }
                outs.push(out);
            }
            if let Some(o) = w.outbox.as_mut().filter(|o| !o.builder.is_empty()) {
                let (data, _) = o.builder.take();
                let points = std::mem::take(&mut o.points);
                conn.prepare_cached("INSERT INTO outbox(created_ms, points, data) VALUES (?1, ?2, ?3)")?
                    .execute(params![chrono::Utc::now().timestamp_millis(), points as i64, data])?;
                spool_delta.0 += data.len() as i64;
                spool_delta.1 += points as i64;
            }
            w.finish_group()?;
            add_point_count(&conn, outs.iter().map(|o| o.points_written as i64).sum())?;
            {
                let mut st = tx.prepare_cached(
                    "INSERT INTO dirty_meters(meter, min_ts, seq) VALUES (?1, ?2, 1)
                     ON CONFLICT(meter) DO UPDATE SET min_ts = min(min_ts, excluded.min_ts), seq = seq + 1",
                )?;
                for (m, t) in &earliest {
                    if w.marks.covers(m, *t) {
                        continue;
                    }
                    st.execute(params![m, t])?;
                    w.marks.wrote(m, *t);
                }
            }
            tx.commit()?;
            if let Some(sp) = &spool {
                sp.apply(spool_delta, &metrics);
            }
            Ok(outs)
        })();
        metrics.store_commit_seconds.observe(started.elapsed().as_secs_f64());
        w.head_points.store(w.head.points, std::sync::atomic::Ordering::Release);
        metrics.head_points.set(w.head.points as i64);
        // A read waiting, or the head full or old: flush it before answering. On a full disk the
        // group stands (its commit is durable, its points stay in the head and `head_log`) and
        // the reads waiting answer from what is flushed.
        let result = result.and_then(|outs| {
            if (wants_flush || w.head_due()) && !disk.is_full() {
                match w.flush_head() {
                    Ok(()) => {}
                    Err(e) if super::disk::is_disk_full(&e, disk.look()) => disk.set_full(&format!("flushing the head: {e}")),
                    Err(e) => return Err(e),
                }
            }
            Ok(outs)
        });
        // Compaction asked for: every day due is sealed before the answer.
        let result = result.and_then(|mut outs| {
            if wants_compact {
                let mut sealed = 0;
                loop {
                    let done = w.compact_pass(options.seal_after_ms, true)?;
                    sealed += done.points;
                    if done.chunks == 0 {
                        break;
                    }
                }
                metrics.points_sealed.inc_by(sealed);
                // Give the freed pages back and fold the WAL into the database file.
                let mut vacuum = conn.prepare("PRAGMA incremental_vacuum")?;
                let mut rows = vacuum.query([])?;
                while rows.next()?.is_some() {}
                conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
                for (o, req) in outs.iter_mut().zip(&group) {
                    if matches!(req.op, WriteOp::Compact) {
                        o.points_sealed = sealed;
                    }
                }
            }
            Ok(outs)
        });
        match result {
            Ok(outs) => {
                {
                    let mut ls = last_seen.write().unwrap_or_else(|e| e.into_inner());
                    for (m, t) in last {
                        let e = ls.entry(m).or_insert(t);
                        *e = (*e).max(t);
                    }
                }
                let mut ops = Vec::with_capacity(group.len());
                let mut replies = Vec::with_capacity(group.len());
                for (WriteReq { op, reply }, out) in group.into_iter().zip(outs) {
                    metrics.store_points.add(out.points_written as i64);
                    metrics.points_written.inc_by(out.points_written);
                    metrics.points_conflicting.inc_by(out.points_conflicting);
                    metrics.points_unchanged.inc_by(out.points_unchanged);
                    metrics.samples_duplicate.inc_by(out.samples_duplicate);
                    replies.push((reply, Ok(out)));
                    ops.push(op);
                }
                // Writes are answered once the WAL is on disk; the rest (reads waiting for a
                // flush, sealing, change records and spool rows forgotten) needs no promise.
                if durable {
                    syncer.answer_when_durable(replies);
                } else {
                    for (reply, out) in replies {
                        let _ = reply.send(out);
                    }
                }
                // Freeing a group's points (a string per point) is left to another thread.
                if let Err(back) = dropper.send(ops) {
                    drop(back.0);
                }
            }
            Err(e) => {
                // The series cache may hold ids of rolled-back rows, and the head points of the
                // rolled-back group: reload it from what is committed.
                w.series.clear();
                w.next_series = None;
                w.marks = Marks::load(&conn);
                w.memo = (String::new(), Vec::new());
                w.memo_at = (0, 0);
                w.dirty.clear();
                if let Err(e) = w.load_head() {
                    tracing::error!("reloading the head after a failed commit failed: {e}");
                }
                if let Some(o) = &mut w.outbox {
                    o.builder.clear();
                    o.points = 0;
                }
                // The transaction was rolled back: on a full disk nothing of it stays (SQLite
                // writes the next transaction's WAL frames over the rolled-back ones).
                let message = if super::disk::is_disk_full(&e, disk.look()) {
                    disk.set_full(&e.to_string());
                    disk.reason()
                } else {
                    tracing::error!("store commit failed: {e}");
                    e.to_string()
                };
                for req in group {
                    let _ = req.reply.send(Err(message.clone()));
                }
            }
        }
    }
    // Channel closed: flush the head and checkpoint the WAL, so that the database file is
    // complete on its own.
    if let Err(e) = w.flush_head() {
        tracing::warn!("flushing the head at shutdown failed (it stays in head_log): {e}");
    }
    if let Err(e) = conn.pragma_update(None, "wal_checkpoint", "TRUNCATE") {
        tracing::warn!("WAL checkpoint at shutdown failed: {e}");
    }
    syncer.stop();
}

impl Embedded {
    async fn write(&self, op: WriteOp) -> Result<WriteOutcome, StoreError> {
        if self.disk.is_full() && matches!(op, WriteOp::Batch(_) | WriteOp::Points(..) | WriteOp::Correct(_) | WriteOp::Compact) {
            return Err(StoreError::DiskFull(self.disk.reason()));
        }
        if let (Some(sp), WriteOp::Batch(_) | WriteOp::Points(..)) = (&self.spool, &op) {
            let bytes = sp.bytes.load(std::sync::atomic::Ordering::Relaxed);
            if bytes >= sp.max_bytes {
                return Err(StoreError::SpoolFull { bytes, max: sp.max_bytes });
            }
        }
        let (reply, rx) = oneshot::channel();
        let tx = self.tx.lock().unwrap_or_else(|e| e.into_inner()).clone().ok_or(StoreError::Closed)?;
        tokio::task::spawn_blocking(move || tx.send(WriteReq { op, reply }))
            .await
            .map_err(|e| StoreError::Task(e.to_string()))?
            .map_err(|_| StoreError::Closed)?;
        let disk = &self.disk;
        rx.await.map_err(|_| StoreError::Closed)?.map_err(|e| if disk.is_full() { StoreError::DiskFull(e) } else { StoreError::Task(e) })
    }

    /// The disk holding the store is full: writes are refused until space returns.
    pub fn read_only(&self) -> bool {
        self.disk.is_full()
    }

    /// Free bytes on the data directory's file system, looked at now (also sets the metric).
    pub fn free_bytes(&self) -> Option<u64> {
        self.disk.look()
    }

    /// Stores a gateway batch; returns after the commit.
    pub async fn write_batch(&self, batch: Batch) -> Result<WriteOutcome, StoreError> {
        self.write(WriteOp::Batch(batch)).await
    }

    /// Stores loose points (line protocol); returns after the commit.
    pub async fn write_points(&self, points: Vec<Point>) -> Result<WriteOutcome, StoreError> {
        self.write_points_from(points, "line protocol".into()).await
    }

    /// [`Self::write_points`] naming who sent them (kept with any conflict they cause).
    pub async fn write_points_from(&self, points: Vec<Point>, source: String) -> Result<WriteOutcome, StoreError> {
        self.write(WriteOp::Points(points, source)).await
    }

    /// An engineer's correction: sets the stored reading at (meter, quantity, time) to the
    /// value (when a reading is stored there) and settles the open conflicts there, in one
    /// transaction; `corrected` in the outcome says what was stored before.
    pub async fn correct(&self, c: Correction) -> Result<WriteOutcome, StoreError> {
        self.write(WriteOp::Correct(c)).await
    }

    /// The conflicts of a meter (open and settled), oldest first, at most `limit`.
    pub async fn conflicts(&self, meter: &str, limit: usize) -> Result<Vec<ConflictRecord>, StoreError> {
        let meter = meter.to_string();
        // Conflicts are written in the group commits: no need to flush the head.
        self.read_committed(move |c| read_conflicts(c, &meter, limit)).await
    }

    /// Seals every day due (older than the head) into compressed chunks now; returns after the
    /// last commit, with the number of raw points sealed in `points_sealed`.
    pub async fn compact(&self) -> Result<WriteOutcome, StoreError> {
        self.write(WriteOp::Compact).await
    }

    /// The spool, when forwarding to InfluxDB.
    pub fn spool(&self) -> Option<Arc<Spool>> {
        self.spool.clone()
    }

    /// Spool rows after `after`, in order, until they hold at least `max_points` points (at
    /// least one row when there is one).
    pub async fn spool_rows(&self, after: i64, max_points: u64) -> Result<Vec<SpoolRow>, StoreError> {
        // The spool rows are written in the group commits: no need to flush the head.
        self.read_committed(move |c| {
            let mut st = c.prepare_cached("SELECT id, created_ms, points, data FROM outbox WHERE id > ?1 ORDER BY id")?;
            let mut rows = st.query([after])?;
            let (mut out, mut n) = (Vec::new(), 0u64);
            while let Some(r) = rows.next()? {
                let row = SpoolRow { id: r.get(0)?, created_ms: r.get(1)?, points: r.get::<_, i64>(2)?.max(0) as u64, data: r.get(3)? };
                n += row.points;
                out.push(row);
                if n >= max_points {
                    break;
                }
            }
            Ok(out)
        })
        .await
    }

    /// The spool rows up to `id` are in InfluxDB: deletes them (in the writer's next commit).
    pub async fn spool_forwarded(&self, id: i64) -> Result<(), StoreError> {
        self.write(WriteOp::Forwarded(id)).await.map(|_| ())
    }

    /// Runs `f` on a read connection on the blocking pool.
    pub async fn read<T: Send + 'static>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static) -> Result<T, StoreError> {
        // Every acknowledged point is readable: the head goes to the tables first.
        self.flush().await?;
        self.read_committed(f).await
    }

    /// Flushes the head when it holds points: everything acknowledged before the call is then
    /// in the tables, for reads that do not flush (the `_settled` ones).
    /// On a full disk the head is not flushed (the flush could not be written): reads then
    /// answer from what was flushed before.
    pub async fn flush(&self) -> Result<(), StoreError> {
        if self.head_points.load(std::sync::atomic::Ordering::Acquire) > 0 && !self.disk.is_full() {
            self.write(WriteOp::Flush).await?;
        }
        Ok(())
    }

    /// Runs `f` on a read connection without flushing the head first: for what the group
    /// commits write directly (the spool, gateway ranges), not points or roll-ups.
    async fn read_committed<T: Send + 'static>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static) -> Result<T, StoreError> {
        let readers = self.readers.clone();
        let i = self.next_reader.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % readers.len();
        tokio::task::spawn_blocking(move || {
            let conn = readers[i].lock().unwrap_or_else(|e| e.into_inner());
            // One read transaction for all the statements of this read: without it each statement
            // saw its own snapshot, and a day sealed between them could hide a replaced value
            // (the chunk read before the sealing, the raw rows after it).
            let tx = conn.unchecked_transaction()?;
            let out = f(&tx);
            drop(tx);
            out.map_err(StoreError::from)
        })
        .await
        .map_err(|e| StoreError::Task(e.to_string()))?
    }

    /// Readings of one series in `[from, to)`, by time.
    pub async fn points(&self, meter: &str, q: Quantity, from: i64, to: i64) -> Result<Vec<(i64, f64)>, StoreError> {
        let meter = meter.to_string();
        self.read(move |c| {
            let Some(sid) = series_id(c, &meter, q)? else { return Ok(Vec::new()) };
            chunks::read_series(c, sid, from, to)
        })
        .await
    }

    /// Readings of a counter covering `[from, to)`: those inside, plus the nearest one before and
    /// the nearest one at or after the end, so that boundary values can be interpolated.
    pub async fn counter_window(&self, meter: &str, q: Quantity, from: i64, to: i64) -> Result<Vec<(i64, f64)>, StoreError> {
        let meter = meter.to_string();
        self.read(move |c| {
            let Some(sid) = series_id(c, &meter, q)? else { return Ok(Vec::new()) };
            let mut out: Vec<(i64, f64)> = chunks::last_before(c, sid, from)?.into_iter().collect();
            out.extend(chunks::read_series(c, sid, from, to)?);
            out.extend(chunks::first_from(c, sid, to)?);
            Ok(out)
        })
        .await
    }

    /// Hourly roll-ups of one series for the hours in `[from, to)`.
    pub async fn rollups(&self, meter: &str, q: Quantity, from: i64, to: i64) -> Result<Vec<HourRollup>, StoreError> {
        self.flush().await?;
        self.rollups_settled(meter, q, from, to).await
    }

    /// Like [`Embedded::rollups`], as of the last flush of the head (at most
    /// `head_max_age_ms` behind) instead of flushing it: for background evaluators that read
    /// meter after meter (alerts), where a flush per read would take the writer's time.
    pub async fn rollups_settled(&self, meter: &str, q: Quantity, from: i64, to: i64) -> Result<Vec<HourRollup>, StoreError> {
        let meter = meter.to_string();
        self.read_committed(move |c| {
            let Some(sid) = series_id(c, &meter, q)? else { return Ok(Vec::new()) };
            read_rollups(c, sid, from, to)
        })
        .await
    }

    /// What consumption over `[from, to)` needs, from the roll-ups (`from`, `to` hour-aligned):
    /// the last reading before `from`, the roll-ups of the hours inside, and the first reading at
    /// or after `to`; one entry per series, in order, the work split over the read connections.
    pub async fn counter_rollups_many(&self, series: Vec<(String, Quantity)>, from: i64, to: i64) -> Result<Vec<CounterRollups>, StoreError> {
        self.flush().await?;
        self.counter_rollups_many_settled(series, from, to).await
    }

    /// [`Self::counter_rollups_many`] as of the head's last flush: a caller reading in batches
    /// flushes once ([`Self::flush`]) and then reads every batch as of that flush.
    pub async fn counter_rollups_many_settled(&self, series: Vec<(String, Quantity)>, from: i64, to: i64) -> Result<Vec<CounterRollups>, StoreError> {
        let per = series.len().div_ceil(self.readers.len()).max(1);
        let mut reads = tokio::task::JoinSet::new();
        for (i, part) in series.chunks(per).enumerate() {
            let (store, part) = (self.clone(), part.to_vec());
            reads.spawn(async move {
                let r = store.read_committed(move |c| part.iter().map(|(m, q)| counter_rollups_of(c, m, *q, from, to)).collect::<rusqlite::Result<Vec<_>>>()).await;
                (i, r)
            });
        }
        let mut parts: Vec<Option<Vec<CounterRollups>>> = vec![None; reads.len()];
        while let Some(done) = reads.join_next().await {
            let (i, r) = done.map_err(|e| StoreError::Task(e.to_string()))?;
            parts[i] = Some(r?);
        }
        Ok(parts.into_iter().flatten().flatten().collect())
    }

    /// Per gateway, its queue epochs, oldest batch first (the current one last), with their
    /// stored sequence ranges.
    pub async fn gateways(&self) -> Result<Vec<(String, Vec<GatewayEpoch>)>, StoreError> {
        self.read_committed(|c| {
            let mut st = c.prepare_cached("SELECT gateway, epoch, first_ms, last_ms FROM gateway_epochs ORDER BY gateway, coalesce(last_ms, 0), epoch")?;
            let epochs: Vec<(String, String, Option<i64>, Option<i64>)> =
                st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?.collect::<Result<_, _>>()?;
            let mut st = c.prepare_cached("SELECT gateway, epoch, start, end FROM gateway_seq ORDER BY gateway, epoch, start")?;
            let mut ranges: HashMap<(String, String), Vec<(u64, u64)>> = HashMap::new();
            for row in st.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, i64>(2)?, r.get::<_, i64>(3)?)))? {
                let (g, e, a, z) = row?;
                ranges.entry((g, e)).or_default().push((a as u64, z as u64));
            }
            let mut out: Vec<(String, Vec<GatewayEpoch>)> = Vec::new();
            for (g, e, first_ms, last_ms) in epochs {
                let stored = ranges.remove(&(g.clone(), e.clone())).unwrap_or_default();
                let ep = GatewayEpoch { epoch: (!e.is_empty()).then_some(e), first_ms, last_ms, ranges: stored };
                match out.last_mut() {
                    Some((lg, v)) if *lg == g => v.push(ep),
                    _ => out.push((g, vec![ep])),
                }
            }
            Ok(out)
        })
        .await
    }

    /// Meters that have stored readings, with the count of series.
    pub async fn stored_meters(&self) -> Result<Vec<String>, StoreError> {
        self.read_committed(|c| {
            let mut st = c.prepare_cached("SELECT DISTINCT meter FROM series ORDER BY meter")?;
            let rows = st.query_map([], |r| r.get(0))?;
            rows.collect()
        })
        .await
    }

    /// Newest reading time per meter.
    /// What changed since the accounting cache last looked: per meter, the earliest reading
    /// time written and a sequence number that grows with every write. Recorded in the
    /// transaction that stores the points, so it survives a crash with them.
    pub async fn dirty_marks(&self) -> Result<Vec<(String, i64, i64)>, StoreError> {
        // Announced to the writer first: its next write to any of them bumps the sequence.
        self.write(WriteOp::MarksRead).await?;
        self.read_committed(|c| {
            let mut st = c.prepare_cached("SELECT meter, min_ts, seq FROM dirty_meters")?;
            let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
            rows.collect()
        })
        .await
    }

    /// Forgets marks the cache has applied; a mark written again since (another sequence
    /// number) stays.
    pub async fn clear_dirty(&self, marks: Vec<(String, i64)>) -> Result<(), StoreError> {
        self.write(WriteOp::ClearDirty(marks)).await.map(|_| ())
    }

    /// The epoch of the change records (see [`Store::dirty_marks`]).
    pub async fn dirty_epoch(&self) -> Result<String, StoreError> {
        self.read_committed(|c| c.query_row("SELECT value FROM meta WHERE key = 'dirty_epoch'", [], |r| r.get(0))).await
    }

    /// Time of the last counter reading of a series before `t`, from the roll-ups.
    /// As of the last flush of the head: the accounting cache uses it to decide from which year
    /// to drop a meter's figures, where a reading still in the head could only make that year
    /// later (an older answer drops more, never less).
    pub async fn reading_before(&self, meter: &str, q: Quantity, t: i64) -> Result<Option<i64>, StoreError> {
        let meter = meter.to_string();
        self.read_committed(move |c| {
            let Some(sid) = series_id(c, &meter, q)? else { return Ok(None) };
            Ok(rollup_before(c, sid, hour_of(t))?.map(|h| h.last_ts))
        })
        .await
    }

    pub fn last_seen(&self, meter: &str) -> Option<i64> {
        self.last_seen.read().unwrap_or_else(|e| e.into_inner()).get(meter).copied()
    }

    /// Size of the database files on disk.
    pub fn bytes(&self) -> u64 {
        ["", "-wal"].iter().filter_map(|s| std::fs::metadata(format!("{}{s}", self.path.display())).ok()).map(|m| m.len()).sum()
    }

    /// Stops the writer after it has committed every write already sent, and checkpoints the
    /// WAL. Later writes fail with [`StoreError::Closed`].
    pub fn close(&self) {
        drop(self.tx.lock().unwrap_or_else(|e| e.into_inner()).take());
        if let Some(h) = self.writer.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = h.join();
        }
    }
}

/// The last reading before a window, the roll-ups inside, the first reading after it.
pub type CounterRollups = (Option<(i64, f64)>, Vec<HourRollup>, Option<(i64, f64)>);

fn counter_rollups_of(c: &Connection, meter: &str, q: Quantity, from: i64, to: i64) -> rusqlite::Result<CounterRollups> {
    let Some(sid) = series_id(c, meter, q)? else { return Ok((None, Vec::new(), None)) };
    let before = rollup_before(c, sid, hour_of(from))?.map(|h| (h.last_ts, h.last_v));
    let hours = read_rollups(c, sid, from, to)?;
    let after = rollup_from(c, sid, to)?.map(|h| (h.first_ts, h.first_v));
    Ok((before, hours, after))
}

/// The catalog (format 6): `quantities` gives each quantity name a small code, `series` one row
/// per (meter, quantity code) with its id; both are keyed by their text, with no second index.
const CATALOG: &str = "CREATE TABLE IF NOT EXISTS quantities(name TEXT PRIMARY KEY, code INTEGER NOT NULL) WITHOUT ROWID;
    CREATE TABLE IF NOT EXISTS series(meter TEXT NOT NULL, quantity INTEGER NOT NULL, id INTEGER NOT NULL, PRIMARY KEY(meter, quantity)) WITHOUT ROWID;";

/// Gives the quantity `?1` a code if it has none.
const ADD_QUANTITY: &str = "INSERT OR IGNORE INTO quantities(name, code) SELECT ?1, coalesce(max(code), 0) + 1 FROM quantities";

/// Adds the series of meter `?1` and quantity `?2` (named) with id `?3`.
const ADD_SERIES: &str = "INSERT INTO series(meter, quantity, id) VALUES (?1, (SELECT code FROM quantities WHERE name = ?2), ?3)";

fn series_id(c: &Connection, meter: &str, q: Quantity) -> rusqlite::Result<Option<i64>> {
    c.prepare_cached("SELECT id FROM series WHERE meter = ?1 AND quantity = (SELECT code FROM quantities WHERE name = ?2)")?
        .query_row(params![meter, q.name()], |r| r.get(0))
        .optional()
}

/// Hourly roll-ups of a series in `[from, to)`: the rows of open hours and the sealed days'
/// blobs; a row wins over a blob's entry for the same hour (it was written after the sealing).
fn read_rollups(c: &Connection, sid: i64, from: i64, to: i64) -> rusqlite::Result<Vec<HourRollup>> {
    let from = hour_of(from);
    let mut st = c.prepare_cached(&format!("SELECT {ROLLUP_COLUMNS} FROM rollup_hour WHERE series = ?1 AND hour >= ?2 AND hour < ?3 ORDER BY hour"))?;
    let rows: Vec<HourRollup> = st.query_map(params![sid, from, to], rollup_row)?.collect::<Result<_, _>>()?;
    let mut sealed = Vec::new();
    let mut st = c.prepare_cached("SELECT day, data FROM rollup_day WHERE series = ?1 AND day >= ?2 AND day < ?3 ORDER BY day")?;
    let mut blobs = st.query(params![sid, chunks::day_of(from), to])?;
    while let Some(b) = blobs.next()? {
        let (day, data): (i64, Vec<u8>) = (b.get(0)?, b.get(1)?);
        sealed.extend(codec::decode_rollups(day, &data).map_err(chunks::corrupt)?.into_iter().filter(|h| h.hour >= from && h.hour < to));
    }
    if sealed.is_empty() {
        return Ok(rows);
    }
    Ok(merge_rollups(sealed, rows))
}

/// Both sorted by hour into one; on the same hour the row wins.
fn merge_rollups(sealed: Vec<HourRollup>, rows: Vec<HourRollup>) -> Vec<HourRollup> {
    let mut out = Vec::with_capacity(sealed.len() + rows.len());
    let (mut a, mut b) = (sealed.into_iter().peekable(), rows.into_iter().peekable());
    loop {
        match (a.peek(), b.peek()) {
            (Some(x), Some(y)) if x.hour < y.hour => out.extend(a.next()),
            (Some(x), Some(y)) if x.hour == y.hour => {
                a.next();
                out.extend(b.next());
            }
            (_, Some(_)) => out.extend(b.next()),
            (Some(_), None) => out.extend(a.next()),
            (None, None) => return out,
        }
    }
}

/// The roll-up of the newest hour before `t` (hour-aligned), rows and sealed days.
fn rollup_before(c: &Connection, sid: i64, t: i64) -> rusqlite::Result<Option<HourRollup>> {
    let row = c
        .prepare_cached(&format!("SELECT {ROLLUP_COLUMNS} FROM rollup_hour WHERE series = ?1 AND hour < ?2 ORDER BY hour DESC LIMIT 1"))?
        .query_row(params![sid, t], rollup_row)
        .optional()?;
    // The blob of the day holding `t` may have nothing before it; then the one before does.
    let mut sealed = None;
    let mut st = c.prepare_cached("SELECT day, data FROM rollup_day WHERE series = ?1 AND day < ?2 ORDER BY day DESC LIMIT 2")?;
    let mut blobs = st.query(params![sid, t])?;
    while let Some(b) = blobs.next()? {
        let (day, data): (i64, Vec<u8>) = (b.get(0)?, b.get(1)?);
        if let Some(h) = codec::decode_rollups(day, &data).map_err(chunks::corrupt)?.into_iter().rev().find(|h| h.hour < t) {
            sealed = Some(h);
            break;
        }
    }
    Ok(match (sealed, row) {
        (Some(s), Some(r)) => Some(if s.hour > r.hour { s } else { r }),
        (s, r) => r.or(s),
    })
}

/// The roll-up of the oldest hour at or after `t` (hour-aligned), rows and sealed days.
fn rollup_from(c: &Connection, sid: i64, t: i64) -> rusqlite::Result<Option<HourRollup>> {
    let row = c
        .prepare_cached(&format!("SELECT {ROLLUP_COLUMNS} FROM rollup_hour WHERE series = ?1 AND hour >= ?2 ORDER BY hour LIMIT 1"))?
        .query_row(params![sid, t], rollup_row)
        .optional()?;
    let mut sealed = None;
    let mut st = c.prepare_cached("SELECT day, data FROM rollup_day WHERE series = ?1 AND day >= ?2 ORDER BY day LIMIT 2")?;
    let mut blobs = st.query(params![sid, chunks::day_of(t)])?;
    while let Some(b) = blobs.next()? {
        let (day, data): (i64, Vec<u8>) = (b.get(0)?, b.get(1)?);
        if let Some(h) = codec::decode_rollups(day, &data).map_err(chunks::corrupt)?.into_iter().find(|h| h.hour >= t) {
            sealed = Some(h);
            break;
        }
    }
    Ok(match (sealed, row) {
        (Some(s), Some(r)) => Some(if s.hour < r.hour { s } else { r }),
        (s, r) => r.or(s),
    })
}

/// The stored roll-up of one hour: its row, else its sealed day's entry.
fn stored_rollup(c: &Connection, sid: i64, hour: i64) -> rusqlite::Result<Option<HourRollup>> {
    let row = c
        .prepare_cached(&format!("SELECT {ROLLUP_COLUMNS} FROM rollup_hour WHERE series = ?1 AND hour = ?2"))?
        .query_row(params![sid, hour], rollup_row)
        .optional()?;
    if row.is_some() {
        return Ok(row);
    }
    let day = chunks::day_of(hour);
    let data: Option<Vec<u8>> = c.prepare_cached("SELECT data FROM rollup_day WHERE series = ?1 AND day = ?2")?.query_row(params![sid, day], |r| r.get(0)).optional()?;
    match data {
        Some(d) => Ok(codec::decode_rollups(day, &d).map_err(chunks::corrupt)?.into_iter().find(|h| h.hour == hour)),
        None => Ok(None),
    }
}

/// Seals the roll-up rows of a series and day into the day's blob (merged with the blob already
/// there, rows winning), inside the caller's transaction.
pub(super) fn seal_rollups(c: &Connection, sid: i64, day: i64) -> rusqlite::Result<()> {
    let all = read_rollups(c, sid, day, day + chunks::DAY_MS)?;
    if all.is_empty() {
        return Ok(());
    }
    c.prepare_cached("INSERT OR REPLACE INTO rollup_day(series, day, data) VALUES (?1, ?2, ?3)")?.execute(params![sid, day, codec::encode_rollups(day, &all)])?;
    c.prepare_cached("DELETE FROM rollup_hour WHERE series = ?1 AND hour >= ?2 AND hour < ?3")?.execute(params![sid, day, day + chunks::DAY_MS])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use energy_wire::Sample;

    #[test]
    fn a_failed_wal_sync_fails_the_waiting_answers_and_every_write_after() {
        let dir = tempfile::tempdir().unwrap();
        // A WAL that cannot be opened stands for a failed fsync.
        let wal = dir.path().join("missing").join("energyd.sqlite-wal");
        let syncer = Syncer::start(wal, Metrics::new()).unwrap();
        let (tx, rx) = oneshot::channel();
        syncer.answer_when_durable(vec![(tx, Ok(WriteOutcome { points_written: 3, ..Default::default() }))]);
        let err = rx.blocking_recv().unwrap().unwrap_err();
        assert!(err.contains("syncing the store's WAL file") && err.contains("missing") && err.contains("restarted"), "{err}");
        assert_eq!(syncer.failure().as_deref(), Some(err.as_str()));
        syncer.stop();
        // A WAL that syncs: the answer goes through as it was.
        let wal = dir.path().join("energyd.sqlite-wal");
        std::fs::write(&wal, b"frames").unwrap();
        let syncer = Syncer::start(wal, Metrics::new()).unwrap();
        let (tx, rx) = oneshot::channel();
        syncer.answer_when_durable(vec![(tx, Ok(WriteOutcome { points_written: 3, ..Default::default() }))]);
        assert_eq!(rx.blocking_recv().unwrap().unwrap().points_written, 3);
        assert!(syncer.failure().is_none());
        syncer.stop();
    }

    #[test]
    fn head_log_records_decode_in_both_layouts() {
        let points = [(3i64, 1_764_288_000_000i64, 1.5f64), (4, 1_764_288_000_000, -0.0), (2, 1_764_287_940_000, f64::MAX), (900, 0, 7.25), (1, i64::MAX, 1e-300)];
        let mut head = Head::default();
        for &(sid, ts, v) in &points {
            head.insert(sid, ts, v);
        }
        assert_eq!(head.log[0], HEAD_LOG_DELTAS);
        // A line's neighbours take a byte each for series and time, and 8 for the value.
        // (i64::MAX from 0 zigzags to 64 bits: a 10-byte varint.)
        assert_eq!(head.log.len(), 1 + (1 + 6 + 8) + (1 + 1 + 8) + (1 + 3 + 8) + (2 + 6 + 8) + (2 + 10 + 8));
        let decoded = decode_head_log(&head.log).unwrap();
        assert_eq!(decoded.len(), points.len());
        for (d, p) in decoded.iter().zip(&points) {
            assert_eq!((d.0, d.1, d.2.to_bits()), (p.0, p.1, p.2.to_bits()));
        }
        // The layout written before (plain varints, no leading 0) still decodes.
        let mut old = Vec::new();
        for &(sid, ts, v) in &points[..4] {
            put_varint(&mut old, sid as u64);
            put_varint(&mut old, ts as u64);
            old.extend_from_slice(&v.to_bits().to_le_bytes());
        }
        let decoded = decode_head_log(&old).unwrap();
        for (d, p) in decoded.iter().zip(&points[..4]) {
            assert_eq!((d.0, d.1, d.2.to_bits()), (p.0, p.1, p.2.to_bits()));
        }
        // A cut record is refused, not misread.
        assert!(decode_head_log(&head.log[..head.log.len() - 3]).is_none());
    }

    #[test]
    fn locate_searches_from_the_newest_end() {
        let pts: Vec<(i64, f64)> = [10, 20, 30, 40, 50, 60, 70].iter().map(|&t| (t, t as f64)).collect();
        // (time, expected): Ok(index) when present, Err(insertion index) when not.
        let table: [(i64, Result<usize, usize>); 12] =
            [(5, Err(0)), (10, Ok(0)), (15, Err(1)), (20, Ok(1)), (35, Err(3)), (40, Ok(3)), (60, Ok(5)), (65, Err(6)), (70, Ok(6)), (75, Err(7)), (i64::MIN, Err(0)), (i64::MAX, Err(7))];
        for (ts, want) in table {
            assert_eq!(locate(&pts, ts), want, "time {ts}");
        }
        assert_eq!(locate(&[], 1), Err(0));
        assert_eq!(locate(&[(1, 0.0)], 1), Ok(0));
        assert_eq!(locate(&[(1, 0.0)], 0), Err(0));
        assert_eq!(locate(&[(1, 0.0)], 2), Err(1));
        // Against the plain binary search, every time around every length up to 40.
        for n in 0..40i64 {
            let pts: Vec<(i64, f64)> = (0..n).map(|i| (i * 3, 0.0)).collect();
            for ts in -2..n * 3 + 2 {
                assert_eq!(locate(&pts, ts), pts.binary_search_by_key(&ts, |p| p.0), "{n} points, time {ts}");
            }
        }
    }

    #[test]
    fn ranges_merge() {
        assert_eq!(merge_ranges(vec![(5, 9), (1, 3), (4, 4), (20, 21), (21, 25)]), vec![(1, 9), (20, 25)]);
        assert_eq!(merge_ranges(vec![]), vec![]);
    }

    fn sample(meter: &str, t: i64, v: f64) -> Sample {
        Sample { meter: meter.into(), t, v: [(Quantity::ActiveEnergyImport, v)].into_iter().collect() }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn batches_are_idempotent_and_points_dedupe() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), Metrics::new()).unwrap();
        let t = 1_764_288_000_000;
        let b = Batch::new("gw", 1, vec![sample("m", t, 1.0), sample("m", t + 1000, 2.0)]);
        let o = store.write_batch(b.clone()).await.unwrap();
        assert_eq!((o.samples_stored, o.points_written, o.acked_through), (2, 2, 2));
        let o = store.write_batch(b).await.unwrap();
        assert_eq!((o.samples_stored, o.samples_duplicate, o.acked_through), (0, 2, 2));
        // Re-batched differently after a restart: seq 2..3, only 3 is new.
        let b = Batch::new("gw", 2, vec![sample("m", t + 1000, 2.0), sample("m", t + 2000, 3.0)]);
        let o = store.write_batch(b).await.unwrap();
        assert_eq!((o.samples_stored, o.samples_duplicate, o.acked_through), (1, 1, 3));
        // A gap: 10..10 stored, acked_through stays at 3.
        let o = store.write_batch(Batch::new("gw", 10, vec![sample("m", t + 9000, 9.0)])).await.unwrap();
        assert_eq!(o.acked_through, 3);
        // Line-protocol style points: same value is unchanged, a different value is a conflict,
        // kept aside (offered twice: one open conflict), never stored.
        let p = |v| Point { meter: "m".into(), quantity: Quantity::ActiveEnergyImport, ts: t, value: v };
        let o = store.write_points_from(vec![p(1.0), p(1.5), p(1.5)], "line protocol (token lp)".into()).await.unwrap();
        assert_eq!((o.points_unchanged, o.points_conflicting, o.points_written), (1, 2, 0));
        assert_eq!(o.conflicts[0], Conflict { meter: "m".into(), quantity: Quantity::ActiveEnergyImport, ts: t, stored: 1.0, offered: 1.5, source: "line protocol (token lp)".into(), received_ms: o.conflicts[0].received_ms });
        let pts = store.points("m", Quantity::ActiveEnergyImport, 0, i64::MAX).await.unwrap();
        assert_eq!(pts, vec![(t, 1.0), (t + 1000, 2.0), (t + 2000, 3.0), (t + 9000, 9.0)]);
        // A batch sample offering another value at a stored time: a conflict naming the sample.
        let o = store.write_batch(Batch::new("gw2", 1, vec![sample("m", t + 1000, 2.5)])).await.unwrap();
        assert_eq!((o.samples_stored, o.points_conflicting), (1, 1));
        let c = store.conflicts("m", 100).await.unwrap();
        assert_eq!(c.len(), 2, "{c:?}");
        assert_eq!((c[0].conflict.stored, c[0].conflict.offered, c[0].resolved_ms), (1.0, 1.5, None));
        assert_eq!((c[1].conflict.ts, c[1].conflict.source.as_str()), (t + 1000, "gateway gw2, sample 1"));
        // The engineer's correction sets the stored reading and settles the conflict there.
        let corr = |ts, value| Correction { meter: "m".into(), quantity: Quantity::ActiveEnergyImport, ts, value, by: "eng".into() };
        let o = store.correct(corr(t, 1.5)).await.unwrap();
        assert_eq!(o.corrected, Some(Corrected { previous: Some(1.0), conflicts_resolved: 1 }));
        let c = store.conflicts("m", 100).await.unwrap();
        assert_eq!((c[0].resolved_value, c[0].resolved_by.as_deref(), c[1].resolved_ms), (Some(1.5), Some("eng"), None));
        // Nothing stored at that time: nothing to change.
        assert_eq!(store.correct(corr(t + 5, 4.0)).await.unwrap().corrected, Some(Corrected { previous: None, conflicts_resolved: 0 }));
        let w = store.counter_window("m", Quantity::ActiveEnergyImport, t + 500, t + 2000).await.unwrap();
        assert_eq!(w, vec![(t, 1.5), (t + 1000, 2.0), (t + 2000, 3.0)]);
        assert_eq!(store.last_seen("m"), Some(t + 9000));
        store.close();
        // Reopen: state persists.
        let store = open(dir.path(), Metrics::new()).unwrap();
        assert_eq!(store.last_seen("m"), Some(t + 9000));
        let g = store.gateways().await.unwrap();
        let got: Vec<(String, Option<String>, Vec<(u64, u64)>)> = g.iter().flat_map(|(id, es)| es.iter().map(move |e| (id.clone(), e.epoch.clone(), e.ranges.clone()))).collect();
        assert_eq!(got, vec![("gw".to_string(), None, vec![(1, 3), (10, 10)]), ("gw2".to_string(), None, vec![(1, 1)])]);
    }

    /// Change records: the earliest time per meter, kept across reopening; a record written
    /// again after it was read survives the clearing of the old one. A version 2 store is
    /// upgraded.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn change_records_survive_and_clear_by_sequence() {
        let dir = tempfile::tempdir().unwrap();
        let p = |m: &str, ts: i64| Point { meter: m.into(), quantity: Quantity::ActiveEnergyImport, ts, value: 1.0 };
        let store = open(dir.path(), Metrics::new()).unwrap();
        store.write_points(vec![p("a", 5_000), p("a", 2_000), p("b", 9_000)]).await.unwrap();
        store.write_points(vec![p("a", 7_000)]).await.unwrap();
        let epoch = store.dirty_epoch().await.unwrap();
        store.close();
        let store = open(dir.path(), Metrics::new()).unwrap();
        assert_eq!(store.dirty_epoch().await.unwrap(), epoch);
        let mut marks = store.dirty_marks().await.unwrap();
        marks.sort();
        // The second write to `a` (later than its record, which nobody had read) left it as it was.
        assert_eq!(marks, vec![("a".to_string(), 2_000, 1), ("b".to_string(), 9_000, 1)]);
        // A write after reading the marks bumps a's sequence: clearing the old one keeps it.
        store.write_points(vec![p("a", 8_000)]).await.unwrap();
        store.clear_dirty(marks.into_iter().map(|(m, _, s)| (m, s)).collect()).await.unwrap();
        assert_eq!(store.dirty_marks().await.unwrap(), vec![("a".to_string(), 2_000, 2)]);
        // Read again: the next write bumps it again, even a later one; an earlier one moves
        // the time back.
        store.write_points(vec![p("a", 9_000)]).await.unwrap();
        assert_eq!(store.dirty_marks().await.unwrap(), vec![("a".to_string(), 2_000, 3)]);
        store.write_points(vec![p("a", 1_000)]).await.unwrap();
        assert_eq!(store.dirty_marks().await.unwrap(), vec![("a".to_string(), 1_000, 4)]);
        // Cleared with the sequence read and not written since: gone.
        store.clear_dirty(vec![("a".to_string(), 4)]).await.unwrap();
        assert_eq!(store.dirty_marks().await.unwrap(), vec![]);
        // A new record; a later write before anyone reads it leaves it as it was.
        store.write_points(vec![p("a", 9_600)]).await.unwrap();
        store.write_points(vec![p("a", 9_700)]).await.unwrap();
        assert_eq!(store.dirty_marks().await.unwrap(), vec![("a".to_string(), 9_600, 1)]);
        store.close();
        // Versions 2 to 4 upgrade in place; a version 4 store left by a crash holds head_log
        // records of plain varints, which are read.
        for old in ["2", "3", "4"] {
            let c = Connection::open(dir.path().join("energyd.sqlite")).unwrap();
            c.execute("UPDATE meta SET value = ?1 WHERE key = 'format_version'", [old]).unwrap();
            if old == "4" {
                let sid: i64 = c.query_row("SELECT id FROM series WHERE meter = 'a'", [], |r| r.get(0)).unwrap();
                let mut rec = Vec::new();
                put_varint(&mut rec, sid as u64);
                put_varint(&mut rec, 20_000);
                rec.extend_from_slice(&5.5f64.to_bits().to_le_bytes());
                c.execute("INSERT INTO head_log(data) VALUES (?1)", [rec]).unwrap();
            }
            drop(c);
            let store = open(dir.path(), Metrics::new()).unwrap();
            if old == "4" {
                let pts = store.points("a", Quantity::ActiveEnergyImport, 0, i64::MAX).await.unwrap();
                assert!(pts.contains(&(20_000, 5.5)), "{pts:?}");
            }
            store.close();
            let c = Connection::open(dir.path().join("energyd.sqlite")).unwrap();
            let v: String = c.query_row("SELECT value FROM meta WHERE key = 'format_version'", [], |r| r.get(0)).unwrap();
            assert_eq!(v, FORMAT_VERSION.to_string());
        }
    }

    /// A version 5 store (catalog of names and a unique index, chunks of codec version 2,
    /// roll-ups of format 1): upgraded in place with the same series ids, its data read.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_version_5_store_is_upgraded_with_its_catalog() {
        let dir = tempfile::tempdir().unwrap();
        let t = 1_764_288_000_000i64;
        let pts: Vec<(i64, f64)> = (0..120).map(|i| (t + i * 60_000, 100.0 + i as f64 * 0.25)).collect();
        {
            let c = Connection::open(dir.path().join("energyd.sqlite")).unwrap();
            c.execute_batch(
                "CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
                 INSERT INTO meta VALUES ('format_version', '5');
                 CREATE TABLE series(id INTEGER PRIMARY KEY, meter TEXT NOT NULL, quantity TEXT NOT NULL, UNIQUE(meter, quantity));
                 INSERT INTO series VALUES (7, 'm', 'active_energy_import'), (9, 'm', 'voltage_l1'), (12, 'n', 'active_energy_import');
                 CREATE TABLE chunks(series INTEGER NOT NULL, day INTEGER NOT NULL, count INTEGER NOT NULL, data BLOB NOT NULL, PRIMARY KEY(series, day));
                 CREATE TABLE rollup_day(series INTEGER NOT NULL, day INTEGER NOT NULL, data BLOB NOT NULL, PRIMARY KEY(series, day)) WITHOUT ROWID;",
            )
            .unwrap();
            let day = t - t.rem_euclid(chunks::DAY_MS);
            c.execute("INSERT INTO chunks VALUES (7, ?1, 120, ?2)", params![day, codec::encode_version(&pts, 2)]).unwrap();
            let hours = [HourRollup::of_points(&pts[..60]).unwrap(), HourRollup::of_points(&pts[60..]).unwrap()];
            c.execute("INSERT INTO rollup_day VALUES (7, ?1, ?2)", params![day, codec::encode_rollups_version(day, &hours, 1)]).unwrap();
        }
        let store = open(dir.path(), Metrics::new()).unwrap();
        assert_eq!(store.points("m", Quantity::ActiveEnergyImport, 0, i64::MAX).await.unwrap(), pts);
        let r = store.rollups("m", Quantity::ActiveEnergyImport, 0, i64::MAX).await.unwrap();
        assert_eq!((r.len(), r[0].count, r[1].last_v), (2, 60, 129.75));
        // A new series takes the next id after the old ones; the old ids are kept.
        store.write_points(vec![Point { meter: "n".into(), quantity: Quantity::VoltageL1, ts: t, value: 230.0 }]).await.unwrap();
        store.close();
        let c = Connection::open(dir.path().join("energyd.sqlite")).unwrap();
        let rows: Vec<(String, String, i64)> = c
            .prepare("SELECT s.meter, q.name, s.id FROM series s JOIN quantities q ON q.code = s.quantity ORDER BY s.id")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let want = [("m", "active_energy_import", 7), ("m", "voltage_l1", 9), ("n", "active_energy_import", 12), ("n", "voltage_l1", 13)];
        assert_eq!(rows, want.map(|(m, q, id)| (m.to_string(), q.to_string(), id)));
        let v: String = c.query_row("SELECT value FROM meta WHERE key = 'format_version'", [], |r| r.get(0)).unwrap();
        assert_eq!(v, FORMAT_VERSION.to_string());
        let old: i64 = c.query_row("SELECT count(*) FROM sqlite_schema WHERE name LIKE 'series_old%' OR name LIKE 'sqlite_autoindex_series%'", [], |r| r.get(0)).unwrap();
        assert_eq!(old, 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_version_6_store_is_upgraded_in_place_with_an_empty_conflicts_table() {
        let dir = tempfile::tempdir().unwrap();
        let t = 1_764_288_000_000i64;
        let q = Quantity::ActiveEnergyImport;
        let pts: Vec<Point> = (0..10).map(|i| Point { meter: "m".into(), quantity: q, ts: t + i * 60_000, value: 10.0 + i as f64 }).collect();
        {
            // A version 6 store: this layout without `conflicts`.
            let store = open(dir.path(), Metrics::new()).unwrap();
            store.write_points(pts.clone()).await.unwrap();
            store.close();
            let c = Connection::open(dir.path().join("energyd.sqlite")).unwrap();
            c.execute_batch("DROP TABLE conflicts; UPDATE meta SET value = '6' WHERE key = 'format_version';").unwrap();
        }
        let store = open(dir.path(), Metrics::new()).unwrap();
        let want: Vec<(i64, f64)> = pts.iter().map(|p| (p.ts, p.value)).collect();
        assert_eq!(store.points("m", q, 0, i64::MAX).await.unwrap(), want);
        let o = store.write_points(vec![Point { value: 99.0, ..pts[3].clone() }]).await.unwrap();
        assert_eq!(o.points_conflicting, 1);
        assert_eq!(store.conflicts("m", 10).await.unwrap().len(), 1);
        store.close();
        let c = Connection::open(dir.path().join("energyd.sqlite")).unwrap();
        let v: String = c.query_row("SELECT value FROM meta WHERE key = 'format_version'", [], |r| r.get(0)).unwrap();
        assert_eq!(v, "7");
        let idx: i64 = c.query_row("SELECT count(*) FROM sqlite_schema WHERE name IN ('conflicts_meter', 'conflicts_open')", [], |r| r.get(0)).unwrap();
        assert_eq!(idx, 2);
    }

    /// A queue epoch (`None`: none) and its stored sequence ranges.
    type EpochRanges = (Option<String>, Vec<(u64, u64)>);

    /// Sequence ranges per (gateway, queue epoch): a queue made again (new epoch, numbers from 1)
    /// is stored, not taken for duplicates; each epoch keeps its own ranges; a new epoch is
    /// flagged once, with the earlier ones.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sequence_ranges_are_kept_per_queue_epoch() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), Metrics::new()).unwrap();
        let t = 1_764_288_000_000i64;
        let b = |epoch: Option<&str>, seq: u64, n: usize, t0: i64| {
            Batch::new("gw", seq, (0..n).map(|i| sample("m", t0 + i as i64 * 1000, i as f64)).collect()).with_epoch(epoch.map(str::to_string))
        };
        let o = store.write_batch(b(Some("e1"), 1, 5, t)).await.unwrap();
        assert_eq!((o.samples_stored, o.new_epoch, o.earlier_epochs.clone(), o.epoch.clone()), (5, true, vec![], Some("e1".into())));
        let o = store.write_batch(b(Some("e1"), 1, 5, t)).await.unwrap();
        assert_eq!((o.samples_duplicate, o.new_epoch), (5, false));
        // The queue lost: numbers start at 1 again under e2; new readings, not duplicates.
        let o = store.write_batch(b(Some("e2"), 1, 3, t + 60_000)).await.unwrap();
        assert_eq!((o.samples_stored, o.samples_duplicate, o.new_epoch, o.earlier_epochs.clone()), (3, 0, true, vec!["e1".to_string()]));
        assert_eq!((o.acked_through, o.ranges.clone()), (3, vec![(1, 3)]));
        // An old gateway without an epoch has its own numbering too.
        let o = store.write_batch(b(None, 1, 2, t + 120_000)).await.unwrap();
        assert_eq!((o.samples_stored, o.epoch.clone(), o.earlier_epochs.len()), (2, None, 2));
        let g = store.gateways().await.unwrap();
        // Epochs are listed by when they were first stored; three batches can fall in one
        // millisecond, so compare them as a set.
        let mut got: Vec<EpochRanges> = g[0].1.iter().map(|e| (e.epoch.clone(), e.ranges.clone())).collect();
        got.sort();
        assert_eq!(got, vec![(None, vec![(1, 2)]), (Some("e1".into()), vec![(1, 5)]), (Some("e2".into()), vec![(1, 3)])]);
        assert!(g[0].1.iter().all(|e| e.first_ms.is_some() && e.last_ms >= e.first_ms));
        assert_eq!(store.points("m", Quantity::ActiveEnergyImport, 0, i64::MAX).await.unwrap().len(), 10);
    }

    /// A version 6 store (ranges per gateway, no epochs): upgraded in place, its ranges kept as
    /// the gateway's epoch-less numbering (an old gateway's resend is still a duplicate), a
    /// new epoch stored beside it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_version_6_store_keeps_its_ranges_under_no_epoch() {
        let dir = tempfile::tempdir().unwrap();
        let t = 1_764_288_000_000i64;
        {
            let store = open(dir.path(), Metrics::new()).unwrap();
            store.write_batch(Batch::new("gw", 1, (0..4).map(|i| sample("m", t + i * 1000, i as f64)).collect())).await.unwrap();
            store.close();
            // Back to the version 6 layout of the table, with the same ranges plus a gap.
            let c = Connection::open(dir.path().join("energyd.sqlite")).unwrap();
            c.execute_batch(
                "DROP TABLE gateway_epochs; DROP TABLE gateway_seq;
                 CREATE TABLE gateway_seq(gateway TEXT NOT NULL, start INTEGER NOT NULL, end INTEGER NOT NULL, PRIMARY KEY(gateway, start)) WITHOUT ROWID;
                 INSERT INTO gateway_seq VALUES ('gw', 1, 4), ('gw', 9, 12), ('gw-b', 1, 100);
                 UPDATE meta SET value = '6' WHERE key = 'format_version';",
            )
            .unwrap();
        }
        let store = open(dir.path(), Metrics::new()).unwrap();
        let g = store.gateways().await.unwrap();
        let got: Vec<(String, Vec<EpochRanges>, Vec<Option<i64>>)> =
            g.into_iter().map(|(id, es)| (id, es.iter().map(|e| (e.epoch.clone(), e.ranges.clone())).collect(), es.iter().map(|e| e.first_ms).collect())).collect();
        assert_eq!(got, vec![("gw".into(), vec![(None, vec![(1, 4), (9, 12)])], vec![None]), ("gw-b".into(), vec![(None, vec![(1, 100)])], vec![None])]);
        // Sequence numbers 4 (stored before the upgrade) and 5 (new).
        let o = store.write_batch(Batch::new("gw", 4, vec![sample("m", t + 3000, 3.0), sample("m", t + 4000, 4.0)])).await.unwrap();
        assert_eq!((o.samples_duplicate, o.samples_stored, o.new_epoch, o.acked_through), (1, 1, false, 5));
        let o = store.write_batch(Batch::new("gw", 1, vec![sample("m", t + 9000, 9.0)]).with_epoch(Some("ab12".into()))).await.unwrap();
        assert_eq!((o.samples_stored, o.new_epoch, o.earlier_epochs.clone()), (1, true, vec![String::new()]));
        store.close();
        let c = Connection::open(dir.path().join("energyd.sqlite")).unwrap();
        let v: String = c.query_row("SELECT value FROM meta WHERE key = 'format_version'", [], |r| r.get(0)).unwrap();
        assert_eq!(v, FORMAT_VERSION.to_string());
        let old: i64 = c.query_row("SELECT count(*) FROM sqlite_schema WHERE name LIKE 'gateway_seq_old%'", [], |r| r.get(0)).unwrap();
        assert_eq!(old, 0);
    }

    #[test]
    fn a_store_of_another_format_version_is_refused_clearly() {
        let dir = tempfile::tempdir().unwrap();
        drop(open(dir.path(), Metrics::new()).unwrap());
        let c = Connection::open(dir.path().join("energyd.sqlite")).unwrap();
        c.execute("UPDATE meta SET value = '99' WHERE key = 'format_version'", []).unwrap();
        drop(c);
        let e = open(dir.path(), Metrics::new()).err().unwrap().to_string();
        assert!(e.contains("format version 99") && e.contains(&format!("reads version {FORMAT_VERSION}")), "{e}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_version_1_store_is_upgraded_with_its_rollups() {
        let dir = tempfile::tempdir().unwrap();
        {
            // The version 1 layout, as that release wrote it.
            let c = Connection::open(dir.path().join("energyd.sqlite")).unwrap();
            c.execute_batch(
                "CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
                 INSERT INTO meta VALUES ('format_version', '1');
                 CREATE TABLE series(id INTEGER PRIMARY KEY, meter TEXT NOT NULL, quantity TEXT NOT NULL, UNIQUE(meter, quantity));
                 CREATE TABLE points(series INTEGER NOT NULL, ts INTEGER NOT NULL, value REAL NOT NULL, PRIMARY KEY(series, ts)) WITHOUT ROWID;
                 CREATE TABLE gateway_seq(gateway TEXT NOT NULL, start INTEGER NOT NULL, end INTEGER NOT NULL, PRIMARY KEY(gateway, start)) WITHOUT ROWID;
                 INSERT INTO series VALUES (1, 'm', 'active_energy_import');
                 INSERT INTO points VALUES (1, 1764288000000, 1.0), (1, 1764288600000, 3.0), (1, 1764291600000, 4.0);",
            )
            .unwrap();
        }
        let store = open(dir.path(), Metrics::new()).unwrap();
        let r = store.rollups("m", Quantity::ActiveEnergyImport, 0, i64::MAX).await.unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!((r[0].first_v, r[0].last_v, r[0].count, r[1].sum), (1.0, 3.0, 2, 4.0));
        store.close();
        let c = Connection::open(dir.path().join("energyd.sqlite")).unwrap();
        let v: String = c.query_row("SELECT value FROM meta WHERE key = 'format_version'", [], |r| r.get(0)).unwrap();
        assert_eq!(v, FORMAT_VERSION.to_string());
    }

    fn forwarding(max_bytes: u64) -> Option<Forwarding> {
        let tags = HashMap::from([("m".to_string(), ",building=b\\ 1,carrier=electricity".to_string())]);
        Some(Forwarding { measurement: "energy".into(), tags, max_bytes })
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn new_and_replaced_points_are_spooled_in_the_commit_and_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let metrics = Metrics::new();
        let p = |meter: &str, quantity, ts, value| Point { meter: meter.into(), quantity, ts, value };
        let t = 1_764_288_000_000;
        let store = open_forwarding(dir.path(), metrics.clone(), StoreOptions::default(), forwarding(1 << 20)).unwrap();
        store
            .write_points(vec![p("m", Quantity::ActiveEnergyImport, t, 1.5), p("m", Quantity::ActivePower, t, 2.0), p("x", Quantity::WaterVolume, t, 3.0)])
            .await
            .unwrap();
        // Unchanged: nothing to forward; a conflict: nothing either; a correction: forwarded
        // again (last write wins there).
        let o = store.write_points(vec![p("m", Quantity::ActiveEnergyImport, t, 1.5), p("m", Quantity::ActivePower, t, 2.5)]).await.unwrap();
        assert_eq!(o.points_conflicting, 1);
        assert_eq!(store.spool_rows(0, 1000).await.unwrap().len(), 1);
        store.correct(Correction { meter: "m".into(), quantity: Quantity::ActivePower, ts: t, value: 2.5, by: "eng".into() }).await.unwrap();
        let rows = store.spool_rows(0, 1000).await.unwrap();
        let text: String = rows.iter().map(|r| r.data.as_str()).collect();
        assert_eq!(
            text,
            format!(
                "energy,meter=m,building=b\\ 1,carrier=electricity active_energy_import=1.5,active_power=2 {t}\nenergy,meter=x water_volume=3 {t}\n\
                 energy,meter=m,building=b\\ 1,carrier=electricity active_power=2.5 {t}\n"
            )
        );
        assert_eq!(rows.iter().map(|r| r.points).sum::<u64>(), 4);
        let spool = store.spool().unwrap();
        assert_eq!(spool.bytes.load(std::sync::atomic::Ordering::Relaxed), text.len() as u64);
        assert_eq!(metrics.spool_points.get(), 4);
        store.close();
        // After a restart the spool is still there, counted again; forwarding removes it.
        let store = open_forwarding(dir.path(), metrics.clone(), StoreOptions::default(), forwarding(1 << 20)).unwrap();
        let rows = store.spool_rows(0, 3).await.unwrap();
        assert_eq!(rows.len(), 1, "stops once the rows hold enough points");
        store.spool_forwarded(rows[0].id).await.unwrap();
        assert_eq!(metrics.spool_points.get(), 1);
        let rest = store.spool_rows(0, 1000).await.unwrap();
        store.spool_forwarded(rest[0].id).await.unwrap();
        assert!(store.spool_rows(0, 1000).await.unwrap().is_empty());
        assert_eq!((metrics.spool_points.get(), metrics.spool_bytes.get()), (0, 0));
        store.close();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_spool_refuses_writes_until_forwarding_frees_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = open_forwarding(dir.path(), Metrics::new(), StoreOptions::default(), forwarding(100)).unwrap();
        let p = |ts| Point { meter: "m".into(), quantity: Quantity::ActivePower, ts, value: 1.0 };
        let t = 1_764_288_000_000;
        store.write_points((0..5).map(|i| p(t + i)).collect()).await.unwrap();
        let e = store.write_points(vec![p(t + 10)]).await.unwrap_err();
        assert!(matches!(e, StoreError::SpoolFull { max: 100, .. }), "{e}");
        assert!(e.to_string().contains("spool"), "{e}");
        assert!(store.points("m", Quantity::ActivePower, t + 10, t + 11).await.unwrap().is_empty(), "a refused write stores nothing");
        let rows = store.spool_rows(0, 1000).await.unwrap();
        store.spool_forwarded(rows[rows.len() - 1].id).await.unwrap();
        store.write_points(vec![p(t + 10)]).await.unwrap();
        // Ids keep growing after the spool was emptied: the forwarder's cursor stays valid.
        let next = store.spool_rows(rows[rows.len() - 1].id, 1000).await.unwrap();
        assert_eq!(next.len(), 1);
        store.close();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn retention_deletes_old_raw_points_and_keeps_their_rollups() {
        let dir = tempfile::tempdir().unwrap();
        let now = chrono::Utc::now().timestamp_millis();
        let day = 86_400_000;
        let p = |ts, value| Point { meter: "m".into(), quantity: Quantity::ActiveEnergyImport, ts, value };
        let store = open(dir.path(), Metrics::new()).unwrap();
        store.write_points(vec![p(now - 3 * day, 1.0), p(now - 2 * day, 2.0), p(now, 3.0)]).await.unwrap();
        store.close();
        let metrics = Metrics::new();
        let options = StoreOptions { raw_retention_ms: Some(day), rollup_retention_ms: Some(2 * day + 2 * HOUR_MS), ..Default::default() };
        let store = open_with(dir.path(), metrics.clone(), options).unwrap();
        // The writer applies the retention before it takes this write.
        store.write_points(vec![p(now + 1, 4.0)]).await.unwrap();
        let raw = store.points("m", Quantity::ActiveEnergyImport, 0, i64::MAX).await.unwrap();
        assert_eq!(raw, vec![(now, 3.0), (now + 1, 4.0)]);
        let hours: Vec<f64> = store.rollups("m", Quantity::ActiveEnergyImport, 0, i64::MAX).await.unwrap().iter().map(|r| r.first_v).collect();
        assert_eq!(hours.first(), Some(&2.0), "the roll-up of 2 days ago outlives its raw point; 3 days ago is past its retention");
        assert_eq!(metrics.store_points.get(), 2);
        assert_eq!(metrics.points_pruned.get(), 2);
        store.close();
    }

    /// The head after a crash: the writer stopped without flushing (what a SIGKILL leaves)
    /// holds the acknowledged points in `head_log`; opening the store flushes them.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn acknowledged_points_in_the_head_survive_a_crash() {
        let dir = tempfile::tempdir().unwrap();
        // No flush by age during the test, however slow the machine.
        let options = StoreOptions { head_max_age_ms: 3_600_000, ..Default::default() };
        let store = open_with(dir.path(), Metrics::new(), options).unwrap();
        let q = Quantity::ActiveEnergyImport;
        let t0 = 1_764_288_000_000;
        let pts: Vec<(i64, f64)> = (0..500).map(|i| (t0 + i * 60_000, 100.0 + i as f64 / 4.0)).collect();
        let write = |v: &[(i64, f64)]| v.iter().map(|&(ts, value)| Point { meter: "m".into(), quantity: q, ts, value }).collect::<Vec<_>>();
        store.write_points(write(&pts[..300])).await.unwrap();
        // Flushed into a segment by a read; then more points stay in the head, and values
        // conflicting with the head and with the segment are kept aside.
        assert_eq!(store.points("m", q, 0, i64::MAX).await.unwrap().len(), 300);
        let o = store.write_points(write(&pts[300..])).await.unwrap();
        assert_eq!(o.points_written, 200);
        let o = store.write_points(write(&[(pts[450].0, 7.0), (pts[10].0, 8.0), pts[11]])).await.unwrap();
        assert_eq!((o.points_conflicting, o.points_unchanged), (2, 1));
        // The writer stops as in a crash: the head in memory is gone, head_log is on disk.
        store.write(WriteOp::Crash).await.unwrap();
        if let Some(h) = store.writer.lock().unwrap().take() {
            h.join().unwrap();
        }
        drop(store);
        let logged: i64 = Connection::open(dir.path().join("energyd.sqlite")).unwrap().query_row("SELECT count(*) FROM head_log", [], |r| r.get(0)).unwrap();
        assert_eq!(logged, 1, "the group of new points since the flush is in head_log");
        let want = pts.clone();
        let crashed = open(dir.path(), Metrics::new()).unwrap();
        let kept: Vec<(i64, f64, f64)> = crashed.conflicts("m", 10).await.unwrap().iter().map(|c| (c.conflict.ts, c.conflict.stored, c.conflict.offered)).collect();
        assert_eq!(kept, vec![(pts[10].0, pts[10].1, 8.0), (pts[450].0, pts[450].1, 7.0)]);
        assert_eq!(crashed.points("m", q, 0, i64::MAX).await.unwrap(), want);
        assert_eq!(crashed.rollups("m", q, 0, i64::MAX).await.unwrap(), crate::accounting::rollup::rollups_of(&want));
        assert_eq!(crashed.last_seen("m"), Some(pts[499].0));
        let left: i64 = crashed.read(|c| c.query_row("SELECT count(*) FROM head_log", [], |r| r.get(0))).await.unwrap();
        assert_eq!(left, 0);
        // Sending everything again after the restart changes nothing.
        let o = crashed.write_points(write(&want)).await.unwrap();
        assert_eq!((o.points_written, o.points_unchanged, o.points_conflicting), (0, 500, 0));
        crashed.close();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sealed_days_read_like_raw_points_and_take_late_data() {
        let dir = tempfile::tempdir().unwrap();
        let metrics = Metrics::new();
        let store = open(dir.path(), metrics.clone()).unwrap();
        let q = Quantity::ActiveEnergyImport;
        let day0 = day_of(1_764_288_000_000);
        // Three days of one-minute counter readings with two decimals.
        let pts: Vec<(i64, f64)> = (0..3 * 1440).map(|i| (day0 + i * 60_000, 1000.0 + (i as f64 * 0.37 * 100.0).round() / 100.0)).collect();
        let write = |v: &[(i64, f64)]| v.iter().map(|&(ts, value)| Point { meter: "m".into(), quantity: q, ts, value }).collect::<Vec<_>>();
        for c in pts.chunks(1000) {
            store.write_points(write(c)).await.unwrap();
        }
        let before_bytes = store.bytes();
        let all = |s: &Embedded| {
            let s = s.clone();
            async move {
                let r = s.rollups("m", q, 0, i64::MAX).await.unwrap();
                let c = s.counter_rollups_many(vec![("m".into(), q), ("m".into(), q)], day0 + chunks::DAY_MS + 2 * HOUR_MS, day0 + chunks::DAY_MS + 5 * HOUR_MS).await.unwrap();
                let b = s.reading_before("m", q, day0 + chunks::DAY_MS + 90 * 60_000).await.unwrap();
                (r, c, b)
            }
        };
        let open_rollups = all(&store).await;
        assert_eq!(open_rollups.0.len(), 72);
        let o = store.compact().await.unwrap();
        assert_eq!(o.points_sealed, pts.len() as u64);
        // Sealed roll-ups (one blob per day) read exactly like the hourly rows they replace.
        assert_eq!(all(&store).await, open_rollups);
        let rows: i64 = store.read(|c| c.query_row("SELECT count(*) FROM rollup_hour", [], |r| r.get(0))).await.unwrap();
        let blobs: i64 = store.read(|c| c.query_row("SELECT count(*) FROM rollup_day", [], |r| r.get(0))).await.unwrap();
        assert_eq!((rows, blobs), (0, 3));
        assert_eq!(store.points("m", q, 0, i64::MAX).await.unwrap(), pts);
        let w = store.counter_window("m", q, day0 + chunks::DAY_MS + 30_000, day0 + 2 * chunks::DAY_MS).await.unwrap();
        assert_eq!(w.first(), Some(&pts[1440]), "the reading before the window comes from the previous chunk");
        assert_eq!(w.last(), Some(&pts[2880]), "and the one after from the next");
        assert_eq!(w.len(), 1440 + 1);
        // Late data for a sealed day: the same value is a no-op, a new time is new, a different
        // value is a conflict (the chunk's stays); a correction replaces the chunk's and its
        // hour is rolled up again.
        let o = store.write_points(write(&[pts[10], (pts[10].0 + 1, pts[10].1), (pts[20].0, 5000.0)])).await.unwrap();
        assert_eq!((o.points_unchanged, o.points_written, o.points_conflicting), (1, 1, 1));
        let mut want = pts.clone();
        want.insert(11, (pts[10].0 + 1, pts[10].1));
        assert_eq!(store.points("m", q, 0, i64::MAX).await.unwrap(), want);
        let o = store.correct(Correction { meter: "m".into(), quantity: q, ts: pts[20].0, value: 5000.0, by: "eng".into() }).await.unwrap();
        assert_eq!(o.corrected, Some(Corrected { previous: Some(pts[20].1), conflicts_resolved: 1 }));
        want[21].1 = 5000.0;
        assert_eq!(store.points("m", q, 0, i64::MAX).await.unwrap(), want);
        let r = store.rollups("m", q, day0, day0 + HOUR_MS).await.unwrap();
        assert_eq!((r[0].count, r[0].max), (61, 5000.0));
        // The late hour is a row again, read over its sealed day's entry; the others are unchanged.
        let r = store.rollups("m", q, 0, i64::MAX).await.unwrap();
        assert_eq!(r.len(), 72);
        assert_eq!(r[0], HourRollup::of_points(&want[..61]).unwrap());
        assert_eq!(r[1..], open_rollups.0[1..]);
        // Compacting again merges the late points into the chunk; a restart reads it all back.
        assert_eq!(store.compact().await.unwrap().points_sealed, 2);
        store.close();
        let store = open(dir.path(), Metrics::new()).unwrap();
        assert_eq!(store.points("m", q, 0, i64::MAX).await.unwrap(), want);
        assert_eq!(store.rollups("m", q, 0, i64::MAX).await.unwrap(), r);
        assert_eq!(store.last_seen("m"), Some(pts.last().unwrap().0));
        assert!(store.bytes() < before_bytes, "{} bytes after sealing, {before_bytes} before", store.bytes());
        store.close();
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(16))]
        /// The stored roll-ups depend only on the distinct points stored, whatever the order,
        /// the duplication and the grouping into writes; a different value offered for a stored
        /// time is one conflict (however often offered), and a corrected value is rolled up as
        /// the value that corrected it.
        #[test]
        fn stored_rollups_ignore_order_and_duplication(
            points in proptest::collection::btree_map(0i64..5 * HOUR_MS, -400i32..400, 1..40),
            dups in proptest::collection::vec(0usize..40, 0..20),
            cut in 1usize..9, seed in proptest::prelude::any::<u64>(),
        ) {
            let t0 = 1_764_288_000_000;
            let pts: Vec<(i64, f64)> = points.into_iter().map(|(t, v)| (t0 + t, f64::from(v) / 4.0)).collect();
            let mut sent: Vec<(i64, f64)> = pts.clone();
            sent.extend(dups.iter().map(|&i| pts[i % pts.len()]));
            let mut s = seed | 1;
            for i in (1..sent.len()).rev() {
                s ^= s << 13; s ^= s >> 7; s ^= s << 17;
                sent.swap(i, (s % (i as u64 + 1)) as usize);
            }
            // A wrong value first for one point: the right one conflicts with it, and a correction
            // sets it.
            let wrong = Point { meter: "m".into(), quantity: Quantity::ActivePower, ts: pts[0].0, value: pts[0].1 + 1000.0 };
            let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
            let dir = tempfile::tempdir().unwrap();
            let got = rt.block_on(async {
                let store = open(dir.path(), Metrics::new()).unwrap();
                store.write_points(vec![wrong]).await.unwrap();
                for (i, group) in sent.chunks(cut).enumerate() {
                    let ps = group.iter().map(|&(ts, value)| Point { meter: "m".into(), quantity: Quantity::ActivePower, ts, value }).collect();
                    store.write_points(ps).await.unwrap();
                    // Some groups are followed by a read, which flushes the head into a segment:
                    // later points then meet their duplicates in the segments, not in the head.
                    if (seed >> (i % 64)) & 1 == 1 {
                        store.points("m", Quantity::ActivePower, 0, 1).await.unwrap();
                    }
                }
                let open = store.conflicts("m", 100).await.unwrap().len();
                let c = Correction { meter: "m".into(), quantity: Quantity::ActivePower, ts: pts[0].0, value: pts[0].1, by: "eng".into() };
                let corrected = store.correct(c).await.unwrap().corrected;
                let r = store.rollups("m", Quantity::ActivePower, 0, i64::MAX).await.unwrap();
                let p = store.points("m", Quantity::ActivePower, 0, i64::MAX).await.unwrap();
                store.close();
                (r, p, open, corrected)
            });
            proptest::prop_assert_eq!(got.0, crate::accounting::rollup::rollups_of(&pts));
            proptest::prop_assert_eq!(got.1, pts.clone());
            proptest::prop_assert_eq!(got.2, 1);
            proptest::prop_assert_eq!(got.3, Some(Corrected { previous: Some(pts[0].1 + 1000.0), conflicts_resolved: 1 }));
        }
    }
}
