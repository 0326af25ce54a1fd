//! `/admin/releases`: builds of drover kept for node agents;
//! `/v1/nodes/{id}/releases/{version}`: an agent downloads one;
//! `/admin/rollouts`: every node updated to a release, a batch at a time.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use drover_proto::releases::{ReleaseInfo, ReleaseList, RolloutInfo, RolloutList, StartRollout};
use http::{HeaderMap, HeaderValue, header};

use super::workers::body;
use crate::caller::bearer;
use crate::error::ApiError;
use crate::hub::HubState;

#[utoipa::path(put, path = "/admin/releases/{version}", tag = "nodes", params(("version" = String, Path, description = "The release's version"), ("x-drover-sha256" = Option<String>, Header, description = "The build's SHA-256 as the sender computed it"), ("x-drover-os" = Option<String>, Header, description = "What it runs on (default: the hub's)"), ("x-drover-arch" = Option<String>, Header, description = "Its architecture (default: the hub's)")), request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "The build's bytes"), responses((status = 200, description = "Kept, with its SHA-256", body = drover_proto::releases::ReleaseInfo), (status = 400, description = "A bad version, an empty body, or a SHA-256 the bytes do not have", body = drover_proto::openai::ErrorBody), (status = 409, description = "This version is published already", body = drover_proto::openai::ErrorBody), (status = 413, description = "Over 512 MiB", body = drover_proto::openai::ErrorBody), (status = 401, description = "No admin key, or not a valid one", body = drover_proto::openai::ErrorBody), (status = 403, description = "Not an admin key, or a request from a web page", body = drover_proto::openai::ErrorBody), (status = 503, description = "The store is unreachable, or the hub keeps none", body = drover_proto::openai::ErrorBody)), security((), ("bearer" = [])))]
pub async fn publish(
    State(hub): State<Arc<HubState>>,
    Path(version): Path<String>,
    headers: HeaderMap,
    bytes: axum::body::Bytes,
) -> Result<Json<ReleaseInfo>, ApiError> {
    Ok(Json(
        crate::releases::publish(&hub, &version, &headers, &bytes).await?,
    ))
}

#[utoipa::path(get, path = "/admin/releases", tag = "nodes", responses((status = 200, description = "Every release, newest first", body = drover_proto::releases::ReleaseList), (status = 401, description = "No admin key, or not a valid one", body = drover_proto::openai::ErrorBody), (status = 403, description = "Not an admin key, or a request from a web page", body = drover_proto::openai::ErrorBody), (status = 503, description = "The store is unreachable, or the hub keeps none", body = drover_proto::openai::ErrorBody)), security((), ("bearer" = [])))]
pub async fn list(State(hub): State<Arc<HubState>>) -> Result<Json<ReleaseList>, ApiError> {
    Ok(Json(ReleaseList {
        releases: crate::releases::list(&hub).await?,
    }))
}

#[utoipa::path(get, path = "/v1/nodes/{id}/releases/{version}", tag = "nodes", params(("id" = String, Path, description = "The node's id"), ("version" = String, Path, description = "The release's version")), responses((status = 200, description = "The build's bytes; x-drover-sha256 says the hash the agent must find", content_type = "application/octet-stream"), (status = 404, description = "No such release", body = drover_proto::openai::ErrorBody), (status = 401, description = "No credential, or not a valid one", body = drover_proto::openai::ErrorBody), (status = 403, description = "Another node's credential", body = drover_proto::openai::ErrorBody)), security(("bearer" = [])))]
pub async fn download(
    State(hub): State<Arc<HubState>>,
    Path((id, version)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    crate::nodes::authenticate(&hub, &id, bearer(&headers)).await?;
    let (release, data) = crate::releases::bytes(&hub, &version).await?;
    let mut response = data.into_response();
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    if let Ok(v) = HeaderValue::from_str(&release.sha256) {
        h.insert("x-drover-sha256", v);
    }
    Ok(response)
}

#[utoipa::path(post, path = "/admin/rollouts", tag = "nodes", request_body = drover_proto::releases::StartRollout, responses((status = 200, description = "Started: every node's part", body = drover_proto::releases::RolloutInfo), (status = 400, description = "A bad version or batch", body = drover_proto::openai::ErrorBody), (status = 404, description = "No such release", body = drover_proto::openai::ErrorBody), (status = 409, description = "A roll-out is running", body = drover_proto::openai::ErrorBody), (status = 401, description = "No admin key, or not a valid one", body = drover_proto::openai::ErrorBody), (status = 403, description = "Not an admin key, or a request from a web page", body = drover_proto::openai::ErrorBody), (status = 503, description = "The store is unreachable, or the hub keeps none", body = drover_proto::openai::ErrorBody)), security((), ("bearer" = [])))]
pub async fn start_rollout(
    State(hub): State<Arc<HubState>>,
    bytes: axum::body::Bytes,
) -> Result<Json<RolloutInfo>, ApiError> {
    let asked: StartRollout = body(&bytes, None)?;
    Ok(Json(crate::rollouts::start(&hub, asked).await?))
}

#[utoipa::path(get, path = "/admin/rollouts", tag = "nodes", responses((status = 200, description = "The twenty newest roll-outs", body = drover_proto::releases::RolloutList), (status = 401, description = "No admin key, or not a valid one", body = drover_proto::openai::ErrorBody), (status = 403, description = "Not an admin key, or a request from a web page", body = drover_proto::openai::ErrorBody), (status = 503, description = "The store is unreachable, or the hub keeps none", body = drover_proto::openai::ErrorBody)), security((), ("bearer" = [])))]
pub async fn rollouts(State(hub): State<Arc<HubState>>) -> Result<Json<RolloutList>, ApiError> {
    Ok(Json(RolloutList {
        rollouts: crate::rollouts::list(&hub).await?,
    }))
}

#[utoipa::path(get, path = "/admin/rollouts/{id}", tag = "nodes", params(("id" = String, Path, description = "The roll-out's id")), responses((status = 200, description = "Its state and every node's part", body = drover_proto::releases::RolloutInfo), (status = 404, description = "No such roll-out", body = drover_proto::openai::ErrorBody), (status = 401, description = "No admin key, or not a valid one", body = drover_proto::openai::ErrorBody), (status = 403, description = "Not an admin key, or a request from a web page", body = drover_proto::openai::ErrorBody), (status = 503, description = "The store is unreachable, or the hub keeps none", body = drover_proto::openai::ErrorBody)), security((), ("bearer" = [])))]
pub async fn rollout(
    State(hub): State<Arc<HubState>>,
    Path(id): Path<String>,
) -> Result<Json<RolloutInfo>, ApiError> {
    Ok(Json(crate::rollouts::get(&hub, &id).await?))
}
