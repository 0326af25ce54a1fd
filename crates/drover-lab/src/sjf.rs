//! The `sjf-oracle` row: a clairvoyant shortest-job-first schedule of the
//! same trace. Like `fcfs-oracle` it knows every arrival, length and outage
//! in advance, but whenever a slot frees it starts the shortest request of
//! its model that has arrived, not the oldest. It does not preempt. For mean
//! and median waits it beats any first-come-first-served schedule (drover's
//! included) when requests differ in length, so it shows headroom that the
//! FCFS oracle, equal to drover's row on symmetric fleets by construction,
//! cannot. It ignores priorities and fairness, which drover must not.

use std::collections::BTreeSet;

use super::oracle::{earliest_up, slots};
use super::scenario::Scenario;
use super::tally::{Fate, Tally};
use super::trace::Job;

pub(crate) fn schedule(scenario: &Scenario, jobs: &[Job]) -> Tally {
    let mut slots = slots(scenario);
    let mut tally = Tally::new(jobs);
    let models = scenario.fleet.models.len();
    let served: Vec<bool> = (0..models)
        .map(|m| slots.iter().any(|s| s.model == m))
        .collect();
    let mut order: Vec<usize> = (0..jobs.len()).collect();
    order.sort_by_key(|&i| (jobs[i].arrival, i));
    // Per model: arrived, waiting jobs by (work, index); and the next
    // arrival not yet admitted.
    let mut ready: Vec<BTreeSet<(u64, usize)>> = vec![BTreeSet::new(); models];
    let mut next = 0;
    let mut open: Vec<bool> = vec![true; slots.len()];
    for &i in &order {
        if !served.get(jobs[i].model).copied().unwrap_or(false) {
            tally.resolve(i, Fate::Failed);
        }
    }
    while let Some(k) = (0..slots.len())
        .filter(|&k| open[k])
        .min_by_key(|&k| (slots[k].free, k))
    {
        let now = slots[k].free;
        while let Some(&i) = order.get(next) {
            if jobs[i].arrival > now {
                break;
            }
            if served.get(jobs[i].model).copied().unwrap_or(false) {
                ready[jobs[i].model].insert((work_key(jobs[i].work), i));
            }
            next += 1;
        }
        let model = slots[k].model;
        let Some((key, i)) = ready[model].iter().next().copied() else {
            // Nothing of this slot's model waits: jump to the next arrival
            // of it, or close the slot when none is left.
            match order[next..].iter().find(|&&i| jobs[i].model == model) {
                Some(&i) => slots[k].free = jobs[i].arrival,
                None => open[k] = false,
            }
            continue;
        };
        ready[model].remove(&(key, i));
        let job = &jobs[i];
        let hit = job.turn.is_some_and(|t| t.index > 0);
        let service = scenario.service(slots[k].base, job.work, hit);
        let start = earliest_up(&slots[k].down, now.max(job.arrival), service);
        if scenario.deadline.is_some_and(|d| start >= job.arrival + d) {
            tally.resolve(i, Fate::Expired);
            continue;
        }
        let end = start + service;
        slots[k].free = end;
        tally.served(i, job.turn, start, end);
    }
    // Whatever still waits had no slot of its model left open.
    for set in ready {
        for (_, i) in set {
            tally.resolve(i, Fate::Expired);
        }
    }
    tally
}

/// A request's work as an ordering key (work is positive and finite).
fn work_key(work: f64) -> u64 {
    (work.max(0.0) * 1e9) as u64
}
