//! The BFV memory model against what runs allocate: every byte a run allocates is counted
//! (an instrumented global allocator, so this test is its own binary), and the most held at
//! once, keys decoded included, must stay within the footprint validation checks
//! (`ValidBfv::footprint`, which lets the server refuse a circuit that would not fit before
//! anything runs), and the footprint within twice that.

mod common;

use common::circuit;
use peakmem_alloc::{PeakMemAlloc, PeakMemAllocTrait, INSTRUMENTED_SYSTEM};
use rand::{Rng, SeedableRng};
use tenebra_circuit::bfv::{PNode, ValidBfv};
use tenebra_engine::bfv::{run, BfvKeySet, BfvSecret, KeyNeeds};

#[global_allocator]
static ALLOCATOR: &PeakMemAlloc<std::alloc::System> = &INSTRUMENTED_SYSTEM;

fn values(rng: &mut impl Rng, n: usize, w: i64) -> Vec<i64> {
    (0..n).map(|_| rng.gen_range(-w..=w)).collect()
}

/// The most bytes held at once while `c` runs (keys decoded, plain operands encoded and
/// every value made during the run), beyond what was held before it.
fn measured_peak(c: &ValidBfv, inputs: &[Vec<i64>]) -> usize {
    let sk = BfvSecret::generate(c.plan().degree).unwrap();
    let keys = BfvKeySet::parse(sk.key_set(&KeyNeeds::of(c.plan())).unwrap()).unwrap();
    let input = sk.encrypt(&c.signature(), "t", &keys.id(), inputs).unwrap();
    ALLOCATOR.reset_peak_memory();
    let result = run(&keys, c, &input).unwrap();
    let peak = ALLOCATOR.get_peak_memory();
    drop(result);
    peak
}

#[test]
fn runs_hold_no_more_than_the_footprint_says() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    let cases = [
        (
            "matvec 64x200, square, matvec 10x64, sum",
            circuit(
                vec![(200, -7, 7)],
                vec![
                    PNode::Input { input: 0 },
                    PNode::Matvec {
                        a: 0,
                        matrix: (0..64).map(|_| values(&mut rng, 200, 3)).collect(),
                    },
                    PNode::Square { a: 1 },
                    PNode::Matvec {
                        a: 2,
                        matrix: (0..10).map(|_| values(&mut rng, 64, 3)).collect(),
                    },
                    PNode::Sum { a: 3 },
                ],
                &[3, 4],
            ),
            vec![values(&mut rng, 200, 7)],
        ),
        (
            "5000 values: sum, square, dot, times a vector",
            circuit(
                vec![(5000, -9, 9)],
                vec![
                    PNode::Input { input: 0 },
                    PNode::Sum { a: 0 },
                    PNode::Square { a: 0 },
                    PNode::Dot {
                        a: 0,
                        weights: values(&mut rng, 5000, 3),
                    },
                    PNode::MulPlain {
                        a: 0,
                        plain: values(&mut rng, 5000, 3),
                    },
                ],
                &[1, 2, 3, 4],
            ),
            vec![values(&mut rng, 5000, 9)],
        ),
    ];
    for (what, c, inputs) in cases {
        let model = c.footprint();
        let peak = measured_peak(&c, &inputs) as u64;
        println!(
            "{what}: N={} measured peak {peak} B, footprint {} B ({model:?})",
            c.plan().degree,
            model.working_set_bytes
        );
        assert!(
            peak <= model.working_set_bytes,
            "{what}: a run held {peak} bytes, over its footprint of {}",
            model.working_set_bytes
        );
        // An upper bound, and a useful one: not so loose that it refuses what would fit.
        assert!(
            model.working_set_bytes <= 2 * peak,
            "{what}: the footprint {} is over twice what a run held ({peak})",
            model.working_set_bytes
        );
    }
}
