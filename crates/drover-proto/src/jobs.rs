//! drover's durable jobs: `POST /v1/jobs`, `GET /v1/jobs[/{id}]`, cancel
//! and retry. A job is an inference request handed over to run later and
//! kept (its answer too) until someone comes back for it, or told of its
//! end at its `callback_url` ([`JobEvent`]).

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// `POST /v1/jobs`. What is unset is left out when it is written (by
/// `drover jobs submit`), so the hub's defaults apply.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CreateJob {
    /// The inference path it goes to, as a client would call it
    /// (`/v1/chat/completions`).
    pub endpoint: String,
    /// The request body, forwarded as given.
    #[schema(value_type = Object)]
    pub body: Box<RawValue>,
    /// 0 to 100; the hub's `jobs.priority` if none (below interactive
    /// requests' default), capped at the key's ceiling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<u8>,
    /// Attempts before the job is dead (default `jobs.max_attempts`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
    /// When it must have run by: Unix seconds, or a duration from now
    /// (`"30m"`, `"24h"`). A job still waiting then expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<Deadline>,
    /// Where to POST the finished job (signed, Standard Webhooks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback_url: Option<String>,
    /// Up to 16 string pairs, kept with the job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<serde_json::Map<String, serde_json::Value>>,
}

#[derive(Debug, Deserialize, Serialize, Clone, PartialEq, utoipa::ToSchema)]
#[serde(untagged)]
pub enum Deadline {
    At(i64),
    In(String),
}

/// A job as the API shows it.
#[derive(Debug, Serialize, Deserialize, Clone, PartialEq, utoipa::ToSchema)]
pub struct Job {
    pub id: String,
    /// Always `"job"`.
    pub object: String,
    pub endpoint: String,
    pub model: String,
    /// `queued`, `running`, `completed`, `failed` (a final error answer),
    /// `dead` (every attempt failed), `cancelled`, `expired`.
    pub state: String,
    pub priority: u8,
    pub max_attempts: u32,
    /// Every attempt so far, with its error where it failed.
    pub attempts: Vec<JobAttempt>,
    /// Unix seconds.
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub ended_at: Option<i64>,
    /// When a waiting job may run next (after a failure, its back-off).
    pub next_attempt_at: Option<i64>,
    pub deadline: Option<i64>,
    pub cancel_requested: bool,
    pub batch_id: Option<String>,
    pub custom_id: Option<String>,
    pub callback_url: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<serde_json::Value>,
    /// The stored answer, once the job has one.
    pub response: Option<JobResponse>,
    /// What the submitter should know, in the answer to its submission
    /// only (a task for a capability no worker offers yet waits for one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, Clone, PartialEq, utoipa::ToSchema)]
pub struct JobAttempt {
    pub number: u32,
    /// Unix milliseconds.
    pub started_at_ms: i64,
    pub ended_at_ms: i64,
    /// The backends it went to, in order.
    pub backends: Vec<String>,
    pub status: Option<u16>,
    pub error: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, Clone, PartialEq, utoipa::ToSchema)]
pub struct JobResponse {
    pub status_code: u16,
    /// The answer's body: its JSON, or a string if it was not JSON.
    #[schema(value_type = Object)]
    pub body: serde_json::Value,
}

/// The body of a job's callback: a Standard Webhooks event, POSTed to the
/// job's `callback_url` once the job has ended, signed in the
/// `webhook-id`, `webhook-timestamp` and `webhook-signature` headers.
#[derive(Debug, Serialize, Deserialize, Clone, PartialEq, utoipa::ToSchema)]
pub struct JobEvent {
    /// `job.completed`, `job.failed`, `job.dead`, `job.cancelled` or
    /// `job.expired`.
    #[serde(rename = "type")]
    pub event_type: String,
    /// When the job ended, RFC 3339 in UTC (`2026-12-05T10:00:00.123Z`),
    /// the form of the Standard Webhooks specification's payloads; every
    /// retry carries the same. When this delivery was sent is the
    /// `webhook-timestamp` header's, in Unix seconds.
    pub timestamp: String,
    /// The job as `GET /v1/jobs/{id}` shows it, with its answer.
    pub data: Job,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn a_written_job_leaves_out_what_is_unset_and_keeps_its_body_as_given() {
        // Key order and a number too long for a float: the body's text.
        let body = r#"{"model":"m","z":1,"a":123456789012345678901234567890}"#;
        let job = CreateJob {
            endpoint: "/v1/completions".into(),
            body: RawValue::from_string(body.into()).unwrap(),
            priority: None,
            max_attempts: Some(2),
            deadline: Some(Deadline::In("30m".into())),
            callback_url: None,
            metadata: None,
        };
        let text = serde_json::to_string(&job).unwrap();
        assert_eq!(
            text,
            format!(
                r#"{{"endpoint":"/v1/completions","body":{body},"max_attempts":2,"deadline":"30m"}}"#
            )
        );
        let back: CreateJob = serde_json::from_str(&text).unwrap();
        assert_eq!(back.body.get(), body);
        assert_eq!(back.deadline, Some(Deadline::In("30m".into())));
        let at = CreateJob {
            deadline: Some(Deadline::At(1_800_000_000)),
            ..back
        };
        assert!(
            serde_json::to_string(&at)
                .unwrap()
                .contains(r#""deadline":1800000000"#)
        );
    }
}
