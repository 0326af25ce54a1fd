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

/// One slot of the fleet, for the clairvoyant schedules: its lane's model
/// and speed, its backend's outages, and when it is next free.
pub(crate) struct Slot {
    pub model: usize,
    pub base: Duration,
    pub down: Vec<(Duration, Duration)>,
    pub free: Duration,
}

/// Every slot of every lane, free from the start.
pub(crate) fn slots(scenario: &Scenario) -> Vec<Slot> {
    scenario
        .fleet
        .lanes()
        .flat_map(|(b, l)| {
            (0..l.slots).map(move |_| Slot {
                model: l.model,
                base: l.base,
                down: b.down.clone(),
                free: Duration::ZERO,
            })
        })
        .collect()
}

pub(crate) fn schedule(scenario: &Scenario, jobs: &[Job]) -> Tally {
    let mut slots = slots(scenario);
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
                (start + service, start, k)
            })
            .min();
        let Some((end, start, k)) = best else {
            tally.resolve(i, Fate::Failed);
            continue;
        };
        let late = scenario.deadline.is_some_and(|d| start >= job.arrival + d);
        if late {
            tally.resolve(i, Fate::Expired);
            continue;
        }
        slots[k].free = end;
        tally.served(i, job.turn, start, end);
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
