//! `GET|POST /admin/keys`, `DELETE /admin/keys/{id}`, `POST
//! /admin/keys/purge`: API keys, created (the key shown in this answer
//! only), listed (never the key), revoked (at once, by id or name) and,
//! once revoked, forgotten; behind the admin key like the rest of the
//! management API. What a change does to the hub's callers (the first
//! client key closes inference) is said in the answer and logged.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use drover_proto::admin::{KeyCreate, KeyCreated, KeyList, KeyRevoked, KeysPurged};
use http::StatusCode;

use super::guard::AdminJson;
use crate::error::ApiError;
use crate::hub::HubState;
use crate::keys::KeyError;

#[utoipa::path(get, path = "/admin/keys", tag = "keys", responses((status = 200, description = "Every key, never the key itself", body = drover_proto::admin::KeyList), (status = 401, description = "No admin key, or not a valid one", body = drover_proto::openai::ErrorBody), (status = 403, description = "A client key, or a request from a web page", body = drover_proto::openai::ErrorBody)), security((), ("bearer" = [])))]
pub async fn list(State(hub): State<Arc<HubState>>) -> Result<Json<KeyList>, ApiError> {
    Ok(Json(KeyList {
        keys: hub.keys.list(),
    }))
}

#[utoipa::path(post, path = "/admin/keys", tag = "keys", request_body = drover_proto::admin::KeyCreate, responses((status = 201, description = "Created; the key is in this answer only", body = drover_proto::admin::KeyCreated), (status = 400, description = "An invalid name or limits", body = drover_proto::openai::ErrorBody), (status = 409, description = "The name is taken, or the hub keeps no keys", body = drover_proto::openai::ErrorBody), (status = 415, description = "Not JSON", body = drover_proto::openai::ErrorBody), (status = 401, description = "No admin key, or not a valid one", body = drover_proto::openai::ErrorBody), (status = 403, description = "A client key, or a request from a web page", body = drover_proto::openai::ErrorBody)), security((), ("bearer" = [])))]
pub async fn create(
    State(hub): State<Arc<HubState>>,
    AdminJson(asked): AdminJson<KeyCreate>,
) -> Result<Response, ApiError> {
    let created = hub
        .keys
        .create(&asked.name, asked.kind, asked.limits)
        .map_err(refused)?;
    let info = created.info;
    tracing::info!(target: "drover::action", key = %info.id, name = %info.name, kind = ?info.kind, "API key created");
    if let Some(note) = &created.note {
        tracing::warn!(key = %info.name, "{note}");
    }
    Ok((
        StatusCode::CREATED,
        Json(KeyCreated {
            key: created.key,
            info,
            note: created.note,
        }),
    )
        .into_response())
}

#[utoipa::path(delete, path = "/admin/keys/{id}", tag = "keys", params(("id" = String, Path, description = "The key's id, or the name of an active key")), responses((status = 200, description = "Revoked, at once", body = drover_proto::admin::KeyRevoked), (status = 404, description = "No such key", body = drover_proto::openai::ErrorBody), (status = 401, description = "No admin key, or not a valid one", body = drover_proto::openai::ErrorBody), (status = 403, description = "A client key, or a request from a web page", body = drover_proto::openai::ErrorBody)), security((), ("bearer" = [])))]
pub async fn revoke(
    State(hub): State<Arc<HubState>>,
    Path(id): Path<String>,
) -> Result<Json<KeyRevoked>, ApiError> {
    match hub.keys.revoke(&id).map_err(refused)? {
        Some((info, note)) => {
            tracing::info!(target: "drover::action", key = %info.id, name = %info.name, "API key revoked");
            if let Some(note) = &note {
                tracing::warn!(key = %info.name, "{note}");
            }
            Ok(Json(KeyRevoked { info, note }))
        }
        None => Err(ApiError::NotFound {
            message: format!(
                "no key has the id or the name {:?} (an active key's)",
                crate::error::echo(&id)
            ),
        }),
    }
}

#[utoipa::path(post, path = "/admin/keys/purge", tag = "keys", responses((status = 200, description = "Revoked keys forgotten", body = drover_proto::admin::KeysPurged), (status = 409, description = "The hub keeps no keys", body = drover_proto::openai::ErrorBody), (status = 401, description = "No admin key, or not a valid one", body = drover_proto::openai::ErrorBody), (status = 403, description = "A client key, or a request from a web page", body = drover_proto::openai::ErrorBody)), security((), ("bearer" = [])))]
pub async fn purge(State(hub): State<Arc<HubState>>) -> Result<Json<KeysPurged>, ApiError> {
    let (purged, note) = hub.keys.purge().map_err(refused)?;
    tracing::info!(target: "drover::action", purged, "revoked API keys forgotten");
    if let Some(note) = &note {
        tracing::warn!("{note}");
    }
    Ok(Json(KeysPurged {
        purged: purged as u64,
        note,
    }))
}

fn refused(e: KeyError) -> ApiError {
    match e {
        KeyError::Invalid(m) => ApiError::bad_request(m, None, "invalid_key"),
        KeyError::Duplicate(_) | KeyError::NoDataDir => ApiError::Conflict(e.to_string()),
        KeyError::Write { .. } | KeyError::Read { .. } => ApiError::Internal(e.to_string()),
    }
}
