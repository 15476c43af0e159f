//! The CLI as a user runs it: the whole client/server round trip and its error messages.

use std::path::Path;
use std::process::{Command, Output};

use tenebra_engine::test_support::{other_key_dir, test_key_dir};

fn tenebra(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tenebra"))
        .args(args)
        .output()
        .expect("run tenebra")
}

fn ok(args: &[&str]) -> String {
    let out = tenebra(args);
    assert!(
        out.status.success(),
        "tenebra {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Runs a command that must fail with one clear line naming `needle`.
fn fails(args: &[&str], needle: &str) {
    let out = tenebra(args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "tenebra {args:?} succeeded");
    assert!(
        err.contains(needle),
        "tenebra {args:?}: `{err}` lacks `{needle}`"
    );
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    assert!(!err.contains("panicked"), "{err}");
}

fn write(dir: &Path, name: &str, body: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, body).unwrap();
    p.to_str().unwrap().to_owned()
}

#[test]
fn round_trip_and_errors() {
    let keys = test_key_dir();
    let keys = keys.to_str().unwrap();
    let other = other_key_dir();
    let other = other.to_str().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let input = write(d, "in.json", r#"{"weights": [70, 65535, 3]}"#);
    let enc = d.join("in.enc").to_str().unwrap().to_owned();
    let res = d.join("out.enc").to_str().unwrap().to_owned();
    let ws = "weight_stats";

    assert!(ok(&["functions", "list"]).contains(ws));
    let simulated = ok(&["simulate", "--function", ws, "--input", &input]);
    assert_eq!(simulated.trim(), r#"{"avg":21869,"max":65535,"min":3}"#);
    ok(&[
        "encrypt",
        "--keys",
        keys,
        "--function",
        ws,
        "--input",
        &input,
        "--out",
        &enc,
    ]);
    ok(&[
        "eval",
        "--keys",
        keys,
        "--function",
        ws,
        "--input",
        &enc,
        "--out",
        &res,
    ]);
    let decrypted = ok(&["decrypt", "--keys", keys, "--function", ws, "--input", &res]);
    assert_eq!(decrypted, simulated, "exactly what simulate prints");

    // Wrong key set, wrong function for the ciphertext.
    let eval = |k: &str, f: &str, i: &str| {
        vec![
            "eval".to_owned(),
            "--keys".into(),
            k.into(),
            "--function".into(),
            f.into(),
            "--input".into(),
            i.into(),
            "--out".into(),
            res.clone(),
        ]
    };
    let run = |v: Vec<String>, needle: &str| {
        fails(&v.iter().map(String::as_str).collect::<Vec<_>>(), needle)
    };
    run(eval(other, ws, &enc), "key set");
    run(eval(keys, "sleep_quality", &enc), "`weight_stats`");
    fails(
        &[
            "decrypt",
            "--keys",
            other,
            "--function",
            ws,
            "--input",
            &res,
        ],
        "key set",
    );
    fails(
        &[
            "decrypt",
            "--keys",
            keys,
            "--function",
            "sleep_quality",
            "--input",
            &res,
        ],
        "`weight_stats`",
    );
    fails(
        &["decrypt", "--keys", keys, "--function", ws, "--input", &enc],
        "encrypted input",
    );
    // Malformed JSON, out-of-range values, unknown function, missing files.
    let bad = write(d, "bad.json", "{\"weights\": [1,");
    fails(
        &["simulate", "--function", ws, "--input", &bad],
        "not valid JSON",
    );
    let big = write(d, "big.json", r#"{"weights": [65536]}"#);
    fails(
        &[
            "encrypt",
            "--keys",
            keys,
            "--function",
            ws,
            "--input",
            &big,
            "--out",
            &enc,
        ],
        "weights[0]",
    );
    fails(
        &["simulate", "--function", "nope", "--input", &input],
        "unknown function",
    );
    fails(
        &[
            "decrypt",
            "--keys",
            keys,
            "--function",
            ws,
            "--input",
            "/nonexistent",
        ],
        "/nonexistent",
    );
    // Truncated files.
    let cut = write(d, "cut.enc", "");
    let result_bytes = std::fs::read(&res).unwrap();
    std::fs::write(&cut, &result_bytes[..result_bytes.len() / 2]).unwrap();
    fails(
        &["decrypt", "--keys", keys, "--function", ws, "--input", &cut],
        "invalid",
    );
    let input_bytes = std::fs::read(&enc).unwrap();
    std::fs::write(&cut, &input_bytes[..input_bytes.len() - 100]).unwrap();
    run(eval(keys, ws, &cut), "invalid");
    std::fs::write(&cut, &input_bytes[..7]).unwrap();
    run(eval(keys, ws, &cut), "bundle marker");
    // A key directory with a truncated server key.
    let broken = d.join("broken");
    std::fs::create_dir(&broken).unwrap();
    for f in ["keyset.json", "public.key", "client.key"] {
        std::fs::copy(Path::new(keys).join(f), broken.join(f)).unwrap();
    }
    let sk = std::fs::read(Path::new(keys).join("server.key")).unwrap();
    std::fs::write(broken.join("server.key"), &sk[..sk.len() / 3]).unwrap();
    run(eval(broken.to_str().unwrap(), ws, &enc), "server.key");
}

#[test]
fn functions_show_prints_the_canonical_circuit() {
    let json = ok(&[
        "functions",
        "show",
        "--function",
        "sleep_quality",
        "--size",
        "2",
    ]);
    let c = tenebra_circuit::parse_circuit(json.trim().as_bytes(), &Default::default()).unwrap();
    assert_eq!(c.canonical_json(), json.trim().as_bytes());
    fails(
        &[
            "functions",
            "show",
            "--function",
            "sleep_quality",
            "--size",
            "65",
        ],
        "1..=64",
    );
}

#[test]
fn serve_and_admin_create_a_tenant_then_stop_on_sigterm() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().to_str().unwrap();
    let out = ok(&["admin", "--data-dir", data, "tenants", "create", "acme"]);
    let token = out.lines().last().unwrap().to_owned();
    assert!(token.starts_with("tnb_"), "{out}");
    fails(
        &["admin", "--data-dir", data, "tenants", "create", "acme"],
        "acme",
    );
    // Billing to a Stripe customer: a customer id or nothing, for a tenant that exists.
    let id = out
        .lines()
        .next()
        .and_then(|l| l.split(['(', ')']).nth(1))
        .unwrap()
        .to_owned();
    let billing = |rest: &[&str]| -> Vec<String> {
        ["admin", "--data-dir", data, "tenants", "set-billing"]
            .iter()
            .chain(rest)
            .map(|a| a.to_string())
            .collect()
    };
    let run_ok = |a: Vec<String>| ok(&a.iter().map(String::as_str).collect::<Vec<_>>());
    let run_fails =
        |a: Vec<String>, needle| fails(&a.iter().map(String::as_str).collect::<Vec<_>>(), needle);
    let set = run_ok(billing(&[&id, "--stripe-customer", "cus_Acme0001"]));
    assert!(set.contains("cus_Acme0001"), "{set}");
    run_fails(billing(&[&id, "--stripe-customer", "prod_1"]), "cus_");
    run_fails(billing(&["tn_nobody", "--none"]), "no tenant `tn_nobody`");
    run_ok(billing(&[&id, "--none"]));
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    let log_path = tmp.path().join("serve.log");
    let mut server = KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_tenebra"))
            .args(["serve", "--listen", &listen, "--data-dir", data])
            .env_remove("RUST_LOG")
            .stderr(std::fs::File::create(&log_path).unwrap())
            .spawn()
            .unwrap(),
    );
    let http = reqwest::blocking::Client::new();
    let url = format!("http://{listen}/v1/api-keys");
    let mut status = None;
    for _ in 0..100 {
        if let Ok(r) = http.get(&url).bearer_auth(&token).send() {
            status = Some(r.status());
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(status, Some(reqwest::StatusCode::OK));
    // Every request's log lines carry its id: the client's own, or the one the server gave it
    // in `X-Request-Id`.
    let mine = http
        .get(&url)
        .bearer_auth("tnb_not_a_key")
        .header("x-request-id", "req-from-the-client-42")
        .send()
        .unwrap();
    assert_eq!(mine.status(), reqwest::StatusCode::UNAUTHORIZED);
    assert_eq!(mine.headers()["x-request-id"], "req-from-the-client-42");
    let given = http.get(&url).bearer_auth(&token).send().unwrap();
    let given_id = given.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert!(given_id.starts_with("req_"), "{given_id}");
    // Upload the test key set through the CLI (the typed client underneath); twice is the
    // same key set.
    let keys = test_key_dir();
    let server_url = format!("http://{listen}");
    let up = |k: &str| {
        Command::new(env!("CARGO_BIN_EXE_tenebra"))
            .args([
                "keys",
                "upload",
                "--keys",
                keys.to_str().unwrap(),
                "--server",
                &server_url,
            ])
            .env("TENEBRA_API_KEY", k)
            .output()
            .unwrap()
    };
    let first = up(&token);
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let second = up(&token);
    assert_eq!(first.stdout, second.stdout);
    let local = tenebra_engine::ClientKeys::load(&keys)
        .unwrap()
        .id()
        .to_string();
    assert!(String::from_utf8_lossy(&first.stderr).contains(&local));
    let denied = up("tnb_nope");
    assert!(!denied.status.success());
    let why = String::from_utf8_lossy(&denied.stderr);
    assert!(why.contains("401 unauthorized"), "{why}");

    // One shot: encrypt, submit, wait, download, decrypt; prints what `simulate` prints.
    let input = write(
        tmp.path(),
        "w.json",
        r#"{"weights": [680, 650, 690, 700, 705]}"#,
    );
    let keys_arg = keys.to_str().unwrap();
    let remote = |args: &[&str]| against(&server_url, &token, args);
    let want = ok(&["simulate", "--function", "weight_stats", "--input", &input]);
    let args = [
        "run",
        "--keys",
        keys_arg,
        "--function",
        "weight_stats",
        "--input",
        &input,
    ];
    let (good, got, err) = remote(&args);
    assert!(good, "{err}");
    assert_eq!(got, want);
    // Step by step: the same result through `task submit | wait | result` and `decrypt`.
    let enc = tmp.path().join("w.enc");
    let res = tmp.path().join("w.res");
    let (enc, res) = (enc.to_str().unwrap(), res.to_str().unwrap());
    ok(&[
        "encrypt",
        "--keys",
        keys_arg,
        "--function",
        "weight_stats",
        "--input",
        &input,
        "--out",
        enc,
    ]);
    let (good, id, err) = remote(&["task", "submit", "--input", enc]);
    assert!(good, "{err}");
    let id = id.trim();
    let (good, status, err) = remote(&["task", "wait", id]);
    assert!(good, "{err}");
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(status["status"], "succeeded");
    let (good, _, err) = remote(&["task", "result", id, "--out", res]);
    assert!(good, "{err}");
    let got = ok(&[
        "decrypt",
        "--keys",
        keys_arg,
        "--function",
        "weight_stats",
        "--input",
        res,
    ]);
    assert_eq!(got, want);
    let (good, list, _) = remote(&["task", "list", "--status", "succeeded"]);
    assert!(
        good && list.lines().count() == 2 && list.contains(id),
        "{list}"
    );
    let (good, _, err) = remote(&["task", "status", "task_nope"]);
    assert!(!good && err.contains("404 not_found"), "{err}");

    // A tenant's own function, as the README shows it: deploy, run, list, delete.
    let circuit = {
        use tenebra_circuit::builder::{max_of, sum, Builder};
        use tenebra_circuit::ScalarType::Uint;
        let b = Builder::new("stats3");
        let xs = b.input_vec("xs", Uint(8), 3);
        let wide: Vec<_> = xs.iter().map(|x| x.cast(Uint(16))).collect();
        b.output("s", &sum(&wide));
        b.output("m", &max_of(&xs));
        b.build().unwrap().canonical_json()
    };
    let circuit_file = tmp.path().join("stats3.json");
    std::fs::write(&circuit_file, circuit).unwrap();
    let (good, version, err) = remote(&[
        "functions",
        "deploy",
        "--circuit",
        circuit_file.to_str().unwrap(),
    ]);
    assert!(good, "{err}");
    assert_eq!(version.trim(), "1");
    let xs = write(tmp.path(), "xs.json", r#"{"xs": [200, 255, 7]}"#);
    let (good, got, err) = remote(&[
        "run",
        "--keys",
        keys_arg,
        "--function",
        "stats3",
        "--input",
        &xs,
    ]);
    assert!(good, "{err}");
    assert_eq!(got.trim(), r#"{"m":255,"s":462}"#);
    let (good, list, err) = remote(&["functions", "list"]);
    assert!(
        good && list.contains("stats3 v1") && list.contains("weight_stats"),
        "{list}{err}"
    );
    let (good, _, err) = remote(&["functions", "delete", "stats3"]);
    assert!(good, "{err}");
    let (good, _, err) = remote(&[
        "run",
        "--keys",
        keys_arg,
        "--function",
        "stats3",
        "--input",
        &xs,
    ]);
    assert!(!good && err.contains("404"), "{err}");
    // Graceful shutdown on SIGTERM.
    Command::new("kill")
        .args(["-TERM", &server.0.id().to_string()])
        .status()
        .unwrap();
    assert!(server.0.wait().unwrap().success());
    let log = std::fs::read_to_string(&log_path).unwrap();
    for (id, status) in [
        ("req-from-the-client-42", "401"),
        (given_id.as_str(), "200"),
    ] {
        let line = log
            .lines()
            .find(|l| l.contains(&format!("id={id}")) && l.contains("answered"))
            .unwrap_or_else(|| panic!("no log line names request {id}:\n{log}"));
        assert!(line.contains(&format!("status={status}")), "{line}");
        assert!(line.contains("route=/v1/api-keys"), "{line}");
    }
}

/// Runs a command against a server with an API key: (success, stdout, stderr).
fn against(server: &str, token: &str, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tenebra"))
        .args(args)
        .args(["--server", server])
        .env("TENEBRA_API_KEY", token)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn spawn(args: &[&str]) -> KillOnDrop {
    KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_tenebra"))
            .args(args)
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    )
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn pg_admin(sql: &str) {
    pg_admin_in("test", sql)
}

/// Runs `sql` (one or more statements) as the superuser in database `db`.
fn pg_admin_in(db: &str, sql: &str) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let url = format!("postgres://postgres@127.0.0.1:5432/{db}");
        let admin = sqlx::PgPool::connect(&url).await.unwrap();
        sqlx::raw_sql(sql).execute(&admin).await.unwrap();
        admin.close().await;
    });
}

/// Cluster mode on the real PostgreSQL: an API node without workers and separate worker
/// processes. A worker killed mid-task loses its lease and another one finishes the task;
/// a worker stopped with SIGTERM gives its task back to the queue. The API node connects
/// as a role that may not cross tenants (ARCHITECTURE.md's `tenebra_api`): everything a
/// tenant does works through it.
#[test]
fn cluster_workers_take_over_from_a_killed_worker() {
    let db = format!("tenebra_cli_{}", std::process::id());
    pg_admin(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"));
    pg_admin(&format!("CREATE DATABASE {db}"));
    let url = format!("postgres://postgres@127.0.0.1:5432/{db}");
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("shared");
    let data = data.to_str().unwrap();
    let storage = ["--data-dir", data, "--database-url", &url];
    let mut args = vec!["admin", "tenants", "create", "acme"];
    args.extend(storage);
    let token = ok(&args).lines().last().unwrap().to_owned();
    let listen = format!("127.0.0.1:{}", free_port());
    let server_url = format!("http://{listen}");
    pg_admin_in(
        &db,
        "DO $$ BEGIN CREATE ROLE tenebra_cli_api LOGIN; \
         EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$; \
         GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public \
           TO tenebra_cli_api; \
         REVOKE INSERT, UPDATE, DELETE ON cross_tenant_roles FROM tenebra_cli_api",
    );
    let api_url = format!("postgres://tenebra_cli_api@127.0.0.1:5432/{db}");
    let api_args = ["--data-dir", data, "--database-url", &api_url];
    let mut args = vec!["serve", "--no-worker", "--listen", &listen];
    args.extend(api_args);
    let _api = spawn(&args);
    let http = reqwest::blocking::Client::new();
    for _ in 0..100 {
        if http.get(format!("{server_url}/readyz")).send().is_ok() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let worker_args = {
        let mut a = vec!["worker", "--lease-secs", "3", "--shutdown-grace-secs", "0"];
        a.extend(storage);
        a
    };
    let keys = test_key_dir();
    let keys_arg = keys.to_str().unwrap();
    let input = write(
        tmp.path(),
        "w.json",
        r#"{"weights": [680, 650, 690, 700, 705]}"#,
    );
    let enc = tmp.path().join("w.enc");
    let enc = enc.to_str().unwrap();
    ok(&[
        "encrypt",
        "--keys",
        keys_arg,
        "--function",
        "weight_stats",
        "--input",
        &input,
        "--out",
        enc,
    ]);
    let remote = |args: &[&str]| {
        let (good, out, err) = against(&server_url, &token, args);
        assert!(good, "tenebra {args:?}: {err}");
        out
    };
    remote(&["keys", "upload", "--keys", keys_arg]);
    let status = |id: &str| -> serde_json::Value {
        serde_json::from_str(&remote(&["task", "status", id])).unwrap()
    };
    let wait_for = |id: &str, what: &dyn Fn(&serde_json::Value) -> bool| {
        for _ in 0..1200 {
            let s = status(id);
            if what(&s) {
                return s;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        panic!("task {id} never got there: {}", status(id));
    };

    // Worker 1 starts the task and is killed mid-run; worker 2 takes it over.
    let id = remote(&["task", "submit", "--input", enc])
        .trim()
        .to_owned();
    let mut w1 = spawn(&worker_args);
    wait_for(&id, &|s| {
        s["status"] == "running" && s["progress"]["done"].as_i64() > Some(0)
    });
    w1.0.kill().unwrap();
    let _ = w1.0.wait();
    // Worker 2 serves its own metrics (a worker's durations and cache misses are its own).
    let metrics_token = "m".repeat(40);
    let metrics_at = format!("127.0.0.1:{}", free_port());
    let w2_args = {
        let mut a = worker_args.clone();
        a.extend([
            "--metrics-listen",
            &metrics_at,
            "--metrics-token",
            &metrics_token,
        ]);
        a
    };
    let mut w2 = spawn(&w2_args);
    let done = wait_for(&id, &|s| s["status"] == "succeeded");
    assert_eq!(done["attempts"], 2, "{done}");
    let scrape = |token: &str| {
        http.get(format!("http://{metrics_at}/metrics"))
            .bearer_auth(token)
            .send()
            .unwrap()
    };
    assert_eq!(scrape("not the token").status(), 401);
    let wants = [
        "tenebra_task_seconds_count{function=\"weight_stats\",status=\"succeeded\"} 1",
        "tenebra_key_cache_misses_total 1",
        "tenebra_queue_depth 0",
    ];
    // The worker records the duration just after the commit that ended the task.
    let mut page = String::new();
    for _ in 0..50 {
        let r = scrape(&metrics_token);
        assert_eq!(r.status(), 200);
        page = r.text().unwrap();
        if wants.iter().all(|w| page.contains(w)) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    for want in wants {
        assert!(page.contains(want), "{want} not in {page}");
    }
    let mut lonely = worker_args.clone();
    lonely.extend(["--metrics-listen", "127.0.0.1:0"]);
    fails(&lonely, "needs --metrics-token");
    let res = tmp.path().join("w.res");
    let res = res.to_str().unwrap();
    remote(&["task", "result", &id, "--out", res]);
    let want = ok(&["simulate", "--function", "weight_stats", "--input", &input]);
    let got = ok(&[
        "decrypt",
        "--keys",
        keys_arg,
        "--function",
        "weight_stats",
        "--input",
        res,
    ]);
    assert_eq!(got, want);

    // Billed once although two workers ran it; the invoice adds up; the audit log holds.
    let usage: serde_json::Value = serde_json::from_str(&remote(&["usage"])).unwrap();
    let records = usage["records"].as_array().unwrap();
    assert_eq!(records.len(), 1, "{usage}");
    assert_eq!(records[0]["task_id"], id.as_str());
    assert_eq!(records[0]["attempts"], 2);
    assert_eq!(records[0]["charged_cu"], done["cost_cu"]);
    let invoice: serde_json::Value = serde_json::from_str(&remote(&["invoices"])).unwrap();
    assert_eq!(invoice["total_nanos"], usage["totals"]["amount_nanos"]);
    let mut args = vec!["audit", "verify"];
    args.extend(storage);
    let verified: serde_json::Value = serde_json::from_str(&ok(&args)).unwrap();
    assert_eq!(verified["ok"], true, "{verified}");
    // Meter events to a file: each usage record once, however often the export runs.
    let events = tmp.path().join("events.jsonl");
    let mut args = vec!["admin", "meter-events", "--out", events.to_str().unwrap()];
    args.extend(storage);
    ok(&args);
    ok(&args);
    let lines = std::fs::read_to_string(&events).unwrap();
    assert_eq!(lines.lines().count(), 1, "{lines}");
    let event: serde_json::Value = serde_json::from_str(lines.trim()).unwrap();
    assert_eq!(event["identifier"], id.as_str());
    assert_eq!(event["event_name"], "tenebra_cu");

    // SIGTERM: worker 2 stops claiming and gives its running task back, uncounted.
    let id = remote(&["task", "submit", "--input", enc])
        .trim()
        .to_owned();
    wait_for(&id, &|s| s["status"] == "running");
    Command::new("kill")
        .args(["-TERM", &w2.0.id().to_string()])
        .status()
        .unwrap();
    assert!(w2.0.wait().unwrap().success());
    let back = status(&id);
    assert_eq!(
        (&back["status"], &back["attempts"]),
        (&serde_json::json!("queued"), &serde_json::json!(0)),
        "{back}"
    );
    pg_admin(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"));
}

/// A config file sets flags; the environment overrides it; unknown keys are errors.
#[test]
fn config_file_sets_flags() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("from-config");
    let config = write(
        tmp.path(),
        "tenebra.toml",
        &format!("data_dir = {:?}\nlease_secs = 10\n", data.to_str().unwrap()),
    );
    ok(&["admin", "tenants", "create", "acme", "--config", &config]);
    assert!(data.join("tenebra.db").exists());
    let bad = write(tmp.path(), "bad.toml", "dat_dir = \"x\"\n");
    fails(
        &["admin", "tenants", "create", "x", "--config", &bad],
        "unknown setting `dat_dir`",
    );
    let other = tmp.path().join("from-env");
    let out = Command::new(env!("CARGO_BIN_EXE_tenebra"))
        .args(["admin", "tenants", "create", "acme"])
        .env("TENEBRA_CONFIG", &config)
        .env("TENEBRA_DATA_DIR", &other)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        other.join("tenebra.db").exists(),
        "the environment wins over the file"
    );
}

/// A child process killed if the test fails before stopping it.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `tenebra models`: an owner uploads a model and offers it with its layers to another
/// tenant, which accepts and runs a split: the decrypted activations equal the quantized
/// plaintext split exactly, and the prediction is the rest of the model on them; before
/// accepting and after a revoke the model is a 404; without shared layers the run says so.
#[test]
fn models_upload_grant_accept_and_split_inference() {
    use tenebra_functions::model::{example_data, example_mlp};
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let data = data.to_str().unwrap();
    let tenant = |name: &str| {
        let out = ok(&["admin", "--data-dir", data, "tenants", "create", name]);
        let id = out.split(['(', ')']).nth(1).unwrap().to_owned();
        (id, out.lines().last().unwrap().to_owned())
    };
    let (owner, owner_key) = tenant("owner");
    let (user, user_key) = tenant("user");
    let listen = format!("127.0.0.1:{}", free_port());
    let server = format!("http://{listen}");
    let _node = spawn(&["serve", "--listen", &listen, "--data-dir", data]);
    let http = reqwest::blocking::Client::new();
    for _ in 0..100 {
        if http.get(format!("{server}/readyz")).send().is_ok() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let as_owner = |args: &[&str]| {
        let (good, out, err) = against(&server, &owner_key, args);
        assert!(good, "tenebra {args:?}: {err}");
        out
    };
    let model = example_mlp();
    let file = write(
        tmp.path(),
        "mlp.json",
        &serde_json::to_string(&model).unwrap(),
    );
    let up: serde_json::Value =
        serde_json::from_str(&as_owner(&["models", "upload", "--file", &file])).unwrap();
    assert_eq!(
        (&up["owner_id"], &up["version"]),
        (&serde_json::json!(owner), &serde_json::json!(1))
    );
    let list = as_owner(&["models", "list"]);
    assert!(list.contains(&model.name), "{list}");
    let reference = format!("{owner}/{}", model.name);
    let sig: serde_json::Value = serde_json::from_str(&as_owner(&[
        "models",
        "signature",
        &reference,
        "--layers",
        "1",
    ]))
    .unwrap();
    assert_eq!(sig["layers"], 1, "{sig}");
    as_owner(&["models", "grant", &model.name, &user, "--share-layers"]);

    let (x, _) = example_data(1, 9);
    let input = write(
        tmp.path(),
        "x.json",
        &serde_json::json!({"x": x[0]}).to_string(),
    );
    let keys = tmp.path().join("user-keys");
    let keys = keys.to_str().unwrap();
    let run = [
        "models", "run", &reference, "--keys", keys, "--input", &input, "--layers", "1",
    ];
    // An offer gives nothing until it is accepted.
    let (good, _, err) = against(&server, &user_key, &run);
    assert!(!good && err.contains("404"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    let (good, offers, err) = against(&server, &user_key, &["models", "offers"]);
    assert!(good && offers.contains(&model.name), "{offers} {err}");
    let (good, _, err) = against(&server, &user_key, &["models", "accept", &reference]);
    assert!(good, "{err}");
    let (good, out, err) = against(&server, &user_key, &run);
    assert!(good, "{err}");
    let out: serde_json::Value = serde_json::from_str(&out).unwrap();
    let mid = model.compile(1).unwrap().simulate(&model, &x[0]).unwrap();
    // The same integers dequantized (the SDK multiplies by 1/scale, the simulator divides).
    let close = |a: &[f64], b: &[f64]| {
        a.len() == b.len()
            && a.iter()
                .zip(b)
                .all(|(x, y)| (x - y).abs() <= 1e-12 * y.abs().max(1.0))
    };
    let got: Vec<f64> = serde_json::from_value(out["activations"].clone()).unwrap();
    assert!(close(&got, &mid), "{out} vs {mid:?}");
    let prediction: Vec<f64> = serde_json::from_value(out["prediction"].clone()).unwrap();
    assert!(close(&prediction, &model.forward_from(1, &mid)), "{out}");

    // Without shared layers, the user gets the activations and a note.
    as_owner(&["models", "grant", &model.name, &user]);
    let (good, _, err) = against(&server, &user_key, &["models", "accept", &reference]);
    assert!(good, "{err}");
    let (good, out, err) = against(&server, &user_key, &run);
    assert!(good, "{err}");
    let out: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(
        out["prediction"].is_null() && out["note"].as_str().is_some(),
        "{out}"
    );
    assert_eq!(out["activations"], serde_json::json!(got));

    // The user gives it up; offered again, accepted again; then the owner revokes it.
    let (good, _, err) = against(&server, &user_key, &["models", "decline", &reference]);
    assert!(good, "{err}");
    let (good, _, err) = against(&server, &user_key, &run);
    assert!(!good && err.contains("404"), "{err}");
    as_owner(&["models", "grant", &model.name, &user]);
    let (good, _, err) = against(&server, &user_key, &["models", "accept", &reference]);
    assert!(good, "{err}");
    as_owner(&["models", "revoke", &model.name, &user]);
    let (good, _, err) = against(&server, &user_key, &run);
    assert!(!good && err.contains("404"), "{err}");
}

/// `bench function` on a circuit file (TFHE) and on a BFV built-in: every run's decrypted
/// result matched the plaintext evaluator (the command fails otherwise), edges first; a
/// file that is no circuit is a one-line error.
#[test]
fn bench_function_checks_each_run() {
    let tmp = tempfile::tempdir().unwrap();
    let keys = test_key_dir();
    let keys = keys.to_str().unwrap();
    let circuit = ok(&[
        "functions",
        "show",
        "--function",
        "weight_stats",
        "--size",
        "2",
    ])
    .replace("\"name\":\"weight_stats\"", "\"name\":\"my_stats\"");
    let file = write(tmp.path(), "my.json", &circuit);
    let args = ["bench", "function", "--keys", keys, "--circuit", &file];
    let out: serde_json::Value = serde_json::from_str(&ok(&args)).unwrap();
    assert_eq!(
        (&out["function"], &out["scheme"], &out["checked"]),
        (
            &serde_json::json!("my_stats"),
            &serde_json::json!("tfhe"),
            &serde_json::json!(3)
        ),
        "{out}"
    );
    assert_eq!(out["run_s"].as_array().unwrap().len(), 3, "{out}");
    assert!(out["cost_cu"].as_u64() > Some(0), "{out}");
    // BFV keys made on first use, in a directory of their own.
    let bfv_keys = tmp.path().join("bfv-keys");
    let args = [
        "bench",
        "function",
        "--keys",
        bfv_keys.to_str().unwrap(),
        "--function",
        "ad_targeting",
        "--reps",
        "2",
    ];
    let out: serde_json::Value = serde_json::from_str(&ok(&args)).unwrap();
    assert_eq!(
        (&out["scheme"], &out["checked"]),
        (&serde_json::json!("bfv"), &serde_json::json!(2)),
        "{out}"
    );
    let bad = write(tmp.path(), "bad.json", r#"{"version": 1, "nodes": "many"}"#);
    fails(
        &["bench", "function", "--keys", keys, "--circuit", &bad],
        "is not a circuit the service takes",
    );
}

/// `bench overhead` on both backends, small: every task of the service run is decrypted and
/// checked and every queued task finished (the command fails otherwise), and the section it
/// writes into an existing BENCHMARKS.md has a row per backend and keeps the rest.
#[test]
fn bench_overhead_measures_both_backends() {
    let db = format!("tenebra_bench_{}", std::process::id());
    pg_admin(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"));
    pg_admin(
        "DO $$ BEGIN CREATE ROLE tenebra_cli_bench LOGIN; \
         EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$",
    );
    pg_admin(&format!("CREATE DATABASE {db} OWNER tenebra_cli_bench"));
    let url = format!("postgres://tenebra_cli_bench@127.0.0.1:5432/{db}");
    let tmp = tempfile::tempdir().unwrap();
    let doc = tmp.path().join("BENCHMARKS.md");
    std::fs::write(&doc, "# Benchmarks\n\nhead\n").unwrap();
    let keys = test_key_dir();
    ok(&[
        "bench",
        "overhead",
        "--keys",
        keys.to_str().unwrap(),
        "--database-url",
        &url,
        "--clients",
        "1,2",
        "--tasks",
        "3",
        "--workers",
        "2",
        "--queue-tasks",
        "40",
        "--write",
        doc.to_str().unwrap(),
    ]);
    let text = std::fs::read_to_string(&doc).unwrap();
    assert!(text.starts_with("# Benchmarks\n\nhead\n"), "{text}");
    for row in [
        "| SQLite (embedded) | 1 | 3 |",
        "| SQLite (embedded) | 2 | 6 |",
        "| PostgreSQL | 1 | 3 |",
        "| PostgreSQL | 2 | 6 |",
        "| SQLite (embedded) | 2 | 40 |",
        "| PostgreSQL | 2 | 40 |",
    ] {
        assert!(text.contains(row), "{row} not in {text}");
    }
    pg_admin(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"));
}

/// The README's main job: the embedded service and a client running every built-in on
/// encrypted data, checked against plaintext, then billed and audited.
#[test]
fn demo_runs_end_to_end() {
    let keys = test_key_dir();
    let out = ok(&["demo", "--keys", keys.to_str().unwrap()]);
    assert!(out.contains("demo ok"), "{out}");
    assert!(out.contains("ad_targeting: profile"), "{out}");
    assert!(out.contains("equals the records' sum: true"), "{out}");
    assert!(out.contains("verified: true"), "{out}");
}

/// The BFV built-in through the same CLI contract: simulate, encrypt, eval (key set only),
/// decrypt prints `{"scores": [...], "top": [...]}` equal to the simulation; wrong inputs and
/// files are one clear line.
#[test]
fn ad_targeting_round_trip_and_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let keys = tmp.path().join("keys");
    let keys = keys.to_str().unwrap();
    let mut profile = vec![0; 62];
    for i in [1, 3, 9, 25, 33, 60] {
        profile[i] = 1;
    }
    let input = write(
        tmp.path(),
        "p.json",
        &serde_json::json!({ "profile": profile }).to_string(),
    );
    let sim: serde_json::Value = serde_json::from_str(&ok(&[
        "simulate",
        "--function",
        "ad_targeting",
        "--input",
        &input,
    ]))
    .unwrap();
    assert_eq!(sim["scores"].as_array().unwrap().len(), 4954);
    assert_eq!(sim["top"].as_array().unwrap().len(), 5);
    let enc = tmp.path().join("in.bin");
    let res = tmp.path().join("out.bin");
    let (enc, res) = (enc.to_str().unwrap(), res.to_str().unwrap());
    ok(&[
        "encrypt",
        "--keys",
        keys,
        "--function",
        "ad_targeting",
        "--input",
        &input,
        "--out",
        enc,
    ]);
    ok(&[
        "eval",
        "--keys",
        keys,
        "--function",
        "ad_targeting",
        "--input",
        enc,
        "--out",
        res,
    ]);
    let got: serde_json::Value = serde_json::from_str(&ok(&[
        "decrypt",
        "--keys",
        keys,
        "--function",
        "ad_targeting",
        "--input",
        res,
    ]))
    .unwrap();
    assert_eq!(got, sim);
    let bad = write(tmp.path(), "bad.json", r#"{"profile": [1, 0]}"#);
    fails(
        &[
            "encrypt",
            "--keys",
            keys,
            "--function",
            "ad_targeting",
            "--input",
            &bad,
            "--out",
            enc,
        ],
        "`profile` must hold 62 to 62 elements",
    );
    fails(
        &[
            "decrypt",
            "--keys",
            keys,
            "--function",
            "ad_targeting",
            "--input",
            enc,
        ],
        "it is an encrypted input",
    );
}
