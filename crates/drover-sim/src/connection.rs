//! One accepted TCP connection: hyper serves HTTP/1.1 on it until the client
//! leaves, the server drains, or a fault kills it.

use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use crate::guard::Running;
use crate::router;
use crate::shared::Shared;

/// Kills one connection abruptly: the connection task drops the socket, so
/// the client sees the stream end without a terminating chunk.
#[derive(Debug, Clone)]
pub(crate) struct KillSwitch(CancellationToken);

impl KillSwitch {
    pub(crate) fn kill(&self) {
        self.0.cancel();
    }
}

/// A pending close-mid-stream fault: what the response body needs to carry
/// it out once its partial answer has gone.
#[derive(Debug)]
pub(crate) struct Sever {
    kill: KillSwitch,
    shared: Arc<Shared>,
}

impl Sever {
    pub(crate) fn new(kill: KillSwitch, shared: Arc<Shared>) -> Self {
        Sever { kill, shared }
    }

    pub(crate) fn sever(self, running: Running) {
        tracing::debug!(model = %running.in_flight.model().name, "closing connection mid-answer");
        running.end_by_server();
        self.shared
            .counters
            .mid_stream_closes
            .fetch_add(1, Ordering::Relaxed);
        self.shared.watch.changed();
        self.kill.kill();
    }
}

/// Serves `stream` until it closes. `drain` asks for a graceful close:
/// answers in progress finish, then the connection closes instead of
/// waiting for the next request.
pub(crate) async fn serve(stream: TcpStream, shared: Arc<Shared>, drain: CancellationToken) {
    // Chunks are small and latency is the point; Nagle would hold them back.
    if let Err(error) = stream.set_nodelay(true) {
        tracing::debug!(%error, "could not set TCP_NODELAY");
    }
    let kill = KillSwitch(CancellationToken::new());
    let service = {
        let kill = kill.clone();
        service_fn(move |request| router::handle(Arc::clone(&shared), kill.clone(), request))
    };
    // No timer is configured, so hyper applies no header-read timeout and an
    // idle keep-alive connection stays open until the client closes it.
    let connection = http1::Builder::new().serve_connection(TokioIo::new(stream), service);
    let mut connection = pin!(connection);
    let mut draining = false;
    loop {
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(error) = result {
                    tracing::debug!(%error, "connection ended with an error");
                }
                return;
            }
            () = kill.0.cancelled() => return,
            () = drain.cancelled(), if !draining => {
                draining = true;
                connection.as_mut().graceful_shutdown();
            }
        }
    }
}
