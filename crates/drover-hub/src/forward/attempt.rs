//! One attempt of a request against one backend, up to the first byte of
//! its answer. Until then nothing has reached the client, so every failure
//! here is the caller's to retry elsewhere.

use std::sync::Arc;

use bytes::Bytes;
use drover_backends::UpstreamBody;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::time::Instant;

use drover_scheduler::Api;

use super::pass_through::{AnswerBody, Upstream};
use super::{Answer, Failure, FailureKind, ForwardRequest, Forwarder, rewrite};
use crate::dispatcher::SlotGuard;
use crate::observe::{Pair, Served};
use crate::registry::BackendEntry;

pub const BACKEND_HEADER: &str = "x-drover-backend";
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// How much of an error answer is read to tell overload from failure:
/// errors are small JSON.
const ERROR_PEEK: usize = 64 * 1024;

/// Sends `job` to the backend `guard` holds a slot on. `last_attempt`: a
/// 5xx or 429 is passed through to the client instead of failing over.
pub(super) async fn run(
    fwd: &Forwarder,
    entry: Option<Arc<BackendEntry>>,
    mut guard: SlotGuard,
    job: &ForwardRequest,
    pair: &Arc<Pair>,
    last_attempt: bool,
    queue_wait: std::time::Duration,
) -> Result<Answer, Failure> {
    let shared = fwd.shared();
    let Some(entry) = entry else {
        guard.neutral();
        return Err(Failure::new(
            FailureKind::Removed,
            "the backend was removed",
        ));
    };
    let started = Instant::now();
    let timeout = shared.upstream.response_timeout;
    // One timer for both waits, the answer's head and its first frame: a
    // timer set is a lock on the runtime's timer wheel.
    let out_of_time = tokio::time::sleep_until(started + timeout);
    tokio::pin!(out_of_time);
    let upstream = tokio::select! {
        biased;
        sent = send(&entry, job) => match sent {
            Ok(resp) => resp,
            Err(reason) => {
                guard.fail();
                return Err(reason);
            }
        },
        () = &mut out_of_time => {
            guard.fail();
            return Err(no_answer(&entry, "response", timeout));
        }
    };
    let status = upstream.status();
    if !last_attempt && status == StatusCode::TOO_MANY_REQUESTS {
        // Busy is not broken: do not count it against the breaker.
        guard.neutral();
        return Err(Failure::new(
            FailureKind::Busy,
            format!("{} answered {status}", entry.name),
        ));
    }
    let (parts, mut body) = upstream.into_parts();
    let sse = is_sse(&parts.headers);
    // An error answer is read whole (it is small) to tell a server that ran
    // out of room from one that failed; any other answer, its first frame.
    let peek = if status.is_server_error() && !sse {
        ERROR_PEEK
    } else {
        1
    };
    let first = tokio::select! {
        biased;
        read = read_prefix(&mut body, peek) => match read {
            Ok(first) => first,
            Err(e) => {
                guard.fail();
                return Err(Failure::new(
                    FailureKind::Broken,
                    format!("{} broke before its first byte: {e}", entry.name),
                ));
            }
        },
        () = &mut out_of_time => {
            guard.fail();
            return Err(no_answer(&entry, "body", timeout));
        }
    };
    // llama.cpp says so as a 500, or as a stream's first event.
    if (status.is_server_error() || sse)
        && first
            .as_deref()
            .is_some_and(drover_backends::overload::out_of_room)
    {
        return Err(out_of_room(
            fwd,
            guard,
            &entry,
            first.as_deref().unwrap_or_default(),
        ));
    }
    if !last_attempt && status.is_server_error() {
        guard.fail();
        return Err(Failure::new(
            FailureKind::Status(status.as_u16()),
            format!("{} answered {status}", entry.name),
        ));
    }
    // A Messages stream must open with message_start, or Anthropic's
    // clients fail: put it in where the server left it out.
    let first = match first {
        Some(bytes) if sse && status.is_success() && job.request.api == Api::Messages => {
            Some(super::anthropic::with_message_start(
                bytes,
                &String::from_utf8_lossy(job.request_id.as_bytes()),
                &job.asked,
                job.request.prompt_tokens,
            ))
        }
        other => other,
    };
    let ttfb = job.arrived.elapsed();
    if sse && status.is_success() {
        learn_prefill(fwd, &guard, job, started.elapsed());
    }
    shared
        .observer
        .answered(pair, status.as_u16(), ttfb, guard.affinity_hit);
    let served = Served {
        request_id: job.request_id.clone(),
        caller: job.caller.clone(),
        status: status.as_u16(),
        queue_wait,
        ttfb,
        arrived: job.arrived,
    };
    Ok(respond(
        fwd,
        guard,
        Reply {
            status,
            headers: parts.headers,
            first,
            body,
            sse,
        },
        job,
        pair.clone(),
        served,
    ))
}

/// Prompts shorter than this say little about prefill speed: the first
/// token's time is then mostly fixed costs.
const MIN_PREFILL_TOKENS: u32 = 512;

/// A streamed answer's first byte after a prompt the backend had not
/// cached (not an affinity hit) measures how fast it prefills: what the
/// scheduler weighs against waiting for the backend that holds a prefix.
fn learn_prefill(
    fwd: &Forwarder,
    guard: &SlotGuard,
    job: &ForwardRequest,
    took: std::time::Duration,
) {
    let tokens = job.request.prompt_tokens;
    if guard.affinity_hit || tokens < MIN_PREFILL_TOKENS {
        return;
    }
    let s = fwd.shared();
    if guard.is_remote() {
        // The leader's scheduler weighs prefills: it hears of this one.
        let backend = s.registry.name_of(guard.backend);
        s.link
            .prefill(backend, job.request.model.as_str(), tokens, took);
    } else {
        s.dispatcher
            .prefill_seen(guard.backend, &job.request.model, tokens, took);
    }
}

fn is_sse(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"))
}

/// A backend's answer, its first body frame read.
struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    first: Option<Bytes>,
    body: Incoming,
    sse: bool,
}

/// Sends the request; a closed pooled connection is retried by the client
/// itself on a fresh one.
async fn send(entry: &BackendEntry, job: &ForwardRequest) -> Result<Response<Incoming>, Failure> {
    let uri = entry.endpoint.uri(&job.path_and_query).map_err(|e| {
        Failure::new(
            FailureKind::Connect,
            format!("cannot build the upstream URL: {e}"),
        )
    })?;
    // The server's own id for the model, where it differs from the name
    // the request arrived with.
    let own = entry.own_id(&job.model);
    let id = own.as_deref().unwrap_or(&job.model);
    let body = (id != job.asked)
        .then(|| rewrite::with_model(&job.body, id))
        .flatten()
        .unwrap_or_else(|| job.body.clone());
    let build = || {
        let mut req = Request::new(UpstreamBody::new(body.clone()));
        *req.method_mut() = Method::POST;
        *req.uri_mut() = uri.clone();
        let h = req.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        h.insert(
            header::ACCEPT,
            job.accept
                .clone()
                .unwrap_or(HeaderValue::from_static("*/*")),
        );
        h.insert(
            HeaderName::from_static(REQUEST_ID_HEADER),
            job.request_id.clone(),
        );
        if let Some(auth) = &entry.authorization {
            h.insert(header::AUTHORIZATION, auth.clone());
        }
        req
    };
    entry.client.send(build).await.map_err(|e| {
        Failure::new(
            FailureKind::Connect,
            format!(
                "{}: {}",
                entry.name,
                drover_backends::backend::error_chain(&e)
            ),
        )
    })
}

fn no_answer(entry: &BackendEntry, what: &str, timeout: std::time::Duration) -> Failure {
    Failure::new(
        FailureKind::Timeout,
        format!("{} sent no {what} within {timeout:?}", entry.name),
    )
}

/// The body's first frames, at least one and until `want` bytes or its end:
/// `None` for an empty body.
async fn read_prefix(body: &mut Incoming, want: usize) -> Result<Option<Bytes>, hyper::Error> {
    let mut first: Option<Bytes> = None;
    let mut more: Vec<u8> = Vec::new();
    while first.as_ref().map_or(0, Bytes::len) + more.len() < want {
        let Some(frame) = body.frame().await else {
            break;
        };
        let Ok(data) = frame?.into_data() else {
            continue;
        };
        match &first {
            None => first = Some(data),
            Some(f) => {
                if more.is_empty() {
                    more.extend_from_slice(f);
                }
                more.extend_from_slice(&data);
            }
        }
        if http_body::Body::is_end_stream(body) {
            break;
        }
    }
    Ok(if more.is_empty() {
        first
    } else {
        Some(Bytes::from(more))
    })
}

/// The server ran out of room for the request. With others running there
/// at any time while it ran, that is overload: the slot is given back as
/// such (the model takes fewer at once there for a while) and the request
/// goes round again. Alone from start to end, it does not fit the model's
/// context: the client hears the server's words.
fn out_of_room(
    fwd: &Forwarder,
    mut guard: SlotGuard,
    entry: &BackendEntry,
    said: &[u8],
) -> Failure {
    // A granted slot's counts are the leader's, as they were at the grant.
    let (busy, dispatched) = if guard.is_remote() {
        (guard.running, guard.seq)
    } else {
        fwd.shared()
            .dispatcher
            .running(guard.backend, guard.model.as_str())
    };
    let alone = guard.running == 1 && busy <= 1 && dispatched == guard.seq;
    let running = busy.max(guard.running);
    if alone {
        guard.neutral();
        return Failure::new(
            FailureKind::TooLarge,
            format!(
                "the request does not fit the context of '{}' on {}: {}",
                crate::error::echo(guard.model.as_str()),
                entry.name,
                server_words(said)
            ),
        );
    }
    guard.overloaded();
    Failure::new(
        FailureKind::Overloaded,
        format!(
            "{} ran out of room with {running} requests running ({})",
            entry.name,
            server_words(said)
        ),
    )
}

/// The error message an answer (or an SSE error event) carries, else its
/// text, cut short.
fn server_words(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let json = text.trim().trim_start_matches("data:").trim();
    let message = serde_json::from_str::<serde_json::Value>(json)
        .ok()
        .and_then(|v| v["error"]["message"].as_str().map(str::to_string));
    crate::error::echo(message.as_deref().unwrap_or(json)).into_owned()
}

/// The answer for the caller: the backend's status and headers (less
/// hop-by-hop ones), drover's own headers, and the body passed through.
fn respond(
    fwd: &Forwarder,
    guard: SlotGuard,
    reply: Reply,
    job: &ForwardRequest,
    pair: Arc<Pair>,
    served: Served,
) -> Answer {
    let Reply {
        status,
        headers: upstream,
        first,
        body,
        sse,
    } = reply;
    let mut headers = HeaderMap::with_capacity(upstream.len() + 2);
    for (name, value) in &upstream {
        if is_hop_by_hop(name) || (sse && name == header::CONTENT_LENGTH) {
            continue;
        }
        headers.append(name.clone(), value.clone());
    }
    if let Ok(v) = HeaderValue::from_str(&pair.backend) {
        headers.insert(HeaderName::from_static(BACKEND_HEADER), v);
    }
    // A stored response is remembered with the backend that holds it.
    let owner = (job.request.api == Api::Responses && status.is_success()).then_some(guard.backend);
    let body = AnswerBody::new(
        fwd.clone(),
        guard,
        Upstream {
            first,
            inner: body,
            sse,
            errors: job.errors,
            owner,
            key: job.key.clone(),
        },
        pair,
        served,
    );
    Answer {
        status,
        headers,
        body,
    }
}

fn is_hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
    )
}
