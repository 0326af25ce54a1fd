//! `drover bench` against a simulated server: without `--model`, each
//! endpoint loads a model that fits it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use clap::Parser;
use drover_bench::BenchArgs;
use drover_sim::{SimConfig, SimServer};
use tokio::net::TcpListener;

#[derive(Debug, Parser)]
struct Cli {
    #[command(flatten)]
    bench: BenchArgs,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_endpoint_loads_a_model_that_fits_it() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let config = SimConfig {
        models: vec!["text-embed-small".into(), "chat-7b".into()],
        slots: 2,
        ..SimConfig::default()
    };
    let sim = SimServer::start(listener, config).unwrap();
    for endpoint in ["embeddings", "chat", "completions"] {
        let args = Cli::try_parse_from([
            "bench",
            "--url",
            &sim.url(),
            "--endpoint",
            endpoint,
            "--requests",
            "3",
            "--warmup",
            "1",
            "--concurrency",
            "2",
        ])
        .unwrap()
        .bench;
        tokio::time::timeout(Duration::from_secs(20), drover_bench::run(args))
            .await
            .expect("the bench finishes")
            .unwrap();
    }
    let stats = sim.stats();
    assert_eq!(stats.model("text-embed-small").completed, 4, "{stats:?}");
    assert_eq!(stats.model("chat-7b").completed, 8, "{stats:?}");
    sim.shutdown().await;
}
