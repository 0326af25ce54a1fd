//! Several hubs on one PostgreSQL database are one cluster: one of them
//! leads, the rest follow (`docs/cluster.md`).
//!
//! Leadership is a lease row in the store ([`drover_store::ClusterLease`]) whose
//! expiry is on the database's clock; `lease.rs` campaigns for it and
//! renews it. The role this hub has now is a `watch` value every part that
//! only the leader may do (claiming jobs, delivering callbacks, rescuing
//! and expiring them) waits on.
//!
//! A hub on SQLite, or with no store, is alone: it leads without a lease.

mod connect;
mod fleet;
pub(crate) mod grants;
mod identity;
mod lease;
mod lines;
pub(crate) mod link;
pub(crate) mod relay;
pub(crate) use fleet::follow as follow_fleet;
mod secret;
pub(crate) mod wire;

use std::sync::Arc;
use std::time::Duration;

use drover_store::Store;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::config::ClusterConfig;

pub use identity::HUB_ID_FILE;

/// What this hub is in its cluster now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// No store shared with other hubs: it decides alone.
    Alone,
    /// It holds the cluster's lease in `epoch`, until `until` on its own
    /// clock (measured from before the renewal was sent, so never later
    /// than the database's expiry).
    Leader { epoch: i64, until: Instant },
    /// Another hub holds the lease.
    Follower {
        leader: String,
        address: String,
        epoch: i64,
    },
    /// No hub this one knows of holds the lease: its store does not
    /// answer, or it has not asked yet.
    Leaderless { reason: String },
}

impl Role {
    /// Whether this hub decides: it alone, or it leads.
    pub fn leads(&self) -> bool {
        matches!(self, Role::Alone | Role::Leader { .. })
    }

    /// `alone`, `leader`, `follower` or `leaderless`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Role::Alone => "alone",
            Role::Leader { .. } => "leader",
            Role::Follower { .. } => "follower",
            Role::Leaderless { .. } => "leaderless",
        }
    }

    /// The lease's epoch this hub knows of (0 where there is none).
    pub fn epoch(&self) -> i64 {
        match self {
            Role::Leader { epoch, .. } | Role::Follower { epoch, .. } => *epoch,
            Role::Alone | Role::Leaderless { .. } => 0,
        }
    }
}

/// This hub's place in its cluster.
pub struct Cluster {
    pub(crate) config: ClusterConfig,
    /// The hub's id, kept in its data directory (else new at each start).
    pub(crate) hub: String,
    /// This process's own id.
    pub(crate) instance: String,
    /// Where the other hubs reach this one.
    pub(crate) address: String,
    /// The shared store, where there is one (PostgreSQL).
    pub(crate) store: Option<Store>,
    role: watch::Sender<Role>,
    pub(crate) started_ms: i64,
    /// The secret a follower's link shows the leader (the store's).
    pub(crate) secret: Arc<secret::Secret>,
    /// A new leader's wait for its followers' slots (see [`Cluster::settled`]).
    settle: std::sync::Mutex<Settle>,
    settled: watch::Sender<bool>,
    /// Followers' slots kept while their link is down.
    pub(crate) kept: grants::Kept,
    /// The other hubs alive at the last look.
    others: std::sync::Mutex<Vec<String>>,
    /// Whether it was alone at its last look before this start.
    pub(crate) was_alone: bool,
    /// When a follower last linked to this hub: one that did is alive,
    /// whatever the store said at the last look.
    last_hello: std::sync::Mutex<Option<Instant>>,
    pub(crate) data_dir: Option<std::path::PathBuf>,
}

/// A new leader grants nothing until the hubs that were alive have linked
/// and told it the slots they hold, or one lease has passed.
#[derive(Default)]
struct Settle {
    until: Option<Instant>,
    expected: std::collections::HashSet<String>,
}

impl Cluster {
    /// A hub's place: a cluster where its store is shared (PostgreSQL),
    /// else alone.
    pub fn new(
        config: ClusterConfig,
        store: Option<&Store>,
        data_dir: Option<&std::path::Path>,
        address: String,
    ) -> std::io::Result<Arc<Cluster>> {
        let shared = store.filter(|s| !s.is_single_hub()).cloned();
        let hub = identity::hub_id(data_dir)?;
        let alone = identity::was_alone(data_dir);
        let first = if shared.is_none() {
            Role::Alone
        } else {
            // Until the store says who leads, nobody this hub knows of does;
            // the first campaign comes at once.
            Role::Leaderless {
                reason: "this hub has not asked the store who leads yet".into(),
            }
        };
        Ok(Arc::new(Cluster {
            secret: Arc::new(secret::Secret::new(shared.clone())),
            settle: std::sync::Mutex::new(Settle::default()),
            settled: watch::Sender::new(true),
            kept: grants::Kept::default(),
            others: std::sync::Mutex::new(Vec::new()),
            was_alone: alone,
            last_hello: std::sync::Mutex::new(None),
            data_dir: data_dir.map(std::path::Path::to_path_buf),
            address: config.advertise.clone().unwrap_or(address),
            config,
            hub,
            instance: uuid::Uuid::now_v7().simple().to_string(),
            store: shared,
            role: watch::Sender::new(first),
            started_ms: crate::jobs::now_ms(),
        }))
    }

    /// The role now.
    pub fn role(&self) -> Role {
        self.role.borrow().clone()
    }

    /// The lease `role` (this hub's, read once with the decision to claim)
    /// leads under, which its claims are fenced by; `None` where it is
    /// alone (nobody else could claim).
    pub fn fence(&self, role: &Role) -> Option<drover_store::Fence<'_>> {
        match *role {
            Role::Leader { epoch, .. } => Some(drover_store::Fence {
                cluster: &self.config.name,
                epoch,
            }),
            _ => None,
        }
    }

    /// Whether this hub decides now (alone, or leading).
    pub fn leads(&self) -> bool {
        self.role.borrow().leads()
    }

    /// Follows role changes.
    pub fn watch(&self) -> watch::Receiver<Role> {
        self.role.subscribe()
    }

    pub fn hub_id(&self) -> &str {
        &self.hub
    }

    /// Resolves once this hub decides (alone or leading), or at `shutdown`.
    pub async fn until_leading(&self, shutdown: &tokio_util::sync::CancellationToken) -> bool {
        let mut role = self.watch();
        tokio::select! {
            r = role.wait_for(Role::leads) => r.is_ok(),
            () = shutdown.cancelled() => false,
        }
    }

    fn set(&self, role: Role) {
        self.role.send_if_modified(|now| {
            if *now == role {
                return false;
            }
            if now.as_str() != role.as_str() || now.epoch() != role.epoch() {
                tracing::info!(cluster = %self.config.name, was = now.as_str(), now = role.as_str(), epoch = role.epoch(), "this hub's role changed");
            }
            *now = role;
            true
        });
    }

    /// How long the lease lasts without a renewal.
    pub(crate) fn ttl(&self) -> Duration {
        self.config.lease_ttl
    }

    /// This hub became the leader: until the hubs alive at the last look
    /// (but the leader before it) have linked, or one lease has passed, it
    /// grants nothing, so that slots an earlier leader granted are counted
    /// before new ones are.
    fn begin_settling(&self, before: Option<&str>) {
        let expected: std::collections::HashSet<String> = drover_core::sync::lock(&self.others)
            .iter()
            .filter(|h| Some(h.as_str()) != before && **h != self.hub)
            .cloned()
            .collect();
        let waits = !expected.is_empty();
        *drover_core::sync::lock(&self.settle) = Settle {
            until: waits.then(|| Instant::now() + self.ttl()),
            expected,
        };
        if waits {
            tracing::info!(
                "leading: waiting for the other hubs to link and say what they hold, at most one lease"
            );
        }
        self.settled.send_replace(!waits);
    }

    /// A follower linked and said what it holds.
    pub(crate) fn said_hello(&self, hub: &str) {
        *drover_core::sync::lock(&self.last_hello) = Some(Instant::now());
        let mut settle = drover_core::sync::lock(&self.settle);
        settle.expected.remove(hub);
        if settle.expected.is_empty() {
            settle.until = None;
            self.settled.send_replace(true);
        }
    }

    /// Whether a follower linked to this hub within `within`.
    pub(crate) fn linked_within(&self, within: Duration) -> bool {
        drover_core::sync::lock(&self.last_hello).is_some_and(|at| at.elapsed() < within)
    }

    /// Resolves once this hub may grant: at once unless it has just
    /// become the leader (see [`Cluster::begin_settling`]).
    pub(crate) async fn settled(&self) {
        let mut settled = self.settled.subscribe();
        loop {
            if *settled.borrow_and_update() {
                return;
            }
            let until = drover_core::sync::lock(&self.settle).until;
            let Some(until) = until else { return };
            tokio::select! {
                _ = settled.changed() => {}
                () = tokio::time::sleep_until(until) => {
                    self.settled.send_replace(true);
                    return;
                }
            }
        }
    }
}

pub(crate) use lease::run;

/// The address other hubs reach this one at, from the listener's: the
/// machine's name where it listens on every address.
pub fn default_address(scheme: &str, local: std::net::SocketAddr) -> String {
    if local.ip().is_unspecified() {
        format!("{scheme}://{}:{}", identity::host_name(), local.port())
    } else {
        format!("{scheme}://{local}")
    }
}

/// How long `GET /admin/hubs` waits for the store.
const LIST_WAIT: Duration = Duration::from_secs(2);

/// Hubs seen within this long are listed.
const LISTED_WITHIN_MS: i64 = 60_000;

impl Cluster {
    /// The hubs of this cluster as the store has them, with the lease; only
    /// this hub, saying why, where there is no shared store or it does not
    /// answer.
    pub async fn list(&self) -> drover_proto::cluster::HubList {
        let role = self.role();
        let this = drover_proto::cluster::HubInfo {
            id: self.hub.clone(),
            address: self.address.clone(),
            version: crate::VERSION.into(),
            role: role.as_str().into(),
            epoch: role.epoch(),
            grants: 0,
            seen_ms_ago: 0,
            started_ms: self.started_ms,
        };
        let mut list = drover_proto::cluster::HubList {
            cluster: self.config.name.clone(),
            this_hub: self.hub.clone(),
            leader: role.leads().then(|| self.hub.clone()),
            epoch: role.epoch(),
            lease_left_ms: None,
            hubs: vec![this],
            note: None,
        };
        let Some(store) = &self.store else {
            list.note =
                Some("this hub keeps no store shared with other hubs: it decides alone".into());
            return list;
        };
        let read = async {
            let lease = store.lease(&self.config.name).await?;
            let hubs = store.hubs(&self.config.name, LISTED_WITHIN_MS).await?;
            Ok::<_, drover_store::StoreError>((lease, hubs))
        };
        match tokio::time::timeout(LIST_WAIT, read).await {
            Ok(Ok((lease, (hubs, now)))) => {
                if let Some(lease) = lease {
                    list.epoch = lease.epoch;
                    list.leader = (lease.left_ms() > 0).then(|| lease.holder.clone());
                    list.lease_left_ms = Some(lease.left_ms());
                }
                list.hubs = hubs
                    .into_iter()
                    .map(|h| drover_proto::cluster::HubInfo {
                        seen_ms_ago: (now - h.seen_ms).max(0),
                        id: h.id,
                        address: h.address,
                        version: h.version,
                        role: h.role,
                        epoch: h.epoch,
                        grants: h.grants,
                        started_ms: h.started_ms,
                    })
                    .collect();
            }
            Ok(Err(e)) => list.note = Some(format!("the store does not answer: {e}")),
            Err(_) => list.note = Some("the store did not answer within 2 s".into()),
        }
        list
    }
}
