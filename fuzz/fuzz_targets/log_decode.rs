//! The embedded store's log (`<data_dir>/log/*.log`), read at every start: a file's bytes cut
//! into records (`read_record`, as the scan at open does) and each record's body, and the whole
//! input as one body, decoded (`decode_body`). A damaged or cut file must give an error, never a
//! panic or a huge allocation. Whatever decodes is encoded again and must come back bit for bit.
#![no_main]

use energyd::store::log::{decode_body, encode_body, frame, read_record, Body};
use libfuzzer_sys::fuzz_target;

fn again(body: &Body) {
    let bits = |b: &Body| b.points.iter().map(|(s, t, v)| (*s, *t, v.to_bits())).collect::<Vec<_>>();
    let encoded = encode_body(&body.points, &body.gateways, &body.new_series);
    let back = decode_body(&encoded).expect("a body just encoded decodes");
    assert_eq!(bits(&back), bits(body));
    assert_eq!(back.gateways, body.gateways);
    assert_eq!(back.new_series, body.new_series);
}

fuzz_target!(|data: &[u8]| {
    if let Ok(body) = decode_body(data) {
        again(&body);
    }
    let mut at = 0;
    while let Some((id, body, n)) = read_record(&data[at..]) {
        assert_eq!(frame(id, body).as_slice(), &data[at..at + n]);
        if let Ok(b) = decode_body(body) {
            again(&b);
        }
        at += n;
    }
});
