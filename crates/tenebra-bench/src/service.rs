//! What the service adds to a computation: the same encrypted input evaluated directly with
//! the engine (key loaded, in this process) and through the embedded service over HTTP
//! (submit, long-poll, download), alternating, in one run.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use serde_json::json;
use tenebra_client::http::Client;
use tenebra_client::{decrypt, encrypt};
use tenebra_engine::{ClientKeys, RunOptions, ServerKeys};
use tenebra_functions::find;
use tenebra_server::worker::WorkerConfig;
use tenebra_server::{Node, Settings};

use crate::{machine, median, today};

type Error = Box<dyn std::error::Error + Send + Sync>;

/// One case's medians, in seconds.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceRow {
    pub label: String,
    /// `evaluate_bundle` in this process, key loaded.
    pub direct_s: f64,
    /// The task's wall time as the worker records it.
    pub worker_wall_s: f64,
    /// Submit, long-poll and download, as the client sees it.
    pub client_e2e_s: f64,
    /// The first task of the key set (it also decompresses the evaluation key).
    pub cold_s: Option<f64>,
}

/// What `bench service` measured.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceBench {
    pub rows: Vec<ServiceRow>,
    pub reps: usize,
    pub upload_s: f64,
    pub upload_bytes: usize,
}

/// Measures each built-in case `reps` times with the key set in `keys_dir` (loaded as
/// `client` and `server`), against a service started for the run in a temporary directory;
/// every result is decrypted and checked against the plaintext reference.
pub fn bench_service(
    keys_dir: &Path,
    client: &ClientKeys,
    server: ServerKeys,
    reps: usize,
    log: &mut dyn FnMut(&str),
) -> Result<ServiceBench, Error> {
    let reps = reps.max(1);
    let tmp = tempfile::tempdir()?;
    let settings = Settings {
        data_dir: tmp.path().join("data"),
        ..Settings::default()
    };
    let cases = [
        (
            "weight_stats, 5 values",
            "weight_stats",
            json!({"weights": [680, 650, 690, 700, 705]}),
        ),
        (
            "sleep_quality, 5-record night",
            "sleep_quality",
            json!({"records": [[0,0,120],[3,120,150],[0,150,210],[4,210,240],[0,240,300]]}),
        ),
    ];
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let node = Node::start(&settings, listener, Some(WorkerConfig::default())).await?;
        let (_, token) = tenebra_server::create_tenant(node.state(), "bench")
            .await
            .map_err(|e| e.message)?;
        let http = Client::new(&node.url(), &token);
        let upload = tenebra_engine::keys::read_upload(keys_dir)?;
        let upload_bytes = upload.len();
        let started = Instant::now();
        http.upload_key_set(upload).await?;
        let upload_s = started.elapsed().as_secs_f64();
        let server = Arc::new(server);
        let through_service = |enc: Vec<u8>| {
            let http = &http;
            async move {
                let t = Instant::now();
                let task = http.submit_task(enc, None).await?;
                let task = http.wait_task(&task.id, |_| {}).await?;
                if task.status != "succeeded" {
                    return Err(
                        format!("task {} {}: {:?}", task.id, task.status, task.error).into(),
                    );
                }
                let res = http.task_result(&task.id).await?;
                Ok::<_, Error>((t.elapsed().as_secs_f64(), task, res))
            }
        };
        // The first task of a key set also decompresses its evaluation key.
        let warm_up = encrypt(client, find(cases[0].1)?, &cases[0].2)?;
        let (cold, _, _) = through_service(warm_up).await?;
        let mut rows = Vec::new();
        for (label, name, input) in &cases {
            let f = find(name)?;
            let enc = encrypt(client, f, input)?;
            let (mut direct, mut e2e, mut wall) = (Vec::new(), Vec::new(), Vec::new());
            for _ in 0..reps {
                let (keys, bytes) = (server.clone(), enc.clone());
                let d = tokio::task::spawn_blocking(move || {
                    let t = Instant::now();
                    tenebra_engine::evaluate_bundle(
                        &keys,
                        &bytes,
                        tenebra_client::builtin_circuit,
                        RunOptions::default(),
                    )
                    .map(|_| t.elapsed().as_secs_f64())
                })
                .await??;
                let (s, task, res) = through_service(enc.clone()).await?;
                if decrypt(client, f, &res)? != f.simulate(input)? {
                    return Err(format!(
                        "{label}: the service's result differs from the plaintext reference"
                    )
                    .into());
                }
                log(&format!(
                    "{label}: direct {d:.2} s, through the service {s:.2} s"
                ));
                direct.push(d);
                e2e.push(s);
                wall.push(task.wall_ms.unwrap_or(0) as f64 / 1000.0);
            }
            let first = rows.is_empty();
            rows.push(ServiceRow {
                label: label.to_string(),
                direct_s: median(&direct),
                worker_wall_s: median(&wall),
                client_e2e_s: median(&e2e),
                cold_s: first.then_some(cold),
            });
        }
        node.stop().await?;
        Ok(ServiceBench {
            rows,
            reps,
            upload_s,
            upload_bytes,
        })
    })
}

/// The BENCHMARKS.md section ([`crate::doc::SERVICE`], markers included).
pub fn service_report(b: &ServiceBench) -> String {
    let mut s = format!(
        "## Through the service\n\nMeasured on {} with `tenebra bench service` on {} ({} \
         repetition(s), medians, warm key cache). **direct**: `evaluate_bundle` in-process with \
         the key loaded; **worker wall**: the task's wall time as the worker records it; \
         **client e2e**: submit over HTTP, long-poll, download, as the client sees it (embedded \
         SQLite, in-process worker). The first task of a key set also decompresses its \
         evaluation key (cold).\n\n",
        machine(),
        today(),
        b.reps
    );
    s.push_str(
        "| case | direct (s) | worker wall (s) | client e2e (s) | service overhead (ms) | cold \
         first task (s) |\n|---|---:|---:|---:|---:|---:|\n",
    );
    for r in &b.rows {
        s.push_str(&format!(
            "| {} | {:.2} | {:.2} | {:.2} | {:.0} | {} |\n",
            r.label,
            r.direct_s,
            r.worker_wall_s,
            r.client_e2e_s,
            (r.client_e2e_s - r.direct_s) * 1000.0,
            r.cold_s.map_or("-".to_owned(), |c| format!("{c:.2}"))
        ));
    }
    s.push_str(
        "\nThe overhead is client e2e minus direct, from alternating runs: a few hundred ms \
         either way is run-to-run noise on 2 cores (the worker makes the same engine call).\n",
    );
    s.push_str(&format!(
        "\nKey set upload ({} bytes, streamed, conformance-checked): {:.2} s over loopback.\n",
        b.upload_bytes, b.upload_s
    ));
    crate::doc::SERVICE.wrap(&s)
}
