//! The HTTP client shared by the proxy and the adapters: one connection pool
//! for the whole hub, HTTP/1.1 keep-alive to every backend.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// Request bodies are buffered in full before they go upstream, so a request
/// that fails before its first byte can be sent again to another backend.
pub type UpstreamBody = Full<Bytes>;

pub type HttpClient = Client<HttpConnector, UpstreamBody>;

pub fn new_client(connect_timeout: Duration) -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(connect_timeout));
    connector.set_nodelay(true);
    connector.enforce_http(true);
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(1024)
        .build(connector)
}
