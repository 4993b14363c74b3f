//! The head: points acknowledged since the last flush, held in memory by the writer, made durable
//! as one record of the store's log ([`super::log`]) per group commit, and written as segments
//! by a flush. (Stores before format 8 kept that record as a row of table `head_log`; such rows
//! are still read, once, when a store is upgraded.)

use std::time::Instant;


/// The head: points acknowledged since the last flush, per series sorted by time, held in memory
/// and made durable by one log record per group commit. A flush writes them as one segment
/// per series and day and merges their roll-ups, in one transaction that also records the last
/// log record it covers; reads flush first, so that they never need to look at the head.
#[derive(Default)]
pub(super) struct Head {
    /// Per series id (ids are dense, from 1): what the writer knows of it.
    pub(super) series: Vec<SeriesHead>,
    /// Series with points in the head, each once.
    pub(super) touched: Vec<i64>,
    pub(super) points: u64,
    /// When the oldest point still in the head arrived.
    pub(super) since: Option<Instant>,
    /// The new points of the open group, (series, time, value), for its log record.
    pub(super) group: Vec<(i64, i64, f64)>,
}

/// First byte of a `head_log` record (store formats 5 to 7) whose series and times are
/// differences from the previous point's (zigzag varints), each value 8 bytes. Records without
/// it (format 4) start with a series id, never 0, and hold plain varints.
pub(super) const HEAD_LOG_DELTAS: u8 = 0;

pub(super) fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

pub(super) fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

#[derive(Default)]
pub(super) struct SeriesHead {
    /// (newest reading time in the store and the head, newest in the store), once looked up.
    pub(super) newest: Option<(i64, i64)>,
    /// The series' points in the head, sorted by time.
    pub(super) points: Vec<(i64, f64)>,
    /// The last old day written to (a backfill) and when: not sealed while it is being loaded.
    pub(super) backfill: Option<(i64, Instant)>,
    /// The newest stored readings, kept after a flush: every stored reading at or after
    /// `tail_from` is here, so that a late point in that range (requests answered out of order)
    /// is checked without reading the store.
    pub(super) tail: Vec<(i64, f64)>,
    pub(super) tail_from: Option<i64>,
}

/// Readings kept per series after a flush for checking late points.
pub(super) const TAIL: usize = 32;

impl Head {
    pub(super) fn slot(&mut self, sid: i64) -> &mut SeriesHead {
        let i = usize::try_from(sid).unwrap_or(0);
        if i >= self.series.len() {
            self.series.resize_with(i + 1, SeriesHead::default);
        }
        &mut self.series[i]
    }

    pub(super) fn get_slot(&self, sid: i64) -> Option<&SeriesHead> {
        self.series.get(usize::try_from(sid).ok()?)
    }

    /// Puts a point into the head (a reading already there at that time is replaced).
    pub(super) fn insert(&mut self, sid: i64, ts: i64, v: f64) {
        let at = locate(&self.slot(sid).points, ts);
        self.put_at(sid, at, ts, v);
    }

    /// Puts a point where [`locate`] found it: `Ok(i)` replaces the reading at `i`, `Err(i)`
    /// inserts there (`Err(len)` appends: the caller knows the point is the series' newest,
    /// and the series' buffer is then only written, not read, which spares a cache miss per
    /// point when thousands of series take turns).
    pub(super) fn put_at(&mut self, sid: i64, at: Result<usize, usize>, ts: i64, v: f64) {
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
        self.group.push((sid, ts, v));
    }

    /// Where `ts` is (`Ok`) or would go (`Err`) among the series' points in the head, with the
    /// value found.
    pub(super) fn find(&self, sid: i64, ts: i64) -> (Result<usize, usize>, Option<f64>) {
        let Some(slot) = self.get_slot(sid) else { return (Err(0), None) };
        let at = locate(&slot.points, ts);
        (at, at.ok().map(|i| slot.points[i].1))
    }

    /// Empties the head's points (after a flush); what is known of each series stays.
    pub(super) fn clear_points(&mut self) {
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
pub(super) fn locate(pts: &[(i64, f64)], ts: i64) -> Result<usize, usize> {
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

pub(super) fn put_varint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

pub(super) fn get_varint(b: &[u8], pos: &mut usize) -> Option<u64> {
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

/// A `head_log` record as format 7 wrote it (tests make version 7 stores with it).
#[cfg(test)]
pub(super) fn encode_head_log(points: &[(i64, i64, f64)]) -> Vec<u8> {
    let mut log = vec![HEAD_LOG_DELTAS];
    let mut prev = (0i64, 0i64);
    for &(sid, ts, v) in points {
        put_varint(&mut log, zigzag(sid.wrapping_sub(prev.0)));
        put_varint(&mut log, zigzag(ts.wrapping_sub(prev.1)));
        log.extend_from_slice(&v.to_bits().to_le_bytes());
        prev = (sid, ts);
    }
    log
}

/// Decodes one `head_log` record into (series, time, value).
pub(super) fn decode_head_log(b: &[u8]) -> Option<Vec<(i64, i64, f64)>> {
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

#[cfg(test)]
#[path = "head_tests.rs"]
mod tests;
