//! `POST /v1/chat/completions`, `/v1/completions`, `/v1/embeddings`: read
//! the body (bounded), peek at the few fields that route it, wait for a slot,
//! forward, and retry on another backend while nothing has reached the
//! client yet.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use drover_core::{ClientKey, ModelName, Priority};
use drover_proto::openai::RequestPeek;
use drover_scheduler::Reject;
use http::{HeaderMap, HeaderName, HeaderValue, header};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use tokio::time::Instant;

use crate::affinity;
use crate::dispatcher::{AcquireError, WaitError};
use crate::error::ApiError;
use crate::hub::HubState;
use crate::metrics::{ModelLabels, RequestLabels};
use crate::proxy::{self, BACKEND_HEADER, Outbound, REQUEST_ID_HEADER};

pub const PRIORITY_HEADER: &str = "x-drover-priority";
pub const QUEUE_TIMEOUT_HEADER: &str = "x-drover-queue-timeout";
const MAX_QUEUE_TIMEOUT: Duration = Duration::from_secs(3600);

pub async fn handle(State(hub): State<Arc<HubState>>, req: Request) -> Response {
    let arrived = Instant::now();
    let id = hub.next_request_id();
    let request_id =
        incoming_request_id(req.headers()).unwrap_or_else(|| hub.new_request_header(id));
    // The model label is only set once the fleet knows the model, so that
    // made-up model names cannot blow up the metrics' cardinality.
    let mut known_model: Option<String> = None;
    let mut response = match run(&hub, req, &request_id, arrived, id, &mut known_model).await {
        Ok(resp) => resp,
        Err(err) => {
            tracing::info!(request_id = ?request_id, code = err.code(), error = %err, "request refused");
            err.into_response()
        }
    };
    response
        .headers_mut()
        .insert(HeaderName::from_static(REQUEST_ID_HEADER), request_id);
    let backend = response
        .headers()
        .get(BACKEND_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("none")
        .to_string();
    hub.metrics
        .requests
        .get_or_create(&RequestLabels {
            model: known_model.unwrap_or_default(),
            backend,
            status: response.status().as_u16(),
        })
        .inc();
    response
}

async fn run(
    hub: &Arc<HubState>,
    req: Request,
    request_id: &HeaderValue,
    arrived: Instant,
    id: drover_core::RequestId,
    known_model: &mut Option<String>,
) -> Result<Response, ApiError> {
    let (parts, body) = req.into_parts();
    let body = read_body(body, hub.config.limits.max_body_bytes).await?;
    let peek = peek(&body)?;
    let model = match peek.model.as_deref() {
        Some(m) if !m.trim().is_empty() => m.to_string(),
        _ => {
            return Err(ApiError::bad_request(
                "you must provide a model parameter",
                Some("model"),
                "missing_required_parameter",
            ));
        }
    };
    let (client, default_priority) = identify(hub, &parts.headers, peek.user.as_deref());
    let priority = match parts.headers.get(PRIORITY_HEADER) {
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|s| s.parse::<Priority>().ok())
            .ok_or_else(|| {
                ApiError::bad_request(
                    format!("header {PRIORITY_HEADER} must be an integer from 0 to 100"),
                    Some(PRIORITY_HEADER),
                    "invalid_priority",
                )
            })?,
        None => default_priority,
    };
    let queue_timeout = match parts.headers.get(QUEUE_TIMEOUT_HEADER) {
        Some(v) => parse_seconds(v).ok_or_else(|| {
            ApiError::bad_request(
                format!("header {QUEUE_TIMEOUT_HEADER} must be a number of seconds above 0 and at most 3600"),
                Some(QUEUE_TIMEOUT_HEADER),
                "invalid_queue_timeout",
            )
        })?,
        None => hub.config.queue.timeout,
    };
    let affinity = affinity::for_request(&model, &peek);
    let now = hub.dispatcher.now();
    let mut request = drover_scheduler::Request {
        id,
        model: ModelName::new(&model),
        priority,
        client,
        arrival: now,
        deadline: Some(now + queue_timeout),
        affinity,
        exclude: Vec::new(),
    };
    let path_and_query = parts
        .uri
        .path_and_query()
        .map_or(parts.uri.path(), |pq| pq.as_str())
        .to_string();
    let outbound = Outbound {
        path_and_query,
        body: body.clone(),
        request_id,
        accept: parts.headers.get(header::ACCEPT).map(owned_header),
        arrived,
        model: &model,
    };
    // What is left of the request head shares hyper's 8 KiB read buffer;
    // everything needed from it was copied above, so a waiting request does
    // not pin that buffer.
    drop(parts);

    let max_retries = hub.config.upstream.max_retries;
    let mut last_failure: Option<String> = None;
    let mut attempt = 0;
    loop {
        let waiting_since = Instant::now();
        let guard = match hub.dispatcher.acquire(request.clone(), attempt > 0).await {
            Ok(guard) => guard,
            Err(e) => {
                if !matches!(e, AcquireError::Rejected(Reject::ModelNotFound)) {
                    *known_model = Some(model.clone());
                }
                return Err(refusal(hub, e, &model, arrived, last_failure));
            }
        };
        *known_model = Some(model.clone());
        hub.metrics
            .queue_wait
            .get_or_create(&ModelLabels {
                model: model.clone(),
            })
            .observe(waiting_since.elapsed().as_secs_f64());
        let backend = guard.backend;
        // The last attempt passes a backend's 5xx through as it came: the
        // retries are spent, or every backend with the model has been tried.
        let last_attempt = attempt == max_retries || guard.last_resort;
        // Boxed: a request spends most of its life waiting in `acquire`, and
        // an inline forwarding future would make every waiting request's
        // state as large as the forwarding machinery it is not using yet.
        match Box::pin(proxy::forward(hub, guard, &outbound, last_attempt)).await {
            Ok(response) => return Ok(response),
            Err(failure) => {
                let name = hub.registry.name_of(backend);
                tracing::warn!(request_id = ?request_id, backend = %name, attempt, reason = %failure.reason, "attempt failed before the first byte");
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
                    return Err(ApiError::Upstream { message });
                }
                hub.metrics
                    .retries
                    .get_or_create(&crate::metrics::BackendLabels { backend: name })
                    .inc();
                request.exclude.push(backend);
                last_failure = Some(failure.reason);
                attempt += 1;
            }
        }
    }
}

fn refusal(
    hub: &HubState,
    e: AcquireError,
    model: &str,
    arrived: Instant,
    last_failure: Option<String>,
) -> ApiError {
    let model = model.to_string();
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
        (AcquireError::Rejected(Reject::ModelNotFound), _) => ApiError::ModelNotFound { model },
        (AcquireError::Rejected(Reject::NoHealthyBackend), None) => {
            ApiError::NoHealthyBackend { model }
        }
        (AcquireError::Rejected(Reject::QueueFull { retry_after }), _) => {
            hub.metrics.queue_rejected.inc();
            ApiError::QueueFull { retry_after }
        }
        (AcquireError::Wait(WaitError::Expired), _) => ApiError::QueueTimeout {
            model,
            waited: arrived.elapsed(),
        },
        (AcquireError::Wait(WaitError::Unroutable), _) => ApiError::ModelGone { model },
        (AcquireError::Wait(WaitError::ShuttingDown), _) => ApiError::ShuttingDown,
    }
}

async fn read_body(body: Body, limit: usize) -> Result<Bytes, ApiError> {
    match Limited::new(body, limit).collect().await {
        // A copy, not the chunk hyper read: that chunk shares hyper's 8 KiB
        // read buffer, which a request waiting in the queue would otherwise
        // pin for as long as it waits (see `owned_header`).
        Ok(collected) => Ok(Bytes::copy_from_slice(&collected.to_bytes())),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => {
            Err(ApiError::PayloadTooLarge { limit })
        }
        Err(e) => Err(ApiError::bad_request(
            format!("could not read the request body: {e}"),
            None,
            "invalid_body",
        )),
    }
}

fn peek(body: &[u8]) -> Result<RequestPeek<'_>, ApiError> {
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    if first != Some(&b'{') {
        return Err(ApiError::bad_request(
            "the request body must be a JSON object",
            None,
            "invalid_json",
        ));
    }
    serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request(
            format!("the request body is not valid JSON for this endpoint: {e}"),
            None,
            "invalid_json",
        )
    })
}

/// Who the request is for fairness, and their default priority: a known
/// API key first, then any bearer token, then the OpenAI `user` field.
fn identify(hub: &HubState, headers: &HeaderMap, user: Option<&str>) -> (ClientKey, Priority) {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|k| !k.is_empty());
    let mut h = DefaultHasher::new();
    let mut priority = Priority::DEFAULT;
    if let Some(known) = bearer.and_then(|k| hub.clients.get(k)) {
        ("client", &known.name).hash(&mut h);
        priority = known.priority.unwrap_or(Priority::DEFAULT);
    } else if let Some(user) = user.filter(|u| !u.is_empty()) {
        ("user", user).hash(&mut h);
    } else if let Some(key) = bearer {
        ("key", key).hash(&mut h);
    } else {
        return (ClientKey(0), priority);
    }
    (ClientKey(h.finish()), priority)
}

fn parse_seconds(v: &HeaderValue) -> Option<Duration> {
    let secs: f64 = v.to_str().ok()?.trim().parse().ok()?;
    if secs.is_nan() || secs <= 0.0 || !secs.is_finite() {
        return None;
    }
    let d = Duration::from_secs_f64(secs);
    (d <= MAX_QUEUE_TIMEOUT).then_some(d)
}

/// Keeps a caller's request id if it is a sane token, so traces join up.
fn incoming_request_id(headers: &HeaderMap) -> Option<HeaderValue> {
    let v = headers.get(REQUEST_ID_HEADER)?;
    let s = v.to_str().ok()?;
    (!s.is_empty() && s.len() <= 128 && s.bytes().all(|b| b.is_ascii_graphic()))
        .then(|| owned_header(v))
}

/// A header value in its own allocation. hyper parses a request's head into
/// slices of its per-connection read buffer, so a value kept from it keeps
/// that whole 8 KiB buffer alive; with 10,000 requests waiting, that was
/// about 40% of the hub's memory (bench/queue-memory.sh).
fn owned_header(v: &HeaderValue) -> HeaderValue {
    let mut owned = HeaderValue::from_maybe_shared(Bytes::copy_from_slice(v.as_bytes()))
        .unwrap_or_else(|_| v.clone());
    owned.set_sensitive(v.is_sensitive());
    owned
}
