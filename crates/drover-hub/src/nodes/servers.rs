//! The LLM servers node agents report. Each heartbeat lists the servers the
//! agent found on its machine with what each said ([`Discovery`], the same
//! wire type the hub's own probe reads): the hub makes each a backend named
//! `NODE:PORT` on the node's machine, feeds what it said to the scheduler
//! through the prober's one [`observe`], and removes the backends a
//! heartbeat no longer lists. Inference still goes straight from the hub
//! to the server, at the node's address. A node not heard from for three
//! heartbeats is down: its backends leave the fleet until it reports again.
//!
//! [`Discovery`]: drover_proto::discovery::Discovery
//! [`observe`]: crate::prober::observe

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use drover_proto::admin::BackendSpec;
use drover_proto::nodes::{NodeFacts, NodeServer};
use drover_store::Node;

use crate::error::ApiError;
use crate::hub::HubState;
use crate::registry::RegistryError;

/// More servers than one machine runs.
const MAX_SERVERS: usize = 64;
const MAX_URL: usize = 2048;

/// The nodes whose agents reported servers, with their backends.
#[derive(Default)]
pub struct Reported {
    nodes: Mutex<BTreeMap<String, Live>>,
}

struct Live {
    name: String,
    seen: Instant,
    /// Its backends' names.
    backends: BTreeSet<String>,
    /// Its backends take no new work: the node drains.
    drained: bool,
    /// When an operator last drained or undrained it here: a heartbeat
    /// that read the node before then carries the old word, and is not
    /// followed.
    drain_set: Option<Instant>,
}

/// A heartbeat's servers, checked against what one machine runs: a 400
/// naming the field for anything else.
pub fn check(servers: &[NodeServer]) -> Result<(), ApiError> {
    let bad = |message: String| ApiError::bad_request(message, Some("servers"), "invalid_node");
    if servers.len() > MAX_SERVERS {
        return Err(bad(format!(
            "servers: at most {MAX_SERVERS}, not {}",
            servers.len()
        )));
    }
    for (i, s) in servers.iter().enumerate() {
        if s.url.len() > MAX_URL {
            return Err(bad(format!("servers[{i}].url: at most {MAX_URL} bytes")));
        }
        drover_backends::Endpoint::parse(&s.url)
            .map_err(|e| bad(format!("servers[{i}].url: {e}")))?;
        // `auto`: a server the agent was told of but has not reached yet.
        if s.kind != "auto" {
            s.kind
                .parse::<drover_backends::BackendKind>()
                .map_err(|e| bad(format!("servers[{i}].kind: {e}")))?;
        }
        if s.error.as_ref().is_some_and(|e| e.len() > MAX_URL) {
            return Err(bad(format!("servers[{i}].error: at most {MAX_URL} bytes")));
        }
    }
    Ok(())
}

/// Where the hub reaches a server the agent reached at `url`: at the
/// node's address when the agent saw it on loopback or every interface,
/// else where the agent said.
fn reachable(url: &str, node: &str) -> Option<(String, u16)> {
    drover_backends::Endpoint::parse(url).ok()?;
    let parsed = http::Uri::try_from(url).ok()?;
    let host = parsed.host()?.trim_start_matches('[').trim_end_matches(']');
    let port = parsed
        .port_u16()
        .unwrap_or(if parsed.scheme_str() == Some("https") {
            443
        } else {
            80
        });
    let local = host == "localhost"
        || host
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.is_loopback() || ip.is_unspecified());
    if !local {
        return Some((url.to_string(), port));
    }
    let scheme = parsed.scheme_str().unwrap_or("http");
    let node = match node.parse::<IpAddr>() {
        Ok(IpAddr::V6(v6)) => format!("[{v6}]"),
        _ => node.to_string(),
    };
    let path = parsed.path().trim_end_matches('/');
    Some((format!("{scheme}://{node}:{port}{path}"), port))
}

/// Applies one heartbeat's servers: `address` is where the node's servers
/// are reached (the agent's `--advertise`, else where the heartbeat came
/// from).
/// `read_at`: when `node` was read from the store.
pub fn apply(
    hub: &Arc<HubState>,
    node: &Node,
    read_at: Instant,
    address: &str,
    facts: &NodeFacts,
    servers: Vec<NodeServer>,
) {
    hub.machines.reported(&node.name, facts);
    let now = hub.dispatcher.now();
    let mut names = BTreeSet::new();
    let mut added = Vec::new();
    for server in servers {
        let Some((url, port)) = reachable(&server.url, address) else {
            continue;
        };
        let name = format!("{}:{port}", node.name);
        // Added here because an earlier leader had it: the node's agent
        // reports to this hub now, and owns it.
        if !owned_by(hub, &node.id, &name) && hub.link.take_from_fleet(&name) {
            hub.remove_backend(&name);
        }
        let entry = match hub.registry.by_name(&name) {
            Some(entry) if owned_by(hub, &node.id, &name) => entry,
            Some(_) => {
                tracing::debug!(node = %node.name, backend = %name, "a backend already has this name: the node's server is not added");
                continue;
            }
            None => {
                let spec = BackendSpec {
                    name: Some(name.clone()),
                    kind: server.kind.clone(),
                    url: url.clone(),
                    machine: Some(node.name.clone()),
                    ..BackendSpec::default()
                };
                match hub.add_reported_backend(&spec) {
                    Ok(entry) => {
                        tracing::info!(target: "drover::action", node = %node.name, backend = %name, url = %drover_backends::redact(&url), kind = %server.kind, "a node's server joined the fleet");
                        added.push(name.clone());
                        entry
                    }
                    // Configured too: the hub probes it itself.
                    Err(RegistryError::SameServer { .. }) => continue,
                    Err(e) => {
                        tracing::warn!(node = %node.name, backend = %name, error = %e, "a node's server could not be added");
                        continue;
                    }
                }
            }
        };
        names.insert(name);
        let started = now.saturating_sub(Duration::from_millis(server.age_ms));
        let result = match (server.discovery, server.error) {
            (Some(discovery), _) => Ok(discovery),
            (None, error) => Err(error.unwrap_or_else(|| "its agent could not reach it".into())),
        };
        crate::prober::observe(hub, &entry, started, result);
    }
    let draining = node.draining != 0;
    let (gone, to_drain) = {
        let mut nodes = drover_core::sync::lock(&hub.node_servers.nodes);
        let live = nodes.entry(node.id.clone()).or_insert_with(|| Live {
            name: node.name.clone(),
            seen: Instant::now(),
            backends: BTreeSet::new(),
            drained: false,
            drain_set: None,
        });
        live.seen = Instant::now();
        let before = std::mem::replace(&mut live.backends, names);
        let gone: Vec<String> = before.difference(&live.backends).cloned().collect();
        // The node's drain, set on any hub, reaches its servers here: all
        // of them when it changed, the new ones while it holds. A node
        // read before this hub's operator changed it says the old word.
        let stale = live.drain_set.is_some_and(|at| at > read_at);
        let to_drain: Vec<String> = if !stale && live.drained != draining {
            live.drained = draining;
            live.backends.iter().cloned().collect()
        } else if live.drained {
            added
        } else {
            Vec::new()
        };
        (gone, (to_drain, live.drained))
    };
    drain_backends(hub, &to_drain.0, to_drain.1);
    for name in gone {
        if hub.remove_backend(&name) {
            tracing::info!(target: "drover::action", node = %node.name, backend = %name, "a node's server is gone: it left the fleet");
        }
    }
}

fn drain_backends(hub: &HubState, names: &[String], draining: bool) {
    for name in names {
        if let Some(entry) = hub.registry.by_name(name) {
            hub.dispatcher.apply(drover_scheduler::Event::Draining {
                backend: entry.id,
                draining,
            });
        }
    }
}

/// Drains (or undrains) the servers this hub has of a node, at once: new
/// requests go elsewhere, running ones finish.
pub fn set_draining(hub: &HubState, node: &str, draining: bool) {
    let names: Vec<String> = {
        let mut nodes = drover_core::sync::lock(&hub.node_servers.nodes);
        match nodes.get_mut(node) {
            Some(live) => {
                live.drained = draining;
                live.drain_set = Some(Instant::now());
                live.backends.iter().cloned().collect()
            }
            None => Vec::new(),
        }
    };
    drain_backends(hub, &names, draining);
}

fn owned_by(hub: &HubState, node: &str, backend: &str) -> bool {
    drover_core::sync::lock(&hub.node_servers.nodes)
        .get(node)
        .is_some_and(|live| live.backends.contains(backend))
}

/// The backends of a node's servers, by node id, for views.
pub fn backends_of(hub: &HubState) -> BTreeMap<String, Vec<String>> {
    drover_core::sync::lock(&hub.node_servers.nodes)
        .iter()
        .map(|(id, live)| (id.clone(), live.backends.iter().cloned().collect()))
        .collect()
}

/// Every heartbeat: a node not heard from for three is down, and its
/// servers leave the fleet (running requests finish; nothing new goes
/// there) until it reports them again.
pub async fn run_sweeper(hub: Arc<HubState>) {
    let every = hub.config.nodes.heartbeat;
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = hub.shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let grace = every.saturating_mul(3);
        let down: Vec<(String, Vec<String>)> = {
            let mut nodes = drover_core::sync::lock(&hub.node_servers.nodes);
            nodes
                .values_mut()
                .filter(|live| live.seen.elapsed() > grace && !live.backends.is_empty())
                .map(|live| {
                    (
                        live.name.clone(),
                        std::mem::take(&mut live.backends).into_iter().collect(),
                    )
                })
                .collect()
        };
        for (node, backends) in down {
            tracing::warn!(node = %node, servers = backends.len(), "a node missed three heartbeats: it is down, and its servers leave the fleet");
            for name in backends {
                hub.remove_backend(&name);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::reachable;

    #[test]
    fn a_server_on_the_agents_loopback_is_reached_at_the_nodes_address() {
        assert_eq!(
            reachable("http://127.0.0.1:8080", "10.0.0.7"),
            Some(("http://10.0.0.7:8080".into(), 8080))
        );
        assert_eq!(
            reachable("http://localhost:11434/", "fd00::7"),
            Some(("http://[fd00::7]:11434".into(), 11434))
        );
        assert_eq!(
            reachable("http://0.0.0.0:1234/api", "box.lan"),
            Some(("http://box.lan:1234/api".into(), 1234))
        );
        assert_eq!(
            reachable("http://10.1.1.1:8000", "10.0.0.7"),
            Some(("http://10.1.1.1:8000".into(), 8000))
        );
        assert_eq!(reachable("not a url", "10.0.0.7"), None);
    }
}
