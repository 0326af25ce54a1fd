//! `GET /v1/models`: the union of every backend's models, each entry saying
//! where the model is and whether it is loaded there.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use drover_proto::openai::{ModelEntry, ModelList, ModelPlacement};
use drover_scheduler::Residency;

use http::HeaderMap;

use crate::caller;
use crate::error::ApiError;
use crate::hub::HubState;

/// The models the caller's key may use (`None`: every one). Once client
/// keys exist, as for inference and `GET /v1/queue`, a valid one is needed:
/// the listing names every backend, its slots and how busy it is.
fn allowed(hub: &HubState, headers: &HeaderMap) -> Result<Option<Vec<String>>, ApiError> {
    let holder = caller::authenticate(&hub.keys, &hub.clients, headers)?;
    Ok(holder.and_then(|h| h.limits.models))
}

/// The fleet's models that `keep` lets through, each with its placements.
fn entries(hub: &HubState, keep: impl Fn(&str) -> bool) -> Vec<ModelEntry> {
    let views = crate::views::Snapshot::take(&hub.dispatcher)
        .backends
        .into_values();
    let mut by_model: BTreeMap<String, Vec<ModelPlacement>> = BTreeMap::new();
    for view in views {
        let backend = hub.registry.name_of(view.id);
        for m in view.models {
            if !keep(m.name.as_str()) {
                continue;
            }
            by_model
                .entry(m.name.to_string())
                .or_default()
                .push(ModelPlacement {
                    backend: backend.clone(),
                    state: match m.residency {
                        Residency::Unloaded => "available",
                        other => other.as_str(),
                    }
                    .to_string(),
                    slots: m.slots,
                    busy: m.busy,
                });
        }
    }
    by_model
        .into_iter()
        .map(|(id, backends)| ModelEntry {
            id,
            object: "model".into(),
            created: hub.started_unix,
            owned_by: "drover".into(),
            backends,
        })
        .collect()
}

/// Whether a key limited to `allowed` models may see `model`.
fn permits(allowed: Option<&[String]>, model: &str) -> bool {
    allowed.is_none_or(|a| a.iter().any(|m| m == model))
}

#[utoipa::path(get, path = "/v1/models", tag = "inference", responses((status = 200, description = "The fleet's models the caller may use, each with the backends that have it", body = drover_proto::openai::ModelList), (status = 401, description = "The hub has client keys and this is none of them", body = drover_proto::openai::ErrorBody), (status = 403, description = "Not a client key", body = drover_proto::openai::ErrorBody)), security((), ("bearer" = [])))]
pub async fn list(
    State(hub): State<Arc<HubState>>,
    headers: HeaderMap,
) -> Result<Json<ModelList>, ApiError> {
    let allowed = allowed(&hub, &headers)?;
    Ok(Json(ModelList {
        object: "list".into(),
        data: entries(&hub, |m| permits(allowed.as_deref(), m)),
        unreachable_backends: hub.unreachable_backends(),
    }))
}

#[utoipa::path(get, path = "/v1/models/{model}", tag = "inference", params(("model" = String, Path, description = "A model's public name")), responses((status = 200, description = "The model", body = drover_proto::openai::ModelEntry), (status = 401, description = "The hub has client keys and this is none of them", body = drover_proto::openai::ErrorBody), (status = 403, description = "Not a client key", body = drover_proto::openai::ErrorBody), (status = 404, description = "No backend serves it, or the caller's key may not use it", body = drover_proto::openai::ErrorBody), (status = 503, description = "A backend that might serve it has never answered", body = drover_proto::openai::ErrorBody)), security((), ("bearer" = [])))]
pub async fn get(
    State(hub): State<Arc<HubState>>,
    Path(model): Path<String>,
    headers: HeaderMap,
) -> Result<Json<ModelEntry>, ApiError> {
    let allowed = allowed(&hub, &headers)?;
    if !permits(allowed.as_deref(), &model) {
        return Err(hub.model_not_found_among(model, allowed.as_deref()));
    }
    entries(&hub, |m| m == model)
        .into_iter()
        .next()
        .map(Json)
        .ok_or_else(|| {
            hub.forwarder
                .not_listed_among(model, allowed.as_deref())
                .into()
        })
}
