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

mod cost;
mod eval;
mod footprint;
mod ir;
mod layout;
mod noise;
mod plan;
#[cfg(test)]
mod tests;
mod validate;

pub use cost::cost_cu;
pub use eval::evaluate_bfv;
pub use footprint::{bfv_footprint, moduli_count, BfvFootprint};
pub use ir::{BfvCircuit, PNode, VecInput, VecOutput};
pub use layout::{layout_for, Layout};
pub use noise::{modulus_bits, plain_modulus_for, MAX_PLAIN_BITS, NOISE_MARGIN_BITS};
pub use plan::{plan_bfv, BfvPlan, MatvecPlan, NodeInfo, OpCounts};
pub use validate::{
    parse_bfv, validate_bfv, BfvError, BfvLimits, BfvSignature, SignatureOutput, ValidBfv,
};

/// The scheme name BFV circuits declare.
pub const SCHEME_BFV: &str = "bfv";

/// Ring degrees the backend offers, smallest (fastest) first.
pub const DEGREES: [usize; 3] = [4096, 8192, 16384];
