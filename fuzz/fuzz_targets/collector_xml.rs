//! The national protocol's XML messages (issue 21): any bytes parse to a message or a named
//! refusal (no DTD, no entities, within bounds), never a panic; a parsed message writes back to
//! XML that parses to the same message.
#![no_main]

use energyd::collector::xml::{parse, write};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = parse(data) {
        let again = parse(&write(&m)).unwrap_or_else(|e| panic!("{m:?} wrote XML that does not parse: {e}"));
        assert_eq!(again, m);
    }
});
