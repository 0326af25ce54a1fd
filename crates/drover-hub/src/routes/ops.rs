//! Liveness, readiness, metrics, and the answers for unknown routes.

use std::sync::Arc;

use axum::extract::State;
use axum::http::Uri;
use axum::response::{IntoResponse, Response};
use drover_scheduler::BreakerState;
use http::{StatusCode, header};
use serde_json::json;

use crate::error::ApiError;
use crate::hub::HubState;

#[utoipa::path(get, path = "/health", tag = "operations", responses((status = 200, description = "The process is up")))]
pub async fn health() -> Response {
    axum::Json(json!({"status": "ok"})).into_response()
}

/// Ready when at least one backend can take work for at least one model.
#[utoipa::path(get, path = "/ready", tag = "operations", responses((status = 200, description = "A backend can take work"), (status = 503, description = "None can yet")))]
pub async fn ready(State(hub): State<Arc<HubState>>) -> Response {
    let views = hub.dispatcher.inspect(|s| s.fleet().views());
    let usable = views
        .iter()
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

#[utoipa::path(get, path = "/metrics", tag = "operations", responses((status = 200, description = "Prometheus metrics (OpenMetrics text)", content_type = "application/openmetrics-text")))]
pub async fn metrics(State(hub): State<Arc<HubState>>) -> Response {
    // Snapshot under the lock, render outside it: a scrape must not stall
    // dispatch.
    let (views, stats) = hub
        .dispatcher
        .inspect(|s| (s.fleet().views(), s.queue().stats()));
    let unreachable = hub.unreachable_backends();
    let text = hub.metrics.render(&crate::metrics::FleetSnapshot {
        views: &views,
        queue: &stats,
        unreachable: &unreachable,
        name_of: &|id| hub.registry.name_of(id),
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

pub async fn not_found(uri: Uri) -> ApiError {
    ApiError::NotFound {
        message: format!("no route for {}", uri.path()),
    }
}

pub async fn method_not_allowed(uri: Uri) -> ApiError {
    ApiError::MethodNotAllowed(format!("method not allowed on {}", uri.path()))
}
