//! The management API: list, add, remove, drain and undrain backends while
//! the hub runs. Who may call it is decided in [`super::guard`], in front
//! of every admin route.

use drover_scheduler::{Api, Event, Reply, Residency};
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use drover_core::{BackendId, ModelName};
use drover_proto::admin::{BackendInfo, BackendList, BackendModelInfo, BackendSpec};
use drover_scheduler::BackendView;
use http::StatusCode;
use serde_json::json;

use super::guard::AdminJson;
use crate::error::ApiError;
use crate::hub::HubState;
use crate::registry::{BackendEntry, RegistryError};

pub(crate) fn info(entry: &BackendEntry, fleet: &FleetSnapshot) -> BackendInfo {
    let view = fleet.views.get(&entry.id);
    let probe = drover_core::sync::lock(&entry.probe).clone();
    let memory = entry.memory_terms(probe.memory_total);
    let mut apis = Vec::new();
    if let Some(v) = view {
        for (api, name) in [(Api::Responses, "responses"), (Api::Messages, "messages")] {
            if v.status.serves(api) {
                apis.push(name.to_string());
            }
        }
    }
    BackendInfo {
        name: entry.name.clone(),
        kind: entry
            .kind()
            .map_or_else(|| "unknown".to_string(), |k| k.to_string()),
        url: entry.endpoint.to_string(),
        // The scheduler learns of a backend at its first answer.
        breaker: view
            .map_or("unreachable", |v| v.breaker.as_str())
            .to_string(),
        draining: view.is_some_and(|v| v.draining),
        in_flight: view.map_or(0, |v| v.busy),
        models: view.map_or_else(Vec::new, |v| {
            v.models
                .iter()
                .map(|m| BackendModelInfo {
                    id: m.name.to_string(),
                    loaded: m.residency == Residency::Loaded,
                    residency: Some(m.residency.as_str().to_string()),
                    progress: probe.progress.get(m.name.as_str()).copied(),
                    load_seconds: m.load_time.map(|t| t.as_secs_f64()),
                    loading_seconds: match m.residency {
                        Residency::Loading { since, .. } => {
                            Some(fleet.now.saturating_sub(since).as_secs_f64())
                        }
                        _ => None,
                    },
                    idle_seconds: m
                        .last_used
                        .filter(|_| m.busy == 0)
                        .map(|t| fleet.now.saturating_sub(t).as_secs_f64()),
                    pinned: fleet.pinned.contains(&m.name),
                    limit: m.limit,
                    load_error: m.load_error.clone(),
                    slots: m.slots,
                    busy: m.busy,
                    external: m.external,
                    size_bytes: probe.sizes.get(m.name.as_str()).copied().or(m.size),
                    state: probe.states.get(m.name.as_str()).map(|s| s.to_string()),
                })
                .collect()
        }),
        last_error: probe.last_error,
        dropped_models: probe.dropped_models as u64,
        last_probe_unix_ms: probe.probed_unix_ms,
        version: probe.version,
        mode: probe.mode,
        probe: entry.probe_mode.to_string(),
        max_concurrent: entry.max_concurrent,
        apis,
        saturated: view.is_some_and(|v| v.status.saturated),
        can_load: probe.can_load,
        can_unload: probe.can_unload,
        memory_used: probe.memory_used,
        memory_total: memory.map(|t| t.total),
        memory_for_models: memory
            .map(|t| t.for_models(view.map_or(0, BackendView::slots_in_memory))),
        slot_buffer: entry.slot_buffer,
        system: entry.system,
        margin: entry.margin,
    }
}

/// What the scheduler holds of the fleet, read at one instant.
pub(crate) struct FleetSnapshot {
    pub(crate) views: HashMap<BackendId, BackendView>,
    pinned: BTreeSet<ModelName>,
    /// Scheduler time, for how long models have been idle.
    now: Duration,
}

pub(crate) fn views(hub: &HubState) -> FleetSnapshot {
    let now = hub.dispatcher.now();
    hub.dispatcher.inspect(|s| FleetSnapshot {
        views: s.fleet().views().into_iter().map(|v| (v.id, v)).collect(),
        pinned: s.pinned().cloned().collect(),
        now,
    })
}

#[utoipa::path(get, path = "/admin/backends", tag = "backends", responses((status = 200, description = "Every backend, with its models and state", body = drover_proto::admin::BackendList), (status = 401, description = "No admin key, or not a valid one", body = drover_proto::openai::ErrorBody), (status = 403, description = "A client key, or a request from a web page", body = drover_proto::openai::ErrorBody)), security((), ("bearer" = [])))]
pub async fn list(State(hub): State<Arc<HubState>>) -> Result<Json<BackendList>, ApiError> {
    let views = views(&hub);
    let backends = hub.registry.all().iter().map(|e| info(e, &views)).collect();
    Ok(Json(BackendList { backends }))
}

#[utoipa::path(get, path = "/admin/backends/{name}", tag = "backends", params(("name" = String, Path, description = "The backend's name")), responses((status = 200, description = "The backend", body = drover_proto::admin::BackendInfo), (status = 404, description = "No such backend", body = drover_proto::openai::ErrorBody), (status = 401, description = "No admin key, or not a valid one", body = drover_proto::openai::ErrorBody), (status = 403, description = "A client key, or a request from a web page", body = drover_proto::openai::ErrorBody)), security((), ("bearer" = [])))]
pub async fn get(
    State(hub): State<Arc<HubState>>,
    Path(name): Path<String>,
) -> Result<Json<BackendInfo>, ApiError> {
    let entry = find(&hub, &name)?;
    let views = views(&hub);
    Ok(Json(info(&entry, &views)))
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
    let fleet = FleetSnapshot {
        views: HashMap::new(),
        pinned: BTreeSet::new(),
        now: Duration::ZERO,
    };
    Ok((StatusCode::CREATED, Json(info(&entry, &fleet))).into_response())
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
    let views = views(&hub);
    Ok(Json(info(&entry, &views)))
}

pub(super) fn find(hub: &HubState, name: &str) -> Result<Arc<BackendEntry>, ApiError> {
    hub.registry.by_name(name).ok_or_else(|| unknown(name))
}

fn unknown(name: &str) -> ApiError {
    ApiError::NotFound {
        message: format!("no backend named {name:?}"),
    }
}
