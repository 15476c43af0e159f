//! Models: the example models learn, quantization stays within a small error of float
//! inference, splits are offered up to the first non-polynomial activation, hostile models
//! are refused.

use tenebra_functions::model::*;

#[test]
fn example_models_learn_and_quantize_closely() {
    let (test, labels) = example_data(200, 99);
    let lr = example_logistic();
    let mlp = example_mlp();
    assert!(
        accuracy(&lr, &test, &labels) > 0.8,
        "{}",
        accuracy(&lr, &test, &labels)
    );
    assert!(
        accuracy(&mlp, &test, &labels) > 0.8,
        "{}",
        accuracy(&mlp, &test, &labels)
    );
    assert_eq!(lr.max_encrypted_layers(), 1);
    assert_eq!(mlp.max_encrypted_layers(), 3);
    for (model, k) in [(&lr, 1), (&mlp, 1), (&mlp, 2), (&mlp, 3)] {
        let mut c = model.compile(k).unwrap();
        let err = c.measure(model, &test).unwrap();
        // The quantized model is a close approximation: errors relative to the outputs' size.
        let size = test
            .iter()
            .flat_map(|x| model.forward_to(k, x))
            .fold(0.0f64, |m, v| m.max(v.abs()));
        assert!(
            err <= 0.1 * size.max(1.0),
            "{} k={k}: error {err} for outputs up to {size}",
            model.name
        );
    }
    // The whole MLP classifies like the float model on almost every point.
    let c = mlp.compile(3).unwrap();
    let same = test
        .iter()
        .filter(|x| {
            let f = mlp.forward_from(0, x);
            let q = c.simulate(&mlp, x).unwrap();
            (f[1] > f[0]) == (q[1] > q[0])
        })
        .count();
    assert!(same as f64 >= 0.95 * test.len() as f64, "{same}");
}

#[test]
fn splits_stop_at_non_polynomial_activations() {
    let lr = example_logistic();
    assert!(matches!(lr.compile(2), Err(ModelError::Split(_))));
    assert!(matches!(lr.compile(0), Err(ModelError::Split(_))));
    // Finishing in plaintext after the encrypted layer gives the float model's output.
    let (test, _) = example_data(5, 3);
    let mut c = lr.compile(1).unwrap();
    let err = c.measure(&lr, &test).unwrap();
    for x in &test {
        let mid = c.simulate(&lr, x).unwrap();
        let p = lr.forward_from(1, &mid)[0];
        let want = lr.forward_from(0, x)[0];
        // The sigmoid is 1/4-Lipschitz: the split's error is at most a quarter of the
        // encrypted layer's.
        assert!((p - want).abs() <= err / 4.0 + 1e-12, "{p} vs {want}");
    }
}

#[test]
fn too_deep_and_hostile_models_are_refused() {
    let mut deep = example_mlp();
    for _ in 0..3 {
        deep.layers.push(Layer::Activation {
            function: Activation::Square,
        });
        deep.layers.push(Layer::Dense {
            weights: vec![vec![0.5; 2]; 2],
            bias: vec![0.0; 2],
        });
    }
    let k = deep.max_encrypted_layers();
    let e = deep.compile(k).unwrap_err();
    assert!(matches!(e, ModelError::TooDeep { .. }), "{e}");
    for bad in [
        &b"not json"[..],
        br#"{"version":1,"name":"m","input_len":2,"input_min":0,"input_max":1,"layers":[{"type":"dense","weights":[[1,2,3]],"bias":[0]}]}"#,
        br#"{"version":1,"name":"m","input_len":2,"input_min":0,"input_max":1,"layers":[{"type":"conv"}]}"#,
        br#"{"version":2,"name":"m","input_len":2,"input_min":0,"input_max":1,"layers":[]}"#,
        br#"{"version":1,"name":"m","input_len":2,"input_min":1,"input_max":0,"layers":[{"type":"activation","function":"relu"}]}"#,
    ] {
        assert!(matches!(Model::parse(bad), Err(ModelError::Invalid(_))));
    }
    let json = serde_json::to_vec(&example_mlp()).unwrap();
    let back = Model::parse(&json).unwrap();
    assert_eq!((back.name.as_str(), back.layers.len()), ("example-mlp", 3));
}

/// The example MLP's dense layers written as an ONNX graph (Gemm with transB, MatMul + Add,
/// Relu) import to the same layers; malformed and unsupported graphs are clear errors.
#[test]
fn onnx_import() {
    use onnx_protobuf::{GraphProto, Message, ModelProto, NodeProto, TensorProto, ValueInfoProto};
    use tenebra_functions::onnx::model_from_onnx;
    fn tensor(name: &str, dims: &[i64], v: &[f64]) -> TensorProto {
        let mut t = TensorProto::new();
        t.name = name.into();
        t.dims = dims.to_vec();
        t.data_type = 1;
        t.raw_data = v.iter().flat_map(|x| (*x as f32).to_le_bytes()).collect();
        t
    }
    fn node(op: &str, inputs: &[&str], output: &str, trans_b: bool) -> NodeProto {
        let mut n = NodeProto::new();
        n.op_type = op.into();
        n.name = format!("{op}_{output}");
        n.input = inputs.iter().map(|s| s.to_string()).collect();
        n.output = vec![output.into()];
        if trans_b {
            let mut a = onnx_protobuf::AttributeProto::new();
            a.name = "transB".into();
            a.i = 1;
            n.attribute.push(a);
        }
        n
    }
    let mlp = example_mlp();
    let (
        Layer::Dense {
            weights: w1,
            bias: b1,
        },
        Layer::Dense {
            weights: w2,
            bias: b2,
        },
    ) = (&mlp.layers[0], &mlp.layers[2])
    else {
        unreachable!()
    };
    // Gemm with transB: W1 as [out][in]; MatMul: W2 as [in][out].
    let w1_flat: Vec<f64> = w1.iter().flatten().copied().collect();
    let w2_t: Vec<f64> = (0..8)
        .flat_map(|i| (0..2).map(move |o| (i, o)))
        .map(|(i, o)| w2[o][i])
        .collect();
    let mut g = GraphProto::new();
    let mut x = ValueInfoProto::new();
    x.name = "x".into();
    g.input.push(x);
    g.initializer = vec![
        tensor("w1", &[8, 16], &w1_flat),
        tensor("b1", &[8], b1),
        tensor("w2", &[8, 2], &w2_t),
        tensor("b2", &[2], b2),
    ];
    g.node = vec![
        node("Gemm", &["x", "w1", "b1"], "h", true),
        node("Relu", &["h"], "a", false),
        node("MatMul", &["a", "w2"], "o", false),
        node("Add", &["o", "b2"], "y", false),
    ];
    let mut m = ModelProto::new();
    m.graph = Some(g.clone()).into();
    let bytes = m.write_to_bytes().unwrap();
    let model = model_from_onnx(&bytes, "onnx-mlp", 0.0, 1.0).unwrap();
    assert_eq!(model.input_len, 16);
    assert_eq!(model.layers.len(), 3);
    assert_eq!(model.max_encrypted_layers(), 1);
    let close = |a: &[Vec<f64>], b: &[Vec<f64>]| {
        a.iter()
            .flatten()
            .zip(b.iter().flatten())
            .all(|(x, y)| (x - y).abs() < 1e-6)
    };
    match (&model.layers[0], &model.layers[2]) {
        (Layer::Dense { weights: a, .. }, Layer::Dense { weights: b, bias }) => {
            assert!(close(a, w1) && close(b, w2));
            assert!(bias.iter().zip(b2).all(|(x, y)| (x - y).abs() < 1e-6));
        }
        _ => panic!("dense layers expected"),
    }
    // Malformed bytes, an unsupported op, a broken chain.
    assert!(matches!(
        model_from_onnx(b"\xff\xff garbage", "m", 0.0, 1.0),
        Err(ModelError::Invalid(_))
    ));
    let mut conv = g.clone();
    conv.node[1].op_type = "Conv".into();
    let mut broken = g.clone();
    broken.node[2].input[0] = "elsewhere".into();
    for graph in [conv, broken] {
        let mut m = ModelProto::new();
        m.graph = Some(graph).into();
        let e = model_from_onnx(&m.write_to_bytes().unwrap(), "m", 0.0, 1.0).unwrap_err();
        assert!(e.to_string().contains("node `"), "{e}");
    }
}

/// Hostile ONNX files: dims that multiply to zero or overflow, claims without data, many nodes
/// reusing one initializer, too many dims. Each is a clear error before anything is allocated
/// (a `[0, 2^44]` MatMul weight used to abort the process allocating 2^44 rows).
#[test]
fn onnx_hostile_shapes() {
    use tenebra_functions::onnx::model_from_onnx;
    use tenebra_functions::onnx::testing::matmul_chain as file;
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "[0, 2^44] without data",
            file(&[0, 1 << 44], &[], 1),
            "dim 0",
        ),
        ("[2^44, 0]", file(&[1 << 44, 0], &[], 1), "dim"),
        ("[2^32, 2^32]", file(&[1 << 32, 1 << 32], &[], 1), "dim"),
        ("negative dim", file(&[-1, 4], &[1.0; 4], 1), "dim -1"),
        ("three dims", file(&[1, 1, 1], &[1.0], 1), "3 dims"),
        (
            "claims more than it holds",
            file(&[4, 4], &[1.0; 3], 1),
            "holds 3",
        ),
        (
            "a thousand layers on one weight",
            file(&[2, 2], &[1.0; 4], 1000),
            "nodes",
        ),
        (
            "33 layers",
            file(&[2, 2], &[1.0; 4], 33),
            "at most 32 layers",
        ),
    ];
    for (what, bytes, needle) in cases {
        let e = model_from_onnx(&bytes, "m", 0.0, 1.0).expect_err(what);
        assert!(e.to_string().contains(needle), "{what}: {e}");
    }
    // The same file shapes at sane sizes import.
    model_from_onnx(&file(&[2, 2], &[1.0; 4], 2), "m", 0.0, 1.0).unwrap();

    // Amplification: 200,000 empty nodes are 400 KB of file but ~50 MB parsed (15 million,
    // in 30 MB, took 3.4 GB). Counted on the wire before the parser runs.
    fn len_field(field: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![field << 3 | 2];
        let mut n = payload.len();
        while n >= 0x80 {
            out.push((n as u8 & 0x7f) | 0x80);
            n >>= 7;
        }
        out.push(n as u8);
        out.extend_from_slice(payload);
        out
    }
    let empty_nodes: Vec<u8> = std::iter::repeat_n([0x0a, 0x00], 200_000)
        .flatten()
        .collect();
    let e = model_from_onnx(&len_field(7, &empty_nodes), "m", 0.0, 1.0).unwrap_err();
    assert!(e.to_string().contains("length-delimited fields"), "{e}");
    // Messages nested 20 deep.
    let mut nested = vec![0x08, 0x01];
    for _ in 0..20 {
        nested = len_field(1, &nested);
    }
    let e = model_from_onnx(&len_field(7, &nested), "m", 0.0, 1.0).unwrap_err();
    assert!(e.to_string().contains("nested deeper"), "{e}");
}

/// One split, one name: only the canonical spelling parses (a price or a usage line keyed by
/// the raw string could otherwise be dodged with `+1` or `01`).
#[test]
fn model_function_names_are_canonical() {
    use tenebra_functions::model::{model_function, parse_model_function};
    assert_eq!(
        parse_model_function(&model_function("o", "m", 1, 1)),
        Some(("o", "m", 1, 1))
    );
    for other in [
        "model:o/m/+1/1",
        "model:o/m/01/1",
        "model:o/m/1/01",
        "model:o/m/1/+1",
        "model:o/m/0/1",
        "model:o/m/-1/1",
        "model:o/m/1/1/",
        "model:o/m/1",
        "o/m/1/1",
    ] {
        assert_eq!(parse_model_function(other), None, "{other}");
    }
}
