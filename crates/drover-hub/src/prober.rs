//! One prober task per backend: every `probe_interval` it asks the server
//! what it has (the adapter's discovery is the active health probe), feeds
//! the models, slots and the server's own load to the scheduler, and the
//! result to the breaker. A node agent's reports of its servers go through
//! [`observe`] too. With `probe = "generate"` a probe also generates
//! one token from a loaded model: a server that lists models but cannot run
//! them (a crashed runner, GPU memory gone) fails it.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::time::MissedTickBehavior;

use drover_backends::{Discovery, ModelType};

use drover_scheduler::Event;

use crate::hub::HubState;
use crate::registry::{BackendEntry, ProbeMode};

pub async fn run(hub: Arc<HubState>, entry: Arc<BackendEntry>) {
    let mut tick = tokio::time::interval(hub.config.health.probe_interval);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = entry.cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        let started = hub.dispatcher.now();
        let result = tokio::select! {
            _ = entry.cancel.cancelled() => return,
            r = probe(&entry) => r,
        };
        observe(&hub, &entry, started, result);
    }
}

/// Probes a backend now, out of turn: after an operator's load or unload,
/// so the scheduler sees the change at once.
pub async fn refresh(hub: &Arc<HubState>, entry: &Arc<BackendEntry>) {
    let started = hub.dispatcher.now();
    let result = probe(entry).await;
    observe(hub, entry, started, result);
}

/// Discovery, and with `probe = "generate"` a one-token generation from a
/// loaded model that generates (an embedding model cannot). A server with
/// nothing loaded is not made to load a model for a probe.
async fn probe(entry: &BackendEntry) -> Result<Discovery, String> {
    let adapter = entry.detect().await?;
    let discovery = adapter.discover().await.map_err(|e| e.to_string())?;
    if entry.options.probe_mode == ProbeMode::Generate {
        let loaded = |kind: ModelType| {
            discovery
                .models
                .iter()
                .find(|m| m.loaded() && m.kind == kind)
        };
        if let Some(model) = loaded(ModelType::Llm).or_else(|| loaded(ModelType::Unknown)) {
            adapter.generate(&model.id).await.map_err(|e| {
                format!("it lists models but cannot generate from {}: {e}", model.id)
            })?;
        }
    }
    Ok(discovery)
}

/// Models the scheduler holds loaded on `id` (no unload of its own under
/// way) that the server now says are not: it unloaded them by itself.
fn evicted_by_server(
    s: &drover_scheduler::Scheduler,
    id: drover_core::BackendId,
    specs: &[drover_scheduler::ModelSpec],
) -> Vec<String> {
    specs
        .iter()
        .filter(|spec| spec.state == drover_scheduler::ServerState::Unloaded)
        .filter(|spec| {
            s.fleet().residency(id, spec.name.as_str()) == Some(drover_scheduler::Residency::Loaded)
        })
        .map(|spec| spec.name.to_string())
        .collect()
}

/// Keeps at most `max` of a listing's models, loaded and loading ones
/// first, the rest in the server's order; how many it dropped.
fn cap_models(discovery: &mut Discovery, max: usize) -> usize {
    let listed = discovery.models.len();
    if listed <= max {
        return 0;
    }
    // Stable: the server's order within each group.
    discovery
        .models
        .sort_by_key(|m| !(m.loaded() || m.state == drover_backends::ModelState::Loading));
    discovery.models.truncate(max);
    listed - max
}

/// Feeds what a server said (or why it did not answer) to the scheduler:
/// from this hub's own probe, or from a node agent's report of a server on
/// its machine, the same way. `started`: when the server was asked
/// (scheduler time), so that what it said does not undo a load or unload
/// that ended since.
pub(crate) fn observe(
    hub: &Arc<HubState>,
    entry: &Arc<BackendEntry>,
    started: std::time::Duration,
    result: Result<Discovery, String>,
) {
    let id = entry.id;
    match result {
        Ok(mut discovery) => {
            let dropped = cap_models(&mut discovery, hub.config.limits.max_models_per_backend);
            let (specs, own_ids) = entry.specs(&discovery.models, &hub.models);
            let backend_status = entry.status(&discovery, &hub.models, &hub.machines);
            // What the server said, before the scheduler hears of it: a
            // reader who sees the backend's models sees their states too.
            // That it is up comes after, so that until the scheduler has
            // its models it still counts as not answering yet.
            let models = discovery.models.len();
            let loaded = discovery.models.iter().filter(|m| m.loaded()).count();
            {
                let mut status = drover_core::sync::lock(&entry.observed);
                if dropped != status.dropped_models && dropped > 0 {
                    tracing::warn!(backend = %entry.name, listed = models + dropped, taken = models, dropped, "the backend lists more models than limits.max_models_per_backend: the rest are not served from it");
                }
                status.own_ids = own_ids;
                status.dropped_models = dropped;
                status.probed_unix_ms = Some(crate::traffic::unix_ms());
                status.version = discovery.version;
                status.mode = discovery.mode;
                status.can_load = discovery.can_load;
                status.can_unload = discovery.can_unload;
                status.memory_used = discovery.memory_used;
                status.memory_total = discovery.memory_total;
                status.sizes = discovery
                    .models
                    .iter()
                    .filter_map(|m| {
                        Some((hub.models.public_name(&m.id).to_string(), m.size_bytes?))
                    })
                    .collect();
                status.states = discovery
                    .models
                    .iter()
                    .map(|m| (hub.models.public_name(&m.id).to_string(), m.state.as_str()))
                    .collect();
                // A model loaded again is no longer one the server evicted.
                status.evicted.retain(|model, _| {
                    !discovery
                        .models
                        .iter()
                        .any(|m| m.loaded() && hub.models.public_name(&m.id) == model)
                });
                status.progress = discovery
                    .models
                    .iter()
                    .filter_map(|m| Some((hub.models.public_name(&m.id).to_string(), m.progress?)))
                    .collect();
            }
            let mut evicted = Vec::new();
            hub.dispatcher.apply_with(|s| {
                // Checked under the scheduler's lock, after which removal
                // also happens under it: a late probe cannot re-add.
                if entry.removed.load(Ordering::SeqCst) {
                    return Vec::new();
                }
                evicted = evicted_by_server(s, id, &specs);
                vec![
                    Event::Observed {
                        backend: id,
                        models: specs,
                        status: Some(backend_status),
                        probed: Some(started),
                    },
                    Event::Probed {
                        backend: id,
                        ok: true,
                    },
                ]
            });
            if !evicted.is_empty() {
                let mut status = drover_core::sync::lock(&entry.observed);
                let at = crate::traffic::unix_ms();
                for model in evicted {
                    tracing::info!(backend = %entry.name, model = %crate::error::echo(&model), "the server unloaded the model on its own");
                    status.evicted.insert(model, at);
                }
            }
            let mut status = drover_core::sync::lock(&entry.observed);
            if status.last_error.is_some() || !status.ever_succeeded {
                tracing::info!(backend = %entry.name, models, loaded, "backend is up");
            }
            status.last_error = None;
            status.ever_succeeded = true;
        }
        Err(e) => {
            hub.dispatcher.apply_with(|s| {
                if entry.removed.load(Ordering::SeqCst) {
                    return Vec::new();
                }
                vec![if s.fleet().contains(id) {
                    Event::Probed {
                        backend: id,
                        ok: false,
                    }
                } else {
                    // Its first answer will not come: what waited for it
                    // is refused.
                    Event::Unanswered(id)
                }]
            });
            let mut status = drover_core::sync::lock(&entry.observed);
            let msg = e;
            if status.last_error.as_deref() != Some(msg.as_str()) {
                tracing::warn!(backend = %entry.name, error = %msg, "backend probe failed");
            }
            status.last_error = Some(msg);
            status.probed_unix_ms = Some(crate::traffic::unix_ms());
        }
    }
}

#[cfg(test)]
mod tests {
    use drover_backends::{DiscoveredModel, ModelState};

    use super::*;

    fn model(id: &str, state: ModelState) -> DiscoveredModel {
        DiscoveredModel {
            id: id.into(),
            state,
            ..DiscoveredModel::default()
        }
    }

    #[test]
    fn a_listing_past_the_cap_keeps_loaded_models_first_then_the_servers_order() {
        let mut d = Discovery {
            models: vec![
                model("a", ModelState::Unloaded),
                model("b", ModelState::Unloaded),
                model("c", ModelState::Loaded),
                model("d", ModelState::Unloaded),
                model("e", ModelState::Loading),
            ],
            ..Discovery::default()
        };
        assert_eq!(cap_models(&mut d, 3), 2);
        let kept: Vec<&str> = d.models.iter().map(|m| m.id.as_str()).collect();
        assert_eq!(kept, ["c", "e", "a"]);
        assert_eq!(cap_models(&mut d, 3), 0);
    }
}
