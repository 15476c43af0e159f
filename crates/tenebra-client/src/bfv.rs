//! Client side of BFV functions: the secret key per ring degree and the key set to
//! upload live in the key set directory next to the TFHE keys:
//! - `bfv-<degree>.key`: the secret key (never leaves the client);
//! - `bfv-<degree>.keyset`: the upload (public, relinearization and Galois keys). It is made
//!   once with the Galois keys of every BFV built-in, and remade (a new key set id) only
//!   when a function needs a rotation it lacks.

use std::path::{Path, PathBuf};

use serde_json::Value;
use tenebra_circuit::bfv::{BfvSignature, ValidBfv};
use tenebra_engine::bfv::{BfvKeySet, BfvSecret, KeyNeeds};
use tenebra_engine::EngineError;
use tenebra_functions::{bfv_builtins, BfvBuiltin};

use crate::ClientError;

/// Largest key set file read back.
const KEY_SET_FILE_LIMIT: u64 = 256 << 20;

/// Path of the key set upload for `degree` in `dir`.
pub fn key_set_file(dir: &Path, degree: usize) -> PathBuf {
    dir.join(format!("bfv-{degree}.keyset"))
}

/// What every BFV built-in at `degree` needs (the default key set's Galois keys).
fn builtin_needs(degree: usize) -> KeyNeeds {
    bfv_builtins()
        .iter()
        .map(|b| KeyNeeds::of(b.circuit().plan()))
        .filter(|n| n.degree == degree)
        .fold(
            KeyNeeds {
                degree,
                ..KeyNeeds::default()
            },
            |acc, n| acc.union(&n),
        )
}

/// A client's BFV keys for one degree: the secret key and the key set covering `needs`.
pub struct BfvKeys {
    pub secret: BfvSecret,
    pub key_set: BfvKeySet,
}

impl BfvKeys {
    /// Loads the keys for `circuit` from `dir`, making the secret key and the key set if
    /// missing, and remaking the key set (with the union of the Galois keys) if it lacks some
    /// the circuit needs.
    pub fn ensure(dir: &Path, circuit: &ValidBfv) -> Result<Self, ClientError> {
        Self::ensure_needs(dir, &KeyNeeds::of(circuit.plan()))
    }

    /// As [`Self::ensure`], for what a signature says a circuit needs.
    pub fn ensure_needs(dir: &Path, need: &KeyNeeds) -> Result<Self, ClientError> {
        let need = need.clone();
        let degree = need.degree;
        let secret = BfvSecret::load_or_generate(dir, degree)?;
        let path = key_set_file(dir, degree);
        let existing = match tenebra_engine::keys::read_limited(&path, KEY_SET_FILE_LIMIT) {
            Ok(bytes) => Some(BfvKeySet::parse(bytes)?),
            Err(_) if !path.exists() => None,
            Err(e) => return Err(e.into()),
        };
        if let Some(ks) = existing {
            if ks.header.needs.missing(&need).is_none() {
                return Ok(Self {
                    secret,
                    key_set: ks,
                });
            }
        }
        let mut all = builtin_needs(degree).union(&need);
        if let Ok(bytes) = std::fs::read(&path) {
            if let Ok(old) = BfvKeySet::parse(bytes) {
                all = all.union(&old.header.needs);
            }
        }
        let key_set = BfvKeySet::parse(secret.key_set(&all)?)?;
        std::fs::write(&path, key_set.bytes())
            .map_err(|e| EngineError::Io(format!("{}: {e}", path.display())))?;
        Ok(Self { secret, key_set })
    }

    /// Loads existing keys for `circuit` (the server side of `tenebra eval` reads only the
    /// key set).
    pub fn load_key_set(dir: &Path, circuit: &ValidBfv) -> Result<BfvKeySet, ClientError> {
        Self::load_key_set_for(dir, circuit.plan().degree)
    }

    /// The key set file for `degree` in `dir`.
    pub fn load_key_set_for(dir: &Path, degree: usize) -> Result<BfvKeySet, ClientError> {
        let path = key_set_file(dir, degree);
        let bytes = tenebra_engine::keys::read_limited(&path, KEY_SET_FILE_LIMIT)?;
        Ok(BfvKeySet::parse(bytes)?)
    }
}

/// Encrypts a BFV built-in's JSON input.
pub fn encrypt(dir: &Path, function: &BfvBuiltin, input: &Value) -> Result<Vec<u8>, ClientError> {
    let values = function.encode(input)?;
    let circuit = function.circuit();
    let keys = BfvKeys::ensure(dir, circuit)?;
    Ok(keys.secret.encrypt(
        &circuit.signature(),
        function.name,
        &keys.key_set.id(),
        &values,
    )?)
}

/// Decrypts a BFV built-in's result and applies its client-side post-processing.
pub fn decrypt(dir: &Path, function: &BfvBuiltin, result: &[u8]) -> Result<Value, ClientError> {
    let circuit = function.circuit();
    let header = tenebra_engine::bfv::result_header(result)?;
    if header.function != function.name {
        return Err(ClientError::Mismatch(format!(
            "this file was made for function `{}`, not `{}`",
            header.function, function.name
        )));
    }
    let secret = BfvSecret::load(dir, circuit.plan().degree)?;
    let outputs = secret.decrypt(&circuit.signature(), result)?;
    Ok(function.finish(&outputs))
}

/// Encrypts a float input for the first `compiled.layers` layers of `model` (quantized as
/// the model states; the key set is made or extended as for built-ins).
pub fn encrypt_model_input(
    dir: &Path,
    model: &tenebra_functions::model::Model,
    compiled: &tenebra_functions::model::Compiled,
    x: &[f64],
) -> Result<Vec<u8>, ClientError> {
    let q = model
        .quantize_input(x)
        .map_err(|e| ClientError::Mismatch(e.to_string()))?;
    let keys = BfvKeys::ensure(dir, &compiled.circuit)?;
    Ok(keys.secret.encrypt(
        &compiled.circuit.signature(),
        &compiled.circuit.circuit().name,
        &keys.key_set.id(),
        &[q],
    )?)
}

/// Decrypts an inference result: the exact integers and their dequantized activations.
pub fn decrypt_model_output(
    dir: &Path,
    compiled: &tenebra_functions::model::Compiled,
    result: &[u8],
) -> Result<(Vec<i64>, Vec<f64>), ClientError> {
    let secret = BfvSecret::load(dir, compiled.circuit.plan().degree)?;
    let y = secret
        .decrypt(&compiled.circuit.signature(), result)?
        .remove(0);
    let f = compiled.dequantize(&y);
    Ok((y, f))
}

/// Encrypts the inputs of a BFV circuit known only by its signature (a model on a server):
/// makes or extends the key set as needed.
pub fn encrypt_signed(
    dir: &Path,
    sig: &BfvSignature,
    function: &str,
    inputs: &[Vec<i64>],
) -> Result<Vec<u8>, ClientError> {
    let keys = BfvKeys::ensure_needs(dir, &KeyNeeds::of_signature(sig))?;
    Ok(keys
        .secret
        .encrypt(sig, function, &keys.key_set.id(), inputs)?)
}

/// Decrypts the result of a BFV circuit known by its signature.
pub fn decrypt_signed(
    dir: &Path,
    sig: &BfvSignature,
    result: &[u8],
) -> Result<Vec<Vec<i64>>, ClientError> {
    let secret = BfvSecret::load(dir, sig.degree)?;
    Ok(secret.decrypt(sig, result)?)
}
