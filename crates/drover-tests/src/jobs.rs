//! Helpers for the tests of durable jobs: a data directory of a test's own,
//! job settings that keep tests short, and waiting on a job's state.

use std::path::{Path, PathBuf};
use std::time::Duration;

use drover_hub::HubConfig;
use serde_json::Value;

use crate::{Cluster, Reply, wait_until_within};

/// A fresh data directory (the hub's SQLite store) for one test.
pub fn fresh_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("drover-jobs-{name}-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    dir
}

/// A store in `dir`, and retries, back-offs and polls short enough that
/// no test waits seconds on them.
pub fn quick(c: &mut HubConfig, dir: &Path) {
    c.data_dir = Some(dir.to_path_buf());
    c.jobs.backoff = Duration::from_millis(20);
    c.jobs.max_backoff = Duration::from_millis(100);
    c.jobs.poll_interval = Duration::from_millis(50);
}

/// `POST /v1/jobs`, which must take it; the job.
pub async fn submit(cluster: &Cluster, body: &Value) -> Value {
    let r = cluster.client.post("/v1/jobs", body).await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

/// `GET /v1/jobs/{id}`, which must answer it.
pub async fn get(cluster: &Cluster, id: &str) -> Value {
    let r = cluster.client.get(&format!("/v1/jobs/{id}")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

/// Waits (20 s at most) until job `id` is in `state`; the job then.
pub async fn until_state(cluster: &Cluster, id: &str, state: &str) -> Value {
    wait_until_within(
        &format!("job {id} is {state}"),
        Duration::from_secs(20),
        || {
            let client = cluster.client.clone();
            let url = format!("/v1/jobs/{id}");
            async move { client.get(&url).await.json()["state"] == state }
        },
    )
    .await;
    get(cluster, id).await
}

/// Uploads `jsonl` as a batch input file (multipart, as the clients send
/// it), with `headers` (a key's `authorization`, say); the file's id.
pub async fn upload(cluster: &Cluster, headers: &[(&str, &str)], jsonl: &str) -> String {
    let r = try_upload(cluster, headers, jsonl).await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no file id: {}", r.text()))
        .to_string()
}

/// `POST /v1/files` of `jsonl` for a batch, however it is answered.
pub async fn try_upload(cluster: &Cluster, headers: &[(&str, &str)], jsonl: &str) -> Reply {
    let boundary = "drover-test-boundary";
    let body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nbatch\r\n\
         --{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"in.jsonl\"\r\n\
         Content-Type: application/octet-stream\r\n\r\n{jsonl}\r\n--{boundary}--\r\n"
    );
    let content_type = format!("multipart/form-data; boundary={boundary}");
    let mut all = vec![("content-type", content_type.as_str())];
    all.extend_from_slice(headers);
    cluster
        .client
        .call(
            http::Method::POST,
            "/v1/files",
            &all,
            bytes::Bytes::from(body),
        )
        .await
}

/// Every job the client's key sees, a page at a time.
pub async fn all(client: &crate::Client) -> Vec<Value> {
    let mut jobs: Vec<Value> = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let path = match &after {
            Some(a) => format!("/v1/jobs?limit=100&after={a}"),
            None => "/v1/jobs?limit=100".into(),
        };
        let page = client.get(&path).await.json();
        jobs.extend(page["data"].as_array().unwrap().iter().cloned());
        if page["has_more"] != true {
            return jobs;
        }
        after = page["last_id"].as_str().map(str::to_string);
    }
}

/// Asserts `expected` jobs, each completed with exactly one answered
/// attempt: none lost, none completed twice.
pub fn assert_completed_once(jobs: &[Value], expected: usize) {
    assert_eq!(jobs.len(), expected, "every job handed over is stored once");
    for job in jobs {
        assert_eq!(job["state"], "completed", "lost: {job}");
        let answered = job["attempts"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["status"] == 200)
            .count();
        assert_eq!(answered, 1, "completed more than once: {job}");
    }
}
