//! BFV circuits for the BFV backend: vectors of integers in the slots of one
//! ciphertext, plain-matrix x encrypted-vector products, elementwise ops and sums.
//!
//! This module is pure: it holds the IR, its validation, the layout plan every executor and
//! key generator follows (which slots hold what, which rotations run, hence which Galois keys a
//! function needs), the choice of parameters (ring degree and plaintext modulus, so that no
//! result wraps), the noise estimate that refuses a circuit too deep for the parameters, the
//! cost in CU, and the exact plaintext evaluator.
//!
//! Values are signed integers. The plaintext modulus `t` is chosen from interval bounds of the
//! outputs (inputs declare their range) so that every output `v` has `|v| < t/2`; arithmetic
//! mod `t` is a ring homomorphism, so the decrypted outputs equal the exact integer results.
//!
//! Layouts (`N` = ring degree, `N` slots in two rows of `N/2`; rotations turn both rows):
//! - `Replicated { period }`: a vector of length `n <= period`, `period` a power of two
//!   dividing `N/2`; slot `s` holds `v[s mod period]` (0 past `n`). Rotations are then cyclic
//!   with the vector's period, which is what the diagonal method needs.
//! - `Chunked { chunks }`: a long vector over `chunks` ciphertexts, value `i` in ciphertext
//!   `i / N`, slot `i mod N` (row-major over the two rows).
//!
//! Matrix x vector (`m x n` matrix, input replicated with period `P_in >= n`): with
//! `P_out = next_pow2(m)` (or chunked output when `m > N/2`), `K = min(P_in, P_out)` generalized
//! diagonals `d_k[s] = M[row(s)][(s + k) mod P_in]` give `z = sum_k d_k * rot_k(x)`, evaluated
//! baby-step giant-step (`B` baby rotations of `x` shared by all outputs, one giant rotation per
//! group, plain diagonals pre-rotated). A wide matrix (`P_out < P_in`) then folds `z` with
//! `log2(P_in / P_out)` rotate-and-add steps.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::ir::{CircuitId, FORMAT_VERSION};

/// The scheme name BFV circuits declare.
pub const SCHEME_BFV: &str = "bfv";

/// Ring degrees the backend offers, smallest (fastest) first.
pub const DEGREES: [usize; 3] = [4096, 8192, 16384];

/// Bits of the ciphertext modulus `q` for each degree: the 128-bit-security bounds of the
/// homomorphic encryption standard (109 for N=4096, 218 for N=8192, 438 for N=16384); the
/// moduli themselves are in the engine.
pub fn modulus_bits(degree: usize) -> u32 {
    match degree {
        4096 => 109,
        8192 => 218,
        _ => 438,
    }
}

/// Bits of the largest RNS prime of `q` at each degree (key switching decomposes by prime).
fn prime_bits(degree: usize) -> f64 {
    match degree {
        4096 => 37.0,
        8192 => 44.0,
        _ => 49.0,
    }
}

/// Largest plaintext modulus the backend uses (bits); above ~50 bits fhe.rs's ciphertext
/// multiplication loses the result (measured), so results must fit in 44 bits.
pub const MAX_PLAIN_BITS: u32 = 45;

/// Noise budget (bits) kept in reserve below the estimate; the estimate itself is an upper
/// bound on what the measured runs consume (tests in the engine check it).
pub const NOISE_MARGIN_BITS: f64 = 4.0;

/// Size limits of untrusted BFV circuits.
#[derive(Debug, Clone)]
pub struct BfvLimits {
    pub max_json_bytes: usize,
    pub max_nodes: usize,
    pub max_inputs: usize,
    pub max_vector_len: usize,
    /// Matrix entries over the whole circuit.
    pub max_matrix_entries: usize,
    /// Largest absolute value of an input bound or a plain constant.
    pub max_abs_value: i64,
    pub max_name_len: usize,
}

impl Default for BfvLimits {
    fn default() -> Self {
        Self {
            max_json_bytes: 64 << 20,
            max_nodes: 256,
            max_inputs: 16,
            max_vector_len: 1 << 16,
            max_matrix_entries: 1 << 22,
            max_abs_value: 1 << 30,
            max_name_len: 64,
        }
    }
}

/// A BFV circuit: nodes are encrypted vectors.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BfvCircuit {
    pub version: u32,
    pub scheme: String,
    pub name: String,
    pub inputs: Vec<VecInput>,
    pub nodes: Vec<PNode>,
    pub outputs: Vec<VecOutput>,
}

/// An encrypted input vector and the range its values are promised to lie in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VecInput {
    pub name: String,
    pub len: u32,
    pub min: i64,
    pub max: i64,
}

/// A named output: the vector a node holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VecOutput {
    pub name: String,
    pub node: u32,
}

/// One vector-valued node; operands refer to earlier nodes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum PNode {
    /// Input vector number `input`.
    Input { input: u32 },
    /// Plain matrix (rows) times the encrypted vector `a`.
    Matvec { a: u32, matrix: Vec<Vec<i64>> },
    /// Dot product of `a` with a plain vector: a vector of length 1.
    Dot { a: u32, weights: Vec<i64> },
    /// Elementwise `a + b` (both encrypted, same length).
    Add { a: u32, b: u32 },
    /// Elementwise `a - b`.
    Sub { a: u32, b: u32 },
    /// Elementwise `a + plain` (`plain` of `a`'s length, or one value for all).
    AddPlain { a: u32, plain: Vec<i64> },
    /// Elementwise `a * plain` (`plain` of `a`'s length, or one value for all).
    MulPlain { a: u32, plain: Vec<i64> },
    /// Elementwise `a * a` (ciphertext multiplication and relinearization).
    Square { a: u32 },
    /// Sum of the elements: a vector of length 1.
    Sum { a: u32 },
}

impl PNode {
    pub fn op_name(&self) -> &'static str {
        match self {
            PNode::Input { .. } => "input",
            PNode::Matvec { .. } => "matvec",
            PNode::Dot { .. } => "dot",
            PNode::Add { .. } => "add",
            PNode::Sub { .. } => "sub",
            PNode::AddPlain { .. } => "add_plain",
            PNode::MulPlain { .. } => "mul_plain",
            PNode::Square { .. } => "square",
            PNode::Sum { .. } => "sum",
        }
    }

    /// The nodes this node reads.
    pub fn deps(&self) -> Vec<u32> {
        match self {
            PNode::Input { .. } => vec![],
            PNode::Add { a, b } | PNode::Sub { a, b } => vec![*a, *b],
            PNode::Matvec { a, .. }
            | PNode::Dot { a, .. }
            | PNode::AddPlain { a, .. }
            | PNode::MulPlain { a, .. }
            | PNode::Square { a }
            | PNode::Sum { a } => vec![*a],
        }
    }
}

impl BfvCircuit {
    /// Canonical JSON bytes (compact, fixed field order).
    pub fn canonical_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Content id: SHA-256 of the canonical JSON.
    pub fn id(&self) -> CircuitId {
        CircuitId(Sha256::digest(self.canonical_json()).into())
    }
}

/// Where a vector's values sit in the slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Layout {
    Replicated { period: usize },
    Chunked { chunks: usize },
}

impl Layout {
    /// Ciphertexts the vector takes.
    pub fn ciphertexts(self) -> usize {
        match self {
            Layout::Replicated { .. } => 1,
            Layout::Chunked { chunks } => chunks,
        }
    }

    /// The slot values of a plain vector in this layout, one `Vec` of `degree` slots per
    /// ciphertext.
    pub fn place(self, v: &[i64], degree: usize) -> Vec<Vec<i64>> {
        match self {
            Layout::Replicated { period } => {
                vec![(0..degree)
                    .map(|s| v.get(s % period).copied().unwrap_or(0))
                    .collect()]
            }
            Layout::Chunked { chunks } => (0..chunks)
                .map(|c| {
                    (0..degree)
                        .map(|s| v.get(c * degree + s).copied().unwrap_or(0))
                        .collect()
                })
                .collect(),
        }
    }

    /// Reads a vector of `len` values back from its slots.
    pub fn read(self, slots: &[Vec<i64>], len: usize, degree: usize) -> Vec<i64> {
        (0..len)
            .map(|i| match self {
                Layout::Replicated { .. } => slots[0][i],
                Layout::Chunked { .. } => slots[i / degree][i % degree],
            })
            .collect()
    }
}

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

/// A validated BFV circuit with its plan.
#[derive(Debug, Clone)]
pub struct ValidBfv {
    circuit: BfvCircuit,
    plan: BfvPlan,
    id: CircuitId,
}

impl ValidBfv {
    pub fn circuit(&self) -> &BfvCircuit {
        &self.circuit
    }
    pub fn plan(&self) -> &BfvPlan {
        &self.plan
    }
    /// The content id (computed once: a catalogue's JSON takes milliseconds to hash).
    pub fn id(&self) -> CircuitId {
        self.id
    }
    /// Cost in CU (1 CU = 1 ms of single-thread CPU on the reference machine).
    pub fn cost_cu(&self) -> u64 {
        cost_cu(self.plan.degree, &self.plan.stats)
    }
}

/// What a client needs to encrypt for, and decrypt the results of, a BFV circuit without
/// seeing it (a model's weights stay on the server): parameters, inputs, output lengths and
/// the keys it needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BfvSignature {
    pub circuit_id: String,
    pub degree: usize,
    pub plain_modulus: u64,
    pub inputs: Vec<VecInput>,
    pub outputs: Vec<SignatureOutput>,
    pub rotations: BTreeSet<usize>,
    pub row_swap: bool,
    pub relin: bool,
}

/// An output's name and length.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignatureOutput {
    pub name: String,
    pub len: usize,
}

impl BfvSignature {
    /// The layout of a vector of `len` values (every node's layout follows from its length).
    pub fn layout(&self, len: usize) -> Layout {
        layout_for(len, self.degree)
    }
}

/// The layout of a vector of `len` values at ring degree `degree`.
pub fn layout_for(len: usize, degree: usize) -> Layout {
    if len <= degree / 2 {
        Layout::Replicated {
            period: period_of(len),
        }
    } else {
        Layout::Chunked {
            chunks: len.div_ceil(degree),
        }
    }
}

impl ValidBfv {
    /// The circuit's signature.
    pub fn signature(&self) -> BfvSignature {
        let plan = &self.plan;
        BfvSignature {
            circuit_id: self.id().to_string(),
            degree: plan.degree,
            plain_modulus: plan.plain_modulus,
            inputs: self.circuit.inputs.clone(),
            outputs: self
                .circuit
                .outputs
                .iter()
                .map(|o| SignatureOutput {
                    name: o.name.clone(),
                    len: plan.nodes[o.node as usize].len,
                })
                .collect(),
            rotations: plan.rotations.clone(),
            row_swap: plan.row_swap,
            relin: plan.relin,
        }
    }
}

/// Why a BFV circuit was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BfvError {
    #[error("circuit is not valid JSON of the expected shape: {0}")]
    Json(String),
    #[error("circuit: {0}")]
    Circuit(String),
    #[error("node {node} ({op}): {message}")]
    Node {
        node: u32,
        op: &'static str,
        message: String,
    },
    /// The circuit is valid but no parameter set can carry it.
    #[error("{0}")]
    TooDeep(String),
}

/// Parses and validates an untrusted BFV circuit (JSON) and plans it.
pub fn parse_bfv(bytes: &[u8], limits: &BfvLimits) -> Result<ValidBfv, BfvError> {
    if bytes.len() > limits.max_json_bytes {
        return Err(BfvError::Circuit(format!(
            "{} bytes is over the {}-byte limit",
            bytes.len(),
            limits.max_json_bytes
        )));
    }
    let circuit: BfvCircuit =
        serde_json::from_slice(bytes).map_err(|e| BfvError::Json(e.to_string()))?;
    validate_bfv(circuit, limits)
}

/// Validates a BFV circuit and chooses its parameters.
pub fn validate_bfv(circuit: BfvCircuit, limits: &BfvLimits) -> Result<ValidBfv, BfvError> {
    check_structure(&circuit, limits)?;
    let mut last = None;
    for degree in DEGREES {
        match plan_bfv(&circuit, degree) {
            Ok(plan) => {
                let id = circuit.id();
                return Ok(ValidBfv { circuit, plan, id });
            }
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| BfvError::Circuit("no parameters".into())))
}

fn check_structure(c: &BfvCircuit, limits: &BfvLimits) -> Result<(), BfvError> {
    let err = |m: String| Err(BfvError::Circuit(m));
    if c.version != FORMAT_VERSION {
        return err(format!(
            "version {} is not supported (this server reads version {FORMAT_VERSION})",
            c.version
        ));
    }
    if c.scheme != SCHEME_BFV {
        return err(format!(
            "scheme `{}` is not a BFV scheme (expected `{SCHEME_BFV}`)",
            c.scheme
        ));
    }
    let name_ok = |n: &str| {
        !n.is_empty()
            && n.len() <= limits.max_name_len
            && n.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    };
    if !name_ok(&c.name) {
        return err(format!(
            "name must be 1..={} characters of [A-Za-z0-9_-]",
            limits.max_name_len
        ));
    }
    if c.inputs.is_empty() || c.inputs.len() > limits.max_inputs {
        return err(format!("needs 1..={} inputs", limits.max_inputs));
    }
    if c.outputs.is_empty() || c.outputs.len() > limits.max_inputs {
        return err(format!("needs 1..={} outputs", limits.max_inputs));
    }
    if c.nodes.is_empty() || c.nodes.len() > limits.max_nodes {
        return err(format!("needs 1..={} nodes", limits.max_nodes));
    }
    let mut names = BTreeSet::new();
    for i in &c.inputs {
        if !name_ok(&i.name) || !names.insert(i.name.as_str()) {
            return err(format!("input name `{}` is invalid or repeated", i.name));
        }
        if i.len == 0 || i.len as usize > limits.max_vector_len {
            return err(format!(
                "input `{}`: length must be 1..={}",
                i.name, limits.max_vector_len
            ));
        }
        if i.min > i.max || i.min.abs() > limits.max_abs_value || i.max.abs() > limits.max_abs_value
        {
            return err(format!(
                "input `{}`: range must satisfy min <= max, |bounds| <= {}",
                i.name, limits.max_abs_value
            ));
        }
    }
    let mut names = BTreeSet::new();
    for o in &c.outputs {
        if !name_ok(&o.name) || !names.insert(o.name.as_str()) {
            return err(format!("output name `{}` is invalid or repeated", o.name));
        }
        if o.node as usize >= c.nodes.len() {
            return err(format!(
                "output `{}` refers to node {} of {}",
                o.name,
                o.node,
                c.nodes.len()
            ));
        }
    }
    let mut entries = 0usize;
    for (id, n) in c.nodes.iter().enumerate() {
        let node_err = |message: String| BfvError::Node {
            node: id as u32,
            op: n.op_name(),
            message,
        };
        if let Some(d) = n.deps().into_iter().find(|d| *d as usize >= id) {
            return Err(node_err(format!("refers to node {d}, not an earlier one")));
        }
        let plains: &[i64] = match n {
            PNode::Input { input } => {
                if *input as usize >= c.inputs.len() {
                    return Err(node_err(format!("input {input} does not exist")));
                }
                &[]
            }
            PNode::Dot { weights, .. } => weights,
            PNode::AddPlain { plain, .. } | PNode::MulPlain { plain, .. } => plain,
            PNode::Matvec { matrix, .. } => {
                entries = entries.saturating_add(matrix.iter().map(Vec::len).sum());
                if entries > limits.max_matrix_entries {
                    return Err(node_err(format!(
                        "the circuit's matrices hold more than {} entries",
                        limits.max_matrix_entries
                    )));
                }
                if let Some(v) = matrix
                    .iter()
                    .flatten()
                    .find(|v| v.abs() > limits.max_abs_value)
                {
                    return Err(node_err(format!(
                        "matrix entry {v} is over the limit {}",
                        limits.max_abs_value
                    )));
                }
                &[]
            }
            _ => &[],
        };
        if let Some(v) = plains.iter().find(|v| v.abs() > limits.max_abs_value) {
            return Err(node_err(format!(
                "plain value {v} is over the limit {}",
                limits.max_abs_value
            )));
        }
    }
    Ok(())
}

fn period_of(len: usize) -> usize {
    len.next_power_of_two()
}

/// Plans `c` at ring degree `degree`: layouts, rotations, plaintext modulus and noise.
pub fn plan_bfv(c: &BfvCircuit, degree: usize) -> Result<BfvPlan, BfvError> {
    let half = degree / 2;
    let log_n = degree.ilog2() as f64;
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
    // Second pass: noise, now that t is known. The model tracks the noise's magnitude in bits
    // (budget = log q - log t - noise) with the growth of each operation, each term rounded
    // up from measurements (`tests/bfv.rs` in the engine checks the estimate is never more
    // than a bit above the measured budget, well inside NOISE_MARGIN_BITS):
    // - fresh (secret-key) encryption: ~5 bits;
    // - key switching (rotation, relinearization) adds noise of ~(largest prime + log N / 2)
    //   bits, so the result is max(noise, that) + 1;
    // - times a full-range plain vector: + log t + log N / 2 + 2; times a constant c: + log |c|;
    // - ciphertext product: + log t + log N (then relinearization);
    // - a sum of k terms: + log k / 2 + 1 (independent noise adds in quadrature).
    let log_t = (plain_modulus as f64).log2();
    let q_bits = f64::from(modulus_bits(degree));
    let ks = prime_bits(degree) + log_n / 2.0 + 3.0;
    let rot = |v: f64| v.max(ks) + 1.0;
    let plain_mul = log_t + log_n / 2.0 + 2.0;
    let sum_of = |v: f64, k: f64| v + k.max(1.0).log2() / 2.0 + 1.0;
    for (id, n) in c.nodes.iter().enumerate() {
        let prior = |i: u32| nodes[i as usize].noise_bits;
        let rotations = |v: f64, steps: usize| (0..steps).fold(v, |v, _| rot(v));
        let span_steps = |i: u32| match nodes[i as usize].layout {
            Layout::Replicated { period } => period.ilog2() as usize,
            Layout::Chunked { .. } => (degree / 2).ilog2() as usize + 1,
        };
        let bits = match n {
            PNode::Input { .. } => 6.0,
            PNode::Matvec { a, .. } => {
                let mv = nodes[id].matvec.as_ref();
                let (k, giant, fold) =
                    mv.map_or((1, 1, 0), |m| (m.diagonals, m.giant, m.fold.len()));
                let baby = rot(prior(*a));
                let terms = sum_of(baby + plain_mul, (k / giant.max(1)) as f64);
                let giants = sum_of(rot(terms), giant as f64);
                rotations(giants, fold)
            }
            PNode::Dot { a, .. } => rotations(prior(*a) + plain_mul, span_steps(*a)),
            PNode::Sum { a } => rotations(prior(*a), span_steps(*a)),
            PNode::MulPlain { a, plain } => {
                if plain.len() == 1 {
                    prior(*a) + (plain[0].unsigned_abs().max(1) as f64).log2() + 1.0
                } else {
                    prior(*a) + plain_mul
                }
            }
            PNode::Square { a } => rot(prior(*a) + log_t + log_n + 1.0),
            PNode::Add { a, b } | PNode::Sub { a, b } => prior(*a).max(prior(*b)) + 1.0,
            PNode::AddPlain { a, .. } => prior(*a),
        };
        nodes[id].noise_bits = bits;
    }
    let worst = c
        .outputs
        .iter()
        .map(|o| nodes[o.node as usize].noise_bits)
        .fold(0.0, f64::max);
    let noise_left_bits = q_bits - log_t - worst;
    if noise_left_bits < NOISE_MARGIN_BITS {
        let depth = nodes.iter().map(|n| n.depth).max().unwrap_or(0);
        return Err(BfvError::TooDeep(format!(
            "the circuit is too deep for the parameters: at ring degree {degree} (log q = \
             {q_bits}) with a {:.0}-bit plaintext modulus it needs about {worst:.0} bits of \
             noise of {:.0} it can carry ({depth} ciphertext multiplications on its longest \
             path); use fewer squares or smaller values",
            log_t,
            q_bits - log_t - NOISE_MARGIN_BITS
        )));
    }
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

/// The smallest prime `t = 1 mod 2N` with `t > 2 * bound`, if it has at most
/// [`MAX_PLAIN_BITS`] bits.
pub fn plain_modulus_for(bound: i128, degree: usize) -> Option<u64> {
    let need = bound.checked_mul(2)?.checked_add(1)?;
    let step = 2 * degree as u128;
    // Start at the first candidate above `need` (and above 2^16 so batching has room).
    let need = (need as u128).max(1 << 16);
    let mut t = need.div_ceil(step) * step + 1;
    while t < (1u128 << MAX_PLAIN_BITS) {
        if is_prime(t as u64) {
            return Some(t as u64);
        }
        t += step;
    }
    None
}

/// Deterministic Miller-Rabin for 64-bit integers.
fn is_prime(n: u64) -> bool {
    if n < 2 {
        return false;
    }
    for p in [2u64, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37] {
        if n.is_multiple_of(p) {
            return n == p;
        }
    }
    let mulmod = |a: u64, b: u64| (u128::from(a) * u128::from(b) % u128::from(n)) as u64;
    let powmod = |mut b: u64, mut e: u64| {
        let mut r = 1u64;
        while e > 0 {
            if e & 1 == 1 {
                r = mulmod(r, b);
            }
            b = mulmod(b, b);
            e >>= 1;
        }
        r
    };
    let (mut d, mut s) = (n - 1, 0);
    while d.is_multiple_of(2) {
        d /= 2;
        s += 1;
    }
    'witness: for a in [2u64, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37] {
        let mut x = powmod(a, d);
        if x == 1 || x == n - 1 {
            continue;
        }
        for _ in 1..s {
            x = mulmod(x, x);
            if x == n - 1 {
                continue 'witness;
            }
        }
        return false;
    }
    true
}

/// Milliseconds of single-thread CPU per operation at each degree, measured by
/// `tenebra bench bfv` on the reference machine (see BENCHMARKS.md).
const MS_4096: [f64; 6] = [0.9, 0.08, 0.02, 3.0, 0.5, 0.3];
const MS_8192: [f64; 6] = [3.0, 0.25, 0.05, 10.0, 1.2, 0.8];
const MS_16384: [f64; 6] = [12.0, 1.0, 0.2, 40.0, 5.0, 3.2];

/// Cost in CU of a plan's operations at `degree`.
pub fn cost_cu(degree: usize, s: &OpCounts) -> u64 {
    let ms = match degree {
        4096 => MS_4096,
        8192 => MS_8192,
        _ => MS_16384,
    };
    let total = s.rotations as f64 * ms[0]
        + s.plain_mults as f64 * ms[1]
        + s.adds as f64 * ms[2]
        + s.squares as f64 * ms[3]
        + s.input_cts as f64 * ms[4]
        + s.output_cts as f64 * ms[5];
    total.ceil().max(1.0) as u64
}

/// Exact plaintext evaluation: what the encrypted run decrypts to. Inputs are checked
/// against their declared lengths and ranges.
pub fn evaluate_bfv(c: &BfvCircuit, inputs: &[Vec<i64>]) -> Result<Vec<Vec<i128>>, String> {
    if inputs.len() != c.inputs.len() {
        return Err(format!(
            "{} inputs for {} declared",
            inputs.len(),
            c.inputs.len()
        ));
    }
    for (v, i) in inputs.iter().zip(&c.inputs) {
        if v.len() != i.len as usize {
            return Err(format!(
                "input `{}` takes {} values, got {}",
                i.name,
                i.len,
                v.len()
            ));
        }
        if let Some(x) = v.iter().find(|x| **x < i.min || **x > i.max) {
            return Err(format!(
                "input `{}`: {x} is outside its range {}..={}",
                i.name, i.min, i.max
            ));
        }
    }
    let mut vals: Vec<Vec<i128>> = Vec::with_capacity(c.nodes.len());
    for n in &c.nodes {
        let get = |i: u32| &vals[i as usize];
        let plain_at = |p: &[i64], i: usize| i128::from(if p.len() == 1 { p[0] } else { p[i] });
        let v = match n {
            PNode::Input { input } => inputs[*input as usize]
                .iter()
                .map(|x| i128::from(*x))
                .collect(),
            PNode::Matvec { a, matrix } => {
                let x = get(*a);
                matrix
                    .iter()
                    .map(|row| row.iter().zip(x).map(|(w, v)| i128::from(*w) * v).sum())
                    .collect()
            }
            PNode::Dot { a, weights } => {
                vec![weights
                    .iter()
                    .zip(get(*a))
                    .map(|(w, v)| i128::from(*w) * v)
                    .sum()]
            }
            PNode::Add { a, b } => get(*a).iter().zip(get(*b)).map(|(x, y)| x + y).collect(),
            PNode::Sub { a, b } => get(*a).iter().zip(get(*b)).map(|(x, y)| x - y).collect(),
            PNode::AddPlain { a, plain } => get(*a)
                .iter()
                .enumerate()
                .map(|(i, x)| x + plain_at(plain, i))
                .collect(),
            PNode::MulPlain { a, plain } => get(*a)
                .iter()
                .enumerate()
                .map(|(i, x)| x * plain_at(plain, i))
                .collect(),
            PNode::Square { a } => get(*a).iter().map(|x| x * x).collect(),
            PNode::Sum { a } => vec![get(*a).iter().sum()],
        };
        vals.push(v);
    }
    Ok(c.outputs
        .iter()
        .map(|o| vals[o.node as usize].clone())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn linear(n: usize, m: usize) -> BfvCircuit {
        BfvCircuit {
            version: FORMAT_VERSION,
            scheme: SCHEME_BFV.into(),
            name: "lin".into(),
            inputs: vec![VecInput {
                name: "x".into(),
                len: n as u32,
                min: 0,
                max: 15,
            }],
            nodes: vec![
                PNode::Input { input: 0 },
                PNode::Matvec {
                    a: 0,
                    matrix: (0..m)
                        .map(|i| (0..n).map(|j| ((i * 7 + j * 3) % 15) as i64 - 7).collect())
                        .collect(),
                },
            ],
            outputs: vec![VecOutput {
                name: "y".into(),
                node: 1,
            }],
        }
    }

    #[test]
    fn plain_modulus_is_prime_batching_friendly_and_large_enough() {
        for (bound, degree) in [(128, 4096), (1 << 20, 4096), (1 << 30, 8192), (0, 8192)] {
            let t = plain_modulus_for(bound, degree).unwrap();
            assert!(is_prime(t));
            assert_eq!(t % (2 * degree as u64), 1);
            assert!(i128::from(t) > 2 * bound);
        }
        assert!(plain_modulus_for(1 << 62, 4096).is_none());
        assert!(is_prime(65537) && !is_prime(65535) && is_prime(0xffffee001));
    }

    #[test]
    fn wide_matrix_folds_and_tall_matrix_does_not() {
        let wide = validate_bfv(linear(784, 10), &BfvLimits::default()).unwrap();
        let mv = wide.plan().nodes[1].matvec.clone().unwrap();
        assert_eq!(wide.plan().degree, 4096);
        assert_eq!((mv.diagonals, mv.period_in), (16, 1024));
        assert_eq!(mv.fold, vec![16, 32, 64, 128, 256, 512]);
        let tall = validate_bfv(linear(62, 4954), &BfvLimits::default()).unwrap();
        let node = &tall.plan().nodes[1];
        assert_eq!(node.layout, Layout::Chunked { chunks: 2 });
        assert_eq!(node.matvec.as_ref().unwrap().fold, Vec::<usize>::new());
        assert_eq!(node.matvec.as_ref().unwrap().diagonals, 64);
        // Every rotation the plan uses is listed for key generation.
        assert!(tall.plan().rotations.iter().all(|r| *r < 64));
    }

    #[test]
    fn too_deep_circuits_are_refused_with_a_reason() {
        let mut c = linear(16, 16);
        for _ in 0..6 {
            let last = c.nodes.len() as u32 - 1;
            c.nodes.push(PNode::Square { a: last });
        }
        c.outputs[0].node = c.nodes.len() as u32 - 1;
        let e = validate_bfv(c, &BfvLimits::default()).unwrap_err();
        assert!(matches!(e, BfvError::TooDeep(_)), "{e}");
    }

    #[test]
    fn hostile_structure_is_refused() {
        let mut c = linear(8, 4);
        c.nodes[1] = PNode::Matvec {
            a: 0,
            matrix: vec![vec![1; 7]],
        };
        assert!(validate_bfv(c, &BfvLimits::default()).is_err());
        let mut c = linear(8, 4);
        c.nodes.push(PNode::Add { a: 5, b: 0 });
        assert!(validate_bfv(c, &BfvLimits::default()).is_err());
        let bad = br#"{"version":1,"scheme":"bfv","name":"x","inputs":[],"nodes":[{"op":"rm"}],"outputs":[]}"#;
        assert!(matches!(
            parse_bfv(bad, &BfvLimits::default()),
            Err(BfvError::Json(_))
        ));
    }

    #[test]
    fn evaluation_is_exact() {
        let c = linear(5, 3);
        let out = evaluate_bfv(&c, &[vec![1, 2, 3, 4, 15]]).unwrap();
        let PNode::Matvec { matrix, .. } = &c.nodes[1] else {
            unreachable!()
        };
        let want: Vec<i128> = matrix
            .iter()
            .map(|r| {
                r.iter()
                    .zip([1, 2, 3, 4, 15])
                    .map(|(w, x)| i128::from(*w * x))
                    .sum()
            })
            .collect();
        assert_eq!(out, vec![want]);
        assert!(evaluate_bfv(&c, &[vec![1, 2, 3, 4, 16]]).is_err());
    }
}
