//! Capability workers over their protocol, through a real hub on loopback:
//! a worker registers, polls, heartbeats and answers tasks under lease
//! tokens; a late answer with a lapsed token changes nothing; a task whose
//! worker leaves runs on another; a capability nobody offers yet waits;
//! a worker key can do nothing else, and no other key can act as a worker.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use drover_tests::jobs::{fresh_dir, quick, until_state};
use drover_tests::{Cluster, ClusterBuilder, chat_body, openai};
use serde_json::{Value, json};

async fn hub(name: &str) -> Cluster {
    let dir = fresh_dir(name);
    ClusterBuilder::new()
        .sim("s", openai(&["m"], 1, 0))
        .hub(move |c| quick(c, &dir))
        .start()
        .await
}

/// A hub that gives up on a silent worker after 3 x 100 ms, and on a task
/// not heartbeaten for a second.
async fn impatient_hub(name: &str) -> Cluster {
    let dir = fresh_dir(name);
    ClusterBuilder::new()
        .sim("s", openai(&["m"], 1, 0))
        .hub(move |c| {
            quick(c, &dir);
            c.workers.heartbeat = Duration::from_millis(100);
            c.workers.lease = Duration::from_secs(1);
        })
        .start()
        .await
}

/// Registers a worker offering `capability`; its id.
async fn register(c: &Cluster, name: &str, capability: &str, auth: &[(&str, &str)]) -> String {
    let r = c
        .client
        .post_with(
            "/v1/workers",
            auth,
            &json!({"name": name, "capabilities": [{"name": capability, "max_concurrency": 1}]}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let answer = r.json();
    assert!(answer["lease_s"].as_u64().unwrap() >= 1, "{answer}");
    answer["worker_id"].as_str().unwrap().to_string()
}

/// Polls as worker `id` for up to `wait_s`; the tasks given.
async fn poll(c: &Cluster, id: &str, wait_s: u64) -> Vec<Value> {
    let r = c
        .client
        .post(
            &format!("/v1/workers/{id}/poll"),
            &json!({"wait_s": wait_s, "max_tasks": 4}),
        )
        .await;
    match r.status.as_u16() {
        204 => Vec::new(),
        200 => r.json()["tasks"].as_array().unwrap().clone(),
        other => panic!("poll answered {other}: {}", r.text()),
    }
}

async fn submit(c: &Cluster, capability: &str, input: Value) -> String {
    let r = c
        .client
        .post(
            "/v1/tasks",
            &json!({"capability": capability, "input": input}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["model"], capability);
    r.json()["id"].as_str().unwrap().to_string()
}

async fn answer(c: &Cluster, task: &str, verb: &str, body: Value) -> u16 {
    c.client
        .post(&format!("/v1/tasks/{task}/{verb}"), &body)
        .await
        .status
        .as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_runs_on_a_worker_under_its_lease_and_its_output_is_kept() {
    let c = hub("task-runs").await;
    let worker = register(&c, "w1", "echo", &[]).await;
    let task = submit(&c, "echo", json!({"say": "hi"})).await;
    let given = poll(&c, &worker, 10).await;
    assert_eq!(given.len(), 1, "{given:?}");
    assert_eq!(given[0]["id"], task.as_str());
    assert_eq!(given[0]["input"], json!({"say": "hi"}));
    assert_eq!(given[0]["attempt"], 1);
    let token = given[0]["lease_token"].as_str().unwrap().to_string();

    let beat = c
        .client
        .post(
            &format!("/v1/tasks/{task}/heartbeat"),
            &json!({"lease_token": token, "progress": {"done": 0.5}}),
        )
        .await;
    assert_eq!(beat.status, 200, "{}", beat.text());
    assert_eq!(beat.json()["cancel_requested"], false);
    // Another token changes nothing.
    assert_eq!(
        answer(
            &c,
            &task,
            "complete",
            json!({"lease_token": "lt_forged", "output": 1})
        )
        .await,
        409
    );
    assert_eq!(
        answer(
            &c,
            &task,
            "complete",
            json!({"lease_token": token, "output": {"said": "hi"}})
        )
        .await,
        204
    );
    let done = until_state(&c, &task, "completed").await;
    assert_eq!(done["response"]["status_code"], 200, "{done}");
    assert_eq!(done["response"]["body"], json!({"said": "hi"}), "{done}");
    // Answered once: the same token again is refused.
    assert_eq!(
        answer(
            &c,
            &task,
            "complete",
            json!({"lease_token": token, "output": 2})
        )
        .await,
        409
    );
    let listed = c.client.get("/v1/jobs?kind=task").await.json();
    assert_eq!(listed["data"][0]["id"], task.as_str(), "{listed}");
    assert!(poll(&c, &worker, 1).await.is_empty());
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_whose_worker_leaves_runs_on_another_and_the_late_answer_is_refused() {
    let c = hub("worker-leaves").await;
    let first = register(&c, "w1", "shell", &[]).await;
    let task = submit(&c, "shell", json!("echo hi")).await;
    let given = poll(&c, &first, 10).await;
    assert_eq!(given.len(), 1, "{given:?}");
    let stale = given[0]["lease_token"].as_str().unwrap().to_string();
    let second = register(&c, "w2", "shell", &[]).await;
    let gone = c.client.delete(&format!("/v1/workers/{first}")).await;
    assert_eq!(gone.status, 204, "{}", gone.text());
    // Tried again, on the other worker.
    let given = poll(&c, &second, 10).await;
    assert_eq!(given.len(), 1, "{given:?}");
    assert_eq!(given[0]["id"], task.as_str());
    assert_eq!(given[0]["attempt"], 2);
    assert_eq!(
        answer(
            &c,
            &task,
            "complete",
            json!({"lease_token": stale, "output": "late"})
        )
        .await,
        409,
        "the first worker's late answer changes nothing"
    );
    let token = given[0]["lease_token"].as_str().unwrap();
    assert_eq!(
        answer(
            &c,
            &task,
            "complete",
            json!({"lease_token": token, "output": "hi"})
        )
        .await,
        204
    );
    let done = until_state(&c, &task, "completed").await;
    let attempts = done["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2, "{done}");
    assert_eq!(attempts[0]["backends"], json!([first]), "{done}");
    assert!(
        attempts[0]["error"].as_str().unwrap().contains("left"),
        "{done}"
    );
    assert_eq!(done["response"]["body"], "hi");
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_the_worker_calls_final_fails_the_task_and_a_retryable_one_goes_elsewhere() {
    let c = hub("task-fails").await;
    let worker = register(&c, "w1", "flaky", &[]).await;
    let task = submit(&c, "flaky", json!(1)).await;
    let token = poll(&c, &worker, 10).await[0]["lease_token"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        answer(
            &c,
            &task,
            "fail",
            json!({"lease_token": token, "error": "try later", "retryable": true})
        )
        .await,
        204
    );
    // The only worker offering it takes it again.
    let again = poll(&c, &worker, 10).await;
    assert_eq!(again[0]["attempt"], 2, "{again:?}");
    let token = again[0]["lease_token"].as_str().unwrap();
    assert_eq!(
        answer(
            &c,
            &task,
            "fail",
            json!({"lease_token": token, "error": "bad input"})
        )
        .await,
        204
    );
    let failed = until_state(&c, &task, "failed").await;
    assert_eq!(failed["response"]["status_code"], 422, "{failed}");
    assert!(
        failed["attempts"][1]["error"]
            .as_str()
            .unwrap()
            .contains("bad input")
    );
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_capability_nobody_offers_yet_waits_for_a_worker() {
    let c = hub("nobody-yet").await;
    let r = c
        .client
        .post(
            "/v1/tasks",
            &json!({"capability": "browser", "input": {"url": "http://127.0.0.1/"}}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        r.json()["note"]
            .as_str()
            .unwrap()
            .contains("no worker offers \"browser\" yet"),
        "{}",
        r.text()
    );
    let task = r.json()["id"].as_str().unwrap().to_string();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let waiting = c.client.get(&format!("/v1/tasks/{task}")).await.json();
    assert_eq!(waiting["state"], "queued", "{waiting}");
    assert_eq!(
        waiting["attempts"],
        json!([]),
        "waiting is not failing: {waiting}"
    );
    let worker = register(&c, "w1", "browser", &[]).await;
    let given = poll(&c, &worker, 15).await;
    assert_eq!(given.len(), 1, "{given:?}");
    assert_eq!(given[0]["id"], task.as_str());
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_key_acts_as_a_worker_only_and_no_other_key_does() {
    let c = hub("worker-keys").await;
    let make = |name: &'static str, kind: &'static str| {
        let c = &c;
        async move {
            let r = c
                .client
                .post("/admin/keys", &json!({"name": name, "kind": kind}))
                .await;
            assert_eq!(r.status, 201, "{}", r.text());
            format!("Bearer {}", r.json()["key"].as_str().unwrap())
        }
    };
    let worker = make("w1", "worker").await;
    let client = make("app", "client").await;
    let as_worker = [("authorization", worker.as_str())];
    let as_client = [("authorization", client.as_str())];
    let inference = c
        .client
        .post_with("/v1/chat/completions", &as_worker, &chat_body("m", "hi"))
        .await;
    assert_eq!(inference.status, 403, "{}", inference.text());
    let admin = c
        .client
        .call(
            http::Method::GET,
            "/admin/keys",
            &as_worker,
            bytes::Bytes::new(),
        )
        .await;
    assert_eq!(admin.status, 403, "{}", admin.text());
    let body = json!({"name": "w", "capabilities": [{"name": "echo"}]});
    let by_client = c.client.post_with("/v1/workers", &as_client, &body).await;
    assert_eq!(by_client.status, 403, "{}", by_client.text());
    let by_nobody = c.client.post("/v1/workers", &body).await;
    assert_eq!(by_nobody.status, 401, "{}", by_nobody.text());
    let id = register(&c, "w", "echo", &as_worker).await;
    // Another worker key may not act for it.
    let other = make("w2", "worker").await;
    let r = c
        .client
        .post_with(
            &format!("/v1/workers/{id}/heartbeat"),
            &[("authorization", other.as_str())],
            &json!({}),
        )
        .await;
    assert_eq!(r.status, 403, "{}", r.text());
    let r = c
        .client
        .post_with(
            &format!("/v1/workers/{id}/heartbeat"),
            &as_worker,
            &json!({"in_flight": 0}),
        )
        .await;
    assert_eq!(r.json()["state"], "run", "{}", r.text());
    // Capabilities are no models: inference for one is refused.
    let r = c
        .client
        .post_with("/v1/chat/completions", &as_client, &chat_body("echo", "hi"))
        .await;
    assert_ne!(r.status, 200, "{}", r.text());
    let models = c
        .client
        .call(
            http::Method::GET,
            "/v1/models",
            &as_client,
            bytes::Bytes::new(),
        )
        .await
        .text();
    assert!(!models.contains("echo"), "{models}");
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_falls_silent_is_gone_and_its_task_runs_on_another_once() {
    let c = impatient_hub("silent").await;
    let first = register(&c, "w1", "shell", &[]).await;
    let task = submit(&c, "shell", json!("sleep 1000")).await;
    let given = poll(&c, &first, 10).await;
    assert_eq!(given.len(), 1, "{given:?}");
    let stale = given[0]["lease_token"].as_str().unwrap().to_string();
    // The first worker is killed: no heartbeat, no poll, nothing. The
    // second one waits in a long poll, which keeps it alive.
    let second = register(&c, "w2", "shell", &[]).await;
    let given = poll(&c, &second, 20).await;
    assert_eq!(given.len(), 1, "{given:?}");
    assert_eq!(given[0]["id"], task.as_str());
    let listed = c.client.get("/admin/workers").await.json();
    let ids: Vec<&str> = listed["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [second.as_str()], "the silent one is gone: {listed}");
    let token = given[0]["lease_token"].as_str().unwrap();
    assert_eq!(
        answer(
            &c,
            &task,
            "complete",
            json!({"lease_token": stale, "output": 1})
        )
        .await,
        409
    );
    assert_eq!(
        answer(
            &c,
            &task,
            "complete",
            json!({"lease_token": token, "output": 2})
        )
        .await,
        204
    );
    let done = until_state(&c, &task, "completed").await;
    assert_eq!(done["response"]["body"], 2, "{done}");
    assert_eq!(done["attempts"].as_array().unwrap().len(), 2, "{done}");
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_not_heartbeaten_within_its_lease_runs_again() {
    let c = impatient_hub("lapsed").await;
    let worker = register(&c, "w1", "shell", &[]).await;
    let task = submit(&c, "shell", json!("x")).await;
    let first = poll(&c, &worker, 10).await;
    assert_eq!(first[0]["attempt"], 1);
    // The worker polls on (it is alive) but never heartbeats the task: the
    // lease lapses and the task is given again, as a new attempt.
    let again = poll(&c, &worker, 20).await;
    assert_eq!(again[0]["id"], task.as_str(), "{again:?}");
    assert_eq!(again[0]["attempt"], 2, "{again:?}");
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drained_worker_takes_no_new_task_and_hears_drain() {
    let c = hub("drain").await;
    let first = register(&c, "w1", "echo", &[]).await;
    let second = register(&c, "w2", "echo", &[]).await;
    let r = c
        .client
        .post(&format!("/admin/workers/{first}/drain"), &json!({}))
        .await;
    assert_eq!(r.status, 204, "{}", r.text());
    let beat = c
        .client
        .post(
            &format!("/v1/workers/{first}/heartbeat"),
            &json!({"in_flight": 0}),
        )
        .await;
    assert_eq!(beat.json()["state"], "drain");
    for i in 0..4 {
        let task = submit(&c, "echo", json!(i)).await;
        let given = poll(&c, &second, 10).await;
        assert_eq!(given[0]["id"], task.as_str());
        let token = given[0]["lease_token"].as_str().unwrap();
        answer(
            &c,
            &task,
            "complete",
            json!({"lease_token": token, "output": i}),
        )
        .await;
    }
    assert!(
        poll(&c, &first, 1).await.is_empty(),
        "nothing for the drained one"
    );
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_reaches_the_worker_running_the_task() {
    let c = hub("cancel").await;
    let worker = register(&c, "w1", "shell", &[]).await;
    let task = submit(&c, "shell", json!("sleep 60")).await;
    let given = poll(&c, &worker, 10).await;
    let token = given[0]["lease_token"].as_str().unwrap().to_string();
    let r = c
        .client
        .post(&format!("/v1/tasks/{task}/cancel"), &json!({}))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    until_state(&c, &task, "cancelled").await;
    let beat = c
        .client
        .post(
            &format!("/v1/tasks/{task}/heartbeat"),
            &json!({"lease_token": token}),
        )
        .await;
    assert_eq!(beat.json()["cancel_requested"], true, "{}", beat.text());
    // The worker stops it and says so; the task stays cancelled.
    assert_eq!(
        answer(
            &c,
            &task,
            "fail",
            json!({"lease_token": token, "error": "killed"})
        )
        .await,
        204
    );
    let after = c.client.get(&format!("/v1/tasks/{task}")).await.json();
    assert_eq!(after["state"], "cancelled", "{after}");
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_capabilitys_description_is_bounded_for_the_planners_prompt() {
    let c = hub("long-description").await;
    let r = c
        .client
        .post(
            "/v1/workers",
            &json!({"name": "w", "capabilities": [{"name": "a", "description": "x".repeat(1001)}]}),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.json()["error"]["param"], "capabilities.description");
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tasks_input_is_checked_against_its_capabilitys_schema() {
    let c = hub("schema").await;
    let bad_schema = c
        .client
        .post(
            "/v1/workers",
            &json!({"name": "w0", "capabilities": [{"name": "open", "input_schema": {"type": 12}}]}),
        )
        .await;
    assert_eq!(bad_schema.status, 400, "{}", bad_schema.text());
    assert!(
        bad_schema.text().contains("input_schema"),
        "{}",
        bad_schema.text()
    );
    let r = c
        .client
        .post(
            "/v1/workers",
            &json!({"name": "w1", "capabilities": [{"name": "open", "input_schema": {
                "type": "object", "required": ["url"],
                "properties": {"url": {"type": "string"}}
            }}]}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let refused = c
        .client
        .post(
            "/v1/tasks",
            &json!({"capability": "open", "input": {"url": 5}}),
        )
        .await;
    assert_eq!(refused.status, 400, "{}", refused.text());
    assert_eq!(
        refused.json()["error"]["param"],
        "input",
        "{}",
        refused.text()
    );
    assert!(refused.text().contains("input/url"), "{}", refused.text());
    let missing = c
        .client
        .post("/v1/tasks", &json!({"capability": "open", "input": {}}))
        .await;
    assert_eq!(missing.status, 400, "{}", missing.text());
    assert!(missing.text().contains("url"), "{}", missing.text());
    let ok = c
        .client
        .post(
            "/v1/tasks",
            &json!({"capability": "open", "input": {"url": "http://127.0.0.1/"}}),
        )
        .await;
    assert_eq!(ok.status, 200, "{}", ok.text());
    assert!(ok.json().get("note").is_none(), "{}", ok.text());
    // Nothing refused was stored.
    let listed = c.client.get("/v1/tasks").await.json();
    assert_eq!(listed["data"].as_array().unwrap().len(), 1, "{listed}");
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poll_for_some_capabilities_leaves_the_others_for_a_poll_that_asks() {
    let c = hub("poll-some").await;
    let r = c
        .client
        .post(
            "/v1/workers",
            &json!({"name": "two", "capabilities": [{"name": "a"}, {"name": "b"}]}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let worker = r.json()["worker_id"].as_str().unwrap().to_string();
    let a = submit(&c, "a", json!(1)).await;
    let b = submit(&c, "b", json!(2)).await;
    let poll_for = |names: Value| {
        let c = &c;
        let url = format!("/v1/workers/{worker}/poll");
        async move {
            c.client
                .post(
                    &url,
                    &json!({"wait_s": 5, "max_tasks": 4, "capabilities": names}),
                )
                .await
        }
    };
    // Both reach the worker's mailbox; a poll for b takes b alone.
    drover_tests::wait_until_within(
        "both tasks are given to the worker",
        Duration::from_secs(10),
        || {
            let client = c.client.clone();
            async move {
                client.get("/v1/tasks?state=running").await.json()["data"]
                    .as_array()
                    .is_some_and(|d| d.len() == 2)
            }
        },
    )
    .await;
    let r = poll_for(json!(["b"])).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let given: Vec<Value> = r.json()["tasks"].as_array().unwrap().clone();
    assert_eq!(given.len(), 1, "{given:?}");
    assert_eq!(given[0]["id"], b.as_str());
    let r = poll_for(json!(["a", "b"])).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["tasks"][0]["id"], a.as_str());
    // A capability the worker does not offer is a mistake, named; so is
    // asking for none.
    let r = poll_for(json!([])).await;
    assert_eq!(r.status, 400, "{}", r.text());
    let r = poll_for(json!(["c"])).await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(
        r.text().contains("does not offer \\\"c\\\""),
        "{}",
        r.text()
    );
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_that_came_while_its_only_worker_drained_runs_on_the_next_one() {
    let c = hub("drain-then-next").await;
    let first = register(&c, "w1", "echo", &[]).await;
    // The worker says it drains (SIGTERM): nothing new goes its way.
    let beat = c
        .client
        .post(
            &format!("/v1/workers/{first}/heartbeat"),
            &json!({"in_flight": 0, "draining": true}),
        )
        .await;
    assert_eq!(beat.json()["state"], "drain");
    let task = submit(&c, "echo", json!("late")).await;
    assert!(
        poll(&c, &first, 1).await.is_empty(),
        "nothing for the drained one"
    );
    let r = c.client.delete(&format!("/v1/workers/{first}")).await;
    assert_eq!(r.status, 204, "{}", r.text());
    let second = register(&c, "w2", "echo", &[]).await;
    let given = poll(&c, &second, 10).await;
    assert_eq!(
        given.len(),
        1,
        "the task waits for the next worker: {}",
        c.client.get(&format!("/v1/tasks/{task}")).await.text()
    );
    assert_eq!(given[0]["id"], task.as_str());
    assert_eq!(given[0]["attempt"], 1, "waiting is not failing");
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_task_goes_to_the_least_loaded_worker() {
    let c = hub("least-loaded").await;
    let register4 = |name: &'static str| {
        let c = &c;
        async move {
            let r = c
                .client
                .post(
                    "/v1/workers",
                    &json!({"name": name, "capabilities": [{"name": "job", "max_concurrency": 4}]}),
                )
                .await;
            assert_eq!(r.status, 200, "{}", r.text());
            r.json()["worker_id"].as_str().unwrap().to_string()
        }
    };
    let busy = register4("busy").await;
    for i in 0..3 {
        submit(&c, "job", json!(i)).await;
    }
    let mut held = Vec::new();
    while held.len() < 3 {
        held.extend(poll(&c, &busy, 5).await);
    }
    let idle = register4("idle").await;
    let first = submit(&c, "job", json!("a")).await;
    let second = submit(&c, "job", json!("b")).await;
    let mut given = Vec::new();
    while given.len() < 2 {
        given.extend(poll(&c, &idle, 5).await);
    }
    let ids: Vec<&str> = given.iter().map(|t| t["id"].as_str().unwrap()).collect();
    assert_eq!(ids, [first.as_str(), second.as_str()]);
    assert!(
        poll(&c, &busy, 1).await.is_empty(),
        "3 busy of 4 is more loaded than 1 of 4"
    );
    c.shutdown().await;
}

/// The state of task `id`, and its attempts so far.
async fn task_state(c: &Cluster, id: &str) -> (String, usize) {
    let task = c.client.get(&format!("/v1/tasks/{id}")).await.json();
    (
        task["state"].as_str().unwrap().to_string(),
        task["attempts"].as_array().map_or(0, Vec::len),
    )
}

async fn until_given(c: &Cluster, id: &str) {
    drover_tests::wait_until_within(
        "the task is given to a worker",
        Duration::from_secs(10),
        || {
            let c = &c;
            async move { task_state(c, id).await.0 == "running" }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_hands_the_tasks_its_worker_has_not_polled_to_another_uncounted() {
    let c = hub("drain-mailbox").await;
    let first = register(&c, "w1", "echo", &[]).await;
    let task = submit(&c, "echo", json!("x")).await;
    // Given to w1 (the only worker), waiting in its mailbox.
    until_given(&c, &task).await;
    let second = register(&c, "w2", "echo", &[]).await;
    let beat = c
        .client
        .post(
            &format!("/v1/workers/{first}/heartbeat"),
            &json!({"in_flight": 0, "draining": true}),
        )
        .await;
    assert_eq!(beat.json()["state"], "drain");
    let given = poll(&c, &second, 10).await;
    assert_eq!(given.len(), 1, "{given:?}");
    assert_eq!(given[0]["id"], task.as_str());
    assert_eq!(
        given[0]["attempt"], 1,
        "a task never polled was never tried"
    );
    assert!(poll(&c, &first, 1).await.is_empty());
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_not_polled_within_its_lease_goes_back_uncounted_and_is_given_once() {
    let c = impatient_hub("unpolled").await;
    let worker = register(&c, "w1", "echo", &[]).await;
    let task = submit(&c, "echo", json!("x")).await;
    until_given(&c, &task).await;
    // Alive (heartbeating) but not polling for longer than the 1 s lease.
    let until = tokio::time::Instant::now() + Duration::from_millis(1800);
    while tokio::time::Instant::now() < until {
        let beat = c
            .client
            .post(
                &format!("/v1/workers/{worker}/heartbeat"),
                &json!({"in_flight": 0}),
            )
            .await;
        assert_eq!(beat.status, 200);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let given = poll(&c, &worker, 5).await;
    assert_eq!(
        given.len(),
        1,
        "once, not once per lease it waited: {given:?}"
    );
    assert_eq!(
        given[0]["attempt"], 1,
        "waiting in a mailbox is not failing"
    );
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_cancelled_before_its_worker_polled_it_never_reaches_the_worker() {
    let c = hub("cancel-unpolled").await;
    let worker = register(&c, "w1", "echo", &[]).await;
    let task = submit(&c, "echo", json!("x")).await;
    until_given(&c, &task).await;
    let r = c
        .client
        .post(&format!("/v1/tasks/{task}/cancel"), &json!({}))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    drover_tests::wait_until_within("the task is cancelled", Duration::from_secs(10), || {
        let c = &c;
        let task = &task;
        async move { task_state(c, task).await.0 == "cancelled" }
    })
    .await;
    assert!(
        poll(&c, &worker, 1).await.is_empty(),
        "the worker never gets it"
    );
    c.shutdown().await;
}
