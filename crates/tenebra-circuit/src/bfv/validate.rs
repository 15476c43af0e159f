//! Validation of untrusted BFV circuits: limits, structure, then the plan (which refuses a
//! circuit no parameter set carries); the signature a client encrypts with.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::footprint::{bfv_footprint, BfvFootprint};
use super::ir::{BfvCircuit, PNode, VecInput};
use super::layout::{layout_for, Layout};
use super::plan::{plan_bfv, BfvPlan};
use super::{cost::cost_cu, DEGREES, SCHEME_BFV};
use crate::ir::{CircuitId, FORMAT_VERSION};

/// Size limits of untrusted BFV circuits.
#[derive(Debug, Clone)]
pub struct BfvLimits {
    pub max_json_bytes: usize,
    pub max_nodes: usize,
    pub max_inputs: usize,
    pub max_vector_len: usize,
    /// Matrix entries over the whole circuit.
    pub max_matrix_entries: usize,
    /// Largest absolute value of an input bound or a plain constant.
    pub max_abs_value: i64,
    pub max_name_len: usize,
    /// Most memory one run may hold ([`super::bfv_footprint`]): values, plain operands,
    /// keys and scratch.
    pub max_working_set_bytes: u64,
}

impl Default for BfvLimits {
    fn default() -> Self {
        Self {
            max_json_bytes: 64 << 20,
            max_nodes: 256,
            max_inputs: 16,
            max_vector_len: 1 << 16,
            max_matrix_entries: 1 << 22,
            max_abs_value: 1 << 30,
            max_name_len: 64,
            max_working_set_bytes: 4 << 30,
        }
    }
}

/// A validated BFV circuit with its plan.
#[derive(Debug, Clone)]
pub struct ValidBfv {
    circuit: BfvCircuit,
    plan: BfvPlan,
    id: CircuitId,
}

impl ValidBfv {
    pub fn circuit(&self) -> &BfvCircuit {
        &self.circuit
    }
    pub fn plan(&self) -> &BfvPlan {
        &self.plan
    }
    /// The content id (computed once: a catalogue's JSON takes milliseconds to hash).
    pub fn id(&self) -> CircuitId {
        self.id
    }
    /// Cost in CU (1 CU = 1 ms of single-thread CPU on the reference machine).
    pub fn cost_cu(&self) -> u64 {
        cost_cu(self.plan.degree, &self.plan.stats)
    }
    /// The memory one run holds.
    pub fn footprint(&self) -> BfvFootprint {
        bfv_footprint(&self.circuit, &self.plan)
    }
}

/// What a client needs to encrypt for, and decrypt the results of, a BFV circuit without
/// seeing it (a model's weights stay on the server): parameters, inputs, output lengths and
/// the keys it needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BfvSignature {
    pub circuit_id: String,
    pub degree: usize,
    pub plain_modulus: u64,
    pub inputs: Vec<VecInput>,
    pub outputs: Vec<SignatureOutput>,
    pub rotations: BTreeSet<usize>,
    pub row_swap: bool,
    pub relin: bool,
}

/// An output's name and length.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignatureOutput {
    pub name: String,
    pub len: usize,
}

impl BfvSignature {
    /// The layout of a vector of `len` values (every node's layout follows from its length).
    pub fn layout(&self, len: usize) -> Layout {
        layout_for(len, self.degree)
    }
}

impl ValidBfv {
    /// The circuit's signature.
    pub fn signature(&self) -> BfvSignature {
        let plan = &self.plan;
        BfvSignature {
            circuit_id: self.id().to_string(),
            degree: plan.degree,
            plain_modulus: plan.plain_modulus,
            inputs: self.circuit.inputs.clone(),
            outputs: self
                .circuit
                .outputs
                .iter()
                .map(|o| SignatureOutput {
                    name: o.name.clone(),
                    len: plan.nodes[o.node as usize].len,
                })
                .collect(),
            rotations: plan.rotations.clone(),
            row_swap: plan.row_swap,
            relin: plan.relin,
        }
    }
}

/// Why a BFV circuit was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BfvError {
    #[error("circuit is not valid JSON of the expected shape: {0}")]
    Json(String),
    #[error("circuit: {0}")]
    Circuit(String),
    #[error("node {node} ({op}): {message}")]
    Node {
        node: u32,
        op: &'static str,
        message: String,
    },
    /// The circuit is valid but no parameter set can carry it.
    #[error("{0}")]
    TooDeep(String),
    /// Valid, but a run would hold more memory than a worker gives one task.
    #[error("the circuit is too large: the memory one run needs is {needed} bytes, the limit is {limit}")]
    TooLarge { needed: u64, limit: u64 },
}

/// Parses and validates an untrusted BFV circuit (JSON) and plans it.
pub fn parse_bfv(bytes: &[u8], limits: &BfvLimits) -> Result<ValidBfv, BfvError> {
    if bytes.len() > limits.max_json_bytes {
        return Err(BfvError::Circuit(format!(
            "{} bytes is over the {}-byte limit",
            bytes.len(),
            limits.max_json_bytes
        )));
    }
    let circuit: BfvCircuit =
        serde_json::from_slice(bytes).map_err(|e| BfvError::Json(e.to_string()))?;
    validate_bfv(circuit, limits)
}

/// Validates a BFV circuit and chooses its parameters.
pub fn validate_bfv(circuit: BfvCircuit, limits: &BfvLimits) -> Result<ValidBfv, BfvError> {
    check_structure(&circuit, limits)?;
    let mut last = None;
    for degree in DEGREES {
        match plan_bfv(&circuit, degree) {
            Ok(plan) => {
                // The smallest degree that carries the circuit also needs the least memory.
                let needed = bfv_footprint(&circuit, &plan).working_set_bytes;
                if needed > limits.max_working_set_bytes {
                    return Err(BfvError::TooLarge {
                        needed,
                        limit: limits.max_working_set_bytes,
                    });
                }
                let id = circuit.id();
                return Ok(ValidBfv { circuit, plan, id });
            }
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| BfvError::Circuit("no parameters".into())))
}

fn check_structure(c: &BfvCircuit, limits: &BfvLimits) -> Result<(), BfvError> {
    let err = |m: String| Err(BfvError::Circuit(m));
    if c.version != FORMAT_VERSION {
        return err(format!(
            "version {} is not supported (this server reads version {FORMAT_VERSION})",
            c.version
        ));
    }
    if c.scheme != SCHEME_BFV {
        return err(format!(
            "scheme `{}` is not a BFV scheme (expected `{SCHEME_BFV}`)",
            c.scheme
        ));
    }
    let name_ok = |n: &str| {
        !n.is_empty()
            && n.len() <= limits.max_name_len
            && n.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    };
    if !name_ok(&c.name) {
        return err(format!(
            "name must be 1..={} characters of [A-Za-z0-9_-]",
            limits.max_name_len
        ));
    }
    if c.inputs.is_empty() || c.inputs.len() > limits.max_inputs {
        return err(format!("needs 1..={} inputs", limits.max_inputs));
    }
    if c.outputs.is_empty() || c.outputs.len() > limits.max_inputs {
        return err(format!("needs 1..={} outputs", limits.max_inputs));
    }
    if c.nodes.is_empty() || c.nodes.len() > limits.max_nodes {
        return err(format!("needs 1..={} nodes", limits.max_nodes));
    }
    let mut names = BTreeSet::new();
    for i in &c.inputs {
        if !name_ok(&i.name) || !names.insert(i.name.as_str()) {
            return err(format!("input name `{}` is invalid or repeated", i.name));
        }
        if i.len == 0 || i.len as usize > limits.max_vector_len {
            return err(format!(
                "input `{}`: length must be 1..={}",
                i.name, limits.max_vector_len
            ));
        }
        if i.min > i.max || i.min.abs() > limits.max_abs_value || i.max.abs() > limits.max_abs_value
        {
            return err(format!(
                "input `{}`: range must satisfy min <= max, |bounds| <= {}",
                i.name, limits.max_abs_value
            ));
        }
    }
    let mut names = BTreeSet::new();
    for o in &c.outputs {
        if !name_ok(&o.name) || !names.insert(o.name.as_str()) {
            return err(format!("output name `{}` is invalid or repeated", o.name));
        }
        if o.node as usize >= c.nodes.len() {
            return err(format!(
                "output `{}` refers to node {} of {}",
                o.name,
                o.node,
                c.nodes.len()
            ));
        }
    }
    let mut entries = 0usize;
    for (id, n) in c.nodes.iter().enumerate() {
        let node_err = |message: String| BfvError::Node {
            node: id as u32,
            op: n.op_name(),
            message,
        };
        if let Some(d) = n.deps().into_iter().find(|d| *d as usize >= id) {
            return Err(node_err(format!("refers to node {d}, not an earlier one")));
        }
        let plains: &[i64] = match n {
            PNode::Input { input } => {
                if *input as usize >= c.inputs.len() {
                    return Err(node_err(format!("input {input} does not exist")));
                }
                &[]
            }
            PNode::Dot { weights, .. } => weights,
            PNode::AddPlain { plain, .. } | PNode::MulPlain { plain, .. } => plain,
            PNode::Matvec { matrix, .. } => {
                entries = entries.saturating_add(matrix.iter().map(Vec::len).sum());
                if entries > limits.max_matrix_entries {
                    return Err(node_err(format!(
                        "the circuit's matrices hold more than {} entries",
                        limits.max_matrix_entries
                    )));
                }
                if let Some(v) = matrix
                    .iter()
                    .flatten()
                    .find(|v| v.abs() > limits.max_abs_value)
                {
                    return Err(node_err(format!(
                        "matrix entry {v} is over the limit {}",
                        limits.max_abs_value
                    )));
                }
                &[]
            }
            _ => &[],
        };
        if let Some(v) = plains.iter().find(|v| v.abs() > limits.max_abs_value) {
            return Err(node_err(format!(
                "plain value {v} is over the limit {}",
                limits.max_abs_value
            )));
        }
    }
    Ok(())
}
