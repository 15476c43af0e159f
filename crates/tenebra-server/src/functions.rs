//! Functions: the built-ins, and circuits tenants deploy (validated, versioned per name,
//! addressed by name and version or by content id).
//!
//! A deployed function is the canonical circuit JSON the builders make (Rust's
//! `tenebra_circuit::builder`, later Python's). It is parsed under limits and validated
//! before anything is stored; its name is the circuit's name and may not shadow a built-in.
//! Inputs for it are encrypted against the circuit (`GET /v1/functions/{name}/circuit`);
//! the input's header names the circuit id, so a task always runs the exact version the
//! client encrypted for.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use serde::Deserialize;
use tenebra_api::{FunctionView, SizedCost};
use tenebra_circuit::packed::ValidPacked;
use tenebra_circuit::validate::{parse_circuit, Limits};
use tenebra_circuit::{Circuit, ValidCircuit};
use tenebra_store::{Deployed, Function, Scope, StoreError};

use crate::{ApiError, AppState, Caller, QueryParams};

/// Largest circuit JSON accepted for deployment.
pub const CIRCUIT_LIMIT: usize = 4 << 20;

fn limits() -> Limits {
    Limits {
        max_json_bytes: CIRCUIT_LIMIT,
        ..Limits::default()
    }
}

/// `a: u16[5], b: i8 -> c: u16`.
fn signature(c: &Circuit) -> String {
    let list = |items: Vec<String>| items.join(", ");
    format!(
        "{} -> {}",
        list(
            c.inputs
                .iter()
                .map(|i| format!("{}: {}", i.name, i.ty))
                .collect()
        ),
        list(
            c.outputs
                .iter()
                .map(|o| format!("{}: {}", o.name, o.ty))
                .collect()
        )
    )
}

/// A built-in's circuit at `size`; a size out of its range is the client's mistake.
fn builtin_circuit(f: &tenebra_functions::Builtin, size: u32) -> Result<ValidCircuit, ApiError> {
    f.circuit(size)
        .map_err(|e| ApiError::bad_request("invalid_size", e.to_string()))
}

fn builtin_view(
    f: &tenebra_functions::Builtin,
    size: Option<u32>,
) -> Result<FunctionView, ApiError> {
    let at_size = match size {
        None => None,
        Some(n) => {
            let c = builtin_circuit(f, n)?;
            let cost = tenebra_circuit::cost::cost(&c);
            Some(SizedCost {
                size: n,
                circuit_id: c.id().to_string(),
                cost_cu: cost.cu,
                ops: cost.ops,
            })
        }
    };
    Ok(FunctionView {
        name: f.name.to_owned(),
        summary: f.summary.to_owned(),
        signature: f.signature.to_owned(),
        kind: "builtin".to_owned(),
        min_size: *f.sizes.start(),
        max_size: *f.sizes.end(),
        at_size,
        version: None,
    })
}

/// A stored circuit, parsed again (it was validated before it was stored; limits may have
/// changed since, so it goes through the same gate).
fn parse_stored(f: &Function) -> Result<ValidCircuit, ApiError> {
    if is_packed_json(f.circuit_json.as_bytes()) {
        return Err(ApiError::bad_request(
            "circuit_mismatch",
            format!(
                "`{}` is a packed (BFV) function: encrypt for it with the packed keys",
                f.name
            ),
        ));
    }
    parse_circuit(f.circuit_json.as_bytes(), &limits()).map_err(|e| ApiError::internal(&e))
}

/// A rejected circuit as the client sees it: `circuit_too_large` (with the numbers) when it is
/// valid but would need more than a worker gives one task, `invalid_circuit` otherwise.
pub(crate) fn circuit_error(e: &tenebra_circuit::ValidationError) -> ApiError {
    match e {
        tenebra_circuit::ValidationError::TooLarge { .. } => {
            ApiError::bad_request("circuit_too_large", e.to_string())
        }
        e => ApiError::bad_request("invalid_circuit", e.to_string()),
    }
}

/// A bounded, non-secret label for a task's function in metrics: a built-in's own name, or
/// the kind of a tenant's function (`model`, `deployed`), never the name a tenant chose.
pub(crate) fn kind_label(function: &str) -> &'static str {
    if let Ok(f) = tenebra_functions::find(function) {
        return f.name;
    }
    if let Some(f) = tenebra_functions::find_packed(function) {
        return f.name;
    }
    if function.starts_with("model:") {
        "model"
    } else {
        "deployed"
    }
}

/// Whether a circuit JSON declares the packed scheme.
pub(crate) fn is_packed_json(bytes: &[u8]) -> bool {
    #[derive(Deserialize)]
    struct Scheme {
        #[serde(default)]
        scheme: String,
    }
    serde_json::from_slice::<Scheme>(bytes)
        .is_ok_and(|s| s.scheme == tenebra_circuit::packed::SCHEME_BFV)
}

fn packed_limits() -> tenebra_circuit::packed::PackedLimits {
    tenebra_circuit::packed::PackedLimits {
        max_json_bytes: CIRCUIT_LIMIT,
        ..Default::default()
    }
}

fn parse_stored_packed(f: &Function) -> Result<ValidPacked, ApiError> {
    tenebra_circuit::packed::parse_packed(f.circuit_json.as_bytes(), &packed_limits())
        .map_err(|e| ApiError::internal(&e))
}

/// `x: [-8..=7; 16] -> y: [3] (bfv, N=4096, t=65537)`.
fn packed_signature(c: &ValidPacked) -> String {
    let sig = c.signature();
    let inputs: Vec<String> = sig
        .inputs
        .iter()
        .map(|i| format!("{}: [{}..={}; {}]", i.name, i.min, i.max, i.len))
        .collect();
    let outputs: Vec<String> = sig
        .outputs
        .iter()
        .map(|o| format!("{}: [{}]", o.name, o.len))
        .collect();
    format!(
        "{} -> {} (bfv, N={}, t={})",
        inputs.join(", "),
        outputs.join(", "),
        sig.degree,
        sig.plain_modulus
    )
}

fn deployed_view(f: &Function) -> Result<FunctionView, ApiError> {
    if is_packed_json(f.circuit_json.as_bytes()) {
        let c = parse_stored_packed(f)?;
        return Ok(FunctionView {
            name: f.name.clone(),
            summary: format!("deployed packed circuit, version {}", f.version),
            signature: packed_signature(&c),
            kind: "deployed".to_owned(),
            min_size: 0,
            max_size: 0,
            at_size: Some(SizedCost {
                size: 0,
                circuit_id: f.circuit_id.clone(),
                cost_cu: c.cost_cu(),
                ops: 0,
            }),
            version: Some(f.version),
        });
    }
    let c = parse_stored(f)?;
    let cost = tenebra_circuit::cost::cost(&c);
    Ok(FunctionView {
        name: f.name.clone(),
        summary: format!("deployed circuit, version {}", f.version),
        signature: signature(&c),
        kind: "deployed".to_owned(),
        min_size: 0,
        max_size: 0,
        at_size: Some(SizedCost {
            size: 0,
            circuit_id: f.circuit_id.clone(),
            cost_cu: cost.cu,
            ops: cost.ops,
        }),
        version: Some(f.version),
    })
}

/// What a task runs: a TFHE circuit, or a packed (BFV) circuit.
pub(crate) enum Runnable {
    Tfhe(ValidCircuit),
    Packed(PackedRef),
}

/// A packed circuit: a built-in's, or a model split compiled from the repository.
pub(crate) enum PackedRef {
    Builtin(&'static ValidPacked),
    Model(std::sync::Arc<tenebra_functions::model::Compiled>),
    Deployed(Box<ValidPacked>),
}

impl PackedRef {
    pub(crate) fn circuit(&self) -> &ValidPacked {
        match self {
            PackedRef::Builtin(c) => c,
            PackedRef::Model(m) => crate::models::circuit_of(m),
            PackedRef::Deployed(c) => c,
        }
    }
}

/// The packed circuit a task's function names (a packed built-in or a model split the
/// tenant may run), if it is one.
pub(crate) async fn resolve_packed(
    state: &AppState,
    tenant: &str,
    function: &str,
    circuit_id: Option<&str>,
) -> Result<Option<PackedRef>, ApiError> {
    if let Some(f) = tenebra_functions::find_packed(function) {
        return Ok(Some(PackedRef::Builtin(f.circuit())));
    }
    if let Some(m) = crate::models::resolve(state, tenant, function).await? {
        return Ok(Some(PackedRef::Model(m)));
    }
    let Some(id) = circuit_id else {
        return Ok(None);
    };
    match state
        .store
        .function_by_circuit(tenant, function, id)
        .await?
    {
        Some(f) if is_packed_json(f.circuit_json.as_bytes()) => {
            let c = state
                .cpu
                .run(tenant, move || parse_stored_packed(&f))
                .await??;
            Ok(Some(PackedRef::Deployed(Box::new(c))))
        }
        _ => Ok(None),
    }
}

/// A packed built-in's view: no sizes; its circuit id and cost.
fn packed_view(f: &tenebra_functions::PackedBuiltin) -> FunctionView {
    let c = f.circuit();
    FunctionView {
        name: f.name.to_owned(),
        summary: f.summary.to_owned(),
        signature: f.signature.to_owned(),
        kind: "builtin".to_owned(),
        min_size: 0,
        max_size: 0,
        at_size: Some(SizedCost {
            size: 0,
            circuit_id: c.id().to_string(),
            cost_cu: c.cost_cu(),
            ops: (c.plan().stats.rotations + c.plan().stats.plain_mults + c.plan().stats.squares)
                as usize,
        }),
        version: None,
    }
}

/// The function a task row names, as it runs.
pub(crate) async fn resolve_runnable(
    state: &AppState,
    tenant: &str,
    function: &str,
    size: u32,
    circuit_id: &str,
) -> Result<Runnable, ApiError> {
    if let Some(p) = resolve_packed(state, tenant, function, Some(circuit_id)).await? {
        let c = p.circuit();
        if c.id().to_string() != circuit_id {
            return Err(ApiError::bad_request(
                "circuit_mismatch",
                format!(
                    "the input was encrypted for another version of `{function}` (circuit \
                     {circuit_id}, this server runs {})",
                    c.id()
                ),
            ));
        }
        return Ok(Runnable::Packed(p));
    }
    resolve(state, tenant, function, size, circuit_id)
        .await
        .map(Runnable::Tfhe)
}

/// The circuit a task input names: a built-in at a size, or the tenant's deployed version
/// with that content id.
pub(crate) async fn resolve(
    state: &AppState,
    tenant: &str,
    function: &str,
    size: u32,
    circuit_id: &str,
) -> Result<ValidCircuit, ApiError> {
    if let Ok(f) = tenebra_functions::find(function) {
        return state
            .cpu
            .run(tenant, move || builtin_circuit(f, size))
            .await?;
    }
    match state
        .store
        .function_by_circuit(tenant, function, circuit_id)
        .await?
    {
        Some(f) => state.cpu.run(tenant, move || parse_stored(&f)).await?,
        None => match state.store.function(tenant, function, None).await {
            Ok(latest) => Err(ApiError::bad_request(
                "circuit_mismatch",
                format!(
                    "no version of `{function}` has circuit {circuit_id} (the latest, version \
                     {}, has {}): encrypt for a deployed version",
                    latest.version, latest.circuit_id
                ),
            )),
            Err(StoreError::NotFound) => Err(ApiError::bad_request(
                "unknown_function",
                format!("no function named `{function}`"),
            )),
            Err(e) => Err(e.into()),
        },
    }
}

/// The circuit id and cost of running `function`: a built-in at `size`, or a deployed
/// version (the latest, or the one `version` or `circuit_id` names).
pub(crate) async fn priced(
    state: &AppState,
    tenant: &str,
    function: &str,
    size: u32,
    version: Option<i64>,
    circuit_id: Option<String>,
) -> Result<(String, i64), ApiError> {
    if let Some(f) = tenebra_functions::find_packed(function) {
        let c = f.circuit();
        return Ok((
            c.id().to_string(),
            i64::try_from(c.cost_cu()).unwrap_or(i64::MAX),
        ));
    }
    if let Ok(f) = tenebra_functions::find(function) {
        return state
            .cpu
            .run(tenant, move || {
                let c = builtin_circuit(f, size)?;
                let cu = tenebra_circuit::cost::cost(&c).cu;
                Ok((c.id().to_string(), i64::try_from(cu).unwrap_or(i64::MAX)))
            })
            .await?;
    }
    let q = Selector {
        size: None,
        version,
        circuit_id,
    };
    let f = deployed(state, tenant, function, &q).await?;
    Ok((f.circuit_id, f.cost_cu))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Selector {
    /// A built-in's input size.
    size: Option<u32>,
    /// A deployed function's version (default: the latest).
    version: Option<i64>,
    /// A deployed function's version by its content id.
    circuit_id: Option<String>,
}

async fn deployed(
    state: &AppState,
    tenant: &str,
    name: &str,
    q: &Selector,
) -> Result<Function, ApiError> {
    if let Some(id) = &q.circuit_id {
        return match state.store.function_by_circuit(tenant, name, id).await? {
            Some(f) if q.version.is_none_or(|v| v == f.version) => Ok(f),
            _ => Err(ApiError::not_found("function")),
        };
    }
    match state.store.function(tenant, name, q.version).await {
        Ok(f) => Ok(f),
        Err(StoreError::NotFound) => Err(ApiError::not_found("function")),
        Err(e) => Err(e.into()),
    }
}

pub(crate) async fn list(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Vec<FunctionView>>, ApiError> {
    caller.require(Scope::Read)?;
    let mut views = tenebra_functions::builtins()
        .iter()
        .map(|f| builtin_view(f, None))
        .collect::<Result<Vec<_>, _>>()?;
    views.extend(tenebra_functions::packed_builtins().iter().map(packed_view));
    let deployed = state.store.list_functions(&caller.tenant_id).await?;
    let deployed = state
        .cpu
        .run(&caller.tenant_id, move || {
            deployed
                .iter()
                .map(deployed_view)
                .collect::<Result<Vec<_>, _>>()
        })
        .await??;
    views.extend(deployed);
    Ok(Json(views))
}

pub(crate) async fn get(
    State(state): State<AppState>,
    caller: Caller,
    UrlPath(name): UrlPath<String>,
    QueryParams(q): QueryParams<Selector>,
) -> Result<Json<FunctionView>, ApiError> {
    caller.require(Scope::Read)?;
    let tenant = &caller.tenant_id;
    if let Ok(f) = tenebra_functions::find(&name) {
        let size = q.size;
        return state
            .cpu
            .run(tenant, move || builtin_view(f, size))
            .await?
            .map(Json);
    }
    if let Some(f) = tenebra_functions::find_packed(&name) {
        return Ok(Json(packed_view(f)));
    }
    let f = deployed(&state, tenant, &name, &q).await?;
    state
        .cpu
        .run(tenant, move || deployed_view(&f))
        .await?
        .map(Json)
}

/// `GET /v1/functions/{name}/circuit`: the canonical circuit JSON clients encrypt against.
pub(crate) async fn circuit(
    State(state): State<AppState>,
    caller: Caller,
    UrlPath(name): UrlPath<String>,
    QueryParams(q): QueryParams<Selector>,
) -> Result<impl IntoResponse, ApiError> {
    caller.require(Scope::Read)?;
    let json = if let Some(f) = tenebra_functions::find_packed(&name) {
        f.circuit().circuit().canonical_json()
    } else if let Ok(f) = tenebra_functions::find(&name) {
        let size = q.size.ok_or_else(|| {
            ApiError::bad_request("invalid_size", format!("`{name}` needs ?size=N"))
        })?;
        state
            .cpu
            .run(&caller.tenant_id, move || {
                builtin_circuit(f, size).map(|c| c.canonical_json())
            })
            .await??
    } else {
        deployed(&state, &caller.tenant_id, &name, &q)
            .await?
            .circuit_json
            .into_bytes()
    };
    Ok((
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        json,
    ))
}

/// `POST /v1/functions`: deploys a circuit (its JSON is the body) as the next version of its
/// name; the same circuit again returns the version that holds it.
pub(crate) async fn deploy(
    State(state): State<AppState>,
    caller: Caller,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<FunctionView>), ApiError> {
    caller.require(Scope::Compute)?;
    let body = body.map_err(|r| {
        crate::error::body_error(
            &r,
            &format!("a circuit is at most {CIRCUIT_LIMIT} bytes of JSON"),
        )
    })?;
    let (name, id, json, cost) = state
        .cpu
        .run(&caller.tenant_id, move || checked_for_deploy(&body))
        .await??;
    // Validation restricted the name to 1 to 64 letters, digits, `_` or `-`: URL-safe.
    if tenebra_functions::find(&name).is_ok() || tenebra_functions::find_packed(&name).is_some() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "name_taken",
            format!("`{name}` is a built-in function; choose another name"),
        ));
    }
    let deployed = state
        .store
        .deploy_function(&caller.tenant_id, &name, &id, &json, cost)
        .await?;
    let (status, f) = match deployed {
        Deployed::Created(f) => (StatusCode::CREATED, f),
        Deployed::Existing(f) => (StatusCode::OK, f),
    };
    let view = state
        .cpu
        .run(&caller.tenant_id, move || deployed_view(&f))
        .await??;
    Ok((status, Json(view)))
}

/// Parses, validates and prices a circuit to deploy: its name, content id, canonical JSON
/// and cost in CU.
fn checked_for_deploy(body: &[u8]) -> Result<(String, String, String, i64), ApiError> {
    Ok(if is_packed_json(body) {
        let c =
            tenebra_circuit::packed::parse_packed(body, &packed_limits()).map_err(|e| match e {
                tenebra_circuit::packed::PackedError::TooDeep(m) => {
                    ApiError::bad_request("circuit_too_deep", m)
                }
                e => ApiError::bad_request("invalid_circuit", e.to_string()),
            })?;
        let json =
            String::from_utf8(c.circuit().canonical_json()).map_err(|e| ApiError::internal(&e))?;
        let cost = i64::try_from(c.cost_cu()).unwrap_or(i64::MAX);
        (c.circuit().name.clone(), c.id().to_string(), json, cost)
    } else {
        let circuit = parse_circuit(body, &limits()).map_err(|e| circuit_error(&e))?;
        let json =
            String::from_utf8(circuit.canonical_json()).map_err(|e| ApiError::internal(&e))?;
        let cost = i64::try_from(tenebra_circuit::cost::cost(&circuit).cu).unwrap_or(i64::MAX);
        (circuit.name.clone(), circuit.id().to_string(), json, cost)
    })
}

/// `DELETE /v1/functions/{name}[?version=N]`: one version, or every version.
pub(crate) async fn remove(
    State(state): State<AppState>,
    caller: Caller,
    UrlPath(name): UrlPath<String>,
    QueryParams(q): QueryParams<Selector>,
) -> Result<StatusCode, ApiError> {
    caller.require(Scope::Compute)?;
    if tenebra_functions::find(&name).is_ok() || tenebra_functions::find_packed(&name).is_some() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "builtin",
            format!("`{name}` is a built-in function and cannot be deleted"),
        ));
    }
    match state
        .store
        .delete_function(&caller.tenant_id, &name, q.version)
        .await
    {
        Ok(_) => Ok(StatusCode::NO_CONTENT),
        Err(StoreError::NotFound) => Err(ApiError::not_found("function")),
        Err(e) => Err(e.into()),
    }
}
