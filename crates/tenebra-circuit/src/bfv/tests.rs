use super::noise::is_prime;
use super::*;
use crate::ir::FORMAT_VERSION;

fn linear(n: usize, m: usize) -> BfvCircuit {
    BfvCircuit {
        version: FORMAT_VERSION,
        scheme: SCHEME_BFV.into(),
        name: "lin".into(),
        inputs: vec![VecInput {
            name: "x".into(),
            len: n as u32,
            min: 0,
            max: 15,
        }],
        nodes: vec![
            PNode::Input { input: 0 },
            PNode::Matvec {
                a: 0,
                matrix: (0..m)
                    .map(|i| (0..n).map(|j| ((i * 7 + j * 3) % 15) as i64 - 7).collect())
                    .collect(),
            },
        ],
        outputs: vec![VecOutput {
            name: "y".into(),
            node: 1,
        }],
    }
}

#[test]
fn plain_modulus_is_prime_batching_friendly_and_large_enough() {
    for (bound, degree) in [(128, 4096), (1 << 20, 4096), (1 << 30, 8192), (0, 8192)] {
        let t = plain_modulus_for(bound, degree).unwrap();
        assert!(is_prime(t));
        assert_eq!(t % (2 * degree as u64), 1);
        assert!(i128::from(t) > 2 * bound);
    }
    assert!(plain_modulus_for(1 << 62, 4096).is_none());
    assert!(is_prime(65537) && !is_prime(65535) && is_prime(0xffffee001));
}

#[test]
fn wide_matrix_folds_and_tall_matrix_does_not() {
    let wide = validate_bfv(linear(784, 10), &BfvLimits::default()).unwrap();
    let mv = wide.plan().nodes[1].matvec.clone().unwrap();
    assert_eq!(wide.plan().degree, 4096);
    assert_eq!((mv.diagonals, mv.period_in), (16, 1024));
    assert_eq!(mv.fold, vec![16, 32, 64, 128, 256, 512]);
    let tall = validate_bfv(linear(62, 4954), &BfvLimits::default()).unwrap();
    let node = &tall.plan().nodes[1];
    assert_eq!(node.layout, Layout::Chunked { chunks: 2 });
    assert_eq!(node.matvec.as_ref().unwrap().fold, Vec::<usize>::new());
    assert_eq!(node.matvec.as_ref().unwrap().diagonals, 64);
    // Every rotation the plan uses is listed for key generation.
    assert!(tall.plan().rotations.iter().all(|r| *r < 64));
}

#[test]
fn too_deep_circuits_are_refused_with_a_reason() {
    let mut c = linear(16, 16);
    for _ in 0..6 {
        let last = c.nodes.len() as u32 - 1;
        c.nodes.push(PNode::Square { a: last });
    }
    c.outputs[0].node = c.nodes.len() as u32 - 1;
    let e = validate_bfv(c, &BfvLimits::default()).unwrap_err();
    assert!(matches!(e, BfvError::TooDeep(_)), "{e}");
}

#[test]
fn hostile_structure_is_refused() {
    let mut c = linear(8, 4);
    c.nodes[1] = PNode::Matvec {
        a: 0,
        matrix: vec![vec![1; 7]],
    };
    assert!(validate_bfv(c, &BfvLimits::default()).is_err());
    let mut c = linear(8, 4);
    c.nodes.push(PNode::Add { a: 5, b: 0 });
    assert!(validate_bfv(c, &BfvLimits::default()).is_err());
    let bad = br#"{"version":1,"scheme":"bfv","name":"x","inputs":[],"nodes":[{"op":"rm"}],"outputs":[]}"#;
    assert!(matches!(
        parse_bfv(bad, &BfvLimits::default()),
        Err(BfvError::Json(_))
    ));
}

#[test]
fn evaluation_is_exact() {
    let c = linear(5, 3);
    let out = evaluate_bfv(&c, &[vec![1, 2, 3, 4, 15]]).unwrap();
    let PNode::Matvec { matrix, .. } = &c.nodes[1] else {
        unreachable!()
    };
    let want: Vec<i128> = matrix
        .iter()
        .map(|r| {
            r.iter()
                .zip([1, 2, 3, 4, 15])
                .map(|(w, x)| i128::from(*w * x))
                .sum()
        })
        .collect();
    assert_eq!(out, vec![want]);
    assert!(evaluate_bfv(&c, &[vec![1, 2, 3, 4, 16]]).is_err());
}

#[test]
fn the_memory_a_run_needs_is_bounded_at_validation() {
    // 784 -> 10 at N=4096: 16 diagonals in 16 baby steps of one giant step.
    let c = validate_bfv(linear(784, 10), &BfvLimits::default()).unwrap();
    let f = c.footprint();
    let ct = 2 * 4096 * 3 * 8;
    assert_eq!(f.ciphertext_bytes, ct);
    assert_eq!(f.values_bytes, 2 * ct, "the input node and the product");
    assert_eq!(f.plaintext_bytes, 16 * 4096 * 4 * 8);
    assert_eq!(
        f.working_set_bytes,
        f.values_bytes + f.plaintext_bytes + f.keys_bytes + f.scratch_bytes
    );
    // A worker that gives one run less than that refuses the circuit, with the numbers.
    let limits = BfvLimits {
        max_working_set_bytes: f.working_set_bytes - 1,
        ..BfvLimits::default()
    };
    let e = validate_bfv(linear(784, 10), &limits).unwrap_err();
    assert_eq!(
        e,
        BfvError::TooLarge {
            needed: f.working_set_bytes,
            limit: f.working_set_bytes - 1
        }
    );
    assert!(e.to_string().contains("memory one run needs"), "{e}");
}
