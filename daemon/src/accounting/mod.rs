//! Accounting: from meter counters to consumption per meter, building and agency, and to the
//! indicators against quotas and targets. Everything here is pure except [`engine`], which
//! reads the store and caches meters' years.

pub mod allocate;
pub mod buildings;
pub mod cache;
pub mod consumption;
pub mod counter;
pub mod engine;
pub mod events;
pub mod indicators;
pub mod ledger;
pub mod query;
pub mod ranking;
pub mod rollup;
pub mod series;
pub mod tariff;
