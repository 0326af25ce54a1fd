//! `GET /v1/queue`: per model the fleet serves that the caller may use, how
//! many requests wait and how long a request sent now should wait, so a
//! client can decide to come back later rather than wait. It takes the same
//! key as inference: once client keys exist, a valid one.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use drover_proto::queue::QueueList;
use http::HeaderMap;

use crate::caller;
use crate::error::ApiError;
use crate::hub::HubState;
use crate::views::Snapshot;

#[utoipa::path(get, path = "/v1/queue", tag = "inference", responses((status = 200, description = "Per model the caller may use: requests waiting, the expected wait, whether it is loading", body = drover_proto::queue::QueueList), (status = 401, description = "The hub has client keys and this is none of them", body = drover_proto::openai::ErrorBody), (status = 403, description = "An admin key", body = drover_proto::openai::ErrorBody)), security((), ("bearer" = [])))]
pub async fn list(
    State(hub): State<Arc<HubState>>,
    headers: HeaderMap,
) -> Result<Json<QueueList>, ApiError> {
    let holder = caller::authenticate(&hub.keys, &hub.clients, &headers)?;
    let allowed = holder.and_then(|h| h.limits.models);
    let keep = |m: &str| allowed.as_ref().is_none_or(|a| a.iter().any(|k| k == m));
    let data: Vec<_> = Snapshot::with_models(&hub.dispatcher)
        .models
        .into_iter()
        .filter(|e| keep(&e.model))
        .collect();
    Ok(Json(QueueList {
        object: "list".into(),
        // Of the models shown: a key does not learn of the others.
        waiting: data.iter().map(|e| e.waiting).sum(),
        data,
    }))
}
