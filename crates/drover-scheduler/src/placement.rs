//! Placement: which backend takes a request. [`Placement`] owns what the
//! choice remembers (the policy's turn, the affinity index, the requests
//! held for the busy backend that holds their prefix) and is handed the
//! fleet to choose from call by call; the [`Scheduler`](crate::Scheduler)
//! composes it as it composes the queue, and decides *when* a request is
//! placed (on arrival, or when a slot frees at a poll).
//!
//! A request chooses between two tiers ([`Tiers`]): the backends with its
//! model loaded and, only when none of those may take it, every backend
//! that lists the model (which loads it on demand). Within the tier the
//! policy picks ([`crate::policy`]).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use drover_core::{BackendId, ModelName, Priority, RequestId};

use crate::affinity::AffinityIndex;
use crate::fleet::{Api, Fleet};
use crate::policy::{self, Candidate, Policy};
use crate::residency::Residency;
use crate::scheduler::Request;

#[derive(Debug)]
pub(crate) struct Placement {
    policy: Policy,
    affinity: AffinityIndex,
    /// The policy's rotating counter: ties break in turn.
    turn: u64,
    /// Waiting requests held back for the busy backend that holds their
    /// prefix (see [`Placement::hold_for`]).
    holds: BTreeMap<RequestId, Hold>,
}

/// A request waiting for one backend's slot rather than taking a free one
/// elsewhere, because the wait should be shorter than the prefill the other
/// backend would need.
#[derive(Clone, Debug)]
pub(crate) struct Hold {
    backend: BackendId,
    model: ModelName,
    until: Duration,
    /// Past `until`: the request goes anywhere and is not held again.
    over: bool,
}

impl Placement {
    pub(crate) fn new(policy: Policy, affinity_capacity: usize) -> Self {
        Placement {
            policy,
            affinity: AffinityIndex::new(affinity_capacity),
            turn: 0,
            holds: BTreeMap::new(),
        }
    }

    /// The backends that take work for `model` now, by residency.
    pub(crate) fn tiers(&self, fleet: &Fleet, model: &ModelName) -> Tiers {
        let health = self.policy.respects_health();
        let late = self.policy.binds_late();
        let mut tiers = Tiers::default();
        for (id, b) in &fleet.backends {
            let Some(m) = b.models.get(model.as_str()).filter(|m| m.listed) else {
                continue;
            };
            tiers.listing.push(*id);
            if health && !b.admits() {
                continue;
            }
            // Being cleared for another model: no new work for this one.
            if b.reserved.as_ref().is_some_and(|r| r != model) {
                continue;
            }
            let room = m.usable().saturating_sub(m.busy + m.external).min(
                b.status.max_concurrent.map_or(u32::MAX, |max| {
                    max.saturating_sub(b.busy + b.totals_external())
                }),
            );
            let place = Place {
                room,
                context: m.budget(),
                candidate: Candidate {
                    id: *id,
                    free: !late || (m.has_room() && b.has_room()),
                    busy: b.busy,
                    capacity: b.total_slots(),
                },
                responses: b.status.responses,
                messages: b.status.messages,
                tasks: b.status.tasks,
            };
            match m.residency {
                Residency::Loaded => {
                    tiers.loaded.push(place.clone());
                    tiers.listed.push(place);
                }
                // A server the hub cannot load on loads on its own when
                // asked, or refuses: either way it may be asked.
                Residency::Unloaded if !b.status.can_load => tiers.listed.push(place),
                // Loading or unloading, or the hub will load it first.
                _ => {}
            }
        }
        tiers
    }

    /// The backend that served the longest known prefix of `r`.
    pub(crate) fn affinity_hit(&self, r: &Request) -> Option<BackendId> {
        self.affinity.lookup(&r.affinity)
    }

    /// The policy's pick among `candidates`.
    pub(crate) fn choose(
        &mut self,
        candidates: &[Candidate],
        hit: Option<BackendId>,
    ) -> Option<BackendId> {
        policy::choose(self.policy, candidates, hit, &mut self.turn)
    }

    /// Whether a request should wait for the busy backend that holds its
    /// prefix instead of taking a free slot elsewhere: when a slot there
    /// should free sooner (its service time over its slots) than the other
    /// backend would take to prefill the prompt (its tokens over that
    /// backend's measured prefill rate). It waits at most that prefill time:
    /// waiting longer would cost more than it saves. Nothing is held
    /// without both measurements.
    pub(crate) fn hold_for(
        &self,
        fleet: &Fleet,
        request: &Request,
        candidates: &[Candidate],
        hit: Option<BackendId>,
        now: Duration,
    ) -> Option<Hold> {
        let hit = hit?;
        if !self.policy.binds_late() || request.prompt_tokens == 0 {
            return None;
        }
        let at_hit = candidates.iter().find(|c| c.id == hit)?;
        if at_hit.free {
            return None;
        }
        let model = request.model.as_str();
        let slot_frees_in = fleet.slot_frees_in(hit, model)?;
        let prefill_elsewhere = candidates
            .iter()
            .filter(|c| c.free && c.id != hit)
            .filter_map(|c| fleet.prefill_time(c.id, model, request.prompt_tokens))
            .min()?;
        (slot_frees_in < prefill_elsewhere).then(|| Hold {
            backend: hit,
            model: request.model.clone(),
            until: now + prefill_elsewhere,
            over: false,
        })
    }

    pub(crate) fn hold(&mut self, id: RequestId, hold: Hold) {
        self.holds.insert(id, hold);
    }

    /// Whether the request was ever held (and still waits): it is not held
    /// twice.
    pub(crate) fn was_held(&self, id: RequestId) -> bool {
        self.holds.contains_key(&id)
    }

    /// The backend a waiting request is held for, while its hold lasts.
    pub(crate) fn held_for(&self, id: RequestId) -> Option<BackendId> {
        self.holds.get(&id).filter(|h| !h.over).map(|h| h.backend)
    }

    /// Whether a waiting request could be placed now among `tiers`: on its
    /// held backend's free slot while its hold lasts, else on any free one.
    pub(crate) fn can_place(&self, tiers: &Tiers, r: &Request) -> bool {
        let candidates = tiers.for_request(r);
        match self.holds.get(&r.id).filter(|h| !h.over) {
            Some(h) => candidates.iter().any(|c| c.id == h.backend && c.free),
            None => candidates.iter().any(|c| c.free),
        }
    }

    /// The request no longer waits: its hold, if any, goes.
    pub(crate) fn unhold(&mut self, id: RequestId) {
        self.holds.remove(&id);
    }

    /// The requests held for `model`, with their backends, while their
    /// holds last.
    pub(crate) fn held_on(&self, model: &ModelName) -> Vec<(RequestId, BackendId)> {
        self.holds
            .iter()
            .filter(|(_, h)| !h.over && h.model == *model)
            .map(|(id, h)| (*id, h.backend))
            .collect()
    }

    /// A request was placed on `backend`: it holds its prefix from now on.
    pub(crate) fn placed(&mut self, r: &Request, backend: BackendId) {
        self.holds.remove(&r.id);
        self.affinity.record(&r.affinity, backend);
    }

    /// Requests held for a backend that is gone or takes no work go
    /// anywhere now.
    pub(crate) fn end_holds_for(&mut self, id: BackendId) {
        for hold in self.holds.values_mut().filter(|h| h.backend == id) {
            hold.over = true;
        }
    }

    /// A backend left the fleet: its prefixes and holds with it.
    pub(crate) fn forget_backend(&mut self, id: BackendId) {
        self.affinity.forget_backend(id);
        self.end_holds_for(id);
    }

    /// Ends the holds whose time is up by `now`, marking their models for
    /// the poll to look at.
    pub(crate) fn end_holds_due(&mut self, now: Duration, dirty: &mut BTreeSet<ModelName>) {
        for hold in self.holds.values_mut() {
            if !hold.over && hold.until <= now {
                hold.over = true;
                dirty.insert(hold.model.clone());
            }
        }
    }

    /// When each lasting hold ends: a poll is due then.
    pub(crate) fn hold_ends(&self) -> impl Iterator<Item = Duration> + '_ {
        self.holds.values().filter(|h| !h.over).map(|h| h.until)
    }
}

/// The backends that take work for one model, in the two tiers a request
/// chooses between: those with the model loaded and, behind them, every one
/// that lists it (it loads on demand).
#[derive(Debug, Default)]
pub(crate) struct Tiers {
    loaded: Vec<Place>,
    /// Loaded or not.
    listed: Vec<Place>,
    /// Every backend that lists the model, taking work or not: a pin to
    /// one of them holds even while it is unhealthy.
    listing: Vec<BackendId>,
    /// Slots kept free for the foreground ([`crate::reserve`]): a request
    /// below `background_below` takes none of the last `reserve` free.
    reserve: u32,
    background_below: Priority,
}

#[derive(Clone, Debug)]
struct Place {
    candidate: Candidate,
    /// Its free slots for the model (under the backend's own cap).
    room: u32,
    /// Where its slots share a context: the model's slot state, to tell
    /// whether a request's tokens fit beside those running.
    context: Option<Budget>,
    /// The agents' APIs it serves (not its whole status: a clone of that
    /// per backend per request would cost a walk over its models).
    responses: bool,
    messages: bool,
    tasks: bool,
}

/// A shared context's size and what of it is taken.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Budget {
    pub context: u32,
    pub in_flight: u32,
}

impl Place {
    /// Whether `r` fits beside what runs there, counted in tokens where the
    /// slots share one context.
    fn fits(&self, r: &Request) -> bool {
        let Some(b) = self.context else {
            return true;
        };
        let tokens = crate::fleet::tokens_taken(b.context, r.prompt_tokens, r.max_tokens);
        b.in_flight == 0 || b.in_flight.saturating_add(tokens) <= b.context
    }

    fn serves(&self, api: Api) -> bool {
        crate::fleet::serves(api, self.responses, self.messages, self.tasks)
    }
}

impl Tiers {
    /// Of the backends that may take this request (not failed on, serving
    /// its API, the pinned one if it has a pin), those with the model
    /// loaded or, when none does, those that list it. Exclusions come
    /// before the choice of tier: a retry whose only loaded backend failed
    /// goes to one that would load the model, rather than nowhere.
    pub(crate) fn for_request(&self, r: &Request) -> Vec<Candidate> {
        let pin = r.pin.filter(|p| self.listing.contains(p));
        let eligible = |tier: &[Place]| -> Vec<Candidate> {
            tier.iter()
                .filter(|p| {
                    let id = p.candidate.id;
                    !r.exclude.contains(&id) && p.serves(r.api) && pin.is_none_or(|pin| pin == id)
                })
                .map(|p| Candidate {
                    free: p.candidate.free && p.fits(r),
                    ..p.candidate
                })
                .collect()
        };
        let loaded = eligible(&self.loaded);
        let mut candidates = if loaded.is_empty() {
            eligible(&self.listed)
        } else {
            loaded
        };
        if self.reserve > 0 && r.priority < self.background_below {
            let room: u32 = candidates
                .iter()
                .filter(|c| c.free)
                .filter_map(|c| self.room_of(c.id))
                .sum();
            if room <= self.reserve {
                for c in &mut candidates {
                    c.free = false;
                }
            }
        }
        candidates
    }

    fn room_of(&self, id: BackendId) -> Option<u32> {
        self.listed
            .iter()
            .find(|p| p.candidate.id == id)
            .map(|p| p.room)
    }

    /// Keeps `reserve` free slots from requests below `background_below`.
    pub(crate) fn reserve(&mut self, reserve: u32, background_below: Priority) {
        self.reserve = reserve;
        self.background_below = background_below;
    }

    /// Whether no backend would take a plain request (OpenAI API, no pin,
    /// nothing tried) without a load first.
    pub(crate) fn none_for_plain(&self) -> bool {
        self.for_plain().is_empty()
    }

    /// Where a plain request (OpenAI API, no pin, nothing tried) may go.
    fn for_plain(&self) -> &[Place] {
        if self.loaded.is_empty() {
            &self.listed
        } else {
            &self.loaded
        }
    }

    pub(crate) fn any_free(&self) -> bool {
        self.listed.iter().any(|p| p.candidate.free)
    }

    /// Whether a plain request (OpenAI API, no pin, nothing tried) could be
    /// placed now.
    pub(crate) fn plain_free(&self) -> bool {
        self.for_plain().iter().any(|p| p.candidate.free)
    }
}
