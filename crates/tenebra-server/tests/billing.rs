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

/// Meter events pushed to a local HTTP receiver that fails at first: retried, and each
/// identifier delivered once across exports.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn meter_events_reach_a_flaky_endpoint_once() {
    use std::sync::{Arc, Mutex};
    use tenebra_server::billing::{export_meter_events, MeterSink};

    let h = common::Harness::start(false).await;
    let (t, _) = create_tenant(&h.state, "acme").await.unwrap();
    // Two ended tasks, metered by the store as workers would end them.
    for _ in 0..2 {
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
        h.state.store.submit_task(&t.id, &new).await.unwrap();
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
    }

    // The receiver: 500 for the first two requests, then 200; it records what it got.
    let got: Arc<Mutex<Vec<(String, serde_json::Value)>>> = Arc::default();
    let calls = Arc::new(Mutex::new(0));
    let app = {
        let got = got.clone();
        axum::Router::new().route(
            "/events",
            axum::routing::post(
                move |headers: axum::http::HeaderMap, body: axum::Json<serde_json::Value>| {
                    let got = got.clone();
                    let calls = calls.clone();
                    async move {
                        let n = {
                            let mut c = calls.lock().unwrap();
                            *c += 1;
                            *c
                        };
                        if n <= 2 {
                            return axum::http::StatusCode::INTERNAL_SERVER_ERROR;
                        }
                        let key = headers["idempotency-key"].to_str().unwrap().to_owned();
                        got.lock().unwrap().push((key, body.0));
                        axum::http::StatusCode::OK
                    }
                },
            ),
        )
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/events", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let sink = MeterSink {
        url: Some(url),
        attempts: 4,
        ..MeterSink::default()
    };
    let done = export_meter_events(&h.state, &sink).await.unwrap();
    assert_eq!((done.events, done.pending), (2, 0));
    let again = export_meter_events(&h.state, &sink).await.unwrap();
    assert_eq!(again.events, 0);
    let got = got.lock().unwrap().clone();
    assert_eq!(got.len(), 2);
    let usage = h
        .state
        .store
        .list_usage(
            Some(&t.id),
            &tenebra_store::UsageFilter::default(),
            10,
            None,
        )
        .await
        .unwrap();
    for (key, event) in &got {
        assert_eq!(&event["identifier"], key.as_str());
        assert_eq!(event["payload"]["stripe_customer_id"], t.id.as_str());
        assert_eq!(event["payload"]["value"], "40");
        assert!(usage.records.iter().any(|u| &u.task_id == key));
    }
    assert_ne!(got[0].0, got[1].0);
    h.stop().await;
}
