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
use tenebra_api::{FunctionView, SizedCost};
use tenebra_circuit::scheme::Refusal;
use tenebra_circuit::{AnyCircuit, AnyError, Scheme};
use tenebra_functions::AnyBuiltin;
use tenebra_store::{Deployed, Function, FunctionFacts, FunctionListing, Scope, StoreError};

use crate::catalogue::{self, builtin_circuit, Selector, Want, CIRCUIT_LIMIT};
use crate::{ApiError, AppState, Caller, QueryParams};

/// A circuit's id and cost as a page shows them.
fn sized(size: u32, c: &AnyCircuit) -> SizedCost {
    let cost = c.cost();
    SizedCost {
        size,
        circuit_id: c.id().to_string(),
        cost_cu: cost.cu,
        ops: cost.ops,
    }
}

/// A built-in's view; with a size (or for a BFV built-in, which has one circuit) its circuit
/// id and cost.
fn builtin_view(b: AnyBuiltin, size: Option<u32>) -> Result<FunctionView, ApiError> {
    let (min_size, max_size, at_size) = match b {
        AnyBuiltin::Tfhe(f) => {
            let at = match size {
                None => None,
                Some(n) => Some(sized(n, &builtin_circuit(b, n)?)),
            };
            (*f.sizes.start(), *f.sizes.end(), at)
        }
        AnyBuiltin::Bfv(_) => (0, 0, Some(sized(0, &builtin_circuit(b, 0)?))),
    };
    Ok(FunctionView {
        name: b.name().to_owned(),
        summary: b.summary().to_owned(),
        signature: b.signature().to_owned(),
        kind: "builtin".to_owned(),
        min_size,
        max_size,
        at_size,
        version: None,
    })
}

/// What a deployed version's page shows, computed from its circuit (once, at deploy).
fn facts_of(c: &AnyCircuit) -> FunctionFacts {
    let cost = c.cost();
    FunctionFacts {
        cost_cu: i64::try_from(cost.cu).unwrap_or(i64::MAX),
        ops: i64::try_from(cost.ops).unwrap_or(i64::MAX),
        scheme: c.scheme().as_str().to_owned(),
        signature: c.signature(),
    }
}

fn view_of(name: &str, version: i64, circuit_id: &str, facts: &FunctionFacts) -> FunctionView {
    let summary = if facts.scheme == Scheme::Bfv.as_str() {
        format!("deployed BFV circuit, version {version}")
    } else {
        format!("deployed circuit, version {version}")
    };
    FunctionView {
        name: name.to_owned(),
        summary,
        signature: facts.signature.clone(),
        kind: "deployed".to_owned(),
        min_size: 0,
        max_size: 0,
        at_size: Some(SizedCost {
            size: 0,
            circuit_id: circuit_id.to_owned(),
            cost_cu: u64::try_from(facts.cost_cu).unwrap_or(0),
            ops: usize::try_from(facts.ops).unwrap_or(0),
        }),
        version: Some(version),
    }
}

/// A deployed version's view, its circuit parsed and priced now.
fn deployed_view(f: &Function) -> Result<FunctionView, ApiError> {
    let c = catalogue::parse_stored(f)?;
    Ok(view_of(&f.name, f.version, &f.circuit_id, &facts_of(&c)))
}

/// A listed version's view from the facts stored at deploy; `None` for a version deployed
/// before they were stored.
fn listed_view(l: &FunctionListing) -> Option<FunctionView> {
    let facts = FunctionFacts {
        cost_cu: l.cost_cu,
        ops: l.ops?,
        scheme: l.scheme.clone()?,
        signature: l.signature.clone()?,
    };
    Some(view_of(&l.name, l.version, &l.circuit_id, &facts))
}

/// A rejected circuit as the client sees it: `circuit_too_large` (with the numbers) when it is
/// valid but would need more than a worker gives one task, `circuit_too_deep` when no
/// parameter set carries it, `invalid_circuit` otherwise.
pub(crate) fn circuit_error(e: &AnyError) -> ApiError {
    let code = match e.refusal() {
        Refusal::TooLarge => "circuit_too_large",
        Refusal::TooDeep => "circuit_too_deep",
        Refusal::Invalid => "invalid_circuit",
    };
    ApiError::bad_request(code, e.to_string())
}

pub(crate) async fn list(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Vec<FunctionView>>, ApiError> {
    caller.require(Scope::Read)?;
    let mut views = tenebra_functions::all_builtins()
        .map(|b| builtin_view(b, None))
        .collect::<Result<Vec<_>, _>>()?;
    // Listing reads no circuit: what it shows was stored at deploy. Versions deployed before
    // that are read and parsed (off the async threads), one at a time.
    for l in state.store.list_functions(&caller.tenant_id).await? {
        let view = match listed_view(&l) {
            Some(v) => v,
            None => {
                let f = state
                    .store
                    .function(&caller.tenant_id, &l.name, Some(l.version))
                    .await?;
                state
                    .cpu
                    .run(&caller.tenant_id, move || deployed_view(&f))
                    .await??
            }
        };
        views.push(view);
    }
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
    if let Some(b) = tenebra_functions::find_any(&name) {
        let size = q.size;
        return state
            .cpu
            .run(tenant, move || builtin_view(b, size))
            .await?
            .map(Json);
    }
    let f = catalogue::deployed(&state, tenant, &name, &Want::Lookup(&q)).await?;
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
    let json = match tenebra_functions::find_any(&name) {
        Some(b @ AnyBuiltin::Tfhe(_)) => {
            let size = q.size.ok_or_else(|| {
                ApiError::bad_request("invalid_size", format!("`{name}` needs ?size=N"))
            })?;
            state
                .cpu
                .run(&caller.tenant_id, move || {
                    builtin_circuit(b, size).map(|c| c.canonical_json())
                })
                .await??
        }
        Some(b) => builtin_circuit(b, 0)?.canonical_json(),
        None => catalogue::deployed(&state, &caller.tenant_id, &name, &Want::Lookup(&q))
            .await?
            .circuit_json
            .into_bytes(),
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
    let (name, id, json, facts) = state
        .cpu
        .run(&caller.tenant_id, move || checked_for_deploy(&body))
        .await??;
    // Validation restricted the name to 1 to 64 letters, digits, `_` or `-`: URL-safe.
    if tenebra_functions::find_any(&name).is_some() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "name_taken",
            format!("`{name}` is a built-in function; choose another name"),
        ));
    }
    let deployed = state
        .store
        .recording(caller.change(StatusCode::CREATED))
        .deploy_function(&caller.tenant_id, &name, &id, &json, &facts)
        .await?;
    // The version holding this circuit (new or not) is described by the facts just
    // computed: its content id is this circuit's.
    let (status, f) = match deployed {
        Deployed::Created(f) => (StatusCode::CREATED, f),
        Deployed::Existing(f) => (StatusCode::OK, f),
    };
    Ok((
        status,
        Json(view_of(&f.name, f.version, &f.circuit_id, &facts)),
    ))
}

/// Parses, validates and prices a circuit to deploy: its name, content id, canonical JSON
/// and what its page shows.
fn checked_for_deploy(body: &[u8]) -> Result<(String, String, String, FunctionFacts), ApiError> {
    let c = AnyCircuit::parse(body, &catalogue::limits()).map_err(|e| circuit_error(&e))?;
    let json = String::from_utf8(c.canonical_json()).map_err(|e| ApiError::internal(&e))?;
    Ok((c.name().to_owned(), c.id().to_string(), json, facts_of(&c)))
}

/// `DELETE /v1/functions/{name}[?version=N]`: one version, or every version.
pub(crate) async fn remove(
    State(state): State<AppState>,
    caller: Caller,
    UrlPath(name): UrlPath<String>,
    QueryParams(q): QueryParams<Selector>,
) -> Result<StatusCode, ApiError> {
    caller.require(Scope::Compute)?;
    if tenebra_functions::find_any(&name).is_some() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "builtin",
            format!("`{name}` is a built-in function and cannot be deleted"),
        ));
    }
    match state
        .store
        .recording(caller.change(StatusCode::NO_CONTENT))
        .delete_function(&caller.tenant_id, &name, q.version)
        .await
    {
        Ok(_) => Ok(StatusCode::NO_CONTENT),
        Err(StoreError::NotFound) => Err(ApiError::not_found("function")),
        Err(e) => Err(e.into()),
    }
}
