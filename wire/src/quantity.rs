//! Quantity names, units and kinds: one name for one thing, everywhere.

use std::fmt;
use std::str::FromStr;

/// Whether a quantity is a cumulative counter (consumption is a difference of two readings) or
/// a gauge (an instantaneous value).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Counter,
    Gauge,
}

/// Energy carrier a counter quantity measures, where it measures one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Carrier {
    Electricity,
    Water,
    NaturalGas,
    DistrictHeat,
    /// Low-pressure steam bought from a supplier.
    Steam,
    Diesel,
    Gasoline,
    FuelOil,
    Lpg,
    Coal,
}

impl Carrier {
    pub const ALL: [Carrier; 10] = [
        Carrier::Electricity,
        Carrier::Water,
        Carrier::NaturalGas,
        Carrier::DistrictHeat,
        Carrier::Steam,
        Carrier::Diesel,
        Carrier::Gasoline,
        Carrier::FuelOil,
        Carrier::Lpg,
        Carrier::Coal,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Carrier::Electricity => "electricity",
            Carrier::Water => "water",
            Carrier::NaturalGas => "natural_gas",
            Carrier::DistrictHeat => "district_heat",
            Carrier::Steam => "steam",
            Carrier::Diesel => "diesel",
            Carrier::Gasoline => "gasoline",
            Carrier::FuelOil => "fuel_oil",
            Carrier::Lpg => "lpg",
            Carrier::Coal => "coal",
        }
    }

    /// The counter quantity that measures this carrier's consumption by default.
    pub fn counter(self) -> Quantity {
        match self {
            Carrier::Electricity => Quantity::ActiveEnergyImport,
            Carrier::Water => Quantity::WaterVolume,
            Carrier::NaturalGas => Quantity::GasVolume,
            Carrier::DistrictHeat => Quantity::HeatEnergy,
            Carrier::Steam => Quantity::SteamMass,
            Carrier::Diesel | Carrier::Gasoline | Carrier::FuelOil => Quantity::FuelVolume,
            Carrier::Lpg | Carrier::Coal => Quantity::FuelMass,
        }
    }

    /// Counter quantities that may measure this carrier: liquid fuels are metered in litres or
    /// weighed in kg (a density converts litres).
    pub fn counters(self) -> &'static [Quantity] {
        match self {
            Carrier::Electricity => &[Quantity::ActiveEnergyImport],
            Carrier::Water => &[Quantity::WaterVolume],
            Carrier::NaturalGas => &[Quantity::GasVolume],
            Carrier::DistrictHeat => &[Quantity::HeatEnergy],
            Carrier::Steam => &[Quantity::SteamMass],
            Carrier::Diesel | Carrier::Gasoline | Carrier::FuelOil => &[Quantity::FuelVolume, Quantity::FuelMass],
            Carrier::Lpg | Carrier::Coal => &[Quantity::FuelMass],
        }
    }
}

impl FromStr for Carrier {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Carrier::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| format!("unknown carrier `{s}` (known: {})", Carrier::ALL.map(Carrier::as_str).join(", ")))
    }
}

macro_rules! quantities {
    ($( $variant:ident => $name:literal, $unit:literal, $kind:ident; )*) => {
        /// A measured quantity. Its [`name`](Quantity::name) is the contract.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Quantity { $( $variant, )* }

        impl Quantity {
            /// Every quantity, in a stable order.
            pub const ALL: &'static [Quantity] = &[ $( Quantity::$variant, )* ];

            /// The contract name, as used in profiles, wire, storage, API and dashboards.
            pub fn name(self) -> &'static str {
                match self { $( Quantity::$variant => $name, )* }
            }

            /// The unit every value of this quantity is expressed in, after scaling.
            /// An empty string means dimensionless.
            pub fn unit(self) -> &'static str {
                match self { $( Quantity::$variant => $unit, )* }
            }

            pub fn kind(self) -> Kind {
                match self { $( Quantity::$variant => Kind::$kind, )* }
            }
        }
    };
}

quantities! {
    ActiveEnergyImport => "active_energy_import", "kWh", Counter;
    ActiveEnergyExport => "active_energy_export", "kWh", Counter;
    ReactiveEnergyImport => "reactive_energy_import", "kvarh", Counter;
    ReactiveEnergyExport => "reactive_energy_export", "kvarh", Counter;
    ActivePower => "active_power", "kW", Gauge;
    ActivePowerL1 => "active_power_l1", "kW", Gauge;
    ActivePowerL2 => "active_power_l2", "kW", Gauge;
    ActivePowerL3 => "active_power_l3", "kW", Gauge;
    ReactivePower => "reactive_power", "kvar", Gauge;
    ApparentPower => "apparent_power", "kVA", Gauge;
    VoltageL1 => "voltage_l1", "V", Gauge;
    VoltageL2 => "voltage_l2", "V", Gauge;
    VoltageL3 => "voltage_l3", "V", Gauge;
    CurrentL1 => "current_l1", "A", Gauge;
    CurrentL2 => "current_l2", "A", Gauge;
    CurrentL3 => "current_l3", "A", Gauge;
    PowerFactor => "power_factor", "", Gauge;
    Frequency => "frequency", "Hz", Gauge;
    WaterVolume => "water_volume", "m³", Counter;
    GasVolume => "gas_volume", "m³", Counter;
    HeatEnergy => "heat_energy", "GJ", Counter;
    HeatVolume => "heat_volume", "m³", Counter;
    HeatPower => "heat_power", "kW", Gauge;
    FlowRate => "flow_rate", "m³/h", Gauge;
    SupplyTemperature => "supply_temperature", "°C", Gauge;
    ReturnTemperature => "return_temperature", "°C", Gauge;
    OutdoorTemperature => "outdoor_temperature", "°C", Gauge;
    FuelVolume => "fuel_volume", "L", Counter;
    FuelMass => "fuel_mass", "kg", Counter;
    SteamMass => "steam_mass", "kg", Counter;
}

impl Quantity {
    /// Whether this quantity is a cumulative counter.
    pub fn is_counter(self) -> bool {
        self.kind() == Kind::Counter
    }

    /// The carrier whose consumption this counter measures, if any.
    pub fn carrier(self) -> Option<Carrier> {
        match self {
            Quantity::ActiveEnergyImport => Some(Carrier::Electricity),
            Quantity::WaterVolume => Some(Carrier::Water),
            Quantity::GasVolume => Some(Carrier::NaturalGas),
            Quantity::HeatEnergy => Some(Carrier::DistrictHeat),
            Quantity::SteamMass => Some(Carrier::Steam),
            _ => None,
        }
    }

    /// The unit of a counter's rate, e.g. kW for kWh, m³/h for m³.
    pub fn rate_unit(self) -> Option<&'static str> {
        match self.unit() {
            "kWh" => Some("kW"),
            "kvarh" => Some("kvar"),
            "m³" => Some("m³/h"),
            "GJ" => Some("GJ/h"),
            "L" => Some("L/h"),
            "kg" => Some("kg/h"),
            _ => None,
        }
    }
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A quantity name that is not in the contract.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown quantity `{0}` (the quantity names are listed in the README's contract section)")]
pub struct UnknownQuantity(pub String);

impl FromStr for Quantity {
    type Err = UnknownQuantity;
    fn from_str(s: &str) -> Result<Self, UnknownQuantity> {
        Quantity::ALL
            .iter()
            .copied()
            .find(|q| q.name() == s)
            .ok_or_else(|| UnknownQuantity(s.chars().take(80).collect()))
    }
}

impl serde::Serialize for Quantity {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> serde::Deserialize<'de> for Quantity {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Quantity;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a quantity name such as `active_energy_import`")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Quantity, E> {
                v.parse().map_err(E::custom)
            }
        }
        d.deserialize_str(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contract_names_units_and_kinds() {
        // The contract of issue 2, written out by hand.
        let table: &[(&str, &str, Kind)] = &[
            ("active_energy_import", "kWh", Kind::Counter),
            ("active_energy_export", "kWh", Kind::Counter),
            ("reactive_energy_import", "kvarh", Kind::Counter),
            ("active_power", "kW", Kind::Gauge),
            ("voltage_l1", "V", Kind::Gauge),
            ("voltage_l2", "V", Kind::Gauge),
            ("voltage_l3", "V", Kind::Gauge),
            ("current_l1", "A", Kind::Gauge),
            ("current_l2", "A", Kind::Gauge),
            ("current_l3", "A", Kind::Gauge),
            ("power_factor", "", Kind::Gauge),
            ("frequency", "Hz", Kind::Gauge),
            ("water_volume", "m³", Kind::Counter),
            ("gas_volume", "m³", Kind::Counter),
            ("heat_energy", "GJ", Kind::Counter),
            ("heat_power", "kW", Kind::Gauge),
            ("flow_rate", "m³/h", Kind::Gauge),
            ("supply_temperature", "°C", Kind::Gauge),
            ("return_temperature", "°C", Kind::Gauge),
            ("outdoor_temperature", "°C", Kind::Gauge),
            ("fuel_volume", "L", Kind::Counter),
            ("fuel_mass", "kg", Kind::Counter),
            ("steam_mass", "kg", Kind::Counter),
        ];
        for (name, unit, kind) in table {
            let q: Quantity = name.parse().unwrap();
            assert_eq!(q.name(), *name);
            assert_eq!(q.unit(), *unit, "{name}");
            assert_eq!(q.kind(), *kind, "{name}");
        }
    }

    #[test]
    fn names_are_unique_and_round_trip() {
        let mut seen = std::collections::HashSet::new();
        for q in Quantity::ALL {
            assert!(seen.insert(q.name()), "duplicate {}", q.name());
            assert_eq!(q.name().parse::<Quantity>().unwrap(), *q);
            let json = serde_json::to_string(q).unwrap();
            assert_eq!(serde_json::from_str::<Quantity>(&json).unwrap(), *q);
        }
    }

    #[test]
    fn unknown_quantity_is_named() {
        let e = "active_energy".parse::<Quantity>().unwrap_err();
        assert!(e.to_string().contains("`active_energy`"));
    }

    #[test]
    fn carriers_map_to_counters() {
        for c in Carrier::ALL {
            // Fuels share their counters; the others name their carrier.
            if c.counters().len() == 1 && c.counter() != Quantity::FuelMass {
                assert_eq!(c.counter().carrier(), Some(c));
            }
            assert!(c.counters().contains(&c.counter()));
            assert!(c.counters().iter().all(|q| q.is_counter()));
            assert!(c.counter().is_counter());
            assert_eq!(c.as_str().parse::<Carrier>().unwrap(), c);
        }
    }
}
