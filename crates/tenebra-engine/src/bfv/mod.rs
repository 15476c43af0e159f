//! The BFV backend: BFV from the pure-Rust `fhe` crate (fhe.rs, `tfhe-ntt`).
//!
//! Parameters are the 128-bit-security sets of the homomorphic encryption standard: ring degree
//! 4096 with a 109-bit ciphertext modulus (three NTT primes), 8192 with 218 bits (five) or
//! 16384 with 438 bits (nine); the
//! plaintext modulus is chosen per circuit by [`tenebra_circuit::bfv`] so that no result
//! wraps. Key material does not depend on the plaintext modulus, so one key set per degree
//! serves every function: the server reads it at each function's modulus.
//!
//! A BFV key set (what a client uploads) is a bundle of kind `KeySet`: a JSON header (degree,
//! the column rotations it has Galois keys for, row swap, relinearization) and the public key,
//! relinearization key and evaluation (Galois) keys as fhe.rs protobuf bytes, each
//! length-prefixed. Everything read from the network is size-limited, decoded under
//! `catch_unwind` (a hostile protobuf must never take a worker down), and checked against the
//! header and the parameters.
//!
//! Encrypted inputs and results are bundles too (kinds `Input`/`Result`, a [`BfvHeader`]),
//! holding length-prefixed ciphertexts in the layouts the plan gives.

use std::collections::BTreeSet;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};

use fhe::bfv::{
    BfvParameters, BfvParametersBuilder, Ciphertext, Encoding, EvaluationKey, EvaluationKeyBuilder,
    Multiplicator, Plaintext, PublicKey, RelinearizationKey, SecretKey,
};
use fhe_traits::{
    DeserializeParametrized, FheDecoder, FheDecrypter, FheEncoder, FheEncrypter, Serialize as _,
};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tenebra_circuit::bfv::{
    layout_for, BfvPlan, BfvSignature, Layout, MatvecPlan, PNode, ValidBfv, SCHEME_BFV,
};

use crate::bundle::{self, Kind};
use crate::EngineError;

mod client;
mod exec;
mod frame;
mod keyset;
mod params;

pub use client::*;
pub use exec::*;
pub use frame::*;
pub use keyset::*;
pub use params::*;

/// Version of the BFV key set and bundle headers.
pub const BFV_VERSION: u32 = 1;
/// Largest accepted BFV key set upload.
pub const KEY_SET_LIMIT: u64 = 256 << 20;
pub(crate) fn internal(e: impl std::fmt::Display) -> EngineError {
    EngineError::Internal(e.to_string())
}

/// Runs fhe.rs code on untrusted data: a panic becomes a client error.
pub(crate) fn guarded<T>(
    what: &str,
    f: impl FnOnce() -> Result<T, EngineError>,
) -> Result<T, EngineError> {
    catch_unwind(AssertUnwindSafe(f))
        .unwrap_or_else(|_| Err(EngineError::BadInput(format!("{what} is malformed"))))
}

pub(crate) fn input_layout(circuit: &ValidBfv, input: usize) -> Result<Layout, EngineError> {
    let len = circuit
        .circuit()
        .inputs
        .get(input)
        .ok_or_else(|| internal("no such input"))?
        .len as usize;
    Ok(layout_for(len, circuit.plan().degree))
}
