//! The function runtime for serverless platforms: one invocation evaluates one encrypted
//! input, on AWS Lambda (through the Runtime API, `lambda_runtime`) or on Google Cloud Run
//! (an HTTP server on `$PORT` taking plain requests and CloudEvents in binary or structured
//! content mode, Pub/Sub push included).
//!
//! An invocation names the key set by object URL (`s3://bucket/key`, or an `http(s)://`
//! URL such as a presigned one) and carries the encrypted input inline (base64) or by URL;
//! the result comes back inline or goes to `result_url`. The function is the one the input
//! was encrypted for: a circuit packaged with the runtime (by content id) or a built-in.
//! Evaluation keys are cached across warm invocations by key set id, in memory and as the
//! uploaded bytes under the cache directory (`/tmp` on both platforms); a fetched key set
//! is checked to be the one the input names, so a stale or swapped object is refused.
//! Each invocation logs one structured line of its FHE metrics on stdout: CloudWatch's
//! Embedded Metric Format on Lambda, Cloud Logging's structured JSON on Cloud Run.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use object_store::ObjectStore;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tenebra_circuit::{AnyCircuit, AnyLimits, Scheme};
use tenebra_engine::bfv::BfvKeySet;
use tenebra_engine::keys::{unpack_upload, KeySetId};
use tenebra_engine::scheme::{key_set_scheme, KEY_SET_LIMIT};
use tenebra_engine::{EngineError, EvalKeys, InputHeader, RunOptions, ServerKeys};

use crate::tasks::TASK_INPUT_LIMIT;
use crate::worker::{Invoked, TaskRunner};
use crate::ServiceError;

/// What one invocation asks for.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Invocation {
    /// The function the caller means (checked against the one the input was made for).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function: Option<String>,
    /// Where the key set upload is (`s3://...`, `https://...`).
    pub key_set_url: String,
    /// The encrypted input, base64 (standard alphabet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<String>,
    /// Or where it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_url: Option<String>,
    /// Where to put the encrypted result instead of answering it inline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result_url: Option<String>,
}

/// What an invocation did.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Answer {
    pub function: String,
    pub circuit_id: String,
    pub key_set_id: String,
    pub cu: i64,
    pub wall_ms: u64,
    pub key_cache_hit: bool,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// The encrypted result, base64, unless it went to `result_url`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result_url: Option<String>,
}

/// Why an invocation failed: a stable code and a message for people.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct InvokeError {
    pub code: &'static str,
    pub message: String,
    /// The same invocation would fail again (bad input, wrong function) rather than maybe
    /// succeed later (an object store or network failure).
    pub permanent: bool,
}

impl InvokeError {
    fn bad(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            permanent: true,
        }
    }

    fn transient(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            permanent: false,
        }
    }

    fn body(&self) -> Value {
        json!({"error": {"code": self.code, "message": self.message}})
    }
}

/// Which platform's log format the metrics line takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Platform {
    Lambda,
    CloudRun,
}

/// Decoded evaluation keys kept across invocations, most recently used first.
const MEMORY_KEY_SETS: usize = 2;

/// The runtime: the packaged circuits, the key cache, the outbound client.
pub struct Runtime {
    circuits: Vec<AnyCircuit>,
    /// URL prefixes objects may be read from and written to (empty: any s3:// or http(s)://).
    allowed: Vec<String>,
    /// Evaluations at once (each uses every core; the rest wait).
    running: tokio::sync::Semaphore,
    keys: Mutex<VecDeque<(String, EvalKeys)>>,
    /// S3 clients by bucket.
    s3: Mutex<HashMap<String, Arc<dyn ObjectStore>>>,
    cache_dir: Option<PathBuf>,
    http: reqwest::Client,
    platform: Platform,
    version: String,
}

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

impl Runtime {
    /// A runtime serving the circuits of `circuits_dir` (each `*.json` file, validated as
    /// the service validates a deployed circuit) and the built-ins; key sets cached in memory
    /// and under `cache_dir`.
    pub fn new(
        circuits_dir: Option<&Path>,
        cache_dir: Option<PathBuf>,
        platform: Platform,
    ) -> Result<Self, ServiceError> {
        Self::with_limits(circuits_dir, cache_dir, platform, Vec::new(), 1)
    }

    /// [`Runtime::new`] that reads and writes objects only under the `allowed` URL
    /// prefixes (when any are given: a public endpoint cannot be made to fetch or write
    /// anywhere else) and runs at most `concurrency` evaluations at once.
    pub fn with_limits(
        circuits_dir: Option<&Path>,
        cache_dir: Option<PathBuf>,
        platform: Platform,
        allowed: Vec<String>,
        concurrency: usize,
    ) -> Result<Self, ServiceError> {
        let mut prefixes = Vec::new();
        for a in &allowed {
            let wrong =
                |why: &str| ServiceError::Config(format!("allowed URL prefix `{a}`: {why}"));
            // A prefix may stop at the bucket (`s3://b/`): only its scheme is checked here.
            if !["s3://", "http://", "https://"]
                .iter()
                .any(|p| a.starts_with(p))
            {
                return Err(wrong("it is not an s3:// or http(s):// URL"));
            }
            let norm = normalized(a).map_err(|e| wrong(&e.message))?;
            // A prefix ends at a path boundary: `https://a.example` would admit
            // `https://a.example.evil.net/...`.
            if !norm.ends_with('/') || norm.splitn(4, '/').nth(3).is_none() {
                return Err(wrong("it must end with `/` after the host or bucket"));
            }
            prefixes.push(norm);
        }
        let allowed = prefixes;
        let mut circuits = Vec::new();
        if let Some(dir) = circuits_dir {
            let entries = std::fs::read_dir(dir).map_err(ServiceError::file(dir))?;
            for e in entries {
                let path = e.map_err(ServiceError::file(dir))?.path();
                if path.extension().and_then(|x| x.to_str()) != Some("json") {
                    continue;
                }
                let json = std::fs::read(&path).map_err(ServiceError::file(&path))?;
                let c = AnyCircuit::parse(&json, &AnyLimits::default()).map_err(|e| {
                    ServiceError::Config(format!("{} is not a valid circuit: {e}", path.display()))
                })?;
                circuits.push(c);
            }
        }
        let version = ["AWS_LAMBDA_FUNCTION_VERSION", "K_REVISION"]
            .iter()
            .find_map(|k| std::env::var(k).ok())
            .unwrap_or_else(|| "local".to_owned());
        Ok(Self {
            circuits,
            allowed,
            running: tokio::sync::Semaphore::new(concurrency.max(1)),
            keys: Mutex::default(),
            s3: Mutex::default(),
            cache_dir,
            http: crate::outbound_client()?,
            platform,
            version,
        })
    }

    /// The names and ids of the packaged circuits.
    pub fn circuits(&self) -> impl Iterator<Item = (&str, String)> {
        self.circuits.iter().map(|c| (c.name(), c.id().to_string()))
    }

    /// Runs one invocation and logs its metrics line.
    pub async fn invoke(&self, inv: Invocation) -> Result<Answer, InvokeError> {
        let started = Instant::now();
        // Every URL is checked, even one a cache hit will not need.
        for url in [
            Some(&inv.key_set_url),
            inv.input_url.as_ref(),
            inv.result_url.as_ref(),
        ]
        .into_iter()
        .flatten()
        {
            Target::of(url)?;
            // Compared in normal form: `https://h/ok/../other` is `https://h/other`.
            let url = normalized(url)?;
            if !self.allowed.is_empty() && !self.allowed.iter().any(|a| url.starts_with(a.as_str()))
            {
                return Err(InvokeError::bad(
                    "url_not_allowed",
                    format!("`{url}` is not under a URL prefix this function may use"),
                ));
            }
        }
        let input = match (&inv.input, &inv.input_url) {
            (Some(b), None) => {
                if b.len() > TASK_INPUT_LIMIT / 3 * 4 + 4 {
                    return Err(InvokeError::bad(
                        "input_too_large",
                        format!("the input is over {} MiB", TASK_INPUT_LIMIT >> 20),
                    ));
                }
                b64()
                    .decode(b)
                    .map_err(|e| InvokeError::bad("invalid_input", format!("input: {e}")))?
            }
            (None, Some(url)) => self.fetch(url, TASK_INPUT_LIMIT as u64).await?,
            _ => {
                return Err(InvokeError::bad(
                    "invalid_invocation",
                    "give exactly one of `input` (base64) and `input_url`",
                ))
            }
        };
        let header = InputHeader::read(&input)
            .map_err(|e| InvokeError::bad("invalid_input", e.to_string()))?;
        let circuit = self.circuit_for(&header)?;
        if let Some(f) = inv.function.as_deref().filter(|f| *f != circuit.name()) {
            return Err(InvokeError::bad(
                "wrong_function",
                format!(
                    "the input was encrypted for `{}`, not `{f}`",
                    circuit.name()
                ),
            ));
        }
        let key_set_id = header.key_set_id().to_owned();
        let (keys, hit) = self
            .keys(&inv.key_set_url, &key_set_id, circuit.scheme())
            .await?;
        let bytes_in = input.len() as u64;
        let _slot = self
            .running
            .acquire()
            .await
            .map_err(|e| InvokeError::transient("internal", e.to_string()))?;
        let run = {
            let circuit = circuit.clone();
            tokio::task::spawn_blocking(move || {
                tenebra_engine::run(&keys, &circuit, &input, RunOptions::default())
            })
        };
        let result = run
            .await
            .unwrap_or_else(|e| Err(EngineError::Internal(e.to_string())))
            .map_err(|e| match e {
                EngineError::BadInput(m) => InvokeError::bad("invalid_input", m),
                EngineError::TooLarge(m) => InvokeError::bad("circuit_too_large", m),
                e => InvokeError::transient("internal", e.to_string()),
            })?;
        let bytes_out = result.len() as u64;
        let (result, result_url) = match inv.result_url {
            Some(url) => {
                self.store(&url, result).await?;
                (None, Some(url))
            }
            None => (Some(b64().encode(&result)), None),
        };
        let answer = Answer {
            function: circuit.name().to_owned(),
            circuit_id: circuit.id().to_string(),
            key_set_id,
            cu: circuit.cost_cu(),
            wall_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            key_cache_hit: hit,
            bytes_in,
            bytes_out,
            result,
            result_url,
        };
        println!("{}", metrics_line(self.platform, &self.version, &answer));
        Ok(answer)
    }

    /// The circuit an input was encrypted for: a packaged one by content id, else the
    /// built-in it names.
    fn circuit_for(&self, header: &InputHeader) -> Result<AnyCircuit, InvokeError> {
        let circuit = match self
            .circuits
            .iter()
            .find(|c| c.id().to_string() == header.circuit_id())
        {
            Some(c) => c.clone(),
            None => tenebra_functions::builtin(header.function())
                .and_then(|f| f.circuit(header.size()))
                .map_err(|_| {
                    InvokeError::bad(
                        "function_not_found",
                        format!(
                            "this runtime has no function `{}` with circuit {}",
                            header.function(),
                            header.circuit_id()
                        ),
                    )
                })?,
        };
        if !header.matches(&circuit) {
            return Err(InvokeError::bad(
                "input_mismatch",
                format!(
                    "the input was made for another version of `{}`",
                    circuit.name()
                ),
            ));
        }
        Ok(circuit)
    }

    /// The evaluation keys of key set `id` (and whether they were cached): from memory, the
    /// cache directory, or `url`, checked to be that key set.
    async fn keys(
        &self,
        url: &str,
        id: &str,
        scheme: Scheme,
    ) -> Result<(EvalKeys, bool), InvokeError> {
        {
            let mut keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(i) = keys.iter().position(|(k, _)| k == id) {
                if let Some(entry) = keys.remove(i) {
                    let found = entry.1.clone();
                    keys.push_front(entry);
                    return Ok((found, true));
                }
            }
        }
        let cached = self
            .cache_dir
            .as_ref()
            .map(|d| d.join(format!("{id}.keyset")));
        let on_disk = match &cached {
            Some(p) => tokio::fs::read(p).await.ok(),
            None => None,
        };
        let hit = on_disk.is_some();
        let upload = match on_disk {
            Some(b) => b,
            None => self.fetch(url, KEY_SET_LIMIT).await?,
        };
        let want = id.to_owned();
        let (keys, upload) =
            tokio::task::spawn_blocking(move || decode_keys(upload, &want, scheme))
                .await
                .map_err(|e| InvokeError::transient("internal", e.to_string()))??;
        if let Some(path) = cached.filter(|_| !hit) {
            // Best effort: a full /tmp only costs the next cold start a fetch.
            let write = async {
                if let Some(dir) = path.parent() {
                    tokio::fs::create_dir_all(dir).await?;
                }
                let tmp = path.with_extension("part");
                tokio::fs::write(&tmp, &upload).await?;
                tokio::fs::rename(&tmp, &path).await
            };
            if let Err(e) = write.await {
                tracing::warn!(error = %e, "caching a key set on disk");
            }
        }
        let mut all = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        all.retain(|(k, _)| k != id);
        all.push_front((id.to_owned(), keys.clone()));
        all.truncate(MEMORY_KEY_SETS);
        Ok((keys, hit))
    }

    /// An object's bytes, at most `limit`.
    async fn fetch(&self, url: &str, limit: u64) -> Result<Vec<u8>, InvokeError> {
        let too_large = || {
            InvokeError::bad(
                "object_too_large",
                format!("{url} is over {} MiB", limit >> 20),
            )
        };
        let failed = |e: &dyn std::fmt::Display| {
            InvokeError::transient("fetch_failed", format!("reading {url}: {e}"))
        };
        match Target::of(url)? {
            Target::S3 { bucket, path } => {
                let store = self.bucket(&bucket).map_err(|e| failed(&e))?;
                let meta = store.head(&path).await.map_err(|e| match e {
                    object_store::Error::NotFound { .. } => {
                        InvokeError::bad("object_not_found", format!("{url} does not exist"))
                    }
                    e => failed(&e),
                })?;
                if meta.size > limit {
                    return Err(too_large());
                }
                let got = store.get(&path).await.map_err(|e| failed(&e))?;
                let bytes = got.bytes().await.map_err(|e| failed(&e))?;
                if bytes.len() as u64 > limit {
                    return Err(too_large());
                }
                Ok(bytes.to_vec())
            }
            Target::Http => {
                let r = self.http.get(url).send().await.map_err(|e| failed(&e))?;
                if r.status() == StatusCode::NOT_FOUND {
                    return Err(InvokeError::bad(
                        "object_not_found",
                        format!("{url} does not exist"),
                    ));
                }
                if !r.status().is_success() {
                    return Err(failed(&r.status()));
                }
                if r.content_length().is_some_and(|n| n > limit) {
                    return Err(too_large());
                }
                let limit = usize::try_from(limit).unwrap_or(usize::MAX);
                let bytes = crate::read_limited(r, limit).await;
                if bytes.len() > limit {
                    return Err(too_large());
                }
                Ok(bytes)
            }
        }
    }

    /// The S3 client of `bucket` (credentials and endpoint from the environment), built once.
    fn bucket(&self, bucket: &str) -> Result<Arc<dyn ObjectStore>, object_store::Error> {
        let mut clients = self.s3.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = clients.get(bucket) {
            return Ok(c.clone());
        }
        let store: Arc<dyn ObjectStore> = Arc::new(
            object_store::aws::AmazonS3Builder::from_env()
                .with_bucket_name(bucket)
                .build()?,
        );
        if clients.len() >= S3_CLIENTS {
            clients.clear();
        }
        clients.insert(bucket.to_owned(), store.clone());
        Ok(store)
    }

    /// Puts a result where the invocation said.
    async fn store(&self, url: &str, bytes: Vec<u8>) -> Result<(), InvokeError> {
        let failed = |e: &dyn std::fmt::Display| {
            InvokeError::transient("store_failed", format!("writing {url}: {e}"))
        };
        match Target::of(url)? {
            Target::S3 { bucket, path } => self
                .bucket(&bucket)
                .map_err(|e| failed(&e))?
                .put(&path, bytes.into())
                .await
                .map(drop)
                .map_err(|e| failed(&e)),
            Target::Http => {
                let r = self
                    .http
                    .put(url)
                    .body(bytes)
                    .send()
                    .await
                    .map_err(|e| failed(&e))?;
                if r.status().is_success() {
                    Ok(())
                } else {
                    Err(failed(&r.status()))
                }
            }
        }
    }
}

/// Checks an upload is key set `want` of `scheme` and decodes it (blocking: a TFHE key
/// takes about a second); the upload comes back to be cached on disk.
fn decode_keys(
    upload: Vec<u8>,
    want: &str,
    scheme: Scheme,
) -> Result<(EvalKeys, Vec<u8>), InvokeError> {
    let bad = |e: EngineError| InvokeError::bad("invalid_key_set", e.to_string());
    let other = |got: String| {
        InvokeError::bad(
            "key_set_mismatch",
            format!("the key set at that URL is {got}, the input is encrypted under {want}"),
        )
    };
    if key_set_scheme(&upload) != scheme {
        return Err(InvokeError::bad(
            "key_set_mismatch",
            format!("the key set at that URL is not a {scheme} key set"),
        ));
    }
    match scheme {
        Scheme::Tfhe => {
            let (server, public) = unpack_upload(&upload).map_err(bad)?;
            let got = KeySetId::of(server, public).to_string();
            if got != want {
                return Err(other(got));
            }
            let keys = ServerKeys::from_bytes(server, public).map_err(bad)?;
            Ok((EvalKeys::Tfhe(Arc::new(keys)), upload))
        }
        Scheme::Bfv => {
            let keys = BfvKeySet::parse(upload.clone()).map_err(bad)?;
            if keys.id() != want {
                return Err(other(keys.id()));
            }
            Ok((EvalKeys::Bfv(keys), upload))
        }
    }
}

/// A URL as it will be used: http(s) parsed and normalized (dot segments resolved, host
/// lower-cased), s3 as given (object paths with dot segments are refused when parsed).
fn normalized(url: &str) -> Result<String, InvokeError> {
    if url.starts_with("s3://") {
        return Ok(url.to_owned());
    }
    reqwest::Url::parse(url)
        .map(|u| u.to_string())
        .map_err(|e| InvokeError::bad("invalid_url", format!("`{url}`: {e}")))
}

/// Where an object URL points.
enum Target {
    S3 {
        bucket: String,
        path: object_store::path::Path,
    },
    Http,
}

impl Target {
    /// Parses (and checks) an object URL; nothing is connected to.
    fn of(url: &str) -> Result<Self, InvokeError> {
        if url.starts_with("https://") || url.starts_with("http://") {
            return Ok(Target::Http);
        }
        let Some(rest) = url.strip_prefix("s3://") else {
            return Err(InvokeError::bad(
                "invalid_url",
                format!("`{url}` is not an s3:// or http(s):// URL"),
            ));
        };
        let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() || key.is_empty() {
            return Err(InvokeError::bad(
                "invalid_url",
                format!("`{url}` names no bucket and key"),
            ));
        }
        let path = object_store::path::Path::parse(key)
            .map_err(|e| InvokeError::bad("invalid_url", format!("`{url}`: {e}")))?;
        Ok(Target::S3 {
            bucket: bucket.to_owned(),
            path,
        })
    }
}

/// S3 clients kept at most (one per bucket; past it they are built again): invokers name
/// the buckets, so the map is bounded.
const S3_CLIENTS: usize = 16;

/// The invocation's one structured log line: CloudWatch Embedded Metric Format on Lambda
/// (the metrics land in namespace `Tenebra` by function), Cloud Logging's JSON on Cloud Run.
pub fn metrics_line(platform: Platform, version: &str, a: &Answer) -> String {
    let fields = json!({
        "function": a.function, "version": version, "circuit_id": a.circuit_id,
        "cu": a.cu, "wall_ms": a.wall_ms, "key_cache_hit": a.key_cache_hit,
        "bytes_in": a.bytes_in, "bytes_out": a.bytes_out,
    });
    let mut line = fields;
    match platform {
        Platform::Lambda => {
            line["_aws"] = json!({
                "Timestamp": tenebra_store::now_ms(),
                "CloudWatchMetrics": [{
                    "Namespace": "Tenebra",
                    "Dimensions": [["function"]],
                    "Metrics": [
                        {"Name": "cu", "Unit": "Count"},
                        {"Name": "wall_ms", "Unit": "Milliseconds"},
                        {"Name": "bytes_in", "Unit": "Bytes"},
                        {"Name": "bytes_out", "Unit": "Bytes"},
                    ],
                }],
            });
        }
        Platform::CloudRun => {
            line["severity"] = json!("INFO");
            line["message"] = json!(format!(
                "{} ran in {} ms ({} CU, key cache {})",
                a.function,
                a.wall_ms,
                a.cu,
                if a.key_cache_hit { "hit" } else { "miss" }
            ));
            line["logging.googleapis.com/labels"] = json!({"function": a.function});
        }
    }
    line.to_string()
}

/// What a serverless entry point does with one event: the function runtime ([`Runtime`])
/// evaluates an [`Invocation`]; the worker pool's runner ([`TaskRunner`]) runs the task a
/// [`TaskEvent`] names. Both are served the same way on Lambda and on Cloud Run.
pub trait Handler: Send + Sync + 'static {
    type Event: serde::de::DeserializeOwned + Send;
    type Answer: Serialize + Send;
    /// Handles one event; `deadline` is when the platform ends the invocation, if it says.
    fn handle(
        &self,
        event: Self::Event,
        deadline: Option<Instant>,
    ) -> impl std::future::Future<Output = Result<Self::Answer, InvokeError>> + Send;
}

impl Handler for Runtime {
    type Event = Invocation;
    type Answer = Answer;
    async fn handle(&self, event: Invocation, _: Option<Instant>) -> Result<Answer, InvokeError> {
        self.invoke(event).await
    }
}

/// A worker pool's invocation: the task to claim and run, nothing else (key set, input and
/// result stay in the service's storage).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TaskEvent {
    pub task_id: String,
}

impl Handler for TaskRunner {
    type Event = TaskEvent;
    type Answer = Invoked;
    async fn handle(
        &self,
        event: TaskEvent,
        deadline: Option<Instant>,
    ) -> Result<Invoked, InvokeError> {
        let id = &event.task_id;
        let well_formed = id.len() <= 64
            && id.starts_with("task_")
            && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !well_formed {
            return Err(InvokeError::bad(
                "invalid_invocation",
                "task_id is not a task id",
            ));
        }
        // Only the store can fail here (the task's own failures are recorded on it): the
        // platform retries the invocation, and the claim makes a retry safe.
        self.run_task(id, deadline)
            .await
            .map_err(|e| InvokeError::transient("store_unavailable", e.to_string()))
    }
}

/// Pub/Sub's CloudEvent type; its data wraps the message, whose `data` is our invocation.
const PUBSUB_PUBLISHED: &str = "google.cloud.pubsub.topic.v1.messagePublished";

/// The largest request body (a base64 input of the largest size, with room for the rest).
const BODY_LIMIT: usize = TASK_INPUT_LIMIT / 3 * 4 + (1 << 20);

/// The Cloud Run service: `POST /` (a plain invocation, or a CloudEvent carrying one) and
/// `GET /healthz`.
pub fn cloud_run_router<H: Handler>(handler: Arc<H>) -> Router {
    Router::new()
        .route("/", post(cloud_run_invoke::<H>))
        .route("/healthz", get(|| async { "ok" }))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(handler)
}

/// Serves [`cloud_run_router`] on `listener` until `shutdown` (Cloud Run sends SIGTERM and
/// waits for requests in flight).
pub async fn serve_cloud_run<H: Handler>(
    handler: Arc<H>,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ServiceError> {
    axum::serve(listener, cloud_run_router(handler))
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|source| ServiceError::Serve { source })
}

/// Whether a request is a CloudEvent in structured content mode.
fn is_structured(headers: &HeaderMap) -> bool {
    headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("application/cloudevents+json"))
}

/// The invocation a Cloud Run request carries, and whether it came as a CloudEvent.
fn cloud_run_invocation<T: serde::de::DeserializeOwned>(
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(T, bool), InvokeError> {
    let header = |k: &str| headers.get(k).and_then(|v| v.to_str().ok());
    let parse = |bytes: &[u8]| {
        serde_json::from_slice::<T>(bytes)
            .map_err(|e| InvokeError::bad("invalid_invocation", e.to_string()))
    };
    let structured =
        header("content-type").is_some_and(|t| t.starts_with("application/cloudevents+json"));
    let (kind, data): (Option<String>, Vec<u8>) = if structured {
        let envelope: Value = serde_json::from_slice(body)
            .map_err(|e| InvokeError::bad("invalid_event", e.to_string()))?;
        if envelope["specversion"] != "1.0" || !envelope["id"].is_string() {
            return Err(InvokeError::bad(
                "invalid_event",
                "a CloudEvent needs specversion 1.0 and an id",
            ));
        }
        let data = match (&envelope["data_base64"], &envelope["data"]) {
            (Value::String(b), _) => b64()
                .decode(b)
                .map_err(|e| InvokeError::bad("invalid_event", e.to_string()))?,
            (_, Value::Null) => Vec::new(),
            (_, d) => d.to_string().into_bytes(),
        };
        (envelope["type"].as_str().map(str::to_owned), data)
    } else if let Some(version) = header("ce-specversion") {
        // Binary content mode: the attributes are headers, the body is the data.
        if version != "1.0" || header("ce-id").is_none() || header("ce-source").is_none() {
            return Err(InvokeError::bad(
                "invalid_event",
                "a binary-mode CloudEvent needs ce-specversion 1.0, ce-id and ce-source",
            ));
        }
        (header("ce-type").map(str::to_owned), body.to_vec())
    } else {
        return Ok((parse(body)?, false));
    };
    if kind.as_deref() == Some(PUBSUB_PUBLISHED) {
        let msg: Value = serde_json::from_slice(&data)
            .map_err(|e| InvokeError::bad("invalid_event", e.to_string()))?;
        let inner = msg["message"]["data"]
            .as_str()
            .and_then(|d| b64().decode(d).ok())
            .ok_or_else(|| {
                InvokeError::bad("invalid_event", "the Pub/Sub message has no base64 data")
            })?;
        return Ok((parse(&inner)?, true));
    }
    Ok((parse(&data)?, true))
}

async fn cloud_run_invoke<H: Handler>(
    State(handler): State<Arc<H>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let (event, answer) = match cloud_run_invocation::<H::Event>(&headers, &body) {
        Ok((inv, event)) => (event, handler.handle(inv, None).await),
        // A well-formed event with a bad invocation inside is acknowledged like a failed
        // run; a malformed event is the sender's bug: 400.
        Err(e) => {
            let event = headers.contains_key("ce-specversion") || is_structured(&headers);
            (event && e.code != "invalid_event", Err(e))
        }
    };
    match answer {
        Ok(a) => Json(a).into_response(),
        Err(e) => {
            tracing::warn!(code = e.code, error = %e.message, "invocation failed");
            // An event source redelivers on any non-2xx: a permanent failure is answered 200
            // (with the error) so it is not retried forever; a transient one 503.
            let status = match (e.permanent, event) {
                (false, _) => StatusCode::SERVICE_UNAVAILABLE,
                (true, true) => StatusCode::OK,
                (true, false) => StatusCode::BAD_REQUEST,
            };
            (status, Json(e.body())).into_response()
        }
    }
}

/// Serves Lambda's Runtime API (`AWS_LAMBDA_RUNTIME_API`) until the platform stops the
/// process: each event is the handler's event (an [`Invocation`], a [`TaskEvent`]), each
/// answer its answer; a failure is reported to Lambda as an error of type `Tenebra.<code>`.
pub async fn serve_lambda<H: Handler>(handler: Arc<H>) -> Result<(), ServiceError> {
    let service = lambda_runtime::service_fn(move |event: lambda_runtime::LambdaEvent<Value>| {
        let handler = handler.clone();
        async move {
            let inv: H::Event =
                serde_json::from_value(event.payload).map_err(|e| lambda_runtime::Diagnostic {
                    error_type: "Tenebra.invalid_invocation".into(),
                    error_message: e.to_string(),
                })?;
            // The deadline is in milliseconds since the epoch.
            let left = i64::try_from(event.context.deadline)
                .unwrap_or(i64::MAX)
                .saturating_sub(tenebra_store::now_ms());
            let deadline = (left > 0)
                .then(|| Instant::now() + std::time::Duration::from_millis(left.unsigned_abs()));
            handler
                .handle(inv, deadline)
                .await
                .map_err(|e| lambda_runtime::Diagnostic {
                    error_type: format!("Tenebra.{}", e.code),
                    error_message: e.message,
                })
        }
    });
    lambda_runtime::run(service)
        .await
        .map_err(|e| ServiceError::Config(format!("the Lambda runtime stopped: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allowed_prefixes_end_at_a_boundary() {
        let make =
            |p: &str| Runtime::with_limits(None, None, Platform::CloudRun, vec![p.into()], 1);
        for bad in ["s3://bucket", "ftp://x/", "file:///tmp/", "https://"] {
            assert!(make(bad).is_err(), "{bad}");
        }
        // `https://a.example` is `https://a.example/` once normalized: a boundary.
        for good in [
            "s3://bucket/",
            "https://a.example",
            "https://a.example/fhe/",
            "s3://bucket/keys/",
        ] {
            assert!(make(good).is_ok(), "{good}: {:?}", make(good).err());
        }
    }

    #[test]
    fn urls_compare_in_normal_form() {
        assert_eq!(
            normalized("https://A.example/ok/../other").unwrap(),
            "https://a.example/other"
        );
        assert_eq!(normalized("s3://b/k").unwrap(), "s3://b/k");
        assert!(normalized("https://exa mple/").is_err());
    }
}
