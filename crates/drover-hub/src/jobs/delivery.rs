//! The callback runner: claims callback jobs ([`super::callback`]) under
//! this hub's lease, a small window at a time (the inference runner's
//! lease renewal renews theirs too: it renews every lease of the hub's),
//! and POSTs each one's event to its URL with the Standard Webhooks
//! headers, signed with the job's key's own secret if it has one
//! ([`crate::keys::Keys::webhook_secret`]), else the hub's ([`super::secret`]).
//!
//! A 2xx answer is delivered. A 410 (Gone) says the receiver wants no
//! more: the callback ends `failed`. Anything else (another status, a
//! redirect, which is not followed, no answer within [`TIMEOUT`]) is tried
//! again after the jobs' doubling back-off, or the receiver's
//! `Retry-After` where that is longer (up to `jobs.max_backoff`), until
//! [`MAX_ATTEMPTS`](super::callback::MAX_ATTEMPTS): then it is dead. Every attempt is kept in
//! the callback's history (the status, or why there was none), stored
//! through the same writer as inference jobs' ends.
//!
//! A callback URL may name any host, loopback and private networks
//! included: receivers on the hub's own network are the common case, and
//! the hub's tests receive on loopback. What it must not reach is the
//! hub's management API, which trusts loopback without a key: that refuses
//! any request that carries a webhook signature (`routes/guard.rs`).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use drover_backends::HttpClient;
use drover_store::{Attempt, Claim, Claimed, Finish, JobKind, JobState};
use http::header::{CONTENT_TYPE, RETRY_AFTER, USER_AGENT};
use http::{HeaderMap, HeaderValue, Method, Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::runner::{backoff, millis};
use super::writer::Pending;
use super::{Jobs, now_ms};
use crate::config::JobsConfig;
use crate::hub::HubState;
use crate::webhook::WebhookSecret;

/// Callbacks this hub delivers at once: each is one small POST, and a
/// window this size keeps a receiver that hangs from holding them all.
pub const WINDOW: usize = 32;

/// How long a receiver has to answer: the Standard Webhooks
/// specification recommends 15 to 30 s, time for a receiver to store what
/// it got before it says so.
pub const TIMEOUT: Duration = Duration::from_secs(15);

/// How much of a failing receiver's answer its attempt's error keeps.
const SNIPPET: usize = 200;

/// Idle connections kept per receiver.
const POOL_PER_HOST: usize = 8;

/// Claims callbacks while the window has room, until the hub stops.
pub(super) async fn claim(hub: Arc<HubState>, jobs: Arc<Jobs>, tx: mpsc::Sender<Pending>) {
    let client = HttpClient::with_pool_size(hub.config.upstream.connect_timeout, POOL_PER_HOST);
    let lease_ms = millis(jobs.config.lease);
    let mut failing = false;
    let mut secret_failing = false;
    loop {
        if hub.shutdown.is_cancelled() {
            break;
        }
        // Read once: the claim below is fenced by the lease it says.
        let role = hub.cluster.role();
        if !role.leads() {
            if hub.cluster.until_leading(&hub.shutdown).await {
                continue;
            }
            break;
        }
        let room = WINDOW.saturating_sub(jobs.callbacks_in_flight.load(Ordering::Relaxed));
        let mut more = false;
        if room > 0 {
            let claim = Claim {
                kind: JobKind::Callback,
                owner: &jobs.owner,
                limit: room as u32,
                now: now_ms(),
                lease_ms,
                skip_batches: &[],
                skip_keys: &[],
                fence: hub.cluster.fence(&role),
            };
            match jobs.store.claim(&claim).await {
                Ok(claimed) => {
                    failing = false;
                    more = claimed.len() == room;
                    if !claimed.is_empty() {
                        match jobs.secret.refresh(&jobs.store).await {
                            Ok(()) => secret_failing = false,
                            Err(error) => {
                                if !secret_failing {
                                    tracing::warn!(%error, "cannot read the webhook secret again; callbacks are signed with the one read before");
                                }
                                secret_failing = true;
                            }
                        }
                    }
                    for callback in claimed {
                        jobs.callbacks_in_flight.fetch_add(1, Ordering::Relaxed);
                        hub.tasks.spawn(deliver(
                            hub.clone(),
                            jobs.clone(),
                            client.clone(),
                            callback,
                            tx.clone(),
                        ));
                    }
                }
                Err(error) => {
                    if !failing {
                        tracing::warn!(%error, "cannot claim job callbacks; trying again");
                    }
                    failing = true;
                }
            }
        }
        if more {
            continue;
        }
        tokio::select! {
            () = hub.shutdown.cancelled() => break,
            () = jobs.callbacks.notified() => {}
            () = tokio::time::sleep(jobs.config.poll_interval) => {}
        }
    }
}

/// How one delivery attempt went.
#[derive(Debug)]
enum Sent {
    Answered {
        status: u16,
        retry_after: Option<Duration>,
        /// The start of the answer's body, on one line, when it is not a
        /// 2xx.
        snippet: String,
    },
    /// No answer: the connection failed, or the receiver took too long.
    NoAnswer(String),
    /// It cannot be sent at all (a URL or an id no request can carry).
    Refused(String),
    Cancelled,
}

/// Delivers one claimed callback and hands how it went to the writer; a
/// hub that stops gives it back uncounted.
async fn deliver(
    hub: Arc<HubState>,
    jobs: Arc<Jobs>,
    client: HttpClient,
    claimed: Claimed,
    tx: mpsc::Sender<Pending>,
) {
    let id = claimed.job.id.clone();
    let cancel = CancellationToken::new();
    if claimed.job.cancel_requested {
        cancel.cancel();
    }
    drover_core::sync::lock(&jobs.running).insert(id.clone(), cancel.clone());
    let started = now_ms();
    // A key with a secret of its own has its callbacks signed with it.
    let secret = match hub.keys.webhook_secret(&claimed.job.key_id) {
        Some(own) => Arc::new(own),
        None => jobs.secret.current(),
    };
    let sent = tokio::select! {
        biased;
        () = hub.shutdown.cancelled() => None,
        () = cancel.cancelled() => Some(Sent::Cancelled),
        sent = send(&client, &secret, &claimed) => Some(sent),
    };
    drover_core::sync::lock(&jobs.running).remove(&id);
    match sent {
        None => {
            if let Err(error) = jobs.store.release(&claimed.lease, None).await {
                tracing::warn!(callback = %id, %error, "cannot give the callback back as the hub stops; it is sent again once its lease runs out");
            }
        }
        Some(sent) => {
            let finish = conclude(&claimed, sent, started, now_ms(), &jobs.config);
            let (done, taken) = oneshot::channel();
            let outcome = outcome(&finish);
            if tx.send((finish, done)).await.is_ok() {
                match taken.await {
                    Ok(true) => hub.observer.callback(outcome),
                    Ok(false) => {
                        tracing::warn!(callback = %id, "the callback's lease ran out while it was sent (it was given to another runner): this attempt's end is dropped")
                    }
                    Err(_) => {}
                }
            }
        }
    }
    jobs.callbacks_in_flight.fetch_sub(1, Ordering::Relaxed);
    jobs.wake_callbacks();
}

/// POSTs the callback's event, signed, and reads how the receiver answered.
async fn send(client: &HttpClient, secret: &WebhookSecret, claimed: &Claimed) -> Sent {
    let job = &claimed.job;
    let uri: Uri = match job.endpoint.parse() {
        Ok(uri) => uri,
        Err(e) => return Sent::Refused(format!("the callback URL cannot be read: {e}")),
    };
    // When this attempt is sent: receivers refuse old ones as replays.
    let timestamp = now_ms().div_euclid(1000);
    let signed = match secret.headers(&job.id, timestamp, &claimed.body) {
        Ok(signed) => signed,
        Err(e) => return Sent::Refused(e.to_string()),
    };
    let mut headers = HeaderMap::new();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(
        USER_AGENT,
        HeaderValue::from_static(concat!("drover/", env!("CARGO_PKG_VERSION"))),
    );
    for (name, value) in signed {
        headers.insert(name, value);
    }
    let body = Bytes::from(claimed.body.clone());
    let build = || {
        let mut request = Request::new(Full::new(body.clone()));
        *request.method_mut() = Method::POST;
        *request.uri_mut() = uri.clone();
        *request.headers_mut() = headers.clone();
        request
    };
    let deadline = Instant::now() + TIMEOUT;
    let response = match tokio::time::timeout_at(deadline, client.send(build)).await {
        Err(_) => {
            return Sent::NoAnswer(format!(
                "the receiver did not answer within {} s",
                TIMEOUT.as_secs()
            ));
        }
        Ok(Err(e)) => {
            return Sent::NoAnswer(format!(
                "no answer: {}",
                drover_backends::backend::error_chain(&e)
            ));
        }
        Ok(Ok(response)) => response,
    };
    let status = response.status();
    let retry_after = response
        .headers()
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let snippet = if status.is_success() {
        String::new()
    } else {
        tokio::time::timeout_at(deadline, snippet(response.into_body()))
            .await
            .unwrap_or_default()
    };
    Sent::Answered {
        status: status.as_u16(),
        retry_after,
        snippet,
    }
}

/// The start of an answer's body, on one line.
async fn snippet(mut body: Incoming) -> String {
    let mut bytes = Vec::new();
    while bytes.len() < SNIPPET {
        match body.frame().await {
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    bytes.extend_from_slice(&data);
                }
            }
            _ => break,
        }
    }
    bytes.truncate(SNIPPET);
    String::from_utf8_lossy(&bytes)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// How a delivery attempt's end is stored: delivered, failed for good
/// (410, or it cannot be sent), dead after its last attempt, or queued
/// again after a back-off.
fn conclude(claimed: &Claimed, sent: Sent, started: i64, now: i64, config: &JobsConfig) -> Finish {
    let job = &claimed.job;
    let mut record = Attempt {
        number: claimed.lease.attempt,
        started_at: started,
        ended_at: now,
        backends: Vec::new(),
        status: None,
        error: None,
    };
    let again = |retry_after: Option<Duration>| {
        if job.failures() >= job.max_attempts {
            (JobState::Dead, None)
        } else {
            let asked = retry_after.unwrap_or_default().min(config.max_backoff);
            let wait = backoff(config, &job.id, job.failures()).max(asked);
            (JobState::Queued, Some(now.saturating_add(millis(wait))))
        }
    };
    let (state, run_at) = match sent {
        Sent::Answered { status, .. } if (200..300).contains(&status) => {
            record.status = Some(status);
            (JobState::Completed, None)
        }
        Sent::Answered {
            status: 410,
            snippet,
            ..
        } => {
            record.status = Some(410);
            record.error = Some(with_snippet(
                "410: the receiver is gone; no more deliveries".into(),
                &snippet,
            ));
            (JobState::Failed, None)
        }
        Sent::Answered {
            status,
            retry_after,
            snippet,
        } => {
            record.status = Some(status);
            record.error = Some(with_snippet(
                format!("the receiver answered {status}"),
                &snippet,
            ));
            again(retry_after)
        }
        Sent::NoAnswer(reason) => {
            record.error = Some(reason);
            again(None)
        }
        Sent::Refused(reason) => {
            record.error = Some(reason);
            (JobState::Failed, None)
        }
        Sent::Cancelled => {
            record.error = Some("cancelled while it was sent".into());
            (JobState::Cancelled, None)
        }
    };
    log(job, &record, state);
    let mut attempts = job.attempts.clone();
    attempts.push(record);
    Finish {
        lease: claimed.lease.clone(),
        state,
        run_at,
        attempts,
        failed_backends: job.failed_backends.clone(),
        answer: None,
        then: None,
        at: now,
    }
}

fn with_snippet(message: String, snippet: &str) -> String {
    if snippet.is_empty() {
        message
    } else {
        format!("{message}: {snippet}")
    }
}

/// The metric's name for how an attempt ended.
fn outcome(finish: &Finish) -> &'static str {
    match finish.state {
        JobState::Completed => "delivered",
        JobState::Queued | JobState::Running => "retried",
        JobState::Failed | JobState::Expired => "failed",
        JobState::Dead => "dead",
        JobState::Cancelled => "cancelled",
    }
}

fn log(job: &drover_store::Job, attempt: &Attempt, state: JobState) {
    let error = attempt.error.as_deref().unwrap_or_default();
    match state {
        JobState::Completed => {
            tracing::debug!(callback = %job.id, attempt = attempt.number, "callback delivered")
        }
        JobState::Queued | JobState::Running => {
            tracing::info!(callback = %job.id, attempt = attempt.number, error, "callback not delivered; it is sent again later")
        }
        JobState::Dead => {
            tracing::warn!(callback = %job.id, attempts = attempt.number, error, "callback not delivered after its last attempt: it is dead (POST /v1/jobs/{{id}}/retry sends it again)")
        }
        JobState::Failed | JobState::Expired | JobState::Cancelled => {
            tracing::warn!(callback = %job.id, error, state = state.as_str(), "callback not delivered, and not sent again")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use drover_store::{Job, Lease};

    fn claimed(attempt: u32, max_attempts: u32) -> Claimed {
        let job = Job {
            id: "job_cb".into(),
            kind: JobKind::Callback,
            state: JobState::Running,
            key_id: String::new(),
            batch_id: None,
            custom_id: None,
            endpoint: "http://127.0.0.1:9/hook".into(),
            model: String::new(),
            priority: 10,
            attempt,
            max_attempts,
            lost: 0,
            run_at: 0,
            attempted_at: Some(0),
            deadline: None,
            lease_owner: Some("hub".into()),
            lease_expires_at: Some(60_000),
            cancel_requested: false,
            attempts: Vec::new(),
            failed_backends: Vec::new(),
            idempotency_key: None,
            callback_url: None,
            metadata: None,
            created_at: 0,
            started_at: Some(0),
            ended_at: None,
        };
        Claimed {
            lease: Lease {
                job_id: job.id.clone(),
                attempt,
                owner: "hub".into(),
            },
            job,
            body: b"{}".to_vec(),
        }
    }

    fn answered(status: u16, retry_after: Option<u64>) -> Sent {
        Sent::Answered {
            status,
            retry_after: retry_after.map(Duration::from_secs),
            snippet: "busy now".into(),
        }
    }

    #[test]
    fn a_2xx_is_delivered_and_anything_else_is_tried_again_until_the_last_attempt() {
        let config = JobsConfig::default();
        let done = conclude(&claimed(1, 12), answered(204, None), 10, 20, &config);
        assert_eq!(done.state, JobState::Completed);
        assert_eq!(done.attempts[0].status, Some(204));
        assert_eq!(done.attempts[0].error, None);

        for sent in [
            answered(500, None),
            answered(302, None),
            answered(404, None),
            Sent::NoAnswer("connection refused".into()),
        ] {
            let again = conclude(&claimed(3, 12), sent, 10, 20, &config);
            assert_eq!(again.state, JobState::Queued);
            assert!(again.run_at.unwrap() > 20);
            assert!(again.attempts[0].error.is_some());
            assert!(again.answer.is_none() && again.then.is_none());
        }
        let last = conclude(&claimed(12, 12), answered(500, None), 10, 20, &config);
        assert_eq!(last.state, JobState::Dead);
        assert_eq!(
            last.attempts[0].error.as_deref(),
            Some("the receiver answered 500: busy now")
        );
    }

    #[test]
    fn gone_is_final_and_retry_after_is_heeded_up_to_the_longest_back_off() {
        let config = JobsConfig::default();
        let gone = conclude(&claimed(1, 12), answered(410, None), 10, 20, &config);
        assert_eq!(gone.state, JobState::Failed);
        let later = conclude(&claimed(1, 12), answered(503, Some(120)), 10, 20, &config);
        assert_eq!(later.run_at, Some(20 + 120_000));
        let capped = conclude(
            &claimed(1, 12),
            answered(429, Some(86_400)),
            10,
            20,
            &config,
        );
        assert_eq!(capped.run_at, Some(20 + millis(config.max_backoff)));
    }
}
