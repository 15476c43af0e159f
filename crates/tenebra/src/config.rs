//! The optional config file: `--config FILE` or `TENEBRA_CONFIG`, TOML whose keys are the
//! flags' environment names without the `TENEBRA_` prefix, in lower case (`listen`,
//! `data_dir`, `database_url`, `lease_secs`, ...). Precedence: defaults < file < environment
//! < flags. The file's values are applied as the environment variables the flags read,
//! unless the environment already sets them; an unknown key is an error, so a typo is
//! not silently ignored.

use std::collections::BTreeSet;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::CommandFactory;

use crate::args::Cli;

const CONFIG_LIMIT: u64 = 1 << 20;

/// Every `TENEBRA_*` variable some flag reads.
fn known_variables() -> BTreeSet<String> {
    fn walk(cmd: &clap::Command, out: &mut BTreeSet<String>) {
        for arg in cmd.get_arguments() {
            if let Some(env) = arg.get_env().and_then(|e| e.to_str()) {
                out.insert(env.to_owned());
            }
        }
        for sub in cmd.get_subcommands() {
            walk(sub, out);
        }
    }
    let mut out = BTreeSet::new();
    walk(&Cli::command(), &mut out);
    out
}

/// The config file named on the command line (`--config FILE` / `--config=FILE`) or in
/// `TENEBRA_CONFIG`.
fn config_path(args: &[String]) -> Option<PathBuf> {
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "--config" {
            return it.next().map(PathBuf::from);
        }
        if let Some(p) = a.strip_prefix("--config=") {
            return Some(PathBuf::from(p));
        }
    }
    std::env::var_os("TENEBRA_CONFIG").map(PathBuf::from)
}

/// Reads the config file, if any, into the environment. Call before parsing arguments and
/// before any thread starts.
pub fn apply(args: &[String]) -> Result<()> {
    let Some(path) = config_path(args) else {
        return Ok(());
    };
    let bytes = crate::io::read_limited(&path, CONFIG_LIMIT)?;
    let text =
        String::from_utf8(bytes).with_context(|| format!("{} is not UTF-8", path.display()))?;
    let table: toml::Table =
        toml::from_str(&text).with_context(|| format!("{} is not valid TOML", path.display()))?;
    let known = known_variables();
    for (key, value) in table {
        let var = format!("TENEBRA_{}", key.to_ascii_uppercase());
        if !known.contains(&var) || var == "TENEBRA_CONFIG" {
            bail!(
                "{}: unknown setting `{key}` (known: {})",
                path.display(),
                known
                    .iter()
                    .filter(|v| *v != "TENEBRA_CONFIG")
                    .map(|v| v.trim_start_matches("TENEBRA_").to_ascii_lowercase())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        let text = match value {
            toml::Value::String(s) => s,
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            other => bail!(
                "{}: `{key}` must be a string, an integer or a boolean, not {}",
                path.display(),
                other.type_str()
            ),
        };
        if std::env::var_os(&var).is_none() {
            std::env::set_var(var, text);
        }
    }
    Ok(())
}
