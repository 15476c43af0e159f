//! Prometheus metrics: request latencies per route template, queue depth, task durations
//! per function kind (never a tenant-chosen name: that would leak names and let tenants
//! mint label values), key-cache hits and misses (recorded where they happen with the
//! `metrics` macros; rendered here). `/metrics` answers only the metrics token.

use std::sync::OnceLock;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::{ApiError, AppState};

/// The process's recorder, installed on first use (several servers in one test process
/// share it).
fn handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        // Fails only if another recorder was installed first; ours then stays empty.
        let _ = metrics::set_global_recorder(recorder);
        handle
    })
}

/// Installs the process's recorder (a process that records before serving, a worker).
pub(crate) fn install() {
    handle();
}

/// Records each request's latency by route template and status.
pub(crate) async fn track(req: Request, next: Next) -> Response {
    handle();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = req.method().to_string();
    let started = Instant::now();
    let resp = next.run(req).await;
    metrics::histogram!(
        "tenebra_http_request_seconds",
        "method" => method,
        "route" => route,
        "status" => resp.status().as_u16().to_string()
    )
    .record(started.elapsed().as_secs_f64());
    resp
}

/// `GET /metrics`: Prometheus text format, for the metrics token only (404 when none is set:
/// the endpoint does not exist then).
pub(crate) async fn render(
    State(state): State<AppState>,
    parts: axum::http::request::Parts,
) -> Result<Response, ApiError> {
    let Some(expected) = &state.metrics_hash else {
        return Err(ApiError::not_found("route"));
    };
    crate::check_service_token(&parts, &state, expected, "metrics")?;
    let depth = state.store.queue_depth().await?;
    metrics::gauge!("tenebra_queue_depth").set(depth as f64);
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        handle().render(),
    )
        .into_response())
}
