//! MQTT ingest: the daemon side of the gateways' MQTT uplink.
//!
//! Subscribes (QoS 1, persistent session, manual acknowledgements) to
//! `$share/<group>/<prefix>/+/+/batch`, so that several daemons can split the gateways between
//! them, and to `<prefix>/+/+/status` (every daemon) to see gateways go on- and offline. For each
//! batch: decode, store (commit), then publish on `<prefix>/<site>/<gateway>/ack` the ranges of
//! sequence numbers stored for that gateway, and only then acknowledge the message to the broker.
//! A batch that cannot be stored (the store is closing, the disk is full) is not acknowledged,
//! so the broker delivers it again, and `{"retry": [first, last], "reason": ..}` on the ack
//! topic says why (the gateway keeps the batch; this is never a rejection). A batch that will never be valid gets `{"rejected": [first, last],
//! "reason": ..}` on the ack topic, so that the gateway sets it aside.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, Publish, QoS, TlsConfiguration, Transport};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::batch::{BatchError, Sender, Stored};
use super::body::gunzip_if_gzip;
use super::config::MqttConfig;
use super::conflicts_message;
use super::service::Ingest;
use crate::auth::{Principal, Role, Tokens};
use crate::metrics::Metrics;

/// Where a gateway's messages come from, parsed from a topic `<prefix>/<site>/<gateway>/<kind>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicParts<'a> {
    pub site: &'a str,
    pub gateway: &'a str,
    pub kind: &'a str,
}

pub fn parse_topic<'a>(prefix: &str, topic: &'a str) -> Option<TopicParts<'a>> {
    let rest = topic.strip_prefix(prefix.trim_end_matches('/'))?.strip_prefix('/')?;
    let mut it = rest.split('/');
    let (site, gateway, kind) = (it.next()?, it.next()?, it.next()?);
    (it.next().is_none() && !site.is_empty() && !gateway.is_empty()).then_some(TopicParts { site, gateway, kind })
}

/// Why the MQTT ingest cannot connect at all (the messages of the gateway's uplink rules).
#[derive(Debug, thiserror::Error)]
pub enum MqttSetupError {
    #[error("{0}")]
    Endpoint(String),
    #[error("{0}")]
    Password(String),
    #[error("{0}")]
    Tls(String),
}

fn options(cfg: &MqttConfig) -> Result<MqttOptions, MqttSetupError> {
    let u = cfg.as_uplink();
    let (host, port, tls) = u.mqtt_endpoint().map_err(MqttSetupError::Endpoint)?;
    let mut o = MqttOptions::new(cfg.client_id.clone(), host, port);
    o.set_keep_alive(Duration::from_secs(30));
    o.set_clean_session(false);
    o.set_manual_acks(true);
    o.set_inflight(100);
    o.set_max_packet_size(64 << 20, 1 << 20);
    if let Some(user) = &cfg.username {
        o.set_credentials(user.clone(), u.password().map_err(MqttSetupError::Password)?.unwrap_or_default());
    }
    if tls {
        let c = energy_gateway::tls::client_config(cfg.ca_file.as_deref()).map_err(MqttSetupError::Tls)?;
        o.set_transport(Transport::Tls(TlsConfiguration::Rustls(std::sync::Arc::new(c))));
    }
    Ok(o)
}

/// What handling a message needs: the service, the tokens (which meters a gateway's tokens
/// list; `None`: authentication off), the client for acknowledgements, the topic prefix.
#[derive(Clone)]
struct Handler {
    ingest: Arc<Ingest>,
    tokens: Option<Tokens>,
    client: AsyncClient,
    prefix: String,
}

/// Runs the MQTT ingest until `cancel` fires.
pub async fn run(ingest: Arc<Ingest>, tokens: Option<Tokens>, cfg: MqttConfig, cancel: CancellationToken) {
    let opts = match options(&cfg) {
        Ok(o) => o,
        Err(e) => {
            tracing::error!("MQTT ingest: {e}");
            return;
        }
    };
    let (client, eventloop) = AsyncClient::new(opts, 1024);
    // Unbounded on purpose: the event loop must never wait on the storing side. Acknowledgements
    // (PUBACK and the ack publishes) go out through the event loop; if it waited here for room
    // while the storing side waited for the event loop to take its acknowledgements, both would
    // stop for good. The soak test (tests/tests/soak.rs) found this after a daemon restart with a
    // large backlog on a broker without an in-flight limit. What is buffered here is what the
    // broker sent unacknowledged, which the client would otherwise hold anyway.
    let (tx, rx) = mpsc::unbounded_channel::<Publish>();
    let prefix = cfg.topic_prefix.trim_end_matches('/').to_string();
    let filters = Filters {
        batch: if cfg.share_group.is_empty() { format!("{prefix}/+/+/batch") } else { format!("$share/{}/{prefix}/+/+/batch", cfg.share_group) },
        status: format!("{prefix}/+/+/status"),
    };
    let events = tokio::spawn(pump_events(eventloop, client.clone(), filters, ingest.metrics.clone(), cfg.url.clone(), tx, cancel.clone()));
    let handler = Handler { ingest, tokens, client: client.clone(), prefix };
    store_in_order(&handler, rx, &cancel).await;
    let _ = client.disconnect().await;
    let _ = tokio::time::timeout(Duration::from_secs(2), events).await;
}

/// The subscriptions: gateways' batches (shared between the daemons of a group) and statuses.
struct Filters {
    batch: String,
    status: String,
}

/// Drives the client's event loop: subscribes on each connection, passes the messages on to
/// `tx`, reconnects with a back-off, until `cancel` fires.
async fn pump_events(mut eventloop: EventLoop, client: AsyncClient, filters: Filters, metrics: Metrics, url: String, tx: mpsc::UnboundedSender<Publish>, cancel: CancellationToken) {
    let mut backoff = Duration::from_millis(200);
    loop {
        let ev = tokio::select! {
            ev = eventloop.poll() => ev,
            () = cancel.cancelled() => break,
        };
        match ev {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                backoff = Duration::from_millis(200);
                tracing::info!(%url, "MQTT ingest connected; subscribing to {} and {}", filters.batch, filters.status);
                let c = client.clone();
                let (b, st) = (filters.batch.clone(), filters.status.clone());
                tokio::spawn(async move {
                    let _ = c.subscribe(b, QoS::AtLeastOnce).await;
                    let _ = c.subscribe(st, QoS::AtLeastOnce).await;
                });
            }
            Ok(Event::Incoming(Packet::SubAck(_))) => {
                // On stdout too, for operators and tests waiting for the daemon to be ready.
                println!("energyd MQTT ingest subscribed on {url}");
                use std::io::Write as _;
                let _ = std::io::stdout().flush();
            }
            Ok(Event::Incoming(Packet::Publish(p))) => {
                if tx.send(p).is_err() {
                    break;
                }
            }
            Ok(_) => {}
            Err(e) => {
                metrics.rejected.with_label_values(&["mqtt", "connection"]).inc();
                tracing::warn!(%url, "MQTT ingest: {e}; reconnecting");
                if !energy_gateway::uplink::pause_before_retry(&mut backoff, Duration::from_secs(30), &cancel).await {
                    break;
                }
            }
        }
    }
}

/// Stores the messages of `rx` concurrently (up to MAX_IN_PROGRESS), so that the store's writer
/// can commit several in one transaction, and acknowledges them to the broker in arrival order;
/// at `cancel`, lets what is being stored finish and be acknowledged.
async fn store_in_order(h: &Handler, mut rx: mpsc::UnboundedReceiver<Publish>, cancel: &CancellationToken) {
    let mut in_progress: VecDeque<(tokio::task::JoinHandle<bool>, Publish)> = VecDeque::new();
    loop {
        tokio::select! {
            biased;
            done = async {
                match in_progress.front_mut() {
                    Some(front) => (&mut front.0).await,
                    None => std::future::pending().await,
                }
            }, if !in_progress.is_empty() => {
                if let Some((_, p)) = in_progress.pop_front() {
                    if done.unwrap_or(false) {
                        let _ = h.client.ack(&p).await;
                    }
                }
            }
            p = rx.recv(), if in_progress.len() < MAX_IN_PROGRESS => {
                let Some(p) = p else { break };
                let task = handle_message(h, &p);
                in_progress.push_back((task, p));
            }
            () = cancel.cancelled() => break,
        }
    }
    for (t, p) in in_progress {
        if t.await.unwrap_or(false) {
            let _ = h.client.ack(&p).await;
        }
    }
}

/// Batches stored at the same time.
const MAX_IN_PROGRESS: usize = 8;

/// Rejections published for one batch at most: beyond, one covers the whole refused stretch.
const MAX_REJECTED_RUNS: usize = 64;

/// Starts handling one message; the task's result says whether to acknowledge it to the broker.
fn handle_message(h: &Handler, p: &Publish) -> tokio::task::JoinHandle<bool> {
    let Some(parts) = parse_topic(&h.prefix, &p.topic) else {
        tracing::warn!(topic = %p.topic, "message on an unexpected topic; ignored");
        return tokio::spawn(async { true });
    };
    let (site, gateway) = (parts.site.to_string(), parts.gateway.to_string());
    match parts.kind {
        "status" => {
            let online = p.payload.as_ref() == b"online";
            h.ingest.gateways().set_online(&gateway, &site, online);
            tracing::info!(%gateway, %site, online, "gateway status");
            tokio::spawn(async { true })
        }
        "batch" => {
            h.ingest.gateways().set_seen(&gateway, &site);
            let (h, payload) = (h.clone(), p.payload.clone());
            tokio::spawn(async move { h.batch(&site, &gateway, &payload).await })
        }
        _ => tokio::spawn(async { true }),
    }
}

impl Handler {
    /// Stores a batch and publishes its acknowledgement; returns whether to acknowledge the
    /// message to the broker.
    async fn batch(&self, site: &str, gateway: &str, payload: &[u8]) -> bool {
        let ack_topic = format!("{}/{site}/{gateway}/ack", self.prefix);
        let now = chrono::Utc::now().timestamp_millis();
        // The topic names the gateway: it writes only its meters (crate::auth's rule).
        let listed = self.tokens.as_ref().map(|t| t.listed_meters(gateway)).unwrap_or_default();
        let who = Principal { name: format!("MQTT gateway {gateway}"), role: Role::Gateway, agency: None, gateway: Some(gateway.to_string()), meters: listed.clone(), remote: None };
        let sender = Sender { who: &who, gateway, listed: &listed, settle_refused: true, unassigned_ok: self.tokens.is_none() };
        let limit = self.ingest.max_body_bytes();
        let (result, epoch) = match gunzip_if_gzip(payload, limit) {
            Ok(bytes) => (self.ingest.batch(&bytes, Some(gateway), Some(sender), now).await, energy_wire::batch_epoch(&bytes)),
            Err(e) => (Err(BatchError::Rejected(e.into())), None),
        };
        match result {
            Ok(stored) => self.acknowledge(gateway, &ack_topic, &stored, epoch.as_deref()).await,
            Err(BatchError::Rejected(r)) => {
                tracing::warn!(%gateway, reason = %r.reason, "batch rejected");
                if let Some((_, first, n)) = r.identity {
                    let mut body = serde_json::json!({ "rejected": [first, first + n as u64 - 1], "reason": r.reason });
                    if let Some(e) = epoch {
                        body["epoch"] = serde_json::json!(e);
                    }
                    let _ = self.client.publish(ack_topic, QoS::AtLeastOnce, false, body.to_string()).await;
                }
                true
            }
            Err(BatchError::Store(e)) => {
                // Not acknowledged: the broker delivers it again after a reconnect. The
                // gateway is told why, as a `retry` (never `rejected`: nothing is wrong
                // with the batch; it keeps it and sends it again).
                tracing::warn!(%gateway, "batch not stored, left for redelivery: {e}");
                let identity = gunzip_if_gzip(payload, limit).ok().and_then(|b| energy_wire::batch_identity(&b));
                if let Some((_, first, n)) = identity {
                    let mut body = retry_notice(first, n, &e);
                    if let Some(ep) = &epoch {
                        body["epoch"] = serde_json::json!(ep);
                    }
                    let _ = self.client.publish(ack_topic, QoS::AtLeastOnce, false, body.to_string()).await;
                }
                false
            }
        }
    }

    /// Publishes what a stored batch did: the rejections of its refused samples (the gateway
    /// sets them aside with the reason; they are recorded as received, like the rest), then the
    /// ranges stored. Returns whether every publish went out.
    async fn acknowledge(&self, gateway: &str, ack_topic: &str, stored: &Stored, epoch: Option<&str>) -> bool {
        if !stored.refused.is_empty() {
            let reason: Vec<&str> = stored.refused.iter().map(|(_, r)| r.as_str()).collect();
            let reason = format!("refused, not stored: {}", reason.join("; "));
            let runs: Vec<(u64, u64)> = if stored.refused_seqs.len() <= MAX_REJECTED_RUNS {
                stored.refused_seqs.clone()
            } else {
                stored.refused_seqs.first().zip(stored.refused_seqs.last()).map(|(a, z)| vec![(a.0, z.1)]).unwrap_or_default()
            };
            for (a, z) in runs {
                let mut body = serde_json::json!({ "rejected": [a, z], "reason": reason, "refused_meters": stored.refused.iter().map(|(m, _)| m).collect::<Vec<_>>() });
                if let Some(e) = epoch {
                    body["epoch"] = serde_json::json!(e);
                }
                if self.client.publish(ack_topic, QoS::AtLeastOnce, false, body.to_string()).await.is_err() {
                    return false;
                }
            }
        }
        let ranges: Vec<[u64; 2]> = stored.outcome.ranges.iter().rev().take(64).rev().map(|r| [r.0, r.1]).collect();
        let mut body = serde_json::json!({ "gateway": stored.gateway, "acked_through": stored.outcome.acked_through, "ranges": ranges });
        if stored.outcome.points_conflicting > 0 {
            let m = conflicts_message(&stored.outcome.conflicts, stored.outcome.points_conflicting);
            tracing::warn!(%gateway, "{m}");
            body["points_conflicting"] = stored.outcome.points_conflicting.into();
            body["conflicts"] = m.into();
        }
        // Acknowledgements are per queue epoch: a gateway ignores those of another.
        if let Some(e) = &stored.outcome.epoch {
            body["epoch"] = serde_json::json!(e);
        }
        self.client.publish(ack_topic, QoS::AtLeastOnce, false, body.to_string()).await.is_ok()
    }
}

/// `{"retry": [first, last], "reason": ..}`: the batch was not stored for a reason of the
/// daemon's (a full disk, a closing store); the gateway keeps it and sends it again.
fn retry_notice(first: u64, n: usize, e: &crate::store::StoreError) -> serde_json::Value {
    let reason = e.to_string();
    let reason = if reason.contains("retry later") { reason } else { format!("{reason}; retry later") };
    serde_json::json!({ "retry": [first, first + (n.max(1) as u64) - 1], "reason": reason })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_are_parsed_strictly() {
        assert_eq!(parse_topic("energy/v1", "energy/v1/ty/gw-1/batch"), Some(TopicParts { site: "ty", gateway: "gw-1", kind: "batch" }));
        assert_eq!(parse_topic("energy/v1/", "energy/v1/ty/gw-1/status").map(|p| p.kind), Some("status"));
        assert_eq!(parse_topic("energy/v1", "energy/v1/ty/gw-1/batch/x"), None);
        assert_eq!(parse_topic("energy/v1", "energy/v1//gw/batch"), None);
        assert_eq!(parse_topic("energy/v1", "other/ty/gw/batch"), None);
    }

    /// A batch not stored for a full disk is answered `retry` with the reason, never `rejected`
    /// (which would make the gateway set it aside).
    #[test]
    fn a_full_disk_asks_the_gateway_to_retry() {
        let e = crate::store::StoreError::DiskFull("the disk holding the store is full (0 bytes free): nothing was stored; retry later".into());
        let v = retry_notice(41, 10, &e);
        assert_eq!(v["retry"], serde_json::json!([41, 50]));
        assert!(v.get("rejected").is_none());
        assert!(v["reason"].as_str().unwrap().contains("disk holding the store is full"));
        assert_eq!(v["reason"].as_str().unwrap().matches("retry later").count(), 1);
        let v = retry_notice(1, 1, &crate::store::StoreError::Closed);
        assert_eq!(v["retry"], serde_json::json!([1, 1]));
        assert!(v["reason"].as_str().unwrap().ends_with("retry later"));
    }
}
