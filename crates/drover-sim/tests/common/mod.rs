//! What every scenario needs: a simulator on 127.0.0.1:0, a hyper-util
//! client, and bounded waits on conditions.

// Each test binary uses a different part of this module.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use drover_sim::{SimConfig, SimHandle, SimServer, SimStats};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use tokio::net::TcpListener;

/// Generous: only a broken simulator gets near it.
pub const LIMIT: Duration = Duration::from_secs(20);

pub type HttpClient = Client<HttpConnector, Full<Bytes>>;

pub async fn start(config: SimConfig) -> SimHandle {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    SimServer::start(listener, config).unwrap()
}

pub fn client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// Fails the test instead of hanging it.
pub async fn within<F: Future>(future: F) -> F::Output {
    tokio::time::timeout(LIMIT, future)
        .await
        .expect("timed out waiting")
}

pub async fn wait_for(sim: &SimHandle, condition: impl FnMut(&SimStats) -> bool) -> SimStats {
    within(sim.wait_for(condition)).await
}

pub async fn send(
    client: &HttpClient,
    method: Method,
    url: &str,
    body: Option<&str>,
) -> Response<Incoming> {
    let request = Request::builder()
        .method(method)
        .uri(url)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.unwrap_or("").to_owned())))
        .unwrap();
    within(client.request(request)).await.unwrap()
}

pub async fn body_bytes(response: Response<Incoming>) -> Bytes {
    within(response.into_body().collect())
        .await
        .unwrap()
        .to_bytes()
}

/// Sends a request and parses the answer as JSON.
pub async fn call(
    client: &HttpClient,
    method: Method,
    url: &str,
    body: Option<&str>,
) -> (StatusCode, Value) {
    let response = send(client, method, url, body).await;
    let status = response.status();
    let bytes = body_bytes(response).await;
    let json = serde_json::from_slice(&bytes)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&bytes)));
    (status, json)
}

pub async fn post(sim: &SimHandle, path: &str, body: &Value) -> (StatusCode, Value) {
    let url = format!("{}{path}", sim.url());
    call(&client(), Method::POST, &url, Some(&body.to_string())).await
}

pub async fn get(sim: &SimHandle, path: &str) -> (StatusCode, Value) {
    let url = format!("{}{path}", sim.url());
    call(&client(), Method::GET, &url, None).await
}

/// The `data:` payloads of an SSE body, in order, after checking the
/// framing: every event is one `data: ` line followed by a blank line.
pub fn sse_data(body: &str) -> Vec<String> {
    assert!(
        body.ends_with("\n\n"),
        "unterminated event stream: {body:?}"
    );
    body.trim_end_matches("\n\n")
        .split("\n\n")
        .map(|event| {
            assert!(!event.contains('\n'), "multi-line event: {event:?}");
            event
                .strip_prefix("data: ")
                .unwrap_or_else(|| panic!("not a data event: {event:?}"))
                .to_owned()
        })
        .collect()
}

pub fn chat(model: &str, content: &str) -> Value {
    serde_json::json!({
        "model": model,
        "messages": [{ "role": "user", "content": content }],
    })
}

/// A config whose answers take 100 s unless the request caps `max_tokens`:
/// `hold_slot` streams the long answer to keep a slot busy, while requests
/// built with `quick` get one token and finish at once.
pub fn slow_config(slots: usize) -> SimConfig {
    SimConfig {
        slots,
        output_tokens: 1000,
        tokens_per_sec: 10.0,
        ..SimConfig::default()
    }
}

pub fn quick(model: &str, content: &str) -> Value {
    let mut body = chat(model, content);
    body["max_tokens"] = serde_json::json!(1);
    body
}

/// Occupies one of `model`'s slots until the returned body is dropped
/// (which the simulator counts as a cancel). Returns once the slot is held:
/// a streamed answer's headers come only after its slot.
pub async fn hold_slot(sim: &SimHandle, model: &str) -> Incoming {
    let mut body = chat(model, "hold");
    body["stream"] = serde_json::json!(true);
    let url = format!("{}/v1/chat/completions", sim.url());
    let response = send(&client(), Method::POST, &url, Some(&body.to_string())).await;
    assert_eq!(response.status(), StatusCode::OK);
    response.into_body()
}
