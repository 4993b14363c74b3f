//! The gateway's Prometheus metrics. Each gateway instance has its own registry so that several
//! can run in one process (the demo) without clashing.

use prometheus::{Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};

#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
    pub modbus_requests: IntCounterVec,
    pub modbus_errors: IntCounterVec,
    pub modbus_latency: HistogramVec,
    pub bad_frames: IntCounterVec,
    pub devices_up: IntGauge,
    pub device_up: IntGaugeVec,
    pub samples: IntCounter,
    pub queue_depth: IntGauge,
    pub queue_bytes: IntGauge,
    pub queue_max_bytes: IntGauge,
    pub queue_oldest_age: prometheus::Gauge,
    pub queue_dropped: IntCounterVec,
    pub queue_thinned: IntCounter,
    pub queue_truncated_bytes: IntCounter,
    pub queue_lost_samples: IntCounter,
    pub uplink_batches: IntCounterVec,
    pub uplink_samples: IntCounter,
    pub uplink_latency: Histogram,
    pub dead_letters: IntCounter,
    pub mqtt_input_errors: IntCounterVec,
}

fn must<T>(r: prometheus::Result<T>) -> T {
    // Metric definitions are static; an error here is a programming error caught by tests.
    r.unwrap_or_else(|e| panic!("metric definition: {e}"))
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let lat_buckets = vec![0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];
        let m = Metrics {
            modbus_requests: must(IntCounterVec::new(
                Opts::new("energy_gateway_modbus_requests_total", "Modbus read requests sent, per bus (a TCP endpoint, a serial server or a serial port)"),
                &["bus"],
            )),
            modbus_errors: must(IntCounterVec::new(
                Opts::new("energy_gateway_modbus_errors_total", "Failed Modbus requests, per bus and kind (timeout, transport, exception, short_response)"),
                &["bus", "kind"],
            )),
            bad_frames: must(IntCounterVec::new(
                Opts::new("energy_gateway_bad_frames_total", "DL/T 645 and CJ/T 188 frames dropped for a wrong checksum or end byte, per bus (noise, or a wrong baud rate or parity)"),
                &["bus"],
            )),
            modbus_latency: must(HistogramVec::new(
                HistogramOpts::new("energy_gateway_modbus_request_duration_seconds", "Modbus request latency, per bus")
                    .buckets(lat_buckets.clone()),
                &["bus"],
            )),
            devices_up: must(IntGauge::new("energy_gateway_devices_up", "Devices whose last poll succeeded")),
            device_up: must(IntGaugeVec::new(
                Opts::new("energy_gateway_device_up", "1 if the device's last poll succeeded, per meter"),
                &["meter"],
            )),
            samples: must(IntCounter::new("energy_gateway_samples_total", "Samples taken and queued")),
            queue_depth: must(IntGauge::new("energy_gateway_queue_depth", "Samples queued and not yet acknowledged")),
            queue_bytes: must(IntGauge::new("energy_gateway_queue_bytes", "Bytes of queue segments on disk")),
            queue_max_bytes: must(IntGauge::new("energy_gateway_queue_max_bytes", "The queue's bound (queue.max_bytes); the full-queue policy applies above it")),
            queue_oldest_age: must(prometheus::Gauge::new(
                "energy_gateway_queue_oldest_age_seconds",
                "Age of the oldest unacknowledged sample",
            )),
            queue_dropped: must(IntCounterVec::new(
                Opts::new(
                    "energy_gateway_queue_dropped_total",
                    "Data dropped because the queue was full: kind=samples (whole samples), kind=values (gauge values of thinned samples)",
                ),
                &["kind"],
            )),
            queue_thinned: must(IntCounter::new(
                "energy_gateway_queue_thinned_samples_total",
                "Samples kept as counters only because the queue was full",
            )),
            queue_truncated_bytes: must(IntCounter::new(
                "energy_gateway_queue_truncated_bytes_total",
                "Bytes of torn or corrupt queue tail truncated at start",
            )),
            queue_lost_samples: must(IntCounter::new(
                "energy_gateway_queue_lost_samples_total",
                "Unacknowledged samples lost to corrupt queue records, found at start",
            )),
            uplink_batches: must(IntCounterVec::new(
                Opts::new("energy_gateway_uplink_batches_total", "Batches sent to the daemon, by result"),
                &["result"],
            )),
            uplink_samples: must(IntCounter::new("energy_gateway_uplink_samples_total", "Samples acknowledged by the daemon")),
            uplink_latency: must(Histogram::with_opts(
                HistogramOpts::new("energy_gateway_uplink_request_duration_seconds", "Time to send a batch and get its acknowledgement")
                    .buckets(lat_buckets),
            )),
            dead_letters: must(IntCounter::new(
                "energy_gateway_dead_letter_batches_total",
                "Batches the daemon rejected as invalid, set aside in the dead-letter file",
            )),
            mqtt_input_errors: must(IntCounterVec::new(
                Opts::new("energy_gateway_mqtt_input_errors_total", "Problems with MQTT meter messages, by kind"),
                &["kind"],
            )),
            registry,
        };
        let r = &m.registry;
        must(r.register(Box::new(m.modbus_requests.clone())));
        must(r.register(Box::new(m.modbus_errors.clone())));
        must(r.register(Box::new(m.modbus_latency.clone())));
        must(r.register(Box::new(m.bad_frames.clone())));
        must(r.register(Box::new(m.devices_up.clone())));
        must(r.register(Box::new(m.device_up.clone())));
        must(r.register(Box::new(m.samples.clone())));
        must(r.register(Box::new(m.queue_depth.clone())));
        must(r.register(Box::new(m.queue_bytes.clone())));
        must(r.register(Box::new(m.queue_max_bytes.clone())));
        must(r.register(Box::new(m.queue_oldest_age.clone())));
        must(r.register(Box::new(m.queue_dropped.clone())));
        must(r.register(Box::new(m.queue_thinned.clone())));
        must(r.register(Box::new(m.queue_truncated_bytes.clone())));
        must(r.register(Box::new(m.queue_lost_samples.clone())));
        must(r.register(Box::new(m.uplink_batches.clone())));
        must(r.register(Box::new(m.uplink_samples.clone())));
        must(r.register(Box::new(m.uplink_latency.clone())));
        must(r.register(Box::new(m.dead_letters.clone())));
        must(r.register(Box::new(m.mqtt_input_errors.clone())));
        m
    }

    /// The registry in Prometheus text format.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let _ = prometheus::TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn metrics_register_and_render() {
        let m = super::Metrics::new();
        m.modbus_requests.with_label_values(&["127.0.0.1:502"]).inc();
        let text = m.render();
        assert!(text.contains("energy_gateway_modbus_requests_total{bus=\"127.0.0.1:502\"} 1"));
    }
}
