//! Circuit model: canonical form, validation of hostile circuits, plan rewrites, evaluator.

use tenebra_circuit::builder::{argmax, dot, max_of, min_of, sum, Builder};
use tenebra_circuit::eval::evaluate;
use tenebra_circuit::plan::{evaluate_plan, plan, plan_with, PlanOp, PlanOptions};
use tenebra_circuit::testing::{random_circuit, random_inputs, Rng};
use tenebra_circuit::ScalarType::{Bool, Int, Uint};
use tenebra_circuit::{cost, parse_circuit, Limits, ValidationError};

fn stats(n: u32) -> tenebra_circuit::ValidCircuit {
    let b = Builder::new("stats");
    let xs = b.input_vec("xs", Uint(16), n);
    let wide: Vec<_> = xs.iter().map(|x| x.cast(Uint(32))).collect();
    b.output("min", &min_of(&xs));
    b.output("max", &max_of(&xs));
    b.output("sum", &sum(&wide));
    b.build().unwrap()
}

#[test]
fn canonical_json_round_trips_and_ids_are_stable() {
    let c = stats(5);
    let bytes = c.canonical_json();
    // Whitespace and field order do not change the id.
    let value: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    let pretty = serde_json::to_vec_pretty(&value).unwrap();
    let again = parse_circuit(&pretty, &Limits::default()).unwrap();
    assert_eq!(again.canonical_json(), bytes);
    assert_eq!(again.id(), c.id());
    assert_ne!(stats(6).id(), c.id());
    // The id is the SHA-256 of the canonical bytes, in hex.
    assert_eq!(c.id().to_string().len(), 64);
    assert_eq!(
        c.id()
            .to_string()
            .parse::<tenebra_circuit::CircuitId>()
            .unwrap(),
        c.id()
    );
}

#[test]
fn evaluator_follows_wrapping_semantics() {
    let b = Builder::new("ops");
    let x = b.input("x", Uint(8));
    let y = b.input("y", Int(8));
    b.output("add", &(&x + 250));
    b.output("neg", &(-&y));
    b.output("div", &(&y / 3));
    b.output("rem", &(&y % 3));
    b.output("shr", &(&y >> 1));
    b.output("cast", &y.cast(Uint(16)));
    b.output("lt", &y.lt(-3));
    let c = b.build().unwrap();
    let out = evaluate(&c, &[10, (-7i8) as u8 as u64]);
    let v = tenebra_circuit::io::decode_outputs(&c, &out);
    assert_eq!(
        v,
        serde_json::json!({"add": 4, "neg": 7, "div": -2, "rem": -1, "shr": -4,
                           "cast": 65529, "lt": true})
    );
}

#[test]
fn builder_reports_mistakes() {
    let b = Builder::new("bad");
    let x = b.input("x", Uint(8));
    let y = b.input("y", Uint(16));
    b.output("z", &(&x + &y));
    let e = b.build().unwrap_err();
    assert!(e.to_string().contains("operand types differ"), "{e}");

    let b = Builder::new("bad");
    let x = b.input("x", Uint(8));
    b.output("z", &(&x + 300));
    assert!(b.build().unwrap_err().to_string().contains("does not fit"));
}

fn rejects(json: serde_json::Value, needle: &str) {
    let bytes = serde_json::to_vec(&json).unwrap();
    match parse_circuit(&bytes, &Limits::default()) {
        Ok(_) => panic!("accepted: {json}"),
        Err(e) => assert!(e.to_string().contains(needle), "`{e}` lacks `{needle}`"),
    }
}

#[test]
fn hostile_circuits_are_rejected_with_the_node_named() {
    let base = |nodes: serde_json::Value| {
        serde_json::json!({"version":1,"scheme":"tfhe","name":"t",
            "inputs":[{"name":"x","type":"u8[2]"}],
            "nodes": nodes,
            "outputs":[{"name":"o","type":"u8","nodes":[2]}]})
    };
    let inputs =
        serde_json::json!([{"op":"input","input":0,"index":0},{"op":"input","input":0,"index":1}]);
    let with = |n: serde_json::Value| {
        let mut v = inputs.as_array().unwrap().clone();
        v.push(n);
        base(serde_json::Value::Array(v))
    };
    rejects(
        with(serde_json::json!({"op":"add","a":0,"b":5})),
        "node 2 (add): refers to node 5",
    );
    rejects(
        with(serde_json::json!({"op":"add","a":0,"b":2})),
        "only use earlier nodes",
    );
    rejects(
        with(serde_json::json!({"op":"add","a":0,"b":{"c":256}})),
        "does not fit",
    );
    rejects(
        with(serde_json::json!({"op":"div","a":0,"c":0})),
        "positive",
    );
    rejects(
        with(serde_json::json!({"op":"shl","a":0,"c":8})),
        "not below the width",
    );
    rejects(
        with(serde_json::json!({"op":"frobnicate","a":0})),
        "unknown op",
    );
    rejects(
        with(serde_json::json!({"op":"neg","a":0,"b":1})),
        "does not take field `b`",
    );
    rejects(
        with(serde_json::json!({"op":"lt","a":0,"b":1})),
        "has type bool",
    );
    rejects(
        with(serde_json::json!({"op":"lut","a":0,"table":[1,2],"to":"u8"})),
        "needs 256 entries",
    );
    rejects(
        with(serde_json::json!({"op":"add","a":{"c":1},"b":{"c":2}})),
        "at least one operand",
    );
    rejects(
        base(serde_json::json!([{"op":"input","input":3,"index":0}])),
        "input 3 does not exist",
    );
    rejects(
        base(serde_json::json!([{"op":"input","input":0,"index":2}])),
        "out of range",
    );
    let mut v = base(inputs.clone());
    v["version"] = 2.into();
    rejects(v, "format version 2");
    let mut v = base(inputs.clone());
    v["inputs"][0]["type"] = "u8[100000]".into();
    rejects(v, "vector length");
    let mut v = base(inputs.clone());
    v["inputs"][0]["type"] = "u7".into();
    rejects(v, "unsupported integer width");
    rejects(serde_json::json!({"version":1}), "missing field");
    // Too many nodes.
    let limits = Limits {
        max_nodes: 10,
        ..Limits::default()
    };
    let many: Vec<_> = (0..11)
        .map(|i| serde_json::json!({"op":"input","input":0,"index":i % 2}))
        .collect();
    let bytes = serde_json::to_vec(&base(serde_json::Value::Array(many))).unwrap();
    assert!(
        matches!(parse_circuit(&bytes, &limits), Err(ValidationError::Circuit(m)) if m.contains("nodes"))
    );
    // Oversized JSON is refused before parsing.
    let limits = Limits {
        max_json_bytes: 10,
        ..Limits::default()
    };
    assert!(parse_circuit(&bytes, &limits)
        .unwrap_err()
        .to_string()
        .contains("bytes"));
}

#[test]
fn planner_fuses_min_max_and_flattens_sums() {
    let c = stats(100);
    let p = plan(&c);
    let minmax = p
        .steps
        .iter()
        .filter(|s| matches!(s.op, PlanOp::MinMax { .. }))
        .count();
    let sums: Vec<_> = p
        .steps
        .iter()
        .filter(|s| matches!(s.op, PlanOp::Sum { .. }))
        .collect();
    assert_eq!(minmax, 50, "pairs share one comparison");
    // 50 pairs, then two trees of 49 ops each: 148 comparisons instead of 198.
    let compares = p
        .steps
        .iter()
        .filter(|s| !matches!(s.op, PlanOp::Sum { .. } | PlanOp::Cast { .. }))
        .count();
    assert_eq!(compares, 50 + 49 + 49);
    assert_eq!(sums.len(), 1);

    // A chain of `+` becomes one multi-operand sum.
    let b = Builder::new("chain");
    let xs = b.input_vec("xs", Uint(8), 6);
    let mut acc = xs[0].clone();
    for x in &xs[1..] {
        acc = &acc + x;
    }
    b.output("s", &(&acc + 3));
    let c = b.build().unwrap();
    let p = plan(&c);
    assert_eq!(p.steps.len(), 1);
    assert!(matches!(&p.steps[0].op, PlanOp::Sum { args, constant: 3 } if args.len() == 6));

    // Nothing is computed for a node no output reads.
    let b = Builder::new("dead");
    let x = b.input("x", Uint(8));
    let _unused = &x * &x;
    b.output("y", &(&x + 1));
    assert_eq!(plan(&b.build().unwrap()).steps.len(), 1);
}

#[test]
fn plan_is_equivalent_to_the_circuit_on_random_circuits() {
    let mut rng = Rng::new(7);
    for round in 0..3000 {
        let c = random_circuit(&mut rng, 1 + round % 25);
        let p = plan(&c);
        let naive = plan_with(
            &c,
            PlanOptions {
                flatten_sums: false,
                fuse_min_max: false,
            },
        );
        for _ in 0..4 {
            let inputs = random_inputs(&mut rng, &c);
            assert_eq!(evaluate_plan(&naive, &inputs), evaluate(&c, &inputs));
            assert_eq!(
                evaluate_plan(&p, &inputs),
                evaluate(&c, &inputs),
                "round {round}: {}",
                String::from_utf8_lossy(&c.canonical_json())
            );
        }
        // The canonical form parses back to the same circuit.
        let again = parse_circuit(&c.canonical_json(), &Limits::default()).unwrap();
        assert_eq!(again.circuit(), c.circuit());
    }
}

#[test]
fn argmax_and_dot_reference() {
    let b = Builder::new("am");
    let xs = b.input_vec("xs", Int(8), 5);
    b.output("i", &argmax(&xs, Uint(4)));
    b.output("d", &dot(&xs, &[1, -1, 2, 0, 3]));
    b.output("any", &xs[0].gt(0).select(&xs[1], 9));
    b.output("flag", &xs[0].lt(&xs[1]).cast(Bool));
    let c = b.build().unwrap();
    let enc = |v: i64| (v as u64) & 0xff;
    let out = evaluate(&c, &[enc(3), enc(7), enc(-1), enc(7), enc(2)]);
    assert_eq!(out[0], vec![1], "first index of the maximum");
    assert_eq!(out[1], vec![enc(3 - 7 - 2 + 6)]);
    assert_eq!(out[2], vec![7]);
    assert_eq!(out[3], vec![1]);
    assert!(cost::cost(&c).cu > 0);
}

/// What a run would hold is bounded at validation: output values (an element may be named
/// again and again), output blocks (the result's size) and the working set (inputs, live
/// values and temporaries), each refused with the numbers.
#[test]
fn resource_bounds_are_checked_before_anything_runs() {
    use serde_json::Value;
    use tenebra_circuit::footprint::BLOCK_BYTES;
    use tenebra_circuit::testing::hostile;
    let parse = |v: &Value| parse_circuit(&serde_json::to_vec(v).unwrap(), &Limits::default());
    let too_large = |v: Value, what: &str| match parse(&v) {
        Err(e @ ValidationError::TooLarge { .. }) => {
            assert!(e.to_string().contains(what), "`{e}` lacks `{what}`")
        }
        other => panic!("expected TooLarge ({what}), got {other:?}"),
    };
    // The attack: 262,144 ciphertexts of result for a few hundred CU.
    too_large(hostile::repeated_outputs(), "output values");
    // 129 u64 outputs are 4128 blocks of result; 128 fit.
    too_large(hostile::u64_outputs(129), "output blocks");
    let fits = parse(&hostile::u64_outputs(128)).unwrap().footprint();
    assert_eq!(fits.output_blocks, 4096);
    assert_eq!(fits.result_bytes, 4096 * BLOCK_BYTES);
    // 4096 u64 inputs summed: 2.2 GB of expanded inputs plus the sum's operand copies.
    too_large(hostile::wide_sum(4096), "memory");
    let small = parse(&hostile::wide_sum(64)).unwrap().footprint();
    // Inputs, the sum's result and its temporaries are all counted.
    assert!(small.working_set_bytes >= (64 + 1) * 32 * BLOCK_BYTES);
    // Free operations (`not`) keep values alive too: 60,000 of them read by sums at the end
    // hold ~4 GiB, whatever their price.
    too_large(hostile::many_nots(60_000), "memory");
}

/// 100,000 `min(a, b)` of one pair (and no max) plan in linear time: whether a pair has its
/// other half is decided once per pair (it used to scan the pair's list once per node, 10^10
/// steps here). Each min stays its own step.
#[test]
fn many_mins_of_one_pair_plan_in_linear_time() {
    let n = 100_000usize;
    let v = tenebra_circuit::testing::hostile::many_mins(n);
    let c = parse_circuit(&serde_json::to_vec(&v).unwrap(), &Limits::default()).unwrap();
    let plan = tenebra_circuit::plan::plan(&c);
    let mins = plan
        .steps
        .iter()
        .filter(|s| matches!(s.op, tenebra_circuit::plan::PlanOp::Binary { .. }))
        .count();
    assert_eq!(mins, n);
}
