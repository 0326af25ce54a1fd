//! A slot freed because its client left is not handed on before the server
//! can have let go of it: the hub drops the upstream connection at once,
//! but a server notices only at its next write, and until then it is still
//! working on the abandoned request.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use drover_tests::{ClusterBuilder, chat_body, lmstudio};
use http_body_util::BodyExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_hanging_up_after_the_first_chunk_never_overload_a_server() {
    let mut sim = lmstudio(&["m"], 1, 5);
    // It notices a closed connection at its next token: within 20 ms.
    sim.tokens_per_sec = 50.0;
    sim.output_tokens = 200;
    let cluster = ClusterBuilder::new()
        .sim("studio", sim)
        .hub(|c| c.upstream.cancel_grace = Duration::from_millis(200))
        .start()
        .await;
    let mut clients = Vec::new();
    for i in 0..10 {
        let client = cluster.client.clone();
        clients.push(tokio::spawn(async move {
            let mut body = chat_body("m", &format!("hang up {i}"));
            body["stream"] = serde_json::json!(true);
            let resp = client.open("/v1/chat/completions", &body).await;
            assert_eq!(resp.status(), 200);
            let mut stream = resp.into_body();
            stream.frame().await.unwrap().unwrap();
            // Hangs up right after the first chunk.
        }));
    }
    for c in clients {
        c.await.unwrap();
    }
    let sim = cluster.sim("studio");
    tokio::time::timeout(
        Duration::from_secs(20),
        sim.wait_for(|s| s.model("m").cancelled == 10),
    )
    .await
    .expect("the server sees every request abandoned");
    let stats = sim.stats().model("m");
    assert_eq!(stats.max_in_flight, 1, "{stats:?}");
    cluster.shutdown().await;
}
