//! Three hubs on one PostgreSQL schema are one cluster: the leader decides
//! every request's slot, the followers ask it for each one over their link
//! and forward straight to the backend. Requests spread over all three
//! never put more on a backend than its slots; a hundred requests for a
//! cold model over the three make one load; a follower that no leader
//! answers refuses with 503 and sends nothing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use bytes::Bytes;
use drover_hub::{HubConfig, HubHandle};
use drover_tests::{
    Client, Cluster, ClusterBuilder, Dialect, SimConfig, chat_body, openai, wait_until_within,
};
use http::Method;
use serde_json::json;
use tokio::net::TcpListener;

fn database_url() -> String {
    let base = std::env::var("DROVER_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let schema = format!("hubs_{}", uuid::Uuid::now_v7().simple());
    let sep = if base.contains('?') { '&' } else { '?' };
    format!("{base}{sep}schema={schema}")
}

/// A hub's config on the shared schema, with a short lease.
fn clustered(c: &mut HubConfig, url: &str, dir: &str) {
    c.database_url = Some(url.to_string());
    c.data_dir = Some(std::env::temp_dir().join(format!("drover-{dir}-{}", uuid::Uuid::now_v7())));
    c.cluster.lease_ttl = Duration::from_secs(2);
    c.cluster.renew_every = Duration::from_millis(200);
}

struct Three {
    /// The first hub, with the simulators.
    first: Cluster,
    others: Vec<(HubHandle, Client)>,
}

impl Three {
    async fn start(builder: ClusterBuilder) -> Three {
        Three::start_on(builder, database_url(), |_| {}).await
    }

    /// Three hubs on `url`, each config changed by `tweak` too.
    async fn start_on(
        builder: ClusterBuilder,
        url: String,
        tweak: impl Fn(&mut HubConfig) + Clone + Send + 'static,
    ) -> Three {
        let (first_url, first_tweak) = (url.clone(), tweak.clone());
        let first = builder
            .hub(move |c| {
                clustered(c, &first_url, "hubs-a");
                first_tweak(c);
            })
            .start()
            .await;
        let mut others = Vec::new();
        for name in ["hubs-b", "hubs-c"] {
            let mut config = first.config().clone();
            clustered(&mut config, &url, name);
            tweak(&mut config);
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            config.listen = listener.local_addr().unwrap().to_string();
            let hub = drover_hub::start(config, listener).await.unwrap();
            let client = Client::new(&hub.url());
            others.push((hub, client));
        }
        let three = Three { first, others };
        three.linked().await;
        three
    }

    /// The index (0 the first hub) of the hub that leads now.
    async fn leader(&self) -> usize {
        for (i, c) in self.clients().iter().enumerate() {
            let metrics = c.get("/metrics").await.text();
            if metrics.contains("drover_hub_role{role=\"leader\"} 1") {
                return i;
            }
        }
        panic!("no hub leads")
    }

    /// Requests waiting in the leader's queue.
    async fn waiting_at_leader(&self) -> usize {
        match self.leader().await {
            0 => self.first.waiting(),
            i => self.others[i - 1].0.load().1,
        }
    }

    fn clients(&self) -> Vec<Client> {
        let mut all = vec![self.first.client.clone()];
        all.extend(self.others.iter().map(|(_, c)| c.clone()));
        all
    }

    /// Waits until one hub leads and the other two follow, linked to it.
    async fn linked(&self) {
        let clients = self.clients();
        wait_until_within(
            "one leader, two linked followers",
            Duration::from_secs(20),
            || {
                let clients = clients.clone();
                async move {
                    let mut roles = Vec::new();
                    for c in &clients {
                        let list = c.get("/admin/hubs").await.json();
                        let me = list["this_hub"].clone();
                        let role = list["hubs"]
                            .as_array()
                            .and_then(|h| h.iter().find(|h| h["id"] == me))
                            .map(|h| h["role"].as_str().unwrap_or_default().to_string());
                        roles.push(role);
                        let metrics = c.get("/metrics").await.text();
                        let follower = metrics.contains("drover_hub_role{role=\"follower\"} 1");
                        let linked = metrics.contains("drover_hub_linked 1");
                        if follower && !linked {
                            return false;
                        }
                    }
                    let leaders = roles
                        .iter()
                        .filter(|r| r.as_deref() == Some("leader"))
                        .count();
                    let followers = roles
                        .iter()
                        .filter(|r| r.as_deref() == Some("follower"))
                        .count();
                    leaders == 1 && followers == 2
                }
            },
        )
        .await;
    }

    async fn shutdown(self) {
        for (hub, _) in self.others {
            hub.shutdown(Duration::from_secs(1)).await;
        }
        self.first.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_spread_over_three_hubs_never_put_more_on_a_backend_than_its_slots() {
    let three =
        Three::start(ClusterBuilder::new().sim_with_slots("sim", openai(&["m"], 2, 40), 2)).await;
    let clients = three.clients();
    let mut all = tokio::task::JoinSet::new();
    for i in 0..60 {
        let client = clients[i % 3].clone();
        all.spawn(async move {
            client
                .post("/v1/chat/completions", &chat_body("m", &format!("hi {i}")))
                .await
        });
    }
    while let Some(r) = all.join_next().await {
        let r = r.unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let stats = three.first.sim("sim").stats().model("m");
    assert_eq!(stats.completed, 60);
    assert!(
        stats.max_in_flight <= 2,
        "two slots, at most two at once across the three hubs: {}",
        stats.max_in_flight
    );
    three.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_requests_for_a_cold_model_over_three_hubs_make_one_load() {
    let cold = |_: ()| SimConfig {
        dialect: Dialect::Ollama,
        models: vec!["m".into()],
        loaded: Vec::new(),
        load_time: Duration::from_millis(300),
        slots: 2,
        ttft: Duration::from_millis(5),
        ..SimConfig::default()
    };
    let three = Three::start(ClusterBuilder::new().sim("a", cold(())).sim("b", cold(()))).await;
    let clients = three.clients();
    let mut all = tokio::task::JoinSet::new();
    for i in 0..100 {
        let client = clients[i % 3].clone();
        all.spawn(async move {
            client
                .post("/v1/chat/completions", &chat_body("m", "hi"))
                .await
        });
    }
    while let Some(r) = all.join_next().await {
        let r = r.unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let loads = |sim: &str| three.first.sim(sim).stats().model("m").loads;
    assert_eq!(
        loads("a") + loads("b"),
        1,
        "one load for a hundred requests over three hubs"
    );
    three.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_no_leader_answers_refuses_with_503_and_sends_nothing() {
    let url = database_url();
    let first_url = url.clone();
    // The leader says it is where nothing listens: its followers cannot
    // link, as if cut off from it.
    let port = drover_tests::free_port().await;
    let leader = ClusterBuilder::new()
        .sim("sim", openai(&["m"], 2, 5))
        .hub(move |c| {
            clustered(c, &first_url, "cut-a");
            c.cluster.advertise = Some(format!("http://127.0.0.1:{port}"));
        })
        .start()
        .await;
    until_role(&leader.client, "leader", "the first hub leads", TEN_S).await;
    let mut config = leader.config().clone();
    clustered(&mut config, &url, "cut-b");
    config.cluster.advertise = None;
    config.cluster.grant_timeout = Duration::from_secs(1);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    config.listen = listener.local_addr().unwrap().to_string();
    let follower = drover_hub::start(config, listener).await.unwrap();
    let client = Client::new(&follower.url());
    wait_until_within(
        "the second hub follows",
        Duration::from_secs(10),
        || async {
            client
                .get("/metrics")
                .await
                .text()
                .contains("drover_hub_role{role=\"follower\"} 1")
        },
    )
    .await;
    let ready = client.get("/ready").await;
    assert_eq!(
        ready.status,
        503,
        "a load balancer takes it out: {}",
        ready.text()
    );
    assert!(ready.text().contains("link"), "{}", ready.text());
    let before = leader.sim("sim").stats().requests_total;
    let started = tokio::time::Instant::now();
    let r = client
        .post("/v1/chat/completions", &chat_body("m", "hi"))
        .await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.error_code(), "no_leader", "{}", r.text());
    assert!(r.text().contains("127.0.0.1"), "says why: {}", r.text());
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "within the grant timeout and a little"
    );
    assert_eq!(
        leader.sim("sim").stats().requests_total,
        before,
        "nothing sent without a grant"
    );
    // Through the leader itself, the same request is served.
    let direct = leader
        .client
        .post("/v1/chat/completions", &chat_body("m", "hi"))
        .await;
    assert_eq!(direct.status, 200, "{}", direct.text());
    follower.shutdown(Duration::from_secs(1)).await;
    leader.shutdown().await;
}

/// A client key with `limits`, made on the first hub and known to all
/// three (each reads the shared keys every two seconds).
async fn key_on_all(three: &Three, name: &str, limits: serde_json::Value) -> String {
    let made = three
        .first
        .client
        .post("/admin/keys", &json!({"name": name, "limits": limits}))
        .await;
    assert_eq!(made.status, 201, "{}", made.text());
    let auth = format!("Bearer {}", made.json()["key"].as_str().unwrap());
    let clients = three.clients();
    // A hub that knows of no client key lets any token in as anonymous:
    // every hub has read the key once it refuses a made-up one.
    wait_until_within("every hub knows the key", Duration::from_secs(10), || {
        let (clients, auth) = (clients.clone(), auth.clone());
        async move {
            for c in &clients {
                let made_up = [("authorization", "Bearer sk-made-up")];
                let refused = c
                    .call(Method::GET, "/v1/models", &made_up, Bytes::new())
                    .await;
                let mine = [("authorization", auth.as_str())];
                let let_in = c.call(Method::GET, "/v1/models", &mine, Bytes::new()).await;
                if refused.status != 401 || let_in.status != 200 {
                    return false;
                }
            }
            true
        }
    })
    .await;
    auth
}

/// `n` requests with `auth` at once, spread over the three hubs: how many
/// were answered 200 and how many 429.
async fn spread(three: &Three, auth: &str, n: usize) -> (usize, usize) {
    let clients = three.clients();
    let mut all = tokio::task::JoinSet::new();
    for i in 0..n {
        let (client, auth) = (clients[i % 3].clone(), auth.to_string());
        all.spawn(async move {
            client
                .post_with(
                    "/v1/chat/completions",
                    &[("authorization", &auth)],
                    &chat_body("m", &format!("hi {i}")),
                )
                .await
        });
    }
    let (mut ok, mut limited) = (0, 0);
    while let Some(r) = all.join_next().await {
        let r = r.unwrap();
        match r.status.as_u16() {
            200 => ok += 1,
            429 => {
                assert!(r.header("retry-after").is_some(), "{}", r.text());
                limited += 1;
            }
            other => panic!("{other}: {}", r.text()),
        }
    }
    (ok, limited)
}

/// Three hubs before a simulator with eight slots and a third of a second
/// a request: only a key's limits hold requests back.
async fn three_before_a_roomy_server() -> Three {
    let mut sim = openai(&["m"], 8, 300);
    sim.output_tokens = 300;
    Three::start(ClusterBuilder::new().sim_with_slots("sim", sim, 8)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keys_concurrency_holds_across_three_hubs() {
    let three = three_before_a_roomy_server().await;
    let two = key_on_all(&three, "two-at-once", json!({"max_concurrent": 2})).await;
    let (ok, limited) = spread(&three, &two, 12).await;
    let most = three.first.sim("sim").stats().model("m").max_in_flight;
    assert!(
        most <= 2 && ok >= 2 && ok + limited == 12,
        "max_concurrent 2 over three hubs: {most} at once, {ok} answered, {limited} refused"
    );
    three.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keys_requests_a_minute_hold_across_three_hubs() {
    let three = three_before_a_roomy_server().await;
    let six = key_on_all(&three, "six-a-minute", json!({"requests_per_minute": 6})).await;
    let (ok, limited) = spread(&three, &six, 18).await;
    assert!(
        (6..=7).contains(&ok) && ok + limited == 18,
        "requests_per_minute 6 over three hubs: {ok} answered, {limited} refused"
    );
    three.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keys_tokens_a_minute_hold_across_three_hubs() {
    let three = three_before_a_roomy_server().await;
    // Each answer charges its 300 output tokens to the key wherever it was
    // answered: the bucket of a thousand is spent after about four in a
    // row, whichever hubs they came through.
    let tokens = key_on_all(&three, "tokens", json!({"tokens_per_minute": 1000})).await;
    let clients = three.clients();
    let mut answered = 0;
    for i in 0..9 {
        let r = clients[i % 3]
            .post_with(
                "/v1/chat/completions",
                &[("authorization", &tokens)],
                &chat_body("m", "hi"),
            )
            .await;
        if r.status == 200 {
            answered += 1;
        } else {
            assert_eq!(r.status, 429, "{}", r.text());
        }
    }
    assert!(
        (3..=5).contains(&answered),
        "tokens_per_minute 1000 over three hubs, 300 output tokens an answer: {answered} of 9 answered"
    );
    three.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_shows_the_leaders_queue_and_names_the_leader() {
    let three =
        Three::start(ClusterBuilder::new().sim_with_slots("sim", openai(&["m"], 1, 200), 1)).await;
    let clients = three.clients();
    let leader = three.leader().await;
    let follower = (leader + 1) % 3;
    let leader_id = clients[leader].get("/admin/hubs").await.json()["this_hub"]
        .as_str()
        .unwrap()
        .to_string();
    // Six requests through the other follower: one runs, five wait at the
    // leader.
    let mut flood = tokio::task::JoinSet::new();
    for i in 0..6 {
        let client = clients[(leader + 2) % 3].clone();
        flood.spawn(async move {
            client
                .post("/v1/chat/completions", &chat_body("m", &format!("hi {i}")))
                .await
        });
    }
    wait_until_within(
        "the requests wait at the leader",
        Duration::from_secs(10),
        || async { three.waiting_at_leader().await >= 4 },
    )
    .await;
    let queue = clients[follower].get("/v1/queue").await;
    assert_eq!(queue.status, 200, "{}", queue.text());
    let waiting = queue.json()["waiting"].as_u64().unwrap();
    assert!(
        waiting >= 3,
        "the follower's queue shows {waiting} waiting: {}",
        queue.text()
    );
    assert_eq!(queue.header("x-drover-leader"), Some(leader_id.as_str()));
    let overview = clients[follower].get("/admin/overview").await.json();
    assert_eq!(overview["leader"], json!(leader_id));
    assert!(
        overview["queue"]["waiting"].as_u64().unwrap() >= 2,
        "{}",
        overview["queue"]
    );
    let busy: u64 = overview["backends"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["in_flight"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(busy, 1, "the leader's busy slot: {}", overview["backends"]);
    while let Some(r) = flood.join_next().await {
        assert_eq!(r.unwrap().status, 200);
    }
    three.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_added_through_a_follower_serves_requests_through_every_hub() {
    let three =
        Three::start(ClusterBuilder::new().sim_with_slots("sim", openai(&["m"], 2, 0), 2)).await;
    let clients = three.clients();
    let leader = three.leader().await;
    let follower = (leader + 1) % 3;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let extra = drover_sim::SimServer::start(listener, openai(&["n"], 2, 0)).unwrap();
    // As the dashboard on the follower sends it: from the follower's own
    // page, which the leader's door would take for another site's.
    let page = clients[follower].url("");
    let same_site = [("origin", page.as_str()), ("sec-fetch-site", "same-origin")];
    let spec = json!({"name": "extra", "kind": "openai", "url": extra.url()});
    let added = clients[follower]
        .post_with("/admin/backends", &same_site, &spec)
        .await;
    assert_eq!(added.status, 201, "{}", added.text());
    every_hub_serves(&clients, "n", "every hub serves the new backend's model").await;
    let served = extra.stats().model("n").completed;
    assert!(served >= 3, "{served}");
    three.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_registered_through_a_follower_runs_a_task_submitted_through_another() {
    let three = Three::start_on(
        ClusterBuilder::new().sim("sim", openai(&["m"], 1, 0)),
        database_url(),
        |c| {
            c.jobs.backoff = Duration::from_millis(20);
            c.jobs.max_backoff = Duration::from_millis(100);
            c.jobs.poll_interval = Duration::from_millis(50);
        },
    )
    .await;
    let clients = three.clients();
    let leader = three.leader().await;
    let (a, b) = (&clients[(leader + 1) % 3], &clients[(leader + 2) % 3]);
    let registered = a
        .post(
            "/v1/workers",
            &json!({"name": "w1", "capabilities": [{"name": "echo", "max_concurrency": 1}]}),
        )
        .await;
    assert_eq!(registered.status, 200, "{}", registered.text());
    let worker = registered.json()["worker_id"].as_str().unwrap().to_string();
    let submitted = b
        .post(
            "/v1/tasks",
            &json!({"capability": "echo", "input": {"say": "hi"}}),
        )
        .await;
    assert_eq!(submitted.status, 200, "{}", submitted.text());
    let task = submitted.json()["id"].as_str().unwrap().to_string();
    let polled = a
        .post(
            &format!("/v1/workers/{worker}/poll"),
            &json!({"wait_s": 5, "max_tasks": 1}),
        )
        .await;
    assert_eq!(
        polled.status,
        200,
        "the worker was given no task: {} (answered by {:?})",
        polled.text(),
        polled.header("x-drover-leader")
    );
    let given = polled.json()["tasks"][0].clone();
    assert_eq!(given["id"], json!(task));
    let token = given["lease_token"].as_str().unwrap();
    let done = b
        .post(
            &format!("/v1/tasks/{task}/complete"),
            &json!({"lease_token": token, "output": {"said": "hi"}}),
        )
        .await;
    assert_eq!(done.status, 204, "{}", done.text());
    let kept = clients[leader].clone();
    let url = format!("/v1/jobs/{task}");
    wait_until_within("the task is completed", Duration::from_secs(10), || {
        let (kept, url) = (kept.clone(), url.clone());
        async move { kept.get(&url).await.json()["state"] == "completed" }
    })
    .await;
    let job = kept.get(&url).await.json();
    assert_eq!(job["response"]["body"], json!({"said": "hi"}), "{job}");
    // A body past what the relay reads is too large, not a missing leader.
    let huge = Bytes::from(vec![b' '; 9 * 1024 * 1024]);
    let refused = a.call(Method::POST, "/v1/workers", &[], huge).await;
    assert_eq!(refused.status, 413, "{}", refused.text());
    three.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_agent_heartbeating_a_follower_has_its_servers_served_through_every_hub() {
    let three =
        Three::start(ClusterBuilder::new().sim_with_slots("sim", openai(&["m"], 2, 0), 2)).await;
    let clients = three.clients();
    let leader = three.leader().await;
    let follower = &clients[(leader + 1) % 3];
    let token = follower.post("/admin/nodes/tokens", &json!({})).await;
    assert_eq!(token.status, 200, "{}", token.text());
    let facts = json!({"hostname": "box", "os": "linux", "arch": "x86_64", "cpus": 8,
        "memory_total_bytes": 64u64 << 30, "memory_available_bytes": 60u64 << 30});
    let joined = follower
        .post(
            "/v1/nodes/join",
            &json!({"token": token.json()["token"], "name": "box", "version": "0.1.0", "facts": facts}),
        )
        .await;
    assert_eq!(joined.status, 200, "{}", joined.text());
    let node = joined.json();
    // The node is another machine: the agent's heartbeat comes from
    // 127.0.0.2, where its server listens and nowhere else, and names the
    // server by its loopback URL, as an agent does. The leader must reach
    // it at the address the follower saw the heartbeat come from.
    let node_ip: std::net::IpAddr = "127.0.0.2".parse().unwrap();
    let listener = TcpListener::bind((node_ip, 0)).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = drover_sim::SimServer::start(listener, openai(&["n"], 2, 0)).unwrap();
    let beat = json!({"version": "0.1.0", "facts": facts, "servers": [{
        "url": format!("http://127.0.0.1:{port}"), "kind": "openai",
        "discovery": {"models": [{"id": "n", "state": "loaded", "slots": 2}]}
    }]})
    .to_string();
    let path = format!("/v1/nodes/{}/heartbeat", node["node_id"].as_str().unwrap());
    let follower_addr: std::net::SocketAddr = follower
        .url("")
        .trim_start_matches("http://")
        .parse()
        .unwrap();
    let mut agent = drover_tests::Raw::connect_from(node_ip, follower_addr).await;
    agent
        .send(
            format!(
                "POST {path} HTTP/1.1\r\nhost: {follower_addr}\r\nauthorization: Bearer {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{beat}",
                node["credential"].as_str().unwrap(),
                beat.len()
            )
            .as_bytes(),
        )
        .await;
    let head = agent.read_head(Duration::from_secs(10)).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    every_hub_serves(&clients, "n", "every hub serves the node's server's model").await;
    assert!(server.stats().model("n").completed >= 3);
    three.shutdown().await;
}

/// A hub on each of `urls` (one database, reached each its own way) before
/// one simulated server of one slot: each hub a handle and a client, the
/// server apart from them all.
async fn hubs_before(
    server: &drover_tests::SimHandle,
    urls: &[String],
) -> Vec<(HubHandle, Client)> {
    hubs_naming(server, urls, &vec!["sim"; urls.len()]).await
}

/// [`hubs_before`], each hub naming the server as `names` says.
async fn hubs_naming(
    server: &drover_tests::SimHandle,
    urls: &[String],
    names: &[&str],
) -> Vec<(HubHandle, Client)> {
    let mut hubs = Vec::new();
    for (i, (url, name)) in urls.iter().zip(names).enumerate() {
        let mut config = ClusterBuilder::new().hub_config();
        config.backends.push(drover_proto::admin::BackendSpec {
            name: Some(name.to_string()),
            kind: "openai".into(),
            url: server.url(),
            slots: Some(1),
            ..Default::default()
        });
        clustered(&mut config, url, &format!("hubs-{i}"));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        config.listen = listener.local_addr().unwrap().to_string();
        let hub = drover_hub::start(config, listener).await.unwrap();
        let client = Client::new(&hub.url());
        hubs.push((hub, client));
        // One after the other: the first leads.
        if i == 0 {
            until_role(&hubs[0].1, "leader", "the first hub leads", TEN_S).await;
        }
    }
    hubs
}

const TEN_S: Duration = Duration::from_secs(10);
const FIFTEEN_S: Duration = Duration::from_secs(15);

/// Waits up to `within` until the hub `c` says it is `role`.
async fn until_role(c: &Client, role: &str, what: &str, within: Duration) {
    wait_until_within(what, within, || async { role_of(c).await == role }).await;
}

/// Waits up to `within` until the hub `c` follows with its link to the
/// leader up.
async fn until_linked(c: &Client, what: &str, within: Duration) {
    wait_until_within(what, within, || async {
        c.get("/metrics")
            .await
            .text()
            .contains("drover_hub_linked 1")
    })
    .await;
}

async fn role_of(c: &Client) -> String {
    let metrics = c.get("/metrics").await.text();
    ["leader", "follower", "leaderless", "alone"]
        .into_iter()
        .find(|r| metrics.contains(&format!("drover_hub_role{{role=\"{r}\"}} 1")))
        .unwrap_or("none")
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_that_becomes_the_leader_counts_its_own_running_requests() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = drover_sim::SimServer::start(listener, openai(&["m"], 1, 1500)).unwrap();
    let url = database_url();
    let mut hubs = hubs_before(&server, &[url.clone(), url]).await;
    let follower = hubs[1].1.clone();
    until_linked(&follower, "the second hub follows, linked", TEN_S).await;
    // A long request through the follower, granted by the leader.
    let long = {
        let follower = follower.clone();
        tokio::spawn(async move {
            follower
                .post("/v1/chat/completions", &chat_body("m", "long"))
                .await
        })
    };
    wait_until_within("the long request runs", Duration::from_secs(10), || async {
        server.stats().model("m").in_flight == 1
    })
    .await;
    // The leader goes; the follower leads, its request still running.
    let (leader, _) = hubs.remove(0);
    leader.shutdown(Duration::from_millis(100)).await;
    until_role(&follower, "leader", "the follower leads", TEN_S).await;
    assert_eq!(server.stats().model("m").in_flight, 1);
    // Three more through it: the one slot is its running request's until
    // it ends.
    let mut more = tokio::task::JoinSet::new();
    for i in 0..3 {
        let follower = follower.clone();
        more.spawn(async move {
            follower
                .post(
                    "/v1/chat/completions",
                    &chat_body("m", &format!("after {i}")),
                )
                .await
        });
    }
    while let Some(r) = more.join_next().await {
        assert_eq!(r.unwrap().status, 200);
    }
    assert_eq!(long.await.unwrap().status, 200);
    let most = server.stats().model("m").max_in_flight;
    assert_eq!(
        most, 1,
        "one slot; {most} at once after the change of leader"
    );
    for (hub, _) in hubs {
        hub.shutdown(Duration::from_secs(1)).await;
    }
}

/// Waits until a chat for `model` through each hub is answered.
async fn every_hub_serves(clients: &[Client], model: &str, what: &str) {
    wait_until_within(what, Duration::from_secs(15), || async {
        for c in clients {
            let r = c
                .post("/v1/chat/completions", &chat_body(model, "hi"))
                .await;
            if r.status != 200 {
                return false;
            }
        }
        true
    })
    .await;
}

/// A gauge of llama-server's `/metrics` (`llamacpp:NAME`).
async fn llama_gauge(server: &Client, name: &str) -> f64 {
    let text = server.get("/metrics").await.text();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("llamacpp:{name} ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hubs_before_the_real_llama_server_never_send_it_more_than_its_slots() {
    let model = drover_tests::LlamaServer::model("tiny-a");
    let server = drover_tests::LlamaServer::start(
        &[
            "-m",
            model.to_str().unwrap(),
            "-np",
            "2",
            "-c",
            "4096",
            "--metrics",
        ],
        "/health",
    )
    .await;
    let three = Three::start(
        ClusterBuilder::new().external(drover_proto::admin::BackendSpec {
            name: Some("llama".into()),
            url: server.url.clone(),
            ..Default::default()
        }),
    )
    .await;
    let clients = three.clients();
    let id = clients[0].get("/v1/models").await.json()["data"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    // What llama-server does, looked at every few milliseconds: the most
    // it ran at once, and the most it held back for want of a slot.
    let direct = Client::new(&server.url);
    let watching = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let watch = {
        let (direct, watching) = (direct.clone(), watching.clone());
        tokio::spawn(async move {
            let (mut running, mut deferred) = (0f64, 0f64);
            while watching.load(std::sync::atomic::Ordering::Relaxed) {
                running = running.max(llama_gauge(&direct, "requests_processing").await);
                deferred = deferred.max(llama_gauge(&direct, "requests_deferred").await);
                tokio::time::sleep(Duration::from_millis(3)).await;
            }
            (running, deferred)
        })
    };
    let mut all = tokio::task::JoinSet::new();
    for i in 0..30 {
        let client = clients[i % 3].clone();
        let mut body = chat_body(&id, &format!("Hello {i}"));
        body["max_tokens"] = json!(48);
        body["stream"] = json!(i % 2 == 0);
        all.spawn(async move { client.post("/v1/chat/completions", &body).await });
    }
    while let Some(r) = all.join_next().await {
        let r = r.unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
        if r.text().starts_with("data:") {
            assert!(
                r.text().trim_end().ends_with("data: [DONE]"),
                "{}",
                r.text()
            );
        }
    }
    watching.store(false, std::sync::atomic::Ordering::Relaxed);
    let (running, deferred) = watch.await.unwrap();
    assert!(running >= 1.0, "the watch saw nothing run");
    assert_eq!(
        deferred, 0.0,
        "two slots: the hubs sent llama-server more than it runs at once ({running} running)"
    );
    three.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_that_steps_down_tells_the_next_of_its_running_requests() {
    use drover_tests::relay::{Relay, postgres};
    let (target, template) = postgres();
    let relay = Relay::start(target.clone()).await;
    let schema = format!("hubs_{}", uuid::Uuid::now_v7().simple());
    let via_relay = format!(
        "{}?schema={schema}",
        template.replace("{relay}", &relay.addr)
    );
    let direct = format!("{}?schema={schema}", template.replace("{relay}", &target));
    // One slot; an answer streams 20 tokens a second, as long as asked.
    let mut config = openai(&["m"], 1, 0);
    config.tokens_per_sec = 20.0;
    config.output_tokens = 400;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = drover_sim::SimServer::start(listener, config).unwrap();
    // The first leads, and reaches the database through the relay.
    let hubs = hubs_before(&server, &[via_relay, direct]).await;
    let (old, next) = (hubs[0].1.clone(), hubs[1].1.clone());
    until_linked(&next, "the second hub follows, linked", TEN_S).await;
    // Fifteen seconds of answer, granted by the leader to itself.
    let long = {
        let old = old.clone();
        let mut body = chat_body("m", "long");
        body["max_tokens"] = json!(300);
        tokio::spawn(async move { old.post("/v1/chat/completions", &body).await })
    };
    wait_until_within("the long request runs", Duration::from_secs(10), || async {
        server.stats().model("m").in_flight == 1
    })
    .await;
    // Only the leader loses the database: it steps down at its deadline,
    // the other leads; then the database is back and the old leader
    // follows, telling the new one of its running request.
    relay.cut();
    until_role(&next, "leader", "the second hub leads", FIFTEEN_S).await;
    relay.restore();
    until_linked(&old, "the old leader follows, linked", FIFTEEN_S).await;
    wait_until_within(
        "the new leader counts the old one's running request",
        Duration::from_secs(5),
        || {
            let next = next.clone();
            async move {
                let listed = next.get("/admin/backends").await.json();
                listed["backends"][0]["in_flight"] == 1
            }
        },
    )
    .await;
    assert_eq!(server.stats().model("m").in_flight, 1, "still running");
    let mut more = tokio::task::JoinSet::new();
    for i in 0..3 {
        let next = next.clone();
        let mut body = chat_body("m", &format!("short {i}"));
        body["max_tokens"] = json!(2);
        more.spawn(async move { next.post("/v1/chat/completions", &body).await });
    }
    while let Some(r) = more.join_next().await {
        let r = r.unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
    }
    assert_eq!(long.await.unwrap().status, 200);
    let most = server.stats().model("m").max_in_flight;
    assert_eq!(
        most, 1,
        "one slot; {most} at once across the change of leader"
    );
    for (hub, _) in hubs {
        hub.shutdown(Duration::from_secs(1)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_refuses_a_link_of_another_version_saying_both() {
    let url = database_url();
    let three = Three::start_on(
        ClusterBuilder::new().sim("sim", openai(&["m"], 1, 0)),
        url.clone(),
        |_| {},
    )
    .await;
    let leader = three.clients()[three.leader().await].clone();
    let store = drover_store::Store::open_beside(drover_store::Location::parse(&url).unwrap())
        .await
        .unwrap();
    let secret = store
        .setting_or_insert("cluster_secret", "never used")
        .await
        .unwrap();
    for version in [None, Some("1"), Some("3")] {
        let mut headers = vec![("x-drover-cluster-secret", secret.as_str())];
        if let Some(v) = version {
            headers.push(("x-drover-link-version", v));
        }
        let r = leader
            .call(Method::POST, "/cluster/link", &headers, Bytes::new())
            .await;
        assert_eq!(r.status, 409, "{version:?}: {}", r.text());
        let said = r.text();
        assert!(
            said.contains("version 2")
                && said.contains(&format!("version {}", version.unwrap_or("1"))),
            "{said}"
        );
    }
    three.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_granted_a_backend_it_cannot_add_asks_again_without_it() {
    // The follower's config names the leader's server otherwise: it cannot
    // add the leader's "sim" (the same server), so a grant on it is of no
    // use there.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = drover_sim::SimServer::start(listener, openai(&["m"], 1, 0)).unwrap();
    let url = database_url();
    let hubs = hubs_naming(&server, &[url.clone(), url], &["sim", "other"]).await;
    let follower = hubs[1].1.clone();
    until_linked(&follower, "the follower is linked", TEN_S).await;
    // Answered at once, saying no backend is left, not asked for ever.
    let body = chat_body("m", "hi");
    let asked = follower.post("/v1/chat/completions", &body);
    let answered = tokio::time::timeout(Duration::from_secs(5), asked)
        .await
        .expect("answered within 5 s");
    assert_eq!(answered.status, 502, "{}", answered.text());
    assert_eq!(server.stats().requests_total, 0, "nothing sent anywhere");
    for (hub, _) in hubs {
        hub.shutdown(Duration::from_secs(1)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_low_priority_flood_through_one_hub_does_not_hold_up_a_high_priority_request_through_another()
 {
    let three =
        Three::start(ClusterBuilder::new().sim_with_slots("sim", openai(&["m"], 1, 150), 1)).await;
    let clients = three.clients();
    // One request alone: how long the server takes for one.
    let started = tokio::time::Instant::now();
    let lone = clients[0]
        .post("/v1/chat/completions", &chat_body("m", "alone"))
        .await;
    assert_eq!(lone.status, 200, "{}", lone.text());
    let service = started.elapsed();
    let leader = three.leader().await;
    let (flood, urgent) = ((leader + 1) % 3, (leader + 2) % 3);
    let mut low = tokio::task::JoinSet::new();
    for i in 0..12 {
        let client = clients[flood].clone();
        low.spawn(async move {
            client
                .post_with(
                    "/v1/chat/completions",
                    &[("x-drover-priority", "10")],
                    &chat_body("m", &format!("low {i}")),
                )
                .await
        });
    }
    wait_until_within(
        "the flood waits at the leader",
        Duration::from_secs(10),
        || async { three.waiting_at_leader().await >= 10 },
    )
    .await;
    let started = tokio::time::Instant::now();
    let high = clients[urgent]
        .post_with(
            "/v1/chat/completions",
            &[("x-drover-priority", "90")],
            &chat_body("m", "urgent"),
        )
        .await;
    let took = started.elapsed();
    assert_eq!(high.status, 200, "{}", high.text());
    // At most the one running when it came, then its own, with room for
    // the link and a busy machine.
    assert!(
        took < service * 2 + Duration::from_millis(250),
        "the high-priority request took {took:?}; one service takes {service:?}"
    );
    while let Some(r) = low.join_next().await {
        assert_eq!(r.unwrap().status, 200);
    }
    assert!(three.first.sim("sim").stats().model("m").max_in_flight <= 1);
    three.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_postgres_no_hub_grants_once_the_lease_runs_out_and_all_serve_again_when_it_returns()
 {
    use drover_tests::relay::{Relay, postgres};
    let (target, template) = postgres();
    let relay = Relay::start(target).await;
    let schema = format!("hubs_{}", uuid::Uuid::now_v7().simple());
    let url = format!(
        "{}?schema={schema}",
        template.replace("{relay}", &relay.addr)
    );
    let three = Three::start_on(
        ClusterBuilder::new().sim("sim", openai(&["m"], 4, 5)),
        url,
        |c| c.cluster.grant_timeout = Duration::from_secs(1),
    )
    .await;
    let clients = three.clients();
    let chat = |c: &Client| {
        let c = c.clone();
        async move { c.post("/v1/chat/completions", &chat_body("m", "hi")).await }
    };
    for c in &clients {
        assert_eq!(chat(c).await.status, 200);
    }
    // The store goes: the leader grants from memory until its lease's
    // deadline (others were alive), then no hub grants: every request is
    // answered 503 no_leader, none is sent without a grant.
    relay.cut();
    let cut_at = tokio::time::Instant::now();
    let answered = chat(&clients[three.leader().await]).await;
    if cut_at.elapsed() < Duration::from_millis(1500) {
        assert_eq!(
            answered.status,
            200,
            "before the lease's deadline: {}",
            answered.text()
        );
    }
    wait_until_within("no hub grants", Duration::from_secs(15), || async {
        let mut all = true;
        for c in &clients {
            let r = chat(c).await;
            assert!(r.status == 200 || r.status == 503, "{}", r.text());
            all &= r.status == 503 && r.error_code() == "no_leader";
        }
        all
    })
    .await;
    let served = three.first.sim("sim").stats().requests_total;
    for c in &clients {
        let r = chat(c).await;
        assert_eq!(r.status, 503, "{}", r.text());
        assert_eq!(c.get("/ready").await.status, 503);
    }
    assert_eq!(
        three.first.sim("sim").stats().requests_total,
        served,
        "nothing sent without a grant"
    );
    // What only the leader may answer is not kept where it would be lost.
    for c in &clients {
        let worker = json!({"name": "w", "capabilities": [{"name": "echo", "max_concurrency": 1}]});
        let r = c.post("/v1/workers", &worker).await;
        assert_eq!(r.status, 503, "{}", r.text());
        assert_eq!(r.error_code(), "no_leader");
    }
    // Back: one leads within a lease and the followers link; all serve.
    relay.restore();
    three.linked().await;
    for c in &clients {
        assert_eq!(chat(c).await.status, 200);
    }
    three.shutdown().await;
}
