//! Discovery reads a bounded amount from any server: one that answers its
//! model list with gigabytes (broken or hostile) costs the hub an error, not
//! its memory.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use drover_backends::{BackendKind, Endpoint, HttpClient, adapter_for};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A server that answers every request with 200 and an endless chunked body
/// of JSON-looking bytes, until the client hangs up.
async fn endless_server() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = [0u8; 4096];
                let _ = sock.read(&mut head).await;
                let _ = sock
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n")
                    .await;
                let chunk = format!("10000\r\n{}\r\n", "[".repeat(0x10000));
                while sock.write_all(chunk.as_bytes()).await.is_ok() {}
            });
        }
    });
    format!("http://{addr}")
}

#[tokio::test]
async fn a_model_list_too_large_is_refused_not_read_whole() {
    let url = endless_server().await;
    for kind in [BackendKind::OpenAi, BackendKind::LmStudio] {
        let adapter = adapter_for(
            kind,
            Endpoint::parse(&url).unwrap(),
            HttpClient::new(Duration::from_secs(3)),
            None,
            Duration::from_secs(30),
        );
        let err = adapter.discover().await.unwrap_err().to_string();
        assert!(err.contains("larger than 8 MiB"), "{kind}: {err}");
    }
}
