//! Calls to AWS APIs (KMS, Lambda) without an AWS SDK: requests signed with SigV4 by
//! object_store's signer, sent with the service's one outbound client (rustls with ring, as
//! everywhere else), credentials from object_store's chain (the `AWS_*` variables, web
//! identity, ECS task roles, instance metadata) or given.

use std::sync::Arc;

use object_store::aws::{AmazonS3Builder, AwsAuthorizer, AwsCredentialProvider};
use object_store::client::HttpRequestBody;
use object_store::StaticCredentialProvider;

use crate::ServiceError;

pub use object_store::aws::AwsCredential;
pub use reqwest::Method;

/// Signs and sends requests to one region's AWS APIs.
#[derive(Clone)]
pub struct AwsClient {
    region: String,
    credentials: AwsCredentialProvider,
    http: reqwest::Client,
}

impl std::fmt::Debug for AwsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsClient")
            .field("region", &self.region)
            .finish_non_exhaustive()
    }
}

/// A failed call: the HTTP status (none when the request did not get an answer) and what
/// the service said, or the transport error.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct AwsError {
    pub status: Option<u16>,
    /// The service's error type (`__type` of JSON APIs, the `x-amzn-errortype` header), if any.
    pub kind: String,
    pub message: String,
}

/// The most of an answer read.
const ANSWER_LIMIT: usize = 1 << 20;

/// The region from the environment (`AWS_REGION`, then `AWS_DEFAULT_REGION`).
pub fn env_region() -> Option<String> {
    ["AWS_REGION", "AWS_DEFAULT_REGION"]
        .iter()
        .find_map(|k| std::env::var(k).ok().filter(|v| !v.is_empty()))
}

impl AwsClient {
    /// With credentials from the environment's chain.
    pub fn from_env(region: &str) -> Result<Self, ServiceError> {
        let credentials = AmazonS3Builder::from_env()
            .with_bucket_name("tenebra")
            .with_region(region)
            .build()
            .map_err(|e| ServiceError::Config(format!("AWS credentials: {e}")))?
            .credentials()
            .clone();
        Ok(Self {
            region: region.to_owned(),
            credentials,
            http: crate::outbound_client()?,
        })
    }

    /// With fixed credentials.
    pub fn with_credential(region: &str, credential: AwsCredential) -> Result<Self, ServiceError> {
        Ok(Self {
            region: region.to_owned(),
            credentials: Arc::new(StaticCredentialProvider::new(credential)),
            http: crate::outbound_client()?,
        })
    }

    pub fn region(&self) -> &str {
        &self.region
    }

    /// One signed request to `service`: the answer's body on a 2xx, else what failed.
    pub async fn call(
        &self,
        service: &str,
        method: reqwest::Method,
        url: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Result<Vec<u8>, AwsError> {
        let failed = |e: &dyn std::fmt::Display| AwsError {
            status: None,
            kind: String::new(),
            message: format!("{url}: {e}"),
        };
        let credential = self
            .credentials
            .get_credential()
            .await
            .map_err(|e| failed(&e))?;
        let mut req = axum::http::Request::builder()
            .method(method.clone())
            .uri(url);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let mut req = req
            .body(HttpRequestBody::from(body.clone()))
            .map_err(|e| failed(&e))?;
        AwsAuthorizer::new(&credential, service, &self.region).authorize(&mut req, None);
        let (parts, _) = req.into_parts();
        let r = self
            .http
            .request(method, url)
            .headers(parts.headers)
            .body(body)
            .send()
            .await
            .map_err(|e| failed(&e))?;
        let status = r.status();
        let header_kind = r
            .headers()
            .get("x-amzn-errortype")
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(':').next().unwrap_or_default().to_owned());
        let answer = crate::read_limited(r, ANSWER_LIMIT).await;
        if status.is_success() {
            return Ok(answer);
        }
        let v: serde_json::Value = serde_json::from_slice(&answer).unwrap_or_default();
        // `__type` is `Name` or `prefix#Name`; the message is `message` or `Message`; some
        // refusals (a bad signature, from some endpoints) come as XML or text.
        let kind = v["__type"]
            .as_str()
            .map(|k| k.rsplit('#').next().unwrap_or_default().to_owned())
            .or(header_kind)
            .unwrap_or_default();
        let text = String::from_utf8_lossy(&answer);
        // One line, bounded: whitespace runs (an HTML page's newlines) become one space.
        let message = v["message"]
            .as_str()
            .or(v["Message"].as_str())
            .unwrap_or(&text)
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .chars()
            .take(300)
            .collect::<String>();
        Err(AwsError {
            status: Some(status.as_u16()),
            kind: if kind.is_empty() {
                status.to_string()
            } else {
                kind
            },
            message,
        })
    }
}
