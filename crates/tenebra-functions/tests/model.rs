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
