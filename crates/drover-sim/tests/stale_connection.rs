//! `close_after_stream` imitates llama-server (backend-apis.md §8): every
//! answer advertises `Keep-Alive: timeout=5, max=100`, yet a connection that
//! carried a streamed answer takes no further request. The next one is met
//! with the connection closing and no answer, as a pooled client racing the
//! real server's close sees it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use common::*;
use drover_sim::{Faults, SimConfig, SimHandle};
use http::{Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use tokio::sync::Semaphore;
use tower_service::Service;

/// Opens a connection only when the test allows one. A request that finds
/// no permit waits for the pooled connection instead, so "the next request
/// goes on the same connection" holds by construction, not by timing.
#[derive(Clone)]
struct Gate {
    inner: HttpConnector,
    permits: Arc<Semaphore>,
    opened: Arc<AtomicUsize>,
}

impl Service<Uri> for Gate {
    type Response = <HttpConnector as Service<Uri>>::Response;
    type Error = <HttpConnector as Service<Uri>>::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let (mut inner, permits, opened) = (
            self.inner.clone(),
            Arc::clone(&self.permits),
            Arc::clone(&self.opened),
        );
        Box::pin(async move {
            permits.acquire().await.unwrap().forget();
            opened.fetch_add(1, Ordering::SeqCst);
            inner.call(uri).await
        })
    }
}

/// A pooled client, allowed one connection until `gate.permits` says more.
fn pooled() -> (Client<Gate, Full<Bytes>>, Gate) {
    let gate = Gate {
        inner: HttpConnector::new(),
        permits: Arc::new(Semaphore::new(1)),
        opened: Arc::default(),
    };
    let client = Client::builder(TokioExecutor::new()).build(gate.clone());
    (client, gate)
}

async fn request(
    client: &Client<Gate, Full<Bytes>>,
    sim: &SimHandle,
    body: &Value,
) -> Result<Response<Incoming>, hyper_util::client::legacy::Error> {
    let request = Request::post(format!("{}/v1/chat/completions", sim.url()))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap();
    within(client.request(request)).await
}

/// Sends `body` and reads the whole answer; returns its status and its
/// `Keep-Alive` header.
async fn answered(
    client: &Client<Gate, Full<Bytes>>,
    sim: &SimHandle,
    body: &Value,
) -> (StatusCode, Option<String>) {
    let response = request(client, sim, body).await.unwrap();
    let status = response.status();
    let keep_alive = response
        .headers()
        .get("keep-alive")
        .map(|v| v.to_str().unwrap().to_owned());
    within(response.into_body().collect()).await.unwrap();
    (status, keep_alive)
}

fn streamed(content: &str) -> Value {
    let mut body = chat("sim-model", content);
    body["stream"] = json!(true);
    body
}

fn closing_after_streams() -> SimConfig {
    SimConfig {
        faults: Faults {
            close_after_stream: true,
            ..Faults::NONE
        },
        ..SimConfig::default()
    }
}

const ADVERTISED: Option<&str> = Some("timeout=5, max=100");

#[tokio::test]
async fn the_request_after_a_stream_meets_a_closed_connection() {
    let sim = start(closing_after_streams()).await;
    let (client, gate) = pooled();
    let (status, keep_alive) = answered(&client, &sim, &streamed("one")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(keep_alive.as_deref(), ADVERTISED);

    // The pool hands the same connection on: the gate opens no other.
    let error = request(&client, &sim, &chat("sim-model", "two"))
        .await
        .expect_err("a request on a connection that carried a stream gets no answer");
    let cause = std::error::Error::source(&error).and_then(|e| e.downcast_ref::<hyper::Error>());
    assert!(
        cause.is_some_and(hyper::Error::is_incomplete_message),
        "{error:?}"
    );
    let stats = wait_for(&sim, |s| s.stale_closes == 1).await;
    assert_eq!(stats.requests_total, 1, "the closed request never ran");
    assert_eq!(gate.opened.load(Ordering::SeqCst), 1);

    // Sent again on a fresh connection, it is answered.
    gate.permits.add_permits(1);
    let (status, _) = answered(&client, &sim, &chat("sim-model", "two")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(gate.opened.load(Ordering::SeqCst), 2);
    let stats = sim.stats();
    assert_eq!((stats.requests_total, stats.stale_closes), (2, 1));
    within(sim.shutdown()).await;
}

#[tokio::test]
async fn plain_answers_keep_the_connection_usable() {
    let sim = start(closing_after_streams()).await;
    let (client, gate) = pooled();
    for i in 0..3 {
        let (status, keep_alive) =
            answered(&client, &sim, &chat("sim-model", &i.to_string())).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(keep_alive.as_deref(), ADVERTISED);
    }
    let stats = sim.stats();
    assert_eq!((stats.requests_total, stats.stale_closes), (3, 0));
    assert_eq!(gate.opened.load(Ordering::SeqCst), 1);
    within(sim.shutdown()).await;
}

#[tokio::test]
async fn the_setting_changes_while_running() {
    let sim = start(SimConfig::default()).await;
    let (client, gate) = pooled();
    // Off: a stream leaves its connection usable and advertises nothing.
    let (status, keep_alive) = answered(&client, &sim, &streamed("one")).await;
    assert_eq!((status, keep_alive), (StatusCode::OK, None));
    let (status, _) = answered(&client, &sim, &chat("sim-model", "two")).await;
    assert_eq!(status, StatusCode::OK);

    let faults = Faults {
        close_after_stream: true,
        ..sim.faults()
    };
    sim.set_faults(faults);
    assert_eq!(sim.faults(), faults);
    answered(&client, &sim, &streamed("three")).await;
    assert!(
        request(&client, &sim, &chat("sim-model", "four"))
            .await
            .is_err()
    );
    assert_eq!(gate.opened.load(Ordering::SeqCst), 1);
    assert_eq!(
        wait_for(&sim, |s| s.stale_closes == 1).await.requests_total,
        3
    );
    within(sim.shutdown()).await;
}
