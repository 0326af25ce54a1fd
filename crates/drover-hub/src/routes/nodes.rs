//! `/v1/nodes`: an agent joins with a join token and heartbeats with the
//! node credential it got; `/admin/nodes`: the operator makes join tokens
//! and sees the machines.

use std::sync::Arc;

use axum::Json;
use axum::extract::{ConnectInfo, Path, State};
use drover_proto::nodes::{
    CreateJoinToken, JoinRequest, JoinTokenInfo, JoinTokenList, Joined, NodeHeartbeat, NodeList,
    NodeState,
};
use http::{HeaderMap, StatusCode};

use super::workers::body;
use crate::caller::bearer;
use crate::error::ApiError;
use crate::hub::HubState;

/// The most bytes a join or a heartbeat may carry: a machine's facts and
/// what its servers list (a few hundred models) fit in far less.
const MAX_BODY: usize = 1024 * 1024;

fn bounded(bytes: &[u8]) -> Result<(), ApiError> {
    if bytes.len() > MAX_BODY {
        return Err(ApiError::PayloadTooLarge { limit: MAX_BODY });
    }
    Ok(())
}

#[utoipa::path(post, path = "/v1/nodes/join", tag = "nodes", request_body = drover_proto::nodes::JoinRequest, responses((status = 200, description = "Joined: the node's id and credential (shown once)", body = drover_proto::nodes::Joined), (status = 400, description = "A field is wrong; the error names it", body = drover_proto::openai::ErrorBody), (status = 401, description = "The join token is unknown, used, expired or revoked; nothing was stored", body = drover_proto::openai::ErrorBody), (status = 413, description = "Over 1 MiB", body = drover_proto::openai::ErrorBody), (status = 503, description = "The store is unreachable, or the hub keeps none", body = drover_proto::openai::ErrorBody)))]
pub async fn join(
    State(hub): State<Arc<HubState>>,
    bytes: axum::body::Bytes,
) -> Result<Json<Joined>, ApiError> {
    bounded(&bytes)?;
    let asked: JoinRequest = body(&bytes, None)?;
    Ok(Json(crate::nodes::join(&hub, asked).await?))
}

#[utoipa::path(post, path = "/v1/nodes/{id}/heartbeat", tag = "nodes", params(("id" = String, Path, description = "The node's id")), request_body = drover_proto::nodes::NodeHeartbeat, responses((status = 200, description = "Kept: run or drain, and the heartbeat's rhythm", body = drover_proto::nodes::NodeState), (status = 400, description = "A fact is out of bounds; the error names it", body = drover_proto::openai::ErrorBody), (status = 401, description = "No credential, or not a valid one", body = drover_proto::openai::ErrorBody), (status = 403, description = "Another node's credential", body = drover_proto::openai::ErrorBody), (status = 413, description = "Over 1 MiB", body = drover_proto::openai::ErrorBody), (status = 503, description = "The store is unreachable, or the hub keeps none", body = drover_proto::openai::ErrorBody)), security(("bearer" = [])))]
pub async fn heartbeat(
    State(hub): State<Arc<HubState>>,
    Path(id): Path<String>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
    bytes: axum::body::Bytes,
) -> Result<Json<NodeState>, ApiError> {
    bounded(&bytes)?;
    let beat: NodeHeartbeat = body(&bytes, None)?;
    Ok(Json(
        crate::nodes::heartbeat(&hub, &id, bearer(&headers), peer.ip(), beat).await?,
    ))
}

#[utoipa::path(get, path = "/admin/nodes", tag = "nodes", responses((status = 200, description = "Every node: version, facts, last heartbeat, up or down", body = drover_proto::nodes::NodeList), (status = 401, description = "No admin key, or not a valid one", body = drover_proto::openai::ErrorBody), (status = 403, description = "Not an admin key, or a request from a web page", body = drover_proto::openai::ErrorBody), (status = 503, description = "The store is unreachable, or the hub keeps none", body = drover_proto::openai::ErrorBody)), security((), ("bearer" = [])))]
pub async fn list(State(hub): State<Arc<HubState>>) -> Result<Json<NodeList>, ApiError> {
    Ok(Json(NodeList {
        nodes: crate::nodes::list(&hub).await?,
    }))
}

#[utoipa::path(post, path = "/admin/nodes/tokens", tag = "nodes", request_body = drover_proto::nodes::CreateJoinToken, responses((status = 200, description = "The join token, shown once", body = drover_proto::nodes::JoinTokenInfo), (status = 400, description = "A bad ttl", body = drover_proto::openai::ErrorBody), (status = 401, description = "No admin key, or not a valid one", body = drover_proto::openai::ErrorBody), (status = 403, description = "Not an admin key, or a request from a web page", body = drover_proto::openai::ErrorBody), (status = 503, description = "The store is unreachable, or the hub keeps none", body = drover_proto::openai::ErrorBody)), security((), ("bearer" = [])))]
pub async fn create_token(
    State(hub): State<Arc<HubState>>,
    bytes: axum::body::Bytes,
) -> Result<Json<JoinTokenInfo>, ApiError> {
    let asked: CreateJoinToken = body(&bytes, Some(CreateJoinToken::default()))?;
    Ok(Json(crate::nodes::create_token(&hub, asked).await?))
}

#[utoipa::path(get, path = "/admin/nodes/tokens", tag = "nodes", responses((status = 200, description = "Every join token (never the tokens themselves)", body = drover_proto::nodes::JoinTokenList), (status = 401, description = "No admin key, or not a valid one", body = drover_proto::openai::ErrorBody), (status = 403, description = "Not an admin key, or a request from a web page", body = drover_proto::openai::ErrorBody), (status = 503, description = "The store is unreachable, or the hub keeps none", body = drover_proto::openai::ErrorBody)), security((), ("bearer" = [])))]
pub async fn tokens(State(hub): State<Arc<HubState>>) -> Result<Json<JoinTokenList>, ApiError> {
    Ok(Json(JoinTokenList {
        tokens: crate::nodes::tokens(&hub).await?,
    }))
}

#[utoipa::path(delete, path = "/admin/nodes/tokens/{id}", tag = "nodes", params(("id" = String, Path, description = "The join token's id")), responses((status = 204, description = "Revoked: no machine joins with it any more"), (status = 404, description = "No live join token with this id", body = drover_proto::openai::ErrorBody), (status = 401, description = "No admin key, or not a valid one", body = drover_proto::openai::ErrorBody), (status = 403, description = "Not an admin key, or a request from a web page", body = drover_proto::openai::ErrorBody), (status = 503, description = "The store is unreachable, or the hub keeps none", body = drover_proto::openai::ErrorBody)), security((), ("bearer" = [])))]
pub async fn revoke_token(
    State(hub): State<Arc<HubState>>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    crate::nodes::revoke_token(&hub, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}
