//! `/v1/tasks`: work for capability workers, submitted by clients, and the
//! worker's side of a task (heartbeat, complete, fail) under its lease
//! token. A task is a job of kind `task` (`GET /v1/jobs/{id}` shows it
//! too); its output is its stored answer.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, Request, State};
use axum::response::Response;
use drover_proto::batch::List;
use drover_proto::jobs::Job;
use drover_proto::workers::{TaskComplete, TaskFail, TaskHeartbeat, TaskLease};
use drover_store::JobKind;
use http::HeaderMap;

use super::workers::body;
use crate::error::ApiError;
use crate::hub::HubState;
use crate::workers::Outcome;
use crate::workers::auth::worker_key;

#[utoipa::path(post, path = "/v1/tasks", tag = "tasks", request_body = drover_proto::workers::CreateTask, responses((status = 200, description = "The task, stored (or the one this Idempotency-Key made before); it waits for a worker offering its capability until its deadline", body = drover_proto::jobs::Job), (status = 400, description = "A field is wrong; the error names it", body = drover_proto::openai::ErrorBody), (status = 401, description = "The hub has client keys and this is none of them", body = drover_proto::openai::ErrorBody), (status = 403, description = "Not a client key", body = drover_proto::openai::ErrorBody), (status = 409, description = "The Idempotency-Key was used with another request", body = drover_proto::openai::ErrorBody), (status = 503, description = "The store is unreachable, or the hub keeps none", body = drover_proto::openai::ErrorBody)), security((), ("bearer" = [])))]
pub async fn create(State(hub): State<Arc<HubState>>, req: Request) -> Result<Response, ApiError> {
    let workers = &hub.workers;
    super::jobs::create_as(&hub, req, JobKind::Task, |task| {
        let input: serde_json::Value = serde_json::from_slice(&task.body)
            .map_err(|e| ApiError::bad_request(format!("input: {e}"), Some("input"), "invalid_input"))?;
        let offered = workers.check_input(&task.model, &input)?;
        Ok((!offered).then(|| {
            format!(
                "no worker offers {:?} yet: the task waits for one (until its deadline, if it has one)",
                task.model
            )
        }))
    })
    .await
}

#[utoipa::path(get, path = "/v1/tasks", tag = "tasks", params(super::jobs::ListQuery), responses((status = 200, description = "The caller's tasks, newest first, a page at a time (outputs not included); the same as /v1/jobs?kind=task", body = drover_proto::batch::List<drover_proto::jobs::Job>), (status = 400, description = "A bad filter", body = drover_proto::openai::ErrorBody), (status = 401, description = "The hub has client keys and this is none of them", body = drover_proto::openai::ErrorBody), (status = 403, description = "Not a client key", body = drover_proto::openai::ErrorBody), (status = 503, description = "The store is unreachable, or the hub keeps none", body = drover_proto::openai::ErrorBody)), security((), ("bearer" = [])))]
pub async fn list(
    state: State<Arc<HubState>>,
    headers: HeaderMap,
    query: Result<Query<super::jobs::ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<List<Job>>, ApiError> {
    let query = query.map(|Query(mut q)| {
        q.kind = Some(JobKind::Task.as_str().into());
        Query(q)
    });
    super::jobs::list(state, headers, query).await
}

#[utoipa::path(get, path = "/v1/tasks/{id}", tag = "tasks", params(("id" = String, Path, description = "The task's id")), responses((status = 200, description = "The task as a job: its capability as `model`, its state, every attempt (each naming its worker) with its error, and its output as the answer's body once it has one", body = drover_proto::jobs::Job), (status = 401, description = "The hub has client keys and this is none of them", body = drover_proto::openai::ErrorBody), (status = 403, description = "Not a client key", body = drover_proto::openai::ErrorBody), (status = 404, description = "No such task of this key's", body = drover_proto::openai::ErrorBody), (status = 503, description = "The store is unreachable, or the hub keeps none", body = drover_proto::openai::ErrorBody)), security((), ("bearer" = [])))]
pub async fn get(
    state: State<Arc<HubState>>,
    id: Path<String>,
    headers: HeaderMap,
) -> Result<Json<Job>, ApiError> {
    super::jobs::get(state, id, headers).await
}

#[utoipa::path(post, path = "/v1/tasks/{id}/cancel", tag = "tasks", params(("id" = String, Path, description = "The task's id")), responses((status = 200, description = "The task: cancelled if it waited; if a worker runs it, cancelled and the worker told so at its next heartbeat (cancel_requested)", body = drover_proto::jobs::Job), (status = 401, description = "The hub has client keys and this is none of them", body = drover_proto::openai::ErrorBody), (status = 403, description = "Not a client key", body = drover_proto::openai::ErrorBody), (status = 404, description = "No such task of this key's", body = drover_proto::openai::ErrorBody), (status = 503, description = "The store is unreachable, or the hub keeps none", body = drover_proto::openai::ErrorBody)), security((), ("bearer" = [])))]
pub async fn cancel(
    state: State<Arc<HubState>>,
    id: Path<String>,
    headers: HeaderMap,
) -> Result<Json<Job>, ApiError> {
    super::jobs::cancel(state, id, headers).await
}

#[utoipa::path(post, path = "/v1/tasks/{id}/heartbeat", tag = "tasks", params(("id" = String, Path, description = "The task's id")), request_body = drover_proto::workers::TaskHeartbeat, responses((status = 200, description = "The lease renewed, and whether the task was cancelled", body = drover_proto::workers::TaskLease), (status = 409, description = "The lease token does not hold the task (it went elsewhere)", body = drover_proto::openai::ErrorBody), (status = 401, description = "No worker key", body = drover_proto::openai::ErrorBody), (status = 403, description = "Not a worker key", body = drover_proto::openai::ErrorBody)), security((), ("bearer" = [])))]
pub async fn heartbeat(
    State(hub): State<Arc<HubState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    bytes: axum::body::Bytes,
) -> Result<Json<TaskLease>, ApiError> {
    worker_key(&hub, &headers)?;
    let beat: TaskHeartbeat = body(&bytes, None)?;
    Ok(Json(hub.workers.task_heartbeat(&id, &beat.lease_token)?))
}

#[utoipa::path(post, path = "/v1/tasks/{id}/complete", tag = "tasks", params(("id" = String, Path, description = "The task's id")), request_body = drover_proto::workers::TaskComplete, responses((status = 204, description = "Its output taken"), (status = 409, description = "The lease token does not hold the task: nothing changed", body = drover_proto::openai::ErrorBody), (status = 401, description = "No worker key", body = drover_proto::openai::ErrorBody), (status = 403, description = "Not a worker key", body = drover_proto::openai::ErrorBody)), security((), ("bearer" = [])))]
pub async fn complete(
    State(hub): State<Arc<HubState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    bytes: axum::body::Bytes,
) -> Result<http::StatusCode, ApiError> {
    worker_key(&hub, &headers)?;
    let done: TaskComplete = body(&bytes, None)?;
    hub.workers
        .finish(&id, &done.lease_token, Outcome::Completed(done.output))?;
    Ok(http::StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/v1/tasks/{id}/fail", tag = "tasks", params(("id" = String, Path, description = "The task's id")), request_body = drover_proto::workers::TaskFail, responses((status = 204, description = "Its failure taken: tried again on another worker if retryable, else failed for good"), (status = 409, description = "The lease token does not hold the task: nothing changed", body = drover_proto::openai::ErrorBody), (status = 401, description = "No worker key", body = drover_proto::openai::ErrorBody), (status = 403, description = "Not a worker key", body = drover_proto::openai::ErrorBody)), security((), ("bearer" = [])))]
pub async fn fail(
    State(hub): State<Arc<HubState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    bytes: axum::body::Bytes,
) -> Result<http::StatusCode, ApiError> {
    worker_key(&hub, &headers)?;
    let failed: TaskFail = body(&bytes, None)?;
    hub.workers.finish(
        &id,
        &failed.lease_token,
        Outcome::Failed {
            error: failed.error,
            retryable: failed.retryable,
        },
    )?;
    Ok(http::StatusCode::NO_CONTENT)
}
