//! The fleet as the scheduler sees it: backends, the models each lists, and
//! slots. The hub holds every slot, so `busy` is exact: it is incremented
//! when a request is dispatched and decremented exactly once when it ends.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use drover_core::{BackendId, ModelName};

use crate::breaker::{Breaker, BreakerConfig, BreakerState};

/// What discovery (or config) says about one model on one backend.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelSpec {
    pub name: ModelName,
    /// Resident in memory and ready to serve.
    pub loaded: bool,
    /// Requests the backend can run at once for this model without slowing
    /// them all down.
    pub slots: u32,
}

/// The inference APIs a request can need. Every backend serves OpenAI's
/// chat, completions and embeddings; the coding agents' APIs only some.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Api {
    #[default]
    OpenAi,
    /// `POST /v1/responses`.
    Responses,
    /// `POST /v1/messages` and `/v1/messages/count_tokens`.
    Messages,
}

impl Api {
    pub fn as_str(self) -> &'static str {
        match self {
            Api::OpenAi => "openai",
            Api::Responses => "responses",
            Api::Messages => "messages",
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
}

impl BackendStatus {
    pub fn serves(&self, api: Api) -> bool {
        match api {
            Api::OpenAi => true,
            Api::Responses => self.responses,
            Api::Messages => self.messages,
        }
    }
}

#[derive(Clone, Debug)]
pub(crate) struct ModelSlots {
    pub loaded: bool,
    pub slots: u32,
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
}

impl ModelSlots {
    pub fn has_room(&self) -> bool {
        self.busy + self.external < self.slots
    }
}

#[derive(Clone, Debug)]
pub(crate) struct Backend {
    pub models: HashMap<ModelName, ModelSlots>,
    pub busy: u32,
    pub draining: bool,
    pub breaker: Breaker,
    pub status: BackendStatus,
}

impl Backend {
    fn new(config: &BreakerConfig) -> Self {
        Backend {
            models: HashMap::new(),
            busy: 0,
            draining: false,
            breaker: Breaker::new(config),
            status: BackendStatus::default(),
        }
    }

    /// Whether the backend as a whole can take one more request: under its
    /// `max_concurrent` (counting work the hub did not send) and not
    /// reporting a queue of its own.
    pub fn has_room(&self) -> bool {
        let external: u32 = self
            .models
            .values()
            .filter(|m| m.listed)
            .map(|m| m.external)
            .sum();
        !self.status.saturated
            && self
                .status
                .max_concurrent
                .is_none_or(|max| self.busy + external < max)
    }

    /// The backend's capacity: slots of its loaded models, or of everything
    /// it lists when nothing is loaded (a server that loads on demand).
    pub fn total_slots(&self) -> u32 {
        let slots = self.model_slots();
        self.status
            .max_concurrent
            .map_or(slots, |max| slots.min(max))
    }

    fn model_slots(&self) -> u32 {
        let loaded: u32 = self
            .models
            .values()
            .filter(|m| m.listed && m.loaded)
            .map(|m| m.slots)
            .sum();
        if loaded > 0 {
            loaded
        } else {
            self.models
                .values()
                .filter(|m| m.listed)
                .map(|m| m.slots)
                .sum()
        }
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
    pub loaded: bool,
    pub slots: u32,
    pub busy: u32,
    /// Slots busy with work the hub did not send, by the server's count.
    pub external: u32,
    pub service: Option<Duration>,
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
}

#[derive(Debug, Default)]
pub struct Fleet {
    pub(crate) backends: BTreeMap<BackendId, Backend>,
}

impl Fleet {
    /// Replaces what a backend lists, keeping the busy count of every model
    /// that still has requests in flight.
    pub(crate) fn upsert(&mut self, id: BackendId, specs: Vec<ModelSpec>, config: &BreakerConfig) {
        let backend = self
            .backends
            .entry(id)
            .or_insert_with(|| Backend::new(config));
        for slot in backend.models.values_mut() {
            slot.listed = false;
        }
        for spec in specs {
            let slot = backend.models.entry(spec.name).or_insert(ModelSlots {
                loaded: false,
                slots: 0,
                busy: 0,
                external: 0,
                listed: true,
                service: None,
                prefill_rate: None,
            });
            slot.loaded = spec.loaded;
            slot.slots = spec.slots;
            slot.listed = true;
        }
        backend.models.retain(|_, m| m.listed || m.busy > 0);
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
        true
    }

    pub fn contains(&self, id: BackendId) -> bool {
        self.backends.contains_key(&id)
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
        Some(m.service? / m.slots.max(1))
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
            .map(|(id, b)| BackendView {
                id: *id,
                draining: b.draining,
                breaker: b.breaker.state(),
                busy: b.busy,
                status: b.status.clone(),
                models: {
                    let mut models: Vec<ModelView> = b
                        .models
                        .iter()
                        .filter(|(_, m)| m.listed)
                        .map(|(name, m)| ModelView {
                            name: name.clone(),
                            loaded: m.loaded,
                            slots: m.slots,
                            busy: m.busy,
                            external: m.external,
                            service: m.service,
                        })
                        .collect();
                    models.sort_by(|a, b| a.name.cmp(&b.name));
                    models
                },
            })
            .collect()
    }

    pub fn view(&self, id: BackendId) -> Option<BackendView> {
        self.views().into_iter().find(|v| v.id == id)
    }

    /// Slots and busy counts over every listed model, for the wait estimate.
    pub(crate) fn model_capacity(&self, model: &str) -> (u32, Option<Duration>) {
        let mut slots = 0;
        let mut service: Option<Duration> = None;
        for b in self.backends.values() {
            if let Some(m) = b.models.get(model).filter(|m| m.listed) {
                slots += m.slots;
                service = match (service, m.service) {
                    (Some(a), Some(b)) => Some(a.max(b)),
                    (a, b) => a.or(b),
                };
            }
        }
        (slots, service)
    }
}
