//! The lab's fleet: which backend serves which model with how many
//! slots at what speed, and when a backend is down. One description feeds
//! the scheduler's [`ModelSpec`]s, the engine's servers, the ideal bound
//! and the oracle, so they cannot disagree about the hardware.

use std::time::Duration;

use drover_core::{BackendId, ModelName};

use drover_scheduler::{BackendStatus, ModelSpec};

/// One model on one backend.
#[derive(Clone, Debug)]
pub(crate) struct LaneSpec {
    /// Index into [`FleetSpec::models`].
    pub model: usize,
    pub slots: u32,
    /// Service time of a request of work 1.0; a request's own service time
    /// is this times its work.
    pub base: Duration,
    /// Loaded when the run starts. Always, on a backend without
    /// `max_loaded`.
    pub resident: bool,
    /// How long loading it takes.
    pub load: Duration,
}

impl LaneSpec {
    /// A lane that is loaded from the start and never unloaded.
    pub fn resident(model: usize, slots: u32, base: Duration) -> Self {
        LaneSpec {
            model,
            slots,
            base,
            resident: true,
            load: Duration::ZERO,
        }
    }
}

#[derive(Clone, Debug)]
pub(crate) struct BackendSpec {
    pub id: BackendId,
    pub lanes: Vec<LaneSpec>,
    /// Intervals `[from, to)` during which the server is unreachable.
    pub down: Vec<(Duration, Duration)>,
    /// Models it can hold loaded at once; `None`: every lane, always. With
    /// a limit it loads and unloads, and a request for a model it does not
    /// hold waits for a load.
    pub max_loaded: Option<u32>,
}

impl BackendSpec {
    /// What the server says of itself to a hub under `policy`: drover's
    /// model manager loads and unloads (it knows the limit); the baselines
    /// leave that to the server, which loads on demand.
    pub fn status(&self, manages: bool) -> BackendStatus {
        BackendStatus {
            can_load: manages && self.max_loaded.is_some(),
            can_unload: manages && self.max_loaded.is_some(),
            max_loaded: self.max_loaded.filter(|_| manages),
            ..BackendStatus::default()
        }
    }

    /// The lanes it can have loaded at once: the `max_loaded` with the most
    /// capacity, or all.
    pub fn concurrent_lanes(&self) -> Vec<&LaneSpec> {
        let mut lanes: Vec<&LaneSpec> = self.lanes.iter().collect();
        lanes.sort_by(|a, b| rate(b).total_cmp(&rate(a)));
        lanes.truncate(self.max_loaded.map_or(usize::MAX, |m| m as usize));
        lanes
    }
}

/// Requests of work 1.0 a lane completes per second with every slot busy.
fn rate(l: &LaneSpec) -> f64 {
    f64::from(l.slots) / l.base.as_secs_f64()
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
                        .map(|model| LaneSpec::resident(model, slots, base))
                        .collect(),
                    down: Vec::new(),
                    max_loaded: None,
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
                    lanes: vec![LaneSpec::resident(0, slots, base)],
                    down: Vec::new(),
                    max_loaded: None,
                })
                .collect(),
        }
    }

    /// What discovery would report for a backend at the start. A hub that
    /// does not manage loads (the baselines) takes every model listed as
    /// one it may send work to, and the server loads on demand.
    pub fn model_specs(&self, backend: &BackendSpec, manages: bool) -> Vec<ModelSpec> {
        backend
            .lanes
            .iter()
            .map(|l| {
                let name = self.models[l.model].as_str();
                if l.resident || !manages {
                    ModelSpec::loaded(name, l.slots)
                } else {
                    ModelSpec::unloaded(name, l.slots)
                }
            })
            .collect()
    }

    /// Whether some backend loads and unloads models.
    pub fn loads(&self) -> bool {
        self.backends.iter().any(|b| b.max_loaded.is_some())
    }

    /// Slots that can be busy at once (on backends that hold only some of
    /// their models, those of the largest models they can hold together).
    pub fn total_slots(&self) -> u32 {
        self.backends
            .iter()
            .flat_map(|b| b.concurrent_lanes())
            .map(|l| l.slots)
            .sum()
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
        self.backends
            .iter()
            .flat_map(|b| b.concurrent_lanes())
            .map(|l| 60.0 * rate(l))
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
            if let Some(max) = b.max_loaded {
                let load = b.lanes.iter().map(|l| l.load).max().unwrap_or_default();
                s.push_str(&format!(
                    ", holds {max} at once, a load takes {:.0} s",
                    load.as_secs_f64()
                ));
            }
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
