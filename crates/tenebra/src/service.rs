//! Commands that run or talk to the service: `serve`, `worker`, `run`, `task ...`, `demo`.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use tenebra_client::http::{Client, Task};
use tenebra_client::{decrypt, encrypt, ClientKeys};
use tenebra_functions::find;
use tenebra_server::worker::{self, WorkerConfig, KEY_SET_MEMORY};
use tokio::sync::watch;

use crate::cli::{load_client_keys, print_json, read_json, runtime, ServerArgs, StorageArgs};

/// How workers behave (`tenebra worker`, and the embedded workers of `tenebra serve`).
#[derive(Debug, clap::Args)]
pub struct WorkerArgs {
    /// Tasks a worker runs at once (each already uses every core).
    #[arg(long, env = "TENEBRA_WORKER_CONCURRENCY", default_value_t = 1)]
    concurrency: usize,
    /// Lease of a claimed task in seconds; another worker takes over a task whose worker
    /// stopped renewing it for this long.
    #[arg(long, env = "TENEBRA_LEASE_SECS", default_value_t = 30)]
    lease_secs: u64,
    /// Runs of a task before it fails for good (after crashes or internal errors).
    #[arg(long, env = "TENEBRA_MAX_ATTEMPTS", default_value_t = 3)]
    max_attempts: u32,
    /// Memory for decompressed evaluation keys, in MiB (~200 MiB per key set).
    #[arg(long, env = "TENEBRA_KEY_CACHE_MIB", default_value_t = 800)]
    key_cache_mib: u64,
    /// How long results are kept, in seconds.
    #[arg(long, env = "TENEBRA_RESULT_TTL_SECS", default_value_t = 86_400)]
    result_ttl_secs: u64,
    /// Seconds running tasks may finish after SIGTERM before they go back to the queue.
    #[arg(long, env = "TENEBRA_SHUTDOWN_GRACE_SECS", default_value_t = 10)]
    shutdown_grace_secs: u64,
}

impl WorkerArgs {
    fn config(&self) -> Result<WorkerConfig> {
        if self.lease_secs < 3 {
            bail!("--lease-secs must be at least 3");
        }
        Ok(WorkerConfig {
            concurrency: self.concurrency.max(1),
            lease: Duration::from_secs(self.lease_secs),
            max_attempts: self.max_attempts.max(1),
            key_cache_bytes: (self.key_cache_mib << 20).max(KEY_SET_MEMORY),
            result_ttl: Duration::from_secs(self.result_ttl_secs),
            shutdown_grace: Duration::from_secs(self.shutdown_grace_secs),
            ..WorkerConfig::default()
        })
    }
}

/// Task commands.
#[derive(Debug, clap::Subcommand)]
pub enum TaskCommand {
    /// Submit an encrypted input (from `tenebra encrypt`); prints the task id.
    Submit {
        #[arg(long)]
        input: PathBuf,
        /// Submitting again with the same key returns the same task.
        #[arg(long)]
        idempotency_key: Option<String>,
    },
    /// Print a task's status as JSON.
    Status { id: String },
    /// Wait until a task ends (progress on stderr); prints its final status as JSON.
    Wait { id: String },
    /// Download a succeeded task's encrypted result.
    Result {
        id: String,
        #[arg(long)]
        out: PathBuf,
    },
    /// Cancel a task (a running one stops at its next step).
    Cancel { id: String },
    /// List tasks, newest first.
    List {
        /// Only tasks in this status (queued, running, succeeded, failed, cancelled, expired).
        #[arg(long)]
        status: Option<String>,
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
}

/// A stop signal for servers and workers: turns true on SIGINT/SIGTERM.
fn stop_on_signal() -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        let _ = tx.send(true);
    });
    rx
}

async fn stopped(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

/// `tenebra serve`: the API, plus in-process workers unless `no_worker`.
pub fn serve(
    listen: &str,
    storage: &StorageArgs,
    workers: &WorkerArgs,
    no_worker: bool,
) -> Result<()> {
    let cfg = workers.config()?;
    runtime()?.block_on(async {
        let state = tenebra_server::open(&storage.settings())
            .await
            .map_err(anyhow::Error::msg)?;
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("listening on {listen}"))?;
        eprintln!("tenebra listening on http://{}", listener.local_addr()?);
        let stop = stop_on_signal();
        let worker =
            (!no_worker).then(|| tokio::spawn(worker::run(state.clone(), cfg, stop.clone())));
        tenebra_server::serve(listener, state.clone(), stopped(stop)).await?;
        if let Some(w) = worker {
            w.await??;
        }
        state.store.close().await;
        eprintln!("tenebra stopped");
        Ok(())
    })
}

/// `tenebra worker`: claims and runs tasks until SIGINT/SIGTERM.
pub fn worker(storage: &StorageArgs, workers: &WorkerArgs) -> Result<()> {
    let cfg = workers.config()?;
    runtime()?.block_on(async {
        let state = tenebra_server::open(&storage.settings())
            .await
            .map_err(anyhow::Error::msg)?;
        eprintln!("tenebra worker {} started", cfg.id);
        worker::run(state.clone(), cfg, stop_on_signal()).await?;
        state.store.close().await;
        eprintln!("tenebra worker stopped");
        Ok(())
    })
}

/// Completes on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}

/// A progress bar on stderr (when it is a terminal) that follows a task's status.
struct TaskBar(Option<indicatif::ProgressBar>);

impl TaskBar {
    fn new() -> Self {
        if !std::io::stderr().is_terminal() {
            return Self(None);
        }
        let bar = indicatif::ProgressBar::new(0);
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {msg:9} {bar:40} {pos}/{len} ops",
        ) {
            bar.set_style(style);
        }
        Self(Some(bar))
    }

    fn update(&self, t: &Task) {
        if let Some(b) = &self.0 {
            b.set_message(t.status.clone());
            b.set_length(t.progress.total.max(0) as u64);
            b.set_position(t.progress.done.max(0) as u64);
        }
    }

    fn finish(self) {
        if let Some(b) = self.0 {
            b.finish_and_clear();
        }
    }
}

async fn wait(client: &Client, id: &str) -> Result<Task> {
    let bar = TaskBar::new();
    let t = client.wait_task(id, |t| bar.update(t)).await;
    bar.finish();
    Ok(t?)
}

/// The SDK's whole run of `function` on `input`, with the task's progress bar.
async fn run_with_bar(
    client: &Client,
    keys: &Path,
    function: &str,
    input: &serde_json::Value,
) -> Result<tenebra_client::run::Finished> {
    let bar = TaskBar::new();
    let done = client
        .run_with(keys, function, input, |t| bar.update(t))
        .await;
    bar.finish();
    Ok(done?)
}

/// Fails unless the task succeeded, with its reason.
fn succeeded(t: &Task) -> Result<()> {
    match (t.status.as_str(), &t.error) {
        ("succeeded", _) => Ok(()),
        (_, Some(e)) => bail!("task {} {}: {} ({})", t.id, t.status, e.message, e.code),
        (s, None) => bail!("task {} {s}", t.id),
    }
}

pub fn task(server: &ServerArgs, command: TaskCommand) -> Result<()> {
    let client = server.client()?;
    runtime()?.block_on(async {
        match command {
            TaskCommand::Submit {
                input,
                idempotency_key,
            } => {
                let bytes = crate::cli::read_limited(&input, crate::cli::BUNDLE_LIMIT)?;
                let t = client
                    .submit_task(bytes, idempotency_key.as_deref())
                    .await?;
                eprintln!("task {} {} ({} CU)", t.id, t.status, t.cost_cu);
                println!("{}", t.id);
                Ok(())
            }
            TaskCommand::Status { id } => print_task(&client.task(&id).await?),
            TaskCommand::Wait { id } => {
                let t = wait(&client, &id).await?;
                print_task(&t)?;
                succeeded(&t)
            }
            TaskCommand::Result { id, out } => {
                let bytes = client.task_result(&id).await?;
                crate::cli::write_file(&out, &bytes)
            }
            TaskCommand::Cancel { id } => print_task(&client.cancel_task(&id).await?),
            TaskCommand::List { status, limit } => {
                let page = client.tasks(status.as_deref(), limit, None).await?;
                for t in page.tasks {
                    println!(
                        "{}  {:9}  {}[{}]  {} CU  {}/{} ops",
                        t.id,
                        t.status,
                        t.function,
                        t.size,
                        t.cost_cu,
                        t.progress.done,
                        t.progress.total
                    );
                }
                Ok(())
            }
        }
    })
}

fn print_task(t: &Task) -> Result<()> {
    print_json(&serde_json::to_value(t)?)
}

/// Makes sure the server has the key set in `dir`; returns its server-side id.
async fn ensure_uploaded(client: &Client, keys: &ClientKeys, dir: &Path) -> Result<String> {
    let fingerprint = keys.id().to_string();
    if let Some(k) = client.key_set_by_fingerprint(&fingerprint).await? {
        return Ok(k.id);
    }
    eprintln!("uploading key set {fingerprint} ...");
    let body = tenebra_engine::keys::read_upload(dir)
        .with_context(|| format!("reading keys from {}", dir.display()))?;
    Ok(client.upload_key_set(body).await?.id)
}

/// `tenebra run`: encrypt, upload the key set if needed, submit, wait, download, decrypt,
/// and print the result JSON (the SDK's `Client::run_with`, with a progress bar). `function`
/// is a built-in, a model split or one of the tenant's deployed functions (its latest
/// version).
pub fn run_remote(server: &ServerArgs, keys: &Path, function: &str, input: &Path) -> Result<()> {
    let json = read_json(input)?;
    let client = server.client()?;
    let done = runtime()?.block_on(run_with_bar(&client, keys, function, &json))?;
    print_json(&done.output)
}

/// `tenebra functions list` against a server.
pub fn functions_list(server: &ServerArgs) -> Result<()> {
    let client = server.client()?;
    let functions = runtime()?.block_on(client.functions())?;
    for f in functions {
        match (f.version, &f.at_size) {
            (Some(v), Some(at)) => println!(
                "{} v{v}  {}  ({} CU, circuit {})",
                f.name, f.signature, at.cost_cu, at.circuit_id
            ),
            _ => println!("{}  {}  [{}]", f.name, f.signature, f.kind),
        }
    }
    Ok(())
}

/// `tenebra functions deploy`.
pub fn deploy(server: &ServerArgs, circuit_json: &[u8]) -> Result<()> {
    let client = server.client()?;
    let f = runtime()?.block_on(client.deploy_function(circuit_json.to_vec()))?;
    let at = f.at_size.as_ref();
    eprintln!(
        "deployed {} version {} ({}; circuit {}, {} CU)",
        f.name,
        f.version.unwrap_or(0),
        f.signature,
        at.map_or("?", |a| a.circuit_id.as_str()),
        at.map_or(0, |a| a.cost_cu)
    );
    println!("{}", f.version.unwrap_or(0));
    Ok(())
}

/// `tenebra functions delete`.
pub fn delete_function(server: &ServerArgs, name: &str, version: Option<i64>) -> Result<()> {
    let client = server.client()?;
    runtime()?.block_on(client.delete_function(name, version))?;
    Ok(())
}

/// The service with embedded defaults, in this process, on a free loopback port.
struct Embedded {
    url: String,
    state: tenebra_server::AppState,
    stop: watch::Sender<bool>,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
    worker: tokio::task::JoinHandle<Result<(), tenebra_store::StoreError>>,
}

impl Embedded {
    async fn start(data_dir: &Path) -> Result<Self> {
        let settings = tenebra_server::Settings {
            data_dir: data_dir.to_owned(),
            ..Default::default()
        };
        let state = tenebra_server::open(&settings)
            .await
            .map_err(anyhow::Error::msg)?;
        let (stop, rx) = watch::channel(false);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let server = tokio::spawn(tenebra_server::serve(
            listener,
            state.clone(),
            stopped(rx.clone()),
        ));
        let worker = tokio::spawn(worker::run(state.clone(), WorkerConfig::default(), rx));
        Ok(Self {
            url,
            state,
            stop,
            server,
            worker,
        })
    }

    async fn stop(self) -> Result<()> {
        let _ = self.stop.send(true);
        self.server.await??;
        self.worker.await??;
        self.state.store.close().await;
        Ok(())
    }
}

/// The README's main job: start the service with embedded defaults, then act as a client:
/// keys, upload, and every built-in encrypted, run by the service, decrypted, and checked
/// against its plaintext reference.
pub fn demo(keys: Option<PathBuf>, data_dir: Option<PathBuf>) -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let keys = keys.unwrap_or_else(|| tmp.path().join("keys"));
    let data_dir = data_dir.unwrap_or_else(|| tmp.path().join("data"));
    runtime()?.block_on(async {
        let service = Embedded::start(&data_dir).await?;
        let (url, state) = (service.url.clone(), service.state.clone());
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
        service.stop().await?;
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
    tenebra_server::audit::checkpoint(state)
        .await
        .map_err(anyhow::Error::msg)?;
    let audit = tenebra_server::audit::verify(state)
        .await
        .map_err(anyhow::Error::msg)?;
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
    ensure_uploaded(&client, &keys, dir).await?;
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

/// Markers of the service section in BENCHMARKS.md (`bench compare` writes the rest).
const SECTION_START: &str = "<!-- bench service -->";
const SECTION_END: &str = "<!-- /bench service -->";

/// `tenebra bench service`: what the service adds to a computation. The same encrypted
/// input is evaluated directly with the engine (key loaded, in this process) and through
/// the embedded service over HTTP (submit, long-poll, download), alternating, in one run.
pub fn bench_service(keys_dir: &Path, reps: usize, write: Option<PathBuf>) -> Result<()> {
    let (client_keys, server_keys) = crate::cli::ensure_keys(keys_dir)?;
    let tmp = tempfile::tempdir()?;
    let cases = [
        (
            "weight_stats, 5 values",
            "weight_stats",
            serde_json::json!({"weights": [680, 650, 690, 700, 705]}),
        ),
        (
            "sleep_quality, 5-record night",
            "sleep_quality",
            serde_json::json!({"records": [[0,0,120],[3,120,150],[0,150,210],[4,210,240],[0,240,300]]}),
        ),
    ];
    let rows = runtime()?.block_on(async {
        let service = Embedded::start(&tmp.path().join("data")).await?;
        let (url, state) = (service.url.clone(), service.state.clone());
        let (_, token) = tenebra_server::create_tenant(&state, "bench")
            .await
            .map_err(|e| anyhow::anyhow!("{}", e.message))?;
        let client = Client::new(&url, &token);
        let upload = tenebra_engine::keys::read_upload(keys_dir)?;
        let upload_bytes = upload.len();
        let started = Instant::now();
        client.upload_key_set(upload).await?;
        let upload_s = started.elapsed().as_secs_f64();
        let server_keys = std::sync::Arc::new(server_keys);
        let run = |enc: Vec<u8>| {
            let client = &client;
            async move {
                let t = Instant::now();
                let task = client.submit_task(enc, None).await?;
                let task = client.wait_task(&task.id, |_| {}).await?;
                succeeded(&task)?;
                let res = client.task_result(&task.id).await?;
                anyhow::Ok((t.elapsed().as_secs_f64(), task, res))
            }
        };
        // The first task of a key set also decompresses its evaluation key.
        let warm_up = encrypt(&client_keys, find(cases[0].1)?, &cases[0].2)?;
        let (cold, _, _) = run(warm_up).await?;
        let mut rows = Vec::new();
        for (label, name, input) in &cases {
            let f = find(name)?;
            let enc = encrypt(&client_keys, f, input)?;
            let (mut direct, mut e2e, mut wall) = (Vec::new(), Vec::new(), Vec::new());
            for _ in 0..reps.max(1) {
                let (keys, bytes) = (server_keys.clone(), enc.clone());
                let d = tokio::task::spawn_blocking(move || {
                    let t = Instant::now();
                    let opts = tenebra_engine::RunOptions::default();
                    tenebra_engine::evaluate_bundle(
                        &keys,
                        &bytes,
                        tenebra_client::builtin_circuit,
                        opts,
                    )
                    .map(|_| t.elapsed().as_secs_f64())
                })
                .await??;
                let (s, task, res) = run(enc.clone()).await?;
                if decrypt(&client_keys, f, &res)? != f.simulate(input)? {
                    bail!("{label}: the service's result differs from the plaintext reference");
                }
                eprintln!("{label}: direct {d:.2} s, through the service {s:.2} s");
                direct.push(d);
                e2e.push(s);
                wall.push(task.wall_ms.unwrap_or(0) as f64 / 1000.0);
            }
            let first = rows.is_empty();
            rows.push((
                label.to_string(),
                tenebra_bench::median(&direct),
                tenebra_bench::median(&wall),
                tenebra_bench::median(&e2e),
                first.then_some(cold),
            ));
        }
        service.stop().await?;
        anyhow::Ok((rows, upload_s, upload_bytes))
    })?;
    let (rows, upload_s, upload_bytes) = rows;
    let mut s = String::new();
    s.push_str(SECTION_START);
    s.push_str(&format!(
        "\n## Through the service\n\nMeasured on {} with `tenebra bench service` on {} ({reps} \
         repetition(s), medians, warm key cache). **direct**: `evaluate_bundle` in-process with \
         the key loaded; **worker wall**: the task's wall time as the worker records it; \
         **client e2e**: submit over HTTP, long-poll, download, as the client sees it (embedded \
         SQLite, in-process worker). The first task of a key set also decompresses its \
         evaluation key (cold).\n\n",
        tenebra_bench::machine(),
        tenebra_bench::today()
    ));
    s.push_str("| case | direct (s) | worker wall (s) | client e2e (s) | service overhead (ms) | cold first task (s) |\n|---|---:|---:|---:|---:|---:|\n");
    for (label, d, w, e, cold) in &rows {
        s.push_str(&format!(
            "| {label} | {d:.2} | {w:.2} | {e:.2} | {:.0} | {} |\n",
            (e - d) * 1000.0,
            cold.map_or("-".to_owned(), |c| format!("{c:.2}"))
        ));
    }
    s.push_str(
        "\nThe overhead is client e2e minus direct, from alternating runs: a few hundred ms \
         either way is run-to-run noise on 2 cores (the worker makes the same engine call).\n",
    );
    s.push_str(&format!(
        "\nKey set upload ({upload_bytes} bytes, streamed, conformance-checked): {upload_s:.2} s over loopback.\n"
    ));
    s.push_str(SECTION_END);
    s.push('\n');
    print!("{s}");
    if let Some(path) = write {
        let old = std::fs::read_to_string(&path).unwrap_or_default();
        let rest = match service_section(&old) {
            Some(section) => old.replacen(section, "", 1),
            None => old,
        };
        crate::cli::write_file(&path, format!("{}\n\n{s}", rest.trim_end()).as_bytes())?;
    }
    Ok(())
}

/// The service section of a BENCHMARKS.md, markers included.
pub fn service_section(text: &str) -> Option<&str> {
    let a = text.find(SECTION_START)?;
    let b = text[a..].find(SECTION_END)? + a + SECTION_END.len();
    Some(&text[a..b])
}
