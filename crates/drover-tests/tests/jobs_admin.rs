//! Every key's jobs and batches seen and steered by an operator:
//! `/admin/jobs` and `/admin/batches` on a real hub over loopback HTTP, its
//! store a SQLite file in a data directory of the test's own, simulated
//! servers behind it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use bytes::Bytes;
use drover_sim::Faults;
use drover_tests::jobs::{fresh_dir, quick, upload};
use drover_tests::{Cluster, ClusterBuilder, Reply, openai, wait_until_within};
use http::Method;
use serde_json::{Value, json};

fn job(model: &str, content: &str) -> Value {
    json!({
        "endpoint": "/v1/chat/completions",
        "body": {"model": model, "messages": [{"role": "user", "content": content}]},
    })
}

/// Creates a client key named `name`; its bearer header.
async fn client_key(cluster: &Cluster, name: &str) -> String {
    let r = cluster
        .client
        .post("/admin/keys", &json!({"name": name}))
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    format!("Bearer {}", r.json()["key"].as_str().unwrap())
}

/// Submits `body` as the holder of `auth` (no key if empty); the job's id.
async fn submit(cluster: &Cluster, auth: &str, body: &Value) -> String {
    let headers: Vec<(&str, &str)> = if auth.is_empty() {
        Vec::new()
    } else {
        vec![("authorization", auth)]
    };
    let r = cluster.client.post_with("/v1/jobs", &headers, body).await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["id"].as_str().unwrap().to_string()
}

async fn admin_post(cluster: &Cluster, path: &str) -> Reply {
    cluster
        .client
        .call(Method::POST, path, &[], Bytes::new())
        .await
}

/// Waits until job `id` is in `state`, as the management API sees it.
async fn until_state(cluster: &Cluster, id: &str, state: &str) -> Value {
    let url = format!("/admin/jobs/{id}");
    wait_until_within(
        &format!("job {id} is {state}"),
        Duration::from_secs(20),
        || {
            let client = cluster.client.clone();
            let url = url.clone();
            async move { client.get(&url).await.json()["state"] == state }
        },
    )
    .await;
    cluster.client.get(&url).await.json()
}

/// Starts a batch of `lines` chat lines for model `m` as the holder of
/// `auth`; its id.
async fn batch(cluster: &Cluster, auth: &str, lines: usize) -> String {
    batch_of(cluster, auth, "m", lines).await
}

/// Starts a batch of `lines` chat lines for `model` as the holder of
/// `auth`; its id.
async fn batch_of(cluster: &Cluster, auth: &str, model: &str, lines: usize) -> String {
    let jsonl: String = (0..lines)
        .map(|i| {
            format!(
                "{}\n",
                json!({"custom_id": format!("l{i}"), "method": "POST", "url": "/v1/chat/completions",
                       "body": {"model": model, "messages": [{"role": "user", "content": format!("q{i}")}]}})
            )
        })
        .collect();
    let file = upload(cluster, &[("authorization", auth)], &jsonl).await;
    let r = cluster
        .client
        .post_with(
            "/v1/batches",
            &[("authorization", auth)],
            &json!({"input_file_id": file, "endpoint": "/v1/chat/completions", "completion_window": "24h"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["id"].as_str().unwrap().to_string()
}

fn ids(list: &Value) -> Vec<String> {
    list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_lists_every_keys_jobs_and_batches_naming_the_key() {
    let dir = fresh_dir("list");
    let cluster = ClusterBuilder::new()
        .sim("sim", openai(&["m"], 2, 0))
        .hub(|c| quick(c, &dir))
        .start()
        .await;
    let alpha = client_key(&cluster, "alpha").await;
    let beta = client_key(&cluster, "beta").await;
    let a = submit(&cluster, &alpha, &job("m", "from alpha")).await;
    let b = submit(&cluster, &beta, &job("m", "from beta")).await;
    let batch_id = batch(&cluster, &beta, 2).await;
    until_state(&cluster, &a, "completed").await;
    until_state(&cluster, &b, "completed").await;
    wait_until_within("the batch completes", Duration::from_secs(20), || {
        let client = cluster.client.clone();
        async move { client.get("/admin/batches").await.json()["data"][0]["status"] == "completed" }
    })
    .await;

    // Every key's, newest first, each naming its key.
    let all = cluster.client.get("/admin/jobs").await;
    assert_eq!(all.status, 200, "{}", all.text());
    let all = all.json();
    assert_eq!(all["object"], "list");
    let listed = ids(&all);
    assert_eq!(listed.len(), 4, "{all}");
    let mut newest_first = listed.clone();
    newest_first.sort_by(|x, y| y.cmp(x));
    assert_eq!(listed, newest_first);
    let named = |id: &str| -> (String, String) {
        let j = all["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|j| j["id"] == id)
            .unwrap_or_else(|| panic!("{id} in {all}"));
        (
            j["key"].as_str().unwrap().to_string(),
            j["key_id"].as_str().unwrap().to_string(),
        )
    };
    let (a_name, alpha_id) = named(&a);
    let (b_name, beta_id) = named(&b);
    assert_eq!((a_name.as_str(), b_name.as_str()), ("alpha", "beta"));
    assert!(alpha_id.starts_with("key_") && beta_id.starts_with("key_"));
    assert_ne!(alpha_id, beta_id);
    let lines: Vec<&Value> = all["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|j| j["batch_id"] == batch_id.as_str())
        .collect();
    assert_eq!(lines.len(), 2, "{all}");
    assert!(lines.iter().all(|j| j["key"] == "beta"), "{all}");

    // Filtered by key (name or id), batch and state, a page at a time.
    let of_alpha = cluster.client.get("/admin/jobs?key=alpha").await.json();
    assert_eq!(ids(&of_alpha), [a.as_str()], "{of_alpha}");
    let of_beta = cluster
        .client
        .get(&format!("/admin/jobs?key={beta_id}"))
        .await
        .json();
    assert_eq!(ids(&of_beta).len(), 3, "{of_beta}");
    let of_batch = cluster
        .client
        .get(&format!("/admin/jobs?batch_id={batch_id}"))
        .await
        .json();
    assert_eq!(ids(&of_batch).len(), 2, "{of_batch}");
    let page = cluster
        .client
        .get("/admin/jobs?state=completed&limit=3")
        .await
        .json();
    assert_eq!(ids(&page), listed[..3], "{page}");
    assert_eq!(page["has_more"], true);
    let rest = cluster
        .client
        .get(&format!(
            "/admin/jobs?state=completed&after={}",
            page["last_id"].as_str().unwrap()
        ))
        .await
        .json();
    assert_eq!(ids(&rest), listed[3..], "{rest}");
    assert_eq!(rest["has_more"], false);
    let none = cluster.client.get("/admin/jobs?state=dead").await.json();
    assert_eq!(none["data"], json!([]));
    let r = cluster.client.get("/admin/jobs?state=asleep").await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.json()["error"]["param"], "state");

    // One job with its answer and its key.
    let one = cluster.client.get(&format!("/admin/jobs/{a}")).await;
    assert_eq!(one.status, 200, "{}", one.text());
    let one = one.json();
    assert_eq!(one["key"], "alpha", "{one}");
    assert_eq!(one["key_id"], alpha_id.as_str());
    assert_eq!(one["response"]["status_code"], 200, "{one}");
    let r = cluster.client.get("/admin/jobs/job_nope").await;
    assert_eq!(r.status, 404, "{}", r.text());

    // Every key's batches with their request counts.
    let batches = cluster.client.get("/admin/batches").await;
    assert_eq!(batches.status, 200, "{}", batches.text());
    let batches = batches.json();
    assert_eq!(ids(&batches), [batch_id.as_str()], "{batches}");
    let listed_batch = &batches["data"][0];
    assert_eq!(listed_batch["key"], "beta");
    assert_eq!(
        listed_batch["request_counts"],
        json!({"total": 2, "completed": 2, "failed": 0}),
        "{batches}"
    );
    let of_alpha = cluster.client.get("/admin/batches?key=alpha").await.json();
    assert_eq!(of_alpha["data"], json!([]), "{of_alpha}");
    cluster.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_retries_a_dead_job_and_cancels_a_queued_one() {
    let dir = fresh_dir("steer");
    let mut broken = openai(&["m"], 1, 0);
    broken.faults = Faults {
        error_rate: 1.0,
        ..Faults::NONE
    };
    let cluster = ClusterBuilder::new()
        .sim("broken", broken)
        .sim("slow", openai(&["s"], 1, 60_000))
        .hub(|c| {
            quick(c, &dir);
            // One job in the hub's hands at a time: while one runs, the
            // next stays queued in the store.
            c.jobs.window = 1;
            c.upstream.max_retries = 0;
        })
        .start()
        .await;
    let mut doomed = job("m", "doomed");
    doomed["max_attempts"] = json!(1);
    let dead = submit(&cluster, "", &doomed).await;
    let seen = until_state(&cluster, &dead, "dead").await;
    assert_eq!(seen["key"], "anonymous", "{seen}");
    assert!(
        seen["attempts"][0]["error"]
            .as_str()
            .unwrap()
            .starts_with("500"),
        "{seen}"
    );
    let listed = cluster.client.get("/admin/jobs?state=dead").await.json();
    assert_eq!(ids(&listed), [dead.as_str()], "{listed}");

    let running = submit(&cluster, "", &job("s", "long")).await;
    until_state(&cluster, &running, "running").await;
    let queued = submit(&cluster, "", &job("s", "behind")).await;
    assert_eq!(
        cluster
            .client
            .get(&format!("/admin/jobs/{queued}"))
            .await
            .json()["state"],
        "queued"
    );

    // A queued job is cancelled at once.
    let r = admin_post(&cluster, &format!("/admin/jobs/{queued}/cancel")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["state"], "cancelled", "{}", r.text());
    assert_eq!(r.json()["key"], "anonymous");
    // A running job cannot be retried; cancelled, it stops.
    let r = admin_post(&cluster, &format!("/admin/jobs/{running}/retry")).await;
    assert_eq!(r.status, 409, "{}", r.text());
    let r = admin_post(&cluster, &format!("/admin/jobs/{running}/cancel")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    until_state(&cluster, &running, "cancelled").await;

    // The dead job, retried once its backend is mended, completes.
    cluster.sim("broken").set_faults(Faults::NONE);
    let r = admin_post(&cluster, &format!("/admin/jobs/{dead}/retry")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["state"], "queued", "{}", r.text());
    let done = until_state(&cluster, &dead, "completed").await;
    assert_eq!(done["attempts"].as_array().unwrap().len(), 2, "{done}");
    let r = admin_post(&cluster, &format!("/admin/jobs/{dead}/retry")).await;
    assert_eq!(r.status, 409, "{}", r.text());
    for path in ["/admin/jobs/job_nope/retry", "/admin/jobs/job_nope/cancel"] {
        let r = admin_post(&cluster, path).await;
        assert_eq!(r.status, 404, "{path}: {}", r.text());
    }
    cluster.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_cancels_any_keys_batch() {
    let dir = fresh_dir("batch-cancel");
    let cluster = ClusterBuilder::new()
        .sim("slow", openai(&["m"], 1, 60_000))
        .hub(|c| {
            quick(c, &dir);
            // At most one line in the hub's hands: the others wait in the
            // store, where a cancel reaches them at once.
            c.jobs.window = 1;
        })
        .start()
        .await;
    let alpha = client_key(&cluster, "alpha").await;
    let id = batch(&cluster, &alpha, 3).await;
    let running = format!("/admin/jobs?batch_id={id}&state=running");
    wait_until_within("a line runs", Duration::from_secs(20), || {
        let client = cluster.client.clone();
        let url = running.clone();
        async move { ids(&client.get(&url).await.json()).len() == 1 }
    })
    .await;
    let r = admin_post(&cluster, &format!("/admin/batches/{id}/cancel")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let cancelling = r.json();
    assert_eq!(cancelling["key"], "alpha", "{cancelling}");
    assert_eq!(cancelling["status"], "cancelling", "{cancelling}");
    // Its waiting lines are cancelled at once; the one running goes on
    // until it is stopped too, and then the batch has ended.
    let lines = cluster
        .client
        .get(&format!("/admin/jobs?batch_id={id}&state=cancelled"))
        .await
        .json();
    assert_eq!(ids(&lines).len(), 2, "{lines}");
    let line = ids(&cluster.client.get(&running).await.json()).remove(0);
    let r = admin_post(&cluster, &format!("/admin/jobs/{line}/cancel")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    wait_until_within("the batch is cancelled", Duration::from_secs(20), || {
        let client = cluster.client.clone();
        async move { client.get("/admin/batches").await.json()["data"][0]["status"] == "cancelled" }
    })
    .await;
    let r = admin_post(&cluster, &format!("/admin/batches/{id}/cancel")).await;
    assert_eq!(
        r.status,
        200,
        "cancelling twice changes nothing: {}",
        r.text()
    );
    let r = admin_post(&cluster, "/admin/batches/batch_nope/cancel").await;
    assert_eq!(r.status, 404, "{}", r.text());
    cluster.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}

/// The overview's jobs part, once it says `want` of some field.
async fn overview_jobs_until(
    cluster: &Cluster,
    what: &str,
    want: impl Fn(&Value) -> bool,
) -> Value {
    let seen = std::sync::Mutex::new(Value::Null);
    wait_until_within(what, Duration::from_secs(20), || {
        let client = cluster.client.clone();
        let (want, seen) = (&want, &seen);
        async move {
            let jobs = client.get("/admin/overview").await.json()["jobs"].clone();
            let ok = want(&jobs);
            *seen.lock().unwrap() = jobs;
            ok
        }
    })
    .await;
    seen.into_inner().unwrap()
}

fn by_state(jobs: &Value) -> Vec<(String, u64)> {
    jobs["by_state"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["state"].as_str().unwrap().to_string(),
                c["jobs"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_overviews_jobs_part_counts_what_the_store_holds() {
    let dir = fresh_dir("overview");
    let mut broken = openai(&["m"], 1, 0);
    broken.faults = Faults {
        error_rate: 1.0,
        ..Faults::NONE
    };
    let cluster = ClusterBuilder::new()
        .sim("broken", broken)
        .sim("slow", openai(&["s"], 1, 60_000))
        .hub(|c| {
            quick(c, &dir);
            // One job in the hub's hands at a time: while one runs, the
            // rest stay queued in the store.
            c.jobs.window = 1;
            c.upstream.max_retries = 0;
        })
        .start()
        .await;
    let empty =
        overview_jobs_until(&cluster, "the store is read", |j| j["read_at_ms"].is_u64()).await;
    assert_eq!(
        by_state(&empty),
        [
            "queued",
            "running",
            "completed",
            "failed",
            "dead",
            "cancelled",
            "expired"
        ]
        .map(|s| (s.to_string(), 0)),
        "{empty}"
    );
    assert_eq!(empty["error"], Value::Null, "{empty}");
    assert_eq!(empty["held"], 0);
    assert_eq!(empty["dead"], json!([]));

    let alpha = client_key(&cluster, "alpha").await;
    let mut doomed = job("m", "doomed");
    doomed["max_attempts"] = json!(1);
    let dead = submit(&cluster, &alpha, &doomed).await;
    until_state(&cluster, &dead, "dead").await;
    let running = submit(&cluster, &alpha, &job("s", "long")).await;
    until_state(&cluster, &running, "running").await;
    submit(&cluster, &alpha, &job("s", "behind")).await;
    // A batch that ends (cancelled before a line ran) and one under way.
    let ended = batch_of(&cluster, &alpha, "s", 2).await;
    let r = admin_post(&cluster, &format!("/admin/batches/{ended}/cancel")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let open = batch_of(&cluster, &alpha, "s", 3).await;

    let jobs = overview_jobs_until(&cluster, "the overview counts them", |j| {
        j["ended_batches"].as_array().is_some_and(|b| b.len() == 1)
            && j["open_batches"].as_array().is_some_and(|b| b.len() == 1)
            && j["by_state"][0]["jobs"] == 4
    })
    .await;
    let counts: std::collections::BTreeMap<String, u64> = by_state(&jobs).into_iter().collect();
    assert_eq!(
        counts["queued"], 4,
        "the job behind and the open batch's 3: {jobs}"
    );
    assert_eq!(counts["running"], 1, "{jobs}");
    assert_eq!(counts["dead"], 1, "{jobs}");
    assert_eq!(counts["cancelled"], 2, "the ended batch's lines: {jobs}");
    assert_eq!(counts["completed"], 0, "{jobs}");
    assert_eq!(jobs["held"], 1, "{jobs}");
    assert_eq!(jobs["batches_open"], 1, "{jobs}");
    assert_eq!(jobs["error"], Value::Null, "{jobs}");
    let o = &jobs["open_batches"][0];
    assert_eq!(o["id"], open.as_str(), "{jobs}");
    assert_eq!(o["key"], "alpha");
    assert_eq!(o["status"], "in_progress");
    assert_eq!(
        o["request_counts"],
        json!({"total": 3, "completed": 0, "failed": 0})
    );
    assert_eq!(o["ended_at"], Value::Null);
    let e = &jobs["ended_batches"][0];
    assert_eq!(e["id"], ended.as_str(), "{jobs}");
    assert_eq!(e["status"], "cancelled");
    assert_eq!(
        e["request_counts"],
        json!({"total": 2, "completed": 0, "failed": 2})
    );
    assert!(e["ended_at"].is_u64(), "{jobs}");
    let d = jobs["dead"].as_array().unwrap();
    assert_eq!(d.len(), 1, "{jobs}");
    assert_eq!(d[0]["id"], dead.as_str());
    assert_eq!(d[0]["key"], "alpha");
    assert_eq!(d[0]["model"], "m");
    assert_eq!(d[0]["attempts"], 1);
    assert_eq!(d[0]["status"], 500, "{jobs}");
    assert!(d[0]["error"].as_str().unwrap().starts_with("500"), "{jobs}");

    // Retried, the dead job leaves the list on a later overview.
    let r = admin_post(&cluster, &format!("/admin/jobs/{dead}/retry")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    overview_jobs_until(&cluster, "the retried job is no longer dead", |j| {
        j["dead"].as_array().is_some_and(Vec::is_empty)
    })
    .await;
    // Stop the long job so the hub stops at once.
    let r = admin_post(&cluster, &format!("/admin/jobs/{running}/cancel")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    cluster.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_key_cannot_use_the_admin_job_routes() {
    let dir = fresh_dir("client");
    let cluster = ClusterBuilder::new()
        .sim("sim", openai(&["m"], 1, 0))
        .hub(|c| quick(c, &dir))
        .start()
        .await;
    let alpha = client_key(&cluster, "alpha").await;
    let own = submit(&cluster, &alpha, &job("m", "mine")).await;
    let headers = [("authorization", alpha.as_str())];
    for (method, path) in [
        (Method::GET, "/admin/jobs".to_string()),
        (Method::GET, format!("/admin/jobs/{own}")),
        (Method::POST, format!("/admin/jobs/{own}/cancel")),
        (Method::POST, format!("/admin/jobs/{own}/retry")),
        (Method::GET, "/admin/batches".to_string()),
        (Method::POST, "/admin/batches/batch_x/cancel".to_string()),
    ] {
        let r = cluster
            .client
            .call(method.clone(), &path, &headers, Bytes::new())
            .await;
        assert_eq!(r.status, 403, "{method} {path}: {}", r.text());
        assert!(r.text().contains("admin key"), "{}", r.text());
    }
    // Its own jobs stay its own to see.
    let r = cluster
        .client
        .call(Method::GET, "/v1/jobs", &headers, Bytes::new())
        .await;
    assert_eq!(ids(&r.json()), [own], "{}", r.text());
    cluster.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hub_without_a_store_says_so_to_an_admin() {
    let cluster = ClusterBuilder::new()
        .sim("sim", openai(&["m"], 1, 0))
        .start()
        .await;
    for path in ["/admin/jobs", "/admin/batches"] {
        let r = cluster.client.get(path).await;
        assert_eq!(r.status, 503, "{path}: {}", r.text());
        assert_eq!(r.error_code(), "no_store", "{}", r.text());
    }
    // The overview has no jobs part to draw.
    let overview = cluster.client.get("/admin/overview").await.json();
    assert_eq!(overview["jobs"], Value::Null, "{overview}");
    assert!(overview["backends"].is_array(), "{overview}");
    cluster.shutdown().await;
}
