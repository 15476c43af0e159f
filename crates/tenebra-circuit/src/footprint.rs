//! What running a plan holds in memory, known before it runs.
//!
//! Every encrypted scalar is radix blocks of one size, so the memory a run needs follows from
//! the plan alone: the inputs once expanded, every step's results until their last reader,
//! each step's own temporaries (tfhe-rs's multiplications build `blocks²` partial products,
//! a multi-operand sum copies its operands...), and at the end the result copies and their
//! serialized form. [`footprint`] replays the plan in its sequential order with the
//! executor's freeing rule (a value dies after its last reader) and reports the peak, plus
//! the temporaries of one more step running beside it. Validation refuses a circuit whose
//! peak is over [`crate::Limits::max_working_set_bytes`], and the executor checks the same
//! figures step by step before it allocates.

use crate::plan::{Plan, PlanOp, Step};
use crate::types::ScalarType;

/// Bytes one radix block takes in memory and in a result: an LWE ciphertext of dimension 2048
/// (`2049 × u64`, the default parameters' big key) plus its metadata, rounded up. An engine
/// test checks the real size against it.
pub const BLOCK_BYTES: u64 = (16 << 10) + 512;

/// Most shifted copies the executor makes of one dot-product operand (a weight with more set
/// bits takes one scalar multiplication instead).
pub const MAX_SHIFT_TERMS: u32 = 6;

/// How a dot product multiplies an operand by weight `w` (a bit pattern of `ty`):
/// `Some((mag, negative))` as shifted copies of the operand, one per set bit of `mag` (odd
/// shifts twice), negated when `negative` (`w = -mag`); `None` with one scalar multiplication
/// (the weight has too many set bits). A zero weight is `Some((0, false))`: nothing.
pub fn dot_shifts(w: u64, ty: ScalarType) -> Option<(u64, bool)> {
    let mask = ty.mask();
    let w = w & mask;
    let neg = 0u64.wrapping_sub(w) & mask;
    let (mag, negative) = if shift_cost(neg) < shift_cost(w) {
        (neg, true)
    } else {
        (w, false)
    };
    (shift_cost(mag) <= MAX_SHIFT_TERMS).then_some((mag, negative))
}

/// Shifted copies a weight's product takes: one per set bit, two for an odd shift.
fn shift_cost(w: u64) -> u32 {
    (0..64)
        .filter(|k| w >> k & 1 == 1)
        .map(|k| 1 + (k % 2))
        .sum()
}

/// Ciphertexts a dot product adds into its sum for weight `w`.
pub fn dot_terms(w: u64, ty: ScalarType) -> u32 {
    dot_shifts(w, ty).map_or(1, |(mag, _)| shift_cost(mag))
}

/// Radix blocks a step allocates besides its results (an upper estimate of tfhe-rs's
/// temporaries: the operand copies the executor makes and the operation's own work space).
pub fn temp_blocks(step: &Step) -> u64 {
    let b = step.ty.blocks() as u64;
    match &step.op {
        PlanOp::Sum { args, .. } => 2 * (args.len() as u64 + 1) * b,
        PlanOp::Dot { args, weights } => {
            let terms: u64 = weights
                .iter()
                .map(|w| u64::from(dot_terms(*w, step.ty)))
                .sum();
            2 * (terms + args.len() as u64 + 1) * b
        }
        PlanOp::Binary {
            op: crate::ir::BinOp::Mul,
            ..
        }
        | PlanOp::ByConst { .. } => 2 * b * b + 4 * b,
        PlanOp::Compare { ty, .. } => 4 * ty.blocks() as u64,
        PlanOp::Lut { from, table, .. } => {
            // `match_value` builds one selector per entry and one result per selector.
            let from_blocks = from.blocks() as u64;
            (table.len() as u64) * (1 + b) + 4 * from_blocks
        }
        _ => 4 * b,
    }
}

/// The memory a plan needs, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Footprint {
    /// Peak of live values plus temporaries, over the sequential order, with one more step's
    /// temporaries beside it.
    pub working_set_bytes: u64,
    /// Size of the result the run writes (every output element, repeats included).
    pub result_bytes: u64,
    /// Radix blocks over all output elements.
    pub output_blocks: u64,
}

/// Bytes of `blocks` radix blocks.
pub fn bytes(blocks: u64) -> u64 {
    blocks.saturating_mul(BLOCK_BYTES)
}

/// Bytes of one value of type `ty`.
pub fn value_bytes(ty: ScalarType) -> u64 {
    bytes(ty.blocks() as u64)
}

/// Replays `plan` in order: values appear when their step runs and die after their last
/// reader (outputs live to the end).
pub fn footprint(plan: &Plan) -> Footprint {
    let mut uses = plan.use_counts();
    let mut live: u64 = plan
        .inputs
        .iter()
        .flatten()
        .map(|&v| value_bytes(plan.value_types[v as usize]))
        .sum();
    let mut peak = live;
    let mut max_temp = 0u64;
    for s in &plan.steps {
        let outs: u64 = s.outs.iter().map(|_| value_bytes(s.ty)).sum();
        let temp = bytes(temp_blocks(s));
        max_temp = max_temp.max(temp);
        peak = peak.max(live.saturating_add(outs).saturating_add(temp));
        live = live.saturating_add(outs);
        for d in s.deps() {
            let u = &mut uses[d as usize];
            *u = u.saturating_sub(1);
            // Outputs hold a use until the end, so an output value never reaches zero here.
            if *u == 0 {
                live = live.saturating_sub(value_bytes(plan.value_types[d as usize]));
            }
        }
    }
    let output_blocks: u64 = plan
        .outputs
        .iter()
        .flatten()
        .map(|&v| plan.value_types[v as usize].blocks() as u64)
        .sum();
    let result_bytes = bytes(output_blocks);
    // At the end: the live outputs, one copy of each element, and its serialized form.
    let end = live
        .saturating_add(result_bytes)
        .saturating_add(result_bytes);
    Footprint {
        working_set_bytes: peak.max(end).saturating_add(max_temp),
        result_bytes,
        output_blocks,
    }
}
