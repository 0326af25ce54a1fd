//! `GET|POST /admin/keys`, `DELETE /admin/keys/{id}`: API keys, created
//! (the key shown in this answer only), listed (never the key) and revoked
//! (at once), behind the admin key like the rest of the management API.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use drover_proto::admin::{KeyCreate, KeyCreated, KeyInfo, KeyList};
use http::{HeaderMap, StatusCode};

use super::admin::{authorize, require_json};
use crate::error::ApiError;
use crate::hub::HubState;
use crate::keys::KeyError;

#[utoipa::path(get, path = "/admin/keys", tag = "keys", responses((status = 200, description = "Every key, never the key itself", body = drover_proto::admin::KeyList), (status = 401, description = "No admin key, or not a valid one", body = drover_proto::openai::ErrorBody), (status = 403, description = "A client key, or a request from a web page", body = drover_proto::openai::ErrorBody)), security((), ("bearer" = [])))]
pub async fn list(
    State(hub): State<Arc<HubState>>,
    headers: HeaderMap,
) -> Result<Json<KeyList>, ApiError> {
    authorize(&hub, &headers)?;
    Ok(Json(KeyList {
        keys: hub.keys.list(),
    }))
}

#[utoipa::path(post, path = "/admin/keys", tag = "keys", request_body = drover_proto::admin::KeyCreate, responses((status = 201, description = "Created; the key is in this answer only", body = drover_proto::admin::KeyCreated), (status = 400, description = "An invalid name or limits", body = drover_proto::openai::ErrorBody), (status = 409, description = "The name is taken, or the hub keeps no keys", body = drover_proto::openai::ErrorBody), (status = 415, description = "Not JSON", body = drover_proto::openai::ErrorBody), (status = 401, description = "No admin key, or not a valid one", body = drover_proto::openai::ErrorBody), (status = 403, description = "A client key, or a request from a web page", body = drover_proto::openai::ErrorBody)), security((), ("bearer" = [])))]
pub async fn create(
    State(hub): State<Arc<HubState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    authorize(&hub, &headers)?;
    require_json(&headers)?;
    let asked: KeyCreate = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("invalid body: {e}"), None, "invalid_body"))?;
    let (info, key) = hub
        .keys
        .create(&asked.name, asked.kind, asked.limits)
        .map_err(refused)?;
    tracing::info!(key = %info.id, name = %info.name, kind = ?info.kind, "API key created");
    Ok((StatusCode::CREATED, Json(KeyCreated { key, info })).into_response())
}

#[utoipa::path(delete, path = "/admin/keys/{id}", tag = "keys", params(("id" = String, Path, description = "The key's id")), responses((status = 200, description = "Revoked, at once", body = drover_proto::admin::KeyInfo), (status = 404, description = "No such key", body = drover_proto::openai::ErrorBody), (status = 401, description = "No admin key, or not a valid one", body = drover_proto::openai::ErrorBody), (status = 403, description = "A client key, or a request from a web page", body = drover_proto::openai::ErrorBody)), security((), ("bearer" = [])))]
pub async fn revoke(
    State(hub): State<Arc<HubState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<KeyInfo>, ApiError> {
    authorize(&hub, &headers)?;
    match hub.keys.revoke(&id).map_err(refused)? {
        Some(info) => {
            tracing::info!(key = %info.id, name = %info.name, "API key revoked");
            Ok(Json(info))
        }
        None => Err(ApiError::NotFound {
            message: format!("no key with id {:?}", crate::error::echo(&id)),
        }),
    }
}

fn refused(e: KeyError) -> ApiError {
    match e {
        KeyError::Invalid(m) => ApiError::bad_request(m, None, "invalid_key"),
        KeyError::Duplicate(_) | KeyError::NoDataDir => ApiError::Conflict(e.to_string()),
        KeyError::Write { .. } | KeyError::Read { .. } => ApiError::Internal(e.to_string()),
    }
}
