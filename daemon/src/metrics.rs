//! The daemon's Prometheus metrics (own registry per instance).

use prometheus::{Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry};

#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
    pub points_written: IntCounter,
    pub points_unchanged: IntCounter,
    pub points_conflicting: IntCounter,
    pub samples_duplicate: IntCounter,
    pub gateway_epochs_new: IntCounter,
    pub batches: IntCounterVec,
    pub rejected: IntCounterVec,
    pub requests: IntCounterVec,
    pub store_commit_seconds: Histogram,
    pub store_flush_seconds: Histogram,
    pub store_wal_sync_seconds: Histogram,
    /// Bytes appended to the store's log (issue 19).
    pub store_log_bytes: IntCounter,
    /// Bytes cut from a torn tail of the store's log at open.
    pub store_log_truncated_bytes: IntCounter,
    pub head_points: IntGauge,
    pub query_seconds: Histogram,
    pub store_bytes: IntGauge,
    pub store_points: IntGauge,
    pub bytes_per_point: prometheus::Gauge,
    pub points_pruned: IntCounter,
    pub points_sealed: IntCounter,
    pub meters_known: IntGauge,
    pub gateway_up: prometheus::IntGaugeVec,
    pub auth_refused: IntCounterVec,
    pub auth_forbidden: IntCounterVec,
    /// Reloads of the tokens file, by result (ok, failed).
    pub auth_reloads: IntCounterVec,
    pub ingest_throttled: IntCounter,
    pub http_connections: IntGauge,
    pub tls_handshake_failures: IntCounter,
    /// Connections closed at accept, by limit (`client`, `unauthenticated`, `total`).
    pub http_connections_refused: IntCounterVec,
    /// Idle connections closed to make room for a new one.
    pub http_connections_evicted: IntCounter,
    /// Requests whose body did not arrive within `http.body_read_timeout_ms` (answered 408).
    pub http_body_timeouts: IntCounter,
    /// Bytes available to energyd on the data directory's file system (set by the writer).
    pub data_dir_free_bytes: IntGauge,
    /// 1 while the store refuses writes because the disk is full.
    pub store_read_only: IntGauge,
    /// Firing alerts by label set (bounded: rules x meters).
    pub alerts_firing: prometheus::IntGaugeVec,
    pub alert_rule_errors: IntCounterVec,
    pub alert_notifications: IntCounterVec,
    /// Per-meter gauges (`alerts.per_meter_metrics`), set at each scrape.
    pub meter_reading_age: prometheus::GaugeVec,
    pub meter_power: prometheus::GaugeVec,
    pub forwarded_points: IntCounter,
    pub forward_errors: IntCounterVec,
    pub forward_rejected_lines: IntCounter,
    pub spool_bytes: IntGauge,
    pub spool_points: IntGauge,
    pub forward_lag_seconds: prometheus::Gauge,
    pub forward_write_seconds: Histogram,
}

/// Labels that tie a series to an agency's data.
pub const SCOPED_LABELS: [&str; 3] = ["agency", "building", "meter"];

fn must<T>(r: prometheus::Result<T>) -> T {
    r.unwrap_or_else(|e| panic!("metric definition: {e}"))
}

impl Metrics {
    pub fn new() -> Metrics {
        let buckets = vec![0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];
        let m = Metrics {
            registry: Registry::new(),
            points_written: must(IntCounter::new("energyd_points_written_total", "Points newly written to the store")),
            points_unchanged: must(IntCounter::new(
                "energyd_points_duplicate_total",
                "Points received again with the value already stored (no-op)",
            )),
            points_conflicting: must(IntCounter::new(
                "energyd_points_conflicting_total",
                "Points offered with a value different from the one stored for the same meter, quantity and time: kept aside as conflicts, not applied",
            )),
            samples_duplicate: must(IntCounter::new(
                "energyd_samples_duplicate_total",
                "Gateway samples dropped because their (gateway, sequence) was already stored",
            )),
            gateway_epochs_new: must(IntCounter::new(
                "energyd_gateway_epochs_new_total",
                "Gateway queue epochs seen for the first time (a gateway's first queue, or a queue made again after its directory was lost)",
            )),
            batches: must(IntCounterVec::new(Opts::new("energyd_ingest_batches_total", "Gateway batches received, by result"), &["result"])),
            rejected: must(IntCounterVec::new(
                Opts::new("energyd_ingest_rejected_total", "Input refused at ingest, by source and reason"),
                &["source", "reason"],
            )),
            requests: must(IntCounterVec::new(
                Opts::new("energyd_http_requests_total", "HTTP requests, by route and status class"),
                &["route", "status"],
            )),
            store_commit_seconds: must(Histogram::with_opts(
                HistogramOpts::new("energyd_store_commit_duration_seconds", "Time to apply and commit one group of writes (its WAL sync is counted apart)").buckets(buckets.clone()),
            )),
            store_flush_seconds: must(Histogram::with_opts(
                HistogramOpts::new("energyd_store_head_flush_duration_seconds", "Time to flush the store's head into segments and roll-ups, one transaction").buckets(buckets.clone()),
            )),
            store_wal_sync_seconds: must(Histogram::with_opts(
                HistogramOpts::new("energyd_store_wal_sync_duration_seconds", "Time of one sync of the store's log file (and WAL), which the answers of the groups committed before it wait for").buckets(buckets.clone()),
            )),
            store_log_bytes: must(IntCounter::new("energyd_store_log_bytes_total", "Bytes appended to the store's log (one record per group commit, synced before its answers)")),
            store_log_truncated_bytes: must(IntCounter::new("energyd_store_log_truncated_bytes_total", "Bytes of a torn record cut from the end of the store's log at open (a crash during an append, never acknowledged)")),
            head_points: must(IntGauge::new("energyd_store_head_points", "Points acknowledged and held in the store's head (durable in the store's log) until its next flush")),
            query_seconds: must(Histogram::with_opts(
                HistogramOpts::new("energyd_query_duration_seconds", "Time to answer a series or consumption query").buckets(buckets),
            )),
            store_bytes: must(IntGauge::new("energyd_store_bytes", "Bytes of the embedded store on disk")),
            store_points: must(IntGauge::new("energyd_store_points", "Raw points held by the store")),
            bytes_per_point: must(prometheus::Gauge::new("energyd_store_bytes_per_point", "Bytes on disk per raw point held (roll-ups and catalog included)")),
            points_pruned: must(IntCounter::new("energyd_points_pruned_total", "Raw points deleted because they were older than the retention")),
            points_sealed: must(IntCounter::new("energyd_points_sealed_total", "Points moved from segments and raw rows into compressed day chunks")),
            meters_known: must(IntGauge::new("energyd_registry_meters", "Meters in the registry")),
            gateway_up: must(prometheus::IntGaugeVec::new(
                Opts::new("energyd_gateway_up", "1 while a gateway's MQTT status is online, 0 after its last will"),
                &["gateway"],
            )),
            auth_refused: must(IntCounterVec::new(
                Opts::new("energyd_auth_refused_total", "Requests refused with 401, by reason (missing, malformed, invalid)"),
                &["reason"],
            )),
            auth_forbidden: must(IntCounterVec::new(Opts::new("energyd_auth_forbidden_total", "Requests refused with 403 by the route rules, by role"), &["role"])),
            auth_reloads: must(IntCounterVec::new(
                Opts::new("energyd_auth_reloads_total", "Reloads of auth.tokens_file (SIGHUP or a change of the file), by result: ok, or failed (the tokens in force stay)"),
                &["result"],
            )),
            ingest_throttled: must(IntCounter::new("energyd_ingest_throttled_total", "Ingest requests refused with 429 (ingest.rate_per_gateway)")),
            http_connections: must(IntGauge::new("energyd_http_connections", "HTTP connections open now")),
            tls_handshake_failures: must(IntCounter::new("energyd_tls_handshake_failures_total", "TLS handshakes that failed or timed out")),
            http_connections_refused: must(IntCounterVec::new(
                Opts::new("energyd_http_connections_refused_total", "Connections closed at accept because a limit was reached and no idle connection could make room"),
                &["limit"],
            )),
            http_connections_evicted: must(IntCounter::new("energyd_http_connections_evicted_total", "Idle connections closed to make room for a new one")),
            http_body_timeouts: must(IntCounter::new("energyd_http_body_timeouts_total", "Requests whose body did not arrive within http.body_read_timeout_ms (408)")),
            data_dir_free_bytes: must(IntGauge::new("energyd_data_dir_free_bytes", "Bytes available to energyd on the file system of data_dir")),
            store_read_only: must(IntGauge::new("energyd_store_read_only", "1 while the store refuses writes because the disk is full")),
            alerts_firing: must(prometheus::IntGaugeVec::new(
                Opts::new("energyd_alerts_firing", "Alerts firing, by rule and routing labels"),
                &["alertname", "severity", "agency", "building", "meter"],
            )),
            alert_rule_errors: must(IntCounterVec::new(Opts::new("energyd_alert_rule_errors_total", "Alert rule evaluations that failed, by rule"), &["rule"])),
            alert_notifications: must(IntCounterVec::new(
                Opts::new("energyd_alert_notifications_total", "Alert notifications sent, by receiver (alertmanager, webhook) and result"),
                &["receiver", "result"],
            )),
            meter_reading_age: must(prometheus::GaugeVec::new(
                Opts::new("energyd_meter_last_reading_age_seconds", "Seconds since a meter's newest stored reading"),
                &["meter", "building"],
            )),
            meter_power: must(prometheus::GaugeVec::new(
                Opts::new("energyd_meter_active_power_watts", "A meter's newest active power reading (within the last hour), in watts"),
                &["meter", "building"],
            )),
            forwarded_points: must(IntCounter::new("energyd_forward_points_total", "Points accepted by InfluxDB (storage backend influxdb)")),
            forward_errors: must(IntCounterVec::new(
                Opts::new("energyd_forward_errors_total", "Failed writes to InfluxDB, by kind (connect, timeout, status, rejected)"),
                &["kind"],
            )),
            forward_rejected_lines: must(IntCounter::new(
                "energyd_forward_rejected_lines_total",
                "Lines of write requests InfluxDB refused as invalid (HTTP 400/413, partial writes included), not retried; their points stay in the local store",
            )),
            spool_bytes: must(IntGauge::new("energyd_forward_spool_bytes", "Bytes of line protocol waiting in the spool for InfluxDB")),
            spool_points: must(IntGauge::new("energyd_forward_spool_points", "Points waiting in the spool for InfluxDB")),
            forward_lag_seconds: must(prometheus::Gauge::new(
                "energyd_forward_lag_seconds",
                "Age of the oldest point waiting in the spool (0 when it is empty)",
            )),
            forward_write_seconds: must(Histogram::with_opts(
                HistogramOpts::new("energyd_forward_write_duration_seconds", "Time of one write request to InfluxDB, failed ones included")
                    .buckets(vec![0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]),
            )),
        };
        let r = &m.registry;
        must(r.register(Box::new(m.points_written.clone())));
        must(r.register(Box::new(m.points_unchanged.clone())));
        must(r.register(Box::new(m.points_conflicting.clone())));
        must(r.register(Box::new(m.samples_duplicate.clone())));
        must(r.register(Box::new(m.gateway_epochs_new.clone())));
        must(r.register(Box::new(m.batches.clone())));
        must(r.register(Box::new(m.rejected.clone())));
        must(r.register(Box::new(m.requests.clone())));
        must(r.register(Box::new(m.store_commit_seconds.clone())));
        must(r.register(Box::new(m.store_flush_seconds.clone())));
        must(r.register(Box::new(m.store_wal_sync_seconds.clone())));
        must(r.register(Box::new(m.store_log_bytes.clone())));
        must(r.register(Box::new(m.store_log_truncated_bytes.clone())));
        must(r.register(Box::new(m.head_points.clone())));
        must(r.register(Box::new(m.query_seconds.clone())));
        must(r.register(Box::new(m.store_bytes.clone())));
        must(r.register(Box::new(m.store_points.clone())));
        must(r.register(Box::new(m.bytes_per_point.clone())));
        must(r.register(Box::new(m.points_pruned.clone())));
        must(r.register(Box::new(m.points_sealed.clone())));
        must(r.register(Box::new(m.meters_known.clone())));
        must(r.register(Box::new(m.gateway_up.clone())));
        must(r.register(Box::new(m.auth_refused.clone())));
        must(r.register(Box::new(m.auth_forbidden.clone())));
        must(r.register(Box::new(m.auth_reloads.clone())));
        must(r.register(Box::new(m.ingest_throttled.clone())));
        must(r.register(Box::new(m.http_connections.clone())));
        must(r.register(Box::new(m.tls_handshake_failures.clone())));
        must(r.register(Box::new(m.http_connections_refused.clone())));
        must(r.register(Box::new(m.http_connections_evicted.clone())));
        must(r.register(Box::new(m.http_body_timeouts.clone())));
        must(r.register(Box::new(m.data_dir_free_bytes.clone())));
        must(r.register(Box::new(m.store_read_only.clone())));
        must(r.register(Box::new(m.alerts_firing.clone())));
        must(r.register(Box::new(m.alert_rule_errors.clone())));
        must(r.register(Box::new(m.alert_notifications.clone())));
        must(r.register(Box::new(m.meter_reading_age.clone())));
        must(r.register(Box::new(m.meter_power.clone())));
        must(r.register(Box::new(m.forwarded_points.clone())));
        must(r.register(Box::new(m.forward_errors.clone())));
        must(r.register(Box::new(m.forward_rejected_lines.clone())));
        must(r.register(Box::new(m.spool_bytes.clone())));
        must(r.register(Box::new(m.spool_points.clone())));
        must(r.register(Box::new(m.forward_lag_seconds.clone())));
        must(r.register(Box::new(m.forward_write_seconds.clone())));
        m
    }

    /// Renders the series that carry no agency data, and of those labelled with an `agency`,
    /// `building` or `meter` ([`SCOPED_LABELS`]) the ones where `sees(label, value)` holds for
    /// every such label that has a value.
    pub fn render_scoped(&self, sees: &dyn Fn(&str, &str) -> bool) -> String {
        let mut families = self.registry.gather();
        for f in &mut families {
            let kept: Vec<prometheus::proto::Metric> = f
                .take_metric()
                .into_iter()
                .filter(|m| m.get_label().iter().all(|l| !SCOPED_LABELS.contains(&l.name()) || l.value().is_empty() || sees(l.name(), l.value())))
                .collect();
            f.set_metric(kept);
        }
        families.retain(|f| !f.get_metric().is_empty());
        let mut buf = Vec::new();
        let _ = prometheus::TextEncoder::new().encode(&families, &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }

    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let _ = prometheus::TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

/// Points written per second above which the store is taken to be taking a bulk ingest (a
/// backlog resent, an import, a benchmark) rather than meters reporting: ten times what a
/// province's 100,000 meters of ten quantities send once a minute (17,000 points/s).
pub const BULK_POINTS_PER_SECOND: u64 = 100_000;

impl Metrics {
    /// Returns when the store is not taking a bulk ingest: fewer than `rate` points per second
    /// written (`energyd_points_written_total`) over the last `window`, measured over at least
    /// `window`; or after `max` whatever the ingest does. For background work that reads the
    /// store (its reads flush the head, which in the middle of a bulk ingest writes segments and
    /// roll-up rows that the ingest's own flush then rewrites) and whose results the ingest
    /// changes anyway.
    pub async fn wait_for_quiet_writer(&self, window: std::time::Duration, rate: u64, max: std::time::Duration) {
        let started = tokio::time::Instant::now();
        let mut samples = std::collections::VecDeque::from([(started, self.points_written.get())]);
        let step = (window / 4).max(std::time::Duration::from_millis(10));
        while started.elapsed() < max {
            tokio::time::sleep(step).await;
            let (now, n) = (tokio::time::Instant::now(), self.points_written.get());
            samples.push_back((now, n));
            // The newest sample at least `window` old is the start of the measure.
            while samples.len() > 2 && now.duration_since(samples[1].0) >= window {
                samples.pop_front();
            }
            let (t0, n0) = samples[0];
            let span = now.duration_since(t0);
            if span >= window && (n.saturating_sub(n0) as f64) < rate as f64 * span.as_secs_f64() {
                return;
            }
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    /// The wait of background work: with nothing written it returns after one window (1 s);
    /// while points arrive at about 1,000,000 a second (20,000 every 20 ms) for 2.5 s it waits
    /// until they stop and a window without them has passed; when they never stop, until `max`
    /// (2 s). A rate under the threshold (about 500 a second) does not hold it. Only lower bounds
    /// and generous upper ones are asserted: a loaded machine only sleeps longer.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn background_work_waits_while_a_bulk_ingest_streams_in() {
        let (window, max) = (Duration::from_secs(1), Duration::from_secs(2));
        let m = Metrics::new();
        let stream = |m: Metrics, per_step: u64, for_ms: u64| {
            tokio::spawn(async move {
                let until = Instant::now() + Duration::from_millis(for_ms);
                while Instant::now() < until {
                    m.points_written.inc_by(per_step);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            })
        };
        let started = Instant::now();
        m.wait_for_quiet_writer(window, BULK_POINTS_PER_SECOND, Duration::from_secs(600)).await;
        assert!(started.elapsed() >= window && started.elapsed() < Duration::from_secs(60), "{:?}", started.elapsed());

        let slow = stream(m.clone(), 10, 60_000);
        let started = Instant::now();
        m.wait_for_quiet_writer(window, BULK_POINTS_PER_SECOND, Duration::from_secs(600)).await;
        assert!(started.elapsed() < Duration::from_secs(60), "meters reporting are not a bulk ingest: {:?}", started.elapsed());
        slow.abort();

        let bulk = stream(m.clone(), 20_000, 2_500);
        let started = Instant::now();
        m.wait_for_quiet_writer(window, BULK_POINTS_PER_SECOND, Duration::from_secs(600)).await;
        assert!(started.elapsed() >= Duration::from_millis(2_500), "returned while points arrived: {:?}", started.elapsed());
        bulk.await.unwrap();

        let bulk = stream(m.clone(), 20_000, 60_000);
        let started = Instant::now();
        m.wait_for_quiet_writer(window, BULK_POINTS_PER_SECOND, max).await;
        assert!(started.elapsed() >= max && started.elapsed() < Duration::from_secs(60), "{:?}", started.elapsed());
        bulk.abort();
    }
}
