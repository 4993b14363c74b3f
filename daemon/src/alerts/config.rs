//! `[alerts]` and `[[alerts.rule]]` in the daemon's configuration.
//!
//! ```toml
//! [alerts]
//! interval = "60s"                  # how often every rule is evaluated
//! keep_resolved = "1h"              # resolved alerts stay in GET /api/v1/alerts this long
//! alertmanager_url = "http://127.0.0.1:9093"   # optional: POST /api/v2/alerts
//! webhook_url = "http://127.0.0.1:8000/hook"  # optional: POST {"alerts": [...]}
//!
//! [[alerts.rule]]
//! name = "MeterSilent"
//! kind = "meter_silent"
//! severity = "warning"              # info | warning | critical
//! for = "15m"                       # pending this long before firing
//! intervals = 3                     # silent for more than 3 expected intervals
//! expected_interval = "15m"         # optional: learned from the last day's readings when absent
//! ```
//!
//! Without `[[alerts.rule]]` the daemon runs [`default_rules`]; `enabled = false` turns the
//! engine off.

use std::collections::BTreeMap;

use energy_wire::Carrier;
use serde::{Deserialize, Serialize};

/// A duration written as `"90s"`, `"15m"`, `"2h"`, `"7d"` (or a number of seconds); in ms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Dur(pub i64);

impl Dur {
    pub const fn secs(s: i64) -> Dur {
        Dur(s * 1000)
    }
    pub const fn mins(m: i64) -> Dur {
        Dur(m * 60_000)
    }
    pub const fn hours(h: i64) -> Dur {
        Dur(h * 3_600_000)
    }
    pub fn ms(self) -> i64 {
        self.0
    }
}

/// A duration that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("`{0}` is not a duration such as \"90s\", \"15m\", \"2h\" or \"7d\"")]
    NotANumber(String),
    #[error("`{text}`: unknown unit `{unit}` (use ms, s, m, h, d or w)")]
    UnknownUnit { text: String, unit: String },
}

/// Parses `"90s"`, `"15m"`, `"2h"`, `"7d"`, `"500ms"`, or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Dur, DurationError> {
    let t = s.trim();
    let (num, unit) = match t.find(|c: char| !(c.is_ascii_digit() || c == '.')) {
        Some(i) => (&t[..i], &t[i..]),
        None => (t, "s"),
    };
    let n: f64 = num.parse().map_err(|_| DurationError::NotANumber(s.to_string()))?;
    let k = match unit {
        "ms" => 1.0,
        "s" => 1000.0,
        "m" => 60_000.0,
        "h" => 3_600_000.0,
        "d" => 86_400_000.0,
        "w" => 7.0 * 86_400_000.0,
        _ => return Err(DurationError::UnknownUnit { text: s.to_string(), unit: unit.to_string() }),
    };
    Ok(Dur((n * k).round() as i64))
}

impl Serialize for Dur {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{}s", self.0 as f64 / 1000.0))
    }
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Dur, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Int(i64),
            Float(f64),
            Str(String),
        }
        match Raw::deserialize(d)? {
            Raw::Int(n) => Ok(Dur::secs(n)),
            Raw::Float(f) => Ok(Dur((f * 1000.0).round() as i64)),
            Raw::Str(s) => parse_duration(&s).map_err(serde::de::Error::custom),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

/// What a rule watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleKind {
    /// A meter's newest reading is older than `intervals` x its expected interval.
    MeterSilent,
    /// A gateway's MQTT status is `offline` (last will), or no batch came for `silence`.
    GatewayOffline,
    /// The samples a gateway delivers are older than `max_lag` when they arrive: its queue is
    /// backing up (the daemon sees only what arrives; the queue depth itself is the gateway's
    /// metric `energy_gateway_queue_depth`).
    GatewayBacklog,
    /// A counter went down without a recorded replacement, or jumped beyond `max_per_hour`.
    CounterAnomaly,
    /// The base load of the last night (weekends and `holidays`: the whole day) is above
    /// `factor` x its median over the previous `weeks`.
    BaseLoad,
    /// Every hour of the last night had consumption of at least `threshold` (a leak).
    NightFlow,
    /// Heat consumed in the last 24 h above `threshold`, or a mean supply temperature above
    /// `max_supply_temperature`, outside the registry's heating season.
    HeatingOffSeason,
    /// An agency is projected to exceed its annual energy budget or a carrier's budget (with
    /// `band` set to `binding` or `benchmark`, kept for configurations written before
    /// `quota_band`, also what `quota_band` finds).
    BudgetOverrun,
    /// A projected indicator of an agency is above the quota band's `band` value (约束值 by
    /// default).
    QuotaBand,
    /// An agency's data coverage for the year is below `min_coverage`.
    DataCompleteness,
    /// The free space on the data directory's file system is under `threshold` bytes (default
    /// 1 GiB); under `storage.min_free_bytes` the store refuses writes.
    DiskSpaceLow,
}

impl RuleKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RuleKind::MeterSilent => "meter_silent",
            RuleKind::GatewayOffline => "gateway_offline",
            RuleKind::GatewayBacklog => "gateway_backlog",
            RuleKind::CounterAnomaly => "counter_anomaly",
            RuleKind::BaseLoad => "base_load",
            RuleKind::NightFlow => "night_flow",
            RuleKind::HeatingOffSeason => "heating_off_season",
            RuleKind::BudgetOverrun => "budget_overrun",
            RuleKind::QuotaBand => "quota_band",
            RuleKind::DataCompleteness => "data_completeness",
            RuleKind::DiskSpaceLow => "disk_space_low",
        }
    }

    /// What the rule watches, as the alerts page names it.
    pub fn name_zh(self) -> &'static str {
        match self {
            RuleKind::MeterSilent => "计量表无数据",
            RuleKind::GatewayOffline => "网关离线",
            RuleKind::GatewayBacklog => "网关数据积压",
            RuleKind::CounterAnomaly => "读数异常",
            RuleKind::BaseLoad => "基础负荷偏高",
            RuleKind::NightFlow => "夜间持续用量（疑似泄漏）",
            RuleKind::HeatingOffSeason => "非供暖季用热",
            RuleKind::BudgetOverrun => "预计超出预算",
            RuleKind::QuotaBand => "预计超出定额",
            RuleKind::DataCompleteness => "数据不完整",
            RuleKind::DiskSpaceLow => "磁盘空间不足",
        }
    }

    pub fn name_en(self) -> &'static str {
        match self {
            RuleKind::MeterSilent => "Meter silent",
            RuleKind::GatewayOffline => "Gateway offline",
            RuleKind::GatewayBacklog => "Gateway backlog",
            RuleKind::CounterAnomaly => "Counter anomaly",
            RuleKind::BaseLoad => "High base load",
            RuleKind::NightFlow => "Night flow (a leak?)",
            RuleKind::HeatingOffSeason => "Heating out of season",
            RuleKind::BudgetOverrun => "Budget overrun projected",
            RuleKind::QuotaBand => "Quota band exceeded (projected)",
            RuleKind::DataCompleteness => "Data incomplete",
            RuleKind::DiskSpaceLow => "Disk space low",
        }
    }
}

/// Which quota-band value a projection must not exceed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum BandLevel {
    /// 约束值.
    #[default]
    Binding,
    /// 基准值.
    Benchmark,
    /// Only budgets, no bands.
    None,
}

/// One rule. Parameters a kind does not use are refused by validation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    pub name: String,
    pub kind: RuleKind,
    #[serde(default = "default_severity")]
    pub severity: Severity,
    /// Pending this long before firing.
    #[serde(default, rename = "for")]
    pub for_: Dur,
    /// Only these meters (meter rules); empty: all.
    #[serde(default)]
    pub meters: Vec<String>,
    /// Only meters of this carrier (meter rules).
    #[serde(default)]
    pub carrier: Option<Carrier>,
    /// Extra labels sent with every alert of the rule (e.g. `team = "facilities"`).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// meter_silent: how many expected intervals of silence (default 3).
    #[serde(default)]
    pub intervals: Option<f64>,
    /// meter_silent: the expected interval between readings; learned when absent.
    #[serde(default)]
    pub expected_interval: Option<Dur>,
    /// gateway_offline: no batch for this long (default 15m).
    #[serde(default)]
    pub silence: Option<Dur>,
    /// gateway_backlog: samples older than this on arrival (default 15m).
    #[serde(default)]
    pub max_lag: Option<Dur>,
    /// counter_anomaly: flags found in this window (default 7d).
    #[serde(default)]
    pub lookback: Option<Dur>,
    /// base_load: weeks of history the base is learned from (default 4).
    #[serde(default)]
    pub weeks: Option<u32>,
    /// base_load: how many times the learned base (default 1.5).
    #[serde(default)]
    pub factor: Option<f64>,
    /// base_load, night_flow: local night hours `[from, to)` (default [0, 5]).
    #[serde(default)]
    pub night: Option<[u32; 2]>,
    /// base_load: local dates counted like weekends ("2026-10-01").
    #[serde(default)]
    pub holidays: Vec<chrono::NaiveDate>,
    /// night_flow: least consumption per hour (counter units, default 0.01);
    /// heating_off_season: least consumption in 24 h (default 0.1); base_load: least excess
    /// over the learned base per hour (default 0); disk_space_low: free bytes (default 1 GiB).
    #[serde(default)]
    pub threshold: Option<f64>,
    /// quota_band: the band value a projection must not exceed (default binding);
    /// budget_overrun: the same, for configurations written before quota_band (default none).
    #[serde(default)]
    pub band: Option<BandLevel>,
    /// data_completeness: least coverage of the year so far, 0..=1 (default 0.9).
    #[serde(default)]
    pub min_coverage: Option<f64>,
    /// data_completeness: nothing is found until this long after the daemon started, so that
    /// the first readings have time to arrive (default [`DEFAULT_GRACE`]).
    #[serde(default)]
    pub grace: Option<Dur>,
    /// heating_off_season: mean supply temperature (°C) over the last 24 h above which the heating
    /// is on (default: not checked).
    #[serde(default)]
    pub max_supply_temperature: Option<f64>,
}

/// data_completeness's `grace` by default: an hour after start, the gateways' queues have
/// delivered what they held (they send at least every few minutes) and a seeding demo is done.
pub const DEFAULT_GRACE: Dur = Dur::hours(1);

fn default_severity() -> Severity {
    Severity::Warning
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertsConfig {
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(default = "default_interval")]
    pub interval: Dur,
    #[serde(default = "default_keep_resolved")]
    pub keep_resolved: Dur,
    /// Base URL of an Alertmanager (`http://host:9093`); alerts are POSTed to `/api/v2/alerts`.
    #[serde(default)]
    pub alertmanager_url: Option<String>,
    /// A URL that gets `{"alerts": [...]}` (the same alerts, with `status`) on every change.
    #[serde(default)]
    pub webhook_url: Option<String>,
    /// Per-meter gauges on /metrics (last reading age, live power); off for very large fleets.
    #[serde(default = "yes")]
    pub per_meter_metrics: bool,
    #[serde(default = "default_rules", rename = "rule")]
    pub rules: Vec<RuleConfig>,
}

fn yes() -> bool {
    true
}
fn default_interval() -> Dur {
    Dur::secs(60)
}
fn default_keep_resolved() -> Dur {
    Dur::hours(1)
}

impl Default for AlertsConfig {
    fn default() -> Self {
        AlertsConfig {
            enabled: true,
            interval: default_interval(),
            keep_resolved: default_keep_resolved(),
            alertmanager_url: None,
            webhook_url: None,
            per_meter_metrics: true,
            rules: default_rules(),
        }
    }
}

fn rule(name: &str, kind: RuleKind, severity: Severity, for_: Dur) -> RuleConfig {
    RuleConfig {
        name: name.into(),
        kind,
        severity,
        for_,
        meters: Vec::new(),
        carrier: None,
        labels: BTreeMap::new(),
        intervals: None,
        expected_interval: None,
        silence: None,
        max_lag: None,
        lookback: None,
        weeks: None,
        factor: None,
        night: None,
        holidays: Vec::new(),
        threshold: None,
        band: None,
        min_coverage: None,
        grace: None,
        max_supply_temperature: None,
    }
}

/// The rules run when the configuration names none.
pub fn default_rules() -> Vec<RuleConfig> {
    vec![
        rule("MeterSilent", RuleKind::MeterSilent, Severity::Warning, Dur::mins(15)),
        rule("GatewayOffline", RuleKind::GatewayOffline, Severity::Critical, Dur::mins(5)),
        rule("GatewayBacklog", RuleKind::GatewayBacklog, Severity::Warning, Dur::mins(15)),
        rule("CounterAnomaly", RuleKind::CounterAnomaly, Severity::Warning, Dur(0)),
        RuleConfig { carrier: Some(Carrier::Electricity), ..rule("NightBaseLoadHigh", RuleKind::BaseLoad, Severity::Info, Dur(0)) },
        RuleConfig { carrier: Some(Carrier::Water), ..rule("NightWaterFlow", RuleKind::NightFlow, Severity::Warning, Dur(0)) },
        rule("HeatingOffSeason", RuleKind::HeatingOffSeason, Severity::Info, Dur(0)),
        rule("BudgetOverrun", RuleKind::BudgetOverrun, Severity::Warning, Dur(0)),
        rule("QuotaBandExceeded", RuleKind::QuotaBand, Severity::Warning, Dur(0)),
        rule("DataIncomplete", RuleKind::DataCompleteness, Severity::Warning, Dur::hours(1)),
        rule("DiskSpaceLow", RuleKind::DiskSpaceLow, Severity::Critical, Dur::mins(5)),
    ]
}

fn valid_label(k: &str) -> bool {
    let mut c = k.chars();
    c.next().is_some_and(|f| f.is_ascii_alphabetic() || f == '_') && c.all(|x| x.is_ascii_alphanumeric() || x == '_')
}

impl AlertsConfig {
    /// Every problem, named by its key.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.interval.ms() < 100 {
            out.push("alerts.interval must be at least 100ms".to_string());
        }
        for (key, url) in [("alertmanager_url", &self.alertmanager_url), ("webhook_url", &self.webhook_url)] {
            if let Some(u) = url {
                if !(u.starts_with("http://") || u.starts_with("https://")) {
                    out.push(format!("alerts.{key} `{u}` must start with http:// or https://"));
                }
            }
        }
        let mut names = std::collections::BTreeSet::new();
        for (i, r) in self.rules.iter().enumerate() {
            let at = format!("alerts.rule[{i}] `{}`", r.name);
            if r.name.is_empty() || !r.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
                out.push(format!("{at}: name must be letters, digits, _ or -"));
            }
            if !names.insert(r.name.clone()) {
                out.push(format!("{at}: the name is used by an earlier rule"));
            }
            if r.for_.ms() < 0 {
                out.push(format!("{at}: for must not be negative"));
            }
            for k in r.labels.keys() {
                if !valid_label(k) || ["alertname", "severity", "agency", "building", "meter", "gateway"].contains(&k.as_str()) {
                    out.push(format!("{at}: label `{k}` must be a Prometheus label name and not one the engine sets"));
                }
            }
            out.extend(r.parameter_problems(&at));
            out.extend(r.value_problems(&at));
        }
        out
    }
}

impl RuleConfig {
    /// The parameters given that the rule's kind does not use, each named with the ones it uses.
    fn parameter_problems(&self, at: &str) -> Vec<String> {
        let (r, mut out) = (self, Vec::new());
        let uses: &[&str] = match r.kind {
            RuleKind::MeterSilent => &["intervals", "expected_interval", "meters", "carrier"],
            RuleKind::GatewayOffline => &["silence"],
            RuleKind::GatewayBacklog => &["max_lag"],
            RuleKind::CounterAnomaly => &["lookback", "meters", "carrier"],
            RuleKind::BaseLoad => &["weeks", "factor", "night", "holidays", "threshold", "meters", "carrier"],
            RuleKind::NightFlow => &["night", "threshold", "meters", "carrier"],
            RuleKind::HeatingOffSeason => &["threshold", "max_supply_temperature", "meters"],
            RuleKind::BudgetOverrun | RuleKind::QuotaBand => &["band"],
            RuleKind::DataCompleteness => &["min_coverage", "grace"],
            RuleKind::DiskSpaceLow => &["threshold"],
        };
        let set: [(&str, bool); 16] = [
            ("grace", r.grace.is_some()),
            ("max_supply_temperature", r.max_supply_temperature.is_some()),
            ("intervals", r.intervals.is_some()),
            ("expected_interval", r.expected_interval.is_some()),
            ("silence", r.silence.is_some()),
            ("max_lag", r.max_lag.is_some()),
            ("lookback", r.lookback.is_some()),
            ("weeks", r.weeks.is_some()),
            ("factor", r.factor.is_some()),
            ("night", r.night.is_some()),
            ("holidays", !r.holidays.is_empty()),
            ("threshold", r.threshold.is_some()),
            ("band", r.band.is_some()),
            ("min_coverage", r.min_coverage.is_some()),
            ("meters", !r.meters.is_empty()),
            ("carrier", r.carrier.is_some()),
        ];
        for (k, given) in set {
            if given && !uses.contains(&k) {
                out.push(format!("{at}: `{k}` does not apply to kind {} (it uses: {})", r.kind.as_str(), uses.join(", ")));
            }
        }
        out
    }

    /// The parameters given whose values are out of range.
    fn value_problems(&self, at: &str) -> Vec<String> {
        let (r, mut out) = (self, Vec::new());
        if r.intervals.is_some_and(|x| x.is_nan() || x <= 0.0) {
            out.push(format!("{at}: intervals must be positive"));
        }
        if r.factor.is_some_and(|x| x.is_nan() || x < 1.0) {
            out.push(format!("{at}: factor must be at least 1"));
        }
        if r.weeks == Some(0) {
            out.push(format!("{at}: weeks must be at least 1"));
        }
        if let Some([a, b]) = r.night {
            if !(a < b && b <= 24) {
                out.push(format!("{at}: night [{a}, {b}] must be local hours [from, to) with from < to <= 24 (a night starting before midnight is not supported)"));
            }
        }
        if r.min_coverage.is_some_and(|x| !(0.0..=1.0).contains(&x)) {
            out.push(format!("{at}: min_coverage must be within 0..=1"));
        }
        if r.threshold.is_some_and(|x| x.is_nan() || x < 0.0) {
            out.push(format!("{at}: threshold must not be negative"));
        }
        if r.grace.is_some_and(|d| d.ms() < 0) {
            out.push(format!("{at}: grace must not be negative"));
        }
        for d in [r.expected_interval, r.silence, r.max_lag, r.lookback].into_iter().flatten() {
            if d.ms() <= 0 {
                out.push(format!("{at}: durations must be positive"));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units_and_refuse_nonsense() {
        let cases: &[(&str, Option<i64>)] =
            &[("90s", Some(90_000)), ("15m", Some(900_000)), ("2h", Some(7_200_000)), ("7d", Some(604_800_000)), ("500ms", Some(500)), ("30", Some(30_000)), ("1.5h", Some(5_400_000)), ("x", None), ("3y", None)];
        for (s, want) in cases {
            assert_eq!(parse_duration(s).ok().map(Dur::ms), *want, "{s}");
        }
    }

    #[test]
    fn rules_parse_from_toml_and_problems_are_named() {
        let t = r#"
            interval = "10s"
            [[rule]]
            name = "Silent"
            kind = "meter_silent"
            for = "15m"
            intervals = 4
            [[rule]]
            name = "Leak"
            kind = "night_flow"
            severity = "critical"
            factor = 2.0
            night = [5, 1]
            labels = { team = "water", severity = "x" }
        "#;
        let c: AlertsConfig = toml::from_str(t).unwrap();
        assert_eq!(c.interval, Dur::secs(10));
        assert_eq!(c.rules.len(), 2);
        assert_eq!(c.rules[0].for_, Dur::mins(15));
        let p = c.problems().join("\n");
        assert!(p.contains("`Leak`: `factor` does not apply to kind night_flow"), "{p}");
        assert!(p.contains("night [5, 1]"), "{p}");
        assert!(p.contains("label `severity`"), "{p}");
        assert!(!p.contains("`Silent`"), "{p}");
    }

    #[test]
    fn defaults_are_valid_and_cover_every_kind() {
        let c = AlertsConfig::default();
        assert!(c.problems().is_empty(), "{:?}", c.problems());
        assert_eq!(c.rules.len(), 11);
        let c: AlertsConfig = toml::from_str("enabled = true").unwrap();
        assert_eq!(c.rules.len(), 11, "without [[alerts.rule]] the default rules run");
    }
}
