//! The `ideal` row: bounds that no schedule of this trace on this fleet can
//! beat, whatever the policy.
//!
//! Throughput: `min(offered, capacity)`, per model and summed, because a
//! model's requests can only use that model's slots. `offered` is the
//! trace's own rate (its requests over first to last arrival, so the
//! ideal does not depend on how lucky the draw was); `capacity` is the
//! model's slots over its mean service time in this trace, averaged over
//! the same span, so an outage lowers it. A finite trace ends with a drain,
//! so even a perfect schedule of a trace below capacity scores a little
//! under 100% (about one service time over the trace's length).
//!
//! Makespan: for every model and every arrival instant `t`, the work that
//! arrives at or after `t` cannot be done before `t` nor faster than the
//! model's slots on backends that are up. The bound is the latest such
//! finish, and no earlier than any request's arrival plus its own fastest
//! service, nor than the first arrival plus the `ceil(n / slots)` shortest
//! services (some slot must run that many in turn). It assumes every
//! request is served: under overload with deadlines, policies that drop
//! requests finish sooner.
//!
//! Latency is each request's own service time on the fastest backend (a
//! cached prefix for every later conversation turn); wait is zero while
//! every model's offered load fits its capacity at every moment, and not
//! given otherwise (the `oracle` row shows what can be done there).

use std::time::Duration;

use super::report::{Percentiles, Row};
use super::scenario::Scenario;
use super::trace::Job;

pub(crate) fn row(scenario: &Scenario, jobs: &[Job]) -> Row {
    let fleet = &scenario.fleet;
    let services: Vec<Duration> = jobs
        .iter()
        .map(|j| {
            let base = fleet.fastest_base(j.model).unwrap_or_default();
            scenario.service(base, j.work, later_turn(j))
        })
        .collect();
    let first = jobs.first().map_or(Duration::ZERO, |j| j.arrival);
    let last = jobs.last().map_or(Duration::ZERO, |j| j.arrival);
    let span = last.saturating_sub(first).as_secs_f64();

    let mut end = first;
    let mut throughput = 0.0;
    let mut fits = span > 0.0;
    for model in 0..fleet.models.len() {
        let mine: Vec<usize> = (0..jobs.len())
            .filter(|&i| jobs[i].model == model)
            .collect();
        if mine.is_empty() {
            continue;
        }
        end = end.max(model_bound(scenario, jobs, &services, &mine));
        // Capacity in this trace's requests per minute: work per second the
        // slots do, over the mean work of a request.
        let mean_work =
            mine.iter().map(|&i| work(scenario, &jobs[i])).sum::<f64>() / mine.len() as f64;
        let per_min = |rate: f64| 60.0 * rate / mean_work.max(1e-9);
        let capacity = if span > 0.0 {
            per_min(mean_rate(scenario, model, first, last))
        } else {
            per_min(fleet.work_rate(model, first))
        };
        let offered = if span > 0.0 {
            60.0 * mine.len() as f64 / span
        } else {
            f64::INFINITY
        };
        throughput += offered.min(capacity);
        fits &= offered <= per_min(min_rate(scenario, model));
    }
    let makespan = end.saturating_sub(first);
    let nominal = fleet.capacity_per_min();
    Row {
        name: "ideal".to_string(),
        requests: jobs.len() as u64,
        completed: None,
        errors: 0,
        rejected: 0,
        expired: 0,
        lost: 0,
        retries: 0,
        throughput_per_min: throughput,
        of_ideal: 1.0,
        makespan,
        wait: fits.then(Percentiles::default),
        latency: Percentiles::of(services),
        utilisation: if nominal > 0.0 {
            (throughput / nominal).min(1.0)
        } else {
            0.0
        },
        affinity_hit_rate: jobs.iter().any(later_turn).then_some(1.0),
        overbooked: 0,
        loads: None,
    }
}

/// Requests per minute in the trace from first to last arrival; `None`
/// for a burst.
pub(crate) fn offered_per_min(jobs: &[Job]) -> Option<f64> {
    let first = jobs.first()?.arrival;
    let span = jobs.last()?.arrival.saturating_sub(first).as_secs_f64();
    (span > 0.0).then(|| 60.0 * jobs.len() as f64 / span)
}

fn later_turn(job: &Job) -> bool {
    job.turn.is_some_and(|t| t.index > 0)
}

/// A request's work in units of one request of work 1.0, the unit of
/// `work_rate`.
fn work(scenario: &Scenario, job: &Job) -> f64 {
    scenario
        .service(Duration::from_secs(1), job.work, later_turn(job))
        .as_secs_f64()
}

/// The earliest instant by which every request in `mine` (one model's, in
/// arrival order) can be done.
fn model_bound(
    scenario: &Scenario,
    jobs: &[Job],
    services: &[Duration],
    mine: &[usize],
) -> Duration {
    let Some(&first) = mine.first() else {
        return Duration::ZERO;
    };
    let model = jobs[first].model;
    let mut bound = Duration::ZERO;
    let mut suffix = 0.0;
    for k in (0..mine.len()).rev() {
        let i = mine[k];
        suffix += work(scenario, &jobs[i]);
        bound = bound.max(jobs[i].arrival + services[i]);
        // Only the first request at an instant sees all the work from then.
        if k == 0 || jobs[mine[k - 1]].arrival < jobs[i].arrival {
            bound = bound.max(fluid_finish(scenario, model, jobs[i].arrival, suffix));
        }
    }
    let slots: u32 = scenario.fleet.lanes_for(model).map(|(_, l)| l.slots).sum();
    if slots > 0 {
        let mut shortest: Vec<Duration> = mine.iter().map(|&i| services[i]).collect();
        shortest.sort_unstable();
        let per_slot = mine.len().div_ceil(slots as usize);
        let serial: Duration = shortest.iter().take(per_slot).sum();
        bound = bound.max(jobs[first].arrival + serial);
    }
    bound
}

/// When `work` started at `from` would be done at the model's full rate,
/// which drops while backends are down.
fn fluid_finish(scenario: &Scenario, model: usize, from: Duration, work: f64) -> Duration {
    let fleet = &scenario.fleet;
    let edges = fleet.outage_edges();
    let mut t = from;
    let mut left = work;
    loop {
        let rate = fleet.work_rate(model, t);
        match edges.iter().copied().find(|&e| e > t) {
            Some(next) => {
                let span = (next - t).as_secs_f64();
                if rate > 0.0 && rate * span >= left {
                    return t + Duration::from_secs_f64(left / rate);
                }
                left -= rate * span;
                t = next;
            }
            None if rate > 0.0 => return t + Duration::from_secs_f64(left / rate),
            // Never served again: no finite bound.
            None => return Duration::MAX,
        }
    }
}

/// The model's work rate averaged over `[from, to)`.
fn mean_rate(scenario: &Scenario, model: usize, from: Duration, to: Duration) -> f64 {
    let fleet = &scenario.fleet;
    let mut cuts: Vec<Duration> = vec![from];
    cuts.extend(
        fleet
            .outage_edges()
            .into_iter()
            .filter(|&e| e > from && e < to),
    );
    cuts.push(to);
    let total: f64 = cuts
        .windows(2)
        .map(|w| fleet.work_rate(model, w[0]) * (w[1] - w[0]).as_secs_f64())
        .sum();
    total / (to - from).as_secs_f64()
}

/// The model's lowest work rate at any moment.
fn min_rate(scenario: &Scenario, model: usize) -> f64 {
    let fleet = &scenario.fleet;
    std::iter::once(Duration::ZERO)
        .chain(fleet.outage_edges())
        .map(|t| fleet.work_rate(model, t))
        .fold(f64::INFINITY, f64::min)
}
