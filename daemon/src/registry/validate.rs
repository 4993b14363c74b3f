//! Checks of a registry file, every problem found at once (one message each, sorted).

use std::collections::{BTreeMap, HashMap, HashSet};

use super::*;

pub(super) fn validate(f: &RegistryFile) -> Vec<String> {
    let mut errors = Vec::new();
    let mut ids = |kind: &str, list: Vec<&str>| -> HashSet<String> {
        let mut seen = HashSet::new();
        for id in list {
            if let Err(e) = energy_wire::validate_id(id) {
                errors.push(format!("{kind} `{id}`: {e}"));
            }
            if !seen.insert(id.to_string()) {
                errors.push(format!("{kind} `{id}` is defined twice"));
            }
        }
        seen
    };
    let agencies = ids("agency", f.agencies.iter().map(|a| a.id.as_str()).collect());
    let buildings = ids("building", f.buildings.iter().map(|b| b.id.as_str()).collect());
    let _meters = ids("meter", f.meters.iter().map(|m| m.id.as_str()).collect());
    errors.extend(statistics::validate(&f.agencies, &f.meters, &f.data_centres));
    check_agencies(f, &agencies, &mut errors);
    check_buildings(f, &agencies, &mut errors);
    check_meters(f, &agencies, &buildings, &mut errors);
    check_events(f, &mut errors);
    check_parameters(f, &agencies, &mut errors);
    errors.extend(super::national::validate(f));
    errors.extend(f.assessment.problems());
    errors.sort();
    errors.dedup();
    errors
}

/// Parents known, no parent chain that loops, headcounts by year.
fn check_agencies(f: &RegistryFile, agencies: &HashSet<String>, errors: &mut Vec<String>) {
    for a in &f.agencies {
        if let Some(p) = &a.parent {
            if !agencies.contains(p) {
                errors.push(format!("agency `{}`: parent `{p}` is not an agency", a.id));
            }
            if p == &a.id {
                errors.push(format!("agency `{}` is its own parent", a.id));
            }
        }
    }
    // Parent cycles.
    let parent: BTreeMap<&str, &str> = f.agencies.iter().filter_map(|a| a.parent.as_deref().map(|p| (a.id.as_str(), p))).collect();
    for a in &f.agencies {
        let mut cur = a.id.as_str();
        for _ in 0..=f.agencies.len() {
            match parent.get(cur) {
                Some(p) => cur = p,
                None => break,
            }
            if cur == a.id {
                errors.push(format!("agency `{}`: the parent chain loops back to itself", a.id));
                break;
            }
        }
    }
    for a in &f.agencies {
        for (y, n) in &a.headcount {
            if y.parse::<i32>().map_or(true, |y| !(1900..=2200).contains(&y)) {
                errors.push(format!("agency `{}`: headcount key `{y}` is not a year", a.id));
            }
            if !(n.is_finite() && *n > 0.0) {
                errors.push(format!("agency `{}`: headcount of {y} must be a positive number", a.id));
            }
        }
    }
}

/// Areas, occupants (the first ones and each dated change), allocation keys.
fn check_buildings(f: &RegistryFile, agencies: &HashSet<String>, errors: &mut Vec<String>) {
    for b in &f.buildings {
        let at = format!("building `{}`", b.id);
        if !(b.floor_area.is_finite() && b.floor_area > 0.0) {
            errors.push(format!("{at}: floor_area must be a positive number of m²"));
        }
        if let Some(h) = b.heated_area {
            if !(h.is_finite() && h >= 0.0) {
                errors.push(format!("{at}: heated_area must be a non-negative number of m²"));
            } else if h > b.floor_area {
                errors.push(format!("{at}: heated_area {h} is larger than floor_area {}", b.floor_area));
            }
        }
        for e in &b.excluded {
            if !(e.area.is_finite() && e.area >= 0.0) {
                errors.push(format!("{at}: excluded area of {:?} must be a non-negative number of m²", e.what));
            }
        }
        if b.indicator_area() <= 0.0 {
            errors.push(format!("{at}: excluded areas leave no floor area for indicators"));
        }
        check_occupants(&at, &b.occupants, agencies, errors);
        let mut last: Option<chrono::NaiveDate> = None;
        for c in &b.occupancy {
            let at_c = format!("{at}: occupancy from `{}`", c.from);
            match c.date() {
                None => errors.push(format!("{at_c}: `from` must be a date YYYY-MM-DD")),
                Some(d) => {
                    if last.is_some_and(|l| d <= l) {
                        errors.push(format!("{at_c}: the changes must be in date order"));
                    }
                    last = Some(d);
                }
            }
            check_occupants(&at_c, &c.occupants, agencies, errors);
        }
        for (carrier, key) in &b.allocation {
            let at_k = format!("{at}: allocation of {}", carrier.as_str());
            match key {
                AllocationKey::Key(k) if k == "area" || k == "headcount" => {}
                AllocationKey::Key(k) => errors.push(format!("{at_k}: `{k}` is not one of area, headcount, or a table of fixed shares")),
                AllocationKey::Shares(m) => {
                    for (a, sh) in m {
                        if !agencies.contains(a) {
                            errors.push(format!("{at_k}: `{a}` is not an agency"));
                        }
                        if !(sh.is_finite() && *sh > 0.0 && *sh <= 1.0) {
                            errors.push(format!("{at_k}: share of `{a}` must be in (0, 1]"));
                        }
                    }
                    let sum: f64 = m.values().sum();
                    if (sum - 1.0).abs() > 1e-6 {
                        errors.push(format!("{at_k}: fixed shares add up to {sum}, not 1"));
                    }
                }
            }
        }
    }
}

/// Each meter's fields, its place in the sub-metering tree and its formula.
fn check_meters(f: &RegistryFile, agencies: &HashSet<String>, buildings: &HashSet<String>, errors: &mut Vec<String>) {
    let meter_ids: HashMap<&str, &Meter> = f.meters.iter().map(|m| (m.id.as_str(), m)).collect();
    for m in &f.meters {
        let at = format!("meter `{}`", m.id);
        check_meter_fields(&at, m, agencies, buildings, errors);
        if let Some(p) = &m.parent {
            check_parent(&at, m, p, &meter_ids, errors);
        }
        if let Some(formula) = &m.formula {
            check_formula(&at, m, formula, &meter_ids, errors);
        }
    }
}

/// A meter's building, agency, numbers, gateway and quantity.
fn check_meter_fields(at: &str, m: &Meter, agencies: &HashSet<String>, buildings: &HashSet<String>, errors: &mut Vec<String>) {
    if !buildings.contains(&m.building) {
        errors.push(format!("{at}: building `{}` is not a building", m.building));
    }
    if let Some(a) = &m.agency {
        if !agencies.contains(a) {
            errors.push(format!("{at}: agency `{a}` is not an agency"));
        }
    }
    if !(m.multiplier.is_finite() && m.multiplier > 0.0) {
        errors.push(format!("{at}: multiplier must be a positive number"));
    }
    if let Some(r) = m.rollover {
        if !(r.is_finite() && r > 0.0) {
            errors.push(format!("{at}: rollover must be a positive number (the largest value before the counter wraps)"));
        }
    }
    if let Some(x) = m.max_per_hour {
        if !(x.is_finite() && x > 0.0) {
            errors.push(format!("{at}: max_per_hour must be a positive number"));
        }
    }
    if let Some(g) = &m.gateway {
        if let Err(e) = energy_wire::validate_id(g) {
            errors.push(format!("{at}: gateway `{g}`: {e}"));
        }
        if m.formula.is_some() {
            errors.push(format!("{at}: a virtual meter (formula) takes no `gateway`: nothing sends its readings"));
        }
    }
    if let Some(q) = m.quantity {
        if !q.is_counter() {
            errors.push(format!("{at}: quantity `{q}` is not a counter; consumption needs a cumulative counter"));
        } else if !m.carrier.counters().iter().any(|c| c.unit() == q.unit()) {
            errors.push(format!("{at}: quantity `{q}` is in {}, but {} is accounted in {}", q.unit(), m.carrier.as_str(), m.carrier.counter().unit()));
        }
    }
}

/// A meter's parent: a meter of the same carrier and building, and no chain that loops.
fn check_parent(at: &str, m: &Meter, p: &str, meter_ids: &HashMap<&str, &Meter>, errors: &mut Vec<String>) {
    match meter_ids.get(p) {
        None => errors.push(format!("{at}: parent `{p}` is not a meter")),
        Some(pm) => {
            if pm.carrier != m.carrier {
                errors.push(format!("{at}: parent `{p}` measures {}, this meter {}", pm.carrier.as_str(), m.carrier.as_str()));
            }
            if pm.building != m.building {
                errors.push(format!("{at}: parent `{p}` is in building `{}`, this meter in `{}`", pm.building, m.building));
            }
        }
    }
    // Parent cycles.
    let mut cur = p;
    for _ in 0..=meter_ids.len() {
        if cur == m.id {
            errors.push(format!("{at}: the parent chain loops back to itself"));
            break;
        }
        match meter_ids.get(cur).and_then(|x| x.parent.as_deref()) {
            Some(n) => cur = n,
            None => break,
        }
    }
}

/// A virtual meter's formula: physical meters of its carrier, none counted twice.
fn check_formula(at: &str, m: &Meter, formula: &str, meter_ids: &HashMap<&str, &Meter>, errors: &mut Vec<String>) {
    if m.parent.is_some() {
        errors.push(format!("{at}: a virtual meter cannot have a parent"));
    }
    match parse_formula(formula) {
        Err(e) => errors.push(format!("{at}: {e}")),
        Ok(terms) => {
            for (id, _) in &terms {
                match meter_ids.get(id.as_str()) {
                    None => errors.push(format!("{at}: formula names `{id}`, which is not a meter")),
                    Some(o) if o.is_virtual() => errors.push(format!("{at}: formula names virtual meter `{id}`; use physical meters")),
                    Some(o) if o.carrier != m.carrier => {
                        errors.push(format!("{at}: formula names `{id}`, which measures {}, not {}", o.carrier.as_str(), m.carrier.as_str()))
                    }
                    Some(o) if m.accounted && o.accounted && o.parent.is_none() => errors.push(format!(
                        "{at}: `{id}` would be counted twice, directly and through this virtual meter; set `accounted = false` on one of them"
                    )),
                    Some(_) => {}
                }
            }
        }
    }
}

/// Each `[[event]]`: a meter of the registry, and an event its kind can take.
fn check_events(f: &RegistryFile, errors: &mut Vec<String>) {
    let meters: HashSet<&str> = f.meters.iter().map(|m| m.id.as_str()).collect();
    for e in &f.events {
        let at = format!("event of meter `{}` at {}", e.meter, e.time);
        if !meters.contains(e.meter.as_str()) {
            errors.push(format!("{at}: `{}` is not a meter", e.meter));
        }
        if let Err(msg) = EventRecord::try_from(e.clone()) {
            errors.push(format!("{at}: {msg}"));
        }
    }
}

/// The accounting parameters, grid factors, tariffs, quotas, budgets and reductions.
fn check_parameters(f: &RegistryFile, agencies: &HashSet<String>, errors: &mut Vec<String>) {
    let num = |what: String, v: f64, errors: &mut Vec<String>| {
        if !(v.is_finite() && v >= 0.0) {
            errors.push(format!("{what} must be a non-negative number"));
        }
    };
    for g in &f.grid_factors {
        num(format!("grid_factor {} {}", g.year, g.region), g.kg_per_kwh, errors);
    }
    if !merged_grid_factors(&f.grid_factors).iter().any(|g| g.region == f.accounting.grid_region) {
        errors.push(format!("accounting.grid_region `{}` has no grid_factor", f.accounting.grid_region));
    }
    if f.accounting.heating_season.parse().is_none() {
        errors.push(format!(
            "accounting.heating_season: `{}` to `{}` is not a pair of month-day dates such as \"11-01\" and \"03-31\"",
            f.accounting.heating_season.start, f.accounting.heating_season.end
        ));
    }
    if !(0.0..=1.0).contains(&f.accounting.complete_coverage) {
        errors.push("accounting.complete_coverage must be between 0 and 1".into());
    }
    for t in &f.tariffs {
        let at = format!("tariff of {}", t.carrier.as_str());
        num(format!("{at}: price"), t.price, errors);
        for band in &t.tou {
            if band.from > 23 || band.to > 24 {
                errors.push(format!("{at}: band {}-{} is not within the hours 0 to 24", band.from, band.to));
            }
            num(format!("{at}: band {}-{} price", band.from, band.to), band.price, errors);
        }
    }
    for q in &f.quotas {
        let at = format!("quota {} ({})", q.indicator.name(), q.source);
        if !(q.guide <= q.benchmark && q.benchmark <= q.binding) {
            errors.push(format!("{at}: values must rise from guide ({}) to benchmark ({}) to binding ({})", q.guide, q.benchmark, q.binding));
        }
    }
    for b in &f.budgets {
        let at = format!("budget of `{}` for {}", b.agency, b.year);
        if !agencies.contains(&b.agency) {
            errors.push(format!("{at}: `{}` is not an agency", b.agency));
        }
        for (c, v) in &b.carriers {
            num(format!("{at}: {}", c.as_str()), *v, errors);
        }
        if f.budgets.iter().filter(|o| o.agency == b.agency && o.year == b.year).count() > 1 {
            errors.push(format!("{at}: given twice"));
        }
    }
    for r in &f.reductions {
        let at = format!("reduction of {} from {}", r.indicator.name(), r.baseline_year);
        if let Some(a) = &r.agency {
            if !agencies.contains(a) {
                errors.push(format!("{at}: `{a}` is not an agency"));
            }
        }
        if r.target_year <= r.baseline_year {
            errors.push(format!("{at}: target_year {} must be after baseline_year", r.target_year));
        }
        if !(r.percent.is_finite() && r.percent > -100.0 && r.percent < 100.0) {
            errors.push(format!("{at}: percent must be between -100 and 100"));
        }
    }
}

/// Checks a list of occupants: agencies known, each once, all by share (adding up to 1) or all
/// by area.
fn check_occupants(at: &str, occupants: &[Occupant], agencies: &HashSet<String>, errors: &mut Vec<String>) {
    if occupants.is_empty() {
        errors.push(format!("{at}: no occupants; list the agencies with their shares or areas"));
    }
    let mut sum = 0.0;
    let mut seen = HashSet::new();
    let by_area = occupants.iter().filter(|o| o.area.is_some()).count();
    if by_area > 0 && by_area < occupants.len() {
        errors.push(format!("{at}: give every occupant a `share` or every occupant an `area`, not a mix"));
    }
    for o in occupants {
        if !agencies.contains(&o.agency) {
            errors.push(format!("{at}: occupant `{}` is not an agency", o.agency));
        }
        if !seen.insert(&o.agency) {
            errors.push(format!("{at}: occupant `{}` is listed twice", o.agency));
        }
        match o.area {
            Some(a) => {
                if !(a.is_finite() && a > 0.0) {
                    errors.push(format!("{at}: area of `{}` must be a positive number of m²", o.agency));
                }
                if o.share != 0.0 {
                    errors.push(format!("{at}: occupant `{}` has both a share and an area", o.agency));
                }
            }
            None => {
                if !(o.share.is_finite() && o.share > 0.0 && o.share <= 1.0) {
                    errors.push(format!("{at}: share of `{}` must be in (0, 1]", o.agency));
                }
                sum += o.share;
            }
        }
    }
    if by_area == 0 && !occupants.is_empty() && (sum - 1.0).abs() > 1e-6 {
        errors.push(format!("{at}: occupant shares add up to {sum}, not 1"));
    }
}
