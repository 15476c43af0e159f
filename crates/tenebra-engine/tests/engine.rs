//! The executor against the plaintext evaluator, on real tfhe-rs ciphertexts.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use tenebra_circuit::builder::{max_of, min_of, sum, Builder};
use tenebra_circuit::eval::evaluate as plain;
use tenebra_circuit::testing::{random_circuit, random_inputs, Rng};
use tenebra_circuit::ScalarType::{Bool, Int, Uint};
use tenebra_circuit::ValidCircuit;
use tenebra_engine::bundle::{encrypt_values, open_results};
use tenebra_engine::test_support::{client_keys, server_keys};
use tenebra_engine::{evaluate, output_types, EngineError, RunOptions};

fn run_encrypted(c: &ValidCircuit, inputs: &[u64]) -> Result<Vec<u64>, EngineError> {
    let payload = encrypt_values(client_keys(), &c.input_types(), inputs)?;
    let result = evaluate(server_keys(), c, &payload, RunOptions::default())?;
    open_results(client_keys(), &result, &output_types(c))
}

#[test]
fn random_circuits_match_the_plaintext_evaluator() {
    // Every op appears across these seeds (the generator cycles through all node kinds).
    let mut rng = Rng::new(2026);
    for round in 0..12 {
        let c = random_circuit(&mut rng, 6);
        let inputs = random_inputs(&mut rng, &c);
        let want: Vec<u64> = plain(&c, &inputs).into_iter().flatten().collect();
        let got = run_encrypted(&c, &inputs).unwrap();
        assert_eq!(
            got,
            want,
            "round {round}, inputs {inputs:?}, circuit {}",
            String::from_utf8_lossy(&c.canonical_json())
        );
    }
}

#[test]
fn every_kind_of_value_round_trips() {
    let b = Builder::new("kinds");
    let flag = b.input("flag", Bool);
    let xs = b.input_vec("xs", Int(8), 3);
    let ys = b.input_vec("ys", Uint(10), 3);
    b.output("not_flag", &!&flag);
    b.output("min", &min_of(&xs));
    b.output("max", &max_of(&xs));
    b.output("sum", &sum(&ys));
    b.output("pick", &flag.select(&ys[0], 1000));
    b.output_vec("neg", &xs.iter().map(|x| -x).collect::<Vec<_>>());
    let c = b.build().unwrap();
    let i8b = |v: i64| (v as u64) & 0xff;
    for inputs in [
        vec![1, i8b(-128), i8b(127), i8b(0), 1023, 1023, 1],
        vec![0, i8b(5), i8b(-5), i8b(-128), 0, 512, 3],
    ] {
        let want: Vec<u64> = plain(&c, &inputs).into_iter().flatten().collect();
        assert_eq!(run_encrypted(&c, &inputs).unwrap(), want);
    }
}

#[test]
fn cancellation_stops_between_steps_and_progress_is_reported() {
    let b = Builder::new("chain");
    let x = b.input("x", Uint(4));
    let mut acc = x.clone();
    for _ in 0..6 {
        acc = &acc * &x;
    }
    b.output("y", &acc);
    let c = b.build().unwrap();
    let payload = encrypt_values(client_keys(), &c.input_types(), &[3]).unwrap();
    let cancel = AtomicBool::new(false);
    let seen = AtomicUsize::new(0);
    let progress = |p: tenebra_engine::Progress| {
        seen.store(p.done, Ordering::SeqCst);
        if p.done == 2 {
            cancel.store(true, Ordering::SeqCst);
        }
    };
    let opts = RunOptions {
        cancel: Some(&cancel),
        progress: Some(&progress),
        ..RunOptions::default()
    };
    match evaluate(server_keys(), &c, &payload, opts) {
        Err(EngineError::Cancelled { done: 2, total: 6 }) => {}
        other => panic!(
            "expected a cancellation after 2 of 6 steps, got {:?}",
            other.map(|v| v.len())
        ),
    }
    assert_eq!(seen.load(Ordering::SeqCst), 2);
}

#[test]
fn hostile_payloads_are_errors_not_panics() {
    let b = Builder::new("one");
    let xs = b.input_vec("xs", Uint(16), 2);
    b.output("s", &(&xs[0] + &xs[1]));
    let c = b.build().unwrap();
    let payload = encrypt_values(client_keys(), &c.input_types(), &[1, 2]).unwrap();
    let keys = server_keys();
    let opts = RunOptions::default();
    // Truncated, garbage, empty.
    for bad in [
        &payload[..payload.len() / 2],
        &payload[..10],
        b"garbage".as_slice(),
        b"",
    ] {
        assert!(matches!(
            evaluate(keys, &c, bad, opts),
            Err(EngineError::BadInput(_))
        ));
    }
    // Flipped bytes in the middle: rejected or computed, never a panic.
    let mut flipped = payload.clone();
    let mid = flipped.len() / 3;
    flipped[mid] ^= 0xff;
    let _ = evaluate(keys, &c, &flipped, opts);
    // Right count, wrong widths: encrypted for another signature.
    let other = encrypt_values(client_keys(), &[Uint(8), Uint(8)], &[1, 2]).unwrap();
    let e = evaluate(keys, &c, &other, opts).unwrap_err();
    assert!(e.to_string().contains("is not a u16"), "{e}");
    // Wrong count.
    let three = encrypt_values(client_keys(), &[Uint(16); 3], &[1, 2, 3]).unwrap();
    assert!(matches!(
        evaluate(keys, &c, &three, opts),
        Err(EngineError::BadInput(_))
    ));
    // A result that is not one: decrypting garbage fails cleanly.
    assert!(open_results(client_keys(), b"nope", &[Uint(16)]).is_err());
}

#[test]
fn keys_with_other_parameters_are_rejected() {
    use tfhe::safe_serialization::safe_serialize;
    use tfhe::shortint::parameters::v1_8::V1_8_PARAM_MESSAGE_1_CARRY_1_KS_PBS_TUNIFORM_2M128 as P11;
    let config = tfhe::ConfigBuilder::with_custom_parameters(P11).build();
    let ck = tfhe::ClientKey::generate(config);
    let sk = tfhe::CompressedServerKey::new(&ck);
    let pk = tfhe::CompactPublicKey::new(&ck);
    let (mut skb, mut pkb) = (Vec::new(), Vec::new());
    safe_serialize(&sk, &mut skb, 1 << 30).unwrap();
    safe_serialize(&pk, &mut pkb, 1 << 30).unwrap();
    let good_pk =
        std::fs::read(tenebra_engine::test_support::test_key_dir().join("public.key")).unwrap();
    let e = tenebra_engine::ServerKeys::from_bytes(&skb, &good_pk).unwrap_err();
    assert!(
        e.to_string().contains("server.key is not a valid key"),
        "{e}"
    );
    let good_sk =
        std::fs::read(tenebra_engine::test_support::test_key_dir().join("server.key")).unwrap();
    let e = tenebra_engine::ServerKeys::from_bytes(&good_sk, &pkb).unwrap_err();
    assert!(
        e.to_string().contains("public.key is not a valid key"),
        "{e}"
    );
    // Truncated and garbage keys.
    assert!(tenebra_engine::ServerKeys::from_bytes(&good_sk[..1000], &good_pk).is_err());
    assert!(tenebra_engine::ServerKeys::from_bytes(b"xx", b"yy").is_err());
}

/// The executor checks each step's memory (results and temporaries) against the run's cap
/// before it allocates: a cap below what the plan needs fails the run cleanly, and the
/// default cap (from the plan's footprint) runs it to the exact result, with an output
/// element named several times decrypting to the same value each time.
#[test]
fn memory_cap_is_checked_before_each_step() {
    let b = Builder::new("caps");
    let xs = b.input_vec("xs", Uint(8), 2);
    let s = &xs[0] * &xs[1];
    b.output_vec("o", &[s.clone(), s.clone(), s]);
    let c = b.build().unwrap();
    let fp = c.footprint();
    assert_eq!(fp.output_blocks, 12);
    let payload = encrypt_values(client_keys(), &c.input_types(), &[7, 9]).unwrap();
    let tight = RunOptions {
        max_bytes: Some(fp.working_set_bytes / 4),
        ..RunOptions::default()
    };
    match evaluate(server_keys(), &c, &payload, tight) {
        Err(EngineError::TooLarge(m)) => assert!(m.contains("over its cap"), "{m}"),
        other => panic!("expected TooLarge, got {:?}", other.map(|v| v.len())),
    }
    let result = evaluate(server_keys(), &c, &payload, RunOptions::default()).unwrap();
    let values = open_results(client_keys(), &result, &output_types(&c)).unwrap();
    assert_eq!(values, vec![63, 63, 63]);
    // The footprint's block size is not below what a result block really takes.
    let per_block = result.len() as u64 / fp.output_blocks;
    assert!(
        per_block <= tenebra_circuit::footprint::BLOCK_BYTES,
        "a result block takes {per_block} bytes"
    );
}
