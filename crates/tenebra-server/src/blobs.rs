//! Where blobs live under `<data dir>/blobs`, and the small file operations on them.
//!
//! Layout: `<tenant>/<key set>.keyset`, `<tenant>/tasks/<task>.input`, and
//! `<tenant>/tasks/<task>.<fence>.result` (the claim's fence in the name, so a worker that
//! lost its lease never touches the result of the worker that took over). Files are written
//! to a temporary name and renamed, so a reader never sees half a blob.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use tenebra_store::new_id;

pub(crate) fn key_set(root: &Path, tenant: &str, id: &str) -> PathBuf {
    root.join(tenant).join(format!("{id}.keyset"))
}

pub(crate) fn task_input(root: &Path, tenant: &str, task: &str) -> PathBuf {
    root.join(tenant)
        .join("tasks")
        .join(format!("{task}.input"))
}

pub(crate) fn task_result(root: &Path, tenant: &str, task: &str, fence: i64) -> PathBuf {
    root.join(tenant)
        .join("tasks")
        .join(format!("{task}.{fence}.result"))
}

/// Writes `bytes` to `path` atomically (temporary file in the same directory, then rename).
pub(crate) async fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| std::io::Error::new(ErrorKind::InvalidInput, "blob path without parent"))?;
    tokio::fs::create_dir_all(dir).await?;
    let tmp = dir.join(format!(".{}.tmp", new_id("w")));
    if let Err(e) = tokio::fs::write(&tmp, bytes).await {
        let _ = tokio::fs::remove_file(&tmp).await;
        return Err(e);
    }
    tokio::fs::rename(&tmp, path).await
}

/// Removes a blob; one already gone is fine.
pub(crate) async fn remove(path: &Path) -> std::io::Result<()> {
    match tokio::fs::remove_file(path).await {
        Err(e) if e.kind() != ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}
