//! The one place where errors become HTTP: every error drover answers has
//! the OpenAI shape `{"error":{"message","type","param","code"}}` and the
//! status an OpenAI client expects, except on the Anthropic Messages paths,
//! where it has Anthropic's shape `{"type":"error","error":{"type",
//! "message"}}` and the status an Anthropic client expects
//! ([`ApiError::into_response_as`]).

use std::time::Duration;

use axum::response::{IntoResponse, Response};
use drover_proto::openai::{ErrorBody, ErrorDetail};
use http::{HeaderValue, StatusCode, header};

#[derive(Debug, Clone, thiserror::Error)]
pub enum ApiError {
    #[error("{message}")]
    BadRequest {
        message: String,
        param: Option<&'static str>,
        code: &'static str,
    },
    #[error("request body is larger than the limit of {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("the request body did not arrive within {} s", limit.as_secs_f64())]
    RequestTimeout { limit: Duration },
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error(
        "the model '{}' does not exist or no backend serves it{}",
        echo(model),
        did_you_mean(closest)
    )]
    ModelNotFound {
        model: String,
        /// The fleet's models closest to it, closest first.
        closest: Vec<String>,
    },
    #[error("{message}")]
    NotFound { message: String },
    #[error("too many requests are waiting; retry after {} s", retry_after.as_secs())]
    QueueFull { retry_after: Duration },
    /// A key's own limit.
    #[error("{message}; retry after {} s", retry_after.as_secs().max(1))]
    RateLimited {
        message: String,
        retry_after: Duration,
    },
    /// Every backend with it is down, recovering or draining; one may take
    /// work again in about `retry_after`.
    #[error("every backend serving '{}' is down, recovering or draining; retry in about {} s", echo(model), retry_after.as_millis().div_ceil(1000).max(1))]
    NoHealthyBackend {
        model: String,
        retry_after: Duration,
    },
    /// The server ran out of room for the request even with nothing else
    /// running there: it does not fit the model's context. The server's
    /// own words.
    #[error("{message}")]
    ContextLengthExceeded { message: String },
    /// No answering backend lists the model, but some backends have never
    /// answered: one of them may well serve it.
    #[error(
        "no answering backend serves '{}', and {} not answered yet: {}",
        echo(model),
        if backends.len() == 1 { "this backend has" } else { "these backends have" },
        backends.join(", ")
    )]
    Unreachable {
        model: String,
        backends: Vec<String>,
        /// Their next probe: when what they serve may be known.
        retry_after: Duration,
    },
    #[error("no backend slot for '{}' became free within {} s", echo(model), waited.as_secs_f64().round())]
    QueueTimeout { model: String, waited: Duration },
    #[error("no backend serves '{}' any more", echo(model))]
    ModelGone { model: String },
    #[error(
        "no backend with '{}' serves {path} (backends with it: {}); a backend that serves it \
         can say so in its config",
        echo(model),
        others.join(", ")
    )]
    ApiNotServed {
        model: String,
        path: &'static str,
        /// The backends that list the model (and do not serve the path).
        others: Vec<String>,
    },
    /// The request waited out its time while its model was loading.
    #[error(
        "the model '{}' is still loading on backend '{backend}'{}; retry in about {} s",
        echo(model),
        progress.map(|p| format!(" ({:.0}% done)", p * 100.0)).unwrap_or_default(),
        retry_after.as_secs().max(1)
    )]
    ModelLoading {
        model: String,
        backend: String,
        progress: Option<f32>,
        retry_after: Duration,
    },
    /// Loading the model failed; no new attempt before `retry_after`.
    #[error(
        "the model '{}' could not be loaded on backend '{backend}': {message}",
        echo(model)
    )]
    LoadFailed {
        model: String,
        backend: String,
        message: String,
        retry_after: Option<Duration>,
    },
    #[error(
        "the model '{}' ({}) needs {} of memory with its slots, but the largest backend that \
         lists it has {}",
        echo(model),
        drover_core::size::gigabytes(*size),
        drover_core::size::gigabytes(*needs),
        drover_core::size::gigabytes(*largest)
    )]
    NeverFits {
        model: String,
        size: u64,
        needs: u64,
        largest: u64,
    },
    #[error("{message}")]
    Upstream { message: String },
    #[error("the hub is shutting down")]
    ShuttingDown,
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    MethodNotAllowed(String),
    /// The hub itself failed (its disk, say).
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    pub fn bad_request(
        message: impl Into<String>,
        param: Option<&'static str>,
        code: &'static str,
    ) -> Self {
        ApiError::BadRequest {
            message: message.into(),
            param,
            code,
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest { .. } | ApiError::NeverFits { .. } => StatusCode::BAD_REQUEST,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::RequestTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::ModelNotFound { .. }
            | ApiError::NotFound { .. }
            | ApiError::ApiNotServed { .. } => StatusCode::NOT_FOUND,
            ApiError::ContextLengthExceeded { .. } => StatusCode::BAD_REQUEST,
            ApiError::QueueFull { .. } | ApiError::RateLimited { .. } => {
                StatusCode::TOO_MANY_REQUESTS
            }
            ApiError::NoHealthyBackend { .. }
            | ApiError::Unreachable { .. }
            | ApiError::QueueTimeout { .. }
            | ApiError::ModelGone { .. }
            | ApiError::ModelLoading { .. }
            | ApiError::LoadFailed { .. }
            | ApiError::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Upstream { .. } => StatusCode::BAD_GATEWAY,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The OpenAI `type` and drover's `code` for the error.
    fn kind_and_code(&self) -> (&'static str, Option<&'static str>) {
        match self {
            ApiError::BadRequest { code, .. } => ("invalid_request_error", Some(code)),
            ApiError::PayloadTooLarge { .. } => {
                ("invalid_request_error", Some("request_too_large"))
            }
            ApiError::RequestTimeout { .. } => ("invalid_request_error", Some("request_timeout")),
            ApiError::UnsupportedMediaType(_) => {
                ("invalid_request_error", Some("unsupported_media_type"))
            }
            ApiError::ModelNotFound { .. } => ("invalid_request_error", Some("model_not_found")),
            ApiError::ContextLengthExceeded { .. } => {
                ("invalid_request_error", Some("context_length_exceeded"))
            }
            ApiError::NotFound { .. } => ("invalid_request_error", Some("not_found")),
            ApiError::ApiNotServed { .. } => ("invalid_request_error", Some("api_not_served")),
            ApiError::QueueFull { .. } => ("rate_limit_error", Some("queue_full")),
            ApiError::RateLimited { .. } => ("rate_limit_error", Some("rate_limited")),
            ApiError::NoHealthyBackend { .. } | ApiError::Unreachable { .. } => {
                ("server_error", Some("no_healthy_backend"))
            }
            ApiError::QueueTimeout { .. } => ("server_error", Some("queue_timeout")),
            ApiError::ModelGone { .. } => ("server_error", Some("model_unavailable")),
            ApiError::ModelLoading { .. } => ("server_error", Some("model_loading")),
            ApiError::LoadFailed { .. } => ("server_error", Some("model_load_failed")),
            ApiError::NeverFits { .. } => ("invalid_request_error", Some("model_does_not_fit")),
            ApiError::Upstream { .. } => ("server_error", Some("upstream_error")),
            ApiError::ShuttingDown => ("server_error", Some("shutting_down")),
            ApiError::Unauthorized(_) => ("authentication_error", Some("invalid_api_key")),
            ApiError::Forbidden(_) => ("permission_error", Some("forbidden")),
            ApiError::Conflict(_) => ("invalid_request_error", Some("conflict")),
            ApiError::MethodNotAllowed(_) => ("invalid_request_error", Some("method_not_allowed")),
            ApiError::Internal(_) => ("server_error", Some("internal_error")),
        }
    }

    fn param(&self) -> Option<&'static str> {
        match self {
            ApiError::BadRequest { param, .. } => *param,
            ApiError::ModelNotFound { .. } | ApiError::NeverFits { .. } => Some("model"),
            ApiError::ContextLengthExceeded { .. } => Some("messages"),
            _ => None,
        }
    }

    pub fn body(&self) -> ErrorBody {
        let (kind, code) = self.kind_and_code();
        ErrorBody {
            error: ErrorDetail {
                message: self.to_string(),
                kind: kind.to_string(),
                param: self.param().map(str::to_string),
                code: code.map(str::to_string),
            },
        }
    }

    pub fn code(&self) -> &'static str {
        self.kind_and_code().1.unwrap_or("error")
    }

    /// The status and `error.type` an Anthropic client expects: Anthropic
    /// answers an overloaded service with 529 and any other server-side
    /// failure with 500 `api_error`.
    fn anthropic_status_and_kind(&self) -> (StatusCode, &'static str) {
        let status = self.status();
        let kind = match status.as_u16() {
            401 => "authentication_error",
            403 => "permission_error",
            404 => "not_found_error",
            413 => "request_too_large",
            429 => "rate_limit_error",
            503 => return (OVERLOADED, "overloaded_error"),
            500..=599 => return (StatusCode::INTERNAL_SERVER_ERROR, "api_error"),
            _ => "invalid_request_error",
        };
        (status, kind)
    }

    pub fn anthropic_body(&self) -> drover_proto::anthropic::ErrorBody {
        let (_, kind) = self.anthropic_status_and_kind();
        drover_proto::anthropic::ErrorBody::new(kind, self.to_string())
    }

    /// The response in the shape `format` asks for.
    pub fn into_response_as(self, format: ErrorFormat) -> Response {
        match format {
            ErrorFormat::OpenAi | ErrorFormat::Responses => self.into_response(),
            ErrorFormat::Anthropic => {
                let (status, _) = self.anthropic_status_and_kind();
                let body = serde_json::to_vec(&self.anthropic_body()).unwrap_or_default();
                finish(self, status, body)
            }
        }
    }

    /// The error as one SSE event of a stream already under way, in the
    /// shape of the stream's API.
    pub fn sse_event(&self, format: ErrorFormat) -> Vec<u8> {
        match format {
            ErrorFormat::OpenAi => {
                let mut event = b"data: ".to_vec();
                event.extend(serde_json::to_vec(&self.body()).unwrap_or_default());
                event.extend_from_slice(b"\n\n");
                event
            }
            ErrorFormat::Anthropic => {
                let mut event = b"event: error\ndata: ".to_vec();
                event.extend(serde_json::to_vec(&self.anthropic_body()).unwrap_or_default());
                event.extend_from_slice(b"\n\n");
                event
            }
            ErrorFormat::Responses => {
                let body = self.body();
                let event = serde_json::json!({
                    "type": "error",
                    "code": body.error.code,
                    "message": body.error.message,
                    "param": body.error.param,
                });
                let mut out = b"event: error\ndata: ".to_vec();
                out.extend(serde_json::to_vec(&event).unwrap_or_default());
                out.extend_from_slice(b"\n\n");
                out
            }
        }
    }
}

/// Anthropic's "overloaded" status.
const OVERLOADED: StatusCode = match StatusCode::from_u16(529) {
    Ok(s) => s,
    Err(_) => StatusCode::SERVICE_UNAVAILABLE,
};

/// Which API's error shape a path answers in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorFormat {
    OpenAi,
    /// The Responses API: errors before the answer as OpenAI's; its streams
    /// end with its own `error` event.
    Responses,
    Anthropic,
}

/// Longest piece of client input repeated back in an error or a log line.
const ECHO_LIMIT: usize = 200;

/// Client input as it may be repeated: whole if short, else its start and
/// its length, so a 4 MB model name costs a 4 MB request, not a 4 MB answer
/// and a 4 MB log line.
pub fn echo(text: &str) -> std::borrow::Cow<'_, str> {
    if text.len() <= ECHO_LIMIT {
        return text.into();
    }
    let mut end = ECHO_LIMIT;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}... ({} bytes)", &text[..end], text.len()).into()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let body = serde_json::to_vec(&self.body()).unwrap_or_default();
        finish(self, status, body)
    }
}

/// The response for `err` with its status and body, and `Retry-After`
/// where there is one to give.
fn finish(err: ApiError, status: StatusCode, body: Vec<u8>) -> Response {
    let mut resp = (status, body).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    let retry_after = match &err {
        ApiError::QueueFull { retry_after }
        | ApiError::ModelLoading { retry_after, .. }
        | ApiError::RateLimited { retry_after, .. }
        | ApiError::NoHealthyBackend { retry_after, .. }
        | ApiError::Unreachable { retry_after, .. } => Some(*retry_after),
        ApiError::LoadFailed { retry_after, .. } => *retry_after,
        _ => None,
    };
    if let Some(retry_after) = retry_after {
        // Rounded up: a client that comes back on time is not turned away.
        let secs = retry_after.as_millis().div_ceil(1000).max(1);
        if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
            resp.headers_mut().insert(header::RETRY_AFTER, v);
        }
    }
    resp
}

/// "; did you mean 'a' or 'b'?", for the models closest to one nobody
/// serves; nothing when none is close.
fn did_you_mean(closest: &[String]) -> String {
    let quoted: Vec<String> = closest.iter().map(|m| format!("'{}'", echo(m))).collect();
    match quoted.as_slice() {
        [] => String::new(),
        [one] => format!("; did you mean {one}?"),
        [init @ .., last] => format!("; did you mean {} or {last}?", init.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_has_the_openai_shape_and_the_expected_status() {
        let cases: Vec<(ApiError, u16, &str)> = vec![
            (
                ApiError::bad_request("bad", Some("model"), "missing_model"),
                400,
                "invalid_request_error",
            ),
            (
                ApiError::PayloadTooLarge { limit: 10 },
                413,
                "invalid_request_error",
            ),
            (
                ApiError::ModelNotFound {
                    model: "m".into(),
                    closest: Vec::new(),
                },
                404,
                "invalid_request_error",
            ),
            (
                ApiError::QueueFull {
                    retry_after: Duration::from_secs(3),
                },
                429,
                "rate_limit_error",
            ),
            (
                ApiError::QueueTimeout {
                    model: "m".into(),
                    waited: Duration::from_secs(60),
                },
                503,
                "server_error",
            ),
            (
                ApiError::Upstream {
                    message: "x".into(),
                },
                502,
                "server_error",
            ),
        ];
        for (err, status, kind) in cases {
            assert_eq!(err.status().as_u16(), status, "{err:?}");
            let body = serde_json::to_value(err.body()).unwrap();
            assert_eq!(body["error"]["type"], kind);
            assert!(!body["error"]["message"].as_str().unwrap().is_empty());
            assert!(body["error"].get("param").is_some());
            assert!(body["error"]["code"].is_string());
        }
    }

    #[test]
    fn client_input_is_echoed_short() {
        let long = "é".repeat(300_000);
        let err = ApiError::ModelNotFound {
            model: long,
            closest: Vec::new(),
        };
        let message = err.to_string();
        assert!(message.len() < 400, "{} bytes", message.len());
        assert!(message.contains("(600000 bytes)"), "{message}");
        assert_eq!(echo("short"), "short");
    }

    #[test]
    fn queue_full_says_when_to_retry() {
        let resp = ApiError::QueueFull {
            retry_after: Duration::from_secs(7),
        }
        .into_response();
        assert_eq!(resp.headers()[header::RETRY_AFTER], "7");
    }

    #[test]
    fn anthropic_errors_have_its_shape_and_statuses() {
        let cases: Vec<(ApiError, u16, &str)> = vec![
            (
                ApiError::bad_request("bad", None, "invalid_json"),
                400,
                "invalid_request_error",
            ),
            (
                ApiError::ModelNotFound {
                    model: "m".into(),
                    closest: Vec::new(),
                },
                404,
                "not_found_error",
            ),
            (
                ApiError::QueueFull {
                    retry_after: Duration::from_secs(2),
                },
                429,
                "rate_limit_error",
            ),
            (
                ApiError::NoHealthyBackend {
                    model: "m".into(),
                    retry_after: Duration::from_secs(2),
                },
                529,
                "overloaded_error",
            ),
            (
                ApiError::Upstream {
                    message: "x".into(),
                },
                500,
                "api_error",
            ),
            (
                ApiError::Unauthorized("no".into()),
                401,
                "authentication_error",
            ),
        ];
        for (err, status, kind) in cases {
            let resp = err.clone().into_response_as(ErrorFormat::Anthropic);
            assert_eq!(resp.status().as_u16(), status, "{err:?}");
            let body = serde_json::to_value(err.anthropic_body()).unwrap();
            assert_eq!(body["type"], "error");
            assert_eq!(body["error"]["type"], kind, "{err:?}");
            assert!(!body["error"]["message"].as_str().unwrap().is_empty());
        }
    }

    #[test]
    fn stream_error_events_speak_each_api() {
        let err = ApiError::Upstream {
            message: "broke".into(),
        };
        let openai = String::from_utf8(err.sse_event(ErrorFormat::OpenAi)).unwrap();
        assert!(openai.starts_with("data: {\"error\""), "{openai}");
        let anthropic = String::from_utf8(err.sse_event(ErrorFormat::Anthropic)).unwrap();
        assert!(
            anthropic.starts_with("event: error\ndata: {\"type\":\"error\""),
            "{anthropic}"
        );
        let responses = String::from_utf8(err.sse_event(ErrorFormat::Responses)).unwrap();
        assert!(
            responses.starts_with("event: error\ndata: {"),
            "{responses}"
        );
        assert!(responses.contains("\"type\":\"error\""), "{responses}");
        for e in [openai, anthropic, responses] {
            assert!(e.ends_with("\n\n"));
        }
    }
}
