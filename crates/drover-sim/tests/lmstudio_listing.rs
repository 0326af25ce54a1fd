//! LM Studio's model listings have the shapes of backend-apis.md §1.1-1.3.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use drover_sim::{Dialect, SimConfig};
use http::StatusCode;
use serde_json::Value;

fn config() -> SimConfig {
    SimConfig {
        dialect: Dialect::LmStudio,
        models: vec![
            "qwen2.5-7b-instruct".into(),
            "text-embedding-nomic-embed-text-v1.5".into(),
            "lmstudio-community/llama-3.2-1b".into(),
        ],
        loaded: vec!["qwen2.5-7b-instruct".into()],
        slots: 3,
        ..SimConfig::default()
    }
}

fn by_id<'a>(list: &'a [Value], field: &str, id: &str) -> &'a Value {
    list.iter()
        .find(|m| m[field] == id)
        .unwrap_or_else(|| panic!("{id} missing from {list:?}"))
}

#[tokio::test]
async fn v1_models_lists_every_downloaded_model() {
    let sim = start(config()).await;
    let (status, list) = get(&sim, "/v1/models").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["object"], "list");
    assert_eq!(list["data"].as_array().unwrap().len(), 3);
    within(sim.shutdown()).await;
}

#[tokio::test]
async fn api_v0_models_reports_type_and_state() {
    let sim = start(config()).await;
    let (status, list) = get(&sim, "/api/v0/models").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["object"], "list");
    let data = list["data"].as_array().unwrap();
    assert_eq!(data.len(), 3);

    let llm = by_id(data, "id", "qwen2.5-7b-instruct");
    assert_eq!(llm["object"], "model");
    assert_eq!(llm["type"], "llm");
    assert_eq!(llm["state"], "loaded");
    for field in ["publisher", "arch", "compatibility_type", "quantization"] {
        assert!(llm[field].is_string(), "{field} in {llm}");
    }
    assert!(llm["max_context_length"].is_u64());

    let embed = by_id(data, "id", "text-embedding-nomic-embed-text-v1.5");
    assert_eq!(embed["type"], "embeddings");
    assert_eq!(embed["state"], "not-loaded");

    // One model, same shape, no list wrapper; a `/` in the key may be escaped.
    for path in [
        "/api/v0/models/lmstudio-community/llama-3.2-1b",
        "/api/v0/models/lmstudio-community%2Fllama-3.2-1b",
    ] {
        let (status, one) = get(&sim, path).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        assert_eq!(one["id"], "lmstudio-community/llama-3.2-1b");
        assert_eq!(one["state"], "not-loaded");
        assert!(one.get("data").is_none());
    }
    let (status, error) = get(&sim, "/api/v0/models/nope").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(error["error"]["code"], "model_not_found");
    within(sim.shutdown()).await;
}

#[tokio::test]
async fn api_v1_models_reports_instances_and_slots() {
    let sim = start(config()).await;
    let (status, list) = get(&sim, "/api/v1/models").await;
    assert_eq!(status, StatusCode::OK);
    let models = list["models"].as_array().unwrap();
    assert_eq!(models.len(), 3);

    let llm = by_id(models, "key", "qwen2.5-7b-instruct");
    assert_eq!(llm["type"], "llm");
    assert!(llm["display_name"].is_string());
    assert!(llm["architecture"].is_string());
    assert!(llm["quantization"]["name"].is_string());
    assert!(llm["quantization"]["bits_per_weight"].is_number());
    let instances = llm["loaded_instances"].as_array().unwrap();
    assert_eq!(instances.len(), 1);
    assert_eq!(instances[0]["id"], "qwen2.5-7b-instruct");
    assert_eq!(instances[0]["config"]["parallel"], 3);
    assert!(instances[0]["config"]["context_length"].is_u64());

    let embed = by_id(models, "key", "text-embedding-nomic-embed-text-v1.5");
    assert_eq!(embed["type"], "embedding");
    assert!(embed.get("architecture").is_none());
    assert_eq!(embed["loaded_instances"], serde_json::json!([]));
    within(sim.shutdown()).await;
}
