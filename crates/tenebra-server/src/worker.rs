//! Workers: claim tasks from the store, run them with the engine, store the results.
//!
//! One loop per process claims up to `concurrency` tasks at a time (the engine already uses
//! every core for one task, so the default is 1). While a task runs, its lease is renewed
//! every third of the lease with the progress; the answer carries the tenant's cancel
//! request. A worker whose lease was taken over stops and writes nothing (every write names
//! the claim's fence, and result blobs carry it in their name). Failures the client caused
//! (bad input, deleted key set) fail the task at once; failures on our side are retried with
//! exponential backoff up to `max_attempts`. On shutdown the loop stops claiming, lets
//! running tasks finish for a grace period, then gives them back to the queue.
//!
//! Decompressing an evaluation key takes about a second and ~200 MiB, so keys are kept in
//! an LRU bounded by a memory budget and shared by the tasks of a key set.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tenebra_circuit::{AnyCircuit, Scheme};
use tenebra_engine::bfv::BfvKeySet;
use tenebra_engine::keys::unpack_upload;
use tenebra_engine::scheme::KEY_SET_LIMIT;
use tenebra_engine::{EngineError, EvalKeys, Progress, RunOptions, ServerKeys};
use tenebra_store::{now_ms, Outcome, StoreError, Task};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

use crate::catalogue::{self, Want};
use crate::tasks::TASK_INPUT_LIMIT;
use crate::{blobs, AppState};

/// BFV key sets kept checked in memory (a few MiB each).
const BFV_KEY_SETS: usize = 32;

/// Memory one decompressed key set holds (server key ~172 MiB plus the public key).
pub const KEY_SET_MEMORY: u64 = 200 << 20;
/// How often expired results are swept.
const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// How a worker behaves.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Name in the task rows (`worker_id`).
    pub id: String,
    /// Tasks run at once.
    pub concurrency: usize,
    /// A claim's lease; renewed every third of it.
    pub lease: Duration,
    /// How often the queue is polled when no wake-up arrives.
    pub poll: Duration,
    /// Runs per task before it fails for good (crashes and internal errors).
    pub max_attempts: u32,
    /// Delay before the first retry; doubled at each attempt.
    pub retry_delay: Duration,
    /// Memory budget of the evaluation key cache.
    pub key_cache_bytes: u64,
    /// How long results are kept.
    pub result_ttl: Duration,
    /// How long running tasks may finish after shutdown was asked before they are released.
    pub shutdown_grace: Duration,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            id: tenebra_store::new_id("worker"),
            concurrency: 1,
            lease: Duration::from_secs(30),
            poll: Duration::from_secs(2),
            max_attempts: 3,
            retry_delay: Duration::from_secs(5),
            key_cache_bytes: 4 * KEY_SET_MEMORY,
            result_ttl: Duration::from_secs(24 * 3600),
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

/// Decompressed evaluation keys, most recently used first.
struct KeyCache {
    capacity: usize,
    entries: Mutex<VecDeque<(String, Arc<ServerKeys>)>>,
    bfv: Mutex<VecDeque<(String, BfvKeySet)>>,
}

impl KeyCache {
    fn new(budget: u64) -> Self {
        Self {
            capacity: usize::try_from(budget / KEY_SET_MEMORY).unwrap_or(1).max(1),
            bfv: Mutex::default(),
            entries: Mutex::new(VecDeque::new()),
        }
    }

    /// The key set `id` if it is cached (it becomes the most recently used).
    fn cached(&self, id: &str) -> Option<Arc<ServerKeys>> {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let i = entries.iter().position(|(k, _)| k == id)?;
        let entry = entries.remove(i)?;
        let keys = entry.1.clone();
        entries.push_front(entry);
        metrics::counter!("tenebra_key_cache_hits_total").increment(1);
        Some(keys)
    }

    /// A BFV key set if it is cached.
    fn cached_bfv(&self, id: &str) -> Option<BfvKeySet> {
        let bfv = self.bfv.lock().unwrap_or_else(|e| e.into_inner());
        bfv.iter().find(|(k, _)| k == id).map(|(_, v)| v.clone())
    }

    /// Checks an uploaded BFV key set and caches it (its decoded keys are cached inside).
    fn load_bfv(&self, id: &str, upload: Vec<u8>) -> Result<BfvKeySet, EngineError> {
        let keys = BfvKeySet::parse(upload)?;
        let mut bfv = self.bfv.lock().unwrap_or_else(|e| e.into_inner());
        bfv.retain(|(k, _)| k != id);
        bfv.push_front((id.to_owned(), keys.clone()));
        bfv.truncate(BFV_KEY_SETS);
        Ok(keys)
    }

    /// The cached keys of key set `id` for `scheme`, if any.
    fn cached_any(&self, scheme: Scheme, id: &str) -> Option<EvalKeys> {
        match scheme {
            Scheme::Tfhe => self.cached(id).map(EvalKeys::Tfhe),
            Scheme::Bfv => self.cached_bfv(id).map(EvalKeys::Bfv),
        }
    }

    /// Checks and decodes an uploaded key set of `scheme` (blocking: a TFHE key takes about a
    /// second) and caches it.
    fn load_any(&self, scheme: Scheme, id: &str, upload: Vec<u8>) -> Result<EvalKeys, EngineError> {
        match scheme {
            Scheme::Tfhe => self.load(id, &upload).map(EvalKeys::Tfhe),
            Scheme::Bfv => self.load_bfv(id, upload).map(EvalKeys::Bfv),
        }
    }

    /// Decompresses an uploaded key set (about a second) and caches it.
    fn load(&self, id: &str, upload: &[u8]) -> Result<Arc<ServerKeys>, EngineError> {
        metrics::counter!("tenebra_key_cache_misses_total").increment(1);
        let (server_key, public_key) = unpack_upload(upload)?;
        let keys = Arc::new(ServerKeys::from_bytes(server_key, public_key)?);
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.retain(|(k, _)| k != id);
        entries.push_front((id.to_owned(), keys.clone()));
        entries.truncate(self.capacity);
        Ok(keys)
    }
}

/// Why a run was asked to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Stop {
    None = 0,
    Cancel = 1,
    LeaseLost = 2,
    Shutdown = 3,
}

/// A run's stop flag (read by the engine between nodes) and its reason.
#[derive(Default)]
struct StopFlag {
    flag: AtomicBool,
    reason: AtomicU8,
}

impl StopFlag {
    fn set(&self, why: Stop) {
        // The first reason wins: a cancel seen before a shutdown is still a cancel.
        let _ = self
            .reason
            .compare_exchange(0, why as u8, Ordering::SeqCst, Ordering::SeqCst);
        self.flag.store(true, Ordering::SeqCst);
    }

    fn reason(&self) -> Stop {
        match self.reason.load(Ordering::SeqCst) {
            1 => Stop::Cancel,
            2 => Stop::LeaseLost,
            3 => Stop::Shutdown,
            _ => Stop::None,
        }
    }
}

/// A worker: the shared state plus its key cache.
struct Worker {
    state: AppState,
    cfg: WorkerConfig,
    keys: Arc<KeyCache>,
}

/// Runs a worker loop until `stop` turns true, then drains (see the module docs).
pub async fn run(
    state: AppState,
    cfg: WorkerConfig,
    mut stop: watch::Receiver<bool>,
) -> Result<(), StoreError> {
    let mut listener = state.store.task_listener().await?;
    let slots = Arc::new(Semaphore::new(cfg.concurrency.max(1)));
    let worker = Arc::new(Worker {
        keys: Arc::new(KeyCache::new(cfg.key_cache_bytes)),
        state,
        cfg,
    });
    tracing::info!(worker = %worker.cfg.id, "worker started");
    let mut running = JoinSet::new();
    let mut last_sweep: Option<Instant> = None;
    loop {
        if *stop.borrow() {
            break;
        }
        if last_sweep.is_none_or(|t| t.elapsed() >= SWEEP_EVERY) {
            sweep(&worker.state).await;
            last_sweep = Some(Instant::now());
        }
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            _ = stop.changed() => break,
        };
        let w = &worker.cfg;
        let claimed = worker
            .state
            .store
            .claim_task_reaping(&w.id, w.lease, w.max_attempts)
            .await;
        if let Ok((_, reaped)) = &claimed {
            forget_reaped(&worker.state, reaped).await;
        }
        match claimed.map(|(t, _)| t) {
            Ok(Some(task)) => {
                let (worker, stop) = (worker.clone(), stop.clone());
                running.spawn(async move {
                    worker.process(task, stop).await;
                    drop(permit);
                });
                continue;
            }
            Ok(None) => drop(permit),
            Err(e) => {
                drop(permit);
                tracing::warn!(error = %e, "claiming a task failed");
            }
        }
        tokio::select! {
            () = worker.state.wake.notified() => {}
            () = listener.wait() => {}
            () = tokio::time::sleep(worker.cfg.poll) => {}
            _ = stop.changed() => {}
        }
        while running.try_join_next().is_some() {}
    }
    tracing::info!(worker = %worker.cfg.id, in_flight = running.len(), "worker stopping");
    while running.join_next().await.is_some() {}
    Ok(())
}

/// Abandoned tasks that ended while being reaped by a claim: their waiters are woken and
/// their inputs freed here.
async fn forget_reaped(state: &AppState, reaped: &[Task]) {
    for t in reaped {
        let _ = state.task_ended.send(t.id.as_str().into());
        let input = blobs::task_input(&t.tenant_id, &t.id);
        if let Err(e) = state.blobs.remove(&input).await {
            tracing::warn!(task = %t.id, error = %e, "removing a reaped task's input");
        }
    }
}

/// What an invocation naming a task did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Invoked {
    pub task_id: String,
    /// Whether this invocation claimed and ran it (false: another one holds it, it ended,
    /// or its retry is not due yet; nothing to do).
    pub ran: bool,
    /// Its status afterwards, when it exists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
}

/// Runs the tasks serverless invocations name (the serverless worker pool: each dispatched
/// invocation carries only a task id). A task is claimed with the usual lease and fence and
/// run exactly as [`run`]'s workers run it (heartbeats, cancellation, retries, metering,
/// audit); the key cache lasts as long as the runner, across warm invocations.
pub struct TaskRunner {
    worker: Worker,
}

impl TaskRunner {
    pub fn new(state: AppState, cfg: WorkerConfig) -> Self {
        Self {
            worker: Worker {
                keys: Arc::new(KeyCache::new(cfg.key_cache_bytes)),
                state,
                cfg,
            },
        }
    }

    /// Claims task `id` if it is runnable and runs it to its end. With a `deadline` (the
    /// platform's end of this invocation) a run still going a grace period before it is
    /// given back to the queue, as at a worker's shutdown, instead of being killed with its
    /// lease held. An error is the store's: the platform should retry the invocation.
    pub async fn run_task(
        &self,
        id: &str,
        deadline: Option<Instant>,
    ) -> Result<Invoked, StoreError> {
        let w = &self.worker;
        let (task, reaped) = w
            .state
            .store
            .claim_task_by_id(id, &w.cfg.id, w.cfg.lease, w.cfg.max_attempts)
            .await?;
        forget_reaped(&w.state, &reaped).await;
        let ran = task.is_some();
        if let Some(task) = task {
            // Kept until the run ends: a dropped sender reads as a shutdown.
            let (stop, rx) = watch::channel(false);
            let stop = Arc::new(stop);
            // The drain starts `shutdown_grace` (plus a margin to record it) before the end.
            let margin = w.cfg.shutdown_grace + Duration::from_secs(2);
            let timer = deadline.map(|d| {
                let stop = stop.clone();
                tokio::spawn(async move {
                    tokio::time::sleep_until(d.checked_sub(margin).unwrap_or(d).into()).await;
                    let _ = stop.send(true);
                })
            });
            w.process(task, rx).await;
            if let Some(t) = timer {
                t.abort();
            }
        }
        let status = match w.state.store.task_by_id(id).await {
            Ok(t) => Some(t.status.as_str().to_owned()),
            Err(StoreError::NotFound) => None,
            Err(e) => return Err(e),
        };
        Ok(Invoked {
            task_id: id.to_owned(),
            ran,
            status,
        })
    }
}

/// Marks results past their time to live as expired and deletes key sets past theirs,
/// with their blobs (workers do it every minute).
pub async fn sweep(state: &AppState) {
    match state.store.expire_key_sets().await {
        Ok(expired) => {
            for k in expired {
                let path = blobs::key_set(&k.tenant_id, &k.id);
                if let Err(e) = state.blobs.remove(&path).await {
                    tracing::warn!(key_set = %k.id, error = %e, "removing an expired key set");
                }
            }
        }
        Err(e) => tracing::warn!(error = %e, "expiring key sets failed"),
    }
    match state.store.expire_results().await {
        Ok(expired) => {
            for t in expired {
                let path = blobs::task_result(&t.tenant_id, &t.id, t.fence);
                if let Err(e) = state.blobs.remove(&path).await {
                    tracing::warn!(task = %t.id, error = %e, "removing an expired result");
                }
            }
        }
        Err(e) => tracing::warn!(error = %e, "expiring results failed"),
    }
    if let Err(e) = state.store.prune_rate_windows().await {
        tracing::warn!(error = %e, "pruning rate-limit counters failed");
    }
    if let Err(e) = crate::audit::checkpoint(state).await {
        tracing::warn!(error = %crate::Causes(&e), "signing an audit checkpoint failed");
    }
}

/// What recording a task's end came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Finish {
    Recorded,
    /// Another claim holds the task: nothing of this run was recorded.
    LeaseLost,
    /// The store failed: the end may or may not have been recorded.
    Unknown,
}

/// Why a task cannot start.
enum Prep {
    /// The client's doing (deleted key set or function, lost input): fail at once.
    Fail(&'static str, String),
    /// Ours: try again later.
    Retry(&'static str),
}

impl Worker {
    /// What a run needs besides the key: the circuit the task names and its input.
    async fn prepare(&self, task: &Task) -> Result<(AnyCircuit, Vec<u8>), Prep> {
        match self
            .state
            .store
            .key_set(&task.tenant_id, &task.key_set_id)
            .await
        {
            Err(StoreError::NotFound) => {
                return Err(Prep::Fail(
                    "key_set_not_found",
                    "the key set of this task was deleted before it ran".to_owned(),
                ))
            }
            Err(e) => tracing::warn!(task = %task.id, error = %e, "reading the key set row"),
            Ok(_) => {}
        }
        let want = Want::Input {
            size: u32::try_from(task.size).unwrap_or(u32::MAX),
            circuit_id: &task.circuit_id,
        };
        let circuit = catalogue::resolve(&self.state, &task.tenant_id, &task.function, want)
            .await
            .map_err(|e| {
                if e.status.is_client_error()
                    && e.status != axum::http::StatusCode::TOO_MANY_REQUESTS
                {
                    // The function was deleted or changed since the task was submitted (a busy
                    // tenant's 429 is only a wait: the task is retried).
                    Prep::Fail(e.code, e.message)
                } else {
                    Prep::Retry("reading the function failed")
                }
            })?;
        let path = blobs::task_input(&task.tenant_id, &task.id);
        match self.state.blobs.get(&path, TASK_INPUT_LIMIT as u64).await {
            Ok(input) => Ok((circuit, input)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(Prep::Fail(
                "input_lost",
                "the encrypted input of this task is missing".to_owned(),
            )),
            Err(e) => {
                tracing::error!(task = %task.id, error = %e, "reading a task's input");
                Err(Prep::Retry("the run failed on our side"))
            }
        }
    }

    async fn process(&self, task: Task, mut stop: watch::Receiver<bool>) {
        let started = Instant::now();
        let store = &self.state.store;
        tracing::info!(task = %task.id, function = %task.function, attempt = task.attempts, "running");
        let (circuit, input) = match self.prepare(&task).await {
            Ok(ready) => ready,
            Err(Prep::Fail(code, message)) => {
                let outcome = Outcome::Failed {
                    code: code.to_owned(),
                    message,
                };
                self.finish(&task, &outcome, started).await;
                return;
            }
            Err(Prep::Retry(why)) => {
                self.retry(&task, why).await;
                return;
            }
        };

        let flag = Arc::new(StopFlag::default());
        let progress = Arc::new((AtomicUsize::new(0), AtomicUsize::new(0)));
        let run = {
            let (flag, progress) = (flag.clone(), progress.clone());
            let cache = self.keys.clone();
            let blobs = self.state.blobs.clone();
            let key_path = blobs::key_set(&task.tenant_id, &task.key_set_id);
            let key_set_id = task.key_set_id.clone();
            async move {
                let io = |e: std::io::Error| EngineError::Io(e.to_string());
                let scheme = circuit.scheme();
                let cached = cache.cached_any(scheme, &key_set_id);
                let upload = match cached {
                    Some(_) => None,
                    None => Some(blobs.get(&key_path, KEY_SET_LIMIT).await.map_err(io)?),
                };
                // Decoding the key and the engine block (rayon): off the async threads. The
                // engine checks that the input names this very circuit and key set.
                tokio::task::spawn_blocking(move || {
                    let keys = match (cached, upload) {
                        (Some(k), _) => k,
                        (None, bytes) => {
                            cache.load_any(scheme, &key_set_id, bytes.unwrap_or_default())?
                        }
                    };
                    with_hooks(&flag, &progress, |opts| {
                        tenebra_engine::run(&keys, &circuit, &input, opts)
                    })
                })
                .await
                .unwrap_or_else(|e| Err(EngineError::Internal(e.to_string())))
            }
        };
        tokio::pin!(run);
        let grace = self.cfg.shutdown_grace;
        let shutdown = async {
            let _ = stop.wait_for(|s| *s).await;
            tokio::time::sleep(grace).await;
        };
        tokio::pin!(shutdown);
        let mut shutdown_seen = false;
        let mut beat = tokio::time::interval(self.cfg.lease / 3);
        beat.tick().await;
        let result = loop {
            tokio::select! {
                r = &mut run => break r,
                _ = beat.tick() => {
                    let done = progress.0.load(Ordering::Relaxed) as i64;
                    let total = progress.1.load(Ordering::Relaxed) as i64;
                    match store.heartbeat_task(&task.id, task.fence, self.cfg.lease, done, total).await {
                        Ok(true) => flag.set(Stop::Cancel),
                        Ok(false) => {}
                        Err(StoreError::LeaseLost) => flag.set(Stop::LeaseLost),
                        Err(e) => tracing::warn!(task = %task.id, error = %e, "heartbeat failed"),
                    }
                }
                () = &mut shutdown, if !shutdown_seen => {
                    shutdown_seen = true;
                    flag.set(Stop::Shutdown);
                }
            }
        };
        let reason = flag.reason();
        if reason == Stop::LeaseLost {
            tracing::warn!(task = %task.id, "lease lost; another worker has the task");
            return;
        }
        match result {
            Ok(bytes) => {
                let path = blobs::task_result(&task.tenant_id, &task.id, task.fence);
                let result_bytes = bytes.len() as i64;
                if let Err(e) = self.state.blobs.put(&path, bytes).await {
                    tracing::error!(task = %task.id, error = %e, "storing a result");
                    self.retry(&task, "storing the result failed").await;
                    return;
                }
                let outcome = Outcome::Succeeded {
                    result_bytes,
                    expires_at: now_ms().saturating_add(
                        i64::try_from(self.cfg.result_ttl.as_millis()).unwrap_or(i64::MAX),
                    ),
                };
                // Only a lost lease means no row points at this result; after any other
                // error the commit may have happened, so the blob stays.
                if self.finish(&task, &outcome, started).await == Finish::LeaseLost {
                    let _ = self.state.blobs.remove(&path).await;
                }
            }
            Err(EngineError::Cancelled { .. }) if reason == Stop::Shutdown => {
                match store.release_task(&task.id, task.fence).await {
                    Ok(()) => tracing::info!(task = %task.id, "released at shutdown"),
                    Err(e) => tracing::warn!(task = %task.id, error = %e, "releasing a task"),
                }
            }
            Err(EngineError::Cancelled { .. }) => {
                self.finish(&task, &Outcome::Cancelled, started).await;
            }
            Err(EngineError::BadInput(message)) => {
                let outcome = Outcome::Failed {
                    code: "invalid_input".to_owned(),
                    message,
                };
                self.finish(&task, &outcome, started).await;
            }
            // The same run would be refused again on any worker: no retry.
            Err(EngineError::TooLarge(message)) => {
                let outcome = Outcome::Failed {
                    code: "circuit_too_large".to_owned(),
                    message,
                };
                self.finish(&task, &outcome, started).await;
            }
            Err(e @ (EngineError::Io(_) | EngineError::Internal(_))) => {
                tracing::error!(task = %task.id, error = %e, "task run failed");
                self.retry(&task, "the run failed on our side").await;
            }
        }
    }

    /// Records a final outcome.
    async fn finish(&self, task: &Task, outcome: &Outcome, started: Instant) -> Finish {
        let wall = i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX);
        match self
            .state
            .store
            .finish_task(&task.id, task.fence, outcome, wall)
            .await
        {
            Ok(t) => {
                let _ = self.state.task_ended.send(t.id.as_str().into());
                tracing::info!(task = %t.id, status = t.status.as_str(), wall_ms = wall, "finished");
                metrics::histogram!("tenebra_task_seconds", "function" => catalogue::kind_label(&t.function), "status" => t.status.as_str())
                    .record(started.elapsed().as_secs_f64());
                let input = blobs::task_input(&t.tenant_id, &t.id);
                if let Err(e) = self.state.blobs.remove(&input).await {
                    tracing::warn!(task = %t.id, error = %e, "removing a finished task's input");
                }
                Finish::Recorded
            }
            Err(StoreError::LeaseLost) => {
                tracing::warn!(task = %task.id, "lease lost before finishing");
                Finish::LeaseLost
            }
            Err(e) => {
                // Maybe committed, maybe not: if not, the lease expires and another run
                // records it.
                tracing::error!(task = %task.id, error = %e, "recording a task's end");
                Finish::Unknown
            }
        }
    }

    async fn retry(&self, task: &Task, message: &str) {
        let exp = u32::try_from(task.attempts.saturating_sub(1))
            .unwrap_or(0)
            .min(16);
        let delay = self.cfg.retry_delay.saturating_mul(1 << exp);
        match self
            .state
            .store
            .retry_task(&task.id, task.fence, delay, self.cfg.max_attempts, message)
            .await
        {
            Ok(t) if t.status.is_final() => {
                let input = blobs::task_input(&t.tenant_id, &t.id);
                let _ = self.state.blobs.remove(&input).await;
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(task = %task.id, error = %e, "scheduling a retry"),
        }
    }
}

/// Runs `run` with the task's hooks (TFHE or BFV alike): the stop flag as the engine's
/// cancellation flag, progress into the counters the heartbeat reports.
fn with_hooks<T>(
    flag: &StopFlag,
    progress: &(AtomicUsize, AtomicUsize),
    run: impl FnOnce(RunOptions<'_>) -> T,
) -> T {
    let report = |p: Progress| {
        progress.0.store(p.done, Ordering::Relaxed);
        progress.1.store(p.total, Ordering::Relaxed);
    };
    run(RunOptions {
        cancel: Some(&flag.flag),
        progress: Some(&report),
        ..RunOptions::default()
    })
}
