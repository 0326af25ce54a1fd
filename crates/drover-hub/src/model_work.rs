//! The model manager's hands: the scheduler decides which model to load or
//! unload where (single-flight, evictions, time to live); this carries the
//! decisions out through the backends' adapters and reports each end back,
//! then probes the backend at once so discovery catches up. Operator
//! actions go through the same functions after the scheduler accepted
//! them, so a load an operator asked for and one a request needed cannot
//! run twice.

use std::sync::Arc;
use std::time::Duration;

use drover_core::{BackendId, ModelName};
use drover_scheduler::{Event, LoadOrder};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::dispatcher::ModelWork;
use crate::hub::HubState;
use crate::prober;

/// Receives the scheduler's loads and unloads and runs each as a task the
/// hub owns (awaited at shutdown, cut short by it).
pub(crate) async fn run(hub: Arc<HubState>, mut work: mpsc::UnboundedReceiver<ModelWork>) {
    loop {
        let next = tokio::select! {
            _ = hub.shutdown.cancelled() => return,
            next = work.recv() => next,
        };
        let Some(work) = next else {
            return;
        };
        // Only the hub that decides loads and unloads: a follower's own
        // scheduler mirrors the fleet for its reads (pins, warm models and
        // times to live would otherwise move models under the leader). Its
        // orders end at once, undone.
        if !hub.cluster.leads() {
            let why = "this hub follows: the cluster's leader loads and unloads".to_string();
            let ended = match work {
                ModelWork::Load(order) => Event::LoadEnded {
                    backend: order.backend,
                    model: order.model,
                    result: Err(why),
                },
                ModelWork::Unload { backend, model } => Event::UnloadEnded {
                    backend,
                    model,
                    result: Err(why),
                },
            };
            hub.dispatcher.apply(ended);
            continue;
        }
        let task_hub = hub.clone();
        hub.tasks.spawn(async move {
            let hub = task_hub;
            match work {
                ModelWork::Load(order) => {
                    let _ = load(&hub, order).await;
                }
                ModelWork::Unload { backend, model } => {
                    let _ = unload(&hub, backend, &model, "its time to live passed").await;
                }
            }
        });
    }
}

/// Carries out a load the scheduler accepted: unloads what it evicts, then
/// loads, then reports every end. Returns how long the load took or what
/// went wrong.
pub(crate) async fn load(hub: &Arc<HubState>, order: LoadOrder) -> Result<Duration, String> {
    let LoadOrder {
        backend,
        model,
        evict,
    } = order;
    let name = hub.registry.name_of(backend);
    let result = tokio::select! {
        _ = hub.shutdown.cancelled() => Err("the hub is shutting down".to_string()),
        r = load_after_evicting(hub, backend, &model, &evict) => r,
    };
    match &result {
        Ok(took) => tracing::info!(
            target: "drover::action",
            backend = %name, %model, seconds = took.as_secs_f64(), "model loaded"
        ),
        Err(e) => tracing::warn!(backend = %name, %model, error = %e, "model load failed"),
    }
    hub.observer.loaded(&name, model.as_str(), result.is_ok());
    hub.dispatcher.apply(Event::LoadEnded {
        backend,
        model: model.clone(),
        result: result.clone(),
    });
    refresh(hub, backend).await;
    result
}

async fn load_after_evicting(
    hub: &Arc<HubState>,
    backend: BackendId,
    model: &ModelName,
    evict: &[drover_scheduler::Placed],
) -> Result<Duration, String> {
    for (on, victim) in evict {
        unload(hub, *on, victim, &format!("to make room for {model}"))
            .await
            .map_err(|e| format!("could not unload {victim} to make room: {e}"))?;
    }
    let entry = hub.registry.get(backend).ok_or("the backend was removed")?;
    let adapter = entry.adapter().ok_or("its kind is not known yet")?;
    let own = entry
        .own_id(model.as_str())
        .unwrap_or_else(|| model.to_string());
    let limit = hub.config.manager.load_timeout;
    let started = Instant::now();
    match tokio::time::timeout(limit, adapter.load(&own)).await {
        Err(_) => Err(format!(
            "it did not finish loading within {}",
            humantime::format_duration(limit)
        )),
        Ok(Err(e)) => Err(e.to_string()),
        Ok(Ok(_)) => Ok(started.elapsed()),
    }
}

/// Carries out an unload the scheduler accepted and reports its end.
pub(crate) async fn unload(
    hub: &Arc<HubState>,
    backend: BackendId,
    model: &ModelName,
    why: &str,
) -> Result<(), String> {
    let result = match hub.registry.get(backend) {
        None => Err("the backend was removed".to_string()),
        Some(entry) => match entry.adapter() {
            None => Err("its kind is not known yet".to_string()),
            Some(adapter) => {
                let own = entry
                    .own_id(model.as_str())
                    .unwrap_or_else(|| model.to_string());
                adapter.unload(&own).await.map_err(|e| e.to_string())
            }
        },
    };
    let name = hub.registry.name_of(backend);
    match &result {
        Ok(()) => {
            tracing::info!(target: "drover::action", backend = %name, %model, why, "model unloaded");
            hub.observer.unloaded(&name, model.as_str());
        }
        Err(e) => tracing::warn!(backend = %name, %model, error = %e, "model unload failed"),
    }
    hub.dispatcher.apply(Event::UnloadEnded {
        backend,
        model: model.clone(),
        result: result.clone(),
    });
    refresh(hub, backend).await;
    result
}

async fn refresh(hub: &Arc<HubState>, backend: BackendId) {
    if let Some(entry) = hub.registry.get(backend) {
        prober::refresh(hub, &entry).await;
    }
}
