//! Capability workers and their tasks: the protocol a worker speaks (plain
//! HTTP and JSON, long polls; `docs/workers.md`) and the task API clients
//! use. A worker registers the capabilities it offers, polls for tasks,
//! and answers each under the lease token it was given.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::jobs::Deadline;

/// `POST /v1/workers`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterWorker {
    /// How it is shown (letters, digits, `._:-`).
    pub name: String,
    /// Free-form labels, shown with it.
    #[serde(default)]
    pub labels: std::collections::BTreeMap<String, String>,
    pub capabilities: Vec<Capability>,
}

/// One thing a worker can do, and how many at once.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Capability {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// What it does, in a sentence: the planner shows it to the model that
    /// turns plain-language requests into tasks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// A JSON Schema its tasks' input must meet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub input_schema: Option<Value>,
    /// Tasks it runs at once (default 1).
    #[serde(default = "one")]
    pub max_concurrency: u32,
}

fn one() -> u32 {
    1
}

/// The answer to `POST /v1/workers`: the worker's id and the rhythm the hub
/// expects of it.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WorkerRegistered {
    pub worker_id: String,
    /// Heartbeat (or poll) at least this often; three missed and the worker
    /// is gone, its tasks given to others.
    pub heartbeat_s: u64,
    /// A task's lease: heartbeat it at least this often while it runs.
    pub lease_s: u64,
    /// The longest `wait_s` a poll may ask for.
    pub poll_wait_max_s: u64,
}

/// `POST /v1/workers/{id}/poll`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Poll {
    /// Only tasks of these of its capabilities (default: any of them);
    /// others wait for another poll.
    #[serde(default)]
    pub capabilities: Option<Vec<String>>,
    /// Tasks it takes at most in this answer (default 1).
    #[serde(default)]
    pub max_tasks: Option<u32>,
    /// How long to wait for one when none is ready, in seconds (default
    /// and at most `poll_wait_max_s`).
    #[serde(default)]
    pub wait_s: Option<u64>,
}

/// The answer to a poll that found work.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Polled {
    pub tasks: Vec<LeasedTask>,
}

/// A task given to a worker, under a lease only its token can answer.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LeasedTask {
    pub id: String,
    pub capability: String,
    #[schema(value_type = Object)]
    pub input: Value,
    /// Its attempt, from 1.
    pub attempt: u32,
    pub lease_token: String,
    /// Unix milliseconds: heartbeat the task before then.
    pub lease_expires_at: i64,
}

/// `POST /v1/tasks/{id}/heartbeat`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskHeartbeat {
    pub lease_token: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub progress: Option<Value>,
}

/// The answer to a task's heartbeat.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TaskLease {
    pub lease_expires_at: i64,
    /// The task was cancelled: stop it and say so with `fail`.
    pub cancel_requested: bool,
}

/// `POST /v1/tasks/{id}/complete`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskComplete {
    pub lease_token: String,
    #[schema(value_type = Object)]
    pub output: Value,
}

/// `POST /v1/tasks/{id}/fail`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskFail {
    pub lease_token: String,
    pub error: String,
    /// Whether another try (on another worker) may succeed.
    #[serde(default)]
    pub retryable: bool,
}

/// `POST /v1/workers/{id}/heartbeat`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WorkerHeartbeat {
    #[serde(default)]
    pub in_flight: u32,
    /// The worker is draining itself (it was told to stop): the hub gives
    /// it nothing new, and tasks given to it but not yet polled go to
    /// another worker.
    #[serde(default)]
    pub draining: bool,
}

/// What the hub wants of a worker: `run`, or `drain` (finish what it
/// holds, take nothing new).
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WorkerState {
    pub state: String,
}

/// `POST /v1/tasks`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTask {
    pub capability: String,
    #[schema(value_type = Object)]
    pub input: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<Deadline>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<serde_json::Map<String, Value>>,
}

/// One worker as `GET /v1/workers` shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct WorkerInfo {
    pub id: String,
    pub name: String,
    pub labels: std::collections::BTreeMap<String, String>,
    pub capabilities: Vec<Capability>,
    /// Tasks leased to it now.
    pub in_flight: u32,
    /// Seconds since it was last heard of.
    pub last_seen_s: u64,
    pub draining: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WorkerList {
    pub workers: Vec<WorkerInfo>,
}

/// `POST /v1/tasks/plan`: a request in plain language, for a model to turn
/// into tasks.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlanRequest {
    pub request: String,
    /// The model that plans (default: the hub's `workers.planner_model`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// The tasks' priority, attempts and deadline, as for `POST /v1/tasks`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<Deadline>,
}

/// A plan: the request, the model's answer as it came, the plan it parsed
/// into, and the tasks it made with where each stands (its output once it
/// has one).
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PlanView {
    pub id: String,
    pub object: String,
    pub request: String,
    pub model: String,
    /// The model's answer, as it came.
    pub answer: String,
    /// The plan, once the answer parsed into one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub plan: Option<Value>,
    /// Why it was refused; absent when its tasks were submitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub tasks: Vec<crate::jobs::Job>,
    /// Unix seconds.
    pub created_at: i64,
}
