//! `/v1/tasks`: work for capability workers, submitted by clients, and the
//! worker's side of a task (heartbeat, complete, fail) under its lease
//! token. A task is a job of kind `task` (`GET /v1/jobs/{id}` shows it
//! too); its output is its stored answer. `/v1/tasks/plan` asks a model
//! to turn a request in plain language into tasks ([`plan`]), kept with
//! the model's answer.

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, Request, State};
use axum::response::Response;
use drover_proto::batch::List;
use drover_proto::jobs::Job;
use drover_proto::workers::{
    CreateTask, PlanRequest, PlanView, TaskComplete, TaskFail, TaskHeartbeat, TaskLease,
};
use drover_store::{JobKind, NewPlan};
use http::HeaderMap;
use serde_json::Value;

use super::workers::body;
use crate::caller;
use crate::error::ApiError;
use crate::forward::Sender;
use crate::hub::HubState;
use crate::jobs::submit::{self, Submitter};
use crate::jobs::{Jobs, now_ms, view};
use crate::workers::auth::worker_key;
use crate::workers::{Outcome, plan};

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

#[utoipa::path(post, path = "/v1/tasks/plan", tag = "tasks", request_body = drover_proto::workers::PlanRequest, responses((status = 200, description = "The plan: the request, the model's answer, the plan it parsed into and the tasks it submitted", body = drover_proto::workers::PlanView), (status = 400, description = "A field is wrong, or no planner model is set; the error names it", body = drover_proto::openai::ErrorBody), (status = 401, description = "The hub has client keys and this is none of them", body = drover_proto::openai::ErrorBody), (status = 403, description = "Not a client key", body = drover_proto::openai::ErrorBody), (status = 404, description = "The planner model is not in the fleet", body = drover_proto::openai::ErrorBody), (status = 409, description = "No worker offers any capability: there is nothing to plan for", body = drover_proto::openai::ErrorBody), (status = 422, description = "The model's answer is not a plan that can run (not JSON, outside the schema, a capability nobody offers): the error, with the plan as kept (`plan`, the model's answer in it)", body = drover_proto::openai::ErrorBody), (status = 502, description = "The planner model answered with an error", body = drover_proto::openai::ErrorBody), (status = 503, description = "No server could answer, the store is unreachable, or the hub keeps none", body = drover_proto::openai::ErrorBody)), security((), ("bearer" = [])))]
pub async fn plan(
    State(hub): State<Arc<HubState>>,
    headers: HeaderMap,
    bytes: axum::body::Bytes,
) -> Result<Json<PlanView>, ApiError> {
    let holder = caller::authenticate(&hub.keys, &hub.clients, &headers)?;
    let scope = super::jobs::scope_of(&hub, holder.as_ref(), &headers);
    let jobs = super::jobs::jobs_of(&hub)?;
    let asked: PlanRequest = body(&bytes, None)?;
    let request = asked.request.trim();
    if request.is_empty() || request.chars().count() > plan::MAX_REQUEST_CHARS {
        return Err(ApiError::bad_request(
            format!(
                "request: from 1 to {} characters of plain language",
                plan::MAX_REQUEST_CHARS
            ),
            Some("request"),
            "invalid_plan_request",
        ));
    }
    let config = &hub.config.workers;
    let Some(model) = asked.model.clone().or_else(|| config.planner_model.clone()) else {
        return Err(ApiError::bad_request(
            "no planner model: name one in `model`, or set workers.planner_model",
            Some("model"),
            "invalid_plan_request",
        ));
    };
    let who = Submitter {
        key_id: &scope,
        idempotency_key: None,
    };
    let task_of = |capability: String, input: Value, plan_id: &str, now: i64| {
        let mut metadata = serde_json::Map::new();
        metadata.insert("plan_id".into(), Value::String(plan_id.into()));
        let create = CreateTask {
            capability,
            input,
            priority: asked.priority,
            max_attempts: asked.max_attempts,
            deadline: asked.deadline.clone(),
            callback_url: None,
            metadata: Some(metadata),
        };
        let raw = serde_json::to_vec(&create).map_err(|e| ApiError::Internal(e.to_string()))?;
        submit::check_task(&raw, &who, &jobs.config, now)
    };
    // The tasks' terms are checked before the model is asked.
    task_of("check".into(), Value::Null, "plan_check", now_ms())?;
    let offered = hub.workers.offered();
    if offered.is_empty() {
        return Err(ApiError::Conflict(
            "no worker offers any capability yet: there is nothing to plan for".into(),
        ));
    }
    let max_tasks = config.planner_max_tasks;
    let ask = plan::chat_body(
        &model,
        request,
        &offered,
        max_tasks,
        config.planner_max_tokens,
    );
    let sender = Sender {
        token: if holder.is_none() {
            caller::bearer(&headers).map(str::to_string)
        } else {
            None
        },
        holder,
        priority: None,
        queue_timeout: None,
        request_id: None,
        accept: None,
        arrived: None,
    };
    let answer = plan::ask(&hub, sender, &ask).await?;
    // A deadline "in 30m" counts from when the tasks are made.
    let now = now_ms();
    let id = format!("plan_{}", uuid::Uuid::now_v7().simple());
    let mut kept = NewPlan {
        id: id.clone(),
        key_id: scope.clone(),
        request: request.to_string(),
        model,
        plan: plan::parsed(&answer).map(|p| p.to_string()),
        answer,
        error: None,
        created_at: now,
    };
    match plan::read_plan(&kept.answer, &offered, max_tasks, &hub.workers) {
        Ok((_, planned)) => {
            let tasks = planned
                .into_iter()
                .map(|(capability, input)| task_of(capability, input, &id, now))
                .collect::<Result<Vec<_>, _>>()?;
            jobs.store.insert_plan(&kept, &tasks).await?;
            jobs.lane(JobKind::Task).0.notify_one();
            tracing::info!(target: "drover::action", plan = %id, tasks = tasks.len(), "plan submitted");
        }
        Err(why) => {
            kept.error = Some(why.clone());
            jobs.store.insert_plan(&kept, &[]).await?;
            let shown = plan_view(jobs, stored(jobs, &id).await?, false).await?;
            return Err(ApiError::PlanRefused {
                message: format!("the model's plan cannot be run: {why}"),
                plan: Box::new(shown),
            });
        }
    }
    Ok(Json(
        plan_view(jobs, stored(jobs, &id).await?, false).await?,
    ))
}

async fn stored(jobs: &Jobs, id: &str) -> Result<drover_store::Plan, ApiError> {
    jobs.store
        .plan(id)
        .await?
        .ok_or_else(|| ApiError::Internal(format!("plan {id} vanished as it was stored")))
}

/// A kept plan with its tasks as they stand (with their outputs, where
/// `outputs`).
async fn plan_view(
    jobs: &Jobs,
    plan: drover_store::Plan,
    outputs: bool,
) -> Result<PlanView, ApiError> {
    let mut tasks = Vec::new();
    for id in plan.tasks()? {
        if let Some(job) = jobs.store.job(&id).await? {
            let answer = if outputs {
                super::jobs::answer_if_over(jobs, &job).await?
            } else {
                None
            };
            tasks.push(view::job(job, answer));
        }
    }
    Ok(PlanView {
        object: "plan".into(),
        plan: plan
            .plan
            .as_deref()
            .and_then(|p| serde_json::from_str(p).ok()),
        id: plan.id,
        request: plan.request,
        model: plan.model,
        answer: plan.answer,
        error: plan.error,
        tasks,
        created_at: plan.created_at.div_euclid(1000),
    })
}

/// `?limit=` of a plan listing: 1 to 100, 20 unless given.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
pub struct PlansQuery {
    pub limit: Option<u32>,
}

fn limit(query: Result<Query<PlansQuery>, QueryRejection>) -> Result<u32, ApiError> {
    let Query(q) = query.map_err(|e| {
        ApiError::bad_request(
            format!("bad query: {}", e.body_text()),
            None,
            "invalid_query",
        )
    })?;
    match q.limit {
        None => Ok(20),
        Some(n @ 1..=100) => Ok(n),
        Some(_) => Err(ApiError::bad_request(
            "limit: from 1 to 100",
            Some("limit"),
            "invalid_query",
        )),
    }
}

#[utoipa::path(get, path = "/v1/tasks/plans", tag = "tasks", params(PlansQuery), responses((status = 200, description = "The caller's plans, newest first, each with its tasks as they stand (outputs: GET one plan)", body = drover_proto::batch::List<drover_proto::workers::PlanView>), (status = 400, description = "A bad limit", body = drover_proto::openai::ErrorBody), (status = 401, description = "The hub has client keys and this is none of them", body = drover_proto::openai::ErrorBody), (status = 403, description = "Not a client key", body = drover_proto::openai::ErrorBody), (status = 503, description = "The store is unreachable, or the hub keeps none", body = drover_proto::openai::ErrorBody)), security((), ("bearer" = [])))]
pub async fn plans(
    State(hub): State<Arc<HubState>>,
    headers: HeaderMap,
    query: Result<Query<PlansQuery>, QueryRejection>,
) -> Result<Json<List<PlanView>>, ApiError> {
    let scope = super::jobs::scope(&hub, &headers)?;
    list_plans(&hub, Some(&scope), limit(query)?).await
}

#[utoipa::path(get, path = "/admin/plans", tag = "tasks", params(PlansQuery), responses((status = 200, description = "Every key's plans, newest first, each with its tasks as they stand", body = drover_proto::batch::List<drover_proto::workers::PlanView>), (status = 400, description = "A bad limit", body = drover_proto::openai::ErrorBody), (status = 401, description = "No admin key, or not a valid one", body = drover_proto::openai::ErrorBody), (status = 403, description = "Not an admin key, or a request from a web page", body = drover_proto::openai::ErrorBody), (status = 503, description = "The store is unreachable, or the hub keeps none", body = drover_proto::openai::ErrorBody)), security((), ("bearer" = [])))]
pub async fn admin_plans(
    State(hub): State<Arc<HubState>>,
    query: Result<Query<PlansQuery>, QueryRejection>,
) -> Result<Json<List<PlanView>>, ApiError> {
    list_plans(&hub, None, limit(query)?).await
}

async fn list_plans(
    hub: &HubState,
    scope: Option<&str>,
    limit: u32,
) -> Result<Json<List<PlanView>>, ApiError> {
    let jobs = super::jobs::jobs_of(hub)?;
    // One more than asked says whether there are more.
    let mut kept = jobs.store.plans(scope, limit + 1).await?;
    let has_more = kept.len() > limit as usize;
    kept.truncate(limit as usize);
    let mut shown = Vec::with_capacity(kept.len());
    for plan in kept {
        shown.push(plan_view(jobs, plan, false).await?);
    }
    Ok(Json(List::page(shown, has_more, |p| &p.id)))
}

#[utoipa::path(get, path = "/v1/tasks/plans/{id}", tag = "tasks", params(("id" = String, Path, description = "The plan's id")), responses((status = 200, description = "The plan: the request, the model's answer, the plan, and its tasks with their outputs", body = drover_proto::workers::PlanView), (status = 401, description = "The hub has client keys and this is none of them", body = drover_proto::openai::ErrorBody), (status = 403, description = "Not a client key", body = drover_proto::openai::ErrorBody), (status = 404, description = "No such plan of this key's", body = drover_proto::openai::ErrorBody), (status = 503, description = "The store is unreachable, or the hub keeps none", body = drover_proto::openai::ErrorBody)), security((), ("bearer" = [])))]
pub async fn plan_get(
    State(hub): State<Arc<HubState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Json<PlanView>, ApiError> {
    let scope = super::jobs::scope(&hub, &headers)?;
    let jobs = super::jobs::jobs_of(&hub)?;
    match jobs.store.plan(&id).await? {
        Some(plan) if plan.key_id == scope => Ok(Json(plan_view(jobs, plan, true).await?)),
        _ => Err(ApiError::NotFound {
            message: format!("no plan {:?}", crate::error::echo(&id)),
        }),
    }
}
