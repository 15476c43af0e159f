//! The BFV backend against the exact plaintext evaluator: layouts, rotations, noise
//! estimate, and hostile keys and inputs.

mod common;

use common::circuit;
use rand::{Rng, SeedableRng};
use tenebra_circuit::bfv::{evaluate_bfv, PNode, ValidBfv};
use tenebra_engine::bfv::{run, BfvKeySet, BfvSecret, KeyNeeds};
use tenebra_engine::EngineError;

fn matrix(rng: &mut impl Rng, m: usize, n: usize, w: i64) -> Vec<Vec<i64>> {
    (0..m)
        .map(|_| (0..n).map(|_| rng.gen_range(-w..=w)).collect())
        .collect()
}

fn vector(rng: &mut impl Rng, n: usize, lo: i64, hi: i64) -> Vec<i64> {
    (0..n).map(|_| rng.gen_range(lo..=hi)).collect()
}

/// Encrypts, runs and decrypts; checks against the exact evaluator and the noise estimate.
fn check(c: &ValidBfv, inputs: &[Vec<i64>]) {
    let plan = c.plan();
    let sk = BfvSecret::generate(plan.degree).unwrap();
    let keys = BfvKeySet::parse(sk.key_set(&KeyNeeds::of(plan)).unwrap()).unwrap();
    let enc = sk.encrypt(&c.signature(), "t", &keys.id(), inputs).unwrap();
    let result = run(&keys, c, &enc).unwrap();
    let got = sk.decrypt(&c.signature(), &result).unwrap();
    let want: Vec<Vec<i64>> = evaluate_bfv(c.circuit(), inputs)
        .unwrap()
        .into_iter()
        .map(|v| v.into_iter().map(|x| x as i64).collect())
        .collect();
    assert_eq!(got, want);
    // The estimate may be optimistic by at most a bit (keys and encryption are random); the
    // planner keeps NOISE_MARGIN_BITS (4) in reserve on top of it.
    let budget = sk.noise_budget(c, &result).unwrap();
    assert!(
        budget >= plan.noise_left_bits - 1.0,
        "measured budget {budget:.1} bits is below the estimate {:.1}",
        plan.noise_left_bits
    );
}

#[test]
fn wide_matrix_784_to_10() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let m = matrix(&mut rng, 10, 784, 127);
    let c = circuit(
        vec![(784, 0, 255)],
        vec![PNode::Input { input: 0 }, PNode::Matvec { a: 0, matrix: m }],
        &[1],
    );
    for x in [vec![0; 784], vec![255; 784], vector(&mut rng, 784, 0, 255)] {
        check(&c, &[x]);
    }
}

#[test]
fn tall_matrix_with_chunked_output_and_edge_values() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(2);
    let m = matrix(&mut rng, 5000, 62, 10);
    let c = circuit(
        vec![(62, -3, 3)],
        vec![PNode::Input { input: 0 }, PNode::Matvec { a: 0, matrix: m }],
        &[1],
    );
    check(&c, &[vec![-3; 62]]);
    check(&c, &[vector(&mut rng, 62, -3, 3)]);
}

#[test]
fn elementwise_square_dot_and_sums() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    let w1 = matrix(&mut rng, 24, 40, 7);
    let w2 = matrix(&mut rng, 3, 24, 3);
    let nodes = vec![
        PNode::Input { input: 0 },
        PNode::Input { input: 1 },
        PNode::Matvec { a: 0, matrix: w1 },
        PNode::AddPlain {
            a: 2,
            plain: vector(&mut rng, 24, -50, 50),
        },
        PNode::Square { a: 3 },
        PNode::Matvec { a: 4, matrix: w2 },
        PNode::Sub { a: 5, b: 1 },
        PNode::MulPlain {
            a: 6,
            plain: vec![-2],
        },
        PNode::Sum { a: 4 },
        PNode::Dot {
            a: 0,
            weights: vector(&mut rng, 40, -9, 9),
        },
        PNode::Add { a: 0, b: 0 },
        PNode::MulPlain {
            a: 10,
            plain: vector(&mut rng, 40, -5, 5),
        },
    ];
    let c = circuit(vec![(40, -7, 7), (3, 0, 100)], nodes, &[7, 8, 9, 11]);
    check(
        &c,
        &[vector(&mut rng, 40, -7, 7), vector(&mut rng, 3, 0, 100)],
    );
    check(&c, &[vec![7; 40], vec![0; 3]]);
}

#[test]
fn long_vectors_sum_across_chunks_and_rows() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(4);
    let c = circuit(
        vec![(5000, 0, 9)],
        vec![
            PNode::Input { input: 0 },
            PNode::Sum { a: 0 },
            PNode::Square { a: 0 },
            PNode::Dot {
                a: 0,
                weights: vector(&mut rng, 5000, -3, 3),
            },
        ],
        &[1, 2, 3],
    );
    check(&c, &[vector(&mut rng, 5000, 0, 9)]);
}

fn small() -> ValidBfv {
    small_with(5)
}

/// A 30 -> 7 product with weights from `seed`.
fn small_with(seed: u64) -> ValidBfv {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    circuit(
        vec![(30, 0, 1)],
        vec![
            PNode::Input { input: 0 },
            PNode::Matvec {
                a: 0,
                matrix: matrix(&mut rng, 7, 30, 3),
            },
        ],
        &[1],
    )
}

#[test]
fn a_key_set_without_the_needed_galois_keys_is_refused() {
    let c = small();
    let sk = BfvSecret::generate(4096).unwrap();
    let mut needs = KeyNeeds::of(c.plan());
    let dropped = *needs.rotations.iter().next().unwrap();
    needs.rotations.remove(&dropped);
    let keys = BfvKeySet::parse(sk.key_set(&needs).unwrap()).unwrap();
    let enc = sk
        .encrypt(&c.signature(), "t", &keys.id(), &[vec![1; 30]])
        .unwrap();
    let e = run(&keys, &c, &enc).unwrap_err();
    assert!(
        matches!(&e, EngineError::BadInput(m) if m.contains("lacks Galois keys for rotations")),
        "{e}"
    );
}

#[test]
fn hostile_key_sets_and_inputs_are_clear_errors() {
    let c = small();
    let sk = BfvSecret::generate(4096).unwrap();
    let needs = KeyNeeds::of(c.plan());
    let good = sk.key_set(&needs).unwrap();
    // Truncated, a header that claims more rotations than the keys hold, empty and garbage.
    for bytes in [
        good[..good.len() / 2].to_vec(),
        String::from_utf8_lossy(&good)
            .replacen("\"rotations\":[", "\"rotations\":[1000,", 1)
            .into_bytes(),
        b"TNBR\x03\x02\x00\x00\x00{}".to_vec(),
        vec![0u8; 100],
    ] {
        match BfvKeySet::parse(bytes) {
            Err(EngineError::BadInput(_)) => {}
            other => panic!("expected a client error, got {other:?}"),
        }
    }
    // Flipped key bytes are structurally valid or refused, never a crash; what they decrypt
    // to is garbage only the owner of the secret key can tell.
    let mut flipped = good.clone();
    let n = flipped.len();
    for x in &mut flipped[n - 5000..n - 4000] {
        *x ^= 0xa5;
    }
    if let Ok(k) = BfvKeySet::parse(flipped) {
        let enc = sk
            .encrypt(&c.signature(), "t", &k.id(), &[vec![1; 30]])
            .unwrap();
        let _ = run(&k, &c, &enc);
    }
    let keys = BfvKeySet::parse(good).unwrap();
    // Wrong-length vector, out-of-range value.
    assert!(sk
        .encrypt(&c.signature(), "t", &keys.id(), &[vec![1; 29]])
        .is_err());
    assert!(sk
        .encrypt(&c.signature(), "t", &keys.id(), &[vec![2; 30]])
        .is_err());
    let enc = sk
        .encrypt(&c.signature(), "t", &keys.id(), &[vec![1; 30]])
        .unwrap();
    // Corrupted ciphertext bytes, truncation, another key set, another circuit.
    let mut corrupt = enc.clone();
    let n = corrupt.len();
    for x in &mut corrupt[n - 300..] {
        *x = 0xff;
    }
    for bad in [corrupt, enc[..enc.len() - 10].to_vec()] {
        match run(&keys, &c, &bad) {
            Err(EngineError::BadInput(_)) => {}
            other => panic!("expected a client error, got {:?}", other.map(|v| v.len())),
        }
    }
    let other_keys = BfvKeySet::parse(sk.key_set(&needs).unwrap()).unwrap();
    assert!(matches!(
        run(&other_keys, &c, &enc),
        Err(EngineError::BadInput(_))
    ));
    let other = small_with(6);
    assert!(matches!(
        run(&keys, &other, &enc),
        Err(EngineError::BadInput(_))
    ));
}

/// A BFV run stops at its next node once cancelled (a tenant's cancel, a lost lease, a
/// shutdown) and reports progress node by node.
#[test]
fn cancellation_stops_a_bfv_run_between_nodes() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let c = small();
    let sk = BfvSecret::generate(c.plan().degree).unwrap();
    let keys = BfvKeySet::parse(sk.key_set(&KeyNeeds::of(c.plan())).unwrap()).unwrap();
    let enc = sk
        .encrypt(&c.signature(), "t", &keys.id(), &[vec![1; 30]])
        .unwrap();
    let cancel = AtomicBool::new(false);
    let seen = AtomicUsize::new(0);
    let progress = |p: tenebra_engine::Progress| {
        seen.store(p.done, Ordering::SeqCst);
        assert_eq!(p.total, 2);
        cancel.store(true, Ordering::SeqCst);
    };
    let opts = tenebra_engine::RunOptions {
        cancel: Some(&cancel),
        progress: Some(&progress),
        ..Default::default()
    };
    match tenebra_engine::bfv::run_with(&keys, &c, &enc, opts) {
        Err(EngineError::Cancelled { done: 1, total: 2 }) => {}
        other => panic!(
            "expected a cancel after node 1 of 2, got {:?}",
            other.map(|r| r.len())
        ),
    }
    assert_eq!(seen.load(Ordering::SeqCst), 1);
    // Not cancelled: the same run finishes.
    let result = run(&keys, &c, &enc).unwrap();
    assert!(!result.is_empty());
}
