//! The serverless runtime as the platforms run it: the `tenebra runtime` binary started
//! with `PORT` (Google Cloud Run's contract) or `AWS_LAMBDA_RUNTIME_API` (Lambda's), fed
//! plain requests, binary-mode CloudEvents in Pub/Sub's `messagePublished` shape and Lambda
//! events through a local implementation of the Runtime API; key sets, inputs and results
//! at object URLs served on loopback. Every result is decrypted and checked against the
//! plaintext reference.

use std::collections::HashMap;
use std::io::BufRead;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use base64::Engine;
use serde_json::{json, Value};
use tenebra_engine::test_support::{client_keys, other_key_dir, test_key_dir};

/// A small deployed function: the larger of two bytes and their 9-bit sum.
fn circuit() -> tenebra_circuit::ValidCircuit {
    use tenebra_circuit::builder::Builder;
    use tenebra_circuit::ScalarType::Uint;
    let b = Builder::new("pick");
    let x = b.input("x", Uint(8));
    let y = b.input("y", Uint(8));
    b.output("max", &x.max(&y));
    b.output("sum", &(x.cast(Uint(16)) + y.cast(Uint(16))));
    b.build().unwrap()
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn unb64(s: &str) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD.decode(s).unwrap()
}

/// Objects on loopback (`GET`/`PUT /o/{name}`), counting the reads of each.
#[derive(Default)]
struct Objects {
    data: HashMap<String, Vec<u8>>,
    reads: HashMap<String, usize>,
}

type Shared = Arc<Mutex<Objects>>;

async fn serve_objects(objects: Shared) -> String {
    async fn read(
        State(o): State<Shared>,
        UrlPath(name): UrlPath<String>,
    ) -> (StatusCode, Vec<u8>) {
        let mut o = o.lock().unwrap();
        *o.reads.entry(name.clone()).or_default() += 1;
        match o.data.get(&name) {
            Some(b) => (StatusCode::OK, b.clone()),
            None => (StatusCode::NOT_FOUND, Vec::new()),
        }
    }
    async fn write(
        State(o): State<Shared>,
        UrlPath(name): UrlPath<String>,
        body: axum::body::Bytes,
    ) -> StatusCode {
        o.lock().unwrap().data.insert(name, body.to_vec());
        StatusCode::OK
    }
    let app = axum::Router::new()
        .route("/o/{name}", get(read).put(write))
        .with_state(objects);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}/o", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    base
}

/// The objects every test starts with: the key set and one input.
fn objects(input: &[u8]) -> Shared {
    let mut o = Objects::default();
    let keys = tenebra_engine::keys::read_upload(&test_key_dir()).unwrap();
    o.data.insert("keys".into(), keys);
    o.data.insert("input".into(), input.to_vec());
    Arc::new(Mutex::new(o))
}

/// The runtime binary, killed on drop; its stdout lines (the metrics lines) collected.
struct Runtime {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Drop for Runtime {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Runtime {
    fn start(dir: &Path, env: &[(&str, String)]) -> Self {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tenebra"));
        cmd.args(["runtime", "--circuits"])
            .arg(dir.join("circuits"))
            .arg("--cache-dir")
            .arg(dir.join("cache"));
        Self::spawn(cmd, env)
    }

    /// Runs `cmd` (a `tenebra` command line) with `env` and nothing of Lambda's unless
    /// `env` sets it.
    fn spawn(mut cmd: Command, env: &[(&str, String)]) -> Self {
        let mut child = cmd
            .env_remove("AWS_LAMBDA_RUNTIME_API")
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let lines: Arc<Mutex<Vec<String>>> = Arc::default();
        let sink = lines.clone();
        std::thread::spawn(move || {
            for l in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(l);
            }
        });
        Runtime { child, lines }
    }

    /// The metrics lines so far, parsed.
    fn metrics(&self) -> Vec<Value> {
        let lines = self.lines.lock().unwrap();
        lines
            .iter()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `moto_server` (S3, Lambda, IAM, ...) on a free port, stopped on drop.
struct Moto {
    child: Child,
    url: String,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Moto {
    /// Started and answering, or `None` (the test is skipped) where it is not installed.
    async fn start() -> Option<Moto> {
        let Some(bin) = std::env::var_os("TENEBRA_MOTO_SERVER") else {
            assert!(
                std::env::var_os("TENEBRA_REQUIRE_S3").is_none(),
                "TENEBRA_REQUIRE_S3 is set but TENEBRA_MOTO_SERVER is not"
            );
            eprintln!("skipped: set TENEBRA_MOTO_SERVER to run this test (see .ci/run)");
            return None;
        };
        let port = free_port();
        let child = Command::new(bin)
            .args(["-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let moto = Moto {
            child,
            url: format!("http://127.0.0.1:{port}"),
        };
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return Some(moto);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("moto_server did not come up");
    }

    /// Creates a bucket (moto takes unsigned requests for it).
    async fn bucket(&self, name: &str) {
        let r = reqwest::Client::new()
            .put(format!("{}/{name}", self.url))
            .send()
            .await
            .unwrap();
        assert!(
            r.status().is_success(),
            "creating bucket {name}: {}",
            r.status()
        );
    }
}

/// A temporary directory with the packaged circuit.
fn package() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("circuits")).unwrap();
    std::fs::write(
        dir.path().join("circuits/pick.json"),
        circuit().canonical_json(),
    )
    .unwrap();
    dir
}

fn check_pick(result: &[u8]) {
    let got = tenebra_client::decrypt_circuit(client_keys(), &circuit(), result).unwrap();
    // The plaintext reference on the same inputs.
    let (x, y) = (7u64, 200u64);
    assert_eq!(got, json!({"max": x.max(y), "sum": x + y}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloud_run_plain_requests_and_pubsub_events() {
    let input = pick_input();
    let objects = objects(&input);
    let base = serve_objects(objects.clone()).await;
    let dir = package();
    let port = free_port();
    let rt = Runtime::start(
        dir.path(),
        &[
            ("PORT", port.to_string()),
            ("K_REVISION", "pick-00001".into()),
        ],
    );
    let url = format!("http://127.0.0.1:{port}/");
    let http = reqwest::Client::new();
    let mut up = false;
    for _ in 0..200 {
        if http.get(format!("{url}healthz")).send().await.is_ok() {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(up, "the runtime did not listen on $PORT");
    let post = |body: Value| http.post(&url).json(&body).send();

    // A plain request: the input inline, the result inline.
    let r = post(
        json!({"key_set_url": format!("{base}/keys"), "input": b64(&input), "function": "pick"}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    let a: Value = r.json().await.unwrap();
    assert_eq!(a["function"], "pick");
    assert_eq!(a["key_cache_hit"], false);
    assert!(a["cu"].as_i64().unwrap() > 0);
    check_pick(&unb64(a["result"].as_str().unwrap()));

    // A binary-mode CloudEvent as Pub/Sub pushes it through Eventarc: the invocation is the
    // message's data; input and result by URL.
    let inv = json!({"key_set_url": format!("{base}/keys"), "input_url": format!("{base}/input"),
        "result_url": format!("{base}/result")});
    let event = json!({"message": {"data": b64(inv.to_string().as_bytes()), "messageId": "42",
        "publishTime": "2026-12-03T10:00:00Z"}, "subscription": "projects/p/subscriptions/s"});
    let r = http
        .post(&url)
        .header("ce-specversion", "1.0")
        .header("ce-id", "42")
        .header("ce-source", "//pubsub.googleapis.com/projects/p/topics/fhe")
        .header("ce-type", "google.cloud.pubsub.topic.v1.messagePublished")
        .header("content-type", "application/json")
        .body(event.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let a: Value = r.json().await.unwrap();
    assert_eq!(a["key_cache_hit"], true, "{a}");
    assert!(a.get("result").is_none());
    check_pick(&objects.lock().unwrap().data["result"]);
    assert_eq!(
        objects.lock().unwrap().reads["keys"],
        1,
        "the key set is fetched once"
    );

    // A built-in, evaluated with the same cached keys.
    let weights = tenebra_functions::find("weight_stats").unwrap();
    let wi = tenebra_client::encrypt(client_keys(), weights, &json!({"weights": [680, 650, 690]}))
        .unwrap();
    let r = post(json!({"key_set_url": format!("{base}/keys"), "input": b64(&wi)}))
        .await
        .unwrap();
    let a: Value = r.json().await.unwrap();
    let got = tenebra_client::decrypt(
        client_keys(),
        weights,
        &unb64(a["result"].as_str().unwrap()),
    )
    .unwrap();
    assert_eq!(got, json!({"avg": 673, "max": 690, "min": 650}));

    // Refusals: clear codes, 400 for a plain request, 200 (not redelivered) for an event.
    let bad = |body: Value| {
        let r = post(body);
        async move {
            let r = r.await.unwrap();
            let status = r.status().as_u16();
            let v: Value = r.json().await.unwrap();
            (
                status,
                v["error"]["code"].as_str().unwrap_or_default().to_owned(),
            )
        }
    };
    let keys = format!("{base}/keys");
    // An input under another key set whose URL serves ours: refused, not misused.
    let theirs = tenebra_engine::ClientKeys::load(&other_key_dir()).unwrap();
    let foreign =
        tenebra_client::encrypt_circuit(&theirs, &circuit(), &json!({"x": 1, "y": 2})).unwrap();
    for (body, code) in [
        (
            json!({"key_set_url": keys, "input": b64(&input), "function": "other"}),
            "wrong_function",
        ),
        (
            json!({"key_set_url": keys, "input": b64(&foreign)}),
            "key_set_mismatch",
        ),
        (
            json!({"key_set_url": keys, "input": b64(b"not an input")}),
            "invalid_input",
        ),
        (
            json!({"key_set_url": keys, "input": "%%%"}),
            "invalid_input",
        ),
        (json!({"key_set_url": keys}), "invalid_invocation"),
        (
            json!({"key_set_url": keys, "input_url": format!("{base}/missing")}),
            "object_not_found",
        ),
        (
            json!({"key_set_url": "file:///etc/passwd", "input": b64(&input)}),
            "invalid_url",
        ),
        (
            json!({"key_set_url": keys, "input": b64(&input), "colour": "red"}),
            "invalid_invocation",
        ),
    ] {
        let what = body
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect::<Vec<_>>();
        assert_eq!(bad(body).await, (400, code.to_owned()), "{what:?}");
    }
    let r = http
        .post(&url)
        .header("ce-specversion", "1.0")
        .header("ce-id", "43")
        .header("ce-source", "test")
        .header("ce-type", "tenebra.invoke")
        .body(json!({"key_set_url": keys, "input": b64(b"junk")}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "a permanent failure is acknowledged");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "invalid_input");
    let r = http
        .post(&url)
        .header("ce-specversion", "1.0")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400, "an event without ce-id and ce-source");

    // One metrics line per successful invocation, in Cloud Logging's shape.
    let lines = rt.metrics();
    assert_eq!(lines.len(), 3, "{lines:?}");
    for l in &lines {
        assert_eq!(l["severity"], "INFO");
        assert_eq!(l["version"], "pick-00001");
        assert!(l["cu"].as_i64().unwrap() > 0 && l["bytes_out"].as_u64().unwrap() > 0);
    }
    assert_eq!(lines[0]["function"], "pick");
    assert_eq!(lines[0]["key_cache_hit"], false);
    drop(rt);
    let reads = objects.lock().unwrap().reads["keys"];

    // A new instance on the same /tmp: the key set comes from the disk cache, not the URL.
    let port = free_port();
    let _rt = Runtime::start(dir.path(), &[("PORT", port.to_string())]);
    let url = format!("http://127.0.0.1:{port}/");
    let mut answer = None;
    for _ in 0..200 {
        let body = json!({"key_set_url": format!("{base}/keys"), "input": b64(&input)});
        if let Ok(r) = http.post(&url).json(&body).send().await {
            answer = Some(r.json::<Value>().await.unwrap());
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let a = answer.expect("the second instance did not listen");
    assert_eq!(a["key_cache_hit"], true, "{a}");
    check_pick(&unb64(a["result"].as_str().unwrap()));
    assert_eq!(objects.lock().unwrap().reads["keys"], reads);
}

/// A local Lambda: the Runtime API hands out queued events at `next` and records responses
/// and errors by request id; the Invoke API queues asynchronous invocations (`Event`,
/// SigV4-signed) as Lambda does, and records them.
#[derive(Default)]
struct Lambda {
    queue: Vec<(String, Value)>,
    responses: HashMap<String, Value>,
    errors: HashMap<String, Value>,
    /// Asynchronous invocations by function name, in order.
    invoked: Vec<(String, Value)>,
    /// How many of the next events get a deadline 1 s away instead of 5 minutes.
    short_deadlines: usize,
}

type SharedLambda = Arc<Mutex<Lambda>>;

async fn serve_runtime_api(lambda: SharedLambda) -> String {
    async fn next(State(l): State<SharedLambda>) -> (HeaderMap, axum::Json<Value>) {
        loop {
            let event = {
                let mut l = l.lock().unwrap();
                let short = l.short_deadlines > 0;
                let e = (!l.queue.is_empty()).then(|| l.queue.remove(0));
                if e.is_some() && short {
                    l.short_deadlines -= 1;
                }
                e.map(|e| (e, short))
            };
            if let Some(((id, payload), short)) = event {
                let mut h = HeaderMap::new();
                h.insert("lambda-runtime-aws-request-id", id.parse().unwrap());
                let left = if short { 1_000 } else { 300_000 };
                let deadline = tenebra_store::now_ms() + left;
                h.insert(
                    "lambda-runtime-deadline-ms",
                    deadline.to_string().parse().unwrap(),
                );
                h.insert(
                    "lambda-runtime-invoked-function-arn",
                    "arn:aws:lambda:us-east-1:123456789012:function:pick"
                        .parse()
                        .unwrap(),
                );
                h.insert("lambda-runtime-trace-id", "Root=1-0-0".parse().unwrap());
                return (h, axum::Json(payload));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    async fn response(
        State(l): State<SharedLambda>,
        UrlPath(id): UrlPath<String>,
        body: axum::body::Bytes,
    ) -> StatusCode {
        let v = serde_json::from_slice(&body).unwrap_or(Value::Null);
        l.lock().unwrap().responses.insert(id, v);
        StatusCode::ACCEPTED
    }
    async fn error(
        State(l): State<SharedLambda>,
        UrlPath(id): UrlPath<String>,
        body: axum::body::Bytes,
    ) -> StatusCode {
        let v = serde_json::from_slice(&body).unwrap_or(Value::Null);
        l.lock().unwrap().errors.insert(id, v);
        StatusCode::ACCEPTED
    }
    async fn invoke(
        State(l): State<SharedLambda>,
        UrlPath(function): UrlPath<String>,
        headers: HeaderMap,
        body: axum::body::Bytes,
    ) -> StatusCode {
        let header = |k: &str| headers.get(k).and_then(|v| v.to_str().ok()).unwrap_or("");
        let signed = header("authorization").starts_with("AWS4-HMAC-SHA256 Credential=")
            && header("authorization").contains("/lambda/aws4_request");
        let Ok(payload) = serde_json::from_slice::<Value>(&body) else {
            return StatusCode::BAD_REQUEST;
        };
        if !signed || header("x-amz-invocation-type") != "Event" {
            return StatusCode::FORBIDDEN;
        }
        let mut l = l.lock().unwrap();
        let id = format!("async-{}", l.invoked.len());
        l.invoked.push((function, payload.clone()));
        l.queue.push((id, payload));
        StatusCode::ACCEPTED
    }
    let app = axum::Router::new()
        .route("/2015-03-31/functions/{function}/invocations", post(invoke))
        .route("/2018-06-01/runtime/invocation/next", get(next))
        .route(
            "/2018-06-01/runtime/invocation/{id}/response",
            post(response),
        )
        .route("/2018-06-01/runtime/invocation/{id}/error", post(error))
        .with_state(lambda);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lambda_runtime_api_events() {
    let input = pick_input();
    let objects = objects(&input);
    let base = serve_objects(objects.clone()).await;
    let lambda: SharedLambda = Arc::default();
    {
        let mut l = lambda.lock().unwrap();
        let keys = format!("{base}/keys");
        l.queue.push((
            "req-1".into(),
            json!({"key_set_url": keys, "input": b64(&input)}),
        ));
        l.queue.push((
            "req-2".into(),
            json!({"key_set_url": keys, "input_url": format!("{base}/input"), "function": "nope"}),
        ));
        l.queue
            .push(("req-3".into(), json!({"task": "not an invocation"})));
        // Outside the allowed prefix, plainly or by a dot segment: refused before anything
        // is fetched.
        let metadata = "http://169.254.169.254/latest/meta-data/";
        l.queue.push((
            "req-5".into(),
            json!({"key_set_url": metadata, "input": b64(&input)}),
        ));
        let sneaky = format!("{base}/../secret");
        l.queue.push((
            "req-6".into(),
            json!({"key_set_url": keys, "input_url": sneaky}),
        ));
        l.queue.push((
            "req-4".into(),
            json!({"key_set_url": keys, "input_url": format!("{base}/input"), "result_url": format!("{base}/out")}),
        ));
    }
    let api = serve_runtime_api(lambda.clone()).await;
    let dir = package();
    let env = [
        ("AWS_LAMBDA_RUNTIME_API", api),
        ("AWS_LAMBDA_FUNCTION_NAME", "pick".into()),
        ("AWS_LAMBDA_FUNCTION_VERSION", "7".into()),
        ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "2048".into()),
        ("AWS_LAMBDA_LOG_STREAM_NAME", "stream".into()),
        ("AWS_LAMBDA_LOG_GROUP_NAME", "/aws/lambda/pick".into()),
        ("TENEBRA_ALLOWED_URLS", format!("{base}/")),
    ];
    let rt = Runtime::start(dir.path(), &env);
    let mut done = false;
    for _ in 0..1200 {
        {
            let l = lambda.lock().unwrap();
            if l.responses.len() + l.errors.len() == 6 {
                done = true;
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(done, "the runtime did not answer every event");
    let l = lambda.lock().unwrap();
    let a = &l.responses["req-1"];
    assert_eq!(a["key_cache_hit"], false);
    check_pick(&unb64(a["result"].as_str().unwrap()));
    assert_eq!(
        l.errors["req-2"]["errorType"], "Tenebra.wrong_function",
        "{:?}",
        l.errors
    );
    assert_eq!(l.errors["req-3"]["errorType"], "Tenebra.invalid_invocation");
    assert_eq!(l.errors["req-5"]["errorType"], "Tenebra.url_not_allowed");
    assert_eq!(l.errors["req-6"]["errorType"], "Tenebra.url_not_allowed");
    assert_eq!(l.responses["req-4"]["key_cache_hit"], true);
    check_pick(&objects.lock().unwrap().data["out"]);
    assert_eq!(objects.lock().unwrap().reads["keys"], 1);

    // CloudWatch Embedded Metric Format, one line per invocation that ran.
    let lines = rt.metrics();
    assert_eq!(lines.len(), 2, "{lines:?}");
    for m in &lines {
        let cw = &m["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(cw["Namespace"], "Tenebra");
        assert_eq!(cw["Dimensions"], json!([["function"]]));
        assert_eq!(m["function"], "pick");
        assert_eq!(m["version"], "7");
        assert!(m["_aws"]["Timestamp"].as_i64().unwrap() > 0);
        for metric in cw["Metrics"].as_array().unwrap() {
            assert!(m[metric["Name"].as_str().unwrap()].is_number(), "{m}");
        }
    }
}

fn tenebra(args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tenebra"))
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `tenebra functions package --target T --circuit C --out O ...`.
fn pkg(target: &str, circuit: &Path, out: &Path, extra: &[&str]) -> (bool, String, String) {
    let (c, o) = (circuit.to_str().unwrap(), out.to_str().unwrap());
    let mut args = vec![
        "functions",
        "package",
        "--target",
        target,
        "--circuit",
        c,
        "--out",
        o,
    ];
    args.extend(extra);
    tenebra(&args, &[])
}

/// `functions package`: the Lambda zip runs as Lambda runs it (its `bootstrap` started
/// alone in the unpacked task root, against the Runtime API), and the Cloud Run context
/// has what its Dockerfile copies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn packages_for_lambda_and_cloud_run() {
    use std::os::unix::fs::PermissionsExt;
    let dir = package();
    let circuit_file = dir.path().join("circuits/pick.json");
    let out = dir.path().join("lambda");
    let (ok, stdout, stderr) = pkg("lambda", &circuit_file, &out, &["--function-name", "pick"]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("function.zip"), "{stdout}");
    let template = std::fs::read_to_string(out.join("template.yaml")).unwrap();
    assert!(
        template.contains("Runtime: provided.al2023") && template.contains("FunctionName: pick")
    );

    // Unpacked as Lambda unpacks it into its task root.
    let root = dir.path().join("task");
    let mut z =
        zip::ZipArchive::new(std::fs::File::open(out.join("function.zip")).unwrap()).unwrap();
    z.extract(&root).unwrap();
    let mode = std::fs::metadata(root.join("bootstrap"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o111, 0o111, "bootstrap is executable");
    assert_eq!(
        std::fs::read(root.join("circuits/pick.json")).unwrap(),
        circuit().canonical_json()
    );
    let input = pick_input();
    let objects = objects(&input);
    // The key set object as the CLI exports it.
    let exported = dir.path().join("keys.upload");
    let (ok, stdout, stderr) = tenebra(
        &[
            "keys",
            "export",
            "--keys",
            test_key_dir().to_str().unwrap(),
            "--out",
            exported.to_str().unwrap(),
        ],
        &[],
    );
    assert!(ok, "{stderr}");
    assert_eq!(stdout.trim(), client_keys().id().to_string());
    let bytes = std::fs::read(&exported).unwrap();
    assert_eq!(
        bytes,
        tenebra_engine::keys::read_upload(&test_key_dir()).unwrap()
    );
    objects.lock().unwrap().data.insert("keys".into(), bytes);
    let base = serve_objects(objects.clone()).await;
    let lambda: SharedLambda = Arc::default();
    lambda.lock().unwrap().queue.push((
        "req-1".into(),
        json!({"key_set_url": format!("{base}/keys"), "input": b64(&input)}),
    ));
    let api = serve_runtime_api(lambda.clone()).await;
    let mut child = Command::new(root.join("bootstrap"))
        .current_dir(&root)
        .env("AWS_LAMBDA_RUNTIME_API", api)
        .env("LAMBDA_TASK_ROOT", &root)
        .env("AWS_LAMBDA_FUNCTION_NAME", "pick")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "4096")
        .env("AWS_LAMBDA_LOG_STREAM_NAME", "s")
        .env("AWS_LAMBDA_LOG_GROUP_NAME", "g")
        .env("TMPDIR", dir.path())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut answer = None;
    for _ in 0..1200 {
        if let Some(a) = lambda.lock().unwrap().responses.get("req-1") {
            answer = Some(a.clone());
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    let a = answer.expect("the packaged bootstrap did not answer");
    assert_eq!(a["function"], "pick", "served from the packaged circuits");
    check_pick(&unb64(a["result"].as_str().unwrap()));

    // Cloud Run: a container context.
    let out = dir.path().join("cloud-run");
    let (ok, _, stderr) = pkg("cloud-run", &circuit_file, &out, &[]);
    assert!(ok, "{stderr}");
    let dockerfile = std::fs::read_to_string(out.join("Dockerfile")).unwrap();
    assert!(dockerfile.contains(r#"ENTRYPOINT ["/usr/local/bin/tenebra", "runtime""#));
    assert!(out.join("tenebra").is_file() && out.join("circuits/pick.json").is_file());
    let service = std::fs::read_to_string(out.join("service.yaml")).unwrap();
    assert!(service.contains("kind: Service") && service.contains("containerConcurrency: 1"));

    // A file that is not a circuit: one clear line.
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, "{\"version\": 1}").unwrap();
    let (ok, _, stderr) = pkg("lambda", &bad, &out, &[]);
    assert!(!ok && stderr.contains("is not a circuit"), "{stderr}");
}

/// `functions deploy --target lambda` against moto's Lambda API: created, then updated;
/// without a role a new function is refused with a clear line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploys_to_lambda_through_its_api() {
    let Some(moto) = Moto::start().await else {
        return;
    };
    let endpoint = moto.url.clone();
    let credential = tenebra_server::aws::AwsCredential {
        key_id: "AKIATESTTESTTESTTEST".into(),
        secret_key: "test".into(),
        token: None,
    };
    let aws = tenebra_server::aws::AwsClient::with_credential("us-east-1", credential).unwrap();
    let trust = json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow",
        "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}]});
    let form = format!(
        "Action=CreateRole&RoleName=fhe&Version=2010-05-08&AssumeRolePolicyDocument={}",
        form_encode(&trust.to_string())
    );
    let form_type = [("content-type", "application/x-www-form-urlencoded")];
    aws.call(
        "iam",
        tenebra_server::aws::Method::POST,
        &format!("{endpoint}/"),
        &form_type,
        form.into_bytes(),
    )
    .await
    .unwrap();

    let dir = package();
    let circuit_file = dir.path().join("circuits/pick.json");
    let env = [
        ("AWS_ACCESS_KEY_ID", "AKIATESTTESTTESTTEST"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
        ("AWS_REGION", "us-east-1"),
        ("AWS_ENDPOINT_URL_LAMBDA", endpoint.as_str()),
    ];
    let role = "arn:aws:iam::123456789012:role/fhe";
    let deploy = |extra: &[&str]| {
        let mut args = vec![
            "functions",
            "deploy",
            "--target",
            "lambda",
            "--function-name",
            "pick",
            "--circuit",
            circuit_file.to_str().unwrap(),
        ];
        args.extend(extra);
        tenebra(&args, &env)
    };
    let (ok, stdout, stderr) = deploy(&["--role", role]);
    assert!(ok, "{stderr}");
    assert!(
        stdout.starts_with("created arn:aws:lambda:us-east-1:123456789012:function:pick"),
        "{stdout}"
    );
    let (ok, stdout, stderr) = deploy(&[]);
    assert!(ok, "{stderr}");
    assert!(stdout.starts_with("updated "), "{stdout}");
    let got = aws
        .call(
            "lambda",
            tenebra_server::aws::Method::GET,
            &format!("{endpoint}/2015-03-31/functions/pick"),
            &[],
            Vec::new(),
        )
        .await
        .unwrap();
    let got: Value = serde_json::from_slice(&got).unwrap();
    assert_eq!(got["Configuration"]["Runtime"], "provided.al2023");
    assert_eq!(got["Configuration"]["Handler"], "bootstrap");
    assert!(got["Configuration"]["CodeSize"].as_u64().unwrap() > 1 << 20);

    // A new function without a role: refused, said in one line.
    let mut args = vec![
        "functions",
        "deploy",
        "--target",
        "lambda",
        "--function-name",
        "other",
        "--circuit",
        circuit_file.to_str().unwrap(),
    ];
    let (ok, _, stderr) = tenebra(&args, &env);
    assert!(!ok, "created without a role");
    assert!(
        stderr.contains("no Lambda function `other`") && stderr.contains("--role"),
        "{stderr}"
    );
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    args.truncate(6);
    let (ok, _, stderr) = tenebra(&args, &env);
    assert!(!ok && stderr.contains("--circuit"), "{stderr}");
    drop(moto);
}

fn form_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Key set, input and result in S3 (moto): the runtime reads and writes `s3://` URLs with
/// credentials and endpoint from the `AWS_*` variables, on a cold and a warm invocation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_in_s3() {
    let Some(moto) = Moto::start().await else {
        return;
    };
    let s3 = moto.url.clone();
    let http = reqwest::Client::new();
    moto.bucket("fhe").await;
    let input = pick_input();
    let keys = tenebra_engine::keys::read_upload(&test_key_dir()).unwrap();
    for (name, body) in [("keys", keys), ("input", input)] {
        let r = http
            .put(format!("{s3}/fhe/{name}"))
            .body(body)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
    }
    let dir = package();
    let port = free_port();
    let env = [
        ("PORT", port.to_string()),
        ("AWS_ACCESS_KEY_ID", "test".into()),
        ("AWS_SECRET_ACCESS_KEY", "test".into()),
        ("AWS_DEFAULT_REGION", "us-east-1".into()),
        ("AWS_ENDPOINT", s3.clone()),
        ("AWS_ALLOW_HTTP", "true".into()),
        ("TENEBRA_ALLOWED_URLS", "s3://fhe/".into()),
    ];
    let _rt = Runtime::start(dir.path(), &env);
    let url = format!("http://127.0.0.1:{port}/");
    let credential = tenebra_server::aws::AwsCredential {
        key_id: "test".into(),
        secret_key: "test".into(),
        token: None,
    };
    let signer = tenebra_server::aws::AwsClient::with_credential("us-east-1", credential).unwrap();
    for (i, hit) in [(1, false), (2, true)] {
        let body = json!({"key_set_url": "s3://fhe/keys", "input_url": "s3://fhe/input",
            "result_url": format!("s3://fhe/result-{i}")});
        let mut answer = None;
        for _ in 0..200 {
            if let Ok(r) = http.post(&url).json(&body).send().await {
                answer = Some(r.json::<Value>().await.unwrap());
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let a = answer.expect("the runtime did not listen");
        assert_eq!(a["key_cache_hit"], hit, "{a}");
        // Written by a signed request, so read by one.
        let got = signer
            .call(
                "s3",
                tenebra_server::aws::Method::GET,
                &format!("{s3}/fhe/result-{i}"),
                &[],
                Vec::new(),
            )
            .await
            .unwrap();
        check_pick(&got);
    }
    let missing = json!({"key_set_url": "s3://fhe/keys", "input_url": "s3://fhe/nothing"});
    let v: Value = http
        .post(&url)
        .json(&missing)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["error"]["code"], "object_not_found");
    drop(moto);
}

/// Lambda's variables for a function named `name`, served by the Runtime API at `api`.
fn lambda_env(api: &str, name: &str) -> Vec<(&'static str, String)> {
    vec![
        ("AWS_LAMBDA_RUNTIME_API", api.to_owned()),
        ("AWS_LAMBDA_FUNCTION_NAME", name.to_owned()),
        ("AWS_LAMBDA_FUNCTION_VERSION", "1".into()),
        ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "4096".into()),
        ("AWS_LAMBDA_LOG_STREAM_NAME", "stream".into()),
        ("AWS_LAMBDA_LOG_GROUP_NAME", format!("/aws/lambda/{name}")),
    ]
}

/// What a worker pool test runs against: moto's S3 (bucket `pool`), a fresh PostgreSQL
/// database, a shared data directory, and a tenant's token.
struct Pool {
    storage: Vec<(&'static str, String)>,
    tmp: tempfile::TempDir,
    token: String,
    admin: sqlx::PgPool,
    db: String,
    _moto: Moto,
}

impl Pool {
    async fn start(name: &str) -> Option<Pool> {
        let moto = Moto::start().await?;
        moto.bucket("pool").await;
        let db = format!("tenebra_pool_{name}_{}", std::process::id());
        let admin = sqlx::PgPool::connect("postgres://postgres@127.0.0.1:5432/test")
            .await
            .unwrap();
        for sql in [
            format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"),
            format!("CREATE DATABASE {db}"),
        ] {
            sqlx::raw_sql(&sql).execute(&admin).await.unwrap();
        }
        let tmp = tempfile::tempdir().unwrap();
        let storage: Vec<(&str, String)> = vec![
            (
                "TENEBRA_DATA_DIR",
                tmp.path().join("data").display().to_string(),
            ),
            (
                "TENEBRA_DATABASE_URL",
                format!("postgres://postgres@127.0.0.1:5432/{db}"),
            ),
            ("TENEBRA_BLOB_URL", "s3://pool".into()),
            ("TENEBRA_LEASE_SECS", "3".into()),
            ("TENEBRA_SHUTDOWN_GRACE_SECS", "0".into()),
            ("AWS_ACCESS_KEY_ID", "test".into()),
            ("AWS_SECRET_ACCESS_KEY", "test".into()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_ENDPOINT", moto.url.clone()),
            ("AWS_ALLOW_HTTP", "true".into()),
            ("RUST_LOG", "warn".into()),
        ];
        let mut pool = Pool {
            storage,
            tmp,
            token: String::new(),
            admin,
            db,
            _moto: moto,
        };
        let (created, out, err) = pool.tenebra(&["admin", "tenants", "create", "acme"]);
        assert!(created, "{err}");
        pool.token = out.lines().last().unwrap().to_owned();
        Some(pool)
    }

    /// `tenebra` with the pool's storage variables.
    fn tenebra(&self, args: &[&str]) -> (bool, String, String) {
        let env: Vec<(&str, &str)> = self.storage.iter().map(|(k, v)| (*k, v.as_str())).collect();
        tenebra(args, &env)
    }

    /// The tenant's client of the API node on `listen` once it answers, with the function
    /// deployed and the key set uploaded.
    async fn client(&self, listen: &str) -> tenebra_client::http::Client {
        let client = tenebra_client::http::Client::new(&format!("http://{listen}"), &self.token);
        let mut up = false;
        for _ in 0..200 {
            if client.functions().await.is_ok() {
                up = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(up, "the API node did not come up");
        client
            .deploy_function(circuit().canonical_json())
            .await
            .unwrap();
        let keys = tenebra_engine::keys::read_upload(&test_key_dir()).unwrap();
        client.upload_key_set(keys).await.unwrap();
        client
    }

    /// Each task billed once, with the attempts given; the audit chain holds.
    async fn check_billing(&self, client: &tenebra_client::http::Client, want: &[(&str, i64)]) {
        let usage = serde_json::to_value(client.usage(&[]).await.unwrap()).unwrap();
        let mut billed: Vec<(String, i64)> = usage["records"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["task_id"].as_str().unwrap().to_owned(),
                    r["attempts"].as_i64().unwrap(),
                )
            })
            .collect();
        billed.sort();
        let mut want: Vec<(String, i64)> = want.iter().map(|(t, a)| (t.to_string(), *a)).collect();
        want.sort();
        assert_eq!(billed, want, "{usage}");
        let (good, out, err) = self.tenebra(&["audit", "verify"]);
        assert!(good, "{err}");
        let verified: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(verified["ok"], true, "{verified}");
    }

    async fn drop_db(self) {
        sqlx::raw_sql(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.db))
            .execute(&self.admin)
            .await
            .unwrap();
    }
}

/// The tests' input: `pick` of 7 and 200 (what [`check_pick`] checks).
fn pick_input() -> Vec<u8> {
    tenebra_client::encrypt_circuit(client_keys(), &circuit(), &json!({"x": 7, "y": 200})).unwrap()
}

/// Task `id`'s view once its status is `want`.
async fn wait_for(client: &tenebra_client::http::Client, id: String, want: &str) -> Value {
    let status = || async { serde_json::to_value(client.task(&id).await.unwrap()).unwrap() };
    for _ in 0..3000 {
        let s = status().await;
        if s["status"] == want {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("task {id} never got {want}: {}", status().await);
}

/// The serverless worker pool on the real PostgreSQL and S3 (moto), with Lambda played by
/// the local Invoke and Runtime APIs: an API node started with `--executor lambda:pool`
/// hands each task to Lambda as an asynchronous invocation naming only the task; the
/// function (`tenebra worker --serverless`, then the packaged `bootstrap`) claims it, reads
/// key set and input from S3, runs it and finishes it. An invocation killed mid-task loses
/// its lease; the task is handed again and finished by a later invocation, billed once. A
/// duplicate invocation does nothing; a malformed one is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_pool_on_lambda() {
    let Some(pool) = Pool::start("lambda").await else {
        return;
    };
    let lambda: SharedLambda = Arc::default();
    let api = serve_runtime_api(lambda.clone()).await;
    let (storage, tmp) = (&pool.storage, &pool.tmp);
    let listen = format!("127.0.0.1:{}", free_port());
    let mut node_env = storage.clone();
    node_env.push(("AWS_ENDPOINT_URL_LAMBDA", format!("http://{api}")));
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tenebra"));
    cmd.args(["serve", "--executor", "lambda:pool", "--listen", &listen]);
    let _node = Runtime::spawn(cmd, &node_env);
    let mut fn_env = storage.clone();
    fn_env.extend(lambda_env(&api, "pool"));
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tenebra"));
    cmd.args(["worker", "--serverless"]);
    let function = Runtime::spawn(cmd, &fn_env);

    let client = pool.client(&listen).await;
    let input = pick_input();
    let wait_for = |id: String, want: &'static str| wait_for(&client, id, want);

    // One task, handed to Lambda once, run by the function, decrypted to the reference.
    let first = client.submit_task(input.clone(), None).await.unwrap().id;
    let done = wait_for(first.clone(), "succeeded").await;
    assert_eq!(done["attempts"], 1, "{done}");
    check_pick(&client.task_result(&first).await.unwrap());
    {
        let l = lambda.lock().unwrap();
        assert_eq!(
            l.invoked,
            vec![("pool".to_owned(), json!({"task_id": first}))]
        );
        assert_eq!(
            l.responses["async-0"],
            json!({"task_id": first, "ran": true, "status": "succeeded"})
        );
    }

    // The function is killed mid-task: the task keeps its dead lease until it runs out,
    // is handed again, and the packaged `bootstrap` (a fresh, cold function) finishes it.
    let second = client.submit_task(input.clone(), None).await.unwrap().id;
    wait_for(second.clone(), "running").await;
    drop(function);
    let bootstrap = tmp.path().join("bootstrap");
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_tenebra"), &bootstrap).unwrap();
    let mut boot_env = fn_env.clone();
    boot_env.push(("TENEBRA_BOOTSTRAP", "worker".into()));
    let _function = Runtime::spawn(Command::new(&bootstrap), &boot_env);
    let done = wait_for(second.clone(), "succeeded").await;
    assert_eq!(done["attempts"], 2, "{done}");
    check_pick(&client.task_result(&second).await.unwrap());
    let handed = lambda
        .lock()
        .unwrap()
        .invoked
        .iter()
        .filter(|(_, p)| p["task_id"] == second.as_str())
        .count();
    assert!(handed >= 2, "the killed task was handed {handed} times");

    // A duplicate invocation of an ended task does nothing; a malformed one is refused.
    lambda
        .lock()
        .unwrap()
        .queue
        .push(("dup".into(), json!({"task_id": first})));
    lambda
        .lock()
        .unwrap()
        .queue
        .push(("bad".into(), json!({"task_id": "task_x' OR 1=1"})));
    let mut answered = false;
    for _ in 0..500 {
        {
            let l = lambda.lock().unwrap();
            if l.responses.contains_key("dup") && l.errors.contains_key("bad") {
                answered = true;
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(answered, "the function did not answer both events");
    {
        let l = lambda.lock().unwrap();
        assert_eq!(
            l.responses["dup"],
            json!({"task_id": first, "ran": false, "status": "succeeded"})
        );
        assert_eq!(l.errors["bad"]["errorType"], "Tenebra.invalid_invocation");
    }

    // An invocation about to reach its deadline gives the task back to the queue (the
    // attempt uncounted) instead of being killed with the lease held; it is handed again at
    // once and finished.
    lambda.lock().unwrap().short_deadlines = 1;
    let third = client.submit_task(input.clone(), None).await.unwrap().id;
    let done = wait_for(third.clone(), "succeeded").await;
    assert_eq!(done["attempts"], 1, "{done}");
    check_pick(&client.task_result(&third).await.unwrap());
    {
        let l = lambda.lock().unwrap();
        let answers: Vec<&Value> = l
            .responses
            .values()
            .filter(|a| a["task_id"] == third.as_str())
            .collect();
        let released = json!({"task_id": third, "ran": true, "status": "queued"});
        assert!(answers.contains(&&released), "{answers:?}");
    }

    // Each task billed once, the second with both attempts; the audit chain holds.
    pool.check_billing(&client, &[(&first, 1), (&second, 2), (&third, 1)])
        .await;
    drop(_node);

    pool.drop_db().await;
}

/// The serverless worker pool on Cloud Run's contract: an API node started with
/// `--executor cloud-run:URL` posts each task to `tenebra worker --serverless` on `$PORT`,
/// which runs it to its end (PostgreSQL, moto S3); every task runs once and is billed once.
/// A Pub/Sub push (a binary-mode CloudEvent) naming an ended task is acknowledged and runs
/// nothing; a request that is not a task is a 400.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_pool_on_cloud_run() {
    let Some(pool) = Pool::start("cloud_run").await else {
        return;
    };
    let port = free_port();
    let mut fn_env = pool.storage.clone();
    fn_env.push(("PORT", port.to_string()));
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tenebra"));
    cmd.args(["worker", "--serverless"]);
    let _function = Runtime::spawn(cmd, &fn_env);
    let service = format!("http://127.0.0.1:{port}/");
    let http = reqwest::Client::new();
    let mut up = false;
    for _ in 0..200 {
        if http.get(format!("{service}healthz")).send().await.is_ok() {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(up, "the function did not listen");
    let listen = format!("127.0.0.1:{}", free_port());
    let executor = format!("cloud-run:{service}");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tenebra"));
    cmd.args(["serve", "--executor", &executor, "--listen", &listen]);
    let _node = Runtime::spawn(cmd, &pool.storage);
    let client = pool.client(&listen).await;
    let input = pick_input();
    let mut ids = Vec::new();
    for _ in 0..2 {
        ids.push(client.submit_task(input.clone(), None).await.unwrap().id);
    }
    for id in &ids {
        let done = wait_for(&client, id.clone(), "succeeded").await;
        assert_eq!(done["attempts"], 1, "{done}");
        check_pick(&client.task_result(id).await.unwrap());
    }

    let message = json!({"message": {"data": b64(json!({"task_id": ids[0]}).to_string().as_bytes()),
        "messageId": "1"}, "subscription": "projects/p/subscriptions/tenebra"});
    let r = http
        .post(&service)
        .header("ce-specversion", "1.0")
        .header("ce-id", "1")
        .header(
            "ce-source",
            "//pubsub.googleapis.com/projects/p/topics/tenebra",
        )
        .header("ce-type", "google.cloud.pubsub.topic.v1.messagePublished")
        .json(&message)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let answer: Value = r.json().await.unwrap();
    assert_eq!(
        answer,
        json!({"task_id": ids[0], "ran": false, "status": "succeeded"})
    );
    let r = http
        .post(&service)
        .json(&json!({"key_set_url": "s3://pool/keys"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let error: Value = r.json().await.unwrap();
    assert_eq!(error["error"]["code"], "invalid_invocation");

    pool.check_billing(&client, &[(&ids[0], 1), (&ids[1], 1)])
        .await;
    drop(_node);
    pool.drop_db().await;
}

/// A smoke run under `cargo lambda watch` (PyPI `cargo-lambda`, as developers run Lambda
/// functions locally): its emulator serves the Runtime API and the Invoke API on loopback;
/// the built runtime polls the first, and synchronous invocations through the second (inline
/// input, then by URL with the key set cached) answer results that decrypt to the reference.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_cargo_lambda_watch() {
    let Some(bin) = std::env::var_os("TENEBRA_CARGO_LAMBDA") else {
        assert!(
            std::env::var_os("TENEBRA_REQUIRE_CARGO_LAMBDA").is_none(),
            "TENEBRA_REQUIRE_CARGO_LAMBDA is set but TENEBRA_CARGO_LAMBDA is not"
        );
        eprintln!("skipped: set TENEBRA_CARGO_LAMBDA to run this test (see .ci/run)");
        return;
    };
    let port = free_port();
    // Without any function started by it (the runtime is already built); it reads the
    // workspace's metadata for the function names (the `tenebra` binary). Its standard input
    // stays open: it stops when it closes.
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut watch = Command::new(bin)
        .args([
            "lambda",
            "watch",
            "--only-lambda-apis",
            "-A",
            "127.0.0.1",
            "-P",
        ])
        .arg(port.to_string())
        .current_dir(&workspace)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut up = false;
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(up, "cargo lambda watch did not listen");
    let input = pick_input();
    let objects = objects(&input);
    let base = serve_objects(objects.clone()).await;
    let dir = package();
    let api = format!("http://127.0.0.1:{port}/.rt/tenebra");
    let rt = Runtime::start(dir.path(), &lambda_env(&api, "tenebra"));
    let invoke = format!("http://127.0.0.1:{port}/2015-03-31/functions/tenebra/invocations");
    let http = reqwest::Client::new();
    let keys = format!("{base}/keys");
    for (body, hit) in [
        (json!({"key_set_url": keys, "input": b64(&input)}), false),
        (
            json!({"key_set_url": keys, "input_url": format!("{base}/input")}),
            true,
        ),
    ] {
        let r = http.post(&invoke).json(&body).send().await.unwrap();
        assert!(r.status().is_success(), "{}", r.status());
        let a: Value = r.json().await.unwrap();
        assert_eq!(a["key_cache_hit"], hit, "{a}");
        check_pick(&unb64(a["result"].as_str().unwrap()));
    }
    // A failure comes back as Lambda reports one.
    let r = http
        .post(&invoke)
        .json(&json!({"key_set_url": keys, "input": b64(b"not an input")}))
        .send()
        .await
        .unwrap();
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["errorType"], "Tenebra.invalid_input", "{e}");
    assert_eq!(rt.metrics().len(), 2);
    drop(rt);
    let _ = watch.kill();
    let _ = watch.wait();
}
