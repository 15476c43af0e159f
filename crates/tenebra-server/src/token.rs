//! API key tokens: `tnb_` + 64 hex characters of randomness + 8 hex characters of checksum.
//!
//! The checksum lets the server (and secret scanners) reject a mistyped or truncated token
//! without a database lookup. Tokens are stored only as HMAC-SHA256 under the server secret,
//! so a leaked database does not leak usable tokens.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

const PREFIX: &str = "tnb_";
const RANDOM_HEX: usize = 64;
const CHECK_HEX: usize = 8;

/// The server secret tokens are hashed under; `Debug` never prints it.
#[derive(Clone)]
pub struct Secret(Vec<u8>);

impl Secret {
    /// A secret of at least 32 bytes.
    pub fn new(bytes: Vec<u8>) -> Option<Self> {
        (bytes.len() >= 32).then_some(Self(bytes))
    }

    /// A fresh random secret.
    pub fn generate() -> Self {
        let bytes: [u8; 32] = rand::random();
        Self(bytes.to_vec())
    }

    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

fn checksum(random_hex: &str) -> String {
    let digest = Sha256::digest(format!("{PREFIX}{random_hex}").as_bytes());
    hex::encode(&digest[..CHECK_HEX / 2])
}

/// A new token (shown to its owner once).
pub fn generate() -> String {
    let random: [u8; 32] = rand::random();
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

/// What the database stores for a token.
pub fn hash(secret: &Secret, token: &str) -> [u8; 32] {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.expose())
        .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    mac.update(token.as_bytes());
    mac.finalize().into_bytes().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_check_themselves() {
        let t = generate();
        assert!(is_well_formed(&t));
        assert_eq!(t.len(), 4 + 64 + 8);
        let mut typo = t.clone().into_bytes();
        typo[10] = if typo[10] == b'a' { b'b' } else { b'a' };
        assert!(!is_well_formed(&String::from_utf8(typo).unwrap()));
        assert!(!is_well_formed(&t[..t.len() - 1]));
        assert!(!is_well_formed("Bearer x"));
        let s = Secret::generate();
        assert_eq!(hash(&s, &t), hash(&s, &t));
        assert_ne!(hash(&s, &t), hash(&Secret::generate(), &t));
        assert_eq!(format!("{s:?}"), "Secret([redacted])");
    }
}
