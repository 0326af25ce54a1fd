//! `drover serve`: the hub.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use drover_hub::HubConfig;
use tokio::net::TcpListener;

#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct ServeArgs {
    /// A drover.toml; DROVER_* variables override its fields.
    #[arg(long, env = "DROVER_CONFIG")]
    pub config: Option<PathBuf>,
    /// HOST:PORT to listen on (default 127.0.0.1:8700); HOST may be a name.
    #[arg(long)]
    pub listen: Option<String>,
    /// Allow listening beyond loopback although the hub has no client keys:
    /// anyone who can reach the port can use every model.
    #[arg(long)]
    pub insecure: bool,
    /// Where the hub keeps its API keys (default: data_dir in the config,
    /// else $XDG_DATA_HOME/drover or ~/.local/share/drover).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Where jobs, batches and files are kept: postgres://USER@HOST/DB for
    /// PostgreSQL, sqlite:PATH for a file (default: drover.db in the data
    /// directory; DROVER_DATABASE_URL sets it too).
    #[arg(long)]
    pub database_url: Option<String>,
    /// Serve HTTPS with this PEM certificate chain (with --tls-key).
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// A backend, [KIND=]URL[,OPTION=VALUE...]; the kind (lmstudio, ollama,
    /// llamacpp, vllm, openai) is detected when left out; repeat for more.
    /// Options: name=NAME, slots=N (requests per model at once),
    /// max_concurrent=N (over all its models), max_loaded=N (models it holds
    /// at once), probe=generate (a one-token generation as health probe),
    /// responses=BOOL, messages=BOOL (it serves /v1/responses,
    /// /v1/messages), memory=SIZE, slot_buffer=SIZE, system=SIZE, margin=SIZE
    /// (its memory budget: models + slots x slot_buffer + system + margin),
    /// ca_file=PATH (an https:// backend's CA), api_key=KEY (sent as a
    /// bearer token).
    #[arg(long = "backend", value_name = "[KIND=]URL")]
    pub backends: Vec<String>,
    /// Threads serving requests. One is the least CPU per request (no
    /// hand-offs between threads) and carries tens of thousands of requests
    /// a second, far beyond any fleet of LLM servers (bench/overhead.sh).
    #[arg(long, env = "DROVER_THREADS", default_value_t = 1,
          value_parser = clap::value_parser!(u16).range(1..))]
    pub threads: u16,
    #[command(subcommand)]
    pub action: Option<ServeAction>,
}

#[derive(clap::Subcommand)]
pub enum ServeAction {
    /// Write a systemd unit and environment file (a launchd plist on
    /// macOS) that run the hub as a service; --dry-run only prints them.
    Install(super::install::ServeInstallArgs),
}

pub fn load_config(args: &ServeArgs) -> anyhow::Result<HubConfig> {
    let text = match &args.config {
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the config file {}", path.display()))?,
        None => String::new(),
    };
    let env = super::drover_env()?;
    let mut config = HubConfig::from_toml(&text, &env).map_err(|e| match &args.config {
        Some(path) => anyhow::anyhow!("{}: {e}", path.display()),
        None => anyhow::anyhow!("{e}"),
    })?;
    if let Some(listen) = &args.listen {
        drover_hub::config::listen_host_port(listen)
            .map_err(|e| anyhow::anyhow!("--listen {e}"))?;
        config.listen = listen.clone();
    }
    config.insecure |= args.insecure;
    if let Some(dir) = &args.data_dir {
        config.data_dir = Some(dir.clone());
    }
    if config.data_dir.is_none() {
        config.data_dir = default_data_dir();
    }
    if let Some(url) = &args.database_url {
        drover_store::Location::parse(url).map_err(|e| anyhow::anyhow!("--database-url: {e}"))?;
        config.database_url = Some(url.clone());
    }
    if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        config.tls = Some(drover_hub::config::TlsConfig {
            cert: cert.clone(),
            key: key.clone(),
        });
    }
    for b in &args.backends {
        config
            .backends
            .push(super::backend_arg::parse(b).map_err(anyhow::Error::msg)?);
    }
    Ok(config)
}

/// `$XDG_DATA_HOME/drover`, else `~/.local/share/drover`.
fn default_data_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))?;
    Some(base.join("drover"))
}

/// Binds `HOST:PORT`, resolving a host name (`localhost:8700`) to the
/// first address that can be bound.
pub async fn bind(listen: &str) -> anyhow::Result<TcpListener> {
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host(listen)
        .await
        .with_context(|| format!("cannot resolve {listen:?} to listen on"))?
        .collect();
    let mut last = None;
    // IPv4 first: "localhost" then answers on 127.0.0.1, which every
    // client tries.
    let mut ordered = addrs.clone();
    ordered.sort_by_key(|a| !a.is_ipv4());
    for addr in ordered {
        match TcpListener::bind(addr).await {
            Ok(l) => return Ok(l),
            Err(e) => last = Some((addr, e)),
        }
    }
    match last {
        Some((addr, e)) if e.kind() == std::io::ErrorKind::AddrInUse => anyhow::bail!(
            "cannot listen on {addr}: something else listens there already (another drover? \
             `drover backends ls --hub http://{addr}` asks it); pick another port with --listen \
             HOST:PORT"
        ),
        Some((addr, e)) => Err(e).with_context(|| format!("cannot listen on {addr} ({listen})")),
        None => anyhow::bail!("{listen:?} resolves to no address"),
    }
}

/// The base URL a client should use: for an address that means "every
/// interface", the loopback address for this machine and its name for
/// others.
pub fn client_urls(scheme: &str, addr: SocketAddr) -> String {
    if !addr.ip().is_unspecified() {
        return format!("{scheme}://{addr}/v1");
    }
    let port = addr.port();
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "THIS-MACHINE".into());
    format!(
        "{scheme}://127.0.0.1:{port}/v1 on this machine, {scheme}://{host}:{port}/v1 from others"
    )
}

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    if let Some(ServeAction::Install(install)) = args.action {
        return super::install::serve(install);
    }
    super::init_logging("info");
    let config = load_config(&args)?;
    let listener = bind(&config.listen).await?;
    if config.backends.is_empty() {
        tracing::warn!(
            "no backends yet: add some with --backend, drover.toml, or `drover backends add`"
        );
    }
    let hub = drover_hub::start(config, listener).await?;
    let addr = hub.addr();
    let listening = if addr.ip().is_unspecified() {
        format!("every interface, port {}", addr.port())
    } else {
        hub.url()
    };
    eprintln!(
        "drover: listening on {listening} (OpenAI base URL {})",
        client_urls(hub.scheme(), addr)
    );
    eprintln!(
        "drover: the dashboard is at {}",
        client_urls(hub.scheme(), addr).replace("/v1", "/")
    );
    let stop = super::shutdown_token();
    tokio::select! {
        _ = stop.cancelled() => {}
        _ = hub.stopped() => {}
    }
    let (running, waiting) = hub.load();
    eprintln!(
        "drover: shutting down: finishing {running} running request{} (for up to 30 s); {waiting} waiting {} answered 503",
        if running == 1 { "" } else { "s" },
        if waiting == 1 { "is" } else { "are" },
    );
    hub.shutdown(Duration::from_secs(30)).await;
    Ok(())
}
