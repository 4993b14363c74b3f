//! Samples and batches, and their JSON encoding (schema version 1).
//!
//! ```json
//! {"schema":1,"gateway":"gw-a","seq":17,"samples":[
//!   {"meter":"b1-elec","t":1764288000000,"v":{"active_energy_import":1234.5,"active_power":41.2}}
//! ]}
//! ```
//!
//! * `gateway`: the sending gateway's id; `seq`: the sequence number of the batch's first sample.
//!   Sample `i` of the batch has sequence number `seq + i`. Sequence numbers start at 1 and never
//!   repeat for one gateway, so (gateway, sequence) identifies a sample for deduplication however
//!   the gateway groups samples into batches after a restart.
//! * `epoch` (optional): the sending gateway's queue epoch, a random id the gateway made when it
//!   created its queue directory. Sequence numbers are unique per (gateway, epoch): a gateway
//!   whose queue was lost or reinstalled starts again at 1 under a new epoch, and its new samples
//!   are not taken for duplicates of the old ones. A batch without it (a gateway from before
//!   epochs, or a queue created by one) belongs to the gateway's epoch-less numbering, as before.
//! * `t`: the instant the meter was read, in milliseconds since the Unix epoch (UTC).
//! * `v`: quantity name -> value in the quantity's contract unit. A value the meter did not give
//!   (NaN, "not available") is absent, never 0.

use std::collections::BTreeMap;

use crate::ident::validate_id;
use crate::quantity::Quantity;

/// The encoding version written by this crate and the only one it reads.
pub const SCHEMA_VERSION: u32 = 1;

/// The most samples one batch may carry.
pub const MAX_SAMPLES_PER_BATCH: usize = 100_000;

/// Earliest and latest sample time accepted on the wire (2000-01-01 and 2100-01-01, UTC).
const MIN_T_MS: i64 = 946_684_800_000;
const MAX_T_MS: i64 = 4_102_444_800_000;

/// The values one meter gave at one instant.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sample {
    pub meter: String,
    /// Milliseconds since the Unix epoch, UTC.
    pub t: i64,
    pub v: BTreeMap<Quantity, f64>,
}

/// A run of samples from one gateway.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Batch {
    pub schema: u32,
    pub gateway: String,
    /// The sender's queue epoch; absent for a queue without one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<String>,
    /// Sequence number of the first sample; sample `i` has `seq + i`.
    pub seq: u64,
    pub samples: Vec<Sample>,
}

impl Batch {
    pub fn new(gateway: impl Into<String>, seq: u64, samples: Vec<Sample>) -> Self {
        Batch { schema: SCHEMA_VERSION, gateway: gateway.into(), epoch: None, seq, samples }
    }

    /// The same batch under a queue epoch (`None`: none).
    pub fn with_epoch(mut self, epoch: Option<String>) -> Self {
        self.epoch = epoch;
        self
    }

    /// Sequence number of the last sample (equal to `seq - 1` for an empty batch).
    pub fn last_seq(&self) -> u64 {
        self.seq + self.samples.len() as u64 - 1
    }

    /// Number of (meter, quantity, time, value) points in the batch.
    pub fn point_count(&self) -> usize {
        self.samples.iter().map(|s| s.v.len()).sum()
    }

    /// Checks everything the types do not: ids, times, finiteness, sizes, version.
    pub fn validate(&self) -> Result<(), WireError> {
        if self.schema != SCHEMA_VERSION {
            return Err(WireError::Schema(self.schema));
        }
        validate_id(&self.gateway).map_err(|e| WireError::Invalid { path: "gateway".into(), reason: e.to_string() })?;
        if let Some(e) = &self.epoch {
            validate_epoch(e).map_err(|reason| WireError::Invalid { path: "epoch".into(), reason })?;
        }
        if self.seq == 0 {
            return Err(WireError::Invalid { path: "seq".into(), reason: "sequence numbers start at 1".into() });
        }
        if self.samples.len() > MAX_SAMPLES_PER_BATCH {
            return Err(WireError::Invalid {
                path: "samples".into(),
                reason: format!("{} samples, more than the limit of {MAX_SAMPLES_PER_BATCH}", self.samples.len()),
            });
        }
        if self.seq.checked_add(self.samples.len() as u64).is_none() {
            return Err(WireError::Invalid { path: "seq".into(), reason: "sequence number overflows".into() });
        }
        for (i, s) in self.samples.iter().enumerate() {
            validate_id(&s.meter)
                .map_err(|e| WireError::Invalid { path: format!("samples[{i}].meter"), reason: e.to_string() })?;
            if !(MIN_T_MS..MAX_T_MS).contains(&s.t) {
                return Err(WireError::Invalid {
                    path: format!("samples[{i}].t"),
                    reason: format!("time {} ms is outside 2000-01-01..2100-01-01", s.t),
                });
            }
            for (q, v) in &s.v {
                if !v.is_finite() {
                    return Err(WireError::Invalid {
                        path: format!("samples[{i}].v.{q}"),
                        reason: "value is not a finite number".into(),
                    });
                }
            }
        }
        Ok(())
    }
}

/// The longest queue epoch accepted.
pub(crate) const MAX_EPOCH_LEN: usize = 64;

/// A queue epoch: 1 to [`MAX_EPOCH_LEN`] characters of ASCII letters, digits, `-` and `_`.
pub fn validate_epoch(e: &str) -> Result<(), String> {
    if e.is_empty() || e.len() > MAX_EPOCH_LEN {
        return Err(format!("an epoch has 1 to {MAX_EPOCH_LEN} characters, not {}", e.len()));
    }
    if let Some(c) = e.chars().find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_')) {
        return Err(format!("character {c:?} is not allowed in an epoch (letters, digits, - and _)"));
    }
    Ok(())
}

/// Why a batch could not be decoded.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum WireError {
    /// Not JSON, or JSON of the wrong shape; `path` says where.
    #[error("malformed batch at `{path}`: {reason}")]
    Malformed { path: String, reason: String },
    /// Well-formed, but a field breaks a rule.
    #[error("invalid batch at `{path}`: {reason}")]
    Invalid { path: String, reason: String },
    #[error("unsupported batch schema version {0}; this build reads version {SCHEMA_VERSION}")]
    Schema(u32),
}

/// Encodes a batch as JSON (schema version [`SCHEMA_VERSION`]).
pub fn encode_batch(batch: &Batch) -> Vec<u8> {
    // Serialising these plain types into a Vec cannot fail.
    serde_json::to_vec(batch).unwrap_or_default()
}

/// The identity of a batch that may not decode: (gateway, first sequence, number of samples),
/// read leniently so that a rejection can still say which samples it concerns.
pub fn batch_identity(bytes: &[u8]) -> Option<(String, u64, usize)> {
    #[derive(serde::Deserialize)]
    struct Ident {
        gateway: String,
        seq: u64,
        samples: Vec<serde::de::IgnoredAny>,
    }
    let i: Ident = serde_json::from_slice(bytes).ok()?;
    (i.seq > 0 && !i.samples.is_empty()).then_some((i.gateway, i.seq, i.samples.len()))
}

/// The queue epoch of a batch that may not decode, read leniently (`None`: none, or unreadable),
/// so that a rejection can be addressed to the queue that sent the batch.
pub fn batch_epoch(bytes: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Ident {
        epoch: Option<String>,
    }
    serde_json::from_slice::<Ident>(bytes).ok()?.epoch.filter(|e| validate_epoch(e).is_ok())
}

/// Decodes and validates a batch. Errors name the field at fault.
pub fn decode_batch(bytes: &[u8]) -> Result<Batch, WireError> {
    // Read the version first so that a future version gets a clear message, not a shape error.
    #[derive(serde::Deserialize)]
    struct Version {
        schema: Option<serde_json::Value>,
    }
    if let Ok(Version { schema: Some(v) }) = serde_json::from_slice::<Version>(bytes) {
        match v.as_u64() {
            Some(n) if n == u64::from(SCHEMA_VERSION) => {}
            Some(n) => return Err(WireError::Schema(u32::try_from(n).unwrap_or(u32::MAX))),
            None => {
                return Err(WireError::Invalid { path: "schema".into(), reason: "must be a whole number".into() })
            }
        }
    }
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    let batch: Batch = serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        WireError::Malformed { path, reason: e.into_inner().to_string() }
    })?;
    batch.validate()?;
    Ok(batch)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample(meter: &str, t: i64, values: &[(Quantity, f64)]) -> Sample {
        Sample { meter: meter.into(), t, v: values.iter().copied().collect() }
    }

    #[test]
    fn round_trip() {
        let b = Batch::new(
            "gw-1",
            7,
            vec![
                sample("m1", 1_764_288_000_000, &[(Quantity::ActiveEnergyImport, 1234.5), (Quantity::ActivePower, 4.25)]),
                sample("m2", 1_764_288_000_500, &[(Quantity::WaterVolume, 10.0)]),
            ],
        );
        let bytes = encode_batch(&b);
        assert_eq!(decode_batch(&bytes).unwrap(), b);
        assert_eq!(b.last_seq(), 8);
        assert_eq!(b.point_count(), 3);
    }

    #[test]
    fn errors_name_the_problem() {
        let cases: &[(&str, &str)] = &[
            ("not json", "malformed batch at `.`"),
            (r#"{"schema":2,"gateway":"g","seq":1,"samples":[]}"#, "unsupported batch schema version 2"),
            (r#"{"schema":"x","gateway":"g","seq":1,"samples":[]}"#, "invalid batch at `schema`"),
            (r#"{"schema":1,"gateway":"g g","seq":1,"samples":[]}"#, "invalid batch at `gateway`"),
            (r#"{"schema":1,"gateway":"g","seq":0,"samples":[]}"#, "invalid batch at `seq`"),
            (
                r#"{"schema":1,"gateway":"g","seq":1,"samples":[{"meter":"m","t":1764288000000,"v":{"active_power":"abc"}}]}"#,
                "samples[0].v.active_power",
            ),
            (
                r#"{"schema":1,"gateway":"g","seq":1,"samples":[{"meter":"m","t":1764288000000,"v":{"power":1}}]}"#,
                "unknown quantity `power`",
            ),
            (
                r#"{"schema":1,"gateway":"g","seq":1,"samples":[{"meter":"m","t":5,"v":{}}]}"#,
                "invalid batch at `samples[0].t`",
            ),
            (
                r#"{"schema":1,"gateway":"g","seq":1,"samples":[{"meter":"","t":1764288000000,"v":{}}]}"#,
                "samples[0].meter",
            ),
            (r#"{"schema":1,"gateway":"g","seq":1}"#, "missing field `samples`"),
            (r#"{"schema":1,"gateway":"g","seq":1,"samples":[],"extra":1}"#, "unknown field `extra`"),
            (
                r#"{"schema":1,"gateway":"g","seq":1,"samples":[{"meter":"m","t":1764288000000,"v":{"active_power":1e999}}]}"#,
                "samples[0].v.active_power",
            ),
        ];
        for (input, expected) in cases {
            let err = decode_batch(input.as_bytes()).unwrap_err().to_string();
            assert!(err.contains(expected), "input {input}\n  error {err}\n  expected to contain {expected}");
        }
    }

    #[test]
    fn identity_of_a_batch_that_does_not_validate() {
        let bad = br#"{"schema":1,"gateway":"g","seq":7,"samples":[{"meter":"m","t":5,"v":{}},{"x":1}]}"#;
        assert!(decode_batch(bad).is_err());
        assert_eq!(batch_identity(bad), Some(("g".to_string(), 7, 2)));
        assert_eq!(batch_identity(b"nonsense"), None);
    }

    #[test]
    fn epoch_is_optional_and_checked() {
        let b = Batch::new("gw-1", 3, vec![sample("m1", 1_764_288_000_000, &[(Quantity::ActivePower, 1.0)])]).with_epoch(Some("3f9a0c".into()));
        let bytes = encode_batch(&b);
        assert!(String::from_utf8_lossy(&bytes).contains(r#""epoch":"3f9a0c""#));
        assert_eq!(decode_batch(&bytes).unwrap(), b);
        assert_eq!(batch_epoch(&bytes).as_deref(), Some("3f9a0c"));
        // Without an epoch the field is not written, and an old batch reads as before.
        let old = Batch::new("gw-1", 3, vec![]);
        assert!(!String::from_utf8_lossy(&encode_batch(&old)).contains("epoch"));
        assert_eq!(decode_batch(br#"{"schema":1,"gateway":"g","seq":1,"samples":[]}"#).unwrap().epoch, None);
        for (input, expected) in [
            (r#"{"schema":1,"gateway":"g","epoch":"","seq":1,"samples":[]}"#, "invalid batch at `epoch`"),
            (r#"{"schema":1,"gateway":"g","epoch":"a b","seq":1,"samples":[]}"#, "character ' ' is not allowed"),
            (r#"{"schema":1,"gateway":"g","epoch":7,"seq":1,"samples":[]}"#, "malformed batch at `epoch`"),
        ] {
            let err = decode_batch(input.as_bytes()).unwrap_err().to_string();
            assert!(err.contains(expected), "input {input}\n  error {err}\n  expected to contain {expected}");
        }
        let long = format!(r#"{{"schema":1,"gateway":"g","epoch":"{}","seq":1,"samples":[]}}"#, "a".repeat(65));
        assert!(decode_batch(long.as_bytes()).unwrap_err().to_string().contains("1 to 64 characters"));
    }

    #[test]
    fn non_finite_values_are_refused_by_validate() {
        let b = Batch::new("g", 1, vec![sample("m", 1_764_288_000_000, &[(Quantity::ActivePower, f64::NAN)])]);
        assert!(b.validate().unwrap_err().to_string().contains("not a finite number"));
    }

    fn arb_sample() -> impl Strategy<Value = Sample> {
        (
            "[a-z0-9_.-]{1,20}",
            MIN_T_MS..MAX_T_MS,
            proptest::collection::btree_map(proptest::sample::select(Quantity::ALL.to_vec()), -1e12f64..1e12, 0..6),
        )
            .prop_map(|(meter, t, v)| Sample { meter, t, v })
    }

    proptest! {
        #[test]
        fn any_valid_batch_round_trips(seq in 1u64..1 << 50, samples in proptest::collection::vec(arb_sample(), 0..20)) {
            let b = Batch::new("gw", seq, samples);
            prop_assert_eq!(decode_batch(&encode_batch(&b)).unwrap(), b);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode_batch(&bytes);
        }
    }
}
