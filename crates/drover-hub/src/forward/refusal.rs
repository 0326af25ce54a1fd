//! Why a request got no slot, as its sender should hear it: the
//! scheduler's reason, told with what the fleet says (the models closest to
//! a made-up name, the backends that never answered, when a breaker
//! half-opens, how far a load got).

use drover_core::BackendId;
use drover_scheduler::{Api, Reject};
use http::HeaderValue;

use super::{Failure, ForwardError, ForwardRequest, Forwarder};
use crate::dispatcher::{AcquireError, WaitError};
use crate::error::{ApiError, ErrorFormat};
use crate::observe::Refused;

impl Forwarder {
    /// Tells the observer of a refusal.
    pub(crate) fn refused(
        &self,
        e: &ForwardError,
        request_id: &HeaderValue,
        model: Option<&str>,
        caller: &str,
        errors: ErrorFormat,
    ) {
        self.0.observer.refused(
            &ApiError::from(e.clone()),
            errors,
            Refused {
                request_id,
                model,
                known: e.model_is_known(),
                client: caller,
            },
        );
    }

    /// Why `job` got no slot. After a failed attempt, what went wrong
    /// upstream rather than what the retry ran into.
    pub(super) fn refusal(
        &self,
        e: AcquireError,
        job: &ForwardRequest,
        last_failure: Option<Failure>,
    ) -> ForwardError {
        let model = job.model.clone();
        match (e, last_failure) {
            (
                AcquireError::Rejected(Reject::NoHealthyBackend | Reject::Exhausted)
                | AcquireError::Wait(WaitError::Unroutable),
                Some(failure),
            ) => ForwardError::Upstream {
                kind: failure.kind,
                message: format!(
                    "the backend failed and no other can take the request: {}",
                    failure.reason
                ),
            },
            // Only a retry can have tried every backend, and a retry has a
            // failure.
            (AcquireError::Rejected(Reject::Exhausted), None) => ForwardError::Upstream {
                kind: super::FailureKind::Removed,
                message: "every backend that serves the model was tried".into(),
            },
            (AcquireError::Rejected(Reject::ModelNotFound), _) => self.not_listed(model),
            (AcquireError::Rejected(Reject::NoHealthyBackend), None) => {
                self.no_healthy_backend(model)
            }
            (AcquireError::Rejected(Reject::ApiNotServed), _) => ForwardError::ApiNotServed {
                others: self.backends_listing(&model),
                path: match job.request.api {
                    Api::Responses => "/v1/responses",
                    Api::Messages => "/v1/messages",
                    Api::OpenAi => "the OpenAI API",
                    Api::Task => "tasks",
                },
                model,
            },
            (AcquireError::Rejected(Reject::QueueFull { retry_after }), _) => {
                ForwardError::QueueFull { retry_after }
            }
            (AcquireError::Wait(WaitError::Expired), _) => ForwardError::QueueTimeout {
                model,
                waited: job.arrived.elapsed(),
            },
            (
                AcquireError::Wait(WaitError::StillLoading {
                    backend,
                    retry_after,
                }),
                _,
            ) => ForwardError::ModelLoading {
                progress: self.load_progress(backend, &model),
                backend: self.0.registry.name_of(backend),
                model,
                retry_after,
            },
            (AcquireError::Wait(WaitError::LoadFailed { backend, message }), _) => {
                ForwardError::LoadFailed {
                    model,
                    backend: self.0.registry.name_of(backend),
                    message,
                    retry_after: None,
                }
            }
            (
                AcquireError::Rejected(Reject::LoadFailed {
                    backend,
                    message,
                    retry_after,
                }),
                _,
            ) => ForwardError::LoadFailed {
                model,
                backend: self.0.registry.name_of(backend),
                message,
                retry_after: Some(retry_after),
            },
            (
                AcquireError::Rejected(Reject::NeverFits {
                    size,
                    needs,
                    largest,
                }),
                _,
            ) => ForwardError::NeverFits {
                model,
                size,
                needs,
                largest,
            },
            // It waited for a backend's first answer, and none lists the model.
            (AcquireError::Wait(WaitError::Unroutable), _)
                if !self.0.dispatcher.knows_model(&model) =>
            {
                self.not_listed(model)
            }
            (AcquireError::Wait(WaitError::Unroutable), _) => ForwardError::ModelGone { model },
            (AcquireError::Wait(WaitError::ShuttingDown), _) => ForwardError::ShuttingDown,
            (AcquireError::Wait(WaitError::NoLeader(reason)), _) => {
                ForwardError::NoLeader { reason }
            }
            // Asked again by the caller; should it reach here, the
            // leader it asked went away.
            (AcquireError::Wait(WaitError::LeaderChanged), _) => ForwardError::NoLeader {
                reason: "the leader stopped".into(),
            },
            (
                AcquireError::KeyLimited {
                    limit,
                    message,
                    retry_after,
                },
                _,
            ) => {
                if let Some(key) = &job.key {
                    self.0.observer.key_limited(&key.name, limit.as_str());
                }
                ForwardError::KeyLimited {
                    message,
                    retry_after,
                }
            }
        }
    }

    /// No backend lists `model`: not found, unless some backend never
    /// answered (it may be theirs).
    fn not_listed(&self, model: String) -> ForwardError {
        self.not_listed_among(model, None)
    }

    /// [`Forwarder::not_listed`], naming only the closest of the models
    /// `allowed` (all, for `None`).
    pub fn not_listed_among(&self, model: String, allowed: Option<&[String]>) -> ForwardError {
        let backends = self.unreachable_backends();
        if backends.is_empty() {
            self.model_not_found_among(model, allowed)
        } else {
            self.unreachable(model, backends)
        }
    }

    /// Backends that have never answered a probe, by name: what they serve
    /// is unknown. (The scheduler learns of a backend at its first answer.)
    pub fn unreachable_backends(&self) -> Vec<String> {
        let entries = self.0.registry.all();
        let known = self.0.dispatcher.known_backends();
        entries
            .iter()
            .filter(|e| !known.contains(&e.id))
            .map(|e| e.name.clone())
            .collect()
    }

    /// "No backend serves `model`", naming the closest of the fleet's
    /// models that are `allowed` (all, for `None`): a key limited to some
    /// models does not learn of the others.
    pub fn model_not_found_among(&self, model: String, allowed: Option<&[String]>) -> ForwardError {
        let names = self.0.dispatcher.model_names();
        let names = names
            .iter()
            .map(|n| n.as_str())
            .filter(|n| allowed.is_none_or(|a| a.iter().any(|m| m == n)));
        let closest = crate::closest::closest(&model, names);
        ForwardError::ModelNotFound { model, closest }
    }

    /// "No answering backend serves `model`; `backends` never answered":
    /// their next probe may tell.
    fn unreachable(&self, model: String, backends: Vec<String>) -> ForwardError {
        ForwardError::Unreachable {
            model,
            backends,
            retry_after: self.0.probe_interval,
        }
    }

    /// "Every backend with `model` is down": and when one may take work.
    pub fn no_healthy_backend(&self, model: String) -> ForwardError {
        let retry_after = self
            .0
            .dispatcher
            .reopens_in(&model)
            .unwrap_or(self.0.probe_interval)
            .max(std::time::Duration::from_secs(1));
        ForwardError::NoHealthyBackend { model, retry_after }
    }

    /// Backends that list a model (under its public name), by name.
    pub fn backends_listing(&self, model: &str) -> Vec<String> {
        self.0
            .dispatcher
            .backends_listing(model)
            .into_iter()
            .map(|id| self.0.registry.name_of(id))
            .collect()
    }

    /// How far a model's load on a backend got, where the server tells.
    pub fn load_progress(&self, backend: BackendId, model: &str) -> Option<f32> {
        let entry = self.0.registry.get(backend)?;
        let probe = drover_core::sync::lock(&entry.observed);
        probe.progress.get(model).copied()
    }
}
