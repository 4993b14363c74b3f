//! The national protocol's frame decoder (issue 21), for both presets: bytes are a frame, a
//! request for more, or a named refusal, never a panic; a decoded frame encodes back to the
//! bytes it was read from, and never holds more than the bound.
#![no_main]

use energyd::collector::frame::{decode, encode, FrameSpec};
use libfuzzer_sys::fuzz_target;

const MAX: usize = 64 * 1024;

fuzz_target!(|data: &[u8]| {
    for spec in [FrameSpec::guideline(), FrameSpec::node_8bae9b()] {
        if let Ok(Some((frame, used))) = decode(&spec, data, MAX) {
            assert!(frame.payload.len() <= MAX);
            assert!(used <= data.len());
            assert_eq!(encode(&spec, &frame), data[..used], "a frame must encode back to its bytes");
        }
        // The payload framed by us decodes back to itself.
        let f = energyd::collector::frame::Frame { type_byte: 1, sequence: 7, payload: data.to_vec() };
        if data.len() <= MAX {
            let b = encode(&spec, &f);
            let (again, used) = decode(&spec, &b, MAX).expect("our own frame").expect("complete");
            assert_eq!(used, b.len());
            assert_eq!(again.payload, data);
        }
    }
});
