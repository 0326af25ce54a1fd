//! One prober task per backend: every `probe_interval` it asks the server
//! what it has (the adapter's discovery is the active health probe), feeds
//! the models and slots to the scheduler, and the result to the breaker.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::time::MissedTickBehavior;

use crate::hub::HubState;
use crate::registry::BackendEntry;

pub async fn run(hub: Arc<HubState>, entry: Arc<BackendEntry>) {
    let mut tick = tokio::time::interval(hub.config.health.probe_interval);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = entry.cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        let result = tokio::select! {
            _ = entry.cancel.cancelled() => return,
            r = entry.adapter.discover() => r,
        };
        probe_once(&hub, &entry, result);
    }
}

fn probe_once(
    hub: &Arc<HubState>,
    entry: &Arc<BackendEntry>,
    result: Result<drover_backends::Discovery, drover_backends::BackendError>,
) {
    let id = entry.id;
    match result {
        Ok(discovery) => {
            let specs = entry.specs(&discovery.models);
            hub.dispatcher.with_scheduler(|s, now| {
                // Checked under the scheduler's lock, after which removal
                // also happens under it: a late probe cannot re-add.
                if entry.removed.load(Ordering::SeqCst) {
                    return;
                }
                s.upsert_backend(id, specs);
                s.probe(id, true, now);
            });
            let mut status = drover_core::sync::lock(&entry.probe);
            if status.last_error.is_some() || !status.ever_succeeded {
                tracing::info!(
                    backend = %entry.name,
                    models = discovery.models.len(),
                    loaded = discovery.models.iter().filter(|m| m.loaded()).count(),
                    "backend is up"
                );
            }
            status.last_error = None;
            status.ever_succeeded = true;
        }
        Err(e) => {
            hub.dispatcher.with_scheduler(|s, now| {
                if !entry.removed.load(Ordering::SeqCst) && s.fleet().contains(id) {
                    s.probe(id, false, now);
                }
            });
            let mut status = drover_core::sync::lock(&entry.probe);
            let msg = e.to_string();
            if status.last_error.as_deref() != Some(msg.as_str()) {
                tracing::warn!(backend = %entry.name, error = %msg, "backend probe failed");
            }
            status.last_error = Some(msg);
        }
    }
}
