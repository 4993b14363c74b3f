//! The forwarder: one tokio task that drains the spool (table `outbox`) into InfluxDB.
//!
//! It reads rows in id order until they hold `batch_lines` points or more (up to
//! [`IN_FLIGHT`] times that when the spool holds more), waits up to `flush_interval_ms` for a
//! batch to fill, sends it in requests of at most `batch_lines` lines, up to [`IN_FLIGHT`] at
//! once, retries a failed request with exponential back-off (`retry_min_ms` doubling to
//! `retry_max_ms`) until it succeeds, and only when every request of the round succeeded deletes
//! the rows (a resend after a crash writes the same points again, which InfluxDB keeps once). Data the database refuses
//! as invalid (400, 413) cannot succeed on a resend: it is logged, counted and dropped from the
//! spool (it stays in the local store), so one bad line never blocks the rest.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::config::InfluxConfig;
use super::embedded::Embedded;
use super::influx::{encode, Influx, WriteError};
use crate::metrics::Metrics;

/// Requests sent to InfluxDB at once (one at a time bounded the backend at about a third of a
/// direct write's rate).
const IN_FLIGHT: usize = 4;

/// Runs until `cancel` fires. What is not yet sent stays in the spool for the next start.
pub async fn run(store: Embedded, influx: Arc<Influx>, metrics: Metrics, cancel: CancellationToken) {
    let Some(spool) = store.spool() else { return };
    let cfg = influx.config().clone();
    let batch = cfg.batch_lines.max(1) as u64;
    let flush = Duration::from_millis(cfg.flush_interval_ms);
    let mut after = 0i64;
    let failing = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let backoff = Duration::from_millis(cfg.retry_min_ms);
    loop {
        if cancel.is_cancelled() {
            return;
        }
        let rows = match store.spool_rows(after, batch * IN_FLIGHT as u64).await {
            Ok(r) => r,
            Err(e) => {
                tracing::error!("reading the spool failed: {e}");
                if sleep_or_cancel(&cancel, backoff).await {
                    return;
                }
                continue;
            }
        };
        let now = chrono::Utc::now().timestamp_millis();
        let Some(oldest) = rows.first().map(|r| r.created_ms) else {
            metrics.forward_lag_seconds.set(0.0);
            tokio::select! {
                () = cancel.cancelled() => return,
                () = spool.added.notified() => {}
                () = tokio::time::sleep(flush) => {}
            }
            continue;
        };
        metrics.forward_lag_seconds.set((now - oldest).max(0) as f64 / 1000.0);
        let points: u64 = rows.iter().map(|r| r.points).sum();
        // A partial batch waits for more, up to the flush interval after its oldest row.
        let wait = Duration::from_millis(u64::try_from(oldest + flush.as_millis() as i64 - now).unwrap_or(0));
        if points < batch && !wait.is_zero() {
            tokio::select! {
                () = cancel.cancelled() => return,
                () = tokio::time::sleep(wait) => {}
            }
            continue;
        }
        let text: String = rows.iter().map(|r| r.data.as_str()).collect();
        // Every request of the round must succeed (or be refused as invalid) before its rows
        // leave the spool; a cancelled or failed task keeps them for the next start.
        let mut sends = tokio::task::JoinSet::new();
        let mut sent_all = true;
        for piece in encode::split_lines(&text, batch as usize) {
            let (influx, metrics, cancel, failing, cfg) = (influx.clone(), metrics.clone(), cancel.clone(), failing.clone(), cfg.clone());
            let piece = piece.to_string();
            sends.spawn(async move { send(&influx, &piece, &cfg, &metrics, &cancel, &failing, oldest).await });
            while sends.len() >= IN_FLIGHT {
                if let Some(done) = sends.join_next().await {
                    sent_all &= matches!(done, Ok(true));
                }
            }
        }
        while let Some(done) = sends.join_next().await {
            sent_all &= matches!(done, Ok(true));
        }
        if !sent_all {
            if cancel.is_cancelled() {
                return;
            }
            // A send task failed without being cancelled: the round is sent again.
            tracing::error!("a request to InfluxDB ended abnormally; the round is sent again");
            continue;
        }
        let last = rows.last().map_or(after, |r| r.id);
        match store.spool_forwarded(last).await {
            Ok(()) => {
                after = last;
                metrics.forwarded_points.inc_by(points);
                tracing::debug!(points, spool_bytes = spool.bytes.load(Relaxed), "forwarded to InfluxDB");
            }
            Err(e) => {
                // The rows stay; they are sent again (writes are idempotent) after the back-off.
                tracing::error!("removing forwarded rows from the spool failed: {e}");
                if sleep_or_cancel(&cancel, backoff).await {
                    return;
                }
            }
        }
    }
}

/// Sends one request, retrying with back-off until it succeeds or is refused as invalid; false
/// when cancelled first.
async fn send(influx: &Influx, piece: &str, cfg: &InfluxConfig, metrics: &Metrics, cancel: &CancellationToken, failing: &std::sync::atomic::AtomicBool, oldest: i64) -> bool {
    let mut backoff = Duration::from_millis(cfg.retry_min_ms);
    loop {
        match influx.write(piece).await {
            Ok(()) => {
                if failing.swap(false, Relaxed) {
                    tracing::info!(url = %cfg.url, "InfluxDB accepts writes again; draining the spool");
                }
                return true;
            }
            Err(WriteError::Rejected(e)) => {
                let n = piece.lines().count() as u64;
                tracing::error!(lines = n, "InfluxDB refused a write as invalid (all of it, or part of it in a partial write); not retried, its points stay in the local store: {e}");
                metrics.forward_rejected_lines.inc_by(n);
                return true;
            }
            Err(WriteError::Retry(e)) => {
                if !failing.swap(true, Relaxed) {
                    tracing::warn!(url = %cfg.url, "writing to InfluxDB failed, points stay in the spool and are retried: {e}");
                } else {
                    tracing::debug!("InfluxDB write retry failed: {e}");
                }
                let lag = (chrono::Utc::now().timestamp_millis() - oldest).max(0) as f64 / 1000.0;
                metrics.forward_lag_seconds.set(lag);
                if sleep_or_cancel(cancel, backoff).await {
                    return false;
                }
                backoff = (backoff * 2).min(Duration::from_millis(cfg.retry_max_ms));
            }
        }
    }
}

/// Sleeps; true when cancelled first.
async fn sleep_or_cancel(cancel: &CancellationToken, d: Duration) -> bool {
    tokio::select! {
        () = cancel.cancelled() => true,
        () = tokio::time::sleep(d) => false,
    }
}
