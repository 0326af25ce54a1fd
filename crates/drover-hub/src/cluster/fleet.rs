//! A follower's backends follow its leader's: every link tells it the
//! leader's backends (from the leader's config, added at run time through
//! the management API, reported by node agents), and it adds those it
//! lacks, each with a prober of its own, so it can send a request wherever
//! the leader grants and its own view of the fleet (model lists, contexts)
//! is warm should it lead. What it added and the leader no longer has, it
//! removes; its own config's backends stay.

use std::collections::BTreeSet;
use std::sync::Arc;

use drover_proto::admin::BackendSpec;

use crate::hub::HubState;

/// Follows the leader's backends until shutdown: at every `Fleet`, and
/// when this hub's own backends change (a node's servers it served as the
/// leader leave when their agent heartbeats another hub, say).
pub(crate) async fn follow(hub: Arc<HubState>) {
    let mut told = hub.link.fleet();
    let mut look = tokio::time::interval(std::time::Duration::from_secs(1));
    look.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut seen = hub.registry.generation();
    loop {
        tokio::select! {
            () = hub.shutdown.cancelled() => return,
            changed = told.changed() => if changed.is_err() { return },
            _ = look.tick() => {
                if hub.registry.generation() == seen {
                    continue;
                }
            }
        }
        let Some(specs) = told.borrow_and_update().clone() else {
            seen = hub.registry.generation();
            continue;
        };
        if hub.cluster.role().leads() {
            seen = hub.registry.generation();
            continue;
        }
        apply(&hub, &specs);
        seen = hub.registry.generation();
    }
}

/// Adds the leader's backends this hub lacks and removes those it added
/// that the leader no longer has.
fn apply(hub: &Arc<HubState>, specs: &[BackendSpec]) {
    let names: BTreeSet<&str> = specs.iter().filter_map(|s| s.name.as_deref()).collect();
    for spec in specs {
        let Some(name) = spec.name.as_deref() else {
            continue;
        };
        if hub.registry.by_name(name).is_some() {
            continue;
        }
        match hub.add_backend(spec) {
            Ok(_) => {
                tracing::info!(backend = %name, "added: the leader has it");
                hub.link.note_fleet(name, true);
            }
            Err(e) => {
                tracing::warn!(backend = %name, error = %e, "the leader has a backend this hub cannot add: requests the leader grants on it ask again without it");
            }
        }
    }
    for name in hub.link.added_from_fleet() {
        if !names.contains(name.as_str()) {
            if hub.remove_backend(&name) {
                tracing::info!(backend = %name, "removed: the leader no longer has it");
            }
            hub.link.note_fleet(&name, false);
        }
    }
}
