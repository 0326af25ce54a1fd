//! Opens a follower's link: a connection of its own to the leader (TLS for
//! `https://`, trusting what the backends' client trusts), and one
//! `POST /cluster/link` whose body streams for as long as the link lasts.

use std::time::Duration;

use http::{Method, Request, Response, StatusCode, Uri};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::lines::ChannelBody;
use drover_proto::cluster::link::{PATH, SECRET_HEADER, VERSION, VERSION_HEADER};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// The connection's own work, which the link drives beside its reading.
pub type Driver = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// Sends the link's request to the leader at `address` and waits for its
/// answer's head: the answer, whose body is the leader's messages, and the
/// connection to drive for as long as the link lasts.
pub async fn post(
    address: &str,
    secret: &str,
    body: ChannelBody,
) -> Result<(Response<Incoming>, Driver), String> {
    let uri: Uri = format!("{}{PATH}", address.trim_end_matches('/'))
        .parse()
        .map_err(|e| format!("the leader's address {address}: {e}"))?;
    let host = uri
        .host()
        .ok_or("the leader's address has no host")?
        .to_string();
    let https = uri.scheme_str() == Some("https");
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect((host.as_str(), port)))
        .await
        .map_err(|_| format!("no connection within {CONNECT_TIMEOUT:?}"))?
        .map_err(|e| e.to_string())?;
    let _ = tcp.set_nodelay(true);
    let request = Request::builder()
        .method(Method::POST)
        .uri(uri.path())
        .header(
            http::header::HOST,
            uri.authority().map_or(host.as_str(), |a| a.as_str()),
        )
        .header(http::header::CONTENT_TYPE, "application/x-ndjson")
        .header(SECRET_HEADER, secret)
        .header(VERSION_HEADER, VERSION.to_string())
        .body(body)
        .map_err(|e| e.to_string())?;
    if https {
        let tls = drover_backends::client::tls_config(None)?;
        let name = tokio_rustls::rustls::pki_types::ServerName::try_from(host.clone())
            .map_err(|e| e.to_string())?;
        let stream = tls.connect(name, tcp).await.map_err(|e| e.to_string())?;
        send(TokioIo::new(stream), request).await
    } else {
        send(TokioIo::new(tcp), request).await
    }
}

async fn send<T>(
    io: T,
    request: Request<ChannelBody>,
) -> Result<(Response<Incoming>, Driver), String>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| e.to_string())?;
    // The connection lives as long as the link: it ends when the body's
    // sender goes, or the leader closes it.
    let mut driver: Driver = Box::pin(async move {
        let _ = conn.await;
    });
    let response = tokio::select! {
        r = sender.send_request(request) => r.map_err(|e| e.to_string())?,
        () = &mut driver => return Err("the leader closed the connection".into()),
    };
    if response.status() != StatusCode::OK {
        let status = response.status();
        // Its error says why (another version of the link, say).
        let body = tokio::time::timeout(Duration::from_secs(1), async move {
            use http_body_util::BodyExt;
            let read = http_body_util::Limited::new(response.into_body(), 4096)
                .collect()
                .await;
            read.map(|b| String::from_utf8_lossy(&b.to_bytes()).into_owned())
                .unwrap_or_default()
        });
        let message = tokio::select! {
            read = body => read.unwrap_or_default(),
            () = &mut driver => String::new(),
        };
        let why = serde_json::from_str::<serde_json::Value>(&message)
            .ok()
            .and_then(|v| v["error"]["message"].as_str().map(str::to_string))
            .unwrap_or(message);
        return Err(format!("the leader answered {status}: {why}"));
    }
    Ok((response, driver))
}
