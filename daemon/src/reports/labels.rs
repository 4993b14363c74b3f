//! The words of the reports in Chinese (default, the reference's standard terms) and English.
//! One table; the templates look words up by key.

use crate::accounting::indicators::BandClass;
use crate::registry::Indicator;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    Zh,
    En,
}

impl std::str::FromStr for Lang {
    type Err = String;
    fn from_str(s: &str) -> Result<Lang, String> {
        match s {
            "zh" | "zh-CN" | "zh-cn" => Ok(Lang::Zh),
            "en" => Ok(Lang::En),
            _ => Err(format!("lang `{s}` is not one of zh (default), en")),
        }
    }
}

impl Lang {
    pub fn code(self) -> &'static str {
        self.t("zh-CN", "en")
    }
    /// The language a query asks for: English with `lang=en`, else Chinese.
    pub fn of(p: &std::collections::HashMap<String, String>) -> Lang {
        if p.get("lang").is_some_and(|l| l == "en") {
            Lang::En
        } else {
            Lang::Zh
        }
    }
    /// The text in this language.
    pub fn t<'a>(self, zh: &'a str, en: &'a str) -> &'a str {
        match self {
            Lang::Zh => zh,
            Lang::En => en,
        }
    }
}

/// (key, Chinese, English).
const LABELS: &[(&str, &str, &str)] = &[
    ("annual", "年度节能执行情况报告", "Annual execution report (energy)"),
    ("assessment", "节能目标责任考核", "Energy-saving assessment"),
    ("plan", "下一年度运行保障计划节能部分", "Energy-saving section of the annual plan"),
    ("year", "年度", "Year"),
    ("plan_year", "计划年度", "Plan year"),
    ("as_of", "数据截至（不含）", "Figures up to (excluding)"),
    ("timezone", "时区", "Time zone"),
    ("basis", "电力折标方法", "Electricity conversion basis"),
    ("in_progress", "年度未结束：全年数为预测值", "Year in progress: whole-year figures are projections"),
    ("scope", "范围", "Scope"),
    ("scope_agency", "本单位", "agency"),
    ("scope_level", "本级", "own level"),
    ("scope_tree", "全辖", "whole jurisdiction"),
    ("agency", "单位代码", "Agency id"),
    ("name", "单位名称", "Agency"),
    ("kind", "单位类型", "Kind"),
    ("indicator", "指标", "Indicator"),
    ("indicator_key", "指标代码", "Indicator key"),
    ("unit", "单位", "Unit"),
    ("value", "本年累计", "Year to date"),
    ("value_closed", "全年实际", "Whole year"),
    ("projected", "全年预测", "Projected whole year"),
    ("last_year", "上年", "Last year"),
    ("change_pct", "同比变化 (%)", "Change (%)"),
    ("target_kind", "目标类型", "Target kind"),
    ("target", "目标值", "Target"),
    ("met", "是否达标", "Met"),
    ("binding", "约束值", "Binding value"),
    ("benchmark", "基准值", "Benchmark value"),
    ("guide", "引导值", "Guide value"),
    ("class", "定额分档", "Band class"),
    ("carrier", "能源品种", "Carrier"),
    ("consumption", "消费量", "Consumption"),
    ("kgce", "折标准煤（千克标准煤）", "Energy (kgce)"),
    ("co2", "二氧化碳（千克）", "CO2 (kgCO2)"),
    ("cost", "费用（元）", "Cost (yuan)"),
    ("estimated", "估算部分", "Estimated part"),
    ("budget", "预算", "Budget"),
    ("days_elapsed", "统计天数 (天)", "Days covered (days)"),
    ("coverage", "数据覆盖率 (%)", "Coverage (%)"),
    ("measured_share", "实测占比 (%)", "Measured share (%)"),
    ("complete", "数据完整", "Complete"),
    ("floor_area", "建筑面积（平方米）", "Floor area (m²)"),
    ("headcount", "用能人数 (人)", "Headcount (persons)"),
    ("method", "预测方法", "Projection method"),
    ("notes", "说明", "Notes"),
    ("month", "月份", "Month"),
    ("this_year_kgce", "本年（千克标准煤）", "This year (kgce)"),
    ("last_year_kgce", "上年（千克标准煤）", "Last year (kgce)"),
    ("indicators", "指标", "Indicators"),
    ("carriers", "分品种能耗", "Carriers"),
    ("quality", "数据质量", "Data quality"),
    ("monthly", "逐月能耗", "Monthly energy"),
    ("ranking", "排名", "Ranking"),
    ("items", "得分明细", "Score items"),
    ("averages", "同类平均", "Same-kind averages"),
    ("rank", "名次", "Rank"),
    ("score", "得分 (满分100)", "Score (of 100)"),
    ("grade", "考核等级", "Grade"),
    ("points", "得分点", "Points"),
    ("max_points", "满分点", "Max points"),
    ("binding_missed", "未完成约束性目标", "Binding targets missed"),
    ("reasons", "失分原因", "Why points were lost"),
    ("rule", "规则", "Rule"),
    ("rule_scorecard", "同类平均对标", "same-kind average"),
    ("rule_band", "定额分档", "quota band"),
    ("average", "同类平均值", "Same-kind average"),
    ("ratio", "与平均值之比", "Ratio to average"),
    ("agencies_n", "单位数", "Agencies"),
    ("reason", "说明", "Reason"),
    ("targets", "节能目标", "Targets"),
    ("audits", "能源审计与节能改造", "Audits and retrofits"),
    ("budget_sheet", "能源预算", "Energy budget"),
    ("summary", "汇总", "Summary"),
    ("last_full_year", "上一完整年度", "Last full year"),
    ("current_target", "本年目标值", "Current year's target"),
    ("proposed_target", "计划年度目标值", "Proposed target"),
    ("label", "规划", "Plan label"),
    ("audit_kind", "原因", "Reason"),
    ("limit", "限值", "Limit"),
    ("factor", "下降系数", "Path factor"),
    ("price", "单价（元/计量单位）", "Price (yuan per unit)"),
    ("budget_consumption", "预算消费量", "Budgeted consumption"),
    ("above_binding", "高于约束值", "above the binding value"),
    ("reduction_missed_twice", "连续两年未完成下降目标", "reduction target missed two years running"),
    ("reduction", "下降目标", "reduction"),
    ("budget_kind", "预算", "budget"),
    ("quota_binding", "约束值", "binding value"),
    ("yes", "是", "yes"),
    ("no", "否", "no"),
    ("item", "项目", "Item"),
    ("figure", "数值", "Figure"),
    ("agencies_count", "单位数", "Agencies"),
    ("total_last_full", "上一完整年度综合能耗（千克标准煤）", "Total energy, last full year (kgce)"),
    ("total_ytd", "本年累计综合能耗（千克标准煤）", "Total energy, year to date (kgce)"),
    ("total_projected", "本年预测综合能耗（千克标准煤）", "Total energy, projected (kgce)"),
    ("budget_kgce", "计划年度能源预算（千克标准煤）", "Energy budget of the plan year (kgce)"),
    ("budget_cost", "计划年度能源费用预算（元）", "Energy cost budget of the plan year (yuan)"),
    ("audits_required", "需开展能源审计和节能改造的单位数", "Agencies that must do an audit and a retrofit"),
    ("chart_band", "指标与定额", "Indicators against quota bands"),
    ("chart_monthly", "逐月综合能耗（本年与上年）", "Monthly energy, this year and last"),
    ("chart_ranking", "得分排名", "Ranking by score"),
    ("no_peer", "无同类单位，不参与对标", "no other agency of its kind: not compared"),
    ("no_value", "无数据", "no value"),
    ("deadlines", "第三十九条报送期限", "Art. 39 deadlines"),
    ("agencies_due", "各单位报送上年计划执行情况", "Agencies report last year's execution"),
    ("bureau_due", "机关事务管理部门汇总报告政府", "The bureau reports to the government"),
    ("days_left", "剩余天数", "Days left"),
    ("missing", "缺少", "Missing"),
    ("downloads", "报告下载", "Reports"),
    ("overview", "各单位指标", "Agencies' indicators"),
    ("all_complete", "全部单位数据完整", "Every agency's data is complete"),
    // Official form of the documents (issue 16): quota sources, signature, statistics forms.
    ("quota_source", "定额来源", "Quota source"),
    ("quota_example", "随软件提供的示例定额表", "the shipped example table"),
    ("quota_missing_warning", "注册表中没有定额表：各指标不作定额分档，考核不计定额分档得分。请加载本地区的定额表。", "The registry has no quota table: no indicator is classed against quota bands and the assessment scores no band. Load your province's quota table."),
    ("quota_example_warning", "定额分档全部来自随软件提供的示例定额表（山东省地方标准），不是本地区的定额表，却决定考核分档。请加载本地区的定额表。", "Every quota band comes from the shipped example table (a Shandong standard), not from your province's table, yet it decides grades. Load your province's quota table."),
    ("total_row", "合计", "Total"),
    ("overdue", "已逾期", "overdue"),
    ("sign_unit", "填报单位", "Reporting unit"),
    ("sign_responsible", "负责人", "Responsible person"),
    ("sign_filler", "填报人", "Prepared by"),
    ("sign_phone", "联系电话", "Telephone"),
    ("sign_date", "填报日期", "Date"),
    ("sign_seal", "（盖章）", "(seal)"),
    ("page", "页", "page"),
    ("statistics", "公共机构能源资源消费统计报表", "Public institutions' energy and resource consumption statistics"),
    ("stat_system", "依据《公共机构能源资源消费统计调查制度》（2025年11月修订）", "Per the statistics system of public institutions' energy and resource consumption (revised November 2025)"),
    ("stat_authority", "制定机关：国家机关事务管理局　批准机关：国家统计局", "Issued by the National Government Offices Administration, approved by the National Bureau of Statistics"),
    ("stat_basic", "公共机构基本信息", "Basic information"),
    ("stat_consumption", "公共机构能源资源消费状况", "Energy and resource consumption"),
    ("stat_data_centre", "公共机构数据中心机房能源消费状况", "Data-centre rooms"),
    ("stat_heating", "公共机构采暖能源资源消费状况", "Heating"),
    ("credit_code", "统一社会信用代码", "Unified social credit code"),
    ("type_code", "单位类型代码", "Institution type code"),
    ("type_name", "单位类型", "Institution type"),
    ("level", "行政级别", "Level"),
    ("parent", "上级单位", "Parent"),
    ("office_area", "建筑面积（平方米）", "Floor area (m²)"),
    ("energy_users", "用能人数（人）", "Energy users (persons)"),
    ("quantity", "消费量", "Quantity"),
    ("tce", "折标准煤（吨标准煤）", "Standard coal (tce)"),
    ("cost_yuan", "金额（元）", "Cost (yuan)"),
    ("total_tce", "综合能耗（吨标准煤）", "Total energy (tce)"),
    ("total_cost", "能源费用合计（元）", "Energy cost (yuan)"),
    ("water_m3", "用水量（立方米）", "Water (m³)"),
    ("room", "机房名称", "Room"),
    ("room_id", "机房代码", "Room id"),
    ("room_area", "机房面积（平方米）", "Room area (m²)"),
    ("room_kwh", "机房电力消费量（千瓦时）", "Room electricity (kWh)"),
    ("heated_area", "采暖面积（平方米）", "Heated area (m²)"),
    ("heating_type", "采暖方式", "Heating type"),
    ("heat_gj", "热力消费量（按热量收费）（吉焦）", "Heat consumption billed by heat (GJ)"),
    ("heat_cost", "热力费用（元）", "Heat cost (yuan)"),
    ("heating_tce", "采暖能耗（吨标准煤）", "Heating energy (tce)"),
    ("not_recorded", "注册表未填", "not in the registry"),
    ("whole_jurisdiction_total", "全辖合计", "Whole jurisdiction"),
    ("basis_calorific", "当量值", "calorific equivalent (当量值)"),
    ("basis_equivalent", "等价值", "power-plant equivalent (等价值)"),
    ("heating_district", "集中供热", "district heating"),
    ("heating_gas", "燃气采暖", "gas"),
    ("heating_electric", "电采暖", "electric"),
    ("heating_none", "无采暖", "none"),
    ("level_province", "省级", "province"),
    ("level_city", "市级", "city"),
    ("level_county", "县级", "county"),
    ("col_code", "栏次", "Column"),
    // Data status and per-area bases (issue 16, accounting trust).
    ("withheld", "同类其他单位不足三家，不予显示", "withheld: fewer than three other agencies of the kind"),
    ("no_data", "无数据", "no data"),
    ("incomplete", "数据不完整", "incomplete data"),
    ("unscored_no_data", "无完整数据，不予评分", "not scored: no complete data"),
    ("unscored_incomplete", "有考核指标数据缺失或不完整，不予评分", "not scored: a scored indicator's data is missing or incomplete"),
    ("unscored_nothing_to_score", "无同类对标单位且无定额，无法评分", "not scored: no peer of its kind and no quota band"),
    ("area_basis", "面积口径", "Per-area basis"),
    ("as_of_rule", "数据截至当日零时（当地时间），当日数据不计入", "Figures run to the start of the day (local time); that day is not counted"),
    ("data_status", "数据状态", "Data"),
];

/// The word of `key` in `lang` (the key itself when unknown).
pub fn t(lang: Lang, key: &str) -> String {
    LABELS.iter().find(|(k, _, _)| *k == key).map_or_else(|| key.to_string(), |(_, zh, en)| if lang == Lang::Zh { (*zh).to_string() } else { (*en).to_string() })
}

pub fn indicator(lang: Lang, i: Indicator) -> &'static str {
    match lang {
        Lang::Zh => i.name_zh(),
        Lang::En => i.name_en(),
    }
}

pub fn class(lang: Lang, c: BandClass) -> &'static str {
    match lang {
        Lang::Zh => c.name_zh(),
        Lang::En => c.name_en(),
    }
}

pub fn carrier(lang: Lang, c: energy_wire::Carrier) -> String {
    use energy_wire::Carrier::*;
    let zh = match c {
        Electricity => "电力",
        Water => "水",
        NaturalGas => "天然气",
        DistrictHeat => "热力",
        Steam => "蒸汽",
        Diesel => "柴油",
        Gasoline => "汽油",
        FuelOil => "燃料油",
        Lpg => "液化石油气",
        Coal => "原煤",
    };
    match lang {
        Lang::Zh => zh.to_string(),
        Lang::En => c.as_str().replace('_', " "),
    }
}

pub fn data_status(lang: Lang, d: crate::accounting::indicators::DataStatus) -> &'static str {
    match lang {
        Lang::Zh => d.name_zh(),
        Lang::En => d.name_en(),
    }
}

pub fn yes_no(lang: Lang, b: bool) -> String {
    t(lang, if b { "yes" } else { "no" })
}

/// A unit in the language: the official Chinese names in zh (千克标准煤, 千瓦时, 立方米, 吉焦, 元,
/// 人, 年 ...), the symbols in en. Composite units are translated symbol by symbol
/// (`kgce/(m²·a)` is 千克标准煤/(平方米·年)); an unknown symbol is kept.
pub fn unit(lang: Lang, u: &str) -> String {
    if lang == Lang::En {
        return u.to_string();
    }
    const NAMES: &[(&str, &str)] = &[
        ("kgce", "千克标准煤"),
        ("tce", "吨标准煤"),
        ("kgCO2", "千克二氧化碳"),
        ("tCO2", "吨二氧化碳"),
        ("kWh", "千瓦时"),
        ("m³", "立方米"),
        ("m²", "平方米"),
        ("GJ", "吉焦"),
        ("MJ", "兆焦"),
        ("kg", "千克"),
        ("t", "吨"),
        ("L", "升"),
        ("person", "人"),
        ("persons", "人"),
        ("yuan", "元"),
        ("a", "年"),
        ("days", "天"),
        ("%", "%"),
    ];
    let mut out = String::new();
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        if !word.is_empty() {
            out.push_str(NAMES.iter().find(|(k, _)| *k == word.as_str()).map_or(word.as_str(), |(_, v)| v));
            word.clear();
        }
    };
    for c in u.chars() {
        if c.is_alphanumeric() || c == '²' || c == '³' {
            word.push(c);
        } else {
            flush(&mut word, &mut out);
            out.push(c);
        }
    }
    flush(&mut word, &mut out);
    out
}

/// The electricity conversion basis (`calorific`, `equivalent`) in words.
pub fn basis(lang: Lang, b: &str) -> String {
    // The engine's words: `calorific (当量值)` or `equivalent (等价值)`.
    let word = b.split_whitespace().next().unwrap_or(b);
    let key = format!("basis_{word}");
    let w = t(lang, &key);
    if w == key {
        b.to_string()
    } else {
        w
    }
}

/// A key looked up with a prefix (`heating_district`, `level_city`), or the value itself.
pub fn keyed(lang: Lang, prefix: &str, v: &str) -> String {
    let key = format!("{prefix}_{v}");
    let w = t(lang, &key);
    if w == key {
        v.to_string()
    } else {
        w
    }
}

/// An agency kind of the registry: the usual ones in Chinese; any other is the registry's own
/// word (a bureau that writes its kinds in Chinese sees them as written).
pub fn kind(lang: Lang, k: &str) -> String {
    const KINDS: &[(&str, &str)] = &[
        ("general", "综合"),
        ("government", "政府机关"),
        ("party", "党的机关"),
        ("congress", "人大机关"),
        ("cppcc", "政协机关"),
        ("supervision", "监察机关"),
        ("court", "审判机关"),
        ("procuratorate", "检察机关"),
        ("education", "教育事业"),
        ("science", "科技事业"),
        ("culture", "文化事业"),
        ("health", "卫生事业"),
        ("sports", "体育事业"),
        ("public_institution", "事业单位"),
        ("affairs", "机关事务管理部门"),
        ("organization", "社会团体"),
    ];
    match lang {
        Lang::Zh => KINDS.iter().find(|(e, _)| *e == k).map_or_else(|| k.to_string(), |(_, z)| (*z).to_string()),
        Lang::En => k.to_string(),
    }
}

/// How a year in progress is projected (the engine's words) in the language.
pub fn method(lang: Lang, m: &str) -> String {
    if lang == Lang::En {
        return m.to_string();
    }
    let zh = if m.starts_with("none: the year is closed") {
        "不需预测（年度已结束）"
    } else if m.starts_with("none") {
        "无法预测（无数据）"
    } else if m.starts_with("last year") {
        "按上年同期分布推算"
    } else if m.starts_with("trend") {
        "按本年已有趋势推算（供暖按采暖季日数）"
    } else if m.starts_with("mixed") {
        "上年数据完整的按上年分布推算，其余按本年趋势推算"
    } else {
        "其他方法（中文说明暂缺，见英文版）"
    };
    zh.to_string()
}

/// A note of the engine or the model (English sentences) in the language. The notes the
/// software writes are translated; a note it does not know is said to exist, so that a
/// Chinese document never prints English.
pub fn note(lang: Lang, n: &str) -> String {
    if lang == Lang::En {
        return n.to_string();
    }
    let tick = |s: &str| -> Option<String> { s.split('`').nth(1).map(str::to_string) };
    let indicator_of = |s: &str| -> String {
        let key = s.split(':').next().unwrap_or("");
        Indicator::ALL.iter().find(|i| i.name() == key).map_or_else(|| key.to_string(), |i| i.name_zh().to_string())
    };
    let year_in = |s: &str| -> String { s.split(|c: char| !c.is_ascii_digit()).find(|w| w.len() == 4).unwrap_or("").to_string() };
    if n.starts_with("no headcount for") {
        return format!("{}年无用能人数：人均指标不计算", year_in(n));
    }
    if n.starts_with("the agency occupies no building") {
        return "本单位未使用任何建筑：面积类指标不计算".into();
    }
    if n.contains("of the energy is estimated across gaps") {
        let pct = n.split('%').next().unwrap_or("");
        return format!("{pct}% 的能耗为数据缺口期间的估算值");
    }
    if n.starts_with("aggregate:") {
        return "汇总：单位面积和人均指标按各成员面积、人数之和计算；目标按单位考核".into();
    }
    if n.contains("no data for the baseline year") || n.contains("no value for the baseline year") {
        return format!("{}：基准年 {} 年无数据，不提出目标", indicator_of(n), year_in(n));
    }
    if n.contains("no tariff for") {
        let c = n.split(':').next().unwrap_or("");
        let name = energy_wire::Carrier::ALL.iter().find(|x| x.as_str() == c).map_or_else(|| c.to_string(), |x| carrier(lang, *x));
        return format!("{name}：{} 年无价格，费用不估算", year_in(n));
    }
    if n.starts_with("no figures for") {
        return format!("{} 年无数据", year_in(n));
    }
    if n.contains("the counter went down without a recorded replacement") {
        return format!("表计 {}：读数下降且无换表记录，须由工程师核查", tick(n).unwrap_or_default());
    }
    if n.contains("its sub-meters measured") {
        return format!("表计 {}：其分表计量值大于总表", tick(n).unwrap_or_default());
    }
    if let Some(list) = n.strip_prefix("incomplete data, not projected, classed, judged or scored: ") {
        // Each item is `indicator_key (83.0%)`: the indicator and its data coverage.
        let items: Vec<String> = list
            .split(", ")
            .map(|item| {
                let (key, rest) = item.split_once(" (").unwrap_or((item, ""));
                let name = Indicator::ALL.iter().find(|i| i.name() == key).map_or_else(|| key.to_string(), |i| i.name_zh().to_string());
                match rest.split_once('%') {
                    Some((pct, _)) => format!("{name}（数据覆盖率 {pct}%）"),
                    None => name,
                }
            })
            .collect();
        return format!("数据不完整，不作预测、定额分档、目标判定和评分：{}", items.join("、"));
    }
    if n.contains("is below the completeness threshold") {
        let pct = n.trim_start_matches("coverage ").split('%').next().unwrap_or("");
        return format!("数据覆盖率 {pct}% 低于完整性要求");
    }
    "另有一条说明（中文说明暂缺，见英文版）".into()
}

/// A date `YYYY-MM-DD` as printed: 2026年3月31日 in zh, as given in en.
pub fn date(lang: Lang, d: &str) -> String {
    match (lang, chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d")) {
        (Lang::Zh, Ok(x)) => {
            use chrono::Datelike;
            format!("{}年{}月{}日", x.year(), x.month(), x.day())
        }
        _ => d.to_string(),
    }
}

/// A number as printed in documents: at most two decimals, no trailing zeros, thousands
/// separated by commas (`12,345.6`).
pub fn number(x: f64) -> String {
    let r = (x * 100.0).round() / 100.0;
    if r == 0.0 {
        return "0".into();
    }
    let s = format!("{r}");
    let (sign, s) = s.strip_prefix('-').map_or(("", s.as_str()), |t| ("-", t));
    let (int, frac) = s.split_once('.').map_or((s, None), |(i, f)| (i, Some(f)));
    let mut grouped = String::new();
    for (i, c) in int.chars().enumerate() {
        if i > 0 && (int.len() - i) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(c);
    }
    match frac {
        Some(f) => format!("{sign}{grouped}.{f}"),
        None => format!("{sign}{grouped}"),
    }
}

/// A time zone as printed: the Chinese name of the zones of China in zh, else its name.
pub fn timezone(lang: Lang, tz: &str) -> String {
    match (lang, tz) {
        (Lang::Zh, "Asia/Shanghai" | "Asia/Chongqing" | "Asia/Harbin" | "PRC") => "北京时间".into(),
        (Lang::Zh, "Asia/Urumqi") => "乌鲁木齐时间".into(),
        _ => tz.to_string(),
    }
}

#[cfg(test)]
mod format_tests {
    use super::*;

    #[test]
    fn units_numbers_and_dates() {
        // Composite units symbol by symbol.
        for (u, zh) in [
            ("kgce", "千克标准煤"),
            ("kgce/(m²·a)", "千克标准煤/(平方米·年)"),
            ("kgce/(person·a)", "千克标准煤/(人·年)"),
            ("m³/(person·a)", "立方米/(人·年)"),
            ("kWh/(m²·a)", "千瓦时/(平方米·年)"),
            ("tCO2", "吨二氧化碳"),
            ("yuan", "元"),
            ("GJ", "吉焦"),
        ] {
            assert_eq!(unit(Lang::Zh, u), zh);
            assert_eq!(unit(Lang::En, u), u);
        }
        // 1234567.891 rounds to 1234567.89, grouped by three.
        assert_eq!(number(1_234_567.891), "1,234,567.89");
        assert_eq!(number(-8612.8296), "-8,612.83");
        assert_eq!(number(999.0), "999");
        assert_eq!(number(0.004), "0");
        assert_eq!(date(Lang::Zh, "2026-03-31"), "2026年3月31日");
        assert_eq!(date(Lang::En, "2026-03-31"), "2026-03-31");
        assert_eq!(basis(Lang::Zh, "calorific"), "当量值");
        assert_eq!(basis(Lang::Zh, "calorific (当量值)"), "当量值");
        assert_eq!(kind(Lang::Zh, "government"), "政府机关");
        assert_eq!(method(Lang::Zh, "none: the year is closed"), "不需预测（年度已结束）");
        assert_eq!(note(Lang::Zh, "no headcount for 2025: per-person indicators are not computed"), "2025年无用能人数：人均指标不计算");
        assert!(!note(Lang::Zh, "something new the engine says").chars().any(|c| c.is_ascii_alphabetic()));
        // The engine's note on incomplete indicators names each one and its coverage.
        assert_eq!(
            note(Lang::Zh, "incomplete data, not projected, classed, judged or scored: energy_per_area (83.0%), energy_per_person (83.0%)"),
            "数据不完整，不作预测、定额分档、目标判定和评分：单位建筑面积能耗（定额口径）（数据覆盖率 83.0%）、人均综合能耗（数据覆盖率 83.0%）"
        );
    }
}
