//! One attempt of one claimed task: a slot on a worker offering its
//! capability, taken from the scheduler as a request's is (the task's
//! priority, its key as its client, kept off the workers that failed it
//! while another offers the capability), then the task in that worker's
//! mailbox until it answers, fails, or is gone.
//!
//! The attempt ends as a job's does ([`Ended`]): an output is a 200 answer
//! whose body is the output; a failure the worker says may succeed
//! elsewhere, or a worker gone, is a 503 (tried again on another worker,
//! with back-off, up to the task's attempts); a failure it says is final
//! is a 422.

use std::time::Duration;

use drover_core::Priority;
use drover_scheduler::{Api, Reject, Request};
use drover_store::{Answer, Claimed};
use http::header;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::Outcome;
use crate::dispatcher::{AcquireError, WaitError};
use crate::hub::HubState;
use crate::jobs::attempt::Ended;

/// How long a task waits before it is looked at again when no worker
/// offers its capability: it stays queued (until its deadline) rather than
/// failing at once, since a worker may register any time.
const NO_WORKER_WAIT: Duration = Duration::from_secs(2);

/// How long a task may wait for a worker's slot when it has no deadline.
const NO_DEADLINE_WAIT: Duration = Duration::from_secs(7 * 24 * 3600);

fn answer(status: u16, body: serde_json::Value) -> Answer {
    Answer {
        status,
        headers: vec![(
            header::CONTENT_TYPE.as_str().to_string(),
            "application/json".into(),
        )],
        body: serde_json::to_vec(&body).unwrap_or_default(),
    }
}

fn error_answer(status: u16, code: &str, message: &str) -> Answer {
    answer(
        status,
        json!({"error": {"message": message, "type": "task_error", "param": null, "code": code}}),
    )
}

pub(crate) async fn run(
    hub: &HubState,
    claimed: &Claimed,
    cancel: &CancellationToken,
    now_ms: i64,
) -> Ended {
    let job = &claimed.job;
    let input: serde_json::Value = match serde_json::from_slice(&claimed.body) {
        Ok(v) => v,
        Err(e) => {
            return Ended::Answered {
                answer: error_answer(
                    400,
                    "invalid_task",
                    &format!("the task's input is not JSON: {e}"),
                ),
                backends: Vec::new(),
                retry_after: None,
            };
        }
    };
    let wait = match job.deadline {
        Some(deadline) => Duration::from_millis(u64::try_from(deadline - now_ms).unwrap_or(0))
            .max(Duration::from_millis(1)),
        None => NO_DEADLINE_WAIT,
    };
    // The key that submitted it still holds (a revoked one's tasks do not
    // run), and its priority ceiling holds for tasks as for requests.
    let (holder, token) = match crate::jobs::attempt::sender_of(hub, &job.key_id) {
        Ok(who) => who,
        Err(error) => return crate::jobs::attempt::refused(error, Vec::new()),
    };
    let who = crate::caller::identify(&hub.clients, holder.as_ref(), token.as_deref(), None);
    let priority = Priority::new(job.priority)
        .unwrap_or(Priority::DEFAULT)
        .min(who.ceiling);
    let client = crate::caller::key_identity_of(&job.key_id);
    let avoid: Vec<_> = job
        .failed_backends
        .iter()
        .filter_map(|id| hub.workers.backend_of(id))
        .collect();
    let mut guard = None;
    // Kept off the workers that failed it, unless no other offers the
    // capability: then any, rather than none.
    for exclude in [avoid.clone(), Vec::new()] {
        let now = hub.dispatcher.now();
        let request = Request {
            id: hub.forwarder.next_id(),
            model: drover_core::ModelName::new(&job.model),
            priority,
            client,
            user: 0,
            arrival: now,
            deadline: Some(now + wait),
            affinity: Default::default(),
            exclude: exclude.clone(),
            size: 0,
            api: Api::Task,
            pin: None,
            prompt_tokens: 0,
            max_tokens: None,
        };
        let acquired = tokio::select! {
            acquired = hub.dispatcher.acquire(request, false) => acquired,
            () = cancel.cancelled() => return Ended::Cancelled { backends: Vec::new() },
        };
        match acquired {
            Ok(g) => {
                guard = Some(g);
                break;
            }
            Err(AcquireError::Rejected(Reject::Exhausted)) if !exclude.is_empty() => continue,
            Err(
                AcquireError::Rejected(
                    Reject::ModelNotFound
                    | Reject::ApiNotServed
                    | Reject::Exhausted
                    | Reject::NoHealthyBackend,
                )
                | AcquireError::Wait(WaitError::Unroutable),
            ) => {
                // No worker offers it (yet), every one that does drains, or
                // the ones it waited for left: back to the store,
                // uncounted. Waiting for a worker is not failing.
                return Ended::Wait {
                    after: NO_WORKER_WAIT,
                };
            }
            Err(AcquireError::Rejected(Reject::QueueFull { retry_after })) => {
                return Ended::Wait {
                    after: retry_after.max(Duration::from_millis(100)),
                };
            }
            Err(_) if hub.shutdown.is_cancelled() => return Ended::Released,
            Err(e) => {
                return Ended::Answered {
                    answer: error_answer(
                        503,
                        "no_worker",
                        &format!("no worker took the task: {}", why_not(&e)),
                    ),
                    backends: Vec::new(),
                    retry_after: None,
                };
            }
        }
    }
    let Some(mut guard) = guard else {
        return Ended::Wait {
            after: NO_WORKER_WAIT,
        };
    };
    let attempt = claimed.lease.attempt;
    let assigned = match hub
        .workers
        .assign(guard.backend, &job.id, &job.model, input, attempt)
    {
        Ok(Some(assigned)) => assigned,
        Ok(None) => {
            guard.neutral();
            return Ended::Wait {
                after: Duration::from_millis(100),
            };
        }
        Err(e) => {
            guard.neutral();
            return Ended::Answered {
                answer: error_answer(500, "internal_error", &e.to_string()),
                backends: Vec::new(),
                retry_after: None,
            };
        }
    };
    let (worker, outcome) = assigned;
    let backends = vec![worker];
    let outcome = tokio::select! {
        outcome = outcome => outcome,
        () = cancel.cancelled() => {
            hub.workers.cancel(&job.id);
            guard.neutral();
            return Ended::Cancelled { backends };
        }
        () = hub.shutdown.cancelled() => {
            hub.workers.forget(&job.id);
            guard.neutral();
            return Ended::Released;
        }
    };
    match outcome {
        Ok(Outcome::Completed(output)) => {
            guard.succeed();
            Ended::Answered {
                answer: answer(200, output),
                backends,
                retry_after: None,
            }
        }
        Ok(Outcome::Failed { error, retryable }) => {
            guard.fail();
            let (status, code) = if retryable {
                (503, "task_failed_retryable")
            } else {
                (422, "task_failed")
            };
            Ended::Answered {
                answer: error_answer(status, code, &error),
                backends,
                retry_after: None,
            }
        }
        Ok(Outcome::Gone(why)) => {
            guard.fail();
            Ended::Answered {
                answer: error_answer(503, "worker_gone", &why),
                backends,
                retry_after: None,
            }
        }
        Err(_) => {
            guard.neutral();
            Ended::Released
        }
    }
}

/// Why no worker's slot came, in words.
fn why_not(e: &AcquireError) -> &'static str {
    match e {
        AcquireError::Wait(WaitError::Expired) => "its deadline passed while it waited",
        AcquireError::Wait(WaitError::ShuttingDown) => "the hub is stopping",
        AcquireError::Wait(WaitError::NoLeader(_) | WaitError::LeaderChanged) => {
            "no leader grants slots now"
        }
        _ => "the scheduler refused it",
    }
}
