//! Field-bus meters beside Modbus: DL/T 645 (2007 and 1997) electricity meters and CJ/T 188
//! water, heat and gas meters, on RS-485 or through a transparent serial server.

pub mod cjt188;
pub mod dlt645;
pub mod frame;
pub mod profile;
pub mod link;
pub mod poll;
pub mod sim;
pub mod probe;
