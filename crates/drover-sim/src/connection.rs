//! One accepted TCP connection: hyper serves HTTP/1.1 on it until the client
//! leaves, the server drains, or a fault kills it.

use std::io;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use crate::guard::Running;
use crate::router;
use crate::shared::Shared;

/// What a request's handler can do to the connection it arrived on.
#[derive(Debug, Clone)]
pub(crate) struct ConnectionHandle {
    kill: CancellationToken,
    state: Arc<ConnectionState>,
}

#[derive(Debug, Default)]
struct ConnectionState {
    /// Set while a streamed answer is being written; see [`NotReading`].
    not_reading: AtomicBool,
    /// Set by a streamed answer under `Faults::close_after_stream`: the
    /// connection takes no further request.
    stale: AtomicBool,
}

impl ConnectionHandle {
    fn new() -> Self {
        ConnectionHandle {
            kill: CancellationToken::new(),
            state: Arc::default(),
        }
    }

    /// Kills the connection abruptly: the connection task drops the socket,
    /// so the client sees the stream end without a terminating chunk.
    pub(crate) fn kill(&self) {
        self.kill.cancel();
    }

    /// After the answer in progress, the connection takes no further
    /// request. HTTP/1.1 answers one request at a time, so marking it while
    /// the stream is still being written is the same as marking it after.
    pub(crate) fn mark_stale(&self) {
        self.state.stale.store(true, Ordering::Relaxed);
    }

    pub(crate) fn is_stale(&self) -> bool {
        self.state.stale.load(Ordering::Relaxed)
    }

    /// Stops reading the socket until the guard drops.
    pub(crate) fn stop_reading(&self) -> NotReading {
        self.state.not_reading.store(true, Ordering::Release);
        NotReading(Arc::clone(&self.state))
    }
}

/// Held by a streamed answer while it is written. A real server busy
/// generating doesn't read its socket, so it learns that the client left
/// only when a write fails (at its next token), and until then the
/// abandoned request keeps its slot. hyper, left alone, would watch for the
/// client's FIN between chunks and end the answer at once.
#[derive(Debug)]
pub(crate) struct NotReading(Arc<ConnectionState>);

impl Drop for NotReading {
    fn drop(&mut self) {
        self.0.not_reading.store(false, Ordering::Release);
    }
}

/// The socket as hyper sees it: reads stay pending while a streamed answer
/// holds [`NotReading`]. No waker is kept for them: the body wakes the
/// connection task for its every chunk, and hyper reads again as soon as
/// the answer has ended, in the same poll.
#[derive(Debug)]
struct Socket {
    stream: TcpStream,
    state: Arc<ConnectionState>,
}

impl AsyncRead for Socket {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.state.not_reading.load(Ordering::Acquire) {
            return Poll::Pending;
        }
        Pin::new(&mut this.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Socket {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

/// A pending close-mid-stream fault: what the response body needs to carry
/// it out once its partial answer has gone.
#[derive(Debug)]
pub(crate) struct Sever {
    connection: ConnectionHandle,
    shared: Arc<Shared>,
}

impl Sever {
    pub(crate) fn new(connection: ConnectionHandle, shared: Arc<Shared>) -> Self {
        Sever { connection, shared }
    }

    pub(crate) fn sever(self, running: Running) {
        tracing::debug!(model = %running.in_flight.model().name, "closing connection mid-answer");
        running.end_by_server();
        self.shared
            .counters
            .mid_stream_closes
            .fetch_add(1, Ordering::Relaxed);
        self.shared.watch.changed();
        self.connection.kill();
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
    let handle = ConnectionHandle::new();
    let socket = Socket {
        stream,
        state: Arc::clone(&handle.state),
    };
    let service = {
        let handle = handle.clone();
        service_fn(move |request| router::handle(Arc::clone(&shared), handle.clone(), request))
    };
    // No timer is configured, so hyper applies no header-read timeout and an
    // idle keep-alive connection stays open until the client closes it.
    let connection = http1::Builder::new().serve_connection(TokioIo::new(socket), service);
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
            () = handle.kill.cancelled() => return,
            () = drain.cancelled(), if !draining => {
                draining = true;
                connection.as_mut().graceful_shutdown();
            }
        }
    }
}
