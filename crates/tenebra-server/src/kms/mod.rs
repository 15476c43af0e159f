//! Key management for blobs at rest: each blob has its own random data key, and a KMS
//! wraps that data key under a master key the blob store never sees.
//!
//! Three backends behind [`Kms`]: a local keyring of master key files (the default, created
//! on first start with 0600 permissions), HashiCorp Vault's (or OpenBao's) transit engine,
//! and AWS KMS ([`aws`]).
//! Rotating the master key re-wraps data keys only: blobs are not re-encrypted.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;

use base64::Engine;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use sha2::{Digest, Sha256};

use crate::ServiceError;

pub mod aws;
pub use aws::AwsKms;

/// A boxed future, so the trait can be used as `dyn Kms`.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A new data key and the same key wrapped.
pub type NewDataKey = ([u8; 32], Vec<u8>);

/// Why a data key could not be wrapped or unwrapped.
#[derive(Debug, thiserror::Error)]
pub enum KmsError {
    #[error("the data key was wrapped by master key `{0}`, which this server does not have")]
    UnknownMasterKey(String),
    #[error("the data key does not unwrap: wrong master key, or the wrapped key was altered")]
    Unwrap,
    #[error("malformed wrapped data key")]
    Malformed,
    #[error("KMS: {0}")]
    Backend(String),
}

/// Wraps and unwraps data keys. `context` (the blob's name) is bound to the wrapped key
/// where the backend supports it, so a wrapped key copied to another blob does not open.
pub trait Kms: Send + Sync + std::fmt::Debug {
    /// A new random data key for `context` and that key wrapped (by default: random bytes
    /// from this process, then [`Kms::wrap`]; AWS KMS generates it itself).
    fn generate<'a>(&'a self, context: &'a [u8]) -> BoxFuture<'a, Result<NewDataKey, KmsError>> {
        Box::pin(async move {
            let data_key: [u8; 32] = rand::random();
            let wrapped = self.wrap(&data_key, context).await?;
            Ok((data_key, wrapped))
        })
    }

    fn wrap<'a>(
        &'a self,
        data_key: &'a [u8; 32],
        context: &'a [u8],
    ) -> BoxFuture<'a, Result<Vec<u8>, KmsError>>;

    fn unwrap<'a>(
        &'a self,
        wrapped: &'a [u8],
        context: &'a [u8],
    ) -> BoxFuture<'a, Result<[u8; 32], KmsError>>;

    /// The same data key wrapped under the current master key, or `None` if it already is.
    fn rewrap<'a>(
        &'a self,
        wrapped: &'a [u8],
        context: &'a [u8],
    ) -> BoxFuture<'a, Result<Option<Vec<u8>>, KmsError>>;

    /// Makes a new master key current (older ones still unwrap until retired).
    fn rotate(&self) -> BoxFuture<'_, Result<String, KmsError>>;

    /// Forgets master keys older than the current one, once every data key is re-wrapped;
    /// returns how many went (backends that keep versions themselves forget nothing).
    fn retire_old(&self) -> Result<usize, KmsError> {
        Ok(0)
    }

    /// Which backend and master key, for logs (nothing secret).
    fn describe(&self) -> String;
}

/// Tag of data keys wrapped by the local keyring.
const LOCAL_TAG: &[u8] = b"tnbk1";
const KEY_ID_LEN: usize = 8;
const NONCE_LEN: usize = 12;

/// Master keys in a directory: `<id>.key` files (32 random bytes each, 0600) and `current`
/// naming the one new data keys are wrapped with.
#[derive(Debug)]
pub struct LocalKms {
    dir: PathBuf,
}

fn key_id(key: &[u8; 32]) -> String {
    hex::encode(&Sha256::digest(key)[..KEY_ID_LEN])
}

fn backend(e: impl std::fmt::Display) -> KmsError {
    KmsError::Backend(e.to_string())
}

impl LocalKms {
    /// Opens the keyring in `dir`, creating it with a first master key if it is missing.
    pub fn open(dir: &Path) -> Result<Self, ServiceError> {
        let kms = Self {
            dir: dir.to_owned(),
        };
        if !dir.join("current").exists() {
            std::fs::create_dir_all(dir).map_err(ServiceError::file(dir))?;
            kms.new_key().map_err(ServiceError::Kms)?;
        }
        kms.current().map_err(ServiceError::Kms)?;
        Ok(kms)
    }

    fn new_key(&self) -> Result<String, KmsError> {
        let key: [u8; 32] = rand::random();
        let id = key_id(&key);
        crate::write_private(&self.dir.join(format!("{id}.key")), &key).map_err(backend)?;
        // Written aside then renamed: a reader sees the old or the new id, never half.
        let tmp = self.dir.join(format!("current.{id}.tmp"));
        std::fs::write(&tmp, &id).map_err(backend)?;
        std::fs::rename(&tmp, self.dir.join("current")).map_err(backend)?;
        Ok(id)
    }

    fn load(&self, id: &str) -> Result<[u8; 32], KmsError> {
        if id.len() != 2 * KEY_ID_LEN || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(KmsError::Malformed);
        }
        let bytes = match std::fs::read(self.dir.join(format!("{id}.key"))) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(KmsError::UnknownMasterKey(id.to_owned()))
            }
            Err(e) => return Err(backend(e)),
        };
        <[u8; 32]>::try_from(bytes.as_slice())
            .map_err(|_| backend(format!("master key {id} is not 32 bytes")))
    }

    fn current(&self) -> Result<(String, [u8; 32]), KmsError> {
        let id = std::fs::read_to_string(self.dir.join("current")).map_err(backend)?;
        let id = id.trim().to_owned();
        let key = self.load(&id)?;
        Ok((id, key))
    }

    fn seal(&self, id: &str, key: &[u8; 32], data_key: &[u8; 32], context: &[u8]) -> Vec<u8> {
        let nonce: [u8; NONCE_LEN] = rand::random();
        let cipher = ChaCha20Poly1305::new(Key::from_slice(key));
        let mut out = LOCAL_TAG.to_vec();
        out.extend_from_slice(&hex::decode(id).unwrap_or_default());
        out.extend_from_slice(&nonce);
        // Encrypting 32 bytes into a Vec cannot fail.
        let sealed = cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: data_key,
                    aad: context,
                },
            )
            .unwrap_or_default();
        out.extend_from_slice(&sealed);
        out
    }

    /// `(master key id, nonce, sealed data key)` of a wrapped key.
    fn parse(wrapped: &[u8]) -> Result<(String, &[u8], &[u8]), KmsError> {
        let rest = wrapped.strip_prefix(LOCAL_TAG).ok_or(KmsError::Malformed)?;
        if rest.len() != KEY_ID_LEN + NONCE_LEN + 32 + 16 {
            return Err(KmsError::Malformed);
        }
        let (id, rest) = rest.split_at(KEY_ID_LEN);
        let (nonce, sealed) = rest.split_at(NONCE_LEN);
        Ok((hex::encode(id), nonce, sealed))
    }

    fn open_key(&self, wrapped: &[u8], context: &[u8]) -> Result<(String, [u8; 32]), KmsError> {
        let (id, nonce, sealed) = Self::parse(wrapped)?;
        let key = self.load(&id)?;
        let cipher = ChaCha20Poly1305::new(Key::from_slice(&key));
        let plain = cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: sealed,
                    aad: context,
                },
            )
            .map_err(|_| KmsError::Unwrap)?;
        let dk = <[u8; 32]>::try_from(plain.as_slice()).map_err(|_| KmsError::Unwrap)?;
        Ok((id, dk))
    }
}

impl Kms for LocalKms {
    fn wrap<'a>(
        &'a self,
        data_key: &'a [u8; 32],
        context: &'a [u8],
    ) -> BoxFuture<'a, Result<Vec<u8>, KmsError>> {
        Box::pin(async move {
            let (id, key) = self.current()?;
            Ok(self.seal(&id, &key, data_key, context))
        })
    }

    fn unwrap<'a>(
        &'a self,
        wrapped: &'a [u8],
        context: &'a [u8],
    ) -> BoxFuture<'a, Result<[u8; 32], KmsError>> {
        Box::pin(async move { self.open_key(wrapped, context).map(|(_, k)| k) })
    }

    fn rewrap<'a>(
        &'a self,
        wrapped: &'a [u8],
        context: &'a [u8],
    ) -> BoxFuture<'a, Result<Option<Vec<u8>>, KmsError>> {
        Box::pin(async move {
            let (id, data_key) = self.open_key(wrapped, context)?;
            let (current, key) = self.current()?;
            if id == current {
                return Ok(None);
            }
            Ok(Some(self.seal(&current, &key, &data_key, context)))
        })
    }

    fn rotate(&self) -> BoxFuture<'_, Result<String, KmsError>> {
        Box::pin(async move { self.new_key() })
    }

    fn retire_old(&self) -> Result<usize, KmsError> {
        let (current, _) = self.current()?;
        let mut n = 0;
        for entry in std::fs::read_dir(&self.dir).map_err(backend)? {
            let path = entry.map_err(backend)?.path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if name.ends_with(".key") && name != format!("{current}.key") {
                std::fs::remove_file(&path).map_err(backend)?;
                n += 1;
            }
        }
        Ok(n)
    }

    fn describe(&self) -> String {
        match self.current() {
            Ok((id, _)) => format!("local keyring {} (current key {id})", self.dir.display()),
            Err(e) => format!("local keyring {} ({e})", self.dir.display()),
        }
    }
}

/// Vault's (or OpenBao's) transit engine: data keys are wrapped by a named transit key that
/// never leaves Vault. Configured as `vault+http(s)://host:port/<transit mount>/<key name>`
/// with the token in `VAULT_TOKEN`.
pub struct VaultKms {
    /// e.g. `http://127.0.0.1:8200/v1/transit`.
    base: String,
    key: String,
    token: String,
    http: reqwest::Client,
}

/// The token prints as `<redacted>`.
impl std::fmt::Debug for VaultKms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VaultKms")
            .field("base", &self.base)
            .field("key", &self.key)
            .field("token", &"<redacted>")
            .finish()
    }
}

impl VaultKms {
    /// `url` is `vault+http(s)://host:port/<mount>/<key>`.
    pub fn new(url: &str, token: &str) -> Result<Self, ServiceError> {
        let wrong = |why: String| ServiceError::Config(why);
        let rest = url
            .strip_prefix("vault+")
            .ok_or_else(|| wrong(format!("`{url}` is not a vault+http(s):// URL")))?;
        let (origin, path) = rest
            .find("://")
            .and_then(|i| rest[i + 3..].find('/').map(|j| rest.split_at(i + 3 + j)))
            .ok_or_else(|| wrong(format!("`{url}` names no transit mount and key")))?;
        let (mount, key) = path.trim_matches('/').rsplit_once('/').ok_or_else(|| {
            wrong(format!(
                "`{url}` should end with /<transit mount>/<key name>"
            ))
        })?;
        if token.is_empty() {
            return Err(wrong("the Vault KMS needs a token (VAULT_TOKEN)".into()));
        }
        Ok(Self {
            base: format!("{origin}/v1/{mount}"),
            key: key.to_owned(),
            token: token.to_owned(),
            http: crate::outbound_client()?,
        })
    }

    /// One request to the transit engine (`path` under the mount): the status and body.
    async fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<(reqwest::StatusCode, serde_json::Value), KmsError> {
        let mut req = self
            .http
            .request(method, format!("{}/{path}", self.base))
            .header("x-vault-token", &self.token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req.send().await.map_err(backend)?;
        let status = r.status();
        Ok((status, r.json().await.unwrap_or_default()))
    }

    /// `encrypt`, `decrypt`: the answer, or what failed.
    async fn call(&self, op: &str, body: serde_json::Value) -> Result<serde_json::Value, KmsError> {
        let path = format!("{op}/{}", self.key);
        let (status, v) = self
            .request(reqwest::Method::POST, &path, Some(body))
            .await?;
        if !status.is_success() {
            let errors = v["errors"].to_string();
            return Err(if op == "decrypt" && status.as_u16() == 400 {
                KmsError::Unwrap
            } else {
                backend(format!("{op} answered {status}: {errors}"))
            });
        }
        Ok(v)
    }

    async fn latest_version(&self) -> Result<u64, KmsError> {
        let path = format!("keys/{}", self.key);
        let (status, v) = self.request(reqwest::Method::GET, &path, None).await?;
        if !status.is_success() {
            return Err(backend(format!(
                "reading the transit key answered {status}"
            )));
        }
        v["data"]["latest_version"]
            .as_u64()
            .ok_or_else(|| backend("the transit key has no latest_version"))
    }

    fn ciphertext(v: &serde_json::Value) -> Result<Vec<u8>, KmsError> {
        v["data"]["ciphertext"]
            .as_str()
            .map(|c| c.as_bytes().to_vec())
            .ok_or_else(|| backend("Vault answered without a ciphertext"))
    }

    fn wrapped_str(wrapped: &[u8]) -> Result<&str, KmsError> {
        std::str::from_utf8(wrapped)
            .ok()
            .filter(|s| s.starts_with("vault:v"))
            .ok_or(KmsError::Malformed)
    }
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

impl Kms for VaultKms {
    fn wrap<'a>(
        &'a self,
        data_key: &'a [u8; 32],
        context: &'a [u8],
    ) -> BoxFuture<'a, Result<Vec<u8>, KmsError>> {
        Box::pin(async move {
            let body =
                serde_json::json!({"plaintext": b64(data_key), "associated_data": b64(context)});
            Self::ciphertext(&self.call("encrypt", body).await?)
        })
    }

    fn unwrap<'a>(
        &'a self,
        wrapped: &'a [u8],
        context: &'a [u8],
    ) -> BoxFuture<'a, Result<[u8; 32], KmsError>> {
        Box::pin(async move {
            let c = Self::wrapped_str(wrapped)?;
            let body = serde_json::json!({"ciphertext": c, "associated_data": b64(context)});
            let v = self.call("decrypt", body).await?;
            let plain = v["data"]["plaintext"]
                .as_str()
                .and_then(|p| base64::engine::general_purpose::STANDARD.decode(p).ok())
                .ok_or(KmsError::Unwrap)?;
            <[u8; 32]>::try_from(plain.as_slice()).map_err(|_| KmsError::Unwrap)
        })
    }

    fn rewrap<'a>(
        &'a self,
        wrapped: &'a [u8],
        context: &'a [u8],
    ) -> BoxFuture<'a, Result<Option<Vec<u8>>, KmsError>> {
        // Transit's own rewrap ignores associated data, so the data key is unwrapped and
        // wrapped again here (it stays in this process's memory, as for any read).
        Box::pin(async move {
            let c = Self::wrapped_str(wrapped)?;
            let version = c
                .strip_prefix("vault:v")
                .and_then(|r| r.split(':').next())
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or(KmsError::Malformed)?;
            if version >= self.latest_version().await? {
                return Ok(None);
            }
            let data_key = self.unwrap(wrapped, context).await?;
            self.wrap(&data_key, context).await.map(Some)
        })
    }

    fn rotate(&self) -> BoxFuture<'_, Result<String, KmsError>> {
        Box::pin(async move {
            let path = format!("keys/{}/rotate", self.key);
            let (status, _) = self.request(reqwest::Method::POST, &path, None).await?;
            if !status.is_success() {
                return Err(backend(format!("rotate answered {status}")));
            }
            Ok(format!("{} (new version)", self.key))
        })
    }

    fn describe(&self) -> String {
        format!("Vault transit key `{}` at {}", self.key, self.base)
    }
}
