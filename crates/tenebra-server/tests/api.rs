//! The real server on port 0, over HTTP, on SQLite and on the real PostgreSQL.

use std::collections::BTreeSet;

use reqwest::StatusCode;
use serde_json::{json, Value};
use tenebra_server::create_tenant;

mod common;

struct Server {
    h: common::Harness,
    http: reqwest::Client,
}

async fn start(postgres: bool) -> Server {
    Server {
        h: common::Harness::start(postgres).await,
        http: reqwest::Client::new(),
    }
}

impl Server {
    async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self
            .http
            .request(method.parse().unwrap(), format!("{}{path}", self.h.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn stop(self) {
        self.h.stop().await;
    }
}

fn code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("<no error code>")
}

async fn story(postgres: bool) {
    let s = start(postgres).await;
    assert_eq!(
        s.call("GET", "/healthz", None, None).await.0,
        StatusCode::OK
    );
    assert_eq!(s.call("GET", "/readyz", None, None).await.0, StatusCode::OK);

    let (a, token_a) = create_tenant(&s.h.state, "acme").await.unwrap();
    let (_b, token_b) = create_tenant(&s.h.state, "globex").await.unwrap();
    assert!(create_tenant(&s.h.state, "acme").await.is_err());

    // Authentication.
    let (st, body) = s.call("GET", "/v1/api-keys", None, None).await;
    assert_eq!(
        (st, code(&body)),
        (StatusCode::UNAUTHORIZED, "unauthorized")
    );
    let (st, _) = s
        .call("GET", "/v1/api-keys", Some("tnb_garbage"), None)
        .await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    let unknown = tenebra_server::token::generate();
    let (st, body) = s.call("GET", "/v1/api-keys", Some(&unknown), None).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED, "{body}");

    // Key management by the tenant's admin.
    let (st, keys) = s.call("GET", "/v1/api-keys", Some(&token_a), None).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(keys.as_array().unwrap().len(), 1);
    assert!(keys[0].get("token").is_none(), "tokens are shown only once");
    let (st, read) = s
        .call(
            "POST",
            "/v1/api-keys",
            Some(&token_a),
            Some(json!({"name": "dashboard", "scope": "read"})),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{read}");
    let read_token = read["token"].as_str().unwrap().to_owned();
    let read_id = read["id"].as_str().unwrap().to_owned();
    let (st, body) = s.call("GET", "/v1/api-keys", Some(&read_token), None).await;
    assert_eq!((st, code(&body)), (StatusCode::FORBIDDEN, "forbidden"));

    // Tenants never see each other: B cannot list or revoke A's keys.
    let (st, keys_b) = s.call("GET", "/v1/api-keys", Some(&token_b), None).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(keys_b.as_array().unwrap().len(), 1);
    assert_ne!(keys_b[0]["id"], keys[0]["id"]);
    let (st, body) = s
        .call(
            "DELETE",
            &format!("/v1/api-keys/{read_id}"),
            Some(&token_b),
            None,
        )
        .await;
    assert_eq!((st, code(&body)), (StatusCode::NOT_FOUND, "not_found"));
    assert_eq!(s.h.state.store.list_api_keys(&a.id).await.unwrap().len(), 2);

    // Revocation takes effect at once.
    let (st, revoked) = s
        .call(
            "DELETE",
            &format!("/v1/api-keys/{read_id}"),
            Some(&token_a),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    assert!(revoked["revoked_at"].is_i64());
    let (st, body) = s.call("GET", "/readyz", Some(&read_token), None).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    let (st, body) = s
        .call(
            "POST",
            "/v1/api-keys",
            Some(&read_token),
            Some(json!({"name": "x", "scope": "read"})),
        )
        .await;
    assert_eq!(
        (st, code(&body)),
        (StatusCode::UNAUTHORIZED, "unauthorized")
    );

    // Bad requests: clear 4xx with a code, nothing stored.
    let bad = [
        (
            json!({"name": "x", "scope": "owner"}),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            json!({"name": "", "scope": "read"}),
            StatusCode::BAD_REQUEST,
            "invalid_name",
        ),
        (
            json!({"name": "x"}),
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        (
            json!({"name": "x".repeat(70_000), "scope": "read"}),
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
        ),
    ];
    for (body, status, want) in bad {
        let (st, resp) = s
            .call("POST", "/v1/api-keys", Some(&token_a), Some(body))
            .await;
        assert_eq!((st, code(&resp)), (status, want), "{resp}");
    }
    assert_eq!(s.h.state.store.list_api_keys(&a.id).await.unwrap().len(), 2);
    // Functions: listed with signature and sizes, priced per size.
    let (st, fs) = s.call("GET", "/v1/functions", Some(&token_b), None).await;
    assert_eq!(st, StatusCode::OK);
    let names: Vec<&str> = fs
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["weight_stats", "sleep_quality", "ad_targeting"]);
    let (st, f) = s
        .call(
            "GET",
            "/v1/functions/sleep_quality?size=17",
            Some(&token_b),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{f}");
    let local = tenebra_functions::find("sleep_quality")
        .unwrap()
        .circuit(17)
        .unwrap();
    assert_eq!(f["at_size"]["circuit_id"], local.id().to_string());
    assert!(f["at_size"]["cost_cu"].as_u64().unwrap() > 0);
    let (st, body) = s
        .call(
            "GET",
            "/v1/functions/sleep_quality?size=65",
            Some(&token_b),
            None,
        )
        .await;
    assert_eq!((st, code(&body)), (StatusCode::BAD_REQUEST, "invalid_size"));
    let (st, body) = s
        .call(
            "GET",
            "/v1/functions/sleep_quality?size=x",
            Some(&token_b),
            None,
        )
        .await;
    assert_eq!(
        (st, code(&body)),
        (StatusCode::BAD_REQUEST, "invalid_query")
    );
    let (st, body) = s
        .call("GET", "/v1/functions/nope", Some(&token_b), None)
        .await;
    assert_eq!((st, code(&body)), (StatusCode::NOT_FOUND, "not_found"));
    let (st, _) = s.call("GET", "/v1/functions", None, None).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);

    key_sets(&s, &token_a, &token_b, &read_token).await;

    let (st, body) = s.call("GET", "/v1/nope", Some(&token_a), None).await;
    assert_eq!((st, code(&body)), (StatusCode::NOT_FOUND, "not_found"));
    s.stop().await;
}

async fn upload(s: &Server, token: &str, body: Vec<u8>) -> (StatusCode, Value) {
    let resp = s
        .http
        .post(format!("{}/v1/key-sets", s.h.base))
        .bearer_auth(token)
        .body(body)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn blob_files(s: &Server) -> usize {
    s.h.state.blobs.count("").await.unwrap()
}

async fn key_sets(s: &Server, token_a: &str, token_b: &str, revoked: &str) {
    let keys = tenebra_engine::test_support::test_key_dir();
    let body = tenebra_engine::keys::read_upload(&keys).unwrap();
    let local_id = tenebra_engine::ClientKeys::load(&keys)
        .unwrap()
        .id()
        .to_string();

    // Bad uploads: a clear 400, nothing stored.
    let (server_key, public_key) = tenebra_engine::keys::unpack_upload(&body).unwrap();
    let swapped = tenebra_engine::keys::pack_upload(public_key, server_key);
    for bad in [
        b"garbage".to_vec(),
        body[..body.len() / 2].to_vec(),
        swapped,
    ] {
        let (st, resp) = upload(s, token_a, bad).await;
        assert_eq!(
            (st, code(&resp)),
            (StatusCode::BAD_REQUEST, "invalid_key_set"),
            "{resp}"
        );
    }
    assert_eq!(blob_files(s).await, 0);
    let (st, _) = upload(s, revoked, body.clone()).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    let client = tenebra_client::http::Client::new(&s.h.base, token_a);
    match client.upload_key_set_expiring(body.clone(), Some(5)).await {
        Err(tenebra_client::http::HttpError::Api { status, code, .. }) => {
            assert_eq!((status, code.as_str()), (400, "invalid_ttl"));
        }
        other => panic!("a 5 s TTL was accepted: {other:?}"),
    }
    assert_eq!(blob_files(s).await, 0);

    // The real key set: created once, idempotent, fingerprint = the client's key set id.
    let (st, ks) = upload(s, token_a, body.clone()).await;
    assert_eq!(st, StatusCode::CREATED, "{ks}");
    assert_eq!(ks["fingerprint"], local_id);
    let (st, again) = upload(s, token_a, body.clone()).await;
    assert_eq!((st, &again["id"]), (StatusCode::OK, &ks["id"]));
    assert_eq!(blob_files(s).await, 1);
    let id = ks["id"].as_str().unwrap();

    // Tenants never see each other's key sets.
    let (st, body_b) = s
        .call("GET", &format!("/v1/key-sets/{id}"), Some(token_b), None)
        .await;
    assert_eq!((st, code(&body_b)), (StatusCode::NOT_FOUND, "not_found"));
    let (st, _) = s
        .call("DELETE", &format!("/v1/key-sets/{id}"), Some(token_b), None)
        .await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let (_, list_b) = s.call("GET", "/v1/key-sets", Some(token_b), None).await;
    assert_eq!(list_b, json!([]));
    let (st, list_a) = s.call("GET", "/v1/key-sets", Some(token_a), None).await;
    assert_eq!((st, list_a.as_array().unwrap().len()), (StatusCode::OK, 1));
    let (st, got) = s
        .call("GET", &format!("/v1/key-sets/{id}"), Some(token_a), None)
        .await;
    assert_eq!((st, &got), (StatusCode::OK, &ks));

    assert!(ks.get("expires_at").is_none(), "no TTL asked, none set");

    // Deletion removes the row and the blob.
    let (st, _) = s
        .call("DELETE", &format!("/v1/key-sets/{id}"), Some(token_a), None)
        .await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    assert_eq!(blob_files(s).await, 0);
    let (st, _) = s
        .call("GET", &format!("/v1/key-sets/{id}"), Some(token_a), None)
        .await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    // With a time to live, the set says when it goes.
    let ks = client
        .upload_key_set_expiring(body.clone(), Some(3600))
        .await
        .unwrap();
    let left = ks.expires_at.unwrap() - tenebra_store::now_ms();
    assert!((3_590_000..=3_600_000).contains(&left), "{left}");
    client.delete_key_set(&ks.id).await.unwrap();
    assert_eq!(blob_files(s).await, 0);
}

/// /openapi.json documents exactly the operations the router serves (`ROUTES` is the table
/// the router is built from), and each of them is routed (no 404 or 405).
#[tokio::test]
async fn openapi_describes_the_routes() {
    let s = start(false).await;
    let (st, doc) = s.call("GET", "/openapi.json", None, None).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"].as_object().unwrap();
    let documented: BTreeSet<(String, String)> = paths
        .iter()
        .flat_map(|(path, ops)| {
            ops.as_object()
                .unwrap()
                .keys()
                .map(move |m| (m.to_uppercase(), path.clone()))
        })
        .collect();
    let routed: BTreeSet<(String, String)> = tenebra_server::ROUTES
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    let undocumented: Vec<_> = routed.difference(&documented).collect();
    let unrouted: Vec<_> = documented.difference(&routed).collect();
    assert!(
        undocumented.is_empty(),
        "routed, not documented: {undocumented:?}"
    );
    assert!(unrouted.is_empty(), "documented, not routed: {unrouted:?}");
    for (path, ops) in paths {
        // Every `{param}` becomes `x`.
        let concrete: String = path
            .split('/')
            .map(|seg| if seg.starts_with('{') { "x" } else { seg })
            .collect::<Vec<_>>()
            .join("/");
        for (method, op) in ops.as_object().unwrap() {
            let (st, _) = s.call(&method.to_uppercase(), &concrete, None, None).await;
            assert!(
                st != StatusCode::NOT_FOUND && st != StatusCode::METHOD_NOT_ALLOWED,
                "{method} {path} is documented but answers {st}"
            );
            if op.get("security").is_some() {
                assert_eq!(st, StatusCode::UNAUTHORIZED, "{method} {path}");
            }
        }
    }
    s.stop().await;
}

#[tokio::test]
async fn api_keys_on_sqlite() {
    story(false).await;
}

#[tokio::test]
async fn api_keys_on_postgres() {
    story(true).await;
}
