//! The ingest rate limit (`ingest.rate_per_gateway`): a token bucket per gateway. Over it, the
//! HTTP layer answers 429 with `Retry-After`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Most keys the limiter tracks; past it, full buckets are forgotten (a full bucket is what a
/// new key gets anyway), so ids an attacker makes up cannot grow memory without bound.
const MAX_KEYS: usize = 10_000;

/// Token buckets keyed by gateway: `rate` requests per second, up to `burst` at once.
pub struct RateLimiter {
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

impl RateLimiter {
    /// `rate` 0: no limit. `burst` 0: twice the rate, at least 1.
    pub fn new(rate: f64, burst: u32) -> RateLimiter {
        let burst = if burst == 0 { (rate * 2.0).max(1.0) } else { f64::from(burst) };
        RateLimiter { rate, burst, buckets: Mutex::new(HashMap::new()) }
    }

    pub fn unlimited() -> RateLimiter {
        RateLimiter::new(0.0, 0)
    }

    /// Takes one request from `key`'s bucket at `now`, or says how long until one is there.
    pub fn check(&self, key: &str, now: Instant) -> Result<(), Duration> {
        if self.rate <= 0.0 {
            return Ok(());
        }
        let mut b = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if b.len() >= MAX_KEYS && !b.contains_key(key) {
            let (rate, burst) = (self.rate, self.burst);
            b.retain(|_, (tokens, at)| *tokens + now.saturating_duration_since(*at).as_secs_f64() * rate < burst);
        }
        let (tokens, at) = b.entry(key.to_string()).or_insert((self.burst, now));
        *tokens = (*tokens + now.saturating_duration_since(*at).as_secs_f64() * self.rate).min(self.burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - *tokens) / self.rate))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_refills_at_the_rate() {
        let l = RateLimiter::new(2.0, 3);
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(l.check("gw", t0).is_ok());
        }
        let wait = l.check("gw", t0).unwrap_err();
        assert!(wait > Duration::from_millis(400) && wait <= Duration::from_millis(500), "{wait:?}");
        assert!(l.check("other", t0).is_ok(), "buckets are per key");
        assert!(l.check("gw", t0 + Duration::from_millis(500)).is_ok());
        assert!(l.check("gw", t0 + Duration::from_millis(500)).is_err());
        assert!(RateLimiter::unlimited().check("gw", t0).is_ok());
    }

    #[test]
    fn made_up_keys_do_not_grow_memory() {
        let l = RateLimiter::new(1000.0, 1);
        let t0 = Instant::now();
        for i in 0..(MAX_KEYS * 3) {
            let _ = l.check(&format!("k{i}"), t0 + Duration::from_millis(i as u64));
        }
        assert!(l.buckets.lock().unwrap().len() <= MAX_KEYS);
    }
}
