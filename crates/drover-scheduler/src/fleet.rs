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

#[derive(Clone, Debug)]
pub(crate) struct ModelSlots {
    pub loaded: bool,
    pub slots: u32,
    pub busy: u32,
    /// False once discovery stopped listing the model; kept until its
    /// in-flight requests finish so their slots are released exactly once.
    pub listed: bool,
    /// Smoothed service time, for queue-wait estimates.
    pub service: Option<Duration>,
}

#[derive(Clone, Debug)]
pub(crate) struct Backend {
    pub models: HashMap<ModelName, ModelSlots>,
    pub busy: u32,
    pub draining: bool,
    pub breaker: Breaker,
}

impl Backend {
    fn new(config: &BreakerConfig) -> Self {
        Backend {
            models: HashMap::new(),
            busy: 0,
            draining: false,
            breaker: Breaker::new(config),
        }
    }

    /// The backend's capacity: slots of its loaded models, or of everything
    /// it lists when nothing is loaded (a server that loads on demand).
    pub fn total_slots(&self) -> u32 {
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
    pub service: Option<Duration>,
}

/// Read-only view of one backend, for listings and metrics.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackendView {
    pub id: BackendId,
    pub draining: bool,
    pub breaker: BreakerState,
    pub busy: u32,
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
                listed: true,
                service: None,
            });
            slot.loaded = spec.loaded;
            slot.slots = spec.slots;
            slot.listed = true;
        }
        backend.models.retain(|_, m| m.listed || m.busy > 0);
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

    pub fn views(&self) -> Vec<BackendView> {
        self.backends
            .iter()
            .map(|(id, b)| BackendView {
                id: *id,
                draining: b.draining,
                breaker: b.breaker.state(),
                busy: b.busy,
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
