//! The consumption query the API serves (`GET /api/v1/consumption`): the consumption of a
//! meter, a building or an agency between two instants, per calendar period, by carrier and
//! by meter.
//!
//! * A meter's figure is its full consumption (after its multiplier; a virtual meter's from its
//!   formula, [`allocate::virtual_full`]). A building's or an agency's is the sum of the **own**
//!   parts of the accounted meters ([`allocate::own_part`]: a meter less its sub-meters), an
//!   agency's times its allocation share (on each period's first local day where the split
//!   changes with the date), so that nothing is counted twice.
//! * Each physical meter's readings go through [`counter::continuous`] (meter events,
//!   rollovers, bad readings) and [`consumption::consumption`]. Hour-aligned windows (every
//!   calendar boundary in a whole-hour time zone) are read from the hourly roll-ups
//!   ([`rollup::window_readings`]), all meters at once over the read connections; the raw
//!   points only when the boundaries are not whole hours.
//!
//! [`allocate::virtual_full`]: super::allocate::virtual_full
//! [`allocate::own_part`]: super::allocate::own_part
//! [`counter::continuous`]: super::counter::continuous
//! [`consumption::consumption`]: super::consumption::consumption
//! [`rollup::window_readings`]: super::rollup::window_readings

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::DateTime;
use chrono_tz::Tz;
use energy_wire::Carrier;
use serde::Serialize;

use super::allocate::{own_part, virtual_full, Additive};
use super::consumption::consumption as counter_consumption;
use super::counter::{continuous, Event, Flag};
use super::ledger::MAX_GAP_MS;
use super::rollup::window_readings;
use crate::registry::{parse_formula, EndUse, Meter, Registry};
use crate::store::{Store, StoreError};
use crate::time::{boundaries, hour_of, Interval};

/// Most periods one consumption query may ask for.
pub const MAX_PERIODS: usize = 20_000;

/// What the figures are of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subject<'a> {
    Agency(&'a str),
    Building(&'a str),
    Meter(&'a str),
}

impl Subject<'_> {
    /// The parameter that names it.
    pub fn key(&self) -> &'static str {
        match self {
            Subject::Agency(_) => "agency",
            Subject::Building(_) => "building",
            Subject::Meter(_) => "meter",
        }
    }
    pub fn id(&self) -> &str {
        match self {
            Subject::Agency(id) | Subject::Building(id) | Subject::Meter(id) => id,
        }
    }
}

/// Why a consumption query has no answer.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("{} `{}` is not in the registry", .0.0, .0.1)]
    NotFound((&'static str, String)),
    #[error("more than {MAX_PERIODS} periods; choose a longer interval or a shorter range")]
    TooManyPeriods,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A meter in the query's scope: the share of it counted, and whether its own part (less its
/// sub-meters) or its full consumption is.
#[derive(Debug, Clone, Copy)]
pub struct InScope<'a> {
    pub meter: &'a Meter,
    pub share: f64,
    pub own: bool,
}

/// The meters a subject's figures sum, of the carrier and end use asked (all when `None`).
pub fn scope_meters<'a>(reg: &'a Registry, subject: Subject<'_>, carrier: Option<Carrier>, end_use: Option<EndUse>) -> Result<Vec<InScope<'a>>, QueryError> {
    let not_found = |s: Subject<'_>| QueryError::NotFound((s.key(), s.id().to_string()));
    let scope: Vec<InScope<'a>> = match subject {
        Subject::Agency(id) => {
            reg.agency(id).ok_or_else(|| not_found(subject))?;
            // Every meter of a building it occupies at any time; dated splits are applied per
            // period.
            reg.file
                .meters
                .iter()
                .filter(|m| m.accounted)
                .map(|m| InScope { meter: m, share: reg.share(m, id), own: true })
                .filter(|x| x.share > 0.0 || (reg.split_is_dated(x.meter) && reg.ever_served(x.meter, id)))
                .collect()
        }
        Subject::Building(id) => {
            reg.building(id).ok_or_else(|| not_found(subject))?;
            reg.meters_of_building(id).into_iter().filter(|m| m.accounted).map(|m| InScope { meter: m, share: 1.0, own: true }).collect()
        }
        Subject::Meter(id) => vec![InScope { meter: reg.meter(id).ok_or_else(|| not_found(subject))?, share: 1.0, own: false }],
    };
    Ok(scope.into_iter().filter(|x| carrier.is_none_or(|c| c == x.meter.carrier) && end_use.is_none_or(|e| e == x.meter.end_use())).collect())
}

/// The meters of `scope` whose item code is `code` or under it (`01B00` takes 01B00, 01B10,
/// 01B1A ...; `01000` every electricity code), for `item_code=` of `GET /api/v1/consumption`.
pub fn within_item_code<'a>(scope: Vec<InScope<'a>>, code: &str) -> Vec<InScope<'a>> {
    scope.into_iter().filter(|x| x.meter.item_code.as_deref().is_some_and(|c| crate::registry::national::within(c, code))).collect()
}

/// The answer of `GET /api/v1/consumption` (serialized as it is built: no map per row).
#[derive(Debug, Serialize)]
pub struct ConsumptionOut {
    scope: BTreeMap<&'static str, String>,
    from: String,
    to: String,
    interval: Interval,
    timezone: &'static str,
    carrier: Option<Carrier>,
    end_use: Option<EndUse>,
    carriers: Vec<CarrierOut>,
    /// The consumption by national energy item code (分项能耗) of the meters that carry one
    /// (issue 21); absent when none does.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    items: Vec<ItemOut>,
    meters: Vec<MeterRow>,
}

/// One energy item code's consumption in [`ConsumptionOut`]: the sum of the parts of the meters
/// that carry the code (own parts in a building or agency, so that a sub-meter's consumption is
/// under its own code only).
#[derive(Debug, Serialize)]
struct ItemOut {
    code: String,
    name: &'static str,
    name_en: &'static str,
    unit: &'static str,
    total: f64,
    periods: Vec<f64>,
    meters: usize,
}

/// One carrier's totals and periods in [`ConsumptionOut`].
#[derive(Debug, Serialize)]
struct CarrierOut {
    carrier: Carrier,
    unit: &'static str,
    total: f64,
    estimated: f64,
    measured_share: f64,
    coverage: f64,
    meters: usize,
    end_uses: Vec<EndUseOut>,
    periods: Vec<PeriodOut>,
}

#[derive(Debug, Serialize)]
struct EndUseOut {
    end_use: EndUse,
    total: f64,
}

#[derive(Debug, Serialize)]
struct PeriodOut {
    start: String,
    end: String,
    value: f64,
    estimated_value: f64,
    coverage: f64,
    estimated: bool,
}

/// One meter's row in [`ConsumptionOut`].
#[derive(Debug, Serialize)]
struct MeterRow {
    id: String,
    carrier: Carrier,
    end_use: EndUse,
    share: f64,
    multiplier: f64,
    part: &'static str,
    #[serde(rename = "virtual")]
    is_virtual: bool,
    total: f64,
    unit: &'static str,
    coverage: f64,
    rejected_readings: usize,
    flags: Vec<Flag>,
    #[serde(skip_serializing_if = "Option::is_none")]
    item_code: Option<String>,
    /// Per period, after the share (for the item codes' sums).
    #[serde(skip)]
    per_period: Vec<f64>,
}

/// Consumption of one meter per period.
#[derive(Debug, Clone, PartialEq)]
pub struct Periods {
    pub value: Vec<f64>,
    pub estimated_value: Vec<f64>,
    pub coverage: Vec<f64>,
    pub estimated: Vec<bool>,
    pub rejected: usize,
    pub flags: Vec<Flag>,
}

impl Additive for Periods {
    fn zero(n: usize) -> Periods {
        Periods { value: vec![0.0; n], estimated_value: vec![0.0; n], coverage: vec![0.0; n], estimated: vec![false; n], rejected: 0, flags: Vec::new() }
    }
    /// `self += k * o` per period (coverage: the minimum, estimated: either; the readings set
    /// aside and the flags stay `self`'s).
    fn add_scaled(&mut self, o: &Periods, k: f64, first: bool) {
        for i in 0..self.value.len() {
            self.value[i] += k * o.value[i];
            self.estimated_value[i] += k.abs() * o.estimated_value[i];
            self.coverage[i] = if first { o.coverage[i] } else { self.coverage[i].min(o.coverage[i]) };
            self.estimated[i] |= o.estimated[i];
        }
    }
}

/// The physical meters to read: the scope's, their sub-meters (for own parts) and the operands
/// of virtual meters, each once, in order.
fn meters_to_read<'a>(reg: &'a Registry, scope: &[InScope<'a>]) -> Vec<&'a Meter> {
    let mut ids: Vec<&str> = Vec::new();
    // A set: an agency can have thousands of meters.
    let mut seen: HashSet<&str> = HashSet::new();
    let operands: Vec<Vec<(String, f64)>> = scope.iter().map(|x| x.meter.formula.as_deref().map(parse_formula).and_then(Result::ok).unwrap_or_default()).collect();
    for (x, ops) in scope.iter().zip(&operands) {
        let mut push = |id: &'a str| {
            if seen.insert(id) {
                ids.push(id);
            }
        };
        for (op, _) in ops {
            if let Some(m) = reg.meter(op) {
                push(m.id.as_str());
            }
        }
        push(x.meter.id.as_str());
        if x.own {
            for c in reg.children(&x.meter.id) {
                push(c.id.as_str());
            }
        }
    }
    ids.into_iter().filter_map(|id| reg.meter(id)).filter(|m| !m.is_virtual()).collect()
}

/// Each meter's counter readings over `[from, to)`: from the roll-ups when every boundary is a
/// whole hour, else the raw points.
async fn readings(store: &Store, meters: &[&Meter], bounds_ms: &[i64]) -> Result<Vec<Vec<(i64, f64)>>, StoreError> {
    let (from_ms, to_ms) = (bounds_ms[0], *bounds_ms.last().unwrap_or(&bounds_ms[0]));
    let mut windows: Vec<Option<Vec<(i64, f64)>>> = vec![None; meters.len()];
    if bounds_ms.iter().all(|&b| b == hour_of(b)) {
        let series = meters.iter().map(|m| (m.id.clone(), m.counter())).collect();
        for (slot, w) in windows.iter_mut().zip(store.counter_rollups_many(series, from_ms, to_ms).await?) {
            *slot = Some(window_readings(&w));
        }
    }
    let mut out = Vec::with_capacity(meters.len());
    for (m, w) in meters.iter().zip(windows) {
        out.push(match w {
            Some(r) => r,
            None => store.counter_window(&m.id, m.counter(), from_ms, to_ms).await?,
        });
    }
    Ok(out)
}

/// A physical meter's consumption per period, after its multiplier.
fn meter_periods(m: &Meter, readings: &[(i64, f64)], events: &[Event], bounds_ms: &[i64]) -> Periods {
    let c = continuous(readings, events, m.rollover, m.max_per_hour.map(|x| x / m.multiplier), m.multiplier);
    let pc = counter_consumption(&c.readings, bounds_ms, MAX_GAP_MS);
    Periods {
        value: pc.periods.iter().map(|x| x.value * m.multiplier).collect(),
        estimated_value: pc.periods.iter().map(|x| x.estimated_value * m.multiplier).collect(),
        coverage: pc.periods.iter().map(|x| x.coverage).collect(),
        estimated: pc.periods.iter().map(|x| x.estimated).collect(),
        rejected: c.rejected + pc.rejected_readings,
        flags: c.flags,
    }
}

/// One carrier's sums per period while the meters are added.
struct CarrierSums {
    values: Vec<f64>,
    estimated_values: Vec<f64>,
    coverage: Vec<f64>,
    estimated: Vec<bool>,
    meters: usize,
    end_uses: BTreeMap<EndUse, f64>,
}

impl CarrierSums {
    fn new(n: usize) -> CarrierSums {
        CarrierSums { values: vec![0.0; n], estimated_values: vec![0.0; n], coverage: vec![0.0; n], estimated: vec![false; n], meters: 0, end_uses: BTreeMap::new() }
    }

    fn out(self, carrier: Carrier, bounds: &[DateTime<Tz>]) -> CarrierOut {
        let n = bounds.len().saturating_sub(1);
        let periods: Vec<PeriodOut> = (0..n)
            .map(|i| PeriodOut {
                start: bounds[i].to_rfc3339(),
                end: bounds[i + 1].to_rfc3339(),
                value: self.values[i],
                estimated_value: self.estimated_values[i],
                coverage: self.coverage[i] / self.meters as f64,
                estimated: self.estimated[i],
            })
            .collect();
        let total: f64 = self.values.iter().sum();
        let estimated: f64 = self.estimated_values.iter().sum();
        let coverage = if n == 0 { 0.0 } else { self.coverage.iter().sum::<f64>() / (n * self.meters) as f64 };
        CarrierOut {
            carrier,
            unit: carrier.counter().unit(),
            total,
            estimated,
            measured_share: if total > 0.0 { (1.0 - estimated / total).clamp(0.0, 1.0) } else { 1.0 },
            coverage,
            meters: self.meters,
            end_uses: self.end_uses.into_iter().map(|(end_use, total)| EndUseOut { end_use, total }).collect(),
            periods,
        }
    }
}

/// Adds one meter in scope (its part `part`) to its carrier's sums; its row.
fn add_meter(reg: &Registry, subject: Subject<'_>, x: &InScope<'_>, part: &Periods, bounds: &[DateTime<Tz>], acc: &mut CarrierSums) -> MeterRow {
    let m = x.meter;
    let n = bounds.len().saturating_sub(1);
    acc.meters += 1;
    // An agency's share of each period: on the period's first local day where the split
    // changes with the date (dated occupancy, headcount keys), else the one share.
    let shares: Vec<f64> = match subject {
        Subject::Agency(id) if reg.split_is_dated(m) => bounds[..n].iter().map(|b| reg.share_on(m, id, b.date_naive())).collect(),
        _ => vec![x.share; n],
    };
    let mut total = 0.0;
    let mut per_period = Vec::with_capacity(n);
    for (i, &share) in shares.iter().enumerate() {
        let v = part.value[i] * share;
        per_period.push(v);
        acc.values[i] += v;
        acc.estimated_values[i] += part.estimated_value[i] * share;
        acc.coverage[i] += part.coverage[i];
        acc.estimated[i] |= part.estimated[i];
        total += v;
    }
    *acc.end_uses.entry(m.end_use()).or_insert(0.0) += total;
    MeterRow {
        id: m.id.clone(),
        carrier: m.carrier,
        end_use: m.end_use(),
        share: if n == 0 { x.share } else { shares.iter().sum::<f64>() / n as f64 },
        multiplier: m.multiplier,
        part: if x.own { "own" } else { "full" },
        is_virtual: m.is_virtual(),
        total,
        unit: m.counter().unit(),
        coverage: if n == 0 { 0.0 } else { part.coverage.iter().sum::<f64>() / n as f64 },
        rejected_readings: part.rejected,
        flags: part.flags.clone(),
        item_code: m.item_code.clone(),
        per_period,
    }
}

impl ConsumptionOut {
    /// Per energy item code: the consumption per period (the upward reports of issue 21).
    pub fn item_periods(&self) -> Vec<(String, Vec<f64>)> {
        self.items.iter().map(|i| (i.code.clone(), i.periods.clone())).collect()
    }
}

/// The meters' consumption summed by item code, in the order of the code table.
fn items_of(meters: &[MeterRow], n: usize) -> Vec<ItemOut> {
    let mut by: BTreeMap<&str, ItemOut> = BTreeMap::new();
    for r in meters {
        let Some(code) = r.item_code.as_deref() else { continue };
        let entry = crate::registry::national::item(code);
        let it = by.entry(code).or_insert_with(|| ItemOut {
            code: code.to_string(),
            name: entry.map_or("", |e| e.zh),
            name_en: entry.map_or("", |e| e.en),
            unit: r.unit,
            total: 0.0,
            periods: vec![0.0; n],
            meters: 0,
        });
        it.total += r.total;
        it.meters += 1;
        for (p, v) in it.periods.iter_mut().zip(&r.per_period) {
            *p += v;
        }
    }
    by.into_values().collect()
}

/// The figures of `subject` over `scope` (from [`scope_meters`]) between `from` and `to` per
/// `interval`, with the meter events `events` applied.
#[allow(clippy::too_many_arguments)] // the query's parameters, and where its data comes from
pub async fn consumption(
    store: &Store,
    reg: &Registry,
    events: &HashMap<String, Vec<Event>>,
    subject: Subject<'_>,
    scope: &[InScope<'_>],
    (carrier, end_use): (Option<Carrier>, Option<EndUse>),
    (from, to): (DateTime<Tz>, DateTime<Tz>),
    interval: Interval,
) -> Result<ConsumptionOut, QueryError> {
    let bounds = boundaries(from, to, interval, MAX_PERIODS).ok_or(QueryError::TooManyPeriods)?;
    let bounds_ms: Vec<i64> = bounds.iter().map(DateTime::timestamp_millis).collect();
    let n = bounds.len().saturating_sub(1);
    let needed = meters_to_read(reg, scope);
    let mut full: HashMap<String, Periods> = HashMap::new();
    for (m, r) in needed.iter().zip(readings(store, &needed, &bounds_ms).await?) {
        full.insert(m.id.clone(), meter_periods(m, &r, events.get(&m.id).map_or(&[][..], Vec::as_slice), &bounds_ms));
    }
    for x in scope.iter().filter(|x| x.meter.is_virtual()) {
        let v = virtual_full(x.meter, &full, n);
        full.insert(x.meter.id.clone(), v);
    }
    let mut by_carrier: BTreeMap<Carrier, CarrierSums> = BTreeMap::new();
    let mut meters = Vec::new();
    for x in scope {
        let Some(f) = full.get(&x.meter.id) else { continue };
        let part = if x.own { own_part(reg, x.meter, f, &full) } else { Cow::Borrowed(f) };
        let acc = by_carrier.entry(x.meter.carrier).or_insert_with(|| CarrierSums::new(n));
        meters.push(add_meter(reg, subject, x, &part, &bounds, acc));
    }
    Ok(ConsumptionOut {
        scope: BTreeMap::from([(subject.key(), subject.id().to_string())]),
        from: from.to_rfc3339(),
        to: to.to_rfc3339(),
        interval,
        timezone: from.timezone().name(),
        carrier,
        end_use,
        carriers: by_carrier.into_iter().map(|(c, acc)| acc.out(c, &bounds)).collect(),
        items: items_of(&meters, n),
        meters,
    })
}
