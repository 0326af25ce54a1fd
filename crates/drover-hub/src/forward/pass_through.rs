//! The backend's body on its way to the client. It holds the request's slot
//! until the answer is complete, and judges the backend by how the answer
//! ended:
//! - complete: success, unless the backend's status was a 5xx (passed
//!   through on a last attempt), which is a failure whatever the body;
//! - broken upstream, or silent past `idle_timeout`: failure;
//! - dropped early (the client left): the slot lingers for the cancel grace.
//!
//! "Complete" is seen on the last data frame, not on a later poll: hyper
//! stops polling a body whose `Content-Length` it has written, so a
//! non-streamed answer would otherwise never report its end.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use drover_core::BackendId;
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use tokio::time::{Instant, Sleep};
use tokio_util::sync::WaitForCancellationFutureOwned;

use super::Served;
use crate::continuations::IdSniffer;
use crate::dispatcher::SlotGuard;
use crate::error::{ApiError, ErrorFormat};
use crate::hub::HubState;
use crate::metrics::{BackendLabels, KeyLabels, ModelLabels};
use crate::usage::UsageSniffer;

/// A client key as its answer's usage is charged to it.
#[derive(Debug, Clone)]
pub struct KeyRef {
    pub id: String,
    pub name: String,
    pub tokens_per_minute: Option<u32>,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Polled = Poll<Option<Result<Frame<Bytes>, BoxError>>>;

pub(super) struct PassThrough {
    first: Option<Bytes>,
    inner: Incoming,
    guard: Option<SlotGuard>,
    /// The backend answered 5xx: a failure, however the body ends.
    upstream_failed: bool,
    /// The server ran out of room for it part-way (a stream's error event):
    /// overload, not failure nor success.
    out_of_room: bool,
    sse: bool,
    errors: ErrorFormat,
    /// A Responses API answer: its id is looked for in its first bytes and
    /// remembered with this backend, where a continuation must go.
    owner: Option<(BackendId, IdSniffer)>,
    /// The client key whose answer this is.
    key: Option<KeyRef>,
    /// The answer's output tokens as read, for the key and the traffic.
    usage: UsageSniffer,
    idle: Duration,
    idle_timer: Pin<Box<Sleep>>,
    /// SSE only: resolves when the hub's shutdown grace is over, so the
    /// stream ends with an error event rather than a cut connection.
    stop: Option<Pin<Box<WaitForCancellationFutureOwned>>>,
    hub: Arc<HubState>,
    served: Served,
    done: bool,
}

/// The backend's side of an answer, its first frame read.
pub(super) struct Upstream {
    pub first: Option<Bytes>,
    pub inner: Incoming,
    pub sse: bool,
    pub errors: ErrorFormat,
    /// Set for a Responses API answer: the backend that stores it.
    pub owner: Option<BackendId>,
    /// The client key the request came with.
    pub key: Option<KeyRef>,
}

/// How far into a Responses answer its id is looked for.
const ID_WINDOW: usize = 64 * 1024;

impl PassThrough {
    pub(super) fn new(
        hub: Arc<HubState>,
        mut guard: SlotGuard,
        upstream: Upstream,
        served: Served,
    ) -> Self {
        let Upstream {
            first,
            inner,
            sse,
            errors,
            owner,
            key,
        } = upstream;
        let upstream_failed = served.status >= 500;
        if upstream_failed {
            guard.fail();
        }
        let idle = hub.config.upstream.idle_timeout;
        let mut body = PassThrough {
            first,
            guard: Some(guard),
            upstream_failed,
            out_of_room: false,
            sse,
            errors,
            owner: owner.map(|b| (b, IdSniffer::new(ID_WINDOW))),
            key,
            usage: UsageSniffer::default(),
            idle,
            idle_timer: Box::pin(tokio::time::sleep(idle)),
            stop: sse.then(|| Box::pin(hub.streams_stop.clone().cancelled_owned())),
            hub,
            served,
            done: false,
            inner,
        };
        if let Some(first) = &body.first {
            body.usage.feed(first);
        }
        if http_body::Body::is_end_stream(&body.inner) {
            // The first frame was the whole answer (or there was none).
            body.finish(true);
        }
        body
    }

    /// The answer's output tokens: what it reported, else for a stream an
    /// estimate from the chunks of text it carried (OpenAI's streams, and
    /// vLLM's, LM Studio's and Ollama's, report none unless asked). Of an
    /// answer cut short, what was sent.
    fn output_tokens(&self) -> Option<u64> {
        if self.sse {
            self.usage.estimate()
        } else {
            self.usage.tokens()
        }
    }

    /// The answer is over, or its client left: its output tokens count
    /// against its key.
    fn count_usage(&mut self) {
        let (Some(key), Some(tokens)) = (self.key.take(), self.output_tokens()) else {
            return;
        };
        self.hub
            .limiter
            .charge(&key.id, key.tokens_per_minute, tokens);
        let name = key.name;
        self.hub
            .traffic
            .key_used(crate::traffic::unix_ms(), &name, |u| {
                u.completion_tokens += tokens
            });
        self.hub
            .metrics
            .key_completion_tokens
            .get_or_create(&KeyLabels { key: name })
            .inc_by(tokens);
    }

    fn finish(&mut self, complete: bool) {
        if self.done {
            return;
        }
        self.done = true;
        self.count_usage();
        let Some(mut guard) = self.guard.take() else {
            return;
        };
        if self.out_of_room {
            guard.overloaded();
        } else if complete && !self.upstream_failed {
            guard.succeed();
        } else {
            guard.fail();
        }
        drop(guard);
        self.observe(if complete { "complete" } else { "broken" });
    }

    fn observe(&self, outcome: &str) {
        let latency = self.served.arrived.elapsed();
        self.hub
            .metrics
            .latency
            .get_or_create(&ModelLabels {
                model: self.served.model.clone(),
            })
            .observe(latency.as_secs_f64());
        self.hub.traffic.finished(
            crate::traffic::unix_ms(),
            &self.served.backend,
            &self.served.model,
            latency,
            self.output_tokens(),
        );
        self.served.log(outcome);
    }

    /// Ends the answer after a failure past the first byte: an SSE stream
    /// gets an error event, any other body is aborted.
    fn broken(&mut self, reason: String) -> Polled {
        self.finish(false);
        self.hub
            .metrics
            .stream_errors
            .get_or_create(&BackendLabels {
                backend: self.served.backend.clone(),
            })
            .inc();
        tracing::warn!(backend = %self.served.backend, model = %crate::error::echo(&self.served.model), %reason, "answer broke after its first byte");
        if self.sse {
            Poll::Ready(Some(Ok(Frame::data(error_event(&reason, self.errors)))))
        } else {
            Poll::Ready(Some(Err(reason.into())))
        }
    }

    /// A frame from upstream, passed on; the answer is complete when it was
    /// the last.
    fn pass(&mut self, frame: Frame<Bytes>) -> Polled {
        self.idle_timer.as_mut().reset(Instant::now() + self.idle);
        if let Some(data) = frame.data_ref() {
            self.sniff(data);
            self.usage.feed(data);
            // A stream's error event: a server that ran out of room part-way
            // is overloaded (llama.cpp's shared context filled up).
            if self.usage.saw_error() && drover_backends::overload::out_of_room(data) {
                self.out_of_room = true;
            }
        }
        if http_body::Body::is_end_stream(&self.inner) {
            self.finish(true);
        }
        Poll::Ready(Some(Ok(frame)))
    }
}

/// An SSE error event in the stream's own API shape, as streams end on
/// failures.
pub(crate) fn error_event(reason: &str, errors: ErrorFormat) -> Bytes {
    let err = ApiError::Upstream {
        message: format!("the backend's stream broke: {reason}"),
    };
    Bytes::from(err.sse_event(errors))
}

impl PassThrough {
    /// Looks for a Responses answer's id in bytes on their way out.
    fn sniff(&mut self, bytes: &[u8]) {
        if let Some((backend, sniffer)) = &mut self.owner
            && let Some(id) = sniffer.feed(bytes)
        {
            self.hub.response_owners.record(&id, *backend);
            self.owner = None;
        }
    }
}

impl http_body::Body for PassThrough {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Polled {
        let this = &mut *self;
        if let Some(first) = this.first.take() {
            this.sniff(&first);
            return Poll::Ready(Some(Ok(Frame::data(first))));
        }
        if this.done {
            return Poll::Ready(None);
        }
        if let Some(stop) = &mut this.stop
            && stop.as_mut().poll(cx).is_ready()
        {
            return this.broken("the hub is shutting down".into());
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => this.pass(frame),
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
        // Dropped before the end: the client went away, which says nothing
        // about the backend (unless its 5xx already did). Dropping `inner`
        // closes the upstream connection, which cancels the backend's work
        // once it notices; the guard, left without an outcome, keeps the
        // slot for the cancel grace until then.
        if let Some(mut guard) = self.guard.take() {
            if self.upstream_failed {
                guard.fail();
            }
            drop(guard);
            self.count_usage();
            self.observe("client_gone");
        }
    }
}
