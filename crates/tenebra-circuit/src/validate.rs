//! Validation of untrusted circuits: limits, structure and types.

use std::collections::HashSet;

use crate::footprint::{footprint, Footprint};
use crate::ir::{
    BinOp, Circuit, ConstOp, Node, NodeId, Operand, UnOp, FORMAT_VERSION, SCHEME_TFHE,
};
use crate::types::ScalarType;

/// Size limits a circuit must respect before anything else looks at it.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest JSON document accepted, in bytes.
    pub max_json_bytes: usize,
    pub max_nodes: usize,
    pub max_inputs: usize,
    pub max_outputs: usize,
    /// Largest number of scalar values over all inputs.
    pub max_input_values: usize,
    /// Largest vector length of one input or output.
    pub max_vector_len: u32,
    /// Largest argument list of a reduction, argmax or dot product.
    pub max_args: usize,
    /// Widest input of a lookup table, in bits (the table has `2^bits` entries).
    pub max_lut_bits: u8,
    /// Longest chain of dependent nodes.
    pub max_depth: u32,
    pub max_name_len: usize,
    /// Largest number of scalar values over all outputs (an element named twice counts twice).
    pub max_output_values: usize,
    /// Largest number of radix blocks over all outputs: bounds the result's size (a block is
    /// [`crate::footprint::BLOCK_BYTES`]).
    pub max_output_blocks: u64,
    /// Most memory one run may hold ([`crate::footprint::footprint`]): inputs, live values,
    /// temporaries and the result.
    pub max_working_set_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_json_bytes: 16 << 20,
            max_nodes: 200_000,
            max_inputs: 64,
            max_outputs: 64,
            max_input_values: 4096,
            max_vector_len: 4096,
            max_args: 4096,
            max_lut_bits: 8,
            max_depth: 10_000,
            max_name_len: 64,
            max_output_values: 4096,
            // ~66 MiB of result.
            max_output_blocks: 4096,
            max_working_set_bytes: 4 << 30,
        }
    }
}

/// Why a circuit was rejected, naming the node at fault when there is one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValidationError {
    #[error("circuit is not valid JSON of the expected shape: {0}")]
    Json(String),
    #[error("circuit: {0}")]
    Circuit(String),
    #[error("node {node} ({op}): {message}")]
    Node {
        node: NodeId,
        op: &'static str,
        message: String,
    },
    #[error("output `{output}`: {message}")]
    Output { output: String, message: String },
    /// Valid, but running it would take more than a worker gives one task.
    #[error("the circuit is too large: {what} is {needed}, the limit is {limit}")]
    TooLarge {
        what: &'static str,
        needed: u64,
        limit: u64,
    },
}

/// A circuit that passed validation, with the type of every node.
#[derive(Debug, Clone)]
pub struct ValidCircuit {
    circuit: Circuit,
    types: Vec<ScalarType>,
    depth: u32,
    footprint: Footprint,
}

impl ValidCircuit {
    pub fn circuit(&self) -> &Circuit {
        &self.circuit
    }

    /// Type of node `n`.
    pub fn ty(&self, n: NodeId) -> ScalarType {
        self.types[n as usize]
    }

    pub fn types(&self) -> &[ScalarType] {
        &self.types
    }

    /// Longest chain of dependent nodes.
    pub fn depth(&self) -> u32 {
        self.depth
    }

    /// The memory its plan needs (checked against the limits).
    pub fn footprint(&self) -> Footprint {
        self.footprint
    }

    pub fn into_circuit(self) -> Circuit {
        self.circuit
    }
}

impl std::ops::Deref for ValidCircuit {
    type Target = Circuit;

    fn deref(&self) -> &Circuit {
        &self.circuit
    }
}

/// Parses untrusted JSON bytes into a validated circuit.
pub fn parse_circuit(bytes: &[u8], limits: &Limits) -> Result<ValidCircuit, ValidationError> {
    if bytes.len() > limits.max_json_bytes {
        return Err(ValidationError::Circuit(format!(
            "circuit JSON is {} bytes, the limit is {}",
            bytes.len(),
            limits.max_json_bytes
        )));
    }
    let circuit: Circuit =
        serde_json::from_slice(bytes).map_err(|e| ValidationError::Json(e.to_string()))?;
    validate(circuit, limits)
}

fn check_name(kind: &str, name: &str, limits: &Limits) -> Result<(), ValidationError> {
    let ok = !name.is_empty()
        && name.len() <= limits.max_name_len
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        && name.as_bytes()[0].is_ascii_alphabetic();
    if ok {
        Ok(())
    } else {
        Err(ValidationError::Circuit(format!(
            "{kind} name `{}` is invalid: use 1 to {} letters, digits, `_` or `-`, starting with a letter",
            name.escape_default(),
            limits.max_name_len
        )))
    }
}

/// Checks a circuit against the limits and the typing rules.
pub fn validate(circuit: Circuit, limits: &Limits) -> Result<ValidCircuit, ValidationError> {
    let err = |m: String| ValidationError::Circuit(m);
    if circuit.version != FORMAT_VERSION {
        return Err(err(format!(
            "format version {} is not supported (this server reads version {FORMAT_VERSION})",
            circuit.version
        )));
    }
    if circuit.scheme != SCHEME_TFHE {
        return Err(err(format!(
            "scheme `{}` is not supported (expected `{SCHEME_TFHE}`)",
            circuit.scheme.escape_default()
        )));
    }
    check_name("circuit", &circuit.name, limits)?;
    if circuit.inputs.is_empty() || circuit.inputs.len() > limits.max_inputs {
        return Err(err(format!(
            "a circuit needs 1 to {} inputs, this one has {}",
            limits.max_inputs,
            circuit.inputs.len()
        )));
    }
    if circuit.outputs.is_empty() || circuit.outputs.len() > limits.max_outputs {
        return Err(err(format!(
            "a circuit needs 1 to {} outputs, this one has {}",
            limits.max_outputs,
            circuit.outputs.len()
        )));
    }
    if circuit.nodes.len() > limits.max_nodes {
        return Err(err(format!(
            "the circuit has {} nodes, the limit is {}",
            circuit.nodes.len(),
            limits.max_nodes
        )));
    }
    let mut names = HashSet::new();
    let mut total_values = 0usize;
    for input in &circuit.inputs {
        check_name("input", &input.name, limits)?;
        if !names.insert(input.name.as_str()) {
            return Err(err(format!("input name `{}` is used twice", input.name)));
        }
        match input.ty.len {
            Some(n) if n == 0 || n > limits.max_vector_len => {
                return Err(err(format!(
                    "input `{}`: vector length {n} is outside 1..={}",
                    input.name, limits.max_vector_len
                )))
            }
            _ => {}
        }
        total_values += input.ty.count();
    }
    if total_values > limits.max_input_values {
        return Err(err(format!(
            "the inputs hold {total_values} values, the limit is {}",
            limits.max_input_values
        )));
    }

    let mut types: Vec<ScalarType> = Vec::with_capacity(circuit.nodes.len());
    let mut depths: Vec<u32> = Vec::with_capacity(circuit.nodes.len());
    for (i, node) in circuit.nodes.iter().enumerate() {
        let id = i as NodeId;
        let fail = |message: String| ValidationError::Node {
            node: id,
            op: node.op_name(),
            message,
        };
        let deps = node.deps();
        for &d in &deps {
            if d >= id {
                return Err(fail(format!(
                    "refers to node {d}, but a node may only use earlier nodes"
                )));
            }
        }
        let ty = node_type(node, &circuit, &types, limits).map_err(fail)?;
        let depth = 1 + deps.iter().map(|&d| depths[d as usize]).max().unwrap_or(0);
        if depth > limits.max_depth {
            return Err(fail(format!(
                "the circuit is deeper than the limit of {} nodes",
                limits.max_depth
            )));
        }
        types.push(ty);
        depths.push(depth);
    }

    let mut out_names = HashSet::new();
    let mut output_values = 0usize;
    for output in &circuit.outputs {
        let fail = |message: String| ValidationError::Output {
            output: output.name.clone(),
            message,
        };
        check_name("output", &output.name, limits)?;
        if !out_names.insert(output.name.as_str()) {
            return Err(err(format!("output name `{}` is used twice", output.name)));
        }
        if let Some(n) = output.ty.len {
            if n == 0 || n > limits.max_vector_len {
                return Err(fail(format!(
                    "vector length {n} is outside 1..={}",
                    limits.max_vector_len
                )));
            }
        }
        output_values += output.nodes.len();
        if output_values > limits.max_output_values {
            return Err(ValidationError::TooLarge {
                what: "the number of output values",
                needed: circuit.outputs.iter().map(|o| o.nodes.len() as u64).sum(),
                limit: limits.max_output_values as u64,
            });
        }
        if output.nodes.len() != output.ty.count() {
            return Err(fail(format!(
                "type {} needs {} nodes, {} are given",
                output.ty,
                output.ty.count(),
                output.nodes.len()
            )));
        }
        for &n in &output.nodes {
            let Some(&t) = types.get(n as usize) else {
                return Err(fail(format!("node {n} does not exist")));
            };
            if t != output.ty.ty {
                return Err(fail(format!(
                    "node {n} has type {t}, the output is declared {}",
                    output.ty.ty
                )));
            }
        }
    }
    let output_blocks: u64 = circuit
        .outputs
        .iter()
        .map(|o| (o.ty.count() * o.ty.ty.blocks()) as u64)
        .sum();
    if output_blocks > limits.max_output_blocks {
        return Err(ValidationError::TooLarge {
            what: "the number of output blocks (2 bits each, ~16.5 KiB encrypted)",
            needed: output_blocks,
            limit: limits.max_output_blocks,
        });
    }
    let depth = depths.iter().copied().max().unwrap_or(0);
    let mut valid = ValidCircuit {
        circuit,
        types,
        depth,
        footprint: Footprint {
            working_set_bytes: 0,
            result_bytes: 0,
            output_blocks,
        },
    };
    valid.footprint = footprint(&crate::plan::plan(&valid));
    if valid.footprint.working_set_bytes > limits.max_working_set_bytes {
        return Err(ValidationError::TooLarge {
            what: "the memory one run needs, in bytes",
            needed: valid.footprint.working_set_bytes,
            limit: limits.max_working_set_bytes,
        });
    }
    Ok(valid)
}

fn operand_type(
    o: Operand,
    types: &[ScalarType],
    other: Option<ScalarType>,
) -> Result<Option<ScalarType>, String> {
    match o {
        Operand::Node(n) => Ok(Some(types[n as usize])),
        Operand::Const(k) => {
            if let Some(t) = other {
                if k.c & !t.mask() != 0 {
                    return Err(format!(
                        "constant {} does not fit in {t} (constants are {t} bit patterns)",
                        k.c
                    ));
                }
            }
            Ok(None)
        }
    }
}

/// Common type of a pair of operands, of which at least one must be a node.
fn pair_type(a: Operand, b: Operand, types: &[ScalarType]) -> Result<ScalarType, String> {
    let ta = operand_type(a, types, None)?;
    let tb = operand_type(b, types, None)?;
    let t = match (ta, tb) {
        (Some(x), Some(y)) if x != y => {
            return Err(format!("operand types differ: {x} and {y}"));
        }
        (Some(x), _) | (None, Some(x)) => x,
        (None, None) => return Err("at least one operand must be a node".into()),
    };
    operand_type(a, types, Some(t))?;
    operand_type(b, types, Some(t))?;
    Ok(t)
}

fn same_type_args(
    args: &[NodeId],
    types: &[ScalarType],
    limits: &Limits,
) -> Result<ScalarType, String> {
    if args.is_empty() || args.len() > limits.max_args {
        return Err(format!(
            "needs 1 to {} arguments, has {}",
            limits.max_args,
            args.len()
        ));
    }
    let t = types[args[0] as usize];
    if let Some(&bad) = args.iter().find(|&&a| types[a as usize] != t) {
        return Err(format!(
            "arguments must share one type: node {} is {t}, node {bad} is {}",
            args[0], types[bad as usize]
        ));
    }
    Ok(t)
}

fn need_integer(t: ScalarType) -> Result<ScalarType, String> {
    if t.is_integer() {
        Ok(t)
    } else {
        Err(format!("needs integer operands, got {t}"))
    }
}

fn node_type(
    node: &Node,
    circuit: &Circuit,
    types: &[ScalarType],
    limits: &Limits,
) -> Result<ScalarType, String> {
    match node {
        Node::Input { input, index } => {
            let Some(inp) = circuit.inputs.get(*input as usize) else {
                return Err(format!("input {input} does not exist"));
            };
            if (*index as usize) >= inp.ty.count() {
                return Err(format!(
                    "index {index} is out of range for input `{}` of type {}",
                    inp.name, inp.ty
                ));
            }
            Ok(inp.ty.ty)
        }
        Node::Unary { op, a } => {
            let t = types[*a as usize];
            match op {
                UnOp::Neg => need_integer(t),
                UnOp::Not => Ok(t),
            }
        }
        Node::Binary { op, a, b } => {
            let t = pair_type(*a, *b, types)?;
            match op {
                BinOp::And | BinOp::Or | BinOp::Xor => Ok(t),
                _ => need_integer(t),
            }
        }
        Node::Compare { a, b, .. } => {
            need_integer(pair_type(*a, *b, types)?).map(|_| ScalarType::Bool)
        }
        Node::ByConst { op, a, c } => {
            let t = need_integer(types[*a as usize])?;
            match op {
                ConstOp::Div | ConstOp::Rem => {
                    if *c & !t.mask() != 0 {
                        return Err(format!("divisor {c} does not fit in {t}"));
                    }
                    if t.to_i128(*c) <= 0 {
                        return Err(format!("divisor must be positive, got {}", t.to_i128(*c)));
                    }
                }
                ConstOp::Shl | ConstOp::Shr => {
                    if *c >= u64::from(t.bits()) {
                        return Err(format!("shift by {c} is not below the width of {t}"));
                    }
                }
            }
            Ok(t)
        }
        Node::Select { cond, a, b } => {
            let tc = types[*cond as usize];
            if tc != ScalarType::Bool {
                return Err(format!("condition node {cond} must be bool, is {tc}"));
            }
            pair_type(*a, *b, types)
        }
        Node::Cast { to, .. } => Ok(*to),
        Node::Reduce { args, .. } => need_integer(same_type_args(args, types, limits)?),
        Node::ArgMax { args, to } => {
            need_integer(same_type_args(args, types, limits)?)?;
            need_integer(*to)?;
            if (args.len() as i128 - 1) > to.range().1 {
                return Err(format!("{to} cannot hold index {}", args.len() - 1));
            }
            Ok(*to)
        }
        Node::Dot { args, weights } => {
            let t = need_integer(same_type_args(args, types, limits)?)?;
            if weights.len() != args.len() {
                return Err(format!(
                    "{} weights for {} arguments",
                    weights.len(),
                    args.len()
                ));
            }
            if let Some(w) = weights.iter().find(|&&w| w & !t.mask() != 0) {
                return Err(format!("weight {w} does not fit in {t}"));
            }
            Ok(t)
        }
        Node::Lut { a, table, to } => {
            let t = need_integer(types[*a as usize])?;
            if t.bits() > limits.max_lut_bits {
                return Err(format!(
                    "lookup tables take inputs of at most {} bits, got {t}",
                    limits.max_lut_bits
                ));
            }
            if table.len() != 1usize << t.bits() {
                return Err(format!(
                    "a table on {t} needs {} entries, has {}",
                    1usize << t.bits(),
                    table.len()
                ));
            }
            if let Some(v) = table.iter().find(|&&v| v & !to.mask() != 0) {
                return Err(format!("table entry {v} does not fit in {to}"));
            }
            Ok(*to)
        }
    }
}
