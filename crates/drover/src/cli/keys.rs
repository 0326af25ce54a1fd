//! `drover keys create|ls|revoke`: API keys, over the management API. A
//! new key is printed once; the hub keeps only its hash.

use anyhow::Context;
use drover_proto::admin::{KeyCreate, KeyCreated, KeyInfo, KeyKind, KeyLimits, KeyList};
use http::Method;

use super::http::{Hub, check};

#[derive(clap::Args)]
pub struct KeysArgs {
    #[command(flatten)]
    pub target: Hub,
    #[command(subcommand)]
    pub command: KeysCommand,
}

#[derive(clap::Subcommand)]
pub enum KeysCommand {
    /// Create a key and print it (this once): a client key runs inference,
    /// an admin key manages the hub.
    Create {
        name: String,
        #[arg(long, value_enum, default_value_t = Kind::Client)]
        kind: Kind,
        /// The models it may use, comma-separated (default: every one).
        #[arg(long, value_delimiter = ',')]
        models: Vec<String>,
        /// Requests it may start a minute.
        #[arg(long)]
        rpm: Option<u32>,
        /// Tokens it may use a minute (prompts and answers).
        #[arg(long)]
        tpm: Option<u32>,
        /// Requests it may have waiting or running at once.
        #[arg(long)]
        max_concurrent: Option<u32>,
        /// Priority of its requests that name none (0-100).
        #[arg(long)]
        priority: Option<u8>,
        /// The highest priority its requests may ask for.
        #[arg(long)]
        max_priority: Option<u8>,
    },
    /// Every key: id, name, kind, its first characters, created, revoked.
    Ls,
    /// Revoke a key by id: it stops working at once.
    Revoke { id: String },
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum Kind {
    Client,
    Admin,
    Metrics,
}

pub async fn run(args: KeysArgs) -> anyhow::Result<()> {
    let api = args.target.api();
    match args.command {
        KeysCommand::Create {
            name,
            kind,
            models,
            rpm,
            tpm,
            max_concurrent,
            priority,
            max_priority,
        } => {
            let kind = match kind {
                Kind::Client => KeyKind::Client,
                Kind::Admin => KeyKind::Admin,
                Kind::Metrics => KeyKind::Metrics,
            };
            let limits = KeyLimits {
                models: (!models.is_empty()).then_some(models),
                requests_per_minute: rpm,
                tokens_per_minute: tpm,
                max_concurrent,
                priority,
                max_priority,
            };
            let body = serde_json::to_value(KeyCreate { name, kind, limits })?;
            let (status, body) = api.call(Method::POST, "/admin/keys", Some(body)).await?;
            check(status, &body)?;
            let created: KeyCreated = serde_json::from_value(body).context("unexpected answer")?;
            eprintln!(
                "created {} key {} ({}); it is shown this once:",
                created.info.kind.as_str(),
                created.info.name,
                created.info.id
            );
            println!("{}", created.key);
        }
        KeysCommand::Ls => {
            let (status, body) = api.call(Method::GET, "/admin/keys", None).await?;
            check(status, &body)?;
            let list: KeyList = serde_json::from_value(body).context("unexpected answer")?;
            if list.keys.is_empty() {
                println!("no keys");
            } else {
                println!(
                    "{:<18} {:<24} {:<7} {:<13} STATE",
                    "ID", "NAME", "KIND", "KEY"
                );
                for k in &list.keys {
                    println!(
                        "{:<18} {:<24} {:<7} {:<13} {}",
                        k.id,
                        k.name,
                        k.kind.as_str(),
                        format!("{}...", k.prefix),
                        if k.revoked_unix.is_some() {
                            "revoked"
                        } else {
                            "active"
                        }
                    );
                }
            }
        }
        KeysCommand::Revoke { id } => {
            let path = format!("/admin/keys/{id}");
            let (status, body) = api.call(Method::DELETE, &path, None).await?;
            check(status, &body)?;
            let info: KeyInfo = serde_json::from_value(body).context("unexpected answer")?;
            println!("revoked {} ({})", info.name, info.id);
        }
    }
    Ok(())
}
