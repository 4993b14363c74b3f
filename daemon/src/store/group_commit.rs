//! The writer thread: it takes every request waiting as one group, applies the group in one
//! transaction (group commit) and hands the answers to the syncer ([`super::syncer`]), which sends
//! them once the WAL is on disk. Between groups it flushes the head when due, seals old days and
//! applies the retention; on a full disk it refuses writes and resumes when space returns.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, RwLock};
use std::time::Instant;

use rusqlite::Connection;

use super::disk::{self, Disk};
use super::error::WriteError;
use super::config::StoreOptions;
use super::fxmap::FxMap;
use super::hooks::CommitHook;
use super::requests::{WriteOp, WriteOutcome, WriteReq};
use super::retention::{prune, PRUNE_EVERY};
use super::syncer::{Durable, Syncer};
use super::writer::{Writer, CHUNKS_PER_PASS, COMPACT_EVERY};
use crate::metrics::Metrics;

/// Most requests taken into one group.
const MAX_GROUP: usize = 256;

/// What the writer thread is given when the store opens.
pub(super) struct WriterParts {
    pub(super) conn: Connection,
    pub(super) rx: Receiver<WriteReq>,
    /// Newest reading time per meter, shared with the handles.
    pub(super) last_seen: Arc<RwLock<HashMap<String, i64>>>,
    pub(super) metrics: Metrics,
    pub(super) options: StoreOptions,
    /// What is kept in each group's transaction besides the points.
    pub(super) hooks: Vec<Box<dyn CommitHook>>,
    pub(super) head_points: Arc<AtomicU64>,
    pub(super) syncer: Syncer,
    pub(super) disk: Arc<Disk>,
    /// The store's log, opened (and read) at open.
    pub(super) log: super::log::Log,
    /// The id of the last log record the flushes cover.
    pub(super) log_position: u64,
}

/// The writer thread's state between groups.
struct WriterThread<'c> {
    w: Writer<'c>,
    conn: &'c Connection,
    rx: Receiver<WriteReq>,
    last_seen: Arc<RwLock<HashMap<String, i64>>>,
    metrics: Metrics,
    options: StoreOptions,
    syncer: Syncer,
    disk: Arc<Disk>,
    /// Groups written, freed by another thread (a string per point).
    dropper: Sender<Vec<WriteOp>>,
    next_disk_look: Instant,
    next_prune: Instant,
    next_compact: Instant,
}

/// Is this a request that writes points (refused on a full disk or after a failed sync)?
fn writes_points(op: &WriteOp) -> bool {
    matches!(op, WriteOp::Batch(_) | WriteOp::Points(..) | WriteOp::Correct(_))
}

/// What the group's commit and the steps after it produced.
struct Applied {
    outs: Vec<WriteOutcome>,
    /// Newest reading time per meter written by the group.
    last: FxMap<String, i64>,
    /// What the answers wait for: the log file, the WAL.
    durable: Durable,
}

/// Runs the writer thread until the channel closes; then flushes the head and checkpoints the WAL.
pub(super) fn run(parts: WriterParts) {
    let WriterParts { conn, rx, last_seen, metrics, options, hooks, head_points, syncer, disk, log, log_position } = parts;
    let mut w = Writer::new(&conn, options, hooks, head_points, metrics.clone());
    w.log = Some(log);
    w.log_position = log_position;
    if disk.is_full() {
        // Started on a full disk: what the log holds waits in the head for space (and gets its
        // change records when it is flushed, as at an ordinary start).
        w.replayed_changes = Some(FxMap::default());
        if let Err(e) = w.load_head() {
            tracing::error!("loading the head failed: {e}");
        }
    }
    let (dropper, dropped) = std::sync::mpsc::channel::<Vec<WriteOp>>();
    if let Err(e) = std::thread::Builder::new().name("store-free".into()).spawn(move || dropped.into_iter().for_each(drop)) {
        tracing::warn!("no thread to free written groups ({e}); the writer frees them");
    }
    let now = Instant::now();
    let mut t = WriterThread { w, conn: &conn, rx, last_seen, metrics, options, syncer, disk, dropper, next_disk_look: now, next_prune: now, next_compact: now };
    loop {
        t.housekeeping();
        let first = match t.wait() {
            Ok(Some(first)) => first,
            Ok(None) => continue,
            Err(()) => break,
        };
        let group = t.take_group(first);
        let Some(group) = t.admit(group) else { continue };
        #[cfg(test)]
        if group.iter().any(|r| matches!(r.op, WriteOp::Crash)) {
            // Tests: stop as a crash would, without flushing the head.
            for req in group {
                let _ = req.reply.send(Ok(WriteOutcome::default()));
            }
            return;
        }
        t.commit_group(group);
    }
    t.shut_down();
}

impl WriterThread<'_> {
    /// Between groups: resume after a full disk, seal due days, apply the retention.
    fn housekeeping(&mut self) {
        if self.disk.is_full() && Instant::now() >= self.next_disk_look {
            self.next_disk_look = Instant::now() + disk::CHECK_EVERY;
            try_resume(&mut self.w, &self.disk);
        }
        // Sealing and the retention write too: not while the disk is full.
        if !self.disk.is_full() && Instant::now() >= self.next_compact {
            self.seal_due_days();
        }
        if !self.disk.is_full() && Instant::now() >= self.next_prune {
            self.apply_retention();
        }
    }

    /// One background sealing pass.
    fn seal_due_days(&mut self) {
        self.next_compact = Instant::now() + COMPACT_EVERY;
        match self.w.compact_pass(self.options.seal_after_ms, false) {
            Ok(done) => {
                self.metrics.points_sealed.inc_by(done.points);
                if done.chunks as usize >= CHUNKS_PER_PASS {
                    // More to do: another pass right after the next group of writes.
                    self.next_compact = Instant::now();
                }
            }
            Err(e) if disk::is_disk_full(&e, self.disk.look()) => self.disk.set_full(&format!("sealing raw points into chunks: {e}")),
            Err(e) => tracing::error!("sealing raw points into chunks failed: {e}"),
        }
    }

    /// Deletes what is older than the retention (the head flushed first).
    fn apply_retention(&mut self) {
        let (conn, options) = (self.conn, self.options);
        let w = &mut self.w;
        let pruned = w.flush_head().and_then(|()| {
            w.day_cache.clear();
            prune(conn, options, chrono::Utc::now().timestamp_millis())
        });
        match pruned {
            Ok(n) => {
                self.metrics.points_pruned.inc_by(n);
                self.metrics.store_points.sub(n as i64);
                if n > 0 {
                    tracing::info!(points = n, "raw points older than the retention deleted");
                }
            }
            Err(e) => tracing::error!("applying the retention failed: {e}"),
        }
        self.next_prune = Instant::now() + PRUNE_EVERY;
    }

    /// Waits for a request until the next timed task; flushes the head when it is due meanwhile.
    /// `Ok(None)`: time for the timed tasks; `Err`: the channel closed.
    fn wait(&mut self) -> Result<Option<WriteReq>, ()> {
        let mut wake = self.next_prune.min(self.next_compact);
        if let Some(t) = self.w.head.since {
            wake = wake.min(t + self.w.head_max_age);
        }
        if self.disk.is_full() {
            wake = wake.min(self.next_disk_look);
        }
        match self.rx.recv_timeout(wake.saturating_duration_since(Instant::now())) {
            Ok(r) => Ok(Some(r)),
            Err(RecvTimeoutError::Timeout) => {
                if self.w.head_due() && !self.disk.is_full() {
                    self.flush_or_mark_full();
                }
                Ok(None)
            }
            Err(RecvTimeoutError::Disconnected) => Err(()),
        }
    }

    /// Flushes the head; a full disk makes the store read-only.
    fn flush_or_mark_full(&mut self) {
        match self.w.flush_head() {
            Ok(()) => {}
            Err(e) if disk::is_disk_full(&e, self.disk.look()) => self.disk.set_full(&format!("flushing the head: {e}")),
            Err(e) => tracing::error!("flushing the head failed: {e}"),
        }
    }

    /// The first request and every one waiting behind it, up to [`MAX_GROUP`].
    fn take_group(&self, first: WriteReq) -> Vec<WriteReq> {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match self.rx.try_recv() {
                Ok(r) => group.push(r),
                Err(_) => break,
            }
        }
        group
    }

    /// Answers the requests that cannot be applied now (a full disk, a failed WAL sync) and puts
    /// the rest in order; `None` when nothing is left.
    fn admit(&mut self, mut group: Vec<WriteReq>) -> Option<Vec<WriteReq>> {
        // Free space under the floor: read-only before anything is written.
        if !self.disk.is_full() && Instant::now() >= self.next_disk_look && group.iter().any(|r| writes_points(&r.op)) {
            self.next_disk_look = Instant::now() + disk::CHECK_EVERY;
            let free = self.disk.look();
            if self.disk.low(free) {
                self.disk.set_full(&format!("{} bytes free", free.unwrap_or(0)));
            }
        }
        // The disk full: writes are refused and reads are not held up by a flush (they answer
        // from what is flushed); the rest goes on.
        if self.disk.is_full() {
            let (refused, rest): (Vec<WriteReq>, Vec<WriteReq>) = group.into_iter().partition(|r| writes_points(&r.op) || matches!(r.op, WriteOp::Flush | WriteOp::Compact));
            for req in refused {
                let answer = if matches!(req.op, WriteOp::Flush) { Ok(WriteOutcome::default()) } else { Err(WriteError::DiskFull(self.disk.reason())) };
                let _ = req.reply.send(answer);
            }
            group = rest;
        }
        // After a failed WAL sync, writes are refused (reads and the rest go on).
        if let Some(msg) = self.syncer.failure() {
            let (refused, rest): (Vec<WriteReq>, Vec<WriteReq>) = group.into_iter().partition(|r| writes_points(&r.op));
            for req in refused {
                let _ = req.reply.send(Err(WriteError::SyncFailed(msg.clone())));
            }
            group = rest;
        }
        if group.is_empty() {
            return None;
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
        Some(group)
    }

    /// Applies a group in one transaction, then flushes and seals when asked, and answers.
    fn commit_group(&mut self, group: Vec<WriteReq>) {
        let started = Instant::now();
        self.w.now = started;
        self.w.memo_at = (0, 0);
        self.w.now_ms = chrono::Utc::now().timestamp_millis();
        let result = self.apply(&group);
        self.metrics.store_commit_seconds.observe(started.elapsed().as_secs_f64());
        self.w.head_points.store(self.w.head.points, Ordering::Release);
        self.metrics.head_points.set(self.w.head.points as i64);
        let result = result.and_then(|applied| self.flush_if_asked(&group, applied)).and_then(|applied| self.seal_if_asked(&group, applied));
        match result {
            Ok(applied) => self.answer(group, applied),
            Err(e) => self.recover(group, &e),
        }
    }

    /// The group's transaction: every request applied, then what the per-commit hooks keep
    /// (change records, spool rows), handed the open transaction; the group's log record (its
    /// new points, the gateway ranges it changed, the series it added) appended before the
    /// commit. A failed statement or append fails the whole group (a record appended is taken
    /// back when the commit fails); every request of the group then gets the error and its
    /// sender retries (nothing is half-written).
    fn apply(&mut self, group: &[WriteReq]) -> rusqlite::Result<Applied> {
        let conn = self.conn;
        let w = &mut self.w;
        // A correction reads and replaces the stored reading: the head goes to the tables first
        // (its own transaction).
        if group.iter().any(|r| matches!(r.op, WriteOp::Correct(_))) {
            w.flush_head()?;
        }
        let changes_before = conn.total_changes();
        let tx = conn.unchecked_transaction()?;
        let mut outs = Vec::with_capacity(group.len());
        let mut last: FxMap<String, i64> = FxMap::default();
        for req in group {
            let mut out = WriteOutcome::default();
            w.apply(&req.op, &mut out, &mut last)?;
            outs.push(out);
        }
        w.finish_group()?;
        for h in &mut w.hooks {
            h.before_commit(&tx, group)?;
        }
        let logged = w.log_group()?;
        // Rows changed in the transaction (conflicts, change records, corrections, spool rows,
        // new series): the answers wait for the WAL's sync too.
        let wal = conn.total_changes() != changes_before;
        if let Err(e) = tx.commit() {
            if let Some(len) = logged {
                w.unlog_group(len);
            }
            return Err(e);
        }
        for h in &mut w.hooks {
            h.committed();
        }
        let log = match (logged, &w.log) {
            (Some(_), Some(l)) => Some((l.file(), l.path().to_path_buf())),
            _ => None,
        };
        Ok(Applied { outs, last, durable: Durable { log, wal } })
    }

    /// A read waiting, or the head full or old: flush it before answering. On a full disk the
    /// group stands (its commit is durable, its points stay in the head and the log) and the
    /// reads waiting answer from what is flushed.
    fn flush_if_asked(&mut self, group: &[WriteReq], applied: Applied) -> rusqlite::Result<Applied> {
        let wants_flush = group.iter().any(|r| matches!(r.op, WriteOp::Flush));
        if (wants_flush || self.w.head_due()) && !self.disk.is_full() {
            match self.w.flush_head() {
                Ok(()) => {}
                Err(e) if disk::is_disk_full(&e, self.disk.look()) => self.disk.set_full(&format!("flushing the head: {e}")),
                Err(e) => return Err(e),
            }
        }
        Ok(applied)
    }

    /// Compaction asked for: every day due is sealed before the answer.
    fn seal_if_asked(&mut self, group: &[WriteReq], mut applied: Applied) -> rusqlite::Result<Applied> {
        if !group.iter().any(|r| matches!(r.op, WriteOp::Compact)) {
            return Ok(applied);
        }
        let mut sealed = 0;
        loop {
            let done = self.w.compact_pass(self.options.seal_after_ms, true)?;
            sealed += done.points;
            if done.chunks == 0 {
                break;
            }
        }
        self.metrics.points_sealed.inc_by(sealed);
        // Give the freed pages back and fold the WAL into the database file.
        let mut vacuum = self.conn.prepare("PRAGMA incremental_vacuum")?;
        let mut rows = vacuum.query([])?;
        while rows.next()?.is_some() {}
        self.conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
        for (o, req) in applied.outs.iter_mut().zip(group) {
            if matches!(req.op, WriteOp::Compact) {
                o.points_sealed = sealed;
            }
        }
        Ok(applied)
    }

    /// The group committed: counts it, and answers (writes once the WAL is on disk).
    fn answer(&mut self, group: Vec<WriteReq>, applied: Applied) {
        let durable = group.iter().any(|r| writes_points(&r.op));
        {
            let mut ls = self.last_seen.write().unwrap_or_else(|e| e.into_inner());
            for (m, t) in applied.last {
                let e = ls.entry(m).or_insert(t);
                *e = (*e).max(t);
            }
        }
        let mut ops = Vec::with_capacity(group.len());
        let mut replies = Vec::with_capacity(group.len());
        for (WriteReq { op, reply }, out) in group.into_iter().zip(applied.outs) {
            self.metrics.store_points.add(out.points_written as i64);
            self.metrics.points_written.inc_by(out.points_written);
            self.metrics.points_conflicting.inc_by(out.points_conflicting);
            self.metrics.points_unchanged.inc_by(out.points_unchanged);
            self.metrics.samples_duplicate.inc_by(out.samples_duplicate);
            replies.push((reply, Ok(out)));
            ops.push(op);
        }
        // Writes are answered once the WAL is on disk; the rest (reads waiting for a flush,
        // sealing, change records and spool rows forgotten) needs no promise.
        if durable {
            self.syncer.answer_when_durable(replies, applied.durable);
        } else {
            for (reply, out) in replies {
                let _ = reply.send(out);
            }
        }
        // Freeing a group's points (a string per point) is left to another thread.
        if let Err(back) = self.dropper.send(ops) {
            drop(back.0);
        }
    }

    /// The group failed: what the writer holds in memory is reloaded from what is committed,
    /// and every request of the group gets the error.
    fn recover(&mut self, group: Vec<WriteReq>, e: &rusqlite::Error) {
        let w = &mut self.w;
        // The series cache may hold ids of rolled-back rows, and the head points of the
        // rolled-back group: reload it from what is committed.
        w.series.clear();
        w.next_series = None;
        w.memo = (String::new(), Vec::new());
        w.memo_at = (0, 0);
        w.stale_hours.clear();
        if let Err(e) = w.load_head() {
            tracing::error!("reloading the head after a failed commit failed: {e}");
        }
        for h in &mut w.hooks {
            h.rolled_back(self.conn);
        }
        // The transaction was rolled back: on a full disk nothing of it stays (SQLite writes the
        // next transaction's WAL frames over the rolled-back ones).
        let error = if disk::is_disk_full(e, self.disk.look()) {
            self.disk.set_full(&e.to_string());
            WriteError::DiskFull(self.disk.reason())
        } else {
            tracing::error!("store commit failed: {e}");
            WriteError::Commit(e.to_string())
        };
        for req in group {
            let _ = req.reply.send(Err(error.clone()));
        }
    }

    /// Channel closed: flush the head and checkpoint the WAL, so that the database file is
    /// complete on its own.
    fn shut_down(mut self) {
        if let Err(e) = self.w.flush_head() {
            tracing::warn!("flushing the head at shutdown failed (it stays in the store's log): {e}");
        }
        if let Err(e) = self.conn.pragma_update(None, "wal_checkpoint", "TRUNCATE") {
            tracing::warn!("WAL checkpoint at shutdown failed: {e}");
        }
        self.syncer.stop();
    }
}

/// On a full disk: when there is space again, flushes the head (what was acknowledged before
/// the disk filled, or found in the log at start) and resumes writing. A flush that fails
/// again is rolled back whole, and its WAL frames are written over by the next attempt.
fn try_resume(w: &mut Writer<'_>, disk: &Disk) {
    if !disk.enough_to_resume(disk.look()) {
        return;
    }
    match w.flush_head() {
        Ok(()) => disk.set_ok(),
        Err(e) if disk::is_disk_full(&e, disk.look()) => tracing::debug!("the head still does not fit: {e}"),
        Err(e) => {
            // Not the disk: writing resumes and the error shows where it belongs.
            tracing::error!("flushing the head failed: {e}");
            disk.set_ok();
        }
    }
}
