//! `drover demo`: a small home fleet, simulated (two LM Studio servers, six
//! models each, one slot per model, about three seconds per answer), behind
//! a hub on loopback. The README's first command.

use std::time::Duration;

use anyhow::Context;
use drover_hub::{BackendSpec, HubConfig};
use drover_sim::{Dialect, SimConfig, SimServer};
use tokio::net::TcpListener;

#[derive(clap::Args)]
pub struct DemoArgs {
    /// Where the hub listens, HOST:PORT.
    #[arg(long, default_value = "127.0.0.1:8700")]
    pub listen: String,
    /// Simulated LM Studio servers.
    #[arg(long, default_value_t = 2)]
    pub servers: usize,
    /// Where the demo keeps its API keys (`drover keys create` works on it).
    /// Default: a directory of its own, removed when the demo stops.
    #[arg(long)]
    pub data_dir: Option<std::path::PathBuf>,
}

pub const DEMO_MODELS: [&str; 6] = [
    "highermind_the-eternal-1",
    "philosophy-101",
    "qwen2.5-7b-instruct",
    "llama-3.1-8b-instruct",
    "mistral-7b-instruct-v0.3",
    "gemma-2-9b-it",
];
pub const DEMO_EMBEDDING_MODEL: &str = "text-embedding-nomic-embed-text-v1.5";

pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    // One line per request and per action taken on an operator's word
    // (drain, load, unload, pin, keys): a first look is watching requests
    // queue, route and fail over, and the fleet answer what it is told.
    super::init_logging("warn,drover::request=info,drover::action=info");
    if args.servers == 0 {
        anyhow::bail!("--servers must be at least 1");
    }
    let mut sims = Vec::new();
    let mut backends = Vec::new();
    for i in 1..=args.servers {
        let mut models: Vec<String> = DEMO_MODELS.iter().map(|m| m.to_string()).collect();
        models.push(DEMO_EMBEDDING_MODEL.to_string());
        let config = SimConfig {
            dialect: Dialect::LmStudio,
            loaded: models.clone(),
            models,
            slots: 1,
            // About three seconds per answer, as a 7B model on a home GPU.
            ttft: Duration::from_millis(300),
            tokens_per_sec: 20.0,
            output_tokens: 48,
            // Long enough to watch a load on the dashboard.
            load_time: Duration::from_secs(3),
            seed: i as u64,
            ..SimConfig::default()
        };
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .context("cannot open a loopback port for a simulated server")?;
        let sim = SimServer::start(listener, config).context("cannot start a simulated server")?;
        backends.push(BackendSpec {
            name: Some(format!("studio-{i}")),
            kind: "lmstudio".into(),
            url: sim.url(),
            slots: None,
            model_slots: Default::default(),
            api_key: None,
            ..BackendSpec::default()
        });
        sims.push(sim);
    }
    // Keys can be tried on the demo: they live in a directory of its own
    // unless told where, gone with it.
    let (data_dir, temporary) = match &args.data_dir {
        Some(dir) => (dir.clone(), false),
        None => (
            std::env::temp_dir().join(format!("drover-demo-{}", std::process::id())),
            true,
        ),
    };
    let config = HubConfig {
        listen: args.listen.clone(),
        backends: backends.clone(),
        data_dir: Some(data_dir.clone()),
        ..HubConfig::default()
    };
    let listener = super::serve::bind(&args.listen).await?;
    let hub = drover_hub::start(config, listener).await?;
    // Wait for the first probe of every simulated server, so the banner
    // below is true when it prints.
    let wanted = args.servers;
    for _ in 0..200 {
        let seen = hub.answered_backends();
        if seen >= wanted {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let url = hub.url();
    println!("drover demo: the dashboard is at {url}/\n");
    println!(
        "{} simulated LM Studio servers x {} models (1 slot each, ~3 s per answer) behind one endpoint:\n",
        args.servers,
        DEMO_MODELS.len()
    );
    println!("  OpenAI base URL  {url}/v1");
    for (b, sim) in backends.iter().zip(&sims) {
        println!(
            "  backend          {} {}",
            b.name.as_deref().unwrap_or("?"),
            sim.url()
        );
    }
    println!("  metrics          {url}/metrics\n");
    println!("Try:");
    println!("  curl -s {url}/v1/models");
    println!(
        "  curl -sN {url}/v1/chat/completions -H 'content-type: application/json' \\\n    -d '{{\"model\":\"philosophy-101\",\"stream\":true,\"messages\":[{{\"role\":\"user\",\"content\":\"hello\"}}]}}'"
    );
    println!("  cargo run --release -- top --hub {url}          # the fleet and the queue, live");
    println!("  cargo run --release -- keys create me --hub {url}  # a client key");
    println!("  cargo run --release -- backends ls --hub {url}");
    println!(
        "\nEach request is logged below (DROVER_LOG=debug for more, DROVER_LOG=warn for less)."
    );
    println!("Ctrl-C to stop.");

    let stop = super::shutdown_token();
    tokio::select! {
        _ = stop.cancelled() => {}
        _ = hub.stopped() => {}
    }
    hub.shutdown(Duration::from_secs(10)).await;
    for sim in sims {
        sim.shutdown().await;
    }
    if temporary {
        let _ = std::fs::remove_dir_all(&data_dir);
    }
    Ok(())
}
