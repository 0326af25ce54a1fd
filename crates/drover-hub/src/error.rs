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

use crate::forward::ForwardError;
use crate::forward::ForwardError as F;

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
    #[error("{message}")]
    NotFound { message: String },
    /// A backend failed a management call (a load, an unload).
    #[error("{message}")]
    Upstream { message: String },
    /// Forwarding produced no answer (the domain's own error).
    #[error(transparent)]
    Forward(#[from] ForwardError),
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
    /// The job store failed, or is away.
    #[error("{0}")]
    Store(std::sync::Arc<drover_store::StoreError>),
    /// A model's plan that cannot be run: the answer is attached, as the
    /// plan kept with why.
    #[error("{message}")]
    PlanRefused {
        message: String,
        plan: Box<drover_proto::workers::PlanView>,
    },
    /// The hub keeps no job store.
    #[error(
        "this hub keeps no jobs: it has no data directory and no database (set data_dir or \
         database_url, or pass --data-dir or --database-url)"
    )]
    NoStore,
}

impl From<drover_store::StoreError> for ApiError {
    fn from(e: drover_store::StoreError) -> Self {
        ApiError::Store(std::sync::Arc::new(e))
    }
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
            ApiError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::RequestTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::NotFound { .. } => StatusCode::NOT_FOUND,
            ApiError::Upstream { .. } => StatusCode::BAD_GATEWAY,
            ApiError::Forward(f) => forward_status(f),
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::Store(e) => store_status(e),
            ApiError::NoStore => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::PlanRefused { .. } => StatusCode::UNPROCESSABLE_ENTITY,
        }
    }

    /// The OpenAI `type` and drover's `code` for the error.
    fn kind_and_code(&self) -> (&'static str, &'static str) {
        match self {
            ApiError::BadRequest { code, .. } => ("invalid_request_error", code),
            ApiError::PayloadTooLarge { .. } => ("invalid_request_error", "request_too_large"),
            ApiError::RequestTimeout { .. } => ("invalid_request_error", "request_timeout"),
            ApiError::UnsupportedMediaType(_) => {
                ("invalid_request_error", "unsupported_media_type")
            }
            ApiError::NotFound { .. } => ("invalid_request_error", "not_found"),
            ApiError::Upstream { .. } => ("server_error", "upstream_error"),
            ApiError::Forward(f) => forward_kind_and_code(f),
            ApiError::Unauthorized(_) => ("authentication_error", "invalid_api_key"),
            ApiError::Forbidden(_) => ("permission_error", "forbidden"),
            ApiError::Conflict(_) => ("invalid_request_error", "conflict"),
            ApiError::MethodNotAllowed(_) => ("invalid_request_error", "method_not_allowed"),
            ApiError::Internal(_) => ("server_error", "internal_error"),
            ApiError::Store(e) if e.is_unavailable() => ("server_error", "store_unavailable"),
            ApiError::Store(e) if matches!(**e, drover_store::StoreError::Full(_)) => {
                ("server_error", "store_full")
            }
            ApiError::Store(_) => ("server_error", "store_error"),
            ApiError::NoStore => ("server_error", "no_store"),
            ApiError::PlanRefused { .. } => ("invalid_request_error", "invalid_plan"),
        }
    }

    fn param(&self) -> Option<&'static str> {
        match self {
            ApiError::BadRequest { param, .. } | ApiError::Forward(F::Invalid { param, .. }) => {
                *param
            }
            ApiError::Forward(F::ModelNotFound { .. } | F::NeverFits { .. }) => Some("model"),
            ApiError::Forward(F::ContextLengthExceeded { .. }) => Some("messages"),
            _ => None,
        }
    }

    /// What a job stores for this refusal: its status and its body in the
    /// OpenAI shape.
    pub fn stored(&self) -> (StatusCode, Vec<u8>) {
        (
            self.status(),
            serde_json::to_vec(&self.body()).unwrap_or_default(),
        )
    }

    pub fn body(&self) -> ErrorBody {
        let (kind, code) = self.kind_and_code();
        ErrorBody {
            error: ErrorDetail {
                message: self.to_string(),
                kind: kind.to_string(),
                param: self.param().map(str::to_string),
                code: Some(code.to_string()),
            },
        }
    }

    pub fn code(&self) -> &'static str {
        self.kind_and_code().1
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

    /// The status a client of `format`'s API hears.
    pub fn status_as(&self, format: ErrorFormat) -> StatusCode {
        match format {
            ErrorFormat::OpenAi | ErrorFormat::Responses => self.status(),
            ErrorFormat::Anthropic => self.anthropic_status_and_kind().0,
        }
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
        let body = match &self {
            // The OpenAI shape, with the refused plan beside the error.
            ApiError::PlanRefused { plan, .. } => serde_json::to_vec(&serde_json::json!({
                "error": self.body().error,
                "plan": plan,
            })),
            _ => serde_json::to_vec(&self.body()),
        };
        finish(self, status, body.unwrap_or_default())
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
        ApiError::Forward(f) => f.retry_after(),
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

/// The status of a forwarding error.
fn forward_status(f: &F) -> StatusCode {
    match f {
        F::Invalid { .. } | F::NeverFits { .. } | F::ContextLengthExceeded { .. } => {
            StatusCode::BAD_REQUEST
        }
        F::ModelNotFound { .. } | F::ApiNotServed { .. } => StatusCode::NOT_FOUND,
        F::QueueFull { .. } | F::KeyLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
        F::KeyForbidden(_) => StatusCode::FORBIDDEN,
        F::NoHealthyBackend { .. }
        | F::Unreachable { .. }
        | F::QueueTimeout { .. }
        | F::ModelGone { .. }
        | F::ModelLoading { .. }
        | F::LoadFailed { .. }
        | F::ShuttingDown
        | F::NoLeader { .. } => StatusCode::SERVICE_UNAVAILABLE,
        F::Upstream { .. } => StatusCode::BAD_GATEWAY,
    }
}

/// The OpenAI `type` and drover's `code` of a forwarding error.
fn forward_kind_and_code(f: &F) -> (&'static str, &'static str) {
    match f {
        F::Invalid { code, .. } => ("invalid_request_error", code),
        F::ModelNotFound { .. } => ("invalid_request_error", "model_not_found"),
        F::ContextLengthExceeded { .. } => ("invalid_request_error", "context_length_exceeded"),
        F::ApiNotServed { .. } => ("invalid_request_error", "api_not_served"),
        F::NeverFits { .. } => ("invalid_request_error", "model_does_not_fit"),
        F::QueueFull { .. } => ("rate_limit_error", "queue_full"),
        F::KeyLimited { .. } => ("rate_limit_error", "rate_limited"),
        F::KeyForbidden(_) => ("permission_error", "forbidden"),
        F::NoHealthyBackend { .. } | F::Unreachable { .. } => {
            ("server_error", "no_healthy_backend")
        }
        F::QueueTimeout { .. } => ("server_error", "queue_timeout"),
        F::ModelGone { .. } => ("server_error", "model_unavailable"),
        F::ModelLoading { .. } => ("server_error", "model_loading"),
        F::LoadFailed { .. } => ("server_error", "model_load_failed"),
        F::Upstream { .. } => ("server_error", "upstream_error"),
        F::ShuttingDown => ("server_error", "shutting_down"),
        F::NoLeader { .. } => ("server_error", "no_leader"),
    }
}

/// A store that is away or out of space is a 503 or 507 (come back
/// later); anything else is the hub's own failure.
fn store_status(e: &drover_store::StoreError) -> StatusCode {
    match e {
        e if e.is_unavailable() => StatusCode::SERVICE_UNAVAILABLE,
        drover_store::StoreError::Full(_) => StatusCode::INSUFFICIENT_STORAGE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
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
                ApiError::from(ForwardError::ModelNotFound {
                    model: "m".into(),
                    closest: Vec::new(),
                }),
                404,
                "invalid_request_error",
            ),
            (
                ApiError::from(ForwardError::QueueFull {
                    retry_after: Duration::from_secs(3),
                }),
                429,
                "rate_limit_error",
            ),
            (
                ApiError::from(ForwardError::QueueTimeout {
                    model: "m".into(),
                    waited: Duration::from_secs(60),
                }),
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
        let err = ApiError::from(ForwardError::ModelNotFound {
            model: long,
            closest: Vec::new(),
        });
        let message = err.to_string();
        assert!(message.len() < 400, "{} bytes", message.len());
        assert!(message.contains("(600000 bytes)"), "{message}");
        assert_eq!(echo("short"), "short");
    }

    #[test]
    fn queue_full_says_when_to_retry() {
        let resp = ApiError::from(ForwardError::QueueFull {
            retry_after: Duration::from_secs(7),
        })
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
                ApiError::from(ForwardError::ModelNotFound {
                    model: "m".into(),
                    closest: Vec::new(),
                }),
                404,
                "not_found_error",
            ),
            (
                ApiError::from(ForwardError::QueueFull {
                    retry_after: Duration::from_secs(2),
                }),
                429,
                "rate_limit_error",
            ),
            (
                ApiError::from(ForwardError::NoHealthyBackend {
                    model: "m".into(),
                    retry_after: Duration::from_secs(2),
                }),
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
