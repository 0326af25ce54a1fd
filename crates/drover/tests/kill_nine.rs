//! Nothing accepted is lost, and nothing completed twice, when the hub is
//! killed with SIGKILL again and again in the middle of a run: 2,000 jobs,
//! ten kills, the `drover serve` binary restarted on the same store each
//! time (a SQLite file; a PostgreSQL schema), a simulated server answering.
//! Counted from the answers the simulator served and the stored results.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use drover_sim::{SimHandle, SimServer};
use drover_tests::{Client, openai};
use serde_json::json;
use tokio::net::TcpListener;

const JOBS: usize = 2_000;
const KILLS: usize = 10;

struct Hub {
    child: Child,
    client: Client,
}

fn spawn_hub(dir: &Path, port: u16, backend: &str, database_url: Option<&str>) -> Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_drover"));
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("DROVER_") {
            cmd.env_remove(key);
        }
    }
    cmd.env("DROVER_LOG", "warn")
        .env("DROVER_JOBS__POLL_INTERVAL", "50ms")
        .env("DROVER_JOBS__BACKOFF", "20ms")
        .env("DROVER_JOBS__MAX_BACKOFF", "200ms")
        // A killed hub's leases run out quickly where a store is shared.
        .env("DROVER_JOBS__LEASE", "2s")
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .arg("--data-dir")
        .arg(dir)
        .args(["--backend", &format!("openai={backend},slots=4")]);
    if let Some(url) = database_url {
        cmd.args(["--database-url", url]);
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("drover serve starts")
}

async fn start(dir: &Path, port: u16, backend: &str, database_url: Option<&str>) -> Hub {
    let child = spawn_hub(dir, port, backend, database_url);
    let client = Client::new(&format!("http://127.0.0.1:{port}"));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    // Ready once it serves models: its backend has answered.
    loop {
        if client.try_get("/v1/models").await == Some(200)
            && client.get("/v1/models").await.json()["data"]
                .as_array()
                .is_some_and(|d| !d.is_empty())
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the hub did not start"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Hub { child, client }
}

fn kill(hub: &mut Hub) {
    // std's kill is SIGKILL on Unix: no shutdown, no flush, no goodbye.
    hub.child.kill().unwrap();
    hub.child.wait().unwrap();
}

async fn run(name: &str, database_url: Option<String>) {
    let dir: PathBuf =
        std::env::temp_dir().join(format!("drover-kill9-{name}-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(&dir).unwrap();
    let sim: SimHandle = SimServer::start(
        TcpListener::bind("127.0.0.1:0").await.unwrap(),
        openai(&["m"], 4, 20),
    )
    .unwrap();
    let port = drover_tests::free_port().await;
    let url = database_url.as_deref();
    let mut hub = start(&dir, port, &sim.url(), url).await;

    // Handed over in bursts, each job under its own idempotency key.
    for chunk in (0..JOBS).collect::<Vec<_>>().chunks(50) {
        let submits = chunk.iter().map(|i| {
            let client = hub.client.clone();
            async move {
                let body = json!({
                    "endpoint": "/v1/chat/completions",
                    "body": {"model": "m", "messages": [{"role": "user", "content": format!("job {i}")}]},
                });
                let key = format!("kill9-{i}");
                let r = client
                    .post_with("/v1/jobs", &[("idempotency-key", key.as_str())], &body)
                    .await;
                assert_eq!(r.status, 200, "{}", r.text());
            }
        });
        futures_util::future::join_all(submits).await;
    }

    // Ten kills spread over what is left to run, each once the server has
    // served another slice of it.
    for round in 0..KILLS {
        let served = sim.stats().requests_total;
        let left = (JOBS as u64).saturating_sub(served);
        let slice = (left / (KILLS - round + 1) as u64).max(1);
        let progressed = sim.wait_for(|s| s.requests_total >= served + slice);
        tokio::time::timeout(Duration::from_secs(60), progressed)
            .await
            .unwrap_or_else(|_| panic!("no progress before kill {}", round + 1));
        kill(&mut hub);
        eprintln!(
            "kill {} at {} served",
            round + 1,
            sim.stats().requests_total
        );
        hub = start(&dir, port, &sim.url(), url).await;
    }

    // Every job ends completed: counted in one statement of the store
    // (`drover_jobs` in /metrics), not by two lists read one after the
    // other, between which a rescued job can move from running to queued
    // and seem to be in neither.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let metrics = hub.client.get("/metrics").await.text();
        let completed = metrics
            .lines()
            .find_map(|l| l.strip_prefix("drover_jobs{state=\"completed\"} "))
            .and_then(|n| n.trim().parse::<usize>().ok());
        if completed == Some(JOBS) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "jobs still unfinished: {completed:?} of {JOBS} completed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let jobs = drover_tests::jobs::all(&hub.client).await;
    drover_tests::jobs::assert_completed_once(&jobs, JOBS);
    let completed = jobs.len();
    let sample = hub
        .client
        .get(&format!("/v1/jobs/{}", jobs[0]["id"].as_str().unwrap()))
        .await
        .json();
    assert_eq!(sample["response"]["status_code"], 200, "{sample}");
    let served = sim.stats().requests_total;
    assert!(
        served >= JOBS as u64,
        "the server answered each at least once"
    );
    eprintln!(
        "{name}: {JOBS} jobs, {KILLS} kills: 0 lost, {completed} completed once each; \
         the server answered {served} times ({} answers lost with a killed hub and asked again)",
        served - JOBS as u64
    );
    kill(&mut hub);
    sim.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_hub_ten_times_loses_nothing_on_sqlite() {
    run("sqlite", None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_hub_ten_times_loses_nothing_on_postgres() {
    let base = std::env::var("DROVER_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let schema = format!("kill9_{}", uuid::Uuid::now_v7().simple());
    let sep = if base.contains('?') { '&' } else { '?' };
    run("postgres", Some(format!("{base}{sep}schema={schema}"))).await;
}
