//! The audit log: an append-only hash chain.
//!
//! Record `n` stores `hash_n = SHA-256(hash_{n-1} || canonical(record_n))`, where the
//! canonical encoding is every field length-prefixed in a fixed order, so no two records
//! encode alike. Appends take the one `audit_head` row first (a row lock on PostgreSQL, the
//! write lock on SQLite), so sequence numbers have no gaps and the chain no forks, also
//! across API nodes. Task transitions are appended in the transaction that makes them, and
//! so is the record of a request's change (a [`Change`], see [`Store::recording`]): a
//! process that dies after the commit cannot lose it, and a change that does not commit
//! leaves none.
//! Signed checkpoints of the head (kept outside the database) are the server's business.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use sha2::{Digest, Sha256};
use sqlx::{Connection, Row};

use crate::{Rows, Store, StoreError};

/// The previous hash of the first record.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What happened, before it is chained.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct AuditEntry {
    /// The tenant acted on; `None` for operator actions.
    pub tenant_id: Option<String>,
    /// Who acted: an API key id, `operator`, or `worker:<id>` / `system`.
    pub actor: String,
    /// e.g. `POST /v1/tasks` or `task.succeeded`.
    pub action: String,
    /// What was acted on (a path or an id).
    pub target: String,
    /// e.g. an HTTP status or a task status.
    pub outcome: String,
    pub request_id: String,
}

/// The audit record of a request's change, committed by the store in the transaction that
/// makes the change. The entry's outcome is what the request answers once the change is
/// made (the caller knows; the store does not); where the change creates something, the
/// store records the new id as the target. Clones share whether it has been committed.
#[derive(Debug, Clone)]
pub struct Change {
    entry: AuditEntry,
    committed: Arc<AtomicBool>,
}

impl Change {
    pub fn new(entry: AuditEntry) -> Self {
        Self {
            entry,
            committed: Arc::default(),
        }
    }

    /// The record as it is committed: `target` in place of the entry's, if given.
    pub fn entry_on(&self, target: Option<&str>) -> AuditEntry {
        let mut e = self.entry.clone();
        if let Some(t) = target {
            t.clone_into(&mut e.target);
        }
        e
    }

    /// The outcome the record states.
    pub fn outcome(&self) -> &str {
        &self.entry.outcome
    }

    /// Whether a transaction has committed the record.
    pub fn is_committed(&self) -> bool {
        self.committed.load(Ordering::SeqCst)
    }

    pub(crate) fn mark_committed(&self) {
        self.committed.store(true, Ordering::SeqCst);
    }
}

/// A chained record.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct AuditRecord {
    pub seq: i64,
    pub at: i64,
    #[sqlx(flatten)]
    pub entry: AuditEntry,
    pub prev_hash: String,
    pub hash: String,
}

/// The first place the chain does not hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditBreak {
    pub seq: i64,
    pub reason: String,
}

/// What recomputing the chain found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditCheck {
    /// Records read.
    pub records: i64,
    /// The last sequence number and hash the chain reached.
    pub last_seq: i64,
    pub last_hash: String,
    pub first_bad: Option<AuditBreak>,
}

/// `SHA-256(prev || canonical(record))`, hex.
pub fn chain_hash(prev_hash: &str, seq: i64, at: i64, e: &AuditEntry) -> String {
    let mut h = Sha256::new();
    h.update(prev_hash.as_bytes());
    h.update(seq.to_be_bytes());
    h.update(at.to_be_bytes());
    let field = |h: &mut Sha256, v: Option<&str>| match v {
        // Absent differs from empty.
        None => h.update(u32::MAX.to_be_bytes()),
        Some(s) => {
            h.update((s.len() as u32).to_be_bytes());
            h.update(s.as_bytes());
        }
    };
    field(&mut h, e.tenant_id.as_deref());
    for v in [&e.actor, &e.action, &e.target, &e.outcome, &e.request_id] {
        field(&mut h, Some(v));
    }
    hex::encode(h.finalize())
}

macro_rules! audit_columns {
    () => {
        "seq, at, tenant_id, actor, action, target, outcome, request_id, prev_hash, hash"
    };
}

/// Appends `$entry` (an `&AuditEntry`) inside the open transaction `$tx`.
macro_rules! append_audit {
    ($tx:expr, $entry:expr) => {{
        let entry: &$crate::audit::AuditEntry = $entry;
        let head =
            sqlx::query("UPDATE audit_head SET seq = seq + 1 WHERE id = 1 RETURNING seq, hash")
                .fetch_one(&mut *$tx)
                .await?;
        let seq: i64 = sqlx::Row::try_get(&head, "seq")?;
        let prev: String = sqlx::Row::try_get(&head, "hash")?;
        let at = $crate::now_ms();
        let hash = $crate::audit::chain_hash(&prev, seq, at, entry);
        sqlx::query(
            "INSERT INTO audit_log (seq, at, tenant_id, actor, action, target, outcome, \
             request_id, prev_hash, hash) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(seq)
        .bind(at)
        .bind(&entry.tenant_id)
        .bind(&entry.actor)
        .bind(&entry.action)
        .bind(&entry.target)
        .bind(&entry.outcome)
        .bind(&entry.request_id)
        .bind(&prev)
        .bind(&hash)
        .execute(&mut *$tx)
        .await?;
        sqlx::query("UPDATE audit_head SET hash = $1 WHERE id = 1")
            .bind(&hash)
            .execute(&mut *$tx)
            .await?;
        $crate::audit::AuditRecord {
            seq,
            at,
            entry: entry.clone(),
            prev_hash: prev,
            hash,
        }
    }};
}

/// Commits the open transaction `$tx` of `$store` together with the record of the change
/// the store is recording ([`Store::recording`]), unless an earlier transaction of the same
/// request committed it; `$target` (an `Option<&str>`) names what the change created.
macro_rules! commit_change {
    ($store:expr, $tx:ident, $target:expr) => {{
        let change = $store.change.as_ref().filter(|c| !c.is_committed());
        if let Some(c) = change {
            let entry = c.entry_on($target);
            append_audit!($tx, &entry);
        }
        $tx.commit().await?;
        if let Some(c) = change {
            c.mark_committed();
        }
    }};
}

/// Runs one statement that changes rows, in a transaction that commits the recorded
/// change's audit record with it when it changed any (`$target` as in `commit_change!`);
/// the rows it changed.
macro_rules! change_rows {
    ($store:expr, $rows:expr, $target:expr, $query:expr, $($arg:expr),*) => {{
        let q: &'static str = $query;
        let n: u64 = on_rows!($store, $rows, p => {
            let mut tx = p.begin().await?;
            let n = sqlx::query(q)$(.bind($arg))*.execute(&mut *tx).await?.rows_affected();
            if n > 0 {
                commit_change!($store, tx, $target);
            }
            n
        });
        Ok::<u64, StoreError>(n)
    }};
}

/// `change_rows!` for a statement that must change at least one row: the rows it changed,
/// or `NotFound` (the row is not there, or not the caller's).
macro_rules! change_some {
    ($store:expr, $rows:expr, $target:expr, $query:expr, $($arg:expr),*) => {{
        match change_rows!($store, $rows, $target, $query, $($arg),*)? {
            0 => Err::<u64, StoreError>(StoreError::NotFound),
            n => Ok(n),
        }
    }};
}

/// Runs one statement that changes at most one row and returns it (`RETURNING`), as
/// `change_rows!` does.
macro_rules! change_row {
    ($store:expr, $rows:expr, $ty:ty, $target:expr, $query:expr, $($arg:expr),*) => {{
        let q: &'static str = $query;
        let v: Option<$ty> = on_rows!($store, $rows, p => {
            let mut tx = p.begin().await?;
            let v = sqlx::query_as::<_, $ty>(q)$(.bind($arg))*.fetch_optional(&mut *tx).await?;
            if v.is_some() {
                commit_change!($store, tx, $target);
            }
            v
        });
        Ok::<Option<$ty>, StoreError>(v)
    }};
}

/// Records read per query while verifying.
const VERIFY_PAGE: i64 = 1000;

impl Store {
    /// Appends one record to the chain.
    pub async fn append_audit(&self, entry: &AuditEntry) -> Result<AuditRecord, StoreError> {
        on_rows!(self, Rows::of_record(entry), p => {
            let mut tx = p.begin().await?;
            let r = append_audit!(tx, entry);
            tx.commit().await?;
            Ok(r)
        })
    }

    /// Records after `after` in sequence order: one tenant's, or everyone's (`None`).
    pub async fn audit_records(
        &self,
        tenant: Option<&str>,
        after: i64,
        limit: u32,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        let q = concat!(
            "SELECT ",
            audit_columns!(),
            " FROM audit_log WHERE ($1 = '' OR tenant_id = $1) AND seq > $2 \
             ORDER BY seq LIMIT $3"
        );
        let limit = i64::from(limit.clamp(1, 1000));
        on_rows!(self, Rows::of(tenant), p => {
            let rows = sqlx::query(q)
                .bind(tenant.unwrap_or(""))
                .bind(after)
                .bind(limit)
                .fetch_all(p)
                .await?;
            rows.iter().map(crate::read).collect()
        })
    }

    /// The head: the last sequence number handed out and its hash.
    pub async fn audit_head(&self) -> Result<(i64, String), StoreError> {
        on_pool!(self, p => {
            let r = sqlx::query("SELECT seq, hash FROM audit_head WHERE id = 1")
                .fetch_one(p)
                .await?;
            Ok((r.try_get("seq")?, r.try_get("hash")?))
        })
    }

    /// Recomputes the whole chain from the first record: every sequence number present in
    /// order from 1, every record's previous hash the hash before it, every hash right, and
    /// the head row agreeing with the last record.
    pub async fn verify_audit(&self) -> Result<AuditCheck, StoreError> {
        let mut check = AuditCheck {
            records: 0,
            last_seq: 0,
            last_hash: GENESIS_HASH.to_owned(),
            first_bad: None,
        };
        let q = concat!(
            "SELECT ",
            audit_columns!(),
            " FROM audit_log WHERE seq > $1 ORDER BY seq LIMIT $2"
        );
        let bad = |seq: i64, reason: &str| {
            Some(AuditBreak {
                seq,
                reason: reason.to_owned(),
            })
        };
        loop {
            let page: Vec<AuditRecord> = on_rows!(self, Rows::System, p => {
                let rows = sqlx::query(q)
                    .bind(check.last_seq)
                    .bind(VERIFY_PAGE)
                    .fetch_all(p)
                    .await?;
                rows.iter()
                    .map(crate::read::<AuditRecord, _>)
                    .collect::<Result<_, StoreError>>()?
            });
            if page.is_empty() {
                break;
            }
            for r in page {
                let expected = check.last_seq + 1;
                check.first_bad = if r.seq != expected {
                    bad(
                        expected,
                        "record missing (deleted, or the chain renumbered)",
                    )
                } else if r.prev_hash != check.last_hash {
                    bad(r.seq, "previous hash does not match the record before it")
                } else if chain_hash(&r.prev_hash, r.seq, r.at, &r.entry) != r.hash {
                    bad(r.seq, "record content does not match its hash (edited)")
                } else {
                    None
                };
                if check.first_bad.is_some() {
                    return Ok(check);
                }
                check.records += 1;
                check.last_seq = r.seq;
                check.last_hash = r.hash;
            }
        }
        let (head_seq, head_hash) = self.audit_head().await?;
        check.first_bad = if head_seq > check.last_seq {
            bad(
                check.last_seq + 1,
                "record missing (the head is further on)",
            )
        } else if head_seq < check.last_seq {
            bad(head_seq + 1, "record past the head (inserted)")
        } else if head_hash != check.last_hash {
            bad(head_seq, "the head's hash differs from the last record's")
        } else {
            None
        };
        Ok(check)
    }

    /// The hash of record `seq`, if it exists.
    pub async fn audit_hash_at(&self, seq: i64) -> Result<Option<String>, StoreError> {
        let q = "SELECT hash FROM audit_log WHERE seq = $1";
        on_rows!(self, Rows::System, p => {
            let r = sqlx::query(q).bind(seq).fetch_optional(p).await?;
            Ok(r.map(|r| r.try_get::<String, _>("hash")).transpose()?)
        })
    }
}
