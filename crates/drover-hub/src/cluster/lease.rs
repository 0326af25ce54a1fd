//! The campaign for the cluster's lease: every `renew_every`, take it (if
//! nobody holds it, it ran out, or it is this hub's) or renew it, and say
//! this hub is alive. A leader whose renewal has not come back by its own
//! deadline stops leading at that deadline, whatever the renewal is doing:
//! from then on another hub may hold the lease.
//!
//! One exception keeps a lone hub serving through a store outage: a leader
//! that saw no other hub of its cluster alive at its last look goes on
//! deciding while the store does not answer (no other hub can take the
//! lease from a store nobody reaches; one that does reach it was not alive
//! a lease ago). Once the store answers, the lease says again who leads.

use std::sync::Arc;
use std::time::Duration;

use drover_store::{Candidate, HubRow};
use tokio::time::Instant;

use super::{Cluster, Role};
use crate::hub::HubState;

/// Another hub seen within this long may be alive: a leader that saw one
/// does not go on alone through a store outage. Longer than a lease, so that
/// a hub slow to say it is alive (a busy machine) still counts.
const ALIVE_WITHIN_MS: i64 = 60_000;

/// Hubs not seen for this long are forgotten.
const FORGET_AFTER_MS: i64 = 24 * 3600 * 1000;

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Campaigns until the hub stops, then gives the lease up (so the next
/// leader need not wait it out) and says this hub stopped.
pub(crate) async fn run(hub: Arc<HubState>) {
    let cluster = hub.cluster.clone();
    let Some(store) = cluster.store.clone() else {
        return;
    };
    let mut campaign = Campaign {
        cluster: &cluster,
        store: &store,
        others_alive: !cluster.was_alone,
        failing: false,
    };
    let mut round: u64 = 0;
    loop {
        let held = i64::try_from(hub.link.held()).unwrap_or(i64::MAX);
        let deadline = match cluster.role() {
            Role::Leader { until, .. } => Some(until),
            _ => None,
        };
        // A store that hangs (not refuses) holds neither the hub's shutdown
        // nor a leader's deadline: each call is bounded, and both cut the
        // round short.
        let say_within = cluster.config.renew_every.max(Duration::from_secs(2));
        let mut passed = false;
        let done = tokio::select! {
            () = hub.shutdown.cancelled() => false,
            () = until(deadline) => {
                passed = true;
                true
            }
            () = async {
                campaign.round().await;
                let role = cluster.role();
                let say = campaign.say_alive(&role, round, held);
                let _ = tokio::time::timeout(say_within, say).await;
            } => true,
        };
        if passed {
            campaign.deadline_passed();
        }
        if !done {
            break;
        }
        round += 1;
        let deadline = match cluster.role() {
            Role::Leader { until, .. } => Some(until),
            _ => None,
        };
        tokio::select! {
            () = hub.shutdown.cancelled() => break,
            () = tokio::time::sleep(cluster.config.renew_every) => {}
            () = until(deadline) => campaign.deadline_passed(),
        }
    }
    if let Role::Leader { epoch, .. } = cluster.role() {
        let resign = store.resign(&cluster.config.name, &cluster.instance, epoch);
        match tokio::time::timeout(Duration::from_secs(2), resign).await {
            Ok(Ok(true)) => tracing::info!("gave the cluster's lease up"),
            Ok(Ok(false)) => {}
            Ok(Err(error)) => {
                tracing::warn!(%error, "cannot give the cluster's lease up; the next leader waits for it to run out")
            }
            Err(_) => {
                tracing::warn!(
                    "the store did not answer in time to give the lease up; the next leader waits for it to run out"
                )
            }
        }
    }
    let stopped = Role::Leaderless {
        reason: "stopped".into(),
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), campaign.say_alive(&stopped, 1, 0)).await;
    cluster.set(stopped);
}

async fn until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

struct Campaign<'a> {
    cluster: &'a Cluster,
    store: &'a drover_store::Store,
    /// Whether another hub of the cluster was alive at the last look.
    others_alive: bool,
    /// Whether the store failed the last round (said once, not each).
    failing: bool,
}

impl Campaign<'_> {
    /// Takes or renews the lease, or learns who holds it (a leader's own
    /// deadline cuts the round short: see [`run`]).
    async fn round(&mut self) {
        let c = self.cluster;
        let candidate = Candidate {
            cluster: &c.config.name,
            hub: &c.hub,
            instance: &c.instance,
            address: &c.address,
        };
        let asked = Instant::now();
        let ask = self.store.campaign(&candidate, millis(c.ttl()));
        let answered = tokio::time::timeout(c.config.renew_every, ask).await;
        match answered {
            Ok(Ok(lease)) => {
                if self.failing {
                    tracing::info!("the store answers the lease's campaign again");
                }
                self.failing = false;
                if lease.instance == c.instance {
                    let left = Duration::from_millis(u64::try_from(lease.left_ms()).unwrap_or(0));
                    let was = c.role();
                    if was.epoch() != lease.epoch || !matches!(was, Role::Leader { .. }) {
                        let before = match &was {
                            Role::Follower { leader, .. } => Some(leader.as_str()),
                            _ => None,
                        };
                        c.begin_settling(before);
                    }
                    c.set(Role::Leader {
                        epoch: lease.epoch,
                        until: asked + left,
                    });
                } else {
                    c.set(Role::Follower {
                        leader: lease.holder,
                        address: lease.address,
                        epoch: lease.epoch,
                    });
                }
            }
            Ok(Err(error)) => self.failed(&error.to_string()),
            Err(_) => self.failed("the store did not answer within cluster.renew_every"),
        }
    }

    fn failed(&mut self, error: &str) {
        if !self.failing {
            tracing::warn!(%error, role = self.cluster.role().as_str(), "cannot reach the store for the cluster's lease");
        }
        self.failing = true;
        if let Role::Leaderless { .. } = self.cluster.role()
            && self.alone()
        {
            // Alone at its last look (or never having seen another hub): a
            // lone hub restarted while its store is away serves rather
            // than nothing, until the store says who leads.
            tracing::warn!(%error, "the store does not answer, and no other hub of the cluster was alive at this hub's last look: it decides alone until the store answers");
            self.cluster.set(Role::Leader {
                epoch: 0,
                until: Instant::now() + self.cluster.ttl(),
            });
            return;
        }
        if let Role::Leaderless { .. } = self.cluster.role() {
            self.cluster.set(Role::Leaderless {
                reason: format!("the store does not answer: {error}"),
            });
        }
    }

    /// Whether no other hub of the cluster was alive at the last look at
    /// the store, and none has linked to this one lately (a follower that
    /// linked is alive, whatever a look the busy store answered late found).
    fn alone(&self) -> bool {
        !self.others_alive
            && !self
                .cluster
                .linked_within(Duration::from_millis(ALIVE_WITHIN_MS.unsigned_abs()))
    }

    /// The leader's deadline passed without a renewal: it stops leading,
    /// unless it was alone in its cluster (see the module's comment).
    fn deadline_passed(&mut self) {
        let c = self.cluster;
        let Role::Leader { epoch, until } = c.role() else {
            return;
        };
        // Renewed meanwhile: a later deadline holds.
        if Instant::now() < until {
            return;
        }
        if self.alone() {
            tracing::warn!(
                epoch,
                "the lease could not be renewed, but no other hub of the cluster was alive at the last look: this hub goes on deciding until the store answers"
            );
            c.set(Role::Leader {
                epoch,
                until: Instant::now() + c.ttl(),
            });
            return;
        }
        tracing::warn!(
            epoch,
            "the lease ran out before it could be renewed: this hub stops leading"
        );
        c.set(Role::Leaderless {
            reason: "the leader's lease ran out before it could be renewed".into(),
        });
    }

    /// Says this hub is alive and what it is now, and looks at the others
    /// (every round while it leads, else every tenth).
    async fn say_alive(&mut self, role: &Role, round: u64, grants: i64) {
        let c = self.cluster;
        let row = HubRow {
            id: c.hub.clone(),
            instance: c.instance.clone(),
            address: c.address.clone(),
            version: crate::VERSION.into(),
            role: match role {
                Role::Leaderless { reason } if reason == "stopped" => "stopped".into(),
                other => other.as_str().into(),
            },
            epoch: role.epoch(),
            grants,
            started_ms: c.started_ms,
            seen_ms: 0,
        };
        if self.store.hub_seen(&c.config.name, &row).await.is_err() {
            return;
        }
        if (role.leads() || round.is_multiple_of(10))
            && let Ok((hubs, now)) = self.store.hubs(&c.config.name, ALIVE_WITHIN_MS).await
        {
            let others: Vec<&drover_store::HubRow> = hubs
                .iter()
                .filter(|h| h.id != c.hub && h.role != "stopped")
                .collect();
            // A new leader waits for those seen within a lease.
            *drover_core::sync::lock(&c.others) = others
                .iter()
                .filter(|h| now - h.seen_ms <= millis(c.ttl()))
                .map(|h| h.id.clone())
                .collect();
            if self.others_alive == others.is_empty() || round == 0 {
                super::identity::set_alone(c.data_dir.as_deref(), others.is_empty());
            }
            self.others_alive = !others.is_empty();
        }
        if c.secret.known().is_none()
            && let Err(error) = c.secret.get().await
        {
            tracing::warn!(%error, "cannot read the cluster's secret; the hubs cannot link until it can be read");
        }
        c.kept.expire(Instant::now());
        if round % 100 == 1 {
            let _ = self
                .store
                .forget_hubs(&c.config.name, FORGET_AFTER_MS)
                .await;
        }
    }
}
