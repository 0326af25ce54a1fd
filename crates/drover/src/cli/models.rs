//! `drover models ls|load|unload`: where each model is, and the operator's
//! model actions, over the management API.

use anyhow::Context;
use drover_proto::admin::{BackendList, ModelAction, ModelTarget};
use http::Method;

use super::http::{Api, check};

#[derive(clap::Args)]
pub struct ModelsArgs {
    /// The hub's URL.
    #[arg(
        long,
        env = "DROVER_HUB",
        default_value = "http://127.0.0.1:8700",
        global = true
    )]
    pub hub: String,
    /// The hub's admin key, if it has one.
    #[arg(long, env = "DROVER_ADMIN_KEY", global = true, hide_env_values = true)]
    pub admin_key: Option<String>,
    #[command(subcommand)]
    pub command: ModelsCommand,
}

#[derive(clap::Subcommand)]
pub enum ModelsCommand {
    /// Every model on every backend: state, slots busy/total, size.
    Ls,
    /// Load a model, on the backend named or on one that can and has not.
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
}

pub async fn run(args: ModelsArgs) -> anyhow::Result<()> {
    let api = Api::new(&args.hub, args.admin_key.clone());
    let (verb, model, backend) = match args.command {
        ModelsCommand::Ls => return ls(&api).await,
        ModelsCommand::Load { model, backend } => ("load", model, backend),
        ModelsCommand::Unload { model, backend } => ("unload", model, backend),
    };
    let body = serde_json::to_value(ModelTarget { backend })?;
    let path = format!("/admin/models/{}/{verb}", path_segment(&model));
    let (status, body) = api.call(Method::POST, &path, Some(body)).await?;
    check(status, &body)?;
    let done: ModelAction = serde_json::from_value(body).context("unexpected answer")?;
    let on = done.backends.join(", ");
    match (verb, done.already, done.seconds) {
        ("load", true, _) => println!("{} is loaded already on {on}", done.model),
        ("load", false, Some(s)) => println!("loaded {} on {on} in {s:.1} s", done.model),
        ("load", false, None) => println!("loaded {} on {on}", done.model),
        (_, true, _) => println!("{} was not loaded anywhere asked", done.model),
        _ => println!("unloaded {} from {on}", done.model),
    }
    Ok(())
}

async fn ls(api: &Api) -> anyhow::Result<()> {
    let (status, body) = api.call(Method::GET, "/admin/backends", None).await?;
    check(status, &body)?;
    let list: BackendList = serde_json::from_value(body).context("unexpected answer")?;
    let mut rows: Vec<(String, String, String, String, String)> = Vec::new();
    for b in &list.backends {
        for m in &b.models {
            rows.push((
                m.id.clone(),
                b.name.clone(),
                m.state
                    .clone()
                    .unwrap_or_else(|| if m.loaded { "loaded" } else { "unloaded" }.to_string()),
                format!("{}/{}", m.busy, m.slots),
                m.size_bytes
                    .map_or_else(|| "-".to_string(), drover_core::size::gigabytes),
            ));
        }
    }
    if rows.is_empty() {
        println!("no models");
        return Ok(());
    }
    rows.sort();
    println!(
        "{:<36} {:<20} {:<10} {:>8} {:>8}",
        "MODEL", "BACKEND", "STATE", "SLOTS", "SIZE"
    );
    for (model, backend, state, slots, size) in rows {
        println!("{model:<36} {backend:<20} {state:<10} {slots:>8} {size:>8}");
    }
    Ok(())
}

/// A model name as one path segment run: letters and digits and
/// `-_.:/~` as they are, anything else percent-encoded.
fn path_segment(model: &str) -> String {
    let mut out = String::with_capacity(model.len());
    for b in model.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.:/~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
