//! `drover hubs ls`: the hubs of a cluster (several hubs on one
//! PostgreSQL database), which one leads, its lease (admin key).

use anyhow::Context;
use drover_proto::cluster::HubList;
use http::Method;

use super::http::{Hub, check};
use super::jobs::{print_json, say};
use super::table::{self, Align};

#[derive(clap::Args)]
pub struct HubsArgs {
    #[command(flatten)]
    pub target: Hub,
    /// Print the hub's JSON instead.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: HubsCommand,
}

#[derive(clap::Subcommand)]
pub enum HubsCommand {
    /// Every hub seen in the last minute: its role, epoch, grants held,
    /// and the leader's lease.
    Ls,
}

pub async fn run(args: HubsArgs) -> anyhow::Result<()> {
    let api = args.target.api();
    match args.command {
        HubsCommand::Ls => {
            let (status, body) = api.call(Method::GET, "/admin/hubs", None).await?;
            check(status, &body)?;
            let list: HubList = serde_json::from_value(body).context("unexpected answer")?;
            if args.json {
                return print_json(&list);
            }
            say(&hub_table(&list))
        }
    }
}

fn hub_table(list: &HubList) -> String {
    let rows: Vec<Vec<String>> = list
        .hubs
        .iter()
        .map(|h| {
            let this = if h.id == list.this_hub { " (this)" } else { "" };
            let lease = match (&list.leader, list.lease_left_ms) {
                (Some(leader), Some(left)) if *leader == h.id => {
                    format!("{} left", table::age(left as f64 / 1000.0))
                }
                _ => "-".into(),
            };
            vec![
                format!("{}{this}", h.id),
                h.role.clone(),
                h.epoch.to_string(),
                lease,
                h.grants.to_string(),
                format!("{} ago", table::age(h.seen_ms_ago as f64 / 1000.0)),
                h.version.clone(),
                h.address.clone(),
            ]
        })
        .collect();
    let mut out = format!(
        "cluster {}: {}\n",
        list.cluster,
        match &list.leader {
            Some(leader) => format!("{leader} leads, epoch {}", list.epoch),
            None => "no hub leads now".into(),
        }
    );
    if let Some(note) = &list.note {
        out.push_str(&format!("({note})\n"));
    }
    out.push_str(&table::render(
        &[
            "HUB", "ROLE", "EPOCH", "LEASE", "GRANTS", "SEEN", "VERSION", "ADDRESS",
        ],
        &[
            Align::Left,
            Align::Left,
            Align::Right,
            Align::Right,
            Align::Right,
            Align::Right,
            Align::Left,
            Align::Left,
        ],
        &rows,
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use drover_proto::cluster::HubInfo;

    #[test]
    fn the_leader_shows_its_lease_and_this_hub_is_marked() {
        let hub = |id: &str, role: &str| HubInfo {
            id: id.into(),
            address: format!("http://{id}:8700"),
            version: "0.1.0".into(),
            role: role.into(),
            epoch: 3,
            grants: 0,
            seen_ms_ago: 1500,
            started_ms: 0,
        };
        let list = HubList {
            cluster: "default".into(),
            this_hub: "b".into(),
            leader: Some("a".into()),
            epoch: 3,
            lease_left_ms: Some(8000),
            hubs: vec![hub("a", "leader"), hub("b", "follower")],
            note: None,
        };
        let text = hub_table(&list);
        assert!(
            text.starts_with("cluster default: a leads, epoch 3\n"),
            "{text}"
        );
        let a = text.lines().find(|l| l.starts_with("a ")).unwrap();
        assert!(a.contains("leader") && a.contains("8s left"), "{text}");
        let b = text.lines().find(|l| l.starts_with("b (this)")).unwrap();
        assert!(b.contains("follower") && !b.contains("left"), "{text}");
    }
}
