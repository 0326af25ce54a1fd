//! What the dashboard draws, read the way it reads it: `/admin/overview`
//! (traffic per backend and model, retries and failovers, refusals and
//! why, the queue by model, priority and client) and the `/admin/events`
//! stream (an event a second, live numbers, ended by shutdown), and each
//! backend's room for models, counted by the hub, not by the page.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use bytes::Bytes;
use drover_hub::config::ClientConfig;
use drover_tests::{ClusterBuilder, Faults, SimConfig, chat_body, lmstudio, openai, wait_until};
use http::Method;
use http_body_util::BodyExt;
use serde_json::Value;

fn named<'a>(list: &'a Value, name: &str) -> &'a Value {
    list.as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == name || e["model"] == name || e["client"] == name)
        .unwrap_or_else(|| panic!("{name} in {list}"))
}

/// Sums a count over the series' points.
fn total(overview: &Value, count: impl Fn(&Value) -> u64) -> u64 {
    overview["traffic"]["series"]
        .as_array()
        .unwrap()
        .iter()
        .map(count)
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_overview_counts_answers_retries_failovers_tokens_and_refusals() {
    let good = SimConfig {
        output_tokens: 8,
        ..openai(&["m"], 1, 50)
    };
    let bad = SimConfig {
        faults: Faults {
            error_rate: 1.0,
            ..Faults::NONE
        },
        ..openai(&["m"], 1, 50)
    };
    let cluster = ClusterBuilder::new()
        .sim("good", good)
        .sim("bad", bad)
        .hub(|c| c.health.failure_threshold = 1000)
        .start()
        .await;
    // Two at once on two one-slot backends: one starts on each, and the one
    // on `bad` fails over to `good`.
    let mut answered = 0;
    for round in 0..3 {
        let tasks: Vec<_> = (0..2)
            .map(|i| {
                let client = cluster.client.clone();
                tokio::spawn(async move {
                    client
                        .post(
                            "/v1/chat/completions",
                            &chat_body("m", &format!("{round} {i}")),
                        )
                        .await
                })
            })
            .collect();
        for t in tasks {
            assert_eq!(t.await.unwrap().status, 200);
            answered += 1;
        }
    }
    let r = cluster
        .client
        .post("/v1/chat/completions", &chat_body("nope", "hi"))
        .await;
    assert_eq!(r.status, 404);

    let overview = cluster.client.get("/admin/overview").await;
    assert_eq!(overview.status, 200, "{}", overview.text());
    let o = overview.json();
    assert_eq!(
        total(&o, |p| p["requests"].as_u64().unwrap()),
        answered + 1,
        "{o}"
    );
    assert_eq!(total(&o, |p| p["errors"]["404"].as_u64().unwrap_or(0)), 1);
    let retries = total(&o, |p| p["retries"].as_u64().unwrap());
    let failovers = total(&o, |p| p["failovers"].as_u64().unwrap());
    assert!(
        retries >= 1 && failovers >= 1 && failovers <= retries,
        "{o}"
    );
    assert_eq!(total(&o, |p| p["tokens"].as_u64().unwrap()), 8 * answered);

    let good = named(&o["traffic"]["by_backend"], "good");
    assert_eq!(good["requests"].as_u64(), Some(answered));
    assert_eq!(good["failovers"].as_u64(), Some(failovers));
    let bad = named(&o["traffic"]["by_backend"], "bad");
    assert_eq!(bad["retries"].as_u64(), Some(retries));
    assert_eq!(bad["requests"].as_u64(), Some(0), "it answered nothing");
    let m = named(&o["traffic"]["by_model"], "m");
    assert!(m["ttft_p50_ms"].as_f64().unwrap() >= 25.0, "{m}");
    assert!(
        m["latency_p95_ms"].as_f64().unwrap() >= m["ttft_p50_ms"].as_f64().unwrap(),
        "{m}"
    );
    assert!(o["traffic"]["now"]["requests_per_second"].as_f64().unwrap() > 0.0);

    let refused = &o["refused"][0];
    assert_eq!(
        (refused["status"].as_u64(), refused["code"].as_str()),
        (Some(404), Some("model_not_found")),
        "{o}"
    );
    assert_eq!(refused["model"], "nope");
    assert_eq!(refused["client"], "anonymous");
    assert_eq!(o["backends"].as_array().unwrap().len(), 2);
    assert!(o["backends"][0]["last_probe_unix_ms"].as_u64().unwrap() > 0);
    assert_eq!(named(&o["queue"]["by_model"], "m")["waiting"], 0);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_queue_shows_who_waits_for_what_and_for_how_long() {
    let cluster = ClusterBuilder::new()
        .sim("one", openai(&["m"], 1, 2_000))
        .hub(|c| {
            c.clients = vec![ClientConfig {
                name: "alice".into(),
                key: "alice-key".into(),
                priority: Some(70),
            }]
        })
        .start()
        .await;
    let tasks: Vec<_> = (0..3)
        .map(|i| {
            let client = cluster.client.clone();
            tokio::spawn(async move {
                client
                    .post_with(
                        "/v1/chat/completions",
                        &[("authorization", "Bearer alice-key")],
                        &chat_body("m", &format!("q {i}")),
                    )
                    .await
            })
        })
        .collect();
    wait_until("two wait", || cluster.waiting() == 2).await;
    let o = cluster.client.get("/admin/overview").await.json();
    let q = &o["queue"];
    assert_eq!(q["waiting"], 2, "{q}");
    assert_eq!(named(&q["by_client"], "alice")["waiting"], 2, "{q}");
    assert_eq!(q["by_priority"][0]["priority"], 70, "{q}");
    let m = named(&q["by_model"], "m");
    assert_eq!(m["waiting"], 2, "{q}");
    assert!(m["oldest_ms"].is_u64() && q["oldest_ms"].is_u64(), "{q}");
    assert!(m["expected_wait_ms"].as_u64().unwrap() > 0, "{q}");
    for t in tasks {
        assert_eq!(t.await.unwrap().status, 200);
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_overview_carries_the_room_for_models_as_the_hub_counts_it() {
    const GIB: u64 = 1 << 30;
    let mut sim = SimConfig {
        loaded: vec!["a".into()],
        ..lmstudio(&["a", "b"], 2, 0)
    };
    // Small enough that both fit: nothing is evicted to load `b`.
    sim.model_sizes.insert("a".into(), GIB);
    sim.model_sizes.insert("b".into(), GIB);
    let cluster = ClusterBuilder::new()
        .sim_with("s", sim, |b| {
            b.slots = Some(2);
            b.memory = Some(10 * GIB);
            b.slot_buffer = Some(GIB);
            b.system = Some(2 * GIB);
            b.margin = Some(GIB);
        })
        .start()
        .await;
    let room = async || {
        let o = cluster.client.get("/admin/overview").await.json();
        named(&o["backends"], "s")["memory_for_models"].as_u64()
    };
    // Ten less the system's two, the margin's one and a buffer for each of
    // `a`'s two slots; `b` is not in memory and takes nothing.
    assert_eq!(room().await, Some(5 * GIB));
    let r = cluster
        .client
        .post("/admin/models/b/load", &serde_json::json!({"backend": "s"}))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(room().await, Some(3 * GIB), "b's two slots take theirs");
    cluster.shutdown().await;
}

/// The `data` of each complete event in `text`.
fn events(text: &str) -> Vec<Value> {
    text.split("\n\n")
        .filter_map(|e| e.lines().find_map(|l| l.strip_prefix("data: ")))
        .map(|d| serde_json::from_str(d).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_event_stream_is_live_and_ends_when_the_hub_stops() {
    let cluster = ClusterBuilder::new()
        .sim("one", openai(&["m"], 1, 0))
        .start()
        .await;
    let response = cluster
        .client
        .send(Method::GET, "/admin/events", &[], Bytes::new())
        .await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"].to_str().unwrap(),
        "text/event-stream"
    );
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Bytes>();
    let reader = tokio::spawn(async move {
        let mut body = response.into_body();
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame.unwrap().into_data() {
                tx.send(data).unwrap();
            }
        }
    });
    let mut text = String::new();
    let mut next = async || {
        let chunk = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("an event within ten seconds")
            .expect("the stream is open");
        text.push_str(std::str::from_utf8(&chunk).unwrap());
        events(&text)
    };
    let first = next().await;
    assert_eq!(
        total(&first[0], |p| p["requests"].as_u64().unwrap()),
        0,
        "nothing yet"
    );
    let r = cluster
        .client
        .post("/v1/chat/completions", &chat_body("m", "hi"))
        .await;
    assert_eq!(r.status, 200);
    // A later event counts it, in the newest points it carries.
    loop {
        let seen = next().await;
        let last = seen.last().unwrap();
        if total(last, |p| p["requests"].as_u64().unwrap()) == 1 {
            assert!(last["at_ms"].as_u64() > first[0]["at_ms"].as_u64());
            break;
        }
    }
    cluster.shutdown().await;
    tokio::time::timeout(Duration::from_secs(10), reader)
        .await
        .expect("the stream ends when the hub shuts down")
        .unwrap();
}
