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

/// NTT-friendly moduli of the 128-bit parameter sets (from fhe.rs's standard sets).
const MODULI_4096: [u64; 3] = [0xffffee001, 0xffffc4001, 0x1ffffe0001];
const MODULI_8192: [u64; 5] = [
    0x7fffffd8001,
    0x7fffffc8001,
    0xfffffffc001,
    0xffffff6c001,
    0xfffffebc001,
];

const MODULI_16384: [u64; 9] = [
    0xfffffffd8001,
    0xfffffffa0001,
    0xfffffff00001,
    0x1fffffff68001,
    0x1fffffff50001,
    0x1ffffffee8001,
    0x1ffffffea0001,
    0x1ffffffe88001,
    0x1ffffffe48001,
];

/// Version of the BFV key set and bundle headers.
pub const BFV_VERSION: u32 = 1;
/// Largest accepted BFV key set upload.
pub const KEY_SET_LIMIT: u64 = 256 << 20;
/// Largest serialized ciphertext accepted (degree 16384, nine moduli, three polynomials).
const CT_LIMIT: usize = 3 * 9 * 16384 * 8 + 4096;

/// Key file of the secret key for `degree` in a key set directory.
pub fn secret_key_file(degree: usize) -> String {
    format!("bfv-{degree}.key")
}

fn internal(e: impl std::fmt::Display) -> EngineError {
    EngineError::Internal(e.to_string())
}

/// Bytes of the parameter sets kept: each holds NTT and scaling tables for its moduli
/// (estimated at 8 words per coefficient and modulus: ~9.4 MiB at N=16384), so a few dozen
/// plaintext moduli fit and tenants' circuits cannot pin one set per modulus forever.
const PARAMETER_CACHE_BYTES: u64 = 256 << 20;

/// Weighs cache entries by the bytes they hold (stored beside the value).
#[derive(Clone)]
struct ByBytes;

impl<K, V> quick_cache::Weighter<K, (u64, V)> for ByBytes {
    fn weight(&self, _key: &K, val: &(u64, V)) -> u64 {
        val.0
    }
}

type BytesCache<K, V> = quick_cache::sync::Cache<K, (u64, V), ByBytes>;

/// The parameters for `degree` and plaintext modulus `t`, shared (one `Arc` per pair while it
/// is cached, as fhe.rs requires ciphertexts and plaintexts of one operation to share it; a
/// run takes every operand from one `Arc`, and caches of things made with a set key it by
/// its address, so an evicted set is never mixed with its successor).
pub fn parameters(degree: usize, t: u64) -> Result<Arc<BfvParameters>, EngineError> {
    static CACHE: OnceLock<BytesCache<(usize, u64), Arc<BfvParameters>>> = OnceLock::new();
    let cache = CACHE.get_or_init(|| BytesCache::with_weighter(64, PARAMETER_CACHE_BYTES, ByBytes));
    if let Some((_, p)) = cache.get(&(degree, t)) {
        return Ok(p);
    }
    let moduli: &[u64] = match degree {
        4096 => &MODULI_4096,
        8192 => &MODULI_8192,
        16384 => &MODULI_16384,
        _ => {
            return Err(EngineError::BadInput(format!(
                "ring degree {degree} is not offered (4096, 8192 or 16384)"
            )))
        }
    };
    let p = BfvParametersBuilder::new()
        .set_degree(degree)
        .set_plaintext_modulus(t)
        .set_moduli(moduli)
        .build_arc()
        .map_err(|e| EngineError::BadInput(format!("plaintext modulus {t}: {e}")))?;
    let bytes = (degree * moduli.len() * 8 * 8) as u64;
    cache.insert((degree, t), (bytes, p.clone()));
    Ok(p)
}

/// A plaintext modulus every degree accepts, to read keys whose use does not depend on it.
const CHECK_MODULUS: u64 = 65537;

/// Runs fhe.rs code on untrusted data: a panic becomes a client error.
fn guarded<T>(what: &str, f: impl FnOnce() -> Result<T, EngineError>) -> Result<T, EngineError> {
    catch_unwind(AssertUnwindSafe(f))
        .unwrap_or_else(|_| Err(EngineError::BadInput(format!("{what} is malformed"))))
}

// ---- keys ---------------------------------------------------------------------------------

/// Which keys a BFV function needs: the degree, its column rotations, row swap and
/// relinearization. A key set serves a function when it covers these.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyNeeds {
    pub degree: usize,
    pub rotations: BTreeSet<usize>,
    pub row_swap: bool,
    pub relin: bool,
}

impl KeyNeeds {
    pub fn of(plan: &BfvPlan) -> Self {
        Self {
            degree: plan.degree,
            rotations: plan.rotations.clone(),
            row_swap: plan.row_swap,
            relin: plan.relin,
        }
    }

    /// What a circuit with this signature needs.
    pub fn of_signature(sig: &BfvSignature) -> Self {
        Self {
            degree: sig.degree,
            rotations: sig.rotations.clone(),
            row_swap: sig.row_swap,
            relin: sig.relin,
        }
    }

    /// The union with `other` (same degree).
    pub fn union(mut self, other: &KeyNeeds) -> Self {
        self.rotations.extend(other.rotations.iter().copied());
        self.row_swap |= other.row_swap;
        self.relin |= other.relin;
        self
    }

    /// What of `need` this key set lacks, in words; `None` if it covers it.
    pub fn missing(&self, need: &KeyNeeds) -> Option<String> {
        if self.degree != need.degree {
            return Some(format!(
                "the function runs at ring degree {}, the key set is for {}",
                need.degree, self.degree
            ));
        }
        let lacking: Vec<usize> = need
            .rotations
            .difference(&self.rotations)
            .copied()
            .collect();
        let mut parts = Vec::new();
        if !lacking.is_empty() {
            parts.push(format!("Galois keys for rotations {lacking:?}"));
        }
        if need.row_swap && !self.row_swap {
            parts.push("the row-swap Galois key".into());
        }
        if need.relin && !self.relin {
            parts.push("a relinearization key".into());
        }
        (!parts.is_empty()).then(|| format!("the key set lacks {}", parts.join(", ")))
    }
}

/// The JSON header of a BFV key set upload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeySetHeader {
    pub version: u32,
    pub scheme: String,
    #[serde(flatten)]
    pub needs: KeyNeeds,
    /// Byte lengths of the public key, relinearization key (0 if none) and evaluation key.
    pub sizes: [u64; 3],
}

/// The client's secret key for one ring degree (never leaves the client).
pub struct BfvSecret {
    degree: usize,
    bytes: zeroize::Zeroizing<Vec<u8>>,
}

impl BfvSecret {
    /// A fresh secret key.
    pub fn generate(degree: usize) -> Result<Self, EngineError> {
        let par = parameters(degree, CHECK_MODULUS)?;
        let sk = SecretKey::random(&par, &mut rand09::rng());
        Ok(Self {
            degree,
            bytes: sk.to_bytes().into(),
        })
    }

    /// Loads the key for `degree` from a key set directory.
    pub fn load(dir: &Path, degree: usize) -> Result<Self, EngineError> {
        let path = dir.join(secret_key_file(degree));
        let bytes = std::fs::read(&path).map_err(|e| {
            EngineError::BadInput(format!(
                "{}: {e} (no BFV secret key for ring degree {degree} in this key set)",
                path.display()
            ))
        })?;
        let s = Self {
            degree,
            bytes: bytes.into(),
        };
        s.key(CHECK_MODULUS)?;
        Ok(s)
    }

    /// Loads the key for `degree` from a key set directory, generating and saving it first if
    /// it is not there.
    pub fn load_or_generate(dir: &Path, degree: usize) -> Result<Self, EngineError> {
        let path = dir.join(secret_key_file(degree));
        match std::fs::read(&path) {
            Ok(bytes) => {
                let s = Self {
                    degree,
                    bytes: bytes.into(),
                };
                s.key(CHECK_MODULUS)?;
                Ok(s)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let s = Self::generate(degree)?;
                std::fs::create_dir_all(dir).map_err(|e| EngineError::Io(e.to_string()))?;
                crate::keys::write_private(&path, &s.bytes)?;
                Ok(s)
            }
            Err(e) => Err(EngineError::Io(format!("{}: {e}", path.display()))),
        }
    }

    pub fn degree(&self) -> usize {
        self.degree
    }

    fn key(&self, t: u64) -> Result<SecretKey, EngineError> {
        let par = parameters(self.degree, t)?;
        guarded("the secret key file", || {
            SecretKey::from_bytes(&self.bytes, &par)
                .map_err(|e| EngineError::BadInput(format!("the secret key file: {e}")))
        })
    }

    /// The key set to upload for `needs` (public key, relinearization and Galois keys).
    pub fn key_set(&self, needs: &KeyNeeds) -> Result<Vec<u8>, EngineError> {
        if needs.degree != self.degree {
            return Err(internal("key set degree differs from the secret key's"));
        }
        let sk = self.key(CHECK_MODULUS)?;
        let rng = &mut rand09::rng();
        let pk = PublicKey::new(&sk, rng).to_bytes();
        let rk = if needs.relin {
            RelinearizationKey::new(&sk, rng)
                .map_err(internal)?
                .to_bytes()
        } else {
            Vec::new()
        };
        let mut builder = EvaluationKeyBuilder::new(&sk).map_err(internal)?;
        for r in &needs.rotations {
            builder.enable_column_rotation(*r).map_err(|e| {
                EngineError::BadInput(format!("rotation {r} at degree {}: {e}", self.degree))
            })?;
        }
        if needs.row_swap {
            builder.enable_row_rotation().map_err(internal)?;
        }
        let ek = builder.build(rng).map_err(internal)?.to_bytes();
        let header = KeySetHeader {
            version: BFV_VERSION,
            scheme: SCHEME_BFV.into(),
            needs: needs.clone(),
            sizes: [pk.len() as u64, rk.len() as u64, ek.len() as u64],
        };
        let payload = [pk, rk, ek].concat();
        bundle::write(Kind::KeySet, &header, &payload)
    }

    /// Encrypts the inputs of a BFV circuit (lengths and ranges checked against its
    /// signature).
    pub fn encrypt(
        &self,
        sig: &BfvSignature,
        function: &str,
        key_set_id: &str,
        inputs: &[Vec<i64>],
    ) -> Result<Vec<u8>, EngineError> {
        if inputs.len() != sig.inputs.len() {
            return Err(EngineError::BadInput(format!(
                "{} inputs for {} declared",
                inputs.len(),
                sig.inputs.len()
            )));
        }
        for (v, i) in inputs.iter().zip(&sig.inputs) {
            if v.len() != i.len as usize {
                return Err(EngineError::BadInput(format!(
                    "input `{}` takes {} values, got {}",
                    i.name,
                    i.len,
                    v.len()
                )));
            }
            if let Some(x) = v.iter().find(|x| **x < i.min || **x > i.max) {
                return Err(EngineError::BadInput(format!(
                    "input `{}`: {x} is outside its range {}..={}",
                    i.name, i.min, i.max
                )));
            }
        }
        let par = parameters(sig.degree, sig.plain_modulus)?;
        let sk = self.key(sig.plain_modulus)?;
        let rng = &mut rand09::rng();
        let mut cts = Vec::new();
        let mut counts = Vec::new();
        for (v, i) in inputs.iter().zip(&sig.inputs) {
            let slots = sig.layout(i.len as usize).place(v, sig.degree);
            counts.push(slots.len() as u32);
            for s in slots {
                let pt = Plaintext::try_encode(&s, Encoding::simd(), &par).map_err(internal)?;
                let ct: Ciphertext = sk.try_encrypt(&pt, rng).map_err(internal)?;
                cts.push(ct.to_bytes());
            }
        }
        let header = BfvHeader {
            version: BFV_VERSION,
            scheme: SCHEME_BFV.into(),
            function: function.into(),
            circuit_id: sig.circuit_id.clone(),
            key_set_id: key_set_id.into(),
            degree: sig.degree,
            plain_modulus: sig.plain_modulus,
            counts,
        };
        bundle::write(Kind::Input, &header, &frame(&cts))
    }

    /// Decrypts a result bundle made by [`run`] for the circuit of `sig`: one vector per
    /// output.
    pub fn decrypt(&self, sig: &BfvSignature, result: &[u8]) -> Result<Vec<Vec<i64>>, EngineError> {
        let (header, payload) = read_bundle(result, Kind::Result, sig)?;
        let par = parameters(sig.degree, sig.plain_modulus)?;
        let sk = self.key(sig.plain_modulus)?;
        let total = header.counts.iter().map(|c| *c as usize).sum();
        let mut cts = unframe(payload, &par, total)?.into_iter();
        let mut out = Vec::new();
        for (i, o) in sig.outputs.iter().enumerate() {
            let layout = sig.layout(o.len);
            if header.counts.get(i) != Some(&(layout.ciphertexts() as u32)) {
                return Err(EngineError::BadInput(format!(
                    "the result's output `{}` has the wrong number of ciphertexts",
                    o.name
                )));
            }
            let mut slots = Vec::new();
            for _ in 0..layout.ciphertexts() {
                let ct = cts.next().ok_or_else(|| internal("missing ciphertext"))?;
                let pt = guarded("the result", || sk.try_decrypt(&ct).map_err(internal))?;
                slots.push(Vec::<i64>::try_decode(&pt, Encoding::simd()).map_err(internal)?);
            }
            out.push(layout.read(&slots, o.len, sig.degree));
        }
        Ok(out)
    }

    /// Remaining noise budget of a ciphertext, in bits (for tests and diagnostics).
    pub fn noise_budget(&self, circuit: &ValidBfv, result: &[u8]) -> Result<f64, EngineError> {
        let plan = circuit.plan();
        let (_, payload) = read_bundle(result, Kind::Result, &circuit.signature())?;
        let par = parameters(plan.degree, plan.plain_modulus)?;
        let sk = self.key(plan.plain_modulus)?;
        let cts = unframe(payload, &par, usize::MAX)?;
        let q_bits: f64 = par.moduli().iter().map(|m| (*m as f64).log2()).sum();
        let t_bits = (plan.plain_modulus as f64).log2();
        let mut least = f64::MAX;
        for ct in &cts {
            // Memory-safe: `measure_noise` is `unsafe` only because its timing depends on the
            // secret key, and this runs on the client, on its own key and result.
            #[allow(unsafe_code)]
            let noise = unsafe { sk.measure_noise(ct) }.map_err(internal)? as f64;
            least = least.min(q_bits - t_bits - noise - 1.0);
        }
        Ok(least)
    }
}

fn input_layout(circuit: &ValidBfv, input: usize) -> Result<Layout, EngineError> {
    let len = circuit
        .circuit()
        .inputs
        .get(input)
        .ok_or_else(|| internal("no such input"))?
        .len as usize;
    Ok(layout_for(len, circuit.plan().degree))
}

/// Keys decoded per plaintext modulus.
type Decoded = Vec<(u64, Arc<Evaluator>)>;

/// A BFV key set as the server holds it: its header and raw bytes, checked at upload.
#[derive(Clone)]
pub struct BfvKeySet {
    pub header: KeySetHeader,
    bytes: Arc<Vec<u8>>,
    body: usize,
    /// Keys decoded per plaintext modulus (decoding takes longer than a small run).
    decoded: Arc<Mutex<Decoded>>,
}

impl std::fmt::Debug for BfvKeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BfvKeySet")
            .field("header", &self.header)
            .finish()
    }
}

impl BfvKeySet {
    /// Parses and checks an untrusted key set upload: framing, header, sizes, and every key
    /// decoded against the parameters; the evaluation key must hold exactly the Galois keys
    /// the header lists.
    pub fn parse(bytes: Vec<u8>) -> Result<Self, EngineError> {
        if bytes.len() as u64 > KEY_SET_LIMIT {
            return Err(EngineError::BadInput(format!(
                "the key set is over the {KEY_SET_LIMIT}-byte limit"
            )));
        }
        let (header, payload): (KeySetHeader, &[u8]) = bundle::read_as(&bytes, Kind::KeySet)?;
        let bad = |m: String| EngineError::BadInput(format!("not a valid BFV key set: {m}"));
        if header.version != BFV_VERSION || header.scheme != SCHEME_BFV {
            return Err(bad(format!(
                "version {} / scheme `{}` (expected {BFV_VERSION} / `{SCHEME_BFV}`)",
                header.version, header.scheme
            )));
        }
        if header.sizes.iter().sum::<u64>() != payload.len() as u64 {
            return Err(bad("the key sizes do not add up to the payload".into()));
        }
        if header
            .needs
            .rotations
            .iter()
            .any(|r| *r == 0 || *r >= header.needs.degree / 2)
        {
            return Err(bad("a rotation is outside 1..degree/2".into()));
        }
        if header.needs.relin != (header.sizes[1] > 0) {
            return Err(bad(
                "the relinearization key does not match the header".into()
            ));
        }
        let body = bytes.len() - payload.len();
        let set = Self {
            header,
            bytes: Arc::new(bytes),
            body,
            decoded: Arc::default(),
        };
        set.keys(CHECK_MODULUS)?;
        Ok(set)
    }

    /// The key set id: SHA-256 of the upload.
    pub fn id(&self) -> String {
        hex::encode(Sha256::digest(self.bytes.as_slice()))
    }

    /// The upload bytes (what is stored).
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    fn section(&self, i: usize) -> &[u8] {
        let s = self.header.sizes;
        let start = self.body + s[..i].iter().sum::<u64>() as usize;
        &self.bytes[start..start + s[i] as usize]
    }

    /// The keys decoded at plaintext modulus `t`, kept for the next runs (a few moduli).
    pub fn evaluator(&self, t: u64) -> Result<Arc<Evaluator>, EngineError> {
        if let Some((_, e)) = self
            .decoded
            .lock()
            .map_err(internal)?
            .iter()
            .find(|(m, _)| *m == t)
        {
            return Ok(e.clone());
        }
        let e = Arc::new(self.keys(t)?);
        let mut d = self.decoded.lock().map_err(internal)?;
        if d.len() >= 4 {
            d.remove(0);
        }
        d.push((t, e.clone()));
        Ok(e)
    }

    /// The keys, decoded at plaintext modulus `t`.
    fn keys(&self, t: u64) -> Result<Evaluator, EngineError> {
        let par = parameters(self.header.needs.degree, t)?;
        guarded("the key set", || {
            let bad = |what: &str, e: fhe::Error| {
                EngineError::BadInput(format!("not a valid BFV key set: {what}: {e}"))
            };
            PublicKey::from_bytes(self.section(0), &par).map_err(|e| bad("public key", e))?;
            let rk = if self.header.needs.relin {
                Some(
                    RelinearizationKey::from_bytes(self.section(1), &par)
                        .map_err(|e| bad("relinearization key", e))?,
                )
            } else {
                None
            };
            let ek = EvaluationKey::from_bytes(self.section(2), &par)
                .map_err(|e| bad("evaluation key", e))?;
            let needs = &self.header.needs;
            for r in &needs.rotations {
                if !ek.supports_column_rotation_by(*r) {
                    return Err(EngineError::BadInput(format!(
                        "not a valid BFV key set: the header lists rotation {r} but the \
                         evaluation key has no Galois key for it"
                    )));
                }
            }
            if needs.row_swap && !ek.supports_row_rotation() {
                return Err(EngineError::BadInput(
                    "not a valid BFV key set: the row-swap key is missing".into(),
                ));
            }
            Ok(Evaluator { par, ek, rk })
        })
    }
}

/// Keys decoded at one plaintext modulus: what a run needs.
pub struct Evaluator {
    par: Arc<BfvParameters>,
    ek: EvaluationKey,
    rk: Option<RelinearizationKey>,
}

impl Evaluator {
    fn rotate(&self, ct: &Ciphertext, r: usize) -> Result<Ciphertext, EngineError> {
        self.ek.rotates_columns_by(ct, r).map_err(|e| {
            EngineError::BadInput(format!("rotation by {r}: {e} (the key set lacks its key)"))
        })
    }
}

// ---- bundles ------------------------------------------------------------------------------

/// Header of BFV input and result bundles.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BfvHeader {
    pub version: u32,
    pub scheme: String,
    pub function: String,
    pub circuit_id: String,
    pub key_set_id: String,
    pub degree: usize,
    pub plain_modulus: u64,
    /// Ciphertexts per input (or output), in order.
    pub counts: Vec<u32>,
}

fn frame(cts: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::with_capacity(cts.iter().map(|c| c.len() + 4).sum());
    for c in cts {
        out.extend_from_slice(&(c.len() as u32).to_le_bytes());
        out.extend_from_slice(c);
    }
    out
}

fn unframe(
    mut bytes: &[u8],
    par: &Arc<BfvParameters>,
    expected: usize,
) -> Result<Vec<Ciphertext>, EngineError> {
    let bad = |m: &str| EngineError::BadInput(format!("malformed ciphertexts: {m}"));
    let mut out = Vec::new();
    while !bytes.is_empty() {
        if bytes.len() < 4 {
            return Err(bad("truncated length"));
        }
        let len = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize;
        if len > CT_LIMIT || 4 + len > bytes.len() {
            return Err(bad("a ciphertext is truncated or too large"));
        }
        let ct = guarded("a ciphertext", || {
            let ct =
                Ciphertext::from_bytes(&bytes[4..4 + len], par).map_err(|e| bad(&e.to_string()))?;
            if ct.len() != 2 {
                return Err(bad("not a fresh two-component ciphertext"));
            }
            Ok(ct)
        })?;
        out.push(ct);
        bytes = &bytes[4 + len..];
        if out.len() > expected {
            return Err(bad("more ciphertexts than the header says"));
        }
    }
    if expected != usize::MAX && out.len() != expected {
        return Err(bad("fewer ciphertexts than the header says"));
    }
    Ok(out)
}

fn read_bundle<'a>(
    bytes: &'a [u8],
    kind: Kind,
    sig: &BfvSignature,
) -> Result<(BfvHeader, &'a [u8]), EngineError> {
    let (header, payload): (BfvHeader, &[u8]) = bundle::read_as(bytes, kind)?;
    if header.version != BFV_VERSION || header.scheme != SCHEME_BFV {
        return Err(EngineError::BadInput(format!(
            "bundle version {} / scheme `{}` is not supported",
            header.version, header.scheme
        )));
    }
    if header.circuit_id != sig.circuit_id
        || header.degree != sig.degree
        || header.plain_modulus != sig.plain_modulus
    {
        return Err(EngineError::BadInput(format!(
            "the file was made for another version of `{}` (circuit {}, expected {})",
            header.function, header.circuit_id, sig.circuit_id
        )));
    }
    Ok((header, payload))
}

/// Reads an input bundle's header (checks nothing but the framing).
pub fn input_header(bytes: &[u8]) -> Result<BfvHeader, EngineError> {
    Ok(bundle::read_as::<BfvHeader>(bytes, Kind::Input)?.0)
}

/// Reads a result bundle's header (checks nothing but the framing).
pub fn result_header(bytes: &[u8]) -> Result<BfvHeader, EngineError> {
    Ok(bundle::read_as::<BfvHeader>(bytes, Kind::Result)?.0)
}

// ---- execution ----------------------------------------------------------------------------

/// Plaintexts of a circuit's plain operands, encoded once per (circuit, parameters) and kept
/// for the next runs (the ad catalogue's 128 diagonals take longer to encode than to apply),
/// up to [`ENCODED_CACHE_BYTES`] over all circuits (a wide circuit's diagonals can take
/// gigabytes: one larger than a cache shard is encoded for each run instead).
type Encoded = Arc<Vec<Vec<Option<Plaintext>>>>;

/// Bytes of encoded plaintexts kept over all circuits.
pub const ENCODED_CACHE_BYTES: u64 = 1 << 30;

fn encoded(circuit: &ValidBfv, par: &Arc<BfvParameters>) -> Result<Encoded, EngineError> {
    // Keyed by the parameters' address: entries hold their `Arc`, so it is never reused.
    type Key = (String, usize);
    static CACHE: OnceLock<BytesCache<Key, Encoded>> = OnceLock::new();
    let cache = CACHE.get_or_init(|| BytesCache::with_weighter(64, ENCODED_CACHE_BYTES, ByBytes));
    let key = (circuit.id().to_string(), Arc::as_ptr(par) as usize);
    if let Some((_, e)) = cache.get(&key) {
        return Ok(e);
    }
    let plan = circuit.plan();
    let nodes = circuit.circuit().nodes.iter().enumerate();
    let per_node: Vec<Vec<Option<Plaintext>>> = nodes
        .map(|(id, n)| encode_node(n, plan, id, par))
        .collect::<Result<_, _>>()?;
    let plaintexts = per_node.iter().flatten().filter(|p| p.is_some()).count() as u64;
    // A plaintext holds its coefficients and its NTT form over every modulus.
    let each = (par.degree() * (par.moduli().len() + 1) * 8) as u64;
    let e = Arc::new(per_node);
    cache.insert(key, (plaintexts.saturating_mul(each), e.clone()));
    Ok(e)
}

fn encode_slots(slots: &[i64], par: &Arc<BfvParameters>) -> Result<Option<Plaintext>, EngineError> {
    if slots.iter().all(|v| *v == 0) {
        return Ok(None);
    }
    Plaintext::try_encode(slots, Encoding::simd(), par)
        .map(Some)
        .map_err(internal)
}

fn arg_layout_cts(plan: &BfvPlan, n: &PNode) -> usize {
    n.deps()
        .first()
        .map_or(1, |a| plan.nodes[*a as usize].layout.ciphertexts())
}

fn encode_always(
    slots: &[i64],
    par: &Arc<BfvParameters>,
) -> Result<Option<Plaintext>, EngineError> {
    Plaintext::try_encode(slots, Encoding::simd(), par)
        .map(Some)
        .map_err(internal)
}

/// The plaintexts node `id` multiplies or adds, in the order the executor uses them.
fn encode_node(
    n: &PNode,
    plan: &BfvPlan,
    id: usize,
    par: &Arc<BfvParameters>,
) -> Result<Vec<Option<Plaintext>>, EngineError> {
    let degree = plan.degree;
    let info = &plan.nodes[id];
    let arg_layout = |a: u32| plan.nodes[a as usize].layout;
    match n {
        PNode::Matvec { a, matrix } => {
            let mv = info
                .matvec
                .as_ref()
                .ok_or_else(|| internal("matvec without plan"))?;
            let x_len = plan.nodes[*a as usize].len;
            let chunks = info.layout.ciphertexts();
            let mut out = Vec::with_capacity(chunks * mv.giant * mv.baby);
            for c in 0..chunks {
                for g in 0..mv.giant {
                    let slots: Vec<Vec<i64>> = (0..mv.baby)
                        .into_par_iter()
                        .map(|b| {
                            diagonal(
                                matrix,
                                x_len,
                                info.layout,
                                mv,
                                c,
                                g * mv.baby + b,
                                g * mv.baby,
                                degree,
                            )
                        })
                        .collect();
                    for s in slots {
                        out.push(encode_slots(&s, par)?);
                    }
                }
                // An all-zero matrix still multiplies (to zero): keep one plaintext.
                let first = c * mv.giant * mv.baby;
                if out[first..].iter().all(Option::is_none) {
                    out[first] = encode_always(&vec![0; degree], par)?;
                }
            }
            Ok(out)
        }
        PNode::Dot { a, weights } => arg_layout(*a)
            .place(weights, degree)
            .iter()
            .map(|s| encode_always(s, par))
            .collect(),
        // A constant factor multiplies every slot (padding stays 0): the constant polynomial
        // |c|, which grows the noise by |c| only (the executor negates for c < 0; -c as a
        // residue would be t - |c|).
        PNode::MulPlain { plain, .. } if plain.len() == 1 => {
            let c = plain[0].unsigned_abs() as i64;
            Ok(vec![
                encode_always(&vec![c; degree], par)?;
                arg_layout_cts(plan, n)
            ])
        }
        PNode::AddPlain { a, plain } | PNode::MulPlain { a, plain } => {
            let len = plan.nodes[*a as usize].len;
            let full: Vec<i64> = if plain.len() == 1 {
                vec![plain[0]; len]
            } else {
                plain.clone()
            };
            arg_layout(*a)
                .place(&full, degree)
                .iter()
                .map(|s| encode_always(s, par))
                .collect()
        }
        _ => Ok(vec![]),
    }
}

/// Slot values of generalized diagonal `k` for output ciphertext `chunk`, pre-rotated right by
/// `pre` (the giant step it is summed under).
#[allow(clippy::too_many_arguments)]
fn diagonal(
    matrix: &[Vec<i64>],
    n: usize,
    layout: Layout,
    mv: &MatvecPlan,
    chunk: usize,
    k: usize,
    pre: usize,
    degree: usize,
) -> Vec<i64> {
    let half = degree / 2;
    if k >= mv.diagonals {
        return vec![0; degree];
    }
    (0..degree)
        .map(|u| {
            // The slot whose value lands in `u` after rotating left by `pre`.
            let (row, col) = (u / half, u % half);
            let s = row * half + (col + half - pre % half) % half;
            let i = match layout {
                Layout::Replicated { period } => s % period,
                Layout::Chunked { .. } => chunk * degree + s,
            };
            let j = (s % half + k) % mv.period_in;
            if i < matrix.len() && j < n {
                matrix[i][j]
            } else {
                0
            }
        })
        .collect()
}

fn add_all(mut terms: impl Iterator<Item = Ciphertext>) -> Option<Ciphertext> {
    let mut acc = terms.next()?;
    for t in terms {
        acc += &t;
    }
    Some(acc)
}

fn matvec(
    ev: &Evaluator,
    x: &Ciphertext,
    mv: &MatvecPlan,
    chunks: usize,
    pts: &[Option<Plaintext>],
) -> Result<Vec<Ciphertext>, EngineError> {
    // Baby steps: the input rotated by 0..baby, shared by every output ciphertext.
    let baby: Vec<Ciphertext> = (0..mv.baby)
        .into_par_iter()
        .map(|b| {
            if b == 0 {
                Ok(x.clone())
            } else {
                ev.rotate(x, b)
            }
        })
        .collect::<Result<_, _>>()?;
    (0..chunks)
        .into_par_iter()
        .map(|c| {
            let groups: Vec<Ciphertext> = (0..mv.giant)
                .into_par_iter()
                .map(|g| {
                    let base = (c * mv.giant + g) * mv.baby;
                    let inner = add_all(
                        (0..mv.baby).filter_map(|b| pts[base + b].as_ref().map(|p| &baby[b] * p)),
                    );
                    match inner {
                        Some(ct) if g > 0 => ev.rotate(&ct, g * mv.baby).map(Some),
                        other => Ok(other),
                    }
                })
                .collect::<Result<Vec<_>, _>>()?
                .into_iter()
                .flatten()
                .collect();
            let mut acc =
                add_all(groups.into_iter()).ok_or_else(|| internal("matvec without terms"))?;
            for step in &mv.fold {
                let r = ev.rotate(&acc, *step)?;
                acc += &r;
            }
            Ok(acc)
        })
        .collect()
}

fn sum(
    ev: &Evaluator,
    cts: Vec<Ciphertext>,
    layout: Layout,
    degree: usize,
) -> Result<Ciphertext, EngineError> {
    let span = match layout {
        Layout::Replicated { period } => period,
        Layout::Chunked { .. } => degree / 2,
    };
    let mut acc = add_all(cts.into_iter()).ok_or_else(|| internal("empty vector"))?;
    let mut step = 1;
    while step < span {
        let r = ev.rotate(&acc, step)?;
        acc += &r;
        step *= 2;
    }
    if matches!(layout, Layout::Chunked { .. }) {
        let r = ev.ek.rotates_rows(&acc).map_err(internal)?;
        acc += &r;
    }
    Ok(acc)
}

/// Runs a BFV circuit on an input bundle with a key set; returns the result bundle.
pub fn run(keys: &BfvKeySet, circuit: &ValidBfv, input: &[u8]) -> Result<Vec<u8>, EngineError> {
    run_with(keys, circuit, input, crate::RunOptions::default())
}

/// [`run`] with the executor's hooks: the cancellation flag is checked before every node
/// (a cancel, a lost lease or a shutdown stops the run there) and progress is reported after
/// each.
pub fn run_with(
    keys: &BfvKeySet,
    circuit: &ValidBfv,
    input: &[u8],
    opts: crate::RunOptions<'_>,
) -> Result<Vec<u8>, EngineError> {
    let plan = circuit.plan();
    let (header, payload) = read_bundle(input, Kind::Input, &circuit.signature())?;
    if header.key_set_id != keys.id() {
        return Err(EngineError::BadInput(format!(
            "the input is encrypted under key set {}, not key set {}",
            header.key_set_id,
            keys.id()
        )));
    }
    if let Some(m) = keys.header.needs.missing(&KeyNeeds::of(plan)) {
        return Err(EngineError::BadInput(format!(
            "{m}: encrypt for `{}` again, which remakes the key directory's BFV key set with the \
             keys it needs, and upload that key set",
            header.function
        )));
    }
    let ev = keys.evaluator(plan.plain_modulus)?;
    let expected: Vec<u32> = (0..circuit.circuit().inputs.len())
        .map(|i| input_layout(circuit, i).map(|l| l.ciphertexts() as u32))
        .collect::<Result<_, _>>()?;
    if header.counts != expected {
        return Err(EngineError::BadInput(format!(
            "the input holds {:?} ciphertexts per input, the function takes {expected:?}",
            header.counts
        )));
    }
    let cts = unframe(payload, &ev.par, expected.iter().map(|c| *c as usize).sum())?;
    let outputs = guarded("the input", || execute(&ev, circuit, cts, opts))?;
    let mut flat = Vec::new();
    let mut counts = Vec::new();
    for o in &circuit.circuit().outputs {
        let v = &outputs[o.node as usize];
        counts.push(v.len() as u32);
        flat.extend(v.iter().map(|c| c.to_bytes()));
    }
    let out_header = BfvHeader { counts, ..header };
    bundle::write(Kind::Result, &out_header, &frame(&flat))
}

fn execute(
    ev: &Evaluator,
    circuit: &ValidBfv,
    inputs: Vec<Ciphertext>,
    opts: crate::RunOptions<'_>,
) -> Result<Vec<Vec<Ciphertext>>, EngineError> {
    let plan = circuit.plan();
    let pts = encoded(circuit, &ev.par)?;
    let mut per_input = Vec::new();
    let mut it = inputs.into_iter();
    for i in 0..circuit.circuit().inputs.len() {
        let n = input_layout(circuit, i)?.ciphertexts();
        per_input.push(it.by_ref().take(n).collect::<Vec<_>>());
    }
    let mut vals: Vec<Vec<Ciphertext>> = Vec::with_capacity(plan.nodes.len());
    let total = circuit.circuit().nodes.len();
    for (id, n) in circuit.circuit().nodes.iter().enumerate() {
        if opts
            .cancel
            .is_some_and(|c| c.load(std::sync::atomic::Ordering::SeqCst))
        {
            return Err(EngineError::Cancelled { done: id, total });
        }
        let p = &pts[id];
        let layout = plan.nodes[id].layout;
        let v = match n {
            PNode::Input { input } => per_input[*input as usize].clone(),
            PNode::Matvec { a, .. } => {
                let mv = plan.nodes[id]
                    .matvec
                    .as_ref()
                    .ok_or_else(|| internal("no plan"))?;
                matvec(ev, &vals[*a as usize][0], mv, layout.ciphertexts(), p)?
            }
            PNode::Dot { a, .. } => {
                let x = &vals[*a as usize];
                let prods: Vec<Ciphertext> = x
                    .iter()
                    .zip(p)
                    .filter_map(|(c, pt)| pt.as_ref().map(|pt| c * pt))
                    .collect();
                vec![sum(ev, prods, plan.nodes[*a as usize].layout, plan.degree)?]
            }
            PNode::Add { a, b } => zip_ct(&vals[*a as usize], &vals[*b as usize], |x, y| x + y),
            PNode::Sub { a, b } => zip_ct(&vals[*a as usize], &vals[*b as usize], |x, y| x - y),
            PNode::AddPlain { a, .. } => vals[*a as usize]
                .iter()
                .zip(p)
                .map(|(c, pt)| pt.as_ref().map_or_else(|| c.clone(), |pt| c + pt))
                .collect(),
            PNode::MulPlain { a, plain } => {
                let negate = plain.len() == 1 && plain[0] < 0;
                vals[*a as usize]
                    .iter()
                    .zip(p)
                    .map(|(c, pt)| {
                        let prod = pt.as_ref().map_or_else(|| c.clone(), |pt| c * pt);
                        if negate {
                            -prod
                        } else {
                            prod
                        }
                    })
                    .collect()
            }
            PNode::Square { a } => {
                let rk = ev.rk.as_ref().ok_or_else(|| {
                    EngineError::BadInput("the key set has no relinearization key".into())
                })?;
                let m = Multiplicator::default(rk).map_err(internal)?;
                vals[*a as usize]
                    .par_iter()
                    .map(|c| m.multiply(c, c).map_err(internal))
                    .collect::<Result<_, _>>()?
            }
            PNode::Sum { a } => {
                let x = vals[*a as usize].clone();
                vec![sum(ev, x, plan.nodes[*a as usize].layout, plan.degree)?]
            }
        };
        vals.push(v);
        if let Some(report) = opts.progress {
            report(crate::Progress {
                done: id + 1,
                total,
            });
        }
    }
    Ok(vals)
}

fn zip_ct(
    a: &[Ciphertext],
    b: &[Ciphertext],
    f: impl Fn(&Ciphertext, &Ciphertext) -> Ciphertext,
) -> Vec<Ciphertext> {
    a.iter().zip(b).map(|(x, y)| f(x, y)).collect()
}
