//! CJ/T 188-2004 frames (household water, heat and gas meters): the "read current metering
//! data" request (DI 901F), its reply for water/gas and heat meters, unit codes converted to the
//! contract's units, and the status word.
//!
//! Frame `68 T A0..A6 C L DATA CS 16`: T the meter type, address 7 bytes BCD least significant
//! first (`AA` wildcard), no scrambling of DATA, CS the sum from `68` through DATA. DATA of a
//! read: DI0 DI1 (`1F 90` for 901F) and the sequence byte SER that the reply echoes.
//!
//! Sources (facts, not code): CJ/T 188-2004 as summarised in
//! `shared/reference/china-field-protocols.md`; the byte-for-byte request and water reply at
//! hftangyu.com/563.html (request `68 10 44 33 22 11 00 33 78 01 03 1F 90 00 80 16`, reply layout
//! flow+unit, settlement flow+unit, 7-byte time `ss mm hh DD MM YY YY`, 2 status bytes; meter
//! types 10/11/12/13/20/21/30/40); control codes 01/81/C1, 03/83 and the field offsets of the
//! water and heat replies from xijunzhou/sdqr_energy_node_class `Src/meter/cj188.h`; unit codes
//! (02 Wh, 05 kWh, 08 MWh, 0A MWh x 100, 01 J, 0B kJ, 0E MJ, 11 GJ, 13 GJ x 100, 14 W, 17 kW,
//! 1A MW, 29 L, 2C m3, 32 L/h, 35 m3/h) and status bits (D1 D0 valve 00 open / 01 closed /
//! 11 abnormal, D2 battery low) from amware meterkit `MsdFlowData.java`. The heat reply's flow
//! rate format XXXX.XXXX follows the standard's data-format table as commonly implemented; no
//! open implementation stating it was found, so it is marked for checking against a meter.
//!
//! Two variants found in the field, chosen per profile (the first also per device):
//! - [`DiOrder`]: the transmission rule as summarised at cnblogs.com/cj94/p/18534595
//!   ("所有多字节数据域均先传送低位字节", request `... 03H DI0 DI1 SER ...`) and the hftangyu.com
//!   exchange give `1F 90`; but the ng-gateway CJ/T 188 driver's documentation
//!   (ng-gateway.com/en/southward/cjt188/address-di.html) says the 2004 edition sends 901F
//!   big-endian, `90 1F`, and the 2018 edition `1F 90`, and two published 2004 exchanges send
//!   `90 1F`: a water meter at cnblogs.com/cj94/p/18534598 ("CJ/T188-2004 报文举例", request
//!   `68 10 18 02 12 20 20 00 00 01 03 90 1F 00 97 16`) and the JY heat meter at
//!   cnblogs.com/llguanli/p/8683992.html ("CJ/T-188 冷热量表协议解析2", request
//!   `68 20 32 41 31 40 00 00 00 01 03 90 1F 01 20 16`). A meter expecting one order does not
//!   answer the other; replies are accepted in either order.
//! - [`UnitPosition`]: that JY heat meter's reply (`81 2E 90 1F 01 08 02 00 00 00 ...`) puts
//!   each unit code before its 4 value bytes (`08` MWh, then `02 00 00 00` = 0.02 MWh), where the
//!   standard's layout and the other exchanges put it after.

use super::frame::{bcd_le, checksum, scan, Layout, Scan};

pub const LAYOUT: Layout = Layout { control_at: 9, second_start: None };
pub const WILDCARD: [u8; 7] = [0xAA; 7];
/// Wake-up bytes sent before every request.
pub const PREAMBLE: [u8; 2] = [0xFE; 2];
pub const READ_DATA: u8 = 0x01;
/// DI 901F, "current metering data", in wire order (low byte first, the standard's order).
pub const DI_CURRENT: [u8; 2] = [0x1F, 0x90];

/// The order a request carries the data identifier's two bytes in (profile key `di_order`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DiOrder {
    /// `1F 90` for 901F: DI0 (low byte) first, as the standard transmits multi-byte fields.
    #[default]
    LowFirst,
    /// `90 1F` for 901F: as tables write it (some heat meters expect only this).
    HighFirst,
}

impl DiOrder {
    pub const NAMES: [&'static str; 2] = ["low-first", "high-first"];

    pub fn name(self) -> &'static str {
        match self {
            DiOrder::LowFirst => Self::NAMES[0],
            DiOrder::HighFirst => Self::NAMES[1],
        }
    }
    pub fn parse(s: &str) -> Result<DiOrder, String> {
        match s {
            "low-first" => Ok(DiOrder::LowFirst),
            "high-first" => Ok(DiOrder::HighFirst),
            _ => Err(format!("di_order `{s}` is not one of {}", Self::NAMES.map(|n| format!("\"{n}\"")).join(", "))),
        }
    }
    pub fn other(self) -> DiOrder {
        match self {
            DiOrder::LowFirst => DiOrder::HighFirst,
            DiOrder::HighFirst => DiOrder::LowFirst,
        }
    }
    /// DI 901F in this order, as sent.
    pub fn current(self) -> [u8; 2] {
        match self {
            DiOrder::LowFirst => DI_CURRENT,
            DiOrder::HighFirst => [DI_CURRENT[1], DI_CURRENT[0]],
        }
    }
}

/// Where a reply puts each value's unit code (profile key `unit_position`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UnitPosition {
    /// 4 BCD bytes, then the unit code (the standard; `00 77 66 55 2C`).
    #[default]
    After,
    /// The unit code, then 4 BCD bytes (`2C 34 10 00 00`, as some heat meters send).
    Before,
}

impl UnitPosition {
    pub fn name(self) -> &'static str {
        match self {
            UnitPosition::After => "after",
            UnitPosition::Before => "before",
        }
    }
    pub fn other(self) -> UnitPosition {
        match self {
            UnitPosition::After => UnitPosition::Before,
            UnitPosition::Before => UnitPosition::After,
        }
    }
    /// Offsets of the value and of the unit code in a 5-byte value/unit pair.
    fn offsets(self) -> (usize, usize) {
        match self {
            UnitPosition::After => (0, 4),
            UnitPosition::Before => (1, 0),
        }
    }
}

/// Meter types (the T byte).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MeterType {
    ColdWater,
    HotWater,
    DrinkingWater,
    ReclaimedWater,
    Heat,
    Cooling,
    Gas,
    Electricity,
}

impl MeterType {
    pub fn from_code(c: u8) -> Option<MeterType> {
        Some(match c {
            0x10 => MeterType::ColdWater,
            0x11 => MeterType::HotWater,
            0x12 => MeterType::DrinkingWater,
            0x13 => MeterType::ReclaimedWater,
            0x20 => MeterType::Heat,
            0x21 => MeterType::Cooling,
            0x30 => MeterType::Gas,
            0x40 => MeterType::Electricity,
            _ => return None,
        })
    }
    pub fn code(self) -> u8 {
        match self {
            MeterType::ColdWater => 0x10,
            MeterType::HotWater => 0x11,
            MeterType::DrinkingWater => 0x12,
            MeterType::ReclaimedWater => 0x13,
            MeterType::Heat => 0x20,
            MeterType::Cooling => 0x21,
            MeterType::Gas => 0x30,
            MeterType::Electricity => 0x40,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            MeterType::ColdWater => "cold water",
            MeterType::HotWater => "hot water",
            MeterType::DrinkingWater => "drinking water",
            MeterType::ReclaimedWater => "reclaimed water",
            MeterType::Heat => "heat",
            MeterType::Cooling => "cooling",
            MeterType::Gas => "gas",
            MeterType::Electricity => "electricity",
        }
    }
    /// Heat and cooling meters send the long (heat) reply; the others the volume reply.
    pub fn is_heat(self) -> bool {
        matches!(self, MeterType::Heat | MeterType::Cooling)
    }
}

/// One decoded frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub meter_type: u8,
    pub address: [u8; 7],
    pub control: u8,
    pub data: Vec<u8>,
}

/// A whole frame with the wake-up preamble.
pub fn encode(meter_type: u8, address: &[u8; 7], control: u8, data: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(PREAMBLE.len() + 13 + data.len());
    f.extend_from_slice(&PREAMBLE);
    let start = f.len();
    f.push(0x68);
    f.push(meter_type);
    f.extend_from_slice(address);
    f.push(control);
    f.push(data.len().min(255) as u8);
    f.extend(data.iter().take(255));
    let cs = checksum(&f[start..]);
    f.push(cs);
    f.push(0x16);
    f
}

/// "Read current metering data" (DI 901F, `1F 90`) with sequence byte `ser`.
pub fn read_request(meter_type: u8, address: &[u8; 7], ser: u8) -> Vec<u8> {
    read_request_in(DiOrder::LowFirst, meter_type, address, ser)
}

/// [`read_request`] with the identifier's bytes in `order`.
pub fn read_request_in(order: DiOrder, meter_type: u8, address: &[u8; 7], ser: u8) -> Vec<u8> {
    let di = order.current();
    encode(meter_type, address, READ_DATA, &[di[0], di[1], ser])
}

pub fn scan_frame(buf: &[u8]) -> Scan {
    scan(buf, LAYOUT)
}

/// Decodes a frame that [`scan_frame`] delimited.
pub fn decode(bytes: &[u8]) -> Result<Frame, String> {
    if bytes.len() < 13 || bytes[0] != 0x68 {
        return Err("not a CJ/T 188 frame".into());
    }
    let len = usize::from(bytes[10]);
    if bytes.len() != 13 + len {
        return Err(format!("length byte {len} does not match the frame's {} bytes", bytes.len()));
    }
    let mut address = [0u8; 7];
    address.copy_from_slice(&bytes[2..9]);
    Ok(Frame { meter_type: bytes[1], address, control: bytes[9], data: bytes[11..11 + len].to_vec() })
}

/// What a unit code measures, and the factor to the contract's unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dimension {
    /// Energy, contract unit GJ.
    Energy,
    /// Power, contract unit kW.
    Power,
    /// Volume, contract unit m³.
    Volume,
    /// Flow rate, contract unit m³/h.
    FlowRate,
}

/// A unit code's dimension, factor to the contract unit, and symbol.
pub fn unit(code: u8) -> Option<(Dimension, f64, &'static str)> {
    use Dimension::*;
    Some(match code {
        0x02 => (Energy, 3.6e-6, "Wh"),
        0x05 => (Energy, 3.6e-3, "kWh"),
        0x08 => (Energy, 3.6, "MWh"),
        0x0A => (Energy, 360.0, "MWh x 100"),
        0x01 => (Energy, 1e-9, "J"),
        0x0B => (Energy, 1e-6, "kJ"),
        0x0E => (Energy, 1e-3, "MJ"),
        0x11 => (Energy, 1.0, "GJ"),
        0x13 => (Energy, 100.0, "GJ x 100"),
        0x14 => (Power, 1e-3, "W"),
        0x17 => (Power, 1.0, "kW"),
        0x1A => (Power, 1e3, "MW"),
        0x29 => (Volume, 1e-3, "L"),
        0x2C => (Volume, 1.0, "m³"),
        0x32 => (FlowRate, 1e-3, "L/h"),
        0x35 => (FlowRate, 1.0, "m³/h"),
        _ => return None,
    })
}

/// A field of the 901F reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Field {
    /// Water/gas: current cumulative flow. Heat: cumulative flow through the meter.
    Volume,
    /// Water/gas: cumulative flow on the settlement date.
    SettlementVolume,
    /// Heat: current heat (or cooling) energy.
    Heat,
    /// Heat: energy on the settlement date.
    SettlementHeat,
    HeatPower,
    FlowRate,
    SupplyTemperature,
    ReturnTemperature,
    /// Heat: cumulative working time, hours.
    WorkingHours,
}

impl Field {
    /// The contract unit the field is converted to.
    pub fn unit(self) -> &'static str {
        match self {
            Field::Volume | Field::SettlementVolume => "m³",
            Field::Heat | Field::SettlementHeat => "GJ",
            Field::HeatPower => "kW",
            Field::FlowRate => "m³/h",
            Field::SupplyTemperature | Field::ReturnTemperature => "°C",
            Field::WorkingHours => "h",
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Field::Volume => "volume",
            Field::SettlementVolume => "settlement_volume",
            Field::Heat => "heat",
            Field::SettlementHeat => "settlement_heat",
            Field::HeatPower => "heat_power",
            Field::FlowRate => "flow_rate",
            Field::SupplyTemperature => "supply_temperature",
            Field::ReturnTemperature => "return_temperature",
            Field::WorkingHours => "working_hours",
        }
    }
    /// Whether the field exists in the reply of this kind of meter.
    pub fn in_reply_of(self, heat: bool) -> bool {
        heat || matches!(self, Field::Volume | Field::SettlementVolume)
    }
}

/// The decoded 901F reply: each field in its contract unit (`None` when not BCD or the unit code
/// is unknown or of the wrong dimension, with the reason in `problems`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Current {
    pub values: Vec<(Field, f64)>,
    pub problems: Vec<String>,
    /// The meter's clock, `YYYY-MM-DD hh:mm:ss`.
    pub time: Option<String>,
    pub status: u16,
}

impl Current {
    pub fn get(&self, f: Field) -> Option<f64> {
        self.values.iter().find(|(g, _)| *g == f).map(|&(_, v)| v)
    }
}

/// The status word in words (empty when all is normal): the first byte's D1 D0 valve state and
/// D2 battery; the second byte is the manufacturer's.
pub fn status_text(st: u16) -> Vec<String> {
    let [b0, b1] = st.to_le_bytes();
    let mut out = Vec::new();
    match b0 & 0x03 {
        0b01 => out.push("valve closed".to_string()),
        0b11 => out.push("valve abnormal".to_string()),
        0b10 => out.push("valve state 10 (undefined)".to_string()),
        _ => {}
    }
    if b0 & 0x04 != 0 {
        out.push("battery low".to_string());
    }
    if b1 != 0 || b0 & 0xF8 != 0 {
        out.push(format!("manufacturer status bits {:02X} {:02X}", b0 & 0xF8, b1));
    }
    out
}

/// Checks that `f` answers a 901F read with sequence `ser` and decodes it, unit codes after the
/// values. Heat and cooling meters (types 20 and 21) have the heat-meter layout; the meter type
/// of the reply must be `meter_type`.
pub fn decode_current(f: &Frame, meter_type: u8, ser: u8) -> Result<Current, String> {
    decode_current_as(f, meter_type, ser, UnitPosition::After)
}

/// [`decode_current`] with the unit codes where `units` says.
pub fn decode_current_as(f: &Frame, meter_type: u8, ser: u8, units: UnitPosition) -> Result<Current, String> {
    if f.control & 0x80 == 0 {
        return Err(format!("control {:02X} is not a reply (an echo of the request on the line?)", f.control));
    }
    if f.control & 0x40 != 0 {
        return Err(format!("abnormal reply {:02X}{}", f.control, f.data.get(3).or(f.data.first()).map(|e| format!(", status {e:02X}")).unwrap_or_default()));
    }
    if f.control & 0x3F != READ_DATA {
        return Err(format!("reply to function {:02X}, expected 01", f.control & 0x3F));
    }
    if f.meter_type != meter_type {
        let name = |c: u8| MeterType::from_code(c).map_or("unknown", MeterType::name);
        return Err(format!("meter type {:02X} ({}), expected {meter_type:02X} ({})", f.meter_type, name(f.meter_type), name(meter_type)));
    }
    let d = &f.data;
    // Meters echo DI 901F in the order they were sent it; a few write it 90 1F.
    if d.len() < 3 || !(d[..2] == DI_CURRENT || d[..2] == [0x90, 0x1F]) {
        return Err(format!("reply does not carry DI 901F (starts {})", super::frame::hex(&d[..d.len().min(2)])));
    }
    if d[2] != ser {
        return Err(format!("sequence byte {:02X}, expected {ser:02X} (a late answer to an earlier request?)", d[2]));
    }
    let heat = MeterType::from_code(meter_type).is_some_and(MeterType::is_heat);
    let need = if heat { 46 } else { 22 };
    if d.len() < need {
        return Err(format!("reply has {} data bytes, a {} meter's 901F reply has {need}", d.len(), if heat { "heat" } else { "water or gas" }));
    }
    let mut c = Current::default();
    let (value_off, unit_off) = units.offsets();
    // `at`: the first byte of a 5-byte value/unit pair.
    let measured = |c: &mut Current, field: Field, at: usize, decimals: i32, dim: Dimension| {
        let (v, u) = (&d[at + value_off..at + value_off + 4], d[at + unit_off]);
        match (bcd_le(v, false), unit(u)) {
            (Some(r), Some((dm, factor, _))) if dm == dim => c.values.push((field, r as f64 / 10f64.powi(decimals) * factor)),
            (None, _) => c.problems.push(format!("{}: {} is not BCD", field.name(), super::frame::hex(v))),
            (_, Some((_, _, sym))) => c.problems.push(format!("{}: unit code {u:02X} ({sym}) is not a unit of this field", field.name())),
            (_, None) => c.problems.push(format!("{}: unknown unit code {u:02X}", field.name())),
        }
    };
    let plain = |c: &mut Current, field: Field, at: usize, decimals: i32| match bcd_le(&d[at..at + 3], false) {
        Some(r) => c.values.push((field, r as f64 / 10f64.powi(decimals))),
        None => c.problems.push(format!("{}: {} is not BCD", field.name(), super::frame::hex(&d[at..at + 3]))),
    };
    let time_at;
    if heat {
        measured(&mut c, Field::SettlementHeat, 3, 2, Dimension::Energy);
        measured(&mut c, Field::Heat, 8, 2, Dimension::Energy);
        measured(&mut c, Field::HeatPower, 13, 2, Dimension::Power);
        measured(&mut c, Field::FlowRate, 18, 4, Dimension::FlowRate);
        measured(&mut c, Field::Volume, 23, 2, Dimension::Volume);
        plain(&mut c, Field::SupplyTemperature, 28, 2);
        plain(&mut c, Field::ReturnTemperature, 31, 2);
        plain(&mut c, Field::WorkingHours, 34, 0);
        time_at = 37;
    } else {
        measured(&mut c, Field::Volume, 3, 2, Dimension::Volume);
        measured(&mut c, Field::SettlementVolume, 8, 2, Dimension::Volume);
        time_at = 13;
    }
    let t = &d[time_at..time_at + 7];
    if t.iter().all(|b| b >> 4 <= 9 && b & 0x0F <= 9) {
        c.time = Some(format!("{:02X}{:02X}-{:02X}-{:02X} {:02X}:{:02X}:{:02X}", t[6], t[5], t[4], t[3], t[2], t[1], t[0]));
    }
    c.status = u16::from_le_bytes([d[time_at + 7], d[time_at + 8]]);
    Ok(c)
}

/// What a simulated meter sends for a 901F read: each field's value in its contract unit, sent
/// with the unit code given (the value is converted to that unit).
pub fn encode_current(meter_type: u8, address: &[u8; 7], ser: u8, values: &[(Field, f64, u8)], time: [u8; 7], status: u16) -> Option<Vec<u8>> {
    encode_current_as(DI_CURRENT, UnitPosition::After, meter_type, address, ser, values, time, status)
}

/// [`encode_current`] echoing the identifier bytes `di` as received, unit codes where `units`
/// says.
#[allow(clippy::too_many_arguments)]
pub fn encode_current_as(di: [u8; 2], units: UnitPosition, meter_type: u8, address: &[u8; 7], ser: u8, values: &[(Field, f64, u8)], time: [u8; 7], status: u16) -> Option<Vec<u8>> {
    let heat = MeterType::from_code(meter_type).is_some_and(MeterType::is_heat);
    let mut d = vec![di[0], di[1], ser];
    let get = |f: Field| values.iter().find(|v| v.0 == f).copied().unwrap_or((f, 0.0, default_unit(f)));
    let measured = |d: &mut Vec<u8>, f: Field, decimals: i32| -> Option<()> {
        let (_, v, code) = get(f);
        let (_, factor, _) = unit(code)?;
        let raw = (v / factor * 10f64.powi(decimals)).round();
        let bcd = super::frame::to_bcd_le(raw as i64, 4, false)?;
        if units == UnitPosition::Before {
            d.push(code);
        }
        d.extend(bcd);
        if units == UnitPosition::After {
            d.push(code);
        }
        Some(())
    };
    let plain = |d: &mut Vec<u8>, f: Field, decimals: i32| -> Option<()> {
        let raw = (get(f).1 * 10f64.powi(decimals)).round();
        d.extend(super::frame::to_bcd_le(raw as i64, 3, false)?);
        Some(())
    };
    if heat {
        measured(&mut d, Field::SettlementHeat, 2)?;
        measured(&mut d, Field::Heat, 2)?;
        measured(&mut d, Field::HeatPower, 2)?;
        measured(&mut d, Field::FlowRate, 4)?;
        measured(&mut d, Field::Volume, 2)?;
        plain(&mut d, Field::SupplyTemperature, 2)?;
        plain(&mut d, Field::ReturnTemperature, 2)?;
        plain(&mut d, Field::WorkingHours, 0)?;
    } else {
        measured(&mut d, Field::Volume, 2)?;
        measured(&mut d, Field::SettlementVolume, 2)?;
    }
    d.extend_from_slice(&time);
    d.extend_from_slice(&status.to_le_bytes());
    Some(encode(meter_type, address, 0x81, &d))
}

/// The unit code a field is usually sent in (m³, kWh, kW, m³/h).
pub fn default_unit(f: Field) -> u8 {
    match f {
        Field::Heat | Field::SettlementHeat => 0x05,
        Field::HeatPower => 0x17,
        Field::FlowRate => 0x35,
        _ => 0x2C,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::field::frame::parse_address;

    fn addr(s: &str) -> [u8; 7] {
        parse_address(s, 7).unwrap().try_into().unwrap()
    }

    #[test]
    fn the_published_request_byte_for_byte() {
        // hftangyu.com/563.html: meter 78330011223344, cold water, SER 00:
        // 68 10 44 33 22 11 00 33 78 01 03 1F 90 00 80 16 (sum of the bytes before CS = 0x280).
        let r = read_request(0x10, &addr("78330011223344"), 0);
        assert_eq!(r, vec![0xFE, 0xFE, 0x68, 0x10, 0x44, 0x33, 0x22, 0x11, 0x00, 0x33, 0x78, 0x01, 0x03, 0x1F, 0x90, 0x00, 0x80, 0x16]);
    }

    #[test]
    fn the_published_water_reply_decodes() {
        // The page's reply with its checksum recomputed (the page prints 08; the bytes sum to
        // 0x...13): 556677.00 m³ current, 556677.00 m³ at settlement, 2015-05-11 22:01:31,
        // status 21 84.
        let mut body = vec![0x68, 0x10, 0x44, 0x33, 0x22, 0x11, 0x00, 0x33, 0x78, 0x81, 0x16, 0x1F, 0x90, 0x00];
        body.extend([0x00, 0x77, 0x66, 0x55, 0x2C, 0x00, 0x77, 0x66, 0x55, 0x2C, 0x31, 0x01, 0x22, 0x11, 0x05, 0x15, 0x20, 0x21, 0x84]);
        let cs = checksum(&body);
        assert_eq!(cs, 0x13);
        body.extend([cs, 0x16]);
        let mut wire = vec![0xFE, 0xFE, 0xFE, 0xFE];
        wire.extend(&body);
        let Scan::Frame { start, end } = scan_frame(&wire) else { panic!("no frame") };
        let f = decode(&wire[start..end]).unwrap();
        assert_eq!(f.address, addr("78330011223344"));
        let c = decode_current(&f, 0x10, 0).unwrap();
        assert_eq!(c.get(Field::Volume), Some(556_677.0));
        assert_eq!(c.get(Field::SettlementVolume), Some(556_677.0));
        assert_eq!(c.time.as_deref(), Some("2015-05-11 22:01:31"));
        assert_eq!(c.status, 0x8421);
        // 21: D0 = 1 -> valve closed; bit 5 and the second byte are the manufacturer's.
        assert_eq!(status_text(c.status), vec!["valve closed", "manufacturer status bits 20 84"]);
        // Another sequence byte, another type: refused.
        assert!(decode_current(&f, 0x10, 1).unwrap_err().contains("sequence byte 00, expected 01"));
        assert!(decode_current(&f, 0x30, 0).unwrap_err().contains("meter type 10 (cold water), expected 30 (gas)"));
        // One flipped bit: the checksum refuses the frame.
        wire[20] ^= 0x01;
        assert!(matches!(scan_frame(&wire), Scan::Bad { .. }));
    }

    /// A heat reply's fields, in reply order, within 1e-9 of `want`.
    fn assert_heat(c: &Current, want: [f64; 8]) {
        let order = [Field::SettlementHeat, Field::Heat, Field::HeatPower, Field::FlowRate, Field::Volume, Field::SupplyTemperature, Field::ReturnTemperature, Field::WorkingHours];
        for (f, v) in order.into_iter().zip(want) {
            assert!(c.get(f).is_some_and(|g| (g - v).abs() < 1e-9), "{f:?}: {:?} vs {v}", c.get(f));
        }
    }

    #[test]
    fn heat_reply_units_are_converted() {
        // Heat in kWh (05): 1234.56 kWh = 4.444416 GJ; power 12.34 kW (17); flow 1.2345 m³/h
        // (35) -> 12345 in XXXX.XXXX; volume 1000 L (29) = 1 m³; temperatures 75.50 / 45.25 °C;
        // 8760 h.
        let a = addr("00000000000001");
        let vals = [
            (Field::SettlementHeat, 4.0, 0x11),
            (Field::Heat, 1234.56 * 0.0036, 0x05),
            (Field::HeatPower, 12.34, 0x17),
            (Field::FlowRate, 1.2345, 0x35),
            (Field::Volume, 1.0, 0x29),
            (Field::SupplyTemperature, 75.5, 0),
            (Field::ReturnTemperature, 45.25, 0),
            (Field::WorkingHours, 8760.0, 0),
        ];
        let wire = encode_current(0x20, &a, 7, &vals, [0, 0, 12, 1, 1, 0x26, 0x20], 0x0004).unwrap();
        // Heat (current) bytes: 1234.56 kWh -> 123456 -> 56 34 12 00, unit 05.
        assert_eq!(&wire[2 + 11 + 8..2 + 11 + 13], &[0x56, 0x34, 0x12, 0x00, 0x05]);
        let Scan::Frame { start, end } = scan_frame(&wire) else { panic!() };
        let f = decode(&wire[start..end]).unwrap();
        assert_eq!(f.data.len(), 46);
        let c = decode_current(&f, 0x20, 7).unwrap();
        assert_heat(&c, [4.0, 4.444416, 12.34, 1.2345, 1.0, 75.5, 45.25, 8760.0]);
        assert_eq!(status_text(c.status), vec!["battery low"]);
        assert!(c.problems.is_empty());
    }

    #[test]
    fn unit_codes_of_the_wrong_dimension_are_problems_not_values() {
        let a = addr("00000000000001");
        let mut wire = encode_current(0x10, &a, 0, &[(Field::Volume, 5.0, 0x2C)], [0; 7], 0).unwrap();
        // Volume's unit byte is data[7] -> frame offset 2 (FE FE) + 11 + 7; make it kWh (05).
        wire[2 + 11 + 7] = 0x05;
        let n = wire.len();
        wire[n - 2] = checksum(&wire[2..n - 2]);
        let f = decode(&wire[2..]).unwrap();
        let c = decode_current(&f, 0x10, 0).unwrap();
        assert_eq!(c.get(Field::Volume), None);
        assert_eq!(c.problems, vec!["volume: unit code 05 (kWh) is not a unit of this field"]);
        // Every unit code: (code, contract-unit value of raw 1).
        for (code, v) in [(0x02, 3.6e-6), (0x05, 3.6e-3), (0x08, 3.6), (0x0A, 360.0), (0x0E, 1e-3), (0x11, 1.0), (0x13, 100.0), (0x14, 1e-3), (0x1A, 1e3), (0x29, 1e-3), (0x32, 1e-3)] {
            assert_eq!(unit(code).unwrap().1, v, "{code:02X}");
        }
        assert_eq!(unit(0x99), None);
    }

    #[test]
    fn abnormal_reply_is_an_error() {
        let a = addr("00000000000001");
        let wire = encode(0x10, &a, 0xC1, &[0x1F, 0x90, 0x00, 0x01]);
        let f = decode(&wire[2..]).unwrap();
        assert!(decode_current(&f, 0x10, 0).unwrap_err().starts_with("abnormal reply C1"));
    }

    #[test]
    fn the_published_high_first_request_byte_for_byte() {
        // cnblogs.com/llguanli/p/8683992.html (JY heat meter): meter 00000040314132, heat, SER 01:
        // FE FE FE FE 68 20 32 41 31 40 00 00 00 01 03 90 1F 01 20 16; sum 68+20+32+41+31+40+01+
        // 03+90+1F+01 = 0x220 -> CS 20. We send two FE.
        let a = addr("00000040314132");
        let r = read_request_in(DiOrder::HighFirst, 0x20, &a, 1);
        assert_eq!(r, vec![0xFE, 0xFE, 0x68, 0x20, 0x32, 0x41, 0x31, 0x40, 0x00, 0x00, 0x00, 0x01, 0x03, 0x90, 0x1F, 0x01, 0x20, 0x16]);
        // The default order is the standard's: the same request with 1F 90 (same sum, same CS).
        assert_eq!(read_request_in(DiOrder::LowFirst, 0x20, &a, 1), read_request(0x20, &a, 1));
        assert_eq!(&read_request(0x20, &a, 1)[13..15], &[0x1F, 0x90]);
        assert_eq!(DiOrder::default(), DiOrder::LowFirst);
        assert_eq!(DiOrder::parse("high-first"), Ok(DiOrder::HighFirst));
        assert_eq!(DiOrder::parse("90 1F").unwrap_err(), "di_order `90 1F` is not one of \"low-first\", \"high-first\"");
    }

    /// The JY heat meter's published reply (same page), checksum 31 as printed.
    fn jy_reply() -> Vec<u8> {
        let mut w = vec![0xFE, 0xFE, 0xFE, 0xFE, 0x68, 0x20, 0x32, 0x41, 0x31, 0x40, 0x00, 0x00, 0x00, 0x81, 0x2E, 0x90, 0x1F, 0x01];
        w.extend([0x08, 0x02, 0x00, 0x00, 0x00]); // settlement heat: unit 08 (MWh), 00000002 -> 0.02 MWh
        w.extend([0x08, 0x02, 0x00, 0x00, 0x00]); // current heat: the same
        w.extend([0x17, 0x00, 0x00, 0x00, 0x00]); // heat power: unit 17 (kW), 0
        w.extend([0x35, 0x00, 0x00, 0x00, 0x00]); // flow rate: unit 35 (m³/h), 0
        w.extend([0x2C, 0x34, 0x10, 0x00, 0x00]); // volume: unit 2C (m³), 00001034 -> 10.34 m³
        w.extend([0x35, 0x25, 0x00, 0x66, 0x25, 0x00, 0x00, 0x00, 0x00]); // 25.35 °C, 25.66 °C, 0 h
        w.extend([0x53, 0x00, 0x12, 0x10, 0x07, 0x15, 0x20, 0x00, 0x00, 0x31, 0x16]); // 2015-07-10 12:00:53, status 00 00
        w
    }

    #[test]
    fn units_before_values_decode_the_published_heat_reply() {
        let wire = jy_reply();
        let Scan::Frame { start, end } = scan_frame(&wire) else { panic!("the published checksum 31 holds") };
        let f = decode(&wire[start..end]).unwrap();
        assert_eq!(f.data.len(), 0x2E);
        let c = decode_current_as(&f, 0x20, 1, UnitPosition::Before).unwrap();
        // Settlement and current heat 0.02 MWh x 3.6 GJ/MWh = 0.072 GJ; 0 kW; 0 m³/h; 10.34 m³;
        // 25.35 and 25.66 °C; 0 h.
        assert_heat(&c, [0.072, 0.072, 0.0, 0.0, 10.34, 25.35, 25.66, 0.0]);
        assert_eq!(c.time.as_deref(), Some("2015-07-10 12:00:53"));
        assert_eq!(c.status, 0);
        assert!(c.problems.is_empty(), "{:?}", c.problems);
        // Read as the standard's layout, the first pair is value 08 02 00 00 (BCD 00000208) with
        // unit byte 00, an unknown code: here a problem, not a wrong value.
        let wrong = decode_current(&f, 0x20, 1).unwrap();
        assert_eq!(wrong.get(Field::SettlementHeat), None);
        assert!(wrong.problems.iter().any(|p| p == "settlement_heat: unknown unit code 00"), "{:?}", wrong.problems);
    }

    #[test]
    fn both_unit_positions_table() {
        // Cold water 00000000000001, SER 05, volume 12.34 m³ (2C), settlement 5.00 m³ (2C), time
        // 2026-01-01 12:00:00, status 00 00. 12.34 with 2 decimals -> 1234 -> 34 12 00 00.
        let a = addr("00000000000001");
        let vals = [(Field::Volume, 12.34, 0x2C), (Field::SettlementVolume, 5.0, 0x2C)];
        let time = [0x00, 0x00, 0x12, 0x01, 0x01, 0x26, 0x20];
        // (layout, DI echoed, expected data bytes after DI and SER up to the time)
        let table: [(UnitPosition, [u8; 2], [u8; 10]); 2] = [
            (UnitPosition::After, [0x1F, 0x90], [0x34, 0x12, 0x00, 0x00, 0x2C, 0x00, 0x05, 0x00, 0x00, 0x2C]),
            (UnitPosition::Before, [0x90, 0x1F], [0x2C, 0x34, 0x12, 0x00, 0x00, 0x2C, 0x00, 0x05, 0x00, 0x00]),
        ];
        for (units, di, pairs) in table {
            let wire = encode_current_as(di, units, 0x10, &a, 5, &vals, time, 0).unwrap();
            let f = decode(&wire[2..]).unwrap();
            assert_eq!(&f.data[..3], &[di[0], di[1], 0x05], "{units:?}");
            assert_eq!(&f.data[3..13], &pairs, "{units:?}");
            let c = decode_current_as(&f, 0x10, 5, units).unwrap();
            assert_eq!(c.get(Field::Volume), Some(12.34), "{units:?}");
            assert_eq!(c.get(Field::SettlementVolume), Some(5.0), "{units:?}");
            assert_eq!(c.time.as_deref(), Some("2026-01-01 12:00:00"));
            // The other layout: After read as Before takes unit 34 (unknown); Before read as After
            // takes 2C 34 12 00 as the value (2C is not BCD). Problems, no values.
            let other = if units == UnitPosition::After { UnitPosition::Before } else { UnitPosition::After };
            let c = decode_current_as(&f, 0x10, 5, other).unwrap();
            assert_eq!(c.get(Field::Volume), None, "{units:?}");
            assert!(!c.problems.is_empty());
        }
        // Unit before, wrong dimension: kWh (05) in front of a volume.
        let mut wire = encode_current_as([0x1F, 0x90], UnitPosition::Before, 0x10, &a, 0, &vals, time, 0).unwrap();
        wire[2 + 11 + 3] = 0x05;
        let n = wire.len();
        wire[n - 2] = checksum(&wire[2..n - 2]);
        let c = decode_current_as(&decode(&wire[2..]).unwrap(), 0x10, 0, UnitPosition::Before).unwrap();
        assert_eq!(c.problems, vec!["volume: unit code 05 (kWh) is not a unit of this field"]);
    }

    #[test]
    fn a_published_high_first_water_exchange() {
        // cnblogs.com/cj94/p/18534598 ("CJ/T188-2004 报文举例"): cold water meter 00002020120218,
        // SER 00: request FE FE FE FE 68 10 18 02 12 20 20 00 00 01 03 90 1F 00 97 16 (sum 0x397);
        // reply 68 10 18 02 12 20 20 00 00 81 16 90 1F 00 | 00 02 00 00 2C | 00 02 00 00 2C |
        // 00 x7 | 00 FF | 85 16: 00000200 -> 2.00 m³ current and at settlement, unit after the
        // value, status 00 FF.
        let a = addr("00002020120218");
        assert_eq!(&read_request_in(DiOrder::HighFirst, 0x10, &a, 0)[2..], &[0x68, 0x10, 0x18, 0x02, 0x12, 0x20, 0x20, 0x00, 0x00, 0x01, 0x03, 0x90, 0x1F, 0x00, 0x97, 0x16]);
        let mut wire = vec![0xFE, 0xFE, 0xFE, 0xFE, 0x68, 0x10, 0x18, 0x02, 0x12, 0x20, 0x20, 0x00, 0x00, 0x81, 0x16, 0x90, 0x1F, 0x00];
        wire.extend([0x00, 0x02, 0x00, 0x00, 0x2C, 0x00, 0x02, 0x00, 0x00, 0x2C]);
        wire.extend([0, 0, 0, 0, 0, 0, 0, 0x00, 0xFF, 0x85, 0x16]);
        let Scan::Frame { start, end } = scan_frame(&wire) else { panic!("the published checksum 85 holds") };
        let f = decode(&wire[start..end]).unwrap();
        let c = decode_current_as(&f, 0x10, 0, UnitPosition::After).unwrap();
        assert_eq!((c.get(Field::Volume), c.get(Field::SettlementVolume)), (Some(2.0), Some(2.0)));
        assert_eq!(status_text(c.status), vec!["manufacturer status bits 00 FF"]);
    }
}
