//! The `tenebra` command-line interface: thin glue over the library crates.

mod cli;
mod config;
mod service;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().collect();
    if let Err(e) = config::apply(&argv) {
        eprintln!("error: {e:#}");
        return ExitCode::FAILURE;
    }
    let args = cli::Cli::parse();
    match cli::run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One clear line: the error and its causes.
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
