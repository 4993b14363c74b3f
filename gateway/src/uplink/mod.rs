//! Uplinks: send queued samples to the daemon and remove them from the queue only when the
//! daemon has confirmed that it stored them.
//!
//! * [`http`]: `POST /api/v1/ingest`; the daemon answers 2xx after its commit.
//! * [`mqtt`]: QoS 1 publishes to `<prefix>/<site>/<gateway>/batch`; the broker's PUBACK is not
//!   enough: the daemon publishes, after its commit, the ranges of sequence numbers it has stored
//!   on `<prefix>/<site>/<gateway>/ack`, to which the gateway subscribes.
//!
//! Both send the oldest unacknowledged samples first, and when a backlog has built up they
//! interleave the newest samples (see [`Lanes`]) so that dashboards stay current while history
//! drains at `backfill_samples_per_second`.

pub mod http;
pub mod mqtt;
pub mod settings;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use energy_wire::{encode_batch, Batch, Sample};
use tokio::sync::Notify;

use crate::metrics::Metrics;
use crate::queue::{lock, Record, SharedQueue};
use crate::time::now_ms;

pub use settings::UplinkConfig;
// The daemon's MQTT ingest retries its broker the way the uplink does, from this path.
pub use crate::backoff::pause_before_retry;

/// State shown by `/status`.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct UplinkStatus {
    pub transport: String,
    pub connected: bool,
    pub last_ack_ms: Option<i64>,
    pub last_error: Option<String>,
    pub acked_through: u64,
}

/// What every uplink shares.
pub struct Common {
    pub cfg: UplinkConfig,
    pub gateway_id: String,
    /// The queue's epoch, sent with every batch (`None`: a queue made before epochs).
    pub epoch: Option<String>,
    pub queue: SharedQueue,
    pub notify: Arc<Notify>,
    pub metrics: Metrics,
    pub status: Arc<Mutex<UplinkStatus>>,
    pub dead_letter_path: std::path::PathBuf,
    /// Ranges of sequence numbers settled above the queue's acknowledged position (stored by
    /// the daemon, or set aside as dead letters), merged and sorted.
    settled: Mutex<Vec<(u64, u64)>>,
}

/// An encoded batch ready to send.
pub struct Outgoing {
    pub batch: Batch,
    pub body: Vec<u8>,
    pub gzipped: bool,
}

impl Common {
    pub fn new(
        cfg: UplinkConfig,
        gateway_id: String,
        queue: SharedQueue,
        notify: Arc<Notify>,
        metrics: Metrics,
        status: Arc<Mutex<UplinkStatus>>,
        dead_letter_path: std::path::PathBuf,
    ) -> Common {
        // Sequence numbers lost to corrupt queue records will never be sent: settled from the
        // start, so that the acknowledged position can pass them.
        let (epoch, lost) = {
            let q = lock(&queue);
            (q.epoch().map(str::to_string), q.lost().to_vec())
        };
        Common { cfg, gateway_id, epoch, queue, notify, metrics, status, dead_letter_path, settled: Mutex::new(lost) }
    }

    pub fn acked(&self) -> u64 {
        lock(&self.queue).acked()
    }

    /// Reads up to `max` records after `after` as a batch; records that do not decode are set
    /// aside as dead letters (and settled) so that they cannot block the queue.
    pub async fn load(&self, after: u64, max: usize) -> Option<Outgoing> {
        let q = self.queue.clone();
        let records: Vec<Record> = match tokio::task::spawn_blocking(move || lock(&q).peek_after(after, max)).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                tracing::error!("cannot read queue: {e}");
                return None;
            }
            Err(_) => return None,
        };
        let first = records.first()?.seq;
        let last = records.last()?.seq;
        let mut samples = Vec::with_capacity(records.len());
        let mut bad = Vec::new();
        for r in &records {
            match serde_json::from_slice::<Sample>(&r.body) {
                Ok(s) => samples.push(s),
                Err(e) => bad.push((r.seq, e.to_string())),
            }
        }
        // The records' bytes are not needed any more: freed before the batch is encoded, so that
        // the two are never in memory together (a 2,000-sample batch is about a megabyte each).
        drop(records);
        let batch = Batch::new(self.gateway_id.clone(), first, samples).with_epoch(self.epoch.clone());
        if !bad.is_empty() {
            self.dead_letter(&batch, 0, &format!("queue records do not decode: {bad:?}"));
            self.settle(first, last).await;
            return None;
        }
        self.update_queue_metrics(batch.samples.iter().map(|s| s.t).min());
        let (body, gzipped) = encode(&batch, self.cfg.compress);
        Some(Outgoing { batch, body, gzipped })
    }

    pub fn dead_letter(&self, batch: &Batch, status: u16, reason: &str) {
        let line = serde_json::json!({ "time_ms": now_ms(), "status": status, "reason": reason, "batch": batch });
        let res = std::fs::OpenOptions::new().create(true).append(true).open(&self.dead_letter_path).and_then(|mut f| {
            f.write_all(format!("{line}\n").as_bytes())?;
            f.sync_data()
        });
        if let Err(e) = res {
            tracing::error!(path = %self.dead_letter_path.display(), "cannot write dead-letter file: {e}");
        }
        self.metrics.dead_letters.inc();
        tracing::error!(seq = batch.seq, samples = batch.samples.len(), status, reason, "daemon rejected a batch; set aside in the dead-letter file");
    }

    /// Marks `first..=last` as settled and advances the queue's acknowledged position over
    /// every contiguous settled range.
    pub async fn settle(&self, first: u64, last: u64) {
        let acked = self.acked();
        let target = {
            let mut s = self.settled.lock().unwrap_or_else(|e| e.into_inner());
            s.push((first, last));
            s.sort_unstable();
            let mut merged: Vec<(u64, u64)> = Vec::with_capacity(s.len());
            for &(a, z) in s.iter() {
                match merged.last_mut() {
                    Some(m) if a <= m.1.saturating_add(1) => m.1 = m.1.max(z),
                    _ => merged.push((a, z)),
                }
            }
            let mut through = acked;
            for &(a, z) in &merged {
                if a <= through + 1 {
                    through = through.max(z);
                }
            }
            merged.retain(|&(_, z)| z > through);
            *s = merged;
            through
        };
        if target > acked {
            self.ack(target).await;
        }
    }

    async fn ack(&self, seq: u64) {
        let q = self.queue.clone();
        match tokio::task::spawn_blocking(move || lock(&q).ack(seq)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!("cannot record acknowledgement: {e}"),
            Err(e) => tracing::error!("ack task failed: {e}"),
        }
        let mut st = self.status.lock().unwrap_or_else(|e| e.into_inner());
        st.last_ack_ms = Some(now_ms());
        st.acked_through = self.acked();
        drop(st);
        self.update_queue_metrics(None);
    }

    pub fn update_queue_metrics(&self, oldest_t: Option<i64>) {
        let q = lock(&self.queue);
        self.metrics.queue_depth.set(q.depth() as i64);
        self.metrics.queue_bytes.set(q.bytes() as i64);
        if let Some(t) = oldest_t {
            self.metrics.queue_oldest_age.set(((now_ms() - t) as f64 / 1000.0).max(0.0));
        } else if q.depth() == 0 {
            self.metrics.queue_oldest_age.set(0.0);
        }
    }

    pub fn set_error(&self, reason: String) {
        self.status.lock().unwrap_or_else(|e| e.into_inner()).last_error = Some(reason);
    }

    /// Connected: an error shown beside it would be stale (it was the reason of an earlier
    /// disconnection), so it is cleared; the log keeps it.
    pub fn set_connected(&self, c: bool) {
        let mut st = self.status.lock().unwrap_or_else(|e| e.into_inner());
        st.connected = c;
        if c {
            st.last_error = None;
        }
    }

    /// Whether every sequence number of `first..=last` is acknowledged or settled.
    pub fn is_settled(&self, first: u64, last: u64) -> bool {
        let acked = self.acked();
        if last <= acked {
            return true;
        }
        let s = self.settled.lock().unwrap_or_else(|e| e.into_inner());
        s.iter().any(|&(a, z)| a <= first.max(acked + 1) && last <= z)
    }

    /// Highest sequence number queued.
    pub fn last_queued(&self) -> u64 {
        lock(&self.queue).next_seq().saturating_sub(1)
    }
}

/// Counts the bytes written through it.
struct Counting<W> {
    inner: W,
    written: usize,
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.written += n;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Encodes a batch, gzipped when that makes it smaller and `compress` is on. With `compress`,
/// the JSON goes straight into the compressor: the uncompressed body (several times the
/// compressed one) is never held in memory, unless compression does not pay.
pub fn encode(batch: &Batch, compress: bool) -> (Vec<u8>, bool) {
    if !compress {
        return (encode_batch(batch), false);
    }
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut w = Counting { inner: gz, written: 0 };
    if serde_json::to_writer(&mut w, batch).is_ok() && w.written >= 512 {
        if let Ok(z) = w.inner.finish() {
            if z.len() < w.written {
                return (z, true);
            }
        }
    }
    (encode_batch(batch), false)
}

/// Which part of the queue to send next. Without a backlog, everything goes in order. With a
/// backlog (more than one batch waiting), the uplink alternates between the newest samples
/// ("live", sent as they come) and the oldest unsent ones ("history"), the latter limited to
/// `rate` samples per second.
pub struct Lanes {
    /// Highest sequence sent in order from the oldest end.
    pub history_through: u64,
    /// Sequence numbers from here on are sent by the live lane; `None` without a backlog.
    pub live_from: Option<u64>,
    pub live_through: u64,
    rate: u64,
    budget: f64,
    last_refill: Instant,
    turn_live: bool,
}

/// The next range to send: `(after, max)` for [`Common::load`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pick {
    pub after: u64,
    pub max: usize,
    pub live: bool,
}

impl Lanes {
    pub fn new(acked: u64, rate: u64) -> Lanes {
        Lanes { history_through: acked, live_from: None, live_through: acked, rate, budget: 0.0, last_refill: Instant::now(), turn_live: true }
    }

    /// Starts over from the acknowledged position (after a reconnect or an ack timeout).
    pub fn reset(&mut self, acked: u64) {
        self.history_through = acked;
        self.live_from = None;
        self.live_through = acked;
    }

    /// Decides what to send given the acknowledged position, the last queued sequence and the
    /// batch size. `None`: nothing to send now (or history must wait for its rate budget).
    pub fn pick(&mut self, acked: u64, last_queued: u64, batch: usize) -> Option<Pick> {
        self.history_through = self.history_through.max(acked);
        let now = Instant::now();
        if self.rate > 0 {
            let dt = now.duration_since(self.last_refill).as_secs_f64();
            self.budget = (self.budget + dt * self.rate as f64).min(self.rate as f64 * 2.0 + batch as f64);
        }
        self.last_refill = now;
        let backlog = last_queued.saturating_sub(self.history_through);
        match self.live_from {
            None if backlog > batch as u64 * 2 && self.rate > 0 => {
                // A backlog: from now on the newest samples go first on the live lane.
                let from = last_queued.saturating_sub(batch as u64 - 1).max(self.history_through + 1);
                self.live_from = Some(from);
                self.live_through = from - 1;
            }
            Some(from) if self.history_through + 1 >= from => {
                // History has caught up with the live lane: one lane again.
                self.history_through = self.history_through.max(self.live_through);
                self.live_from = None;
            }
            _ => {}
        }
        let Some(from) = self.live_from else {
            return (last_queued > self.history_through).then_some(Pick { after: self.history_through, max: batch, live: false });
        };
        let live_waiting = last_queued > self.live_through;
        // History goes in batches of at least a tenth of a second's worth (or what is left
        // before the live lane): a budget spent as it trickles in would make a batch of a few
        // samples per pick, hundreds of batches a second for the same samples.
        let room = (from - 1).saturating_sub(self.history_through) as usize;
        let least = (self.rate as usize / 10).clamp(1, batch).min(room.max(1));
        let history_ok = self.rate == 0 || self.budget >= least as f64;
        let live_turn = self.turn_live || !history_ok;
        self.turn_live = !self.turn_live;
        if live_waiting && live_turn {
            return Some(Pick { after: self.live_through, max: batch, live: true });
        }
        if history_ok {
            let allowed = if self.rate == 0 { batch } else { (self.budget as usize).clamp(1, batch) };
            let max = allowed.min(room);
            if max > 0 {
                return Some(Pick { after: self.history_through, max, live: false });
            }
        }
        live_waiting.then_some(Pick { after: self.live_through, max: batch, live: true })
    }

    /// Records that `first..=last` of `pick` was sent.
    pub fn sent(&mut self, pick: Pick, first: u64, last: u64) {
        if pick.live {
            self.live_through = self.live_through.max(last);
        } else {
            self.history_through = self.history_through.max(last);
            if self.rate > 0 {
                self.budget -= (last + 1 - first) as f64;
            }
        }
    }
}

/// Sleeps until `deadline`, or forever without one.
pub(crate) async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_backlog_everything_goes_in_order() {
        let mut l = Lanes::new(0, 100);
        let p = l.pick(0, 10, 100).unwrap();
        assert_eq!(p, Pick { after: 0, max: 100, live: false });
        l.sent(p, 1, 10);
        assert_eq!(l.pick(0, 10, 100), None);
    }

    #[test]
    fn a_backlog_interleaves_live_and_rate_limited_history() {
        // 10 000 queued, batches of 100, history at 1000 samples/s.
        let mut l = Lanes::new(0, 1000);
        l.budget = 300.0;
        let p = l.pick(0, 10_000, 100).unwrap();
        assert!(p.live, "the newest go first: {p:?}");
        assert_eq!(p.after, 9_900);
        l.sent(p, 9_901, 10_000);
        let p = l.pick(0, 10_000, 100).unwrap();
        assert!(!p.live);
        assert_eq!((p.after, p.max), (0, 100));
        l.sent(p, 1, 100);
        // New samples arrive: live again, then history.
        let p = l.pick(0, 10_050, 100).unwrap();
        assert_eq!((p.after, p.live), (10_000, true));
        l.sent(p, 10_001, 10_050);
        let p = l.pick(0, 10_050, 100).unwrap();
        assert_eq!((p.after, p.live), (100, false));
        l.sent(p, 101, 200);
        // Budget spent (300 - 200 = 100 left, then 0): history waits, live goes on.
        let p = l.pick(0, 10_050, 100).unwrap();
        l.sent(p, 201, 300);
        assert_eq!(l.pick(0, 10_050, 100), None);
    }

    #[test]
    fn history_catching_up_joins_the_lanes() {
        let mut l = Lanes::new(0, 0);
        // rate 0 = unlimited, no separate live lane.
        let p = l.pick(0, 1000, 100).unwrap();
        assert!(!p.live);
        let mut l = Lanes::new(0, 1_000_000);
        l.budget = 1e9;
        let p = l.pick(0, 500, 100).unwrap();
        assert!(p.live);
        l.sent(p, 401, 500);
        let mut through = 0;
        while through < 400 {
            let p = l.pick(0, 500, 100).unwrap();
            assert!(!p.live);
            l.sent(p, p.after + 1, (p.after + p.max as u64).min(400));
            through = l.history_through;
        }
        assert_eq!(l.pick(0, 500, 100), None);
        assert_eq!(l.live_from, None);
    }

    #[test]
    fn compression_only_where_it_pays() {
        let small = Batch::new("g", 1, vec![]);
        assert!(!encode(&small, true).1);
        let samples = (0..100)
            .map(|i| Sample { meter: "m".into(), t: 1_764_288_000_000 + i, v: [(energy_wire::Quantity::ActivePower, i as f64)].into_iter().collect() })
            .collect();
        let big = Batch::new("g", 1, samples);
        let (z, gz) = encode(&big, true);
        assert!(gz && z.len() < encode_batch(&big).len() / 3);
        // What was compressed on the fly is the batch's JSON.
        let mut raw = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&z[..]), &mut raw).unwrap();
        assert_eq!(raw, encode_batch(&big));
        assert!(!encode(&big, false).1);
    }
}
