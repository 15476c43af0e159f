//! Import of ONNX models (`Gemm`, `MatMul`, `Add`, `Relu`, `Sigmoid` chains) into the model
//! format, with the `onnx-protobuf` messages. The graph must be one chain from its input to its
//! output; weights and biases are float initializers (`float_data`, `double_data` or
//! little-endian `raw_data`). Anything else is a clear error naming the node.

use onnx_protobuf::{Message, ModelProto, NodeProto, TensorProto};

use std::collections::HashMap;

use crate::model::{
    Activation, Layer, Model, ModelError, MAX_LAYERS, MAX_WIDTH, MODEL_JSON_LIMIT, MODEL_VERSION,
};

const FLOAT: i32 = 1;
const DOUBLE: i32 = 11;

fn bad(m: impl Into<String>) -> ModelError {
    ModelError::Invalid(format!("ONNX: {}", m.into()))
}

/// Most nodes a graph may have: every layer is one node, a dense layer two (`MatMul` + `Add`).
const MAX_NODES: usize = 2 * MAX_LAYERS;
/// Most initializers a graph may have (a weight and a bias per dense layer).
const MAX_INITIALIZERS: usize = 2 * MAX_LAYERS;
/// Most dims a weight or bias tensor may have.
const MAX_DIMS: usize = 2;

/// Most length-delimited fields (sub-messages, strings, byte arrays) a file may hold, at any
/// depth. Parsed, each costs a struct or a `String` of up to a few hundred bytes for as
/// little as 2 bytes of file: 15 million empty nodes in a 30 MB file took 3.4 GB to parse.
const MAX_LEN_FIELDS: usize = 100_000;
/// Deepest nesting of messages looked into (ONNX models of the supported ops nest 5 deep).
const MAX_NESTING: usize = 16;

/// Reads a protobuf varint at `*i`.
fn varint(b: &[u8], i: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *b.get(*i)?;
        *i += 1;
        v |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

/// Walks `b` as protobuf wire format before anything is parsed: `Ok(true)` when it is a
/// well-formed message, after counting its length-delimited fields into `count` and
/// descending into those that are well-formed messages too; `Ok(false)` when it is not one
/// (it is then plain bytes to its parent, and counts nothing). Too many fields, or a message
/// nested deeper than [`MAX_NESTING`], is an error: the parser would build all of it. Each
/// byte is read at most `MAX_NESTING + 1` times.
fn prescan(b: &[u8], depth: usize, count: &mut usize) -> Result<bool, ModelError> {
    let mut i = 0;
    let mut mine = 0usize;
    while i < b.len() {
        let Some(tag) = varint(b, &mut i) else {
            return Ok(false);
        };
        if tag >> 3 == 0 {
            return Ok(false);
        }
        match tag & 7 {
            0 => {
                if varint(b, &mut i).is_none() {
                    return Ok(false);
                }
            }
            1 | 5 => {
                i += if tag & 7 == 1 { 8 } else { 4 };
                if i > b.len() {
                    return Ok(false);
                }
            }
            2 => {
                let Some(len) = varint(b, &mut i).and_then(|l| usize::try_from(l).ok()) else {
                    return Ok(false);
                };
                let Some(payload) = i.checked_add(len).and_then(|end| b.get(i..end)) else {
                    return Ok(false);
                };
                i += len;
                mine += 1;
                if *count + mine > MAX_LEN_FIELDS {
                    return Err(bad(format!(
                        "the file holds over {MAX_LEN_FIELDS} length-delimited fields \
                         (messages, strings, tensors)"
                    )));
                }
                if depth < MAX_NESTING && !payload.is_empty() {
                    let mut inner = *count + mine;
                    if prescan(payload, depth + 1, &mut inner)? {
                        mine = inner - *count;
                    }
                }
            }
            _ => return Ok(false),
        }
    }
    if depth >= MAX_NESTING && !b.is_empty() {
        return Err(bad(format!(
            "messages are nested deeper than {MAX_NESTING} levels"
        )));
    }
    *count += mine;
    Ok(true)
}

/// A float tensor's values and dims. Every dim is checked (1..=`MAX_WIDTH`) before anything
/// is allocated, so a tensor's size follows from limits, not from what the file claims.
fn floats(t: &TensorProto) -> Result<(Vec<f64>, Vec<usize>), ModelError> {
    if t.dims.len() > MAX_DIMS {
        return Err(bad(format!(
            "tensor `{}` has {} dims; weights and biases have at most {MAX_DIMS}",
            t.name,
            t.dims.len()
        )));
    }
    let dims: Vec<usize> = t
        .dims
        .iter()
        .map(|d| match usize::try_from(*d) {
            Ok(d) if (1..=MAX_WIDTH).contains(&d) => Ok(d),
            _ => Err(bad(format!(
                "tensor `{}` has dim {d}; every dim must be 1..={MAX_WIDTH}",
                t.name
            ))),
        })
        .collect::<Result<_, _>>()?;
    // At most MAX_WIDTH^2 values: the dims were bounded above.
    let count: usize = dims.iter().product();
    let stored = match t.data_type {
        FLOAT if !t.float_data.is_empty() => t.float_data.len(),
        FLOAT => t.raw_data.len() / 4,
        DOUBLE if !t.double_data.is_empty() => t.double_data.len(),
        DOUBLE => t.raw_data.len() / 8,
        _ => count,
    };
    if stored != count {
        return Err(bad(format!(
            "tensor `{}` holds {stored} values for dims {dims:?}",
            t.name
        )));
    }
    let values: Vec<f64> = match t.data_type {
        FLOAT if !t.float_data.is_empty() => t.float_data.iter().map(|v| f64::from(*v)).collect(),
        FLOAT => t
            .raw_data
            .chunks_exact(4)
            .map(|c| f64::from(f32::from_le_bytes([c[0], c[1], c[2], c[3]])))
            .collect(),
        DOUBLE if !t.double_data.is_empty() => t.double_data.clone(),
        DOUBLE => t
            .raw_data
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
            .collect(),
        other => {
            return Err(bad(format!(
                "tensor `{}` has data type {other}; only float and double are read",
                t.name
            )))
        }
    };
    if values.len() != count {
        return Err(bad(format!(
            "tensor `{}` holds {} values for dims {dims:?}",
            t.name,
            values.len()
        )));
    }
    Ok((values, dims))
}

fn attr_i(n: &NodeProto, name: &str, default: i64) -> i64 {
    n.attribute
        .iter()
        .find(|a| a.name == name)
        .map_or(default, |a| a.i)
}

fn attr_f(n: &NodeProto, name: &str, default: f32) -> f32 {
    n.attribute
        .iter()
        .find(|a| a.name == name)
        .map_or(default, |a| a.f)
}

/// `[in][out]` (or `[out][in]` when `transposed`) values as rows `[out][in]`.
fn rows(v: &[f64], dims: &[usize], transposed: bool) -> Result<Vec<Vec<f64>>, ModelError> {
    let [a, b] = dims else {
        return Err(bad(format!(
            "a weight matrix must have 2 dims, it has {dims:?}"
        )));
    };
    let (n_in, n_out) = if transposed { (*b, *a) } else { (*a, *b) };
    Ok((0..n_out)
        .map(|o| {
            (0..n_in)
                .map(|i| {
                    if transposed {
                        v[o * n_in + i]
                    } else {
                        v[i * n_out + o]
                    }
                })
                .collect()
        })
        .collect())
}

/// Reads an ONNX model into a [`Model`] named `name` whose inputs lie in
/// `input_min..=input_max` (ONNX does not say), then checks it like any uploaded model.
pub fn model_from_onnx(
    bytes: &[u8],
    name: &str,
    input_min: f64,
    input_max: f64,
) -> Result<Model, ModelError> {
    if bytes.len() > MODEL_JSON_LIMIT {
        return Err(bad("the file is over the size limit"));
    }
    // Bounded before the parser allocates anything.
    let mut fields = 0;
    if !prescan(bytes, 0, &mut fields)? {
        return Err(bad(
            "not an ONNX model: the file is not protobuf wire format",
        ));
    }
    let m =
        ModelProto::parse_from_bytes(bytes).map_err(|e| bad(format!("not an ONNX model: {e}")))?;
    let g = m
        .graph
        .as_ref()
        .ok_or_else(|| bad("the model has no graph"))?;
    if g.node.len() > MAX_NODES || g.initializer.len() > MAX_INITIALIZERS {
        return Err(bad(format!(
            "the graph has {} nodes and {} initializers; the limits are {MAX_NODES} and \
             {MAX_INITIALIZERS}",
            g.node.len(),
            g.initializer.len()
        )));
    }
    let initializers: HashMap<&str, &TensorProto> =
        g.initializer.iter().map(|t| (t.name.as_str(), t)).collect();
    let init = |n: &str| initializers.get(n).copied();
    let graph_inputs: Vec<&str> = g
        .input
        .iter()
        .map(|i| i.name.as_str())
        .filter(|n| init(n).is_none())
        .collect();
    let [input] = graph_inputs.as_slice() else {
        return Err(bad(format!(
            "the graph must have one data input, it has {}",
            graph_inputs.len()
        )));
    };
    let mut current = (*input).to_owned();
    let mut layers: Vec<Layer> = Vec::new();
    for n in &g.node {
        let what = |m: &str| bad(format!("node `{}` ({}): {m}", n.name, n.op_type));
        let data = n.input.first().map(String::as_str);
        if data != Some(current.as_str()) {
            return Err(what("the graph is not a single chain from its input"));
        }
        let param = |i: usize| {
            n.input
                .get(i)
                .and_then(|p| init(p))
                .ok_or_else(|| what(&format!("input {i} must be an initializer")))
        };
        if layers.len() >= MAX_LAYERS
            && matches!(n.op_type.as_str(), "Gemm" | "MatMul" | "Relu" | "Sigmoid")
        {
            return Err(what(&format!("a model has at most {MAX_LAYERS} layers")));
        }
        match n.op_type.as_str() {
            "Gemm" => {
                if attr_i(n, "transA", 0) != 0 {
                    return Err(what("transA is not supported"));
                }
                let (alpha, beta) = (
                    f64::from(attr_f(n, "alpha", 1.0)),
                    f64::from(attr_f(n, "beta", 1.0)),
                );
                let (w, dims) = floats(param(1)?)?;
                let mut weights = rows(&w, &dims, attr_i(n, "transB", 0) != 0)?;
                weights.iter_mut().flatten().for_each(|v| *v *= alpha);
                let bias = match n.input.get(2).filter(|s| !s.is_empty()) {
                    Some(_) => {
                        let (b, _) = floats(param(2)?)?;
                        if b.len() != weights.len() {
                            return Err(what("the bias length differs from the output width"));
                        }
                        b.iter().map(|v| v * beta).collect()
                    }
                    None => vec![0.0; weights.len()],
                };
                layers.push(Layer::Dense { weights, bias });
            }
            "MatMul" => {
                let (w, dims) = floats(param(1)?)?;
                let weights = rows(&w, &dims, false)?;
                let bias = vec![0.0; weights.len()];
                layers.push(Layer::Dense { weights, bias });
            }
            "Add" => {
                let (b, _) = floats(param(1)?)?;
                match layers.last_mut() {
                    Some(Layer::Dense { bias, .. }) if bias.len() == b.len() => {
                        bias.iter_mut().zip(&b).for_each(|(x, y)| *x += y);
                    }
                    _ => {
                        return Err(what(
                            "Add must follow a MatMul or Gemm, with a bias of its width",
                        ))
                    }
                }
            }
            "Relu" => layers.push(Layer::Activation {
                function: Activation::Relu,
            }),
            "Sigmoid" => layers.push(Layer::Activation {
                function: Activation::Sigmoid,
            }),
            other => {
                return Err(what(&format!(
                    "op `{other}` is not supported (Gemm, MatMul, Add, Relu, Sigmoid)"
                )))
            }
        }
        current = n
            .output
            .first()
            .cloned()
            .ok_or_else(|| what("the node has no output"))?;
    }
    let input_len = layers
        .iter()
        .find_map(|l| match l {
            Layer::Dense { weights, .. } => weights.first().map(Vec::len),
            Layer::Activation { .. } => None,
        })
        .ok_or_else(|| bad("the graph has no Gemm or MatMul"))?;
    let model = Model {
        version: MODEL_VERSION,
        name: name.to_owned(),
        input_len: u32::try_from(input_len).map_err(|_| bad("the input is too wide"))?,
        input_min,
        input_max,
        input_bits: 4,
        weight_bits: 6,
        layers,
    };
    model.check()?;
    Ok(model)
}

/// ONNX files for tests, hostile ones included.
pub mod testing {
    use onnx_protobuf::{GraphProto, Message, ModelProto, NodeProto, TensorProto, ValueInfoProto};

    /// A graph of `nodes` `MatMul`s, each reading the previous one's output (`x`) and the one
    /// float initializer `w` of `dims` holding `data` (whatever the dims claim).
    pub fn matmul_chain(dims: &[i64], data: &[f32], nodes: usize) -> Vec<u8> {
        let mut w = TensorProto::new();
        w.name = "w".into();
        w.dims = dims.to_vec();
        w.data_type = 1;
        w.raw_data = data.iter().flat_map(|x| x.to_le_bytes()).collect();
        let mut g = GraphProto::new();
        let mut x = ValueInfoProto::new();
        x.name = "x".into();
        g.input.push(x);
        g.initializer = vec![w];
        for _ in 0..nodes {
            let mut n = NodeProto::new();
            n.op_type = "MatMul".into();
            n.input = vec!["x".into(), "w".into()];
            n.output = vec!["x".into()];
            g.node.push(n);
        }
        let mut m = ModelProto::new();
        m.graph = Some(g).into();
        m.write_to_bytes().unwrap_or_default()
    }
}
