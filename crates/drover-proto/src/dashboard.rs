//! `GET /admin/overview` and the `/admin/events` stream: the whole live
//! picture the dashboard draws (fleet, queue, refusals, the last hour of
//! traffic, usage per key), in one document.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::admin::BackendInfo;
use crate::queue::QueueEntry;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct Overview {
    /// When it was read, in milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// drover's version.
    pub version: String,
    pub uptime_seconds: f64,
    pub backends: Vec<BackendInfo>,
    pub queue: QueueOverview,
    /// Requests refused lately, newest first (at most 50).
    pub refused: Vec<Refusal>,
    pub traffic: TrafficOverview,
    /// Usage per key over the last hour, by key name.
    pub keys: Vec<KeyUsage>,
    /// Every API key the hub keeps, revoked ones too: kind, limits, state.
    #[serde(default)]
    pub api_keys: Vec<crate::admin::KeyInfo>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct QueueOverview {
    pub waiting: u64,
    /// Bytes the waiting requests hold.
    pub bytes: u64,
    /// How long the oldest waiting request has waited.
    pub oldest_ms: Option<u64>,
    /// Every model the fleet lists or a request waits for.
    pub by_model: Vec<QueueEntry>,
    pub by_priority: Vec<PriorityQueue>,
    pub by_client: Vec<ClientQueue>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct PriorityQueue {
    pub priority: u8,
    pub waiting: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct ClientQueue {
    /// The key's name, or `anonymous`.
    pub client: String,
    pub waiting: u64,
}

/// A request the hub answered with an error of its own, and why.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct Refusal {
    pub at_ms: u64,
    pub model: String,
    pub client: String,
    pub status: u16,
    /// The error's `code`, e.g. `rate_limited`, `queue_timeout`.
    pub code: String,
    pub message: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct TrafficOverview {
    /// The width of each point of `series`.
    pub bucket_seconds: u64,
    /// The last hour, oldest first; the last point is still filling. In the
    /// event stream, after the first message, only the newest points.
    pub series: Vec<TrafficPoint>,
    /// Over about the last ten seconds.
    pub now: Rates,
    /// The last hour per backend and per model.
    pub by_backend: Vec<TrafficTotals>,
    pub by_model: Vec<TrafficTotals>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct Rates {
    pub requests_per_second: f64,
    pub tokens_per_second: f64,
    pub errors_per_second: f64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct TrafficPoint {
    /// The bucket's start, in milliseconds since the Unix epoch.
    pub start_ms: u64,
    #[serde(flatten)]
    pub totals: Counts,
    /// Requests per backend that answered them.
    pub by_backend: BTreeMap<String, u64>,
}

/// Counts over some time, and the spread of times to first byte and of
/// whole requests (`null` with nothing measured).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct Counts {
    pub requests: u64,
    /// Answers with an error status, by status.
    pub errors: BTreeMap<String, u64>,
    /// Output tokens the answers reported.
    pub tokens: u64,
    /// Attempts that failed before the first byte and went elsewhere.
    pub retries: u64,
    /// Requests answered by a backend other than the first one tried.
    pub failovers: u64,
    pub ttft_p50_ms: Option<f64>,
    pub ttft_p95_ms: Option<f64>,
    pub latency_p50_ms: Option<f64>,
    pub latency_p95_ms: Option<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct TrafficTotals {
    pub name: String,
    #[serde(flatten)]
    pub totals: Counts,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct KeyUsage {
    pub key: String,
    pub requests: u64,
    /// Estimated at the door (body bytes over 4).
    pub prompt_tokens: u64,
    /// As the answers reported them.
    pub completion_tokens: u64,
    /// Requests a limit turned away.
    pub limited: u64,
}
