//! The ranking of agencies by one indicator (served by `GET /api/v1/indicators/ranking`): each
//! agency's value year to date and projected to the year's end, lowest projected first.
//!
//! Only complete figures ([`DataStatus::Complete`]) are ranked: a value over incomplete data
//! would rank an agency by its gaps. The others are listed apart, with their data status. An
//! agency whose figure is complete but has neither a projection nor a value is in neither list.

use std::fmt;

use super::indicators::{AgencyIndicators, DataStatus, IndicatorValue};
use crate::registry::Indicator;

/// An indicator name that is not one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownIndicator(pub String);

impl fmt::Display for UnknownIndicator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "indicator `{}` is not one of {}", self.0, Indicator::ALL.map(Indicator::name).join(", "))
    }
}

impl std::error::Error for UnknownIndicator {}

/// The indicator of a name (`energy_per_person`...).
pub fn indicator_named(name: &str) -> Result<Indicator, UnknownIndicator> {
    Indicator::ALL.into_iter().find(|i| i.name() == name).ok_or_else(|| UnknownIndicator(name.to_string()))
}

/// One agency's place.
#[derive(Debug, Clone, PartialEq)]
pub struct Ranked<'a> {
    /// 1 for the lowest projected value.
    pub rank: usize,
    pub agency: &'a AgencyIndicators,
    pub value: &'a IndicatorValue,
    /// The projected value, or the value when there is no projection (a closed year).
    pub projected: f64,
}

/// The agencies ranked, and those not ranked for their data.
#[derive(Debug, Clone, PartialEq)]
pub struct Ranking<'a> {
    pub ranked: Vec<Ranked<'a>>,
    pub not_ranked: Vec<(&'a AgencyIndicators, &'a IndicatorValue)>,
}

/// Ranks `all` by `ind`, lowest projected first; equal values keep the order of `all`.
pub fn rank(all: &[AgencyIndicators], ind: Indicator) -> Ranking<'_> {
    let not_ranked = all.iter().filter_map(|a| a.get(ind).filter(|v| v.data != DataStatus::Complete).map(|v| (a, v))).collect();
    let mut rows: Vec<(f64, &AgencyIndicators, &IndicatorValue)> = all
        .iter()
        .filter_map(|a| {
            let v = a.get(ind).filter(|v| v.data == DataStatus::Complete)?;
            Some((v.projected.or(v.value)?, a, v))
        })
        .collect();
    rows.sort_by(|a, b| a.0.total_cmp(&b.0));
    let ranked = rows.into_iter().enumerate().map(|(i, (projected, agency, value))| Ranked { rank: i + 1, agency, value, projected }).collect();
    Ranking { ranked, not_ranked }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::accounting::indicators::{IndicatorQuality, Quality};

    const IND: Indicator = Indicator::ALL[0];

    fn value(v: Option<f64>, projected: Option<f64>, data: DataStatus) -> IndicatorValue {
        IndicatorValue {
            indicator: IND,
            unit: IND.unit(),
            value: v,
            projected,
            last_year: None,
            change_pct: None,
            band: None,
            target: None,
            data,
            quality: IndicatorQuality { coverage: 1.0, measured_share: 1.0, estimated: false },
            basis: None,
            has_quota: false,
        }
    }

    fn agency(id: &str, indicators: Vec<IndicatorValue>) -> AgencyIndicators {
        AgencyIndicators {
            agency: id.into(),
            name: id.into(),
            level: "county",
            kind: "office".into(),
            year: 2026,
            days_elapsed: 100,
            days_in_year: 365,
            in_progress: true,
            projection_method: "trend",
            electricity_basis: "final",
            floor_area: 1000.0,
            heated_area: 1000.0,
            headcount: Some(10.0),
            indicators,
            carriers: vec![],
            quality: Quality { coverage: 1.0, measured_share: 1.0, complete: true },
            energy_budget_crossed_day: None,
            meters_to_check: vec![],
            notes: vec![],
        }
    }

    #[test]
    fn ranking_worked_by_hand() {
        use DataStatus::*;
        let all = vec![
            // a: projected 300 -> third.
            agency("a", vec![value(Some(100.0), Some(300.0), Complete)]),
            // b: no projection (closed year): its value 120 ranks -> first.
            agency("b", vec![value(Some(120.0), None, Complete)]),
            // c: incomplete data: not ranked, whatever its value.
            agency("c", vec![value(Some(1.0), Some(2.0), Incomplete)]),
            // d: projected 200 -> second.
            agency("d", vec![value(Some(50.0), Some(200.0), Complete)]),
            // e: complete but nothing to rank by: in neither list.
            agency("e", vec![value(None, None, Complete)]),
            // f: no such indicator computed: in neither list.
            agency("f", vec![]),
            // g: no data: not ranked.
            agency("g", vec![value(None, None, NoData)]),
            // h: projected 300 like a, after a (the order given).
            agency("h", vec![value(Some(90.0), Some(300.0), Complete)]),
        ];
        let r = rank(&all, IND);
        let ranked: Vec<(usize, &str, f64)> = r.ranked.iter().map(|x| (x.rank, x.agency.agency.as_str(), x.projected)).collect();
        assert_eq!(ranked, vec![(1, "b", 120.0), (2, "d", 200.0), (3, "a", 300.0), (4, "h", 300.0)]);
        let apart: Vec<(&str, DataStatus)> = r.not_ranked.iter().map(|(a, v)| (a.agency.as_str(), v.data)).collect();
        assert_eq!(apart, vec![("c", Incomplete), ("g", NoData)]);
    }

    #[test]
    fn indicator_names() {
        for i in Indicator::ALL {
            assert_eq!(indicator_named(i.name()), Ok(i));
        }
        let e = indicator_named("energy").err().map(|e| e.to_string()).unwrap_or_default();
        // The list names every indicator, in their order.
        assert!(e.starts_with("indicator `energy` is not one of total_energy, energy_per_building_area, "), "{e}");
        assert!(e.ends_with(", energy_cost, water_total"), "{e}");
    }
}
