//! The API's one error type: client mistakes are 4xx with a machine-readable code; internal
//! errors are logged with their cause and answered with a generic message.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use tenebra_store::{QuotaExceeded, StoreError};

/// An error answered as `{"error": {"code": "...", "message": "..."}}`.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Seconds to wait before trying again (`Retry-After`), for 429s.
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    pub fn not_found(what: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{what} not found"),
        )
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// Logs the cause; the client only learns that something failed on our side.
    pub fn internal(cause: &dyn std::fmt::Display) -> Self {
        tracing::error!(%cause, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error; it has been logged",
        )
    }
}

/// Maps a rejected raw body: 413 past the route's limit (`what` says what is limited), 400
/// otherwise.
pub fn body_error(r: &axum::extract::rejection::BytesRejection, what: &str) -> ApiError {
    if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(r.status(), "body_too_large", what)
    } else {
        ApiError::bad_request("invalid_body", r.body_text())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": {"code": self.code, "message": self.message}});
        let mut resp = (self.status, Json(body)).into_response();
        if let Some(secs) = self.retry_after {
            resp.headers_mut()
                .insert(axum::http::header::RETRY_AFTER, secs.into());
        }
        resp
    }
}

/// A passed limit: 429 with `Retry-After` when waiting helps soon (rate, running tasks),
/// 402 when the period's CU are spent (until the next period), 403 otherwise.
fn quota_error(q: &QuotaExceeded) -> ApiError {
    let (status, code, retry_after) = match q {
        QuotaExceeded::Rate { .. } | QuotaExceeded::TenantRate { .. } => {
            (StatusCode::TOO_MANY_REQUESTS, "rate_limited", Some(1))
        }
        QuotaExceeded::ActiveTasks { .. } => (
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_active_tasks",
            Some(5),
        ),
        QuotaExceeded::PeriodCu { period_end, .. } => {
            let secs = (period_end - tenebra_store::now_ms()).max(0) / 1000 + 1;
            (
                StatusCode::PAYMENT_REQUIRED,
                "cu_quota_exceeded",
                u64::try_from(secs).ok(),
            )
        }
        QuotaExceeded::TaskCu { .. } => (StatusCode::FORBIDDEN, "task_cu_cap", None),
        QuotaExceeded::StoredBytes { .. } => {
            (StatusCode::FORBIDDEN, "storage_quota_exceeded", None)
        }
        QuotaExceeded::KeySets { .. } => (StatusCode::FORBIDDEN, "key_set_quota_exceeded", None),
        QuotaExceeded::ApiKeys { .. } => (StatusCode::FORBIDDEN, "api_key_quota_exceeded", None),
    };
    let mut e = ApiError::new(status, code, q.to_string());
    e.retry_after = retry_after;
    e
}

/// Retry-After of a `503 database_unavailable`.
const DATABASE_RETRY_AFTER_SECS: u64 = 2;

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => ApiError::not_found("resource"),
            StoreError::Conflict(m) => ApiError::new(StatusCode::CONFLICT, "conflict", m),
            StoreError::Invalid(m) => ApiError::bad_request("invalid_request", m),
            StoreError::Quota(q) => quota_error(&q),
            e if e.is_cross_tenant_denied() => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "not_on_this_node",
                e.to_string(),
            ),
            e if e.is_unavailable() => {
                tracing::warn!(error = %e, "the database does not answer");
                let mut a = ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "database_unavailable",
                    "the service's database does not answer; retry shortly",
                );
                a.retry_after = Some(DATABASE_RETRY_AFTER_SECS);
                a
            }
            e @ (StoreError::Database(_) | StoreError::Migrate(_) | StoreError::LeaseLost) => {
                ApiError::internal(&e)
            }
        }
    }
}

/// Why the service could not start, or an operator job (audit checkpoint or verification,
/// meter export) could not finish. Each variant says what was being done; its cause is the
/// [`std::error::Error::source`], so `{:#}` in `anyhow` or [`Causes`] prints the whole
/// chain on one line.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// A setting is wrong; the message says which and what it should be.
    #[error("{0}")]
    Config(String),
    #[error("{}", path.display())]
    File {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{doing}")]
    Database {
        doing: &'static str,
        #[source]
        source: StoreError,
    },
    #[error("{doing}")]
    ObjectStore {
        doing: String,
        #[source]
        source: object_store::Error,
    },
    #[error("{doing}")]
    Blobs {
        doing: String,
        #[source]
        source: std::io::Error,
    },
    #[error("building the HTTP client")]
    Http(#[source] reqwest::Error),
    #[error("the KMS")]
    Kms(#[source] crate::kms::KmsError),
    #[error("serving the API")]
    Serve {
        #[source]
        source: std::io::Error,
    },
    /// A task of the node (server, worker) panicked or was cancelled.
    #[error("a part of the node stopped unexpectedly")]
    Stopped {
        #[source]
        source: tokio::task::JoinError,
    },
}

impl ServiceError {
    pub(crate) fn file(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> Self + '_ {
        move |source| ServiceError::File {
            path: path.to_owned(),
            source,
        }
    }

    pub(crate) fn blobs(doing: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let doing = doing.into();
        move |source| ServiceError::Blobs { doing, source }
    }
}

impl From<StoreError> for ServiceError {
    fn from(source: StoreError) -> Self {
        ServiceError::Database {
            doing: "the database",
            source,
        }
    }
}

/// An error and its causes on one line: `opening the database: connection refused`.
pub struct Causes<'a>(pub &'a (dyn std::error::Error + 'static));

impl std::fmt::Display for Causes<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut next = self.0.source();
        while let Some(e) = next {
            write!(f, ": {e}")?;
            next = e.source();
        }
        Ok(())
    }
}
