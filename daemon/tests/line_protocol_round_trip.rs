//! The line protocol the store writes for InfluxDB (`store::influx::encode`) and the one ingest
//! reads (`ingest::lineproto`) agree on escaping. A test of both layers, outside both: neither
//! module imports the other.

use energy_wire::Quantity;
use energyd::ingest::lineproto;
use energyd::store::influx::encode::{escape_tag, tag_suffix, LineBuilder};

#[test]
fn escaped_tag_values_parse_back_to_themselves() {
    for value in [r"a\b", r"C:\temp\ x", r"x\,y=z", "plain"] {
        let line = format!("m,t={} f=1", escape_tag(value));
        let parsed = lineproto::parse_line(&line).expect("parses").expect("a line");
        assert_eq!(parsed.tags, vec![("t".into(), value.into())], "{line}");
    }
}

#[test]
fn what_is_written_parses_back_to_the_same_points() {
    // Our own line-protocol reader (the ingest side) agrees with the encoder on escaping.
    let mut b = LineBuilder::new("energy");
    let tags = tag_suffix(&[("building", "Haus, Nord=1"), ("carrier", "water")]);
    b.add("m.1", &tags, Quantity::WaterVolume, 1_764_288_000_000, 0.1 + 0.2);
    let (text, _) = b.take();
    let parsed = lineproto::parse_line(text.trim_end()).expect("parses").expect("a line");
    assert_eq!(parsed.tags.iter().find(|(k, _)| k == "building").map(|(_, v)| &**v), Some("Haus, Nord=1"));
    assert_eq!(parsed.fields, vec![("water_volume".into(), lineproto::FieldValue::Float(0.1 + 0.2))]);
    assert_eq!(parsed.timestamp, Some(1_764_288_000_000));
}
