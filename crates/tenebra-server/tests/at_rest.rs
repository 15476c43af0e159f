//! Blobs encrypted at rest: what lies on disk is not the key, a wrong master key or an
//! altered blob fails cleanly, rotation re-wraps data keys without touching blobs; the
//! Vault path against a real OpenBao dev server on loopback.

use std::sync::Arc;

use tenebra_client::http::Client;
use tenebra_server::blobs::Blobs;
use tenebra_server::create_tenant;
use tenebra_server::kms::{Kms, LocalKms, VaultKms};

mod common;

fn sha(bytes: &[u8]) -> Vec<u8> {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_sets_are_encrypted_at_rest_and_survive_rotation() {
    let h = common::Harness::start(false).await;
    let (tenant, token) = create_tenant(&h.state, "acme").await.unwrap();
    let upload =
        tenebra_engine::keys::read_upload(&tenebra_engine::test_support::test_key_dir()).unwrap();
    let ks = Client::new(&h.base, &token)
        .upload_key_set(upload.clone())
        .await
        .unwrap();
    let name = format!("{}/{}.keyset", tenant.id, ks.id);
    let file = h.settings.data_dir.join("blobs").join(&name);
    let dek_file = h
        .settings
        .data_dir
        .join("blobs")
        .join(format!("{name}.dek"));

    // On disk: the envelope, not the key; no 64-byte run of the key appears.
    let raw = std::fs::read(&file).unwrap();
    assert_eq!(&raw[..4], b"TNBE");
    assert!(raw.len() > upload.len());
    for at in [0, 1 << 10, upload.len() / 2, upload.len() - 64] {
        let window = &upload[at..at + 64];
        assert!(
            !raw.windows(64).any(|w| w == window),
            "plaintext at offset {at} is on disk"
        );
    }
    assert_eq!(
        h.state
            .blobs
            .get(&name.as_str().into(), u64::MAX)
            .await
            .unwrap(),
        upload
    );

    // Another master key (a keyring that never wrapped it) fails cleanly.
    let other_dir = tempfile::tempdir().unwrap();
    let other: Arc<dyn Kms> = Arc::new(LocalKms::open(other_dir.path()).unwrap());
    let stranger = Blobs::local(&h.settings.data_dir.join("blobs"), other).unwrap();
    let err = stranger
        .get(&name.as_str().into(), u64::MAX)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("master key"), "{err}");

    // Rotation: a new master key, every data key re-wrapped, old keys forgotten; the blob's
    // bytes are untouched and it still reads back.
    let kms = h.state.blobs.kms().clone();
    let dek_before = std::fs::read(&dek_file).unwrap();
    kms.rotate().await.unwrap();
    assert_eq!(h.state.blobs.rewrap_all().await.unwrap(), 1);
    assert_eq!(kms.retire_old().unwrap(), 1);
    assert_eq!(
        h.state.blobs.rewrap_all().await.unwrap(),
        0,
        "already current"
    );
    assert_eq!(sha(&std::fs::read(&file).unwrap()), sha(&raw));
    assert_ne!(std::fs::read(&dek_file).unwrap(), dek_before);
    assert_eq!(
        h.state
            .blobs
            .get(&name.as_str().into(), u64::MAX)
            .await
            .unwrap(),
        upload
    );

    // The old wrapped data key names a master key that is gone: a clean error.
    std::fs::write(&dek_file, &dek_before).unwrap();
    let err = h
        .state
        .blobs
        .get(&name.as_str().into(), u64::MAX)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("does not have"), "{err}");
    h.stop().await;
}

#[tokio::test]
async fn altered_or_moved_blobs_do_not_open() {
    let dir = tempfile::tempdir().unwrap();
    let kms: Arc<dyn Kms> = Arc::new(LocalKms::open(&dir.path().join("keys")).unwrap());
    let root = dir.path().join("blobs");
    let blobs = Blobs::local(&root, kms).unwrap();
    common::round_trips(&blobs, dir.path()).await;

    // A flipped byte, a dropped last chunk, a blob copied under another name.
    let path = root.join("t/big");
    let good = std::fs::read(&path).unwrap();
    let mut flipped = good.clone();
    flipped[100_000] ^= 1;
    std::fs::write(&path, &flipped).unwrap();
    assert!(blobs.get(&"t/big".into(), u64::MAX).await.is_err());
    std::fs::write(&path, &good[..good.len() - 1000]).unwrap();
    assert!(blobs.get(&"t/big".into(), u64::MAX).await.is_err());
    std::fs::write(&path, &good).unwrap();
    std::fs::copy(&path, root.join("t/other")).unwrap();
    std::fs::copy(root.join("t/big.dek"), root.join("t/other.dek")).unwrap();
    let err = blobs.get(&"t/other".into(), u64::MAX).await.unwrap_err();
    assert!(err.to_string().contains("data key"), "{err}");
    assert!(blobs.get(&"t/big".into(), u64::MAX).await.is_ok());
    // Removing a blob removes its data key too.
    blobs.remove(&"t/big".into()).await.unwrap();
    assert!(!root.join("t/big.dek").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vault_transit_wraps_rotates_and_rewraps() {
    // A Vault-compatible server: OpenBao in dev mode.
    let Some(bao) = common::local_service("TENEBRA_OPENBAO", "TENEBRA_REQUIRE_VAULT", |p| {
        ["server", "-dev", "-dev-root-token-id=root"]
            .into_iter()
            .map(str::to_owned)
            .chain([format!("-dev-listen-address=127.0.0.1:{p}")])
            .collect()
    }) else {
        return;
    };
    let port = bao.port;
    let addr = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let mut up = false;
    for _ in 0..100 {
        if let Ok(r) = http.get(format!("{addr}/v1/sys/health")).send().await {
            up = r.status().is_success();
            if up {
                break;
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(up, "OpenBao did not start");
    let admin = |path: &str, body: serde_json::Value| {
        http.post(format!("{addr}/v1/{path}"))
            .header("x-vault-token", "root")
            .json(&body)
            .send()
    };
    let r = admin("sys/mounts/transit", serde_json::json!({"type": "transit"}))
        .await
        .unwrap();
    assert!(r.status().is_success(), "{:?}", r.text().await);
    let r = admin("transit/keys/tenebra", serde_json::json!({}))
        .await
        .unwrap();
    assert!(r.status().is_success());

    let url = format!("vault+{addr}/transit/tenebra");
    let kms: Arc<dyn Kms> = Arc::new(VaultKms::new(&url, "root").unwrap());
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("blobs");
    let blobs = Blobs::local(&root, kms.clone()).unwrap();
    common::round_trips(&blobs, dir.path()).await;
    let dek = std::fs::read_to_string(root.join("t/big.dek")).unwrap();
    assert!(dek.starts_with("vault:v1:"), "{dek}");

    // Rotation in Vault, then every data key re-wrapped to the new version.
    kms.rotate().await.unwrap();
    assert_eq!(blobs.rewrap_all().await.unwrap(), 5);
    let dek = std::fs::read_to_string(root.join("t/big.dek")).unwrap();
    assert!(dek.starts_with("vault:v2:"), "{dek}");
    common::round_trips(&blobs, dir.path()).await;

    // A wrong token, and a data key moved to another blob, fail cleanly.
    let wrong: Arc<dyn Kms> = Arc::new(VaultKms::new(&url, "not-the-token").unwrap());
    let stranger = Blobs::local(&root, wrong).unwrap();
    assert!(stranger.get(&"t/big".into(), u64::MAX).await.is_err());
    std::fs::copy(root.join("t/big"), root.join("t/moved")).unwrap();
    std::fs::copy(root.join("t/big.dek"), root.join("t/moved.dek")).unwrap();
    assert!(blobs.get(&"t/moved".into(), u64::MAX).await.is_err());
}
