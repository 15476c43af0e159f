//! Tenebra client SDK: key generation, and encryption and decryption of a function's inputs
//! and outputs. The secret key never leaves this side. [`http::Client::run`] is the whole
//! flow (encrypt, upload keys if needed, submit, wait, download, decrypt) for every kind of
//! function; see [`run`].

pub mod bfv;
pub mod http;
pub mod run;

use serde_json::Value;
use tenebra_circuit::ValidCircuit;
use tenebra_engine::bundle::{self, Header, Kind, BUNDLE_VERSION};
use tenebra_engine::{output_types, EngineError};
use tenebra_functions::{Builtin, FunctionError};

pub use tenebra_engine::keys::{ClientKeys, KeySetId};

/// What can go wrong on the client side.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(transparent)]
    Function(#[from] FunctionError),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("{0}")]
    Mismatch(String),
    #[error("invalid input: {0}")]
    Input(#[from] tenebra_circuit::io::IoError),
}

/// Encrypts a function's JSON input under `keys` into an input bundle.
pub fn encrypt(
    keys: &ClientKeys,
    function: &Builtin,
    input: &Value,
) -> Result<Vec<u8>, ClientError> {
    let (size, values) = function.encode(input)?;
    let circuit = function.circuit(size)?;
    encrypt_values(keys, function.name, size, &circuit, &values)
}

/// Encrypts the JSON input of any circuit (`{"input name": value, ...}`), e.g. a function a
/// tenant deployed; the bundle names the function `circuit.name`.
pub fn encrypt_circuit(
    keys: &ClientKeys,
    circuit: &ValidCircuit,
    input: &Value,
) -> Result<Vec<u8>, ClientError> {
    let values = tenebra_circuit::io::encode_inputs(circuit, input)?;
    encrypt_values(keys, &circuit.name, 0, circuit, &values)
}

fn encrypt_values(
    keys: &ClientKeys,
    function: &str,
    size: u32,
    circuit: &ValidCircuit,
    values: &[u64],
) -> Result<Vec<u8>, ClientError> {
    let types = circuit.input_types();
    let payload = bundle::encrypt_values(keys, &types, values)?;
    let header = Header {
        version: BUNDLE_VERSION,
        function: function.to_owned(),
        size,
        circuit_id: circuit.id().to_string(),
        key_set_id: keys.id().to_string(),
        types,
    };
    Ok(bundle::write(Kind::Input, &header, &payload)?)
}

/// The circuit of the built-in an encrypted input names (what a server evaluates it with).
pub fn builtin_circuit(header: &Header) -> Result<tenebra_circuit::ValidCircuit, EngineError> {
    tenebra_functions::find(&header.function)
        .and_then(|f| f.circuit(header.size))
        .map_err(|e| EngineError::BadInput(e.to_string()))
}

/// Reads the header of an encrypted input, checking that it was made for `function`.
pub fn input_header(bytes: &[u8], function: &Builtin) -> Result<Header, ClientError> {
    let (header, _) = bundle::read(bytes, Kind::Input)?;
    check_function(&header, function)?;
    Ok(header)
}

fn check_function(header: &Header, function: &Builtin) -> Result<(), ClientError> {
    if header.function != function.name {
        return Err(ClientError::Mismatch(format!(
            "this file was made for function `{}`, not `{}`",
            header.function, function.name
        )));
    }
    Ok(())
}

/// Decrypts a result bundle of `function` and applies its client-side post-processing.
pub fn decrypt(keys: &ClientKeys, function: &Builtin, result: &[u8]) -> Result<Value, ClientError> {
    let (header, _) = bundle::read(result, Kind::Result)?;
    check_function(&header, function)?;
    let circuit = function.circuit(header.size)?;
    let outputs = open(keys, &circuit, result)?;
    Ok(function.finish(header.size, &outputs))
}

/// Decrypts the result of any circuit into `{"output name": value, ...}`.
pub fn decrypt_circuit(
    keys: &ClientKeys,
    circuit: &ValidCircuit,
    result: &[u8],
) -> Result<Value, ClientError> {
    let outputs = open(keys, circuit, result)?;
    Ok(tenebra_circuit::io::decode_outputs(circuit, &outputs))
}

/// Checks a result was computed by `circuit` under `keys`, and decrypts each output's values.
fn open(
    keys: &ClientKeys,
    circuit: &ValidCircuit,
    result: &[u8],
) -> Result<Vec<Vec<u64>>, ClientError> {
    let (header, payload) = bundle::read(result, Kind::Result)?;
    if header.key_set_id != keys.id().to_string() {
        return Err(ClientError::Mismatch(format!(
            "this result is encrypted under key set {}, but these keys are key set {}",
            header.key_set_id,
            keys.id()
        )));
    }
    let types = output_types(circuit);
    if header.circuit_id != circuit.id().to_string() || header.types != types {
        return Err(ClientError::Mismatch(format!(
            "this result was computed by another version of `{}`",
            header.function
        )));
    }
    let flat = bundle::open_results(keys, payload, &types)?;
    let mut rest = flat.as_slice();
    let mut outputs = Vec::with_capacity(circuit.outputs.len());
    for o in &circuit.outputs {
        let (head, tail) = rest.split_at(o.ty.count());
        outputs.push(head.to_vec());
        rest = tail;
    }
    Ok(outputs)
}
