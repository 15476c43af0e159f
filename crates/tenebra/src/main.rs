//! The `tenebra` command-line interface: thin glue over the library crates.
//!
//! `args` holds every flag and subcommand; each command group has its module (`local`: no
//! server; `remote`: a server, as a tenant; `service`: running the service; `account`:
//! money, audit and operator commands; `bench`); `io` and `output` are what they share.
//! `main` parses, then dispatches.

mod account;
mod args;
mod bench;
mod config;
mod io;
mod local;
mod models;
mod output;
mod remote;
mod serverless;
mod service;

use std::process::ExitCode;

use anyhow::Result;
use clap::Parser;

use args::{AdminCommand, Cli, Command, FunctionsCommand, KeysCommand, TenantsCommand};

fn main() -> ExitCode {
    let mut argv: Vec<String> = std::env::args().collect();
    // On Lambda the runtime is started as `bootstrap`, without arguments.
    if serverless::is_lambda_bootstrap(&argv) {
        argv = serverless::lambda_bootstrap_args();
    }
    if let Err(e) = config::apply(&argv) {
        eprintln!("error: {e:#}");
        return ExitCode::FAILURE;
    }
    let args = Cli::parse_from(&argv);
    init_logs(args.is_service());
    match dispatch(args.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One clear line: the error and its causes.
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs one command (the config file was applied to the environment before parsing).
fn dispatch(command: Command) -> Result<()> {
    match command {
        Command::Keys { command } => match command {
            KeysCommand::Generate { out } => local::keys_generate(&out),
            KeysCommand::Export { keys, out } => local::keys_export(&keys, &out),
            KeysCommand::Upload {
                keys,
                ttl_secs,
                server,
            } => remote::keys_upload(&server, &keys, ttl_secs),
        },
        Command::Functions { command } => match command {
            FunctionsCommand::List { server } if server.api_key.is_some() => {
                remote::functions_list(&server)
            }
            FunctionsCommand::List { .. } => local::functions_list(),
            FunctionsCommand::Deploy {
                circuit,
                target: Some(args::DeployTarget::Lambda),
                lambda,
                server: _,
            } => serverless::deploy_lambda(circuit.as_deref(), &lambda),
            FunctionsCommand::Deploy {
                circuit, server, ..
            } => match circuit {
                Some(c) => remote::deploy(&server, &c),
                None => anyhow::bail!("give --circuit FILE (--zip is for --target lambda)"),
            },
            FunctionsCommand::Package {
                target,
                circuit,
                out,
                function_name,
            } => serverless::package_command(target, &circuit, &out, &function_name),
            FunctionsCommand::Delete {
                name,
                version,
                server,
            } => remote::delete_function(&server, &name, version),
            FunctionsCommand::Show { function, size } => local::functions_show(&function, size),
        },
        Command::Simulate { function, input } => local::simulate(&function, &input),
        Command::Encrypt {
            keys,
            function,
            input,
            out,
        } => local::encrypt_file(&keys, &function, &input, &out),
        Command::Eval {
            keys,
            function,
            input,
            out,
        } => local::eval(&keys, &function, &input, &out),
        Command::Decrypt {
            keys,
            function,
            input,
        } => local::decrypt_file(&keys, &function, &input),
        Command::Serve {
            listen,
            no_worker,
            executor,
            storage,
            workers,
        } => service::serve(&listen, &storage, &workers, no_worker, executor.as_deref()),
        Command::Worker {
            serverless: true,
            listen,
            storage,
            workers,
            ..
        } => serverless::pool_worker(&storage, &workers, listen),
        Command::Worker {
            metrics_listen,
            storage,
            workers,
            ..
        } => service::worker(&storage, &workers, metrics_listen.as_deref()),
        Command::Demo { keys, data_dir } => service::demo(keys, data_dir),
        Command::Runtime {
            circuits,
            cache_dir,
            listen,
            allow_url,
            concurrency,
        } => serverless::function_runtime(
            circuits.as_deref(),
            cache_dir,
            listen,
            allow_url,
            concurrency,
        ),
        Command::Task { server, command } => remote::task(&server, command),
        Command::Models { server, command } => models::models(&server, command),
        Command::Run {
            keys,
            function,
            input,
            server,
        } => remote::run(&server, &keys, &function, &input),
        Command::Account(command) => account::account(command),
        Command::Audit { command } => account::audit(command),
        Command::Admin { storage, command } => match command {
            AdminCommand::Plans { command } => account::plans(&storage, command),
            AdminCommand::MeterEvents(args) => account::meter_events(&storage, args),
            AdminCommand::RotateMasterKey { retire } => {
                account::rotate_master_key(&storage, retire)
            }
            AdminCommand::Tenants {
                command: TenantsCommand::Create { name },
            } => account::create_tenant(&storage, &name),
            AdminCommand::Tenants {
                command:
                    TenantsCommand::SetBilling {
                        tenant,
                        stripe_customer,
                        none: _,
                    },
            } => account::set_billing(&storage, &tenant, stripe_customer.as_deref()),
        },
        Command::Bench { command } => bench::bench(command),
    }
}

/// Logs go to stderr; `RUST_LOG` picks what (default: `info` for the service's own commands,
/// which log each request and task, `warn` for the others, whose output is for people).
fn init_logs(service: bool) {
    let default = if service { "info" } else { "warn" };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}
