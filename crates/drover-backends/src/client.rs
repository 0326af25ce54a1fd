//! The HTTP client shared by the proxy, the adapters and `drover bench`: one
//! connection pool, HTTP/1.1 keep-alive to every backend, and the rules a
//! pool in front of real LLM servers needs.
//!
//! A request is never sent twice to a server that may have read it: a
//! generation costs a slot's time and tokens, and a server that read a
//! request and then dropped the connection may well have run it. So a
//! request that fails on a *reused* connection is sent again on a fresh one
//! only when the server cannot have consumed it: the connection was found
//! closed before the request's first byte went out (the server's FIN was
//! already in), or writing the request failed, or nothing of it was written.
//! A failure once the request went out whole is the backend's answer.
//!
//! What makes that rule cheap to keep is not handing out connections a
//! server is about to close:
//! - A connection that carried a streamed (SSE) answer goes back to no one
//!   where the server closes such connections: llama.cpp's `llama-server`
//!   closes one after every stream while advertising `Keep-Alive`
//!   (backend-apis.md §8), and a request checked out between the stream's
//!   last byte and the server's FIN would go out on a dead socket. The hub
//!   names such servers ([`HttpClient::closes_after_streams`]), and the
//!   client learns any other the first time it finds a stream's connection
//!   closed under a request; every other server keeps its connections, a
//!   new one per stream costing about a fifth of a zero-latency stream's
//!   throughput.
//! - An idle connection is dropped after [`POOL_IDLE`], before the 5 s
//!   keep-alive timeout of uvicorn (vLLM), Node (LM Studio) and
//!   llama-server ends it under a request.
//!
//! Reuse is known exactly: every connection carries its [`ConnState`] (a
//! [`Connected::extra`]), which the error reports back.
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Extensions, Request, Response, Uri};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{
    Connected, Connection, HttpConnector, capture_connection,
};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::crypto::ring;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore};
use tokio_util::either::Either;
use tower_service::Service;

/// Request bodies are buffered in full before they go upstream, so a request
/// that fails before its first byte can be sent again.
pub type UpstreamBody = Full<Bytes>;

type Pool = Client<CountingConnector, UpstreamBody>;

/// The error of a request that failed even after the fresh-connection retry.
pub type SendError = hyper_util::client::legacy::Error;

/// How long an idle connection is kept: less than the 5 s keep-alive
/// timeout common servers close idle connections after.
pub const POOL_IDLE: Duration = Duration::from_secs(4);

/// A pooled HTTP/1.1 client. Cheap to clone: clones share the pool.
#[derive(Clone)]
pub struct HttpClient {
    pooled: Pool,
    /// No pool: every request gets a new connection. Used only to resend a
    /// request whose reused connection turned out to be closed.
    fresh: Pool,
    /// Servers (`host:port`) that close a connection after every stream.
    closers: Arc<std::sync::RwLock<std::collections::HashSet<String>>>,
}

impl HttpClient {
    pub fn new(connect_timeout: Duration) -> Self {
        Self::with_pool_size(connect_timeout, 1024)
    }

    /// A client keeping at most `max_idle_per_host` idle connections to each
    /// server.
    pub fn with_pool_size(connect_timeout: Duration, max_idle_per_host: usize) -> Self {
        let tls = tls_config(None).map_err(Arc::from);
        Self::build(connect_timeout, max_idle_per_host, tls)
    }

    /// A client for `https://` servers whose certificate `ca` (a PEM file)
    /// vouches for, besides the system's roots.
    pub fn with_ca(connect_timeout: Duration, ca: &std::path::Path) -> Result<Self, String> {
        Ok(Self::build(
            connect_timeout,
            1024,
            Ok(tls_config(Some(ca))?),
        ))
    }

    fn build(
        connect_timeout: Duration,
        max_idle_per_host: usize,
        tls: Result<TlsConnector, Arc<str>>,
    ) -> Self {
        let mut http = HttpConnector::new();
        http.set_connect_timeout(Some(connect_timeout));
        http.set_nodelay(true);
        // https:// too: the TCP connection is made here, TLS on top below.
        http.enforce_http(false);
        let connector = CountingConnector { http, tls };
        let pooled = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(POOL_IDLE)
            .pool_max_idle_per_host(max_idle_per_host)
            .build(connector.clone());
        let fresh = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(0)
            .build(connector);
        HttpClient {
            pooled,
            fresh,
            closers: Arc::default(),
        }
    }

    /// The server at `authority` (`host:port`) closes a connection after
    /// every streamed answer: such connections are not reused.
    pub fn closes_after_streams(&self, authority: &str) {
        drover_core::sync::write(&self.closers).insert(authority.to_string());
    }

    fn retires_streams(&self, uri: &Uri) -> bool {
        let closers = drover_core::sync::read(&self.closers);
        !closers.is_empty()
            && uri
                .authority()
                .is_some_and(|a| closers.contains(a.as_str()))
    }

    /// Sends the request `build` makes. If it fails on a reused connection
    /// that the server had closed before it could read the request, `build`
    /// is called again and the copy goes out on a fresh connection; that
    /// second outcome is the answer.
    pub async fn send(
        &self,
        build: impl Fn() -> Request<UpstreamBody>,
    ) -> Result<Response<Incoming>, SendError> {
        match self.request(&self.pooled, build()).await {
            Err(e) if failed_on(&e).is_some_and(|s| s.reused() && s.request_unsent()) => {
                tracing::debug!(error = %crate::backend::error_chain(&e), "reused connection was closed before the request went out; sending it on a fresh one");
                let req = build();
                if failed_on(&e).is_some_and(|s| s.last_stream.load(Ordering::Relaxed))
                    && let Some(authority) = req.uri().authority()
                {
                    // Its last answer was a stream: this server closes
                    // those connections. None is reused again.
                    self.closes_after_streams(authority.as_str());
                }
                self.request(&self.fresh, req).await
            }
            outcome => outcome,
        }
    }

    async fn request(
        &self,
        pool: &Pool,
        mut req: Request<UpstreamBody>,
    ) -> Result<Response<Incoming>, SendError> {
        let retire = self.retires_streams(req.uri());
        let connection = retire.then(|| capture_connection(&mut req));
        let resp = pool.request(req).await?;
        let stream = is_event_stream(&resp);
        if let Some(state) = resp.extensions().get::<ConnState>() {
            state.answered(stream);
        }
        if stream
            && let Some(connection) = &connection
            && let Some(connected) = connection.connection_metadata().as_ref()
        {
            // Not back to the pool after this answer: see the module's
            // comment.
            connected.poison();
        }
        Ok(resp)
    }
}

fn is_event_stream<B>(resp: &Response<B>) -> bool {
    resp.headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().starts_with("text/event-stream"))
}

/// What the connection a request failed on had carried, where it got one.
fn failed_on(e: &SendError) -> Option<ConnState> {
    let info = e.connect_info()?;
    let mut extensions = Extensions::new();
    info.get_extras(&mut extensions);
    extensions.get::<ConnState>().cloned()
}

/// What one connection has carried, shared between its I/O and the
/// requests sent on it.
#[derive(Clone, Debug, Default)]
struct ConnState(Arc<ConnCounts>);

#[derive(Debug, Default)]
struct ConnCounts {
    /// Answers delivered on the connection so far.
    answers: AtomicU32,
    /// Bytes written since the last answer came: the request in progress.
    written: AtomicU64,
    /// Writing the request in progress failed.
    write_failed: AtomicBool,
    /// The server had closed the connection before the request in progress
    /// was written: its first write was refused.
    closed_first: AtomicBool,
    /// The last answer on it was a stream.
    last_stream: AtomicBool,
}

impl std::ops::Deref for ConnState {
    type Target = ConnCounts;

    fn deref(&self) -> &ConnCounts {
        &self.0
    }
}

impl ConnState {
    /// An answer came: what is written from now on is the next request.
    fn answered(&self, stream: bool) {
        self.answers.fetch_add(1, Ordering::Relaxed);
        self.last_stream.store(stream, Ordering::Relaxed);
        self.written.store(0, Ordering::Relaxed);
        self.write_failed.store(false, Ordering::Relaxed);
        self.closed_first.store(false, Ordering::Relaxed);
    }

    /// It had carried an answer before the request in progress.
    fn reused(&self) -> bool {
        self.answers.load(Ordering::Relaxed) > 0
    }

    /// The request in progress cannot have reached the server whole.
    fn request_unsent(&self) -> bool {
        self.closed_first.load(Ordering::Relaxed)
            || self.write_failed.load(Ordering::Relaxed)
            || self.written.load(Ordering::Relaxed) == 0
    }
}

/// What `https://` connections trust (here and for the links between a
/// cluster's hubs): the system's roots (those it can
/// read) and `ca`'s certificates.
pub fn tls_config(ca: Option<&std::path::Path>) -> Result<TlsConnector, String> {
    let mut roots = RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    if let Some(ca) = ca {
        let named = |e: &dyn std::fmt::Display| format!("{}: {e}", ca.display());
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(ca)
            .map_err(|e| named(&e))?
            .collect::<Result<_, _>>()
            .map_err(|e| named(&e))?;
        if certs.is_empty() {
            return Err(named(&"no certificate in it"));
        }
        for cert in certs {
            roots.add(cert).map_err(|e| named(&e))?;
        }
    }
    let mut config = ClientConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsConnector::from(Arc::new(config)))
}

/// `HttpConnector`, with TLS for `https://`, each connection tagged by its
/// [`ConnState`].
#[derive(Clone)]
struct CountingConnector {
    http: HttpConnector,
    /// Or why TLS could not be set up, said on an https connection.
    tls: Result<TlsConnector, Arc<str>>,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl Service<Uri> for CountingConnector {
    type Response = CountedIo;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<CountedIo, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.http.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let https = uri.scheme_str() == Some("https");
        let host = uri
            .host()
            .unwrap_or_default()
            .trim_matches(['[', ']'])
            .to_string();
        let connecting = self.http.call(uri);
        let tls = self.tls.clone();
        Box::pin(async move {
            let tcp = connecting.await?;
            let io = if https {
                let tls = tls.map_err(|e| format!("TLS is not available: {e}"))?;
                let name = ServerName::try_from(host)?;
                Either::Right(tls.connect(name, tcp.into_inner()).await?)
            } else {
                Either::Left(tcp.into_inner())
            };
            Ok(CountedIo {
                io: TokioIo::new(io),
                state: ConnState::default(),
            })
        })
    }
}

/// A TCP connection (with TLS over it for https) and what it carried.
struct CountedIo {
    io: TokioIo<Either<TcpStream, TlsStream<TcpStream>>>,
    state: ConnState,
}

impl Connection for CountedIo {
    fn connected(&self) -> Connected {
        Connected::new().extra(self.state.clone())
    }
}

impl CountedIo {
    /// Before a request's first byte on a reused plain connection: whether
    /// the server has closed it already (its FIN is in). A request written
    /// then would meet a closed socket, and the server never read it.
    fn closed_by_server(&self, cx: &mut Context<'_>) -> bool {
        let Either::Left(tcp) = self.io.inner() else {
            return false;
        };
        if self.state.answers.load(Ordering::Relaxed) == 0
            || self.state.written.load(Ordering::Relaxed) > 0
        {
            return false;
        }
        let mut byte = [0u8; 1];
        let mut buf = tokio::io::ReadBuf::new(&mut byte);
        match tcp.poll_peek(cx, &mut buf) {
            Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => true,
            Poll::Ready(Ok(_)) | Poll::Pending => false,
        }
    }

    /// Counts what a write did to the request in progress.
    fn wrote(&self, written: &Poll<io::Result<usize>>) {
        match written {
            Poll::Ready(Ok(n)) => {
                self.state.written.fetch_add(*n as u64, Ordering::Relaxed);
            }
            Poll::Ready(Err(_)) => self.state.write_failed.store(true, Ordering::Relaxed),
            Poll::Pending => {}
        }
    }

    fn refuse_if_closed(&self, cx: &mut Context<'_>) -> Option<Poll<io::Result<usize>>> {
        if self.closed_by_server(cx) {
            self.state.closed_first.store(true, Ordering::Relaxed);
            return Some(Poll::Ready(Err(io::Error::new(
                io::ErrorKind::ConnectionReset,
                "the server closed the connection before the request was sent",
            ))));
        }
        None
    }
}

impl Read for CountedIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl Write for CountedIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if let Some(refused) = self.refuse_if_closed(cx) {
            return refused;
        }
        let written = Pin::new(&mut self.io).poll_write(cx, buf);
        self.wrote(&written);
        written
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if let Some(refused) = self.refuse_if_closed(cx) {
            return refused;
        }
        let written = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.wrote(&written);
        written
    }
}
