//! Health and failover: a request that fails before its first byte is
//! retried on another backend; a backend that keeps failing has its breaker
//! opened; one that comes back is used again with no restart (seed 000).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use drover_tests::{ClusterBuilder, Faults, SimConfig, chat_body, lmstudio, wait_until};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusing_backend_costs_no_failed_request() {
    let cluster = ClusterBuilder::new()
        .sim("down", lmstudio(&["m"], 2, 5))
        .sim("up", lmstudio(&["m"], 2, 5))
        .hub(|c| {
            // Keep the breaker out of the way: this is about retries.
            c.health.failure_threshold = 1000;
            c.health.probe_interval = std::time::Duration::from_secs(3600);
        })
        .start()
        .await;
    cluster.sim("down").refuse_connections(true).await.unwrap();
    for i in 0..20 {
        let r = cluster
            .client
            .post("/v1/chat/completions", &chat_body("m", &format!("r {i}")))
            .await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.backend(), "up");
    }
    let metrics = cluster.client.get("/metrics").await.text();
    let retries = metric(&metrics, "drover_retries_total{backend=\"down\"}");
    assert!(retries >= 1.0, "retries: {retries}\n{metrics}");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_answering_500_is_retried_elsewhere() {
    let cluster = ClusterBuilder::new()
        .sim("broken", answers_500())
        .sim("fine", lmstudio(&["m"], 2, 5))
        .start()
        .await;
    for i in 0..10 {
        let r = cluster
            .client
            .post("/v1/chat/completions", &chat_body("m", &format!("r {i}")))
            .await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.backend(), "fine");
    }
    assert!(cluster.sim("broken").stats().injected_errors >= 1);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_breaker_opens_on_failures_and_closes_when_the_backend_returns() {
    let cluster = ClusterBuilder::new()
        .sim("flaky", lmstudio(&["m"], 2, 5))
        .sim("steady", lmstudio(&["m"], 2, 5))
        .start()
        .await;
    assert_eq!(cluster.breaker("flaky").await, "closed");
    cluster.sim("flaky").refuse_connections(true).await.unwrap();
    // Probes and requests both count; either way it opens.
    for i in 0..10 {
        let r = cluster
            .client
            .post("/v1/chat/completions", &chat_body("m", &format!("r {i}")))
            .await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let mut state = String::new();
    for _ in 0..200 {
        state = cluster.breaker("flaky").await;
        if state == "open" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(state, "open");
    let metrics = cluster.client.get("/metrics").await.text();
    assert_eq!(
        metric(
            &metrics,
            "drover_backend_breaker_state{backend=\"flaky\",state=\"open\"}"
        ),
        1.0
    );
    // It comes back: no restart, no config change. Once its cooldown has
    // passed it takes a trial request (or, if probes saw it down, a probe
    // closes it first).
    cluster
        .sim("flaky")
        .refuse_connections(false)
        .await
        .unwrap();
    for _ in 0..400 {
        state = cluster.breaker("flaky").await;
        if state != "open" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_ne!(state, "open");
    let mut served_by_flaky = 0;
    for i in 0..10 {
        let r = cluster
            .client
            .post(
                "/v1/chat/completions",
                &chat_body("m", &format!("after {i}")),
            )
            .await;
        assert_eq!(r.status, 200);
        if r.backend() == "flaky" {
            served_by_flaky += 1;
        }
    }
    assert!(served_by_flaky > 0, "the recovered backend gets work again");
    assert_eq!(cluster.breaker("flaky").await, "closed");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_lost_under_load_fails_no_request() {
    let cluster = ClusterBuilder::new()
        .sim("a", lmstudio(&["m"], 4, 20))
        .sim("b", lmstudio(&["m"], 4, 20))
        .start()
        .await;
    let mut tasks = Vec::new();
    for i in 0..80 {
        let client = cluster.client.clone();
        tasks.push(tokio::spawn(async move {
            client
                .post(
                    "/v1/chat/completions",
                    &chat_body("m", &format!("load {i}")),
                )
                .await
        }));
    }
    wait_until("backend a is busy", || cluster.busy("a") > 0).await;
    let a = cluster.sim("a");
    a.set_faults(Faults {
        error_rate: 1.0,
        ..Faults::NONE
    });
    a.refuse_connections(true).await.unwrap();
    let mut failed = 0;
    for t in tasks {
        if t.await.unwrap().status != 200 {
            failed += 1;
        }
    }
    assert_eq!(
        failed, 0,
        "every non-streamed request should survive the loss of a backend"
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_every_attempt_fails_the_client_gets_the_last_answer_or_a_502() {
    let cluster = ClusterBuilder::new()
        .sim("b1", answers_500())
        .sim("b2", answers_500())
        .sim("b3", answers_500())
        .hub(|c| {
            c.upstream.max_retries = 1;
            c.health.failure_threshold = 1000;
        })
        .start()
        .await;
    let r = cluster
        .client
        .post("/v1/chat/completions", &chat_body("m", "doomed"))
        .await;
    // The last attempt's own answer is passed through: the backend's 500 in
    // the OpenAI shape, from the backend that gave it.
    assert_eq!(r.status, 500, "{}", r.text());
    let errors: Vec<u64> = ["b1", "b2", "b3"]
        .iter()
        .map(|b| cluster.sim(b).stats().injected_errors)
        .collect();
    assert_eq!(
        errors.iter().sum::<u64>(),
        2,
        "1 attempt + 1 retry: {errors:?}"
    );
    assert!(
        errors.iter().all(|&e| e <= 1),
        "never twice on one backend: {errors:?}"
    );
    let last = ["b1", "b2", "b3"]
        .into_iter()
        .find(|b| *b == r.backend())
        .unwrap();
    assert_eq!(cluster.sim(last).stats().injected_errors, 1);

    for b in ["b1", "b2", "b3"] {
        cluster.sim(b).refuse_connections(true).await.unwrap();
    }
    let r = cluster
        .client
        .post("/v1/chat/completions", &chat_body("m", "doomed"))
        .await;
    assert_eq!(r.status, 502, "{}", r.text());
    assert_eq!(r.error_code(), "upstream_error", "{}", r.text());
    assert!(r.text().contains("2 in all"), "{}", r.text());
    cluster.shutdown().await;
}

/// Probes off: only the requests' own outcomes judge the backend.
fn requests_only(c: &mut drover_tests::HubConfig) {
    c.health.probe_interval = std::time::Duration::from_secs(3600);
}

async fn passed_through_500s_open_a_lone_backends_breaker(stream: bool) {
    let cluster = ClusterBuilder::new()
        .sim("only", answers_500())
        .hub(requests_only)
        .start()
        .await;
    let mut body = chat_body("m", "doomed");
    body["stream"] = serde_json::json!(stream);
    for n in 1..=3 {
        let r = cluster.client.post("/v1/chat/completions", &body).await;
        // No other backend to retry on: its own 500 comes through as it is,
        // and counts against it.
        assert_eq!(r.status, 500, "{}", r.text());
        assert_eq!(r.backend(), "only");
        assert_eq!(cluster.sim("only").stats().injected_errors, n);
        let want = if n < 3 { "closed" } else { "open" };
        // One request alone never opens a breaker: it is tried once.
        assert_eq!(cluster.breaker("only").await, want, "after {n} requests");
    }
    let r = cluster.client.post("/v1/chat/completions", &body).await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.error_code(), "no_healthy_backend");
    assert_eq!(cluster.sim("only").stats().injected_errors, 3);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passed_through_500s_open_the_breaker() {
    passed_through_500s_open_a_lone_backends_breaker(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passed_through_500s_open_the_breaker_when_streamed_too() {
    passed_through_500s_open_a_lone_backends_breaker(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_successful_plain_answer_closes_a_half_open_breaker() {
    // A long answer arrives in many frames: its end is seen on the last.
    let mut sim = answers_500();
    sim.output_tokens = 20_000;
    let cluster = ClusterBuilder::new()
        .sim("only", sim)
        .hub(requests_only)
        .start()
        .await;
    for _ in 0..3 {
        let r = cluster
            .client
            .post("/v1/chat/completions", &chat_body("m", "doomed"))
            .await;
        assert_eq!(r.status, 500);
    }
    assert_eq!(cluster.breaker("only").await, "open");
    cluster.sim("only").set_faults(Faults::NONE);
    let mut state = String::new();
    for _ in 0..500 {
        state = cluster.breaker("only").await;
        if state == "half_open" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(state, "half_open");
    // The trial: a plain (non-streamed) answer, whose end hyper never polls
    // for once its Content-Length is written.
    let r = cluster
        .client
        .post("/v1/chat/completions", &chat_body("m", "trial"))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    wait_until("the breaker closes", || breaker_now(&cluster) == "closed").await;
    cluster.shutdown().await;
}

/// The breaker as the scheduler holds it, read without an HTTP round trip.
fn breaker_now(cluster: &drover_tests::Cluster) -> &'static str {
    let id = cluster.hub.backend_id("only").unwrap();
    cluster.hub.inspect(|s| {
        s.fleet()
            .view(id)
            .map_or("unreachable", |v| v.breaker.as_str())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_reaches_a_backend_that_would_load_the_model() {
    let mut cold = lmstudio(&["m"], 1, 5);
    // Lists `m` without having it loaded; LM Studio loads it on demand.
    cold.loaded = Vec::new();
    let cluster = ClusterBuilder::new()
        .sim("hot-but-broken", answers_500())
        .sim("cold", cold)
        .start()
        .await;
    let r = cluster
        .client
        .post("/v1/chat/completions", &chat_body("m", "hi"))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.backend(), "cold");
    assert_eq!(cluster.sim("hot-but-broken").stats().injected_errors, 1);
    assert_eq!(cluster.sim("cold").stats().loads, 1);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_probe_does_not_close_a_breaker_that_requests_opened() {
    // Its model list answers, every generation fails.
    let cluster = ClusterBuilder::new()
        .sim("lister", answers_500())
        .sim("steady", lmstudio(&["m"], 2, 5))
        .start()
        .await;
    let mut n = 0;
    while cluster.breaker("lister").await != "open" {
        let r = cluster
            .client
            .post("/v1/chat/completions", &chat_body("m", &format!("r {n}")))
            .await;
        assert_eq!(r.status, 200, "{}", r.text());
        n += 1;
        assert!(n < 50, "the breaker never opened");
    }
    // Probes run every 100 ms and all succeed; none of them may close it.
    // (A negative check over ten probe intervals: a slow machine makes it
    // weaker, never wrong.)
    let until = tokio::time::Instant::now() + std::time::Duration::from_secs(1);
    while tokio::time::Instant::now() < until {
        let state = cluster.breaker("lister").await;
        assert_ne!(state, "closed", "a list probe closed it");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    cluster.shutdown().await;
}

/// A server with model `m` that answers every request with a 500.
fn answers_500() -> SimConfig {
    let mut c = lmstudio(&["m"], 2, 5);
    c.faults = Faults {
        error_rate: 1.0,
        ..Faults::NONE
    };
    c
}

fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(series)
                .map(|v| v.trim().parse::<f64>().unwrap_or(f64::NAN))
        })
        .unwrap_or(0.0)
}
