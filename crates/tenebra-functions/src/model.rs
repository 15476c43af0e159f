//! Encrypted ML inference: models of dense layers and activations, quantized to fixed point
//! and compiled to BFV circuits, whole or split.
//!
//! A model (JSON, `version` 1) is a sequence of layers: `{"type": "dense", "weights": [[..]],
//! "bias": [..]}` (weights are rows: one per output) and `{"type": "activation", "function":
//! "square" | "relu" | "sigmoid"}`. Inputs are floats in `input_min..=input_max`.
//!
//! Quantization (documented, deterministic):
//! - inputs: `x_q = round((x - input_min) * S_x)` with `S_x = (2^input_bits - 1) /
//!   (input_max - input_min)`, so `x_q` is in `0..2^input_bits`; the offset `input_min` is
//!   folded into the first layer's bias;
//! - each dense layer's weights: `w_q = round(w * S_w)`, `S_w = (2^(weight_bits - 1) - 1) /
//!   max |w|` (per layer); its bias is quantized at the layer's output scale;
//! - a dense layer's output scale is `S_in * S_w`; `square` squares the scale.
//!
//! BFV computes the quantized model exactly (integers, no rounding under encryption); the
//! client divides the decrypted integers by the output scale. The only error is quantization,
//! measured against float inference on a test set and stated with the model
//! ([`Compiled::max_abs_error`]).
//!
//! Split inference: the encrypted part is the first `k` layers, where every activation among
//! them is polynomial (`square`); `relu`/`sigmoid` mark where encrypted evaluation must stop.
//! The client decrypts the intermediate activations and finishes the remaining layers in
//! plaintext ([`Model::forward_from`]).

use serde::{Deserialize, Serialize};
use tenebra_api::model::{dequantize, quantize, ModelPage, ModelSignature, SplitInfo};
use tenebra_circuit::bfv::{
    evaluate_bfv, validate_bfv, BfvCircuit, BfvError, BfvLimits, PNode, ValidBfv, VecInput,
    VecOutput, SCHEME_BFV,
};
use tenebra_circuit::ir::FORMAT_VERSION;

/// Version of the model JSON this crate reads.
pub const MODEL_VERSION: u32 = 1;
/// Largest model JSON accepted.
pub const MODEL_JSON_LIMIT: usize = 32 << 20;
/// Limits of a model's shape.
/// Most layers a model may have.
pub const MAX_LAYERS: usize = 32;
/// Widest input or layer of a model.
pub const MAX_WIDTH: usize = 4096;

/// An activation function.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    Square,
    Relu,
    Sigmoid,
}

impl Activation {
    /// Whether BFV evaluates it (a polynomial).
    pub fn polynomial(self) -> bool {
        self == Activation::Square
    }

    fn apply(self, v: f64) -> f64 {
        match self {
            Activation::Square => v * v,
            Activation::Relu => v.max(0.0),
            Activation::Sigmoid => 1.0 / (1.0 + (-v).exp()),
        }
    }
}

/// One layer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Layer {
    Dense {
        weights: Vec<Vec<f64>>,
        bias: Vec<f64>,
    },
    Activation {
        function: Activation,
    },
}

/// A model as its owner uploads it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Model {
    pub version: u32,
    pub name: String,
    pub input_len: u32,
    pub input_min: f64,
    pub input_max: f64,
    /// Bits of the quantized inputs (default 4).
    #[serde(default = "default_input_bits")]
    pub input_bits: u32,
    /// Bits of the quantized weights, sign included (default 6).
    #[serde(default = "default_weight_bits")]
    pub weight_bits: u32,
    pub layers: Vec<Layer>,
}

fn default_input_bits() -> u32 {
    4
}

fn default_weight_bits() -> u32 {
    6
}

/// A model that cannot be used, or a split that cannot run encrypted.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ModelError {
    #[error("model: {0}")]
    Invalid(String),
    #[error("{0}")]
    Split(String),
    #[error("the first {layers} layers cannot run encrypted: {reason}")]
    TooDeep { layers: usize, reason: String },
}

impl Model {
    /// Parses and checks an untrusted model JSON.
    pub fn parse(bytes: &[u8]) -> Result<Self, ModelError> {
        if bytes.len() > MODEL_JSON_LIMIT {
            return Err(ModelError::Invalid(format!(
                "{} bytes is over the {MODEL_JSON_LIMIT}-byte limit",
                bytes.len()
            )));
        }
        let m: Model = serde_json::from_slice(bytes)
            .map_err(|e| ModelError::Invalid(format!("not a model JSON: {e}")))?;
        m.check()?;
        Ok(m)
    }

    /// Checks shapes, values and limits.
    pub fn check(&self) -> Result<(), ModelError> {
        let bad = |m: String| Err(ModelError::Invalid(m));
        if self.version != MODEL_VERSION {
            return bad(format!("version {} is not supported", self.version));
        }
        let ok_name = !self.name.is_empty()
            && self.name.len() <= 64
            && self
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !ok_name {
            return bad("name must be 1..=64 characters of [A-Za-z0-9_-]".into());
        }
        if self.layers.is_empty() || self.layers.len() > MAX_LAYERS {
            return bad(format!("needs 1..={MAX_LAYERS} layers"));
        }
        if !(1..=12).contains(&self.input_bits) || !(2..=16).contains(&self.weight_bits) {
            return bad("input_bits must be 1..=12 and weight_bits 2..=16".into());
        }
        if !(self.input_min.is_finite()
            && self.input_max.is_finite()
            && self.input_min < self.input_max)
        {
            return bad("input_min < input_max, both finite".into());
        }
        if !matches!(self.layers.first(), Some(Layer::Dense { .. })) && self.input_min != 0.0 {
            return bad("a model that starts with an activation needs input_min = 0".into());
        }
        let mut width = self.input_len as usize;
        if width == 0 || width > MAX_WIDTH {
            return bad(format!("input_len must be 1..={MAX_WIDTH}"));
        }
        for (i, l) in self.layers.iter().enumerate() {
            if let Layer::Dense { weights, bias } = l {
                if weights.is_empty() || weights.len() > MAX_WIDTH {
                    return bad(format!("layer {i}: needs 1..={MAX_WIDTH} rows"));
                }
                if weights.iter().any(|r| r.len() != width) || bias.len() != weights.len() {
                    return bad(format!(
                        "layer {i}: weights must be {} rows of {width} values and bias {} values",
                        weights.len(),
                        weights.len()
                    ));
                }
                if weights.iter().flatten().chain(bias).any(|v| !v.is_finite()) {
                    return bad(format!("layer {i}: weights and biases must be finite"));
                }
                width = weights.len();
            }
        }
        Ok(())
    }

    /// Width of the output of the first `k` layers.
    pub fn width_after(&self, k: usize) -> usize {
        self.layers[..k]
            .iter()
            .rev()
            .find_map(|l| match l {
                Layer::Dense { weights, .. } => Some(weights.len()),
                Layer::Activation { .. } => None,
            })
            .unwrap_or(self.input_len as usize)
    }

    /// The largest `k` the encrypted part may span: up to the first non-polynomial activation.
    pub fn max_encrypted_layers(&self) -> usize {
        self.layers
            .iter()
            .position(|l| matches!(l, Layer::Activation { function } if !function.polynomial()))
            .unwrap_or(self.layers.len())
    }

    /// Float inference of layers `from..` on `x` (the input of layer `from`).
    pub fn forward_from(&self, from: usize, x: &[f64]) -> Vec<f64> {
        forward(&self.layers[from.min(self.layers.len())..], x)
    }

    /// Float inference of the first `k` layers.
    pub fn forward_to(&self, k: usize, x: &[f64]) -> Vec<f64> {
        let cut = Model {
            layers: self.layers[..k.min(self.layers.len())].to_vec(),
            ..self.clone()
        };
        cut.forward_from(0, x)
    }

    /// The input scale `S_x`.
    pub fn input_scale(&self) -> f64 {
        f64::from((1u32 << self.input_bits) - 1) / (self.input_max - self.input_min)
    }

    /// Quantizes an input vector (values are clamped to the declared range).
    pub fn quantize_input(&self, x: &[f64]) -> Result<Vec<i64>, ModelError> {
        if x.len() != self.input_len as usize {
            return Err(ModelError::Invalid(format!(
                "the input has {} values, the model takes {}",
                x.len(),
                self.input_len
            )));
        }
        Ok(quantize(x, self.input_min, self.input_max, self.input_bits))
    }

    /// Compiles the first `k` layers to a BFV circuit (checked: the parameters can carry it).
    pub fn compile(&self, k: usize) -> Result<Compiled, ModelError> {
        self.check()?;
        let max = self.max_encrypted_layers();
        if k == 0 || k > max {
            return Err(ModelError::Split(format!(
                "`layers` must be 1..={max} for `{}` (layer {max} is a non-polynomial \
                 activation or the end)",
                self.name
            )));
        }
        let sx = self.input_scale();
        let mut scale = sx;
        let mut nodes = vec![PNode::Input { input: 0 }];
        let mut first_dense = true;
        for l in &self.layers[..k] {
            let last = nodes.len() as u32 - 1;
            match l {
                Layer::Dense { weights, bias } => {
                    let wmax = weights.iter().flatten().fold(0.0f64, |m, w| m.max(w.abs()));
                    let sw = if wmax > 0.0 {
                        f64::from((1u32 << (self.weight_bits - 1)) - 1) / wmax
                    } else {
                        1.0
                    };
                    let q: Vec<Vec<i64>> = weights
                        .iter()
                        .map(|r| r.iter().map(|w| (w * sw).round() as i64).collect())
                        .collect();
                    let out_scale = scale * sw;
                    // The first layer sees x = input_min + x_q / S_x: fold W * input_min in.
                    let b: Vec<i64> = weights
                        .iter()
                        .zip(bias)
                        .map(|(r, b)| {
                            let offset = if first_dense {
                                r.iter().sum::<f64>() * self.input_min
                            } else {
                                0.0
                            };
                            ((b + offset) * out_scale).round() as i64
                        })
                        .collect();
                    let limit = BfvLimits::default().max_abs_value;
                    if b.iter().any(|v| v.saturating_abs() > limit) {
                        return Err(ModelError::TooDeep {
                            layers: k,
                            reason: format!(
                                "the fixed-point scale reaches {out_scale:.3e}: biases no \
                                 longer fit; fewer squares or fewer input or weight bits"
                            ),
                        });
                    }
                    nodes.push(PNode::Matvec { a: last, matrix: q });
                    if b.iter().any(|v| *v != 0) {
                        nodes.push(PNode::AddPlain {
                            a: last + 1,
                            plain: b,
                        });
                    }
                    scale = out_scale;
                    first_dense = false;
                }
                Layer::Activation { .. } => {
                    nodes.push(PNode::Square { a: last });
                    scale *= scale;
                }
            }
            if !scale.is_finite() || scale > 1e300 {
                return Err(ModelError::TooDeep {
                    layers: k,
                    reason: "the fixed-point scale overflows".into(),
                });
            }
        }
        let circuit = BfvCircuit {
            version: FORMAT_VERSION,
            scheme: SCHEME_BFV.into(),
            name: format!("{}-{k}", self.name),
            inputs: vec![VecInput {
                name: "x".into(),
                len: self.input_len,
                min: 0,
                max: i64::from((1u32 << self.input_bits) - 1),
            }],
            outputs: vec![VecOutput {
                name: "y".into(),
                node: nodes.len() as u32 - 1,
            }],
            nodes,
        };
        let valid = validate_bfv(circuit, &BfvLimits::default()).map_err(|e| match e {
            BfvError::TooDeep(reason) => ModelError::TooDeep { layers: k, reason },
            e => ModelError::Invalid(e.to_string()),
        })?;
        Ok(Compiled {
            layers: k,
            scale,
            circuit: std::sync::Arc::new(valid),
            max_abs_error: None,
        })
    }
}

/// The first `k` layers of a model as a BFV circuit, with the output's fixed-point scale.
#[derive(Debug, Clone)]
pub struct Compiled {
    pub layers: usize,
    /// Decrypted integers divided by this give the float activations.
    pub scale: f64,
    pub circuit: std::sync::Arc<ValidBfv>,
    /// Largest |quantized - float| over the test set it was measured on.
    pub max_abs_error: Option<f64>,
}

impl Compiled {
    /// Dequantizes decrypted outputs.
    pub fn dequantize(&self, y: &[i64]) -> Vec<f64> {
        dequantize(y, self.scale)
    }

    /// Exact evaluation of the quantized circuit on a float input, dequantized: what the
    /// encrypted run decrypts to.
    pub fn simulate(&self, model: &Model, x: &[f64]) -> Result<Vec<f64>, ModelError> {
        let q = model.quantize_input(x)?;
        let out = evaluate_bfv(self.circuit.circuit(), &[q]).map_err(ModelError::Invalid)?;
        Ok(out[0].iter().map(|v| *v as f64 / self.scale).collect())
    }

    /// Measures the precision on `test`: the largest |dequantized - float| of the first
    /// `layers` layers, recorded in [`Self::max_abs_error`].
    pub fn measure(&mut self, model: &Model, test: &[Vec<f64>]) -> Result<f64, ModelError> {
        let mut worst = 0.0f64;
        for x in test {
            let want = model.forward_to(self.layers, x);
            // The quantized input itself differs from x: compare with float inference on the
            // clamped input, as the client sends it.
            let got = self.simulate(model, x)?;
            for (a, b) in got.iter().zip(&want) {
                worst = worst.max((a - b).abs());
            }
        }
        self.max_abs_error = Some(worst);
        Ok(worst)
    }
}

// ---- example models ----------------------------------------------------------------------

/// A deterministic xorshift generator for the example data sets (no downloads, no files).
struct Xs(u64);

impl Xs {
    fn next(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The example data set: `n` points in `[0, 1]^16` and a binary label from a fixed, slightly
/// non-linear rule (generated here, deterministic).
pub fn example_data(n: usize, seed: u64) -> (Vec<Vec<f64>>, Vec<u8>) {
    let mut r = Xs(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let mut xs = Vec::with_capacity(n);
    let mut ys = Vec::with_capacity(n);
    for _ in 0..n {
        let x: Vec<f64> = (0..16).map(|_| r.next()).collect();
        let s = x[..8].iter().sum::<f64>() - x[8..].iter().sum::<f64>()
            + (x[0] - 0.5) * (x[1] - 0.5) * 4.0;
        ys.push(u8::from(s > 0.0));
        xs.push(x);
    }
    (xs, ys)
}

/// Logistic regression (16 -> 1, sigmoid) trained by gradient descent on [`example_data`]:
/// the sigmoid stops encryption, so it runs split (the dense layer encrypted).
pub fn example_logistic() -> Model {
    let (xs, ys) = example_data(400, 1);
    let (mut w, mut b) = (vec![0.0f64; 16], 0.0f64);
    for _ in 0..300 {
        let mut gw = vec![0.0; 16];
        let mut gb = 0.0;
        for (x, y) in xs.iter().zip(&ys) {
            let z: f64 = w.iter().zip(x).map(|(a, b)| a * b).sum::<f64>() + b;
            let e = 1.0 / (1.0 + (-z).exp()) - f64::from(*y);
            gw.iter_mut().zip(x).for_each(|(g, xi)| *g += e * xi);
            gb += e;
        }
        let n = xs.len() as f64;
        w.iter_mut().zip(&gw).for_each(|(a, g)| *a -= 2.0 * g / n);
        b -= 2.0 * gb / n;
    }
    Model {
        version: MODEL_VERSION,
        name: "example-logistic".into(),
        input_len: 16,
        input_min: 0.0,
        input_max: 1.0,
        input_bits: 6,
        weight_bits: 8,
        layers: vec![
            Layer::Dense {
                weights: vec![w],
                bias: vec![b],
            },
            Layer::Activation {
                function: Activation::Sigmoid,
            },
        ],
    }
}

/// A small MLP (16 -> 8, square, 8 -> 2) trained by gradient descent (squared error on the
/// one-hot label) on [`example_data`]: every activation is polynomial, so it runs whole.
pub fn example_mlp() -> Model {
    let (xs, ys) = example_data(400, 2);
    let mut r = Xs(7);
    let mut w1: Vec<Vec<f64>> = (0..8)
        .map(|_| (0..16).map(|_| (r.next() - 0.5) * 0.5).collect())
        .collect();
    let mut b1 = vec![0.0f64; 8];
    let mut w2: Vec<Vec<f64>> = (0..2)
        .map(|_| (0..8).map(|_| (r.next() - 0.5) * 0.5).collect())
        .collect();
    let mut b2 = vec![0.0f64; 2];
    let lr = 0.02;
    for _ in 0..150 {
        for (x, y) in xs.iter().zip(&ys) {
            let h: Vec<f64> = w1
                .iter()
                .zip(&b1)
                .map(|(r, b)| r.iter().zip(x).map(|(a, b)| a * b).sum::<f64>() + b)
                .collect();
            let a: Vec<f64> = h.iter().map(|v| v * v).collect();
            let o: Vec<f64> = w2
                .iter()
                .zip(&b2)
                .map(|(r, b)| r.iter().zip(&a).map(|(w, v)| w * v).sum::<f64>() + b)
                .collect();
            let t = [f64::from(1 - y), f64::from(*y)];
            let go: Vec<f64> = o.iter().zip(t).map(|(o, t)| o - t).collect();
            let ga: Vec<f64> = (0..8)
                .map(|j| (0..2).map(|i| go[i] * w2[i][j]).sum())
                .collect();
            for i in 0..2 {
                for j in 0..8 {
                    w2[i][j] -= lr * go[i] * a[j];
                }
                b2[i] -= lr * go[i];
            }
            for j in 0..8 {
                let gh = ga[j] * 2.0 * h[j];
                for (k, xk) in x.iter().enumerate() {
                    w1[j][k] -= lr * gh * xk;
                }
                b1[j] -= lr * gh;
            }
        }
    }
    Model {
        version: MODEL_VERSION,
        name: "example-mlp".into(),
        input_len: 16,
        input_min: 0.0,
        input_max: 1.0,
        input_bits: 4,
        weight_bits: 6,
        layers: vec![
            Layer::Dense {
                weights: w1,
                bias: b1,
            },
            Layer::Activation {
                function: Activation::Square,
            },
            Layer::Dense {
                weights: w2,
                bias: b2,
            },
        ],
    }
}

/// Accuracy of a float model on labelled points (class = argmax, or > 0.5 for one output).
pub fn accuracy(model: &Model, xs: &[Vec<f64>], ys: &[u8]) -> f64 {
    let right = xs
        .iter()
        .zip(ys)
        .filter(|(x, y)| {
            let o = model.forward_from(0, x);
            let class = if o.len() == 1 {
                u8::from(o[0] > 0.5)
            } else {
                u8::from(o[1] > o[0])
            };
            class == **y
        })
        .count();
    right as f64 / xs.len().max(1) as f64
}

// ---- the model repository's wire types live in `tenebra_api::model` ---------------------

/// The task function name of a model split.
pub fn model_function(owner: &str, name: &str, version: i64, layers: usize) -> String {
    format!("model:{owner}/{name}/{version}/{layers}")
}

/// Parses a model split's task function name: owner, name, version, layers. Only the
/// canonical spelling [`model_function`] writes is one (`+1` or `01` is not `1`), so one split
/// has one name, one price and one usage line.
pub fn parse_model_function(f: &str) -> Option<(&str, &str, i64, usize)> {
    let rest = f.strip_prefix("model:")?;
    let mut parts = rest.split('/');
    let (owner, name) = (parts.next()?, parts.next()?);
    let version = parts.next()?.parse().ok()?;
    let layers = parts.next()?.parse().ok()?;
    let canonical =
        parts.next().is_none() && version >= 1 && model_function(owner, name, version, layers) == f;
    canonical.then_some((owner, name, version, layers))
}

/// Points of the precision test: uniform in the model's input range, deterministic.
pub fn uniform_points(model: &Model, n: usize, seed: u64) -> Vec<Vec<f64>> {
    let mut r = Xs(seed.wrapping_mul(0x2545_f491_4f6c_dd1d) | 1);
    (0..n)
        .map(|_| {
            (0..model.input_len)
                .map(|_| model.input_min + r.next() * (model.input_max - model.input_min))
                .collect()
        })
        .collect()
}

/// Points the precision test uses.
pub const PRECISION_POINTS: usize = 100;

impl Model {
    /// The model's page: compiles every split and measures its precision on
    /// [`PRECISION_POINTS`] uniform points of the input range.
    pub fn page(&self) -> ModelPage {
        let test = uniform_points(self, PRECISION_POINTS, 1);
        let mut width = self.input_len as usize;
        let layers = self
            .layers
            .iter()
            .map(|l| match l {
                Layer::Dense { weights, .. } => {
                    let s = format!("dense {width}->{}", weights.len());
                    width = weights.len();
                    s
                }
                Layer::Activation { function } => format!("{function:?}").to_lowercase(),
            })
            .collect();
        let splits = (1..=self.max_encrypted_layers())
            .map(|k| match self.compile(k) {
                Ok(mut c) => {
                    let err = c.measure(self, &test).ok();
                    let plan = c.circuit.plan();
                    SplitInfo {
                        layers: k,
                        refused: None,
                        circuit_id: Some(c.circuit.id().to_string()),
                        degree: Some(plan.degree),
                        plain_modulus: Some(plan.plain_modulus),
                        scale: Some(c.scale),
                        max_abs_error: err,
                        cost_cu: Some(c.circuit.cost_cu()),
                        galois_keys: Some(plan.galois_keys()),
                    }
                }
                Err(e) => SplitInfo {
                    layers: k,
                    refused: Some(e.to_string()),
                    circuit_id: None,
                    degree: None,
                    plain_modulus: None,
                    scale: None,
                    max_abs_error: None,
                    cost_cu: None,
                    galois_keys: None,
                },
            })
            .collect();
        ModelPage {
            input_len: self.input_len,
            input_min: self.input_min,
            input_max: self.input_max,
            input_bits: self.input_bits,
            weight_bits: self.weight_bits,
            layers,
            max_encrypted_layers: self.max_encrypted_layers(),
            splits,
            precision_test: format!(
                "max |quantized - float| of the split's outputs over {PRECISION_POINTS} uniform \
                 points of the input range"
            ),
        }
    }

    /// The signature of split `k` for the task function name `function`.
    pub fn signature(&self, compiled: &Compiled, function: String) -> ModelSignature {
        ModelSignature {
            function,
            layers: compiled.layers,
            scale: compiled.scale,
            input_min: self.input_min,
            input_max: self.input_max,
            input_bits: self.input_bits,
            signature: compiled.circuit.signature(),
        }
    }
}

/// Float inference of `layers` on `x`.
fn forward(layers: &[Layer], x: &[f64]) -> Vec<f64> {
    let mut v = x.to_vec();
    for l in layers {
        v = match l {
            Layer::Dense { weights, bias } => weights
                .iter()
                .zip(bias)
                .map(|(r, b)| r.iter().zip(&v).map(|(w, x)| w * x).sum::<f64>() + b)
                .collect(),
            Layer::Activation { function } => v.iter().map(|x| function.apply(*x)).collect(),
        };
    }
    v
}

/// The plaintext layers after a split (what a grantee allowed to may fetch).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemainingLayers {
    pub from: usize,
    pub layers: Vec<Layer>,
}

impl RemainingLayers {
    /// Float inference of these layers on `x` (a split's decrypted output): the rest of the
    /// model's prediction.
    pub fn forward(&self, x: &[f64]) -> Vec<f64> {
        forward(&self.layers, x)
    }
}
