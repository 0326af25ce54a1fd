//! API keys with powers: a client key runs inference and nothing else, an
//! admin key manages and runs nothing; once a client key exists, inference
//! without a valid one is a 401 in the path's shape; revoking works at the
//! next request; keys outlive the hub; with a client key the hub may listen
//! beyond loopback.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use bytes::Bytes;
use drover_tests::{ClusterBuilder, HubConfig, chat_body, openai};
use http::Method;
use serde_json::json;

fn data_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("drover-keys-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// A hub keeping its keys in a fresh data directory, in front of `sim`.
async fn hub_with_keys(
    name: &str,
    sim: drover_tests::SimConfig,
) -> (drover_tests::Cluster, PathBuf) {
    let dir = data_dir(name);
    let kept = dir.clone();
    let cluster = ClusterBuilder::new()
        .sim("s", sim)
        .hub(move |c| c.data_dir = Some(kept))
        .start()
        .await;
    (cluster, dir)
}

async fn done(cluster: drover_tests::Cluster, dir: PathBuf) {
    cluster.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

fn bearer(key: &str) -> String {
    format!("Bearer {key}")
}

async fn create(
    cluster: &drover_tests::Cluster,
    auth: &[(&str, &str)],
    name: &str,
    kind: &str,
) -> String {
    let r = cluster
        .client
        .post_with("/admin/keys", auth, &json!({"name": name, "kind": kind}))
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let key = r.json()["key"].as_str().unwrap().to_string();
    assert!(key.starts_with("drv_"), "{key}");
    key
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_and_admin_keys_have_their_own_powers_and_revoking_is_at_once() {
    let (cluster, dir) = hub_with_keys("powers", openai(&["m"], 2, 0)).await;
    let c = &cluster.client;
    // No keys yet: inference is open, as before.
    assert_eq!(
        c.post("/v1/chat/completions", &chat_body("m", "hi"))
            .await
            .status,
        200
    );
    // On loopback with no admin key anywhere, the operator creates the first.
    let admin = create(&cluster, &[], "ops", "admin").await;
    let admin_auth = bearer(&admin);
    let as_admin = [("authorization", admin_auth.as_str())];
    let client = create(&cluster, &as_admin, "batch", "client").await;
    let client_auth = bearer(&client);
    let as_client = [("authorization", client_auth.as_str())];

    // Management: the admin key, nothing else.
    assert_eq!(
        c.call(Method::GET, "/admin/keys", &as_admin, Bytes::new())
            .await
            .status,
        200
    );
    let r = c
        .call(Method::GET, "/admin/backends", &[], Bytes::new())
        .await;
    assert_eq!(r.status, 401, "{}", r.text());
    let r = c
        .call(Method::GET, "/admin/backends", &as_client, Bytes::new())
        .await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(r.text().contains("client key"), "{}", r.text());

    // Inference: the client key, nothing else, in each path's shape.
    let r = c.post("/v1/chat/completions", &chat_body("m", "hi")).await;
    assert_eq!(r.status, 401, "{}", r.text());
    assert_eq!(r.json()["error"]["type"], "authentication_error");
    let messages = json!({"model": "m", "max_tokens": 8,
                          "messages": [{"role": "user", "content": "hi"}]});
    let r = c.post("/v1/messages", &messages).await;
    assert_eq!(r.status, 401, "{}", r.text());
    assert_eq!(r.json()["error"]["type"], "authentication_error");
    assert_eq!(r.json()["type"], "error");
    let r = c
        .post_with("/v1/chat/completions", &as_admin, &chat_body("m", "hi"))
        .await;
    assert_eq!(r.status, 403, "{}", r.text());
    let r = c
        .post_with("/v1/chat/completions", &as_client, &chat_body("m", "hi"))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    // Anthropic clients send it as x-api-key.
    let r = c
        .post_with("/v1/messages", &[("x-api-key", client.as_str())], &messages)
        .await;
    assert_ne!(r.status, 401, "{}", r.text());
    let r = c
        .post_with(
            "/v1/chat/completions",
            &[("authorization", "Bearer drv_c_made_up")],
            &chat_body("m", "hi"),
        )
        .await;
    assert_eq!(r.status, 401, "{}", r.text());

    // The listing shows no key; revoking stops it at the next request.
    let list = c
        .call(Method::GET, "/admin/keys", &as_admin, Bytes::new())
        .await;
    assert!(!list.text().contains(&client), "{}", list.text());
    let id = list.json()["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["name"] == "batch")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = c
        .call(
            Method::DELETE,
            &format!("/admin/keys/{id}"),
            &as_admin,
            Bytes::new(),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = c
        .post_with("/v1/chat/completions", &as_client, &chat_body("m", "hi"))
        .await;
    assert_eq!(r.status, 401, "{}", r.text());
    done(cluster, dir).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_outlive_the_hub_and_let_it_listen_beyond_loopback() {
    let dir = data_dir("restart");
    let first = ClusterBuilder::new()
        .sim("s", openai(&["m"], 1, 0))
        .hub(|c| c.data_dir = Some(dir.clone()))
        .start()
        .await;
    let key = create(&first, &[], "batch", "client").await;
    first.shutdown().await;
    let stored = std::fs::read(dir.join(drover_store::SQLITE_FILE)).unwrap();
    assert!(
        !stored.windows(key.len()).any(|w| w == key.as_bytes()),
        "only the hash is kept"
    );

    let second = ClusterBuilder::new()
        .sim("s", openai(&["m"], 1, 0))
        .hub(|c| c.data_dir = Some(dir.clone()))
        .start()
        .await;
    let auth = bearer(&key);
    let r = second
        .client
        .post_with(
            "/v1/chat/completions",
            &[("authorization", auth.as_str())],
            &chat_body("m", "hi"),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = second
        .client
        .post("/v1/chat/completions", &chat_body("m", "hi"))
        .await;
    assert_eq!(r.status, 401, "{}", r.text());
    second.shutdown().await;

    // Beyond loopback: with a client key, yes; without, no.
    let beyond = || async { tokio::net::TcpListener::bind("0.0.0.0:0").await.unwrap() };
    let config = |dir: Option<PathBuf>| HubConfig {
        data_dir: dir,
        ..HubConfig::default()
    };
    let hub = drover_hub::start(config(Some(dir.clone())), beyond().await)
        .await
        .expect("a hub with client keys may listen beyond loopback");
    hub.shutdown(std::time::Duration::from_secs(1)).await;
    let refused = drover_hub::start(config(Some(data_dir("empty"))), beyond().await).await;
    assert!(
        matches!(refused, Err(drover_hub::StartError::Insecure(_))),
        "{:?}",
        refused.err()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hub_without_a_data_directory_says_it_keeps_no_keys() {
    let cluster = ClusterBuilder::new()
        .sim("s", openai(&["m"], 1, 0))
        .start()
        .await;
    let r = cluster
        .client
        .post("/admin/keys", &json!({"name": "x"}))
        .await;
    assert_eq!(r.status, 409, "{}", r.text());
    assert!(r.text().contains("data_dir"), "{}", r.text());
    cluster.shutdown().await;
}

async fn create_with(
    cluster: &drover_tests::Cluster,
    name: &str,
    limits: serde_json::Value,
) -> String {
    let r = cluster
        .client
        .post("/admin/keys", &json!({"name": name, "limits": limits}))
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    r.json()["key"].as_str().unwrap().to_string()
}

fn auth(key: &str) -> [(&'static str, String); 1] {
    [("authorization", bearer(key))]
}

async fn ask(cluster: &drover_tests::Cluster, key: &str, model: &str) -> drover_tests::Reply {
    let [(name, value)] = auth(key);
    cluster
        .client
        .post_with(
            "/v1/chat/completions",
            &[(name, value.as_str())],
            &chat_body(model, "hi"),
        )
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keys_limits_answer_429_with_retry_after_and_are_counted() {
    let (cluster, dir) = hub_with_keys("limits", openai(&["m", "other"], 2, 0)).await;
    let key = create_with(
        &cluster,
        "batch",
        json!({"requests_per_minute": 2, "models": ["m"]}),
    )
    .await;
    for _ in 0..2 {
        assert_eq!(ask(&cluster, &key, "m").await.status, 200);
    }
    let r = ask(&cluster, &key, "m").await;
    assert_eq!(r.status, 429, "{}", r.text());
    assert_eq!(r.error_code(), "rate_limited");
    // One request every 30 s, less the moments the first two took.
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((29..=30).contains(&retry), "{retry}");
    let r = ask(&cluster, &key, "other").await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(r.text().contains("may use: m"), "{}", r.text());

    let metrics = cluster.client.get("/metrics").await.text();
    for line in [
        r#"drover_key_requests_total{key="batch"} 2"#,
        r#"drover_key_limited_total{key="batch",limit="requests_per_minute"} 1"#,
        r#"drover_key_limited_total{key="batch",limit="models"} 1"#,
    ] {
        assert!(metrics.contains(line), "{line} in\n{metrics}");
    }
    done(cluster, dir).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keys_concurrency_counts_until_the_answer_ends() {
    let mut sim = openai(&["m"], 4, 50);
    sim.tokens_per_sec = 10.0;
    sim.output_tokens = 8;
    let (cluster, dir) = hub_with_keys("concurrency", sim).await;
    let key = create_with(&cluster, "one-at-a-time", json!({"max_concurrent": 1})).await;
    // A stream: its headers come at once, its tokens over about 0.8 s.
    let auth = bearer(&key);
    let mut body = chat_body("m", "a");
    body["stream"] = json!(true);
    let streaming = cluster
        .client
        .send(
            Method::POST,
            "/v1/chat/completions",
            &[("authorization", auth.as_str())],
            Bytes::from(body.to_string()),
        )
        .await;
    assert_eq!(streaming.status(), 200);
    let r = ask(&cluster, &key, "m").await;
    assert_eq!(r.status, 429, "counted while it streams: {}", r.text());
    assert!(r.header("retry-after").is_some());
    let rest = http_body_util::BodyExt::collect(streaming.into_body())
        .await
        .unwrap();
    assert!(!rest.to_bytes().is_empty());
    drover_tests::wait_until("the stream's slot is free", || cluster.busy("s") == 0).await;
    assert_eq!(ask(&cluster, &key, "m").await.status, 200, "free again");
    done(cluster, dir).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keys_priority_orders_the_queue_and_caps_its_header() {
    let (cluster, dir) = hub_with_keys("priority", openai(&["m"], 1, 300)).await;
    let low = create_with(&cluster, "low", json!({"priority": 10, "max_priority": 60})).await;
    let high = create_with(&cluster, "high", json!({"priority": 90})).await;
    let send = |key: String, priority: Option<&'static str>| {
        let client = cluster.client.clone();
        tokio::spawn(async move {
            let auth = bearer(&key);
            let mut headers = vec![("authorization", auth.as_str())];
            if let Some(p) = priority {
                headers.push(("x-drover-priority", p));
            }
            client
                .post_with("/v1/chat/completions", &headers, &chat_body("m", "x"))
                .await
        })
    };
    let running = send(high.clone(), None);
    drover_tests::wait_until("one runs", || cluster.busy("s") == 1).await;
    // The low key asks for 100 and gets its ceiling, 60: below the high
    // key's own default, 90.
    let low_reply = send(low, Some("100"));
    drover_tests::wait_until("low waits", || cluster.waiting() == 1).await;
    let high_reply = send(high, None);
    drover_tests::wait_until("both wait", || cluster.waiting() == 2).await;
    let (low_reply, high_reply) = (low_reply.await.unwrap(), high_reply.await.unwrap());
    running.await.unwrap();
    let waited = |r: &drover_tests::Reply| -> u64 {
        r.header("x-drover-queue-ms").unwrap().parse().unwrap()
    };
    assert!(
        waited(&high_reply) < waited(&low_reply),
        "the later high-priority request went first: high {} ms, low {} ms",
        waited(&high_reply),
        waited(&low_reply)
    );
    done(cluster, dir).await;
}

/// Every management route, as the router knows them.
const MANAGEMENT: &[(Method, &str)] = &[
    (Method::GET, "/admin/backends"),
    (Method::POST, "/admin/backends"),
    (Method::GET, "/admin/backends/s"),
    (Method::DELETE, "/admin/backends/s"),
    (Method::POST, "/admin/backends/s/drain"),
    (Method::POST, "/admin/backends/s/undrain"),
    (Method::POST, "/admin/models/m/load"),
    (Method::POST, "/admin/models/m/unload"),
    (Method::POST, "/admin/models/m/pin"),
    (Method::POST, "/admin/models/m/unpin"),
    (Method::POST, "/admin/models/pin"),
    (Method::GET, "/admin/keys"),
    (Method::POST, "/admin/keys"),
    (Method::DELETE, "/admin/keys/key_0"),
    (Method::POST, "/admin/keys/purge"),
    (Method::POST, "/admin/keys/key_0/webhook-secret"),
    (Method::DELETE, "/admin/keys/key_0/webhook-secret"),
    (Method::GET, "/admin/workers"),
    (Method::GET, "/admin/plans"),
    (Method::GET, "/admin/nodes"),
    (Method::GET, "/admin/hubs"),
    (Method::GET, "/admin/nodes/tokens"),
    (Method::POST, "/admin/nodes/tokens"),
    (Method::DELETE, "/admin/nodes/tokens/jt_x"),
    (Method::POST, "/admin/nodes/services"),
    (Method::GET, "/admin/nodes/commands/cmd_x"),
    (Method::POST, "/admin/nodes/node_x/services"),
    (Method::POST, "/admin/nodes/node_x/drain"),
    (Method::POST, "/admin/nodes/node_x/undrain"),
    (Method::GET, "/admin/releases"),
    (Method::PUT, "/admin/releases/1.0.0"),
    (Method::GET, "/admin/rollouts"),
    (Method::POST, "/admin/rollouts"),
    (Method::GET, "/admin/rollouts/ro_x"),
    (Method::POST, "/admin/workers/wrk_x/drain"),
    (Method::POST, "/admin/workers/wrk_x/undrain"),
    (Method::GET, "/admin/jobs"),
    (Method::GET, "/admin/jobs/job_x"),
    (Method::POST, "/admin/jobs/job_x/cancel"),
    (Method::POST, "/admin/jobs/job_x/retry"),
    (Method::GET, "/admin/batches"),
    (Method::POST, "/admin/batches/batch_x/cancel"),
    (Method::GET, "/admin/overview"),
    (Method::GET, "/admin/events"),
    (Method::POST, "/admin/webhook-secret"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_management_route_refuses_a_client_key_and_no_key() {
    let (cluster, dir) = hub_with_keys("routes", openai(&["m"], 1, 0)).await;
    let admin = create(&cluster, &[], "ops", "admin").await;
    let admin_auth = bearer(&admin);
    let client = create(
        &cluster,
        &[("authorization", admin_auth.as_str())],
        "app",
        "client",
    )
    .await;
    let client_auth = bearer(&client);
    let body = Bytes::from_static(b"{}");
    for (method, path) in MANAGEMENT {
        for (who, headers, want) in [
            ("no key", vec![], 401),
            (
                "a client key",
                vec![("authorization", client_auth.as_str())],
                403,
            ),
            (
                "a client key as x-api-key",
                vec![("x-api-key", client.as_str())],
                403,
            ),
            (
                "a made-up key",
                vec![("authorization", "Bearer drv_a_0000")],
                401,
            ),
        ] {
            let r = cluster
                .client
                .call(method.clone(), path, &headers, body.clone())
                .await;
            assert_eq!(r.status, want, "{method} {path} with {who}: {}", r.text());
            assert!(r.json()["error"]["message"].is_string(), "{}", r.text());
        }
    }
    // The routes list above is every one: the admin key reaches each (its
    // answer may be a 4xx about the request itself, never 401 or 403).
    for (method, path) in MANAGEMENT {
        // The head only: `/admin/events` streams until the hub stops.
        let r = cluster
            .client
            .send(
                method.clone(),
                path,
                &[("authorization", admin_auth.as_str())],
                body.clone(),
            )
            .await;
        assert!(
            ![401, 403, 405].contains(&r.status().as_u16()),
            "{method} {path}: {}",
            r.status()
        );
    }
    done(cluster, dir).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_a_minute_count_prompts_and_the_answers_own_usage() {
    let mut sim = openai(&["m"], 2, 0);
    sim.output_tokens = 8;
    let (cluster, dir) = hub_with_keys("tokens", sim).await;
    // The hub estimates a prompt as its body's bytes over 4. The bucket
    // holds two prompts, but not two prompts and the first answer's 8.
    let prompt = (chat_body("m", "hi").to_string().len() / 4) as u64;
    let tpm = 2 * prompt + 4;
    let key = create_with(&cluster, "tokens", json!({"tokens_per_minute": tpm})).await;
    let first = ask(&cluster, &key, "m").await;
    assert_eq!(first.status, 200, "{}", first.text());
    assert_eq!(first.json()["usage"]["completion_tokens"], 8);
    let r = ask(&cluster, &key, "m").await;
    assert_eq!(r.status, 429, "{}", r.text());
    assert_eq!(r.error_code(), "rate_limited");
    assert!(r.text().contains("tokens a minute"), "{}", r.text());
    let metrics = cluster.client.get("/metrics").await.text();
    for line in [
        r#"drover_key_completion_tokens_total{key="tokens"} 8"#.to_string(),
        format!(r#"drover_key_prompt_tokens_total{{key="tokens"}} {prompt}"#),
        r#"drover_key_limited_total{key="tokens",limit="tokens_per_minute"} 1"#.to_string(),
    ] {
        assert!(metrics.contains(&line), "{line} in\n{metrics}");
    }
    // The dashboard shows the same usage for the last hour.
    let overview = cluster.client.get("/admin/overview").await.json();
    assert_eq!(
        overview["keys"],
        json!([{"key": "tokens", "requests": 1, "prompt_tokens": prompt,
                "completion_tokens": 8, "limited": 1}]),
        "{overview}"
    );
    done(cluster, dir).await;
}

/// Every other route drover adds beside the inference API.
const OTHERS: &[(Method, &str)] = &[
    (Method::GET, "/v1/queue"),
    (Method::POST, "/v1/jobs"),
    (Method::GET, "/v1/jobs"),
    (Method::GET, "/v1/jobs/job_x"),
    (Method::POST, "/v1/jobs/job_x/cancel"),
    (Method::POST, "/v1/jobs/job_x/retry"),
    (Method::POST, "/v1/tasks"),
    (Method::GET, "/v1/tasks"),
    (Method::GET, "/v1/tasks/task_x"),
    (Method::POST, "/v1/tasks/task_x/cancel"),
    (Method::POST, "/v1/tasks/task_x/heartbeat"),
    (Method::POST, "/v1/tasks/task_x/complete"),
    (Method::POST, "/v1/tasks/task_x/fail"),
    (Method::POST, "/v1/tasks/plan"),
    (Method::GET, "/v1/tasks/plans"),
    (Method::GET, "/v1/tasks/plans/plan_x"),
    (Method::POST, "/v1/nodes/join"),
    (Method::POST, "/v1/nodes/node_x/heartbeat"),
    (Method::POST, "/v1/nodes/node_x/commands"),
    (Method::POST, "/v1/nodes/node_x/commands/cmd_x"),
    (Method::GET, "/v1/nodes/node_x/releases/1.0.0"),
    (Method::POST, "/v1/workers"),
    (Method::GET, "/v1/workers"),
    (Method::DELETE, "/v1/workers/wrk_x"),
    (Method::POST, "/v1/workers/wrk_x/heartbeat"),
    (Method::POST, "/v1/workers/wrk_x/poll"),
    (Method::POST, "/v1/files"),
    (Method::GET, "/v1/files"),
    (Method::GET, "/v1/files/file-x"),
    (Method::DELETE, "/v1/files/file-x"),
    (Method::GET, "/v1/files/file-x/content"),
    (Method::POST, "/v1/batches"),
    (Method::GET, "/v1/batches"),
    (Method::GET, "/v1/batches/batch_x"),
    (Method::POST, "/v1/batches/batch_x/cancel"),
    (Method::GET, "/v1/models"),
    (Method::GET, "/v1/models/m"),
    (Method::GET, "/health"),
    (Method::GET, "/ready"),
    (Method::GET, "/metrics"),
    (Method::POST, "/cluster/link"),
];

/// The document's path for a concrete one: `/admin/backends/s/drain` is
/// `/admin/backends/{name}/drain`.
fn documented<'a>(doc: &'a serde_json::Value, path: &str) -> Option<&'a str> {
    doc["paths"]
        .as_object()
        .unwrap()
        .keys()
        .find_map(|template| {
            let t: Vec<&str> = template.split('/').collect();
            let p: Vec<&str> = path.split('/').collect();
            let fits =
                t.len() == p.len() && t.iter().zip(&p).all(|(t, p)| t.starts_with('{') || t == p);
            fits.then_some(template.as_str())
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_describes_every_route_and_every_answer() {
    let (cluster, dir) = hub_with_keys("openapi", openai(&["m"], 1, 0)).await;
    let admin = create(&cluster, &[], "ops", "admin").await;
    let auth = bearer(&admin);
    let doc = cluster.client.get("/openapi.json").await.json();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."), "{doc}");
    for (method, path) in MANAGEMENT.iter().chain(OTHERS) {
        let template = documented(&doc, path)
            .unwrap_or_else(|| panic!("{method} {path} is not in the document"));
        let operation = &doc["paths"][template][method.as_str().to_lowercase()];
        assert!(
            operation.is_object(),
            "{method} {template} is not documented"
        );
        let r = cluster
            .client
            .send(
                method.clone(),
                path,
                &[("authorization", auth.as_str())],
                Bytes::from_static(b"{}"),
            )
            .await;
        let status = r.status().as_u16().to_string();
        assert!(
            operation["responses"][&status].is_object(),
            "{method} {path} answered {status}, which the document does not list"
        );
    }
    // And nothing is documented that the router does not serve.
    let documented_paths = doc["paths"].as_object().unwrap().len();
    let served: std::collections::BTreeSet<&str> = MANAGEMENT
        .iter()
        .chain(OTHERS)
        .map(|(_, p)| documented(&doc, p).unwrap())
        .collect();
    assert_eq!(served.len(), documented_paths, "{served:?}");
    done(cluster, dir).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_queue_takes_a_client_key_and_shows_only_its_models() {
    let (cluster, dir) = hub_with_keys("queue", openai(&["m", "n"], 1, 0)).await;
    let only_m = create_with(&cluster, "only-m", json!({"models": ["m"]})).await;
    let every = create_with(&cluster, "every", json!({})).await;
    let queue = |headers: Vec<(&'static str, String)>| {
        let client = cluster.client.clone();
        async move {
            let headers: Vec<(&str, &str)> =
                headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            client
                .call(Method::GET, "/v1/queue", &headers, Bytes::new())
                .await
        }
    };
    let models = |r: &drover_tests::Reply| -> Vec<String> {
        r.json()["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["model"].as_str().unwrap().to_string())
            .collect()
    };
    let r = queue(vec![("authorization", bearer(&only_m))]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(models(&r), ["m"]);
    let r = queue(vec![("authorization", bearer(&every))]).await;
    assert_eq!(models(&r), ["m", "n"]);
    // Once client keys exist, as for inference: a valid one, not an admin's.
    let r = queue(vec![]).await;
    assert_eq!(r.status, 401, "{}", r.text());
    let admin = create(&cluster, &[], "ops", "admin").await;
    let r = queue(vec![("authorization", bearer(&admin))]).await;
    assert_eq!(r.status, 403, "{}", r.text());
    done(cluster, dir).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_model_listing_and_metrics_answer_only_those_keys_allow() {
    let (cluster, dir) = hub_with_keys("listing", openai(&["m", "n"], 1, 0)).await;
    let only_m = create_with(&cluster, "only-m", json!({"models": ["m"]})).await;
    let get = |path: &'static str, key: Option<String>| {
        let client = cluster.client.clone();
        async move {
            let auth = key.map(|k| bearer(&k));
            let headers: Vec<(&str, &str)> = auth
                .as_deref()
                .map(|a| vec![("authorization", a)])
                .unwrap_or_default();
            client.call(Method::GET, path, &headers, Bytes::new()).await
        }
    };
    // Once client keys exist: a valid one, and only its models.
    for path in ["/v1/models", "/v1/models/m"] {
        let r = get(path, None).await;
        assert_eq!(r.status, 401, "{path}: {}", r.text());
    }
    let r = get("/v1/models", Some(only_m.clone())).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let ids: Vec<String> = r.json()["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids, ["m"]);
    assert_eq!(get("/v1/models/m", Some(only_m.clone())).await.status, 200);
    let r = get("/v1/models/n", Some(only_m.clone())).await;
    assert_eq!(r.status, 404, "{}", r.text());
    assert!(!r.text().contains("'n'?"), "{}", r.text());

    // /metrics: the local operator while no admin key exists, then an
    // admin or a metrics key, never a client key.
    let r = get("/metrics", Some(only_m.clone())).await;
    assert_eq!(r.status, 403, "{}", r.text());
    let admin = create(&cluster, &[], "ops", "admin").await;
    let admin_auth = bearer(&admin);
    let r = get("/metrics", None).await;
    assert_eq!(r.status, 401, "{}", r.text());
    assert!(r.text().contains("metrics key"), "{}", r.text());
    assert!(!r.text().contains("only-m"), "{}", r.text());
    let metrics_key = create(
        &cluster,
        &[("authorization", admin_auth.as_str())],
        "prometheus",
        "metrics",
    )
    .await;
    assert!(metrics_key.starts_with("drv_m_"), "{metrics_key}");
    for key in [&admin, &metrics_key] {
        let r = get("/metrics", Some(key.clone())).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert!(r.text().contains("drover_"), "{}", r.text());
    }
    // A metrics key reads metrics and nothing else.
    let r = get("/admin/backends", Some(metrics_key.clone())).await;
    assert_eq!(r.status, 403, "{}", r.text());
    let r = get("/v1/models", Some(metrics_key.clone())).await;
    assert_eq!(r.status, 403, "{}", r.text());
    let r = cluster
        .client
        .post_with(
            "/v1/chat/completions",
            &[("authorization", bearer(&metrics_key).as_str())],
            &chat_body("m", "hi"),
        )
        .await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(r.text().contains("a metrics key"), "{}", r.text());
    done(cluster, dir).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_metrics_opens_metrics_to_anyone() {
    let dir = data_dir("public-metrics");
    let kept = dir.clone();
    let cluster = ClusterBuilder::new()
        .sim("s", openai(&["m"], 1, 0))
        .hub(move |c| {
            c.data_dir = Some(kept);
            c.public_metrics = true;
        })
        .start()
        .await;
    create(&cluster, &[], "ops", "admin").await;
    assert_eq!(cluster.client.get("/metrics").await.status, 200);
    done(cluster, dir).await;
}
