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

/// Follows the leader's backends until shutdown.
pub(crate) async fn follow(hub: Arc<HubState>) {
    let mut told = hub.link.fleet();
    let mut added = BTreeSet::new();
    loop {
        tokio::select! {
            () = hub.shutdown.cancelled() => return,
            changed = told.changed() => if changed.is_err() { return },
        }
        let Some(specs) = told.borrow_and_update().clone() else {
            continue;
        };
        apply(&hub, &specs, &mut added);
    }
}

/// Adds the leader's backends this hub lacks and removes those it added
/// that the leader no longer has; `added` is what it added so far.
fn apply(hub: &Arc<HubState>, specs: &[BackendSpec], added: &mut BTreeSet<String>) {
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
                added.insert(name.to_string());
            }
            Err(e) => {
                tracing::warn!(backend = %name, error = %e, "the leader has a backend this hub cannot add: requests the leader grants on it go back and ask again");
            }
        }
    }
    let gone: Vec<String> = added
        .iter()
        .filter(|n| !names.contains(n.as_str()))
        .cloned()
        .collect();
    for name in gone {
        if hub.remove_backend(&name) {
            tracing::info!(backend = %name, "removed: the leader no longer has it");
        }
        added.remove(&name);
    }
}
