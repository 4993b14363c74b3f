//! Gateway batches, from HTTP or MQTT: decode, validate, store, and say what happened.

use crate::store::{StoreError, WriteOutcome};

use super::body::BodyError;
use super::check_time;
use super::service::Ingest;

/// A batch refused before storage. `identity` names the samples concerned when the batch could
/// be read that far: (gateway, first sequence, count).
#[derive(Debug)]
pub struct Rejection {
    pub identity: Option<(String, u64, usize)>,
    pub reason: String,
    pub label: &'static str,
    /// Over the size limit (HTTP 413) rather than invalid (400).
    pub too_large: bool,
}

#[derive(Debug)]
pub enum BatchError {
    Rejected(Rejection),
    Store(StoreError),
}

/// What storing a batch did.
#[derive(Debug)]
pub struct Stored {
    pub gateway: String,
    pub outcome: WriteOutcome,
    pub unassigned: Vec<String>,
    /// Samples older than the raw retention: acknowledged (so that the gateway does not resend
    /// them forever) but not stored.
    pub too_old: u64,
    /// Meters the sender may not write, each with the reason; their samples were not stored.
    pub refused: Vec<(String, String)>,
    /// The sequence numbers of the refused samples, as ranges.
    pub refused_seqs: Vec<(u64, u64)>,
}

/// The gateway a batch comes from, for the rule of which meters it writes
/// ([`crate::auth::gateway_refusal`]).
pub struct Sender<'a> {
    /// Who, for the audit log.
    pub who: &'a crate::auth::Principal,
    pub gateway: &'a str,
    /// The meters its tokens list.
    pub listed: &'a [String],
    /// HTTP: the refused samples are not recorded as received, so that the gateway keeps them
    /// and sends them again (after its 403) until the meter is assigned. MQTT: they are recorded,
    /// since the rejection published back makes the gateway set them aside.
    pub settle_refused: bool,
    /// Without `[auth]` there are no tokens to list meters: a meter the registry assigns to no
    /// gateway is taken from any (as over HTTP without `[auth]`); one assigned to another gateway
    /// is still refused.
    pub unassigned_ok: bool,
}

impl From<BodyError> for Rejection {
    fn from(e: BodyError) -> Self {
        Rejection { identity: None, label: e.label(), too_large: matches!(e, BodyError::TooLarge { .. }), reason: e.to_string() }
    }
}

impl Ingest {
    /// Decodes, validates and stores a batch. `from_gateway` is the sender's identity where the
    /// transport gives one (the MQTT topic); a batch claiming another gateway is refused. With a
    /// `sender`, samples of meters it may not write are not stored (see [`Stored::refused`]); the
    /// others are.
    pub async fn batch(&self, bytes: &[u8], from_gateway: Option<&str>, sender: Option<Sender<'_>>, now_ms: i64) -> Result<Stored, BatchError> {
        let s = self;
        let reject = |reason: String, label: &'static str| {
            s.metrics.batches.with_label_values(&["invalid"]).inc();
            s.metrics.rejected.with_label_values(&["batch", label]).inc();
            BatchError::Rejected(Rejection { identity: energy_wire::batch_identity(bytes), reason, label, too_large: false })
        };
        let batch = match energy_wire::decode_batch(bytes) {
            Ok(b) => b,
            Err(e) => return Err(reject(e.to_string(), "invalid_batch")),
        };
        if let Some(g) = from_gateway {
            if g != batch.gateway {
                return Err(reject(format!("batch from gateway `{}` was sent as gateway `{g}` (its MQTT topic or its token)", batch.gateway), "wrong_gateway"));
            }
        }
        let mut batch = batch;
        let mut too_old = 0u64;
        for (i, smp) in batch.samples.iter_mut().enumerate() {
            match check_time(smp.t, now_ms, s.raw_ms()) {
                Ok(()) => {}
                // Older than the retention: nothing to store, but the sample is done with.
                Err(e) if e.label == "too_old" => {
                    smp.v.clear();
                    too_old += 1;
                }
                Err(e) => return Err(reject(format!("invalid batch at `samples[{i}].t`: {e}"), e.label)),
            }
        }
        if too_old > 0 {
            s.metrics.rejected.with_label_values(&["batch", "too_old"]).inc_by(too_old);
            tracing::warn!(gateway = %batch.gateway, samples = too_old, "samples older than the raw retention were not stored");
        }
        let mut unassigned: Vec<String> = batch.samples.iter().filter(|x| s.registry.meter(&x.meter).is_none()).map(|x| x.meter.clone()).collect();
        unassigned.sort();
        unassigned.dedup();
        if !unassigned.is_empty() {
            s.metrics.rejected.with_label_values(&["batch", "unknown_meter"]).inc();
            tracing::warn!(gateway = %batch.gateway, meters = ?unassigned, "batch has meters not in the registry; kept as unassigned");
            s.note_unassigned(&unassigned);
        }
        let gateway = batch.gateway.clone();
        let (refused, refused_pos) = match &sender {
            Some(from) => refusals(s, from, &batch),
            None => (Vec::new(), Vec::new()),
        };
        let refused_seqs = runs(&refused_pos).into_iter().map(|(a, z)| (batch.seq + a as u64, batch.seq + z as u64)).collect();
        if let (Some(from), false) = (&sender, refused.is_empty()) {
            s.audit_refused(from, &gateway, batch.seq, &refused, refused_pos.len()).await;
        }
        let oldest = batch.samples.iter().filter(|x| !x.v.is_empty()).map(|x| x.t).min();
        let all_refused = !refused_pos.is_empty() && refused_pos.len() == batch.samples.len();
        let outcome = match sender {
            Some(from) if !refused_pos.is_empty() => {
                if from.settle_refused {
                    for &i in &refused_pos {
                        batch.samples[i].v.clear();
                    }
                    s.store.write_batch(batch).await.map_err(BatchError::Store)?
                } else {
                    write_allowed(s, batch, &refused_pos).await?
                }
            }
            _ => s.store.write_batch(batch).await.map_err(BatchError::Store)?,
        };
        if outcome.new_epoch {
            s.note_new_epoch(&gateway, &outcome);
        }
        let result = if outcome.samples_stored == 0 && outcome.samples_duplicate > 0 { "duplicate" } else { "stored" };
        s.metrics.batches.with_label_values(&[result]).inc();
        // A batch refused whole leaves no trace of the gateway.
        if !all_refused {
            s.gateways().note_batch(&gateway, now_ms, oldest);
        }
        Ok(Stored { gateway, outcome, unassigned, too_old, refused, refused_seqs })
    }

    /// Logs and counts the first batch of a gateway's queue epoch.
    fn note_new_epoch(&self, gateway: &str, outcome: &WriteOutcome) {
        self.metrics.gateway_epochs_new.inc();
        let epoch = outcome.epoch.as_deref().unwrap_or("none");
        if outcome.earlier_epochs.is_empty() {
            tracing::info!(%gateway, epoch, "first batch of a gateway queue epoch");
        } else {
            let earlier: Vec<&str> = outcome.earlier_epochs.iter().map(|e| if e.is_empty() { "none" } else { e.as_str() }).collect();
            tracing::warn!(
                %gateway,
                epoch,
                earlier_epochs = %earlier.join(", "),
                "gateway started a new queue epoch (its queue was made again): its sequence numbers start over and are kept apart from the earlier epochs'"
            );
        }
    }

    /// Counts, logs and audits the samples of a batch refused for meters its sender may not write.
    async fn audit_refused(&self, from: &Sender<'_>, gateway: &str, seq: u64, refused: &[(String, String)], samples: usize) {
        self.metrics.rejected.with_label_values(&["batch", "meter_not_assigned"]).inc_by(samples as u64);
        tracing::warn!(gateway = %gateway, meters = ?refused, samples, "samples of meters not assigned to the gateway refused");
        let detail = serde_json::json!({
            "gateway": gateway, "seq": seq, "samples_refused": samples,
            "meters": refused.iter().map(|(m, r)| serde_json::json!({ "meter": m, "reason": r })).collect::<Vec<_>>(),
        });
        let (audit_who, target) = (from.who.clone(), format!("gateway {gateway}"));
        let audit = self.audit.clone();
        let _ = tokio::task::spawn_blocking(move || audit.record_ingest_refusal(&audit_who, &target, detail)).await;
    }
}

/// The meters of a batch its sender may not write (each once, with the reason) and the
/// positions of their samples.
fn refusals(s: &Ingest, from: &Sender<'_>, batch: &energy_wire::Batch) -> (Vec<(String, String)>, Vec<usize>) {
    let mut verdicts: std::collections::HashMap<&str, bool> = std::collections::HashMap::new();
    let mut refused = Vec::new();
    let mut positions = Vec::new();
    for (i, smp) in batch.samples.iter().enumerate() {
        let bad = *verdicts.entry(smp.meter.as_str()).or_insert_with(|| match crate::auth::gateway_refusal(&s.registry, from.gateway, from.listed, &smp.meter) {
            Some(_) if from.unassigned_ok && s.registry.meter(&smp.meter).and_then(|m| m.gateway.as_deref()).is_none() => false,
            Some(reason) => {
                refused.push((smp.meter.clone(), reason));
                true
            }
            None => false,
        });
        if bad {
            positions.push(i);
        }
    }
    (refused, positions)
}

/// Sorted positions as runs `(first, last)`.
fn runs(pos: &[usize]) -> Vec<(usize, usize)> {
    let mut out: Vec<(usize, usize)> = Vec::new();
    for &p in pos {
        match out.last_mut() {
            Some(r) if r.1 + 1 == p => r.1 = p,
            _ => out.push((p, p)),
        }
    }
    out
}

/// Stores the samples of a batch but those at `refused` (sorted), as one batch per run of
/// allowed samples with their own sequence numbers, so that the refused ones are not recorded
/// as received. Each run is idempotent on its sequence numbers, so a retry after a failure
/// between two of them stores only what is missing.
async fn write_allowed(s: &Ingest, mut batch: energy_wire::Batch, refused: &[usize]) -> Result<WriteOutcome, BatchError> {
    let samples = std::mem::take(&mut batch.samples);
    let n = samples.len();
    let mut total = WriteOutcome::default();
    let mut next = refused.iter().peekable();
    let mut run = Vec::new();
    let mut start = 0usize;
    for (i, smp) in samples.into_iter().enumerate() {
        if next.peek() == Some(&&i) {
            next.next();
            if !run.is_empty() {
                let part = energy_wire::Batch { seq: batch.seq + start as u64, samples: std::mem::take(&mut run), ..batch.clone() };
                add(&mut total, s.store.write_batch(part).await.map_err(BatchError::Store)?);
            }
            start = i + 1;
            continue;
        }
        run.push(smp);
    }
    if !run.is_empty() && start < n {
        let part = energy_wire::Batch { seq: batch.seq + start as u64, samples: run, ..batch };
        add(&mut total, s.store.write_batch(part).await.map_err(BatchError::Store)?);
    }
    Ok(total)
}

fn add(total: &mut WriteOutcome, o: WriteOutcome) {
    total.samples_stored += o.samples_stored;
    total.samples_duplicate += o.samples_duplicate;
    total.points_written += o.points_written;
    total.points_unchanged += o.points_unchanged;
    total.points_conflicting += o.points_conflicting;
    let room = crate::store::MAX_CONFLICTS_SHOWN.saturating_sub(total.conflicts.len());
    total.conflicts.extend(o.conflicts.into_iter().take(room));
    total.acked_through = o.acked_through;
    total.ranges = o.ranges;
    total.epoch = o.epoch;
    if o.new_epoch {
        total.new_epoch = true;
        total.earlier_epochs = o.earlier_epochs;
    }
}
