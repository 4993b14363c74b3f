//! Registry entries of the statistics forms of 《公共机构能源资源消费统计调查制度》 and of the
//! reports' signature block: optional, validated here so that a typo is refused with a message
//! that names it.
//!
//! Sources (what could be checked, and what could not):
//! * The revision of 2025-11-10 (国家机关事务管理局, published 2025-11-19 at
//!   ecpi.ggj.gov.cn/tzgg/202511/t20251119_48732.htm): deletes 用地面积, 充电桩数量, 可再生能源应用
//!   and UPS装机容量; the heating form's 热力消费量 becomes 热力消费量（按热量收费）; the survey
//!   covers the institutions of the 公共机构名录库.
//! * The revision of 2022 (国管节能〔2022〕301号): 统一社会信用代码 replaces 组织机构代码; the
//!   data-centre form loses 其他能源消费量; 太阳能光电系统发电量 is added; 建筑面积, 用能人数 and
//!   数据中心机房 are defined more precisely.
//! * The forms of the system (training manual of 国家机关事务管理局, 2013): 公共机构基本信息,
//!   公共机构能源资源消费状况, 公共机构数据中心机房能源消费状况, 公共机构采暖能源资源消费状况.
//! * The institution type codes below are those of the earlier form 单位基本信息 (1表, item 101
//!   单位性质): 01 国家机关, 02 事业单位 (021-026 by field), 03 社会团体; item 102 建筑面积 is the
//!   office area (not housing or dormitories), item 103 用能人数 counts everyone working in the
//!   offices, non-establishment staff included. **Not verified**: whether the 2025 revision keeps
//!   these codes unchanged, and the current forms' 表号; a code of two or three digits that is not
//!   in the table is therefore accepted and printed without a name.

use std::collections::HashSet;

use energy_wire::Carrier;
use serde::{Deserialize, Serialize};

use super::{Agency, Meter};

/// Institution type codes (单位性质) with their names (see the module doc for the source).
pub const TYPE_CODES: [(&str, &str); 9] = [
    ("01", "国家机关"),
    ("02", "事业单位"),
    ("021", "教育事业"),
    ("022", "科技事业"),
    ("023", "文化事业"),
    ("024", "卫生事业"),
    ("025", "体育事业"),
    ("026", "其他事业"),
    ("03", "社会团体"),
];

/// The name of a type code, if it is in [`TYPE_CODES`].
pub fn type_name(code: &str) -> Option<&'static str> {
    TYPE_CODES.iter().find(|(c, _)| *c == code).map(|(_, n)| *n)
}

/// A data-centre room (数据中心机房) of an agency, for the data-centre form:
///
/// ```toml
/// [[data_centre]]
/// id = "fin-dc"
/// agency = "fin"
/// name = "财政局信息中心机房"
/// area = 120.0                  # m², the room's floor area
/// meters = ["fin-dc-elec"]      # electricity meters of the room (optional)
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataCentreRoom {
    pub id: String,
    pub agency: String,
    pub name: String,
    /// Floor area of the room, m².
    pub area: f64,
    /// Electricity meters that measure the room; without them, the agency's electricity of end
    /// use `data_centre` is the room's (when the agency has one room).
    #[serde(default)]
    pub meters: Vec<String>,
}

fn check_text(errors: &mut Vec<String>, at: &str, key: &str, v: &Option<String>, max: usize) {
    if let Some(s) = v {
        if s.trim().is_empty() {
            errors.push(format!("{at}: `{key}` is empty; leave it out instead"));
        } else if s.chars().count() > max {
            errors.push(format!("{at}: `{key}` is longer than {max} characters"));
        } else if s.chars().any(char::is_control) {
            errors.push(format!("{at}: `{key}` contains a control character"));
        }
    }
}

/// Problems with the agencies' statistics and signature fields and with the data-centre rooms.
pub fn validate(agencies: &[Agency], meters: &[Meter], rooms: &[DataCentreRoom]) -> Vec<String> {
    let mut errors = Vec::new();
    for a in agencies {
        let at = format!("agency `{}`", a.id);
        if let Some(c) = &a.credit_code {
            // 统一社会信用代码 (GB 32100-2015): 18 characters, digits and capital letters except
            // I, O, S, V, Z.
            if c.chars().count() != 18 || !c.chars().all(|ch| ch.is_ascii_digit() || (ch.is_ascii_uppercase() && !"IOSVZ".contains(ch))) {
                errors.push(format!("{at}: credit_code `{c}` is not an 18-character 统一社会信用代码 (digits and capital letters other than I, O, S, V, Z)"));
            }
        }
        if let Some(c) = &a.type_code {
            if !(2..=3).contains(&c.len()) || !c.chars().all(|ch| ch.is_ascii_digit()) {
                let known: Vec<String> = TYPE_CODES.iter().map(|(c, n)| format!("{c} {n}")).collect();
                errors.push(format!("{at}: type_code `{c}` is not a code of two or three digits (known: {})", known.join(", ")));
            }
        }
        check_text(&mut errors, &at, "responsible", &a.responsible, 40);
        check_text(&mut errors, &at, "filler", &a.filler, 40);
        if let Some(p) = &a.phone {
            if p.trim().is_empty() || p.len() > 40 || !p.chars().all(|c| c.is_ascii_digit() || " -+()".contains(c)) || !p.chars().any(|c| c.is_ascii_digit()) {
                errors.push(format!("{at}: phone `{p}` is not a telephone number (digits, spaces, - + ( ) only)"));
            }
        }
    }
    let agency_ids: HashSet<&str> = agencies.iter().map(|a| a.id.as_str()).collect();
    let mut seen = HashSet::new();
    for r in rooms {
        let at = format!("data_centre `{}`", r.id);
        if let Err(e) = energy_wire::validate_id(&r.id) {
            errors.push(format!("{at}: {e}"));
        }
        if !seen.insert(r.id.as_str()) {
            errors.push(format!("{at} is defined twice"));
        }
        if !agency_ids.contains(r.agency.as_str()) {
            errors.push(format!("{at}: agency `{}` is not an agency", r.agency));
        }
        if r.name.trim().is_empty() {
            errors.push(format!("{at}: name is empty"));
        }
        if !(r.area.is_finite() && r.area > 0.0) {
            errors.push(format!("{at}: area must be a positive number of m²"));
        }
        for m in &r.meters {
            match meters.iter().find(|x| &x.id == m) {
                None => errors.push(format!("{at}: meter `{m}` is not a meter")),
                Some(x) if x.carrier != Carrier::Electricity => errors.push(format!("{at}: meter `{m}` measures {}, not electricity", x.carrier.as_str())),
                Some(_) => {}
            }
        }
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::Registry;

    const BASE: &str = r#"
[[agency]]
id = "fin"
name = "市财政局"
level = "city"
AGENCY_EXTRA
[[building]]
id = "b"
name = "楼"
floor_area = 1000.0
occupants = [ { agency = "fin", share = 1.0 } ]
[[meter]]
id = "e"
building = "b"
carrier = "electricity"
[[meter]]
id = "w"
building = "b"
carrier = "water"
ROOMS
"#;

    fn parse(agency: &str, rooms: &str) -> Result<Registry, String> {
        Registry::parse(&BASE.replace("AGENCY_EXTRA", agency).replace("ROOMS", rooms)).map_err(|e| e.to_string())
    }

    #[test]
    fn good_fields_load_and_bad_ones_are_named() {
        let r = parse(
            "credit_code = \"11140100MB1234567X\"\ntype_code = \"01\"\nresponsible = \"张三\"\nfiller = \"李四\"\nphone = \"0351-1234567\"",
            "[[data_centre]]\nid = \"dc\"\nagency = \"fin\"\nname = \"机房\"\narea = 80.0\nmeters = [\"e\"]",
        )
        .unwrap();
        assert_eq!(r.file.agencies[0].type_code.as_deref(), Some("01"));
        assert_eq!(r.file.data_centres[0].area, 80.0);
        // Each bad value gives one error naming it.
        for (agency, rooms, needle) in [
            ("credit_code = \"123\"", "", "credit_code `123`"),
            // O is not used in the code.
            ("credit_code = \"11140100MB123456O7\"", "", "credit_code"),
            ("type_code = \"1a\"", "", "type_code `1a`"),
            ("type_code = \"0101\"", "", "type_code `0101`"),
            ("phone = \"call me\"", "", "phone `call me`"),
            ("responsible = \" \"", "", "`responsible` is empty"),
            ("", "[[data_centre]]\nid = \"dc\"\nagency = \"nobody\"\nname = \"机房\"\narea = 80.0", "agency `nobody`"),
            ("", "[[data_centre]]\nid = \"dc\"\nagency = \"fin\"\nname = \"机房\"\narea = 0.0", "area must be a positive"),
            ("", "[[data_centre]]\nid = \"dc\"\nagency = \"fin\"\nname = \"机房\"\narea = 8.0\nmeters = [\"w\"]", "meter `w` measures water"),
            ("", "[[data_centre]]\nid = \"dc\"\nagency = \"fin\"\nname = \"机房\"\narea = 8.0\nmeters = [\"x\"]", "meter `x` is not a meter"),
        ] {
            let e = parse(agency, rooms).unwrap_err();
            assert!(e.contains(needle), "{agency} {rooms}: {e}");
        }
    }

    #[test]
    fn type_names() {
        assert_eq!(type_name("01"), Some("国家机关"));
        assert_eq!(type_name("021"), Some("教育事业"));
        assert_eq!(type_name("09"), None);
    }
}
