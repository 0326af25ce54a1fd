//! Liveness, readiness, metrics, and the answers for unknown routes.

use std::sync::Arc;

use axum::extract::State;
use axum::http::Uri;
use axum::response::{IntoResponse, Response};
use drover_proto::admin::KeyKind;
use drover_scheduler::BreakerState;
use http::{HeaderMap, StatusCode, header};
use serde_json::json;

use crate::caller::bearer;
use crate::error::ApiError;
use crate::hub::HubState;
use crate::views::Snapshot;

#[utoipa::path(get, path = "/health", tag = "operations", responses((status = 200, description = "The process is up")))]
pub async fn health() -> Response {
    axum::Json(json!({"status": "ok"})).into_response()
}

/// Ready when at least one backend can take work for at least one model,
/// and, in a cluster, a leader grants this hub slots.
#[utoipa::path(get, path = "/ready", tag = "operations", responses((status = 200, description = "A backend can take work"), (status = 503, description = "None can yet, or no leader grants this hub slots")))]
pub async fn ready(State(hub): State<Arc<HubState>>) -> Response {
    // A hub of a cluster serves only with a leader's grants: one that
    // follows without a link, or knows no leader, is not ready (what a load
    // balancer in front of the hubs checks).
    let ungranted = match hub.cluster.role() {
        crate::cluster::Role::Follower { leader, .. } if !hub.link.is_up() => Some(format!(
            "this hub follows {leader}, and its link to it is down"
        )),
        crate::cluster::Role::Leaderless { reason } => Some(format!(
            "no hub of the cluster leads that this one knows of: {reason}"
        )),
        _ => None,
    };
    if let Some(reason) = ungranted {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({"status": "not_ready", "reason": reason})),
        )
            .into_response();
    }
    let fleet = Snapshot::take(&hub.dispatcher);
    let usable = fleet
        .backends
        .values()
        .filter(|v| !v.draining && v.breaker != BreakerState::Open && !v.models.is_empty())
        .count();
    if usable > 0 {
        axum::Json(json!({"status": "ready", "usable_backends": usable})).into_response()
    } else {
        let reason = if hub.registry.all().is_empty() {
            "no backends are configured"
        } else {
            "no backend is healthy and serving a model yet"
        };
        (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({"status": "not_ready", "reason": reason})),
        )
            .into_response()
    }
}

/// `/metrics` names every backend, model and key, with their traffic: it
/// answers whoever the management API answers (an admin key; on loopback
/// without one, the local operator), a metrics key, or anyone with
/// `public_metrics`.
fn authorize_metrics(hub: &HubState, headers: &HeaderMap) -> Result<(), ApiError> {
    if hub.config.public_metrics {
        return Ok(());
    }
    if let Some(h) = bearer(headers).and_then(|t| hub.keys.find(t)) {
        match h.kind {
            KeyKind::Metrics | KeyKind::Admin => return Ok(()),
            KeyKind::Client | KeyKind::Worker => {
                return Err(ApiError::Forbidden(format!(
                    "{:?} is {} key: /metrics needs an admin or a metrics key",
                    h.name,
                    crate::keys::article(h.kind)
                )));
            }
        }
    }
    super::guard::authorize(hub, headers).map_err(|e| match e {
        ApiError::Unauthorized(_) => ApiError::Unauthorized(
            "/metrics needs an admin or a metrics key as a bearer token (drover keys create NAME --kind metrics), or public_metrics = true".into(),
        ),
        other => other,
    })
}

#[utoipa::path(get, path = "/metrics", tag = "operations", responses((status = 200, description = "Prometheus metrics (OpenMetrics text)", content_type = "application/openmetrics-text"), (status = 401, description = "The hub has keys and this is no admin or metrics key", body = drover_proto::openai::ErrorBody), (status = 403, description = "A client key", body = drover_proto::openai::ErrorBody)), security((), ("bearer" = [])))]
pub async fn metrics(State(hub): State<Arc<HubState>>, headers: HeaderMap) -> Response {
    if let Err(e) = authorize_metrics(&hub, &headers) {
        return e.into_response();
    }
    // Snapshot under the lock, render outside it: a scrape must not stall
    // dispatch.
    let fleet = Snapshot::take(&hub.dispatcher);
    let unreachable = hub.unreachable_backends();
    let jobs = match &hub.jobs {
        Some(jobs) => {
            // A store that does not answer soon costs the scrape no more.
            let counts = tokio::time::timeout(JOB_COUNTS_WAIT, jobs.store.job_counts(None))
                .await
                .ok()
                .and_then(Result::ok);
            Some(crate::metrics::JobsScrape {
                held: jobs.in_flight(),
                counts,
            })
        }
        None => None,
    };
    let text = hub.observer.metrics().render(&crate::metrics::Scrape {
        fleet: &fleet,
        unreachable: &unreachable,
        name_of: &|id| hub.registry.name_of(id),
        jobs,
        role: hub.cluster.role(),
        linked: hub.link.is_up(),
    });
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

/// How long a scrape waits for the job store's counts.
const JOB_COUNTS_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

pub async fn not_found(uri: Uri) -> ApiError {
    ApiError::NotFound {
        message: format!("no route for {}", uri.path()),
    }
}

pub async fn method_not_allowed(uri: Uri) -> ApiError {
    ApiError::MethodNotAllowed(format!("method not allowed on {}", uri.path()))
}
