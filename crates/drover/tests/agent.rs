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
    agent_with(cluster, dir, scan, servers, None).await
}

fn drover() -> Command {
    drover_tests::command(env!("CARGO_BIN_EXE_drover"))
}

async fn agent_with(
    cluster: &Cluster,
    dir: &Path,
    scan: &[u16],
    servers: &[&str],
    config: Option<&Path>,
) -> Agent {
    let made = cluster.client.post("/admin/nodes/tokens", &json!({})).await;
    assert_eq!(made.status, 200, "{}", made.text());
    let token = made.json()["token"].as_str().unwrap().to_string();
    let mut cmd = drover();
    cmd.args(["agent", "--hub", &cluster.hub.url(), "--name", "box"]);
    if let Some(config) = config {
        cmd.arg("--config").arg(config);
    }
    cmd.args(["--token", &token, "--state-dir"])
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

/// `drover nodes ARGS --hub URL`: its standard output, or its standard
/// error when it fails.
async fn nodes_cli(cluster: &Cluster, args: &[&str]) -> Result<String, String> {
    let mut cmd = drover();
    cmd.arg("nodes")
        .args(args)
        .args(["--hub", &cluster.hub.url()]);
    drover_tests::output(cmd).await
}

/// The node's service `name` as its last heartbeat said.
async fn service(cluster: &Cluster, name: &str) -> serde_json::Value {
    let nodes = cluster.client.get("/admin/nodes").await.json();
    nodes["nodes"][0]["services"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|s| s["name"] == name)
        .cloned()
        .unwrap_or_default()
}

async fn until_service(
    cluster: &Cluster,
    name: &str,
    what: &str,
    holds: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let holds = &holds;
    wait_until_within(
        &format!("service {name}: {what}"),
        Duration::from_secs(20),
        || async move { holds(&service(cluster, name).await) },
    )
    .await;
    service(cluster, name).await
}

fn alive(pid: u64) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|stat| stat.split_whitespace().nth(2).is_none_or(|s| s != "Z"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_runs_its_services_as_the_hub_says_and_a_node_drains() {
    let dir = fresh_dir("agent-services");
    let cluster = ClusterBuilder::new()
        .hub(|c| {
            quick(c, &dir);
            c.nodes.heartbeat = Duration::from_millis(100);
            c.queue.timeout = Duration::from_millis(500);
        })
        .start()
        .await;
    let sim = SimServer::start(
        TcpListener::bind("127.0.0.1:0").await.unwrap(),
        openai(&["m"], 2, 0),
    )
    .unwrap();
    let config = dir.join("agent.toml");
    std::fs::write(
        &config,
        r#"
[[services]]
name = "sleeper"
command = "sh"
args = ["-c", "echo up as $WHO; exec sleep 1000"]
env = { WHO = "sleeper" }

[[services]]
name = "crasher"
command = "sh"
args = ["-c", "echo boom; exit 3"]

[[services]]
name = "idle"
command = "sleep"
args = ["1000"]
autostart = false
"#,
    )
    .unwrap();
    let _agent = agent_with(&cluster, &dir, &[], &[&sim.url()], Some(&config)).await;
    let backend = format!("box:{}", port_of(&sim.url()));
    until_backend(&cluster, &backend, true).await;

    // Started with the agent; the one that exits is started again, with
    // how it ended kept.
    let sleeper = until_service(&cluster, "sleeper", "running", |s| s["state"] == "running").await;
    let first = sleeper["pid"].as_u64().unwrap();
    assert!(alive(first));
    let crasher = until_service(&cluster, "crasher", "restarted", |s| {
        s["restarts"].as_u64().unwrap_or(0) >= 1
    })
    .await;
    assert_eq!(crasher["last_exit"], "exited with status 3", "{crasher}");
    assert_eq!(service(&cluster, "idle").await["state"], "stopped");
    let logs = nodes_cli(&cluster, &["logs", "box", "crasher"])
        .await
        .unwrap();
    assert!(logs.contains("boom\n"), "{logs}");
    let logs = nodes_cli(&cluster, &["logs", "box", "sleeper"])
        .await
        .unwrap();
    assert!(logs.contains("up as sleeper"), "{logs}");

    // Killed from outside: started again.
    assert!(
        Command::new("kill")
            .args(["-9", &first.to_string()])
            .status()
            .unwrap()
            .success()
    );
    let again = until_service(&cluster, "sleeper", "started again after kill -9", |s| {
        s["state"] == "running" && s["pid"].as_u64().is_some_and(|p| p != first)
    })
    .await;
    assert_eq!(again["last_exit"], "was killed by signal 9", "{again}");
    let second = again["pid"].as_u64().unwrap();

    // Restart, stop and start, from the CLI.
    let said = nodes_cli(&cluster, &["restart", "box", "sleeper"])
        .await
        .unwrap();
    assert!(said.contains("restarting: sleeper"), "{said}");
    let third = until_service(&cluster, "sleeper", "restarted", |s| {
        s["state"] == "running" && s["pid"].as_u64().is_some_and(|p| p != second)
    })
    .await["pid"]
        .as_u64()
        .unwrap();
    assert!(!alive(second), "the old run is gone");
    nodes_cli(&cluster, &["stop", "box", "sleeper"])
        .await
        .unwrap();
    until_service(&cluster, "sleeper", "stopped", |s| s["state"] == "stopped").await;
    assert!(!alive(third));
    nodes_cli(&cluster, &["start", "box", "idle"])
        .await
        .unwrap();
    until_service(&cluster, "idle", "running", |s| s["state"] == "running").await;
    let refused = nodes_cli(&cluster, &["restart", "box", "nope"])
        .await
        .unwrap_err();
    assert!(
        refused.contains("no service \"nope\" on this node"),
        "{refused}"
    );

    // Stop All.
    nodes_cli(&cluster, &["stop", "--all"]).await.unwrap();
    for name in ["idle", "crasher"] {
        until_service(&cluster, name, "stopped by Stop All", |s| {
            s["state"] == "stopped"
        })
        .await;
    }

    // Drained, the node's servers take no new work; undrained, they do.
    let chat = || async {
        cluster
            .client
            .post("/v1/chat/completions", &chat_body("m", "hi"))
            .await
    };
    assert_eq!(chat().await.status, 200);
    let said = nodes_cli(&cluster, &["drain", "box"]).await.unwrap();
    assert!(said.contains("box is draining"), "{said}");
    assert_ne!(chat().await.status, 200);
    let nodes = cluster.client.get("/admin/nodes").await.json();
    assert_eq!(nodes["nodes"][0]["draining"], true);
    nodes_cli(&cluster, &["undrain", "box"]).await.unwrap();
    assert_eq!(chat().await.status, 200);
    cluster.shutdown().await;
    sim.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}
