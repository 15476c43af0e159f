//! Encrypted inputs, key sets and runs of either scheme, told apart once.
//!
//! TFHE and BFV files share the bundle framing (`TNBR`, a kind byte, a JSON header); the
//! header of a BFV input says `"scheme": "bfv"`, a BFV key set is a bundle of kind
//! [`Kind::KeySet`], a TFHE key set is the upload format of [`crate::keys`]. This module is the
//! only place that looks at those marks: the server and the CLI get an [`InputHeader`], a
//! [`Scheme`] and one [`run`].

use std::path::Path;
use std::sync::Arc;

use serde::Deserialize;
use tenebra_circuit::{AnyCircuit, Scheme};

use crate::bfv::{BfvHeader, BfvKeySet, BFV_VERSION};
use crate::bundle::{self, Kind};
use crate::{EngineError, RunOptions, ServerKeys};

/// The header of an encrypted input of either scheme.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InputHeader {
    Tfhe(bundle::Header),
    Bfv(BfvHeader),
}

impl InputHeader {
    /// Reads an input's header (the framing and the header only; nothing is decrypted or
    /// deserialized beyond it).
    pub fn read(bytes: &[u8]) -> Result<Self, EngineError> {
        #[derive(Deserialize)]
        struct Declared {
            #[serde(default)]
            scheme: String,
        }
        let (declared, _): (Declared, &[u8]) = bundle::read_as(bytes, Kind::Input)?;
        if declared.scheme != Scheme::Bfv.as_str() {
            return Ok(InputHeader::Tfhe(bundle::read(bytes, Kind::Input)?.0));
        }
        let h = crate::bfv::input_header(bytes)?;
        if h.version != BFV_VERSION {
            return Err(EngineError::BadInput(format!(
                "BFV input version {} is not supported (expected {BFV_VERSION})",
                h.version
            )));
        }
        Ok(InputHeader::Bfv(h))
    }

    pub fn scheme(&self) -> Scheme {
        match self {
            InputHeader::Tfhe(_) => Scheme::Tfhe,
            InputHeader::Bfv(_) => Scheme::Bfv,
        }
    }

    /// The function the input was encrypted for.
    pub fn function(&self) -> &str {
        match self {
            InputHeader::Tfhe(h) => &h.function,
            InputHeader::Bfv(h) => &h.function,
        }
    }

    /// A built-in's size parameter (0 for BFV functions, which have none).
    pub fn size(&self) -> u32 {
        match self {
            InputHeader::Tfhe(h) => h.size,
            InputHeader::Bfv(_) => 0,
        }
    }

    pub fn circuit_id(&self) -> &str {
        match self {
            InputHeader::Tfhe(h) => &h.circuit_id,
            InputHeader::Bfv(h) => &h.circuit_id,
        }
    }

    /// The key set the input is encrypted under.
    pub fn key_set_id(&self) -> &str {
        match self {
            InputHeader::Tfhe(h) => &h.key_set_id,
            InputHeader::Bfv(h) => &h.key_set_id,
        }
    }

    /// Whether the input was made for `circuit`: same scheme, content id, and input types
    /// (TFHE) or parameters (BFV).
    pub fn matches(&self, circuit: &AnyCircuit) -> bool {
        match (self, circuit) {
            (InputHeader::Tfhe(h), AnyCircuit::Tfhe(c)) => {
                h.circuit_id == c.id().to_string() && h.types == c.input_types()
            }
            (InputHeader::Bfv(h), AnyCircuit::Bfv(c)) => {
                h.circuit_id == c.id().to_string()
                    && h.degree == c.plan().degree
                    && h.plain_modulus == c.plan().plain_modulus
            }
            _ => false,
        }
    }
}

/// The largest key set upload of either scheme.
pub const KEY_SET_LIMIT: u64 = if crate::keys::UPLOAD_LIMIT > crate::bfv::KEY_SET_LIMIT {
    crate::keys::UPLOAD_LIMIT
} else {
    crate::bfv::KEY_SET_LIMIT
};

/// The scheme of a key set upload, from its first bytes (a BFV key set is a bundle of kind
/// [`Kind::KeySet`]; anything else is checked as a TFHE upload).
pub fn key_set_scheme(head: &[u8]) -> Scheme {
    if head.len() >= 5 && head[..4] == *b"TNBR" && head[4] == Kind::KeySet as u8 {
        Scheme::Bfv
    } else {
        Scheme::Tfhe
    }
}

/// Checks an untrusted key set upload stored in a file, of either scheme, and returns its
/// scheme and id (the key set id clients encrypt under).
pub fn check_key_set_file(path: &Path) -> Result<(Scheme, String), EngineError> {
    let io = |e: std::io::Error| EngineError::Io(format!("{}: {e}", path.display()));
    let mut head = [0u8; 5];
    let read = {
        use std::io::Read;
        let mut f = std::fs::File::open(path).map_err(io)?;
        f.read(&mut head).map_err(io)?
    };
    match key_set_scheme(&head[..read]) {
        Scheme::Bfv => {
            let bytes = crate::keys::read_limited(path, crate::bfv::KEY_SET_LIMIT)?;
            Ok((Scheme::Bfv, BfvKeySet::parse(bytes)?.id()))
        }
        Scheme::Tfhe => Ok((
            Scheme::Tfhe,
            crate::keys::check_upload_file(path)?.to_string(),
        )),
    }
}

/// A tenant's evaluation keys of either scheme, ready to run with.
#[derive(Debug, Clone)]
pub enum EvalKeys {
    Tfhe(Arc<ServerKeys>),
    Bfv(BfvKeySet),
}

impl EvalKeys {
    pub fn scheme(&self) -> Scheme {
        match self {
            EvalKeys::Tfhe(_) => Scheme::Tfhe,
            EvalKeys::Bfv(_) => Scheme::Bfv,
        }
    }
}

/// Runs `circuit` on an encrypted input with `keys`: checks that the input was made for this
/// circuit and key set, runs it with `opts` (progress, cancellation) and returns the encrypted
/// result file.
pub fn run(
    keys: &EvalKeys,
    circuit: &AnyCircuit,
    input: &[u8],
    opts: RunOptions<'_>,
) -> Result<Vec<u8>, EngineError> {
    match (keys, circuit) {
        (EvalKeys::Tfhe(k), AnyCircuit::Tfhe(c)) => crate::evaluate_input(k, input, c, opts),
        (EvalKeys::Bfv(k), AnyCircuit::Bfv(c)) => crate::bfv::run_with(k, c, input, opts),
        (k, c) => Err(EngineError::BadInput(format!(
            "the key set is a {} key set, `{}` is a {} function",
            k.scheme(),
            c.name(),
            c.scheme()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_set_scheme_from_first_bytes() {
        assert_eq!(key_set_scheme(b"TNBR\x03rest"), Scheme::Bfv);
        assert_eq!(key_set_scheme(b"TNBR\x01"), Scheme::Tfhe);
        assert_eq!(key_set_scheme(b"TNB"), Scheme::Tfhe);
        assert_eq!(key_set_scheme(b""), Scheme::Tfhe);
    }

    #[test]
    fn input_headers_of_both_schemes_are_told_apart() {
        let tfhe = bundle::Header {
            version: bundle::BUNDLE_VERSION,
            function: "f".into(),
            size: 3,
            circuit_id: "c".into(),
            key_set_id: "k".into(),
            types: vec![],
        };
        let bytes = bundle::write(Kind::Input, &tfhe, b"").expect("write");
        let h = InputHeader::read(&bytes).expect("tfhe header");
        assert_eq!(h, InputHeader::Tfhe(tfhe));
        assert_eq!((h.function(), h.size(), h.key_set_id()), ("f", 3, "k"));

        let bfv = BfvHeader {
            version: BFV_VERSION,
            scheme: Scheme::Bfv.as_str().into(),
            function: "g".into(),
            circuit_id: "c".into(),
            key_set_id: "k".into(),
            degree: 4096,
            plain_modulus: 65537,
            counts: vec![1],
        };
        let bytes = bundle::write(Kind::Input, &bfv, b"").expect("write");
        let h = InputHeader::read(&bytes).expect("bfv header");
        assert_eq!(h.scheme(), Scheme::Bfv);
        assert_eq!((h.function(), h.size()), ("g", 0));

        let future = BfvHeader {
            version: BFV_VERSION + 1,
            ..bfv
        };
        let bytes = bundle::write(Kind::Input, &future, b"").expect("write");
        assert!(InputHeader::read(&bytes).is_err());
        // A result is not an input.
        let bytes = bundle::write(Kind::Result, &future, b"").expect("write");
        assert!(InputHeader::read(&bytes).is_err());
    }
}
