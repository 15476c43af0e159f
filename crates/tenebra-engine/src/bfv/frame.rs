//! Input and result bundles: the header, length-prefixed ciphertexts, and their checked
//! reading.

use super::*;

/// Largest serialized ciphertext accepted (degree 16384, nine moduli, three polynomials).
pub(super) const CT_LIMIT: usize = 3 * 9 * 16384 * 8 + 4096;

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

pub(super) fn frame(cts: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::with_capacity(cts.iter().map(|c| c.len() + 4).sum());
    for c in cts {
        out.extend_from_slice(&(c.len() as u32).to_le_bytes());
        out.extend_from_slice(c);
    }
    out
}

pub(super) fn unframe(
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

pub(super) fn read_bundle<'a>(
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

/// Reads the ciphertexts of a BFV bundle's payload at ring degree `degree` and plaintext
/// modulus `t`, as a run does (size-limited, each a fresh two-component ciphertext); how
/// many there are. What the fuzzer drives, without a key set.
pub fn read_ciphertexts(payload: &[u8], degree: usize, t: u64) -> Result<usize, EngineError> {
    let par = parameters(degree, t)?;
    Ok(unframe(payload, &par, usize::MAX)?.len())
}

/// Reads an input bundle's header (checks nothing but the framing).
pub fn input_header(bytes: &[u8]) -> Result<BfvHeader, EngineError> {
    Ok(bundle::read_as::<BfvHeader>(bytes, Kind::Input)?.0)
}

/// Reads a result bundle's header (checks nothing but the framing).
pub fn result_header(bytes: &[u8]) -> Result<BfvHeader, EngineError> {
    Ok(bundle::read_as::<BfvHeader>(bytes, Kind::Result)?.0)
}
