//! Command definitions and their glue to the library crates.

use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use serde_json::Value;
use tenebra_client::{builtin_circuit, decrypt, encrypt, input_header, ClientKeys};
use tenebra_engine::{evaluate_bundle, Progress, RunOptions, ServerKeys};
use tenebra_functions::{builtins, find, AnyBuiltin};

use crate::account::{self, AccountCommand, AuditCommand, MeterArgs, PlansCommand};
use crate::service::{self, TaskCommand, WorkerArgs};

/// Largest JSON input file read.
pub(crate) const JSON_LIMIT: u64 = 16 << 20;
/// Largest encrypted bundle read.
pub(crate) const BUNDLE_LIMIT: u64 = 512 << 20;

/// Tenebra: compute on encrypted data (fully homomorphic encryption with tfhe-rs).
#[derive(Debug, Parser)]
#[command(name = "tenebra", version, about)]
pub struct Cli {
    /// TOML config file: keys are the flags' `TENEBRA_*` names in lower case without the
    /// prefix (e.g. `listen`, `database_url`); environment and flags override it.
    #[arg(long, env = "TENEBRA_CONFIG", global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Key sets: generate the client key, evaluation key and public key.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Built-in functions.
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
        #[command(flatten)]
        storage: StorageArgs,
        #[command(flatten)]
        workers: WorkerArgs,
    },
    /// Run a task worker against the configured database and blobs (cluster mode).
    Worker {
        #[command(flatten)]
        storage: StorageArgs,
        #[command(flatten)]
        workers: WorkerArgs,
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
enum KeysCommand {
    /// Generate a new key set into a directory.
    Generate {
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
    /// `vault+http(s)://host:port/<transit mount>/<key>` (token in VAULT_TOKEN).
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
enum AdminCommand {
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
    /// Deliver usage to a billing provider as meter events (Stripe's shape), each once.
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
enum TenantsCommand {
    /// Create a tenant; prints its first admin API key, once, alone on the last line.
    Create { name: String },
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
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
enum FunctionsCommand {
    /// List functions with their signature and cost: the built-ins, or with an API key
    /// (--api-key or TENEBRA_API_KEY) the server's, the tenant's deployed functions included.
    List {
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Deploy a circuit (canonical JSON from a builder) to a server as the next version of
    /// its name; prints the version.
    Deploy {
        /// Circuit JSON file.
        #[arg(long)]
        circuit: PathBuf,
        #[command(flatten)]
        server: ServerArgs,
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

impl Cli {
    /// Whether the command runs the service (`serve`, `worker`), which logs its work.
    pub fn is_service(&self) -> bool {
        matches!(self.command, Command::Serve { .. } | Command::Worker { .. })
    }
}

pub fn run(cli: Cli) -> Result<()> {
    // The config file was applied to the environment before parsing (config.rs).
    let Cli { config: _, command } = cli;
    match command {
        Command::Keys {
            command: KeysCommand::Generate { out },
        } => keys_generate(&out),
        Command::Keys {
            command:
                KeysCommand::Upload {
                    keys,
                    ttl_secs,
                    server,
                },
        } => {
            let body = tenebra_engine::keys::read_upload(&keys)
                .with_context(|| format!("reading keys from {}", keys.display()))?;
            let client = server.client()?;
            let ks = runtime()?.block_on(client.upload_key_set_expiring(body, ttl_secs))?;
            eprintln!(
                "key set {} ({} bytes) is on {}",
                ks.fingerprint, ks.size_bytes, server.url
            );
            println!("{}", ks.id);
            Ok(())
        }
        Command::Functions {
            command: FunctionsCommand::List { server },
        } => match server.api_key {
            Some(_) => service::functions_list(&server),
            None => functions_list(),
        },
        Command::Functions {
            command: FunctionsCommand::Deploy { circuit, server },
        } => service::deploy(&server, &read_limited(&circuit, JSON_LIMIT)?),
        Command::Functions {
            command:
                FunctionsCommand::Delete {
                    name,
                    version,
                    server,
                },
        } => service::delete_function(&server, &name, version),
        Command::Functions {
            command: FunctionsCommand::Show { function, size },
        } => {
            let c = find(&function)?.circuit(size)?;
            let mut out = std::io::stdout().lock();
            out.write_all(&c.canonical_json())?;
            writeln!(out)?;
            Ok(())
        }
        Command::Simulate { function, input } => {
            let f = tenebra_functions::builtin(&function)?;
            print_json(&f.simulate(&read_json(&input)?)?)
        }
        Command::Encrypt {
            keys,
            function,
            input,
            out,
        } => {
            let json = read_json(&input)?;
            let bytes = match tenebra_functions::builtin(&function)? {
                AnyBuiltin::Bfv(f) => tenebra_client::bfv::encrypt(&keys, f, &json)?,
                AnyBuiltin::Tfhe(f) => {
                    // Check the input before loading keys: mistakes surface at once.
                    f.encode(&json)?;
                    encrypt(&load_client_keys(&keys)?, f, &json)?
                }
            };
            write_file(&out, &bytes)
        }
        Command::Eval {
            keys,
            function,
            input,
            out,
        } => eval(&keys, &function, &input, &out),
        Command::Decrypt {
            keys,
            function,
            input,
        } => {
            let bytes = read_limited(&input, BUNDLE_LIMIT)?;
            print_json(&match tenebra_functions::builtin(&function)? {
                AnyBuiltin::Bfv(f) => tenebra_client::bfv::decrypt(&keys, f, &bytes)?,
                AnyBuiltin::Tfhe(f) => decrypt(&load_client_keys(&keys)?, f, &bytes)?,
            })
        }
        Command::Demo { keys, data_dir } => service::demo(keys, data_dir),
        Command::Bench { command } => bench(command),
        Command::Serve {
            listen,
            no_worker,
            storage,
            workers,
        } => service::serve(&listen, &storage, &workers, no_worker),
        Command::Worker { storage, workers } => service::worker(&storage, &workers),
        Command::Task { server, command } => service::task(&server, command),
        Command::Run {
            keys,
            function,
            input,
            server,
        } => service::run_remote(&server, &keys, &function, &input),
        Command::Account(command) => account::account(command),
        Command::Audit { command } => account::audit(command),
        Command::Admin {
            storage,
            command: AdminCommand::Plans { command },
        } => account::plans(&storage, command),
        Command::Admin {
            storage,
            command: AdminCommand::MeterEvents(args),
        } => account::meter_events(&storage, args),
        Command::Admin {
            storage,
            command: AdminCommand::RotateMasterKey { retire },
        } => account::rotate_master_key(&storage, retire),
        Command::Admin {
            storage,
            command:
                AdminCommand::Tenants {
                    command: TenantsCommand::Create { name },
                },
        } => account::with_state(&storage, async |state| {
            let (tenant, token) = tenebra_server::create_tenant(state, &name)
                .await
                .map_err(|e| anyhow::anyhow!("{}", e.message))?;
            println!("created tenant {} ({})", tenant.name, tenant.id);
            println!("{token}");
            Ok(())
        }),
    }
}

/// The multi-threaded runtime every async command runs on.
pub(crate) fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

pub(crate) fn ensure_keys(dir: &Path) -> Result<(ClientKeys, ServerKeys)> {
    if !dir.join(tenebra_engine::keys::MANIFEST_FILE).exists() {
        eprintln!("generating a key set in {} ...", dir.display());
        ClientKeys::generate(dir)?;
    }
    let client = load_client_keys(dir)?;
    eprintln!("loading the evaluation key (server side) ...");
    Ok((client, ServerKeys::load(dir)?))
}

fn bench(command: BenchCommand) -> Result<()> {
    let mut log = |line: &str| eprintln!("{line}");
    match command {
        BenchCommand::Calibrate { keys, out } => {
            let (client, server) = ensure_keys(&keys)?;
            let table = tenebra_bench::calibrate(&client, &server, &mut log)?;
            let json = serde_json::to_string_pretty(&table)?;
            write_file(&out, format!("{json}\n").as_bytes())?;
            eprintln!("wrote {}", out.display());
            Ok(())
        }
        BenchCommand::Service { keys, reps, write } => service::bench_service(&keys, reps, write),
        BenchCommand::Bfv { reps, write } => {
            use tenebra_bench::bfv::{self as p, SECTION_END, SECTION_START};
            let results = p::bench_bfv(reps.max(1), &mut log).map_err(anyhow::Error::msg)?;
            let section = p::bfv_report(&results, reps.max(1));
            println!("{section}");
            if let Some(path) = write {
                let old = std::fs::read_to_string(&path).unwrap_or_default();
                let doc = p::replace_section(&old, SECTION_START, SECTION_END, &section);
                write_file(&path, doc.as_bytes())?;
            }
            Ok(())
        }
        BenchCommand::Compare { keys, reps, write } => {
            let (client, server) = ensure_keys(&keys)?;
            let results = tenebra_bench::compare(
                &client,
                &server,
                &tenebra_bench::default_cases(),
                reps.max(1),
                &mut log,
            )
            .map_err(|e| anyhow::anyhow!("{e}"))?;
            let report = tenebra_bench::report(&results, reps.max(1));
            print!("{report}");
            if let Some(path) = write {
                // Keep the sections `bench service` and `bench bfv` wrote.
                let old = std::fs::read_to_string(&path).unwrap_or_default();
                let mut kept = service::service_section(&old)
                    .map(|s| format!("\n{s}\n"))
                    .unwrap_or_default();
                let bfv = tenebra_bench::bfv::SECTION_START;
                if let (Some(a), Some(b)) =
                    (old.find(bfv), old.find(tenebra_bench::bfv::SECTION_END))
                {
                    let end = b + tenebra_bench::bfv::SECTION_END.len();
                    kept.push_str(&format!("\n{}\n", &old[a..end.max(a)]));
                }
                write_file(&path, format!("{report}{kept}").as_bytes())?;
            }
            Ok(())
        }
    }
}

fn keys_generate(out: &Path) -> Result<()> {
    if out.join(tenebra_engine::keys::MANIFEST_FILE).exists() {
        bail!(
            "{} already holds a key set; choose another directory",
            out.display()
        );
    }
    let started = Instant::now();
    let keys = ClientKeys::generate(out)
        .with_context(|| format!("generating keys into {}", out.display()))?;
    eprintln!(
        "generated key set {} in {:.1} s",
        keys.id(),
        started.elapsed().as_secs_f64()
    );
    println!("{}", keys.id());
    Ok(())
}

fn functions_list() -> Result<()> {
    let mut out = std::io::stdout().lock();
    for f in tenebra_functions::bfv_builtins() {
        let plan = f.circuit().plan();
        writeln!(out, "{}  {}", f.name, f.summary)?;
        writeln!(out, "    signature: {}", f.signature)?;
        writeln!(
            out,
            "    BFV: ring degree {}, plaintext modulus {}, {} Galois keys; cost: {} CU",
            plan.degree,
            plan.plain_modulus,
            plan.galois_keys(),
            f.circuit().cost_cu()
        )?;
    }
    for f in builtins() {
        let (lo, hi) = (*f.sizes.start(), *f.sizes.end());
        let cost_lo = f.cost(lo)?;
        let cost_hi = f.cost(hi)?;
        writeln!(out, "{}  {}", f.name, f.summary)?;
        writeln!(out, "    signature: {}", f.signature)?;
        writeln!(
            out,
            "    cost: {} CU for size {lo} ({} ops) .. {} CU for size {hi} ({} ops)",
            cost_lo.cu, cost_lo.ops, cost_hi.cu, cost_hi.ops
        )?;
    }
    Ok(())
}

fn eval(keys: &Path, function: &str, input: &Path, out: &Path) -> Result<()> {
    let bytes = read_limited(input, BUNDLE_LIMIT)?;
    if let Some(f) = tenebra_functions::find_bfv(function) {
        let circuit = f.circuit();
        let header = tenebra_engine::bfv::input_header(&bytes)?;
        if header.function != f.name {
            bail!(
                "this file was made for function `{}`, not `{}`",
                header.function,
                f.name
            );
        }
        let key_set = tenebra_client::bfv::BfvKeys::load_key_set(keys, circuit)?;
        let started = Instant::now();
        let result = tenebra_engine::bfv::run(&key_set, circuit, &bytes)?;
        eprintln!(
            "evaluated {} in {:.1} ms (ring degree {}, {} rotations)",
            f.name,
            started.elapsed().as_secs_f64() * 1e3,
            circuit.plan().degree,
            circuit.plan().stats.rotations
        );
        return write_file(out, &result);
    }
    let f = find(function)?;
    // Header checks first: a wrong file is reported before the key takes a second to load.
    let header = input_header(&bytes, f)?;
    let circuit = f.circuit(header.size)?;
    let started = Instant::now();
    let keys =
        ServerKeys::load(keys).with_context(|| format!("loading keys from {}", keys.display()))?;
    let loaded = started.elapsed();
    let bar = progress_bar(&circuit);
    let report = |p: Progress| {
        if let Some(b) = &bar {
            b.set_position(p.done as u64);
        }
    };
    let opts = RunOptions {
        cancel: None,
        progress: Some(&report),
        ..RunOptions::default()
    };
    let result = evaluate_bundle(&keys, &bytes, builtin_circuit, opts)?;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    eprintln!(
        "evaluated {} (size {}) in {:.2} s (+ {:.2} s loading the key)",
        f.name,
        header.size,
        (started.elapsed() - loaded).as_secs_f64(),
        loaded.as_secs_f64()
    );
    write_file(out, &result)
}

fn progress_bar(circuit: &tenebra_circuit::ValidCircuit) -> Option<indicatif::ProgressBar> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let steps = tenebra_circuit::plan::plan(circuit).steps.len() as u64;
    let bar = indicatif::ProgressBar::new(steps);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} ops",
    ) {
        bar.set_style(style);
    }
    Some(bar)
}

pub(crate) fn load_client_keys(dir: &Path) -> Result<ClientKeys> {
    ClientKeys::load(dir).with_context(|| format!("loading keys from {}", dir.display()))
}

pub(crate) fn read_limited(path: &Path, limit: u64) -> Result<Vec<u8>> {
    let mut buf = Vec::new();
    if path == Path::new("-") {
        std::io::stdin().take(limit + 1).read_to_end(&mut buf)?;
    } else {
        let f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
        f.take(limit + 1)
            .read_to_end(&mut buf)
            .with_context(|| format!("reading {}", path.display()))?;
    }
    if buf.len() as u64 > limit {
        bail!("{} is larger than the {limit}-byte limit", path.display());
    }
    Ok(buf)
}

pub(crate) fn read_json(path: &Path) -> Result<Value> {
    let bytes = read_limited(path, JSON_LIMIT)?;
    serde_json::from_slice(&bytes).with_context(|| format!("{} is not valid JSON", path.display()))
}

pub(crate) fn print_json(v: &Value) -> Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer(&mut out, v)?;
    writeln!(out)?;
    Ok(())
}

pub(crate) fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))
}
