//! Loading and validating profiles; every problem of every file is reported at once.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use super::{Profile, Register};

/// One problem in one profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProfileError {
    pub file: String,
    pub message: String,
}

impl fmt::Display for ProfileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.file, self.message)
    }
}

/// Every problem found, one per line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ProfileErrors(pub Vec<ProfileError>);

impl fmt::Display for ProfileErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// Parses and validates one profile's text. `name` is its `vendor/model` name, `file` the path
/// used in messages.
pub fn parse_profile(name: &str, file: &str, text: &str) -> Result<Profile, Vec<ProfileError>> {
    let err = |message: String| ProfileError { file: file.to_string(), message };
    let mut profile: Profile = toml::from_str(text).map_err(|e| vec![err(e.to_string().trim_end().replace('\n', " "))])?;
    profile.name = name.to_string();
    let errors: Vec<ProfileError> = validate(&profile).into_iter().map(err).collect();
    if errors.is_empty() {
        Ok(profile)
    } else {
        Err(errors)
    }
}

fn validate(p: &Profile) -> Vec<String> {
    let mut errors = Vec::new();
    if p.source.trim().is_empty() {
        errors.push("`source` must name the published register map (manual and version)".into());
    }
    if p.registers.is_empty() {
        errors.push("the profile has no [[register]]".into());
    }
    if p.limits.max_registers == 0 || p.limits.max_registers > 125 {
        errors.push(format!("limits.max_registers = {} is outside 1..=125", p.limits.max_registers));
    }
    let mut quantities = BTreeMap::new();
    for (i, r) in p.registers.iter().enumerate() {
        let at = format!("register[{i}] ({})", r.quantity);
        if r.unit != r.quantity.unit() {
            errors.push(format!(
                "{at}: unit `{}` does not match the quantity's unit `{}`",
                r.unit,
                r.quantity.unit()
            ));
        }
        if r.end() > 65_536 {
            errors.push(format!("{at}: address {} + {} registers runs past 65535", r.address, r.ty.registers()));
        }
        if u32::from(r.ty.registers()) > u32::from(p.limits.max_registers) {
            errors.push(format!("{at}: its {} registers exceed limits.max_registers", r.ty.registers()));
        }
        if !r.scale.is_finite() || r.scale == 0.0 {
            errors.push(format!("{at}: scale must be a finite, non-zero number"));
        }
        if !r.offset.is_finite() {
            errors.push(format!("{at}: offset must be finite"));
        }
        for &b in &p.limits.boundaries {
            if u32::from(r.address) < u32::from(b) && u32::from(b) < r.end() {
                errors.push(format!("{at}: limits.boundaries has {b}, inside this register"));
            }
        }
        if let Some(sf) = r.scale_factor {
            if let Some((j, o)) =
                p.registers.iter().enumerate().find(|(_, o)| o.function == r.function && o.address <= sf && u32::from(sf) < o.end())
            {
                errors.push(format!("{at}: scale_factor address {sf} is inside register[{j}] ({})", o.quantity));
            }
        }
        if let Some(j) = quantities.insert(r.quantity, i) {
            errors.push(format!("{at}: quantity {} is already read by register[{j}]", r.quantity));
        }
    }
    // Overlaps, per register table.
    let mut sorted: Vec<(usize, &Register)> = p.registers.iter().enumerate().collect();
    sorted.sort_by_key(|(_, r)| (r.function, r.address));
    for w in sorted.windows(2) {
        let ((i, a), (j, b)) = (w[0], w[1]);
        if a.function == b.function && a.end() > u32::from(b.address) {
            errors.push(format!(
                "register[{j}] ({}) at address {} overlaps register[{i}] ({}) at {}..{}",
                b.quantity,
                b.address,
                a.quantity,
                a.address,
                a.end()
            ));
        }
    }
    errors
}

/// Loads one file; its name is derived from its path relative to `root`.
pub fn load_file(root: &Path, path: &Path) -> Result<Profile, Vec<ProfileError>> {
    let file = path.display().to_string();
    let name = profile_name(root, path);
    let text = std::fs::read_to_string(path)
        .map_err(|e| vec![ProfileError { file: file.clone(), message: format!("cannot read: {e}") }])?;
    parse_profile(&name, &file, &text)
}

pub(crate) fn profile_name(root: &Path, path: &Path) -> String {
    let rel = path.strip_prefix(root).unwrap_or(path).with_extension("");
    rel.components().map(|c| c.as_os_str().to_string_lossy().into_owned()).collect::<Vec<_>>().join("/")
}

pub(crate) fn toml_files(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            toml_files(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "toml") {
            out.push(path);
        }
    }
    Ok(())
}

/// The `protocol` values of DL/T 645 and CJ/T 188 profiles ([`crate::field::profile`]), which
/// share the profiles' folder with the Modbus profiles.
pub const FIELD_PROTOCOLS: [&str; 3] = ["dlt645-2007", "dlt645-1997", "cjt188"];

/// Whether a profile file is a DL/T 645 or CJ/T 188 profile (its `protocol` names one).
pub fn is_field_profile(text: &str) -> bool {
    toml::from_str::<toml::Table>(text)
        .ok()
        .and_then(|t| t.get("protocol").and_then(|p| p.as_str().map(|s| FIELD_PROTOCOLS.contains(&s))))
        .unwrap_or(false)
}

/// Loads every `*.toml` Modbus profile below `dir` (the `mqtt/` folder holds MQTT mappings and
/// files with a field-bus `protocol` are DL/T 645 or CJ/T 188 profiles; both are skipped), sorted
/// by name. Either all load, or every error is returned.
pub fn load_dir(dir: &Path) -> Result<BTreeMap<String, Profile>, ProfileErrors> {
    load_each(
        dir,
        |rel, text| {
            !(rel.components().next().is_some_and(|c| c.as_os_str() == "mqtt") || text.is_some_and(is_field_profile))
        },
        parse_profile,
    )
}

/// Loads every `*.toml` below `dir` that `wanted(path relative to dir, text)` accepts (text `None`
/// when the file cannot be read: then it is reported if wanted), parsed by `parse(name, file,
/// text)`, sorted by name. Either all load, or every error is returned.
pub(crate) fn load_each<T>(
    dir: &Path,
    wanted: impl Fn(&Path, Option<&str>) -> bool,
    parse: impl Fn(&str, &str, &str) -> Result<T, Vec<ProfileError>>,
) -> Result<BTreeMap<String, T>, ProfileErrors> {
    let mut files = Vec::new();
    if let Err(e) = toml_files(dir, &mut files) {
        return Err(ProfileErrors(vec![ProfileError { file: dir.display().to_string(), message: format!("cannot list profiles: {e}") }]));
    }
    files.sort();
    let (mut out, mut errors) = (BTreeMap::new(), Vec::new());
    for f in files {
        let rel = f.strip_prefix(dir).unwrap_or(&f);
        let file = f.display().to_string();
        let text = std::fs::read_to_string(&f);
        if !wanted(rel, text.as_deref().ok()) {
            continue;
        }
        let name = profile_name(dir, &f);
        match text {
            Err(e) => errors.push(ProfileError { file, message: format!("cannot read: {e}") }),
            Ok(text) => match parse(&name, &file, &text) {
                Ok(p) => {
                    out.insert(name, p);
                }
                Err(e) => errors.extend(e),
            },
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(ProfileErrors(errors))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
vendor = "Test"
model = "T1"
source = "Test manual v1"
[[register]]
quantity = "voltage_l1"
function = "input"
address = 0
type = "f32"
unit = "V"
[[register]]
quantity = "active_energy_import"
function = "input"
address = 2
type = "u32"
scale = 0.01
unit = "kWh"
"#;

    #[test]
    fn a_good_profile_loads() {
        let p = parse_profile("test/t1", "t1.toml", GOOD).unwrap();
        assert_eq!(p.name, "test/t1");
        assert_eq!(p.registers.len(), 2);
        assert_eq!(p.limits.max_registers, 125);
    }

    #[test]
    fn every_error_is_reported_at_once() {
        let bad = r#"
vendor = "Test"
model = "T1"
source = ""
limits = { max_registers = 200 }
[[register]]
quantity = "voltage_l1"
address = 0
type = "f32"
unit = "kV"
[[register]]
quantity = "current_l1"
address = 1
type = "u16"
unit = "A"
scale = 0
[[register]]
quantity = "voltage_l1"
address = 10
type = "u16"
unit = "V"
"#;
        let errs = parse_profile("t", "t.toml", bad).unwrap_err();
        let text = errs.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n");
        for expected in [
            "`source` must name",
            "max_registers = 200",
            "unit `kV` does not match the quantity's unit `V`",
            "scale must be a finite, non-zero number",
            "quantity voltage_l1 is already read by register[0]",
            "overlaps register[0] (voltage_l1)",
        ] {
            assert!(text.contains(expected), "missing `{expected}` in:\n{text}");
        }
        assert!(errs.iter().all(|e| e.file == "t.toml"));
    }

    #[test]
    fn a_scale_factor_inside_a_value_is_refused() {
        let text = GOOD.replace("scale = 0.01", "scale_factor = 1");
        let errs = parse_profile("t", "t.toml", &text).unwrap_err();
        assert!(errs[0].message.contains("scale_factor address 1 is inside register[0] (voltage_l1)"), "{}", errs[0]);
        assert!(parse_profile("t", "t.toml", &GOOD.replace("scale = 0.01", "scale_factor = 9")).is_ok());
    }

    #[test]
    fn unknown_quantity_and_syntax_errors_name_the_file() {
        let errs = parse_profile("t", "x.toml", &GOOD.replace("voltage_l1", "volts")).unwrap_err();
        assert!(errs[0].to_string().starts_with("x.toml: "));
        assert!(errs[0].to_string().contains("unknown quantity `volts`"), "{}", errs[0]);
    }
}
