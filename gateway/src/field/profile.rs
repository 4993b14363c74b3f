//! Field-bus profiles: a DL/T 645 or CJ/T 188 meter model as data, in
//! `device-profiles/<vendor>/<model>.toml` beside the Modbus profiles, told apart by
//! `protocol = "dlt645-2007" | "dlt645-1997" | "cjt188"`.
//!
//! DL/T 645: `[[read]]` entries, each a data identifier written as tables write it
//! (`di = "00 01 00 00"`, or a block `"02 01 FF 00"`) and the values its reply holds one after
//! the other, each with a quantity, a format (`XXXXXX.XX`), whether the top bit is a sign, an
//! optional scale, and an optional `ratio` (`"none"` for a value the meter reports on the primary
//! side; otherwise the device's `ct_ratio`/`pt_ratio` scale it by quantity, see
//! [`transformer_ratio`]). CJ/T 188: the meter type (`meter_type = "10"`) and `[[value]]` entries
//! mapping fields of the 901F reply to quantities (the reply's unit codes are converted), and
//! two variants found in the field: `di_order = "low-first" | "high-first"` (DI 901F sent
//! `1F 90`, the default, or `90 1F`) and `unit_position = "after" | "before"` (each value's
//! unit code after the value, the default, or before it); see [`super::cjt188`].

use std::collections::BTreeMap;
use std::path::Path;

use energy_wire::Quantity;
use serde::{Deserialize, Serialize};

use super::cjt188::{DiOrder, Field, MeterType, UnitPosition};
use super::dlt645::{Edition, Format};
use super::frame::parse_hex;
use crate::profile::{is_field_profile, ProfileError, ProfileErrors, Ratio, FIELD_PROTOCOLS};
use crate::transport::Parity;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Protocol {
    #[serde(rename = "dlt645-2007")]
    Dlt645V2007,
    #[serde(rename = "dlt645-1997")]
    Dlt645V1997,
    #[serde(rename = "cjt188")]
    Cjt188,
}

impl Protocol {
    pub const NAMES: [&'static str; 3] = FIELD_PROTOCOLS;

    pub fn name(self) -> &'static str {
        match self {
            Protocol::Dlt645V2007 => "dlt645-2007",
            Protocol::Dlt645V1997 => "dlt645-1997",
            Protocol::Cjt188 => "cjt188",
        }
    }
    pub fn edition(self) -> Option<Edition> {
        match self {
            Protocol::Dlt645V2007 => Some(Edition::V2007),
            Protocol::Dlt645V1997 => Some(Edition::V1997),
            Protocol::Cjt188 => None,
        }
    }
    /// Bytes of a meter address.
    pub fn address_len(self) -> usize {
        if self == Protocol::Cjt188 {
            7
        } else {
            6
        }
    }
}

/// One value in a DL/T 645 reply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DltValue {
    pub quantity: Quantity,
    /// As the standard's tables write it: `XXXXXX.XX`.
    pub format: String,
    /// Bit 7 of the most significant byte is the sign (currents, powers, power factor in 2007).
    #[serde(default)]
    pub signed: bool,
    /// value = decoded x scale, in the quantity's contract unit.
    #[serde(default = "one")]
    pub scale: f64,
    pub unit: String,
    /// Which of the device's transformer ratios (`ct_ratio`, `pt_ratio` on its `[[device]]`)
    /// multiplies the value; without it, the quantity's own ([`transformer_ratio`]). `"none"`
    /// marks a value the meter already reports on the primary side.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ratio: Option<Ratio>,
    #[serde(skip)]
    pub fmt: Option<Format>,
}

impl DltValue {
    /// The ratio this value is multiplied by: the profile's, else the quantity's.
    pub fn ratio(&self) -> Ratio {
        self.ratio.unwrap_or_else(|| transformer_ratio(self.quantity))
    }
}

/// How a meter's secondary value of a quantity becomes the primary circuit's, behind current
/// transformers of ratio CT and voltage transformers of ratio PT: a current is CT times the
/// secondary current, a voltage PT times the secondary voltage, and a power or an energy (a
/// product of the two, summed over time) CT x PT times. Everything else (power factor,
/// frequency, temperatures, volumes) is the same on both sides.
pub fn transformer_ratio(q: Quantity) -> Ratio {
    use Quantity as Q;
    match q {
        Q::CurrentL1 | Q::CurrentL2 | Q::CurrentL3 => Ratio::Ct,
        Q::VoltageL1 | Q::VoltageL2 | Q::VoltageL3 => Ratio::Pt,
        Q::ActiveEnergyImport
        | Q::ActiveEnergyExport
        | Q::ReactiveEnergyImport
        | Q::ReactiveEnergyExport
        | Q::ActivePower
        | Q::ActivePowerL1
        | Q::ActivePowerL2
        | Q::ActivePowerL3
        | Q::ReactivePower
        | Q::ApparentPower => Ratio::CtPt,
        _ => Ratio::None,
    }
}

fn one() -> f64 {
    1.0
}

/// One DL/T 645 read: an identifier and the values its reply holds, in order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DltRead {
    /// As tables write it, DI3 first: `00 01 00 00` (2007) or `90 10` (1997).
    pub di: String,
    #[serde(rename = "value")]
    pub values: Vec<DltValue>,
    #[serde(skip)]
    pub di_bytes: Vec<u8>,
}

/// One field of a CJ/T 188 901F reply mapped to a quantity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CjtValue {
    pub field: Field,
    pub quantity: Quantity,
    pub unit: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldProfile {
    #[serde(default, skip_deserializing)]
    pub name: String,
    pub vendor: String,
    pub model: String,
    #[serde(default)]
    pub description: String,
    /// The published document this profile was checked against.
    pub source: String,
    pub protocol: Protocol,
    /// The line settings the model ships with, when not DL/T 645's 2400 8E1.
    #[serde(default)]
    pub baud: Option<u32>,
    #[serde(default)]
    pub parity: Option<Parity>,
    /// CJ/T 188 meter type as the standard writes it (`10` cold water, `11` hot water, `20` heat,
    /// `21` cooling, `30` gas).
    #[serde(default)]
    pub meter_type: Option<String>,
    #[serde(default, rename = "read")]
    pub reads: Vec<DltRead>,
    #[serde(default, rename = "value")]
    pub values: Vec<CjtValue>,
    /// CJ/T 188: the byte order of DI 901F in requests (default low-first, `1F 90`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub di_order: Option<DiOrder>,
    /// CJ/T 188: where the reply puts each value's unit code (default after the value).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit_position: Option<UnitPosition>,
    #[serde(skip)]
    pub meter_type_code: u8,
}

impl FieldProfile {
    /// Every quantity the profile reads, in profile order.
    pub fn quantities(&self) -> Vec<Quantity> {
        if self.protocol == Protocol::Cjt188 {
            self.values.iter().map(|v| v.quantity).collect()
        } else {
            self.reads.iter().flat_map(|r| r.values.iter().map(|v| v.quantity)).collect()
        }
    }

    /// CJ/T 188: the order requests carry the data identifier in.
    pub fn di_order(&self) -> DiOrder {
        self.di_order.unwrap_or_default()
    }

    /// CJ/T 188: where the reply's unit codes are.
    pub fn unit_position(&self) -> UnitPosition {
        self.unit_position.unwrap_or_default()
    }

    /// Default line settings: the profile's, else 2400 baud even parity (DL/T 645-2007 4.1 and
    /// CJ/T 188's usual M-Bus/RS-485 setting).
    pub fn line(&self) -> (u32, Parity) {
        (self.baud.unwrap_or(2400), self.parity.unwrap_or(Parity::Even))
    }
}

/// Parses and validates one field profile; every problem at once.
pub fn parse_field_profile(name: &str, file: &str, text: &str) -> Result<FieldProfile, Vec<ProfileError>> {
    let err = |message: String| ProfileError { file: file.to_string(), message };
    let mut p: FieldProfile = toml::from_str(text).map_err(|e| vec![err(e.to_string().trim_end().replace('\n', " "))])?;
    p.name = name.to_string();
    let errors: Vec<ProfileError> = validate(&mut p).into_iter().map(err).collect();
    if errors.is_empty() {
        Ok(p)
    } else {
        Err(errors)
    }
}

fn validate(p: &mut FieldProfile) -> Vec<String> {
    let mut errors = Vec::new();
    if p.source.trim().is_empty() {
        errors.push("`source` must name the published document (manual and version)".into());
    }
    if let Some(b) = p.baud {
        if ![1200, 2400, 4800, 9600].contains(&b) {
            errors.push(format!("baud {b} is not one of 1200, 2400, 4800, 9600"));
        }
    }
    let mut seen = Seen::default();
    match p.protocol.edition() {
        Some(ed) => validate_dlt(p, ed, &mut seen, &mut errors),
        None => validate_cjt(p, &mut seen, &mut errors),
    }
    errors
}

/// The quantities a profile reads, and where each is read first.
#[derive(Default)]
struct Seen(BTreeMap<Quantity, String>);

impl Seen {
    /// Each quantity is read once.
    fn once(&mut self, q: Quantity, at: &str, errors: &mut Vec<String>) {
        if let Some(first) = self.0.insert(q, at.to_string()) {
            errors.push(format!("{at}: quantity {q} is already read by {first}"));
        }
    }
}

/// A value is given in its quantity's contract unit.
fn unit_ok(q: Quantity, unit: &str, at: &str, errors: &mut Vec<String>) {
    if unit != q.unit() {
        errors.push(format!("{at}: unit `{unit}` does not match the quantity's unit `{}`", q.unit()));
    }
}

/// A DL/T 645 profile's `[[read]]` entries: identifiers of the edition's length, formats, scales;
/// fills in the parsed identifiers and formats.
fn validate_dlt(p: &mut FieldProfile, ed: Edition, seen: &mut Seen, errors: &mut Vec<String>) {
    if p.reads.is_empty() {
        errors.push("a DL/T 645 profile needs [[read]] entries".into());
    }
    if p.meter_type.is_some() || !p.values.is_empty() {
        errors.push("meter_type and [[value]] are for CJ/T 188 profiles; DL/T 645 values go in [[read]]".into());
    }
    if p.di_order.is_some() || p.unit_position.is_some() {
        errors.push("di_order and unit_position are for CJ/T 188 profiles; a DL/T 645 identifier is written as tables write it".into());
    }
    for (i, r) in p.reads.iter_mut().enumerate() {
        let at = format!("read[{i}] ({})", r.di);
        match parse_hex(&r.di) {
            Ok(b) if b.len() == ed.di_len() => r.di_bytes = b,
            Ok(b) => errors.push(format!("{at}: {} identifiers have {} bytes, this has {}", ed.name(), ed.di_len(), b.len())),
            Err(e) => errors.push(format!("{at}: {e}")),
        }
        if r.values.is_empty() {
            errors.push(format!("{at}: no [[read.value]]"));
        }
        let mut bytes = 0;
        for (j, v) in r.values.iter_mut().enumerate() {
            let vat = format!("{at} value[{j}] ({})", v.quantity);
            match Format::parse(&v.format) {
                Ok(f) => {
                    bytes += f.bytes();
                    v.fmt = Some(f);
                }
                Err(e) => errors.push(format!("{vat}: {e}")),
            }
            if !v.scale.is_finite() || v.scale == 0.0 {
                errors.push(format!("{vat}: scale must be a finite, non-zero number"));
            }
            if let Some(r) = v.ratio.filter(|&r| r != Ratio::None && r != transformer_ratio(v.quantity)) {
                errors.push(format!(
                    "{vat}: ratio `{}` does not scale {}: leave ratio out (it is `{}` for this quantity) or write \"none\" for a value the meter reports on the primary side",
                    r.name(),
                    v.quantity,
                    transformer_ratio(v.quantity).name()
                ));
            }
            unit_ok(v.quantity, &v.unit, &vat, errors);
            seen.once(v.quantity, &vat, errors);
        }
        if bytes > 200 {
            errors.push(format!("{at}: its values take {bytes} bytes, more than a frame holds"));
        }
    }
}

/// A CJ/T 188 profile's meter type and `[[value]]` entries; fills in the meter type's code.
fn validate_cjt(p: &mut FieldProfile, seen: &mut Seen, errors: &mut Vec<String>) {
    if !p.reads.is_empty() {
        errors.push("[[read]] is for DL/T 645 profiles; CJ/T 188 fields go in [[value]]".into());
    }
    let ty = match p.meter_type.as_deref().map(parse_hex) {
        None => {
            errors.push("a CJ/T 188 profile needs meter_type (10 cold water, 11 hot water, 20 heat, 21 cooling, 30 gas)".into());
            None
        }
        Some(Ok(b)) if b.len() == 1 && MeterType::from_code(b[0]).is_some() => MeterType::from_code(b[0]),
        Some(_) => {
            errors.push(format!("meter_type `{}` is not a CJ/T 188 meter type (10, 11, 12, 13, 20, 21, 30, 40)", p.meter_type.clone().unwrap_or_default()));
            None
        }
    };
    if let Some(t) = ty {
        p.meter_type_code = t.code();
    }
    if p.values.is_empty() {
        errors.push("a CJ/T 188 profile needs [[value]] entries".into());
    }
    for (i, v) in p.values.iter().enumerate() {
        let at = format!("value[{i}] ({})", v.field.name());
        if let Some(t) = ty {
            if !v.field.in_reply_of(t.is_heat()) {
                errors.push(format!("{at}: a {} meter's 901F reply has no {}", t.name(), v.field.name()));
            }
        }
        if v.field.unit() != v.quantity.unit() {
            errors.push(format!("{at}: the field is in {}, quantity {} is in {}", v.field.unit(), v.quantity, v.quantity.unit()));
        }
        unit_ok(v.quantity, &v.unit, &at, errors);
        seen.once(v.quantity, &at, errors);
    }
}

/// Loads every field-bus profile below `dir` (files whose `protocol` is a field protocol),
/// sorted by name. Either all load, or every error is returned.
pub fn load_field_dir(dir: &Path) -> Result<BTreeMap<String, FieldProfile>, ProfileErrors> {
    crate::profile::load_each(dir, |_, text| text.is_some_and(is_field_profile), parse_field_profile)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_protocol_names_the_loader_knows_are_the_protocols() {
        let all = [Protocol::Dlt645V2007, Protocol::Dlt645V1997, Protocol::Cjt188];
        assert_eq!(all.map(Protocol::name), Protocol::NAMES);
        for p in all {
            let text = format!("protocol = \"{}\"", p.name());
            assert!(is_field_profile(&text), "{text}");
        }
        assert!(!is_field_profile("protocol = \"modbus\""));
    }

    const DLT: &str = r#"
vendor = "Generic"
model = "three-phase"
source = "DL/T 645-2007 appendix A"
protocol = "dlt645-2007"
[[read]]
di = "00 01 00 00"
[[read.value]]
quantity = "active_energy_import"
format = "XXXXXX.XX"
unit = "kWh"
[[read]]
di = "02 01 FF 00"
[[read.value]]
quantity = "voltage_l1"
format = "XXX.X"
unit = "V"
[[read.value]]
quantity = "voltage_l2"
format = "XXX.X"
unit = "V"
"#;

    #[test]
    fn a_good_dlt_profile_loads_with_parsed_identifiers() {
        assert!(is_field_profile(DLT));
        let p = parse_field_profile("generic/x", "x.toml", DLT).unwrap();
        assert_eq!(p.reads[1].di_bytes, vec![0x02, 0x01, 0xFF, 0x00]);
        assert_eq!(p.reads[1].values[1].fmt, Some(Format { digits: 4, decimals: 1 }));
        assert_eq!(p.quantities(), vec![Quantity::ActiveEnergyImport, Quantity::VoltageL1, Quantity::VoltageL2]);
        assert_eq!(p.line(), (2400, Parity::Even));
    }

    #[test]
    fn every_problem_is_reported() {
        let bad = DLT.replace("00 01 00 00", "90 10").replace("XXX.X\"\nunit = \"V\"\n[[read.value]]", "XX,X\"\nunit = \"kV\"\n[[read.value]]").replace("voltage_l2", "voltage_l1");
        let errs = parse_field_profile("t", "t.toml", &bad).unwrap_err();
        let text = errs.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n");
        for want in [
            "read[0] (90 10): DL/T 645-2007 identifiers have 4 bytes, this has 2",
            "format `XX,X` must be X digits",
            "unit `kV` does not match the quantity's unit `V`",
            "quantity voltage_l1 is already read by read[1] (02 01 FF 00) value[0]",
        ] {
            assert!(text.contains(want), "missing `{want}` in\n{text}");
        }
    }

    #[test]
    fn cjt_profiles_check_fields_against_the_meter_type() {
        let water = r#"
vendor = "Generic"
model = "water"
source = "CJ/T 188-2004"
protocol = "cjt188"
meter_type = "10"
[[value]]
field = "volume"
quantity = "water_volume"
unit = "m³"
"#;
        let p = parse_field_profile("generic/w", "w.toml", water).unwrap();
        assert_eq!(p.meter_type_code, 0x10);
        let bad = format!("{water}[[value]]\nfield = \"supply_temperature\"\nquantity = \"supply_temperature\"\nunit = \"°C\"\n").replace("\"10\"", "\"10\"");
        let errs = parse_field_profile("t", "t.toml", &bad).unwrap_err();
        assert!(errs[0].message.contains("a cold water meter's 901F reply has no supply_temperature"), "{:?}", errs);
        let errs = parse_field_profile("t", "t.toml", &water.replace("\"10\"", "\"99\"")).unwrap_err();
        assert!(errs[0].message.contains("meter_type `99` is not a CJ/T 188 meter type"), "{:?}", errs);
        let errs = parse_field_profile("t", "t.toml", &water.replace("water_volume", "heat_energy").replace("m³", "GJ")).unwrap_err();
        assert!(errs[0].message.contains("the field is in m³, quantity heat_energy is in GJ"), "{:?}", errs);
        // The variants: defaults are the standard's; the keys set them; bad values are named.
        assert_eq!((p.di_order(), p.unit_position()), (DiOrder::LowFirst, UnitPosition::After));
        let jy = water.replace("meter_type = \"10\"", "meter_type = \"10\"\ndi_order = \"high-first\"\nunit_position = \"before\"");
        let p = parse_field_profile("t", "t.toml", &jy).unwrap();
        assert_eq!((p.di_order(), p.unit_position()), (DiOrder::HighFirst, UnitPosition::Before));
        let errs = parse_field_profile("t", "t.toml", &jy.replace("high-first", "90 1F")).unwrap_err();
        assert!(errs[0].message.contains("unknown variant `90 1F`, expected `low-first` or `high-first`"), "{:?}", errs);
        let errs = parse_field_profile("t", "t.toml", &DLT.replacen("[[read]]", "di_order = \"high-first\"\n[[read]]", 1)).unwrap_err();
        assert!(errs[0].message.contains("di_order and unit_position are for CJ/T 188 profiles"), "{:?}", errs);
    }

    #[test]
    fn transformer_ratios_follow_the_quantity() {
        use Quantity as Q;
        // Behind a CT of ratio k_I and a VT of ratio k_U the primary current is k_I x I2, the
        // primary voltage k_U x U2, and P = U x I x cos(phi) is k_U x k_I x P2 (energy, its
        // integral, likewise); cos(phi) and f are the same on both sides.
        let table = [
            (Q::CurrentL1, Ratio::Ct),
            (Q::CurrentL3, Ratio::Ct),
            (Q::VoltageL2, Ratio::Pt),
            (Q::ActiveEnergyImport, Ratio::CtPt),
            (Q::ActiveEnergyExport, Ratio::CtPt),
            (Q::ReactiveEnergyImport, Ratio::CtPt),
            (Q::ActivePower, Ratio::CtPt),
            (Q::ActivePowerL2, Ratio::CtPt),
            (Q::ReactivePower, Ratio::CtPt),
            (Q::ApparentPower, Ratio::CtPt),
            (Q::PowerFactor, Ratio::None),
            (Q::Frequency, Ratio::None),
            (Q::HeatPower, Ratio::None),
            (Q::WaterVolume, Ratio::None),
        ];
        for (q, want) in table {
            assert_eq!(transformer_ratio(q), want, "{q}");
        }
        // A 200/5 A CT (40) and a 10 kV/100 V VT (100): factors 40, 100, 4000, 1.
        assert_eq!([Ratio::Ct, Ratio::Pt, Ratio::CtPt, Ratio::None].map(|r| r.factor(40.0, 100.0)), [40.0, 100.0, 4000.0, 1.0]);
    }

    #[test]
    fn a_value_may_say_it_is_primary_but_not_scale_by_the_wrong_ratio() {
        let p = parse_field_profile("t", "t.toml", DLT).unwrap();
        assert_eq!(p.reads[0].values[0].ratio(), Ratio::CtPt);
        assert_eq!(p.reads[1].values[0].ratio(), Ratio::Pt);
        let primary = DLT.replacen("unit = \"kWh\"", "unit = \"kWh\"\nratio = \"none\"", 1);
        let p = parse_field_profile("t", "t.toml", &primary).unwrap();
        assert_eq!(p.reads[0].values[0].ratio(), Ratio::None);
        let wrong = DLT.replacen("unit = \"V\"", "unit = \"V\"\nratio = \"ct\"", 1);
        let errs = parse_field_profile("t", "t.toml", &wrong).unwrap_err();
        assert!(
            errs[0].message.contains("read[1] (02 01 FF 00) value[0] (voltage_l1): ratio `ct` does not scale voltage_l1: leave ratio out (it is `pt` for this quantity)"),
            "{errs:?}"
        );
        let errs = parse_field_profile("t", "t.toml", &DLT.replacen("unit = \"V\"", "unit = \"V\"\nratio = \"vt\"", 1)).unwrap_err();
        assert!(errs[0].message.contains("unknown variant `vt`"), "{errs:?}");
    }
}
