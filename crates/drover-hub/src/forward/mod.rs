//! The forwarding service: wait for a slot, send the request to the chosen
//! backend, and, while nothing has reached the client yet, try again on
//! another backend. A [`Forwarder`] is a cheap handle on it, as
//! mini-redis's `Db` is: the HTTP edge calls it, and so will the
//! durable-job runner, which has no HTTP client on the other end.
//!
//! - [`request`]: a [`ForwardRequest`] from body bytes, the API and the
//!   [`Sender`], the same way for any caller.
//! - [`attempt`]: one attempt against one backend, up to its first byte.
//! - [`pass_through`]: the answer's body on its way to the caller, which
//!   holds the slot until the last byte.
//! - [`anthropic`]: a Messages stream that lacks its `message_start`
//!   (llama-server's, now and then) gets one.
//! - [`error`]: why no answer came, as the domain says it
//!   ([`crate::error`] maps it to HTTP).
//! - [`refusal`]: why a request got no slot, with what the fleet says.
//!
//! The retry boundary is the first byte: until the backend's first body
//! frame is in hand nothing has been sent, so any failure may be retried.
//! After it, a failure ends an SSE stream with an error event (never a
//! silent truncation) and aborts any other body.
//!
//! Every event of a request's life is told to the one [`Observer`].

mod anthropic;
mod attempt;
mod error;
mod pass_through;
mod refusal;
mod request;
mod rewrite;

pub use crate::error::ErrorFormat;
pub use attempt::REQUEST_ID_HEADER;
pub use drover_scheduler::Api;
pub use error::{Failure, FailureKind, ForwardError};
pub use pass_through::{AnswerBody, KeyRef};
pub use request::{ForwardRequest, RequestIds, Sender, new_request_id};

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, StatusCode};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::aliases::Aliases;
use crate::caller::Clients;
use crate::config::UpstreamConfig;
use crate::continuations::ResponseOwners;
use crate::dispatcher::Dispatcher;
use crate::limits::Limiter;
use crate::observe::Observer;
use crate::registry::Backends;

/// A handle on the forwarding service; clones share it.
#[derive(Clone)]
pub struct Forwarder(Arc<Shared>);

/// What forwarding reads, and nothing else of the hub.
pub struct Shared {
    pub upstream: UpstreamConfig,
    /// How long a request may wait for a slot unless its sender says.
    pub queue_timeout: Duration,
    /// When a backend that never answered is asked again.
    pub probe_interval: Duration,
    pub dispatcher: Arc<Dispatcher>,
    pub registry: Arc<Backends>,
    pub observer: Arc<Observer>,
    /// `[[models]]`: public names for the servers' own ids.
    pub aliases: Arc<Aliases>,
    /// Which backend stored each Responses API response.
    pub owners: Arc<ResponseOwners>,
    pub limiter: Arc<Limiter>,
    pub clients: Arc<Clients>,
    /// Cancelled when the hub's shutdown grace is over: running streams end
    /// with an error event.
    pub streams_stop: CancellationToken,
    pub ids: RequestIds,
    /// This hub's place in its cluster: where it leads (or is alone) its
    /// own dispatcher grants slots; where it follows, the leader does,
    /// through `link`.
    pub cluster: Arc<crate::cluster::Cluster>,
    pub link: Arc<crate::cluster::link::Link>,
}

/// A backend's answer, its first byte in hand: its status and headers
/// (less hop-by-hop ones, with drover's own) and its body, which holds the
/// request's slot until its last byte.
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: AnswerBody,
}

/// What forwarding came to, and how long the request waited in the hub's
/// queue over all its attempts.
pub struct Forwarded {
    pub result: Result<Answer, ForwardError>,
    pub queued: Duration,
    /// The backends it went to, in order: the last one answered, if any
    /// did.
    pub tried: Vec<drover_core::BackendId>,
}

/// Times a request goes round again because a server ran out of room for
/// it. Each lowers that model's concurrency there, which reaches one within
/// as many: past them, something else is wrong.
const MAX_OVERLOADS: u32 = 16;

impl Forwarder {
    pub fn new(shared: Shared) -> Self {
        Forwarder(Arc::new(shared))
    }

    /// A request id for the scheduler, from the one sequence every
    /// request's comes from (a task's wait for a worker takes one too).
    pub fn next_id(&self) -> drover_core::RequestId {
        self.0.ids.next()
    }

    /// Forwards `request`: the backend's answer (its status may be an
    /// error the backend chose), or why no backend answered. Either way
    /// the observer has heard of it.
    pub async fn forward(&self, mut request: ForwardRequest) -> Forwarded {
        let mut queued = Duration::ZERO;
        let mut tried = Vec::new();
        let result = self.attempts(&mut request, &mut queued, &mut tried).await;
        if let Err(e) = &result {
            let r = &request;
            self.refused(e, &r.request_id, Some(&r.model), &r.caller, r.errors);
        }
        Forwarded {
            result,
            queued,
            tried,
        }
    }

    async fn attempts(
        &self,
        job: &mut ForwardRequest,
        queued: &mut Duration,
        tried: &mut Vec<drover_core::BackendId>,
    ) -> Result<Answer, ForwardError> {
        let max_retries = self.0.upstream.max_retries;
        let mut last_failure: Option<Failure> = None;
        let mut attempt = 0;
        // Tries again after a server ran out of room: they need no other
        // backend, only load to drop, which the lowered limit sees to.
        let mut overloads = 0;
        loop {
            let waiting_since = Instant::now();
            let acquired = self
                .acquire(
                    &job.request,
                    attempt > 0 || overloads > 0,
                    job.holder.as_ref(),
                    &mut job.permit,
                )
                .await;
            let waited = waiting_since.elapsed();
            *queued += waited;
            let mut guard = acquired.map_err(|e| self.refusal(e, job, last_failure.take()))?;
            guard.hold(job.permit.clone());
            if std::mem::take(&mut job.admission_untold)
                && let Some(key) = &job.key
            {
                self.0
                    .observer
                    .key_admitted(&key.name, job.request.prompt_tokens);
            }
            self.0.observer.waited(&job.model, waited);
            let backend = guard.backend;
            tried.push(backend);
            let entry = self.0.registry.get(backend);
            let pair = match &entry {
                Some(e) => self.0.observer.pair(&e.name, &job.model),
                None => self
                    .0
                    .observer
                    .pair(&self.0.registry.name_of(backend), &job.model),
            };
            // The last attempt passes a backend's 5xx through as it came: the
            // retries are spent, or no other backend could take the request.
            let last_attempt = attempt == max_retries || guard.last_resort;
            // Boxed: a request spends most of its life waiting in `acquire`,
            // and an inline attempt would make every waiting request's state
            // as large as the forwarding machinery it is not using yet.
            let run = attempt::run(self, entry, guard, job, &pair, last_attempt, *queued);
            let failure = match Box::pin(run).await {
                Ok(answer) => {
                    if attempt > 0 {
                        self.0.observer.failed_over(&pair);
                    }
                    return Ok(answer);
                }
                Err(failure) => failure,
            };
            match failure.kind {
                FailureKind::TooLarge => {
                    return Err(ForwardError::ContextLengthExceeded {
                        message: failure.reason,
                    });
                }
                FailureKind::Overloaded if overloads < MAX_OVERLOADS => {
                    tracing::info!(request_id = ?job.request_id, backend = %pair.backend, reason = %failure, "the server ran out of room; the request waits for load to drop");
                    self.0.observer.retried(&pair);
                    last_failure = Some(failure);
                    overloads += 1;
                    continue;
                }
                _ => {}
            }
            tracing::warn!(request_id = ?job.request_id, backend = %pair.backend, attempt, kind = failure.kind.as_str(), reason = %failure, "attempt failed before the first byte");
            if last_attempt {
                let message = if attempt == 0 {
                    failure.reason
                } else {
                    format!(
                        "every attempt failed ({} in all); the last: {}",
                        attempt + 1,
                        failure.reason
                    )
                };
                return Err(ForwardError::Upstream {
                    kind: failure.kind,
                    message,
                });
            }
            self.0.observer.retried(&pair);
            job.request.exclude.push(backend);
            last_failure = Some(failure);
            attempt += 1;
        }
    }

    pub(crate) fn shared(&self) -> &Shared {
        &self.0
    }

    /// A slot for `request`: from this hub's own scheduler where it leads
    /// (once a new leader has heard from its followers), else from the
    /// leader's. A request whose leader went away asks the next one,
    /// keeping its place; without any leader for `cluster.grant_timeout`
    /// it is refused.
    ///
    /// `holder` is the request's key where it has counted limits, and
    /// `permit` its count here: where the leader grants, the leader checks
    /// and counts the key (unless `permit` says this hub admitted it
    /// already); a request that came in while this hub followed and is
    /// granted here now is counted here, not checked again.
    pub(crate) async fn acquire(
        &self,
        request: &drover_scheduler::Request,
        retry: bool,
        holder: Option<&crate::keys::Holder>,
        permit: &mut Option<crate::limits::Permit>,
    ) -> Result<crate::dispatcher::SlotGuard, crate::dispatcher::AcquireError> {
        use crate::cluster::Role;
        use crate::dispatcher::{AcquireError, WaitError};
        let s = &self.0;
        let mut role = s.cluster.watch();
        // Without a leader, it waits this long in all, however often the
        // role changes meanwhile.
        let no_leader_until = tokio::time::Instant::now() + s.cluster.config.grant_timeout;
        let mut asked_before = false;
        loop {
            let now = role.borrow_and_update().clone();
            let asked = match now {
                Role::Alone | Role::Leader { .. } => {
                    if matches!(now, Role::Leader { .. }) {
                        s.cluster.settled().await;
                    }
                    if permit.is_none()
                        && let Some(h) = holder
                    {
                        *permit = s.limiter.count(h, tokio::time::Instant::now());
                    }
                    let mut guard = s.dispatcher.acquire(request.clone(), retry).await?;
                    // In a cluster, a next leader must learn of it should
                    // this hub step down while it runs.
                    if s.cluster.store.is_some() {
                        guard.track(&s.link);
                    }
                    return Ok(guard);
                }
                Role::Follower { .. } => {
                    let key = holder.map(crate::cluster::wire::key_use);
                    let asking = crate::cluster::link::Asking {
                        retry,
                        key,
                        admitted: permit.is_some() || asked_before,
                        grant_timeout: s.cluster.config.grant_timeout,
                    };
                    s.link
                        .acquire(request, asking, s.dispatcher.now(), &s.registry)
                        .await
                }
                Role::Leaderless { reason } => {
                    match tokio::time::timeout_at(no_leader_until, role.changed()).await {
                        Ok(Ok(())) => continue,
                        _ => Err(AcquireError::Wait(WaitError::NoLeader(reason))),
                    }
                }
            };
            match asked {
                Err(AcquireError::Wait(WaitError::LeaderChanged)) => {
                    // A leader had it: the next counts it, not charges it.
                    asked_before = true;
                    // Whoever leads next: wait for the role to say, briefly.
                    let _ =
                        tokio::time::timeout(std::time::Duration::from_millis(100), role.changed())
                            .await;
                }
                other => return other,
            }
        }
    }
}
