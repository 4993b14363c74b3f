//! Gateway sequence numbers (tables `gateway_seq`, `gateway_epochs`): the ranges stored per
//! gateway and queue epoch, used to drop duplicate samples by identity.

use std::collections::HashMap;

use rusqlite::{params, Connection};

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

/// Notes a batch of a gateway's queue epoch stored now; `Some(earlier epochs of the gateway)`
/// when the epoch is new (a new queue at the gateway).
pub(super) fn note_epoch(c: &Connection, gateway: &str, epoch: &str, now_ms: i64) -> rusqlite::Result<Option<Vec<String>>> {
    let known = c.prepare_cached("UPDATE gateway_epochs SET last_ms = ?3 WHERE gateway = ?1 AND epoch = ?2")?.execute(params![gateway, epoch, now_ms])?;
    if known > 0 {
        return Ok(None);
    }
    let earlier = c
        .prepare_cached("SELECT epoch FROM gateway_epochs WHERE gateway = ?1 ORDER BY coalesce(last_ms, 0), epoch")?
        .query_map([gateway], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    c.prepare_cached("INSERT INTO gateway_epochs(gateway, epoch, first_ms, last_ms) VALUES (?1, ?2, ?3, ?3)")?.execute(params![gateway, epoch, now_ms])?;
    Ok(Some(earlier))
}

/// Replaces the stored ranges of a gateway's queue epoch by `merged`.
pub(super) fn put_ranges(c: &Connection, gateway: &str, epoch: &str, merged: &[(u64, u64)]) -> rusqlite::Result<()> {
    c.prepare_cached("DELETE FROM gateway_seq WHERE gateway = ?1 AND epoch = ?2")?.execute([gateway, epoch])?;
    for &(a, z) in merged {
        c.prepare_cached("INSERT INTO gateway_seq(gateway, epoch, start, end) VALUES (?1, ?2, ?3, ?4)")?.execute(params![gateway, epoch, a as i64, z as i64])?;
    }
    Ok(())
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
