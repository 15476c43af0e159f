//! Tenebra's built-in functions.
//!
//! A function is a family of circuits (one per input size, built with the tracing builder),
//! the conversion of its JSON input to circuit inputs, the client-side post-processing of the
//! decrypted outputs, and an independent plaintext reference written directly in Rust. Tests
//! check the encrypted result and the circuit's plaintext simulation against the reference.

use std::ops::RangeInclusive;

use serde_json::Value;
use std::sync::{Arc, OnceLock};
use tenebra_circuit::bfv::{evaluate_bfv, ValidBfv};
use tenebra_circuit::cost::{cost, Cost};
use tenebra_circuit::eval::evaluate;
use tenebra_circuit::ValidCircuit;

pub mod ad_targeting;
pub mod model;
pub mod onnx;
pub mod sleep_quality;
pub mod weight_stats;

/// A JSON input a function cannot take.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FunctionError {
    #[error("unknown function `{0}` (see `tenebra functions list`)")]
    Unknown(String),
    #[error("invalid input for {function}: {message}")]
    Input {
        function: &'static str,
        message: String,
    },
    #[error("{function} takes sizes {min}..={max}, got {size}")]
    Size {
        function: &'static str,
        size: u32,
        min: u32,
        max: u32,
    },
}

/// An input's size and its circuit input values.
pub type Encoded = (u32, Vec<u64>);

/// A built-in function.
pub struct Builtin {
    pub name: &'static str,
    /// One line: what it computes.
    pub summary: &'static str,
    /// Input and output JSON shape, human-readable.
    pub signature: &'static str,
    /// Input sizes (number of values or records) the function accepts.
    pub sizes: RangeInclusive<u32>,
    build: fn(u32) -> ValidCircuit,
    encode: fn(&Value) -> Result<Encoded, String>,
    finish: fn(u32, &[Vec<u64>]) -> Value,
    reference: fn(&Value) -> Result<Value, String>,
}

impl std::fmt::Debug for Builtin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Builtin").field("name", &self.name).finish()
    }
}

static BUILTINS: [Builtin; 2] = [weight_stats::BUILTIN, sleep_quality::BUILTIN];

/// Every built-in function.
pub fn builtins() -> &'static [Builtin] {
    &BUILTINS
}

/// Looks a built-in up by name.
pub fn find(name: &str) -> Result<&'static Builtin, FunctionError> {
    BUILTINS
        .iter()
        .find(|b| b.name == name)
        .ok_or_else(|| FunctionError::Unknown(name.to_owned()))
}

impl Builtin {
    fn input_error(&self, message: String) -> FunctionError {
        FunctionError::Input {
            function: self.name,
            message,
        }
    }

    /// The circuit for inputs of `size` values (or records).
    pub fn circuit(&self, size: u32) -> Result<ValidCircuit, FunctionError> {
        if !self.sizes.contains(&size) {
            return Err(FunctionError::Size {
                function: self.name,
                size,
                min: *self.sizes.start(),
                max: *self.sizes.end(),
            });
        }
        Ok((self.build)(size))
    }

    /// Reads a JSON input: its size and the circuit's plain input values.
    pub fn encode(&self, input: &Value) -> Result<(u32, Vec<u64>), FunctionError> {
        (self.encode)(input).map_err(|m| self.input_error(m))
    }

    /// Client-side post-processing: the function's JSON output from decrypted circuit outputs.
    pub fn finish(&self, size: u32, outputs: &[Vec<u64>]) -> Value {
        (self.finish)(size, outputs)
    }

    /// The plaintext reference, computed directly (not through the circuit).
    pub fn reference(&self, input: &Value) -> Result<Value, FunctionError> {
        (self.reference)(input).map_err(|m| self.input_error(m))
    }

    /// Runs the circuit on plain values: what the encrypted run must decrypt to.
    pub fn simulate(&self, input: &Value) -> Result<Value, FunctionError> {
        let (size, values) = self.encode(input)?;
        let circuit = self.circuit(size)?;
        Ok(self.finish(size, &evaluate(&circuit, &values)))
    }

    /// Cost of the circuit for `size`.
    pub fn cost(&self, size: u32) -> Result<Cost, FunctionError> {
        Ok(cost(&self.circuit(size)?))
    }
}

/// A built-in BFV function: one circuit, vectors of signed integers in and out.
pub struct BfvBuiltin {
    pub name: &'static str,
    pub summary: &'static str,
    pub signature: &'static str,
    build: fn() -> ValidBfv,
    encode: fn(&Value) -> Result<Vec<Vec<i64>>, String>,
    finish: fn(&[Vec<i64>]) -> Value,
    reference: fn(&Value) -> Result<Value, String>,
}

impl std::fmt::Debug for BfvBuiltin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BfvBuiltin")
            .field("name", &self.name)
            .finish()
    }
}

static BFV_BUILTINS: [BfvBuiltin; 1] = [ad_targeting::BUILTIN];

/// Every built-in BFV function.
pub fn bfv_builtins() -> &'static [BfvBuiltin] {
    &BFV_BUILTINS
}

/// Looks a built-in BFV function up by name.
pub fn find_bfv(name: &str) -> Option<&'static BfvBuiltin> {
    BFV_BUILTINS.iter().find(|b| b.name == name)
}

impl BfvBuiltin {
    fn input_error(&self, message: String) -> FunctionError {
        FunctionError::Input {
            function: self.name,
            message,
        }
    }

    /// The circuit (built once, then shared).
    pub fn circuit(&self) -> &'static ValidBfv {
        self.built()
    }

    /// The circuit as a shared handle (what a task holds while it runs).
    pub fn shared(&self) -> Arc<ValidBfv> {
        self.built().clone()
    }

    fn built(&self) -> &'static Arc<ValidBfv> {
        static BUILT: OnceLock<Vec<Arc<ValidBfv>>> = OnceLock::new();
        let all =
            BUILT.get_or_init(|| BFV_BUILTINS.iter().map(|b| Arc::new((b.build)())).collect());
        let i = BFV_BUILTINS
            .iter()
            .position(|b| b.name == self.name)
            .unwrap_or(0);
        &all[i]
    }

    /// Reads a JSON input into the circuit's input vectors.
    pub fn encode(&self, input: &Value) -> Result<Vec<Vec<i64>>, FunctionError> {
        (self.encode)(input).map_err(|m| self.input_error(m))
    }

    /// Client-side post-processing of the decrypted outputs.
    pub fn finish(&self, outputs: &[Vec<i64>]) -> Value {
        (self.finish)(outputs)
    }

    /// The plaintext reference, computed directly (not through the circuit).
    pub fn reference(&self, input: &Value) -> Result<Value, FunctionError> {
        (self.reference)(input).map_err(|m| self.input_error(m))
    }

    /// Runs the circuit exactly on plain values: what the encrypted run decrypts to.
    pub fn simulate(&self, input: &Value) -> Result<Value, FunctionError> {
        let values = self.encode(input)?;
        let out =
            evaluate_bfv(self.circuit().circuit(), &values).map_err(|m| self.input_error(m))?;
        let narrowed: Vec<Vec<i64>> = out
            .into_iter()
            .map(|v| v.into_iter().map(|x| x as i64).collect())
            .collect();
        Ok(self.finish(&narrowed))
    }
}

/// A built-in of either scheme.
#[derive(Debug, Clone, Copy)]
pub enum AnyBuiltin {
    /// A TFHE family of circuits, one per input size.
    Tfhe(&'static Builtin),
    /// One BFV circuit.
    Bfv(&'static BfvBuiltin),
}

impl AnyBuiltin {
    pub fn name(&self) -> &'static str {
        match self {
            AnyBuiltin::Tfhe(b) => b.name,
            AnyBuiltin::Bfv(b) => b.name,
        }
    }

    pub fn summary(&self) -> &'static str {
        match self {
            AnyBuiltin::Tfhe(b) => b.summary,
            AnyBuiltin::Bfv(b) => b.summary,
        }
    }

    pub fn signature(&self) -> &'static str {
        match self {
            AnyBuiltin::Tfhe(b) => b.signature,
            AnyBuiltin::Bfv(b) => b.signature,
        }
    }

    pub fn scheme(&self) -> tenebra_circuit::Scheme {
        match self {
            AnyBuiltin::Tfhe(_) => tenebra_circuit::Scheme::Tfhe,
            AnyBuiltin::Bfv(_) => tenebra_circuit::Scheme::Bfv,
        }
    }

    /// Runs the circuit on the plain values of a JSON input: what the encrypted run decrypts to.
    pub fn simulate(&self, input: &Value) -> Result<Value, FunctionError> {
        match self {
            AnyBuiltin::Tfhe(b) => b.simulate(input),
            AnyBuiltin::Bfv(b) => b.simulate(input),
        }
    }

    /// The circuit at `size` (a BFV built-in has one circuit and ignores it).
    pub fn circuit(&self, size: u32) -> Result<tenebra_circuit::AnyCircuit, FunctionError> {
        Ok(match self {
            AnyBuiltin::Tfhe(b) => b.circuit(size)?.into(),
            AnyBuiltin::Bfv(b) => b.shared().into(),
        })
    }
}

/// Every built-in of both schemes, TFHE first.
pub fn all_builtins() -> impl Iterator<Item = AnyBuiltin> {
    BUILTINS
        .iter()
        .map(AnyBuiltin::Tfhe)
        .chain(BFV_BUILTINS.iter().map(AnyBuiltin::Bfv))
}

/// Looks a built-in of either scheme up by name.
pub fn find_any(name: &str) -> Option<AnyBuiltin> {
    all_builtins().find(|b| b.name() == name)
}

/// [`find_any`], or the error that names the list of functions.
pub fn builtin(name: &str) -> Result<AnyBuiltin, FunctionError> {
    find_any(name).ok_or_else(|| FunctionError::Unknown(name.to_owned()))
}

/// Smallest even width (2..=64) that holds `max` without wrapping.
pub fn width_for(max: u64) -> u8 {
    let bits = (64 - max.leading_zeros()).max(2) as u8;
    bits + bits % 2
}

/// Reads a JSON array of integers in `range`, naming the first bad element.
pub(crate) fn int_array<'a>(
    v: Option<&'a Value>,
    field: &str,
    len: RangeInclusive<u32>,
) -> Result<Vec<&'a Value>, String> {
    let Some(Value::Array(items)) = v else {
        return Err(format!("`{field}` must be an array"));
    };
    if !len.contains(&(items.len() as u32)) {
        return Err(format!(
            "`{field}` must hold {} to {} elements, it holds {}",
            len.start(),
            len.end(),
            items.len()
        ));
    }
    Ok(items.iter().collect())
}

/// Reads one JSON integer in `lo..=hi`.
pub(crate) fn int_in(v: &Value, what: &str, lo: u64, hi: u64) -> Result<u64, String> {
    match v.as_u64() {
        Some(x) if (lo..=hi).contains(&x) => Ok(x),
        _ => Err(format!("{what} must be an integer in {lo}..={hi}, got {v}")),
    }
}

/// Checks that an object has exactly the given keys.
pub(crate) fn only_keys(v: &Value, keys: &[&str]) -> Result<(), String> {
    let Value::Object(map) = v else {
        return Err("the input must be a JSON object".into());
    };
    if let Some(k) = map.keys().find(|k| !keys.contains(&k.as_str())) {
        return Err(format!(
            "unknown field `{k}` (expected {})",
            keys.iter()
                .map(|k| format!("`{k}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_builtin_is_found_by_name_once() {
        let names: Vec<&str> = all_builtins().map(|b| b.name()).collect();
        assert_eq!(names, ["weight_stats", "sleep_quality", "ad_targeting"]);
        for name in names {
            assert_eq!(find_any(name).map(|b| b.name()), Some(name));
        }
        assert!(find_any("nope").is_none());
        let ads = find_any("ad_targeting").expect("ad_targeting");
        assert_eq!(ads.scheme(), tenebra_circuit::Scheme::Bfv);
        assert_eq!(ads.circuit(0).expect("circuit").id(), ads_id());
    }

    fn ads_id() -> tenebra_circuit::CircuitId {
        find_bfv("ad_targeting")
            .expect("ad_targeting")
            .circuit()
            .id()
    }

    #[test]
    fn widths() {
        assert_eq!(width_for(0), 2);
        assert_eq!(width_for(3), 2);
        assert_eq!(width_for(4), 4);
        assert_eq!(width_for(65535), 16);
        assert_eq!(width_for(65536), 18);
        assert_eq!(width_for(100 * 65535), 24);
    }
}
