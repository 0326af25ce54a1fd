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

use drover_proto::dashboard::Overview;
use tokio::sync::watch;

pub(crate) use assets::asset;

use crate::hub::HubState;
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
    crate::views::overview(
        hub,
        crate::views::Snapshot::with_models(&hub.dispatcher),
        now_ms,
        since_ms,
    )
}
