//! Weather-normalised savings (issue 23): degree days, the CalTRACK-family daily baseline
//! models with their balance-point search, the fit statistics and ASHRAE Guideline 14
//! acceptance, avoided energy with its fractional savings uncertainty, normalised savings under
//! a typical year, and what an energy performance contract (合同能源管理) pays. Pure functions
//! of plain values; the API and the reports bring the days (consumption from the accounting
//! engine's counter handling, temperature from the store) and the registry's projects.
//!
//! The method and its sources are in docs/savings.md (CalTRACK 2.0 daily methods, IPMVP
//! Option C, ASHRAE Guideline 14-2014).

pub mod epc;
pub mod model;
pub mod stats;
pub mod verify;
pub mod weather;

pub use model::{cdd, fit, hdd, FitError, Form, Model, Search};
pub use verify::{avoided, avoided_by_month, baseline, coverage, fit_stats, normalised, typical_year, Avoided, Baseline, BaselineError, Coverage, Day, FitStats, Normalised};

#[cfg(test)]
mod tests;
