//! The model manager: which model to load where and when, what to evict for
//! it, what to unload for idleness. `ModelManager` owns what only it keeps
//! (the models waiting for a load, the pinned ones, config's word on each)
//! and is handed the rest of the scheduler's state call by call (the fleet,
//! the queue, the models to look at again, the time), so each method's
//! arguments say what it reads and changes. The [`Scheduler`] composes it,
//! and its decisions come out of [`Scheduler::poll`] like dispatches, so the
//! hub and the virtual-time lab run one policy.
//!
//! - A model some waiting request needs and no backend holds (or is
//!   loading) for it is loaded once, where the request would start soonest:
//!   the wait for room plus the load time learned there. A hundred waiting
//!   requests make one load.
//! - Room is made by unloading the least recently used idle models (none
//!   running, none waiting, not pinned, none used within `idle_after`:
//!   one-at-a-time clients leave a model unused for milliseconds between
//!   requests), and only when that makes it fit.
//! - A model that could only be placed by evicting a busy one waits
//!   `swap_after`; then that backend takes no new work for other models
//!   until it is clear, and the load goes ahead (aging: the busy model had
//!   its turn, the fleet does not swap on every request).
//! - A failed load backs off on that backend; while every way to the model
//!   is backing off, its waiting requests get the failure.
//! - Warm and pinned models are loaded where they fit without evicting
//!   anything whenever no backend holds them; pinned ones are never evicted
//!   or unloaded for idleness.
//!
//! [`Scheduler`]: crate::Scheduler
//! [`Scheduler::poll`]: crate::Scheduler::poll

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use drover_core::{BackendId, ModelName};

use crate::fleet::{Backend, Fleet, ModelSlots};
use crate::placement::Placement;
use crate::queue::WaitQueue;
use crate::residency::{LoadFailure, ModelPolicy, Placed, Residency};
use crate::scheduler::{Decision, LoadOrder, Reject, Request, SchedulerConfig};

/// Why an operator's load or unload cannot go ahead.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// No backend (or not the one named) lists the model.
    NotListed,
    /// The server cannot be told to load or unload models.
    CannotLoad,
    CannotUnload,
    /// It is already loaded there (for a load) or not (for an unload).
    AlreadyLoaded,
    NotLoaded,
    /// A load or unload of it is under way there.
    Busy,
    /// Requests are running on it there.
    Running(u32),
    /// The backend takes no work (breaker open, draining).
    Unhealthy,
    /// It fits there only if models that are in use were unloaded.
    NoRoom {
        in_use: Vec<ModelName>,
    },
    /// It does not fit even alone.
    NeverFits {
        needs: u64,
        total: u64,
    },
}

/// What of the scheduler's state a step of the manager reads and changes,
/// lent for the call: passed, not reached for.
pub(crate) struct Lent<'a> {
    pub fleet: &'a mut Fleet,
    pub queue: &'a mut WaitQueue,
    pub dirty: &'a mut BTreeSet<ModelName>,
}

/// What can still happen for a request no backend can take right now.
pub(crate) enum Outlook {
    /// A load under way, or one that can be decided, will place it.
    Wait,
    Refuse(Reject),
}

/// The model manager's own state and settings.
#[derive(Debug)]
pub(crate) struct ModelManager {
    /// Config's word on models: time to live, warm.
    policies: BTreeMap<ModelName, ModelPolicy>,
    /// Models an operator pinned: never evicted or unloaded for idleness,
    /// and loaded where none holds them.
    pinned: BTreeSet<ModelName>,
    /// Models that may need a load the last poll could not decide yet (no
    /// room until something ends, a failed load's backoff, aging).
    /// Each with when it first needed one (aging counts from then).
    pending: BTreeMap<ModelName, Duration>,
    /// [`SchedulerConfig::ttl`].
    ttl: Option<Duration>,
    /// [`SchedulerConfig::swap_after`].
    swap_after: Duration,
    /// [`SchedulerConfig::idle_after`].
    idle_after: Duration,
    /// [`SchedulerConfig::default_load_time`].
    default_load_time: Duration,
}

impl ModelManager {
    pub(crate) fn new(config: &SchedulerConfig) -> Self {
        ModelManager {
            policies: BTreeMap::new(),
            pinned: BTreeSet::new(),
            pending: BTreeMap::new(),
            ttl: config.ttl,
            swap_after: config.swap_after,
            idle_after: config.idle_after,
            default_load_time: config.default_load_time,
        }
    }

    /// Sets config's word on a model; a warm one is wanted from `clock` on.
    pub(crate) fn set_policy(
        &mut self,
        model: ModelName,
        policy: ModelPolicy,
        dirty: &mut BTreeSet<ModelName>,
        clock: Duration,
    ) {
        if policy.warm {
            self.want(&model, dirty, clock);
        }
        self.policies.insert(model, policy);
    }

    /// False if it was pinned.
    pub(crate) fn pin(
        &mut self,
        model: &ModelName,
        dirty: &mut BTreeSet<ModelName>,
        clock: Duration,
    ) -> bool {
        let new = self.pinned.insert(model.clone());
        self.want(model, dirty, clock);
        new
    }

    /// False if it was not pinned.
    pub(crate) fn unpin(&mut self, model: &ModelName) -> bool {
        self.pinned.remove(model)
    }

    pub(crate) fn is_pinned(&self, model: &str) -> bool {
        self.pinned.contains(model)
    }

    pub(crate) fn pinned(&self) -> impl Iterator<Item = &ModelName> {
        self.pinned.iter()
    }

    fn want(&mut self, model: &ModelName, dirty: &mut BTreeSet<ModelName>, clock: Duration) {
        self.pending.entry(model.clone()).or_insert(clock);
        dirty.insert(model.clone());
    }

    fn wanted(&self, model: &str) -> bool {
        self.pinned.contains(model) || self.policies.get(model).is_some_and(|p| p.warm)
    }

    /// A warm or pinned model that no backend taking work holds.
    pub(crate) fn wanted_unheld(&self, fleet: &Fleet, model: &ModelName) -> bool {
        self.wanted(model.as_str()) && !held_anywhere(fleet, model)
    }

    /// `model` may need a load, since `since` unless it already did.
    pub(crate) fn may_need_load(&mut self, model: ModelName, since: Duration) {
        self.pending.entry(model).or_insert(since);
    }

    /// Whether any model waits for a load to be decided.
    pub(crate) fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    fn ttl_of(&self, model: &str) -> Option<Duration> {
        self.policies.get(model).and_then(|p| p.ttl).or(self.ttl)
    }

    /// An operator's load of `model`, on `backend` or wherever it would be
    /// ready soonest; pending on success as if decided here.
    pub(crate) fn begin_load(
        &mut self,
        fleet: &mut Fleet,
        queue: &WaitQueue,
        dirty: &mut BTreeSet<ModelName>,
        backend: Option<BackendId>,
        model: &ModelName,
        now: Duration,
    ) -> Result<LoadOrder, Refusal> {
        let listing: Vec<BackendId> = fleet
            .backends
            .iter()
            .filter(|(id, b)| {
                backend.is_none_or(|want| want == **id)
                    && b.models.get(model.as_str()).is_some_and(|m| m.listed)
            })
            .map(|(id, _)| *id)
            .collect();
        if listing.is_empty() {
            return Err(Refusal::NotListed);
        }
        if let Some((id, evict, _)) = self.load_target(
            fleet,
            queue,
            model,
            now,
            |id, _| listing.contains(&id),
            Evict::Idle,
        ) {
            return Ok(self.start_load(fleet, dirty, id, model, evict, now));
        }
        // Say why, for the one backend asked for, else the first that can
        // load at all.
        let id = listing
            .iter()
            .copied()
            .find(|id| fleet.backends[id].status.can_load)
            .unwrap_or(listing[0]);
        let b = &fleet.backends[&id];
        let m = &b.models[model.as_str()];
        Err(if !b.status.can_load {
            Refusal::CannotLoad
        } else if m.residency == Residency::Loaded {
            Refusal::AlreadyLoaded
        } else if m.residency != Residency::Unloaded {
            Refusal::Busy
        } else if !b.admits() {
            Refusal::Unhealthy
        } else if let Some((needs, total)) = b.never_fits(model.as_str()) {
            Refusal::NeverFits { needs, total }
        } else {
            Refusal::NoRoom {
                in_use: self.in_use_on(queue, b, model, now),
            }
        })
    }

    /// An operator's unload of `model` from `backend`, pending on success.
    pub(crate) fn begin_unload(
        &self,
        fleet: &mut Fleet,
        dirty: &mut BTreeSet<ModelName>,
        backend: BackendId,
        model: &ModelName,
        now: Duration,
    ) -> Result<(), Refusal> {
        let b = fleet.backends.get_mut(&backend).ok_or(Refusal::NotListed)?;
        let m = b
            .models
            .get_mut(model.as_str())
            .filter(|m| m.listed)
            .ok_or(Refusal::NotListed)?;
        if !b.status.can_unload {
            return Err(Refusal::CannotUnload);
        }
        match m.residency {
            Residency::Loaded => {}
            Residency::Unloaded => return Err(Refusal::NotLoaded),
            _ => return Err(Refusal::Busy),
        }
        if m.busy > 0 {
            return Err(Refusal::Running(m.busy));
        }
        m.residency = Residency::Unloading { since: now };
        b.recount();
        dirty.insert(model.clone());
        Ok(())
    }

    /// A load ended at `now`. `clock` is the latest time the scheduler has
    /// seen, which a failed load's model waits for a new one from, as a
    /// wanted model does: it differs from `now` when events come late.
    pub(crate) fn load_finished(
        &mut self,
        lent: Lent<'_>,
        backend: BackendId,
        model: &ModelName,
        result: Result<Duration, String>,
        now: Duration,
        clock: Duration,
    ) {
        let Lent { fleet, dirty, .. } = lent;
        let Some(b) = fleet.backends.get_mut(&backend) else {
            return;
        };
        let Some(m) = b.models.get_mut(model.as_str()) else {
            return;
        };
        m.settled = Some(now);
        match result {
            Ok(took) => {
                m.residency = Residency::Loaded;
                m.failure = None;
                m.last_used = now;
                // Smoothed with weight 1/4: loads are few.
                m.load_time = Some(match m.load_time {
                    Some(prev) => (prev * 3 + took) / 4,
                    None => took,
                });
                b.load_time = Some(match b.load_time {
                    Some(prev) => (prev * 3 + took) / 4,
                    None => took,
                });
                if let Some(size) = m.size.filter(|s| *s > 0 && !took.is_zero()) {
                    let rate = size as f64 / took.as_secs_f64();
                    b.load_rate = Some(match b.load_rate {
                        Some(prev) => (prev * 3.0 + rate) / 4.0,
                        None => rate,
                    });
                }
            }
            Err(message) => {
                m.residency = Residency::Unloaded;
                m.failure = Some(LoadFailure::after(m.failure.as_ref(), message, now));
                self.pending.entry(model.clone()).or_insert(clock);
            }
        }
        b.recount();
        dirty.insert(model.clone());
    }

    /// An unload ended. One that failed leaves the model loaded as far as
    /// the scheduler knows, until discovery says otherwise.
    pub(crate) fn unload_finished(
        &self,
        fleet: &mut Fleet,
        dirty: &mut BTreeSet<ModelName>,
        backend: BackendId,
        model: &ModelName,
        result: Result<(), String>,
        now: Duration,
    ) {
        let Some(b) = fleet.backends.get_mut(&backend) else {
            return;
        };
        let Some(m) = b.models.get_mut(model.as_str()) else {
            return;
        };
        m.settled = Some(now);
        m.residency = match result {
            Ok(()) => Residency::Unloaded,
            Err(_) => Residency::Loaded,
        };
        b.recount();
        dirty.insert(model.clone());
        fleet.mark_dirty(backend, dirty);
    }

    /// Where `model` is loading and about how long it has left.
    pub(crate) fn loading(
        &self,
        fleet: &Fleet,
        model: &str,
        now: Duration,
    ) -> Option<(BackendId, Duration)> {
        fleet
            .backends
            .iter()
            .filter_map(|(id, b)| {
                let m = b.models.get(model).filter(|m| m.listed)?;
                let Residency::Loading { since, .. } = m.residency else {
                    return None;
                };
                let expected = self.expected_load(b, m);
                // A load that overruns its estimate is said to need a tenth
                // more, not nothing.
                let left = expected
                    .saturating_sub(now.saturating_sub(since))
                    .max(expected / 10);
                Some((*id, left))
            })
            .min_by_key(|(_, left)| *left)
    }

    /// For a request no backend can take now: whether a load will place
    /// it, or why nothing will.
    pub(crate) fn outlook(&self, fleet: &Fleet, r: &Request, now: Duration) -> Outlook {
        let model = r.model.as_str();
        let mut backed_off: Option<(BackendId, &LoadFailure)> = None;
        let mut never_fits: Option<(u64, u64, u64)> = None;
        for (id, b) in &fleet.backends {
            let Some(m) = b.models.get(model).filter(|m| m.listed) else {
                continue;
            };
            if !b.admits() || r.exclude.contains(id) || !b.status.serves(r.api) {
                continue;
            }
            if r.pin.is_some_and(|p| p != *id) {
                continue;
            }
            match m.residency {
                Residency::Unloaded if b.status.can_load => {}
                // Held, or about to be: it waits for that.
                _ => return Outlook::Wait,
            }
            if let Some((needs, total)) = b.never_fits(model) {
                if never_fits.is_none_or(|(_, _, most)| total > most) {
                    never_fits = Some((m.size.unwrap_or(0), needs, total));
                }
                continue;
            }
            match &m.failure {
                Some(f) if f.until > now => {
                    if backed_off.is_none_or(|(_, g)| f.until > g.until) {
                        backed_off = Some((*id, f));
                    }
                }
                _ => return Outlook::Wait,
            }
        }
        Outlook::Refuse(match (backed_off, never_fits) {
            (Some((backend, f)), _) => Reject::LoadFailed {
                backend,
                message: f.message.clone(),
                retry_after: f.until.saturating_sub(now).max(Duration::from_secs(1)),
            },
            (None, Some((size, needs, largest))) => Reject::NeverFits {
                size,
                needs,
                largest,
            },
            (None, None) => Reject::NoHealthyBackend,
        })
    }

    /// Decides the loads pending models need, and answers the requests of a
    /// model whose every way in is a failed load backing off. Which requests
    /// need a load is `placement`'s word: those no backend takes now.
    pub(crate) fn plan_loads(
        &mut self,
        fleet: &mut Fleet,
        queue: &mut WaitQueue,
        dirty: &mut BTreeSet<ModelName>,
        placement: &Placement,
        now: Duration,
        decisions: &mut Vec<Decision>,
    ) {
        let pending: Vec<(ModelName, Duration)> =
            self.pending.iter().map(|(m, t)| (m.clone(), *t)).collect();
        let mut lent = Lent {
            fleet: &mut *fleet,
            queue: &mut *queue,
            dirty: &mut *dirty,
        };
        for (model, since) in pending {
            match self.plan_load(&mut lent, placement, &model, since, now, decisions) {
                Planned::Done => {
                    self.pending.remove(&model);
                    clear_reservations(lent.fleet, lent.dirty, &model);
                }
                Planned::Later => {}
            }
        }
    }

    fn plan_load(
        &mut self,
        lent: &mut Lent<'_>,
        placement: &Placement,
        model: &ModelName,
        since: Duration,
        now: Duration,
        decisions: &mut Vec<Decision>,
    ) -> Planned {
        let (fleet, queue, dirty) = (&mut *lent.fleet, &mut *lent.queue, &mut *lent.dirty);
        let tiers = placement.tiers(fleet, model);
        let needy = queue
            .find_for(model.as_str(), |r| tiers.for_request(r).is_empty())
            .cloned();
        let wanted = self.wanted_unheld(fleet, model);
        if needy.is_none() && !wanted {
            return Planned::Done;
        }
        if loading_for(fleet, model, needy.as_ref()) {
            return Planned::Done;
        }
        fn fits(r: &Option<Request>) -> impl Fn(BackendId, &Backend) -> bool + '_ {
            move |id, b| {
                r.as_ref().is_none_or(|r| {
                    !r.exclude.contains(&id)
                        && b.status.serves(r.api)
                        && r.pin.is_none_or(|p| p == id)
                })
            }
        }
        let evict = if needy.is_some() {
            Evict::Idle
        } else {
            Evict::Nothing
        };
        if let Some((id, evict, _)) =
            self.load_target(fleet, queue, model, now, fits(&needy), evict)
        {
            let order = self.start_load(fleet, dirty, id, model, evict, now);
            decisions.push(Decision::Load(order));
            return Planned::Done;
        }
        let Some(needy) = needy else {
            return Planned::Later;
        };
        if now >= since + self.swap_after
            && let Some((id, evict, _)) = self.load_target(
                fleet,
                queue,
                model,
                now,
                fits(&Some(needy.clone())),
                Evict::InUse,
            )
        {
            // Clear that backend for this model: no new work for others.
            if let Some(b) = fleet.backends.get_mut(&id)
                && b.reserved.is_none()
            {
                b.reserved = Some(model.clone());
                for (_, name) in evict {
                    dirty.insert(name);
                }
            }
            return Planned::Later;
        }
        if let Outlook::Refuse(Reject::LoadFailed {
            backend, message, ..
        }) = self.outlook(fleet, &needy, now)
        {
            for id in queue.ids_for(model.as_str()) {
                queue.remove(id);
                decisions.push(Decision::LoadFailed {
                    request: id,
                    backend,
                    message: message.clone(),
                });
            }
            return Planned::Done;
        }
        Planned::Later
    }

    /// The backend where `model` would be ready soonest, with the models to
    /// evict there and the expected time: among those `allowed` picks that
    /// list it unloaded, can load, take work, are not backing off a failed
    /// load of it, and have room once `evict` allows.
    fn load_target(
        &self,
        fleet: &Fleet,
        queue: &WaitQueue,
        model: &ModelName,
        now: Duration,
        allowed: impl Fn(BackendId, &Backend) -> bool,
        evict: Evict,
    ) -> Option<(BackendId, Vec<Placed>, Duration)> {
        let mut best: Option<(BackendId, Vec<Placed>, Duration)> = None;
        for (id, b) in &fleet.backends {
            let Some(m) = b.models.get(model.as_str()).filter(|m| m.listed) else {
                continue;
            };
            let usable = m.residency == Residency::Unloaded
                && b.status.can_load
                && b.admits()
                && allowed(*id, b)
                && m.failure.as_ref().is_none_or(|f| f.until <= now)
                && b.reserved.as_ref().is_none_or(|r| r == model);
            if !usable {
                continue;
            }
            let cleared = b.reserved.as_ref() == Some(model);
            let spare = |on: BackendId, name: &ModelName| held_beyond(fleet, on, name);
            let out = match evict {
                Evict::Nothing if !cleared => {
                    fleet.room_for(*id, model.as_str(), |_, _, _| false, spare)
                }
                Evict::Idle | Evict::Nothing => fleet.room_for(
                    *id,
                    model.as_str(),
                    |on, name, e| {
                        // A backend cleared for this model gives up even
                        // what waits for its models; other servers on its
                        // machine do not.
                        !self.pinned.contains(name)
                            && e.idle()
                            && ((cleared && on == *id)
                                || (queue.len_for(name.as_str()) == 0 && !self.used_lately(e, now)))
                    },
                    spare,
                ),
                Evict::InUse => fleet.room_for(
                    *id,
                    model.as_str(),
                    |_, name, _| !self.pinned.contains(name),
                    spare,
                ),
            };
            let Some(out) = out else {
                continue;
            };
            let wait = out
                .iter()
                .filter_map(|(on, name)| fleet.backends.get(on)?.models.get(name.as_str()))
                .filter(|e| !e.idle())
                .map(|e| e.service.unwrap_or(Duration::from_secs(1)))
                .max()
                .unwrap_or_default();
            let start = wait + self.load_estimate(b, m);
            if best.as_ref().is_none_or(|(_, _, t)| start < *t) {
                best = Some((*id, out, start));
            }
        }
        best
    }

    /// Whether a model with nothing running was used too lately to count as
    /// idle for an eviction (see `SchedulerConfig::idle_after`).
    fn used_lately(&self, m: &ModelSlots, now: Duration) -> bool {
        now < m.last_used + self.idle_after
    }

    /// The shortest load of `model` on a backend that could load it now.
    pub(crate) fn fastest_load(&self, fleet: &Fleet, model: &str) -> Option<Duration> {
        fleet
            .backends
            .values()
            .filter(|b| b.status.can_load && b.admits())
            .filter_map(|b| Some(self.expected_load(b, b.models.get(model)?)))
            .min()
    }

    /// How long a load of `m` on `b` should take, for deciding where to
    /// load: as measured there, else its size at the backend's measured
    /// rate, else the default.
    fn load_estimate(&self, b: &Backend, m: &ModelSlots) -> Duration {
        measured_load(b, m).unwrap_or(self.default_load_time)
    }

    /// How long a load of `m` on `b` should take, for telling a client
    /// how long it will wait: as [`ModelManager::load_estimate`], but
    /// before the default, as long as the backend's loads of other models
    /// took (the default was 4 to 100 times a real load). Placement keeps
    /// the default: it compares backends, and the policy lab showed this
    /// guess moving it to more loads.
    fn expected_load(&self, b: &Backend, m: &ModelSlots) -> Duration {
        measured_load(b, m)
            .or(b.load_time)
            .unwrap_or(self.default_load_time)
    }

    fn start_load(
        &mut self,
        fleet: &mut Fleet,
        dirty: &mut BTreeSet<ModelName>,
        id: BackendId,
        model: &ModelName,
        evict: Vec<Placed>,
        now: Duration,
    ) -> LoadOrder {
        for (on, name) in &evict {
            if let Some(b) = fleet.backends.get_mut(on)
                && let Some(e) = b.models.get_mut(name.as_str())
            {
                e.residency = Residency::Unloading { since: now };
                b.recount();
            }
        }
        if let Some(b) = fleet.backends.get_mut(&id) {
            if let Some(m) = b.models.get_mut(model.as_str()) {
                m.residency = Residency::Loading {
                    since: now,
                    ours: true,
                };
            }
            b.recount();
            if b.reserved.as_ref() == Some(model) {
                b.reserved = None;
            }
        }
        for (_, name) in &evict {
            dirty.insert(name.clone());
        }
        self.pending.remove(model);
        LoadOrder {
            backend: id,
            model: model.clone(),
            evict,
        }
    }

    /// Models in use on `b` that stand in the way of loading `model`.
    /// A model used within `idle_after` counts: it may not be evicted yet
    /// either, and a refusal that named nothing left the operator guessing.
    fn in_use_on(
        &self,
        queue: &WaitQueue,
        b: &Backend,
        model: &ModelName,
        now: Duration,
    ) -> Vec<ModelName> {
        let mut in_use: Vec<ModelName> = b
            .models
            .iter()
            .filter(|(name, m)| {
                *name != model
                    && m.residency.occupies()
                    && (!m.idle()
                        || self.used_lately(m, now)
                        || self.pinned.contains(*name)
                        || queue.len_for(name.as_str()) > 0)
            })
            .map(|(name, _)| name.clone())
            .collect();
        in_use.sort();
        in_use
    }

    /// Unloads idle models whose time to live has passed.
    pub(crate) fn expire_idle(
        &self,
        fleet: &mut Fleet,
        queue: &WaitQueue,
        dirty: &mut BTreeSet<ModelName>,
        now: Duration,
        decisions: &mut Vec<Decision>,
    ) {
        let mut due = Vec::new();
        for (id, b) in &fleet.backends {
            if !b.status.can_unload || !b.admits() {
                continue;
            }
            for (name, m) in &b.models {
                if self.ttl_due(queue, name, m).is_some_and(|at| at <= now) {
                    due.push((*id, name.clone()));
                }
            }
        }
        // Models are kept in a hash map: ordered here, so the same inputs
        // unload in the same order.
        due.sort_unstable();
        for (id, model) in due {
            if let Some(b) = fleet.backends.get_mut(&id)
                && let Some(m) = b.models.get_mut(model.as_str())
            {
                m.residency = Residency::Unloading { since: now };
                b.recount();
            }
            dirty.insert(model.clone());
            decisions.push(Decision::Unload { backend: id, model });
        }
    }

    /// When an idle model's time to live runs out, if it is one that may
    /// be unloaded for idleness.
    fn ttl_due(&self, queue: &WaitQueue, name: &ModelName, m: &ModelSlots) -> Option<Duration> {
        let ttl = self.ttl_of(name.as_str())?;
        let idle = m.listed
            && m.residency == Residency::Loaded
            && m.idle()
            && !self.wanted(name.as_str())
            && queue.len_for(name.as_str()) == 0;
        idle.then(|| m.last_used + ttl)
    }

    /// The next time the manager has something to do by the clock: a time
    /// to live running out, a failed load's backoff ending, aging passing.
    pub(crate) fn next_wakeup(
        &self,
        fleet: &Fleet,
        queue: &WaitQueue,
        clock: Duration,
    ) -> Option<Duration> {
        let mut next: Option<Duration> = None;
        // Only what is still ahead: a time already passed (aging that
        // reserved a backend still busy) has had its poll, and waking for
        // it again would spin.
        let mut at = |t: Duration| {
            if t > clock {
                next = Some(next.map_or(t, |n| n.min(t)));
            }
        };
        let ttls = self.ttl.is_some() || self.policies.values().any(|p| p.ttl.is_some());
        // Called on every slot release: nothing to walk for most fleets.
        if !ttls && self.pending.is_empty() {
            return None;
        }
        for b in fleet.backends.values() {
            for (name, m) in &b.models {
                if ttls
                    && b.status.can_unload
                    && let Some(t) = self.ttl_due(queue, name, m)
                {
                    at(t);
                }
                if let Some(f) = &m.failure
                    && self.pending.contains_key(name)
                    && f.until > clock
                {
                    at(f.until);
                }
            }
        }
        let mut waiting = false;
        for (model, since) in &self.pending {
            if queue.len_for(model.as_str()) > 0 {
                waiting = true;
                at(*since + self.swap_after);
            }
        }
        // A model used lately becomes evictable for what waits.
        if waiting {
            for b in fleet.backends.values() {
                for m in b.models.values() {
                    if m.idle() && m.residency == Residency::Loaded && self.used_lately(m, clock) {
                        at(m.last_used + self.idle_after);
                    }
                }
            }
        }
        next
    }
}

/// Whether a backend the request could use (any, for a warm model) is
/// loading the model already: then it waits for that one.
fn loading_for(fleet: &Fleet, model: &ModelName, r: Option<&Request>) -> bool {
    fleet.backends.iter().any(|(id, b)| {
        b.admits()
            && r.is_none_or(|r| {
                !r.exclude.contains(id) && b.status.serves(r.api) && r.pin.is_none_or(|p| p == *id)
            })
            && b.models
                .get(model.as_str())
                .is_some_and(|m| m.listed && matches!(m.residency, Residency::Loading { .. }))
    })
}

/// Whether a backend other than `id` that takes work holds the model.
fn held_beyond(fleet: &Fleet, id: BackendId, model: &ModelName) -> bool {
    fleet.backends.iter().any(|(other, b)| {
        *other != id
            && b.admits()
            && b.models
                .get(model.as_str())
                .is_some_and(|m| m.listed && m.is_loaded())
    })
}

/// Whether some backend that takes work holds the model (or is loading
/// or unloading it).
fn held_anywhere(fleet: &Fleet, model: &ModelName) -> bool {
    fleet.backends.values().any(|b| {
        b.admits()
            && b.models
                .get(model.as_str())
                .is_some_and(|m| m.listed && m.residency.occupies())
    })
}

fn measured_load(b: &Backend, m: &ModelSlots) -> Option<Duration> {
    m.load_time.or_else(|| {
        let rate = b.load_rate?;
        let size = m.size? as f64;
        (rate > 0.0).then(|| Duration::from_secs_f64((size / rate).min(3600.0)))
    })
}

fn clear_reservations(fleet: &mut Fleet, dirty: &mut BTreeSet<ModelName>, model: &ModelName) {
    let mut cleared = Vec::new();
    for (id, b) in fleet.backends.iter_mut() {
        if b.reserved.as_ref() == Some(model) {
            b.reserved = None;
            cleared.push(*id);
        }
    }
    for id in cleared {
        fleet.mark_dirty(id, dirty);
    }
}

/// What a load may unload to make room.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Evict {
    /// Nothing: a warm or pinned model loads only where it fits as is.
    Nothing,
    /// Idle models with nothing waiting, least recently used first.
    Idle,
    /// Any model not pinned: aging passed a busy one's turn.
    InUse,
}

enum Planned {
    /// Decided, or nothing is needed any more.
    Done,
    /// Still needed; look again at the next poll.
    Later,
}
