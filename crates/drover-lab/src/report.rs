//! What a run reports: one [`Report`] per scenario variant, one [`Row`] per
//! policy plus the `oracle` and `ideal` yardsticks, printed as an aligned
//! table with everything needed to re-run it and, under it, what each
//! column means.

use std::fmt;
use std::time::Duration;

use drover_scheduler::Policy;

/// p50, p95 and p99 of a set of durations (nearest rank).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Percentiles {
    pub p50: Duration,
    pub p95: Duration,
    pub p99: Duration,
}

impl Percentiles {
    /// `None` for an empty set.
    pub fn of(mut values: Vec<Duration>) -> Option<Self> {
        if values.is_empty() {
            return None;
        }
        values.sort_unstable();
        let at = |p: f64| {
            let rank = (p * values.len() as f64).ceil() as usize;
            values[rank.clamp(1, values.len()) - 1]
        };
        Some(Percentiles {
            p50: at(0.50),
            p95: at(0.95),
            p99: at(0.99),
        })
    }
}

/// One policy's results on one trace, or a yardstick.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    /// A [`Policy::name`], `"fcfs-oracle"`, `"sjf-oracle"` or `"ideal"`.
    pub name: String,
    pub requests: u64,
    /// Answered successfully. `None` on the ideal row, which is a bound
    /// rather than a schedule.
    pub completed: Option<u64>,
    /// Failed on a backend, with no retry left (or none allowed).
    pub errors: u64,
    /// Refused by the scheduler at arrival (no healthy backend, queue full).
    pub rejected: u64,
    /// Waited past the queue deadline, in the hub or inside a backend.
    pub expired: u64,
    /// Never resolved by the end of the run: always 0 unless a request was
    /// lost, which would break the no-loss invariant.
    pub lost: u64,
    /// Attempts sent again after a failure.
    pub retries: u64,
    /// Completions per minute from the first arrival to the last completion.
    pub throughput_per_min: f64,
    /// `throughput_per_min` over the ideal row's.
    pub of_ideal: f64,
    /// First arrival to last completion.
    pub makespan: Duration,
    /// Arrival to the start of the attempt that succeeded, including time
    /// queued inside a backend and any failed attempts before it. Over
    /// completed requests; `None` when not meaningful.
    pub wait: Option<Percentiles>,
    /// Arrival to completion, over completed requests.
    pub latency: Option<Percentiles>,
    /// Busy slot-seconds over total slot-seconds during the makespan. Work
    /// cut short by a crash counts as busy: the slot was spent.
    pub utilisation: f64,
    /// Share of completed later conversation turns that ran where their
    /// prefix was still cached; `None` without conversations.
    pub affinity_hit_rate: Option<f64>,
    /// Attempts that had to queue inside a backend under a late-binding
    /// policy. Late binding only dispatches onto free slots, so anything but
    /// 0 is a broken invariant.
    pub overbooked: u64,
    /// Model loads performed, on a fleet that cannot hold every model at
    /// once; `None` elsewhere and on the ideal row.
    pub loads: Option<u64>,
}

impl Row {
    /// Completed over requests; `None` on the ideal row.
    pub fn success_rate(&self) -> Option<f64> {
        let done = self.completed?;
        Some(if self.requests == 0 {
            1.0
        } else {
            done as f64 / self.requests as f64
        })
    }
}

/// The results of one scenario variant.
#[derive(Clone, Debug, PartialEq)]
pub struct Report {
    pub scenario: String,
    /// Which variant of the scenario, e.g. `load 80%`.
    pub variant: String,
    pub seed: u64,
    pub scale: f64,
    /// The fleet, one line.
    pub fleet: String,
    /// The traffic and deadline, one line.
    pub traffic: String,
    /// Requests per minute from first to last arrival; `None` for a burst.
    pub offered_per_min: Option<f64>,
    /// Completions per minute with every slot busy (no outage).
    pub capacity_per_min: f64,
    /// No schedule of this trace on this fleet can finish sooner.
    pub ideal_makespan: Duration,
    /// One row per policy in [`Policy::ALL`] order, then `fcfs-oracle`,
    /// `sjf-oracle`, then
    /// `ideal`.
    pub rows: Vec<Row>,
}

impl Report {
    pub fn row(&self, name: &str) -> Option<&Row> {
        self.rows.iter().find(|r| r.name == name)
    }

    pub fn policy(&self, policy: Policy) -> Option<&Row> {
        self.row(policy.name())
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "== {} / {} / seed {} / scale {} ==",
            self.scenario, self.variant, self.seed, self.scale
        )?;
        writeln!(f, "fleet:   {}", self.fleet)?;
        writeln!(f, "traffic: {}", self.traffic)?;
        let offered = self
            .offered_per_min
            .map_or_else(|| "a burst".to_string(), |o| format!("{o:.1}/min"));
        writeln!(
            f,
            "bounds:  capacity {:.1}/min, offered {offered}, ideal makespan >= {:.1} s",
            self.capacity_per_min,
            self.ideal_makespan.as_secs_f64()
        )?;
        let with_affinity = self.rows.iter().any(|r| r.affinity_hit_rate.is_some());
        let with_loads = self.rows.iter().any(|r| r.loads.is_some());
        let columns: Vec<(&str, &str)> = COLUMNS
            .iter()
            .copied()
            .filter(|(name, _)| with_affinity || *name != AFFINITY)
            .filter(|(name, _)| with_loads || *name != LOADS)
            .collect();
        let header: Vec<&str> = columns.iter().map(|(name, _)| *name).collect();
        let rows: Vec<Vec<String>> = self
            .rows
            .iter()
            .map(|r| cells(r, self.ideal_makespan, with_affinity, with_loads))
            .collect();
        f.write_str(&table(&header, &rows))?;
        for r in &self.rows {
            if r.overbooked > 0 {
                writeln!(
                    f,
                    "! {}: {} attempts queued inside a backend under late binding",
                    r.name, r.overbooked
                )?;
            }
            if r.lost > 0 {
                writeln!(f, "! {}: {} requests never resolved", r.name, r.lost)?;
            }
        }
        f.write_str(&legend(&columns))
    }
}

const AFFINITY: &str = "aff%";
const LOADS: &str = "loads";

/// The table's columns in order, each with what it means in plain words;
/// the legend under every table is printed from here, so the two cannot
/// drift apart. Times are in seconds.
const COLUMNS: &[(&str, &str)] = &[
    (
        "policy",
        "who scheduled: a policy; fcfs-oracle, a first-come-first-served schedule that knew \
         every arrival in advance; sjf-oracle, the same but shortest request first; ideal, \
         bounds that no schedule can beat",
    ),
    ("reqs", "requests in the trace"),
    ("done", "requests answered successfully"),
    ("ok%", "share of the requests answered"),
    ("err", "requests that failed on a server with no retry left"),
    (
        "rej",
        "requests refused on arrival (no healthy server, or the queue was full)",
    ),
    (
        "exp",
        "requests that had not started by their deadline, in the hub or in a server",
    ),
    ("retry", "attempts sent to another server after one failed"),
    (
        "thr/min",
        "answers per minute, from the first arrival to the last answer",
    ),
    ("%ideal", "that throughput as a share of the ideal row's"),
    (
        "makespan",
        "seconds from the first arrival to the last answer",
    ),
    (
        "mk/ideal",
        "makespan over the shortest possible one (only when every request was answered)",
    ),
    (
        "wait50",
        "median wait: seconds from arrival until the attempt that succeeded started",
    ),
    (
        "wait95",
        "95th percentile of that wait: 1 request in 20 waited longer",
    ),
    (
        "wait99",
        "99th percentile of that wait: 1 request in 100 waited longer",
    ),
    (
        "lat50",
        "median latency: seconds from arrival to the answer",
    ),
    ("lat95", "95th percentile of that latency"),
    ("lat99", "99th percentile of that latency"),
    (
        "util%",
        "share of the slots' time spent working, from the first arrival to the last answer",
    ),
    (
        AFFINITY,
        "share of later conversation turns that ran where their earlier turns were still cached",
    ),
    (
        LOADS,
        "models loaded during the run (each costs the server its load time)",
    ),
];

/// One line per column under a table: its name, then what it means.
fn legend(columns: &[(&str, &str)]) -> String {
    let width = columns
        .iter()
        .map(|(name, _)| name.len())
        .max()
        .unwrap_or(0);
    let mut out = String::from("columns:\n");
    for (name, meaning) in columns {
        out.push_str(&format!("  {name:<width$}  {meaning}\n"));
    }
    out
}

fn cells(r: &Row, ideal_makespan: Duration, with_affinity: bool, with_loads: bool) -> Vec<String> {
    let dash = || "-".to_string();
    let count = |n: u64| {
        if r.completed.is_some() {
            n.to_string()
        } else {
            dash()
        }
    };
    let secs = |d: Duration| format!("{:.1}", d.as_secs_f64());
    let pct = |x: f64| format!("{:.1}", 100.0 * x);
    let trio = |p: Option<Percentiles>| match p {
        Some(p) => [secs(p.p50), secs(p.p95), secs(p.p99)],
        None => [dash(), dash(), dash()],
    };
    let mut out = vec![
        r.name.clone(),
        r.requests.to_string(),
        r.completed.map_or_else(dash, |c| c.to_string()),
        r.success_rate().map_or_else(dash, pct),
        count(r.errors),
        count(r.rejected),
        count(r.expired),
        count(r.retries),
        format!("{:.1}", r.throughput_per_min),
        pct(r.of_ideal),
        secs(r.makespan),
        // The bound assumes every request is served; a row that dropped
        // some may finish sooner, so the ratio would mislead.
        if r.success_rate().is_none_or(|s| s >= 1.0) && !ideal_makespan.is_zero() {
            format!(
                "{:.2}",
                r.makespan.as_secs_f64() / ideal_makespan.as_secs_f64()
            )
        } else {
            dash()
        },
    ];
    out.extend(trio(r.wait));
    out.extend(trio(r.latency));
    out.push(pct(r.utilisation));
    if with_affinity {
        out.push(r.affinity_hit_rate.map_or_else(dash, pct));
    }
    if with_loads {
        out.push(r.loads.map_or_else(dash, |n| n.to_string()));
    }
    out
}

/// An aligned text table: the first column left-aligned, the rest right.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i == 0 {
                s.push_str(&format!("{cell:<w$}"));
            } else {
                s.push_str(&format!("  {cell:>w$}"));
            }
        }
        s.push('\n');
        s
    };
    let mut out = line(header.to_vec());
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<Duration> = (1..=100).map(Duration::from_secs).collect();
        let p = Percentiles::of(v).unwrap_or_default();
        assert_eq!(p.p50, Duration::from_secs(50));
        assert_eq!(p.p95, Duration::from_secs(95));
        assert_eq!(p.p99, Duration::from_secs(99));
        let one = Percentiles::of(vec![Duration::from_secs(3)]).unwrap_or_default();
        assert_eq!(one.p99, Duration::from_secs(3));
        assert_eq!(Percentiles::of(Vec::new()), None);
    }

    #[test]
    fn table_columns_line_up() {
        let t = table(
            &["policy", "n"],
            &[
                vec!["drover".into(), "7".into()],
                vec!["x".into(), "1234".into()],
            ],
        );
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[0], "policy     n");
        assert_eq!(lines[1], "drover     7");
        assert_eq!(lines[2], "x       1234");
    }
}
