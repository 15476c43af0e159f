//! Tenebra engine: runs circuits on ciphertexts, TFHE with tfhe-rs and BFV with fhe.rs.
//!
//! Owns key sets ([`keys`], [`bfv`]), the encrypted input and result files ([`bundle`])
//! with their size-limited, conformance-checked deserialization, the parallel TFHE dataflow
//! executor ([`exec`]), the BFV executor ([`bfv`]), and the one place that tells the two
//! schemes' files apart and runs either ([`scheme`]). Knows nothing about HTTP or SQL.

pub mod bfv;
pub mod bundle;
pub mod cache;
pub mod exec;
pub mod keys;
pub mod scheme;
#[doc(hidden)]
pub mod test_support;

pub use exec::{Ct, Progress, RunOptions, StepTiming};
pub use keys::{ClientKeys, KeySetId, ServerKeys};
pub use scheme::{run, EvalKeys, InputHeader};

/// Everything that can go wrong in the engine.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    /// The caller's input is wrong (bad file, wrong key set, wrong function): a client error.
    #[error("{0}")]
    BadInput(String),
    /// The run was cancelled before its end.
    #[error("cancelled after {done} of {total} steps")]
    Cancelled { done: usize, total: usize },
    /// The run would hold more memory than its plan's footprint allows: refused before the
    /// allocation, never retried.
    #[error("{0}")]
    TooLarge(String),
    #[error("I/O error: {0}")]
    Io(String),
    /// A bug or an environment failure, not the caller's fault.
    #[error("internal error: {0}")]
    Internal(String),
}

/// Runs a validated circuit end to end on the server side: expands the encrypted inputs,
/// executes the optimized plan, and seals the outputs into a result payload.
pub fn evaluate(
    keys: &ServerKeys,
    circuit: &tenebra_circuit::ValidCircuit,
    input_payload: &[u8],
    opts: RunOptions<'_>,
) -> Result<Vec<u8>, EngineError> {
    let plan = tenebra_circuit::plan::plan(circuit);
    let inputs = bundle::expand_values(keys, input_payload, &circuit.input_types())?;
    let outputs = exec::run(keys.integer(), &plan, inputs, opts)?;
    bundle::seal_results(
        outputs.into_iter().flatten().collect(),
        &output_types(circuit),
    )
}

/// Type of every output value, outputs flattened in order.
pub fn output_types(circuit: &tenebra_circuit::Circuit) -> Vec<tenebra_circuit::ScalarType> {
    circuit
        .outputs
        .iter()
        .flat_map(|o| std::iter::repeat_n(o.ty.ty, o.ty.count()))
        .collect()
}

/// Evaluates an encrypted input bundle: checks it was made for this key set and for the
/// circuit `resolve` returns for its header, runs the circuit, and returns the result bundle.
pub fn evaluate_bundle(
    keys: &ServerKeys,
    input: &[u8],
    resolve: impl FnOnce(&bundle::Header) -> Result<tenebra_circuit::ValidCircuit, EngineError>,
    opts: RunOptions<'_>,
) -> Result<Vec<u8>, EngineError> {
    let (header, _) = bundle::read(input, bundle::Kind::Input)?;
    let circuit = resolve(&header)?;
    evaluate_input(keys, input, &circuit, opts)
}

/// Evaluates an encrypted input bundle made for `circuit` and this key set (both checked)
/// and returns the result bundle.
pub fn evaluate_input(
    keys: &ServerKeys,
    input: &[u8],
    circuit: &tenebra_circuit::ValidCircuit,
    opts: RunOptions<'_>,
) -> Result<Vec<u8>, EngineError> {
    let (header, payload) = bundle::read(input, bundle::Kind::Input)?;
    if header.key_set_id != keys.id().to_string() {
        return Err(EngineError::BadInput(format!(
            "the input is encrypted under key set {}, but the evaluation key is key set {}",
            header.key_set_id,
            keys.id()
        )));
    }
    if header.circuit_id != circuit.id().to_string() || header.types != circuit.input_types() {
        return Err(EngineError::BadInput(format!(
            "the input was encrypted for another version of `{}` (circuit {}, expected {})",
            header.function,
            header.circuit_id,
            circuit.id()
        )));
    }
    let result = evaluate(keys, circuit, payload, opts)?;
    let out_header = bundle::Header {
        types: output_types(circuit),
        ..header
    };
    bundle::write(bundle::Kind::Result, &out_header, &result)
}
