//! Every built-in end to end on real ciphertexts: client encrypt, server evaluate (no client
//! key), client decrypt, compared with the plaintext reference.

use serde_json::{json, Value};
use tenebra_circuit::testing::Rng;
use tenebra_client::{builtin_circuit, decrypt, encrypt};
use tenebra_engine::test_support::{client_keys, server_keys};
use tenebra_engine::{evaluate_bundle, EngineError, RunOptions};
use tenebra_functions::find;

fn round_trip(name: &str, input: Value) {
    let f = find(name).unwrap();
    let enc = encrypt(client_keys(), f, &input).unwrap();
    let res = evaluate_bundle(server_keys(), &enc, builtin_circuit, RunOptions::default()).unwrap();
    let got = decrypt(client_keys(), f, &res).unwrap();
    assert_eq!(got, f.reference(&input).unwrap(), "{name} on {input}");
}

const NIGHT_5: &str = "[[0,0,120],[3,120,150],[0,150,210],[4,210,240],[0,240,300]]";

#[test]
fn weight_stats_encrypted() {
    round_trip(
        "weight_stats",
        json!({"weights": [680, 650, 690, 700, 705]}),
    );
    round_trip("weight_stats", json!({"weights": [0]}));
    // Extremes; the sum (196,604) is past 16 bits.
    round_trip("weight_stats", json!({"weights": [65535, 65535, 65534]}));
    let mut rng = Rng::new(5);
    let w: Vec<u64> = (0..6)
        .map(|_| rng.value(tenebra_circuit::ScalarType::Uint(16)))
        .collect();
    round_trip("weight_stats", json!({"weights": w}));
}

#[test]
fn sleep_quality_encrypted() {
    let night: Value = serde_json::from_str(NIGHT_5).unwrap();
    round_trip("sleep_quality", json!({"records": night}));
    // Reversed interval, no stage-0 record.
    round_trip(
        "sleep_quality",
        json!({"records": [[3, 100, 50], [4, 10, 500]]}),
    );
    // Sleep before bed, undefined stage.
    round_trip(
        "sleep_quality",
        json!({"records": [[5, 0, 400], [0, 100, 500], [9, 1, 2]]}),
    );
}

#[test]
fn mismatches_are_clear_errors() {
    let ws = find("weight_stats").unwrap();
    let sq = find("sleep_quality").unwrap();
    let enc = encrypt(client_keys(), ws, &json!({"weights": [1, 2]})).unwrap();
    // Evaluating as the wrong function.
    let resolve = |h: &tenebra_engine::bundle::Header| {
        sq.circuit(h.size)
            .map_err(|e| EngineError::BadInput(e.to_string()))
    };
    let e = evaluate_bundle(server_keys(), &enc, resolve, RunOptions::default()).unwrap_err();
    assert!(e.to_string().contains("another version"), "{e}");
    // Decrypting an input file, or a result as the wrong function.
    assert!(decrypt(client_keys(), ws, &enc)
        .unwrap_err()
        .to_string()
        .contains("encrypted input"));
    assert!(tenebra_client::input_header(&enc, sq)
        .unwrap_err()
        .to_string()
        .contains("`weight_stats`"));
    // Truncated bundle.
    assert!(decrypt(client_keys(), ws, &enc[..5]).is_err());
}

const NIGHT_17: &str = "[[0,0,210],[0,240,570],[2,0,30],[5,30,60],[3,60,90],[4,90,120],[3,120,150],[5,150,180],[2,180,240],[3,240,300],[5,300,330],[4,330,390],[2,390,420],[5,420,450],[4,450,510],[3,510,540],[5,540,570]]";

#[test]
fn public_vectors_at_full_size() {
    // The 17-record public night, and 100 weights of 70 kg in 0.1 kg: the sum (70,000) is
    // past 16 bits and must not wrap.
    let night: Value = serde_json::from_str(NIGHT_17).unwrap();
    round_trip("sleep_quality", json!({"records": night}));
    round_trip("weight_stats", json!({"weights": vec![700; 100]}));
}

/// `ad_targeting` end to end on real BFV ciphertexts: the client encrypts into a fresh key
/// directory, the server side runs with the uploaded key set only, and the decrypted scores
/// equal the plaintext dot products exactly (all-zero, all-one, random and single-feature
/// profiles), with the top 5 the reference ranks.
#[test]
fn ad_targeting_encrypted() {
    use tenebra_client::bfv::{self, BfvKeys};
    let f = tenebra_functions::find_bfv("ad_targeting").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng::new(11);
    let random: Vec<u64> = (0..62)
        .map(|_| rng.value(tenebra_circuit::ScalarType::Bool))
        .collect();
    let mut one = vec![0u64; 62];
    one[61] = 1;
    for profile in [vec![0u64; 62], vec![1; 62], random, one] {
        let input = json!({ "profile": profile });
        let enc = bfv::encrypt(dir.path(), f, &input).unwrap();
        let key_set = BfvKeys::load_key_set(dir.path(), f.circuit()).unwrap();
        let res = tenebra_engine::bfv::run(&key_set, f.circuit(), &enc).unwrap();
        let got = bfv::decrypt(dir.path(), f, &res).unwrap();
        let want = f.reference(&input).unwrap();
        assert_eq!(got, want, "profile {profile:?}");
        assert_eq!(got, f.simulate(&input).unwrap());
        assert_eq!(got["scores"].as_array().unwrap().len(), 4954);
    }
    // All ones reaches the largest row sum, 128.
    let all = f.reference(&json!({"profile": vec![1; 62]})).unwrap();
    let max = all["scores"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_i64)
        .max();
    assert_eq!(max, Some(128));
    // Hostile: a wrong-length or non-binary profile is refused before encrypting.
    for bad in [
        json!({"profile": vec![1; 61]}),
        json!({"profile": vec![2; 62]}),
        json!({}),
    ] {
        assert!(bfv::encrypt(dir.path(), f, &bad).is_err(), "{bad}");
    }
}

/// Encrypted inference on the example models: the whole MLP and every allowed split decrypt
/// to the exact plaintext evaluation of the quantized first k layers, within the stated
/// precision of float inference; the logistic regression runs its dense layer encrypted and
/// the client finishes with the sigmoid.
#[test]
fn model_inference_encrypted_whole_and_split() {
    use tenebra_circuit::bfv::evaluate_bfv;
    use tenebra_client::bfv::{decrypt_model_output, encrypt_model_input, BfvKeys};
    use tenebra_functions::model::{example_data, example_logistic, example_mlp};
    let dir = tempfile::tempdir().unwrap();
    let (test, _) = example_data(3, 42);
    for model in [example_mlp(), example_logistic()] {
        for k in 1..=model.max_encrypted_layers() {
            let mut compiled = model.compile(k).unwrap();
            let precision = compiled.measure(&model, &example_data(100, 7).0).unwrap();
            for x in &test {
                let enc = encrypt_model_input(dir.path(), &model, &compiled, x).unwrap();
                let keys = BfvKeys::load_key_set(dir.path(), &compiled.circuit).unwrap();
                let res = tenebra_engine::bfv::run(&keys, &compiled.circuit, &enc).unwrap();
                let (ints, floats) = decrypt_model_output(dir.path(), &compiled, &res).unwrap();
                let q = model.quantize_input(x).unwrap();
                let exact: Vec<i64> = evaluate_bfv(compiled.circuit.circuit(), &[q]).unwrap()[0]
                    .iter()
                    .map(|v| *v as i64)
                    .collect();
                assert_eq!(ints, exact, "{} k={k}", model.name);
                let float = model.forward_to(k, x);
                for (a, b) in floats.iter().zip(&float) {
                    assert!(
                        (a - b).abs() <= precision * 1.5 + 1e-9,
                        "{} k={k}: {a} vs {b}",
                        model.name
                    );
                }
                // The client finishes the remaining layers in plaintext.
                let done = model.forward_from(k, &floats);
                assert_eq!(done.len(), model.forward_from(0, x).len());
            }
        }
    }
}
