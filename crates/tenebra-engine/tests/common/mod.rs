//! What the BFV test binaries share.

use tenebra_circuit::bfv::{
    validate_bfv, BfvCircuit, BfvLimits, PNode, ValidBfv, VecInput, VecOutput, SCHEME_BFV,
};
use tenebra_circuit::ir::FORMAT_VERSION;

/// A validated BFV circuit named `t` with inputs `(len, min, max)` and the given nodes and
/// output nodes.
pub fn circuit(inputs: Vec<(usize, i64, i64)>, nodes: Vec<PNode>, outputs: &[u32]) -> ValidBfv {
    let c = BfvCircuit {
        version: FORMAT_VERSION,
        scheme: SCHEME_BFV.into(),
        name: "t".into(),
        inputs: inputs
            .into_iter()
            .enumerate()
            .map(|(i, (len, min, max))| VecInput {
                name: format!("x{i}"),
                len: len as u32,
                min,
                max,
            })
            .collect(),
        nodes,
        outputs: outputs
            .iter()
            .enumerate()
            .map(|(i, n)| VecOutput {
                name: format!("y{i}"),
                node: *n,
            })
            .collect(),
    };
    validate_bfv(c, &BfvLimits::default()).expect("valid test circuit")
}
