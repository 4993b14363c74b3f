//! The page's results kept while the data they come from has not changed: a warm page is served
//! without summing every agency's year again. An entry holds for one data version: the raw
//! points the store holds (every committed write changes it), the meter events recorded (a
//! correction comes with its `reading` event), and the instant the figures run to (a new day).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Entries kept at most; past that the table starts again (pages are cheap to recompute).
const MAX_ENTRIES: usize = 512;

/// Results of type `T` by key, each for one data version.
pub(super) struct Memo<T> {
    map: Mutex<HashMap<String, (String, Arc<T>)>>,
}

impl<T> Default for Memo<T> {
    fn default() -> Self {
        Memo { map: Mutex::new(HashMap::new()) }
    }
}

impl<T> Memo<T> {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (String, Arc<T>)>> {
        self.map.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The result kept for `key` at `version`, if any.
    pub(super) fn get(&self, key: &str, version: &str) -> Option<Arc<T>> {
        self.lock().get(key).filter(|(v, _)| v == version).map(|(_, x)| x.clone())
    }

    /// Keeps `value` for `key` at `version`.
    pub(super) fn put(&self, key: String, version: String, value: T) -> Arc<T> {
        let value = Arc::new(value);
        let mut m = self.lock();
        if m.len() >= MAX_ENTRIES {
            m.clear();
        }
        m.insert(key, (version, value.clone()));
        value
    }
}

/// The data version of the application's state at `cut_ms`.
pub(super) fn version(s: &crate::api::AppState, cut_ms: i64) -> String {
    format!("{}:{}:{cut_ms}", s.metrics.store_points.get(), s.engine.event_records(None).len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_result_holds_for_its_version_only() {
        let m: Memo<u32> = Memo::default();
        assert!(m.get("k", "v1").is_none());
        m.put("k".into(), "v1".into(), 7);
        assert_eq!(m.get("k", "v1").as_deref(), Some(&7));
        assert!(m.get("k", "v2").is_none(), "the data changed");
        assert!(m.get("other", "v1").is_none());
        m.put("k".into(), "v2".into(), 8);
        assert_eq!(m.get("k", "v2").as_deref(), Some(&8));
        for i in 0..MAX_ENTRIES + 1 {
            m.put(format!("x{i}"), "v".into(), 0);
        }
        assert!(m.lock().len() <= MAX_ENTRIES);
    }
}
