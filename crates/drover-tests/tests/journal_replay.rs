//! Every change the hub makes to its scheduler is an event: the journal of
//! a busy hub (requests that wait, fail over, load their model, clients
//! that leave, probes) replayed into a fresh scheduler comes to the very
//! same decisions. A change made behind the event interface, or a decision
//! that depends on anything but the events and their times, breaks it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use drover_scheduler::Scheduler;
use drover_sim::Faults;
use drover_tests::{ClusterBuilder, chat_body, lmstudio, wait_until};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_journal_replayed_comes_to_the_same_decisions() {
    let mut loading = lmstudio(&["a", "b", "c"], 2, 5);
    loading.loaded = vec!["a".into()];
    loading.max_loaded = Some(1);
    loading.load_time = Duration::from_millis(20);
    let mut flaky = lmstudio(&["a"], 2, 5);
    flaky.faults = Faults {
        error_rate: 0.3,
        ..Faults::NONE
    };
    let cluster = ClusterBuilder::new()
        .sim("loading", loading)
        .sim("flaky", flaky)
        .hub(|c| {
            c.journal = true;
            c.health.failure_threshold = 1000;
            c.health.probe_interval = Duration::from_millis(50);
        })
        .start()
        .await;
    let mut tasks = Vec::new();
    for i in 0..30 {
        let client = cluster.client.clone();
        let model = ["a", "b", "c"][i % 3];
        tasks.push(tokio::spawn(async move {
            client
                .post("/v1/chat/completions", &chat_body(model, &format!("q {i}")))
                .await
        }));
    }
    // A client that leaves while it waits.
    let client = cluster.client.clone();
    let leaving = tokio::spawn(async move {
        client
            .post("/v1/chat/completions", &chat_body("c", "gone"))
            .await
    });
    wait_until("requests wait", || cluster.waiting() > 0).await;
    leaving.abort();
    for t in tasks {
        t.await.unwrap();
    }
    wait_until("nothing runs", || {
        cluster.busy("loading") == 0 && cluster.busy("flaky") == 0 && cluster.waiting() == 0
    })
    .await;

    let journal = cluster.hub.journal();
    let config = cluster.hub.scheduler_config();
    cluster.shutdown().await;
    let kinds =
        |f: fn(&drover_scheduler::Event) -> bool| journal.iter().filter(|e| f(&e.event)).count();
    assert!(kinds(|e| matches!(e, drover_scheduler::Event::LoadEnded { .. })) > 0);
    assert!(kinds(|e| matches!(e, drover_scheduler::Event::Finished { .. })) >= 30);
    assert!(kinds(|e| matches!(e, drover_scheduler::Event::Observed { .. })) > 0);

    let mut replay = Scheduler::new(config);
    for (i, entry) in journal.iter().enumerate() {
        let applied = replay.apply(entry.event.clone(), entry.at);
        assert_eq!(
            applied,
            entry.applied,
            "event {i} of {} ({:?}) came to something else",
            journal.len(),
            entry.event
        );
    }
}
