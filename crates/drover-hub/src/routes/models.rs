//! `GET /v1/models`: the union of every backend's models, each entry saying
//! where the model is and whether it is loaded there.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use drover_proto::openai::{ModelEntry, ModelList, ModelPlacement};
use drover_scheduler::Residency;

use crate::error::ApiError;
use crate::hub::HubState;

fn entries(hub: &HubState) -> Vec<ModelEntry> {
    let views = hub.dispatcher.inspect(|s| s.fleet().views());
    let mut by_model: BTreeMap<String, Vec<ModelPlacement>> = BTreeMap::new();
    for view in views {
        let backend = hub.registry.name_of(view.id);
        for m in view.models {
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

#[utoipa::path(get, path = "/v1/models", tag = "inference", responses((status = 200, description = "The fleet's models, each with the backends that have it", body = drover_proto::openai::ModelList)))]
pub async fn list(State(hub): State<Arc<HubState>>) -> Json<ModelList> {
    Json(ModelList {
        object: "list".into(),
        data: entries(&hub),
        unreachable_backends: hub.unreachable_backends(),
    })
}

#[utoipa::path(get, path = "/v1/models/{model}", tag = "inference", params(("model" = String, Path, description = "A model's public name")), responses((status = 200, description = "The model", body = drover_proto::openai::ModelEntry), (status = 404, description = "No backend serves it", body = drover_proto::openai::ErrorBody), (status = 503, description = "A backend that might serve it has never answered", body = drover_proto::openai::ErrorBody)))]
pub async fn get(
    State(hub): State<Arc<HubState>>,
    Path(model): Path<String>,
) -> Result<Json<ModelEntry>, ApiError> {
    entries(&hub)
        .into_iter()
        .find(|e| e.id == model)
        .map(Json)
        .ok_or_else(|| {
            let backends = hub.unreachable_backends();
            if backends.is_empty() {
                hub.model_not_found(model)
            } else {
                ApiError::Unreachable { model, backends }
            }
        })
}
