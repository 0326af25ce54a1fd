//! A `POST /v1/jobs` body, checked into a job to store: every fault named
//! with its field, before anything is stored.

use std::time::Duration;

use drover_proto::jobs::{CreateJob, Deadline};
use drover_proto::openai::RequestPeek;
use drover_scheduler::Api;
use drover_store::{JobKind, NewJob};
use sha2::{Digest, Sha256};

use crate::config::JobsConfig;
use crate::error::{ApiError, ErrorFormat};

/// The paths a job may go to, with their API and error shape.
pub const ENDPOINTS: [(&str, Api, ErrorFormat); 5] = [
    ("/v1/chat/completions", Api::OpenAi, ErrorFormat::OpenAi),
    ("/v1/completions", Api::OpenAi, ErrorFormat::OpenAi),
    ("/v1/embeddings", Api::OpenAi, ErrorFormat::OpenAi),
    ("/v1/responses", Api::Responses, ErrorFormat::Responses),
    ("/v1/messages", Api::Messages, ErrorFormat::Anthropic),
];

/// The API and error shape of a job's endpoint.
pub fn endpoint_api(endpoint: &str) -> Option<(Api, ErrorFormat)> {
    ENDPOINTS
        .iter()
        .find(|(path, _, _)| *path == endpoint)
        .map(|&(_, api, errors)| (api, errors))
}

/// The most attempts a job may ask for.
pub const MAX_ATTEMPTS: u32 = 20;

/// Metadata bounds, OpenAI's: 16 pairs, keys of 64 characters, values of
/// 512.
const METADATA_PAIRS: usize = 16;
const METADATA_KEY: usize = 64;
const METADATA_VALUE: usize = 512;

/// Who submits: the key's id in the store's terms, and how idempotent.
pub struct Submitter<'a> {
    pub key_id: &'a str,
    pub idempotency_key: Option<&'a str>,
}

fn bad(message: impl Into<String>, param: &'static str) -> ApiError {
    ApiError::bad_request(message, Some(param), "invalid_job")
}

/// Checks `raw` (the request body as sent) into a job to store.
pub fn check(
    raw: &[u8],
    who: &Submitter<'_>,
    config: &JobsConfig,
    now_ms: i64,
) -> Result<NewJob, ApiError> {
    let create: CreateJob = serde_json::from_slice(raw).map_err(|e| {
        ApiError::bad_request(format!("the body is not a job: {e}"), None, "invalid_json")
    })?;
    if endpoint_api(&create.endpoint).is_none() {
        let known: Vec<&str> = ENDPOINTS.iter().map(|(p, _, _)| *p).collect();
        return Err(bad(
            format!(
                "endpoint {:?} cannot be a job; use one of {}",
                crate::error::echo(&create.endpoint),
                known.join(", ")
            ),
            "endpoint",
        ));
    }
    let body = create.body.get().as_bytes();
    let peek: RequestPeek<'_> = serde_json::from_slice(body)
        .map_err(|e| bad(format!("body must be a JSON object: {e}"), "body"))?;
    if !create.body.get().trim_start().starts_with('{') {
        return Err(bad("body must be a JSON object", "body"));
    }
    let model = match peek.model.as_deref() {
        Some(m) if !m.is_empty() => m.to_string(),
        _ => return Err(bad("body.model is missing: name the model", "body.model")),
    };
    if streams(body) {
        return Err(bad(
            "body.stream is true, but a job's answer is stored whole: leave stream out or false",
            "body.stream",
        ));
    }
    let Terms {
        priority,
        max_attempts,
        deadline,
        metadata,
    } = terms(
        create.priority,
        create.max_attempts,
        create.deadline.as_ref(),
        create.callback_url.as_deref(),
        create.metadata.as_ref(),
        config,
        now_ms,
    )?;
    Ok(NewJob {
        id: new_job_id(),
        kind: JobKind::Inference,
        key_id: who.key_id.to_string(),
        batch_id: None,
        custom_id: None,
        endpoint: create.endpoint,
        model,
        body: body.to_vec(),
        priority,
        max_attempts,
        run_at: now_ms,
        deadline,
        idempotency_key: who.idempotency_key.map(str::to_string),
        request_hash: Some(hex(&Sha256::digest(raw))),
        callback_url: create.callback_url,
        metadata,
        created_at: now_ms,
    })
}

/// Checks `raw` (a `POST /v1/tasks` body) into a task to store: a job of
/// kind `task` whose model is the capability and whose body is the input.
pub fn check_task(
    raw: &[u8],
    who: &Submitter<'_>,
    config: &JobsConfig,
    now_ms: i64,
) -> Result<NewJob, ApiError> {
    let create: drover_proto::workers::CreateTask = serde_json::from_slice(raw).map_err(|e| {
        ApiError::bad_request(format!("the body is not a task: {e}"), None, "invalid_json")
    })?;
    crate::name::check_name("capability", &create.capability).map_err(|m| bad(m, "capability"))?;
    let Terms {
        priority,
        max_attempts,
        deadline,
        metadata,
    } = terms(
        create.priority,
        create.max_attempts,
        create.deadline.as_ref(),
        create.callback_url.as_deref(),
        create.metadata.as_ref(),
        config,
        now_ms,
    )?;
    let input =
        serde_json::to_vec(&create.input).map_err(|e| bad(format!("input: {e}"), "input"))?;
    Ok(NewJob {
        id: format!("task_{}", uuid::Uuid::now_v7().simple()),
        kind: JobKind::Task,
        key_id: who.key_id.to_string(),
        batch_id: None,
        custom_id: None,
        endpoint: "task".into(),
        model: create.capability,
        body: input,
        priority,
        max_attempts,
        run_at: now_ms,
        deadline,
        idempotency_key: who.idempotency_key.map(str::to_string),
        request_hash: Some(hex(&Sha256::digest(raw))),
        callback_url: create.callback_url,
        metadata,
        created_at: now_ms,
    })
}

/// What a job and a task both say of how to run them, checked.
struct Terms {
    priority: u8,
    max_attempts: u32,
    deadline: Option<i64>,
    metadata: Option<String>,
}

fn terms(
    priority: Option<u8>,
    max_attempts: Option<u32>,
    deadline: Option<&Deadline>,
    callback_url: Option<&str>,
    metadata: Option<&serde_json::Map<String, serde_json::Value>>,
    config: &JobsConfig,
    now_ms: i64,
) -> Result<Terms, ApiError> {
    let priority = priority.unwrap_or(config.priority);
    if priority > 100 {
        return Err(bad("priority must be from 0 to 100", "priority"));
    }
    let max_attempts = max_attempts.unwrap_or(config.max_attempts);
    if !(1..=MAX_ATTEMPTS).contains(&max_attempts) {
        return Err(bad(
            format!("max_attempts must be from 1 to {MAX_ATTEMPTS}"),
            "max_attempts",
        ));
    }
    let deadline = deadline.map(|d| deadline_ms(d, now_ms)).transpose()?;
    if let Some(url) = callback_url {
        check_callback_url(url)?;
    }
    let metadata = metadata.map(check_metadata).transpose()?;
    Ok(Terms {
        priority,
        max_attempts,
        deadline,
        metadata,
    })
}

/// `job_` and a UUIDv7: unique across restarts and hubs, ordered by time,
/// which the listing's cursor relies on.
pub fn new_job_id() -> String {
    format!("job_{}", uuid::Uuid::now_v7().simple())
}

/// Whether a body asks for a stream (`"stream": true` at its top level).
fn streams(body: &[u8]) -> bool {
    #[derive(serde::Deserialize)]
    struct Stream {
        #[serde(default)]
        stream: Option<serde_json::Value>,
    }
    serde_json::from_slice::<Stream>(body)
        .ok()
        .and_then(|s| s.stream)
        .is_some_and(|v| v == serde_json::Value::Bool(true))
}

/// The latest a job may wait for: a week. Beyond it a deadline is more
/// likely a mistake (milliseconds for seconds) than a plan.
const MAX_DEADLINE: Duration = Duration::from_secs(7 * 24 * 3600);

fn deadline_ms(deadline: &Deadline, now_ms: i64) -> Result<i64, ApiError> {
    let max = now_ms + MAX_DEADLINE.as_millis() as i64;
    let at = match deadline {
        Deadline::At(secs) => secs.saturating_mul(1000),
        Deadline::In(text) => {
            let d = humantime::parse_duration(text).map_err(|e| {
                bad(
                    format!(
                        "deadline {text:?} is neither Unix seconds nor a duration like \"30m\": {e}"
                    ),
                    "deadline",
                )
            })?;
            now_ms.saturating_add(i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        }
    };
    if at <= now_ms {
        return Err(bad("deadline has passed already", "deadline"));
    }
    if at > max {
        return Err(bad("deadline is more than a week away", "deadline"));
    }
    Ok(at)
}

fn check_callback_url(url: &str) -> Result<(), ApiError> {
    let uri: http::Uri = url
        .parse()
        .map_err(|e| bad(format!("callback_url is not a URL: {e}"), "callback_url"))?;
    match (uri.scheme_str(), uri.host()) {
        (Some("http" | "https"), Some(host)) if !host.is_empty() => Ok(()),
        _ => Err(bad(
            "callback_url must be an http:// or https:// URL with a host",
            "callback_url",
        )),
    }
}

fn check_metadata(m: &serde_json::Map<String, serde_json::Value>) -> Result<String, ApiError> {
    if m.len() > METADATA_PAIRS {
        return Err(bad(
            format!("metadata has {} pairs; at most {METADATA_PAIRS}", m.len()),
            "metadata",
        ));
    }
    for (key, value) in m {
        if key.chars().count() > METADATA_KEY {
            return Err(bad(
                format!(
                    "metadata key {:?} is longer than {METADATA_KEY} characters",
                    crate::error::echo(key)
                ),
                "metadata",
            ));
        }
        match value {
            serde_json::Value::String(v) if v.chars().count() <= METADATA_VALUE => {}
            serde_json::Value::String(_) => {
                return Err(bad(
                    format!(
                        "metadata value of {:?} is longer than {METADATA_VALUE} characters",
                        crate::error::echo(key)
                    ),
                    "metadata",
                ));
            }
            _ => {
                return Err(bad(
                    format!(
                        "metadata value of {:?} must be a string",
                        crate::error::echo(key)
                    ),
                    "metadata",
                ));
            }
        }
    }
    serde_json::to_string(m).map_err(|e| ApiError::Internal(e.to_string()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn who() -> Submitter<'static> {
        Submitter {
            key_id: "",
            idempotency_key: None,
        }
    }

    fn check_str(body: &str) -> Result<NewJob, ApiError> {
        check(body.as_bytes(), &who(), &JobsConfig::default(), 1_000_000)
    }

    #[test]
    fn a_good_job_keeps_its_body_byte_for_byte() {
        let job = check_str(
            r#"{"endpoint":"/v1/chat/completions","body":{"model":"m",  "messages":[]},"metadata":{"run":"7"},"deadline":"1h"}"#,
        )
        .unwrap();
        assert_eq!(job.body, br#"{"model":"m",  "messages":[]}"#);
        assert_eq!(job.model, "m");
        assert_eq!(job.priority, JobsConfig::default().priority);
        assert_eq!(job.deadline, Some(1_000_000 + 3_600_000));
        assert!(job.id.starts_with("job_"));
    }

    #[test]
    fn every_fault_names_its_field() {
        let cases = [
            (
                r#"{"endpoint":"/v1/models","body":{"model":"m"}}"#,
                "endpoint",
            ),
            (r#"{"endpoint":"/v1/chat/completions","body":[1]}"#, "body"),
            (r#"{"endpoint":"/v1/chat/completions","body":"x"}"#, "body"),
            (
                r#"{"endpoint":"/v1/chat/completions","body":{}}"#,
                "body.model",
            ),
            (
                r#"{"endpoint":"/v1/chat/completions","body":{"model":"m","stream":true}}"#,
                "body.stream",
            ),
            (
                r#"{"endpoint":"/v1/chat/completions","body":{"model":"m"},"max_attempts":0}"#,
                "max_attempts",
            ),
            (
                r#"{"endpoint":"/v1/chat/completions","body":{"model":"m"},"priority":101}"#,
                "priority",
            ),
            (
                r#"{"endpoint":"/v1/chat/completions","body":{"model":"m"},"deadline":5}"#,
                "deadline",
            ),
            (
                r#"{"endpoint":"/v1/chat/completions","body":{"model":"m"},"deadline":"soon"}"#,
                "deadline",
            ),
            (
                r#"{"endpoint":"/v1/chat/completions","body":{"model":"m"},"callback_url":"ftp://x/y"}"#,
                "callback_url",
            ),
            (
                r#"{"endpoint":"/v1/chat/completions","body":{"model":"m"},"metadata":{"a":1}}"#,
                "metadata",
            ),
        ];
        for (body, param) in cases {
            let err = check_str(body).unwrap_err();
            assert_eq!(
                err.body().error.param.as_deref(),
                Some(param),
                "{body}: {err}"
            );
            assert_eq!(err.status(), http::StatusCode::BAD_REQUEST, "{body}");
        }
        let err = check_str("not json").unwrap_err();
        assert_eq!(err.status(), http::StatusCode::BAD_REQUEST);
    }

    #[test]
    fn the_same_body_hashes_the_same() {
        let body = r#"{"endpoint":"/v1/embeddings","body":{"model":"m","input":"x"}}"#;
        let a = check_str(body).unwrap();
        let b = check_str(body).unwrap();
        let c = check_str(&body.replace("\"x\"", "\"y\"")).unwrap();
        assert_eq!(a.request_hash, b.request_hash);
        assert_ne!(a.request_hash, c.request_hash);
        assert_ne!(a.id, b.id);
    }
}
