//! The dashboard: a page the hub serves at `/` (its files embedded in the
//! binary) that draws the [`Overview`] it reads from `/admin/events`.
//!
//! One task builds the overview once a second, and only while someone
//! watches; every open dashboard gets the same bytes. A new watcher gets
//! the whole last hour first, then only the newest points of the traffic
//! series, so an open dashboard costs the hub one small document a second
//! however long it stays open. What it shows of the job store is read by
//! [`jobs`], at most once a second and never waited for long.

mod assets;
mod jobs;

use std::sync::Arc;
use std::time::Duration;

use drover_proto::dashboard::Overview;
use tokio::sync::watch;

pub(crate) use assets::asset;
pub(crate) use jobs::StoreView;

use crate::hub::HubState;
use crate::traffic::{BUCKET_MS, unix_ms};

/// How often an open dashboard hears from the hub.
pub const PERIOD: Duration = Duration::from_secs(1);

/// The latest overview (the newest traffic points only), as JSON, for
/// every dashboard watching.
pub struct Publisher {
    tx: watch::Sender<Arc<str>>,
    /// The job store's part, read for every overview, whoever asks.
    store: jobs::StoreReads,
}

impl Default for Publisher {
    fn default() -> Self {
        Self {
            tx: watch::Sender::new(Arc::from("")),
            store: jobs::StoreReads::default(),
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
        let json = overview_json(&hub, Series::Newest).await;
        hub.overview.tx.send_replace(Arc::from(json));
    }
}

/// How much of the traffic series an overview carries.
#[derive(Clone, Copy)]
pub enum Series {
    /// The whole last hour.
    Hour,
    /// The bucket filling now and the one before it, which closed since
    /// the last message.
    Newest,
}

pub async fn overview_json(hub: &HubState, series: Series) -> String {
    serde_json::to_string(&overview(hub, series).await).unwrap_or_default()
}

/// The whole picture now. The job store is read first, on its own: the
/// scheduler's snapshot is taken after, so the fleet and the queue are as
/// fresh as the moment the overview is sent.
pub async fn overview(hub: &HubState, series: Series) -> Overview {
    let store = match &hub.jobs {
        Some(jobs) => Some(
            hub.overview
                .store
                .view(jobs, &hub.tasks, &hub.shutdown)
                .await,
        ),
        None => None,
    };
    let now = unix_ms();
    let since = match series {
        Series::Hour => 0,
        Series::Newest => now.saturating_sub(BUCKET_MS),
    };
    crate::views::overview(
        hub,
        crate::views::Snapshot::with_models(&hub.dispatcher),
        store,
        now,
        since,
    )
}
