//! Commands that run the service: `serve`, `worker`, and the `demo` (the service with
//! embedded defaults, then a client of it). All start it through `tenebra_server::Node`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use tenebra_client::http::Client;
use tenebra_client::ClientKeys;
use tenebra_functions::find;
use tenebra_server::dispatch::{DispatchConfig, Executor};
use tenebra_server::worker::{self, WorkerConfig};
use tenebra_server::{Node, Settings, Workers};
use tokio::sync::watch;

use crate::args::{StorageArgs, WorkerArgs};
use crate::io::{load_client_keys, runtime, shutdown_signal};
use crate::output::run_with_bar;

/// `tenebra serve`: the API, plus an in-process worker unless `no_worker`, or a dispatcher
/// to the serverless `executor`.
pub fn serve(
    listen: &str,
    storage: &StorageArgs,
    workers: &WorkerArgs,
    no_worker: bool,
    executor: Option<&str>,
) -> Result<()> {
    let cfg = workers.config()?;
    let run = match executor {
        Some(spec) => Workers::Dispatch(DispatchConfig {
            executor: Executor::parse(spec)?,
            lease: cfg.lease,
            poll: cfg.poll,
        }),
        None if no_worker => Workers::None,
        None => Workers::InProcess(cfg),
    };
    runtime()?.block_on(async {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("listening on {listen}"))?;
        let node = Node::start(&storage.settings(), listener, run).await?;
        eprintln!("tenebra listening on {}", node.url());
        node.run_until(shutdown_signal()).await?;
        eprintln!("tenebra stopped");
        Ok(())
    })
}

/// `tenebra worker`: claims and runs tasks until SIGINT/SIGTERM; with `metrics_listen`,
/// also serves `/metrics` and `/healthz` there until it stops.
pub fn worker(
    storage: &StorageArgs,
    workers: &WorkerArgs,
    metrics_listen: Option<&str>,
) -> Result<()> {
    let cfg = workers.config()?;
    let settings = storage.settings();
    if metrics_listen.is_some() && settings.metrics_token.is_none() {
        bail!("--metrics-listen needs --metrics-token (TENEBRA_METRICS_TOKEN): /metrics answers only that token");
    }
    runtime()?.block_on(async {
        let state = tenebra_server::open(&settings).await?;
        let (stop, rx) = watch::channel(false);
        let metrics = match metrics_listen {
            Some(addr) => {
                let listener = tokio::net::TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("listening on {addr}"))?;
                eprintln!(
                    "worker metrics on http://{}/metrics",
                    listener.local_addr()?
                );
                // Stopped by the abort below, once the worker has stopped.
                Some(tokio::spawn(tenebra_server::serve_metrics(
                    listener,
                    state.clone(),
                    std::future::pending(),
                )))
            }
            None => None,
        };
        eprintln!("tenebra worker {} started", cfg.id);
        tokio::spawn(async move {
            shutdown_signal().await;
            let _ = stop.send(true);
        });
        let ran = worker::run(state.clone(), cfg, rx).await;
        if let Some(m) = metrics {
            // The worker stopped on the signal that stops the endpoint too (or on an
            // error: then the endpoint goes with the process).
            m.abort();
        }
        state.store.close().await;
        ran?;
        eprintln!("tenebra worker stopped");
        Ok(())
    })
}

/// The README's main job: start the service with embedded defaults, then act as a client:
/// keys, upload, and every built-in encrypted, run by the service, decrypted, and checked
/// against its plaintext reference.
pub fn demo(keys: Option<PathBuf>, data_dir: Option<PathBuf>) -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let keys = keys.unwrap_or_else(|| tmp.path().join("keys"));
    let data_dir = data_dir.unwrap_or_else(|| tmp.path().join("data"));
    runtime()?.block_on(async {
        let settings = Settings {
            data_dir: data_dir.clone(),
            ..Settings::default()
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let node = Node::start(&settings, listener, Some(WorkerConfig::default())).await?;
        let (url, state) = (node.url(), node.state().clone());
        eprintln!(
            "service on {url} (SQLite and blobs in {}, in-process worker)",
            data_dir.display()
        );
        let tenant = format!("demo-{}", &tenebra_store::new_id("t")[2..10]);
        let (_, token) = tenebra_server::create_tenant(&state, &tenant)
            .await
            .map_err(|e| anyhow::anyhow!("{}", e.message))?;
        let outcome = demo_client(&url, &token, &keys).await;
        let outcome = match outcome {
            Ok(()) => demo_accounts(&url, &token, &state).await,
            Err(e) => Err(e),
        };
        node.stop().await?;
        outcome
    })
}

/// What the demo's tasks cost, and the audit log they left.
async fn demo_accounts(url: &str, token: &str, state: &tenebra_server::AppState) -> Result<()> {
    let client = Client::new(url, token);
    let usage = client.usage(&[]).await?;
    let invoice = client.invoice(None).await?;
    println!(
        "usage: {} tasks, {} CU charged; invoice {}: {} nano-units (equals the records' sum: {})",
        usage.totals.tasks,
        usage.totals.charged_cu,
        invoice.period,
        invoice.total_nanos,
        invoice.total_nanos == usage.totals.amount_nanos
    );
    tenebra_server::audit::checkpoint(state).await?;
    let audit = tenebra_server::audit::verify(state).await?;
    println!(
        "audit log: {} records, {} signed checkpoint(s), verified: {}",
        audit.records, audit.checkpoints, audit.ok
    );
    if !audit.ok || invoice.total_nanos != usage.totals.amount_nanos {
        bail!("the demo's usage or audit log does not add up");
    }
    Ok(())
}

async fn demo_client(url: &str, token: &str, dir: &Path) -> Result<()> {
    let client = Client::new(url, token);
    let dir_owned = dir.to_owned();
    let keys = tokio::task::spawn_blocking(move || -> Result<ClientKeys> {
        if !dir_owned.join(tenebra_engine::keys::MANIFEST_FILE).exists() {
            eprintln!(
                "client: generating a key set in {} ...",
                dir_owned.display()
            );
            ClientKeys::generate(&dir_owned)?;
        }
        load_client_keys(&dir_owned)
    })
    .await??;
    let started = Instant::now();
    client.ensure_key_set(&keys.id().to_string(), dir).await?;
    eprintln!(
        "client: key set uploaded in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let samples = [
        (
            "weight_stats",
            serde_json::json!({"weights": [680, 650, 690, 700, 705]}),
        ),
        (
            "sleep_quality",
            serde_json::json!({"records": [[0,0,120],[3,120,150],[0,150,210],[4,210,240],[0,240,300]]}),
        ),
    ];
    for (name, input) in samples {
        let started = Instant::now();
        let done = run_with_bar(&client, dir, name, &input).await?;
        let e2e = started.elapsed().as_secs_f64();
        let want = find(name)?.simulate(&input)?;
        println!("{name}: input {input}");
        println!(
            "  encrypted result {}  (task {}: {} CU, server {:.2} s, end to end {e2e:.2} s, \
             {} bytes in, {} bytes out)",
            done.output,
            done.task.id,
            done.task.cost_cu,
            done.task.wall_ms.unwrap_or(0) as f64 / 1000.0,
            done.input_bytes,
            done.result_bytes
        );
        println!("  plaintext check  {want}");
        if done.output != want {
            bail!("{name}: the decrypted result differs from the plaintext simulation");
        }
    }
    // The BFV built-in: a profile scored against the 4954-ad catalogue (the BFV keys are
    // made on first use).
    let ads = tenebra_functions::find_bfv("ad_targeting")
        .ok_or_else(|| anyhow::anyhow!("ad_targeting is missing"))?;
    let mut profile = vec![0u8; 62];
    for i in [0, 4, 8, 20, 47, 56] {
        profile[i] = 1; // female, 20-45, en, US, Music, Sports
    }
    let input = serde_json::json!({ "profile": profile });
    let started = Instant::now();
    let done = run_with_bar(&client, dir, ads.name, &input).await?;
    let e2e = started.elapsed().as_secs_f64();
    let key_set = tenebra_client::bfv::BfvKeys::load_key_set(dir, ads.circuit())?;
    let want = ads.simulate(&input)?;
    println!("ad_targeting: profile {}", input["profile"]);
    println!(
        "  encrypted result: top ads {}  (task {}: {} CU, server {} ms, end to end {:.0} ms, \
         {} bytes in, {} bytes out, BFV key set {} bytes)",
        done.output["top"],
        done.task.id,
        done.task.cost_cu,
        done.task.wall_ms.unwrap_or(0),
        e2e * 1e3,
        done.input_bytes,
        done.result_bytes,
        key_set.bytes().len()
    );
    println!("  plaintext check: top ads {}", want["top"]);
    if done.output != want {
        bail!("ad_targeting: the decrypted scores differ from the plaintext simulation");
    }
    println!(
        "demo ok: every encrypted result computed by the service matches its plaintext reference"
    );
    Ok(())
}
