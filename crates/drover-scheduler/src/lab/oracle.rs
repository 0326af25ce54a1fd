//! The `fcfs-oracle` row: a clairvoyant first-come-first-served schedule of
//! the same trace. It knows every arrival, every request's length and every outage in
//! advance. It takes requests in arrival order and puts each on the slot of
//! its model that would finish it first, never on one that will be down
//! while it runs; a request that could not start before its deadline is
//! dropped without spending a slot. Every later conversation turn finds its
//! prefix cached.
//!
//! It is a strong yardstick, not a proof of optimality: it is what a
//! first-come-first-served hub with perfect knowledge achieves.

use std::time::Duration;

use super::scenario::Scenario;
use super::tally::{Fate, Tally};
use super::trace::Job;

struct Slot {
    model: usize,
    base: Duration,
    down: Vec<(Duration, Duration)>,
    free: Duration,
}

pub(crate) fn schedule(scenario: &Scenario, jobs: &[Job]) -> Tally {
    let mut slots: Vec<Slot> = Vec::new();
    for (b, l) in scenario.fleet.lanes() {
        for _ in 0..l.slots {
            slots.push(Slot {
                model: l.model,
                base: l.base,
                down: b.down.clone(),
                free: Duration::ZERO,
            });
        }
    }
    let mut tally = Tally::new(jobs);
    for (i, job) in jobs.iter().enumerate() {
        let hit = job.turn.is_some_and(|t| t.index > 0);
        let best = slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.model == job.model)
            .map(|(k, s)| {
                let service = scenario.service(s.base, job.work, hit);
                let start = earliest_up(&s.down, job.arrival.max(s.free), service);
                (start + service, start, service, k)
            })
            .min();
        let Some((end, start, service, k)) = best else {
            tally.resolve(i, Fate::Failed);
            continue;
        };
        let late = scenario.deadline.is_some_and(|d| start >= job.arrival + d);
        if late {
            tally.resolve(i, Fate::Expired);
            continue;
        }
        slots[k].free = end;
        tally.busy += service;
        tally.resolve(i, Fate::Done);
        if let Some(r) = tally.records.get_mut(i) {
            r.started = Some(start);
            r.done = Some(end);
            r.affinity_hit = job.turn.filter(|t| t.index > 0).map(|_| true);
        }
    }
    tally
}

/// The earliest start at or after `t` such that `[start, start + service)`
/// misses every down interval.
pub(crate) fn earliest_up(
    down: &[(Duration, Duration)],
    mut t: Duration,
    service: Duration,
) -> Duration {
    loop {
        let clash = down
            .iter()
            .find(|&&(from, to)| t < to && t + service > from);
        match clash {
            Some(&(_, to)) => t = to,
            None => return t,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_that_would_be_cut_by_an_outage_waits_for_its_end() {
        let s = Duration::from_secs;
        let down = [(s(10), s(20))];
        assert_eq!(earliest_up(&down, s(0), s(3)), s(0));
        assert_eq!(earliest_up(&down, s(8), s(3)), s(20));
        assert_eq!(earliest_up(&down, s(12), s(3)), s(20));
        assert_eq!(earliest_up(&down, s(20), s(3)), s(20));
    }
}
