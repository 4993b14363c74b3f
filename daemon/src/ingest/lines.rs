//! Line-protocol writes (InfluxDB v1 and v2 write APIs): parse, check, refuse the points of
//! meters the sender may not write, store the rest, and say what happened.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use super::config::UnknownMeter;
use super::lineproto::Precision;
use super::service::Ingest;
use super::{conflicts_message, lines_to_points, LineError};
use crate::auth::{Principal, Role};
use crate::store::{Point, StoreError, WriteOutcome};

/// What a line-protocol write did.
#[derive(Debug, Default)]
pub struct LinesWritten {
    /// The lines refused, with their reasons.
    pub errors: Vec<LineError>,
    /// Per meter the sender may not write: the reason and the points refused.
    pub refused: BTreeMap<String, (String, u64)>,
    /// Points sent to the store.
    pub sent: usize,
    pub outcome: WriteOutcome,
}

impl LinesWritten {
    /// Every point written: nothing refused, nothing in conflict.
    pub fn complete(&self) -> bool {
        self.errors.is_empty() && self.refused.is_empty() && self.outcome.points_conflicting == 0
    }

    /// `partial write: N points written, ...`: the lines rejected (the first 20), the points
    /// refused and the conflicts.
    pub fn message(&self) -> String {
        let written = self.sent as u64 - self.outcome.points_conflicting;
        let mut message = format!("partial write: {written} points written");
        if !self.errors.is_empty() {
            let shown: Vec<String> = self.errors.iter().take(20).map(|e| format!("line {}: {} (`{}`)", e.line, e.reason, e.text)).collect();
            let more = self.errors.len().saturating_sub(20);
            message.push_str(&format!(", {} lines rejected: {}", self.errors.len(), shown.join("; ")));
            if more > 0 {
                message.push_str(&format!("; and {more} more"));
            }
        }
        if !self.refused.is_empty() {
            let n: u64 = self.refused.values().map(|(_, n)| n).sum();
            let shown: Vec<String> = self.refused.values().map(|(reason, k)| format!("{reason} ({k} points)")).collect();
            message.push_str(&format!("; {n} points refused: {}", shown.join("; ")));
        }
        if self.outcome.points_conflicting > 0 {
            message.push_str("; ");
            message.push_str(&conflicts_message(&self.outcome.conflicts, self.outcome.points_conflicting));
        }
        message
    }
}

impl Ingest {
    /// Parses and stores a line-protocol body (already decompressed) sent by `principal`; `from`
    /// names the source in the store's records. Bad lines and refused meters are counted and
    /// reported, the good lines stored (InfluxDB's partial write).
    pub async fn lines(&self, bytes: &[u8], precision: Precision, principal: &Principal, from: String, now_ms: i64) -> Result<LinesWritten, StoreError> {
        let accept_unknown = self.unknown_meter == UnknownMeter::Accept;
        let reg = self.registry.clone();
        let mut report = lines_to_points(bytes, precision, now_ms, self.raw_ms(), &|m| reg.meter(m).is_some(), accept_unknown);
        for e in &report.errors {
            self.metrics.rejected.with_label_values(&["line_protocol", e.label]).inc();
        }
        let refused = self.refuse_foreign_meters(principal, &mut report.points).await;
        if !report.unassigned.is_empty() {
            self.note_unassigned(&report.unassigned);
        }
        let sent = report.points.len();
        let mut outcome = WriteOutcome::default();
        if sent > 0 {
            outcome = self.store.write_points_from(report.points, from).await?;
        }
        Ok(LinesWritten { errors: report.errors, refused, sent, outcome })
    }

    /// Takes out of `points` those of meters a gateway token may not write (the rule in
    /// crate::auth); counted and audited. Returns, per refused meter, the reason and the number
    /// of points.
    async fn refuse_foreign_meters(&self, principal: &Principal, points: &mut Vec<Point>) -> BTreeMap<String, (String, u64)> {
        let mut refused: BTreeMap<String, (String, u64)> = BTreeMap::new();
        if principal.role != Role::Gateway {
            return refused;
        }
        let mut allowed: HashMap<Arc<str>, bool> = HashMap::new();
        points.retain(|p| {
            let ok = *allowed.entry(p.meter.clone()).or_insert_with(|| match principal.meter_refusal(&self.registry, &p.meter) {
                None => true,
                Some(reason) => {
                    refused.insert(p.meter.to_string(), (reason, 0));
                    false
                }
            });
            if !ok {
                if let Some(r) = refused.get_mut(&*p.meter) {
                    r.1 += 1;
                }
            }
            ok
        });
        if !refused.is_empty() {
            let n: u64 = refused.values().map(|(_, n)| n).sum();
            self.metrics.rejected.with_label_values(&["line_protocol", "meter_not_assigned"]).inc_by(n);
            tracing::warn!(token = %principal.name, meters = ?refused.keys().collect::<Vec<_>>(), points = n, "line protocol points of meters not assigned to the gateway refused");
            let detail = serde_json::json!({
                "gateway": principal.gateway, "points_refused": n,
                "meters": refused.iter().map(|(m, (r, k))| serde_json::json!({ "meter": m, "reason": r, "points": k })).collect::<Vec<_>>(),
            });
            let (audit, who) = (self.audit.clone(), principal.clone());
            let _ = tokio::task::spawn_blocking(move || audit.record_ingest_refusal(&who, "line protocol", detail)).await;
        }
        refused
    }
}
