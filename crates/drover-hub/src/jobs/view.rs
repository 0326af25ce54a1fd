//! A stored job as the API shows it, and whose it is.

use drover_store::{Answer, Job, JobState};

/// A `[[clients]]` entry's jobs are kept under its name with this prefix
/// (its key is config, not a stored key with an id).
pub const CLIENT_PREFIX: &str = "client:";

/// The API's view of a job; its answer once it has ended with one.
pub fn job(job: Job, answer: Option<Answer>) -> drover_proto::jobs::Job {
    let secs = |ms: i64| ms.div_euclid(1000);
    drover_proto::jobs::Job {
        object: "job".into(),
        next_attempt_at: (job.state == JobState::Queued).then(|| secs(job.run_at)),
        state: job.state.as_str().into(),
        priority: job.priority,
        max_attempts: job.max_attempts,
        attempts: job
            .attempts
            .into_iter()
            .map(|a| drover_proto::jobs::JobAttempt {
                number: a.number,
                started_at_ms: a.started_at,
                ended_at_ms: a.ended_at,
                backends: a.backends,
                status: a.status,
                error: a.error,
            })
            .collect(),
        created_at: secs(job.created_at),
        started_at: job.started_at.map(secs),
        ended_at: job.ended_at.map(secs),
        deadline: job.deadline.map(secs),
        cancel_requested: job.cancel_requested && !job.state.is_final(),
        metadata: job
            .metadata
            .as_deref()
            .and_then(|m| serde_json::from_str(m).ok()),
        response: answer.map(|a| drover_proto::jobs::JobResponse {
            status_code: a.status,
            body: body_value(&a.body),
        }),
        id: job.id,
        endpoint: job.endpoint,
        model: job.model,
        batch_id: job.batch_id,
        custom_id: job.custom_id,
        callback_url: job.callback_url,
    }
}

/// An answer's body as JSON: itself if it is JSON, else a string.
pub fn body_value(body: &[u8]) -> serde_json::Value {
    serde_json::from_slice(body)
        .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(body).into_owned()))
}
