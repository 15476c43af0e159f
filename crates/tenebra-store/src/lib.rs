//! Tenebra storage: the only crate that knows SQL.
//!
//! One [`Store`] over either backend: SQLite in WAL mode for the embedded deployment, or
//! PostgreSQL for a cluster. Both run the same queries (numbered `$N` parameters, which both
//! accept, always in ascending order of first use) and the same test story; each has its own
//! migrations folder, embedded in the binary. Every query on tenant data is scoped by tenant:
//! another tenant's id is simply not found.

use std::str::FromStr;
use std::time::{SystemTime, UNIX_EPOCH};

use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};
use sqlx::{Connection, Row};

/// Most live (unrevoked) API keys one tenant may hold.
pub const MAX_LIVE_API_KEYS: i64 = 100;

/// Storage failures, in domain terms (never HTTP codes).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("invalid: {0}")]
    Invalid(String),
    /// A worker wrote to a task it no longer holds (its lease was taken over).
    #[error("the task's lease was lost")]
    LeaseLost,
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration error: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The request would pass one of the tenant's limits; nothing was written.
    #[error("quota exceeded: {0}")]
    Quota(QuotaExceeded),
}

impl StoreError {
    /// Whether this node's database role may not do what was asked because it crosses
    /// tenants ([`CROSS_TENANT_DENIED`]): the deployment's choice, not a fault.
    pub fn is_cross_tenant_denied(&self) -> bool {
        matches!(self, StoreError::Database(sqlx::Error::Configuration(m))
            if m.to_string() == CROSS_TENANT_DENIED)
    }

    /// Whether the database is out of reach (down, restarting, every connection busy past
    /// the pool's acquire timeout) rather than refusing this query: worth a retry.
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            StoreError::Database(
                sqlx::Error::PoolTimedOut
                    | sqlx::Error::PoolClosed
                    | sqlx::Error::Io(_)
                    | sqlx::Error::WorkerCrashed
            )
        )
    }
}

/// What an API key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    /// Manage the tenant's API keys, plus everything below.
    Admin,
    /// Upload keys, deploy functions, submit and cancel tasks, plus everything below.
    Compute,
    /// Read key sets, functions, tasks and results.
    Read,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Admin => "admin",
            Scope::Compute => "compute",
            Scope::Read => "read",
        }
    }

    /// Whether a key of this scope may act with `needed`.
    pub fn allows(self, needed: Scope) -> bool {
        match needed {
            Scope::Admin => self == Scope::Admin,
            Scope::Compute => self != Scope::Read,
            Scope::Read => true,
        }
    }
}

impl TryFrom<String> for Scope {
    type Error = StoreError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl FromStr for Scope {
    type Err = StoreError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "admin" => Ok(Scope::Admin),
            "compute" => Ok(Scope::Compute),
            "read" => Ok(Scope::Read),
            _ => Err(StoreError::Invalid(format!(
                "unknown scope `{s}` (expected admin, compute or read)"
            ))),
        }
    }
}

/// A tenant: the unit of isolation and billing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tenant {
    pub id: String,
    pub name: String,
    pub created_at: i64,
}

/// An API key's record (the token itself is never stored).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ApiKey {
    pub id: String,
    pub tenant_id: String,
    pub name: String,
    #[sqlx(try_from = "String")]
    pub scope: Scope,
    pub created_at: i64,
    pub revoked_at: Option<i64>,
}

/// An uploaded key set's index row (the bytes are in the blob store).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct KeySet {
    pub id: String,
    pub tenant_id: String,
    /// SHA-256 of the serialized server key then public key, hex.
    pub fingerprint: String,
    pub size_bytes: i64,
    pub created_at: i64,
    /// When the set is deleted, if it was uploaded with a time to live.
    pub expires_at: Option<i64>,
}

/// A connection pool to one of the two backends.
#[derive(Debug, Clone)]
pub enum Db {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// What an ended task is charged, decided by the caller's rule (the server's `charges`
/// module): the store records these amounts and knows no rule of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Charge {
    /// CU of the work that ran.
    pub cu: i64,
    /// CU billed to the tenant (at most `cu`).
    pub charged_cu: i64,
}

/// The rule that decides an ended task's [`Charge`].
pub type ChargeRule = fn(&Task) -> Charge;

/// The database, and the rule it meters ended tasks by.
#[derive(Debug, Clone)]
pub struct Store {
    db: Db,
    charge: ChargeRule,
    /// The request change whose audit record this handle's writes commit with.
    change: Option<audit::Change>,
}

/// Runs the same expression against whichever pool the store holds.
macro_rules! on_pool {
    ($store:expr, $pool:ident => $body:expr) => {
        match &$store.db {
            $crate::Db::Sqlite($pool) => $body,
            $crate::Db::Postgres($pool) => $body,
        }
    };
}

/// Whose rows a query may touch: on PostgreSQL, what row-level security lets the
/// transaction see and change (migration 0009); SQLite, one tenant's own file in the
/// embedded deployment, has no such policies.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Rows<'a> {
    /// One tenant's (`tenebra.tenant_id`): what a tenant's request reads and writes.
    Tenant(&'a str),
    /// Every tenant's (`tenebra.scope = 'system'`): workers, sweeps, the meter export and
    /// operator views. Refused to a database role not listed in `cross_tenant_roles`.
    System,
    /// No tenant's: appends of audit records that belong to no tenant (operator requests,
    /// requests that failed to authenticate), which any role may make.
    Nobody,
}

impl<'a> Rows<'a> {
    /// One tenant's rows, or every tenant's where the caller asks for all (`None`).
    pub(crate) fn of(tenant: Option<&'a str>) -> Self {
        tenant.map_or(Rows::System, Rows::Tenant)
    }

    /// The rows an audit record's append touches: its tenant's, or no tenant's.
    pub(crate) fn of_record(e: &'a audit::AuditEntry) -> Self {
        e.tenant_id.as_deref().map_or(Rows::Nobody, Rows::Tenant)
    }
}

/// What a database role not allowed across tenants gets where the system scope is needed.
pub const CROSS_TENANT_DENIED: &str =
    "this node's database role may not act across tenants (it is not in cross_tenant_roles); \
     workers, sweeps and operator views need a role that is";

/// A PostgreSQL transaction limited to `rows` (both settings end with it).
pub(crate) async fn scoped(
    pool: &PgPool,
    rows: Rows<'_>,
) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    match rows {
        Rows::Tenant(t) => {
            sqlx::query("SELECT set_config('tenebra.tenant_id', $1, true)")
                .bind(t)
                .execute(&mut *tx)
                .await?;
        }
        Rows::System => {
            let may: bool = sqlx::query_scalar(
                "SELECT set_config('tenebra.scope', 'system', true) = 'system' \
                 AND tenebra_may_cross_tenants()",
            )
            .fetch_one(&mut *tx)
            .await?;
            if !may {
                return Err(sqlx::Error::Configuration(CROSS_TENANT_DENIED.into()));
            }
        }
        Rows::Nobody => {}
    }
    Ok(tx)
}

/// Runs the same expression against a connection of whichever pool the store holds, as
/// `on_pool!` does, limited to `$rows` ([`Rows`]): on PostgreSQL inside a transaction that
/// sets them (a transaction the expression opens is a savepoint of it).
macro_rules! on_rows {
    ($store:expr, $rows:expr, $conn:ident => $body:expr) => {
        match &$store.db {
            $crate::Db::Sqlite(pool) => {
                let mut c = pool.acquire().await?;
                let $conn = &mut *c;
                $body
            }
            $crate::Db::Postgres(pool) => {
                let mut scoped = $crate::scoped(pool, $rows).await?;
                let value = {
                    let $conn = &mut *scoped;
                    $body
                };
                scoped.commit().await?;
                value
            }
        }
    };
}

/// Runs a query returning at most one row of a type that derives `sqlx::FromRow`, limited
/// to `$rows`.
macro_rules! fetch_optional {
    ($store:expr, $rows:expr, $ty:ty, $query:expr, $($arg:expr),*) => {{
        let q: &'static str = $query;
        let v: Option<$ty> = on_rows!($store, $rows, c => {
            sqlx::query_as::<_, $ty>(q)$(.bind($arg))*.fetch_optional(c).await?
        });
        Ok::<_, StoreError>(v)
    }};
}

/// What storing the next version of a name did.
#[derive(Debug)]
pub enum Versioned<T> {
    /// Stored as a new version.
    Created(T),
    /// A version already held the same content: that one.
    Existing(T),
}

/// Which versioned names a version counter counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum VersionOf {
    Function,
    Model,
}

impl Store {
    /// Stores the next version of a name: returns the version `existing` finds holding the
    /// same content, or takes the name's next version number and runs `insert` with it.
    /// Numbers come from the name's counter (`version_counters`), never from the versions
    /// stored: a deleted latest version's number is not given again, and two racing inserts
    /// get different numbers. Racing inserts of the same content conflict on the unique key;
    /// the loser finds the winner's version (its number is left unused). `what` names the
    /// racing writes in the error after five tries.
    pub(crate) async fn insert_next_version<T, E, I>(
        &self,
        what: &str,
        counter: (VersionOf, &str, &str),
        stored_bytes: i64,
        existing: impl Fn() -> E,
        insert: impl Fn(i64) -> I,
    ) -> Result<Versioned<T>, StoreError>
    where
        E: std::future::Future<Output = Result<Option<T>, StoreError>>,
        I: std::future::Future<Output = Result<T, sqlx::Error>>,
    {
        let (kind, tenant, name) = counter;
        let kind = match kind {
            VersionOf::Function => "function",
            VersionOf::Model => "model",
        };
        let next = "INSERT INTO version_counters (tenant_id, kind, name, last_version) \
                    VALUES ($1, $2, $3, 1) ON CONFLICT (tenant_id, kind, name) \
                    DO UPDATE SET last_version = version_counters.last_version + 1 \
                    RETURNING last_version";
        for _ in 0..5 {
            if let Some(x) = existing().await? {
                return Ok(Versioned::Existing(x));
            }
            self.check_storage(tenant, stored_bytes).await?;
            let version: i64 = match on_rows!(self, Rows::Tenant(tenant), p => sqlx::query_scalar(next)
                .bind(tenant)
                .bind(kind)
                .bind(name)
                .fetch_one(p)
                .await)
            {
                Ok(v) => v,
                Err(sqlx::Error::Database(d)) if d.is_foreign_key_violation() => {
                    return Err(StoreError::NotFound)
                }
                Err(e) => return Err(e.into()),
            };
            match insert(version).await {
                Ok(x) => return Ok(Versioned::Created(x)),
                Err(e) if unique_violation(&e) => continue,
                Err(sqlx::Error::Database(d)) if d.is_foreign_key_violation() => {
                    return Err(StoreError::NotFound)
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(StoreError::Conflict(format!(
            "too many concurrent {what}; try again"
        )))
    }
}

#[macro_use]
pub mod audit;
#[macro_use]
pub mod billing;
mod functions;
mod models;
mod tasks;

pub use audit::{AuditBreak, AuditCheck, AuditEntry, AuditRecord, Change};
pub use billing::{
    InvoiceLine, MeterCounts, MeterOutcome, Plan, QuotaExceeded, TenantUsage, UsageFilter,
    UsagePage, UsageRecord, UsageTotals,
};
pub use functions::{Deployed, Function, FunctionFacts, FunctionListing};
pub use models::{ModelGrant, ModelListing, ModelRow, Uploaded};
pub use tasks::{
    EndedListener, NewTask, Outcome, Submitted, Task, TaskListener, TaskPage, TaskStatus, INTERNAL,
    WORKER_LOST,
};

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// A new random id with a readable prefix, e.g. `tn_3f9a...`.
pub fn new_id(prefix: &str) -> String {
    let bytes: [u8; 16] = rand::random();
    format!("{prefix}_{}", hex::encode(bytes))
}

/// Reads a row into a type that derives `sqlx::FromRow` (on either backend).
fn read<'r, T, R>(row: &'r R) -> Result<T, StoreError>
where
    R: sqlx::Row,
    T: sqlx::FromRow<'r, R>,
{
    Ok(T::from_row(row)?)
}

fn unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}

/// The start of every query that reads `api_keys` rows (a macro, so `concat!` keeps the
/// queries `&'static str`).
macro_rules! select_api_keys {
    () => {
        "SELECT id, tenant_id, name, scope, created_at, revoked_at FROM api_keys "
    };
}

/// The columns a `KeySet` is read from.
macro_rules! key_set_columns {
    () => {
        "id, tenant_id, fingerprint, size_bytes, created_at, expires_at"
    };
}

/// The start of every query that reads `key_sets` rows.
macro_rules! select_key_sets {
    () => {
        concat!("SELECT ", key_set_columns!(), " FROM key_sets ")
    };
}

impl Store {
    /// Connects to `postgres://...` or `sqlite://PATH` (created if missing, WAL mode); ended
    /// tasks are metered by `charge`.
    pub async fn connect(url: &str, charge: ChargeRule) -> Result<Self, StoreError> {
        let db = Self::pool(url).await?;
        Ok(Store {
            db,
            charge,
            change: None,
        })
    }

    /// This store, recording `change`: the first of its writes that changes something
    /// commits the change's audit record in the same transaction. A write that changes
    /// nothing (an existing version, an idempotent retry, a row not found) records nothing.
    pub fn recording(&self, change: Option<audit::Change>) -> Store {
        Store {
            change,
            ..self.clone()
        }
    }

    /// The connection pool (for callers that must run their own SQL, such as tests).
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// Whether this is PostgreSQL (a cluster's store) rather than SQLite.
    pub fn is_postgres(&self) -> bool {
        matches!(self.db, Db::Postgres(_))
    }

    async fn pool(url: &str) -> Result<Db, StoreError> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let pool = PgPoolOptions::new()
                .max_connections(16)
                // A request waits at most this long for a connection (default 30 s): while
                // the database is down requests fail fast (503) instead of piling up.
                .acquire_timeout(std::time::Duration::from_secs(5))
                .connect(url)
                .await?;
            Ok(Db::Postgres(pool))
        } else if url.starts_with("sqlite:") {
            let opts = SqliteConnectOptions::from_str(url)?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .foreign_keys(true)
                .busy_timeout(std::time::Duration::from_secs(5));
            let pool = SqlitePoolOptions::new()
                .max_connections(8)
                .connect_with(opts)
                .await?;
            Ok(Db::Sqlite(pool))
        } else {
            Err(StoreError::Invalid(format!(
                "unsupported database URL `{url}` (expected postgres://... or sqlite://...)"
            )))
        }
    }

    /// Applies the backend's embedded migrations.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        match &self.db {
            Db::Sqlite(p) => sqlx::migrate!("./migrations/sqlite").run(p).await?,
            Db::Postgres(p) => {
                let migrator = sqlx::migrate!("./migrations/postgres");
                // An API node may connect as a role that may not create tables (one kept out
                // of other tenants' rows, see migration 0009): it checks that the owner has
                // applied every migration this binary knows instead of applying them.
                let may_create: bool =
                    sqlx::query_scalar("SELECT has_schema_privilege(current_schema(), 'CREATE')")
                        .fetch_one(p)
                        .await?;
                if may_create {
                    migrator.run(p).await?;
                } else {
                    let applied: Option<i64> = sqlx::query_scalar(
                        "SELECT MAX(version) FROM _sqlx_migrations WHERE success",
                    )
                    .fetch_one(p)
                    .await?;
                    let known = migrator.iter().map(|m| m.version).max();
                    if applied < known {
                        return Err(StoreError::Invalid(format!(
                            "the database is at migration {} and this binary needs {}; \
                             this role may not create tables: start a node (or run a \
                             `tenebra admin` command) with the tables' owner's URL first",
                            applied.unwrap_or(0),
                            known.unwrap_or(0)
                        )));
                    }
                }
            }
        }
        Ok(())
    }

    /// Checks that the database answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        on_pool!(self, p => sqlx::query("SELECT 1").execute(p).await.map(|_| ()))?;
        Ok(())
    }

    pub async fn close(&self) {
        on_pool!(self, p => p.close().await);
    }

    /// Creates a tenant; its name must be unused.
    pub async fn create_tenant(&self, name: &str) -> Result<Tenant, StoreError> {
        let t = Tenant {
            id: new_id("tn"),
            name: name.to_owned(),
            created_at: now_ms(),
        };
        let q = "INSERT INTO tenants (id, name, created_at) VALUES ($1, $2, $3)";
        let r = on_rows!(self, Rows::System, p => sqlx::query(q)
            .bind(&t.id)
            .bind(&t.name)
            .bind(t.created_at)
            .execute(p)
            .await
            .map(|r| r.rows_affected()));
        match r {
            Ok(_) => Ok(t),
            Err(e) if unique_violation(&e) => Err(StoreError::Conflict(format!(
                "a tenant named `{name}` exists"
            ))),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn tenant(&self, id: &str) -> Result<Tenant, StoreError> {
        let q = "SELECT id, name, created_at FROM tenants WHERE id = $1";
        let row = on_rows!(self, Rows::Tenant(id), p => {
            let row = sqlx::query(q).bind(id).fetch_optional(p).await?;
            row.map(|r| -> Result<Tenant, StoreError> {
                Ok(Tenant {
                    id: r.try_get("id")?,
                    name: r.try_get("name")?,
                    created_at: r.try_get("created_at")?,
                })
            })
        });
        row.ok_or(StoreError::NotFound)?
    }

    /// Stores a new API key of `tenant`, identified by the HMAC of its token; `Quota` past
    /// [`MAX_LIVE_API_KEYS`] live keys.
    pub async fn create_api_key(
        &self,
        tenant: &str,
        name: &str,
        scope: Scope,
        token_hash: &[u8; 32],
    ) -> Result<ApiKey, StoreError> {
        let k = ApiKey {
            id: new_id("key"),
            tenant_id: tenant.to_owned(),
            name: name.to_owned(),
            scope,
            created_at: now_ms(),
            revoked_at: None,
        };
        let q = "INSERT INTO api_keys (id, tenant_id, name, scope, token_hash, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6)";
        let live = "SELECT COUNT(*) AS n FROM api_keys WHERE tenant_id = $1 \
                    AND revoked_at IS NULL";
        let r: Result<(), sqlx::Error> = on_rows!(self, Rows::Tenant(tenant), p => {
            let mut tx = p.begin().await?;
            lock_tenant!(tx, tenant);
            let n: i64 = sqlx::query(live)
                .bind(tenant)
                .fetch_one(&mut *tx)
                .await?
                .try_get("n")?;
            if n >= MAX_LIVE_API_KEYS {
                return Err(StoreError::Quota(QuotaExceeded::ApiKeys {
                    limit: MAX_LIVE_API_KEYS,
                }));
            }
            match sqlx::query(q)
                .bind(&k.id)
                .bind(&k.tenant_id)
                .bind(&k.name)
                .bind(k.scope.as_str())
                .bind(token_hash.as_slice())
                .bind(k.created_at)
                .execute(&mut *tx)
                .await
            {
                Ok(_) => {
                    commit_change!(self, tx, Some(k.id.as_str()));
                    Ok(())
                }
                Err(e) => Err(e),
            }
        });
        match r {
            Ok(()) => Ok(k),
            Err(sqlx::Error::Database(d)) if d.is_foreign_key_violation() => {
                Err(StoreError::NotFound)
            }
            Err(e) if unique_violation(&e) => {
                Err(StoreError::Conflict("token already in use".into()))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The key a token hash belongs to, revoked or not (the caller decides).
    pub async fn api_key_by_hash(&self, token_hash: &[u8; 32]) -> Result<ApiKey, StoreError> {
        // Before any tenant is known: on PostgreSQL through the one function that may look
        // across tenants for it (migration 0009), so an API node's role needs no more.
        let q = match self.db {
            Db::Sqlite(_) => concat!(select_api_keys!(), "WHERE token_hash = $1"),
            Db::Postgres(_) => {
                "SELECT id, tenant_id, name, scope, created_at, revoked_at \
                                FROM tenebra_api_key_by_hash($1)"
            }
        };
        let key = on_pool!(self, p => sqlx::query_as::<_, ApiKey>(q)
            .bind(token_hash.as_slice())
            .fetch_optional(p)
            .await?);
        key.ok_or(StoreError::NotFound)
    }

    /// The tenant's API keys, oldest first.
    pub async fn list_api_keys(&self, tenant: &str) -> Result<Vec<ApiKey>, StoreError> {
        let q = concat!(
            select_api_keys!(),
            "WHERE tenant_id = $1 ORDER BY created_at, id"
        );
        on_rows!(self, Rows::Tenant(tenant), p => {
            let rows = sqlx::query(q).bind(tenant).fetch_all(p).await?;
            rows.iter().map(read).collect()
        })
    }

    /// Revokes one of the tenant's keys; another tenant's key is not found.
    pub async fn revoke_api_key(&self, tenant: &str, id: &str) -> Result<ApiKey, StoreError> {
        let q = "UPDATE api_keys SET revoked_at = $1 \
                 WHERE tenant_id = $2 AND id = $3 AND revoked_at IS NULL";
        change_rows!(self, Rows::Tenant(tenant), None, q, now_ms(), tenant, id)?;
        // Revoked now or before: either way the stored revocation time is the answer.
        let q = concat!(select_api_keys!(), "WHERE tenant_id = $1 AND id = $2");
        fetch_optional!(self, Rows::Tenant(tenant), ApiKey, q, tenant, id)?
            .ok_or(StoreError::NotFound)
    }

    /// Records an uploaded key set; a set with the same fingerprint in the same tenant is a
    /// `Conflict` (the caller then returns the existing one). Checks the tenant's key set and
    /// storage limits (`Quota`).
    pub async fn create_key_set(
        &self,
        tenant: &str,
        id: &str,
        fingerprint: &str,
        size_bytes: i64,
        expires_at: Option<i64>,
    ) -> Result<KeySet, StoreError> {
        let k = KeySet {
            id: id.to_owned(),
            tenant_id: tenant.to_owned(),
            fingerprint: fingerprint.to_owned(),
            size_bytes,
            created_at: now_ms(),
            expires_at,
        };
        let q = "INSERT INTO key_sets (id, tenant_id, fingerprint, size_bytes, created_at, \
                 expires_at) VALUES ($1, $2, $3, $4, $5, $6)";
        let r: Result<(), sqlx::Error> = on_rows!(self, Rows::Tenant(tenant), p => {
            let mut tx = p.begin().await?;
            lock_tenant!(tx, tenant);
            if let Some(plan) = tenant_plan_in!(tx, tenant) {
                let used = tenant_usage_in!(tx, tenant);
                if let Some(limit) = plan.max_key_sets.filter(|l| used.key_sets >= *l) {
                    return Err(StoreError::Quota(QuotaExceeded::KeySets { limit }));
                }
                if let Some(q) = billing::check_bytes(&plan, &used, size_bytes) {
                    return Err(StoreError::Quota(q));
                }
            }
            match sqlx::query(q)
                .bind(&k.id)
                .bind(&k.tenant_id)
                .bind(&k.fingerprint)
                .bind(k.size_bytes)
                .bind(k.created_at)
                .bind(k.expires_at)
                .execute(&mut *tx)
                .await
            {
                Ok(_) => {
                    commit_change!(self, tx, Some(k.id.as_str()));
                    Ok(())
                }
                Err(e) => Err(e),
            }
        });
        match r {
            Ok(()) => Ok(k),
            Err(sqlx::Error::Database(d)) if d.is_foreign_key_violation() => {
                Err(StoreError::NotFound)
            }
            Err(e) if unique_violation(&e) => Err(StoreError::Conflict(format!(
                "key set {fingerprint} is already uploaded"
            ))),
            Err(e) => Err(e.into()),
        }
    }

    /// The tenant's key set with this fingerprint.
    pub async fn key_set_by_fingerprint(
        &self,
        tenant: &str,
        fingerprint: &str,
    ) -> Result<KeySet, StoreError> {
        let q = concat!(
            select_key_sets!(),
            "WHERE tenant_id = $1 AND fingerprint = $2"
        );
        fetch_optional!(self, Rows::Tenant(tenant), KeySet, q, tenant, fingerprint)?
            .ok_or(StoreError::NotFound)
    }

    /// Sets when one of the tenant's key sets expires (`None`: never); returns it.
    pub async fn set_key_set_expiry(
        &self,
        tenant: &str,
        id: &str,
        expires_at: Option<i64>,
    ) -> Result<KeySet, StoreError> {
        let q = concat!(
            "UPDATE key_sets SET expires_at = $1 WHERE tenant_id = $2 AND id = $3 RETURNING ",
            key_set_columns!()
        );
        change_row!(
            self,
            Rows::Tenant(tenant),
            KeySet,
            Some(id),
            q,
            expires_at,
            tenant,
            id
        )?
        .ok_or(StoreError::NotFound)
    }

    /// One of the tenant's key sets; another tenant's is not found.
    pub async fn key_set(&self, tenant: &str, id: &str) -> Result<KeySet, StoreError> {
        let q = concat!(select_key_sets!(), "WHERE tenant_id = $1 AND id = $2");
        fetch_optional!(self, Rows::Tenant(tenant), KeySet, q, tenant, id)?
            .ok_or(StoreError::NotFound)
    }

    /// The tenant's key sets, oldest first.
    pub async fn list_key_sets(&self, tenant: &str) -> Result<Vec<KeySet>, StoreError> {
        let q = concat!(
            select_key_sets!(),
            "WHERE tenant_id = $1 ORDER BY created_at, id"
        );
        Ok(
            on_rows!(self, Rows::Tenant(tenant), p => sqlx::query_as::<_, KeySet>(q).bind(tenant).fetch_all(p).await?),
        )
    }

    /// Deletes one of the tenant's key sets' rows (the caller removes the blob).
    pub async fn delete_key_set(&self, tenant: &str, id: &str) -> Result<(), StoreError> {
        let q = "DELETE FROM key_sets WHERE tenant_id = $1 AND id = $2";
        change_some!(self, Rows::Tenant(tenant), None, q, tenant, id).map(|_| ())
    }

    /// Deletes the rows of key sets past their time to live; returns them (the caller
    /// removes the blobs).
    pub async fn expire_key_sets(&self) -> Result<Vec<KeySet>, StoreError> {
        // A set a queued or running task still needs stays until that task ends.
        let q = concat!(
            "DELETE FROM key_sets WHERE expires_at <= $1 AND NOT EXISTS (SELECT 1 FROM tasks              WHERE tasks.key_set_id = key_sets.id AND tasks.status IN ('queued', 'running'))              RETURNING ",
            key_set_columns!()
        );
        Ok(
            on_rows!(self, Rows::System, p => sqlx::query_as::<_, KeySet>(q).bind(now_ms()).fetch_all(p).await?),
        )
    }
}
