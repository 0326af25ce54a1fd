//! Backends added and models pinned at run time, kept in the store so that
//! a restart does not undo an operator's work without a word. Backends in
//! the config file are the config's: a run-time backend of the same name
//! is skipped (and said) at start.

use std::sync::Arc;

use drover_proto::admin::BackendSpec;
use drover_scheduler::Event;

use crate::hub::HubState;
use crate::jobs::now_ms;

/// The store, if the hub has one and it answers.
fn store(hub: &HubState) -> Option<&drover_store::Store> {
    hub.jobs.as_ref().filter(|j| j.is_ready()).map(|j| &j.store)
}

/// Keeps a backend added through the management API.
pub async fn save_backend(hub: &HubState, name: &str, spec: &BackendSpec) {
    let Some(store) = store(hub) else {
        return;
    };
    let mut spec = spec.clone();
    spec.name = Some(name.to_string());
    let kept = match serde_json::to_string(&spec) {
        Ok(json) => store.save_backend(name, &json, now_ms()).await,
        Err(e) => Err(drover_store::StoreError::Other(e.to_string())),
    };
    if let Err(error) = kept {
        tracing::warn!(backend = %name, %error, "the backend was added, but cannot be kept in the store: it will be gone after a restart");
    }
}

/// Forgets a backend removed through the management API.
pub async fn forget_backend(hub: &HubState, name: &str) {
    if let Some(store) = store(hub)
        && let Err(error) = store.forget_backend(name).await
    {
        tracing::warn!(backend = %name, %error, "the backend was removed, but the store still keeps it: it comes back after a restart");
    }
}

/// Keeps a pin (or its removal).
pub async fn save_pin(hub: &HubState, model: &str, pinned: bool) {
    if let Some(store) = store(hub)
        && let Err(error) = store.set_pin(model, pinned, now_ms()).await
    {
        tracing::warn!(%model, pinned, %error, "the pin changed, but the store cannot keep the change: a restart undoes it");
    }
}

/// Brings back what was kept: the pins, then the backends added at run
/// time (after the config's). Both are read first and the pins applied
/// first, so nothing sees a kept backend back without its pins.
pub async fn restore(hub: Arc<HubState>) {
    let Some(store) = store(&hub) else {
        return;
    };
    let saved = store.saved_backends().await;
    match store.pins().await {
        Ok(pins) => {
            for model in pins {
                hub.dispatcher.apply(Event::Pinned {
                    model: drover_core::ModelName::new(&model),
                    pinned: true,
                });
            }
        }
        Err(error) => tracing::warn!(%error, "cannot read the pins kept in the store"),
    }
    match saved {
        Ok(saved) => {
            for (name, json) in saved {
                if hub.registry.by_name(&name).is_some() {
                    tracing::warn!(backend = %name, "a backend added at run time has the name of one in the config; the config's is kept");
                    continue;
                }
                let spec: BackendSpec = match serde_json::from_str(&json) {
                    Ok(spec) => spec,
                    Err(e) => {
                        tracing::warn!(backend = %name, error = %e, "a kept backend cannot be read; skipped");
                        continue;
                    }
                };
                match hub.add_backend(&spec) {
                    Ok(entry) => {
                        tracing::info!(backend = %entry.name, url = %entry.endpoint, "backend added at run time brought back")
                    }
                    Err(e) => {
                        tracing::warn!(backend = %name, error = %e, "a kept backend cannot be added; skipped")
                    }
                }
            }
        }
        Err(error) => tracing::warn!(%error, "cannot read the backends kept in the store"),
    }
}
