//! The accept loop. Written out rather than `axum::serve` because every
//! connection is owned and bounded here:
//! - each connection task is owned by the hub's [`TaskTracker`], so
//!   shutdown awaits them;
//! - at most `max_connections` are open at once: beyond it the loop stops
//!   accepting and new clients wait in the kernel's backlog, so a flood of
//!   idle connections cannot exhaust the process's file descriptors;
//! - a client gets `header_read_timeout` for its headers and may not stall
//!   an answer for longer than `client_stall_timeout` ([`StallIo`]);
//! - accept errors back off exponentially instead of spinning;
//! - connections are plain HTTP/1.1 with small buffers, which keeps a hub
//!   holding ten thousand waiting requests small.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use http::HeaderName;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::either::Either;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower_service::Service;

use crate::config::LimitsConfig;
use crate::forward::REQUEST_ID_HEADER;
use crate::stall_io::StallIo;

/// What bounds each client connection.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_connections: usize,
    pub header_read_timeout: Duration,
    pub client_stall_timeout: Duration,
}

impl Limits {
    pub fn from_config(limits: &LimitsConfig) -> Self {
        Limits {
            max_connections: limits
                .max_connections
                .unwrap_or_else(default_max_connections),
            header_read_timeout: Duration::from_secs(30),
            client_stall_timeout: limits.client_stall_timeout,
        }
    }
}

/// Connections the file-descriptor limit allows: each running request holds
/// a client and a backend connection, and the hub needs a few more for its
/// probes, its listener and its logs.
fn default_max_connections() -> usize {
    let soft = rlimit::Resource::NOFILE
        .get()
        .map_or(1024, |(soft, _)| soft);
    let soft = usize::try_from(soft).unwrap_or(usize::MAX);
    (soft.saturating_sub(64) / 2).max(16)
}

/// Serves `app` on `listener` until `stop`; then asks every connection to
/// finish its current request and waits for them, or until `hard_stop`
/// cuts them off.
pub async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    app: Router,
    limits: Limits,
    stop: CancellationToken,
    hard_stop: CancellationToken,
    tasks: TaskTracker,
) {
    let graceful = GracefulShutdown::new();
    let open = Arc::new(Semaphore::new(limits.max_connections));
    let mut backoff = Backoff::default();
    loop {
        let permit = tokio::select! {
            _ = stop.cancelled() => break,
            permit = open.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    backoff.reset();
                    (stream, peer)
                }
                Err(e) => {
                    backoff.wait(&e).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
            let mut app = app.clone();
            async move {
                let mut req = req.map(axum::body::Body::new);
                // Who called: a node's servers are reached at its address.
                req.extensions_mut()
                    .insert(axum::extract::ConnectInfo(peer));
                let mut response = app.call(req).await.unwrap_or_else(|e| match e {});
                with_request_id(&mut response);
                Ok::<_, Infallible>(response)
            }
        });
        let (hard_stop, tls, limits) = (hard_stop.clone(), tls.clone(), limits.clone());
        let watcher = graceful.watcher();
        tasks.spawn(async move {
            let _permit = permit;
            // The handshake in the connection's own task, bounded like the
            // request head: a client that stalls it holds only itself.
            let stream = match tls {
                None => Either::Right(stream),
                Some(tls) => {
                    let handshake =
                        tokio::time::timeout(limits.header_read_timeout, tls.accept(stream));
                    tokio::select! {
                        done = handshake => match done {
                            Ok(Ok(s)) => Either::Left(s),
                            Ok(Err(e)) => {
                                tracing::debug!(error = %e, "TLS handshake failed");
                                return;
                            }
                            Err(_) => return,
                        },
                        _ = hard_stop.cancelled() => return,
                    }
                }
            };
            let io = StallIo::new(TokioIo::new(stream), limits.client_stall_timeout);
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_read_timeout)
                .keep_alive(true)
                .serve_connection(io, service);
            let conn = watcher.watch(conn);
            tokio::select! {
                result = conn => if let Err(e) = result {
                    tracing::debug!(error = %e, "connection ended with an error");
                },
                _ = hard_stop.cancelled() => {}
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// Every response carries `x-request-id`: inference sets its own (the
/// caller's, if it sent a sane one), the rest get a fresh one here.
fn with_request_id(response: &mut axum::response::Response) {
    let name = HeaderName::from_static(REQUEST_ID_HEADER);
    if !response.headers().contains_key(&name) {
        let id = crate::forward::new_request_id();
        response.headers_mut().insert(name, id);
    }
}

/// Accept errors (out of file descriptors, mostly) wait 10 ms, doubling to
/// one second, and are logged once per second at most.
#[derive(Default)]
struct Backoff {
    delay: Duration,
    failures: u64,
    last_log: Option<tokio::time::Instant>,
}

impl Backoff {
    async fn wait(&mut self, error: &std::io::Error) {
        self.failures += 1;
        let now = tokio::time::Instant::now();
        if self
            .last_log
            .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1))
        {
            tracing::warn!(%error, failures = self.failures, "accept failed; backing off");
            self.last_log = Some(now);
        }
        self.delay = (self.delay * 2).clamp(Duration::from_millis(10), Duration::from_secs(1));
        tokio::time::sleep(self.delay).await;
    }

    fn reset(&mut self) {
        self.delay = Duration::ZERO;
        self.failures = 0;
    }
}
