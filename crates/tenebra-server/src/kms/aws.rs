//! AWS KMS: envelope encryption of blobs with `GenerateDataKey` and `Decrypt`, the blob's
//! name as the encryption context; KMS's JSON protocol through [`crate::aws::AwsClient`]
//! (SigV4, no AWS SDK).

use base64::Engine;
use object_store::aws::AwsCredential;
use serde_json::{json, Value};

use crate::aws::AwsClient;

use super::{backend, BoxFuture, Kms, KmsError, NewDataKey};
use crate::ServiceError;

/// Tag of data keys wrapped by AWS KMS (then KMS's ciphertext blob).
const AWS_TAG: &[u8] = b"tnak1";

/// The encryption context key that carries the blob name.
const CONTEXT_KEY: &str = "tenebra:blob";

/// Configured as `aws-kms://<key id, ARN or alias/NAME>?region=R`, with `&previous=K1,K2`
/// for keys whose data keys still open (until `rotate-master-key` has re-wrapped them under
/// the current key) and `&endpoint=URL` for a KMS-compatible endpoint (else
/// `AWS_ENDPOINT_URL_KMS`, else `https://kms.<region>.amazonaws.com`).
pub struct AwsKms {
    endpoint: String,
    /// The key new data keys are generated under, then the previous ones.
    keys: Vec<String>,
    client: AwsClient,
}

impl std::fmt::Debug for AwsKms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsKms")
            .field("endpoint", &self.endpoint)
            .field("region", &self.client.region())
            .field("keys", &self.keys)
            .finish_non_exhaustive()
    }
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn unb64(v: &Value) -> Option<Vec<u8>> {
    base64::engine::general_purpose::STANDARD
        .decode(v.as_str()?)
        .ok()
}

/// The ciphertext blob of an answer, tagged as Tenebra stores it.
fn tagged(v: &Value, op: &str) -> Result<Vec<u8>, KmsError> {
    let blob = unb64(&v["CiphertextBlob"])
        .filter(|b| !b.is_empty())
        .ok_or_else(|| backend(format!("{op} answered without a ciphertext")))?;
    Ok([AWS_TAG, &blob].concat())
}

impl AwsKms {
    /// The KMS a URL names, with credentials from the environment's chain.
    pub fn new(url: &str) -> Result<Self, ServiceError> {
        Self::build(url, None)
    }

    /// The same with fixed credentials.
    pub fn with_credential(url: &str, credential: AwsCredential) -> Result<Self, ServiceError> {
        Self::build(url, Some(credential))
    }

    fn build(url: &str, credential: Option<AwsCredential>) -> Result<Self, ServiceError> {
        let wrong = |why: String| ServiceError::Config(why);
        let rest = url
            .strip_prefix("aws-kms://")
            .ok_or_else(|| wrong(format!("`{url}` is not an aws-kms:// URL")))?;
        let (key, query) = rest.split_once('?').unwrap_or((rest, ""));
        if key.is_empty() {
            return Err(wrong(format!(
                "`{url}` names no key (aws-kms://<key>?region=R)"
            )));
        }
        let (mut region, mut endpoint, mut keys) = (None, None, vec![key.to_owned()]);
        for (k, v) in form_urlencoded::parse(query.as_bytes()) {
            match k.as_ref() {
                "region" => region = Some(v.into_owned()),
                "endpoint" => endpoint = Some(v.into_owned()),
                "previous" => {
                    keys.extend(v.split(',').filter(|k| !k.is_empty()).map(str::to_owned))
                }
                other => {
                    return Err(wrong(format!(
                        "`{url}`: unknown parameter `{other}` (region, endpoint, previous)"
                    )))
                }
            }
        }
        let region = region
            .or_else(crate::aws::env_region)
            .ok_or_else(|| wrong(format!("`{url}` needs ?region=R (or AWS_REGION)")))?;
        let endpoint = endpoint
            .or_else(|| {
                std::env::var("AWS_ENDPOINT_URL_KMS")
                    .ok()
                    .filter(|v| !v.is_empty())
            })
            .unwrap_or_else(|| format!("https://kms.{region}.amazonaws.com"));
        if !endpoint.starts_with("https://") && !endpoint.starts_with("http://") {
            return Err(wrong(format!("KMS endpoint `{endpoint}` is not http(s)")));
        }
        let client = match credential {
            Some(c) => AwsClient::with_credential(&region, c)?,
            None => AwsClient::from_env(&region)?,
        };
        Ok(Self {
            endpoint: endpoint.trim_end_matches('/').to_owned(),
            keys,
            client,
        })
    }

    /// One signed call (`TrentService.<op>`): the answer, or KMS's error type and message.
    async fn call(&self, op: &str, body: Value) -> Result<Value, (String, String)> {
        let target = format!("TrentService.{op}");
        let headers = [
            ("content-type", "application/x-amz-json-1.1"),
            ("x-amz-target", target.as_str()),
        ];
        let url = format!("{}/", self.endpoint);
        let bytes = serde_json::to_vec(&body).unwrap_or_default();
        match self
            .client
            .call("kms", reqwest::Method::POST, &url, &headers, bytes)
            .await
        {
            Ok(answer) => Ok(serde_json::from_slice(&answer).unwrap_or_default()),
            Err(e) if e.status.is_none() => Err(("Transport".to_owned(), e.message)),
            Err(e) => Err((e.kind, e.message)),
        }
    }

    fn context(context: &[u8]) -> Result<Value, KmsError> {
        let name = std::str::from_utf8(context).map_err(|_| KmsError::Malformed)?;
        Ok(json!({ CONTEXT_KEY: name }))
    }

    fn blob(wrapped: &[u8]) -> Result<String, KmsError> {
        wrapped
            .strip_prefix(AWS_TAG)
            .filter(|b| !b.is_empty())
            .map(b64)
            .ok_or(KmsError::Malformed)
    }

    /// `op` with `key_field` set to each of the keys in turn while KMS answers that the
    /// ciphertext is under another key: data keys of a previous key still open.
    async fn pinned(&self, op: &str, key_field: &str, mut body: Value) -> Result<Value, KmsError> {
        for key in &self.keys {
            body[key_field] = json!(key);
            match self.call(op, body.clone()).await {
                Ok(v) => return Ok(v),
                // AWS says IncorrectKeyException; some emulators AccessDeniedException.
                Err((kind, _))
                    if kind == "IncorrectKeyException" || kind == "AccessDeniedException" =>
                {
                    continue
                }
                Err((kind, _)) if kind == "InvalidCiphertextException" => {
                    return Err(KmsError::Unwrap)
                }
                Err((kind, message)) => return Err(backend(format!("{op}: {kind}: {message}"))),
            }
        }
        Err(KmsError::UnknownMasterKey(
            "(an AWS KMS key not among the configured ones)".into(),
        ))
    }
}

impl Kms for AwsKms {
    fn generate<'a>(&'a self, context: &'a [u8]) -> BoxFuture<'a, Result<NewDataKey, KmsError>> {
        Box::pin(async move {
            let body = json!({"KeyId": self.keys[0], "KeySpec": "AES_256",
                "EncryptionContext": Self::context(context)?});
            let v = self
                .call("GenerateDataKey", body)
                .await
                .map_err(|(kind, m)| backend(format!("GenerateDataKey: {kind}: {m}")))?;
            let plain = unb64(&v["Plaintext"])
                .and_then(|p| <[u8; 32]>::try_from(p.as_slice()).ok())
                .ok_or_else(|| backend("GenerateDataKey answered without a 32-byte key"))?;
            let blob = tagged(&v, "GenerateDataKey")?;
            Ok((plain, blob))
        })
    }

    fn wrap<'a>(
        &'a self,
        data_key: &'a [u8; 32],
        context: &'a [u8],
    ) -> BoxFuture<'a, Result<Vec<u8>, KmsError>> {
        Box::pin(async move {
            let body = json!({"KeyId": self.keys[0], "Plaintext": b64(data_key),
                "EncryptionContext": Self::context(context)?});
            let v = self
                .call("Encrypt", body)
                .await
                .map_err(|(kind, m)| backend(format!("Encrypt: {kind}: {m}")))?;
            tagged(&v, "Encrypt")
        })
    }

    fn unwrap<'a>(
        &'a self,
        wrapped: &'a [u8],
        context: &'a [u8],
    ) -> BoxFuture<'a, Result<[u8; 32], KmsError>> {
        Box::pin(async move {
            let body = json!({"CiphertextBlob": Self::blob(wrapped)?,
                "EncryptionContext": Self::context(context)?});
            let v = self.pinned("Decrypt", "KeyId", body).await?;
            unb64(&v["Plaintext"])
                .and_then(|p| <[u8; 32]>::try_from(p.as_slice()).ok())
                .ok_or(KmsError::Unwrap)
        })
    }

    fn rewrap<'a>(
        &'a self,
        wrapped: &'a [u8],
        context: &'a [u8],
    ) -> BoxFuture<'a, Result<Option<Vec<u8>>, KmsError>> {
        // ReEncrypt moves the data key under the current key inside KMS (it never leaves).
        Box::pin(async move {
            let ctx = Self::context(context)?;
            let body = json!({"CiphertextBlob": Self::blob(wrapped)?,
                "SourceEncryptionContext": ctx, "DestinationEncryptionContext": ctx,
                "DestinationKeyId": self.keys[0]});
            let v = self.pinned("ReEncrypt", "SourceKeyId", body).await?;
            if v["SourceKeyId"].is_string() && v["SourceKeyId"] == v["KeyId"] {
                return Ok(None);
            }
            tagged(&v, "ReEncrypt").map(Some)
        })
    }

    /// New key material for the current key (`RotateKeyOnDemand`); KMS keeps the old
    /// material, so data keys wrapped before still open and need no re-wrapping.
    fn rotate(&self) -> BoxFuture<'_, Result<String, KmsError>> {
        Box::pin(async move {
            // RotateKeyOnDemand takes a key id or ARN, not an alias.
            let v = self
                .call("DescribeKey", json!({"KeyId": self.keys[0]}))
                .await
                .map_err(|(kind, m)| backend(format!("DescribeKey: {kind}: {m}")))?;
            let id = v["KeyMetadata"]["KeyId"]
                .as_str()
                .ok_or_else(|| backend("DescribeKey answered without a key id"))?
                .to_owned();
            self.call("RotateKeyOnDemand", json!({"KeyId": id}))
                .await
                .map_err(|(kind, m)| backend(format!("RotateKeyOnDemand: {kind}: {m}")))?;
            Ok(format!("{} (new key material)", self.keys[0]))
        })
    }

    fn describe(&self) -> String {
        format!(
            "AWS KMS key `{}` in {} at {}",
            self.keys[0],
            self.client.region(),
            self.endpoint
        )
    }
}
