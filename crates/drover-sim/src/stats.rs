use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering, fence};

use serde::Serialize;
use tokio::sync::Notify;

/// A snapshot of what the simulator has seen, served as JSON at
/// `GET /_sim/stats`. Counters count since start or the last reset; gauges
/// (`in_flight`, `active`, `loaded`) are the state right now.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SimStats {
    /// Inference requests received, valid or not.
    pub requests_total: u64,
    /// Requests answered with an injected `500`.
    pub injected_errors: u64,
    /// Requests chosen to hang.
    pub hangs: u64,
    /// Responses whose connection was killed on purpose part-way.
    pub mid_stream_closes: u64,
    /// Requests read whole and met with their connection closing, under
    /// `Faults::drop_after_read_rate`.
    pub dropped_after_read: u64,
    /// Requests that failed for want of room in a shared context
    /// (`SimConfig::shared_context`).
    pub context_full: u64,
    /// Requests met with their connection closing and no answer, because
    /// they arrived on a connection that had carried a streamed answer
    /// under `Faults::close_after_stream`. Not in `requests_total`.
    pub stale_closes: u64,
    /// Model loads performed (JIT or through the load endpoint), each of
    /// which took the configured load time.
    pub loads: u64,
    /// Responses API requests that continued a response this server had
    /// produced (`previous_response_id`).
    pub continuations: u64,
    /// Prompt tokens found in a slot's KV cache, and prompt tokens
    /// prefilled: a conversation routed back to this server's cache moves
    /// tokens from the second to the first.
    pub prompt_tokens_cached: u64,
    pub prompt_tokens_prefilled: u64,
    /// Per model, by name.
    pub models: BTreeMap<String, ModelStats>,
}

impl SimStats {
    /// The stats of one model; all zero for a model the simulator doesn't serve.
    pub fn model(&self, name: &str) -> ModelStats {
        self.models.get(name).cloned().unwrap_or_default()
    }
}

/// What one model has seen.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ModelStats {
    /// Whether the model is loaded now.
    pub loaded: bool,
    /// Requests the server holds right now: waiting for a load or a slot,
    /// or running. A request counts until its answer has gone out or the
    /// server has noticed that its client left: at once while it waits or
    /// works on a plain answer, but mid-stream only when a write fails (at
    /// its next token), as a real server busy generating notices. Until
    /// then an abandoned stream keeps its slot.
    pub in_flight: u64,
    /// The most requests held at once, abandoned ones not yet noticed
    /// included: a client that sends a (server, model) more than its slots,
    /// or hands a slot on before the server has let go of it, shows here.
    pub max_in_flight: u64,
    /// Requests holding a slot right now.
    pub active: u64,
    /// The most requests ever holding a slot at once.
    pub max_active: u64,
    /// Requests answered in full.
    pub completed: u64,
    /// Requests whose client went away before the answer finished,
    /// counted when the server notices (see `in_flight`).
    pub cancelled: u64,
    /// Times this model was loaded (JIT or through a load endpoint).
    pub loads: u64,
    /// Times it was unloaded (asked, or evicted by the server itself).
    pub unloads: u64,
}

/// Server-wide counters behind [`SimStats`].
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) requests_total: AtomicU64,
    pub(crate) injected_errors: AtomicU64,
    pub(crate) hangs: AtomicU64,
    pub(crate) mid_stream_closes: AtomicU64,
    pub(crate) dropped_after_read: AtomicU64,
    pub(crate) context_full: AtomicU64,
    pub(crate) stale_closes: AtomicU64,
    pub(crate) loads: AtomicU64,
    pub(crate) continuations: AtomicU64,
    pub(crate) prompt_tokens_cached: AtomicU64,
    pub(crate) prompt_tokens_prefilled: AtomicU64,
}

impl Counters {
    pub(crate) fn reset(&self) {
        for counter in [
            &self.requests_total,
            &self.injected_errors,
            &self.hangs,
            &self.mid_stream_closes,
            &self.dropped_after_read,
            &self.context_full,
            &self.stale_closes,
            &self.loads,
            &self.continuations,
            &self.prompt_tokens_cached,
            &self.prompt_tokens_prefilled,
        ] {
            counter.store(0, Ordering::Relaxed);
        }
    }
}

/// Per-model counters behind [`ModelStats`].
#[derive(Debug, Default)]
pub(crate) struct ModelCounters {
    pub(crate) in_flight: AtomicU64,
    pub(crate) max_in_flight: AtomicU64,
    pub(crate) active: AtomicU64,
    pub(crate) max_active: AtomicU64,
    pub(crate) completed: AtomicU64,
    pub(crate) cancelled: AtomicU64,
    pub(crate) loads: AtomicU64,
    pub(crate) unloads: AtomicU64,
}

impl ModelCounters {
    pub(crate) fn enter(&self) {
        let now = self.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
        self.max_in_flight.fetch_max(now, Ordering::Relaxed);
    }

    pub(crate) fn activate(&self) {
        let now = self.active.fetch_add(1, Ordering::Relaxed) + 1;
        self.max_active.fetch_max(now, Ordering::Relaxed);
    }

    /// Zeroes the counters; the maxima restart from the current gauges, since
    /// requests open across a reset are still open.
    pub(crate) fn reset(&self) {
        self.completed.store(0, Ordering::Relaxed);
        self.cancelled.store(0, Ordering::Relaxed);
        self.loads.store(0, Ordering::Relaxed);
        self.unloads.store(0, Ordering::Relaxed);
        self.max_in_flight
            .store(self.in_flight.load(Ordering::Relaxed), Ordering::Relaxed);
        self.max_active
            .store(self.active.load(Ordering::Relaxed), Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self, loaded: bool) -> ModelStats {
        ModelStats {
            loaded,
            in_flight: self.in_flight.load(Ordering::Relaxed),
            max_in_flight: self.max_in_flight.load(Ordering::Relaxed),
            active: self.active.load(Ordering::Relaxed),
            max_active: self.max_active.load(Ordering::Relaxed),
            completed: self.completed.load(Ordering::Relaxed),
            cancelled: self.cancelled.load(Ordering::Relaxed),
            loads: self.loads.load(Ordering::Relaxed),
            unloads: self.unloads.load(Ordering::Relaxed),
        }
    }
}

/// Wakes tasks waiting for the stats to reach some state.
///
/// Notifying takes a lock inside [`Notify`], so the request path only does
/// it when someone is waiting; the watcher count makes that check one load.
#[derive(Debug, Default)]
pub(crate) struct StatsWatch {
    notify: Notify,
    watchers: AtomicUsize,
}

impl StatsWatch {
    /// Call after every counter change.
    pub(crate) fn changed(&self) {
        // Pairs with the fence in `wait_for`: either this load sees the
        // watcher, or the watcher's predicate sees the change.
        fence(Ordering::SeqCst);
        if self.watchers.load(Ordering::Relaxed) > 0 {
            self.notify.notify_waiters();
        }
    }

    /// Waits until `read` returns `Some`.
    pub(crate) async fn wait_for<T>(&self, mut read: impl FnMut() -> Option<T>) -> T {
        let _watching = Watching::new(&self.watchers);
        loop {
            let notified = self.notify.notified();
            let mut notified = std::pin::pin!(notified);
            // Registered before reading, so a change between the read and the
            // await still wakes us.
            notified.as_mut().enable();
            fence(Ordering::SeqCst);
            if let Some(value) = read() {
                return value;
            }
            notified.await;
        }
    }
}

struct Watching<'a>(&'a AtomicUsize);

impl<'a> Watching<'a> {
    fn new(watchers: &'a AtomicUsize) -> Self {
        watchers.fetch_add(1, Ordering::Relaxed);
        Watching(watchers)
    }
}

impl Drop for Watching<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}
