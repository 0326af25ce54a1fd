//! Nodes: the machines of the fleet, each with a `drover agent` that
//! joins the hub with a join token, keeps the node credential it gets in
//! exchange, and heartbeats what the machine is and has. All traffic goes
//! from the agent to the hub.

use serde::{Deserialize, Serialize};

use crate::discovery::Discovery;

/// `POST /admin/nodes/tokens`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateJoinToken {
    /// How long it lets machines join: `30m`, `24h`, `7d` (default `24h`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<String>,
    /// Any number of machines may join with it until it expires (default:
    /// one machine, once).
    #[serde(default)]
    pub reusable: bool,
}

/// A join token as listed (the token itself only once, at creation).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct JoinTokenInfo {
    pub id: String,
    /// Its first characters.
    pub prefix: String,
    /// Unix seconds.
    pub created_at: i64,
    pub expires_at: i64,
    pub single_use: bool,
    /// When a machine joined with it (a single-use token's only one).
    pub used_at: Option<i64>,
    pub revoked_at: Option<i64>,
    /// The token, shown here once, at creation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct JoinTokenList {
    pub tokens: Vec<JoinTokenInfo>,
}

/// What a machine is and has, as its agent reports it with every
/// heartbeat. Every count is bounded by the hub.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NodeFacts {
    #[serde(default)]
    pub hostname: String,
    /// `linux`, `macos`, ...
    #[serde(default)]
    pub os: String,
    /// The distribution's name and version, where it says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os_version: Option<String>,
    #[serde(default)]
    pub arch: String,
    #[serde(default)]
    pub cpus: u32,
    /// The one-minute load average.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_1m: Option<f64>,
    #[serde(default)]
    pub memory_total_bytes: u64,
    #[serde(default)]
    pub memory_available_bytes: u64,
    #[serde(default)]
    pub gpus: Vec<Gpu>,
}

/// One GPU, where the machine can tell.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Gpu {
    pub name: String,
    #[serde(default)]
    pub memory_total_bytes: u64,
    #[serde(default)]
    pub memory_used_bytes: u64,
}

/// `POST /v1/nodes/join`: the join token, and what the machine is.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JoinRequest {
    pub token: String,
    /// How the hub shows it (letters, digits, `._:-`).
    pub name: String,
    /// The agent's version.
    pub version: String,
    #[serde(default)]
    pub facts: NodeFacts,
}

/// The answer to a join: the node's id and its credential (shown once:
/// the agent keeps it), and how often to heartbeat.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Joined {
    pub node_id: String,
    pub credential: String,
    pub heartbeat_ms: u64,
}

/// `POST /v1/nodes/{id}/heartbeat`, with the node credential as bearer.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NodeHeartbeat {
    pub version: String,
    #[serde(default)]
    pub facts: NodeFacts,
    /// The LLM servers the agent found on its machine. The hub makes each
    /// a backend of this node, and removes it once it is not reported.
    #[serde(default)]
    pub servers: Vec<NodeServer>,
    /// The host the hub should reach the node's servers at (`--advertise`);
    /// without it, the address the heartbeat came from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// The services the agent manages, as they are now.
    #[serde(default)]
    pub services: Vec<ServiceState>,
}

/// A service an agent manages (`ollama serve`, `llama-server -m ...`), as
/// it is now.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ServiceState {
    pub name: String,
    /// `running`, `starting` (running, its health URL not answering yet),
    /// `stopped`, or `backoff` (it exited; started again after a pause).
    pub state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// Times it was started again after exiting by itself.
    #[serde(default)]
    pub restarts: u32,
    /// How its last run ended (`exit status 1`, `signal 9`), if it ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_exit: Option<String>,
    /// Its health URL answered 2xx at the last look; `None` without one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthy: Option<bool>,
}

/// `POST /admin/nodes/{node}/services` (one node) or `/admin/nodes/services`
/// (every node): start, stop or restart a service, or every service
/// without `service`; or `logs`, a service's log tail.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ServiceAction {
    pub action: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
}

/// A command the hub has for a node's agent, and its answer once it came.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct NodeCommandInfo {
    pub id: String,
    pub node_id: String,
    pub action: String,
    /// Empty: every service of the node.
    pub service: String,
    /// `queued`, `sent`, `done` or `failed`.
    pub state: String,
    /// Unix milliseconds.
    pub created_ms: i64,
    /// What the agent said: a message, or the log tail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<String>,
    /// What else it carries: an update's `version`, `sha256` and
    /// `deadline_ms`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub args: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct NodeCommandList {
    pub commands: Vec<NodeCommandInfo>,
}

/// `POST /v1/nodes/{id}/commands`: an agent's long poll for commands.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CommandPoll {
    /// Seconds to wait for one, at most 25.
    #[serde(default)]
    pub wait_s: u64,
}

/// `POST /v1/nodes/{id}/commands/{command}`: the agent's answer.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CommandAnswer {
    pub ok: bool,
    /// A message, or the log tail.
    pub result: String,
}

/// A local LLM server an agent found (on a usual port, or one it was told
/// of), with what it said of itself.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NodeServer {
    /// Its URL as the agent reaches it. A loopback host is the node's own
    /// address to the hub.
    pub url: String,
    /// `lmstudio`, `ollama`, `llamacpp`, `vllm` or `openai`.
    pub kind: String,
    /// What it said, the same [`Discovery`] the hub's own probe reads;
    /// `None` when it did not answer this time (`error` says why).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub discovery: Option<Discovery>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Milliseconds from asking it to sending the heartbeat: what it said
    /// is that old.
    #[serde(default)]
    pub age_ms: u64,
}

/// What the hub wants of a node: `run` or `drain`, and the heartbeat's
/// rhythm.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct NodeState {
    pub state: String,
    pub heartbeat_ms: u64,
}

/// One node as `GET /admin/nodes` shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct NodeInfo {
    pub id: String,
    pub name: String,
    pub version: String,
    /// Unix seconds.
    pub joined_at: i64,
    pub last_seen_at: i64,
    /// Heard from within three heartbeats.
    pub up: bool,
    pub draining: bool,
    pub facts: NodeFacts,
    /// The services its agent manages, as its last heartbeat said.
    #[serde(default)]
    pub services: Vec<ServiceState>,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct NodeList {
    pub nodes: Vec<NodeInfo>,
}
