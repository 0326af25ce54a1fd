//! Several hubs on one database: `GET /admin/hubs`.

use serde::{Deserialize, Serialize};

/// The hubs of this hub's cluster.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct HubList {
    /// The cluster's name (`[cluster] name`).
    pub cluster: String,
    /// The hub that answered.
    pub this_hub: String,
    /// The hub that holds the lease, where one does.
    pub leader: Option<String>,
    /// The lease's epoch (0 where nobody ever held it, or the hub is
    /// alone).
    pub epoch: i64,
    /// Milliseconds left of the lease, on the database's clock.
    pub lease_left_ms: Option<i64>,
    /// Every hub seen within the last minute, by id.
    pub hubs: Vec<HubInfo>,
    /// Why the list is only this hub: it keeps no shared store, or the
    /// store did not answer.
    pub note: Option<String>,
}

/// One hub of a cluster.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct HubInfo {
    pub id: String,
    /// Where the other hubs reach it.
    pub address: String,
    pub version: String,
    /// `alone`, `leader`, `follower`, `leaderless` or `stopped`.
    pub role: String,
    pub epoch: i64,
    /// Slots it holds granted by the leader.
    pub grants: i64,
    /// Milliseconds since it last said it was alive, on the database's
    /// clock.
    pub seen_ms_ago: i64,
    /// Unix milliseconds it started at.
    pub started_ms: i64,
}
