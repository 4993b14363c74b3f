//! Gateway batches, from HTTP or MQTT: decode, validate, store, and say what happened.

use std::io::Read;

use crate::api::AppState;
use crate::store::{StoreError, WriteOutcome};

use super::check_time;

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
}

/// gzip bodies start with 1f 8b; JSON never does.
pub fn gunzip_if_needed(bytes: &[u8], limit: usize) -> Result<std::borrow::Cow<'_, [u8]>, Rejection> {
    if bytes.len() < 2 || bytes[0] != 0x1f || bytes[1] != 0x8b {
        return Ok(std::borrow::Cow::Borrowed(bytes));
    }
    let mut out = Vec::new();
    let mut dec = flate2::read::GzDecoder::new(bytes).take(limit as u64 + 1);
    if let Err(e) = dec.read_to_end(&mut out) {
        return Err(Rejection { identity: None, reason: format!("body is not valid gzip: {e}"), label: "bad_gzip", too_large: false });
    }
    if out.len() > limit {
        return Err(Rejection { identity: None, reason: format!("decompressed body exceeds the limit of {limit} bytes"), label: "too_large", too_large: true });
    }
    Ok(std::borrow::Cow::Owned(out))
}

/// Decodes, validates and stores a batch. `from_gateway` is the sender's identity where the
/// transport gives one (the MQTT topic); a batch claiming another gateway is refused.
pub async fn ingest_batch(s: &AppState, bytes: &[u8], from_gateway: Option<&str>, now_ms: i64) -> Result<Stored, BatchError> {
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
        match check_time(smp.t, now_ms, s.retention.raw_ms()) {
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
        s.unassigned.lock().unwrap_or_else(|e| e.into_inner()).extend(unassigned.iter().cloned());
    }
    let gateway = batch.gateway.clone();
    let oldest = batch.samples.iter().filter(|x| !x.v.is_empty()).map(|x| x.t).min();
    let outcome = s.store.write_batch(batch).await.map_err(BatchError::Store)?;
    if outcome.new_epoch {
        s.metrics.gateway_epochs_new.inc();
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
    let result = if outcome.samples_stored == 0 && outcome.samples_duplicate > 0 { "duplicate" } else { "stored" };
    s.metrics.batches.with_label_values(&[result]).inc();
    s.note_batch(&gateway, now_ms, oldest);
    Ok(Stored { gateway, outcome, unassigned, too_old })
}
