//! The national building-energy monitoring protocol (issue 21): energyd as the data centre that
//! the installed energy data collectors (能耗数据采集器) report to, and as a collector of the
//! level above.
//!
//! Pure parts: [`frame`] (the frame as data, with the field's presets), [`xml`] (the messages,
//! parsed within bounds, no DTD, no entities), [`crypto`] (MD5 of the identity check,
//! AES-128-CBC of the payload), [`session`] (the session's state machine). The listener does the
//! I/O and hands readings to the same `Ingest` service as gateway batches.
//!
//! The module sits on floor 5 (tests/tests/layers.rs): it stands on ingest and accounting.

pub mod crypto;
pub mod frame;
pub mod session;
pub mod xml;
pub mod config;
pub mod listener;
pub mod mapping;
pub mod status;
pub mod upstream;

pub use config::CollectorConfig;
pub use status::Collectors;
