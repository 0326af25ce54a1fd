//! The planner (`POST /v1/tasks/plan`): a request in plain language turned
//! into tasks by a model in the fleet, its answer constrained to the
//! registered capabilities' schemas, then run by workers. Against the real
//! llama.cpp `llama-server` (a tiny model with random weights: the JSON
//! schema's grammar alone makes its answer a valid plan) end to end, and
//! against a simulated server that ignores `response_format`, whose answer
//! is refused (422) with the answer attached and kept.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use drover_hub::BackendSpec;
use drover_tests::jobs::{fresh_dir, quick};
use drover_tests::{Cluster, ClusterBuilder, LlamaServer, openai};
use serde_json::{Value, json};

/// A capability whose input the grammar bounds: an artist and an action
/// from short lists.
fn music() -> Value {
    json!({
        "name": "music",
        "description": "Plays or pauses music by an artist on the speakers.",
        "max_concurrency": 2,
        "input_schema": {
            "type": "object",
            "properties": {
                "action": {"enum": ["play", "pause"]},
                "artist": {"enum": ["weezer", "queen", "abba"]},
            },
            "required": ["action", "artist"],
            "additionalProperties": false,
        },
    })
}

async fn register(c: &Cluster, capabilities: Value) -> String {
    let r = c
        .client
        .post(
            "/v1/workers",
            &json!({"name": "speaker", "capabilities": capabilities}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["worker_id"].as_str().unwrap().to_string()
}

/// Runs as the worker `id` until `n` tasks are done, each answered with
/// what it was asked to play; the outputs by task id. Fails after 30 s.
async fn serve(c: &Cluster, id: &str, n: usize) -> Vec<(String, Value)> {
    let mut done = Vec::new();
    let give_up = tokio::time::Instant::now() + Duration::from_secs(30);
    while done.len() < n {
        assert!(
            tokio::time::Instant::now() < give_up,
            "{} of {n} tasks reached the worker",
            done.len()
        );
        let r = c
            .client
            .post(
                &format!("/v1/workers/{id}/poll"),
                &json!({"wait_s": 10, "max_tasks": 8, "capabilities": ["music"]}),
            )
            .await;
        assert!(r.status == 200 || r.status == 204, "{}", r.text());
        if r.status == 204 {
            continue;
        }
        for task in r.json()["tasks"].as_array().unwrap() {
            let output = json!({"did": task["input"]["action"], "by": task["input"]["artist"]});
            let answered = c
                .client
                .post(
                    &format!("/v1/tasks/{}/complete", task["id"].as_str().unwrap()),
                    &json!({"lease_token": task["lease_token"], "output": output}),
                )
                .await;
            assert_eq!(answered.status, 204, "{}", answered.text());
            done.push((task["id"].as_str().unwrap().to_string(), output));
        }
    }
    done
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_language_becomes_tasks_a_worker_runs_with_the_real_llama_server() {
    // The planner's instructions and schema are some 700 tokens: the
    // model with the long context.
    let model = LlamaServer::model("tiny-64k");
    let server = LlamaServer::start(
        &["-m", model.to_str().unwrap(), "-np", "2", "-c", "16384"],
        "/health",
    )
    .await;
    let dir = fresh_dir("planner-llama");
    let c = ClusterBuilder::new()
        .external(BackendSpec {
            name: Some("llama".into()),
            url: server.url.clone(),
            ..BackendSpec::default()
        })
        .hub(move |h| {
            quick(h, &dir);
            h.workers.planner_max_tasks = 2;
        })
        .start()
        .await;
    let model = c.client.get("/v1/models").await.json()["data"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let worker = register(&c, json!([music()])).await;

    let r = c
        .client
        .post(
            "/v1/tasks/plan",
            &json!({"request": "open youtube music and play weezer", "model": model}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let plan = r.json();
    let id = plan["id"].as_str().unwrap().to_string();
    assert_eq!(plan["request"], "open youtube music and play weezer");
    // Random weights, but the grammar holds the answer to the schema.
    let answer: Value = serde_json::from_str(plan["answer"].as_str().unwrap()).unwrap();
    assert_eq!(answer, plan["plan"], "the plan is the answer, parsed");
    let tasks = plan["tasks"].as_array().unwrap();
    let planned = plan["plan"]["tasks"].as_array().unwrap();
    assert!((1..=2).contains(&tasks.len()), "{plan}");
    assert_eq!(tasks.len(), planned.len(), "{plan}");
    for (task, step) in tasks.iter().zip(planned) {
        assert_eq!(task["model"], "music", "{plan}");
        assert_eq!(task["metadata"]["plan_id"], id.as_str());
        assert!(["play", "pause"].contains(&step["input"]["action"].as_str().unwrap()));
    }

    let outputs = serve(&c, &worker, tasks.len()).await;
    drover_tests::wait_until_within("the plan's tasks complete", Duration::from_secs(20), || {
        let client = c.client.clone();
        let url = format!("/v1/tasks/plans/{id}");
        async move {
            let shown = client.get(&url).await.json();
            shown["tasks"]
                .as_array()
                .is_some_and(|t| t.iter().all(|t| t["state"] == "completed"))
        }
    })
    .await;
    let shown = c.client.get(&format!("/v1/tasks/plans/{id}")).await.json();
    assert_eq!(shown["answer"], plan["answer"], "{shown}");
    for (task, step) in shown["tasks"].as_array().unwrap().iter().zip(planned) {
        let (_, output) = outputs
            .iter()
            .find(|(t, _)| task["id"] == t.as_str())
            .unwrap();
        assert_eq!(&task["response"]["body"], output, "{shown}");
        assert_eq!(output["by"], step["input"]["artist"]);
    }
    let listed = c.client.get("/v1/tasks/plans").await.json();
    assert_eq!(listed["data"][0]["id"], id.as_str(), "{listed}");
    c.shutdown().await;
}

/// A hub in front of a simulated server for `m`, which meets the JSON
/// schema a request asks for unless it `ignores` it (a server without
/// structured output).
async fn sim_hub(name: &str, planner: Option<&str>, ignores: bool) -> Cluster {
    let dir = fresh_dir(name);
    let planner = planner.map(str::to_string);
    let mut sim = openai(&["m"], 1, 0);
    sim.faults.ignores_response_format = ignores;
    ClusterBuilder::new()
        .sim("s", sim)
        .hub(move |h| {
            quick(h, &dir);
            h.workers.planner_model = planner;
        })
        .start()
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_that_is_not_a_plan_is_refused_with_the_answer_and_kept() {
    let c = sim_hub("planner-refused", Some("m"), true).await;
    register(&c, json!([music()])).await;
    let r = c
        .client
        .post("/v1/tasks/plan", &json!({"request": "play weezer"}))
        .await;
    assert_eq!(r.status, 422, "{}", r.text());
    let refused = r.json();
    assert_eq!(refused["error"]["code"], "invalid_plan", "{refused}");
    let message = refused["error"]["message"].as_str().unwrap();
    assert!(message.contains("not JSON"), "{message}");
    // This server ignores response_format and answers words: that answer
    // comes back, and is kept.
    let answer = refused["plan"]["answer"].as_str().unwrap();
    assert!(!answer.is_empty(), "{refused}");
    assert!(refused["plan"]["tasks"].as_array().unwrap().is_empty());
    let id = refused["plan"]["id"].as_str().unwrap();
    let kept = c.client.get(&format!("/v1/tasks/plans/{id}")).await.json();
    assert_eq!(kept["answer"], answer, "{kept}");
    assert!(
        kept["error"].as_str().unwrap().contains("not JSON"),
        "{kept}"
    );
    let tasks = c.client.get("/v1/tasks").await.json();
    assert_eq!(tasks["data"], json!([]), "a refused plan submits nothing");
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_needs_a_model_and_something_to_plan_for() {
    let c = sim_hub("planner-needs", None, false).await;
    let r = c
        .client
        .post("/v1/tasks/plan", &json!({"request": "play weezer"}))
        .await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.json()["error"]["param"], "model");
    let r = c
        .client
        .post(
            "/v1/tasks/plan",
            &json!({"request": "play weezer", "model": "m"}),
        )
        .await;
    assert_eq!(r.status, 409, "{}", r.text());
    assert!(r.text().contains("no worker offers any capability"));
    register(&c, json!([music()])).await;
    let r = c
        .client
        .post("/v1/tasks/plan", &json!({"request": "  ", "model": "m"}))
        .await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.json()["error"]["param"], "request");
    let r = c
        .client
        .post(
            "/v1/tasks/plan",
            &json!({"request": "play", "model": "nope"}),
        )
        .await;
    assert_eq!(r.status, 404, "{}", r.text());
    assert_eq!(r.json()["error"]["param"], "model");
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_from_a_server_that_meets_the_schema_runs_on_workers() {
    let c = sim_hub("planner-sim", Some("m"), false).await;
    let worker = register(&c, json!([music()])).await;
    let r = c
        .client
        .post("/v1/tasks/plan", &json!({"request": "play weezer loud"}))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let plan = r.json();
    let planned = plan["plan"]["tasks"].as_array().unwrap();
    assert!(!planned.is_empty(), "{plan}");
    for step in planned {
        assert_eq!(step["capability"], "music", "{plan}");
        assert!(["weezer", "queen", "abba"].contains(&step["input"]["artist"].as_str().unwrap()));
    }
    let tasks = plan["tasks"].as_array().unwrap();
    assert_eq!(tasks.len(), planned.len(), "{plan}");
    serve(&c, &worker, planned.len()).await;
    let id = plan["id"].as_str().unwrap().to_string();
    drover_tests::wait_until_within(
        "the planned tasks complete",
        Duration::from_secs(20),
        || {
            let client = c.client.clone();
            let url = format!("/v1/tasks/plans/{id}");
            async move {
                let shown = client.get(&url).await.json();
                shown["tasks"]
                    .as_array()
                    .is_some_and(|t| t.iter().all(|t| t["state"] == "completed"))
            }
        },
    )
    .await;
    c.shutdown().await;
}
