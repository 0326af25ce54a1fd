//! `drover keys create|ls|revoke|purge|webhook-secret`: API keys, over the
//! management API, or with `--data-dir` (or `--database-url`) straight in a
//! hub's store (before any hub runs, or to get back in when no admin key is
//! left; a running hub picks the change up within seconds). A new key is
//! printed once; the hub keeps only its hash. What a change does to the
//! hub's callers (the first client key closes inference to requests without
//! one) is said on stderr.

use std::path::PathBuf;

use anyhow::Context;
use drover_hub::keys::Keys;
use drover_proto::admin::{
    KeyCreate, KeyCreated, KeyKind, KeyLimits, KeyList, KeyRevoked, KeyWebhookSecret, KeysPurged,
};
use drover_store::Location;
use http::Method;

use super::http::{Api, Hub, check, segment};

#[derive(clap::Args)]
pub struct KeysArgs {
    #[command(flatten)]
    pub target: Hub,
    /// Work on the keys in this data directory's store (the hub's
    /// data_dir) rather than through a running hub.
    #[arg(long, global = true, conflicts_with = "hub")]
    pub data_dir: Option<PathBuf>,
    /// Work on the keys in this PostgreSQL store (the hub's database_url)
    /// rather than through a running hub.
    #[arg(long, global = true, conflicts_with_all = ["hub", "data_dir"])]
    pub database_url: Option<String>,
    #[command(subcommand)]
    pub command: KeysCommand,
}

#[derive(clap::Subcommand)]
pub enum KeysCommand {
    /// Create a key and print it (this once): a client key runs inference,
    /// an admin key manages the hub, a metrics key reads /metrics, a worker
    /// key takes and answers tasks.
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
    /// Revoke a key by id or by the name of an active key: it stops working
    /// at once.
    Revoke {
        #[arg(value_name = "ID_OR_NAME")]
        key: String,
    },
    /// Forget every revoked key. Once no client key is kept, inference is
    /// open to anyone again (on loopback, or with --insecure).
    Purge,
    /// Give a key a webhook secret of its own (printed this once): its
    /// jobs' callbacks are signed with it rather than the hub's.
    WebhookSecret {
        #[arg(value_name = "ID_OR_NAME")]
        key: String,
        /// Take the key's own secret away: the hub's signs again.
        #[arg(long)]
        clear: bool,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum Kind {
    Client,
    Admin,
    Metrics,
    Worker,
}

impl From<Kind> for KeyKind {
    fn from(kind: Kind) -> KeyKind {
        match kind {
            Kind::Client => KeyKind::Client,
            Kind::Admin => KeyKind::Admin,
            Kind::Metrics => KeyKind::Metrics,
            Kind::Worker => KeyKind::Worker,
        }
    }
}

/// Where the keys are: behind a running hub, or in its store.
enum Store {
    Hub(Box<Api>),
    File(Box<Keys>),
}

impl Store {
    async fn create(&self, asked: KeyCreate) -> anyhow::Result<KeyCreated> {
        match self {
            Store::Hub(api) => {
                let body = serde_json::to_value(asked)?;
                let (status, body) = api.call(Method::POST, "/admin/keys", Some(body)).await?;
                check(status, &body)?;
                serde_json::from_value(body).context("unexpected answer")
            }
            Store::File(keys) => {
                let created = keys.create(&asked.name, asked.kind, asked.limits).await?;
                Ok(KeyCreated {
                    key: created.key,
                    info: created.info,
                    note: created.note,
                })
            }
        }
    }

    async fn list(&self) -> anyhow::Result<KeyList> {
        match self {
            Store::Hub(api) => {
                let (status, body) = api.call(Method::GET, "/admin/keys", None).await?;
                check(status, &body)?;
                serde_json::from_value(body).context("unexpected answer")
            }
            Store::File(keys) => Ok(KeyList { keys: keys.list() }),
        }
    }

    async fn revoke(&self, key: &str) -> anyhow::Result<KeyRevoked> {
        match self {
            Store::Hub(api) => {
                let path = format!("/admin/keys/{}", segment(key));
                let (status, body) = api.call(Method::DELETE, &path, None).await?;
                check(status, &body)?;
                serde_json::from_value(body).context("unexpected answer")
            }
            Store::File(keys) => match keys.revoke(key).await? {
                Some((info, note)) => Ok(KeyRevoked { info, note }),
                None => anyhow::bail!("no key has the id or the name {key:?} (an active key's)"),
            },
        }
    }

    async fn purge(&self) -> anyhow::Result<KeysPurged> {
        match self {
            Store::Hub(api) => {
                let (status, body) = api.call(Method::POST, "/admin/keys/purge", None).await?;
                check(status, &body)?;
                serde_json::from_value(body).context("unexpected answer")
            }
            Store::File(keys) => {
                let (purged, note) = keys.purge().await?;
                Ok(KeysPurged {
                    purged: purged as u64,
                    note,
                })
            }
        }
    }
}

impl Store {
    async fn webhook_secret(&self, key: &str, own: bool) -> anyhow::Result<KeyWebhookSecret> {
        match self {
            Store::Hub(api) => {
                let path = format!("/admin/keys/{}/webhook-secret", segment(key));
                let method = if own { Method::POST } else { Method::DELETE };
                let (status, body) = api.call(method, &path, None).await?;
                check(status, &body)?;
                serde_json::from_value(body).context("unexpected answer")
            }
            Store::File(keys) => match keys.set_webhook_secret(key, own).await? {
                Some((info, secret)) => Ok(KeyWebhookSecret {
                    info,
                    secret: secret.map(|s| s.to_string()),
                }),
                None => anyhow::bail!("no active key has the id or the name {key:?}"),
            },
        }
    }
}

/// The keys in the store at `location`, opened beside any hub using it.
async fn open(location: Location, data_dir: Option<&std::path::Path>) -> anyhow::Result<Keys> {
    let store = drover_store::Store::open_beside(location).await?;
    let keys = Keys::open(Some(store), data_dir).await?;
    if let Some(e) = keys.unknown() {
        anyhow::bail!("{e}");
    }
    Ok(keys)
}

pub async fn run(args: KeysArgs) -> anyhow::Result<()> {
    let store = match (&args.data_dir, &args.database_url) {
        (Some(dir), _) => Store::File(Box::new(
            open(
                Location::Sqlite(dir.join(drover_store::SQLITE_FILE)),
                Some(dir),
            )
            .await?,
        )),
        (None, Some(url)) => Store::File(Box::new(
            open(
                Location::parse(url).map_err(|e| anyhow::anyhow!("--database-url: {e}"))?,
                None,
            )
            .await?,
        )),
        (None, None) => Store::Hub(Box::new(args.target.api())),
    };
    let said = |note: &Option<String>| {
        if let Some(note) = note {
            eprintln!("note: {note}");
        }
    };
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
            let limits = KeyLimits {
                models: (!models.is_empty()).then_some(models),
                requests_per_minute: rpm,
                tokens_per_minute: tpm,
                max_concurrent,
                priority,
                max_priority,
            };
            let created = store
                .create(KeyCreate {
                    name,
                    kind: kind.into(),
                    limits,
                })
                .await?;
            eprintln!(
                "created {} key {} ({}); it is shown this once:",
                created.info.kind.as_str(),
                created.info.name,
                created.info.id
            );
            said(&created.note);
            println!("{}", created.key);
        }
        KeysCommand::Ls => {
            let list = store.list().await?;
            if list.keys.is_empty() {
                println!("no keys");
                return Ok(());
            }
            let width = list
                .keys
                .iter()
                .map(|k| k.name.chars().count())
                .max()
                .unwrap_or(0)
                .max(4);
            println!(
                "{:<18} {:<width$} {:<7} {:<15} STATE",
                "ID", "NAME", "KIND", "KEY"
            );
            for k in &list.keys {
                println!(
                    "{:<18} {:<width$} {:<7} {:<15} {}",
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
        KeysCommand::Revoke { key } => {
            let revoked = store.revoke(&key).await?;
            println!("revoked {} ({})", revoked.info.name, revoked.info.id);
            said(&revoked.note);
        }
        KeysCommand::Purge => {
            let purged = store.purge().await?;
            println!("forgot {} revoked key(s)", purged.purged);
            said(&purged.note);
        }
        KeysCommand::WebhookSecret { key, clear } => {
            let set = store.webhook_secret(&key, !clear).await?;
            match set.secret {
                Some(secret) => {
                    eprintln!(
                        "{} ({}) has a webhook secret of its own now; its jobs' callbacks are \
                         signed with it. It is shown this once:",
                        set.info.name, set.info.id
                    );
                    println!("{secret}");
                }
                None => println!(
                    "{} ({}) has no webhook secret of its own now: its jobs' callbacks are \
                     signed with the hub's",
                    set.info.name, set.info.id
                ),
            }
        }
    }
    Ok(())
}
