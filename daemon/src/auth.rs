//! Who may do what: bearer tokens, roles and the principal a request acts as. No HTTP here (the
//! middleware and extractor are in `api/auth.rs`), so the rules are unit-tested directly.
//!
//! Tokens are random 256-bit strings made by `energyd token new`; the configuration keeps only
//! their SHA-256 (hex). For high-entropy random tokens a plain hash is enough: nobody can guess a
//! preimage, so a slow password hash (argon2, bcrypt) would add nothing but latency. A presented
//! token is hashed and looked up by its hash, so lookup timing tells nothing about the token.
//!
//! ```toml
//! [auth]
//! tokens_file = "/etc/energyd/tokens.toml"   # optional: more [[token]] entries, same fields
//! metrics = "token"                          # default: /metrics needs a token with read rights;
//!                                            # "open": without one, only fleet metrics
//!
//! [[auth.token]]
//! name = "drc-energy-officer"
//! role = "agency"                            # admin | bureau | agency | engineer | gateway
//! agency = "prov-drc"                        # role agency: the agency it may read
//! sha256 = "<64 hex digits>"                 # printed by `energyd token new`
//!
//! [[auth.token]]
//! name = "gw-bldg-a"
//! role = "gateway"
//! gateway = "gw-bldg-a"                      # role gateway: the only gateway id it may post for
//! meters = ["bldg-a-water"]                  # optional: meters it may write besides those the
//!                                            # registry assigns to its gateway
//! sha256 = "<64 hex digits>"
//! ```
//!
//! # Which meters a gateway writes
//!
//! A gateway (a gateway token over HTTP, or the gateway id of an MQTT topic) writes meter `M`
//! only when
//!
//! * the registry assigns `M` to it (`gateway = "<id>"` on the meter), or
//! * `M` has no `gateway` in the registry (or is not in the registry at all) and a token of
//!   that gateway lists `M` in its `meters`.
//!
//! Nothing else: a meter with no `gateway` that no token lists is written by no gateway (the
//! safe default; admin tokens, and every request when `[auth]` is absent, write any meter). A
//! token may not list a meter the registry assigns to another gateway (a configuration error).
//! Readings of other meters are refused with 403 naming the meter, counted in
//! `energyd_ingest_rejected_total{reason="meter_not_assigned"}` and written to the audit log.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};

use crate::registry::Registry;

pub mod sessions;
pub mod users;

/// What a token may do.
///
/// - `admin`: everything;
/// - `bureau`: read everything, reports, the audit log;
/// - `agency`: read only its own agency's data and reports (lists are filtered to it);
/// - `engineer`: read everything, meter events and corrections;
/// - `gateway`: ingest only, only batches of its own gateway id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Admin,
    Bureau,
    Agency,
    Engineer,
    Gateway,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Bureau => "bureau",
            Role::Agency => "agency",
            Role::Engineer => "engineer",
            Role::Gateway => "gateway",
        }
    }
}

/// A role name that is none of the five.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("role `{0}` is not one of admin, bureau, agency, engineer, gateway")]
pub struct UnknownRole(pub String);

impl std::str::FromStr for Role {
    type Err = UnknownRole;
    fn from_str(s: &str) -> Result<Role, UnknownRole> {
        match s {
            "admin" => Ok(Role::Admin),
            "bureau" => Ok(Role::Bureau),
            "agency" => Ok(Role::Agency),
            "engineer" => Ok(Role::Engineer),
            "gateway" => Ok(Role::Gateway),
            other => Err(UnknownRole(other.to_string())),
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One token as configured: its hash, never the token itself.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenEntry {
    pub name: String,
    pub role: Role,
    /// Role `agency`: the agency whose data it may read.
    #[serde(default)]
    pub agency: Option<String>,
    /// Role `gateway`: the gateway id it may post batches for.
    #[serde(default)]
    pub gateway: Option<String>,
    /// Role `gateway`: meters without a `gateway` in the registry that it may write too.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub meters: Vec<String>,
    /// SHA-256 of the token, 64 hex digits.
    pub sha256: String,
}

/// Who may read `/metrics` when `[auth]` is configured.
///
/// Series labelled with an `agency`, `building` or `meter` (per-meter power and reading ages,
/// alerts) are agency data: a token with read rights sees those of what it may read (admin,
/// bureau and engineer everything, an agency token its own agency's, buildings and meters), and
/// nobody else sees any. The rest (process, store, ingest and fleet counters, gateways) carries
/// no agency data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MetricsAccess {
    /// Anyone may scrape; without a token with read rights (none, or a gateway's) only the
    /// series that carry no agency data are served.
    Open,
    /// The default: a token with read rights is needed (401 without one, 403 for a gateway
    /// token), and the agency series are those the token may read.
    #[default]
    Token,
}

/// `[auth]`: when present, every endpoint but `/healthz` (and `/metrics` if open) needs a token.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    #[serde(default, rename = "token")]
    pub tokens: Vec<TokenEntry>,
    /// A TOML file of more `[[token]]` entries (kept apart from the main file, e.g. mode 0600).
    #[serde(default)]
    pub tokens_file: Option<PathBuf>,
    #[serde(default)]
    pub metrics: MetricsAccess,
    /// The page's user accounts (`energyd user add`); default `<data_dir>/users.toml`.
    #[serde(default)]
    pub users_file: Option<PathBuf>,
    /// A page session ends after this many minutes without a request (default 30).
    #[serde(default)]
    pub session_idle_minutes: Option<u64>,
}

impl AuthConfig {
    /// Inactivity after which a page session ends, ms.
    pub fn session_idle_ms(&self) -> i64 {
        i64::try_from(self.session_idle_minutes.unwrap_or(30).clamp(1, 24 * 60)).unwrap_or(30) * 60_000
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokensFile {
    #[serde(default)]
    token: Vec<TokenEntry>,
}

/// The identity a request acts as, put in the request's extensions by the auth middleware.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The token's name (never the token).
    pub name: String,
    pub role: Role,
    /// Role `agency`: its agency.
    pub agency: Option<String>,
    /// Role `gateway`: its gateway id.
    pub gateway: Option<String>,
    /// Role `gateway`: the meters its token lists (see the module's rule).
    pub meters: Vec<String>,
    /// The peer's address, for the audit log.
    pub remote: Option<String>,
}

/// Why a principal may not do something: the message names the rule, never a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Forbidden(pub String);

impl Principal {
    /// Authentication is not configured: every request acts as this implicit admin.
    pub fn open() -> Principal {
        Principal { name: "anonymous (auth not configured)".into(), role: Role::Admin, agency: None, gateway: None, meters: Vec::new(), remote: None }
    }

    /// The daemon itself (startup records in the audit log).
    pub fn system() -> Principal {
        Principal { name: "energyd".into(), role: Role::Admin, agency: None, gateway: None, meters: Vec::new(), remote: None }
    }

    fn from_entry(e: &TokenEntry) -> Principal {
        Principal { name: e.name.clone(), role: e.role, agency: e.agency.clone(), gateway: e.gateway.clone(), meters: e.meters.clone(), remote: None }
    }

    fn deny(&self, what: impl std::fmt::Display) -> Forbidden {
        Forbidden(format!("token `{}` (role {}) may not {what}", self.name, self.role))
    }

    /// Admin, bureau and engineer read everything.
    pub fn reads_all(&self) -> bool {
        matches!(self.role, Role::Admin | Role::Bureau | Role::Engineer)
    }

    /// Passes for `role` and for admin (admin may do everything).
    pub fn require_role(&self, role: Role) -> Result<(), Forbidden> {
        self.require_any(&[role])
    }

    /// Passes for any of `roles` and for admin.
    pub fn require_any(&self, roles: &[Role]) -> Result<(), Forbidden> {
        if self.role == Role::Admin || roles.contains(&self.role) {
            Ok(())
        } else {
            let names: Vec<&str> = roles.iter().map(|r| r.name()).collect();
            Err(self.deny(format_args!("do this (needs role {} or admin)", names.join(" or "))))
        }
    }

    /// Reading data at all: everyone but gateways.
    pub fn require_read(&self) -> Result<(), Forbidden> {
        if self.role == Role::Gateway {
            return Err(self.deny("read data (gateway tokens may only ingest)"));
        }
        Ok(())
    }

    /// Reading everything (not only one agency's data): admin, bureau, engineer.
    pub fn require_read_all(&self) -> Result<(), Forbidden> {
        if self.reads_all() {
            Ok(())
        } else {
            Err(self.deny("read data of every agency"))
        }
    }

    /// May this principal see agency `id`'s data?
    pub fn sees_agency(&self, id: &str) -> bool {
        self.reads_all() || (self.role == Role::Agency && self.agency.as_deref() == Some(id))
    }

    /// May it see building `id`: one its agency occupies.
    pub fn sees_building(&self, registry: &Registry, id: &str) -> bool {
        if self.reads_all() {
            return true;
        }
        match (self.role, self.agency.as_deref(), registry.building(id)) {
            (Role::Agency, Some(a), Some(b)) => b.occupants.iter().any(|o| o.agency == a && o.share > 0.0),
            _ => false,
        }
    }

    /// May it see meter `id`: one serving its agency (a share of it). A meter not in the registry
    /// is seen only by those who read everything.
    pub fn sees_meter(&self, registry: &Registry, id: &str) -> bool {
        if self.reads_all() {
            return true;
        }
        match (self.role, self.agency.as_deref(), registry.meter(id)) {
            (Role::Agency, Some(a), Some(m)) => registry.share(m, a) > 0.0,
            _ => false,
        }
    }

    /// Agency `id`'s data (consumption, indicators, reports).
    pub fn require_agency(&self, _registry: &Registry, id: &str) -> Result<(), Forbidden> {
        self.require_read()?;
        if self.sees_agency(id) {
            Ok(())
        } else {
            Err(self.deny(format_args!("read agency `{id}` (only its own agency's data)")))
        }
    }

    pub fn require_building(&self, registry: &Registry, id: &str) -> Result<(), Forbidden> {
        self.require_read()?;
        if self.sees_building(registry, id) {
            Ok(())
        } else {
            Err(self.deny(format_args!("read building `{id}` (it does not house the token's agency)")))
        }
    }

    pub fn require_meter(&self, registry: &Registry, id: &str) -> Result<(), Forbidden> {
        self.require_read()?;
        if self.sees_meter(registry, id) {
            Ok(())
        } else {
            Err(self.deny(format_args!("read meter `{id}` (it does not serve the token's agency)")))
        }
    }

    /// Posting readings (batches, line protocol): admin and gateways.
    pub fn require_ingest(&self) -> Result<(), Forbidden> {
        self.require_role(Role::Gateway)
    }

    /// A batch claiming gateway `id`: a gateway token only for its own id.
    pub fn require_gateway(&self, id: &str) -> Result<(), Forbidden> {
        self.require_ingest()?;
        if self.role == Role::Gateway && self.gateway.as_deref() != Some(id) {
            return Err(self.deny(format_args!("post batches of gateway `{id}` (only its own gateway's)")));
        }
        Ok(())
    }

    /// Why this principal may not write readings of `meter`, if it may not: a gateway token
    /// writes only its gateway's meters (the module's rule); admin writes every meter.
    pub fn meter_refusal(&self, registry: &Registry, meter: &str) -> Option<String> {
        match (self.role, self.gateway.as_deref()) {
            (Role::Admin, _) => None,
            (Role::Gateway, Some(g)) => gateway_refusal(registry, g, &self.meters, meter),
            _ => Some(format!("token `{}` (role {}) may not write readings", self.name, self.role)),
        }
    }

    /// Keeps the items this principal may see; `key` gives an item's agency (for lists of
    /// agencies), or use [`Principal::sees_building`] / [`Principal::sees_meter`] in `keep`.
    pub fn filter<T>(&self, items: Vec<T>, keep: impl Fn(&Principal, &T) -> bool) -> Vec<T> {
        if self.reads_all() {
            return items;
        }
        items.into_iter().filter(|i| keep(self, i)).collect()
    }
}

/// Why gateway `gateway` may not write readings of `meter` (`None`: it may), by the module's
/// rule; `listed` are the meters its tokens list.
pub fn gateway_refusal(registry: &Registry, gateway: &str, listed: &[String], meter: &str) -> Option<String> {
    match registry.meter(meter).and_then(|m| m.gateway.as_deref()) {
        Some(g) if g == gateway => None,
        Some(g) => Some(format!("meter `{meter}` is assigned to gateway `{g}` in the registry, not to gateway `{gateway}`")),
        None if listed.iter().any(|m| m == meter) => None,
        None if registry.meter(meter).is_some() => Some(format!(
            "meter `{meter}` is not assigned to gateway `{gateway}`: set `gateway = \"{gateway}\"` on the meter in the registry, or list it in the gateway token's `meters`"
        )),
        None => Some(format!("meter `{meter}` is not in the registry and gateway `{gateway}`'s token does not list it in `meters`")),
    }
}

/// SHA-256 of a token, lower-case hex.
pub fn hash_token(token: &str) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    hex(d.as_ref())
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 15)]));
    }
    s
}

/// The system's random generator did not answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the system random generator failed")]
pub struct RandomFailed;

/// A fresh random token: `edt_` and 256 bits from the system's CSPRNG in hex.
pub fn new_token() -> Result<String, RandomFailed> {
    use ring::rand::SecureRandom as _;
    let mut buf = [0u8; 32];
    ring::rand::SystemRandom::new().fill(&mut buf).map_err(|_| RandomFailed)?;
    Ok(format!("edt_{}", hex(&buf)))
}

/// A TOML string literal (JSON string escapes are valid TOML basic-string escapes).
pub fn toml_string(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

/// The `[[auth.token]]` entry to paste into the configuration for a new token.
pub fn entry_toml(e: &TokenEntry) -> String {
    let mut out = format!("[[auth.token]]\nname = {}\nrole = \"{}\"\n", toml_string(&e.name), e.role);
    if let Some(a) = &e.agency {
        out.push_str(&format!("agency = {}\n", toml_string(a)));
    }
    if let Some(g) = &e.gateway {
        out.push_str(&format!("gateway = {}\n", toml_string(g)));
    }
    if !e.meters.is_empty() {
        let list: Vec<String> = e.meters.iter().map(|m| toml_string(m)).collect();
        out.push_str(&format!("meters = [{}]\n", list.join(", ")));
    }
    out.push_str(&format!("sha256 = \"{}\"\n", e.sha256));
    out
}

/// The validated token table: SHA-256 hex -> principal. Clones share the table, which
/// [`Tokens::replace`] swaps as a whole when the tokens file is reloaded (a request sees the
/// old table or the new one, never a mix).
#[derive(Debug, Clone, Default)]
pub struct Tokens {
    by_hash: Arc<RwLock<Arc<HashMap<String, Principal>>>>,
    pub metrics: MetricsAccess,
}

impl Tokens {
    /// Reads `tokens_file` (relative to `base`) and checks every entry against the registry;
    /// every problem is reported, named by the entry's name (never by its hash).
    pub fn load(cfg: &AuthConfig, base: &Path, registry: Option<&Registry>) -> Result<Tokens, Vec<String>> {
        let mut errors = Vec::new();
        let mut entries: Vec<(String, TokenEntry)> = cfg.tokens.iter().map(|e| ("auth.token".to_string(), e.clone())).collect();
        if let Some(f) = &cfg.tokens_file {
            let path = if f.is_relative() { base.join(f) } else { f.clone() };
            match std::fs::read_to_string(&path) {
                Err(e) => errors.push(format!("auth.tokens_file {}: cannot read: {e}", path.display())),
                Ok(text) => match toml::from_str::<TokensFile>(&text) {
                    Err(e) => errors.push(format!("auth.tokens_file {}: {}", path.display(), e.to_string().trim_end().replace('\n', " "))),
                    Ok(t) => entries.extend(t.token.into_iter().map(|e| (format!("{} [[token]]", path.display()), e))),
                },
            }
        }
        let mut by_hash = HashMap::new();
        let mut names = std::collections::HashSet::new();
        for (at, e) in &entries {
            let at = format!("{at} `{}`", e.name);
            if e.name.trim().is_empty() || e.name.len() > 128 || e.name.chars().any(char::is_control) {
                errors.push(format!("{at}: name must be 1-128 printable characters"));
            }
            if !names.insert(e.name.clone()) {
                errors.push(format!("{at}: the name is used by two tokens"));
            }
            let h = e.sha256.to_ascii_lowercase();
            if h.len() != 64 || !h.bytes().all(|b| b.is_ascii_hexdigit()) {
                errors.push(format!("{at}: sha256 must be 64 hex digits (the hash printed by `energyd token new`, not the token)"));
            }
            match (e.role, &e.agency, &e.gateway) {
                (Role::Agency, Some(a), None) => {
                    if let Some(r) = registry {
                        if r.agency(a).is_none() {
                            errors.push(format!("{at}: agency `{a}` is not in the registry"));
                        }
                    }
                }
                (Role::Agency, _, _) => errors.push(format!("{at}: role agency needs `agency` (and no `gateway`)")),
                (Role::Gateway, None, Some(g)) => {
                    if let Err(err) = energy_wire::validate_id(g) {
                        errors.push(format!("{at}: gateway `{g}`: {err}"));
                    }
                    for m in &e.meters {
                        if let Err(err) = energy_wire::validate_id(m) {
                            errors.push(format!("{at}: meters: `{m}`: {err}"));
                        }
                        if let Some(other) = registry.and_then(|r| r.meter(m)).and_then(|x| x.gateway.as_deref()).filter(|o| *o != g) {
                            errors.push(format!("{at}: meters: `{m}` is assigned to gateway `{other}` in the registry"));
                        }
                    }
                }
                (Role::Gateway, _, _) => errors.push(format!("{at}: role gateway needs `gateway` (and no `agency`)")),
                (role, None, None) => {
                    let _ = role;
                }
                (role, _, _) => errors.push(format!("{at}: role {role} takes neither `agency` nor `gateway`")),
            }
            if e.role != Role::Gateway && !e.meters.is_empty() {
                errors.push(format!("{at}: only a gateway token takes `meters`"));
            }
            if by_hash.insert(h, Principal::from_entry(e)).is_some() {
                errors.push(format!("{at}: the same token hash appears twice"));
            }
        }
        // With a users file the page's users log in; API tokens may come later.
        if entries.is_empty() && errors.is_empty() && cfg.users_file.is_none() {
            errors.push("[auth] is present but holds no tokens; add [[auth.token]] entries (`energyd token new`), a tokens_file, or a users_file for the web application's users (`energyd user add`), or remove [auth] to run open on loopback".into());
        }
        if errors.is_empty() {
            Ok(Tokens { by_hash: Arc::new(RwLock::new(Arc::new(by_hash))), metrics: cfg.metrics })
        } else {
            Err(errors)
        }
    }

    /// The meters the tokens of gateway `gateway` list (for MQTT ingest, where the topic names
    /// the gateway).
    pub fn listed_meters(&self, gateway: &str) -> Vec<String> {
        let mut out: Vec<String> = self.table().values().filter(|p| p.role == Role::Gateway && p.gateway.as_deref() == Some(gateway)).flat_map(|p| p.meters.iter().cloned()).collect();
        out.sort();
        out.dedup();
        out
    }

    /// The principal of a presented token, if it is one of ours.
    pub fn authenticate(&self, token: &str) -> Option<Principal> {
        self.table().get(&hash_token(token)).cloned()
    }

    fn table(&self) -> Arc<HashMap<String, Principal>> {
        self.by_hash.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn len(&self) -> usize {
        self.table().len()
    }

    pub fn is_empty(&self) -> bool {
        self.table().is_empty()
    }

    /// Puts the table of `fresh` in force for this table and every clone of it (a reload).
    pub fn replace(&self, fresh: &Tokens) {
        let t = fresh.table();
        *self.by_hash.write().unwrap_or_else(|e| e.into_inner()) = t;
    }

    /// The names of the tokens, sorted (for the log of a reload; never the hashes).
    pub fn names(&self) -> Vec<String> {
        let mut n: Vec<String> = self.table().values().map(|p| p.name.clone()).collect();
        n.sort();
        n
    }

    /// A table from (token, entry) pairs; for tests.
    pub fn from_plain(tokens: &[(&str, TokenEntry)]) -> Tokens {
        let by_hash = tokens.iter().map(|(t, e)| (hash_token(t), Principal::from_entry(e))).collect();
        Tokens { by_hash: Arc::new(RwLock::new(Arc::new(by_hash))), metrics: MetricsAccess::Open }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REG: &str = r#"
[[agency]]
id = "a"
name = "A"
level = "city"
[[agency]]
id = "b"
name = "B"
level = "city"
[[building]]
id = "shared"
name = "S"
floor_area = 10.0
occupants = [ { agency = "a", share = 0.5 }, { agency = "b", share = 0.5 } ]
[[building]]
id = "b-only"
name = "S"
floor_area = 10.0
occupants = [ { agency = "b", share = 1.0 } ]
[[meter]]
id = "shared-elec"
building = "shared"
carrier = "electricity"
[[meter]]
id = "b-sub"
building = "shared"
carrier = "water"
agency = "b"
[[meter]]
id = "b-elec"
building = "b-only"
carrier = "electricity"
"#;

    fn entry(name: &str, role: Role, agency: Option<&str>, gateway: Option<&str>) -> TokenEntry {
        TokenEntry { name: name.into(), role, agency: agency.map(Into::into), gateway: gateway.map(Into::into), meters: Vec::new(), sha256: hash_token(name) }
    }

    #[test]
    fn hash_is_sha256_hex() {
        assert_eq!(hash_token("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        let t = new_token().unwrap();
        assert!(t.starts_with("edt_") && t.len() == 68, "{t}");
        assert_ne!(t, new_token().unwrap());
    }

    #[test]
    fn agency_sees_only_what_serves_it() {
        let reg = Registry::parse(REG).unwrap();
        let p = Principal::from_entry(&entry("x", Role::Agency, Some("a"), None));
        assert!(p.require_agency(&reg, "a").is_ok());
        assert!(p.require_agency(&reg, "b").is_err());
        assert!(p.require_building(&reg, "shared").is_ok());
        assert!(p.require_building(&reg, "b-only").is_err());
        assert!(p.require_meter(&reg, "shared-elec").is_ok());
        assert!(p.require_meter(&reg, "b-sub").is_err(), "a sub-meter of b does not serve a");
        assert!(p.require_meter(&reg, "b-elec").is_err());
        assert!(p.require_meter(&reg, "not-registered").is_err());
        assert!(p.require_read_all().is_err());
        assert!(p.require_ingest().is_err());
        let seen = p.filter(vec!["a", "b"], |p, id| p.sees_agency(id));
        assert_eq!(seen, vec!["a"]);
    }

    #[test]
    fn roles_table() {
        let reg = Registry::parse(REG).unwrap();
        for role in [Role::Admin, Role::Bureau, Role::Engineer] {
            let p = Principal::from_entry(&entry("x", role, None, None));
            assert!(p.require_agency(&reg, "b").is_ok() && p.require_meter(&reg, "b-sub").is_ok() && p.require_read_all().is_ok(), "{role}");
            assert_eq!(p.require_ingest().is_ok(), role == Role::Admin, "{role}");
            assert_eq!(p.require_role(Role::Engineer).is_ok(), role != Role::Bureau, "{role}");
        }
        let g = Principal::from_entry(&entry("g", Role::Gateway, None, Some("gw1")));
        assert!(g.require_gateway("gw1").is_ok());
        let e = g.require_gateway("gw2").unwrap_err().to_string();
        assert!(e.contains("gw2") && e.contains("token `g`"), "{e}");
        assert!(g.require_read().is_err() && g.require_agency(&reg, "a").is_err());
        assert!(Principal::open().require_gateway("any").is_ok());
    }

    #[test]
    fn config_problems_are_all_named() {
        let reg = Registry::parse(REG).unwrap();
        let mut bad_hash = entry("h", Role::Admin, None, None);
        bad_hash.sha256 = "edt_plaintext".into();
        let cfg = AuthConfig {
            tokens: vec![
                entry("ok", Role::Agency, Some("a"), None),
                entry("ok", Role::Bureau, None, None),
                entry("no-agency", Role::Agency, None, None),
                entry("ghost", Role::Agency, Some("zz"), None),
                entry("gw", Role::Gateway, None, Some("bad id")),
                entry("eng", Role::Engineer, Some("a"), None),
                bad_hash,
            ],
            tokens_file: Some("missing.toml".into()),
            metrics: MetricsAccess::Open,
            ..Default::default()
        };
        let e = Tokens::load(&cfg, Path::new("/nonexistent"), Some(&reg)).unwrap_err().join("\n");
        for want in ["`ok`: the name is used by two", "`no-agency`: role agency needs", "agency `zz` is not in the registry", "gateway `bad id`", "`eng`: role engineer takes neither", "`h`: sha256 must be 64 hex", "missing.toml: cannot read"] {
            assert!(e.contains(want), "missing `{want}` in:\n{e}");
        }
        assert!(!e.contains("edt_plaintext"), "a secret-looking value is echoed: {e}");
        let empty = Tokens::load(&AuthConfig::default(), Path::new("."), None).unwrap_err().join("\n");
        assert!(empty.contains("holds no tokens"), "{empty}");
        let users_only = AuthConfig { users_file: Some("users.toml".into()), ..Default::default() };
        assert!(Tokens::load(&users_only, Path::new("."), None).is_ok_and(|t| t.is_empty()), "users and no tokens");
    }

    /// The rule of which meters a gateway writes, case by case.
    #[test]
    fn a_gateway_writes_the_meters_assigned_to_it_or_listed_on_its_token() {
        let reg = Registry::parse(&format!("{REG}\n[[meter]]\nid = \"gw1-elec\"\nbuilding = \"b-only\"\ncarrier = \"electricity\"\ngateway = \"gw1\"\n")).unwrap();
        let listed = vec!["b-elec".to_string(), "future".to_string()];
        // (gateway, meter, may write, reason contains)
        let cases: &[(&str, &str, bool, &str)] = &[
            ("gw1", "gw1-elec", true, ""),                                  // assigned to it
            ("gw2", "gw1-elec", false, "assigned to gateway `gw1`"),        // assigned to another, listed or not
            ("gw1", "b-elec", true, ""),                                    // no `gateway`, listed on its token
            ("gw1", "b-sub", false, "not assigned to gateway `gw1`"),       // no `gateway`, not listed
            ("gw1", "future", true, ""),                                    // not in the registry, listed
            ("gw1", "ghost", false, "not in the registry"),                 // not in the registry, not listed
        ];
        for &(gw, meter, ok, why) in cases {
            let r = gateway_refusal(&reg, gw, if gw == "gw1" { &listed } else { &[] }, meter);
            assert_eq!(r.is_none(), ok, "{gw} {meter}: {r:?}");
            assert!(r.unwrap_or_default().contains(why), "{gw} {meter}");
        }
        let mut g = entry("g", Role::Gateway, None, Some("gw1"));
        g.meters = listed.clone();
        let p = Principal::from_entry(&g);
        assert!(p.meter_refusal(&reg, "b-elec").is_none() && p.meter_refusal(&reg, "b-sub").is_some());
        assert!(Principal::open().meter_refusal(&reg, "ghost").is_none(), "admin writes every meter");
        // A token may not list another gateway's meter; only gateway tokens take `meters`.
        let mut bad = entry("bad", Role::Gateway, None, Some("gw2"));
        bad.meters = vec!["gw1-elec".into()];
        let mut eng = entry("eng", Role::Engineer, None, None);
        eng.meters = vec!["b-elec".into()];
        let e = Tokens::load(&AuthConfig { tokens: vec![bad, eng, g], ..Default::default() }, Path::new("."), Some(&reg)).unwrap_err().join("\n");
        assert!(e.contains("`bad`: meters: `gw1-elec` is assigned to gateway `gw1`") && e.contains("`eng`: only a gateway token takes `meters`"), "{e}");
    }

    #[test]
    fn tokens_file_entries_authenticate() {
        let dir = tempfile::tempdir().unwrap();
        let e = entry("from-file", Role::Gateway, None, Some("gw9"));
        std::fs::write(dir.path().join("tokens.toml"), entry_toml(&e).replace("[[auth.token]]", "[[token]]")).unwrap();
        let cfg = AuthConfig { tokens_file: Some("tokens.toml".into()), ..Default::default() };
        let t = Tokens::load(&cfg, dir.path(), None).unwrap();
        let p = t.authenticate("from-file").unwrap();
        assert_eq!((p.role, p.gateway.as_deref()), (Role::Gateway, Some("gw9")));
        assert!(t.authenticate("from-filex").is_none());
    }
}
