//! Time units of the contract, defined once.
//!
//! Every timestamp that crosses the boundary, and every one the daemon stores, is a count of
//! milliseconds since the Unix epoch (UTC). Hours and days here are UTC hours and days: the local
//! calendar (the agencies' days, months and years) is the daemon's business and lives there.

/// One minute in milliseconds.
pub const MINUTE_MS: i64 = 60_000;

/// One hour in milliseconds.
pub const HOUR_MS: i64 = 3_600_000;

/// One day in milliseconds.
pub const DAY_MS: i64 = 86_400_000;

/// The start of the UTC hour containing `ts` (milliseconds), also before 1970.
pub fn hour_of(ts: i64) -> i64 {
    ts.div_euclid(HOUR_MS) * HOUR_MS
}

/// The start of the UTC day containing `ts` (milliseconds), also before 1970.
pub fn day_of(ts: i64) -> i64 {
    ts.div_euclid(DAY_MS) * DAY_MS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hours_and_days_start_where_expected() {
        // (ts, hour start, day start), worked by hand.
        let cases = [
            (0, 0, 0),
            (HOUR_MS - 1, 0, 0),
            (HOUR_MS, HOUR_MS, 0),
            (DAY_MS + 90 * MINUTE_MS, DAY_MS + HOUR_MS, DAY_MS),
            (-1, -HOUR_MS, -DAY_MS),
            (-DAY_MS, -DAY_MS, -DAY_MS),
        ];
        for (ts, hour, day) in cases {
            assert_eq!(hour_of(ts), hour, "hour_of({ts})");
            assert_eq!(day_of(ts), day, "day_of({ts})");
        }
    }
}
