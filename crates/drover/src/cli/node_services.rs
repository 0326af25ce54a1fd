//! `drover nodes start|stop|restart|logs|drain|undrain`: the services node
//! agents manage, and draining a machine. A command is stored for the
//! node's agent, which takes it at its next poll (at once while it is
//! connected); the CLI waits for its answer.

use std::time::Duration;

use anyhow::{Context, bail};
use drover_proto::nodes::{NodeCommandInfo, NodeCommandList, ServiceAction};
use http::Method;

use super::http::{Api, check, segment};
use super::jobs::{print_json, say};

/// How long the CLI waits for an agent's answer.
const ANSWER_WITHIN: Duration = Duration::from_secs(30);

#[derive(clap::Args)]
pub struct Target {
    /// The node (its name or id); none with --all.
    #[arg(required_unless_present = "all")]
    pub node: Option<String>,
    /// One service of it; all of them without.
    #[arg(conflicts_with = "all")]
    pub service: Option<String>,
    /// Every node's every service: Start All, Stop All, Restart All.
    #[arg(long)]
    pub all: bool,
}

pub async fn act(api: &Api, action: &str, target: Target, json: bool) -> anyhow::Result<()> {
    let asked = ServiceAction {
        action: action.to_string(),
        service: target.service,
    };
    let body = Some(serde_json::to_value(&asked)?);
    let made: Vec<NodeCommandInfo> = match target.node.filter(|_| !target.all) {
        Some(node) => {
            let path = format!("/admin/nodes/{}/services", segment(&node));
            let (status, answer) = api.call(Method::POST, &path, body).await?;
            check(status, &answer)?;
            vec![serde_json::from_value(answer).context("unexpected answer")?]
        }
        None => {
            let (status, answer) = api
                .call(Method::POST, "/admin/nodes/services", body)
                .await?;
            check(status, &answer)?;
            let list: NodeCommandList =
                serde_json::from_value(answer).context("unexpected answer")?;
            list.commands
        }
    };
    let mut answered = Vec::new();
    for command in made {
        answered.push(answer_of(api, command).await?);
    }
    if json {
        return print_json(&NodeCommandList { commands: answered });
    }
    let mut out = String::new();
    let mut failed = Vec::new();
    for c in &answered {
        let said = c.result.as_deref().unwrap_or("");
        match c.state.as_str() {
            "done" => out.push_str(&format!("{}: {said}\n", c.node_id)),
            "failed" => failed.push(format!("{}: {said}", c.node_id)),
            _ => out.push_str(&format!(
                "{}: not answered yet (the agent takes it when it is next connected; drover nodes ls shows whether it is up)\n",
                c.node_id
            )),
        }
    }
    if answered.is_empty() {
        out.push_str("no nodes\n");
    }
    say(&out)?;
    if !failed.is_empty() {
        bail!(
            "{} of {} failed:\n{}",
            failed.len(),
            answered.len(),
            failed.join("\n")
        );
    }
    Ok(())
}

pub async fn logs(api: &Api, node: &str, service: &str, json: bool) -> anyhow::Result<()> {
    let asked = ServiceAction {
        action: "logs".into(),
        service: Some(service.to_string()),
    };
    let path = format!("/admin/nodes/{}/services", segment(node));
    let (status, answer) = api
        .call(Method::POST, &path, Some(serde_json::to_value(&asked)?))
        .await?;
    check(status, &answer)?;
    let command: NodeCommandInfo = serde_json::from_value(answer).context("unexpected answer")?;
    let command = answer_of(api, command).await?;
    if json {
        return print_json(&command);
    }
    match command.state.as_str() {
        "done" => say(command.result.as_deref().unwrap_or("")),
        "failed" => bail!("{}", command.result.unwrap_or_default()),
        _ => bail!(
            "the agent of {node} has not answered within {}s: is it up? (drover nodes ls)",
            ANSWER_WITHIN.as_secs()
        ),
    }
}

pub async fn drain(api: &Api, node: &str, draining: bool) -> anyhow::Result<()> {
    let verb = if draining { "drain" } else { "undrain" };
    let path = format!("/admin/nodes/{}/{verb}", segment(node));
    let (status, body) = api.call(Method::POST, &path, None).await?;
    check(status, &body)?;
    say(&if draining {
        format!("{node} is draining: new requests go to other machines; running ones finish\n")
    } else {
        format!("{node} takes work again\n")
    })
}

/// Waits for the agent's answer to `command`, up to [`ANSWER_WITHIN`].
async fn answer_of(api: &Api, command: NodeCommandInfo) -> anyhow::Result<NodeCommandInfo> {
    let path = format!("/admin/nodes/commands/{}", segment(&command.id));
    let deadline = tokio::time::Instant::now() + ANSWER_WITHIN;
    let mut last = command;
    while matches!(last.state.as_str(), "queued" | "sent") && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let (status, body) = api.call(Method::GET, &path, None).await?;
        check(status, &body)?;
        last = serde_json::from_value(body).context("unexpected answer")?;
    }
    Ok(last)
}
