//! The ingest service: one for HTTP batches, line protocol and MQTT. It holds the handles it
//! needs (store, registry, metrics, audit log) and what ingest keeps between requests (the
//! gateways seen, the meters seen but not in the registry, the rate limit per gateway).

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::body::{self, BodyError};
use super::config::{IngestConfig, UnknownMeter};
use super::gateways::Gateways;
use super::rate::RateLimiter;
use crate::audit::AuditLog;
use crate::metrics::Metrics;
use crate::registry::Registry;
use crate::store::Store;

/// What an [`Ingest`] is built from: plain values of the configuration.
#[derive(Debug, Clone)]
pub struct IngestOptions {
    /// `[ingest]`.
    pub config: IngestConfig,
    /// `retention.raw_days`: older input is refused (line protocol) or not stored (batches).
    pub raw_days: u32,
    /// `http.max_body_bytes`: the largest body after decompression.
    pub max_body_bytes: usize,
}

/// Bytes in, checked points stored.
pub struct Ingest {
    pub(super) store: Store,
    pub(super) registry: Arc<Registry>,
    pub(super) metrics: Metrics,
    pub(super) audit: Arc<AuditLog>,
    pub(super) unknown_meter: UnknownMeter,
    pub(super) raw_days: u32,
    max_body_bytes: usize,
    gateways: Arc<Gateways>,
    /// Meters seen in input but absent from the registry.
    unassigned: Mutex<BTreeSet<String>>,
    limiter: RateLimiter,
}

impl Ingest {
    pub fn new(store: Store, registry: Arc<Registry>, metrics: Metrics, audit: Arc<AuditLog>, options: IngestOptions) -> Ingest {
        let limiter = RateLimiter::new(options.config.rate_per_gateway, options.config.burst_per_gateway);
        Ingest::with_limiter(store, registry, metrics, audit, options, limiter)
    }

    /// With a given rate limiter (tests).
    pub fn with_limiter(store: Store, registry: Arc<Registry>, metrics: Metrics, audit: Arc<AuditLog>, options: IngestOptions, limiter: RateLimiter) -> Ingest {
        Ingest {
            store,
            registry,
            gateways: Arc::new(Gateways::new(metrics.clone())),
            metrics,
            audit,
            unknown_meter: options.config.unknown_meter,
            raw_days: options.raw_days,
            max_body_bytes: options.max_body_bytes,
            unassigned: Mutex::new(BTreeSet::new()),
            limiter,
        }
    }

    /// The raw retention in milliseconds.
    pub fn raw_ms(&self) -> i64 {
        i64::from(self.raw_days) * energy_wire::time::DAY_MS
    }

    /// `retention.raw_days`.
    pub fn raw_days(&self) -> u32 {
        self.raw_days
    }

    /// `http.max_body_bytes`.
    pub fn max_body_bytes(&self) -> usize {
        self.max_body_bytes
    }

    /// The gateways seen (shared with the alert rules).
    pub fn gateways(&self) -> &Arc<Gateways> {
        &self.gateways
    }

    /// Meters seen in input but absent from the registry, since the daemon started.
    pub fn unassigned(&self) -> BTreeSet<String> {
        self.unassigned.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub(super) fn note_unassigned(&self, meters: &[String]) {
        self.unassigned.lock().unwrap_or_else(|e| e.into_inner()).extend(meters.iter().cloned());
    }

    /// Takes one request from `key`'s bucket (`ingest.rate_per_gateway`), or says how long until
    /// there is one (counted in `energyd_ingest_throttled_total`).
    pub fn throttle(&self, key: &str) -> Result<(), Duration> {
        let wait = self.limiter.check(key, Instant::now());
        if wait.is_err() {
            self.metrics.ingest_throttled.inc();
        }
        wait
    }

    /// A body as its `Content-Encoding` says, within `http.max_body_bytes`; a refusal is counted
    /// under `source`.
    pub fn open_body<'a>(&self, content_encoding: Option<&str>, bytes: &'a [u8], source: &str) -> Result<std::borrow::Cow<'a, [u8]>, BodyError> {
        body::decode(content_encoding, bytes, self.max_body_bytes).inspect_err(|e| self.metrics.rejected.with_label_values(&[source, e.label()]).inc())
    }

    /// Counts a body refused before it reached ingest (over the size limit as it arrived).
    pub fn count_refused(&self, source: &str, label: &str) {
        self.metrics.rejected.with_label_values(&[source, label]).inc();
    }
}
