//! API key tokens: made here (their shape is `tenebra_api::token`'s) and stored only as
//! HMAC-SHA256 under the server secret, so a leaked database does not leak usable tokens.

use hmac::{Hmac, Mac};
use sha2::Sha256;

pub use tenebra_api::token::is_well_formed;

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

/// A new token (shown to its owner once).
pub fn generate() -> String {
    tenebra_api::token::from_random(&rand::random())
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
