//! The management API: list, add, remove, drain and undrain backends while
//! the hub runs.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use drover_core::BackendId;
use drover_proto::admin::{BackendInfo, BackendList, BackendModelInfo, BackendSpec};
use drover_scheduler::{BackendView, BreakerState};
use http::{HeaderMap, StatusCode, header};
use serde_json::json;

use crate::error::ApiError;
use crate::hub::HubState;
use crate::registry::{BackendEntry, RegistryError};

fn authorize(hub: &HubState, headers: &HeaderMap) -> Result<(), ApiError> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match &hub.config.admin_key {
        Some(key) if bearer == Some(key.as_str()) => Ok(()),
        Some(_) => Err(ApiError::Unauthorized(
            "the management API needs the admin key as a bearer token".into(),
        )),
        None if hub.admin_open_without_key() => Ok(()),
        None => Err(ApiError::Forbidden(
            "the management API is disabled: the hub listens beyond loopback and no admin_key is set"
                .into(),
        )),
    }
}

fn info(entry: &BackendEntry, view: Option<&BackendView>) -> BackendInfo {
    let last_error = entry
        .probe
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .last_error
        .clone();
    BackendInfo {
        name: entry.name.clone(),
        kind: entry.kind.to_string(),
        url: entry.endpoint.to_string(),
        breaker: view
            .map_or(BreakerState::Closed, |v| v.breaker)
            .as_str()
            .to_string(),
        draining: view.is_some_and(|v| v.draining),
        in_flight: view.map_or(0, |v| v.busy),
        models: view.map_or_else(Vec::new, |v| {
            v.models
                .iter()
                .map(|m| BackendModelInfo {
                    id: m.name.to_string(),
                    loaded: m.loaded,
                    slots: m.slots,
                    busy: m.busy,
                })
                .collect()
        }),
        last_error,
    }
}

fn views(hub: &HubState) -> HashMap<BackendId, BackendView> {
    hub.dispatcher
        .inspect(|s| s.fleet().views())
        .into_iter()
        .map(|v| (v.id, v))
        .collect()
}

pub async fn list(
    State(hub): State<Arc<HubState>>,
    headers: HeaderMap,
) -> Result<Json<BackendList>, ApiError> {
    authorize(&hub, &headers)?;
    let views = views(&hub);
    let backends = hub
        .registry
        .all()
        .iter()
        .map(|e| info(e, views.get(&e.id)))
        .collect();
    Ok(Json(BackendList { backends }))
}

pub async fn get(
    State(hub): State<Arc<HubState>>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<Json<BackendInfo>, ApiError> {
    authorize(&hub, &headers)?;
    let entry = find(&hub, &name)?;
    let views = views(&hub);
    Ok(Json(info(&entry, views.get(&entry.id))))
}

pub async fn add(
    State(hub): State<Arc<HubState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    authorize(&hub, &headers)?;
    let spec: BackendSpec = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(format!("invalid backend: {e}"), None, "invalid_backend")
    })?;
    let entry = hub.add_backend(&spec).map_err(|e| match e {
        RegistryError::Duplicate(_) => ApiError::Conflict(e.to_string()),
        RegistryError::Invalid(msg) => ApiError::bad_request(msg, None, "invalid_backend"),
    })?;
    tracing::info!(backend = %entry.name, url = %entry.endpoint, "backend added");
    Ok((StatusCode::CREATED, Json(info(&entry, None))).into_response())
}

pub async fn remove(
    State(hub): State<Arc<HubState>>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    authorize(&hub, &headers)?;
    if !hub.remove_backend(&name) {
        return Err(unknown(&name));
    }
    tracing::info!(backend = %name, "backend removed");
    Ok(Json(json!({"removed": name})).into_response())
}

pub async fn drain(
    State(hub): State<Arc<HubState>>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<Json<BackendInfo>, ApiError> {
    set_draining(hub, headers, name, true).await
}

pub async fn undrain(
    State(hub): State<Arc<HubState>>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<Json<BackendInfo>, ApiError> {
    set_draining(hub, headers, name, false).await
}

async fn set_draining(
    hub: Arc<HubState>,
    headers: HeaderMap,
    name: String,
    draining: bool,
) -> Result<Json<BackendInfo>, ApiError> {
    authorize(&hub, &headers)?;
    let entry = find(&hub, &name)?;
    let known = hub
        .dispatcher
        .with_scheduler(|s, _| s.set_draining(entry.id, draining));
    if !known {
        return Err(ApiError::Conflict(format!(
            "backend {name:?} has not answered a probe yet; nothing to drain"
        )));
    }
    tracing::info!(backend = %name, draining, "drain state changed");
    let views = views(&hub);
    Ok(Json(info(&entry, views.get(&entry.id))))
}

fn find(hub: &HubState, name: &str) -> Result<Arc<BackendEntry>, ApiError> {
    hub.registry.by_name(name).ok_or_else(|| unknown(name))
}

fn unknown(name: &str) -> ApiError {
    ApiError::NotFound {
        message: format!("no backend named {name:?}"),
    }
}
