//! The blob store: key sets, task inputs and results, on the local filesystem (embedded
//! mode, or a filesystem every node mounts) or in S3-compatible object storage (cluster).
//!
//! Layout: `<tenant>/<key set>.keyset`, `<tenant>/tasks/<task>.input`, and
//! `<tenant>/tasks/<task>.<fence>.result` (the claim's fence in the name, so a worker that
//! lost its lease never touches the result of the worker that took over). Writes are whole
//! objects (the local store writes a temporary file and renames it), so a reader never sees
//! half a blob.

use std::io::{Error, ErrorKind};
use std::path::Path;
use std::sync::Arc;

use futures_util::TryStreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path as BlobPath;
use object_store::prefix::PrefixStore;
use object_store::{ObjectStore, PutPayload, WriteMultipart};
use tokio::io::AsyncReadExt;

/// Parts of a multipart upload (S3 needs at least 5 MiB per part).
const PART_SIZE: usize = 8 << 20;

/// Where blobs live.
#[derive(Debug, Clone)]
pub struct Blobs {
    store: Arc<dyn ObjectStore>,
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
    pub fn local(dir: &Path) -> Result<Self, String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        let store = LocalFileSystem::new_with_prefix(dir)
            .map_err(|e| format!("opening {}: {e}", dir.display()))?;
        Ok(Self {
            store: Arc::new(store),
        })
    }

    /// Blobs in S3-compatible storage: `s3://bucket[/prefix]`; credentials, region and
    /// endpoint from the usual `AWS_*` variables (`AWS_ENDPOINT` and `AWS_ALLOW_HTTP=true`
    /// for a local S3 such as MinIO).
    pub fn s3(url: &str) -> Result<Self, String> {
        let rest = url
            .strip_prefix("s3://")
            .ok_or_else(|| format!("unsupported blob URL `{url}` (expected s3://bucket/prefix)"))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let s3 = AmazonS3Builder::from_env()
            .with_bucket_name(bucket)
            .build()
            .map_err(|e| format!("configuring S3 for {url}: {e}"))?;
        let prefix = prefix.trim_matches('/');
        let store: Arc<dyn ObjectStore> = if prefix.is_empty() {
            Arc::new(s3)
        } else {
            Arc::new(PrefixStore::new(s3, prefix))
        };
        Ok(Self { store })
    }

    /// Stores a whole blob.
    pub async fn put(&self, path: &BlobPath, bytes: Vec<u8>) -> std::io::Result<()> {
        self.store
            .put(path, PutPayload::from(bytes))
            .await
            .map(drop)
            .map_err(io_error)
    }

    /// Stores a local file as a blob, streamed in parts (never whole in memory).
    pub async fn put_file(&self, path: &BlobPath, file: &Path) -> std::io::Result<()> {
        let mut f = tokio::fs::File::open(file).await?;
        let upload = self.store.put_multipart(path).await.map_err(io_error)?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_SIZE);
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = match f.read(&mut buf).await {
                Ok(n) => n,
                Err(e) => {
                    let _ = writer.abort().await;
                    return Err(e);
                }
            };
            if n == 0 {
                break;
            }
            writer.wait_for_capacity(4).await.map_err(io_error)?;
            writer.write(&buf[..n]);
        }
        writer.finish().await.map(drop).map_err(io_error)
    }

    /// Reads a whole blob of at most `limit` bytes.
    pub async fn get(&self, path: &BlobPath, limit: u64) -> std::io::Result<Vec<u8>> {
        let r = self.store.get(path).await.map_err(io_error)?;
        if r.meta.size > limit {
            return Err(Error::other(format!(
                "blob {path} is {} bytes, over its {limit}-byte limit",
                r.meta.size
            )));
        }
        Ok(r.bytes().await.map_err(io_error)?.to_vec())
    }

    /// Removes a blob; one already gone is fine.
    pub async fn remove(&self, path: &BlobPath) -> std::io::Result<()> {
        match self.store.delete(path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(io_error(e)),
        }
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
            .filter(|m| m.location.as_ref().ends_with(suffix))
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
        let mut names: Vec<String> = all.into_iter().map(|m| m.location.to_string()).collect();
        names.sort();
        Ok(names)
    }

    /// Removes the key set blob of a tenant (tests simulate a lost blob with it).
    pub async fn remove_key_set(&self, tenant: &str, id: &str) -> std::io::Result<()> {
        self.remove(&key_set(tenant, id)).await
    }
}
