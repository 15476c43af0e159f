//! Plans, quotes, quotas and the audit log through the real server and the real client SDK,
//! on SQLite and on the real PostgreSQL (quotas also across two API nodes).

use serde_json::json;
use tenebra_client::encrypt;
use tenebra_client::http::{Client, HttpError, Plan, QuoteRequest};
use tenebra_engine::test_support::{client_keys, test_key_dir};
use tenebra_server::create_tenant;
use tenebra_store::{Db, Store};

mod common;

fn api_code(r: Result<impl std::fmt::Debug, HttpError>) -> (u16, String) {
    match r {
        Err(HttpError::Api { status, code, .. }) => (status, code),
        other => panic!("expected an API error, got {other:?}"),
    }
}

fn plan(name: &str) -> Plan {
    Plan {
        name: name.into(),
        price_nanos_per_cu: 5,
        function_prices: [("weight_stats".to_owned(), 7)].into(),
        cu_per_period: None,
        max_active_tasks: None,
        max_stored_bytes: None,
        max_key_sets: None,
        max_task_cu: None,
        requests_per_second: None,
        tenant_requests_per_second: None,
    }
}

/// Submits raw so the test sees the status and `Retry-After`.
async fn submit_raw(base: &str, token: &str, body: Vec<u8>) -> (u16, Option<String>, String) {
    let r = reqwest::Client::new()
        .post(format!("{base}/v1/tasks"))
        .bearer_auth(token)
        .body(body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let retry = r
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    let body: serde_json::Value = r.json().await.unwrap();
    let code = body["error"]["code"].as_str().unwrap_or("").to_owned();
    (status, retry, code)
}

async fn quotas(postgres: bool) {
    let h = common::Harness::start(postgres).await;
    let op = Client::new(&h.base, common::OPERATOR_TOKEN);
    let (ta, token_a) = create_tenant(&h.state, "acme").await.unwrap();
    let a = Client::new(&h.base, &token_a);

    // Only the operator token opens the operator API.
    assert_eq!(api_code(a.plans().await), (401, "unauthorized".into()));
    let wrong = Client::new(&h.base, &"w".repeat(40));
    assert_eq!(api_code(wrong.plans().await), (401, "unauthorized".into()));
    assert_eq!(op.plans().await.unwrap()[0].name, "default");

    // A quote is the function's cost at the plan's price.
    let ask = QuoteRequest {
        function: "weight_stats".into(),
        size: 5,
        version: None,
        circuit_id: None,
    };
    let f = a.function("weight_stats", 5).await.unwrap();
    let q = a.quote(&ask).await.unwrap();
    assert_eq!(q.cu as u64, f.at_size.unwrap().cost_cu);
    assert_eq!((q.plan.as_str(), q.price_nanos_per_cu), ("default", 1000));
    assert_eq!(q.amount_nanos, q.cu * 1000);
    let bad = QuoteRequest {
        function: "nope".into(),
        ..ask.clone()
    };
    assert_eq!(api_code(a.quote(&bad).await).0, 404);

    // On a plan with a function price, the quote uses it.
    let mut p = plan("tiny");
    p.max_stored_bytes = Some(1000);
    op.put_plan(&p).await.unwrap();
    op.set_tenant_plan(&ta.id, "tiny").await.unwrap();
    assert_eq!(
        api_code(op.set_tenant_plan("tn_nobody", "tiny").await),
        (404, "not_found".into())
    );
    assert_eq!(a.quote(&ask).await.unwrap().price_nanos_per_cu, 7);

    // Storage and key set limits: refused, nothing stored.
    let upload = tenebra_engine::keys::read_upload(&test_key_dir()).unwrap();
    assert_eq!(
        api_code(a.upload_key_set(upload.clone()).await),
        (403, "storage_quota_exceeded".into())
    );
    p.max_stored_bytes = None;
    p.max_key_sets = Some(0);
    op.put_plan(&p).await.unwrap();
    assert_eq!(
        api_code(a.upload_key_set(upload.clone()).await),
        (403, "key_set_quota_exceeded".into())
    );
    assert_eq!(h.state.blobs.count(".keyset").await.unwrap(), 0);
    p.max_key_sets = Some(1);
    op.put_plan(&p).await.unwrap();
    a.upload_key_set(upload).await.unwrap();

    // Per-task CU cap: refused before anything runs or is stored.
    let keys = client_keys();
    let weights = tenebra_functions::find("weight_stats").unwrap();
    let enc = encrypt(keys, weights, &json!({"weights": [1, 2, 3, 4, 5]})).unwrap();
    p.max_task_cu = Some(q.cu - 1);
    op.put_plan(&p).await.unwrap();
    assert_eq!(
        submit_raw(&h.base, &token_a, enc.clone()).await,
        (403, None, "task_cu_cap".into())
    );
    assert_eq!(h.state.blobs.count(".input").await.unwrap(), 0);
    assert!(a.tasks(None, 10, None).await.unwrap().tasks.is_empty());

    // CU per period: queued tasks reserve their cost.
    p.max_task_cu = None;
    p.cu_per_period = Some(2 * q.cu - 1);
    op.put_plan(&p).await.unwrap();
    let first = a.submit_task(enc.clone(), None).await.unwrap();
    let (status, retry, code) = submit_raw(&h.base, &token_a, enc.clone()).await;
    assert_eq!((status, code.as_str()), (402, "cu_quota_exceeded"));
    assert!(retry.unwrap().parse::<u64>().unwrap() > 0);

    // Active tasks, on this node and on a second API node on the same database.
    p.cu_per_period = None;
    p.max_active_tasks = Some(1);
    op.put_plan(&p).await.unwrap();
    assert_eq!(
        submit_raw(&h.base, &token_a, enc.clone()).await,
        (429, Some("5".into()), "too_many_active_tasks".into())
    );
    let node2 = h.second_node().await;
    let base2 = node2.url();
    assert_eq!(
        submit_raw(&base2, &token_a, enc.clone()).await,
        (429, Some("5".into()), "too_many_active_tasks".into())
    );
    assert_eq!(a.tasks(None, 10, None).await.unwrap().tasks.len(), 1);

    // The tenant reads its plan and usage.
    let limits = a.limits().await.unwrap();
    assert_eq!(limits.plan.name, "tiny");
    assert_eq!((limits.active_tasks, limits.key_sets), (1, 1));
    assert_eq!(limits.period_cu, q.cu);
    assert!(limits.stored_bytes > 0);
    a.cancel_task(&first.id).await.unwrap();
    assert_eq!(a.limits().await.unwrap().active_tasks, 0);

    // Requests per second per API key, counted in the database (both nodes together).
    let mut slow = plan("slow");
    slow.requests_per_second = Some(3);
    op.put_plan(&slow).await.unwrap();
    let (tc, token_c) = create_tenant(&h.state, "initech").await.unwrap();
    op.set_tenant_plan(&tc.id, "slow").await.unwrap();
    let mut limited = 0;
    for i in 0..8 {
        let base = if i % 2 == 0 { &h.base } else { &base2 };
        let r = reqwest::Client::new()
            .get(format!("{base}/v1/key-sets"))
            .bearer_auth(&token_c)
            .send()
            .await
            .unwrap();
        if r.status() == 429 {
            assert_eq!(r.headers()["retry-after"], "1");
            let body: serde_json::Value = r.json().await.unwrap();
            assert_eq!(body["error"]["code"], "rate_limited");
            limited += 1;
        }
    }
    assert!(
        limited > 0,
        "8 requests at once passed a limit of 3 per second"
    );

    // The SDK waits out a rate limit (its Retry-After) instead of failing; a client without
    // retries gets the 429.
    let patient = Client::new(&h.base, &token_c);
    for _ in 0..8 {
        patient.key_sets().await.unwrap();
    }
    let eager = Client::new(&h.base, &token_c).with_retries(0);
    let mut refused = 0;
    for _ in 0..8 {
        match eager.key_sets().await {
            Ok(_) => {}
            Err(HttpError::Api { status, code, .. }) => {
                assert_eq!((status, code.as_str()), (429, "rate_limited"));
                refused += 1;
            }
            Err(e) => panic!("{e:?}"),
        }
    }
    assert!(
        refused > 0,
        "8 requests at once passed a limit of 3 per second"
    );

    // Per tenant too: many keys do not multiply the tenant's rate (a per-key limit of 100
    // with 8 keys, a tenant limit of 4).
    let mut crowd = plan("crowd");
    crowd.requests_per_second = Some(100);
    crowd.tenant_requests_per_second = Some(4);
    op.put_plan(&crowd).await.unwrap();
    let (td, token_d) = create_tenant(&h.state, "hooli").await.unwrap();
    op.set_tenant_plan(&td.id, "crowd").await.unwrap();
    let d = Client::new(&h.base, &token_d);
    let mut tokens = vec![token_d.clone()];
    for i in 0..7 {
        // Slowly: these count towards the tenant's 4 per second too.
        tokio::time::sleep(std::time::Duration::from_millis(400)).await;
        let k = d.create_api_key(&format!("k{i}"), "read").await.unwrap();
        tokens.push(k.token.unwrap());
    }
    let mut limited = 0;
    for round in 0..2 {
        for t in &tokens {
            let base = if round == 0 { &h.base } else { &base2 };
            let r = reqwest::Client::new()
                .get(format!("{base}/v1/key-sets"))
                .bearer_auth(t)
                .send()
                .await
                .unwrap();
            if r.status() == 429 {
                let body: serde_json::Value = r.json().await.unwrap();
                assert_eq!(body["error"]["code"], "rate_limited");
                assert!(
                    body["error"]["message"]
                        .as_str()
                        .is_some_and(|m| m.contains("per tenant")),
                    "{body}"
                );
                limited += 1;
            }
        }
    }
    assert!(
        limited > 0,
        "16 requests over 8 keys passed a tenant limit of 4 per second"
    );
    node2.stop().await.unwrap();
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quotas_on_sqlite() {
    quotas(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quotas_on_postgres() {
    quotas(true).await;
}

async fn raw(store: &Store, sql: &str, args: (&str, &str, &str, i64)) {
    let (a, b, c, d) = args;
    match store.db() {
        Db::Sqlite(p) => sqlx::query(sql)
            .bind(a)
            .bind(b)
            .bind(c)
            .bind(d)
            .execute(p)
            .await
            .map(drop),
        Db::Postgres(p) => {
            let mut tx = common::system_tx(p).await;
            let done = sqlx::query(sql)
                .bind(a)
                .bind(b)
                .bind(c)
                .bind(d)
                .execute(&mut *tx)
                .await;
            tx.commit().await.unwrap();
            done.map(drop)
        }
    }
    .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

async fn audit(postgres: bool) {
    let h = common::Harness::start(postgres).await;
    let op = Client::new(&h.base, common::OPERATOR_TOKEN);
    let (ta, token_a) = create_tenant(&h.state, "acme").await.unwrap();
    let (tb, token_b) = create_tenant(&h.state, "globex").await.unwrap();
    let a = Client::new(&h.base, &token_a);
    let b = Client::new(&h.base, &token_b);

    // State-changing requests are recorded with who, what, the outcome and the request id.
    let key = a.create_api_key("ci", "read").await.unwrap();
    a.revoke_api_key(&key.id).await.unwrap();
    b.create_api_key("ops", "compute").await.unwrap();
    op.put_plan(&plan("pro")).await.unwrap();
    let r = reqwest::Client::new()
        .delete(format!("{}/v1/key-sets/ks_missing", h.base))
        .bearer_auth(&token_a)
        .header("x-request-id", "client-req-1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(r.headers()["x-request-id"], "client-req-1");
    a.key_sets().await.unwrap(); // a read: not recorded

    let mine = a.audit(false, 0, 100).await.unwrap();
    let actions: Vec<(&str, &str)> = mine
        .iter()
        .map(|r| (r.action.as_str(), r.outcome.as_str()))
        .collect();
    assert_eq!(
        actions,
        [
            ("POST /v1/api-keys", "201"),
            ("DELETE /v1/api-keys/{id}", "200"),
            ("DELETE /v1/key-sets/{id}", "404"),
        ]
    );
    assert!(mine
        .iter()
        .all(|r| r.tenant_id.as_deref() == Some(ta.id.as_str())));
    // A creation is recorded against what it created (in the same transaction).
    assert_eq!(mine[0].target, key.id);
    assert_eq!(mine[1].target, format!("/v1/api-keys/{}", key.id));
    assert_eq!(mine[2].request_id, "client-req-1");
    assert!(mine[0].request_id.starts_with("req_"));
    let theirs = b.audit(false, 0, 100).await.unwrap();
    assert_eq!(theirs.len(), 1);
    assert_eq!(theirs[0].tenant_id.as_deref(), Some(tb.id.as_str()));
    // The operator sees everything, its own actions too; nothing secret is in the log.
    let all = op.audit(true, 0, 100).await.unwrap();
    assert_eq!(all.len(), 5);
    assert!(all
        .iter()
        .any(|r| r.actor == "operator" && r.action == "PUT /v1/admin/plans/{name}"));
    let text = serde_json::to_string(&all).unwrap();
    for secret in [&token_a, &token_b, key.token.as_ref().unwrap()] {
        assert!(!text.contains(secret.as_str()));
    }
    assert_eq!(api_code(a.audit(true, 0, 100).await).0, 401);
    assert_eq!(api_code(a.verify_audit().await).0, 401);

    // Checkpoints: signed by the sweep; the untouched log verifies.
    tenebra_server::worker::sweep(&h.state).await;
    a.create_api_key("ci2", "read").await.unwrap();
    tenebra_server::worker::sweep(&h.state).await;
    let v = op.verify_audit().await.unwrap();
    assert!(v.ok, "{v:?}");
    assert_eq!((v.records, v.checkpoints), (6, 2));

    // Rewriting the chain consistently (every later hash recomputed, the head too) fools
    // the chain alone, not the signed checkpoints.
    let records = op.audit(true, 0, 100).await.unwrap();
    let mut prev = records[1].prev_hash.clone();
    for r in &records[1..] {
        let entry = tenebra_store::AuditEntry {
            tenant_id: r.tenant_id.clone(),
            actor: r.actor.clone(),
            action: r.action.clone(),
            target: r.target.clone(),
            outcome: if r.seq == 2 {
                "204".into()
            } else {
                r.outcome.clone()
            },
            request_id: r.request_id.clone(),
        };
        let hash = tenebra_store::audit::chain_hash(&prev, r.seq, r.at, &entry);
        raw(
            &h.state.store,
            "UPDATE audit_log SET outcome = $1, prev_hash = $2, hash = $3 WHERE seq = $4",
            (&entry.outcome, &prev, &hash, r.seq),
        )
        .await;
        prev = hash;
    }
    raw(
        &h.state.store,
        "UPDATE audit_head SET hash = $1 WHERE id = 1 AND $2 = $3 AND $4 = 1",
        (&prev, "", "", 1),
    )
    .await;
    assert_eq!(h.state.store.verify_audit().await.unwrap().first_bad, None);
    let v = op.verify_audit().await.unwrap();
    assert!(!v.ok);
    assert_eq!(v.first_bad_seq, Some(5), "{v:?}");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_on_sqlite() {
    audit(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_on_postgres() {
    audit(true).await;
}

/// A local Stripe that enforces the contract of `POST /v1/billing/meter_events` as Stripe
/// documents it: a secret key as Bearer, a form-encoded body with exactly the known
/// parameters, the meter's event name, a `cus_` customer, an integer value, an identifier
/// unique among accepted events (Stripe: within at least 24 hours) and a timestamp within the
/// past 35 days or 5 minutes ahead; an `Idempotency-Key` replays the first accepted answer
/// for the same body and refuses another body. Failures are injected by request number and by
/// identifier.
mod fake_stripe {
    use std::collections::{HashMap, HashSet};
    use std::sync::{Arc, Mutex};

    use axum::http::{HeaderMap, StatusCode};
    use axum::response::{IntoResponse, Response};
    use serde_json::json;

    pub const KEY: &str = "sk_test_51TenebraFakeStripeKey0123456789";

    #[derive(Default)]
    pub struct Stripe {
        /// Request numbers (from 1) answered 500, and 429.
        pub fail: HashSet<usize>,
        pub rate_limit: HashSet<usize>,
        /// Identifiers refused with 400 (as Stripe would refuse a malformed event).
        pub refuse: HashSet<String>,
        pub requests: usize,
        /// Accepted events: identifier -> form fields.
        pub accepted: HashMap<String, HashMap<String, String>>,
        /// Idempotency key -> (body, status, answer).
        pub idempotent: HashMap<String, (Vec<u8>, u16, serde_json::Value)>,
    }

    fn error(status: u16, message: &str) -> (u16, serde_json::Value) {
        let e = json!({"error": {"type": "invalid_request_error", "message": message}});
        (status, e)
    }

    impl Stripe {
        fn answer(&mut self, headers: &HeaderMap, body: &[u8]) -> (u16, serde_json::Value) {
            self.requests += 1;
            let n = self.requests;
            if headers.get("authorization").and_then(|v| v.to_str().ok())
                != Some(&format!("Bearer {KEY}"))
            {
                return error(401, "Invalid API Key provided");
            }
            if self.fail.contains(&n) {
                return (
                    500,
                    json!({"error": {"type": "api_error", "message": "injected"}}),
                );
            }
            if self.rate_limit.contains(&n) {
                return error(429, "Too many requests");
            }
            let form_type = headers
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|t| t.starts_with("application/x-www-form-urlencoded"));
            if !form_type {
                return error(400, "Invalid request: the body must be form-encoded");
            }
            let key = headers
                .get("idempotency-key")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            if let Some((was, status, answer)) = key.as_ref().and_then(|k| self.idempotent.get(k)) {
                if was.as_slice() != body {
                    return error(400, "Keys for idempotent requests can only be used with the same parameters they were first used with");
                }
                return (*status, answer.clone());
            }
            let (status, answer) = self.event(body);
            // Stripe saves no idempotent result for a request that failed validation.
            if let Some(k) = key.filter(|_| status == 200) {
                self.idempotent
                    .insert(k, (body.to_vec(), status, answer.clone()));
            }
            (status, answer)
        }

        fn event(&mut self, body: &[u8]) -> (u16, serde_json::Value) {
            let known = [
                "event_name",
                "payload[stripe_customer_id]",
                "payload[value]",
                "identifier",
                "timestamp",
            ];
            let mut f = HashMap::new();
            for (k, v) in form_urlencoded::parse(body) {
                if !known.contains(&k.as_ref()) {
                    return error(400, &format!("Received unknown parameter: {k}"));
                }
                f.insert(k.into_owned(), v.into_owned());
            }
            let now = tenebra_store::now_ms() / 1000;
            let get = |k: &str| f.get(k).map(String::as_str).unwrap_or_default();
            if get("event_name") != "tenebra_cu" {
                return error(400, "No active meter was found for the event name");
            }
            if !get("payload[stripe_customer_id]").starts_with("cus_") {
                return error(400, "payload[stripe_customer_id] is not a customer");
            }
            if get("payload[value]").parse::<u64>().is_err() {
                return error(400, "payload[value] must be a whole number");
            }
            let id = get("identifier").to_owned();
            if id.is_empty() || id.len() > 100 {
                return error(400, "identifier must be 1 to 100 characters");
            }
            match get("timestamp").parse::<i64>() {
                Ok(t) if t >= now - 35 * 86_400 && t <= now + 300 => {}
                _ => {
                    return error(400, "timestamp must be within the past 35 calendar days or up to 5 minutes in the future")
                }
            }
            if self.refuse.contains(&id) {
                return error(400, "injected refusal");
            }
            if self.accepted.contains_key(&id) {
                return error(
                    400,
                    &format!("An event with identifier {id} already exists"),
                );
            }
            let answer = json!({"object": "billing.meter_event", "identifier": id,
                "event_name": get("event_name"), "livemode": false});
            self.accepted.insert(id, f);
            (200, answer)
        }
    }

    /// Serves it on a free loopback port; the API base URL.
    pub async fn serve(stripe: Arc<Mutex<Stripe>>) -> String {
        let app = axum::Router::new().route(
            "/v1/billing/meter_events",
            axum::routing::post(move |headers: HeaderMap, body: axum::body::Bytes| {
                let stripe = stripe.clone();
                async move {
                    let (status, answer) = stripe.lock().unwrap().answer(&headers, &body);
                    let status = StatusCode::from_u16(status).unwrap();
                    let r: Response = (status, axum::Json(answer)).into_response();
                    r
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        base
    }
}

/// Ends `n` charged tasks of a tenant as a worker would (40 CU each); their ids.
async fn charged_tasks(h: &common::Harness, tenant: &str, n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for _ in 0..n {
        let new = tenebra_store::NewTask {
            id: tenebra_store::new_id("task"),
            api_key_id: "key_1".into(),
            function: "weight_stats".into(),
            size: 5,
            circuit_id: "c".into(),
            key_set_id: "ks".into(),
            idempotency_key: None,
            input_sha256: "00".into(),
            input_bytes: 10,
            cost_cu: 40,
        };
        h.state.store.submit_task(tenant, &new).await.unwrap();
        let c = h
            .state
            .store
            .claim_task("w", std::time::Duration::from_secs(30), 3)
            .await
            .unwrap()
            .unwrap();
        let done = tenebra_store::Outcome::Succeeded {
            result_bytes: 5,
            expires_at: i64::MAX,
        };
        h.state
            .store
            .finish_task(&c.id, c.fence, &done, 1)
            .await
            .unwrap();
        ids.push(c.id);
    }
    ids
}

/// Meter events to Stripe: only tenants mapped to a customer (through the operator API);
/// server errors and rate limits retried; a record past Stripe's window marked expired and one
/// Stripe refuses marked refused, neither holding up the rest; each event accepted once
/// however often the export runs; a wrong key stops the export with nothing marked; a
/// mapping added later sends the waiting records; refusals sent again on request; the
/// JSON-lines file gets what Stripe got.
async fn meter_events_to_stripe(postgres: bool) {
    use std::sync::{Arc, Mutex};
    use tenebra_server::billing::{export_meter_events, MeterSink, StripeSink};

    let h = common::Harness::start(postgres).await;
    let op = Client::new(&h.base, common::OPERATOR_TOKEN);
    let (a, _) = create_tenant(&h.state, "acme").await.unwrap();
    let (b, _) = create_tenant(&h.state, "globex").await.unwrap();
    let (c, token_c) = create_tenant(&h.state, "initech").await.unwrap();
    let ids_a = charged_tasks(&h, &a.id, 3).await;
    let ids_b = charged_tasks(&h, &b.id, 1).await;
    let ids_c = charged_tasks(&h, &c.id, 2).await;
    // One of a's records is 40 days old: Stripe no longer takes it.
    let old = tenebra_store::now_ms() - 40 * 86_400_000;
    raw(
        &h.state.store,
        "UPDATE usage_records SET recorded_at = $4 WHERE task_id = $1 AND $2 = $2 AND $3 = $3",
        (&ids_a[0], "", "", old),
    )
    .await;

    // The operator maps a and c (b stays unmapped); bad ids and unknown tenants are refused,
    // and the operator API is the operator's alone.
    for (t, cus) in [(&a.id, "cus_Acme0001"), (&c.id, "cus_Initech02")] {
        let m = op.set_tenant_billing(t, Some(cus)).await.unwrap();
        assert_eq!(m.stripe_customer_id.as_deref(), Some(cus));
    }
    assert_eq!(
        op.tenant_billing(&a.id)
            .await
            .unwrap()
            .stripe_customer_id
            .as_deref(),
        Some("cus_Acme0001")
    );
    for bad in [
        "acme",
        "cus_",
        "cus_a/b",
        "prod_123",
        &format!("cus_{}", "x".repeat(251)),
    ] {
        assert_eq!(
            api_code(op.set_tenant_billing(&b.id, Some(bad)).await),
            (400, "invalid_customer".into()),
            "{bad}"
        );
    }
    assert_eq!(api_code(op.tenant_billing("tn_nobody").await).0, 404);
    assert_eq!(
        api_code(op.set_tenant_billing("tn_nobody", Some("cus_X1")).await).0,
        404
    );
    // Every attempt is in the audit log as the operator's, with its answer.
    let all = op.audit(true, 0, 1000).await.unwrap();
    let outcomes: Vec<&str> = all
        .iter()
        .filter(|r| r.action == "PUT /v1/admin/tenants/{id}/billing")
        .inspect(|r| assert_eq!(r.actor, "operator"))
        .map(|r| r.outcome.as_str())
        .collect();
    assert_eq!(
        outcomes,
        ["200", "200", "400", "400", "400", "400", "400", "404"]
    );
    let tenant_c = Client::new(&h.base, &token_c);
    assert_eq!(
        api_code(tenant_c.set_tenant_billing(&c.id, Some("cus_Mine1")).await).0,
        401
    );

    // Stripe: request 1 fails, request 3 is rate limited, c's second event is refused.
    let stripe = Arc::new(Mutex::new(fake_stripe::Stripe {
        fail: [1].into(),
        rate_limit: [3].into(),
        refuse: [ids_c[1].clone()].into(),
        ..Default::default()
    }));
    let api_base = fake_stripe::serve(stripe.clone()).await;
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("events.jsonl");
    let mut sink = MeterSink {
        file: Some(file.clone()),
        stripe: Some(StripeSink {
            api_key: "sk_test_wrong".into(),
            api_base: api_base.clone(),
        }),
        attempts: 4,
    };

    // A wrong key: the export stops at the first request and marks nothing it sent (the
    // oldest record, past the window, is marked expired without asking Stripe).
    let done = export_meter_events(&h.state, &sink).await.unwrap();
    assert_eq!((done.events, done.expired), (0, 1));
    assert!(done.stopped.as_deref().unwrap().contains("401"), "{done:?}");
    assert!(done.pending > 0);
    assert!(stripe.lock().unwrap().accepted.is_empty());
    assert_eq!(stripe.lock().unwrap().requests, 1);
    let counts = h.state.store.meter_export_counts().await.unwrap();
    assert_eq!((counts.sent, counts.expired, counts.refused), (0, 1, 0));
    stripe.lock().unwrap().requests = 0;

    sink.stripe = Some(StripeSink {
        api_key: fake_stripe::KEY.into(),
        api_base,
    });
    let done = export_meter_events(&h.state, &sink).await.unwrap();
    assert_eq!(done.stopped, None, "{done:?}");
    assert_eq!(
        (done.events, done.expired, done.pending),
        (3, 0, 0),
        "{done:?}"
    );
    assert_eq!(done.refused.len(), 1);
    assert_eq!(done.refused[0].0, ids_c[1]);
    assert!(done.refused[0].1.contains("injected refusal"), "{done:?}");
    assert_eq!(done.unmapped, 1);
    {
        let s = stripe.lock().unwrap();
        let mut got: Vec<&String> = s.accepted.keys().collect();
        got.sort();
        let mut want = vec![&ids_a[1], &ids_a[2], &ids_c[0]];
        want.sort();
        assert_eq!(got, want);
        for (id, cus) in [(&ids_a[1], "cus_Acme0001"), (&ids_c[0], "cus_Initech02")] {
            let f = &s.accepted[id.as_str()];
            assert_eq!(f["payload[stripe_customer_id]"], cus);
            assert_eq!(f["payload[value]"], "40");
            assert_eq!(f["event_name"], "tenebra_cu");
        }
        // 3 accepted + 1 refused + the expired one never sent + 1 failure + 1 rate limit.
        assert_eq!(s.requests, 6);
    }

    // Again: nothing goes twice, b still waits.
    let again = export_meter_events(&h.state, &sink).await.unwrap();
    assert_eq!(
        (again.events, again.expired, again.refused.len()),
        (0, 0, 0)
    );
    assert_eq!(again.unmapped, 1);

    // A crash between Stripe's 2xx and the mark: the repeat is answered from the
    // idempotency key, not counted twice.
    raw(
        &h.state.store,
        "DELETE FROM meter_exports WHERE task_id = $1 AND $2 = $2 AND $3 = $3 AND $4 = $4",
        (&ids_a[1], "", "", 0),
    )
    .await;
    let repeat = export_meter_events(&h.state, &sink).await.unwrap();
    assert_eq!(repeat.events, 1);
    assert_eq!(stripe.lock().unwrap().accepted.len(), 3);

    // b gets a customer: its waiting record goes; the refusal goes again on request (and
    // Stripe now takes it).
    op.set_tenant_billing(&b.id, Some("cus_Globex03"))
        .await
        .unwrap();
    stripe.lock().unwrap().refuse.clear();
    assert_eq!(h.state.store.retry_refused_meter_events().await.unwrap(), 1);
    let last = export_meter_events(&h.state, &sink).await.unwrap();
    assert_eq!((last.events, last.refused.len(), last.unmapped), (2, 0, 0));
    {
        let s = stripe.lock().unwrap();
        assert_eq!(s.accepted.len(), 5);
        assert_eq!(
            s.accepted[ids_b[0].as_str()]["payload[stripe_customer_id]"],
            "cus_Globex03"
        );
    }
    let counts = h.state.store.meter_export_counts().await.unwrap();
    assert_eq!((counts.sent, counts.expired, counts.refused), (5, 1, 0));

    // The file has each delivered event once (the repeat included), with its customer and
    // tenant.
    let lines = std::fs::read_to_string(&file).unwrap();
    let events: Vec<serde_json::Value> = lines
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(events.len(), 6, "{lines}");
    for e in &events {
        let tenant = e["tenant_id"].as_str().unwrap();
        assert!([&a.id, &b.id, &c.id].iter().any(|t| t.as_str() == tenant));
        assert!(e["payload"]["stripe_customer_id"]
            .as_str()
            .unwrap()
            .starts_with("cus_"));
    }
    assert!(
        !lines.contains(&ids_a[0]),
        "the expired record is not in the file"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn meter_events_to_stripe_on_sqlite() {
    meter_events_to_stripe(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn meter_events_to_stripe_on_postgres() {
    meter_events_to_stripe(true).await;
}

/// Without Stripe, every charged record goes to the file, mapped or not (the customer
/// omitted where there is none), each once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn meter_events_to_a_file_once() {
    use tenebra_server::billing::{export_meter_events, MeterSink};

    let h = common::Harness::start(false).await;
    let (a, _) = create_tenant(&h.state, "acme").await.unwrap();
    let (b, _) = create_tenant(&h.state, "globex").await.unwrap();
    h.state
        .store
        .set_tenant_billing(&a.id, Some("cus_Acme0001"))
        .await
        .unwrap();
    charged_tasks(&h, &a.id, 1).await;
    charged_tasks(&h, &b.id, 1).await;
    let tmp = tempfile::tempdir().unwrap();
    let sink = MeterSink {
        file: Some(tmp.path().join("events.jsonl")),
        ..MeterSink::default()
    };
    assert_eq!(
        export_meter_events(&h.state, &sink).await.unwrap().events,
        2
    );
    assert_eq!(
        export_meter_events(&h.state, &sink).await.unwrap().events,
        0
    );
    let lines = std::fs::read_to_string(tmp.path().join("events.jsonl")).unwrap();
    let mut events: Vec<serde_json::Value> = lines
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    events.sort_by_key(|e| e["tenant_id"] != a.id.as_str());
    assert_eq!(events.len(), 2);
    assert_eq!(events[0]["payload"]["stripe_customer_id"], "cus_Acme0001");
    assert_eq!(events[1]["tenant_id"], b.id.as_str());
    assert!(events[1]["payload"].get("stripe_customer_id").is_none());
    assert_eq!(events[1]["payload"]["value"], "40");
    h.stop().await;
}
