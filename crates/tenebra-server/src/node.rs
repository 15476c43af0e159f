//! One running node: the API served on a listener and, where asked, an in-process worker
//! or a dispatcher to a serverless executor.
//!
//! `tenebra serve`, the demo, the service benchmark and the tests all start the service
//! through [`Node::start`], and stop it through [`Node::stop`] (or [`Node::run_until`]): in
//! every one of them requests in flight drain, the worker hands back what it holds, and the
//! database closes, in that order.

use std::future::Future;
use std::net::SocketAddr;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::dispatch::{self, DispatchConfig};
use crate::worker::{self, WorkerConfig};
use crate::{open, serve, AppState, ServiceError, Settings};

/// Who runs a node's tasks besides the API.
#[derive(Debug, Clone, Default)]
pub enum Workers {
    /// Nobody here: `tenebra worker` processes elsewhere.
    #[default]
    None,
    /// An in-process worker.
    InProcess(WorkerConfig),
    /// A serverless executor the tasks are handed to (the serverless worker pool).
    Dispatch(DispatchConfig),
}

impl From<Option<WorkerConfig>> for Workers {
    fn from(w: Option<WorkerConfig>) -> Self {
        w.map_or(Workers::None, Workers::InProcess)
    }
}

/// A started node; dropping it without [`Node::stop`] leaves its tasks running.
pub struct Node {
    state: AppState,
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    server: JoinHandle<std::io::Result<()>>,
    worker: Option<JoinHandle<Result<(), tenebra_store::StoreError>>>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("addr", &self.addr)
            .field("worker", &self.worker.is_some())
            .finish()
    }
}

impl Node {
    /// Opens the storage `settings` name (migrating the database), serves the API on
    /// `listener`, and runs `workers` beside it (an in-process worker, a dispatcher, or
    /// neither; `Option<WorkerConfig>` stands for the first or the last).
    pub async fn start(
        settings: &Settings,
        listener: TcpListener,
        workers: impl Into<Workers>,
    ) -> Result<Node, ServiceError> {
        let addr = listener
            .local_addr()
            .map_err(|source| ServiceError::Serve { source })?;
        let state = open(settings).await?;
        let (stop, rx) = watch::channel(false);
        let mut on_stop = rx.clone();
        let server = tokio::spawn(serve(listener, state.clone(), async move {
            let _ = on_stop.wait_for(|s| *s).await;
        }));
        let worker = match workers.into() {
            Workers::None => None,
            Workers::InProcess(cfg) => Some(tokio::spawn(worker::run(state.clone(), cfg, rx))),
            Workers::Dispatch(cfg) => Some(tokio::spawn(dispatch::run(state.clone(), cfg, rx))),
        };
        Ok(Node {
            state,
            addr,
            stop,
            server,
            worker,
        })
    }

    /// The address the API listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The API's base URL, `http://<addr>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The node's state (store, blobs, keys), for operator work beside the API.
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Runs until `signal` completes (or the server stops by itself), then stops.
    pub async fn run_until(mut self, signal: impl Future<Output = ()>) -> Result<(), ServiceError> {
        tokio::select! {
            () = signal => self.stop().await,
            ended = &mut self.server => {
                // The server ended without being asked: stop the rest, report why.
                let _ = self.stop.send(true);
                let worker = self.join_worker().await;
                self.state.store.close().await;
                joined_server(ended)?;
                worker
            }
        }
    }

    /// Stops the node: the server stops accepting and drains requests in flight, the
    /// worker releases its tasks, and the database closes.
    pub async fn stop(mut self) -> Result<(), ServiceError> {
        let _ = self.stop.send(true);
        let server = joined_server((&mut self.server).await);
        let worker = self.join_worker().await;
        self.state.store.close().await;
        server.and(worker)
    }

    async fn join_worker(&mut self) -> Result<(), ServiceError> {
        match self.worker.take() {
            None => Ok(()),
            Some(w) => w
                .await
                .map_err(|source| ServiceError::Stopped { source })?
                .map_err(|source| ServiceError::Database {
                    doing: "running the worker",
                    source,
                }),
        }
    }
}

fn joined_server(
    r: Result<std::io::Result<()>, tokio::task::JoinError>,
) -> Result<(), ServiceError> {
    r.map_err(|source| ServiceError::Stopped { source })?
        .map_err(|source| ServiceError::Serve { source })
}
