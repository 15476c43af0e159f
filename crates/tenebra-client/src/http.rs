//! Typed async HTTP client for the Tenebra API (the endpoints the server has today).

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// An API error or a transport failure.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The server answered with an error body.
    #[error("{status} {code}: {message}")]
    Api {
        status: u16,
        code: String,
        message: String,
    },
    #[error("cannot reach the server: {0}")]
    Transport(String),
    #[error("unexpected response: {0}")]
    Decode(String),
}

/// An uploaded key set, as the server describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeySet {
    pub id: String,
    pub fingerprint: String,
    pub size_bytes: i64,
    pub created_at: i64,
}

/// A function of the catalogue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Function {
    pub name: String,
    pub summary: String,
    pub signature: String,
    pub kind: String,
    pub min_size: u32,
    pub max_size: u32,
}

/// A client for one server and one API key.
#[derive(Debug, Clone)]
pub struct Client {
    base: String,
    token: String,
    http: reqwest::Client,
}

impl Client {
    /// `base` is the server's URL, e.g. `http://127.0.0.1:8080`.
    pub fn new(base: &str, api_key: &str) -> Self {
        Self {
            base: base.trim_end_matches('/').to_owned(),
            token: api_key.to_owned(),
            http: reqwest::Client::new(),
        }
    }

    async fn send<T: DeserializeOwned>(
        &self,
        req: reqwest::RequestBuilder,
    ) -> Result<T, HttpError> {
        let resp = req
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(|e| HttpError::Transport(e.to_string()))?;
        let status = resp.status();
        let body = resp
            .bytes()
            .await
            .map_err(|e| HttpError::Transport(e.to_string()))?;
        if !status.is_success() {
            let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            let field = |k: &str| v["error"][k].as_str().unwrap_or("").to_owned();
            return Err(HttpError::Api {
                status: status.as_u16(),
                code: field("code"),
                message: field("message"),
            });
        }
        serde_json::from_slice(&body).map_err(|e| HttpError::Decode(e.to_string()))
    }

    /// Uploads a key set (the body of `tenebra_engine::keys::read_upload`); uploading the same
    /// set again returns the existing one.
    pub async fn upload_key_set(&self, upload: Vec<u8>) -> Result<KeySet, HttpError> {
        // A cheap authenticated call first: a server refusing the API key closes the
        // connection while a 57 MiB body is still being sent, which hides its answer.
        self.key_sets().await?;
        let req = self
            .http
            .post(format!("{}/v1/key-sets", self.base))
            .header("content-type", "application/octet-stream")
            .body(upload);
        self.send(req).await
    }

    pub async fn key_sets(&self) -> Result<Vec<KeySet>, HttpError> {
        self.send(self.http.get(format!("{}/v1/key-sets", self.base)))
            .await
    }

    pub async fn functions(&self) -> Result<Vec<Function>, HttpError> {
        self.send(self.http.get(format!("{}/v1/functions", self.base)))
            .await
    }
}
