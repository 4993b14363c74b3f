//! The HTTP uplink: `POST /api/v1/ingest`, one batch at a time; the daemon's 2xx (sent after its
//! commit) acknowledges it.
//!
//! Responses: 2xx acknowledges the batch. 400 and 422 mean the daemon will never accept the batch:
//! it is appended to `dead-letter.jsonl` in the queue directory with the daemon's reason and then
//! settled, so that it cannot block the queue (it is never silently dropped). 413 halves the
//! batch size. Anything else (401, 403, 404, 429, 5xx, network errors) is retried with
//! exponential back-off and jitter; the reason is logged and counted: a 507 (the daemon's disk
//! is full) keeps the batch queued until the daemon has space again, never dead-lettered. An
//! answer with `Retry-After: <seconds>` (429, 503, 507) waits that long instead (at most
//! `retry_max_ms`, at least the back-off).

use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::{sleep_until_opt, Common, Lanes, Outgoing, Pick};
use crate::backoff::jittered;

enum Outcome {
    Acked,
    Rejected(u16, String),
    TooLarge,
    /// The reason, and the daemon's `Retry-After` if it gave one.
    Retry(String, Option<Duration>),
}

/// `Retry-After` in seconds (the HTTP-date form is not used by energyd and is ignored).
fn retry_after(h: &reqwest::header::HeaderMap) -> Option<Duration> {
    h.get("retry-after")?.to_str().ok()?.trim().parse::<u64>().ok().map(Duration::from_secs)
}

async fn post(c: &Common, client: &reqwest::Client, token: Option<&str>, out: &Outgoing) -> Outcome {
    let mut req = client
        .post(&c.cfg.url)
        .header("content-type", "application/json")
        .timeout(Duration::from_millis(c.cfg.timeout_ms))
        .body(out.body.clone());
    if out.gzipped {
        req = req.header("content-encoding", "gzip");
    }
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    match req.send().await {
        Err(e) => Outcome::Retry(format!("cannot reach {}: {e}", c.cfg.url), None),
        Ok(resp) => {
            let status = resp.status().as_u16();
            let wait = retry_after(resp.headers());
            let body = resp.text().await.unwrap_or_default();
            outcome(status, body, wait)
        }
    }
}

/// What an answer means for the batch. Only 400 and 422 set it aside (the daemon will never
/// take it); 507 (the daemon's disk is full), 503 and every other status are retried, after
/// `Retry-After` when given.
fn outcome(status: u16, body: String, wait: Option<Duration>) -> Outcome {
    match status {
        200..=299 => Outcome::Acked,
        400 | 422 => Outcome::Rejected(status, body),
        413 => Outcome::TooLarge,
        _ => Outcome::Retry(format!("daemon answered {status}: {}", body.chars().take(300).collect::<String>()), wait),
    }
}

/// Runs until cancelled; then keeps sending for at most `drain_on_shutdown_ms`.
pub async fn run(c: Common, cancel: CancellationToken) {
    let Some((client, token)) = http_client(&c) else { return };
    {
        let mut st = c.status.lock().unwrap_or_else(|e| e.into_inner());
        st.transport = "http".into();
        st.acked_through = c.acked();
    }
    let mut s = Sending { max_samples: c.cfg.batch_max_samples, backoff: Duration::from_millis(100), lanes: Lanes::new(c.acked(), c.cfg.backfill_samples_per_second) };
    let mut drain_deadline: Option<Instant> = None;
    loop {
        if cancel.is_cancelled() && drain_deadline.is_none() {
            drain_deadline = Some(Instant::now() + Duration::from_millis(c.cfg.drain_on_shutdown_ms));
        }
        if drain_deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        let acked = c.acked();
        let last = c.last_queued();
        let Some(pick) = s.lanes.pick(acked, last, s.max_samples) else {
            c.update_queue_metrics(None);
            if drain_deadline.is_some() && last <= acked {
                break;
            }
            tokio::select! {
                () = c.notify.notified() => {}
                () = cancel.cancelled(), if drain_deadline.is_none() => {}
                () = tokio::time::sleep(Duration::from_millis(200)) => {}
            }
            continue;
        };
        // Let a batch fill up when only a few samples wait and nothing is behind.
        if drain_deadline.is_none() && !pick.live && last.saturating_sub(pick.after) < s.max_samples as u64 && c.cfg.batch_max_delay_ms > 0 {
            tokio::select! {
                () = tokio::time::sleep(Duration::from_millis(c.cfg.batch_max_delay_ms)) => {}
                () = cancel.cancelled() => {}
            }
        }
        let Some(out) = c.load(pick.after, pick.max).await else { continue };
        let started = Instant::now();
        let outcome = tokio::select! {
            o = post(&c, &client, token.as_deref(), &out) => o,
            () = sleep_until_opt(drain_deadline) => break,
        };
        c.metrics.uplink_latency.observe(started.elapsed().as_secs_f64());
        s.take(&c, outcome, &out, pick, &cancel, drain_deadline.is_some()).await;
    }
    let depth = crate::queue::lock(&c.queue).depth();
    if depth > 0 {
        tracing::info!(depth, "uplink stopped; unsent samples stay queued on disk");
    }
}

/// The HTTP client (with the CA file for `https://`) and the bearer token; `None` (logged and
/// shown in `/status`) when either cannot be had.
fn http_client(c: &Common) -> Option<(reqwest::Client, Option<String>)> {
    crate::tls::install_crypto_provider();
    let mut builder = reqwest::Client::builder();
    if c.cfg.url.starts_with("https://") {
        match crate::tls::client_config(c.cfg.ca_file.as_deref()) {
            Ok(tls) => builder = builder.use_preconfigured_tls(tls),
            Err(e) => {
                tracing::error!("uplink TLS: {e}");
                c.set_error(e);
                return None;
            }
        }
    }
    let token = match c.cfg.token() {
        Ok(t) => t,
        Err(e) => {
            tracing::error!("uplink: {e}");
            c.set_error(e);
            return None;
        }
    };
    match builder.build() {
        Ok(cl) => Some((cl, token)),
        Err(e) => {
            tracing::error!("cannot build HTTP client: {e}");
            None
        }
    }
}

/// What the sender adapts from answer to answer: the batch size (halved when the daemon finds
/// a batch too large), the back-off of retries, and the lanes.
struct Sending {
    max_samples: usize,
    backoff: Duration,
    lanes: Lanes,
}

impl Sending {
    /// Acts on the daemon's answer to the batch `out`: settles it (stored, or set aside as a
    /// dead letter), halves the batch size, or waits before the retry.
    async fn take(&mut self, c: &Common, outcome: Outcome, out: &Outgoing, pick: Pick, cancel: &CancellationToken, draining: bool) {
        let (first, last_seq) = (out.batch.seq, out.batch.last_seq());
        match outcome {
            Outcome::Acked => {
                c.set_connected(true);
                c.metrics.uplink_batches.with_label_values(&["acked"]).inc();
                c.metrics.uplink_samples.inc_by(out.batch.samples.len() as u64);
                self.lanes.sent(pick, first, last_seq);
                c.settle(first, last_seq).await;
                self.backoff = Duration::from_millis(100);
                self.max_samples = c.cfg.batch_max_samples;
            }
            Outcome::Rejected(status, reason) => {
                c.metrics.uplink_batches.with_label_values(&["rejected"]).inc();
                c.dead_letter(&out.batch, status, &reason);
                self.lanes.sent(pick, first, last_seq);
                c.settle(first, last_seq).await;
            }
            Outcome::TooLarge if out.batch.samples.len() > 1 => {
                c.metrics.uplink_batches.with_label_values(&["too_large"]).inc();
                self.max_samples = (out.batch.samples.len() / 2).max(1);
                tracing::warn!(max_samples = self.max_samples, "daemon refused the batch as too large; halving the batch size");
            }
            Outcome::TooLarge => {
                c.metrics.uplink_batches.with_label_values(&["rejected"]).inc();
                c.dead_letter(&out.batch, 413, "a single sample is larger than the daemon's body limit");
                self.lanes.sent(pick, first, last_seq);
                c.settle(first, last_seq).await;
            }
            Outcome::Retry(reason, retry_after) => {
                c.set_connected(false);
                c.metrics.uplink_batches.with_label_values(&["retry"]).inc();
                let wait = match retry_after {
                    Some(d) => d.min(Duration::from_millis(c.cfg.retry_max_ms)).max(self.backoff),
                    None => jittered(self.backoff),
                };
                tracing::warn!(seq = first, "uplink failed, will retry in {} ms: {reason}", wait.as_millis());
                c.set_error(reason);
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    () = cancel.cancelled(), if !draining => {}
                }
                self.backoff = (self.backoff * 2).min(Duration::from_millis(c.cfg.retry_max_ms));
            }
        }
    }
}

#[cfg(test)]
mod retry_tests {
    use super::*;

    #[test]
    fn a_full_disk_is_retried_never_set_aside() {
        let full = r#"{"error":"the disk holding the store is full (0 bytes free ...): nothing was stored; retry later"}"#;
        match outcome(507, full.into(), Some(Duration::from_secs(30))) {
            Outcome::Retry(reason, wait) => {
                assert!(reason.contains("507") && reason.contains("disk holding the store is full"), "{reason}");
                assert_eq!(wait, Some(Duration::from_secs(30)));
            }
            _ => panic!("507 must be retried"),
        }
        assert!(matches!(outcome(503, String::new(), None), Outcome::Retry(_, None)));
        assert!(matches!(outcome(500, String::new(), None), Outcome::Retry(..)));
        assert!(matches!(outcome(400, "bad".into(), None), Outcome::Rejected(400, _)));
        assert!(matches!(outcome(204, String::new(), None), Outcome::Acked));
    }

    #[test]
    fn retry_after_in_seconds() {
        let mut h = reqwest::header::HeaderMap::new();
        assert_eq!(retry_after(&h), None);
        h.insert("retry-after", "3".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(3)));
        h.insert("retry-after", "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap());
        assert_eq!(retry_after(&h), None);
    }
}
