//! The cost of a BFV plan in CU (1 CU = 1 ms of single-thread CPU on the reference machine),
//! priced from its operation counts with the committed table `bfv_calibration.json`
//! (milliseconds per operation at each ring degree, measured with `tenebra bench bfv`), as the
//! TFHE cost model is priced from `calibration.json`.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

use super::plan::OpCounts;

/// Milliseconds of single-thread CPU per operation at one ring degree.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpLatencies {
    pub rotation: f64,
    pub plain_mult: f64,
    pub add: f64,
    pub square: f64,
    /// Reading (deserializing and checking) one input ciphertext.
    pub input_ct: f64,
    /// Writing one output ciphertext.
    pub output_ct: f64,
}

/// The BFV calibration table.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BfvCalibration {
    pub version: u32,
    /// Where and when it was measured.
    pub machine: String,
    pub measured_at: String,
    /// `ring degree -> latencies`.
    pub ms: BTreeMap<usize, OpLatencies>,
}

const CALIBRATION_JSON: &str = include_str!("../../bfv_calibration.json");

/// The committed table.
pub fn calibration() -> &'static BfvCalibration {
    static TABLE: OnceLock<BfvCalibration> = OnceLock::new();
    crate::cost::committed(&TABLE, CALIBRATION_JSON, "bfv_calibration.json")
}

impl BfvCalibration {
    /// The latencies at `degree`, or at the largest measured degree above it (the dearest).
    pub fn at(&self, degree: usize) -> OpLatencies {
        self.ms
            .range(degree..)
            .next()
            .or_else(|| self.ms.last_key_value())
            .map(|(_, l)| *l)
            .unwrap_or(OpLatencies {
                rotation: 1.0,
                plain_mult: 1.0,
                add: 1.0,
                square: 1.0,
                input_ct: 1.0,
                output_ct: 1.0,
            })
    }

    /// Cost in CU of a plan's operations at `degree` (at least 1).
    pub fn cost_cu(&self, degree: usize, s: &OpCounts) -> u64 {
        let ms = self.at(degree);
        let total = s.rotations as f64 * ms.rotation
            + s.plain_mults as f64 * ms.plain_mult
            + s.adds as f64 * ms.add
            + s.squares as f64 * ms.square
            + s.input_cts as f64 * ms.input_ct
            + s.output_cts as f64 * ms.output_ct;
        total.ceil().max(1.0) as u64
    }
}

/// Cost in CU of a plan's operations at `degree`, with the committed table.
pub fn cost_cu(degree: usize, s: &OpCounts) -> u64 {
    calibration().cost_cu(degree, s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_committed_table_prices_every_degree() {
        let t = calibration();
        for d in super::super::DEGREES {
            assert!(t.ms.contains_key(&d), "no latencies for degree {d}");
        }
        let ops = OpCounts {
            rotations: 10,
            plain_mults: 100,
            adds: 100,
            squares: 1,
            input_cts: 1,
            output_cts: 1,
        };
        // 10 * 0.9 + 100 * 0.08 + 100 * 0.02 + 3.0 + 0.5 + 0.3 = 22.8
        assert_eq!(cost_cu(4096, &ops), 23);
        assert!(cost_cu(8192, &ops) > cost_cu(4096, &ops));
        assert!(cost_cu(16384, &ops) > cost_cu(8192, &ops));
        assert_eq!(cost_cu(4096, &OpCounts::default()), 1);
    }
}
