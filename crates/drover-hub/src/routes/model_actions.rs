//! `POST /admin/models/{model}/load|unload`: the operator's model actions,
//! carried out by the backends' adapters (LM Studio, Ollama, llama.cpp's
//! router can; a generic server or vLLM cannot, and says so). The model is
//! named by its public name; each backend gets its own id for it. After the
//! action the backend is probed at once, so the scheduler sees the change.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use drover_backends::BackendError;
use drover_proto::admin::{ModelAction, ModelTarget};
use http::HeaderMap;

use super::admin::{authorize, find, require_json};
use crate::error::ApiError;
use crate::hub::HubState;
use crate::prober;
use crate::registry::BackendEntry;

/// `POST /admin/models/{model}/load` and `.../unload`. Model names hold
/// `/` (`Qwen/Qwen2.5-7B`), so the path is split at its last segment.
pub async fn dispatch(
    State(hub): State<Arc<HubState>>,
    headers: HeaderMap,
    Path(rest): Path<String>,
    body: Bytes,
) -> Result<Json<ModelAction>, ApiError> {
    match rest.rsplit_once('/') {
        Some((model, "load")) if !model.is_empty() => load(hub, headers, model, body).await,
        Some((model, "unload")) if !model.is_empty() => unload(hub, headers, model, body).await,
        _ => Err(ApiError::NotFound {
            message: "expected POST /admin/models/{model}/load or .../unload".into(),
        }),
    }
}

async fn load(
    hub: Arc<HubState>,
    headers: HeaderMap,
    model: &str,
    body: Bytes,
) -> Result<Json<ModelAction>, ApiError> {
    let (model, target) = read(&hub, &headers, model, &body)?;
    let listing = listing(&hub, &model, target.backend.as_deref())?;
    let loadable: Vec<&(Arc<BackendEntry>, bool)> = listing
        .iter()
        .filter(|(e, _)| drover_core::sync::lock(&e.probe).can_load)
        .collect();
    if loadable.is_empty() {
        return Err(ApiError::Conflict(format!(
            "no backend with '{model}' can load models: {}",
            describe(&listing)
        )));
    }
    let Some((entry, _)) = loadable.iter().find(|(_, loaded)| !loaded) else {
        let (entry, _) = loadable[0];
        return Ok(Json(action(
            &model,
            vec![entry.name.clone()],
            "load",
            None,
            true,
        )));
    };
    let own = entry.own_id(&model).unwrap_or_else(|| model.clone());
    let adapter = entry
        .adapter()
        .ok_or_else(|| ApiError::Conflict(format!("{}: its kind is not known yet", entry.name)))?;
    let loaded = adapter.load(&own).await.map_err(|e| failed(entry, e))?;
    tracing::info!(backend = %entry.name, %model, seconds = loaded.seconds, "model loaded");
    prober::refresh(&hub, entry).await;
    Ok(Json(action(
        &model,
        vec![entry.name.clone()],
        "load",
        Some(loaded.seconds),
        false,
    )))
}

async fn unload(
    hub: Arc<HubState>,
    headers: HeaderMap,
    model: &str,
    body: Bytes,
) -> Result<Json<ModelAction>, ApiError> {
    let (model, target) = read(&hub, &headers, model, &body)?;
    let listing = listing(&hub, &model, target.backend.as_deref())?;
    let mut done = Vec::new();
    for (entry, loaded) in &listing {
        if !loaded {
            continue;
        }
        let own = entry.own_id(&model).unwrap_or_else(|| model.clone());
        let adapter = entry.adapter().ok_or_else(|| {
            ApiError::Conflict(format!("{}: its kind is not known yet", entry.name))
        })?;
        adapter.unload(&own).await.map_err(|e| failed(entry, e))?;
        tracing::info!(backend = %entry.name, %model, "model unloaded");
        prober::refresh(&hub, entry).await;
        done.push(entry.name.clone());
    }
    let already = done.is_empty();
    Ok(Json(action(&model, done, "unload", None, already)))
}

/// The caller, the body and the model's public name.
fn read(
    hub: &HubState,
    headers: &HeaderMap,
    model: &str,
    body: &[u8],
) -> Result<(String, ModelTarget), ApiError> {
    authorize(hub, headers)?;
    require_json(headers)?;
    let target: ModelTarget = if body.iter().all(u8::is_ascii_whitespace) {
        ModelTarget::default()
    } else {
        serde_json::from_slice(body).map_err(|e| {
            ApiError::bad_request(format!("invalid body: {e}"), None, "invalid_body")
        })?
    };
    Ok((hub.models.public_name(model).to_string(), target))
}

/// The backends that list `model` (only `backend`, when named), each with
/// whether the model is loaded there.
fn listing(
    hub: &HubState,
    model: &str,
    backend: Option<&str>,
) -> Result<Vec<(Arc<BackendEntry>, bool)>, ApiError> {
    let only = backend.map(|name| find(hub, name)).transpose()?;
    let views = hub.dispatcher.inspect(|s| s.fleet().views());
    let listing: Vec<(Arc<BackendEntry>, bool)> = views
        .iter()
        .filter(|v| only.as_ref().is_none_or(|e| e.id == v.id))
        .filter_map(|v| {
            let m = v.models.iter().find(|m| m.name.as_str() == model)?;
            Some((hub.registry.get(v.id)?, m.loaded))
        })
        .collect();
    if listing.is_empty() {
        return Err(match backend {
            Some(name) => ApiError::NotFound {
                message: format!("backend {name:?} does not list the model '{model}'"),
            },
            None => ApiError::ModelNotFound {
                model: model.to_string(),
            },
        });
    }
    Ok(listing)
}

fn describe(listing: &[(Arc<BackendEntry>, bool)]) -> String {
    listing
        .iter()
        .map(|(e, _)| {
            let kind = e.kind().map_or("unknown", |k| k.as_str());
            format!("{} ({kind})", e.name)
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// A backend's refusal: one that cannot is a conflict with the request;
/// any other failure is the backend's, with what it said.
fn failed(entry: &BackendEntry, e: BackendError) -> ApiError {
    match e {
        BackendError::Unsupported { .. } => ApiError::Conflict(format!("{}: {e}", entry.name)),
        other => ApiError::Upstream {
            message: format!("{}: {other}", entry.name),
        },
    }
}

fn action(
    model: &str,
    backends: Vec<String>,
    action: &str,
    seconds: Option<f64>,
    already: bool,
) -> ModelAction {
    ModelAction {
        model: model.to_string(),
        backends,
        action: action.to_string(),
        seconds,
        already,
    }
}
