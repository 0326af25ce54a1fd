//! Non-streamed answers are whole OpenAI objects, and the same request gets
//! the same answer.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use drover_sim::{Dialect, SimConfig};
use http::StatusCode;
use serde_json::json;

#[tokio::test]
async fn chat_completion_is_a_full_object_with_usage() {
    let sim = start(SimConfig::default()).await;
    let (status, answer) = post(
        &sim,
        "/v1/chat/completions",
        &chat("sim-model", "hello there friend"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(answer["object"], "chat.completion");
    assert_eq!(answer["model"], "sim-model");
    assert!(answer["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert!(answer["created"].as_u64().unwrap() > 1_600_000_000);
    let choice = &answer["choices"][0];
    assert_eq!(choice["index"], 0);
    assert_eq!(choice["message"]["role"], "assistant");
    assert_eq!(choice["finish_reason"], "stop");
    let content = choice["message"]["content"].as_str().unwrap();
    assert_eq!(content.split(' ').count(), 16, "{content}");
    assert_eq!(
        answer["usage"],
        json!({ "prompt_tokens": 3, "completion_tokens": 16, "total_tokens": 19 })
    );

    let (_, again) = post(
        &sim,
        "/v1/chat/completions",
        &chat("sim-model", "hello there friend"),
    )
    .await;
    assert_eq!(again["choices"][0]["message"]["content"], content);
    assert_ne!(again["id"], answer["id"]);
    let (_, other) = post(
        &sim,
        "/v1/chat/completions",
        &chat("sim-model", "something else"),
    )
    .await;
    assert_ne!(other["choices"][0]["message"]["content"], content);
    within(sim.shutdown()).await;
}

#[tokio::test]
async fn max_tokens_caps_the_answer_and_says_length() {
    let sim = start(SimConfig::default()).await;
    for cap in ["max_tokens", "max_completion_tokens"] {
        let mut body = chat("sim-model", "hi");
        body[cap] = json!(3);
        let (_, answer) = post(&sim, "/v1/chat/completions", &body).await;
        assert_eq!(answer["choices"][0]["finish_reason"], "length");
        assert_eq!(answer["usage"]["completion_tokens"], 3);
    }
    let mut body = chat("sim-model", "hi");
    body["max_tokens"] = json!(100);
    let (_, answer) = post(&sim, "/v1/chat/completions", &body).await;
    assert_eq!(answer["choices"][0]["finish_reason"], "stop");
    assert_eq!(answer["usage"]["completion_tokens"], 16);
    within(sim.shutdown()).await;
}

#[tokio::test]
async fn text_completion_is_a_full_object() {
    let sim = start(SimConfig {
        dialect: Dialect::LmStudio,
        loaded: vec!["sim-model".into()],
        output_tokens: 6,
        ..SimConfig::default()
    })
    .await;
    let body = json!({ "model": "sim-model", "prompt": "the quick brown fox" });
    let (status, answer) = post(&sim, "/v1/completions", &body).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(answer["object"], "text_completion");
    assert!(answer["id"].as_str().unwrap().starts_with("cmpl-"));
    assert_eq!(answer["choices"][0]["finish_reason"], "stop");
    assert_eq!(
        answer["choices"][0]["text"]
            .as_str()
            .unwrap()
            .split(' ')
            .count(),
        6
    );
    assert_eq!(
        answer["usage"],
        json!({ "prompt_tokens": 4, "completion_tokens": 6, "total_tokens": 10 })
    );
    within(sim.shutdown()).await;
}

fn norm(vector: &serde_json::Value) -> f64 {
    vector
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap().powi(2))
        .sum::<f64>()
        .sqrt()
}

#[tokio::test]
async fn embeddings_are_deterministic_unit_vectors() {
    let sim = start(SimConfig {
        models: vec!["text-embed-small".into()],
        embedding_dims: 16,
        ..SimConfig::default()
    })
    .await;
    let (status, one) = post(
        &sim,
        "/v1/embeddings",
        &json!({ "model": "text-embed-small", "input": "alpha beta" }),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(one["object"], "list");
    assert_eq!(one["model"], "text-embed-small");
    assert_eq!(one["data"].as_array().unwrap().len(), 1);
    assert_eq!(one["data"][0]["object"], "embedding");
    assert_eq!(one["data"][0]["index"], 0);
    assert_eq!(one["data"][0]["embedding"].as_array().unwrap().len(), 16);
    assert!((norm(&one["data"][0]["embedding"]) - 1.0).abs() < 1e-4);
    assert_eq!(
        one["usage"],
        json!({ "prompt_tokens": 2, "total_tokens": 2 })
    );

    let (_, many) = post(
        &sim,
        "/v1/embeddings",
        &json!({ "model": "text-embed-small", "input": ["gamma", "alpha beta"] }),
    )
    .await;
    let data = many["data"].as_array().unwrap();
    assert_eq!(data.len(), 2);
    assert_eq!(data[1]["index"], 1);
    assert_eq!(data[1]["embedding"], one["data"][0]["embedding"]);
    assert_ne!(data[0]["embedding"], data[1]["embedding"]);
    assert!((norm(&data[0]["embedding"]) - 1.0).abs() < 1e-4);
    within(sim.shutdown()).await;
}

#[tokio::test]
async fn models_are_listed_openai_style() {
    let sim = start(SimConfig {
        models: vec!["a".into(), "b".into()],
        ..SimConfig::default()
    })
    .await;
    let (status, list) = get(&sim, "/v1/models").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["object"], "list");
    let ids: Vec<_> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            assert_eq!(m["object"], "model");
            assert!(m["owned_by"].is_string());
            m["id"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(ids, ["a", "b"]);
    within(sim.shutdown()).await;
}

/// Structured output, as llama.cpp's server, LM Studio, vLLM and Ollama
/// give it: the answer meets the JSON schema asked for, plain and streamed
/// alike, and is cut where max_tokens runs out (then not valid JSON, as a
/// real server's); a server with the `ignores_response_format` fault reads
/// past it and answers words.
#[tokio::test]
async fn a_json_schema_response_format_shapes_the_answer() {
    let schema = json!({
        "type": "object",
        "properties": {
            "artist": {"enum": ["weezer", "abba"]},
            "plays": {"type": "integer", "minimum": 1, "maximum": 3},
        },
        "required": ["artist", "plays"],
        "additionalProperties": false,
    });
    let mut body = chat("sim-model", "play something");
    body["response_format"] = json!({"type": "json_schema", "json_schema": {"name": "x", "strict": true, "schema": schema}});
    let sim = start(SimConfig::default()).await;
    let (status, answer) = post(&sim, "/v1/chat/completions", &body).await;
    assert_eq!(status, StatusCode::OK);
    let content = answer["choices"][0]["message"]["content"].as_str().unwrap();
    let value: serde_json::Value = serde_json::from_str(content).unwrap();
    assert!(
        ["weezer", "abba"].contains(&value["artist"].as_str().unwrap()),
        "{value}"
    );
    assert!(
        (1..=3).contains(&value["plays"].as_i64().unwrap()),
        "{value}"
    );
    assert_eq!(answer["choices"][0]["finish_reason"], "stop");
    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    let url = format!("{}/v1/chat/completions", sim.url());
    let response = send(
        &client(),
        http::Method::POST,
        &url,
        Some(&streamed.to_string()),
    )
    .await;
    let bytes = body_bytes(response).await;
    let events = sse_data(std::str::from_utf8(&bytes).unwrap());
    let text: String = events
        .iter()
        .filter(|e| *e != "[DONE]")
        .filter_map(|e| serde_json::from_str::<serde_json::Value>(e).ok())
        .filter_map(|e| {
            e["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_string)
        })
        .collect();
    assert_eq!(text, content, "a stream carries the same value");
    let mut cut = body.clone();
    cut["max_tokens"] = json!(2);
    let (_, answer) = post(&sim, "/v1/chat/completions", &cut).await;
    assert_eq!(answer["choices"][0]["finish_reason"], "length");
    let partial = answer["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(
        serde_json::from_str::<serde_json::Value>(partial).is_err(),
        "{partial}"
    );
    within(sim.shutdown()).await;

    let sim = start(SimConfig {
        faults: drover_sim::Faults {
            ignores_response_format: true,
            ..drover_sim::Faults::NONE
        },
        ..SimConfig::default()
    })
    .await;
    let (_, answer) = post(&sim, "/v1/chat/completions", &body).await;
    let words = answer["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(
        serde_json::from_str::<serde_json::Value>(words).is_err(),
        "{words}"
    );
    within(sim.shutdown()).await;
}
