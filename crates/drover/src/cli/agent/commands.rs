//! The agent's side of the hub's commands: a long poll (the agent calls
//! the hub; the node needs no inbound port), each command carried out on
//! the managed services and answered once.

use std::time::Duration;

use anyhow::bail;
use http::Method;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::Credential;
use super::services::Services;
use crate::cli::http::Api;

/// The longest a poll waits on the hub: under common proxies' 60 s.
const WAIT_S: u64 = 25;
const MAX_PAUSE: Duration = Duration::from_secs(30);

/// Polls until stopped; `Some` when an update is ready to take this
/// build's place (its command is answered by the build that ends it).
pub async fn run(
    api: &Api,
    node: &Credential,
    services: &Services,
    state: &std::path::Path,
    stop: &CancellationToken,
) -> anyhow::Result<Option<super::update::Prepared>> {
    let path = format!("/v1/nodes/{}/commands", node.node_id);
    let mut pause = Duration::from_millis(500);
    loop {
        let polled = tokio::select! {
            () = stop.cancelled() => return Ok(None),
            r = api.call(Method::POST, &path, Some(json!({"wait_s": WAIT_S}))) => r,
        };
        let wait = match polled {
            Ok((200, body)) => {
                pause = Duration::from_millis(500);
                for c in body["commands"].as_array().into_iter().flatten() {
                    let id = c["id"].as_str().unwrap_or_default();
                    let action = c["action"].as_str().unwrap_or_default();
                    let service = c["service"].as_str().unwrap_or_default();
                    let done = if action == "update" {
                        match super::update::prepare(api, node, state, id, &c["args"]).await {
                            Ok(Some(prepared)) => return Ok(Some(prepared)),
                            Ok(None) => Ok(format!("already on {}", crate::cli::VERSION)),
                            Err(why) => Err(why),
                        }
                    } else {
                        services.command(action, service)
                    };
                    let (ok, result) = match done {
                        Ok(said) => (true, said),
                        Err(why) => (false, why),
                    };
                    let what = match (action, service) {
                        ("update", _) => {
                            format!("to {}", c["args"]["version"].as_str().unwrap_or("?"))
                        }
                        (_, "") => "all".to_string(),
                        (_, one) => one.to_string(),
                    };
                    eprintln!(
                        "agent: {action} {what}: {}",
                        if ok { "done" } else { result.as_str() }
                    );
                    let answer = api
                        .call(
                            Method::POST,
                            &format!("{path}/{id}"),
                            Some(json!({"ok": ok, "result": result})),
                        )
                        .await;
                    if let Ok((status, body)) = answer
                        && status != 204
                    {
                        eprintln!(
                            "agent: the hub answered a command's result with {status}: {body}"
                        );
                    }
                }
                Duration::ZERO
            }
            Ok((204, _)) => Duration::ZERO,
            Ok((status @ (401 | 403), body)) => {
                crate::cli::http::check(status, &body)?;
                bail!("the hub refused this node's credential ({status})");
            }
            Ok(_) | Err(_) => {
                pause = (pause * 2).min(MAX_PAUSE);
                pause
            }
        };
        tokio::select! {
            () = stop.cancelled() => return Ok(None),
            () = tokio::time::sleep(wait) => {}
        }
    }
}
