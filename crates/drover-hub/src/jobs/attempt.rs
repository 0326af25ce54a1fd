//! One attempt of one claimed job: the same [`Forwarder`] as an HTTP
//! request, with the job's key, priority and deadline as its sender, kept
//! off the backends that failed it before while another can serve it.
//!
//! [`Forwarder`]: crate::forward::Forwarder

use std::time::Duration;

use bytes::Bytes;
use drover_store::{Answer, Claimed};
use http::{HeaderValue, StatusCode, header};
use http_body_util::{BodyExt, Limited};
use tokio_util::sync::CancellationToken;

use crate::error::ApiError;
use crate::forward::{Forwarded, Sender};
use crate::hub::HubState;
use crate::jobs::submit::endpoint_api;

/// How an attempt ended.
pub(crate) enum Ended {
    /// An answer, stored whatever its status; whether to try again is the
    /// status's to say.
    Answered {
        answer: Answer,
        backends: Vec<String>,
        retry_after: Option<Duration>,
    },
    /// The job was cancelled while it ran.
    Cancelled { backends: Vec<String> },
    /// It may not run yet (its key is over a rate or at its concurrency,
    /// the hub's queue is full): back to the store until `after` has
    /// passed, the attempt not counted. Waiting is not failing.
    Wait { after: Duration },
    /// The hub is stopping: the job goes back to the queue as it was.
    Released,
}

/// How long a job may wait for its slot when it has no deadline: waiting
/// is not failing, and a job in the window waits its turn behind
/// interactive requests for as long as they keep coming (aging bounds
/// that), so this is only a backstop.
const NO_DEADLINE_WAIT: Duration = Duration::from_secs(7 * 24 * 3600);

pub(super) async fn run(
    hub: &HubState,
    claimed: &Claimed,
    cancel: &CancellationToken,
    now_ms: i64,
) -> Ended {
    let job = &claimed.job;
    let Some((api, errors)) = endpoint_api(&job.endpoint) else {
        return refused(
            ApiError::bad_request(
                format!("endpoint {:?} cannot be a job", job.endpoint),
                Some("endpoint"),
                "invalid_job",
            ),
            Vec::new(),
        );
    };
    let (holder, token) = match sender_of(hub, &job.key_id) {
        Ok(who) => who,
        Err(error) => return refused(error, Vec::new()),
    };
    let queue_timeout = match job.deadline {
        Some(deadline) => Duration::from_millis(u64::try_from(deadline - now_ms).unwrap_or(0))
            .max(Duration::from_millis(1)),
        None => NO_DEADLINE_WAIT,
    };
    let avoid: Vec<_> = job
        .failed_backends
        .iter()
        .filter_map(|name| hub.registry.by_name(name).map(|e| e.id))
        .collect();
    let body = Bytes::from(claimed.body.clone());
    let mut forwarded = None;
    // Kept off the backends that failed it, unless none other lists the
    // model: then anywhere, rather than not at all.
    for avoid in [avoid.clone(), Vec::new()] {
        let sender = Sender {
            holder: holder.clone(),
            token: token.clone(),
            priority: drover_core::Priority::new(job.priority).ok(),
            queue_timeout: Some(queue_timeout),
            request_id: HeaderValue::from_str(&job.id).ok(),
            accept: None,
            arrived: None,
        };
        let prepared = hub
            .forwarder
            .prepare(body.clone(), api, errors, job.endpoint.clone(), sender)
            .await;
        let mut request = match prepared {
            Ok(request) => request,
            Err(error) => {
                if let Some(after) = wait_for(&error) {
                    return Ended::Wait { after };
                }
                return refused(error.into(), Vec::new());
            }
        };
        let avoided = !avoid.is_empty();
        request.avoid(avoid);
        let result = tokio::select! {
            result = hub.forwarder.forward(request) => result,
            () = cancel.cancelled() => return Ended::Cancelled { backends: Vec::new() },
        };
        let again = avoided && result.tried.is_empty() && result.result.is_err();
        forwarded = Some(result);
        if !again {
            break;
        }
    }
    let Some(Forwarded { result, tried, .. }) = forwarded else {
        return Ended::Released;
    };
    let backends: Vec<String> = tried.iter().map(|&id| hub.registry.name_of(id)).collect();
    let answer = match result {
        Ok(answer) => answer,
        Err(error) => {
            if hub.shutdown.is_cancelled() {
                return Ended::Released;
            }
            if let Some(after) = wait_for(&error) {
                return Ended::Wait { after };
            }
            return refused(error.into(), backends);
        }
    };
    let content_type = answer
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let status = answer.status;
    let collect = Limited::new(answer.body, hub.config.jobs.max_answer_bytes).collect();
    let body = tokio::select! {
        body = collect => body,
        () = cancel.cancelled() => return Ended::Cancelled { backends },
    };
    match body {
        Ok(body) => Ended::Answered {
            answer: Answer {
                status: status.as_u16(),
                headers: content_type
                    .map(|v| vec![(header::CONTENT_TYPE.as_str().to_string(), v)])
                    .unwrap_or_default(),
                body: body.to_bytes().to_vec(),
            },
            backends,
            retry_after: None,
        },
        Err(_) if hub.shutdown.is_cancelled() => Ended::Released,
        Err(e) => {
            let too_large = e
                .downcast_ref::<http_body_util::LengthLimitError>()
                .is_some();
            let error = if too_large {
                ApiError::bad_request(
                    format!(
                        "the answer is larger than jobs.max_answer_bytes ({} bytes)",
                        hub.config.jobs.max_answer_bytes
                    ),
                    None,
                    "answer_too_large",
                )
            } else {
                ApiError::Upstream {
                    message: format!("the answer broke off: {e}"),
                }
            };
            refused(error, backends)
        }
    }
}

/// How long to wait, where a refusal says the job should wait rather than
/// fail: its key's limits, the hub's full queue.
fn wait_for(error: &crate::forward::ForwardError) -> Option<Duration> {
    use crate::forward::ForwardError as F;
    match error {
        F::KeyLimited { retry_after, .. } | F::QueueFull { retry_after } => {
            Some((*retry_after).max(Duration::from_millis(100)))
        }
        _ => None,
    }
}

/// Who a job runs as: its key (revoked since: it may not run), a
/// `[[clients]]` entry by name, or the anonymous client.
pub(crate) fn sender_of(
    hub: &HubState,
    key_id: &str,
) -> Result<(Option<crate::keys::Holder>, Option<String>), ApiError> {
    if key_id.is_empty() {
        return Ok((None, None));
    }
    if let Some(name) = key_id.strip_prefix(super::view::CLIENT_PREFIX) {
        let token = hub
            .clients
            .iter()
            .find(|(_, known)| known.name == name)
            .map(|(token, _)| token.clone());
        return match token {
            Some(token) => Ok((None, Some(token))),
            None => Err(ApiError::Forbidden(format!(
                "the client {name:?} that submitted this job is no longer configured"
            ))),
        };
    }
    match hub.keys.holder(key_id) {
        Some(holder) => Ok((Some(holder), None)),
        None => Err(ApiError::Unauthorized(
            "the key that submitted this job has been revoked".into(),
        )),
    }
}

/// A refusal, stored as the answer a client would have had.
pub(crate) fn refused(error: ApiError, backends: Vec<String>) -> Ended {
    let retry_after = match &error {
        ApiError::Forward(f) => f.retry_after(),
        _ => None,
    };
    let status: StatusCode = error.status();
    let body = serde_json::to_vec(&error.body()).unwrap_or_default();
    Ended::Answered {
        answer: Answer {
            status: status.as_u16(),
            headers: vec![(
                header::CONTENT_TYPE.as_str().to_string(),
                "application/json".into(),
            )],
            body,
        },
        backends,
        retry_after,
    }
}
