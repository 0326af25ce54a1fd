//! Heartbeats kept in memory and written to the store together: a
//! heartbeat is a few bytes of news, and a write (an fsync on SQLite) each
//! cost a thousand agents' hub most of its CPU. Every flush (half a
//! heartbeat, at most a second) writes what came since in one
//! transaction, so the store's `last_seen_ms` lags by no more than that,
//! far inside the three heartbeats a node has before it is down. A flush
//! that fails keeps its beats for the next, behind any newer ones.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use drover_store::NodeBeat;

use crate::hub::HubState;

#[derive(Default)]
pub struct Beats {
    pending: Mutex<HashMap<String, NodeBeat>>,
}

impl Beats {
    /// A node's heartbeat, written at the next flush (a newer one of the
    /// same node replaces it).
    pub fn record(&self, beat: NodeBeat) {
        drover_core::sync::lock(&self.pending).insert(beat.id.clone(), beat);
    }

    fn take(&self) -> Vec<NodeBeat> {
        drover_core::sync::lock(&self.pending)
            .drain()
            .map(|(_, b)| b)
            .collect()
    }

    /// Puts back beats a flush could not write, unless newer ones came.
    fn restore(&self, beats: Vec<NodeBeat>) {
        let mut pending = drover_core::sync::lock(&self.pending);
        for beat in beats {
            pending.entry(beat.id.clone()).or_insert(beat);
        }
    }
}

/// How often heartbeats are written: half a heartbeat, at most a second.
pub fn flush_every(heartbeat: Duration) -> Duration {
    (heartbeat / 2).clamp(Duration::from_millis(5), Duration::from_secs(1))
}

async fn flush(hub: &HubState) {
    let beats = hub.node_beats.take();
    if beats.is_empty() {
        return;
    }
    let Ok(jobs) = crate::routes::store_of(hub) else {
        return;
    };
    if let Err(e) = jobs.store.node_heartbeats(&beats).await {
        tracing::warn!(error = %e, beats = beats.len(), "cannot store nodes' heartbeats; trying again at the next flush");
        hub.node_beats.restore(beats);
    }
}

/// Flushes until the hub stops, and once more then.
pub async fn run_flusher(hub: Arc<HubState>) {
    let mut tick = tokio::time::interval(flush_every(hub.config.nodes.heartbeat));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = hub.shutdown.cancelled() => break,
            _ = tick.tick() => flush(&hub).await,
        }
    }
    flush(&hub).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn beat(id: &str, at: i64) -> NodeBeat {
        NodeBeat {
            id: id.into(),
            version: "v".into(),
            facts: "{}".into(),
            services: "[]".into(),
            last_seen_ms: at,
        }
    }

    #[test]
    fn a_failed_flush_gives_back_its_beats_behind_newer_ones() {
        let beats = Beats::default();
        beats.record(beat("a", 1));
        beats.record(beat("b", 1));
        let taken = beats.take();
        assert_eq!(taken.len(), 2);
        beats.record(beat("a", 2));
        beats.restore(taken);
        let mut again = beats.take();
        again.sort_by(|x, y| x.id.cmp(&y.id));
        assert_eq!(again, [beat("a", 2), beat("b", 1)]);
        assert_eq!(flush_every(Duration::from_secs(10)), Duration::from_secs(1));
        assert_eq!(
            flush_every(Duration::from_millis(100)),
            Duration::from_millis(50)
        );
    }
}
