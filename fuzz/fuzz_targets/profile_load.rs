//! Device profile loading (TOML → validated register map) and read planning: any text gives a
//! profile or a list of errors; a valid profile's plan covers every register within its limits.
#![no_main]

use energy_gateway::profile::{parse_profile, plan_reads};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(profile) = parse_profile("fuzz/profile", "fuzz/profile.toml", text) else { return };
    let plan = plan_reads(&profile.registers, &profile.limits);
    let mut covered = vec![false; profile.registers.len()];
    for b in &plan {
        assert!(b.count >= 1 && b.count <= profile.limits.max_registers.max(1), "block of {} registers", b.count);
        for &i in &b.registers {
            let r = &profile.registers[i];
            assert!(r.address >= b.address && r.end() <= b.end(), "register {} outside its block", r.address);
            covered[i] = true;
        }
    }
    assert!(covered.iter().all(|c| *c), "a register is in no read");
});
