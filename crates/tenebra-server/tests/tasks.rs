//! Tasks through the real server on port 0 and the real client SDK, with a real worker
//! running real tfhe-rs, on SQLite and on the real PostgreSQL.

use std::time::Duration;

use serde_json::json;
use tenebra_client::http::{Client, HttpError, Task};
use tenebra_client::{decrypt, encrypt};
use tenebra_engine::bundle::{self, Kind};
use tenebra_engine::test_support::{client_keys, test_key_dir};
use tenebra_server::create_tenant;
use tenebra_server::worker::{self, WorkerConfig};
use tokio::sync::watch;

mod common;

struct Service {
    h: common::Harness,
    worker_stop: Option<watch::Sender<bool>>,
}

async fn start(postgres: bool) -> Service {
    Service {
        h: common::Harness::start(postgres).await,
        worker_stop: None,
    }
}

impl Service {
    fn start_worker(&mut self, result_ttl: Duration) {
        self.start_worker_with(WorkerConfig {
            lease: Duration::from_secs(6),
            poll: Duration::from_millis(500),
            result_ttl,
            ..WorkerConfig::default()
        });
    }

    fn start_worker_with(&mut self, cfg: WorkerConfig) {
        let (tx, rx) = watch::channel(false);
        tokio::spawn(worker::run(self.h.state.clone(), cfg, rx));
        self.worker_stop = Some(tx);
    }

    async fn stop(self) {
        if let Some(w) = &self.worker_stop {
            let _ = w.send(true);
        }
        self.h.stop().await;
    }
}

fn api_code(r: Result<impl std::fmt::Debug, HttpError>) -> (u16, String) {
    match r {
        Err(HttpError::Api { status, code, .. }) => (status, code),
        other => panic!("expected an API error, got {other:?}"),
    }
}

/// An input bundle whose header says something else than what `encrypt` wrote.
fn with_header(bytes: &[u8], edit: impl FnOnce(&mut bundle::Header)) -> Vec<u8> {
    let (mut header, payload) = bundle::read(bytes, Kind::Input).unwrap();
    edit(&mut header);
    bundle::write(Kind::Input, &header, payload).unwrap()
}

async fn wait_until(client: &Client, id: &str, what: impl Fn(&Task) -> bool) -> Task {
    for _ in 0..600 {
        let t = client.task(id).await.unwrap();
        if what(&t) {
            return t;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("task {id} never reached the expected state");
}

async fn story(postgres: bool) {
    let mut s = start(postgres).await;
    let (_, token_a) = create_tenant(&s.h.state, "acme").await.unwrap();
    let (_, token_b) = create_tenant(&s.h.state, "globex").await.unwrap();
    let a = Client::new(&s.h.base, &token_a);
    let b = Client::new(&s.h.base, &token_b);
    let keys = client_keys();
    let weights = tenebra_functions::find("weight_stats").unwrap();
    let sleep = tenebra_functions::find("sleep_quality").unwrap();
    let input = json!({"weights": [680, 650, 0, 65535, 705]});
    let enc = encrypt(keys, weights, &input).unwrap();

    // Refused at submit: no key set yet, garbage, unknown function, another circuit version.
    assert_eq!(
        api_code(a.submit_task(enc.clone(), None).await),
        (400, "unknown_key_set".into())
    );
    let upload = tenebra_engine::keys::read_upload(&test_key_dir()).unwrap();
    a.upload_key_set(upload).await.unwrap();
    let bad_inputs = [
        (b"garbage".to_vec(), "invalid_input"),
        (
            with_header(&enc, |h| h.function = "nope".into()),
            "unknown_function",
        ),
        (with_header(&enc, |h| h.size = 1_000_000), "invalid_size"),
        (
            with_header(&enc, |h| h.circuit_id = "0".repeat(64)),
            "circuit_mismatch",
        ),
    ];
    for (bytes, code) in bad_inputs {
        assert_eq!(
            api_code(a.submit_task(bytes, None).await),
            (400, code.into())
        );
    }
    // Tenant b has not uploaded the key set: the same input is refused for b.
    assert_eq!(
        api_code(b.submit_task(enc.clone(), None).await),
        (400, "unknown_key_set".into())
    );

    // Queued while no worker runs.
    let t1 = a.submit_task(enc.clone(), Some("weights-1")).await.unwrap();
    assert_eq!(t1.status, "queued");
    assert!(t1.cost_cu > 0);
    let again = a.submit_task(enc.clone(), Some("weights-1")).await.unwrap();
    assert_eq!(again.id, t1.id, "same Idempotency-Key, same task");
    let other = encrypt(keys, weights, &json!({"weights": [1, 2, 3, 4, 5]})).unwrap();
    assert_eq!(
        api_code(a.submit_task(other, Some("weights-1")).await),
        (409, "idempotency_conflict".into())
    );
    // A header that passes but a payload that does not: fails in the worker, once.
    let (_, payload) = bundle::read(&enc, Kind::Input).unwrap();
    let mut broken = enc[..enc.len() - payload.len()].to_vec();
    broken.extend_from_slice(&payload[..payload.len() / 2]);
    let t2 = a.submit_task(broken, None).await.unwrap();
    let t3 = a.submit_task(enc.clone(), None).await.unwrap();
    let records = json!({"records": [[0,0,120],[3,120,150],[0,150,210],[4,210,240],[0,240,300]]});
    let t4 = a
        .submit_task(encrypt(keys, sleep, &records).unwrap(), None)
        .await
        .unwrap();
    assert_eq!(
        api_code(a.task_result(&t1.id).await),
        (409, "not_ready".into())
    );

    // Another tenant sees none of it.
    assert_eq!(api_code(b.task(&t1.id).await), (404, "not_found".into()));
    assert_eq!(
        api_code(b.cancel_task(&t1.id).await),
        (404, "not_found".into())
    );
    assert_eq!(
        api_code(b.task_result(&t1.id).await),
        (404, "not_found".into())
    );
    assert!(b.tasks(None, 10, None).await.unwrap().tasks.is_empty());

    // A queued task cancels at once.
    let c3 = a.cancel_task(&t3.id).await.unwrap();
    assert_eq!(c3.status, "cancelled");
    assert_eq!(
        api_code(a.task_result(&t3.id).await),
        (409, "task_cancelled".into())
    );

    s.start_worker(Duration::from_secs(8));
    let d1 = a.wait_task(&t1.id, |_| {}).await.unwrap();
    assert_eq!(d1.status, "succeeded", "{d1:?}");
    let result = a.task_result(&t1.id).await.unwrap();
    assert_eq!(Some(result.len() as i64), d1.result_bytes);
    let got = decrypt(keys, weights, &result).unwrap();
    assert_eq!(got, weights.reference(&input).unwrap());
    assert_eq!((&got["min"], &got["max"]), (&json!(0), &json!(65535)));
    assert_eq!(d1.attempts, 1);
    assert!(d1.progress.total > 0 && d1.progress.done == d1.progress.total);
    assert!(d1.wall_ms.unwrap() > 0 && d1.expires_at.is_some());

    let d2 = a.wait_task(&t2.id, |_| {}).await.unwrap();
    assert_eq!(d2.status, "failed");
    assert_eq!(d2.error.as_ref().unwrap().code, "invalid_input");
    assert_eq!(d2.attempts, 1, "bad input is not retried");
    assert_eq!(
        api_code(a.task_result(&t2.id).await),
        (409, "task_failed".into())
    );

    // A running task stops at its next step.
    wait_until(&a, &t4.id, |t| t.status == "running" && t.progress.done > 0).await;
    let c4 = a.cancel_task(&t4.id).await.unwrap();
    assert!(c4.cancel_requested || c4.status == "cancelled", "{c4:?}");
    let d4 = a.wait_task(&t4.id, |_| {}).await.unwrap();
    assert_eq!(d4.status, "cancelled");
    assert!(d4.progress.done < d4.progress.total, "{d4:?}");

    // Listing: newest first, filtered, paginated.
    let all = a.tasks(None, 10, None).await.unwrap();
    let ids: Vec<&str> = all.tasks.iter().map(|t| t.id.as_str()).collect();
    assert_eq!(ids, [&t4.id, &t3.id, &t2.id, &t1.id]);
    let cancelled = a.tasks(Some("cancelled"), 10, None).await.unwrap();
    assert_eq!(cancelled.tasks.len(), 2);
    let first = a.tasks(None, 3, None).await.unwrap();
    let rest = a.tasks(None, 3, first.next.as_deref()).await.unwrap();
    assert_eq!((first.tasks.len(), rest.tasks.len()), (3, 1));
    assert_eq!(
        api_code(a.tasks(Some("sideways"), 10, None).await),
        (400, "invalid_request".into())
    );

    // Usage: one record per ended task; charged what ran, nothing for a bad input or a
    // task cancelled before it ran; the invoice adds up to the records.
    let usage = a.usage(&[]).await.unwrap();
    let record = |id: &str| {
        usage
            .records
            .iter()
            .find(|u| u.task_id == id)
            .unwrap_or_else(|| panic!("no usage record for {id}"))
            .clone()
    };
    assert_eq!(usage.records.len(), 4);
    let u1 = record(&t1.id);
    assert_eq!(
        (u1.outcome.as_str(), u1.cu, u1.charged_cu),
        ("succeeded", d1.cost_cu, d1.cost_cu)
    );
    assert_eq!(u1.amount_nanos, u1.charged_cu * u1.price_nanos_per_cu);
    assert_eq!(
        (u1.result_bytes, u1.attempts),
        (d1.result_bytes.unwrap(), 1)
    );
    assert_eq!(record(&t2.id).charged_cu, 0);
    assert_eq!(record(&t3.id).charged_cu, 0);
    let u4 = record(&t4.id);
    assert_eq!(u4.outcome, "cancelled");
    assert!(u4.charged_cu > 0 && u4.charged_cu < d4.cost_cu, "{u4:?}");
    assert_eq!(
        usage.totals.amount_nanos,
        usage.records.iter().map(|u| u.amount_nanos).sum::<i64>()
    );
    let invoice = a.invoice(None).await.unwrap();
    assert_eq!(invoice.total_nanos, usage.totals.amount_nanos);
    let this_period = a
        .usage(&[("period", invoice.period.clone())])
        .await
        .unwrap();
    assert_eq!(this_period.totals, usage.totals);
    let long_ago = a.usage(&[("period", "2001-01".into())]).await.unwrap();
    assert_eq!(long_ago.totals.tasks, 0);
    let csv = a.invoice_csv(None).await.unwrap();
    let csv_total: i64 = csv
        .lines()
        .skip(1)
        .filter(|l| !l.contains(",total,"))
        .map(|l| l.rsplit(',').next().unwrap().parse::<i64>().unwrap())
        .sum();
    assert_eq!(csv_total, invoice.total_nanos, "{csv}");
    assert!(b.usage(&[]).await.unwrap().records.is_empty());

    // Prometheus metrics.
    let scrape = |token: Option<&str>| {
        let mut req = reqwest::Client::new().get(format!("{}/metrics", s.h.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send()
    };
    assert_eq!(scrape(None).await.unwrap().status(), 401);
    assert_eq!(scrape(Some(&token_a)).await.unwrap().status(), 401);
    let metrics = scrape(Some(common::METRICS_TOKEN))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for name in [
        "tenebra_queue_depth",
        "tenebra_task_seconds",
        "tenebra_http_request_seconds",
        "tenebra_key_cache_misses_total",
    ] {
        assert!(metrics.contains(name), "{name} missing from /metrics");
    }

    // Results expire: the status says so and the blob is gone.
    let expires_at = d1.expires_at.unwrap();
    let wait_ms = (expires_at - tenebra_store::now_ms()).max(0) as u64 + 50;
    tokio::time::sleep(Duration::from_millis(wait_ms)).await;
    tenebra_server::worker::sweep(&s.h.state).await;
    assert_eq!(a.task(&t1.id).await.unwrap().status, "expired");
    assert_eq!(
        api_code(a.task_result(&t1.id).await),
        (410, "result_expired".into())
    );
    assert_eq!(s.h.state.blobs.count(".result").await.unwrap(), 0);
    assert_eq!(
        s.h.state.blobs.count(".input").await.unwrap(),
        0,
        "inputs go when tasks end"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_on_sqlite() {
    story(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_on_postgres() {
    story(true).await;
}

/// A small tenant circuit: the sum and max of three bytes, and whether the max is over `t`.
fn tenant_circuit(name: &str, extra: u64) -> tenebra_circuit::ValidCircuit {
    use tenebra_circuit::builder::{max_of, sum, Builder};
    use tenebra_circuit::ScalarType::Uint;
    let b = Builder::new(name);
    let xs = b.input_vec("xs", Uint(8), 3);
    let t = b.input("t", Uint(8));
    let wide: Vec<_> = xs.iter().map(|x| x.cast(Uint(16))).collect();
    b.output("s", &(sum(&wide) + extra as i64));
    let m = max_of(&xs);
    b.output("m", &m);
    b.output("over", &m.gt(&t));
    b.build().unwrap()
}

async fn deployed_functions(postgres: bool) {
    let mut s = start(postgres).await;
    let (_, token_a) = create_tenant(&s.h.state, "acme").await.unwrap();
    let (_, token_b) = create_tenant(&s.h.state, "globex").await.unwrap();
    let a = Client::new(&s.h.base, &token_a);
    let b = Client::new(&s.h.base, &token_b);
    let keys = client_keys();

    // Deploy: versions count up; the same circuit is the same version.
    let v1 = tenant_circuit("stats3", 0);
    let f1 = a.deploy_function(v1.canonical_json()).await.unwrap();
    assert_eq!((f1.kind.as_str(), f1.version), ("deployed", Some(1)));
    assert_eq!(
        f1.signature,
        "xs: u8[3], t: u8 -> s: u16, m: u8, over: bool"
    );
    assert_eq!(f1.at_size.as_ref().unwrap().circuit_id, v1.id().to_string());
    let again = a.deploy_function(v1.canonical_json()).await.unwrap();
    assert_eq!(again.version, Some(1));
    let v2 = tenant_circuit("stats3", 1);
    assert_eq!(
        a.deploy_function(v2.canonical_json())
            .await
            .unwrap()
            .version,
        Some(2)
    );
    // Refused: invalid JSON, invalid circuits, a built-in's name.
    let bad = [
        (b"{".to_vec(), "invalid_circuit"),
        (b"{\"version\": 99}".to_vec(), "invalid_circuit"),
        (
            tenant_circuit("weight_stats", 0).canonical_json(),
            "name_taken",
        ),
        (
            String::from_utf8(v1.canonical_json())
                .unwrap()
                .replace("stats3", "with space")
                .into_bytes(),
            "invalid_circuit",
        ),
    ];
    for (body, code) in bad {
        let (status, got) = api_code(a.deploy_function(body).await);
        assert_eq!(got, code);
        assert!(status == 400 || status == 409);
    }
    // The circuit comes back byte for byte; listed with the built-ins; invisible to b.
    let got = a.function_circuit("stats3", None, Some(1)).await.unwrap();
    assert_eq!(got, v1.canonical_json());
    let by_id = a
        .function_circuit_by_id("stats3", &v2.id().to_string())
        .await
        .unwrap();
    assert_eq!(by_id, v2.canonical_json());
    assert_eq!(
        api_code(
            b.function_circuit_by_id("stats3", &v2.id().to_string())
                .await
        ),
        (404, "not_found".into())
    );
    // A read-only key sees functions but cannot deploy; keys are managed with the client.
    let reader = a.create_api_key("reader", "read").await.unwrap();
    let r = Client::new(&s.h.base, reader.token.as_deref().unwrap());
    assert!(r.functions().await.is_ok());
    assert_eq!(
        api_code(r.deploy_function(v1.canonical_json()).await),
        (403, "forbidden".into())
    );
    assert_eq!(a.api_keys().await.unwrap().len(), 2);
    let revoked = a.revoke_api_key(&reader.id).await.unwrap();
    assert!(revoked.revoked_at.is_some());
    assert_eq!(api_code(r.functions().await), (401, "unauthorized".into()));
    let listed = a.functions().await.unwrap();
    assert_eq!(listed.iter().filter(|f| f.name == "stats3").count(), 2);
    // The listing shows what was stored at deploy, the same as the deploy's answer and the
    // function's own page; a version stored before those facts were (NULL) is parsed and
    // shows the same.
    let listed_v1 = listed
        .iter()
        .find(|f| f.name == "stats3" && f.version == Some(1))
        .unwrap()
        .clone();
    assert_eq!(listed_v1, f1);
    let legacy = "UPDATE functions SET ops = NULL, scheme = NULL, signature = NULL \
                  WHERE name = 'stats3' AND version = 1";
    match s.h.state.store.db() {
        tenebra_store::Db::Sqlite(p) => sqlx::query(legacy).execute(p).await.map(drop),
        tenebra_store::Db::Postgres(p) => {
            let mut tx = common::system_tx(p).await;
            let done = sqlx::query(legacy).execute(&mut *tx).await.map(drop);
            tx.commit().await.unwrap();
            done
        }
    }
    .unwrap();
    let relisted = a.functions().await.unwrap();
    assert!(relisted.contains(&listed_v1), "{relisted:?}");
    assert!(b
        .functions()
        .await
        .unwrap()
        .iter()
        .all(|f| f.name != "stats3"));
    assert_eq!(
        api_code(b.function_circuit("stats3", None, None).await),
        (404, "not_found".into())
    );

    // Run version 1 and version 2 encrypted; each input names its exact circuit.
    a.upload_key_set(tenebra_engine::keys::read_upload(&test_key_dir()).unwrap())
        .await
        .unwrap();
    s.start_worker(Duration::from_secs(3600));
    let input = json!({"xs": [200, 255, 7], "t": 254});
    for (circuit, sum) in [(&v1, 462), (&v2, 463)] {
        let enc = tenebra_client::encrypt_circuit(keys, circuit, &input).unwrap();
        let t = a.submit_task(enc, None).await.unwrap();
        let t = a.wait_task(&t.id, |_| {}).await.unwrap();
        assert_eq!(t.status, "succeeded", "{t:?}");
        let res = a.task_result(&t.id).await.unwrap();
        let got = tenebra_client::decrypt_circuit(keys, circuit, &res).unwrap();
        let want = tenebra_circuit::io::decode_outputs(
            circuit,
            &tenebra_circuit::eval::evaluate(
                circuit,
                &tenebra_circuit::io::encode_inputs(circuit, &input).unwrap(),
            ),
        );
        assert_eq!(got, want);
        assert_eq!(got, json!({"s": sum, "m": 255, "over": true}));
    }
    b.upload_key_set(tenebra_engine::keys::read_upload(&test_key_dir()).unwrap())
        .await
        .unwrap();
    // Another tenant cannot run a's function, even with the key set uploaded.
    let enc = tenebra_client::encrypt_circuit(keys, &v1, &input).unwrap();
    assert_eq!(
        api_code(b.submit_task(enc.clone(), None).await),
        (400, "unknown_function".into())
    );
    // Deleting version 1: its inputs are refused; version 2 stays.
    a.delete_function("stats3", Some(1)).await.unwrap();
    assert_eq!(
        api_code(a.submit_task(enc, None).await),
        (400, "circuit_mismatch".into())
    );
    assert_eq!(
        api_code(a.delete_function("weight_stats", None).await),
        (409, "builtin".into())
    );
    a.delete_function("stats3", None).await.unwrap();
    assert_eq!(
        api_code(a.delete_function("stats3", None).await),
        (404, "not_found".into())
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployed_functions_on_sqlite() {
    deployed_functions(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployed_functions_on_postgres() {
    deployed_functions(true).await;
}

/// A failure on our side (here: the key set's blob is gone from storage) is retried with
/// backoff, then fails for good with a generic message; the client's mistakes are not ours.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_on_our_side_are_retried_then_fail() {
    let mut s = start(false).await;
    let (tenant, token) = create_tenant(&s.h.state, "acme").await.unwrap();
    let a = Client::new(&s.h.base, &token);
    let ks = a
        .upload_key_set(tenebra_engine::keys::read_upload(&test_key_dir()).unwrap())
        .await
        .unwrap();
    s.h.state
        .blobs
        .remove_key_set(&tenant.id, &ks.id)
        .await
        .unwrap();
    s.start_worker_with(WorkerConfig {
        poll: Duration::from_millis(100),
        retry_delay: Duration::from_millis(100),
        max_attempts: 3,
        ..WorkerConfig::default()
    });
    let weights = tenebra_functions::find("weight_stats").unwrap();
    let enc = encrypt(client_keys(), weights, &json!({"weights": [1, 2, 3]})).unwrap();
    let t = a.submit_task(enc, None).await.unwrap();
    let t = a.wait_task(&t.id, |_| {}).await.unwrap();
    assert_eq!(t.status, "failed");
    assert_eq!(t.attempts, 3, "{t:?}");
    let e = t.error.unwrap();
    assert_eq!(e.code, "internal");
    assert!(
        !e.message.contains(".keyset"),
        "no internal detail: {}",
        e.message
    );
    assert_eq!(s.h.state.blobs.count(".input").await.unwrap(), 0);
    s.stop().await;
}

/// `ad_targeting` as a task: BFV key set upload (idempotent, checked), submit, the worker
/// runs BFV, the client decrypts exactly the reference; another tenant cannot use the key set
/// or see the task; a key set lacking Galois keys fails the task with a clear error.
async fn bfv_tasks(postgres: bool) {
    use tenebra_client::bfv::{self, BfvKeys};
    use tenebra_engine::bfv::{BfvSecret, KeyNeeds};
    let mut s = start(postgres).await;
    s.start_worker(Duration::from_secs(600));
    let (_, token_a) = create_tenant(&s.h.state, "acme").await.unwrap();
    let (_, token_b) = create_tenant(&s.h.state, "globex").await.unwrap();
    let a = Client::new(&s.h.base, &token_a);
    let b = Client::new(&s.h.base, &token_b);
    let f = tenebra_functions::find_bfv("ad_targeting").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut profile = vec![0u8; 62];
    for i in [1, 4, 9, 22, 40, 55] {
        profile[i] = 1;
    }
    let input = json!({ "profile": profile });
    let enc = bfv::encrypt(dir.path(), f, &input).unwrap();
    assert_eq!(
        api_code(a.submit_task(enc.clone(), None).await),
        (400, "unknown_key_set".into())
    );
    let key_set = BfvKeys::load_key_set(dir.path(), f.circuit()).unwrap();
    let ks = a.upload_key_set(key_set.bytes().to_vec()).await.unwrap();
    let again = a.upload_key_set(key_set.bytes().to_vec()).await.unwrap();
    assert_eq!(ks.id, again.id);
    // A truncated BFV key set is a 400, not a crash.
    let half = key_set.bytes()[..key_set.bytes().len() / 2].to_vec();
    assert_eq!(
        api_code(a.upload_key_set(half).await),
        (400, "invalid_key_set".into())
    );
    // Another tenant has not uploaded this key set: its submit is refused.
    assert_eq!(
        api_code(b.submit_task(enc.clone(), None).await),
        (400, "unknown_key_set".into())
    );
    let t = a.submit_task(enc, None).await.unwrap();
    assert!(t.cost_cu > 0);
    let t = wait_until(&a, &t.id, |t| t.is_final()).await;
    assert_eq!(t.status, "succeeded", "{t:?}");
    assert!(b.task(&t.id).await.is_err());
    let res = a.task_result(&t.id).await.unwrap();
    let got = bfv::decrypt(dir.path(), f, &res).unwrap();
    assert_eq!(got, f.reference(&input).unwrap());

    // A key set without one of the Galois keys the function needs: the task fails, saying so.
    let other = tempfile::tempdir().unwrap();
    let secret = BfvSecret::load_or_generate(other.path(), 4096).unwrap();
    let mut needs = KeyNeeds::of(f.circuit().plan());
    needs.rotations.remove(&1);
    let lacking = tenebra_engine::bfv::BfvKeySet::parse(secret.key_set(&needs).unwrap()).unwrap();
    a.upload_key_set(lacking.bytes().to_vec()).await.unwrap();
    let values = f.encode(&input).unwrap();
    let enc = secret
        .encrypt(&f.circuit().signature(), f.name, &lacking.id(), &values)
        .unwrap();
    let t = a.submit_task(enc, None).await.unwrap();
    let t = wait_until(&a, &t.id, |t| t.is_final()).await;
    let err = t.error.expect("the task failed");
    assert_eq!(err.code, "invalid_input");
    assert!(err.message.contains("lacks Galois keys"), "{}", err.message);

    // A tenant's own BFV circuit: deployed, listed, run on encrypted input; a circuit too
    // deep for the parameters is refused at deploy time.
    use tenebra_circuit::bfv::{
        evaluate_bfv, parse_bfv, BfvCircuit, BfvLimits, PNode, VecInput, VecOutput,
    };
    let mine = BfvCircuit {
        version: 1,
        scheme: "bfv".into(),
        name: "affine".into(),
        inputs: vec![VecInput {
            name: "x".into(),
            len: 8,
            min: -10,
            max: 10,
        }],
        nodes: vec![
            PNode::Input { input: 0 },
            PNode::Matvec {
                a: 0,
                matrix: vec![vec![1, -2, 3, -4, 5, -6, 7, -8], vec![2; 8], vec![0; 8]],
            },
            PNode::AddPlain {
                a: 1,
                plain: vec![100, -100, 7],
            },
            PNode::Square { a: 2 },
        ],
        outputs: vec![VecOutput {
            name: "y".into(),
            node: 3,
        }],
    };
    let f = a.deploy_function(mine.canonical_json()).await.unwrap();
    assert!(f.signature.contains("bfv"), "{}", f.signature);
    let bytes = a.function_circuit("affine", None, None).await.unwrap();
    let c = parse_bfv(&bytes, &BfvLimits::default()).unwrap();
    let sig = c.signature();
    let x = vec![vec![-10, 3, 0, 10, -1, 2, 9, -7]];
    let enc = bfv::encrypt_signed(dir.path(), &sig, "affine", &x).unwrap();
    let ks = BfvKeys::load_key_set_for(dir.path(), sig.degree).unwrap();
    a.upload_key_set(ks.bytes().to_vec()).await.unwrap();
    let t = a.submit_task(enc.clone(), None).await.unwrap();
    let t = wait_until(&a, &t.id, |t| t.is_final()).await;
    assert_eq!(t.status, "succeeded", "{t:?}");
    let got = bfv::decrypt_signed(dir.path(), &sig, &a.task_result(&t.id).await.unwrap()).unwrap();
    let want: Vec<i64> = evaluate_bfv(&mine, &x).unwrap()[0]
        .iter()
        .map(|v| *v as i64)
        .collect();
    assert_eq!(got[0], want);
    // The other tenant has no such function.
    assert_eq!(
        api_code(b.submit_task(enc, None).await),
        (400, "unknown_function".into())
    );
    let mut deep = mine.clone();
    deep.name = "deep".into();
    for _ in 0..5 {
        let last = deep.nodes.len() as u32 - 1;
        deep.nodes.push(PNode::Square { a: last });
    }
    deep.outputs[0].node = deep.nodes.len() as u32 - 1;
    assert_eq!(
        api_code(a.deploy_function(deep.canonical_json()).await),
        (400, "circuit_too_deep".into())
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bfv_tasks_on_sqlite() {
    bfv_tasks(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bfv_tasks_on_postgres() {
    bfv_tasks(true).await;
}

/// The model repository: an owner uploads the example MLP and logistic regression
/// (versioned, idempotent), a user sees nothing until granted, then runs the whole MLP and the
/// first layer of the logistic regression on encrypted input and gets the exact quantized
/// results; layers are shared only when the owner allows; a revoked grant stops new tasks;
/// a model too deep for the parameters and a malformed model are refused.
async fn model_repository(postgres: bool) {
    use tenebra_circuit::bfv::evaluate_bfv;
    use tenebra_client::bfv::{decrypt_signed, encrypt_signed, BfvKeys};
    use tenebra_functions::model::{
        example_data, example_logistic, example_mlp, Activation, Layer,
    };
    let mut s = start(postgres).await;
    s.start_worker(Duration::from_secs(600));
    let (owner_t, token_o) = create_tenant(&s.h.state, "model-owner").await.unwrap();
    let (user_t, token_u) = create_tenant(&s.h.state, "model-user").await.unwrap();
    let (owner_id, user_id) = (owner_t.id, user_t.id);
    let owner = Client::new(&s.h.base, &token_o);
    let user = Client::new(&s.h.base, &token_u);
    let mlp = example_mlp();
    let json = serde_json::to_vec(&mlp).unwrap();
    let v1 = owner.upload_model(json.clone()).await.unwrap();
    assert_eq!((v1.version, v1.owner_id.as_str()), (1, owner_id.as_str()));
    assert_eq!(owner.upload_model(json).await.unwrap().version, 1);
    assert_eq!(v1.page.max_encrypted_layers, 3);
    assert!(v1.page.splits.iter().all(|s| s.max_abs_error.is_some()));
    let lr = example_logistic();
    owner
        .upload_model(serde_json::to_vec(&lr).unwrap())
        .await
        .unwrap();
    // Not shared yet: the user sees no model.
    assert!(user.models().await.unwrap().is_empty());
    assert_eq!(
        api_code(user.model(&owner_id, "example-mlp", None).await),
        (404, "not_found".into())
    );
    owner
        .grant_model("example-mlp", &user_id, false)
        .await
        .unwrap();
    owner
        .grant_model("example-logistic", &user_id, true)
        .await
        .unwrap();
    // A grant is an offer until the user accepts it: no model, no signature yet.
    assert!(user.models().await.unwrap().is_empty());
    assert_eq!(
        api_code(
            user.model_signature(&owner_id, "example-mlp", None, 3)
                .await
        ),
        (404, "not_found".into())
    );
    let offers = user.model_offers().await.unwrap();
    let offered: Vec<_> = offers
        .iter()
        .map(|g| (g.owner_id.as_str(), g.name.as_str(), g.accepted_at))
        .collect();
    assert_eq!(
        offered,
        vec![
            (owner_id.as_str(), "example-logistic", None),
            (owner_id.as_str(), "example-mlp", None)
        ]
    );
    // Nobody accepts for another tenant, nor an offer that was not made.
    assert_eq!(
        api_code(owner.accept_model(&owner_id, "example-mlp").await),
        (404, "not_found".into())
    );
    assert_eq!(
        api_code(user.accept_model(&owner_id, "no-such-model").await),
        (404, "not_found".into())
    );
    for name in ["example-mlp", "example-logistic"] {
        let g = user.accept_model(&owner_id, name).await.unwrap();
        assert!(g.accepted_at.is_some());
    }
    assert!(user.model_offers().await.unwrap().is_empty());
    assert_eq!(user.models().await.unwrap().len(), 2);

    let dir = tempfile::tempdir().unwrap();
    let x = example_data(1, 5).0.remove(0);
    for (name, layers, model) in [("example-mlp", 3, &mlp), ("example-logistic", 1, &lr)] {
        let sig = user
            .model_signature(&owner_id, name, None, layers)
            .await
            .unwrap();
        let q = sig.quantize(&x).unwrap();
        let enc = encrypt_signed(
            dir.path(),
            &sig.signature,
            &sig.function,
            std::slice::from_ref(&q),
        )
        .unwrap();
        let ks = BfvKeys::load_key_set_for(dir.path(), sig.signature.degree).unwrap();
        user.upload_key_set(ks.bytes().to_vec()).await.unwrap();
        let t = user.submit_task(enc, None).await.unwrap();
        // A quote of the split is what the task costs; another spelling of the same split
        // is no function at all (one split, one name, one price).
        let ask = tenebra_api::QuoteRequest {
            function: sig.function.clone(),
            size: 0,
            version: None,
            circuit_id: None,
        };
        let quote = user.quote(&ask).await.unwrap();
        assert_eq!(
            (quote.cu, quote.circuit_id.as_str()),
            (t.cost_cu, t.circuit_id.as_str())
        );
        let respelled = tenebra_api::QuoteRequest {
            function: sig
                .function
                .replace(&format!("/{layers}"), &format!("/0{layers}")),
            ..ask
        };
        assert_ne!(respelled.function, sig.function);
        assert_eq!(api_code(user.quote(&respelled).await).0, 404);
        let t = wait_until(&user, &t.id, |t| t.is_final()).await;
        assert_eq!(t.status, "succeeded", "{t:?}");
        let res = user.task_result(&t.id).await.unwrap();
        let got = decrypt_signed(dir.path(), &sig.signature, &res)
            .unwrap()
            .remove(0);
        let compiled = model.compile(layers).unwrap();
        let want: Vec<i64> = evaluate_bfv(compiled.circuit.circuit(), &[q]).unwrap()[0]
            .iter()
            .map(|v| *v as i64)
            .collect();
        assert_eq!(got, want, "{name}");
        assert_eq!(sig.scale, compiled.scale);
    }
    // Layers after the split: shared for the logistic regression, not for the MLP.
    let rest = user
        .model_layers(&owner_id, "example-logistic", None, 1)
        .await
        .unwrap();
    assert_eq!(
        rest.layers,
        vec![Layer::Activation {
            function: Activation::Sigmoid
        }]
    );
    assert_eq!(
        api_code(user.model_layers(&owner_id, "example-mlp", None, 1).await).0,
        403
    );
    // Revoked: no new signature, no new task.
    owner.revoke_model("example-mlp", &user_id).await.unwrap();
    assert_eq!(
        api_code(
            user.model_signature(&owner_id, "example-mlp", None, 3)
                .await
        )
        .0,
        404
    );
    // Hostile models.
    let mut deep = example_mlp();
    deep.name = "deep".into();
    for _ in 0..4 {
        deep.layers.insert(
            0,
            Layer::Activation {
                function: Activation::Square,
            },
        );
    }
    // Stored, with the splits the parameters cannot carry marked refused on its page.
    let page = owner
        .upload_model(serde_json::to_vec(&deep).unwrap())
        .await
        .unwrap()
        .page;
    assert_eq!(page.max_encrypted_layers, 7);
    assert!(page.splits[..3].iter().all(|s| s.refused.is_none()));
    assert!(
        page.splits[3..].iter().all(|s| s.refused.is_some()),
        "{page:?}"
    );
    assert_eq!(
        api_code(owner.model_signature(&owner_id, "deep", None, 7).await),
        (400, "model_too_deep".into())
    );
    assert_eq!(
        api_code(owner.upload_model(b"{\"version\":1}".to_vec()).await),
        (400, "invalid_model".into())
    );
    // ONNX: a one-Gemm graph imports and gets a page; garbage is a 400.
    let onnx = one_gemm_onnx();
    let v = owner
        .upload_onnx_model(onnx, "tiny-onnx", 0.0, 1.0)
        .await
        .unwrap();
    assert_eq!(
        (v.name.as_str(), v.page.layers.clone()),
        ("tiny-onnx", vec!["dense 2->2".to_owned()])
    );
    assert_eq!(
        api_code(
            owner
                .upload_onnx_model(b"\xff\xfe".to_vec(), "x", 0.0, 1.0)
                .await
        ),
        (400, "invalid_model".into())
    );
    s.stop().await;
}

/// `y = W x + b` with W = [[1, -2], [0.5, 3]] as one ONNX `Gemm`.
fn one_gemm_onnx() -> Vec<u8> {
    use onnx_protobuf::{GraphProto, Message, ModelProto, NodeProto, TensorProto, ValueInfoProto};
    let tensor = |name: &str, dims: &[i64], v: &[f32]| {
        let mut t = TensorProto::new();
        t.name = name.into();
        t.dims = dims.to_vec();
        t.data_type = 1;
        t.float_data = v.to_vec();
        t
    };
    let mut g = GraphProto::new();
    let mut x = ValueInfoProto::new();
    x.name = "x".into();
    g.input.push(x);
    g.initializer = vec![
        tensor("w", &[2, 2], &[1.0, 0.5, -2.0, 3.0]),
        tensor("b", &[2], &[0.25, -1.0]),
    ];
    let mut n = NodeProto::new();
    n.op_type = "Gemm".into();
    n.input = vec!["x".into(), "w".into(), "b".into()];
    n.output = vec!["y".into()];
    g.node.push(n);
    let mut m = ModelProto::new();
    m.graph = Some(g).into();
    m.write_to_bytes().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_repository_on_sqlite() {
    model_repository(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_repository_on_postgres() {
    model_repository(true).await;
}

/// The SDK's one call (`Client::run`) for every kind of function, each result checked
/// against the plaintext reference: a TFHE built-in, a BFV built-in, deployed TFHE and BFV
/// circuits, and a model split; and what it says when the function is not the caller's.
#[tokio::test]
async fn one_sdk_call_runs_every_kind_of_function() {
    use tenebra_circuit::bfv::{evaluate_bfv, BfvCircuit, PNode, VecInput, VecOutput};
    use tenebra_circuit::builder::{max_of, Builder};
    use tenebra_circuit::ScalarType::Uint;
    use tenebra_client::run::RunError;
    use tenebra_functions::model::{example_data, example_mlp};
    let mut s = start(false).await;
    s.start_worker(Duration::from_secs(600));
    let (owner_t, token_a) = create_tenant(&s.h.state, "runner").await.unwrap();
    let (_, token_b) = create_tenant(&s.h.state, "stranger").await.unwrap();
    let a = Client::new(&s.h.base, &token_a);
    let b = Client::new(&s.h.base, &token_b);
    // One key directory: the cached TFHE test keys; BFV keys are made in it on first use.
    let dir = tempfile::tempdir().unwrap();
    for f in ["client.key", "server.key", "public.key", "keyset.json"] {
        std::fs::copy(test_key_dir().join(f), dir.path().join(f)).unwrap();
    }
    let keys = dir.path();

    let weights = json!({"weights": [680, 650, 0, 65535, 705]});
    let ws = tenebra_functions::find("weight_stats").unwrap();
    assert_eq!(
        a.run(keys, "weight_stats", &weights).await.unwrap(),
        ws.reference(&weights).unwrap()
    );
    let mut profile = vec![0u8; 62];
    profile[3] = 1;
    profile[40] = 1;
    let profile = json!({ "profile": profile });
    let ads = tenebra_functions::find_bfv("ad_targeting").unwrap();
    let done = a
        .run_with(keys, "ad_targeting", &profile, |_| {})
        .await
        .unwrap();
    assert_eq!(done.output, ads.reference(&profile).unwrap());
    assert_eq!(done.task.status, "succeeded");

    // Deployed TFHE: `{"m": max, "d": x0 - x1 (wrapping)}`.
    let tfhe = {
        let bld = Builder::new("max-and-diff");
        let xs = bld.input_vec("xs", Uint(8), 3);
        bld.output("m", &max_of(&xs));
        bld.output("d", &(xs[0].clone() - xs[1].clone()));
        bld.build().unwrap()
    };
    a.deploy_function(tfhe.canonical_json()).await.unwrap();
    for xs in [[0u64, 0, 0], [255, 255, 255], [3, 200, 17]] {
        let input = json!({ "xs": xs });
        let want = json!({"m": xs.iter().max(), "d": xs[0].wrapping_sub(xs[1]) & 0xff});
        assert_eq!(a.run(keys, "max-and-diff", &input).await.unwrap(), want);
    }
    // Deployed BFV: an affine map, then squared.
    let bfv_circuit = BfvCircuit {
        version: 1,
        scheme: "bfv".into(),
        name: "affine-sq".into(),
        inputs: vec![VecInput {
            name: "x".into(),
            len: 4,
            min: -8,
            max: 8,
        }],
        nodes: vec![
            PNode::Input { input: 0 },
            PNode::Matvec {
                a: 0,
                matrix: vec![vec![1, -2, 3, -4], vec![5; 4]],
            },
            PNode::AddPlain {
                a: 1,
                plain: vec![-3, 9],
            },
            PNode::Square { a: 2 },
        ],
        outputs: vec![VecOutput {
            name: "y".into(),
            node: 3,
        }],
    };
    a.deploy_function(bfv_circuit.canonical_json())
        .await
        .unwrap();
    let x = vec![-8i64, 0, 7, 8];
    let want: Vec<i64> = evaluate_bfv(&bfv_circuit, std::slice::from_ref(&x)).unwrap()[0]
        .iter()
        .map(|v| *v as i64)
        .collect();
    assert_eq!(
        a.run(keys, "affine-sq", &json!({ "x": x })).await.unwrap(),
        json!({ "y": want })
    );

    // A model split, the owner's own: the exact quantized result, and its floats.
    let mlp = example_mlp();
    a.upload_model(serde_json::to_vec(&mlp).unwrap())
        .await
        .unwrap();
    let function = tenebra_functions::model::model_function(&owner_t.id, "example-mlp", 1, 3);
    let x = example_data(1, 5).0.remove(0);
    let got = a.run(keys, &function, &json!({ "x": x })).await.unwrap();
    let compiled = mlp.compile(3).unwrap();
    let q = mlp.quantize_input(&x).unwrap();
    let want: Vec<i64> = evaluate_bfv(compiled.circuit.circuit(), &[q]).unwrap()[0]
        .iter()
        .map(|v| *v as i64)
        .collect();
    assert_eq!(got["quantized"], json!(want));
    assert_eq!(got["y"], json!(compiled.dequantize(&want)));

    // Another tenant's functions and models are not there for `b`; a wrong input is said so.
    match b.run(keys, "max-and-diff", &json!({"xs": [1, 2, 3]})).await {
        Err(RunError::Http(HttpError::Api { status: 404, .. })) => {}
        other => panic!("expected a 404, got {other:?}"),
    }
    match b.run(keys, &function, &json!({ "x": x })).await {
        Err(RunError::Http(HttpError::Api { status: 404, .. })) => {}
        other => panic!("expected a 404, got {other:?}"),
    }
    match a.run(keys, "affine-sq", &json!({"x": "nope"})).await {
        Err(RunError::Input(m)) => assert!(m.contains("`x`"), "{m}"),
        other => panic!("expected an input error, got {other:?}"),
    }
    s.stop().await;
}
