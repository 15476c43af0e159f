//! The memory one BFV run needs, from its plan alone: what the executor holds (every node's
//! ciphertexts until the end, the input ciphertexts, the encoded plain operands, the
//! temporaries of the largest step, the result being written) and the decoded key set.
//!
//! Sizes follow fhe.rs's representation ([`bfv_footprint`] lists them). The model is an
//! upper bound that validation compares with [`super::BfvLimits::max_working_set_bytes`];
//! the engine's `bfv_footprint` test checks it against what runs allocate.

use super::ir::PNode;
use super::plan::BfvPlan;
use super::BfvCircuit;

/// The RNS primes of `q` at each ring degree (the engine holds the primes themselves; its
/// tests check the counts against this).
pub fn moduli_count(degree: usize) -> usize {
    match degree {
        4096 => 3,
        8192 => 5,
        _ => 9,
    }
}

/// Bytes of one polynomial over every prime of `q`.
fn poly_bytes(degree: usize) -> u64 {
    (degree * moduli_count(degree) * 8) as u64
}

/// Primes of the basis fhe.rs multiplies ciphertexts in: those of `q` and enough 62-bit
/// primes for the product (`Multiplicator::default`).
fn extended_moduli(degree: usize) -> u64 {
    (moduli_count(degree) + (super::modulus_bits(degree) as usize + 60).div_ceil(62)) as u64
}

/// What a run of a BFV circuit holds, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BfvFootprint {
    /// One two-component ciphertext.
    pub ciphertext_bytes: u64,
    /// Every value the run keeps (inputs and every node's ciphertexts).
    pub values_bytes: u64,
    /// The encoded plain operands (matrix diagonals, weights, constants).
    pub plaintext_bytes: u64,
    /// The evaluation keys, decoded, with what decoding holds on the way.
    pub keys_bytes: u64,
    /// The largest step's temporaries plus the serialized result.
    pub scratch_bytes: u64,
    /// All of the above.
    pub working_set_bytes: u64,
}

/// The memory a run of `circuit` under `plan` needs. Counted in polynomials over `q`
/// (`degree` words per prime), with these sizes (fhe.rs 0.1, checked against what runs
/// allocate by the engine's `bfv_footprint` test):
/// - a ciphertext is 2 polynomials, a plaintext `1 + 1/primes` (its NTT form and its
///   coefficients);
/// - a key switching key (each Galois key, the relinearization key) has one digit per
///   prime, each 2 polynomials held twice (with their Shoup form), and decoding also holds
///   the serialized digits: 6 polynomials a prime; the evaluation key adds 2 per bit of the
///   degree (monomials, with their Shoup form), the public key 2;
/// - a key switch (a rotation) needs a decomposition: `primes + 2` polynomials;
/// - a squaring builds a multiplicator (a copy of the relinearization key and the tables of
///   the extended basis, about 15 polynomials a prime of it) and multiplies every
///   ciphertext of its operand at once (3 components over the extended basis each);
/// - a matrix product holds its baby steps, every giant step's sum and, in flight, each
///   giant step's product and partial sum (at most that many run at once, whatever the
///   number of threads).
pub fn bfv_footprint(circuit: &BfvCircuit, plan: &BfvPlan) -> BfvFootprint {
    let degree = plan.degree;
    let poly = poly_bytes(degree);
    let moduli = moduli_count(degree) as u64;
    let ct = 2 * poly;
    let pt = poly + (degree * 8) as u64;
    let key_switch = (moduli + 2) * poly;
    let cts = |node: u32| {
        plan.nodes
            .get(node as usize)
            .map_or(0, |n| n.layout.ciphertexts() as u64)
    };
    let mut values = 0u64;
    let mut plaintexts = 0u64;
    let mut step = 0u64;
    for (id, node) in circuit.nodes.iter().enumerate() {
        let own = plan.nodes[id].layout.ciphertexts() as u64;
        values = values.saturating_add(own.saturating_mul(ct));
        let (pts, temp) = match node {
            // The executor holds the input's ciphertexts and the node's copy of them.
            PNode::Input { .. } => (0, own.saturating_mul(ct)),
            PNode::Matvec { .. } => match &plan.nodes[id].matvec {
                Some(mv) => {
                    let groups = own.saturating_mul(mv.giant as u64);
                    let held = (mv.baby as u64).saturating_add(groups).saturating_mul(ct);
                    let in_flight = groups.saturating_mul(2 * ct + key_switch);
                    (
                        groups.saturating_mul(mv.baby as u64),
                        held.saturating_add(in_flight).saturating_add(2 * own * ct),
                    )
                }
                None => (0, 0),
            },
            PNode::Dot { a, .. } => (
                cts(*a),
                cts(*a)
                    .saturating_mul(ct)
                    .saturating_add(key_switch + 2 * ct),
            ),
            PNode::AddPlain { a, .. } | PNode::MulPlain { a, .. } => (cts(*a), 0),
            PNode::Square { a } => {
                let multiplicator = (4 * moduli + 15 * extended_moduli(degree)) * poly;
                let products =
                    cts(*a).saturating_mul(3 * extended_moduli(degree) * degree as u64 * 8);
                (0, multiplicator.saturating_add(products))
            }
            PNode::Sum { a } => (
                0,
                cts(*a)
                    .saturating_mul(ct)
                    .saturating_add(key_switch + 2 * ct),
            ),
            PNode::Add { .. } | PNode::Sub { .. } => (0, 0),
        };
        plaintexts = plaintexts.saturating_add(pts.saturating_mul(pt));
        step = step.max(temp);
    }
    let ksk = 6 * moduli * poly;
    let log_degree = u64::from(degree.max(1).ilog2());
    let keys = (plan.galois_keys() as u64 + u64::from(plan.relin))
        .saturating_mul(ksk)
        .saturating_add((2 + 2 * log_degree) * poly);
    // The result: each output's ciphertexts serialized, then framed into one buffer.
    let outputs: u64 = circuit.outputs.iter().map(|o| cts(o.node)).sum();
    let scratch = step.saturating_add(outputs.saturating_mul(2 * ct));
    BfvFootprint {
        ciphertext_bytes: ct,
        values_bytes: values,
        plaintext_bytes: plaintexts,
        keys_bytes: keys,
        scratch_bytes: scratch,
        working_set_bytes: values
            .saturating_add(plaintexts)
            .saturating_add(keys)
            .saturating_add(scratch),
    }
}
