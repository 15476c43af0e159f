//! Files, keys and the runtime the commands share.

use std::io::Read;
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde_json::Value;
use tenebra_client::ClientKeys;
use tenebra_engine::ServerKeys;

/// Largest JSON input file read.
pub const JSON_LIMIT: u64 = 16 << 20;
/// Largest encrypted bundle read.
pub const BUNDLE_LIMIT: u64 = 512 << 20;

/// The multi-threaded runtime every async command runs on.
pub fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

/// The key set in `dir`, generated there first if missing, with its evaluation key loaded.
pub fn ensure_keys(dir: &Path) -> Result<(ClientKeys, ServerKeys)> {
    if !dir.join(tenebra_engine::keys::MANIFEST_FILE).exists() {
        eprintln!("generating a key set in {} ...", dir.display());
        ClientKeys::generate(dir)?;
    }
    let client = load_client_keys(dir)?;
    eprintln!("loading the evaluation key (server side) ...");
    Ok((client, ServerKeys::load(dir)?))
}

pub fn load_client_keys(dir: &Path) -> Result<ClientKeys> {
    ClientKeys::load(dir).with_context(|| format!("loading keys from {}", dir.display()))
}

/// The file at `path` (`-`: stdin), refused past `limit` bytes.
pub fn read_limited(path: &Path, limit: u64) -> Result<Vec<u8>> {
    let mut buf = Vec::new();
    if path == Path::new("-") {
        std::io::stdin().take(limit + 1).read_to_end(&mut buf)?;
    } else {
        let f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
        f.take(limit + 1)
            .read_to_end(&mut buf)
            .with_context(|| format!("reading {}", path.display()))?;
    }
    if buf.len() as u64 > limit {
        bail!("{} is larger than the {limit}-byte limit", path.display());
    }
    Ok(buf)
}

pub fn read_json(path: &Path) -> Result<Value> {
    let bytes = read_limited(path, JSON_LIMIT)?;
    serde_json::from_slice(&bytes).with_context(|| format!("{} is not valid JSON", path.display()))
}

pub fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))
}

/// Completes on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}

/// The zip Lambda runs: the runtime as `bootstrap` (executable) and `circuits/*.json`.
pub fn write_lambda_zip(path: &Path, exe: &Path, circuits: &[(String, Vec<u8>)]) -> Result<()> {
    use std::io::Write;
    use zip::write::SimpleFileOptions;
    let file =
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut z = zip::ZipWriter::new(file);
    let deflated =
        SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
    z.start_file("bootstrap", deflated.unix_permissions(0o755))?;
    let mut binary = std::fs::File::open(exe).context("reading this binary")?;
    std::io::copy(&mut binary, &mut z)?;
    z.add_directory("circuits/", SimpleFileOptions::default())?;
    for (file, json) in circuits {
        z.start_file(format!("circuits/{file}"), deflated.unix_permissions(0o644))?;
        z.write_all(json)?;
    }
    z.finish()?;
    Ok(())
}
