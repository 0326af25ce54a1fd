//! The listener serves HTTPS from a PEM certificate and key: a client that
//! trusts the certificate talks to it, plain HTTP gets no answer, and a
//! certificate file that cannot be read is a start error naming it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use drover_tests::{ClusterBuilder, HubConfig, chat_body, openai};
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::crypto::ring;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore};

fn certificate(
    dir: &std::path::Path,
) -> (
    std::path::PathBuf,
    std::path::PathBuf,
    CertificateDer<'static>,
) {
    std::fs::create_dir_all(dir).unwrap();
    let made = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, made.cert.pem()).unwrap();
    std::fs::write(&key, made.key_pair.serialize_pem()).unwrap();
    (cert, key, made.cert.der().clone())
}

/// One HTTPS request to `addr`, trusting `root` for the name localhost.
async fn https(
    addr: std::net::SocketAddr,
    root: &CertificateDer<'static>,
    request: Request<Full<Bytes>>,
) -> (u16, String) {
    let mut roots = RootCertStore::empty();
    roots.add(root.clone()).unwrap();
    let config = ClientConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let tls = TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .expect("a TLS handshake with the hub");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    let response = sender.send_request(request).await.unwrap();
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hub_serves_https_from_pem_files_and_nothing_in_the_clear() {
    let dir = std::env::temp_dir().join(format!("drover-tls-{}", std::process::id()));
    let (cert, key, root) = certificate(&dir);
    let cluster = ClusterBuilder::new()
        .sim("s", openai(&["m"], 1, 0))
        .hub(|c| {
            c.tls = Some(drover_hub::config::TlsConfig {
                cert: cert.clone(),
                key: key.clone(),
            })
        })
        .start()
        .await;
    let addr = cluster.hub.addr();
    assert!(
        cluster.hub.url().starts_with("https://"),
        "{}",
        cluster.hub.url()
    );
    let request = Request::post("/v1/chat/completions")
        .header("host", "localhost")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(chat_body("m", "hi").to_string())))
        .unwrap();
    let (status, body) = https(addr, &root, request).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("chat.completion"), "{body}");

    // Plain HTTP to the TLS port gets no HTTP answer.
    let plain = tokio::time::timeout(Duration::from_secs(5), cluster.client.try_get("/health"))
        .await
        .expect("the hub does not hang a plain client");
    assert_eq!(plain, None);
    cluster.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_that_cannot_be_read_is_a_start_error_naming_it() {
    let missing = std::env::temp_dir().join("drover-no-such-cert.pem");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let config = HubConfig {
        tls: Some(drover_hub::config::TlsConfig {
            cert: missing.clone(),
            key: missing.clone(),
        }),
        ..HubConfig::default()
    };
    let e = drover_hub::start(config, listener)
        .await
        .err()
        .expect("refused");
    assert!(e.to_string().contains("drover-no-such-cert.pem"), "{e}");
}

/// A TLS front for `upstream`: terminates TLS with `cert`/`key` and passes
/// the bytes on. Returns its port.
async fn tls_front(
    upstream: std::net::SocketAddr,
    cert: &std::path::Path,
    key: &std::path::Path,
) -> u16 {
    use tokio_rustls::rustls::ServerConfig;
    use tokio_rustls::rustls::pki_types::PrivateKeyDer;
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(key).unwrap();
    let config = ServerConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(stream).await else {
                    return;
                };
                let Ok(mut plain) = tokio::net::TcpStream::connect(upstream).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
            });
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_backend_is_reached_with_its_ca_file_and_not_without() {
    let dir = std::env::temp_dir().join(format!("drover-tls-backend-{}", std::process::id()));
    let (cert, key, _) = certificate(&dir);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sim = drover_sim::SimServer::start(listener, openai(&["m"], 1, 0)).unwrap();
    // Two fronts, so that the two backends are two servers.
    let trusted_port = tls_front(sim.addr(), &cert, &key).await;
    let untrusted_port = tls_front(sim.addr(), &cert, &key).await;
    let spec = |name: &str, port: u16, ca: Option<std::path::PathBuf>| drover_hub::BackendSpec {
        name: Some(name.into()),
        kind: "openai".into(),
        url: format!("https://localhost:{port}"),
        ca_file: ca,
        ..drover_hub::BackendSpec::default()
    };
    let cluster = ClusterBuilder::new()
        .external(spec("trusted", trusted_port, Some(cert.clone())))
        .start()
        .await;
    let r = cluster
        .client
        .post("/v1/chat/completions", &chat_body("m", "hi"))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.backend(), "trusted");

    // Without the CA, the certificate is refused and the backend says why.
    let r = cluster
        .client
        .post(
            "/admin/backends",
            &serde_json::to_value(spec("untrusted", untrusted_port, None)).unwrap(),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    drover_tests::wait_until_within("the probe fails", Duration::from_secs(10), || async {
        let b = cluster.client.get("/admin/backends/untrusted").await.json();
        b["last_error"]
            .as_str()
            .is_some_and(|e| e.to_lowercase().contains("certificate"))
    })
    .await;
    cluster.shutdown().await;
    sim.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}
