//! Metering over HTTP: quotes before running, usage records, invoices (JSON or CSV), the
//! tenant's limits, and the meter-event shape billing providers ingest.

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use tenebra_api::{
    InvoiceLineView, InvoiceView, LimitsView, MeterEvent, MeterPayload, PlanView, QuoteRequest,
    QuoteView, UsageRecordView, UsageTotalsView, UsageView,
};
use tenebra_store::billing::{self, period_name, period_of};
use tenebra_store::{now_ms, MeterOutcome, Plan, Scope, UsageFilter, UsageRecord};

use crate::catalogue::{self, Selector, Want};
use crate::{ApiError, AppState, Caller, JsonBody, QueryParams, ServiceError};

/// The meter events' name (the billing provider's meter must use it).
pub const METER_EVENT_NAME: &str = "tenebra_cu";

pub fn plan_view(p: &Plan) -> PlanView {
    PlanView {
        name: p.name.clone(),
        price_nanos_per_cu: p.price_nanos_per_cu,
        function_prices: p.function_prices.iter().cloned().collect(),
        cu_per_period: p.cu_per_period,
        max_active_tasks: p.max_active_tasks,
        max_stored_bytes: p.max_stored_bytes,
        max_key_sets: p.max_key_sets,
        max_task_cu: p.max_task_cu,
        requests_per_second: p.requests_per_second,
        tenant_requests_per_second: p.tenant_requests_per_second,
    }
}

/// The stored plan a view describes; limits must be positive and prices not negative.
pub fn plan_from_view(v: PlanView) -> Result<Plan, ApiError> {
    crate::check_name("plan", &v.name)?;
    let limits = [
        v.cu_per_period,
        v.max_active_tasks,
        v.max_stored_bytes,
        v.max_key_sets,
        v.max_task_cu,
        v.requests_per_second,
        v.tenant_requests_per_second,
    ];
    if limits.iter().flatten().any(|l| *l < 0)
        || v.price_nanos_per_cu < 0
        || v.function_prices.values().any(|p| *p < 0)
    {
        return Err(ApiError::bad_request(
            "invalid_plan",
            "prices and limits cannot be negative",
        ));
    }
    Ok(Plan {
        name: v.name,
        price_nanos_per_cu: v.price_nanos_per_cu,
        cu_per_period: v.cu_per_period,
        max_active_tasks: v.max_active_tasks,
        max_stored_bytes: v.max_stored_bytes,
        max_key_sets: v.max_key_sets,
        max_task_cu: v.max_task_cu,
        requests_per_second: v.requests_per_second,
        tenant_requests_per_second: v.tenant_requests_per_second,
        function_prices: v.function_prices.into_iter().collect(),
    })
}

pub fn usage_view(u: UsageRecord) -> UsageRecordView {
    UsageRecordView {
        task_id: u.task_id,
        api_key_id: u.api_key_id,
        function: u.function,
        function_version: u.function_version,
        circuit_id: u.circuit_id,
        key_set_id: u.key_set_id,
        outcome: u.outcome,
        error_code: u.error_code,
        cu: u.cu,
        charged_cu: u.charged_cu,
        price_nanos_per_cu: u.price_nanos_per_cu,
        amount_nanos: u.amount_nanos,
        wall_ms: u.wall_ms,
        input_bytes: u.input_bytes,
        result_bytes: u.result_bytes,
        attempts: u.attempts,
        recorded_at: u.recorded_at,
    }
}

/// A charged usage record as a meter event for the tenant's Stripe customer (if it has one).
pub fn meter_event(u: &UsageRecord, customer: Option<String>) -> MeterEvent {
    MeterEvent {
        event_name: METER_EVENT_NAME.to_owned(),
        payload: MeterPayload {
            stripe_customer_id: customer,
            value: u.charged_cu.to_string(),
        },
        identifier: u.task_id.clone(),
        timestamp: u.recorded_at / 1000,
        tenant_id: u.tenant_id.clone(),
    }
}

/// A Stripe customer id as Stripe makes them: `cus_` and up to 250 letters and digits.
pub fn check_stripe_customer(id: &str) -> Result<(), ApiError> {
    let rest = id.strip_prefix("cus_").unwrap_or_default();
    if rest.is_empty() || rest.len() > 250 || !rest.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(ApiError::bad_request(
            "invalid_customer",
            "a Stripe customer id is `cus_` followed by letters and digits",
        ));
    }
    Ok(())
}

/// `POST /v1/quote`: the CU and price of running a function, before anything runs.
pub(crate) async fn quote(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(q): JsonBody<QuoteRequest>,
) -> Result<Json<QuoteView>, ApiError> {
    caller.require(Scope::Read)?;
    let want = Selector {
        size: Some(q.size),
        version: q.version,
        circuit_id: q.circuit_id,
    };
    let (circuit, cu) =
        catalogue::resolve_priced(&state, &caller.tenant_id, &q.function, Want::Lookup(&want))
            .await?;
    let circuit_id = circuit.id().to_string();
    let plan = state.store.tenant_plan(&caller.tenant_id).await?;
    let price = plan.price_of(&q.function);
    Ok(Json(QuoteView {
        function: q.function,
        size: q.size,
        circuit_id,
        cu,
        plan: plan.name,
        price_nanos_per_cu: price,
        amount_nanos: cu.saturating_mul(price),
    }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct UsageQuery {
    /// A billing period, `YYYY-MM` (instead of `from` and `to`).
    period: Option<String>,
    /// Unix ms, inclusive.
    from: Option<i64>,
    /// Unix ms, exclusive.
    to: Option<i64>,
    function: Option<String>,
    api_key_id: Option<String>,
    limit: Option<u32>,
    after: Option<String>,
}

/// `GET /v1/usage`: the tenant's usage records (oldest first, paged) and their totals.
pub(crate) async fn usage(
    State(state): State<AppState>,
    caller: Caller,
    QueryParams(q): QueryParams<UsageQuery>,
) -> Result<Json<UsageView>, ApiError> {
    caller.require(Scope::Read)?;
    let (from, to) = match &q.period {
        None => (q.from, q.to),
        Some(_) if q.from.is_some() || q.to.is_some() => {
            return Err(ApiError::bad_request(
                "invalid_query",
                "give either `period` or `from`/`to`",
            ))
        }
        Some(p) => {
            let (f, t) = billing::parse_period(p).ok_or_else(|| {
                ApiError::bad_request("invalid_period", format!("`{p}` is not a YYYY-MM period"))
            })?;
            (Some(f), Some(t))
        }
    };
    let filter = UsageFilter {
        from,
        to,
        function: q.function,
        api_key_id: q.api_key_id,
    };
    let tenant = Some(caller.tenant_id.as_str());
    let page = state
        .store
        .list_usage(tenant, &filter, q.limit.unwrap_or(100), q.after.as_deref())
        .await?;
    let t = state.store.usage_totals(tenant, &filter).await?;
    Ok(Json(UsageView {
        records: page.records.into_iter().map(usage_view).collect(),
        totals: UsageTotalsView {
            tasks: t.tasks,
            cu: t.cu,
            charged_cu: t.charged_cu,
            amount_nanos: t.amount_nanos,
        },
        next: page.next,
    }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct InvoiceQuery {
    /// `YYYY-MM` (default: the current period).
    period: Option<String>,
    /// `json` (default) or `csv`.
    format: Option<String>,
}

/// The tenant's invoice for a period.
pub async fn invoice(
    state: &AppState,
    tenant: &str,
    period: Option<&str>,
) -> Result<InvoiceView, ApiError> {
    let (name, (from, to)) = match period {
        None => (period_name(now_ms()), period_of(now_ms())),
        Some(p) => (
            p.to_owned(),
            billing::parse_period(p).ok_or_else(|| {
                ApiError::bad_request("invalid_period", format!("`{p}` is not a YYYY-MM period"))
            })?,
        ),
    };
    let lines: Vec<InvoiceLineView> = state
        .store
        .invoice_lines(tenant, from, to)
        .await?
        .into_iter()
        .map(|l| InvoiceLineView {
            function: l.function,
            price_nanos_per_cu: l.price_nanos_per_cu,
            tasks: l.tasks,
            charged_cu: l.charged_cu,
            amount_nanos: l.amount_nanos,
        })
        .collect();
    Ok(InvoiceView {
        tenant_id: tenant.to_owned(),
        period: name,
        from,
        to,
        total_nanos: lines.iter().map(|l| l.amount_nanos).sum(),
        lines,
    })
}

/// An invoice as CSV: one row per line, then a total row.
pub fn invoice_csv(inv: &InvoiceView) -> String {
    let mut out =
        String::from("period,function,price_nanos_per_cu,tasks,charged_cu,amount_nanos\n");
    for l in &inv.lines {
        out.push_str(&format!(
            "{},{},{},{},{},{}\n",
            inv.period, l.function, l.price_nanos_per_cu, l.tasks, l.charged_cu, l.amount_nanos
        ));
    }
    out.push_str(&format!("{},total,,,,{}\n", inv.period, inv.total_nanos));
    out
}

/// `GET /v1/invoices?period=YYYY-MM[&format=csv]`.
pub(crate) async fn invoices(
    State(state): State<AppState>,
    caller: Caller,
    QueryParams(q): QueryParams<InvoiceQuery>,
) -> Result<Response, ApiError> {
    caller.require(Scope::Read)?;
    let inv = invoice(&state, &caller.tenant_id, q.period.as_deref()).await?;
    match q.format.as_deref() {
        None | Some("json") => Ok(Json(inv).into_response()),
        Some("csv") => {
            Ok(([(header::CONTENT_TYPE, "text/csv")], invoice_csv(&inv)).into_response())
        }
        Some(f) => Err(ApiError::bad_request(
            "invalid_format",
            format!("unknown format `{f}` (json or csv)"),
        )),
    }
}

/// `GET /v1/limits`: the tenant's plan and what it uses now.
pub(crate) async fn limits(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<LimitsView>, ApiError> {
    caller.require(Scope::Read)?;
    let plan = state.store.tenant_plan(&caller.tenant_id).await?;
    let used = state.store.tenant_usage(&caller.tenant_id).await?;
    let now = now_ms();
    let (from, to) = period_of(now);
    Ok(Json(LimitsView {
        plan: plan_view(&plan),
        period: period_name(now),
        period_from: from,
        period_to: to,
        period_cu: used.period_cu,
        active_tasks: used.active_tasks,
        stored_bytes: used.stored_bytes,
        key_sets: used.key_sets,
    }))
}

/// Stripe's API, where meter events go (`POST /v1/billing/meter_events`).
#[derive(Clone)]
pub struct StripeSink {
    /// The secret key (`sk_live_...`, `sk_test_...` or a restricted `rk_...`), sent as Bearer.
    pub api_key: String,
    /// `https://api.stripe.com` unless testing.
    pub api_base: String,
}

/// The key prints as `<redacted>`.
impl std::fmt::Debug for StripeSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StripeSink")
            .field("api_key", &"<redacted>")
            .field("api_base", &self.api_base)
            .finish()
    }
}

/// Stripe's default API origin.
pub const STRIPE_API: &str = "https://api.stripe.com";

/// Stripe takes meter events up to 35 calendar days old; a record this close to the edge
/// (an hour) is treated as outside, so it cannot expire between the check and the request.
const STRIPE_WINDOW_S: i64 = 35 * 86_400 - 3_600;

/// Where meter events go.
#[derive(Debug, Clone, Default)]
pub struct MeterSink {
    /// Append the events to this file as JSON lines.
    pub file: Option<std::path::PathBuf>,
    /// Send each event to Stripe (only tenants mapped to a Stripe customer; the file, if
    /// any, gets the same events).
    pub stripe: Option<StripeSink>,
    /// Tries per event on server errors, rate limits and transport failures before the
    /// export stops (the rest go next time).
    pub attempts: u32,
}

/// What an export did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Exported {
    /// Events delivered.
    pub events: usize,
    /// Records older than Stripe's window: marked, never sent.
    pub expired: usize,
    /// Events Stripe refused (task id, Stripe's reason): marked, sent again only after
    /// `retry_refused_meter_events`.
    pub refused: Vec<(String, String)>,
    /// Events left for the next export because the export stopped early.
    pub pending: usize,
    /// Why it stopped early (Stripe kept failing, or refused the key).
    pub stopped: Option<String>,
    /// Charged records of tenants without a Stripe customer, waiting for the mapping.
    pub unmapped: i64,
}

/// Delivers every charged usage record not delivered yet as a meter event, oldest first,
/// and records what became of each so no event goes twice. An event is marked delivered only
/// after the file write or Stripe's 2xx; should the process die in between, the next export
/// repeats it with the same identifier and `Idempotency-Key`, which Stripe deduplicates.
/// With Stripe, a record outside its window is marked expired and one it refuses is marked
/// refused: neither holds up the rest.
pub async fn export_meter_events(
    state: &AppState,
    sink: &MeterSink,
) -> Result<Exported, ServiceError> {
    use tokio::io::AsyncWriteExt;
    let http = crate::outbound_client()?;
    let mut file = match &sink.file {
        Some(p) => Some(
            tokio::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .await
                .map_err(ServiceError::file(p))?,
        ),
        None => None,
    };
    let mut done = Exported::default();
    loop {
        let batch = state
            .store
            .unexported_usage(500, sink.stripe.is_some())
            .await
            .map_err(db("reading usage not exported yet"))?;
        if batch.is_empty() {
            break;
        }
        for (i, (u, customer)) in batch.iter().enumerate() {
            let event = meter_event(u, customer.clone());
            if let Some(stripe) = &sink.stripe {
                let outcome = if event.timestamp < now_ms() / 1000 - STRIPE_WINDOW_S {
                    Pushed::Expired
                } else {
                    push(&http, stripe, sink.attempts, &event).await
                };
                let (mark, detail) = match outcome {
                    Pushed::Sent => (MeterOutcome::Sent, None),
                    Pushed::Expired => {
                        done.expired += 1;
                        let why = "older than the 35 days Stripe accepts";
                        (MeterOutcome::Expired, Some(why.to_owned()))
                    }
                    Pushed::Refused(why) => {
                        tracing::warn!(task = %u.task_id, reason = %why, "Stripe refused a meter event");
                        done.refused.push((u.task_id.clone(), why.clone()));
                        (MeterOutcome::Refused, Some(why))
                    }
                    Pushed::Stop(why) => {
                        tracing::warn!(reason = %why, "meter event export stopped");
                        done.pending = batch.len() - i;
                        done.stopped = Some(why);
                        return finish(state, done).await;
                    }
                };
                if mark != MeterOutcome::Sent {
                    state
                        .store
                        .mark_exported(&u.task_id, mark, detail.as_deref())
                        .await
                        .map_err(db("recording a meter event"))?;
                    continue;
                }
            }
            if let (Some(f), Some(path)) = (&mut file, &sink.file) {
                let written = async {
                    let mut line = serde_json::to_vec(&event).map_err(std::io::Error::other)?;
                    line.push(b'\n');
                    f.write_all(&line).await?;
                    f.flush().await
                };
                written.await.map_err(ServiceError::file(path))?;
            }
            state
                .store
                .mark_exported(&u.task_id, MeterOutcome::Sent, None)
                .await
                .map_err(db("recording a meter event"))?;
            done.events += 1;
        }
    }
    finish(state, done).await
}

/// Adds the count of records waiting for a Stripe customer.
async fn finish(state: &AppState, mut done: Exported) -> Result<Exported, ServiceError> {
    done.unmapped = state
        .store
        .meter_export_counts()
        .await
        .map_err(db("counting meter events"))?
        .unmapped;
    Ok(done)
}

/// A store error as what the export was doing.
fn db(doing: &'static str) -> impl Fn(tenebra_store::StoreError) -> ServiceError {
    move |source| ServiceError::Database { doing, source }
}

/// What Stripe made of one event.
enum Pushed {
    Sent,
    /// Outside Stripe's window (decided before sending).
    Expired,
    /// Stripe refused this event (400): its reason.
    Refused(String),
    /// Stop the export: Stripe kept failing, or refused the key or the request itself.
    Stop(String),
}

/// The most of an error body read from Stripe.
const STRIPE_ERROR_BYTES: usize = 16 << 10;

/// Stripe's reason in an error answer (`error.message`, else the status).
async fn stripe_reason(r: reqwest::Response) -> String {
    let status = r.status();
    let body = crate::read_limited(r, STRIPE_ERROR_BYTES).await;
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    match v["error"]["message"].as_str() {
        Some(m) => format!("{status}: {}", m.chars().take(300).collect::<String>()),
        None => status.to_string(),
    }
}

/// POSTs one event to Stripe's v1 meter events API (form-encoded, `Idempotency-Key` = the
/// identifier), retrying server errors, rate limits, idempotency conflicts and transport
/// failures with backoff.
async fn push(
    http: &reqwest::Client,
    stripe: &StripeSink,
    attempts: u32,
    e: &MeterEvent,
) -> Pushed {
    let url = format!(
        "{}/v1/billing/meter_events",
        stripe.api_base.trim_end_matches('/')
    );
    let timestamp = e.timestamp.to_string();
    let form = [
        ("event_name", e.event_name.as_str()),
        (
            "payload[stripe_customer_id]",
            e.payload.stripe_customer_id.as_deref().unwrap_or_default(),
        ),
        ("payload[value]", e.payload.value.as_str()),
        ("identifier", e.identifier.as_str()),
        ("timestamp", timestamp.as_str()),
    ];
    let mut delay = std::time::Duration::from_millis(200);
    let mut last = String::new();
    for attempt in 1..=attempts.max(1) {
        let req = http
            .post(&url)
            .bearer_auth(&stripe.api_key)
            .header("idempotency-key", &e.identifier)
            .form(&form);
        match req.send().await {
            Ok(r) if r.status().is_success() => return Pushed::Sent,
            // This event is wrong for Stripe (its reason says why): the rest may not be.
            Ok(r) if r.status() == 400 => return Pushed::Refused(stripe_reason(r).await),
            // Too many requests, or the same key in flight: later.
            Ok(r) if matches!(r.status().as_u16(), 409 | 429) || r.status().is_server_error() => {
                last = format!("Stripe answered {}", stripe_reason(r).await)
            }
            // The key or the request itself (401, 403, 404): no event will do better.
            Ok(r) => return Pushed::Stop(format!("Stripe answered {}", stripe_reason(r).await)),
            Err(err) => last = format!("{url}: {err}"),
        }
        if attempt < attempts {
            tokio::time::sleep(delay).await;
            delay *= 2;
        }
    }
    Pushed::Stop(last)
}
