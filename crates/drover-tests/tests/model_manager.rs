//! The model manager over real HTTP, against simulated Ollama servers that
//! load, unload and evict as Ollama does: loads on demand (single-flight,
//! where a request starts soonest), eviction by least recent use, pins,
//! time to live, refusal of a model that fits nowhere, a failed load, the
//! aging bound between models that cannot all be held, warm models after a
//! restart, and a server's own eviction left alone.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use drover_hub::ModelAlias;
use drover_tests::{ClusterBuilder, Dialect, SimConfig, chat_body, wait_until, wait_until_within};
use serde_json::json;

const GIB: u64 = 1 << 30;

/// An Ollama server listing `models`, none loaded, each loading in `load`.
fn ollama(models: &[&str], load: Duration) -> SimConfig {
    SimConfig {
        dialect: Dialect::Ollama,
        models: models.iter().map(|m| m.to_string()).collect(),
        loaded: Vec::new(),
        load_time: load,
        slots: 2,
        ttft: Duration::from_millis(5),
        ..SimConfig::default()
    }
}

fn loads(cluster: &drover_tests::Cluster, sim: &str, model: &str) -> u64 {
    cluster.sim(sim).stats().model(model).loads
}

fn loaded(cluster: &drover_tests::Cluster, sim: &str, model: &str) -> bool {
    cluster.sim(sim).stats().model(model).loaded
}

async fn chat(cluster: &drover_tests::Cluster, model: &str) -> drover_tests::Reply {
    cluster
        .client
        .post("/v1/chat/completions", &chat_body(model, "hi"))
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_concurrent_requests_for_a_cold_model_make_one_load() {
    let cluster = ClusterBuilder::new()
        .sim("a", ollama(&["m"], Duration::from_millis(300)))
        .sim("b", ollama(&["m"], Duration::from_millis(300)))
        .start()
        .await;
    let mut all = tokio::task::JoinSet::new();
    for _ in 0..100 {
        let client = cluster.client.clone();
        all.spawn(async move {
            client
                .post("/v1/chat/completions", &chat_body("m", "hi"))
                .await
        });
    }
    while let Some(r) = all.join_next().await {
        let r = r.unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let total = loads(&cluster, "a", "m") + loads(&cluster, "b", "m");
    assert_eq!(total, 1, "one load for a hundred requests");
    let on = if loads(&cluster, "a", "m") == 1 {
        "a"
    } else {
        "b"
    };
    let metrics = cluster.client.get("/metrics").await.text();
    for line in [
        format!(r#"drover_model_loads_total{{backend="{on}",model="m",outcome="ok"}} 1"#),
        format!(r#"drover_model_residency{{backend="{on}",model="m",state="loaded"}} 1"#),
    ] {
        assert!(metrics.contains(&line), "{line} in\n{metrics}");
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_load_goes_where_the_request_starts_soonest() {
    let mut slow = ollama(&["m"], Duration::from_millis(100));
    slow.model_load_times
        .insert("m".into(), Duration::from_millis(1500));
    let cluster = ClusterBuilder::new()
        .sim("slow", slow)
        .sim("fast", ollama(&["m"], Duration::from_millis(100)))
        .start()
        .await;
    // One load on each, by the operator, teaches the hub their load times.
    for backend in ["slow", "fast"] {
        let c = &cluster.client;
        let r = c
            .post("/admin/models/m/load", &json!({"backend": backend}))
            .await;
        assert_eq!(r.status, 200, "{}", r.text());
        let r = c
            .post("/admin/models/m/unload", &json!({"backend": backend}))
            .await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let r = chat(&cluster, "m").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.backend(), "fast");
    assert_eq!(loads(&cluster, "slow", "m"), 1, "only the operator's");
    assert_eq!(loads(&cluster, "fast", "m"), 2);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn room_is_made_by_unloading_the_least_recently_used_idle_model_not_a_pinned_one() {
    let cluster = ClusterBuilder::new()
        .sim_with(
            "o",
            ollama(&["a", "b", "c", "d"], Duration::from_millis(20)),
            |b| b.max_loaded = Some(2),
        )
        .start()
        .await;
    for model in ["a", "b", "a"] {
        assert_eq!(chat(&cluster, model).await.status, 200);
    }
    // b is the least recently used: it makes room for c.
    assert_eq!(chat(&cluster, "c").await.status, 200);
    let stats = cluster.sim("o").stats();
    assert!(!stats.model("b").loaded && stats.model("b").unloads == 1);
    assert!(stats.model("a").loaded && stats.model("a").unloads == 0);
    assert!(stats.model("c").loaded);

    // Pinned, a stays although it is now the least recently used.
    let r = cluster.client.post("/admin/models/a/pin", &json!({})).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(chat(&cluster, "d").await.status, 200);
    let stats = cluster.sim("o").stats();
    assert!(stats.model("a").loaded, "the pinned model stays");
    assert!(!stats.model("c").loaded && stats.model("d").loaded);
    let listed = cluster.client.get("/admin/backends/o").await.json();
    let a = listed["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == "a")
        .unwrap()
        .clone();
    assert_eq!(a["pinned"], true, "{a}");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_on_one_machine_share_its_memory() {
    // Ollama and another server on one 10 GiB machine: each model of 6 GiB
    // fits either server alone, not both at once.
    let sized = |models: &[&str]| {
        let mut sim = ollama(models, Duration::from_millis(20));
        for m in models {
            sim.model_sizes.insert((*m).to_string(), 6 * GIB);
        }
        sim
    };
    let on_box = |b: &mut drover_hub::BackendSpec| b.machine = Some("box".into());
    let cluster = ClusterBuilder::new()
        .sim_with("one", sized(&["a"]), on_box)
        .sim_with("two", sized(&["b"]), on_box)
        .hub(|c| {
            c.machines.insert(
                "box".into(),
                drover_hub::config::MachineSpec {
                    memory: 10 * GIB,
                    ..Default::default()
                },
            );
        })
        .start()
        .await;
    assert_eq!(chat(&cluster, "a").await.status, 200);
    assert!(loaded(&cluster, "one", "a"));
    // b's load on the second server first unloads a from the first.
    assert_eq!(chat(&cluster, "b").await.status, 200);
    assert!(loaded(&cluster, "two", "b"));
    let a = cluster.sim("one").stats().model("a");
    assert!(!a.loaded && a.unloads == 1, "a made room on its machine");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_model_is_unloaded_after_its_time_to_live() {
    let cluster = ClusterBuilder::new()
        .sim("o", ollama(&["m", "keep"], Duration::from_millis(20)))
        .hub(|c| {
            c.manager.ttl = Some(Duration::from_millis(500));
            c.models = vec![ModelAlias {
                name: "keep".into(),
                ttl: Some(Duration::from_secs(3600)),
                ..ModelAlias::default()
            }];
        })
        .start()
        .await;
    assert_eq!(chat(&cluster, "m").await.status, 200);
    assert_eq!(chat(&cluster, "keep").await.status, 200);
    wait_until("m is unloaded for idleness", || !loaded(&cluster, "o", "m")).await;
    assert!(
        loaded(&cluster, "o", "keep"),
        "its own time to live is longer"
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_that_fits_nowhere_is_refused_naming_its_size() {
    let mut sim = ollama(&["huge", "small"], Duration::from_millis(20));
    sim.model_sizes.insert("huge".into(), 40 * GIB);
    sim.model_sizes.insert("small".into(), GIB);
    let cluster = ClusterBuilder::new()
        .sim_with("o", sim, |b| b.memory = Some(24 * GIB))
        .start()
        .await;
    assert_eq!(chat(&cluster, "small").await.status, 200);
    let r = chat(&cluster, "huge").await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.error_code(), "model_does_not_fit");
    let message = r.json()["error"]["message"].as_str().unwrap().to_string();
    assert!(
        message.contains("'huge' (40G)") && message.contains("has 24G"),
        "{message}"
    );
    let stats = cluster.sim("o").stats();
    assert_eq!(stats.model("huge").loads, 0);
    assert!(stats.model("small").loaded, "nothing was evicted for it");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_load_says_where_and_why_and_is_not_retried_at_once() {
    // The server has 4 GiB; the hub was not told, so it tries.
    let mut sim = ollama(&["big"], Duration::from_millis(20));
    sim.model_sizes.insert("big".into(), 8 * GIB);
    sim.memory = Some(4 * GIB);
    let cluster = ClusterBuilder::new().sim("o", sim).start().await;
    let r = chat(&cluster, "big").await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.error_code(), "model_load_failed");
    let message = r.json()["error"]["message"].as_str().unwrap().to_string();
    assert!(
        message.contains("could not be loaded on backend 'o'") && message.contains("memory"),
        "{message}"
    );
    let asked = cluster.sim("o").stats().requests_total;
    // At once again: told, with when to come back, and no new attempt.
    let r = chat(&cluster, "big").await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.error_code(), "model_load_failed");
    assert!(r.header("retry-after").is_some(), "{:?}", r.text());
    assert_eq!(cluster.sim("o").stats().requests_total, asked);
    let metrics = cluster.client.get("/metrics").await.text();
    let line = r#"drover_model_loads_total{backend="o",model="big",outcome="failed"} 1"#;
    assert!(metrics.contains(line), "{line} in\n{metrics}");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_outwaits_a_load_is_told_the_model_is_loading() {
    let cluster = ClusterBuilder::new()
        .sim("o", ollama(&["m"], Duration::from_secs(3)))
        .hub(|c| c.queue.timeout = Duration::from_millis(500))
        .start()
        .await;
    let r = chat(&cluster, "m").await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.error_code(), "model_loading");
    assert!(r.header("retry-after").is_some());
    let message = r.json()["error"]["message"].as_str().unwrap().to_string();
    assert!(
        message.contains("still loading on backend 'o'"),
        "{message}"
    );
    // The load goes on, and the model serves once it is done.
    wait_until_within("the load ends", Duration::from_secs(10), || async {
        chat(&cluster, "m").await.status == 200
    })
    .await;
    assert_eq!(loads(&cluster, "o", "m"), 1);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_passed_over_for_a_busy_one_gets_its_turn_after_swap_after() {
    let mut sim = ollama(&["hot", "cold"], Duration::from_millis(50));
    sim.slots = 1;
    sim.ttft = Duration::from_millis(100);
    let cluster = ClusterBuilder::new()
        .sim_with("o", sim, |b| {
            b.max_loaded = Some(1);
            b.slots = Some(1);
        })
        .hub(|c| {
            c.manager.swap_after = Duration::from_secs(1);
            c.queue.timeout = Duration::from_secs(20);
        })
        .start()
        .await;
    // Two clients keep "hot" busy and its queue never empty.
    let stop = Arc::new(AtomicBool::new(false));
    let busy = |stop: Arc<AtomicBool>| {
        let client = cluster.client.clone();
        async move {
            let mut served = 0u32;
            while !stop.load(Ordering::Relaxed) {
                let r = client
                    .post("/v1/chat/completions", &chat_body("hot", "hi"))
                    .await;
                if r.status == 200 {
                    served += 1;
                }
            }
            served
        }
    };
    let hot = async { tokio::join!(busy(stop.clone()), busy(stop.clone())) };
    let cold = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let started = tokio::time::Instant::now();
        let r = chat(&cluster, "cold").await;
        let waited = started.elapsed();
        stop.store(true, Ordering::Relaxed);
        (r, waited)
    };
    let ((hot_a, hot_b), (r, waited)) = tokio::join!(hot, cold);
    assert_eq!(r.status, 200, "{}", r.text());
    // Passed over for at most swap_after, plus a hot request's end and the
    // swap; far below the queue timeout it would otherwise reach.
    assert!(waited < Duration::from_secs(8), "cold waited {waited:?}");
    assert!(
        waited >= Duration::from_millis(900),
        "hot went first: {waited:?}"
    );
    assert!(hot_a + hot_b > 3, "hot kept being served");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warm_models_are_loaded_at_start_and_again_after_a_restart() {
    let cluster = ClusterBuilder::new()
        .sim("o", ollama(&["w", "other"], Duration::from_millis(20)))
        .hub(|c| {
            c.models = vec![ModelAlias {
                name: "w".into(),
                warm: true,
                ..ModelAlias::default()
            }];
        })
        .start()
        .await;
    wait_until("the warm model is loaded", || loaded(&cluster, "o", "w")).await;
    assert!(!loaded(&cluster, "o", "other"));
    // The server goes away and comes back with nothing loaded.
    let sim = cluster.sim("o");
    sim.refuse_connections(true).await.unwrap();
    sim.set_loaded("w", false).unwrap();
    wait_until_within("the hub notices", Duration::from_secs(10), || async {
        cluster.breaker("o").await != "closed"
    })
    .await;
    sim.refuse_connections(false).await.unwrap();
    wait_until("the warm model is loaded again", || {
        loads(&cluster, "o", "w") == 2
    })
    .await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_the_server_unloaded_on_its_own_is_not_loaded_back_unasked() {
    let mut sim = ollama(&["a", "b"], Duration::from_millis(20));
    sim.loaded = vec!["a".into(), "b".into()];
    let cluster = ClusterBuilder::new().sim("o", sim).start().await;
    // Ollama's keep-alive ran out for "a".
    cluster.sim("o").set_loaded("a", false).unwrap();
    wait_until_within(
        "the hub sees it unloaded",
        Duration::from_secs(10),
        || async {
            let listed = cluster.client.get("/admin/backends/o").await.json();
            listed["models"]
                .as_array()
                .unwrap()
                .iter()
                .any(|m| m["id"] == "a" && m["residency"] == "unloaded")
        },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(loads(&cluster, "o", "a"), 0, "not loaded back unasked");
    // Asked for, once.
    assert_eq!(chat(&cluster, "a").await.status, 200);
    assert_eq!(loads(&cluster, "o", "a"), 1);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_for_a_model_a_server_is_still_loading_wait_for_it_in_the_hub() {
    // llama.cpp answers 503 "Loading model" to work while it loads at start.
    let sim = SimConfig {
        dialect: Dialect::LlamaCpp,
        models: vec!["m".into()],
        loaded: Vec::new(),
        load_time: Duration::from_millis(1500),
        slots: 2,
        ..SimConfig::default()
    };
    let cluster = ClusterBuilder::new().sim("llama", sim).start().await;
    let listed = cluster.client.get("/admin/backends/llama").await.json();
    assert_eq!(listed["models"][0]["residency"], "loading", "{listed}");
    // For how long so far, which the dashboard shows against past loads.
    assert!(
        listed["models"][0]["loading_seconds"].as_f64().unwrap() >= 0.0,
        "{listed}"
    );
    let r = chat(&cluster, "m").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        cluster.sim("llama").stats().requests_total,
        1,
        "nothing was sent while it loaded"
    );
    cluster.shutdown().await;
}
