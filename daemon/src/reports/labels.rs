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
        match self {
            Lang::Zh => "zh-CN",
            Lang::En => "en",
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
    ("kgce", "折标准煤 (kgce)", "Energy (kgce)"),
    ("co2", "二氧化碳 (kgCO2)", "CO2 (kgCO2)"),
    ("cost", "费用 (元)", "Cost (yuan)"),
    ("estimated", "估算部分", "Estimated part"),
    ("budget", "预算", "Budget"),
    ("days_elapsed", "统计天数 (天)", "Days covered (days)"),
    ("coverage", "数据覆盖率 (%)", "Coverage (%)"),
    ("measured_share", "实测占比 (%)", "Measured share (%)"),
    ("complete", "数据完整", "Complete"),
    ("floor_area", "建筑面积 (m²)", "Floor area (m²)"),
    ("headcount", "用能人数 (人)", "Headcount (persons)"),
    ("method", "预测方法", "Projection method"),
    ("notes", "说明", "Notes"),
    ("month", "月份", "Month"),
    ("this_year_kgce", "本年 (kgce)", "This year (kgce)"),
    ("last_year_kgce", "上年 (kgce)", "Last year (kgce)"),
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
    ("price", "单价 (元/单位)", "Price (yuan per unit)"),
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
    ("total_last_full", "上一完整年度综合能耗 (kgce)", "Total energy, last full year (kgce)"),
    ("total_ytd", "本年累计综合能耗 (kgce)", "Total energy, year to date (kgce)"),
    ("total_projected", "本年预测综合能耗 (kgce)", "Total energy, projected (kgce)"),
    ("budget_kgce", "计划年度能源预算 (kgce)", "Energy budget of the plan year (kgce)"),
    ("budget_cost", "计划年度能源费用预算 (元)", "Energy cost budget of the plan year (yuan)"),
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
