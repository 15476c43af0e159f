//! The plaintext evaluator: the reference every encrypted result is checked against.
//!
//! Values are bit patterns in a `u64`, masked to their type's width; signed types are read in
//! two's complement. Every operation follows tfhe-rs semantics (wrapping arithmetic, Rust `as`
//! casts, division toward zero).

use crate::ir::{BinOp, CmpOp, ConstOp, Node, NodeId, Operand, ReduceOp, UnOp};
use crate::types::ScalarType;
use crate::validate::ValidCircuit;

/// Evaluates one operation on plain values; shared by the evaluator and the optimizer's tests.
pub fn binary(op: BinOp, t: ScalarType, a: u64, b: u64) -> u64 {
    let (sa, sb) = (t.to_i128(a), t.to_i128(b));
    let r = match op {
        BinOp::Add => a.wrapping_add(b),
        BinOp::Sub => a.wrapping_sub(b),
        BinOp::Mul => a.wrapping_mul(b),
        BinOp::And => a & b,
        BinOp::Or => a | b,
        BinOp::Xor => a ^ b,
        BinOp::Min => {
            if sa <= sb {
                a
            } else {
                b
            }
        }
        BinOp::Max => {
            if sa >= sb {
                a
            } else {
                b
            }
        }
    };
    r & t.mask()
}

/// Compares two values of type `t`.
pub fn compare(op: CmpOp, t: ScalarType, a: u64, b: u64) -> bool {
    let (a, b) = (t.to_i128(a), t.to_i128(b));
    match op {
        CmpOp::Eq => a == b,
        CmpOp::Ne => a != b,
        CmpOp::Lt => a < b,
        CmpOp::Le => a <= b,
        CmpOp::Gt => a > b,
        CmpOp::Ge => a >= b,
    }
}

/// Applies a constant-operand operation.
pub fn by_const(op: ConstOp, t: ScalarType, a: u64, c: u64) -> u64 {
    let sa = t.to_i128(a);
    let r = match op {
        // Validation guarantees a positive divisor, so neither can overflow.
        ConstOp::Div => (sa / t.to_i128(c)) as u64,
        ConstOp::Rem => (sa % t.to_i128(c)) as u64,
        ConstOp::Shl => a << c,
        ConstOp::Shr => (sa >> c) as u64,
    };
    r & t.mask()
}

/// Converts a value with Rust `as` semantics; to `bool` means `!= 0`.
pub fn cast(from: ScalarType, to: ScalarType, a: u64) -> u64 {
    match to {
        ScalarType::Bool => u64::from(a & from.mask() != 0),
        _ => (from.to_i128(a) as u64) & to.mask(),
    }
}

/// Applies a unary operation.
pub fn unary(op: UnOp, t: ScalarType, a: u64) -> u64 {
    match op {
        UnOp::Neg => 0u64.wrapping_sub(a) & t.mask(),
        UnOp::Not => !a & t.mask(),
    }
}

/// Evaluates a circuit on plain inputs (bit patterns, in the order of
/// [`crate::Circuit::input_types`]) and returns each output's values.
///
/// # Panics
/// If `inputs` does not hold exactly one value per input element; callers build it with
/// [`crate::io::encode_inputs`].
pub fn evaluate(c: &ValidCircuit, inputs: &[u64]) -> Vec<Vec<u64>> {
    assert_eq!(inputs.len(), c.input_count(), "one value per input element");
    let offsets = c.input_offsets();
    let mut vals: Vec<u64> = Vec::with_capacity(c.nodes.len());
    for (i, node) in c.nodes.iter().enumerate() {
        let t = c.ty(i as NodeId);
        let get = |o: Operand| match o {
            Operand::Node(n) => vals[n as usize],
            Operand::Const(k) => k.c,
        };
        let node_ty = |n: NodeId| c.ty(n);
        let v = match node {
            Node::Input { input, index } => {
                inputs[offsets[*input as usize] + *index as usize] & t.mask()
            }
            Node::Unary { op, a } => unary(*op, t, vals[*a as usize]),
            Node::Binary { op, a, b } => binary(*op, t, get(*a), get(*b)),
            Node::Compare { op, a, b } => {
                let ot = a.node().or(b.node()).map(node_ty).unwrap_or(t);
                u64::from(compare(*op, ot, get(*a), get(*b)))
            }
            Node::ByConst { op, a, c } => by_const(*op, t, vals[*a as usize], *c),
            Node::Select { cond, a, b } => {
                if vals[*cond as usize] != 0 {
                    get(*a)
                } else {
                    get(*b)
                }
            }
            Node::Cast { a, to } => cast(node_ty(*a), *to, vals[*a as usize]),
            Node::Reduce { op, args } => {
                let mut it = args.iter().map(|&n| vals[n as usize]);
                let first = it.next().unwrap_or(0);
                let bop = match op {
                    ReduceOp::Sum => BinOp::Add,
                    ReduceOp::Min => BinOp::Min,
                    ReduceOp::Max => BinOp::Max,
                };
                it.fold(first, |acc, x| binary(bop, t, acc, x))
            }
            Node::ArgMax { args, .. } => {
                let at = node_ty(args[0]);
                let mut best = 0usize;
                for (k, &n) in args.iter().enumerate() {
                    if compare(CmpOp::Gt, at, vals[n as usize], vals[args[best] as usize]) {
                        best = k;
                    }
                }
                best as u64 & t.mask()
            }
            Node::Dot { args, weights } => {
                args.iter().zip(weights).fold(0u64, |acc, (&n, &w)| {
                    acc.wrapping_add(vals[n as usize].wrapping_mul(w))
                }) & t.mask()
            }
            Node::Lut { a, table, .. } => {
                let idx = vals[*a as usize] & node_ty(*a).mask();
                table[idx as usize]
            }
        };
        vals.push(v);
    }
    c.outputs
        .iter()
        .map(|o| o.nodes.iter().map(|&n| vals[n as usize]).collect())
        .collect()
}
