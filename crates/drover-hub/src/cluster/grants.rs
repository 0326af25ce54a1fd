//! The leader's side of the links: each follower's `POST /cluster/link`
//! is a session that turns its messages into the scheduler's events. An
//! `Acquire` waits for a slot as any local request does (same queue, same
//! priority and fairness, same single-flight loads); its grant is a
//! [`SlotGuard`] the session keeps until the follower's `Release`.
//!
//! A link that ends keeps its follower's slots for one lease (its requests
//! may still be running on the backends) and gives them up then, unless the
//! follower links again first: its `Hello` lists what it still holds, and
//! what it does not list is freed at once. A new leader counts, from each
//! `Hello`, the slots an earlier leader granted ([`Dispatcher::adopt`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use drover_core::ModelName;
use drover_core::sync::lock;
use drover_proto::cluster::link::{
    Acquire, Grant, Held, Outcome as WireOutcome, Refusal, ToFollower, ToLeader, VERSION,
    VERSION_HEADER,
};
use futures_util::StreamExt;
use futures_util::future::{AbortHandle, Abortable, Aborted};
use futures_util::stream::FuturesUnordered;
use http::{HeaderMap, StatusCode, header};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::Role;
use super::lines::{ChannelBody, Lines, LinkError, line};
use crate::dispatcher::{AcquireError, SlotGuard};
use crate::error::ApiError;
use crate::forward::ForwardError;
use crate::hub::HubState;
use crate::limits::Permit;

/// A follower's slots by its own number for each.
type Slots = HashMap<u64, SlotGuard>;

/// Slots of followers whose link ended, kept until their lease passes.
#[derive(Default)]
pub struct Kept {
    by_hub: Mutex<HashMap<String, (Instant, Slots)>>,
}

impl Kept {
    fn keep(&self, hub: &str, until: Instant, grants: HashMap<u64, SlotGuard>) {
        if grants.is_empty() {
            return;
        }
        let mut by_hub = lock(&self.by_hub);
        let entry = by_hub
            .entry(hub.to_string())
            .or_insert_with(|| (until, HashMap::new()));
        entry.0 = until;
        entry.1.extend(grants);
    }

    fn take(&self, hub: &str) -> HashMap<u64, SlotGuard> {
        lock(&self.by_hub)
            .remove(hub)
            .map(|(_, g)| g)
            .unwrap_or_default()
    }

    /// Gives up the slots kept past their time; dropped outside the lock.
    pub fn expire(&self, now: Instant) {
        let gone: Vec<HashMap<u64, SlotGuard>> = {
            let mut by_hub = lock(&self.by_hub);
            let due: Vec<String> = by_hub
                .iter()
                .filter(|(_, (until, _))| *until <= now)
                .map(|(hub, _)| hub.clone())
                .collect();
            due.iter()
                .filter_map(|h| by_hub.remove(h))
                .map(|(_, g)| g)
                .collect()
        };
        for grants in &gone {
            if !grants.is_empty() {
                tracing::warn!(
                    slots = grants.len(),
                    "a follower's link ended a lease ago: its slots are free"
                );
            }
        }
        drop(gone);
    }
}

#[utoipa::path(post, path = "/cluster/link", tag = "admin", params(("x-drover-cluster-secret" = String, Header, description = "The cluster's secret (kept in the shared store)")), request_body(content = String, content_type = "text/plain", description = "A follower's messages, one JSON object a line, for as long as the link lasts"), responses((status = 200, description = "The leader's messages, one JSON object a line", content_type = "application/x-ndjson"), (status = 401, description = "No cluster secret, or not this cluster's", body = drover_proto::openai::ErrorBody), (status = 404, description = "This hub keeps no store shared with other hubs: it has no cluster", body = drover_proto::openai::ErrorBody), (status = 409, description = "The follower speaks another version of the link", body = drover_proto::openai::ErrorBody), (status = 503, description = "This hub does not lead, or its store does not answer", body = drover_proto::openai::ErrorBody)))]
pub async fn link(State(hub): State<Arc<HubState>>, headers: HeaderMap, body: Body) -> Response {
    match open(&hub, &headers) {
        Ok(epoch) => {
            let (tx, rx) = mpsc::unbounded_channel();
            let _ = tx.send(line(&ToFollower::Welcome {
                leader: hub.cluster.hub.clone(),
                epoch,
            }));
            hub.tasks
                .spawn(session(hub.clone(), Lines::new(body), tx, epoch));
            (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/x-ndjson")],
                Body::new(ChannelBody::new(rx)),
            )
                .into_response()
        }
        Err(e) => e.into_response(),
    }
}

/// Whether a link may open here: the caller knows the cluster's secret,
/// and this hub leads (the epoch it leads in).
fn open(hub: &HubState, headers: &HeaderMap) -> Result<i64, ApiError> {
    if hub.cluster.store.is_none() {
        return Err(ApiError::NotFound {
            message: "this hub keeps no store shared with other hubs: it has no cluster to link to"
                .into(),
        });
    }
    if hub.cluster.secret.known().is_none() {
        return Err(not_leader(
            "this hub has not read the cluster's secret from its store yet",
        ));
    }
    if !hub.cluster.secret.shown_in(headers) {
        return Err(ApiError::Unauthorized(
            "no cluster secret, or not this cluster's: only the cluster's hubs link to its leader"
                .into(),
        ));
    }
    let version = headers
        .get(VERSION_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("1");
    if version != VERSION.to_string() {
        return Err(ApiError::Conflict(format!(
            "the leader ({}, drover {}) speaks version {VERSION} of the link, this follower version {}: \
             run one drover version on every hub of a cluster",
            hub.cluster.hub,
            crate::VERSION,
            crate::error::echo(version)
        )));
    }
    match hub.cluster.role() {
        Role::Leader { epoch, .. } => Ok(epoch),
        Role::Follower { leader, .. } => Err(not_leader(&format!("{leader} leads, not this hub"))),
        other => Err(not_leader(&format!("this hub is {}", other.as_str()))),
    }
}

fn not_leader(reason: &str) -> ApiError {
    crate::forward::ForwardError::NoLeader {
        reason: reason.to_string(),
    }
    .into()
}

/// One follower's link, until it ends, this hub stops leading in `epoch`,
/// or stops.
async fn session(
    hub: Arc<HubState>,
    mut lines: Lines<Body>,
    tx: mpsc::UnboundedSender<Bytes>,
    epoch: i64,
) {
    let hello = tokio::select! {
        hello = lines.next::<ToLeader>() => hello,
        () = hub.shutdown.cancelled() => return,
    };
    let follower = match hello {
        Ok(ToLeader::Hello { hub: id, held }) => {
            let grants = take_over(&hub, &id, held);
            Some((id, grants))
        }
        Ok(_) | Err(_) => None,
    };
    let Some((follower, mut grants)) = follower else {
        return;
    };
    hub.cluster.said_hello(&follower);
    let mut role = hub.cluster.watch();
    // Each acquire waits here, polled by this session, not as a task of
    // its own: a grant is the leader's whole cost of a follower's request.
    let mut pending = FuturesUnordered::new();
    let mut waiting: HashMap<u64, AbortHandle> = HashMap::new();
    // Answers gather here while more is ready at once and go out as one
    // write: under load one write carries many grants.
    let mut out = Batch::default();
    // The follower learns this hub's backends now, and again when they
    // change (looked at every second).
    let mut told = hub.registry.generation();
    out.push(&fleet(&hub));
    let mut look = tokio::time::interval(std::time::Duration::from_secs(1));
    look.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let ended: LinkError = loop {
        // Under a steady stream of lines the last branch below may not
        // come for a while: what gathered goes out after a few turns.
        if out.overdue() && !out.send(&tx) {
            break LinkError::Ended;
        }
        tokio::select! {
            biased;
            () = hub.shutdown.cancelled() => break LinkError::Broken("this hub stops".into()),
            _ = look.tick() => {
                let now = hub.registry.generation();
                if now != told {
                    told = now;
                    out.push(&fleet(&hub));
                }
            }
            changed = role.changed() => {
                let still = changed.is_ok()
                    && matches!(*role.borrow(), Role::Leader { epoch: e, .. } if e == epoch);
                if !still {
                    break LinkError::Broken("this hub stopped leading".into());
                }
            }
            Some((id, got)) = pending.next(), if !pending.is_empty() => {
                waiting.remove(&id);
                // Cancelled: its waiter left the dispatcher with it.
                let got: Result<Result<SlotGuard, AcquireError>, Aborted> = got;
                let Ok(got) = got else { continue };
                let answer = match got {
                    Ok(guard) => {
                        let grant = ToFollower::Grant(Grant {
                            id,
                            backend: hub.registry.name_of(guard.backend),
                            model: guard.model.as_str().to_string(),
                            epoch,
                            affinity_hit: guard.affinity_hit,
                            last_resort: guard.last_resort,
                            running: guard.running,
                            seq: guard.seq,
                            tokens: guard.tokens(),
                        });
                        grants.insert(id, guard);
                        grant
                    }
                    Err(e) => ToFollower::Refused { id, refusal: super::wire::refusal(&e, &hub.registry) },
                };
                out.push(&answer);
            }
            message = lines.next::<ToLeader>() => match message {
                Ok(ToLeader::Acquire(a)) => {
                    let id = a.id;
                    let permit = match admit(&hub, &a) {
                        Ok(permit) => permit,
                        Err(refusal) => {
                            out.push(&ToFollower::Refused { id, refusal });
                            continue;
                        }
                    };
                    let (abort, registration) = AbortHandle::new_pair();
                    let wait = Abortable::new(slot(hub.clone(), a, permit), registration);
                    pending.push(tagged(id, wait));
                    waiting.insert(id, abort);
                }
                Ok(ToLeader::Cancel { id }) => {
                    if let Some(wait) = waiting.remove(&id) {
                        wait.abort();
                    }
                }
                Ok(ToLeader::Release { id, outcome, charge }) => {
                    if let Some(mut guard) = grants.remove(&id) {
                        ended_as(&mut guard, outcome);
                    }
                    if let Some(c) = charge {
                        hub.forwarder.shared().limiter.charge(&c.key, c.tokens_per_minute, c.tokens);
                    }
                }
                Ok(ToLeader::Prefill { backend, model, tokens, took_us }) => {
                    if let Some(entry) = hub.registry.by_name(&backend) {
                        let took = std::time::Duration::from_micros(took_us);
                        hub.dispatcher.prefill_seen(entry.id, &ModelName::new(&model), tokens, took);
                    }
                }
                Ok(ToLeader::Hello { .. }) => {}
                Err(e) => break e,
            },
            // Last: nothing else came while the other tasks ran once.
            () = tokio::task::yield_now(), if !out.is_empty() => {
                if !out.send(&tx) {
                    break LinkError::Ended;
                }
            }
        }
    };
    // What still waits leaves the dispatcher as these are dropped.
    drop(pending);
    tracing::info!(%follower, reason = %ended, slots = grants.len(), "a follower's link ended");
    let until = Instant::now() + hub.cluster.ttl() + hub.config.upstream.cancel_grace;
    hub.cluster.kept.keep(&follower, until, grants);
}

/// Every backend this hub has, for a follower.
fn fleet(hub: &HubState) -> ToFollower {
    ToFollower::Fleet {
        backends: hub.registry.all().iter().map(|e| e.spec.clone()).collect(),
    }
}

/// Lines for a follower, gathered until the session has nothing else to do
/// at once, or [`Batch::overdue`].
#[derive(Default)]
struct Batch {
    lines: bytes::BytesMut,
    /// Turns of the session since the first line gathered.
    turns: u32,
}

impl Batch {
    /// A batch goes out by these many turns of the session, or bytes.
    const MOST_TURNS: u32 = 32;
    const MOST_BYTES: usize = 64 * 1024;

    fn push(&mut self, message: &ToFollower) {
        use bytes::BufMut;
        let mut w = (&mut self.lines).writer();
        if serde_json::to_writer(&mut w, message).is_ok() {
            self.lines.put_u8(b'\n');
        }
    }

    fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    /// Counts a turn; whether what gathered should go now.
    fn overdue(&mut self) -> bool {
        if self.lines.is_empty() {
            return false;
        }
        self.turns += 1;
        self.turns > Self::MOST_TURNS || self.lines.len() >= Self::MOST_BYTES
    }

    /// Sends what gathered; false where the link has ended.
    fn send(&mut self, tx: &mpsc::UnboundedSender<Bytes>) -> bool {
        self.turns = 0;
        tx.send(self.lines.split().freeze()).is_ok()
    }
}

/// A slot for a follower's `Acquire`, once this new leader has settled,
/// with its key's permit held by the grant.
async fn slot(
    hub: Arc<HubState>,
    a: Box<Acquire>,
    permit: Option<Permit>,
) -> Result<SlotGuard, AcquireError> {
    hub.cluster.settled().await;
    let now = hub.dispatcher.now();
    let request = super::wire::request(&a, hub.forwarder.next_id(), now, &hub.registry);
    let mut guard = hub.dispatcher.acquire(request, a.retry).await?;
    guard.hold(permit);
    Ok(guard)
}

/// `wait`'s output with the follower's number for it.
async fn tagged<F: std::future::Future>(id: u64, wait: F) -> (u64, F::Output) {
    (id, wait.await)
}

/// The slots a follower says it holds on a new link: those this leader kept
/// from its last link, and those an earlier leader granted (counted now);
/// what it kept and the follower no longer holds is freed.
fn take_over(hub: &Arc<HubState>, follower: &str, held: Vec<Held>) -> HashMap<u64, SlotGuard> {
    let mut kept = hub.cluster.kept.take(follower);
    let mut grants = HashMap::new();
    let mut lost = 0;
    for h in held {
        if let Some(guard) = kept.remove(&h.id) {
            grants.insert(h.id, guard);
            continue;
        }
        let adopted = hub.registry.by_name(&h.backend).and_then(|entry| {
            hub.dispatcher
                .adopt(entry.id, &ModelName::new(&h.model), h.tokens)
        });
        match adopted {
            Some(mut guard) => {
                // Its request is running: its end will say how it went.
                guard.neutral();
                // It counts against its key's requests at once here too.
                if let Some(k) = &h.key {
                    let limiter = &hub.forwarder.shared().limiter;
                    guard.hold(limiter.count(&super::wire::holder(k), Instant::now()));
                }
                grants.insert(h.id, guard);
            }
            None => lost += 1,
        }
    }
    if lost > 0 {
        tracing::warn!(%follower, slots = lost, "a follower holds slots on backends or models this leader does not know: not counted");
    }
    for guard in kept.values_mut() {
        guard.neutral();
    }
    grants
}

/// A follower's request past its key's limits, here where every hub's
/// requests are counted: its count, or the refusal to send back at once. A
/// retry, or a request its own hub admitted while it led, is counted and
/// not charged again.
fn admit(hub: &HubState, a: &Acquire) -> Result<Option<Permit>, Refusal> {
    let Some(key) = &a.key else {
        return Ok(None);
    };
    let limiter = &hub.forwarder.shared().limiter;
    let holder = super::wire::holder(key);
    if a.retry || a.admitted {
        return Ok(limiter.count(&holder, Instant::now()));
    }
    limiter
        .admit_counted(&holder, a.prompt_tokens, Instant::now())
        .map_err(|(limit, e)| {
            let (message, retry_after) = match e {
                ForwardError::KeyLimited {
                    message,
                    retry_after,
                } => (message, retry_after),
                other => (other.to_string(), std::time::Duration::from_secs(1)),
            };
            Refusal::KeyLimited {
                limit: limit.as_str().to_string(),
                message,
                retry_after_ms: u64::try_from(retry_after.as_millis()).unwrap_or(u64::MAX),
            }
        })
}

/// Sets a released slot's outcome as the follower said; an abandoned one
/// lingers for the cancel grace, as a local one does.
pub(super) fn ended_as(guard: &mut SlotGuard, outcome: WireOutcome) {
    match outcome {
        WireOutcome::Success { service_ms } => {
            guard.succeeded_in(std::time::Duration::from_millis(service_ms));
        }
        WireOutcome::Failure => guard.fail(),
        WireOutcome::Overloaded => guard.overloaded(),
        WireOutcome::Neutral => guard.neutral(),
        WireOutcome::Abandoned => guard.abandoned(),
    }
}
