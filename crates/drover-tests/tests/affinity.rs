//! Prefix affinity: a conversation's next turn goes back to the backend that
//! served its earlier turns (its KV cache holds the prefix) while that
//! backend has a free slot, and elsewhere at once when it has none.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use drover_tests::{ClusterBuilder, lmstudio};
use serde_json::json;

fn turn(history: &[(&str, String)]) -> serde_json::Value {
    let messages: Vec<_> = history
        .iter()
        .map(|(role, content)| json!({"role": role, "content": content}))
        .collect();
    json!({"model": "m", "messages": messages})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conversations_return_to_the_backend_that_holds_their_prefix() {
    let cluster = ClusterBuilder::new()
        .sim("left", lmstudio(&["m"], 4, 5))
        .sim("right", lmstudio(&["m"], 4, 5))
        .start()
        .await;
    let system = ("system", "You are terse.".to_string());
    let mut conversations: Vec<Vec<(&str, String)>> = (0..6)
        .map(|c| {
            vec![
                system.clone(),
                ("user", format!("conversation {c}, turn 0")),
            ]
        })
        .collect();
    let mut homes: Vec<String> = Vec::new();
    for history in &mut conversations {
        let r = cluster
            .client
            .post("/v1/chat/completions", &turn(history))
            .await;
        assert_eq!(r.status, 200);
        homes.push(r.backend().to_string());
        let answer = r.json()["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .to_string();
        history.push(("assistant", answer));
    }
    assert!(
        homes.contains(&"left".to_string()) && homes.contains(&"right".to_string()),
        "least-loaded spreads first turns: {homes:?}"
    );
    for t in 1..4 {
        for (c, history) in conversations.iter_mut().enumerate() {
            history.push(("user", format!("conversation {c}, turn {t}")));
            let r = cluster
                .client
                .post("/v1/chat/completions", &turn(history))
                .await;
            assert_eq!(r.status, 200);
            assert_eq!(
                r.backend(),
                homes[c],
                "conversation {c} turn {t} left its backend"
            );
            let answer = r.json()["choices"][0]["message"]["content"]
                .as_str()
                .unwrap()
                .to_string();
            history.push(("assistant", answer));
        }
    }
    let metrics = cluster.client.get("/metrics").await.text();
    assert!(
        metrics.contains("drover_affinity_hits_total 18"),
        "{metrics}"
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_home_does_not_make_the_next_turn_wait() {
    let cluster = ClusterBuilder::new()
        .sim("left", lmstudio(&["m"], 1, 800))
        .sim("right", lmstudio(&["m"], 1, 800))
        .start()
        .await;
    let history = vec![("user", "hello".to_string())];
    let r = cluster
        .client
        .post("/v1/chat/completions", &turn(&history))
        .await;
    let home = r.backend().to_string();
    let mut next = history.clone();
    next.push(("assistant", "hi".into()));
    next.push(("user", "again".into()));
    // Two requests continuing the conversation at once: one goes home, the
    // other finds home's only slot busy and goes to the other backend
    // instead of waiting behind it.
    let c1 = cluster.client.clone();
    let c2 = cluster.client.clone();
    let (b1, b2) = (turn(&next), turn(&next));
    let (r1, r2) = tokio::join!(
        async move { c1.post("/v1/chat/completions", &b1).await },
        async move { c2.post("/v1/chat/completions", &b2).await }
    );
    let backends = [r1.backend().to_string(), r2.backend().to_string()];
    assert!(backends.contains(&home), "{backends:?}");
    assert_ne!(backends[0], backends[1], "{backends:?}");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_system_prompt_does_not_pull_everything_to_one_backend() {
    let cluster = ClusterBuilder::new()
        .sim("left", lmstudio(&["m"], 4, 5))
        .sim("right", lmstudio(&["m"], 4, 5))
        .start()
        .await;
    let mut seen = std::collections::HashSet::new();
    for i in 0..10 {
        let body = json!({"model": "m", "messages": [
            {"role": "system", "content": "The same long system prompt for everyone."},
            {"role": "user", "content": format!("independent question {i}")}
        ]});
        let r = cluster.client.post("/v1/chat/completions", &body).await;
        seen.insert(r.backend().to_string());
    }
    assert_eq!(seen.len(), 2, "{seen:?}");
    cluster.shutdown().await;
}
