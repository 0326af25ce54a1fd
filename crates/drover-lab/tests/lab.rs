//! The policy lab through its public API: the yardsticks of
//! `docs/scheduling.md` on fixed seeds. Virtual time, so these are exact
//! and fast; reduced scales keep them well under a second in debug builds.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use drover_lab::{self as lab, Report, Row};
use drover_scheduler::Policy;

const SEED: u64 = 2;

// The scenarios, named for the fleet's shape and what happens to it.
const RISING: &str = "two-servers-six-models-rising-load";
const UNEVEN: &str = "four-slot-and-one-slot-servers";
const MIXED: &str = "lmstudio-ollama-llamacpp-mixed-fleet";
const OUTAGE: &str = "two-servers-one-goes-down";
const CHATS: &str = "two-servers-multi-turn-chats";
const BURSTS: &str = "one-server-six-models-bursts";
const SWAP: &str = "two-servers-hold-two-of-five-models";

fn run(name: &str, scale: f64) -> Vec<Report> {
    lab::run(name, SEED, scale).unwrap()
}

fn variant<'a>(reports: &'a [Report], name: &str) -> &'a Report {
    reports
        .iter()
        .find(|r| r.variant == name)
        .unwrap_or_else(|| panic!("no variant {name:?}"))
}

fn row(report: &Report, policy: Policy) -> &Row {
    report.policy(policy).unwrap()
}

fn success(report: &Report, policy: Policy) -> f64 {
    row(report, policy).success_rate().unwrap()
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

#[test]
fn every_named_scenario_runs_and_an_unknown_name_is_an_error() {
    for name in lab::scenario_names() {
        let reports = run(name, 0.2);
        assert!(!reports.is_empty(), "{name}");
        for r in &reports {
            let names: Vec<&str> = r.rows.iter().map(|row| row.name.as_str()).collect();
            let oracles: &[&str] = if *name == SWAP {
                &["belady-oracle", "belady-batched"]
            } else {
                &["fcfs-oracle", "sjf-oracle"]
            };
            let expected: Vec<&str> = ["round-robin", "least-conn", "drover"]
                .iter()
                .chain(oracles)
                .chain(&["ideal"])
                .copied()
                .collect();
            assert_eq!(names, expected, "{name}");
        }
    }
    let err = lab::run("nope", SEED, 1.0).unwrap_err();
    assert_eq!(err.name, "nope");
    assert!(err.to_string().contains(RISING), "{err}");
}

#[test]
fn seed_002_numbers_are_reproduced() {
    // One Mac Studio, six models, one slot each, 3 s a response.
    let burst = run(BURSTS, 1.0);
    let six_models = variant(&burst, "6 messages, 6 models");
    let one_model = variant(&burst, "6 messages, 1 model");
    let full = variant(&burst, "120 messages, 6 models");
    assert_eq!(six_models.capacity_per_min, 120.0);
    for policy in Policy::ALL {
        // "Six workers: six messages take 3 s."
        assert_eq!(row(six_models, policy).makespan, secs(3.0), "{policy:?}");
        // "One worker: six messages take 18 s", 20 a minute.
        assert_eq!(row(one_model, policy).makespan, secs(18.0), "{policy:?}");
        assert!((row(one_model, policy).throughput_per_min - 20.0).abs() < 1e-6);
        // "Six workers: 120 requests a minute."
        let r = row(full, policy);
        assert_eq!(r.completed, Some(120));
        assert!((r.throughput_per_min - 120.0).abs() < 1e-6, "{policy:?}");
    }
    assert_eq!(one_model.ideal_makespan, secs(18.0));
    assert_eq!(full.ideal_makespan, secs(60.0));

    // Two such servers: 12 slots, 240 a minute, and nobody beats it.
    for r in run(RISING, 0.2) {
        assert_eq!(r.capacity_per_min, 240.0);
        for row in &r.rows {
            assert!(
                row.throughput_per_min <= 240.0 * 1.02,
                "{}: {row:?}",
                r.variant
            );
            assert!(row.utilisation <= 1.0 + 1e-9, "{}: {row:?}", r.variant);
        }
    }
}

#[test]
fn drover_reaches_95_percent_of_ideal_throughput_under_saturation() {
    // Full length: a short trace spends a larger share of its makespan
    // draining the queue, when lightly loaded models leave slots idle.
    let reports = run(RISING, 1.0);
    let r = variant(&reports, "load 150%");
    let drover = row(r, Policy::Drover);
    assert!(drover.of_ideal >= 0.95, "{r}");
    assert!(drover.throughput_per_min >= 0.95 * 240.0, "{r}");
    assert!(drover.utilisation >= 0.95, "{r}");
    // At 120% the drain weighs more, but not much.
    let r = variant(&reports, "load 120%");
    assert!(row(r, Policy::Drover).of_ideal >= 0.93, "{r}");
    // Below saturation nothing is lost, drover finishes within 1% of the
    // ideal makespan, and late binding keeps its tail wait under round
    // robin's, which ties each request to one server at arrival.
    let r = variant(&reports, "load 95%");
    let drover = row(r, Policy::Drover);
    assert_eq!(drover.success_rate(), Some(1.0));
    assert!(drover.makespan.as_secs_f64() <= 1.01 * r.ideal_makespan.as_secs_f64());
    let p99 = |p: Policy| row(r, p).wait.unwrap().p99;
    assert!(p99(Policy::Drover) < p99(Policy::RoundRobin), "{r}");
}

#[test]
fn drover_serves_an_uneven_fleet_far_better_than_round_robin() {
    let reports = run(UNEVEN, 0.5);
    // A burst: round robin gives the 1-slot server half of it.
    let burst = variant(&reports, "burst of 60");
    let drover = row(burst, Policy::Drover);
    let rr = row(burst, Policy::RoundRobin);
    assert!(
        drover.throughput_per_min >= 1.5 * rr.throughput_per_min,
        "{burst}"
    );
    assert_eq!(success(burst, Policy::Drover), 1.0);
    // Steady overload at 120%: round robin keeps the big server at 75% and
    // drowns the small one. In the long run that is 80 against 100 a
    // minute (1.25x); a finite trace's drain widens the gap.
    let steady = variant(&reports, "load 120%");
    let drover = row(steady, Policy::Drover);
    let rr = row(steady, Policy::RoundRobin);
    assert!(
        drover.throughput_per_min >= 1.25 * rr.throughput_per_min,
        "{steady}"
    );
    assert!(success(steady, Policy::Drover) > success(steady, Policy::RoundRobin));
    assert!(drover.of_ideal >= 0.95, "{steady}");
}

#[test]
fn drover_serves_a_mixed_fleet_of_kinds_better_than_round_robin() {
    // LM Studio (4 slots, 3 s), Ollama (1 slot, 1.5 s), llama.cpp (2 slots,
    // 6 s): round robin sends each a third, which the slow small one
    // cannot keep up with from 70% load on.
    for report in run(MIXED, 0.5) {
        let drover = row(&report, Policy::Drover);
        let rr = row(&report, Policy::RoundRobin);
        assert_eq!(success(&report, Policy::Drover), 1.0, "{report}");
        assert!(
            drover.throughput_per_min >= 1.15 * rr.throughput_per_min,
            "{report}"
        );
        // Below capacity drover's waits stay short; in overload they grow
        // for every policy, but round robin's run into the deadline.
        let p95 = |r: &Row| r.wait.unwrap().p95;
        let factor = if report.variant == "load 110%" { 2 } else { 5 };
        assert!(p95(drover) * factor < p95(rr), "{report}");
    }
}

#[test]
fn failover_loses_nothing_under_drover_and_beats_round_robin() {
    // At this scale the outage lasts 52 s: the surviving server absorbs the
    // backlog within the 60 s deadline, so every request can be served.
    let r = &run(OUTAGE, 0.5)[0];
    let drover = row(r, Policy::Drover);
    assert_eq!(drover.success_rate(), Some(1.0), "{r}");
    assert!(
        drover.retries > 0,
        "requests cut by the crash were retried: {r}"
    );
    // Round robin ignores health: half the traffic hits the dead server.
    let rr = row(r, Policy::RoundRobin);
    assert!(rr.errors > 0);
    assert!(success(r, Policy::RoundRobin) < 0.9, "{r}");
    assert!(drover.throughput_per_min > rr.throughput_per_min, "{r}");
    // Least connections avoids the dead server once its breaker opens, but
    // what it already bound to the survivor stays there after the outage.
    assert!(success(r, Policy::Drover) >= success(r, Policy::LeastConnections));
}

#[test]
fn failover_at_full_length_loses_only_what_the_oracle_loses() {
    // At scale 1 the outage lasts 105 s at 160% of the survivor's capacity;
    // on some draws the backlog outgrows the deadline. Whatever drover then
    // loses, a clairvoyant schedule loses too.
    for seed in [1, 2, 8] {
        let r = &lab::run(OUTAGE, seed, 1.0).unwrap()[0];
        let drover = row(r, Policy::Drover).success_rate().unwrap();
        let oracle = r.row("fcfs-oracle").unwrap().success_rate().unwrap();
        assert!(drover >= oracle - 0.005, "seed {seed}: {r}");
        assert!(drover >= 0.95, "seed {seed}: {r}");
    }
}

#[test]
fn conversations_return_to_the_backend_holding_their_prefix() {
    let r = &run(CHATS, 0.5)[0];
    let hits = |p: Policy| row(r, p).affinity_hit_rate.unwrap();
    // Round robin and least connections find the prefix about half the
    // time (two backends per model); drover does better, though it never
    // waits for a busy affinity slot.
    assert!(
        hits(Policy::Drover) > hits(Policy::RoundRobin) + 0.05,
        "{r}"
    );
    assert!(
        hits(Policy::Drover) > hits(Policy::LeastConnections) + 0.05,
        "{r}"
    );
    assert_eq!(r.row("fcfs-oracle").unwrap().affinity_hit_rate, Some(1.0));
}

#[test]
fn the_same_seed_gives_the_same_report() {
    for name in [RISING, OUTAGE, CHATS] {
        let a = run(name, 0.2);
        let b = run(name, 0.2);
        assert_eq!(a, b, "{name}");
        let text = |rs: &[Report]| rs.iter().map(ToString::to_string).collect::<String>();
        assert_eq!(text(&a), text(&b));
        let other = lab::run(name, SEED + 1, 0.2).unwrap();
        assert_ne!(a, other, "{name}: another seed, another trace");
    }
}

#[test]
fn every_request_is_accounted_for_and_late_binding_never_overbooks() {
    for name in lab::scenario_names() {
        for r in run(name, 0.3) {
            for row in &r.rows {
                assert_eq!(row.lost, 0, "{name} {}: {row:?}", r.variant);
                assert_eq!(row.overbooked, 0, "{name} {}: {row:?}", r.variant);
                if let Some(done) = row.completed {
                    let ended = done + row.errors + row.rejected + row.expired;
                    assert_eq!(ended, row.requests, "{name} {}: {row:?}", r.variant);
                }
            }
            assert_eq!(row(&r, Policy::Drover).retries > 0, *name == OUTAGE);
        }
    }
}

#[test]
fn the_table_names_the_seed_and_every_row() {
    let reports = run(UNEVEN, 0.2);
    let text = reports[0].to_string();
    assert!(text.contains(&format!("seed {SEED}")), "{text}");
    assert!(text.contains("scale 0.2"), "{text}");
    for name in [
        "round-robin",
        "least-conn",
        "drover",
        "fcfs-oracle",
        "sjf-oracle",
        "ideal",
    ] {
        assert!(text.lines().any(|l| l.starts_with(name)), "{text}");
    }
    // Aligned: every table line is as wide as the header.
    let lines: Vec<&str> = text
        .lines()
        .skip_while(|l| !l.starts_with("policy"))
        .collect();
    let width = lines[0].len();
    for l in &lines[..6] {
        assert_eq!(l.len(), width, "{text}");
    }
}

#[test]
fn scenario_names_say_the_fleet_and_what_happens_to_it() {
    // A reader should not need the seed documents to know what a table is
    // about.
    assert_eq!(
        lab::scenario_names(),
        [RISING, UNEVEN, MIXED, OUTAGE, CHATS, BURSTS, SWAP]
    );
    for name in lab::scenario_names() {
        for r in run(name, 0.1) {
            assert_eq!(r.scenario, *name);
            assert!(r.to_string().starts_with(&format!("== {name} / ")), "{r}");
        }
    }
}

#[test]
fn every_column_is_explained_under_its_table() {
    // With and without the affinity column.
    for name in [UNEVEN, CHATS] {
        let text = run(name, 0.1)[0].to_string();
        let lines: Vec<&str> = text.lines().collect();
        let header = lines
            .iter()
            .position(|l| l.starts_with("policy"))
            .unwrap_or_else(|| panic!("no table: {text}"));
        let columns: Vec<&str> = lines[header].split_whitespace().collect();
        let last_row = lines.iter().rposition(|l| l.starts_with("ideal")).unwrap();
        // One line per column, in the table's order, after its last row:
        // the column's name, then what it means in words.
        let legend: Vec<(&str, &str)> = lines[last_row + 1..]
            .iter()
            .filter_map(|l| l.trim_start().split_once(char::is_whitespace))
            .filter(|(word, _)| columns.contains(word))
            .collect();
        let explained: Vec<&str> = legend.iter().map(|(word, _)| *word).collect();
        assert_eq!(explained, columns, "{text}");
        for (column, meaning) in legend {
            assert!(
                meaning.split_whitespace().count() >= 3,
                "{column}: {meaning:?}"
            );
        }
    }
}

#[test]
fn shortest_job_first_shows_headroom_the_fcfs_oracle_cannot() {
    // On a symmetric fleet drover's row equals the clairvoyant FCFS one by
    // construction; with requests of unequal length, starting the shortest
    // first halves the median wait (at the cost of the longest requests).
    let reports = run(RISING, 0.5);
    let r = variant(&reports, "load 95%");
    let p50 = |name: &str| r.row(name).unwrap().wait.unwrap().p50;
    assert_eq!(p50("drover"), p50("fcfs-oracle"), "{r}");
    assert!(p50("sjf-oracle") * 2 < p50("fcfs-oracle"), "{r}");
}

/// Backends that hold two of their five models at once: drover loads each
/// model where it is needed and keeps what is in use, where round robin
/// (the servers loading on demand) thrashes; drover's loads stay within
/// 1.5x of a clairvoyant schedule that evicts by Belady's rule, and the
/// load-batching oracle shows how few loads are possible at all.
#[test]
fn drover_loads_models_far_less_than_round_robin_and_near_a_belady_oracle() {
    for report in run(SWAP, 1.0) {
        let drover = row(&report, Policy::Drover);
        let rr = row(&report, Policy::RoundRobin);
        let belady = report.row("belady-oracle").unwrap();
        let batched = report.row("belady-batched").unwrap();
        let loads = |r: &Row| r.loads.unwrap();
        assert_eq!(drover.lost, 0, "{report}");
        assert_eq!(drover.overbooked, 0, "{report}");
        assert!(loads(drover) * 4 <= loads(rr) * 3, "{report}");
        assert!(loads(drover) * 2 <= loads(belady) * 3, "{report}");
        assert!(loads(batched) <= loads(belady), "{report}");
        assert!(
            success(&report, Policy::Drover) > success(&report, Policy::RoundRobin),
            "{report}"
        );
    }
}

/// The lab is the scheduler's regression test: every scenario's tables at
/// seed 1, as `drover lab` prints them, byte for byte. A change to the
/// scheduler that moves a decision shows here; if it is meant to, the file
/// is written anew (`drover lab > crates/drover-lab/tests/lab_tables.txt`)
/// and the difference is read and explained in the commit.
#[test]
fn the_tables_are_byte_identical_to_the_recorded_ones() {
    let mut out = String::new();
    for name in lab::scenario_names() {
        for report in lab::run(name, 1, 1.0).unwrap() {
            out.push_str(&format!("{report}\n"));
        }
    }
    let recorded = include_str!("lab_tables.txt");
    if out != recorded {
        let line = out
            .lines()
            .zip(recorded.lines())
            .position(|(a, b)| a != b)
            .map_or(out.lines().count().min(recorded.lines().count()), |i| i);
        panic!(
            "the lab's tables changed at line {}:\n  now:      {:?}\n  recorded: {:?}",
            line + 1,
            out.lines().nth(line),
            recorded.lines().nth(line)
        );
    }
}
