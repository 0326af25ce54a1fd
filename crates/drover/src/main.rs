//! The `drover` binary: a thin clap layer over the library crates. Only this
//! crate uses `anyhow`; errors are given context here, at the edge.

mod cli;

/// jemalloc, because it keeps its bookkeeping outside the blocks it hands
/// out: a waiting request's connection holds two 8 KiB hyper buffers it has
/// barely written, and glibc's in-block headers make a page of each
/// resident. With 10,000 requests waiting the hub's RSS is 85 MB with
/// jemalloc against 152 MB with glibc's malloc (bench/queue-memory.sh).
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use std::io::Write;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "drover",
    version = cli::VERSION,
    about = "One fast, reliable OpenAI-compatible endpoint for a fleet of local LLM servers"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the hub in front of your LLM servers.
    Serve(cli::serve::ServeArgs),
    /// A simulated fleet (2 LM Studio servers x 6 models) and a hub on loopback, for a first look.
    Demo(cli::demo::DemoArgs),
    /// Run a simulated LLM server speaking a real server's API.
    Sim(drover_sim::SimArgs),
    /// Manage a running hub's backends.
    Backends(cli::backends::BackendsArgs),
    /// Where each model is, and load or unload one.
    Models(cli::models::ModelsArgs),
    /// API keys: create (shown once), list, revoke.
    Keys(cli::keys::KeysArgs),
    /// Jobs: hand a request over to run later, list them, get the answer, cancel, retry.
    Jobs(cli::jobs::JobsArgs),
    /// The fleet's machines (up, down, their memory and GPUs) and the join tokens that let them in.
    Nodes(cli::nodes::NodesArgs),
    /// The hubs of a cluster (several hubs on one PostgreSQL database) and which one leads.
    Hubs(cli::hubs::HubsArgs),
    /// Join this machine to a hub with a join token, and heartbeat what it is and has.
    Agent(cli::agent::AgentArgs),
    /// Tasks for capability workers: submit, list, get, cancel; plan them from plain language.
    Tasks(cli::tasks::TasksArgs),
    /// Make a command a capability worker: each task runs it once (input on stdin, output from stdout).
    Worker(cli::worker::WorkerArgs),
    /// The fleet live in a terminal: backends, models, queue, rates; q quits.
    Top(cli::top::TopArgs),
    /// The policy lab: compare scheduling policies in virtual time on seeded traces.
    Lab(cli::lab::LabArgs),
    /// Load an OpenAI-compatible URL (a hub, and a backend directly) and report.
    Bench(drover_bench::BenchArgs),
    /// How many models and slots fit in a node's memory, and what throughput that buys.
    Plan(cli::plan::PlanArgs),
    /// Builds of drover kept by the hub for node agents to update to.
    Release(cli::release::ReleaseArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    // The hub's own thread count; every other command (the load generator,
    // the simulators, the demo's fleet) uses every core.
    if let Command::Serve(args) = &cli.command {
        builder.worker_threads(usize::from(args.threads));
    }
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("drover: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Serve(args) => cli::serve::run(args).await,
            Command::Demo(args) => cli::demo::run(args).await,
            Command::Sim(args) => {
                cli::init_logging("info");
                drover_sim::run(args, cli::shutdown_token()).await
            }
            Command::Backends(args) => cli::backends::run(args).await,
            Command::Models(args) => cli::models::run(args).await,
            Command::Keys(args) => cli::keys::run(args).await,
            Command::Jobs(args) => cli::jobs::run(args).await,
            Command::Tasks(args) => cli::tasks::run(args).await,
            Command::Nodes(args) => cli::nodes::run(args).await,
            Command::Hubs(args) => cli::hubs::run(args).await,
            Command::Agent(args) => cli::agent::run(args).await,
            Command::Worker(args) => cli::worker::run(args).await,
            Command::Top(args) => cli::top::run(args).await,
            Command::Bench(args) => drover_bench::run(args).await,
            Command::Lab(args) => cli::lab::run(args),
            Command::Plan(args) => cli::plan::run(args).await,
            Command::Release(args) => cli::release::run(args).await,
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // Not eprintln!: a stderr nobody reads any more is no reason to
            // panic on the way out.
            let _ = writeln!(std::io::stderr(), "drover: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
