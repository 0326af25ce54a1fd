//! llama.cpp's `llama-server` in router mode (backend-apis.md §3.5): no
//! model at start; `/models` lists every model with its status (unloaded,
//! loading, loaded), `POST /models/load` and `/models/unload` load and
//! unload one, and a request naming a model loads it (autoload), evicting
//! the least recently used beyond `--models-max` (`max_loaded`), which
//! `/props` without a model reports as `max_instances`. GET routes that
//! concern one model (`/slots`, `/props`, `/metrics`) take `?model=ID`;
//! without it `/slots` and `/metrics` answer 400. `?autoload=false` keeps a GET
//! from loading the model it names. As the real one: unloading a model that
//! is not running is a 400 "model is not running", and an unloaded model's
//! status still says "loaded" for a moment after the answer.

use std::sync::Arc;

use http::{Method, Response, StatusCode};
use hyper::body::Incoming;
use serde::Deserialize;
use serde_json::json;

use crate::body::{SimBody, json_response};
use crate::llamacpp;
use crate::model::ModelState;
use crate::request::parse_json;
use crate::router::{ok_json, read_body};
use crate::shared::Shared;

pub(crate) async fn route(
    shared: &Arc<Shared>,
    method: &Method,
    path: &str,
    query: Option<&str>,
    body: Incoming,
) -> Option<Response<SimBody>> {
    let response = match (method, path) {
        (&Method::GET, "/health" | "/v1/health") => ok_json(&json!({"status": "ok"})),
        (&Method::GET, "/models" | "/v1/models") => models(shared),
        (&Method::POST, "/models/load") => load(shared, body, true).await,
        (&Method::POST, "/models/unload") => load(shared, body, false).await,
        // The router's own properties, as the real one answers them: its
        // role and `--models-max`.
        (&Method::GET, "/props") if param(query, "model").is_none() => ok_json(&json!({
            "role": "router",
            "max_instances": shared.settings.max_loaded.unwrap_or(0),
            "models_autoload": true,
            "model_path": "none",
            "build_info": "b0-drover-sim",
        })),
        (&Method::GET, "/slots" | "/props" | "/metrics") => {
            let Some(model) = param(query, "model") else {
                return Some(bad_request(
                    "this route needs ?model= in router mode".into(),
                ));
            };
            let Some(model) = shared.model(&model) else {
                return Some(bad_request(format!("model '{model}' not found")));
            };
            if !model.is_loaded() {
                if param(query, "autoload").as_deref() == Some("false") {
                    return Some(bad_request(format!("model '{}' is not loaded", model.name)));
                }
                if let Err(e) = shared.load(model).await {
                    return Some(e.into_response());
                }
            }
            llamacpp::model_route(shared, model, path)?
        }
        _ => return None,
    };
    Some(response)
}

fn bad_request(message: String) -> Response<SimBody> {
    json_response(
        StatusCode::BAD_REQUEST,
        &json!({"error": {"code": 400, "message": message, "type": "invalid_request_error"}}),
    )
}

/// A query parameter, percent-decoded.
fn param(query: Option<&str>, name: &str) -> Option<String> {
    query?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k == name).then(|| crate::lmstudio::percent_decode(v).into_owned())
    })
}

/// How long the status of an unloaded model still says "loaded".
const STATUS_LAG: std::time::Duration = std::time::Duration::from_millis(150);

fn status(model: &ModelState) -> &'static str {
    let stopping = drover_core::sync::lock(&model.stopping_until)
        .is_some_and(|until| tokio::time::Instant::now() < until);
    if model.is_loaded() || stopping {
        "loaded"
    } else if model.is_loading() {
        "loading"
    } else {
        "unloaded"
    }
}

fn models(shared: &Shared) -> Response<SimBody> {
    let data: Vec<_> = shared
        .models()
        .iter()
        .map(|m| {
            json!({"id": &*m.name, "object": "model", "owned_by": "llamacpp",
                   "created": shared.started, "in_cache": false,
                   "path": format!("/models/{}.gguf", m.name),
                   "status": {"value": status(m), "args": []}})
        })
        .collect();
    ok_json(&json!({"data": data, "object": "list"}))
}

#[derive(Deserialize)]
struct ModelRequest {
    model: String,
}

async fn load(shared: &Shared, body: Incoming, load: bool) -> Response<SimBody> {
    let request: ModelRequest = match read_body(body).await.and_then(|b| parse_json(&b)) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    let Some(model) = shared.model(&request.model) else {
        return bad_request(format!("model '{}' not found", request.model));
    };
    if load {
        if let Err(e) = shared.load(model).await {
            return e.into_response();
        }
    } else {
        if !model.is_loaded() {
            return bad_request("model is not running".into());
        }
        // The instance is told to stop and no longer counts; the answer
        // comes before its status changes.
        model.set_loaded(false);
        *drover_core::sync::lock(&model.stopping_until) =
            Some(tokio::time::Instant::now() + STATUS_LAG);
    }
    ok_json(&json!({"success": true}))
}
