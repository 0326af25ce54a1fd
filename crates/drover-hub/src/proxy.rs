//! Sending one attempt of a request to one backend, and passing its answer
//! through. The body goes upstream untouched; the answer comes back chunk
//! by chunk as the backend sends it, never buffered to the end.
//!
//! The retry boundary is the first byte: until the backend's first body
//! frame is in hand nothing has reached the client, so any failure is
//! retryable on another backend. After it, a failure ends an SSE stream with
//! an error event (never a silent truncation) and aborts any other body.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use drover_backends::UpstreamBody;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body::{Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::time::{Instant, Sleep};

use crate::dispatcher::SlotGuard;
use crate::error::ApiError;
use crate::hub::HubState;
use crate::metrics::{BackendLabels, ModelLabels};

pub const BACKEND_HEADER: &str = "x-drover-backend";
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// What every attempt of one request shares.
pub struct Outbound<'a> {
    pub path_and_query: String,
    pub body: Bytes,
    pub request_id: &'a HeaderValue,
    pub accept: Option<HeaderValue>,
    pub arrived: Instant,
    pub model: &'a str,
}

/// An attempt that failed before anything reached the client.
pub struct Retryable {
    pub reason: String,
}

pub async fn forward(
    hub: &Arc<HubState>,
    mut guard: SlotGuard,
    out: &Outbound<'_>,
    last_attempt: bool,
) -> Result<Response<Body>, Retryable> {
    let Some(entry) = hub.registry.get(guard.backend) else {
        guard.neutral();
        return Err(Retryable {
            reason: "the backend was removed".into(),
        });
    };
    let uri = entry.endpoint.uri(&out.path_and_query).map_err(|e| {
        guard.neutral();
        Retryable {
            reason: format!("cannot build the upstream URL: {e}"),
        }
    })?;
    let mut req = Request::builder().method(Method::POST).uri(uri);
    if let Some(h) = req.headers_mut() {
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        h.insert(
            header::ACCEPT,
            out.accept
                .clone()
                .unwrap_or(HeaderValue::from_static("*/*")),
        );
        h.insert(
            HeaderName::from_static(REQUEST_ID_HEADER),
            out.request_id.clone(),
        );
        if let Some(key) = &entry.api_key
            && let Ok(v) = HeaderValue::from_str(&format!("Bearer {key}"))
        {
            h.insert(header::AUTHORIZATION, v);
        }
    }
    let req = req
        .body(UpstreamBody::new(out.body.clone()))
        .map_err(|e| Retryable {
            reason: e.to_string(),
        })?;

    let upstream = hub.config.upstream.clone();
    let deadline = Instant::now() + upstream.response_timeout;
    let resp = match tokio::time::timeout_at(deadline, hub.client.request(req)).await {
        Ok(Ok(resp)) => resp,
        Ok(Err(e)) => {
            guard.fail();
            return Err(Retryable {
                reason: format!(
                    "{}: {}",
                    entry.name,
                    drover_backends::backend::error_chain(&e)
                ),
            });
        }
        Err(_) => {
            guard.fail();
            return Err(Retryable {
                reason: format!(
                    "{} sent no response within {:?}",
                    entry.name, upstream.response_timeout
                ),
            });
        }
    };

    let status = resp.status();
    let overloaded = status == StatusCode::TOO_MANY_REQUESTS;
    if (status.is_server_error() || overloaded) && !last_attempt {
        if overloaded {
            // Busy is not broken: do not count it against the breaker.
            guard.neutral();
        } else {
            guard.fail();
        }
        return Err(Retryable {
            reason: format!("{} answered {status}", entry.name),
        });
    }

    let (parts, mut body) = resp.into_parts();
    let first = match tokio::time::timeout_at(deadline, body.frame()).await {
        Ok(Some(Ok(frame))) => Some(frame),
        Ok(None) => None,
        Ok(Some(Err(e))) => {
            guard.fail();
            return Err(Retryable {
                reason: format!("{} broke before its first byte: {e}", entry.name),
            });
        }
        Err(_) => {
            guard.fail();
            return Err(Retryable {
                reason: format!(
                    "{} sent no body within {:?}",
                    entry.name, upstream.response_timeout
                ),
            });
        }
    };
    hub.metrics
        .ttfb
        .get_or_create(&ModelLabels {
            model: out.model.to_string(),
        })
        .observe(out.arrived.elapsed().as_secs_f64());
    if guard.affinity_hit {
        hub.metrics.affinity_hits.inc();
    }

    let sse = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"));
    let mut headers = HeaderMap::with_capacity(parts.headers.len() + 2);
    for (name, value) in &parts.headers {
        if is_hop_by_hop(name) || (sse && name == header::CONTENT_LENGTH) {
            continue;
        }
        headers.append(name.clone(), value.clone());
    }
    if let Ok(v) = HeaderValue::from_str(&entry.name) {
        headers.insert(HeaderName::from_static(BACKEND_HEADER), v);
    }
    let body = PassThrough {
        first: first.and_then(|f| f.into_data().ok()),
        inner: body,
        guard: Some(guard),
        // A 4xx is the client's fault and says the backend is alive; a 5xx
        // passed through on the last attempt still counts against it.
        upstream_ok: !status.is_server_error(),
        sse,
        idle: upstream.idle_timeout,
        idle_timer: Box::pin(tokio::time::sleep(upstream.idle_timeout)),
        hub: hub.clone(),
        backend: entry.name.clone(),
        model: out.model.to_string(),
        arrived: out.arrived,
        done: false,
    };
    let mut response = Response::new(Body::new(body));
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    Ok(response)
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

/// The backend's body on its way to the client. Holds the slot until the
/// last byte (or until the client leaves, which drops it and with it the
/// upstream connection, cancelling the request on the backend).
struct PassThrough {
    first: Option<Bytes>,
    inner: Incoming,
    guard: Option<SlotGuard>,
    upstream_ok: bool,
    sse: bool,
    idle: Duration,
    idle_timer: Pin<Box<Sleep>>,
    hub: Arc<HubState>,
    backend: String,
    model: String,
    arrived: Instant,
    done: bool,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl PassThrough {
    fn finish(&mut self, ok: bool) {
        if let Some(mut guard) = self.guard.take() {
            if ok && self.upstream_ok {
                guard.succeed();
            } else {
                guard.fail();
            }
        }
        self.observe_latency();
        self.done = true;
    }

    fn observe_latency(&self) {
        self.hub
            .metrics
            .latency
            .get_or_create(&ModelLabels {
                model: self.model.clone(),
            })
            .observe(self.arrived.elapsed().as_secs_f64());
    }

    /// Ends the response after a failure past the first byte.
    fn broken(&mut self, reason: String) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.finish(false);
        self.hub
            .metrics
            .stream_errors
            .get_or_create(&BackendLabels {
                backend: self.backend.clone(),
            })
            .inc();
        tracing::warn!(backend = %self.backend, model = %self.model, %reason, "response broke after its first byte");
        if self.sse {
            let err = ApiError::Upstream {
                message: format!("the backend's stream broke: {reason}"),
            };
            let mut event = b"data: ".to_vec();
            event.extend(serde_json::to_vec(&err.body()).unwrap_or_default());
            event.extend_from_slice(b"\n\n");
            Poll::Ready(Some(Ok(Frame::data(Bytes::from(event)))))
        } else {
            Poll::Ready(Some(Err(reason.into())))
        }
    }
}

impl http_body::Body for PassThrough {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if let Some(first) = this.first.take() {
            return Poll::Ready(Some(Ok(Frame::data(first))));
        }
        if this.done {
            return Poll::Ready(None);
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                let deadline = Instant::now() + this.idle;
                this.idle_timer.as_mut().reset(deadline);
                match frame.into_data() {
                    Ok(data) => Poll::Ready(Some(Ok(Frame::data(data)))),
                    // Trailers: pass them on.
                    Err(frame) => Poll::Ready(Some(Ok(frame))),
                }
            }
            Poll::Ready(Some(Err(e))) => this.broken(e.to_string()),
            Poll::Ready(None) => {
                this.finish(true);
                Poll::Ready(None)
            }
            Poll::Pending => match this.idle_timer.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    let idle = this.idle;
                    this.broken(format!("no data for {idle:?}"))
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done && self.first.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        if self.sse {
            return SizeHint::default();
        }
        let inner = self.inner.size_hint();
        let pending = self.first.as_ref().map_or(0, |f| f.len() as u64);
        // Lower before upper would trip SizeHint's lower <= upper check, so
        // start from an unbounded hint.
        let mut hint = SizeHint::new();
        hint.set_lower(inner.lower() + pending);
        if let Some(upper) = inner.upper() {
            hint.set_upper(upper + pending);
        }
        hint
    }
}

impl Drop for PassThrough {
    fn drop(&mut self) {
        // Dropped before the end: the client went away. That says nothing
        // about the backend; dropping `inner` closes the upstream
        // connection, which cancels the backend's work.
        if let Some(mut guard) = self.guard.take() {
            guard.neutral();
            self.observe_latency();
        }
    }
}
