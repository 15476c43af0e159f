//! Key set upload, listing and deletion.
//!
//! An upload (`tenebra_engine::keys::pack_upload`: server key + public key, ~57 MiB) is
//! streamed to a temporary file with a size limit, never buffered in the request; it is then
//! checked (versions, conformance with the server's parameters) off the async threads. The
//! fingerprint is the key set id the client computes too, so re-uploading returns the
//! existing set.

use std::path::PathBuf;

use axum::body::Body;
use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use futures_util::StreamExt;
use serde::Deserialize;
use tenebra_engine::scheme::KEY_SET_LIMIT as UPLOAD_LIMIT;
use tenebra_engine::EngineError;
use tenebra_store::{new_id, KeySet, Scope, StoreError};
use tokio::io::AsyncWriteExt;

use crate::audit::AuditTarget;
use crate::{blobs, ApiError, AppState, Caller, KeySetView, QueryParams};

fn view(k: KeySet) -> KeySetView {
    KeySetView {
        id: k.id,
        fingerprint: k.fingerprint,
        size_bytes: k.size_bytes,
        created_at: k.created_at,
        expires_at: k.expires_at,
    }
}

/// Removes a temporary file when dropped, unless it was kept.
struct TempFile(Option<PathBuf>);

impl Drop for TempFile {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

async fn receive(state: &AppState, body: Body) -> Result<(TempFile, u64), ApiError> {
    let dir = state.tmp.clone();
    tokio::fs::create_dir_all(&dir)
        .await
        .map_err(|e| ApiError::internal(&e))?;
    let path = dir.join(new_id("upload"));
    let tmp = TempFile(Some(path.clone()));
    let mut file = tokio::fs::File::create(&path)
        .await
        .map_err(|e| ApiError::internal(&e))?;
    let mut total = 0u64;
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| ApiError::bad_request("invalid_body", e.to_string()))?;
        total += chunk.len() as u64;
        if total > UPLOAD_LIMIT {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!("a key set upload is at most {UPLOAD_LIMIT} bytes"),
            ));
        }
        file.write_all(&chunk)
            .await
            .map_err(|e| ApiError::internal(&e))?;
    }
    file.flush().await.map_err(|e| ApiError::internal(&e))?;
    Ok((tmp, total))
}

/// Query of an upload: an optional time to live.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct UploadQuery {
    /// Seconds until the key set is deleted (at least 60).
    ttl_secs: Option<u64>,
}

/// Shortest key set time to live: a task queued behind others should not lose its key.
const MIN_TTL_SECS: u64 = 60;

pub(crate) async fn upload(
    State(state): State<AppState>,
    caller: Caller,
    QueryParams(q): QueryParams<UploadQuery>,
    body: Body,
) -> Result<(StatusCode, Extension<AuditTarget>, Json<KeySetView>), ApiError> {
    caller.require(Scope::Compute)?;
    let expires_at = match q.ttl_secs {
        None => None,
        Some(t) if t >= MIN_TTL_SECS => Some(
            tenebra_store::now_ms()
                .saturating_add(i64::try_from(t.saturating_mul(1000)).unwrap_or(i64::MAX)),
        ),
        Some(_) => {
            return Err(ApiError::bad_request(
                "invalid_ttl",
                format!("ttl_secs must be at least {MIN_TTL_SECS}"),
            ))
        }
    };
    // Refused before the body is read: too many uploads at once, or no room left for a
    // key set (the size is checked again when the row is written).
    let _slot = state.cpu.upload_slot(&caller.tenant_id)?;
    state.store.check_key_set_quota(&caller.tenant_id).await?;
    let (tmp, size) = receive(&state, body).await?;
    let path = tmp
        .0
        .clone()
        .ok_or_else(|| ApiError::internal(&"temporary file lost"))?;
    let checked = state
        .cpu
        .run(&caller.tenant_id, move || {
            tenebra_engine::scheme::check_key_set_file(&path).map(|(_, id)| id)
        })
        .await?;
    let fingerprint = match checked {
        Ok(id) => id,
        Err(EngineError::Io(e)) => return Err(ApiError::internal(&e)),
        Err(e) => return Err(ApiError::bad_request("invalid_key_set", e.to_string())),
    };
    let tenant = &caller.tenant_id;
    match state
        .store
        .key_set_by_fingerprint(tenant, &fingerprint)
        .await
    {
        Ok(existing) => {
            // The same set again: its expiry becomes what this upload asks for.
            let existing = if existing.expires_at == expires_at {
                existing
            } else {
                state
                    .store
                    .recording(caller.change(StatusCode::OK))
                    .set_key_set_expiry(tenant, &existing.id, expires_at)
                    .await?
            };
            return Ok((
                StatusCode::OK,
                Extension(AuditTarget(existing.id.clone())),
                Json(view(existing)),
            ));
        }
        Err(StoreError::NotFound) => {}
        Err(e) => return Err(e.into()),
    }
    let id = new_id("ks");
    let dest = blobs::key_set(tenant, &id);
    let src = tmp
        .0
        .clone()
        .ok_or_else(|| ApiError::internal(&"temporary file lost"))?;
    state
        .blobs
        .put_file(&dest, &src)
        .await
        .map_err(|e| ApiError::internal(&e))?;
    drop(tmp);
    match state
        .store
        .recording(caller.change(StatusCode::CREATED))
        .create_key_set(tenant, &id, &fingerprint, size as i64, expires_at)
        .await
    {
        Ok(k) => Ok((
            StatusCode::CREATED,
            Extension(AuditTarget(k.id.clone())),
            Json(view(k)),
        )),
        Err(e) => {
            let _ = state.blobs.remove(&dest).await;
            match e {
                // A concurrent upload of the same set won.
                StoreError::Conflict(_) => {
                    let existing = state
                        .store
                        .key_set_by_fingerprint(tenant, &fingerprint)
                        .await?;
                    Ok((
                        StatusCode::OK,
                        Extension(AuditTarget(existing.id.clone())),
                        Json(view(existing)),
                    ))
                }
                e => Err(e.into()),
            }
        }
    }
}

pub(crate) async fn list(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Vec<KeySetView>>, ApiError> {
    caller.require(Scope::Read)?;
    let sets = state.store.list_key_sets(&caller.tenant_id).await?;
    Ok(Json(sets.into_iter().map(view).collect()))
}

pub(crate) async fn get(
    State(state): State<AppState>,
    caller: Caller,
    UrlPath(id): UrlPath<String>,
) -> Result<Json<KeySetView>, ApiError> {
    caller.require(Scope::Read)?;
    match state.store.key_set(&caller.tenant_id, &id).await {
        Ok(k) => Ok(Json(view(k))),
        Err(StoreError::NotFound) => Err(ApiError::not_found("key set")),
        Err(e) => Err(e.into()),
    }
}

pub(crate) async fn remove(
    State(state): State<AppState>,
    caller: Caller,
    UrlPath(id): UrlPath<String>,
) -> Result<StatusCode, ApiError> {
    caller.require(Scope::Compute)?;
    let store = state.store.recording(caller.change(StatusCode::NO_CONTENT));
    match store.delete_key_set(&caller.tenant_id, &id).await {
        Ok(()) => {
            state
                .blobs
                .remove(&blobs::key_set(&caller.tenant_id, &id))
                .await
                .map_err(|e| ApiError::internal(&e))?;
            Ok(StatusCode::NO_CONTENT)
        }
        Err(StoreError::NotFound) => Err(ApiError::not_found("key set")),
        Err(e) => Err(e.into()),
    }
}
