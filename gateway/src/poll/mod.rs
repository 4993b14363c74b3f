//! The polling engine.
//!
//! One task per bus ([`Transport::bus`](crate::transport::Transport::bus): a TCP endpoint, a
//! serial server, a serial port): the devices of a bus share one connection and are read one
//! request at a time, which is what RS-485 and serial servers need; separate buses are polled in
//! parallel. Each device has its own interval. A device that fails is backed off exponentially
//! with jitter (up to `max_backoff_ms`) without delaying the other devices of its bus, and comes
//! back by itself on the first good poll. A broken connection is reopened with its own back-off
//! and jitter.
//!
//! * [`settings`]: the `[modbus]` and `[[device]]` sections.
//! * [`mod@schedule`]: the scheduler every protocol shares, and its [`BusDriver`] interface.
//! * [`modbus`]: the Modbus link, device read and driver ([`run_bus`]).

pub mod modbus;
pub mod schedule;
pub mod settings;

pub use modbus::{decode_answers, read_device, run_bus, DeviceRead, Link, ReadLog};
pub use schedule::{schedule, BusDriver, DeviceStatus, PollOutcome, StatusMap};
pub use settings::{DeviceConfig, ModbusConfig};
