//! The audit log's HTTP side: every state-changing request is appended to the chain (the
//! store chains task transitions itself), signed checkpoints of the chain's head are kept
//! outside the database, and verification checks the chain against them.
//!
//! Checkpoints are Ed25519 signatures over `(seq, hash, at)` of the head, written as blobs
//! under `_audit/checkpoints/` by the workers' sweep; the signing key is a file outside the
//! database (`<data dir>/audit-signing.key` by default, 0600). A database edited, truncated
//! or rebuilt with recomputed hashes no longer matches the last signed checkpoint.

use std::path::Path;
use std::sync::{Arc, Mutex};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};
use tenebra_api::{AuditRecordView, AuditVerifyView};
use tenebra_store::{new_id, AuditEntry, AuditRecord, Change};
use tracing::Instrument;

use crate::{AppState, QueryParams, ServiceError};

/// Where checkpoints are stored in the blob store.
const CHECKPOINTS: &str = "_audit/checkpoints";
/// Longest `X-Request-Id` taken from a client.
const REQUEST_ID_LIMIT: usize = 64;

/// The key that signs checkpoints.
#[derive(Clone)]
pub struct AuditSigner(Arc<SigningKey>);

impl std::fmt::Debug for AuditSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AuditSigner({})", self.public_hex())
    }
}

impl AuditSigner {
    /// Reads the 32-byte key seed at `path`, or creates it (0600) if missing.
    pub fn load_or_create(path: &Path) -> Result<Self, ServiceError> {
        let seed = match std::fs::read(path) {
            Ok(bytes) => <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| {
                ServiceError::Config(format!("{} is not a 32-byte key", path.display()))
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let seed: [u8; 32] = rand::random();
                crate::write_private(path, &seed).map_err(ServiceError::file(path))?;
                seed
            }
            Err(e) => return Err(ServiceError::file(path)(e)),
        };
        Ok(Self(Arc::new(SigningKey::from_bytes(&seed))))
    }

    /// The public key checkpoints verify with, hex.
    pub fn public_hex(&self) -> String {
        hex::encode(self.0.verifying_key().as_bytes())
    }

    fn verifying_key(&self) -> VerifyingKey {
        self.0.verifying_key()
    }
}

/// A signed statement that the chain's record `seq` has `hash`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub seq: i64,
    pub hash: String,
    pub at: i64,
    pub public_key: String,
    pub signature: String,
}

fn signed_message(seq: i64, hash: &str, at: i64) -> Vec<u8> {
    format!("tenebra-audit-checkpoint\n{seq}\n{hash}\n{at}\n").into_bytes()
}

/// `(tenant, actor)` of a request.
type Actor = (Option<String>, String);

/// What the audit middleware knows of a request, shared with its extractors and handler:
/// who made it (set by authentication) and the record of its change, which the handler
/// hands to the store ([`RequestLog::change`]) so that it commits with the change.
#[derive(Debug, Clone)]
pub(crate) struct RequestLog(Arc<Mutex<Logged>>);

#[derive(Debug)]
struct Logged {
    action: String,
    target: String,
    request_id: String,
    actor: Option<Actor>,
    change: Option<Change>,
}

impl RequestLog {
    fn new(action: String, target: String, request_id: String) -> Self {
        Self(Arc::new(Mutex::new(Logged {
            action,
            target,
            request_id,
            actor: None,
            change: None,
        })))
    }

    pub(crate) fn set_actor(&self, tenant: Option<String>, actor: String) {
        if let Ok(mut l) = self.0.lock() {
            l.actor = Some((tenant, actor));
        }
    }

    /// The audit record of the change this request makes, stating `answer` (what the
    /// request answers once the change is made), for [`tenebra_store::Store::recording`];
    /// `None` before the caller is authenticated.
    pub(crate) fn change(&self, answer: StatusCode) -> Option<Change> {
        let mut l = self.0.lock().ok()?;
        let change = Change::new(l.entry(answer, None)?);
        l.change = Some(change.clone());
        Some(change)
    }

    /// The request's record as answered with `status`, unless the store committed it with
    /// the change and the answer is the one it states; `None` too when nobody was
    /// authenticated (such requests change nothing and are not recorded).
    fn unrecorded(&self, status: StatusCode, target: Option<&str>) -> Option<AuditEntry> {
        let l = self.0.lock().ok()?;
        let entry = l.entry(status, target)?;
        let committed = l
            .change
            .as_ref()
            .is_some_and(|c| c.is_committed() && c.outcome() == entry.outcome);
        (!committed).then_some(entry)
    }
}

impl Logged {
    /// The request's record, answered with `status`, against `target` (default: the
    /// path); `None` before authentication.
    fn entry(&self, status: StatusCode, target: Option<&str>) -> Option<AuditEntry> {
        let (tenant_id, actor) = self.actor.clone()?;
        Some(AuditEntry {
            tenant_id,
            actor,
            action: self.action.clone(),
            target: target.unwrap_or(&self.target).to_owned(),
            outcome: status.as_u16().to_string(),
            request_id: self.request_id.clone(),
        })
    }
}

/// The id a handler names as the target of its change (e.g. the task it created), when
/// the path does not name it.
#[derive(Debug, Clone)]
pub(crate) struct AuditTarget(pub String);

fn request_id(req: &Request) -> String {
    req.headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            !v.is_empty() && v.len() <= REQUEST_ID_LIMIT && v.bytes().all(|b| b.is_ascii_graphic())
        })
        .map_or_else(|| new_id("req"), str::to_owned)
}

/// Gives every request an id (`X-Request-Id`, the client's if it sent a sane one), runs it in
/// a `request` span that carries the id (so every log line of the request, an internal error's
/// included, names the id the client sees), logs its outcome, and sees that each
/// authenticated state-changing request is in the audit log: in its change's transaction
/// when it changed something ([`RequestLog::change`]), after the handler otherwise.
pub(crate) async fn track(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let id = request_id(&req);
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| req.uri().path().to_owned(), |p| p.as_str().to_owned());
    let span = tracing::info_span!("request", id = %id, method = %req.method(), route = %route);
    let changes = !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    if !changes {
        return tracked(state, req, next, id, route, false)
            .instrument(span)
            .await;
    }
    // A change runs to its end in its own task, audit record included, even if the client
    // goes away: hyper drops the future of a request whose connection closes, which would
    // otherwise stop a handler between its commit and the rest of its work (blobs, the
    // audit append).
    let run = tokio::spawn(tracked(state, req, next, id, route, true).instrument(span));
    match run.await {
        Ok(resp) => resp,
        Err(e) => crate::ApiError::internal(&e).into_response(),
    }
}

async fn tracked(
    state: AppState,
    mut req: Request,
    next: Next,
    id: String,
    route: String,
    changes: bool,
) -> Response {
    let started = std::time::Instant::now();
    let log = RequestLog::new(
        format!("{} {route}", req.method()),
        req.uri().path().to_owned(),
        id.clone(),
    );
    req.extensions_mut().insert(log.clone());
    let mut resp = next.run(req).await;
    tracing::info!(
        status = resp.status().as_u16(),
        ms = started.elapsed().as_millis() as u64,
        "answered"
    );
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert("x-request-id", v);
    }
    // A change the store committed carries its record already; the rest (refusals,
    // failures, writes that changed nothing, or an answer other than the one recorded)
    // are recorded now.
    if changes {
        let target = resp.extensions().get::<AuditTarget>().map(|t| t.0.as_str());
        if let Some(entry) = log.unrecorded(resp.status(), target) {
            if let Err(e) = state.store.append_audit(&entry).await {
                tracing::error!(error = %e, action = %entry.action, "appending to the audit log");
            }
        }
    }
    resp
}

pub(crate) fn view(r: AuditRecord) -> AuditRecordView {
    AuditRecordView {
        seq: r.seq,
        at: r.at,
        tenant_id: r.entry.tenant_id,
        actor: r.entry.actor,
        action: r.entry.action,
        target: r.entry.target,
        outcome: r.entry.outcome,
        request_id: r.entry.request_id,
        prev_hash: r.prev_hash,
        hash: r.hash,
    }
}

/// `?after=SEQ&limit=N` for audit listings.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AuditQuery {
    after: Option<i64>,
    limit: Option<u32>,
}

/// Reads one page of records (a tenant's, or every one with `None`).
pub(crate) async fn page(
    state: &AppState,
    tenant: Option<&str>,
    QueryParams(q): QueryParams<AuditQuery>,
) -> Result<Vec<AuditRecordView>, crate::ApiError> {
    let records = state
        .store
        .audit_records(tenant, q.after.unwrap_or(0), q.limit.unwrap_or(100))
        .await?;
    Ok(records.into_iter().map(view).collect())
}

/// Signs the chain's head into a checkpoint blob, unless the last checkpoint already has
/// it; returns the new checkpoint.
pub async fn checkpoint(state: &AppState) -> Result<Option<Checkpoint>, ServiceError> {
    let (seq, hash) = state.store.audit_head().await?;
    if seq == 0 {
        return Ok(None);
    }
    let names = state
        .blobs
        .list(CHECKPOINTS)
        .await
        .map_err(ServiceError::blobs("listing the audit checkpoints"))?;
    let name = format!("{CHECKPOINTS}/{seq:020}.json");
    if names.last() == Some(&name) {
        return Ok(None);
    }
    let at = tenebra_store::now_ms();
    let signature = state.audit_signer.0.sign(&signed_message(seq, &hash, at));
    let cp = Checkpoint {
        seq,
        hash,
        at,
        public_key: state.audit_signer.public_hex(),
        signature: hex::encode(signature.to_bytes()),
    };
    let written = async {
        let bytes = serde_json::to_vec(&cp).map_err(std::io::Error::other)?;
        state.blobs.put_plain(&name.as_str().into(), bytes).await
    };
    written
        .await
        .map_err(ServiceError::blobs(format!("writing {name}")))?;
    Ok(Some(cp))
}

/// Largest checkpoint blob read.
const CHECKPOINT_LIMIT: u64 = 4 << 10;

/// Recomputes the chain and checks it against every signed checkpoint.
pub async fn verify(state: &AppState) -> Result<AuditVerifyView, ServiceError> {
    let chain = state.store.verify_audit().await?;
    let mut first_bad = chain.first_bad.map(|b| (b.seq, b.reason));
    let mut worse = |seq: i64, reason: String| {
        if first_bad.as_ref().is_none_or(|(s, _)| seq < *s) {
            first_bad = Some((seq, reason));
        }
    };
    let names = state
        .blobs
        .list(CHECKPOINTS)
        .await
        .map_err(ServiceError::blobs("listing the audit checkpoints"))?;
    let key = state.audit_signer.verifying_key();
    let mut checkpoints = 0;
    for name in names {
        let bytes = state
            .blobs
            .get_plain(&name.as_str().into(), CHECKPOINT_LIMIT)
            .await
            .map_err(ServiceError::blobs(format!("reading {name}")))?;
        let Ok(cp) = serde_json::from_slice::<Checkpoint>(&bytes) else {
            worse(0, format!("checkpoint {name} is not a checkpoint"));
            continue;
        };
        let signed = hex::decode(&cp.signature)
            .ok()
            .and_then(|s| Signature::from_slice(&s).ok())
            .is_some_and(|s| {
                key.verify(&signed_message(cp.seq, &cp.hash, cp.at), &s)
                    .is_ok()
            });
        if !signed {
            worse(
                cp.seq,
                format!("checkpoint {name} is not signed by this server's audit key"),
            );
            continue;
        }
        checkpoints += 1;
        match state.store.audit_hash_at(cp.seq).await? {
            None => worse(
                cp.seq.min(chain.last_seq + 1),
                format!("record {} of a signed checkpoint is missing", cp.seq),
            ),
            Some(h) if h != cp.hash => worse(
                cp.seq,
                format!(
                    "record {} differs from its signed checkpoint (the chain was rewritten \
                     at or before it)",
                    cp.seq
                ),
            ),
            Some(_) => {}
        }
    }
    Ok(AuditVerifyView {
        ok: first_bad.is_none(),
        records: chain.records,
        last_seq: chain.last_seq,
        last_hash: chain.last_hash,
        checkpoints,
        first_bad_seq: first_bad.as_ref().map(|(s, _)| *s),
        reason: first_bad.map(|(_, r)| r),
    })
}
