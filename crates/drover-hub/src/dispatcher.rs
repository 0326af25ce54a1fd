//! The dispatcher puts the pure [`Scheduler`] behind a lock and turns its
//! decisions into effects: a waiting request's task is woken with a
//! [`SlotGuard`], or told that it expired.
//!
//! Why a `std::sync::Mutex` and not an actor: every critical section is a
//! few microseconds of pure computation with no `.await` inside, so a plain
//! lock is cheaper than a channel round trip and cannot deadlock across
//! awaits.
//!
//! A slot is held as a [`SlotGuard`]; dropping it releases the slot exactly
//! once, whatever happened to the request (success, error, client gone,
//! panic). A guard is never dropped while the lock is held: guards that
//! could not be delivered are disarmed and released in the same section.
//!
//! A slot whose client went away mid-request is released only after a
//! grace (`upstream.cancel_grace`): the hub drops the upstream connection at
//! once, but the server notices only at its next write, and until then it
//! is still working on the abandoned request. Handing the slot on sooner
//! put three requests on a two-slot server.

use std::collections::{BTreeMap, HashMap};

use rustc_hash::FxHashMap;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Duration;

use drover_core::{BackendId, ModelName, RequestId};
use drover_scheduler::{
    Admission, Applied, Decision, Dispatch, Event, LoadOrder, Notice, Outcome, Refusal, Reject,
    Reply, Request, Scheduler,
};
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::limits::Permit;
use crate::observe::Observer;

/// Why a request that was waiting did not get a slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WaitError {
    Expired,
    /// It waited out its time while its model was still loading there,
    /// which should be done in about `retry_after`.
    StillLoading {
        backend: BackendId,
        retry_after: Duration,
    },
    /// The load that would have placed it failed.
    LoadFailed {
        backend: BackendId,
        message: String,
    },
    Unroutable,
    ShuttingDown,
    /// This hub follows and no leader answered for the grant timeout: why.
    NoLeader(String),
    /// The leader it asked stopped, or this hub leads now: it asks again
    /// where slots are granted now, keeping its place.
    LeaderChanged,
}

/// A load or unload the scheduler decided, for the model manager's task
/// to carry out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelWork {
    Load(LoadOrder),
    Unload {
        backend: BackendId,
        model: ModelName,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AcquireError {
    Rejected(Reject),
    Wait(WaitError),
    /// The cluster's leader turned the request's key away: it is over one
    /// of its limits there.
    KeyLimited {
        limit: crate::limits::Limit,
        message: String,
        retry_after: Duration,
    },
}

type Delivery = Result<SlotGuard, WaitError>;

struct State {
    sched: Scheduler,
    waiters: FxHashMap<RequestId, oneshot::Sender<Delivery>>,
    /// Slots of abandoned requests, released at the time (scheduler time)
    /// of their key; the `u64` keeps keys unique.
    lingering: BTreeMap<(Duration, u64), Lingering>,
    next_linger: u64,
    closed: bool,
    /// Every event applied and what it came to, when recording.
    journal: Option<Vec<Journaled>>,
}

/// One event the dispatcher applied, at scheduler time `at`, and what the
/// scheduler answered: what a replay must reproduce.
#[derive(Clone, Debug)]
pub struct Journaled {
    pub at: Duration,
    pub event: Event,
    pub applied: Applied,
}

impl State {
    /// Applies `event` at `now`, journaling it when recording.
    fn apply(&mut self, event: Event, now: Duration) -> Applied {
        let Some(journal) = &mut self.journal else {
            return self.sched.apply(event, now);
        };
        let applied = self.sched.apply(event.clone(), now);
        journal.push(Journaled {
            at: now,
            event,
            applied: applied.clone(),
        });
        applied
    }

    fn next_wakeup(&self) -> Option<Duration> {
        let linger = self.lingering.keys().next().map(|(at, _)| *at);
        [self.sched.next_wakeup(), linger]
            .into_iter()
            .flatten()
            .min()
    }

    /// Takes the lingering slots whose grace has passed, as the events
    /// that release them, and the key permits they held, to be dropped
    /// once the lock is let go.
    fn release_lingering(&mut self, now: Duration) -> (Vec<Event>, Vec<Permit>) {
        let mut released = Vec::new();
        let mut permits = Vec::new();
        while let Some(entry) = self.lingering.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let Lingering {
                backend,
                model,
                tokens,
                permit,
            } = entry.remove();
            released.push(Event::Finished {
                backend,
                model,
                tokens,
                outcome: Outcome::Neutral,
            });
            permits.extend(permit);
        }
        (released, permits)
    }
}

/// An abandoned request's slot, taken until the server can have let go of
/// it, with the key permit that counts it against its key's concurrency.
struct Lingering {
    backend: BackendId,
    model: ModelName,
    /// See [`Dispatch::tokens`].
    tokens: u32,
    permit: Option<Permit>,
}

pub struct Dispatcher {
    state: Mutex<State>,
    /// Time zero for the scheduler; tokio's clock, so tests can pause it.
    epoch: Instant,
    /// Wakes the timer task when a new deadline may be earlier.
    timer: Notify,
    /// How long an abandoned request's slot stays taken.
    cancel_grace: Duration,
    observer: Arc<Observer>,
    /// Loads and unloads go to the model manager's task.
    work: mpsc::UnboundedSender<ModelWork>,
    /// Backends' names, for what the log says of them.
    names: RwLock<HashMap<BackendId, String>>,
}

impl Dispatcher {
    /// The dispatcher and the receiving end of the loads and unloads its
    /// scheduler decides, for the model manager's task.
    pub fn new(
        sched: Scheduler,
        cancel_grace: Duration,
        observer: Arc<Observer>,
        journal: bool,
    ) -> (Arc<Self>, mpsc::UnboundedReceiver<ModelWork>) {
        let (work, rx) = mpsc::unbounded_channel();
        let dispatcher = Arc::new(Dispatcher {
            state: Mutex::new(State {
                sched,
                waiters: FxHashMap::default(),
                lingering: BTreeMap::new(),
                next_linger: 0,
                closed: false,
                journal: journal.then(Vec::new),
            }),
            epoch: Instant::now(),
            timer: Notify::new(),
            cancel_grace,
            observer,
            work,
            names: RwLock::new(HashMap::new()),
        });
        (dispatcher, rx)
    }

    /// Scheduler time: how long since the dispatcher started.
    pub fn now(&self) -> Duration {
        Instant::now().saturating_duration_since(self.epoch)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves the scheduler's state as it
        // was at the panic, which is still consistent enough to serve.
        drover_core::sync::lock(&self.state)
    }

    /// Waits for a slot for `request`. Dropping the returned future while it
    /// waits removes the request from the queue.
    pub async fn acquire(
        self: &Arc<Self>,
        request: Request,
        retry: bool,
    ) -> Result<SlotGuard, AcquireError> {
        let id = request.id;
        let rx = {
            let mut st = self.lock();
            if st.closed {
                return Err(AcquireError::Wait(WaitError::ShuttingDown));
            }
            let now = self.now();
            let Applied { reply, decisions } = st.apply(Event::Arrived { request, retry }, now);
            let Reply::Admitted(admitted) = reply else {
                unreachable!("an arrival is answered with its admission")
            };
            if let Err(Reject::QueueFull { .. }) = &admitted {
                self.observer.queue_full();
            }
            match admitted {
                Err(reject) => {
                    self.tell(&mut st);
                    return Err(AcquireError::Rejected(reject));
                }
                Ok(Admission::Dispatched(d)) => {
                    self.tell(&mut st);
                    return Ok(SlotGuard::new(self.clone(), &d));
                }
                Ok(Admission::Queued) => {
                    // Registered before the decisions are handed out: the
                    // newcomer may be among them.
                    let (tx, rx) = oneshot::channel();
                    st.waiters.insert(id, tx);
                    self.deliver(&mut st, decisions, now);
                    rx
                }
            }
        };
        self.timer.notify_one();
        let mut leave = LeaveQueueOnDrop {
            dispatcher: self,
            id,
            armed: true,
        };
        let delivered = rx.await;
        leave.armed = false;
        match delivered {
            Ok(Ok(guard)) => Ok(guard),
            Ok(Err(e)) => Err(AcquireError::Wait(e)),
            Err(_) => Err(AcquireError::Wait(WaitError::ShuttingDown)),
        }
    }

    /// Applies `event` now and carries out whatever became possible (a
    /// backend appeared, a drain ended, a slot freed...); the event's own
    /// answer.
    pub fn apply(self: &Arc<Self>, event: Event) -> Reply {
        let mut st = self.lock();
        let before = st.next_wakeup();
        let now = self.now();
        let reply = self.carry_out(&mut st, event, now);
        self.rearm_if_earlier(&st, before);
        reply
    }

    /// Applies the events `f` picks from what the scheduler holds now,
    /// under one lock: nothing changes between the look and the change.
    pub fn apply_with(self: &Arc<Self>, f: impl FnOnce(&Scheduler) -> Vec<Event>) -> Vec<Reply> {
        let mut st = self.lock();
        let before = st.next_wakeup();
        let now = self.now();
        let events = f(&st.sched);
        let replies = events
            .into_iter()
            .map(|event| self.carry_out(&mut st, event, now))
            .collect();
        self.rearm_if_earlier(&st, before);
        replies
    }

    /// Applies one event under the lock and hands out its decisions.
    fn carry_out(self: &Arc<Self>, st: &mut State, event: Event, now: Duration) -> Reply {
        let Applied { reply, decisions } = st.apply(event, now);
        self.deliver(st, decisions, now);
        reply
    }

    /// Counts a slot another hub holds on a grant from an earlier leader
    /// ([`Event::Adopted`]): a guard that releases it, or `None` where the
    /// backend does not list the model.
    pub fn adopt(
        self: &Arc<Self>,
        backend: BackendId,
        model: &ModelName,
        tokens: u32,
    ) -> Option<SlotGuard> {
        let adopted = Event::Adopted {
            backend,
            model: model.clone(),
            tokens,
        };
        let Reply::Changed(true) = self.apply(adopted) else {
            return None;
        };
        let d = Dispatch {
            request: RequestId(0),
            backend,
            model: model.clone(),
            affinity_hit: false,
            last_resort: false,
            running: 0,
            seq: 0,
            tokens,
        };
        Some(SlotGuard::new(self.clone(), &d))
    }

    /// An operator's load: the order to carry out, or why not.
    pub fn ask_load(
        self: &Arc<Self>,
        backend: Option<BackendId>,
        model: &ModelName,
    ) -> Result<LoadOrder, Refusal> {
        let asked = Event::LoadAsked {
            backend,
            model: model.clone(),
        };
        match self.apply(asked) {
            Reply::Load(order) => order,
            other => unreachable!("a load asked is answered with its order, not {other:?}"),
        }
    }

    /// An operator's unload: whether it may go ahead.
    pub fn ask_unload(
        self: &Arc<Self>,
        backend: BackendId,
        model: &ModelName,
    ) -> Result<(), Refusal> {
        let asked = Event::UnloadAsked {
            backend,
            model: model.clone(),
        };
        match self.apply(asked) {
            Reply::Unload(unload) => unload,
            other => unreachable!("an unload asked is answered with its go-ahead, not {other:?}"),
        }
    }

    /// Every event applied since the hub started, with what each came to,
    /// when it journals (`HubConfig::journal`); else nothing.
    pub fn journal(&self) -> Vec<Journaled> {
        self.lock().journal.clone().unwrap_or_default()
    }

    /// Wakes the timer task if the next thing due (a breaker's cooldown, a
    /// deadline) is now earlier than when it last looked. Only then: waking
    /// it on every release would cost a context switch per request.
    fn rearm_if_earlier(&self, st: &State, before: Option<Duration>) {
        let earlier = match (st.next_wakeup(), before) {
            (Some(now), Some(was)) => now < was,
            (Some(_), None) => true,
            (None, _) => false,
        };
        if earlier {
            self.timer.notify_one();
        }
    }

    /// Reads the scheduler without changing it: for the named queries
    /// below, the views' snapshot and tests; routes use those.
    pub(crate) fn inspect<R>(&self, f: impl FnOnce(&Scheduler) -> R) -> R {
        f(&self.lock().sched)
    }

    /// What the scheduler holds of one backend.
    pub fn view(&self, backend: BackendId) -> Option<drover_scheduler::BackendView> {
        self.inspect(|s| s.fleet().view(backend))
    }

    /// Whether any backend lists `model`.
    pub fn knows_model(&self, model: &str) -> bool {
        self.inspect(|s| s.fleet().knows_model(model))
    }

    /// The backends the scheduler has heard from.
    pub fn known_backends(&self) -> Vec<BackendId> {
        self.inspect(|s| s.fleet().ids())
    }

    /// Every model some backend lists.
    pub fn model_names(&self) -> Vec<ModelName> {
        self.inspect(|s| s.fleet().model_names())
    }

    /// The backends that list `model`.
    pub fn backends_listing(&self, model: &str) -> Vec<BackendId> {
        self.inspect(|s| s.fleet().listing(model))
    }

    /// The largest context of the backends that list `model`, where every
    /// one says its context.
    pub fn largest_context(&self, model: &str) -> Option<u32> {
        self.inspect(|s| s.fleet().largest_context(model))
    }

    /// When a backend with `model` whose breaker is open may take a trial
    /// request, from now.
    pub fn reopens_in(&self, model: &str) -> Option<Duration> {
        let now = self.now();
        self.inspect(|s| s.reopens_in(model, now))
    }

    /// Requests running on (`backend`, `model`), and how many were ever
    /// dispatched there (see [`Dispatch::seq`]).
    pub fn running(&self, backend: BackendId, model: &str) -> (u32, u64) {
        self.inspect(|s| {
            let fleet = s.fleet();
            (fleet.busy(backend, model), fleet.dispatched(backend, model))
        })
    }

    /// A measured prefill: `tokens` prompt tokens took `took` on `backend`.
    pub fn prefill_seen(
        self: &Arc<Self>,
        backend: BackendId,
        model: &ModelName,
        tokens: u32,
        took: Duration,
    ) {
        self.apply(Event::PrefillSeen {
            backend,
            model: model.clone(),
            tokens,
            took,
        });
    }

    fn release(
        self: &Arc<Self>,
        backend: BackendId,
        model: &ModelName,
        tokens: u32,
        outcome: Outcome,
    ) {
        self.apply(Event::Finished {
            backend,
            model: model.clone(),
            tokens,
            outcome,
        });
    }

    /// Releases an abandoned request's slot once the server can have let go
    /// of it.
    fn release_after_grace(&self, lingering: Lingering) {
        {
            let mut st = self.lock();
            let at = self.now() + self.cancel_grace;
            let seq = st.next_linger;
            st.next_linger += 1;
            st.lingering.insert((at, seq), lingering);
        }
        self.timer.notify_one();
    }

    /// Names a backend, for the log.
    pub fn name(&self, id: BackendId, name: &str) {
        drover_core::sync::write(&self.names).insert(id, name.to_string());
    }

    /// Logs what the scheduler says the operator should hear of: every
    /// breaker change with its reason, and each model's learned concurrency.
    fn tell(&self, st: &mut State) {
        let notices = st.sched.take_notices();
        if notices.is_empty() {
            return;
        }
        let names = drover_core::sync::read(&self.names);
        let name = |id: &BackendId| names.get(id).cloned().unwrap_or_else(|| id.0.to_string());
        for notice in notices {
            match notice {
                Notice::Breaker {
                    backend,
                    state,
                    reason,
                } => {
                    tracing::warn!(backend = %name(&backend), breaker = state.as_str(), %reason, "breaker changed")
                }
                Notice::Limit {
                    backend,
                    model,
                    limit: Some(limit),
                    slots,
                } => {
                    tracing::warn!(backend = %name(&backend), model = %crate::error::echo(model.as_str()), limit, slots, "the server ran out of room: it takes {limit} of its {slots} slots' requests at once for now")
                }
                Notice::Limit {
                    backend,
                    model,
                    limit: None,
                    slots,
                } => {
                    tracing::info!(backend = %name(&backend), model = %crate::error::echo(model.as_str()), slots, "the server takes all its slots again")
                }
            }
        }
    }

    /// Hands decisions to waiting tasks. A task that went away in the
    /// meantime gives its slot straight back, which may free the way for the
    /// next request, hence the loop.
    fn deliver(self: &Arc<Self>, st: &mut State, mut decisions: Vec<Decision>, now: Duration) {
        self.tell(st);
        while !decisions.is_empty() {
            let mut orphans: Vec<(BackendId, ModelName, u32)> = Vec::new();
            for decision in decisions.drain(..) {
                match decision {
                    Decision::Dispatch(d) => {
                        let guard = SlotGuard::new(self.clone(), &d);
                        match st.waiters.remove(&d.request) {
                            Some(tx) => {
                                if let Err(Ok(guard)) = tx.send(Ok(guard)) {
                                    orphans.push(guard.disarm());
                                }
                            }
                            None => orphans.push(guard.disarm()),
                        }
                    }
                    Decision::Expired(id) => {
                        self.observer.expired();
                        if let Some(tx) = st.waiters.remove(&id) {
                            let _ = tx.send(Err(WaitError::Expired));
                        }
                    }
                    Decision::Unroutable(id) => {
                        if let Some(tx) = st.waiters.remove(&id) {
                            let _ = tx.send(Err(WaitError::Unroutable));
                        }
                    }
                    Decision::ExpiredLoading {
                        request,
                        backend,
                        retry_after,
                    } => {
                        self.observer.expired();
                        if let Some(tx) = st.waiters.remove(&request) {
                            let _ = tx.send(Err(WaitError::StillLoading {
                                backend,
                                retry_after,
                            }));
                        }
                    }
                    Decision::LoadFailed {
                        request,
                        backend,
                        message,
                    } => {
                        if let Some(tx) = st.waiters.remove(&request) {
                            let _ = tx.send(Err(WaitError::LoadFailed { backend, message }));
                        }
                    }
                    // The manager's task outlives the dispatcher's users;
                    // after shutdown nothing is loaded any more.
                    Decision::Load(order) => {
                        let _ = self.work.send(ModelWork::Load(order));
                    }
                    Decision::Unload { backend, model } => {
                        let _ = self.work.send(ModelWork::Unload { backend, model });
                    }
                }
            }
            for (backend, model, tokens) in orphans {
                let finished = Event::Finished {
                    backend,
                    model,
                    tokens,
                    outcome: Outcome::Neutral,
                };
                decisions.extend(st.apply(finished, now).decisions);
            }
            self.tell(st);
        }
    }

    /// Expires waiting requests, half-opens breakers and releases lingering
    /// slots on time, even when no other event comes.
    pub async fn run_timer(self: Arc<Self>, shutdown: CancellationToken) {
        loop {
            let next = self.lock().next_wakeup();
            let sleep = async {
                match next {
                    Some(at) => tokio::time::sleep_until(self.epoch + at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = self.timer.notified() => continue,
                _ = sleep => {
                    let mut st = self.lock();
                    let now = self.now();
                    let (released, permits) = st.release_lingering(now);
                    for event in released.into_iter().chain([Event::Tick]) {
                        self.carry_out(&mut st, event, now);
                    }
                    drop(st);
                    drop(permits);
                }
            }
        }
    }

    /// Refuses new requests and answers every waiting one with
    /// "shutting down"; running ones finish.
    pub fn close(&self) {
        let mut st = self.lock();
        st.closed = true;
        let mut waiting: Vec<RequestId> = st.waiters.keys().copied().collect();
        waiting.sort_unstable();
        let now = self.now();
        for id in waiting {
            st.apply(Event::Cancelled(id), now);
            if let Some(tx) = st.waiters.remove(&id) {
                let _ = tx.send(Err(WaitError::ShuttingDown));
            }
        }
    }
}

/// Takes a request out of the queue if its task is dropped while waiting
/// (the client disconnected).
struct LeaveQueueOnDrop<'a> {
    dispatcher: &'a Arc<Dispatcher>,
    id: RequestId,
    armed: bool,
}

impl Drop for LeaveQueueOnDrop<'_> {
    fn drop(&mut self) {
        if self.armed {
            let mut st = self.dispatcher.lock();
            let now = self.dispatcher.now();
            st.apply(Event::Cancelled(self.id), now);
            st.waiters.remove(&self.id);
        }
    }
}

/// A held slot on one (backend, model). Released exactly once, on drop, with
/// the outcome last recorded. A guard dropped with none recorded belonged
/// to a request its client abandoned: its slot lingers for the cancel
/// grace before it is free again.
pub struct SlotGuard {
    dispatcher: Option<Arc<Dispatcher>>,
    /// A slot the cluster's leader granted this hub (a follower): let go
    /// by telling the leader.
    remote: Option<crate::cluster::link::Granted>,
    pub backend: BackendId,
    pub model: ModelName,
    pub affinity_hit: bool,
    /// See [`Dispatch::last_resort`].
    pub last_resort: bool,
    /// See [`Dispatch::running`].
    pub running: u32,
    /// See [`Dispatch::seq`].
    pub seq: u64,
    /// See [`Dispatch::tokens`].
    tokens: u32,
    started: Instant,
    outcome: Option<Outcome>,
    /// The key's concurrency permit, held as long as the slot is.
    permit: Option<Permit>,
    /// Output tokens to charge a key where the leader keeps its count.
    charge: Option<drover_proto::cluster::link::Charge>,
    /// A slot this hub granted itself in a cluster, kept by the link (its
    /// number there) so that a next leader can count it.
    tracked: Option<(Arc<crate::cluster::link::Link>, u64)>,
}

impl SlotGuard {
    fn new(dispatcher: Arc<Dispatcher>, d: &Dispatch) -> Self {
        SlotGuard {
            dispatcher: Some(dispatcher),
            remote: None,
            backend: d.backend,
            model: d.model.clone(),
            affinity_hit: d.affinity_hit,
            last_resort: d.last_resort,
            running: d.running,
            seq: d.seq,
            tokens: d.tokens,
            started: Instant::now(),
            outcome: None,
            permit: None,
            charge: None,
            tracked: None,
        }
    }

    /// A slot the leader granted: `backend` is this hub's id for the
    /// backend the grant names.
    pub(crate) fn granted(
        remote: crate::cluster::link::Granted,
        backend: BackendId,
        grant: &drover_proto::cluster::link::Grant,
    ) -> Self {
        SlotGuard {
            dispatcher: None,
            remote: Some(remote),
            backend,
            model: ModelName::new(&grant.model),
            affinity_hit: grant.affinity_hit,
            last_resort: grant.last_resort,
            running: grant.running,
            seq: grant.seq,
            tokens: grant.tokens,
            started: Instant::now(),
            outcome: None,
            permit: None,
            charge: None,
            tracked: None,
        }
    }

    /// Keeps the slot on `link` until it is let go: should this hub follow
    /// before then, its next leader counts it.
    pub(crate) fn track(&mut self, link: &Arc<crate::cluster::link::Link>) {
        let id = link.track(self.backend, &self.model, self.tokens);
        self.tracked = Some((link.clone(), id));
    }

    /// Whether the leader granted it (this hub follows).
    pub fn is_remote(&self) -> bool {
        self.remote.is_some()
    }

    /// Counts the slot against a key's concurrency for as long as it is
    /// taken, lingering included.
    pub fn hold(&mut self, permit: Option<Permit>) {
        self.permit = permit;
    }

    /// Its answer used `tokens` output tokens of the key `id`'s
    /// tokens a minute (`tpm`): told to the leader with the release, where
    /// the leader granted it. False where the slot is this hub's own, and
    /// its key is counted here.
    pub fn charge_remotely(&mut self, id: &str, tpm: Option<u32>, tokens: u64) -> bool {
        if self.remote.is_none() {
            return false;
        }
        self.charge = Some(drover_proto::cluster::link::Charge {
            key: id.to_string(),
            tokens_per_minute: tpm,
            tokens,
        });
        true
    }

    /// Tokens of a shared context it takes ([`Dispatch::tokens`]).
    pub fn tokens(&self) -> u32 {
        self.tokens
    }

    /// The backend did its job in `service` (as another hub measured).
    pub fn succeeded_in(&mut self, service: Duration) {
        self.outcome = Some(Outcome::Success { service });
    }

    /// Its client went away: the slot lingers for the cancel grace.
    pub fn abandoned(&mut self) {
        self.outcome = None;
    }

    /// The backend did its job.
    pub fn succeed(&mut self) {
        self.outcome = Some(Outcome::Success {
            service: self.started.elapsed(),
        });
    }

    /// The backend failed the request.
    pub fn fail(&mut self) {
        self.outcome = Some(Outcome::Failure);
    }

    /// The server ran out of room for it with others running: overload,
    /// not a failure; the model takes fewer at once there for a while.
    pub fn overloaded(&mut self) {
        self.outcome = Some(Outcome::Overloaded);
    }

    /// The request ended in a way that says nothing about the backend, and
    /// the backend is not working on it any more (it answered 429, or it
    /// was removed).
    pub fn neutral(&mut self) {
        self.outcome = Some(Outcome::Neutral);
    }

    fn disarm(mut self) -> (BackendId, ModelName, u32) {
        self.dispatcher = None;
        (self.backend, self.model.clone(), self.tokens)
    }
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        if let Some(remote) = self.remote.take() {
            // The leader lingers an abandoned slot for the cancel grace;
            // the key's permit lingers here as long.
            remote.release(self.outcome, self.permit.take(), self.charge.take());
            return;
        }
        if let Some((link, id)) = self.tracked.take() {
            link.untrack(id, crate::cluster::link::wire_outcome(self.outcome));
        }
        if let Some(d) = self.dispatcher.take() {
            match self.outcome {
                Some(outcome) => d.release(self.backend, &self.model, self.tokens, outcome),
                None => d.release_after_grace(Lingering {
                    backend: self.backend,
                    model: self.model.clone(),
                    tokens: self.tokens,
                    permit: self.permit.take(),
                }),
            }
        }
    }
}
