//! Alerts: rules from the configuration ([`config`]), evaluated as pure functions ([`rules`])
//! on data gathered from the store, the accounting engine and the gateways' state, every
//! `alerts.interval`; a state machine ([`state`]) makes them pending, firing and resolved.
//! Exposed as the gauge `energyd_alerts_firing`, at `GET /api/v1/alerts`, and optionally POSTed
//! to an Alertmanager (`/api/v2/alerts`, resolution with `endsAt`) and a webhook ([`notify`]).
//!
//! ```text
//! run (tokio task, every interval) ── gather (store roll-ups as of the head's last flush, at most
//!    │                                  5 s behind; last_seen, engine indicators,
//!    │                                  the gateways ingest saw) ── rules::* (pure) ── Book::apply
//!    ├─ metrics energyd_alerts_firing{alertname,severity,agency,building,meter}
//!    └─ notify: Alertmanager / webhook, retried, resent every minute while firing
//! ```

pub mod actions;
pub mod config;
pub mod notify;
pub mod rules;
pub mod state;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use energy_wire::{Carrier, Quantity};
use tokio_util::sync::CancellationToken;

use crate::accounting::engine::{Engine, EngineError};
use crate::ingest::Gateways;
use crate::metrics::Metrics;
use crate::registry::{Meter, Registry};
use crate::store::{Store, StoreError};
pub use config::AlertsConfig;
use config::{RuleConfig, RuleKind};
use rules::Finding;
use state::{Book, RuleMeta};

use energy_wire::time::{DAY_MS, HOUR_MS};

/// Hourly consumption and the hour (since the epoch) it was read in.
type Cached = (i64, BTreeMap<i64, f64>);

/// The alert engine's state, shared with the API.
pub struct Alerts {
    pub config: AlertsConfig,
    pub book: Mutex<Book>,
    /// When the rules were last evaluated (ms).
    pub evaluated_at: Mutex<Option<i64>>,
    /// Hourly consumption per (meter, days of history), with the hour it was read in.
    cache: Mutex<HashMap<(String, i64), Cached>>,
    /// Learned reading interval per meter, with the hour it was learned in.
    intervals: Mutex<HashMap<String, (i64, Option<i64>)>>,
    /// Rule errors of the last evaluation, by rule name.
    pub errors: Mutex<BTreeMap<String, String>>,
    /// Acknowledgements and silences ([`actions`]), kept in `<data_dir>/alerts-actions.json`.
    pub actions: Mutex<actions::ActionStore>,
    /// When the engine was made (ms): the daemon's start, for grace periods.
    pub started: i64,
    /// The local time zone of the listed times.
    pub tz: chrono_tz::Tz,
    /// An action made an alert notifiable again (a silence ended by hand): notify at the next
    /// evaluation, not a minute later.
    pub(crate) notify_soon: std::sync::atomic::AtomicBool,
}

impl Alerts {
    /// An engine whose acknowledgements and silences live in memory only, times in UTC.
    pub fn new(config: AlertsConfig) -> Alerts {
        Alerts::with_actions(config, actions::ActionStore::default(), chrono_tz::UTC)
    }

    /// An engine whose acknowledgements and silences are kept in `<data_dir>/alerts-actions.json`
    /// (read now: kept across restarts).
    pub fn open(config: AlertsConfig, data_dir: &std::path::Path, tz: chrono_tz::Tz) -> Result<Alerts, actions::ActionError> {
        Ok(Alerts::with_actions(config, actions::ActionStore::open(data_dir)?, tz))
    }

    fn with_actions(config: AlertsConfig, store: actions::ActionStore, tz: chrono_tz::Tz) -> Alerts {
        Alerts {
            config,
            book: Mutex::new(Book::default()),
            evaluated_at: Mutex::new(None),
            cache: Mutex::new(HashMap::new()),
            intervals: Mutex::new(HashMap::new()),
            errors: Mutex::new(BTreeMap::new()),
            actions: Mutex::new(store),
            started: chrono::Utc::now().timestamp_millis(),
            tz,
            notify_soon: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Ends acknowledgements and silences that no longer hold ([`actions::Actions::reconcile`])
    /// and writes the file if anything changed; returns whether an alert may now be notified
    /// that was not. An acknowledged alert absent from the book is forgotten only once every
    /// rule has had its `for` and two evaluations since the start.
    fn reconcile(&self, now: i64) -> bool {
        let longest_for = self.config.rules.iter().map(|r| r.for_.ms()).max().unwrap_or(0);
        let absent_ok = now - self.started > longest_for + 2 * self.config.interval.ms();
        let book = lock(&self.book);
        let mut store = lock(&self.actions);
        let (modified, notify) = store.data.reconcile(&book, now, absent_ok, self.config.keep_resolved.ms());
        if modified {
            if let Err(e) = store.save() {
                tracing::error!("alert actions: {e}");
            }
        }
        notify
    }
}

impl Default for Alerts {
    fn default() -> Self {
        Alerts::new(AlertsConfig::default())
    }
}

/// What the rules read: the store's roll-ups and last readings, the accounting engine's
/// indicators and flags, the registry, and the gateways ingest has seen.
#[derive(Clone)]
pub struct Sources {
    pub store: Store,
    pub engine: Arc<Engine>,
    pub registry: Arc<Registry>,
    /// The local time zone (nights, days, years).
    pub tz: chrono_tz::Tz,
    pub metrics: Metrics,
    pub gateways: Arc<Gateways>,
}

/// Why a rule could not be evaluated (its alerts keep their state until it can).
#[derive(Debug, thiserror::Error)]
pub enum RuleError {
    #[error("reading the roll-ups of meter `{meter}`: {source}")]
    Rollups { meter: String, source: StoreError },
    #[error("reading the supply temperature of meter `{meter}`: {source}")]
    SupplyTemperature { meter: String, source: StoreError },
    #[error("indicators: {0}")]
    Indicators(EngineError),
    #[error("meter years {year}: {source}")]
    MeterYears { year: i32, source: EngineError },
    #[error("time out of range")]
    TimeOutOfRange,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The agency label of a meter: the agency it serves, else the building's occupants.
pub fn agency_of(reg: &Registry, m: &Meter) -> String {
    if let Some(a) = &m.agency {
        return a.clone();
    }
    let mut occ: Vec<&str> = reg.building(&m.building).map(|b| b.occupants.iter().map(|o| o.agency.as_str()).collect()).unwrap_or_default();
    occ.sort_unstable();
    occ.join(",")
}

fn labels_of(reg: &Registry, m: &Meter) -> BTreeMap<String, String> {
    rules::meter_labels(&m.id, &m.building, &agency_of(reg, m))
}

/// The physical meters a rule looks at.
fn meters_for<'a>(reg: &'a Registry, r: &RuleConfig, carrier: Option<Carrier>) -> Vec<&'a Meter> {
    reg.file
        .meters
        .iter()
        .filter(|m| !m.is_virtual())
        .filter(|m| r.meters.is_empty() || r.meters.contains(&m.id))
        .filter(|m| r.carrier.or(carrier).is_none_or(|c| m.carrier == c))
        .collect()
}

/// Hourly consumption of a meter's counter over the `days` before `now`, cached while the hour
/// lasts once the last hour's consumption is known (until then it is read at every evaluation:
/// the reading that closes the hour may arrive late).
async fn consumption(a: &Alerts, s: &Sources, m: &Meter, days: i64, now: i64) -> Result<BTreeMap<i64, f64>, RuleError> {
    let hour = now.div_euclid(HOUR_MS);
    if let Some((h, c)) = lock(&a.cache).get(&(m.id.clone(), days)) {
        if *h == hour && c.contains_key(&((hour - 1) * HOUR_MS)) {
            return Ok(c.clone());
        }
    }
    let from = (hour * HOUR_MS) - days * DAY_MS - HOUR_MS;
    let rollups = s.store.rollups_settled(&m.id, m.counter(), from, now + HOUR_MS).await.map_err(|source| RuleError::Rollups { meter: m.id.clone(), source })?;
    let c = crate::accounting::rollup::hourly_consumption(&rollups, m.multiplier);
    lock(&a.cache).insert((m.id.clone(), days), (hour, c.clone()));
    Ok(c)
}

async fn learned_interval(a: &Alerts, s: &Sources, m: &Meter, now: i64) -> Result<Option<i64>, RuleError> {
    let hour = now.div_euclid(HOUR_MS);
    if let Some((h, v)) = lock(&a.intervals).get(&m.id) {
        if *h == hour {
            return Ok(*v);
        }
    }
    let rollups = s.store.rollups_settled(&m.id, m.counter(), now - DAY_MS, now + HOUR_MS).await.map_err(|source| RuleError::Rollups { meter: m.id.clone(), source })?;
    let v = rules::learn_interval(&rollups);
    // Nothing to learn from yet: asked again at the next evaluation.
    if v.is_some() {
        lock(&a.intervals).insert(m.id.clone(), (hour, v));
    }
    Ok(v)
}

fn gateways(s: &Sources) -> Vec<rules::SeenGateway> {
    s.gateways
        .snapshot()
        .iter()
        .map(|(id, g)| rules::SeenGateway { id: id.clone(), online: g.online, since_ms: g.since_ms, first_batch_ms: g.first_batch_ms, last_batch_ms: g.last_batch_ms, last_lag_ms: g.last_lag_ms })
        .collect()
}

async fn outlooks(s: &Sources, now: i64) -> Result<Vec<rules::Outlook>, RuleError> {
    use chrono::Datelike;
    let year = chrono::DateTime::from_timestamp_millis(now).map(|t| t.with_timezone(&s.tz).year()).ok_or(RuleError::TimeOutOfRange)?;
    let reg = s.registry.clone();
    let list: Vec<(&crate::registry::Agency, Vec<&str>)> = reg.file.agencies.iter().map(|a| (a, vec![a.id.as_str()])).collect();
    let ind = s.engine.indicators(&s.store, &reg, year, now, &list).await.map_err(RuleError::Indicators)?;
    Ok(ind.iter().map(|a| rules::Outlook::of(a, &reg)).collect())
}

async fn meter_series(a: &Alerts, s: &Sources, ms: &[&Meter], days: i64, now: i64) -> Result<Vec<rules::MeterHours>, RuleError> {
    let mut out = Vec::with_capacity(ms.len());
    for m in ms {
        let hours = consumption(a, s, m, days, now).await?;
        out.push(rules::MeterHours { id: m.id.clone(), labels: labels_of(&s.registry, m), unit: m.counter().unit().to_string(), hours });
    }
    Ok(out)
}

/// What one evaluation computes once for several rules.
#[derive(Default)]
pub struct Pass {
    outlooks: Option<Vec<rules::Outlook>>,
}

impl Pass {
    async fn outlooks(&mut self, s: &Sources, now: i64) -> Result<&[rules::Outlook], RuleError> {
        if self.outlooks.is_none() {
            self.outlooks = Some(outlooks(s, now).await?);
        }
        Ok(self.outlooks.as_deref().unwrap_or_default())
    }
}

/// The findings of one rule at `now`.
pub async fn findings(a: &Alerts, s: &Sources, r: &RuleConfig, now: i64, pass: &mut Pass) -> Result<Vec<Finding>, RuleError> {
    let reg = &s.registry;
    let tz = s.tz;
    let night = r.night.unwrap_or([0, 5]);
    Ok(match r.kind {
        RuleKind::MeterSilent => meter_silent(a, s, r, now).await?,
        RuleKind::GatewayOffline => rules::gateway_offline(&gateways(s), now, r.silence.map_or(15 * 60_000, |d| d.ms()), tz),
        RuleKind::GatewayBacklog => rules::gateway_backlog(&gateways(s), now, r.max_lag.map_or(15 * 60_000, |d| d.ms()), 15 * 60_000),
        RuleKind::CounterAnomaly => counter_anomaly(s, r, now).await?,
        RuleKind::BaseLoad => {
            let weeks = r.weeks.unwrap_or(4);
            let ms = meters_for(reg, r, Some(Carrier::Electricity));
            let series = meter_series(a, s, &ms, i64::from(weeks) * 7 + 3, now).await?;
            let p = rules::BaseLoadRule { night, weeks, holidays: &r.holidays, factor: r.factor.unwrap_or(1.5), min_excess: r.threshold.unwrap_or(0.0) };
            rules::base_load_high(&series, now, tz, &p)
        }
        RuleKind::NightFlow => {
            let ms = meters_for(reg, r, Some(Carrier::Water));
            let series = meter_series(a, s, &ms, 3, now).await?;
            rules::night_flow(&series, now, tz, night, r.threshold.unwrap_or(0.01))
        }
        RuleKind::HeatingOffSeason => heating_off_season(a, s, r, now).await?,
        RuleKind::BudgetOverrun => {
            let o = pass.outlooks(s, now).await?;
            // `band` on budget_overrun: what quota_band finds, for configurations written before it.
            let mut f = rules::budget_overrun(o);
            f.extend(rules::quota_band(o, r.band.unwrap_or(config::BandLevel::None)));
            f
        }
        RuleKind::QuotaBand => rules::quota_band(pass.outlooks(s, now).await?, r.band.unwrap_or_default()),
        RuleKind::DataCompleteness => {
            let grace = r.grace.unwrap_or(config::DEFAULT_GRACE).ms();
            if now - a.started < grace {
                Vec::new()
            } else {
                rules::data_completeness(pass.outlooks(s, now).await?, r.min_coverage.unwrap_or(0.9), now, a.started, grace)
            }
        }
        RuleKind::DiskSpaceLow => rules::disk_space_low(s.store.local().free_bytes(), r.threshold.unwrap_or(rules::DISK_SPACE_LOW_BYTES)),
    })
}

/// `meter_silent`: each meter's last reading against its expected (or learned) interval.
async fn meter_silent(a: &Alerts, s: &Sources, r: &RuleConfig, now: i64) -> Result<Vec<Finding>, RuleError> {
    let reg = &s.registry;
    let mut seen = Vec::new();
    for m in meters_for(reg, r, None) {
        let learned = if r.expected_interval.is_none() { learned_interval(a, s, m, now).await? } else { None };
        seen.push(rules::SeenMeter { labels: labels_of(reg, m), id: m.id.clone(), last_seen: s.store.last_seen(&m.id), learned_interval: learned });
    }
    Ok(rules::meter_silent(&seen, now, r.intervals.unwrap_or(3.0), r.expected_interval.map(|d| d.ms()), s.tz))
}

/// `counter_anomaly`: the accounting's counter flags within the lookback.
async fn counter_anomaly(s: &Sources, r: &RuleConfig, now: i64) -> Result<Vec<Finding>, RuleError> {
    use chrono::Datelike;
    let (reg, tz) = (&s.registry, s.tz);
    let lookback = r.lookback.map_or(7 * DAY_MS, |d| d.ms());
    let year_of = |t: i64| chrono::DateTime::from_timestamp_millis(t).map(|t| t.with_timezone(&tz).year()).ok_or(RuleError::TimeOutOfRange);
    // The flags of this year, and of last year while the lookback reaches into it.
    let mut flags: HashMap<String, Vec<crate::accounting::counter::Flag>> = HashMap::new();
    for year in year_of(now - lookback)?..=year_of(now)? {
        let years = s.engine.meter_years(&s.store, reg, year).await.map_err(|source| RuleError::MeterYears { year, source })?;
        for (id, y) in years {
            flags.entry(id).or_default().extend(y.flags.iter().cloned());
        }
    }
    let list: Vec<_> = meters_for(reg, r, None)
        .into_iter()
        .filter_map(|m| flags.remove(&m.id).map(|f| rules::CounterFlags { id: m.id.clone(), labels: labels_of(reg, m), unit: m.counter().unit().to_string(), flags: f }))
        .collect();
    Ok(rules::counter_anomaly(&list, now, lookback, tz))
}

/// `heating_off_season`: heat consumed out of the heating season, with the supply temperature
/// when the rule has a limit for it.
async fn heating_off_season(a: &Alerts, s: &Sources, r: &RuleConfig, now: i64) -> Result<Vec<Finding>, RuleError> {
    let reg = &s.registry;
    let ms: Vec<&Meter> = meters_for(reg, r, None).into_iter().filter(|m| matches!(m.carrier, Carrier::DistrictHeat | Carrier::Steam) || m.counter() == Quantity::HeatEnergy).collect();
    let series = meter_series(a, s, &ms, 2, now).await?;
    let mut supply = BTreeMap::new();
    if r.max_supply_temperature.is_some() {
        for m in &ms {
            let rs = s.store.rollups_settled(&m.id, Quantity::SupplyTemperature, now - DAY_MS, now + HOUR_MS).await.map_err(|source| RuleError::SupplyTemperature { meter: m.id.clone(), source })?;
            let (sum, n) = rs.iter().filter(|x| x.hour >= now - DAY_MS).fold((0.0, 0u64), |(a, n), x| (a + x.sum, n + x.count));
            if n > 0 {
                supply.insert(m.id.clone(), sum / n as f64);
            }
        }
    }
    Ok(rules::heating_off_season(&series, &supply, now, s.tz, &reg.file.accounting.heating_season, r.threshold.unwrap_or(0.1), r.max_supply_temperature))
}

/// Evaluates every rule at `now`, updates the book and the metrics; returns whether an alert
/// fired or resolved.
pub async fn evaluate(a: &Alerts, s: &Sources, now: i64) -> bool {
    let mut changed = false;
    let mut errors = BTreeMap::new();
    let mut pass = Pass::default();
    for r in &a.config.rules {
        match findings(a, s, r, now, &mut pass).await {
            Ok(f) => {
                let meta = RuleMeta { name: &r.name, severity: r.severity, for_ms: r.for_.ms(), labels: &r.labels, banding: state::Banding::of_kind(r.kind) };
                let changes = lock(&a.book).apply(&meta, f, now);
                for ((rule, key), c) in &changes {
                    tracing::info!(%rule, %key, change = ?c, "alert");
                }
                changed |= !changes.is_empty();
            }
            Err(e) => {
                // The rule's alerts keep their state until it can be evaluated again.
                tracing::warn!(rule = %r.name, "alert rule not evaluated: {e}");
                s.metrics.alert_rule_errors.with_label_values(&[r.name.as_str()]).inc();
                errors.insert(r.name.clone(), e.to_string());
            }
        }
    }
    changed |= a.reconcile(now);
    changed |= a.notify_soon.swap(false, std::sync::atomic::Ordering::SeqCst);
    let names: Vec<&str> = a.config.rules.iter().map(|r| r.name.as_str()).collect();
    let mut book = lock(&a.book);
    book.forget(now, a.config.keep_resolved.ms(), &names);
    // The gauge: one series per firing label set (rules x meters at most).
    s.metrics.alerts_firing.reset();
    for al in book.firing() {
        let l = |k: &str| al.labels.get(k).map_or("", String::as_str);
        s.metrics.alerts_firing.with_label_values(&[l("alertname"), l("severity"), l("agency"), l("building"), l("meter")]).add(1);
    }
    drop(book);
    *lock(&a.evaluated_at) = Some(now);
    *lock(&a.errors) = errors;
    changed
}

/// Evaluates the rules every `alerts.interval` until `cancel`, and notifies.
pub async fn run(a: Arc<Alerts>, s: Sources, cancel: CancellationToken) {
    let cfg = a.config.clone();
    let every = Duration::from_millis(cfg.interval.ms().max(100) as u64);
    let mut notifier = notify::Notifier::new(&cfg);
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tick.tick() => {}
        }
        // While a bulk ingest streams in, the evaluation waits for it (at most one interval): its
        // accounting reads flush the store's head, and it would judge a half-loaded backlog.
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = s.metrics.wait_for_quiet_writer((every / 2).min(Duration::from_secs(1)), crate::metrics::BULK_POINTS_PER_SECOND, every) => {}
        }
        let now = chrono::Utc::now().timestamp_millis();
        let changed = evaluate(&a, &s, now).await;
        if notifier.enabled() {
            // Acknowledged and silenced alerts are not notified (actions, notify).
            let out = a.notify_sets(now);
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = notifier.send(&s.metrics, &out, now, changed, cfg.interval.ms()) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests;
