//! The operator's API (`/v1/admin/...`, and `/v1/audit/verify`): plans, which plan a tenant
//! is on, the whole audit log and its verification. Authenticated by the operator token the
//! server was started with (`TENEBRA_OPERATOR_TOKEN`); without one these routes answer 403.

use axum::extract::{FromRequestParts, Path as UrlPath, State};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::Json;
use tenebra_api::{AuditRecordView, AuditVerifyView, PlanView, SetPlan, TenantBilling};
use tenebra_store::StoreError;

use crate::audit::{self, AuditQuery, RequestLog};
use crate::billing::{plan_from_view, plan_view};
use crate::{ApiError, AppState, JsonBody, QueryParams};

/// The operator: whoever holds the operator token.
#[derive(Debug)]
pub struct Operator(Option<RequestLog>);

impl Operator {
    /// The audit record of the change this request makes (see `Caller::change`).
    fn change(&self, answer: StatusCode) -> Option<tenebra_store::Change> {
        self.0.as_ref().and_then(|l| l.change(answer))
    }
}

impl FromRequestParts<AppState> for Operator {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let Some(expected) = &state.operator_hash else {
            return Err(ApiError::forbidden(
                "the operator API is disabled: start the server with an operator token \
                 (TENEBRA_OPERATOR_TOKEN)",
            ));
        };
        crate::check_service_token(parts, state, expected, "operator")?;
        let log = parts.extensions.get::<RequestLog>().cloned();
        if let Some(l) = &log {
            l.set_actor(None, "operator".to_owned());
        }
        Ok(Operator(log))
    }
}

/// `GET /v1/admin/plans`.
pub(crate) async fn list_plans(
    State(state): State<AppState>,
    _: Operator,
) -> Result<Json<Vec<PlanView>>, ApiError> {
    let plans = state.store.list_plans().await?;
    Ok(Json(plans.iter().map(plan_view).collect()))
}

/// `PUT /v1/admin/plans/{name}`: creates or replaces a plan.
pub(crate) async fn put_plan(
    State(state): State<AppState>,
    operator: Operator,
    UrlPath(name): UrlPath<String>,
    JsonBody(body): JsonBody<PlanView>,
) -> Result<Json<PlanView>, ApiError> {
    if body.name != name {
        return Err(ApiError::bad_request(
            "invalid_plan",
            format!("the body names plan `{}`, the path `{name}`", body.name),
        ));
    }
    let plan = plan_from_view(body)?;
    state
        .store
        .recording(operator.change(StatusCode::OK))
        .put_plan(&plan)
        .await?;
    Ok(Json(plan_view(&plan)))
}

/// `PUT /v1/admin/tenants/{id}/plan`.
pub(crate) async fn set_tenant_plan(
    State(state): State<AppState>,
    operator: Operator,
    UrlPath(tenant): UrlPath<String>,
    JsonBody(body): JsonBody<SetPlan>,
) -> Result<StatusCode, ApiError> {
    let store = state
        .store
        .recording(operator.change(StatusCode::NO_CONTENT));
    match store.set_tenant_plan(&tenant, &body.plan).await {
        Ok(()) => Ok(StatusCode::NO_CONTENT),
        Err(StoreError::NotFound) => Err(ApiError::not_found("tenant or plan")),
        Err(e) => Err(e.into()),
    }
}

/// `PUT /v1/admin/tenants/{id}/billing`: the Stripe customer the tenant's usage is billed to.
pub(crate) async fn set_tenant_billing(
    State(state): State<AppState>,
    operator: Operator,
    UrlPath(tenant): UrlPath<String>,
    JsonBody(body): JsonBody<TenantBilling>,
) -> Result<Json<TenantBilling>, ApiError> {
    if let Some(c) = &body.stripe_customer_id {
        crate::billing::check_stripe_customer(c)?;
    }
    let store = state.store.recording(operator.change(StatusCode::OK));
    match store
        .set_tenant_billing(&tenant, body.stripe_customer_id.as_deref())
        .await
    {
        Ok(()) => Ok(Json(body)),
        Err(StoreError::NotFound) => Err(ApiError::not_found("tenant")),
        Err(e) => Err(e.into()),
    }
}

/// `GET /v1/admin/tenants/{id}/billing`.
pub(crate) async fn tenant_billing(
    State(state): State<AppState>,
    _: Operator,
    UrlPath(tenant): UrlPath<String>,
) -> Result<Json<TenantBilling>, ApiError> {
    match state.store.tenant_billing(&tenant).await {
        Ok(stripe_customer_id) => Ok(Json(TenantBilling { stripe_customer_id })),
        Err(StoreError::NotFound) => Err(ApiError::not_found("tenant")),
        Err(e) => Err(e.into()),
    }
}

/// `GET /v1/admin/audit`: every tenant's records and the operator's.
pub(crate) async fn audit_all(
    State(state): State<AppState>,
    _: Operator,
    q: QueryParams<AuditQuery>,
) -> Result<Json<Vec<AuditRecordView>>, ApiError> {
    Ok(Json(audit::page(&state, None, q).await?))
}

/// `GET /v1/audit/verify`: recomputes the chain and checks the signed checkpoints.
pub(crate) async fn verify(
    State(state): State<AppState>,
    _: Operator,
) -> Result<Json<AuditVerifyView>, ApiError> {
    audit::verify(&state)
        .await
        .map(Json)
        .map_err(|e| ApiError::internal(&crate::Causes(&e)))
}
