//! The last hour of traffic in ten-second buckets, for the dashboard:
//! requests, errors by status, output tokens, retries, failovers, and the
//! spread of times to first byte and of whole requests, in all, per backend
//! and per model; usage per key; the latest refusals and why.
//!
//! Memory is bounded by the fleet, not by traffic: a bucket holds one cell
//! per backend and per model seen in it (never per pair), and models are
//! recorded only under names the fleet knows (as for the metrics' labels).
//! Times are milliseconds since the Unix epoch, passed in: the dashboard
//! draws wall-clock time, and tests choose it.

use std::collections::{BTreeMap, VecDeque};

use rustc_hash::FxHashMap;
use std::sync::Mutex;
use std::time::Duration;

use drover_proto::dashboard::{Counts, KeyUsage, Rates, Refusal, TrafficPoint, TrafficTotals};

pub const BUCKET_MS: u64 = 10_000;
/// An hour of buckets.
pub const BUCKETS: usize = 360;
/// Refusals kept for the dashboard.
const REFUSALS: usize = 50;

/// Milliseconds since the Unix epoch, now.
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Durations in buckets a factor of √2 apart from 1 ms (to hours): a
/// quantile read off it is within about 19% of the truth.
#[derive(Clone, PartialEq)]
struct Spread([u32; SPREAD_BUCKETS]);

const SPREAD_BUCKETS: usize = 48;

impl Default for Spread {
    fn default() -> Self {
        Self([0; SPREAD_BUCKETS])
    }
}

impl Spread {
    fn add(&mut self, d: Duration) {
        let ms = d.as_secs_f64() * 1000.0;
        let i = if ms < 1.0 {
            0
        } else {
            ((2.0 * ms.log2()).floor() as usize + 1).min(SPREAD_BUCKETS - 1)
        };
        self.0[i] = self.0[i].saturating_add(1);
    }

    fn merge(&mut self, other: &Spread) {
        for (a, b) in self.0.iter_mut().zip(other.0.iter()) {
            *a = a.saturating_add(*b);
        }
    }

    /// The `q` quantile in milliseconds, placed within its bucket by rank
    /// (geometrically: the buckets are), so it moves smoothly as the
    /// spread does.
    fn quantile(&self, q: f64) -> Option<f64> {
        let n: u64 = self.0.iter().map(|&c| u64::from(c)).sum();
        if n == 0 {
            return None;
        }
        let rank = (q * n as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, &c) in self.0.iter().enumerate() {
            let before = seen;
            seen += u64::from(c);
            if seen >= rank {
                let share = (rank - before) as f64 / f64::from(c);
                // Bucket i > 0 holds [2^((i-1)/2), 2^(i/2)) ms; bucket 0,
                // under 1 ms.
                let ms = if i == 0 {
                    share
                } else {
                    2f64.powf((i as f64 - 1.0 + share) / 2.0)
                };
                return Some((ms * 100.0).round() / 100.0);
            }
        }
        None
    }
}

#[derive(Clone, Default)]
struct Cell {
    requests: u64,
    errors: BTreeMap<u16, u64>,
    tokens: u64,
    retries: u64,
    failovers: u64,
    ttft: Spread,
    latency: Spread,
}

impl Cell {
    fn merge(&mut self, other: &Cell) {
        self.requests += other.requests;
        for (status, n) in &other.errors {
            *self.errors.entry(*status).or_default() += n;
        }
        self.tokens += other.tokens;
        self.retries += other.retries;
        self.failovers += other.failovers;
        self.ttft.merge(&other.ttft);
        self.latency.merge(&other.latency);
    }

    fn counts(&self) -> Counts {
        Counts {
            requests: self.requests,
            errors: self
                .errors
                .iter()
                .map(|(s, n)| (s.to_string(), *n))
                .collect(),
            tokens: self.tokens,
            retries: self.retries,
            failovers: self.failovers,
            ttft_p50_ms: self.ttft.quantile(0.5),
            ttft_p95_ms: self.ttft.quantile(0.95),
            latency_p50_ms: self.latency.quantile(0.5),
            latency_p95_ms: self.latency.quantile(0.95),
        }
    }
}

#[derive(Default)]
struct Bucket {
    start_ms: u64,
    total: Cell,
    backends: FxHashMap<String, Cell>,
    models: FxHashMap<String, Cell>,
    keys: FxHashMap<String, KeyUsage>,
}

#[derive(Default)]
struct Inner {
    /// Oldest first; at most `BUCKETS`.
    buckets: VecDeque<Bucket>,
    refused: VecDeque<Refusal>,
}

impl Inner {
    /// The bucket holding `at_ms`, made (and the oldest dropped) as needed.
    /// A time before the newest bucket counts in the newest: clocks step.
    fn bucket(&mut self, at_ms: u64) -> &mut Bucket {
        let start_ms = at_ms - at_ms % BUCKET_MS;
        let newer = self.buckets.back().is_none_or(|b| b.start_ms < start_ms);
        if newer {
            self.buckets.push_back(Bucket {
                start_ms,
                ..Bucket::default()
            });
            let oldest = first_kept(at_ms);
            while self.buckets.front().is_some_and(|b| b.start_ms < oldest) {
                self.buckets.pop_front();
            }
        }
        let newest = self.buckets.len() - 1;
        &mut self.buckets[newest]
    }

    /// The cells an event counts in: the total, its backend's, its model's.
    fn each(
        &mut self,
        at_ms: u64,
        backend: Option<&str>,
        model: Option<&str>,
        f: impl Fn(&mut Cell),
    ) {
        let b = self.bucket(at_ms);
        f(&mut b.total);
        for (map, name) in [(&mut b.backends, backend), (&mut b.models, model)] {
            if let Some(name) = name {
                update(map, name, &f);
            }
        }
    }
}

/// The start of the oldest bucket of the hour that ends at `now_ms`.
fn first_kept(now_ms: u64) -> u64 {
    (now_ms - now_ms % BUCKET_MS).saturating_sub(BUCKET_MS * (BUCKETS as u64 - 1))
}

/// `f` on the entry for `name`, made if missing: a name is copied only the
/// first time a bucket sees it, not on every event.
fn update<T: Default>(map: &mut FxHashMap<String, T>, name: &str, f: impl FnOnce(&mut T)) {
    match map.get_mut(name) {
        Some(v) => f(v),
        None => {
            let mut v = T::default();
            f(&mut v);
            map.insert(name.to_string(), v);
        }
    }
}

#[derive(Default)]
pub struct Traffic {
    inner: Mutex<Inner>,
}

impl Traffic {
    fn with<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> T {
        f(&mut drover_core::sync::lock(&self.inner))
    }

    /// An answer went out with `status`; `backend` is the one that gave it
    /// (none for the hub's own errors), `model` a name the fleet knows.
    pub fn answered(&self, at_ms: u64, backend: Option<&str>, model: Option<&str>, status: u16) {
        self.with(|i| {
            i.each(at_ms, backend, model, |c| {
                c.requests += 1;
                if status >= 400 {
                    *c.errors.entry(status).or_default() += 1;
                }
            })
        });
    }

    /// A backend's answer went out with `status`, its first byte `ttft`
    /// after the request came: one event, one lock.
    pub fn served(&self, at_ms: u64, backend: &str, model: &str, status: u16, ttft: Duration) {
        self.with(|i| {
            i.each(at_ms, Some(backend), Some(model), |c| {
                c.ttft.add(ttft);
                c.requests += 1;
                if status >= 400 {
                    *c.errors.entry(status).or_default() += 1;
                }
            })
        });
    }

    /// An answer's last byte went out.
    pub fn finished(
        &self,
        at_ms: u64,
        backend: &str,
        model: &str,
        latency: Duration,
        tokens: Option<u64>,
    ) {
        self.with(|i| {
            i.each(at_ms, Some(backend), Some(model), |c| {
                c.latency.add(latency);
                c.tokens += tokens.unwrap_or(0);
            })
        });
    }

    /// An attempt on `backend` failed before the first byte; another follows.
    pub fn retried(&self, at_ms: u64, backend: &str, model: &str) {
        self.with(|i| i.each(at_ms, Some(backend), Some(model), |c| c.retries += 1));
    }

    /// `backend` answered a request another backend had failed.
    pub fn failed_over(&self, at_ms: u64, backend: &str, model: &str) {
        self.with(|i| i.each(at_ms, Some(backend), Some(model), |c| c.failovers += 1));
    }

    /// The hub refused a request with an error of its own.
    pub fn refused(&self, refusal: Refusal) {
        self.with(|i| {
            i.refused.push_front(refusal);
            i.refused.truncate(REFUSALS);
        });
    }

    /// A key's usage: a request let in (with its estimated prompt tokens),
    /// one turned away, or an answer's output tokens.
    pub fn key_used(&self, at_ms: u64, key: &str, f: impl FnOnce(&mut KeyUsage)) {
        self.with(|i| {
            update(&mut i.bucket(at_ms).keys, key, f);
        });
    }

    /// The points from `since_ms` on (the bucket holding it included),
    /// oldest first, up to `now_ms`: empty buckets are points too, so a
    /// chart's time axis has no gaps.
    pub fn series(&self, since_ms: u64, now_ms: u64) -> Vec<TrafficPoint> {
        let first = first_kept(now_ms).max(since_ms - since_ms % BUCKET_MS);
        self.with(|i| {
            let mut found = i.buckets.iter().filter(|b| b.start_ms >= first).peekable();
            let mut out = Vec::new();
            let mut start = first;
            while start <= now_ms {
                let point = match found.next_if(|b| b.start_ms == start) {
                    Some(b) => TrafficPoint {
                        start_ms: start,
                        totals: b.total.counts(),
                        by_backend: b
                            .backends
                            .iter()
                            .map(|(name, c)| (name.clone(), c.requests))
                            .collect(),
                    },
                    _ => TrafficPoint {
                        start_ms: start,
                        ..TrafficPoint::default()
                    },
                };
                out.push(point);
                start += BUCKET_MS;
            }
            out
        })
    }

    /// Rates over the last ten seconds: the bucket filling now and the
    /// share of the one before that the window still covers.
    pub fn rates(&self, now_ms: u64) -> Rates {
        let start = now_ms - now_ms % BUCKET_MS;
        let covered = (now_ms - start) as f64 / BUCKET_MS as f64;
        self.with(|i| {
            let mut rates = Rates::default();
            for b in i.buckets.iter().rev().take(2) {
                let weight = if b.start_ms == start {
                    1.0
                } else if b.start_ms + BUCKET_MS == start {
                    1.0 - covered
                } else {
                    continue;
                };
                let secs = BUCKET_MS as f64 / 1000.0;
                rates.requests_per_second += weight * b.total.requests as f64 / secs;
                rates.tokens_per_second += weight * b.total.tokens as f64 / secs;
                rates.errors_per_second +=
                    weight * b.total.errors.values().sum::<u64>() as f64 / secs;
            }
            rates
        })
    }

    /// The hour up to `now_ms` per backend and per model, each sorted by
    /// name.
    pub fn totals(&self, now_ms: u64) -> (Vec<TrafficTotals>, Vec<TrafficTotals>) {
        let oldest = first_kept(now_ms);
        self.with(|i| {
            let mut backends: BTreeMap<&str, Cell> = BTreeMap::new();
            let mut models: BTreeMap<&str, Cell> = BTreeMap::new();
            for b in i.buckets.iter().filter(|b| b.start_ms >= oldest) {
                for (name, c) in &b.backends {
                    backends.entry(name).or_default().merge(c);
                }
                for (name, c) in &b.models {
                    models.entry(name).or_default().merge(c);
                }
            }
            let list = |m: BTreeMap<&str, Cell>| {
                m.into_iter()
                    .map(|(name, c)| TrafficTotals {
                        name: name.to_string(),
                        totals: c.counts(),
                    })
                    .collect()
            };
            (list(backends), list(models))
        })
    }

    /// Usage per key over the hour up to `now_ms`, sorted by key.
    pub fn keys(&self, now_ms: u64) -> Vec<KeyUsage> {
        let oldest = first_kept(now_ms);
        self.with(|i| {
            let mut keys: BTreeMap<&str, KeyUsage> = BTreeMap::new();
            for b in i.buckets.iter().filter(|b| b.start_ms >= oldest) {
                for (name, u) in &b.keys {
                    let sum = keys.entry(name).or_default();
                    sum.requests += u.requests;
                    sum.prompt_tokens += u.prompt_tokens;
                    sum.completion_tokens += u.completion_tokens;
                    sum.limited += u.limited;
                }
            }
            keys.into_iter()
                .map(|(name, u)| KeyUsage {
                    key: name.to_string(),
                    ..u
                })
                .collect()
        })
    }

    pub fn refusals(&self) -> Vec<Refusal> {
        self.with(|i| i.refused.iter().cloned().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_800_000_000_000;

    #[test]
    fn quantiles_land_within_a_bucket_of_the_truth() {
        let mut s = Spread::default();
        for ms in 1..=100 {
            s.add(Duration::from_millis(ms));
        }
        let p50 = s.quantile(0.5).unwrap();
        let p95 = s.quantile(0.95).unwrap();
        assert!((50.0 / 1.42..=50.0 * 1.42).contains(&p50), "{p50}");
        assert!((95.0 / 1.42..=95.0 * 1.42).contains(&p95), "{p95}");
        assert_eq!(Spread::default().quantile(0.5), None);
        s.add(Duration::from_secs(100_000));
        assert!(s.quantile(1.0).unwrap() > 1e6);
    }

    #[test]
    fn an_hour_of_buckets_with_no_gaps_and_no_more() {
        let t = Traffic::default();
        t.answered(T0, Some("a"), Some("m"), 200);
        t.answered(T0 + 25_000, Some("b"), Some("m"), 503);
        t.answered(T0 + 25_001, None, Some("m"), 429);
        let series = t.series(0, T0 + 25_001);
        let tail: Vec<_> = series.iter().rev().take(3).rev().collect();
        assert_eq!(tail[0].totals.requests, 1);
        assert_eq!(tail[1].totals.requests, 0, "an empty bucket is a point");
        assert_eq!(tail[2].totals.requests, 2);
        assert_eq!(tail[2].totals.errors["503"], 1);
        assert_eq!(tail[2].totals.errors["429"], 1);
        assert_eq!(tail[2].by_backend.get("b"), Some(&1));
        assert_eq!(series.len(), BUCKETS);
        // Two hours on, the first hour is gone.
        let later = T0 + 2 * 3_600_000;
        t.answered(later, Some("a"), Some("m"), 200);
        let series = t.series(0, later);
        assert_eq!(series.len(), BUCKETS);
        assert_eq!(series.iter().map(|p| p.totals.requests).sum::<u64>(), 1);
        assert_eq!(t.with(|i| i.buckets.len()), 1);
        let (backends, models) = t.totals(later);
        assert_eq!(backends.len(), 1);
        assert_eq!(models[0].totals.requests, 1);
        // An hour of quiet later, nothing is left to count.
        t.key_used(later, "k", |u| u.requests += 1);
        let quiet = later + 3_600_000;
        assert_eq!(t.totals(quiet), (vec![], vec![]));
        assert_eq!(t.keys(quiet), vec![]);
        assert_eq!(t.keys(later)[0].requests, 1);
    }

    #[test]
    fn the_series_since_a_time_is_its_tail() {
        let t = Traffic::default();
        t.answered(T0, Some("a"), Some("m"), 200);
        t.answered(T0 + 10_000, Some("a"), Some("m"), 200);
        let tail = t.series(T0 + 10_000, T0 + 10_500);
        assert_eq!(tail.len(), 1);
        assert_eq!(tail[0].start_ms, T0 + 10_000);
    }

    #[test]
    fn rates_cover_the_last_ten_seconds() {
        let t = Traffic::default();
        for _ in 0..20 {
            t.answered(T0, Some("a"), Some("m"), 200);
        }
        // Half-way through the next bucket, half the last one still counts.
        let r = t.rates(T0 + 15_000);
        assert!((r.requests_per_second - 1.0).abs() < 1e-9, "{r:?}");
        assert_eq!(t.rates(T0 + 30_000).requests_per_second, 0.0);
    }

    #[test]
    fn refusals_keep_the_newest_fifty() {
        let t = Traffic::default();
        for n in 0..60 {
            t.refused(Refusal {
                at_ms: n,
                model: "m".into(),
                client: "c".into(),
                status: 429,
                code: "rate_limited".into(),
                message: String::new(),
            });
        }
        let kept = t.refusals();
        assert_eq!(kept.len(), REFUSALS);
        assert_eq!(kept[0].at_ms, 59);
    }
}
