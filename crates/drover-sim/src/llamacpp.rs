//! llama.cpp's `llama-server` with one model (backend-apis.md §3): it loads
//! its model at start, answering `/health` and any work with 503 until it
//! is ready, then reports `/props` (`total_slots`), `/slots` (which slots
//! work), `/metrics` (running and deferred requests) and its one model at
//! `/v1/models`, in this build's shape (`models` beside OpenAI's `data`).
//! It serves whatever `model` a request names with the model it has.

use std::fmt::Write as _;
use std::sync::Arc;

use http::{Method, Response, StatusCode};
use serde_json::json;

use crate::body::{SimBody, json_response, with_content_type};
use crate::error::ApiError;
use crate::model::ModelState;
use crate::router::ok_json;
use crate::shared::Shared;

/// Context per slot, as `-c` over `-np` would give.
const N_CTX: usize = 4096;

pub(crate) fn route(
    shared: &Arc<Shared>,
    method: &Method,
    path: &str,
) -> Option<Response<SimBody>> {
    let model = shared.models().first()?;
    let response = match (method, path) {
        (&Method::GET, "/health" | "/v1/health") => health(model),
        (&Method::GET, "/v1/models" | "/models") => models(shared, model),
        (&Method::GET, "/props" | "/slots") if !model.is_loaded() => {
            ApiError::loading_model().into_response()
        }
        (&Method::GET, _) => return model_route(shared, model, path),
        _ => return None,
    };
    Some(response)
}

/// The GET routes about one model, which router mode serves per model too.
pub(crate) fn model_route(
    shared: &Shared,
    model: &ModelState,
    path: &str,
) -> Option<Response<SimBody>> {
    Some(match path {
        "/props" => props(shared, model),
        "/slots" => slots(shared, model),
        "/metrics" => metrics(model),
        _ => return None,
    })
}

fn health(model: &ModelState) -> Response<SimBody> {
    if model.is_loaded() {
        ok_json(&json!({"status": "ok"}))
    } else {
        json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            &json!({"error": {"code": 503, "message": "Loading model", "type": "unavailable_error"}}),
        )
    }
}

fn path_of(model: &ModelState) -> String {
    format!("/models/{}.gguf", model.name)
}

/// A slot's context as llama-server reports it: with `--kv-unified` every
/// slot may use the whole shared context, so each reports all of it.
fn n_ctx(shared: &Shared) -> usize {
    shared.settings.shared_context.unwrap_or(N_CTX)
}

fn props(shared: &Shared, model: &ModelState) -> Response<SimBody> {
    ok_json(&json!({
        "default_generation_settings": {"n_ctx": n_ctx(shared), "params": {}},
        "total_slots": model.slot_count,
        "model_path": path_of(model),
        "chat_template": "",
        "modalities": {"vision": false, "audio": false},
        "build_info": "b0-drover-sim",
        "is_sleeping": false,
    }))
}

/// One entry per slot; the first `active` are working.
fn slots(shared: &Shared, model: &ModelState) -> Response<SimBody> {
    let n_ctx = n_ctx(shared);
    let active = model.snapshot().active as usize;
    let slots: Vec<_> = (0..model.slot_count)
        .map(|id| {
            json!({
                "id": id,
                "id_task": if id < active { id as i64 } else { -1 },
                "n_ctx": n_ctx,
                "speculative": false,
                "is_processing": id < active,
                "params": {},
            })
        })
        .collect();
    ok_json(&slots)
}

fn metrics(model: &ModelState) -> Response<SimBody> {
    let stats = model.snapshot();
    let mut text = String::new();
    for (name, kind, value) in [
        ("llamacpp:requests_processing", "gauge", stats.active),
        (
            "llamacpp:requests_deferred",
            "gauge",
            stats.in_flight.saturating_sub(stats.active),
        ),
        ("llamacpp:n_decode_total", "counter", stats.completed),
    ] {
        let _ = writeln!(text, "# TYPE {name} {kind}\n{name} {value}");
    }
    with_content_type(
        StatusCode::OK,
        SimBody::full(text.into_bytes()),
        "text/plain; version=0.0.4",
    )
}

fn models(shared: &Shared, model: &ModelState) -> Response<SimBody> {
    let meta = model.is_loaded().then(|| {
        json!({"vocab_type": 1, "n_vocab": 32000, "n_ctx_train": N_CTX,
               "n_embd": 4096, "n_params": 7_000_000_000u64, "size": model.size_bytes()})
    });
    ok_json(&json!({
        "models": [{"name": &*model.name, "model": &*model.name, "type": "model"}],
        "object": "list",
        "data": [{"id": &*model.name, "object": "model", "created": shared.started,
                  "owned_by": "llamacpp", "meta": meta}],
    }))
}
