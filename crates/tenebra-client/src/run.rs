//! One call for every kind of function: encrypt the JSON input locally, upload the key set if
//! the server lacks it, submit, wait, download the encrypted result and decrypt it locally.
//!
//! A function name is a TFHE built-in (`weight_stats`), a BFV built-in (`ad_targeting`), a
//! model split (`model:<owner>/<name>/<version>/<layers>`: input `{"x": [floats]}`, output
//! `{"y": [floats], "quantized": [integers]}`), or one of the tenant's deployed functions of
//! either scheme (its latest version: input and output are JSON objects keyed by the
//! circuit's input and output names). Keys live in one directory: the TFHE key set
//! (generated with `ClientKeys::generate`) and the BFV secret keys per ring degree (made on
//! first use). Encryption and decryption run on the calling thread.

use std::path::Path;

use serde_json::{json, Value};
use tenebra_circuit::{AnyCircuit, AnyLimits};
use tenebra_functions::AnyBuiltin;

use crate::bfv::{self, BfvKeys};
use crate::http::{Client, HttpError, Task};
use crate::{ClientError, ClientKeys};

/// Why a run did not produce a result.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error(transparent)]
    Http(#[from] HttpError),
    /// The task ended without a result.
    #[error("task {id} {status}: {message} ({code})")]
    Task {
        id: String,
        status: String,
        code: String,
        message: String,
    },
    /// The input does not fit the function.
    #[error("{0}")]
    Input(String),
}

impl From<tenebra_engine::EngineError> for RunError {
    fn from(e: tenebra_engine::EngineError) -> Self {
        RunError::Client(e.into())
    }
}

/// A finished run: the decrypted output and what it took.
#[derive(Debug, Clone)]
pub struct Finished {
    pub output: Value,
    /// The task as it ended (cost, wall time, attempts).
    pub task: Task,
    /// Bytes of the encrypted input sent and of the encrypted result received.
    pub input_bytes: usize,
    pub result_bytes: usize,
}

/// The key set a run needs on the server.
enum KeySet {
    /// The directory's TFHE key set (uploaded only if the server has no set of that id).
    Tfhe(String),
    /// A BFV key set upload (idempotent: the server answers with the existing set).
    Bfv(Vec<u8>),
}

type Decode<'a> = Box<dyn FnOnce(&[u8]) -> Result<Value, RunError> + Send + 'a>;

impl Client {
    /// Runs `function` on `input` encrypted under the keys in `keys`: see [`crate::run`].
    pub async fn run(&self, keys: &Path, function: &str, input: &Value) -> Result<Value, RunError> {
        Ok(self.run_with(keys, function, input, |_| {}).await?.output)
    }

    /// [`Client::run`], calling `on_update` with the task's status about every second while
    /// it runs, and returning the task with the output.
    pub async fn run_with(
        &self,
        keys: &Path,
        function: &str,
        input: &Value,
        on_update: impl FnMut(&Task),
    ) -> Result<Finished, RunError> {
        let (encrypted, key_set, decode) = self.prepare(keys, function, input).await?;
        match key_set {
            KeySet::Tfhe(id) => {
                self.ensure_key_set(&id, keys).await?;
            }
            KeySet::Bfv(upload) => {
                self.upload_key_set(upload).await?;
            }
        }
        let input_bytes = encrypted.len();
        let t = self.submit_task(encrypted, None).await?;
        let t = self.wait_task(&t.id, on_update).await?;
        if t.status != "succeeded" {
            let (code, message) = t
                .error
                .as_ref()
                .map_or((String::new(), String::new()), |e| {
                    (e.code.clone(), e.message.clone())
                });
            return Err(RunError::Task {
                id: t.id,
                status: t.status,
                code,
                message,
            });
        }
        let result = self.task_result(&t.id).await?;
        Ok(Finished {
            output: decode(&result)?,
            task: t,
            input_bytes,
            result_bytes: result.len(),
        })
    }

    /// Uploads the TFHE key set in `dir` (whose id is `fingerprint`) unless the server
    /// already holds it; returns the server's id of the key set.
    pub async fn ensure_key_set(&self, fingerprint: &str, dir: &Path) -> Result<String, RunError> {
        if let Some(k) = self.key_set_by_fingerprint(fingerprint).await? {
            return Ok(k.id);
        }
        let upload = tenebra_engine::keys::read_upload(dir)?;
        Ok(self.upload_key_set(upload).await?.id)
    }

    /// The encrypted input, the key set it needs, and how to read its result.
    async fn prepare<'a>(
        &self,
        dir: &'a Path,
        function: &str,
        input: &Value,
    ) -> Result<(Vec<u8>, KeySet, Decode<'a>), RunError> {
        match tenebra_functions::find_any(function) {
            Some(AnyBuiltin::Tfhe(f)) => {
                // The input is checked before the keys are read: mistakes surface at once.
                f.encode(input).map_err(ClientError::from)?;
                let keys = ClientKeys::load(dir)?;
                let encrypted = crate::encrypt(&keys, f, input)?;
                let id = keys.id().to_string();
                let decode: Decode<'a> = Box::new(move |r| Ok(crate::decrypt(&keys, f, r)?));
                return Ok((encrypted, KeySet::Tfhe(id), decode));
            }
            Some(AnyBuiltin::Bfv(f)) => {
                let encrypted = bfv::encrypt(dir, f, input)?;
                let key_set = BfvKeys::load_key_set(dir, f.circuit())?;
                let decode: Decode<'a> = Box::new(move |r| Ok(bfv::decrypt(dir, f, r)?));
                return Ok((encrypted, KeySet::Bfv(key_set.bytes().to_vec()), decode));
            }
            None => {}
        }
        if let Some((owner, name, version, layers)) =
            tenebra_functions::model::parse_model_function(function)
        {
            let sig = self
                .model_signature(owner, name, Some(version), layers)
                .await?;
            let x: Vec<f64> = serde_json::from_value(input["x"].clone())
                .map_err(|_| RunError::Input("a model's input is {\"x\": [numbers]}".into()))?;
            let q = sig
                .quantize(&x)
                .map_err(|e| RunError::Input(e.to_string()))?;
            let encrypted =
                bfv::encrypt_signed(dir, &sig.signature, &sig.function, std::slice::from_ref(&q))?;
            let key_set = BfvKeys::load_key_set_for(dir, sig.signature.degree)?;
            let decode: Decode<'a> = Box::new(move |r| {
                let y = bfv::decrypt_signed(dir, &sig.signature, r)?.remove(0);
                Ok(json!({"y": sig.dequantize(&y), "quantized": y}))
            });
            return Ok((encrypted, KeySet::Bfv(key_set.bytes().to_vec()), decode));
        }
        let json = self.function_circuit(function, None, None).await?;
        let circuit = AnyCircuit::parse(&json, &AnyLimits::default())
            .map_err(|e| RunError::Input(format!("the server sent an invalid circuit: {e}")))?;
        match circuit {
            AnyCircuit::Tfhe(c) => {
                let keys = ClientKeys::load(dir)?;
                let encrypted = crate::encrypt_circuit(&keys, &c, input)?;
                let id = keys.id().to_string();
                let decode: Decode<'a> =
                    Box::new(move |r| Ok(crate::decrypt_circuit(&keys, &c, r)?));
                Ok((encrypted, KeySet::Tfhe(id), decode))
            }
            AnyCircuit::Bfv(c) => {
                let sig = c.signature();
                let inputs = sig
                    .inputs
                    .iter()
                    .map(|i| {
                        serde_json::from_value::<Vec<i64>>(input[&i.name].clone()).map_err(|_| {
                            RunError::Input(format!(
                                "input `{}` must be an array of {} integers",
                                i.name, i.len
                            ))
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                let encrypted = bfv::encrypt_signed(dir, &sig, &c.circuit().name, &inputs)?;
                let key_set = BfvKeys::load_key_set_for(dir, sig.degree)?;
                let decode: Decode<'a> = Box::new(move |r| {
                    let outputs = bfv::decrypt_signed(dir, &sig, r)?;
                    let named = sig
                        .outputs
                        .iter()
                        .zip(outputs)
                        .map(|(o, v)| (o.name.clone(), json!(v)));
                    Ok(Value::Object(named.collect()))
                });
                Ok((encrypted, KeySet::Bfv(key_set.bytes().to_vec()), decode))
            }
        }
    }
}
