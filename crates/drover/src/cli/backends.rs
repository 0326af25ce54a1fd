//! `drover backends ls|add|rm|drain|undrain`: the management API from the
//! shell.

use std::time::Duration;

use anyhow::Context;
use drover_proto::admin::{BackendInfo, BackendList};
use http::Method;

use super::http::{Hub, check};

#[derive(clap::Args)]
pub struct BackendsArgs {
    #[command(flatten)]
    pub target: Hub,
    #[command(subcommand)]
    pub command: BackendsCommand,
}

#[derive(clap::Subcommand)]
pub enum BackendsCommand {
    /// List backends, their models, slots and health.
    Ls,
    /// Add a backend: [KIND=]URL[,slots=N][,max_concurrent=N][,probe=generate][,name=NAME][,api_key=KEY]; without a kind it is detected.
    Add {
        #[arg(value_name = "[KIND=]URL")]
        backend: String,
    },
    /// Remove a backend; requests running there finish.
    Rm { name: String },
    /// Stop sending new work to a backend; running requests finish.
    Drain {
        name: String,
        /// Wait until nothing runs there any more.
        #[arg(long)]
        wait: bool,
    },
    /// Send work to a drained backend again.
    Undrain { name: String },
}

pub async fn run(args: BackendsArgs) -> anyhow::Result<()> {
    let api = args.target.api();
    match args.command {
        BackendsCommand::Ls => {
            let (status, body) = api.call(Method::GET, "/admin/backends", None).await?;
            check(status, &body)?;
            let list: BackendList = serde_json::from_value(body).context("unexpected answer")?;
            print_table(&list.backends);
        }
        BackendsCommand::Add { backend } => {
            let spec = super::backend_arg::parse(&backend).map_err(anyhow::Error::msg)?;
            let (status, body) = api
                .call(
                    Method::POST,
                    "/admin/backends",
                    Some(serde_json::to_value(&spec)?),
                )
                .await?;
            check(status, &body)?;
            let info: BackendInfo = serde_json::from_value(body).context("unexpected answer")?;
            println!("added {} ({})", info.name, info.url);
            // Its first probe says whether anything answers there.
            let path = format!("/admin/backends/{}", info.name);
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
            loop {
                let (status, body) = api.call(Method::GET, &path, None).await?;
                check(status, &body)?;
                let now: BackendInfo = serde_json::from_value(body).context("unexpected answer")?;
                if let Some(err) = &now.last_error {
                    println!("it does not answer yet: {err}");
                    println!(
                        "drover keeps probing it; `drover backends rm {}` removes it",
                        now.name
                    );
                    break;
                }
                if now.last_probe_unix_ms.is_some() {
                    let loaded = now.models.iter().filter(|m| m.loaded).count();
                    println!(
                        "it answers: {}, {} model{} ({loaded} loaded)",
                        now.kind,
                        now.models.len(),
                        if now.models.len() == 1 { "" } else { "s" }
                    );
                    break;
                }
                if std::time::Instant::now() >= deadline {
                    println!("it has not answered its first probe yet");
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
        BackendsCommand::Rm { name } => {
            let (status, body) = api
                .call(Method::DELETE, &format!("/admin/backends/{name}"), None)
                .await?;
            check(status, &body)?;
            println!("removed {name}");
        }
        BackendsCommand::Drain { name, wait } => {
            let (status, body) = api
                .call(Method::POST, &format!("/admin/backends/{name}/drain"), None)
                .await?;
            check(status, &body)?;
            let mut info: BackendInfo =
                serde_json::from_value(body).context("unexpected answer")?;
            println!(
                "draining {name}: {} request(s) still running",
                info.in_flight
            );
            while wait && info.in_flight > 0 {
                tokio::time::sleep(Duration::from_millis(500)).await;
                let (status, body) = api
                    .call(Method::GET, &format!("/admin/backends/{name}"), None)
                    .await?;
                check(status, &body)?;
                info = serde_json::from_value(body).context("unexpected answer")?;
            }
            if wait {
                println!("{name} is drained: nothing runs there");
            }
        }
        BackendsCommand::Undrain { name } => {
            let (status, body) = api
                .call(
                    Method::POST,
                    &format!("/admin/backends/{name}/undrain"),
                    None,
                )
                .await?;
            check(status, &body)?;
            println!("{name} takes work again");
        }
    }
    Ok(())
}

fn print_table(backends: &[BackendInfo]) {
    if backends.is_empty() {
        println!("no backends");
        return;
    }
    use super::table::Align::{Left, Right};
    let mut rows = Vec::new();
    let mut notes = Vec::new();
    for b in backends {
        let models: Vec<String> = b
            .models
            .iter()
            .map(|m| {
                let outside = if m.external > 0 {
                    format!(" +{} outside", m.external)
                } else {
                    String::new()
                };
                let limit = m
                    .limit
                    .map(|l| format!(" (takes {l} at once for now)"))
                    .unwrap_or_default();
                format!(
                    "{}{} {}/{}{outside}{limit}",
                    m.id,
                    if m.loaded { "" } else { " (not loaded)" },
                    m.busy,
                    m.slots
                )
            })
            .collect();
        rows.push(vec![
            b.name.clone(),
            b.kind.clone(),
            b.url.clone(),
            b.breaker.clone(),
            if b.draining { "yes" } else { "no" }.to_string(),
            b.in_flight.to_string(),
            models.join(", "),
        ]);
        notes.push(about(b));
    }
    let table = super::table::render(
        &[
            "NAME",
            "KIND",
            "URL",
            "BREAKER",
            "DRAINING",
            "BUSY",
            "MODELS (busy/slots)",
        ],
        &[Left, Left, Left, Left, Left, Right, Left],
        &rows,
    );
    let mut lines = table.lines();
    if let Some(head) = lines.next() {
        println!("{head}");
    }
    for (line, about) in lines.zip(notes) {
        println!("{line}");
        for note in about {
            println!("    {note}");
        }
    }
}

/// What an operator should know of a backend beyond its row.
fn about(b: &BackendInfo) -> Vec<String> {
    let mut about = Vec::new();
    if let Some(v) = &b.version {
        about.push(format!("version {v}"));
    }
    if let Some(m) = &b.mode {
        about.push(format!("{m} mode"));
    }
    if let Some(n) = b.max_concurrent {
        about.push(format!("max_concurrent {n}"));
    }
    if !b.apis.is_empty() {
        about.push(format!("also serves /v1/{}", b.apis.join(", /v1/")));
    }
    match (b.can_load, b.can_unload) {
        (true, true) => about.push("loads and unloads models".into()),
        (true, false) => about.push("loads models".into()),
        _ => {}
    }
    match (b.memory_used, b.memory_total) {
        (Some(used), Some(total)) => about.push(format!("memory {} of {}", gib(used), gib(total))),
        (Some(used), None) => about.push(format!("models use {}", gib(used))),
        _ => {}
    }
    if b.probe == "generate" {
        about.push("probe generates".into());
    }
    if b.saturated {
        about.push("its own queue is full: no new work".into());
    }
    if b.dropped_models > 0 {
        about.push(format!(
            "{} more models listed than limits.max_models_per_backend takes",
            b.dropped_models
        ));
    }
    let mut lines = Vec::new();
    if !about.is_empty() {
        lines.push(about.join("; "));
    }
    if let Some(err) = &b.last_error {
        lines.push(format!("unhealthy: {err}"));
    }
    lines
}

/// Bytes as GiB with one decimal.
fn gib(bytes: u64) -> String {
    format!("{:.1} GiB", bytes as f64 / f64::from(1u32 << 30))
}
