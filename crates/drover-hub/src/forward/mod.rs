//! The forwarding service: wait for a slot, send the request to the chosen
//! backend, and, while nothing has reached the client yet, try again on
//! another backend. The HTTP handler calls it with a [`Job`]; so will the
//! durable-job runner, which has no HTTP client on the other end.
//!
//! - [`attempt`]: one attempt against one backend, up to its first byte.
//! - [`pass_through`]: the answer's body on its way to the client, which
//!   holds the slot until the last byte.
//! - [`anthropic`]: a Messages stream that lacks its `message_start`
//!   (llama-server's, now and then) gets one.
//!
//! The retry boundary is the first byte: until the backend's first body
//! frame is in hand nothing has been sent, so any failure may be retried.
//! After it, a failure ends an SSE stream with an error event (never a
//! silent truncation) and aborts any other body.

mod anthropic;
mod attempt;
mod pass_through;
mod rewrite;

use attempt::AttemptFailure;
pub use attempt::REQUEST_ID_HEADER;
pub use pass_through::KeyRef;

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use drover_scheduler::{Api, Reject};
use http::{HeaderValue, Response};
use tokio::time::Instant;

use crate::dispatcher::{AcquireError, WaitError};
use crate::error::{ApiError, ErrorFormat};
use crate::hub::HubState;
use crate::metrics::{BackendLabels, ModelLabels};

/// One request to forward, with everything every attempt needs.
pub struct Job {
    /// What the scheduler knows of it; a retry adds the failed backend to
    /// its exclusions.
    pub request: drover_scheduler::Request,
    /// The model's public name.
    pub model: String,
    /// The model as the client named it (an alias's id, a GGUF path): the
    /// body is rewritten where the chosen backend knows it otherwise.
    pub asked: String,
    pub path_and_query: String,
    /// Sent upstream byte for byte, on every attempt.
    pub body: Bytes,
    pub accept: Option<HeaderValue>,
    pub request_id: HeaderValue,
    /// The caller's name, for the request log.
    pub caller: String,
    pub arrived: Instant,
    /// The shape of errors on the request's path, before and after the
    /// first byte.
    pub errors: ErrorFormat,
    /// The client key it came with: its answer's output tokens are counted
    /// for it.
    pub key: Option<KeyRef>,
    /// The key's concurrency permit: each attempt's slot holds it, so the
    /// request counts against its key until the server has let go of it.
    pub permit: Option<crate::limits::Permit>,
}

/// Which backend answered, as a response extension: the handler reads it
/// for its metrics instead of reading back a header it wrote for clients.
#[derive(Clone, Debug)]
pub struct ServedBy(pub String);

/// Forwards `job`: the backend's answer (its status may be an error the
/// backend chose), or why no backend answered; and how long the request
/// waited in the hub's queue over all its attempts.
pub async fn forward(
    hub: &Arc<HubState>,
    job: Job,
) -> (Result<Response<Body>, ApiError>, Duration) {
    let mut queued = Duration::ZERO;
    let result = attempts(hub, job, &mut queued).await;
    (result, queued)
}

async fn attempts(
    hub: &Arc<HubState>,
    mut job: Job,
    queued: &mut Duration,
) -> Result<Response<Body>, ApiError> {
    let max_retries = hub.config.upstream.max_retries;
    let mut last_failure: Option<String> = None;
    let mut attempt = 0;
    // Tries again after a server ran out of room: they need no other
    // backend, only load to drop, which the lowered limit sees to.
    let mut overloads = 0;
    loop {
        let waiting_since = Instant::now();
        let acquired = hub
            .dispatcher
            .acquire(job.request.clone(), attempt > 0 || overloads > 0)
            .await;
        *queued += waiting_since.elapsed();
        let mut guard = acquired.map_err(|e| refusal(hub, e, &job, last_failure.take()))?;
        guard.hold(job.permit.clone());
        let queue_wait = *queued;
        hub.metrics
            .queue_wait
            .get_or_create(&ModelLabels {
                model: job.model.clone(),
            })
            .observe(waiting_since.elapsed().as_secs_f64());
        let backend = guard.backend;
        // The last attempt passes a backend's 5xx through as it came: the
        // retries are spent, or no other backend could take the request.
        let last_attempt = attempt == max_retries || guard.last_resort;
        // Boxed: a request spends most of its life waiting in `acquire`, and
        // an inline attempt would make every waiting request's state as
        // large as the forwarding machinery it is not using yet.
        let failure = match Box::pin(attempt::run(hub, guard, &job, last_attempt, queue_wait)).await
        {
            Ok(response) => {
                if attempt > 0 {
                    let name = hub.registry.name_of(backend);
                    hub.traffic
                        .failed_over(crate::traffic::unix_ms(), &name, &job.model);
                }
                return Ok(response);
            }
            Err(failure) => failure,
        };
        let name = hub.registry.name_of(backend);
        let failure = match failure {
            AttemptFailure::TooLarge(message) => {
                return Err(ApiError::ContextLengthExceeded { message });
            }
            AttemptFailure::Overloaded(reason) if overloads < MAX_OVERLOADS => {
                tracing::info!(request_id = ?job.request_id, backend = %name, reason = %reason, "the server ran out of room; the request waits for load to drop");
                count_retry(hub, name, &job.model);
                last_failure = Some(reason);
                overloads += 1;
                continue;
            }
            AttemptFailure::Overloaded(reason) | AttemptFailure::Failed(reason) => reason,
        };
        tracing::warn!(request_id = ?job.request_id, backend = %name, attempt, reason = %failure, "attempt failed before the first byte");
        if last_attempt {
            let message = if attempt == 0 {
                failure
            } else {
                format!(
                    "every attempt failed ({} in all); the last: {failure}",
                    attempt + 1
                )
            };
            return Err(ApiError::Upstream { message });
        }
        count_retry(hub, name, &job.model);
        job.request.exclude.push(backend);
        last_failure = Some(failure);
        attempt += 1;
    }
}

/// A request going round again after an attempt on `backend`, in the
/// traffic and the metrics.
fn count_retry(hub: &HubState, backend: String, model: &str) {
    hub.traffic
        .retried(crate::traffic::unix_ms(), &backend, model);
    hub.metrics
        .retries
        .get_or_create(&BackendLabels { backend })
        .inc();
}

/// Times a request goes round again because a server ran out of room for
/// it. Each lowers that model's concurrency there, which reaches one within
/// as many: past them, something else is wrong.
const MAX_OVERLOADS: u32 = 16;

/// Why a request got no slot, as the client should hear it.
fn refusal(hub: &HubState, e: AcquireError, job: &Job, last_failure: Option<String>) -> ApiError {
    let model = job.model.clone();
    match (e, last_failure) {
        // After a failed attempt, say what went wrong upstream rather than
        // what the retry ran into.
        (
            AcquireError::Rejected(Reject::NoHealthyBackend | Reject::Exhausted)
            | AcquireError::Wait(WaitError::Unroutable),
            Some(reason),
        ) => ApiError::Upstream {
            message: format!("the backend failed and no other can take the request: {reason}"),
        },
        // Only a retry can have tried every backend, and a retry has a failure.
        (AcquireError::Rejected(Reject::Exhausted), None) => ApiError::Upstream {
            message: "every backend that serves the model was tried".into(),
        },
        (AcquireError::Rejected(Reject::ModelNotFound), _) => {
            let backends = hub.unreachable_backends();
            if backends.is_empty() {
                hub.model_not_found(model)
            } else {
                hub.unreachable(model, backends)
            }
        }
        (AcquireError::Rejected(Reject::NoHealthyBackend), None) => hub.no_healthy_backend(model),
        (AcquireError::Rejected(Reject::ApiNotServed), _) => ApiError::ApiNotServed {
            others: hub.backends_listing(&model),
            path: match job.request.api {
                Api::Responses => "/v1/responses",
                Api::Messages => "/v1/messages",
                Api::OpenAi => "the OpenAI API",
            },
            model,
        },
        (AcquireError::Rejected(Reject::QueueFull { retry_after }), _) => {
            ApiError::QueueFull { retry_after }
        }
        (AcquireError::Wait(WaitError::Expired), _) => ApiError::QueueTimeout {
            model,
            waited: job.arrived.elapsed(),
        },
        (
            AcquireError::Wait(WaitError::StillLoading {
                backend,
                retry_after,
            }),
            _,
        ) => ApiError::ModelLoading {
            progress: hub.load_progress(backend, &model),
            backend: hub.registry.name_of(backend),
            model,
            retry_after,
        },
        (AcquireError::Wait(WaitError::LoadFailed { backend, message }), _) => {
            ApiError::LoadFailed {
                model,
                backend: hub.registry.name_of(backend),
                message,
                retry_after: None,
            }
        }
        (
            AcquireError::Rejected(Reject::LoadFailed {
                backend,
                message,
                retry_after,
            }),
            _,
        ) => ApiError::LoadFailed {
            model,
            backend: hub.registry.name_of(backend),
            message,
            retry_after: Some(retry_after),
        },
        (
            AcquireError::Rejected(Reject::NeverFits {
                size,
                needs,
                largest,
            }),
            _,
        ) => ApiError::NeverFits {
            model,
            size,
            needs,
            largest,
        },
        // It waited for a backend's first answer, and none lists the model.
        (AcquireError::Wait(WaitError::Unroutable), _)
            if !hub.dispatcher.inspect(|s| s.fleet().knows_model(&model)) =>
        {
            let backends = hub.unreachable_backends();
            if backends.is_empty() {
                hub.model_not_found(model)
            } else {
                hub.unreachable(model, backends)
            }
        }
        (AcquireError::Wait(WaitError::Unroutable), _) => ApiError::ModelGone { model },
        (AcquireError::Wait(WaitError::ShuttingDown), _) => ApiError::ShuttingDown,
    }
}

/// What the request log line says about a request that reached a backend.
#[derive(Debug, Clone)]
pub(crate) struct Served {
    pub request_id: HeaderValue,
    pub model: String,
    pub caller: String,
    pub backend: String,
    pub status: u16,
    pub queue_wait: Duration,
    pub ttfb: Duration,
    pub arrived: Instant,
}

impl Served {
    /// The one info line per request that reached a backend.
    fn log(&self, outcome: &str) {
        tracing::info!(
            target: "drover::request",
            request_id = %String::from_utf8_lossy(self.request_id.as_bytes()),
            model = %crate::error::echo(&self.model),
            client = %self.caller,
            backend = %self.backend,
            status = self.status,
            queue_ms = self.queue_wait.as_millis() as u64,
            ttfb_ms = self.ttfb.as_millis() as u64,
            total_ms = self.arrived.elapsed().as_millis() as u64,
            outcome,
            "request"
        );
    }
}
