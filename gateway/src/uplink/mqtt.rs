//! The MQTT uplink (rumqttc, MQTT 3.1.1, QoS 1, persistent session).
//!
//! Topics, under `topic_prefix` (default `energy/v1`):
//!
//! | topic | direction | payload |
//! |---|---|---|
//! | `<prefix>/<site>/<gateway>/batch` | gateway → daemon, QoS 1 | a batch (energy-wire JSON, gzipped when that pays) |
//! | `<prefix>/<site>/<gateway>/ack` | daemon → gateway, QoS 1 | `{"epoch": E, "acked_through": N, "ranges": [[a, b], ...]}` after the daemon's commit, or `{"epoch": E, "rejected": [a, b], "reason": ".."}`; `epoch` is the batch's queue epoch (absent when the batch had none), and a gateway ignores acknowledgements of another epoch |
//! | `<prefix>/<site>/<gateway>/status` | gateway, retained | `online`; the last will sets `offline` |
//!
//! The broker's PUBACK only means the broker has the batch; a sample leaves the queue when the
//! daemon's acknowledgement covers it. After a reconnect, or when no acknowledgement came for
//! `ack_timeout_ms`, everything unacknowledged is sent again (the daemon drops duplicates).

use std::sync::Arc;
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, EventLoop, LastWill, MqttOptions, Packet, QoS, TlsConfiguration, Transport};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{sleep_until_opt, Common, Lanes};
use crate::backoff::pause_before_retry;
use crate::metrics::Metrics;

/// Capacity of the client's request channel (rumqttc's event loop takes requests from it while
/// fewer than its in-flight limit of publishes wait for a PUBACK).
const REQUESTS: usize = 256;
/// Batches published and not yet acknowledged by the daemon: below the client's in-flight limit
/// (100), so that a publish normally finds room at once however small the batches are.
const MAX_BATCHES_IN_FLIGHT: usize = 64;
/// Longest wait for a subscription or a status message at connect and stop.
const CONTROL_WAIT: Duration = Duration::from_secs(2);

/// What the event loop tells the sender.
enum Note {
    Connected,
    Disconnected(String),
    Ack(serde_json::Value),
}

/// Topics of one gateway.
pub struct Topics {
    pub batch: String,
    pub ack: String,
    pub status: String,
}

impl Topics {
    pub fn new(prefix: &str, site: &str, gateway: &str) -> Topics {
        let base = format!("{}/{site}/{gateway}", prefix.trim_end_matches('/'));
        Topics { batch: format!("{base}/batch"), ack: format!("{base}/ack"), status: format!("{base}/status") }
    }
}

fn options(c: &Common, topics: &Topics) -> Result<MqttOptions, String> {
    let (host, port, tls) = c.cfg.mqtt_endpoint()?;
    let mut o = MqttOptions::new(format!("energy-gateway-{}", c.gateway_id), host, port);
    o.set_keep_alive(Duration::from_secs(30));
    o.set_clean_session(false);
    o.set_inflight(100);
    o.set_max_packet_size(16 << 20, 16 << 20);
    o.set_last_will(LastWill::new(&topics.status, "offline", QoS::AtLeastOnce, true));
    if let Some(user) = &c.cfg.username {
        o.set_credentials(user.clone(), c.cfg.password()?.unwrap_or_default());
    }
    if tls {
        let cfg = crate::tls::client_config(c.cfg.ca_file.as_deref())?;
        o.set_transport(Transport::Tls(TlsConfiguration::Rustls(Arc::new(cfg))));
    }
    Ok(o)
}

/// Runs until cancelled; then keeps sending for at most `drain_on_shutdown_ms`.
pub async fn run(c: Common, cancel: CancellationToken) {
    let topics = Topics::new(&c.cfg.topic_prefix, &c.cfg.site, &c.gateway_id);
    let opts = match options(&c, &topics) {
        Ok(o) => o,
        Err(e) => {
            tracing::error!("MQTT uplink: {e}");
            c.set_error(e);
            return;
        }
    };
    {
        let mut st = c.status.lock().unwrap_or_else(|e| e.into_inner());
        st.transport = "mqtt".into();
        st.acked_through = c.acked();
    }
    let (client, eventloop) = AsyncClient::new(opts, REQUESTS);
    // The event loop never waits for the sender: notes go over an unbounded channel (a few per
    // batch at most, and the sender takes them whenever it is not publishing). The sender may
    // wait for the event loop (a full request channel), never the other way round, so no cycle
    // of waits can form; and the event loop keeps answering pings while the sender is busy.
    let (tx, mut rx) = mpsc::unbounded_channel::<Note>();
    let el_cancel = CancellationToken::new();
    let retry_max = Duration::from_millis(c.cfg.retry_max_ms);
    let event_task = tokio::spawn(event_loop(eventloop, tx, topics.ack.clone(), c.metrics.clone(), c.cfg.url.clone(), retry_max, el_cancel.clone()));

    let mut s = Sender::new(&c);
    loop {
        if cancel.is_cancelled() && s.drain_deadline.is_none() {
            s.drain_deadline = Some(Instant::now() + Duration::from_millis(c.cfg.drain_on_shutdown_ms));
        }
        let acked = c.acked();
        let last = c.last_queued();
        if s.drain_deadline.is_some_and(|d| Instant::now() >= d) || (s.drain_deadline.is_some() && acked >= last) {
            break;
        }
        if acked > s.last_acked {
            s.last_acked = acked;
            s.last_progress = Instant::now();
        }
        // Send while connected and the window allows.
        if s.connected && s.send_next(&c, &client, &topics, &cancel, acked, last).await {
            continue;
        }
        let wait = if s.connected && last > s.lanes.history_through.max(s.lanes.live_through) { 20 } else { 200 };
        tokio::select! {
            note = rx.recv() => match note {
                Some(note) => s.on_note(note, &c, &client, &topics).await,
                None => break,
            },
            () = c.notify.notified() => {}
            () = cancel.cancelled(), if s.drain_deadline.is_none() => {}
            () = tokio::time::sleep(Duration::from_millis(wait)) => {}
        }
    }
    if s.connected {
        let _ = tokio::time::timeout(CONTROL_WAIT, client.publish(&topics.status, QoS::AtLeastOnce, true, "offline")).await;
        let _ = tokio::time::timeout(CONTROL_WAIT, client.disconnect()).await;
        // Give the event loop a moment to send the last packets.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    el_cancel.cancel();
    let _ = event_task.await;
    let depth = crate::queue::lock(&c.queue).depth();
    if depth > 0 {
        tracing::info!(depth, "uplink stopped; unsent samples stay queued on disk");
    }
}

/// Drives the client's event loop until `stop`: tells the sender of connections, lost
/// connections and the daemon's acknowledgements, and reconnects with back-off.
async fn event_loop(
    mut eventloop: EventLoop,
    tx: mpsc::UnboundedSender<Note>,
    ack_topic: String,
    metrics: Metrics,
    url: String,
    retry_max: Duration,
    stop: CancellationToken,
) {
    let mut backoff = Duration::from_millis(200);
    loop {
        let ev = tokio::select! {
            ev = eventloop.poll() => ev,
            () = stop.cancelled() => break,
        };
        match ev {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                backoff = Duration::from_millis(200);
                let _ = tx.send(Note::Connected);
            }
            Ok(Event::Incoming(Packet::Publish(p))) if p.topic == ack_topic => match serde_json::from_slice::<serde_json::Value>(&p.payload) {
                Ok(v) => {
                    let _ = tx.send(Note::Ack(v));
                }
                Err(e) => tracing::warn!("unreadable acknowledgement on {ack_topic}: {e}"),
            },
            Ok(_) => {}
            Err(e) => {
                let kind = match &e {
                    rumqttc::ConnectionError::ConnectionRefused(_) => "refused",
                    rumqttc::ConnectionError::Tls(_) => "tls",
                    _ => "connection",
                };
                metrics.uplink_batches.with_label_values(&[kind]).inc();
                let msg = format!("MQTT {url}: {e}");
                let _ = tx.send(Note::Disconnected(msg));
                if !pause_before_retry(&mut backoff, retry_max, &stop).await {
                    break;
                }
            }
        }
    }
}

/// The sending side's state: connected or not, what the lanes have sent, what is in flight,
/// when the daemon last made progress, and the drain deadline once stopping.
struct Sender {
    connected: bool,
    lanes: Lanes,
    last_progress: Instant,
    last_acked: u64,
    drain_deadline: Option<Instant>,
    last_error_logged: Instant,
    /// Batches published and not yet acknowledged by the daemon (first, last sequence number).
    in_flight: Vec<(u64, u64)>,
}

impl Sender {
    fn new(c: &Common) -> Sender {
        Sender {
            connected: false,
            lanes: Lanes::new(c.acked(), c.cfg.backfill_samples_per_second),
            last_progress: Instant::now(),
            last_acked: c.acked(),
            drain_deadline: None,
            last_error_logged: Instant::now() - Duration::from_secs(60),
            in_flight: Vec::new(),
        }
    }

    /// Publishes the next batch if the window allows, or starts over from the acknowledged
    /// position when the daemon has not acknowledged in time. `true` when it did either (the
    /// caller looks again at once), `false` when there is nothing to do now.
    async fn send_next(&mut self, c: &Common, client: &AsyncClient, topics: &Topics, cancel: &CancellationToken, acked: u64, last: u64) -> bool {
        let lanes = &mut self.lanes;
        let outstanding = lanes.history_through.saturating_sub(acked) + lanes.live_from.map_or(0, |f| lanes.live_through.saturating_sub(f.saturating_sub(1)));
        if outstanding > 0 && self.last_progress.elapsed() > Duration::from_millis(c.cfg.ack_timeout_ms) {
            tracing::warn!(acked, outstanding, "no acknowledgement from the daemon in time; sending again what is unacknowledged");
            lanes.reset(acked);
            self.in_flight.clear();
            self.last_progress = Instant::now();
            return true;
        }
        self.in_flight.retain(|&(a, z)| !c.is_settled(a, z));
        if outstanding + (c.cfg.batch_max_samples as u64) > c.cfg.max_in_flight_samples as u64 || self.in_flight.len() >= MAX_BATCHES_IN_FLIGHT {
            return false;
        }
        let Some(pick) = lanes.pick(acked, last, c.cfg.batch_max_samples) else { return false };
        let Some(out) = c.load(pick.after, pick.max).await else { return false };
        let (first, last_seq) = (out.batch.seq, out.batch.last_seq());
        let n = out.batch.samples.len() as u64;
        // The request channel may be full (the event loop waits for the broker's PUBACKs):
        // wait, but never past a stop.
        let published = tokio::select! {
            r = client.publish(&topics.batch, QoS::AtLeastOnce, false, out.body) => Some(r),
            () = cancel.cancelled(), if self.drain_deadline.is_none() => None,
            () = sleep_until_opt(self.drain_deadline) => None,
        };
        match published {
            Some(Ok(())) => {
                c.metrics.uplink_batches.with_label_values(&["published"]).inc();
                if outstanding == 0 {
                    self.last_progress = Instant::now();
                }
                self.lanes.sent(pick, first, last_seq);
                self.in_flight.push((first, last_seq));
                tracing::trace!(first, last_seq, n, "batch published");
            }
            Some(Err(e)) => tracing::warn!("cannot publish: {e}"),
            None => {}
        }
        true
    }

    /// Takes a note from the event loop.
    async fn on_note(&mut self, note: Note, c: &Common, client: &AsyncClient, topics: &Topics) {
        match note {
            Note::Connected => {
                self.connected = true;
                c.set_connected(true);
                tracing::info!(url = %c.cfg.url, "MQTT uplink connected");
                match tokio::time::timeout(CONTROL_WAIT, client.subscribe(&topics.ack, QoS::AtLeastOnce)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tracing::warn!("cannot subscribe to {}: {e}", topics.ack),
                    Err(_) => tracing::warn!("cannot subscribe to {}: the client's request queue stayed full", topics.ack),
                }
                let _ = tokio::time::timeout(CONTROL_WAIT, client.publish(&topics.status, QoS::AtLeastOnce, true, "online")).await;
                // Whatever was in flight may be lost with the connection: send it again.
                self.lanes.reset(c.acked());
                self.in_flight.clear();
                self.last_progress = Instant::now();
            }
            Note::Disconnected(msg) => {
                if self.connected || self.last_error_logged.elapsed() > Duration::from_secs(30) {
                    tracing::warn!("{msg}");
                    self.last_error_logged = Instant::now();
                }
                self.connected = false;
                c.set_connected(false);
                c.set_error(msg);
            }
            Note::Ack(v) => apply_ack(c, &v).await,
        }
    }
}

/// Applies an acknowledgement or rejection published by the daemon.
async fn apply_ack(c: &Common, v: &serde_json::Value) {
    // Sequence numbers belong to a queue epoch: an acknowledgement of another epoch (a queue
    // this gateway had before its directory was lost, still delivered by the broker) says
    // nothing about this queue's samples.
    let epoch = v.get("epoch").and_then(serde_json::Value::as_str);
    if epoch != c.epoch.as_deref() {
        tracing::debug!(ack_epoch = ?epoch, epoch = ?c.epoch, "acknowledgement of another queue epoch ignored");
        return;
    }
    if let Some(r) = v.get("rejected").and_then(|r| r.as_array()) {
        let (Some(first), Some(last)) = (r.first().and_then(serde_json::Value::as_u64), r.get(1).and_then(serde_json::Value::as_u64)) else {
            return;
        };
        let reason = v.get("reason").and_then(|x| x.as_str()).unwrap_or("rejected by the daemon");
        if first > c.acked() && last >= first {
            if let Some(out) = c.load(first - 1, (last - first + 1) as usize).await {
                c.dead_letter(&out.batch, 400, reason);
            }
            c.metrics.uplink_batches.with_label_values(&["rejected"]).inc();
            c.settle(first, last).await;
        }
        return;
    }
    let mut settled = 0u64;
    if let Some(ranges) = v.get("ranges").and_then(|r| r.as_array()) {
        for r in ranges {
            if let (Some(a), Some(z)) = (r.get(0).and_then(serde_json::Value::as_u64), r.get(1).and_then(serde_json::Value::as_u64)) {
                let acked = c.acked();
                if z > acked && a <= z {
                    settled += z - a.max(acked + 1) + 1;
                    c.settle(a.max(acked + 1), z).await;
                }
            }
        }
    } else if let Some(n) = v.get("acked_through").and_then(serde_json::Value::as_u64) {
        let acked = c.acked();
        if n > acked {
            settled += n - acked;
            c.settle(acked + 1, n).await;
        }
    }
    if settled > 0 {
        c.metrics.uplink_samples.inc_by(settled);
        c.metrics.uplink_batches.with_label_values(&["acked"]).inc();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::uplink::UplinkConfig;
    use crate::metrics::Metrics;
    use crate::queue::Queue;

    fn common(dir: &std::path::Path) -> Common {
        let mut q = Queue::open(dir, 1 << 20, 1 << 30).unwrap();
        for i in 0..10u8 {
            q.append(&[i]).unwrap();
        }
        q.sync().unwrap();
        Common::new(
            UplinkConfig::with_url("mqtt://127.0.0.1:1883"),
            "gw".into(),
            Arc::new(Mutex::new(q)),
            Arc::default(),
            Metrics::new(),
            Arc::default(),
            dir.join("dead-letter.jsonl"),
        )
    }

    /// An acknowledgement settles samples only for the queue epoch it names: one of another
    /// epoch (the queue this gateway had before its directory was lost), or without an epoch
    /// when the queue has one, changes nothing.
    #[tokio::test]
    async fn acknowledgements_of_another_epoch_are_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let c = common(dir.path());
        let epoch = c.epoch.clone().expect("a new queue has an epoch");
        apply_ack(&c, &serde_json::json!({ "epoch": "0123456789abcdef", "acked_through": 8, "ranges": [[1, 8]] })).await;
        assert_eq!(c.acked(), 0);
        apply_ack(&c, &serde_json::json!({ "acked_through": 8, "ranges": [[1, 8]] })).await;
        assert_eq!(c.acked(), 0);
        apply_ack(&c, &serde_json::json!({ "epoch": "0123456789abcdef", "rejected": [1, 5], "reason": "x" })).await;
        assert_eq!(c.acked(), 0);
        apply_ack(&c, &serde_json::json!({ "epoch": epoch, "acked_through": 4, "ranges": [[1, 4], [7, 8]] })).await;
        assert_eq!(c.acked(), 4);
        assert!(c.is_settled(7, 8) && !c.is_settled(5, 8));
    }
}
