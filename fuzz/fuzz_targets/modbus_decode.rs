//! Decoding Modbus answers into values: the registers a device sends (any 16-bit words) are
//! decoded through a shipped profile's read plan exactly as the poller does, and through every
//! value type and word order. A value is a finite number or missing, never a panic or a NaN.
#![no_main]

use std::sync::OnceLock;

use energy_gateway::poll::decode_answers;
use energy_gateway::profile::{decode, parse_profile, plan_reads, Block, Order, Profile, ValueType};
use libfuzzer_sys::fuzz_target;

/// Shipped profiles with different types, orders and scale factors.
const PROFILES: &[(&str, &str)] = &[
    ("eastron/sdm630", include_str!("../../device-profiles/eastron/sdm630.toml")),
    ("siemens/mag6000", include_str!("../../device-profiles/siemens/mag6000.toml")),
    ("aquametro/calec-st", include_str!("../../device-profiles/aquametro/calec-st.toml")),
    ("janitza/umg96rm", include_str!("../../device-profiles/janitza/umg96rm.toml")),
    ("schneider/iem3255", include_str!("../../device-profiles/schneider/iem3255.toml")),
];
/// The profiles parsed and planned once (parsing TOML on every input would dominate the run).
fn profiles() -> &'static [(Profile, Vec<Block>)] {
    static PARSED: OnceLock<Vec<(Profile, Vec<Block>)>> = OnceLock::new();
    PARSED.get_or_init(|| {
        PROFILES
            .iter()
            .map(|(name, text)| {
                let p = parse_profile(name, name, text).unwrap_or_else(|e| panic!("shipped profile {name} does not parse: {e:?}"));
                let plan = plan_reads(&p.registers, &p.limits);
                (p, plan)
            })
            .collect()
    })
}

const TYPES: [ValueType; 8] =
    [ValueType::U16, ValueType::I16, ValueType::U32, ValueType::I32, ValueType::U64, ValueType::I64, ValueType::F32, ValueType::F64];
const ORDERS: [Order; 4] = [Order::ABCD, Order::DCBA, Order::BADC, Order::CDAB];

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else { return };
    let words: Vec<u16> = rest.chunks(2).map(|c| u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])).collect();
    if words.is_empty() {
        return;
    }
    for ty in TYPES {
        for order in ORDERS {
            let n = usize::from(ty.registers());
            let regs: Vec<u16> = (0..n).map(|i| words[i % words.len()]).collect();
            let _ = decode(&regs, ty, order).as_f64();
        }
    }
    let (profile, plan) = &profiles()[usize::from(pick) % PROFILES.len()];
    let name = &profile.name;
    let mut next = words.iter().copied().cycle();
    let answers: Vec<_> = plan
        .iter()
        .map(|b| {
            let regs: Vec<u16> = next.by_ref().take(usize::from(b.count)).collect();
            (b.clone(), regs)
        })
        .collect();
    let ct = f64::from(pick % 7 + 1) * 5.0;
    let (values, _unavailable) = decode_answers(profile, &answers, ct, 1.0);
    for (q, v) in values {
        assert!(v.is_finite(), "{name}: {q:?} decoded to {v}");
    }
});
