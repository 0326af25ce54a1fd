//! Where a model stands on a backend, and what a backend's memory (and the
//! machine's it shares with other servers) can hold.
//!
//! Residency is a state, not a flag: a load or unload the scheduler decided
//! is pending until the caller reports its end, and discovery (which says
//! what the server says) cannot undo it meanwhile, nor can a probe that
//! started before it ended.

use std::time::Duration;

use drover_core::{BackendId, MachineId, ModelName};

use crate::fleet::{Backend, Fleet, ModelSlots};
use crate::plan::{Budget, Holding, Terms};

/// A model's state as its server reports it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ServerState {
    /// Listed (downloaded, or configured) but not in memory.
    #[default]
    Unloaded,
    /// Being loaded, by whoever asked.
    Loading,
    /// In memory and ready to serve.
    Loaded,
}

/// A model's residency on one backend, as the scheduler tracks it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Residency {
    Unloaded,
    /// Being loaded since `since`. `ours`: the scheduler decided it and the
    /// caller reports its end ([`crate::Scheduler::load_finished`]); else
    /// the server loads on its own and discovery says when it is done.
    Loading {
        since: Duration,
        ours: bool,
    },
    Loaded,
    /// Being unloaded, by the scheduler's decision.
    Unloading {
        since: Duration,
    },
}

impl Residency {
    pub fn as_str(self) -> &'static str {
        match self {
            Residency::Unloaded => "unloaded",
            Residency::Loading { .. } => "loading",
            Residency::Loaded => "loaded",
            Residency::Unloading { .. } => "unloading",
        }
    }

    /// A load or unload the scheduler decided has not been reported done.
    pub(crate) fn pending(self) -> bool {
        matches!(
            self,
            Residency::Loading { ours: true, .. } | Residency::Unloading { .. }
        )
    }

    /// It takes memory (or is about to, or still does).
    pub(crate) fn occupies(self) -> bool {
        !matches!(self, Residency::Unloaded)
    }

    /// What discovery's report makes of the state the scheduler had.
    pub(crate) fn observed(self, reported: ServerState, now: Duration) -> Residency {
        match (reported, self) {
            (ServerState::Loaded, _) => Residency::Loaded,
            (ServerState::Unloaded, _) => Residency::Unloaded,
            (ServerState::Loading, Residency::Loading { since, .. }) => {
                Residency::Loading { since, ours: false }
            }
            (ServerState::Loading, _) => Residency::Loading {
                since: now,
                ours: false,
            },
        }
    }
}

/// A backend's memory and what its server and buffers take of it: seed
/// 002's budget, `sum(model sizes) + slots x slot_buffer + system + margin
/// <= total`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemoryTerms {
    pub total: u64,
    pub slot_buffer: u64,
    pub system: u64,
    pub margin: u64,
}

impl MemoryTerms {
    fn terms(self) -> Terms {
        Terms {
            memory: self.total,
            slot_buffer: self.slot_buffer,
            system: self.system,
            margin: self.margin,
            response_time: Duration::ZERO,
        }
    }

    /// What one model with its slots needs, on its own, beyond nothing.
    pub fn alone(self, size: u64, slots: u32) -> u64 {
        Budget::of(
            Holding {
                models: 1,
                model_bytes: size,
                slots,
            },
            self.terms(),
        )
        .used
        .saturating_add(self.margin)
    }

    /// Bytes the budget leaves for the models themselves while `slots`
    /// slots are held: the total less the system, the margin and the
    /// slots' buffers. What the model manager lets models fill.
    pub fn for_models(self, slots: u32) -> u64 {
        Budget::of(
            Holding {
                models: 0,
                model_bytes: 0,
                slots,
            },
            self.terms(),
        )
        .room()
    }
}

/// The last load of a model on a backend failed: no new attempt there
/// before `until`, and the message answers who waits meanwhile.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadFailure {
    pub message: String,
    pub until: Duration,
    pub attempts: u32,
}

impl LoadFailure {
    /// Backs off 5 s, 10 s, 20 s... up to 5 minutes: a load that fails is
    /// not retried in a tight loop.
    pub(crate) fn after(previous: Option<&LoadFailure>, message: String, now: Duration) -> Self {
        let attempts = previous.map_or(1, |f| f.attempts.saturating_add(1));
        let backoff = Duration::from_secs(5)
            .saturating_mul(1 << (attempts - 1).min(6))
            .min(Duration::from_secs(300));
        LoadFailure {
            message,
            until: now + backoff,
            attempts,
        }
    }
}

/// What config says of a model beyond its backends.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ModelPolicy {
    /// Unloaded after this long idle; `None`: the scheduler's default.
    pub ttl: Option<Duration>,
    /// Loaded at start and again whenever no backend holds it.
    pub warm: bool,
}

/// The machine a backend's server runs on, where several servers share one
/// memory (Ollama and llama.cpp on one GPU): what every one of them holds
/// counts against the machine's budget.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Machine {
    pub id: MachineId,
    pub memory: MemoryTerms,
}

/// A model on a backend: what an eviction names.
pub type Placed = (BackendId, ModelName);

impl Backend {
    /// Whether `model` would fit on this server alone with every model in
    /// `without` unloaded: under `max_loaded` and, where the server's
    /// memory is known, within its budget. Sizes the server does not tell
    /// count as nothing. The machine's budget is [`Fleet::fits`]'s.
    fn fits_alone(&self, model: &str, without: &[Placed], id: BackendId) -> bool {
        let Some(target) = self.models.get(model) else {
            return false;
        };
        let staying = self.models.iter().filter(|(name, m)| {
            name.as_str() != model && m.residency.occupies() && !named(without, id, name)
        });
        let (count, bytes, slots) =
            staying.fold((1usize, size_of(target), target.slots), |acc, (_, m)| {
                (
                    acc.0 + 1,
                    acc.1.saturating_add(size_of(m)),
                    acc.2.saturating_add(m.slots),
                )
            });
        let under_count = self
            .status
            .max_loaded
            .is_none_or(|max| count <= max as usize);
        let in_memory = self.status.memory.is_none_or(|terms| {
            Budget::of(
                Holding {
                    models: count,
                    model_bytes: bytes,
                    slots,
                },
                terms.terms(),
            )
            .fits
        });
        under_count && in_memory
    }

    /// The budget `model` cannot fit in even with nothing else loaded (the
    /// server's own, else its machine's): what it would need, and the
    /// total. `None` when it could fit.
    pub(crate) fn never_fits(&self, model: &str) -> Option<(u64, u64)> {
        let m = self.models.get(model)?;
        let terms = [self.status.memory, self.status.machine.map(|k| k.memory)];
        terms.into_iter().flatten().find_map(|t| {
            let needs = t.alone(size_of(m), m.slots);
            (needs > t.total).then_some((needs, t.total))
        })
    }
}

fn named(list: &[Placed], id: BackendId, name: &ModelName) -> bool {
    list.iter().any(|(b, n)| *b == id && n == name)
}

impl Fleet {
    /// The backends on `machine`.
    fn on_machine(&self, machine: MachineId) -> impl Iterator<Item = (BackendId, &Backend)> {
        self.backends
            .iter()
            .filter(move |(_, b)| b.status.machine.is_some_and(|k| k.id == machine))
            .map(|(id, b)| (*id, b))
    }

    /// Whether `model` would fit on `id` with every model in `without`
    /// unloaded: within the server's own limits and, where it shares a
    /// machine, within the machine's budget counting what every server on
    /// it holds.
    pub(crate) fn fits(&self, id: BackendId, model: &str, without: &[Placed]) -> bool {
        let Some(b) = self.backends.get(&id) else {
            return false;
        };
        if !b.fits_alone(model, without, id) {
            return false;
        }
        let Some(machine) = b.status.machine else {
            return true;
        };
        let Some(target) = b.models.get(model) else {
            return false;
        };
        let mut holding = Holding {
            models: 1,
            model_bytes: size_of(target),
            slots: target.slots,
        };
        for (other, ob) in self.on_machine(machine.id) {
            for (name, m) in &ob.models {
                let is_target = other == id && name.as_str() == model;
                if is_target || !m.residency.occupies() || named(without, other, name) {
                    continue;
                }
                holding.models += 1;
                holding.model_bytes = holding.model_bytes.saturating_add(size_of(m));
                holding.slots = holding.slots.saturating_add(m.slots);
            }
        }
        Budget::of(holding, machine.memory.terms()).fits
    }

    /// The models to unload to make room for `model` on `id`, among those
    /// `may_evict` allows, on that server or, where it shares a machine,
    /// on the others there that can unload: those `spare` picks first
    /// (another backend holds them too, so their requests lose nothing),
    /// then the least recently used. `None` when unloading all of them
    /// would not make it fit (nothing is evicted for a model that will not
    /// fit anyway).
    pub(crate) fn room_for(
        &self,
        id: BackendId,
        model: &str,
        may_evict: impl Fn(BackendId, &ModelName, &ModelSlots) -> bool,
        spare: impl Fn(BackendId, &ModelName) -> bool,
    ) -> Option<Vec<Placed>> {
        if self.fits(id, model, &[]) {
            return Some(Vec::new());
        }
        let b = self.backends.get(&id)?;
        let peers: Vec<(BackendId, &Backend)> = match b.status.machine {
            Some(machine) => self
                .on_machine(machine.id)
                .filter(|(other, ob)| *other == id || (ob.status.can_unload && ob.admits()))
                .collect(),
            None => vec![(id, b)],
        };
        let mut evictable: Vec<(BackendId, &ModelName, &ModelSlots)> = peers
            .iter()
            .flat_map(|(other, ob)| ob.models.iter().map(move |(n, m)| (*other, n, m)))
            .filter(|(other, name, m)| {
                !(*other == id && name.as_str() == model)
                    && m.residency == Residency::Loaded
                    && may_evict(*other, name, m)
            })
            .collect();
        evictable
            .sort_by_key(|(other, name, m)| (!spare(*other, name), m.last_used, *other, *name));
        let mut evict = Vec::new();
        for (other, name, _) in evictable {
            evict.push((other, name.clone()));
            if self.fits(id, model, &evict) {
                return Some(evict);
            }
        }
        None
    }
}

fn size_of(m: &ModelSlots) -> u64 {
    m.size.unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::MemoryTerms;

    const GB: u64 = 1 << 30;

    #[test]
    fn the_room_for_models_is_what_the_system_margin_and_buffers_leave() {
        // Seed 002's node: six one-slot models of 15 GB fill its 90 GB.
        let terms = MemoryTerms {
            total: 128 * GB,
            slot_buffer: 3 * GB,
            system: 8 * GB,
            margin: 12 * GB,
        };
        assert_eq!(terms.for_models(6), 90 * GB);
        assert_eq!(terms.for_models(0), 108 * GB);
        assert_eq!(terms.for_models(100), 0, "none, rather than less");
    }
}
