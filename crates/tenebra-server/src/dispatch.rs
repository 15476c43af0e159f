//! The serverless worker pool's dispatcher: instead of running tasks, a node hands each
//! runnable task to a serverless executor as an invocation carrying only the task id, and
//! the invocation (`tenebra worker --serverless`, [`crate::worker::TaskRunner`]) claims and
//! runs it with the usual lease and fence. Nothing runs while nothing is queued: the pool
//! scales to zero.
//!
//! - `lambda:NAME` (a function name or ARN): an asynchronous Invoke (`X-Amz-Invocation-Type:
//!   Event`) through the Lambda API, signed with SigV4; Lambda queues the event and retries a
//!   failed one itself.
//! - `cloud-run:URL`: a `POST` of the event to the service's URL, left to run in the
//!   background (a Cloud Run request lasts as long as its task).
//!
//! A task is handed once, and again only if it is still runnable a lease later: the event
//! was lost or throttled, or the invocation died and its lease ran out. An invocation that
//! finds its task claimed or ended does nothing, so duplicates (two dispatchers, the
//! platform's at-least-once delivery) cost one short invocation and nothing else. The
//! dispatcher also runs the sweeps workers run (expired results and key sets, audit
//! checkpoints), since serverless invocations do not.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

use crate::aws::{AwsClient, Method};
use crate::{AppState, ServiceError};

/// Tasks handed per round (more rounds follow at once while there are more).
const BATCH: u32 = 32;
/// Cloud Run requests left running at once (each lasts as long as its task).
const CLOUD_RUN_IN_FLIGHT: usize = 256;
/// The longest a Cloud Run request may take (Cloud Run's own limit is 60 minutes).
const CLOUD_RUN_TIMEOUT: Duration = Duration::from_secs(3600);
/// How often the sweeps run.
const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// Where tasks are sent.
#[derive(Clone)]
pub enum Executor {
    /// An AWS Lambda function, invoked asynchronously.
    Lambda {
        /// The function's name or ARN.
        function: String,
        /// The Lambda API's base URL.
        endpoint: String,
        client: AwsClient,
    },
    /// A Google Cloud Run service (or function) URL.
    CloudRun { url: String, http: reqwest::Client },
}

impl std::fmt::Debug for Executor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.label())
    }
}

impl Executor {
    /// Parses `lambda:NAME` or `cloud-run:URL`. Lambda's region comes from an ARN, else
    /// `AWS_REGION`; its endpoint from `AWS_ENDPOINT_URL_LAMBDA` (then `AWS_ENDPOINT_URL`),
    /// else the region's; credentials from the usual chain.
    pub fn parse(spec: &str) -> Result<Self, ServiceError> {
        let bad = |why: &str| ServiceError::Config(format!("--executor `{spec}`: {why}"));
        if let Some(function) = spec.strip_prefix("lambda:") {
            // A name (64 characters of [A-Za-z0-9_-]) or an ARN, optionally `:QUALIFIER`.
            let ok = !function.is_empty()
                && function.len() <= 170
                && function
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_:$".contains(&b));
            if !ok {
                return Err(bad("not a Lambda function name or ARN"));
            }
            let region = match function.strip_prefix("arn:") {
                Some(arn) => arn.split(':').nth(2).map(str::to_owned),
                None => None,
            }
            .or_else(crate::aws::env_region)
            .ok_or_else(|| bad("no region: give an ARN or set AWS_REGION"))?;
            let endpoint = ["AWS_ENDPOINT_URL_LAMBDA", "AWS_ENDPOINT_URL"]
                .iter()
                .find_map(|k| std::env::var(k).ok().filter(|v| !v.is_empty()))
                .unwrap_or_else(|| format!("https://lambda.{region}.amazonaws.com"));
            return Ok(Executor::Lambda {
                function: function.to_owned(),
                endpoint: endpoint.trim_end_matches('/').to_owned(),
                client: AwsClient::from_env(&region)?,
            });
        }
        if let Some(url) = spec.strip_prefix("cloud-run:") {
            let parsed = reqwest::Url::parse(url).map_err(|e| bad(&e.to_string()))?;
            if !matches!(parsed.scheme(), "https" | "http") || parsed.host_str().is_none() {
                return Err(bad("not an http(s) URL"));
            }
            let http = reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(5))
                .timeout(CLOUD_RUN_TIMEOUT)
                .build()
                .map_err(ServiceError::Http)?;
            return Ok(Executor::CloudRun {
                url: url.to_owned(),
                http,
            });
        }
        Err(bad("expected lambda:NAME or cloud-run:URL"))
    }

    /// `lambda:NAME` or `cloud-run:URL`, as given.
    pub fn label(&self) -> String {
        match self {
            Executor::Lambda { function, .. } => format!("lambda:{function}"),
            Executor::CloudRun { url, .. } => format!("cloud-run:{url}"),
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Executor::Lambda { .. } => "lambda",
            Executor::CloudRun { .. } => "cloud-run",
        }
    }
}

/// How the dispatcher behaves.
#[derive(Debug, Clone)]
pub struct DispatchConfig {
    pub executor: Executor,
    /// The invocations' lease: a task still runnable this long after it was handed out is
    /// handed out again.
    pub lease: Duration,
    /// How often the queue is looked at when no wake-up arrives (expired leases show up
    /// only this way).
    pub poll: Duration,
}

/// Hands runnable tasks to the executor until `stop` turns true.
pub async fn run(
    state: AppState,
    cfg: DispatchConfig,
    mut stop: watch::Receiver<bool>,
) -> Result<(), tenebra_store::StoreError> {
    let mut listener = state.store.task_listener().await?;
    let in_flight = Arc::new(Semaphore::new(CLOUD_RUN_IN_FLIGHT));
    let mut background = JoinSet::new();
    let mut last_sweep: Option<Instant> = None;
    tracing::info!(executor = %cfg.executor.label(), "dispatcher started");
    loop {
        if *stop.borrow() {
            break;
        }
        if last_sweep.is_none_or(|t| t.elapsed() >= SWEEP_EVERY) {
            crate::worker::sweep(&state).await;
            last_sweep = Some(Instant::now());
        }
        while background.try_join_next().is_some() {}
        let handed = match state.store.dispatch_tasks(BATCH, cfg.lease).await {
            Ok(ids) => ids,
            Err(e) => {
                tracing::warn!(error = %e, "finding tasks to dispatch failed");
                Vec::new()
            }
        };
        let full = handed.len() == BATCH as usize;
        let mut round = JoinSet::new();
        for id in handed {
            let executor = cfg.executor.clone();
            match &executor {
                Executor::Lambda { .. } => {
                    round.spawn(async move { invoke_lambda(&executor, &id).await });
                }
                Executor::CloudRun { .. } => {
                    // Held for as long as the request runs.
                    let Ok(permit) = in_flight.clone().acquire_owned().await else {
                        break;
                    };
                    background.spawn(async move {
                        post_cloud_run(&executor, &id).await;
                        drop(permit);
                    });
                }
            }
        }
        while round.join_next().await.is_some() {}
        if full {
            continue;
        }
        tokio::select! {
            () = state.wake.notified() => {}
            () = listener.wait() => {}
            () = tokio::time::sleep(cfg.poll) => {}
            _ = stop.changed() => {}
        }
    }
    // Requests in flight are dropped: their invocations go on, and a lost one is handed
    // again by the next dispatcher after its lease.
    background.abort_all();
    tracing::info!("dispatcher stopped");
    Ok(())
}

fn counted(executor: &Executor, outcome: &'static str) {
    metrics::counter!("tenebra_dispatched_total", "executor" => executor.kind(), "outcome" => outcome)
        .increment(1);
}

/// An asynchronous invocation; Lambda answers 202 once it has queued the event.
async fn invoke_lambda(executor: &Executor, task: &str) {
    let Executor::Lambda {
        function,
        endpoint,
        client,
    } = executor
    else {
        return;
    };
    let url = format!("{endpoint}/2015-03-31/functions/{function}/invocations");
    let headers = [
        ("content-type", "application/json"),
        ("x-amz-invocation-type", "Event"),
    ];
    let body = json!({ "task_id": task }).to_string().into_bytes();
    match client
        .call("lambda", Method::POST, &url, &headers, body)
        .await
    {
        Ok(_) => counted(executor, "sent"),
        Err(e) => {
            // Left marked: handed again after a lease (throttling passes; a wrong name or
            // role shows in this log line and the metric).
            counted(executor, "failed");
            tracing::warn!(task, function = %function, status = ?e.status, kind = %e.kind, error = %e.message, "invoking Lambda failed");
        }
    }
}

/// A request to the Cloud Run service, which answers when the task has ended.
async fn post_cloud_run(executor: &Executor, task: &str) {
    let Executor::CloudRun { url, http } = executor else {
        return;
    };
    let sent = http
        .post(url)
        .json(&json!({ "task_id": task }))
        .send()
        .await;
    match sent {
        Ok(r) if r.status().is_success() => counted(executor, "sent"),
        Ok(r) => {
            counted(executor, "failed");
            tracing::warn!(
                task,
                status = r.status().as_u16(),
                "the Cloud Run service refused a task"
            );
        }
        Err(e) => {
            counted(executor, "failed");
            tracing::warn!(task, error = %e, "posting a task to Cloud Run failed");
        }
    }
}
