//! The one place where errors become HTTP: every error drover answers has
//! the OpenAI shape `{"error":{"message","type","param","code"}}` and the
//! status an OpenAI client expects.

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
    #[error("the model '{}' does not exist or no backend serves it", echo(model))]
    ModelNotFound { model: String },
    #[error("{message}")]
    NotFound { message: String },
    #[error("too many requests are waiting; retry after {} s", retry_after.as_secs())]
    QueueFull { retry_after: Duration },
    #[error("every backend serving '{}' is unhealthy or draining", echo(model))]
    NoHealthyBackend { model: String },
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
    },
    #[error("no backend slot for '{}' became free within {} s", echo(model), waited.as_secs_f64().round())]
    QueueTimeout { model: String, waited: Duration },
    #[error("no backend serves '{}' any more", echo(model))]
    ModelGone { model: String },
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
            ApiError::ModelNotFound { .. } | ApiError::NotFound { .. } => StatusCode::NOT_FOUND,
            ApiError::QueueFull { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::NoHealthyBackend { .. }
            | ApiError::Unreachable { .. }
            | ApiError::QueueTimeout { .. }
            | ApiError::ModelGone { .. }
            | ApiError::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Upstream { .. } => StatusCode::BAD_GATEWAY,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
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
            ApiError::NotFound { .. } => ("invalid_request_error", Some("not_found")),
            ApiError::QueueFull { .. } => ("rate_limit_error", Some("queue_full")),
            ApiError::NoHealthyBackend { .. } | ApiError::Unreachable { .. } => {
                ("server_error", Some("no_healthy_backend"))
            }
            ApiError::QueueTimeout { .. } => ("server_error", Some("queue_timeout")),
            ApiError::ModelGone { .. } => ("server_error", Some("model_unavailable")),
            ApiError::Upstream { .. } => ("server_error", Some("upstream_error")),
            ApiError::ShuttingDown => ("server_error", Some("shutting_down")),
            ApiError::Unauthorized(_) => ("authentication_error", Some("invalid_api_key")),
            ApiError::Forbidden(_) => ("permission_error", Some("forbidden")),
            ApiError::Conflict(_) => ("invalid_request_error", Some("conflict")),
            ApiError::MethodNotAllowed(_) => ("invalid_request_error", Some("method_not_allowed")),
        }
    }

    fn param(&self) -> Option<&'static str> {
        match self {
            ApiError::BadRequest { param, .. } => *param,
            ApiError::ModelNotFound { .. } => Some("model"),
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
        let mut resp = (status, body).into_response();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if let ApiError::QueueFull { retry_after } = &self {
            let secs = retry_after.as_secs().max(1);
            if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                resp.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        resp
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
                ApiError::ModelNotFound { model: "m".into() },
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
        let err = ApiError::ModelNotFound { model: long };
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
}
