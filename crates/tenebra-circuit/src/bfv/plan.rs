//! The plan every executor and key generator follows: each node's layout, the baby-step
//! giant-step schedule of matrix products, the rotations (hence Galois keys) a circuit needs,
//! interval bounds of every value (hence the plaintext modulus) and the operation counts the
//! cost is priced from.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::ir::{BfvCircuit, PNode};
use super::layout::{layout_for, Layout};
use super::noise::{plain_modulus_for, MAX_PLAIN_BITS};
use super::validate::BfvError;

/// How one matrix x vector product runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MatvecPlan {
    /// Generalized diagonals.
    pub diagonals: usize,
    /// Baby steps (rotations of the input by `0..baby`).
    pub baby: usize,
    /// Giant steps (rotations by multiples of `baby`).
    pub giant: usize,
    /// Rotate-and-add steps after the diagonals (wide matrices), by `period_out << i`.
    pub fold: Vec<usize>,
    /// Input period.
    pub period_in: usize,
}

/// What the planner knows of each node.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeInfo {
    pub len: usize,
    pub lo: i128,
    pub hi: i128,
    pub layout: Layout,
    /// Estimated noise budget consumed so far, in bits.
    pub noise_bits: f64,
    /// Ciphertext x ciphertext multiplications on the longest path.
    pub depth: u32,
    pub matvec: Option<MatvecPlan>,
}

/// Parameters, layouts, keys and cost of a BFV circuit.
#[derive(Debug, Clone, PartialEq)]
pub struct BfvPlan {
    pub degree: usize,
    pub plain_modulus: u64,
    pub nodes: Vec<NodeInfo>,
    /// Column rotations the evaluation needs a Galois key for.
    pub rotations: BTreeSet<usize>,
    /// Whether a row swap (Galois element `2N - 1`) is needed.
    pub row_swap: bool,
    /// Whether a relinearization key is needed.
    pub relin: bool,
    /// Estimated budget left at the outputs (bits), margin not subtracted.
    pub noise_left_bits: f64,
    pub stats: OpCounts,
}

/// Homomorphic operation counts, for the cost model.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpCounts {
    pub rotations: u64,
    pub plain_mults: u64,
    pub adds: u64,
    pub squares: u64,
    pub input_cts: u64,
    pub output_cts: u64,
}

impl BfvPlan {
    /// Galois keys the client must upload, as rotation amounts; `row_swap` adds one more.
    pub fn galois_keys(&self) -> usize {
        self.rotations.len() + usize::from(self.row_swap)
    }

    /// The layout of output `i`'s node.
    pub fn output_layout(&self, circuit: &BfvCircuit, i: usize) -> Option<&NodeInfo> {
        circuit
            .outputs
            .get(i)
            .and_then(|o| self.nodes.get(o.node as usize))
    }
}

/// Plans `c` at ring degree `degree`: layouts, rotations, plaintext modulus and noise.
pub fn plan_bfv(c: &BfvCircuit, degree: usize) -> Result<BfvPlan, BfvError> {
    let half = degree / 2;
    let mut rotations = BTreeSet::new();
    let mut row_swap = false;
    let mut relin = false;
    let mut stats = OpCounts::default();
    let mut nodes: Vec<NodeInfo> = Vec::with_capacity(c.nodes.len());
    // Noise consumption is estimated once the plaintext modulus is known; first pass: ranges.
    for (id, n) in c.nodes.iter().enumerate() {
        let node_err = |message: String| BfvError::Node {
            node: id as u32,
            op: n.op_name(),
            message,
        };
        let get = |i: u32| &nodes[i as usize];
        let layout_for = |len: usize| layout_for(len, degree);
        let info = match n {
            PNode::Input { input } => {
                let i = &c.inputs[*input as usize];
                let len = i.len as usize;
                stats.input_cts += layout_for(len).ciphertexts() as u64;
                NodeInfo {
                    len,
                    lo: i.min.into(),
                    hi: i.max.into(),
                    layout: layout_for(len),
                    noise_bits: 0.0,
                    depth: 0,
                    matvec: None,
                }
            }
            PNode::Matvec { a, matrix } => {
                let x = get(*a);
                let Layout::Replicated { period: p_in } = x.layout else {
                    return Err(node_err(format!(
                        "the input vector has {} values; matrix products take at most {half} at \
                         ring degree {degree}",
                        x.len
                    )));
                };
                if matrix.is_empty() || matrix.iter().any(|r| r.len() != x.len) {
                    return Err(node_err(format!(
                        "the matrix needs at least one row, each of {} values (the vector's length)",
                        x.len
                    )));
                }
                let m = matrix.len();
                let layout = layout_for(m);
                let (k, fold) = match layout {
                    Layout::Replicated { period: p_out } if p_out < p_in => {
                        let mut fold = Vec::new();
                        let mut step = p_out;
                        while step < p_in {
                            fold.push(step);
                            step *= 2;
                        }
                        (p_out, fold)
                    }
                    _ => (p_in, vec![]),
                };
                let baby = (k as f64).sqrt().ceil() as usize;
                let giant = k.div_ceil(baby);
                rotations.extend(1..baby.min(k));
                rotations.extend((1..giant).map(|g| g * baby));
                rotations.extend(fold.iter().copied());
                let cts = layout.ciphertexts() as u64;
                stats.rotations +=
                    (baby.min(k) as u64 - 1) + cts * (giant as u64 - 1) + cts * fold.len() as u64;
                stats.plain_mults += cts * k as u64;
                stats.adds += cts * (k as u64 + fold.len() as u64);
                let (lo, hi) = matrix
                    .iter()
                    .map(|row| dot_bounds(row, x.lo, x.hi))
                    .fold((i128::MAX, i128::MIN), |(l, h), (a, b)| {
                        (l.min(a), h.max(b))
                    });
                NodeInfo {
                    len: m,
                    lo,
                    hi,
                    layout,
                    noise_bits: x.noise_bits,
                    depth: x.depth,
                    matvec: Some(MatvecPlan {
                        diagonals: k,
                        baby: baby.min(k),
                        giant,
                        fold,
                        period_in: p_in,
                    }),
                }
            }
            PNode::Dot { a, weights } => {
                let x = get(*a);
                if weights.len() != x.len {
                    return Err(node_err(format!(
                        "{} weights for a vector of {} values",
                        weights.len(),
                        x.len
                    )));
                }
                let (lo, hi) = dot_bounds(weights, x.lo, x.hi);
                sum_rotations(x.layout, degree, &mut rotations, &mut row_swap, &mut stats);
                stats.plain_mults += x.layout.ciphertexts() as u64;
                NodeInfo {
                    len: 1,
                    lo,
                    hi,
                    layout: Layout::Replicated { period: 1 },
                    noise_bits: x.noise_bits,
                    depth: x.depth,
                    matvec: None,
                }
            }
            PNode::Add { a, b } | PNode::Sub { a, b } => {
                let (x, y) = (get(*a), get(*b));
                if x.len != y.len {
                    return Err(node_err(format!(
                        "operands have {} and {} values",
                        x.len, y.len
                    )));
                }
                stats.adds += x.layout.ciphertexts() as u64;
                // Saturating: a bound past 2^127 is refused with the plaintext modulus.
                let (lo, hi) = if matches!(n, PNode::Add { .. }) {
                    (x.lo.saturating_add(y.lo), x.hi.saturating_add(y.hi))
                } else {
                    (x.lo.saturating_sub(y.hi), x.hi.saturating_sub(y.lo))
                };
                NodeInfo {
                    len: x.len,
                    lo,
                    hi,
                    layout: x.layout,
                    noise_bits: x.noise_bits.max(y.noise_bits) + 1.0,
                    depth: x.depth.max(y.depth),
                    matvec: None,
                }
            }
            PNode::AddPlain { a, plain } | PNode::MulPlain { a, plain } => {
                let x = get(*a);
                if plain.len() != x.len && plain.len() != 1 {
                    return Err(node_err(format!(
                        "{} plain values for a vector of {} (give {} or 1)",
                        plain.len(),
                        x.len,
                        x.len
                    )));
                }
                let pl = plain.iter().copied().min().unwrap_or(0) as i128;
                let ph = plain.iter().copied().max().unwrap_or(0) as i128;
                let (lo, hi) = if matches!(n, PNode::AddPlain { .. }) {
                    stats.adds += x.layout.ciphertexts() as u64;
                    (x.lo.saturating_add(pl), x.hi.saturating_add(ph))
                } else {
                    stats.plain_mults += x.layout.ciphertexts() as u64;
                    let c = [
                        x.lo.saturating_mul(pl),
                        x.lo.saturating_mul(ph),
                        x.hi.saturating_mul(pl),
                        x.hi.saturating_mul(ph),
                    ];
                    (
                        c.iter().copied().min().unwrap_or(0),
                        c.iter().copied().max().unwrap_or(0),
                    )
                };
                NodeInfo {
                    len: x.len,
                    lo,
                    hi,
                    layout: x.layout,
                    noise_bits: x.noise_bits,
                    depth: x.depth,
                    matvec: None,
                }
            }
            PNode::Square { a } => {
                let x = get(*a);
                relin = true;
                stats.squares += x.layout.ciphertexts() as u64;
                let m = x.lo.saturating_abs().max(x.hi.saturating_abs());
                let lo = if x.lo <= 0 && x.hi >= 0 {
                    0
                } else {
                    x.lo.saturating_mul(x.lo).min(x.hi.saturating_mul(x.hi))
                };
                NodeInfo {
                    len: x.len,
                    lo,
                    hi: m.saturating_mul(m),
                    layout: x.layout,
                    noise_bits: x.noise_bits,
                    depth: x.depth + 1,
                    matvec: None,
                }
            }
            PNode::Sum { a } => {
                let x = get(*a);
                sum_rotations(x.layout, degree, &mut rotations, &mut row_swap, &mut stats);
                let l = x.len as i128;
                NodeInfo {
                    len: 1,
                    lo: x.lo.saturating_mul(l),
                    hi: x.hi.saturating_mul(l),
                    layout: Layout::Replicated { period: 1 },
                    noise_bits: x.noise_bits,
                    depth: x.depth,
                    matvec: None,
                }
            }
        };
        nodes.push(info);
    }
    // The plaintext modulus: every output fits in (-t/2, t/2).
    let bound = c
        .outputs
        .iter()
        .map(|o| {
            let n = &nodes[o.node as usize];
            n.lo.saturating_abs().max(n.hi.saturating_abs())
        })
        .max()
        .unwrap_or(0);
    let plain_modulus = plain_modulus_for(bound, degree).ok_or_else(|| {
        BfvError::TooDeep(format!(
            "results reach {bound} in absolute value: no plaintext modulus of at most \
             {MAX_PLAIN_BITS} bits holds them; scale the inputs or weights down"
        ))
    })?;
    let noise_left_bits = super::noise::estimate(c, &mut nodes, degree, plain_modulus)?;
    for o in &c.outputs {
        stats.output_cts += nodes[o.node as usize].layout.ciphertexts() as u64;
    }
    Ok(BfvPlan {
        degree,
        plain_modulus,
        nodes,
        rotations,
        row_swap,
        relin,
        noise_left_bits,
        stats,
    })
}

/// Rotations of a sum over all elements of a vector in `layout`.
fn sum_rotations(
    layout: Layout,
    degree: usize,
    rotations: &mut BTreeSet<usize>,
    row_swap: &mut bool,
    stats: &mut OpCounts,
) {
    let span = match layout {
        Layout::Replicated { period } => period,
        Layout::Chunked { chunks } => {
            stats.adds += chunks as u64 - 1;
            *row_swap = true;
            stats.rotations += 1;
            degree / 2
        }
    };
    let mut step = 1;
    while step < span {
        rotations.insert(step);
        stats.rotations += 1;
        stats.adds += 1;
        step *= 2;
    }
}

fn dot_bounds(w: &[i64], lo: i128, hi: i128) -> (i128, i128) {
    w.iter().fold((0i128, 0i128), |(l, h), &v| {
        let v = i128::from(v);
        let (a, b) = (v.saturating_mul(lo), v.saturating_mul(hi));
        (l.saturating_add(a.min(b)), h.saturating_add(a.max(b)))
    })
}
