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

pub async fn list(
    State(hub): State<Arc<HubState>>,
    headers: HeaderMap,
) -> Result<Json<KeyList>, ApiError> {
    authorize(&hub, &headers)?;
    Ok(Json(KeyList {
        keys: hub.keys.list(),
    }))
}

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
