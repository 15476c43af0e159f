//! The service's own cost, where a real FHE task would hide it: a one-input identity
//! circuit (no bootstrapping, a few ms of FHE) through the whole service (submit, queue,
//! claim, run, finish, long poll, download) by N concurrent clients, on SQLite or
//! PostgreSQL; and the queue alone (tasks claimed and finished per second by W workers,
//! no FHE), on either backend.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use tenebra_circuit::builder::Builder;
use tenebra_circuit::ScalarType::Uint;
use tenebra_client::http::Client;
use tenebra_client::{decrypt_circuit, encrypt_circuit};
use tenebra_engine::ClientKeys;
use tenebra_server::worker::WorkerConfig;
use tenebra_server::{Node, Settings};
use tenebra_store::{NewTask, Outcome};

use crate::{machine, today};

type Error = Box<dyn std::error::Error + Send + Sync>;

/// One backend's end-to-end numbers, in milliseconds.
#[derive(Debug, Clone, PartialEq)]
pub struct OverheadRow {
    pub backend: &'static str,
    pub clients: usize,
    pub tasks: usize,
    /// Submit to downloaded result, as a client sees it.
    pub e2e_p50_ms: f64,
    pub e2e_p99_ms: f64,
    /// The task's run as its worker records it (the FHE part and the blob reads).
    pub wall_p50_ms: f64,
    /// e2e minus wall, task by task: what the service adds.
    pub overhead_p50_ms: f64,
    pub overhead_p99_ms: f64,
    /// The submit request alone (body upload, checks, input blob, row).
    pub submit_p50_ms: f64,
    /// The result download alone.
    pub download_p50_ms: f64,
}

/// One task's times as its client saw them, in milliseconds.
struct Run {
    e2e: f64,
    wall: f64,
    submit: f64,
    download: f64,
}

/// One backend's queue throughput.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueRow {
    pub backend: &'static str,
    pub workers: usize,
    pub tasks: usize,
    /// Tasks claimed and finished per second.
    pub per_second: f64,
}

/// The `p`-quantile (0..=1) of `xs`, nearest rank.
pub fn quantile(xs: &[f64], p: f64) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return f64::NAN;
    }
    let rank = ((p * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}

fn backend(database_url: Option<&str>) -> &'static str {
    if database_url.is_some() {
        "PostgreSQL"
    } else {
        "SQLite (embedded)"
    }
}

fn settings(dir: &Path, database_url: Option<&str>) -> Settings {
    Settings {
        data_dir: dir.join("data"),
        database_url: database_url.map(str::to_owned),
        ..Settings::default()
    }
}

/// `clients` concurrent clients each run `tasks` identity tasks one after another through a
/// service started for the run (in-process worker with one slot per client) on SQLite, or
/// on the PostgreSQL at `database_url`; every result is decrypted and checked.
pub fn bench_overhead(
    keys_dir: &Path,
    client: &ClientKeys,
    database_url: Option<&str>,
    clients: usize,
    tasks: usize,
    log: &mut dyn FnMut(&str),
) -> Result<OverheadRow, Error> {
    let (clients, tasks) = (clients.max(1), tasks.max(1));
    let tmp = tempfile::tempdir()?;
    let settings = settings(tmp.path(), database_url);
    let b = Builder::new("bench_identity");
    let x = b.input("x", Uint(8));
    b.output("y", &x);
    let circuit = Arc::new(b.build()?);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let workers = WorkerConfig {
            concurrency: clients,
            ..WorkerConfig::default()
        };
        let node = Node::start(&settings, listener, Some(workers)).await?;
        let tenant = format!("bench-{}", &tenebra_store::new_id("t")[2..10]);
        let (_, token) = tenebra_server::create_tenant(node.state(), &tenant)
            .await
            .map_err(|e| e.message)?;
        let http = Client::new(&node.url(), &token);
        http.upload_key_set(tenebra_engine::keys::read_upload(keys_dir)?)
            .await?;
        http.deploy_function(circuit.canonical_json()).await?;
        // One warm-up task decompresses the evaluation key into the worker's cache.
        let input = json!({"x": 201});
        let enc = encrypt_circuit(client, &circuit, &input)?;
        let one = |http: Client, enc: Vec<u8>| async move {
            let ms = |t: Instant| t.elapsed().as_secs_f64() * 1000.0;
            let started = Instant::now();
            let t = http.submit_task(enc, None).await?;
            let submit = ms(started);
            let t = http.wait_task(&t.id, |_| {}).await?;
            if t.status != "succeeded" {
                return Err::<_, Error>(
                    format!("task {} {}: {:?}", t.id, t.status, t.error).into(),
                );
            }
            let fetched = Instant::now();
            let res = http.task_result(&t.id).await?;
            let r = Run {
                e2e: ms(started),
                wall: t.wall_ms.unwrap_or(0) as f64,
                submit,
                download: ms(fetched),
            };
            Ok((r, res))
        };
        one(http.clone(), enc.clone()).await?;
        log(&format!(
            "{}: {clients} clients x {tasks} tasks",
            backend(database_url)
        ));
        let mut runs = Vec::new();
        for _ in 0..clients {
            let (http, enc) = (http.clone(), enc.clone());
            runs.push(tokio::spawn(async move {
                let mut out = Vec::with_capacity(tasks);
                for _ in 0..tasks {
                    out.push(one(http.clone(), enc.clone()).await?);
                }
                Ok::<_, Error>(out)
            }));
        }
        let mut all = Vec::new();
        for r in runs {
            for (run, res) in r.await?? {
                if decrypt_circuit(client, &circuit, &res)? != json!({"y": 201}) {
                    return Err::<_, Error>("the identity circuit's result is wrong".into());
                }
                all.push(run);
            }
        }
        node.stop().await?;
        let of = |f: fn(&Run) -> f64| all.iter().map(f).collect::<Vec<f64>>();
        let (e2e, wall, over) = (of(|r| r.e2e), of(|r| r.wall), of(|r| r.e2e - r.wall));
        Ok(OverheadRow {
            backend: backend(database_url),
            clients,
            tasks: all.len(),
            e2e_p50_ms: quantile(&e2e, 0.5),
            e2e_p99_ms: quantile(&e2e, 0.99),
            wall_p50_ms: quantile(&wall, 0.5),
            overhead_p50_ms: quantile(&over, 0.5),
            overhead_p99_ms: quantile(&over, 0.99),
            submit_p50_ms: quantile(&of(|r| r.submit), 0.5),
            download_p50_ms: quantile(&of(|r| r.download), 0.5),
        })
    })
}

/// The queue alone: `tasks` rows queued at once, then `workers` concurrent loops claim and
/// finish them (as workers do, lease and fence included, usage records and audit records
/// written) until none is left; no FHE and no blobs.
pub fn bench_queue(
    database_url: Option<&str>,
    workers: usize,
    tasks: usize,
    log: &mut dyn FnMut(&str),
) -> Result<QueueRow, Error> {
    let (workers, tasks) = (workers.max(1), tasks.max(1));
    let tmp = tempfile::tempdir()?;
    let settings = settings(tmp.path(), database_url);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let state = tenebra_server::open(&settings).await?;
        let store = state.store.clone();
        let tenant = store
            .create_tenant(&format!("queue-{}", &tenebra_store::new_id("t")[2..10]))
            .await?;
        let set = store
            .create_key_set(&tenant.id, &tenebra_store::new_id("ks"), "bench", 1, None)
            .await?;
        for _ in 0..tasks {
            let new = NewTask {
                id: tenebra_store::new_id("task"),
                api_key_id: "bench".into(),
                function: "weight_stats".into(),
                size: 1,
                circuit_id: "bench".into(),
                key_set_id: set.id.clone(),
                idempotency_key: None,
                input_sha256: "bench".into(),
                input_bytes: 1,
                cost_cu: 1,
            };
            store.submit_task(&tenant.id, &new).await?;
        }
        log(&format!(
            "{}: {tasks} tasks queued, {workers} workers",
            backend(database_url)
        ));
        let started = Instant::now();
        let mut loops = Vec::new();
        for w in 0..workers {
            let store = store.clone();
            loops.push(tokio::spawn(async move {
                let id = format!("bench-worker-{w}");
                let mut done = 0usize;
                while let Some(t) = store.claim_task(&id, Duration::from_secs(60), 3).await? {
                    let outcome = Outcome::Succeeded {
                        result_bytes: 1,
                        expires_at: tenebra_store::now_ms() + 3_600_000,
                    };
                    store.finish_task(&t.id, t.fence, &outcome, 0).await?;
                    done += 1;
                }
                Ok::<_, Error>(done)
            }));
        }
        let mut done = 0;
        for l in loops {
            done += l.await??;
        }
        let secs = started.elapsed().as_secs_f64();
        store.close().await;
        if done != tasks {
            return Err(format!("{done} of {tasks} tasks finished").into());
        }
        Ok(QueueRow {
            backend: backend(database_url),
            workers,
            tasks,
            per_second: tasks as f64 / secs,
        })
    })
}

/// The BENCHMARKS.md section ([`crate::doc::OVERHEAD`], markers included).
pub fn overhead_report(rows: &[OverheadRow], queue: &[QueueRow]) -> String {
    let mut s = format!(
        "## The service's own cost\n\nMeasured on {} with `tenebra bench overhead` on {}. \
         A one-input identity circuit (a few ms of FHE, no bootstrapping) through the whole \
         service: submit over HTTP, queue, claim, run, finish, long poll, download, by \
         concurrent clients each running its tasks one after another; **wall** is the run as \
         the worker records it, **overhead** is e2e minus wall, task by task (in-process \
         worker with a slot per client; the API node and the worker share the 2 cores).\n\n\
         | backend | clients | tasks | e2e p50 (ms) | e2e p99 (ms) | wall p50 (ms) | \
         overhead p50 (ms) | overhead p99 (ms) | of which submit p50 (ms) | download p50 (ms) \
         |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
        machine(),
        today(),
    );
    for r in rows {
        s.push_str(&format!(
            "| {} | {} | {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} |\n",
            r.backend,
            r.clients,
            r.tasks,
            r.e2e_p50_ms,
            r.e2e_p99_ms,
            r.wall_p50_ms,
            r.overhead_p50_ms,
            r.overhead_p99_ms,
            r.submit_p50_ms,
            r.download_p50_ms
        ));
    }
    s.push_str(
        "\nThe queue alone: tasks queued at once, then concurrent worker loops claim and \
         finish them (lease, fence, usage record and audit record each, as a worker does; no \
         FHE, no blobs).\n\n| backend | workers | tasks | claimed and finished per s |\n\
         |---|---:|---:|---:|\n",
    );
    for q in queue {
        s.push_str(&format!(
            "| {} | {} | {} | {:.0} |\n",
            q.backend, q.workers, q.tasks, q.per_second
        ));
    }
    crate::doc::OVERHEAD.wrap(&s)
}
