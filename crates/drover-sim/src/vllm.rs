//! vLLM (backend-apis.md §4): every model it serves is loaded; `/health`
//! answers 200 with an empty body, `/version` its version, `/metrics` the
//! requests running in its batch and waiting in its own queue (a model's
//! slots here are its batch: requests beyond it wait inside the server) and
//! the KV cache's fill. An unknown model is a flat 404 error object.

use std::fmt::Write as _;
use std::sync::Arc;

use http::{Method, Response, StatusCode};
use serde_json::json;

use crate::body::{SimBody, json_response, with_content_type};
use crate::router::ok_json;
use crate::shared::Shared;

pub(crate) const VERSION: &str = "0.11.2";
const MAX_MODEL_LEN: u32 = 32_768;

pub(crate) fn route(
    shared: &Arc<Shared>,
    method: &Method,
    path: &str,
) -> Option<Response<SimBody>> {
    let response = match (method, path) {
        (&Method::GET, "/health") => with_content_type(
            StatusCode::OK,
            SimBody::full(Vec::new()),
            "application/json",
        ),
        (&Method::GET, "/version") => ok_json(&json!({"version": VERSION})),
        (&Method::GET, "/metrics") => metrics(shared),
        (&Method::GET, "/v1/models") => models(shared),
        _ => return None,
    };
    Some(response)
}

/// vLLM's own error object for an unknown model: flat, with an integer code.
pub(crate) fn model_not_found(model: &str) -> Response<SimBody> {
    json_response(
        StatusCode::NOT_FOUND,
        &json!({"object": "error", "message": format!("The model `{model}` does not exist."),
                "type": "NotFoundError", "param": null, "code": 404}),
    )
}

fn models(shared: &Shared) -> Response<SimBody> {
    let data: Vec<_> = shared
        .models()
        .iter()
        .map(|m| {
            json!({"id": &*m.name, "object": "model", "created": shared.started, "owned_by": "vllm",
                   "root": &*m.name, "parent": null, "max_model_len": MAX_MODEL_LEN, "permission": []})
        })
        .collect();
    ok_json(&json!({"object": "list", "data": data}))
}

fn metrics(shared: &Shared) -> Response<SimBody> {
    let mut text = String::new();
    let mut gauge = |name: &str, per_model: &dyn Fn(&crate::stats::ModelStats, usize) -> f64| {
        let _ = writeln!(text, "# TYPE vllm:{name} gauge");
        for m in shared.models() {
            let stats = m.snapshot();
            let value = per_model(&stats, m.slot_count);
            let _ = writeln!(
                text,
                "vllm:{name}{{engine=\"0\",model_name=\"{}\"}} {value}",
                m.name
            );
        }
    };
    gauge("num_requests_running", &|s, _| s.active as f64);
    gauge("num_requests_waiting", &|s, _| {
        s.in_flight.saturating_sub(s.active) as f64
    });
    gauge("kv_cache_usage_perc", &|s, slots| {
        s.active as f64 / slots.max(1) as f64
    });
    with_content_type(
        StatusCode::OK,
        SimBody::full(text.into_bytes()),
        "text/plain; version=0.0.4",
    )
}
