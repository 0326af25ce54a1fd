//! Servers that hold only some of their models at once. Under drover the
//! hub's model manager decides every load and eviction and the server
//! carries them out; under the baselines the hub sends requests to any
//! server that lists the model and the server loads on its own, as Ollama,
//! LM Studio's JIT loading and llama.cpp's router do: it evicts its least
//! recently used idle model to make room, and when every model it holds is
//! busy, the request waits until one is idle.

use std::time::Duration;

use drover_core::{BackendId, ModelName};

use super::Engine;
use crate::events::Event;
use drover_scheduler::LoadOrder;

impl Engine<'_> {
    /// Drover decided a load: unload what it evicts (idle by the manager's
    /// rules), then load.
    pub(super) fn load_ordered(&mut self, order: &LoadOrder, now: Duration) {
        for (on, model) in &order.evict {
            self.unload_ordered(*on, model, now);
        }
        let Some(lane) = self.lane_named(order.backend, &order.model) else {
            debug_assert!(false, "a load of a model the backend lacks: {order:?}");
            return;
        };
        self.begin_load(lane, now);
    }

    /// Drover decided an unload.
    pub(super) fn unload_ordered(&mut self, backend: BackendId, model: &ModelName, now: Duration) {
        if let Some(lane) = self.lane_named(backend, model) {
            debug_assert!(
                self.lanes[lane].running.is_empty(),
                "evicted a model with requests running"
            );
            self.evict(lane);
        }
        self.scheduler.unload_finished(backend, model, Ok(()), now);
    }

    /// A request reached a server that does not hold its model: the server
    /// loads it on its own, making room by evicting its least recently used
    /// idle model, or waits until one is idle.
    pub(super) fn demand_load(&mut self, lane: usize, now: Duration) {
        let l = &self.lanes[lane];
        if l.loaded || l.loading {
            return;
        }
        let server = l.server;
        if self.server_room(server) {
            self.begin_load(lane, now);
            return;
        }
        let victim = self.servers[server]
            .lanes
            .iter()
            .copied()
            .filter(|&v| {
                let l = &self.lanes[v];
                l.loaded && l.running.is_empty() && l.queue.is_empty()
            })
            .min_by_key(|&v| self.lanes[v].last_used);
        match victim {
            Some(v) => {
                self.evict(v);
                self.begin_load(lane, now);
            }
            None => {
                let waiting = &mut self.servers[server].waiting_loads;
                if !waiting.contains(&lane) {
                    waiting.push_back(lane);
                }
            }
        }
    }

    /// Something on the server went idle: loads that waited for room may
    /// go ahead, oldest first.
    pub(super) fn retry_waiting_loads(&mut self, server: usize, now: Duration) {
        let waiting: Vec<usize> = self.servers[server].waiting_loads.drain(..).collect();
        for lane in waiting {
            // A lane whose requests all left needs no load any more.
            if !self.lanes[lane].queue.is_empty() {
                self.demand_load(lane, now);
            }
        }
    }

    /// A load ends: the model serves; what waited inside the server runs.
    pub(super) fn loaded(&mut self, lane: usize, now: Duration) {
        let l = &mut self.lanes[lane];
        l.loading = false;
        l.loaded = true;
        l.last_used = now;
        let took = l.load;
        if self.manages {
            let (backend, model) = self.lane_names(lane);
            self.scheduler.load_finished(backend, &model, Ok(took), now);
        }
        self.start_queued(lane, now);
    }

    fn begin_load(&mut self, lane: usize, now: Duration) {
        let l = &mut self.lanes[lane];
        l.loading = true;
        let at = now + l.load;
        self.tally.count_load();
        self.events.push(at, Event::Loaded(lane));
    }

    fn evict(&mut self, lane: usize) {
        let l = &mut self.lanes[lane];
        l.loaded = false;
        l.cache.clear();
    }

    /// Whether the server holds (or is loading) fewer models than it can.
    fn server_room(&self, server: usize) -> bool {
        let s = &self.servers[server];
        let held = s
            .lanes
            .iter()
            .filter(|&&l| self.lanes[l].loaded || self.lanes[l].loading)
            .count();
        s.max_loaded.is_none_or(|max| held < max as usize)
    }

    fn lane_named(&self, backend: BackendId, model: &ModelName) -> Option<usize> {
        let server = self.servers.iter().position(|s| s.id == backend)?;
        let m = self.scenario.fleet.models.iter().position(|n| n == model)?;
        self.lane_of[server].get(m).copied().flatten()
    }
}
