//! Versioned roll-outs between real builds of drover: three agents, each
//! running its own copy of this build, are updated to another build a
//! batch at a time (same nodes, same processes, the new version); a build
//! that fails its health check is rolled back by its agent by itself and
//! halts the roll-out at its batch; a build whose bytes were tampered with
//! in the store is refused by its SHA-256 and the old one keeps running.
//!
//! scripts/test makes the other builds (`DROVER_NEXT_BUILD`,
//! `DROVER_BROKEN_BUILD`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use drover_tests::jobs::{fresh_dir, quick};
use drover_tests::{Cluster, ClusterBuilder, wait_until_within};
use serde_json::{Value, json};

const THIS: &str = env!("CARGO_PKG_VERSION");
const NEXT: &str = "0.1.0+next";
const BROKEN: &str = "0.1.0+broken";

fn build(var: &str) -> PathBuf {
    match std::env::var_os(var) {
        Some(v) if !v.is_empty() => PathBuf::from(v),
        _ => panic!(
            "{var} is not set: the roll-out tests need other builds of drover. Run the suite with scripts/test"
        ),
    }
}

fn drover(exe: &Path) -> Command {
    drover_tests::command(exe)
}

fn this() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_drover"))
}

/// What `EXE --version` says.
fn version_of(exe: &Path) -> String {
    let out = drover(exe).arg("--version").output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// `drover ARGS --hub URL` with this build: its standard output, or its
/// standard error when it fails.
async fn cli(cluster: &Cluster, args: &[&str]) -> Result<String, String> {
    let mut cmd = drover(&this());
    cmd.args(args).args(["--hub", &cluster.hub.url()]);
    drover_tests::output(cmd).await
}

/// `drover release publish EXE --version VERSION`.
async fn publish(cluster: &Cluster, exe: &Path, version: &str) -> Result<String, String> {
    cli(
        cluster,
        &[
            "release",
            "publish",
            exe.to_str().unwrap(),
            "--version",
            version,
        ],
    )
    .await
}

/// A machine: its own copy of this build, running `drover agent`.
struct Machine {
    exe: PathBuf,
    agent: Child,
}

impl Drop for Machine {
    fn drop(&mut self) {
        let _ = self.agent.kill();
        let _ = self.agent.wait();
    }
}

fn machine(cluster: &Cluster, dir: &Path, name: &str, token: &str) -> Machine {
    let home = dir.join(name);
    std::fs::create_dir_all(home.join("bin")).unwrap();
    let exe = home.join("bin").join("drover");
    std::fs::copy(this(), &exe).unwrap();
    let agent = drover(&exe)
        .args([
            "agent",
            "--hub",
            &cluster.hub.url(),
            "--token",
            token,
            "--name",
            name,
        ])
        .arg("--state-dir")
        .arg(home.join("state"))
        .arg("--no-scan")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    Machine { exe, agent }
}

async fn nodes(cluster: &Cluster) -> Vec<Value> {
    cluster.client.get("/admin/nodes").await.json()["nodes"]
        .as_array()
        .unwrap()
        .clone()
}

/// Waits until every node is up on `version`; their ids.
async fn all_on(cluster: &Cluster, version: &str) -> Vec<String> {
    wait_until_within(
        &format!("every node is up on {version}"),
        Duration::from_secs(60),
        || async move {
            let n = nodes(cluster).await;
            n.len() == 3 && n.iter().all(|n| n["up"] == true && n["version"] == version)
        },
    )
    .await;
    nodes(cluster)
        .await
        .iter()
        .map(|n| n["id"].as_str().unwrap().to_string())
        .collect()
}

/// Flips a byte of release `version`'s stored build, behind the hub's back.
fn tamper(dir: &Path, version: &str) {
    let db = dir.join("drover.db");
    let script = r#"
import sqlite3, sys
c = sqlite3.connect(sys.argv[1])
(fid,) = c.execute("SELECT file_id FROM releases WHERE version = ?", (sys.argv[2],)).fetchone()
(data,) = c.execute("SELECT data FROM file_chunks WHERE file_id = ? AND seq = 0", (fid,)).fetchone()
data = bytearray(data)
data[4096] ^= 0xFF
c.execute("UPDATE file_chunks SET data = ? WHERE file_id = ? AND seq = 0", (bytes(data), fid))
c.commit()
"#;
    let ok = Command::new("python3")
        .args(["-c", script])
        .arg(&db)
        .arg(version)
        .status()
        .unwrap()
        .success();
    assert!(ok, "the store's copy could be changed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_updates_nodes_in_batches_rolls_back_a_failed_build_and_refuses_a_tampered_one() {
    let (next, broken) = (build("DROVER_NEXT_BUILD"), build("DROVER_BROKEN_BUILD"));
    assert!(version_of(&next).ends_with(NEXT), "{}", version_of(&next));
    let dir = fresh_dir("rollout");
    let cluster = ClusterBuilder::new()
        .hub(|c| {
            quick(c, &dir);
            c.nodes.heartbeat = Duration::from_millis(100);
            c.nodes.update_deadline = Duration::from_secs(3);
        })
        .start()
        .await;
    let made = cluster
        .client
        .post("/admin/nodes/tokens", &json!({"reusable": true}))
        .await;
    let token = made.json()["token"].as_str().unwrap().to_string();
    let machines: Vec<Machine> = ["node1", "node2", "node3"]
        .iter()
        .map(|name| machine(&cluster, &dir, name, &token))
        .collect();
    let ids = all_on(&cluster, THIS).await;
    let pids: Vec<u32> = machines.iter().map(|m| m.agent.id()).collect();

    // Publish: the hash travels with it; a version is published once.
    let kept = publish(&cluster, &next, NEXT).await.unwrap();
    assert!(kept.contains(&format!("release {NEXT} kept")), "{kept}");
    let again = publish(&cluster, &next, NEXT).await.unwrap_err();
    assert!(again.contains("published already"), "{again}");
    publish(&cluster, &broken, BROKEN).await.unwrap();

    // A build changed in the store: refused by its hash on every node, which
    // keeps running the build it has.
    publish(&cluster, &next, "0.1.0+tampered").await.unwrap();
    tamper(&dir, "0.1.0+tampered");
    let refused = cli(
        &cluster,
        &[
            "nodes",
            "update",
            "--version",
            "0.1.0+tampered",
            "--batch",
            "3",
        ],
    )
    .await
    .unwrap_err();
    assert!(refused.contains("SHA-256"), "{refused}");
    assert!(
        refused.contains(&format!("{THIS} keeps running")),
        "{refused}"
    );
    all_on(&cluster, THIS).await;
    for m in &machines {
        assert!(version_of(&m.exe).ends_with(THIS));
    }
    // Two at a time, then the third: every node on the new build, the same
    // nodes in the same processes.
    let said = cli(
        &cluster,
        &["nodes", "update", "--version", NEXT, "--batch", "2"],
    )
    .await
    .unwrap();
    assert!(said.contains(&format!("every node is on {NEXT}")), "{said}");
    assert!(
        said.contains(&format!("updated from {THIS} to {NEXT}")),
        "{said}"
    );
    assert_eq!(all_on(&cluster, NEXT).await, ids);
    for (m, pid) in machines.iter().zip(&pids) {
        assert!(version_of(&m.exe).ends_with(NEXT), "{}", m.exe.display());
        assert_eq!(m.agent.id(), *pid);
        assert!(
            Path::new(&format!("/proc/{pid}")).exists(),
            "the same process runs on"
        );
    }

    // A build that never heartbeats: the first node rolls back by itself,
    // and the roll-out halts there.
    let halted = cli(&cluster, &["nodes", "update", "--version", BROKEN])
        .await
        .unwrap_err();
    assert!(halted.contains("halted"), "{halted}");
    assert!(
        halted.contains("did not heartbeat the hub within 3s"),
        "{halted}"
    );
    assert!(
        halted.contains(&format!("rolled back to {NEXT}")),
        "{halted}"
    );
    all_on(&cluster, NEXT).await;
    for m in &machines {
        assert!(version_of(&m.exe).ends_with(NEXT), "{}", m.exe.display());
    }
    let rollouts = cluster.client.get("/admin/rollouts").await.json();
    let states: Vec<&str> = rollouts["rollouts"][0]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["failed", "waiting", "waiting"]);

    drop(machines);
    cluster.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}
