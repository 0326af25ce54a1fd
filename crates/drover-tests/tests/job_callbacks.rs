//! Job callbacks end to end: a real hub with a data directory, simulated
//! servers behind it, and a receiver on loopback that records what it is
//! sent. Each delivery's signature is checked here with drover's own
//! signer; `tests/python/test_job_callbacks.py` checks them with the
//! Standard Webhooks reference library instead.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::VecDeque;
use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use drover_hub::webhook::WebhookSecret;
use drover_tests::jobs::{fresh_dir, quick, until_state};
use drover_tests::{Cluster, ClusterBuilder, openai, wait_until_within};
use http::{HeaderMap, Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// The reference libraries' test secret.
const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// What the receiver got in one request.
#[derive(Clone, Debug)]
struct Delivery {
    method: String,
    path: String,
    headers: HeaderMap,
    body: Bytes,
}

impl Delivery {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .unwrap_or_else(|| panic!("no {name} header: {:?}", self.headers))
            .to_str()
            .unwrap()
    }

    fn event(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }

    /// Checks the delivery's signature with `secret`, as a receiver would.
    fn assert_signed_with(&self, secret: &WebhookSecret) {
        let id = self.header("webhook-id");
        let timestamp: i64 = self.header("webhook-timestamp").parse().unwrap();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        assert!(
            (now - timestamp).abs() < 60,
            "sent at {timestamp}, now {now}"
        );
        assert_eq!(
            self.header("webhook-signature"),
            secret.sign(id, timestamp, &self.body),
            "{self:?}"
        );
    }
}

/// A webhook receiver on loopback: answers each request with the next of
/// its statuses, then 200, and records it.
struct Receiver {
    url: String,
    got: Arc<Mutex<Vec<Delivery>>>,
    task: JoinHandle<()>,
}

impl Receiver {
    async fn start(statuses: &[u16]) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hooks/drover", listener.local_addr().unwrap());
        let got = Arc::new(Mutex::new(Vec::new()));
        let script = Arc::new(Mutex::new(VecDeque::from(statuses.to_vec())));
        let task = tokio::spawn({
            let got = got.clone();
            async move {
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        return;
                    };
                    let got = got.clone();
                    let script = script.clone();
                    tokio::spawn(async move {
                        let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                            let got = got.clone();
                            let script = script.clone();
                            async move {
                                let (parts, body) = req.into_parts();
                                let body = body.collect().await.unwrap().to_bytes();
                                got.lock().unwrap().push(Delivery {
                                    method: parts.method.to_string(),
                                    path: parts.uri.path().to_string(),
                                    headers: parts.headers,
                                    body,
                                });
                                let status = script.lock().unwrap().pop_front().unwrap_or(200);
                                Ok::<_, Infallible>(
                                    Response::builder()
                                        .status(status)
                                        .body(Full::new(Bytes::from_static(b"{\"seen\":true}")))
                                        .unwrap(),
                                )
                            }
                        });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    });
                }
            }
        });
        Receiver { url, got, task }
    }

    fn deliveries(&self) -> Vec<Delivery> {
        self.got.lock().unwrap().clone()
    }

    /// Waits for `n` deliveries.
    async fn wait_for(&self, n: usize) -> Vec<Delivery> {
        wait_until_within(&format!("{n} deliveries"), Duration::from_secs(20), || {
            let got = self.got.lock().unwrap().len();
            async move { got >= n }
        })
        .await;
        self.deliveries()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn job(model: &str, callback_url: &str) -> Value {
    json!({
        "endpoint": "/v1/chat/completions",
        "body": {"model": model, "messages": [{"role": "user", "content": "hi"}]},
        "callback_url": callback_url,
        "metadata": {"run": "7"},
    })
}

async fn submit(cluster: &Cluster, body: &Value) -> String {
    drover_tests::jobs::submit(cluster, body).await["id"]
        .as_str()
        .unwrap()
        .to_string()
}

async fn done(cluster: Cluster, dir: PathBuf) {
    cluster.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_completed_jobs_callback_is_signed_and_carries_the_job() {
    let dir = fresh_dir("completed");
    let receiver = Receiver::start(&[]).await;
    let cluster = ClusterBuilder::new()
        .sim("sim", openai(&["m"], 1, 0))
        .hub(|c| {
            quick(c, &dir);
            c.jobs.webhook_secret = Some(SECRET.parse().unwrap());
        })
        .start()
        .await;
    let id = submit(&cluster, &job("m", &receiver.url)).await;
    let ended = until_state(&cluster, &id, "completed").await;
    let got = receiver.wait_for(1).await;
    let delivery = &got[0];
    assert_eq!(
        (delivery.method.as_str(), delivery.path.as_str()),
        ("POST", "/hooks/drover")
    );
    assert_eq!(delivery.header("content-type"), "application/json");
    delivery.assert_signed_with(&SECRET.parse().unwrap());
    let event = delivery.event();
    assert_eq!(event["type"], "job.completed", "{event}");
    // The job as GET /v1/jobs/{id} shows it, its answer included.
    assert_eq!(event["data"], ended, "{event}");
    assert_eq!(event["data"]["response"]["status_code"], 200);
    assert_eq!(event["data"]["metadata"]["run"], "7");
    // When the job ended, RFC 3339 in UTC to the millisecond.
    let timestamp = event["timestamp"].as_str().unwrap();
    assert!(
        timestamp.len() == 24 && timestamp.as_bytes()[10] == b'T' && timestamp.ends_with('Z'),
        "{timestamp}"
    );

    // The callback is a job of its own, the webhook-id its id: delivered
    // once, on its first attempt.
    let webhook_id = delivery.header("webhook-id");
    assert!(
        webhook_id.starts_with("job_") && webhook_id != id,
        "{webhook_id}"
    );
    let callback = until_state(&cluster, webhook_id, "completed").await;
    assert_eq!(callback["endpoint"], receiver.url.as_str());
    let attempts = callback["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 1, "{callback}");
    assert_eq!(attempts[0]["status"], 200);
    assert_eq!(receiver.deliveries().len(), 1);
    // Listed apart from the jobs.
    let jobs = cluster.client.get("/v1/jobs").await.json();
    let ids: Vec<&str> = jobs["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [id.as_str()], "{jobs}");
    let callbacks = cluster.client.get("/v1/jobs?kind=callback").await.json();
    assert_eq!(callbacks["data"][0]["id"], webhook_id, "{callbacks}");
    let metrics = cluster.client.get("/metrics").await.text();
    assert!(
        metrics
            .lines()
            .any(|l| l == r#"drover_job_callbacks_total{outcome="delivered"} 1"#),
        "{metrics}"
    );
    done(cluster, dir).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_fails_gets_it_again_with_the_same_id() {
    let dir = fresh_dir("again");
    let receiver = Receiver::start(&[500, 500]).await;
    let cluster = ClusterBuilder::new()
        .sim("sim", openai(&["m"], 1, 0))
        .hub(|c| quick(c, &dir))
        .start()
        .await;
    // The secret the hub made at its start, replaced: shown in this answer.
    let r = cluster
        .client
        .post("/admin/webhook-secret", &json!({}))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("cache-control"), Some("no-store"));
    let secret: WebhookSecret = r.json()["secret"].as_str().unwrap().parse().unwrap();

    submit(&cluster, &job("m", &receiver.url)).await;
    let got = receiver.wait_for(3).await;
    let webhook_id = got[0].header("webhook-id");
    for delivery in &got {
        assert_eq!(delivery.header("webhook-id"), webhook_id);
        assert_eq!(delivery.body, got[0].body, "the same event every time");
        delivery.assert_signed_with(&secret);
    }
    let callback = until_state(&cluster, webhook_id, "completed").await;
    let attempts = callback["attempts"].as_array().unwrap();
    let statuses: Vec<&Value> = attempts.iter().map(|a| &a["status"]).collect();
    assert_eq!(
        statuses,
        [&json!(500), &json!(500), &json!(200)],
        "{callback}"
    );
    assert_eq!(
        attempts[0]["error"], "the receiver answered 500: {\"seen\":true}",
        "{callback}"
    );
    assert_eq!(attempts[2]["error"], Value::Null);
    assert_eq!(receiver.deliveries().len(), 3);
    done(cluster, dir).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_jobs_callback_says_job_failed() {
    let dir = fresh_dir("failed");
    let receiver = Receiver::start(&[]).await;
    let cluster = ClusterBuilder::new()
        .sim("sim", openai(&["m"], 1, 0))
        .hub(|c| {
            quick(c, &dir);
            c.jobs.webhook_secret = Some(SECRET.parse().unwrap());
        })
        .start()
        .await;
    let id = submit(&cluster, &job("no-such-model", &receiver.url)).await;
    let failed = until_state(&cluster, &id, "failed").await;
    let got = receiver.wait_for(1).await;
    got[0].assert_signed_with(&SECRET.parse().unwrap());
    let event = got[0].event();
    assert_eq!(event["type"], "job.failed", "{event}");
    assert_eq!(event["data"], failed);
    assert_eq!(event["data"]["response"]["status_code"], 404, "{event}");
    done(cluster, dir).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_cancelled_while_it_waits_calls_back() {
    let dir = fresh_dir("cancelled");
    let receiver = Receiver::start(&[]).await;
    let cluster = ClusterBuilder::new()
        .sim("sim", openai(&["m"], 1, 60_000))
        .hub(|c| {
            quick(c, &dir);
            // One job in the hub at a time: the second waits in the store.
            c.jobs.window = 1;
        })
        .start()
        .await;
    let running = submit(&cluster, &job("m", &receiver.url)).await;
    until_state(&cluster, &running, "running").await;
    let waiting = submit(&cluster, &job("m", &receiver.url)).await;
    let r = cluster
        .client
        .post(&format!("/v1/jobs/{waiting}/cancel"), &json!({}))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["state"], "cancelled");
    let got = receiver.wait_for(1).await;
    let event = got[0].event();
    assert_eq!(event["type"], "job.cancelled", "{event}");
    assert_eq!(event["data"]["id"], waiting.as_str());
    assert_eq!(event["data"]["response"], Value::Null);
    // The one that runs is told of too, once it is cancelled.
    let r = cluster
        .client
        .post(&format!("/v1/jobs/{running}/cancel"), &json!({}))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let got = receiver.wait_for(2).await;
    assert_eq!(got[1].event()["type"], "job.cancelled");
    assert_eq!(got[1].event()["data"]["id"], running.as_str());
    done(cluster, dir).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callback_cannot_reach_the_hubs_own_management_api() {
    let dir = fresh_dir("own-admin");
    let cluster = ClusterBuilder::new()
        .sim("sim", openai(&["m"], 1, 0))
        .hub(|c| quick(c, &dir))
        .start()
        .await;
    // On loopback without an admin key the management API is open to the
    // machine's users; the hub's own POST must not pass for one of theirs.
    let drain = format!("{}/admin/backends/sim/drain", cluster.hub.url());
    submit(&cluster, &job("m", &drain)).await;
    wait_until_within("a delivery attempt", Duration::from_secs(20), || {
        let client = cluster.client.clone();
        async move {
            let page = client.get("/v1/jobs?kind=callback").await.json();
            page["data"][0]["attempts"]
                .as_array()
                .is_some_and(|a| !a.is_empty())
        }
    })
    .await;
    let page = cluster.client.get("/v1/jobs?kind=callback").await.json();
    let attempt = &page["data"][0]["attempts"][0];
    assert_eq!(attempt["status"], 403, "{page}");
    let backend = cluster.client.get("/admin/backends/sim").await.json();
    assert_eq!(backend["draining"], false, "{backend}");
    done(cluster, dir).await;
}
