//! The accounting engine's disk cache: meters' years in `<data_dir>/accounting-cache.sqlite`, so
//! that a restarted daemon answers at once instead of recomputing every meter from the roll-ups.
//!
//! It is only a cache: each row carries a key (a hash of the meter's definition, its events, the
//! time zone and [`ENGINE_VERSION`]) and the file carries the store's change epoch (`Store::change_epoch`); a row whose
//! key differs, or a file of another epoch, is ignored and rebuilt. Change records of the store
//! (`dirty_meters`) drop the rows they touch before the engine reads any. If the file cannot be
//! opened or is damaged it is deleted and built again; if that fails too, the engine runs without
//! it (and says so in the log).

use std::path::{Path, PathBuf};
use std::sync::Mutex;

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

pub struct DiskCache {
    path: PathBuf,
    conn: Mutex<Option<Connection>>,
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
    pub fn open(path: PathBuf) -> DiskCache {
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
        DiskCache { path, conn: Mutex::new(conn) }
    }

    fn with<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Option<T> {
        let g = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        let c = g.as_ref()?;
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
        self.with(|c| {
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

    pub fn put(&self, rows: &[(String, i32, String, std::sync::Arc<MeterYear>)]) {
        self.with(|c| {
            let tx = c.unchecked_transaction()?;
            {
                let mut st = tx.prepare_cached("INSERT OR REPLACE INTO meter_year(meter, year, key, data) VALUES (?1, ?2, ?3, ?4)")?;
                for (m, y, k, my) in rows {
                    st.execute(params![m, y, k, encode(my)])?;
                }
            }
            tx.commit()?;
            // A warm-up writes thousands of rows at once: fold the WAL back now.
            if rows.len() >= 256 {
                c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
            }
            Ok(())
        });
    }

    /// Drops a meter's years from `from_year` on.
    pub fn invalidate(&self, meter: &str, from_year: i32) {
        self.with(|c| c.prepare_cached("DELETE FROM meter_year WHERE meter = ?1 AND year >= ?2")?.execute(params![meter, from_year]));
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

    #[test]
    fn rows_survive_a_reopen_and_the_epoch_guards_them() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.sqlite");
        let y = std::sync::Arc::new(MeterYear { series: Series::zero(2), flags: vec![], rejected: 0, rejected_readings: vec![], gaps: vec![] });
        let c = DiskCache::open(p.clone());
        c.check_epoch("e1");
        c.put(&[("m".into(), 2025, "k".into(), y.clone()), ("m".into(), 2026, "k".into(), y.clone())]);
        drop(c);
        let c = DiskCache::open(p.clone());
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
        let c = DiskCache::open(p);
        c.put(&[("m".into(), 2025, "k".into(), y)]);
        assert!(c.get("m", 2025, "k").is_some());
    }
}
