//! The HTTP client shared by the proxy, the adapters and `drover bench`: one
//! connection pool, HTTP/1.1 keep-alive to every backend, and one rule a
//! pool in front of real LLM servers needs.
//!
//! That rule: a request that fails on a *reused* connection before any
//! answer came back is sent again at once on a fresh connection. Servers
//! close idle keep-alive connections whenever they like, and llama.cpp's
//! `llama-server` closes one after every streamed answer while advertising
//! `Keep-Alive` (`shared/docs/backend-apis.md` §8). The pool drops a
//! connection as soon as it has seen the close, but a request checked out in
//! the moment between the server's last byte and its FIN goes out on a dead
//! socket and fails with "connection closed before message completed". That
//! says nothing about the backend, so it must neither reach the client nor
//! count against the backend. A failure on a fresh connection is real.
//!
//! Reuse is known exactly: every connection carries a count of the answers
//! it has delivered (a [`Connected::extra`]), which the error reports back.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Extensions, Request, Response, Uri};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
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

/// A pooled HTTP/1.1 client. Cheap to clone: clones share the pool.
#[derive(Clone)]
pub struct HttpClient {
    pooled: Pool,
    /// No pool: every request gets a new connection. Used only to resend a
    /// request whose reused connection turned out to be closed.
    fresh: Pool,
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
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(max_idle_per_host)
            .build(connector.clone());
        let fresh = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(0)
            .build(connector);
        HttpClient { pooled, fresh }
    }

    /// Sends the request `build` makes. If it fails on a reused connection
    /// before any answer, `build` is called again and the copy goes out on
    /// a fresh connection; that second outcome is the answer.
    pub async fn send(
        &self,
        build: impl Fn() -> Request<UpstreamBody>,
    ) -> Result<Response<Incoming>, SendError> {
        match self.pooled.request(build()).await {
            Ok(resp) => Ok(counted(resp)),
            Err(e) if failed_on_reused_connection(&e) => {
                tracing::debug!(error = %crate::backend::error_chain(&e), "reused connection was closed; sending again on a fresh one");
                self.fresh.request(build()).await.map(counted)
            }
            Err(e) => Err(e),
        }
    }
}

/// Counts an answer on the connection that delivered it, which makes that
/// connection "reused" for every later request.
fn counted(resp: Response<Incoming>) -> Response<Incoming> {
    if let Some(uses) = resp.extensions().get::<Answers>() {
        uses.0.fetch_add(1, Ordering::Relaxed);
    }
    resp
}

fn failed_on_reused_connection(e: &SendError) -> bool {
    let Some(info) = e.connect_info() else {
        return false;
    };
    let mut extensions = Extensions::new();
    info.get_extras(&mut extensions);
    extensions
        .get::<Answers>()
        .is_some_and(|a| a.0.load(Ordering::Relaxed) > 0)
}

/// Answers delivered on one connection so far.
#[derive(Clone, Debug, Default)]
struct Answers(Arc<AtomicU32>);

/// What `https://` connections trust: the system's roots (those it can
/// read) and `ca`'s certificates.
fn tls_config(ca: Option<&std::path::Path>) -> Result<TlsConnector, String> {
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
/// [`Answers`].
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
                answers: Answers::default(),
            })
        })
    }
}

/// A TCP connection (with TLS over it for https) and its answer count.
struct CountedIo {
    io: TokioIo<Either<TcpStream, TlsStream<TcpStream>>>,
    answers: Answers,
}

impl Connection for CountedIo {
    fn connected(&self) -> Connected {
        Connected::new().extra(self.answers.clone())
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
        Pin::new(&mut self.io).poll_write(cx, buf)
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
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }
}
