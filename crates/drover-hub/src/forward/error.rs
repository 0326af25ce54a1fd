//! Why forwarding did not produce an answer, as the domain says it: no
//! status codes here. `crate::error` maps each to HTTP and to the error
//! shape of the request's API, for any caller that needs one.

use std::time::Duration;

use crate::error::echo;

#[derive(Debug, Clone, thiserror::Error)]
pub enum ForwardError {
    /// The body cannot be forwarded: not JSON, no model.
    #[error("{message}")]
    Invalid {
        message: String,
        param: Option<&'static str>,
        code: &'static str,
    },
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
    #[error("too many requests are waiting; retry after {} s", retry_after.as_secs())]
    QueueFull { retry_after: Duration },
    /// The sender's key may not use the model.
    #[error("{0}")]
    KeyForbidden(String),
    /// The sender's key is over one of its limits.
    #[error("{message}; retry after {} s", retry_after.as_secs().max(1))]
    KeyLimited {
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
    /// Every attempt failed upstream; the last failure's kind and words.
    #[error("{message}")]
    Upstream { kind: FailureKind, message: String },
    #[error("the hub is shutting down")]
    ShuttingDown,
    /// This hub follows, and no leader grants slots now.
    #[error("no hub of the cluster grants slots now: {reason}")]
    NoLeader { reason: String },
}

impl ForwardError {
    pub(crate) fn invalid(
        message: impl Into<String>,
        param: Option<&'static str>,
        code: &'static str,
    ) -> Self {
        ForwardError::Invalid {
            message: message.into(),
            param,
            code,
        }
    }

    /// When the caller may try again, where the hub can tell.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ForwardError::QueueFull { retry_after }
            | ForwardError::KeyLimited { retry_after, .. }
            | ForwardError::ModelLoading { retry_after, .. }
            | ForwardError::NoHealthyBackend { retry_after, .. }
            | ForwardError::Unreachable { retry_after, .. } => Some(*retry_after),
            ForwardError::LoadFailed { retry_after, .. } => *retry_after,
            // A new leader takes over within a lease.
            ForwardError::NoLeader { .. } => Some(Duration::from_secs(1)),
            _ => None,
        }
    }

    /// Whether the error names a model the fleet knows: only then is the
    /// model a metric label.
    pub fn model_is_known(&self) -> bool {
        !matches!(
            self,
            ForwardError::Invalid { .. }
                | ForwardError::ModelNotFound { .. }
                | ForwardError::Unreachable { .. }
                | ForwardError::ApiNotServed { .. }
        )
    }
}

/// What kind of failure ended an attempt before its first byte: what
/// retries and metrics branch on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureKind {
    /// No connection, or the request could not be written.
    Connect,
    /// No answer, or no first byte of its body, within the response timeout.
    Timeout,
    /// The server answered with an error status (a 5xx).
    Status(u16),
    /// The server said it is busy (429): not counted against it.
    Busy,
    /// The answer's body broke before its first byte.
    Broken,
    /// The backend was removed while the request was on its way.
    Removed,
    /// The server ran out of room with others running: overload, tried
    /// again when load drops.
    Overloaded,
    /// The server ran out of room with nothing else running: the request
    /// does not fit the model's context.
    TooLarge,
}

impl FailureKind {
    /// Its name as a metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Connect => "connect",
            FailureKind::Timeout => "timeout",
            FailureKind::Status(_) => "status",
            FailureKind::Busy => "busy",
            FailureKind::Broken => "broken",
            FailureKind::Removed => "removed",
            FailureKind::Overloaded => "overloaded",
            FailureKind::TooLarge => "too_large",
        }
    }
}

/// Why one attempt failed before anything reached the client.
#[derive(Debug, Clone)]
pub struct Failure {
    pub kind: FailureKind,
    pub reason: String,
}

impl Failure {
    pub fn new(kind: FailureKind, reason: impl Into<String>) -> Self {
        Failure {
            kind,
            reason: reason.into(),
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.reason)
    }
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
