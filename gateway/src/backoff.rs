//! Back-off: how long to wait after failures, so that a failing device, a broken bus or an
//! unreachable broker is retried less and less often, and so that buses and gateways do not
//! retry in lockstep.
//!
//! * A device that keeps failing: its interval x 2^(n-1) after n failures, with jitter, up to a
//!   maximum ([`Jitter::device_wait`]); Modbus, DL/T 645 and CJ/T 188 buses alike.
//! * A bus whose connection fails: the reconnect minimum x 2^(n-1), with jitter, up to the
//!   reconnect maximum ([`Jitter::reconnect_wait`]).
//! * The uplinks and the MQTT meter input: a back-off that doubles per failure up to a maximum,
//!   slept with jitter from the clock ([`pause_before_retry`]).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio_util::sync::CancellationToken;

use crate::time::now_ms;

/// `base x 2^(n-1)`, at most `max` (n >= 1).
pub fn backoff(base: Duration, n: u32, max: Duration) -> Duration {
    base.saturating_mul(1u32 << n.clamp(1, 17).saturating_sub(1)).min(max)
}

/// A small xorshift generator for jitter, seeded from the clock and the bus name (no need for
/// cryptographic quality; only that buses and gateways do not retry in lockstep).
pub struct Jitter(u64);

impl Jitter {
    pub fn new(bus: &str) -> Jitter {
        let mut seed = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(1) | 1;
        for b in bus.bytes() {
            seed = seed.rotate_left(5) ^ u64::from(b);
        }
        Jitter(seed | 1)
    }

    /// `d` scaled by a random factor in [0.5, 1.0).
    pub fn apply(&mut self, d: Duration) -> Duration {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        let f = 0.5 + (self.0 >> 11) as f64 / (1u64 << 53) as f64 * 0.5;
        d.mul_f64(f)
    }

    /// The wait before polling a device again after its `failures`-th failure in a row: its
    /// interval after the first, then the interval doubled per failure (with jitter, never below
    /// the interval), at most `max`.
    pub fn device_wait(&mut self, interval: Duration, failures: u32, max: Duration) -> Duration {
        if failures == 1 {
            interval
        } else {
            self.apply(backoff(interval, failures, max)).max(interval)
        }
    }

    /// The wait before reconnecting a bus after its `failures`-th failed connection in a row:
    /// `min` doubled per failure, with jitter, at most `max`.
    pub fn reconnect_wait(&mut self, min: Duration, failures: u32, max: Duration) -> Duration {
        self.apply(backoff(min, failures, max))
    }
}

/// Sleeps the jittered back-off, then doubles it up to `max`. `false` if cancelled meanwhile.
pub async fn pause_before_retry(backoff: &mut Duration, max: Duration, cancel: &CancellationToken) -> bool {
    tokio::select! {
        () = tokio::time::sleep(jittered(*backoff)) => {}
        () = cancel.cancelled() => return false,
    }
    *backoff = (*backoff * 2).min(max);
    true
}

/// Exponential back-off with jitter from the clock's low bits.
pub fn jittered(backoff: Duration) -> Duration {
    let jitter = 0.5 + f64::from(now_ms().rem_euclid(1000) as u32) / 2000.0;
    backoff.mul_f64(jitter)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_maximum() {
        let s = Duration::from_secs(1);
        let max = Duration::from_secs(10);
        let got: Vec<u64> = (1..=6).map(|n| backoff(s, n, max).as_secs()).collect();
        assert_eq!(got, vec![1, 2, 4, 8, 10, 10]);
        assert_eq!(backoff(s, u32::MAX, Duration::MAX), Duration::from_secs(65_536));
    }

    #[test]
    fn jitter_stays_between_half_and_the_whole() {
        let mut j = Jitter::new("tcp://127.0.0.1:502");
        let d = Duration::from_millis(1000);
        let xs: Vec<Duration> = (0..1000).map(|_| j.apply(d)).collect();
        assert!(xs.iter().all(|x| *x >= d / 2 && *x < d));
        // Not constant: retries of several buses spread out.
        assert!(xs.iter().any(|x| *x != xs[0]));
    }

    #[test]
    fn a_failing_device_waits_its_interval_then_doubling_jittered_waits() {
        let mut j = Jitter::new("serial:///dev/ttyUSB0");
        let (i, max) = (Duration::from_secs(10), Duration::from_secs(60));
        // First failure: the interval itself, no jitter.
        assert_eq!(j.device_wait(i, 1, max), i);
        // Third failure: 10 s x 2^2 = 40 s, jittered into [20 s, 40 s), never below the interval.
        for _ in 0..100 {
            let w = j.device_wait(i, 3, max);
            assert!(w >= Duration::from_secs(20) && w < Duration::from_secs(40), "{w:?}");
        }
        // Tenth: capped at 60 s, jittered into [30 s, 60 s).
        let w = j.device_wait(i, 10, max);
        assert!(w >= Duration::from_secs(30) && w < max, "{w:?}");
        // An interval above half the cap: the jitter never brings the wait under the interval.
        assert!(j.device_wait(Duration::from_secs(50), 2, max) >= Duration::from_secs(50));
    }

    #[test]
    fn reconnects_back_off_from_the_minimum_to_the_maximum() {
        let mut j = Jitter::new("tcp://127.0.0.1:502");
        let (min, max) = (Duration::from_millis(500), Duration::from_millis(60_000));
        // 1st: 500 ms jittered into [250, 500); 4th: 500 x 2^3 = 4000 ms into [2000, 4000).
        let w = j.reconnect_wait(min, 1, max);
        assert!(w >= Duration::from_millis(250) && w < min, "{w:?}");
        let w = j.reconnect_wait(min, 4, max);
        assert!(w >= Duration::from_millis(2000) && w < Duration::from_millis(4000), "{w:?}");
        let w = j.reconnect_wait(min, 30, max);
        assert!(w >= max / 2 && w < max, "{w:?}");
    }
}
