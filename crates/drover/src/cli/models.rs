//! `drover models ls|load|unload|pin|unpin`: where each model is, and the
//! operator's model actions, over the management API.

use anyhow::Context;
use drover_proto::admin::{BackendList, BackendModelInfo, ModelAction, ModelTarget};
use http::Method;

use super::http::{Api, Hub, check};

#[derive(clap::Args)]
pub struct ModelsArgs {
    #[command(flatten)]
    pub target: Hub,
    #[command(subcommand)]
    pub command: ModelsCommand,
}

#[derive(clap::Subcommand)]
pub enum ModelsCommand {
    /// Every model on every backend: state, slots busy/total, memory, load
    /// time, last used, pinned.
    Ls,
    /// Load a model: on the backend named, else where it would be ready
    /// soonest (nothing to do if some backend holds it). Makes room by
    /// unloading idle models, as for a request.
    Load {
        model: String,
        #[arg(long)]
        backend: Option<String>,
    },
    /// Unload a model, from the backend named or from every one.
    Unload {
        model: String,
        #[arg(long)]
        backend: Option<String>,
    },
    /// Pin a model: never evicted or unloaded for idleness, and loaded
    /// where it fits whenever no backend holds it.
    Pin { model: String },
    /// Undo a pin.
    Unpin { model: String },
}

pub async fn run(args: ModelsArgs) -> anyhow::Result<()> {
    let api = args.target.api();
    let (verb, model, backend) = match args.command {
        ModelsCommand::Ls => return ls(&api).await,
        ModelsCommand::Load { model, backend } => ("load", model, backend),
        ModelsCommand::Unload { model, backend } => ("unload", model, backend),
        ModelsCommand::Pin { model } => ("pin", model, None),
        ModelsCommand::Unpin { model } => ("unpin", model, None),
    };
    // The model in the body: a name travels there as it is, where a path
    // would be folded at `.` and `..` by anything in between.
    let body = serde_json::to_value(ModelTarget {
        model: Some(model),
        backend,
    })?;
    let path = format!("/admin/models/{verb}");
    let (status, body) = api.call(Method::POST, &path, Some(body)).await?;
    check(status, &body)?;
    let done: ModelAction = serde_json::from_value(body).context("unexpected answer")?;
    let on = done.backends.join(", ");
    match (verb, done.already, done.seconds) {
        ("load", true, _) => println!("{} is loaded already on {on}", done.model),
        ("load", false, Some(s)) => println!("loaded {} on {on} in {s:.1} s", done.model),
        ("load", false, None) => println!("loaded {} on {on}", done.model),
        ("unload", true, _) => match &done.note {
            Some(note) => println!("{} was not loaded anywhere asked: {note}", done.model),
            None => println!("{} was not loaded anywhere asked", done.model),
        },
        ("unload", false, _) => println!("unloaded {} from {on}", done.model),
        (verb, already, _) => {
            let state = if verb == "pin" { "pinned" } else { "unpinned" };
            let was = if already { " already" } else { "" };
            let held = if on.is_empty() {
                "loaded nowhere yet".to_string()
            } else {
                format!("loaded on {on}")
            };
            println!("{} is{was} {state} ({held})", done.model);
        }
    }
    Ok(())
}

async fn ls(api: &Api) -> anyhow::Result<()> {
    let (status, body) = api.call(Method::GET, "/admin/backends", None).await?;
    check(status, &body)?;
    let list: BackendList = serde_json::from_value(body).context("unexpected answer")?;
    let mut rows: Vec<[String; 8]> = Vec::new();
    for b in &list.backends {
        for m in &b.models {
            rows.push(row(&b.name, m));
        }
    }
    if rows.is_empty() {
        println!("no models");
        return Ok(());
    }
    rows.sort();
    use super::table::Align::{Left, Right};
    let rows: Vec<Vec<String>> = rows.into_iter().map(Vec::from).collect();
    print!(
        "{}",
        super::table::render(
            &[
                "MODEL",
                "BACKEND",
                "STATE",
                "SLOTS",
                "MEMORY",
                "LOAD",
                "LAST USED",
                "PINNED"
            ],
            &[Left, Left, Left, Right, Right, Right, Right, Left],
            &rows,
        )
    );
    Ok(())
}

/// One model on one backend: the hub's residency (with the server's own
/// word where it says more, and progress while loading), slots busy/total,
/// memory, how long its loads take, how long since it was used, pinned.
fn row(backend: &str, m: &BackendModelInfo) -> [String; 8] {
    let mut state = m
        .residency
        .clone()
        .or_else(|| m.state.clone())
        .unwrap_or_else(|| if m.loaded { "loaded" } else { "unloaded" }.to_string());
    if let Some(p) = m.progress.filter(|_| state == "loading") {
        state = format!("loading {:.0}%", p * 100.0);
    }
    if m.state.as_deref() == Some("sleeping") && state == "unloaded" {
        state = "sleeping".into();
    }
    if m.load_error.is_some() {
        state = format!("{state} (load failed)");
    }
    let dash = || "-".to_string();
    [
        m.id.clone(),
        backend.to_string(),
        state,
        format!("{}/{}", m.busy, m.slots),
        m.size_bytes.map_or_else(dash, drover_core::size::gigabytes),
        m.load_seconds.map_or_else(dash, |s| format!("{s:.1}s")),
        match m.idle_seconds {
            None if m.busy > 0 => "now".into(),
            None => dash(),
            Some(s) => format!("{} ago", super::table::age(s)),
        },
        if m.pinned { "yes" } else { "" }.to_string(),
    ]
}
