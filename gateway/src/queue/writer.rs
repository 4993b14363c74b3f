//! The queue writer: a thread that takes the pollers' samples from a channel, appends them under
//! the full-queue policy ([`super::full`]), syncs after every group (a sample is durable within
//! milliseconds of its poll), and wakes the uplink.

use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;

use energy_wire::Sample;
use tokio::sync::{mpsc, Notify};

use super::durable::Queue;
use super::segment::QueueError;
use super::full::{reserve_limit, Thinner, WhenFull};
use crate::metrics::Metrics;

/// The queue as the writer and the uplink share it.
pub type SharedQueue = Arc<Mutex<Queue>>;

/// Locks the shared queue (a panic elsewhere does not make it unusable).
pub fn lock(q: &SharedQueue) -> MutexGuard<'_, Queue> {
    q.lock().unwrap_or_else(|e| e.into_inner())
}

/// Starts the writer thread. It runs until every sender of `rx` is dropped, then returns after
/// its last sync.
pub fn spawn(
    mut rx: mpsc::Receiver<Sample>,
    queue: SharedQueue,
    notify: Arc<Notify>,
    metrics: Metrics,
    when_full: WhenFull,
    thin_period_ms: u64,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new().name("queue-writer".into()).spawn(move || {
        let mut thinner = Thinner::new(thin_period_ms);
        while let Some(first) = rx.blocking_recv() {
            let mut q = lock(&queue);
            let mut next = Some(first);
            while let Some(s) = next {
                write_sample(&mut q, &s, when_full, &mut thinner, &metrics);
                next = rx.try_recv().ok();
            }
            if let Err(e) = q.sync() {
                tracing::error!("queue sync failed: {e}");
            }
            metrics.queue_depth.set(q.depth() as i64);
            metrics.queue_bytes.set(q.bytes() as i64);
            drop(q);
            notify.notify_one();
        }
    })
}

/// Appends one sample under the full-queue policy ([`super::full`]).
fn write_sample(q: &mut Queue, s: &Sample, when_full: WhenFull, thinner: &mut Thinner, m: &Metrics) {
    let body = serde_json::to_vec(s).unwrap_or_default();
    match q.append(&body) {
        Ok(_) => thinner.kept_in_full(s),
        Err(QueueError::Full { .. }) => {
            let thinned = match when_full {
                WhenFull::Thin => thinner.thin(s),
                WhenFull::Refuse => None,
            };
            match thinned {
                Some(t) => {
                    let body = serde_json::to_vec(&t).unwrap_or_default();
                    match q.append_within(&body, reserve_limit(q.max_bytes())) {
                        Ok(_) => {
                            m.queue_thinned.inc();
                            m.queue_dropped.with_label_values(&["values"]).inc_by((s.v.len() - t.v.len()) as u64);
                        }
                        Err(e) => {
                            m.queue_dropped.with_label_values(&["samples"]).inc();
                            tracing::error!(meter = %s.meter, "sample not queued, the queue's reserve is full too: {e}");
                        }
                    }
                }
                None => {
                    m.queue_dropped.with_label_values(&["samples"]).inc();
                    tracing::debug!(meter = %s.meter, "queue full: sample dropped by the full-queue policy");
                }
            }
        }
        Err(e) => {
            m.queue_dropped.with_label_values(&["samples"]).inc();
            tracing::error!(meter = %s.meter, "sample not queued: {e}");
        }
    }
}
