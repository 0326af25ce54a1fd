//! `/v1/batches`: OpenAI's Batch API, run on the hub's own fleet. A batch
//! is checked whole at create (every fault named with its line), then
//! stored with one job per line, in one transaction; its lines run like
//! any job (each routed by its own model: unlike OpenAI, one batch may
//! name several), and [`crate::batches::finish`] writes its output and
//! error files once they have all ended.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, Query, State};
use drover_proto::batch::{BatchError, CreateBatch, List, RequestCounts};
use drover_store::{Batch, JobKind, NewJob};
use http::HeaderMap;

use super::jobs::{jobs_of, page_limit, scope};
use crate::batches::{input, view};
use crate::error::ApiError;
use crate::hub::HubState;
use crate::jobs::{Jobs, now_ms};

/// The longest completion window a batch may ask for.
const MAX_WINDOW: Duration = Duration::from_secs(7 * 24 * 3600);

fn bad(message: impl Into<String>, param: &'static str) -> ApiError {
    ApiError::bad_request(message, Some(param), "invalid_batch")
}

pub(super) fn not_found(id: &str) -> ApiError {
    ApiError::NotFound {
        message: format!("no batch {:?}", crate::error::echo(id)),
    }
}

/// `batch_` and a UUIDv7.
fn new_batch_id() -> String {
    format!("batch_{}", uuid::Uuid::now_v7().simple())
}

fn check_metadata(m: &BTreeMap<String, String>) -> Result<(), ApiError> {
    if m.len() > 16 {
        return Err(bad("metadata has more than 16 pairs", "metadata"));
    }
    for (k, v) in m {
        if k.chars().count() > 64 || v.chars().count() > 512 {
            return Err(bad(
                format!(
                    "metadata {:?}: keys are at most 64 characters, values 512",
                    crate::error::echo(k)
                ),
                "metadata",
            ));
        }
    }
    Ok(())
}

#[utoipa::path(post, path = "/v1/batches", tag = "batches", request_body = drover_proto::batch::CreateBatch, responses((status = 200, description = "The batch: in_progress, or failed with its input file's faults, each naming its line", body = drover_proto::batch::Batch), (status = 400, description = "A field is wrong; the error names it", body = drover_proto::openai::ErrorBody), (status = 401, description = "The hub has client keys and this is none of them", body = drover_proto::openai::ErrorBody), (status = 403, description = "An admin key", body = drover_proto::openai::ErrorBody), (status = 404, description = "No such input file of this key's", body = drover_proto::openai::ErrorBody), (status = 503, description = "The store is unreachable, or the hub keeps none", body = drover_proto::openai::ErrorBody)), security((), ("bearer" = [])))]
pub async fn create(
    State(hub): State<Arc<HubState>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Json<drover_proto::batch::Batch>, ApiError> {
    let scope = scope(&hub, &headers)?;
    let jobs = jobs_of(&hub)?;
    let create: CreateBatch = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(
            format!("the body is not a batch: {e}"),
            None,
            "invalid_json",
        )
    })?;
    input::check_endpoint(&create.endpoint).map_err(|e| bad(e.to_string(), "endpoint"))?;
    let window = humantime::parse_duration(&create.completion_window)
        .ok()
        .filter(|w| !w.is_zero() && *w <= MAX_WINDOW)
        .ok_or_else(|| {
            bad(
                format!(
                    "completion_window {:?} must be a duration up to 7 days, like \"24h\"",
                    crate::error::echo(&create.completion_window)
                ),
                "completion_window",
            )
        })?;
    if let Some(m) = &create.metadata {
        check_metadata(m)?;
    }
    let file = match jobs.store.file(&create.input_file_id).await? {
        Some(file) if file.key_id == scope => file,
        _ => {
            return Err(ApiError::NotFound {
                message: format!(
                    "no file {:?} to read the batch from",
                    crate::error::echo(&create.input_file_id)
                ),
            });
        }
    };
    if file.purpose != "batch" {
        return Err(bad(
            format!(
                "file {} is not a batch input (its purpose is {})",
                file.id, file.purpose
            ),
            "input_file_id",
        ));
    }
    let content = jobs.store.file_content(&file.id).await?.unwrap_or_default();
    let limits = input::Limits {
        max_lines: hub.config.batches.max_lines,
        max_bytes: hub.config.batches.max_bytes as u64,
    };
    let endpoint = create.endpoint.clone();
    // A 200 MB file takes a second or so to check: off the request threads.
    let parsed = tokio::task::spawn_blocking(move || input::parse(&content, &endpoint, &limits))
        .await
        .map_err(|e| ApiError::Internal(format!("checking the batch's input failed: {e}")))?;
    let now = now_ms();
    let expires_at = now.saturating_add(i64::try_from(window.as_millis()).unwrap_or(i64::MAX));
    let mut batch = Batch {
        id: new_batch_id(),
        key_id: scope.clone(),
        endpoint: create.endpoint.clone(),
        input_file_id: file.id.clone(),
        completion_window: create.completion_window.clone(),
        status: "in_progress".into(),
        output_file_id: None,
        error_file_id: None,
        errors: None,
        metadata: create
            .metadata
            .as_ref()
            .and_then(|m| serde_json::to_string(m).ok()),
        total: 0,
        max_concurrency: create
            .max_concurrency
            .or(hub.config.batches.max_concurrency)
            .filter(|&n| n > 0)
            .map(i64::from),
        created_at: now,
        in_progress_at: Some(now),
        expires_at,
        finalizing_at: None,
        completed_at: None,
        failed_at: None,
        expired_at: None,
        cancelling_at: None,
        cancelled_at: None,
    };
    let lines = match parsed {
        Ok(lines) => lines,
        Err(errors) => {
            let errors: Vec<BatchError> = errors.into_iter().map(BatchError::from).collect();
            batch.status = "failed".into();
            batch.in_progress_at = None;
            batch.failed_at = Some(now);
            batch.errors = serde_json::to_string(&errors).ok();
            jobs.store.create_batch(&batch, &[]).await?;
            return Ok(Json(view::batch(batch, Default::default())));
        }
    };
    batch.total = i64::try_from(lines.len()).unwrap_or(i64::MAX);
    let new_jobs: Vec<NewJob> = lines
        .into_iter()
        .map(|line| NewJob {
            id: crate::jobs::submit::new_job_id(),
            kind: JobKind::Inference,
            key_id: scope.clone(),
            batch_id: Some(batch.id.clone()),
            custom_id: Some(line.custom_id),
            endpoint: create.endpoint.clone(),
            model: line.model,
            body: line.body.to_vec(),
            priority: jobs.config.priority,
            max_attempts: jobs.config.max_attempts,
            run_at: now,
            deadline: Some(expires_at),
            idempotency_key: None,
            request_hash: None,
            callback_url: None,
            metadata: None,
            created_at: now,
        })
        .collect();
    jobs.store.create_batch(&batch, &new_jobs).await?;
    jobs.wake();
    let counts = view::counts(&jobs.store, &batch).await?;
    Ok(Json(view::batch(batch, counts)))
}

async fn own_batch(hub: &HubState, headers: &HeaderMap, id: &str) -> Result<Batch, ApiError> {
    let scope = scope(hub, headers)?;
    let jobs = jobs_of(hub)?;
    match jobs.store.batch(id).await? {
        Some(batch) if batch.key_id == scope => Ok(batch),
        _ => Err(not_found(id)),
    }
}

#[utoipa::path(get, path = "/v1/batches/{id}", tag = "batches", params(("id" = String, Path, description = "The batch's id")), responses((status = 200, description = "The batch, with its request counts", body = drover_proto::batch::Batch), (status = 401, description = "The hub has client keys and this is none of them", body = drover_proto::openai::ErrorBody), (status = 403, description = "An admin key", body = drover_proto::openai::ErrorBody), (status = 404, description = "No such batch of this key's", body = drover_proto::openai::ErrorBody), (status = 503, description = "The store is unreachable, or the hub keeps none", body = drover_proto::openai::ErrorBody)), security((), ("bearer" = [])))]
pub async fn get(
    State(hub): State<Arc<HubState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Json<drover_proto::batch::Batch>, ApiError> {
    let batch = own_batch(&hub, &headers, &id).await?;
    let counts = view::counts(&jobs_of(&hub)?.store, &batch).await?;
    Ok(Json(view::batch(batch, counts)))
}

#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
pub struct ListQuery {
    /// The cursor: the last page's `last_id`.
    after: Option<String>,
    /// 1 to 100; 20 by default.
    limit: Option<u32>,
}

#[utoipa::path(get, path = "/v1/batches", tag = "batches", params(ListQuery), responses((status = 200, description = "The caller's batches, newest first", body = drover_proto::batch::List<drover_proto::batch::Batch>), (status = 400, description = "A bad parameter", body = drover_proto::openai::ErrorBody), (status = 401, description = "The hub has client keys and this is none of them", body = drover_proto::openai::ErrorBody), (status = 403, description = "An admin key", body = drover_proto::openai::ErrorBody), (status = 503, description = "The store is unreachable, or the hub keeps none", body = drover_proto::openai::ErrorBody)), security((), ("bearer" = [])))]
pub async fn list(
    State(hub): State<Arc<HubState>>,
    headers: HeaderMap,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<List<drover_proto::batch::Batch>>, ApiError> {
    let scope = scope(&hub, &headers)?;
    let jobs = jobs_of(&hub)?;
    let Query(query) =
        query.map_err(|e| ApiError::bad_request(e.body_text(), None, "invalid_query"))?;
    let limit = page_limit(query.limit)?;
    let (batches, more) = jobs
        .store
        .batches(&scope, query.after.as_deref(), limit)
        .await?;
    let mut data = Vec::with_capacity(batches.len());
    for batch in batches {
        let counts = view::counts(&jobs.store, &batch).await?;
        data.push(view::batch(batch, counts));
    }
    Ok(Json(List::page(data, more, |b| &b.id)))
}

#[utoipa::path(post, path = "/v1/batches/{id}/cancel", tag = "batches", params(("id" = String, Path, description = "The batch's id")), responses((status = 200, description = "The batch, cancelling: its waiting lines are cancelled, its running ones finish, its partial results are kept", body = drover_proto::batch::Batch), (status = 401, description = "The hub has client keys and this is none of them", body = drover_proto::openai::ErrorBody), (status = 403, description = "An admin key", body = drover_proto::openai::ErrorBody), (status = 404, description = "No such batch of this key's", body = drover_proto::openai::ErrorBody), (status = 409, description = "The batch is not in progress", body = drover_proto::openai::ErrorBody), (status = 503, description = "The store is unreachable, or the hub keeps none", body = drover_proto::openai::ErrorBody)), security((), ("bearer" = [])))]
pub async fn cancel(
    State(hub): State<Arc<HubState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Json<drover_proto::batch::Batch>, ApiError> {
    let batch = own_batch(&hub, &headers, &id).await?;
    let (batch, counts) = cancel_batch(jobs_of(&hub)?, batch).await?;
    Ok(Json(view::batch(batch, counts)))
}

/// Cancels `batch` (its waiting lines at once, its running ones finish);
/// 409 unless it is in progress or already cancelled. The batch as it is
/// after, with its counts.
pub(super) async fn cancel_batch(
    jobs: &Jobs,
    batch: Batch,
) -> Result<(Batch, RequestCounts), ApiError> {
    if !jobs.store.cancel_batch(&batch.id, now_ms()).await? {
        let status = jobs
            .store
            .batch(&batch.id)
            .await?
            .map_or(batch.status, |b| b.status);
        if status != "cancelling" && status != "cancelled" {
            return Err(ApiError::Conflict(format!(
                "batch {} is {status}: only a batch in progress can be cancelled",
                batch.id
            )));
        }
    }
    jobs.wake_batches();
    let batch = jobs
        .store
        .batch(&batch.id)
        .await?
        .ok_or_else(|| not_found(&batch.id))?;
    let counts = view::counts(&jobs.store, &batch).await?;
    Ok((batch, counts))
}
