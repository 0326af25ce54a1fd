//! Nodes joining a hub over HTTP on loopback: a join token traded once for
//! a node credential; used, expired, revoked and forged tokens refused
//! with nothing stored; heartbeats kept only with the node's own
//! credential; a node silent for three heartbeats is down; what an agent
//! reports is bounded.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use drover_tests::jobs::{fresh_dir, quick};
use drover_tests::{Cluster, ClusterBuilder, openai};
use serde_json::{Value, json};

async fn hub(name: &str) -> (Cluster, std::path::PathBuf) {
    let dir = fresh_dir(name);
    let data = dir.clone();
    let c = ClusterBuilder::new()
        .sim("s", openai(&["m"], 1, 0))
        .hub(move |c| {
            quick(c, &data);
            c.nodes.heartbeat = Duration::from_millis(100);
        })
        .start()
        .await;
    (c, dir)
}

async fn token(c: &Cluster, body: Value) -> (String, String) {
    let r = c.client.post("/admin/nodes/tokens", &body).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let made = r.json();
    (
        made["id"].as_str().unwrap().to_string(),
        made["token"].as_str().unwrap().to_string(),
    )
}

fn facts() -> Value {
    json!({"hostname": "box", "os": "linux", "arch": "x86_64", "cpus": 8,
           "memory_total_bytes": 64u64 << 30, "memory_available_bytes": 60u64 << 30})
}

async fn join(c: &Cluster, token: &str, name: &str) -> drover_tests::Reply {
    c.client
        .post(
            "/v1/nodes/join",
            &json!({"token": token, "name": name, "version": "0.1.0", "facts": facts()}),
        )
        .await
}

async fn nodes(c: &Cluster) -> Vec<Value> {
    c.client.get("/admin/nodes").await.json()["nodes"]
        .as_array()
        .unwrap()
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_token_lets_one_machine_in_and_bad_tokens_none() {
    let (c, dir) = hub("nodes-join").await;
    let (_, once) = token(&c, json!({})).await;
    let r = join(&c, &once, "box-1").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let joined = r.json();
    assert!(joined["credential"].as_str().unwrap().starts_with("drv_n_"));
    assert_eq!(joined["heartbeat_ms"], 100);

    // Used, forged, revoked, expired: 401 saying why, nothing stored.
    let r = join(&c, &once, "box-2").await;
    assert_eq!(r.status, 401, "{}", r.text());
    assert!(
        r.text().contains("one has joined with it already"),
        "{}",
        r.text()
    );
    let r = join(&c, "drv_j_forged", "box-3").await;
    assert_eq!(r.status, 401);
    assert!(r.text().contains("not one this hub made"), "{}", r.text());
    let (id, revoked) = token(&c, json!({"reusable": true})).await;
    let r = c.client.delete(&format!("/admin/nodes/tokens/{id}")).await;
    assert_eq!(r.status, 204, "{}", r.text());
    let r = join(&c, &revoked, "box-4").await;
    assert_eq!(r.status, 401);
    assert!(r.text().contains("was revoked"), "{}", r.text());
    // An expired token, as another tool on the same store would keep one.
    let store = drover_store::Store::open_beside(drover_store::Location::Sqlite(
        dir.join(drover_store::SQLITE_FILE),
    ))
    .await
    .unwrap();
    store
        .insert_join_token(&drover_store::JoinToken {
            id: "jt_old".into(),
            sha256: sha256("drv_j_old"),
            prefix: "drv_j_old".into(),
            created_unix: 1,
            expires_unix: 2,
            single_use: 0,
            used_unix: None,
            revoked_unix: None,
        })
        .await
        .unwrap();
    store.close().await;
    let r = join(&c, "drv_j_old", "box-5").await;
    assert_eq!(r.status, 401);
    assert!(r.text().contains("has expired"), "{}", r.text());

    let listed = nodes(&c).await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["name"], "box-1");
    assert_eq!(listed[0]["facts"]["cpus"], 8);
    // A reusable token lets more machines in.
    let (_, many) = token(&c, json!({"reusable": true, "ttl": "1h"})).await;
    assert_eq!(join(&c, &many, "box-6").await.status, 200);
    assert_eq!(join(&c, &many, "box-7").await.status, 200);
    assert_eq!(nodes(&c).await.len(), 3);
    c.shutdown().await;
}

fn sha256(text: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_need_the_nodes_own_credential_and_silence_is_down() {
    let (c, _) = hub("nodes-beat").await;
    let (_, many) = token(&c, json!({"reusable": true})).await;
    let one = join(&c, &many, "one").await.json();
    let two = join(&c, &many, "two").await.json();
    let beat = |id: &Value, credential: Option<&Value>, body: Value| {
        let client = c.client.clone();
        let path = format!("/v1/nodes/{}/heartbeat", id.as_str().unwrap());
        let auth = credential.map(|k| format!("Bearer {}", k.as_str().unwrap()));
        async move {
            let headers: Vec<(&str, &str)> = auth
                .as_deref()
                .map(|a| vec![("authorization", a)])
                .unwrap_or_default();
            client.post_with(&path, &headers, &body).await
        }
    };
    let ok = json!({"version": "0.2.0", "facts": facts()});
    let r = beat(&one["node_id"], Some(&one["credential"]), ok.clone()).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["state"], "run");
    assert_eq!(beat(&one["node_id"], None, ok.clone()).await.status, 401);
    assert_eq!(
        beat(&one["node_id"], Some(&two["credential"]), ok.clone())
            .await
            .status,
        403,
        "another node's credential"
    );
    assert_eq!(
        beat(&one["node_id"], Some(&json!("drv_n_forged")), ok.clone())
            .await
            .status,
        401
    );
    // Nonsense is refused, naming what is wrong; the node stays as it was.
    let mut nonsense = ok.clone();
    nonsense["facts"]["memory_total_bytes"] = json!(-1);
    assert_eq!(
        beat(&one["node_id"], Some(&one["credential"]), nonsense)
            .await
            .status,
        400
    );
    let mut many_gpus = ok.clone();
    many_gpus["facts"]["gpus"] = json!(vec![json!({"name": "g", "memory_total_bytes": 1}); 10_000]);
    let r = beat(&one["node_id"], Some(&one["credential"]), many_gpus).await;
    assert!(r.status == 400 || r.status == 413, "{}", r.text());
    let mut huge = ok.clone();
    huge["facts"]["hostname"] = json!("x".repeat(2 << 20));
    assert_eq!(
        beat(&one["node_id"], Some(&one["credential"]), huge)
            .await
            .status,
        413
    );
    let mut more_free = ok.clone();
    more_free["facts"]["memory_available_bytes"] = json!(65u64 << 30);
    let r = beat(&one["node_id"], Some(&one["credential"]), more_free).await;
    assert_eq!(r.status, 400);
    assert!(r.text().contains("memory_available_bytes"), "{}", r.text());

    let listed = nodes(&c).await;
    let version =
        |name: &str| listed.iter().find(|n| n["name"] == name).unwrap()["version"].clone();
    assert_eq!(version("one"), "0.2.0");
    assert_eq!(version("two"), "0.1.0");
    // Two keeps heartbeating, one falls silent: down after three missed
    // heartbeats (300 ms here).
    let until = tokio::time::Instant::now() + Duration::from_secs(10);
    let down = loop {
        let r = beat(&two["node_id"], Some(&two["credential"]), ok.clone()).await;
        assert_eq!(r.status, 200);
        let listed = nodes(&c).await;
        let up = |name: &str| listed.iter().find(|n| n["name"] == name).unwrap()["up"].clone();
        if up("one") == false {
            break listed;
        }
        assert!(
            tokio::time::Instant::now() < until,
            "one never went down: {listed:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let up = |name: &str| down.iter().find(|n| n["name"] == name).unwrap()["up"].clone();
    assert_eq!(up("two"), true, "{down:?}");
    c.shutdown().await;
}
