//! `drover serve`: the hub.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use drover_hub::HubConfig;

#[derive(clap::Args)]
pub struct ServeArgs {
    /// A drover.toml; DROVER_* variables override its fields.
    #[arg(long, env = "DROVER_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address to listen on (default 127.0.0.1:8700).
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// A backend, KIND=URL[,slots=N][,name=NAME][,api_key=KEY]; repeat for more.
    /// KIND is lmstudio or openai.
    #[arg(long = "backend", value_name = "KIND=URL")]
    pub backends: Vec<String>,
}

pub fn load_config(args: &ServeArgs) -> anyhow::Result<HubConfig> {
    let text = match &args.config {
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the config file {}", path.display()))?,
        None => String::new(),
    };
    let env: Vec<(String, String)> = std::env::vars().collect();
    let mut config = HubConfig::from_toml(&text, &env).map_err(|e| match &args.config {
        Some(path) => anyhow::anyhow!("{}: {e}", path.display()),
        None => anyhow::anyhow!("{e}"),
    })?;
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    for b in &args.backends {
        config
            .backends
            .push(super::backend_arg::parse(b).map_err(anyhow::Error::msg)?);
    }
    Ok(config)
}

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    super::init_logging("info");
    let config = load_config(&args)?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    if config.backends.is_empty() {
        tracing::warn!(
            "no backends yet: add some with --backend, drover.toml, or `drover backends add`"
        );
    }
    let hub = drover_hub::start(config, listener).await?;
    eprintln!(
        "drover: listening on {} (OpenAI base URL {}/v1)",
        hub.url(),
        hub.url()
    );
    let stop = super::shutdown_token();
    tokio::select! {
        _ = stop.cancelled() => {}
        _ = hub.stopped() => {}
    }
    eprintln!("drover: shutting down");
    hub.shutdown(Duration::from_secs(30)).await;
    Ok(())
}
