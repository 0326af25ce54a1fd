//! `/admin/jobs` and `/admin/batches`: every key's jobs and batches for an
//! operator, each naming its key, with the same cancel and retry a key has
//! for its own (the same calls, without the key's scope).

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use drover_proto::admin::{AdminBatch, AdminJob};
use drover_proto::batch::List;
use drover_store::BatchFilter;

use super::jobs::{answer_if_over, cancel_job, filter, jobs_of, page_limit, retry_job};
use crate::batches::view as batch_view;
use crate::error::ApiError;
use crate::hub::HubState;
use crate::jobs::view::{self, KeyNames};

fn names(hub: &HubState) -> KeyNames {
    KeyNames::new(hub.keys.list())
}

fn admin_job(
    names: &KeyNames,
    job: drover_store::Job,
    answer: Option<drover_store::Answer>,
) -> AdminJob {
    let owner = names.owner(&job.key_id);
    AdminJob {
        job: view::job(job, answer),
        owner,
    }
}

/// The store's key id for a `key` filter, which may name the key.
fn key_filter(hub: &HubState, key: Option<&str>) -> Result<Option<String>, ApiError> {
    match key {
        None => Ok(None),
        Some("") => Err(ApiError::bad_request(
            "key must be a key's name or id",
            Some("key"),
            "invalid_key",
        )),
        Some(key) => Ok(Some(names(hub).key_id(key, &hub.clients))),
    }
}

#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
pub struct JobsQuery {
    /// Only jobs in this state.
    state: Option<String>,
    /// Only this batch's jobs.
    batch_id: Option<String>,
    /// Only this key's jobs: its name or id (`anonymous` for the anonymous
    /// client's, a `[[clients]]` name for its).
    key: Option<String>,
    /// The cursor: jobs older than this one (the last page's `last_id`).
    after: Option<String>,
    /// 1 to 100; 20 by default.
    limit: Option<u32>,
}

#[utoipa::path(get, path = "/admin/jobs", tag = "jobs", params(JobsQuery), responses((status = 200, description = "Every key's jobs, newest first, a page at a time (answers not included), each naming its key", body = drover_proto::batch::List<drover_proto::admin::AdminJob>), (status = 400, description = "A bad filter", body = drover_proto::openai::ErrorBody), (status = 401, description = "No admin key, or not a valid one", body = drover_proto::openai::ErrorBody), (status = 403, description = "A client key, or a request from a web page", body = drover_proto::openai::ErrorBody), (status = 503, description = "The job store is unreachable, or the hub keeps none", body = drover_proto::openai::ErrorBody)), security((), ("bearer" = [])))]
pub async fn list(
    State(hub): State<Arc<HubState>>,
    query: Result<Query<JobsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<List<AdminJob>>, ApiError> {
    let jobs = jobs_of(&hub)?;
    let Query(query) =
        query.map_err(|e| ApiError::bad_request(e.body_text(), None, "invalid_query"))?;
    let filter = filter(
        key_filter(&hub, query.key.as_deref())?,
        query.state.as_deref(),
        None,
        query.batch_id,
        query.after,
        query.limit,
    )?;
    let page = jobs.store.jobs(&filter).await?;
    let names = names(&hub);
    let data: Vec<AdminJob> = page
        .jobs
        .into_iter()
        .map(|j| admin_job(&names, j, None))
        .collect();
    Ok(Json(List::page(data, page.has_more, |j| &j.job.id)))
}

#[utoipa::path(get, path = "/admin/jobs/{id}", tag = "jobs", params(("id" = String, Path, description = "The job's id")), responses((status = 200, description = "The job of any key: its state, every attempt with its error, its answer once it has one, and its key", body = drover_proto::admin::AdminJob), (status = 401, description = "No admin key, or not a valid one", body = drover_proto::openai::ErrorBody), (status = 403, description = "A client key, or a request from a web page", body = drover_proto::openai::ErrorBody), (status = 404, description = "No such job", body = drover_proto::openai::ErrorBody), (status = 503, description = "The job store is unreachable, or the hub keeps none", body = drover_proto::openai::ErrorBody)), security((), ("bearer" = [])))]
pub async fn get(
    State(hub): State<Arc<HubState>>,
    Path(id): Path<String>,
) -> Result<Json<AdminJob>, ApiError> {
    let jobs = jobs_of(&hub)?;
    let job = jobs
        .store
        .job(&id)
        .await?
        .ok_or_else(|| super::jobs::not_found(&id))?;
    let answer = answer_if_over(jobs, &job).await?;
    Ok(Json(admin_job(&names(&hub), job, answer)))
}

#[utoipa::path(post, path = "/admin/jobs/{id}/cancel", tag = "jobs", params(("id" = String, Path, description = "The job's id")), responses((status = 200, description = "The job: cancelled if it waited; asked to stop (cancel_requested) if it runs; as it was if it had ended", body = drover_proto::admin::AdminJob), (status = 401, description = "No admin key, or not a valid one", body = drover_proto::openai::ErrorBody), (status = 403, description = "A client key, or a request from a web page", body = drover_proto::openai::ErrorBody), (status = 404, description = "No such job", body = drover_proto::openai::ErrorBody), (status = 503, description = "The job store is unreachable, or the hub keeps none", body = drover_proto::openai::ErrorBody)), security((), ("bearer" = [])))]
pub async fn cancel(
    State(hub): State<Arc<HubState>>,
    Path(id): Path<String>,
) -> Result<Json<AdminJob>, ApiError> {
    let jobs = jobs_of(&hub)?;
    let job = cancel_job(jobs, &id).await?;
    let answer = answer_if_over(jobs, &job).await?;
    Ok(Json(admin_job(&names(&hub), job, answer)))
}

#[utoipa::path(post, path = "/admin/jobs/{id}/retry", tag = "jobs", params(("id" = String, Path, description = "The job's id")), responses((status = 200, description = "The job, queued again with jobs.max_attempts more attempts; its history kept", body = drover_proto::admin::AdminJob), (status = 401, description = "No admin key, or not a valid one", body = drover_proto::openai::ErrorBody), (status = 403, description = "A client key, or a request from a web page", body = drover_proto::openai::ErrorBody), (status = 404, description = "No such job", body = drover_proto::openai::ErrorBody), (status = 409, description = "The job has not ended, or it completed", body = drover_proto::openai::ErrorBody), (status = 503, description = "The job store is unreachable, or the hub keeps none", body = drover_proto::openai::ErrorBody)), security((), ("bearer" = [])))]
pub async fn retry(
    State(hub): State<Arc<HubState>>,
    Path(id): Path<String>,
) -> Result<Json<AdminJob>, ApiError> {
    let jobs = jobs_of(&hub)?;
    let job = retry_job(jobs, &id).await?;
    Ok(Json(admin_job(&names(&hub), job, None)))
}

#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
pub struct BatchesQuery {
    /// Only this key's batches: its name or id.
    key: Option<String>,
    /// The cursor: the last page's `last_id`.
    after: Option<String>,
    /// 1 to 100; 20 by default.
    limit: Option<u32>,
}

#[utoipa::path(get, path = "/admin/batches", tag = "batches", params(BatchesQuery), responses((status = 200, description = "Every key's batches, newest first, with their request counts, each naming its key", body = drover_proto::batch::List<drover_proto::admin::AdminBatch>), (status = 400, description = "A bad parameter", body = drover_proto::openai::ErrorBody), (status = 401, description = "No admin key, or not a valid one", body = drover_proto::openai::ErrorBody), (status = 403, description = "A client key, or a request from a web page", body = drover_proto::openai::ErrorBody), (status = 503, description = "The job store is unreachable, or the hub keeps none", body = drover_proto::openai::ErrorBody)), security((), ("bearer" = [])))]
pub async fn batches(
    State(hub): State<Arc<HubState>>,
    query: Result<Query<BatchesQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<List<AdminBatch>>, ApiError> {
    let jobs = jobs_of(&hub)?;
    let Query(query) =
        query.map_err(|e| ApiError::bad_request(e.body_text(), None, "invalid_query"))?;
    let limit = page_limit(query.limit)?;
    let (page, more) = jobs
        .store
        .list_batches(&BatchFilter {
            key_id: key_filter(&hub, query.key.as_deref())?,
            ended: false,
            after: query.after,
            limit,
        })
        .await?;
    let names = names(&hub);
    let data: Vec<AdminBatch> = batch_view::with_counts(&jobs.store, page)
        .await?
        .into_iter()
        .map(|(batch, counts)| AdminBatch {
            owner: names.owner(&batch.key_id),
            batch: batch_view::batch(batch, counts),
        })
        .collect();
    Ok(Json(List::page(data, more, |b| &b.batch.id)))
}

#[utoipa::path(post, path = "/admin/batches/{id}/cancel", tag = "batches", params(("id" = String, Path, description = "The batch's id")), responses((status = 200, description = "The batch of any key, cancelling: its waiting lines are cancelled, its running ones finish, its partial results are kept", body = drover_proto::admin::AdminBatch), (status = 401, description = "No admin key, or not a valid one", body = drover_proto::openai::ErrorBody), (status = 403, description = "A client key, or a request from a web page", body = drover_proto::openai::ErrorBody), (status = 404, description = "No such batch", body = drover_proto::openai::ErrorBody), (status = 409, description = "The batch is not in progress", body = drover_proto::openai::ErrorBody), (status = 503, description = "The job store is unreachable, or the hub keeps none", body = drover_proto::openai::ErrorBody)), security((), ("bearer" = [])))]
pub async fn cancel_batch(
    State(hub): State<Arc<HubState>>,
    Path(id): Path<String>,
) -> Result<Json<AdminBatch>, ApiError> {
    let jobs = jobs_of(&hub)?;
    let batch = jobs
        .store
        .batch(&id)
        .await?
        .ok_or_else(|| super::batches::not_found(&id))?;
    let (batch, counts) = super::batches::cancel_batch(jobs, batch).await?;
    Ok(Json(AdminBatch {
        owner: names(&hub).owner(&batch.key_id),
        batch: batch_view::batch(batch, counts),
    }))
}
