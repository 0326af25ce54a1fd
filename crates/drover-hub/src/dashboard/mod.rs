//! The dashboard: a page the hub serves at `/` (its files embedded in the
//! binary) that draws the [`Overview`] it reads from `/admin/events`.
//!
//! One task builds the overview once a second, and only while someone
//! watches; every open dashboard gets the same bytes. A new watcher gets
//! the whole last hour first, then only the newest points of the traffic
//! series, so an open dashboard costs the hub one small document a second
//! however long it stays open.

mod assets;

use std::sync::Arc;
use std::time::Duration;

use drover_proto::dashboard::{
    ClientQueue, Overview, PriorityQueue, QueueOverview, TrafficOverview,
};
use tokio::sync::watch;

pub(crate) use assets::asset;

use crate::hub::HubState;
use crate::routes::admin;
use crate::traffic::{BUCKET_MS, unix_ms};

/// How often an open dashboard hears from the hub.
pub const PERIOD: Duration = Duration::from_secs(1);

/// The latest overview (the newest traffic points only), as JSON, for
/// every dashboard watching.
pub struct Publisher {
    tx: watch::Sender<Arc<str>>,
}

impl Default for Publisher {
    fn default() -> Self {
        Self {
            tx: watch::Sender::new(Arc::from("")),
        }
    }
}

impl Publisher {
    pub fn subscribe(&self) -> watch::Receiver<Arc<str>> {
        self.tx.subscribe()
    }
}

/// Publishes the overview every [`PERIOD`] while a dashboard watches,
/// until the hub shuts down.
pub async fn run(hub: Arc<HubState>) {
    let mut tick = tokio::time::interval(PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = hub.shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        if hub.overview.tx.receiver_count() == 0 {
            continue;
        }
        let now = unix_ms();
        // The bucket before the one filling now, too: it closed since the
        // last message.
        let json = overview_json(&hub, now, now.saturating_sub(BUCKET_MS));
        hub.overview.tx.send_replace(Arc::from(json));
    }
}

pub fn overview_json(hub: &HubState, now_ms: u64, since_ms: u64) -> String {
    serde_json::to_string(&overview(hub, now_ms, since_ms)).unwrap_or_default()
}

/// The whole picture at `now_ms`, with the traffic series from `since_ms`.
pub fn overview(hub: &HubState, now_ms: u64, since_ms: u64) -> Overview {
    let fleet = admin::views(hub);
    let backends = hub
        .registry
        .all()
        .iter()
        .map(|e| admin::info(e, &fleet))
        .collect();
    let now = hub.dispatcher.now();
    let (queue, clients) = hub.dispatcher.inspect(|s| {
        let stats = s.queue().stats();
        let by_model = crate::routes::queue::entries(s, now, |_| true);
        let queue = QueueOverview {
            waiting: stats.waiting as u64,
            bytes: stats.bytes as u64,
            oldest_ms: by_model.iter().filter_map(|m| m.oldest_ms).max(),
            by_model,
            by_priority: stats
                .by_priority
                .iter()
                .map(|&(priority, n)| PriorityQueue {
                    priority,
                    waiting: n as u64,
                })
                .collect(),
            by_client: Vec::new(),
        };
        (queue, stats.by_client)
    });
    // Names are looked up outside the scheduler's lock.
    let names = crate::caller::names(&hub.keys, &hub.clients);
    let queue = QueueOverview {
        by_client: clients
            .into_iter()
            .map(|(client, n)| ClientQueue {
                client: names
                    .get(&client)
                    .cloned()
                    .unwrap_or_else(|| format!("client-{:x}", client.0)),
                waiting: n as u64,
            })
            .collect(),
        ..queue
    };
    let (by_backend, by_model) = hub.observer.traffic().totals(now_ms);
    Overview {
        at_ms: now_ms,
        version: env!("CARGO_PKG_VERSION").to_string(),
        uptime_seconds: (now_ms / 1000).saturating_sub(hub.started_unix) as f64,
        backends,
        queue,
        refused: hub.observer.traffic().refusals(),
        traffic: TrafficOverview {
            bucket_seconds: BUCKET_MS / 1000,
            // Not from before the hub started: a young hub's charts span
            // its life, not an hour of nothing.
            series: hub
                .observer
                .traffic()
                .series(since_ms.max(hub.started_unix * 1000), now_ms),
            now: hub.observer.traffic().rates(now_ms),
            by_backend,
            by_model,
        },
        keys: hub.observer.traffic().keys(now_ms),
        api_keys: hub.keys.list(),
    }
}
