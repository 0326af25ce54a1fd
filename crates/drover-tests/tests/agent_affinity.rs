//! A coding agent resends its whole system prompt and history every turn;
//! the hub sends each later turn back to the server whose KV cache holds
//! that prefix, over the Anthropic Messages and OpenAI Responses paths as
//! over chat. Two simulated servers with per-slot prefix caches count what
//! they found cached and what they had to prefill.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use drover_tests::{ClusterBuilder, lmstudio};
use serde_json::{Value, json};

fn system(session: usize) -> String {
    format!("You are coding agent {session}. ") + &"Follow the house rules. ".repeat(200)
}

async fn run_sessions(
    cluster: &drover_tests::Cluster,
    path: &str,
    turn: impl Fn(usize, &[Value]) -> Value,
) {
    // Three sessions on two servers: an odd count, so that taking turns
    // between the servers would not send a session back by chance.
    let mut histories: Vec<Vec<Value>> = vec![Vec::new(); 3];
    for round in 0..3 {
        for (session, history) in histories.iter_mut().enumerate() {
            history.push(
                json!({"role": "user", "content": format!("step {round} of task {session}")}),
            );
            let r = cluster.client.post(path, &turn(session, history)).await;
            assert_eq!(r.status, 200, "{}", r.text());
            history.push(json!({"role": "assistant", "content": format!("done {round}")}));
        }
    }
}

async fn cached_and_prefilled(cluster: &drover_tests::Cluster) -> (u64, u64) {
    cluster.sims.iter().fold((0, 0), |(c, p), sim| {
        let s = sim.stats();
        (c + s.prompt_tokens_cached, p + s.prompt_tokens_prefilled)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn later_turns_of_agent_sessions_find_their_prefix_cached() {
    for path in ["/v1/messages", "/v1/responses"] {
        let mut config = lmstudio(&["m"], 2, 0);
        config.prefill_tokens_per_sec = 1_000_000.0;
        let cluster = ClusterBuilder::new()
            .sim("a", config.clone())
            .sim("b", config)
            .start()
            .await;
        run_sessions(&cluster, path, |session, history| {
            if path == "/v1/messages" {
                json!({"model": "m", "max_tokens": 4, "system": system(session), "messages": history})
            } else {
                json!({"model": "m", "instructions": system(session), "input": history})
            }
        })
        .await;
        let (cached, prefilled) = cached_and_prefilled(&cluster).await;
        // Each session's first turn is prefilled in full (about 1,200
        // tokens); each of the six later turns finds at least 1,100 of its
        // own cached. One turn sent to the other server would find nothing
        // there, and the total would fall short.
        assert!(
            cached >= 6 * 1_100,
            "{path}: {cached} tokens cached, {prefilled} prefilled"
        );
        cluster.shutdown().await;
    }
}
