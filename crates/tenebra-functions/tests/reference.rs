//! The built-ins' circuits (simulated in plaintext) against their direct references.

use serde_json::{json, Value};
use tenebra_circuit::testing::Rng;
use tenebra_functions::{builtins, find, FunctionError};

fn check(name: &str, input: Value) -> Value {
    let f = find(name).unwrap();
    let want = f.reference(&input).unwrap();
    assert_eq!(f.simulate(&input).unwrap(), want, "{name} on {input}");
    want
}

pub const NIGHT_5: &str = "[[0,0,120],[3,120,150],[0,150,210],[4,210,240],[0,240,300]]";
pub const NIGHT_17: &str = "[[0,0,210],[0,240,570],[2,0,30],[5,30,60],[3,60,90],[4,90,120],[3,120,150],[5,150,180],[2,180,240],[3,240,300],[5,300,330],[4,330,390],[2,390,420],[5,420,450],[4,450,510],[3,510,540],[5,540,570]]";

#[test]
fn public_vectors() {
    let night = |s: &str| json!({"records": serde_json::from_str::<Value>(s).unwrap()});
    assert_eq!(check("sleep_quality", night(NIGHT_5)), json!({"score": 5}));
    assert_eq!(check("sleep_quality", night(NIGHT_17)), json!({"score": 1}));
    assert_eq!(
        check(
            "weight_stats",
            json!({"weights": [680, 650, 690, 700, 705]})
        ),
        json!({"min": 650, "max": 705, "avg": 685})
    );
}

#[test]
fn weight_stats_edges() {
    assert_eq!(
        check("weight_stats", json!({"weights": [7]})),
        json!({"min": 7, "max": 7, "avg": 7})
    );
    assert_eq!(
        check("weight_stats", json!({"weights": [65535, 65535, 0]})),
        json!({"min": 0, "max": 65535, "avg": 43690})
    );
    // 100 values of 70 kg in 0.1 kg: the sum (70000) is past 16 bits and must not wrap.
    let w = vec![700; 100];
    assert_eq!(
        check("weight_stats", json!({"weights": w})),
        json!({"min": 700, "max": 700, "avg": 700})
    );
    let w = vec![65535; 1024];
    assert_eq!(check("weight_stats", json!({"weights": w}))["avg"], 65535);
}

#[test]
fn sleep_quality_edges() {
    // Reversed intervals count as zero; no stage-0 record means TIB = 0 and SOL = 0.
    check(
        "sleep_quality",
        json!({"records": [[3, 100, 50], [4, 10, 500]]}),
    );
    check("sleep_quality", json!({"records": [[1, 0, 480]]}));
    check("sleep_quality", json!({"records": [[0, 0, 480]]}));
    check(
        "sleep_quality",
        json!({"records": [[15, 0, 65535], [0, 65535, 0]]}),
    );
    // Sleep before bed: negative SOL counts as 0.
    check(
        "sleep_quality",
        json!({"records": [[3, 0, 400], [0, 100, 500]]}),
    );
    let all: Vec<Value> = (0..64)
        .map(|i| json!([i % 6, i * 1000, i * 1000 + 999]))
        .collect();
    check("sleep_quality", json!({"records": all}));
}

#[test]
fn randomized_inputs_agree() {
    let mut rng = Rng::new(99);
    for _ in 0..300 {
        let n = 1 + rng.below(40);
        let w: Vec<u64> = (0..n)
            .map(|_| rng.value(tenebra_circuit::ScalarType::Uint(16)))
            .collect();
        check("weight_stats", json!({"weights": w}));
        let recs: Vec<Value> = (0..1 + rng.below(20))
            .map(|_| {
                let s = rng.below(7) as u64;
                let a = rng.below(1440) as u64;
                let b = if rng.below(8) == 0 {
                    a.saturating_sub(5)
                } else {
                    a + rng.below(300) as u64
                };
                json!([s, a, b])
            })
            .collect();
        check("sleep_quality", json!({"records": recs}));
    }
}

#[test]
fn bad_inputs_are_named() {
    let ws = find("weight_stats").unwrap();
    let err = |f: &tenebra_functions::Builtin, v: Value| f.encode(&v).unwrap_err().to_string();
    assert!(err(ws, json!({"weights": []})).contains("1 to 1024"));
    assert!(err(ws, json!({"weights": [1, 70000]})).contains("weights[1]"));
    assert!(err(ws, json!({"weights": [1.5]})).contains("weights[0]"));
    assert!(err(ws, json!({"weight": [1]})).contains("unknown field"));
    assert!(err(ws, json!([1, 2])).contains("JSON object"));
    let sq = find("sleep_quality").unwrap();
    assert!(err(sq, json!({"records": [[16, 0, 1]]})).contains("stage"));
    assert!(err(sq, json!({"records": [[1, 0]]})).contains("[stage, start, end]"));
    assert!(matches!(find("nope"), Err(FunctionError::Unknown(_))));
    assert!(ws.circuit(0).is_err() && ws.circuit(1025).is_err());
}

#[test]
fn costs_are_known_before_running() {
    for f in builtins() {
        let small = f.cost(*f.sizes.start()).unwrap();
        let large = f.cost(*f.sizes.end()).unwrap();
        assert!(small.cu > 0 && large.cu > small.cu, "{}", f.name);
    }
}

/// Every built-in at its largest size fits a worker with room to spare: its working set is
/// under half the default limit (weight_stats at 1024 values is ~1.1 GB, mostly the
/// 1024-operand sum's copies), and its result is what it returns (a few values).
#[test]
fn builtins_fit_the_default_limits() {
    let limits = tenebra_circuit::Limits::default();
    for f in builtins() {
        let fp = f.circuit(*f.sizes.end()).unwrap().footprint();
        assert!(
            fp.working_set_bytes < limits.max_working_set_bytes / 2,
            "{} at {}: {fp:?}",
            f.name,
            f.sizes.end()
        );
        assert!(fp.output_blocks <= 64, "{}: {fp:?}", f.name);
    }
}
