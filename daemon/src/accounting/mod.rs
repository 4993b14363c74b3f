//! Accounting: from meter counters to consumption per meter, building and agency.
//! Everything here is pure; the API does the I/O.

pub mod calendar;
pub mod consumption;
pub mod rollup;
