//! Serverless packaging and deployment: `functions package` (a Lambda zip with a SAM
//! template, or a Cloud Run container context with its service YAML), `functions deploy
//! --target lambda` (create or update the function through the Lambda API), and the Lambda
//! entry point (the binary started as `bootstrap`).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use base64::Engine;
use serde_json::json;
use tenebra_circuit::{AnyCircuit, AnyLimits};
use tenebra_server::aws::{AwsClient, Method};

use crate::args::{LambdaArgs, PackageTarget, StorageArgs, WorkerArgs};
use crate::io::{read_limited, runtime, shutdown_signal, write_file, write_lambda_zip, JSON_LIMIT};

/// Lambda's limit on a zip uploaded directly with CreateFunction/UpdateFunctionCode.
const LAMBDA_ZIP_LIMIT: u64 = 50 << 20;

/// Whether this process is Lambda's `bootstrap` (the packaged runtime).
pub fn is_lambda_bootstrap(argv: &[String]) -> bool {
    argv.len() == 1
        && Path::new(&argv[0]).file_name().and_then(|n| n.to_str()) == Some("bootstrap")
        && std::env::var_os("AWS_LAMBDA_RUNTIME_API").is_some()
}

/// The command line `bootstrap` stands for: `runtime` with the circuits packaged beside
/// it, or with `TENEBRA_BOOTSTRAP=worker` a serverless worker pool's `worker --serverless`
/// (its data directory under `/tmp`, the only writable place, unless TENEBRA_DATA_DIR says);
/// parsed like any other so that every documented variable (`TENEBRA_ALLOWED_URLS`,
/// `TENEBRA_DATABASE_URL`, ...) applies on Lambda too.
pub fn lambda_bootstrap_args() -> Vec<String> {
    if std::env::var("TENEBRA_BOOTSTRAP").as_deref() == Ok("worker") {
        let mut argv = vec![
            "bootstrap".to_owned(),
            "worker".to_owned(),
            "--serverless".to_owned(),
        ];
        if std::env::var_os("TENEBRA_DATA_DIR").is_none() {
            argv.extend(["--data-dir".to_owned(), "/tmp/tenebra-data".to_owned()]);
        }
        return argv;
    }
    let root = std::env::var_os("LAMBDA_TASK_ROOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/task"));
    let circuits = root.join("circuits");
    let mut argv = vec!["bootstrap".to_owned(), "runtime".to_owned()];
    if circuits.is_dir() {
        argv.extend(["--circuits".to_owned(), circuits.display().to_string()]);
    }
    argv
}

/// `tenebra runtime`: the serverless function runtime (Lambda's Runtime API when
/// `AWS_LAMBDA_RUNTIME_API` is set, else Cloud Run's HTTP contract on `$PORT`).
pub fn function_runtime(
    circuits: Option<&Path>,
    cache_dir: PathBuf,
    listen: Option<String>,
    allowed: Vec<String>,
    concurrency: usize,
) -> Result<()> {
    use tenebra_server::serverless::{self, Platform, Runtime};
    let lambda = std::env::var_os("AWS_LAMBDA_RUNTIME_API").is_some();
    let platform = if lambda {
        Platform::Lambda
    } else {
        Platform::CloudRun
    };
    let rt = Runtime::with_limits(circuits, Some(cache_dir), platform, allowed, concurrency)?;
    let rt = std::sync::Arc::new(rt);
    for (name, id) in rt.circuits() {
        eprintln!("serving {name} ({id})");
    }
    runtime()?.block_on(async {
        if lambda {
            return Ok(serverless::serve_lambda(rt).await?);
        }
        let addr = listen.unwrap_or_else(cloud_run_address);
        let listener = tokio::net::TcpListener::bind(&addr)
            .await
            .with_context(|| format!("listening on {addr}"))?;
        eprintln!("tenebra runtime listening on {addr}");
        Ok(serverless::serve_cloud_run(rt, listener, shutdown_signal()).await?)
    })
}

/// `tenebra worker --serverless`: a serverless worker pool's function. Each invocation names
/// a task (`{"task_id": ...}`) that it claims and runs against the service's database and
/// blobs, as a worker would; on Lambda through the Runtime API, elsewhere (Cloud Run) as
/// `POST /` on `listen` (default 0.0.0.0:$PORT).
pub fn pool_worker(
    storage: &StorageArgs,
    workers: &WorkerArgs,
    listen: Option<String>,
) -> Result<()> {
    use tenebra_server::serverless;
    use tenebra_server::worker::TaskRunner;
    let cfg = workers.config()?;
    let settings = storage.settings();
    runtime()?.block_on(async {
        let state = tenebra_server::open(&settings).await?;
        let runner = std::sync::Arc::new(TaskRunner::new(state.clone(), cfg));
        let served = if std::env::var_os("AWS_LAMBDA_RUNTIME_API").is_some() {
            eprintln!("tenebra worker serving Lambda invocations");
            serverless::serve_lambda(runner).await
        } else {
            let addr = listen.unwrap_or_else(cloud_run_address);
            let listener = tokio::net::TcpListener::bind(&addr)
                .await
                .with_context(|| format!("listening on {addr}"))?;
            eprintln!("tenebra worker serving tasks on {addr}");
            serverless::serve_cloud_run(runner, listener, shutdown_signal()).await
        };
        state.store.close().await;
        Ok(served?)
    })
}

/// Where Cloud Run expects the container to listen: 0.0.0.0:$PORT (8080 by default).
fn cloud_run_address() -> String {
    let port = std::env::var("PORT").unwrap_or_else(|_| "8080".to_owned());
    format!("0.0.0.0:{port}")
}

/// Reads and validates circuits as the service would; each with its file name.
fn circuits(paths: &[PathBuf]) -> Result<Vec<(String, Vec<u8>)>> {
    let mut out: Vec<(String, Vec<u8>)> = Vec::new();
    for p in paths {
        let json = read_limited(p, JSON_LIMIT)?;
        let c = AnyCircuit::parse(&json, &AnyLimits::default())
            .with_context(|| format!("{} is not a circuit the service takes", p.display()))?;
        let file = format!("{}.json", c.name());
        if out.iter().any(|(f, _)| *f == file) {
            bail!("two circuits are named `{}`", c.name());
        }
        out.push((file, c.canonical_json()));
    }
    Ok(out)
}

/// `tenebra functions package`: writes the artifact into `out` and says what it wrote.
pub fn package_command(
    target: PackageTarget,
    paths: &[PathBuf],
    out: &Path,
    name: &str,
) -> Result<()> {
    let (_, said) = package(target, paths, out, name)?;
    println!("{said}");
    Ok(())
}

/// Writes the artifact into `out`: the Lambda zip's path, or the container context's, and a
/// line saying what it is.
fn package(
    target: PackageTarget,
    paths: &[PathBuf],
    out: &Path,
    name: &str,
) -> Result<(PathBuf, String)> {
    tenebra_server::check_name("function", name).map_err(|e| anyhow::anyhow!("{}", e.message))?;
    let circuits = circuits(paths)?;
    let exe = std::env::current_exe().context("finding this binary")?;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    match target {
        PackageTarget::Lambda => {
            let zip = out.join("function.zip");
            write_lambda_zip(&zip, &exe, &circuits)?;
            let size = std::fs::metadata(&zip)?.len();
            write_file(&out.join("template.yaml"), sam_template(name).as_bytes())?;
            let mut said = format!(
                "{} ({:.1} MiB) and {}",
                zip.display(),
                size as f64 / (1 << 20) as f64,
                out.join("template.yaml").display()
            );
            if size > LAMBDA_ZIP_LIMIT {
                said.push_str(
                    "\nnote: over Lambda's 50 MiB direct upload; deploy it from S3 (sam deploy does)",
                );
            }
            Ok((zip, said))
        }
        PackageTarget::CloudRun => {
            let dir = out.join("circuits");
            std::fs::create_dir_all(&dir)?;
            for (file, json) in &circuits {
                write_file(&dir.join(file), json)?;
            }
            std::fs::copy(&exe, out.join("tenebra")).context("copying the runtime")?;
            write_file(&out.join("Dockerfile"), DOCKERFILE.as_bytes())?;
            write_file(
                &out.join("service.yaml"),
                cloud_run_service(name).as_bytes(),
            )?;
            let said = format!(
                "container context in {} (Dockerfile, tenebra, circuits/, service.yaml)",
                out.display()
            );
            Ok((out.to_owned(), said))
        }
    }
}

fn sam_template(name: &str) -> String {
    format!(
        r#"# AWS SAM template: `sam deploy --guided` from this directory.
AWSTemplateFormatVersion: "2010-09-09"
Transform: AWS::Serverless-2016-10-31
Description: Tenebra FHE function {name}
Resources:
  Function:
    Type: AWS::Serverless::Function
    Properties:
      FunctionName: {name}
      CodeUri: function.zip
      Handler: bootstrap
      Runtime: provided.al2023
      Architectures: [x86_64]
      # CPU grows with memory (1,769 MiB is one vCPU); FHE wants several.
      MemorySize: 4096
      Timeout: 900
      # /tmp holds cached key sets (a TFHE key set is about 60 MiB).
      EphemeralStorage:
        Size: 2048
      Environment:
        Variables:
          TENEBRA_KEY_CACHE_DIR: /tmp/tenebra-keys
      # Grant read access to the bucket holding key sets and inputs (and write for results):
      # Policies:
      #   - S3CrudPolicy:
      #       BucketName: my-fhe-bucket
Outputs:
  FunctionArn:
    Value: !GetAtt Function.Arn
"#
    )
}

const DOCKERFILE: &str = r#"# Cloud Run container: `gcloud builds submit --tag IMAGE .` then
# `gcloud run services replace service.yaml` (set the image there first).
FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/*
COPY tenebra /usr/local/bin/tenebra
COPY circuits /circuits
USER 65534
ENV TENEBRA_KEY_CACHE_DIR=/tmp/tenebra-keys
ENTRYPOINT ["/usr/local/bin/tenebra", "runtime", "--circuits", "/circuits"]
"#;

fn cloud_run_service(name: &str) -> String {
    format!(
        r#"# Knative service for Cloud Run: `gcloud run services replace service.yaml`.
apiVersion: serving.knative.dev/v1
kind: Service
metadata:
  name: {name}
spec:
  template:
    metadata:
      annotations:
        run.googleapis.com/execution-environment: gen2
        autoscaling.knative.dev/minScale: "0"
        autoscaling.knative.dev/maxScale: "10"
    spec:
      # One FHE evaluation per instance at a time: each uses every core.
      containerConcurrency: 1
      timeoutSeconds: 900
      containers:
        - image: REGION-docker.pkg.dev/PROJECT/REPOSITORY/{name}
          resources:
            limits:
              cpu: "4"
              memory: 8Gi
"#
    )
}

/// `tenebra functions deploy --target lambda`: creates the function, or updates its code
/// if it exists; prints its ARN and code hash.
pub fn deploy_lambda(circuit: Option<&Path>, args: &LambdaArgs) -> Result<()> {
    let name = args
        .function_name
        .as_deref()
        .context("give --function-name NAME")?;
    let region = args
        .region
        .clone()
        .or_else(tenebra_server::aws::env_region)
        .context("give --region R (or set AWS_REGION)")?;
    let tmp;
    let zip = match (&args.zip, circuit) {
        (Some(z), _) => z.clone(),
        (None, Some(c)) => {
            tmp = tempfile::tempdir()?;
            package(PackageTarget::Lambda, &[c.to_owned()], tmp.path(), name)?.0
        }
        (None, None) => bail!("give --zip FILE or --circuit FILE"),
    };
    let size = std::fs::metadata(&zip)
        .with_context(|| format!("reading {}", zip.display()))?
        .len();
    if size > LAMBDA_ZIP_LIMIT {
        bail!(
            "{} is {:.1} MiB, over the 50 MiB Lambda takes directly (upload it to S3 and deploy the SAM template)",
            zip.display(),
            size as f64 / (1 << 20) as f64
        );
    }
    let code = base64::engine::general_purpose::STANDARD.encode(std::fs::read(&zip)?);
    let endpoint = args
        .endpoint
        .clone()
        .unwrap_or_else(|| format!("https://lambda.{region}.amazonaws.com"));
    let endpoint = endpoint.trim_end_matches('/');
    let client = AwsClient::from_env(&region)?;
    let json = [("content-type", "application/json")];
    runtime()?.block_on(async {
        let update = || async {
            let url = format!("{endpoint}/2015-03-31/functions/{name}/code");
            let body = json!({"ZipFile": code}).to_string().into_bytes();
            client
                .call("lambda", Method::PUT, &url, &json, body)
                .await
                .map(|a| ("updated", a))
        };
        // Without a role only an existing function can be deployed to (its code updated).
        let Some(role) = &args.role else {
            let answer = match update().await {
                Ok(a) => a,
                Err(e) if e.status == Some(404) => bail!(
                    "there is no Lambda function `{name}` in {region}: give --role ARN to create it"
                ),
                Err(e) => bail!("updating {name}: {}: {}", e.kind, e.message),
            };
            return report(name, answer);
        };
        let create = json!({
            "FunctionName": name, "Runtime": "provided.al2023", "Handler": "bootstrap",
            "Role": role, "Code": {"ZipFile": code}, "Architectures": ["x86_64"],
            "MemorySize": args.memory_mib, "Timeout": 900, "EphemeralStorage": {"Size": 2048},
            "Environment": {"Variables": {"TENEBRA_KEY_CACHE_DIR": "/tmp/tenebra-keys"}},
        });
        let url = format!("{endpoint}/2015-03-31/functions");
        let body = create.to_string().into_bytes();
        let answer = match client.call("lambda", Method::POST, &url, &json, body).await {
            Ok(a) => ("created", a),
            // It exists: its code is updated (its configuration is left as it is).
            Err(e) if e.status == Some(409) => update()
                .await
                .map_err(|e| anyhow::anyhow!("updating {name}: {}: {}", e.kind, e.message))?,
            Err(e) => bail!("creating {name}: {}: {}", e.kind, e.message),
        };
        report(name, answer)
    })
}

/// Prints what a deployment did.
fn report(name: &str, answer: (&str, Vec<u8>)) -> Result<()> {
    let v: serde_json::Value = serde_json::from_slice(&answer.1).unwrap_or_default();
    println!(
        "{} {} (code sha256 {})",
        answer.0,
        v["FunctionArn"].as_str().unwrap_or(name),
        v["CodeSha256"].as_str().unwrap_or("?")
    );
    Ok(())
}
