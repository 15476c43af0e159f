//! Tasks and their queue.
//!
//! A task row is also its queue entry. Workers claim the oldest runnable row (queued and due,
//! or running with an expired lease) by setting a lease and incrementing its `fence`; every
//! later write of the worker (heartbeat, finish, retry, release) names that fence and fails
//! with [`StoreError::LeaseLost`] once another worker has claimed the row. PostgreSQL claims
//! with `FOR UPDATE SKIP LOCKED` and announces new tasks with `NOTIFY`; SQLite serializes
//! writers, so its claim is a plain `UPDATE ... RETURNING`.

use std::str::FromStr;
use std::time::Duration;

use sqlx::{Connection, Row};

use crate::audit::AuditEntry;
use crate::{billing, now_ms, read, unique_violation, Db, Rows, Store, StoreError};

/// Channel PostgreSQL announces new tasks on.
pub const TASKS_CHANNEL: &str = "tenebra_tasks";
/// PostgreSQL channel announcing a task's end; the payload is the task id.
pub const TASK_ENDED_CHANNEL: &str = "tenebra_task_ended";

/// The error code the store gives a task whose leases all expired (its workers stopped
/// responding until its attempts ran out).
pub const WORKER_LOST: &str = "worker_lost";
/// The error code the store gives a task whose attempts all failed on the workers' side.
pub const INTERNAL: &str = "internal";

/// Where a task is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum TaskStatus {
    #[default]
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
    /// Succeeded, but its result has passed its time to live and was deleted.
    Expired,
}

impl TaskStatus {
    pub const ALL: [TaskStatus; 6] = [
        TaskStatus::Queued,
        TaskStatus::Running,
        TaskStatus::Succeeded,
        TaskStatus::Failed,
        TaskStatus::Cancelled,
        TaskStatus::Expired,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TaskStatus::Queued => "queued",
            TaskStatus::Running => "running",
            TaskStatus::Succeeded => "succeeded",
            TaskStatus::Failed => "failed",
            TaskStatus::Cancelled => "cancelled",
            TaskStatus::Expired => "expired",
        }
    }

    /// Whether the task will not change any more (except a result expiring).
    pub fn is_final(self) -> bool {
        !matches!(self, TaskStatus::Queued | TaskStatus::Running)
    }
}

impl TryFrom<String> for TaskStatus {
    type Error = StoreError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl FromStr for TaskStatus {
    type Err = StoreError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        TaskStatus::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| {
                StoreError::Invalid(format!(
                    "unknown task status `{s}` (expected queued, running, succeeded, failed, \
                     cancelled or expired)"
                ))
            })
    }
}

/// What a client asks to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTask {
    /// Chosen by the caller (it names the input blob written before the row).
    pub id: String,
    pub api_key_id: String,
    pub function: String,
    pub size: i64,
    pub circuit_id: String,
    pub key_set_id: String,
    pub idempotency_key: Option<String>,
    pub input_sha256: String,
    pub input_bytes: i64,
    pub cost_cu: i64,
}

/// A task's row.
#[derive(Debug, Clone, PartialEq, Eq, Default, sqlx::FromRow)]
pub struct Task {
    pub id: String,
    pub tenant_id: String,
    pub api_key_id: String,
    pub function: String,
    pub size: i64,
    pub circuit_id: String,
    pub key_set_id: String,
    #[sqlx(try_from = "String")]
    pub status: TaskStatus,
    pub idempotency_key: Option<String>,
    pub input_sha256: String,
    pub input_bytes: i64,
    pub result_bytes: Option<i64>,
    pub cost_cu: i64,
    pub progress_done: i64,
    pub progress_total: i64,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    pub cancel_requested: bool,
    pub attempts: i64,
    /// Incremented by every claim; a worker's writes name the value it claimed with.
    pub fence: i64,
    pub worker_id: Option<String>,
    pub lease_until: Option<i64>,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    pub wall_ms: Option<i64>,
    pub expires_at: Option<i64>,
}

/// How a worker's run of a task ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Succeeded { result_bytes: i64, expires_at: i64 },
    Failed { code: String, message: String },
    Cancelled,
}

/// One page of a tenant's tasks, newest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskPage {
    pub tasks: Vec<Task>,
    /// Pass as `after` to get the next page; `None` on the last page.
    pub next: Option<String>,
}

/// What submitting did.
#[derive(Debug)]
pub enum Submitted {
    Created(Task),
    /// The tenant already submitted a task with this idempotency key.
    Existing(Task),
}

/// The columns a `Task` is read from.
macro_rules! task_columns {
    () => {
        "id, tenant_id, api_key_id, function, size, circuit_id, key_set_id, status, \
         idempotency_key, input_sha256, input_bytes, result_bytes, cost_cu, progress_done, \
         progress_total, error_code, error_message, cancel_requested, attempts, fence, \
         worker_id, lease_until, created_at, started_at, finished_at, wall_ms, expires_at"
    };
}

macro_rules! select_tasks {
    () => {
        concat!("SELECT ", task_columns!(), " FROM tasks ")
    };
}

macro_rules! returning_tasks {
    () => {
        concat!(" RETURNING ", task_columns!())
    };
}

/// The claim: the oldest runnable row (queued and due, or running with an expired lease),
/// locked with `$lock` (PostgreSQL skips rows other claims hold; SQLite needs nothing).
macro_rules! claim_query {
    ($lock:literal) => {
        concat!(
            "UPDATE tasks SET status = 'running', attempts = attempts + 1, \
             fence = fence + 1, worker_id = $1, lease_until = $2, \
             started_at = COALESCE(started_at, $3) \
             WHERE id = (SELECT id FROM tasks \
                WHERE (status = 'queued' AND run_after <= $3) \
                   OR (status = 'running' AND lease_until < $3) \
                ORDER BY run_after, created_at, id LIMIT 1",
            $lock,
            ")",
            returning_tasks!()
        )
    };
}

/// The claim of one named task, on the same terms as [`claim_query`]'s (`$4`: its id).
const CLAIM_BY_ID: &str = concat!(
    "UPDATE tasks SET status = 'running', attempts = attempts + 1, \
     fence = fence + 1, worker_id = $1, lease_until = $2, \
     started_at = COALESCE(started_at, $3) \
     WHERE id = $4 AND ((status = 'queued' AND run_after <= $3) \
        OR (status = 'running' AND lease_until < $3))",
    returning_tasks!()
);

/// The tasks to hand to a serverless executor (see [`Store::dispatch_tasks`]), marked as
/// handed: runnable, and never handed or handed before `$2`; `$1` is now, `$3` the most.
macro_rules! dispatch_query {
    ($lock:literal) => {
        concat!(
            "UPDATE tasks SET dispatched_at = $1 \
             WHERE id IN (SELECT id FROM tasks \
                WHERE ((status = 'queued' AND run_after <= $1) \
                    OR (status = 'running' AND lease_until < $1)) \
                  AND (dispatched_at IS NULL OR dispatched_at <= $2) \
                ORDER BY run_after, created_at, id LIMIT $3",
            $lock,
            ") RETURNING id"
        )
    };
}

/// Runs a query returning at most one task row.
macro_rules! fetch_task {
    ($store:expr, $rows:expr, $query:expr, $($arg:expr),*) => {
        fetch_optional!($store, $rows, Task, $query, $($arg),*)
    };
}

/// Runs a query returning at most one task row inside the transaction `$tx`.
macro_rules! fetch_task_in {
    ($tx:expr, $query:expr, $($arg:expr),*) => {{
        let q: &'static str = $query;
        let row = sqlx::query(q)$(.bind($arg))*.fetch_optional(&mut *$tx).await?;
        row.as_ref().map(read::<Task, _>).transpose()?
    }};
}

/// Runs a query returning task rows inside the transaction `$tx`.
macro_rules! fetch_tasks_in {
    ($tx:expr, $query:expr, $($arg:expr),*) => {{
        let q: &'static str = $query;
        let rows = sqlx::query(q)$(.bind($arg))*.fetch_all(&mut *$tx).await?;
        rows.iter().map(read).collect::<Result<Vec<Task>, StoreError>>()?
    }};
}

/// Records, inside `$tx`, that `$task` changed status: an audit record, and the usage
/// record and (PostgreSQL) a notification on [`TASK_ENDED_CHANNEL`] when the task ended.
macro_rules! task_changed {
    ($store:expr, $tx:expr, $task:expr, $actor:expr) => {{
        let t: &Task = $task;
        if matches!(
            t.status,
            TaskStatus::Succeeded | TaskStatus::Failed | TaskStatus::Cancelled
        ) {
            meter_task!($store, $tx, t);
            if $store.is_postgres() {
                // Delivered at commit: long polls on every API node wake for this task.
                sqlx::query("SELECT pg_notify($1, $2)")
                    .bind(TASK_ENDED_CHANNEL)
                    .bind(&t.id)
                    .execute(&mut *$tx)
                    .await?;
            }
        }
        let outcome = match (&t.error_code, t.status) {
            (Some(code), TaskStatus::Failed) => code.clone(),
            (_, TaskStatus::Running) => format!("attempt {}", t.attempts),
            (_, s) => s.as_str().to_owned(),
        };
        let entry = AuditEntry {
            tenant_id: Some(t.tenant_id.clone()),
            actor: $actor.to_owned(),
            action: format!("task.{}", t.status.as_str()),
            target: t.id.clone(),
            outcome,
            request_id: String::new(),
        };
        append_audit!($tx, &entry);
    }};
}

/// The actor of task transitions nobody asked for (reaping abandoned tasks, expiry).
const SYSTEM: &str = "system";
/// The actor of a claimed task's transitions (the claim itself names the worker).
const WORKER: &str = "worker";

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl Store {
    /// Queues a task. With an idempotency key the tenant already used, nothing is inserted
    /// and the earlier task is returned. The tenant's plan is checked first (`Quota`).
    pub async fn submit_task(&self, tenant: &str, new: &NewTask) -> Result<Submitted, StoreError> {
        let now = now_ms();
        let q = concat!(
            "INSERT INTO tasks (id, tenant_id, api_key_id, function, size, circuit_id, \
             key_set_id, status, idempotency_key, input_sha256, input_bytes, cost_cu, \
             run_after, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, 'queued', $8, $9, $10, $11, $12, $12)",
            returning_tasks!()
        );
        if let Some(key) = &new.idempotency_key {
            let q = concat!(
                select_tasks!(),
                "WHERE tenant_id = $1 AND idempotency_key = $2"
            );
            if let Some(t) = fetch_task!(self, Rows::Tenant(tenant), q, tenant, key)? {
                return Ok(Submitted::Existing(t));
            }
        }
        let inserted: Result<Task, sqlx::Error> = on_rows!(self, Rows::Tenant(tenant), p => {
            let mut tx = p.begin().await?;
            lock_tenant!(tx, tenant);
            if let Some(plan) = tenant_plan_in!(tx, tenant) {
                let used = tenant_usage_in!(tx, tenant);
                if let Some(q) = billing::check_task(&plan, &used, new.cost_cu, new.input_bytes) {
                    return Err(StoreError::Quota(q));
                }
            }
            let r = sqlx::query(q)
                .bind(&new.id)
                .bind(tenant)
                .bind(&new.api_key_id)
                .bind(&new.function)
                .bind(new.size)
                .bind(&new.circuit_id)
                .bind(&new.key_set_id)
                .bind(&new.idempotency_key)
                .bind(&new.input_sha256)
                .bind(new.input_bytes)
                .bind(new.cost_cu)
                .bind(now)
                .fetch_one(&mut *tx)
                .await;
            match r {
                Ok(row) => {
                    let t: Task = read(&row)?;
                    task_changed!(self, tx, &t, &new.api_key_id);
                    if self.is_postgres() {
                        // Delivered at commit, so a woken worker finds the row.
                        sqlx::query("SELECT pg_notify($1, '')")
                            .bind(TASKS_CHANNEL)
                            .execute(&mut *tx)
                            .await?;
                    }
                    commit_change!(self, tx, Some(t.id.as_str()));
                    Ok(t)
                }
                Err(e) => Err(e),
            }
        });
        match inserted {
            Ok(t) => Ok(Submitted::Created(t)),
            Err(e) if unique_violation(&e) => {
                let key = new.idempotency_key.as_deref().unwrap_or_default();
                let q = concat!(
                    select_tasks!(),
                    "WHERE tenant_id = $1 AND idempotency_key = $2"
                );
                let t = fetch_task!(self, Rows::Tenant(tenant), q, tenant, key)?;
                t.map(Submitted::Existing).ok_or(StoreError::NotFound)
            }
            Err(sqlx::Error::Database(d)) if d.is_foreign_key_violation() => {
                Err(StoreError::NotFound)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// One of the tenant's tasks; another tenant's is not found.
    pub async fn task(&self, tenant: &str, id: &str) -> Result<Task, StoreError> {
        let q = concat!(select_tasks!(), "WHERE tenant_id = $1 AND id = $2");
        fetch_task!(self, Rows::Tenant(tenant), q, tenant, id)?.ok_or(StoreError::NotFound)
    }

    /// A task by id alone, for workers (which act for every tenant).
    pub async fn task_by_id(&self, id: &str) -> Result<Task, StoreError> {
        let q = concat!(select_tasks!(), "WHERE id = $1");
        fetch_task!(self, Rows::System, q, id)?.ok_or(StoreError::NotFound)
    }

    /// The tenant's tasks, newest first, optionally of one status; `after` is the `next`
    /// of the previous page.
    pub async fn list_tasks(
        &self,
        tenant: &str,
        status: Option<TaskStatus>,
        limit: u32,
        after: Option<&str>,
    ) -> Result<TaskPage, StoreError> {
        let (after_time, after_id) = match after {
            None => (i64::MAX, String::new()),
            Some(c) => {
                let bad = || StoreError::Invalid(format!("invalid page cursor `{c}`"));
                let (t, id) = c.split_once('.').ok_or_else(bad)?;
                (t.parse::<i64>().map_err(|_| bad())?, id.to_owned())
            }
        };
        let status = status.map_or("", TaskStatus::as_str);
        let limit = limit.clamp(1, 1000);
        let q = concat!(
            select_tasks!(),
            "WHERE tenant_id = $1 AND ($2 = '' OR status = $2) \
             AND (created_at < $3 OR (created_at = $3 AND id < $4)) \
             ORDER BY created_at DESC, id DESC LIMIT $5"
        );
        let tasks = on_rows!(self, Rows::Tenant(tenant), p => {
            let rows = sqlx::query(q)
                .bind(tenant)
                .bind(status)
                .bind(after_time)
                .bind(if after.is_some() { after_id.as_str() } else { "\u{10FFFF}" })
                .bind(i64::from(limit) + 1)
                .fetch_all(p)
                .await?;
            rows.iter().map(read).collect::<Result<Vec<Task>, _>>()?
        });
        let mut tasks = tasks;
        let next = if tasks.len() > limit as usize {
            tasks.truncate(limit as usize);
            tasks.last().map(|t| format!("{}.{}", t.created_at, t.id))
        } else {
            None
        };
        Ok(TaskPage { tasks, next })
    }

    /// Cancels one of the tenant's tasks: a queued task ends at once, a running one is
    /// flagged and its worker stops at the next node. Returns the task as it is now, and
    /// whether this call cancelled a queued task (its input can go).
    pub async fn cancel_task(&self, tenant: &str, id: &str) -> Result<(Task, bool), StoreError> {
        let q = concat!(
            "UPDATE tasks SET status = 'cancelled', finished_at = $1 \
             WHERE tenant_id = $2 AND id = $3 AND status = 'queued'",
            returning_tasks!()
        );
        let cancelled = on_rows!(self, Rows::Tenant(tenant), p => {
            let mut tx = p.begin().await?;
            let t = fetch_task_in!(tx, q, now_ms(), tenant, id);
            if let Some(t) = &t {
                task_changed!(self, tx, t, &t.api_key_id);
                commit_change!(self, tx, None);
            }
            t
        });
        if let Some(t) = cancelled {
            return Ok((t, true));
        }
        let q = concat!(
            "UPDATE tasks SET cancel_requested = TRUE \
             WHERE tenant_id = $1 AND id = $2 AND status = 'running'",
            returning_tasks!()
        );
        if let Some(t) = change_row!(self, Rows::Tenant(tenant), Task, None, q, tenant, id)? {
            return Ok((t, false));
        }
        Ok((self.task(tenant, id).await?, false))
    }

    /// Claims the next runnable task for `worker` with a lease of `lease`: a queued task
    /// that is due, or a running one whose worker stopped heartbeating. Before claiming,
    /// abandoned tasks that were cancelled end as cancelled, and abandoned tasks that used
    /// `max_attempts` end as failed.
    pub async fn claim_task(
        &self,
        worker: &str,
        lease: Duration,
        max_attempts: u32,
    ) -> Result<Option<Task>, StoreError> {
        self.claim_task_reaping(worker, lease, max_attempts)
            .await
            .map(|(t, _)| t)
    }

    /// [`Store::claim_task`], also returning the abandoned tasks it ended (their input blobs
    /// are the caller's to remove).
    pub async fn claim_task_reaping(
        &self,
        worker: &str,
        lease: Duration,
        max_attempts: u32,
    ) -> Result<(Option<Task>, Vec<Task>), StoreError> {
        self.claim_reaping(worker, lease, max_attempts, None).await
    }

    /// [`Store::claim_task_reaping`] of one task: claims task `id` if it is runnable (queued
    /// and due, or running with an expired lease), as a serverless invocation naming it does.
    /// `None` when it is not: another claim holds it, it ended, or its retry is not due.
    pub async fn claim_task_by_id(
        &self,
        id: &str,
        worker: &str,
        lease: Duration,
        max_attempts: u32,
    ) -> Result<(Option<Task>, Vec<Task>), StoreError> {
        self.claim_reaping(worker, lease, max_attempts, Some(id))
            .await
    }

    async fn claim_reaping(
        &self,
        worker: &str,
        lease: Duration,
        max_attempts: u32,
        id: Option<&str>,
    ) -> Result<(Option<Task>, Vec<Task>), StoreError> {
        let now = now_ms();
        let reap_cancelled = concat!(
            "UPDATE tasks SET status = 'cancelled', finished_at = $1, \
             worker_id = NULL, lease_until = NULL \
             WHERE status = 'running' AND lease_until < $1 AND cancel_requested",
            returning_tasks!()
        );
        let reap_failed = concat!(
            "UPDATE tasks SET status = 'failed', finished_at = $1, \
             error_code = 'worker_lost', \
             error_message = 'the workers running this task stopped responding', \
             worker_id = NULL, lease_until = NULL \
             WHERE status = 'running' AND lease_until < $1 AND attempts >= $2",
            returning_tasks!()
        );
        let lease_until = now.saturating_add(ms(lease));
        let claim = match self.db {
            Db::Postgres(_) => claim_query!(" FOR UPDATE SKIP LOCKED"),
            Db::Sqlite(_) => claim_query!(""),
        };
        on_rows!(self, Rows::System, p => {
            let mut tx = p.begin().await?;
            let mut reaped = fetch_tasks_in!(tx, reap_cancelled, now);
            reaped.extend(fetch_tasks_in!(tx, reap_failed, now, i64::from(max_attempts)));
            for t in &reaped {
                task_changed!(self, tx, t, SYSTEM);
            }
            let t = match id {
                None => fetch_task_in!(tx, claim, worker, lease_until, now),
                Some(id) => fetch_task_in!(tx, CLAIM_BY_ID, worker, lease_until, now, id),
            };
            if let Some(t) = &t {
                task_changed!(self, tx, t, &format!("worker:{worker}"));
            }
            tx.commit().await?;
            Ok((t, reaped))
        })
    }

    /// The ids of at most `limit` runnable tasks to hand to a serverless executor, oldest
    /// first, marked as handed now: those never handed, and those handed at least `again`
    /// ago that are still runnable (the invocation was lost, or died with its lease). Two
    /// dispatchers never get the same task in one round; an invocation that finds its task
    /// already claimed does nothing.
    pub async fn dispatch_tasks(
        &self,
        limit: u32,
        again: Duration,
    ) -> Result<Vec<String>, StoreError> {
        let now = now_ms();
        let q = match self.db {
            Db::Postgres(_) => dispatch_query!(" FOR UPDATE SKIP LOCKED"),
            Db::Sqlite(_) => dispatch_query!(""),
        };
        on_rows!(self, Rows::System, p => {
            let rows = sqlx::query(q)
                .bind(now)
                .bind(now.saturating_sub(ms(again)))
                .bind(i64::from(limit))
                .fetch_all(p)
                .await?;
            rows.iter()
                .map(|r| r.try_get::<String, _>("id").map_err(StoreError::from))
                .collect()
        })
    }

    /// Extends a claimed task's lease and records its progress; returns whether the tenant
    /// asked to cancel it.
    pub async fn heartbeat_task(
        &self,
        id: &str,
        fence: i64,
        lease: Duration,
        done: i64,
        total: i64,
    ) -> Result<bool, StoreError> {
        let q = "UPDATE tasks SET lease_until = $1, progress_done = $2, progress_total = $3 \
                 WHERE id = $4 AND fence = $5 AND status = 'running' \
                 RETURNING cancel_requested";
        let lease_until = now_ms().saturating_add(ms(lease));
        let r = on_rows!(self, Rows::System, p => {
            let row = sqlx::query(q)
                .bind(lease_until)
                .bind(done)
                .bind(total)
                .bind(id)
                .bind(fence)
                .fetch_optional(p)
                .await?;
            row.map(|r| r.try_get::<bool, _>("cancel_requested")).transpose()?
        });
        r.ok_or(StoreError::LeaseLost)
    }

    /// Records how a claimed task ended.
    pub async fn finish_task(
        &self,
        id: &str,
        fence: i64,
        outcome: &Outcome,
        wall_ms: i64,
    ) -> Result<Task, StoreError> {
        let (status, result_bytes, expires_at, code, message) = match outcome {
            Outcome::Succeeded {
                result_bytes,
                expires_at,
            } => (
                "succeeded",
                Some(*result_bytes),
                Some(*expires_at),
                None,
                None,
            ),
            Outcome::Failed { code, message } => (
                "failed",
                None,
                None,
                Some(code.as_str()),
                Some(message.as_str()),
            ),
            Outcome::Cancelled => ("cancelled", None, None, None, None),
        };
        let q = concat!(
            "UPDATE tasks SET status = $1, result_bytes = $2, expires_at = $3, \
             error_code = $4, error_message = $5, finished_at = $6, wall_ms = $7, \
             progress_done = CASE WHEN $1 = 'succeeded' THEN progress_total \
                                  ELSE progress_done END, \
             worker_id = NULL, lease_until = NULL \
             WHERE id = $8 AND fence = $9 AND status = 'running'",
            returning_tasks!()
        );
        on_rows!(self, Rows::System, p => {
            let mut tx = p.begin().await?;
            let t = fetch_task_in!(
                tx,
                q,
                status,
                result_bytes,
                expires_at,
                code,
                message,
                now_ms(),
                wall_ms,
                id,
                fence
            );
            let t = t.ok_or(StoreError::LeaseLost)?;
            task_changed!(self, tx, &t, WORKER);
            tx.commit().await?;
            Ok(t)
        })
    }

    /// Puts a claimed task back in the queue to run again after `delay` (a failure that may
    /// pass), or fails it for good when it used `max_attempts`.
    pub async fn retry_task(
        &self,
        id: &str,
        fence: i64,
        delay: Duration,
        max_attempts: u32,
        message: &str,
    ) -> Result<Task, StoreError> {
        let now = now_ms();
        let q = concat!(
            "UPDATE tasks SET \
             status = CASE WHEN attempts >= $1 THEN 'failed' ELSE 'queued' END, \
             error_code = CASE WHEN attempts >= $1 THEN 'internal' ELSE NULL END, \
             error_message = CASE WHEN attempts >= $1 THEN CAST($2 AS TEXT) ELSE NULL END, \
             finished_at = CASE WHEN attempts >= $1 THEN $3 ELSE NULL END, \
             run_after = $4, worker_id = NULL, lease_until = NULL, dispatched_at = NULL \
             WHERE id = $5 AND fence = $6 AND status = 'running'",
            returning_tasks!()
        );
        on_rows!(self, Rows::System, p => {
            let mut tx = p.begin().await?;
            let t = fetch_task_in!(
                tx,
                q,
                i64::from(max_attempts),
                message,
                now,
                now.saturating_add(ms(delay)),
                id,
                fence
            );
            let t = t.ok_or(StoreError::LeaseLost)?;
            task_changed!(self, tx, &t, WORKER);
            tx.commit().await?;
            Ok(t)
        })
    }

    /// Gives a claimed task back to the queue untouched (a worker shutting down); the
    /// attempt does not count.
    pub async fn release_task(&self, id: &str, fence: i64) -> Result<(), StoreError> {
        let q = concat!(
            "UPDATE tasks SET status = 'queued', attempts = attempts - 1, \
                 run_after = $1, worker_id = NULL, lease_until = NULL, dispatched_at = NULL \
                 WHERE id = $2 AND fence = $3 AND status = 'running'",
            returning_tasks!()
        );
        on_rows!(self, Rows::System, p => {
            let mut tx = p.begin().await?;
            let t = fetch_task_in!(tx, q, now_ms(), id, fence);
            let t = t.ok_or(StoreError::LeaseLost)?;
            task_changed!(self, tx, &t, WORKER);
            tx.commit().await?;
            Ok(())
        })
    }

    /// Marks succeeded tasks whose result passed its time to live as expired; returns them
    /// (the caller deletes their result blobs).
    pub async fn expire_results(&self) -> Result<Vec<Task>, StoreError> {
        let q = concat!(
            "UPDATE tasks SET status = 'expired' \
             WHERE status = 'succeeded' AND expires_at <= $1",
            returning_tasks!()
        );
        on_rows!(self, Rows::System, p => {
            let mut tx = p.begin().await?;
            let tasks = fetch_tasks_in!(tx, q, now_ms());
            for t in &tasks {
                task_changed!(self, tx, t, SYSTEM);
            }
            tx.commit().await?;
            Ok(tasks)
        })
    }

    /// Number of queued tasks (for metrics).
    pub async fn queue_depth(&self) -> Result<i64, StoreError> {
        // Every node reports it, also one whose role may not read across tenants: on
        // PostgreSQL through the function that counts for it (migration 0009).
        let q = match self.db {
            Db::Sqlite(_) => "SELECT COUNT(*) AS n FROM tasks WHERE status = 'queued'",
            Db::Postgres(_) => "SELECT tenebra_queue_depth() AS n",
        };
        on_pool!(self, p => {
            let row = sqlx::query(q).fetch_one(p).await?;
            Ok(row.try_get::<i64, _>("n")?)
        })
    }

    /// Waits for new tasks: a PostgreSQL listener on the tasks channel, or nothing to
    /// listen to on SQLite (its workers live in the submitting process).
    pub async fn task_listener(&self) -> Result<TaskListener, StoreError> {
        match &self.db {
            Db::Postgres(p) => {
                let mut l = sqlx::postgres::PgListener::connect_with(p).await?;
                l.listen(TASKS_CHANNEL).await?;
                Ok(TaskListener(Some(l)))
            }
            Db::Sqlite(_) => Ok(TaskListener(None)),
        }
    }
}

impl Store {
    /// Ended tasks' ids as they end on any node: a PostgreSQL listener on
    /// [`TASK_ENDED_CHANNEL`]; `None` on SQLite (its workers live in the serving process).
    pub async fn ended_listener(&self) -> Result<Option<EndedListener>, StoreError> {
        match &self.db {
            Db::Postgres(p) => {
                let mut l = sqlx::postgres::PgListener::connect_with(p).await?;
                l.listen(TASK_ENDED_CHANNEL).await?;
                Ok(Some(EndedListener(l)))
            }
            Db::Sqlite(_) => Ok(None),
        }
    }
}

/// Ids of tasks that ended (PostgreSQL `LISTEN`).
pub struct EndedListener(sqlx::postgres::PgListener);

impl EndedListener {
    /// The next ended task's id; `None` after a lost connection (sqlx reconnects on the
    /// next call; a notification sent meanwhile is missed, so waiters also poll slowly).
    pub async fn next(&mut self) -> Option<String> {
        self.0.recv().await.ok().map(|n| n.payload().to_owned())
    }
}

/// Wake-ups for workers when tasks are submitted (PostgreSQL `LISTEN`).
pub struct TaskListener(Option<sqlx::postgres::PgListener>);

impl TaskListener {
    /// Completes when a task may have been submitted; never on SQLite. A lost connection is
    /// re-established by sqlx; errors just return early (workers also poll).
    pub async fn wait(&mut self) {
        match &mut self.0 {
            Some(l) => {
                if l.recv().await.is_err() {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
            None => std::future::pending().await,
        }
    }
}
