//! Priorities order the queue (header or the API key's default), clients
//! share capacity fairly, oldest first within a class.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};

use drover_tests::{Cluster, ClusterBuilder, chat_body, lmstudio, wait_until};

/// Sends a request in the background; its label is recorded when it ends.
fn send(
    cluster: &Cluster,
    order: &Arc<Mutex<Vec<String>>>,
    label: &str,
    headers: Vec<(String, String)>,
) -> tokio::task::JoinHandle<()> {
    let client = cluster.client.clone();
    let order = order.clone();
    let label = label.to_string();
    tokio::spawn(async move {
        let h: Vec<(&str, &str)> = headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let r = client
            .post_with("/v1/chat/completions", &h, &chat_body("m", &label))
            .await;
        assert_eq!(r.status, 200, "{}", r.text());
        order.lock().unwrap().push(label);
    })
}

fn hdr(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn higher_priority_runs_first_and_clients_take_turns() {
    let cluster = ClusterBuilder::new()
        .sim("studio", lmstudio(&["m"], 1, 150))
        .hub(|c| {
            c.clients.push(drover_hub::ClientConfig {
                name: "batch".into(),
                key: "sk-batch".into(),
                priority: Some(10),
            });
            c.clients.push(drover_hub::ClientConfig {
                name: "pager".into(),
                key: "sk-pager".into(),
                priority: Some(95),
            });
        })
        .start()
        .await;
    let order = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = vec![send(&cluster, &order, "first", vec![])];
    wait_until("the slot is taken", || cluster.busy("studio") == 1).await;
    let mut expect_waiting = 0;
    // A batch client floods at its key's default priority (10)...
    for i in 0..3 {
        tasks.push(send(
            &cluster,
            &order,
            &format!("batch-{i}"),
            hdr(&[("authorization", "Bearer sk-batch")]),
        ));
        expect_waiting += 1;
        wait_until("it queues", || cluster.waiting() == expect_waiting).await;
    }
    // ...two interactive users at the default 50 (keys the hub does not
    // know: one anonymous client, two users in it)...
    for (who, i) in [("alice", 0), ("alice", 1), ("bob", 0)] {
        tasks.push(send(
            &cluster,
            &order,
            &format!("{who}-{i}"),
            hdr(&[("authorization", &format!("Bearer sk-{who}"))]),
        ));
        expect_waiting += 1;
        wait_until("it queues", || cluster.waiting() == expect_waiting).await;
    }
    // ...one request that only claims urgency (no key: capped at 50)...
    tasks.push(send(
        &cluster,
        &order,
        "claims-urgent",
        hdr(&[("x-drover-priority", "95")]),
    ));
    expect_waiting += 1;
    wait_until("it queues", || cluster.waiting() == expect_waiting).await;
    // ...and one urgent request by header, from a key allowed 95.
    tasks.push(send(
        &cluster,
        &order,
        "urgent",
        hdr(&[
            ("x-drover-priority", "95"),
            ("authorization", "Bearer sk-pager"),
        ]),
    ));
    for t in tasks {
        t.await.unwrap();
    }
    let order = order.lock().unwrap().clone();
    assert_eq!(
        order,
        [
            "first",
            "urgent",
            "alice-0",
            "bob-0",
            "claims-urgent",
            "alice-1",
            "batch-0",
            "batch-1",
            "batch-2"
        ],
        "priority first (a header only up to its key's ceiling), then clients in turn, \
         then users within a client, oldest first"
    );
    cluster.shutdown().await;
}
