//! The server process: builds the store and the router on an already bound listener, runs them
//! until a shutdown signal, then drains everything in order.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::clock::Clock;
use crate::http::serve::ConnectionLimits;
use crate::http::{self, AppState};
use crate::metrics::Metrics;
use crate::signing::{HeadSigner, KeySource};
use crate::store::{Store, WriterConfig};

/// Errors at the edges of the program (startup, CLI).
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Everything `ctxd serve` needs to know.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub addr: String,
    pub data_dir: PathBuf,
    /// The PostgreSQL database of the store; `None`: SQLite in `data_dir`.
    pub database_url: Option<String>,
    /// Admin token from the environment; when absent, `<data dir>/admin-token` is used or created.
    pub admin_token: Option<String>,
    pub writer: WriterConfig,
    pub sweep_interval: Duration,
    /// How long an `Idempotency-Key` is remembered.
    pub idempotency_retention: Duration,
    /// The key that signs account heads (`crate::signing`).
    pub signing_key: KeySource,
    /// Caps and timeouts of HTTP connections.
    pub connections: ConnectionLimits,
}

/// A built, not yet running, server.
pub struct Application {
    listener: TcpListener,
    connections: ConnectionLimits,
    state: AppState,
    sweep_interval: Duration,
    idempotency_retention: Duration,
}

impl Application {
    /// Opens the store and binds the listener (port 0 picks a free port).
    pub async fn build(config: &ServeConfig, clock: Arc<dyn Clock>) -> Result<Application, BoxError> {
        let metrics = Arc::new(Metrics::default());
        // Bound first: a taken address creates no store, token or key before it fails.
        let listener = TcpListener::bind(&config.addr).await.map_err(|error| {
            let why = match error.kind() {
                std::io::ErrorKind::AddrInUse => {
                    "the address is in use: another ctxd, or another program, listens there".to_string()
                }
                _ => error.to_string(),
            };
            std::io::Error::new(
                error.kind(),
                format!(
                    "cannot listen on {} ({why}); choose the address with --addr or CTXD_ADDR",
                    config.addr
                ),
            )
        })?;
        let location = crate::store::Location::of(&config.data_dir, config.database_url.as_deref());
        // Segments go under the data dir unless `--archive-dir` says where (on PostgreSQL too).
        let writer = WriterConfig {
            archive_dir: Some(
                config.writer.archive_dir.clone().unwrap_or_else(|| config.data_dir.join("archive")),
            ),
            ..config.writer.clone()
        };
        let store = Store::open_at(&location, writer, clock.clone(), metrics.clone())?;
        // The admin token and signing key live there unless given (on PostgreSQL too).
        crate::store::create_data_dir(&config.data_dir)?;
        let admin_token_hash =
            crate::auth::admin_token_hash(config.admin_token.as_deref(), &config.data_dir)?;
        let signer = Arc::new(HeadSigner::load(&config.signing_key, &config.data_dir)?);
        Ok(Application {
            listener,
            connections: config.connections.clone().fit_open_files(),
            state: AppState {
                store,
                clock,
                metrics,
                admin_token_hash,
                signer,
                streams: Arc::new(http::slots::AccountSlots::new(config.connections.streams_per_account)),
                large_reads: Arc::new(http::slots::AccountSlots::new(
                    config.connections.large_reads_per_account,
                )),
            },
            sweep_interval: config.sweep_interval,
            idempotency_retention: config.idempotency_retention,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("a bound listener has an address")
    }

    /// The store, e.g. for tests that run the sweeper by hand.
    pub fn store(&self) -> Store {
        self.state.store.clone()
    }

    /// Serves until `shutdown` resolves; then stops accepting, finishes in-flight requests,
    /// drains the writer and checkpoints the WAL.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), BoxError> {
        let store = self.state.store.clone();
        let (stop_sweeper, sweeper_stopped) = watch::channel(false);
        let steps = tokio::spawn(crate::steps::run(store.clone(), sweeper_stopped.clone()));
        let sweeper = tokio::spawn(crate::sweeper::run(
            store.clone(),
            self.state.clock.clone(),
            self.sweep_interval,
            self.idempotency_retention,
            sweeper_stopped,
        ));
        let app = http::router(self.state);
        let addr = self.listener.local_addr()?;
        tracing::info!(%addr, dashboard = %http::dashboard_url(&addr.to_string()), "ctxd listening");
        // Feed followers never end by themselves: they are told first, so that the drain ends.
        let feeds = store.clone();
        let shutdown = async move {
            shutdown.await;
            feeds.close_feeds();
        };
        http::serve::serve(self.listener, app, self.connections, shutdown).await;
        let _ = stop_sweeper.send(true);
        let _ = sweeper.await;
        let _ = steps.await;
        store.shutdown().await;
        tracing::info!("ctxd stopped");
        Ok(())
    }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let interrupt = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = interrupt => {},
        _ = terminate => {},
    }
    tracing::info!("shutdown signal received");
}
