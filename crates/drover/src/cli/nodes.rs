//! `drover nodes ls` and `drover nodes token create|ls|revoke`: the
//! fleet's machines and the join tokens that let them in (admin key);
//! their services and drain are `node_services.rs`.

use anyhow::Context;
use drover_proto::nodes::{CreateJoinToken, JoinTokenInfo, JoinTokenList, NodeInfo, NodeList};
use http::Method;

use super::http::{Hub, check, segment};
use super::jobs::{print_json, say};
use super::table::{self, Align};

#[derive(clap::Args)]
pub struct NodesArgs {
    #[command(flatten)]
    pub target: Hub,
    /// Print the hub's JSON instead.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: NodesCommand,
}

#[derive(clap::Subcommand)]
pub enum NodesCommand {
    /// Every machine: up or down, its agent's version, CPUs, memory, GPUs.
    Ls,
    /// Join tokens: what `drover agent --token` takes to join a machine.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Start a node's service, or all its services (--all: every node's).
    Start(super::node_services::Target),
    /// Stop a node's service, or all its services (--all: every node's).
    Stop(super::node_services::Target),
    /// Restart a node's service, or all its services (--all: every node's).
    Restart(super::node_services::Target),
    /// The tail of what a node's service printed.
    Logs { node: String, service: String },
    /// New requests go to other machines; running ones finish.
    Drain { node: String },
    /// The node's servers take work again.
    Undrain { node: String },
    /// Update every node to a release (drover release publish), a batch
    /// at a time; halts at the first batch with a node that failed.
    Update {
        #[arg(long)]
        version: String,
        /// Nodes updated at once.
        #[arg(long, default_value_t = 1)]
        batch: u32,
    },
}

#[derive(clap::Subcommand)]
pub enum TokenCommand {
    /// Make a join token (shown once): one machine, once, within a day,
    /// unless told otherwise.
    Create {
        /// How long it lets machines join: 30m, 24h, 7d.
        #[arg(long, default_value = "24h")]
        ttl: String,
        /// Any number of machines may join with it until it expires.
        #[arg(long)]
        reusable: bool,
    },
    /// Every join token: used, expired, revoked (never the tokens).
    Ls,
    /// Revoke a join token: no machine joins with it any more.
    Revoke { id: String },
}

pub async fn run(args: NodesArgs) -> anyhow::Result<()> {
    let api = args.target.api();
    let json = args.json;
    match args.command {
        NodesCommand::Ls => {
            let (status, body) = api.call(Method::GET, "/admin/nodes", None).await?;
            check(status, &body)?;
            let list: NodeList = serde_json::from_value(body).context("unexpected answer")?;
            if json {
                return print_json(&list);
            }
            if list.nodes.is_empty() {
                return say(
                    "no nodes: join one with drover agent --hub URL --token $(drover nodes token create)\n",
                );
            }
            say(&node_table(&list.nodes, super::jobs::now_secs()))
        }
        NodesCommand::Start(target) => super::node_services::act(&api, "start", target, json).await,
        NodesCommand::Stop(target) => super::node_services::act(&api, "stop", target, json).await,
        NodesCommand::Restart(target) => {
            super::node_services::act(&api, "restart", target, json).await
        }
        NodesCommand::Logs { node, service } => {
            super::node_services::logs(&api, &node, &service, json).await
        }
        NodesCommand::Drain { node } => super::node_services::drain(&api, &node, true).await,
        NodesCommand::Update { version, batch } => {
            super::rollout::update(&api, version, batch, json).await
        }
        NodesCommand::Undrain { node } => super::node_services::drain(&api, &node, false).await,
        NodesCommand::Token { command } => match command {
            TokenCommand::Create { ttl, reusable } => {
                let asked = CreateJoinToken {
                    ttl: Some(ttl),
                    reusable,
                };
                let (status, body) = api
                    .call(
                        Method::POST,
                        "/admin/nodes/tokens",
                        Some(serde_json::to_value(&asked)?),
                    )
                    .await?;
                check(status, &body)?;
                let made: JoinTokenInfo =
                    serde_json::from_value(body).context("unexpected answer")?;
                if json {
                    return print_json(&made);
                }
                let token = made.token.context("the hub's answer has no token")?;
                let left = made.expires_at - super::jobs::now_secs();
                super::jobs::note(&format!(
                    "join token {} ({}, for {}): shown once; on the machine run drover agent --hub URL --token TOKEN",
                    made.id,
                    if made.single_use {
                        "one machine"
                    } else {
                        "any number of machines"
                    },
                    table::age(left as f64)
                ));
                say(&format!("{token}\n"))
            }
            TokenCommand::Ls => {
                let (status, body) = api.call(Method::GET, "/admin/nodes/tokens", None).await?;
                check(status, &body)?;
                let list: JoinTokenList =
                    serde_json::from_value(body).context("unexpected answer")?;
                if json {
                    return print_json(&list);
                }
                say(&token_table(&list.tokens, super::jobs::now_secs()))
            }
            TokenCommand::Revoke { id } => {
                let path = format!("/admin/nodes/tokens/{}", segment(&id));
                let (status, body) = api.call(Method::DELETE, &path, None).await?;
                check(status, &body)?;
                say(&format!("{id} is revoked\n"))
            }
        },
    }
}

fn gib(bytes: u64) -> String {
    format!("{:.1} GiB", bytes as f64 / f64::from(1u32 << 30))
}

fn node_table(nodes: &[NodeInfo], now: i64) -> String {
    let rows: Vec<Vec<String>> = nodes
        .iter()
        .map(|n| {
            let f = &n.facts;
            vec![
                n.name.clone(),
                if !n.up {
                    "down".into()
                } else if n.draining {
                    "draining".into()
                } else {
                    "up".into()
                },
                n.version.clone(),
                f.cpus.to_string(),
                format!(
                    "{} of {}",
                    gib(f.memory_available_bytes),
                    gib(f.memory_total_bytes)
                ),
                if f.gpus.is_empty() {
                    "-".into()
                } else {
                    f.gpus
                        .iter()
                        .map(|g| format!("{} {}", g.name, gib(g.memory_total_bytes)))
                        .collect::<Vec<_>>()
                        .join(", ")
                },
                if n.services.is_empty() {
                    "-".into()
                } else {
                    format!(
                        "{}/{} running",
                        n.services.iter().filter(|s| s.state == "running").count(),
                        n.services.len()
                    )
                },
                super::jobs::ago(n.last_seen_at, now),
                n.id.clone(),
            ]
        })
        .collect();
    use Align::{Left, Right};
    table::render(
        &[
            "NAME",
            "STATE",
            "VERSION",
            "CPUS",
            "MEMORY FREE",
            "GPUS",
            "SERVICES",
            "HEARD",
            "ID",
        ],
        &[Left, Left, Left, Right, Right, Left, Left, Right, Left],
        &rows,
    )
}

fn token_table(tokens: &[JoinTokenInfo], now: i64) -> String {
    if tokens.is_empty() {
        return "no join tokens\n".into();
    }
    let rows: Vec<Vec<String>> = tokens
        .iter()
        .map(|t| {
            let state = if t.revoked_at.is_some() {
                "revoked"
            } else if t.single_use && t.used_at.is_some() {
                "used"
            } else if t.expires_at <= now {
                "expired"
            } else {
                "live"
            };
            vec![
                t.id.clone(),
                format!("{}...", t.prefix),
                state.into(),
                if t.single_use { "once" } else { "reusable" }.into(),
                super::jobs::ago(t.created_at, now),
            ]
        })
        .collect();
    use Align::{Left, Right};
    table::render(
        &["ID", "TOKEN", "STATE", "USE", "CREATED"],
        &[Left, Left, Left, Left, Right],
        &rows,
    )
}
