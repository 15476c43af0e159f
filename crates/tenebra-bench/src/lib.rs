//! Benchmarks: the engine against hand-written tfhe-rs code for the same functions (measured
//! in the same run, alternating), the BFV backend against hand-written fhe.rs code, what the
//! service adds over a direct engine call, the service's own cost on a trivial circuit and
//! the queue's throughput, and the calibration of the cost model's op
//! latencies. Each renders its part of BENCHMARKS.md ([`doc`]).

pub mod baseline;
pub mod bfv;
pub mod doc;
pub mod function;
pub mod overhead;
pub mod serverless;
pub mod service;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Instant;

use serde_json::{json, Value};
use tenebra_circuit::cost::{calibration, plan_cost, Calibration, OP_CLASSES};
use tenebra_circuit::ir::{BinOp, CmpOp, ConstOp, UnOp};
use tenebra_circuit::plan::{plan, plan_with, Arg, Plan, PlanOp, PlanOptions, Step};
use tenebra_circuit::ScalarType::{self, Bool, Int, Uint};
use tenebra_engine::bundle::{encrypt_values, expand_values, seal_results};
use tenebra_engine::exec::run;
use tenebra_engine::{ClientKeys, EngineError, RunOptions, ServerKeys, StepTiming};
use tenebra_functions::find;

/// Describes this machine in one line (CPU model and cores).
pub fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    format!("{cpu}, {cores} cores")
}

pub fn today() -> String {
    std::process::Command::new("date")
        .arg("-u")
        .arg("+%Y-%m-%d")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map_or_else(|| "unknown date".into(), |s| s.trim().to_owned())
}

fn single_thread() -> Result<rayon::ThreadPool, EngineError> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .map_err(|e| EngineError::Internal(e.to_string()))
}

/// A one-step plan reading `inputs` and producing one or two values of type `ty`.
fn one_step(op: PlanOp, ty: ScalarType, inputs: &[ScalarType], n_outs: usize) -> Plan {
    let n_in = inputs.len() as u32;
    let outs: Vec<u32> = (n_in..n_in + n_outs as u32).collect();
    let mut value_types = inputs.to_vec();
    value_types.extend(std::iter::repeat_n(ty, n_outs));
    Plan {
        steps: vec![Step {
            op,
            ty,
            outs: outs.clone(),
        }],
        n_values: value_types.len(),
        value_types,
        inputs: (0..n_in).map(Some).collect(),
        outputs: outs.into_iter().map(|o| vec![o]).collect(),
    }
}

/// The op measured for a class at a width: the plan step and its input types.
fn probe(class: &str, w: u8) -> Option<(PlanOp, ScalarType, Vec<ScalarType>, usize)> {
    let u = Uint(w);
    let v = |i: u32| Arg::Val(i);
    let k = |c: u64| Arg::Const(c & u.mask());
    let two = vec![u, u];
    let bin = |op, b| {
        (
            PlanOp::Binary { op, a: v(0), b },
            u,
            if matches!(b, Arg::Val(_)) {
                two.clone()
            } else {
                vec![u]
            },
            1,
        )
    };
    Some(match class {
        "add" => bin(BinOp::Add, v(1)),
        "scalar_add" => bin(BinOp::Add, k(13)),
        "neg" => (
            PlanOp::Unary {
                op: UnOp::Neg,
                a: 0,
            },
            u,
            vec![u],
            1,
        ),
        "mul" if w <= 16 => bin(BinOp::Mul, v(1)),
        "scalar_mul" => bin(BinOp::Mul, k(13)),
        "bitop" => bin(BinOp::And, v(1)),
        "scalar_bitop" => bin(BinOp::And, k(0x5555_5555_5555_5555)),
        "not" => (
            PlanOp::Unary {
                op: UnOp::Not,
                a: 0,
            },
            u,
            vec![u],
            1,
        ),
        "cmp" => (
            PlanOp::Compare {
                op: CmpOp::Gt,
                a: v(0),
                b: v(1),
                ty: u,
            },
            Bool,
            two,
            1,
        ),
        "scalar_cmp" => (
            PlanOp::Compare {
                op: CmpOp::Gt,
                a: v(0),
                b: k(13),
                ty: u,
            },
            Bool,
            vec![u],
            1,
        ),
        "min" => bin(BinOp::Min, v(1)),
        "scalar_min" => bin(BinOp::Min, k(13)),
        "minmax" => (PlanOp::MinMax { a: 0, b: 1 }, u, two, 2),
        "select" => (
            PlanOp::Select {
                cond: 0,
                a: v(1),
                b: v(2),
            },
            u,
            vec![Bool, u, u],
            1,
        ),
        "scalar_select" => (
            PlanOp::Select {
                cond: 0,
                a: v(1),
                b: Arg::Const(0),
            },
            u,
            vec![Bool, u],
            1,
        ),
        "div" if w <= 16 => (
            PlanOp::ByConst {
                op: ConstOp::Div,
                a: 0,
                c: 7,
            },
            u,
            vec![u],
            1,
        ),
        "rem" if w <= 16 => (
            PlanOp::ByConst {
                op: ConstOp::Rem,
                a: 0,
                c: 7,
            },
            u,
            vec![u],
            1,
        ),
        "shift" => (
            PlanOp::ByConst {
                op: ConstOp::Shr,
                a: 0,
                c: 3,
            },
            u,
            vec![u],
            1,
        ),
        "cast" => (
            PlanOp::Cast {
                a: 0,
                from: Int(w / 2 + (w / 2) % 2),
            },
            Int(w),
            vec![Int(w / 2 + (w / 2) % 2)],
            1,
        ),
        "sum_operand" => (
            PlanOp::Sum {
                args: (0..8).collect(),
                constant: 0,
            },
            u,
            vec![u; 8],
            1,
        ),
        "lut16" if w == 4 => {
            let table = (0..16).map(|i| (i * 7 + 3) % 16).collect();
            (
                PlanOp::Lut {
                    a: 0,
                    from: u,
                    table,
                },
                u,
                vec![u],
                1,
            )
        }
        "bool_op" if w == 2 => (
            PlanOp::Binary {
                op: BinOp::And,
                a: v(0),
                b: v(1),
            },
            Bool,
            vec![Bool, Bool],
            1,
        ),
        _ => return None,
    })
}

/// Measures every op class at every width on one thread and returns the calibration table.
pub fn calibrate(
    client: &ClientKeys,
    server: &ServerKeys,
    log: &mut dyn FnMut(&str),
) -> Result<Calibration, EngineError> {
    let pool = single_thread()?;
    let mut ops: BTreeMap<String, BTreeMap<u8, f64>> = BTreeMap::new();
    for &class in OP_CLASSES {
        for w in [2u8, 4, 8, 16, 32] {
            let ms = if class == "expand" {
                if w != 2 {
                    continue;
                }
                let types = vec![Uint(16); 8];
                let payload = encrypt_values(client, &types, &[7; 8])?;
                let started = Instant::now();
                pool.install(|| expand_values(server, &payload, &types))?;
                started.elapsed().as_secs_f64() * 1e3 / 64.0
            } else {
                let Some((op, ty, inputs, n_outs)) = probe(class, w) else {
                    continue;
                };
                if w == 2 && class != "bool_op" {
                    continue;
                }
                let p = one_step(op, ty, &inputs, n_outs);
                let values: Vec<u64> = inputs.iter().map(|t| 3 & t.mask()).collect();
                let payload = encrypt_values(client, &inputs, &values)?;
                let cts = expand_values(server, &payload, &inputs)?;
                let reps = if w <= 8 { 3 } else { 2 };
                let mut best = f64::MAX;
                for _ in 0..reps {
                    let started = Instant::now();
                    pool.install(|| run(server.integer(), &p, cts.clone(), RunOptions::default()))?;
                    best = best.min(started.elapsed().as_secs_f64() * 1e3);
                }
                if class == "sum_operand" {
                    best / 8.0
                } else {
                    best
                }
            };
            log(&format!("{class:>14} u{w:<2} {ms:9.1} ms"));
            ops.entry(class.to_owned())
                .or_default()
                .insert(w, (ms * 10.0).round() / 10.0);
        }
    }
    Ok(Calibration {
        version: 1,
        machine: machine(),
        measured_at: today(),
        ops,
    })
}

/// One benchmark case.
pub struct Case {
    pub label: &'static str,
    pub function: &'static str,
    pub input: Value,
}

/// The cases of `tenebra bench compare`.
pub fn default_cases() -> Vec<Case> {
    let night5 = json!([
        [0, 0, 120],
        [3, 120, 150],
        [0, 150, 210],
        [4, 210, 240],
        [0, 240, 300]
    ]);
    let night17 = json!([
        [0, 0, 210],
        [0, 240, 570],
        [2, 0, 30],
        [5, 30, 60],
        [3, 60, 90],
        [4, 90, 120],
        [3, 120, 150],
        [5, 150, 180],
        [2, 180, 240],
        [3, 240, 300],
        [5, 300, 330],
        [4, 330, 390],
        [2, 390, 420],
        [5, 420, 450],
        [4, 450, 510],
        [3, 510, 540],
        [5, 540, 570]
    ]);
    let hundred: Vec<u64> = (0..100).map(|i| 600 + (i * 37) % 250).collect();
    vec![
        Case {
            label: "weight_stats, 5 values",
            function: "weight_stats",
            input: json!({"weights": [680, 650, 690, 700, 705]}),
        },
        Case {
            label: "weight_stats, 100 values",
            function: "weight_stats",
            input: json!({"weights": hundred}),
        },
        Case {
            label: "sleep_quality, 5-record night",
            function: "sleep_quality",
            input: json!({"records": night5}),
        },
        Case {
            label: "sleep_quality, 17-record night",
            function: "sleep_quality",
            input: json!({"records": night17}),
        },
    ]
}

/// Measurements of one case.
#[derive(Debug, Clone)]
pub struct CaseResult {
    pub label: String,
    /// Engine compute time (expanded inputs to output ciphertexts), per repetition.
    pub engine_s: Vec<f64>,
    /// Baseline compute time, per repetition.
    pub baseline_s: Vec<f64>,
    /// Engine compute time with the plan's rewrites turned off, per repetition.
    pub naive_s: Vec<f64>,
    /// Expanding the compact input list plus sealing the outputs.
    pub io_s: f64,
    /// Cost-model estimate of the work divided by the cores: the machine's limit.
    pub bound_s: f64,
    pub cu: u64,
    pub ops: usize,
    pub input_bytes: usize,
    pub output_bytes: usize,
    /// The slowest op kinds of the last engine run: (kind, total seconds, count).
    pub hot: Vec<(String, f64, usize)>,
}

pub fn median(xs: &[f64]) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn op_kind(op: &PlanOp) -> String {
    let s = format!("{op:?}");
    let head: String = s.chars().take_while(|c| c.is_alphanumeric()).collect();
    match op {
        PlanOp::Binary { op, a, b } => {
            let scalar = if a.val().is_some() && b.val().is_some() {
                ""
            } else {
                " (scalar)"
            };
            format!("{op:?}{scalar}")
        }
        PlanOp::Compare { op, a, b, .. } => {
            let scalar = if a.val().is_some() && b.val().is_some() {
                ""
            } else {
                " (scalar)"
            };
            format!("{op:?}{scalar}")
        }
        PlanOp::ByConst { op, .. } => format!("{op:?}"),
        _ => head,
    }
}

/// Runs each case `reps` times, alternating engine and baseline, and checks every result.
pub fn compare(
    client: &ClientKeys,
    server: &ServerKeys,
    cases: &[Case],
    reps: usize,
    log: &mut dyn FnMut(&str),
) -> Result<Vec<CaseResult>, Box<dyn std::error::Error>> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    tfhe::set_server_key(server.high_level().clone());
    let ck = client.high_level();
    let mut results = Vec::new();
    for case in cases {
        let f = find(case.function)?;
        let want = f.reference(&case.input)?;
        let enc = tenebra_client::encrypt(client, f, &case.input)?;
        let (size, values) = f.encode(&case.input)?;
        let circuit = f.circuit(size)?;
        let p = plan(&circuit);
        let cost = plan_cost(calibration(), &p, &circuit.input_types());
        let (_, payload) = tenebra_engine::bundle::read(&enc, tenebra_engine::bundle::Kind::Input)?;
        let started = Instant::now();
        let inputs = expand_values(server, payload, &circuit.input_types())?;
        let expand_s = started.elapsed().as_secs_f64();
        let mut r = CaseResult {
            label: case.label.to_owned(),
            engine_s: Vec::new(),
            baseline_s: Vec::new(),
            naive_s: Vec::new(),
            io_s: expand_s,
            bound_s: cost.cu as f64 / 1e3 / cores,
            cu: cost.cu,
            ops: cost.ops,
            input_bytes: enc.len(),
            output_bytes: 0,
            hot: Vec::new(),
        };
        for rep in 0..reps {
            // Engine.
            let timings = Mutex::new(Vec::<StepTiming>::new());
            let opts = RunOptions {
                timings: Some(&timings),
                ..RunOptions::default()
            };
            let started = Instant::now();
            let outs = run(server.integer(), &p, inputs.clone(), opts)?;
            r.engine_s.push(started.elapsed().as_secs_f64());
            let started = Instant::now();
            let sealed = seal_results(
                outs.into_iter().flatten().collect(),
                &tenebra_engine::output_types(&circuit),
            )?;
            if rep == 0 {
                r.io_s += started.elapsed().as_secs_f64();
            }
            let header = tenebra_engine::bundle::Header {
                version: tenebra_engine::bundle::BUNDLE_VERSION,
                function: f.name.into(),
                size,
                circuit_id: circuit.id().to_string(),
                key_set_id: client.id().to_string(),
                types: tenebra_engine::output_types(&circuit),
            };
            let bundle = tenebra_engine::bundle::write(
                tenebra_engine::bundle::Kind::Result,
                &header,
                &sealed,
            )?;
            r.output_bytes = bundle.len();
            let got = tenebra_client::decrypt(client, f, &bundle)?;
            if got != want {
                return Err(
                    format!("{}: engine result {got} != reference {want}", case.label).into(),
                );
            }
            let mut by_kind: BTreeMap<String, (f64, usize)> = BTreeMap::new();
            for t in timings.into_inner().unwrap_or_default() {
                let e = by_kind.entry(op_kind(&p.steps[t.step].op)).or_default();
                e.0 += t.elapsed.as_secs_f64();
                e.1 += 1;
            }
            let mut hot: Vec<_> = by_kind.into_iter().map(|(k, (s, n))| (k, s, n)).collect();
            hot.sort_by(|a, b| b.1.total_cmp(&a.1));
            hot.truncate(5);
            r.hot = hot;
            // The same engine without the plan's rewrites.
            let naive = plan_with(
                &circuit,
                PlanOptions {
                    flatten_sums: false,
                    fuse_min_max: false,
                },
            );
            let started = Instant::now();
            run(
                server.integer(),
                &naive,
                inputs.clone(),
                RunOptions::default(),
            )?;
            r.naive_s.push(started.elapsed().as_secs_f64());
            // Baseline, same inputs.
            let base_ok = match case.function {
                "weight_stats" => {
                    let w = baseline::encrypt_weights(ck, &values);
                    let started = Instant::now();
                    let out = baseline::weight_stats(&w);
                    r.baseline_s.push(started.elapsed().as_secs_f64());
                    let [mn, mx, avg] = baseline::decrypt_weight_stats(ck, &out);
                    json!({"min": mn, "max": mx, "avg": avg}) == want
                }
                _ => {
                    let n = size as usize;
                    let recs: Vec<[u64; 3]> = (0..n)
                        .map(|i| [values[i], values[n + i], values[2 * n + i]])
                        .collect();
                    let night = baseline::encrypt_night(ck, &recs);
                    let started = Instant::now();
                    let out = baseline::sleep_quality(&night);
                    r.baseline_s.push(started.elapsed().as_secs_f64());
                    json!({"score": baseline::decrypt_score(ck, &out)}) == want
                }
            };
            if !base_ok {
                return Err(format!(
                    "{}: the baseline result differs from the reference",
                    case.label
                )
                .into());
            }
            log(&format!(
                "{}: engine {:.2} s, without rewrites {:.2} s, baseline {:.2} s",
                case.label,
                r.engine_s.last().copied().unwrap_or(0.0),
                r.naive_s.last().copied().unwrap_or(0.0),
                r.baseline_s.last().copied().unwrap_or(0.0)
            ));
        }
        results.push(r);
    }
    Ok(results)
}

/// The results as the Markdown of `BENCHMARKS.md`.
pub fn report(results: &[CaseResult], reps: usize) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# Benchmarks\n");
    let _ = writeln!(
        s,
        "Measured on {} with `tenebra bench compare` on {} ({reps} repetition(s), engine and \
         baseline alternating, medians shown). Engine and baseline use the same keys \
         (tfhe-rs 1.8 default parameters) and the same encrypted values; both results are \
         decrypted and checked against the plaintext reference.\n",
        machine(),
        today(),
    );
    let _ = writeln!(
        s,
        "- **engine**: Tenebra's executor on the optimized plan, from expanded inputs to output ciphertexts.\n\
         - **no rewrites**: the same executor on a plan lowered without the rewrites (sums as chains of additions, min and max without shared comparisons).\n\
         - **baseline**: hand-written tfhe-rs high-level API code a typical application writes for the same function (`crates/tenebra-bench/src/baseline.rs`).\n\
         - **server e2e**: engine + expanding the compact input list + serializing the outputs (what a server task spends, key already loaded).\n\
         - **PBS bound**: the plan's work from the cost model (op count x op latency measured on one thread) divided by the cores: what a perfectly parallel run would take if ops scaled no better than one thread each. tfhe-rs's own parallel code scales a little better than that, so the engine can beat it.\n"
    );
    let _ = writeln!(
        s,
        "| case | engine (s) | no rewrites (s) | baseline (s) | engine / baseline | server e2e (s) | PBS bound (s) | CU | ops | in / out bytes |"
    );
    let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in results {
        let (e, b) = (median(&r.engine_s), median(&r.baseline_s));
        let _ = writeln!(
            s,
            "| {} | {e:.2} | {:.2} | {b:.2} | {:.2} | {:.2} | {:.2} | {} | {} | {} / {} |",
            r.label,
            median(&r.naive_s),
            e / b,
            e + r.io_s,
            r.bound_s,
            r.cu,
            r.ops,
            r.input_bytes,
            r.output_bytes
        );
    }
    let _ = writeln!(
        s,
        "\nThe peers on this kind of machine (`shared/PEERS.md`): weight_stats 5 values 6.3-6.7 s \
         (fhe_ios_demo, tfhe-rs 0.7.4, incl. 0.6 s key decompression), 100 values 122-124 s with a \
         16-bit sum that wraps; sleep_quality 19-28 s (5 records) and 60-69 s (17 records). \
         Compare with the server e2e column (Tenebra keeps decompressed keys warm)."
    );
    let _ = writeln!(s, "\nWhere the engine's time goes (last run; op kind, seconds summed over its steps, which overlap when they run in parallel, and step count):\n");
    for r in results {
        let hot: Vec<String> = r
            .hot
            .iter()
            .map(|(k, t, n)| format!("{k} {t:.2} s ({n})"))
            .collect();
        let _ = writeln!(s, "- {}: {}", r.label, hot.join(", "));
    }
    s
}
