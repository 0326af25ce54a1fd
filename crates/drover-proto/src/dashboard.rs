//! `GET /admin/overview` and the `/admin/events` stream: the whole live
//! picture the dashboard draws (fleet, queue, refusals, the last hour of
//! traffic, usage per key, the job store), in one document.

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
    /// The job store; `null` for a hub that keeps no jobs.
    #[serde(default)]
    pub jobs: Option<JobsOverview>,
    /// The capability workers registered with this hub.
    #[serde(default)]
    pub workers: Vec<crate::workers::WorkerInfo>,
    /// The machines whose agents joined, from the store (none for a hub
    /// that keeps none).
    #[serde(default)]
    pub nodes: Vec<crate::nodes::NodeInfo>,
    /// The hub that leads its cluster, which drew this overview (a
    /// follower passes the request to it); `null` for a hub alone.
    #[serde(default)]
    pub leader: Option<String>,
}

/// The job store as the dashboard shows it: its jobs by state, this hub's
/// share of them, the batches under way and lately ended, the newest dead
/// jobs. Read from the store at most once a second.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct JobsOverview {
    /// When what follows was read from the store, in milliseconds since the
    /// Unix epoch; `null` until a read came back.
    pub read_at_ms: Option<u64>,
    /// Why it is not fresh: the store did not answer within a second, or
    /// failed. What was read last is kept meanwhile.
    pub error: Option<String>,
    /// Every hub's jobs in the store in each state (all seven, in the
    /// order a job goes through them; none until a read came back).
    pub by_state: Vec<JobStateCount>,
    /// Jobs this hub holds now: claimed and not yet ended.
    pub held: u64,
    /// Batches under way (running, finishing or being cancelled).
    pub batches_open: u64,
    /// Those batches, newest first, at most 50.
    pub open_batches: Vec<BatchProgress>,
    /// The ten newest batches that have ended.
    pub ended_batches: Vec<BatchProgress>,
    /// The twenty newest dead jobs, each with its last error.
    pub dead: Vec<DeadJob>,
    /// Tasks for workers in each state (the same seven), part of
    /// `by_state`.
    #[serde(default)]
    pub tasks_by_state: Vec<JobStateCount>,
    /// The newest plans (`POST /v1/tasks/plan`), each with its tasks'
    /// states.
    #[serde(default)]
    pub plans: Vec<PlanSummary>,
}

/// A plan as the dashboard lists it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct PlanSummary {
    pub id: String,
    /// The key's name, if a key made it.
    pub key: Option<String>,
    pub request: String,
    pub model: String,
    /// Why it was refused; absent when its tasks were submitted.
    pub error: Option<String>,
    /// The model's answer, as it came (cut to 2,000 characters).
    pub answer: String,
    /// Its tasks in order: id, capability, state.
    pub tasks: Vec<PlanTask>,
    /// Unix seconds.
    pub created_at: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct PlanTask {
    pub id: String,
    pub capability: String,
    pub state: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct JobStateCount {
    /// `queued`, `running`, `completed`, `failed`, `dead`, `cancelled`,
    /// `expired`.
    pub state: String,
    pub jobs: u64,
}

/// A batch and how far it got.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct BatchProgress {
    pub id: String,
    /// Its key's name; `null` for a key the hub no longer keeps.
    pub key: Option<String>,
    pub endpoint: String,
    pub status: crate::batch::BatchStatus,
    /// Unix seconds.
    pub created_at: u64,
    /// When it ended, in Unix seconds; `null` while under way.
    pub ended_at: Option<u64>,
    pub request_counts: crate::batch::RequestCounts,
}

/// A job whose every attempt failed, and why the last one did.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct DeadJob {
    pub id: String,
    /// Its key's name; `null` for a key the hub no longer keeps.
    pub key: Option<String>,
    pub model: String,
    pub endpoint: String,
    pub batch_id: Option<String>,
    pub custom_id: Option<String>,
    /// Attempts it had.
    pub attempts: u32,
    /// Unix seconds.
    pub created_at: i64,
    pub ended_at: Option<i64>,
    /// The last attempt's status, where a backend answered.
    pub status: Option<u16>,
    /// The last attempt's error.
    pub error: Option<String>,
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
