//! Device profiles: a meter model's register map, kept as data in
//! `device-profiles/<vendor>/<model>.toml`.
//!
//! A profile's name is its path below the profile directory without the extension
//! (`eastron/sdm630`). The loader validates every file and reports every error at once.
//!
//! Beside the Modbus register maps: the MQTT meter profiles ([`mqtt`], below `mqtt/`), and the
//! rule by which DL/T 645 and CJ/T 188 profiles in the same folder are told apart
//! ([`is_field_profile`]; they are read by [`crate::field::profile`]).

mod codec;
mod load;
pub mod mqtt;
mod plan;

pub use codec::{decode, encode, Order, Raw, ValueType};
pub use load::{is_field_profile, load_dir, load_file, parse_profile, ProfileError, ProfileErrors, FIELD_PROTOCOLS};
pub(crate) use load::load_each;
pub use plan::{plan_reads, Block};

use energy_wire::Quantity;
use serde::{Deserialize, Serialize};

/// Modbus register table a register lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Function {
    /// Holding registers, read with function code 3.
    Holding,
    /// Input registers, read with function code 4.
    Input,
}

impl Function {
    pub fn code(self) -> u8 {
        match self {
            Function::Holding => 3,
            Function::Input => 4,
        }
    }
}

/// Which of the device's instrument-transformer ratios multiplies a register's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Ratio {
    #[default]
    None,
    /// Current transformer ratio (currents).
    Ct,
    /// Voltage transformer ratio (voltages).
    Pt,
    /// Both (powers and energies).
    CtPt,
}

impl Ratio {
    /// The factor a value marked with this ratio is multiplied by, given the device's current
    /// (`ct`) and voltage (`pt`) transformer ratios.
    pub fn factor(self, ct: f64, pt: f64) -> f64 {
        match self {
            Ratio::None => 1.0,
            Ratio::Ct => ct,
            Ratio::Pt => pt,
            Ratio::CtPt => ct * pt,
        }
    }

    /// As the profiles write it.
    pub fn name(self) -> &'static str {
        match self {
            Ratio::None => "none",
            Ratio::Ct => "ct",
            Ratio::Pt => "pt",
            Ratio::CtPt => "ct_pt",
        }
    }
}

/// One value in a device's register map.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Register {
    pub quantity: Quantity,
    #[serde(default = "default_function")]
    pub function: Function,
    /// Protocol address, 0-based (register 30001 in a manual is address 0).
    pub address: u16,
    #[serde(rename = "type")]
    pub ty: ValueType,
    #[serde(default)]
    pub order: Option<Order>,
    /// value = raw * scale + offset, in the quantity's contract unit.
    #[serde(default = "one")]
    pub scale: f64,
    #[serde(default)]
    pub offset: f64,
    /// The unit after scaling; must be the quantity's contract unit.
    pub unit: String,
    /// Raw values that mean "not available" (for example 65535 or -32768).
    #[serde(default)]
    pub not_available: Vec<f64>,
    #[serde(default)]
    pub ratio: Ratio,
    /// Address of a scale-factor register (SunSpec style) in the same table: a signed 16-bit
    /// power of ten, so that value = raw x 10^sf x scale + offset. Its "not implemented" value
    /// 0x8000 makes the value missing.
    #[serde(default)]
    pub scale_factor: Option<u16>,
}

impl Register {
    pub fn end(&self) -> u32 {
        u32::from(self.address) + u32::from(self.ty.registers())
    }

    /// Turns registers into a value in the contract unit; `None` for NaN, infinities and the
    /// profile's "not available" sentinels (never 0). A register with a scale factor needs
    /// [`Register::value_with_sf`].
    pub fn value(&self, regs: &[u16], default_order: Order, ct: f64, pt: f64) -> Option<f64> {
        self.value_with_sf(regs, default_order, None, ct, pt)
    }

    /// [`Register::value`] with the raw content of the register's scale-factor register, if it
    /// has one. `None` also when the scale factor is missing, "not implemented" (0x8000) or
    /// outside -10..=10.
    pub fn value_with_sf(&self, regs: &[u16], default_order: Order, sf: Option<u16>, ct: f64, pt: f64) -> Option<f64> {
        let power = match (self.scale_factor, sf) {
            (None, _) => 0,
            (Some(_), Some(raw)) => scale_factor_power(raw)?,
            (Some(_), None) => return None,
        };
        let raw = decode(regs, self.ty, self.order.unwrap_or(default_order));
        let r = raw.as_f64();
        if !r.is_finite() || self.not_available.contains(&r) {
            return None;
        }
        let r = r * 10f64.powi(power);
        let v = (r * self.scale + self.offset) * self.ratio.factor(ct, pt);
        v.is_finite().then_some(v)
    }

    /// Registers that a device would send for `value` (used by simulated meters and tests).
    pub fn encode_value(&self, value: f64, default_order: Order) -> Vec<u16> {
        encode((value - self.offset) / self.scale, self.ty, self.order.unwrap_or(default_order))
    }
}

/// The power of ten a scale-factor register holds; `None` for "not implemented" (0x8000) and
/// values outside -10..=10, which no meter uses and which mean a wrong address.
pub fn scale_factor_power(raw: u16) -> Option<i32> {
    let sf = raw as i16;
    (-10..=10).contains(&sf).then_some(i32::from(sf))
}

fn default_function() -> Function {
    Function::Holding
}

fn one() -> f64 {
    1.0
}

/// Limits of how a device may be read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Most registers in one read (at most 125, the protocol's limit).
    #[serde(default = "default_max_registers")]
    pub max_registers: u16,
    /// Most unused registers a read may span between two wanted ones.
    #[serde(default = "default_max_gap")]
    pub max_gap: u16,
    /// Addresses that a read never spans across (a read may start at one).
    #[serde(default)]
    pub boundaries: Vec<u16>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_registers: default_max_registers(), max_gap: default_max_gap(), boundaries: Vec::new() }
    }
}

fn default_max_registers() -> u16 {
    125
}

fn default_max_gap() -> u16 {
    16
}

/// A device model's register map.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// `vendor/model`, filled in from the file's path.
    #[serde(default, skip_deserializing)]
    pub name: String,
    pub vendor: String,
    pub model: String,
    #[serde(default)]
    pub description: String,
    /// The published register map this profile was checked against (manual name and version).
    pub source: String,
    /// Byte/word order of registers that do not give their own.
    #[serde(default)]
    pub order: Order,
    #[serde(default)]
    pub limits: Limits,
    #[serde(rename = "register")]
    pub registers: Vec<Register>,
}
