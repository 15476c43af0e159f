//! Commands about money and accountability: quotes, usage, invoices, limits, the audit log,
//! and the operator's plans and meter-event export.

use anyhow::{bail, Context, Result};
use tenebra_client::http::QuoteRequest;
use tenebra_server::billing::{self, MeterSink, StripeSink};

use crate::args::{AccountCommand, AuditCommand, MeterArgs, PlansCommand, StorageArgs};
use crate::io::runtime;
use crate::output::print_json;

/// Opens the configured database and blobs as the server does, runs `f`, closes.
fn with_state<T>(
    storage: &StorageArgs,
    f: impl AsyncFnOnce(&tenebra_server::AppState) -> Result<T>,
) -> Result<T> {
    runtime()?.block_on(async {
        let state = tenebra_server::open(&storage.settings()).await?;
        let r = f(&state).await;
        state.store.close().await;
        r
    })
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

pub fn audit(command: AuditCommand) -> Result<()> {
    match command {
        AuditCommand::Verify { storage } => {
            let v = with_state(&storage, async |state| {
                tenebra_server::audit::verify(state)
                    .await
                    .map_err(anyhow::Error::from)
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
                    .map_err(anyhow::Error::from)
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
            tenant_requests_per_second,
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
                tenant_requests_per_second,
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

pub fn meter_events(storage: &StorageArgs, args: MeterArgs) -> Result<()> {
    if args.out.is_none() && args.stripe_api_key.is_none() {
        bail!("nowhere to send the events: give --out FILE and/or --stripe-api-key KEY");
    }
    let sink = MeterSink {
        file: args.out,
        stripe: args.stripe_api_key.map(|api_key| StripeSink {
            api_key,
            api_base: args.stripe_api_base,
        }),
        attempts: args.attempts,
    };
    let retry = args.retry_refused;
    let done = with_state(storage, async |state| {
        if retry {
            let n = state.store.retry_refused_meter_events().await?;
            println!("{n} refused meter events will be sent again");
        }
        billing::export_meter_events(state, &sink)
            .await
            .map_err(anyhow::Error::from)
    })?;
    println!("{} meter events delivered", done.events);
    if done.expired > 0 {
        println!(
            "{} usage records are older than Stripe's 35-day window: marked, not sent",
            done.expired
        );
    }
    for (task, why) in &done.refused {
        println!("Stripe refused the event of task {task}: {why}");
    }
    if !done.refused.is_empty() {
        println!("(fix the cause, then run again with --retry-refused)");
    }
    if sink.stripe.is_some() && done.unmapped > 0 {
        println!(
            "{} usage records wait for their tenant's Stripe customer \
             (tenebra admin tenants set-billing TENANT --stripe-customer cus_...)",
            done.unmapped
        );
    }
    if let Some(why) = done.stopped {
        bail!(
            "the export stopped ({why}); {} or more events wait for the next export",
            done.pending
        );
    }
    Ok(())
}

/// Operator: bill a tenant's usage to a Stripe customer (or to none).
pub fn set_billing(storage: &StorageArgs, tenant: &str, customer: Option<&str>) -> Result<()> {
    if let Some(c) = customer {
        billing::check_stripe_customer(c).map_err(|e| anyhow::anyhow!("{}", e.message))?;
    }
    with_state(storage, async |state| {
        state
            .store
            .set_tenant_billing(tenant, customer)
            .await
            .with_context(|| format!("no tenant `{tenant}`"))?;
        match customer {
            Some(c) => println!("tenant {tenant} is billed to Stripe customer {c}"),
            None => println!("tenant {tenant} is billed to no Stripe customer"),
        }
        Ok(())
    })
}

/// Operator: create a tenant; prints its first admin API key, once, alone on the last line.
pub fn create_tenant(storage: &StorageArgs, name: &str) -> Result<()> {
    with_state(storage, async |state| {
        let (tenant, token) = tenebra_server::create_tenant(state, name)
            .await
            .map_err(|e| anyhow::anyhow!("{}", e.message))?;
        println!("created tenant {} ({})", tenant.name, tenant.id);
        println!("{token}");
        Ok(())
    })
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
