//! The exact plaintext evaluator (i128): what an encrypted run decrypts to.

use super::ir::{BfvCircuit, PNode};

/// Exact plaintext evaluation: what the encrypted run decrypts to. Inputs are checked
/// against their declared lengths and ranges.
pub fn evaluate_bfv(c: &BfvCircuit, inputs: &[Vec<i64>]) -> Result<Vec<Vec<i128>>, String> {
    if inputs.len() != c.inputs.len() {
        return Err(format!(
            "{} inputs for {} declared",
            inputs.len(),
            c.inputs.len()
        ));
    }
    for (v, i) in inputs.iter().zip(&c.inputs) {
        if v.len() != i.len as usize {
            return Err(format!(
                "input `{}` takes {} values, got {}",
                i.name,
                i.len,
                v.len()
            ));
        }
        if let Some(x) = v.iter().find(|x| **x < i.min || **x > i.max) {
            return Err(format!(
                "input `{}`: {x} is outside its range {}..={}",
                i.name, i.min, i.max
            ));
        }
    }
    let mut vals: Vec<Vec<i128>> = Vec::with_capacity(c.nodes.len());
    for n in &c.nodes {
        let get = |i: u32| &vals[i as usize];
        let plain_at = |p: &[i64], i: usize| i128::from(if p.len() == 1 { p[0] } else { p[i] });
        let v = match n {
            PNode::Input { input } => inputs[*input as usize]
                .iter()
                .map(|x| i128::from(*x))
                .collect(),
            PNode::Matvec { a, matrix } => {
                let x = get(*a);
                matrix
                    .iter()
                    .map(|row| row.iter().zip(x).map(|(w, v)| i128::from(*w) * v).sum())
                    .collect()
            }
            PNode::Dot { a, weights } => {
                vec![weights
                    .iter()
                    .zip(get(*a))
                    .map(|(w, v)| i128::from(*w) * v)
                    .sum()]
            }
            PNode::Add { a, b } => get(*a).iter().zip(get(*b)).map(|(x, y)| x + y).collect(),
            PNode::Sub { a, b } => get(*a).iter().zip(get(*b)).map(|(x, y)| x - y).collect(),
            PNode::AddPlain { a, plain } => get(*a)
                .iter()
                .enumerate()
                .map(|(i, x)| x + plain_at(plain, i))
                .collect(),
            PNode::MulPlain { a, plain } => get(*a)
                .iter()
                .enumerate()
                .map(|(i, x)| x * plain_at(plain, i))
                .collect(),
            PNode::Square { a } => get(*a).iter().map(|x| x * x).collect(),
            PNode::Sum { a } => vec![get(*a).iter().sum()],
        };
        vals.push(v);
    }
    Ok(c.outputs
        .iter()
        .map(|o| vals[o.node as usize].clone())
        .collect())
}
