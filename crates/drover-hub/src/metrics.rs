//! Prometheus metrics. Counters and histograms are updated on the request
//! path; gauges that describe state (queue depth, slots, breakers) are read
//! from the scheduler at scrape time, so they can never drift from it.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use drover_core::BackendId;
use drover_scheduler::{BackendView, QueueStats};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Metric, Registry};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub model: String,
    pub backend: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModelLabels {
    pub model: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BackendModelLabels {
    pub backend: String,
    pub model: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BackendLabels {
    pub backend: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BreakerLabels {
    pub backend: String,
    pub state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LoadLabels {
    pub backend: String,
    pub model: String,
    /// `ok` or `failed`.
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KeyLabels {
    pub key: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KeyLimitLabels {
    pub key: String,
    pub limit: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResidencyLabels {
    pub backend: String,
    pub model: String,
    pub state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabels {
    pub state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PriorityLabels {
    pub priority: u8,
}

fn latency_histogram() -> Histogram {
    // 1 ms to ~9 minutes.
    Histogram::new(exponential_buckets(0.001, 2.0, 20))
}

pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub ttfb: Family<ModelLabels, Histogram, fn() -> Histogram>,
    pub latency: Family<ModelLabels, Histogram, fn() -> Histogram>,
    pub queue_wait: Family<ModelLabels, Histogram, fn() -> Histogram>,
    pub retries: Family<BackendLabels, Counter>,
    pub stream_errors: Family<BackendLabels, Counter>,
    pub queue_expired: Counter,
    pub queue_rejected: Counter,
    pub affinity_hits: Counter,
    queue_depth: Family<ModelLabels, Gauge>,
    queue_depth_priority: Family<PriorityLabels, Gauge>,
    queue_bytes: Gauge,
    slots_busy: Family<BackendModelLabels, Gauge>,
    slots_total: Family<BackendModelLabels, Gauge>,
    /// Loads the hub carried out (its own decisions and operators').
    pub model_loads: Family<LoadLabels, Counter>,
    pub model_unloads: Family<BackendModelLabels, Counter>,
    residency: Family<ResidencyLabels, Gauge>,
    /// Requests per client key (by its name), those turned away by one of
    /// its limits, and the prompt tokens it sent (estimated as body bytes
    /// over 4).
    pub key_requests: Family<KeyLabels, Counter>,
    pub key_limited: Family<KeyLimitLabels, Counter>,
    pub key_prompt_tokens: Family<KeyLabels, Counter>,
    /// Output tokens per client key, as its answers report them.
    pub key_completion_tokens: Family<KeyLabels, Counter>,
    breaker: Family<BreakerLabels, Gauge>,
    draining: Family<BackendLabels, Gauge>,
    /// How job attempts ended on this hub: completed, failed, dead,
    /// retried, cancelled, expired, lost (its runner vanished).
    pub job_attempts: Family<OutcomeLabels, Counter>,
    /// Jobs in the store by state, read at scrape time.
    jobs: Family<StateLabels, Gauge>,
    /// Jobs this hub holds (claimed, not yet ended), and whether its store
    /// answered the scrape.
    jobs_held: Gauge,
    job_store_up: Gauge,
    /// Job callback deliveries by how each attempt ended: `delivered`,
    /// `retried`, `failed` (410 Gone), `dead` (its last attempt), or
    /// `cancelled`.
    pub callbacks: Family<OutcomeLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Registers `metric` under `name` and hands it back.
fn register<M: Metric + Clone>(registry: &mut Registry, name: &str, help: &str, metric: M) -> M {
    registry.register(name, help, metric.clone());
    metric
}

fn histograms() -> Family<ModelLabels, Histogram, fn() -> Histogram> {
    Family::new_with_constructor(latency_histogram as fn() -> Histogram)
}

impl Metrics {
    pub fn new() -> Self {
        let mut r = Registry::with_prefix("drover");
        let r = &mut r;
        let requests = register(
            r,
            "requests",
            "Inference requests answered, by model, backend and HTTP status",
            Family::default(),
        );
        let ttfb = register(
            r,
            "time_to_first_byte_seconds",
            "From request arrival to the backend's first byte",
            histograms(),
        );
        let latency = register(
            r,
            "request_duration_seconds",
            "From request arrival to the last byte of the answer",
            histograms(),
        );
        let queue_wait = register(
            r,
            "queue_wait_seconds",
            "Time spent waiting in the hub for a free slot",
            histograms(),
        );
        let retries = register(
            r,
            "retries",
            "Requests retried on another backend after this one failed before the first byte",
            Family::default(),
        );
        let stream_errors = register(
            r,
            "stream_errors",
            "Responses that broke after their first byte reached the client",
            Family::default(),
        );
        let queue_expired = register(
            r,
            "queue_expired",
            "Requests that waited past their deadline",
            Counter::default(),
        );
        let queue_rejected = register(
            r,
            "queue_rejected",
            "Requests refused because the queue was full (by count or by bytes)",
            Counter::default(),
        );
        let affinity_hits = register(
            r,
            "affinity_hits",
            "Requests sent to the backend that served their conversation's prefix",
            Counter::default(),
        );
        let queue_depth = register(
            r,
            "queue_depth",
            "Requests waiting, by model",
            Family::default(),
        );
        let queue_depth_priority = register(
            r,
            "queue_depth_by_priority",
            "Requests waiting, by priority",
            Family::default(),
        );
        let queue_bytes = register(
            r,
            "queue_bytes",
            "Bytes of request bodies waiting",
            Gauge::default(),
        );
        let slots_busy = register(
            r,
            "slots_busy",
            "Slots in use per backend and model",
            Family::default(),
        );
        let slots_total = register(
            r,
            "slots_total",
            "Slots per backend and model",
            Family::default(),
        );
        let model_loads = register(
            r,
            "model_loads",
            "Model loads the hub carried out, by backend, model and outcome (ok, failed)",
            Family::default(),
        );
        let model_unloads = register(
            r,
            "model_unloads",
            "Model unloads the hub carried out (evictions, time to live, operators)",
            Family::default(),
        );
        let residency = register(
            r,
            "model_residency",
            "1 for each model's current state on each backend: unloaded, loading, loaded or unloading",
            Family::default(),
        );
        let key_requests = register(
            r,
            "key_requests",
            "Inference requests per client key (by name), admitted past its limits",
            Family::default(),
        );
        let key_limited = register(
            r,
            "key_limited",
            "Requests a client key's own limit turned away, by key and limit",
            Family::default(),
        );
        let key_prompt_tokens = register(
            r,
            "key_prompt_tokens",
            "Prompt tokens per client key, estimated as request body bytes over 4",
            Family::default(),
        );
        let key_completion_tokens = register(
            r,
            "key_completion_tokens",
            "Output tokens per client key, as its answers' usage reports them",
            Family::default(),
        );
        let breaker = register(
            r,
            "backend_breaker_state",
            "1 for each backend's current state: unreachable (never answered), closed, half_open or open",
            Family::default(),
        );
        let draining = register(
            r,
            "backend_draining",
            "1 while a backend drains",
            Family::default(),
        );
        let job_attempts = register(
            r,
            "job_attempts",
            "Job attempts ended on this hub, by outcome: completed, failed, dead, retried, cancelled, expired, lost",
            Family::default(),
        );
        let jobs = register(
            r,
            "jobs",
            "Jobs in the store by state (every hub sharing it sees the same)",
            Family::default(),
        );
        let jobs_held = register(
            r,
            "jobs_held",
            "Jobs this hub has claimed and not yet ended (at most jobs.window)",
            Gauge::default(),
        );
        let job_store_up = register(
            r,
            "job_store_up",
            "1 when the job store answered this scrape, 0 when it did not (no series without a store)",
            Gauge::default(),
        );
        let callbacks = register(
            r,
            "job_callbacks",
            "Job callback delivery attempts by outcome: delivered, retried, failed (the receiver is gone), dead (the last attempt failed), cancelled",
            Family::default(),
        );
        let registry = std::mem::take(r);
        Metrics {
            job_attempts,
            jobs,
            jobs_held,
            job_store_up,
            registry,
            requests,
            ttfb,
            latency,
            queue_wait,
            retries,
            stream_errors,
            queue_expired,
            queue_rejected,
            affinity_hits,
            queue_depth,
            queue_depth_priority,
            queue_bytes,
            slots_busy,
            slots_total,
            model_loads,
            model_unloads,
            residency,
            key_requests,
            key_limited,
            key_prompt_tokens,
            key_completion_tokens,
            breaker,
            draining,
            callbacks,
        }
    }

    /// Renders the OpenMetrics text, refreshing state gauges from a snapshot
    /// of the scheduler first. A gauge reads 0 rather than vanishing: every
    /// model the fleet lists has a queue depth, every priority once seen
    /// keeps its series.
    pub fn render(&self, fleet: &Scrape<'_>) -> String {
        self.refresh_queue(&fleet.fleet.backends, &fleet.fleet.queue);
        self.refresh_backends(fleet);
        if let Some(jobs) = &fleet.jobs {
            self.refresh_jobs(jobs);
        }
        let mut out = String::new();
        if encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        // The process figures go before the OpenMetrics terminator.
        let eof = out.rfind("# EOF").unwrap_or(out.len());
        out.insert_str(
            eof,
            &(process_figures() + &role_figures(&fleet.role, fleet.linked)),
        );
        out
    }

    fn refresh_jobs(&self, jobs: &JobsScrape) {
        self.jobs_held
            .set(i64::try_from(jobs.held).unwrap_or(i64::MAX));
        match &jobs.counts {
            Some(counts) => {
                self.job_store_up.set(1);
                for state in drover_store::JobState::ALL {
                    let n = counts
                        .iter()
                        .find(|(s, _)| *s == state)
                        .map_or(0, |(_, n)| *n);
                    self.jobs
                        .get_or_create(&StateLabels {
                            state: state.as_str(),
                        })
                        .set(i64::try_from(n).unwrap_or(i64::MAX));
                }
            }
            None => {
                self.job_store_up.set(0);
            }
        }
    }

    fn refresh_queue(&self, views: &BTreeMap<BackendId, BackendView>, stats: &QueueStats) {
        self.queue_depth.clear();
        for model in views.values().flat_map(|v| &v.models) {
            self.queue_depth
                .get_or_create(&ModelLabels {
                    model: model.name.to_string(),
                })
                .set(0);
        }
        for (model, n) in &stats.by_model {
            self.queue_depth
                .get_or_create(&ModelLabels {
                    model: model.to_string(),
                })
                .set(*n as i64);
        }
        // Priorities are 0-100, so keeping every one seen cannot grow.
        self.queue_depth_priority
            .get_or_create(&PriorityLabels {
                priority: drover_core::Priority::DEFAULT.get(),
            })
            .set(0);
        for priority in 0..=100 {
            if let Some(gauge) = self.queue_depth_priority.get(&PriorityLabels { priority }) {
                gauge.set(0);
            }
        }
        for (priority, n) in &stats.by_priority {
            self.queue_depth_priority
                .get_or_create(&PriorityLabels {
                    priority: *priority,
                })
                .set(*n as i64);
        }
        self.queue_bytes.set(stats.bytes as i64);
    }

    fn refresh_backends(&self, fleet: &Scrape<'_>) {
        self.slots_busy.clear();
        self.slots_total.clear();
        self.residency.clear();
        self.breaker.clear();
        self.draining.clear();
        for view in fleet.fleet.backends.values() {
            let backend = (fleet.name_of)(view.id);
            self.set_state(&backend, view.breaker.as_str());
            self.draining
                .get_or_create(&BackendLabels {
                    backend: backend.clone(),
                })
                .set(i64::from(view.draining));
            for m in &view.models {
                let labels = BackendModelLabels {
                    backend: backend.clone(),
                    model: m.name.to_string(),
                };
                self.slots_busy
                    .get_or_create(&labels)
                    .set(i64::from(m.busy));
                self.slots_total
                    .get_or_create(&labels)
                    .set(i64::from(m.slots));
                for state in ["unloaded", "loading", "loaded", "unloading"] {
                    self.residency
                        .get_or_create(&ResidencyLabels {
                            backend: backend.clone(),
                            model: m.name.to_string(),
                            state,
                        })
                        .set(i64::from(m.residency.as_str() == state));
                }
            }
        }
        for backend in fleet.unreachable {
            self.set_state(backend, "unreachable");
        }
    }

    /// One series per state, 1 for the current one.
    fn set_state(&self, backend: &str, current: &str) {
        for state in ["unreachable", "closed", "half_open", "open"] {
            self.breaker
                .get_or_create(&BreakerLabels {
                    backend: backend.to_string(),
                    state,
                })
                .set(i64::from(state == current));
        }
    }
}

/// What a scrape reads from the hub: a snapshot taken under the
/// scheduler's lock, rendered outside it.
pub struct Scrape<'a> {
    pub fleet: &'a crate::views::Snapshot,
    /// Backends that have never answered, by name.
    pub unreachable: &'a [String],
    pub name_of: &'a dyn Fn(drover_core::BackendId) -> String,
    /// The jobs, where the hub keeps them.
    pub jobs: Option<JobsScrape>,
    /// This hub's role in its cluster now.
    pub role: crate::cluster::Role,
    /// Whether its link to the leader is up (a follower's).
    pub linked: bool,
}

/// The hub's role, one gauge per role (1 for the one it has), and the
/// lease's epoch it knows of.
fn role_figures(role: &crate::cluster::Role, linked: bool) -> String {
    let mut out = String::from(
        "# HELP drover_hub_role This hub's role in its cluster: alone (no shared store), leader, follower, or leaderless.\n\
         # TYPE drover_hub_role gauge\n",
    );
    for name in ["alone", "leader", "follower", "leaderless"] {
        let _ = writeln!(
            out,
            "drover_hub_role{{role=\"{name}\"}} {}",
            i64::from(role.as_str() == name)
        );
    }
    let _ = writeln!(
        out,
        "# HELP drover_hub_lease_epoch The epoch of the cluster's lease this hub knows of (0 where there is none).\n\
         # TYPE drover_hub_lease_epoch gauge\n\
         drover_hub_lease_epoch {}\n\
         # HELP drover_hub_linked Whether this hub's link to its leader is up (a follower's).\n\
         # TYPE drover_hub_linked gauge\n\
         drover_hub_linked {}",
        role.epoch(),
        i64::from(linked)
    );
    out
}

/// What a scrape read of the jobs.
pub struct JobsScrape {
    /// This hub's claimed jobs.
    pub held: usize,
    /// Jobs by state in the store; `None` if it did not answer.
    pub counts: Option<Vec<(drover_store::JobState, u64)>>,
}

fn process_figures() -> String {
    let mut process = String::new();
    if let Some(p) = ProcessStats::read() {
        let _ = writeln!(
            process,
            "# HELP process_cpu_seconds Total user and system CPU time spent by the hub.\n\
             # TYPE process_cpu_seconds counter\n\
             process_cpu_seconds_total {}\n\
             # HELP process_resident_memory_bytes Resident memory of the hub.\n\
             # TYPE process_resident_memory_bytes gauge\n\
             process_resident_memory_bytes {}",
            p.cpu_seconds, p.rss_bytes
        );
    }
    process
}

/// CPU time and resident memory of this process, from `/proc` (Linux).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProcessStats {
    pub cpu_seconds: f64,
    pub rss_bytes: u64,
}

impl ProcessStats {
    pub fn read() -> Option<Self> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        Self::parse(&stat, &status)
    }

    fn parse(stat: &str, status: &str) -> Option<Self> {
        // The command name may contain spaces; fields start after its ')'.
        let after = &stat[stat.rfind(')')? + 1..];
        let fields: Vec<&str> = after.split_whitespace().collect();
        // utime and stime are fields 14 and 15 of the line, 12 and 13 here.
        let utime: f64 = fields.get(11)?.parse().ok()?;
        let stime: f64 = fields.get(12)?.parse().ok()?;
        // USER_HZ is 100 on every Linux platform drover targets.
        let cpu_seconds = (utime + stime) / 100.0;
        let rss_kb: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))?
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()?;
        Some(ProcessStats {
            cpu_seconds,
            rss_bytes: rss_kb * 1024,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_proc_stat_even_with_spaces_in_the_name() {
        let stat = "1234 (drover hub) S 1 1234 1234 0 -1 4194560 1000 0 0 0 250 50 0 0 20 0 8 0 100 1000000 500 18446744073709551615";
        let status = "Name:\tdrover\nVmRSS:\t   20480 kB\nThreads:\t8\n";
        let p = ProcessStats::parse(stat, status).unwrap();
        assert_eq!(p.cpu_seconds, 3.0);
        assert_eq!(p.rss_bytes, 20480 * 1024);
    }

    #[test]
    fn this_process_has_figures() {
        let p = ProcessStats::read().unwrap();
        assert!(p.rss_bytes > 0);
    }
}
