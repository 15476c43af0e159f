//! Tasks over HTTP: submit an encrypted input, follow its status, download the encrypted
//! result, cancel, list.
//!
//! Submitting checks everything that needs no key: the input's header (function, size,
//! circuit version) and that the tenant uploaded the key set it was encrypted under. The
//! input is stored as a blob before its row is inserted, so a worker never claims a task
//! without its input. Workers (see `worker.rs`) do the rest.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::{Extension, Json};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tenebra_api::{ErrorView, ProgressView, TaskPage, TaskView};
use tenebra_engine::InputHeader;
use tenebra_store::{new_id, NewTask, Scope, StoreError, Submitted, Task, TaskStatus};

use crate::audit::AuditTarget;
use crate::catalogue::{self, Want};
use crate::{blobs, ApiError, AppState, Caller, QueryParams};

/// Largest encrypted input accepted.
pub const TASK_INPUT_LIMIT: usize = 32 << 20;
/// Longest `Idempotency-Key` accepted.
const IDEMPOTENCY_KEY_LIMIT: usize = 255;

pub(crate) fn view(t: Task) -> TaskView {
    let error = match (t.error_code, t.error_message) {
        (Some(code), message) => Some(ErrorView {
            code,
            message: message.unwrap_or_default(),
        }),
        _ => None,
    };
    TaskView {
        id: t.id,
        function: t.function,
        size: u32::try_from(t.size).unwrap_or(u32::MAX),
        circuit_id: t.circuit_id,
        key_set_id: t.key_set_id,
        status: t.status.as_str().to_owned(),
        progress: ProgressView {
            done: t.progress_done,
            total: t.progress_total,
        },
        cost_cu: t.cost_cu,
        attempts: t.attempts,
        cancel_requested: t.cancel_requested,
        input_bytes: t.input_bytes,
        result_bytes: t.result_bytes,
        created_at: t.created_at,
        started_at: t.started_at,
        finished_at: t.finished_at,
        wall_ms: t.wall_ms,
        expires_at: t.expires_at,
        error,
    }
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(v) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let key = v
        .to_str()
        .ok()
        .filter(|k| !k.is_empty() && k.len() <= IDEMPOTENCY_KEY_LIMIT)
        .ok_or_else(|| {
            ApiError::bad_request(
                "invalid_idempotency_key",
                format!(
                    "Idempotency-Key must be 1 to {IDEMPOTENCY_KEY_LIMIT} visible ASCII characters"
                ),
            )
        })?;
    Ok(Some(key.to_owned()))
}

fn not_found(e: StoreError) -> ApiError {
    match e {
        StoreError::NotFound => ApiError::not_found("task"),
        e => e.into(),
    }
}

fn mismatch(function: &str, got: &str, runs: &impl std::fmt::Display) -> ApiError {
    ApiError::bad_request(
        "circuit_mismatch",
        format!(
            "the input was encrypted for another version of `{function}` (circuit {got}, this \
             server runs {runs}): encrypt it again with this server's function"
        ),
    )
}

pub(crate) async fn submit(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Extension<AuditTarget>, Json<TaskView>), ApiError> {
    caller.require(Scope::Compute)?;
    let idempotency_key = idempotency_key(&headers)?;
    let body = body.map_err(|r| {
        crate::error::body_error(
            &r,
            &format!("an encrypted input is at most {TASK_INPUT_LIMIT} bytes"),
        )
    })?;
    let header = InputHeader::read(&body)
        .map_err(|e| ApiError::bad_request("invalid_input", e.to_string()))?;
    let want = Want::Input {
        size: header.size(),
        circuit_id: header.circuit_id(),
    };
    let (circuit, cost_cu) =
        catalogue::resolve_priced(&state, &caller.tenant_id, header.function(), want).await?;
    if header.scheme() != circuit.scheme() {
        return Err(ApiError::bad_request(
            "circuit_mismatch",
            format!(
                "`{}` is a {} function, the input is encrypted with {} keys: encrypt it for \
                 this function",
                header.function(),
                circuit.scheme(),
                header.scheme()
            ),
        ));
    }
    if !header.matches(&circuit) {
        return Err(mismatch(
            header.function(),
            header.circuit_id(),
            &circuit.id(),
        ));
    }
    let key_set_id = header.key_set_id().to_owned();
    let tenant = &caller.tenant_id;
    let key_set = match state
        .store
        .key_set_by_fingerprint(tenant, &key_set_id)
        .await
    {
        Ok(k) => k,
        Err(StoreError::NotFound) => {
            return Err(ApiError::bad_request(
                "unknown_key_set",
                format!(
                    "the input is encrypted under key set {}, which this tenant has not \
                     uploaded: upload it first",
                    key_set_id
                ),
            ))
        }
        Err(e) => return Err(e.into()),
    };
    if key_set
        .expires_at
        .is_some_and(|e| e <= tenebra_store::now_ms())
    {
        return Err(ApiError::bad_request(
            "key_set_expired",
            format!(
                "key set {} has expired: upload it again (with a longer ttl_secs, or none)",
                key_set.id
            ),
        ));
    }
    let input_sha256 = hex::encode(Sha256::digest(&body));
    let new = NewTask {
        id: new_id("task"),
        api_key_id: caller.key_id.clone(),
        function: header.function().to_owned(),
        size: i64::from(header.size()),
        circuit_id: header.circuit_id().to_owned(),
        key_set_id: key_set.id,
        idempotency_key,
        input_sha256,
        input_bytes: body.len() as i64,
        cost_cu,
    };
    let input = blobs::task_input(tenant, &new.id);
    state
        .blobs
        .put(&input, &body)
        .await
        .map_err(|e| ApiError::internal(&e))?;
    let submitted = state
        .store
        .recording(caller.change(StatusCode::ACCEPTED))
        .submit_task(tenant, &new)
        .await;
    match submitted {
        Ok(Submitted::Created(t)) => {
            state.wake.notify_one();
            Ok((
                StatusCode::ACCEPTED,
                Extension(AuditTarget(t.id.clone())),
                Json(view(t)),
            ))
        }
        Ok(Submitted::Existing(t)) => {
            state
                .blobs
                .remove(&input)
                .await
                .map_err(|e| ApiError::internal(&e))?;
            if t.input_sha256 != new.input_sha256 {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    "idempotency_conflict",
                    format!(
                        "Idempotency-Key was already used for task {} with another input",
                        t.id
                    ),
                ));
            }
            Ok((
                StatusCode::OK,
                Extension(AuditTarget(t.id.clone())),
                Json(view(t)),
            ))
        }
        Err(e) => {
            let _ = state.blobs.remove(&input).await;
            Err(e.into())
        }
    }
}

/// Longest long poll (`GET /v1/tasks/{id}?wait=SECS`).
const MAX_WAIT_SECS: u64 = 60;
/// How often a long poll looks at the task anyway (an end whose notification was missed:
/// a lost PostgreSQL connection, a SQLite worker in another process).
const WAIT_POLL: Duration = Duration::from_secs(5);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct GetQuery {
    /// Long poll: answer when the task is final, or after this many seconds.
    wait: Option<u64>,
}

pub(crate) async fn get(
    State(state): State<AppState>,
    caller: Caller,
    UrlPath(id): UrlPath<String>,
    QueryParams(q): QueryParams<GetQuery>,
) -> Result<Json<TaskView>, ApiError> {
    caller.require(Scope::Read)?;
    // A tenant holds at most a few long polls at once; past that, the poll answers now.
    let slot = match q.wait {
        Some(w) if w > 0 => state.cpu.long_poll_slot(&caller.tenant_id),
        _ => None,
    };
    let wait = if slot.is_some() {
        q.wait.unwrap_or(0)
    } else {
        0
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(wait.min(MAX_WAIT_SECS));
    // Subscribed before reading, so an end announced in between is not missed.
    let mut ended = state.task_ended.subscribe();
    loop {
        let t = state
            .store
            .task(&caller.tenant_id, &id)
            .await
            .map_err(not_found)?;
        if t.status.is_final() || tokio::time::Instant::now() >= deadline {
            return Ok(Json(view(t)));
        }
        // Read the task again when it ends, at the slow poll, or at the deadline: one query
        // per wake-up, not one per quarter second.
        let poll = tokio::time::sleep(WAIT_POLL);
        tokio::pin!(poll);
        loop {
            tokio::select! {
                r = ended.recv() => match r {
                    Ok(ended_id) if *ended_id != *id => continue,
                    _ => break,
                },
                () = &mut poll => break,
                () = tokio::time::sleep_until(deadline) => break,
            }
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListQuery {
    status: Option<String>,
    limit: Option<u32>,
    after: Option<String>,
}

pub(crate) async fn list(
    State(state): State<AppState>,
    caller: Caller,
    QueryParams(q): QueryParams<ListQuery>,
) -> Result<Json<TaskPage>, ApiError> {
    caller.require(Scope::Read)?;
    let status = q
        .status
        .as_deref()
        .map(str::parse::<TaskStatus>)
        .transpose()?;
    let page = state
        .store
        .list_tasks(
            &caller.tenant_id,
            status,
            q.limit.unwrap_or(50),
            q.after.as_deref(),
        )
        .await?;
    Ok(Json(TaskPage {
        tasks: page.tasks.into_iter().map(view).collect(),
        next: page.next,
    }))
}

pub(crate) async fn cancel(
    State(state): State<AppState>,
    caller: Caller,
    UrlPath(id): UrlPath<String>,
) -> Result<Json<TaskView>, ApiError> {
    caller.require(Scope::Compute)?;
    let tenant = &caller.tenant_id;
    let (t, was_queued) = state
        .store
        .recording(caller.change(StatusCode::OK))
        .cancel_task(tenant, &id)
        .await
        .map_err(not_found)?;
    if was_queued {
        let _ = state.task_ended.send(t.id.as_str().into());
        state
            .blobs
            .remove(&blobs::task_input(tenant, &id))
            .await
            .map_err(|e| ApiError::internal(&e))?;
    }
    Ok(Json(view(t)))
}

pub(crate) async fn result(
    State(state): State<AppState>,
    caller: Caller,
    UrlPath(id): UrlPath<String>,
) -> Result<impl IntoResponse, ApiError> {
    caller.require(Scope::Read)?;
    let tenant = &caller.tenant_id;
    let t = state.store.task(tenant, &id).await.map_err(not_found)?;
    let conflict = |code, message: String| Err(ApiError::new(StatusCode::CONFLICT, code, message));
    match t.status {
        TaskStatus::Succeeded => {}
        TaskStatus::Queued | TaskStatus::Running => {
            return conflict("not_ready", format!("task {id} is {}", t.status.as_str()))
        }
        TaskStatus::Failed => {
            return conflict(
                "task_failed",
                format!("task {id} failed: {}", t.error_message.unwrap_or_default()),
            )
        }
        TaskStatus::Cancelled => {
            return conflict("task_cancelled", format!("task {id} was cancelled"))
        }
        TaskStatus::Expired => {
            return Err(ApiError::new(
                StatusCode::GONE,
                "result_expired",
                format!("the result of task {id} has expired and was deleted"),
            ))
        }
    }
    let path = blobs::task_result(tenant, &id, t.fence);
    let limit = t.result_bytes.unwrap_or(0).max(0) as u64;
    let bytes = state
        .blobs
        .get(&path, limit)
        .await
        .map_err(|e| ApiError::internal(&e))?;
    Ok((
        [(axum::http::header::CONTENT_TYPE, "application/octet-stream")],
        bytes,
    ))
}
