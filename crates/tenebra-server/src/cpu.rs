//! CPU work on untrusted documents: parsing, validating, planning and costing circuits,
//! importing and compiling models. It runs off the async threads (`spawn_blocking`), so a
//! large document never stalls other requests, and behind two gates: at most
//! [`PER_TENANT`] jobs of one tenant at a time, and at most one per core over all tenants,
//! so one tenant cannot take every thread. A tenant whose jobs are all busy waits at most
//! [`WAIT`], then gets 429 `too_many_requests`. Each job's own size is bounded by the
//! document limits (circuit, model and ONNX limits), which bounds its time.
//!
//! Key set uploads (tens of MiB each, spooled to disk before they are checked) have their
//! own slots: [`UPLOADS_PER_TENANT`] at a time per tenant and [`UPLOADS_TOTAL`] over all;
//! one more is 429 `too_many_uploads` at once, before its body is read.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::StatusCode;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::ApiError;

/// Jobs one tenant may run at once.
pub const PER_TENANT: usize = 2;
/// How long a job waits for its tenant's turn before the request is refused.
pub const WAIT: Duration = Duration::from_secs(10);

/// Uploads one tenant may stream at once.
pub const UPLOADS_PER_TENANT: usize = 2;
/// Uploads the process streams at once.
pub const UPLOADS_TOTAL: usize = 8;

/// One semaphore per tenant, made on first use (tenants are made by operators, so the map
/// is as large as the tenant table).
#[derive(Debug, Clone)]
struct PerTenant {
    permits: usize,
    map: Arc<Mutex<HashMap<String, Arc<Semaphore>>>>,
}

impl PerTenant {
    fn new(permits: usize) -> Self {
        Self {
            permits,
            map: Arc::default(),
        }
    }

    fn of(&self, tenant: &str) -> Arc<Semaphore> {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(tenant.to_owned())
            .or_insert_with(|| Arc::new(Semaphore::new(self.permits)))
            .clone()
    }
}

/// Long polls (`GET /v1/tasks/{id}?wait=`) one tenant may hold open at once; more answer at
/// once, as without `wait`.
pub const LONG_POLLS_PER_TENANT: usize = 32;

/// A held upload slot (released when dropped).
pub struct UploadSlot {
    _own: OwnedSemaphorePermit,
    _all: OwnedSemaphorePermit,
}

/// The gates.
#[derive(Debug, Clone)]
pub struct CpuGate {
    total: Arc<Semaphore>,
    tenants: PerTenant,
    uploads_total: Arc<Semaphore>,
    uploads: PerTenant,
    long_polls: PerTenant,
}

impl Default for CpuGate {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Self {
            total: Arc::new(Semaphore::new(cores)),
            tenants: PerTenant::new(PER_TENANT),
            uploads_total: Arc::new(Semaphore::new(UPLOADS_TOTAL)),
            uploads: PerTenant::new(UPLOADS_PER_TENANT),
            long_polls: PerTenant::new(LONG_POLLS_PER_TENANT),
        }
    }
}

impl CpuGate {
    /// A long-poll slot for `tenant`, if one is free.
    pub fn long_poll_slot(&self, tenant: &str) -> Option<OwnedSemaphorePermit> {
        self.long_polls.of(tenant).try_acquire_owned().ok()
    }

    /// An upload slot for `tenant` now, or 429 `too_many_uploads`.
    pub fn upload_slot(&self, tenant: &str) -> Result<UploadSlot, ApiError> {
        let busy = |m: String| {
            let mut e = ApiError::new(StatusCode::TOO_MANY_REQUESTS, "too_many_uploads", m);
            e.retry_after = Some(5);
            e
        };
        let own = self.uploads.of(tenant).try_acquire_owned().map_err(|_| {
            busy(format!(
                "this tenant already has {UPLOADS_PER_TENANT} key set uploads in progress"
            ))
        })?;
        let all = self
            .uploads_total
            .clone()
            .try_acquire_owned()
            .map_err(|_| busy("the server is receiving as many uploads as it takes".into()))?;
        Ok(UploadSlot {
            _own: own,
            _all: all,
        })
    }

    /// Runs `job` for `tenant` on a blocking thread, once both gates let it.
    pub async fn run<T, F>(&self, tenant: &str, job: F) -> Result<T, ApiError>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let mine = self.tenants.of(tenant);
        let busy = || {
            let mut e = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_requests",
                format!(
                    "this tenant already has {PER_TENANT} circuits or models being checked; \
                     try again shortly"
                ),
            );
            e.retry_after = Some(1);
            e
        };
        let _own = tokio::time::timeout(WAIT, mine.acquire_owned())
            .await
            .map_err(|_| busy())?
            .map_err(|e| ApiError::internal(&e))?;
        let _core = self
            .total
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| ApiError::internal(&e))?;
        tokio::task::spawn_blocking(job)
            .await
            .map_err(|e| ApiError::internal(&e))
    }
}
