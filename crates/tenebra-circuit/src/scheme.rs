//! The two schemes a circuit is written for, decided once.
//!
//! A function is either a TFHE circuit (scalars of 1 to 64 bits, any operation, bootstrapped)
//! or a BFV circuit (vectors of integers in the slots of one ciphertext; see [`crate::bfv`]).
//! Everything that is the same for both (parse untrusted JSON, content id, name, cost,
//! signature, canonical form) goes through [`AnyCircuit`], so no other crate reads a circuit's
//! `scheme` field to learn which it is.

use std::sync::Arc;

use serde::Deserialize;

use crate::bfv::{parse_bfv, BfvError, BfvLimits, ValidBfv, SCHEME_BFV};
use crate::cost::Cost;
use crate::validate::{parse_circuit, Limits, ValidationError};
use crate::{CircuitId, ValidCircuit};

/// An encryption scheme Tenebra runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheme {
    /// TFHE (tfhe-rs): radix integers, programmable bootstrapping.
    Tfhe,
    /// BFV (fhe.rs): packed vectors of integers.
    Bfv,
}

impl Scheme {
    /// The name circuits declare (`"scheme": "tfhe"` or `"bfv"`).
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Tfhe => crate::ir::SCHEME_TFHE,
            Scheme::Bfv => SCHEME_BFV,
        }
    }

    /// The scheme a circuit JSON declares: BFV when its `scheme` field says so, TFHE otherwise
    /// (TFHE validation then names a wrong or missing scheme).
    pub fn of_json(bytes: &[u8]) -> Scheme {
        #[derive(Deserialize)]
        struct Declared {
            #[serde(default)]
            scheme: String,
        }
        match serde_json::from_slice::<Declared>(bytes) {
            Ok(d) if d.scheme == SCHEME_BFV => Scheme::Bfv,
            _ => Scheme::Tfhe,
        }
    }
}

impl std::fmt::Display for Scheme {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Size limits of untrusted circuits of either scheme.
#[derive(Debug, Clone, Default)]
pub struct AnyLimits {
    pub tfhe: Limits,
    pub bfv: BfvLimits,
}

impl AnyLimits {
    /// The default limits with the largest JSON document set to `bytes` for both schemes.
    pub fn with_max_json_bytes(bytes: usize) -> Self {
        Self {
            tfhe: Limits {
                max_json_bytes: bytes,
                ..Limits::default()
            },
            bfv: BfvLimits {
                max_json_bytes: bytes,
                ..BfvLimits::default()
            },
        }
    }
}

/// Why a circuit of either scheme was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AnyError {
    #[error(transparent)]
    Tfhe(#[from] ValidationError),
    #[error(transparent)]
    Bfv(#[from] BfvError),
}

/// How a refused circuit is wrong, for the code a caller reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Not a valid circuit.
    Invalid,
    /// Valid, but it would need more than a worker gives one task.
    TooLarge,
    /// Valid, but no parameter set carries its noise.
    TooDeep,
}

impl AnyError {
    pub fn refusal(&self) -> Refusal {
        match self {
            AnyError::Tfhe(ValidationError::TooLarge { .. })
            | AnyError::Bfv(BfvError::TooLarge { .. }) => Refusal::TooLarge,
            AnyError::Bfv(BfvError::TooDeep(_)) => Refusal::TooDeep,
            _ => Refusal::Invalid,
        }
    }
}

/// A validated circuit of either scheme (cheap to clone: both kinds are shared).
#[derive(Debug, Clone)]
pub enum AnyCircuit {
    Tfhe(Arc<ValidCircuit>),
    Bfv(Arc<ValidBfv>),
}

impl From<ValidCircuit> for AnyCircuit {
    fn from(c: ValidCircuit) -> Self {
        AnyCircuit::Tfhe(Arc::new(c))
    }
}

impl From<ValidBfv> for AnyCircuit {
    fn from(c: ValidBfv) -> Self {
        AnyCircuit::Bfv(Arc::new(c))
    }
}

impl From<Arc<ValidBfv>> for AnyCircuit {
    fn from(c: Arc<ValidBfv>) -> Self {
        AnyCircuit::Bfv(c)
    }
}

impl AnyCircuit {
    /// Parses and validates an untrusted circuit of the scheme it declares.
    pub fn parse(bytes: &[u8], limits: &AnyLimits) -> Result<Self, AnyError> {
        // Past both schemes' size limits the scheme is not even looked for: the TFHE parser
        // refuses the document by its size before reading it.
        let largest = limits.tfhe.max_json_bytes.max(limits.bfv.max_json_bytes);
        let scheme = if bytes.len() > largest {
            Scheme::Tfhe
        } else {
            Scheme::of_json(bytes)
        };
        Ok(match scheme {
            Scheme::Tfhe => parse_circuit(bytes, &limits.tfhe)?.into(),
            Scheme::Bfv => parse_bfv(bytes, &limits.bfv)?.into(),
        })
    }

    pub fn scheme(&self) -> Scheme {
        match self {
            AnyCircuit::Tfhe(_) => Scheme::Tfhe,
            AnyCircuit::Bfv(_) => Scheme::Bfv,
        }
    }

    pub fn name(&self) -> &str {
        match self {
            AnyCircuit::Tfhe(c) => &c.name,
            AnyCircuit::Bfv(c) => &c.circuit().name,
        }
    }

    /// The content id (SHA-256 of the canonical JSON).
    pub fn id(&self) -> CircuitId {
        match self {
            AnyCircuit::Tfhe(c) => c.id(),
            AnyCircuit::Bfv(c) => c.id(),
        }
    }

    /// The canonical JSON form: what is stored, hashed and sent to clients.
    pub fn canonical_json(&self) -> Vec<u8> {
        match self {
            AnyCircuit::Tfhe(c) => c.canonical_json(),
            AnyCircuit::Bfv(c) => c.circuit().canonical_json(),
        }
    }

    /// Cost in CU (1 CU = 1 ms of single-thread CPU on the reference machine) and the number
    /// of homomorphic operations a run performs (BFV: rotations, plain and ciphertext
    /// multiplications). A TFHE circuit is planned to price it: compute this once.
    pub fn cost(&self) -> Cost {
        match self {
            AnyCircuit::Tfhe(c) => crate::cost::cost(c),
            AnyCircuit::Bfv(c) => {
                let s = &c.plan().stats;
                Cost {
                    cu: c.cost_cu(),
                    ops: (s.rotations + s.plain_mults + s.squares) as usize,
                }
            }
        }
    }

    /// [`AnyCircuit::cost`] in CU, saturated to what a signed 64-bit column holds.
    pub fn cost_cu(&self) -> i64 {
        i64::try_from(self.cost().cu).unwrap_or(i64::MAX)
    }

    /// One line for people: `a: u16[5], b: i8 -> c: u16` (TFHE) or
    /// `x: [-8..=7; 16] -> y: [3] (bfv, N=4096, t=65537)` (BFV).
    pub fn signature(&self) -> String {
        match self {
            AnyCircuit::Tfhe(c) => {
                let (inputs, outputs) = c.signature_lists();
                format!("{inputs} -> {outputs}")
            }
            AnyCircuit::Bfv(c) => {
                let sig = c.signature();
                let inputs = sig
                    .inputs
                    .iter()
                    .map(|i| format!("{}: [{}..={}; {}]", i.name, i.min, i.max, i.len));
                let outputs = sig
                    .outputs
                    .iter()
                    .map(|o| format!("{}: [{}]", o.name, o.len));
                format!(
                    "{} -> {} (bfv, N={}, t={})",
                    inputs.collect::<Vec<_>>().join(", "),
                    outputs.collect::<Vec<_>>().join(", "),
                    sig.degree,
                    sig.plain_modulus
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_declared_scheme_decides_and_anything_else_is_tfhe() {
        assert_eq!(Scheme::of_json(br#"{"scheme":"bfv"}"#), Scheme::Bfv);
        assert_eq!(Scheme::of_json(br#"{"scheme":"tfhe"}"#), Scheme::Tfhe);
        assert_eq!(Scheme::of_json(br#"{"scheme":"BFV"}"#), Scheme::Tfhe);
        assert_eq!(Scheme::of_json(b"not json"), Scheme::Tfhe);
        assert_eq!(Scheme::of_json(br#"{"scheme":7}"#), Scheme::Tfhe);
    }

    #[test]
    fn both_schemes_parse_through_one_door() {
        let limits = AnyLimits::default();
        let tfhe = crate::testing::random_circuit(&mut crate::testing::Rng::new(7), 12);
        let parsed = AnyCircuit::parse(&tfhe.canonical_json(), &limits).expect("tfhe");
        assert_eq!(parsed.scheme(), Scheme::Tfhe);
        assert_eq!(parsed.id(), tfhe.id());
        assert_eq!(parsed.canonical_json(), tfhe.canonical_json());
        assert!(parsed.cost_cu() > 0);

        let json = br#"{"version":1,"scheme":"bfv","name":"total","inputs":[{"name":"x","len":4,"min":0,"max":15}],"nodes":[{"op":"input","input":0},{"op":"sum","a":0}],"outputs":[{"name":"y","node":1}]}"#;
        let bfv = parse_bfv(json, &limits.bfv).expect("bfv circuit");
        let parsed = AnyCircuit::parse(json, &limits).expect("bfv");
        assert_eq!(parsed.scheme(), Scheme::Bfv);
        assert_eq!(parsed.id(), bfv.id());
        assert_eq!(parsed.name(), bfv.circuit().name);
        assert!(
            parsed.signature().contains("(bfv, N="),
            "{}",
            parsed.signature()
        );
    }

    #[test]
    fn refusals_are_classified() {
        // Past the size limit a document is refused whatever scheme it claims, and it is not
        // parsed to find out.
        let limits = AnyLimits::with_max_json_bytes(10);
        let e = AnyCircuit::parse(br#"{"scheme":"bfv","name":"x"}"#, &limits).unwrap_err();
        assert!(e.to_string().contains("the limit is 10"), "{e}");
        assert_eq!(e.refusal(), Refusal::Invalid);
        let e = AnyCircuit::parse(br#"{"scheme":"bfv","name":"x"}"#, &AnyLimits::default())
            .unwrap_err();
        assert!(matches!(e, AnyError::Bfv(_)));
        assert_eq!(e.refusal(), Refusal::Invalid);
        let e = AnyCircuit::parse(br#"{"scheme":"tfhe"}"#, &AnyLimits::default()).unwrap_err();
        assert!(matches!(e, AnyError::Tfhe(_)));
    }
}
