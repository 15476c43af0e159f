//! Key sets: generation on the client, conformance-checked loading on the server.
//!
//! A key set directory holds:
//! - `client.key`: the secret `ClientKey` (never leaves the client);
//! - `server.key`: the `CompressedServerKey` (the evaluation key, ~57 MiB, uploaded once);
//! - `public.key`: the `CompactPublicKey` inputs are encrypted with;
//! - `keyset.json`: format version, scheme, parameters and the key set id.
//!
//! All keys use `tfhe::ConfigBuilder::default()` parameters (128-bit security, p_fail <=
//! 2^-128) and are stored with `tfhe::safe_serialization` (versioned, size-limited), read back
//! with conformance checks against those parameters.

use std::fs;
use std::io::{Read, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tfhe::safe_serialization::{safe_deserialize, safe_deserialize_conformant, safe_serialize};
use tfhe::shortint::parameters::{
    CompactPublicKeyEncryptionParameters, PARAM_MESSAGE_2_CARRY_2_KS_PBS_TUNIFORM_2M128,
};
use tfhe::{ClientKey, CompactPublicKey, CompressedServerKey, Config, ConfigBuilder, ServerKey};

use crate::EngineError;

/// Largest accepted serialized compressed server key.
pub const SERVER_KEY_LIMIT: u64 = 256 << 20;
/// Largest accepted serialized public key.
pub const PUBLIC_KEY_LIMIT: u64 = 16 << 20;
/// Largest accepted serialized client key.
pub const CLIENT_KEY_LIMIT: u64 = 64 << 20;

/// Version of the key set directory layout.
pub const KEYSET_VERSION: u32 = 1;
/// Name of the parameter set every key uses.
pub const PARAMETERS: &str = "PARAM_MESSAGE_2_CARRY_2_KS_PBS_TUNIFORM_2M128";

pub const CLIENT_KEY_FILE: &str = "client.key";
pub const SERVER_KEY_FILE: &str = "server.key";
pub const PUBLIC_KEY_FILE: &str = "public.key";
pub const MANIFEST_FILE: &str = "keyset.json";

/// The tfhe-rs configuration of every key set: the library defaults.
pub fn config() -> Config {
    ConfigBuilder::default().build()
}

/// Parameters a compact public key and the compact lists it encrypts must conform to.
pub fn public_key_parameters() -> Result<CompactPublicKeyEncryptionParameters, EngineError> {
    PARAM_MESSAGE_2_CARRY_2_KS_PBS_TUNIFORM_2M128
        .try_into()
        .map_err(|e| EngineError::Internal(format!("compact public key parameters: {e:?}")))
}

/// Identifies a key set: SHA-256 over the serialized server key then the serialized public
/// key. Uploading the same files gives the same id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeySetId(pub [u8; 32]);

impl KeySetId {
    pub fn of(server_key: &[u8], public_key: &[u8]) -> Self {
        let mut h = Sha256::new();
        h.update(server_key);
        h.update(public_key);
        Self(h.finalize().into())
    }
}

impl std::fmt::Display for KeySetId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl std::str::FromStr for KeySetId {
    type Err = EngineError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out)
            .map_err(|_| EngineError::BadInput(format!("`{s}` is not a key set id")))?;
        Ok(Self(out))
    }
}

/// The manifest of a key set directory.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub version: u32,
    pub scheme: String,
    pub parameters: String,
    pub key_set_id: String,
}

/// The client's keys: the secret key and the public key inputs are encrypted with.
pub struct ClientKeys {
    pub(crate) client: ClientKey,
    pub(crate) public: tfhe::integer::public_key::CompactPublicKey,
    id: KeySetId,
}

impl std::fmt::Debug for ClientKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        f.debug_struct("ClientKeys").field("id", &self.id).finish()
    }
}

fn serialize<T: serde::Serialize + tfhe::Versionize + tfhe::named::Named>(
    value: &T,
    limit: u64,
) -> Result<Vec<u8>, EngineError> {
    let mut out = Vec::new();
    safe_serialize(value, &mut out, limit)
        .map_err(|e| EngineError::Internal(format!("serializing {}: {e}", T::NAME)))?;
    Ok(out)
}

fn write_file(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), EngineError> {
    let path = dir.join(name);
    let io = |e: std::io::Error| EngineError::Io(format!("{}: {e}", path.display()));
    let mut f = fs::File::create(&path).map_err(io)?;
    f.write_all(bytes).map_err(io)?;
    f.sync_all().map_err(io)
}

/// Writes a secret file readable by its owner only: written to a temporary file created
/// 0600 beside it, then renamed into place, so the secret is never readable by others, not
/// even for a moment, and a crash leaves the old file or the new one, never half of one.
pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> Result<(), EngineError> {
    let io = |e: std::io::Error| EngineError::Io(format!("{}: {e}", path.display()));
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
    let mut f = tempfile::NamedTempFile::new_in(dir.unwrap_or(Path::new("."))).map_err(io)?;
    f.write_all(bytes).map_err(io)?;
    f.as_file().sync_all().map_err(io)?;
    f.persist(path).map_err(|e| io(e.error))?;
    Ok(())
}

/// Reads a file of at most `limit` bytes.
pub fn read_limited(path: &Path, limit: u64) -> Result<Vec<u8>, EngineError> {
    let io = |e: std::io::Error| EngineError::Io(format!("{}: {e}", path.display()));
    let f = fs::File::open(path).map_err(io)?;
    let mut buf = Vec::new();
    f.take(limit + 1).read_to_end(&mut buf).map_err(io)?;
    if buf.len() as u64 > limit {
        return Err(EngineError::BadInput(format!(
            "{} is larger than the {limit}-byte limit",
            path.display()
        )));
    }
    Ok(buf)
}

impl ClientKeys {
    /// Generates a fresh key set and writes it to `dir` (created if missing). Takes seconds.
    pub fn generate(dir: &Path) -> Result<Self, EngineError> {
        fs::create_dir_all(dir).map_err(|e| EngineError::Io(format!("{}: {e}", dir.display())))?;
        let client = ClientKey::generate(config());
        let server = CompressedServerKey::new(&client);
        let public = CompactPublicKey::new(&client);
        let server_bytes = serialize(&server, SERVER_KEY_LIMIT)?;
        let public_bytes = serialize(&public, PUBLIC_KEY_LIMIT)?;
        let client_bytes = serialize(&client, CLIENT_KEY_LIMIT)?;
        let id = KeySetId::of(&server_bytes, &public_bytes);
        write_file(dir, SERVER_KEY_FILE, &server_bytes)?;
        write_file(dir, PUBLIC_KEY_FILE, &public_bytes)?;
        write_private(&dir.join(CLIENT_KEY_FILE), &client_bytes)?;
        let public = public.into_raw_parts().0;
        let manifest = Manifest {
            version: KEYSET_VERSION,
            scheme: "tfhe".into(),
            parameters: PARAMETERS.into(),
            key_set_id: id.to_string(),
        };
        let json = serde_json::to_vec_pretty(&manifest)
            .map_err(|e| EngineError::Internal(e.to_string()))?;
        write_file(dir, MANIFEST_FILE, &json)?;
        Ok(Self { client, public, id })
    }

    /// Loads the client side of a key set directory.
    pub fn load(dir: &Path) -> Result<Self, EngineError> {
        let manifest = read_manifest(dir)?;
        let client_bytes = read_limited(&dir.join(CLIENT_KEY_FILE), CLIENT_KEY_LIMIT)?;
        let client: ClientKey = safe_deserialize(client_bytes.as_slice(), CLIENT_KEY_LIMIT)
            .map_err(|e| bad_key(CLIENT_KEY_FILE, &e))?;
        let expected: tfhe::shortint::AtomicPatternParameters =
            PARAM_MESSAGE_2_CARRY_2_KS_PBS_TUNIFORM_2M128.into();
        if client.computation_parameters() != expected {
            return Err(EngineError::BadInput(format!(
                "{CLIENT_KEY_FILE} was generated with other parameters than {PARAMETERS}"
            )));
        }
        let public_bytes = read_limited(&dir.join(PUBLIC_KEY_FILE), PUBLIC_KEY_LIMIT)?;
        let public = load_public_key(&public_bytes)?.into_raw_parts().0;
        let id: KeySetId = manifest.key_set_id.parse()?;
        Ok(Self { client, public, id })
    }

    pub fn id(&self) -> KeySetId {
        self.id
    }

    /// The tfhe-rs client key (for hand-written tfhe-rs code, e.g. benchmark baselines).
    pub fn high_level(&self) -> &ClientKey {
        &self.client
    }
}

fn bad_key(what: &str, e: &str) -> EngineError {
    EngineError::BadInput(format!(
        "{what} is not a valid key for this server's parameters ({PARAMETERS}): {e}"
    ))
}

fn read_manifest(dir: &Path) -> Result<Manifest, EngineError> {
    let bytes = read_limited(&dir.join(MANIFEST_FILE), 64 << 10)?;
    let m: Manifest = serde_json::from_slice(&bytes)
        .map_err(|e| EngineError::BadInput(format!("{MANIFEST_FILE}: {e}")))?;
    if m.version != KEYSET_VERSION || m.scheme != "tfhe" || m.parameters != PARAMETERS {
        return Err(EngineError::BadInput(format!(
            "{}: key set version {} / scheme {} / parameters {} is not supported \
             (expected {KEYSET_VERSION} / tfhe / {PARAMETERS})",
            dir.join(MANIFEST_FILE).display(),
            m.version,
            m.scheme,
            m.parameters
        )));
    }
    Ok(m)
}

fn load_public_key(bytes: &[u8]) -> Result<CompactPublicKey, EngineError> {
    safe_deserialize_conformant::<CompactPublicKey>(
        bytes,
        PUBLIC_KEY_LIMIT,
        &public_key_parameters()?,
    )
    .map_err(|e| bad_key(PUBLIC_KEY_FILE, &e))
}

/// The server's side of a key set: the decompressed evaluation key (~172 MiB in memory).
pub struct ServerKeys {
    pub(crate) server: ServerKey,
    id: KeySetId,
}

impl std::fmt::Debug for ServerKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerKeys").field("id", &self.id).finish()
    }
}

impl ServerKeys {
    /// Checks uploaded key bytes (size limit, version, conformance with this server's
    /// parameters) and decompresses the evaluation key (about a second).
    pub fn from_bytes(server_key: &[u8], public_key: &[u8]) -> Result<Self, EngineError> {
        let compressed = check_server_key(server_key)?;
        load_public_key(public_key)?;
        let id = KeySetId::of(server_key, public_key);
        Ok(Self {
            server: compressed.decompress(),
            id,
        })
    }

    /// Loads the server side of a key set directory (no secret key is read).
    pub fn load(dir: &Path) -> Result<Self, EngineError> {
        let server = read_limited(&dir.join(SERVER_KEY_FILE), SERVER_KEY_LIMIT)?;
        let public = read_limited(&dir.join(PUBLIC_KEY_FILE), PUBLIC_KEY_LIMIT)?;
        Self::from_bytes(&server, &public)
    }

    pub fn id(&self) -> KeySetId {
        self.id
    }

    /// The tfhe-rs high-level server key (for hand-written tfhe-rs code, e.g. baselines).
    pub fn high_level(&self) -> &ServerKey {
        &self.server
    }

    /// The integer-level key every operation runs with.
    pub fn integer(&self) -> &tfhe::integer::ServerKey {
        self.server.as_ref()
    }
}

/// Checks a serialized compressed server key without decompressing it.
pub fn check_server_key(bytes: &[u8]) -> Result<CompressedServerKey, EngineError> {
    // The conformance parameter type is not exported; `From<Config>` builds it.
    safe_deserialize_conformant::<CompressedServerKey>(bytes, SERVER_KEY_LIMIT, &config().into())
        .map_err(|e| bad_key(SERVER_KEY_FILE, &e))
}

/// Marker of a key set upload: `TNBK`, version `u32`, then the two lengths and the files.
const UPLOAD_MAGIC: &[u8; 4] = b"TNBK";
/// Bytes before the keys in an upload.
pub const UPLOAD_HEADER: usize = 24;
/// Largest key set upload.
pub const UPLOAD_LIMIT: u64 = SERVER_KEY_LIMIT + PUBLIC_KEY_LIMIT + UPLOAD_HEADER as u64;

/// Packs a key set's server and public keys into one upload body.
pub fn pack_upload(server_key: &[u8], public_key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(UPLOAD_HEADER + server_key.len() + public_key.len());
    out.extend_from_slice(UPLOAD_MAGIC);
    out.extend_from_slice(&1u32.to_le_bytes());
    out.extend_from_slice(&(server_key.len() as u64).to_le_bytes());
    out.extend_from_slice(&(public_key.len() as u64).to_le_bytes());
    out.extend_from_slice(server_key);
    out.extend_from_slice(public_key);
    out
}

/// Reads a key set directory's server and public keys as one upload body.
pub fn read_upload(dir: &Path) -> Result<Vec<u8>, EngineError> {
    let server = read_limited(&dir.join(SERVER_KEY_FILE), SERVER_KEY_LIMIT)?;
    let public = read_limited(&dir.join(PUBLIC_KEY_FILE), PUBLIC_KEY_LIMIT)?;
    Ok(pack_upload(&server, &public))
}

/// Splits an upload body into the server and public keys.
pub fn unpack_upload(bytes: &[u8]) -> Result<(&[u8], &[u8]), EngineError> {
    let bad = |m: &str| EngineError::BadInput(format!("not a key set upload: {m}"));
    if bytes.len() < UPLOAD_HEADER || &bytes[..4] != UPLOAD_MAGIC {
        return Err(bad("it does not start with the key set marker"));
    }
    let word = |at: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&bytes[at..at + 8]);
        u64::from_le_bytes(b)
    };
    if bytes[4..8] != 1u32.to_le_bytes() {
        return Err(bad("unsupported version"));
    }
    let (sl, pl) = (word(8), word(16));
    let rest = (bytes.len() - UPLOAD_HEADER) as u64;
    if sl.checked_add(pl) != Some(rest) {
        return Err(bad("the lengths do not match the body (truncated?)"));
    }
    let (server, public) = bytes[UPLOAD_HEADER..].split_at(sl as usize);
    Ok((server, public))
}

/// A reader that hashes what passes through it.
struct Hashing<'a, R> {
    inner: R,
    hasher: &'a mut Sha256,
}

impl<R: Read> Read for Hashing<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// Checks both keys of an upload stored in a file (size limits, versions, conformance with
/// this server's parameters) without decompressing anything, and returns the key set's id.
/// The file is read as a stream: its bytes are never held in memory beside the keys.
pub fn check_upload_file(path: &Path) -> Result<KeySetId, EngineError> {
    let io = |e: std::io::Error| EngineError::Io(format!("{}: {e}", path.display()));
    let bad = |m: &str| EngineError::BadInput(format!("not a key set upload: {m}"));
    let file = fs::File::open(path).map_err(io)?;
    let len = file.metadata().map_err(io)?.len();
    if len > UPLOAD_LIMIT {
        return Err(bad("larger than the upload limit"));
    }
    let mut reader = std::io::BufReader::with_capacity(1 << 16, file);
    let mut header = [0u8; UPLOAD_HEADER];
    reader
        .read_exact(&mut header)
        .map_err(|_| bad("it does not start with the key set marker"))?;
    if &header[..4] != UPLOAD_MAGIC {
        return Err(bad("it does not start with the key set marker"));
    }
    if header[4..8] != 1u32.to_le_bytes() {
        return Err(bad("unsupported version"));
    }
    let word = |at: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&header[at..at + 8]);
        u64::from_le_bytes(b)
    };
    let (sl, pl) = (word(8), word(16));
    if sl.checked_add(pl) != Some(len - UPLOAD_HEADER as u64) {
        return Err(bad("the lengths do not match the body (truncated?)"));
    }
    let mut hasher = Sha256::new();
    // Each key is read from its own span; what the deserializer leaves is hashed too, so
    // the id is the same as `KeySetId::of` over the two files.
    let mut server = Hashing {
        inner: (&mut reader).take(sl),
        hasher: &mut hasher,
    };
    safe_deserialize_conformant::<CompressedServerKey>(
        &mut server,
        SERVER_KEY_LIMIT,
        &config().into(),
    )
    .map_err(|e| bad_key(SERVER_KEY_FILE, &e))?;
    std::io::copy(&mut server, &mut std::io::sink()).map_err(io)?;
    let mut public = Hashing {
        inner: (&mut reader).take(pl),
        hasher: &mut hasher,
    };
    safe_deserialize_conformant::<CompactPublicKey>(
        &mut public,
        PUBLIC_KEY_LIMIT,
        &public_key_parameters()?,
    )
    .map_err(|e| bad_key(PUBLIC_KEY_FILE, &e))?;
    std::io::copy(&mut public, &mut std::io::sink()).map_err(io)?;
    Ok(KeySetId(hasher.finalize().into()))
}
