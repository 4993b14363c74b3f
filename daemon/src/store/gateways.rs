//! Gateway sequence numbers (tables `gateway_seq`, `gateway_epochs`): the ranges stored per
//! gateway and queue epoch, used to drop duplicate samples by identity.

use std::collections::{HashMap, HashSet};

use rusqlite::{params, Connection, OptionalExtension};

use super::fxmap::FxMap;
use super::log::GatewayState;

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

/// Stored sequence ranges of a gateway's queue epoch ('' for none), sorted.
pub(super) fn ranges(c: &Connection, gateway: &str, epoch: &str) -> rusqlite::Result<Vec<(u64, u64)>> {
    let mut st = c.prepare_cached("SELECT start, end FROM gateway_seq WHERE gateway = ?1 AND epoch = ?2 ORDER BY start")?;
    let rows = st.query_map([gateway, epoch], |r| Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64)))?;
    rows.collect()
}

/// Replaces the stored ranges of a gateway's queue epoch by `merged`.
pub(super) fn put_ranges(c: &Connection, gateway: &str, epoch: &str, merged: &[(u64, u64)]) -> rusqlite::Result<()> {
    c.prepare_cached("DELETE FROM gateway_seq WHERE gateway = ?1 AND epoch = ?2")?.execute([gateway, epoch])?;
    for &(a, z) in merged {
        c.prepare_cached("INSERT INTO gateway_seq(gateway, epoch, start, end) VALUES (?1, ?2, ?3, ?4)")?.execute(params![gateway, epoch, a as i64, z as i64])?;
    }
    Ok(())
}

/// The writer's copy of the gateway rows its groups changed since the last flush (store format
/// 8): a group's batches are checked against it and change it; each group's log record carries
/// the states it changed, and the flush writes them into `gateway_seq` and `gateway_epochs`
/// with the points. Rows not changed since are read from the tables when first needed.
#[derive(Default)]
pub(super) struct Overlay {
    /// Per (gateway, epoch): its state, and whether an epoch row exists (stored or noted).
    states: FxMap<(String, String), (GatewayState, bool)>,
    /// Changed in the open group (for its log record).
    pub(super) group: Vec<(String, String)>,
    /// Changed since the last flush.
    dirty: HashSet<(String, String)>,
}

impl Overlay {
    /// The state of (gateway, epoch), read from the tables when not held.
    fn state(&mut self, c: &Connection, gateway: &str, epoch: &str) -> rusqlite::Result<&mut (GatewayState, bool)> {
        let key = (gateway.to_string(), epoch.to_string());
        if !self.states.contains_key(&key) {
            let ranges = ranges(c, gateway, epoch)?;
            let row: Option<(Option<i64>, Option<i64>)> =
                c.prepare_cached("SELECT first_ms, last_ms FROM gateway_epochs WHERE gateway = ?1 AND epoch = ?2")?.query_row([gateway, epoch], |r| Ok((r.get(0)?, r.get(1)?))).optional()?;
            let (first_ms, last_ms) = row.unwrap_or((None, None));
            let st = GatewayState { gateway: key.0.clone(), epoch: key.1.clone(), first_ms, last_ms, ranges };
            self.states.insert(key.clone(), (st, row.is_some()));
        }
        Ok(self.states.entry(key).or_default())
    }

    /// Stored sequence ranges of a gateway's queue epoch, sorted.
    pub(super) fn ranges(&mut self, c: &Connection, gateway: &str, epoch: &str) -> rusqlite::Result<Vec<(u64, u64)>> {
        Ok(self.state(c, gateway, epoch)?.0.ranges.clone())
    }

    /// Notes a batch of a gateway's queue epoch stored now; `Some(earlier epochs of the gateway)`
    /// when the epoch is new (a new queue at the gateway), oldest batch first.
    pub(super) fn note_epoch(&mut self, c: &Connection, gateway: &str, epoch: &str, now_ms: i64) -> rusqlite::Result<Option<Vec<String>>> {
        let (st, known) = self.state(c, gateway, epoch)?;
        let was_known = *known;
        st.last_ms = Some(now_ms);
        if !was_known {
            st.first_ms = Some(now_ms);
            *known = true;
        }
        self.touch(gateway, epoch);
        if was_known {
            return Ok(None);
        }
        // The gateway's other epochs: the stored ones, as this writer last changed them.
        let mut others: FxMap<String, Option<i64>> = c
            .prepare_cached("SELECT epoch, last_ms FROM gateway_epochs WHERE gateway = ?1")?
            .query_map([gateway], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<_>>()?;
        for ((g, e), (st, known)) in &self.states {
            if g == gateway && *known {
                others.insert(e.clone(), st.last_ms);
            }
        }
        others.remove(epoch);
        let mut earlier: Vec<(i64, String)> = others.into_iter().map(|(e, t)| (t.unwrap_or(0), e)).collect();
        earlier.sort();
        Ok(Some(earlier.into_iter().map(|(_, e)| e).collect()))
    }

    /// Sets the stored ranges of a gateway's queue epoch.
    pub(super) fn put_ranges(&mut self, c: &Connection, gateway: &str, epoch: &str, merged: Vec<(u64, u64)>) -> rusqlite::Result<()> {
        self.state(c, gateway, epoch)?.0.ranges = merged;
        self.touch(gateway, epoch);
        Ok(())
    }

    fn touch(&mut self, gateway: &str, epoch: &str) {
        let key = (gateway.to_string(), epoch.to_string());
        if !self.group.contains(&key) {
            self.group.push(key.clone());
        }
        self.dirty.insert(key);
    }

    /// The states the open group changed, for its log record; the group's list emptied.
    pub(super) fn take_group(&mut self) -> Vec<GatewayState> {
        std::mem::take(&mut self.group).into_iter().filter_map(|k| self.states.get(&k).map(|s| s.0.clone())).collect()
    }

    /// A state read back from the log (at open, or after a failed group).
    pub(super) fn replay(&mut self, st: GatewayState) {
        let key = (st.gateway.clone(), st.epoch.clone());
        self.dirty.insert(key.clone());
        self.states.insert(key, (st, true));
    }

    /// Forgets everything (the log is read again after).
    pub(super) fn clear(&mut self) {
        *self = Overlay::default();
    }

    pub(super) fn is_dirty(&self) -> bool {
        !self.dirty.is_empty()
    }

    /// Writes the states changed since the last flush, in the flush's transaction.
    pub(super) fn write(&self, c: &Connection) -> rusqlite::Result<()> {
        for key in &self.dirty {
            let Some((st, _)) = self.states.get(key) else { continue };
            put_ranges(c, &st.gateway, &st.epoch, &st.ranges)?;
            c.prepare_cached(
                "INSERT INTO gateway_epochs(gateway, epoch, first_ms, last_ms) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(gateway, epoch) DO UPDATE SET first_ms = excluded.first_ms, last_ms = excluded.last_ms",
            )?
            .execute(params![st.gateway, st.epoch, st.first_ms, st.last_ms])?;
        }
        Ok(())
    }

    /// The flush committed.
    pub(super) fn flushed(&mut self) {
        self.dirty.clear();
    }
}

/// Merges overlapping and adjacent ranges; the result is sorted.
pub(super) fn merge_ranges(mut r: Vec<(u64, u64)>) -> Vec<(u64, u64)> {
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

/// Per gateway, its queue epochs, oldest batch first (the current one last), with their stored
/// sequence ranges.
pub(super) fn read_gateways(c: &Connection) -> rusqlite::Result<Vec<(String, Vec<GatewayEpoch>)>> {
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_merge() {
        assert_eq!(merge_ranges(vec![(5, 9), (1, 3), (4, 4), (20, 21), (21, 25)]), vec![(1, 9), (20, 25)]);
        assert_eq!(merge_ranges(vec![]), vec![]);
    }
}
