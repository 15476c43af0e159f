//! The serverless runtime's cold and warm starts, as Cloud Run runs it (the same binary and
//! code path as on Lambda): the `tenebra runtime` process started fresh, its first
//! invocation fetching and decoding the key set (cold key cache), a second one on the same
//! instance (warm), and a new instance with the key set in its `/tmp` cache; against the
//! same evaluation in this process with keys already loaded (the baseline), in one run.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tenebra_engine::{ClientKeys, EvalKeys, RunOptions, ServerKeys};

use crate::{machine, today};

type Error = Box<dyn std::error::Error + Send + Sync>;

/// Medians over the repetitions, in milliseconds.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerlessRun {
    pub function: String,
    pub reps: usize,
    /// Process start to its first healthy answer.
    pub start_ms: f64,
    /// First invocation: the key set fetched over loopback HTTP and decoded.
    pub cold_ms: f64,
    /// Second invocation on the same instance: keys in memory.
    pub warm_ms: f64,
    /// First invocation of a new instance whose cache directory holds the key set.
    pub disk_ms: f64,
    /// The same evaluation in this process with loaded keys.
    pub baseline_ms: f64,
    pub key_set_bytes: u64,
    pub input_bytes: u64,
    pub result_bytes: u64,
    /// The Lambda zip (`functions package --target lambda`) and the runtime binary (what a
    /// Cloud Run image adds to its base).
    pub zip_bytes: u64,
    pub binary_bytes: u64,
}

struct Instance(Child);

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> Result<u16, Error> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Starts the runtime on a free port; the instance and its URL once it answers.
async fn start(
    exe: &Path,
    cache: &Path,
    http: &reqwest::Client,
) -> Result<(Instance, String, Duration), Error> {
    let port = free_port()?;
    let started = Instant::now();
    let child = Command::new(exe)
        .args(["runtime", "--cache-dir"])
        .arg(cache)
        .env("PORT", port.to_string())
        .env_remove("AWS_LAMBDA_RUNTIME_API")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let instance = Instance(child);
    let url = format!("http://127.0.0.1:{port}/");
    for _ in 0..2000 {
        if http.get(format!("{url}healthz")).send().await.is_ok() {
            return Ok((instance, url, started.elapsed()));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Err("the runtime did not start".into())
}

/// One invocation: its wall time as the caller sees it, and the answer.
async fn invoke(
    http: &reqwest::Client,
    url: &str,
    body: &Value,
) -> Result<(Duration, Value), Error> {
    let t = Instant::now();
    let r = http.post(url).json(body).send().await?;
    let status = r.status();
    let v: Value = r.json().await?;
    if !status.is_success() {
        return Err(format!("the runtime answered {status}: {v}").into());
    }
    Ok((t.elapsed(), v))
}

/// Measures `reps` cold/warm/disk rounds of weight_stats on 5 values, with the runtime at
/// `exe` and the key set of `keys` served over loopback HTTP.
pub fn bench_serverless(
    exe: &Path,
    keys: &Path,
    client: &ClientKeys,
    zip_bytes: u64,
    reps: usize,
    log: &mut dyn FnMut(&str),
) -> Result<ServerlessRun, Error> {
    let function = tenebra_functions::find("weight_stats")?;
    let input = tenebra_client::encrypt(
        client,
        function,
        &json!({"weights": [680, 650, 690, 700, 705]}),
    )?;
    let upload = tenebra_engine::keys::read_upload(keys)?;
    let key_set_bytes = upload.len() as u64;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;

    // The baseline: the engine's own run with keys already decoded.
    let server = std::sync::Arc::new(ServerKeys::load(keys)?);
    let eval = EvalKeys::Tfhe(server);
    let circuit: tenebra_circuit::AnyCircuit = function.circuit(5)?.into();
    // Warmed up once, then measured between the runtime's invocations of each round.
    let result_bytes =
        tenebra_engine::run(&eval, &circuit, &input, RunOptions::default())?.len() as u64;
    let baseline_run = || -> Result<f64, Error> {
        let t = Instant::now();
        tenebra_engine::run(&eval, &circuit, &input, RunOptions::default())?;
        Ok(ms(t.elapsed()))
    };

    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let keys_url = format!("http://{}/keys", listener.local_addr()?);
        let app = axum::Router::new().route(
            "/keys",
            axum::routing::get(move || {
                let upload = upload.clone();
                async move { upload }
            }),
        );
        tokio::spawn(async move { axum::serve(listener, app).await });
        let http = reqwest::Client::new();
        let body = json!({"key_set_url": keys_url,
            "input": base64_encode(&input)});
        let (mut start_ms, mut cold, mut warm, mut disk) = (vec![], vec![], vec![], vec![]);
        let mut baseline = Vec::new();
        for rep in 0..reps {
            let cache = tempfile::tempdir()?;
            let dir: PathBuf = cache.path().join("keys");
            let (instance, url, up) = start(exe, &dir, &http).await?;
            start_ms.push(ms(up));
            let (t, a) = invoke(&http, &url, &body).await?;
            if a["key_cache_hit"] != false {
                return Err("the first invocation found the key set cached".into());
            }
            cold.push(ms(t + up));
            let (t, a) = invoke(&http, &url, &body).await?;
            if a["key_cache_hit"] != true {
                return Err("the second invocation did not find the key set cached".into());
            }
            warm.push(ms(t));
            drop(instance);
            baseline.push(baseline_run()?);
            let (instance, url, up) = start(exe, &dir, &http).await?;
            let (t, a) = invoke(&http, &url, &body).await?;
            if a["key_cache_hit"] != true {
                return Err("the new instance did not find the key set on disk".into());
            }
            disk.push(ms(t + up));
            drop(instance);
            log(&format!(
                "rep {}: cold {:.0} ms, warm {:.0} ms, from /tmp {:.0} ms, in-process {:.0} ms",
                rep + 1,
                cold[rep],
                warm[rep],
                disk[rep],
                baseline[rep]
            ));
        }
        Ok::<_, Error>(ServerlessRun {
            function: "weight_stats (5 values)".into(),
            reps,
            start_ms: median(start_ms),
            cold_ms: median(cold),
            warm_ms: median(warm),
            disk_ms: median(disk),
            baseline_ms: median(baseline),
            key_set_bytes,
            input_bytes: input.len() as u64,
            result_bytes,
            zip_bytes,
            binary_bytes: std::fs::metadata(exe)?.len(),
        })
    })
}

fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / (1 << 20) as f64)
}

/// The BENCHMARKS.md section.
pub fn serverless_report(r: &ServerlessRun) -> String {
    format!(
        "## Serverless runtime: cold and warm starts\n\n\
         `tenebra bench serverless` ({}, {}; medians of {} rounds). The `tenebra runtime` \
         process as Cloud Run runs it (Lambda runs the same binary and code path behind the \
         Runtime API), invoked over loopback with {} inline, the key set ({}) fetched over \
         loopback HTTP; times as the caller sees them, process start included where the \
         instance is new.\n\n\
         | invocation | ms |\n|---|---:|\n\
         | process start to healthy | {:.0} |\n\
         | new instance, key set fetched and decoded (cold) | {:.0} |\n\
         | same instance again (warm, keys in memory) | {:.0} |\n\
         | new instance, key set in its /tmp cache | {:.0} |\n\
         | baseline: the engine in-process, keys loaded | {:.0} |\n\n\
         A warm invocation differs from the baseline by {:+.0} ms (HTTP, base64 and JSON \
         against run-to-run noise); a cold one adds {:.0} ms of key fetching and decoding, of which the /tmp cache saves {:.0} ms. \
         Input {} bytes, result {} bytes. Lambda zip (`functions package --target lambda`): \
         {}; the runtime binary a Cloud Run image adds to its base: {}. A cloud adds its own \
         sandbox start and network time to these.\n",
        machine(),
        today(),
        r.reps,
        r.function,
        mib(r.key_set_bytes),
        r.start_ms,
        r.cold_ms,
        r.warm_ms,
        r.disk_ms,
        r.baseline_ms,
        r.warm_ms - r.baseline_ms,
        r.cold_ms - r.warm_ms,
        r.cold_ms - r.disk_ms,
        r.input_bytes,
        r.result_bytes,
        mib(r.zip_bytes),
        mib(r.binary_bytes),
    )
}
