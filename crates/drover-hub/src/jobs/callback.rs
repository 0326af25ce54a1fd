//! A job's callback: when an inference job that has a `callback_url` ends,
//! a job of its own (kind callback) is stored in the same transaction as
//! that end. Its body is the event that tells of it, its endpoint the URL,
//! and its id (`job_` and a UUIDv7, like any job's) the event's
//! `webhook-id`: the same on every retry, for the receiver to drop
//! duplicates. The callback runner ([`super::delivery`]) sends it.
//!
//! A callback job belongs to the key of the job it tells of: that key may
//! read it (`GET /v1/jobs/{webhook-id}`, every delivery attempt with its
//! status), cancel it, retry it once dead, and list its callbacks apart
//! from its jobs (`GET /v1/jobs?kind=callback`).

use std::time::{Duration, UNIX_EPOCH};

use drover_proto::jobs::JobEvent;
use drover_store::{Answer, Job, JobKind, JobState, NewJob};

use super::{submit, view};

/// Deliveries a callback gets before it is dead: more than an inference
/// job's, as a receiver that is down for a deploy or a restart should not
/// lose its events. With the default back-off (from 2 s, doubling, at most
/// 5 min, less up to half at random) that is 12 to 24 minutes of trying;
/// after it, `POST /v1/jobs/{webhook-id}/retry` sends it again.
pub const MAX_ATTEMPTS: u32 = 12;

/// The event type for a job that ended in `state`.
pub fn event_type(state: JobState) -> Option<&'static str> {
    Some(match state {
        JobState::Completed => "job.completed",
        JobState::Failed => "job.failed",
        JobState::Dead => "job.dead",
        JobState::Cancelled => "job.cancelled",
        JobState::Expired => "job.expired",
        JobState::Queued | JobState::Running => return None,
    })
}

/// The callback to store with `job`'s end (`job` as it ended, its answer
/// if it has one): none unless it is an inference job that asked for one
/// and has ended.
pub fn for_ended(job: &Job, answer: Option<&Answer>) -> Option<NewJob> {
    if job.kind != JobKind::Inference {
        return None;
    }
    let url = job.callback_url.clone()?;
    let event_type = event_type(job.state)?;
    let at = job.ended_at?;
    let event = JobEvent {
        event_type: event_type.to_string(),
        timestamp: rfc3339(at),
        data: view::job(job.clone(), answer.cloned()),
    };
    let body = match serde_json::to_vec(&event) {
        Ok(body) => body,
        Err(error) => {
            tracing::error!(job = %job.id, %error, "cannot write the job's callback event; it is not sent");
            return None;
        }
    };
    let metadata = serde_json::json!({"job_id": job.id, "type": event_type}).to_string();
    Some(NewJob {
        id: submit::new_job_id(),
        kind: JobKind::Callback,
        key_id: job.key_id.clone(),
        batch_id: None,
        custom_id: None,
        endpoint: url,
        model: String::new(),
        body,
        priority: job.priority,
        max_attempts: MAX_ATTEMPTS,
        run_at: at,
        deadline: None,
        idempotency_key: None,
        request_hash: None,
        callback_url: None,
        metadata: Some(metadata),
        created_at: at,
    })
}

/// [`for_ended`] for a job that ends with no answer to hand (expired,
/// cancelled while it waited, lost once too often): what the store calls
/// for the jobs it ends itself.
pub fn without_answer(job: &Job) -> Option<NewJob> {
    for_ended(job, None)
}

/// The last millisecond RFC 3339's four-digit years can write.
const LAST_MS: i64 = 253_402_300_799_999;

/// Milliseconds since the Unix epoch as RFC 3339 in UTC.
fn rfc3339(ms: i64) -> String {
    let ms = u64::try_from(ms.clamp(0, LAST_MS)).unwrap_or(0);
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ended(state: JobState, callback_url: Option<&str>) -> Job {
        Job {
            id: "job_1".into(),
            kind: JobKind::Inference,
            state,
            key_id: "key_1".into(),
            batch_id: None,
            custom_id: None,
            endpoint: "/v1/chat/completions".into(),
            model: "m".into(),
            priority: 10,
            attempt: 1,
            max_attempts: 3,
            lost: 0,
            run_at: 1_000,
            attempted_at: Some(1_000),
            deadline: None,
            lease_owner: None,
            lease_expires_at: None,
            cancel_requested: false,
            attempts: Vec::new(),
            failed_backends: Vec::new(),
            idempotency_key: None,
            callback_url: callback_url.map(str::to_string),
            metadata: None,
            created_at: 1_000,
            started_at: Some(1_000),
            ended_at: state.is_final().then_some(1_764_928_800_123),
        }
    }

    #[test]
    fn an_ended_job_that_asked_gets_a_callback_carrying_the_event() {
        let answer = Answer {
            status: 200,
            headers: Vec::new(),
            body: br#"{"ok":true}"#.to_vec(),
        };
        let job = ended(JobState::Completed, Some("https://example.com/hook"));
        let callback = for_ended(&job, Some(&answer)).unwrap();
        assert_eq!(callback.kind, JobKind::Callback);
        assert_eq!(callback.endpoint, "https://example.com/hook");
        assert_eq!(callback.key_id, "key_1");
        assert_eq!(callback.max_attempts, MAX_ATTEMPTS);
        assert_eq!(callback.run_at, 1_764_928_800_123);
        assert!(callback.id.starts_with("job_") && callback.id != job.id);
        assert_eq!(callback.callback_url, None, "a callback has no callback");
        let event: JobEvent = serde_json::from_slice(&callback.body).unwrap();
        assert_eq!(event.event_type, "job.completed");
        assert_eq!(event.timestamp, "2025-12-05T10:00:00.123Z");
        assert_eq!(rfc3339(-5), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(i64::MAX), "9999-12-31T23:59:59.999Z");
        assert_eq!(event.data, view::job(job, Some(answer)));
        let raw: serde_json::Value = serde_json::from_slice(&callback.body).unwrap();
        assert_eq!(raw["type"], "job.completed");
        assert_eq!(raw["data"]["response"]["body"]["ok"], true);
    }

    #[test]
    fn every_end_has_its_type_and_nothing_else_calls_back() {
        for (state, want) in [
            (JobState::Completed, "job.completed"),
            (JobState::Failed, "job.failed"),
            (JobState::Dead, "job.dead"),
            (JobState::Cancelled, "job.cancelled"),
            (JobState::Expired, "job.expired"),
        ] {
            let callback = without_answer(&ended(state, Some("http://h/x"))).unwrap();
            let event: JobEvent = serde_json::from_slice(&callback.body).unwrap();
            assert_eq!(event.event_type, want);
            assert_eq!(event.data.state, state.as_str());
        }
        for state in [JobState::Queued, JobState::Running] {
            assert!(without_answer(&ended(state, Some("http://h/x"))).is_none());
        }
        assert!(without_answer(&ended(JobState::Completed, None)).is_none());
        let mut callback_job = ended(JobState::Dead, Some("http://h/x"));
        callback_job.kind = JobKind::Callback;
        assert!(without_answer(&callback_job).is_none());
    }
}
