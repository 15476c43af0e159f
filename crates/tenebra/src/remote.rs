//! Commands that talk to a server as a tenant: key set upload, tasks, `run`, and deployed
//! functions. Each is one call of the SDK's HTTP client.

use std::path::Path;

use anyhow::{Context, Result};

use crate::args::{ServerArgs, TaskCommand};
use crate::io::{read_json, read_limited, runtime, write_file, BUNDLE_LIMIT, JSON_LIMIT};
use crate::output::{print_json, run_with_bar, succeeded, wait_with_bar};

/// `tenebra keys upload`.
pub fn keys_upload(server: &ServerArgs, keys: &Path, ttl_secs: Option<u64>) -> Result<()> {
    let body = tenebra_engine::keys::read_upload(keys)
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

/// `tenebra task ...`.
pub fn task(server: &ServerArgs, command: TaskCommand) -> Result<()> {
    let client = server.client()?;
    runtime()?.block_on(async {
        match command {
            TaskCommand::Submit {
                input,
                idempotency_key,
            } => {
                let bytes = read_limited(&input, BUNDLE_LIMIT)?;
                let t = client
                    .submit_task(bytes, idempotency_key.as_deref())
                    .await?;
                eprintln!("task {} {} ({} CU)", t.id, t.status, t.cost_cu);
                println!("{}", t.id);
                Ok(())
            }
            TaskCommand::Status { id } => print_json(&client.task(&id).await?),
            TaskCommand::Wait { id } => {
                let t = wait_with_bar(&client, &id).await?;
                print_json(&t)?;
                succeeded(&t)
            }
            TaskCommand::Result { id, out } => write_file(&out, &client.task_result(&id).await?),
            TaskCommand::Cancel { id } => print_json(&client.cancel_task(&id).await?),
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

/// `tenebra run`: the SDK's `Client::run_with` (encrypt, upload the key set if needed,
/// submit, wait, download, decrypt) with a progress bar; prints the result JSON. `function`
/// is a built-in, a model split or one of the tenant's deployed functions (its latest
/// version).
pub fn run(server: &ServerArgs, keys: &Path, function: &str, input: &Path) -> Result<()> {
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
pub fn deploy(server: &ServerArgs, circuit: &Path) -> Result<()> {
    let json = read_limited(circuit, JSON_LIMIT)?;
    let client = server.client()?;
    let f = runtime()?.block_on(client.deploy_function(json))?;
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
