//! The lab's fleet: which backend serves which model with how many
//! slots at what speed, and when a backend is down. One description feeds
//! the scheduler's [`ModelSpec`]s, the engine's servers, the ideal bound
//! and the oracle, so they cannot disagree about the hardware.

use std::time::Duration;

use drover_core::{BackendId, ModelName};

use crate::fleet::ModelSpec;

/// One model on one backend.
#[derive(Clone, Debug)]
pub(crate) struct LaneSpec {
    /// Index into [`FleetSpec::models`].
    pub model: usize,
    pub slots: u32,
    /// Service time of a request of work 1.0; a request's own service time
    /// is this times its work.
    pub base: Duration,
}

#[derive(Clone, Debug)]
pub(crate) struct BackendSpec {
    pub id: BackendId,
    pub lanes: Vec<LaneSpec>,
    /// Intervals `[from, to)` during which the server is unreachable.
    pub down: Vec<(Duration, Duration)>,
}

#[derive(Clone, Debug)]
pub(crate) struct FleetSpec {
    pub models: Vec<ModelName>,
    pub backends: Vec<BackendSpec>,
}

impl FleetSpec {
    /// `backends` identical servers, each with every model loaded with the
    /// same slots and speed: seed 002's shape.
    pub fn uniform(backends: u32, models: usize, slots: u32, base: Duration) -> Self {
        FleetSpec {
            models: (0..models)
                .map(|m| ModelName::new(&format!("m{m}")))
                .collect(),
            backends: (1..=backends)
                .map(|id| BackendSpec {
                    id: BackendId(id),
                    lanes: (0..models)
                        .map(|model| LaneSpec { model, slots, base })
                        .collect(),
                    down: Vec::new(),
                })
                .collect(),
        }
    }

    /// One model on servers of different sizes.
    pub fn sized(slots: &[u32], base: Duration) -> Self {
        FleetSpec {
            models: vec![ModelName::new("m0")],
            backends: (1u32..)
                .zip(slots)
                .map(|(id, &slots)| BackendSpec {
                    id: BackendId(id),
                    lanes: vec![LaneSpec {
                        model: 0,
                        slots,
                        base,
                    }],
                    down: Vec::new(),
                })
                .collect(),
        }
    }

    /// What discovery would report for a backend: everything loaded.
    pub fn model_specs(&self, backend: &BackendSpec) -> Vec<ModelSpec> {
        backend
            .lanes
            .iter()
            .map(|l| ModelSpec::loaded(self.models[l.model].as_str(), l.slots))
            .collect()
    }

    pub fn total_slots(&self) -> u32 {
        self.lanes().map(|(_, l)| l.slots).sum()
    }

    pub fn lanes(&self) -> impl Iterator<Item = (&BackendSpec, &LaneSpec)> {
        self.backends
            .iter()
            .flat_map(|b| b.lanes.iter().map(move |l| (b, l)))
    }

    pub fn lanes_for(&self, model: usize) -> impl Iterator<Item = (&BackendSpec, &LaneSpec)> {
        self.lanes().filter(move |(_, l)| l.model == model)
    }

    /// Work (in units of one request of work 1.0) that `model` can get done
    /// per second at `t`, counting only backends that are up.
    pub fn work_rate(&self, model: usize, t: Duration) -> f64 {
        self.lanes_for(model)
            .filter(|(b, _)| !is_down(b, t))
            .map(|(_, l)| f64::from(l.slots) / l.base.as_secs_f64())
            .sum()
    }

    /// Requests of work 1.0 the whole fleet completes per minute with
    /// every slot busy and every backend up: the throughput yardstick.
    pub fn capacity_per_min(&self) -> f64 {
        self.lanes()
            .map(|(_, l)| 60.0 * f64::from(l.slots) / l.base.as_secs_f64())
            .sum()
    }

    /// The fastest service time `model` can get, for a request of work 1.0.
    pub fn fastest_base(&self, model: usize) -> Option<Duration> {
        self.lanes_for(model).map(|(_, l)| l.base).min()
    }

    /// Every instant at which some backend goes down or comes back.
    pub fn outage_edges(&self) -> Vec<Duration> {
        let mut edges: Vec<Duration> = self
            .backends
            .iter()
            .flat_map(|b| b.down.iter().flat_map(|&(from, to)| [from, to]))
            .collect();
        edges.sort();
        edges.dedup();
        edges
    }

    /// One line for a report header.
    pub fn describe(&self) -> String {
        let mut parts: Vec<String> = Vec::new();
        for b in &self.backends {
            let slots: u32 = b.lanes.iter().map(|l| l.slots).sum();
            let mut s = format!(
                "{}: {} model{}, {} slot{}",
                b.id,
                b.lanes.len(),
                plural(b.lanes.len()),
                slots,
                plural(slots as usize)
            );
            for &(from, to) in &b.down {
                s.push_str(&format!(
                    ", down {:.0}-{:.0} s",
                    from.as_secs_f64(),
                    to.as_secs_f64()
                ));
            }
            parts.push(s);
        }
        let mut bases: Vec<Duration> = self.lanes().map(|(_, l)| l.base).collect();
        bases.sort();
        bases.dedup();
        let bases: Vec<String> = bases
            .iter()
            .map(|b| format!("{:.1} s", b.as_secs_f64()))
            .collect();
        format!(
            "{}; {} per request of work 1",
            parts.join("; "),
            bases.join(" or ")
        )
    }
}

pub(crate) fn is_down(backend: &BackendSpec, t: Duration) -> bool {
    backend.down.iter().any(|&(from, to)| from <= t && t < to)
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}
