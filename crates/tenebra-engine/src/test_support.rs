//! Test keys generated once and cached on disk (key generation takes seconds, decompressing
//! the evaluation key about one more): tests of every crate share them.

use std::path::PathBuf;
use std::sync::OnceLock;

use crate::keys::{ClientKeys, ServerKeys, MANIFEST_FILE};

/// The cached test key set directory: `test-keys` under `$TENEBRA_TEST_KEYS`, or under the
/// workspace's `target/`. Generated on first use (into a temporary directory renamed into place, so
/// concurrent test processes never see a half-written key set).
pub fn test_key_dir() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| cached_key_dir("test-keys")).clone()
}

/// A second cached key set, for tests that mix key sets up.
pub fn other_key_dir() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| cached_key_dir("test-keys-other"))
        .clone()
}

fn cached_key_dir(name: &str) -> PathBuf {
    let base = std::env::var_os("TENEBRA_TEST_KEYS").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target"),
        PathBuf::from,
    );
    let dir = base.join(name);
    if !dir.join(MANIFEST_FILE).exists() {
        std::fs::create_dir_all(&base).expect("create the test key parent directory");
        let tmp = base.join(format!(".{name}-{}", std::process::id()));
        ClientKeys::generate(&tmp).expect("generate test keys");
        if std::fs::rename(&tmp, &dir).is_err() {
            // Another process won the race; its keys are as good as ours.
            let _ = std::fs::remove_dir_all(&tmp);
        }
    }
    dir
}

/// The client side of the cached test key set.
pub fn client_keys() -> &'static ClientKeys {
    static KEYS: OnceLock<ClientKeys> = OnceLock::new();
    KEYS.get_or_init(|| ClientKeys::load(&test_key_dir()).expect("load test client keys"))
}

/// The server side of the cached test key set, decompressed once per process.
pub fn server_keys() -> &'static ServerKeys {
    static KEYS: OnceLock<ServerKeys> = OnceLock::new();
    KEYS.get_or_init(|| ServerKeys::load(&test_key_dir()).expect("load test server keys"))
}
