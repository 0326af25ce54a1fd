//! Streamed answers follow backend-apis.md §5.1 to the letter.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use drover_sim::SimConfig;
use http::{Method, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};

async fn stream(sim: &drover_sim::SimHandle, path: &str, body: &Value) -> (Vec<Value>, bool) {
    let url = format!("{}{path}", sim.url());
    let response = send(&client(), Method::POST, &url, Some(&body.to_string())).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let text = String::from_utf8(body_bytes(response).await.to_vec()).unwrap();
    let mut data = sse_data(&text);
    let done = data.last().map(String::as_str) == Some("[DONE]");
    if done {
        data.pop();
    }
    let chunks = data
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    (chunks, done)
}

#[tokio::test]
async fn chat_stream_has_role_tokens_finish_and_done() {
    let sim = start(SimConfig {
        output_tokens: 5,
        ..SimConfig::default()
    })
    .await;
    let mut body = chat("sim-model", "tell me a story");
    body["stream"] = json!(true);
    let (chunks, done) = stream(&sim, "/v1/chat/completions", &body).await;
    assert!(done, "no [DONE]");

    // role chunk + 5 token chunks + finish chunk
    assert_eq!(chunks.len(), 7, "{chunks:#?}");
    let first = &chunks[0];
    assert_eq!(first["object"], "chat.completion.chunk");
    assert_eq!(first["choices"][0]["delta"]["role"], "assistant");
    assert!(first["id"].as_str().unwrap().starts_with("chatcmpl-"));
    for chunk in &chunks {
        assert_eq!(chunk["id"], first["id"]);
        assert_eq!(chunk["created"], first["created"]);
        assert_eq!(chunk["model"], "sim-model");
        assert_eq!(chunk["object"], "chat.completion.chunk");
        assert!(chunk.get("usage").is_none(), "usage without include_usage");
    }
    for chunk in &chunks[..6] {
        assert_eq!(chunk["choices"][0]["finish_reason"], Value::Null);
    }
    let last = &chunks[6];
    assert_eq!(last["choices"][0]["finish_reason"], "stop");
    assert_eq!(last["choices"][0]["delta"], json!({}));

    let streamed: String = chunks[1..6]
        .iter()
        .map(|c| c["choices"][0]["delta"]["content"].as_str().unwrap())
        .collect();
    assert_eq!(streamed.split(' ').count(), 5);

    // The same conversation, not streamed, gets the same words.
    let (status, whole) = post(
        &sim,
        "/v1/chat/completions",
        &chat("sim-model", "tell me a story"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(whole["choices"][0]["message"]["content"], streamed.as_str());
    within(sim.shutdown()).await;
}

#[tokio::test]
async fn include_usage_adds_a_usage_chunk_with_empty_choices() {
    let sim = start(SimConfig {
        output_tokens: 10,
        ..SimConfig::default()
    })
    .await;
    let body = json!({
        "model": "sim-model",
        "messages": [{ "role": "user", "content": "three word prompt" }],
        "stream": true,
        "stream_options": { "include_usage": true },
        "max_tokens": 4,
    });
    let (chunks, done) = stream(&sim, "/v1/chat/completions", &body).await;
    assert!(done);
    // role + 4 tokens + finish + usage
    assert_eq!(chunks.len(), 7);
    for chunk in &chunks[..6] {
        assert_eq!(chunk["usage"], Value::Null);
        assert!(
            chunk.get("usage").is_some(),
            "usage must be present as null"
        );
    }
    assert_eq!(chunks[5]["choices"][0]["finish_reason"], "length");
    let usage_chunk = &chunks[6];
    assert_eq!(usage_chunk["choices"], json!([]));
    assert_eq!(usage_chunk["id"], chunks[0]["id"]);
    assert_eq!(
        usage_chunk["usage"],
        json!({ "prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7 })
    );
    within(sim.shutdown()).await;
}

#[tokio::test]
async fn text_completion_stream_uses_text_completion_chunks() {
    let sim = start(SimConfig {
        output_tokens: 3,
        ..SimConfig::default()
    })
    .await;
    let body = json!({ "model": "sim-model", "prompt": "once upon", "stream": true });
    let (chunks, done) = stream(&sim, "/v1/completions", &body).await;
    assert!(done);
    // 3 tokens + finish; text completions have no role chunk
    assert_eq!(chunks.len(), 4);
    for chunk in &chunks {
        assert_eq!(chunk["object"], "text_completion");
        assert_eq!(chunk["id"], chunks[0]["id"]);
        assert!(chunk["id"].as_str().unwrap().starts_with("cmpl-"));
    }
    let streamed: String = chunks[..3]
        .iter()
        .map(|c| c["choices"][0]["text"].as_str().unwrap())
        .collect();
    assert_eq!(chunks[3]["choices"][0]["finish_reason"], "stop");
    assert_eq!(chunks[3]["choices"][0]["text"], "");

    let (_, whole) = post(
        &sim,
        "/v1/completions",
        &json!({ "model": "sim-model", "prompt": "once upon" }),
    )
    .await;
    assert_eq!(whole["choices"][0]["text"], streamed.as_str());
    within(sim.shutdown()).await;
}

#[tokio::test]
async fn chunks_are_flushed_as_produced() {
    // Slow enough that the whole answer takes a while, so the first chunk
    // arriving while the request still holds its slot shows it was sent on
    // its own rather than buffered with the rest.
    let sim = start(SimConfig {
        output_tokens: 4,
        tokens_per_sec: 5.0,
        ..SimConfig::default()
    })
    .await;
    let mut body = chat("sim-model", "hi");
    body["stream"] = json!(true);
    let url = format!("{}/v1/chat/completions", sim.url());
    let response = send(&client(), Method::POST, &url, Some(&body.to_string())).await;
    let mut body = response.into_body();
    let frame = within(body.frame()).await.unwrap().unwrap();
    let first = String::from_utf8(frame.into_data().unwrap().to_vec()).unwrap();
    assert!(first.starts_with("data: "), "{first:?}");
    assert!(first.contains("\"role\":\"assistant\""), "{first:?}");
    let stats = sim.stats().model("sim-model");
    assert_eq!((stats.active, stats.completed), (1, 0));

    let rest = within(body.collect()).await.unwrap().to_bytes();
    assert!(rest.ends_with(b"data: [DONE]\n\n"));
    wait_for(&sim, |s| s.model("sim-model").completed == 1).await;
    within(sim.shutdown()).await;
}

#[tokio::test]
async fn llama_cpp_reports_timings_on_the_last_chunk_and_plain_answers_unasked() {
    let sim = start(SimConfig {
        dialect: drover_sim::Dialect::LlamaCpp,
        output_tokens: 5,
        ..SimConfig::default()
    })
    .await;
    let mut body = chat("sim-model", "tell me a story");
    body["stream"] = json!(true);
    let (chunks, _) = stream(&sim, "/v1/chat/completions", &body).await;
    let (last, rest) = chunks.split_last().unwrap();
    assert_eq!(last["timings"]["predicted_n"], 5, "{last}");
    assert!(last["timings"]["prompt_n"].as_u64().unwrap() > 0, "{last}");
    assert!(rest.iter().all(|c| c.get("timings").is_none()));
    assert!(last.get("usage").is_none(), "no usage unless asked");

    body["stream"] = json!(false);
    let url = format!("{}/v1/chat/completions", sim.url());
    let response = send(&client(), Method::POST, &url, Some(&body.to_string())).await;
    let answer: Value = serde_json::from_slice(&body_bytes(response).await).unwrap();
    assert_eq!(answer["timings"]["predicted_n"], 5, "{answer}");
    assert_eq!(answer["usage"]["completion_tokens"], 5, "{answer}");

    // Other servers send no timings.
    let openai = start(SimConfig {
        output_tokens: 5,
        ..SimConfig::default()
    })
    .await;
    let response = send(
        &client(),
        Method::POST,
        &format!("{}/v1/chat/completions", openai.url()),
        Some(&body.to_string()),
    )
    .await;
    let answer: Value = serde_json::from_slice(&body_bytes(response).await).unwrap();
    assert!(answer.get("timings").is_none(), "{answer}");
}
