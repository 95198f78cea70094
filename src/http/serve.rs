//! The HTTP server's connections (docs/ARCHITECTURE.md, "Connections"): at most
//! `max_connections` open at once (past it, new ones wait in the kernel's backlog); a request's
//! header must arrive within `header_timeout`, which also closes a keep-alive connection left
//! idle that long; a request body must arrive whole within `body_timeout` of its header; a failed
//! accept (out of file descriptors, say) is logged and retried, never felt by the connections
//! already open; and shutdown waits for open connections at most `drain_timeout`.
//! Server-Sent Events streams are responses in progress, not idle: the timeouts leave them be,
//! and they count against `max_connections`.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::Request;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use hyper::body::{Body, Bytes, Frame, SizeHint};
use tokio::time::Sleep;
use tower::ServiceExt;

use crate::app::BoxError;

/// How connections are bounded.
#[derive(Debug, Clone)]
pub struct ConnectionLimits {
    pub max_connections: usize,
    /// Live event streams (`…/events/stream`) one account may hold open at once.
    pub streams_per_account: usize,
    /// Large reads (pages of the feed, of histories, as-of reads…) of one account in flight at
    /// once, their answers' sending included.
    pub large_reads_per_account: usize,
    pub header_timeout: Duration,
    pub body_timeout: Duration,
    pub drain_timeout: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            max_connections: 4096,
            streams_per_account: 32,
            large_reads_per_account: 8,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(10),
            drain_timeout: Duration::from_secs(10),
        }
    }
}

/// File descriptors kept for what is not a connection: the store's files, read connections,
/// the log.
const RESERVED_FILES: u64 = 512;

impl ConnectionLimits {
    /// Raises this process's open-file limit to its hard limit, and lowers `max_connections` to
    /// what then fits beside `RESERVED_FILES`, so that connections can never take the files
    /// that reads need (which then fail as "unable to open database file").
    pub fn fit_open_files(mut self) -> ConnectionLimits {
        let open_files = match rlimit::increase_nofile_limit(u64::MAX) {
            Ok(open_files) => open_files,
            Err(error) => {
                tracing::warn!(%error, "the open-file limit could not be read; max_connections stays as given");
                return self;
            }
        };
        let fits = usize::try_from(open_files.saturating_sub(RESERVED_FILES).max(16)).unwrap_or(usize::MAX);
        if self.max_connections > fits {
            tracing::warn!(
                max_connections = self.max_connections,
                open_files,
                fits,
                "fewer connections than asked: the open-file limit leaves room for no more"
            );
            self.max_connections = fits;
        }
        self
    }
}

/// Serves `app` on `listener` until `shutdown` resolves, then drains the open connections.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()> + Send,
) {
    let open = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let slot = tokio::select! {
            slot = open.clone().acquire_owned() => slot.expect("the connection semaphore is never closed"),
            () = &mut shutdown => break,
        };
        let (stream, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "accepting a connection failed; retrying in 100 ms");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let app = app.clone();
        let body_timeout = limits.body_timeout;
        let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
            request.extensions_mut().insert(ConnectInfo::<SocketAddr>(remote));
            let request =
                request.map(|body| Deadline { body, sleep: Box::pin(tokio::time::sleep(body_timeout)) });
            app.clone().oneshot(request)
        });
        let connection = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_timeout)
            .max_headers(MAX_PARSED_HEADERS)
            .serve_connection(TokioIo::new(stream), service);
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, %remote, "connection ended with an error");
            }
            drop(slot);
        });
    }
    drop(listener);
    if tokio::time::timeout(limits.drain_timeout, graceful.shutdown()).await.is_err() {
        tracing::warn!(
            drain_timeout_s = limits.drain_timeout.as_secs(),
            "connections still open after the drain timeout are dropped"
        );
    }
}

/// Header fields the parser takes, above `MAX_HEADERS`, so that a request with a few too many
/// gets the router's JSON 431 rather than the parser's empty one.
const MAX_PARSED_HEADERS: usize = 4 * super::MAX_HEADERS;

/// A request body that must arrive whole before its deadline (a client sending a byte now and
/// then holds its connection no longer than that).
struct Deadline {
    body: Incoming,
    sleep: Pin<Box<Sleep>>,
}

impl Body for Deadline {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if let Poll::Ready(frame) = Pin::new(&mut this.body).poll_frame(cx) {
            return Poll::Ready(frame.map(|frame| frame.map_err(BoxError::from)));
        }
        match this.sleep.as_mut().poll(cx) {
            Poll::Ready(()) => {
                Poll::Ready(Some(Err("the request body did not arrive within the body timeout".into())))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
