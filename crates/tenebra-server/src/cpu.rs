//! CPU work on untrusted documents: parsing, validating, planning and costing circuits,
//! importing and compiling models. It runs off the async threads (`spawn_blocking`), so a
//! large document never stalls other requests, and behind two gates: at most
//! [`PER_TENANT`] jobs of one tenant at a time, and at most one per core over all tenants,
//! so one tenant cannot take every thread. A tenant whose jobs are all busy waits at most
//! [`WAIT`], then gets 429 `too_many_requests`. Each job's own size is bounded by the
//! document limits (circuit, model and ONNX limits), which bounds its time.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::StatusCode;
use tokio::sync::Semaphore;

use crate::ApiError;

/// Jobs one tenant may run at once.
pub const PER_TENANT: usize = 2;
/// How long a job waits for its tenant's turn before the request is refused.
pub const WAIT: Duration = Duration::from_secs(10);

/// The two gates.
#[derive(Debug, Clone)]
pub struct CpuGate {
    total: Arc<Semaphore>,
    tenants: Arc<Mutex<HashMap<String, Arc<Semaphore>>>>,
}

impl Default for CpuGate {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Self {
            total: Arc::new(Semaphore::new(cores)),
            tenants: Arc::default(),
        }
    }
}

impl CpuGate {
    fn tenant(&self, tenant: &str) -> Arc<Semaphore> {
        // Tenants are made by operators, so the map is as large as the tenant table.
        let mut map = self.tenants.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(tenant.to_owned())
            .or_insert_with(|| Arc::new(Semaphore::new(PER_TENANT)))
            .clone()
    }

    /// Runs `job` for `tenant` on a blocking thread, once both gates let it.
    pub async fn run<T, F>(&self, tenant: &str, job: F) -> Result<T, ApiError>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let mine = self.tenant(tenant);
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
