//! The circuit IR and its versioned canonical JSON form.
//!
//! A circuit is a list of nodes in topological order: a node refers only to nodes before it, so
//! the graph is acyclic by construction. Every node produces one encrypted scalar; vectors exist
//! at the interface (inputs and outputs are lists of nodes). Plain values never become nodes:
//! they are constants inside the nodes that use them, so the executor always has the cheap
//! scalar form of an operation at hand.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::types::{IoType, ScalarType};

/// Version of the canonical JSON form this crate reads and writes.
pub const FORMAT_VERSION: u32 = 1;

/// The scheme TFHE circuits declare (BFV circuits declare `bfv`: see [`crate::scheme`]).
pub const SCHEME_TFHE: &str = "tfhe";

/// Index of a node in [`Circuit::nodes`].
pub type NodeId = u32;

/// An operand: the value of an earlier node, or a plain constant.
///
/// Constants are stored as their two's complement bit pattern in the operation's type, so
/// `-1` of an `i8` operation is `255`. JSON: `3` is node 3, `{"c": 5}` is the constant 5.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Operand {
    Node(NodeId),
    Const(Const),
}

/// A plain constant operand (JSON `{"c": value}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Const {
    pub c: u64,
}

impl Operand {
    pub fn node(self) -> Option<NodeId> {
        match self {
            Self::Node(n) => Some(n),
            Self::Const(_) => None,
        }
    }
}

/// Unary operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UnOp {
    /// Wrapping negation.
    Neg,
    /// Bitwise not (logical not for `bool`).
    Not,
}

/// Binary operations whose result has the operands' type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BinOp {
    Add,
    Sub,
    Mul,
    And,
    Or,
    Xor,
    Min,
    Max,
}

/// Comparisons; the result is a `bool`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl CmpOp {
    /// The comparison with its operands swapped: `a < b` is `b > a`.
    pub fn swapped(self) -> Self {
        match self {
            Self::Eq => Self::Eq,
            Self::Ne => Self::Ne,
            Self::Lt => Self::Gt,
            Self::Le => Self::Ge,
            Self::Gt => Self::Lt,
            Self::Ge => Self::Le,
        }
    }
}

/// Operations whose second argument is always a plain constant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConstOp {
    /// Division by a non-zero constant (toward zero; signed divisors must be positive).
    Div,
    /// Remainder of the division by a non-zero constant (sign of the dividend).
    Rem,
    /// Left shift by a constant smaller than the width.
    Shl,
    /// Right shift (arithmetic for signed types) by a constant smaller than the width.
    Shr,
}

/// Reductions over a list of same-typed values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReduceOp {
    /// Wrapping sum.
    Sum,
    Min,
    Max,
}

/// One node of the graph.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Node {
    /// Element `index` of input `input` (0 for a scalar input).
    Input {
        input: u32,
        index: u32,
    },
    Unary {
        op: UnOp,
        a: NodeId,
    },
    Binary {
        op: BinOp,
        a: Operand,
        b: Operand,
    },
    Compare {
        op: CmpOp,
        a: Operand,
        b: Operand,
    },
    ByConst {
        op: ConstOp,
        a: NodeId,
        c: u64,
    },
    /// `cond ? a : b`; `cond` is a `bool`.
    Select {
        cond: NodeId,
        a: Operand,
        b: Operand,
    },
    /// Conversion with Rust `as` semantics (truncate, zero- or sign-extend); to `bool`: `!= 0`.
    Cast {
        a: NodeId,
        to: ScalarType,
    },
    Reduce {
        op: ReduceOp,
        args: Vec<NodeId>,
    },
    /// Index of the first largest value, as type `to`.
    ArgMax {
        args: Vec<NodeId>,
        to: ScalarType,
    },
    /// Wrapping dot product with plain weights (bit patterns in the arguments' type).
    Dot {
        args: Vec<NodeId>,
        weights: Vec<u64>,
    },
    /// `table[a]`, with `a` read as an unsigned index; the table has `2^bits(a)` entries.
    Lut {
        a: NodeId,
        table: Vec<u64>,
        to: ScalarType,
    },
}

/// A named circuit input.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Input {
    pub name: String,
    #[serde(rename = "type")]
    pub ty: IoType,
}

/// A named circuit output: the nodes holding its elements.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Output {
    pub name: String,
    #[serde(rename = "type")]
    pub ty: IoType,
    pub nodes: Vec<NodeId>,
}

/// A typed dataflow graph of FHE operations with named inputs and outputs.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Circuit {
    pub version: u32,
    pub scheme: String,
    pub name: String,
    pub inputs: Vec<Input>,
    pub nodes: Vec<Node>,
    pub outputs: Vec<Output>,
}

/// A circuit's content id: SHA-256 of its canonical JSON bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CircuitId(pub [u8; 32]);

impl std::fmt::Display for CircuitId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl std::str::FromStr for CircuitId {
    type Err = hex::FromHexError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out)?;
        Ok(Self(out))
    }
}

impl Circuit {
    /// The canonical JSON bytes: compact, fields in a fixed order, no optional field that is
    /// absent. Parsing any JSON form of a circuit and re-serializing gives these bytes.
    pub fn canonical_json(&self) -> Vec<u8> {
        // Serializing plain structs, strings and integers to a Vec cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// The content id: SHA-256 of [`Self::canonical_json`].
    pub fn id(&self) -> CircuitId {
        CircuitId(Sha256::digest(self.canonical_json()).into())
    }

    /// Number of scalar input values, in signature order.
    pub fn input_count(&self) -> usize {
        self.inputs.iter().map(|i| i.ty.count()).sum()
    }

    /// Position of each input's first value among the flattened input values.
    pub fn input_offsets(&self) -> Vec<usize> {
        self.inputs
            .iter()
            .scan(0usize, |acc, i| {
                let o = *acc;
                *acc += i.ty.count();
                Some(o)
            })
            .collect()
    }

    /// The inputs and the outputs with their types, each list joined by `, `:
    /// `("a: u16[5], b: i8", "c: u16")`.
    pub fn signature_lists(&self) -> (String, String) {
        let inputs = self.inputs.iter().map(|i| format!("{}: {}", i.name, i.ty));
        let outputs = self.outputs.iter().map(|o| format!("{}: {}", o.name, o.ty));
        (
            inputs.collect::<Vec<_>>().join(", "),
            outputs.collect::<Vec<_>>().join(", "),
        )
    }

    /// Scalar type of every input value, in signature order (vectors flattened).
    pub fn input_types(&self) -> Vec<ScalarType> {
        self.inputs
            .iter()
            .flat_map(|i| std::iter::repeat_n(i.ty.ty, i.ty.count()))
            .collect()
    }
}

// ---- JSON form of nodes -------------------------------------------------------------------
//
// Nodes are flat objects, `{"op": "add", "a": 1, "b": {"c": 3}}`, read through a wire struct
// so that a missing or unexpected field is reported with the op's name.

#[derive(Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct WireNode {
    op: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    input: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    index: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cond: Option<NodeId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    a: Option<Operand>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    b: Option<Operand>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    c: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    args: Option<Vec<NodeId>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    weights: Option<Vec<u64>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    table: Option<Vec<u64>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    to: Option<ScalarType>,
}

const UN_OPS: [(&str, UnOp); 2] = [("neg", UnOp::Neg), ("not", UnOp::Not)];
const BIN_OPS: [(&str, BinOp); 8] = [
    ("add", BinOp::Add),
    ("sub", BinOp::Sub),
    ("mul", BinOp::Mul),
    ("and", BinOp::And),
    ("or", BinOp::Or),
    ("xor", BinOp::Xor),
    ("min", BinOp::Min),
    ("max", BinOp::Max),
];
const CMP_OPS: [(&str, CmpOp); 6] = [
    ("eq", CmpOp::Eq),
    ("ne", CmpOp::Ne),
    ("lt", CmpOp::Lt),
    ("le", CmpOp::Le),
    ("gt", CmpOp::Gt),
    ("ge", CmpOp::Ge),
];
const CONST_OPS: [(&str, ConstOp); 4] = [
    ("div", ConstOp::Div),
    ("rem", ConstOp::Rem),
    ("shl", ConstOp::Shl),
    ("shr", ConstOp::Shr),
];
const REDUCE_OPS: [(&str, ReduceOp); 3] = [
    ("sum", ReduceOp::Sum),
    ("min_of", ReduceOp::Min),
    ("max_of", ReduceOp::Max),
];

fn name_of<T: PartialEq + Copy>(table: &[(&'static str, T)], op: T) -> &'static str {
    table.iter().find(|(_, o)| *o == op).map_or("?", |(n, _)| n)
}

fn lookup<T: Copy>(table: &[(&'static str, T)], name: &str) -> Option<T> {
    table.iter().find(|(n, _)| *n == name).map(|(_, o)| *o)
}

impl Node {
    /// The op's name in the JSON form.
    pub fn op_name(&self) -> &'static str {
        match self {
            Node::Input { .. } => "input",
            Node::Unary { op, .. } => name_of(&UN_OPS, *op),
            Node::Binary { op, .. } => name_of(&BIN_OPS, *op),
            Node::Compare { op, .. } => name_of(&CMP_OPS, *op),
            Node::ByConst { op, .. } => name_of(&CONST_OPS, *op),
            Node::Select { .. } => "select",
            Node::Cast { .. } => "cast",
            Node::Reduce { op, .. } => name_of(&REDUCE_OPS, *op),
            Node::ArgMax { .. } => "argmax",
            Node::Dot { .. } => "dot",
            Node::Lut { .. } => "lut",
        }
    }

    /// The nodes this node reads, in argument order.
    pub fn deps(&self) -> Vec<NodeId> {
        match self {
            Node::Input { .. } => vec![],
            Node::Unary { a, .. }
            | Node::ByConst { a, .. }
            | Node::Cast { a, .. }
            | Node::Lut { a, .. } => vec![*a],
            Node::Binary { a, b, .. } | Node::Compare { a, b, .. } => {
                a.node().into_iter().chain(b.node()).collect()
            }
            Node::Select { cond, a, b } => std::iter::once(*cond)
                .chain(a.node())
                .chain(b.node())
                .collect(),
            Node::Reduce { args, .. } | Node::ArgMax { args, .. } | Node::Dot { args, .. } => {
                args.clone()
            }
        }
    }

    fn to_wire(&self) -> WireNode {
        let op = self.op_name().to_owned();
        match self {
            Node::Input { input, index } => WireNode {
                op,
                input: Some(*input),
                index: Some(*index),
                ..WireNode::default()
            },
            Node::Unary { a, .. } => WireNode {
                op,
                a: Some(Operand::Node(*a)),
                ..WireNode::default()
            },
            Node::Binary { a, b, .. } | Node::Compare { a, b, .. } => WireNode {
                op,
                a: Some(*a),
                b: Some(*b),
                ..WireNode::default()
            },
            Node::ByConst { a, c, .. } => WireNode {
                op,
                a: Some(Operand::Node(*a)),
                c: Some(*c),
                ..WireNode::default()
            },
            Node::Select { cond, a, b } => WireNode {
                op,
                cond: Some(*cond),
                a: Some(*a),
                b: Some(*b),
                ..WireNode::default()
            },
            Node::Cast { a, to } => WireNode {
                op,
                a: Some(Operand::Node(*a)),
                to: Some(*to),
                ..WireNode::default()
            },
            Node::Reduce { args, .. } => WireNode {
                op,
                args: Some(args.clone()),
                ..WireNode::default()
            },
            Node::ArgMax { args, to } => WireNode {
                op,
                args: Some(args.clone()),
                to: Some(*to),
                ..WireNode::default()
            },
            Node::Dot { args, weights } => WireNode {
                op,
                args: Some(args.clone()),
                weights: Some(weights.clone()),
                ..WireNode::default()
            },
            Node::Lut { a, table, to } => WireNode {
                op,
                a: Some(Operand::Node(*a)),
                table: Some(table.clone()),
                to: Some(*to),
                ..WireNode::default()
            },
        }
    }

    fn from_wire(w: WireNode) -> Result<Self, String> {
        let op = w.op.as_str();
        let mut used: Vec<&'static str> = Vec::new();
        let mut need = |field: &'static str, present: bool| -> Result<(), String> {
            used.push(field);
            if present {
                Ok(())
            } else {
                Err(format!("op `{op}` needs field `{field}`"))
            }
        };
        let node_a = |a: Option<Operand>| match a {
            Some(Operand::Node(n)) => Ok(n),
            _ => Err(format!("op `{op}`: field `a` must be a node id")),
        };
        let node = if op == "input" {
            need("input", w.input.is_some())?;
            need("index", w.index.is_some())?;
            Node::Input {
                input: w.input.unwrap_or_default(),
                index: w.index.unwrap_or_default(),
            }
        } else if let Some(u) = lookup(&UN_OPS, op) {
            need("a", w.a.is_some())?;
            Node::Unary {
                op: u,
                a: node_a(w.a)?,
            }
        } else if let Some(b) = lookup(&BIN_OPS, op) {
            need("a", w.a.is_some())?;
            need("b", w.b.is_some())?;
            Node::Binary {
                op: b,
                a: w.a.unwrap_or(Operand::Node(0)),
                b: w.b.unwrap_or(Operand::Node(0)),
            }
        } else if let Some(c) = lookup(&CMP_OPS, op) {
            need("a", w.a.is_some())?;
            need("b", w.b.is_some())?;
            Node::Compare {
                op: c,
                a: w.a.unwrap_or(Operand::Node(0)),
                b: w.b.unwrap_or(Operand::Node(0)),
            }
        } else if let Some(k) = lookup(&CONST_OPS, op) {
            need("a", w.a.is_some())?;
            need("c", w.c.is_some())?;
            Node::ByConst {
                op: k,
                a: node_a(w.a)?,
                c: w.c.unwrap_or_default(),
            }
        } else if op == "select" {
            need("cond", w.cond.is_some())?;
            need("a", w.a.is_some())?;
            need("b", w.b.is_some())?;
            Node::Select {
                cond: w.cond.unwrap_or_default(),
                a: w.a.unwrap_or(Operand::Node(0)),
                b: w.b.unwrap_or(Operand::Node(0)),
            }
        } else if op == "cast" {
            need("a", w.a.is_some())?;
            need("to", w.to.is_some())?;
            Node::Cast {
                a: node_a(w.a)?,
                to: w.to.unwrap_or(ScalarType::Bool),
            }
        } else if let Some(r) = lookup(&REDUCE_OPS, op) {
            need("args", w.args.is_some())?;
            Node::Reduce {
                op: r,
                args: w.args.clone().unwrap_or_default(),
            }
        } else if op == "argmax" {
            need("args", w.args.is_some())?;
            need("to", w.to.is_some())?;
            Node::ArgMax {
                args: w.args.clone().unwrap_or_default(),
                to: w.to.unwrap_or(ScalarType::Bool),
            }
        } else if op == "dot" {
            need("args", w.args.is_some())?;
            need("weights", w.weights.is_some())?;
            Node::Dot {
                args: w.args.clone().unwrap_or_default(),
                weights: w.weights.clone().unwrap_or_default(),
            }
        } else if op == "lut" {
            need("a", w.a.is_some())?;
            need("table", w.table.is_some())?;
            need("to", w.to.is_some())?;
            Node::Lut {
                a: node_a(w.a)?,
                table: w.table.clone().unwrap_or_default(),
                to: w.to.unwrap_or(ScalarType::Bool),
            }
        } else {
            return Err(format!("unknown op `{op}`"));
        };
        let present = [
            ("input", w.input.is_some()),
            ("index", w.index.is_some()),
            ("cond", w.cond.is_some()),
            ("a", w.a.is_some()),
            ("b", w.b.is_some()),
            ("c", w.c.is_some()),
            ("args", w.args.is_some()),
            ("weights", w.weights.is_some()),
            ("table", w.table.is_some()),
            ("to", w.to.is_some()),
        ];
        if let Some((field, _)) = present.iter().find(|(f, p)| *p && !used.contains(f)) {
            return Err(format!("op `{op}` does not take field `{field}`"));
        }
        Ok(node)
    }
}

impl Serialize for Node {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.to_wire().serialize(s)
    }
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Node::from_wire(WireNode::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}
