//! What the commands print: JSON on stdout (one line, for people and for `jq` alike), and
//! progress bars on stderr when it is a terminal.

use std::io::{IsTerminal, Write};
use std::path::Path;

use anyhow::{bail, Result};
use serde::Serialize;
use tenebra_client::http::{Client, Task};

/// Prints `v` as one line of JSON.
pub fn print_json<T: Serialize + ?Sized>(v: &T) -> Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer(&mut out, v)?;
    writeln!(out)?;
    Ok(())
}

fn bar(len: u64, template: &str) -> Option<indicatif::ProgressBar> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = indicatif::ProgressBar::new(len);
    if let Ok(style) = indicatif::ProgressStyle::with_template(template) {
        bar.set_style(style);
    }
    Some(bar)
}

/// A bar over `steps` ops of a local evaluation.
pub fn ops_bar(steps: u64) -> Option<indicatif::ProgressBar> {
    bar(
        steps,
        "{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} ops",
    )
}

/// A bar that follows a task's status.
pub struct TaskBar(Option<indicatif::ProgressBar>);

impl TaskBar {
    pub fn new() -> Self {
        Self(bar(
            0,
            "{spinner} [{elapsed_precise}] {msg:9} {bar:40} {pos}/{len} ops",
        ))
    }

    pub fn update(&self, t: &Task) {
        if let Some(b) = &self.0 {
            b.set_message(t.status.clone());
            b.set_length(t.progress.total.max(0) as u64);
            b.set_position(t.progress.done.max(0) as u64);
        }
    }

    pub fn finish(self) {
        if let Some(b) = self.0 {
            b.finish_and_clear();
        }
    }
}

/// The SDK's whole run of `function` on `input` (`Client::run_with`), with a task bar.
pub async fn run_with_bar(
    client: &Client,
    keys: &Path,
    function: &str,
    input: &serde_json::Value,
) -> Result<tenebra_client::run::Finished> {
    let bar = TaskBar::new();
    let done = client
        .run_with(keys, function, input, |t| bar.update(t))
        .await;
    bar.finish();
    Ok(done?)
}

/// Waits for a task with a task bar.
pub async fn wait_with_bar(client: &Client, id: &str) -> Result<Task> {
    let bar = TaskBar::new();
    let t = client.wait_task(id, |t| bar.update(t)).await;
    bar.finish();
    Ok(t?)
}

/// Fails unless the task succeeded, with its reason.
pub fn succeeded(t: &Task) -> Result<()> {
    match (t.status.as_str(), &t.error) {
        ("succeeded", _) => Ok(()),
        (_, Some(e)) => bail!("task {} {}: {} ({})", t.id, t.status, e.message, e.code),
        (s, None) => bail!("task {} {s}", t.id),
    }
}
