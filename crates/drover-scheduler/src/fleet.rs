//! The fleet as the scheduler sees it: backends, the models each lists, and
//! slots. The hub holds every slot, so `busy` is exact: it is incremented
//! when a request is dispatched and decremented exactly once when it ends.

use std::collections::{BTreeMap, BTreeSet};

use rustc_hash::FxHashMap;
use std::time::Duration;

use drover_core::{BackendId, ModelName};

use crate::breaker::{Breaker, BreakerConfig, BreakerState};
use crate::residency::{LoadFailure, Machine, MemoryTerms, Residency, ServerState};

/// What discovery (or config) says about one model on one backend.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelSpec {
    pub name: ModelName,
    /// Whether it is in memory, as the server says.
    pub state: ServerState,
    /// Requests the backend can run at once for this model without slowing
    /// them all down.
    pub slots: u32,
    /// Bytes it takes in memory when loaded, where known.
    pub size: Option<u64>,
    /// Tokens of context a slot has, where the server tells.
    pub context: Option<u32>,
}

impl ModelSpec {
    pub fn loaded(name: &str, slots: u32) -> Self {
        ModelSpec::new(name, ServerState::Loaded, slots)
    }

    pub fn unloaded(name: &str, slots: u32) -> Self {
        ModelSpec::new(name, ServerState::Unloaded, slots)
    }

    pub fn new(name: &str, state: ServerState, slots: u32) -> Self {
        ModelSpec {
            name: ModelName::new(name),
            state,
            slots,
            size: None,
            context: None,
        }
    }

    pub fn with_size(mut self, bytes: u64) -> Self {
        self.size = Some(bytes);
        self
    }
}

/// What a request needs of a backend. Every LLM server serves OpenAI's
/// chat, completions and embeddings; the coding agents' APIs only some. A
/// worker (a backend whose "models" are the capabilities it offers) serves
/// tasks and nothing else, and only a worker serves them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Api {
    #[default]
    OpenAi,
    /// `POST /v1/responses`.
    Responses,
    /// `POST /v1/messages` and `/v1/messages/count_tokens`.
    Messages,
    /// A task for a worker's capability.
    Task,
}

impl Api {
    pub fn as_str(self) -> &'static str {
        match self {
            Api::OpenAi => "openai",
            Api::Responses => "responses",
            Api::Messages => "messages",
            Api::Task => "task",
        }
    }
}

/// What a backend says (or config says) beyond its models: limits that
/// span its models, what it serves, and how busy it is by its own count.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BackendStatus {
    /// Requests it may run at once over all its models, for servers that
    /// share one GPU between several loaded models.
    pub max_concurrent: Option<u32>,
    /// It serves `/v1/responses`.
    pub responses: bool,
    /// It serves `/v1/messages`.
    pub messages: bool,
    /// The server reports requests waiting in its own queue (vLLM): more
    /// work sent there would only wait there, so none is sent until it
    /// drains.
    pub saturated: bool,
    /// Busy slots the server itself reports per model (llama.cpp `/slots`),
    /// whoever sent the work.
    pub reported_busy: Vec<(ModelName, u32)>,
    /// The hub can load models here (and so decides where and when); a
    /// server that cannot be told to load either loads on its own when asked
    /// for a model or serves only what it has.
    pub can_load: bool,
    pub can_unload: bool,
    /// Its memory budget, where the server or config tells the total.
    pub memory: Option<MemoryTerms>,
    /// The machine it shares with other servers, and that machine's
    /// budget, which all of them fill together.
    pub machine: Option<Machine>,
    /// Models it may hold at once, by config.
    pub max_loaded: Option<u32>,
    /// A worker: its models are capabilities, and it takes tasks only.
    pub tasks: bool,
}

impl BackendStatus {
    pub fn serves(&self, api: Api) -> bool {
        serves(api, self.responses, self.messages, self.tasks)
    }
}

/// Whether a backend serving the agents' APIs as said, or tasks (a worker),
/// serves `api`.
pub(crate) fn serves(api: Api, responses: bool, messages: bool, tasks: bool) -> bool {
    match api {
        Api::OpenAi => !tasks,
        Api::Responses => responses && !tasks,
        Api::Messages => messages && !tasks,
        Api::Task => tasks,
    }
}

#[derive(Clone, Debug)]
pub(crate) struct ModelSlots {
    pub residency: Residency,
    /// When the last load or unload the scheduler decided ended: a probe
    /// that started before then may not change the residency.
    pub settled: Option<Duration>,
    pub slots: u32,
    pub size: Option<u64>,
    pub busy: u32,
    /// Slots busy with work the hub did not send (the server's own count
    /// beyond the hub's at the last probe).
    pub external: u32,
    /// False once discovery stopped listing the model; kept until its
    /// in-flight requests finish so their slots are released exactly once.
    pub listed: bool,
    /// Smoothed service time, for queue-wait estimates.
    pub service: Option<Duration>,
    /// Smoothed prompt tokens per second of prefill, where measured.
    pub prefill_rate: Option<f64>,
    /// Smoothed time a load took here.
    pub load_time: Option<Duration>,
    /// When a request last started or ended here (or it was first seen, or
    /// loaded: time to live counts from then).
    pub last_used: Duration,
    /// A request has run here.
    pub used: bool,
    /// The last load here failed; none is tried again before its time.
    pub failure: Option<LoadFailure>,
    /// Requests it has been found to take at once, below its slots: the
    /// server ran out of room (a context its slots share filled) with more
    /// running. Lowered at once, raised again one by one; `None` when it
    /// takes all its slots.
    pub limit: Option<u32>,
    /// Successes since the limit last moved, toward raising it.
    pub limit_credit: u32,
    /// Tokens of context a slot has, where the server tells.
    pub context: Option<u32>,
    /// The server ran out of room with several running: its slots share
    /// one context, so what runs there is counted in tokens too.
    pub shared_context: bool,
    /// Tokens of that shared context the requests running here take.
    pub tokens_in_flight: u32,
    /// Requests dispatched here so far: whether any started beside one.
    pub dispatched: u64,
}

/// Tokens of a `context` a request takes: its prompt and its answer's
/// limit, or all of it without a limit (a server generates to the end).
pub(crate) fn tokens_taken(context: u32, prompt: u32, max_tokens: Option<u32>) -> u32 {
    max_tokens
        .map_or(context, |m| prompt.saturating_add(m))
        .min(context)
}

/// Successes per request of the limit that raise a learned limit by one:
/// a few full rounds at the limit without running out of room.
const RAISE_AFTER_ROUNDS: u32 = 4;

impl ModelSlots {
    /// The requests it may take at once: its slots, or the limit learned
    /// from the server running out of room.
    pub fn usable(&self) -> u32 {
        self.limit.map_or(self.slots, |l| l.min(self.slots)).max(1)
    }

    pub fn has_room(&self) -> bool {
        self.busy + self.external < self.usable()
    }

    /// Tokens of its shared context a request takes (its prompt and its
    /// answer's limit, or the whole context without one), while the slots
    /// are known to share one: `None` otherwise.
    pub fn tokens_for(&self, prompt: u32, max_tokens: Option<u32>) -> Option<u32> {
        let context = self.context.filter(|_| self.shared_context)?;
        Some(tokens_taken(context, prompt, max_tokens))
    }

    /// Its shared context's size and what of it is taken, while its slots
    /// are known to share one.
    pub(crate) fn budget(&self) -> Option<crate::placement::Budget> {
        Some(crate::placement::Budget {
            context: self.context.filter(|_| self.shared_context)?,
            in_flight: self.tokens_in_flight,
        })
    }

    /// The server ran out of room with `running` requests (this one
    /// included): it takes one fewer from now on. The new limit, if it
    /// moved.
    pub fn overloaded(&mut self, running: u32) -> Option<u32> {
        self.shared_context = true;
        let limit = running.saturating_sub(1).max(1).min(self.usable());
        self.limit_credit = 0;
        (self.limit != Some(limit)).then(|| {
            self.limit = Some(limit);
            limit
        })
    }

    /// A request succeeded: a learned limit rises by one after a few full
    /// rounds at it, and is gone once it reaches the slots. The new limit,
    /// if it moved (`Some(None)`: all its slots again).
    pub fn succeeded(&mut self) -> Option<Option<u32>> {
        let limit = self.limit?;
        self.limit_credit += 1;
        if self.limit_credit < limit * RAISE_AFTER_ROUNDS {
            return None;
        }
        self.limit_credit = 0;
        self.limit = (limit + 1 < self.slots).then_some(limit + 1);
        Some(self.limit)
    }

    pub fn is_loaded(&self) -> bool {
        self.residency == Residency::Loaded
    }

    /// Nothing runs on it, by the hub's count or the server's.
    pub fn idle(&self) -> bool {
        self.busy == 0 && self.external == 0
    }
}

#[derive(Clone, Debug)]
pub(crate) struct Backend {
    pub models: FxHashMap<ModelName, ModelSlots>,
    pub busy: u32,
    pub draining: bool,
    pub breaker: Breaker,
    pub status: BackendStatus,
    /// Bytes per second its loads have taken, smoothed: an estimate for a
    /// model never loaded here.
    pub load_rate: Option<f64>,
    /// How long its loads have taken, whatever the model, smoothed: an
    /// estimate for a model whose size nobody says.
    pub load_time: Option<Duration>,
    /// A model the backend is being cleared for (aging has passed a busy
    /// model's turn): it takes no new work for other models until the
    /// load.
    pub reserved: Option<ModelName>,
    /// Sums over its models, kept by [`Backend::recount`] after every change
    /// to a model's residency, slots, listing or external load: read for
    /// every request, they must not cost a walk over every model.
    totals: Totals,
}

/// What [`Backend::has_room`] and [`Backend::total_slots`] need of all of a
/// backend's models.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Totals {
    /// Slots busy with work the hub did not send, over listed models.
    external: u32,
    /// Slots of the listed models that are loaded.
    loaded_slots: u32,
    /// Slots of every listed model.
    listed_slots: u32,
}

impl Backend {
    fn new(config: &BreakerConfig) -> Self {
        Backend {
            models: FxHashMap::default(),
            busy: 0,
            draining: false,
            breaker: Breaker::new(config),
            status: BackendStatus::default(),
            load_rate: None,
            load_time: None,
            reserved: None,
            totals: Totals::default(),
        }
    }

    /// The sums as the models are now.
    fn counted(&self) -> Totals {
        let mut t = Totals::default();
        for m in self.models.values().filter(|m| m.listed) {
            t.external = t.external.saturating_add(m.external);
            t.listed_slots = t.listed_slots.saturating_add(m.usable());
            if m.is_loaded() {
                t.loaded_slots = t.loaded_slots.saturating_add(m.usable());
            }
        }
        t
    }

    /// Brings the sums up to date: after any change to a model's residency,
    /// slots, listing or external load.
    pub(crate) fn recount(&mut self) {
        self.totals = self.counted();
    }

    /// Whether the kept sums are what the models say: for the randomized
    /// invariant test, which would catch a change without a recount.
    pub(crate) fn totals_agree(&self) -> bool {
        self.totals == self.counted()
    }

    /// Work running there that the hub did not send.
    pub(crate) fn totals_external(&self) -> u32 {
        self.totals.external
    }

    /// Whether the backend as a whole can take one more request: under its
    /// `max_concurrent` (counting work the hub did not send) and not
    /// reporting a queue of its own.
    pub fn has_room(&self) -> bool {
        !self.status.saturated
            && self
                .status
                .max_concurrent
                .is_none_or(|max| self.busy + self.totals.external < max)
    }

    /// The backend's capacity: slots of its loaded models, or of everything
    /// it lists when nothing is loaded (a server that loads on demand).
    pub fn total_slots(&self) -> u32 {
        let slots = if self.totals.loaded_slots > 0 {
            self.totals.loaded_slots
        } else {
            self.totals.listed_slots
        };
        self.status
            .max_concurrent
            .map_or(slots, |max| slots.min(max))
    }

    /// Whether new work may go here at all.
    pub fn admits(&self) -> bool {
        !self.draining && self.breaker.admits()
    }
}

/// Read-only view of one model on one backend, for listings and metrics.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelView {
    pub name: ModelName,
    pub residency: Residency,
    pub slots: u32,
    pub size: Option<u64>,
    pub load_time: Option<Duration>,
    /// When a request last started or ended here; `None` if none has.
    pub last_used: Option<Duration>,
    /// Why the last load failed, while no new one is tried.
    pub load_error: Option<String>,
    pub busy: u32,
    /// Slots busy with work the hub did not send, by the server's count.
    pub external: u32,
    pub service: Option<Duration>,
    /// Requests it was found to take at once, below its slots (the server
    /// ran out of room with more running), while that holds.
    pub limit: Option<u32>,
}

/// Read-only view of one backend, for listings and metrics.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackendView {
    pub id: BackendId,
    pub draining: bool,
    pub breaker: BreakerState,
    pub busy: u32,
    pub status: BackendStatus,
    pub models: Vec<ModelView>,
    /// The model it is being cleared for: it takes no new work for others.
    pub reserved: Option<ModelName>,
}

impl BackendView {
    /// Slots of the models that take memory here (loaded, or being loaded
    /// or unloaded), as the budget counts them.
    pub fn slots_in_memory(&self) -> u32 {
        self.models
            .iter()
            .filter(|m| m.residency.occupies())
            .fold(0, |n, m| n.saturating_add(m.slots))
    }
}

#[derive(Debug, Default)]
pub struct Fleet {
    pub(crate) backends: BTreeMap<BackendId, Backend>,
}

impl Fleet {
    /// Adds every model `id` holds to `dirty`: a change to the backend may
    /// place or load any of them.
    pub(crate) fn mark_dirty(&self, id: BackendId, dirty: &mut BTreeSet<ModelName>) {
        if let Some(b) = self.backends.get(&id) {
            dirty.extend(b.models.keys().cloned());
        }
    }

    /// Replaces what a backend lists, keeping the busy count of every model
    /// that still has requests in flight. The reported states change the
    /// residency only where no load or unload the scheduler decided is
    /// pending and the probe (`probed`: when it started; `None`: just now)
    /// began after the last one ended.
    pub(crate) fn upsert(
        &mut self,
        id: BackendId,
        specs: Vec<ModelSpec>,
        config: &BreakerConfig,
        probed: Option<Duration>,
        now: Duration,
    ) {
        let backend = self
            .backends
            .entry(id)
            .or_insert_with(|| Backend::new(config));
        for slot in backend.models.values_mut() {
            slot.listed = false;
        }
        for spec in specs {
            let slot = backend.models.entry(spec.name).or_insert(ModelSlots {
                residency: Residency::Unloaded,
                settled: None,
                slots: 0,
                size: None,
                busy: 0,
                external: 0,
                listed: true,
                service: None,
                prefill_rate: None,
                load_time: None,
                last_used: now,
                used: false,
                failure: None,
                limit: None,
                limit_credit: 0,
                context: None,
                shared_context: false,
                tokens_in_flight: 0,
                dispatched: 0,
            });
            let stale = matches!((probed, slot.settled), (Some(p), Some(s)) if p < s);
            if !slot.residency.pending() && !stale {
                slot.residency = slot.residency.observed(spec.state, now);
            }
            slot.slots = spec.slots;
            slot.size = spec.size.or(slot.size);
            slot.context = spec.context.or(slot.context);
            slot.listed = true;
        }
        backend
            .models
            .retain(|_, m| m.listed || m.busy > 0 || m.residency.pending());
        backend.recount();
    }

    /// Sets what a backend says beyond its models. The server's busy count
    /// beyond the hub's own becomes that model's external load.
    pub(crate) fn set_status(&mut self, id: BackendId, status: BackendStatus) -> bool {
        let Some(backend) = self.backends.get_mut(&id) else {
            return false;
        };
        for m in backend.models.values_mut() {
            m.external = 0;
        }
        for (name, reported) in &status.reported_busy {
            // Only for listed models: one that is no longer listed takes
            // no new work and goes once its own requests end.
            if let Some(m) = backend.models.get_mut(name.as_str()).filter(|m| m.listed) {
                m.external = reported.saturating_sub(m.busy);
            }
        }
        backend.status = status;
        backend.recount();
        true
    }

    /// Whether every backend's kept sums are what its models say.
    #[doc(hidden)]
    pub fn totals_agree(&self) -> bool {
        self.backends.values().all(Backend::totals_agree)
    }

    pub fn contains(&self, id: BackendId) -> bool {
        self.backends.contains_key(&id)
    }

    /// Every backend it holds, in order.
    pub fn ids(&self) -> Vec<BackendId> {
        self.backends.keys().copied().collect()
    }

    /// The backends that list `model`, healthy or not, in order.
    pub fn listing(&self, model: &str) -> Vec<BackendId> {
        self.backends
            .iter()
            .filter(|(_, b)| b.models.get(model).is_some_and(|m| m.listed))
            .map(|(id, _)| *id)
            .collect()
    }

    /// Every model some LLM server lists, once each, in order.
    pub fn model_names(&self) -> Vec<ModelName> {
        let mut names: Vec<ModelName> = self
            .backends
            .values()
            // A worker's capabilities are no models.
            .filter(|b| !b.status.tasks)
            .flat_map(|b| b.models.iter())
            .filter(|(_, m)| m.listed)
            .map(|(name, _)| name.clone())
            .collect();
        names.sort_unstable();
        names.dedup();
        names
    }

    /// The largest context a slot of any backend listing `model` has, if
    /// every one of them says: what the longest prompt it can take is.
    pub fn largest_context(&self, model: &str) -> Option<u32> {
        let mut largest = None;
        for b in self.backends.values() {
            if let Some(m) = b.models.get(model).filter(|m| m.listed) {
                largest = Some(largest.unwrap_or(0).max(m.context?));
            }
        }
        largest
    }

    /// Requests dispatched to a backend's model so far.
    pub fn dispatched(&self, backend: BackendId, model: &str) -> u64 {
        self.backends
            .get(&backend)
            .and_then(|b| b.models.get(model))
            .map_or(0, |m| m.dispatched)
    }

    /// Requests the hub has running on a backend's model now.
    pub fn busy(&self, backend: BackendId, model: &str) -> u32 {
        self.backends
            .get(&backend)
            .and_then(|b| b.models.get(model))
            .map_or(0, |m| m.busy)
    }

    /// Whether any backend, healthy or not, lists the model.
    pub fn knows_model(&self, model: &str) -> bool {
        self.lists_model_beyond(model, |_| false)
    }

    /// Whether a backend that `tried` does not pick, healthy or not, lists
    /// the model: whether a retry would have anywhere left to go.
    pub fn lists_model_beyond(&self, model: &str, tried: impl Fn(BackendId) -> bool) -> bool {
        self.backends
            .iter()
            .any(|(id, b)| !tried(*id) && b.models.get(model).is_some_and(|m| m.listed))
    }

    /// Whether a backend that `tried` does not pick lists the model and
    /// takes work now (healthy or half-open, not draining).
    pub fn serves_model_beyond(&self, model: &str, tried: impl Fn(BackendId) -> bool) -> bool {
        self.backends.iter().any(|(id, b)| {
            !tried(*id) && b.admits() && b.models.get(model).is_some_and(|m| m.listed)
        })
    }

    /// Whether any backend, healthy or not, lists the model and serves the
    /// API.
    pub fn lists_model_for(&self, model: &str, api: Api) -> bool {
        self.backends
            .values()
            .any(|b| b.status.serves(api) && b.models.get(model).is_some_and(|m| m.listed))
    }

    /// When a slot for `model` on `backend` should free, roughly: with its
    /// slots all busy and their requests spread evenly over their course,
    /// one ends every service time over slots. `None` until a service time
    /// has been measured.
    pub(crate) fn slot_frees_in(&self, backend: BackendId, model: &str) -> Option<Duration> {
        let m = self.backends.get(&backend)?.models.get(model)?;
        Some(m.service? / m.usable())
    }

    /// How long `backend` would take to prefill `tokens` prompt tokens of
    /// `model` with nothing cached. `None` until its rate is measured.
    pub(crate) fn prefill_time(
        &self,
        backend: BackendId,
        model: &str,
        tokens: u32,
    ) -> Option<Duration> {
        let rate = self
            .backends
            .get(&backend)?
            .models
            .get(model)?
            .prefill_rate?;
        (rate > 0.0 && rate.is_finite())
            .then(|| Duration::from_secs_f64((f64::from(tokens) / rate).min(3600.0)))
    }

    pub fn views(&self) -> Vec<BackendView> {
        self.backends
            .iter()
            .map(|(id, b)| view_of(*id, b))
            .collect()
    }

    pub fn view(&self, id: BackendId) -> Option<BackendView> {
        self.backends.get(&id).map(|b| view_of(id, b))
    }

    /// Where a listed model stands on a backend, as the scheduler holds it.
    pub fn residency(&self, backend: BackendId, model: &str) -> Option<Residency> {
        self.backends
            .get(&backend)?
            .models
            .get(model)
            .filter(|m| m.listed)
            .map(|m| m.residency)
    }

    /// Slots and busy counts over every listed model, for the wait estimate.
    pub(crate) fn model_capacity(&self, model: &str) -> (u32, Option<Duration>) {
        let mut slots = 0;
        let mut service: Option<Duration> = None;
        for b in self.backends.values() {
            if let Some(m) = b.models.get(model).filter(|m| m.listed) {
                slots += m.usable();
                service = match (service, m.service) {
                    (Some(a), Some(b)) => Some(a.max(b)),
                    (a, b) => a.or(b),
                };
            }
        }
        (slots, service)
    }
}

/// One backend as listings and metrics see it.
fn view_of(id: BackendId, b: &Backend) -> BackendView {
    let mut models: Vec<ModelView> = b
        .models
        .iter()
        .filter(|(_, m)| m.listed)
        .map(|(name, m)| ModelView {
            name: name.clone(),
            residency: m.residency,
            slots: m.slots,
            limit: m.limit,
            size: m.size,
            load_time: m.load_time,
            last_used: m.used.then_some(m.last_used),
            load_error: m.failure.as_ref().map(|f| f.message.clone()),
            busy: m.busy,
            external: m.external,
            service: m.service,
        })
        .collect();
    models.sort_by(|a, b| a.name.cmp(&b.name));
    BackendView {
        reserved: b.reserved.clone(),
        id,
        draining: b.draining,
        breaker: b.breaker.state(),
        busy: b.busy,
        status: b.status.clone(),
        models,
    }
}
