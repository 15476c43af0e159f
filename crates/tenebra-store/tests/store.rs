//! The same storage story on SQLite and on the real PostgreSQL (a fresh database per test).

use tenebra_store::{Scope, Store, StoreError};

const PG_ADMIN: &str = "postgres://postgres@127.0.0.1:5432/test";

/// A fresh PostgreSQL database, dropped when the guard goes.
struct PgDb {
    name: String,
}

impl PgDb {
    async fn create() -> (Store, PgDb) {
        let admin = Store::connect(PG_ADMIN)
            .await
            .expect("PostgreSQL on 127.0.0.1:5432");
        let name = format!(
            "tenebra_test_{}",
            tenebra_store::new_id("db").trim_start_matches("db_")
        );
        if let Store::Postgres(p) = &admin {
            sqlx::query(&format!("CREATE DATABASE {name}"))
                .execute(p)
                .await
                .unwrap();
        }
        admin.close().await;
        let store = Store::connect(&format!("postgres://postgres@127.0.0.1:5432/{name}"))
            .await
            .unwrap();
        (store, PgDb { name })
    }

    async fn drop_db(self, store: Store) {
        store.close().await;
        let admin = Store::connect(PG_ADMIN).await.unwrap();
        if let Store::Postgres(p) = &admin {
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
    let ks = store.create_key_set(&a.id, "ks_1", "ab", 10).await.unwrap();
    assert!(matches!(
        store.create_key_set(&a.id, "ks_2", "ab", 10).await,
        Err(StoreError::Conflict(_))
    ));
    let other = store.create_key_set(&b.id, "ks_3", "ab", 10).await.unwrap();
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
    // Migrations are idempotent.
    store.migrate().await.unwrap();
}

#[tokio::test]
async fn story_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("tenebra.db").display());
    let store = Store::connect(&url).await.unwrap();
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
        Store::connect("mysql://x").await,
        Err(StoreError::Invalid(_))
    ));
}
