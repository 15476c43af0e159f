//! The API's wire types: request and response bodies as JSON, shared by the server and the
//! client SDK. Deriving `Serialize` here is a promise to the outside world: fields are only
//! added (optional), never renamed or removed, within `/v1`.

use serde::{Deserialize, Serialize};

/// An error body: `{"error": {"code": "...", "message": "..."}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorView,
}

/// A machine-readable code and a human message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorView {
    pub code: String,
    pub message: String,
}

/// An API key (never the token, except once at creation).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ApiKeyView {
    pub id: String,
    pub name: String,
    pub scope: String,
    pub created_at: i64,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub revoked_at: Option<i64>,
    /// Only in the response that creates the key.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub token: Option<String>,
}

/// Body of `POST /v1/api-keys`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct CreateApiKey {
    pub name: String,
    /// `admin`, `compute` or `read`.
    pub scope: String,
}

/// An uploaded key set.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct KeySetView {
    pub id: String,
    /// SHA-256 of the server key and public key: the key set id the client computes.
    pub fingerprint: String,
    pub size_bytes: i64,
    pub created_at: i64,
    /// When the key set is deleted, if it was uploaded with a time to live.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub expires_at: Option<i64>,
}

/// A function: what it computes, its signature, and its price.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct FunctionView {
    pub name: String,
    /// What the function computes.
    pub summary: String,
    pub signature: String,
    /// `builtin`, or `deployed` for the tenant's own circuits.
    pub kind: String,
    pub min_size: u32,
    pub max_size: u32,
    /// Present when a size is asked for (built-ins), and always for deployed functions:
    /// the circuit and its cost.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub at_size: Option<SizedCost>,
    /// A deployed function's version (versions count up from 1 per name).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub version: Option<i64>,
}

/// A function's circuit at one input size.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SizedCost {
    pub size: u32,
    pub circuit_id: String,
    pub cost_cu: u64,
    pub ops: usize,
}

/// A task: one run of a function on one encrypted input.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TaskView {
    pub id: String,
    pub function: String,
    pub size: u32,
    pub circuit_id: String,
    pub key_set_id: String,
    /// `queued`, `running`, `succeeded`, `failed`, `cancelled` or `expired`.
    pub status: String,
    pub progress: ProgressView,
    /// Price of the run in compute units, from the cost model.
    pub cost_cu: i64,
    /// Runs started (more than one when a worker was lost or a run failed on our side).
    pub attempts: i64,
    pub cancel_requested: bool,
    pub input_bytes: i64,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub result_bytes: Option<i64>,
    pub created_at: i64,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub started_at: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub finished_at: Option<i64>,
    /// Wall time of the run that finished the task.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub wall_ms: Option<i64>,
    /// When the result is deleted.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub expires_at: Option<i64>,
    /// Why the task failed.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub error: Option<ErrorView>,
}

impl TaskView {
    /// Whether the task will not change any more.
    pub fn is_final(&self) -> bool {
        !matches!(self.status.as_str(), "queued" | "running")
    }
}

/// Circuit steps done out of the total (the total is known once a worker started).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct ProgressView {
    pub done: i64,
    pub total: i64,
}

/// A page of tasks, newest first.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TaskPage {
    pub tasks: Vec<TaskView>,
    /// Pass as `after` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub next: Option<String>,
}
