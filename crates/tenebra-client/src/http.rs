//! Typed async HTTP client for the Tenebra API.

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde_json::Value;
use tenebra_api::model::{GrantView, ModelSignature, ModelView};
pub use tenebra_api::{
    ApiKeyView as ApiKey, AuditRecordView as AuditRecord, AuditVerifyView as AuditVerify,
    FunctionView as Function, InvoiceView as Invoice, KeySetView as KeySet, LimitsView as Limits,
    PlanView as Plan, ProgressView, QuoteRequest, QuoteView as Quote, TaskPage, TaskView as Task,
    TenantBilling, UsageView as Usage,
};
use tenebra_functions::model::RemainingLayers;

/// An API error or a transport failure.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The server answered with an error body.
    #[error("{status} {code}: {message}")]
    Api {
        status: u16,
        code: String,
        message: String,
    },
    #[error("cannot reach the server: {0}")]
    Transport(String),
    #[error("unexpected response: {0}")]
    Decode(String),
}

/// Bytes per progress report of a key set upload.
const PROGRESS_PART: usize = 1 << 20;

/// Errors worth waiting for: the server refused before doing anything and said when to come
/// back (`Retry-After`), so any request may be sent again.
const RETRIED_ALWAYS: &[&str] = &["rate_limited", "too_many_requests", "too_many_uploads"];
/// The database did not answer: sent again only when that cannot do a change twice (GET,
/// PUT, DELETE, or a request with an idempotency key).
const RETRIED_IF_IDEMPOTENT: &[&str] = &["database_unavailable"];
/// Times one request is sent again, at most, by default.
const DEFAULT_RETRIES: u32 = 3;
/// The longest `Retry-After` the client waits out; past it the error is returned.
const MAX_RETRY_WAIT: Duration = Duration::from_secs(10);

/// A client for one server and one API key. Requests the server refused for now (rate
/// limits, busy, database unavailable) are sent again after its `Retry-After`, at most
/// [`Client::with_retries`] times (3 by default).
#[derive(Clone)]
pub struct Client {
    base: String,
    token: String,
    http: reqwest::Client,
    retries: u32,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("base", &self.base)
            .field("token", &"[redacted]")
            .field("retries", &self.retries)
            .finish()
    }
}

impl Client {
    /// `base` is the server's URL, e.g. `http://127.0.0.1:8080`.
    pub fn new(base: &str, api_key: &str) -> Self {
        Self {
            base: base.trim_end_matches('/').to_owned(),
            token: api_key.to_owned(),
            http: reqwest::Client::new(),
            retries: DEFAULT_RETRIES,
        }
    }

    /// The same client, sending a refused request again at most `retries` times (0: never).
    pub fn with_retries(mut self, retries: u32) -> Self {
        self.retries = retries;
        self
    }

    async fn send<T: DeserializeOwned>(
        &self,
        req: reqwest::RequestBuilder,
    ) -> Result<T, HttpError> {
        let body = self.send_raw(req).await?;
        serde_json::from_slice(&body).map_err(|e| HttpError::Decode(e.to_string()))
    }

    /// Sends a request and returns the body of a success, or the API error; a request the
    /// server refused for now is sent again after its `Retry-After` (see [`Client`]).
    async fn send_raw(&self, req: reqwest::RequestBuilder) -> Result<Vec<u8>, HttpError> {
        let transport = |e: reqwest::Error| HttpError::Transport(e.to_string());
        let mut req = req.bearer_auth(&self.token).build().map_err(transport)?;
        let idempotent = matches!(
            *req.method(),
            reqwest::Method::GET | reqwest::Method::PUT | reqwest::Method::DELETE
        ) || req.headers().contains_key("idempotency-key");
        let mut left = self.retries;
        loop {
            // A streamed body cannot be sent twice (`try_clone` is None then).
            let again = if left > 0 { req.try_clone() } else { None };
            let resp = self.http.execute(req).await.map_err(transport)?;
            let status = resp.status();
            let wait = resp
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            let body = resp.bytes().await.map_err(transport)?;
            if status.is_success() {
                return Ok(body.to_vec());
            }
            let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            let field = |k: &str| v["error"][k].as_str().unwrap_or("").to_owned();
            let code = field("code");
            let retried = RETRIED_ALWAYS.contains(&code.as_str())
                || (idempotent && RETRIED_IF_IDEMPOTENT.contains(&code.as_str()));
            match (again, wait) {
                (Some(next), Some(wait)) if retried && wait <= MAX_RETRY_WAIT => {
                    tokio::time::sleep(wait).await;
                    req = next;
                    left -= 1;
                }
                _ => {
                    return Err(HttpError::Api {
                        status: status.as_u16(),
                        code,
                        message: field("message"),
                    })
                }
            }
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Uploads a key set (the body of `tenebra_engine::keys::read_upload`); uploading the same
    /// set again returns the existing one.
    pub async fn upload_key_set(&self, upload: Vec<u8>) -> Result<KeySet, HttpError> {
        self.upload_key_set_expiring(upload, None).await
    }

    /// Uploads a key set that the server deletes after `ttl_secs` (at least 60); a set
    /// uploaded before keeps its own expiry.
    pub async fn upload_key_set_expiring(
        &self,
        upload: Vec<u8>,
        ttl_secs: Option<u64>,
    ) -> Result<KeySet, HttpError> {
        // A cheap authenticated call first: a server refusing the API key closes the
        // connection while a 57 MiB body is still being sent, which hides its answer.
        self.key_sets().await?;
        let mut req = self
            .http
            .post(format!("{}/v1/key-sets", self.base))
            .header("content-type", "application/octet-stream")
            .body(upload);
        if let Some(t) = ttl_secs {
            req = req.query(&[("ttl_secs", t)]);
        }
        self.send(req).await
    }

    /// Uploads a key set as [`Client::upload_key_set_expiring`] does, calling
    /// `progress(sent, total)` as each 1 MiB part leaves.
    pub async fn upload_key_set_with_progress(
        &self,
        upload: Vec<u8>,
        ttl_secs: Option<u64>,
        progress: impl Fn(u64, u64) + Send + Sync + 'static,
    ) -> Result<KeySet, HttpError> {
        self.key_sets().await?;
        let total = upload.len() as u64;
        let data = bytes::Bytes::from(upload);
        let parts: Vec<bytes::Bytes> = (0..data.len())
            .step_by(PROGRESS_PART)
            .map(|at| data.slice(at..(at + PROGRESS_PART).min(data.len())))
            .collect();
        let mut sent = 0u64;
        let stream = futures_util::stream::iter(parts.into_iter().map(move |p| {
            sent += p.len() as u64;
            progress(sent, total);
            Ok::<_, std::io::Error>(p)
        }));
        let mut req = self
            .http
            .post(format!("{}/v1/key-sets", self.base))
            .header("content-type", "application/octet-stream")
            .header("content-length", total)
            .body(reqwest::Body::wrap_stream(stream));
        if let Some(t) = ttl_secs {
            req = req.query(&[("ttl_secs", t)]);
        }
        self.send(req).await
    }

    pub async fn key_sets(&self) -> Result<Vec<KeySet>, HttpError> {
        self.send(self.http.get(format!("{}/v1/key-sets", self.base)))
            .await
    }

    pub async fn functions(&self) -> Result<Vec<Function>, HttpError> {
        self.send(self.http.get(format!("{}/v1/functions", self.base)))
            .await
    }

    /// The tenant's API keys (admin scope).
    pub async fn api_keys(&self) -> Result<Vec<ApiKey>, HttpError> {
        self.send(self.http.get(self.url("/v1/api-keys"))).await
    }

    /// Creates an API key of `scope` (`admin`, `compute` or `read`); the response carries
    /// its token, shown this once.
    pub async fn create_api_key(&self, name: &str, scope: &str) -> Result<ApiKey, HttpError> {
        let body = tenebra_api::CreateApiKey {
            name: name.to_owned(),
            scope: scope.to_owned(),
        };
        self.send(self.http.post(self.url("/v1/api-keys")).json(&body))
            .await
    }

    /// Revokes one of the tenant's API keys.
    pub async fn revoke_api_key(&self, id: &str) -> Result<ApiKey, HttpError> {
        self.send(self.http.delete(self.url(&format!("/v1/api-keys/{id}"))))
            .await
    }

    /// The tenant's key set with this fingerprint (the client-side key set id), if uploaded.
    pub async fn key_set_by_fingerprint(
        &self,
        fingerprint: &str,
    ) -> Result<Option<KeySet>, HttpError> {
        Ok(self
            .key_sets()
            .await?
            .into_iter()
            .find(|k| k.fingerprint == fingerprint))
    }

    pub async fn delete_key_set(&self, id: &str) -> Result<(), HttpError> {
        self.send_raw(self.http.delete(self.url(&format!("/v1/key-sets/{id}"))))
            .await
            .map(drop)
    }

    /// Uploads a model (JSON) as the next version of its name; the same JSON again returns
    /// its version.
    pub async fn upload_model(&self, json: Vec<u8>) -> Result<ModelView, HttpError> {
        let req = self
            .http
            .post(self.url("/v1/models"))
            .header("content-type", "application/json")
            .body(json);
        self.send(req).await
    }

    /// Uploads an ONNX model (`Gemm`/`MatMul`/`Add`/`Relu`/`Sigmoid`) under `name`, its
    /// inputs in `input_min..=input_max`.
    pub async fn upload_onnx_model(
        &self,
        onnx: Vec<u8>,
        name: &str,
        input_min: f64,
        input_max: f64,
    ) -> Result<ModelView, HttpError> {
        let req = self
            .http
            .post(self.url("/v1/models"))
            .query(&[("format", "onnx"), ("name", name)])
            .query(&[("input_min", input_min), ("input_max", input_max)])
            .header("content-type", "application/octet-stream")
            .body(onnx);
        self.send(req).await
    }

    /// The caller's models and those shared with it.
    pub async fn models(&self) -> Result<Vec<ModelView>, HttpError> {
        self.send(self.http.get(self.url("/v1/models"))).await
    }

    /// A model's page (the latest version when `version` is `None`).
    pub async fn model(
        &self,
        owner: &str,
        name: &str,
        version: Option<i64>,
    ) -> Result<ModelView, HttpError> {
        let mut req = self
            .http
            .get(self.url(&format!("/v1/models/{owner}/{name}")));
        if let Some(v) = version {
            req = req.query(&[("version", v)]);
        }
        self.send(req).await
    }

    /// What to encrypt for to run the first `layers` layers of a model.
    pub async fn model_signature(
        &self,
        owner: &str,
        name: &str,
        version: Option<i64>,
        layers: usize,
    ) -> Result<ModelSignature, HttpError> {
        let mut req = self
            .http
            .get(self.url(&format!("/v1/models/{owner}/{name}/signature")))
            .query(&[("layers", layers)]);
        if let Some(v) = version {
            req = req.query(&[("version", v)]);
        }
        self.send(req).await
    }

    /// The plaintext layers after split `from` (if the owner shares them with the caller).
    pub async fn model_layers(
        &self,
        owner: &str,
        name: &str,
        version: Option<i64>,
        from: usize,
    ) -> Result<RemainingLayers, HttpError> {
        let mut req = self
            .http
            .get(self.url(&format!("/v1/models/{owner}/{name}/layers")))
            .query(&[("from", from)]);
        if let Some(v) = version {
            req = req.query(&[("version", v)]);
        }
        self.send(req).await
    }

    /// Offers (or updates the offer of) the use of the caller's model `name` to `tenant`,
    /// which must accept it ([`Client::accept_model`]).
    pub async fn grant_model(
        &self,
        name: &str,
        tenant: &str,
        share_layers: bool,
    ) -> Result<GrantView, HttpError> {
        let req = self
            .http
            .put(self.url(&format!("/v1/model-grants/{name}/{tenant}")))
            .json(&serde_json::json!({ "share_layers": share_layers }));
        self.send(req).await
    }

    /// Grants offered to this tenant that it has not accepted.
    pub async fn model_offers(&self) -> Result<Vec<GrantView>, HttpError> {
        self.send(self.http.get(self.url("/v1/model-offers"))).await
    }

    /// Accepts `owner`'s offer of its model `name`; only then may this tenant use it.
    pub async fn accept_model(&self, owner: &str, name: &str) -> Result<GrantView, HttpError> {
        let req = self
            .http
            .post(self.url(&format!("/v1/model-offers/{owner}/{name}")));
        self.send(req).await
    }

    /// Declines (or gives up) `owner`'s grant of its model `name`.
    pub async fn decline_model(&self, owner: &str, name: &str) -> Result<(), HttpError> {
        let req = self
            .http
            .delete(self.url(&format!("/v1/model-offers/{owner}/{name}")));
        self.send_raw(req).await.map(drop)
    }

    /// Revokes a grant.
    pub async fn revoke_model(&self, name: &str, tenant: &str) -> Result<(), HttpError> {
        let req = self
            .http
            .delete(self.url(&format!("/v1/model-grants/{name}/{tenant}")));
        self.send_raw(req).await.map(drop)
    }

    /// Deploys a circuit (its canonical JSON, e.g. from `tenebra_circuit::builder`) as the
    /// next version of its name; deploying the same circuit again returns its version.
    pub async fn deploy_function(&self, circuit_json: Vec<u8>) -> Result<Function, HttpError> {
        let req = self
            .http
            .post(self.url("/v1/functions"))
            .header("content-type", "application/json")
            .body(circuit_json);
        self.send(req).await
    }

    /// The circuit JSON of a deployed function version by its content id.
    pub async fn function_circuit_by_id(
        &self,
        name: &str,
        circuit_id: &str,
    ) -> Result<Vec<u8>, HttpError> {
        let req = self
            .http
            .get(self.url(&format!("/v1/functions/{name}/circuit")))
            .query(&[("circuit_id", circuit_id)]);
        self.send_raw(req).await
    }

    /// The circuit JSON of a function: a built-in at `size`, or a deployed function's
    /// `version` (the latest when `None`).
    pub async fn function_circuit(
        &self,
        name: &str,
        size: Option<u32>,
        version: Option<i64>,
    ) -> Result<Vec<u8>, HttpError> {
        let mut query = Vec::new();
        if let Some(s) = size {
            query.push(("size", s.to_string()));
        }
        if let Some(v) = version {
            query.push(("version", v.to_string()));
        }
        let req = self
            .http
            .get(self.url(&format!("/v1/functions/{name}/circuit")))
            .query(&query);
        self.send_raw(req).await
    }

    /// Deletes one version of a deployed function, or all of them.
    pub async fn delete_function(&self, name: &str, version: Option<i64>) -> Result<(), HttpError> {
        let mut req = self.http.delete(self.url(&format!("/v1/functions/{name}")));
        if let Some(v) = version {
            req = req.query(&[("version", v)]);
        }
        self.send_raw(req).await.map(drop)
    }

    /// A function with its circuit and cost at `size`.
    pub async fn function(&self, name: &str, size: u32) -> Result<Function, HttpError> {
        let req = self
            .http
            .get(self.url(&format!("/v1/functions/{name}")))
            .query(&[("size", size)]);
        self.send(req).await
    }

    /// Submits an encrypted input (a file from `tenebra_client::encrypt`); with an
    /// idempotency key, submitting again returns the same task.
    pub async fn submit_task(
        &self,
        input: Vec<u8>,
        idempotency_key: Option<&str>,
    ) -> Result<Task, HttpError> {
        let mut req = self
            .http
            .post(self.url("/v1/tasks"))
            .header("content-type", "application/octet-stream")
            .body(input);
        if let Some(k) = idempotency_key {
            req = req.header("idempotency-key", k);
        }
        self.send(req).await
    }

    pub async fn task(&self, id: &str) -> Result<Task, HttpError> {
        self.send(self.http.get(self.url(&format!("/v1/tasks/{id}"))))
            .await
    }

    /// One page of the tenant's tasks, newest first, optionally of one status.
    pub async fn tasks(
        &self,
        status: Option<&str>,
        limit: u32,
        after: Option<&str>,
    ) -> Result<TaskPage, HttpError> {
        let mut query = vec![("limit", limit.to_string())];
        if let Some(s) = status {
            query.push(("status", s.to_owned()));
        }
        if let Some(a) = after {
            query.push(("after", a.to_owned()));
        }
        self.send(self.http.get(self.url("/v1/tasks")).query(&query))
            .await
    }

    /// Asks to cancel a task: a queued one ends at once, a running one at its next step.
    pub async fn cancel_task(&self, id: &str) -> Result<Task, HttpError> {
        self.send(self.http.post(self.url(&format!("/v1/tasks/{id}/cancel"))))
            .await
    }

    /// The encrypted result of a succeeded task.
    pub async fn task_result(&self, id: &str) -> Result<Vec<u8>, HttpError> {
        self.send_raw(self.http.get(self.url(&format!("/v1/tasks/{id}/result"))))
            .await
    }

    /// A task's status once it is final, or after `wait` (a long poll).
    pub async fn task_wait(&self, id: &str, wait: Duration) -> Result<Task, HttpError> {
        let req = self
            .http
            .get(self.url(&format!("/v1/tasks/{id}")))
            .query(&[("wait", wait.as_secs())]);
        self.send(req).await
    }

    /// Waits until a task is final, calling `on_update` with its status about every second
    /// (for progress); learns the end as soon as the server does (long poll).
    pub async fn wait_task(
        &self,
        id: &str,
        mut on_update: impl FnMut(&Task),
    ) -> Result<Task, HttpError> {
        loop {
            let t = self.task_wait(id, Duration::from_secs(1)).await?;
            on_update(&t);
            if t.is_final() {
                return Ok(t);
            }
        }
    }

    /// What running `function` at `size` would cost (CU and price), before running it.
    pub async fn quote(&self, q: &QuoteRequest) -> Result<Quote, HttpError> {
        self.send(self.http.post(self.url("/v1/quote")).json(q))
            .await
    }

    /// The tenant's usage records (one page, oldest first) and the totals over the filter:
    /// `query` holds `from`, `to` (Unix ms), `function`, `api_key_id`, `limit`, `after`.
    pub async fn usage(&self, query: &[(&str, String)]) -> Result<Usage, HttpError> {
        self.send(self.http.get(self.url("/v1/usage")).query(query))
            .await
    }

    /// The tenant's invoice for a period (`YYYY-MM`; default: the current one).
    pub async fn invoice(&self, period: Option<&str>) -> Result<Invoice, HttpError> {
        let mut req = self.http.get(self.url("/v1/invoices"));
        if let Some(p) = period {
            req = req.query(&[("period", p)]);
        }
        self.send(req).await
    }

    /// The same invoice as CSV.
    pub async fn invoice_csv(&self, period: Option<&str>) -> Result<String, HttpError> {
        let mut req = self
            .http
            .get(self.url("/v1/invoices"))
            .query(&[("format", "csv")]);
        if let Some(p) = period {
            req = req.query(&[("period", p)]);
        }
        let body = self.send_raw(req).await?;
        String::from_utf8(body).map_err(|e| HttpError::Decode(e.to_string()))
    }

    /// The tenant's plan and what it uses now.
    pub async fn limits(&self) -> Result<Limits, HttpError> {
        self.send(self.http.get(self.url("/v1/limits"))).await
    }

    /// Audit records after `after`: the tenant's (`/v1/audit`), or with the operator token
    /// everyone's (`admin = true`, `/v1/admin/audit`).
    pub async fn audit(
        &self,
        admin: bool,
        after: i64,
        limit: u32,
    ) -> Result<Vec<AuditRecord>, HttpError> {
        let path = if admin {
            "/v1/admin/audit"
        } else {
            "/v1/audit"
        };
        let req = self
            .http
            .get(self.url(path))
            .query(&[("after", after), ("limit", i64::from(limit))]);
        self.send(req).await
    }

    /// Operator: recompute the audit chain and check the signed checkpoints.
    pub async fn verify_audit(&self) -> Result<AuditVerify, HttpError> {
        self.send(self.http.get(self.url("/v1/audit/verify"))).await
    }

    /// Operator: every plan.
    pub async fn plans(&self) -> Result<Vec<Plan>, HttpError> {
        self.send(self.http.get(self.url("/v1/admin/plans"))).await
    }

    /// Operator: create or replace a plan.
    pub async fn put_plan(&self, plan: &Plan) -> Result<Plan, HttpError> {
        let url = self.url(&format!("/v1/admin/plans/{}", plan.name));
        self.send(self.http.put(url).json(plan)).await
    }

    /// Operator: put a tenant on a plan.
    pub async fn set_tenant_plan(&self, tenant: &str, plan: &str) -> Result<(), HttpError> {
        let url = self.url(&format!("/v1/admin/tenants/{tenant}/plan"));
        let body = tenebra_api::SetPlan {
            plan: plan.to_owned(),
        };
        self.send_raw(self.http.put(url).json(&body))
            .await
            .map(drop)
    }

    /// Operator: bill a tenant's usage to a Stripe customer (`None`: to none).
    pub async fn set_tenant_billing(
        &self,
        tenant: &str,
        stripe_customer_id: Option<&str>,
    ) -> Result<TenantBilling, HttpError> {
        let url = self.url(&format!("/v1/admin/tenants/{tenant}/billing"));
        let body = TenantBilling {
            stripe_customer_id: stripe_customer_id.map(str::to_owned),
        };
        self.send(self.http.put(url).json(&body)).await
    }

    /// Operator: the Stripe customer a tenant's usage is billed to.
    pub async fn tenant_billing(&self, tenant: &str) -> Result<TenantBilling, HttpError> {
        let url = self.url(&format!("/v1/admin/tenants/{tenant}/billing"));
        self.send(self.http.get(url)).await
    }
}
