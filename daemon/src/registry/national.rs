//! The national codes of the building-energy monitoring system (issue 21): the energy item codes
//! (分类分项能耗编码) and the 10-character building id.
//!
//! Source: 国家机关办公建筑和大型公共建筑能耗监测系统 分类分项能耗数据采集技术导则 (MOHURD,
//! 2008), as summarised in the shared reference (china-field-protocols.md) and as the provincial
//! protocols built on it use them (福建省楼宇能耗数据和市级公共建筑节能监管平台通信协议: 分类
//! 能耗 electricity, gas, district heat, district cooling, water ...; 分项能耗 HVAC, power,
//! lighting, special). The code has five characters: the category (two digits), the sub-item
//! (a letter A-D, `0` for none), the first-level sub-item (a digit, `0` for none) and the
//! second-level sub-item (a letter, `0` for none). The exact letters of the second level are
//! those of the common reading of the guideline's table; docs/national-protocol.md says what was
//! and was not verified.

use energy_wire::Carrier;

/// One entry of the item code table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ItemCode {
    pub code: &'static str,
    pub zh: &'static str,
    pub en: &'static str,
}

const fn ic(code: &'static str, zh: &'static str, en: &'static str) -> ItemCode {
    ItemCode { code, zh, en }
}

/// The table, parents before children.
pub const ITEM_CODES: &[ItemCode] = &[
    ic("01000", "电", "electricity"),
    ic("01A00", "照明插座用电", "lighting and sockets"),
    ic("01A10", "照明与插座", "room lighting and sockets"),
    ic("01A20", "走廊与应急", "corridor and emergency lighting"),
    ic("01A30", "室外景观照明", "outdoor lighting"),
    ic("01B00", "空调用电", "HVAC"),
    ic("01B10", "冷热站", "cooling and heating plant"),
    ic("01B1A", "冷冻泵", "chilled-water pumps"),
    ic("01B1B", "冷却泵", "cooling-water pumps"),
    ic("01B1C", "冷机", "chillers"),
    ic("01B1D", "冷却塔", "cooling towers"),
    ic("01B1E", "热水循环泵", "hot-water circulation pumps"),
    ic("01B1F", "电锅炉", "electric boilers"),
    ic("01B20", "空调末端", "air-conditioning terminals"),
    ic("01B2A", "全空气机组", "air handling units"),
    ic("01B2B", "新风机组", "fresh-air units"),
    ic("01B2C", "风机盘管", "fan coil units"),
    ic("01B2D", "分体式空调器", "split air conditioners"),
    ic("01C00", "动力用电", "power"),
    ic("01C10", "电梯", "lifts"),
    ic("01C20", "水泵", "pumps"),
    ic("01C30", "通风机", "fans"),
    ic("01D00", "特殊用电", "special"),
    ic("01D10", "信息中心", "data centre"),
    ic("01D20", "洗衣房", "laundry"),
    ic("01D30", "厨房餐厅", "kitchen and canteen"),
    ic("01D40", "游泳池", "swimming pool"),
    ic("01D50", "健身房", "gym"),
    ic("01D60", "其他", "other special"),
    ic("02000", "水", "water"),
    ic("03000", "燃气", "gas"),
    ic("04000", "集中供热量", "district heat"),
    ic("05000", "集中供冷量", "district cooling"),
    ic("06000", "其它能源", "other energy"),
];

/// The entry of a code.
pub fn item(code: &str) -> Option<&'static ItemCode> {
    ITEM_CODES.iter().find(|i| i.code == code)
}

/// The category of a code: its first two characters followed by `000` (`01B1A` -> `01000`).
pub fn category(code: &str) -> Option<&'static ItemCode> {
    code.get(..2).and_then(|c| item(&format!("{c}000")))
}

/// The sub-item of a code (`01B1A` -> `01B00`), `None` for a category.
pub fn sub_item(code: &str) -> Option<&'static ItemCode> {
    let s = code.get(..3)?;
    if s.ends_with('0') {
        return None;
    }
    item(&format!("{s}00"))
}

/// Whether `code` is `parent` or under it in the table: a category (`01000`) holds every code of
/// its two digits, a sub-item (`01B00`) every code of its three characters, a first-level
/// sub-item (`01B10`) every code of its four.
pub fn within(code: &str, parent: &str) -> bool {
    let stem = parent.trim_end_matches('0');
    let stem = if stem.len() < 2 { parent.get(..2).unwrap_or(parent) } else { stem };
    code.starts_with(stem)
}

/// Whether a meter of `carrier` may carry a code of this category.
pub fn carrier_fits(code: &str, carrier: Carrier) -> bool {
    match code.get(..2) {
        Some("01") => carrier == Carrier::Electricity,
        Some("02") => carrier == Carrier::Water,
        Some("03") => carrier == Carrier::NaturalGas || carrier == Carrier::Lpg,
        Some("04") => matches!(carrier, Carrier::DistrictHeat | Carrier::Steam),
        // District cooling is metered as heat energy (kWh or GJ of cooling).
        Some("05") => carrier == Carrier::DistrictHeat,
        Some("06") => matches!(carrier, Carrier::Diesel | Carrier::Gasoline | Carrier::FuelOil | Carrier::Lpg | Carrier::Coal | Carrier::Steam),
        _ => false,
    }
}

/// The building type letters of the national building id.
pub const BUILDING_TYPES: &[(char, &str, &str)] = &[
    ('A', "办公建筑", "office"),
    ('B', "商场建筑", "shopping centre"),
    ('C', "宾馆饭店建筑", "hotel"),
    ('D', "文化教育建筑", "culture and education"),
    ('E', "医疗卫生建筑", "health care"),
    ('F', "体育建筑", "sports"),
    ('G', "综合建筑", "mixed use"),
    ('H', "其它建筑", "other"),
];

/// Checks a national building id: 6 digits (the administrative division), a building type
/// letter, 3 digits (a serial), e.g. `110101A001`.
pub fn check_building_id(id: &str) -> Result<(), String> {
    let b = id.as_bytes();
    if b.len() != 10 {
        return Err(format!("`{id}` is not a national building id: it has {} characters, not 10 (6-digit division code, a type letter, a 3-digit serial, e.g. 110101A001)", id.chars().count()));
    }
    if !b[..6].iter().all(u8::is_ascii_digit) {
        return Err(format!("`{id}` is not a national building id: the first 6 characters must be the administrative division code (digits)"));
    }
    if !BUILDING_TYPES.iter().any(|(c, _, _)| *c as u8 == b[6]) {
        return Err(format!("`{id}` is not a national building id: the 7th character must be a building type letter A-H"));
    }
    if !b[7..].iter().all(u8::is_ascii_digit) {
        return Err(format!("`{id}` is not a national building id: the last 3 characters must be a serial number (digits)"));
    }
    Ok(())
}

/// The problems of the national fields of a registry: item codes known and fitting the meter's
/// carrier, building ids and collectors in the 10-character form, a collector meter mapped to
/// one registry meter only.
pub(super) fn validate(f: &super::RegistryFile) -> Vec<String> {
    let mut errors = Vec::new();
    for b in &f.buildings {
        if let Some(n) = &b.national_id {
            if let Err(e) = check_building_id(n) {
                errors.push(format!("building `{}`: national_id {e}", b.id));
            }
        }
    }
    let mut mapped: std::collections::HashMap<(&str, &str, &str), &str> = std::collections::HashMap::new();
    for m in &f.meters {
        let at = format!("meter `{}`", m.id);
        if let Some(code) = &m.item_code {
            match item(code) {
                None => errors.push(format!("{at}: item_code `{code}` is not an energy item code of the national table (e.g. 01A00 lighting and sockets, 01B00 HVAC, 02000 water; see docs/national-protocol.md)")),
                Some(_) if !carrier_fits(code, m.carrier) => errors.push(format!("{at}: item_code `{code}` ({}) does not fit carrier {}", category(code).map_or("?", |c| c.en), m.carrier.as_str())),
                Some(_) => {}
            }
        }
        match (&m.collector, &m.collector_meter) {
            (Some(c), Some(cm)) => {
                if let Err(e) = check_building_id(c) {
                    errors.push(format!("{at}: collector {e}"));
                }
                if m.formula.is_some() {
                    errors.push(format!("{at}: a virtual meter (formula) takes no `collector`: nothing sends its readings"));
                }
                let func = m.function.as_deref().unwrap_or("");
                if let Some(other) = mapped.insert((c, cm, func), &m.id) {
                    errors.push(format!("{at}: collector {c} meter {cm} function `{func}` is already meter `{other}`"));
                }
            }
            (Some(_), None) => errors.push(format!("{at}: `collector` needs `collector_meter` (the meter id the collector reports)")),
            (None, Some(_)) => errors.push(format!("{at}: `collector_meter` needs `collector` (the collector's building id)")),
            (None, None) => {
                if m.function.is_some() {
                    errors.push(format!("{at}: `function` needs `collector` and `collector_meter`"));
                }
            }
        }
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn building_ids() {
        let cases: &[(&str, bool)] = &[
            ("110101A001", true),
            ("350102G123", true),
            ("110101I001", false), // no type I
            ("11010AA001", false),
            ("110101A01", false),
            ("110101A0011", false),
            ("110101a001", false),
            ("110101A00X", false),
        ];
        for &(id, ok) in cases {
            assert_eq!(check_building_id(id).is_ok(), ok, "{id}");
        }
    }

    #[test]
    fn check_config_names_every_national_problem() {
        let reg = r#"
[[agency]]
id = "a"
name = "A"
level = "county"
[[building]]
id = "b"
name = "B"
national_id = "11010A001"
floor_area = 100
occupants = [{ agency = "a", share = 1.0 }]
[[meter]]
id = "m1"
building = "b"
carrier = "electricity"
item_code = "01E00"
[[meter]]
id = "m2"
building = "b"
carrier = "water"
item_code = "01A00"
collector = "110101A001"
collector_meter = "1"
[[meter]]
id = "m3"
building = "b"
carrier = "electricity"
collector = "110101A001"
collector_meter = "1"
[[meter]]
id = "m4"
building = "b"
carrier = "electricity"
collector = "110101Z001"
[[meter]]
id = "m5"
building = "b"
carrier = "electricity"
function = "2"
"#;
        let e = super::super::Registry::parse(reg).unwrap_err().0.join("\n");
        for want in [
            "building `b`: national_id `11010A001` is not a national building id",
            "meter `m1`: item_code `01E00` is not an energy item code",
            "meter `m2`: item_code `01A00` (electricity) does not fit carrier water",
            "meter `m3`: collector 110101A001 meter 1 function `` is already meter `m2`",
            "meter `m4`: `collector` needs `collector_meter`",
            "meter `m5`: `function` needs `collector` and `collector_meter`",
        ] {
            assert!(e.contains(want), "{e}\nshould say: {want}");
        }
    }

    #[test]
    fn codes_and_their_parents() {
        // Every code is 5 characters, unique, and its category is in the table.
        for (i, c) in ITEM_CODES.iter().enumerate() {
            assert_eq!(c.code.len(), 5, "{}", c.code);
            assert!(ITEM_CODES[..i].iter().all(|d| d.code != c.code), "{} twice", c.code);
            assert!(category(c.code).is_some(), "{}", c.code);
        }
        assert_eq!(category("01B1A").map(|c| c.zh), Some("电"));
        assert_eq!(sub_item("01B1A").map(|c| c.code), Some("01B00"));
        assert_eq!(sub_item("01A00").map(|c| c.code), Some("01A00"));
        assert_eq!(sub_item("02000"), None);
        assert!(item("01E00").is_none());
        assert!(carrier_fits("01C10", Carrier::Electricity));
        assert!(!carrier_fits("01C10", Carrier::Water));
        assert!(carrier_fits("02000", Carrier::Water));
        assert!(carrier_fits("04000", Carrier::DistrictHeat));
        // Hierarchy: the category, the sub-item and the first-level sub-item hold their
        // children; a code holds itself.
        let cases: &[(&str, &str, bool)] = &[
            ("01B1A", "01000", true),
            ("01B1A", "01B00", true),
            ("01B1A", "01B10", true),
            ("01B1A", "01B20", false),
            ("01A00", "01B00", false),
            ("02000", "01000", false),
            ("01D60", "01D60", true),
            ("01000", "01000", true),
        ];
        for &(code, parent, want) in cases {
            assert_eq!(within(code, parent), want, "{code} within {parent}");
        }
    }
}
