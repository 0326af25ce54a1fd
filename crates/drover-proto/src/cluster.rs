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
    /// Slots it holds on the leader's grants (a follower's requests running).
    pub grants: i64,
    /// Milliseconds since it last said it was alive, on the database's
    /// clock.
    pub seen_ms_ago: i64,
    /// Unix milliseconds it started at.
    pub started_ms: i64,
}

/// The link between a follower and its leader (`POST /cluster/link`): one
/// long-lived request whose body is the follower's messages and whose
/// answer is the leader's, one JSON object a line each way. Bytes of
/// inference never pass through it: a follower asks for a slot, the leader
/// answers with the backend, and the follower forwards straight to it.
pub mod link {
    use serde::{Deserialize, Serialize};

    /// The header a follower's link sends the cluster's secret in.
    pub const SECRET_HEADER: &str = "x-drover-cluster-secret";
    /// The header a follower's link names the link's version in: a leader
    /// refuses a link of another version, saying so, rather than reading
    /// lines it cannot.
    pub const VERSION_HEADER: &str = "x-drover-link-version";
    /// This build's version of the link.
    pub const VERSION: u32 = 2;
    /// The path of the link.
    pub const PATH: &str = "/cluster/link";

    /// From a follower to the leader. Tagged outside (`{"acquire":{..}}`),
    /// not inside: serde reads an inner tag by buffering the whole object
    /// first, which was a tenth of the leader's CPU per grant.
    #[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
    #[serde(rename_all = "snake_case")]
    pub enum ToLeader {
        /// First on every link: who it is and the slots it holds, granted
        /// by this leader or an earlier one.
        Hello { hub: String, held: Vec<Held> },
        /// A slot for a request; answered with a grant or a refusal.
        Acquire(Box<Acquire>),
        /// The request went away while it waited.
        Cancel { id: u64 },
        /// A granted slot is let go; `charge` is its answer's output
        /// tokens, for its key's tokens a minute.
        Release {
            id: u64,
            outcome: Outcome,
            #[serde(default, skip_serializing_if = "Option::is_none")]
            charge: Option<Charge>,
        },
        /// A prefill measured on a backend.
        Prefill {
            backend: String,
            model: String,
            tokens: u32,
            took_us: u64,
        },
    }

    /// What a slot is asked for: the scheduler's request, backends by
    /// name, times relative to now.
    #[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
    pub struct Acquire {
        /// The follower's own number for it.
        pub id: u64,
        pub model: String,
        /// `openai`, `responses`, `messages` or `task`.
        pub api: String,
        pub priority: u8,
        pub client: u64,
        pub user: u64,
        /// How long it has waited already (it keeps its place).
        pub waited_ms: u64,
        /// How much longer it may wait.
        pub deadline_ms: Option<u64>,
        pub lookup: Vec<u64>,
        pub record: Vec<u64>,
        pub bytes: u64,
        pub exclude: Vec<String>,
        pub pin: Option<String>,
        pub prompt_tokens: u32,
        pub max_tokens: Option<u32>,
        /// It goes round again after an attempt failed before its first
        /// byte.
        pub retry: bool,
        /// The client key it came with, where the key has limits the
        /// leader decides: its requests a minute, tokens a minute and
        /// requests at once count across every hub.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub key: Option<KeyUse>,
        /// Its key's limits were checked already (where it came in, while
        /// that hub led): counted against `max_concurrent`, not charged
        /// again.
        #[serde(default)]
        pub admitted: bool,
    }

    /// A client key's limits as the leader applies them (its model list
    /// is checked where the request comes in).
    #[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
    pub struct KeyUse {
        pub id: String,
        pub name: String,
        pub requests_per_minute: Option<u32>,
        pub tokens_per_minute: Option<u32>,
        pub max_concurrent: Option<u32>,
    }

    /// Output tokens of an answer, charged to its key.
    #[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
    pub struct Charge {
        pub key: String,
        pub tokens_per_minute: Option<u32>,
        pub tokens: u64,
    }

    /// A slot a follower holds.
    #[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
    pub struct Held {
        pub id: u64,
        pub backend: String,
        pub model: String,
        pub tokens: u32,
        /// Its client key: a new leader counts it against the key's
        /// `max_concurrent` until it is let go.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub key: Option<KeyUse>,
    }

    /// How a granted request ended, for breakers and learned times.
    #[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
    #[serde(tag = "t", rename_all = "snake_case")]
    pub enum Outcome {
        Success {
            service_ms: u64,
        },
        Failure,
        Overloaded,
        Neutral,
        /// Its client went away: the slot lingers for the cancel grace.
        Abandoned,
    }

    /// From the leader to a follower, tagged outside as [`ToLeader`] is.
    #[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
    #[serde(rename_all = "snake_case")]
    pub enum ToFollower {
        /// First on every link.
        Welcome {
            leader: String,
            epoch: i64,
        },
        Grant(Grant),
        Refused {
            id: u64,
            refusal: Refusal,
        },
        /// Every backend the leader has (from its config, added at run
        /// time, reported by node agents): a follower adds those it lacks,
        /// so it can send a request wherever the leader grants. Sent when
        /// the link opens and whenever the leader's backends change.
        Fleet {
            backends: Vec<crate::admin::BackendSpec>,
        },
    }

    /// A slot granted: send the request to `backend`.
    #[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
    pub struct Grant {
        pub id: u64,
        pub backend: String,
        pub model: String,
        pub epoch: i64,
        pub affinity_hit: bool,
        pub last_resort: bool,
        pub running: u32,
        pub seq: u64,
        pub tokens: u32,
    }

    /// Why no slot: the scheduler's reasons, backends by name.
    #[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
    #[serde(tag = "t", rename_all = "snake_case")]
    pub enum Refusal {
        ModelNotFound,
        NoHealthyBackend,
        QueueFull {
            retry_after_ms: u64,
        },
        Exhausted,
        ApiNotServed,
        NeverFits {
            size: u64,
            needs: u64,
            largest: u64,
        },
        LoadFailed {
            backend: String,
            message: String,
            /// Set where no new attempt comes before it (refused at once);
            /// absent where the request waited for the load.
            retry_after_ms: Option<u64>,
        },
        Expired,
        StillLoading {
            backend: String,
            retry_after_ms: u64,
        },
        Unroutable,
        ShuttingDown,
        /// Its key is over a limit (`requests_per_minute`,
        /// `tokens_per_minute` or `max_concurrent`).
        KeyLimited {
            limit: String,
            message: String,
            retry_after_ms: u64,
        },
    }
}
