//! `GET /v1/queue`: what a client may read of the hub's queue before it
//! sends, to decide whether to come back later.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct QueueList {
    /// `"list"`.
    pub object: String,
    /// Requests waiting for the models listed.
    pub waiting: u64,
    pub data: Vec<QueueEntry>,
}

/// One model's queue.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct QueueEntry {
    pub model: String,
    /// Requests waiting for it now.
    pub waiting: u64,
    /// How long the oldest of them has waited, in milliseconds.
    #[serde(default)]
    pub oldest_ms: Option<u64>,
    /// How long a request sent now should wait before it starts, in
    /// milliseconds: 0 when a slot is free; a load's rest while it loads.
    pub expected_wait_ms: u64,
    /// Some backend is loading it.
    pub loading: bool,
}
