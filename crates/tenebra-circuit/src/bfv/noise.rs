//! Parameters and noise: the ciphertext modulus at each ring degree, the plaintext modulus
//! search (the smallest batching prime that holds every output), and the noise estimate that
//! refuses a circuit too deep for the parameters.

use super::ir::{BfvCircuit, PNode};
use super::layout::Layout;
use super::plan::NodeInfo;
use super::validate::BfvError;

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
pub(crate) fn prime_bits(degree: usize) -> f64 {
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

/// Second pass of planning: the noise every node carries, now that the plaintext modulus is
/// known; returns the budget left at the worst output, or refuses a circuit too deep.
pub(crate) fn estimate(
    c: &BfvCircuit,
    nodes: &mut [NodeInfo],
    degree: usize,
    plain_modulus: u64,
) -> Result<f64, BfvError> {
    let log_n = degree.ilog2() as f64;
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
    Ok(noise_left_bits)
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
pub(crate) fn is_prime(n: u64) -> bool {
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
