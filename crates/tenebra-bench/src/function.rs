//! `tenebra bench function`: what a developer's own function will take and cost before it
//! is deployed. Inputs at the edges of their declared ranges (all minimum, all maximum),
//! then random ones in range, are encrypted, evaluated by the engine as a worker would
//! (input expansion included), decrypted, and checked against the plaintext evaluator; the
//! time is printed next to the cost model's estimate.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;
use serde_json::{Map, Value};
use tenebra_circuit::bfv::{evaluate_bfv, ValidBfv};
use tenebra_circuit::io::{decode_outputs, decode_scalar};
use tenebra_circuit::{AnyCircuit, ValidCircuit};
use tenebra_client::bfv::BfvKeys;
use tenebra_client::{decrypt_circuit, encrypt_circuit};
use tenebra_engine::scheme::EvalKeys;
use tenebra_engine::{ClientKeys, RunOptions, ServerKeys};

type Error = Box<dyn std::error::Error + Send + Sync>;

/// What `bench function` measured (printed as one JSON line).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FunctionBench {
    pub function: String,
    pub scheme: &'static str,
    pub circuit_id: String,
    /// The cost model's price (1 CU = 1 ms of single-thread CPU on the reference machine).
    pub cost_cu: u64,
    /// The cost model's time on this machine's cores, for TFHE (whose runs use every
    /// core); a BFV run is priced and measured as single-thread work.
    pub estimate_s: f64,
    /// Each run's time: input expansion plus evaluation, as a worker spends it.
    pub run_s: Vec<f64>,
    pub median_s: f64,
    pub input_bytes: usize,
    pub result_bytes: usize,
    /// Runs whose decrypted result equals the plaintext evaluator's on the same inputs.
    pub checked: usize,
}

/// Which inputs run `i` uses: the minimum of every range, the maximum, then random.
#[derive(Debug, Clone, Copy)]
enum Pick {
    Min,
    Max,
    Random,
}

fn pick(i: usize) -> Pick {
    match i {
        0 => Pick::Min,
        1 => Pick::Max,
        _ => Pick::Random,
    }
}

/// Runs `circuit` `reps` times (at least 1) with the keys in `keys_dir` (TFHE keys are
/// `client`/`server`; BFV keys are made there on first use, as the CLI does).
pub fn bench_function(
    keys_dir: &Path,
    tfhe: Option<(&ClientKeys, Arc<ServerKeys>)>,
    circuit: &AnyCircuit,
    reps: usize,
    log: &mut dyn FnMut(&str),
) -> Result<FunctionBench, Error> {
    let reps = reps.max(1);
    let cost = circuit.cost();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let mut b = FunctionBench {
        function: circuit.name().to_owned(),
        scheme: circuit.scheme().as_str(),
        circuit_id: circuit.id().to_string(),
        cost_cu: cost.cu,
        estimate_s: match circuit {
            AnyCircuit::Tfhe(_) => cost.cu as f64 / 1e3 / cores,
            AnyCircuit::Bfv(_) => cost.cu as f64 / 1e3,
        },
        run_s: Vec::new(),
        median_s: 0.0,
        input_bytes: 0,
        result_bytes: 0,
        checked: 0,
    };
    for i in 0..reps {
        let (secs, input_bytes, result_bytes) = match circuit {
            AnyCircuit::Tfhe(c) => {
                let (client, server) = tfhe
                    .clone()
                    .ok_or("a TFHE circuit needs the key set's TFHE keys")?;
                run_tfhe(client, server, c, pick(i))?
            }
            AnyCircuit::Bfv(c) => run_bfv(keys_dir, c, pick(i))?,
        };
        log(&format!(
            "run {}: {secs:.3} s, result equals the plaintext evaluator's",
            i + 1
        ));
        b.run_s.push(secs);
        b.checked += 1;
        (b.input_bytes, b.result_bytes) = (input_bytes, result_bytes);
    }
    b.median_s = crate::median(&b.run_s);
    Ok(b)
}

/// One element's bit pattern for `ty` (two's complement for signed types).
fn tfhe_value(ty: tenebra_circuit::ScalarType, p: Pick) -> u64 {
    let (lo, hi) = ty.range();
    let v = match p {
        Pick::Min => lo,
        Pick::Max => hi,
        Pick::Random => return rand09::random::<u64>() & ty.mask(),
    };
    (v as u64) & ty.mask()
}

fn run_tfhe(
    client: &ClientKeys,
    server: Arc<ServerKeys>,
    c: &Arc<ValidCircuit>,
    p: Pick,
) -> Result<(f64, usize, usize), Error> {
    let mut values = Vec::new();
    let mut input = Map::new();
    for i in &c.circuit().inputs {
        let n = i.ty.len.map_or(1, |n| n as usize);
        let mine: Vec<u64> = (0..n).map(|_| tfhe_value(i.ty.ty, p)).collect();
        let json: Vec<Value> = mine.iter().map(|&v| decode_scalar(i.ty.ty, v)).collect();
        let json = match i.ty.len {
            None => json.into_iter().next().unwrap_or(Value::Null),
            Some(_) => Value::Array(json),
        };
        input.insert(i.name.clone(), json);
        values.extend(mine);
    }
    let want = decode_outputs(c, &tenebra_circuit::eval::evaluate(c, &values));
    let enc = encrypt_circuit(client, c, &Value::Object(input))?;
    let keys = EvalKeys::Tfhe(server);
    let circuit = AnyCircuit::Tfhe(c.clone());
    let started = Instant::now();
    let res = tenebra_engine::scheme::run(&keys, &circuit, &enc, RunOptions::default())?;
    let secs = started.elapsed().as_secs_f64();
    let got = decrypt_circuit(client, c, &res)?;
    if got != want {
        return Err(format!("decrypted {got}, the plaintext evaluator says {want}").into());
    }
    Ok((secs, enc.len(), res.len()))
}

fn run_bfv(keys_dir: &Path, c: &Arc<ValidBfv>, p: Pick) -> Result<(f64, usize, usize), Error> {
    let keys = BfvKeys::ensure(keys_dir, c)?;
    let inputs: Vec<Vec<i64>> = c
        .circuit()
        .inputs
        .iter()
        .map(|i| {
            (0..i.len)
                .map(|_| match p {
                    Pick::Min => i.min,
                    Pick::Max => i.max,
                    Pick::Random => rand09::random_range(i.min..=i.max),
                })
                .collect()
        })
        .collect();
    let want = evaluate_bfv(c.circuit(), &inputs)?;
    let sig = c.signature();
    let enc = keys
        .secret
        .encrypt(&sig, &c.circuit().name, &keys.key_set.id(), &inputs)?;
    let secret = keys.secret;
    let eval = EvalKeys::Bfv(keys.key_set);
    let circuit = AnyCircuit::Bfv(c.clone());
    let started = Instant::now();
    let res = tenebra_engine::scheme::run(&eval, &circuit, &enc, RunOptions::default())?;
    let secs = started.elapsed().as_secs_f64();
    let got = secret.decrypt(&sig, &res)?;
    let same = got.len() == want.len()
        && got
            .iter()
            .zip(&want)
            .all(|(g, w)| g.iter().map(|&x| i128::from(x)).eq(w.iter().copied()));
    if !same {
        return Err(format!("decrypted {got:?}, the plaintext evaluator says {want:?}").into());
    }
    Ok((secs, enc.len(), res.len()))
}
