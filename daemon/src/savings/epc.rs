//! What an energy performance contract (合同能源管理) settles for a period, from the verified
//! savings (GB/T 24915 names the three contract types: 节能效益分享型 shared savings,
//! 节能量保证型 guaranteed savings, 能源费用托管型 energy cost hosting).

use serde::Serialize;

use crate::registry::ContractType;

/// A period's settlement, in money (yuan).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Settlement {
    pub contract_type: ContractType,
    /// The verified savings valued at the contract price.
    pub savings_value: f64,
    /// Due to the energy service company from the agency (shared savings: its share of the
    /// savings; hosting: the adjusted-baseline energy cost it took over). Never negative.
    pub due_to_esco: f64,
    /// Due from the energy service company (guaranteed savings: the shortfall below the
    /// guarantee, valued at the price).
    pub due_from_esco: f64,
}

/// Settles one period. `avoided` and `predicted` are in the carrier's unit, `price` per unit,
/// `share` the company's share of shared savings (0..=1), `guaranteed` the guaranteed savings
/// of the period in the carrier's unit.
pub fn settle(kind: ContractType, avoided: f64, predicted: f64, price: f64, share: f64, guaranteed: f64) -> Settlement {
    let savings_value = avoided * price;
    let (due_to_esco, due_from_esco) = match kind {
        ContractType::SharedSavings => (share * savings_value.max(0.0), 0.0),
        ContractType::GuaranteedSavings => (0.0, (guaranteed - avoided).max(0.0) * price),
        ContractType::EnergyCostHosting => ((predicted * price).max(0.0), 0.0),
        ContractType::Retrofit => (0.0, 0.0),
    };
    Settlement { contract_type: kind, savings_value, due_to_esco, due_from_esco }
}
