//! Releases of drover and the roll-outs that update nodes to them.

use serde::{Deserialize, Serialize};

/// A release the hub keeps for node agents.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct ReleaseInfo {
    pub version: String,
    pub sha256: String,
    pub bytes: u64,
    /// What it runs on, as Rust names them (`linux`, `x86_64`).
    pub os: String,
    pub arch: String,
    /// Unix seconds.
    pub created_at: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ReleaseList {
    pub releases: Vec<ReleaseInfo>,
}

/// `POST /admin/rollouts`: update every node to `version`, `batch` nodes
/// at a time.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartRollout {
    pub version: String,
    /// Nodes updated at once (default 1); the roll-out halts at the first
    /// batch with a node that failed.
    #[serde(default)]
    pub batch: Option<u32>,
}

/// One node's part in a roll-out.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct RolloutNode {
    pub node_id: String,
    pub name: String,
    /// The version it ran when the roll-out began.
    pub from: String,
    /// `waiting`, `updating`, `done`, `failed`, or `skipped` (down when
    /// its batch came).
    pub state: String,
    /// What its agent said, or why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct RolloutInfo {
    pub id: String,
    pub version: String,
    pub batch: u32,
    /// `running`, `done` or `halted`.
    pub state: String,
    /// Unix milliseconds.
    pub created_ms: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_ms: Option<i64>,
    pub nodes: Vec<RolloutNode>,
    /// Why it halted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub halted: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RolloutList {
    pub rollouts: Vec<RolloutInfo>,
}
