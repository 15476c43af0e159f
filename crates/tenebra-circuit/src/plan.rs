//! Lowering a validated circuit to an execution plan, with the rewrites that pay under FHE.
//!
//! - no work on nodes no output reads (dead-code elimination);
//! - chains and trees of additions become one multi-operand sum (tfhe-rs adds many radix
//!   integers with one carry propagation instead of one per `+`);
//! - `min(a, b)` and `max(a, b)` of the same pair share one comparison, and a min and a max
//!   reduction over the same values use the 3n/2-comparison algorithm;
//! - reductions become balanced trees, so independent comparisons run side by side;
//! - plain constants stay scalar operands (never trivially encrypted).
//!
//! The plan is what the executor runs and what the cost model prices.

use std::collections::HashMap;

use crate::ir::{BinOp, CmpOp, ConstOp, Node, NodeId, Operand, ReduceOp, UnOp};
use crate::types::ScalarType;
use crate::validate::ValidCircuit;

/// Index of a value in a plan.
pub type ValueId = u32;

/// An argument of a plan step: a value or a plain constant (a bit pattern of the step's type).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Arg {
    Val(ValueId),
    Const(u64),
}

impl Arg {
    pub fn val(self) -> Option<ValueId> {
        match self {
            Arg::Val(v) => Some(v),
            Arg::Const(_) => None,
        }
    }
}

/// One operation of a plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlanOp {
    Unary {
        op: UnOp,
        a: ValueId,
    },
    /// At least one side is a value.
    Binary {
        op: BinOp,
        a: Arg,
        b: Arg,
    },
    /// `ty` is the operands' type; at least one side is a value.
    Compare {
        op: CmpOp,
        a: Arg,
        b: Arg,
        ty: ScalarType,
    },
    ByConst {
        op: ConstOp,
        a: ValueId,
        c: u64,
    },
    /// Either side may be a constant (argmax selects between constant indices).
    Select {
        cond: ValueId,
        a: Arg,
        b: Arg,
    },
    Cast {
        a: ValueId,
        from: ScalarType,
    },
    /// Multi-operand wrapping sum plus a constant; at least two values.
    Sum {
        args: Vec<ValueId>,
        constant: u64,
    },
    /// One comparison, two results: `outs[0] = min(a, b)`, `outs[1] = max(a, b)`.
    MinMax {
        a: ValueId,
        b: ValueId,
    },
    Dot {
        args: Vec<ValueId>,
        weights: Vec<u64>,
    },
    Lut {
        a: ValueId,
        from: ScalarType,
        table: Vec<u64>,
    },
    /// A public constant, trivially encrypted (argmax of a single value is index 0).
    Constant {
        c: u64,
    },
}

/// A plan step: an operation and the values it produces (all of type `ty`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub op: PlanOp,
    pub ty: ScalarType,
    pub outs: Vec<ValueId>,
}

impl Step {
    /// Values this step reads (with repetition).
    pub fn deps(&self) -> Vec<ValueId> {
        match &self.op {
            PlanOp::Unary { a, .. }
            | PlanOp::ByConst { a, .. }
            | PlanOp::Cast { a, .. }
            | PlanOp::Lut { a, .. } => vec![*a],
            PlanOp::Binary { a, b, .. } | PlanOp::Compare { a, b, .. } => {
                a.val().into_iter().chain(b.val()).collect()
            }
            PlanOp::Select { cond, a, b } => std::iter::once(*cond)
                .chain(a.val())
                .chain(b.val())
                .collect(),
            PlanOp::MinMax { a, b } => vec![*a, *b],
            PlanOp::Constant { .. } => vec![],
            PlanOp::Sum { args, .. } | PlanOp::Dot { args, .. } => args.clone(),
        }
    }
}

/// An optimized, executable form of a circuit.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Steps in a valid sequential order; independent steps may run in parallel.
    pub steps: Vec<Step>,
    /// Number of values (inputs and step results).
    pub n_values: usize,
    /// Type of every value.
    pub value_types: Vec<ScalarType>,
    /// For each flattened input element, the value it provides (`None`: nothing reads it).
    pub inputs: Vec<Option<ValueId>>,
    /// For each output, the values of its elements.
    pub outputs: Vec<Vec<ValueId>>,
}

impl Plan {
    /// How many times each value is read by steps and outputs: when a count reaches zero the
    /// executor frees the value.
    pub fn use_counts(&self) -> Vec<u32> {
        let mut uses = vec![0u32; self.n_values];
        for s in &self.steps {
            for d in s.deps() {
                uses[d as usize] += 1;
            }
        }
        for o in self.outputs.iter().flatten() {
            uses[*o as usize] += 1;
        }
        uses
    }
}

struct Lowering {
    steps: Vec<Step>,
    value_types: Vec<ScalarType>,
    vmap: Vec<Option<ValueId>>,
    /// Terms of additions absorbed into the sum that consumes them.
    pending: HashMap<NodeId, (Vec<ValueId>, u64)>,
}

impl Lowering {
    fn new_value(&mut self, ty: ScalarType) -> ValueId {
        self.value_types.push(ty);
        (self.value_types.len() - 1) as ValueId
    }

    fn emit(&mut self, op: PlanOp, ty: ScalarType, n_outs: usize) -> Vec<ValueId> {
        let outs: Vec<ValueId> = (0..n_outs).map(|_| self.new_value(ty)).collect();
        self.steps.push(Step {
            op,
            ty,
            outs: outs.clone(),
        });
        outs
    }

    fn emit1(&mut self, op: PlanOp, ty: ScalarType) -> ValueId {
        self.emit(op, ty, 1)[0]
    }

    fn val(&self, n: NodeId) -> ValueId {
        // Nodes are lowered in order and every live node's deps are live, so this is set.
        self.vmap[n as usize].unwrap_or(ValueId::MAX)
    }

    fn arg(&self, o: Operand) -> Arg {
        match o {
            Operand::Node(n) => Arg::Val(self.val(n)),
            Operand::Const(k) => Arg::Const(k.c),
        }
    }

    /// Balanced tree of a binary min or max.
    fn tree(&mut self, mut vals: Vec<ValueId>, op: BinOp, ty: ScalarType) -> ValueId {
        while vals.len() > 1 {
            let mut next = Vec::with_capacity(vals.len().div_ceil(2));
            for pair in vals.chunks(2) {
                next.push(match pair {
                    [a, b] => self.emit1(
                        PlanOp::Binary {
                            op,
                            a: Arg::Val(*a),
                            b: Arg::Val(*b),
                        },
                        ty,
                    ),
                    [a] => *a,
                    _ => unreachable!("chunks(2)"),
                });
            }
            vals = next;
        }
        vals[0]
    }

    /// Min and max of the same values with about 3n/2 comparisons.
    fn min_max_tree(&mut self, vals: &[ValueId], ty: ScalarType) -> (ValueId, ValueId) {
        let (mut mins, mut maxs) = (Vec::new(), Vec::new());
        for pair in vals.chunks(2) {
            match pair {
                [a, b] => {
                    let o = self.emit(PlanOp::MinMax { a: *a, b: *b }, ty, 2);
                    mins.push(o[0]);
                    maxs.push(o[1]);
                }
                [a] => {
                    mins.push(*a);
                    maxs.push(*a);
                }
                _ => unreachable!("chunks(2)"),
            }
        }
        (
            self.tree(mins, BinOp::Min, ty),
            self.tree(maxs, BinOp::Max, ty),
        )
    }

    fn argmax(&mut self, vals: &[ValueId], ty: ScalarType, to: ScalarType) -> ValueId {
        let mut items: Vec<(ValueId, Arg)> = vals
            .iter()
            .enumerate()
            .map(|(i, &v)| (v, Arg::Const(i as u64)))
            .collect();
        while items.len() > 1 {
            let mut next = Vec::with_capacity(items.len().div_ceil(2));
            for pair in items.chunks(2) {
                next.push(match pair {
                    [(lv, li), (rv, ri)] => {
                        // Right wins only if strictly greater: ties keep the lower index.
                        let gt = self.emit1(
                            PlanOp::Compare {
                                op: CmpOp::Gt,
                                a: Arg::Val(*rv),
                                b: Arg::Val(*lv),
                                ty,
                            },
                            ScalarType::Bool,
                        );
                        let v = self.emit1(
                            PlanOp::Select {
                                cond: gt,
                                a: Arg::Val(*rv),
                                b: Arg::Val(*lv),
                            },
                            ty,
                        );
                        let i = self.emit1(
                            PlanOp::Select {
                                cond: gt,
                                a: *ri,
                                b: *li,
                            },
                            to,
                        );
                        (v, Arg::Val(i))
                    }
                    [one] => *one,
                    _ => unreachable!("chunks(2)"),
                });
            }
            items = next;
        }
        match items[0].1 {
            Arg::Val(i) => i,
            Arg::Const(c) => self.emit1(PlanOp::Constant { c }, to),
        }
    }

    /// Collects the terms of an addition operand, absorbing pending sums.
    fn sum_terms(&mut self, o: Operand, ty: ScalarType, vals: &mut Vec<ValueId>, k: &mut u64) {
        match o {
            Operand::Const(c) => *k = k.wrapping_add(c.c) & ty.mask(),
            Operand::Node(n) => {
                if let Some((v, c)) = self.pending.remove(&n) {
                    vals.extend(v);
                    *k = k.wrapping_add(c) & ty.mask();
                } else {
                    vals.push(self.val(n));
                }
            }
        }
    }

    fn emit_sum(&mut self, mut vals: Vec<ValueId>, k: u64, ty: ScalarType) -> ValueId {
        match vals.len() {
            0 => unreachable!("a sum has at least one value operand"),
            1 if k == 0 => vals[0],
            1 => self.emit1(
                PlanOp::Binary {
                    op: BinOp::Add,
                    a: Arg::Val(vals[0]),
                    b: Arg::Const(k),
                },
                ty,
            ),
            2 if k == 0 => self.emit1(
                PlanOp::Binary {
                    op: BinOp::Add,
                    a: Arg::Val(vals[0]),
                    b: Arg::Val(vals[1]),
                },
                ty,
            ),
            _ => {
                vals.sort_unstable();
                self.emit1(
                    PlanOp::Sum {
                        args: vals,
                        constant: k,
                    },
                    ty,
                )
            }
        }
    }
}

/// Which rewrites the lowering applies (all by default; benchmarks turn them off to show
/// what they are worth).
#[derive(Debug, Clone, Copy)]
pub struct PlanOptions {
    /// Chains and trees of additions become one multi-operand sum.
    pub flatten_sums: bool,
    /// Min and max of the same operands share comparisons.
    pub fuse_min_max: bool,
}

impl Default for PlanOptions {
    fn default() -> Self {
        Self {
            flatten_sums: true,
            fuse_min_max: true,
        }
    }
}

/// Lowers a validated circuit to its optimized plan.
pub fn plan(c: &ValidCircuit) -> Plan {
    plan_with(c, PlanOptions::default())
}

/// Lowers a validated circuit with the chosen rewrites. Without `flatten_sums`, a sum
/// reduction is a chain of additions, as written.
pub fn plan_with(c: &ValidCircuit, opts: PlanOptions) -> Plan {
    let n = c.nodes.len();
    // Liveness: only what outputs read.
    let mut live = vec![false; n];
    let mut out_refs = vec![0u32; n];
    for o in c.outputs.iter().flat_map(|o| &o.nodes) {
        live[*o as usize] = true;
        out_refs[*o as usize] += 1;
    }
    let mut uses = vec![0u32; n];
    let mut consumer: Vec<Option<NodeId>> = vec![None; n];
    for i in (0..n).rev() {
        if live[i] {
            for d in c.nodes[i].deps() {
                live[d as usize] = true;
                uses[d as usize] += 1;
                consumer[d as usize] = Some(i as NodeId);
            }
        }
    }
    let is_sum = |node: &Node| {
        matches!(
            node,
            Node::Binary { op: BinOp::Add, .. }
                | Node::Reduce {
                    op: ReduceOp::Sum,
                    ..
                }
        )
    };
    // An addition read once, by another sum of the same type, and by no output is absorbed.
    let absorbed: Vec<bool> = (0..n)
        .map(|i| {
            opts.flatten_sums
                && live[i]
                && matches!(c.nodes[i], Node::Binary { op: BinOp::Add, .. })
                && uses[i] == 1
                && out_refs[i] == 0
                && consumer[i]
                    .is_some_and(|k| is_sum(&c.nodes[k as usize]) && c.ty(k) == c.ty(i as NodeId))
        })
        .collect();
    // Min and max of the same pair, and min and max reductions over the same list.
    let mut pair_seen: HashMap<(NodeId, NodeId), Vec<NodeId>> = HashMap::new();
    let mut reduce_seen: HashMap<&[NodeId], Vec<NodeId>> = HashMap::new();
    for (i, node) in c.nodes.iter().enumerate() {
        if !live[i] || !opts.fuse_min_max {
            continue;
        }
        match node {
            Node::Binary {
                op: BinOp::Min | BinOp::Max,
                a: Operand::Node(a),
                b: Operand::Node(b),
            } if a != b => {
                pair_seen
                    .entry((*a.min(b), *a.max(b)))
                    .or_default()
                    .push(i as NodeId);
            }
            Node::Reduce {
                op: ReduceOp::Min | ReduceOp::Max,
                args,
            } if args.len() > 1 => reduce_seen.entry(args).or_default().push(i as NodeId),
            _ => {}
        }
    }
    // Whether a list holds both a min and a max (so each node in it has its other half):
    // decided once per list, not once per node (a circuit of many `min(a, b)` would make
    // that quadratic).
    let mixed = |list: &[NodeId]| -> bool {
        list.split_first().is_some_and(|(first, rest)| {
            let op = c.nodes[*first as usize].op_name();
            rest.iter().any(|&o| c.nodes[o as usize].op_name() != op)
        })
    };
    let pair_seen: HashMap<(NodeId, NodeId), (Vec<NodeId>, bool)> = pair_seen
        .into_iter()
        .map(|(k, list)| {
            let m = mixed(&list);
            (k, (list, m))
        })
        .collect();
    let reduce_seen: HashMap<&[NodeId], (Vec<NodeId>, bool)> = reduce_seen
        .into_iter()
        .map(|(k, list)| {
            let m = mixed(&list);
            (k, (list, m))
        })
        .collect();

    let mut l = Lowering {
        steps: Vec::new(),
        value_types: Vec::new(),
        vmap: vec![None; n],
        pending: HashMap::new(),
    };
    let input_types = c.input_types();
    let mut inputs: Vec<Option<ValueId>> = vec![None; input_types.len()];
    let offsets = c.input_offsets();

    for (i, node) in c.nodes.iter().enumerate() {
        let id = i as NodeId;
        if !live[i] || l.vmap[i].is_some() {
            continue;
        }
        let ty = c.ty(id);
        let v = match node {
            Node::Input { input, index } => {
                let pos = offsets[*input as usize] + *index as usize;
                match inputs[pos] {
                    Some(v) => v,
                    None => {
                        let v = l.new_value(ty);
                        inputs[pos] = Some(v);
                        v
                    }
                }
            }
            Node::Unary { op, a } => l.emit1(
                PlanOp::Unary {
                    op: *op,
                    a: l.val(*a),
                },
                ty,
            ),
            Node::Binary {
                op: BinOp::Add,
                a,
                b,
            } => {
                let (mut vals, mut k) = (Vec::new(), 0u64);
                l.sum_terms(*a, ty, &mut vals, &mut k);
                l.sum_terms(*b, ty, &mut vals, &mut k);
                if absorbed[i] {
                    l.pending.insert(id, (vals, k));
                    continue;
                }
                l.emit_sum(vals, k, ty)
            }
            Node::Binary {
                op: op @ (BinOp::Min | BinOp::Max),
                a: Operand::Node(a),
                b: Operand::Node(b),
            } if a != b => {
                let key = (*a.min(b), *a.max(b));
                if pair_seen.get(&key).is_some_and(|(_, mixed)| *mixed) {
                    let o = l.emit(
                        PlanOp::MinMax {
                            a: l.val(*a),
                            b: l.val(*b),
                        },
                        ty,
                        2,
                    );
                    let (mine, theirs) = if *op == BinOp::Min {
                        (o[0], o[1])
                    } else {
                        (o[1], o[0])
                    };
                    // Every node with this op and pair gets the same value.
                    for &same in &pair_seen[&key].0 {
                        let same_op = c.nodes[same as usize].op_name();
                        l.vmap[same as usize] = Some(if same_op == node.op_name() {
                            mine
                        } else {
                            theirs
                        });
                    }
                    mine
                } else {
                    l.emit1(
                        PlanOp::Binary {
                            op: *op,
                            a: Arg::Val(l.val(*a)),
                            b: Arg::Val(l.val(*b)),
                        },
                        ty,
                    )
                }
            }
            Node::Binary { op, a, b } => l.emit1(
                PlanOp::Binary {
                    op: *op,
                    a: l.arg(*a),
                    b: l.arg(*b),
                },
                ty,
            ),
            Node::Compare { op, a, b } => {
                let oty = a.node().or(b.node()).map(|x| c.ty(x)).unwrap_or(ty);
                l.emit1(
                    PlanOp::Compare {
                        op: *op,
                        a: l.arg(*a),
                        b: l.arg(*b),
                        ty: oty,
                    },
                    ty,
                )
            }
            Node::ByConst { op, a, c: k } => l.emit1(
                PlanOp::ByConst {
                    op: *op,
                    a: l.val(*a),
                    c: *k,
                },
                ty,
            ),
            Node::Select { cond, a, b } => l.emit1(
                PlanOp::Select {
                    cond: l.val(*cond),
                    a: l.arg(*a),
                    b: l.arg(*b),
                },
                ty,
            ),
            Node::Cast { a, .. } => {
                let from = c.ty(*a);
                if from == ty {
                    l.val(*a)
                } else {
                    l.emit1(PlanOp::Cast { a: l.val(*a), from }, ty)
                }
            }
            Node::Reduce {
                op: ReduceOp::Sum,
                args,
            } => {
                let (mut vals, mut k) = (Vec::new(), 0u64);
                if !opts.flatten_sums {
                    let mut acc = l.val(args[0]);
                    for &a in &args[1..] {
                        let b = Arg::Val(l.val(a));
                        acc = l.emit1(
                            PlanOp::Binary {
                                op: BinOp::Add,
                                a: Arg::Val(acc),
                                b,
                            },
                            ty,
                        );
                    }
                    acc
                } else {
                    for &a in args {
                        l.sum_terms(Operand::Node(a), ty, &mut vals, &mut k);
                    }
                    l.emit_sum(vals, k, ty)
                }
            }
            Node::Reduce { op, args } => {
                let vals: Vec<ValueId> = args.iter().map(|&a| l.val(a)).collect();
                let fused = reduce_seen
                    .get(args.as_slice())
                    .is_some_and(|(_, mixed)| *mixed);
                if fused {
                    let (mn, mx) = l.min_max_tree(&vals, ty);
                    for &same in &reduce_seen[args.as_slice()].0 {
                        l.vmap[same as usize] = Some(match c.nodes[same as usize] {
                            Node::Reduce {
                                op: ReduceOp::Min, ..
                            } => mn,
                            _ => mx,
                        });
                    }
                    if *op == ReduceOp::Min {
                        mn
                    } else {
                        mx
                    }
                } else {
                    let bop = if *op == ReduceOp::Min {
                        BinOp::Min
                    } else {
                        BinOp::Max
                    };
                    l.tree(vals, bop, ty)
                }
            }
            Node::ArgMax { args, to } => {
                let vals: Vec<ValueId> = args.iter().map(|&a| l.val(a)).collect();
                let aty = c.ty(args[0]);
                l.argmax(&vals, aty, *to)
            }
            Node::Dot { args, weights } => {
                let vals: Vec<ValueId> = args.iter().map(|&a| l.val(a)).collect();
                l.emit1(
                    PlanOp::Dot {
                        args: vals,
                        weights: weights.clone(),
                    },
                    ty,
                )
            }
            Node::Lut { a, table, .. } => l.emit1(
                PlanOp::Lut {
                    a: l.val(*a),
                    from: c.ty(*a),
                    table: table.clone(),
                },
                ty,
            ),
        };
        l.vmap[i] = Some(v);
    }
    let outputs = c
        .outputs
        .iter()
        .map(|o| o.nodes.iter().map(|&n| l.val(n)).collect())
        .collect();
    Plan {
        steps: l.steps,
        n_values: l.value_types.len(),
        value_types: l.value_types,
        inputs,
        outputs,
    }
}

/// Evaluates a plan on plain values: checks that the rewrites keep the circuit's meaning.
pub fn evaluate_plan(p: &Plan, inputs: &[u64]) -> Vec<Vec<u64>> {
    use crate::eval::{binary, by_const, cast, compare, unary};
    let mut vals = vec![0u64; p.n_values];
    for (pos, v) in p.inputs.iter().enumerate() {
        if let Some(v) = v {
            vals[*v as usize] = inputs[pos] & p.value_types[*v as usize].mask();
        }
    }
    for s in &p.steps {
        let t = s.ty;
        let get = |a: Arg, vals: &[u64]| match a {
            Arg::Val(v) => vals[v as usize],
            Arg::Const(c) => c,
        };
        let results: Vec<u64> = match &s.op {
            PlanOp::Unary { op, a } => vec![unary(*op, t, vals[*a as usize])],
            PlanOp::Binary { op, a, b } => vec![binary(*op, t, get(*a, &vals), get(*b, &vals))],
            PlanOp::Compare { op, a, b, ty } => {
                vec![u64::from(compare(*op, *ty, get(*a, &vals), get(*b, &vals)))]
            }
            PlanOp::ByConst { op, a, c } => vec![by_const(*op, t, vals[*a as usize], *c)],
            PlanOp::Select { cond, a, b } => vec![if vals[*cond as usize] != 0 {
                get(*a, &vals)
            } else {
                get(*b, &vals)
            }],
            PlanOp::Cast { a, from } => vec![cast(*from, t, vals[*a as usize])],
            PlanOp::Sum { args, constant } => vec![
                args.iter()
                    .fold(*constant, |acc, &v| acc.wrapping_add(vals[v as usize]))
                    & t.mask(),
            ],
            PlanOp::MinMax { a, b } => {
                let (x, y) = (vals[*a as usize], vals[*b as usize]);
                vec![binary(BinOp::Min, t, x, y), binary(BinOp::Max, t, x, y)]
            }
            PlanOp::Dot { args, weights } => vec![
                args.iter().zip(weights).fold(0u64, |acc, (&v, &w)| {
                    acc.wrapping_add(vals[v as usize].wrapping_mul(w))
                }) & t.mask(),
            ],
            PlanOp::Lut { a, from, table } => {
                vec![table[(vals[*a as usize] & from.mask()) as usize]]
            }
            PlanOp::Constant { c } => vec![*c & t.mask()],
        };
        for (o, r) in s.outs.iter().zip(results) {
            vals[*o as usize] = r;
        }
    }
    p.outputs
        .iter()
        .map(|o| o.iter().map(|&v| vals[v as usize]).collect())
        .collect()
}
