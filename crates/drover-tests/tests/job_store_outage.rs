//! A hub on PostgreSQL, beside other hubs and without its store.
//! PostgreSQL going away: inference keeps being served from memory, the
//! job API answers 503 saying the store is unreachable, and nothing
//! accepted is lost when it returns. Another hub on the same database: its
//! keys are this hub's, its jobs wake this hub's runner. The hub reaches
//! the real server through a TCP relay on loopback that the test cuts and
//! restores.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use drover_tests::relay::{Relay, postgres};
use drover_tests::{Cluster, ClusterBuilder, chat_body, openai, wait_until_within};
use serde_json::{Value, json};

fn job(content: &str) -> Value {
    json!({
        "endpoint": "/v1/chat/completions",
        "body": chat_body("m", content),
    })
}

async fn state_of(cluster: &Cluster, id: &str) -> String {
    cluster.client.get(&format!("/v1/jobs/{id}")).await.json()["state"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// Answers with status 200 the hub has counted.
async fn answered(cluster: &Cluster) -> u64 {
    let metrics = cluster.client.get("/metrics").await.text();
    metrics
        .lines()
        .filter(|l| l.starts_with("drover_requests_total{") && l.contains("status=\"200\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

async fn state_of_raw(cluster: &Cluster, id: &str) -> u16 {
    cluster
        .client
        .get(&format!("/v1/jobs/{id}"))
        .await
        .status
        .as_u16()
}

async fn until_completed(cluster: &Cluster, id: &str) {
    wait_until_within(
        &format!("job {id} completes"),
        Duration::from_secs(30),
        || async { state_of(cluster, id).await == "completed" },
    )
    .await;
}

async fn hub_behind(relay: &Relay, template: &str, ttft_ms: u64) -> Cluster {
    let schema = format!("outage_{}", uuid::Uuid::now_v7().simple());
    let url = format!(
        "{}?schema={schema}",
        template.replace("{relay}", &relay.addr)
    );
    let dir = std::env::temp_dir().join(format!("drover-outage-{}", uuid::Uuid::now_v7()));
    ClusterBuilder::new()
        .sim("sim", openai(&["m"], 2, ttft_ms))
        .hub(move |c| {
            c.data_dir = Some(dir);
            c.database_url = Some(url);
            c.jobs.poll_interval = Duration::from_millis(50);
            c.jobs.backoff = Duration::from_millis(20);
        })
        .start()
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_its_store_the_hub_serves_inference_refuses_jobs_and_loses_nothing() {
    let (target, template) = postgres();
    let relay = Relay::start(target).await;
    let cluster = hub_behind(&relay, &template, 800).await;

    let before = cluster.client.post("/v1/jobs", &job("before")).await;
    assert_eq!(before.status, 200, "{}", before.text());
    let before = before.json()["id"].as_str().unwrap().to_string();
    until_completed(&cluster, &before).await;

    // One running when the store goes: its answer arrives while the store
    // is away, and is stored once it is back.
    let running = cluster
        .client
        .post("/v1/jobs", &job("running"))
        .await
        .json()["id"]
        .as_str()
        .unwrap()
        .to_string();
    cluster.sim("sim").wait_for(|s| s.requests_total >= 2).await;
    relay.cut();

    let refused = cluster.client.post("/v1/jobs", &job("during")).await;
    assert_eq!(refused.status, 503, "{}", refused.text());
    assert_eq!(
        refused.error_code(),
        "store_unavailable",
        "{}",
        refused.text()
    );
    assert!(refused.text().contains("unreachable"), "{}", refused.text());
    let chat = cluster
        .client
        .post("/v1/chat/completions", &chat_body("m", "still here"))
        .await;
    assert_eq!(chat.status, 200, "inference goes on: {}", chat.text());
    // The running job's answer comes back while the store is away: three
    // answers counted (the first job's, the chat's, the running job's).
    wait_until_within(
        "the running job is answered",
        Duration::from_secs(30),
        || async { answered(&cluster).await >= 3 },
    )
    .await;
    assert_eq!(
        state_of_raw(&cluster, &running).await,
        503,
        "the store is still away"
    );

    relay.restore();
    until_completed(&cluster, &running).await;
    let after = cluster.client.post("/v1/jobs", &job("after")).await;
    assert_eq!(after.status, 200, "{}", after.text());
    until_completed(&cluster, after.json()["id"].as_str().unwrap()).await;
    assert_eq!(state_of(&cluster, &before).await, "completed");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hub_starts_while_its_store_is_away_and_runs_jobs_once_it_answers() {
    let (target, template) = postgres();
    let relay = Relay::start(target).await;
    relay.cut();
    let cluster = hub_behind(&relay, &template, 0).await;
    // Its keys are in the store: until they are read, nobody's key can be
    // checked, and nothing is let through unchecked.
    let chat = cluster
        .client
        .post("/v1/chat/completions", &chat_body("m", "hello"))
        .await;
    assert_eq!(chat.status, 503, "{}", chat.text());
    assert_eq!(chat.error_code(), "store_unavailable", "{}", chat.text());
    assert!(chat.text().contains("API keys"), "{}", chat.text());
    let refused = cluster.client.post("/v1/jobs", &job("early")).await;
    assert_eq!(refused.status, 503, "{}", refused.text());
    relay.restore();
    wait_until_within(
        "inference once the keys are read",
        Duration::from_secs(30),
        || async {
            let chat = cluster
                .client
                .post("/v1/chat/completions", &chat_body("m", "hello"))
                .await;
            chat.status == 200
        },
    )
    .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let id = loop {
        let r = cluster.client.post("/v1/jobs", &job("late")).await;
        if r.status == 200 {
            break r.json()["id"].as_str().unwrap().to_string();
        }
        assert_eq!(r.status, 503, "{}", r.text());
        assert!(
            tokio::time::Instant::now() < deadline,
            "the job API never came back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    until_completed(&cluster, &id).await;
    cluster.shutdown().await;
}

/// The overview's jobs part, once `want` holds for it.
async fn overview_jobs_until(
    cluster: &Cluster,
    what: &str,
    want: impl Fn(&Value) -> bool,
) -> Value {
    let seen = std::sync::Mutex::new(Value::Null);
    wait_until_within(what, Duration::from_secs(30), || {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_overview_says_the_store_does_not_answer_rather_than_wait_for_it() {
    let (target, template) = postgres();
    let relay = Relay::start(target).await;
    let cluster = hub_behind(&relay, &template, 0).await;
    let id = cluster.client.post("/v1/jobs", &job("before")).await.json()["id"]
        .as_str()
        .unwrap()
        .to_string();
    until_completed(&cluster, &id).await;
    let fresh = overview_jobs_until(&cluster, "the store is read", |j| {
        j["by_state"][2]["jobs"] == 1 && j["error"].is_null()
    })
    .await;

    // A database that takes connections and never answers: a read waits
    // for the pool's own bound (seconds), and the overview says so after
    // one second instead of waiting with it, keeping what it read last.
    relay.stall();
    let stalled = overview_jobs_until(
        &cluster,
        "the overview says the store does not answer",
        |j| {
            j["error"]
                .as_str()
                .is_some_and(|e| e.contains("has not answered"))
        },
    )
    .await;
    assert_eq!(stalled["by_state"], fresh["by_state"], "{stalled}");
    assert!(
        stalled["read_at_ms"].as_u64() <= fresh["read_at_ms"].as_u64(),
        "{stalled}"
    );
    // The rest of the overview goes on.
    let overview = cluster.client.get("/admin/overview").await.json();
    assert_eq!(overview["backends"][0]["name"], "sim", "{overview}");

    relay.restore();
    overview_jobs_until(&cluster, "the store answers again", |j| {
        j["error"].is_null() && j["read_at_ms"].as_u64() > fresh["read_at_ms"].as_u64()
    })
    .await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_kept_in_postgres_are_every_hubs_and_work_from_memory_while_it_is_away() {
    let (target, template) = postgres();
    let relay = Relay::start(target).await;
    let cluster = hub_behind(&relay, &template, 0).await;
    let url = cluster.config().database_url.clone().unwrap();
    // Another hub on the same database (its keys, without the rest of it)
    // makes a client key: this hub knows it within seconds.
    let other = drover_hub::keys::Keys::open(
        Some(
            drover_store::Store::open_beside(drover_store::Location::parse(&url).unwrap())
                .await
                .unwrap(),
        ),
        None,
    )
    .await
    .unwrap();
    let made = other
        .create(
            "elsewhere",
            drover_proto::admin::KeyKind::Client,
            Default::default(),
        )
        .await
        .unwrap();
    let auth = format!("Bearer {}", made.key);
    let with_key = || async {
        cluster
            .client
            .post_with(
                "/v1/chat/completions",
                &[("authorization", auth.as_str())],
                &chat_body("m", "hi"),
            )
            .await
            .status
    };
    let without_key = || async {
        cluster
            .client
            .post("/v1/chat/completions", &chat_body("m", "hi"))
            .await
            .status
    };
    // Open to anyone until this hub knows a client key exists.
    wait_until_within(
        "the key made on another hub closes inference here",
        Duration::from_secs(10),
        || async { without_key().await == 401 },
    )
    .await;
    assert_eq!(with_key().await, 200);

    // The store goes: the keys read before stay in force through the
    // hub's failed looks at the store (one every 2 s; this waits for one).
    relay.cut();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(with_key().await, 200);
    assert_eq!(without_key().await, 401);

    // Back, and revoked elsewhere: refused here within seconds.
    relay.restore();
    other.revoke("elsewhere").await.unwrap();
    wait_until_within(
        "the key revoked on another hub stops working here",
        Duration::from_secs(10),
        || async { with_key().await == 401 },
    )
    .await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_stored_by_another_hub_runs_at_once_not_at_the_next_poll() {
    let (target, template) = postgres();
    let relay = Relay::start(target).await;
    let schema = format!("wake_{}", uuid::Uuid::now_v7().simple());
    let url = format!(
        "{}?schema={schema}",
        template.replace("{relay}", &relay.addr)
    );
    let dir = std::env::temp_dir().join(format!("drover-wake-{}", uuid::Uuid::now_v7()));
    let hub_url = url.clone();
    // It polls once an hour: only the hint can wake it in time.
    let cluster = ClusterBuilder::new()
        .sim("sim", openai(&["m"], 2, 0))
        .hub(move |c| {
            c.data_dir = Some(dir);
            c.database_url = Some(hub_url);
            c.jobs.poll_interval = Duration::from_secs(3600);
        })
        .start()
        .await;
    let other = drover_store::Store::open_beside(drover_store::Location::parse(&url).unwrap())
        .await
        .unwrap();
    let store_job = |id: &str| {
        drover_store::NewJob::chat(id, "m", serde_json::to_vec(&chat_body("m", id)).unwrap())
    };
    // The runner's first look comes at its start; wait until it has
    // looked (the claim loop is asleep for the hour) before storing.
    wait_until_within("the job API answers", Duration::from_secs(30), || async {
        cluster.client.get("/v1/jobs").await.status == 200
    })
    .await;
    other.insert_job(&store_job("job_first")).await.unwrap();
    until_completed(&cluster, "job_first").await;

    // Hints sent while the hub's listener is cut off are lost; the
    // listener's reconnection wakes the runner all the same.
    relay.cut();
    let direct = template.replace("{relay}", &relay_target());
    let beside = drover_store::Store::open_beside(
        drover_store::Location::parse(&format!("{direct}?schema={schema}")).unwrap(),
    )
    .await
    .unwrap();
    beside.insert_job(&store_job("job_missed")).await.unwrap();
    relay.restore();
    until_completed(&cluster, "job_missed").await;
    cluster.shutdown().await;
}

/// PostgreSQL's own address, not the relay's.
fn relay_target() -> String {
    postgres().0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hub_restarted_while_postgres_is_away_checks_keys_against_its_copy() {
    let (target, template) = postgres();
    let relay = Relay::start(target).await;
    let cluster = hub_behind(&relay, &template, 0).await;
    let made = cluster
        .client
        .post("/admin/keys", &json!({"name": "app"}))
        .await;
    assert_eq!(made.status, 201, "{}", made.text());
    let auth = format!("Bearer {}", made.json()["key"].as_str().unwrap());
    let copy = cluster
        .config()
        .data_dir
        .clone()
        .unwrap()
        .join(drover_hub::keys::SNAPSHOT_FILE);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&copy).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "a copy of {}", copy.display());
    }
    let text = std::fs::read_to_string(&copy).unwrap();
    assert!(!text.contains(&auth[7..]), "only the key's hash is kept");

    // Restarted while the database does not answer: keys are checked
    // against the copy, neither refused for all (503) nor open to all.
    relay.cut();
    let cluster = cluster.restart_hub(Duration::from_secs(1)).await;
    let chat = cluster
        .client
        .post_with(
            "/v1/chat/completions",
            &[("authorization", auth.as_str())],
            &chat_body("m", "hi"),
        )
        .await;
    assert_eq!(chat.status, 200, "{}", chat.text());
    let without = cluster
        .client
        .post("/v1/chat/completions", &chat_body("m", "hi"))
        .await;
    assert_eq!(without.status, 401, "{}", without.text());
    relay.restore();
    cluster.shutdown().await;
}
