//! Login sessions of the page: a random id in an HttpOnly cookie, a CSRF token per session,
//! expiry after inactivity and after a maximum age. Kept in memory (a restart logs everyone
//! out); only the SHA-256 of an id is kept, as with tokens.

use std::collections::HashMap;
use std::sync::Mutex;

use super::{hash_token, new_token, RandomFailed};

/// One session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub user: String,
    /// A fingerprint of the user's password hash at login: a changed password ends the session.
    pub stamp: String,
    /// Sent back with every form and every state-changing request.
    pub csrf: String,
    pub created_ms: i64,
    pub last_ms: i64,
}

/// The sessions in force.
#[derive(Debug)]
pub struct Sessions {
    by_hash: Mutex<HashMap<String, Session>>,
    /// Inactivity after which a session ends.
    pub idle_ms: i64,
    /// Age after which a session ends whatever its activity.
    pub max_ms: i64,
}

/// Whether a session is still valid at `now_ms`.
pub fn alive(s: &Session, now_ms: i64, idle_ms: i64, max_ms: i64) -> bool {
    now_ms - s.last_ms < idle_ms && now_ms - s.created_ms < max_ms
}

impl Sessions {
    pub fn new(idle_ms: i64, max_ms: i64) -> Sessions {
        Sessions { by_hash: Mutex::new(HashMap::new()), idle_ms, max_ms }
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        self.by_hash.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Starts a session of `user`: its id (for the cookie) and the session.
    pub fn create(&self, user: &str, stamp: &str, now_ms: i64) -> Result<(String, Session), RandomFailed> {
        let id = new_token()?;
        let s = Session { user: user.to_string(), stamp: stamp.to_string(), csrf: new_token()?, created_ms: now_ms, last_ms: now_ms };
        let mut m = self.map();
        let (idle, max) = (self.idle_ms, self.max_ms);
        m.retain(|_, x| alive(x, now_ms, idle, max));
        m.insert(hash_token(&id), s.clone());
        Ok((id, s))
    }

    /// The session of cookie `id` at `now_ms` (its activity time set to now), or `None` when
    /// unknown or expired (an expired one is removed).
    pub fn touch(&self, id: &str, now_ms: i64) -> Option<Session> {
        let key = hash_token(id);
        let mut m = self.map();
        let s = m.get_mut(&key)?;
        if !alive(s, now_ms, self.idle_ms, self.max_ms) {
            m.remove(&key);
            return None;
        }
        s.last_ms = now_ms;
        Some(s.clone())
    }

    /// Logout.
    pub fn remove(&self, id: &str) {
        self.map().remove(&hash_token(id));
    }

    /// Ends every session of `user` (disabled, or password changed).
    pub fn remove_user(&self, user: &str) {
        self.map().retain(|_, s| s.user != user);
    }

    pub fn len(&self) -> usize {
        self.map().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Constant-time equality of two secrets (CSRF tokens).
pub fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_expire_after_inactivity_and_age() {
        // idle 1000 ms, max age 5000 ms.
        let s = Sessions::new(1000, 5000);
        let (id, first) = s.create("li", "h", 0).unwrap();
        assert_eq!(first.user, "li");
        assert!(s.touch(&id, 999).is_some(), "999 ms after the last activity: alive");
        assert!(s.touch(&id, 1998).is_some(), "activity at 999 moved the idle clock");
        assert!(s.touch(&id, 2998).is_none(), "1000 ms idle: ended");
        assert!(s.touch(&id, 2999).is_none(), "and gone");
        let (id, _) = s.create("li", "h", 10_000).unwrap();
        for t in (10_500..15_000).step_by(500) {
            assert!(s.touch(&id, t).is_some(), "{t}");
        }
        assert!(s.touch(&id, 15_000).is_none(), "5000 ms after creation: ended whatever the activity");
    }

    #[test]
    fn logout_and_user_removal() {
        let s = Sessions::new(1000, 5000);
        let (a, sa) = s.create("a", "h", 0).unwrap();
        let (b, _) = s.create("b", "h", 0).unwrap();
        assert_ne!(a, b);
        assert_ne!(sa.csrf, a, "the CSRF token is not the session id");
        s.remove(&a);
        assert!(s.touch(&a, 1).is_none());
        s.remove_user("b");
        assert!(s.touch(&b, 1).is_none());
        assert!(s.is_empty());
    }

    #[test]
    fn secrets_compare() {
        assert!(same_secret("abc", "abc"));
        assert!(!same_secret("abc", "abd"));
        assert!(!same_secret("abc", "ab"));
        assert!(!same_secret("", "a"));
    }
}
