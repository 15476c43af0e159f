//! The model repository's wire types: a model's page, a split's signature and the
//! quantization a client applies to its inputs and outputs, and grants. A model's own JSON
//! (its layers) is `tenebra_functions::model::Model`.

use serde::{Deserialize, Serialize};
use tenebra_circuit::bfv::BfvSignature;

/// A model's public page: its shape, the splits it offers and their measured precision.
/// Never the weights.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelPage {
    pub input_len: u32,
    pub input_min: f64,
    pub input_max: f64,
    pub input_bits: u32,
    pub weight_bits: u32,
    /// `dense 16->8`, `square`, `sigmoid`...
    pub layers: Vec<String>,
    /// The most layers the encrypted part may span.
    pub max_encrypted_layers: usize,
    pub splits: Vec<SplitInfo>,
    /// How the precision was measured.
    pub precision_test: String,
}

/// One encrypted split: the first `layers` layers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SplitInfo {
    pub layers: usize,
    /// Why this split cannot run encrypted (too deep for the parameters); the rest is absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub circuit_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub degree: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plain_modulus: Option<u64>,
    /// Decrypted integers divided by this are the activations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale: Option<f64>,
    /// Largest |quantized - float| over the precision test.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_abs_error: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_cu: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub galois_keys: Option<usize>,
}

/// A stored model version as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelView {
    pub owner_id: String,
    pub name: String,
    pub version: i64,
    pub model_sha256: String,
    pub created_at: i64,
    pub page: ModelPage,
}

/// What a user needs to run a split of a model: the task's function name, the circuit's
/// signature, and the quantization of inputs and outputs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSignature {
    /// `model:<owner>/<name>/<version>/<layers>`: what the encrypted input names.
    pub function: String,
    pub layers: usize,
    pub scale: f64,
    pub input_min: f64,
    pub input_max: f64,
    pub input_bits: u32,
    pub signature: BfvSignature,
}

impl ModelSignature {
    /// Quantizes a float input as the model does.
    pub fn quantize(&self, x: &[f64]) -> Result<Vec<i64>, InputLength> {
        let takes = self.signature.inputs.first().map_or(0, |i| i.len as usize);
        if x.len() != takes {
            return Err(InputLength {
                got: x.len(),
                takes,
            });
        }
        Ok(quantize(x, self.input_min, self.input_max, self.input_bits))
    }

    /// Decrypted integers as the float activations they stand for.
    pub fn dequantize(&self, y: &[i64]) -> Vec<f64> {
        dequantize(y, self.scale)
    }
}

/// Integers of a split's output divided by its scale: the float activations.
pub fn dequantize(y: &[i64], scale: f64) -> Vec<f64> {
    y.iter().map(|v| *v as f64 / scale).collect()
}

/// An input of the wrong length for a model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputLength {
    pub got: usize,
    pub takes: usize,
}

impl std::fmt::Display for InputLength {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the input has {} values, the model takes {}",
            self.got, self.takes
        )
    }
}

impl std::error::Error for InputLength {}

/// Float inputs as the integers a model takes: `round((x - min) * (2^bits - 1) / (max -
/// min))`, each clamped to the range first.
pub fn quantize(x: &[f64], min: f64, max: f64, bits: u32) -> Vec<i64> {
    let top = i64::from((1u32 << bits) - 1);
    let scale = top as f64 / (max - min);
    x.iter()
        .map(|v| {
            let c = v.clamp(min, max);
            (((c - min) * scale).round() as i64).clamp(0, top)
        })
        .collect()
}

/// A grant of a model's use: an offer from the owner until the grantee accepts it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrantView {
    /// The model's owner.
    #[serde(default)]
    pub owner_id: String,
    pub name: String,
    /// The grantee.
    pub tenant_id: String,
    pub share_layers: bool,
    pub created_at: i64,
    /// When the grantee accepted; until then the grant is an offer that gives nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accepted_at: Option<i64>,
}
