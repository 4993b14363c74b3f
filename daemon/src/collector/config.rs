//! `[collector]`: the national-protocol listener, and its keys file.
//!
//! ```toml
//! [collector]
//! listen = "0.0.0.0:7002"
//! framing = "guideline"          # or "8bae9b"; or a layout of its own in [collector.frame]
//! keys_file = "collector-keys.toml"   # mode 0600: the keys are kept as they are (see below)
//! # tls_cert_file = "cert.pem"   # TLS on the collector port (PEM), as for [http]
//! # tls_key_file = "key.pem"
//! idle_timeout_s = 300           # a collector silent that long is disconnected
//! max_frame_bytes = 1048576      # the largest payload accepted
//! query_hours = 0                # > 0: after the identity check, ask for the last N hours
//! max_connections = 1024         # more at once are closed at once
//! ```
//!
//! The keys file:
//!
//! ```toml
//! [[collector]]
//! building = "110101A001"        # the collector's building id (common/building_id)
//! gateway = "01"                 # optional: only this gateway id of the building
//! key = "the shared key"         # MD5(key + sequence) is the identity answer
//! aes_key = "529f3d2bf15d4d5d"   # optional: AES-128-CBC of the payload (16 characters or 32 hex digits)
//! aes_iv = "0102030405060708"
//! padding = "pkcs7"              # or "zeros"
//! ```
//!
//! The identity check hashes the key with the centre's fresh sequence, so the centre must hold
//! the key itself: it cannot be stored hashed. The file is therefore refused unless only its
//! owner may read it (mode 0600 or stricter), like the tokens file of `[auth]`.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::crypto::{Aes, Padding};
use super::frame::FrameSpec;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CollectorConfig {
    pub listen: String,
    #[serde(default = "guideline")]
    pub framing: String,
    /// A layout of its own, instead of the preset named by `framing`.
    #[serde(default)]
    pub frame: Option<FrameSpec>,
    pub keys_file: PathBuf,
    #[serde(default)]
    pub tls_cert_file: Option<PathBuf>,
    #[serde(default)]
    pub tls_key_file: Option<PathBuf>,
    #[serde(default = "idle")]
    pub idle_timeout_s: u64,
    #[serde(default = "max_frame")]
    pub max_frame_bytes: usize,
    #[serde(default)]
    pub query_hours: u32,
    /// Connections open at once; more are closed at once (counted).
    #[serde(default = "max_conn")]
    pub max_connections: usize,
}

fn guideline() -> String {
    "guideline".into()
}
fn idle() -> u64 {
    300
}
fn max_conn() -> usize {
    1024
}
fn max_frame() -> usize {
    1 << 20
}

impl CollectorConfig {
    /// The frame layout: `[collector.frame]`, else the preset.
    pub fn frame_spec(&self) -> Result<FrameSpec, String> {
        let spec = match &self.frame {
            Some(f) => f.clone(),
            None => FrameSpec::preset(&self.framing).ok_or_else(|| format!("collector.framing `{}` is not a preset ({}); write a layout in [collector.frame]", self.framing, FrameSpec::PRESETS.join(", ")))?,
        };
        spec.check().map_err(|e| format!("collector.frame: {e}"))?;
        Ok(spec)
    }

    /// Relative paths against the configuration file's directory.
    pub fn resolve(&mut self, base: &Path) {
        for f in [Some(&mut self.keys_file), self.tls_cert_file.as_mut(), self.tls_key_file.as_mut()].into_iter().flatten() {
            if f.is_relative() {
                *f = base.join(&*f);
            }
        }
    }

    /// Every problem of the section (the keys file read and checked too).
    pub fn problems(&self) -> Vec<String> {
        let mut errors = Vec::new();
        if let Err(e) = self.frame_spec() {
            errors.push(e);
        }
        if self.tls_cert_file.is_some() != self.tls_key_file.is_some() {
            errors.push("collector: tls_cert_file and tls_key_file go together".into());
        }
        if self.max_connections == 0 {
            errors.push("collector.max_connections must be at least 1".into());
        }
        if self.max_frame_bytes == 0 || self.max_frame_bytes > super::xml::MAX_MESSAGE_BYTES {
            errors.push(format!("collector.max_frame_bytes must be between 1 and {}", super::xml::MAX_MESSAGE_BYTES));
        }
        if let Err(e) = Keys::load(&self.keys_file) {
            errors.push(e);
        }
        errors
    }
}

/// One collector's secrets.
#[derive(Debug, Clone)]
pub struct CollectorKey {
    pub building: String,
    pub gateway: Option<String>,
    pub key: String,
    pub aes: Option<Aes>,
}

/// An entry of a keys file: a collector (`building`, optional `gateway`), a lower centre (`id`),
/// or the one key of an upstream link (neither); with its key and optional AES.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SecretEntry {
    #[serde(default)]
    building: Option<String>,
    #[serde(default)]
    gateway: Option<String>,
    #[serde(default)]
    id: Option<String>,
    pub(super) key: String,
    #[serde(default)]
    aes_key: Option<String>,
    #[serde(default)]
    aes_iv: Option<String>,
    #[serde(default)]
    padding: Padding,
}

impl SecretEntry {
    /// The AES of the entry, or why it is wrong.
    pub(super) fn aes(&self, at: &str, problems: &mut Vec<String>) -> Option<Aes> {
        aes_of(at, self.aes_key.as_ref(), self.aes_iv.as_ref(), self.padding, problems)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeysFile {
    #[serde(default)]
    collector: Vec<SecretEntry>,
    /// Lower data centres (`[[upstream]]` of another energyd, or another vendor's centre): each
    /// passes the identity check with its division code as building id and then reports every
    /// building whose id starts with that code.
    #[serde(default)]
    centre: Vec<SecretEntry>,
}

/// A lower data centre's secrets.
#[derive(Debug, Clone)]
pub struct CentreKey {
    /// Its administrative division code (2 to 6 digits).
    pub id: String,
    pub key: String,
    pub aes: Option<Aes>,
}

fn aes_of(at: &str, k: Option<&String>, v: Option<&String>, padding: Padding, problems: &mut Vec<String>) -> Option<Aes> {
    match (k, v) {
        (None, None) => None,
        (Some(k), Some(v)) => match (Aes::key_bytes("aes_key", k), Aes::key_bytes("aes_iv", v)) {
            (Ok(key), Ok(iv)) => Some(Aes { key, iv, padding }),
            (Err(x), _) | (_, Err(x)) => {
                problems.push(format!("{at}: {x}"));
                None
            }
        },
        _ => {
            problems.push(format!("{at}: aes_key and aes_iv go together"));
            None
        }
    }
}

/// The keys of the collectors.
#[derive(Debug, Clone, Default)]
pub struct Keys {
    pub entries: Vec<CollectorKey>,
    pub centres: Vec<CentreKey>,
}

impl Keys {
    /// Reads the keys file: only its owner may read it, every entry complete.
    pub fn load(path: &Path) -> Result<Keys, String> {
        use std::os::unix::fs::PermissionsExt as _;
        let at = path.display();
        let meta = std::fs::metadata(path).map_err(|e| format!("collector.keys_file {at}: {e}"))?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(format!("collector.keys_file {at}: mode {mode:03o} lets others read the collectors' keys; chmod 600 it (the identity check needs the keys themselves, they cannot be stored hashed)"));
        }
        let text = std::fs::read_to_string(path).map_err(|e| format!("collector.keys_file {at}: {e}"))?;
        Keys::parse(&text).map_err(|e| format!("collector.keys_file {at}: {e}"))
    }

    pub fn parse(text: &str) -> Result<Keys, String> {
        let f: KeysFile = toml::from_str(text).map_err(|e| e.to_string())?;
        let mut entries = Vec::new();
        let mut problems = Vec::new();
        for (i, e) in f.collector.into_iter().enumerate() {
            let building = e.building.clone().unwrap_or_default();
            let at = format!("[[collector]] {} (`{building}`)", i + 1);
            if let Err(m) = crate::registry::national::check_building_id(&building) {
                problems.push(format!("{at}: building {m}"));
            }
            if e.id.is_some() {
                problems.push(format!("{at}: `id` belongs to a [[centre]]"));
            }
            if e.key.is_empty() {
                problems.push(format!("{at}: an empty key"));
            }
            let aes = e.aes(&at, &mut problems);
            entries.push(CollectorKey { building, gateway: e.gateway, key: e.key, aes });
        }
        let mut centres = Vec::new();
        for (i, c) in f.centre.into_iter().enumerate() {
            let id = c.id.clone().unwrap_or_default();
            let at = format!("[[centre]] {} (`{id}`)", i + 1);
            if !(2..=6).contains(&id.len()) || !id.bytes().all(|b| b.is_ascii_digit()) {
                problems.push(format!("{at}: id must be an administrative division code of 2 to 6 digits"));
            }
            if c.building.is_some() || c.gateway.is_some() {
                problems.push(format!("{at}: `building` and `gateway` belong to a [[collector]]"));
            }
            if c.key.is_empty() {
                problems.push(format!("{at}: an empty key"));
            }
            let aes = c.aes(&at, &mut problems);
            centres.push(CentreKey { id, key: c.key, aes });
        }
        if problems.is_empty() {
            Ok(Keys { entries, centres })
        } else {
            Err(problems.join("; "))
        }
    }

    /// The entry for a collector: the one naming its gateway, else the building's.
    /// The lower centre of this id.
    pub fn centre(&self, id: &str) -> Option<&CentreKey> {
        self.centres.iter().find(|c| c.id == id)
    }

    pub fn find(&self, building: &str, gateway: &str) -> Option<&CollectorKey> {
        self.entries
            .iter()
            .find(|k| k.building == building && k.gateway.as_deref() == Some(gateway))
            .or_else(|| self.entries.iter().find(|k| k.building == building && k.gateway.is_none()))
    }
}

impl super::session::Keys for Keys {
    fn key(&self, building: &str, gateway: &str) -> Option<String> {
        self.find(building, gateway).map(|k| k.key.clone()).or_else(|| self.centre(building).map(|c| c.key.clone()))
    }

    fn covers(&self, building: &str, gateway: &str, data_building: &str, data_gateway: &str) -> bool {
        match self.centre(building) {
            Some(c) => data_building.len() == 10 && data_building.starts_with(&c.id) && data_gateway == gateway,
            None => building == data_building && gateway == data_gateway,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_file_checks() {
        let k = Keys::parse("[[collector]]\nbuilding = \"110101A001\"\nkey = \"k1\"\n[[collector]]\nbuilding = \"110101A001\"\ngateway = \"02\"\nkey = \"k2\"\naes_key = \"0123456789abcdef\"\naes_iv = \"00112233445566778899aabbccddeeff\"\n").unwrap();
        assert_eq!(k.find("110101A001", "01").map(|c| c.key.as_str()), Some("k1"));
        assert_eq!(k.find("110101A001", "02").map(|c| c.key.as_str()), Some("k2"));
        assert!(k.find("110101A001", "02").and_then(|c| c.aes.as_ref()).is_some());
        assert!(k.find("110101A002", "01").is_none());
        let c = Keys::parse("[[centre]]\nid = \"110101\"\nkey = \"kc\"\n").unwrap();
        use crate::collector::session::Keys as _;
        assert_eq!(c.key("110101", "centre").as_deref(), Some("kc"));
        assert!(c.covers("110101", "centre", "110101A007", "centre"));
        assert!(!c.covers("110101", "centre", "110102A007", "centre"));
        assert!(Keys::parse("[[centre]]\nid = \"11a\"\nkey = \"k\"\n").unwrap_err().contains("division code"));
        let bad = Keys::parse("[[collector]]\nbuilding = \"b1\"\nkey = \"\"\naes_key = \"short\"\n").unwrap_err();
        for want in ["not a national building id", "an empty key", "aes_key and aes_iv go together"] {
            assert!(bad.contains(want), "{bad} should say {want}");
        }
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("keys.toml");
        std::fs::write(&p, "[[collector]]\nbuilding = \"110101A001\"\nkey = \"k\"\n").unwrap();
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(Keys::load(&p).unwrap_err().contains("chmod 600"));
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(Keys::load(&p).unwrap().entries.len(), 1);
    }
}
