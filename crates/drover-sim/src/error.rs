use std::borrow::Cow;

use http::StatusCode;

use crate::body::{SimBody, json_response};
use crate::wire::{ErrorBody, ErrorDetail};

/// Why a simulator could not start or a control call failed.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("slots must be at least 1")]
    NoSlots,
    #[error("embedding_dims must be at least 1")]
    NoEmbeddingDims,
    #[error("the simulator serves no model named {0:?}")]
    UnknownModel(String),
    #[error("the simulator has shut down")]
    ShutDown,
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Which API's error shape a path answers in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ErrorShape {
    OpenAi,
    Anthropic,
}

/// An HTTP error answer in the OpenAI shape (backend-apis.md §5.2), or
/// Anthropic's on its paths (§7).
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    message: Cow<'static, str>,
    kind: &'static str,
    param: Option<&'static str>,
    code: Option<&'static str>,
    /// For an unknown model: its name, for servers that word it their way.
    model: Option<String>,
}

impl ApiError {
    pub(crate) fn invalid_request(
        message: impl Into<Cow<'static, str>>,
        param: Option<&'static str>,
    ) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            kind: "invalid_request_error",
            param,
            code: None,
            model: None,
        }
    }

    pub(crate) fn model_not_found(model: &str) -> Self {
        ApiError {
            status: StatusCode::NOT_FOUND,
            message: format!("The model `{model}` does not exist.").into(),
            kind: "invalid_request_error",
            param: Some("model"),
            code: Some("model_not_found"),
            model: Some(model.to_string()),
        }
    }

    pub(crate) fn message(&self) -> &str {
        &self.message
    }

    /// The model named, when this is an unknown model's error.
    pub(crate) fn unknown_model(&self) -> Option<&str> {
        self.model.as_deref()
    }

    pub(crate) fn instance_not_found(instance_id: &str) -> Self {
        ApiError {
            status: StatusCode::NOT_FOUND,
            message: format!("No loaded model instance `{instance_id}`.").into(),
            kind: "invalid_request_error",
            param: Some("instance_id"),
            code: None,
            model: None,
        }
    }

    pub(crate) fn no_route(method: &http::Method, path: &str) -> Self {
        ApiError {
            status: StatusCode::NOT_FOUND,
            message: format!("Unexpected endpoint or method. ({method} {path})").into(),
            kind: "invalid_request_error",
            param: None,
            code: None,
            model: None,
        }
    }

    pub(crate) fn payload_too_large(limit: usize) -> Self {
        ApiError {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            message: format!("Request body exceeds {limit} bytes.").into(),
            kind: "invalid_request_error",
            param: None,
            code: None,
            model: None,
        }
    }

    /// A 500 of type `server_error`, in the imitated server's own words.
    fn server_error(message: impl Into<Cow<'static, str>>) -> Self {
        ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: message.into(),
            kind: "server_error",
            param: None,
            code: None,
            model: None,
        }
    }

    pub(crate) fn injected() -> Self {
        Self::server_error("The simulator injected this error.")
    }

    /// The server lists the model but its runner is gone (the
    /// `cannot_generate` fault), in the words of the server imitated.
    pub(crate) fn cannot_generate(dialect: crate::Dialect) -> Self {
        let message = match dialect {
            crate::Dialect::LmStudio => {
                "Model has crashed without additional information. (Exit code: null)"
            }
            crate::Dialect::Ollama => "llama runner process has terminated: exit status 2",
            crate::Dialect::LlamaCpp | crate::Dialect::LlamaCppRouter => {
                "failed to decode the batch: the device is lost"
            }
            crate::Dialect::Vllm => {
                "EngineCore encountered an issue. See stack trace for the root cause."
            }
            crate::Dialect::OpenAi => "The model runner has exited.",
        };
        Self::server_error(message)
    }

    pub(crate) fn previous_response_not_found(id: &str) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            message: format!("Previous response with id '{id}' not found.").into(),
            kind: "invalid_request_error",
            param: Some("previous_response_id"),
            code: Some("previous_response_not_found"),
            model: None,
        }
    }

    /// A load that memory cannot hold.
    pub(crate) fn does_not_fit(model: &crate::model::ModelState, available: u64) -> Self {
        Self::server_error(format!(
            "model requires more system memory ({} bytes) than is available ({available} bytes)",
            model.size_bytes()
        ))
    }

    /// llama.cpp's refusal of a prompt larger than its context.
    pub(crate) fn exceeds_context(prompt: usize, n_ctx: usize) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            message: format!(
                "request ({prompt} tokens) exceeds the available context size ({n_ctx} tokens), try increasing it"
            )
            .into(),
            kind: "exceed_context_size_error",
            param: None,
            code: None,
            model: None,
        }
    }

    /// llama.cpp answers any work with this while its model loads.
    pub(crate) fn loading_model() -> Self {
        ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: "Loading model".into(),
            kind: "unavailable_error",
            param: None,
            code: None,
            model: None,
        }
    }

    pub(crate) fn internal(message: &'static str) -> Self {
        Self::server_error(message)
    }

    /// The answer in the shape of the path's API: Anthropic's on
    /// `/v1/messages`, OpenAI's elsewhere.
    pub(crate) fn into_response_as(self, shape: ErrorShape) -> http::Response<SimBody> {
        match shape {
            ErrorShape::OpenAi => self.into_response(),
            ErrorShape::Anthropic => {
                let kind = match self.status.as_u16() {
                    401 => "authentication_error",
                    404 => "not_found_error",
                    413 => "request_too_large",
                    429 => "rate_limit_error",
                    500..=599 => "api_error",
                    _ => "invalid_request_error",
                };
                let body = serde_json::json!({
                    "type": "error",
                    "error": {"type": kind, "message": self.message},
                });
                json_response(self.status, &body)
            }
        }
    }

    pub(crate) fn into_response(self) -> http::Response<SimBody> {
        let body = ErrorBody {
            error: ErrorDetail {
                message: &self.message,
                kind: self.kind,
                param: self.param,
                code: self.code,
            },
        };
        json_response(self.status, &body)
    }
}
