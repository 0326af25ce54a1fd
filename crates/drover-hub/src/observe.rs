//! The one observer of what happens to requests, loads and keys. Every
//! event is told here once and feeds both the Prometheus metrics and the
//! dashboard's traffic (and the request log lines), so that a new caller of
//! the forwarding service (the durable-job runner, say) counts like the
//! HTTP edge by calling the same methods.
//!
//! A request's metric handles are resolved once per (model, backend), the
//! first time that pair is seen, not looked up with fresh label strings on
//! every event: a [`Pair`] holds them, and the request carries it.
//!
//! Memory follows the fleet, not the traffic: pairs are made only for
//! models a backend served (names the fleet knows), as the metrics' labels
//! and the traffic's cells are.

use rustc_hash::FxHashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use drover_proto::dashboard::{KeyUsage, Refusal};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::Histogram;

use crate::error::{ApiError, ErrorFormat, echo};
use crate::metrics::{
    BackendLabels, BackendModelLabels, KeyLabels, KeyLimitLabels, LoadLabels, Metrics, ModelLabels,
    OutcomeLabels, RequestLabels,
};
use crate::traffic::{Traffic, unix_ms};
use http::HeaderValue;

/// Where a request's events go: Prometheus and the last hour's traffic.
#[derive(Default)]
pub struct Observer {
    metrics: Metrics,
    traffic: Traffic,
    models: RwLock<FxHashMap<String, Arc<ModelHandles>>>,
}

/// A model's metric handles, and its pairs with each backend.
struct ModelHandles {
    queue_wait: Histogram,
    ttfb: Histogram,
    latency: Histogram,
    pairs: RwLock<FxHashMap<String, Arc<Pair>>>,
}

/// One (model, backend)'s metric handles, resolved once: what a request
/// that reached that backend counts with.
pub struct Pair {
    pub model: String,
    pub backend: String,
    ttfb: Histogram,
    latency: Histogram,
    retries: Counter,
    stream_errors: Counter,
    /// Answers by status: a handful of statuses per pair.
    answered: RwLock<Vec<(u16, Counter)>>,
}

/// How a request that reached a backend ended, for its log line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ending {
    Complete,
    Broken,
    ClientGone,
}

impl Ending {
    fn as_str(self) -> &'static str {
        match self {
            Ending::Complete => "complete",
            Ending::Broken => "broken",
            Ending::ClientGone => "client_gone",
        }
    }
}

/// What the request log line says of a request that reached a backend.
#[derive(Debug, Clone)]
pub struct Served {
    pub request_id: HeaderValue,
    pub caller: String,
    pub status: u16,
    pub queue_wait: Duration,
    pub ttfb: Duration,
    pub arrived: tokio::time::Instant,
}

impl Observer {
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    pub fn traffic(&self) -> &Traffic {
        &self.traffic
    }

    fn model(&self, model: &str) -> Arc<ModelHandles> {
        if let Some(h) = drover_core::sync::read(&self.models).get(model) {
            return h.clone();
        }
        let labels = ModelLabels {
            model: model.to_string(),
        };
        let m = &self.metrics;
        let handles = Arc::new(ModelHandles {
            queue_wait: m.queue_wait.get_or_create(&labels).clone(),
            ttfb: m.ttfb.get_or_create(&labels).clone(),
            latency: m.latency.get_or_create(&labels).clone(),
            pairs: RwLock::default(),
        });
        drover_core::sync::write(&self.models)
            .entry(model.to_string())
            .or_insert(handles)
            .clone()
    }

    /// The handles of `model` on `backend`, made the first time.
    pub fn pair(&self, backend: &str, model: &str) -> Arc<Pair> {
        let handles = self.model(model);
        if let Some(p) = drover_core::sync::read(&handles.pairs).get(backend) {
            return p.clone();
        }
        let labels = BackendLabels {
            backend: backend.to_string(),
        };
        let pair = Arc::new(Pair {
            model: model.to_string(),
            backend: backend.to_string(),
            ttfb: handles.ttfb.clone(),
            latency: handles.latency.clone(),
            retries: self.metrics.retries.get_or_create(&labels).clone(),
            stream_errors: self.metrics.stream_errors.get_or_create(&labels).clone(),
            answered: RwLock::default(),
        });
        drover_core::sync::write(&handles.pairs)
            .entry(backend.to_string())
            .or_insert(pair)
            .clone()
    }

    /// A request waited `waited` for a slot (one attempt's wait).
    pub fn waited(&self, model: &str, waited: Duration) {
        self.model(model).queue_wait.observe(waited.as_secs_f64());
    }

    /// An attempt on the pair's backend failed before the first byte, or
    /// its server ran out of room: the request goes round again.
    pub fn retried(&self, pair: &Pair) {
        pair.retries.inc();
        self.traffic.retried(unix_ms(), &pair.backend, &pair.model);
    }

    /// The pair's backend answered a request another backend had failed.
    pub fn failed_over(&self, pair: &Pair) {
        self.traffic
            .failed_over(unix_ms(), &pair.backend, &pair.model);
    }

    /// A backend's answer goes out with `status`, its first byte in hand
    /// `ttfb` after the request came.
    pub fn answered(&self, pair: &Pair, status: u16, ttfb: Duration, affinity_hit: bool) {
        pair.ttfb.observe(ttfb.as_secs_f64());
        if affinity_hit {
            self.metrics.affinity_hits.inc();
        }
        self.traffic
            .served(unix_ms(), &pair.backend, &pair.model, status, ttfb);
        if let Some((_, c)) = drover_core::sync::read(&pair.answered)
            .iter()
            .find(|(s, _)| *s == status)
        {
            c.inc();
            return;
        }
        let counter = self
            .metrics
            .requests
            .get_or_create(&RequestLabels {
                model: pair.model.clone(),
                backend: pair.backend.clone(),
                status,
            })
            .clone();
        counter.inc();
        drover_core::sync::write(&pair.answered).push((status, counter));
    }

    /// The hub answered with an error of its own, in the shape of `errors`.
    /// The request's model is a metric label or a traffic cell only where
    /// the fleet knows it (`known`), so that made-up names cannot grow
    /// either.
    pub fn refused(&self, err: &ApiError, errors: ErrorFormat, refused: Refused<'_>) {
        let Refused {
            request_id,
            model,
            known,
            client,
        } = refused;
        let (status, code, message) = (err.status_as(errors).as_u16(), err.code(), err.to_string());
        let shown = model.map(echo).unwrap_or_default();
        tracing::info!(
            target: "drover::request",
            request_id = %String::from_utf8_lossy(request_id.as_bytes()),
            model = %shown,
            status,
            code,
            error = %message,
            "request refused"
        );
        self.traffic.refused(Refusal {
            at_ms: unix_ms(),
            model: shown.into_owned(),
            client: client.to_string(),
            status,
            code: code.to_string(),
            message: echo(&message).into_owned(),
        });
        let label = model.filter(|_| known);
        self.traffic.answered(unix_ms(), None, label, status);
        self.metrics
            .requests
            .get_or_create(&RequestLabels {
                model: label.unwrap_or_default().to_string(),
                backend: "none".into(),
                status,
            })
            .inc();
    }

    /// The answer is over (or its client left): its latency, its output
    /// tokens, the one log line of a request that reached a backend.
    pub fn finished(&self, pair: &Pair, served: &Served, tokens: Option<u64>, ending: Ending) {
        let latency = served.arrived.elapsed();
        pair.latency.observe(latency.as_secs_f64());
        self.traffic
            .finished(unix_ms(), &pair.backend, &pair.model, latency, tokens);
        tracing::info!(
            target: "drover::request",
            request_id = %String::from_utf8_lossy(served.request_id.as_bytes()),
            model = %echo(&pair.model),
            client = %served.caller,
            backend = %pair.backend,
            status = served.status,
            queue_ms = served.queue_wait.as_millis() as u64,
            ttfb_ms = served.ttfb.as_millis() as u64,
            total_ms = latency.as_millis() as u64,
            outcome = ending.as_str(),
            "request"
        );
    }

    /// An answer broke after its first byte.
    pub fn stream_broke(&self, pair: &Pair, reason: &str) {
        pair.stream_errors.inc();
        tracing::warn!(backend = %pair.backend, model = %echo(&pair.model), %reason, "answer broke after its first byte");
    }

    /// A waiting request left the queue at its deadline.
    pub fn expired(&self) {
        self.metrics.queue_expired.inc();
    }

    /// A request was turned away because the queue is full.
    pub fn queue_full(&self) {
        self.metrics.queue_rejected.inc();
    }

    /// A client key's request was let in, with about `prompt_tokens`.
    pub fn key_admitted(&self, key: &str, prompt_tokens: u32) {
        self.traffic.key_used(unix_ms(), key, |u| {
            u.requests += 1;
            u.prompt_tokens += u64::from(prompt_tokens);
        });
        let labels = KeyLabels {
            key: key.to_string(),
        };
        self.metrics.key_requests.get_or_create(&labels).inc();
        self.metrics
            .key_prompt_tokens
            .get_or_create(&labels)
            .inc_by(u64::from(prompt_tokens));
    }

    /// A client key's request was turned away by one of its limits.
    pub fn key_limited(&self, key: &str, limit: &'static str) {
        self.traffic
            .key_used(unix_ms(), key, |u: &mut KeyUsage| u.limited += 1);
        self.metrics
            .key_limited
            .get_or_create(&KeyLimitLabels {
                key: key.to_string(),
                limit,
            })
            .inc();
    }

    /// A client key's answer used `tokens` output tokens.
    pub fn key_charged(&self, key: &str, tokens: u64) {
        self.traffic
            .key_used(unix_ms(), key, |u| u.completion_tokens += tokens);
        self.metrics
            .key_completion_tokens
            .get_or_create(&KeyLabels {
                key: key.to_string(),
            })
            .inc_by(tokens);
    }

    /// A job attempt ended: `completed`, `failed`, `dead`, `retried`,
    /// `cancelled`, `expired` or `lost`.
    pub fn job_ended(&self, outcome: &'static str) {
        self.metrics
            .job_attempts
            .get_or_create(&crate::metrics::OutcomeLabels { outcome })
            .inc();
    }

    /// A load the hub carried out ended.
    pub fn loaded(&self, backend: &str, model: &str, ok: bool) {
        self.metrics
            .model_loads
            .get_or_create(&LoadLabels {
                backend: backend.to_string(),
                model: model.to_string(),
                outcome: if ok { "ok" } else { "failed" },
            })
            .inc();
    }

    /// A job callback's delivery attempt ended (`outcome` as
    /// [`Metrics::callbacks`] names them).
    pub fn callback(&self, outcome: &'static str) {
        self.metrics
            .callbacks
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
    }

    /// An unload the hub carried out succeeded.
    pub fn unloaded(&self, backend: &str, model: &str) {
        self.metrics
            .model_unloads
            .get_or_create(&BackendModelLabels {
                backend: backend.to_string(),
                model: model.to_string(),
            })
            .inc();
    }
}

/// Whose request the hub refused.
pub struct Refused<'a> {
    pub request_id: &'a HeaderValue,
    /// The request's model, once read.
    pub model: Option<&'a str>,
    /// Whether the fleet knows that model.
    pub known: bool,
    /// The caller's name, once known.
    pub client: &'a str,
}
