//! The wall clock, in the unit every sample and status carries: milliseconds since the Unix
//! epoch. The bottom of the gateway: pollers, the MQTT meter input and the uplinks all stamp
//! with it, and it imports nothing of the gateway.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}
