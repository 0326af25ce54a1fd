//! Durable jobs end to end: `/v1/jobs` on a real hub over loopback HTTP,
//! its store a SQLite file in a data directory of the test's own (and
//! PostgreSQL where a second runner must be simulated), simulated servers
//! behind it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use drover_sim::Faults;
use drover_tests::jobs::{fresh_dir, quick, submit, until_state, upload};
use drover_tests::{ClusterBuilder, openai, wait_until_within};
use serde_json::{Value, json};

fn job(model: &str, content: &str) -> Value {
    json!({
        "endpoint": "/v1/chat/completions",
        "body": {"model": model, "messages": [{"role": "user", "content": content}]},
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_runs_through_the_fleet_and_its_answer_is_kept() {
    let dir = fresh_dir("answer");
    let cluster = ClusterBuilder::new()
        .sim("sim", openai(&["m"], 2, 0))
        .hub(|c| quick(c, &dir))
        .start()
        .await;
    let created = submit(&cluster, &job("m", "hello")).await;
    let id = created["id"].as_str().unwrap();
    assert!(id.starts_with("job_"), "{created}");
    assert_eq!(created["object"], "job");
    assert_eq!(created["model"], "m");
    let done = until_state(&cluster, id, "completed").await;
    assert_eq!(done["response"]["status_code"], 200, "{done}");
    assert!(
        done["response"]["body"]["choices"][0]["message"]["content"].is_string(),
        "{done}"
    );
    let attempts = done["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 1, "{done}");
    assert_eq!(attempts[0]["backends"], json!(["sim"]));
    assert_eq!(attempts[0]["status"], 200);
    // Counted like any request: the forwarder's observer saw it.
    let metrics = cluster.client.get("/metrics").await.text();
    let served = metrics
        .lines()
        .find(|l| l.starts_with("drover_requests_total{") && l.contains("status=\"200\""))
        .unwrap_or_else(|| panic!("no request counted:\n{metrics}"));
    assert!(served.ends_with(" 1"), "{served}");
    // And as a job: its attempt's outcome, the store's count by state.
    for line in [
        "drover_job_attempts_total{outcome=\"completed\"} 1",
        "drover_jobs{state=\"completed\"} 1",
        "drover_jobs{state=\"queued\"} 0",
        "drover_job_store_up 1",
    ] {
        assert!(metrics.lines().any(|l| l == line), "no {line}:\n{metrics}");
    }
    // And listed.
    let list = cluster.client.get("/v1/jobs?state=completed").await.json();
    assert_eq!(list["object"], "list");
    assert_eq!(list["data"][0]["id"], id, "{list}");
    assert_eq!(list["has_more"], false);
    cluster.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_jobs_are_refused_naming_the_field() {
    let dir = fresh_dir("bad");
    let cluster = ClusterBuilder::new()
        .sim("sim", openai(&["m"], 1, 0))
        .hub(|c| quick(c, &dir))
        .start()
        .await;
    let cases = [
        (
            json!({"endpoint": "/v1/chat/completions", "body": {"model": "m", "stream": true}}),
            "body.stream",
        ),
        (
            json!({"endpoint": "/v1/images", "body": {"model": "m"}}),
            "endpoint",
        ),
        (
            json!({"endpoint": "/v1/embeddings", "body": {"input": "x"}}),
            "body.model",
        ),
    ];
    for (body, param) in cases {
        let r = cluster.client.post("/v1/jobs", &body).await;
        assert_eq!(r.status, 400, "{body}: {}", r.text());
        assert_eq!(r.json()["error"]["param"], param, "{}", r.text());
    }
    let r = cluster.client.get("/v1/jobs/job_nope").await;
    assert_eq!(r.status, 404, "{}", r.text());
    let r = cluster.client.get("/v1/jobs?state=sleeping").await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("sleeping"), "{}", r.text());
    // Nothing bad was stored.
    let list = cluster.client.get("/v1/jobs").await.json();
    assert_eq!(list["data"], json!([]), "{list}");
    cluster.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotency_key_returns_its_job_or_a_conflict() {
    let dir = fresh_dir("idem");
    let cluster = ClusterBuilder::new()
        .sim("sim", openai(&["m"], 1, 0))
        .hub(|c| quick(c, &dir))
        .start()
        .await;
    let body = job("m", "once");
    let headers = [("idempotency-key", "run-42")];
    let first = cluster.client.post_with("/v1/jobs", &headers, &body).await;
    assert_eq!(first.status, 200, "{}", first.text());
    let again = cluster.client.post_with("/v1/jobs", &headers, &body).await;
    assert_eq!(again.status, 200, "{}", again.text());
    assert_eq!(again.json()["id"], first.json()["id"]);
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    let other = cluster
        .client
        .post_with("/v1/jobs", &headers, &job("m", "twice"))
        .await;
    assert_eq!(other.status, 409, "{}", other.text());
    assert!(other.text().contains("run-42"), "{}", other.text());
    let list = cluster.client.get("/v1/jobs").await.json();
    assert_eq!(list["data"].as_array().unwrap().len(), 1, "{list}");
    cluster.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_retry_elsewhere_then_die_and_a_dead_job_can_be_retried() {
    let dir = fresh_dir("retry");
    let mut broken = openai(&["m"], 2, 0);
    broken.faults = Faults {
        error_rate: 1.0,
        ..Faults::NONE
    };
    let cluster = ClusterBuilder::new()
        .sim("a", broken.clone())
        .sim("b", broken)
        .hub(|c| {
            quick(c, &dir);
            // One attempt of a job is one backend: its failure is the job's.
            c.upstream.max_retries = 0;
        })
        .start()
        .await;
    let mut body = job("m", "doomed");
    body["max_attempts"] = json!(3);
    let id = submit(&cluster, &body).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let dead = until_state(&cluster, &id, "dead").await;
    let attempts = dead["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 3, "{dead}");
    for a in attempts {
        assert_eq!(a["status"], 500, "{dead}");
        assert!(a["error"].as_str().unwrap().starts_with("500"), "{dead}");
    }
    // The second attempt went to the backend the first had not failed on.
    let first = attempts[0]["backends"][0].as_str().unwrap();
    let second = attempts[1]["backends"][0].as_str().unwrap();
    assert_ne!(first, second, "{dead}");
    assert_eq!(dead["response"]["status_code"], 500, "{dead}");

    for sim in &cluster.sims {
        sim.set_faults(Faults::NONE);
    }
    let r = cluster
        .client
        .post(&format!("/v1/jobs/{id}/retry"), &json!({}))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["state"], "queued");
    let done = until_state(&cluster, &id, "completed").await;
    assert_eq!(done["attempts"].as_array().unwrap().len(), 4, "{done}");
    // A completed job is not retried.
    let r = cluster
        .client
        .post(&format!("/v1/jobs/{id}/retry"), &json!({}))
        .await;
    assert_eq!(r.status, 409, "{}", r.text());
    cluster.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_that_says_no_is_final() {
    let dir = fresh_dir("final");
    let cluster = ClusterBuilder::new()
        .sim("sim", openai(&["m"], 1, 0))
        .hub(|c| quick(c, &dir))
        .start()
        .await;
    let id = submit(&cluster, &job("no-such-model", "x")).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let failed = until_state(&cluster, &id, "failed").await;
    assert_eq!(failed["attempts"].as_array().unwrap().len(), 1, "{failed}");
    assert_eq!(failed["response"]["status_code"], 404, "{failed}");
    assert_eq!(
        failed["response"]["body"]["error"]["code"], "model_not_found",
        "{failed}"
    );
    cluster.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_stops_a_waiting_job_and_a_running_one() {
    let dir = fresh_dir("cancel");
    let cluster = ClusterBuilder::new()
        .sim("sim", openai(&["m"], 1, 60_000))
        .hub(|c| quick(c, &dir))
        .start()
        .await;
    let running = submit(&cluster, &job("m", "long")).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    until_state(&cluster, &running, "running").await;
    cluster.sim("sim").wait_for(|s| s.requests_total == 1).await;
    let waiting = submit(&cluster, &job("m", "behind")).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = cluster
        .client
        .post(&format!("/v1/jobs/{running}/cancel"), &json!({}))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    until_state(&cluster, &running, "cancelled").await;
    // Its slot went to the job behind it, which is cancelled in turn.
    until_state(&cluster, &waiting, "running").await;
    let r = cluster
        .client
        .post(&format!("/v1/jobs/{waiting}/cancel"), &json!({}))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let cancelled = until_state(&cluster, &waiting, "cancelled").await;
    assert_eq!(cancelled["cancel_requested"], false, "{cancelled}");
    cluster.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_hub_finishes_every_job_and_none_twice() {
    let dir = fresh_dir("restart");
    // Two slots and answers that take a while: at the restart some jobs
    // run and the rest wait.
    let cluster = ClusterBuilder::new()
        .sim("sim", openai(&["m"], 2, 300))
        .hub(|c| quick(c, &dir))
        .start()
        .await;
    let mut ids = Vec::new();
    for i in 0..12 {
        ids.push(
            submit(&cluster, &job("m", &format!("job {i}"))).await["id"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    cluster.sim("sim").wait_for(|s| s.requests_total >= 2).await;
    // A grace too short for the running ones: they are cut off and go back.
    let cluster = cluster.restart_hub(Duration::from_millis(10)).await;
    for id in &ids {
        let done = until_state(&cluster, id, "completed").await;
        let ok: Vec<_> = done["attempts"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["status"] == 200)
            .collect();
        assert_eq!(ok.len(), 1, "completed once: {done}");
    }
    // The restarted hub's store holds each job once, all completed.
    let list = cluster.client.get("/v1/jobs?limit=100").await.json();
    let states: Vec<&str> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, vec!["completed"; 12], "{list}");
    cluster.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hub_without_a_store_says_how_to_get_one() {
    let cluster = ClusterBuilder::new()
        .sim("sim", openai(&["m"], 1, 0))
        .start()
        .await;
    let r = cluster.client.post("/v1/jobs", &job("m", "x")).await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(r.text().contains("data_dir"), "{}", r.text());
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_capped_key_runs_its_jobs_a_few_at_a_time_and_none_fails_for_it() {
    let dir = fresh_dir("capped");
    let cluster = ClusterBuilder::new()
        .sim_with_slots("sim", openai(&["m"], 8, 100), 8)
        .hub(|c| quick(c, &dir))
        .start()
        .await;
    let r = cluster
        .client
        .post(
            "/admin/keys",
            &json!({"name": "nightly", "limits": {"max_concurrent": 2}}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let key = format!("Bearer {}", r.json()["key"].as_str().unwrap());
    let auth = [("authorization", key.as_str())];
    let mut ids = Vec::new();
    for i in 0..10 {
        let r = cluster
            .client
            .post_with("/v1/jobs", &auth, &job("m", &format!("job {i}")))
            .await;
        assert_eq!(r.status, 200, "{}", r.text());
        ids.push(r.json()["id"].as_str().unwrap().to_string());
    }
    for id in &ids {
        wait_until_within(
            &format!("job {id} completes"),
            Duration::from_secs(20),
            || {
                let client = cluster.client.clone();
                let url = format!("/v1/jobs/{id}");
                let key = key.clone();
                async move {
                    let j = client
                        .call(
                            http::Method::GET,
                            &url,
                            &[("authorization", key.as_str())],
                            bytes::Bytes::new(),
                        )
                        .await
                        .json();
                    j["state"] == "completed"
                }
            },
        )
        .await;
        let done = cluster
            .client
            .call(
                http::Method::GET,
                &format!("/v1/jobs/{id}"),
                &auth,
                bytes::Bytes::new(),
            )
            .await
            .json();
        // Waiting for its key's turn is not a failed attempt.
        assert_eq!(done["attempts"].as_array().unwrap().len(), 1, "{done}");
    }
    let stats = cluster.sim("sim").stats();
    assert!(
        stats.models["m"].max_in_flight <= 2,
        "the key's cap holds: {:?}",
        stats.models["m"]
    );
    cluster.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_runs_no_more_lines_at_once_than_its_cap() {
    let dir = fresh_dir("batch-cap");
    let cluster = ClusterBuilder::new()
        .sim_with_slots("sim", openai(&["m"], 8, 50), 8)
        .hub(|c| quick(c, &dir))
        .start()
        .await;
    let jsonl: String = (0..12)
        .map(|i| {
            format!(
                "{}\n",
                json!({"custom_id": format!("l{i}"), "method": "POST", "url": "/v1/chat/completions",
                       "body": {"model": "m", "messages": [{"role": "user", "content": format!("q{i}")}]}})
            )
        })
        .collect();
    let file = upload(&cluster, &[], &jsonl).await;
    let r = cluster
        .client
        .post(
            "/v1/batches",
            &json!({"input_file_id": file, "endpoint": "/v1/chat/completions",
                    "completion_window": "24h", "max_concurrency": 3}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let id = r.json()["id"].as_str().unwrap().to_string();
    wait_until_within("the batch completes", Duration::from_secs(20), || {
        let client = cluster.client.clone();
        let url = format!("/v1/batches/{id}");
        async move { client.get(&url).await.json()["status"] == "completed" }
    })
    .await;
    let batch = cluster
        .client
        .get(&format!("/v1/batches/{id}"))
        .await
        .json();
    assert_eq!(batch["request_counts"]["completed"], 12, "{batch}");
    let stats = cluster.sim("sim").stats();
    assert_eq!(
        stats.models["m"].max_in_flight, 3,
        "{:?}",
        stats.models["m"]
    );
    cluster.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backends_added_and_models_pinned_at_run_time_outlive_a_restart() {
    let dir = fresh_dir("kept");
    let cluster = ClusterBuilder::new()
        .sim("a", openai(&["m"], 1, 0))
        .hub(|c| quick(c, &dir))
        .start()
        .await;
    let extra = drover_sim::SimServer::start(
        tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
        openai(&["n"], 1, 0),
    )
    .unwrap();
    let r = cluster
        .client
        .post(
            "/admin/backends",
            &json!({"url": extra.url(), "kind": "openai", "name": "added"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let r = cluster
        .client
        .post("/admin/models/pin", &json!({"model": "m"}))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    // Restarted, the hub knows both backends and the pin: the config has
    // only `a`.
    let cluster = cluster.restart_hub(Duration::from_secs(1)).await;
    wait_until_within(
        "the added backend is back",
        Duration::from_secs(10),
        || async {
            let r = cluster.client.get("/admin/backends/added").await;
            r.status == 200
        },
    )
    .await;
    assert!(cluster.hub.inspect(|s| s.is_pinned("m")), "the pin is kept");
    let r = cluster
        .client
        .post("/v1/chat/completions", &drover_tests::chat_body("n", "hi"))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    // Removed, it stays removed.
    let r = cluster.client.delete("/admin/backends/added").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = cluster
        .client
        .post("/admin/models/unpin", &json!({"model": "m"}))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let cluster = cluster.restart_hub(Duration::from_secs(1)).await;
    assert_eq!(
        cluster.client.get("/admin/backends/added").await.status,
        404
    );
    assert!(!cluster.hub.inspect(|s| s.is_pinned("m")));
    cluster.shutdown().await;
    extra.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}
