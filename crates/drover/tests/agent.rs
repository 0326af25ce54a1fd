//! `drover agent` finding the LLM servers on its machine: each becomes a
//! backend of its node (`NODE:PORT`) on the node's machine, inference goes
//! through the hub straight to it, a server that goes leaves the fleet, and
//! so does every server of a node that stops heartbeating. Against the
//! simulator and against the real llama-server.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use drover_sim::SimServer;
use drover_tests::jobs::{fresh_dir, quick};
use drover_tests::{Cluster, ClusterBuilder, LlamaServer, chat_body, openai, wait_until_within};
use serde_json::json;
use tokio::net::TcpListener;

/// A running `drover agent`, killed when dropped.
struct Agent(Child);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A hub with a store and 100 ms heartbeats, and no backends of its own.
async fn hub(dir: &Path) -> Cluster {
    ClusterBuilder::new()
        .hub(|c| {
            quick(c, dir);
            c.nodes.heartbeat = Duration::from_millis(100);
        })
        .start()
        .await
}

/// `drover agent` named `box` with a fresh join token, looking on `scan`
/// ports and reporting `servers` besides.
async fn agent(cluster: &Cluster, dir: &Path, scan: &[u16], servers: &[&str]) -> Agent {
    let made = cluster.client.post("/admin/nodes/tokens", &json!({})).await;
    assert_eq!(made.status, 200, "{}", made.text());
    let token = made.json()["token"].as_str().unwrap().to_string();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_drover"));
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("DROVER_") {
            cmd.env_remove(key);
        }
    }
    cmd.args(["agent", "--hub", &cluster.hub.url(), "--name", "box"])
        .args(["--token", &token, "--state-dir"])
        .arg(dir.join("agent"));
    if scan.is_empty() {
        cmd.arg("--no-scan");
    }
    for port in scan {
        cmd.args(["--scan-port", &port.to_string()]);
    }
    for url in servers {
        cmd.args(["--server", url]);
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    Agent(cmd.spawn().expect("drover agent starts"))
}

fn port_of(url: &str) -> u16 {
    url.rsplit(':').next().unwrap().parse().unwrap()
}

/// Waits until the hub has (or has not) a backend named `name` with models.
async fn until_backend(cluster: &Cluster, name: &str, present: bool) {
    wait_until_within(
        &format!(
            "backend {name} {}",
            if present { "joins" } else { "leaves" }
        ),
        Duration::from_secs(20),
        || async move {
            let listed = cluster.hub.backend_id(name).is_some_and(|id| {
                cluster
                    .hub
                    .inspect(|s| s.fleet().view(id).is_some_and(|v| !v.models.is_empty()))
            });
            listed == present
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agents_servers_join_the_fleet_on_its_machine_and_leave_when_they_go() {
    let dir = fresh_dir("agent-servers");
    let cluster = hub(&dir).await;
    let found = SimServer::start(
        TcpListener::bind("127.0.0.1:0").await.unwrap(),
        openai(&["found-model"], 2, 0),
    )
    .unwrap();
    let named = SimServer::start(
        TcpListener::bind("127.0.0.1:0").await.unwrap(),
        openai(&["named-model"], 2, 0),
    )
    .unwrap();
    let found_port = port_of(&found.url());
    let found_name = format!("box:{found_port}");
    let named_name = format!("box:{}", port_of(&named.url()));
    let mut agent = agent(&cluster, &dir, &[found_port], &[&named.url()]).await;
    until_backend(&cluster, &found_name, true).await;
    until_backend(&cluster, &named_name, true).await;

    // Inference goes through the hub to each.
    for (model, backend) in [("found-model", &found_name), ("named-model", &named_name)] {
        let r = cluster
            .client
            .post("/v1/chat/completions", &chat_body(model, "hi"))
            .await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.backend(), backend.as_str());
    }
    // Both are on the node's machine, whose budget is its memory less a
    // tenth.
    let machines: Vec<_> = [&found_name, &named_name]
        .iter()
        .map(|name| {
            let id = cluster.hub.backend_id(name).unwrap();
            cluster
                .hub
                .inspect(|s| s.fleet().view(id).unwrap().status.machine)
                .expect("on a machine")
        })
        .collect();
    assert_eq!(machines[0], machines[1]);
    assert!(machines[0].memory.total > 0);
    assert_eq!(machines[0].memory.margin, machines[0].memory.total / 10);

    // A server that stops answering on a port the agent looks on leaves
    // the fleet; its model is not found any more.
    found.shutdown().await;
    until_backend(&cluster, &found_name, false).await;
    let r = cluster
        .client
        .post("/v1/chat/completions", &chat_body("found-model", "hi"))
        .await;
    assert_eq!(r.status, 404, "{}", r.text());

    // The agent stops: three heartbeats later the node is down, and its
    // servers take no more traffic, although they still run.
    let _ = agent.0.kill();
    let _ = agent.0.wait();
    until_backend(&cluster, &named_name, false).await;
    let r = cluster
        .client
        .post("/v1/chat/completions", &chat_body("named-model", "hi"))
        .await;
    assert_ne!(r.status, 200, "{}", r.text());
    cluster.shutdown().await;
    named.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_finds_a_real_llama_server_and_the_hub_serves_it() {
    let dir = fresh_dir("agent-llama");
    let cluster = hub(&dir).await;
    let model = LlamaServer::model("tiny-a");
    let llama = LlamaServer::start(&["-m", model.to_str().unwrap()], "/health").await;
    let port = port_of(&llama.url);
    let name = format!("box:{port}");
    let _agent = agent(&cluster, &dir, &[port], &[]).await;
    until_backend(&cluster, &name, true).await;
    let id = cluster.hub.backend_id(&name).unwrap();
    let listed = cluster.hub.inspect(|s| {
        s.fleet()
            .view(id)
            .unwrap()
            .models
            .iter()
            .map(|m| m.name.to_string())
            .collect::<Vec<_>>()
    });
    assert_eq!(listed.len(), 1, "{listed:?}");
    let r = cluster
        .client
        .post(
            "/v1/chat/completions",
            &json!({"model": listed[0], "max_tokens": 4,
                    "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.backend(), name);
    // Gone from its port: gone from the fleet.
    drop(llama);
    until_backend(&cluster, &name, false).await;
    cluster.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}
