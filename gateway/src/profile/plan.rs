//! Request planning: the fewest reads that cover a profile's registers within the device's
//! limits. One pass over the registers sorted by address (linear after the sort).
//!
//! Rule: registers of one table are taken in address order; a register joins the current read
//! when the read stays within `max_registers`, the unused span before the register is at most
//! `max_gap`, and no boundary lies strictly inside the extended read. Otherwise a new read starts.

use super::{Function, Limits, Register};

/// One read request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    pub function: Function,
    pub address: u16,
    pub count: u16,
    /// Indexes into the profile's register list of the registers this read covers.
    pub registers: Vec<usize>,
    /// Addresses of scale-factor registers this read covers.
    pub scale_factors: Vec<u16>,
}

impl Block {
    pub fn end(&self) -> u32 {
        u32::from(self.address) + u32::from(self.count)
    }
}

/// What a read must cover: a profile register, or a scale-factor register some of them use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Item {
    Register(usize),
    ScaleFactor(u16),
}

/// Plans reads for `registers` (and the scale-factor registers they name) under `limits`.
pub fn plan_reads(registers: &[Register], limits: &Limits) -> Vec<Block> {
    let mut items: Vec<(Function, u16, u16, Item)> =
        registers.iter().enumerate().map(|(i, r)| (r.function, r.address, r.ty.registers(), Item::Register(i))).collect();
    let mut sfs: Vec<(Function, u16)> = registers.iter().filter_map(|r| r.scale_factor.map(|a| (r.function, a))).collect();
    sfs.sort_unstable();
    sfs.dedup();
    items.extend(sfs.into_iter().map(|(f, a)| (f, a, 1, Item::ScaleFactor(a))));
    items.sort_by_key(|&(f, a, _, item)| (f, a, item));
    let max = u32::from(limits.max_registers.clamp(1, 125));
    let mut boundaries: Vec<u32> = limits.boundaries.iter().map(|&b| u32::from(b)).collect();
    boundaries.sort_unstable();
    let crosses = |start: u32, end: u32| {
        // Any boundary b with start < b < end. Binary search keeps this O(log b).
        let i = boundaries.partition_point(|&b| b <= start);
        boundaries.get(i).is_some_and(|&b| b < end)
    };
    let mut blocks: Vec<Block> = Vec::new();
    for (function, address, len, item) in items {
        let (start, end) = (u32::from(address), u32::from(address) + u32::from(len));
        if let Some(b) = blocks.last_mut() {
            let b_end = b.end();
            let fits = b.function == function
                && start >= u32::from(b.address)
                && end.max(b_end) - u32::from(b.address) <= max
                && start.saturating_sub(b_end) <= u32::from(limits.max_gap)
                && !crosses(u32::from(b.address), end.max(b_end));
            if fits {
                b.count = (end.max(b_end) - u32::from(b.address)) as u16;
                b.add(item);
                continue;
            }
        }
        let mut b = Block { function, address, count: len, registers: Vec::new(), scale_factors: Vec::new() };
        b.add(item);
        blocks.push(b);
    }
    blocks
}

impl Block {
    fn add(&mut self, item: Item) {
        match item {
            Item::Register(i) => self.registers.push(i),
            Item::ScaleFactor(a) => self.scale_factors.push(a),
        }
    }

    /// This block as single reads: one per register and scale factor it covers (what a device
    /// that refuses the whole block is asked instead).
    pub fn split(&self, registers: &[Register]) -> Vec<Block> {
        let one = |address, count, registers, scale_factors| Block { function: self.function, address, count, registers, scale_factors };
        let mut out: Vec<Block> =
            self.registers.iter().map(|&i| one(registers[i].address, registers[i].ty.registers(), vec![i], vec![])).collect();
        out.extend(self.scale_factors.iter().map(|&a| one(a, 1, vec![], vec![a])));
        out.sort_by_key(|b| b.address);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::{Ratio, ValueType};
    use energy_wire::Quantity;
    use proptest::prelude::*;

    fn reg(function: Function, address: u16, ty: ValueType) -> Register {
        Register {
            quantity: Quantity::ActivePower,
            function,
            address,
            ty,
            order: None,
            scale: 1.0,
            offset: 0.0,
            unit: "kW".into(),
            not_available: vec![],
            ratio: Ratio::None,
            scale_factor: None,
        }
    }

    fn spans(blocks: &[Block]) -> Vec<(u16, u16)> {
        blocks.iter().map(|b| (b.address, b.count)).collect()
    }

    #[test]
    fn worked_examples() {
        use Function::Input as I;
        use ValueType::F32;
        let limits = Limits { max_registers: 10, max_gap: 2, boundaries: vec![] };
        // Contiguous floats at 0,2,4 -> one read of 6.
        assert_eq!(spans(&plan_reads(&[reg(I, 0, F32), reg(I, 2, F32), reg(I, 4, F32)], &limits)), vec![(0, 6)]);
        // Gap of 2 is bridged, gap of 3 is not.
        assert_eq!(spans(&plan_reads(&[reg(I, 0, F32), reg(I, 4, F32)], &limits)), vec![(0, 6)]);
        assert_eq!(spans(&plan_reads(&[reg(I, 0, F32), reg(I, 5, F32)], &limits)), vec![(0, 2), (5, 2)]);
        // max_registers = 10: 0..10 fits, 0..12 does not.
        assert_eq!(spans(&plan_reads(&[reg(I, 0, F32), reg(I, 8, F32)], &Limits { max_gap: 10, ..limits.clone() })), vec![(0, 10)]);
        assert_eq!(
            spans(&plan_reads(&[reg(I, 0, F32), reg(I, 10, F32)], &Limits { max_gap: 10, ..limits.clone() })),
            vec![(0, 2), (10, 2)]
        );
        // A boundary at 4 splits a read that would span it, but a read may start at it.
        let bounded = Limits { boundaries: vec![4], ..limits.clone() };
        assert_eq!(spans(&plan_reads(&[reg(I, 0, F32), reg(I, 2, F32), reg(I, 4, F32)], &bounded)), vec![(0, 4), (4, 2)]);
        // Tables never mix; unsorted input is sorted.
        assert_eq!(
            spans(&plan_reads(&[reg(Function::Holding, 0, F32), reg(I, 2, F32), reg(I, 0, F32)], &limits)),
            vec![(0, 2), (0, 4)]
        );
    }

    #[test]
    fn scale_factor_registers_are_read_in_the_blocks() {
        use Function::Holding as H;
        use ValueType::U16;
        let limits = Limits { max_registers: 125, max_gap: 2, boundaries: vec![] };
        // Values at 0 and 1 share the scale factor at 3 (read once); a value at 10 uses one at 20.
        let mut regs = vec![reg(H, 0, U16), reg(H, 1, U16), reg(H, 10, U16)];
        regs[0].scale_factor = Some(3);
        regs[1].scale_factor = Some(3);
        regs[2].scale_factor = Some(20);
        let plan = plan_reads(&regs, &limits);
        assert_eq!(spans(&plan), vec![(0, 4), (10, 1), (20, 1)]);
        assert_eq!(plan[0].scale_factors, vec![3]);
        assert_eq!(plan[2].scale_factors, vec![20]);
        assert_eq!(spans(&plan[0].split(&regs)), vec![(0, 1), (1, 1), (3, 1)]);
    }

    fn arb_registers() -> impl Strategy<Value = Vec<Register>> {
        proptest::collection::vec(
            (
                prop_oneof![Just(Function::Input), Just(Function::Holding)],
                0u16..400,
                prop_oneof![Just(ValueType::U16), Just(ValueType::F32), Just(ValueType::F64)],
            ),
            0..60,
        )
        .prop_map(|v| {
            // Remove overlaps: keep registers whose span is free.
            let mut out: Vec<Register> = Vec::new();
            for (f, a, t) in v {
                let r = reg(f, a, t);
                if !out.iter().any(|o| o.function == f && u32::from(o.address) < r.end() && u32::from(r.address) < o.end()) {
                    out.push(r);
                }
            }
            out
        })
    }

    proptest! {
        #[test]
        fn plans_cover_everything_within_limits(
            regs in arb_registers(),
            max in 4u16..=125,
            gap in 0u16..20,
            bounds in proptest::collection::vec(0u16..400, 0..4),
        ) {
            // A boundary inside a register is a profile error (the loader refuses it).
            let bounds: Vec<u16> = bounds.into_iter()
                .filter(|&b| !regs.iter().any(|r| u32::from(r.address) < u32::from(b) && u32::from(b) < r.end()))
                .collect();
            let limits = Limits { max_registers: max, max_gap: gap, boundaries: bounds.clone() };
            let blocks = plan_reads(&regs, &limits);
            let mut covered = vec![0usize; regs.len()];
            for b in &blocks {
                prop_assert!(b.count <= max);
                for &i in &b.registers {
                    covered[i] += 1;
                    let r = &regs[i];
                    prop_assert_eq!(r.function, b.function);
                    prop_assert!(r.address >= b.address && r.end() <= b.end());
                }
                for &bd in &bounds {
                    prop_assert!(!(u32::from(b.address) < u32::from(bd) && u32::from(bd) < b.end()), "block {:?} crosses {}", b, bd);
                }
            }
            // Every register read exactly once.
            prop_assert!(covered.iter().all(|&c| c == 1));
            // Never more reads than registers, and consecutive reads of one table could not
            // have been merged under the rule.
            prop_assert!(blocks.len() <= regs.len());
            for w in blocks.windows(2) {
                if w[0].function == w[1].function {
                    let merged_end = w[1].end().max(w[0].end());
                    let gap_ok = u32::from(w[1].address).saturating_sub(w[0].end()) <= u32::from(gap);
                    let size_ok = merged_end - u32::from(w[0].address) <= u32::from(max);
                    let cross = bounds.iter().any(|&bd| u32::from(w[0].address) < u32::from(bd) && u32::from(bd) < merged_end);
                    prop_assert!(!(gap_ok && size_ok && !cross), "{:?} and {:?} should have merged", w[0], w[1]);
                }
            }
        }
    }
}
