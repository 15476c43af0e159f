//! The plan every executor and key generator follows: each node's layout, the baby-step
//! giant-step schedule of matrix products, the rotations (hence Galois keys) a circuit needs,
//! interval bounds of every value (hence the plaintext modulus) and the operation counts the
//! cost is priced from.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::ir::{BfvCircuit, PNode, VecInput};
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
    // First pass: layouts, rotations, operation counts and interval bounds, one node kind at
    // a time; the noise is estimated once the plaintext modulus is known.
    let mut p = Planner {
        degree,
        rotations: BTreeSet::new(),
        row_swap: false,
        relin: false,
        stats: OpCounts::default(),
        nodes: Vec::with_capacity(c.nodes.len()),
    };
    for (id, n) in c.nodes.iter().enumerate() {
        let info = match n {
            PNode::Input { input } => Ok(p.input(&c.inputs[*input as usize])),
            PNode::Matvec { a, matrix } => p.matvec(*a, matrix),
            PNode::Dot { a, weights } => p.dot(*a, weights),
            PNode::Add { a, b } => p.add_sub(*a, *b, false),
            PNode::Sub { a, b } => p.add_sub(*a, *b, true),
            PNode::AddPlain { a, plain } => p.with_plain(*a, plain, false),
            PNode::MulPlain { a, plain } => p.with_plain(*a, plain, true),
            PNode::Square { a } => Ok(p.square(*a)),
            PNode::Sum { a } => Ok(p.sum(*a)),
        }
        .map_err(|message| BfvError::Node {
            node: id as u32,
            op: n.op_name(),
            message,
        })?;
        p.nodes.push(info);
    }
    let Planner {
        rotations,
        row_swap,
        relin,
        mut stats,
        mut nodes,
        ..
    } = p;
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

fn dot_bounds(w: &[i64], lo: i128, hi: i128) -> (i128, i128) {
    w.iter().fold((0i128, 0i128), |(l, h), &v| {
        let v = i128::from(v);
        let (a, b) = (v.saturating_mul(lo), v.saturating_mul(hi));
        (l.saturating_add(a.min(b)), h.saturating_add(a.max(b)))
    })
}

/// The first pass's state: what the nodes planned so far need.
struct Planner {
    degree: usize,
    rotations: BTreeSet<usize>,
    row_swap: bool,
    relin: bool,
    stats: OpCounts,
    nodes: Vec<NodeInfo>,
}

impl Planner {
    /// An earlier node's plan (validation checked that operands come before their users).
    fn node(&self, i: u32) -> NodeInfo {
        self.nodes[i as usize].clone()
    }

    fn layout(&self, len: usize) -> Layout {
        layout_for(len, self.degree)
    }

    /// An encrypted input vector: its declared range.
    fn input(&mut self, i: &VecInput) -> NodeInfo {
        let len = i.len as usize;
        let layout = self.layout(len);
        self.stats.input_cts += layout.ciphertexts() as u64;
        NodeInfo {
            len,
            lo: i.min.into(),
            hi: i.max.into(),
            layout,
            noise_bits: 0.0,
            depth: 0,
            matvec: None,
        }
    }

    /// A plain matrix times an encrypted vector: generalized diagonals, baby-step giant-step,
    /// then a fold when the matrix is wider than tall.
    fn matvec(&mut self, a: u32, matrix: &[Vec<i64>]) -> Result<NodeInfo, String> {
        let (degree, half) = (self.degree, self.degree / 2);
        let x = self.node(a);
        let Layout::Replicated { period: p_in } = x.layout else {
            return Err(format!(
                "the input vector has {} values; matrix products take at most {half} at ring \
                 degree {degree}",
                x.len
            ));
        };
        if matrix.is_empty() || matrix.iter().any(|r| r.len() != x.len) {
            return Err(format!(
                "the matrix needs at least one row, each of {} values (the vector's length)",
                x.len
            ));
        }
        let m = matrix.len();
        let layout = self.layout(m);
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
        self.rotations.extend(1..baby.min(k));
        self.rotations.extend((1..giant).map(|g| g * baby));
        self.rotations.extend(fold.iter().copied());
        let cts = layout.ciphertexts() as u64;
        let s = &mut self.stats;
        s.rotations +=
            (baby.min(k) as u64 - 1) + cts * (giant as u64 - 1) + cts * fold.len() as u64;
        s.plain_mults += cts * k as u64;
        s.adds += cts * (k as u64 + fold.len() as u64);
        let (lo, hi) = matrix
            .iter()
            .map(|row| dot_bounds(row, x.lo, x.hi))
            .fold((i128::MAX, i128::MIN), |(l, h), (a, b)| {
                (l.min(a), h.max(b))
            });
        Ok(NodeInfo {
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
        })
    }

    /// The dot product of an encrypted vector with plain weights: a vector of length 1.
    fn dot(&mut self, a: u32, weights: &[i64]) -> Result<NodeInfo, String> {
        let x = self.node(a);
        if weights.len() != x.len {
            return Err(format!(
                "{} weights for a vector of {} values",
                weights.len(),
                x.len
            ));
        }
        let (lo, hi) = dot_bounds(weights, x.lo, x.hi);
        self.sum_rotations(x.layout);
        self.stats.plain_mults += x.layout.ciphertexts() as u64;
        Ok(NodeInfo {
            len: 1,
            lo,
            hi,
            layout: Layout::Replicated { period: 1 },
            noise_bits: x.noise_bits,
            depth: x.depth,
            matvec: None,
        })
    }

    /// `a + b` or `a - b`, elementwise.
    fn add_sub(&mut self, a: u32, b: u32, sub: bool) -> Result<NodeInfo, String> {
        let (x, y) = (self.node(a), self.node(b));
        if x.len != y.len {
            return Err(format!("operands have {} and {} values", x.len, y.len));
        }
        self.stats.adds += x.layout.ciphertexts() as u64;
        // Saturating: a bound past 2^127 is refused with the plaintext modulus.
        let (lo, hi) = if sub {
            (x.lo.saturating_sub(y.hi), x.hi.saturating_sub(y.lo))
        } else {
            (x.lo.saturating_add(y.lo), x.hi.saturating_add(y.hi))
        };
        Ok(NodeInfo {
            len: x.len,
            lo,
            hi,
            layout: x.layout,
            noise_bits: x.noise_bits.max(y.noise_bits) + 1.0,
            depth: x.depth.max(y.depth),
            matvec: None,
        })
    }

    /// `a + plain` or `a * plain`, elementwise (`plain` of `a`'s length, or one value).
    fn with_plain(&mut self, a: u32, plain: &[i64], mul: bool) -> Result<NodeInfo, String> {
        let x = self.node(a);
        if plain.len() != x.len && plain.len() != 1 {
            return Err(format!(
                "{} plain values for a vector of {} (give {} or 1)",
                plain.len(),
                x.len,
                x.len
            ));
        }
        let pl = plain.iter().copied().min().unwrap_or(0) as i128;
        let ph = plain.iter().copied().max().unwrap_or(0) as i128;
        let (lo, hi) = if mul {
            self.stats.plain_mults += x.layout.ciphertexts() as u64;
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
        } else {
            self.stats.adds += x.layout.ciphertexts() as u64;
            (x.lo.saturating_add(pl), x.hi.saturating_add(ph))
        };
        Ok(NodeInfo {
            len: x.len,
            lo,
            hi,
            layout: x.layout,
            noise_bits: x.noise_bits,
            depth: x.depth,
            matvec: None,
        })
    }

    /// `a * a`, elementwise: a ciphertext product, then relinearization.
    fn square(&mut self, a: u32) -> NodeInfo {
        let x = self.node(a);
        self.relin = true;
        self.stats.squares += x.layout.ciphertexts() as u64;
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

    /// The sum of a vector's values: a vector of length 1.
    fn sum(&mut self, a: u32) -> NodeInfo {
        let x = self.node(a);
        self.sum_rotations(x.layout);
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

    /// Rotations of a sum over all elements of a vector in `layout`.
    fn sum_rotations(&mut self, layout: Layout) {
        let span = match layout {
            Layout::Replicated { period } => period,
            Layout::Chunked { chunks } => {
                self.stats.adds += chunks as u64 - 1;
                self.row_swap = true;
                self.stats.rotations += 1;
                self.degree / 2
            }
        };
        let mut step = 1;
        while step < span {
            self.rotations.insert(step);
            self.stats.rotations += 1;
            self.stats.adds += 1;
            step *= 2;
        }
    }
}
