//! Tenebra circuits: the typed dataflow graphs every encrypted computation is expressed as.
//!
//! This crate is pure: no IO, no HTTP, no SQL, no tfhe-rs. It owns the IR ([`ir`]), the tracing
//! [`builder`], validation of untrusted circuits ([`validate`]), the canonical JSON form and
//! content id, the optimizing lowering to an execution [`plan`], the [`cost`] model, the memory
//! a run needs ([`footprint`]) and the plaintext evaluator ([`eval`]) that every encrypted result is checked against.

pub mod bfv;
pub mod builder;
pub mod cost;
pub mod eval;
pub mod footprint;
pub mod io;
pub mod ir;
pub mod plan;
pub mod scheme;
pub mod testing;
pub mod types;
pub mod validate;

pub use ir::{Circuit, CircuitId, Node, NodeId, Operand};
pub use scheme::{AnyCircuit, AnyError, AnyLimits, Scheme};
pub use types::{IoType, ScalarType};
pub use validate::{parse_circuit, validate, Limits, ValidCircuit, ValidationError};
