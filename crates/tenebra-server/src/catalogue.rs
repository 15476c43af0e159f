//! The function catalogue: every name a tenant may run resolves here, once, to the circuit
//! that runs and what it costs.
//!
//! A name is a built-in of either scheme (`weight_stats`, `ad_targeting`), a model split the
//! tenant may use (`model:<owner>/<name>/<version>/<layers>`, accepted only in its canonical
//! spelling, so one split has one name and one price), or one of the tenant's deployed
//! functions (a version by number, by content id, or the latest). Submit, the workers and
//! quote all call [`resolve`] (submit and quote through [`resolve_priced`]).

use serde::Deserialize;
use tenebra_circuit::{AnyCircuit, AnyLimits};
use tenebra_functions::AnyBuiltin;
use tenebra_store::{Function, StoreError};

use crate::{ApiError, AppState};

/// Largest circuit JSON accepted for deployment.
pub const CIRCUIT_LIMIT: usize = 4 << 20;

/// The limits untrusted (and stored) circuits are parsed under.
pub(crate) fn limits() -> AnyLimits {
    AnyLimits::with_max_json_bytes(CIRCUIT_LIMIT)
}

/// Which circuit of a name is wanted.
pub(crate) enum Want<'a> {
    /// The one an encrypted input names (its header's size and circuit id): a name or
    /// version that does not exist is the input's fault (400).
    Input { size: u32, circuit_id: &'a str },
    /// The one a user asks about (quote, pages): one that does not exist is a 404.
    Lookup(&'a Selector),
}

/// A user's choice among a name's circuits.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Selector {
    /// A built-in's input size.
    pub size: Option<u32>,
    /// A deployed function's version (default: the latest).
    pub version: Option<i64>,
    /// A deployed function's version by its content id.
    pub circuit_id: Option<String>,
}

/// Resolves `name` for `tenant` to the circuit that runs. Parsing runs under the tenant's
/// CPU gate.
pub(crate) async fn resolve(
    state: &AppState,
    tenant: &str,
    name: &str,
    want: Want<'_>,
) -> Result<AnyCircuit, ApiError> {
    if let Some(b) = tenebra_functions::find_any(name) {
        let size = match &want {
            Want::Input { size, .. } => *size,
            Want::Lookup(s) => s.size.unwrap_or(0),
        };
        return state
            .cpu
            .run(tenant, move || builtin_circuit(b, size))
            .await?;
    }
    if let Some(m) = crate::models::resolve(state, tenant, name).await? {
        return Ok(m.circuit.clone().into());
    }
    let row = deployed(state, tenant, name, &want).await?;
    state.cpu.run(tenant, move || parse_stored(&row)).await?
}

/// [`resolve`], and the cost of one run in CU (what submit records and quote shows), priced
/// under the tenant's CPU gate.
pub(crate) async fn resolve_priced(
    state: &AppState,
    tenant: &str,
    name: &str,
    want: Want<'_>,
) -> Result<(AnyCircuit, i64), ApiError> {
    let circuit = resolve(state, tenant, name, want).await?;
    let priced = circuit.clone();
    let cost_cu = state.cpu.run(tenant, move || priced.cost_cu()).await?;
    Ok((circuit, cost_cu))
}

/// A built-in's circuit at `size`; a size out of its range is the client's mistake.
pub(crate) fn builtin_circuit(b: AnyBuiltin, size: u32) -> Result<AnyCircuit, ApiError> {
    b.circuit(size)
        .map_err(|e| ApiError::bad_request("invalid_size", e.to_string()))
}

/// A stored circuit, parsed again (it was validated before it was stored; limits may have
/// changed since, so it goes through the same gate).
pub(crate) fn parse_stored(f: &Function) -> Result<AnyCircuit, ApiError> {
    AnyCircuit::parse(f.circuit_json.as_bytes(), &limits()).map_err(|e| ApiError::internal(&e))
}

/// The deployed version `want` names.
pub(crate) async fn deployed(
    state: &AppState,
    tenant: &str,
    name: &str,
    want: &Want<'_>,
) -> Result<Function, ApiError> {
    let store = &state.store;
    match want {
        Want::Input { circuit_id, .. } => {
            if let Some(f) = store.function_by_circuit(tenant, name, circuit_id).await? {
                return Ok(f);
            }
            match store.function(tenant, name, None).await {
                Ok(latest) => Err(ApiError::bad_request(
                    "circuit_mismatch",
                    format!(
                        "no version of `{name}` has circuit {circuit_id} (the latest, version \
                         {}, has {}): encrypt for a deployed version",
                        latest.version, latest.circuit_id
                    ),
                )),
                Err(StoreError::NotFound) => Err(ApiError::bad_request(
                    "unknown_function",
                    format!("no function named `{name}`"),
                )),
                Err(e) => Err(e.into()),
            }
        }
        Want::Lookup(q) => {
            if let Some(id) = &q.circuit_id {
                return match store.function_by_circuit(tenant, name, id).await? {
                    Some(f) if q.version.is_none_or(|v| v == f.version) => Ok(f),
                    _ => Err(ApiError::not_found("function")),
                };
            }
            match store.function(tenant, name, q.version).await {
                Ok(f) => Ok(f),
                Err(StoreError::NotFound) => Err(ApiError::not_found("function")),
                Err(e) => Err(e.into()),
            }
        }
    }
}

/// A bounded, non-secret label for a task's function in metrics: a built-in's own name, or
/// the kind of a tenant's function (`model`, `deployed`), never the name a tenant chose.
pub(crate) fn kind_label(function: &str) -> &'static str {
    match tenebra_functions::find_any(function) {
        Some(b) => b.name(),
        None if function.starts_with("model:") => "model",
        None => "deployed",
    }
}
