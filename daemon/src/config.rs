//! The daemon's configuration file (TOML). Every field can be overridden from the environment
//! as `ENERGYD__SECTION__FIELD` (for example `ENERGYD__HTTP__LISTEN=0.0.0.0:8080`).
//!
//! ```toml
//! data_dir = "/var/lib/energyd"
//! registry = "/etc/energyd/registry.toml"   # relative paths are relative to this file
//! timezone = "Asia/Shanghai"
//!
//! [http]
//! listen = "127.0.0.1:8080"
//! max_body_bytes = 33554432
//! # allow_insecure_open = false   # listen beyond loopback without [auth] (behind an authenticating proxy)
//! # tls_cert_file = "cert.pem"    # HTTPS: certificate chain and key, PEM
//! # tls_key_file = "key.pem"
//! request_timeout_ms = 60000      # a request not answered by then gets 503
//! header_read_timeout_ms = 10000  # a client sending its headers slower is disconnected
//! max_connections = 1024          # more wait in the listen backlog
//!
//! [auth]                          # see auth.rs; absent: open (implicit admin), loopback only
//!
//! [ingest]
//! unknown_meter = "reject"      # or "accept": keep the points and list the meter as unassigned
//! rate_per_gateway = 0.0        # ingest requests per second per gateway (0: no limit); over it: 429
//! burst_per_gateway = 0         # bucket size (0: twice the rate, at least 1)
//!
//! [retention]
//! raw_days = 1096               # raw points (default: three years and a day); older input is refused
//! rollup_days = 0               # hourly roll-ups; 0 keeps them forever (the default)
//! ```

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::ingest::config::{IngestConfig, MqttConfig};
use crate::registry::Registry;
use crate::serve::HttpConfig;
use crate::store::{RetentionConfig, StorageConfig};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DaemonConfig {
    pub data_dir: PathBuf,
    pub registry: PathBuf,
    #[serde(default = "default_tz")]
    pub timezone: String,
    #[serde(default)]
    pub http: HttpConfig,
    #[serde(default)]
    pub ingest: IngestConfig,
    /// MQTT ingest: subscribe to gateways' batches on a broker. Off when absent.
    #[serde(default)]
    pub mqtt: Option<MqttConfig>,
    #[serde(default)]
    pub retention: RetentionConfig,
    /// Bearer-token authentication. Absent: every request acts as an implicit admin, which
    /// `validate` allows on loopback addresses only.
    #[serde(default)]
    pub auth: Option<crate::auth::AuthConfig>,
    /// The alert engine: rules, Alertmanager and webhook (defaults when absent).
    #[serde(default)]
    pub alerts: crate::alerts::AlertsConfig,
    /// Where raw points go: the embedded store (default) or InfluxDB as well.
    #[serde(default)]
    pub storage: StorageConfig,
    /// The national building-energy monitoring protocol: collectors report here (issue 21).
    /// Off when absent.
    #[serde(default)]
    pub collector: Option<crate::collector::CollectorConfig>,
    /// Data centres above this one, reported to in the national protocol (issue 21).
    #[serde(default)]
    pub upstream: Vec<crate::collector::upstream::UpstreamConfig>,
    /// Public disclosure (art. 40) at `/public`, without login: off unless `enabled = true`.
    #[serde(default, skip_serializing_if = "crate::config::public_is_default")]
    pub public: crate::reports::public::PublicConfig,
}

fn public_is_default(p: &crate::reports::public::PublicConfig) -> bool {
    *p == crate::reports::public::PublicConfig::default()
}

fn default_tz() -> String {
    "Asia/Shanghai".into()
}

/// Every problem found, one per line.
#[derive(Debug, thiserror::Error)]
#[error("{}", .0.join("\n"))]
pub struct ConfigErrors(pub Vec<String>);

/// A loaded and validated configuration.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: DaemonConfig,
    pub registry: Registry,
    pub tz: chrono_tz::Tz,
    /// The token table when `[auth]` is configured; `None`: open (implicit admin).
    pub tokens: Option<crate::auth::Tokens>,
    /// The file this was loaded from (hashed into the audit log at startup).
    pub source: Option<PathBuf>,
}

impl DaemonConfig {
    fn read(path: &Path) -> Result<DaemonConfig, ConfigErrors> {
        let cfg = config::Config::builder()
            .add_source(config::File::from(path).format(config::FileFormat::Toml).required(true))
            .add_source(config::Environment::with_prefix("ENERGYD").prefix_separator("__").separator("__"))
            .build()
            .map_err(|e| ConfigErrors(vec![format!("{}: {e}", path.display())]))?;
        let mut c: DaemonConfig = cfg.try_deserialize().map_err(|e| ConfigErrors(vec![format!("{}: {e}", path.display())]))?;
        let base = path.parent().unwrap_or(Path::new("."));
        if c.registry.is_relative() {
            c.registry = base.join(&c.registry);
        }
        if c.data_dir.is_relative() {
            c.data_dir = base.join(&c.data_dir);
        }
        for f in [c.http.tls_cert_file.as_mut(), c.http.tls_key_file.as_mut(), c.auth.as_mut().and_then(|a| a.tokens_file.as_mut())].into_iter().flatten() {
            if f.is_relative() {
                *f = base.join(&*f);
            }
        }
        if let Some(col) = c.collector.as_mut() {
            col.resolve(base);
        }
        for u in &mut c.upstream {
            u.resolve(base);
        }
        if let Some(f) = c.auth.as_mut().and_then(|a| a.users_file.as_mut()) {
            if f.is_relative() {
                *f = base.join(&*f);
            }
        }
        Ok(c)
    }

    /// Loads the file and the registry it names; every problem in either is reported at once.
    pub fn load(path: &Path) -> Result<Loaded, ConfigErrors> {
        let config = DaemonConfig::read(path)?;
        let mut loaded = config.validate()?;
        loaded.source = Some(path.to_path_buf());
        Ok(loaded)
    }

    /// The page's users file: `auth.users_file`, or `<data_dir>/users.toml`.
    pub fn users_file(&self) -> PathBuf {
        self.auth.as_ref().and_then(|a| a.users_file.clone()).unwrap_or_else(|| self.data_dir.join("users.toml"))
    }

    pub fn validate(self) -> Result<Loaded, ConfigErrors> {
        let mut errors = Vec::new();
        let tz = match self.timezone.parse::<chrono_tz::Tz>() {
            Ok(tz) => Some(tz),
            Err(_) => {
                errors.push(format!("timezone `{}` is not an IANA time zone name such as Asia/Shanghai", self.timezone));
                None
            }
        };
        errors.extend(self.http.problems(self.auth.is_some()));
        errors.extend(self.ingest.problems());
        if let Some(m) = &self.mqtt {
            errors.extend(m.problems());
        }
        errors.extend(self.retention.problems());
        errors.extend(self.alerts.problems());
        errors.extend(self.storage.problems());
        if let Some(c) = &self.collector {
            errors.extend(c.problems());
        }
        for u in &self.upstream {
            errors.extend(u.problems());
        }
        let registry = match Registry::load(&self.registry) {
            Ok(r) => Some(r),
            Err(e) => {
                errors.extend(e.0);
                None
            }
        };
        let tokens = match &self.auth {
            None => None,
            Some(a) => match crate::auth::Tokens::load(a, Path::new("."), registry.as_ref()) {
                Ok(t) => Some(t),
                Err(e) => {
                    errors.extend(e);
                    None
                }
            },
        };
        if self.auth.is_some() {
            if let Err(e) = crate::auth::users::load(&self.users_file(), registry.as_ref()) {
                errors.push(format!("auth.users_file: {e}"));
            }
        }
        match (tz, registry) {
            (Some(tz), Some(registry)) if errors.is_empty() => Ok(Loaded { config: self, registry, tz, tokens, source: None }),
            _ => Err(ConfigErrors(errors)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::InfluxRead;

    #[test]
    fn all_problems_of_config_and_registry_at_once() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("registry.toml"), "[[agency]]\nid = \"a a\"\nname = \"x\"\nlevel = \"city\"\n").unwrap();
        let cfg = dir.path().join("energyd.toml");
        std::fs::write(&cfg, "data_dir = \"data\"\nregistry = \"registry.toml\"\ntimezone = \"Mars/Olympus\"\n[http]\nlisten = \"nowhere\"\n").unwrap();
        let e = DaemonConfig::load(&cfg).unwrap_err().to_string();
        assert!(e.contains("timezone `Mars/Olympus`"), "{e}");
        assert!(e.contains("http.listen `nowhere`"), "{e}");
        assert!(e.contains("agency `a a`"), "{e}");
    }

    #[test]
    fn retention_defaults_to_three_years_and_is_checked() {
        let r = RetentionConfig::default();
        assert!(r.raw_days >= 3 * 365 && r.rollup_ms().is_none());
        let cases: &[(u32, u32, Option<&str>)] = &[
            (30, 0, None),
            (30, 365, None),
            (0, 0, Some("raw_days must be at least 1")),
            (365, 30, Some("roll-ups must outlive")),
        ];
        for &(raw_days, rollup_days, want) in cases {
            let p = RetentionConfig { raw_days, rollup_days }.problems();
            match want {
                None => assert!(p.is_empty(), "{raw_days}/{rollup_days}: {p:?}"),
                Some(w) => assert!(p.iter().any(|x| x.contains(w)), "{raw_days}/{rollup_days}: {p:?}"),
            }
        }
    }

    #[test]
    fn alert_rules_load_through_the_config_file_with_every_parameter() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("registry.toml"), "").unwrap();
        let cfg = dir.path().join("energyd.toml");
        std::fs::write(
            &cfg,
            "data_dir = \"d\"\nregistry = \"registry.toml\"\n[alerts]\ninterval = \"30s\"\nalertmanager_url = \"http://127.0.0.1:9093\"\n\
             [[alerts.rule]]\nname = \"Base\"\nkind = \"base_load\"\nseverity = \"info\"\nfor = \"1h\"\ncarrier = \"electricity\"\nnight = [1, 5]\nweeks = 3\nfactor = 2\nholidays = [\"2026-10-01\"]\nlabels = { team = \"facilities\" }\n\
             [[alerts.rule]]\nname = \"Silent\"\nkind = \"meter_silent\"\nintervals = 4\nexpected_interval = 900\nmeters = [\"m1\"]\n",
        )
        .unwrap();
        let l = DaemonConfig::load(&cfg).unwrap();
        let a = &l.config.alerts;
        assert_eq!(a.interval, crate::alerts::config::Dur::secs(30));
        assert_eq!(a.rules.len(), 2);
        let b = &a.rules[0];
        assert_eq!((b.night, b.weeks, b.factor, b.for_), (Some([1, 5]), Some(3), Some(2.0), crate::alerts::config::Dur::hours(1)));
        assert_eq!(b.holidays[0].to_string(), "2026-10-01");
        assert_eq!(b.labels["team"], "facilities");
        assert_eq!(a.rules[1].expected_interval, Some(crate::alerts::config::Dur::mins(15)));
        // A parameter of another kind is named.
        std::fs::write(&cfg, "data_dir = \"d\"\nregistry = \"registry.toml\"\n[[alerts.rule]]\nname = \"X\"\nkind = \"gateway_offline\"\nfactor = 2\n").unwrap();
        let e = DaemonConfig::load(&cfg).unwrap_err().to_string();
        assert!(e.contains("alerts.rule[0] `X`: `factor` does not apply to kind gateway_offline"), "{e}");
    }

    #[test]
    fn storage_problems_are_all_named_and_secrets_never_shown() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("registry.toml"), "").unwrap();
        let cfg = dir.path().join("energyd.toml");
        std::fs::write(
            &cfg,
            "data_dir = \"d\"\nregistry = \"registry.toml\"\n[storage]\nbackend = \"influxdb\"\n[storage.influxdb]\nurl = \"influx:8086\"\napi = \"v2\"\n\
             token = \"s3cret\"\ntoken_file = \"nowhere\"\nbatch_lines = 0\nmax_spool_bytes = 10\n",
        )
        .unwrap();
        let e = DaemonConfig::load(&cfg).unwrap_err().to_string();
        for want in ["storage.influxdb.url `influx:8086`", "storage.influxdb.bucket is needed", "either token or token_file", "batch_lines", "max_spool_bytes"] {
            assert!(e.contains(want), "{want}: {e}");
        }
        assert!(!e.contains("s3cret"), "{e}");
        // Backend on without its section.
        std::fs::write(&cfg, "data_dir = \"d\"\nregistry = \"registry.toml\"\n[storage]\nbackend = \"influxdb\"\n").unwrap();
        assert!(DaemonConfig::load(&cfg).unwrap_err().to_string().contains("needs a [storage.influxdb] section"));
        // A good v1 section; its Debug hides the password.
        std::fs::write(
            &cfg,
            "data_dir = \"d\"\nregistry = \"registry.toml\"\n[storage]\nbackend = \"influxdb\"\n[storage.influxdb]\nurl = \"http://127.0.0.1:8086\"\ndatabase = \"energy\"\nusername = \"u\"\npassword = \"s3cret\"\n",
        )
        .unwrap();
        let loaded = DaemonConfig::load(&cfg).unwrap();
        let i = loaded.config.storage.influx().unwrap();
        assert_eq!((i.batch_lines, i.gzip, i.measurement.as_str(), i.read), (5000, true, "energy", InfluxRead::Influxql));
        assert!(!format!("{loaded:?}").contains("s3cret"));
        assert!(DaemonConfig { storage: StorageConfig::default(), ..loaded.config }.storage.influx().is_none());
    }

    #[test]
    fn unknown_keys_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("energyd.toml");
        std::fs::write(&cfg, "data_dir = \"d\"\nregistry = \"r.toml\"\nlisten = \"x\"\n").unwrap();
        let e = DaemonConfig::load(&cfg).unwrap_err().to_string();
        assert!(e.contains("listen"), "{e}");
    }

    /// Loads `energyd.toml` in `dir` made of a data directory, an empty registry and `extra`.
    fn loader(dir: &Path) -> impl Fn(&str) -> Result<Loaded, ConfigErrors> + '_ {
        std::fs::write(dir.join("r.toml"), "").unwrap();
        move |extra: &str| {
            let cfg = dir.join("energyd.toml");
            std::fs::write(&cfg, format!("data_dir = \"d\"\nregistry = \"r.toml\"\n{extra}")).unwrap();
            DaemonConfig::load(&cfg)
        }
    }

    #[test]
    fn open_api_beyond_loopback_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let load = loader(dir.path());
        let e = load("[http]\nlisten = \"0.0.0.0:8080\"\n").unwrap_err().to_string();
        assert!(e.contains("http.listen `0.0.0.0:8080` is not a loopback address") && e.contains("allow_insecure_open"), "{e}");
        assert!(load("[http]\nlisten = \"0.0.0.0:8080\"\nallow_insecure_open = true\n").is_ok());
        assert!(load("[http]\nlisten = \"[::1]:8080\"\n").is_ok());
        let token = format!("[auth]\n[[auth.token]]\nname = \"ops\"\nrole = \"admin\"\nsha256 = \"{}\"\n", crate::auth::hash_token("t"));
        let l = load(&format!("[http]\nlisten = \"0.0.0.0:8080\"\n{token}")).unwrap();
        assert!(l.tokens.unwrap().authenticate("t").is_some());
        let e = load("[http]\ntls_cert_file = \"c.pem\"\n").unwrap_err().to_string();
        assert!(e.contains("go together"), "{e}");
        let e = load("[http]\ntls_cert_file = \"c.pem\"\ntls_key_file = \"k.pem\"\n[auth]\n").unwrap_err().to_string();
        assert!(e.contains("c.pem does not exist") && e.contains("holds no tokens"), "{e}");
    }

    #[test]
    fn connection_body_and_disk_limits_have_defaults_and_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let load = loader(dir.path());
        let c = load("").unwrap().config;
        assert_eq!((c.http.max_connections_per_client, c.http.max_unauthenticated_connections_per_client, c.http.body_read_timeout_ms), (256, 64, 10_000));
        assert_eq!(c.storage.min_free_bytes, 64 << 20);
        let c = load("[http]\nmax_connections_per_client = 8\nbody_read_timeout_ms = 2000\n[storage]\nmin_free_bytes = 0\n").unwrap().config;
        assert_eq!((c.http.max_connections_per_client, c.http.body_read_timeout_ms, c.storage.min_free_bytes), (8, 2000, 0));
        let e = load("[http]\nmax_unauthenticated_connections_per_client = 0\nbody_read_timeout_ms = 5\n").unwrap_err().to_string();
        assert!(e.contains("http.max_unauthenticated_connections_per_client") && e.contains("http.body_read_timeout_ms"), "{e}");
    }
}

/// What `check-config` prints after "ok": the registry's warnings (`warning: ...`) and the
/// grid factor each year uses, from the earliest data year of the region to `this_year`.
pub fn check_report(reg: &crate::registry::Registry, this_year: i32) -> Vec<String> {
    let mut out: Vec<String> = reg.warnings().into_iter().map(|w| format!("warning: {w}")).collect();
    let region = &reg.file.accounting.grid_region;
    let first = reg.grid_factors().iter().filter(|g| &g.region == region).map(|g| g.year).min().unwrap_or(this_year);
    for (year, g) in reg.grid_factor_years(first, this_year.max(first)) {
        out.push(format!(
            "grid factor {year}: {} kgCO2/kWh ({}, data year {}; {})",
            g.kg_per_kwh,
            g.region,
            g.year,
            g.source.as_deref().unwrap_or("registry [[grid_factor]]")
        ));
    }
    out
}

#[cfg(test)]
mod check_report_tests {
    /// One warning, then one line per year: 2021-2023 from the Ministry's table, 2024 and 2025
    /// from 2023's (the latest data year not after them).
    #[test]
    fn check_config_prints_warnings_and_the_factor_of_each_year() {
        let reg = crate::registry::Registry::parse(
            "[[agency]]\nid = \"a\"\nname = \"A\"\nlevel = \"city\"\n[[building]]\nid = \"b\"\nname = \"B\"\nfloor_area = 100.0\noccupants = [ { agency = \"a\", share = 1.0 } ]\n\
             [[meter]]\nid = \"dc\"\nbuilding = \"b\"\ncarrier = \"electricity\"\nend_use = \"data_centre\"\n",
        )
        .unwrap();
        let lines = super::check_report(&reg, 2025);
        assert!(lines[0].starts_with("warning: meter `dc` measures a special load (data_centre)"), "{lines:?}");
        let years: Vec<&str> = lines[1..].iter().map(|l| l.split(':').next().unwrap_or("")).collect();
        assert_eq!(years, ["grid factor 2021", "grid factor 2022", "grid factor 2023", "grid factor 2024", "grid factor 2025"]);
        assert!(lines[5].contains("0.6634 kgCO2/kWh (shanxi, data year 2023; built in"), "{lines:?}");
    }
}
