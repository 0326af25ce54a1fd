//! Nodes: the machines whose `drover agent` joined the hub. An operator
//! makes a join token (single-use or reusable, always expiring); an agent
//! trades it once for a node credential, which it keeps and sends with
//! every heartbeat. Only SHA-256s of tokens and credentials are stored,
//! in the store every hub on it shares. A node not heard from for three
//! heartbeats is down. `servers.rs`: the LLM servers agents report;
//! `commands.rs`: what the hub asks of agents (their services, drain).

pub mod beats;
pub mod commands;
pub mod servers;

use drover_proto::nodes::{
    CreateJoinToken, JoinRequest, JoinTokenInfo, Joined, NodeFacts, NodeHeartbeat, NodeInfo,
    NodeState,
};
use drover_store::{JoinRefused, JoinToken, Node};

use crate::error::ApiError;
use crate::hub::HubState;
use crate::keys::{digest, random_hex};

/// The longest and shortest a join token may live.
const MAX_TTL: std::time::Duration = std::time::Duration::from_secs(365 * 24 * 3600);
const MIN_TTL: std::time::Duration = std::time::Duration::from_secs(1);
const DEFAULT_TTL: std::time::Duration = std::time::Duration::from_secs(24 * 3600);
/// Bounds on what an agent reports: a machine has fewer GPUs than this,
/// and a name or a version is shorter.
const MAX_GPUS: usize = 64;
const MAX_TEXT: usize = 256;

const TOKEN_PREFIX: &str = "drv_j_";
const CREDENTIAL_PREFIX: &str = "drv_n_";

fn unix_now() -> i64 {
    crate::jobs::now_ms().div_euclid(1000)
}

fn bad(message: impl Into<String>, param: &'static str) -> ApiError {
    ApiError::bad_request(message, Some(param), "invalid_node")
}

fn token_info(t: &JoinToken, token: Option<String>) -> JoinTokenInfo {
    JoinTokenInfo {
        id: t.id.clone(),
        prefix: t.prefix.clone(),
        created_at: t.created_unix,
        expires_at: t.expires_unix,
        single_use: t.single_use != 0,
        used_at: t.used_unix,
        revoked_at: t.revoked_unix,
        token,
    }
}

/// Makes a join token; the token itself is in the answer, and nowhere
/// else ever.
pub async fn create_token(
    hub: &HubState,
    asked: CreateJoinToken,
) -> Result<JoinTokenInfo, ApiError> {
    let store = &crate::routes::store_of(hub)?.store;
    let ttl = match asked.ttl.as_deref() {
        None => DEFAULT_TTL,
        Some(text) => humantime::parse_duration(text.trim())
            .ok()
            .filter(|d| (MIN_TTL..=MAX_TTL).contains(d))
            .ok_or_else(|| {
                bad(
                    format!(
                        "ttl: a duration from 1s to 365d, such as 30m or 24h, not {:?}",
                        crate::error::echo(text)
                    ),
                    "ttl",
                )
            })?,
    };
    let token = random_hex::<32>(TOKEN_PREFIX)?;
    let now = unix_now();
    let stored = JoinToken {
        id: random_hex::<6>("jt_")?,
        sha256: digest(&token),
        prefix: token[..TOKEN_PREFIX.len() + 6].to_string(),
        created_unix: now,
        expires_unix: now.saturating_add(i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX)),
        single_use: i64::from(!asked.reusable),
        used_unix: None,
        revoked_unix: None,
    };
    store.insert_join_token(&stored).await?;
    tracing::info!(target: "drover::action", token = %stored.id, single_use = !asked.reusable, expires = stored.expires_unix, "join token created");
    Ok(token_info(&stored, Some(token)))
}

pub async fn tokens(hub: &HubState) -> Result<Vec<JoinTokenInfo>, ApiError> {
    let store = &crate::routes::store_of(hub)?.store;
    Ok(store
        .join_tokens()
        .await?
        .iter()
        .map(|t| token_info(t, None))
        .collect())
}

pub async fn revoke_token(hub: &HubState, id: &str) -> Result<(), ApiError> {
    let store = &crate::routes::store_of(hub)?.store;
    if store.revoke_join_token(id, unix_now()).await? {
        tracing::info!(target: "drover::action", token = %id, "join token revoked");
        Ok(())
    } else {
        Err(ApiError::NotFound {
            message: format!("no live join token {:?}", crate::error::echo(id)),
        })
    }
}

/// What an agent reports, checked against the bounds a real machine
/// keeps: a clear 400 naming the field for anything else.
fn check_facts(facts: &NodeFacts) -> Result<(), ApiError> {
    let texts = [
        ("facts.hostname", facts.hostname.as_str()),
        ("facts.os", facts.os.as_str()),
        ("facts.arch", facts.arch.as_str()),
        (
            "facts.os_version",
            facts.os_version.as_deref().unwrap_or(""),
        ),
    ];
    for (field, text) in texts {
        if text.len() > MAX_TEXT {
            return Err(bad(format!("{field}: at most {MAX_TEXT} bytes"), "facts"));
        }
    }
    if facts.gpus.len() > MAX_GPUS {
        return Err(bad(
            format!("facts.gpus: at most {MAX_GPUS}, not {}", facts.gpus.len()),
            "facts",
        ));
    }
    if facts
        .gpus
        .iter()
        .any(|g| g.name.len() > MAX_TEXT || g.memory_used_bytes > g.memory_total_bytes)
    {
        return Err(bad(
            "facts.gpus: a GPU's name is at most 256 bytes, and it uses no more memory than it has",
            "facts",
        ));
    }
    if facts.memory_available_bytes > facts.memory_total_bytes {
        return Err(bad(
            "facts.memory_available_bytes is more than facts.memory_total_bytes",
            "facts",
        ));
    }
    if facts.load_1m.is_some_and(|l| !l.is_finite() || l < 0.0) {
        return Err(bad(
            "facts.load_1m: a load average is a finite number from 0",
            "facts",
        ));
    }
    Ok(())
}

fn check_version(version: &str) -> Result<(), ApiError> {
    if version.is_empty() || version.len() > MAX_TEXT {
        return Err(bad("version: 1 to 256 bytes", "version"));
    }
    Ok(())
}

fn heartbeat_ms(hub: &HubState) -> u64 {
    u64::try_from(hub.config.nodes.heartbeat.as_millis()).unwrap_or(u64::MAX)
}

/// A machine joins with a join token: the node is stored, and its
/// credential is in the answer, once. A token that cannot let it in is
/// refused (401, saying why) and logged; nothing is stored.
pub async fn join(hub: &HubState, asked: JoinRequest) -> Result<Joined, ApiError> {
    let store = &crate::routes::store_of(hub)?.store;
    crate::name::check_name("node", &asked.name).map_err(|m| bad(m, "name"))?;
    check_version(&asked.version)?;
    check_facts(&asked.facts)?;
    let credential = random_hex::<32>(CREDENTIAL_PREFIX)?;
    let now = unix_now();
    let node = Node {
        id: format!("node_{}", uuid::Uuid::now_v7().simple()),
        name: asked.name.clone(),
        credential_sha256: digest(&credential),
        token_id: String::new(),
        joined_unix: now,
        last_seen_ms: crate::jobs::now_ms(),
        version: asked.version.clone(),
        facts: serde_json::to_string(&asked.facts)
            .map_err(|e| ApiError::Internal(e.to_string()))?,
        draining: 0,
        removed_unix: None,
        services: "[]".into(),
    };
    let prefix: String = asked.token.chars().take(TOKEN_PREFIX.len() + 6).collect();
    match store
        .join_node(&digest(asked.token.trim()), &node, now)
        .await?
    {
        Ok(()) => {
            tracing::info!(target: "drover::action", node = %node.id, name = %node.name, "node joined");
            Ok(Joined {
                node_id: node.id,
                credential,
                heartbeat_ms: heartbeat_ms(hub),
            })
        }
        Err(why) => {
            let said = match why {
                JoinRefused::Unknown => "is not one this hub made (mistyped, or another hub's)",
                JoinRefused::Used => "was for one machine, and one has joined with it already",
                JoinRefused::Expired => "has expired",
                JoinRefused::Revoked => "was revoked",
            };
            tracing::warn!(name = %crate::error::echo(&asked.name), token = %crate::error::echo(&prefix), "a join was refused: the token {said}");
            Err(ApiError::Unauthorized(format!(
                "the join token {said}: make a new one with drover nodes token create"
            )))
        }
    }
}

/// The node whose credential this is, which must be node `id`'s: no
/// credential is a 401, another node's a 403.
pub async fn authenticate(
    hub: &HubState,
    id: &str,
    credential: Option<&str>,
) -> Result<Node, ApiError> {
    let store = &crate::routes::store_of(hub)?.store;
    let Some(credential) = credential else {
        return Err(ApiError::Unauthorized(
            "a node's calls need its credential: send Authorization: Bearer <credential>".into(),
        ));
    };
    match store.node_by_credential(&digest(credential)).await? {
        Some(node) if node.id == id => Ok(node),
        Some(_) => Err(ApiError::Forbidden(format!(
            "this credential is another node's, not {:?}'s",
            crate::error::echo(id)
        ))),
        None => Err(ApiError::Unauthorized(
            "the node credential is not valid (the node was removed, or it is not this hub's): join again with a new token"
                .into(),
        )),
    }
}

/// A node's heartbeat, with its credential: its facts kept, and whether
/// it should run or drain.
pub async fn heartbeat(
    hub: &std::sync::Arc<HubState>,
    id: &str,
    credential: Option<&str>,
    peer: std::net::IpAddr,
    beat: NodeHeartbeat,
) -> Result<NodeState, ApiError> {
    let read_at = std::time::Instant::now();
    let node = authenticate(hub, id, credential).await?;
    check_version(&beat.version)?;
    check_facts(&beat.facts)?;
    servers::check(&beat.servers)?;
    commands::check_services(&beat.services)?;
    let address = match beat.address.as_deref() {
        Some(a) if a.is_empty() || a.len() > MAX_TEXT || a.contains(['/', '@', ' ']) => {
            return Err(bad(
                "address: a host name or IP address the hub reaches the node at",
                "address",
            ));
        }
        Some(a) => a.to_string(),
        None => peer.to_string(),
    };
    let facts =
        serde_json::to_string(&beat.facts).map_err(|e| ApiError::Internal(e.to_string()))?;
    let services =
        serde_json::to_string(&beat.services).map_err(|e| ApiError::Internal(e.to_string()))?;
    let kept = drover_store::NodeBeat {
        id: node.id.clone(),
        version: beat.version.clone(),
        facts,
        services,
        last_seen_ms: crate::jobs::now_ms(),
    };
    if beat.version == node.version {
        hub.node_beats.record(kept);
    } else {
        // A new version is written before the answer: an updated agent
        // says its update is done once this heartbeat is answered, and
        // whoever reads the node then sees the version it runs.
        crate::routes::store_of(hub)?
            .store
            .node_heartbeats(std::slice::from_ref(&kept))
            .await?;
    }
    servers::apply(hub, &node, read_at, &address, &beat.facts, beat.servers);
    Ok(NodeState {
        state: if node.draining != 0 { "drain" } else { "run" }.into(),
        heartbeat_ms: heartbeat_ms(hub),
    })
}

/// Every node, up or down.
pub async fn list(hub: &HubState) -> Result<Vec<NodeInfo>, ApiError> {
    let store = &crate::routes::store_of(hub)?.store;
    let now_ms = crate::jobs::now_ms();
    Ok(store
        .nodes()
        .await?
        .into_iter()
        .map(|n| info(n, now_ms, hub.config.nodes.heartbeat))
        .collect())
}

/// A node as listed at `now_ms`: down after three missed heartbeats.
pub fn info(n: Node, now_ms: i64, heartbeat: std::time::Duration) -> NodeInfo {
    let grace_ms = i64::try_from(heartbeat.as_millis() * 3).unwrap_or(i64::MAX);
    NodeInfo {
        up: now_ms - n.last_seen_ms <= grace_ms,
        facts: serde_json::from_str(&n.facts).unwrap_or_default(),
        services: serde_json::from_str(&n.services).unwrap_or_default(),
        id: n.id,
        name: n.name,
        version: n.version,
        joined_at: n.joined_unix,
        last_seen_at: n.last_seen_ms.div_euclid(1000),
        draining: n.draining != 0,
    }
}
