//! The registry loader (agencies, buildings, meters): any text gives a registry or every
//! problem at once, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let _ = energyd::registry::Registry::parse(text);
});
