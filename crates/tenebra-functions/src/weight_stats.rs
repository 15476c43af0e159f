//! `weight_stats`: minimum, maximum and average of 1 to 1024 encrypted u16 weights.
//!
//! The circuit returns `min`, `max` and the exact `sum`, accumulated in the narrowest even
//! width that cannot wrap for `n` values. The average `floor(sum / n)` is computed by the
//! client after decryption: `n` is public, and a division by a constant under encryption
//! costs seconds while revealing nothing the client does not already own.

use serde_json::{json, Value};
use tenebra_circuit::builder::{max_of, min_of, sum, Builder};
use tenebra_circuit::{ScalarType, ValidCircuit};

use crate::{int_array, int_in, only_keys, width_for, Builtin};

pub const BUILTIN: Builtin = Builtin {
    name: "weight_stats",
    summary: "minimum, maximum and average of encrypted weights",
    signature: "{\"weights\": [u16; 1..=1024]} -> {\"min\": u16, \"max\": u16, \"avg\": u16}",
    sizes: 1..=1024,
    build,
    encode,
    finish,
    reference,
};

fn build(n: u32) -> ValidCircuit {
    let b = Builder::new("weight_stats");
    let w = b.input_vec("weights", ScalarType::Uint(16), n);
    let wide = ScalarType::Uint(width_for(u64::from(n) * 65535));
    let widened: Vec<_> = w.iter().map(|x| x.cast(wide)).collect();
    b.output("min", &min_of(&w));
    b.output("max", &max_of(&w));
    b.output("sum", &sum(&widened));
    match b.build() {
        Ok(c) => c,
        Err(e) => unreachable!("the weight_stats circuit is valid: {e}"),
    }
}

fn weights(input: &Value) -> Result<Vec<u64>, String> {
    only_keys(input, &["weights"])?;
    int_array(input.get("weights"), "weights", BUILTIN.sizes.clone())?
        .iter()
        .enumerate()
        .map(|(i, v)| int_in(v, &format!("weights[{i}]"), 0, 65535))
        .collect()
}

fn encode(input: &Value) -> Result<(u32, Vec<u64>), String> {
    let w = weights(input)?;
    Ok((w.len() as u32, w))
}

fn finish(n: u32, outputs: &[Vec<u64>]) -> Value {
    let get = |i: usize| outputs.get(i).and_then(|o| o.first()).copied().unwrap_or(0);
    json!({"min": get(0), "max": get(1), "avg": get(2) / u64::from(n.max(1))})
}

fn reference(input: &Value) -> Result<Value, String> {
    let w = weights(input)?;
    let min = w.iter().min().copied().unwrap_or(0);
    let max = w.iter().max().copied().unwrap_or(0);
    let sum: u64 = w.iter().sum();
    Ok(json!({"min": min, "max": max, "avg": sum / w.len() as u64}))
}
