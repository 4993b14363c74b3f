//! The writer: what the writer thread does with the points of a group (series ids, new, duplicate
//! or conflicting), the head's flush into segments and roll-ups, and sealing.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use energy_wire::Quantity;
use rusqlite::{params, Connection, OptionalExtension};

use super::chunks;
use super::codec;
use super::config::StoreOptions;
use super::fxmap::FxMap;
use super::gateways::Overlay;
use super::head::{decode_head_log, Head};
use super::hooks::CommitHook;
use super::log::{self, Log};
use super::requests::WriteOutcome;
use super::rollup::HourRollup;
use super::rollup_rows::{put_rollup, put_rollup_with, seal_rollups, strip_partials, PUT_ROLLUP};
use super::schema::{series_id, ADD_QUANTITY, ADD_SERIES};
use crate::metrics::Metrics;
use energy_wire::time::{day_of, hour_of, DAY_MS, HOUR_MS};

/// The head is flushed when it holds this many points, or its oldest point is
/// [`StoreOptions::head_max_age_ms`] old, or a read asks for it.
pub(super) const HEAD_MAX_POINTS: u64 = 2_500_000;

pub(super) struct Writer<'c> {
    pub(super) conn: &'c Connection,
    /// Series ids by meter, then by quantity (index `Quantity as usize`; 0: not looked up).
    pub(super) series: FxMap<String, Vec<i64>>,
    /// The meter of the previous point and its ids: a line's or a sample's values come in a row.
    pub(super) memo: (String, Vec<i64>),
    /// Address and length of the meter name `memo` was last matched with, valid for the open
    /// group only (its requests, and so their names, live until the group is answered): the
    /// fields of one line share one name, matched without comparing bytes.
    pub(super) memo_at: (usize, usize),
    /// The id the next new series takes (read from the catalog at the first new series).
    pub(super) next_series: Option<i64>,
    /// Hours where a stored value was replaced: recomputed from the stored points.
    pub(super) stale_hours: HashSet<(i64, i64)>,
    /// What is kept in each group's transaction besides the points (change records, spool).
    pub(super) hooks: Vec<Box<dyn CommitHook>>,
    /// Whether a hook wants every point stored (spares a loop per point when none does).
    pub(super) point_hooks: bool,
    pub(super) head: Head,
    /// Points in the head, shared with readers (a read flushes a non-empty head first).
    pub(super) head_points: Arc<std::sync::atomic::AtomicU64>,
    /// Stored readings of (series, day) loaded to check late points; emptied at each flush.
    pub(super) day_cache: HashMap<(i64, i64), Vec<(i64, f64)>>,
    /// When the open group started (one clock read per group, not per point).
    pub(super) now: Instant,
    /// Points older than this (the start of the newest sealable day) are backfill.
    pub(super) seal_cutoff: i64,
    pub(super) head_max_age: std::time::Duration,
    pub(super) metrics: Metrics,
    /// Who sent the request being applied (kept with the conflicts it causes).
    pub(super) source: String,
    /// The open group's wall-clock time (ms), for conflicts and corrections.
    pub(super) now_ms: i64,
    /// The sequence number of the batch sample being applied.
    pub(super) seq: Option<u64>,
    /// The store's log (`None` only while a store is upgraded in place).
    pub(super) log: Option<Log>,
    /// The id of the last log record a flush covered (`meta` key `log_position`).
    pub(super) log_position: u64,
    /// Gateway rows changed since the last flush.
    pub(super) gateways: Overlay,
    /// `head_log` rows (format 7 and before) were loaded into the head: the flush deletes them.
    pub(super) legacy_rows: bool,
    /// Series the open group added to the catalog, for its log record: (id, meter, quantity).
    pub(super) group_series: Vec<(i64, String, String)>,
    /// Series read back from the log, written into the catalog (if missing) by the next flush.
    pub(super) replayed_series: Vec<(i64, String, String)>,
    /// At open: per series read back from the log, its earliest time, for change records
    /// written by the next flush (the group's own may not have reached the disk).
    pub(super) replayed_changes: Option<FxMap<i64, i64>>,
    /// `meta` key `log_committed` was found: the flush deletes it once no hook needs it.
    pub(super) committed_marker: bool,
    /// The next flush may write days before this one straight as chunks (sealing asked for).
    pub(super) seal_on_flush: Option<i64>,
    /// Points a flush wrote straight as chunks, for the sealing's count.
    pub(super) sealed_on_flush: u64,
}

/// Maps an I/O error of the log to the SQLite error the writer handles (a full disk is
/// `SQLITE_FULL`, like a failed write of the WAL).
pub(super) fn log_io_error(e: &std::io::Error, what: &str) -> rusqlite::Error {
    let code = if e.kind() == std::io::ErrorKind::StorageFull { rusqlite::ffi::SQLITE_FULL } else { rusqlite::ffi::SQLITE_IOERR };
    rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(code), Some(format!("{what}: {e}")))
}

/// How often the writer looks for days to seal, and how many chunks one pass writes at most
/// (a pass is one transaction; writes wait for it).
pub(super) const COMPACT_EVERY: std::time::Duration = std::time::Duration::from_secs(10);
pub(super) const CHUNKS_PER_PASS: usize = 256;

/// Most (series, day) readings kept for checking late points; the cache is emptied when full.
pub(super) const DAY_CACHE: usize = 4096;

/// A day written to within this long is not sealed by the background passes.
pub(super) const BACKFILL_QUIET: std::time::Duration = std::time::Duration::from_secs(30);

/// What storing one point did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Put {
    New,
    Unchanged,
    /// A different value is stored (this one): the offered value is kept aside.
    Conflict(f64),
}

/// A group's points sorted by series, then time. Series ids are small and dense: a counting
/// sort by series (one pass to count, one to place; a group arrives in time order, line by
/// line, so a comparison sort would reshuffle all of it), then each series' run sorted by time
/// if a late point left it out of order.
pub(super) fn sort_by_series(points: Vec<(i64, i64, f64)>) -> Vec<(i64, i64, f64)> {
    let max = points.iter().map(|p| p.0).max().unwrap_or(0);
    let dense = points.iter().all(|p| p.0 >= 0) && usize::try_from(max).is_ok_and(|m| m <= 4 * points.len() + (1 << 20));
    if !dense {
        let mut points = points;
        points.sort_unstable_by_key(|p| (p.0, p.1));
        return points;
    }
    let mut start = vec![0usize; max as usize + 2];
    for p in &points {
        start[p.0 as usize + 1] += 1;
    }
    for i in 1..start.len() {
        start[i] += start[i - 1];
    }
    let mut out = vec![(0i64, 0i64, 0f64); points.len()];
    for p in points {
        let at = &mut start[p.0 as usize];
        out[*at] = p;
        *at += 1;
    }
    for run in out.chunk_by_mut(|a, b| a.0 == b.0) {
        if !run.is_sorted_by_key(|p| p.1) {
            run.sort_unstable_by_key(|p| p.1);
        }
    }
    out
}

impl<'c> Writer<'c> {
    pub(super) fn new(conn: &'c Connection, options: StoreOptions, hooks: Vec<Box<dyn CommitHook>>, head_points: Arc<std::sync::atomic::AtomicU64>, metrics: Metrics) -> Writer<'c> {
        Writer {
            conn,
            series: FxMap::default(),
            memo: (String::new(), Vec::new()),
            memo_at: (0, 0),
            next_series: None,
            stale_hours: HashSet::new(),
            point_hooks: hooks.iter().any(|h| h.wants_points()),
            hooks,
            head: Head::default(),
            head_points,
            day_cache: HashMap::new(),
            now: Instant::now(),
            seal_cutoff: day_of(chrono::Utc::now().timestamp_millis() - options.seal_after_ms),
            head_max_age: std::time::Duration::from_millis(options.head_max_age_ms),
            metrics,
            source: String::new(),
            now_ms: 0,
            seq: None,
            log: None,
            log_position: 0,
            gateways: Overlay::default(),
            legacy_rows: false,
            group_series: Vec::new(),
            replayed_series: Vec::new(),
            replayed_changes: None,
            committed_marker: false,
            seal_on_flush: None,
            sealed_on_flush: 0,
        }
    }

    pub(super) fn series_id(&mut self, meter: &str, q: Quantity) -> rusqlite::Result<i64> {
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
                self.group_series.push((id, meter.to_string(), q.name().to_string()));
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

    pub(super) fn put(&mut self, meter: &str, q: Quantity, ts: i64, value: f64, out: &mut WriteOutcome) -> rusqlite::Result<()> {
        let sid = self.series_id(meter, q)?;
        if ts < self.seal_cutoff {
            self.head.slot(sid).backfill = Some((day_of(ts), self.now));
        }
        let put = self.put_raw(sid, ts, value)?;
        match put {
            Put::New => {
                out.points_written += 1;
                self.stored(meter, q, ts, value);
            }
            Put::Unchanged => out.points_unchanged += 1,
            Put::Conflict(stored) => self.conflict(meter, q, ts, stored, value, out)?,
        }
        Ok(())
    }

    /// Tells the hooks that want them of a point newly stored (or replaced by a correction).
    #[inline]
    pub(super) fn stored(&mut self, meter: &str, q: Quantity, ts: i64, value: f64) {
        if self.point_hooks {
            for h in &mut self.hooks {
                h.stored(meter, q, ts, value);
            }
        }
    }

    /// Classifies and stores one point: into the head when it is new; a point whose time holds
    /// a reading already (in the head, the tail kept from the last flush, or the store) is a
    /// duplicate when the value is the same and a conflict otherwise: ingest never replaces a
    /// stored reading (only [`Writer::correct`] does).
    pub(super) fn put_raw(&mut self, sid: i64, ts: i64, value: f64) -> rusqlite::Result<Put> {
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
    pub(super) fn look_up_newest(&mut self, sid: i64) -> rusqlite::Result<(i64, i64)> {
        let stored = chunks::newest(self.conn, sid)?.unwrap_or(i64::MIN);
        let slot = self.head.slot(sid);
        let n = (stored.max(slot.points.last().map_or(i64::MIN, |p| p.0)), stored);
        slot.newest = Some(n);
        Ok(n)
    }

    /// [`Self::put_raw`] for a point no later than the series' newest (kept out of the common
    /// path, which it would slow down with its stack frame).
    #[inline(never)]
    pub(super) fn put_late(&mut self, sid: i64, ts: i64, value: f64, newest_stored: i64) -> rusqlite::Result<Put> {
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
            let day = chunks::read_series(self.conn, sid, key.1, key.1.saturating_add(DAY_MS))?;
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

    /// A corrected value replacing a stored reading: a row of `points` (it wins over segments
    /// and chunks); its hour is rolled up again at the end of the group.
    pub(super) fn replace_stored(&mut self, sid: i64, ts: i64, value: f64) -> rusqlite::Result<()> {
        self.conn.prepare_cached("INSERT OR REPLACE INTO points(series, ts, value) VALUES (?1, ?2, ?3)")?.execute(params![sid, ts, value])?;
        self.day_cache.remove(&(sid, day_of(ts)));
        self.stale_hours.insert((sid, hour_of(ts)));
        if let Some(slot) = self.head.series.get_mut(usize::try_from(sid).unwrap_or(0)) {
            if let Ok(i) = slot.tail.binary_search_by_key(&ts, |p| p.0) {
                slot.tail[i].1 = value;
            }
        }
        Ok(())
    }

    /// Appends the open group's log record (its new points and the gateway states it changed),
    /// not yet synced; returns its length, `None` when the group has none of them. Called
    /// before the group's transaction commits: a failed append fails the group.
    pub(super) fn log_group(&mut self) -> rusqlite::Result<Option<u64>> {
        let gateways = self.gateways.take_group();
        let new_series = std::mem::take(&mut self.group_series);
        if self.head.group.is_empty() && gateways.is_empty() && new_series.is_empty() {
            return Ok(None);
        }
        let points = sort_by_series(std::mem::take(&mut self.head.group));
        let body = log::encode_body(&points, &gateways, &new_series);
        self.head.group = points;
        self.head.group.clear();
        let Some(l) = self.log.as_mut() else { return Err(log_io_error(&std::io::Error::other("no log"), "the store's log")) };
        let path = l.path().display().to_string();
        l.append(&body).map_err(|e| log_io_error(&e, &format!("appending to the store's log {path}")))?;
        let len = (body.len() + log::HEADER) as u64;
        self.metrics.store_log_bytes.inc_by(len);
        // A record of ranges only is flushed by age too.
        self.head.since.get_or_insert(self.now);
        if self.point_hooks {
            // A hook keeps rows for these points in the group's transaction (the spool): the
            // record counts only if that transaction reached the disk (see `load_head`).
            let id = self.log.as_ref().map_or(0, Log::last_id);
            let marked = self.conn.prepare_cached("INSERT OR REPLACE INTO meta(key, value) VALUES ('log_committed', ?1)").and_then(|mut st| st.execute([id.to_string()]));
            if let Err(e) = marked {
                self.unlog_group(len);
                return Err(e);
            }
        }
        Ok(Some(len))
    }

    /// Takes back the group's log record (its transaction failed to commit), so that the log
    /// holds only committed groups.
    pub(super) fn unlog_group(&mut self, record_len: u64) {
        if let Some(l) = self.log.as_mut() {
            if let Err(e) = l.undo_last(record_len) {
                tracing::error!("taking back a failed group's log record failed: {e}");
            }
        }
    }

    /// Ends the open group inside its transaction: the hours where a stored value was replaced
    /// rolled up again from the stored points (the head's points are merged in when it is
    /// flushed; they are distinct readings).
    pub(super) fn finish_group(&mut self) -> rusqlite::Result<()> {
        for (sid, hour) in std::mem::take(&mut self.stale_hours) {
            let pts = chunks::read_series(self.conn, sid, hour, hour + HOUR_MS)?;
            match HourRollup::of_points(&pts) {
                Some(r) => put_rollup(self.conn, sid, &r)?,
                None => {
                    self.conn.prepare_cached("DELETE FROM rollup_hour WHERE series = ?1 AND hour = ?2")?.execute(params![sid, hour])?;
                }
            }
            // The row now holds every stored reading of the hour, those of the segments too.
            strip_partials(self.conn, sid, hour)?;
        }
        Ok(())
    }

    /// Whether the head should be flushed now.
    pub(super) fn head_due(&self) -> bool {
        self.head.points >= HEAD_MAX_POINTS || self.head.since.is_some_and(|t| t.elapsed() >= self.head_max_age)
    }

    /// Whether log records are not yet covered by a flush.
    pub(super) fn log_unflushed(&self) -> bool {
        self.log.as_ref().is_some_and(|l| l.last_id() > self.log_position)
    }

    /// Writes the head as segments (one per series and day; their roll-ups are merged into the
    /// stored ones when read, see `rollup_rows.rs`), with the gateway rows changed, the point count and the last log record
    /// covered (`log_position`), in one transaction; syncs the WAL, then deletes the log files.
    /// The head is kept if it fails.
    pub(super) fn flush_head(&mut self) -> rusqlite::Result<()> {
        if self.head.touched.is_empty() && !self.log_unflushed() && !self.gateways.is_dirty() && !self.legacy_rows {
            self.head.since = None;
            return Ok(());
        }
        let started = Instant::now();
        let tx = self.conn.unchecked_transaction()?;
        let mut put_segment = self.conn.prepare_cached("INSERT INTO segments(series, day, count, data) VALUES (?1, ?2, ?3, ?4)")?;
        let mut put_chunk = self.conn.prepare_cached("INSERT INTO chunks(series, day, count, data) VALUES (?1, ?2, ?3, ?4)")?;
        let mut put_rollup = self.conn.prepare_cached(PUT_ROLLUP)?;
        // Sealing was asked for (`compact_pass` with `all`): a day before the cutoff that holds
        // no stored reading is written straight as its chunk and roll-up blob, not as a
        // segment that the sealing would read, rewrite and delete.
        let seal_before = self.seal_on_flush.take();
        let (mut sealed, mut straight): (Vec<(i64, i64)>, u64) = (Vec::new(), 0);
        let mut hours: Vec<HourRollup> = Vec::new();
        for &sid in &self.head.touched {
            let Some(slot) = self.head.get_slot(sid) else { continue };
            // No reading is stored after this time (when known).
            let stored_until = slot.newest.map(|n| n.1);
            for day in slot.points.chunk_by(|a, b| day_of(a.0) == day_of(b.0)) {
                let d = day_of(day[0].0);
                if seal_before.is_some_and(|c| d < c) && stored_until.is_some_and(|t| t < d) {
                    // Nothing stored on that day or after: these are its hours' whole roll-ups.
                    put_chunk.execute(params![sid, d, day.len() as i64, codec::encode(day)])?;
                    hours.clear();
                    hours.extend(day.chunk_by(|a, b| hour_of(a.0) == hour_of(b.0)).filter_map(HourRollup::of_points));
                    for r in &hours {
                        put_rollup_with(&mut put_rollup, sid, r)?;
                    }
                    sealed.push((sid, d));
                    straight += day.len() as u64;
                } else {
                    // The roll-ups of the segment's readings are merged into the stored ones
                    // when read (format 9, `rollup_rows.rs`), not rewritten into rows here.
                    put_segment.execute(params![sid, d, day.len() as i64, codec::encode(day)])?;
                }
            }
        }
        drop((put_segment, put_chunk, put_rollup));
        // The roll-up rows of the days written as chunks go into their blobs (merged with what
        // a blob or rows held, as sealing does).
        for (sid, d) in sealed {
            seal_rollups(self.conn, sid, d)?;
        }
        if self.legacy_rows {
            self.conn.execute("DELETE FROM head_log", [])?;
        }
        if self.committed_marker && !self.point_hooks {
            self.conn.execute("DELETE FROM meta WHERE key = 'log_committed'", [])?;
        }
        self.write_replayed()?;
        self.gateways.write(self.conn)?;
        super::schema::add_point_count(self.conn, self.head.points as i64)?;
        let position = self.log.as_ref().map_or(self.log_position, Log::last_id);
        if position != self.log_position {
            self.conn.prepare_cached("INSERT OR REPLACE INTO meta(key, value) VALUES ('log_position', ?1)")?.execute([position.to_string()])?;
        }
        tx.commit()?;
        self.sealed_on_flush += straight;
        self.legacy_rows = false;
        self.committed_marker &= self.point_hooks;
        self.replayed_series.clear();
        if self.replayed_changes.take().is_some() {
            // Change records were written behind the hooks' back: they read them again.
            for h in &mut self.hooks {
                h.rolled_back(self.conn);
            }
        }
        self.gateways.flushed();
        if position != self.log_position {
            // The log files may go once the flush is on disk.
            self.sync_wal()?;
            self.log_position = position;
            if let Some(l) = self.log.as_mut() {
                if let Err(e) = l.rotate() {
                    tracing::warn!("starting a new log file after a flush failed ({e}); appending to the old one");
                }
            }
        }
        self.head.clear_points();
        self.head_points.store(0, std::sync::atomic::Ordering::Release);
        self.metrics.head_points.set(0);
        self.metrics.store_flush_seconds.observe(started.elapsed().as_secs_f64());
        self.day_cache.clear();
        Ok(())
    }

    /// What the log gave back at open, in the flush's transaction: the catalog rows of its
    /// series, and change records of its points.
    fn write_replayed(&self) -> rusqlite::Result<()> {
        for (id, meter, q) in &self.replayed_series {
            self.conn.prepare_cached(ADD_QUANTITY)?.execute([q])?;
            self.conn.prepare_cached("INSERT OR IGNORE INTO series(meter, quantity, id) VALUES (?1, (SELECT code FROM quantities WHERE name = ?2), ?3)")?.execute(params![meter, q, id])?;
        }
        let Some(changes) = &self.replayed_changes else { return Ok(()) };
        let mut earliest: FxMap<String, i64> = FxMap::default();
        for (&sid, &t) in changes {
            let meter: Option<String> = self.conn.prepare_cached("SELECT meter FROM series WHERE id = ?1")?.query_row([sid], |r| r.get(0)).optional()?;
            if let Some(m) = meter {
                let e = earliest.entry(m).or_insert(t);
                *e = (*e).min(t);
            }
        }
        for (m, t) in earliest {
            self.conn
                .prepare_cached("INSERT INTO dirty_meters(meter, min_ts, seq) VALUES (?1, ?2, 1) ON CONFLICT(meter) DO UPDATE SET min_ts = min(min_ts, excluded.min_ts), seq = seq + 1")?
                .execute(params![m, t])?;
        }
        Ok(())
    }

    /// Syncs the WAL file (a flush's commit, before the log records it covers are deleted).
    fn sync_wal(&self) -> rusqlite::Result<()> {
        let Some(db) = self.conn.path() else { return Ok(()) };
        let wal = format!("{db}-wal");
        match std::fs::File::open(&wal).and_then(|f| f.sync_data()) {
            Ok(()) => Ok(()),
            // Checkpointed and removed meanwhile: the checkpoint synced the database file.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(log_io_error(&e, &format!("syncing the store's WAL file {wal}"))),
        }
    }

    /// Loads the head from the log records after the last flush's position, and from `head_log`
    /// rows left by a store of format 7 or before (at the start, or after a failed group): what
    /// was acknowledged and not yet flushed; the gateway rows changed since come with it.
    pub(super) fn load_head(&mut self) -> rusqlite::Result<u64> {
        self.head = Head::default();
        self.gateways.clear();
        self.replayed_series.clear();
        self.group_series.clear();
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
                if let Some(c) = self.replayed_changes.as_mut() {
                    let e = c.entry(sid).or_insert(ts);
                    *e = (*e).min(ts);
                }
            }
            self.legacy_rows = true;
        }
        // With a hook that keeps rows for the points in the group's transaction (the spool),
        // a record counts only if that transaction is on disk too (it was not acknowledged
        // otherwise; its sender sends it again).
        let committed: Option<u64> = self.conn.query_row("SELECT CAST(value AS INTEGER) FROM meta WHERE key = 'log_committed'", [], |r| r.get::<_, i64>(0)).optional()?.map(|v| v as u64);
        self.committed_marker = committed.is_some();
        if let Some(l) = &self.log {
            let dir = l.path().parent().map(std::path::Path::to_path_buf).unwrap_or_default();
            let scan = log::scan(&dir, self.log_position, false).map_err(|e| log_io_error(&std::io::Error::other(e.to_string()), "reading the store's log"))?;
            for (id, body) in scan.records {
                if committed.is_some_and(|c| id > c) {
                    tracing::warn!(record = id, "a log record whose transaction did not reach the disk (never acknowledged) is left out");
                    continue;
                }
                let body = log::decode_body(&body).map_err(|e| log_io_error(&std::io::Error::other(e.to_string()), &format!("log record {id} in {}", dir.display())))?;
                for (sid, ts, v) in body.points {
                    self.head.insert(sid, ts, v);
                    if let Some(c) = self.replayed_changes.as_mut() {
                        let e = c.entry(sid).or_insert(ts);
                        *e = (*e).min(ts);
                    }
                }
                for g in body.gateways {
                    self.gateways.replay(g);
                }
                for (id, meter, q) in body.new_series {
                    // Known to the writer before the catalog has them (ids are not given twice).
                    if let Some(&quantity) = Quantity::ALL.iter().find(|x| x.name() == q) {
                        let ids = self.series.entry(meter.clone()).or_insert_with(|| vec![0; Quantity::ALL.len()]);
                        if let Some(slot) = ids.get_mut(quantity as usize) {
                            *slot = id;
                        }
                    }
                    self.next_series = Some(self.next_series.unwrap_or(0).max(id + 1));
                    self.replayed_series.push((id, meter, q));
                }
            }
        }
        self.head.group.clear();
        self.head_points.store(self.head.points, std::sync::atomic::Ordering::Release);
        Ok(self.head.points)
    }

    /// One compaction pass in its own transaction: seals up to [`CHUNKS_PER_PASS`] days.
    /// With `all` (asked for), the head is flushed first and days being backfilled are sealed
    /// too; the background passes leave the head to its own flushes.
    pub(super) fn compact_pass(&mut self, seal_after_ms: i64, all: bool) -> rusqlite::Result<chunks::Compacted> {
        let cutoff = day_of(chrono::Utc::now().timestamp_millis() - seal_after_ms);
        if all {
            self.seal_on_flush = Some(cutoff);
            let flushed = self.flush_head();
            self.seal_on_flush = None;
            flushed?;
        }
        self.seal_cutoff = cutoff;
        let head = &self.head;
        let busy = |sid: i64, day: i64| !all && head.get_slot(sid).and_then(|s| s.backfill).is_some_and(|(d, t)| d == day && t.elapsed() < BACKFILL_QUIET);
        let tx = self.conn.unchecked_transaction()?;
        let mut done = chunks::compact(self.conn, cutoff, CHUNKS_PER_PASS, &busy)?;
        for &(sid, day) in &done.sealed {
            // The day's roll-ups (with its segments' partials) into its blob, then its
            // segments go.
            seal_rollups(self.conn, sid, day)?;
            chunks::drop_segments(self.conn, sid, day)?;
        }
        tx.commit()?;
        self.day_cache.clear();
        done.points += std::mem::take(&mut self.sealed_on_flush);
        Ok(done)
    }
}
