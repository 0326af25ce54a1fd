//! Every kind of server the simulator speaks, behind the hub with its kind
//! left to detection: detected right, discovered (models, slots where the
//! server says, the agents' paths it serves), serving plain and streamed
//! answers, and failing as that server fails. llama.cpp answers 503 while
//! its model loads; vLLM's own queue stops the hub from sending it more.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use drover_tests::{
    Client, ClusterBuilder, Dialect, Faults, SimConfig, chat_body, wait_until_within,
};
use serde_json::json;

fn sim(dialect: Dialect, models: &[&str], slots: usize) -> SimConfig {
    let models: Vec<String> = models.iter().map(|m| m.to_string()).collect();
    SimConfig {
        dialect,
        loaded: models.clone(),
        models,
        slots,
        output_tokens: 6,
        ..SimConfig::default()
    }
}

async fn backend(cluster: &drover_tests::Cluster) -> serde_json::Value {
    cluster.client.get("/admin/backends").await.json()["backends"][0].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_kind_is_detected_discovered_and_serves() {
    for (dialect, kind, agents) in [
        (Dialect::LmStudio, "lmstudio", true),
        (Dialect::Ollama, "ollama", true),
        (Dialect::LlamaCpp, "llamacpp", true),
        (Dialect::Vllm, "vllm", true),
        (Dialect::OpenAi, "openai", false),
    ] {
        let model = if dialect == Dialect::Ollama {
            "qwen2.5:7b"
        } else {
            "m"
        };
        let cluster = ClusterBuilder::new()
            .sim_with("s", sim(dialect, &[model], 3), |b| b.kind = "auto".into())
            .start()
            .await;
        let b = backend(&cluster).await;
        assert_eq!(b["kind"], kind, "{b}");
        let slots = b["models"][0]["slots"].as_u64().unwrap();
        match dialect {
            // These servers report their slots.
            Dialect::LmStudio | Dialect::LlamaCpp => assert_eq!(slots, 3, "{kind}: {b}"),
            // The others do not: config's default of one.
            _ => assert_eq!(slots, 1, "{kind}: {b}"),
        }
        let apis = if agents {
            json!(["responses", "messages"])
        } else {
            json!([])
        };
        assert_eq!(b["apis"], apis, "{kind}: {b}");
        if matches!(dialect, Dialect::Ollama | Dialect::Vllm | Dialect::LlamaCpp) {
            assert!(b["version"].is_string(), "{kind}: {b}");
        }
        assert_eq!(b["models"][0]["state"], "loaded", "{kind}: {b}");
        let loads = matches!(dialect, Dialect::LmStudio | Dialect::Ollama);
        assert_eq!(b["can_load"], loads, "{kind}: {b}");
        if loads {
            assert!(b["memory_used"].as_u64().unwrap() > 0, "{kind}: {b}");
        }

        let r = cluster
            .client
            .post("/v1/chat/completions", &chat_body(model, "hi"))
            .await;
        assert_eq!(r.status, 200, "{kind}: {}", r.text());
        let mut streamed = chat_body(model, "hi");
        streamed["stream"] = json!(true);
        let text = cluster
            .client
            .post("/v1/chat/completions", &streamed)
            .await
            .text();
        assert!(text.trim_end().ends_with("data: [DONE]"), "{kind}: {text}");
        if agents {
            let m = json!({"model": model, "max_tokens": 4, "messages": [{"role": "user", "content": "x"}]});
            let r = cluster.client.post("/v1/messages", &m).await;
            assert_eq!(r.status, 200, "{kind}: {}", r.text());
            assert_eq!(r.json()["type"], "message");
        }

        // It fails as that server fails: its own 500, passed through from
        // the only backend there is.
        cluster.sims[0].set_faults(Faults {
            cannot_generate: true,
            ..Faults::NONE
        });
        let r = cluster
            .client
            .post("/v1/chat/completions", &chat_body(model, "hi"))
            .await;
        assert_eq!(r.status, 500, "{kind}: {}", r.text());
        cluster.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn llamacpp_is_up_but_not_ready_while_its_model_loads() {
    let mut config = sim(Dialect::LlamaCpp, &["m"], 2);
    config.loaded = Vec::new();
    config.load_time = Duration::from_millis(1500);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = drover_sim::SimServer::start(listener, config).unwrap();
    let direct = Client::new(&server.url());
    let health = direct.get("/health").await;
    assert_eq!(health.status, 503);
    assert_eq!(health.json()["error"]["message"], "Loading model");
    let r = direct
        .post("/v1/chat/completions", &chat_body("m", "hi"))
        .await;
    assert_eq!(r.status, 503);
    let adapter = drover_backends::adapter_for(
        drover_backends::BackendKind::LlamaCpp,
        drover_backends::Endpoint::parse(&server.url()).unwrap(),
        drover_backends::HttpClient::new(Duration::from_secs(2)),
        None,
        Duration::from_secs(5),
    );
    // Discovery succeeds: the server is up, its model loading.
    let d = adapter.discover().await.unwrap();
    assert!(d.models.iter().all(|m| !m.loaded()), "{d:?}");
    wait_until_within("the model is ready", Duration::from_secs(10), || {
        let direct = direct.clone();
        async move { direct.try_get("/health").await == Some(200) }
    })
    .await;
    let d = adapter.discover().await.unwrap();
    assert!(d.models[0].loaded(), "{d:?}");
    assert_eq!(d.models[0].slots, Some(2));
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vllm_reporting_a_queue_gets_no_more_work_until_it_drains() {
    // A batch of one; the hub is told it may send four.
    let mut config = sim(Dialect::Vllm, &["m"], 1);
    config.ttft = Duration::from_millis(700);
    let cluster = ClusterBuilder::new()
        .sim_with("gpu", config, |b| b.slots = Some(4))
        .start()
        .await;
    let send = |i: usize| {
        let client = cluster.client.clone();
        tokio::spawn(async move {
            client
                .post("/v1/chat/completions", &chat_body("m", &format!("{i}")))
                .await
                .status
        })
    };
    // Two at once: one runs in vLLM's batch, one waits in vLLM's queue.
    let first = [send(0), send(1)];
    wait_until_within(
        "the hub sees vLLM's queue",
        Duration::from_secs(5),
        || async { backend(&cluster).await["saturated"] == true },
    )
    .await;
    let third = send(2);
    // The third waits in the hub, not in vLLM, while vLLM has a queue.
    wait_until_within(
        "the third waits in the hub",
        Duration::from_secs(5),
        || async { cluster.hub.inspect(|s| s.queue().len()) == 1 },
    )
    .await;
    assert_eq!(cluster.sims[0].stats().model("m").in_flight, 2);
    for call in first {
        assert_eq!(call.await.unwrap(), 200);
    }
    assert_eq!(third.await.unwrap(), 200);
    cluster.shutdown().await;
}

fn adapter_at(
    kind: drover_backends::BackendKind,
    url: &str,
) -> std::sync::Arc<dyn drover_backends::Backend> {
    drover_backends::adapter_for(
        kind,
        drover_backends::Endpoint::parse(url).unwrap(),
        drover_backends::HttpClient::new(Duration::from_secs(2)),
        None,
        Duration::from_secs(5),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ollama_and_lmstudio_load_and_unload_through_their_adapters() {
    use drover_backends::BackendKind;
    for (dialect, kind, model) in [
        (Dialect::Ollama, BackendKind::Ollama, "llama3:8b"),
        (Dialect::LmStudio, BackendKind::LmStudio, "qwen-7b"),
    ] {
        let mut config = sim(dialect, &[model, "nomic-embed-text"], 2);
        config.loaded = Vec::new();
        config.load_time = Duration::from_millis(50);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server = drover_sim::SimServer::start(listener, config).unwrap();
        let adapter = adapter_at(kind, &server.url());
        let d = adapter.discover().await.unwrap();
        assert!(d.can_load && d.can_unload, "{kind}: {d:?}");
        assert_eq!(d.models.len(), 2, "{kind}: {d:?}");
        assert!(d.models.iter().all(|m| !m.loaded()), "{kind}: {d:?}");
        let embed = d.models.iter().find(|m| m.id.contains("embed")).unwrap();
        assert_eq!(embed.kind, drover_backends::ModelType::Embedding, "{kind}");

        let loaded = adapter.load(model).await.unwrap();
        assert!(loaded.seconds >= 0.04, "{kind}: {loaded:?}");
        let d = adapter.discover().await.unwrap();
        let m = d.models.iter().find(|m| m.id == model).unwrap();
        assert!(m.loaded(), "{kind}: {d:?}");
        assert!(m.size_bytes.is_some_and(|s| s > 0), "{kind}: {m:?}");
        assert!(d.memory_used.is_some_and(|u| u > 0), "{kind}: {d:?}");
        assert_eq!(server.stats().loads, 1);

        adapter.unload(model).await.unwrap();
        let d = adapter.discover().await.unwrap();
        assert!(d.models.iter().all(|m| !m.loaded()), "{kind}: {d:?}");
        server.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn llamacpp_router_mode_loads_evicts_and_unloads() {
    use drover_backends::{BackendKind, ModelState};
    let mut config = sim(Dialect::LlamaCppRouter, &["a", "b", "c"], 2);
    config.loaded = Vec::new();
    config.max_loaded = Some(2);
    config.load_time = Duration::from_millis(30);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = drover_sim::SimServer::start(listener, config).unwrap();
    let found = drover_backends::detect(
        &drover_backends::Endpoint::parse(&server.url()).unwrap(),
        &drover_backends::HttpClient::new(Duration::from_secs(2)),
        None,
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    assert_eq!(found.kind, BackendKind::LlamaCpp);
    let router = adapter_at(BackendKind::LlamaCpp, &server.url());
    let d = router.discover().await.unwrap();
    assert_eq!(d.mode.as_deref(), Some("router"));
    assert_eq!(d.max_loaded, Some(2), "its --models-max, from /props");
    assert!(
        d.models.iter().all(|m| m.state == ModelState::Unloaded),
        "{d:?}"
    );
    for m in ["a", "b", "c"] {
        router.load(m).await.unwrap();
    }
    let d = router.discover().await.unwrap();
    let state = |id: &str| d.models.iter().find(|m| m.id == id).unwrap().state;
    assert_eq!(
        state("a"),
        ModelState::Unloaded,
        "least recently used: {d:?}"
    );
    assert_eq!(state("b"), ModelState::Loaded);
    assert_eq!(state("c"), ModelState::Loaded);
    let c = d.models.iter().find(|m| m.id == "c").unwrap();
    assert_eq!((c.slots, c.busy), (Some(2), Some(0)), "{c:?}");
    // Its answer comes before the status changes; the unload waits for it.
    router.unload("c").await.unwrap();
    let d = router.discover().await.unwrap();
    assert!(
        d.models
            .iter()
            .any(|m| m.id == "c" && m.state == ModelState::Unloaded)
    );
    // Unloading it again ("model is not running") is done already.
    router.unload("c").await.unwrap();
    // A request naming an unloaded model loads it.
    let r = Client::new(&server.url())
        .post("/v1/chat/completions", &chat_body("a", "hi"))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(server.stats().model("a").loaded);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ollama_evicts_the_least_recently_used_beyond_its_limit() {
    let mut config = sim(Dialect::Ollama, &["a:7b", "b:7b", "c:7b"], 1);
    config.loaded = Vec::new();
    config.max_loaded = Some(2);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = drover_sim::SimServer::start(listener, config).unwrap();
    let client = Client::new(&server.url());
    for m in ["a:7b", "b:7b", "a:7b", "c:7b"] {
        let r = client
            .post("/v1/chat/completions", &chat_body(m, "hi"))
            .await;
        assert_eq!(r.status, 200);
    }
    let ps = client.get("/api/ps").await.json();
    let mut loaded: Vec<&str> = ps["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    loaded.sort();
    assert_eq!(loaded, ["a:7b", "c:7b"], "b was the least recently used");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_decides_what_loads_and_each_model_takes_its_own_load_time() {
    use drover_backends::BackendKind;
    const GIB: u64 = 1 << 30;
    for (dialect, kind, evicts) in [
        (Dialect::Ollama, BackendKind::Ollama, true),
        (Dialect::LmStudio, BackendKind::LmStudio, false),
    ] {
        let mut config = sim(dialect, &["small", "large", "huge"], 1);
        config.loaded = Vec::new();
        config.memory = Some(10 * GIB);
        config.model_sizes = [("small", 3 * GIB), ("large", 8 * GIB), ("huge", 12 * GIB)]
            .into_iter()
            .map(|(m, s)| (m.to_string(), s))
            .collect();
        config.model_load_times = [("large".to_string(), Duration::from_millis(300))].into();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server = drover_sim::SimServer::start(listener, config).unwrap();
        let adapter = adapter_at(kind, &server.url());
        let small = adapter.load("small").await.unwrap();
        // The huge model fits nowhere, whatever is evicted.
        let huge = adapter.load("huge").await.unwrap_err().to_string();
        assert!(huge.contains("more system memory"), "{kind}: {huge}");
        let large = adapter.load("large").await;
        let d = adapter.discover().await.unwrap();
        let loaded: Vec<&str> = d
            .models
            .iter()
            .filter(|m| m.loaded())
            .map(|m| m.id.as_str())
            .collect();
        if evicts {
            // 3 + 8 > 10: the small model made room.
            let large = large.unwrap();
            assert!(large.seconds >= 0.29, "{kind}: {large:?}");
            assert!(small.seconds < 0.1, "{kind}: {small:?}");
            assert_eq!(loaded, ["large"], "{kind}");
        } else {
            let err = large.unwrap_err().to_string();
            assert!(err.contains("more system memory"), "{kind}: {err}");
            assert_eq!(loaded, ["small"], "{kind}");
        }
        server.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lmstudio_makes_a_second_instance_and_unloading_takes_every_one() {
    use drover_backends::BackendKind;
    let config = sim(Dialect::LmStudio, &["qwen-7b"], 4);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = drover_sim::SimServer::start(listener, config).unwrap();
    let direct = Client::new(&server.url());
    // Loading a loaded model makes another instance, as LM Studio does.
    let r = direct
        .post("/api/v1/models/load", &json!({"model": "qwen-7b"}))
        .await;
    assert_eq!(r.json()["instance_id"], "qwen-7b:2", "{}", r.text());
    let adapter = adapter_at(BackendKind::LmStudio, &server.url());
    let d = adapter.discover().await.unwrap();
    assert_eq!(d.models[0].instances, ["qwen-7b", "qwen-7b:2"]);
    assert_eq!(d.models[0].slots, Some(8), "both instances' slots");
    adapter.unload("qwen-7b").await.unwrap();
    let d = adapter.discover().await.unwrap();
    assert!(!d.models[0].loaded(), "{d:?}");
    server.shutdown().await;
}
