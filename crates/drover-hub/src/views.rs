//! The read model: every document that shows the fleet and its queue
//! (`/admin/backends`, `/v1/queue`, `/v1/models`, `/ready`, `/metrics`, the
//! dashboard's overview and so `drover top`) is built here from one
//! [`Snapshot`] of the scheduler, taken under its lock in one go and read
//! after the lock is let go.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use drover_core::{BackendId, ModelName};
use drover_proto::admin::{BackendInfo, BackendModelInfo};
use drover_proto::dashboard::{
    BatchProgress, ClientQueue, DeadJob, JobStateCount, JobsOverview, Overview, PlanSummary,
    PlanTask, PriorityQueue, QueueOverview, TrafficOverview,
};
use drover_proto::queue::QueueEntry;
use drover_scheduler::{Api, BackendView, QueueStats, Residency, Scheduler};

use crate::dashboard::StoreView;
use crate::dispatcher::Dispatcher;
use crate::hub::HubState;
use crate::jobs::view::KeyNames;
use crate::registry::BackendEntry;
use crate::traffic::BUCKET_MS;

/// What the scheduler holds, read at one instant.
pub struct Snapshot {
    /// Scheduler time, for how long models have been idle or loading.
    pub now: Duration,
    pub backends: BTreeMap<BackendId, BackendView>,
    pub pinned: BTreeSet<ModelName>,
    pub queue: QueueStats,
    /// Per model the fleet lists or a request waits for, when asked:
    /// requests waiting, the oldest, the expected wait, whether it loads.
    pub models: Vec<QueueEntry>,
}

impl Snapshot {
    /// The fleet and the queue's counts.
    pub fn take(dispatcher: &Dispatcher) -> Snapshot {
        let now = dispatcher.now();
        dispatcher.inspect(|s| Snapshot::of(s, now, false))
    }

    /// With each model's queue and expected wait too: linear in the
    /// models, so only for the documents that show them.
    pub fn with_models(dispatcher: &Dispatcher) -> Snapshot {
        let now = dispatcher.now();
        dispatcher.inspect(|s| Snapshot::of(s, now, true))
    }

    fn of(s: &Scheduler, now: Duration, models: bool) -> Snapshot {
        // The LLM servers: workers are shown apart, by what they offer.
        let backends: BTreeMap<BackendId, BackendView> = s
            .fleet()
            .views()
            .into_iter()
            .filter(|v| !v.status.tasks)
            .map(|v| (v.id, v))
            .collect();
        let queue = s.queue().stats();
        let models = if models {
            let names: BTreeSet<&str> = backends
                .values()
                .flat_map(|v| v.models.iter().map(|m| m.name.as_str()))
                .chain(queue.by_model.iter().map(|(m, _)| m.as_str()))
                .collect();
            names
                .into_iter()
                .map(|model| QueueEntry {
                    waiting: s.queue().len_for(model) as u64,
                    oldest_ms: s
                        .queue()
                        .oldest_for(model)
                        .map(|at| now.saturating_sub(at).as_millis() as u64),
                    expected_wait_ms: s.expected_wait(model, now).as_millis() as u64,
                    loading: s.loading(model, now).is_some(),
                    model: model.to_string(),
                })
                .collect()
        } else {
            Vec::new()
        };
        Snapshot {
            now,
            pinned: s.pinned().cloned().collect(),
            backends,
            queue,
            models,
        }
    }

    /// Nothing known yet: what a backend just added shows.
    pub fn empty() -> Snapshot {
        Snapshot {
            now: Duration::ZERO,
            backends: BTreeMap::new(),
            pinned: BTreeSet::new(),
            queue: QueueStats::default(),
            models: Vec::new(),
        }
    }
}

/// A backend as the management API shows it: what it is, what its last
/// probe said, and what the scheduler holds of it.
pub fn backend_info(entry: &BackendEntry, fleet: &Snapshot) -> BackendInfo {
    let view = fleet.backends.get(&entry.id);
    let probe = drover_core::sync::lock(&entry.observed).clone();
    let memory = entry.memory_terms(probe.memory_total);
    let mut apis = Vec::new();
    if let Some(v) = view {
        for (api, name) in [(Api::Responses, "responses"), (Api::Messages, "messages")] {
            if v.status.serves(api) {
                apis.push(name.to_string());
            }
        }
    }
    BackendInfo {
        name: entry.name.clone(),
        kind: entry
            .kind()
            .map_or_else(|| "unknown".to_string(), |k| k.to_string()),
        url: entry.endpoint.to_string(),
        // The scheduler learns of a backend at its first answer.
        breaker: view
            .map_or("unreachable", |v| v.breaker.as_str())
            .to_string(),
        draining: view.is_some_and(|v| v.draining),
        in_flight: view.map_or(0, |v| v.busy),
        models: view.map_or_else(Vec::new, |v| {
            v.models
                .iter()
                .map(|m| BackendModelInfo {
                    id: m.name.to_string(),
                    loaded: m.residency == Residency::Loaded,
                    residency: Some(m.residency.as_str().to_string()),
                    progress: probe.progress.get(m.name.as_str()).copied(),
                    load_seconds: m.load_time.map(|t| t.as_secs_f64()),
                    loading_seconds: match m.residency {
                        Residency::Loading { since, .. } => {
                            Some(fleet.now.saturating_sub(since).as_secs_f64())
                        }
                        _ => None,
                    },
                    idle_seconds: m
                        .last_used
                        .filter(|_| m.busy == 0)
                        .map(|t| fleet.now.saturating_sub(t).as_secs_f64()),
                    pinned: fleet.pinned.contains(&m.name),
                    limit: m.limit,
                    load_error: m.load_error.clone(),
                    slots: m.slots,
                    busy: m.busy,
                    external: m.external,
                    size_bytes: probe.sizes.get(m.name.as_str()).copied().or(m.size),
                    state: probe.states.get(m.name.as_str()).map(|s| s.to_string()),
                })
                .collect()
        }),
        last_error: probe.last_error,
        dropped_models: probe.dropped_models as u64,
        last_probe_unix_ms: probe.probed_unix_ms,
        version: probe.version,
        mode: probe.mode,
        probe: entry.options.probe_mode.to_string(),
        max_concurrent: entry.options.max_concurrent,
        apis,
        saturated: view.is_some_and(|v| v.status.saturated),
        can_load: probe.can_load,
        can_unload: probe.can_unload,
        memory_used: probe.memory_used,
        memory_total: memory.map(|t| t.total),
        memory_for_models: memory
            .map(|t| t.for_models(view.map_or(0, BackendView::slots_in_memory))),
        slot_buffer: entry.options.slot_buffer,
        system: entry.options.system,
        margin: entry.options.margin,
    }
}

/// Every backend, as the management API shows them.
pub fn backends(hub: &HubState, fleet: &Snapshot) -> Vec<BackendInfo> {
    hub.registry
        .all()
        .iter()
        .map(|e| backend_info(e, fleet))
        .collect()
}

/// The whole picture at `now_ms`, with the traffic series from `since_ms`
/// and what was read of the job store, if the hub keeps one: what the
/// dashboard draws.
pub fn overview(
    hub: &HubState,
    fleet: Snapshot,
    store: Option<StoreView>,
    now_ms: u64,
    since_ms: u64,
) -> Overview {
    let backends = backends(hub, &fleet);
    let Snapshot { queue, models, .. } = fleet;
    // Names are looked up outside the scheduler's lock.
    let names = crate::caller::names(&hub.keys, &hub.clients);
    let queue = QueueOverview {
        waiting: queue.waiting as u64,
        bytes: queue.bytes as u64,
        oldest_ms: models.iter().filter_map(|m| m.oldest_ms).max(),
        by_model: models,
        by_priority: queue
            .by_priority
            .iter()
            .map(|&(priority, n)| PriorityQueue {
                priority,
                waiting: n as u64,
            })
            .collect(),
        by_client: queue
            .by_client
            .into_iter()
            .map(|(client, n)| ClientQueue {
                client: names
                    .get(&client)
                    .cloned()
                    .unwrap_or_else(|| format!("client-{:x}", client.0)),
                waiting: n as u64,
            })
            .collect(),
    };
    let traffic = hub.observer.traffic();
    let (by_backend, by_model) = traffic.totals(now_ms);
    let api_keys = hub.keys.list();
    let nodes = store
        .as_ref()
        .and_then(|s| s.read.as_ref())
        .map(|read| {
            read.nodes
                .iter()
                .cloned()
                .map(|n| {
                    let now = i64::try_from(now_ms).unwrap_or(i64::MAX);
                    crate::nodes::info(n, now, hub.config.nodes.heartbeat)
                })
                .collect()
        })
        .unwrap_or_default();
    let jobs = store.map(|store| {
        let held = hub.jobs.as_ref().map_or(0, |j| j.in_flight());
        jobs(store, held, &KeyNames::new(api_keys.clone()))
    });
    Overview {
        at_ms: now_ms,
        version: env!("CARGO_PKG_VERSION").to_string(),
        uptime_seconds: (now_ms / 1000).saturating_sub(hub.started_unix) as f64,
        backends,
        queue,
        refused: traffic.refusals(),
        traffic: TrafficOverview {
            bucket_seconds: BUCKET_MS / 1000,
            // Not from before the hub started: a young hub's charts span
            // its life, not an hour of nothing.
            series: traffic.series(since_ms.max(hub.started_unix * 1000), now_ms),
            now: traffic.rates(now_ms),
            by_backend,
            by_model,
        },
        keys: traffic.keys(now_ms),
        api_keys,
        jobs,
        workers: hub.workers.list(),
        nodes,
        leader: matches!(hub.cluster.role(), crate::cluster::Role::Leader { .. })
            .then(|| hub.cluster.hub.clone()),
    }
}

/// What the dashboard shows of the job store, from the last read of it
/// and `held`, the jobs this hub holds now.
pub fn jobs(store: StoreView, held: usize, names: &KeyNames) -> JobsOverview {
    let secs = |ms: i64| u64::try_from(ms.div_euclid(1000)).unwrap_or(0);
    let progress = |(b, counts): &(drover_store::Batch, _)| BatchProgress {
        id: b.id.clone(),
        key: names.owner(&b.key_id).key,
        endpoint: b.endpoint.clone(),
        status: crate::batches::view::status(&b.status),
        created_at: secs(b.created_at),
        ended_at: [b.completed_at, b.failed_at, b.expired_at, b.cancelled_at]
            .into_iter()
            .flatten()
            .max()
            .map(secs),
        request_counts: *counts,
    };
    let mut overview = JobsOverview {
        held: held as u64,
        error: store.error,
        ..JobsOverview::default()
    };
    let Some(read) = store.read else {
        return overview;
    };
    overview.read_at_ms = Some(read.at_ms);
    let by_state = |counts: &[(drover_store::JobState, u64)]| {
        drover_store::JobState::ALL
            .iter()
            .map(|&state| JobStateCount {
                state: state.as_str().to_string(),
                jobs: counts
                    .iter()
                    .find(|(s, _)| *s == state)
                    .map_or(0, |&(_, n)| n),
            })
            .collect()
    };
    overview.by_state = by_state(&read.counts);
    overview.tasks_by_state = by_state(&read.tasks);
    overview.plans = read
        .plans
        .iter()
        .map(|(plan, states)| plan_summary(plan, states, names))
        .collect();
    overview.batches_open = read.open_total as u64;
    overview.open_batches = read.open.iter().map(progress).collect();
    overview.ended_batches = read.ended.iter().map(progress).collect();
    overview.dead = read
        .dead
        .iter()
        .map(|j| {
            let last = j.attempts.last();
            DeadJob {
                id: j.id.clone(),
                key: names.owner(&j.key_id).key,
                model: j.model.clone(),
                endpoint: j.endpoint.clone(),
                batch_id: j.batch_id.clone(),
                custom_id: j.custom_id.clone(),
                attempts: u32::try_from(j.attempts.len()).unwrap_or(u32::MAX),
                created_at: j.created_at.div_euclid(1000),
                ended_at: j.ended_at.map(|ms| ms.div_euclid(1000)),
                status: last.and_then(|a| a.status),
                error: last.and_then(|a| a.error.clone()),
            }
        })
        .collect();
    overview
}

/// The longest model answer a plan shows on the dashboard.
const PLAN_ANSWER_CHARS: usize = 2_000;

fn plan_summary(
    plan: &drover_store::Plan,
    states: &[(String, drover_store::JobState)],
    names: &KeyNames,
) -> PlanSummary {
    let planned: Option<serde_json::Value> = plan
        .plan
        .as_deref()
        .and_then(|p| serde_json::from_str(p).ok());
    let tasks = plan
        .tasks()
        .unwrap_or_default()
        .into_iter()
        .enumerate()
        .map(|(i, id)| PlanTask {
            capability: planned
                .as_ref()
                .and_then(|p| p["tasks"][i]["capability"].as_str())
                .unwrap_or_default()
                .to_string(),
            state: states
                .iter()
                .find(|(t, _)| *t == id)
                .map_or("gone", |(_, s)| s.as_str())
                .to_string(),
            id,
        })
        .collect();
    PlanSummary {
        id: plan.id.clone(),
        key: names.owner(&plan.key_id).key,
        request: plan.request.clone(),
        model: plan.model.clone(),
        error: plan.error.clone(),
        answer: plan.answer.chars().take(PLAN_ANSWER_CHARS).collect(),
        tasks,
        created_at: plan.created_at.div_euclid(1000),
    }
}
