//! The store's file: its settings, its tables, the catalog of series, and the upgrades of older
//! format versions in place (see the module documentation of [`super`] for the layout).

use std::path::Path;

use energy_wire::Quantity;
use rusqlite::{params, Connection, OptionalExtension};

use super::error::StoreError;
use super::rollup::HourRollup;
use super::rollup_rows::{no_partials, put_rollup};
use super::format::FORMAT_VERSION;

/// The writer's connection. `synchronous = NORMAL`: a commit writes its WAL frames without
/// waiting for the disk; the WAL syncer thread ([`syncer_loop`]) fsyncs the WAL file before
/// anything of the commit is acknowledged, while the writer goes on with the next group.
/// Checkpoints still sync the WAL first and the database file after.
pub(super) fn configure(conn: &Connection) -> rusqlite::Result<()> {
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "foreign_keys", "OFF")?;
    conn.busy_timeout(std::time::Duration::from_secs(30))?;
    Ok(())
}

/// Sets up the file of a store being opened: its settings, the tables (created or upgraded in
/// place); returns the number of raw points stored.
pub(super) fn prepare(conn: &Connection, path: &Path, new_store: bool) -> Result<i64, StoreError> {
    if new_store {
        // 16 KiB pages: a sealed day's chunk (about a kilobyte) packs 14 to a page instead of 3
        // (4 KiB pages left a fifth of the file empty). Like auto_vacuum, this takes effect on a
        // new store only; an existing one keeps its page size. (Not even asked of an existing
        // store: setting auto_vacuum writes, and fails on a full disk.)
        conn.pragma_update(None, "page_size", 16_384)?;
        // Pages freed by sealing can be given back to the file system.
        conn.pragma_update(None, "auto_vacuum", "INCREMENTAL")?;
    }
    configure(conn)?;
    // The writer touches one page per series per group: a cache that holds the head's pages
    // (64 MiB) keeps ingest from rereading them.
    conn.pragma_update(None, "cache_size", -65_536)?;
    // Consecutive flushes dirty the same pages (the roll-up rows, the segments' index): checkpointing
    // every 64 MiB of WAL (4,096 pages of 16 KiB) instead of every 16 MiB copies each of them
    // once instead of many times; after a checkpoint the WAL file is cut back to 64 MiB.
    let page: i64 = conn.query_row("PRAGMA page_size", [], |r| r.get(0))?;
    conn.pragma_update(None, "wal_autocheckpoint", (64 << 20) / page.max(512))?;
    conn.pragma_update(None, "journal_size_limit", 64i64 << 20)?;
    conn.execute_batch("CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);")?;
    let version: Option<String> = conn.query_row("SELECT value FROM meta WHERE key = 'format_version'", [], |r| r.get(0)).optional()?;
    // Refuse an unknown version before touching anything.
    if let Some(found) = version.as_ref().filter(|v| !["1", "2", "3", "4", "5", "6", "7", "8"].contains(&v.as_str()) && **v != FORMAT_VERSION.to_string()) {
        return Err(StoreError::Version { path: path.to_path_buf(), found: found.clone() });
    }
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS points(series INTEGER NOT NULL, ts INTEGER NOT NULL, value REAL NOT NULL, PRIMARY KEY(series, ts)) WITHOUT ROWID;
         CREATE TABLE IF NOT EXISTS rollup_hour(series INTEGER NOT NULL, hour INTEGER NOT NULL,
             first_ts INTEGER NOT NULL, first_v REAL NOT NULL, last_ts INTEGER NOT NULL, last_v REAL NOT NULL,
             min REAL NOT NULL, max REAL NOT NULL, sum REAL NOT NULL, count INTEGER NOT NULL,
             PRIMARY KEY(series, hour)) WITHOUT ROWID;
         CREATE TABLE IF NOT EXISTS chunks(series INTEGER NOT NULL, day INTEGER NOT NULL, count INTEGER NOT NULL, data BLOB NOT NULL,
             PRIMARY KEY(series, day));
         CREATE TABLE IF NOT EXISTS segments(id INTEGER PRIMARY KEY, series INTEGER NOT NULL, day INTEGER NOT NULL, count INTEGER NOT NULL, data BLOB NOT NULL, rollups BLOB);
         CREATE INDEX IF NOT EXISTS segments_series ON segments(series, day, id);
         CREATE TABLE IF NOT EXISTS head_log(id INTEGER PRIMARY KEY, data BLOB NOT NULL);
         CREATE TABLE IF NOT EXISTS rollup_day(series INTEGER NOT NULL, day INTEGER NOT NULL, data BLOB NOT NULL, PRIMARY KEY(series, day)) WITHOUT ROWID;
         CREATE TABLE IF NOT EXISTS dirty_meters(meter TEXT PRIMARY KEY, min_ts INTEGER NOT NULL, seq INTEGER NOT NULL) WITHOUT ROWID;

         CREATE TABLE IF NOT EXISTS outbox(id INTEGER PRIMARY KEY AUTOINCREMENT, created_ms INTEGER NOT NULL, points INTEGER NOT NULL, data TEXT NOT NULL);",
    )?;
    upgrade_catalog(conn)?;
    upgrade_conflicts(conn)?;
    upgrade_gateway_epochs(conn)?;
    upgrade_segment_rollups(conn)?;
    match version.as_deref() {
        None => {
            conn.execute("INSERT INTO meta(key, value) VALUES ('format_version', ?1)", params![FORMAT_VERSION.to_string()])?;
        }
        Some("1") => upgrade_from_v1(conn)?,
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
        // Version 7 kept each group's points as a row of `head_log` (still read: rows left by
        // a crash are loaded and flushed at open, before anything else is written) and the
        // gateway ranges in their tables at every group; version 8 keeps both in the log
        // files (`<data_dir>/log/`), which a version 7 build would not read, hence the new
        // number. Nothing else changes: `log_position` is 0 until the first flush.
        // Version 8 merged each flush's roll-ups into `rollup_hour` rows; version 9 rolls up a
        // segment's readings when read (`upgrade_segment_rollups`), which a version 8 build
        // would not do (it would miss those hours), hence the new number. Its rows and segments
        // (without partials) read as before.
        Some("2" | "3" | "4" | "5" | "6" | "7" | "8") => {
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
    Ok(point_count)
}

/// Versions 1 to 5 kept the quantity's name in each series row and in a second index on
/// (meter, quantity): the catalog is rebuilt as [`CATALOG`], with the same series ids, in one
/// transaction (an interrupted upgrade is done again at the next start: the old table is
/// recognised by its `quantity` column of names). A new store just gets the tables.
pub(super) fn upgrade_catalog(conn: &Connection) -> rusqlite::Result<()> {
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
pub(super) fn upgrade_conflicts(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS conflicts(id INTEGER PRIMARY KEY, meter TEXT NOT NULL, quantity TEXT NOT NULL, ts INTEGER NOT NULL,
             stored REAL NOT NULL, offered REAL NOT NULL, source TEXT NOT NULL, received_ms INTEGER NOT NULL,
             resolved_ms INTEGER, resolved_value REAL, resolved_by TEXT);
         CREATE INDEX IF NOT EXISTS conflicts_meter ON conflicts(meter, ts);
         CREATE UNIQUE INDEX IF NOT EXISTS conflicts_open ON conflicts(meter, quantity, ts, offered) WHERE resolved_ms IS NULL;",
    )
}

/// The tables of gateway sequence numbers, per (gateway, queue epoch) since format version 7:
/// `gateway_seq(gateway, epoch, start, end)` (epoch '' for batches without one) and
/// `gateway_epochs(gateway, epoch, first_ms, last_ms)`. A store of version 6 or older has
/// `gateway_seq(gateway, start, end)`: its rows move to the empty epoch, each of its gateways
/// gets a `gateway_epochs` row for that epoch with unknown times, in one transaction (an
/// interrupted upgrade is done again at the next start: the old table is recognised by its
/// missing `epoch` column). A new store just gets the tables.
pub(super) fn upgrade_gateway_epochs(conn: &Connection) -> rusqlite::Result<()> {
    pub(super) const TABLES: &str = "CREATE TABLE IF NOT EXISTS gateway_seq(gateway TEXT NOT NULL, epoch TEXT NOT NULL, start INTEGER NOT NULL, end INTEGER NOT NULL, PRIMARY KEY(gateway, epoch, start)) WITHOUT ROWID;
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

/// Format 9: column `rollups` of `segments`. NULL: the segment's hours are rolled up from its
/// readings when read (what a flush writes); a blob: its partial roll-ups written out (hours a
/// correction took out of them). The segments of a version 8 store get the empty blob (their
/// hours are rows of `rollup_hour` already), with the column, in one transaction (an
/// interrupted upgrade is done again: the column is missing). Run at every open.
pub(super) fn upgrade_segment_rollups(conn: &Connection) -> rusqlite::Result<()> {
    let has: bool = conn.query_row("SELECT count(*) > 0 FROM pragma_table_info('segments') WHERE name = 'rollups'", [], |r| r.get(0))?;
    if has {
        return Ok(());
    }
    let tx = conn.unchecked_transaction()?;
    tx.execute_batch("ALTER TABLE segments ADD COLUMN rollups BLOB")?;
    tx.execute("UPDATE segments SET rollups = ?1", [no_partials()])?;
    tx.commit()
}

/// Version 1 had no roll-ups: builds them from the raw points, in one transaction with the
/// version change, so that an interrupted upgrade is simply done again at the next start.
pub(super) fn upgrade_from_v1(conn: &Connection) -> rusqlite::Result<()> {
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

/// The catalog (format 6): `quantities` gives each quantity name a small code, `series` one row
/// per (meter, quantity code) with its id; both are keyed by their text, with no second index.
pub(super) const CATALOG: &str = "CREATE TABLE IF NOT EXISTS quantities(name TEXT PRIMARY KEY, code INTEGER NOT NULL) WITHOUT ROWID;
    CREATE TABLE IF NOT EXISTS series(meter TEXT NOT NULL, quantity INTEGER NOT NULL, id INTEGER NOT NULL, PRIMARY KEY(meter, quantity)) WITHOUT ROWID;";

/// Gives the quantity `?1` a code if it has none.
pub(super) const ADD_QUANTITY: &str = "INSERT OR IGNORE INTO quantities(name, code) SELECT ?1, coalesce(max(code), 0) + 1 FROM quantities";

/// Adds the series of meter `?1` and quantity `?2` (named) with id `?3`.
pub(super) const ADD_SERIES: &str = "INSERT INTO series(meter, quantity, id) VALUES (?1, (SELECT code FROM quantities WHERE name = ?2), ?3)";

pub(super) fn series_id(c: &Connection, meter: &str, q: Quantity) -> rusqlite::Result<Option<i64>> {
    c.prepare_cached("SELECT id FROM series WHERE meter = ?1 AND quantity = (SELECT code FROM quantities WHERE name = ?2)")?
        .query_row(params![meter, q.name()], |r| r.get(0))
        .optional()
}

/// The id of the last log record a flush covered (0: none yet).
pub(super) fn log_position(conn: &Connection) -> rusqlite::Result<u64> {
    let v: Option<i64> = conn.query_row("SELECT CAST(value AS INTEGER) FROM meta WHERE key = 'log_position'", [], |r| r.get(0)).optional()?;
    Ok(v.unwrap_or(0).max(0) as u64)
}

pub(super) fn add_point_count(conn: &Connection, delta: i64) -> rusqlite::Result<()> {
    if delta != 0 {
        conn.prepare_cached("UPDATE meta SET value = CAST(value AS INTEGER) + ?1 WHERE key = 'point_count'")?.execute([delta])?;
    }
    Ok(())
}
