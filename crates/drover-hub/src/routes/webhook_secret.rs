//! `/admin/webhook-secret`: a new secret for job callbacks, shown once.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use drover_proto::admin::NewWebhookSecret;
use http::{HeaderValue, header};

use crate::error::ApiError;
use crate::hub::HubState;
use crate::jobs::secret::RotateError;

#[utoipa::path(post, path = "/admin/webhook-secret", tag = "jobs", responses((status = 200, description = "A new secret signs every job callback from now on, on every hub of this store (retries of earlier callbacks too); it is in this answer only", body = drover_proto::admin::NewWebhookSecret), (status = 409, description = "[jobs] webhook_secret sets this hub's secret: change it there", body = drover_proto::openai::ErrorBody), (status = 503, description = "The hub keeps no store (callbacks need one), or it is unreachable", body = drover_proto::openai::ErrorBody), (status = 401, description = "No admin key, or not a valid one", body = drover_proto::openai::ErrorBody), (status = 403, description = "A client key, or a request from a web page", body = drover_proto::openai::ErrorBody)), security((), ("bearer" = [])))]
pub async fn rotate(State(hub): State<Arc<HubState>>) -> Result<Response, ApiError> {
    let jobs = hub.jobs.as_ref().ok_or(ApiError::NoStore)?;
    let secret = jobs.secret.rotate(&jobs.store).await.map_err(|e| match e {
        RotateError::Configured => ApiError::Conflict(e.to_string()),
        RotateError::Store(e) => e.into(),
        RotateError::Random(e) => ApiError::Internal(e.to_string()),
    })?;
    tracing::info!(target: "drover::action", "webhook secret replaced: job callbacks are signed with the new one");
    let mut response = Json(NewWebhookSecret {
        secret: secret.to_string(),
    })
    .into_response();
    // Shown once: kept by no cache on the way.
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}
