//! `POST /v1/chat/completions`, `/v1/completions`, `/v1/embeddings`,
//! `/v1/responses`, `/v1/messages` and `/v1/messages/count_tokens`: the
//! HTTP edge of forwarding. Read the body (bounded in size and time), peek
//! at the few fields that route it, decide who is calling and at what
//! priority, and hand the rest to [`forward`]. Errors on the Anthropic
//! paths come in Anthropic's shape.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use bytes::Bytes;
use drover_core::{ModelName, Priority, RequestId};
use drover_proto::dashboard::Refusal;
use drover_proto::openai::RequestPeek;
use drover_scheduler::Api;
use http::{HeaderMap, HeaderName, HeaderValue, header};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use tokio::time::Instant;

use crate::caller::{self, Caller};
use crate::error::{ApiError, ErrorFormat, echo};
use crate::forward::{self, Job, REQUEST_ID_HEADER, ServedBy};
use crate::hub::HubState;
use crate::keys::Holder;
use crate::limits::Permit;
use crate::metrics::{KeyLabels, KeyLimitLabels, RequestLabels};
use crate::traffic::unix_ms;

pub const PRIORITY_HEADER: &str = "x-drover-priority";
pub const QUEUE_TIMEOUT_HEADER: &str = "x-drover-queue-timeout";
const MAX_QUEUE_TIMEOUT: Duration = Duration::from_secs(3600);

/// On every inference answer: milliseconds the request waited in the hub's
/// queue (over all its attempts), so a client can tell the hub's wait from
/// the server's work.
pub const QUEUE_HEADER: &str = "x-drover-queue-ms";

/// Chat, completions, embeddings: the OpenAI API every backend serves.
pub async fn openai(State(hub): State<Arc<HubState>>, req: Request) -> Response {
    handle(hub, req, Api::OpenAi, ErrorFormat::OpenAi).await
}

/// `POST /v1/responses`, the OpenAI Responses API.
pub async fn responses(State(hub): State<Arc<HubState>>, req: Request) -> Response {
    handle(hub, req, Api::Responses, ErrorFormat::Responses).await
}

/// `POST /v1/messages` and `/v1/messages/count_tokens`, the Anthropic
/// Messages API.
pub async fn messages(State(hub): State<Arc<HubState>>, req: Request) -> Response {
    handle(hub, req, Api::Messages, ErrorFormat::Anthropic).await
}

async fn handle(hub: Arc<HubState>, req: Request, api: Api, errors: ErrorFormat) -> Response {
    let arrived = Instant::now();
    let id = hub.next_request_id();
    let request_id =
        incoming_request_id(req.headers()).unwrap_or_else(|| hub.new_request_header(id));
    let arrival = Arrival {
        id,
        request_id: &request_id,
        at: arrived,
    };
    let mut client = None;
    let (model, outcome, queued) = match job(&hub, req, arrival, api, errors, &mut client).await {
        Ok(job) => {
            let model = job.model.clone();
            let (outcome, queued) = forward::forward(&hub, job).await;
            (Some(model), outcome, queued)
        }
        Err(e) => (None, Err(e), Duration::ZERO),
    };
    // The metrics label is set only for models the fleet knows, so that
    // made-up names cannot blow up the metrics' cardinality.
    let label = match &outcome {
        Err(
            ApiError::ModelNotFound { .. }
            | ApiError::Unreachable { .. }
            | ApiError::ApiNotServed { .. },
        ) => None,
        _ => model.clone(),
    };
    let mut response = match outcome {
        Ok(resp) => resp,
        Err(err) => {
            tracing::info!(
                target: "drover::request",
                request_id = %String::from_utf8_lossy(request_id.as_bytes()),
                model = %model.as_deref().map(echo).unwrap_or_default(),
                status = err.status().as_u16(),
                code = err.code(),
                error = %err,
                "request refused"
            );
            hub.traffic.refused(Refusal {
                at_ms: unix_ms(),
                model: model
                    .as_deref()
                    .map_or_else(String::new, |m| echo(m).into_owned()),
                client: client.unwrap_or_default(),
                status: err.status().as_u16(),
                code: err.code().to_string(),
                message: echo(&err.to_string()).into_owned(),
            });
            err.into_response_as(errors)
        }
    };
    let headers = response.headers_mut();
    headers.insert(HeaderName::from_static(REQUEST_ID_HEADER), request_id);
    headers.insert(
        HeaderName::from_static(QUEUE_HEADER),
        HeaderValue::from(queued.as_millis() as u64),
    );
    count(&hub, &response, label);
    response
}

fn count(hub: &HubState, response: &Response, model: Option<String>) {
    let backend = response
        .extensions()
        .get::<ServedBy>()
        .map_or_else(|| "none".to_string(), |s| s.0.clone());
    let status = response.status().as_u16();
    hub.traffic.answered(
        unix_ms(),
        (backend != "none").then_some(backend.as_str()),
        model.as_deref(),
        status,
    );
    let model = model.unwrap_or_default();
    hub.metrics
        .requests
        .get_or_create(&RequestLabels {
            model,
            backend,
            status,
        })
        .inc();
}

/// A request as it came in: its id, the header that carries it, when.
struct Arrival<'a> {
    id: RequestId,
    request_id: &'a HeaderValue,
    at: Instant,
}

/// Turns the HTTP request into a forwarding job, or says what is wrong
/// with it; `client` is the caller's name once known.
async fn job(
    hub: &HubState,
    req: Request,
    arrival: Arrival<'_>,
    api: Api,
    errors: ErrorFormat,
    client: &mut Option<String>,
) -> Result<Job, ApiError> {
    let Arrival {
        id,
        request_id,
        at: arrived,
    } = arrival;
    let (parts, body) = req.into_parts();
    // Before the body: a caller without a valid key costs no more.
    let holder = caller::authenticate(&hub.keys, &hub.clients, &parts.headers)?;
    let body = read_body(body, &hub.config.limits).await?;
    let facts = Facts::read_off_thread(&body).await?;
    let model = hub.models.public_name(&facts.model).to_string();
    refuse_what_cannot_fit(hub, &model, &body)?;
    // A continuation goes where the response it continues is stored.
    let pin = facts
        .previous_response_id
        .as_deref()
        .and_then(|r| hub.response_owners.owner(r));
    let caller = caller::identify(
        &hub.clients,
        holder.as_ref(),
        &parts.headers,
        facts.user.as_deref(),
    );
    *client = Some(caller.name.clone());
    let permit = match &holder {
        Some(h) => admit(hub, h, &model, body.len())?,
        None => None,
    };
    let priority = priority(&parts.headers, &caller)?;
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
    let now = hub.dispatcher.now();
    let request = drover_scheduler::Request {
        id,
        model: ModelName::new(&model),
        priority,
        client: caller.client,
        user: caller.user,
        arrival: now,
        deadline: Some(now + queue_timeout),
        affinity: facts.affinity,
        exclude: Vec::new(),
        size: body.len(),
        api,
        pin,
        prompt_tokens: prompt_tokens(body.len()),
        max_tokens: facts.max_tokens,
    };
    let path_and_query = parts
        .uri
        .path_and_query()
        .map_or(parts.uri.path(), |pq| pq.as_str())
        .to_string();
    // What is left of the request head shares hyper's 8 KiB read buffer;
    // everything needed from it is copied here, so a waiting request does
    // not pin that buffer.
    let job = Job {
        request,
        model,
        asked: facts.model,
        path_and_query,
        accept: parts.headers.get(header::ACCEPT).map(owned_header),
        request_id: request_id.clone(),
        caller: caller.name,
        arrived,
        body,
        errors,
        key: holder.map(|h| forward::KeyRef {
            id: h.id,
            name: h.name,
            tokens_per_minute: h.limits.tokens_per_minute,
        }),
        permit,
    };
    Ok(job)
}

/// JSON bytes per token no tokenizer goes beyond for text: a prompt is at
/// least its body's bytes over this many tokens.
const MOST_BYTES_PER_TOKEN: usize = 24;

/// Refuses, before it is sent anywhere, a request whose prompt can fit no
/// backend's context: even counted as generously as no tokenizer counts
/// (its body's bytes over [`MOST_BYTES_PER_TOKEN`]), it is longer than the
/// largest context of every backend listing the model. Only where each says
/// its context, and not for a body that carries images or audio (their
/// bytes are not tokens).
fn refuse_what_cannot_fit(hub: &HubState, model: &str, body: &[u8]) -> Result<(), ApiError> {
    let at_least = body.len() / MOST_BYTES_PER_TOKEN;
    if at_least < 1024 {
        return Ok(());
    }
    let Some(largest) = hub.dispatcher.inspect(|s| s.fleet().largest_context(model)) else {
        return Ok(());
    };
    let media = [
        &b"image_url"[..],
        b"input_image",
        b"\"image\"",
        b"input_audio",
    ]
    .iter()
    .any(|m| memchr::memmem::find(body, m).is_some());
    if media || at_least <= largest as usize {
        return Ok(());
    }
    Err(ApiError::ContextLengthExceeded {
        message: format!(
            "the prompt is at least {at_least} tokens, and the largest context of any backend with '{}' is {largest} tokens",
            echo(model)
        ),
    })
}

/// A client key's limits, and its usage counted.
fn admit(
    hub: &HubState,
    holder: &Holder,
    model: &str,
    body_bytes: usize,
) -> Result<Option<Permit>, ApiError> {
    let key = KeyLabels {
        key: holder.name.clone(),
    };
    match hub
        .limiter
        .admit(holder, model, prompt_tokens(body_bytes), Instant::now())
    {
        Ok(permit) => {
            hub.traffic.key_used(unix_ms(), &holder.name, |u| {
                u.requests += 1;
                u.prompt_tokens += u64::from(prompt_tokens(body_bytes));
            });
            hub.metrics.key_requests.get_or_create(&key).inc();
            hub.metrics
                .key_prompt_tokens
                .get_or_create(&key)
                .inc_by(u64::from(prompt_tokens(body_bytes)));
            Ok(permit)
        }
        Err((limit, e)) => {
            hub.traffic
                .key_used(unix_ms(), &holder.name, |u| u.limited += 1);
            hub.metrics
                .key_limited
                .get_or_create(&KeyLimitLabels {
                    key: key.key,
                    limit: limit.as_str(),
                })
                .inc();
            Err(e)
        }
    }
}

/// Prompt tokens, roughly, from the body's size: about four bytes a token
/// in English text and code, and a body is mostly its prompt. Only ever
/// compared with measured prefill rates, which were estimated the same
/// way, so the bias cancels.
pub fn prompt_tokens(body_bytes: usize) -> u32 {
    u32::try_from(body_bytes / 4).unwrap_or(u32::MAX)
}

/// The request's priority: its header, capped at the caller's ceiling, or
/// the caller's default.
fn priority(headers: &HeaderMap, caller: &Caller) -> Result<Priority, ApiError> {
    let Some(v) = headers.get(PRIORITY_HEADER) else {
        return Ok(caller.priority);
    };
    let asked: Priority = v
        .to_str()
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| {
            ApiError::bad_request(
                format!("header {PRIORITY_HEADER} must be an integer from 0 to 100"),
                Some(PRIORITY_HEADER),
                "invalid_priority",
            )
        })?;
    Ok(asked.min(caller.ceiling))
}

async fn read_body(body: Body, limits: &crate::config::LimitsConfig) -> Result<Bytes, ApiError> {
    let limit = limits.max_body_bytes;
    let read = Limited::new(body, limit).collect();
    match tokio::time::timeout(limits.body_timeout, read).await {
        // A copy, not the chunk hyper read: that chunk shares hyper's 8 KiB
        // read buffer, which a request waiting in the queue would otherwise
        // pin for as long as it waits (see `owned_header`).
        Ok(Ok(collected)) => Ok(Bytes::copy_from_slice(&collected.to_bytes())),
        Ok(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => {
            Err(ApiError::PayloadTooLarge { limit })
        }
        Ok(Err(e)) => Err(ApiError::bad_request(
            format!("could not read the request body: {e}"),
            None,
            "invalid_body",
        )),
        Err(_) => Err(ApiError::RequestTimeout {
            limit: limits.body_timeout,
        }),
    }
}

/// What routing reads from a body: its model, its user, its prefix hashes,
/// the stored response it continues.
struct Facts {
    model: String,
    user: Option<String>,
    affinity: drover_scheduler::Affinity,
    previous_response_id: Option<String>,
    /// The most tokens the answer may have, as the request says.
    max_tokens: Option<u32>,
}

/// Bodies larger than this are read on the blocking pool: parsing a few
/// megabytes of JSON takes milliseconds that every other request on the
/// hub's I/O thread would otherwise wait through.
const LARGE_BODY: usize = 256 * 1024;

impl Facts {
    fn read(body: &[u8]) -> Result<Facts, ApiError> {
        let peek = peek(body)?;
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
        Ok(Facts {
            max_tokens: peek.max_tokens(),
            affinity: crate::affinity::for_request(&model, &peek),
            user: peek.user.map(|u| u.into_owned()),
            previous_response_id: peek.previous_response_id.map(|r| r.into_owned()),
            model,
        })
    }

    async fn read_off_thread(body: &Bytes) -> Result<Facts, ApiError> {
        if body.len() <= LARGE_BODY {
            return Facts::read(body);
        }
        let body = body.clone();
        tokio::task::spawn_blocking(move || Facts::read(&body))
            .await
            .unwrap_or_else(|e| {
                Err(ApiError::bad_request(
                    format!("could not read the request body: {e}"),
                    None,
                    "invalid_body",
                ))
            })
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

/// Seconds in `(0, 3600]`, checked before any conversion: `2e19` or `1e308`
/// seconds do not fit a `Duration`, and converting them panics.
fn parse_seconds(v: &HeaderValue) -> Option<Duration> {
    let secs: f64 = v.to_str().ok()?.trim().parse().ok()?;
    (secs > 0.0 && secs <= MAX_QUEUE_TIMEOUT.as_secs_f64()).then(|| Duration::from_secs_f64(secs))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_timeouts_out_of_range_are_refused_not_converted() {
        for (text, want) in [
            ("2e19", None),
            ("1e308", None),
            ("inf", None),
            ("NaN", None),
            ("0", None),
            ("-1", None),
            ("3601", None),
            ("1.5", Some(Duration::from_millis(1500))),
            ("3600", Some(Duration::from_secs(3600))),
        ] {
            let v = HeaderValue::from_str(text).unwrap();
            assert_eq!(parse_seconds(&v), want, "{text}");
        }
    }
}
