//! Decoding DL/T 645 replies from any bytes on the line: the receive buffer is scanned for frames
//! exactly as the link does (preamble and noise skipped, bad checksums discarded), each frame is
//! decoded and interpreted as the answer to a read in both editions, and each value is decoded in
//! the formats the shipped profiles use. An answer is a value, an error or "need more bytes",
//! never a panic.
#![no_main]

use energy_gateway::field::dlt645::{address_answer, answer, decode, describe_error, scan_frame, Answer, Edition, Format, WILDCARD};
use energy_gateway::field::frame::Scan;
use libfuzzer_sys::fuzz_target;

const FORMATS: [&str; 7] = ["XXXXXX.XX", "XXX.X", "XXX.XXX", "XX.XXXX", "X.XXX", "XX.XX", "XXX"];

fuzz_target!(|data: &[u8]| {
    let mut buf = data;
    while !buf.is_empty() {
        match scan_frame(buf) {
            Scan::Incomplete => break,
            Scan::Bad { end, .. } => buf = &buf[end.clamp(1, buf.len())..],
            Scan::Frame { start, end } => {
                let f = decode(&buf[start..end]).expect("a scanned frame decodes");
                let _ = address_answer(&f);
                for (ed, di) in [(Edition::V2007, &[0u8, 1, 0, 0][..]), (Edition::V1997, &[0x90u8, 0x10][..])] {
                    for follow_up in [false, true] {
                        match answer(ed, &f, &WILDCARD, di, follow_up) {
                            Ok(Answer::Data { value, .. }) => {
                                for fmt in FORMATS {
                                    let fm = Format::parse(fmt).expect("format");
                                    if let Some(bytes) = value.get(..fm.bytes()) {
                                        for signed in [false, true] {
                                            if let Some(v) = fm.value(bytes, signed) {
                                                assert!(v.is_finite());
                                            }
                                        }
                                    }
                                }
                            }
                            Ok(Answer::Abnormal(e)) => {
                                let _ = describe_error(ed, e);
                            }
                            Err(_) => {}
                        }
                    }
                }
                buf = &buf[end..];
            }
        }
    }
});
