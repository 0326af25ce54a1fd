//! [`Scheduler`]: one deterministic state machine over the fleet's slots
//! and breakers ([`Fleet`]), the waiting requests ([`WaitQueue`]), where a
//! request goes (`Placement`) and which models are loaded where
//! (`ModelManager`). Callers feed it events (a request arrived, a request
//! finished, a backend changed, time passed) and carry out the
//! [`Decision`]s it returns. It owns the skeleton: admission, a slot's
//! release, the poll that expires, places and plans loads, and which models
//! each change makes worth a look at the next poll.
//!
//! Invariants it keeps (tests try to break each):
//! - with a late-binding policy, in-flight requests on a (backend, model)
//!   never exceed its slots;
//! - every submitted request is dispatched, queued, or rejected; every
//!   queued request is later dispatched, expired, cancelled or unroutable;
//! - after every call, no waiting request could be placed on a free slot
//!   of a backend it would go to (work conservation): one it has not failed
//!   on, with the model loaded or, when no such backend takes work, one
//!   that lists it;
//! - a retry never goes back to a backend it already failed on: when no
//!   other backend lists its model, it is refused or leaves the queue.

use std::collections::BTreeSet;
use std::time::Duration;

use drover_core::{BackendId, ClientKey, ModelName, Priority, RequestId};

use crate::affinity::Affinity;
use crate::breaker::{BreakerConfig, BreakerState};
use crate::fleet::{Api, BackendStatus, Fleet, ModelSpec};
use crate::manager::{Lent, ModelManager, Outlook, Refusal};
use crate::placement::{Placement, Tiers};
use crate::policy::Policy;
use crate::queue::WaitQueue;
use crate::reserve::{Foreground, ReserveConfig};
use crate::residency::ModelPolicy;

#[derive(Clone, Debug)]
pub struct SchedulerConfig {
    pub policy: Policy,
    /// Requests that may wait at once; beyond it new requests are refused.
    pub max_queue: usize,
    /// Bytes that waiting requests may hold at once (their bodies); beyond
    /// it new requests are refused as for a full queue.
    pub max_queue_bytes: usize,
    /// Waiting this long raises a request's standing by one priority point.
    pub aging: Duration,
    /// Prefix hashes the affinity index remembers.
    pub affinity_capacity: usize,
    pub breaker: BreakerConfig,
    /// An idle model is unloaded after this long (where the server can
    /// unload); `None`: never. A model's own policy overrides it.
    pub ttl: Option<Duration>,
    /// How long requests for a model that only an eviction of a busy one
    /// could place are passed over before that backend is cleared for it.
    pub swap_after: Duration,
    /// A model with nothing running is not idle for eviction until this
    /// long after its last request started or ended: clients that send
    /// one request after another leave it unused for only milliseconds
    /// between them, and evicting it then would cost a load per request.
    pub idle_after: Duration,
    /// A load's expected time where none was measured on that backend.
    pub default_load_time: Duration,
    /// Slots kept free for interactive traffic beside background work
    /// ([`crate::reserve`]); `None`: none, every free slot goes to
    /// whatever waits.
    pub reserve: Option<ReserveConfig>,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            policy: Policy::Drover,
            max_queue: 10_000,
            max_queue_bytes: 512 * 1024 * 1024,
            aging: Duration::from_secs(2),
            affinity_capacity: 65_536,
            breaker: BreakerConfig::default(),
            ttl: None,
            swap_after: Duration::from_secs(30),
            idle_after: Duration::from_millis(500),
            default_load_time: Duration::from_secs(10),
            reserve: None,
        }
    }
}

/// What the scheduler knows of a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub id: RequestId,
    pub model: ModelName,
    pub priority: Priority,
    /// Whose share of the fleet it uses: an API key's identity.
    pub client: ClientKey,
    /// Tells users apart within one client (the OpenAI `user` field); 0
    /// when nothing does. Rotating it buys no share against other clients.
    pub user: u64,
    /// When it first arrived; a retry keeps it, so it keeps its place.
    pub arrival: Duration,
    /// Past this it may no longer wait.
    pub deadline: Option<Duration>,
    pub affinity: Affinity,
    /// Backends that already failed this request.
    pub exclude: Vec<BackendId>,
    /// Bytes the request holds while it waits (its body).
    pub size: usize,
    /// The API it speaks: only backends that serve it may take it.
    pub api: Api,
    /// The backend it must go to while that backend lists its model: the
    /// one holding the state it continues (a Responses
    /// `previous_response_id`). Ignored once that backend no longer lists
    /// the model, so that the server, not the hub, says what was lost.
    pub pin: Option<BackendId>,
    /// Prompt tokens, roughly: what a backend without its prefix cached
    /// would have to prefill. 0 when unknown.
    pub prompt_tokens: u32,
    /// The most tokens its answer may have, where the request says: with
    /// the prompt, what it takes of a context its server's slots share.
    pub max_tokens: Option<u32>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dispatch {
    pub request: RequestId,
    pub backend: BackendId,
    pub model: ModelName,
    /// The backend was chosen because it served the conversation's prefix.
    pub affinity_hit: bool,
    /// No backend besides this one that the request has not tried lists the
    /// model and takes work (healthy, not draining): if this attempt fails,
    /// a retry has nowhere to go.
    pub last_resort: bool,
    /// Requests the hub had running on that (backend, model) with this
    /// one: 1 when it started alone.
    pub running: u32,
    /// Its number among the dispatches to that (backend, model): one that
    /// started alone ran alone while no later one has
    /// ([`Fleet::dispatched`](crate::Fleet::dispatched)).
    pub seq: u64,
    /// Tokens of a shared context it takes there: give them back with
    /// [`Scheduler::finish_holding`]. 0 where slots are not known to share.
    pub tokens: u32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Admission {
    /// Run it now; a slot on `backend` is held until [`Scheduler::finish`].
    Dispatched(Dispatch),
    /// It waits; a later [`Scheduler::poll`] decides.
    Queued,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reject {
    /// No backend lists the model.
    ModelNotFound,
    /// Backends list the model, but every one is draining or its breaker is
    /// open.
    NoHealthyBackend,
    /// The queue is full (by count or by bytes); try again after about
    /// `retry_after`.
    QueueFull { retry_after: Duration },
    /// A retry whose request was already tried on every backend that lists
    /// the model.
    Exhausted,
    /// Backends list the model, but none serves the API the request speaks.
    ApiNotServed,
    /// The model fits in no backend's memory, even alone: it is `size`
    /// bytes, `needs` with its slots and the server's share, and the
    /// largest memory is `largest`.
    NeverFits { size: u64, needs: u64, largest: u64 },
    /// Only loading it would place the request, and its last load failed
    /// on every backend that could: the latest failure's backend and what
    /// it said; no new attempt before `retry_after`.
    LoadFailed {
        backend: BackendId,
        message: String,
        retry_after: Duration,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    Dispatch(Dispatch),
    /// It waited past its deadline and has left the queue.
    Expired(RequestId),
    /// No backend lists its model any more, or (for a retry) none it has
    /// not failed on already; it has left the queue.
    Unroutable(RequestId),
    /// Load `model` on `backend`, unloading `evict` first (in that order);
    /// report the ends with [`Scheduler::unload_finished`] and
    /// [`Scheduler::load_finished`]. Requests for it wait meanwhile.
    Load(LoadOrder),
    /// Unload an idle model whose time to live passed; report the end with
    /// [`Scheduler::unload_finished`].
    Unload {
        backend: BackendId,
        model: ModelName,
    },
    /// The load that would have placed it failed (and no other backend can
    /// take it): it has left the queue.
    LoadFailed {
        request: RequestId,
        backend: BackendId,
        message: String,
    },
    /// It waited past its deadline while its model was still loading on
    /// `backend`, which should be done in about `retry_after`.
    ExpiredLoading {
        request: RequestId,
        backend: BackendId,
        retry_after: Duration,
    },
}

/// A load the scheduler decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadOrder {
    pub backend: BackendId,
    pub model: ModelName,
    /// Idle models to unload first, to make room, least recently used
    /// first: on this backend or, where it shares a machine's memory with
    /// other servers, on those.
    pub evict: Vec<crate::residency::Placed>,
}

/// How a dispatched request ended, as far as the backend is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The backend answered; `service` is how long it held the slot.
    Success { service: Duration },
    /// The backend failed it (refused, 5xx, timed out, broke mid-stream).
    Failure,
    /// It ended in a way that says nothing about the backend: the client
    /// left, the backend was busy (429), the backend was removed.
    Neutral,
    /// The server ran out of room for it with others running (llama.cpp's
    /// slots sharing one context that filled up): overload, not a broken
    /// server. Neutral for the breaker; the (backend, model) takes one
    /// request fewer at once from now on, raised again slowly.
    Overloaded,
}

/// Something the hub should tell its operator: a breaker changed, or a
/// model's learned concurrency moved. Drained by [`Scheduler::take_notices`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Notice {
    Breaker {
        backend: BackendId,
        state: BreakerState,
        reason: String,
    },
    Limit {
        backend: BackendId,
        model: ModelName,
        /// `None`: all its slots again.
        limit: Option<u32>,
        slots: u32,
    },
}

#[derive(Debug)]
pub struct Scheduler {
    config: SchedulerConfig,
    fleet: Fleet,
    queue: WaitQueue,
    placement: Placement,
    manager: ModelManager,
    /// Models whose capacity or queue changed since the last poll.
    dirty: BTreeSet<ModelName>,
    /// Backends whose first answer is due: until each has answered or
    /// failed its first probe, a request for a model nobody lists waits,
    /// since it may be theirs (right after a start, or `backends add`).
    awaited: BTreeSet<BackendId>,
    /// What the operator should hear of, until the hub takes it.
    notices: Vec<Notice>,
    /// The latest time any call brought.
    clock: Duration,
    /// Foreground arrivals, for the slots kept free for them.
    foreground: Foreground,
}

impl Scheduler {
    pub fn new(config: SchedulerConfig) -> Self {
        Scheduler {
            queue: WaitQueue::new(config.aging),
            placement: Placement::new(config.policy, config.affinity_capacity),
            manager: ModelManager::new(&config),
            fleet: Fleet::default(),
            dirty: BTreeSet::new(),
            awaited: BTreeSet::new(),
            notices: Vec::new(),
            clock: Duration::ZERO,
            foreground: Foreground::default(),
            config,
        }
    }

    pub fn config(&self) -> &SchedulerConfig {
        &self.config
    }

    pub fn fleet(&self) -> &Fleet {
        &self.fleet
    }

    pub fn queue(&self) -> &WaitQueue {
        &self.queue
    }

    /// Adds a backend or replaces what it lists, as just observed.
    pub fn upsert_backend(&mut self, id: BackendId, models: Vec<ModelSpec>) {
        self.observe_backend(id, models, None, self.clock);
    }

    /// Adds a backend or replaces what it lists, from a probe that started
    /// at `probed`: the models' reported states do not undo a load or
    /// unload decided here that is still pending or ended after it started.
    pub fn observe_backend(
        &mut self,
        id: BackendId,
        models: Vec<ModelSpec>,
        probed: Option<Duration>,
        now: Duration,
    ) {
        self.tick(now);
        self.mark_backend_dirty(id);
        for m in &models {
            self.dirty.insert(m.name.clone());
        }
        self.fleet
            .upsert(id, models, &self.config.breaker, probed, now);
        self.stop_awaiting(id);
    }

    /// A backend was added and its first probe is under way: requests for
    /// a model nobody lists wait for its answer ([`Scheduler::observe_backend`])
    /// or its failure ([`Scheduler::unanswered`]) before they are refused.
    pub fn await_backend(&mut self, id: BackendId) {
        if !self.fleet.contains(id) {
            self.awaited.insert(id);
        }
    }

    /// A backend's first probe failed: requests waiting for a model only
    /// it might have had are refused at the next poll, unless another
    /// awaited backend may still have it.
    pub fn unanswered(&mut self, id: BackendId) {
        self.stop_awaiting(id);
    }

    /// Whether a backend's first answer is still awaited.
    pub fn awaiting(&self) -> bool {
        !self.awaited.is_empty()
    }

    fn stop_awaiting(&mut self, id: BackendId) {
        if self.awaited.remove(&id) && self.awaited.is_empty() {
            // What waited for a model nobody lists is settled now.
            let unknown: Vec<ModelName> = self
                .queue
                .stats()
                .by_model
                .into_iter()
                .map(|(m, _)| m)
                .filter(|m| !self.fleet.knows_model(m.as_str()))
                .collect();
            self.dirty.extend(unknown);
        }
    }

    pub(crate) fn tick(&mut self, now: Duration) {
        self.clock = self.clock.max(now);
        if let Some(reserve) = &self.config.reserve
            && self
                .foreground
                .next_change(reserve.window)
                .is_some_and(|at| at <= self.clock)
        {
            // A reserve shrinks: the background may take what it frees.
            self.dirty.extend(self.foreground.models().cloned());
            self.foreground.expire(reserve.window, self.clock);
        }
    }

    /// The backends that take work for `model` now, with the slots kept
    /// free for its foreground.
    fn tiers(&self, model: &ModelName, now: Duration) -> Tiers {
        let mut tiers = self.placement.tiers(&self.fleet, model);
        if let Some(reserve) = &self.config.reserve {
            tiers.reserve(self.reserved(model.as_str(), now), reserve.background_below);
        }
        tiers
    }

    /// Sets what a backend says beyond its models: `max_concurrent`, the
    /// APIs it serves, its own queue and busy counts. Call it after
    /// [`Scheduler::upsert_backend`] with each probe's result.
    pub fn set_backend_status(&mut self, id: BackendId, status: BackendStatus) {
        if self.fleet.set_status(id, status) {
            self.mark_backend_dirty(id);
        }
    }

    /// A measured prefill: `tokens` prompt tokens took `took` on `backend`
    /// before the first output token. Smoothed with weight 1/8, like
    /// service times.
    pub fn observe_prefill(
        &mut self,
        backend: BackendId,
        model: &ModelName,
        tokens: u32,
        took: Duration,
    ) {
        if tokens == 0 || took.is_zero() {
            return;
        }
        let rate = f64::from(tokens) / took.as_secs_f64();
        if let Some(m) = self
            .fleet
            .backends
            .get_mut(&backend)
            .and_then(|b| b.models.get_mut(model.as_str()))
        {
            m.prefill_rate = Some(match m.prefill_rate {
                Some(prev) => (prev * 7.0 + rate) / 8.0,
                None => rate,
            });
        }
    }

    /// Removes a backend. Requests running there finish normally; their
    /// [`Scheduler::finish`] is then a no-op.
    pub fn remove_backend(&mut self, id: BackendId) -> bool {
        self.stop_awaiting(id);
        self.mark_backend_dirty(id);
        self.placement.forget_backend(id);
        self.fleet.backends.remove(&id).is_some()
    }

    /// A draining backend takes no new work; what runs there finishes.
    pub fn set_draining(&mut self, id: BackendId, draining: bool) -> bool {
        let Some(b) = self.fleet.backends.get_mut(&id) else {
            return false;
        };
        b.draining = draining;
        if draining {
            self.placement.end_holds_for(id);
        }
        self.mark_backend_dirty(id);
        true
    }

    /// The result of an active health probe.
    pub fn probe(&mut self, id: BackendId, ok: bool, now: Duration) {
        let cfg = self.config.breaker.clone();
        let Some(b) = self.fleet.backends.get_mut(&id) else {
            return;
        };
        // A breaker that half-opens here must wake its waiting requests too.
        let before = b.breaker.state();
        let reopened = b.breaker.tick(now);
        let judged = if ok {
            b.breaker.on_probe_success(&cfg)
        } else {
            b.breaker.on_probe_failure(now, &cfg)
        };
        let changed = reopened || judged;
        if changed {
            self.note_breaker_change(id);
        }
        self.notice_breaker(
            id,
            before,
            if ok {
                "a probe succeeded"
            } else {
                "a probe failed"
            },
        );
    }

    /// Notes a breaker that is not as it was `before`, saying why.
    fn notice_breaker(&mut self, id: BackendId, before: BreakerState, cause: &str) {
        let Some(b) = self.fleet.backends.get(&id) else {
            return;
        };
        let state = b.breaker.state();
        if state == before {
            return;
        }
        let threshold = self.config.breaker.failure_threshold;
        let reason = match (before, state) {
            (BreakerState::Closed, BreakerState::Open) => {
                format!("{threshold} failures in a row; the last: {cause}")
            }
            (BreakerState::HalfOpen, BreakerState::Open) => {
                format!("its trial failed: {cause}")
            }
            (BreakerState::Open, BreakerState::HalfOpen) => {
                "its cooldown passed: one trial request may go".to_string()
            }
            (_, BreakerState::Closed) => format!("back: {cause}"),
            _ => cause.to_string(),
        };
        self.notices.push(Notice::Breaker {
            backend: id,
            state,
            reason,
        });
    }

    /// What the operator should hear of since the last call: breaker
    /// changes and learned concurrency, in order.
    pub fn take_notices(&mut self) -> Vec<Notice> {
        std::mem::take(&mut self.notices)
    }

    /// When a backend whose breaker is open may take a trial request: the
    /// soonest among those that list `model`, from `now`. `None` when none
    /// is open (nothing tells when one will take work).
    pub fn reopens_in(&self, model: &str, now: Duration) -> Option<Duration> {
        self.fleet
            .backends
            .values()
            .filter(|b| b.models.get(model).is_some_and(|m| m.listed))
            .filter_map(|b| b.breaker.reopens_at())
            .min()
            .map(|at| at.saturating_sub(now))
    }

    /// Sets config's word on a model: its time to live, whether it is warm.
    pub fn set_model_policy(&mut self, model: ModelName, policy: ModelPolicy) {
        self.manager
            .set_policy(model, policy, &mut self.dirty, self.clock);
    }

    /// Pins a model: never evicted or unloaded for idleness, and loaded
    /// where it fits whenever no backend holds it. False if it was pinned.
    pub fn pin(&mut self, model: &ModelName) -> bool {
        self.manager.pin(model, &mut self.dirty, self.clock)
    }

    /// False if it was not pinned.
    pub fn unpin(&mut self, model: &ModelName) -> bool {
        self.manager.unpin(model)
    }

    pub fn is_pinned(&self, model: &str) -> bool {
        self.manager.is_pinned(model)
    }

    pub fn pinned(&self) -> impl Iterator<Item = &ModelName> {
        self.manager.pinned()
    }

    /// An operator's load of `model`, on `backend` or wherever it would be
    /// ready soonest. On success the load is pending as if the scheduler
    /// had decided it: carry out the order and report its end.
    pub fn begin_load(
        &mut self,
        backend: Option<BackendId>,
        model: &ModelName,
        now: Duration,
    ) -> Result<LoadOrder, Refusal> {
        self.tick(now);
        self.manager.begin_load(
            &mut self.fleet,
            &self.queue,
            &mut self.dirty,
            backend,
            model,
            now,
        )
    }

    /// An operator's unload of `model` from `backend`. On success the
    /// unload is pending: carry it out and report its end.
    pub fn begin_unload(
        &mut self,
        backend: BackendId,
        model: &ModelName,
        now: Duration,
    ) -> Result<(), Refusal> {
        self.tick(now);
        self.manager
            .begin_unload(&mut self.fleet, &mut self.dirty, backend, model, now)
    }

    /// A load ended: `Ok` with how long it took, or what went wrong.
    pub fn load_finished(
        &mut self,
        backend: BackendId,
        model: &ModelName,
        result: Result<Duration, String>,
        now: Duration,
    ) {
        self.tick(now);
        let lent = Lent {
            fleet: &mut self.fleet,
            queue: &mut self.queue,
            dirty: &mut self.dirty,
        };
        self.manager
            .load_finished(lent, backend, model, result, now, self.clock);
    }

    /// An unload ended. One that failed leaves the model loaded as far as
    /// the scheduler knows, until discovery says otherwise.
    pub fn unload_finished(
        &mut self,
        backend: BackendId,
        model: &ModelName,
        result: Result<(), String>,
        now: Duration,
    ) {
        self.tick(now);
        self.manager.unload_finished(
            &mut self.fleet,
            &mut self.dirty,
            backend,
            model,
            result,
            now,
        );
    }

    /// Where `model` is loading and about how long it has left.
    pub fn loading(&self, model: &str, now: Duration) -> Option<(BackendId, Duration)> {
        self.manager.loading(&self.fleet, model, now)
    }

    /// A new request.
    pub fn submit(&mut self, request: Request, now: Duration) -> Result<Admission, Reject> {
        self.admit(request, now, false)
    }

    /// A request that failed on a backend before any byte reached its client,
    /// going round again. It keeps its arrival time and is not refused for a
    /// full queue: it was accepted once already.
    pub fn resubmit(&mut self, request: Request, now: Duration) -> Result<Admission, Reject> {
        self.admit(request, now, true)
    }

    fn admit(&mut self, request: Request, now: Duration, retry: bool) -> Result<Admission, Reject> {
        self.tick(now);
        self.tick_breakers(now);
        if !self.fleet.knows_model(request.model.as_str()) {
            if self.awaited.is_empty() {
                return Err(Reject::ModelNotFound);
            }
            // A backend that has not answered yet may have it: wait for
            // its first answer, within the request's own deadline.
            self.refuse_if_full(&request, retry, now)?;
            self.queue.push(request, retry);
            return Ok(Admission::Queued);
        }
        if !self
            .fleet
            .lists_model_beyond(request.model.as_str(), |id| request.exclude.contains(&id))
        {
            return Err(Reject::Exhausted);
        }
        if !self
            .fleet
            .lists_model_for(request.model.as_str(), request.api)
        {
            return Err(Reject::ApiNotServed);
        }
        if let Some(reserve) = &self.config.reserve
            && !retry
            && request.priority >= reserve.background_below
        {
            self.foreground.arrived(&request.model, now);
        }
        let candidates = self.tiers(&request.model, now).for_request(&request);
        // Nothing takes it now: it waits if a load will place it.
        let loads = candidates.is_empty();
        if loads && let Outlook::Refuse(reject) = self.manager.outlook(&self.fleet, &request, now) {
            return Err(reject);
        }
        let late = self.config.policy.binds_late();
        // A newcomer never overtakes requests already waiting for the same
        // model: it joins the queue and the next poll orders them all.
        let others_waiting = loads || (late && self.queue.len_for(request.model.as_str()) > 0);
        let mut hold = None;
        if !others_waiting {
            let hit = self.placement.affinity_hit(&request);
            hold = self
                .placement
                .hold_for(&self.fleet, &request, &candidates, hit, now);
            if hold.is_none() {
                if let Some(backend) = self.placement.choose(&candidates, hit) {
                    return Ok(Admission::Dispatched(
                        self.dispatch(&request, backend, hit, now),
                    ));
                }
                debug_assert!(late, "early-binding policies always choose");
            }
        }
        self.refuse_if_full(&request, retry, now)?;
        let model = request.model.clone();
        if let Some(hold) = hold {
            self.placement.hold(request.id, hold);
        }
        self.queue.push(request, retry);
        if loads {
            self.manager.may_need_load(model.clone(), now);
        }
        self.dirty.insert(model);
        Ok(Admission::Queued)
    }

    /// A new request that would overfill the queue (by count or by bytes)
    /// is refused; a retry was accepted once already and never is.
    fn refuse_if_full(&self, request: &Request, retry: bool, now: Duration) -> Result<(), Reject> {
        let over_bytes =
            self.queue.bytes().saturating_add(request.size) > self.config.max_queue_bytes;
        if !retry && (self.queue.len() >= self.config.max_queue || over_bytes) {
            return Err(Reject::QueueFull {
                retry_after: self.retry_after(request.model.as_str(), now),
            });
        }
        Ok(())
    }

    /// Removes a waiting request whose client left. Returns false if it was
    /// not waiting (already dispatched or gone).
    pub fn cancel(&mut self, id: RequestId) -> bool {
        self.placement.unhold(id);
        self.queue.remove(id).is_some()
    }

    /// Releases the slot a dispatched request held, exactly once.
    pub fn finish(
        &mut self,
        backend: BackendId,
        model: &ModelName,
        outcome: Outcome,
        now: Duration,
    ) {
        self.finish_holding(backend, model, 0, outcome, now);
    }

    /// [`Scheduler::finish`] of a dispatch that took `tokens` of a shared
    /// context ([`Dispatch::tokens`]), which it gives back.
    pub fn finish_holding(
        &mut self,
        backend: BackendId,
        model: &ModelName,
        tokens: u32,
        outcome: Outcome,
        now: Duration,
    ) {
        self.tick(now);
        let cfg = self.config.breaker.clone();
        let Some(b) = self.fleet.backends.get_mut(&backend) else {
            return;
        };
        let before = b.breaker.state();
        let reopened = b.breaker.tick(now);
        // The limit learned, if it moved: `Some(None)` back to all slots.
        let mut limit_moved: Option<(Option<u32>, u32)> = None;
        if let Some(m) = b.models.get_mut(model.as_str()) {
            debug_assert!(m.busy > 0, "slot released twice");
            debug_assert!(m.tokens_in_flight >= tokens, "tokens given back twice");
            let running = m.busy;
            m.busy = m.busy.saturating_sub(1);
            m.tokens_in_flight = m.tokens_in_flight.saturating_sub(tokens);
            m.last_used = now;
            m.used = true;
            match outcome {
                Outcome::Success { service } => {
                    // Smoothed with weight 1/8: steady, yet it follows a
                    // backend that slows down within a few dozen requests.
                    m.service = Some(match m.service {
                        Some(prev) => (prev * 7 + service) / 8,
                        None => service,
                    });
                    limit_moved = m.succeeded().map(|l| (l, m.slots));
                }
                Outcome::Overloaded => {
                    limit_moved = m.overloaded(running).map(|l| (Some(l), m.slots));
                }
                Outcome::Failure | Outcome::Neutral => {}
            }
            if !m.listed && m.busy == 0 {
                b.models.remove(model.as_str());
            }
        }
        if limit_moved.is_some() {
            b.recount();
        }
        b.busy = b.busy.saturating_sub(1);
        let changed = match outcome {
            Outcome::Success { .. } => b.breaker.on_success(&cfg),
            Outcome::Failure => b.breaker.on_failure(now, &cfg),
            Outcome::Neutral | Outcome::Overloaded => {
                b.breaker.on_neutral();
                false
            }
        };
        if let Some((limit, slots)) = limit_moved {
            self.notices.push(Notice::Limit {
                backend,
                model: model.clone(),
                limit,
                slots,
            });
        }
        self.notice_breaker(
            backend,
            before,
            match outcome {
                Outcome::Success { .. } => "a request succeeded",
                _ => "a request failed",
            },
        );
        let Some(b) = self.fleet.backends.get(&backend) else {
            return;
        };
        // A slot under a backend-wide cap frees room for every model there,
        // and an idle model may let another load there.
        let shared = b.status.max_concurrent.is_some() || self.manager.has_pending();
        self.dirty.insert(model.clone());
        if changed || reopened || shared {
            self.mark_backend_dirty(backend);
        }
    }

    /// Carries time forward: expires waiting requests past their deadline,
    /// half-opens breakers whose cooldown passed, and dispatches waiting
    /// requests onto free slots.
    pub fn poll(&mut self, now: Duration) -> Vec<Decision> {
        let mut decisions = Vec::new();
        self.tick(now);
        self.tick_breakers(now);
        for id in self.queue.expired(now) {
            let Some(r) = self.queue.remove(id) else {
                continue;
            };
            self.placement.unhold(id);
            decisions.push(match self.loading(r.model.as_str(), now) {
                Some((backend, retry_after)) => Decision::ExpiredLoading {
                    request: id,
                    backend,
                    retry_after,
                },
                None => Decision::Expired(id),
            });
        }
        self.manager.expire_idle(
            &mut self.fleet,
            &self.queue,
            &mut self.dirty,
            now,
            &mut decisions,
        );
        self.placement.end_holds_due(now, &mut self.dirty);
        let dirty = std::mem::take(&mut self.dirty);
        for model in dirty {
            if self.queue.len_for(model.as_str()) == 0 {
                if self.manager.wanted_unheld(&self.fleet, &model) {
                    self.manager.may_need_load(model, now);
                }
                continue;
            }
            // Every request, if no backend lists the model any more; else
            // the retries that have tried every backend that does.
            let fleet = &self.fleet;
            if !fleet.knows_model(model.as_str()) && !self.awaited.is_empty() {
                // Its backend may not have answered yet.
                continue;
            }
            let stranded = if fleet.knows_model(model.as_str()) {
                self.queue.retries_where(model.as_str(), |r| {
                    !fleet.lists_model_beyond(model.as_str(), |id| r.exclude.contains(&id))
                })
            } else {
                self.queue.ids_for(model.as_str())
            };
            for id in stranded {
                self.queue.remove(id);
                self.placement.unhold(id);
                decisions.push(Decision::Unroutable(id));
            }
            self.drain_model(&model, now, &mut decisions);
            if self.queue.len_for(model.as_str()) > 0
                || self.manager.wanted_unheld(&self.fleet, &model)
            {
                self.manager.may_need_load(model, now);
            }
        }
        self.manager.plan_loads(
            &mut self.fleet,
            &mut self.queue,
            &mut self.dirty,
            &self.placement,
            now,
            &mut decisions,
        );
        decisions
    }

    /// The backend a waiting request is held for, while its hold lasts: it
    /// waits for that backend's slot, which holds its prefix, rather than
    /// take a free one elsewhere.
    pub fn held_for(&self, id: RequestId) -> Option<BackendId> {
        self.placement.held_for(id)
    }

    /// The free slots of `model` kept for its foreground at `now`: a
    /// background request waits rather than take one of the last so many
    /// ([`crate::reserve`]).
    pub fn reserved(&self, model: &str, now: Duration) -> u32 {
        let Some(reserve) = &self.config.reserve else {
            return 0;
        };
        let (slots, service) = self.fleet.model_capacity(model);
        self.foreground
            .reserve(model, slots, service, reserve.window, now)
    }

    /// When the caller should poll again even if nothing else happens.
    pub fn next_wakeup(&self) -> Option<Duration> {
        let breakers = self
            .fleet
            .backends
            .values()
            .filter_map(|b| b.breaker.reopens_at());
        self.queue
            .next_deadline()
            .into_iter()
            .chain(breakers)
            .chain(self.placement.hold_ends())
            .chain(
                self.config
                    .reserve
                    .as_ref()
                    .and_then(|r| self.foreground.next_change(r.window)),
            )
            .chain(
                self.manager
                    .next_wakeup(&self.fleet, &self.queue, self.clock),
            )
            .min()
    }

    /// When a request refused for a full queue should come back: its
    /// expected wait, from a second to a minute.
    fn retry_after(&self, model: &str, now: Duration) -> Duration {
        self.expected_wait(model, now)
            .clamp(Duration::from_secs(1), Duration::from_secs(60))
    }

    /// How long a new request for `model` should wait before it starts:
    /// nothing when a slot is free and nobody waits; else the rest of a
    /// load under way (or a whole load, when none holds it), plus the queue
    /// ahead over the model's slots times its service time. What a client
    /// reads to decide whether to come back later: the one estimate behind
    /// `/v1/queue`, the dashboard and a full queue's `Retry-After`.
    pub fn expected_wait(&self, model: &str, now: Duration) -> Duration {
        let name = ModelName::new(model);
        let tiers = self.placement.tiers(&self.fleet, &name);
        let ahead = self.queue.len_for(model) as u32;
        if ahead == 0 && tiers.plain_free() {
            return Duration::ZERO;
        }
        let load = match self.loading(model, now) {
            Some((_, left)) => left,
            None if tiers.none_for_plain() => self
                .manager
                .fastest_load(&self.fleet, model)
                .unwrap_or_default(),
            None => Duration::ZERO,
        };
        let (slots, service) = self.fleet.model_capacity(model);
        let service = service.unwrap_or(Duration::from_secs(1));
        load + service * (ahead + 1).div_ceil(slots.max(1))
    }

    fn drain_model(&mut self, model: &ModelName, now: Duration, decisions: &mut Vec<Decision>) {
        self.release_holds(model, now, decisions);
        loop {
            let tiers = self.tiers(model, now);
            // A plain request takes a loaded backend while any takes work;
            // only a retry, another API or a pin can use a free slot of a
            // backend that merely lists the model then. With none of those
            // waiting, nothing could be placed and the queue is not walked.
            let worth_a_look = tiers.plain_free()
                || (self.queue.particular_for(model.as_str()) > 0 && tiers.any_free());
            if !worth_a_look {
                return;
            }
            let placement = &self.placement;
            let can_place = |r: &Request| placement.can_place(&tiers, r);
            let Some(request) = self.queue.pop_best(model.as_str(), now, can_place) else {
                return;
            };
            let candidates = tiers.for_request(&request);
            let hit = self.placement.affinity_hit(&request);
            if !self.placement.was_held(request.id)
                && let Some(hold) =
                    self.placement
                        .hold_for(&self.fleet, &request, &candidates, hit, now)
            {
                self.placement.hold(request.id, hold);
                self.queue.push(request, true);
                continue;
            }
            match self.placement.choose(&candidates, hit) {
                Some(backend) => {
                    decisions.push(Decision::Dispatch(
                        self.dispatch(&request, backend, hit, now),
                    ));
                }
                None => {
                    // can_place said yes, so this cannot happen; keep the
                    // request rather than lose it.
                    self.queue.push(request, true);
                    return;
                }
            }
        }
    }

    /// Held requests whose backend has a free slot go first: they were
    /// already chosen in turn when they started to wait for it.
    fn release_holds(&mut self, model: &ModelName, now: Duration, decisions: &mut Vec<Decision>) {
        for (id, backend) in self.placement.held_on(model) {
            let free = self
                .fleet
                .backends
                .get(&backend)
                .is_some_and(|b| b.admits() && b.has_room())
                && self
                    .fleet
                    .backends
                    .get(&backend)
                    .and_then(|b| b.models.get(model.as_str()))
                    .is_some_and(|m| m.listed && m.has_room());
            if !free {
                continue;
            }
            let Some(request) = self.queue.remove(id) else {
                self.placement.unhold(id);
                continue;
            };
            decisions.push(Decision::Dispatch(self.dispatch(
                &request,
                backend,
                Some(backend),
                now,
            )));
        }
    }

    /// See [`Event::Adopted`]: whether the slot is now counted.
    pub(crate) fn adopt(
        &mut self,
        backend: BackendId,
        model: &ModelName,
        tokens: u32,
        now: Duration,
    ) -> bool {
        let Some(b) = self.fleet.backends.get_mut(&backend) else {
            return false;
        };
        let Some(m) = b.models.get_mut(model.as_str()) else {
            return false;
        };
        m.busy += 1;
        m.last_used = now;
        m.used = true;
        m.dispatched += 1;
        m.tokens_in_flight = m.tokens_in_flight.saturating_add(tokens);
        b.busy += 1;
        self.mark_backend_dirty(backend);
        true
    }

    fn dispatch(
        &mut self,
        request: &Request,
        backend: BackendId,
        hit: Option<BackendId>,
        now: Duration,
    ) -> Dispatch {
        let mut running = 1;
        let mut tokens = 0;
        let mut seq = 0;
        if let Some(b) = self.fleet.backends.get_mut(&backend) {
            b.busy += 1;
            b.breaker.on_dispatch();
            if let Some(m) = b.models.get_mut(request.model.as_str()) {
                m.busy += 1;
                m.last_used = now;
                m.used = true;
                running = m.busy;
                m.dispatched += 1;
                seq = m.dispatched;
                tokens = m
                    .tokens_for(request.prompt_tokens, request.max_tokens)
                    .unwrap_or(0);
                m.tokens_in_flight = m.tokens_in_flight.saturating_add(tokens);
            }
        }
        self.placement.placed(request, backend);
        let affinity_hit = hit == Some(backend);
        let last_resort = !self
            .fleet
            .serves_model_beyond(request.model.as_str(), |id| {
                id == backend || request.exclude.contains(&id)
            });
        Dispatch {
            request: request.id,
            backend,
            model: request.model.clone(),
            affinity_hit,
            last_resort,
            running,
            seq,
            tokens,
        }
    }

    fn tick_breakers(&mut self, now: Duration) {
        let changed: Vec<(BackendId, BreakerState)> = self
            .fleet
            .backends
            .iter_mut()
            .filter_map(|(id, b)| {
                let before = b.breaker.state();
                b.breaker.tick(now).then_some((*id, before))
            })
            .collect();
        for (id, before) in changed {
            self.mark_backend_dirty(id);
            self.notice_breaker(id, before, "time passed");
        }
    }

    fn note_breaker_change(&mut self, id: BackendId) {
        if self.fleet.backends.get(&id).is_some_and(|b| !b.admits()) {
            self.placement.end_holds_for(id);
        }
        self.mark_backend_dirty(id);
    }

    fn mark_backend_dirty(&mut self, id: BackendId) {
        self.fleet.mark_dirty(id, &mut self.dirty);
    }
}
