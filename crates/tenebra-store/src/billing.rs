//! Plans (prices and limits), usage records, quotas and rate limits.
//!
//! A usage record is written in the transaction that ends a task (see `tasks.rs`), keyed by
//! the task, so a task is metered exactly once however often it was claimed; what it is
//! charged is the store's [`crate::ChargeRule`], not a rule of this crate. Quotas are
//! checked inside the transaction that would exceed them, after locking the tenant's row, so
//! they hold across API nodes sharing one database. Money is integer nano-units of the
//! billing currency: sums are exact.

use chrono::{Datelike, TimeZone, Utc};
use sqlx::{Connection, Row};

use crate::{now_ms, Charge, Rows, Store, StoreError, Task};

/// The plan every tenant starts on.
pub const DEFAULT_PLAN: &str = "default";

/// Prices and limits an operator sets; `None` is no limit.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Plan {
    pub name: String,
    pub price_nanos_per_cu: i64,
    /// CU a tenant may use per billing period (a calendar month, UTC).
    pub cu_per_period: Option<i64>,
    /// Tasks queued or running at once.
    pub max_active_tasks: Option<i64>,
    /// Key sets, task results and pending task inputs, in bytes.
    pub max_stored_bytes: Option<i64>,
    pub max_key_sets: Option<i64>,
    /// Largest cost of one task.
    pub max_task_cu: Option<i64>,
    /// Requests per second per API key.
    pub requests_per_second: Option<i64>,
    /// Requests per second per tenant, over all its API keys.
    pub tenant_requests_per_second: Option<i64>,
    /// Per-function prices that override `price_nanos_per_cu` (rows of `plan_prices`).
    #[sqlx(skip)]
    pub function_prices: Vec<(String, i64)>,
}

impl Plan {
    /// A plan with a price and no limits.
    pub fn new(name: &str, price_nanos_per_cu: i64) -> Self {
        Plan {
            name: name.to_owned(),
            price_nanos_per_cu,
            cu_per_period: None,
            max_active_tasks: None,
            max_stored_bytes: None,
            max_key_sets: None,
            max_task_cu: None,
            requests_per_second: None,
            tenant_requests_per_second: None,
            function_prices: Vec::new(),
        }
    }

    /// The price per CU of `function` on this plan.
    pub fn price_of(&self, function: &str) -> i64 {
        self.function_prices
            .iter()
            .find(|(f, _)| f == function)
            .map_or(self.price_nanos_per_cu, |(_, p)| *p)
    }
}

/// Which limit a request would pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QuotaExceeded {
    TaskCu {
        cost: i64,
        cap: i64,
    },
    PeriodCu {
        used: i64,
        cost: i64,
        limit: i64,
        period_end: i64,
    },
    ActiveTasks {
        limit: i64,
    },
    StoredBytes {
        used: i64,
        adding: i64,
        limit: i64,
    },
    KeySets {
        limit: i64,
    },
    /// Live (unrevoked) API keys: a fixed cap, so keys cannot be minted to multiply the
    /// per-key rate limit or fill the table.
    ApiKeys {
        limit: i64,
    },
    Rate {
        limit: i64,
    },
    /// The tenant's requests per second, over all its keys.
    TenantRate {
        limit: i64,
    },
}

impl std::fmt::Display for QuotaExceeded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            QuotaExceeded::TaskCu { cost, cap } => {
                write!(
                    f,
                    "this task costs {cost} CU; the plan allows {cap} CU per task"
                )
            }
            QuotaExceeded::PeriodCu {
                used, cost, limit, ..
            } => write!(
                f,
                "this task costs {cost} CU and {used} of the {limit} CU of this billing \
                 period are used or reserved by running tasks"
            ),
            QuotaExceeded::ActiveTasks { limit } => {
                write!(f, "the plan allows {limit} queued or running tasks at once")
            }
            QuotaExceeded::StoredBytes {
                used,
                adding,
                limit,
            } => write!(
                f,
                "storing {adding} more bytes would pass the plan's {limit} bytes ({used} used)"
            ),
            QuotaExceeded::KeySets { limit } => write!(f, "the plan allows {limit} key sets"),
            QuotaExceeded::ApiKeys { limit } => write!(
                f,
                "a tenant may hold {limit} live API keys; revoke one to create another"
            ),
            QuotaExceeded::Rate { limit } => {
                write!(f, "the plan allows {limit} requests per second per API key")
            }
            QuotaExceeded::TenantRate { limit } => write!(
                f,
                "the plan allows {limit} requests per second per tenant, over all its API keys"
            ),
        }
    }
}

/// One task's metered usage.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct UsageRecord {
    pub task_id: String,
    pub tenant_id: String,
    pub api_key_id: String,
    pub function: String,
    pub function_version: Option<i64>,
    pub circuit_id: String,
    pub key_set_id: String,
    /// `succeeded`, `failed` or `cancelled`.
    pub outcome: String,
    pub error_code: Option<String>,
    /// CU of the work that ran.
    pub cu: i64,
    /// CU billed, as the store's [`crate::ChargeRule`] decided.
    pub charged_cu: i64,
    pub price_nanos_per_cu: i64,
    pub amount_nanos: i64,
    pub wall_ms: i64,
    pub input_bytes: i64,
    pub result_bytes: i64,
    pub attempts: i64,
    pub recorded_at: i64,
}

impl UsageRecord {
    /// The record of an ended task charged `charge` at `price`.
    pub(crate) fn of(t: &Task, charge: Charge, price: i64, version: Option<i64>) -> Self {
        let Charge { cu, charged_cu } = charge;
        let charged_cu = charged_cu.clamp(0, cu.max(0));
        UsageRecord {
            task_id: t.id.clone(),
            tenant_id: t.tenant_id.clone(),
            api_key_id: t.api_key_id.clone(),
            function: t.function.clone(),
            function_version: version,
            circuit_id: t.circuit_id.clone(),
            key_set_id: t.key_set_id.clone(),
            outcome: t.status.as_str().to_owned(),
            error_code: t.error_code.clone(),
            cu,
            charged_cu,
            price_nanos_per_cu: price,
            amount_nanos: charged_cu.saturating_mul(price),
            wall_ms: t.wall_ms.unwrap_or(0),
            input_bytes: t.input_bytes,
            result_bytes: t.result_bytes.unwrap_or(0),
            attempts: t.attempts,
            recorded_at: now_ms(),
        }
    }
}

/// Which usage records to read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UsageFilter {
    /// Unix ms, inclusive.
    pub from: Option<i64>,
    /// Unix ms, exclusive.
    pub to: Option<i64>,
    pub function: Option<String>,
    pub api_key_id: Option<String>,
}

/// Sums over usage records.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UsageTotals {
    pub tasks: i64,
    pub cu: i64,
    pub charged_cu: i64,
    pub amount_nanos: i64,
}

/// One page of usage, oldest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsagePage {
    pub records: Vec<UsageRecord>,
    pub next: Option<String>,
}

/// An invoice line: the usage of one function at one price.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvoiceLine {
    pub function: String,
    pub price_nanos_per_cu: i64,
    pub tasks: i64,
    pub charged_cu: i64,
    pub amount_nanos: i64,
}

/// What a tenant holds now, against its limits.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TenantUsage {
    /// CU charged this period plus the cost of queued and running tasks.
    pub period_cu: i64,
    pub active_tasks: i64,
    pub stored_bytes: i64,
    pub key_sets: i64,
}

/// The billing period (calendar month, UTC) holding `ms`: `[start, end)` in Unix ms.
pub fn period_of(ms: i64) -> (i64, i64) {
    let t = Utc.timestamp_millis_opt(ms).single().unwrap_or_default();
    period_bounds(t.year(), t.month()).unwrap_or((0, i64::MAX))
}

/// The bounds of the period `YYYY-MM`, or `None` if it is not one.
pub fn parse_period(s: &str) -> Option<(i64, i64)> {
    let (y, m) = s.split_once('-')?;
    if y.len() != 4 || m.len() != 2 {
        return None;
    }
    period_bounds(y.parse().ok()?, m.parse().ok()?)
}

/// The name (`YYYY-MM`) of the period holding `ms`.
pub fn period_name(ms: i64) -> String {
    let t = Utc.timestamp_millis_opt(ms).single().unwrap_or_default();
    format!("{:04}-{:02}", t.year(), t.month())
}

fn period_bounds(year: i32, month: u32) -> Option<(i64, i64)> {
    let start = Utc.with_ymd_and_hms(year, month, 1, 0, 0, 0).single()?;
    let (ny, nm) = if month == 12 {
        (year + 1, 1)
    } else {
        (year, month + 1)
    };
    let end = Utc.with_ymd_and_hms(ny, nm, 1, 0, 0, 0).single()?;
    Some((start.timestamp_millis(), end.timestamp_millis()))
}

macro_rules! plan_columns {
    () => {
        "name, price_nanos_per_cu, cu_per_period, max_active_tasks, max_stored_bytes, \
         max_key_sets, max_task_cu, requests_per_second, tenant_requests_per_second"
    };
}

macro_rules! usage_columns {
    () => {
        "task_id, tenant_id, api_key_id, function, function_version, circuit_id, key_set_id, \
         outcome, error_code, cu, charged_cu, price_nanos_per_cu, amount_nanos, wall_ms, \
         input_bytes, result_bytes, attempts, recorded_at"
    };
}

/// Reads the tenant's plan (with its function prices) inside `$tx`.
macro_rules! tenant_plan_in {
    ($tx:expr, $tenant:expr) => {{
        let q = concat!(
            "SELECT ",
            plan_columns!(),
            " FROM plans WHERE name = (SELECT plan FROM tenants WHERE id = $1)"
        );
        let row = sqlx::query(q)
            .bind($tenant)
            .fetch_optional(&mut *$tx)
            .await?;
        match row {
            None => None,
            Some(r) => {
                let mut plan: $crate::billing::Plan = $crate::read(&r)?;
                let rows = sqlx::query(
                    "SELECT function, price_nanos_per_cu FROM plan_prices WHERE plan = $1 \
                     ORDER BY function",
                )
                .bind(&plan.name)
                .fetch_all(&mut *$tx)
                .await?;
                for r in rows {
                    plan.function_prices
                        .push((r.try_get("function")?, r.try_get("price_nanos_per_cu")?));
                }
                Some(plan)
            }
        }
    }};
}

/// Locks the tenant's row for the rest of `$tx` (PostgreSQL: a row lock; SQLite: the write
/// lock), so quota checks and the insert they guard are atomic; `NotFound` if none.
macro_rules! lock_tenant {
    ($tx:expr, $tenant:expr) => {{
        let n = sqlx::query("UPDATE tenants SET plan = plan WHERE id = $1")
            .bind($tenant)
            .execute(&mut *$tx)
            .await?
            .rows_affected();
        if n == 0 {
            return Err($crate::StoreError::NotFound);
        }
    }};
}

/// The tenant's current usage against its limits, inside `$tx`.
macro_rules! tenant_usage_in {
    ($tx:expr, $tenant:expr) => {{
        let (start, _) = $crate::billing::period_of(now_ms());
        let q = "SELECT \
            CAST((SELECT COALESCE(SUM(charged_cu), 0) FROM usage_records \
                  WHERE tenant_id = $1 AND recorded_at >= $2) AS BIGINT) AS charged, \
            CAST((SELECT COALESCE(SUM(cost_cu), 0) FROM tasks \
                  WHERE tenant_id = $1 AND status IN ('queued', 'running')) AS BIGINT) AS reserved, \
            CAST((SELECT COUNT(*) FROM tasks \
                  WHERE tenant_id = $1 AND status IN ('queued', 'running')) AS BIGINT) AS active, \
            CAST((SELECT COALESCE(SUM(size_bytes), 0) FROM key_sets WHERE tenant_id = $1) \
                 AS BIGINT) AS key_bytes, \
            CAST((SELECT COUNT(*) FROM key_sets WHERE tenant_id = $1) AS BIGINT) AS key_sets, \
            CAST((SELECT COALESCE(SUM(COALESCE(result_bytes, 0)), 0) FROM tasks \
                  WHERE tenant_id = $1 AND status = 'succeeded') AS BIGINT) AS result_bytes, \
            CAST((SELECT COALESCE(SUM(input_bytes), 0) FROM tasks \
                  WHERE tenant_id = $1 AND status IN ('queued', 'running')) AS BIGINT) \
                 AS input_bytes, \
            CAST((SELECT COALESCE(SUM(stored_bytes), 0) FROM functions WHERE tenant_id = $1) \
                 AS BIGINT) AS function_bytes, \
            CAST((SELECT COALESCE(SUM(stored_bytes), 0) FROM models WHERE owner_id = $1) \
                 AS BIGINT) AS model_bytes";
        let r = sqlx::query(q)
            .bind($tenant)
            .bind(start)
            .fetch_one(&mut *$tx)
            .await?;
        let get = |c: &str| r.try_get::<i64, _>(c);
        $crate::billing::TenantUsage {
            period_cu: get("charged")?.saturating_add(get("reserved")?),
            active_tasks: get("active")?,
            stored_bytes: get("key_bytes")?
                .saturating_add(get("result_bytes")?)
                .saturating_add(get("input_bytes")?)
                .saturating_add(get("function_bytes")?)
                .saturating_add(get("model_bytes")?),
            key_sets: get("key_sets")?,
        }
    }};
}

/// Writes the usage record of the ended task `$task` inside `$tx` (nothing if it has one),
/// charged by `$store`'s rule.
macro_rules! meter_task {
    ($store:expr, $tx:expr, $task:expr) => {{
        let t: &$crate::Task = $task;
        let charge = ($store.charge)(t);
        let plan = tenant_plan_in!($tx, &t.tenant_id);
        let price = plan.map_or(0, |p| p.price_of(&t.function));
        let version: Option<i64> = sqlx::query(
            "SELECT version FROM functions WHERE tenant_id = $1 AND name = $2 \
             AND circuit_id = $3",
        )
        .bind(&t.tenant_id)
        .bind(&t.function)
        .bind(&t.circuit_id)
        .fetch_optional(&mut *$tx)
        .await?
        .map(|r| r.try_get::<i64, _>("version"))
        .transpose()?;
        let u = $crate::billing::UsageRecord::of(t, charge, price, version);
        sqlx::query(concat!(
            "INSERT INTO usage_records (",
            usage_columns!(),
            ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, \
             $16, $17, $18) ON CONFLICT (task_id) DO NOTHING"
        ))
        .bind(&u.task_id)
        .bind(&u.tenant_id)
        .bind(&u.api_key_id)
        .bind(&u.function)
        .bind(u.function_version)
        .bind(&u.circuit_id)
        .bind(&u.key_set_id)
        .bind(&u.outcome)
        .bind(&u.error_code)
        .bind(u.cu)
        .bind(u.charged_cu)
        .bind(u.price_nanos_per_cu)
        .bind(u.amount_nanos)
        .bind(u.wall_ms)
        .bind(u.input_bytes)
        .bind(u.result_bytes)
        .bind(u.attempts)
        .bind(u.recorded_at)
        .execute(&mut *$tx)
        .await?;
    }};
}

/// Usage query conditions shared by listing and totals (`$1` tenant or '', `$2` from, `$3`
/// to, `$4` function or '', `$5` API key or '').
macro_rules! usage_where {
    () => {
        " WHERE ($1 = '' OR tenant_id = $1) AND recorded_at >= $2 AND recorded_at < $3 \
          AND ($4 = '' OR function = $4) AND ($5 = '' OR api_key_id = $5) "
    };
}

impl Store {
    /// Creates or replaces a plan (its function prices too).
    pub async fn put_plan(&self, plan: &Plan) -> Result<(), StoreError> {
        if plan.price_nanos_per_cu < 0 || plan.function_prices.iter().any(|(_, p)| *p < 0) {
            return Err(StoreError::Invalid("prices cannot be negative".into()));
        }
        let q = concat!(
            "INSERT INTO plans (",
            plan_columns!(),
            ", updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
             ON CONFLICT (name) DO UPDATE SET price_nanos_per_cu = $2, cu_per_period = $3, \
             max_active_tasks = $4, max_stored_bytes = $5, max_key_sets = $6, \
             max_task_cu = $7, requests_per_second = $8, tenant_requests_per_second = $9, \
             updated_at = $10"
        );
        on_pool!(self, p => {
            let mut tx = p.begin().await?;
            sqlx::query(q)
                .bind(&plan.name)
                .bind(plan.price_nanos_per_cu)
                .bind(plan.cu_per_period)
                .bind(plan.max_active_tasks)
                .bind(plan.max_stored_bytes)
                .bind(plan.max_key_sets)
                .bind(plan.max_task_cu)
                .bind(plan.requests_per_second)
                .bind(plan.tenant_requests_per_second)
                .bind(now_ms())
                .execute(&mut *tx)
                .await?;
            sqlx::query("DELETE FROM plan_prices WHERE plan = $1")
                .bind(&plan.name)
                .execute(&mut *tx)
                .await?;
            for (function, price) in &plan.function_prices {
                sqlx::query(
                    "INSERT INTO plan_prices (plan, function, price_nanos_per_cu) \
                     VALUES ($1, $2, $3)",
                )
                .bind(&plan.name)
                .bind(function)
                .bind(price)
                .execute(&mut *tx)
                .await?;
            }
            commit_change!(self, tx, None);
        });
        Ok(())
    }

    /// Every plan, by name.
    pub async fn list_plans(&self) -> Result<Vec<Plan>, StoreError> {
        let q = concat!("SELECT ", plan_columns!(), " FROM plans ORDER BY name");
        let mut plans: Vec<Plan> = on_pool!(self, p => {
            let rows = sqlx::query(q).fetch_all(p).await?;
            rows.iter().map(crate::read).collect::<Result<_, StoreError>>()?
        });
        let q = "SELECT plan, function, price_nanos_per_cu FROM plan_prices \
                 ORDER BY plan, function";
        let prices: Vec<(String, String, i64)> = on_pool!(self, p => {
            let rows = sqlx::query(q).fetch_all(p).await?;
            rows.into_iter()
                .map(|r| Ok((r.try_get("plan")?, r.try_get("function")?,
                             r.try_get("price_nanos_per_cu")?)))
                .collect::<Result<_, StoreError>>()?
        });
        for (plan, function, price) in prices {
            if let Some(p) = plans.iter_mut().find(|p| p.name == plan) {
                p.function_prices.push((function, price));
            }
        }
        Ok(plans)
    }

    /// Puts a tenant on a plan.
    pub async fn set_tenant_plan(&self, tenant: &str, plan: &str) -> Result<(), StoreError> {
        let q = "UPDATE tenants SET plan = $1 WHERE id = $2 \
                 AND EXISTS (SELECT 1 FROM plans WHERE name = $1)";
        change_some!(self, Rows::System, None, q, plan, tenant).map(|_| ())
    }

    /// The tenant's plan.
    pub async fn tenant_plan(&self, tenant: &str) -> Result<Plan, StoreError> {
        on_rows!(self, Rows::Tenant(tenant), p => {
            let mut tx = p.begin().await?;
            let plan = tenant_plan_in!(tx, tenant);
            tx.commit().await?;
            plan.ok_or(StoreError::NotFound)
        })
    }

    /// What the tenant uses now against its limits.
    pub async fn tenant_usage(&self, tenant: &str) -> Result<TenantUsage, StoreError> {
        on_rows!(self, Rows::Tenant(tenant), p => {
            let mut tx = p.begin().await?;
            let u = tenant_usage_in!(tx, tenant);
            tx.commit().await?;
            Ok(u)
        })
    }

    /// A cheap early check before a key set upload is received: `Quota` when the tenant
    /// already holds its plan's key sets or has no byte of storage left. The upload is checked
    /// again, with its size, when its row is written.
    pub async fn check_key_set_quota(&self, tenant: &str) -> Result<(), StoreError> {
        on_rows!(self, Rows::Tenant(tenant), p => {
            let mut tx = p.begin().await?;
            let r = match tenant_plan_in!(tx, tenant) {
                Some(plan) => {
                    let used = tenant_usage_in!(tx, tenant);
                    if let Some(limit) = plan.max_key_sets.filter(|l| used.key_sets >= *l) {
                        Err(StoreError::Quota(QuotaExceeded::KeySets { limit }))
                    } else if let Some(q) = check_bytes(&plan, &used, 1) {
                        Err(StoreError::Quota(q))
                    } else {
                        Ok(())
                    }
                }
                None => Ok(()),
            };
            tx.commit().await?;
            r
        })
    }

    /// Counts a request in `bucket` (an API key id, or `tenant:<id>`) in the current second;
    /// returns the count so far (shared by every node on the database).
    pub async fn count_request(&self, bucket: &str) -> Result<i64, StoreError> {
        let q = "INSERT INTO rate_windows (bucket, second, count) VALUES ($1, $2, 1) \
                 ON CONFLICT (bucket, second) DO UPDATE SET count = rate_windows.count + 1 \
                 RETURNING count";
        on_pool!(self, p => {
            let r = sqlx::query(q)
                .bind(bucket)
                .bind(now_ms() / 1000)
                .fetch_one(p)
                .await?;
            Ok(r.try_get::<i64, _>("count")?)
        })
    }

    /// Usage records, oldest first: one tenant's, or everyone's (`None`); `after` is the
    /// `next` of the previous page.
    pub async fn list_usage(
        &self,
        tenant: Option<&str>,
        filter: &UsageFilter,
        limit: u32,
        after: Option<&str>,
    ) -> Result<UsagePage, StoreError> {
        let (after_time, after_id) = match after {
            None => (i64::MIN, String::new()),
            Some(c) => {
                let bad = || StoreError::Invalid(format!("invalid page cursor `{c}`"));
                let (t, id) = c.split_once('.').ok_or_else(bad)?;
                (t.parse::<i64>().map_err(|_| bad())?, id.to_owned())
            }
        };
        let limit = limit.clamp(1, 1000);
        let q = concat!(
            "SELECT ",
            usage_columns!(),
            " FROM usage_records",
            usage_where!(),
            "AND (recorded_at > $6 OR (recorded_at = $6 AND task_id > $7)) \
             ORDER BY recorded_at, task_id LIMIT $8"
        );
        let mut records: Vec<UsageRecord> = on_rows!(self, Rows::of(tenant), p => {
            let rows = sqlx::query(q)
                .bind(tenant.unwrap_or(""))
                .bind(filter.from.unwrap_or(i64::MIN))
                .bind(filter.to.unwrap_or(i64::MAX))
                .bind(filter.function.as_deref().unwrap_or(""))
                .bind(filter.api_key_id.as_deref().unwrap_or(""))
                .bind(after_time)
                .bind(&after_id)
                .bind(i64::from(limit) + 1)
                .fetch_all(p)
                .await?;
            rows.iter().map(crate::read).collect::<Result<_, StoreError>>()?
        });
        let next = if records.len() > limit as usize {
            records.truncate(limit as usize);
            records
                .last()
                .map(|r| format!("{}.{}", r.recorded_at, r.task_id))
        } else {
            None
        };
        Ok(UsagePage { records, next })
    }

    /// Sums over the usage records `filter` selects.
    pub async fn usage_totals(
        &self,
        tenant: Option<&str>,
        filter: &UsageFilter,
    ) -> Result<UsageTotals, StoreError> {
        let q = concat!(
            "SELECT CAST(COUNT(*) AS BIGINT) AS tasks, \
             CAST(COALESCE(SUM(cu), 0) AS BIGINT) AS cu, \
             CAST(COALESCE(SUM(charged_cu), 0) AS BIGINT) AS charged_cu, \
             CAST(COALESCE(SUM(amount_nanos), 0) AS BIGINT) AS amount_nanos \
             FROM usage_records",
            usage_where!()
        );
        on_rows!(self, Rows::of(tenant), p => {
            let r = sqlx::query(q)
                .bind(tenant.unwrap_or(""))
                .bind(filter.from.unwrap_or(i64::MIN))
                .bind(filter.to.unwrap_or(i64::MAX))
                .bind(filter.function.as_deref().unwrap_or(""))
                .bind(filter.api_key_id.as_deref().unwrap_or(""))
                .fetch_one(p)
                .await?;
            Ok(UsageTotals {
                tasks: r.try_get("tasks")?,
                cu: r.try_get("cu")?,
                charged_cu: r.try_get("charged_cu")?,
                amount_nanos: r.try_get("amount_nanos")?,
            })
        })
    }

    /// The tenant's invoice lines for `[from, to)`: one per function and price.
    pub async fn invoice_lines(
        &self,
        tenant: &str,
        from: i64,
        to: i64,
    ) -> Result<Vec<InvoiceLine>, StoreError> {
        let q = "SELECT function, price_nanos_per_cu, CAST(COUNT(*) AS BIGINT) AS tasks, \
                 CAST(COALESCE(SUM(charged_cu), 0) AS BIGINT) AS charged_cu, \
                 CAST(COALESCE(SUM(amount_nanos), 0) AS BIGINT) AS amount_nanos \
                 FROM usage_records WHERE tenant_id = $1 AND recorded_at >= $2 \
                 AND recorded_at < $3 GROUP BY function, price_nanos_per_cu \
                 ORDER BY function, price_nanos_per_cu";
        on_rows!(self, Rows::Tenant(tenant), p => {
            let rows = sqlx::query(q).bind(tenant).bind(from).bind(to).fetch_all(p).await?;
            rows.into_iter()
                .map(|r| Ok(InvoiceLine {
                    function: r.try_get("function")?,
                    price_nanos_per_cu: r.try_get("price_nanos_per_cu")?,
                    tasks: r.try_get("tasks")?,
                    charged_cu: r.try_get("charged_cu")?,
                    amount_nanos: r.try_get("amount_nanos")?,
                }))
                .collect()
        })
    }

    /// Deletes rate-limit windows older than a minute (housekeeping).
    pub async fn prune_rate_windows(&self) -> Result<(), StoreError> {
        let q = "DELETE FROM rate_windows WHERE second < $1";
        on_pool!(self, p => sqlx::query(q).bind(now_ms() / 1000 - 60).execute(p).await.map(|_| ()))?;
        Ok(())
    }

    /// Charged usage records whose meter event has not gone yet, oldest first, each with
    /// its tenant's Stripe customer; with `mapped_only`, only those of tenants mapped to one
    /// (an unmapped tenant's records wait for the mapping, without holding up the rest).
    pub async fn unexported_usage(
        &self,
        limit: u32,
        mapped_only: bool,
    ) -> Result<Vec<(UsageRecord, Option<String>)>, StoreError> {
        let q = concat!(
            "SELECT ",
            usage_columns!(),
            ", c.stripe_customer_id FROM usage_records u \
             JOIN tenants c ON c.id = u.tenant_id \
             WHERE charged_cu > 0 AND ($2 = 0 OR c.stripe_customer_id IS NOT NULL) \
             AND NOT EXISTS (SELECT 1 FROM meter_exports m WHERE m.task_id = u.task_id) \
             ORDER BY recorded_at, task_id LIMIT $1"
        );
        on_rows!(self, Rows::System, p => {
            let rows = sqlx::query(q)
                .bind(i64::from(limit.clamp(1, 10_000)))
                .bind(i64::from(mapped_only))
                .fetch_all(p)
                .await?;
            rows.iter()
                .map(|r| Ok((crate::read(r)?, r.try_get("stripe_customer_id")?)))
                .collect()
        })
    }

    /// Records what became of a task's meter event; `false` if something already was.
    pub async fn mark_exported(
        &self,
        task_id: &str,
        outcome: MeterOutcome,
        detail: Option<&str>,
    ) -> Result<bool, StoreError> {
        let q = "INSERT INTO meter_exports (task_id, sent_at, outcome, detail) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT (task_id) DO NOTHING";
        let n = on_rows!(self, Rows::System, p => sqlx::query(q)
            .bind(task_id)
            .bind(now_ms())
            .bind(outcome.as_str())
            .bind(detail)
            .execute(p)
            .await?
            .rows_affected());
        Ok(n == 1)
    }

    /// How many meter events ended each way, and how many charged records of unmapped
    /// tenants wait for a Stripe customer.
    pub async fn meter_export_counts(&self) -> Result<MeterCounts, StoreError> {
        let q = "SELECT \
                 CAST((SELECT COUNT(*) FROM meter_exports WHERE outcome = 'sent') AS BIGINT) AS sent, \
                 CAST((SELECT COUNT(*) FROM meter_exports WHERE outcome = 'expired') AS BIGINT) AS expired, \
                 CAST((SELECT COUNT(*) FROM meter_exports WHERE outcome = 'refused') AS BIGINT) AS refused, \
                 CAST((SELECT COUNT(*) FROM usage_records u JOIN tenants c ON c.id = u.tenant_id \
                   WHERE u.charged_cu > 0 AND c.stripe_customer_id IS NULL AND NOT EXISTS \
                   (SELECT 1 FROM meter_exports m WHERE m.task_id = u.task_id)) AS BIGINT) AS unmapped";
        on_rows!(self, Rows::System, p => {
            let r = sqlx::query(q).fetch_one(p).await?;
            Ok(MeterCounts {
                sent: r.try_get("sent")?,
                expired: r.try_get("expired")?,
                refused: r.try_get("refused")?,
                unmapped: r.try_get("unmapped")?,
            })
        })
    }

    /// Forgets the refusals so the next export sends those events again (after the operator
    /// fixed what the provider refused them for); how many.
    pub async fn retry_refused_meter_events(&self) -> Result<u64, StoreError> {
        let q = "DELETE FROM meter_exports WHERE outcome = 'refused'";
        let n = on_rows!(self, Rows::System, p => sqlx::query(q).execute(p).await?.rows_affected());
        Ok(n)
    }

    /// Maps a tenant to the Stripe customer its usage is billed to (`None`: unmapped).
    pub async fn set_tenant_billing(
        &self,
        tenant: &str,
        stripe_customer_id: Option<&str>,
    ) -> Result<(), StoreError> {
        let q = "UPDATE tenants SET stripe_customer_id = $1 WHERE id = $2";
        change_some!(self, Rows::System, None, q, stripe_customer_id, tenant).map(|_| ())
    }

    /// The Stripe customer a tenant is billed to.
    pub async fn tenant_billing(&self, tenant: &str) -> Result<Option<String>, StoreError> {
        let q = "SELECT stripe_customer_id FROM tenants WHERE id = $1";
        let row: Option<(Option<String>,)> = on_rows!(self, Rows::System, p => {
            sqlx::query_as(q).bind(tenant).fetch_optional(p).await?
        });
        row.map(|(c,)| c).ok_or(StoreError::NotFound)
    }
}

/// What became of a usage record's meter event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MeterOutcome {
    /// The provider accepted it (or the file has it).
    Sent,
    /// Older than the provider accepts; never sent.
    Expired,
    /// The provider refused it; sent again only after `retry_refused_meter_events`.
    Refused,
}

impl MeterOutcome {
    fn as_str(self) -> &'static str {
        match self {
            MeterOutcome::Sent => "sent",
            MeterOutcome::Expired => "expired",
            MeterOutcome::Refused => "refused",
        }
    }
}

/// Meter events by what became of them (see [`Store::meter_export_counts`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MeterCounts {
    pub sent: i64,
    pub expired: i64,
    pub refused: i64,
    /// Charged records of tenants without a Stripe customer, not exported yet.
    pub unmapped: i64,
}

/// Checks a new task against the plan, given the tenant's usage (`None`: within limits).
pub(crate) fn check_task(
    plan: &Plan,
    used: &TenantUsage,
    cost: i64,
    input_bytes: i64,
) -> Option<QuotaExceeded> {
    if let Some(cap) = plan.max_task_cu.filter(|cap| cost > *cap) {
        return Some(QuotaExceeded::TaskCu { cost, cap });
    }
    if let Some(limit) = plan.max_active_tasks.filter(|l| used.active_tasks >= *l) {
        return Some(QuotaExceeded::ActiveTasks { limit });
    }
    if let Some(limit) = plan
        .cu_per_period
        .filter(|l| used.period_cu.saturating_add(cost) > *l)
    {
        return Some(QuotaExceeded::PeriodCu {
            used: used.period_cu,
            cost,
            limit,
            period_end: period_of(now_ms()).1,
        });
    }
    check_bytes(plan, used, input_bytes)
}

/// Checks storing `adding` more bytes against the plan.
pub(crate) fn check_bytes(plan: &Plan, used: &TenantUsage, adding: i64) -> Option<QuotaExceeded> {
    plan.max_stored_bytes
        .filter(|l| used.stored_bytes.saturating_add(adding) > *l)
        .map(|limit| QuotaExceeded::StoredBytes {
            used: used.stored_bytes,
            adding,
            limit,
        })
}

impl Store {
    /// Refuses to store `adding` more bytes for `tenant` past its plan's storage quota. A
    /// check before the write, not inside it: two writes racing past it overshoot the quota
    /// by at most one document (the server runs 2 document jobs per tenant at a time).
    pub(crate) async fn check_storage(&self, tenant: &str, adding: i64) -> Result<(), StoreError> {
        on_rows!(self, Rows::Tenant(tenant), p => {
            // One snapshot for the plan and the usage; no lock, as nothing is written here.
            let mut tx = p.begin().await?;
            if let Some(plan) = tenant_plan_in!(tx, tenant) {
                let used = tenant_usage_in!(tx, tenant);
                if let Some(q) = check_bytes(&plan, &used, adding) {
                    return Err(StoreError::Quota(q));
                }
            }
            tx.commit().await?;
        });
        Ok(())
    }
}
