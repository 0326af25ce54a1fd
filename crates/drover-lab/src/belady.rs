//! The `belady-oracle` and `belady-batched` rows, for fleets whose
//! backends cannot hold every model at once: clairvoyant schedules that
//! know every arrival, every request's length and which model will be asked
//! for when. They take requests in arrival order.
//!
//! - `belady-oracle` puts each where it would finish first: on a backend
//!   that holds its model (the slot that frees first), or on one that loads
//!   it at once, evicting the held model needed furthest in the future
//!   (Belady's rule; a model another backend also holds counts as needed
//!   last) once that model's requests there are done.
//! - `belady-batched` serves from a held copy whenever one can start the
//!   request in time, and otherwise loads as late as the request's deadline
//!   allows: the evicted model serves until then, and every request for the
//!   loaded one that arrives meanwhile shares the load.
//!
//! A request that could not start by its deadline is dropped without a
//! load. Yardsticks, not proofs of optimality: Belady's rule is optimal for
//! a cache with free misses; here a load takes time and a model may be
//! copied on several backends.

use std::time::Duration;

use super::scenario::Scenario;
use super::tally::{Fate, Tally};
use super::trace::Job;

struct Lane {
    model: usize,
    base: Duration,
    load: Duration,
    /// When each slot is next free (a lane being loaded is free at the end
    /// of its load).
    free: Vec<Duration>,
}

struct Backend {
    lanes: Vec<Lane>,
    /// Indices into `lanes` of the models held (or being loaded).
    held: Vec<usize>,
    /// Per lane: when it is to be evicted, once chosen as a victim. It
    /// serves only requests that end by then.
    until: Vec<Option<Duration>>,
    max_loaded: usize,
}

impl Backend {
    /// Held models that are not on their way out.
    fn staying(&self) -> usize {
        self.held
            .iter()
            .filter(|&&l| self.until[l].is_none())
            .count()
    }
}

/// When a load that has to evict happens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Loads {
    /// As soon as the request arrives (and the victim is idle).
    Eager,
    /// As late as the request's deadline allows.
    Batched,
}

/// Where a request would run, and what that costs.
#[derive(Clone, Copy, PartialEq, PartialOrd)]
struct Placement {
    end: Duration,
    start: Duration,
    backend: usize,
    lane: usize,
    /// The load it needs: when it starts, and the lane it evicts.
    load: Option<(Duration, Option<usize>)>,
}

pub(crate) fn schedule(scenario: &Scenario, jobs: &[Job], mode: Loads) -> Tally {
    let mut backends: Vec<Backend> = scenario
        .fleet
        .backends
        .iter()
        .map(|b| Backend {
            lanes: b
                .lanes
                .iter()
                .map(|l| Lane {
                    model: l.model,
                    base: l.base,
                    load: l.load,
                    free: vec![Duration::ZERO; l.slots as usize],
                })
                .collect(),
            held: b
                .lanes
                .iter()
                .enumerate()
                .filter(|(_, l)| l.resident || b.max_loaded.is_none())
                .map(|(i, _)| i)
                .collect(),
            until: vec![None; b.lanes.len()],
            max_loaded: b.max_loaded.map_or(usize::MAX, |m| m as usize),
        })
        .collect();
    let mut order: Vec<usize> = (0..jobs.len()).collect();
    order.sort_by_key(|&i| (jobs[i].arrival, i));
    // For each model, the arrival times of its requests in order, and how
    // many of them have been scheduled: the next use is the first after.
    let mut uses: Vec<Vec<Duration>> = vec![Vec::new(); scenario.fleet.models.len()];
    for &i in &order {
        if let Some(u) = uses.get_mut(jobs[i].model) {
            u.push(jobs[i].arrival);
        }
    }
    let mut seen = vec![0usize; uses.len()];
    let mut tally = Tally::new(jobs).counting_loads(true);
    for i in order {
        let job = &jobs[i];
        if let Some(n) = seen.get_mut(job.model) {
            *n += 1;
        }
        // Victims whose time has come leave.
        for b in &mut backends {
            let gone: Vec<usize> = b
                .held
                .iter()
                .copied()
                .filter(|&l| b.until[l].is_some_and(|t| t <= job.arrival))
                .collect();
            for l in gone {
                b.held.retain(|&h| h != l);
                b.until[l] = None;
            }
        }
        let deadline = scenario.deadline.map(|d| job.arrival + d);
        let next_use = |model: usize| -> Duration {
            uses.get(model)
                .and_then(|u| u.get(seen[model]))
                .copied()
                .unwrap_or(Duration::MAX)
        };
        let hit = job.turn.is_some_and(|t| t.index > 0);
        let held_models: Vec<Vec<usize>> = backends
            .iter()
            .map(|b| b.held.iter().map(|&l| b.lanes[l].model).collect())
            .collect();
        let mut best: Option<Placement> = None;
        for (b, backend) in backends.iter().enumerate() {
            let Some(lane) = backend.lanes.iter().position(|l| l.model == job.model) else {
                continue;
            };
            let l = &backend.lanes[lane];
            let service = scenario.service(l.base, job.work, hit);
            let first_free = l.free.iter().copied().min().unwrap_or(Duration::MAX);
            let (start, load) = if backend.held.contains(&lane) {
                let start = job.arrival.max(first_free);
                // A victim serves only what ends before it goes.
                if backend.until[lane].is_some_and(|until| start + service > until) {
                    continue;
                }
                (start, None)
            } else if backend.staying() < backend.max_loaded
                && backend.held.len() < backend.max_loaded
            {
                let ready = job.arrival + l.load;
                (ready.max(first_free), Some((job.arrival, None)))
            } else {
                // Belady: evict the held model needed furthest ahead, once
                // its requests here are done; a model another backend also
                // holds is needed here last of all.
                let elsewhere = |model: usize| {
                    held_models
                        .iter()
                        .enumerate()
                        .any(|(o, models)| o != b && models.contains(&model))
                };
                let victim = backend
                    .held
                    .iter()
                    .copied()
                    .filter(|&v| backend.until[v].is_none())
                    .max_by_key(|&v| {
                        let model = backend.lanes[v].model;
                        (elsewhere(model), next_use(model), v)
                    });
                // Every model there is on its way out already: the load
                // takes the place of the first to go.
                let idle = match victim {
                    Some(v) => backend.lanes[v].free.iter().copied().max(),
                    None => backend.held.iter().filter_map(|&v| backend.until[v]).min(),
                }
                .unwrap_or_default();
                let latest = match (mode, deadline) {
                    (Loads::Batched, Some(d)) => d
                        .saturating_sub(l.load + Duration::from_secs(1))
                        .max(job.arrival),
                    _ => job.arrival,
                };
                let t0 = latest.max(idle);
                ((t0 + l.load).max(first_free), Some((t0, victim)))
            };
            let option = Placement {
                end: start + service,
                start,
                backend: b,
                lane,
                load,
            };
            if best.is_none_or(|o| better(mode, &option, &o)) {
                best = Some(option);
            }
        }
        // No placement this plan can start in time.
        let Some(o) = best else {
            tally.resolve(i, Fate::Expired);
            continue;
        };
        if scenario
            .deadline
            .is_some_and(|d| o.start >= job.arrival + d)
        {
            tally.resolve(i, Fate::Expired);
            continue;
        }
        let backend = &mut backends[o.backend];
        if let Some((t0, victim)) = o.load {
            if let Some(v) = victim {
                if t0 <= job.arrival {
                    backend.held.retain(|&h| h != v);
                } else {
                    backend.until[v] = Some(t0);
                }
            }
            backend.held.push(o.lane);
            tally.count_load();
            let ready = t0 + backend.lanes[o.lane].load;
            for f in &mut backend.lanes[o.lane].free {
                *f = (*f).max(ready);
            }
        }
        let l = &mut backend.lanes[o.lane];
        if let Some(slot) = l.free.iter_mut().min() {
            *slot = o.end;
        }
        tally.served(i, job.turn, o.start, o.end);
    }
    tally
}

/// Whether placement `a` beats `b`: the one that finishes first; batched,
/// one that needs no load beats one that does.
fn better(mode: Loads, a: &Placement, b: &Placement) -> bool {
    match mode {
        Loads::Eager => a < b,
        Loads::Batched => (a.load.is_some(), a) < (b.load.is_some(), b),
    }
}
