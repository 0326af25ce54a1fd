//! `GET /v1/queue`: per model the fleet serves that the caller may use, how
//! many requests wait and how long a request sent now should wait, so a
//! client can decide to come back later rather than wait. It takes the same
//! key as inference: once client keys exist, a valid one.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use drover_proto::queue::{QueueEntry, QueueList};
use drover_scheduler::Scheduler;
use http::HeaderMap;

use crate::caller;
use crate::error::ApiError;
use crate::hub::HubState;

#[utoipa::path(get, path = "/v1/queue", tag = "inference", responses((status = 200, description = "Per model the caller may use: requests waiting, the expected wait, whether it is loading", body = drover_proto::queue::QueueList), (status = 401, description = "The hub has client keys and this is none of them", body = drover_proto::openai::ErrorBody), (status = 403, description = "An admin key", body = drover_proto::openai::ErrorBody)), security((), ("bearer" = [])))]
pub async fn list(
    State(hub): State<Arc<HubState>>,
    headers: HeaderMap,
) -> Result<Json<QueueList>, ApiError> {
    let holder = caller::authenticate(&hub.keys, &hub.clients, &headers)?;
    let allowed = holder.and_then(|h| h.limits.models);
    let now = hub.dispatcher.now();
    Ok(Json(hub.dispatcher.inspect(|s| {
        let data = entries(s, now, |m| {
            allowed.as_ref().is_none_or(|a| a.iter().any(|k| k == m))
        });
        QueueList {
            object: "list".into(),
            // Of the models shown: a key does not learn of the others.
            waiting: data.iter().map(|e| e.waiting).sum(),
            data,
        }
    })))
}

/// The queue of each model the fleet lists or a request waits for that
/// `keep` lets through, sorted by model: `GET /v1/queue`'s entries and the
/// dashboard's.
pub(crate) fn entries(
    s: &Scheduler,
    now: Duration,
    keep: impl Fn(&str) -> bool,
) -> Vec<QueueEntry> {
    let models: BTreeSet<String> = s
        .fleet()
        .views()
        .into_iter()
        .flat_map(|v| v.models.into_iter().map(|m| m.name.to_string()))
        .chain(
            s.queue()
                .stats()
                .by_model
                .into_iter()
                .map(|(m, _)| m.to_string()),
        )
        .filter(|m| keep(m))
        .collect();
    models
        .into_iter()
        .map(|model| QueueEntry {
            waiting: s.queue().len_for(&model) as u64,
            oldest_ms: s
                .queue()
                .oldest_for(&model)
                .map(|at| now.saturating_sub(at).as_millis() as u64),
            expected_wait_ms: s.expected_wait(&model, now).as_millis() as u64,
            loading: s.loading(&model, now).is_some(),
            model,
        })
        .collect()
}
