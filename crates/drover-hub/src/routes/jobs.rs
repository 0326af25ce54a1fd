//! `/v1/jobs`: hand a request over to run later, and come back for its
//! answer. The same key as inference; a key sees only its own jobs (another
//! key's are not found, not forbidden: their ids say nothing). A job's
//! callback is a job of the same key's, found by its `webhook-id` (read,
//! cancelled, retried once dead) and listed apart (`?kind=callback`).

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, Request, State};
use axum::response::{IntoResponse, Response};
use drover_proto::batch::List;
use drover_proto::jobs::Job;
use drover_store::{Cancelled, Inserted, JobFilter, JobKind, JobState, Retried};
use http::{HeaderMap, HeaderName, HeaderValue};

use crate::caller;
use crate::error::ApiError;
use crate::hub::HubState;
use crate::jobs::submit::{self, Submitter};
use crate::jobs::{Jobs, callback, now_ms, view};

pub const IDEMPOTENCY_HEADER: &str = "idempotency-key";
/// On an answer to a repeated idempotency key, as Stripe says it.
const REPLAYED_HEADER: &str = "idempotent-replayed";
const MAX_IDEMPOTENCY_KEY: usize = 255;

pub(super) fn jobs_of(hub: &HubState) -> Result<&Arc<Jobs>, ApiError> {
    let jobs = hub.jobs.as_ref().ok_or(ApiError::NoStore)?;
    if !jobs.is_ready() {
        return Err(drover_store::StoreError::Unreachable(format!(
            "{} has not answered since the hub started; jobs are served once it does",
            jobs.store.describe()
        ))
        .into());
    }
    Ok(jobs)
}

/// Whose jobs the caller's are, in the store's terms: a stored key's id, a
/// `[[clients]]` entry's name, or the anonymous client's.
pub(super) fn scope(hub: &HubState, headers: &HeaderMap) -> Result<String, ApiError> {
    let holder = caller::authenticate(&hub.keys, &hub.clients, headers)?;
    Ok(scope_of(hub, holder.as_ref(), headers))
}

/// The store's terms for a caller already authenticated as `holder`.
pub(super) fn scope_of(
    hub: &HubState,
    holder: Option<&crate::keys::Holder>,
    headers: &HeaderMap,
) -> String {
    if let Some(holder) = holder {
        return holder.id.clone();
    }
    let known = caller::bearer(headers).and_then(|t| hub.clients.get(t));
    match known {
        Some(client) => format!("{}{}", view::CLIENT_PREFIX, client.name),
        None => drover_store::ANONYMOUS.to_string(),
    }
}

#[utoipa::path(post, path = "/v1/jobs", tag = "jobs", request_body = drover_proto::jobs::CreateJob, responses((status = 200, description = "The job, stored (or the one this Idempotency-Key made before)", body = drover_proto::jobs::Job), (status = 400, description = "A field is wrong; the error names it", body = drover_proto::openai::ErrorBody), (status = 401, description = "The hub has client keys and this is none of them", body = drover_proto::openai::ErrorBody), (status = 403, description = "An admin key", body = drover_proto::openai::ErrorBody), (status = 409, description = "The Idempotency-Key was used with another request", body = drover_proto::openai::ErrorBody), (status = 413, description = "The body is over the hub's limit", body = drover_proto::openai::ErrorBody), (status = 503, description = "The job store is unreachable, or the hub keeps none", body = drover_proto::openai::ErrorBody)), security((), ("bearer" = [])))]
pub async fn create(State(hub): State<Arc<HubState>>, req: Request) -> Result<Response, ApiError> {
    create_as(&hub, req, JobKind::Inference, |_| Ok(None)).await
}

/// Stores a job of `kind` (inference, or a task for a worker) from a
/// request's body, with its Idempotency-Key, once `check` (what the kind
/// asks beyond the body's shape) passes it; what `check` notes goes into
/// the answer.
pub(super) async fn create_as(
    hub: &HubState,
    req: Request,
    kind: JobKind,
    check: impl FnOnce(&drover_store::NewJob) -> Result<Option<String>, ApiError>,
) -> Result<Response, ApiError> {
    let (parts, body) = req.into_parts();
    let scope = scope(hub, &parts.headers)?;
    let jobs = jobs_of(hub)?;
    let idempotency_key = match parts.headers.get(IDEMPOTENCY_HEADER) {
        Some(v) => Some(
            v.to_str()
                .ok()
                .filter(|k| !k.is_empty() && k.len() <= MAX_IDEMPOTENCY_KEY)
                .ok_or_else(|| {
                    ApiError::bad_request(
                        format!("header Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} visible characters"),
                        Some(IDEMPOTENCY_HEADER),
                        "invalid_idempotency_key",
                    )
                })?,
        ),
        None => None,
    };
    let raw = super::inference::read_body(body, &hub.config.limits).await?;
    let who = Submitter {
        key_id: &scope,
        idempotency_key,
    };
    let new = match kind {
        JobKind::Task => submit::check_task(&raw, &who, &jobs.config, now_ms())?,
        _ => submit::check(&raw, &who, &jobs.config, now_ms())?,
    };
    let note = check(&new)?;
    let (job, replayed) = match jobs.store.insert_job(&new).await? {
        Inserted::Created(job) => {
            jobs.lane(kind).0.notify_one();
            (job, false)
        }
        Inserted::Existing(job) => (job, true),
        Inserted::Conflict(job) => {
            return Err(ApiError::Conflict(format!(
                "Idempotency-Key {:?} was used for job {} with another request; use a new key for a new request",
                crate::error::echo(idempotency_key.unwrap_or_default()),
                job.id
            )));
        }
    };
    let answer = answer_if_over(jobs, &job).await?;
    let mut shown = view::job(job, answer);
    shown.note = note;
    let mut response = Json(shown).into_response();
    if replayed {
        response.headers_mut().insert(
            HeaderName::from_static(REPLAYED_HEADER),
            HeaderValue::from_static("true"),
        );
    }
    Ok(response)
}

/// A job's answer, once it has ended with one.
pub(super) async fn answer_if_over(
    jobs: &Jobs,
    job: &drover_store::Job,
) -> Result<Option<drover_store::Answer>, ApiError> {
    if job.state.is_final() {
        Ok(jobs.store.job_answer(&job.id).await?)
    } else {
        Ok(None)
    }
}

pub(super) fn not_found(id: &str) -> ApiError {
    ApiError::NotFound {
        message: format!("no job {:?}", crate::error::echo(id)),
    }
}

/// The caller's job `id`, or 404.
async fn own_job(jobs: &Jobs, scope: &str, id: &str) -> Result<drover_store::Job, ApiError> {
    match jobs.store.job(id).await? {
        Some(job) if job.key_id == scope => Ok(job),
        _ => Err(not_found(id)),
    }
}

#[utoipa::path(get, path = "/v1/jobs/{id}", tag = "jobs", params(("id" = String, Path, description = "The job's id")), responses((status = 200, description = "The job: its state, every attempt with its error, and its answer once it has one", body = drover_proto::jobs::Job), (status = 401, description = "The hub has client keys and this is none of them", body = drover_proto::openai::ErrorBody), (status = 403, description = "An admin key", body = drover_proto::openai::ErrorBody), (status = 404, description = "No such job of this key's", body = drover_proto::openai::ErrorBody), (status = 503, description = "The job store is unreachable, or the hub keeps none", body = drover_proto::openai::ErrorBody)), security((), ("bearer" = [])))]
pub async fn get(
    State(hub): State<Arc<HubState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Json<Job>, ApiError> {
    let scope = scope(&hub, &headers)?;
    let jobs = jobs_of(&hub)?;
    let job = own_job(jobs, &scope, &id).await?;
    let answer = answer_if_over(jobs, &job).await?;
    Ok(Json(view::job(job, answer)))
}

#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
pub struct ListQuery {
    /// Only jobs in this state.
    state: Option<String>,
    /// Only this batch's jobs.
    batch_id: Option<String>,
    /// `inference` (the default): the jobs submitted; `task`: the tasks
    /// for workers; `callback`: their callbacks, each with its deliveries
    /// (`?kind=callback&state=dead` finds those never delivered).
    pub(super) kind: Option<String>,
    /// The cursor: jobs older than this one (the last page's `last_id`).
    after: Option<String>,
    /// 1 to 100; 20 by default.
    limit: Option<u32>,
}

/// Which jobs a listing asks for: `state` one of the store's, `limit` 1 to
/// 100 (20 if none).
pub(super) fn filter(
    key_id: Option<String>,
    state: Option<&str>,
    kind: Option<JobKind>,
    batch_id: Option<String>,
    after: Option<String>,
    limit: Option<u32>,
) -> Result<JobFilter, ApiError> {
    let state = match state {
        Some(s) => Some(JobState::parse(s).ok_or_else(|| {
            let all: Vec<&str> = JobState::ALL.iter().map(|s| s.as_str()).collect();
            ApiError::bad_request(
                format!(
                    "state {:?} is none of {}",
                    crate::error::echo(s),
                    all.join(", ")
                ),
                Some("state"),
                "invalid_state",
            )
        })?),
        None => None,
    };
    Ok(JobFilter {
        key_id,
        kind,
        state,
        batch_id,
        after,
        limit: page_limit(limit)?,
    })
}

/// A listing's page size: 1 to 100, 20 if none is asked for.
pub(super) fn page_limit(limit: Option<u32>) -> Result<u32, ApiError> {
    let limit = limit.unwrap_or(20);
    if !(1..=100).contains(&limit) {
        return Err(ApiError::bad_request(
            "limit must be from 1 to 100",
            Some("limit"),
            "invalid_limit",
        ));
    }
    Ok(limit)
}

#[utoipa::path(get, path = "/v1/jobs", tag = "jobs", params(ListQuery), responses((status = 200, description = "The caller's jobs (or their callbacks), newest first, a page at a time (answers not included)", body = drover_proto::batch::List<drover_proto::jobs::Job>), (status = 400, description = "A bad filter", body = drover_proto::openai::ErrorBody), (status = 401, description = "The hub has client keys and this is none of them", body = drover_proto::openai::ErrorBody), (status = 403, description = "An admin key", body = drover_proto::openai::ErrorBody), (status = 503, description = "The job store is unreachable, or the hub keeps none", body = drover_proto::openai::ErrorBody)), security((), ("bearer" = [])))]
pub async fn list(
    State(hub): State<Arc<HubState>>,
    headers: HeaderMap,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<List<Job>>, ApiError> {
    let scope = scope(&hub, &headers)?;
    let jobs = jobs_of(&hub)?;
    let Query(query) =
        query.map_err(|e| ApiError::bad_request(e.body_text(), None, "invalid_query"))?;
    let kind = match query.kind.as_deref() {
        None => JobKind::Inference,
        Some(k) => JobKind::parse(k).ok_or_else(|| {
            ApiError::bad_request(
                format!(
                    "kind {:?} is none of inference, task, callback",
                    crate::error::echo(k)
                ),
                Some("kind"),
                "invalid_kind",
            )
        })?,
    };
    let filter = filter(
        Some(scope),
        query.state.as_deref(),
        Some(kind),
        query.batch_id,
        query.after,
        query.limit,
    )?;
    let page = jobs.store.jobs(&filter).await?;
    let data: Vec<Job> = page.jobs.into_iter().map(|j| view::job(j, None)).collect();
    Ok(Json(List::page(data, page.has_more, |j| &j.id)))
}

#[utoipa::path(post, path = "/v1/jobs/{id}/cancel", tag = "jobs", params(("id" = String, Path, description = "The job's id")), responses((status = 200, description = "The job: cancelled if it waited; asked to stop (cancel_requested) if it runs; as it was if it had ended", body = drover_proto::jobs::Job), (status = 401, description = "The hub has client keys and this is none of them", body = drover_proto::openai::ErrorBody), (status = 403, description = "An admin key", body = drover_proto::openai::ErrorBody), (status = 404, description = "No such job of this key's", body = drover_proto::openai::ErrorBody), (status = 503, description = "The job store is unreachable, or the hub keeps none", body = drover_proto::openai::ErrorBody)), security((), ("bearer" = [])))]
pub async fn cancel(
    State(hub): State<Arc<HubState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Json<Job>, ApiError> {
    let scope = scope(&hub, &headers)?;
    let jobs = jobs_of(&hub)?;
    own_job(jobs, &scope, &id).await?;
    let job = cancel_job(jobs, &id).await?;
    let answer = answer_if_over(jobs, &job).await?;
    Ok(Json(view::job(job, answer)))
}

/// Cancels job `id`: at once if it waits; a running one is asked to stop
/// (and stopped, if it runs on this hub). The job as it is after.
pub(super) async fn cancel_job(jobs: &Jobs, id: &str) -> Result<drover_store::Job, ApiError> {
    match jobs
        .store
        .cancel_job(id, now_ms(), &callback::without_answer)
        .await?
    {
        Some(Cancelled::Requested(job)) => {
            jobs.stop(id);
            Ok(job)
        }
        Some(Cancelled::Now(job)) => {
            // Its callback, stored with the cancel, is due now.
            jobs.wake_callbacks();
            Ok(job)
        }
        Some(Cancelled::AlreadyOver(job)) => Ok(job),
        None => Err(not_found(id)),
    }
}

#[utoipa::path(post, path = "/v1/jobs/{id}/retry", tag = "jobs", params(("id" = String, Path, description = "The job's id")), responses((status = 200, description = "The job, queued again with jobs.max_attempts more attempts; its history kept", body = drover_proto::jobs::Job), (status = 401, description = "The hub has client keys and this is none of them", body = drover_proto::openai::ErrorBody), (status = 403, description = "An admin key", body = drover_proto::openai::ErrorBody), (status = 404, description = "No such job of this key's", body = drover_proto::openai::ErrorBody), (status = 409, description = "The job has not ended, or it completed", body = drover_proto::openai::ErrorBody), (status = 503, description = "The job store is unreachable, or the hub keeps none", body = drover_proto::openai::ErrorBody)), security((), ("bearer" = [])))]
pub async fn retry(
    State(hub): State<Arc<HubState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Json<Job>, ApiError> {
    let scope = scope(&hub, &headers)?;
    let jobs = jobs_of(&hub)?;
    own_job(jobs, &scope, &id).await?;
    Ok(Json(view::job(retry_job(jobs, &id).await?, None)))
}

/// Queues job `id` again with `jobs.max_attempts` more attempts, if it
/// ended without success; 409 if it has not ended or it completed.
pub(super) async fn retry_job(jobs: &Jobs, id: &str) -> Result<drover_store::Job, ApiError> {
    match jobs
        .store
        .retry_job(id, jobs.config.max_attempts, now_ms())
        .await?
    {
        Some(Retried::Queued(job)) => {
            match job.kind {
                JobKind::Inference => jobs.wake(),
                JobKind::Callback => jobs.wake_callbacks(),
                JobKind::Task => jobs.wake_tasks(),
            }
            Ok(job)
        }
        Some(Retried::Completed(job)) => Err(ApiError::Conflict(format!(
            "job {} completed; only a job that ended without success can be retried",
            job.id
        ))),
        Some(Retried::NotOver(job)) => Err(ApiError::Conflict(format!(
            "job {} is {}; only a job that ended can be retried",
            job.id,
            job.state.as_str()
        ))),
        None => Err(not_found(id)),
    }
}
