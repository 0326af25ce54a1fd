//! `/v1/workers`: a worker registers what it offers, heartbeats, polls for
//! tasks (a long poll: 204 when the wait ends empty, under common proxies'
//! 60 s read timeouts) and leaves. Only a worker key (or, on a loopback
//! hub that has none, anyone local) may; a worker acts only for itself.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use drover_proto::workers::{
    Poll, Polled, RegisterWorker, WorkerHeartbeat, WorkerList, WorkerRegistered, WorkerState,
};
use http::{HeaderMap, StatusCode};

use crate::error::ApiError;
use crate::hub::HubState;
use crate::workers::auth::worker_key;

/// A JSON body a worker sent (`empty` where it may send none), or a 400
/// naming what is wrong with it.
pub(super) fn body<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
    empty: Option<T>,
) -> Result<T, ApiError> {
    if let Some(empty) = empty
        && bytes.iter().all(u8::is_ascii_whitespace)
    {
        return Ok(empty);
    }
    serde_json::from_slice(bytes)
        .map_err(|e| ApiError::bad_request(format!("invalid body: {e}"), None, "invalid_json"))
}

#[utoipa::path(post, path = "/v1/workers", tag = "workers", request_body = drover_proto::workers::RegisterWorker, responses((status = 200, description = "Registered: its id, and the rhythm the hub expects", body = drover_proto::workers::WorkerRegistered), (status = 400, description = "A field is wrong; the error names it", body = drover_proto::openai::ErrorBody), (status = 401, description = "No worker key", body = drover_proto::openai::ErrorBody), (status = 403, description = "Not a worker key", body = drover_proto::openai::ErrorBody)), security((), ("bearer" = [])))]
pub async fn register(
    State(hub): State<Arc<HubState>>,
    headers: HeaderMap,
    bytes: axum::body::Bytes,
) -> Result<Json<WorkerRegistered>, ApiError> {
    let key = worker_key(&hub, &headers)?;
    let asked: RegisterWorker = body(&bytes, None)?;
    Ok(Json(hub.workers.register(&hub, &key, asked)?))
}

#[utoipa::path(get, path = "/v1/workers", tag = "workers", responses((status = 200, description = "Every worker: its capabilities, tasks held, when last heard of", body = drover_proto::workers::WorkerList), (status = 401, description = "No worker key", body = drover_proto::openai::ErrorBody), (status = 403, description = "Not a worker key", body = drover_proto::openai::ErrorBody)), security((), ("bearer" = [])))]
pub async fn list(
    State(hub): State<Arc<HubState>>,
    headers: HeaderMap,
) -> Result<Json<WorkerList>, ApiError> {
    worker_key(&hub, &headers)?;
    Ok(Json(WorkerList {
        workers: hub.workers.list(),
    }))
}

#[utoipa::path(delete, path = "/v1/workers/{id}", tag = "workers", params(("id" = String, Path, description = "The worker's id")), responses((status = 204, description = "Gone: its tasks run elsewhere"), (status = 404, description = "No such worker", body = drover_proto::openai::ErrorBody), (status = 401, description = "No worker key", body = drover_proto::openai::ErrorBody), (status = 403, description = "Not a worker key, or another worker's", body = drover_proto::openai::ErrorBody)), security((), ("bearer" = [])))]
pub async fn deregister(
    State(hub): State<Arc<HubState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    let key = worker_key(&hub, &headers)?;
    hub.workers.deregister(&hub, &id, &key)?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/v1/workers/{id}/heartbeat", tag = "workers", params(("id" = String, Path, description = "The worker's id")), request_body = drover_proto::workers::WorkerHeartbeat, responses((status = 200, description = "run, or drain (finish what it holds, take nothing new)", body = drover_proto::workers::WorkerState), (status = 404, description = "No such worker: register again", body = drover_proto::openai::ErrorBody), (status = 401, description = "No worker key", body = drover_proto::openai::ErrorBody), (status = 403, description = "Not a worker key, or another worker's", body = drover_proto::openai::ErrorBody)), security((), ("bearer" = [])))]
pub async fn heartbeat(
    State(hub): State<Arc<HubState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    bytes: axum::body::Bytes,
) -> Result<Json<WorkerState>, ApiError> {
    let key = worker_key(&hub, &headers)?;
    let beat: WorkerHeartbeat = body(&bytes, Some(WorkerHeartbeat::default()))?;
    Ok(Json(WorkerState {
        state: hub
            .workers
            .heartbeat(&hub, &id, &key, beat.draining)?
            .to_string(),
    }))
}

#[utoipa::path(post, path = "/v1/workers/{id}/poll", tag = "workers", params(("id" = String, Path, description = "The worker's id")), request_body = drover_proto::workers::Poll, responses((status = 200, description = "Tasks for it, each with its lease token", body = drover_proto::workers::Polled), (status = 204, description = "The wait ended with none"), (status = 404, description = "No such worker: register again", body = drover_proto::openai::ErrorBody), (status = 401, description = "No worker key", body = drover_proto::openai::ErrorBody), (status = 403, description = "Not a worker key, or another worker's", body = drover_proto::openai::ErrorBody)), security((), ("bearer" = [])))]
pub async fn poll(
    State(hub): State<Arc<HubState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    bytes: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let key = worker_key(&hub, &headers)?;
    let asked: Poll = body(&bytes, Some(Poll::default()))?;
    let tasks = hub.workers.poll(&id, &key, &asked, &hub.shutdown).await?;
    if tasks.is_empty() {
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    Ok(Json(Polled { tasks }).into_response())
}

#[utoipa::path(get, path = "/admin/workers", tag = "workers", responses((status = 200, description = "Every worker: its capabilities, tasks held, when last heard of, drain", body = drover_proto::workers::WorkerList), (status = 401, description = "No admin key, or not a valid one", body = drover_proto::openai::ErrorBody), (status = 403, description = "Not an admin key, or a request from a web page", body = drover_proto::openai::ErrorBody)), security((), ("bearer" = [])))]
pub async fn admin_list(State(hub): State<Arc<HubState>>) -> Json<WorkerList> {
    Json(WorkerList {
        workers: hub.workers.list(),
    })
}

#[utoipa::path(post, path = "/admin/workers/{id}/drain", tag = "workers", params(("id" = String, Path, description = "The worker's id")), responses((status = 204, description = "No new task goes there; it finishes what it holds and hears drain at its heartbeats"), (status = 404, description = "No such worker", body = drover_proto::openai::ErrorBody), (status = 401, description = "No admin key, or not a valid one", body = drover_proto::openai::ErrorBody), (status = 403, description = "Not an admin key, or a request from a web page", body = drover_proto::openai::ErrorBody)), security((), ("bearer" = [])))]
pub async fn drain(
    State(hub): State<Arc<HubState>>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    set_drain(&hub, &id, true)
}

#[utoipa::path(post, path = "/admin/workers/{id}/undrain", tag = "workers", params(("id" = String, Path, description = "The worker's id")), responses((status = 204, description = "It takes tasks again"), (status = 404, description = "No such worker", body = drover_proto::openai::ErrorBody), (status = 401, description = "No admin key, or not a valid one", body = drover_proto::openai::ErrorBody), (status = 403, description = "Not an admin key, or a request from a web page", body = drover_proto::openai::ErrorBody)), security((), ("bearer" = [])))]
pub async fn undrain(
    State(hub): State<Arc<HubState>>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    set_drain(&hub, &id, false)
}

fn set_drain(hub: &HubState, id: &str, draining: bool) -> Result<StatusCode, ApiError> {
    if !hub.workers.drain(hub, id, draining) {
        return Err(ApiError::NotFound {
            message: format!("no worker {:?}", crate::error::echo(id)),
        });
    }
    tracing::info!(target: "drover::action", worker = %id, draining, "worker drain set");
    Ok(StatusCode::NO_CONTENT)
}
