//! Tenebra's HTTP service (axum) and its task workers: tenants' API keys, key sets,
//! functions, tasks, health, readiness and metrics (see ARCHITECTURE.md).
//!
//! The app takes a bound listener and a shutdown future, so tests start the real server on
//! port 0; `tenebra serve` binds the configured address and shuts down on SIGTERM/SIGINT.

mod admin;
pub mod audit;
pub mod aws;
pub mod billing;
pub mod blobs;
mod catalogue;
pub mod charges;
pub mod cpu;
pub mod dispatch;
pub mod error;
mod functions;
mod keysets;
pub mod kms;
mod metrics_http;
pub mod models;
mod node;
pub mod openapi;
pub mod serverless;
mod tasks;
pub mod token;
pub mod worker;

use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::rejection::JsonRejection;
use axum::extract::DefaultBodyLimit;
use axum::extract::{FromRequest, FromRequestParts, Path as UrlPath, Request, State};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::routing::{MethodFilter, MethodRouter};
use axum::{Json, Router};
pub use tenebra_api::{
    ApiKeyView, CreateApiKey, FunctionView, KeySetView, SizedCost, TaskPage, TaskView,
};
use tenebra_store::{ApiKey, QuotaExceeded, Scope, Store, StoreError, Tenant};

pub use error::{ApiError, Causes, ServiceError};
pub use node::{Node, Workers};
pub use token::Secret;

/// Largest JSON request body accepted by the API-key endpoints.
pub const JSON_BODY_LIMIT: usize = 64 << 10;

/// What every handler shares.
#[derive(Debug, Clone)]
pub struct AppState {
    pub store: Store,
    pub secret: Secret,
    /// Where blobs (key sets, task inputs and results) live.
    pub blobs: blobs::Blobs,
    /// Local scratch space for uploads being received: `<data dir>/tmp`.
    pub tmp: PathBuf,
    /// Wakes this process's workers when a task is submitted (PostgreSQL also notifies
    /// the workers of other processes).
    pub wake: Arc<tokio::sync::Notify>,
    /// Ids of tasks that ended, announced by this process's workers and cancels and, on
    /// PostgreSQL, by every node's (forwarded from `LISTEN` while `serve` runs): long polls
    /// wake for their own task only.
    pub task_ended: tokio::sync::broadcast::Sender<Arc<str>>,
    /// HMAC of the operator token under `secret`; `None`: the operator API is off.
    pub operator_hash: Option<[u8; 32]>,
    /// HMAC of the metrics token under `secret`; `None`: `/metrics` is off.
    pub metrics_hash: Option<[u8; 32]>,
    /// Signs the audit log's checkpoints.
    pub audit_signer: audit::AuditSigner,
    /// Each tenant's requests-per-second limit, read at most every few seconds.
    rate_limits: Arc<std::sync::Mutex<HashMap<String, CachedLimit>>>,
    /// Gates CPU work on untrusted documents (per tenant and over all).
    pub cpu: cpu::CpuGate,
    /// Failed authentications per source address in the current minute.
    auth_failures: Arc<quick_cache::sync::Cache<std::net::IpAddr, (u64, u32)>>,
    /// HMACs of API keys that authenticated lately, and when: a throttled address still
    /// lets these through (to the full lookup), so one failing client behind a NAT or a
    /// proxy does not lock out the working ones behind the same address.
    known_keys: Arc<quick_cache::sync::Cache<[u8; 32], Instant>>,
}

/// Failed authentications a source address may make per minute; past that its requests are
/// 429 before any key lookup until the minute ends (per API node).
pub const AUTH_FAILURES_PER_MINUTE: u32 = 20;
/// Source addresses whose failures are remembered (the oldest are forgotten first).
const AUTH_FAILURE_SOURCES: usize = 100_000;
/// API keys remembered as having authenticated, and for how long.
const KNOWN_KEYS: usize = 100_000;
const KNOWN_KEY_TTL: Duration = Duration::from_secs(600);

/// A tenant's requests-per-second limit and when it was read.
/// A tenant's plan's rate limits (per API key, per tenant) and when they were read.
type CachedLimit = (Instant, RateLimits);

#[derive(Debug, Clone, Copy, Default)]
struct RateLimits {
    per_key: Option<i64>,
    per_tenant: Option<i64>,
}

/// Where the server keeps its data, and which database it uses.
#[derive(Clone, Default)]
pub struct Settings {
    pub data_dir: PathBuf,
    /// `postgres://...` for a cluster; `None` for the embedded SQLite file in `data_dir`.
    pub database_url: Option<String>,
    /// Hex-encoded secret API tokens are hashed under (>= 32 bytes). `None`: read or create
    /// `secret.key` in `data_dir` (fine for one node; a cluster shares one secret).
    pub secret_hex: Option<String>,
    /// `s3://bucket[/prefix]` for S3-compatible blob storage; `None`: `<data_dir>/blobs`.
    pub blob_url: Option<String>,
    /// The token of the operator API (`/v1/admin/...`); `None` turns that API off.
    pub operator_token: Option<String>,
    /// The audit checkpoints' signing key (32 bytes, created if missing); `None`:
    /// `<data_dir>/audit-signing.key`. A cluster shares one file.
    pub audit_key_file: Option<PathBuf>,
    /// Who wraps the blobs' data keys: `None` or `local:DIR` for a local keyring
    /// (default `<data_dir>/master-keys`), `vault+http(s)://host:port/<mount>/<key>` for a
    /// Vault or OpenBao transit key.
    pub kms: Option<String>,
    /// Token for the Vault KMS.
    pub vault_token: Option<String>,
    /// The token Prometheus presents for `/metrics` (`Authorization: Bearer`); `None` turns
    /// `/metrics` off.
    pub metrics_token: Option<String>,
}

/// Secrets print as `<redacted>`.
impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hidden = |s: &Option<String>| s.as_ref().map(|_| "<redacted>");
        f.debug_struct("Settings")
            .field("data_dir", &self.data_dir)
            .field(
                "database_url",
                &self.database_url.as_deref().map(redact_url),
            )
            .field("secret_hex", &hidden(&self.secret_hex))
            .field("blob_url", &self.blob_url)
            .field("operator_token", &hidden(&self.operator_token))
            .field("audit_key_file", &self.audit_key_file)
            .field("kms", &self.kms)
            .field("vault_token", &hidden(&self.vault_token))
            .field("metrics_token", &hidden(&self.metrics_token))
            .finish()
    }
}

/// A URL without its password (`postgres://user:secret@host` → `postgres://user:***@host`).
fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let creds = &url[scheme + 3..at];
            match creds.find(':') {
                Some(colon) => format!(
                    "{}{}:***{}",
                    &url[..scheme + 3],
                    &creds[..colon],
                    &url[at..]
                ),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

/// The HTTP client for every outbound call (Vault, meter-event pushes): a request that
/// cannot connect in 5 s or finish in 30 s fails instead of hanging its caller.
pub(crate) fn outbound_client() -> Result<reqwest::Client, ServiceError> {
    reqwest::Client::builder()
        .connect_timeout(std::time::Duration::from_secs(5))
        .timeout(std::time::Duration::from_secs(30))
        .build()
        .map_err(ServiceError::Http)
}

/// The first `limit` bytes (or a little more) of an outbound call's answer; what cannot be
/// read is left out (callers parse what they got, or report the status).
pub(crate) async fn read_limited(mut r: reqwest::Response, limit: usize) -> Vec<u8> {
    let mut body = Vec::new();
    while let Ok(Some(chunk)) = r.chunk().await {
        body.extend_from_slice(&chunk);
        if body.len() > limit {
            break;
        }
    }
    body
}

/// The KMS the settings name.
pub fn open_kms(settings: &Settings) -> Result<Arc<dyn kms::Kms>, ServiceError> {
    match settings.kms.as_deref() {
        None => Ok(Arc::new(kms::LocalKms::open(
            &settings.data_dir.join("master-keys"),
        )?)),
        Some(u) if u.starts_with("local:") => Ok(Arc::new(kms::LocalKms::open(Path::new(
            &u["local:".len()..],
        ))?)),
        Some(u) if u.starts_with("vault+") => Ok(Arc::new(kms::VaultKms::new(
            u,
            settings.vault_token.as_deref().unwrap_or(""),
        )?)),
        Some(u) if u.starts_with("aws-kms://") => Ok(Arc::new(kms::AwsKms::new(u)?)),
        Some(u) => Err(ServiceError::Config(format!(
            "unsupported KMS `{u}` (expected local:DIR, vault+http(s)://host/mount/key or \
             aws-kms://KEY?region=R)"
        ))),
    }
}

/// Opens (and migrates) the database and loads the token secret.
pub async fn open(settings: &Settings) -> Result<AppState, ServiceError> {
    create_private_dir(&settings.data_dir).map_err(ServiceError::file(&settings.data_dir))?;
    let url = match &settings.database_url {
        Some(u) => u.clone(),
        None => format!(
            "sqlite://{}",
            settings.data_dir.join("tenebra.db").display()
        ),
    };
    let store = Store::connect(&url, charges::charge)
        .await
        .map_err(|source| ServiceError::Database {
            doing: "opening the database",
            source,
        })?;
    store
        .migrate()
        .await
        .map_err(|source| ServiceError::Database {
            doing: "migrating the database",
            source,
        })?;
    let secret = match &settings.secret_hex {
        Some(h) => hex::decode(h.trim())
            .ok()
            .and_then(Secret::new)
            .ok_or_else(|| {
                ServiceError::Config("the secret must be at least 32 bytes, hex-encoded".into())
            })?,
        None => load_or_create_secret(&settings.data_dir.join("secret.key"))?,
    };
    let kms = open_kms(settings)?;
    let blobs = match &settings.blob_url {
        Some(url) => blobs::Blobs::s3(url, kms)?,
        None => blobs::Blobs::local(&settings.data_dir.join("blobs"), kms)?,
    };
    let metrics_hash = service_token_hash(&secret, settings.metrics_token.as_deref(), "metrics")?;
    let operator_hash =
        service_token_hash(&secret, settings.operator_token.as_deref(), "operator")?;
    let audit_key = settings
        .audit_key_file
        .clone()
        .unwrap_or_else(|| settings.data_dir.join("audit-signing.key"));
    Ok(AppState {
        store,
        secret,
        blobs,
        tmp: settings.data_dir.join("tmp"),
        wake: Arc::new(tokio::sync::Notify::new()),
        task_ended: tokio::sync::broadcast::channel(1024).0,
        operator_hash,
        metrics_hash,
        audit_signer: audit::AuditSigner::load_or_create(&audit_key)?,
        rate_limits: Arc::default(),
        cpu: cpu::CpuGate::default(),
        auth_failures: Arc::new(quick_cache::sync::Cache::new(AUTH_FAILURE_SOURCES)),
        known_keys: Arc::new(quick_cache::sync::Cache::new(KNOWN_KEYS)),
    })
}

fn load_or_create_secret(path: &Path) -> Result<Secret, ServiceError> {
    match std::fs::read(path) {
        Ok(bytes) => Secret::new(bytes).ok_or_else(|| {
            ServiceError::Config(format!("{} is too short for a secret", path.display()))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let s = Secret::generate();
            write_private(path, s.expose()).map_err(ServiceError::file(path))?;
            Ok(s)
        }
        Err(e) => Err(ServiceError::file(path)(e)),
    }
}

#[cfg(unix)]
pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

/// The HMAC of a service token (operator, metrics) under `secret`; `None` (the service is
/// off) when no token is set; an error for one under 32 characters.
fn service_token_hash(
    secret: &Secret,
    token: Option<&str>,
    what: &str,
) -> Result<Option<[u8; 32]>, ServiceError> {
    match token.map(str::trim) {
        None | Some("") => Ok(None),
        Some(t) if t.len() < 32 => Err(ServiceError::Config(format!(
            "the {what} token must be at least 32 characters"
        ))),
        Some(t) => Ok(Some(token::hash(secret, t))),
    }
}

/// The address a request came from (behind a proxy, the proxy's), when known.
pub(crate) fn source_of(parts: &Parts) -> Option<std::net::IpAddr> {
    parts
        .extensions
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip())
}

/// The throttle of failed authentications (API keys, operator and metrics tokens alike):
/// past [`AUTH_FAILURES_PER_MINUTE`] from one address in a minute, that address is refused
/// before any key lookup until the minute ends (per API node), except for API keys that
/// authenticated in the last [`KNOWN_KEY_TTL`] (server-made, 256 random bits: a guess
/// cannot be one).
pub(crate) struct AuthGate<'a> {
    state: &'a AppState,
    source: Option<std::net::IpAddr>,
    minute: u64,
}

impl<'a> AuthGate<'a> {
    /// Refuses a source that failed too often this minute, unless `known` (the request
    /// presents an API key that authenticated lately).
    pub(crate) fn enter(state: &'a AppState, parts: &Parts, known: bool) -> Result<Self, ApiError> {
        let gate = Self {
            state,
            source: source_of(parts),
            minute: (tenebra_store::now_ms() / 60_000) as u64,
        };
        if let Some(ip) = gate.source.filter(|_| !known) {
            if let Some((m, n)) = state.auth_failures.get(&ip) {
                if m == gate.minute && n >= AUTH_FAILURES_PER_MINUTE {
                    let mut e = ApiError::new(
                        StatusCode::TOO_MANY_REQUESTS,
                        "too_many_failed_authentications",
                        format!(
                            "{AUTH_FAILURES_PER_MINUTE} failed authentications from this \
                             address this minute; wait for the next one"
                        ),
                    );
                    e.retry_after = Some(60 - (tenebra_store::now_ms() / 1000 % 60) as u64);
                    return Err(e);
                }
            }
        }
        Ok(gate)
    }

    /// Counts a failed authentication against the source; returns its error.
    pub(crate) fn failed(&self, e: ApiError) -> ApiError {
        if let Some(ip) = self.source {
            let n = match self.state.auth_failures.get(&ip) {
                Some((m, n)) if m == self.minute => n.saturating_add(1),
                _ => 1,
            };
            self.state.auth_failures.insert(ip, (self.minute, n));
        }
        e
    }
}

/// Checks `Authorization: Bearer <token>` against a service token's hash (operator,
/// metrics); a wrong token counts as a failed authentication of the source.
pub(crate) fn check_service_token(
    parts: &Parts,
    state: &AppState,
    expected: &[u8; 32],
    what: &str,
) -> Result<(), ApiError> {
    let gate = AuthGate::enter(state, parts, false)?;
    let presented = parts
        .headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|h| h.strip_prefix("Bearer "))
        .map(str::trim)
        .ok_or_else(|| {
            ApiError::unauthorized(format!("missing `Authorization: Bearer <{what} token>`"))
        })?;
    if token::hash(&state.secret, presented) != *expected {
        return Err(gate.failed(ApiError::unauthorized(format!("not the {what} token"))));
    }
    Ok(())
}

/// Creates the data directory 0700 (it holds the token secret, the master keys and the
/// blobs); an existing one open to other users is closed to them (0700), or, where that is
/// not allowed, logged.
#[cfg(unix)]
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let mode = std::fs::metadata(dir)?.permissions().mode();
    if mode & 0o077 != 0 {
        if let Err(e) = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)) {
            tracing::warn!(
                dir = %dir.display(),
                mode = format!("{:o}", mode & 0o777),
                error = %e,
                "the data directory is open to other users and cannot be closed: chmod 700 it"
            );
        }
    }
    Ok(())
}

#[cfg(not(unix))]
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)
}

#[cfg(not(unix))]
pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::write(path, bytes)
}

/// Creates a tenant with a first admin API key; returns the tenant and the token (shown once).
pub async fn create_tenant(state: &AppState, name: &str) -> Result<(Tenant, String), ApiError> {
    check_name("tenant", name)?;
    let tenant = state.store.create_tenant(name).await?;
    let token = token::generate();
    state
        .store
        .create_api_key(
            &tenant.id,
            "admin",
            Scope::Admin,
            &token::hash(&state.secret, &token),
        )
        .await?;
    Ok((tenant, token))
}

pub fn check_name(what: &str, name: &str) -> Result<(), ApiError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_. ".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad_request(
            "invalid_name",
            format!("{what} names are 1 to 64 letters, digits, spaces, `-`, `_` or `.`"),
        ))
    }
}

/// The API's routes as one table: the router is built from it and [`ROUTES`] lists it, so
/// the OpenAPI test compares the document with what is really served. `; limit L` gives
/// one operation its own body limit (a layer on that handler only).
macro_rules! api_routes {
    ($($path:literal => { $($method:ident $handler:expr $(; limit $limit:expr)?),+ $(,)? })*) => {
        /// Every `(METHOD, path)` the router serves.
        pub const ROUTES: &[(&str, &str)] = &[$($((stringify!($method), $path),)+)*];

        fn api_routes() -> Router<AppState> {
            Router::new()$(.route(
                $path,
                MethodRouter::new()$(.on(
                    MethodFilter::$method,
                    api_routes!(@handler $handler $(, $limit)?),
                ))+,
            ))*
        }
    };
    (@handler $handler:expr) => { $handler };
    (@handler $handler:expr, $limit:expr) => {
        axum::handler::Handler::<_, AppState>::layer($handler, $limit)
    };
}

api_routes! {
    "/healthz" => { GET || async { "ok" } }
    "/readyz" => { GET readyz }
    "/v1/api-keys" => { GET list_keys, POST create_key }
    "/v1/api-keys/{id}" => { DELETE revoke_key }
    "/v1/key-sets" => {
        GET keysets::list,
        POST keysets::upload; limit DefaultBodyLimit::disable(),
    }
    "/v1/key-sets/{id}" => { GET keysets::get, DELETE keysets::remove }
    "/v1/functions" => {
        GET functions::list,
        POST functions::deploy; limit DefaultBodyLimit::max(catalogue::CIRCUIT_LIMIT),
    }
    "/v1/functions/{name}" => { GET functions::get, DELETE functions::remove }
    "/v1/functions/{name}/circuit" => { GET functions::circuit }
    "/v1/models" => {
        GET models::list,
        POST models::upload; limit DefaultBodyLimit::max(models::MODEL_LIMIT),
    }
    "/v1/models/{owner}/{name}" => { GET models::get }
    "/v1/models/{owner}/{name}/signature" => { GET models::signature }
    "/v1/models/{owner}/{name}/layers" => { GET models::layers }
    "/v1/model-grants/{name}" => { GET models::grants }
    "/v1/model-grants/{name}/{tenant}" => { PUT models::grant, DELETE models::revoke }
    "/v1/model-offers" => { GET models::offers }
    "/v1/model-offers/{owner}/{name}" => { POST models::accept, DELETE models::decline }
    "/v1/tasks" => {
        GET tasks::list,
        POST tasks::submit; limit DefaultBodyLimit::max(tasks::TASK_INPUT_LIMIT),
    }
    "/v1/tasks/{id}" => { GET tasks::get }
    "/v1/tasks/{id}/cancel" => { POST tasks::cancel }
    "/v1/tasks/{id}/result" => { GET tasks::result }
    "/v1/quote" => { POST billing::quote }
    "/v1/usage" => { GET billing::usage }
    "/v1/invoices" => { GET billing::invoices }
    "/v1/limits" => { GET billing::limits }
    "/v1/audit" => { GET tenant_audit }
    "/v1/audit/verify" => { GET admin::verify }
    "/v1/admin/plans" => { GET admin::list_plans }
    "/v1/admin/plans/{name}" => { PUT admin::put_plan }
    "/v1/admin/tenants/{id}/plan" => { PUT admin::set_tenant_plan }
    "/v1/admin/tenants/{id}/billing" => { GET admin::tenant_billing, PUT admin::set_tenant_billing }
    "/v1/admin/audit" => { GET admin::audit_all }
    "/metrics" => { GET metrics_http::render }
    "/openapi.json" => { GET || async { Json(openapi::document()) } }
}

/// The API router.
pub fn router(state: AppState) -> Router {
    api_routes()
        .fallback(|| async { ApiError::not_found("route") })
        .layer(DefaultBodyLimit::max(JSON_BODY_LIMIT))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            audit::track,
        ))
        .layer(axum::middleware::from_fn(metrics_http::track))
        .with_state(state)
}

/// Serves the API on `listener` until `shutdown` completes, then drains in-flight requests.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let forward = tokio::spawn(forward_ended(state.clone()));
    let app = router(state).into_make_service_with_connect_info::<std::net::SocketAddr>();
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await;
    forward.abort();
    served
}

/// What a worker process serves beside its work (`tenebra worker --metrics-listen`):
/// `/metrics` (the metrics token, as on API nodes: task durations, key cache hits and
/// misses, queue depth) and `/healthz`, until `shutdown` completes. The recorder is
/// installed first, so what the worker records before the first scrape is kept.
pub async fn serve_metrics(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    metrics_http::install();
    let app = Router::new()
        .route("/metrics", axum::routing::get(metrics_http::render))
        .route("/healthz", axum::routing::get(|| async { "ok" }))
        .fallback(|| async { ApiError::not_found("route") })
        .layer(DefaultBodyLimit::max(JSON_BODY_LIMIT))
        .with_state(state)
        .into_make_service_with_connect_info::<std::net::SocketAddr>();
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

/// Forwards other nodes' task ends (PostgreSQL `LISTEN`) to this process's long polls.
async fn forward_ended(state: AppState) {
    loop {
        match state.store.ended_listener().await {
            Ok(None) => return,
            Ok(Some(mut l)) => {
                while let Some(id) = l.next().await {
                    let _ = state.task_ended.send(id.into());
                }
            }
            Err(e) => tracing::warn!(error = %e, "listening for task ends"),
        }
        // Lost: long polls fall back to their slow poll until the listener is back.
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn readyz(State(state): State<AppState>) -> Result<&'static str, ApiError> {
    state.store.ping().await?;
    Ok("ready")
}

/// The authenticated caller: a live API key of a tenant.
#[derive(Debug, Clone)]
pub struct Caller {
    pub tenant_id: String,
    pub key_id: String,
    pub scope: Scope,
    log: Option<audit::RequestLog>,
}

impl Caller {
    /// The audit record of the change this request makes, answered with `answer`: handed to
    /// the store (`state.store.recording(caller.change(..))`), it commits with the change.
    pub(crate) fn change(&self, answer: StatusCode) -> Option<tenebra_store::Change> {
        self.log.as_ref().and_then(|l| l.change(answer))
    }

    /// Refuses the request unless the key's scope allows `needed`.
    pub fn require(&self, needed: Scope) -> Result<(), ApiError> {
        if self.scope.allows(needed) {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!(
                "this API key has scope `{}`; the request needs `{}`",
                self.scope.as_str(),
                needed.as_str()
            )))
        }
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        let hash = header
            .and_then(|h| h.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| token::is_well_formed(t))
            .map(|t| token::hash(&state.secret, t));
        let known = hash
            .and_then(|h| state.known_keys.get(&h))
            .is_some_and(|at| at.elapsed() < KNOWN_KEY_TTL);
        let gate = AuthGate::enter(state, parts, known)?;
        let failed = |e| gate.failed(e);
        if header.is_none() {
            return Err(ApiError::unauthorized(
                "missing `Authorization: Bearer <API key>`",
            ));
        }
        let hash = hash.ok_or_else(|| failed(ApiError::unauthorized("malformed API key")))?;
        let key = match state.store.api_key_by_hash(&hash).await {
            Ok(k) => k,
            Err(StoreError::NotFound) => {
                return Err(failed(ApiError::unauthorized("unknown API key")))
            }
            Err(e) => return Err(e.into()),
        };
        if key.revoked_at.is_some() {
            state.known_keys.remove(&hash);
            return Err(failed(ApiError::unauthorized(
                "this API key has been revoked",
            )));
        }
        if !known {
            state.known_keys.insert(hash, Instant::now());
        }
        let log = parts.extensions.get::<audit::RequestLog>().cloned();
        if let Some(l) = &log {
            l.set_actor(Some(key.tenant_id.clone()), key.id.clone());
        }
        let limits = rate_limits(state, &key.tenant_id).await?;
        if let Some(limit) = limits.per_key {
            if state.store.count_request(&key.id).await? > limit {
                return Err(StoreError::Quota(QuotaExceeded::Rate { limit }).into());
            }
        }
        if let Some(limit) = limits.per_tenant {
            let bucket = format!("tenant:{}", key.tenant_id);
            if state.store.count_request(&bucket).await? > limit {
                return Err(StoreError::Quota(QuotaExceeded::TenantRate { limit }).into());
            }
        }
        Ok(Caller {
            tenant_id: key.tenant_id,
            key_id: key.id,
            scope: key.scope,
            log,
        })
    }
}

/// How long a tenant's rate limit is cached per process (a plan change takes this long).
const RATE_LIMIT_TTL: Duration = Duration::from_secs(5);

/// The tenant's requests-per-second limits (per API key, per tenant) its plan sets.
async fn rate_limits(state: &AppState, tenant: &str) -> Result<RateLimits, ApiError> {
    let cached = state
        .rate_limits
        .lock()
        .ok()
        .and_then(|m| m.get(tenant).copied())
        .filter(|(at, _)| at.elapsed() < RATE_LIMIT_TTL);
    if let Some((_, limit)) = cached {
        return Ok(limit);
    }
    let plan = state.store.tenant_plan(tenant).await?;
    let limit = RateLimits {
        per_key: plan.requests_per_second,
        per_tenant: plan.tenant_requests_per_second,
    };
    if let Ok(mut m) = state.rate_limits.lock() {
        m.insert(tenant.to_owned(), (Instant::now(), limit));
    }
    Ok(limit)
}

/// `GET /v1/audit`: the tenant's own audit records.
async fn tenant_audit(
    State(state): State<AppState>,
    caller: Caller,
    q: QueryParams<audit::AuditQuery>,
) -> Result<Json<Vec<tenebra_api::AuditRecordView>>, ApiError> {
    caller.require(Scope::Read)?;
    Ok(Json(audit::page(&state, Some(&caller.tenant_id), q).await?))
}

/// A JSON body whose rejections use the API's error format (and 413 past the size limit).
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(JsonBody(v)),
            Err(r) => {
                let (status, code) = match &r {
                    _ if r.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                        (r.status(), "body_too_large")
                    }
                    JsonRejection::MissingJsonContentType(_) => {
                        (r.status(), "unsupported_media_type")
                    }
                    // Syntax and shape errors alike are the client's: 400.
                    _ => (StatusCode::BAD_REQUEST, "invalid_json"),
                };
                Err(ApiError::new(status, code, r.body_text()))
            }
        }
    }
}

/// Query parameters whose rejections use the API's error format (400 `invalid_query`).
pub struct QueryParams<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> FromRequestParts<S> for QueryParams<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(q)| QueryParams(q))
            .map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))
    }
}

fn api_key_view(k: ApiKey) -> ApiKeyView {
    ApiKeyView {
        id: k.id,
        name: k.name,
        scope: k.scope.as_str().to_owned(),
        created_at: k.created_at,
        revoked_at: k.revoked_at,
        token: None,
    }
}

async fn list_keys(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Vec<ApiKeyView>>, ApiError> {
    caller.require(Scope::Admin)?;
    let keys = state.store.list_api_keys(&caller.tenant_id).await?;
    Ok(Json(keys.into_iter().map(api_key_view).collect()))
}

async fn create_key(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(body): JsonBody<CreateApiKey>,
) -> Result<(StatusCode, Json<ApiKeyView>), ApiError> {
    caller.require(Scope::Admin)?;
    check_name("API key", &body.name)?;
    let scope: Scope = body.scope.parse()?;
    let token = token::generate();
    let key = state
        .store
        .recording(caller.change(StatusCode::CREATED))
        .create_api_key(
            &caller.tenant_id,
            &body.name,
            scope,
            &token::hash(&state.secret, &token),
        )
        .await?;
    let mut view = api_key_view(key);
    view.token = Some(token);
    Ok((StatusCode::CREATED, Json(view)))
}

async fn revoke_key(
    State(state): State<AppState>,
    caller: Caller,
    UrlPath(id): UrlPath<String>,
) -> Result<Json<ApiKeyView>, ApiError> {
    caller.require(Scope::Admin)?;
    let store = state.store.recording(caller.change(StatusCode::OK));
    match store.revoke_api_key(&caller.tenant_id, &id).await {
        Ok(k) => Ok(Json(api_key_view(k))),
        Err(StoreError::NotFound) => Err(ApiError::not_found("API key")),
        Err(e) => Err(e.into()),
    }
}
