use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderValue};
use http::{Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use serde::Serialize;

use crate::connection::Sever;
use crate::guard::Running;
use crate::stream::TokenStream;

/// Every response body the simulator sends. One concrete type, so the
/// service needs no boxing for the common, non-streamed case.
#[derive(Debug)]
pub(crate) struct SimBody(Kind);

#[derive(Debug)]
enum Kind {
    Full(Option<Bytes>),
    Tokens(Box<TokenStream>),
    /// Headers only, then the connection dies.
    Severed(Option<(Sever, Running)>),
}

impl SimBody {
    pub(crate) fn full(bytes: impl Into<Bytes>) -> Self {
        SimBody(Kind::Full(Some(bytes.into())))
    }

    pub(crate) fn tokens(stream: TokenStream) -> Self {
        SimBody(Kind::Tokens(Box::new(stream)))
    }

    pub(crate) fn severed(sever: Sever, running: Running) -> Self {
        SimBody(Kind::Severed(Some((sever, running))))
    }
}

impl Body for SimBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match &mut self.get_mut().0 {
            Kind::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Kind::Tokens(stream) => stream
                .poll_next(cx)
                .map(|chunk| chunk.map(|b| Ok(Frame::data(b)))),
            Kind::Severed(sever) => {
                // hyper flushes the headers when the body first goes pending,
                // before the connection task sees the kill and drops the
                // socket, so the client gets the headers and nothing else.
                if let Some((sever, running)) = sever.take() {
                    sever.sever(running);
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.0 {
            Kind::Full(bytes) => bytes.is_none(),
            Kind::Tokens(stream) => stream.is_done(),
            Kind::Severed(_) => false,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.0 {
            Kind::Full(Some(bytes)) => SizeHint::with_exact(bytes.len() as u64),
            Kind::Full(None) => SizeHint::with_exact(0),
            Kind::Tokens(_) | Kind::Severed(_) => SizeHint::default(),
        }
    }
}

pub(crate) fn json_response(status: StatusCode, value: &impl Serialize) -> Response<SimBody> {
    match serde_json::to_vec(value) {
        Ok(json) => with_content_type(status, SimBody::full(json), "application/json"),
        // The simulator's own wire types always serialize; this is only here
        // so a mistake in them shows as a 500 rather than a panic.
        Err(_) => with_content_type(
            StatusCode::INTERNAL_SERVER_ERROR,
            SimBody::full(Bytes::from_static(
                br#"{"error":{"message":"response serialization failed","type":"server_error","param":null,"code":null}}"#,
            )),
            "application/json",
        ),
    }
}

pub(crate) fn sse_response(body: SimBody) -> Response<SimBody> {
    let mut response = with_content_type(StatusCode::OK, body, "text/event-stream");
    response
        .headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

pub(crate) fn with_content_type(
    status: StatusCode,
    body: SimBody,
    content_type: &'static str,
) -> Response<SimBody> {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}
