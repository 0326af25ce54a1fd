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

/// The next turn of a long conversation waits for the busy server holding
/// its prefix when a slot there should free sooner than the other server,
/// free now, would take to prefill the whole prompt: the hub weighs the two
/// in seconds, from service times and prefill rates it measured.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_turn_waits_briefly_for_the_server_holding_its_prefix() {
    let mut config = lmstudio(&["m"], 1, 0);
    // 2,000 tokens a second: a 2,000-token prompt takes a second uncached.
    config.prefill_tokens_per_sec = 2_000.0;
    config.output_tokens = 40;
    config.tokens_per_sec = 100.0;
    let cluster = ClusterBuilder::new()
        .sim("a", config.clone())
        .sim("b", config)
        .start()
        .await;
    let turn = |session: usize, history: &[Value], max_tokens: u32| {
        json!({"model": "m", "max_tokens": max_tokens, "stream": true,
               "system": format!("Agent {session}. ") + &"Keep to the plan. ".repeat(450),
               "messages": history})
    };
    let x1 = vec![json!({"role": "user", "content": "start x"})];
    // X's first turn, uncached (a second of prefill), and meanwhile Y's on
    // the other server: the hub learns both servers' prefill rates.
    let send = |body: Value| {
        let client = cluster.client.clone();
        tokio::spawn(async move {
            let r = client.post("/v1/messages", &body).await;
            assert_eq!(r.status, 200, "{}", r.text());
            r.backend().to_string()
        })
    };
    let x_first = send(turn(0, &x1, 1));
    drover_tests::wait_until("x's first turn runs", || {
        cluster.busy("a") + cluster.busy("b") == 1
    })
    .await;
    let y_first = send(turn(1, &[json!({"role": "user", "content": "start y"})], 1));
    let home = x_first.await.unwrap();
    let other = y_first.await.unwrap();
    assert_ne!(home, other);
    // Quick cached turns of X teach its server a short service time.
    for i in 0..8 {
        let mut h = x1.clone();
        h.push(json!({"role": "assistant", "content": "ok"}));
        h.push(json!({"role": "user", "content": format!("check {i}")}));
        assert_eq!(send(turn(0, &h, 1)).await.unwrap(), home);
    }
    // A longer X request occupies X's server (40 tokens: 0.4 s)...
    let mut busy = x1.clone();
    busy.push(json!({"role": "assistant", "content": "ok"}));
    busy.push(json!({"role": "user", "content": "write it all"}));
    let blocker = send(turn(0, &busy, 40));
    drover_tests::wait_until("x's server is busy", || cluster.busy(&home) == 1).await;
    let prefilled_elsewhere = cluster.sim(&other).stats().prompt_tokens_prefilled;
    // ...when X's next turn arrives: it waits for its own server rather
    // than pay a second of prefill on the free one.
    let mut next = x1.clone();
    next.push(json!({"role": "assistant", "content": "ok"}));
    next.push(json!({"role": "user", "content": "next step"}));
    assert_eq!(send(turn(0, &next, 1)).await.unwrap(), home);
    assert_eq!(blocker.await.unwrap(), home);
    assert_eq!(
        cluster.sim(&other).stats().prompt_tokens_prefilled,
        prefilled_elsewhere,
        "nothing of X was prefilled on the other server"
    );
    cluster.shutdown().await;
}
