//! People who log in to the page: the users file, Argon2id password hashes, and the lockout
//! rule after repeated failures. No HTTP here (the login page is `web/`).
//!
//! The users file (TOML, kept apart from the main file, mode 0600; `energyd user add|passwd|
//! disable` writes it, the daemon re-reads it when it changes):
//!
//! ```toml
//! [[user]]
//! name = "li.wei"
//! role = "agency"              # admin | bureau | agency | engineer (not gateway)
//! agency = "prov-drc"          # role agency: the agency it may read
//! password = "$argon2id$v=19$m=19456,t=2,p=1$..."   # PHC string, never the password
//! disabled = false
//! ```
//!
//! Passwords are chosen by people, so unlike the random API tokens (a plain SHA-256 suffices
//! there) they are stored as Argon2id hashes with the parameters the RustCrypto `argon2` crate
//! defaults to (19 MiB, 2 passes, 1 lane: the OWASP password storage cheat sheet's first
//! Argon2id setting), each with a random 128-bit salt.

use std::collections::HashMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{Principal, RandomFailed, Role};
use crate::registry::Registry;

/// One account as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserEntry {
    pub name: String,
    pub role: Role,
    /// Role `agency`: the agency whose data it may read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agency: Option<String>,
    /// The Argon2id hash in PHC string form.
    pub password: String,
    #[serde(default)]
    pub disabled: bool,
}

impl UserEntry {
    /// The principal a session of this user acts as (the same rules as a token of the role).
    pub fn principal(&self, remote: Option<String>) -> Principal {
        Principal { name: self.name.clone(), role: self.role, agency: self.agency.clone(), gateway: None, meters: Vec::new(), remote }
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct UsersFile {
    #[serde(default)]
    user: Vec<UserEntry>,
}

/// Why the users file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum UsersError {
    #[error("{}: cannot read: {source}", path.display())]
    Read { path: std::path::PathBuf, source: std::io::Error },
    #[error("{}: {message}", path.display())]
    Parse { path: std::path::PathBuf, message: String },
    #[error("{}: cannot write: {source}", path.display())]
    Write { path: std::path::PathBuf, source: std::io::Error },
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Random(#[from] RandomFailed),
    #[error("hashing the password failed: {0}")]
    Hash(String),
}

/// The problems of one entry (empty: fine). `registry`: check that the agency exists.
pub fn problems(e: &UserEntry, registry: Option<&Registry>) -> Vec<String> {
    let mut out = Vec::new();
    let at = format!("user `{}`", e.name);
    if e.name.trim().is_empty() || e.name.chars().count() > 64 || e.name.chars().any(|c| c.is_control() || c.is_whitespace()) {
        out.push(format!("{at}: a name is 1-64 characters without spaces or control characters"));
    }
    match (e.role, &e.agency) {
        (Role::Gateway, _) => out.push(format!("{at}: role gateway is for gateway tokens, not people (use admin, bureau, agency or engineer)")),
        (Role::Agency, None) => out.push(format!("{at}: role agency needs `agency`, the agency it may read")),
        (Role::Agency, Some(a)) => {
            if registry.is_some_and(|r| r.agency(a).is_none()) {
                out.push(format!("{at}: agency `{a}` is not in the registry"));
            }
        }
        (_, Some(_)) => out.push(format!("{at}: only role agency takes `agency`")),
        _ => {}
    }
    if argon2::PasswordHash::new(&e.password).is_err() {
        out.push(format!("{at}: password must be an Argon2id PHC string (set it with `energyd user passwd`)"));
    }
    out
}

/// Reads the users file; a missing file is an empty list. Every entry is checked; all problems
/// are reported at once.
pub fn load(path: &Path, registry: Option<&Registry>) -> Result<Vec<UserEntry>, UsersError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(UsersError::Read { path: path.to_path_buf(), source }),
    };
    let f: UsersFile = toml::from_str(&text).map_err(|e| UsersError::Parse { path: path.to_path_buf(), message: e.to_string().trim_end().replace('\n', " ") })?;
    let mut errors = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for u in &f.user {
        errors.extend(problems(u, registry));
        if !seen.insert(u.name.as_str()) {
            errors.push(format!("user `{}`: the name is used twice", u.name));
        }
    }
    if errors.is_empty() {
        Ok(f.user)
    } else {
        Err(UsersError::Parse { path: path.to_path_buf(), message: errors.join("; ") })
    }
}

/// Writes the users file whole (a temporary file renamed over it, mode 0600).
pub fn save(path: &Path, users: &[UserEntry]) -> Result<(), UsersError> {
    let err = |source| UsersError::Write { path: path.to_path_buf(), source };
    let text = to_toml(users);
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    let tmp = path.with_extension("toml.tmp");
    {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp).map_err(err)?;
        f.write_all(b"# energyd web users: written by `energyd user add|passwd|disable`\n").map_err(err)?;
        f.write_all(text.as_bytes()).map_err(err)?;
        f.sync_all().map_err(err)?;
    }
    std::fs::rename(&tmp, path).map_err(err)
}

/// The file's text: one `[[user]]` table per account.
fn to_toml(users: &[UserEntry]) -> String {
    use super::toml_string as q;
    let mut out = String::new();
    for u in users {
        out.push_str(&format!("\n[[user]]\nname = {}\nrole = {}\n", q(&u.name), q(u.role.name())));
        if let Some(a) = &u.agency {
            out.push_str(&format!("agency = {}\n", q(a)));
        }
        out.push_str(&format!("password = {}\ndisabled = {}\n", q(&u.password), u.disabled));
    }
    out
}

/// Passwords shorter than this are refused.
pub const MIN_PASSWORD_CHARS: usize = 10;

/// An Argon2id hash of `password` with a fresh random salt, as a PHC string.
pub fn hash_password(password: &str) -> Result<String, UsersError> {
    use argon2::password_hash::{PasswordHasher as _, SaltString};
    use ring::rand::SecureRandom as _;
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(UsersError::Invalid(format!("the password must have at least {MIN_PASSWORD_CHARS} characters")));
    }
    let mut salt = [0u8; 16];
    ring::rand::SystemRandom::new().fill(&mut salt).map_err(|_| RandomFailed)?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| UsersError::Hash(e.to_string()))?;
    argon2::Argon2::default().hash_password(password.as_bytes(), &salt).map(|h| h.to_string()).map_err(|e| UsersError::Hash(e.to_string()))
}

/// Whether `password` matches the PHC string `hash` (false for a malformed hash).
pub fn verify_password(hash: &str, password: &str) -> bool {
    use argon2::password_hash::PasswordVerifier as _;
    match argon2::PasswordHash::new(hash) {
        Ok(h) => argon2::Argon2::default().verify_password(password.as_bytes(), &h).is_ok(),
        Err(_) => false,
    }
}

/// A hash to verify against when the user does not exist, so that the answer takes as long as
/// for a wrong password of a real user (no user enumeration by timing).
pub fn dummy_hash() -> &'static str {
    static H: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    H.get_or_init(|| hash_password("not a password of anyone").unwrap_or_default())
}

/// Failures allowed before the first lock.
pub const FREE_FAILURES: u32 = 5;
/// The first lock, doubled at each further failure.
pub const FIRST_LOCK_MS: i64 = 30_000;
/// The longest lock.
pub const MAX_LOCK_MS: i64 = 3_600_000;

/// How long a key (a user name or an address) stays locked after its `failures`-th failure in a
/// row: nothing for the first [`FREE_FAILURES`] - 1, then [`FIRST_LOCK_MS`] doubled at each
/// further failure, at most [`MAX_LOCK_MS`].
pub fn lock_ms(failures: u32) -> i64 {
    if failures < FREE_FAILURES {
        return 0;
    }
    let doublings = (failures - FREE_FAILURES).min(20);
    (FIRST_LOCK_MS << doublings).min(MAX_LOCK_MS)
}

/// Consecutive failures per key and when the last one was; keys are `user:<name>` and
/// `addr:<ip>`, so guessing one user's password from many addresses and many users' from one
/// address are both slowed down.
#[derive(Debug, Default)]
pub struct Lockout {
    failures: HashMap<String, (u32, i64)>,
}

/// Entries kept at most (the oldest unlocked ones go first).
const MAX_KEYS: usize = 100_000;

impl Lockout {
    /// Until when `key` is locked, if it is at `now_ms`.
    pub fn locked_until(&self, key: &str, now_ms: i64) -> Option<i64> {
        let (n, last) = *self.failures.get(key)?;
        let until = last + lock_ms(n);
        (until > now_ms).then_some(until)
    }

    /// Records a failure of `key` at `now_ms`.
    pub fn fail(&mut self, key: &str, now_ms: i64) {
        if self.failures.len() >= MAX_KEYS {
            self.failures.retain(|_, (n, last)| *last + lock_ms(*n).max(MAX_LOCK_MS) > now_ms);
        }
        let e = self.failures.entry(key.to_string()).or_insert((0, now_ms));
        e.0 = e.0.saturating_add(1);
        e.1 = now_ms;
    }

    /// A success: the key starts afresh.
    pub fn clear(&mut self, key: &str) {
        self.failures.remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_grows_by_doubling_after_five_failures() {
        // failures -> lock: 1..4 none; 5th: 30 s; 6th: 60 s; 7th: 120 s; ... capped at 1 h
        // (30 s x 2^7 = 3840 s > 3600 s, so the 12th and later are 3600 s).
        for (n, want) in [(0, 0), (1, 0), (4, 0), (5, 30_000), (6, 60_000), (7, 120_000), (11, 1_920_000), (12, 3_600_000), (40, 3_600_000), (u32::MAX, 3_600_000)] {
            assert_eq!(lock_ms(n), want, "{n} failures");
        }
    }

    #[test]
    fn lockout_locks_and_clears() {
        let mut l = Lockout::default();
        for i in 0..4 {
            l.fail("user:a", 1000 + i);
        }
        assert_eq!(l.locked_until("user:a", 1004), None, "four failures lock nothing");
        l.fail("user:a", 2000);
        // The fifth failure at 2000 locks for 30 s: until 32 000.
        assert_eq!(l.locked_until("user:a", 2001), Some(32_000));
        assert_eq!(l.locked_until("user:a", 32_000), None);
        assert_eq!(l.locked_until("user:b", 2001), None, "other keys are not affected");
        l.fail("user:a", 40_000);
        assert_eq!(l.locked_until("user:a", 40_001), Some(100_000), "the sixth: 60 s");
        l.clear("user:a");
        assert_eq!(l.locked_until("user:a", 40_001), None);
    }

    #[test]
    fn passwords_hash_and_verify() {
        let h = hash_password("correct horse battery").unwrap();
        assert!(h.starts_with("$argon2id$"), "{h}");
        assert!(verify_password(&h, "correct horse battery"));
        assert!(!verify_password(&h, "correct horse batterz"));
        assert!(!verify_password("not a hash", "x"));
        assert_ne!(hash_password("correct horse battery").unwrap(), h, "a fresh salt each time");
        assert!(matches!(hash_password("short"), Err(UsersError::Invalid(_))));
    }

    #[test]
    fn entries_are_checked() {
        let ok = UserEntry { name: "li".into(), role: Role::Bureau, agency: None, password: hash_password("0123456789ab").unwrap(), disabled: false };
        assert!(problems(&ok, None).is_empty());
        let bad = [
            UserEntry { role: Role::Gateway, ..ok.clone() },
            UserEntry { role: Role::Agency, ..ok.clone() },
            UserEntry { agency: Some("x".into()), ..ok.clone() },
            UserEntry { name: "a b".into(), ..ok.clone() },
            UserEntry { password: "plain".into(), ..ok.clone() },
        ];
        for b in bad {
            assert_eq!(problems(&b, None).len(), 1, "{b:?}");
        }
    }

    #[test]
    fn the_file_round_trips_and_refuses_duplicates() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("users.toml");
        assert!(load(&p, None).unwrap().is_empty(), "a missing file is no users");
        let u = UserEntry { name: "li".into(), role: Role::Engineer, agency: None, password: hash_password("0123456789ab").unwrap(), disabled: false };
        save(&p, &[u.clone()]).unwrap();
        assert_eq!(load(&p, None).unwrap(), vec![u.clone()]);
        save(&p, &[u.clone(), u]).unwrap();
        let e = load(&p, None).unwrap_err().to_string();
        assert!(e.contains("used twice"), "{e}");
    }
}
