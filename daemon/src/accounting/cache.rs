//! The accounting engine's disk cache: meters' years in `<data_dir>/accounting-cache.sqlite`, so
//! that a restarted daemon answers at once instead of recomputing every meter from the roll-ups.
//!
//! It is only a cache: each row carries a key (a hash of the meter's definition, its events, the
//! time zone and [`ENGINE_VERSION`]) and the file carries the store's change epoch (`Store::change_epoch`); a row whose
//! key differs, or a file of another epoch, is ignored and rebuilt. Change records of the store
//! (`dirty_meters`) drop the rows they touch before the engine reads any. If the file cannot be
//! opened or is damaged it is deleted and built again; if that fails too, the engine runs without
//! it (and says so in the log).
//!
//! Rows are written when they have stayed valid for a while, not at every computation
//! ([`DiskCache::put`]): a meter-year that keeps changing (points streaming in) would have its
//! row dropped by the next change record anyway, and a restart applies the records left before
//! it reads a row, so such a row would be written only to be deleted unread. A closed year's row
//! is written at once (at most once per [`HOLD`]), the year in progress's after [`HOLD`] without
//! a change, and every row still waiting when the daemon stops.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Datelike;
use chrono_tz::Tz;
use rusqlite::{params, Connection, OptionalExtension};

use super::counter::{Flag, Rejected};
use super::ledger::{Gap, MeterYear, Series};

/// What a meter's year holds besides its numbers, as JSON.
#[derive(serde::Serialize, serde::Deserialize)]
struct Found {
    flags: Vec<Flag>,
    rejected: Vec<Rejected>,
    gaps: Vec<Gap>,
}

/// Bumped whenever the way a meter's year is computed changes.
/// 4: rollover is the register's largest value (range one step more), a reading at a
/// replacement's time is absorbed, replacements may change the multiplier, rejected readings and
/// gaps are kept with their times.
pub const ENGINE_VERSION: u32 = 4;

/// How long a computed meter-year must stay valid before its row is written (see
/// [`DiskCache::put`]); also the shortest time between two writes of one meter-year.
pub const HOLD: Duration = Duration::from_secs(10 * 60);

/// A row computed and not yet written: its key, the year, and when it may be written.
struct Pending {
    key: String,
    year: Arc<MeterYear>,
    due: Instant,
}

/// The connection and the rows waiting to be written, behind one lock: a row is dropped from
/// the waiting ones and from the file in one step ([`DiskCache::invalidate`]), so a row a
/// change record dropped is never written after it.
struct State {
    conn: Option<Connection>,
    pending: HashMap<(String, i32), Pending>,
    /// When each meter-year was last written (for the rate limit; entries older than the hold
    /// are pruned).
    written: HashMap<(String, i32), Instant>,
}

pub struct DiskCache {
    path: PathBuf,
    tz: Tz,
    hold: Duration,
    state: Mutex<State>,
}

fn open_conn(path: &Path) -> rusqlite::Result<Connection> {
    let c = Connection::open(path)?;
    c.pragma_update(None, "journal_mode", "WAL")?;
    c.pragma_update(None, "synchronous", "NORMAL")?;
    // The WAL is cut back to 1 MiB after each checkpoint instead of staying at its high mark.
    c.pragma_update(None, "journal_size_limit", 1_048_576)?;
    c.execute_batch(
        "CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
         CREATE TABLE IF NOT EXISTS meter_year(meter TEXT NOT NULL, year INTEGER NOT NULL, key TEXT NOT NULL, data BLOB NOT NULL,
             PRIMARY KEY(meter, year)) WITHOUT ROWID;",
    )?;
    c.query_row("SELECT count(*) FROM meter_year", [], |r| r.get::<_, i64>(0))?;
    Ok(c)
}

impl DiskCache {
    /// Opens the cache file; `tz` says which years are closed (ended in the engine's time zone).
    pub fn open(path: PathBuf, tz: Tz) -> DiskCache {
        DiskCache::open_with_hold(path, tz, HOLD)
    }

    /// [`DiskCache::open`] with another hold time (tests).
    pub fn open_with_hold(path: PathBuf, tz: Tz, hold: Duration) -> DiskCache {
        let conn = match open_conn(&path) {
            Ok(c) => Some(c),
            Err(e) if path.parent().is_some_and(|d| crate::store::disk::is_disk_full(&e, crate::store::disk::free_bytes(d))) => {
                // Not corrupt: kept for the next start; until then figures are computed without it.
                tracing::error!(path = %path.display(), "accounting cache not opened, the disk is full ({e}): figures are computed without it until energyd restarts");
                None
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), "accounting cache unreadable ({e}); starting a new one");
                for suffix in ["", "-wal", "-shm"] {
                    let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
                }
                match open_conn(&path) {
                    Ok(c) => Some(c),
                    Err(e) => {
                        tracing::error!(path = %path.display(), "accounting cache disabled: {e}");
                        None
                    }
                }
            }
        };
        DiskCache { path, tz, hold, state: Mutex::new(State { conn, pending: HashMap::new(), written: HashMap::new() }) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn with<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Option<T> {
        let g = self.lock();
        self.run(&g, f)
    }

    fn run<T>(&self, state: &State, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Option<T> {
        let c = state.conn.as_ref()?;
        match f(c) {
            Ok(v) => Some(v),
            Err(e) => {
                tracing::warn!(path = %self.path.display(), "accounting cache: {e}");
                None
            }
        }
    }

    /// Empties the cache unless it was built for `epoch` of the store.
    pub fn check_epoch(&self, epoch: &str) {
        let mut g = self.lock();
        g.pending.clear();
        self.run(&g, |c| {
            let found: Option<String> = c.query_row("SELECT value FROM meta WHERE key = 'epoch'", [], |r| r.get(0)).optional()?;
            if found.as_deref() != Some(epoch) {
                c.execute("DELETE FROM meter_year", [])?;
                c.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('epoch', ?1)", [epoch])?;
            }
            Ok(())
        });
    }

    pub fn get(&self, meter: &str, year: i32, key: &str) -> Option<MeterYear> {
        let data: Vec<u8> = self
            .with(|c| {
                c.prepare_cached("SELECT data FROM meter_year WHERE meter = ?1 AND year = ?2 AND key = ?3")?
                    .query_row(params![meter, year, key], |r| r.get(0))
                    .optional()
            })
            .flatten()?;
        decode(&data)
    }

    /// Takes rows computed from the store. A row is written when it has stayed valid for a
    /// while, not on every computation: at once for a closed year (one that ended in the
    /// engine's time zone), after the hold for the year in progress, and a meter-year at most
    /// once per hold. Until then it waits in memory; a change record that drops the meter-year
    /// ([`DiskCache::invalidate`]) drops the waiting row with it, and [`DiskCache::write_due`]
    /// writes those that are due (all of them at shutdown).
    pub fn put(&self, rows: &[(String, i32, String, Arc<MeterYear>)]) {
        self.put_at(rows, Instant::now(), chrono::Utc::now().with_timezone(&self.tz).year());
    }

    /// [`DiskCache::put`] at `now`, with `open_year` the first year not yet ended.
    fn put_at(&self, rows: &[(String, i32, String, Arc<MeterYear>)], now: Instant, open_year: i32) {
        let mut g = self.lock();
        if g.conn.is_none() {
            return;
        }
        for (m, y, k, my) in rows {
            let id = (m.clone(), *y);
            let since_written = g.written.get(&id).map(|w| *w + self.hold);
            let due = if *y < open_year { since_written.map_or(now, |t| t.max(now)) } else { now + self.hold };
            g.pending.insert(id, Pending { key: k.clone(), year: my.clone(), due });
        }
        self.write_locked(&mut g, now, false);
    }

    /// Writes the waiting rows that are due at `now` (every one when `all`): called now and
    /// then by the daemon, and with `all` when it stops.
    pub fn write_due(&self, all: bool) {
        self.write_at(Instant::now(), all);
    }

    fn write_at(&self, now: Instant, all: bool) {
        let mut g = self.lock();
        self.write_locked(&mut g, now, all);
    }

    /// Rows waiting to be written.
    pub fn pending(&self) -> usize {
        self.lock().pending.len()
    }

    fn write_locked(&self, g: &mut State, now: Instant, all: bool) {
        let due: Vec<(String, i32)> = g.pending.iter().filter(|(_, p)| all || p.due <= now).map(|(id, _)| id.clone()).collect();
        if due.is_empty() {
            return;
        }
        let rows: Vec<((String, i32), Pending)> = due.into_iter().filter_map(|id| g.pending.remove(&id).map(|p| (id, p))).collect();
        let wrote = self.run(g, |c| {
            let tx = c.unchecked_transaction()?;
            {
                let mut st = tx.prepare_cached("INSERT OR REPLACE INTO meter_year(meter, year, key, data) VALUES (?1, ?2, ?3, ?4)")?;
                for ((m, y), p) in &rows {
                    st.execute(params![m, y, p.key, encode(&p.year)])?;
                }
            }
            tx.commit()?;
            // Many rows at once (a warm-up, a shutdown): fold the WAL back now.
            if rows.len() >= 256 {
                c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
            }
            Ok(())
        });
        if wrote.is_some() {
            g.written.retain(|_, t| now.saturating_duration_since(*t) < self.hold);
            for (id, _) in rows {
                g.written.insert(id, now);
            }
        }
    }

    /// Drops a meter's years from `from_year` on, written or waiting.
    pub fn invalidate(&self, meter: &str, from_year: i32) {
        let mut g = self.lock();
        g.pending.retain(|(m, y), _| m != meter || *y < from_year);
        self.run(&g, |c| c.prepare_cached("DELETE FROM meter_year WHERE meter = ?1 AND year >= ?2")?.execute(params![meter, from_year]));
    }
}

impl Drop for DiskCache {
    /// The rows still waiting are written when the cache is closed (the daemon stopping,
    /// `energyd report` ending).
    fn drop(&mut self) {
        self.write_due(true);
    }
}

/// A stable 64-bit FNV-1a hash, hex.
pub fn key_of(parts: &[&str]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for b in p.bytes().chain(std::iter::once(0xff)) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    format!("{h:016x}")
}

/// A meter's year: the day count (u32), the length of the compressed numbers (u32) and the
/// numbers (daily values, estimated parts, coverage, then the 12 x 24 hour-of-day profile) as a
/// run of the store's chunk codec (lossless; a year with few readings takes a few hundred bytes
/// instead of 11 KB), the rejected count (u64) and the flags as JSON.
fn encode(y: &MeterYear) -> Vec<u8> {
    let s = &y.series;
    let days = s.value.len();
    let numbers: Vec<(i64, f64)> = s.value.iter().chain(&s.estimated).chain(&s.coverage).chain(s.hod.iter().flatten()).enumerate().map(|(i, v)| (i as i64, *v)).collect();
    let packed = crate::store::codec::encode(&numbers);
    let mut out = Vec::with_capacity(16 + packed.len());
    out.extend_from_slice(&(days as u32).to_le_bytes());
    out.extend_from_slice(&(packed.len() as u32).to_le_bytes());
    out.extend_from_slice(&packed);
    out.extend_from_slice(&(y.rejected as u64).to_le_bytes());
    let found = Found { flags: y.flags.clone(), rejected: y.rejected_readings.clone(), gaps: y.gaps.clone() };
    out.extend_from_slice(serde_json::to_string(&found).unwrap_or_else(|_| "{}".into()).as_bytes());
    out
}

fn decode(b: &[u8]) -> Option<MeterYear> {
    let days = u32::from_le_bytes(b.get(..4)?.try_into().ok()?) as usize;
    if days > 400 {
        return None;
    }
    let len = u32::from_le_bytes(b.get(4..8)?.try_into().ok()?) as usize;
    let numbers = crate::store::codec::decode(b.get(8..8usize.checked_add(len)?)?).ok()?;
    if numbers.len() != 3 * days + 12 * 24 {
        return None;
    }
    let mut it = numbers.into_iter().map(|p| p.1);
    let value: Vec<f64> = it.by_ref().take(days).collect();
    let estimated: Vec<f64> = it.by_ref().take(days).collect();
    let coverage: Vec<f64> = it.by_ref().take(days).collect();
    let mut hod = vec![[0.0; 24]; 12];
    for row in hod.iter_mut() {
        for h in row.iter_mut() {
            *h = it.next()?;
        }
    }
    let at = 8 + len;
    let rejected = u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?) as usize;
    let found: Found = serde_json::from_slice(b.get(at + 8..)?).ok()?;
    Some(MeterYear { series: Series { value, estimated, coverage, hod }, flags: found.flags, rejected, rejected_readings: found.rejected, gaps: found.gaps })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_meter_year_round_trips_and_damage_is_a_miss() {
        let mut s = Series::zero(365);
        s.value[3] = 1.5;
        s.estimated[4] = 0.25;
        s.coverage[5] = 0.5;
        s.hod[11][23] = 7.0;
        let y = MeterYear {
            series: s,
            flags: vec![Flag::Rollover { at: 42 }],
            rejected: 1,
            rejected_readings: vec![Rejected { at: 7, value: 0.0, reason: super::super::counter::RejectReason::Decrease }],
            gaps: vec![Gap { from: 1, to: 9_000_000, estimated: 2.5 }],
        };
        let b = encode(&y);
        assert!(b.len() < 1000, "{} bytes for a year with four numbers (11 KB uncompressed)", b.len());
        assert_eq!(decode(&b), Some(y));
        for cut in 0..b.len() {
            assert_eq!(decode(&b[..cut]), None);
        }
        assert_eq!(decode(&[]), None);
        assert_eq!(decode(&[0xff; 64]), None);
    }

    /// Rows on disk, read beside the cache (its own connection sees only what was written).
    fn on_disk(p: &Path) -> Vec<(String, i32, String)> {
        let c = Connection::open(p).unwrap();
        let mut st = c.prepare("SELECT meter, year, key FROM meter_year ORDER BY meter, year").unwrap();
        st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).unwrap().map(Result::unwrap).collect()
    }

    /// The write policy, with a hold of 60 s and 2026 the year in progress: a closed year's row
    /// is written at once, the open year's only once it stayed 60 s without a change record
    /// dropping it; a meter-year is written at most once per hold; a row a change record drops
    /// while it waits is never written; what waits is written when the cache closes.
    #[test]
    fn rows_are_written_once_they_stay_valid_and_never_after_a_change() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.sqlite");
        let year = |v: f64| {
            let mut s = Series::zero(2);
            s.value[0] = v;
            Arc::new(MeterYear { series: s, flags: vec![], rejected: 0, rejected_readings: vec![], gaps: vec![] })
        };
        let hold = Duration::from_secs(60);
        let c = DiskCache::open_with_hold(p.clone(), chrono_tz::Asia::Shanghai, hold);
        c.check_epoch("e1");
        let t0 = Instant::now();
        let s = Duration::from_secs;
        c.put_at(&[("m".into(), 2025, "k1".into(), year(1.0)), ("m".into(), 2026, "k1".into(), year(2.0))], t0, 2026);
        assert_eq!(on_disk(&p), vec![("m".into(), 2025, "k1".into())], "the closed year at once, the open one waits");
        assert_eq!(c.pending(), 1);
        // 2025 computed again 10 s after its write (a backfill): it waits until 60 s after that
        // write, not written twice within the hold.
        c.put_at(&[("m".into(), 2025, "k2".into(), year(3.0))], t0 + s(10), 2026);
        assert_eq!(on_disk(&p), vec![("m".into(), 2025, "k1".into())]);
        c.write_at(t0 + s(59), false);
        assert_eq!(on_disk(&p), vec![("m".into(), 2025, "k1".into())], "59 s: not yet");
        c.write_at(t0 + s(60), false);
        assert_eq!(on_disk(&p), vec![("m".into(), 2025, "k2".into()), ("m".into(), 2026, "k1".into())], "60 s: both");
        assert_eq!(c.pending(), 0);
        // The open year computed again, then a change record drops 2026 on while it waits: the
        // waiting row goes with the written one, and nothing brings it back.
        c.put_at(&[("m".into(), 2026, "k3".into(), year(4.0))], t0 + s(70), 2026);
        c.invalidate("m", 2026);
        assert_eq!(c.pending(), 0);
        c.write_at(t0 + s(1000), true);
        assert_eq!(on_disk(&p), vec![("m".into(), 2025, "k2".into())]);
        // Closing the cache writes what waits, due or not.
        c.put_at(&[("n".into(), 2026, "k".into(), year(5.0))], t0 + s(80), 2026);
        drop(c);
        assert_eq!(on_disk(&p), vec![("m".into(), 2025, "k2".into()), ("n".into(), 2026, "k".into())]);
        let c = DiskCache::open_with_hold(p.clone(), chrono_tz::Asia::Shanghai, hold);
        assert_eq!(c.get("n", 2026, "k").map(|y| y.series.value[0]), Some(5.0));
        // Another epoch (a store restored from a backup): nothing waiting survives it either.
        c.put_at(&[("o".into(), 2026, "k".into(), year(6.0))], t0, 2026);
        c.check_epoch("e2");
        drop(c);
        assert_eq!(on_disk(&p), vec![]);
    }

    /// Through the engine and a real store (Asia/Shanghai): m0's year in progress reads 100 at
    /// 01:00 and 110 at 02:00 on 1 January (10 kWh); its row waits in memory, is written when
    /// the engine closes, and after a late reading (125 at 03:00: 25 kWh) a restarted engine
    /// does not serve the written row: the change record stored with the reading drops it. A
    /// closed year (m1 in 2024: 5 then 7, 2 kWh; m0 empty) is on disk as soon as it is computed.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_restarted_engine_never_serves_a_row_written_before_later_points() {
        use crate::store::Point;
        use energy_wire::Quantity;
        let dir = tempfile::tempdir().unwrap();
        let reg = crate::registry::Registry::parse(
            "[[agency]]\nid = \"a\"\nname = \"单位\"\nlevel = \"city\"\nheadcount = { 2020 = 10 }\n\
             [[building]]\nid = \"b\"\nname = \"楼\"\nfloor_area = 100\noccupants = [ { agency = \"a\", share = 1.0 } ]\n\
             [[meter]]\nid = \"m0\"\nbuilding = \"b\"\ncarrier = \"electricity\"\n\
             [[meter]]\nid = \"m1\"\nbuilding = \"b\"\ncarrier = \"electricity\"\n",
        )
        .unwrap();
        let tz = chrono_tz::Asia::Shanghai;
        let year = chrono::Utc::now().with_timezone(&tz).year();
        let at = |y: i32, h: u32| chrono::TimeZone::with_ymd_and_hms(&tz, y, 1, 1, h, 0, 0).unwrap().timestamp_millis();
        let pt = |m: &str, ts: i64, value: f64| Point { meter: m.into(), quantity: Quantity::ActiveEnergyImport, ts, value };
        let store = crate::store::open(dir.path(), crate::metrics::Metrics::new()).unwrap();
        store.write_points(vec![pt("m0", at(year, 1), 100.0), pt("m0", at(year, 2), 110.0), pt("m1", at(2024, 1), 5.0), pt("m1", at(2024, 2), 7.0)]).await.unwrap();
        let file = dir.path().join("accounting-cache.sqlite");
        let total = |y: &super::super::engine::MeterYears, m: &str| y[m].series.total();
        let rows = || on_disk(&file).into_iter().map(|r| (r.0, r.1)).collect::<Vec<_>>();

        let engine = super::super::engine::Engine::open(dir.path(), &reg, tz).unwrap();
        assert!((total(&engine.meter_years(&store, &reg, year).await.unwrap(), "m0") - 10.0).abs() < 1e-9);
        assert!(rows().is_empty(), "the year in progress waits");
        assert!((total(&engine.meter_years(&store, &reg, 2024).await.unwrap(), "m1") - 2.0).abs() < 1e-9);
        assert_eq!(rows(), vec![("m0".into(), 2024), ("m1".into(), 2024)], "a closed year at once");
        drop(engine);
        assert_eq!(rows(), vec![("m0".into(), 2024), ("m0".into(), year), ("m1".into(), 2024), ("m1".into(), year)], "written when the engine closes");

        store.write_points(vec![pt("m0", at(year, 3), 125.0)]).await.unwrap();
        let again = super::super::engine::Engine::open(dir.path(), &reg, tz).unwrap();
        assert!((total(&again.meter_years(&store, &reg, year).await.unwrap(), "m0") - 25.0).abs() < 1e-9, "not the row written before 03:00");
        assert!((total(&again.meter_years(&store, &reg, 2024).await.unwrap(), "m1") - 2.0).abs() < 1e-9);
        drop(again);
        store.close();
    }

    #[test]
    fn rows_survive_a_reopen_and_the_epoch_guards_them() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.sqlite");
        let y = std::sync::Arc::new(MeterYear { series: Series::zero(2), flags: vec![], rejected: 0, rejected_readings: vec![], gaps: vec![] });
        let c = DiskCache::open(p.clone(), chrono_tz::Asia::Shanghai);
        c.check_epoch("e1");
        c.put(&[("m".into(), 2025, "k".into(), y.clone()), ("m".into(), 2026, "k".into(), y.clone())]);
        drop(c);
        let c = DiskCache::open(p.clone(), chrono_tz::Asia::Shanghai);
        c.check_epoch("e1");
        assert!(c.get("m", 2025, "k").is_some());
        assert!(c.get("m", 2025, "other key").is_none());
        c.invalidate("m", 2026);
        assert!(c.get("m", 2026, "k").is_none());
        assert!(c.get("m", 2025, "k").is_some());
        c.check_epoch("e2");
        assert!(c.get("m", 2025, "k").is_none());
        // A damaged file is replaced.
        drop(c);
        std::fs::write(&p, b"not a database at all, not at all").unwrap();
        let _ = std::fs::remove_file(format!("{}-wal", p.display()));
        let c = DiskCache::open(p, chrono_tz::Asia::Shanghai);
        c.put(&[("m".into(), 2025, "k".into(), y)]);
        assert!(c.get("m", 2025, "k").is_some());
    }
}
