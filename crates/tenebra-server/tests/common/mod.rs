//! The real server on port 0, on SQLite or on a fresh database of the real PostgreSQL.
// Each test binary uses a part of the harness.
#![allow(dead_code)]

use tenebra_server::{AppState, Node, Settings};

const PG: &str = "postgres://postgres@127.0.0.1:5432";
/// The operator token every harness server accepts.
pub const OPERATOR_TOKEN: &str = "test-operator-token-0123456789abcdef";
/// The metrics token every harness server accepts.
pub const METRICS_TOKEN: &str = "test-metrics-token-0123456789abcdef0";

/// A running server with its own data directory (and PostgreSQL database).
pub struct Harness {
    pub base: String,
    pub state: AppState,
    pub settings: Settings,
    node: Node,
    _dir: tempfile::TempDir,
    pg_db: Option<String>,
}

/// The role that owns the harness's databases: not a superuser, so PostgreSQL's row-level
/// security binds the server as it binds a deployment (superusers skip every policy).
pub const PG_OWNER: &str = "tenebra_test_owner";

pub async fn pg_admin(sql: &str) {
    let admin = sqlx::PgPool::connect(&format!("{PG}/test")).await.unwrap();
    sqlx::raw_sql(sql).execute(&admin).await.unwrap();
    admin.close().await;
}

/// A transaction on the harness's PostgreSQL in the system scope, for tests that edit rows
/// past the store (row-level security hides every row outside a scope).
pub async fn system_tx(p: &sqlx::PgPool) -> sqlx::Transaction<'static, sqlx::Postgres> {
    let mut tx = p.begin().await.unwrap();
    sqlx::query("SELECT set_config('tenebra.scope', 'system', true)")
        .execute(&mut *tx)
        .await
        .unwrap();
    tx
}

/// Creates a login role unless it exists (tests racing to create it included).
pub async fn create_role(name: &str) {
    pg_admin(&format!(
        "DO $$ BEGIN CREATE ROLE {name} LOGIN; \
         EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$"
    ))
    .await;
}

/// A node serving on a free loopback port, without a worker (tests start theirs).
async fn start_node(settings: &Settings) -> Node {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    Node::start(settings, listener, None).await.unwrap()
}

impl Harness {
    pub async fn start(postgres: bool) -> Self {
        Self::start_with(postgres, None).await
    }

    /// With blobs at `blob_url` (`s3://...`) instead of the data directory.
    pub async fn start_with(postgres: bool, blob_url: Option<String>) -> Self {
        let pg_db = if postgres {
            let name = format!(
                "tenebra_api_{}",
                tenebra_store::new_id("db").trim_start_matches("db_")
            );
            create_role(PG_OWNER).await;
            pg_admin(&format!("CREATE DATABASE {name} OWNER {PG_OWNER}")).await;
            Some(name)
        } else {
            None
        };
        let url = pg_db
            .as_ref()
            .map(|n| format!("postgres://{PG_OWNER}@127.0.0.1:5432/{n}"));
        Self::on(url, blob_url, pg_db).await
    }

    /// On the database at `database_url` (a PostgreSQL the test runs itself), kept after stop.
    pub async fn start_on(database_url: String) -> Self {
        Self::on(Some(database_url), None, None).await
    }

    /// `pg_db`: the shared server's database this harness made (dropped on stop).
    async fn on(
        database_url: Option<String>,
        blob_url: Option<String>,
        pg_db: Option<String>,
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let settings = Settings {
            data_dir: dir.path().to_owned(),
            database_url,
            blob_url,
            operator_token: Some(OPERATOR_TOKEN.into()),
            metrics_token: Some(METRICS_TOKEN.into()),
            ..Default::default()
        };
        let node = start_node(&settings).await;
        Self {
            base: node.url(),
            state: node.state().clone(),
            settings,
            node,
            _dir: dir,
            pg_db,
        }
    }

    /// Another API node on the same database and blobs.
    pub async fn second_node(&self) -> Node {
        start_node(&self.settings).await
    }

    /// Stops the server and drops its PostgreSQL database.
    pub async fn stop(self) {
        self.node.stop().await.unwrap();
        if let Some(name) = &self.pg_db {
            pg_admin(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).await;
        }
    }
}

/// A helper server (moto, OpenBao) on a free loopback port, killed on drop.
pub struct LocalService {
    child: std::process::Child,
    pub port: u16,
}

impl Drop for LocalService {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the binary named by the environment variable `bin_var` with `args(port)`; `None`
/// (the test then skips, saying so) when it is unset, unless `require_var` is set.
pub fn local_service(
    bin_var: &str,
    require_var: &str,
    args: impl FnOnce(u16) -> Vec<String>,
) -> Option<LocalService> {
    local_service_with(bin_var, require_var, &[], args)
}

/// `local_service` with these environment variables set for the service.
pub fn local_service_with(
    bin_var: &str,
    require_var: &str,
    env: &[(&str, &str)],
    args: impl FnOnce(u16) -> Vec<String>,
) -> Option<LocalService> {
    let Some(bin) = std::env::var_os(bin_var) else {
        assert!(
            std::env::var_os(require_var).is_none(),
            "{require_var} is set but {bin_var} is not"
        );
        eprintln!("skipped: set {bin_var} to run this test (see .ci/run)");
        return None;
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = std::process::Command::new(bin)
        .args(args(port))
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {bin_var}: {e}"));
    Some(LocalService { child, port })
}

/// Blob round trips (one chunk, several, empty, from a file) and tampering.
pub async fn round_trips(blobs: &tenebra_server::blobs::Blobs, dir: &std::path::Path) {
    let big: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let exact: Vec<u8> = vec![9; 2 * (64 << 10)];
    for (name, bytes) in [
        ("t/small", b"hello".to_vec()),
        ("t/big", big.clone()),
        ("t/exact", exact),
        ("t/empty", vec![]),
    ] {
        blobs.put(&name.into(), bytes.clone()).await.unwrap();
        assert_eq!(
            blobs.get(&name.into(), u64::MAX).await.unwrap(),
            bytes,
            "{name}"
        );
    }
    let src = dir.join("src.bin");
    std::fs::write(&src, &big).unwrap();
    blobs.put_file(&"t/file".into(), &src).await.unwrap();
    assert_eq!(blobs.get(&"t/file".into(), u64::MAX).await.unwrap(), big);
    assert!(
        blobs.get(&"t/file".into(), 1000).await.is_err(),
        "over the limit"
    );
}
