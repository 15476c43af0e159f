//! Commands about money and accountability: quotes, usage, invoices, limits, the audit log,
//! and the operator's plans and meter-event export.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Subcommand;
use serde::Serialize;
use tenebra_client::http::QuoteRequest;
use tenebra_server::billing::{self, MeterSink};

use crate::cli::{runtime, ServerArgs, StorageArgs};

fn print_json<T: Serialize>(v: &T) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

/// Opens the configured database and blobs as the server does, runs `f`, closes.
pub(crate) fn with_state<T>(
    storage: &StorageArgs,
    f: impl AsyncFnOnce(&tenebra_server::AppState) -> Result<T>,
) -> Result<T> {
    runtime()?.block_on(async {
        let state = tenebra_server::open(&storage.settings())
            .await
            .map_err(anyhow::Error::msg)?;
        let r = f(&state).await;
        state.store.close().await;
        r
    })
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

pub fn account(command: AccountCommand) -> Result<()> {
    let server = match &command {
        AccountCommand::Quote { server, .. }
        | AccountCommand::Usage { server, .. }
        | AccountCommand::Invoices { server, .. }
        | AccountCommand::Limits { server } => server,
    };
    let client = server.client()?;
    runtime()?.block_on(async {
        match command {
            AccountCommand::Quote {
                function,
                size,
                version,
                ..
            } => {
                let q = QuoteRequest {
                    function,
                    size,
                    version,
                    circuit_id: None,
                };
                print_json(&client.quote(&q).await?)
            }
            AccountCommand::Usage {
                period,
                from,
                to,
                function,
                api_key_id,
                limit,
                after,
                ..
            } => {
                let mut q: Vec<(&str, String)> = vec![("limit", limit.to_string())];
                let opts = [
                    ("period", period),
                    ("from", from.map(|v| v.to_string())),
                    ("to", to.map(|v| v.to_string())),
                    ("function", function),
                    ("api_key_id", api_key_id),
                    ("after", after),
                ];
                q.extend(opts.into_iter().filter_map(|(k, v)| v.map(|v| (k, v))));
                print_json(&client.usage(&q).await?)
            }
            AccountCommand::Invoices {
                period, csv: true, ..
            } => {
                print!("{}", client.invoice_csv(period.as_deref()).await?);
                Ok(())
            }
            AccountCommand::Invoices {
                period, csv: false, ..
            } => print_json(&client.invoice(period.as_deref()).await?),
            AccountCommand::Limits { .. } => print_json(&client.limits().await?),
        }
    })
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

pub fn audit(command: AuditCommand) -> Result<()> {
    match command {
        AuditCommand::Verify { storage } => {
            let v = with_state(&storage, async |state| {
                tenebra_server::audit::verify(state)
                    .await
                    .map_err(anyhow::Error::msg)
            })?;
            print_json(&v)?;
            if !v.ok {
                bail!(
                    "the audit log does not hold from record {}",
                    v.first_bad_seq.unwrap_or(0)
                );
            }
            Ok(())
        }
        AuditCommand::Checkpoint { storage } => {
            let cp = with_state(&storage, async |state| {
                tenebra_server::audit::checkpoint(state)
                    .await
                    .map_err(anyhow::Error::msg)
            })?;
            match cp {
                Some(cp) => print_json(&cp),
                None => {
                    println!("the last checkpoint already has the head");
                    Ok(())
                }
            }
        }
        AuditCommand::List {
            server,
            after,
            limit,
        } => {
            let client = server.client()?;
            runtime()?.block_on(async { print_json(&client.audit(false, after, limit).await?) })
        }
    }
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
        #[arg(long)]
        requests_per_second: Option<i64>,
    },
    /// Put a tenant on a plan.
    Assign { tenant: String, plan: String },
}

fn parse_function_price(s: &str) -> Result<(String, i64), String> {
    let (f, p) = s.split_once('=').ok_or("expected FUNCTION=NANOS_PER_CU")?;
    let p = p.parse().map_err(|_| format!("`{p}` is not an integer"))?;
    Ok((f.to_owned(), p))
}

pub fn plans(storage: &StorageArgs, command: PlansCommand) -> Result<()> {
    with_state(storage, async |state| match command {
        PlansCommand::List => {
            let plans = state.store.list_plans().await?;
            print_json(&plans.iter().map(billing::plan_view).collect::<Vec<_>>())
        }
        PlansCommand::Set {
            name,
            price_nanos_per_cu,
            function_prices,
            cu_per_period,
            max_active_tasks,
            max_stored_bytes,
            max_key_sets,
            max_task_cu,
            requests_per_second,
        } => {
            let view = tenebra_api::PlanView {
                name,
                price_nanos_per_cu,
                function_prices: function_prices.into_iter().collect(),
                cu_per_period,
                max_active_tasks,
                max_stored_bytes,
                max_key_sets,
                max_task_cu,
                requests_per_second,
            };
            let plan = billing::plan_from_view(view).map_err(|e| anyhow::anyhow!(e.message))?;
            state.store.put_plan(&plan).await?;
            print_json(&billing::plan_view(&plan))
        }
        PlansCommand::Assign { tenant, plan } => {
            state
                .store
                .set_tenant_plan(&tenant, &plan)
                .await
                .with_context(|| format!("no tenant `{tenant}` or no plan `{plan}`"))?;
            println!("tenant {tenant} is on plan {plan}");
            Ok(())
        }
    })
}

/// Operator: deliver usage as meter events (each at most once).
#[derive(Debug, clap::Args)]
pub struct MeterArgs {
    /// Append the events to this file as JSON lines.
    #[arg(long)]
    out: Option<PathBuf>,
    /// POST each event as JSON to this endpoint (`Idempotency-Key` = the event identifier).
    #[arg(long, env = "TENEBRA_METER_URL")]
    push: Option<String>,
    /// Bearer token for the endpoint.
    #[arg(long, env = "TENEBRA_METER_TOKEN", hide_env_values = true)]
    push_token: Option<String>,
    /// Tries per event before stopping (the rest go next time).
    #[arg(long, default_value_t = 5)]
    attempts: u32,
}

pub fn meter_events(storage: &StorageArgs, args: MeterArgs) -> Result<()> {
    if args.out.is_none() && args.push.is_none() {
        bail!("nowhere to send the events: give --out FILE and/or --push URL");
    }
    let sink = MeterSink {
        file: args.out,
        url: args.push,
        token: args.push_token,
        attempts: args.attempts,
    };
    let done = with_state(storage, async |state| {
        billing::export_meter_events(state, &sink)
            .await
            .map_err(anyhow::Error::msg)
    })?;
    println!("{} meter events delivered", done.events);
    if done.pending > 0 {
        bail!(
            "the endpoint kept failing; {} or more events wait for the next export",
            done.pending
        );
    }
    Ok(())
}

/// Operator: make a new master key current and re-wrap every blob's data key under it
/// (blobs are not re-encrypted); with `retire`, forget the old master keys afterwards.
pub fn rotate_master_key(storage: &StorageArgs, retire: bool) -> Result<()> {
    with_state(storage, async |state| {
        let kms = state.blobs.kms();
        let current = kms.rotate().await?;
        let n = state.blobs.rewrap_all().await?;
        println!("master key {current} is current; {n} data keys re-wrapped");
        if retire {
            let gone = kms.retire_old()?;
            println!("{gone} old master keys retired");
        }
        Ok(())
    })
}
