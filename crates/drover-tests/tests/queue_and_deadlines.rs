//! Backpressure: when every slot is busy requests wait in the hub; a full
//! queue answers 429 with Retry-After; a request that waits past its
//! deadline gets a clear 503 and never reaches a backend.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use drover_tests::{ClusterBuilder, chat_body, lmstudio, wait_until};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_answers_429_with_retry_after() {
    let cluster = ClusterBuilder::new()
        .sim("studio", lmstudio(&["m"], 1, 3_000))
        .hub(|c| c.queue.max_waiting = 2)
        .start()
        .await;
    let mut held = Vec::new();
    for i in 0..3 {
        let client = cluster.client.clone();
        held.push(tokio::spawn(async move {
            client
                .post(
                    "/v1/chat/completions",
                    &chat_body("m", &format!("hold {i}")),
                )
                .await
        }));
    }
    wait_until("one runs and two wait", || {
        cluster.waiting() == 2 && cluster.busy("studio") == 1
    })
    .await;
    let r = cluster
        .client
        .post("/v1/chat/completions", &chat_body("m", "one too many"))
        .await;
    assert_eq!(r.status, 429);
    assert_eq!(r.error_code(), "queue_full");
    let retry_after: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry_after), "retry-after {retry_after}");
    for t in held {
        t.abort();
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_past_the_deadline_gives_503_and_never_reaches_a_backend() {
    let cluster = ClusterBuilder::new()
        .sim("studio", lmstudio(&["m"], 1, 5_000))
        .start()
        .await;
    // Discovery has sent its own probes; count from here.
    let before = cluster.sim("studio").stats().requests_total;
    let client = cluster.client.clone();
    let holder = tokio::spawn(async move {
        client
            .post("/v1/chat/completions", &chat_body("m", "hold"))
            .await
    });
    wait_until("the slot is taken", || cluster.busy("studio") == 1).await;
    let r = cluster
        .client
        .post_with(
            "/v1/chat/completions",
            &[("x-drover-queue-timeout", "0.2")],
            &chat_body("m", "impatient"),
        )
        .await;
    assert_eq!(r.status, 503);
    assert_eq!(r.error_code(), "queue_timeout");
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("'m'")
    );
    assert_eq!(
        cluster.sim("studio").stats().requests_total - before,
        1,
        "only the holder went upstream"
    );
    assert_eq!(cluster.waiting(), 0);
    holder.abort();
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_requests_run_in_turn_as_slots_free() {
    let cluster = ClusterBuilder::new()
        .sim("studio", lmstudio(&["m"], 2, 50))
        .start()
        .await;
    let mut tasks = Vec::new();
    for i in 0..10 {
        let client = cluster.client.clone();
        tasks.push(tokio::spawn(async move {
            client
                .post("/v1/chat/completions", &chat_body("m", &format!("q {i}")))
                .await
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap().status, 200);
    }
    let m = cluster.sim("studio").stats().model("m");
    assert_eq!((m.completed, m.max_in_flight), (10, 2));
    cluster.shutdown().await;
}
