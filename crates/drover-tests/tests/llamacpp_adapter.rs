//! The llama.cpp adapter and kind detection against the real `llama-server`
//! (tiny real models): one model with `-np 2`, and router mode over a
//! directory of three models with `--models-max 2`. Needs
//! `DROVER_LLAMA_SERVER` and `DROVER_TINY_GGUF_DIR` (`scripts/test` sets
//! both; see `drover_tests::LlamaServer`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use drover_backends::{
    Backend, BackendKind, Endpoint, HttpClient, ModelState, adapter_for, detect,
};
use drover_tests::{Client, LlamaServer, wait_until_within};
use serde_json::json;

const TIMEOUT: Duration = Duration::from_secs(10);

fn client() -> HttpClient {
    HttpClient::new(Duration::from_secs(3))
}

fn adapter(url: &str) -> std::sync::Arc<dyn Backend> {
    adapter_for(
        BackendKind::LlamaCpp,
        Endpoint::parse(url).unwrap(),
        client(),
        None,
        TIMEOUT,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_model_its_slots_and_busy_slots_are_discovered() {
    let model = LlamaServer::model("tiny-a");
    let server = LlamaServer::start(
        &["-m", model.to_str().unwrap(), "-np", "2", "-c", "4096"],
        "/health",
    )
    .await;
    let found = detect(
        &Endpoint::parse(&server.url).unwrap(),
        &client(),
        None,
        TIMEOUT,
    )
    .await
    .unwrap();
    assert_eq!(found.kind, BackendKind::LlamaCpp);
    let llama = adapter(&server.url);
    let d = llama.discover().await.unwrap();
    assert_eq!(d.models.len(), 1, "{d:?}");
    let m = &d.models[0];
    assert_eq!(m.state, ModelState::Loaded);
    assert_eq!(m.slots, Some(2));
    assert_eq!(m.busy, Some(0));
    assert!(m.size_bytes.is_some_and(|s| s > 0), "{m:?}");
    assert_eq!(d.apis.messages, Some(true));
    assert!(d.version.is_some(), "build_info: {d:?}");
    assert!(!d.can_load, "one model: nothing to load");
    llama.generate(&m.id).await.unwrap();

    // A long generation holds one slot: /slots says so.
    let id = m.id.clone();
    let url = server.url.clone();
    let long = tokio::spawn(async move {
        Client::new(&url)
            .post(
                "/v1/chat/completions",
                &json!({"model": id, "max_tokens": 4000, "messages": [{"role": "user", "content": "go"}],
                        "ignore_eos": true}),
            )
            .await
            .status
    });
    wait_until_within("a slot shows busy", Duration::from_secs(20), || {
        let llama = llama.clone();
        async move {
            llama
                .discover()
                .await
                .is_ok_and(|d| d.models[0].busy == Some(1))
        }
    })
    .await;
    assert_eq!(long.await.unwrap(), 200);
    let unload = llama.unload(&m.id).await.unwrap_err().to_string();
    assert!(unload.contains("router mode"), "{unload}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn router_mode_models_states_load_and_unload() {
    let dir = LlamaServer::models_dir();
    let server = LlamaServer::start(
        &[
            "--models-dir",
            dir.to_str().unwrap(),
            "--models-max",
            "2",
            "-np",
            "2",
            "-c",
            "2048",
        ],
        "/models",
    )
    .await;
    let found = detect(
        &Endpoint::parse(&server.url).unwrap(),
        &client(),
        None,
        TIMEOUT,
    )
    .await
    .unwrap();
    assert_eq!(found.kind, BackendKind::LlamaCpp);
    let llama = adapter(&server.url);
    let d = llama.discover().await.unwrap();
    assert_eq!(d.mode.as_deref(), Some("router"));
    assert!(d.can_load && d.can_unload);
    // Its --models-max, beyond which it evicts on its own.
    assert_eq!(d.max_loaded, Some(2));
    let ids: Vec<String> = d.models.iter().map(|m| m.id.clone()).collect();
    for name in ["tiny-a", "tiny-b", "tiny-c"] {
        assert!(ids.iter().any(|id| id.contains(name)), "{ids:?}");
    }
    assert!(
        d.models.iter().all(|m| m.state == ModelState::Unloaded),
        "{d:?}"
    );
    let id = |name: &str| ids.iter().find(|id| id.contains(name)).unwrap().clone();

    let loaded = llama.load(&id("tiny-a")).await.unwrap();
    assert!(loaded.seconds >= 0.0);
    let d = llama.discover().await.unwrap();
    let a = d.models.iter().find(|m| m.id == id("tiny-a")).unwrap();
    assert_eq!(a.state, ModelState::Loaded);
    assert_eq!(a.slots, Some(2), "{a:?}");
    llama.generate(&id("tiny-a")).await.unwrap();

    // A third model beyond --models-max 2 evicts the least recently used.
    llama.load(&id("tiny-b")).await.unwrap();
    llama.load(&id("tiny-c")).await.unwrap();
    let d = llama.discover().await.unwrap();
    let loaded: Vec<&str> = d
        .models
        .iter()
        .filter(|m| m.loaded())
        .map(|m| m.id.as_str())
        .collect();
    assert_eq!(loaded.len(), 2, "{d:?}");
    assert!(!loaded.contains(&id("tiny-a").as_str()), "{loaded:?}");

    llama.unload(&id("tiny-c")).await.unwrap();
    wait_until_within("tiny-c unloads", Duration::from_secs(10), || {
        let llama = llama.clone();
        let c = id("tiny-c");
        async move {
            llama.discover().await.is_ok_and(|d| {
                d.models
                    .iter()
                    .any(|m| m.id == c && m.state == ModelState::Unloaded)
            })
        }
    })
    .await;
}
