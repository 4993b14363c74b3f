//! The gateway → daemon wire format: any bytes give a batch or an error, never a panic; a batch
//! that decodes encodes again into bytes that decode to the same batch.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(batch) = energy_wire::decode_batch(data) {
        let again = energy_wire::encode_batch(&batch);
        match energy_wire::decode_batch(&again) {
            Ok(b) => assert_eq!(b, batch, "re-encoded batch decodes differently"),
            Err(e) => panic!("a decoded batch does not decode after encoding: {e}"),
        }
    }
});
