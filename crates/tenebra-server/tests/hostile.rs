//! A hostile tenant with nothing but a valid API key, against the real server on port 0 with
//! a real worker, on SQLite and on the real PostgreSQL. Every attack is refused with its 4xx
//! before anything is spent; afterwards the server still answers and another tenant's task
//! still finishes with the reference result.

use std::time::Duration;

use serde_json::{json, Value};
use tenebra_circuit::testing::hostile;
use tenebra_client::http::{Client, HttpError};
use tenebra_client::{decrypt, encrypt};
use tenebra_engine::test_support::{client_keys, test_key_dir};
use tenebra_functions::onnx::testing::matmul_chain as onnx;
use tenebra_server::create_tenant;
use tenebra_server::worker::{self, WorkerConfig};
use tokio::sync::watch;

mod common;

/// The address space this test process may use: an unbounded allocation anywhere in it
/// (API, in-process worker, executor) fails the test instead of taking the machine's
/// memory (24 GiB here; a task's working set is at most 4 GiB, two run at once).
const MEMORY_LIMIT: u64 = 12 << 30;

/// Puts the process under [`MEMORY_LIMIT`]; every test here calls it first.
fn limit_memory() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        rlimit::setrlimit(rlimit::Resource::AS, MEMORY_LIMIT, MEMORY_LIMIT)
            .expect("limiting the address space");
    });
}

/// The limit holds: reserving it all at once fails (without it, overcommit would grant it).
#[test]
fn the_memory_limit_holds() {
    limit_memory();
    let mut v: Vec<u8> = Vec::new();
    assert!(v.try_reserve_exact(MEMORY_LIMIT as usize).is_err());
    let (soft, _) = rlimit::getrlimit(rlimit::Resource::AS).unwrap();
    assert_eq!(soft, MEMORY_LIMIT);
}

fn api_error<T: std::fmt::Debug>(r: Result<T, HttpError>) -> (u16, String, String) {
    match r {
        Err(HttpError::Api {
            status,
            code,
            message,
        }) => (status, code, message),
        other => panic!("expected an API error, got {other:?}"),
    }
}

async fn attacks(postgres: bool) {
    limit_memory();
    let h = common::Harness::start(postgres).await;
    let (stop_worker, rx) = watch::channel(false);
    let worker = tokio::spawn(worker::run(
        h.state.clone(),
        WorkerConfig {
            lease: Duration::from_secs(6),
            poll: Duration::from_millis(500),
            ..WorkerConfig::default()
        },
        rx,
    ));
    let (_, evil_token) = create_tenant(&h.state, "mallory").await.unwrap();
    let (_, good_token) = create_tenant(&h.state, "alice").await.unwrap();
    let evil = Client::new(&h.base, &evil_token);
    let good = Client::new(&h.base, &good_token);
    let http = reqwest::Client::new();

    // The 95-byte ONNX file that aborted the process: a MatMul weight of dims [0, 2^44]
    // (product 0, so no data needed) whose rows were collected one by one. Also dims that
    // overflow, and a thousand layers reading one initializer.
    let files = [
        ("zero times 2^44", onnx(&[0, 1 << 44], &[], 1), "dim 0"),
        ("2^32 squared", onnx(&[1 << 32, 1 << 32], &[], 1), "dim"),
        ("1000 layers", onnx(&[2, 2], &[0.0; 4], 1000), "1000 nodes"),
    ];
    for (what, body, needle) in files {
        let r = http
            .post(format!(
                "{}/v1/models?format=onnx&name=m&input_min=0&input_max=1",
                h.base
            ))
            .bearer_auth(&evil_token)
            .body(body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let body: Value = r.json().await.unwrap();
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (400, Some("invalid_model")),
            "{what}: {body}"
        );
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(needle), "{what}: {message}");
    }

    // One u64 named 4096 times in each of 64 u64[4096] outputs: 262,144 ciphertexts
    // (~4 GiB) for a few hundred CU. Refused at deploy with the numbers.
    let json = |v: Value| serde_json::to_vec(&v).unwrap();
    let (status, code, message) = api_error(
        evil.deploy_function(json(hostile::repeated_outputs()))
            .await,
    );
    assert_eq!((status, code.as_str()), (400, "circuit_too_large"));
    assert!(message.contains("4096"), "{message}");
    // A working set over the worker's budget: 4096 u64 inputs summed (2.2 GB expanded).
    let (status, code, message) =
        api_error(evil.deploy_function(json(hostile::wide_sum(4096))).await);
    assert_eq!(
        (status, code.as_str()),
        (400, "circuit_too_large"),
        "{message}"
    );
    assert!(message.contains("memory"), "{message}");

    // Many large documents at once (100,000 mins of one pair, ~3 MB each, that plan in
    // linear time): each answers, none with a 5xx, while the other tenant is served.
    let big = json(hostile::many_mins(100_000));
    let flood: Vec<_> = (0..6)
        .map(|_| {
            let (evil, big) = (evil.clone(), big.clone());
            tokio::spawn(async move { evil.deploy_function(big).await })
        })
        .collect();
    let listed = good.functions().await.unwrap();
    assert!(listed.iter().any(|f| f.name == "weight_stats"));
    for f in flood {
        match f.await.unwrap() {
            Ok(_) => {}
            Err(HttpError::Api { status, code, .. }) => {
                assert!(
                    status == 429 && code == "too_many_requests",
                    "{status} {code}"
                )
            }
            Err(e) => panic!("{e:?}"),
        }
    }

    // API keys cannot be minted without end (each would get its own rate limit): 100 live
    // keys per tenant (the first came with the tenant), then 403; revoking one frees a slot.
    let mut last = None;
    for i in 1..tenebra_store::MAX_LIVE_API_KEYS {
        last = Some(evil.create_api_key(&format!("k{i}"), "read").await.unwrap());
    }
    let (status, code, _) = api_error(evil.create_api_key("one-more", "read").await);
    assert_eq!((status, code.as_str()), (403, "api_key_quota_exceeded"));
    evil.revoke_api_key(&last.unwrap().id).await.unwrap();
    evil.create_api_key("one-more", "read").await.unwrap();

    // The service is up and another tenant's task runs to the reference result.
    let health = http
        .get(format!("{}/healthz", h.base))
        .send()
        .await
        .unwrap();
    assert!(health.status().is_success());
    let upload = tenebra_engine::keys::read_upload(&test_key_dir()).unwrap();
    good.upload_key_set(upload).await.unwrap();
    let weights = tenebra_functions::find("weight_stats").unwrap();
    let input = json!({"weights": [680, 650, 0, 65535, 705]});
    let enc = encrypt(client_keys(), weights, &input).unwrap();
    let t = good.submit_task(enc, None).await.unwrap();
    let done = good.wait_task(&t.id, |_| {}).await.unwrap();
    assert_eq!(done.status, "succeeded", "{done:?}");
    let result = good.task_result(&t.id).await.unwrap();
    assert_eq!(
        decrypt(client_keys(), weights, &result).unwrap(),
        weights.reference(&input).unwrap()
    );

    // `/metrics` answers only its token, and labels tasks by function kind, never by a
    // name a tenant chose.
    let scrape = |token: &str| {
        http.get(format!("{}/metrics", h.base))
            .bearer_auth(token)
            .send()
    };
    assert_eq!(scrape(&evil_token).await.unwrap().status(), 401);
    let metrics = scrape(common::METRICS_TOKEN)
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("tenebra_task_seconds"), "{metrics}");
    assert!(!metrics.contains("evil") && !metrics.contains("mallory"));

    // Failed authentications are throttled per source address, before any key lookup:
    // guesses of the operator token count as much as unknown API keys (last: every client
    // of this test shares 127.0.0.1; the wrong metrics token above counted once).
    let limit = tenebra_server::AUTH_FAILURES_PER_MINUTE;
    let guess = |token: String| {
        http.get(format!("{}/v1/admin/plans", h.base))
            .bearer_auth(token)
            .send()
    };
    let mut refused = 0;
    let mut throttled = None;
    // At most twice the limit: the counting minute may turn over once in between.
    for _ in 0..2 * limit + 1 {
        let r = guess(tenebra_server::token::generate()).await.unwrap();
        if r.status() == 429 {
            throttled = Some(r.json::<Value>().await.unwrap());
            break;
        }
        assert_eq!(r.status(), 401);
        refused += 1;
    }
    let throttled = throttled.expect("operator token guesses are never throttled");
    assert_eq!(
        throttled["error"]["code"],
        "too_many_failed_authentications"
    );
    assert!(
        refused + 1 >= limit,
        "{refused} refusals before the throttle"
    );
    // The source is throttled for API keys too, and for the right operator token...
    let bogus = Client::new(&h.base, &tenebra_server::token::generate());
    let (status, code, _) = api_error(bogus.functions().await);
    assert_eq!(
        (status, code.as_str()),
        (429, "too_many_failed_authentications")
    );
    assert_eq!(
        guess(common::OPERATOR_TOKEN.into()).await.unwrap().status(),
        429
    );
    // ...but not for API keys that authenticated lately: other clients behind the same
    // address (a NAT, a proxy) keep working while one of them fails.
    assert!(good.functions().await.is_ok());

    // Secrets at rest are the owner's alone: the data directory 0700, the token secret 0600.
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&h.settings.data_dir), 0o700);
        assert_eq!(mode(&h.settings.data_dir.join("secret.key")), 0o600);
    }

    let _ = stop_worker.send(true);
    let _ = worker.await;
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attacks_on_sqlite() {
    attacks(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attacks_on_postgres() {
    attacks(true).await;
}

/// A client that sends a change and hangs up at once (before the answer) still leaves the
/// change done and its audit record written: changes run to their end whatever the
/// connection does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_hangs_up_leaves_the_change_and_its_audit_record() {
    use tokio::io::AsyncWriteExt;
    limit_memory();
    let h = common::Harness::start(false).await;
    let (_, token) = create_tenant(&h.state, "hangs-up").await.unwrap();
    let c = Client::new(&h.base, &token);
    // Big enough that parsing, validating and planning it (off the async threads) takes a
    // while after the bytes are in.
    let circuit =
        tenebra_circuit::testing::random_circuit(&mut tenebra_circuit::testing::Rng::new(11), 3000);
    let body = circuit.canonical_json();
    let addr = h.base.trim_start_matches("http://");
    let mut socket = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST /v1/functions HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {token}\r\n\
         content-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    socket.write_all(head.as_bytes()).await.unwrap();
    socket.write_all(&body).await.unwrap();
    socket.flush().await.unwrap();
    drop(socket);

    let mut deployed = false;
    let mut audited = false;
    for _ in 0..300 {
        let functions = c.functions().await.unwrap();
        deployed = functions
            .iter()
            .any(|f| f.name == "random" && f.version == Some(1));
        let records = c.audit(false, 0, 100).await.unwrap();
        audited = records
            .iter()
            .any(|r| r.action == "POST /v1/functions" && r.outcome == "201");
        if deployed && audited {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(deployed, "the deploy ran to its end");
    assert!(audited, "and its audit record was written");
    let check = h.state.store.verify_audit().await.unwrap();
    assert_eq!(check.first_bad, None);
    h.stop().await;
}

/// Many clients at once: three tenants each submit tasks concurrently (some twice, with the
/// same idempotency key) while a worker with two slots runs them. Every task ends exactly
/// once with the reference result, nothing answers 5xx, each tenant's usage records are its
/// tasks, and the audit chain verifies.
async fn load(postgres: bool) {
    limit_memory();
    use tenebra_circuit::builder::Builder;
    use tenebra_circuit::ScalarType::Uint;
    const TENANTS: usize = 3;
    const TASKS: usize = 4;
    let h = common::Harness::start(postgres).await;
    let (stop_worker, rx) = watch::channel(false);
    let worker = tokio::spawn(worker::run(
        h.state.clone(),
        WorkerConfig {
            concurrency: 2,
            poll: Duration::from_millis(200),
            ..WorkerConfig::default()
        },
        rx,
    ));
    let b = Builder::new("inc");
    let x = b.input("x", Uint(8));
    b.output("y", &(&x + 1));
    let circuit = std::sync::Arc::new(b.build().unwrap());
    let mut tenants = tokio::task::JoinSet::new();
    for t in 0..TENANTS {
        let (state, base, circuit) = (h.state.clone(), h.base.clone(), circuit.clone());
        tenants.spawn(async move {
            let (tenant, token) = create_tenant(&state, &format!("load-{t}")).await.unwrap();
            let c = Client::new(&base, &token);
            c.upload_key_set(tenebra_engine::keys::read_upload(&test_key_dir()).unwrap())
                .await
                .unwrap();
            c.deploy_function(circuit.canonical_json()).await.unwrap();
            let mut runs = tokio::task::JoinSet::new();
            for i in 0..TASKS {
                let (c, circuit) = (c.clone(), circuit.clone());
                runs.spawn(async move {
                    let x = (t * 50 + i * 7) as u64;
                    let input = json!({ "x": x });
                    let enc =
                        tenebra_client::encrypt_circuit(client_keys(), &circuit, &input).unwrap();
                    let key = format!("run-{i}");
                    let first = c.submit_task(enc.clone(), Some(&key)).await.unwrap();
                    let again = c.submit_task(enc, Some(&key)).await.unwrap();
                    assert_eq!(first.id, again.id, "one idempotency key, one task");
                    let done = c.wait_task(&first.id, |_| {}).await.unwrap();
                    assert_eq!(done.status, "succeeded", "{done:?}");
                    let res = c.task_result(&done.id).await.unwrap();
                    let got =
                        tenebra_client::decrypt_circuit(client_keys(), &circuit, &res).unwrap();
                    assert_eq!(got, json!({ "y": (x + 1) % 256 }));
                    done.id
                });
            }
            let mut ids = runs.join_all().await;
            ids.sort();
            ids.dedup();
            assert_eq!(ids.len(), TASKS);
            let usage = c.usage(&[("limit", "100".to_owned())]).await.unwrap();
            let mut charged: Vec<String> =
                usage.records.iter().map(|r| r.task_id.clone()).collect();
            charged.sort();
            assert_eq!(charged, ids, "one usage record per task, no more");
            assert_eq!(usage.totals.tasks, TASKS as i64);
            tenant.id
        });
    }
    let ids = tenants.join_all().await;
    assert_eq!(ids.len(), TENANTS);
    let check = h.state.store.verify_audit().await.unwrap();
    assert_eq!(check.first_bad, None);
    let _ = stop_worker.send(true);
    worker.await.unwrap().unwrap();
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn load_on_sqlite() {
    load(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn load_on_postgres() {
    load(true).await;
}
