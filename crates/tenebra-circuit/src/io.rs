//! Conversion between JSON documents and a circuit's plain input and output values.

use serde_json::{Map, Value};

use crate::ir::Circuit;
use crate::types::{IoType, ScalarType};

/// A JSON input that does not match a circuit's signature.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct IoError(pub String);

/// Reads one JSON number (or `true`/`false` for `bool`) as a bit pattern of `ty`.
pub fn encode_scalar(ty: ScalarType, v: &Value, what: &str) -> Result<u64, IoError> {
    let n: i128 = match (ty, v) {
        (ScalarType::Bool, Value::Bool(b)) => i128::from(*b),
        (_, Value::Number(n)) => {
            if let Some(u) = n.as_u64() {
                i128::from(u)
            } else if let Some(i) = n.as_i64() {
                i128::from(i)
            } else {
                return Err(IoError(format!("{what}: {n} is not an integer")));
            }
        }
        _ => return Err(IoError(format!("{what}: expected a {ty} value, got {v}"))),
    };
    ty.from_i128(n).ok_or_else(|| {
        let (lo, hi) = ty.range();
        IoError(format!(
            "{what}: {n} is out of range for {ty} ({lo}..={hi})"
        ))
    })
}

/// Reads a scalar (JSON number) or a vector (JSON array of the exact length) of type `ty`.
pub fn encode_value(ty: IoType, v: &Value, what: &str) -> Result<Vec<u64>, IoError> {
    match ty.len {
        None => Ok(vec![encode_scalar(ty.ty, v, what)?]),
        Some(n) => {
            let Value::Array(items) = v else {
                return Err(IoError(format!("{what}: expected an array of {n} values")));
            };
            if items.len() != n as usize {
                return Err(IoError(format!(
                    "{what}: expected {n} values, got {}",
                    items.len()
                )));
            }
            items
                .iter()
                .enumerate()
                .map(|(i, x)| encode_scalar(ty.ty, x, &format!("{what}[{i}]")))
                .collect()
        }
    }
}

/// Reads `{"input_name": value, ...}` into bit patterns in signature order.
pub fn encode_inputs(c: &Circuit, json: &Value) -> Result<Vec<u64>, IoError> {
    let Value::Object(map) = json else {
        return Err(IoError("input must be a JSON object".into()));
    };
    if let Some(extra) = map.keys().find(|k| !c.inputs.iter().any(|i| &i.name == *k)) {
        return Err(IoError(format!(
            "unknown input `{extra}` (expected {})",
            c.inputs
                .iter()
                .map(|i| format!("`{}`", i.name))
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    let mut out = Vec::with_capacity(c.input_count());
    for input in &c.inputs {
        let v = map
            .get(&input.name)
            .ok_or_else(|| IoError(format!("missing input `{}` ({})", input.name, input.ty)))?;
        out.extend(encode_value(input.ty, v, &input.name)?);
    }
    Ok(out)
}

/// Writes one bit pattern of `ty` as JSON.
pub fn decode_scalar(ty: ScalarType, bits: u64) -> Value {
    match ty {
        ScalarType::Bool => Value::Bool(bits & 1 == 1),
        ScalarType::Int(_) => Value::from(ty.to_i128(bits) as i64),
        ScalarType::Uint(_) => Value::from(bits & ty.mask()),
    }
}

/// Writes output values (one list per output) as `{"output_name": value, ...}`.
pub fn decode_outputs(c: &Circuit, values: &[Vec<u64>]) -> Value {
    let mut map = Map::new();
    for (o, vals) in c.outputs.iter().zip(values) {
        let v = match o.ty.len {
            None => decode_scalar(o.ty.ty, vals.first().copied().unwrap_or(0)),
            Some(_) => Value::Array(vals.iter().map(|&b| decode_scalar(o.ty.ty, b)).collect()),
        };
        map.insert(o.name.clone(), v);
    }
    Value::Object(map)
}
