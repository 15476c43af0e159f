//! `ad_targeting`: scores of every ad of a plain catalogue against an encrypted profile.
//!
//! The profile is 62 encrypted 0/1 features (layout in `data/README.md`); the server holds the
//! catalogue (4954 ads x 62 weights) in the clear and computes one packed matrix x vector
//! product. The client decrypts the 4954 exact scores (each <= 128) and ranks them itself, so
//! the server learns neither the profile nor which ads win.

use std::sync::OnceLock;

use serde_json::{json, Value};
use tenebra_circuit::bfv::{
    validate_bfv, BfvCircuit, BfvLimits, PNode, ValidBfv, VecInput, VecOutput, SCHEME_BFV,
};
use tenebra_circuit::ir::FORMAT_VERSION;

use crate::{int_array, int_in, only_keys, BfvBuiltin};

/// Features of a profile (columns of the catalogue).
pub const FEATURES: usize = 62;
/// Ads the client is shown.
pub const TOP: usize = 5;

const CATALOGUE_CSV: &str = include_str!("../data/ads_onehot.csv");

pub const BUILTIN: BfvBuiltin = BfvBuiltin {
    name: "ad_targeting",
    summary: "scores of 4954 ads against an encrypted 62-feature profile, and the top 5",
    signature: "{\"profile\": [0|1; 62]} -> {\"scores\": [u8; 4954], \"top\": [ad id; 5]}",
    build,
    encode,
    finish,
    reference,
};

/// The ad catalogue: one row of 62 weights per ad, row i is ad id i.
pub fn catalogue() -> &'static [Vec<i64>] {
    static ROWS: OnceLock<Vec<Vec<i64>>> = OnceLock::new();
    ROWS.get_or_init(|| {
        CATALOGUE_CSV
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                l.split(',')
                    .map(|c| c.trim().parse::<i64>().unwrap_or(0))
                    .collect()
            })
            .collect()
    })
}

fn build() -> ValidBfv {
    let circuit = BfvCircuit {
        version: FORMAT_VERSION,
        scheme: SCHEME_BFV.into(),
        name: "ad_targeting".into(),
        inputs: vec![VecInput {
            name: "profile".into(),
            len: FEATURES as u32,
            min: 0,
            max: 1,
        }],
        nodes: vec![
            PNode::Input { input: 0 },
            PNode::Matvec {
                a: 0,
                matrix: catalogue().to_vec(),
            },
        ],
        outputs: vec![VecOutput {
            name: "scores".into(),
            node: 1,
        }],
    };
    match validate_bfv(circuit, &BfvLimits::default()) {
        Ok(c) => c,
        Err(e) => unreachable!("the ad_targeting circuit is valid: {e}"),
    }
}

fn profile(input: &Value) -> Result<Vec<i64>, String> {
    only_keys(input, &["profile"])?;
    int_array(
        input.get("profile"),
        "profile",
        FEATURES as u32..=FEATURES as u32,
    )?
    .iter()
    .enumerate()
    .map(|(i, v)| int_in(v, &format!("profile[{i}]"), 0, 1).map(|x| x as i64))
    .collect()
}

fn encode(input: &Value) -> Result<Vec<Vec<i64>>, String> {
    Ok(vec![profile(input)?])
}

/// The ids of the `TOP` highest scores, highest first, lower id first among equals.
pub fn top(scores: &[i64]) -> Vec<usize> {
    let mut ids: Vec<usize> = (0..scores.len()).collect();
    ids.sort_by(|a, b| scores[*b].cmp(&scores[*a]).then(a.cmp(b)));
    ids.truncate(TOP);
    ids
}

fn finish(outputs: &[Vec<i64>]) -> Value {
    let scores = outputs.first().cloned().unwrap_or_default();
    json!({"top": top(&scores), "scores": scores})
}

fn reference(input: &Value) -> Result<Value, String> {
    let p = profile(input)?;
    let scores: Vec<i64> = catalogue()
        .iter()
        .map(|row| row.iter().zip(&p).map(|(w, x)| w * x).sum())
        .collect();
    Ok(json!({"top": top(&scores), "scores": scores}))
}
