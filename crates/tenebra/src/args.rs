//! The command line's types: every flag and subcommand, with what they become (server
//! settings, a worker's configuration, an API client). Parsing has no side effects; `main`
//! dispatches each command to its module.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use tenebra_server::worker::{WorkerConfig, KEY_SET_MEMORY};

/// Tenebra: compute on encrypted data (fully homomorphic encryption with tfhe-rs).
#[derive(Debug, Parser)]
#[command(name = "tenebra", version, about)]
pub struct Cli {
    /// TOML config file: keys are the flags' `TENEBRA_*` names in lower case without the
    /// prefix (e.g. `listen`, `database_url`); environment and flags override it.
    #[arg(long, env = "TENEBRA_CONFIG", global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Key sets: generate the client key, evaluation key and public key.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Functions: the built-ins, and a server's deployed functions.
    Functions {
        #[command(subcommand)]
        command: FunctionsCommand,
    },
    /// Run a function on plain input (no encryption): what the encrypted run decrypts to.
    Simulate {
        #[arg(long)]
        function: String,
        /// JSON input file (`-` for stdin).
        #[arg(long)]
        input: PathBuf,
    },
    /// Client side: encrypt a JSON input for a function with the key set's public key.
    Encrypt {
        /// Key set directory.
        #[arg(long)]
        keys: PathBuf,
        #[arg(long)]
        function: String,
        /// JSON input file (`-` for stdin).
        #[arg(long)]
        input: PathBuf,
        /// Where to write the encrypted input.
        #[arg(long)]
        out: PathBuf,
    },
    /// Server side: evaluate a function on an encrypted input (reads no secret key).
    Eval {
        /// Key set directory (only server.key and public.key are read).
        #[arg(long)]
        keys: PathBuf,
        #[arg(long)]
        function: String,
        /// Encrypted input file.
        #[arg(long)]
        input: PathBuf,
        /// Where to write the encrypted result.
        #[arg(long)]
        out: PathBuf,
    },
    /// Client side: decrypt a result and print the function's JSON output.
    Decrypt {
        #[arg(long)]
        keys: PathBuf,
        #[arg(long)]
        function: String,
        /// Encrypted result file.
        #[arg(long)]
        input: PathBuf,
    },
    /// Run the HTTP service (embedded SQLite by default, PostgreSQL with --database-url),
    /// with an in-process worker unless --no-worker.
    Serve {
        /// Address to listen on.
        #[arg(long, env = "TENEBRA_LISTEN", default_value = "127.0.0.1:8080")]
        listen: String,
        /// Serve the API only; `tenebra worker` processes run the tasks.
        #[arg(long, env = "TENEBRA_NO_WORKER")]
        no_worker: bool,
        /// Hand tasks to a serverless worker pool instead of running them here:
        /// `lambda:NAME` (asynchronous Lambda invocations; region from an ARN or AWS_REGION,
        /// endpoint from AWS_ENDPOINT_URL_LAMBDA) or `cloud-run:URL`. The functions run
        /// `tenebra worker --serverless` against the same database and blobs.
        #[arg(long, env = "TENEBRA_EXECUTOR", conflicts_with = "no_worker")]
        executor: Option<String>,
        #[command(flatten)]
        storage: StorageArgs,
        #[command(flatten)]
        workers: WorkerArgs,
    },
    /// Run a task worker against the configured database and blobs (cluster mode).
    Worker {
        /// Also serve `/metrics` (with `--metrics-token`) and `/healthz` on this address.
        #[arg(long, env = "TENEBRA_METRICS_LISTEN", conflicts_with = "serverless")]
        metrics_listen: Option<String>,
        /// Run the tasks invocations name (`{"task_id": ...}`) instead of polling the queue:
        /// a serverless worker pool's function, on Lambda (AWS_LAMBDA_RUNTIME_API set) through
        /// the Runtime API, elsewhere (Cloud Run) as `POST /` on 0.0.0.0:$PORT.
        #[arg(long, env = "TENEBRA_WORKER_SERVERLESS")]
        serverless: bool,
        /// Address to listen on with --serverless off Lambda (default 0.0.0.0:$PORT).
        #[arg(long, requires = "serverless")]
        listen: Option<String>,
        #[command(flatten)]
        storage: StorageArgs,
        #[command(flatten)]
        workers: WorkerArgs,
    },
    /// The serverless function runtime: on AWS Lambda (AWS_LAMBDA_RUNTIME_API set) it serves
    /// the Runtime API; elsewhere (Google Cloud Run) an HTTP server on $PORT. Each invocation
    /// evaluates one encrypted input with a key set named by URL.
    Runtime {
        /// Circuits this runtime serves besides the built-ins (`*.json`).
        #[arg(long, env = "TENEBRA_CIRCUITS")]
        circuits: Option<PathBuf>,
        /// Where key sets are cached across invocations.
        #[arg(
            long,
            env = "TENEBRA_KEY_CACHE_DIR",
            default_value = "/tmp/tenebra-keys"
        )]
        cache_dir: PathBuf,
        /// Address to listen on off Lambda (default 0.0.0.0:$PORT, else 0.0.0.0:8080).
        #[arg(long)]
        listen: Option<String>,
        /// URL prefixes key sets, inputs and results may be at (comma-separated, e.g.
        /// `s3://my-bucket/fhe/`); without any, every s3:// and http(s):// URL is taken:
        /// set it whenever the endpoint is reachable by people who should not pick URLs.
        #[arg(long, env = "TENEBRA_ALLOWED_URLS", value_delimiter = ',')]
        allow_url: Vec<String>,
        /// Evaluations at once (each uses every core; further invocations wait).
        #[arg(long, env = "TENEBRA_RUNTIME_CONCURRENCY", default_value_t = 1)]
        concurrency: usize,
    },
    /// Models on a server: upload, list, show, signature, grants, offers, and encrypted
    /// inference (whole or split).
    Models {
        #[command(flatten)]
        server: ServerArgs,
        #[command(subcommand)]
        command: ModelsCommand,
    },
    /// Tasks on a server: submit, status, wait, result, cancel, list.
    Task {
        #[command(flatten)]
        server: ServerArgs,
        #[command(subcommand)]
        command: TaskCommand,
    },
    /// One shot on a server: encrypt, upload the key set if needed, submit, wait, download,
    /// decrypt, and print the result JSON (as `tenebra decrypt` does).
    Run {
        /// Key set directory.
        #[arg(long)]
        keys: PathBuf,
        #[arg(long)]
        function: String,
        /// JSON input file (`-` for stdin).
        #[arg(long)]
        input: PathBuf,
        #[command(flatten)]
        server: ServerArgs,
    },
    #[command(flatten)]
    Account(AccountCommand),
    /// The audit log: verify it (operator), sign a checkpoint, list a tenant's records.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Operator commands that work directly on the configured database.
    Admin {
        #[command(flatten)]
        storage: StorageArgs,
        #[command(subcommand)]
        command: AdminCommand,
    },
    /// Benchmarks: the engine against hand-written tfhe-rs, and cost-model calibration.
    Bench {
        #[command(subcommand)]
        command: BenchCommand,
    },
    /// End-to-end demo: starts the service with embedded defaults, then as a client
    /// generates keys, uploads them, and runs every built-in on encrypted sample data.
    Demo {
        /// Key set directory to use (generated there if missing; default: a temporary one).
        #[arg(long)]
        keys: Option<PathBuf>,
        /// The service's data directory (default: a temporary one).
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Generate a new key set into a directory.
    Generate {
        #[arg(long)]
        out: PathBuf,
    },
    /// Write a key set's evaluation and public keys as one upload file (never the client
    /// key), e.g. to put where a serverless function reads it; prints the key set id.
    Export {
        #[arg(long)]
        keys: PathBuf,
        #[arg(long)]
        out: PathBuf,
    },
    /// Upload a key set's evaluation and public keys to a server (never the client key).
    Upload {
        #[arg(long)]
        keys: PathBuf,
        /// Delete the key set from the server after this many seconds (at least 60).
        #[arg(long)]
        ttl_secs: Option<u64>,
        #[command(flatten)]
        server: ServerArgs,
    },
}

/// Which server to talk to, and as whom.
#[derive(Debug, clap::Args)]
pub struct ServerArgs {
    /// Server URL.
    #[arg(
        long = "server",
        env = "TENEBRA_SERVER",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    pub url: String,
    /// API key (`tnb_...`).
    #[arg(long, env = "TENEBRA_API_KEY", hide_env_values = true, global = true)]
    pub api_key: Option<String>,
}

impl ServerArgs {
    /// A client for the server, with the API key.
    pub fn client(&self) -> Result<tenebra_client::http::Client> {
        let key = self
            .api_key
            .as_deref()
            .context("an API key is needed: --api-key or TENEBRA_API_KEY")?;
        Ok(tenebra_client::http::Client::new(&self.url, key))
    }
}

/// Where the service keeps its state.
#[derive(Debug, clap::Args)]
pub struct StorageArgs {
    /// Data directory (embedded database, server secret).
    #[arg(
        long,
        env = "TENEBRA_DATA_DIR",
        default_value = "./tenebra-data",
        global = true
    )]
    data_dir: PathBuf,
    /// `postgres://...` to use PostgreSQL instead of the embedded SQLite file.
    #[arg(long, env = "TENEBRA_DATABASE_URL", global = true)]
    database_url: Option<String>,
    /// Hex secret (>= 32 bytes) API tokens are hashed under; default: `secret.key` in the
    /// data directory, created on first start. API nodes of one cluster share one secret.
    #[arg(long, env = "TENEBRA_SECRET", hide_env_values = true, global = true)]
    secret: Option<String>,
    /// `s3://bucket[/prefix]` to keep blobs (key sets, inputs, results) in S3-compatible
    /// storage (credentials, region and endpoint from `AWS_*`); default: `<data dir>/blobs`.
    #[arg(long, env = "TENEBRA_BLOB_URL", global = true)]
    blob_url: Option<String>,
    /// Token (>= 32 characters) of the operator API (`/v1/admin/...`: plans, audit);
    /// without one that API is off. Operators can always use `tenebra admin` locally.
    #[arg(
        long,
        env = "TENEBRA_OPERATOR_TOKEN",
        hide_env_values = true,
        global = true
    )]
    operator_token: Option<String>,
    /// The key that signs audit checkpoints (32 bytes, created 0600 if missing); default:
    /// `audit-signing.key` in the data directory. Keep it off the database's machine.
    #[arg(long, env = "TENEBRA_AUDIT_KEY_FILE", global = true)]
    audit_key_file: Option<PathBuf>,
    /// Who wraps the data keys blobs are encrypted with: `local:DIR` (a keyring of master
    /// key files; default `<data dir>/master-keys`, created on first start) or
    /// `vault+http(s)://host:port/<transit mount>/<key>` (token in VAULT_TOKEN) or
    /// `aws-kms://<key id, ARN or alias/NAME>?region=R[&previous=KEYS][&endpoint=URL]`.
    #[arg(long, env = "TENEBRA_KMS", global = true)]
    kms: Option<String>,
    /// Token of the Vault KMS.
    #[arg(long, env = "VAULT_TOKEN", hide_env_values = true, global = true)]
    vault_token: Option<String>,
    /// Token (>= 32 characters) Prometheus presents for `/metrics`
    /// (`Authorization: Bearer`); without one `/metrics` is off.
    #[arg(
        long,
        env = "TENEBRA_METRICS_TOKEN",
        hide_env_values = true,
        global = true
    )]
    metrics_token: Option<String>,
}

impl StorageArgs {
    pub fn settings(&self) -> tenebra_server::Settings {
        tenebra_server::Settings {
            data_dir: self.data_dir.clone(),
            database_url: self.database_url.clone(),
            secret_hex: self.secret.clone(),
            blob_url: self.blob_url.clone(),
            operator_token: self.operator_token.clone(),
            audit_key_file: self.audit_key_file.clone(),
            kms: self.kms.clone(),
            vault_token: self.vault_token.clone(),
            metrics_token: self.metrics_token.clone(),
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Tenants.
    Tenants {
        #[command(subcommand)]
        command: TenantsCommand,
    },
    /// Plans: prices per CU (per function too) and limits.
    Plans {
        #[command(subcommand)]
        command: PlansCommand,
    },
    /// Deliver usage as meter events to Stripe and/or a JSON-lines file, each once.
    MeterEvents(MeterArgs),
    /// Make a new master key current and re-wrap every blob's data key (blobs stay as
    /// they are).
    RotateMasterKey {
        /// Then delete the old master keys (local keyring).
        #[arg(long)]
        retire: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum TenantsCommand {
    /// Create a tenant; prints its first admin API key, once, alone on the last line.
    Create { name: String },
    /// Bill a tenant's usage to a Stripe customer (its meter events go to that customer).
    SetBilling {
        /// The tenant's id (`tn_...`).
        tenant: String,
        /// The Stripe customer (`cus_...`).
        #[arg(long, required_unless_present = "none", conflicts_with = "none")]
        stripe_customer: Option<String>,
        /// Bill it to no Stripe customer (its meter events wait).
        #[arg(long)]
        none: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Measure every op class per width on one thread and write the cost model's table.
    Calibrate {
        /// Key set directory (generated there if missing).
        #[arg(long)]
        keys: PathBuf,
        /// Where to write the table.
        #[arg(long, default_value = "crates/tenebra-circuit/calibration.json")]
        out: PathBuf,
    },
    /// What the service adds: the same input evaluated in-process and through the embedded
    /// service over HTTP, alternating, in one run.
    Service {
        /// Key set directory (generated there if missing).
        #[arg(long)]
        keys: PathBuf,
        #[arg(long, default_value_t = 3)]
        reps: usize,
        /// Also write the section into this file (e.g. BENCHMARKS.md), replacing the old one.
        #[arg(long)]
        write: Option<PathBuf>,
    },
    /// The service's own cost: a trivial circuit through the whole service (p50/p99 of what
    /// it adds to the run) by concurrent clients, and the queue's throughput (claimed and
    /// finished per second), on SQLite and, with `--database-url`, on PostgreSQL.
    /// The serverless runtime's cold and warm starts (`tenebra runtime` on a free port),
    /// against the same evaluation in-process, in one run.
    Serverless {
        /// Key set directory (generated there if missing).
        #[arg(long)]
        keys: PathBuf,
        #[arg(long, default_value_t = 3)]
        reps: usize,
        /// Also write the section into this file (e.g. BENCHMARKS.md), replacing the old one.
        #[arg(long)]
        write: Option<PathBuf>,
    },
    Overhead {
        /// Key set directory (generated there if missing).
        #[arg(long)]
        keys: PathBuf,
        /// Also measure on this PostgreSQL database (tenants and tasks are added to it).
        #[arg(long)]
        database_url: Option<String>,
        /// Concurrent clients, one run per count (comma-separated).
        #[arg(long, value_delimiter = ',', default_value = "1,4")]
        clients: Vec<usize>,
        /// Tasks per client.
        #[arg(long, default_value_t = 50)]
        tasks: usize,
        /// Worker loops of the queue benchmark, one run per count (comma-separated).
        #[arg(long, value_delimiter = ',', default_value = "1,4")]
        workers: Vec<usize>,
        /// Tasks of the queue benchmark.
        #[arg(long, default_value_t = 2000)]
        queue_tasks: usize,
        /// Also write the section into this file (e.g. BENCHMARKS.md), replacing the old one.
        #[arg(long)]
        write: Option<PathBuf>,
    },
    /// What a function will take before it is deployed: encrypts inputs at the edges of
    /// their ranges, then random ones, runs the circuit as a worker would, checks each
    /// result against the plaintext evaluator, and prints the times next to the cost
    /// model's estimate (one line of JSON).
    Function {
        /// Key set directory (generated there if missing; BFV keys are added on first use).
        #[arg(long)]
        keys: PathBuf,
        /// Circuit JSON file (TFHE or BFV), as `functions deploy` takes it.
        #[arg(
            long,
            conflicts_with = "function",
            required_unless_present = "function"
        )]
        circuit: Option<PathBuf>,
        /// Or a built-in by name.
        #[arg(long)]
        function: Option<String>,
        /// The built-in's input size (TFHE built-ins).
        #[arg(long, default_value_t = 5)]
        size: u32,
        /// Runs: the first with every input at its minimum, the second at its maximum, the
        /// rest random in range.
        #[arg(long, default_value_t = 3)]
        reps: usize,
    },
    /// Time the BFV backend against hand-written fhe.rs code, in the same run.
    #[command(alias = "packed")]
    Bfv {
        /// Warm repetitions per case (engine and baseline alternate).
        #[arg(long, default_value_t = 5)]
        reps: usize,
        /// Also write the section into this file (e.g. BENCHMARKS.md), replacing the old one.
        #[arg(long)]
        write: Option<PathBuf>,
    },
    /// Time the built-ins against hand-written tfhe-rs code, in the same run.
    Compare {
        /// Key set directory (generated there if missing).
        #[arg(long)]
        keys: PathBuf,
        /// Repetitions per case (engine and baseline alternate).
        #[arg(long, default_value_t = 1)]
        reps: usize,
        /// Also write the report to this file (e.g. BENCHMARKS.md).
        #[arg(long)]
        write: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum FunctionsCommand {
    /// List functions with their signature and cost: the built-ins, or with an API key
    /// (--api-key or TENEBRA_API_KEY) the server's, the tenant's deployed functions included.
    List {
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Deploy a circuit (canonical JSON from a builder) to a server as the next version of
    /// its name and print the version; or, with --target lambda, create or update an AWS
    /// Lambda function running it (from --zip, or packaged from --circuit).
    Deploy {
        /// Circuit JSON file.
        #[arg(long, required_unless_present = "zip")]
        circuit: Option<PathBuf>,
        /// Deploy to AWS Lambda instead of a Tenebra server.
        #[arg(long, value_enum)]
        target: Option<DeployTarget>,
        #[command(flatten)]
        lambda: LambdaArgs,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Build what a serverless platform runs: for Lambda, `function.zip` (the runtime as
    /// `bootstrap`, the circuits) and a SAM `template.yaml`; for Cloud Run, a container
    /// context (Dockerfile, the runtime, the circuits) and a `service.yaml`.
    Package {
        #[arg(long, value_enum)]
        target: PackageTarget,
        /// Circuit JSON files the function serves (the built-ins are always served).
        #[arg(long)]
        circuit: Vec<PathBuf>,
        /// Directory to write to (created).
        #[arg(long)]
        out: PathBuf,
        /// The function's (or service's) name in the templates.
        #[arg(long, default_value = "tenebra-fhe")]
        function_name: String,
    },
    /// Delete a deployed function from a server: one version, or every version.
    Delete {
        name: String,
        #[arg(long)]
        version: Option<i64>,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Print a function's circuit (canonical JSON) for an input size.
    Show {
        #[arg(long)]
        function: String,
        /// Number of input values or records.
        #[arg(long)]
        size: u32,
    },
}

/// Where `functions deploy` goes besides a Tenebra server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DeployTarget {
    Lambda,
}

/// What `functions package` builds for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PackageTarget {
    Lambda,
    CloudRun,
}

/// The Lambda function `functions deploy --target lambda` creates or updates.
#[derive(Debug, clap::Args)]
pub struct LambdaArgs {
    /// The function's name.
    #[arg(long)]
    pub function_name: Option<String>,
    /// A zip from `functions package --target lambda` (else one is packaged from --circuit).
    #[arg(long)]
    pub zip: Option<PathBuf>,
    /// The execution role's ARN (needed to create the function, not to update it).
    #[arg(long)]
    pub role: Option<String>,
    /// AWS region (else AWS_REGION).
    #[arg(long)]
    pub region: Option<String>,
    /// Lambda API endpoint (else AWS_ENDPOINT_URL_LAMBDA, else the region's).
    #[arg(long, env = "AWS_ENDPOINT_URL_LAMBDA")]
    pub endpoint: Option<String>,
    /// Memory in MiB (CPU grows with it; 1,769 MiB is one vCPU).
    #[arg(long, default_value_t = 4096)]
    pub memory_mib: u32,
}

impl Cli {
    /// Whether the command runs the service (`serve`, `worker`), which logs its work.
    pub fn is_service(&self) -> bool {
        matches!(self.command, Command::Serve { .. } | Command::Worker { .. })
    }
}

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
    pub fn config(&self) -> Result<WorkerConfig> {
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
/// `OWNER/NAME`: a model of a tenant (yours: the `owner_id` that `models list` shows).
#[derive(Debug, Clone)]
pub struct ModelRef {
    pub owner: String,
    pub name: String,
}

impl std::str::FromStr for ModelRef {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.split_once('/') {
            Some((owner, name)) if !owner.is_empty() && !name.is_empty() && !name.contains('/') => {
                Ok(Self {
                    owner: owner.to_owned(),
                    name: name.to_owned(),
                })
            }
            _ => Err(format!(
                "`{s}` is not OWNER/NAME (e.g. tn_0123.../my-model)"
            )),
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum ModelsCommand {
    /// Upload a model as the next version of its name: model JSON (`--file`), or an ONNX
    /// file (`--onnx`, with `--name` and the input range); prints its page as JSON.
    Upload {
        /// Model JSON (dense layers and activations).
        #[arg(long, conflicts_with = "onnx", required_unless_present = "onnx")]
        file: Option<PathBuf>,
        /// ONNX file (Gemm, MatMul + Add, Relu, Sigmoid...).
        #[arg(long, requires_all = ["name", "input_min", "input_max"])]
        onnx: Option<PathBuf>,
        /// The ONNX model's name.
        #[arg(long)]
        name: Option<String>,
        #[arg(long, allow_negative_numbers = true)]
        input_min: Option<f64>,
        #[arg(long, allow_negative_numbers = true)]
        input_max: Option<f64>,
    },
    /// Your models and the models shared with you (pages, never weights), as JSON.
    List,
    /// A model's page: layers, and each split's precision and cost.
    Show {
        model: ModelRef,
        #[arg(long)]
        version: Option<i64>,
    },
    /// What to encrypt for to run the first `--layers` layers.
    Signature {
        model: ModelRef,
        #[arg(long)]
        layers: usize,
        #[arg(long)]
        version: Option<i64>,
    },
    /// Offer another tenant the use of one of your models (it must accept);
    /// `--share-layers` lets it fetch the plaintext layers after a split.
    Grant {
        name: String,
        tenant: String,
        #[arg(long)]
        share_layers: bool,
    },
    /// Revoke a grant.
    Revoke { name: String, tenant: String },
    /// Grants offered to you that you have not accepted, as JSON.
    Offers,
    /// Accept an offered grant (only then may you run the model).
    Accept { model: ModelRef },
    /// Decline an offered grant, or give up an accepted one.
    Decline { model: ModelRef },
    /// Encrypted inference: encrypts `{"x": [numbers]}`, runs the first `--layers` layers
    /// on the server, decrypts, then runs the rest in plaintext when its layers are shared
    /// with you (or yours); prints the prediction as JSON.
    Run {
        model: ModelRef,
        /// Key set directory (BFV keys are made there on first use).
        #[arg(long)]
        keys: PathBuf,
        /// JSON input file (`-` for stdin): `{"x": [numbers]}`.
        #[arg(long)]
        input: PathBuf,
        /// Layers run encrypted (default: as many as the model allows).
        #[arg(long)]
        layers: Option<usize>,
        #[arg(long)]
        version: Option<i64>,
    },
}

#[derive(Debug, Subcommand)]
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

/// The tenant's commands about what it spends.
#[derive(Debug, Subcommand)]
pub enum AccountCommand {
    /// What running a function costs (CU and price), before running it.
    Quote {
        #[command(flatten)]
        server: ServerArgs,
        #[arg(long)]
        function: String,
        /// Input size of a built-in.
        #[arg(long, default_value_t = 0)]
        size: u32,
        /// Version of a deployed function (default: the latest).
        #[arg(long)]
        version: Option<i64>,
    },
    /// Usage records (oldest first) and their totals, as JSON.
    Usage {
        #[command(flatten)]
        server: ServerArgs,
        /// A billing period, `YYYY-MM` (instead of --from/--to).
        #[arg(long, conflicts_with_all = ["from", "to"])]
        period: Option<String>,
        /// From this Unix time in milliseconds (inclusive).
        #[arg(long)]
        from: Option<i64>,
        /// Up to this Unix time in milliseconds (exclusive).
        #[arg(long)]
        to: Option<i64>,
        #[arg(long)]
        function: Option<String>,
        #[arg(long)]
        api_key_id: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: u32,
        /// The `next` of the previous page.
        #[arg(long)]
        after: Option<String>,
    },
    /// The invoice of a billing period (a calendar month, UTC), as JSON or CSV.
    Invoices {
        #[command(flatten)]
        server: ServerArgs,
        /// `YYYY-MM` (default: the current period).
        #[arg(long)]
        period: Option<String>,
        #[arg(long)]
        csv: bool,
    },
    /// The tenant's plan, limits and current usage.
    Limits {
        #[command(flatten)]
        server: ServerArgs,
    },
}

/// The audit log.
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Operator: recompute the whole chain from the configured database and check it
    /// against the signed checkpoints; exits 1 at the first bad record.
    Verify {
        #[command(flatten)]
        storage: StorageArgs,
    },
    /// Operator: sign a checkpoint of the chain's head now (workers also do it as they
    /// sweep).
    Checkpoint {
        #[command(flatten)]
        storage: StorageArgs,
    },
    /// The tenant's audit records from a server, as JSON.
    List {
        #[command(flatten)]
        server: ServerArgs,
        /// Records after this sequence number.
        #[arg(long, default_value_t = 0)]
        after: i64,
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
}

/// Plans: prices and limits.
#[derive(Debug, Subcommand)]
pub enum PlansCommand {
    /// Every plan, as JSON.
    List,
    /// Create or replace a plan (limits left out are unlimited).
    Set {
        name: String,
        /// Price per CU in nano-units of the billing currency.
        #[arg(long)]
        price_nanos_per_cu: i64,
        /// A function's own price: `FUNCTION=NANOS_PER_CU` (repeatable).
        #[arg(long = "function-price", value_parser = parse_function_price)]
        function_prices: Vec<(String, i64)>,
        #[arg(long)]
        cu_per_period: Option<i64>,
        #[arg(long)]
        max_active_tasks: Option<i64>,
        #[arg(long)]
        max_stored_bytes: Option<i64>,
        #[arg(long)]
        max_key_sets: Option<i64>,
        #[arg(long)]
        max_task_cu: Option<i64>,
        /// Per API key.
        #[arg(long)]
        requests_per_second: Option<i64>,
        /// Per tenant, over all its API keys.
        #[arg(long)]
        tenant_requests_per_second: Option<i64>,
    },
    /// Put a tenant on a plan.
    Assign { tenant: String, plan: String },
}

fn parse_function_price(s: &str) -> Result<(String, i64), String> {
    let (f, p) = s.split_once('=').ok_or("expected FUNCTION=NANOS_PER_CU")?;
    let p = p.parse().map_err(|_| format!("`{p}` is not an integer"))?;
    Ok((f.to_owned(), p))
}

/// Operator: deliver usage as meter events (each at most once).
#[derive(Debug, clap::Args)]
pub struct MeterArgs {
    /// Append the events to this file as JSON lines.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Send the events to Stripe's Billing Meter Events API with this secret key (tenants
    /// mapped to a Stripe customer only: `admin tenants set-billing`).
    #[arg(long, env = "TENEBRA_STRIPE_API_KEY", hide_env_values = true)]
    pub stripe_api_key: Option<String>,
    /// Stripe's API origin (for tests and proxies).
    #[arg(
        long,
        env = "TENEBRA_STRIPE_API_BASE",
        default_value = tenebra_server::billing::STRIPE_API
    )]
    pub stripe_api_base: String,
    /// Tries per event on server errors and rate limits before stopping (the rest go next
    /// time).
    #[arg(long, default_value_t = 5)]
    pub attempts: u32,
    /// First forget Stripe's earlier refusals, so those events are sent again.
    #[arg(long)]
    pub retry_refused: bool,
}
