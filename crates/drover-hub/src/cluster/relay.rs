//! What a follower passes to its leader as it came: the routes whose answer
//! is the leader's picture (the dashboard's overview and events, the queue,
//! the backends with their busy counts), the model actions and backend
//! changes only the leader may make, and the routes of capability workers
//! and node agents, whose state lives in the leader's scheduler. So a
//! dashboard, `drover top`, a worker or an agent may be pointed at any hub.
//!
//! The leader checks the caller's key (keys are shared); an admin route is
//! relayed only after this hub's own admin door has let it through, so the
//! door's checks of `Host` and `Origin` hold on every hub. The answer comes
//! back as the leader gave it, streamed (the events stream too), with
//! `x-drover-leader` naming the hub that answered.

use std::net::IpAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use drover_proto::cluster::link::SECRET_HEADER;
use http::{HeaderName, HeaderValue, Method, Uri, header};
use http_body_util::BodyExt;

use super::Role;
use crate::error::ApiError;
use crate::forward::ForwardError;
use crate::hub::HubState;

/// Set on a relayed request: the hub it comes through, for the leader's
/// log. (The cluster's secret, shown with it, is what keeps a hub that
/// thinks it follows from passing a relayed request on again.)
pub const RELAYED_BY: &str = "x-drover-relayed-by";
/// Set on a relayed request, with the cluster's secret: the address the
/// caller came from (a node agent's, which the leader reaches its servers
/// at).
pub const PEER: &str = "x-drover-peer";
/// Set on a relayed answer: the hub that answered it.
pub const LEADER: &str = "x-drover-leader";

/// The most a relayed request's body may be: these routes take small JSON.
const MAX_BODY: usize = 8 * 1024 * 1024;

/// How much longer than a worker's longest poll a relayed answer's head
/// may take.
const HEAD_SLACK: std::time::Duration = std::time::Duration::from_secs(10);

/// The management API's routes the leader answers.
fn admin_route(method: &Method, path: &str) -> bool {
    let get = method == Method::GET;
    match path {
        "/admin/overview" | "/admin/events" | "/admin/plans" => get,
        "/admin/backends" | "/admin/workers" => true,
        _ => {
            path.starts_with("/admin/backends/")
                || path.starts_with("/admin/models/")
                || path.starts_with("/admin/workers/")
        }
    }
}

/// The clients', workers' and agents' routes the leader answers.
fn api_route(method: &Method, path: &str) -> bool {
    if path == "/v1/queue" {
        return method == Method::GET;
    }
    if path == "/v1/workers" || path.starts_with("/v1/workers/") || path == "/v1/tasks/plan" {
        return true;
    }
    if let Some(rest) = path.strip_prefix("/v1/tasks/") {
        return method == Method::POST
            && ["/heartbeat", "/complete", "/fail"]
                .iter()
                .any(|end| rest.ends_with(end));
    }
    if let Some(rest) = path.strip_prefix("/v1/nodes/") {
        // A release's download is the store's, which every hub reads.
        return method == Method::POST && !rest.contains("/releases/");
    }
    false
}

/// The layer inside the admin door.
pub async fn admin(State(hub): State<Arc<HubState>>, req: Request, next: Next) -> Response {
    if admin_route(req.method(), req.uri().path()) {
        relay_or_run(&hub, req, next).await
    } else {
        next.run(req).await
    }
}

/// The layer on the rest of the API.
pub async fn api(State(hub): State<Arc<HubState>>, req: Request, next: Next) -> Response {
    if api_route(req.method(), req.uri().path()) {
        relay_or_run(&hub, req, next).await
    } else {
        next.run(req).await
    }
}

async fn relay_or_run(hub: &Arc<HubState>, req: Request, next: Next) -> Response {
    let role = hub.cluster.role();
    // Relayed by a hub that took this one for the leader: answered here
    // only if it is; never passed on again.
    if hub.cluster.secret.shown_in(req.headers()) {
        if role.leads() {
            return next.run(req).await;
        }
        let reason = format!(
            "a hub took {} for the leader; it is {}",
            hub.cluster.hub,
            role.as_str()
        );
        return ApiError::from(ForwardError::NoLeader { reason }).into_response();
    }
    let (leader, address) = match role {
        Role::Follower {
            leader, address, ..
        } => (leader, address),
        // No hub leads that this one knows of: what only the leader may
        // answer is not answered here, where it would be lost.
        Role::Leaderless { reason } => {
            return ApiError::from(ForwardError::NoLeader { reason }).into_response();
        }
        Role::Alone | Role::Leader { .. } => return next.run(req).await,
    };
    match relay(hub, &leader, &address, req).await {
        Ok(answer) => answer,
        Err(e) => e.into_response(),
    }
}

/// The address a request came from: its connection's, or, relayed by a
/// hub of the cluster (it shows the secret), the one that hub saw.
pub fn caller_ip(hub: &HubState, headers: &http::HeaderMap, peer: IpAddr) -> IpAddr {
    if !hub.cluster.secret.shown_in(headers) {
        return peer;
    }
    headers
        .get(PEER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(peer)
}

/// Headers that belong to one connection, not to the request; those only
/// a hub of the cluster sets; and the browser's word on where a request
/// comes from, which this hub's own door has checked already (against its
/// own address: the leader's would refuse every same-site page's action).
fn hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        RELAYED_BY
            | PEER
            | SECRET_HEADER
            | "origin"
            | "referer"
            | "sec-fetch-site"
            | "sec-fetch-mode"
            | "sec-fetch-dest"
            | "sec-fetch-user"
            | "connection"
            | "keep-alive"
            | "proxy-connection"
            | "transfer-encoding"
            | "upgrade"
            | "te"
            | "trailer"
            | "host"
            | "content-length"
    )
}

async fn relay(
    hub: &HubState,
    leader: &str,
    address: &str,
    req: Request,
) -> Result<Response, ApiError> {
    let no_leader = |reason: String| ApiError::from(ForwardError::NoLeader { reason });
    let peer = req
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip());
    let secret = hub
        .cluster
        .secret
        .known()
        .and_then(|s| HeaderValue::from_str(s).ok())
        .ok_or_else(|| {
            no_leader("this hub has not read the cluster's secret from its store yet".into())
        })?;
    let (parts, body) = req.into_parts();
    let body = http_body_util::Limited::new(body, MAX_BODY)
        .collect()
        .await
        .map_err(|e| {
            if e.is::<http_body_util::LengthLimitError>() {
                ApiError::PayloadTooLarge { limit: MAX_BODY }
            } else {
                ApiError::bad_request(
                    format!("could not read the request: {e}"),
                    None,
                    "invalid_body",
                )
            }
        })?
        .to_bytes();
    let path = parts
        .uri
        .path_and_query()
        .map_or("/", http::uri::PathAndQuery::as_str);
    let uri: Uri = format!("{}{path}", address.trim_end_matches('/'))
        .parse()
        .map_err(|e| no_leader(format!("the leader's address {address}: {e}")))?;
    let this_hub = HeaderValue::from_str(&hub.cluster.hub).ok();
    let build = || {
        let mut out = http::Request::builder()
            .method(parts.method.clone())
            .uri(uri.clone());
        for (name, value) in &parts.headers {
            if !hop_by_hop(name) {
                out = out.header(name, value);
            }
        }
        if let Some(authority) = uri.authority() {
            out = out.header(header::HOST, authority.as_str());
        }
        if let Some(id) = &this_hub {
            out = out.header(RELAYED_BY, id);
        }
        if let Some(ip) = peer {
            out = out.header(PEER, ip.to_string());
        }
        out = out.header(SECRET_HEADER, secret.clone());
        out.body(http_body_util::Full::new(body.clone()))
            .unwrap_or_default()
    };
    // The head may take as long as a worker's longest poll; no longer.
    let within = hub.config.workers.poll_wait_max + HEAD_SLACK;
    let answer = tokio::time::timeout(within, hub.registry.client().send(build))
        .await
        .map_err(|_| {
            no_leader(format!(
                "the leader {leader} at {address} did not answer within {within:?}"
            ))
        })?
        .map_err(|e| {
            no_leader(format!(
                "the leader {leader} at {address} did not answer: {e}"
            ))
        })?;
    let (mut parts, incoming) = answer.into_parts();
    // Its length stays: the body is passed on as it comes.
    let names: Vec<HeaderName> = parts
        .headers
        .keys()
        .filter(|n| hop_by_hop(n) && *n != header::CONTENT_LENGTH)
        .cloned()
        .collect();
    for name in names {
        parts.headers.remove(name);
    }
    if let Ok(v) = HeaderValue::from_str(leader) {
        parts.headers.insert(LEADER, v);
    }
    Ok(Response::from_parts(parts, Body::new(incoming)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_leaders_routes_are_relayed_and_the_rest_are_not() {
        let (get, post) = (Method::GET, Method::POST);
        for (method, path) in [
            (&get, "/admin/overview"),
            (&get, "/admin/events"),
            (&get, "/admin/backends"),
            (&post, "/admin/backends/gpu1/drain"),
            (&post, "/admin/models/qwen3:8b"),
            (&get, "/admin/workers"),
        ] {
            assert!(admin_route(method, path), "{method} {path}");
        }
        for (method, path) in [
            (&get, "/v1/queue"),
            (&post, "/v1/workers"),
            (&post, "/v1/workers/w1/poll"),
            (&post, "/v1/tasks/t1/complete"),
            (&post, "/v1/nodes/join"),
            (&post, "/v1/nodes/n1/heartbeat"),
            (&post, "/v1/nodes/n1/commands/c1"),
        ] {
            assert!(api_route(method, path), "{method} {path}");
        }
        for (method, path) in [
            (&get, "/admin/keys"),
            (&get, "/admin/hubs"),
            (&get, "/admin/jobs"),
            (&post, "/admin/overview"),
        ] {
            assert!(!admin_route(method, path), "{method} {path}");
        }
        for (method, path) in [
            (&post, "/v1/chat/completions"),
            (&get, "/v1/models"),
            (&post, "/v1/tasks"),
            (&get, "/v1/tasks/t1"),
            (&get, "/v1/nodes/n1/releases/1.2.3"),
            (&get, "/v1/jobs"),
        ] {
            assert!(!api_route(method, path), "{method} {path}");
        }
    }
}
