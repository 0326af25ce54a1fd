//! `drover nodes update --version V [--batch N]`: a roll-out, followed to
//! its end: each node's part as it changes, then done, or halted with why.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, bail};
use drover_proto::releases::{RolloutInfo, StartRollout};
use http::Method;

use super::http::{Api, check, segment};
use super::jobs::{print_json, say};

pub async fn update(api: &Api, version: String, batch: u32, json: bool) -> anyhow::Result<()> {
    let asked = StartRollout {
        version,
        batch: Some(batch),
    };
    let (status, body) = api
        .call(
            Method::POST,
            "/admin/rollouts",
            Some(serde_json::to_value(&asked)?),
        )
        .await?;
    check(status, &body)?;
    let mut rollout: RolloutInfo = serde_json::from_value(body).context("unexpected answer")?;
    let path = format!("/admin/rollouts/{}", segment(&rollout.id));
    if !json {
        say(&format!(
            "roll-out {} of {} to {} nodes, {} at a time\n",
            rollout.id,
            rollout.version,
            rollout.nodes.len(),
            rollout.batch
        ))?;
    }
    let mut shown: BTreeMap<String, String> = BTreeMap::new();
    loop {
        if !json {
            for n in &rollout.nodes {
                let line = format!(
                    "{}: {}{}",
                    n.name,
                    n.state,
                    n.message
                        .as_deref()
                        .map(|m| format!(" ({m})"))
                        .unwrap_or_default()
                );
                if shown.get(&n.node_id) != Some(&line) {
                    say(&format!("{line}\n"))?;
                    shown.insert(n.node_id.clone(), line);
                }
            }
        }
        if rollout.state != "running" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
        let (status, body) = api.call(Method::GET, &path, None).await?;
        check(status, &body)?;
        rollout = serde_json::from_value(body).context("unexpected answer")?;
    }
    if json {
        print_json(&rollout)?;
    }
    match rollout.state.as_str() {
        "done" => {
            if !json {
                say(&format!("every node is on {}\n", rollout.version))?;
            }
            Ok(())
        }
        _ => bail!(
            "{}",
            rollout
                .halted
                .unwrap_or_else(|| format!("the roll-out ended {}", rollout.state))
        ),
    }
}
