//! What the gateway does when its queue is full.
//!
//! The oldest unsent data is always kept (it is what the daemon is missing, and annual figures
//! need it). New samples then lose their fast gauges first: a sample is thinned to its counter
//! values, and of those only the first per meter in each `thin_period_ms` (15 minutes by
//! default) is kept, in a reserve of 1/16 of `max_bytes` above the bound. Because counters are
//! cumulative, the consumption of every period stays exact; only its split inside the period
//! is lost. When the reserve is full too, new samples are refused. Everything dropped is
//! counted (`energy_gateway_queue_dropped_total{kind}`).
//!
//! With `when_full = "refuse"`, new samples are refused as soon as the bound is reached.

use std::collections::HashMap;

use energy_wire::Sample;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WhenFull {
    /// Keep counters, one per meter and period, in a reserve; drop gauges.
    #[default]
    Thin,
    /// Refuse new samples.
    Refuse,
}

/// The reserve above `max_bytes` for thinned counter samples.
pub fn reserve_limit(max_bytes: u64) -> u64 {
    max_bytes + max_bytes / 16
}

/// Keeps track of the counter samples kept per meter while the queue is full.
#[derive(Debug, Default)]
pub struct Thinner {
    period_ms: i64,
    last_kept: HashMap<String, i64>,
}

impl Thinner {
    pub fn new(period_ms: u64) -> Thinner {
        Thinner { period_ms: period_ms.max(1) as i64, last_kept: HashMap::new() }
    }

    /// The part of `s` to keep when the queue is full, or `None` to drop it.
    pub fn thin(&mut self, s: &Sample) -> Option<Sample> {
        let v: std::collections::BTreeMap<_, _> = s.v.iter().filter(|(q, _)| q.is_counter()).map(|(q, v)| (*q, *v)).collect();
        if v.is_empty() {
            return None;
        }
        let period = s.t.div_euclid(self.period_ms);
        match self.last_kept.get(&s.meter) {
            Some(&p) if p == period => None,
            _ => {
                self.last_kept.insert(s.meter.clone(), period);
                Some(Sample { meter: s.meter.clone(), t: s.t, v })
            }
        }
    }

    /// Forgets a meter's period when a sample is kept in full (the queue had room again).
    pub fn kept_in_full(&mut self, s: &Sample) {
        if s.v.keys().any(|q| q.is_counter()) {
            self.last_kept.insert(s.meter.clone(), s.t.div_euclid(self.period_ms));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use energy_wire::Quantity as Q;

    fn s(meter: &str, t: i64, v: &[(Q, f64)]) -> Sample {
        Sample { meter: meter.into(), t, v: v.iter().copied().collect() }
    }

    #[test]
    fn thinning_worked_by_hand() {
        let min = 60_000;
        let mut th = Thinner::new(15 * min as u64);
        let full = [(Q::ActiveEnergyImport, 10.0), (Q::ActivePower, 3.0), (Q::VoltageL1, 230.0)];
        // 00:00 kept, counters only.
        assert_eq!(th.thin(&s("m", 0, &full)), Some(s("m", 0, &[(Q::ActiveEnergyImport, 10.0)])));
        // 00:05 same period: dropped. Another meter: kept.
        assert_eq!(th.thin(&s("m", 5 * min, &full)), None);
        assert!(th.thin(&s("n", 5 * min, &full)).is_some());
        // A gauge-only sample is dropped.
        assert_eq!(th.thin(&s("g", 0, &[(Q::OutdoorTemperature, 1.0)])), None);
        // 00:15 next period: kept.
        assert!(th.thin(&s("m", 15 * min, &full)).is_some());
        // A sample kept in full in the period before the queue filled counts for that period.
        let mut th = Thinner::new(15 * min as u64);
        th.kept_in_full(&s("m", 16 * min, &full));
        assert_eq!(th.thin(&s("m", 20 * min, &full)), None);
        assert!(th.thin(&s("m", 31 * min, &full)).is_some());
        assert_eq!(reserve_limit(1600), 1700);
    }
}
