//! Blobs in S3-compatible storage: the whole task path (multipart key set upload, input,
//! key loading by the worker, result) against a real S3 API served by `moto_server` on
//! loopback. `.ci/run` installs moto and sets `TENEBRA_MOTO_SERVER` and
//! `TENEBRA_REQUIRE_S3=1`; elsewhere, without moto, the test says so and does nothing.

mod common;

use std::time::Duration;

use serde_json::json;
use tenebra_client::encrypt;
use tenebra_client::http::Client;
use tenebra_engine::test_support::{client_keys, test_key_dir};
use tenebra_server::create_tenant;
use tenebra_server::worker::{self, WorkerConfig};

#[test]
fn tasks_with_blobs_in_s3() {
    let Some(moto) = common::local_service("TENEBRA_MOTO_SERVER", "TENEBRA_REQUIRE_S3", |p| {
        vec!["-p".into(), p.to_string()]
    }) else {
        return;
    };
    let port = moto.port;
    let endpoint = format!("http://127.0.0.1:{port}");
    // Set before any thread starts: object_store reads them when the store is built.
    for (k, v) in [
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
        ("AWS_DEFAULT_REGION", "us-east-1"),
        ("AWS_ENDPOINT", endpoint.as_str()),
        ("AWS_ALLOW_HTTP", "true"),
    ] {
        std::env::set_var(k, v);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(story(&endpoint));
}

async fn story(endpoint: &str) {
    let http = reqwest::Client::new();
    let mut ready = false;
    for _ in 0..100 {
        if http
            .put(format!("{endpoint}/tenebra-test"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ready, "moto_server did not come up or refused the bucket");
    let h = common::Harness::start_with(false, Some("s3://tenebra-test/cluster-a".into())).await;
    let (_, token) = create_tenant(&h.state, "acme").await.unwrap();
    let a = Client::new(&h.base, &token);
    let ks = a
        .upload_key_set(tenebra_engine::keys::read_upload(&test_key_dir()).unwrap())
        .await
        .unwrap();
    assert_eq!(h.state.blobs.count(".keyset").await.unwrap(), 1);
    let (stop, rx) = tokio::sync::watch::channel(false);
    let cfg = WorkerConfig {
        poll: Duration::from_millis(200),
        ..WorkerConfig::default()
    };
    tokio::spawn(worker::run(h.state.clone(), cfg, rx));
    let weights = tenebra_functions::find("weight_stats").unwrap();
    let input = json!({"weights": [680, 650, 690, 700, 705]});
    let enc = encrypt(client_keys(), weights, &input).unwrap();
    let t = a.submit_task(enc, None).await.unwrap();
    let t = a.wait_task(&t.id, |_| {}).await.unwrap();
    assert_eq!(t.status, "succeeded", "{t:?}");
    let res = a.task_result(&t.id).await.unwrap();
    let got = tenebra_client::decrypt(client_keys(), weights, &res).unwrap();
    assert_eq!(got, weights.reference(&input).unwrap());
    assert_eq!(h.state.blobs.count(".result").await.unwrap(), 1);
    assert_eq!(h.state.blobs.count(".input").await.unwrap(), 0);
    a.delete_key_set(&ks.id).await.unwrap();
    assert_eq!(h.state.blobs.count(".keyset").await.unwrap(), 0);
    let _ = stop.send(true);
    h.stop().await;
}
