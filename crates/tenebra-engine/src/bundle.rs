//! Encrypted input and result files ("bundles").
//!
//! Layout: `TNBR`, one kind byte (1 input, 2 result), a little-endian `u32` header length, a
//! JSON header (function, size, circuit id, key set id, value types), then the payload:
//! - input: a packed compact ciphertext list encrypted with the compact public key, in
//!   tfhe-rs's versioned form (bincode), read back size-limited and conformance-checked
//!   against this server's parameters and the function's signature;
//! - result: the output ciphertexts as radix blocks in tfhe-rs's versioned form (bincode),
//!   read back size-limited and checked block by block against the parameters.

use serde::{Deserialize, Serialize};
use tenebra_circuit::ScalarType;
use tfhe::conformance::ListSizeConstraint;
use tfhe::integer::ciphertext::{CompactCiphertextList, DataKind};
use tfhe::integer::parameters::IntegerCompactCiphertextListExpansionMode;
use tfhe::integer::parameters::RadixCiphertextConformanceParams;
use tfhe::integer::IntegerCiphertext;
use tfhe::integer::{BooleanBlock, RadixCiphertext, SignedRadixCiphertext};
use tfhe::prelude::ParameterSetConformant;
use tfhe::shortint::parameters::PARAM_MESSAGE_2_CARRY_2_KS_PBS_TUNIFORM_2M128;
use tfhe::CompactCiphertextListConformanceParams;
use tfhe::{Unversionize, Versionize};

use crate::exec::Ct;
use crate::keys::{public_key_parameters, ClientKeys, ServerKeys};
use crate::EngineError;

const MAGIC: &[u8; 4] = b"TNBR";
const HEADER_LIMIT: usize = 64 << 10;
/// Version of the bundle layout.
pub const BUNDLE_VERSION: u32 = 1;
/// Serialized bytes allowed per radix block, plus a fixed allowance per bundle.
const BYTES_PER_BLOCK: u64 = 40 << 10;
const BASE_ALLOWANCE: u64 = 1 << 20;

/// What a bundle holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Input = 1,
    Result = 2,
    /// A BFV key set upload.
    KeySet = 3,
}

/// The JSON header of a bundle: what it was made for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Header {
    pub version: u32,
    /// Function name.
    pub function: String,
    /// The function's size parameter (e.g. the number of values).
    pub size: u32,
    /// Content id of the circuit the values belong to.
    pub circuit_id: String,
    /// Key set the values are encrypted under.
    pub key_set_id: String,
    /// Type of every value, in order.
    pub types: Vec<ScalarType>,
}

/// Writes a bundle.
pub fn write(kind: Kind, header: &impl Serialize, payload: &[u8]) -> Result<Vec<u8>, EngineError> {
    let h = serde_json::to_vec(header).map_err(|e| EngineError::Internal(e.to_string()))?;
    let mut out = Vec::with_capacity(9 + h.len() + payload.len());
    out.extend_from_slice(MAGIC);
    out.push(kind as u8);
    out.extend_from_slice(&(h.len() as u32).to_le_bytes());
    out.extend_from_slice(&h);
    out.extend_from_slice(payload);
    Ok(out)
}

/// Reads a bundle's header and returns it with the payload.
pub fn read(bytes: &[u8], kind: Kind) -> Result<(Header, &[u8]), EngineError> {
    let (header, payload): (Header, &[u8]) = read_as(bytes, kind)?;
    if header.version != BUNDLE_VERSION {
        return Err(EngineError::BadInput(format!(
            "not a valid {} file: bundle version {} is not supported (expected {BUNDLE_VERSION})",
            kind_name(kind),
            header.version
        )));
    }
    Ok((header, payload))
}

fn kind_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Input => "encrypted input",
        Kind::Result => "encrypted result",
        Kind::KeySet => "key set",
    }
}

/// Reads a bundle of `kind` with a header of type `H`; the caller checks its version.
pub fn read_as<H: serde::de::DeserializeOwned>(
    bytes: &[u8],
    kind: Kind,
) -> Result<(H, &[u8]), EngineError> {
    let what = kind_name(kind);
    let bad = |m: &str| EngineError::BadInput(format!("not a valid {what} file: {m}"));
    if bytes.len() < 9 || &bytes[..4] != MAGIC {
        return Err(bad("it does not start with the Tenebra bundle marker"));
    }
    if bytes[4] != kind as u8 {
        let other = match bytes[4] {
            1 => "an encrypted input",
            2 => "an encrypted result",
            3 => "a key set",
            _ => "an unknown kind of bundle",
        };
        return Err(bad(&format!("it is {other}")));
    }
    let len = u32::from_le_bytes([bytes[5], bytes[6], bytes[7], bytes[8]]) as usize;
    if len > HEADER_LIMIT || 9 + len > bytes.len() {
        return Err(bad("the header is truncated or too large"));
    }
    let header: H =
        serde_json::from_slice(&bytes[9..9 + len]).map_err(|e| bad(&format!("bad header: {e}")))?;
    Ok((header, &bytes[9 + len..]))
}

fn payload_limit(types: &[ScalarType]) -> u64 {
    BASE_ALLOWANCE + BYTES_PER_BLOCK * types.iter().map(|t| t.blocks() as u64).sum::<u64>()
}

/// Encrypts plain values (bit patterns of `types`) into a compact list payload.
pub fn encrypt_values(
    keys: &ClientKeys,
    types: &[ScalarType],
    values: &[u64],
) -> Result<Vec<u8>, EngineError> {
    use bincode::Options;
    if types.len() != values.len() {
        return Err(EngineError::Internal("one value per type".into()));
    }
    let mut builder = CompactCiphertextList::builder(&keys.public);
    for (&t, &v) in types.iter().zip(values) {
        let v = v & t.mask();
        match t {
            ScalarType::Bool => builder.push(v == 1),
            ScalarType::Uint(_) => builder.push_with_num_blocks(v, t.blocks()),
            ScalarType::Int(_) => builder.push_with_num_blocks(t.to_i128(v) as i64, t.blocks()),
        };
    }
    let list = builder
        .build_packed()
        .map_err(|e| EngineError::Internal(format!("encrypting the input: {e}")))?;
    bincode_options(payload_limit(types))
        .serialize(&list.versionize())
        .map_err(|e| EngineError::Internal(format!("serializing the input: {e}")))
}

type VersionedList = <CompactCiphertextList as tfhe_versionable::VersionizeOwned>::VersionedOwned;

/// Reads an input payload without expanding it: size-limited deserialization, conformance
/// with this server's parameters and the expected number of values, and every value's kind
/// and width against `types`. Needs no key (what fuzzing drives).
pub fn parse_values(
    payload: &[u8],
    types: &[ScalarType],
) -> Result<CompactCiphertextList, EngineError> {
    use bincode::Options;
    let versioned: VersionedList = bincode_options(payload_limit(types))
        .deserialize(payload)
        .map_err(|e| invalid_input(e.to_string()))?;
    let list =
        CompactCiphertextList::unversionize(versioned).map_err(|e| invalid_input(e.to_string()))?;
    let params = CompactCiphertextListConformanceParams::from_parameters_and_size_constraint(
        public_key_parameters()?,
        ListSizeConstraint::exact_size(types.len()),
    );
    if !list.is_conformant(&params) {
        return Err(invalid_input(format!(
            "it does not hold this function's {} values under this server's parameters",
            types.len()
        )));
    }
    // Check every value's kind before anyone pays for the expansion.
    for (i, &t) in types.iter().enumerate() {
        let ok = match (t, list.get_kind_of(i)) {
            (ScalarType::Bool, Some(DataKind::Boolean)) => true,
            (ScalarType::Uint(_), Some(DataKind::Unsigned(n)))
            | (ScalarType::Int(_), Some(DataKind::Signed(n))) => n.get() == t.blocks(),
            _ => false,
        };
        if !ok {
            return Err(not_of_type(i, t));
        }
    }
    Ok(list)
}

fn invalid_input(m: String) -> EngineError {
    EngineError::BadInput(format!("the encrypted input is invalid: {m}"))
}

fn not_of_type(i: usize, t: ScalarType) -> EngineError {
    EngineError::BadInput(format!(
        "encrypted value {i} is not a {t} (the input was encrypted for another signature)"
    ))
}

/// Reads an input payload ([`parse_values`]) and expands it to ciphertexts of `types`.
pub fn expand_values(
    keys: &ServerKeys,
    payload: &[u8],
    types: &[ScalarType],
) -> Result<Vec<Ct>, EngineError> {
    let list = parse_values(payload, types)?;
    let expander = list
        .expand(
            IntegerCompactCiphertextListExpansionMode::UnpackAndSanitizeIfNecessary(keys.integer()),
        )
        .map_err(|e| invalid_input(format!("it cannot be expanded: {e}")))?;
    types
        .iter()
        .enumerate()
        .map(|(i, &t)| {
            let err = |e: tfhe::Error| invalid_input(format!("value {i}: {e}"));
            let ct = match t {
                ScalarType::Bool => expander.get::<BooleanBlock>(i).map_err(err)?.map(Ct::Bool),
                ScalarType::Uint(_) => expander
                    .get::<RadixCiphertext>(i)
                    .map_err(err)?
                    .map(Ct::Uint),
                ScalarType::Int(_) => expander
                    .get::<SignedRadixCiphertext>(i)
                    .map_err(err)?
                    .map(Ct::Int),
            };
            ct.ok_or_else(|| not_of_type(i, t))
        })
        .collect()
}

type VersionedRadix = <RadixCiphertext as tfhe_versionable::VersionizeOwned>::VersionedOwned;

fn bincode_options(limit: u64) -> impl bincode::Options {
    use bincode::Options;
    bincode::DefaultOptions::new()
        .with_fixint_encoding()
        .with_limit(limit)
}

/// Serializes output ciphertexts into a result payload.
pub fn seal_results(cts: Vec<Ct>, types: &[ScalarType]) -> Result<Vec<u8>, EngineError> {
    use bincode::Options;
    let radixes: Vec<RadixCiphertext> = cts.into_iter().map(Ct::into_radix).collect();
    let versioned: Vec<_> = radixes.iter().map(|r| r.versionize()).collect();
    bincode_options(payload_limit(types) * 4)
        .serialize(&versioned)
        .map_err(|e| EngineError::Internal(format!("serializing the result: {e}")))
}

/// Reads a result payload (size-limited and conformance-checked) and decrypts it.
pub fn open_results(
    keys: &ClientKeys,
    payload: &[u8],
    types: &[ScalarType],
) -> Result<Vec<u64>, EngineError> {
    use bincode::Options;
    let bad = |m: String| EngineError::BadInput(format!("the encrypted result is invalid: {m}"));
    let versioned: Vec<VersionedRadix> = bincode_options(payload_limit(types) * 4)
        .deserialize(payload)
        .map_err(|e| bad(e.to_string()))?;
    if versioned.len() != types.len() {
        return Err(bad(format!(
            "it holds {} values, the function returns {}",
            versioned.len(),
            types.len()
        )));
    }
    let ck: &tfhe::integer::ClientKey = keys.client.as_ref();
    versioned
        .into_iter()
        .zip(types)
        .enumerate()
        .map(|(i, (v, &t))| {
            let r = RadixCiphertext::unversionize(v).map_err(|e| bad(format!("value {i}: {e}")))?;
            let params = RadixCiphertextConformanceParams::from_pbs_parameters(
                PARAM_MESSAGE_2_CARRY_2_KS_PBS_TUNIFORM_2M128,
                t.blocks(),
            );
            // Results carry the degree and noise level of the computation that produced them,
            // so the check is on shape: block count, LWE dimension and modulus, moduli.
            let sp = &params.shortint_params;
            let max_degree = sp.message_modulus.0 * sp.carry_modulus.0 - 1;
            let shaped = r.blocks().len() == t.blocks()
                && r.blocks().iter().all(|b| {
                    b.ct.is_conformant(&sp.ct_params)
                        && b.message_modulus == sp.message_modulus
                        && b.carry_modulus == sp.carry_modulus
                        && b.atomic_pattern == sp.atomic_pattern
                        && b.degree.get() <= max_degree
                });
            if !shaped {
                return Err(bad(format!(
                    "value {i} is not a {t} under this key set's parameters"
                )));
            }
            let clear: u64 = ck.decrypt_radix(&r);
            Ok(clear & t.mask())
        })
        .collect()
}
