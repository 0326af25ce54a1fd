//! What the hub asks of node agents. An operator's start, stop, restart
//! (of one service or all of a node's, or of every node's: Start All, Stop
//! All) or request for a service's log tail is a command stored for the
//! node; its agent takes it with a long poll (every call still goes from
//! the agent to the hub) and answers it once. Commands live in the store,
//! so an agent polling any hub on it gets them. Draining a node is a flag
//! on the node: its servers take no new work, running requests finish.

use std::sync::Arc;
use std::time::Duration;

use drover_proto::nodes::{NodeCommandInfo, ServiceAction, ServiceState};
use drover_store::{Node, NodeCommand};

use crate::error::ApiError;
use crate::hub::HubState;

/// More services than one machine runs under an agent.
const MAX_SERVICES: usize = 64;
/// The longest an agent's poll waits: under common proxies' 60 s.
const MAX_WAIT: Duration = Duration::from_secs(25);
/// How often a waiting poll looks in the store for commands another hub
/// stored; this hub's own wake it at once.
const RECHECK: Duration = Duration::from_secs(1);
/// The most an answer (a log tail) may hold.
pub const MAX_RESULT: usize = 256 * 1024;
/// Commands an agent takes at once.
const BATCH: i64 = 16;

pub const ACTIONS: [&str; 4] = ["start", "stop", "restart", "logs"];

fn bad(message: impl Into<String>, param: &'static str) -> ApiError {
    ApiError::bad_request(message, Some(param), "invalid_node")
}

/// A heartbeat's services, bounded as one machine's.
pub fn check_services(services: &[ServiceState]) -> Result<(), ApiError> {
    if services.len() > MAX_SERVICES {
        return Err(bad(
            format!("services: at most {MAX_SERVICES}, not {}", services.len()),
            "services",
        ));
    }
    for (i, s) in services.iter().enumerate() {
        let long = |t: &str| t.len() > 256;
        if long(&s.name) || long(&s.state) || s.last_exit.as_deref().is_some_and(long) {
            return Err(bad(
                format!("services[{i}]: a name, state or last exit is at most 256 bytes"),
                "services",
            ));
        }
    }
    Ok(())
}

pub fn info(c: NodeCommand) -> NodeCommandInfo {
    NodeCommandInfo {
        args: serde_json::from_str(&c.args).ok(),
        id: c.id,
        node_id: c.node_id,
        action: c.action,
        service: c.service,
        state: c.state,
        created_ms: c.created_ms,
        result: c.result,
    }
}

/// A node by id or name (a name two nodes share is ambiguous: say so).
pub async fn find_node(hub: &HubState, which: &str) -> Result<Node, ApiError> {
    let store = &crate::routes::store_of(hub)?.store;
    let nodes = store.nodes().await?;
    if let Some(n) = nodes.iter().find(|n| n.id == which) {
        return Ok(n.clone());
    }
    let named: Vec<&Node> = nodes.iter().filter(|n| n.name == which).collect();
    match named.as_slice() {
        [one] => Ok((*one).clone()),
        [] => Err(ApiError::NotFound {
            message: format!(
                "no node {:?} (drover nodes ls lists them)",
                crate::error::echo(which)
            ),
        }),
        _ => Err(bad(
            format!(
                "{} nodes are named {:?}: name one by its id",
                named.len(),
                crate::error::echo(which)
            ),
            "node",
        )),
    }
}

fn check_action(asked: &ServiceAction) -> Result<(), ApiError> {
    if !ACTIONS.contains(&asked.action.as_str()) {
        return Err(bad(
            format!(
                "action: one of {}, not {:?}",
                ACTIONS.join(", "),
                crate::error::echo(&asked.action)
            ),
            "action",
        ));
    }
    match asked.service.as_deref() {
        None if asked.action == "logs" => Err(bad("logs: name the service", "service")),
        Some(s) => crate::name::check_name("service", s).map_err(|m| bad(m, "service")),
        None => Ok(()),
    }
}

/// Stores a command for `node`'s agent and wakes its poll.
async fn enqueue(
    hub: &HubState,
    node: &Node,
    asked: &ServiceAction,
    args: Option<serde_json::Value>,
) -> Result<NodeCommandInfo, ApiError> {
    let store = &crate::routes::store_of(hub)?.store;
    let command = NodeCommand {
        id: format!("cmd_{}", uuid::Uuid::now_v7().simple()),
        node_id: node.id.clone(),
        action: asked.action.clone(),
        service: asked.service.clone().unwrap_or_default(),
        created_ms: crate::jobs::now_ms(),
        state: "queued".into(),
        sent_ms: None,
        finished_ms: None,
        result: None,
        args: args.map(|a| a.to_string()).unwrap_or_default(),
    };
    store.insert_node_command(&command).await?;
    tracing::info!(target: "drover::action", node = %node.name, action = %command.action, service = %command.service, command = %command.id, "a command for a node");
    hub.node_commands.notify_waiters();
    Ok(info(command))
}

/// One node's service command.
pub async fn for_node(
    hub: &HubState,
    which: &str,
    asked: ServiceAction,
) -> Result<NodeCommandInfo, ApiError> {
    check_action(&asked)?;
    let node = find_node(hub, which).await?;
    enqueue(hub, &node, &asked, None).await
}

/// A command only the hub itself gives (a roll-out's `update`), with what
/// it carries.
pub async fn for_node_with(
    hub: &HubState,
    which: &str,
    asked: &ServiceAction,
    args: serde_json::Value,
) -> Result<NodeCommandInfo, ApiError> {
    let node = find_node(hub, which).await?;
    enqueue(hub, &node, asked, Some(args)).await
}

/// Start All, Stop All, Restart All: the command for every node.
pub async fn for_all(
    hub: &HubState,
    asked: ServiceAction,
) -> Result<Vec<NodeCommandInfo>, ApiError> {
    check_action(&asked)?;
    if asked.action == "logs" {
        return Err(bad("logs: ask one node for one service's", "action"));
    }
    let store = &crate::routes::store_of(hub)?.store;
    let mut made = Vec::new();
    for node in store.nodes().await? {
        made.push(enqueue(hub, &node, &asked, None).await?);
    }
    Ok(made)
}

pub async fn get(hub: &HubState, id: &str) -> Result<NodeCommandInfo, ApiError> {
    let store = &crate::routes::store_of(hub)?.store;
    store
        .node_command(id)
        .await?
        .map(info)
        .ok_or_else(|| ApiError::NotFound {
            message: format!("no command {:?}", crate::error::echo(id)),
        })
}

/// An agent's long poll: its queued commands, or none once `wait` ends.
pub async fn poll(
    hub: &Arc<HubState>,
    node: &Node,
    wait: Duration,
) -> Result<Vec<NodeCommandInfo>, ApiError> {
    let store = &crate::routes::store_of(hub)?.store;
    let deadline = tokio::time::Instant::now() + wait.min(MAX_WAIT);
    loop {
        // Registered before the look, so a command stored in between
        // still wakes it.
        let woken = hub.node_commands.notified();
        let taken = store
            .take_node_commands(&node.id, crate::jobs::now_ms(), BATCH)
            .await?;
        if !taken.is_empty() || tokio::time::Instant::now() >= deadline {
            return Ok(taken.into_iter().map(info).collect());
        }
        tokio::select! {
            _ = hub.shutdown.cancelled() => return Ok(Vec::new()),
            _ = woken => {}
            _ = tokio::time::sleep(RECHECK) => {}
            _ = tokio::time::sleep_until(deadline) => {}
        }
    }
}

/// An agent's answer to a command it took.
pub async fn answer(
    hub: &HubState,
    node: &Node,
    id: &str,
    ok: bool,
    result: &str,
) -> Result<(), ApiError> {
    if result.len() > MAX_RESULT {
        return Err(ApiError::PayloadTooLarge { limit: MAX_RESULT });
    }
    let store = &crate::routes::store_of(hub)?.store;
    if store
        .finish_node_command(&node.id, id, ok, result, crate::jobs::now_ms())
        .await?
    {
        Ok(())
    } else {
        Err(ApiError::Conflict(format!(
            "command {:?} is not one this node took and has not answered",
            crate::error::echo(id)
        )))
    }
}

/// Drains or undrains a node: stored for every hub, and applied to this
/// hub's servers of the node at once.
pub async fn set_draining(hub: &HubState, which: &str, draining: bool) -> Result<(), ApiError> {
    let node = find_node(hub, which).await?;
    let store = &crate::routes::store_of(hub)?.store;
    store.set_node_draining(&node.id, draining).await?;
    super::servers::set_draining(hub, &node.id, draining);
    tracing::info!(target: "drover::action", node = %node.name, draining, "node drain state changed");
    Ok(())
}
