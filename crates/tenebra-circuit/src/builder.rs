//! The tracing builder: ordinary Rust over tracer values records a circuit.
//!
//! ```
//! use tenebra_circuit::builder::{Builder, sum};
//! use tenebra_circuit::ScalarType::{Uint};
//!
//! let b = Builder::new("double_sum");
//! let xs = b.input_vec("xs", Uint(8), 4);
//! let wide: Vec<_> = xs.iter().map(|x| x.cast(Uint(16))).collect();
//! let s = sum(&wide) * 2;
//! b.output("s", &s);
//! let circuit = b.build().unwrap();
//! assert_eq!(circuit.outputs.len(), 1);
//! ```
//!
//! Plain Rust loops unroll at build time; an encrypted condition becomes [`Var::select`]. Plain
//! operands (integer literals) become constants of the operation, in the other operand's type.
//! Mistakes (mixed types, constants out of range) are recorded and reported by
//! [`Builder::build`], so expressions stay free of `?`.

use std::cell::RefCell;
use std::ops;
use std::rc::Rc;

use crate::ir::{
    BinOp, Circuit, CmpOp, Const, ConstOp, Input, Node, NodeId, Operand, Output, ReduceOp, UnOp,
    FORMAT_VERSION, SCHEME_TFHE,
};
use crate::types::{IoType, ScalarType};
use crate::validate::{validate, Limits, ValidCircuit, ValidationError};

#[derive(Debug)]
struct Graph {
    name: String,
    inputs: Vec<Input>,
    nodes: Vec<Node>,
    types: Vec<ScalarType>,
    outputs: Vec<Output>,
    error: Option<String>,
}

impl Graph {
    fn push(&mut self, node: Node, ty: ScalarType) -> NodeId {
        self.nodes.push(node);
        self.types.push(ty);
        (self.nodes.len() - 1) as NodeId
    }

    fn fail(&mut self, msg: String) {
        if self.error.is_none() {
            self.error = Some(msg);
        }
    }
}

/// Records a circuit; create inputs, compute on them, declare outputs, then [`Builder::build`].
#[derive(Debug, Clone)]
pub struct Builder {
    g: Rc<RefCell<Graph>>,
}

/// A traced encrypted value: operations on it record nodes.
#[derive(Debug, Clone)]
pub struct Var {
    g: Rc<RefCell<Graph>>,
    id: NodeId,
    ty: ScalarType,
}

impl Builder {
    pub fn new(name: &str) -> Self {
        Self {
            g: Rc::new(RefCell::new(Graph {
                name: name.to_owned(),
                inputs: Vec::new(),
                nodes: Vec::new(),
                types: Vec::new(),
                outputs: Vec::new(),
                error: None,
            })),
        }
    }

    fn var(&self, id: NodeId, ty: ScalarType) -> Var {
        Var {
            g: self.g.clone(),
            id,
            ty,
        }
    }

    /// Declares a scalar encrypted input.
    pub fn input(&self, name: &str, ty: ScalarType) -> Var {
        let mut g = self.g.borrow_mut();
        let input = g.inputs.len() as u32;
        g.inputs.push(Input {
            name: name.to_owned(),
            ty: IoType::scalar(ty),
        });
        let id = g.push(Node::Input { input, index: 0 }, ty);
        drop(g);
        self.var(id, ty)
    }

    /// Declares an encrypted input vector of `len` elements.
    pub fn input_vec(&self, name: &str, ty: ScalarType, len: u32) -> Vec<Var> {
        let mut g = self.g.borrow_mut();
        let input = g.inputs.len() as u32;
        g.inputs.push(Input {
            name: name.to_owned(),
            ty: IoType::vector(ty, len),
        });
        let ids: Vec<NodeId> = (0..len)
            .map(|index| g.push(Node::Input { input, index }, ty))
            .collect();
        drop(g);
        ids.into_iter().map(|id| self.var(id, ty)).collect()
    }

    /// Declares a scalar output.
    pub fn output(&self, name: &str, v: &Var) {
        self.g.borrow_mut().outputs.push(Output {
            name: name.to_owned(),
            ty: IoType::scalar(v.ty),
            nodes: vec![v.id],
        });
    }

    /// Declares a vector output; all elements must share one type.
    pub fn output_vec(&self, name: &str, vs: &[Var]) {
        let mut g = self.g.borrow_mut();
        let Some(first) = vs.first() else {
            g.fail(format!("output `{name}` is an empty vector"));
            return;
        };
        let ty = first.ty;
        g.outputs.push(Output {
            name: name.to_owned(),
            ty: IoType::vector(ty, vs.len() as u32),
            nodes: vs.iter().map(|v| v.id).collect(),
        });
    }

    /// Finishes the circuit and validates it with the default limits.
    pub fn build(self) -> Result<ValidCircuit, ValidationError> {
        self.build_with(&Limits::default())
    }

    /// Finishes the circuit and validates it with the given limits.
    pub fn build_with(self, limits: &Limits) -> Result<ValidCircuit, ValidationError> {
        let g = self.g.borrow();
        if let Some(e) = &g.error {
            return Err(ValidationError::Circuit(e.clone()));
        }
        let circuit = Circuit {
            version: FORMAT_VERSION,
            scheme: SCHEME_TFHE.to_owned(),
            name: g.name.clone(),
            inputs: g.inputs.clone(),
            nodes: g.nodes.clone(),
            outputs: g.outputs.clone(),
        };
        drop(g);
        validate(circuit, limits)
    }
}

/// Something usable as an operand: a traced value or a plain integer.
pub trait IntoOperand {
    /// The operand, and its type if it is a traced value.
    fn into_operand(self) -> Plain;
}

/// A traced value or a plain integer, before the plain one is given a type.
#[derive(Debug, Clone)]
pub enum Plain {
    Var(Var),
    Int(i128),
}

impl IntoOperand for Plain {
    fn into_operand(self) -> Plain {
        self
    }
}

impl IntoOperand for Var {
    fn into_operand(self) -> Plain {
        Plain::Var(self)
    }
}

impl IntoOperand for &Var {
    fn into_operand(self) -> Plain {
        Plain::Var(self.clone())
    }
}

macro_rules! plain_ints {
    ($($t:ty),*) => {$(
        impl IntoOperand for $t {
            fn into_operand(self) -> Plain {
                Plain::Int(i128::from(self))
            }
        }
    )*};
}
plain_ints!(i8, i16, i32, i64, u8, u16, u32, u64, bool);

impl Var {
    /// The node id this value is recorded as.
    pub fn id(&self) -> NodeId {
        self.id
    }

    pub fn ty(&self) -> ScalarType {
        self.ty
    }

    fn push(&self, node: Node, ty: ScalarType) -> Var {
        let id = self.g.borrow_mut().push(node, ty);
        Var {
            g: self.g.clone(),
            id,
            ty,
        }
    }

    fn fail(&self, msg: String) -> Var {
        self.g.borrow_mut().fail(msg);
        self.clone()
    }

    /// Converts a plain integer to a constant of type `ty` (wrapping negative numbers into
    /// unsigned types), recording an error when it is out of range.
    fn constant(&self, v: i128, ty: ScalarType) -> Option<u64> {
        let ok = match ty {
            ScalarType::Bool => (0..=1).contains(&v),
            _ => v >= -(1i128 << (ty.bits() - 1)) && v < (1i128 << ty.bits()),
        };
        if !ok {
            self.g
                .borrow_mut()
                .fail(format!("constant {v} does not fit in {ty}"));
            return None;
        }
        Some((v as u64) & ty.mask())
    }

    fn operand(&self, o: Plain) -> Option<Operand> {
        match o {
            Plain::Var(v) => {
                if v.ty != self.ty {
                    self.g.borrow_mut().fail(format!(
                        "operand types differ: {} and {} (cast one of them)",
                        self.ty, v.ty
                    ));
                    return None;
                }
                Some(Operand::Node(v.id))
            }
            Plain::Int(c) => self
                .constant(c, self.ty)
                .map(|c| Operand::Const(Const { c })),
        }
    }

    fn binary(&self, op: BinOp, other: impl IntoOperand) -> Var {
        match self.operand(other.into_operand()) {
            Some(b) => self.push(
                Node::Binary {
                    op,
                    a: Operand::Node(self.id),
                    b,
                },
                self.ty,
            ),
            None => self.clone(),
        }
    }

    fn compare(&self, op: CmpOp, other: impl IntoOperand) -> Var {
        match self.operand(other.into_operand()) {
            Some(b) => self.push(
                Node::Compare {
                    op,
                    a: Operand::Node(self.id),
                    b,
                },
                ScalarType::Bool,
            ),
            None => self.clone(),
        }
    }

    /// `min(self, other)`.
    pub fn min(&self, other: impl IntoOperand) -> Var {
        self.binary(BinOp::Min, other)
    }

    /// `max(self, other)`.
    pub fn max(&self, other: impl IntoOperand) -> Var {
        self.binary(BinOp::Max, other)
    }

    /// `self == other`, encrypted.
    pub fn eq(&self, other: impl IntoOperand) -> Var {
        self.compare(CmpOp::Eq, other)
    }

    /// `self != other`, encrypted.
    pub fn ne(&self, other: impl IntoOperand) -> Var {
        self.compare(CmpOp::Ne, other)
    }

    /// `self < other`, encrypted.
    pub fn lt(&self, other: impl IntoOperand) -> Var {
        self.compare(CmpOp::Lt, other)
    }

    /// `self <= other`, encrypted.
    pub fn le(&self, other: impl IntoOperand) -> Var {
        self.compare(CmpOp::Le, other)
    }

    /// `self > other`, encrypted.
    pub fn gt(&self, other: impl IntoOperand) -> Var {
        self.compare(CmpOp::Gt, other)
    }

    /// `self >= other`, encrypted.
    pub fn ge(&self, other: impl IntoOperand) -> Var {
        self.compare(CmpOp::Ge, other)
    }

    /// `self ? a : b` for a `bool` condition; at least one branch must be traced.
    pub fn select(&self, a: impl IntoOperand, b: impl IntoOperand) -> Var {
        if self.ty != ScalarType::Bool {
            return self.fail(format!("select needs a bool condition, got {}", self.ty));
        }
        let (a, b) = (a.into_operand(), b.into_operand());
        let ty = match (&a, &b) {
            (Plain::Var(v), _) | (_, Plain::Var(v)) => v.ty,
            _ => return self.fail("select needs at least one traced branch".into()),
        };
        let typed = Var {
            g: self.g.clone(),
            id: self.id,
            ty,
        };
        match (typed.operand(a), typed.operand(b)) {
            (Some(a), Some(b)) => self.push(
                Node::Select {
                    cond: self.id,
                    a,
                    b,
                },
                ty,
            ),
            _ => self.clone(),
        }
    }

    /// Conversion with Rust `as` semantics; to `bool` means `!= 0`.
    pub fn cast(&self, to: ScalarType) -> Var {
        self.push(Node::Cast { a: self.id, to }, to)
    }

    fn by_const(&self, op: ConstOp, c: i128) -> Var {
        match self.constant(c, self.ty) {
            Some(c) => self.push(Node::ByConst { op, a: self.id, c }, self.ty),
            None => self.clone(),
        }
    }

    /// `table[self]`, with `self` read as an unsigned index; `table` has `2^bits` entries.
    pub fn lut(&self, table: &[i128], to: ScalarType) -> Var {
        let mut entries = Vec::with_capacity(table.len());
        for &v in table {
            match to.from_i128(v) {
                Some(b) => entries.push(b),
                None => return self.fail(format!("table entry {v} does not fit in {to}")),
            }
        }
        self.push(
            Node::Lut {
                a: self.id,
                table: entries,
                to,
            },
            to,
        )
    }
}

fn reduce(op: ReduceOp, vs: &[Var]) -> Option<Var> {
    let first = vs.first()?;
    Some(first.push(
        Node::Reduce {
            op,
            args: vs.iter().map(|v| v.id).collect(),
        },
        first.ty,
    ))
}

/// Wrapping sum of same-typed values (cast to a wider type first to avoid wrapping).
///
/// # Panics
/// If `vs` is empty: the number of values is fixed when tracing.
pub fn sum(vs: &[Var]) -> Var {
    reduce(ReduceOp::Sum, vs).expect("sum of at least one value")
}

/// Smallest of same-typed values.
///
/// # Panics
/// If `vs` is empty.
pub fn min_of(vs: &[Var]) -> Var {
    reduce(ReduceOp::Min, vs).expect("min of at least one value")
}

/// Largest of same-typed values.
///
/// # Panics
/// If `vs` is empty.
pub fn max_of(vs: &[Var]) -> Var {
    reduce(ReduceOp::Max, vs).expect("max of at least one value")
}

/// Index (as type `to`) of the first largest value.
///
/// # Panics
/// If `vs` is empty.
pub fn argmax(vs: &[Var], to: ScalarType) -> Var {
    let first = vs.first().expect("argmax of at least one value");
    first.push(
        Node::ArgMax {
            args: vs.iter().map(|v| v.id).collect(),
            to,
        },
        to,
    )
}

/// Wrapping dot product with plain weights.
///
/// # Panics
/// If `vs` is empty.
pub fn dot(vs: &[Var], weights: &[i64]) -> Var {
    let first = vs.first().expect("dot product of at least one value");
    if vs.len() != weights.len() {
        return first.fail(format!(
            "dot product of {} values with {} weights",
            vs.len(),
            weights.len()
        ));
    }
    let mut ws = Vec::with_capacity(weights.len());
    for &w in weights {
        match first.constant(i128::from(w), first.ty) {
            Some(c) => ws.push(c),
            None => return first.clone(),
        }
    }
    first.push(
        Node::Dot {
            args: vs.iter().map(|v| v.id).collect(),
            weights: ws,
        },
        first.ty,
    )
}

macro_rules! bin_ops {
    ($($trait:ident $method:ident $op:expr),*) => {$(
        impl<T: IntoOperand> ops::$trait<T> for &Var {
            type Output = Var;
            fn $method(self, rhs: T) -> Var {
                self.binary($op, rhs)
            }
        }
        impl<T: IntoOperand> ops::$trait<T> for Var {
            type Output = Var;
            fn $method(self, rhs: T) -> Var {
                self.binary($op, rhs)
            }
        }
    )*};
}
bin_ops!(
    Add add BinOp::Add,
    Sub sub BinOp::Sub,
    Mul mul BinOp::Mul,
    BitAnd bitand BinOp::And,
    BitOr bitor BinOp::Or,
    BitXor bitxor BinOp::Xor
);

macro_rules! const_ops {
    ($($trait:ident $method:ident $op:expr),*) => {$(
        impl ops::$trait<i64> for &Var {
            type Output = Var;
            fn $method(self, rhs: i64) -> Var {
                self.by_const($op, i128::from(rhs))
            }
        }
        impl ops::$trait<i64> for Var {
            type Output = Var;
            fn $method(self, rhs: i64) -> Var {
                self.by_const($op, i128::from(rhs))
            }
        }
    )*};
}
const_ops!(
    Div div ConstOp::Div,
    Rem rem ConstOp::Rem,
    Shl shl ConstOp::Shl,
    Shr shr ConstOp::Shr
);

impl ops::Neg for &Var {
    type Output = Var;
    fn neg(self) -> Var {
        self.push(
            Node::Unary {
                op: UnOp::Neg,
                a: self.id,
            },
            self.ty,
        )
    }
}

impl ops::Neg for Var {
    type Output = Var;
    fn neg(self) -> Var {
        -&self
    }
}

impl ops::Not for &Var {
    type Output = Var;
    fn not(self) -> Var {
        self.push(
            Node::Unary {
                op: UnOp::Not,
                a: self.id,
            },
            self.ty,
        )
    }
}

impl ops::Not for Var {
    type Output = Var;
    fn not(self) -> Var {
        !&self
    }
}
