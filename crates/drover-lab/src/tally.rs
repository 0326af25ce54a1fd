//! What happened to each request of a run, and the [`Row`] it sums up to.
//! The engine and the oracle both fill a [`Tally`], so their rows are
//! computed by the same code.

use std::time::Duration;

use super::report::{Percentiles, Row};
use super::trace::{Job, Turn};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Fate {
    /// Not resolved yet.
    Pending,
    Done,
    /// Failed on a backend with no retry left.
    Failed,
    /// Refused by the scheduler.
    Rejected,
    /// Waited past its deadline.
    Expired,
}

#[derive(Clone, Debug)]
pub(crate) struct Record {
    pub arrival: Duration,
    pub fate: Fate,
    /// Start of the attempt that succeeded.
    pub started: Option<Duration>,
    pub done: Option<Duration>,
    /// For a later conversation turn that completed: whether it ran where
    /// its prefix was cached.
    pub affinity_hit: Option<bool>,
}

#[derive(Clone, Debug)]
pub(crate) struct Tally {
    pub records: Vec<Record>,
    /// Slot time spent running attempts, successful or not.
    pub busy: Duration,
    pub retries: u64,
    pub overbooked: u64,
    /// Model loads performed, on a fleet that loads; `None` on one that
    /// holds every model.
    pub loads: Option<u64>,
}

impl Tally {
    pub fn new(jobs: &[Job]) -> Self {
        Tally {
            records: jobs
                .iter()
                .map(|j| Record {
                    arrival: j.arrival,
                    fate: Fate::Pending,
                    started: None,
                    done: None,
                    affinity_hit: None,
                })
                .collect(),
            busy: Duration::ZERO,
            retries: 0,
            overbooked: 0,
            loads: None,
        }
    }

    /// Counts loads, from zero, if the fleet loads models.
    pub fn counting_loads(mut self, loads: bool) -> Self {
        self.loads = loads.then_some(0);
        self
    }

    pub fn count_load(&mut self) {
        if let Some(n) = &mut self.loads {
            *n += 1;
        }
    }

    pub fn resolved(&self, job: usize) -> bool {
        self.records
            .get(job)
            .is_some_and(|r| r.fate != Fate::Pending)
    }

    /// Sets a pending request's fate; a resolved one keeps its first fate.
    /// Returns whether it was pending.
    pub fn resolve(&mut self, job: usize, fate: Fate) -> bool {
        match self.records.get_mut(job) {
            Some(r) if r.fate == Fate::Pending => {
                r.fate = fate;
                true
            }
            _ => false,
        }
    }

    /// A clairvoyant schedule ran `job` (a turn of `turn`, if any) from
    /// `start` to `end`; a later turn always finds its prefix cached there.
    pub fn served(&mut self, job: usize, turn: Option<Turn>, start: Duration, end: Duration) {
        self.busy += end.saturating_sub(start);
        if self.resolve(job, Fate::Done)
            && let Some(r) = self.records.get_mut(job)
        {
            r.started = Some(start);
            r.done = Some(end);
            r.affinity_hit = turn.filter(|t| t.index > 0).map(|_| true);
        }
    }

    pub fn row(&self, name: &str, ideal_per_min: f64, total_slots: u32) -> Row {
        let count = |fate: Fate| self.records.iter().filter(|r| r.fate == fate).count() as u64;
        let done: Vec<&Record> = self
            .records
            .iter()
            .filter(|r| r.fate == Fate::Done)
            .collect();
        let first = self
            .records
            .iter()
            .map(|r| r.arrival)
            .min()
            .unwrap_or_default();
        let last = done.iter().filter_map(|r| r.done).max().unwrap_or(first);
        let makespan = last.saturating_sub(first);
        let minutes = makespan.as_secs_f64() / 60.0;
        let throughput = if minutes > 0.0 {
            done.len() as f64 / minutes
        } else {
            0.0
        };
        let slot_secs = f64::from(total_slots) * makespan.as_secs_f64();
        let hits: Vec<bool> = done.iter().filter_map(|r| r.affinity_hit).collect();
        Row {
            name: name.to_string(),
            requests: self.records.len() as u64,
            completed: Some(done.len() as u64),
            errors: count(Fate::Failed),
            rejected: count(Fate::Rejected),
            expired: count(Fate::Expired),
            lost: count(Fate::Pending),
            retries: self.retries,
            throughput_per_min: throughput,
            of_ideal: if ideal_per_min > 0.0 {
                throughput / ideal_per_min
            } else {
                0.0
            },
            makespan,
            wait: Percentiles::of(
                done.iter()
                    .filter_map(|r| Some(r.started?.saturating_sub(r.arrival)))
                    .collect(),
            ),
            latency: Percentiles::of(
                done.iter()
                    .filter_map(|r| Some(r.done?.saturating_sub(r.arrival)))
                    .collect(),
            ),
            utilisation: if slot_secs > 0.0 {
                self.busy.as_secs_f64() / slot_secs
            } else {
                0.0
            },
            affinity_hit_rate: (!hits.is_empty())
                .then(|| hits.iter().filter(|h| **h).count() as f64 / hits.len() as f64),
            overbooked: self.overbooked,
            loads: self.loads,
        }
    }
}
