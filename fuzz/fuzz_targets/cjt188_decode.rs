//! Decoding CJ/T 188 replies from any bytes on the line: frames are scanned as the link does and
//! each is decoded as the 901F answer of every meter type, unit codes after and before the values;
//! every value is finite, never a panic.
#![no_main]

use energy_gateway::field::cjt188::{decode, decode_current, decode_current_as, scan_frame, status_text, UnitPosition};
use energy_gateway::field::frame::Scan;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut buf = data;
    while !buf.is_empty() {
        match scan_frame(buf) {
            Scan::Incomplete => break,
            Scan::Bad { end, .. } => buf = &buf[end.clamp(1, buf.len())..],
            Scan::Frame { start, end } => {
                let f = decode(&buf[start..end]).expect("a scanned frame decodes");
                for ty in [0x10, 0x11, 0x20, 0x21, 0x30, f.meter_type] {
                    for ser in [0, f.data.get(2).copied().unwrap_or(0)] {
                        if let Ok(c) = decode_current(&f, ty, ser) {
                            assert!(c.values.iter().all(|(_, v)| v.is_finite()));
                            let _ = status_text(c.status);
                        }
                        if let Ok(c) = decode_current_as(&f, ty, ser, UnitPosition::Before) {
                            assert!(c.values.iter().all(|(_, v)| v.is_finite()));
                        }
                    }
                }
                buf = &buf[end..];
            }
        }
    }
});
