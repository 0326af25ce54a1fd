//! A follower's link to its leader: one long-lived request to the leader's
//! `/cluster/link` on which this hub asks for each request's slot and says
//! when it lets one go. The requests themselves go straight from here to
//! the backend the leader names.
//!
//! What the link carries is kept here until the leader has it: the slots
//! this hub holds (told again in the `Hello` of every new link, so a new
//! leader counts them) and the requests still waiting (asked again on every
//! new link, with how long they have waited, so no newcomer overtakes
//! them). A link down for longer than `cluster.grant_timeout` answers what
//! waits with 503: no request is ever sent without a grant.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use drover_core::sync::lock;
use drover_core::{BackendId, ModelName};
use drover_proto::admin::BackendSpec;
use drover_proto::cluster::link::{
    Acquire, Charge, Grant, Held, KeyUse, Outcome as WireOutcome, Refusal, ToFollower, ToLeader,
};
use drover_scheduler::{Outcome, Request};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::lines::{ChannelBody, Lines, LinkError, line};
use super::{Cluster, Role};
use crate::dispatcher::{AcquireError, Dispatcher, SlotGuard, WaitError};
use crate::limits::Permit;
use crate::registry::Backends;

/// What a waiting request is told.
type Answer = Result<Grant, Failed>;

/// A slot this hub granted itself, as its scheduler names it; named for
/// the link only if a `Hello` tells of it.
struct Local {
    backend: BackendId,
    model: ModelName,
    tokens: u32,
}

/// How a slot is asked for, beside the request itself.
pub struct Asking {
    /// It goes round again after an attempt failed.
    pub retry: bool,
    /// Its client key, where the key has limits the leader counts.
    pub key: Option<KeyUse>,
    /// The key was checked already, here, while this hub led.
    pub admitted: bool,
    /// How long it may wait without a leader.
    pub grant_timeout: Duration,
}

/// Why a waiting request got no grant.
enum Failed {
    /// The leader's refusal.
    Refused(Refusal),
    /// No leader answered for `cluster.grant_timeout`: why.
    NoLeader(String),
    /// The leader stopped, or this hub leads now: ask again.
    LeaderChanged,
}

struct Waiting {
    acquire: Acquire,
    /// When it was asked: its wait so far is told again on a new link.
    asked: Instant,
    answer: oneshot::Sender<Answer>,
}

#[derive(Default)]
struct State {
    /// The current link's sender, while one is up.
    out: Option<mpsc::UnboundedSender<Bytes>>,
    waiting: HashMap<u64, Waiting>,
    held: HashMap<u64, Held>,
    /// Slots this hub granted its own requests while it led, still
    /// running: once it follows, its `Hello` tells the leader of them (the
    /// flag: told), and their ends are released there.
    local: HashMap<u64, (Local, bool)>,
    /// Slots of `held` counted in this hub's own scheduler since it leads:
    /// the leader that granted them is gone, and nobody else counts them.
    adopted: HashMap<u64, SlotGuard>,
    /// Since when no link is up, and why (for the 503).
    down: Option<(Instant, String)>,
}

/// The follower's side of the link.
pub struct Link {
    state: Mutex<State>,
    next: AtomicU64,
    tasks: TaskTracker,
    cancel_grace: Duration,
    /// The leader's backends as it last told them.
    fleet: watch::Sender<Option<Vec<BackendSpec>>>,
    /// Backends this hub added because a leader had them (`fleet.rs`).
    from_fleet: Mutex<std::collections::BTreeSet<String>>,
}

/// A slot the leader granted; dropped through [`Granted::release`].
pub struct Granted {
    link: Arc<Link>,
    id: u64,
}

impl Granted {
    /// Tells the leader the slot is free, how its request ended and the
    /// output tokens to charge its key; an abandoned one's key permit
    /// lingers here as the slot does there.
    pub fn release(self, outcome: Option<Outcome>, permit: Option<Permit>, charge: Option<Charge>) {
        self.link.release(self.id, wire_outcome(outcome), charge);
        if let Some(permit) = permit {
            let grace = self.link.cancel_grace;
            self.link.tasks.spawn(async move {
                tokio::time::sleep(grace).await;
                drop(permit);
            });
        }
    }
}

/// How a request ended, as the link says it; `None`: its client left.
pub fn wire_outcome(outcome: Option<Outcome>) -> WireOutcome {
    match outcome {
        Some(Outcome::Success { service }) => WireOutcome::Success {
            service_ms: u64::try_from(service.as_millis()).unwrap_or(u64::MAX),
        },
        Some(Outcome::Failure) => WireOutcome::Failure,
        Some(Outcome::Overloaded) => WireOutcome::Overloaded,
        Some(Outcome::Neutral) => WireOutcome::Neutral,
        None => WireOutcome::Abandoned,
    }
}

impl Link {
    pub fn new(tasks: TaskTracker, cancel_grace: Duration) -> Arc<Link> {
        Arc::new(Link {
            state: Mutex::new(State {
                down: Some((Instant::now(), "no link to a leader yet".into())),
                ..State::default()
            }),
            next: AtomicU64::new(1),
            tasks,
            cancel_grace,
            fleet: watch::Sender::new(None),
            from_fleet: Mutex::default(),
        })
    }

    /// Notes that this hub added (`true`) or dropped (`false`) the backend
    /// `name` because of what a leader has.
    pub fn note_fleet(&self, name: &str, added: bool) {
        let mut set = lock(&self.from_fleet);
        if added {
            set.insert(name.to_string());
        } else {
            set.remove(name);
        }
    }

    /// The backends this hub added because a leader had them.
    pub fn added_from_fleet(&self) -> Vec<String> {
        lock(&self.from_fleet).iter().cloned().collect()
    }

    /// Whether this hub added the backend `name` because a leader had it:
    /// it is no longer so noted (its owner, a node's agent, takes it).
    pub fn take_from_fleet(&self, name: &str) -> bool {
        lock(&self.from_fleet).remove(name)
    }

    /// The leader's backends, as each link tells them.
    pub fn fleet(&self) -> watch::Receiver<Option<Vec<BackendSpec>>> {
        self.fleet.subscribe()
    }

    /// Whether a link to the leader is up.
    pub fn is_up(&self) -> bool {
        lock(&self.state).down.is_none()
    }

    /// Slots held by this hub's requests now.
    pub fn held(&self) -> usize {
        lock(&self.state).held.len()
    }

    fn send(state: &State, message: &ToLeader) {
        if let Some(out) = &state.out {
            let _ = out.send(line(message));
        }
    }

    fn release(&self, id: u64, outcome: WireOutcome, charge: Option<Charge>) {
        let mut st = lock(&self.state);
        st.held.remove(&id);
        if let Some(mut adopted) = st.adopted.remove(&id) {
            crate::cluster::grants::ended_as(&mut adopted, outcome);
            drop(st);
            drop(adopted);
            return;
        }
        // A link that is down drops it: the next `Hello` does not list it,
        // which frees it there (and its charge is lost with it).
        Self::send(
            &st,
            &ToLeader::Release {
                id,
                outcome,
                charge,
            },
        );
    }

    /// A slot this hub granted its own request (it leads): kept until the
    /// request lets it go, so that should this hub follow meanwhile, the
    /// next leader counts it. Its number.
    pub fn track(&self, backend: BackendId, model: &ModelName, tokens: u32) -> u64 {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let local = Local {
            backend,
            model: model.clone(),
            tokens,
        };
        lock(&self.state).local.insert(id, (local, false));
        id
    }

    /// A slot [`Link::track`] kept is let go: the leader is told where a
    /// `Hello` told it of the slot.
    pub fn untrack(&self, id: u64, outcome: WireOutcome) {
        let mut st = lock(&self.state);
        if let Some((_, true)) = st.local.remove(&id) {
            Self::send(
                &st,
                &ToLeader::Release {
                    id,
                    outcome,
                    charge: None,
                },
            );
        }
    }

    /// Tells the leader a prefill measured here.
    pub fn prefill(&self, backend: String, model: &str, tokens: u32, took: Duration) {
        let st = lock(&self.state);
        Self::send(
            &st,
            &ToLeader::Prefill {
                backend,
                model: model.to_string(),
                tokens,
                took_us: u64::try_from(took.as_micros()).unwrap_or(u64::MAX),
            },
        );
    }

    /// Asks the leader for a slot for `request`; `now` is this hub's
    /// scheduler time. Dropping the future while it waits cancels it there.
    pub async fn acquire(
        self: &Arc<Self>,
        request: &Request,
        asking: Asking,
        now: Duration,
        names: &Backends,
    ) -> Result<SlotGuard, AcquireError> {
        let grant_timeout = asking.grant_timeout;
        // Its own deadline holds here too while no leader answers for it.
        let deadline = request
            .deadline
            .map(|d| Instant::now() + d.saturating_sub(now));
        let asked_first = Instant::now();
        // Backends the leader granted that this hub does not have: asked
        // again without them.
        let mut unknown: Vec<String> = Vec::new();
        loop {
            let id = self.next.fetch_add(1, Ordering::Relaxed);
            let mut acquire = super::wire::acquire(id, request, asking.retry, now, names);
            acquire.key = asking.key.clone();
            acquire.admitted = asking.admitted || !unknown.is_empty();
            if !unknown.is_empty() {
                acquire.exclude.extend(unknown.iter().cloned());
                let waited = u64::try_from(asked_first.elapsed().as_millis()).unwrap_or(u64::MAX);
                acquire.waited_ms = acquire.waited_ms.saturating_add(waited);
                acquire.deadline_ms = acquire.deadline_ms.map(|d| d.saturating_sub(waited));
            }
            let (tx, rx) = oneshot::channel();
            {
                let mut st = lock(&self.state);
                if let Some((since, why)) = &st.down
                    && since.elapsed() >= grant_timeout
                {
                    return Err(AcquireError::Wait(WaitError::NoLeader(why.clone())));
                }
                Self::send(&st, &ToLeader::Acquire(Box::new(acquire.clone())));
                st.waiting.insert(
                    id,
                    Waiting {
                        acquire,
                        asked: Instant::now(),
                        answer: tx,
                    },
                );
            }
            let mut leave = Cancel {
                link: self,
                id,
                armed: true,
            };
            let answer = match deadline {
                Some(at) => match tokio::time::timeout_at(at, rx).await {
                    Ok(answer) => answer,
                    Err(_) => return Err(AcquireError::Wait(WaitError::Expired)),
                },
                None => rx.await,
            };
            leave.armed = false;
            return match answer {
                Ok(Ok(grant)) => {
                    let Some(entry) = names.by_name(&grant.backend) else {
                        // A backend the leader has and this hub does not
                        // (yet, or cannot add): the slot goes back, and the
                        // request asks again without it, counted against
                        // its key, not charged again.
                        self.release(id, WireOutcome::Neutral, None);
                        tracing::warn!(backend = %grant.backend, "the leader granted a slot on a backend this hub does not know: asked again without it");
                        unknown.push(grant.backend);
                        continue;
                    };
                    let granted = Granted {
                        link: self.clone(),
                        id,
                    };
                    Ok(SlotGuard::granted(granted, entry.id, &grant))
                }
                Ok(Err(Failed::Refused(refusal))) => {
                    Err(super::wire::acquire_error(refusal, names))
                }
                Ok(Err(Failed::NoLeader(why))) => Err(AcquireError::Wait(WaitError::NoLeader(why))),
                Ok(Err(Failed::LeaderChanged)) => Err(AcquireError::Wait(WaitError::LeaderChanged)),
                Err(_) => Err(AcquireError::Wait(WaitError::ShuttingDown)),
            };
        }
    }

    /// This hub leads now: the slots its requests hold, granted by the
    /// leader before, count in its own scheduler until they are let go.
    fn adopt_held(&self, dispatcher: &Arc<Dispatcher>, names: &Backends) {
        let mut st = lock(&self.state);
        let State { held, adopted, .. } = &mut *st;
        for (id, h) in held.iter() {
            if adopted.contains_key(id) {
                continue;
            }
            let Some(entry) = names.by_name(&h.backend) else {
                continue;
            };
            if let Some(mut guard) = dispatcher.adopt(entry.id, &ModelName::new(&h.model), h.tokens)
            {
                guard.neutral();
                adopted.insert(*id, guard);
            }
        }
    }

    /// This hub follows again: its new leader counts what it holds (its
    /// `Hello` says), so its own scheduler lets them go.
    fn drop_adopted(&self) {
        let adopted: Vec<SlotGuard> = lock(&self.state).adopted.drain().map(|(_, g)| g).collect();
        drop(adopted);
    }

    /// Answers every waiting request the same way.
    fn fail_waiting(&self, failed: impl Fn() -> Failed) {
        let waiting: Vec<Waiting> = lock(&self.state).waiting.drain().map(|(_, w)| w).collect();
        for w in waiting {
            let _ = w.answer.send(Err(failed()));
        }
    }
}

/// Cancels a waiting request whose future is dropped.
struct Cancel<'a> {
    link: &'a Arc<Link>,
    id: u64,
    armed: bool,
}

impl Drop for Cancel<'_> {
    fn drop(&mut self) {
        if self.armed {
            let mut st = lock(&self.link.state);
            if st.waiting.remove(&self.id).is_some() {
                Link::send(&st, &ToLeader::Cancel { id: self.id });
            }
        }
    }
}

/// Keeps a link to whoever leads while this hub follows, until shutdown.
pub(crate) async fn run(
    link: Arc<Link>,
    cluster: Arc<Cluster>,
    secret: Arc<super::secret::Secret>,
    dispatcher: Arc<Dispatcher>,
    names: Arc<Backends>,
    shutdown: CancellationToken,
) {
    let mut role = cluster.watch();
    let mut backoff = Duration::from_millis(50);
    loop {
        let now = role.borrow_and_update().clone();
        if now.leads() {
            link.adopt_held(&dispatcher, &names);
        } else {
            link.drop_adopted();
        }
        let address = match now {
            Role::Follower { address, .. } => address,
            other => {
                link.went_down(&format!(
                    "no hub leads that this one knows of ({})",
                    match &other {
                        Role::Leaderless { reason } => reason.as_str(),
                        _ => other.as_str(),
                    }
                ));
                // This hub leads now: what waited here asks its own
                // scheduler, keeping its place.
                if other.leads() {
                    link.fail_waiting(|| Failed::LeaderChanged);
                }
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    _ = role.changed() => continue,
                    () = link.timeout_tick(cluster.config.grant_timeout) => continue,
                }
            }
        };
        let connected = tokio::select! {
            () = shutdown.cancelled() => break,
            _ = role.changed() => continue,
            r = link.connect(&cluster, &address, &secret, &names) => r,
        };
        match connected {
            Ok(()) => backoff = Duration::from_millis(50),
            Err(e) => {
                link.went_down(&format!("the link to the leader at {address}: {e}"));
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    _ = role.changed() => {}
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
        link.expire_if_down_too_long(cluster.config.grant_timeout);
    }
    link.fail_waiting(|| Failed::Refused(Refusal::ShuttingDown));
}

impl Link {
    fn went_down(&self, why: &str) {
        let mut st = lock(&self.state);
        st.out = None;
        match &mut st.down {
            Some((_, reason)) => *reason = why.to_string(),
            None => st.down = Some((Instant::now(), why.to_string())),
        }
    }

    /// Waits until the link has been down for `timeout`, then answers the
    /// requests still waiting.
    async fn timeout_tick(&self, timeout: Duration) {
        let since = lock(&self.state).down.as_ref().map(|(s, _)| *s);
        match since {
            Some(_) if lock(&self.state).waiting.is_empty() => {
                // Nothing waits to be answered: a new request that comes
                // while the link is down is refused at once, or asked
                // again at the next role change.
                tokio::time::sleep(timeout).await;
            }
            Some(since) => {
                tokio::time::sleep_until(since + timeout).await;
                self.expire_if_down_too_long(timeout);
            }
            None => std::future::pending::<()>().await,
        }
    }

    fn expire_if_down_too_long(&self, timeout: Duration) {
        let why = {
            let st = lock(&self.state);
            match &st.down {
                Some((since, why)) if since.elapsed() >= timeout && !st.waiting.is_empty() => {
                    why.clone()
                }
                _ => return,
            }
        };
        tracing::warn!(reason = %why, "no leader answered within cluster.grant_timeout: the waiting requests are answered 503");
        self.fail_waiting(|| Failed::NoLeader(why.clone()));
    }

    /// One link to the leader at `address`, until it ends.
    async fn connect(
        self: &Arc<Self>,
        cluster: &Cluster,
        address: &str,
        secret: &super::secret::Secret,
        names: &Backends,
    ) -> Result<(), LinkError> {
        let secret = secret
            .get()
            .await
            .map_err(|e| LinkError::Broken(format!("the cluster's secret: {e}")))?;
        let (tx, rx) = mpsc::unbounded_channel();
        let (mut answer, mut driver) = super::connect::post(address, &secret, ChannelBody::new(rx))
            .await
            .map_err(LinkError::Broken)?;
        // Hello first, then every request still waiting, in the order asked.
        {
            let mut st = lock(&self.state);
            // What it holds of earlier leaders' grants, and what it granted
            // itself while it led.
            let mut held: Vec<Held> = st.held.values().cloned().collect();
            for (id, (l, told)) in st.local.iter_mut() {
                held.push(Held {
                    id: *id,
                    backend: names.name_of(l.backend),
                    model: l.model.as_str().to_string(),
                    tokens: l.tokens,
                    key: None,
                });
                *told = true;
            }
            let _ = tx.send(line(&ToLeader::Hello {
                hub: cluster.hub.clone(),
                held,
            }));
            let mut waiting: Vec<&Waiting> = st.waiting.values().collect();
            waiting.sort_by_key(|w| w.asked);
            for w in waiting {
                let mut again = w.acquire.clone();
                // Its key was checked by the leader it asked first.
                again.admitted = true;
                let waited = u64::try_from(w.asked.elapsed().as_millis()).unwrap_or(u64::MAX);
                again.waited_ms = again.waited_ms.saturating_add(waited);
                again.deadline_ms = again.deadline_ms.map(|d| d.saturating_sub(waited));
                let _ = tx.send(line(&ToLeader::Acquire(Box::new(again))));
            }
            st.out = Some(tx);
        }
        let mut lines = Lines::new(answer.body_mut());
        let result = loop {
            let next = tokio::select! {
                next = lines.next::<ToFollower>() => next,
                () = &mut driver => Err(LinkError::Ended),
            };
            match next {
                Ok(ToFollower::Welcome { leader, epoch }) => {
                    tracing::info!(%leader, epoch, "linked to the cluster's leader");
                    lock(&self.state).down = None;
                }
                Ok(ToFollower::Grant(grant)) => {
                    let waiting = lock(&self.state).waiting.remove(&grant.id);
                    let id = grant.id;
                    match waiting {
                        Some(w) => {
                            // Held from here on: a new link's `Hello` says
                            // so even before the request takes it up.
                            let held = Held {
                                id,
                                backend: grant.backend.clone(),
                                model: grant.model.clone(),
                                tokens: grant.tokens,
                                key: w.acquire.key.clone(),
                            };
                            lock(&self.state).held.insert(id, held);
                            if w.answer.send(Ok(grant)).is_err() {
                                self.release(id, WireOutcome::Neutral, None);
                            }
                        }
                        // Cancelled on the way: given straight back.
                        None => self.release(id, WireOutcome::Neutral, None),
                    }
                }
                Ok(ToFollower::Fleet { backends }) => {
                    self.fleet.send_replace(Some(backends));
                }
                Ok(ToFollower::Refused { id, refusal }) => {
                    let refused = match refusal {
                        // The leader stops: its next one is asked.
                        Refusal::ShuttingDown => Failed::LeaderChanged,
                        other => Failed::Refused(other),
                    };
                    if let Some(w) = lock(&self.state).waiting.remove(&id) {
                        let _ = w.answer.send(Err(refused));
                    }
                }
                Err(e) => break e,
            }
        };
        Err(result)
    }
}
