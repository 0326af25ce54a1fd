//! `drover bench --url HUB --direct SERVER` measures one model on both
//! sides, one both serve and that is loaded already: the ratio compares like
//! with like, and the bench leaves the fleet holding what it held.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use clap::Parser;
use drover_tests::{ClusterBuilder, Dialect, SimConfig};

#[derive(Debug, Parser)]
struct Cli {
    #[command(flatten)]
    bench: drover_bench::BenchArgs,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bench_measures_one_loaded_model_on_both_sides() {
    // The hub's first model ("a-cold") is not loaded; the direct server's
    // first ("z-only") is not behind the hub. "m" is loaded on both.
    let behind = SimConfig {
        dialect: Dialect::LmStudio,
        models: vec!["a-cold".into(), "m".into()],
        loaded: vec!["m".into()],
        slots: 4,
        load_time: Duration::from_millis(50),
        ..SimConfig::default()
    };
    let cluster = ClusterBuilder::new().sim("studio", behind).start().await;
    let direct_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let direct = drover_sim::SimServer::start(
        direct_listener,
        SimConfig {
            dialect: Dialect::OpenAi,
            models: vec!["z-only".into(), "m".into()],
            slots: 4,
            ..SimConfig::default()
        },
    )
    .unwrap();
    let args = Cli::try_parse_from([
        "bench",
        "--url",
        &cluster.hub.url(),
        "--direct",
        &direct.url(),
        "--requests",
        "5",
        "--warmup",
        "1",
        "--concurrency",
        "2",
    ])
    .unwrap()
    .bench;
    tokio::time::timeout(Duration::from_secs(30), drover_bench::run(args))
        .await
        .expect("the bench finishes")
        .unwrap();
    let behind = cluster.sim("studio").stats();
    assert_eq!(behind.loads, 0, "the bench loaded a model: {behind:?}");
    assert_eq!(behind.model("m").completed, 6, "{behind:?}");
    let direct_stats = direct.stats();
    assert_eq!(direct_stats.model("m").completed, 6, "{direct_stats:?}");
    assert_eq!(direct_stats.model("z-only").completed, 0);
    cluster.shutdown().await;
    direct.shutdown().await;
}
