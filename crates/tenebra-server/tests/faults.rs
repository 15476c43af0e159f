//! The database fails under a running service: a private PostgreSQL (`initdb` and `pg_ctl`
//! on a free port, never the machine's shared server) is killed while tasks run, then
//! started again. The API node and the worker reconnect by themselves; every task ends
//! once with the reference result and is billed once.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::json;
use tenebra_client::http::Client;
use tenebra_engine::test_support::{client_keys, test_key_dir};
use tenebra_server::create_tenant;
use tenebra_server::worker::{self, WorkerConfig};
use tokio::sync::watch;

mod common;

/// A PostgreSQL server of this test's own: its cluster in a temporary directory, stopped
/// (immediately) on drop.
struct PrivatePg {
    bin: PathBuf,
    data: PathBuf,
    port: u16,
    /// As root, the server runs as `postgres` (it refuses root).
    as_postgres: bool,
    _dir: tempfile::TempDir,
}

impl PrivatePg {
    /// Where `initdb` is: `TENEBRA_PG_BIN`, else Debian's `/usr/lib/postgresql/<v>/bin`.
    fn bin_dir() -> Option<PathBuf> {
        if let Some(dir) = std::env::var_os("TENEBRA_PG_BIN") {
            return Some(dir.into());
        }
        let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
            .filter(|b| b.join("initdb").exists())
            .collect();
        found.sort();
        found.pop()
    }

    /// A new cluster, started; `None` (the test skips, saying so) where PostgreSQL's server
    /// binaries are missing, unless `TENEBRA_REQUIRE_PRIVATE_PG` is set (CI sets it).
    fn start() -> Option<Self> {
        let Some(bin) = Self::bin_dir() else {
            assert!(
                std::env::var_os("TENEBRA_REQUIRE_PRIVATE_PG").is_none(),
                "TENEBRA_REQUIRE_PRIVATE_PG is set but no initdb was found"
            );
            eprintln!("skipped: no PostgreSQL server binaries (set TENEBRA_PG_BIN)");
            return None;
        };
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir(&data).unwrap();
        let as_postgres = is_root();
        if as_postgres {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
            run(Command::new("chown").arg("postgres:").arg(&data));
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let pg = Self {
            bin,
            data,
            port,
            as_postgres,
            _dir: dir,
        };
        pg.run(
            "initdb",
            &[
                "-D",
                pg.data.to_str().unwrap(),
                "-U",
                "postgres",
                "--auth=trust",
                "--no-sync",
            ],
        );
        pg.up();
        Some(pg)
    }

    /// `tool` of the server's binaries, as the user that owns the cluster.
    fn command(&self, tool: &str) -> Command {
        let tool = self.bin.join(tool);
        if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(tool);
            c
        } else {
            Command::new(tool)
        }
    }

    fn run(&self, tool: &str, args: &[&str]) {
        run(self.command(tool).args(args));
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Starts the server (on the same port each time) and waits until it accepts.
    fn up(&self) {
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.data.display()
        );
        let log = self.data.join("server.log");
        self.run(
            "pg_ctl",
            &[
                "-D",
                self.data.to_str().unwrap(),
                "-l",
                log.to_str().unwrap(),
                "-o",
                &opts,
                "-w",
                "start",
            ],
        );
    }

    /// Kills the server: `immediate` mode, no shutdown checkpoint (crash recovery next start).
    fn kill(&self) {
        self.run(
            "pg_ctl",
            &[
                "-D",
                self.data.to_str().unwrap(),
                "-m",
                "immediate",
                "-w",
                "stop",
            ],
        );
    }
}

impl Drop for PrivatePg {
    fn drop(&mut self) {
        let _ = self
            .command("pg_ctl")
            .arg("-D")
            .arg(&self.data)
            .args(["-m", "immediate", "stop"])
            .output();
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn run(c: &mut Command) {
    let out = c.output().unwrap_or_else(|e| panic!("{c:?}: {e}"));
    assert!(
        out.status.success(),
        "{c:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Polls a task through errors (the database may be down) until it ends; a hang guard, not
/// a timing assertion.
async fn ended(c: &Client, id: &str) -> tenebra_client::http::Task {
    let guard = Instant::now() + Duration::from_secs(600);
    loop {
        if let Ok(t) = c.task(id).await {
            if t.is_final() {
                return t;
            }
        }
        assert!(Instant::now() < guard, "task {id} never ended");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_killed_mid_run_loses_nothing_and_bills_once() {
    use tenebra_circuit::builder::Builder;
    use tenebra_circuit::ScalarType::Uint;
    const TASKS: u64 = 10;
    let Some(pg) = PrivatePg::start() else {
        return;
    };
    let h = common::Harness::start_on(pg.url()).await;
    let (stop_worker, rx) = watch::channel(false);
    let worker = tokio::spawn(worker::run(
        h.state.clone(),
        WorkerConfig {
            concurrency: 2,
            lease: Duration::from_secs(3),
            poll: Duration::from_millis(200),
            retry_delay: Duration::from_millis(200),
            ..WorkerConfig::default()
        },
        rx,
    ));
    let (_, token) = create_tenant(&h.state, "faults").await.unwrap();
    let c = Client::new(&h.base, &token);
    c.upload_key_set(tenebra_engine::keys::read_upload(&test_key_dir()).unwrap())
        .await
        .unwrap();
    // A few multiplications per task: long enough that the kill lands while tasks run.
    let b = Builder::new("square_plus_one");
    let x = b.input("x", Uint(8));
    b.output("y", &(&(&x * &x) + 1));
    let circuit = b.build().unwrap();
    c.deploy_function(circuit.canonical_json()).await.unwrap();
    let mut ids = Vec::new();
    for i in 0..TASKS {
        let x = i * 29 % 256;
        let enc =
            tenebra_client::encrypt_circuit(client_keys(), &circuit, &json!({ "x": x })).unwrap();
        ids.push((x, c.submit_task(enc, None).await.unwrap().id));
    }
    // Once the first task is done, the database dies under the others.
    ended(&c, &ids[0].1).await;
    let mut pending = 0;
    for (_, id) in &ids {
        if !c.task(id).await.unwrap().is_final() {
            pending += 1;
        }
    }
    assert!(
        pending > 0,
        "every task ended before the kill: nothing was tested"
    );
    pg.kill();

    // Down: the API still answers, within the pool's acquire timeout: 503 and when to retry.
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let ready = http.get(format!("{}/readyz", h.base)).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    let r = http
        .get(format!("{}/v1/tasks/{}", h.base, ids[1].1))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "2");
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "database_unavailable");
    tokio::time::sleep(Duration::from_secs(2)).await;
    pg.up();

    // Up again: the node and the worker reconnect; a task submitted now runs too.
    let enc =
        tenebra_client::encrypt_circuit(client_keys(), &circuit, &json!({ "x": 255 })).unwrap();
    let submit_guard = Instant::now() + Duration::from_secs(60);
    let late = loop {
        match c.submit_task(enc.clone(), Some("after-restart")).await {
            Ok(t) => break t.id,
            Err(e) => {
                assert!(
                    Instant::now() < submit_guard,
                    "no submit after the restart: {e}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    ids.push((255, late));
    for (x, id) in &ids {
        let t = ended(&c, id).await;
        assert_eq!(t.status, "succeeded", "{t:?}");
        let res = c.task_result(id).await.unwrap();
        let got = tenebra_client::decrypt_circuit(client_keys(), &circuit, &res).unwrap();
        assert_eq!(got, json!({ "y": (x * x + 1) % 256 }), "task {id}");
    }
    // Billed once each: one usage record per task.
    let usage = c.usage(&[("limit", "100".to_owned())]).await.unwrap();
    let mut charged: Vec<&str> = usage.records.iter().map(|r| r.task_id.as_str()).collect();
    charged.sort();
    let mut want: Vec<&str> = ids.iter().map(|(_, id)| id.as_str()).collect();
    want.sort();
    assert_eq!(charged, want, "one usage record per task, no more");
    let check = h.state.store.verify_audit().await.unwrap();
    assert_eq!(check.first_bad, None);
    let _ = stop_worker.send(true);
    worker.await.unwrap().unwrap();
    h.stop().await;
    drop(pg);
}
