//! The API's wire types: request and response bodies as JSON, shared by the server and the
//! client SDK. Deriving `Serialize` here is a promise to the outside world: fields are only
//! added (optional), never renamed or removed, within `/v1`.

use serde::{Deserialize, Serialize};

pub mod model;
pub mod token;

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

/// Body of `POST /v1/quote`: which function, at which size (and optionally which version or
/// content id of a deployed one).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct QuoteRequest {
    pub function: String,
    pub size: u32,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub version: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub circuit_id: Option<String>,
}

/// What running a function costs, before anything runs. Money is in nano-units of the
/// billing currency (1e-9), so sums are exact.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct QuoteView {
    pub function: String,
    pub size: u32,
    pub circuit_id: String,
    pub cu: i64,
    pub plan: String,
    pub price_nanos_per_cu: i64,
    pub amount_nanos: i64,
}

/// One ended task's metered usage.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct UsageRecordView {
    pub task_id: String,
    pub api_key_id: String,
    pub function: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub function_version: Option<i64>,
    pub circuit_id: String,
    pub key_set_id: String,
    /// `succeeded`, `failed` or `cancelled`.
    pub outcome: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub error_code: Option<String>,
    /// CU of the nodes that ran.
    pub cu: i64,
    /// CU billed: `cu`, or 0 when the task failed by the service's fault.
    pub charged_cu: i64,
    pub price_nanos_per_cu: i64,
    pub amount_nanos: i64,
    pub wall_ms: i64,
    pub input_bytes: i64,
    pub result_bytes: i64,
    pub attempts: i64,
    pub recorded_at: i64,
}

/// Sums over usage records.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct UsageTotalsView {
    pub tasks: i64,
    pub cu: i64,
    pub charged_cu: i64,
    pub amount_nanos: i64,
}

/// `GET /v1/usage`: a page of records, oldest first, and the totals of everything the
/// filter selects (all pages).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct UsageView {
    pub records: Vec<UsageRecordView>,
    pub totals: UsageTotalsView,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub next: Option<String>,
}

/// An invoice line: one function at one price.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct InvoiceLineView {
    pub function: String,
    pub price_nanos_per_cu: i64,
    pub tasks: i64,
    pub charged_cu: i64,
    pub amount_nanos: i64,
}

/// A tenant's invoice for one billing period (a calendar month, UTC).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct InvoiceView {
    pub tenant_id: String,
    /// `YYYY-MM`.
    pub period: String,
    pub from: i64,
    pub to: i64,
    pub lines: Vec<InvoiceLineView>,
    pub total_nanos: i64,
}

/// A plan's prices and limits (`null`: no limit).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PlanView {
    pub name: String,
    pub price_nanos_per_cu: i64,
    #[serde(default)]
    pub function_prices: std::collections::BTreeMap<String, i64>,
    #[serde(default)]
    pub cu_per_period: Option<i64>,
    #[serde(default)]
    pub max_active_tasks: Option<i64>,
    #[serde(default)]
    pub max_stored_bytes: Option<i64>,
    #[serde(default)]
    pub max_key_sets: Option<i64>,
    #[serde(default)]
    pub max_task_cu: Option<i64>,
    #[serde(default)]
    pub requests_per_second: Option<i64>,
    /// Requests per second of the whole tenant, over all its API keys.
    #[serde(default)]
    pub tenant_requests_per_second: Option<i64>,
}

/// What a tenant uses now against its limits.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct LimitsView {
    pub plan: PlanView,
    /// The current billing period, `[from, to)` in Unix ms.
    pub period: String,
    pub period_from: i64,
    pub period_to: i64,
    /// CU charged this period plus the cost of queued and running tasks.
    pub period_cu: i64,
    pub active_tasks: i64,
    pub stored_bytes: i64,
    pub key_sets: i64,
}

/// Body of `PUT /v1/admin/tenants/{id}/plan`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SetPlan {
    pub plan: String,
}

/// One audit record.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AuditRecordView {
    pub seq: i64,
    pub at: i64,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub tenant_id: Option<String>,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub outcome: String,
    pub request_id: String,
    pub prev_hash: String,
    pub hash: String,
}

/// What verifying the audit log found.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AuditVerifyView {
    pub ok: bool,
    pub records: i64,
    pub last_seq: i64,
    pub last_hash: String,
    /// Signed checkpoints checked (signature valid and matching the chain).
    pub checkpoints: i64,
    /// The first sequence number that does not hold, and why.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub first_bad_seq: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub reason: Option<String>,
}

/// A usage record as a billing provider's meter event (Stripe's shape): `event_name`,
/// `payload.stripe_customer_id` (the tenant's Stripe customer, absent while it has none) and
/// `payload.value`, `timestamp` (Unix seconds) and `identifier` (idempotency: the task id);
/// `tenant_id` for exports to files (Stripe is not sent it).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct MeterEvent {
    pub event_name: String,
    pub payload: MeterPayload,
    pub identifier: String,
    pub timestamp: i64,
    pub tenant_id: String,
}

/// The customer and value of a meter event (Stripe sends values as strings).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct MeterPayload {
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub stripe_customer_id: Option<String>,
    pub value: String,
}

/// `PUT /v1/admin/tenants/{id}/billing`: the Stripe customer a tenant's usage is billed to
/// (`null`: none; its meter events wait).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TenantBilling {
    pub stripe_customer_id: Option<String>,
}
