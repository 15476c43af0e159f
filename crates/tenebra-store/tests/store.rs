//! The same storage story on SQLite and on the real PostgreSQL (a fresh database per test).

use std::time::Duration;

use tenebra_store::{
    AuditEntry, Change, Charge, Db, Deployed, FunctionFacts, MeterOutcome, NewTask, Outcome, Plan,
    QuotaExceeded, Scope, Store, StoreError, Submitted, Task, TaskStatus, UsageFilter,
};

const PG_ADMIN: &str = "postgres://postgres@127.0.0.1:5432/test";

/// The store records what its caller's rule charges; this one (the server has its own)
/// charges the part of the cost that ran and nothing for a failure.
fn rule(t: &Task) -> Charge {
    let cu = match t.status {
        TaskStatus::Succeeded => t.cost_cu,
        _ => t.cost_cu * t.progress_done / t.progress_total.max(1),
    };
    let failed = t.status == TaskStatus::Failed;
    Charge {
        cu,
        charged_cu: if failed { 0 } else { cu },
    }
}

/// What a deploy stores beside a circuit, for a test circuit costing `cost_cu`.
fn facts(cost_cu: i64) -> FunctionFacts {
    FunctionFacts {
        cost_cu,
        ops: 1,
        scheme: "tfhe".into(),
        signature: "x: u8 -> y: u8".into(),
    }
}

async fn connect(url: &str) -> Store {
    Store::connect(url, rule).await.unwrap()
}

/// The role that owns the test databases: not a superuser, so row-level security binds it
/// as it binds a deployment's owner (superusers skip every policy).
const PG_OWNER: &str = "tenebra_test_owner";
/// A role kept out of other tenants' rows, as an API node's may be.
const PG_API: &str = "tenebra_test_api";

/// Runs `sql` on the database at `url` as the PostgreSQL superuser.
async fn pg_admin(url: &str, sql: &str) {
    let admin = sqlx::PgPool::connect(url)
        .await
        .expect("PostgreSQL on 127.0.0.1:5432");
    sqlx::raw_sql(sql)
        .execute(&admin)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    admin.close().await;
}

/// Creates a login role unless it exists (tests racing to create it included).
fn create_role(name: &str) -> String {
    format!(
        "DO $$ BEGIN CREATE ROLE {name} LOGIN; \
         EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$"
    )
}

/// A fresh PostgreSQL database owned by [`PG_OWNER`], dropped when the guard goes.
struct PgDb {
    name: String,
}

impl PgDb {
    async fn create() -> (Store, PgDb) {
        let name = format!(
            "tenebra_test_{}",
            tenebra_store::new_id("db").trim_start_matches("db_")
        );
        pg_admin(PG_ADMIN, &create_role(PG_OWNER)).await;
        pg_admin(
            PG_ADMIN,
            &format!("CREATE DATABASE {name} OWNER {PG_OWNER}"),
        )
        .await;
        let store = connect(&PgDb::url_as(&name, PG_OWNER)).await;
        (store, PgDb { name })
    }

    fn url_as(name: &str, role: &str) -> String {
        format!("postgres://{role}@127.0.0.1:5432/{name}")
    }

    async fn drop_db(self, store: Store) {
        store.close().await;
        let admin = connect(PG_ADMIN).await;
        if let Db::Postgres(p) = admin.db() {
            sqlx::query(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
            .execute(p)
            .await
            .unwrap();
        }
        admin.close().await;
    }
}

async fn story(store: &Store) {
    store.migrate().await.unwrap();
    store.ping().await.unwrap();
    let a = store.create_tenant("acme").await.unwrap();
    let b = store.create_tenant("globex").await.unwrap();
    assert!(matches!(
        store.create_tenant("acme").await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(store.tenant(&a.id).await.unwrap(), a);
    assert!(matches!(
        store.tenant("tn_nope").await,
        Err(StoreError::NotFound)
    ));

    let ka = store
        .create_api_key(&a.id, "first", Scope::Admin, &[1; 32])
        .await
        .unwrap();
    let kb = store
        .create_api_key(&b.id, "ci", Scope::Read, &[2; 32])
        .await
        .unwrap();
    assert!(matches!(
        store
            .create_api_key(&b.id, "dup", Scope::Read, &[2; 32])
            .await,
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        store
            .create_api_key("tn_nope", "x", Scope::Read, &[3; 32])
            .await,
        Err(StoreError::NotFound)
    ));
    assert_eq!(store.api_key_by_hash(&[1; 32]).await.unwrap(), ka);
    assert!(matches!(
        store.api_key_by_hash(&[9; 32]).await,
        Err(StoreError::NotFound)
    ));
    assert_eq!(store.list_api_keys(&a.id).await.unwrap(), vec![ka.clone()]);
    assert_eq!(store.list_api_keys(&b.id).await.unwrap(), vec![kb.clone()]);

    // Tenants never see each other: B cannot revoke A's key.
    assert!(matches!(
        store.revoke_api_key(&b.id, &ka.id).await,
        Err(StoreError::NotFound)
    ));
    assert_eq!(
        store.api_key_by_hash(&[1; 32]).await.unwrap().revoked_at,
        None
    );
    let revoked = store.revoke_api_key(&a.id, &ka.id).await.unwrap();
    assert!(revoked.revoked_at.is_some());
    assert!(store
        .api_key_by_hash(&[1; 32])
        .await
        .unwrap()
        .revoked_at
        .is_some());
    // Revoking twice keeps the first revocation time.
    assert_eq!(store.revoke_api_key(&a.id, &ka.id).await.unwrap(), revoked);
    // Key sets: one per fingerprint per tenant, scoped.
    let ks = store
        .create_key_set(&a.id, "ks_1", "ab", 10, None)
        .await
        .unwrap();
    assert!(matches!(
        store.create_key_set(&a.id, "ks_2", "ab", 10, None).await,
        Err(StoreError::Conflict(_))
    ));
    let other = store
        .create_key_set(&b.id, "ks_3", "ab", 10, None)
        .await
        .unwrap();
    assert_eq!(store.key_set_by_fingerprint(&a.id, "ab").await.unwrap(), ks);
    assert_eq!(store.key_set(&a.id, "ks_1").await.unwrap(), ks);
    assert!(matches!(
        store.key_set(&b.id, "ks_1").await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        store.delete_key_set(&b.id, "ks_1").await,
        Err(StoreError::NotFound)
    ));
    assert_eq!(store.list_key_sets(&b.id).await.unwrap(), vec![other]);
    store.delete_key_set(&a.id, "ks_1").await.unwrap();
    assert!(store.list_key_sets(&a.id).await.unwrap().is_empty());
    // A key set with a time to live goes when it has passed, and only then.
    let soon = tenebra_store::now_ms() + 60_000;
    let past = tenebra_store::now_ms() - 1;
    store
        .create_key_set(&a.id, "ks_4", "cd", 10, Some(soon))
        .await
        .unwrap();
    let gone = store
        .create_key_set(&a.id, "ks_5", "ef", 10, Some(past))
        .await
        .unwrap();
    assert_eq!(store.expire_key_sets().await.unwrap(), vec![gone]);
    assert_eq!(store.list_key_sets(&a.id).await.unwrap().len(), 1);
    // An expiry can be changed (a re-upload asks for another one).
    let forever = store.set_key_set_expiry(&a.id, "ks_4", None).await.unwrap();
    assert_eq!(forever.expires_at, None);
    assert!(matches!(
        store.set_key_set_expiry(&b.id, "ks_4", None).await,
        Err(StoreError::NotFound)
    ));
    store.delete_key_set(&a.id, "ks_4").await.unwrap();
    // A set a queued task needs outlives its expiry until the task ends.
    let held = store
        .create_key_set(&a.id, "ks_6", "gh", 10, Some(past))
        .await
        .unwrap();
    let needs = NewTask {
        key_set_id: "ks_6".into(),
        ..new_task(None)
    };
    let t = created(store.submit_task(&a.id, &needs).await.unwrap());
    assert!(store.expire_key_sets().await.unwrap().is_empty());
    store.cancel_task(&a.id, &t.id).await.unwrap();
    assert_eq!(store.expire_key_sets().await.unwrap(), vec![held]);
    // Migrations are idempotent.
    store.migrate().await.unwrap();
}

fn new_task(key: Option<&str>) -> NewTask {
    NewTask {
        id: tenebra_store::new_id("task"),
        api_key_id: "key_1".into(),
        function: "weight_stats".into(),
        size: 5,
        circuit_id: "c1".into(),
        key_set_id: "ks_1".into(),
        idempotency_key: key.map(str::to_owned),
        input_sha256: "ab".into(),
        input_bytes: 100,
        cost_cu: 42,
    }
}

fn created(s: Submitted) -> tenebra_store::Task {
    match s {
        Submitted::Created(t) => t,
        Submitted::Existing(t) => panic!("expected a new task, got {}", t.id),
    }
}

/// The task queue: submit, idempotency, claims with leases and fences, cancel, retry,
/// release, expiry, listing, and isolation between tenants.
async fn task_story(store: &Store) {
    store.migrate().await.unwrap();
    let a = store.create_tenant("acme").await.unwrap().id;
    let b = store.create_tenant("globex").await.unwrap().id;
    let lease = Duration::from_secs(30);
    assert!(store.claim_task("w1", lease, 3).await.unwrap().is_none());

    let t1 = created(store.submit_task(&a, &new_task(Some("k1"))).await.unwrap());
    assert_eq!(t1.status, TaskStatus::Queued);
    assert_eq!((t1.attempts, t1.fence), (0, 0));
    // The same idempotency key returns the same task; another tenant's key space is its own.
    match store.submit_task(&a, &new_task(Some("k1"))).await.unwrap() {
        Submitted::Existing(t) => assert_eq!(t, t1),
        Submitted::Created(t) => panic!("duplicate task {}", t.id),
    }
    let tb = created(store.submit_task(&b, &new_task(Some("k1"))).await.unwrap());
    assert!(matches!(
        store.task(&b, &t1.id).await,
        Err(StoreError::NotFound)
    ));
    assert_eq!(store.queue_depth().await.unwrap(), 2);

    // Claims come oldest first, each task once.
    let c1 = store.claim_task("w1", lease, 3).await.unwrap().unwrap();
    assert_eq!(c1.id, t1.id);
    assert_eq!(
        (c1.status, c1.attempts, c1.fence),
        (TaskStatus::Running, 1, 1)
    );
    assert_eq!(c1.worker_id.as_deref(), Some("w1"));
    let c2 = store.claim_task("w2", lease, 3).await.unwrap().unwrap();
    assert_eq!(c2.id, tb.id);
    assert!(store.claim_task("w3", lease, 3).await.unwrap().is_none());

    // Heartbeats record progress; a cancel request reaches the worker through them.
    assert!(!store.heartbeat_task(&c1.id, 1, lease, 3, 10).await.unwrap());
    let (t, cancelled_queued) = store.cancel_task(&a, &c1.id).await.unwrap();
    assert!(!cancelled_queued && t.cancel_requested);
    assert_eq!((t.progress_done, t.progress_total), (3, 10));
    assert!(store.heartbeat_task(&c1.id, 1, lease, 4, 10).await.unwrap());
    // Another tenant can neither see nor cancel it.
    assert!(matches!(
        store.cancel_task(&b, &c1.id).await,
        Err(StoreError::NotFound)
    ));
    let t = store
        .finish_task(&c1.id, 1, &Outcome::Cancelled, 5)
        .await
        .unwrap();
    assert_eq!(t.status, TaskStatus::Cancelled);
    // A finished task takes no more writes from its worker.
    assert!(matches!(
        store.heartbeat_task(&c1.id, 1, lease, 5, 10).await,
        Err(StoreError::LeaseLost)
    ));

    // An expired lease lets another worker take the task over; the first one is fenced out.
    let short = Duration::from_millis(1);
    store.heartbeat_task(&c2.id, 1, short, 0, 10).await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let again = store.claim_task("w3", lease, 3).await.unwrap().unwrap();
    assert_eq!(
        (again.id.as_str(), again.fence, again.attempts),
        (tb.id.as_str(), 2, 2)
    );
    assert!(matches!(
        store.finish_task(&c2.id, 1, &Outcome::Cancelled, 1).await,
        Err(StoreError::LeaseLost)
    ));
    assert!(matches!(
        store.release_task(&c2.id, 1).await,
        Err(StoreError::LeaseLost)
    ));
    // Retry puts it back after a delay; the last attempt fails it for good.
    let r = store
        .retry_task(&c2.id, 2, Duration::from_secs(60), 3, "boom")
        .await
        .unwrap();
    assert_eq!(
        (r.status, r.error_code.as_deref()),
        (TaskStatus::Queued, None)
    );
    assert!(
        store.claim_task("w3", lease, 3).await.unwrap().is_none(),
        "not due yet"
    );
    let r = store.retry_task(&c2.id, 2, Duration::ZERO, 3, "boom").await;
    assert!(
        matches!(r, Err(StoreError::LeaseLost)),
        "not running any more"
    );

    // A queued task cancels at once.
    let t3 = created(store.submit_task(&a, &new_task(None)).await.unwrap());
    let (t, cancelled_queued) = store.cancel_task(&a, &t3.id).await.unwrap();
    assert!(cancelled_queued);
    assert_eq!(t.status, TaskStatus::Cancelled);
    assert!(t.finished_at.is_some());

    // Release gives a task back without counting the attempt; success records the result.
    let t4 = created(store.submit_task(&a, &new_task(None)).await.unwrap());
    let c4 = store.claim_task("w1", lease, 3).await.unwrap().unwrap();
    assert_eq!(c4.id, t4.id);
    store.release_task(&c4.id, c4.fence).await.unwrap();
    let c4 = store.claim_task("w1", lease, 3).await.unwrap().unwrap();
    assert_eq!((c4.attempts, c4.fence), (1, 2));
    store
        .heartbeat_task(&c4.id, c4.fence, lease, 7, 10)
        .await
        .unwrap();
    let done = Outcome::Succeeded {
        result_bytes: 1234,
        expires_at: tenebra_store::now_ms() - 1,
    };
    let t = store
        .finish_task(&c4.id, c4.fence, &done, 99)
        .await
        .unwrap();
    assert_eq!(t.status, TaskStatus::Succeeded);
    assert_eq!(
        (t.progress_done, t.result_bytes, t.wall_ms),
        (10, Some(1234), Some(99))
    );
    let expired = store.expire_results().await.unwrap();
    assert_eq!(expired.len(), 1);
    assert_eq!(
        store.task(&a, &t4.id).await.unwrap().status,
        TaskStatus::Expired
    );

    // Abandoned tasks past their attempts fail instead of running forever.
    let t5 = created(store.submit_task(&a, &new_task(None)).await.unwrap());
    let c5 = store.claim_task("w1", short, 1).await.unwrap().unwrap();
    assert_eq!(c5.id, t5.id);
    tokio::time::sleep(Duration::from_millis(20)).await;
    let (claimed, reaped) = store.claim_task_reaping("w2", lease, 1).await.unwrap();
    assert!(claimed.is_none());
    // The reaped task is handed back, so its input blob can be freed.
    let reaped: Vec<&str> = reaped.iter().map(|t| t.id.as_str()).collect();
    assert_eq!(reaped, [t5.id.as_str()]);
    let t = store.task(&a, &t5.id).await.unwrap();
    assert_eq!(
        (t.status, t.error_code.as_deref()),
        (TaskStatus::Failed, Some("worker_lost"))
    );

    // Listing: newest first, by status, in pages, only the tenant's own.
    let all = store.list_tasks(&a, None, 100, None).await.unwrap();
    assert_eq!(all.tasks.len(), 4);
    assert!(all.next.is_none());
    assert!(all
        .tasks
        .windows(2)
        .all(|w| w[0].created_at >= w[1].created_at));
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = store
            .list_tasks(&a, None, 1, after.as_deref())
            .await
            .unwrap();
        seen.extend(page.tasks.into_iter().map(|t| t.id));
        match page.next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    assert_eq!(
        seen,
        all.tasks.iter().map(|t| t.id.clone()).collect::<Vec<_>>()
    );
    let cancelled = store
        .list_tasks(&a, Some(TaskStatus::Cancelled), 100, None)
        .await
        .unwrap();
    assert_eq!(cancelled.tasks.len(), 2);
    let theirs = store.list_tasks(&b, None, 100, None).await.unwrap();
    assert_eq!(theirs.tasks.len(), 1);
    assert!(store
        .list_tasks(&a, None, 10, Some("nonsense"))
        .await
        .is_err());
}

/// Deployed functions: versions count up per name, the same circuit is the same version,
/// and tenants never see each other's functions.
async fn function_story(store: &Store) {
    let a = store.create_tenant("fa").await.unwrap().id;
    let b = store.create_tenant("fb").await.unwrap().id;
    let v1 = match store
        .deploy_function(&a, "f", "c1", "{}", &facts(5))
        .await
        .unwrap()
    {
        Deployed::Created(f) => f,
        Deployed::Existing(f) => panic!("{f:?} existed"),
    };
    assert_eq!(v1.version, 1);
    match store
        .deploy_function(&a, "f", "c1", "{}", &facts(5))
        .await
        .unwrap()
    {
        Deployed::Existing(f) => assert_eq!(f, v1),
        Deployed::Created(f) => panic!("deployed twice: {f:?}"),
    }
    let Deployed::Created(v2) = store
        .deploy_function(&a, "f", "c2", "{}", &facts(6))
        .await
        .unwrap()
    else {
        panic!("a new circuit is a new version")
    };
    assert_eq!(v2.version, 2);
    let Deployed::Created(g) = store
        .deploy_function(&b, "f", "c1", "{}", &facts(5))
        .await
        .unwrap()
    else {
        panic!("another tenant's name space is its own")
    };
    assert_eq!(g.version, 1);
    assert_eq!(store.function(&a, "f", None).await.unwrap(), v2);
    assert_eq!(store.function(&a, "f", Some(1)).await.unwrap(), v1);
    assert_eq!(
        store.function_by_circuit(&a, "f", "c2").await.unwrap(),
        Some(v2.clone())
    );
    assert_eq!(
        store.function_by_circuit(&b, "f", "c2").await.unwrap(),
        None
    );
    let listed = store.list_functions(&a).await.unwrap();
    let listed: Vec<_> = listed
        .iter()
        .map(|f| {
            (
                f.name.as_str(),
                f.version,
                f.circuit_id.as_str(),
                f.cost_cu,
                f.ops,
            )
        })
        .collect();
    assert_eq!(
        listed,
        vec![("f", 1, "c1", 5, Some(1)), ("f", 2, "c2", 6, Some(1))]
    );
    assert!(matches!(
        store.delete_function(&b, "f", Some(2)).await,
        Err(StoreError::NotFound)
    ));
    assert_eq!(store.delete_function(&a, "f", Some(1)).await.unwrap(), 1);
    assert_eq!(store.delete_function(&a, "f", None).await.unwrap(), 1);
    assert!(store.list_functions(&a).await.unwrap().is_empty());
    assert_eq!(store.list_functions(&b).await.unwrap().len(), 1);
    // A deleted version's number is never given again: "f" v2 was deleted, so a new
    // circuit is v3 (a client holding "f v2" must not get another circuit under it), and
    // redeploying a deleted circuit makes a new version too.
    let Deployed::Created(v3) = store
        .deploy_function(&a, "f", "c3", "{}", &facts(7))
        .await
        .unwrap()
    else {
        panic!("a new circuit is a new version")
    };
    assert_eq!(v3.version, 3);
    let Deployed::Created(v4) = store
        .deploy_function(&a, "f", "c2", "{}", &facts(6))
        .await
        .unwrap()
    else {
        panic!("a deleted circuit comes back as a new version")
    };
    assert_eq!(v4.version, 4);
    // Racing deploys of different circuits get different numbers, none lost.
    let mut deploys = tokio::task::JoinSet::new();
    for i in 0..6 {
        let (store, a) = (store.clone(), a.clone());
        deploys.spawn(async move {
            match store
                .deploy_function(&a, "race", &format!("r{i}"), "{}", &facts(1))
                .await
            {
                Ok(Deployed::Created(f)) => f.version,
                other => panic!("{other:?}"),
            }
        });
    }
    let racing = deploys.join_all().await;
    let mut numbers = racing.clone();
    numbers.sort_unstable();
    numbers.dedup();
    assert_eq!(numbers.len(), 6, "{racing:?}");
}

/// Many workers claiming at once never get the same task twice.
async fn concurrent_claims(store: &Store) {
    store.migrate().await.unwrap();
    let a = store.create_tenant("acme").await.unwrap().id;
    for _ in 0..20 {
        store.submit_task(&a, &new_task(None)).await.unwrap();
    }
    let mut handles = Vec::new();
    for w in 0..4 {
        let store = store.clone();
        handles.push(tokio::spawn(async move {
            let mut got = Vec::new();
            while let Some(t) = store
                .claim_task(&format!("w{w}"), Duration::from_secs(30), 3)
                .await
                .unwrap()
            {
                got.push(t.id);
            }
            got
        }));
    }
    let mut all = Vec::new();
    for h in handles {
        all.extend(h.await.unwrap());
    }
    all.sort();
    let n = all.len();
    all.dedup();
    assert_eq!((n, all.len()), (20, 20));
}

/// Handing tasks to a serverless executor: each runnable task is handed once until a lease
/// passes, two dispatchers never get the same one, an invocation claims only the task it
/// names and only while it is runnable, a task whose invocation died is handed again, and
/// one back in the queue (a retry) is handed again at once when due.
async fn dispatch_story(store: &Store) {
    store.migrate().await.unwrap();
    let a = store.create_tenant("acme").await.unwrap().id;
    let b = store.create_tenant("globex").await.unwrap().id;
    let lease = Duration::from_secs(30);
    let mut ids = Vec::new();
    for tenant in [&a, &b, &a] {
        ids.push(created(store.submit_task(tenant, &new_task(None)).await.unwrap()).id);
    }
    // Two dispatchers at once share the three tasks without overlap.
    let (x, y) = tokio::join!(
        store.dispatch_tasks(2, lease),
        store.dispatch_tasks(2, lease)
    );
    let mut handed = [x.unwrap(), y.unwrap()].concat();
    handed.sort();
    let mut want = ids.clone();
    want.sort();
    assert_eq!(handed, want);
    // Handed, not yet claimed: not handed again within the lease.
    assert!(store.dispatch_tasks(10, lease).await.unwrap().is_empty());
    // After it (`again` zero stands for the time passing) every still-runnable task is.
    assert_eq!(
        store
            .dispatch_tasks(10, Duration::ZERO)
            .await
            .unwrap()
            .len(),
        3
    );

    // An invocation claims only its task, once; an unknown id claims nothing.
    let (t, _) = store
        .claim_task_by_id(&ids[1], "fn-1", lease, 3)
        .await
        .unwrap();
    let t = t.unwrap();
    assert_eq!(
        (t.id.as_str(), t.attempts, t.fence),
        (ids[1].as_str(), 1, 1)
    );
    let (again, _) = store
        .claim_task_by_id(&ids[1], "fn-2", lease, 3)
        .await
        .unwrap();
    assert!(again.is_none(), "a running task is claimed twice");
    let (none, _) = store
        .claim_task_by_id("task_nope", "fn-2", lease, 3)
        .await
        .unwrap();
    assert!(none.is_none());
    // A running task with a live lease is not handed again, even after `again`.
    let handed = store.dispatch_tasks(10, Duration::ZERO).await.unwrap();
    assert!(!handed.contains(&ids[1]), "{handed:?}");

    // The invocation died: once its lease is over the task is handed and claimed again,
    // fenced (the dead run can no longer write).
    store
        .heartbeat_task(&t.id, t.fence, Duration::from_millis(1), 0, 1)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let handed = store.dispatch_tasks(10, Duration::ZERO).await.unwrap();
    assert!(handed.contains(&ids[1]), "{handed:?}");
    let (t2, _) = store
        .claim_task_by_id(&ids[1], "fn-3", lease, 3)
        .await
        .unwrap();
    let t2 = t2.unwrap();
    assert_eq!((t2.attempts, t2.fence), (2, 2));
    assert!(matches!(
        store
            .finish_task(&t.id, t.fence, &Outcome::Cancelled, 1)
            .await,
        Err(StoreError::LeaseLost)
    ));

    // A retry goes back to the queue: handed again as soon as it is due, within the lease.
    let r = store
        .retry_task(&t2.id, t2.fence, Duration::ZERO, 3, "flaky")
        .await
        .unwrap();
    assert_eq!(r.status, TaskStatus::Queued);
    assert_eq!(
        store.dispatch_tasks(10, lease).await.unwrap(),
        vec![ids[1].clone()]
    );
    // A retry that is not due yet is neither handed nor claimed.
    let (t3, _) = store
        .claim_task_by_id(&ids[1], "fn-4", lease, 3)
        .await
        .unwrap();
    let t3 = t3.unwrap();
    store
        .retry_task(&t3.id, t3.fence, Duration::from_secs(3600), 3, "flaky")
        .await
        .unwrap();
    assert!(store
        .dispatch_tasks(10, Duration::ZERO)
        .await
        .unwrap()
        .iter()
        .all(|i| *i != ids[1]));
    let (late, _) = store
        .claim_task_by_id(&ids[1], "fn-5", lease, 3)
        .await
        .unwrap();
    assert!(late.is_none());

    // Past its attempts a dead invocation's task is failed by the next claim, not run.
    let (t0, _) = store
        .claim_task_by_id(&ids[0], "fn-6", lease, 1)
        .await
        .unwrap();
    let t0 = t0.unwrap();
    store
        .heartbeat_task(&t0.id, t0.fence, Duration::from_millis(1), 0, 1)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let (none, reaped) = store
        .claim_task_by_id(&ids[0], "fn-7", lease, 1)
        .await
        .unwrap();
    assert!(none.is_none());
    assert_eq!(reaped.len(), 1);
    assert_eq!(reaped[0].error_code.as_deref(), Some("worker_lost"));
    // Ended tasks are never handed.
    let handed = store.dispatch_tasks(10, Duration::ZERO).await.unwrap();
    assert_eq!(handed, vec![ids[2].clone()]);
}

#[tokio::test]
async fn tasks_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("tenebra.db").display());
    let store = connect(&url).await;
    task_story(&store).await;
    function_story(&store).await;
    store.close().await;
    let store = connect(&format!("sqlite://{}", dir.path().join("c.db").display())).await;
    concurrent_claims(&store).await;
    store.close().await;
    let store = connect(&format!("sqlite://{}", dir.path().join("d.db").display())).await;
    dispatch_story(&store).await;
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tasks_on_postgres() {
    let (store, db) = PgDb::create().await;
    task_story(&store).await;
    function_story(&store).await;
    db.drop_db(store).await;
    let (store, db) = PgDb::create().await;
    concurrent_claims(&store).await;
    db.drop_db(store).await;
    let (store, db) = PgDb::create().await;
    dispatch_story(&store).await;
    db.drop_db(store).await;
}

#[tokio::test]
async fn story_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("tenebra.db").display());
    let store = connect(&url).await;
    story(&store).await;
    store.close().await;
}

#[tokio::test]
async fn story_on_postgres() {
    let (store, db) = PgDb::create().await;
    story(&store).await;
    db.drop_db(store).await;
}

#[test]
fn scopes() {
    assert!(Scope::Admin.allows(Scope::Compute));
    assert!(Scope::Compute.allows(Scope::Read));
    assert!(!Scope::Compute.allows(Scope::Admin));
    assert!(!Scope::Read.allows(Scope::Compute));
    assert!("owner".parse::<Scope>().is_err());
}

#[tokio::test]
async fn bad_urls_are_errors() {
    assert!(matches!(
        Store::connect("mysql://x", rule).await,
        Err(StoreError::Invalid(_))
    ));
}

fn costing(cu: i64, key: Option<&str>) -> NewTask {
    NewTask {
        cost_cu: cu,
        ..new_task(key)
    }
}

fn quota(r: Result<impl std::fmt::Debug, StoreError>) -> QuotaExceeded {
    match r {
        Err(StoreError::Quota(q)) => q,
        other => panic!("expected a quota error, got {other:?}"),
    }
}

/// Plans, quotas at submit and upload, usage records (exactly one per ended task, priced),
/// totals, invoices, meter-event bookkeeping and rate counters.
async fn billing_story(store: &Store) {
    store.migrate().await.unwrap();
    let a = store.create_tenant("acme").await.unwrap().id;
    let b = store.create_tenant("globex").await.unwrap().id;
    let lease = Duration::from_secs(30);
    assert_eq!(store.tenant_plan(&a).await.unwrap().name, "default");

    let mut pro = Plan::new("pro", 2000);
    pro.function_prices = vec![("weight_stats".into(), 3000)];
    pro.max_task_cu = Some(100);
    pro.max_active_tasks = Some(2);
    pro.cu_per_period = Some(150);
    pro.max_stored_bytes = Some(1000);
    pro.max_key_sets = Some(1);
    store.put_plan(&pro).await.unwrap();
    assert!(matches!(
        store.set_tenant_plan(&a, "nope").await,
        Err(StoreError::NotFound)
    ));
    store.set_tenant_plan(&a, "pro").await.unwrap();
    assert_eq!(store.tenant_plan(&a).await.unwrap(), pro);
    assert_eq!(store.list_plans().await.unwrap().len(), 2);

    // Per-task cap, then active tasks; an idempotent resubmission still answers.
    assert_eq!(
        quota(store.submit_task(&a, &costing(101, None)).await),
        QuotaExceeded::TaskCu {
            cost: 101,
            cap: 100
        }
    );
    let t1 = created(
        store
            .submit_task(&a, &costing(42, Some("i1")))
            .await
            .unwrap(),
    );
    let t2 = created(store.submit_task(&a, &costing(42, None)).await.unwrap());
    assert_eq!(
        quota(store.submit_task(&a, &costing(1, None)).await),
        QuotaExceeded::ActiveTasks { limit: 2 }
    );
    assert!(matches!(
        store.submit_task(&a, &costing(42, Some("i1"))).await,
        Ok(Submitted::Existing(t)) if t.id == t1.id
    ));
    // Another tenant on the default plan is not limited.
    for _ in 0..3 {
        created(store.submit_task(&b, &costing(500, None)).await.unwrap());
    }

    // A success is charged in full at the function's price, once.
    let c = claim(store, &t1.id).await;
    let done = Outcome::Succeeded {
        result_bytes: 200,
        expires_at: i64::MAX,
    };
    store.finish_task(&c.id, c.fence, &done, 7).await.unwrap();
    assert!(matches!(
        store.finish_task(&c.id, c.fence, &done, 7).await,
        Err(StoreError::LeaseLost)
    ));
    // A cancelled task is charged for the nodes it ran.
    let c = claim(store, &t2.id).await;
    store
        .heartbeat_task(&c.id, c.fence, lease, 5, 10)
        .await
        .unwrap();
    store
        .finish_task(&c.id, c.fence, &Outcome::Cancelled, 3)
        .await
        .unwrap();
    let page = store
        .list_usage(Some(&a), &UsageFilter::default(), 10, None)
        .await
        .unwrap();
    let got: Vec<_> = page
        .records
        .iter()
        .map(|u| {
            (
                u.task_id.as_str(),
                u.outcome.as_str(),
                u.cu,
                u.charged_cu,
                u.amount_nanos,
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (t1.id.as_str(), "succeeded", 42, 42, 126_000),
            (t2.id.as_str(), "cancelled", 21, 21, 63_000)
        ]
    );
    assert_eq!(page.records[0].result_bytes, 200);
    assert_eq!(page.records[0].price_nanos_per_cu, 3000);

    // Our failure (retries used up) is recorded but not charged.
    let t3 = created(store.submit_task(&a, &costing(42, None)).await.unwrap());
    let c = claim(store, &t3.id).await;
    store
        .retry_task(&c.id, c.fence, Duration::ZERO, 1, "boom")
        .await
        .unwrap();
    // 63 charged so far: 63 + 90 passes the period's 150.
    let used = store.tenant_usage(&a).await.unwrap();
    assert_eq!((used.period_cu, used.active_tasks), (63, 0));
    assert!(matches!(
        quota(store.submit_task(&a, &costing(90, None)).await),
        QuotaExceeded::PeriodCu {
            used: 63,
            cost: 90,
            limit: 150,
            ..
        }
    ));

    // Storage and key set counts (200 bytes of results are stored).
    store
        .create_key_set(&a, "ks_a", "fp1", 500, None)
        .await
        .unwrap();
    assert_eq!(
        quota(store.create_key_set(&a, "ks_b", "fp2", 10, None).await),
        QuotaExceeded::KeySets { limit: 1 }
    );
    store.delete_key_set(&a, "ks_a").await.unwrap();
    assert_eq!(
        quota(store.create_key_set(&a, "ks_c", "fp3", 900, None).await),
        QuotaExceeded::StoredBytes {
            used: 200,
            adding: 900,
            limit: 1000
        }
    );
    // Deployed functions count too (their JSON's bytes), and so do models.
    let big = "x".repeat(900);
    assert!(matches!(
        store
            .deploy_function(&a, "big", "cbig", &big, &facts(1))
            .await,
        Err(StoreError::Quota(QuotaExceeded::StoredBytes {
            used: 200,
            adding: 900,
            limit: 1000
        }))
    ));
    assert!(matches!(
        store
            .deploy_function(&a, "small", "csmall", &"y".repeat(300), &facts(1))
            .await,
        Ok(Deployed::Created(_))
    ));
    assert!(matches!(
        store.upload_model(&a, "m", "sha", &big, "{}").await,
        Err(StoreError::Quota(QuotaExceeded::StoredBytes {
            used: 500,
            adding: 902,
            limit: 1000
        }))
    ));
    assert_eq!(store.tenant_usage(&a).await.unwrap().stored_bytes, 500);
    store.delete_function(&a, "small", None).await.unwrap();

    // Totals and invoices reconcile with the records; paging walks them all.
    let all = UsageFilter::default();
    let totals = store.usage_totals(Some(&a), &all).await.unwrap();
    assert_eq!(
        (
            totals.tasks,
            totals.cu,
            totals.charged_cu,
            totals.amount_nanos
        ),
        (3, 63, 63, 189_000)
    );
    let (from, to) = tenebra_store::billing::period_of(tenebra_store::now_ms());
    let lines = store.invoice_lines(&a, from, to).await.unwrap();
    assert_eq!(lines.len(), 1);
    assert_eq!(
        lines.iter().map(|l| l.amount_nanos).sum::<i64>(),
        totals.amount_nanos
    );
    let first = store.list_usage(Some(&a), &all, 2, None).await.unwrap();
    let rest = store
        .list_usage(Some(&a), &all, 2, first.next.as_deref())
        .await
        .unwrap();
    assert_eq!((first.records.len(), rest.records.len()), (2, 1));
    assert!(rest.next.is_none());
    let only_b = UsageFilter {
        function: Some("sleep_quality".into()),
        ..UsageFilter::default()
    };
    assert_eq!(
        store.usage_totals(Some(&a), &only_b).await.unwrap().tasks,
        0
    );
    // Tenant b sees none of a's usage.
    for u in store
        .list_usage(Some(&b), &all, 100, None)
        .await
        .unwrap()
        .records
    {
        assert_eq!(u.tenant_id, b);
    }

    // Meter events: each charged record once; an unmapped tenant's wait when only mapped
    // tenants' records are asked for.
    let pending = store.unexported_usage(100, false).await.unwrap();
    assert!(pending.iter().all(|(u, c)| u.charged_cu > 0 && c.is_none()));
    assert!(pending.iter().any(|(u, _)| u.task_id == t1.id));
    assert!(store.unexported_usage(100, true).await.unwrap().is_empty());
    let counts = store.meter_export_counts().await.unwrap();
    assert_eq!(counts.unmapped, pending.len() as i64);
    let owner = pending[0].0.tenant_id.clone();
    store
        .set_tenant_billing(&owner, Some("cus_test1"))
        .await
        .unwrap();
    assert_eq!(
        store.tenant_billing(&owner).await.unwrap().as_deref(),
        Some("cus_test1")
    );
    assert!(matches!(
        store.set_tenant_billing("tn_nobody", Some("cus_x")).await,
        Err(StoreError::NotFound)
    ));
    let mapped = store.unexported_usage(100, true).await.unwrap();
    assert!(!mapped.is_empty());
    assert!(mapped
        .iter()
        .all(|(u, c)| u.tenant_id == owner && c.as_deref() == Some("cus_test1")));
    let outcomes = [
        MeterOutcome::Sent,
        MeterOutcome::Refused,
        MeterOutcome::Expired,
    ];
    for (i, (u, _)) in pending.iter().enumerate() {
        let outcome = outcomes[i % 3];
        assert!(store
            .mark_exported(&u.task_id, outcome, Some("why"))
            .await
            .unwrap());
        assert!(!store
            .mark_exported(&u.task_id, MeterOutcome::Sent, None)
            .await
            .unwrap());
    }
    assert!(store.unexported_usage(100, false).await.unwrap().is_empty());
    let counts = store.meter_export_counts().await.unwrap();
    assert_eq!(
        counts.sent + counts.refused + counts.expired,
        pending.len() as i64
    );
    assert_eq!(counts.unmapped, 0);
    // Refusals can be sent again; what was sent or expired cannot.
    let refused = counts.refused as u64;
    assert_eq!(store.retry_refused_meter_events().await.unwrap(), refused);
    assert_eq!(
        store.unexported_usage(100, false).await.unwrap().len() as u64,
        refused
    );
    store.set_tenant_billing(&owner, None).await.unwrap();
    assert_eq!(store.tenant_billing(&owner).await.unwrap(), None);

    // Rate counters are shared through the database.
    assert!(store.count_request("key_x").await.unwrap() >= 1);
    let n = store.count_request("key_x").await.unwrap();
    assert!(n >= 2, "{n}");
    store.prune_rate_windows().await.unwrap();
}

/// Claims tasks until `id` comes (the others end cancelled: same-millisecond submissions
/// have no set order).
async fn claim(store: &Store, id: &str) -> tenebra_store::Task {
    loop {
        let c = store
            .claim_task("w1", Duration::from_secs(30), 3)
            .await
            .unwrap()
            .unwrap();
        if c.id == id {
            return c;
        }
        store
            .finish_task(&c.id, c.fence, &Outcome::Cancelled, 1)
            .await
            .unwrap();
    }
}

/// The audit chain: task transitions are chained, tenants read their own records, and every
/// kind of tampering is found at the right sequence number.
async fn audit_story(store: &Store) {
    store.migrate().await.unwrap();
    let a = store.create_tenant("acme").await.unwrap().id;
    let b = store.create_tenant("globex").await.unwrap().id;
    let check = store.verify_audit().await.unwrap();
    assert_eq!((check.records, check.first_bad), (0, None));
    let first = created(store.submit_task(&a, &new_task(None)).await.unwrap());
    tokio::time::sleep(Duration::from_millis(5)).await;
    for t in [&b, &a] {
        created(store.submit_task(t, &new_task(None)).await.unwrap());
    }
    let c = store
        .claim_task("w1", Duration::from_secs(30), 3)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(c.id, first.id, "the oldest task is claimed first");
    store
        .finish_task(&c.id, c.fence, &Outcome::Cancelled, 1)
        .await
        .unwrap();
    let entry = AuditEntry {
        tenant_id: None,
        actor: "operator".into(),
        action: "plan.put".into(),
        target: "pro".into(),
        outcome: "200".into(),
        request_id: "req_1".into(),
    };
    let last = store.append_audit(&entry).await.unwrap();
    assert_eq!(last.seq, 6);
    let mine = store.audit_records(Some(&a), 0, 100).await.unwrap();
    assert_eq!(
        mine.iter()
            .map(|r| r.entry.action.as_str())
            .collect::<Vec<_>>(),
        [
            "task.queued",
            "task.queued",
            "task.running",
            "task.cancelled"
        ]
    );
    assert!(store
        .audit_records(Some(&b), 0, 100)
        .await
        .unwrap()
        .iter()
        .all(|r| r.entry.tenant_id.as_deref() == Some(b.as_str())));
    let check = store.verify_audit().await.unwrap();
    assert_eq!(
        (check.records, check.last_seq, check.first_bad),
        (6, 6, None)
    );
    assert_eq!(check.last_hash, last.hash);

    // Tampering, each kind from a clean copy.
    raw(
        store,
        "CREATE TABLE audit_backup AS SELECT * FROM audit_log",
    )
    .await;
    let cases: [(&[&str], i64); 6] = [
        (&["UPDATE audit_log SET outcome = 'ok' WHERE seq = 3"], 3),
        (&["DELETE FROM audit_log WHERE seq = 4"], 4),
        (&["DELETE FROM audit_log WHERE seq = 6"], 6),
        (
            &[
                "UPDATE audit_log SET seq = -2 WHERE seq = 2",
                "UPDATE audit_log SET seq = 2 WHERE seq = 3",
                "UPDATE audit_log SET seq = 3 WHERE seq = -2",
            ],
            2,
        ),
        (
            &[
                "INSERT INTO audit_log SELECT 7, at, tenant_id, actor, action, target, \
               outcome, request_id, hash, hash FROM audit_log WHERE seq = 6",
            ],
            7,
        ),
        (
            &[
                "UPDATE audit_log SET seq = -seq - 1 WHERE seq >= 4",
                "UPDATE audit_log SET seq = -seq WHERE seq < 0",
                "INSERT INTO audit_log SELECT 4, at, tenant_id, actor, 'task.succeeded', \
                 target, outcome, request_id, hash, hash FROM audit_log WHERE seq = 3",
            ],
            4,
        ),
    ];
    for (edits, seq) in cases {
        for e in edits {
            raw(store, e).await;
        }
        let check = store.verify_audit().await.unwrap();
        assert_eq!(
            check.first_bad.as_ref().map(|b| b.seq),
            Some(seq),
            "{edits:?}: {check:?}"
        );
        raw(store, "DELETE FROM audit_log").await;
        raw(store, "INSERT INTO audit_log SELECT * FROM audit_backup").await;
        assert_eq!(store.verify_audit().await.unwrap().first_bad, None);
    }
}

/// Runs `sql` as the tables' owner, past the store (on PostgreSQL in the system scope, as
/// row-level security would otherwise hide every row).
async fn raw(store: &Store, sql: &str) {
    match store.db() {
        Db::Sqlite(p) => sqlx::query(sql).execute(p).await.map(|_| ()),
        Db::Postgres(p) => scoped_sql(p, "tenebra.scope", "system", sql)
            .await
            .map(|_| ()),
    }
    .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

/// Runs `sql` in a transaction with `setting` set to `value`; the number it selects (0
/// where it selects nothing).
async fn scoped_sql(
    p: &sqlx::PgPool,
    setting: &str,
    value: &str,
    sql: &str,
) -> Result<i64, sqlx::Error> {
    let mut tx = p.begin().await?;
    sqlx::query("SELECT set_config($1, $2, true)")
        .bind(setting)
        .bind(value)
        .execute(&mut *tx)
        .await?;
    let n = sqlx::query_scalar::<_, i64>(sql)
        .fetch_optional(&mut *tx)
        .await?
        .unwrap_or(0);
    tx.commit().await?;
    Ok(n)
}

#[tokio::test]
async fn billing_and_audit_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("b.db").display());
    let store = connect(&url).await;
    billing_story(&store).await;
    store.close().await;
    let url = format!("sqlite://{}", dir.path().join("a.db").display());
    let store = connect(&url).await;
    audit_story(&store).await;
    store.close().await;
    let url = format!("sqlite://{}", dir.path().join("c.db").display());
    let store = connect(&url).await;
    change_story(&store).await;
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn billing_and_audit_on_postgres() {
    let (store, db) = PgDb::create().await;
    billing_story(&store).await;
    db.drop_db(store).await;
    let (store, db) = PgDb::create().await;
    audit_story(&store).await;
    db.drop_db(store).await;
    let (store, db) = PgDb::create().await;
    concurrent_appends(&store).await;
    db.drop_db(store).await;
    let (store, db) = PgDb::create().await;
    change_story(&store).await;
    db.drop_db(store).await;
}

/// A request's change commits its audit record in the change's own transaction: a write
/// that commits has it, a write that is refused or changes nothing has none, and a record
/// that cannot be written takes the change down with it.
async fn change_story(store: &Store) {
    store.migrate().await.unwrap();
    let t = store.create_tenant("acme").await.unwrap().id;
    let mut plan = Plan::new("small", 1000);
    plan.max_key_sets = Some(1);
    store.put_plan(&plan).await.unwrap();
    store.set_tenant_plan(&t, "small").await.unwrap();
    let change = |action: &str, outcome: &str| {
        Change::new(AuditEntry {
            tenant_id: Some(t.clone()),
            actor: "key_1".into(),
            action: action.into(),
            target: "/v1/key-sets".into(),
            outcome: outcome.into(),
            request_id: format!("req_{action}"),
        })
    };
    let head = || async { store.audit_head().await.unwrap().0 };
    let last = || async {
        let (seq, _) = store.audit_head().await.unwrap();
        let r = store.audit_records(None, seq - 1, 1).await.unwrap();
        r.into_iter().next().unwrap()
    };
    let start = head().await;

    // A creation commits with its record, which names the new id.
    let c = change("create", "201");
    let ks = store
        .recording(Some(c.clone()))
        .create_key_set(&t, "ks_1", "fp_1", 10, None)
        .await
        .unwrap();
    assert!(c.is_committed());
    assert_eq!(head().await, start + 1);
    assert_eq!(last().await.entry, c.entry_on(Some(ks.id.as_str())));
    assert_eq!(last().await.entry.target, "ks_1");

    // Refused (the plan allows one key set), or a row not found: no record.
    let c = change("quota", "201");
    let r = store
        .recording(Some(c.clone()))
        .create_key_set(&t, "ks_2", "fp_2", 10, None)
        .await;
    assert!(matches!(r, Err(StoreError::Quota(_))), "{r:?}");
    assert!(!c.is_committed());
    let c = change("missing", "204");
    let r = store
        .recording(Some(c.clone()))
        .delete_key_set(&t, "ks_missing")
        .await;
    assert!(matches!(r, Err(StoreError::NotFound)));
    assert!(!c.is_committed());
    assert_eq!(head().await, start + 1, "refused changes left no record");

    // Two writes of one request commit one record (the first one's).
    let c = change("keys", "201");
    let s = store.recording(Some(c.clone()));
    s.create_api_key(&t, "one", Scope::Read, &[1; 32])
        .await
        .unwrap();
    s.create_api_key(&t, "two", Scope::Read, &[2; 32])
        .await
        .unwrap();
    assert!(c.is_committed());
    assert_eq!(head().await, start + 2);

    // A record that cannot be written takes its change down with it.
    raw(store, "ALTER TABLE audit_log RENAME TO audit_log_away").await;
    let c = change("delete", "204");
    let failed = store
        .recording(Some(c.clone()))
        .delete_key_set(&t, "ks_1")
        .await;
    raw(store, "ALTER TABLE audit_log_away RENAME TO audit_log").await;
    assert!(failed.is_err());
    assert!(!c.is_committed());
    assert_eq!(store.key_set(&t, "ks_1").await.unwrap().id, "ks_1");
    assert_eq!(head().await, start + 2);

    // Written, the change commits, recorded against the entry's own target.
    store
        .recording(Some(c.clone()))
        .delete_key_set(&t, "ks_1")
        .await
        .unwrap();
    assert!(c.is_committed());
    assert_eq!(last().await.entry, c.entry_on(None));
    assert!(matches!(
        store.key_set(&t, "ks_1").await,
        Err(StoreError::NotFound)
    ));

    // A store not recording writes no request record.
    store
        .delete_function(&t, "nothing", None)
        .await
        .unwrap_err();
    store.set_tenant_plan(&t, "small").await.unwrap();
    assert_eq!(head().await, start + 3);
    let check = store.verify_audit().await.unwrap();
    assert_eq!(check.first_bad, None);
}

/// Appends from many connections at once still make one chain without gaps.
async fn concurrent_appends(store: &Store) {
    store.migrate().await.unwrap();
    let mut handles = Vec::new();
    for i in 0..40 {
        let s = store.clone();
        handles.push(tokio::spawn(async move {
            let e = AuditEntry {
                tenant_id: None,
                actor: format!("a{i}"),
                action: "test".into(),
                target: String::new(),
                outcome: "ok".into(),
                request_id: String::new(),
            };
            s.append_audit(&e).await.unwrap().seq
        }));
    }
    let mut seqs = Vec::new();
    for h in handles {
        seqs.push(h.await.unwrap());
    }
    seqs.sort();
    assert_eq!(seqs, (1..=40).collect::<Vec<i64>>());
    let check = store.verify_audit().await.unwrap();
    assert_eq!((check.records, check.first_bad), (40, None));
}

/// Row-level security on PostgreSQL: a query that forgets its tenant filter sees only the
/// tenant its transaction names, one outside any scope sees nothing, and a role kept out of
/// other tenants' rows (an API node's) stays out even when it asks for the system scope,
/// while everything a tenant's request needs still works for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row_level_security_on_postgres() {
    let (store, db) = PgDb::create().await;
    store.migrate().await.unwrap();
    let a = store.create_tenant("acme").await.unwrap();
    let b = store.create_tenant("globex").await.unwrap();
    let ka = store
        .create_api_key(&a.id, "a", Scope::Admin, &[7; 32])
        .await
        .unwrap();
    store
        .create_api_key(&b.id, "b", Scope::Admin, &[8; 32])
        .await
        .unwrap();
    let sa = store
        .create_key_set(&a.id, "ks_a", "fa", 10, None)
        .await
        .unwrap();
    let sb = store
        .create_key_set(&b.id, "ks_b", "fb", 10, None)
        .await
        .unwrap();
    let Db::Postgres(owner) = store.db() else {
        unreachable!()
    };
    // Every table is bound, its owner included, except those that hold no tenant's data:
    // a table a later migration adds without a policy fails here.
    let unbound: Vec<String> = sqlx::query_scalar(
        "SELECT c.relname::TEXT FROM pg_class c \
         JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname = current_schema() AND c.relkind = 'r' \
           AND NOT (c.relrowsecurity AND c.relforcerowsecurity) ORDER BY 1",
    )
    .fetch_all(owner)
    .await
    .unwrap();
    let tenantless = [
        "_sqlx_migrations",   // the schema's version
        "audit_head",         // the chain's last hash, which every append extends
        "cross_tenant_roles", // which roles may cross tenants (no role lists itself)
        "plan_prices",        // the price list
        "plans",              // the plans' limits
        "rate_windows",       // request counts per key id or tenant id and second
    ];
    assert_eq!(unbound, tenantless);
    let count = "SELECT COUNT(*) FROM key_sets";
    // The tables' owner, with no filter at all: nothing outside a scope, one tenant's rows
    // in its scope, everyone's in the system scope.
    let n: i64 = sqlx::query_scalar(count).fetch_one(owner).await.unwrap();
    assert_eq!(n, 0, "outside any scope");
    for (who, n) in [(a.id.as_str(), 1), (b.id.as_str(), 1), ("tn_nobody", 0)] {
        let seen = scoped_sql(owner, "tenebra.tenant_id", who, count).await;
        assert_eq!(seen.unwrap(), n, "{who}");
    }
    let all = scoped_sql(owner, "tenebra.scope", "system", count)
        .await
        .unwrap();
    assert_eq!(all, 2);
    // A write into another tenant's rows from a tenant's scope is refused.
    let theft = "INSERT INTO key_sets (id, tenant_id, fingerprint, size_bytes, created_at) \
                 VALUES ('ks_x', $TENANT, 'fx', 1, 0)";
    let theft = theft.replace("$TENANT", &format!("'{}'", b.id));
    let e = scoped_sql(owner, "tenebra.tenant_id", &a.id, &theft)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("row-level security"), "{e}");
    let moved = format!("UPDATE key_sets SET tenant_id = '{}'", a.id);
    scoped_sql(owner, "tenebra.tenant_id", &b.id, &moved)
        .await
        .unwrap_err();
    let gone = "DELETE FROM key_sets";
    scoped_sql(owner, "tenebra.tenant_id", "tn_nobody", gone)
        .await
        .unwrap();
    assert_eq!(store.list_key_sets(&b.id).await.unwrap(), vec![sb.clone()]);

    // An API node's role: the tables' privileges, but not listed as crossing tenants.
    let grant = format!(
        "{}; GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {PG_API}; \
         REVOKE INSERT, UPDATE, DELETE ON cross_tenant_roles FROM {PG_API}",
        create_role(PG_API)
    );
    pg_admin(&PgDb::url_as(&db.name, "postgres"), &grant).await;
    let api = connect(&PgDb::url_as(&db.name, PG_API)).await;
    // It may not migrate, and need not: the owner has.
    api.migrate().await.unwrap();
    // What a tenant's request does works.
    assert_eq!(api.api_key_by_hash(&[7; 32]).await.unwrap(), ka);
    assert_eq!(api.key_set(&a.id, "ks_a").await.unwrap(), sa);
    assert!(matches!(
        api.key_set(&a.id, "ks_b").await,
        Err(StoreError::NotFound)
    ));
    assert_eq!(api.list_key_sets(&a.id).await.unwrap(), vec![sa.clone()]);
    let sc = api
        .create_key_set(&a.id, "ks_c", "fc", 10, None)
        .await
        .unwrap();
    api.delete_key_set(&a.id, &sc.id).await.unwrap();
    assert_eq!(api.queue_depth().await.unwrap(), 0);
    // What crosses tenants is refused, with the reason.
    let e = api.expire_key_sets().await.unwrap_err();
    assert!(e.to_string().contains("may not act across tenants"), "{e}");
    assert!(api.verify_audit().await.is_err());
    let Db::Postgres(api_pool) = api.db() else {
        unreachable!()
    };
    // Asking for the system scope itself gets it nothing; nor can it list itself.
    assert_eq!(
        scoped_sql(api_pool, "tenebra.scope", "system", count)
            .await
            .unwrap(),
        0
    );
    let n: i64 = sqlx::query_scalar(count).fetch_one(api_pool).await.unwrap();
    assert_eq!(n, 0);
    let listed = format!("INSERT INTO cross_tenant_roles VALUES ('{PG_API}')");
    let e = sqlx::query(&listed).execute(api_pool).await.unwrap_err();
    assert!(e.to_string().contains("permission denied"), "{e}");
    // Nor may it rewrite the policies or their functions.
    let e = sqlx::query("ALTER TABLE key_sets DISABLE ROW LEVEL SECURITY")
        .execute(api_pool)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("must be owner"), "{e}");
    api.close().await;
    // The owner still sees both tenants' sets in the system scope: nothing was lost.
    let all = scoped_sql(owner, "tenebra.scope", "system", count)
        .await
        .unwrap();
    assert_eq!(all, 2);
    db.drop_db(store).await;
}
