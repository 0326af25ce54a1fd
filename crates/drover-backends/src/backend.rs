//! The [`Backend`] trait: how the hub learns what a server has. Node agents
//! report the same [`Discovery`] (a wire type) for servers they find.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;

use crate::client::HttpClient;
use crate::endpoint::Endpoint;
use crate::http::Http;
use crate::kind::BackendKind;
use crate::{llamacpp, lmstudio, ollama, openai, vllm};

pub use drover_proto::discovery::{Apis, DiscoveredModel, Discovery, ModelState, ModelType};

/// What a finished load reports.
#[derive(Debug, Clone, PartialEq)]
pub struct Loaded {
    /// How long the load took, as the server reports it or as measured.
    pub seconds: f64,
    /// The loaded instance's id, where the server names instances.
    pub instance: Option<String>,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum BackendError {
    #[error("cannot reach {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("{url} answered {status}")]
    Status { url: String, status: StatusCode },
    #[error("{url} answered {status}: {message}")]
    Refused {
        url: String,
        status: StatusCode,
        /// The server's own error message, truncated.
        message: String,
    },
    #[error("{url} answered something unexpected: {reason}")]
    Malformed { url: String, reason: String },
    #[error("{url} did not answer within {timeout:?}")]
    Timeout { url: String, timeout: Duration },
    #[error("a {kind} server cannot {what}")]
    Unsupported { kind: BackendKind, what: String },
}

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

pub trait Backend: Send + Sync + 'static {
    fn kind(&self) -> BackendKind;

    fn endpoint(&self) -> &Endpoint;

    /// Asks the server what it has. Doubles as the active health probe.
    fn discover(&self) -> BoxFuture<'_, Result<Discovery, BackendError>>;

    /// Generates one token from `model` (the server's own id): the probe
    /// that tells a server that lists models from one that can serve them.
    fn generate(&self, model: &str) -> BoxFuture<'_, Result<(), BackendError>>;

    /// Loads `model` and waits until it is ready.
    fn load(&self, model: &str) -> BoxFuture<'_, Result<Loaded, BackendError>>;

    /// Unloads every instance of `model`.
    fn unload(&self, model: &str) -> BoxFuture<'_, Result<(), BackendError>>;
}

pub fn adapter_for(
    kind: BackendKind,
    endpoint: Endpoint,
    client: HttpClient,
    api_key: Option<String>,
    timeout: Duration,
) -> Arc<dyn Backend> {
    let http = Http {
        authorization: endpoint.authorization(api_key.as_deref()),
        endpoint,
        client,
        timeout,
    };
    match kind {
        BackendKind::LmStudio => Arc::new(lmstudio::LmStudio::new(http)),
        BackendKind::Ollama => Arc::new(ollama::Ollama::new(http)),
        BackendKind::LlamaCpp => Arc::new(llamacpp::LlamaCpp::new(http)),
        BackendKind::Vllm => Arc::new(vllm::Vllm::new(http)),
        BackendKind::OpenAi => Arc::new(openai::OpenAi::new(http)),
    }
}

/// hyper's errors hide the cause (connection refused, ...) in `source()`.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push_str(": ");
        out.push_str(&s.to_string());
        cur = s.source();
    }
    out
}
