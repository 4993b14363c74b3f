//! What a meter event posted to the API does besides being recorded ([`super::engine`]): the
//! store correction a `reading` event makes, and what a replacement's figures say of it.

use chrono_tz::Tz;

use super::counter::Flag;
use super::engine::Engine;
use crate::registry::{EventError, EventKind, EventRecord, Registry};
use crate::store::{Correction, Store};

/// The store correction a `reading` event makes: the stored reading of its `quantity` (by
/// default the meter's counter) at its time takes its value. `None` for other kinds and for a
/// meter that is not a physical meter of the registry.
pub fn correction_of(reg: &Registry, rec: &EventRecord, tz: Tz) -> Result<Option<Correction>, EventError> {
    let EventKind::Reading { value, quantity } = rec.kind else { return Ok(None) };
    let Some(m) = reg.meter(&rec.meter).filter(|m| !m.is_virtual()) else { return Ok(None) };
    let (at, _) = rec.times_ms(tz)?;
    Ok(Some(Correction { meter: rec.meter.clone(), quantity: quantity.unwrap_or(m.counter()), ts: at, value, by: rec.by.clone() }))
}

/// The warnings of a recorded replacement: an `old_final` (in the old meter's own units) below
/// the old meter's last reading is stored, but said (the last reading is taken as the old
/// meter's final one). Nothing when the figures cannot be computed.
pub async fn replacement_warnings(engine: &Engine, store: &Store, reg: &Registry, rec: &EventRecord) -> Vec<String> {
    if !matches!(rec.kind, EventKind::Replacement { .. }) {
        return Vec::new();
    }
    let Ok(t) = crate::time::parse_time(&rec.time, engine.tz()) else { return Vec::new() };
    let Ok(years) = engine.meter_years(store, reg, chrono::Datelike::year(&t)).await else { return Vec::new() };
    let at = t.timestamp_millis();
    years.get(&rec.meter).map(|y| old_final_warnings(&y.flags, at)).unwrap_or_default()
}

/// The flags of an `old_final` below the last reading of a replacement at `at`, in words.
fn old_final_warnings(flags: &[Flag], at: i64) -> Vec<String> {
    flags
        .iter()
        .filter_map(|f| match f {
            Flag::OldFinalBelowLastReading { at: a, old_final, last_reading } if *a == at => Some(format!(
                "old_final {old_final} is below the old meter's last reading {last_reading} before the replacement (both in the old meter's own units): the last reading is taken as its final one"
            )),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Only the replacement's own flag is said: one at 7 200 000 ms, asked at 7 200 000 and at 0.
    #[test]
    fn only_the_replacement_s_own_flag_is_said() {
        let flags = [Flag::Replacement { at: 7_200_000 }, Flag::OldFinalBelowLastReading { at: 7_200_000, old_final: 50.0, last_reading: 100.0 }];
        let w = old_final_warnings(&flags, 7_200_000);
        assert_eq!(w.len(), 1);
        assert!(w[0].starts_with("old_final 50 is below the old meter's last reading 100"), "{w:?}");
        assert!(old_final_warnings(&flags, 0).is_empty());
    }
}
