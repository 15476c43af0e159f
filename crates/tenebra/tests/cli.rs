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
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    let mut server = KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_tenebra"))
            .args(["serve", "--listen", &listen, "--data-dir", data])
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
    // Graceful shutdown on SIGTERM.
    Command::new("kill")
        .args(["-TERM", &server.0.id().to_string()])
        .status()
        .unwrap();
    assert!(server.0.wait().unwrap().success());
}

/// A child process killed if the test fails before stopping it.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
