//! The BFV circuit IR: vector-valued nodes over earlier nodes, its canonical JSON and content id.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::ir::CircuitId;

/// A BFV circuit: nodes are encrypted vectors.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BfvCircuit {
    pub version: u32,
    pub scheme: String,
    pub name: String,
    pub inputs: Vec<VecInput>,
    pub nodes: Vec<PNode>,
    pub outputs: Vec<VecOutput>,
}

/// An encrypted input vector and the range its values are promised to lie in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VecInput {
    pub name: String,
    pub len: u32,
    pub min: i64,
    pub max: i64,
}

/// A named output: the vector a node holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VecOutput {
    pub name: String,
    pub node: u32,
}

/// One vector-valued node; operands refer to earlier nodes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum PNode {
    /// Input vector number `input`.
    Input { input: u32 },
    /// Plain matrix (rows) times the encrypted vector `a`.
    Matvec { a: u32, matrix: Vec<Vec<i64>> },
    /// Dot product of `a` with a plain vector: a vector of length 1.
    Dot { a: u32, weights: Vec<i64> },
    /// Elementwise `a + b` (both encrypted, same length).
    Add { a: u32, b: u32 },
    /// Elementwise `a - b`.
    Sub { a: u32, b: u32 },
    /// Elementwise `a + plain` (`plain` of `a`'s length, or one value for all).
    AddPlain { a: u32, plain: Vec<i64> },
    /// Elementwise `a * plain` (`plain` of `a`'s length, or one value for all).
    MulPlain { a: u32, plain: Vec<i64> },
    /// Elementwise `a * a` (ciphertext multiplication and relinearization).
    Square { a: u32 },
    /// Sum of the elements: a vector of length 1.
    Sum { a: u32 },
}

impl PNode {
    pub fn op_name(&self) -> &'static str {
        match self {
            PNode::Input { .. } => "input",
            PNode::Matvec { .. } => "matvec",
            PNode::Dot { .. } => "dot",
            PNode::Add { .. } => "add",
            PNode::Sub { .. } => "sub",
            PNode::AddPlain { .. } => "add_plain",
            PNode::MulPlain { .. } => "mul_plain",
            PNode::Square { .. } => "square",
            PNode::Sum { .. } => "sum",
        }
    }

    /// The nodes this node reads.
    pub fn deps(&self) -> Vec<u32> {
        match self {
            PNode::Input { .. } => vec![],
            PNode::Add { a, b } | PNode::Sub { a, b } => vec![*a, *b],
            PNode::Matvec { a, .. }
            | PNode::Dot { a, .. }
            | PNode::AddPlain { a, .. }
            | PNode::MulPlain { a, .. }
            | PNode::Square { a }
            | PNode::Sum { a } => vec![*a],
        }
    }
}

impl BfvCircuit {
    /// Canonical JSON bytes (compact, fixed field order).
    pub fn canonical_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Content id: SHA-256 of the canonical JSON.
    pub fn id(&self) -> CircuitId {
        CircuitId(Sha256::digest(self.canonical_json()).into())
    }
}
