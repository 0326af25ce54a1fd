//! `/v1/nodes`: an agent joins with a join token and heartbeats with the
//! node credential it got; `/admin/nodes`: the operator makes join tokens
//! and sees the machines.

use std::sync::Arc;

use axum::Json;
use axum::extract::{ConnectInfo, Path, State};
use drover_proto::nodes::{
    CommandAnswer, CommandPoll, CreateJoinToken, JoinRequest, JoinTokenInfo, JoinTokenList, Joined,
    NodeCommandInfo, NodeCommandList, NodeHeartbeat, NodeList, NodeState, ServiceAction,
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
    let caller = crate::cluster::relay::caller_ip(&hub, &headers, peer.ip());
    Ok(Json(
        crate::nodes::heartbeat(&hub, &id, bearer(&headers), caller, beat).await?,
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

#[utoipa::path(post, path = "/v1/nodes/{id}/commands", tag = "nodes", params(("id" = String, Path, description = "The node's id")), request_body = drover_proto::nodes::CommandPoll, responses((status = 200, description = "Commands for the agent, each to answer once", body = drover_proto::nodes::NodeCommandList), (status = 204, description = "None came within the wait"), (status = 400, description = "Not a poll: wait_s is the one field", body = drover_proto::openai::ErrorBody), (status = 401, description = "No credential, or not a valid one", body = drover_proto::openai::ErrorBody), (status = 403, description = "Another node's credential", body = drover_proto::openai::ErrorBody), (status = 503, description = "The store is unreachable, or the hub keeps none", body = drover_proto::openai::ErrorBody)), security(("bearer" = [])))]
pub async fn poll_commands(
    State(hub): State<Arc<HubState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    bytes: axum::body::Bytes,
) -> Result<axum::response::Response, ApiError> {
    use axum::response::IntoResponse;
    bounded(&bytes)?;
    let node = crate::nodes::authenticate(&hub, &id, bearer(&headers)).await?;
    let asked: CommandPoll = body(&bytes, Some(CommandPoll::default()))?;
    let wait = std::time::Duration::from_secs(asked.wait_s);
    let commands = crate::nodes::commands::poll(&hub, &node, wait).await?;
    Ok(if commands.is_empty() {
        StatusCode::NO_CONTENT.into_response()
    } else {
        Json(NodeCommandList { commands }).into_response()
    })
}

#[utoipa::path(post, path = "/v1/nodes/{id}/commands/{command}", tag = "nodes", params(("id" = String, Path, description = "The node's id"), ("command" = String, Path, description = "The command's id")), request_body = drover_proto::nodes::CommandAnswer, responses((status = 204, description = "Kept"), (status = 400, description = "Not an answer: ok and result are needed", body = drover_proto::openai::ErrorBody), (status = 401, description = "No credential, or not a valid one", body = drover_proto::openai::ErrorBody), (status = 403, description = "Another node's credential", body = drover_proto::openai::ErrorBody), (status = 409, description = "Not a command this node took and has not answered", body = drover_proto::openai::ErrorBody), (status = 413, description = "A result over 256 KiB", body = drover_proto::openai::ErrorBody)), security(("bearer" = [])))]
pub async fn answer_command(
    State(hub): State<Arc<HubState>>,
    Path((id, command)): Path<(String, String)>,
    headers: HeaderMap,
    bytes: axum::body::Bytes,
) -> Result<StatusCode, ApiError> {
    bounded(&bytes)?;
    let node = crate::nodes::authenticate(&hub, &id, bearer(&headers)).await?;
    let answer: CommandAnswer = body(&bytes, None)?;
    crate::nodes::commands::answer(&hub, &node, &command, answer.ok, &answer.result).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/admin/nodes/{node}/services", tag = "nodes", params(("node" = String, Path, description = "The node's id or name")), request_body = drover_proto::nodes::ServiceAction, responses((status = 200, description = "The command, stored for the node's agent", body = drover_proto::nodes::NodeCommandInfo), (status = 400, description = "An unknown action, or logs without a service", body = drover_proto::openai::ErrorBody), (status = 404, description = "No such node", body = drover_proto::openai::ErrorBody), (status = 401, description = "No admin key, or not a valid one", body = drover_proto::openai::ErrorBody), (status = 403, description = "Not an admin key, or a request from a web page", body = drover_proto::openai::ErrorBody)), security((), ("bearer" = [])))]
pub async fn node_services(
    State(hub): State<Arc<HubState>>,
    Path(node): Path<String>,
    bytes: axum::body::Bytes,
) -> Result<Json<NodeCommandInfo>, ApiError> {
    let asked: ServiceAction = body(&bytes, None)?;
    Ok(Json(
        crate::nodes::commands::for_node(&hub, &node, asked).await?,
    ))
}

#[utoipa::path(post, path = "/admin/nodes/services", tag = "nodes", request_body = drover_proto::nodes::ServiceAction, responses((status = 200, description = "Start All, Stop All, Restart All: a command for every node", body = drover_proto::nodes::NodeCommandList), (status = 400, description = "An unknown action, or logs", body = drover_proto::openai::ErrorBody), (status = 401, description = "No admin key, or not a valid one", body = drover_proto::openai::ErrorBody), (status = 403, description = "Not an admin key, or a request from a web page", body = drover_proto::openai::ErrorBody)), security((), ("bearer" = [])))]
pub async fn all_services(
    State(hub): State<Arc<HubState>>,
    bytes: axum::body::Bytes,
) -> Result<Json<NodeCommandList>, ApiError> {
    let asked: ServiceAction = body(&bytes, None)?;
    Ok(Json(NodeCommandList {
        commands: crate::nodes::commands::for_all(&hub, asked).await?,
    }))
}

#[utoipa::path(get, path = "/admin/nodes/commands/{id}", tag = "nodes", params(("id" = String, Path, description = "The command's id")), responses((status = 200, description = "The command, with the agent's answer once it came", body = drover_proto::nodes::NodeCommandInfo), (status = 404, description = "No such command", body = drover_proto::openai::ErrorBody), (status = 401, description = "No admin key, or not a valid one", body = drover_proto::openai::ErrorBody), (status = 403, description = "Not an admin key, or a request from a web page", body = drover_proto::openai::ErrorBody)), security((), ("bearer" = [])))]
pub async fn command(
    State(hub): State<Arc<HubState>>,
    Path(id): Path<String>,
) -> Result<Json<NodeCommandInfo>, ApiError> {
    Ok(Json(crate::nodes::commands::get(&hub, &id).await?))
}

#[utoipa::path(post, path = "/admin/nodes/{node}/drain", tag = "nodes", params(("node" = String, Path, description = "The node's id or name")), responses((status = 204, description = "Draining: its servers take no new work; running requests finish"), (status = 400, description = "Two nodes have this name: name one by its id", body = drover_proto::openai::ErrorBody), (status = 404, description = "No such node", body = drover_proto::openai::ErrorBody), (status = 401, description = "No admin key, or not a valid one", body = drover_proto::openai::ErrorBody), (status = 403, description = "Not an admin key, or a request from a web page", body = drover_proto::openai::ErrorBody)), security((), ("bearer" = [])))]
pub async fn drain(
    State(hub): State<Arc<HubState>>,
    Path(node): Path<String>,
) -> Result<StatusCode, ApiError> {
    crate::nodes::commands::set_draining(&hub, &node, true).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/admin/nodes/{node}/undrain", tag = "nodes", params(("node" = String, Path, description = "The node's id or name")), responses((status = 204, description = "Its servers take work again"), (status = 400, description = "Two nodes have this name: name one by its id", body = drover_proto::openai::ErrorBody), (status = 404, description = "No such node", body = drover_proto::openai::ErrorBody), (status = 401, description = "No admin key, or not a valid one", body = drover_proto::openai::ErrorBody), (status = 403, description = "Not an admin key, or a request from a web page", body = drover_proto::openai::ErrorBody)), security((), ("bearer" = [])))]
pub async fn undrain(
    State(hub): State<Arc<HubState>>,
    Path(node): Path<String>,
) -> Result<StatusCode, ApiError> {
    crate::nodes::commands::set_draining(&hub, &node, false).await?;
    Ok(StatusCode::NO_CONTENT)
}
