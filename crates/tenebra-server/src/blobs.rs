//! The blob store: key sets, task inputs and results, on the local filesystem (embedded
//! mode, or a filesystem every node mounts) or in S3-compatible object storage (cluster).
//!
//! Layout: `<tenant>/<key set>.keyset`, `<tenant>/tasks/<task>.input`, and
//! `<tenant>/tasks/<task>.<fence>.result` (the claim's fence in the name, so a worker that
//! lost its lease never touches the result of the worker that took over). Writes are whole
//! objects (the local store writes a temporary file and renames it), so a reader never sees
//! half a blob.
//!
//! Every blob but the audit checkpoints is encrypted at rest (envelope encryption): a random
//! 256-bit data key per blob encrypts it with ChaCha20-Poly1305 in the STREAM construction,
//! in 64 KiB chunks (so no blob is ever encrypted or decrypted in one buffer, and a chunk
//! cut, reordered or dropped fails), with the blob's name as associated data (a blob copied
//! to another name does not open). The data key, wrapped by the KMS, is stored beside the
//! blob as `<name>.dek`; rotating the master key rewrites only those small objects.
//! Layout of a blob: `TNBE` | version (1) | nonce prefix (7) | chunks (plaintext <= 64 KiB
//! each, + 16-byte tag).

use std::io::{Error, ErrorKind};
use std::path::Path;
use std::sync::Arc;

use chacha20poly1305::aead::stream::{DecryptorBE32, EncryptorBE32};
use chacha20poly1305::aead::{KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key};
use futures_util::TryStreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path as BlobPath;
use object_store::prefix::PrefixStore;
use object_store::{ObjectStore, PutPayload, WriteMultipart};
use tokio::io::AsyncReadExt;

use crate::kms::{Kms, KmsError};
use crate::ServiceError;

/// Parts of a multipart upload (S3 needs at least 5 MiB per part).
const PART_SIZE: usize = 8 << 20;

/// Plaintext bytes per encrypted chunk.
const CHUNK: usize = 64 << 10;
/// Ciphertext bytes per full chunk.
const SEALED_CHUNK: usize = CHUNK + TAG;
const TAG: usize = 16;
const MAGIC: &[u8; 4] = b"TNBE";
const VERSION: u8 = 1;
const NONCE_PREFIX: usize = 7;
const HEADER: usize = MAGIC.len() + 1 + NONCE_PREFIX;
/// Suffix of the wrapped data key stored beside each blob.
const DEK_SUFFIX: &str = ".dek";
/// Largest wrapped data key read.
const DEK_LIMIT: u64 = 4 << 10;

/// Where blobs live, and the KMS their data keys are wrapped by.
#[derive(Debug, Clone)]
pub struct Blobs {
    store: Arc<dyn ObjectStore>,
    kms: Arc<dyn Kms>,
}

/// Encrypts a blob's chunks in order; the last chunk is sealed as last.
struct Sealer {
    enc: EncryptorBE32<ChaCha20Poly1305>,
    aad: Vec<u8>,
}

impl Sealer {
    /// A sealer with a fresh random nonce prefix; returns it and the blob's header.
    fn new(data_key: &[u8; 32], name: &BlobPath) -> (Self, Vec<u8>) {
        let prefix: [u8; NONCE_PREFIX] = rand::random();
        let cipher = ChaCha20Poly1305::new(Key::from_slice(data_key));
        let enc = EncryptorBE32::from_aead(cipher, prefix.as_slice().into());
        let mut header = MAGIC.to_vec();
        header.push(VERSION);
        header.extend_from_slice(&prefix);
        let aad = name.as_ref().as_bytes().to_vec();
        (Self { enc, aad }, header)
    }

    fn next(&mut self, chunk: &[u8]) -> std::io::Result<Vec<u8>> {
        self.enc
            .encrypt_next(Payload {
                msg: chunk,
                aad: &self.aad,
            })
            .map_err(|_| Error::other("encrypting a blob chunk failed"))
    }

    fn last(self, chunk: &[u8]) -> std::io::Result<Vec<u8>> {
        self.enc
            .encrypt_last(Payload {
                msg: chunk,
                aad: &self.aad,
            })
            .map_err(|_| Error::other("encrypting a blob chunk failed"))
    }
}

/// Decrypts a blob as its bytes arrive, chunk by chunk.
struct Opener {
    dec: Option<DecryptorBE32<ChaCha20Poly1305>>,
    data_key: [u8; 32],
    aad: Vec<u8>,
    buf: Vec<u8>,
    out: Vec<u8>,
}

fn corrupt(name: &str) -> Error {
    Error::new(
        ErrorKind::InvalidData,
        format!("blob {name} does not decrypt (altered, truncated or under another key)"),
    )
}

impl Opener {
    fn new(data_key: [u8; 32], name: &BlobPath, capacity: usize) -> Self {
        Self {
            dec: None,
            data_key,
            aad: name.as_ref().as_bytes().to_vec(),
            buf: Vec::with_capacity(SEALED_CHUNK + HEADER),
            out: Vec::with_capacity(capacity),
        }
    }

    fn push(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.buf.extend_from_slice(bytes);
        if self.dec.is_none() {
            if self.buf.len() < HEADER {
                return Ok(());
            }
            if &self.buf[..4] != MAGIC || self.buf[4] != VERSION {
                return Err(corrupt(&String::from_utf8_lossy(&self.aad)));
            }
            let cipher = ChaCha20Poly1305::new(Key::from_slice(&self.data_key));
            let prefix = self.buf[5..HEADER].to_vec();
            self.dec = Some(DecryptorBE32::from_aead(cipher, prefix.as_slice().into()));
            self.buf.drain(..HEADER);
        }
        // Keep the last chunk back: only the end of the stream says it is the last.
        while self.buf.len() > SEALED_CHUNK {
            let chunk: Vec<u8> = self.buf.drain(..SEALED_CHUNK).collect();
            let dec = self
                .dec
                .as_mut()
                .ok_or_else(|| Error::other("no decryptor"))?;
            let plain = dec
                .decrypt_next(Payload {
                    msg: &chunk,
                    aad: &self.aad,
                })
                .map_err(|_| corrupt(&String::from_utf8_lossy(&self.aad)))?;
            self.out.extend_from_slice(&plain);
        }
        Ok(())
    }

    fn finish(mut self) -> std::io::Result<Vec<u8>> {
        let name = String::from_utf8_lossy(&self.aad).into_owned();
        let dec = self.dec.take().ok_or_else(|| corrupt(&name))?;
        let plain = dec
            .decrypt_last(Payload {
                msg: &self.buf,
                aad: &self.aad,
            })
            .map_err(|_| corrupt(&name))?;
        self.out.extend_from_slice(&plain);
        Ok(self.out)
    }
}

fn dek_path(path: &BlobPath) -> BlobPath {
    BlobPath::from(format!("{path}{DEK_SUFFIX}"))
}

fn kms_error(path: &BlobPath, e: KmsError) -> Error {
    Error::other(format!("data key of blob {path}: {e}"))
}

fn io_error(e: object_store::Error) -> Error {
    match e {
        object_store::Error::NotFound { .. } => Error::new(ErrorKind::NotFound, e.to_string()),
        e => Error::other(e.to_string()),
    }
}

pub(crate) fn key_set(tenant: &str, id: &str) -> BlobPath {
    BlobPath::from(format!("{tenant}/{id}.keyset"))
}

pub(crate) fn task_input(tenant: &str, task: &str) -> BlobPath {
    BlobPath::from(format!("{tenant}/tasks/{task}.input"))
}

pub(crate) fn task_result(tenant: &str, task: &str, fence: i64) -> BlobPath {
    BlobPath::from(format!("{tenant}/tasks/{task}.{fence}.result"))
}

impl Blobs {
    /// Blobs in a local directory (created if missing).
    pub fn local(dir: &Path, kms: Arc<dyn Kms>) -> Result<Self, ServiceError> {
        std::fs::create_dir_all(dir).map_err(ServiceError::file(dir))?;
        let store =
            LocalFileSystem::new_with_prefix(dir).map_err(|source| ServiceError::ObjectStore {
                doing: format!("opening {}", dir.display()),
                source,
            })?;
        Ok(Self {
            store: Arc::new(store),
            kms,
        })
    }

    /// Blobs in S3-compatible storage: `s3://bucket[/prefix]`; credentials, region and
    /// endpoint from the usual `AWS_*` variables (`AWS_ENDPOINT` and `AWS_ALLOW_HTTP=true`
    /// for a local S3 such as MinIO).
    pub fn s3(url: &str, kms: Arc<dyn Kms>) -> Result<Self, ServiceError> {
        let rest = url.strip_prefix("s3://").ok_or_else(|| {
            ServiceError::Config(format!(
                "unsupported blob URL `{url}` (expected s3://bucket/prefix)"
            ))
        })?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let s3 = AmazonS3Builder::from_env()
            .with_bucket_name(bucket)
            .build()
            .map_err(|source| ServiceError::ObjectStore {
                doing: format!("configuring S3 for {url}"),
                source,
            })?;
        let prefix = prefix.trim_matches('/');
        let store: Arc<dyn ObjectStore> = if prefix.is_empty() {
            Arc::new(s3)
        } else {
            Arc::new(PrefixStore::new(s3, prefix))
        };
        Ok(Self { store, kms })
    }

    /// A new data key for `path`, stored wrapped beside it.
    async fn new_data_key(&self, path: &BlobPath) -> std::io::Result<[u8; 32]> {
        let (data_key, wrapped) = self
            .kms
            .generate(path.as_ref().as_bytes())
            .await
            .map_err(|e| kms_error(path, e))?;
        self.put_plain(&dek_path(path), wrapped).await?;
        Ok(data_key)
    }

    async fn data_key(&self, path: &BlobPath) -> std::io::Result<[u8; 32]> {
        let wrapped = self.get_plain(&dek_path(path), DEK_LIMIT).await?;
        self.kms
            .unwrap(&wrapped, path.as_ref().as_bytes())
            .await
            .map_err(|e| kms_error(path, e))
    }

    /// Stores a whole blob, encrypted.
    pub async fn put(&self, path: &BlobPath, bytes: impl AsRef<[u8]>) -> std::io::Result<()> {
        let bytes = bytes.as_ref();
        let data_key = self.new_data_key(path).await?;
        let (mut sealer, mut out) = Sealer::new(&data_key, path);
        out.reserve(bytes.len() + bytes.len() / CHUNK * TAG + TAG);
        let mut chunks = bytes.chunks(CHUNK).peekable();
        while let Some(c) = chunks.next() {
            if chunks.peek().is_some() {
                out.extend_from_slice(&sealer.next(c)?);
            } else {
                out.extend_from_slice(&sealer.last(c)?);
                return self.put_plain(path, out).await;
            }
        }
        out.extend_from_slice(&sealer.last(&[])?);
        self.put_plain(path, out).await
    }

    /// Stores a blob as is (audit checkpoints: signed, public, readable without the KMS).
    pub async fn put_plain(&self, path: &BlobPath, bytes: Vec<u8>) -> std::io::Result<()> {
        self.store
            .put(path, PutPayload::from(bytes))
            .await
            .map(drop)
            .map_err(io_error)
    }

    /// Stores a local file as an encrypted blob, streamed in chunks and parts (never whole
    /// in memory).
    pub async fn put_file(&self, path: &BlobPath, file: &Path) -> std::io::Result<()> {
        let mut f = tokio::fs::File::open(file).await?;
        let data_key = self.new_data_key(path).await?;
        let (mut sealer, header) = Sealer::new(&data_key, path);
        let upload = self.store.put_multipart(path).await.map_err(io_error)?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_SIZE);
        writer.write(&header);
        // One chunk is held back until the next read says whether it is the last.
        let mut pending: Vec<u8> = Vec::with_capacity(CHUNK);
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = match read_full(&mut f, &mut buf).await {
                Ok(n) => n,
                Err(e) => {
                    let _ = writer.abort().await;
                    return Err(e);
                }
            };
            if n == 0 {
                break;
            }
            if !pending.is_empty() {
                writer.wait_for_capacity(4).await.map_err(io_error)?;
                writer.write(&sealer.next(&pending)?);
            }
            pending.clear();
            pending.extend_from_slice(&buf[..n]);
        }
        writer.write(&sealer.last(&pending)?);
        writer.finish().await.map(drop).map_err(io_error)
    }

    /// Reads and decrypts a whole blob of at most `limit` plaintext bytes, chunk by chunk
    /// as it arrives.
    pub async fn get(&self, path: &BlobPath, limit: u64) -> std::io::Result<Vec<u8>> {
        let data_key = self.data_key(path).await?;
        let r = self.store.get(path).await.map_err(io_error)?;
        let chunks = r.meta.size.div_ceil(SEALED_CHUNK as u64).max(1);
        let plain_size = r
            .meta
            .size
            .saturating_sub(HEADER as u64 + chunks * TAG as u64);
        if plain_size > limit {
            return Err(Error::other(format!(
                "blob {path} is {plain_size} bytes, over its {limit}-byte limit"
            )));
        }
        let mut opener = Opener::new(data_key, path, plain_size as usize);
        let mut stream = r.into_stream();
        while let Some(bytes) = stream.try_next().await.map_err(io_error)? {
            opener.push(&bytes)?;
        }
        opener.finish()
    }

    /// Reads a blob stored with `put_plain`.
    pub async fn get_plain(&self, path: &BlobPath, limit: u64) -> std::io::Result<Vec<u8>> {
        let r = self.store.get(path).await.map_err(io_error)?;
        if r.meta.size > limit {
            return Err(Error::other(format!(
                "blob {path} is {} bytes, over its {limit}-byte limit",
                r.meta.size
            )));
        }
        Ok(r.bytes().await.map_err(io_error)?.to_vec())
    }

    /// Re-wraps every blob's data key under the KMS's current master key (after a
    /// rotation); blobs themselves are not touched. Returns how many were re-wrapped.
    pub async fn rewrap_all(&self) -> std::io::Result<usize> {
        let all: Vec<_> = self
            .store
            .list(None)
            .try_collect()
            .await
            .map_err(io_error)?;
        let mut n = 0;
        for m in all {
            let name = m.location.as_ref();
            let Some(blob) = name.strip_suffix(DEK_SUFFIX) else {
                continue;
            };
            let blob = BlobPath::from(blob);
            let wrapped = self.get_plain(&m.location, DEK_LIMIT).await?;
            let new = self
                .kms
                .rewrap(&wrapped, blob.as_ref().as_bytes())
                .await
                .map_err(|e| kms_error(&blob, e))?;
            if let Some(new) = new {
                self.put_plain(&m.location, new).await?;
                n += 1;
            }
        }
        Ok(n)
    }

    /// The KMS the data keys are wrapped by.
    pub fn kms(&self) -> &Arc<dyn Kms> {
        &self.kms
    }

    /// Removes a blob and its data key; one already gone is fine.
    pub async fn remove(&self, path: &BlobPath) -> std::io::Result<()> {
        for p in [path.clone(), dek_path(path)] {
            match self.store.delete(&p).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(io_error(e)),
            }
        }
        Ok(())
    }

    /// Number of blobs whose name ends with `suffix` (for operators and tests).
    pub async fn count(&self, suffix: &str) -> std::io::Result<usize> {
        let all: Vec<_> = self
            .store
            .list(None)
            .try_collect()
            .await
            .map_err(io_error)?;
        Ok(all
            .iter()
            .map(|m| m.location.as_ref())
            .filter(|n| n.ends_with(suffix) && !n.ends_with(DEK_SUFFIX))
            .count())
    }

    /// The names of the blobs under `prefix`, sorted.
    pub async fn list(&self, prefix: &str) -> std::io::Result<Vec<String>> {
        let prefix = BlobPath::from(prefix);
        let all: Vec<_> = self
            .store
            .list(Some(&prefix))
            .try_collect()
            .await
            .map_err(io_error)?;
        let mut names: Vec<String> = all
            .into_iter()
            .map(|m| m.location.to_string())
            .filter(|n| !n.ends_with(DEK_SUFFIX))
            .collect();
        names.sort();
        Ok(names)
    }

    /// Removes the key set blob of a tenant (tests simulate a lost blob with it).
    pub async fn remove_key_set(&self, tenant: &str, id: &str) -> std::io::Result<()> {
        self.remove(&key_set(tenant, id)).await
    }
}

/// Reads until `buf` is full or the file ends; returns the bytes read.
async fn read_full(f: &mut tokio::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        let m = f.read(&mut buf[n..]).await?;
        if m == 0 {
            break;
        }
        n += m;
    }
    Ok(n)
}
