//! The accept loop. Written out rather than `axum::serve` for two reasons:
//! every connection task is owned by the hub's [`TaskTracker`] (so shutdown
//! awaits them), and connections are plain HTTP/1.1 with small buffers,
//! which keeps a hub holding ten thousand waiting requests small.

use std::convert::Infallible;
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower_service::Service;

/// Serves `app` on `listener` until `stop`; then asks every connection to
/// finish its current request and waits for them, or until `hard_stop`
/// cuts them off.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    stop: CancellationToken,
    hard_stop: CancellationToken,
    tasks: TaskTracker,
) {
    let graceful = GracefulShutdown::new();
    loop {
        let (stream, _peer) = tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Out of file descriptors and the like: back off rather
                    // than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
            let mut app = app.clone();
            async move {
                Ok::<_, Infallible>(
                    app.call(req.map(axum::body::Body::new))
                        .await
                        .unwrap_or_else(|e| match e {}),
                )
            }
        });
        let conn = http1::Builder::new()
            .timer(TokioTimer::new())
            // Bounds the time a client may take to send its headers.
            .header_read_timeout(Duration::from_secs(30))
            .keep_alive(true)
            .serve_connection(TokioIo::new(stream), service);
        let conn = graceful.watch(conn);
        let hard_stop = hard_stop.clone();
        tasks.spawn(async move {
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
