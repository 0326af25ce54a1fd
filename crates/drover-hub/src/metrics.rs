//! Prometheus metrics. Counters and histograms are updated on the request
//! path; gauges that describe state (queue depth, slots, breakers) are read
//! from the scheduler at scrape time, so they can never drift from it.

use std::fmt::Write as _;

use drover_scheduler::{BackendView, BreakerState, QueueStats};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

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
    slots_busy: Family<BackendModelLabels, Gauge>,
    slots_total: Family<BackendModelLabels, Gauge>,
    breaker: Family<BreakerLabels, Gauge>,
    draining: Family<BackendLabels, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("drover");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "Inference requests answered, by model, backend and HTTP status",
            requests.clone(),
        );
        let ttfb = Family::new_with_constructor(latency_histogram as fn() -> Histogram);
        registry.register(
            "time_to_first_byte_seconds",
            "From request arrival to the backend's first byte",
            ttfb.clone(),
        );
        let latency = Family::new_with_constructor(latency_histogram as fn() -> Histogram);
        registry.register(
            "request_duration_seconds",
            "From request arrival to the last byte of the answer",
            latency.clone(),
        );
        let queue_wait = Family::new_with_constructor(latency_histogram as fn() -> Histogram);
        registry.register(
            "queue_wait_seconds",
            "Time spent waiting in the hub for a free slot",
            queue_wait.clone(),
        );
        let retries = Family::<BackendLabels, Counter>::default();
        registry.register(
            "retries",
            "Requests retried on another backend after this one failed before the first byte",
            retries.clone(),
        );
        let stream_errors = Family::<BackendLabels, Counter>::default();
        registry.register(
            "stream_errors",
            "Responses that broke after their first byte reached the client",
            stream_errors.clone(),
        );
        let queue_expired = Counter::default();
        registry.register(
            "queue_expired",
            "Requests that waited past their deadline",
            queue_expired.clone(),
        );
        let queue_rejected = Counter::default();
        registry.register(
            "queue_rejected",
            "Requests refused because the queue was full",
            queue_rejected.clone(),
        );
        let affinity_hits = Counter::default();
        registry.register(
            "affinity_hits",
            "Requests sent to the backend that served their conversation's prefix",
            affinity_hits.clone(),
        );
        let queue_depth = Family::<ModelLabels, Gauge>::default();
        registry.register(
            "queue_depth",
            "Requests waiting, by model",
            queue_depth.clone(),
        );
        let queue_depth_priority = Family::<PriorityLabels, Gauge>::default();
        registry.register(
            "queue_depth_by_priority",
            "Requests waiting, by priority",
            queue_depth_priority.clone(),
        );
        let slots_busy = Family::<BackendModelLabels, Gauge>::default();
        registry.register(
            "slots_busy",
            "Slots in use per backend and model",
            slots_busy.clone(),
        );
        let slots_total = Family::<BackendModelLabels, Gauge>::default();
        registry.register(
            "slots_total",
            "Slots per backend and model",
            slots_total.clone(),
        );
        let breaker = Family::<BreakerLabels, Gauge>::default();
        registry.register(
            "backend_breaker_state",
            "1 for each backend's current breaker state (closed, half_open, open)",
            breaker.clone(),
        );
        let draining = Family::<BackendLabels, Gauge>::default();
        registry.register(
            "backend_draining",
            "1 while a backend drains",
            draining.clone(),
        );
        Metrics {
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
            slots_busy,
            slots_total,
            breaker,
            draining,
        }
    }

    /// Renders the OpenMetrics text, refreshing state gauges from a snapshot
    /// of the scheduler first. `name_of` maps backend ids to names.
    pub fn render(
        &self,
        views: &[BackendView],
        stats: &QueueStats,
        name_of: &dyn Fn(drover_core::BackendId) -> String,
    ) -> String {
        self.queue_depth.clear();
        self.queue_depth_priority.clear();
        self.slots_busy.clear();
        self.slots_total.clear();
        self.breaker.clear();
        self.draining.clear();
        for (model, n) in &stats.by_model {
            self.queue_depth
                .get_or_create(&ModelLabels {
                    model: model.to_string(),
                })
                .set(*n as i64);
        }
        for (priority, n) in &stats.by_priority {
            self.queue_depth_priority
                .get_or_create(&PriorityLabels {
                    priority: *priority,
                })
                .set(*n as i64);
        }
        for view in views {
            let backend = name_of(view.id);
            for state in [
                BreakerState::Closed,
                BreakerState::HalfOpen,
                BreakerState::Open,
            ] {
                self.breaker
                    .get_or_create(&BreakerLabels {
                        backend: backend.clone(),
                        state: state.as_str(),
                    })
                    .set(i64::from(view.breaker == state));
            }
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
            }
        }
        let mut out = String::new();
        if encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        // The process figures go before the OpenMetrics terminator.
        let eof = out.rfind("# EOF").unwrap_or(out.len());
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
        out.insert_str(eof, &process);
        out
    }
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
