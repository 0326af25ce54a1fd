//! One situation in the lab: a fleet, a traffic pattern and the rules the
//! clients and servers follow. The named ones live in
//! [`catalogue`](super::catalogue).

use std::time::Duration;

use super::fleet_spec::FleetSpec;
use super::trace::TraceSpec;

/// How a backend's prompt cache rewards a conversation that comes back.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PrefixCache {
    /// Share of a later turn's service time saved when its prefix is cached
    /// (the prefill it skips).
    pub saving: f64,
    /// Conversations each (backend, model) keeps cached, least recently used
    /// dropped first; a crash empties it.
    pub sessions: usize,
}

#[derive(Clone, Debug)]
pub(crate) struct Scenario {
    pub name: &'static str,
    pub variant: String,
    pub fleet: FleetSpec,
    pub trace: TraceSpec,
    /// How long a request may wait before it starts: the hub's queue
    /// deadline, and the same patience for a client whose request sits in a
    /// backend's own queue (the server then drops it, as LM Studio and
    /// llama.cpp do for a disconnected client).
    pub deadline: Option<Duration>,
    pub cache: PrefixCache,
}

impl Scenario {
    /// The service time of a job of `work` on a lane of `base`, given
    /// whether its prefix was cached there.
    pub fn service(&self, base: Duration, work: f64, hit: bool) -> Duration {
        let saved = if hit { self.cache.saving } else { 0.0 };
        base.mul_f64(work * (1.0 - saved))
    }

    pub fn describe_traffic(&self) -> String {
        let deadline = self.deadline.map_or_else(
            || "no deadline".to_string(),
            |d| format!("queue deadline {:.0} s", d.as_secs_f64()),
        );
        let mut s = format!("{}; {deadline}", self.trace.describe());
        if self.cache.saving > 0.0 {
            s.push_str(&format!(
                "; a cached prefix saves {:.0}% of a later turn, {} conversations cached per (backend, model)",
                100.0 * self.cache.saving,
                self.cache.sessions
            ));
        }
        s
    }
}
