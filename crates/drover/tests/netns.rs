//! Several agents as separate hosts: each in a network namespace of its own
//! joined to the hub's by a veth pair, its server on the same port as the
//! other's (they are different machines), reached by the hub at the address
//! its heartbeats come from. Cutting one machine's link marks it down after
//! three missed heartbeats: its server leaves the fleet and every request
//! goes to the other; the link back, it returns by itself.
//!
//! Needs root and `ip netns` (the test machine and CI have both).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use drover_tests::{Client, chat_body, wait_until_within};
use serde_json::json;

fn drover() -> Command {
    drover_tests::command(env!("CARGO_BIN_EXE_drover"))
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("ip runs");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A machine: a network namespace with a veth pair to the hub's, the hub's
/// side at `10.A.B.1`, its own at `10.A.B.2`. Removed when dropped, with
/// whatever runs in it.
struct Host {
    ns: String,
    link: String,
    hub_ip: String,
    children: Vec<Child>,
}

impl Host {
    fn new(tag: &str, subnet: u8) -> Host {
        let id = std::process::id() % 100_000;
        let ns = format!("drv{id}{tag}");
        let link = format!("dv{id}{tag}0");
        let peer = format!("dv{id}{tag}1");
        let net = format!("10.{}.{subnet}", 100 + id % 100);
        let _ = Command::new("ip").args(["netns", "del", &ns]).output();
        ip(&["netns", "add", &ns]);
        let host = Host {
            ns: ns.clone(),
            link: link.clone(),
            hub_ip: format!("{net}.1"),
            children: Vec::new(),
        };
        ip(&["link", "add", &link, "type", "veth", "peer", "name", &peer]);
        ip(&["link", "set", &peer, "netns", &ns]);
        ip(&["addr", "add", &format!("{net}.1/24"), "dev", &link]);
        ip(&["link", "set", &link, "up"]);
        ip(&[
            "netns",
            "exec",
            &ns,
            "ip",
            "addr",
            "add",
            &format!("{net}.2/24"),
            "dev",
            &peer,
        ]);
        ip(&["netns", "exec", &ns, "ip", "link", "set", &peer, "up"]);
        ip(&["netns", "exec", &ns, "ip", "link", "set", "lo", "up"]);
        host
    }

    /// Runs `drover ARGS` on this machine.
    fn run(&mut self, args: &[&str]) {
        let mut cmd = drover_tests::command("sh");
        cmd.args([
            "-c",
            "exec ip netns exec \"$0\" \"$@\"",
            &self.ns,
            env!("CARGO_BIN_EXE_drover"),
        ])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
        self.children
            .push(cmd.spawn().expect("runs in the namespace"));
    }

    /// Cuts (or restores) the machine's only link to the hub.
    fn link(&self, up: bool) {
        ip(&["link", "set", &self.link, if up { "up" } else { "down" }]);
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).output();
        let _ = Command::new("ip")
            .args(["link", "del", &self.link])
            .output();
    }
}

struct Hub(Child);

impl Drop for Hub {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The backends the hub has, by name.
async fn backends(hub: &Client) -> Vec<String> {
    let listed = hub
        .call(
            http::Method::GET,
            "/admin/backends",
            &[("authorization", "Bearer admin-key")],
            bytes::Bytes::new(),
        )
        .await
        .json();
    listed["backends"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|b| b["models"].as_array().is_some_and(|m| !m.is_empty()))
        .filter_map(|b| b["name"].as_str().map(str::to_string))
        .collect()
}

/// Which backends answer twenty requests for `m` sent at once (each server
/// takes two at a time, for 100 ms each); every one must be 200.
async fn served_by(hub: &Client) -> std::collections::BTreeSet<String> {
    let mut all = tokio::task::JoinSet::new();
    for i in 0..20 {
        let hub = hub.clone();
        all.spawn(async move {
            hub.post("/v1/chat/completions", &chat_body("m", &format!("hi {i}")))
                .await
        });
    }
    let mut by = std::collections::BTreeSet::new();
    while let Some(r) = all.join_next().await {
        let r = r.unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
        by.insert(r.backend().to_string());
    }
    by
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_on_separate_hosts_join_and_a_cut_host_leaves_the_fleet_until_it_returns() {
    let mut a = Host::new("a", 1);
    let mut b = Host::new("b", 2);
    let dir = std::env::temp_dir().join(format!("drover-netns-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();

    // The hub, on every interface of the host's namespace.
    let mut serve = drover();
    serve
        .env("DROVER_ADMIN_KEY", "admin-key")
        .env("DROVER_NODES__HEARTBEAT", "200ms")
        .args(["serve", "--listen", "0.0.0.0:0", "--insecure", "--data-dir"])
        .arg(&dir)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = serve.spawn().expect("drover serve starts");
    let stderr = child.stderr.take().unwrap();
    let hub = Hub(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(rest) = line.split("every interface, port ").nth(1) {
                let _ = tx.send(
                    rest.split_whitespace()
                        .next()
                        .unwrap_or_default()
                        .to_string(),
                );
            }
            eprintln!("hub: {line}");
        }
    });
    let port = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the hub says its port");
    let client = Client::new(&format!("http://127.0.0.1:{port}"));
    let made = client
        .post_with(
            "/admin/nodes/tokens",
            &[("authorization", "Bearer admin-key")],
            &json!({"reusable": true}),
        )
        .await;
    assert_eq!(made.status, 200, "{}", made.text());
    let token = made.json()["token"].as_str().unwrap().to_string();

    // The same server on the same port on each machine, and an agent.
    for (host, name) in [(&mut a, "node-a"), (&mut b, "node-b")] {
        host.run(&[
            "sim",
            "--dialect",
            "lmstudio",
            "--listen",
            "0.0.0.0:9000",
            "--models",
            "m",
            "--loaded",
            "m",
            "--slots",
            "2",
            "--ttft-ms",
            "100",
        ]);
        let hub_url = format!("http://{}:{port}", host.hub_ip);
        let state = dir.join(name);
        host.run(&[
            "agent",
            "--hub",
            &hub_url,
            "--token",
            &token,
            "--name",
            name,
            "--state-dir",
            state.to_str().unwrap(),
            "--scan-port",
            "9000",
        ]);
    }
    let both = ["node-a:9000".to_string(), "node-b:9000".to_string()];
    wait_until_within(
        "both machines' servers join",
        Duration::from_secs(30),
        || {
            let client = client.clone();
            let both = both.clone();
            async move { backends(&client).await == both }
        },
    )
    .await;
    let by = served_by(&client).await;
    assert_eq!(
        by.into_iter().collect::<Vec<_>>(),
        both,
        "each machine serves"
    );

    // Machine a's link is cut: three heartbeats later it is down and its
    // server takes nothing.
    a.link(false);
    wait_until_within("node-a leaves the fleet", Duration::from_secs(30), || {
        let client = client.clone();
        async move { backends(&client).await == ["node-b:9000"] }
    })
    .await;
    let nodes = client
        .call(
            http::Method::GET,
            "/admin/nodes",
            &[("authorization", "Bearer admin-key")],
            bytes::Bytes::new(),
        )
        .await
        .json();
    let up: Vec<(String, bool)> = nodes["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            (
                n["name"].as_str().unwrap().to_string(),
                n["up"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(up, [("node-a".into(), false), ("node-b".into(), true)]);
    let by = served_by(&client).await;
    assert_eq!(by.into_iter().collect::<Vec<_>>(), ["node-b:9000"]);

    // The link back: its agent reports again by itself.
    a.link(true);
    wait_until_within("node-a returns", Duration::from_secs(30), || {
        let client = client.clone();
        let both = both.clone();
        async move { backends(&client).await == both }
    })
    .await;
    drop(hub);
    drop(a);
    drop(b);
    let _ = std::fs::remove_dir_all(&dir);
}
