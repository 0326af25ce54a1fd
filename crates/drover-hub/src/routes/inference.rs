//! `POST /v1/chat/completions`, `/v1/completions`, `/v1/embeddings`,
//! `/v1/responses`, `/v1/messages` and `/v1/messages/count_tokens`: the
//! HTTP edge of forwarding. Read the body (bounded in size and time), peek
//! at the few fields that route it, decide who is calling and at what
//! priority, and hand the rest to the [`Forwarder`](crate::forward::Forwarder). Errors on the Anthropic
//! paths come in Anthropic's shape.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use bytes::Bytes;
use drover_core::Priority;
use drover_scheduler::Api;
use http::{HeaderMap, HeaderName, HeaderValue, header};
use http_body_util::{BodyExt, LengthLimitError, Limited};

use crate::caller;
use crate::error::{ApiError, ErrorFormat};
use crate::forward::{ForwardRequest, Forwarded, REQUEST_ID_HEADER, Sender};
use crate::hub::HubState;

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
    let arrived = tokio::time::Instant::now();
    let request_id =
        incoming_request_id(req.headers()).unwrap_or_else(crate::forward::new_request_id);
    let (result, queued) = match prepare(&hub, req, api, errors, &request_id, arrived).await {
        Ok(request) => {
            let Forwarded { result, queued, .. } = hub.forwarder.forward(request).await;
            (result.map_err(ApiError::from), queued)
        }
        Err(error) => (Err(error), Duration::ZERO),
    };
    let mut response = match result {
        Ok(answer) => {
            let mut response = Response::new(Body::new(answer.body));
            *response.status_mut() = answer.status;
            *response.headers_mut() = answer.headers;
            response
        }
        Err(err) => err.into_response_as(errors),
    };
    let headers = response.headers_mut();
    headers.insert(HeaderName::from_static(REQUEST_ID_HEADER), request_id);
    headers.insert(
        HeaderName::from_static(QUEUE_HEADER),
        HeaderValue::from(queued.as_millis() as u64),
    );
    response
}

/// Reads what the HTTP request says into a request to forward, or says
/// what is wrong with it (refusals of the edge's own are told to the
/// observer here; the forwarder tells its own).
async fn prepare(
    hub: &HubState,
    req: Request,
    api: Api,
    errors: ErrorFormat,
    request_id: &HeaderValue,
    arrived: tokio::time::Instant,
) -> Result<ForwardRequest, ApiError> {
    let (parts, body) = req.into_parts();
    let edge = async {
        // Before the body: a caller without a valid key costs no more.
        let holder = caller::authenticate(&hub.keys, &hub.clients, &parts.headers)?;
        let priority = match parts.headers.get(PRIORITY_HEADER) {
            Some(v) => Some(parse_priority(v)?),
            None => None,
        };
        let queue_timeout = match parts.headers.get(QUEUE_TIMEOUT_HEADER) {
            Some(v) => Some(parse_seconds(v).ok_or_else(|| {
                ApiError::bad_request(
                    format!("header {QUEUE_TIMEOUT_HEADER} must be a number of seconds above 0 and at most 3600"),
                    Some(QUEUE_TIMEOUT_HEADER),
                    "invalid_queue_timeout",
                )
            })?),
            None => None,
        };
        let body = read_body(body, &hub.config.limits).await?;
        Ok::<_, ApiError>((holder, priority, queue_timeout, body))
    };
    let (holder, priority, queue_timeout, body) = match edge.await {
        Ok(read) => read,
        Err(e) => {
            let refused = crate::observe::Refused {
                request_id,
                model: None,
                known: false,
                client: "",
            };
            hub.observer.refused(&e, errors, refused);
            return Err(e);
        }
    };
    let path_and_query = parts
        .uri
        .path_and_query()
        .map_or(parts.uri.path(), |pq| pq.as_str())
        .to_string();
    // What is left of the request head shares hyper's 8 KiB read buffer;
    // everything needed from it is copied here, so a waiting request does
    // not pin that buffer.
    let sender = Sender {
        token: if holder.is_none() {
            caller::bearer(&parts.headers).map(str::to_string)
        } else {
            None
        },
        holder,
        priority,
        queue_timeout,
        request_id: Some(request_id.clone()),
        accept: parts.headers.get(header::ACCEPT).map(owned_header),
        arrived: Some(arrived),
    };
    Ok(hub
        .forwarder
        .prepare(body, api, errors, path_and_query, sender)
        .await?)
}

/// The priority a header asks for (capped at the caller's ceiling later).
fn parse_priority(v: &HeaderValue) -> Result<Priority, ApiError> {
    v.to_str().ok().and_then(|s| s.parse().ok()).ok_or_else(|| {
        ApiError::bad_request(
            format!("header {PRIORITY_HEADER} must be an integer from 0 to 100"),
            Some(PRIORITY_HEADER),
            "invalid_priority",
        )
    })
}

pub(super) async fn read_body(
    body: Body,
    limits: &crate::config::LimitsConfig,
) -> Result<Bytes, ApiError> {
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
