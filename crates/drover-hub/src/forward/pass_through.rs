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

use bytes::{Bytes, BytesMut};
use drover_core::BackendId;
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use tokio::time::{Instant, Sleep};
use tokio_util::sync::WaitForCancellationFutureOwned;

use super::Forwarder;
use crate::continuations::IdSniffer;
use crate::dispatcher::SlotGuard;
use crate::error::{ApiError, ErrorFormat};
use crate::observe::{Ending, Pair, Served};
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

/// An answer's body: an `http_body::Body` that a caller streams or
/// collects; it holds the request's slot until its last byte.
pub struct AnswerBody {
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
    /// Since the last bytes: made the first time upstream keeps the body
    /// waiting, so an answer that comes whole never sets a timer.
    idle_timer: Option<Pin<Box<Sleep>>>,
    /// When the last bytes came.
    last_bytes: Instant,
    /// SSE only: resolves when the hub's shutdown grace is over, so the
    /// stream ends with an error event rather than a cut connection.
    stop: Option<Pin<Box<WaitForCancellationFutureOwned>>>,
    fwd: Forwarder,
    pair: Arc<Pair>,
    served: Served,
    done: bool,
    /// Read and not yet passed on: what arrives together goes out as one.
    out: Coalesced,
    /// Rounds in a row the held bytes have waited with nothing new.
    idle_rounds: u32,
    /// Met while coalescing, after bytes that go out first.
    held_frame: Option<Frame<Bytes>>,
    held_error: Option<String>,
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

/// The most bytes that frames ready at once are coalesced into.
const COALESCE: usize = 64 * 1024;

/// Scheduler rounds in a row that held bytes wait with nothing new before
/// they go out. One let about half the chunks of a zero-latency stream
/// through alone (52 µs of CPU a streamed request against 43.5 with two,
/// bench/overhead.sh --stream); more bring nothing.
const HOLD_ROUNDS: u32 = 2;

/// Frames ready at once, as one: the first kept as it came, copied only
/// when a second joins it.
#[derive(Default)]
struct Coalesced {
    first: Option<Bytes>,
    more: Option<BytesMut>,
}

impl Coalesced {
    fn push(&mut self, data: Bytes) {
        if data.is_empty() {
            return;
        }
        match (&self.first, &mut self.more) {
            (None, _) => self.first = Some(data),
            (Some(_), Some(more)) => more.extend_from_slice(&data),
            (Some(first), None) => {
                let mut more = BytesMut::with_capacity(first.len() + data.len() * 4);
                more.extend_from_slice(first);
                more.extend_from_slice(&data);
                self.more = Some(more);
            }
        }
    }

    fn len(&self) -> usize {
        match (&self.first, &self.more) {
            (_, Some(more)) => more.len(),
            (Some(first), None) => first.len(),
            (None, None) => 0,
        }
    }

    fn is_empty(&self) -> bool {
        self.first.is_none()
    }

    fn into_bytes(self) -> Option<Bytes> {
        match self.more {
            Some(more) => Some(more.freeze()),
            None => self.first,
        }
    }
}

/// How far into a Responses answer its id is looked for.
const ID_WINDOW: usize = 64 * 1024;

impl AnswerBody {
    pub(super) fn new(
        fwd: Forwarder,
        mut guard: SlotGuard,
        upstream: Upstream,
        pair: Arc<Pair>,
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
        let shared = fwd.shared();
        let idle = shared.upstream.idle_timeout;
        let stop = sse.then(|| Box::pin(shared.streams_stop.clone().cancelled_owned()));
        let mut body = AnswerBody {
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
            idle_timer: None,
            last_bytes: Instant::now(),
            stop,
            fwd,
            pair,
            served,
            done: false,
            out: Coalesced::default(),
            idle_rounds: 0,
            held_frame: None,
            held_error: None,
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
        let shared = self.fwd.shared();
        let remote = self
            .guard
            .as_mut()
            .is_some_and(|g| g.charge_remotely(&key.id, key.tokens_per_minute, tokens));
        if !remote {
            shared
                .limiter
                .charge(&key.id, key.tokens_per_minute, tokens);
        }
        shared.observer.key_charged(&key.name, tokens);
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
        self.observe(if complete {
            Ending::Complete
        } else {
            Ending::Broken
        });
    }

    fn observe(&self, ending: Ending) {
        self.fwd
            .shared()
            .observer
            .finished(&self.pair, &self.served, self.output_tokens(), ending);
    }

    /// Ends the answer after a failure past the first byte: an SSE stream
    /// gets an error event, any other body is aborted.
    fn broken(&mut self, reason: String) -> Polled {
        self.finish(false);
        self.fwd.shared().observer.stream_broke(&self.pair, &reason);
        if self.sse {
            Poll::Ready(Some(Ok(Frame::data(error_event(&reason, self.errors)))))
        } else {
            Poll::Ready(Some(Err(reason.into())))
        }
    }

    /// Bytes from upstream on their way out: read for the key's usage, a
    /// Responses id and a stream's error event; the answer is complete when
    /// they were the last.
    fn took(&mut self, data: &[u8]) {
        self.sniff(data);
        self.usage.feed(data);
        // A stream's error event: a server that ran out of room part-way
        // is overloaded (llama.cpp's shared context filled up).
        if self.usage.saw_error() && drover_backends::overload::out_of_room(data) {
            self.out_of_room = true;
        }
        if http_body::Body::is_end_stream(&self.inner) {
            self.finish(true);
        }
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

impl AnswerBody {
    /// Looks for a Responses answer's id in bytes on their way out.
    fn sniff(&mut self, bytes: &[u8]) {
        if let Some((backend, sniffer)) = &mut self.owner
            && let Some(id) = sniffer.feed(bytes)
        {
            self.fwd.shared().owners.record(&id, *backend);
            self.owner = None;
        }
    }
}

impl http_body::Body for AnswerBody {
    type Data = Bytes;
    type Error = BoxError;

    /// Passes on what upstream sent, coalescing what arrives together into
    /// one frame (up to [`COALESCE`] bytes). A backend's chunks reach the
    /// body one at a time (hyper's connection task decodes the next only
    /// once this one is taken, a round of the scheduler later), so after a
    /// chunk the body yields its turn, up to [`HOLD_ROUNDS`] rounds in a row
    /// that bring nothing new, before it writes: a zero-latency server's
    /// whole stream, which arrives in one read, goes out in a write or two
    /// instead of a system call per chunk (bench/overhead.sh --stream).
    /// Nothing waits for bytes that have not arrived: a yielded round is
    /// microseconds, no timer is involved, and a stream whose tokens come
    /// apart goes out chunk by chunk as before.
    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Polled {
        let this = &mut *self;
        if this.out.is_empty() {
            if let Some(reason) = this.held_error.take() {
                return this.broken(reason);
            }
            if let Some(frame) = this.held_frame.take() {
                return Poll::Ready(Some(Ok(frame)));
            }
        }
        if let Some(first) = this.first.take() {
            this.sniff(&first);
            this.out.push(first);
        }
        if this.out.is_empty()
            && !this.done
            && let Some(stop) = &mut this.stop
            && stop.as_mut().poll(cx).is_ready()
        {
            return this.broken("the hub is shutting down".into());
        }
        let mut fresh = false;
        while !this.done && this.out.len() < COALESCE {
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => {
                        this.took(&data);
                        this.out.push(data);
                        this.idle_rounds = 0;
                        fresh = true;
                    }
                    // Trailers: after what was read, as they came.
                    Err(frame) if this.out.is_empty() => return Poll::Ready(Some(Ok(frame))),
                    Err(frame) => {
                        this.held_frame = Some(frame);
                        break;
                    }
                },
                Poll::Ready(Some(Err(e))) if this.out.is_empty() => {
                    return this.broken(e.to_string());
                }
                Poll::Ready(Some(Err(e))) => {
                    this.held_error = Some(e.to_string());
                    break;
                }
                Poll::Ready(None) => this.finish(true),
                Poll::Pending if this.out.is_empty() => {
                    let idle_until = this.last_bytes + this.idle;
                    let timer = this
                        .idle_timer
                        .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(idle_until)));
                    if timer.deadline() != idle_until {
                        timer.as_mut().reset(idle_until);
                    }
                    return match timer.as_mut().poll(cx) {
                        Poll::Ready(()) => {
                            let idle = this.idle;
                            this.broken(format!("no data for {idle:?}"))
                        }
                        Poll::Pending => Poll::Pending,
                    };
                }
                // Let the connection's task decode what else has arrived
                // before it all goes out at once: it hands over a chunk
                // every round or two.
                Poll::Pending if fresh || this.idle_rounds < HOLD_ROUNDS => {
                    if !fresh {
                        this.idle_rounds += 1;
                    }
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                Poll::Pending => break,
            }
        }
        match std::mem::take(&mut this.out).into_bytes() {
            Some(data) => {
                if !this.done {
                    this.last_bytes = Instant::now();
                }
                Poll::Ready(Some(Ok(Frame::data(data))))
            }
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done
            && self.first.is_none()
            && self.out.is_empty()
            && self.held_frame.is_none()
            && self.held_error.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        if self.sse {
            return SizeHint::default();
        }
        let inner = self.inner.size_hint();
        let pending = self.first.as_ref().map_or(0, |f| f.len() as u64) + self.out.len() as u64;
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

impl Drop for AnswerBody {
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
            self.observe(Ending::ClientGone);
        }
    }
}
