//! The model repository over HTTP: owners upload models (JSON), versioned per name; a model's
//! page (shape, splits, measured precision) is public to the tenants it is shared with, its
//! weights never are. Users run a split of a model as a task on their encrypted input:
//! the input names `model:<owner>/<name>/<version>/<layers>`, and the circuit is compiled on
//! the server from the stored model (cached per split).
//!
//! Routes: `POST /v1/models`; `GET /v1/models`; `GET /v1/models/{owner}/{name}[?version]`;
//! `GET /v1/models/{owner}/{name}/signature?layers=K[&version]`;
//! `GET /v1/models/{owner}/{name}/layers?from=K[&version]` (the plaintext layers after a split:
//! the owner, or a grantee allowed to); `GET /v1/model-grants/{name}`;
//! `PUT|DELETE /v1/model-grants/{name}/{tenant}` (the owner's).

use std::sync::{Arc, OnceLock};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tenebra_api::model::{GrantView, ModelPage, ModelSignature, ModelView};
use tenebra_functions::model::{
    model_function, parse_model_function, Compiled, Model, ModelError, RemainingLayers,
};
use tenebra_store::{ModelGrant, ModelListing, ModelRow, Scope, StoreError, Uploaded};

use crate::audit::AuditTarget;
use crate::{ApiError, AppState, Caller, QueryParams};

/// Largest model JSON accepted.
pub const MODEL_LIMIT: usize = 8 << 20;

fn view(m: &ModelRow) -> Result<ModelView, ApiError> {
    view_of(ModelListing {
        owner_id: m.owner_id.clone(),
        name: m.name.clone(),
        version: m.version,
        model_sha256: m.model_sha256.clone(),
        page_json: m.page_json.clone(),
        created_at: m.created_at,
    })
}

fn view_of(m: ModelListing) -> Result<ModelView, ApiError> {
    let page: ModelPage = serde_json::from_str(&m.page_json).map_err(|e| ApiError::internal(&e))?;
    Ok(ModelView {
        owner_id: m.owner_id,
        name: m.name,
        version: m.version,
        model_sha256: m.model_sha256,
        created_at: m.created_at,
        page,
    })
}

fn model_error(e: ModelError) -> ApiError {
    match e {
        ModelError::Invalid(m) => ApiError::bad_request("invalid_model", m),
        ModelError::Split(m) => ApiError::bad_request("invalid_split", m),
        e @ ModelError::TooDeep { .. } => ApiError::bad_request("model_too_deep", e.to_string()),
    }
}

/// Query of an upload: JSON (default), or an ONNX file with what ONNX does not say.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct UploadQuery {
    /// `json` (default) or `onnx`.
    format: Option<String>,
    /// ONNX: the model's name.
    name: Option<String>,
    /// ONNX: the inputs' range (default 0..=1).
    input_min: Option<f64>,
    input_max: Option<f64>,
}

/// `POST /v1/models[?format=onnx&name=N&input_min=A&input_max=B]`: stores a model as the
/// next version of its name (the same model again returns the version holding it). An ONNX
/// upload is imported (`Gemm`, `MatMul`, `Add`, `Relu`, `Sigmoid`) and stored as JSON.
pub(crate) async fn upload(
    State(state): State<AppState>,
    caller: Caller,
    QueryParams(q): QueryParams<UploadQuery>,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Extension<AuditTarget>, Json<ModelView>), ApiError> {
    caller.require(Scope::Compute)?;
    let body = body.map_err(|r| {
        crate::error::body_error(&r, &format!("a model is at most {MODEL_LIMIT} bytes"))
    })?;
    let model = match q.format.as_deref() {
        None | Some("json") => state
            .cpu
            .run(&caller.tenant_id, move || Model::parse(&body))
            .await?
            .map_err(model_error)?,
        Some("onnx") => {
            let name = q.name.clone().ok_or_else(|| {
                ApiError::bad_request("invalid_model", "an ONNX upload needs ?name=")
            })?;
            let (lo, hi) = (q.input_min.unwrap_or(0.0), q.input_max.unwrap_or(1.0));
            state
                .cpu
                .run(&caller.tenant_id, move || {
                    tenebra_functions::onnx::model_from_onnx(&body, &name, lo, hi)
                })
                .await?
                .map_err(model_error)?
        }
        Some(other) => {
            return Err(ApiError::bad_request(
                "invalid_model",
                format!("format `{other}` is not `json` or `onnx`"),
            ))
        }
    };
    let json = serde_json::to_string(&model).map_err(|e| ApiError::internal(&e))?;
    let sha = hex::encode(Sha256::digest(json.as_bytes()));
    // The same model again is the version that holds it: its page is not computed again.
    if let Some(row) = state
        .store
        .model_by_sha(&caller.tenant_id, &model.name, &sha)
        .await?
    {
        return answer(StatusCode::OK, &row);
    }
    // Compiling every split and measuring it takes CPU: off the async threads.
    let m = model.clone();
    let page = state.cpu.run(&caller.tenant_id, move || m.page()).await?;
    if page.splits.iter().all(|s| s.refused.is_some()) {
        let why = page.splits.first().and_then(|s| s.refused.clone());
        return Err(ApiError::bad_request(
            "model_too_deep",
            why.unwrap_or_else(|| "no split of this model can run encrypted".into()),
        ));
    }
    let page_json = serde_json::to_string(&page).map_err(|e| ApiError::internal(&e))?;
    let up = state
        .store
        .recording(caller.change(StatusCode::CREATED))
        .upload_model(&caller.tenant_id, &model.name, &sha, &json, &page_json)
        .await?;
    match up {
        Uploaded::Created(r) => answer(StatusCode::CREATED, &r),
        Uploaded::Existing(r) => answer(StatusCode::OK, &r),
    }
}

/// An upload's answer: the stored version, which is also the audit record's target.
fn answer(
    status: StatusCode,
    row: &ModelRow,
) -> Result<(StatusCode, Extension<AuditTarget>, Json<ModelView>), ApiError> {
    let target = format!("{}/{}/{}", row.owner_id, row.name, row.version);
    Ok((status, Extension(AuditTarget(target)), Json(view(row)?)))
}

/// `GET /v1/models`: the caller's models and those shared with it.
pub(crate) async fn list(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Vec<ModelView>>, ApiError> {
    caller.require(Scope::Read)?;
    let rows = state.store.list_models(&caller.tenant_id).await?;
    Ok(Json(
        rows.into_iter().map(view_of).collect::<Result<_, _>>()?,
    ))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct VersionQuery {
    version: Option<i64>,
    layers: Option<usize>,
    from: Option<usize>,
}

/// The model if the caller owns it or was granted it (else 404: others' models do not
/// exist for a tenant); with the grant's `share_layers`.
async fn accessible(
    state: &AppState,
    tenant: &str,
    owner: &str,
    name: &str,
    version: Option<i64>,
) -> Result<(ModelRow, bool), ApiError> {
    let shares = if tenant == owner {
        true
    } else {
        match state.store.model_grant(owner, name, tenant).await? {
            // An offer the tenant has not accepted gives nothing yet.
            Some(g) if g.accepted_at.is_some() => g.share_layers,
            _ => return Err(ApiError::not_found("model")),
        }
    };
    match state.store.model(owner, name, version).await {
        Ok(m) => Ok((m, shares)),
        Err(StoreError::NotFound) => Err(ApiError::not_found("model")),
        Err(e) => Err(e.into()),
    }
}

/// `GET /v1/models/{owner}/{name}`.
pub(crate) async fn get(
    State(state): State<AppState>,
    caller: Caller,
    UrlPath((owner, name)): UrlPath<(String, String)>,
    QueryParams(q): QueryParams<VersionQuery>,
) -> Result<Json<ModelView>, ApiError> {
    caller.require(Scope::Read)?;
    let (m, _) = accessible(&state, &caller.tenant_id, &owner, &name, q.version).await?;
    Ok(Json(view(&m)?))
}

/// Bytes of parsed models and compiled splits kept over all tenants.
const COMPILED_CACHE_BYTES: u64 = 512 << 20;

type Split = (Arc<Model>, Arc<Compiled>);

/// Compiled splits kept for the next tasks and signature requests, bounded by bytes.
fn compiled(m: &ModelRow, layers: usize) -> Result<Split, ApiError> {
    use tenebra_engine::cache::{ByBytes, BytesCache};
    static CACHE: OnceLock<BytesCache<String, Split>> = OnceLock::new();
    let key = format!("{}/{}/{layers}", m.owner_id, m.model_sha256);
    let cache = CACHE.get_or_init(|| BytesCache::with_weighter(64, COMPILED_CACHE_BYTES, ByBytes));
    if let Some((_, split)) = cache.get(&key) {
        return Ok(split);
    }
    let model = Model::parse(m.model_json.as_bytes()).map_err(|e| ApiError::internal(&e))?;
    let comp = Arc::new(model.compile(layers).map_err(model_error)?);
    let model = Arc::new(model);
    // The model's floats and the split's integers take about what the JSON took, each.
    let bytes = 2 * m.model_json.len() as u64 + 4096;
    cache.insert(key, (bytes, (model.clone(), comp.clone())));
    Ok((model, comp))
}

/// `GET /v1/models/{owner}/{name}/signature?layers=K`: what a user encrypts for.
pub(crate) async fn signature(
    State(state): State<AppState>,
    caller: Caller,
    UrlPath((owner, name)): UrlPath<(String, String)>,
    QueryParams(q): QueryParams<VersionQuery>,
) -> Result<Json<ModelSignature>, ApiError> {
    caller.require(Scope::Read)?;
    let (m, _) = accessible(&state, &caller.tenant_id, &owner, &name, q.version).await?;
    let layers = q.layers.ok_or_else(|| {
        ApiError::bad_request(
            "invalid_split",
            "give ?layers=K (the layers to run encrypted)",
        )
    })?;
    let row = m.clone();
    let (model, comp) = state
        .cpu
        .run(&caller.tenant_id, move || compiled(&row, layers))
        .await??;
    let function = model_function(&m.owner_id, &m.name, m.version, layers);
    Ok(Json(model.signature(&comp, function)))
}

/// `GET /v1/models/{owner}/{name}/layers?from=K`: the owner, or a grantee the owner allowed.
pub(crate) async fn layers(
    State(state): State<AppState>,
    caller: Caller,
    UrlPath((owner, name)): UrlPath<(String, String)>,
    QueryParams(q): QueryParams<VersionQuery>,
) -> Result<Json<RemainingLayers>, ApiError> {
    caller.require(Scope::Read)?;
    let (m, shares) = accessible(&state, &caller.tenant_id, &owner, &name, q.version).await?;
    if !shares {
        return Err(ApiError::forbidden(
            "the owner of this model has not shared its layers with you; hand the decrypted \
             activations to the owner's endpoint instead",
        ));
    }
    let model = Model::parse(m.model_json.as_bytes()).map_err(|e| ApiError::internal(&e))?;
    let from = q.from.unwrap_or(0);
    if from == 0 || from > model.max_encrypted_layers() {
        return Err(ApiError::bad_request(
            "invalid_split",
            format!("?from must be 1..={}", model.max_encrypted_layers()),
        ));
    }
    Ok(Json(RemainingLayers {
        from,
        layers: model.layers[from..].to_vec(),
    }))
}

fn grant_view(g: ModelGrant) -> GrantView {
    GrantView {
        owner_id: g.owner_id,
        name: g.name,
        tenant_id: g.grantee_id,
        share_layers: g.share_layers,
        created_at: g.created_at,
        accepted_at: g.accepted_at,
    }
}

/// `GET /v1/model-offers`: grants offered to the caller that it has not accepted.
pub(crate) async fn offers(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Vec<GrantView>>, ApiError> {
    caller.require(Scope::Read)?;
    let g = state.store.model_offers(&caller.tenant_id).await?;
    Ok(Json(g.into_iter().map(grant_view).collect()))
}

/// `POST /v1/model-offers/{owner}/{name}`: the caller accepts the owner's offer; only then
/// does the grant give it the model.
pub(crate) async fn accept(
    State(state): State<AppState>,
    caller: Caller,
    UrlPath((owner, name)): UrlPath<(String, String)>,
) -> Result<Json<GrantView>, ApiError> {
    caller.require(Scope::Compute)?;
    match state
        .store
        .recording(caller.change(StatusCode::OK))
        .accept_model_grant(&owner, &name, &caller.tenant_id)
        .await
    {
        Ok(g) => Ok(Json(grant_view(g))),
        Err(StoreError::NotFound) => Err(ApiError::not_found("offer")),
        Err(e) => Err(e.into()),
    }
}

/// `DELETE /v1/model-offers/{owner}/{name}`: the caller declines (or gives up) a grant.
pub(crate) async fn decline(
    State(state): State<AppState>,
    caller: Caller,
    UrlPath((owner, name)): UrlPath<(String, String)>,
) -> Result<StatusCode, ApiError> {
    caller.require(Scope::Compute)?;
    match state
        .store
        .recording(caller.change(StatusCode::NO_CONTENT))
        .revoke_model(&owner, &name, &caller.tenant_id)
        .await
    {
        Ok(()) => Ok(StatusCode::NO_CONTENT),
        Err(StoreError::NotFound) => Err(ApiError::not_found("offer")),
        Err(e) => Err(e.into()),
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct GrantBody {
    /// Whether the tenant may fetch the plaintext layers after a split (default false).
    #[serde(default)]
    share_layers: bool,
}

/// `PUT /v1/model-grants/{name}/{tenant}`.
pub(crate) async fn grant(
    State(state): State<AppState>,
    caller: Caller,
    UrlPath((name, tenant)): UrlPath<(String, String)>,
    body: Option<Json<GrantBody>>,
) -> Result<Json<GrantView>, ApiError> {
    caller.require(Scope::Compute)?;
    if tenant == caller.tenant_id {
        return Err(ApiError::bad_request(
            "invalid_grant",
            "owners need no grant",
        ));
    }
    let share = body.map(|Json(b)| b.share_layers).unwrap_or(false);
    match state
        .store
        .recording(caller.change(StatusCode::OK))
        .grant_model(&caller.tenant_id, &name, &tenant, share)
        .await
    {
        Ok(g) => Ok(Json(grant_view(g))),
        Err(StoreError::NotFound) => Err(ApiError::not_found("model or tenant")),
        Err(e) => Err(e.into()),
    }
}

/// `DELETE /v1/model-grants/{name}/{tenant}`.
pub(crate) async fn revoke(
    State(state): State<AppState>,
    caller: Caller,
    UrlPath((name, tenant)): UrlPath<(String, String)>,
) -> Result<StatusCode, ApiError> {
    caller.require(Scope::Compute)?;
    match state
        .store
        .recording(caller.change(StatusCode::NO_CONTENT))
        .revoke_model(&caller.tenant_id, &name, &tenant)
        .await
    {
        Ok(()) => Ok(StatusCode::NO_CONTENT),
        Err(StoreError::NotFound) => Err(ApiError::not_found("grant")),
        Err(e) => Err(e.into()),
    }
}

/// `GET /v1/model-grants/{name}`.
pub(crate) async fn grants(
    State(state): State<AppState>,
    caller: Caller,
    UrlPath(name): UrlPath<String>,
) -> Result<Json<Vec<GrantView>>, ApiError> {
    caller.require(Scope::Read)?;
    let g = state.store.model_grants(&caller.tenant_id, &name).await?;
    Ok(Json(g.into_iter().map(grant_view).collect()))
}

/// The circuit of a model split a task names, if `tenant` may run it.
pub(crate) async fn resolve(
    state: &AppState,
    tenant: &str,
    function: &str,
) -> Result<Option<Arc<Compiled>>, ApiError> {
    let Some((owner, name, version, layers)) = parse_model_function(function) else {
        return Ok(None);
    };
    let (m, _) = accessible(state, tenant, owner, name, Some(version)).await?;
    let (_, comp) = state
        .cpu
        .run(tenant, move || compiled(&m, layers))
        .await??;
    Ok(Some(comp))
}
