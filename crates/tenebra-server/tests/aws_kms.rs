//! Blobs wrapped by AWS KMS, against `moto_server` on loopback with authentication on: moto
//! then recomputes every request's SigV4 signature and checks the IAM user's policy. The
//! first three requests (creating the IAM user, its policy and its access key) are the only
//! ones moto lets through unauthenticated; everything after is signed by Tenebra's own
//! client with that user's key, read from the `AWS_*` variables as a deployment would.
//! `.ci/run` installs moto (with KMS and IAM) and sets `TENEBRA_MOTO_SERVER`.

mod common;

use std::sync::Arc;
use std::time::Duration;

use object_store::aws::{AwsAuthorizer, AwsCredential};
use object_store::client::HttpRequestBody;
use tenebra_server::blobs::Blobs;
use tenebra_server::kms::{AwsKms, Kms};

const REGION: &str = "us-east-1";

/// One SigV4-signed POST: the status and the body.
async fn signed(
    endpoint: &str,
    service: &str,
    credential: &AwsCredential,
    headers: &[(&str, &str)],
    body: String,
) -> (u16, String) {
    let mut req = axum::http::Request::post(format!("{endpoint}/"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let mut req = req
        .body(HttpRequestBody::from(body.clone().into_bytes()))
        .unwrap();
    AwsAuthorizer::new(credential, service, REGION).authorize(&mut req, None);
    let r = reqwest::Client::new()
        .post(format!("{endpoint}/"))
        .headers(req.headers().clone())
        .body(body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

async fn iam(endpoint: &str, credential: &AwsCredential, params: &[(&str, &str)]) -> String {
    let body = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(params.iter().copied().chain([("Version", "2010-05-08")]))
        .finish();
    let ct = [(
        "content-type",
        "application/x-www-form-urlencoded; charset=utf-8",
    )];
    let (status, text) = signed(endpoint, "iam", credential, &ct, body).await;
    assert_eq!(status, 200, "{params:?}: {text}");
    text
}

async fn kms(
    endpoint: &str,
    credential: &AwsCredential,
    op: &str,
    body: serde_json::Value,
) -> (u16, serde_json::Value) {
    let target = format!("TrentService.{op}");
    let headers = [
        ("content-type", "application/x-amz-json-1.1"),
        ("x-amz-target", target.as_str()),
    ];
    let (status, text) = signed(endpoint, "kms", credential, &headers, body.to_string()).await;
    (status, serde_json::from_str(&text).unwrap_or_default())
}

fn between<'a>(text: &'a str, tag: &str) -> &'a str {
    let open = format!("<{tag}>");
    let start = text.find(&open).unwrap() + open.len();
    let end = text[start..].find(&format!("</{tag}>")).unwrap();
    &text[start..start + end]
}

/// Creates the IAM user with a policy allowing KMS and its key, then two KMS keys (the
/// second for moving data keys to) and an alias for the first; the user's key and the keys.
async fn bootstrap(endpoint: &str) -> (AwsCredential, String, String) {
    let mut up = false;
    for _ in 0..100 {
        // A TCP connection only: moto counts requests toward the unauthenticated ones.
        if tokio::net::TcpStream::connect(endpoint.trim_start_matches("http://"))
            .await
            .is_ok()
        {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(up, "moto_server did not come up");
    let nobody = AwsCredential {
        key_id: "AKIABOOTSTRAP0000000".into(),
        secret_key: "bootstrap".into(),
        token: None,
    };
    iam(
        endpoint,
        &nobody,
        &[("Action", "CreateUser"), ("UserName", "tenebra")],
    )
    .await;
    let policy = serde_json::json!({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "kms:*", "Resource": "*"}]})
    .to_string();
    iam(
        endpoint,
        &nobody,
        &[
            ("Action", "PutUserPolicy"),
            ("UserName", "tenebra"),
            ("PolicyName", "kms"),
            ("PolicyDocument", &policy),
        ],
    )
    .await;
    let key = iam(
        endpoint,
        &nobody,
        &[("Action", "CreateAccessKey"), ("UserName", "tenebra")],
    )
    .await;
    let user = AwsCredential {
        key_id: between(&key, "AccessKeyId").to_owned(),
        secret_key: between(&key, "SecretAccessKey").to_owned(),
        token: None,
    };
    // From here on moto checks every signature: the bootstrap key no longer works.
    let (status, _) = kms(endpoint, &nobody, "CreateKey", serde_json::json!({})).await;
    assert!(status >= 400, "moto did not check the signature");
    let mut keys = Vec::new();
    for _ in 0..2 {
        let (status, v) = kms(endpoint, &user, "CreateKey", serde_json::json!({})).await;
        assert_eq!(status, 200, "{v}");
        keys.push(v["KeyMetadata"]["KeyId"].as_str().unwrap().to_owned());
    }
    let alias = serde_json::json!({"AliasName": "alias/tenebra", "TargetKeyId": keys[0]});
    let (status, v) = kms(endpoint, &user, "CreateAlias", alias).await;
    assert_eq!(status, 200, "{v}");
    let second = keys.pop().unwrap();
    (user, keys.pop().unwrap(), second)
}

#[test]
fn aws_kms_wraps_rotates_moves_keys_and_is_signed() {
    let Some(moto) = common::local_service_with(
        "TENEBRA_MOTO_SERVER",
        "TENEBRA_REQUIRE_S3",
        &[("INITIAL_NO_AUTH_ACTION_COUNT", "3")],
        |p| vec!["-p".into(), p.to_string()],
    ) else {
        return;
    };
    let endpoint = format!("http://127.0.0.1:{}", moto.port);
    let runtime = || {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    };
    let (user, _, second) = runtime().block_on(bootstrap(&endpoint));
    // The deployment's credentials, set while no other thread runs (the runtime is gone).
    std::env::set_var("AWS_ACCESS_KEY_ID", &user.key_id);
    std::env::set_var("AWS_SECRET_ACCESS_KEY", &user.secret_key);
    std::env::set_var("AWS_ENDPOINT_URL_KMS", &endpoint);
    runtime().block_on(story(&endpoint, &user, &second));
}

async fn story(endpoint: &str, user: &AwsCredential, second: &str) {
    let url = format!("aws-kms://alias/tenebra?region={REGION}");
    // As the server opens it: `--kms aws-kms://...`, the endpoint and key from the env.
    let settings = tenebra_server::Settings {
        kms: Some(url.clone()),
        ..tenebra_server::Settings::default()
    };
    let kms = tenebra_server::open_kms(&settings).unwrap();
    assert!(
        kms.describe().contains("alias/tenebra"),
        "{}",
        kms.describe()
    );
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("blobs");
    let blobs = Blobs::local(&root, kms.clone()).unwrap();
    common::round_trips(&blobs, dir.path()).await;
    let dek = std::fs::read(root.join("t/big.dek")).unwrap();
    assert!(dek.starts_with(b"tnak1"), "an AWS KMS ciphertext blob");

    // The blob name is the encryption context: a data key moved to another blob does not
    // open; a malformed one is refused before KMS is asked.
    std::fs::copy(root.join("t/big"), root.join("t/moved")).unwrap();
    std::fs::copy(root.join("t/big.dek"), root.join("t/moved.dek")).unwrap();
    let err = blobs.get(&"t/moved".into(), u64::MAX).await.unwrap_err();
    assert!(err.to_string().contains("data key"), "{err}");
    std::fs::write(root.join("t/moved.dek"), b"tnak1").unwrap();
    assert!(blobs.get(&"t/moved".into(), u64::MAX).await.is_err());
    blobs.remove(&"t/moved".into()).await.unwrap();

    // A wrong secret: moto recomputes the signature and refuses it.
    let forged = AwsCredential {
        key_id: user.key_id.clone(),
        secret_key: "not-the-secret".into(),
        token: None,
    };
    let wrong: Arc<dyn Kms> = Arc::new(AwsKms::with_credential(&url, forged).unwrap());
    let stranger = Blobs::local(&root, wrong).unwrap();
    let err = stranger.get(&"t/big".into(), u64::MAX).await.unwrap_err();
    assert!(err.to_string().contains("Signature"), "{err}");

    // Rotation gives the key new material; the old data keys open as they are.
    kms.rotate().await.unwrap();
    assert_eq!(blobs.rewrap_all().await.unwrap(), 0);
    common::round_trips(&blobs, dir.path()).await;

    // Moving to another key: with the old one as `previous`, every blob still opens, and
    // rotate-master-key's re-wrap moves each data key (inside KMS) to the new key.
    let moved =
        format!("aws-kms://{second}?region={REGION}&endpoint={endpoint}&previous=alias/tenebra");
    let kms2: Arc<dyn Kms> = Arc::new(AwsKms::new(&moved).unwrap());
    let blobs2 = Blobs::local(&root, kms2).unwrap();
    assert_eq!(
        blobs2.get(&"t/small".into(), u64::MAX).await.unwrap(),
        b"hello"
    );
    assert_eq!(blobs2.rewrap_all().await.unwrap(), 5);
    assert_eq!(blobs2.rewrap_all().await.unwrap(), 0);
    let only_new: Arc<dyn Kms> =
        Arc::new(AwsKms::new(&format!("aws-kms://{second}?region={REGION}")).unwrap());
    common::round_trips(&Blobs::local(&root, only_new).unwrap(), dir.path()).await;
    // The old key alone no longer opens them: decryption is pinned to the configured keys.
    let err = blobs.get(&"t/small".into(), u64::MAX).await.unwrap_err();
    assert!(err.to_string().contains("does not have"), "{err}");

    // Bad URLs are configuration errors, not panics.
    for bad in [
        "aws-kms://",
        "aws-kms://k?colour=red",
        "aws-kms://k?region=r&endpoint=ftp://x",
    ] {
        assert!(AwsKms::new(bad).is_err(), "{bad}");
    }
}
