//! Figures from one run against one target.

use std::time::Duration;

use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub target: String,
    pub requests: usize,
    pub ok: usize,
    pub errors: usize,
    pub seconds: f64,
    pub requests_per_sec: f64,
    pub latency_ms: Percentiles,
    pub ttfb_ms: Percentiles,
    /// The target's own CPU seconds per request, when it reports
    /// `process_cpu_seconds_total` (a drover hub does).
    pub cpu_us_per_request: Option<f64>,
    /// A sample of error messages, for the reader.
    pub error_samples: Vec<String>,
}

#[derive(Debug, Clone, Copy, Serialize, Default)]
pub struct Percentiles {
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub max: f64,
}

impl Percentiles {
    pub fn of(samples: &mut [Duration]) -> Self {
        if samples.is_empty() {
            return Percentiles::default();
        }
        samples.sort_unstable();
        let at = |q: f64| {
            let i = ((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len()) - 1;
            samples[i].as_secs_f64() * 1000.0
        };
        Percentiles {
            p50: at(0.50),
            p95: at(0.95),
            p99: at(0.99),
            max: at(1.0),
        }
    }
}

pub fn print_table(reports: &[Report]) {
    println!(
        "{:<8} {:>8} {:>7} {:>7} {:>10} {:>9} {:>9} {:>9} {:>10} {:>10} {:>12}",
        "target",
        "requests",
        "ok",
        "errors",
        "req/s",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "ttfb p50",
        "ttfb p99",
        "cpu us/req"
    );
    for r in reports {
        println!(
            "{:<8} {:>8} {:>7} {:>7} {:>10.1} {:>9.2} {:>9.2} {:>9.2} {:>10.2} {:>10.2} {:>12}",
            r.target,
            r.requests,
            r.ok,
            r.errors,
            r.requests_per_sec,
            r.latency_ms.p50,
            r.latency_ms.p95,
            r.latency_ms.p99,
            r.ttfb_ms.p50,
            r.ttfb_ms.p99,
            r.cpu_us_per_request
                .map_or_else(|| "-".to_string(), |c| format!("{c:.1}")),
        );
        for e in &r.error_samples {
            println!("         error: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_pick_nearest_rank() {
        let mut v: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        let p = Percentiles::of(&mut v);
        assert_eq!((p.p50, p.p95, p.p99, p.max), (50.0, 95.0, 99.0, 100.0));
        assert_eq!(Percentiles::of(&mut []).p99, 0.0);
    }
}
