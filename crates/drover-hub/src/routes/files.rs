//! `/v1/files`: OpenAI's Files API, as the official clients use it for
//! batches: a batch's input is uploaded here, its output and error files
//! are read from here. The same key as inference; a key sees its own files.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Multipart, Path, Query, State};
use axum::response::{IntoResponse, Response};
use drover_proto::batch::{FileDeleted, FileObject, FileTag, List};
use drover_store::{FileFilter, NewFile, StoredFile};
use http::{HeaderMap, header};

use super::jobs::{jobs_of, scope};
use crate::error::ApiError;
use crate::hub::HubState;
use crate::jobs::now_ms;

fn bad(message: impl Into<String>, param: &'static str) -> ApiError {
    ApiError::bad_request(message, Some(param), "invalid_file")
}

fn not_found(id: &str) -> ApiError {
    ApiError::NotFound {
        message: format!("no file {:?}", crate::error::echo(id)),
    }
}

/// The API's view of a stored file.
pub fn view(file: StoredFile) -> FileObject {
    FileObject {
        id: file.id,
        object: FileTag::File,
        bytes: u64::try_from(file.bytes).unwrap_or(0),
        created_at: u64::try_from(file.created_at.div_euclid(1000)).unwrap_or(0),
        filename: file.filename,
        purpose: serde_json::from_value(serde_json::Value::String(file.purpose))
            .unwrap_or(drover_proto::batch::FilePurpose::Batch),
        status: drover_proto::batch::FileStatus::Processed,
        expires_at: file
            .expires_at
            .and_then(|e| u64::try_from(e.div_euclid(1000)).ok()),
        status_details: None,
    }
}

/// `file-` and a UUIDv7, as OpenAI's ids look and ordered by time.
pub fn new_file_id() -> String {
    format!("file-{}", uuid::Uuid::now_v7().simple())
}

#[utoipa::path(post, path = "/v1/files", tag = "batches", request_body(content_type = "multipart/form-data", description = "`file` (the JSONL input of a batch) and `purpose` (`batch`)"), responses((status = 200, description = "The file, stored", body = drover_proto::batch::FileObject), (status = 400, description = "A part is missing or wrong; the error names it", body = drover_proto::openai::ErrorBody), (status = 401, description = "The hub has client keys and this is none of them", body = drover_proto::openai::ErrorBody), (status = 403, description = "An admin key", body = drover_proto::openai::ErrorBody), (status = 413, description = "Larger than batches.max_bytes", body = drover_proto::openai::ErrorBody), (status = 503, description = "The store is unreachable, or the hub keeps none", body = drover_proto::openai::ErrorBody)), security((), ("bearer" = [])))]
pub async fn create(
    State(hub): State<Arc<HubState>>,
    headers: HeaderMap,
    multipart: Result<Multipart, axum::extract::multipart::MultipartRejection>,
) -> Result<Json<FileObject>, ApiError> {
    let scope = scope(&hub, &headers)?;
    let jobs = jobs_of(&hub)?;
    let mut multipart = multipart.map_err(|e| {
        ApiError::bad_request(
            format!("a file upload is multipart/form-data with a `file` and a `purpose`: {e}"),
            None,
            "invalid_file",
        )
    })?;
    let limit = hub.config.batches.max_bytes;
    let mut data: Option<(String, Vec<u8>)> = None;
    let mut purpose: Option<String> = None;
    loop {
        let field = match multipart.next_field().await {
            Ok(Some(field)) => field,
            Ok(None) => break,
            Err(e) => {
                return Err(bad(
                    format!("the upload broke off or is malformed: {e}"),
                    "file",
                ));
            }
        };
        match field.name() {
            Some("file") => {
                let filename = field.file_name().unwrap_or("upload.jsonl").to_string();
                let mut field = field;
                let mut bytes = Vec::new();
                loop {
                    match field.chunk().await {
                        Ok(Some(chunk)) => {
                            if bytes.len() + chunk.len() > limit {
                                return Err(ApiError::PayloadTooLarge { limit });
                            }
                            bytes.extend_from_slice(&chunk);
                        }
                        Ok(None) => break,
                        Err(e) => {
                            return Err(bad(format!("the file broke off: {e}"), "file"));
                        }
                    }
                }
                data = Some((filename, bytes));
            }
            Some("purpose") => {
                let text = field
                    .text()
                    .await
                    .map_err(|e| bad(format!("purpose is unreadable: {e}"), "purpose"))?;
                purpose = Some(text);
            }
            // expires_after[...] and anything newer: the file is kept until
            // it is deleted.
            _ => {}
        }
    }
    let purpose =
        purpose.ok_or_else(|| bad("purpose is missing: send purpose=batch", "purpose"))?;
    if purpose != "batch" {
        return Err(bad(
            format!(
                "purpose {:?}: this hub keeps files for batches only (purpose=batch)",
                crate::error::echo(&purpose)
            ),
            "purpose",
        ));
    }
    let (filename, bytes) =
        data.ok_or_else(|| bad("file is missing: send the JSONL as `file`", "file"))?;
    let file = NewFile {
        id: new_file_id(),
        key_id: scope,
        purpose,
        filename,
        created_at: now_ms(),
        expires_at: None,
    };
    let stored = jobs.store.put_file(&file, &bytes).await?;
    Ok(Json(view(stored)))
}

#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
pub struct ListQuery {
    /// Only files of this purpose.
    purpose: Option<String>,
    /// The cursor: the last page's `last_id`.
    after: Option<String>,
    /// 1 to 10,000; 10,000 by default, as OpenAI's.
    limit: Option<u32>,
    /// `asc` or `desc` (by creation; the default).
    order: Option<String>,
}

#[utoipa::path(get, path = "/v1/files", tag = "batches", params(ListQuery), responses((status = 200, description = "The caller's files", body = drover_proto::batch::List<drover_proto::batch::FileObject>), (status = 400, description = "A bad parameter", body = drover_proto::openai::ErrorBody), (status = 401, description = "The hub has client keys and this is none of them", body = drover_proto::openai::ErrorBody), (status = 403, description = "An admin key", body = drover_proto::openai::ErrorBody), (status = 503, description = "The store is unreachable, or the hub keeps none", body = drover_proto::openai::ErrorBody)), security((), ("bearer" = [])))]
pub async fn list(
    State(hub): State<Arc<HubState>>,
    headers: HeaderMap,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<List<FileObject>>, ApiError> {
    let scope = scope(&hub, &headers)?;
    let jobs = jobs_of(&hub)?;
    let Query(query) =
        query.map_err(|e| ApiError::bad_request(e.body_text(), None, "invalid_query"))?;
    let oldest_first = match query.order.as_deref() {
        None | Some("desc") => false,
        Some("asc") => true,
        Some(other) => {
            return Err(ApiError::bad_request(
                format!(
                    "order {:?} is neither asc nor desc",
                    crate::error::echo(other)
                ),
                Some("order"),
                "invalid_order",
            ));
        }
    };
    let limit = query.limit.unwrap_or(10_000);
    if !(1..=10_000).contains(&limit) {
        return Err(ApiError::bad_request(
            "limit must be from 1 to 10000",
            Some("limit"),
            "invalid_limit",
        ));
    }
    let (files, more) = jobs
        .store
        .files(&FileFilter {
            key_id: scope,
            purpose: query.purpose,
            after: query.after,
            limit,
            oldest_first,
        })
        .await?;
    let data: Vec<FileObject> = files.into_iter().map(view).collect();
    Ok(Json(List::page(data, more, |f| &f.id)))
}

async fn own_file(hub: &HubState, headers: &HeaderMap, id: &str) -> Result<StoredFile, ApiError> {
    let scope = scope(hub, headers)?;
    let jobs = jobs_of(hub)?;
    match jobs.store.file(id).await? {
        Some(file) if file.key_id == scope => Ok(file),
        _ => Err(not_found(id)),
    }
}

#[utoipa::path(get, path = "/v1/files/{id}", tag = "batches", params(("id" = String, Path, description = "The file's id")), responses((status = 200, description = "The file", body = drover_proto::batch::FileObject), (status = 401, description = "The hub has client keys and this is none of them", body = drover_proto::openai::ErrorBody), (status = 403, description = "An admin key", body = drover_proto::openai::ErrorBody), (status = 404, description = "No such file of this key's", body = drover_proto::openai::ErrorBody), (status = 503, description = "The store is unreachable, or the hub keeps none", body = drover_proto::openai::ErrorBody)), security((), ("bearer" = [])))]
pub async fn get(
    State(hub): State<Arc<HubState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Json<FileObject>, ApiError> {
    Ok(Json(view(own_file(&hub, &headers, &id).await?)))
}

#[utoipa::path(get, path = "/v1/files/{id}/content", tag = "batches", params(("id" = String, Path, description = "The file's id")), responses((status = 200, description = "The file's bytes", content_type = "application/octet-stream", body = Vec<u8>), (status = 401, description = "The hub has client keys and this is none of them", body = drover_proto::openai::ErrorBody), (status = 403, description = "An admin key", body = drover_proto::openai::ErrorBody), (status = 404, description = "No such file of this key's", body = drover_proto::openai::ErrorBody), (status = 503, description = "The store is unreachable, or the hub keeps none", body = drover_proto::openai::ErrorBody)), security((), ("bearer" = [])))]
pub async fn content(
    State(hub): State<Arc<HubState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let file = own_file(&hub, &headers, &id).await?;
    let jobs = jobs_of(&hub)?;
    let bytes = jobs
        .store
        .file_content(&file.id)
        .await?
        .ok_or_else(|| not_found(&id))?;
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response())
}

#[utoipa::path(delete, path = "/v1/files/{id}", tag = "batches", params(("id" = String, Path, description = "The file's id")), responses((status = 200, description = "Deleted", body = drover_proto::batch::FileDeleted), (status = 401, description = "The hub has client keys and this is none of them", body = drover_proto::openai::ErrorBody), (status = 403, description = "An admin key", body = drover_proto::openai::ErrorBody), (status = 404, description = "No such file of this key's", body = drover_proto::openai::ErrorBody), (status = 503, description = "The store is unreachable, or the hub keeps none", body = drover_proto::openai::ErrorBody)), security((), ("bearer" = [])))]
pub async fn delete(
    State(hub): State<Arc<HubState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Json<FileDeleted>, ApiError> {
    let file = own_file(&hub, &headers, &id).await?;
    let jobs = jobs_of(&hub)?;
    let deleted = jobs.store.delete_file(&file.id).await?;
    Ok(Json(FileDeleted {
        id: file.id,
        object: FileTag::File,
        deleted,
    }))
}
