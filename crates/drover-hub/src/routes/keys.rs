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
use drover_proto::admin::{
    KeyCreate, KeyCreated, KeyList, KeyRevoked, KeyWebhookSecret, KeysPurged,
};
use http::{HeaderValue, StatusCode, header};

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
        .await
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
    match hub.keys.revoke(&id).await.map_err(refused)? {
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
    let (purged, note) = hub.keys.purge().await.map_err(refused)?;
    tracing::info!(target: "drover::action", purged, "revoked API keys forgotten");
    if let Some(note) = &note {
        tracing::warn!("{note}");
    }
    Ok(Json(KeysPurged {
        purged: purged as u64,
        note,
    }))
}

#[utoipa::path(post, path = "/admin/keys/{id}/webhook-secret", tag = "keys", params(("id" = String, Path, description = "The key's id, or the name of an active key")), responses((status = 200, description = "A new webhook secret of the key's own signs its jobs' callbacks from now on, on every hub of this store (retries of earlier ones too); it is in this answer only", body = drover_proto::admin::KeyWebhookSecret), (status = 404, description = "No such active key", body = drover_proto::openai::ErrorBody), (status = 503, description = "The store is unreachable", body = drover_proto::openai::ErrorBody), (status = 401, description = "No admin key, or not a valid one", body = drover_proto::openai::ErrorBody), (status = 403, description = "A client key, or a request from a web page", body = drover_proto::openai::ErrorBody)), security((), ("bearer" = [])))]
pub async fn own_webhook_secret(
    State(hub): State<Arc<HubState>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    set_webhook_secret(&hub, &id, true).await
}

#[utoipa::path(delete, path = "/admin/keys/{id}/webhook-secret", tag = "keys", params(("id" = String, Path, description = "The key's id, or the name of an active key")), responses((status = 200, description = "The key's own webhook secret is gone: its jobs' callbacks are signed with the hub's again", body = drover_proto::admin::KeyWebhookSecret), (status = 404, description = "No such active key", body = drover_proto::openai::ErrorBody), (status = 503, description = "The store is unreachable", body = drover_proto::openai::ErrorBody), (status = 401, description = "No admin key, or not a valid one", body = drover_proto::openai::ErrorBody), (status = 403, description = "A client key, or a request from a web page", body = drover_proto::openai::ErrorBody)), security((), ("bearer" = [])))]
pub async fn drop_webhook_secret(
    State(hub): State<Arc<HubState>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    set_webhook_secret(&hub, &id, false).await
}

async fn set_webhook_secret(hub: &HubState, id: &str, own: bool) -> Result<Response, ApiError> {
    let Some((info, secret)) = hub
        .keys
        .set_webhook_secret(id, own)
        .await
        .map_err(refused)?
    else {
        return Err(ApiError::NotFound {
            message: format!(
                "no active key has the id or the name {:?}",
                crate::error::echo(id)
            ),
        });
    };
    if own {
        tracing::info!(target: "drover::action", key = %info.id, name = %info.name, "the key has a new webhook secret of its own: its jobs' callbacks are signed with it");
    } else {
        tracing::info!(target: "drover::action", key = %info.id, name = %info.name, "the key's own webhook secret is gone: its jobs' callbacks are signed with the hub's");
    }
    let mut response = Json(KeyWebhookSecret {
        info,
        secret: secret.map(|s| s.to_string()),
    })
    .into_response();
    // Shown once: kept by no cache on the way.
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

fn refused(e: KeyError) -> ApiError {
    match e {
        KeyError::Invalid(m) => ApiError::bad_request(m, None, "invalid_key"),
        KeyError::Duplicate(_) | KeyError::NoStore => ApiError::Conflict(e.to_string()),
        KeyError::Read { .. } => ApiError::Internal(e.to_string()),
        KeyError::Store(e) => e.into(),
    }
}
