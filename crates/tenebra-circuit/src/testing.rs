//! Random well-typed circuits and inputs, for property tests here and in the engine.

use crate::ir::{
    BinOp, Circuit, CmpOp, Const, ConstOp, Input, Node, NodeId, Operand, Output, ReduceOp, UnOp,
    FORMAT_VERSION, SCHEME_TFHE,
};
use crate::types::{IoType, ScalarType};
use crate::validate::{validate, Limits, ValidCircuit};

/// A small deterministic generator (SplitMix64), so failures replay from their seed.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    pub fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[self.below(xs.len())]
    }

    /// A random value of `ty`, biased toward edge values.
    pub fn value(&mut self, ty: ScalarType) -> u64 {
        let edges = [0, 1, ty.mask(), ty.mask() >> 1, (ty.mask() >> 1) + 1];
        if self.below(3) == 0 {
            self.pick(&edges) & ty.mask()
        } else {
            self.next_u64() & ty.mask()
        }
    }
}

/// Generates a random valid circuit of about `n_nodes` operations over small integer types
/// (so that an encrypted run stays quick), touching every kind of node across seeds.
pub fn random_circuit(rng: &mut Rng, n_nodes: usize) -> ValidCircuit {
    let int_types = [
        ScalarType::Uint(4),
        ScalarType::Int(4),
        ScalarType::Uint(6),
        ScalarType::Int(6),
    ];
    let ty_a = rng.pick(&int_types);
    let ty_b = rng.pick(&int_types);
    let inputs = vec![
        Input {
            name: "x".into(),
            ty: IoType::vector(ty_a, 3),
        },
        Input {
            name: "y".into(),
            ty: IoType::vector(ty_b, 2),
        },
    ];
    let mut nodes: Vec<Node> = Vec::new();
    let mut types: Vec<ScalarType> = Vec::new();
    for index in 0..3 {
        nodes.push(Node::Input { input: 0, index });
        types.push(ty_a);
    }
    for index in 0..2 {
        nodes.push(Node::Input { input: 1, index });
        types.push(ty_b);
    }
    let mut attempts = 0;
    while nodes.len() < 5 + n_nodes && attempts < 100 * n_nodes {
        attempts += 1;
        let pick_of = |rng: &mut Rng, types: &[ScalarType], want: Option<ScalarType>| {
            let cands: Vec<NodeId> = (0..types.len() as NodeId)
                .filter(|&i| want.is_none_or(|t| types[i as usize] == t))
                .collect();
            (!cands.is_empty()).then(|| {
                // Prefer recent nodes so the graph gets deep, not just wide.
                let k = cands.len();
                let i = if rng.below(2) == 0 {
                    k - 1 - rng.below(k.min(4))
                } else {
                    rng.below(k)
                };
                cands[i]
            })
        };
        let Some(a) = pick_of(rng, &types, None) else {
            continue;
        };
        let ta = types[a as usize];
        let operand = |rng: &mut Rng, types: &[ScalarType]| -> Operand {
            if rng.below(3) == 0 {
                Operand::Const(Const { c: rng.value(ta) })
            } else {
                pick_of(rng, types, Some(ta)).map_or(Operand::Const(Const { c: 1 }), Operand::Node)
            }
        };
        let (node, ty) = match rng.below(12) {
            0 if ta.is_integer() => (
                Node::Unary {
                    op: rng.pick(&[UnOp::Neg, UnOp::Not]),
                    a,
                },
                ta,
            ),
            1 | 2 => {
                let ops = if ta.is_integer() {
                    &[
                        BinOp::Add,
                        BinOp::Sub,
                        BinOp::Mul,
                        BinOp::And,
                        BinOp::Or,
                        BinOp::Xor,
                        BinOp::Min,
                        BinOp::Max,
                    ][..]
                } else {
                    &[BinOp::And, BinOp::Or, BinOp::Xor][..]
                };
                let b = operand(rng, &types);
                let (x, y) = if rng.below(4) == 0 {
                    (b, Operand::Node(a))
                } else {
                    (Operand::Node(a), b)
                };
                (
                    Node::Binary {
                        op: rng.pick(ops),
                        a: x,
                        b: y,
                    },
                    ta,
                )
            }
            3 if ta.is_integer() => {
                let b = operand(rng, &types);
                let (x, y) = if rng.below(4) == 0 {
                    (b, Operand::Node(a))
                } else {
                    (Operand::Node(a), b)
                };
                (
                    Node::Compare {
                        op: rng.pick(&[
                            CmpOp::Eq,
                            CmpOp::Ne,
                            CmpOp::Lt,
                            CmpOp::Le,
                            CmpOp::Gt,
                            CmpOp::Ge,
                        ]),
                        a: x,
                        b: y,
                    },
                    ScalarType::Bool,
                )
            }
            4 if ta.is_integer() => {
                let op = rng.pick(&[ConstOp::Div, ConstOp::Rem, ConstOp::Shl, ConstOp::Shr]);
                let c = match op {
                    ConstOp::Div | ConstOp::Rem => 1 + rng.below(ta.range().1 as usize) as u64,
                    _ => rng.below(usize::from(ta.bits())) as u64,
                };
                (Node::ByConst { op, a, c }, ta)
            }
            5 => {
                let Some(cond) = pick_of(rng, &types, Some(ScalarType::Bool)) else {
                    continue;
                };
                let b = operand(rng, &types);
                (
                    Node::Select {
                        cond,
                        a: Operand::Node(a),
                        b,
                    },
                    ta,
                )
            }
            6 => {
                let to = rng.pick(&[
                    ScalarType::Bool,
                    ScalarType::Uint(4),
                    ScalarType::Int(4),
                    ScalarType::Uint(6),
                    ScalarType::Int(6),
                    ScalarType::Uint(2),
                ]);
                (Node::Cast { a, to }, to)
            }
            7 | 8 if ta.is_integer() => {
                let k = 1 + rng.below(4);
                let args: Vec<NodeId> = (0..k)
                    .filter_map(|_| pick_of(rng, &types, Some(ta)))
                    .collect();
                match rng.below(4) {
                    0 => (
                        Node::Reduce {
                            op: rng.pick(&[ReduceOp::Sum, ReduceOp::Min, ReduceOp::Max]),
                            args,
                        },
                        ta,
                    ),
                    1 => (
                        Node::ArgMax {
                            args,
                            to: ScalarType::Uint(4),
                        },
                        ScalarType::Uint(4),
                    ),
                    _ => {
                        let weights = args.iter().map(|_| rng.value(ta)).collect();
                        (Node::Dot { args, weights }, ta)
                    }
                }
            }
            9 if ta.is_integer() && ta.bits() <= 6 => {
                let to = rng.pick(&[ScalarType::Uint(4), ScalarType::Int(4), ScalarType::Bool]);
                let table = (0..1u64 << ta.bits()).map(|_| rng.value(to)).collect();
                (Node::Lut { a, table, to }, to)
            }
            10 if ta.is_integer() => {
                // A min and a max of the same pair, which the planner fuses.
                let Some(b) = pick_of(rng, &types, Some(ta)) else {
                    continue;
                };
                nodes.push(Node::Binary {
                    op: BinOp::Min,
                    a: Operand::Node(a),
                    b: Operand::Node(b),
                });
                types.push(ta);
                (
                    Node::Binary {
                        op: BinOp::Max,
                        a: Operand::Node(b),
                        b: Operand::Node(a),
                    },
                    ta,
                )
            }
            11 if ta.is_integer() => {
                // A chain of additions, which the planner turns into one sum.
                let b = operand(rng, &types);
                nodes.push(Node::Binary {
                    op: BinOp::Add,
                    a: Operand::Node(a),
                    b,
                });
                types.push(ta);
                let c = operand(rng, &types);
                (
                    Node::Binary {
                        op: BinOp::Add,
                        a: Operand::Node((nodes.len() - 1) as NodeId),
                        b: c,
                    },
                    ta,
                )
            }
            _ => continue,
        };
        nodes.push(node);
        types.push(ty);
    }
    // Outputs: the last few nodes, each as a scalar output.
    let n = nodes.len();
    let outputs = (0..3.min(n))
        .map(|k| {
            let id = (n - 1 - k * (1 + rng.below(2))).min(n - 1) as NodeId;
            Output {
                name: format!("out{k}"),
                ty: IoType::scalar(types[id as usize]),
                nodes: vec![id],
            }
        })
        .collect();
    let circuit = Circuit {
        version: FORMAT_VERSION,
        scheme: SCHEME_TFHE.into(),
        name: "random".into(),
        inputs,
        nodes,
        outputs,
    };
    match validate(circuit, &Limits::default()) {
        Ok(c) => c,
        Err(e) => panic!("the generator made an invalid circuit: {e}"),
    }
}

/// Random input values for a circuit, in signature order.
pub fn random_inputs(rng: &mut Rng, c: &Circuit) -> Vec<u64> {
    c.input_types().into_iter().map(|t| rng.value(t)).collect()
}

/// Circuit JSON documents a hostile tenant would send, for the attack tests here, in the
/// engine and against the server. Each is valid JSON of the circuit format.
pub mod hostile {
    use serde_json::{json, Value};

    fn circuit(input: &str, nodes: Vec<Value>, outputs: Value) -> Value {
        json!({"version":1,"scheme":"tfhe","name":"evil",
            "inputs":[{"name":"x","type":input}], "nodes": nodes, "outputs": outputs})
    }

    /// `not(x)` of one input of type `ty`: node 1.
    fn not_of_input() -> Vec<Value> {
        vec![
            json!({"op":"input","input":0,"index":0}),
            json!({"op":"not","a":0}),
        ]
    }

    /// One `u64` named 4096 times in each of 64 `u64[4096]` outputs: 262,144 ciphertexts
    /// (~4 GiB of result) for a few hundred CU, had outputs no bound.
    pub fn repeated_outputs() -> Value {
        let outputs: Vec<Value> = (0..64)
            .map(|k| json!({"name": format!("o{k}"), "type": "u64[4096]", "nodes": vec![1; 4096]}))
            .collect();
        circuit("u64", not_of_input(), json!(outputs))
    }

    /// One `u64` named `n` times in one `u64[n]` output (`n` of 128 is 4096 blocks).
    pub fn u64_outputs(n: usize) -> Value {
        circuit(
            "u64",
            not_of_input(),
            json!([{"name":"o","type":format!("u64[{n}]"),"nodes":vec![1; n]}]),
        )
    }

    /// `n` `u64` inputs summed (4096 of them are 2.2 GB once expanded, before the sum's
    /// operand copies).
    pub fn wide_sum(n: usize) -> Value {
        let mut nodes: Vec<Value> = (0..n)
            .map(|i| json!({"op":"input","input":0,"index":i}))
            .collect();
        nodes.push(json!({"op":"sum","args":(0..n).collect::<Vec<_>>()}));
        circuit(
            &format!("u64[{n}]"),
            nodes,
            json!([{"name":"o","type":"u64","nodes":[n]}]),
        )
    }

    /// `nodes` (each reading the input of type `ty`) summed 4096 at a time, then the partial
    /// sums summed: every node stays alive until its sum runs.
    fn summed(ty: &str, first: Vec<Value>, many: Vec<Value>) -> Value {
        let start = first.len();
        let n = many.len();
        let mut nodes = first;
        nodes.extend(many);
        let mut partial = Vec::new();
        for chunk in (start..start + n).collect::<Vec<_>>().chunks(4096) {
            nodes.push(json!({"op":"sum","args":chunk}));
            partial.push(nodes.len() - 1);
        }
        nodes.push(json!({"op":"sum","args":partial}));
        let last = nodes.len() - 1;
        let scalar = ty.split('[').next().unwrap_or(ty);
        circuit(
            ty,
            nodes,
            json!([{"name":"o","type":scalar,"nodes":[last]}]),
        )
    }

    /// `n` free `not(x)` of one `u8`, all alive until the sums at the end read them.
    pub fn many_nots(n: usize) -> Value {
        let first = vec![json!({"op":"input","input":0,"index":0})];
        summed(
            "u8",
            first,
            (0..n).map(|_| json!({"op":"not","a":0})).collect(),
        )
    }

    /// `n` copies of `min(a, b)` of one pair of `u2` (and no max), summed.
    pub fn many_mins(n: usize) -> Value {
        let first = vec![
            json!({"op":"input","input":0,"index":0}),
            json!({"op":"input","input":0,"index":1}),
        ];
        summed(
            "u2[2]",
            first,
            (0..n).map(|_| json!({"op":"min","a":0,"b":1})).collect(),
        )
    }
}
