//! The policy lab: the real [`Scheduler`] driven in virtual time, its
//! policies compared on the same seeded traffic (`drover lab`).
//!
//! [`run`] takes a scenario name from [`scenario_names`], a seed and a
//! scale, and returns one [`Report`] per variant of the scenario: a row per
//! [`Policy`], then `fcfs-oracle` and `sjf-oracle` (clairvoyant
//! first-come-first-served and shortest-job-first schedules of the same
//! trace), or on a fleet whose backends cannot hold every model at once
//! `belady-oracle` and `belady-batched` (clairvoyant, evicting the model
//! needed furthest ahead; loading at once, or as late as deadlines allow so
//! that one load serves many requests), and `ideal` (bounds no schedule can
//! beat). Same name, seed and scale, same
//! report: the run reads no clock and draws every random number from the
//! seed, so a printed table can be re-run by anyone.
//!
//! - `catalogue`: the named scenarios and their variants.
//! - `scenario`, `fleet_spec`, `trace`: what a run is made of: the
//!   fleet, and every request drawn once from the seed.
//! - `engine`: the event loop; the scheduler driven as the hub drives it,
//!   servers that queue and fail like LM Studio.
//! - `oracle`, `sjf`, `belady` and `ideal`: the yardstick rows.
//! - `tally` and `report`: from what happened to each request to the
//!   printed table.
//! - `events`, `rng`: the virtual clock's heap, and SplitMix64.
//!
//! [`Scheduler`]: drover_scheduler::Scheduler

mod belady;
mod catalogue;
mod engine;
mod events;
mod fleet_spec;
mod ideal;
mod oracle;
mod report;
mod rng;
mod scenario;
mod sjf;
mod tally;
mod trace;

use std::fmt;

use drover_scheduler::Policy;

pub use report::{Percentiles, Report, Row};

/// Names [`run`] accepts.
pub fn scenario_names() -> &'static [&'static str] {
    catalogue::NAMES
}

/// The name given to [`run`] is not one of [`scenario_names`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnknownScenario {
    pub name: String,
}

impl fmt::Display for UnknownScenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown scenario {:?}; known: {}",
            self.name,
            scenario_names().join(", ")
        )
    }
}

impl std::error::Error for UnknownScenario {}

/// Runs every variant of scenario `name` under every policy.
///
/// `scale` stretches the steady-traffic part of each variant (1.0 is the
/// default, a few minutes of virtual time; 0.1 is a quick run); bursts keep
/// their size. It is clamped to 0.01..=100, and a value that is not a
/// positive number means 1.0.
pub fn run(name: &str, seed: u64, scale: f64) -> Result<Vec<Report>, UnknownScenario> {
    let scale = if scale.is_finite() && scale > 0.0 {
        scale.clamp(0.01, 100.0)
    } else {
        1.0
    };
    let scenarios = catalogue::build(name, scale).ok_or_else(|| UnknownScenario {
        name: name.to_string(),
    })?;
    let root = rng::Rng::new(seed);
    Ok(scenarios
        .iter()
        .map(|s| {
            // Each variant draws its trace from its own stream, named rather
            // than numbered, so adding a variant changes no other's trace.
            let stream = fnv1a(&format!("{}/{}", s.name, s.variant));
            report_for(s, &root.fork(stream), seed, scale)
        })
        .collect())
}

fn report_for(s: &scenario::Scenario, rng: &rng::Rng, seed: u64, scale: f64) -> Report {
    let jobs = s.trace.generate(s.fleet.models.len(), rng);
    let ideal = ideal::row(s, &jobs);
    let ideal_per_min = ideal.throughput_per_min;
    let slots = s.fleet.total_slots();
    let mut rows: Vec<Row> = Policy::ALL
        .iter()
        .map(|&p| engine::play(s, &jobs, p).row(p.name(), ideal_per_min, slots))
        .collect();
    if s.fleet.loads() {
        // The other oracles would have every model everywhere at once.
        for (mode, name) in [
            (belady::Loads::Eager, "belady-oracle"),
            (belady::Loads::Batched, "belady-batched"),
        ] {
            rows.push(belady::schedule(s, &jobs, mode).row(name, ideal_per_min, slots));
        }
    } else {
        rows.push(oracle::schedule(s, &jobs).row("fcfs-oracle", ideal_per_min, slots));
        rows.push(sjf::schedule(s, &jobs).row("sjf-oracle", ideal_per_min, slots));
    }
    let ideal_makespan = ideal.makespan;
    rows.push(ideal);
    Report {
        scenario: s.name.to_string(),
        variant: s.variant.clone(),
        seed,
        scale,
        fleet: s.fleet.describe(),
        traffic: s.describe_traffic(),
        offered_per_min: ideal::offered_per_min(&jobs),
        capacity_per_min: s.fleet.capacity_per_min(),
        ideal_makespan,
        rows,
    }
}

/// FNV-1a, to name a random stream by a string.
fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xCBF2_9CE4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01B3)
    })
}
