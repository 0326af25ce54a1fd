//! Roll-outs: every node updated to a release, `batch` nodes at a time.
//! Each node of a batch gets an `update` command (the version, its
//! SHA-256 and how long the new build has to prove itself healthy); its
//! agent downloads the build, checks the hash, replaces its binary,
//! starts it, and the new build answers the command once it has
//! heartbeated the hub, or the old one answers it failed after rolling
//! back by itself. The roll-out halts at the first batch with a failed
//! node: the rest keep their version.

use std::sync::Arc;
use std::time::Duration;

use drover_proto::nodes::ServiceAction;
use drover_proto::releases::{RolloutInfo, RolloutNode, StartRollout};
use drover_store::Rollout;
use serde::{Deserialize, Serialize};

use crate::error::ApiError;
use crate::hub::HubState;

/// Nodes a batch may hold at most.
const MAX_BATCH: u32 = 1000;
/// Time beyond the health deadline for the download, the restart and the
/// answer.
const SLACK: Duration = Duration::from_secs(60);
const LOOK_EVERY: Duration = Duration::from_millis(200);

/// What a roll-out keeps of its progress (the row's `detail`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Detail {
    nodes: Vec<RolloutNode>,
    #[serde(default)]
    halted: Option<String>,
}

fn info(r: Rollout) -> RolloutInfo {
    let detail: Detail = serde_json::from_str(&r.detail).unwrap_or_default();
    RolloutInfo {
        id: r.id,
        version: r.version,
        batch: u32::try_from(r.batch).unwrap_or(1),
        state: r.state,
        created_ms: r.created_ms,
        finished_ms: r.finished_ms,
        nodes: detail.nodes,
        halted: detail.halted,
    }
}

pub async fn get(hub: &HubState, id: &str) -> Result<RolloutInfo, ApiError> {
    let store = &crate::routes::store_of(hub)?.store;
    store
        .rollout(id)
        .await?
        .map(info)
        .ok_or_else(|| ApiError::NotFound {
            message: format!("no roll-out {:?}", crate::error::echo(id)),
        })
}

pub async fn list(hub: &HubState) -> Result<Vec<RolloutInfo>, ApiError> {
    let store = &crate::routes::store_of(hub)?.store;
    Ok(store.rollouts(20).await?.into_iter().map(info).collect())
}

/// Starts a roll-out of `version` to every node; it runs in this hub.
pub async fn start(hub: &Arc<HubState>, asked: StartRollout) -> Result<RolloutInfo, ApiError> {
    crate::releases::check_version(&asked.version)?;
    let batch = asked.batch.unwrap_or(1);
    if !(1..=MAX_BATCH).contains(&batch) {
        return Err(ApiError::bad_request(
            format!("batch: from 1 to {MAX_BATCH} nodes, not {batch}"),
            Some("batch"),
            "invalid_rollout",
        ));
    }
    let store = &crate::routes::store_of(hub)?.store;
    let release = store
        .release_of(&asked.version)
        .await?
        .ok_or_else(|| ApiError::NotFound {
            message: format!(
                "no release {:?}: publish it first with drover release publish",
                crate::error::echo(&asked.version)
            ),
        })?;
    if store
        .rollouts(20)
        .await?
        .iter()
        .any(|r| r.state == "running")
    {
        return Err(ApiError::Conflict(
            "a roll-out is running: let it end (drover nodes rollouts) before starting another"
                .into(),
        ));
    }
    let nodes = store
        .nodes()
        .await?
        .into_iter()
        .map(|n| {
            let on = n.version == release.version;
            RolloutNode {
                node_id: n.id,
                name: n.name,
                state: if on { "done" } else { "waiting" }.into(),
                message: on.then(|| format!("already on {}", release.version)),
                from: n.version,
            }
        })
        .collect();
    let detail = Detail {
        nodes,
        halted: None,
    };
    let rollout = Rollout {
        id: format!("ro_{}", uuid::Uuid::now_v7().simple()),
        version: release.version.clone(),
        batch: i64::from(batch),
        state: "running".into(),
        created_ms: crate::jobs::now_ms(),
        finished_ms: None,
        detail: serde_json::to_string(&detail).map_err(|e| ApiError::Internal(e.to_string()))?,
    };
    store.insert_rollout(&rollout).await?;
    tracing::info!(target: "drover::action", rollout = %rollout.id, version = %release.version, batch, "roll-out started");
    hub.tasks.spawn(run(
        hub.clone(),
        rollout.id.clone(),
        release.version,
        release.sha256,
        batch as usize,
        detail,
    ));
    Ok(info(rollout))
}

async fn save(hub: &HubState, id: &str, state: &str, detail: &Detail) {
    let Ok(jobs) = crate::routes::store_of(hub) else {
        return;
    };
    let finished = (state != "running").then(crate::jobs::now_ms);
    let text = serde_json::to_string(detail).unwrap_or_default();
    if let Err(e) = jobs.store.update_rollout(id, state, &text, finished).await {
        tracing::warn!(rollout = %id, error = %e, "cannot store the roll-out's progress");
    }
}

async fn run(
    hub: Arc<HubState>,
    id: String,
    version: String,
    sha256: String,
    batch: usize,
    mut detail: Detail,
) {
    let deadline = hub.config.nodes.update_deadline;
    let waiting: Vec<usize> = (0..detail.nodes.len())
        .filter(|&i| detail.nodes[i].state == "waiting")
        .collect();
    for chunk in waiting.chunks(batch) {
        let mut commands = Vec::new();
        let up = up_nodes(&hub).await;
        for &i in chunk {
            let node = &mut detail.nodes[i];
            if !up.contains(&node.node_id) {
                node.state = "skipped".into();
                node.message = Some("down when its batch came".into());
                continue;
            }
            let asked = ServiceAction {
                action: "update".into(),
                service: None,
            };
            let args = serde_json::json!({
                "version": version,
                "sha256": sha256,
                "deadline_ms": u64::try_from(deadline.as_millis()).unwrap_or(u64::MAX),
            });
            match crate::nodes::commands::for_node_with(&hub, &node.node_id, &asked, args).await {
                Ok(c) => {
                    node.state = "updating".into();
                    commands.push((i, c.id));
                }
                Err(e) => {
                    node.state = "failed".into();
                    node.message = Some(format!("could not ask it: {e}"));
                }
            }
        }
        save(&hub, &id, "running", &detail).await;
        let give_up = tokio::time::Instant::now() + deadline + SLACK;
        while commands
            .iter()
            .any(|(i, _)| detail.nodes[*i].state == "updating")
        {
            tokio::select! {
                _ = hub.shutdown.cancelled() => return,
                _ = tokio::time::sleep(LOOK_EVERY) => {}
            }
            let late = tokio::time::Instant::now() >= give_up;
            for (i, command) in &commands {
                let node = &mut detail.nodes[*i];
                if node.state != "updating" {
                    continue;
                }
                match crate::nodes::commands::get(&hub, command).await {
                    Ok(c) if c.state == "done" => {
                        node.state = "done".into();
                        node.message = c.result;
                    }
                    Ok(c) if c.state == "failed" => {
                        node.state = "failed".into();
                        node.message = c.result;
                    }
                    _ if late => {
                        node.state = "failed".into();
                        node.message = Some(format!(
                            "no answer within {}",
                            humantime::format_duration(deadline + SLACK)
                        ));
                    }
                    _ => {}
                }
            }
        }
        let failed: Vec<String> = chunk
            .iter()
            .map(|&i| &detail.nodes[i])
            .filter(|n| n.state == "failed")
            .map(|n| format!("{}: {}", n.name, n.message.as_deref().unwrap_or("failed")))
            .collect();
        if !failed.is_empty() {
            detail.halted = Some(format!(
                "halted at a batch with a failed node ({}); the nodes after it keep their version",
                failed.join("; ")
            ));
            tracing::warn!(rollout = %id, version = %version, "roll-out halted: {}", failed.join("; "));
            save(&hub, &id, "halted", &detail).await;
            return;
        }
    }
    tracing::info!(target: "drover::action", rollout = %id, version = %version, "roll-out done");
    save(&hub, &id, "done", &detail).await;
}

/// The ids of the nodes heard from within three heartbeats.
async fn up_nodes(hub: &HubState) -> Vec<String> {
    let Ok(jobs) = crate::routes::store_of(hub) else {
        return Vec::new();
    };
    let now = crate::jobs::now_ms();
    jobs.store
        .nodes()
        .await
        .unwrap_or_default()
        .into_iter()
        .map(|n| crate::nodes::info(n, now, hub.config.nodes.heartbeat))
        .filter(|n| n.up)
        .map(|n| n.id)
        .collect()
}
