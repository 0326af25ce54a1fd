//! Three `drover serve` processes on one PostgreSQL schema are one
//! cluster: one leads (it holds the lease), the others follow; only the
//! leader runs jobs. `kill -9` of the leader under load: another leads
//! within the lease's TTL and 5 s, and the jobs go on: none lost, none
//! completed twice. A killed hub restarted on its data directory comes
//! back as a follower. Chats through the followers all along: none fails;
//! streams running through the followers when the leader dies end whole.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use drover_sim::SimServer;
use drover_tests::{Client, openai, wait_until_within};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::time::Instant;

const JOBS: usize = 600;
/// The lease's TTL here: short, so the test waits little.
const TTL: Duration = Duration::from_secs(2);

struct Hub {
    child: Child,
    client: Client,
    dir: PathBuf,
    port: u16,
}

fn spawn(dir: &Path, port: u16, backends: &[String], database_url: &str) -> Child {
    let mut command = drover_tests::command(env!("CARGO_BIN_EXE_drover"));
    command
        .env("DROVER_LOG", "warn")
        .env("DROVER_JOBS__POLL_INTERVAL", "50ms")
        .env("DROVER_JOBS__BACKOFF", "20ms")
        .env("DROVER_JOBS__MAX_BACKOFF", "200ms")
        .env("DROVER_JOBS__LEASE", "2s")
        .env("DROVER_CLUSTER__LEASE_TTL", "2s")
        .env("DROVER_CLUSTER__RENEW_EVERY", "500ms")
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .arg("--data-dir")
        .arg(dir)
        .args(["--database-url", database_url]);
    for b in backends {
        command.args(["--backend", &format!("openai={b},slots=4")]);
    }
    command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("drover serve starts")
}

async fn start(dir: PathBuf, port: u16, backends: &[String], database_url: &str) -> Hub {
    let child = spawn(&dir, port, backends, database_url);
    let client = Client::new(&format!("http://127.0.0.1:{port}"));
    wait_until_within("the hub answers", Duration::from_secs(30), || async {
        client.try_get("/admin/hubs").await == Some(200)
    })
    .await;
    Hub {
        child,
        client,
        dir,
        port,
    }
}

/// A test that fails leaves no hub behind.
impl Drop for Hub {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn kill(hub: &mut Hub) {
    // std's kill is SIGKILL: no resignation, no goodbye.
    hub.child.kill().unwrap();
    hub.child.wait().unwrap();
}

/// What a hub says of its cluster: (its own id, the leader's id, the
/// epoch, its own role).
async fn view(hub: &Hub) -> Option<(String, Option<String>, i64, String)> {
    let r = hub.client.get("/admin/hubs").await;
    if r.status != 200 {
        return None;
    }
    let list = r.json();
    let me = list["this_hub"].as_str()?.to_string();
    let role = list["hubs"]
        .as_array()?
        .iter()
        .find(|h| h["id"] == me.as_str())
        .map(|h| h["role"].as_str().unwrap_or_default().to_string())
        .unwrap_or_default();
    Some((
        me,
        list["leader"].as_str().map(str::to_string),
        list["epoch"].as_i64().unwrap_or(0),
        role,
    ))
}

/// Waits until every hub names the same leader, one of them, which says
/// it leads, and the others follow: its index and the epoch.
async fn one_leader(hubs: &[&Hub], within: Duration) -> (usize, i64) {
    let deadline = Instant::now() + within;
    loop {
        let mut views = Vec::new();
        for hub in hubs {
            views.push(view(hub).await);
        }
        let agreed = views.iter().all(|v| {
            v.as_ref()
                .zip(views[0].as_ref())
                .is_some_and(|(a, b)| a.1.is_some() && a.1 == b.1 && a.2 == b.2)
        });
        if agreed {
            let leader = views[0].as_ref().unwrap().1.clone().unwrap();
            let index = views.iter().position(|v| v.as_ref().unwrap().0 == leader);
            let roles_right = views.iter().all(|v| {
                let (me, _, _, role) = v.as_ref().unwrap();
                (*me == leader && role == "leader") || (*me != leader && role == "follower")
            });
            if let (Some(index), true) = (index, roles_right) {
                return (index, views[0].as_ref().unwrap().2);
            }
        }
        assert!(Instant::now() < deadline, "no single leader: {views:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hubs_elect_one_leader_and_the_next_leads_within_the_lease_after_kill_9() {
    let base = std::env::var("DROVER_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let schema = format!("hubs_{}", uuid::Uuid::now_v7().simple());
    let sep = if base.contains('?') { '&' } else { '?' };
    let url = format!("{base}{sep}schema={schema}");
    let root = std::env::temp_dir().join(format!("drover-hubs-{}", uuid::Uuid::now_v7()));
    let sim = SimServer::start(
        TcpListener::bind("127.0.0.1:0").await.unwrap(),
        openai(&["m"], 4, 20),
    )
    .unwrap();
    // A slow model beside it: each answer streams for three seconds.
    let mut slow_config = openai(&["s"], 4, 0);
    slow_config.tokens_per_sec = 10.0;
    slow_config.output_tokens = 30;
    let slow =
        SimServer::start(TcpListener::bind("127.0.0.1:0").await.unwrap(), slow_config).unwrap();
    let backends = [sim.url(), slow.url()];
    let mut hubs = Vec::new();
    for i in 0..3 {
        let port = drover_tests::free_port().await;
        hubs.push(start(root.join(format!("hub{i}")), port, &backends, &url).await);
    }
    let (leader, epoch) =
        one_leader(&hubs.iter().collect::<Vec<_>>(), Duration::from_secs(10)).await;
    let metrics = hubs[leader].client.get("/metrics").await.text();
    assert_eq!(metric(&metrics, "drover_hub_role{role=\"leader\"}"), 1.0);
    assert_eq!(metric(&metrics, "drover_hub_lease_epoch"), epoch as f64);

    // Jobs handed to any hub; only the leader runs them.
    let submit = |client: Client, i: usize| async move {
        let body = json!({
            "endpoint": "/v1/chat/completions",
            "body": {"model": "m", "messages": [{"role": "user", "content": format!("job {i}")}]},
        });
        let key = format!("hubs-{i}");
        let r = client
            .post_with("/v1/jobs", &[("idempotency-key", key.as_str())], &body)
            .await;
        assert_eq!(r.status, 200, "{}", r.text());
    };
    let handed = (0..JOBS).map(|i| submit(hubs[i % 3].client.clone(), i));
    futures_util::future::join_all(handed).await;
    sim.wait_for(|s| s.requests_total >= 100).await;
    for (i, hub) in hubs.iter().enumerate() {
        let text = hub.client.get("/metrics").await.text();
        let ran = metric(&text, "drover_job_attempts_total");
        if i == leader {
            assert!(ran > 0.0, "the leader runs the jobs");
        } else {
            assert_eq!(ran, 0.0, "a follower runs no job");
            assert_eq!(metric(&text, "drover_hub_role{role=\"follower\"}"), 1.0);
        }
    }

    // Kill the leader twice under load, restarting it in between: each
    // time another leads within the TTL and 5 s, in a later epoch.
    let mut last = (leader, epoch);
    for round in 0..2 {
        let (dead, was) = last;
        // Chats through the two followers all along: granted ones finish,
        // waiting ones are asked again of the next leader; none fails.
        let stop = Arc::new(AtomicBool::new(false));
        let mut load = tokio::task::JoinSet::new();
        for (i, hub) in hubs.iter().enumerate().filter(|(i, _)| *i != dead) {
            for n in 0..3 {
                let (client, stop) = (hub.client.clone(), stop.clone());
                load.spawn(async move {
                    let (mut ok, mut failed) = (0u32, Vec::new());
                    while !stop.load(Ordering::Relaxed) {
                        let body = json!({"model": "m", "messages": [{"role": "user", "content": format!("chat {i} {n}")}]});
                        let r = client.post("/v1/chat/completions", &body).await;
                        if r.status == 200 {
                            ok += 1;
                        } else {
                            failed.push(format!("{} {}", r.status, r.text()));
                        }
                    }
                    (ok, failed)
                });
            }
        }
        // A stream through each follower, running when the leader dies.
        let mut streams = tokio::task::JoinSet::new();
        for (_, hub) in hubs.iter().enumerate().filter(|(i, _)| *i != dead) {
            let client = hub.client.clone();
            streams.spawn(async move {
                let body = json!({"model": "s", "stream": true, "messages": [{"role": "user", "content": "long"}]});
                let answer = client.open("/v1/chat/completions", &body).await;
                let status = answer.status();
                let text = http_body_util::BodyExt::collect(answer.into_body())
                    .await
                    .map(|b| String::from_utf8_lossy(&b.to_bytes()).into_owned())
                    .unwrap_or_else(|e| format!("broken: {e}"));
                (status, text)
            });
        }
        slow.wait_for(|s| s.requests_total >= 2 * (round as u64 + 1))
            .await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let killed = Instant::now();
        kill(&mut hubs[dead]);
        let alive: Vec<&Hub> = hubs
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != dead)
            .map(|(_, h)| h)
            .collect();
        let (next, now) = one_leader(&alive, TTL + Duration::from_secs(5)).await;
        let took = killed.elapsed();
        assert!(now > was, "a new epoch: {now} after {was}");
        let next = hubs
            .iter()
            .position(|h| std::ptr::eq(h, alive[next]))
            .unwrap();
        eprintln!("round {round}: hub {next} leads {took:?} after the leader's kill -9");
        tokio::time::sleep(Duration::from_secs(1)).await;
        stop.store(true, Ordering::Relaxed);
        let (mut ok, mut failed) = (0, Vec::new());
        while let Some(r) = load.join_next().await {
            let (o, f) = r.unwrap();
            ok += o;
            failed.extend(f);
        }
        assert!(
            failed.is_empty(),
            "chats failed across the change of leader: {failed:?}"
        );
        assert!(ok > 0);
        eprintln!("round {round}: {ok} chats through the followers, none failed");
        while let Some(r) = streams.join_next().await {
            let (status, text) = r.unwrap();
            assert_eq!(status, 200, "{text}");
            assert!(
                text.trim_end().ends_with("data: [DONE]"),
                "a stream running when the leader died ended short: {text}"
            );
        }
        let (dir, port) = (hubs[dead].dir.clone(), hubs[dead].port);
        hubs[dead] = start(dir, port, &backends, &url).await;
        let (again, same) =
            one_leader(&hubs.iter().collect::<Vec<_>>(), Duration::from_secs(10)).await;
        assert_eq!((again, same), (next, now), "the restarted hub follows");
        last = (next, now);
    }

    // Every job completes once.
    let client = &hubs[last.0].client;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let text = client.get("/metrics").await.text();
        if metric(&text, "drover_jobs{state=\"completed\"}") as usize == JOBS {
            break;
        }
        assert!(Instant::now() < deadline, "jobs unfinished: {text}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let jobs = drover_tests::jobs::all(client).await;
    drover_tests::jobs::assert_completed_once(&jobs, JOBS);
    for hub in &mut hubs {
        kill(hub);
    }
    sim.shutdown().await;
    slow.shutdown().await;
    let _ = std::fs::remove_dir_all(root);
}
