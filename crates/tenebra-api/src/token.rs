//! The shape of API key tokens: `tnb_` + 64 hex characters of randomness + 8 hex characters
//! of checksum.
//!
//! The checksum lets the server (and secret scanners) reject a mistyped or truncated token
//! without a database lookup. The server makes tokens and stores only their HMAC.

use sha2::{Digest, Sha256};

const PREFIX: &str = "tnb_";
const RANDOM_HEX: usize = 64;
const CHECK_HEX: usize = 8;
/// Characters in a token.
pub const TOKEN_LEN: usize = PREFIX.len() + RANDOM_HEX + CHECK_HEX;

fn checksum(random_hex: &str) -> String {
    let digest = Sha256::digest(format!("{PREFIX}{random_hex}").as_bytes());
    hex::encode(&digest[..CHECK_HEX / 2])
}

/// The token of 32 random bytes.
pub fn from_random(random: &[u8; 32]) -> String {
    let random_hex = hex::encode(random);
    format!("{PREFIX}{random_hex}{}", checksum(&random_hex))
}

/// Whether a string has the shape and checksum of a token.
pub fn is_well_formed(token: &str) -> bool {
    let Some(body) = token.strip_prefix(PREFIX) else {
        return false;
    };
    if body.len() != RANDOM_HEX + CHECK_HEX
        || !body
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return false;
    }
    let (random_hex, check) = body.split_at(RANDOM_HEX);
    checksum(random_hex) == check
}
