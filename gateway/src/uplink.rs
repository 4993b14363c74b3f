//! The HTTP uplink: sends queued samples to the daemon's `POST /api/v1/ingest` in batches and
//! removes them from the queue only after the daemon's 2xx, which it sends after its commit.
//!
//! Responses: 2xx acknowledges the batch. 400 and 422 mean the daemon will never accept the batch:
//! it is appended to `dead-letter.jsonl` in the queue directory with the daemon's reason and then
//! acknowledged, so that it cannot block the queue (it is never silently dropped). 413 halves the
//! batch size. Anything else (401, 403, 404, 429, 5xx, network errors) is retried with
//! exponential back-off and jitter; the reason is logged and counted.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use energy_wire::{encode_batch, Batch, Sample};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::config::UplinkConfig;
use crate::metrics::Metrics;
use crate::poll::now_ms;
use crate::queue::{Queue, Record};

/// State shown by `/status`.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct UplinkStatus {
    pub last_ack_ms: Option<i64>,
    pub last_error: Option<String>,
    pub acked_through: u64,
}

pub type SharedQueue = Arc<Mutex<Queue>>;

fn lock(q: &SharedQueue) -> std::sync::MutexGuard<'_, Queue> {
    q.lock().unwrap_or_else(|e| e.into_inner())
}

enum Outcome {
    Acked,
    Rejected(u16, String),
    TooLarge,
    Retry(String),
}

pub struct Uplink {
    pub cfg: UplinkConfig,
    pub gateway_id: String,
    pub queue: SharedQueue,
    pub notify: Arc<Notify>,
    pub metrics: Metrics,
    pub status: Arc<Mutex<UplinkStatus>>,
    pub dead_letter_path: std::path::PathBuf,
}

impl Uplink {
    async fn post(&self, client: &reqwest::Client, batch: &Batch) -> Outcome {
        let mut req = client
            .post(&self.cfg.url)
            .header("content-type", "application/json")
            .timeout(Duration::from_millis(self.cfg.timeout_ms))
            .body(encode_batch(batch));
        if let Some(t) = &self.cfg.token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        match req.send().await {
            Err(e) => Outcome::Retry(format!("cannot reach {}: {e}", self.cfg.url)),
            Ok(resp) => {
                let status = resp.status().as_u16();
                let body = resp.text().await.unwrap_or_default();
                match status {
                    200..=299 => Outcome::Acked,
                    400 | 422 => Outcome::Rejected(status, body),
                    413 => Outcome::TooLarge,
                    _ => Outcome::Retry(format!("daemon answered {status}: {}", body.chars().take(300).collect::<String>())),
                }
            }
        }
    }

    fn dead_letter(&self, batch: &Batch, status: u16, reason: &str) {
        let line = serde_json::json!({ "time_ms": now_ms(), "status": status, "reason": reason, "batch": batch });
        let res = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.dead_letter_path)
            .and_then(|mut f| {
                f.write_all(format!("{line}\n").as_bytes())?;
                f.sync_data()
            });
        if let Err(e) = res {
            tracing::error!(path = %self.dead_letter_path.display(), "cannot write dead-letter file: {e}");
        }
        self.metrics.dead_letters.inc();
        tracing::error!(seq = batch.seq, samples = batch.samples.len(), status, reason, "daemon rejected a batch; set aside in the dead-letter file");
    }

    async fn ack(&self, seq: u64) {
        let q = self.queue.clone();
        let res = tokio::task::spawn_blocking(move || lock(&q).ack(seq)).await;
        match res {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!("cannot record acknowledgement: {e}"),
            Err(e) => tracing::error!("ack task failed: {e}"),
        }
        let mut st = self.status.lock().unwrap_or_else(|e| e.into_inner());
        st.last_ack_ms = Some(now_ms());
        st.acked_through = seq;
    }

    fn update_queue_metrics(&self, oldest_t: Option<i64>) {
        let q = lock(&self.queue);
        self.metrics.queue_depth.set(q.depth() as i64);
        self.metrics.queue_bytes.set(q.bytes() as i64);
        let age = oldest_t.map_or(0.0, |t| ((now_ms() - t) as f64 / 1000.0).max(0.0));
        self.metrics.queue_oldest_age.set(age);
    }

    /// Runs until cancelled; then keeps sending for at most `drain_on_shutdown_ms`.
    pub async fn run(self, cancel: CancellationToken) {
        let client = match reqwest::Client::builder().build() {
            Ok(c) => c,
            Err(e) => {
                tracing::error!("cannot build HTTP client: {e}");
                return;
            }
        };
        let mut max_samples = self.cfg.batch_max_samples;
        let mut backoff = Duration::from_millis(100);
        let mut drain_deadline: Option<Instant> = None;
        loop {
            if cancel.is_cancelled() && drain_deadline.is_none() {
                drain_deadline = Some(Instant::now() + Duration::from_millis(self.cfg.drain_on_shutdown_ms));
            }
            if drain_deadline.is_some_and(|d| Instant::now() >= d) {
                break;
            }
            let q = self.queue.clone();
            let n = max_samples;
            let records: Vec<Record> = match tokio::task::spawn_blocking(move || lock(&q).peek(n)).await {
                Ok(Ok(r)) => r,
                Ok(Err(e)) => {
                    tracing::error!("cannot read queue: {e}");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
                Err(_) => continue,
            };
            if records.is_empty() {
                self.update_queue_metrics(None);
                if drain_deadline.is_some() {
                    break;
                }
                tokio::select! {
                    () = self.notify.notified() => {}
                    () = cancel.cancelled() => {}
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
                continue;
            }
            let first_seq = records[0].seq;
            let last_seq = records[records.len() - 1].seq;
            let mut samples = Vec::with_capacity(records.len());
            let mut bad = Vec::new();
            for r in &records {
                match serde_json::from_slice::<Sample>(&r.body) {
                    Ok(s) => samples.push(s),
                    Err(e) => bad.push((r.seq, e.to_string())),
                }
            }
            if !bad.is_empty() {
                // A record that does not decode cannot be sent; set the whole run aside.
                let b = Batch::new(self.gateway_id.clone(), first_seq, samples);
                self.dead_letter(&b, 0, &format!("queue records do not decode: {bad:?}"));
                self.ack(last_seq).await;
                continue;
            }
            let oldest_t = samples.iter().map(|s| s.t).min();
            self.update_queue_metrics(oldest_t);
            let batch = Batch::new(self.gateway_id.clone(), first_seq, samples);
            let started = Instant::now();
            let outcome = tokio::select! {
                o = self.post(&client, &batch) => o,
                () = async { match drain_deadline { Some(d) => tokio::time::sleep_until(d.into()).await, None => std::future::pending().await } } => break,
            };
            self.metrics.uplink_latency.observe(started.elapsed().as_secs_f64());
            match outcome {
                Outcome::Acked => {
                    self.metrics.uplink_batches.with_label_values(&["acked"]).inc();
                    self.metrics.uplink_samples.inc_by(batch.samples.len() as u64);
                    self.ack(last_seq).await;
                    backoff = Duration::from_millis(100);
                    max_samples = self.cfg.batch_max_samples;
                }
                Outcome::Rejected(status, reason) => {
                    self.metrics.uplink_batches.with_label_values(&["rejected"]).inc();
                    self.dead_letter(&batch, status, &reason);
                    self.ack(last_seq).await;
                }
                Outcome::TooLarge if batch.samples.len() > 1 => {
                    self.metrics.uplink_batches.with_label_values(&["too_large"]).inc();
                    max_samples = (batch.samples.len() / 2).max(1);
                    tracing::warn!(max_samples, "daemon refused the batch as too large; halving the batch size");
                }
                Outcome::TooLarge => {
                    self.metrics.uplink_batches.with_label_values(&["rejected"]).inc();
                    self.dead_letter(&batch, 413, "a single sample is larger than the daemon's body limit");
                    self.ack(last_seq).await;
                }
                Outcome::Retry(reason) => {
                    self.metrics.uplink_batches.with_label_values(&["retry"]).inc();
                    tracing::warn!(seq = first_seq, "uplink failed, will retry in {} ms: {reason}", backoff.as_millis());
                    self.status.lock().unwrap_or_else(|e| e.into_inner()).last_error = Some(reason);
                    // Full jitter: sleep a random share of the back-off, from the clock's low bits.
                    let jitter = 0.5 + f64::from(now_ms().rem_euclid(1000) as u32) / 2000.0;
                    let sleep = backoff.mul_f64(jitter);
                    tokio::select! {
                        () = tokio::time::sleep(sleep) => {}
                        () = cancel.cancelled(), if drain_deadline.is_none() => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_millis(self.cfg.retry_max_ms));
                }
            }
        }
        let depth = lock(&self.queue).depth();
        if depth > 0 {
            tracing::info!(depth, "uplink stopped; unsent samples stay queued on disk");
        }
    }
}
