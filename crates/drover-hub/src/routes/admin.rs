//! The management API: list, add, remove, drain and undrain backends while
//! the hub runs. Who may call it is decided in [`super::guard`], in front
//! of every admin route.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use drover_proto::admin::{BackendInfo, BackendList, BackendSpec};
use drover_scheduler::{Event, Reply};
use http::StatusCode;
use serde_json::json;

use super::guard::AdminJson;
use crate::error::ApiError;
use crate::hub::HubState;
use crate::registry::{BackendEntry, RegistryError};
use crate::views::{self, Snapshot};

#[utoipa::path(get, path = "/admin/backends", tag = "backends", responses((status = 200, description = "Every backend, with its models and state", body = drover_proto::admin::BackendList), (status = 401, description = "No admin key, or not a valid one", body = drover_proto::openai::ErrorBody), (status = 403, description = "A client key, or a request from a web page", body = drover_proto::openai::ErrorBody)), security((), ("bearer" = [])))]
pub async fn list(State(hub): State<Arc<HubState>>) -> Result<Json<BackendList>, ApiError> {
    let fleet = Snapshot::take(&hub.dispatcher);
    Ok(Json(BackendList {
        backends: views::backends(&hub, &fleet),
    }))
}

#[utoipa::path(get, path = "/admin/backends/{name}", tag = "backends", params(("name" = String, Path, description = "The backend's name")), responses((status = 200, description = "The backend", body = drover_proto::admin::BackendInfo), (status = 404, description = "No such backend", body = drover_proto::openai::ErrorBody), (status = 401, description = "No admin key, or not a valid one", body = drover_proto::openai::ErrorBody), (status = 403, description = "A client key, or a request from a web page", body = drover_proto::openai::ErrorBody)), security((), ("bearer" = [])))]
pub async fn get(
    State(hub): State<Arc<HubState>>,
    Path(name): Path<String>,
) -> Result<Json<BackendInfo>, ApiError> {
    let entry = find(&hub, &name)?;
    let fleet = Snapshot::take(&hub.dispatcher);
    Ok(Json(views::backend_info(&entry, &fleet)))
}

#[utoipa::path(post, path = "/admin/backends", tag = "backends", request_body = drover_proto::admin::BackendSpec, responses((status = 201, description = "Added; probed from now on", body = drover_proto::admin::BackendInfo), (status = 400, description = "An invalid spec", body = drover_proto::openai::ErrorBody), (status = 409, description = "The name is taken", body = drover_proto::openai::ErrorBody), (status = 415, description = "Not JSON", body = drover_proto::openai::ErrorBody), (status = 401, description = "No admin key, or not a valid one", body = drover_proto::openai::ErrorBody), (status = 403, description = "A client key, or a request from a web page", body = drover_proto::openai::ErrorBody)), security((), ("bearer" = [])))]
pub async fn add(
    State(hub): State<Arc<HubState>>,
    AdminJson(spec): AdminJson<BackendSpec>,
) -> Result<Response, ApiError> {
    let entry = hub.add_backend(&spec).map_err(|e| match e {
        RegistryError::Duplicate(_) | RegistryError::SameServer { .. } => {
            ApiError::Conflict(e.to_string())
        }
        RegistryError::Invalid(msg) => ApiError::bad_request(msg, None, "invalid_backend"),
    })?;
    tracing::info!(target: "drover::action", backend = %entry.name, url = %entry.endpoint, "backend added");
    crate::kept::save_backend(&hub, &entry.name, &spec).await;
    let info = views::backend_info(&entry, &Snapshot::empty());
    Ok((StatusCode::CREATED, Json(info)).into_response())
}

#[utoipa::path(delete, path = "/admin/backends/{name}", tag = "backends", params(("name" = String, Path, description = "The backend's name")), responses((status = 200, description = "Removed: no new work; running requests finish"), (status = 404, description = "No such backend", body = drover_proto::openai::ErrorBody), (status = 401, description = "No admin key, or not a valid one", body = drover_proto::openai::ErrorBody), (status = 403, description = "A client key, or a request from a web page", body = drover_proto::openai::ErrorBody)), security((), ("bearer" = [])))]
pub async fn remove(
    State(hub): State<Arc<HubState>>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    if !hub.remove_backend(&name) {
        return Err(unknown(&name));
    }
    tracing::info!(target: "drover::action", backend = %name, "backend removed");
    crate::kept::forget_backend(&hub, &name).await;
    Ok(Json(json!({"removed": name})).into_response())
}

#[utoipa::path(post, path = "/admin/backends/{name}/drain", tag = "backends", params(("name" = String, Path, description = "The backend's name")), responses((status = 200, description = "Draining: no new work", body = drover_proto::admin::BackendInfo), (status = 404, description = "No such backend", body = drover_proto::openai::ErrorBody), (status = 409, description = "It has not answered a probe yet", body = drover_proto::openai::ErrorBody), (status = 401, description = "No admin key, or not a valid one", body = drover_proto::openai::ErrorBody), (status = 403, description = "A client key, or a request from a web page", body = drover_proto::openai::ErrorBody)), security((), ("bearer" = [])))]
pub async fn drain(
    State(hub): State<Arc<HubState>>,
    Path(name): Path<String>,
) -> Result<Json<BackendInfo>, ApiError> {
    set_draining(hub, name, true).await
}

#[utoipa::path(post, path = "/admin/backends/{name}/undrain", tag = "backends", params(("name" = String, Path, description = "The backend's name")), responses((status = 200, description = "Taking work again", body = drover_proto::admin::BackendInfo), (status = 404, description = "No such backend", body = drover_proto::openai::ErrorBody), (status = 409, description = "It has not answered a probe yet", body = drover_proto::openai::ErrorBody), (status = 401, description = "No admin key, or not a valid one", body = drover_proto::openai::ErrorBody), (status = 403, description = "A client key, or a request from a web page", body = drover_proto::openai::ErrorBody)), security((), ("bearer" = [])))]
pub async fn undrain(
    State(hub): State<Arc<HubState>>,
    Path(name): Path<String>,
) -> Result<Json<BackendInfo>, ApiError> {
    set_draining(hub, name, false).await
}

async fn set_draining(
    hub: Arc<HubState>,
    name: String,
    draining: bool,
) -> Result<Json<BackendInfo>, ApiError> {
    let entry = find(&hub, &name)?;
    let known = hub.dispatcher.apply(Event::Draining {
        backend: entry.id,
        draining,
    }) == Reply::Changed(true);
    if !known {
        return Err(ApiError::Conflict(format!(
            "backend {name:?} has not answered a probe yet; nothing to drain"
        )));
    }
    tracing::info!(target: "drover::action", backend = %name, draining, "drain state changed");
    let fleet = Snapshot::take(&hub.dispatcher);
    Ok(Json(views::backend_info(&entry, &fleet)))
}

pub(super) fn find(hub: &HubState, name: &str) -> Result<Arc<BackendEntry>, ApiError> {
    hub.registry.by_name(name).ok_or_else(|| unknown(name))
}

fn unknown(name: &str) -> ApiError {
    ApiError::NotFound {
        message: format!("no backend named {name:?}"),
    }
}
