//! Random operation sequences against the scheduler's invariants: slots are
//! never exceeded, and every request is accounted for exactly once.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use drover_core::{BackendId, ClientKey, ModelName, Priority, RequestId};
use drover_scheduler::{
    Admission, Affinity, Decision, ModelSpec, Outcome, Request, Scheduler, SchedulerConfig,
};

/// A seeded generator, so every run is reproducible.
struct Rng(drover_core::mix::SplitMix64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0.below(n)
    }
}

const MODELS: [&str; 3] = ["a", "b", "c"];

#[derive(Debug, PartialEq, Eq, Clone, Copy)]
enum Fate {
    Waiting,
    Running(BackendId, usize),
    Done,
}

#[test]
fn random_operations_never_overload_or_lose_a_request() {
    for seed in 0..200u64 {
        run(seed);
    }
}

fn run(seed: u64) {
    let mut rng = Rng(drover_core::mix::SplitMix64::new(seed));
    let models = MODELS;
    let cfg = SchedulerConfig {
        max_queue: 20,
        ..SchedulerConfig::default()
    };
    let mut s = Scheduler::new(cfg);
    let mut slots: HashMap<(u32, usize), u32> = HashMap::new();
    let mut fleet_specs = |rng: &mut Rng, s: &mut Scheduler, b: u32| {
        let mut specs = Vec::new();
        for (mi, m) in models.iter().enumerate() {
            if rng.below(3) > 0 {
                let n = 1 + rng.below(3) as u32;
                slots.insert((b, mi), n);
                specs.push(ModelSpec {
                    name: ModelName::new(m),
                    loaded: true,
                    slots: n,
                });
            } else {
                slots.remove(&(b, mi));
            }
        }
        s.upsert_backend(BackendId(b), specs);
        slots.clone()
    };
    let mut current_slots = HashMap::new();
    for b in 1..=3 {
        current_slots = fleet_specs(&mut rng, &mut s, b);
    }
    let mut fate: HashMap<u64, Fate> = HashMap::new();
    let mut running: HashMap<(u32, usize), u32> = HashMap::new();
    let mut next_id = 0u64;
    let mut now = Duration::ZERO;
    let mut seen_done: HashSet<u64> = HashSet::new();

    for _step in 0..400 {
        now += Duration::from_millis(rng.below(50));
        match rng.below(10) {
            0..=4 => {
                next_id += 1;
                let r = Request {
                    id: RequestId(next_id),
                    model: ModelName::new(models[rng.below(3) as usize]),
                    priority: Priority::new(rng.below(101) as u8).unwrap(),
                    client: ClientKey(rng.below(4)),
                    arrival: now,
                    deadline: (rng.below(2) == 0)
                        .then(|| now + Duration::from_millis(rng.below(500))),
                    affinity: Affinity {
                        lookup: vec![rng.below(8)],
                        record: vec![rng.below(8)],
                    },
                    exclude: Vec::new(),
                    user: 0,
                    size: 0,
                };
                let mi = models.iter().position(|m| *m == r.model.as_str()).unwrap();
                match s.submit(r, now) {
                    Ok(Admission::Dispatched(d)) => {
                        fate.insert(next_id, Fate::Waiting);
                        let _ = mi;
                        apply(
                            seed,
                            &Decision::Dispatch(d),
                            &mut fate,
                            &mut running,
                            &mut seen_done,
                            &current_slots,
                        );
                    }
                    Ok(Admission::Queued) => {
                        fate.insert(next_id, Fate::Waiting);
                    }
                    Err(_) => {
                        fate.insert(next_id, Fate::Done);
                    }
                }
            }
            5 | 6 => {
                // Finish a random running request.
                let ids: Vec<u64> = fate
                    .iter()
                    .filter(|(_, f)| matches!(f, Fate::Running(..)))
                    .map(|(id, _)| *id)
                    .collect();
                if let Some(&id) = ids.get(rng.below(ids.len().max(1) as u64) as usize)
                    && let Some(Fate::Running(b, mi)) = fate.get(&id).copied()
                {
                    let outcome = match rng.below(3) {
                        0 => Outcome::Failure,
                        1 => Outcome::Neutral,
                        _ => Outcome::Success {
                            service: Duration::from_millis(10),
                        },
                    };
                    s.finish(b, &ModelName::new(models[mi]), outcome, now);
                    *running.get_mut(&(b.0, mi)).unwrap() -= 1;
                    fate.insert(id, Fate::Done);
                }
            }
            7 => {
                let ids: Vec<u64> = fate
                    .iter()
                    .filter(|(_, f)| **f == Fate::Waiting)
                    .map(|(id, _)| *id)
                    .collect();
                if let Some(&id) = ids.first() {
                    assert!(s.cancel(RequestId(id)));
                    fate.insert(id, Fate::Done);
                }
            }
            8 => {
                let b = 1 + rng.below(3) as u32;
                current_slots = fleet_specs(&mut rng, &mut s, b);
            }
            _ => {
                let b = 1 + rng.below(3) as u32;
                s.set_draining(BackendId(b), rng.below(2) == 0);
            }
        }
        for d in s.poll(now) {
            apply(
                seed,
                &d,
                &mut fate,
                &mut running,
                &mut seen_done,
                &current_slots,
            );
        }
        // The scheduler's busy counts match this test's own ledger.
        for view in s.fleet().views() {
            for m in view.models {
                let mi = MODELS.iter().position(|x| *x == m.name.as_str()).unwrap();
                let ours = running.get(&(view.id.0, mi)).copied().unwrap_or(0);
                assert_eq!(m.busy, ours, "seed {seed}: {:?} {}", view.id, m.name);
            }
        }
        // Accounting: the scheduler's queue holds exactly the waiting ones.
        let waiting = fate.values().filter(|f| **f == Fate::Waiting).count();
        assert_eq!(s.queue().len(), waiting, "seed {seed}");
        // Work conservation: nothing waits while a slot for its model is free
        // (no retries here, so no exclusions).
        for view in s.fleet().views() {
            if view.draining || !matches!(view.breaker, drover_scheduler::BreakerState::Closed) {
                continue;
            }
            for m in view.models {
                if m.loaded && m.busy < m.slots {
                    assert_eq!(
                        s.queue().len_for(m.name.as_str()),
                        0,
                        "seed {seed}: {} waits while {:?} has a free slot",
                        m.name,
                        view.id
                    );
                }
            }
        }
    }
}

/// Carries out one decision on the test's ledger, checking that a dispatch
/// only ever takes a slot that is free under the slots listed right now.
fn apply(
    seed: u64,
    d: &Decision,
    fate: &mut HashMap<u64, Fate>,
    running: &mut HashMap<(u32, usize), u32>,
    seen_done: &mut HashSet<u64>,
    slots: &HashMap<(u32, usize), u32>,
) {
    match d {
        Decision::Dispatch(d) => {
            let mi = MODELS.iter().position(|m| *m == d.model.as_str()).unwrap();
            assert_eq!(fate.get(&d.request.0), Some(&Fate::Waiting), "seed {seed}");
            let busy = running.entry((d.backend.0, mi)).or_default();
            let limit = slots.get(&(d.backend.0, mi)).copied().unwrap_or(0);
            assert!(
                *busy < limit,
                "seed {seed}: dispatch onto {:?}/{} with {busy} of {limit} busy",
                d.backend,
                d.model
            );
            *busy += 1;
            fate.insert(d.request.0, Fate::Running(d.backend, mi));
        }
        Decision::Expired(id) | Decision::Unroutable(id) => {
            assert_eq!(fate.get(&id.0), Some(&Fate::Waiting), "seed {seed}");
            fate.insert(id.0, Fate::Done);
            assert!(seen_done.insert(id.0));
        }
    }
}
