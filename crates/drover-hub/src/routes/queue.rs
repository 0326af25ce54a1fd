//! `GET /v1/queue`: per model the fleet serves, how many requests wait and
//! how long a request sent now should wait, so a client can decide to come
//! back later rather than wait.

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use drover_proto::queue::{QueueEntry, QueueList};

use crate::hub::HubState;

#[utoipa::path(get, path = "/v1/queue", tag = "inference", responses((status = 200, description = "Per model: requests waiting, the expected wait, whether it is loading", body = drover_proto::queue::QueueList)))]
pub async fn list(State(hub): State<Arc<HubState>>) -> Json<QueueList> {
    let now = hub.dispatcher.now();
    Json(hub.dispatcher.inspect(|s| {
        let models: BTreeSet<String> = s
            .fleet()
            .views()
            .into_iter()
            .flat_map(|v| v.models.into_iter().map(|m| m.name.to_string()))
            .collect();
        let data: Vec<QueueEntry> = models
            .into_iter()
            .map(|model| QueueEntry {
                waiting: s.queue().len_for(&model) as u64,
                expected_wait_ms: s.expected_wait(&model, now).as_millis() as u64,
                loading: s.loading(&model, now).is_some(),
                model,
            })
            .collect();
        QueueList {
            object: "list".into(),
            waiting: s.queue().len() as u64,
            data,
        }
    }))
}
