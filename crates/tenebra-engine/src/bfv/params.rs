//! The 128-bit parameter sets (ring degree and NTT primes) and the byte-bounded cache that
//! hands out one shared `BfvParameters` per (degree, plaintext modulus).

use super::*;
use crate::cache::{ByBytes, BytesCache};

/// NTT-friendly moduli of the 128-bit parameter sets (from fhe.rs's standard sets).
pub(super) const MODULI_4096: [u64; 3] = [0xffffee001, 0xffffc4001, 0x1ffffe0001];
pub(super) const MODULI_8192: [u64; 5] = [
    0x7fffffd8001,
    0x7fffffc8001,
    0xfffffffc001,
    0xffffff6c001,
    0xfffffebc001,
];

pub(super) const MODULI_16384: [u64; 9] = [
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

/// Bytes of the parameter sets kept: each holds NTT and scaling tables for its moduli
/// (estimated at 8 words per coefficient and modulus: ~9.4 MiB at N=16384), so a few dozen
/// plaintext moduli fit and tenants' circuits cannot pin one set per modulus forever.
pub(super) const PARAMETER_CACHE_BYTES: u64 = 256 << 20;

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
pub(super) const CHECK_MODULUS: u64 = 65537;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_memory_model_counts_these_primes() {
        for (degree, moduli) in [
            (4096, MODULI_4096.len()),
            (8192, MODULI_8192.len()),
            (16384, MODULI_16384.len()),
        ] {
            assert_eq!(tenebra_circuit::bfv::moduli_count(degree), moduli);
        }
    }
}
