//! `tenebra bench ...`: runs a benchmark of `tenebra-bench`, prints its report and, with
//! `--write`, puts it in its part of BENCHMARKS.md.

use std::path::Path;

use anyhow::{Context, Result};
use tenebra_bench::doc::{self, Part};

use crate::args::BenchCommand;
use tenebra_circuit::{AnyCircuit, AnyLimits};

use crate::io::{ensure_keys, read_limited, write_file, JSON_LIMIT};

pub fn bench(command: BenchCommand) -> Result<()> {
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
        BenchCommand::Service { keys, reps, write } => {
            let (client, server) = ensure_keys(&keys)?;
            let measured =
                tenebra_bench::service::bench_service(&keys, &client, server, reps, &mut log)
                    .map_err(|e| anyhow::anyhow!(e))?;
            let section = tenebra_bench::service::service_report(&measured);
            publish(&section, Part::Section(doc::SERVICE), write.as_deref())
        }
        BenchCommand::Serverless { keys, reps, write } => {
            use tenebra_bench::serverless::{bench_serverless, serverless_report};
            let (client, _) = ensure_keys(&keys)?;
            let exe = std::env::current_exe().context("finding this binary")?;
            let tmp = tempfile::tempdir()?;
            let zip = tmp.path().join("function.zip");
            crate::io::write_lambda_zip(&zip, &exe, &[])?;
            let zip_bytes = std::fs::metadata(&zip)?.len();
            let run = bench_serverless(&exe, &keys, &client, zip_bytes, reps.max(1), &mut log)
                .map_err(|e| anyhow::anyhow!(e))?;
            publish(
                &serverless_report(&run),
                Part::Section(doc::SERVERLESS),
                write.as_deref(),
            )
        }
        BenchCommand::Overhead {
            keys,
            database_url,
            clients,
            tasks,
            workers,
            queue_tasks,
            write,
        } => {
            use tenebra_bench::overhead::{bench_overhead, bench_queue, overhead_report};
            let (client, _) = ensure_keys(&keys)?;
            let mut rows = Vec::new();
            let mut queue = Vec::new();
            let urls = std::iter::once(None).chain(database_url.as_deref().map(Some));
            for url in urls {
                for &n in &clients {
                    rows.push(
                        bench_overhead(&keys, &client, url, n, tasks, &mut log)
                            .map_err(|e| anyhow::anyhow!(e))?,
                    );
                }
                for &w in &workers {
                    queue.push(
                        bench_queue(url, w, queue_tasks, &mut log)
                            .map_err(|e| anyhow::anyhow!(e))?,
                    );
                }
            }
            let section = overhead_report(&rows, &queue);
            publish(&section, Part::Section(doc::OVERHEAD), write.as_deref())
        }
        BenchCommand::Function {
            keys,
            circuit,
            function,
            size,
            reps,
        } => {
            let circuit = match (circuit, function) {
                (Some(path), _) => {
                    let json = read_limited(&path, JSON_LIMIT)?;
                    AnyCircuit::parse(&json, &AnyLimits::default()).with_context(|| {
                        format!("{} is not a circuit the service takes", path.display())
                    })?
                }
                (None, Some(name)) => tenebra_functions::builtin(&name)?.circuit(size)?,
                (None, None) => anyhow::bail!("give --circuit FILE or --function NAME"),
            };
            let tfhe = match &circuit {
                AnyCircuit::Tfhe(_) => Some(ensure_keys(&keys)?),
                AnyCircuit::Bfv(_) => None,
            };
            let tfhe = tfhe.map(|(c, s)| (c, std::sync::Arc::new(s)));
            let measured = tenebra_bench::function::bench_function(
                &keys,
                tfhe.as_ref().map(|(c, s)| (c, s.clone())),
                &circuit,
                reps,
                &mut log,
            )
            .map_err(|e| anyhow::anyhow!(e))?;
            crate::output::print_json(&measured)
        }
        BenchCommand::Bfv { reps, write } => {
            let reps = reps.max(1);
            let results =
                tenebra_bench::bfv::bench_bfv(reps, &mut log).map_err(anyhow::Error::msg)?;
            let section = tenebra_bench::bfv::bfv_report(&results, reps);
            publish(&section, Part::Section(doc::BFV), write.as_deref())
        }
        BenchCommand::Compare { keys, reps, write } => {
            let reps = reps.max(1);
            let (client, server) = ensure_keys(&keys)?;
            let cases = tenebra_bench::default_cases();
            let results = tenebra_bench::compare(&client, &server, &cases, reps, &mut log)
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            publish(
                &tenebra_bench::report(&results, reps),
                Part::Head,
                write.as_deref(),
            )
        }
    }
}

/// Prints a report, and writes it as `part` of the file at `write`.
fn publish(report: &str, part: Part, write: Option<&Path>) -> Result<()> {
    println!("{}", report.trim_end());
    if let Some(path) = write {
        doc::write(path, part, report).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}
